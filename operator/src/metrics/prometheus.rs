//! Prometheus as a metric source: PromQL over the HTTP API, with a mesh's query set or the
//! user's templates. The client is shared with the Traffic Metrics server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Deserialize;

use super::querysets::{self, GroupedQueries, Queries, QuerySet, QueryTemplates, Workload};
use super::{BoxFuture, MetricSource, MetricsError, MetricsWindow, WorkloadMetrics};
use crate::api::{LatencyQuantile, Rollout};
use crate::engine::resources::Names;

/// Per-query timeout: a slow Prometheus is an unavailable one.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Prometheus HTTP API client.
#[derive(Clone, Debug)]
pub struct Prometheus {
    http: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiData {
    result_type: String,
    result: serde_json::Value,
}

impl Prometheus {
    /// A client for the Prometheus at `address` (`http://host:port`, optionally with a path).
    pub fn new(address: &str) -> Result<Self, MetricsError> {
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(MetricsError::Malformed(format!(
                "Prometheus address {address:?} must start with http:// or https://"
            )));
        }
        crate::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .build()
            .map_err(|e| MetricsError::Unavailable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Prometheus { http, base: address.trim_end_matches('/').to_string() })
    }

    /// Runs an instant query that yields one number. `Ok(None)` when it yields no series (no
    /// traffic, or no such metric); NaN is returned as NaN, for the gates to refuse.
    pub async fn query(&self, expr: &str) -> Result<Option<f64>, MetricsError> {
        let data = self.instant(expr).await?;
        parse_result(&data.result_type, &data.result)
    }

    /// Runs an instant query that yields a vector, one sample per series (`sum(...) by (...)`).
    /// An empty list when it yields no series; NaN samples are kept as NaN.
    pub async fn query_vector(&self, expr: &str) -> Result<Vec<Sample>, MetricsError> {
        let data = self.instant(expr).await?;
        parse_vector(&data.result_type, &data.result)
    }

    async fn instant(&self, expr: &str) -> Result<ApiData, MetricsError> {
        let url = format!("{}/api/v1/query", self.base);
        let response = self
            .http
            .get(&url)
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| MetricsError::Unavailable(format!("Prometheus at {}: {e}", self.base)))?;
        let status = response.status();
        let body: ApiResponse = response.json().await.map_err(|e| {
            MetricsError::Malformed(format!("Prometheus answered {status} without its JSON: {e}"))
        })?;
        if body.status != "success" {
            return Err(MetricsError::Malformed(format!(
                "Prometheus refused {expr:?}: {}",
                body.error.unwrap_or_else(|| status.to_string())
            )));
        }
        body.data.ok_or_else(|| MetricsError::Malformed("Prometheus answered no data".into()))
    }

    /// Like [`workload`](Self::workload), but tells "no series" apart from zero: a count is
    /// `None` when its query yields no series. All queries run concurrently.
    pub async fn series(&self, queries: &Queries) -> Result<SeriesMetrics, MetricsError> {
        let latency = futures::future::try_join_all(
            queries
                .latency
                .iter()
                .map(|(quantile, expr)| async move { Ok((*quantile, self.query(expr).await?)) }),
        );
        let (success_count, failure_count, latency) = futures::try_join!(
            self.query(&queries.success_count),
            self.query(&queries.failure_count),
            latency
        )?;
        Ok(SeriesMetrics {
            success_count,
            failure_count,
            latency_ms: latency.into_iter().filter_map(|(q, v)| Some((q, v?))).collect(),
        })
    }

    /// Runs grouped queries: the metrics of each group, keyed by the values of the grouping
    /// labels (`queries.by`). A group appears when any of its queries yields a series.
    pub async fn grouped(
        &self,
        queries: &GroupedQueries,
    ) -> Result<BTreeMap<BTreeMap<String, String>, SeriesMetrics>, MetricsError> {
        let q = &queries.queries;
        let latency = futures::future::try_join_all(
            q.latency
                .iter()
                .map(|(quantile, expr)| async move { Ok((*quantile, self.query_vector(expr).await?)) }),
        );
        let (success, failure, latency) = futures::try_join!(
            self.query_vector(&q.success_count),
            self.query_vector(&q.failure_count),
            latency
        )?;
        let key = |sample: &Sample| -> BTreeMap<String, String> {
            queries
                .by
                .iter()
                .map(|label| (label.clone(), sample.labels.get(label).cloned().unwrap_or_default()))
                .collect()
        };
        let mut groups: BTreeMap<BTreeMap<String, String>, SeriesMetrics> = BTreeMap::new();
        for sample in &success {
            groups.entry(key(sample)).or_default().success_count = Some(sample.value);
        }
        for sample in &failure {
            groups.entry(key(sample)).or_default().failure_count = Some(sample.value);
        }
        for (quantile, samples) in &latency {
            for sample in samples {
                groups.entry(key(sample)).or_default().latency_ms.insert(*quantile, sample.value);
            }
        }
        Ok(groups)
    }

    /// Runs every query of `queries` and assembles a workload's metrics.
    pub async fn workload(&self, queries: &Queries) -> Result<WorkloadMetrics, MetricsError> {
        let (success, failure) =
            futures::try_join!(self.query(&queries.success_count), self.query(&queries.failure_count))?;
        let mut latency_ms = BTreeMap::new();
        for (quantile, expr) in &queries.latency {
            if let Some(v) = self.query(expr).await? {
                latency_ms.insert(*quantile, v);
            }
        }
        let latency_buckets = match &queries.latency_buckets {
            Some(expr) => buckets(&self.query_vector(expr).await?, f64::from(queries.bucket_le_to_ms))?,
            None => Vec::new(),
        };
        Ok(WorkloadMetrics {
            success_count: success.unwrap_or(0.0),
            failure_count: failure.unwrap_or(0.0),
            latency_ms,
            latency_buckets,
        })
    }
}

