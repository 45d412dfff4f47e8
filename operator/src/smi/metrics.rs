//! SMI Traffic Metrics, `metrics.smi-spec.io/v1alpha1`: an aggregated API, not a CRD.
//!
//! Shapes follow what smi-metrics served and the SMI SDK defines: a `TrafficMetrics` per
//! resource (or per edge), whose `metrics` are named quantities:
//! `p50/p90/p99_response_latency` (unit `ms`), `success_count` and `failure_count`. Counts are
//! fractional quantities such as `"73492m"` because they come from `increase()`.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Time};
use serde::{Deserialize, Serialize};

use crate::quantity::{Quantity, QuantityError};

/// The API group.
pub const GROUP: &str = "metrics.smi-spec.io";
/// The only version.
pub const VERSION: &str = "v1alpha1";
/// `group/version`, as written in `apiVersion`.
pub const API_VERSION: &str = "metrics.smi-spec.io/v1alpha1";

/// Well-known metric names.
pub mod names {
    pub const P50_LATENCY: &str = "p50_response_latency";
    pub const P90_LATENCY: &str = "p90_response_latency";
    pub const P99_LATENCY: &str = "p99_response_latency";
    pub const SUCCESS_COUNT: &str = "success_count";
    pub const FAILURE_COUNT: &str = "failure_count";
}

/// Traffic metrics of one resource over one window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficMetrics {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind_single")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// When the window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
    /// The window length as a Go duration, e.g. `30s`.
    #[serde(default)]
    pub window: String,
    /// The resource these metrics describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ObjectReference>,
    /// For edges: the other end and the direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<Edge>,
    /// The measured values.
    #[serde(default)]
    pub metrics: Vec<Metric>,
}

/// A list of TrafficMetrics: every resource of a kind, or every edge of one resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficMetricsList {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind_list")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    /// The resource whose edges these are, or the kind listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ObjectReference>,
    #[serde(default)]
    pub items: Vec<TrafficMetrics>,
}

impl Default for TrafficMetrics {
    fn default() -> Self {
        TrafficMetrics {
            api_version: api_version(),
            kind: kind_single(),
            metadata: ObjectMeta::default(),
            timestamp: None,
            window: String::new(),
            resource: None,
            edge: None,
            metrics: Vec::new(),
        }
    }
}

impl Default for TrafficMetricsList {
    fn default() -> Self {
        TrafficMetricsList {
            api_version: api_version(),
            kind: kind_list(),
            metadata: ListMeta::default(),
            resource: None,
            items: Vec::new(),
        }
    }
}

fn api_version() -> String {
    API_VERSION.to_string()
}
fn kind_single() -> String {
    "TrafficMetrics".to_string()
}
fn kind_list() -> String {
    "TrafficMetricsList".to_string()
}

/// The other end of an edge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Edge {
    pub direction: Direction,
    #[serde(default)]
    pub resource: Option<ObjectReference>,
}

/// Whether an edge's traffic goes to or comes from the other resource.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    To,
    From,
}

/// One named measurement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// A Kubernetes quantity string.
    pub value: String,
}

/// Why a metric could not be read. None of these ever counts as a passing value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("metric {0} is missing")]
    Missing(String),
    #[error("metric {name} is not a quantity: {source}")]
    Unparsable { name: String, source: QuantityError },
    #[error("metric {0} is not a finite number")]
    NotFinite(String),
}

impl TrafficMetrics {
    /// The value of the named metric as a finite float.
    pub fn value(&self, name: &str) -> Result<f64, MetricError> {
        let metric = self
            .metrics
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| MetricError::Missing(name.to_string()))?;
        let value = Quantity::parse(&metric.value)
            .map_err(|source| MetricError::Unparsable { name: name.to_string(), source })?
            .as_f64();
        if value.is_finite() { Ok(value) } else { Err(MetricError::NotFinite(name.to_string())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"kind":"TrafficMetrics","apiVersion":"metrics.smi-spec.io/v1alpha1",
     "metadata":{"name":"web","namespace":"shop","creationTimestamp":null},
     "timestamp":"2019-06-17T14:26:22Z","window":"30s",
     "resource":{"kind":"Deployment","namespace":"shop","name":"web"},
     "edge":{"direction":"from","resource":null},
     "metrics":[{"name":"p99_response_latency","unit":"ms","value":"296875m"},
                {"name":"p90_response_latency","unit":"ms","value":"268750m"},
                {"name":"p50_response_latency","unit":"ms","value":"162500m"},
                {"name":"success_count","value":"73492m"},
                {"name":"failure_count","value":"0"}]}"#;

    #[test]
    fn parses_an_smi_metrics_response() {
        let tm: TrafficMetrics = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(tm.window, "30s");
        assert_eq!(tm.resource.as_ref().unwrap().kind.as_deref(), Some("Deployment"));
        assert_eq!(tm.edge.as_ref().unwrap().direction, Direction::From);
        assert_eq!(tm.value(names::SUCCESS_COUNT).unwrap(), 73.492);
        assert_eq!(tm.value(names::FAILURE_COUNT).unwrap(), 0.0);
        assert_eq!(tm.value(names::P99_LATENCY).unwrap(), 296.875);
        assert_eq!(tm.value(names::P50_LATENCY).unwrap(), 162.5);
        assert_eq!(tm.timestamp.unwrap().0.as_second(), 1560781582);
    }

    #[test]
    fn missing_and_unparsable_values_are_errors_not_zeroes() {
        let mut tm: TrafficMetrics = serde_json::from_str(SAMPLE).unwrap();
        tm.metrics.retain(|m| m.name != names::FAILURE_COUNT);
        tm.metrics.push(Metric { name: names::P90_LATENCY.into(), unit: None, value: "NaN".into() });
        tm.metrics.retain(|m| !(m.name == names::P90_LATENCY && m.unit.is_some()));
        assert_eq!(tm.value(names::FAILURE_COUNT), Err(MetricError::Missing("failure_count".into())));
        assert!(matches!(tm.value(names::P90_LATENCY), Err(MetricError::Unparsable { .. })));
    }

    #[test]
    fn list_round_trips() {
        let item: TrafficMetrics = serde_json::from_str(SAMPLE).unwrap();
        let list = TrafficMetricsList { items: vec![item.clone(), item], ..Default::default() };
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json["kind"], "TrafficMetricsList");
        assert_eq!(json["apiVersion"], API_VERSION);
        let back: TrafficMetricsList = serde_json::from_value(json).unwrap();
        assert_eq!(back, list);
    }
}
