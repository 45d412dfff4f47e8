//! PromQL for the metrics Serin gates on, per mesh. Shared by the Prometheus metric source and
//! the Traffic Metrics server (`metrics-adapter/`), so both read a mesh the same way.
//!
//! [`inbound`] and [`edge`] answer one number per query for one workload (a Deployment) over one
//! window:
//! - success and failure counts: `sum(increase(...[window]))`, fractional like smi-metrics';
//! - latency quantiles in milliseconds: `histogram_quantile(q, sum(rate(..._bucket[window])) by (le))`.
//!
//! [`inbound_grouped`] and [`edges_grouped`] build the same queries over the same selectors,
//! grouped `by` the labels that name a resource (a namespace, Deployment or Pod, or an edge's
//! peer), for the adapter's lists and edges: one series per resource. A mesh's labels are
//! written down once (the private `Mesh` table), and every query is built from them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::LatencyQuantile;
/// An edge's direction, seen from the resource whose edges are listed.
pub use crate::smi::metrics::Direction;

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
    /// The histogram's cumulative bucket counts over the window, `by (le)`, for tests that
    /// need the counts (the sequential latency test); `None` when there is no histogram.
    pub latency_buckets: Option<String>,
    /// What turns the histogram's `le` into milliseconds (1000 for seconds).
    pub bucket_le_to_ms: u32,
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
    let mesh = Mesh::of(set);
    let mut sel = mesh.inbound_base.map(str::to_string).into_iter().collect::<Vec<_>>();
    sel.extend(mesh.inbound.select(
        ResourceKind::Deployment,
        Some(target.namespace),
        Some(target.deployment),
    ));
    build(&mesh.server, &sel.join(", "), &promql_duration(window), &[])
}

/// The built-in queries of a mesh for the edge from `source` to `destination` (the caller's
/// outbound side).
pub fn edge(set: QuerySet, source: Workload<'_>, destination: Workload<'_>, window: Duration) -> Queries {
    let mesh = Mesh::of(set);
    let mut sel = mesh.outbound_base.map(str::to_string).into_iter().collect::<Vec<_>>();
    sel.extend(mesh.source.select(ResourceKind::Deployment, Some(source.namespace), Some(source.deployment)));
    sel.extend(mesh.destination.select(
        ResourceKind::Deployment,
        Some(destination.namespace),
        Some(destination.deployment),
    ));
    build(&mesh.client, &sel.join(", "), &promql_duration(window), &[])
}

/// The kinds of resource the Traffic Metrics API describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Namespace,
    Deployment,
    Pod,
}

/// Which resources a grouped query reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection<'a> {
    pub kind: ResourceKind,
    /// The namespace to read in; for [`ResourceKind::Namespace`] the namespace itself. `None`:
    /// every namespace.
    pub namespace: Option<&'a str>,
    /// One resource by name; `None`: every resource of the kind with traffic. Unused for
    /// [`ResourceKind::Namespace`], whose name is `namespace`.
    pub name: Option<&'a str>,
}

/// Queries that answer one series per resource (`sum(...) by (<labels>)`), and how to tell from
/// a series' labels which resource it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupedQueries {
    pub queries: Queries,
    /// The labels each query groups by, in order (latency queries add `le` inside).
    pub by: Vec<String>,
    /// The label holding a series' namespace, when it has one.
    pub namespace_label: Option<String>,
    /// The label holding a series' resource name.
    pub name_label: String,
    /// `name_label` holds a server address (`name[.namespace[.svc...]]`), not a name: OTel
    /// client metrics name the callee only by the address it was called at.
    pub name_is_address: bool,
}

/// The resource a series describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesResource {
    /// Its namespace, when the series says (a Namespace has none).
    pub namespace: Option<String>,
    pub name: String,
}