/// A cumulative histogram from `sum(increase(..._bucket[w])) by (le)`, ascending by `le`
/// (scaled to milliseconds). Empty when there were no series.
pub fn buckets(
    samples: &[Sample],
    le_to_ms: f64,
) -> Result<Vec<crate::analysis::sequential::Bucket>, MetricsError> {
    let mut out = samples
        .iter()
        .map(|s| {
            let le = s
                .labels
                .get("le")
                .ok_or_else(|| MetricsError::Malformed("a bucket series without le".into()))?;
            let le = match le.as_str() {
                "+Inf" => f64::INFINITY,
                text => {
                    text.parse::<f64>().map_err(|_| MetricsError::Malformed(format!("bucket le {text:?}")))?
                }
            };
            Ok(crate::analysis::sequential::Bucket { le: le * le_to_ms, count: s.value })
        })
        .collect::<Result<Vec<_>, MetricsError>>()?;
    out.sort_by(|a, b| a.le.total_cmp(&b.le));
    Ok(out)
}

/// One series of a vector result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What the queries of one workload (or one group) yielded; `None` counts had no series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesMetrics {
    pub success_count: Option<f64>,
    pub failure_count: Option<f64>,
    /// Quantiles that yielded a series; NaN (no requests in the window) is kept as NaN.
    pub latency_ms: BTreeMap<LatencyQuantile, f64>,
}

impl SeriesMetrics {
    /// Whether any request was counted: some count query yielded a series.
    pub fn has_traffic(&self) -> bool {
        self.success_count.is_some() || self.failure_count.is_some()
    }
}

fn number(value: &serde_json::Value) -> Result<f64, MetricsError> {
    // [ <unix time>, "<value>" ]
    let text = value
        .get(1)
        .and_then(|v| v.as_str())
        .ok_or_else(|| MetricsError::Malformed(format!("sample {value}")))?;
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        t => t.parse().map_err(|_| MetricsError::Malformed(format!("sample value {t:?}"))),
    }
}

fn parse_result(result_type: &str, result: &serde_json::Value) -> Result<Option<f64>, MetricsError> {
    match result_type {
        "scalar" => number(result).map(Some),
        "vector" => {
            let samples =
                result.as_array().ok_or_else(|| MetricsError::Malformed("vector is not a list".into()))?;
            match samples.as_slice() {
                [] => Ok(None),
                [one] => number(one.get("value").unwrap_or(&serde_json::Value::Null)).map(Some),
                many => Err(MetricsError::Malformed(format!(
                    "query yields {} series; it must aggregate to one (sum(...))",
                    many.len()
                ))),
            }
        }
        other => Err(MetricsError::Malformed(format!("query yields a {other}, not a number"))),
    }
}

fn parse_vector(result_type: &str, result: &serde_json::Value) -> Result<Vec<Sample>, MetricsError> {
    if result_type != "vector" {
        return Err(MetricsError::Malformed(format!("query yields a {result_type}, not a vector")));
    }
    let samples = result.as_array().ok_or_else(|| MetricsError::Malformed("vector is not a list".into()))?;
    samples
        .iter()
        .map(|sample| {
            let labels = match sample.get("metric") {
                None | Some(serde_json::Value::Null) => BTreeMap::new(),
                Some(metric) => serde_json::from_value(metric.clone())
                    .map_err(|e| MetricsError::Malformed(format!("series labels {metric}: {e}")))?,
            };
            let value = number(sample.get("value").unwrap_or(&serde_json::Value::Null))?;
            Ok(Sample { labels, value })
        })
        .collect()
}

/// The Prometheus metric source: reads `spec.analysis.source.prometheus`.
#[derive(Default)]
pub struct PrometheusSource {
    clients: Mutex<HashMap<String, Prometheus>>,
}

impl PrometheusSource {
    fn client(&self, address: &str) -> Result<Prometheus, MetricsError> {
        let mut clients =
            self.clients.lock().map_err(|_| MetricsError::Unavailable("client cache poisoned".into()))?;
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let client = Prometheus::new(address)?;
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }
}

