//! Prometheus answers as TrafficMetrics, in the shapes smi-metrics served and the SMI SDK
//! defines.
//!
//! - Metrics come in the order p99, p90, p50 latency (unit `ms`), then `success_count` and
//!   `failure_count`.
//! - Values are Kubernetes quantities in milli-units where fractional: `increase()` makes
//!   counts fractional (`"73492m"`), latencies are interpolated (`"49600m"` ms).
//! - A latency quantile with no data (no series, or NaN because no request fell in the window)
//!   is left out; it is never written as zero. A count with no series is `"0"` when the other
//!   count has one (no failures is zero failures). A resource with neither count has no
//!   traffic: a single object is then a 404, and a list leaves it out.
//! - A resource's own metrics carry `edge: {direction: from, resource: null}`, as
//!   smi-metrics wrote them; an edge carries the peer in `edge.resource`.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serin::api::LatencyQuantile;
use serin::metrics::prometheus::SeriesMetrics;
use serin::metrics::querysets::ResourceKind;
use serin::quantity::format_milli;
use serin::smi::metrics::{Direction, Edge, Metric, TrafficMetrics, TrafficMetricsList, names};

use crate::routes::{go_duration, kind_name};

/// A value as a quantity string; `None` for NaN, infinities and values too large to write.
pub fn quantity(value: f64) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    let milli = (value * 1000.0).round();
    // i64 thousandths reach 9.2e15: far beyond any request count or latency.
    if milli.abs() >= 9.0e18 {
        return None;
    }
    // `as` saturates and is exact here; -0 prints as "0".
    Some(format_milli(milli as i64))
}

/// The metric list of one resource or edge.
pub fn metrics(series: &SeriesMetrics) -> Vec<Metric> {
    let mut out = Vec::with_capacity(5);
    for (quantile, name) in [
        (LatencyQuantile::P99, names::P99_LATENCY),
        (LatencyQuantile::P90, names::P90_LATENCY),
        (LatencyQuantile::P50, names::P50_LATENCY),
    ] {
        if let Some(value) = series.latency_ms.get(&quantile).copied().and_then(quantity) {
            out.push(Metric { name: name.to_string(), unit: Some("ms".to_string()), value });
        }
    }
    for (name, count) in
        [(names::SUCCESS_COUNT, series.success_count), (names::FAILURE_COUNT, series.failure_count)]
    {
        let value = quantity(count.unwrap_or(0.0)).unwrap_or_else(|| "0".to_string());
        out.push(Metric { name: name.to_string(), unit: None, value });
    }
    out
}

/// A reference to a resource, as the SDK writes it: kind, namespace (none for a Namespace),
/// name.
pub fn reference(kind: ResourceKind, namespace: Option<&str>, name: Option<&str>) -> ObjectReference {
    ObjectReference {
        kind: Some(kind_name(kind).to_string()),
        namespace: if kind == ResourceKind::Namespace { None } else { namespace.map(str::to_string) },
        name: name.map(str::to_string),
        ..Default::default()
    }
}

/// When and over what window the values were read.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub end: Timestamp,
    pub length: Duration,
}

/// A TrafficMetrics: `resource`'s own metrics when `edge` is `None`, else the edge's.
pub fn traffic_metrics(
    resource: ObjectReference,
    edge: Option<(Direction, ObjectReference)>,
    window: Window,
    series: &SeriesMetrics,
) -> TrafficMetrics {
    TrafficMetrics {
        metadata: ObjectMeta {
            name: resource.name.clone(),
            namespace: resource.namespace.clone(),
            ..Default::default()
        },
        timestamp: Some(Time(window.end)),
        window: go_duration(window.length),
        edge: Some(match edge {
            Some((direction, peer)) => Edge { direction, resource: Some(peer) },
            None => Edge { direction: Direction::From, resource: None },
        }),
        resource: Some(resource),
        metrics: metrics(series),
        ..Default::default()
    }
}

