//! Serin: canary rollouts over the Service Mesh Interface.
//!
//! - [`api`]: the `Rollout` custom resource.
//! - [`smi`]: the SMI types Serin writes (TrafficSplit v1alpha1–v1alpha4) and reads (Traffic
//!   Metrics).
//! - [`quantity`]: exact Kubernetes quantities, used by both.
//! - [`crdgen`]: the generated CRD YAML committed under `crds/`.
pub mod analysis;
pub mod api;
pub mod crdgen;
pub mod duration;
pub mod engine;
pub mod metrics;
pub mod quantity;
pub mod smi;
pub mod traffic;