impl GroupedQueries {
    /// The resource of a series with these labels; `None` when its name label is empty (for
    /// example traffic from outside the mesh).
    pub fn resource(&self, labels: &std::collections::BTreeMap<String, String>) -> Option<SeriesResource> {
        let value = labels.get(&self.name_label).filter(|v| !v.is_empty())?;
        let label_namespace =
            self.namespace_label.as_ref().and_then(|l| labels.get(l)).filter(|v| !v.is_empty()).cloned();
        if !self.name_is_address {
            return Some(SeriesResource { namespace: label_namespace, name: value.clone() });
        }
        // `web`, `web.shop`, `web.shop.svc`, `web.shop.svc.cluster.local`.
        let mut parts = value.split('.');
        let name = parts.next().filter(|n| !n.is_empty())?.to_string();
        let rest: Vec<&str> = parts.collect();
        let namespace = match rest.as_slice() {
            [ns] | [ns, "svc", ..] => Some((*ns).to_string()),
            _ => label_namespace,
        };
        Some(SeriesResource { namespace, name })
    }
}

/// The built-in queries of a mesh for the inbound traffic of the selected resources, one series
/// per resource. `None` when the mesh's metrics do not carry the labels the kind needs.
pub fn inbound_grouped(set: QuerySet, selection: Selection<'_>, window: Duration) -> Option<GroupedQueries> {
    let mesh = Mesh::of(set);
    let side = mesh.inbound;
    let mut sel = mesh.inbound_base.map(str::to_string).into_iter().collect::<Vec<_>>();
    sel.extend(side.try_select(selection.kind, selection.namespace, selection.name)?);
    grouped(&mesh.server, sel, side.identity(selection.kind)?, window)
}

/// The built-in queries of a mesh for the edges of one resource, one series per peer:
/// [`Direction::To`] reads the resource's outbound traffic grouped by callee,
/// [`Direction::From`] the traffic that callers send it, grouped by caller. `None` when the
/// mesh's metrics cannot tell (Istio and OTel have no callee pod label; OTel names callees
/// only by address, so only Deployments have edges there).
pub fn edges_grouped(
    set: QuerySet,
    kind: ResourceKind,
    namespace: &str,
    name: &str,
    direction: Direction,
    window: Duration,
) -> Option<GroupedQueries> {
    let mesh = Mesh::of(set);
    let (this, peer) = match direction {
        Direction::To => (mesh.source, mesh.destination),
        Direction::From => (mesh.destination, mesh.source),
    };
    let name = (kind != ResourceKind::Namespace).then_some(name);
    let mut sel = mesh.outbound_base.map(str::to_string).into_iter().collect::<Vec<_>>();
    sel.extend(this.try_select(kind, Some(namespace), name)?);
    grouped(&mesh.client, sel, peer.identity(kind)?, window)
}

fn grouped(
    family: &Family,
    sel: Vec<String>,
    identity: Identity,
    window: Duration,
) -> Option<GroupedQueries> {
    let mut by: Vec<String> = identity.namespace.iter().map(|l| l.to_string()).collect();
    by.push(identity.name.to_string());
    Some(GroupedQueries {
        queries: build(family, &sel.join(", "), &promql_duration(window), &by),
        namespace_label: identity.namespace.map(str::to_string),
        name_label: identity.name.to_string(),
        name_is_address: identity.address,
        by,
    })
}

/// A mesh's metric families and the labels that name each side of a request.
struct Mesh {
    /// Selects the destination's (server's) own report of inbound requests.
    inbound_base: Option<&'static str>,
    inbound: Side,
    server: Family,
    /// Selects the caller's (client's) report of outbound requests.
    outbound_base: Option<&'static str>,
    source: Side,
    destination: Side,
    client: Family,
}

/// The labels that name one side of a request.
#[derive(Clone, Copy)]
struct Side {
    namespace: Option<&'static str>,
    deployment: &'static str,
    pod: Option<&'static str>,
    /// `deployment` holds a server address (`name[.namespace...]`), matched by a regex.
    address: bool,
}

/// The labels that identify a resource of a kind on one side.
struct Identity {
    namespace: Option<&'static str>,
    name: &'static str,
    address: bool,
}

/// A metric family: a request counter and a latency histogram.
struct Family {
    total: &'static str,
    bucket: &'static str,
    success: &'static str,
    failure: &'static str,
    /// Prefix that turns the histogram's unit into milliseconds.
    to_ms: &'static str,
}

