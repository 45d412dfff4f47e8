//! PromQL for the metrics Serin gates on, per mesh. Shared by the Prometheus metric source and
//! the Traffic Metrics server (`metrics-adapter/`), so both read a mesh the same way.
//!
//! Every query answers one number for one workload (a Deployment) over one window:
//! - success and failure counts: `sum(increase(...[window]))`, fractional like smi-metrics';
//! - latency quantiles in milliseconds: `histogram_quantile(q, sum(rate(..._bucket[window])) by (le))`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::LatencyQuantile;

/// A mesh's metric names and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum QuerySet {
    /// Linkerd's proxy: `response_total`, `response_latency_ms_bucket`.
    #[default]
    Linkerd,
    /// Istio's standard metrics: `istio_requests_total`, `istio_request_duration_milliseconds_bucket`.
    Istio,
    /// OpenTelemetry HTTP semantic conventions, exported to Prometheus:
    /// `http_server_request_duration_seconds`, with `k8s_namespace_name` and `k8s_deployment_name`
    /// resource labels.
    Otel,
}

impl QuerySet {
    /// Parses `linkerd`, `istio` or `otel`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "linkerd" => Some(QuerySet::Linkerd),
            "istio" => Some(QuerySet::Istio),
            "otel" => Some(QuerySet::Otel),
            _ => None,
        }
    }
}

/// User-written query templates. Placeholders: `{{namespace}}`, `{{deployment}}`, `{{window}}`
/// (a PromQL duration), and for latency `{{quantile}}` (0.5, 0.9 or 0.99). Latency must come
/// out in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryTemplates {
    /// Successful requests in the window.
    pub success_count: String,
    /// Failed requests in the window.
    pub failure_count: String,
    /// A latency quantile in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
}

/// The workload a query is about. When `source` is set the query reads the edge from `source`
/// to the workload (outbound metrics of the caller); otherwise the workload's inbound side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub deployment: &'a str,
}

/// The queries for one workload and window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    pub success_count: String,
    pub failure_count: String,
    /// One query per quantile, when latency can be queried.
    pub latency: Vec<(LatencyQuantile, String)>,
}

/// The window as a PromQL duration: whole seconds, at least one.
pub fn promql_duration(window: Duration) -> String {
    format!("{}s", window.as_secs().max(1))
}

/// The quantile as a number.
pub fn quantile_value(q: LatencyQuantile) -> &'static str {
    match q {
        LatencyQuantile::P50 => "0.5",
        LatencyQuantile::P90 => "0.9",
        LatencyQuantile::P99 => "0.99",
    }
}

/// Escapes a PromQL label value (inside double quotes).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

const QUANTILES: [LatencyQuantile; 3] = [LatencyQuantile::P50, LatencyQuantile::P90, LatencyQuantile::P99];