/// The queries for one workload, from templates when given, else from the query set.
pub fn queries_for(
    set: QuerySet,
    templates: Option<&QueryTemplates>,
    target: Workload<'_>,
    window: Duration,
) -> Queries {
    match templates {
        Some(t) => querysets::from_templates(t, target, window),
        None => querysets::inbound(set, target, window),
    }
}

impl MetricSource for PrometheusSource {
    fn fetch<'a>(
        &'a self,
        rollout: &'a Rollout,
        window: Duration,
    ) -> BoxFuture<'a, Result<MetricsWindow, MetricsError>> {
        Box::pin(async move {
            let spec = rollout
                .spec
                .analysis
                .as_ref()
                .and_then(|a| a.source.prometheus.as_ref())
                .ok_or(MetricsError::NotConfigured)?;
            let client = self.client(&spec.address)?;
            let ns = rollout.namespace().unwrap_or_default();
            let names = Names::of(rollout);
            let read = |deployment: &str| {
                let queries = queries_for(
                    spec.query_set,
                    spec.queries.as_ref(),
                    Workload { namespace: &ns, deployment },
                    window,
                );
                let client = client.clone();
                async move { client.workload(&queries).await }
            };
            let (canary, primary) = futures::try_join!(read(&names.root), read(&names.primary))?;
            Ok(MetricsWindow {
                end: Timestamp::now(),
                length: window,
                canary: Some(canary),
                primary: Some(primary),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn histogram_buckets_are_sorted_and_scaled_to_milliseconds() {
        let sample = |le: &str, value: f64| Sample {
            labels: BTreeMap::from([("le".to_string(), le.to_string())]),
            value,
        };
        let got = buckets(&[sample("+Inf", 10.0), sample("0.5", 9.0), sample("0.1", 4.0)], 1000.0).unwrap();
        let pairs: Vec<(f64, f64)> = got.iter().map(|b| (b.le, b.count)).collect();
        assert_eq!(pairs, vec![(100.0, 4.0), (500.0, 9.0), (f64::INFINITY, 10.0)]);
        assert!(buckets(&[Sample { labels: BTreeMap::new(), value: 1.0 }], 1.0).is_err(), "no le label");
        assert!(buckets(&[sample("fast", 1.0)], 1.0).is_err());
        assert!(buckets(&[], 1.0).unwrap().is_empty());
    }

    #[test]
    fn parses_vectors_scalars_nan_and_no_data() {
        assert_eq!(
            parse_result("vector", &json!([{"metric": {}, "value": [1.0, "73.492"]}])).unwrap(),
            Some(73.492)
        );
        assert_eq!(parse_result("vector", &json!([])).unwrap(), None, "no series: no traffic");
        assert_eq!(parse_result("scalar", &json!([1.0, "2"])).unwrap(), Some(2.0));
        assert!(parse_result("vector", &json!([{"value": [1.0, "NaN"]}])).unwrap().unwrap().is_nan());
    }

    #[test]
    fn refuses_results_that_are_not_one_number() {
        let two = json!([{"value": [1.0, "1"]}, {"value": [1.0, "2"]}]);
        assert!(parse_result("vector", &two).unwrap_err().to_string().contains("aggregate to one"));
        assert!(parse_result("matrix", &json!([])).is_err());
        assert!(parse_result("vector", &json!([{"value": [1.0, "lots"]}])).is_err());
    }

    #[test]
    fn parses_vectors_with_labels() {
        let result = json!([
            {"metric": {"namespace": "shop", "deployment": "web"}, "value": [1.0, "73.492"]},
            {"metric": {"namespace": "shop", "deployment": "api"}, "value": [1.0, "NaN"]},
            {"value": [1.0, "1"]}
        ]);
        let samples = parse_vector("vector", &result).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels.get("deployment").map(String::as_str), Some("web"));
        assert_eq!(samples[0].value, 73.492);
        assert!(samples[1].value.is_nan());
        assert!(samples[2].labels.is_empty());
        assert_eq!(parse_vector("vector", &json!([])).unwrap(), vec![]);
        assert!(parse_vector("scalar", &json!([1.0, "2"])).is_err());
        assert!(parse_vector("vector", &json!([{"metric": {"a": 1}, "value": [1.0, "2"]}])).is_err());
    }

    #[test]
    fn no_series_is_not_traffic_but_zero_is() {
        assert!(!SeriesMetrics::default().has_traffic());
        assert!(SeriesMetrics { failure_count: Some(0.0), ..Default::default() }.has_traffic());
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_unavailable() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let prometheus = Prometheus::new("http://127.0.0.1:1").unwrap();
        assert!(matches!(prometheus.query("up").await, Err(MetricsError::Unavailable(_))));
        assert!(matches!(prometheus.query_vector("up").await, Err(MetricsError::Unavailable(_))));
    }

    #[test]
    fn addresses_must_be_http_urls() {
        assert!(Prometheus::new("prometheus:9090").unwrap_err().to_string().contains("http://"));
    }
}