const LINKERD: Family = Family {
    total: "response_total",
    bucket: "response_latency_ms_bucket",
    success: r#"classification="success""#,
    failure: r#"classification="failure""#,
    to_ms: "",
};
const ISTIO: Family = Family {
    total: "istio_requests_total",
    bucket: "istio_request_duration_milliseconds_bucket",
    success: r#"response_code!~"5..""#,
    failure: r#"response_code=~"5..""#,
    to_ms: "",
};
const OTEL_SERVER: Family = Family {
    total: "http_server_request_duration_seconds_count",
    bucket: "http_server_request_duration_seconds_bucket",
    success: r#"http_response_status_code!~"5..""#,
    failure: r#"http_response_status_code=~"5..""#,
    to_ms: "1000 * ",
};
// Client spans carry the caller's resource labels and the server's address.
const OTEL_CLIENT: Family = Family {
    total: "http_client_request_duration_seconds_count",
    bucket: "http_client_request_duration_seconds_bucket",
    ..OTEL_SERVER
};

impl Mesh {
    fn of(set: QuerySet) -> Mesh {
        match set {
            QuerySet::Linkerd => Mesh {
                inbound_base: Some(r#"direction="inbound""#),
                inbound: Side::named("namespace", "deployment", Some("pod")),
                server: LINKERD,
                outbound_base: Some(r#"direction="outbound""#),
                source: Side::named("namespace", "deployment", Some("pod")),
                destination: Side::named("dst_namespace", "dst_deployment", Some("dst_pod")),
                client: LINKERD,
            },
            // `pod` is the scraped pod, which Prometheus' usual kubernetes-pods job adds: the
            // destination's for reporter="destination", the caller's for reporter="source".
            QuerySet::Istio => Mesh {
                inbound_base: Some(r#"reporter="destination""#),
                inbound: Side::named("destination_workload_namespace", "destination_workload", Some("pod")),
                server: ISTIO,
                outbound_base: Some(r#"reporter="source""#),
                source: Side::named("source_workload_namespace", "source_workload", Some("pod")),
                destination: Side::named("destination_workload_namespace", "destination_workload", None),
                client: ISTIO,
            },
            QuerySet::Otel => Mesh {
                inbound_base: None,
                inbound: Side::named("k8s_namespace_name", "k8s_deployment_name", Some("k8s_pod_name")),
                server: OTEL_SERVER,
                outbound_base: None,
                source: Side::named("k8s_namespace_name", "k8s_deployment_name", Some("k8s_pod_name")),
                destination: Side { namespace: None, deployment: "server_address", pod: None, address: true },
                client: OTEL_CLIENT,
            },
        }
    }
}

impl Side {
    const fn named(namespace: &'static str, deployment: &'static str, pod: Option<&'static str>) -> Side {
        Side { namespace: Some(namespace), deployment, pod, address: false }
    }

    /// Matchers for a resource on this side (a Deployment's are always available).
    fn select(&self, kind: ResourceKind, namespace: Option<&str>, name: Option<&str>) -> Vec<String> {
        self.try_select(kind, namespace, name).unwrap_or_default()
    }

    /// Matchers for the resources of `kind` in `namespace` (all when `None`) named `name` (all
    /// when `None`); `None` when this side's labels cannot tell.
    fn try_select(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Option<Vec<String>> {
        let mut sel = Vec::new();
        match (namespace, self.namespace) {
            (Some(ns), Some(label)) => sel.push(format!(r#"{label}="{}""#, escape(ns))),
            // An address names its namespace only sometimes; match by name alone.
            (Some(_), None) if self.address && kind == ResourceKind::Deployment => {}
            (Some(_), None) => return None,
            (None, _) => {}
        }
        let name_label = match kind {
            ResourceKind::Namespace => return Some(sel),
            ResourceKind::Deployment => self.deployment,
            ResourceKind::Pod if self.address => return None,
            ResourceKind::Pod => self.pod?,
        };
        if let Some(name) = name {
            if self.address {
                // As edge() has always matched it: the name is not regex-escaped.
                sel.push(format!(r#"{name_label}=~"{}(\\..*)?""#, escape(name)));
            } else {
                sel.push(format!(r#"{name_label}="{}""#, escape(name)));
            }
        }
        Some(sel)
    }

    /// The labels that identify a resource of `kind` on this side.
    fn identity(&self, kind: ResourceKind) -> Option<Identity> {
        match kind {
            ResourceKind::Namespace if self.address => None,
            ResourceKind::Namespace => {
                Some(Identity { namespace: None, name: self.namespace?, address: false })
            }
            ResourceKind::Deployment => {
                Some(Identity { namespace: self.namespace, name: self.deployment, address: self.address })
            }
            ResourceKind::Pod if self.address => None,
            ResourceKind::Pod => {
                Some(Identity { namespace: self.namespace, name: self.pod?, address: false })
            }
        }
    }
}

/// Adds a matcher to a selector that may be empty.
fn and(sel: &str, matcher: &str) -> String {
    if sel.is_empty() { matcher.to_string() } else { format!("{sel}, {matcher}") }
}

/// The queries of a family over a selector, grouped by `by` (ungrouped when empty).
fn build(family: &Family, sel: &str, w: &str, by: &[String]) -> Queries {
    let Family { total, bucket, success, failure, to_ms } = family;
    let group = if by.is_empty() { String::new() } else { format!(" by ({})", by.join(", ")) };
    let le = std::iter::once("le".to_string()).chain(by.iter().cloned()).collect::<Vec<_>>().join(", ");
    Queries {
        latency_buckets: Some(format!("sum(increase({bucket}{{{sel}}}[{w}])) by ({le})")),
        bucket_le_to_ms: if to_ms.is_empty() { 1 } else { 1000 },
        success_count: format!("sum(increase({total}{{{}}}[{w}])){group}", and(sel, success)),
        failure_count: format!("sum(increase({total}{{{}}}[{w}])){group}", and(sel, failure)),
        latency: QUANTILES
            .iter()
            .map(|q| {
                let qv = quantile_value(*q);
                (*q, format!("{to_ms}histogram_quantile({qv}, sum(rate({bucket}{{{sel}}}[{w}])) by ({le}))"))
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
        latency_buckets: None,
        bucket_le_to_ms: 1,
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
    fn bucket_counts_are_queried_by_le_in_the_histograms_unit() {
        let q = inbound(QuerySet::Linkerd, WEB, Duration::from_secs(60));
        assert_eq!(
            q.latency_buckets.as_deref(),
            Some(
                r#"sum(increase(response_latency_ms_bucket{direction="inbound", namespace="shop", deployment="web"}[60s])) by (le)"#
            )
        );
        assert_eq!(q.bucket_le_to_ms, 1);
        assert_eq!(
            inbound(QuerySet::Otel, WEB, Duration::from_secs(60)).bucket_le_to_ms,
            1000,
            "OTel histograms are in seconds"
        );
        let t = QueryTemplates { success_count: "a".into(), failure_count: "b".into(), latency: None };
        assert_eq!(from_templates(&t, WEB, Duration::from_secs(60)).latency_buckets, None);
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

    /// Every built-in query, pinned: the operator's Prometheus source and the metrics adapter
    /// both depend on these exact strings.
    #[test]
    fn built_in_queries_are_pinned() {
        let w = Duration::from_secs(30);
        let loadgen = Workload { namespace: "shop", deployment: "loadgen" };
        let all = |q: Queries| {
            let mut v = vec![q.success_count, q.failure_count];
            v.extend(q.latency.into_iter().map(|(_, s)| s));
            v
        };
        assert_eq!(
            all(inbound(QuerySet::Istio, WEB, w)),
            [
                r#"sum(increase(istio_requests_total{reporter="destination", destination_workload_namespace="shop", destination_workload="web", response_code!~"5.."}[30s]))"#,
                r#"sum(increase(istio_requests_total{reporter="destination", destination_workload_namespace="shop", destination_workload="web", response_code=~"5.."}[30s]))"#,
                r#"histogram_quantile(0.5, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination", destination_workload_namespace="shop", destination_workload="web"}[30s])) by (le))"#,
                r#"histogram_quantile(0.9, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination", destination_workload_namespace="shop", destination_workload="web"}[30s])) by (le))"#,
                r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination", destination_workload_namespace="shop", destination_workload="web"}[30s])) by (le))"#,
            ]
        );
        assert_eq!(
            all(inbound(QuerySet::Otel, WEB, w)),
            [
                r#"sum(increase(http_server_request_duration_seconds_count{k8s_namespace_name="shop", k8s_deployment_name="web", http_response_status_code!~"5.."}[30s]))"#,
                r#"sum(increase(http_server_request_duration_seconds_count{k8s_namespace_name="shop", k8s_deployment_name="web", http_response_status_code=~"5.."}[30s]))"#,
                r#"1000 * histogram_quantile(0.5, sum(rate(http_server_request_duration_seconds_bucket{k8s_namespace_name="shop", k8s_deployment_name="web"}[30s])) by (le))"#,
                r#"1000 * histogram_quantile(0.9, sum(rate(http_server_request_duration_seconds_bucket{k8s_namespace_name="shop", k8s_deployment_name="web"}[30s])) by (le))"#,
                r#"1000 * histogram_quantile(0.99, sum(rate(http_server_request_duration_seconds_bucket{k8s_namespace_name="shop", k8s_deployment_name="web"}[30s])) by (le))"#,
            ]
        );
        assert_eq!(
            all(edge(QuerySet::Linkerd, loadgen, WEB, w)),
            [
                r#"sum(increase(response_total{direction="outbound", namespace="shop", deployment="loadgen", dst_namespace="shop", dst_deployment="web", classification="success"}[30s]))"#,
                r#"sum(increase(response_total{direction="outbound", namespace="shop", deployment="loadgen", dst_namespace="shop", dst_deployment="web", classification="failure"}[30s]))"#,
                r#"histogram_quantile(0.5, sum(rate(response_latency_ms_bucket{direction="outbound", namespace="shop", deployment="loadgen", dst_namespace="shop", dst_deployment="web"}[30s])) by (le))"#,
                r#"histogram_quantile(0.9, sum(rate(response_latency_ms_bucket{direction="outbound", namespace="shop", deployment="loadgen", dst_namespace="shop", dst_deployment="web"}[30s])) by (le))"#,
                r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{direction="outbound", namespace="shop", deployment="loadgen", dst_namespace="shop", dst_deployment="web"}[30s])) by (le))"#,
            ]
        );
        assert_eq!(
            all(edge(QuerySet::Istio, loadgen, WEB, w))[..2],
            [
                r#"sum(increase(istio_requests_total{reporter="source", source_workload_namespace="shop", source_workload="loadgen", destination_workload_namespace="shop", destination_workload="web", response_code!~"5.."}[30s]))"#,
                r#"sum(increase(istio_requests_total{reporter="source", source_workload_namespace="shop", source_workload="loadgen", destination_workload_namespace="shop", destination_workload="web", response_code=~"5.."}[30s]))"#,
            ]
        );
        assert_eq!(
            all(edge(QuerySet::Otel, loadgen, WEB, w)),
            [
                r#"sum(increase(http_client_request_duration_seconds_count{k8s_namespace_name="shop", k8s_deployment_name="loadgen", server_address=~"web(\\..*)?", http_response_status_code!~"5.."}[30s]))"#,
                r#"sum(increase(http_client_request_duration_seconds_count{k8s_namespace_name="shop", k8s_deployment_name="loadgen", server_address=~"web(\\..*)?", http_response_status_code=~"5.."}[30s]))"#,
                r#"1000 * histogram_quantile(0.5, sum(rate(http_client_request_duration_seconds_bucket{k8s_namespace_name="shop", k8s_deployment_name="loadgen", server_address=~"web(\\..*)?"}[30s])) by (le))"#,
                r#"1000 * histogram_quantile(0.9, sum(rate(http_client_request_duration_seconds_bucket{k8s_namespace_name="shop", k8s_deployment_name="loadgen", server_address=~"web(\\..*)?"}[30s])) by (le))"#,
                r#"1000 * histogram_quantile(0.99, sum(rate(http_client_request_duration_seconds_bucket{k8s_namespace_name="shop", k8s_deployment_name="loadgen", server_address=~"web(\\..*)?"}[30s])) by (le))"#,
            ]
        );
    }

    const SETS: [QuerySet; 3] = [QuerySet::Linkerd, QuerySet::Istio, QuerySet::Otel];

    fn deployments_in(namespace: &str) -> Selection<'_> {
        Selection { kind: ResourceKind::Deployment, namespace: Some(namespace), name: None }
    }

    #[test]
    fn grouped_inbound_queries_are_the_workload_queries_grouped() {
        // One workload's grouped query is inbound()'s, plus the grouping: one code path.
        for set in SETS {
            let one =
                Selection { kind: ResourceKind::Deployment, namespace: Some("shop"), name: Some("web") };
            let g = inbound_grouped(set, one, Duration::from_secs(30)).unwrap();
            let q = inbound(set, WEB, Duration::from_secs(30));
            let by = g.by.join(", ");
            assert_eq!(g.queries.success_count, format!("{} by ({by})", q.success_count), "{set:?}");
            assert_eq!(g.queries.failure_count, format!("{} by ({by})", q.failure_count), "{set:?}");
            assert_eq!(g.queries.latency[2].1, q.latency[2].1.replace("by (le)", &format!("by (le, {by})")));
        }
    }

    #[test]
    fn lists_group_by_the_resource_labels() {
        let w = Duration::from_secs(30);
        let g = inbound_grouped(QuerySet::Linkerd, deployments_in("shop"), w).unwrap();
        assert_eq!(
            g.queries.success_count,
            r#"sum(increase(response_total{direction="inbound", namespace="shop", classification="success"}[30s])) by (namespace, deployment)"#
        );
        assert_eq!(
            g.queries.latency[0].1,
            r#"histogram_quantile(0.5, sum(rate(response_latency_ms_bucket{direction="inbound", namespace="shop"}[30s])) by (le, namespace, deployment))"#
        );
        assert_eq!((g.namespace_label.as_deref(), g.name_label.as_str()), (Some("namespace"), "deployment"));

        let namespaces = Selection { kind: ResourceKind::Namespace, namespace: None, name: None };
        let g = inbound_grouped(QuerySet::Linkerd, namespaces, w).unwrap();
        assert_eq!(
            g.queries.failure_count,
            r#"sum(increase(response_total{direction="inbound", classification="failure"}[30s])) by (namespace)"#
        );
        assert_eq!(g.namespace_label, None);
        let g = inbound_grouped(QuerySet::Otel, namespaces, w).unwrap();
        assert_eq!(
            g.queries.success_count,
            r#"sum(increase(http_server_request_duration_seconds_count{http_response_status_code!~"5.."}[30s])) by (k8s_namespace_name)"#
        );
        assert_eq!(
            g.queries.latency[0].1,
            "1000 * histogram_quantile(0.5, sum(rate(http_server_request_duration_seconds_bucket{}[30s])) by (le, k8s_namespace_name))"
        );
        let one = Selection { kind: ResourceKind::Namespace, namespace: Some("shop"), name: None };
        let g = inbound_grouped(QuerySet::Istio, one, w).unwrap();
        assert_eq!(
            g.queries.success_count,
            r#"sum(increase(istio_requests_total{reporter="destination", destination_workload_namespace="shop", response_code!~"5.."}[30s])) by (destination_workload_namespace)"#
        );

        let pods = Selection { kind: ResourceKind::Pod, namespace: Some("shop"), name: Some("web-1") };
        let pod_labels = |set| {
            let g = inbound_grouped(set, pods, w).unwrap();
            assert!(g.queries.success_count.contains(&format!(r#"{}="web-1""#, g.name_label)), "{set:?}");
            g.by
        };
        assert_eq!(pod_labels(QuerySet::Linkerd), ["namespace", "pod"]);
        assert_eq!(pod_labels(QuerySet::Istio), ["destination_workload_namespace", "pod"]);
        assert_eq!(pod_labels(QuerySet::Otel), ["k8s_namespace_name", "k8s_pod_name"]);

        let everywhere = Selection { kind: ResourceKind::Deployment, namespace: None, name: None };
        let g = inbound_grouped(QuerySet::Istio, everywhere, w).unwrap();
        assert!(g.queries.success_count.contains(r#"{reporter="destination", response_code!~"5.."}"#));
    }

    #[test]
    fn edges_group_by_the_peer() {
        let w = Duration::from_secs(30);
        let d = ResourceKind::Deployment;
        let to = edges_grouped(QuerySet::Linkerd, d, "shop", "loadgen", Direction::To, w).unwrap();
        assert_eq!(
            to.queries.success_count,
            r#"sum(increase(response_total{direction="outbound", namespace="shop", deployment="loadgen", classification="success"}[30s])) by (dst_namespace, dst_deployment)"#
        );
        let from = edges_grouped(QuerySet::Linkerd, d, "shop", "web", Direction::From, w).unwrap();
        assert_eq!(
            from.queries.failure_count,
            r#"sum(increase(response_total{direction="outbound", dst_namespace="shop", dst_deployment="web", classification="failure"}[30s])) by (namespace, deployment)"#
        );
        // The edge query for one pair selects what both grouped queries select.
        let pair = edge(QuerySet::Linkerd, Workload { namespace: "shop", deployment: "loadgen" }, WEB, w);
        assert!(pair.success_count.contains(
            r#"namespace="shop", deployment="loadgen", dst_namespace="shop", dst_deployment="web""#
        ));

        let from = edges_grouped(QuerySet::Istio, d, "shop", "web", Direction::From, w).unwrap();
        assert_eq!(from.by, ["source_workload_namespace", "source_workload"]);
        assert!(from.queries.success_count.contains(
            r#"reporter="source", destination_workload_namespace="shop", destination_workload="web""#
        ));
        let ns = edges_grouped(QuerySet::Istio, ResourceKind::Namespace, "shop", "shop", Direction::To, w)
            .unwrap();
        assert_eq!(ns.by, ["destination_workload_namespace"]);
        let pods =
            edges_grouped(QuerySet::Linkerd, ResourceKind::Pod, "shop", "web-1", Direction::To, w).unwrap();
        assert_eq!(pods.by, ["dst_namespace", "dst_pod"]);
        assert!(pods.queries.success_count.contains(r#"namespace="shop", pod="web-1""#));

        // OTel names callees by address only.
        let to = edges_grouped(QuerySet::Otel, d, "shop", "loadgen", Direction::To, w).unwrap();
        assert_eq!((to.by.as_slice(), to.name_is_address), (["server_address".to_string()].as_slice(), true));
        assert!(
            to.queries.success_count.starts_with("sum(increase(http_client_request_duration_seconds_count{")
        );
        let from = edges_grouped(QuerySet::Otel, d, "shop", "web", Direction::From, w).unwrap();
        assert!(
            from.queries.success_count.contains(r#"{server_address=~"web(\\..*)?", "#),
            "{}",
            from.queries.success_count
        );
        assert_eq!(from.by, ["k8s_namespace_name", "k8s_deployment_name"]);

        // What the metrics cannot tell is refused, not guessed.
        assert_eq!(
            edges_grouped(QuerySet::Istio, ResourceKind::Pod, "shop", "web-1", Direction::To, w),
            None
        );
        assert_eq!(
            edges_grouped(QuerySet::Istio, ResourceKind::Pod, "shop", "web-1", Direction::From, w),
            None
        );
        assert_eq!(
            edges_grouped(QuerySet::Otel, ResourceKind::Namespace, "shop", "shop", Direction::To, w),
            None
        );
        assert_eq!(
            edges_grouped(QuerySet::Otel, ResourceKind::Pod, "shop", "web-1", Direction::From, w),
            None
        );
    }

    #[test]
    fn series_labels_name_their_resource() {
        use std::collections::BTreeMap;
        let w = Duration::from_secs(30);
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let g = inbound_grouped(QuerySet::Linkerd, deployments_in("shop"), w).unwrap();
        assert_eq!(
            g.resource(&labels(&[("namespace", "shop"), ("deployment", "web")])),
            Some(SeriesResource { namespace: Some("shop".into()), name: "web".into() })
        );
        assert_eq!(g.resource(&labels(&[("namespace", "shop"), ("deployment", "")])), None);
        assert_eq!(g.resource(&labels(&[("namespace", "shop")])), None);

        let to =
            edges_grouped(QuerySet::Otel, ResourceKind::Deployment, "shop", "lg", Direction::To, w).unwrap();
        let peer = |address: &str| to.resource(&labels(&[("server_address", address)]));
        let named = |ns: Option<&str>, name: &str| {
            Some(SeriesResource { namespace: ns.map(str::to_string), name: name.to_string() })
        };
        assert_eq!(peer("web"), named(None, "web"));
        assert_eq!(peer("web.pay"), named(Some("pay"), "web"));
        assert_eq!(peer("web.pay.svc.cluster.local"), named(Some("pay"), "web"));
        assert_eq!(peer("api.example.com"), named(None, "api"));
        assert_eq!(peer(""), None);
    }

    #[test]
    fn query_set_names_parse() {
        assert_eq!(QuerySet::parse("istio"), Some(QuerySet::Istio));
        assert_eq!(QuerySet::parse("consul"), None);
    }
}