/// The built-in queries of a mesh for a workload's inbound traffic.
pub fn inbound(set: QuerySet, target: Workload<'_>, window: Duration) -> Queries {
    let (ns, dep, w) = (escape(target.namespace), escape(target.deployment), promql_duration(window));
    match set {
        QuerySet::Linkerd => {
            let sel = format!(r#"direction="inbound", namespace="{ns}", deployment="{dep}""#);
            linkerd(&sel, &w)
        }
        QuerySet::Istio => {
            let sel = format!(
                r#"reporter="destination", destination_workload_namespace="{ns}", destination_workload="{dep}""#
            );
            istio(&sel, &w)
        }
        QuerySet::Otel => {
            let sel = format!(r#"k8s_namespace_name="{ns}", k8s_deployment_name="{dep}""#);
            otel(&sel, &w)
        }
    }
}

/// The built-in queries of a mesh for the edge from `source` to `destination` (the caller's
/// outbound side).
pub fn edge(set: QuerySet, source: Workload<'_>, destination: Workload<'_>, window: Duration) -> Queries {
    let w = promql_duration(window);
    let (sns, sdep) = (escape(source.namespace), escape(source.deployment));
    let (dns, ddep) = (escape(destination.namespace), escape(destination.deployment));
    match set {
        QuerySet::Linkerd => {
            let sel = format!(
                r#"direction="outbound", namespace="{sns}", deployment="{sdep}", dst_namespace="{dns}", dst_deployment="{ddep}""#
            );
            linkerd(&sel, &w)
        }
        QuerySet::Istio => {
            let sel = format!(
                r#"reporter="source", source_workload_namespace="{sns}", source_workload="{sdep}", destination_workload_namespace="{dns}", destination_workload="{ddep}""#
            );
            istio(&sel, &w)
        }
        QuerySet::Otel => {
            // Client spans carry the caller's resource labels and the server's address.
            let sel = format!(
                r#"k8s_namespace_name="{sns}", k8s_deployment_name="{sdep}", server_address=~"{ddep}(\\..*)?""#
            );
            let count = "http_client_request_duration_seconds_count";
            let bucket = "http_client_request_duration_seconds_bucket";
            Queries {
                success_count: format!(
                    r#"sum(increase({count}{{{sel}, http_response_status_code!~"5.."}}[{w}]))"#
                ),
                failure_count: format!(
                    r#"sum(increase({count}{{{sel}, http_response_status_code=~"5.."}}[{w}]))"#
                ),
                latency: QUANTILES
                    .iter()
                    .map(|q| {
                        let qv = quantile_value(*q);
                        (
                            *q,
                            format!(
                                "1000 * histogram_quantile({qv}, sum(rate({bucket}{{{sel}}}[{w}])) by (le))"
                            ),
                        )
                    })
                    .collect(),
            }
        }
    }
}

fn linkerd(sel: &str, w: &str) -> Queries {
    Queries {
        success_count: format!(r#"sum(increase(response_total{{{sel}, classification="success"}}[{w}]))"#),
        failure_count: format!(r#"sum(increase(response_total{{{sel}, classification="failure"}}[{w}]))"#),
        latency: QUANTILES
            .iter()
            .map(|q| {
                let qv = quantile_value(*q);
                (*q, format!("histogram_quantile({qv}, sum(rate(response_latency_ms_bucket{{{sel}}}[{w}])) by (le))"))
            })
            .collect(),
    }
}

fn istio(sel: &str, w: &str) -> Queries {
    Queries {
        success_count: format!(r#"sum(increase(istio_requests_total{{{sel}, response_code!~"5.."}}[{w}]))"#),
        failure_count: format!(r#"sum(increase(istio_requests_total{{{sel}, response_code=~"5.."}}[{w}]))"#),
        latency: QUANTILES
            .iter()
            .map(|q| {
                let qv = quantile_value(*q);
                (
                    *q,
                    format!(
                        "histogram_quantile({qv}, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{w}])) by (le))"
                    ),
                )
            })
            .collect(),
    }
}

fn otel(sel: &str, w: &str) -> Queries {
    let count = "http_server_request_duration_seconds_count";
    let bucket = "http_server_request_duration_seconds_bucket";
    Queries {
        success_count: format!(r#"sum(increase({count}{{{sel}, http_response_status_code!~"5.."}}[{w}]))"#),
        failure_count: format!(r#"sum(increase({count}{{{sel}, http_response_status_code=~"5.."}}[{w}]))"#),
        latency: QUANTILES
            .iter()
            .map(|q| {
                let qv = quantile_value(*q);
                (*q, format!("1000 * histogram_quantile({qv}, sum(rate({bucket}{{{sel}}}[{w}])) by (le))"))
            })
            .collect(),
    }
}

/// Renders user templates for a workload.
pub fn from_templates(templates: &QueryTemplates, target: Workload<'_>, window: Duration) -> Queries {
    let fill = |t: &str, q: Option<LatencyQuantile>| {
        t.replace("{{namespace}}", &escape(target.namespace))
            .replace("{{deployment}}", &escape(target.deployment))
            .replace("{{window}}", &promql_duration(window))
            .replace("{{quantile}}", q.map_or("", quantile_value))
    };
    Queries {
        success_count: fill(&templates.success_count, None),
        failure_count: fill(&templates.failure_count, None),
        latency: templates
            .latency
            .as_deref()
            .map(|t| QUANTILES.iter().map(|q| (*q, fill(t, Some(*q)))).collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: Workload<'static> = Workload { namespace: "shop", deployment: "web" };

    #[test]
    fn linkerd_queries_match_what_smi_metrics_ran() {
        let q = inbound(QuerySet::Linkerd, WEB, Duration::from_secs(60));
        assert_eq!(
            q.success_count,
            r#"sum(increase(response_total{direction="inbound", namespace="shop", deployment="web", classification="success"}[60s]))"#
        );
        assert!(q.failure_count.contains(r#"classification="failure""#));
        let (quantile, p99) = &q.latency[2];
        assert_eq!(*quantile, LatencyQuantile::P99);
        assert_eq!(
            p99,
            r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{direction="inbound", namespace="shop", deployment="web"}[60s])) by (le))"#
        );
    }

    #[test]
    fn istio_queries_use_destination_workload_labels_and_5xx_as_failure() {
        let q = inbound(QuerySet::Istio, WEB, Duration::from_secs(30));
        assert!(q.success_count.starts_with("sum(increase(istio_requests_total{"));
        assert!(q.success_count.contains(r#"destination_workload="web""#));
        assert!(q.success_count.contains(r#"response_code!~"5..""#));
        assert!(q.failure_count.contains(r#"response_code=~"5..""#));
        assert!(q.latency[0].1.contains("istio_request_duration_milliseconds_bucket"));
        assert!(q.latency[0].1.starts_with("histogram_quantile(0.5,"));
    }

    #[test]
    fn otel_latency_is_converted_from_seconds_to_milliseconds() {
        let q = inbound(QuerySet::Otel, WEB, Duration::from_secs(60));
        assert!(q.latency[1].1.starts_with("1000 * histogram_quantile(0.9, "));
        assert!(q.success_count.contains(r#"k8s_deployment_name="web""#));
    }

    #[test]
    fn edges_read_the_callers_outbound_side() {
        let q = edge(
            QuerySet::Linkerd,
            Workload { namespace: "shop", deployment: "loadgen" },
            WEB,
            Duration::from_secs(60),
        );
        assert!(q.success_count.contains(r#"direction="outbound""#));
        assert!(q.success_count.contains(r#"deployment="loadgen""#));
        assert!(q.success_count.contains(r#"dst_deployment="web""#));
        let q = edge(
            QuerySet::Istio,
            Workload { namespace: "shop", deployment: "loadgen" },
            WEB,
            Duration::from_secs(60),
        );
        assert!(q.success_count.contains(r#"reporter="source""#));
    }

    #[test]
    fn templates_fill_every_placeholder_and_escape_values() {
        let t = QueryTemplates {
            success_count: r#"sum(increase(ok{ns="{{namespace}}",app="{{deployment}}"}[{{window}}]))"#.into(),
            failure_count: "x".into(),
            latency: Some("q({{quantile}})".into()),
        };
        let q = from_templates(
            &t,
            Workload { namespace: "a\"b", deployment: "web" },
            Duration::from_millis(90_500),
        );
        assert_eq!(q.success_count, r#"sum(increase(ok{ns="a\"b",app="web"}[90s]))"#);
        assert_eq!(
            q.latency.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
            vec!["q(0.5)", "q(0.9)", "q(0.99)"]
        );
        assert_eq!(promql_duration(Duration::from_millis(10)), "1s");
    }

    #[test]
    fn query_set_names_parse() {
        assert_eq!(QuerySet::parse("istio"), Some(QuerySet::Istio));
        assert_eq!(QuerySet::parse("consul"), None);
    }
}
