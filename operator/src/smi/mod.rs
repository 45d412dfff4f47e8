//! Service Mesh Interface types.
//!
//! - [`split`]: `split.smi-spec.io` TrafficSplit, every version a mesh may serve.
//! - [`metrics`]: `metrics.smi-spec.io/v1alpha1` TrafficMetrics, as smi-metrics served them.
pub mod metrics;
pub mod split;
