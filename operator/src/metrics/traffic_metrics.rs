//! The SMI Traffic Metrics API as a metric source: `metrics.smi-spec.io/v1alpha1`, read
//! through kube-apiserver's aggregation layer, for the canary and the primary Deployments.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Client, ResourceExt};

use super::{BoxFuture, MetricSource, MetricsError, MetricsWindow, WorkloadMetrics};
use crate::api::{LatencyQuantile, Rollout};
use crate::engine::resources::Names;
use crate::smi::metrics::{API_VERSION, TrafficMetrics, names};

/// Reads TrafficMetrics of Deployments through the API server.
#[derive(Clone)]
pub struct TrafficMetricsApi {
    client: Client,
}

impl TrafficMetricsApi {
    pub fn new(client: Client) -> Self {
        TrafficMetricsApi { client }
    }

    /// The path of a Deployment's TrafficMetrics over `window`, with the window as the `t` query
    /// parameter (a Go duration), as smi-metrics served it.
    pub fn path(namespace: &str, deployment: &str, window: Duration) -> String {
        format!(
            "/apis/{API_VERSION}/namespaces/{namespace}/deployments/{deployment}?t={}s",
            window.as_secs().max(1)
        )
    }

    /// One Deployment's metrics; `Ok(None)` when the server has none for it (404).
    pub async fn read(
        &self,
        namespace: &str,
        deployment: &str,
        window: Duration,
    ) -> Result<Option<TrafficMetrics>, MetricsError> {
        let request = http::Request::get(Self::path(namespace, deployment, window))
            .body(Vec::new())
            .map_err(|e| MetricsError::Malformed(e.to_string()))?;
        match self.client.request::<TrafficMetrics>(request).await {
            Ok(tm) => Ok(Some(tm)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(kube::Error::Api(status)) => Err(MetricsError::Unavailable(format!(
                "{API_VERSION} answered {}: {}",
                status.code, status.message
            ))),
            Err(kube::Error::SerdeError(e)) => Err(MetricsError::Malformed(format!("TrafficMetrics: {e}"))),
            Err(e) => Err(MetricsError::Unavailable(e.to_string())),
        }
    }
}

/// Converts a TrafficMetrics into gate inputs. Counts must be present and parse; a latency that
/// is missing or does not parse is left out (its gate then has insufficient data).
pub fn workload_metrics(tm: &TrafficMetrics) -> Result<WorkloadMetrics, MetricsError> {
    let count = |name: &str| tm.value(name).map_err(|e| MetricsError::Malformed(e.to_string()));
    let mut latency_ms = BTreeMap::new();
    for (q, name) in [
        (LatencyQuantile::P50, names::P50_LATENCY),
        (LatencyQuantile::P90, names::P90_LATENCY),
        (LatencyQuantile::P99, names::P99_LATENCY),
    ] {
        if let Ok(v) = tm.value(name) {
            latency_ms.insert(q, v);
        }
    }
    Ok(WorkloadMetrics {
        success_count: count(names::SUCCESS_COUNT)?,
        failure_count: count(names::FAILURE_COUNT)?,
        latency_ms,
        latency_buckets: Vec::new(),
    })
}

impl MetricSource for TrafficMetricsApi {
    fn fetch<'a>(
        &'a self,
        rollout: &'a Rollout,
        window: Duration,
    ) -> BoxFuture<'a, Result<MetricsWindow, MetricsError>> {
        Box::pin(async move {
            let ns = rollout.namespace().unwrap_or_default();
            let names = Names::of(rollout);
            let (canary, primary) = futures::try_join!(
                self.read(&ns, &names.root, window),
                self.read(&ns, &names.primary, window)
            )?;
            // The window ends at the older of the two timestamps, so a stale answer shows.
            let end = [&canary, &primary]
                .into_iter()
                .flatten()
                .map(|tm| tm.timestamp.as_ref().map(|t| t.0))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| MetricsError::Malformed("TrafficMetrics without a timestamp".into()))?
                .into_iter()
                .min()
                .unwrap_or_else(Timestamp::now);
            Ok(MetricsWindow {
                end,
                length: window,
                canary: canary.as_ref().map(workload_metrics).transpose()?,
                primary: primary.as_ref().map(workload_metrics).transpose()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metrics: serde_json::Value) -> TrafficMetrics {
        serde_json::from_value(serde_json::json!({
            "kind": "TrafficMetrics", "apiVersion": "metrics.smi-spec.io/v1alpha1",
            "metadata": {"name": "web", "namespace": "shop"}, "timestamp": "2026-11-28T00:00:00Z", "window": "60s",
            "resource": {"kind": "Deployment", "namespace": "shop", "name": "web"},
            "metrics": metrics
        }))
        .unwrap()
    }

    #[test]
    fn the_window_is_the_t_parameter() {
        assert_eq!(
            TrafficMetricsApi::path("shop", "web", Duration::from_secs(60)),
            "/apis/metrics.smi-spec.io/v1alpha1/namespaces/shop/deployments/web?t=60s"
        );
    }

    #[test]
    fn quantities_become_gate_inputs() {
        let tm = sample(serde_json::json!([
            {"name": "p99_response_latency", "unit": "ms", "value": "296875m"},
            {"name": "p50_response_latency", "unit": "ms", "value": "NaN"},
            {"name": "success_count", "value": "73492m"},
            {"name": "failure_count", "value": "0"}
        ]));
        let w = workload_metrics(&tm).unwrap();
        assert_eq!(w.success_count, 73.492);
        assert_eq!(w.failure_count, 0.0);
        assert_eq!(w.latency_ms.get(&LatencyQuantile::P99), Some(&296.875));
        assert_eq!(w.latency_ms.get(&LatencyQuantile::P50), None, "NaN is left out, never a value");
    }

    #[test]
    fn missing_or_malformed_counts_are_errors() {
        let tm = sample(serde_json::json!([{"name": "success_count", "value": "10"}]));
        assert!(workload_metrics(&tm).unwrap_err().to_string().contains("failure_count"));
        let tm = sample(
            serde_json::json!([{"name": "success_count", "value": "ten"}, {"name": "failure_count", "value": "0"}]),
        );
        assert!(workload_metrics(&tm).is_err());
    }
}