/// A TrafficMetricsList about `resource` (the kind listed, or the resource whose edges these are).
pub fn list(resource: ObjectReference, items: Vec<TrafficMetrics>) -> TrafficMetricsList {
    TrafficMetricsList { resource: Some(resource), items, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn window() -> Window {
        Window { end: "2026-11-28T10:00:00Z".parse().unwrap(), length: Duration::from_secs(30) }
    }

    fn series(
        success: Option<f64>,
        failure: Option<f64>,
        latency: &[(LatencyQuantile, f64)],
    ) -> SeriesMetrics {
        SeriesMetrics {
            success_count: success,
            failure_count: failure,
            latency_ms: latency.iter().copied().collect(),
        }
    }

    #[test]
    fn values_are_quantities_in_milli_units() {
        assert_eq!(quantity(73.492).as_deref(), Some("73492m"));
        assert_eq!(quantity(100.0).as_deref(), Some("100"));
        assert_eq!(quantity(0.0).as_deref(), Some("0"));
        assert_eq!(quantity(-0.0).as_deref(), Some("0"));
        assert_eq!(quantity(49.6).as_deref(), Some("49600m"));
        assert_eq!(quantity(0.0004).as_deref(), Some("0"), "below a thousandth rounds");
        assert_eq!(quantity(0.0005).as_deref(), Some("1m"));
        assert_eq!(quantity(296.875).as_deref(), Some("296875m"));
        assert_eq!(quantity(f64::NAN), None);
        assert_eq!(quantity(f64::INFINITY), None);
        assert_eq!(quantity(1e30), None);
        // Every value written parses back as the operator reads it.
        for v in [73.492, 0.001, 12345.678, 1.0] {
            let q = serin::quantity::Quantity::parse(&quantity(v).unwrap()).unwrap();
            assert_eq!(q.as_f64(), v);
        }
    }

    #[test]
    fn latency_without_data_is_omitted_and_missing_counts_are_zero() {
        let s = series(
            Some(73.492),
            None,
            &[(LatencyQuantile::P50, 30.0), (LatencyQuantile::P90, f64::NAN), (LatencyQuantile::P99, 49.6)],
        );
        let m = metrics(&s);
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["p99_response_latency", "p50_response_latency", "success_count", "failure_count"]);
        assert_eq!(m[0].unit.as_deref(), Some("ms"));
        assert_eq!(m[1].value, "30");
        assert_eq!(m[2].unit, None);
        assert_eq!(m[2].value, "73492m");
        assert_eq!(m[3].value, "0");
    }

    #[test]
    fn a_deployment_has_the_smi_metrics_shape() {
        let s = series(
            Some(73.492),
            Some(0.0),
            &[(LatencyQuantile::P50, 162.5), (LatencyQuantile::P90, 268.75), (LatencyQuantile::P99, 296.875)],
        );
        let tm = traffic_metrics(
            reference(ResourceKind::Deployment, Some("shop"), Some("web")),
            None,
            window(),
            &s,
        );
        assert_eq!(
            serde_json::to_value(&tm).unwrap(),
            json!({"kind":"TrafficMetrics","apiVersion":"metrics.smi-spec.io/v1alpha1",
             "metadata":{"name":"web","namespace":"shop"},
             "timestamp":"2026-11-28T10:00:00Z","window":"30s",
             "resource":{"kind":"Deployment","namespace":"shop","name":"web"},
             "edge":{"direction":"from","resource":null},
             "metrics":[{"name":"p99_response_latency","unit":"ms","value":"296875m"},
                        {"name":"p90_response_latency","unit":"ms","value":"268750m"},
                        {"name":"p50_response_latency","unit":"ms","value":"162500m"},
                        {"name":"success_count","value":"73492m"},
                        {"name":"failure_count","value":"0"}]})
        );
        // The operator's reader takes it as is.
        let back: TrafficMetrics = serde_json::from_value(serde_json::to_value(&tm).unwrap()).unwrap();
        let w = serin::metrics::traffic_metrics::workload_metrics(&back).unwrap();
        assert_eq!((w.success_count, w.failure_count), (73.492, 0.0));
        assert_eq!(w.latency_ms.get(&LatencyQuantile::P99), Some(&296.875));
    }

    #[test]
    fn pods_and_namespaces_have_their_kinds() {
        let s = series(Some(1.0), Some(0.0), &[]);
        let pod =
            traffic_metrics(reference(ResourceKind::Pod, Some("shop"), Some("web-1")), None, window(), &s);
        let json = serde_json::to_value(&pod).unwrap();
        assert_eq!(json["resource"], json!({"kind": "Pod", "namespace": "shop", "name": "web-1"}));
        assert_eq!(json["metadata"], json!({"name": "web-1", "namespace": "shop"}));
        let ns = traffic_metrics(
            reference(ResourceKind::Namespace, Some("shop"), Some("shop")),
            None,
            window(),
            &s,
        );
        let json = serde_json::to_value(&ns).unwrap();
        assert_eq!(json["resource"], json!({"kind": "Namespace", "name": "shop"}));
        assert_eq!(json["metadata"], json!({"name": "shop"}));
        assert_eq!(json["metrics"].as_array().unwrap().len(), 2, "counts only: no latency series");
    }

    #[test]
    fn edges_name_the_peer_and_the_direction() {
        let s = series(Some(10.0), Some(1.5), &[]);
        let web = reference(ResourceKind::Deployment, Some("shop"), Some("web"));
        let loadgen = reference(ResourceKind::Deployment, Some("shop"), Some("loadgen"));
        let tm = traffic_metrics(web.clone(), Some((Direction::From, loadgen)), window(), &s);
        let edges = list(web, vec![tm]);
        assert_eq!(
            serde_json::to_value(&edges).unwrap(),
            json!({"kind":"TrafficMetricsList","apiVersion":"metrics.smi-spec.io/v1alpha1","metadata":{},
             "resource":{"kind":"Deployment","namespace":"shop","name":"web"},
             "items":[{"kind":"TrafficMetrics","apiVersion":"metrics.smi-spec.io/v1alpha1",
               "metadata":{"name":"web","namespace":"shop"},
               "timestamp":"2026-11-28T10:00:00Z","window":"30s",
               "resource":{"kind":"Deployment","namespace":"shop","name":"web"},
               "edge":{"direction":"from","resource":{"kind":"Deployment","namespace":"shop","name":"loadgen"}},
               "metrics":[{"name":"success_count","value":"10"},{"name":"failure_count","value":"1500m"}]}]})
        );
    }

    #[test]
    fn a_list_names_the_kind_it_lists() {
        let l = list(reference(ResourceKind::Deployment, Some("shop"), None), vec![]);
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["resource"], json!({"kind": "Deployment", "namespace": "shop"}));
        assert_eq!(json["items"], json!([]));
    }
}
