//! Serin: canary rollouts over the Service Mesh Interface.
//!
//! - [`api`]: the `Rollout` custom resource.
//! - [`smi`]: the SMI types Serin writes (TrafficSplit v1alpha1–v1alpha4) and reads (Traffic
//!   Metrics).
//! - [`quantity`]: exact Kubernetes quantities, used by both.
//! - [`crdgen`]: the generated CRD YAML committed under `crds/`.
//! - [`runtime`], [`leader`], [`telemetry`]: the operator process: flags, leader election,
//!   metrics, traces and health endpoints.
pub mod analysis;
pub mod api;
pub mod crdgen;
pub mod duration;
pub mod engine;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod plugin;
pub mod quantity;
pub mod runtime;
pub mod schedule;
pub mod secrets;
pub mod smi;
pub mod telemetry;
pub mod traffic;
pub mod webhooks;

/// Installs rustls' ring provider as the process default, once. kube and reqwest both use
/// rustls with ring; reqwest looks the provider up at run time.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
