//! Answers a metrics request from Prometheus, with the operator's query sets and client.
//!
//! - One Deployment: [`querysets::inbound`], the very queries the operator's Prometheus
//!   source runs.
//! - Lists, Pods and Namespaces: [`querysets::inbound_grouped`], the same selectors grouped
//!   `by` the resource's labels, so a list costs five queries whatever its length.
//! - Edges: [`querysets::edges_grouped`] in both directions, grouped by peer.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serin::metrics::prometheus::Prometheus;
use serin::metrics::querysets::{
    self, Direction, GroupedQueries, QuerySet, ResourceKind, Selection, Workload,
};
use serin::smi::metrics::TrafficMetrics;

use crate::routes::{MetricsRequest, go_duration, plural};
use crate::status::ApiError;
use crate::traffic::{self, Window, reference};

/// Prometheus and the mesh's query set.
#[derive(Clone, Debug)]
pub struct Backend {
    prometheus: Prometheus,
    query_set: QuerySet,
}

impl Backend {
    pub fn new(prometheus: Prometheus, query_set: QuerySet) -> Self {
        Backend { prometheus, query_set }
    }

    /// The TrafficMetrics or TrafficMetricsList a request asks for, as JSON.
    pub async fn answer(
        &self,
        request: &MetricsRequest,
        window: Duration,
    ) -> Result<serde_json::Value, ApiError> {
        let at = Window { end: Timestamp::now(), length: window };
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| ApiError::Internal(e.to_string()))
        };
        if request.edges {
            return json(serde_json::to_value(self.edges(request, at).await?));
        }
        if request.is_list() {
            return json(serde_json::to_value(self.list(request, at).await?));
        }
        json(serde_json::to_value(self.one(request, at).await?))
    }

    async fn one(&self, request: &MetricsRequest, at: Window) -> Result<TrafficMetrics, ApiError> {
        let namespace = request.namespace.as_deref();
        let name = match request.kind {
            ResourceKind::Namespace => namespace,
            _ => request.name.as_deref(),
        }
        .ok_or_else(|| ApiError::Internal("a single object without a name".into()))?;
        let no_metrics = || ApiError::NoMetrics {
            kind: plural(request.kind),
            name: name.to_string(),
            window: go_duration(at.length),
        };
        let series = match (request.kind, namespace) {
            (ResourceKind::Deployment, Some(ns)) => {
                let queries = querysets::inbound(
                    self.query_set,
                    Workload { namespace: ns, deployment: name },
                    at.length,
                );
                self.prometheus.series(&queries).await?
            }
            _ => {
                let selection = Selection { kind: request.kind, namespace, name: request.name.as_deref() };
                let queries = self.inbound_grouped(selection, at.length)?;
                // One resource selected: at most one group (more only if labels disagree, then sum
                // nothing and say so).
                let mut groups = self.prometheus.grouped(&queries).await?.into_values();
                match (groups.next(), groups.next()) {
                    (Some(one), None) => one,
                    (None, _) => return Err(no_metrics()),
                    (Some(_), Some(_)) => {
                        return Err(ApiError::Internal(format!(
                            "Prometheus has more than one series for {} {name}",
                            plural(request.kind)
                        )));
                    }
                }
            }
        };
        if !series.has_traffic() {
            return Err(no_metrics());
        }
        Ok(traffic::traffic_metrics(reference(request.kind, namespace, Some(name)), None, at, &series))
    }

    async fn list(
        &self,
        request: &MetricsRequest,
        at: Window,
    ) -> Result<serin::smi::metrics::TrafficMetricsList, ApiError> {
        let namespace = request.namespace.as_deref();
        let selection = Selection { kind: request.kind, namespace, name: None };
        let queries = self.inbound_grouped(selection, at.length)?;
        let groups = self.prometheus.grouped(&queries).await?;
        let items = groups
            .iter()
            .filter(|(_, series)| series.has_traffic())
            .filter_map(|(labels, series)| {
                let resource = queries.resource(labels)?;
                let name = resource.name;
                let reference = match request.kind {
                    ResourceKind::Namespace => reference(request.kind, None, Some(&name)),
                    _ => reference(request.kind, resource.namespace.as_deref().or(namespace), Some(&name)),
                };
                Some(traffic::traffic_metrics(reference, None, at, series))
            })
            .collect();
        Ok(traffic::list(reference(request.kind, namespace, None), items))
    }

    async fn edges(
        &self,
        request: &MetricsRequest,
        at: Window,
    ) -> Result<serin::smi::metrics::TrafficMetricsList, ApiError> {
        let namespace = request
            .namespace
            .as_deref()
            .ok_or_else(|| ApiError::Internal("edges of a resource without a namespace".into()))?;
        let name = match request.kind {
            ResourceKind::Namespace => namespace,
            _ => request.name.as_deref().unwrap_or(namespace),
        };
        let this = reference(request.kind, Some(namespace), Some(name));
        let unsupported = || {
            ApiError::BadRequest(format!(
                "edges of {} are not available with the {} query set: its metrics do not name both ends",
                plural(request.kind),
                set_name(self.query_set)
            ))
        };
        let grouped = |direction| {
            querysets::edges_grouped(self.query_set, request.kind, namespace, name, direction, at.length)
                .ok_or_else(unsupported)
        };
        let (to, from) = (grouped(Direction::To)?, grouped(Direction::From)?);
        let (to_groups, from_groups) =
            futures::try_join!(self.prometheus.grouped(&to), self.prometheus.grouped(&from))?;
        let mut items = Vec::new();
        for (direction, queries, groups) in
            [(Direction::To, &to, &to_groups), (Direction::From, &from, &from_groups)]
        {
            for (labels, series) in groups {
                if !series.has_traffic() {
                    continue;
                }
                let Some(peer) = queries.resource(labels) else { continue };
                let peer_namespace = peer.namespace.as_deref().unwrap_or(namespace);
                let peer = match request.kind {
                    ResourceKind::Namespace => reference(request.kind, None, Some(&peer.name)),
                    _ => reference(request.kind, Some(peer_namespace), Some(&peer.name)),
                };
                items.push(traffic::traffic_metrics(this.clone(), Some((direction, peer)), at, series));
            }
        }
        Ok(traffic::list(this, items))
    }

    fn inbound_grouped(
        &self,
        selection: Selection<'_>,
        window: Duration,
    ) -> Result<GroupedQueries, ApiError> {
        querysets::inbound_grouped(self.query_set, selection, window).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{} are not available with the {} query set: its metrics do not name them",
                plural(selection.kind),
                set_name(self.query_set)
            ))
        })
    }
}

/// The query set as `--query-set` spells it.
pub fn set_name(set: QuerySet) -> &'static str {
    match set {
        QuerySet::Linkerd => "linkerd",
        QuerySet::Istio => "istio",
        QuerySet::Otel => "otel",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::routes::{Route, route};

    type Answer = Arc<dyn Fn(&str) -> Value + Send + Sync>;

    /// A Prometheus HTTP API on loopback whose instant queries `answer` decides: it returns
    /// the result vector for a query.
    async fn fake_prometheus(answer: Answer) -> Prometheus {
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(move |axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>| {
                let answer = answer.clone();
                async move {
                    let expr = q.iter().find(|(k, _)| k == "query").map(|(_, v)| v.clone()).unwrap_or_default();
                    axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": answer(&expr)}}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Prometheus::new(&format!("http://127.0.0.1:{port}")).unwrap()
    }

    fn sample(labels: Value, value: &str) -> Value {
        json!({"metric": labels, "value": [1700000000.0, value]})
    }

    async fn ask(backend: &Backend, path: &str) -> Result<Value, ApiError> {
        let Route::Metrics(request) = route(&format!("/apis/metrics.smi-spec.io/v1alpha1{path}")).unwrap()
        else {
            panic!("{path} is not a metrics path")
        };
        backend.answer(&request, Duration::from_secs(30)).await
    }

    fn metric<'a>(tm: &'a Value, name: &str) -> Option<&'a str> {
        tm["metrics"].as_array().unwrap().iter().find(|m| m["name"] == name).and_then(|m| m["value"].as_str())
    }

    #[tokio::test]
    async fn a_deployment_without_series_is_not_found() {
        let prometheus = fake_prometheus(Arc::new(|_| json!([]))).await;
        let backend = Backend::new(prometheus, QuerySet::Linkerd);
        let err = ask(&backend, "/namespaces/shop/deployments/web").await.unwrap_err();
        assert_eq!(
            err,
            ApiError::NoMetrics { kind: "deployments", name: "web".into(), window: "30s".into() }
        );
        assert_eq!(err.status()["code"], 404);
        // Lists are empty rather than missing.
        let list = ask(&backend, "/namespaces/shop/deployments").await.unwrap();
        assert_eq!(list["items"], json!([]));
        assert!(matches!(
            ask(&backend, "/namespaces/shop/pods/web-0").await,
            Err(ApiError::NoMetrics { .. })
        ));
        assert!(matches!(ask(&backend, "/namespaces/shop").await, Err(ApiError::NoMetrics { .. })));
    }

    #[tokio::test]
    async fn a_deployment_reads_the_operators_queries() {
        let prometheus = fake_prometheus(Arc::new(|q: &str| {
            // Exactly the operator's query for the success count; nothing else has data.
            let success = querysets::inbound(
                QuerySet::Linkerd,
                Workload { namespace: "shop", deployment: "web" },
                Duration::from_secs(30),
            )
            .success_count;
            if q == success {
                json!([sample(json!({}), "73.492")])
            } else if q.starts_with("histogram_quantile(0.99") {
                json!([sample(json!({}), "NaN")])
            } else {
                json!([])
            }
        }))
        .await;
        let tm = ask(&Backend::new(prometheus, QuerySet::Linkerd), "/namespaces/shop/deployments/web")
            .await
            .unwrap();
        assert_eq!(tm["kind"], "TrafficMetrics");
        assert_eq!(metric(&tm, "success_count"), Some("73492m"));
        assert_eq!(metric(&tm, "failure_count"), Some("0"), "no failure series: zero failures");
        assert_eq!(metric(&tm, "p99_response_latency"), None, "NaN latency is left out");
        assert_eq!(tm["metrics"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn lists_have_one_item_per_labelled_series() {
        let prometheus = fake_prometheus(Arc::new(|q: &str| {
            assert!(
                q.ends_with("by (namespace, deployment)") || q.contains("by (le, namespace, deployment)"),
                "{q}"
            );
            let web = json!({"namespace": "shop", "deployment": "web"});
            let api = json!({"namespace": "shop", "deployment": "api"});
            let unnamed = json!({"namespace": "shop", "deployment": ""});
            if q.contains(r#"classification="success""#) {
                json!([sample(web, "10"), sample(api, "5"), sample(unnamed, "1")])
            } else if q.contains(r#"classification="failure""#) {
                json!([sample(web, "1")])
            } else if q.starts_with("histogram_quantile(0.5,") {
                json!([sample(web, "30")])
            } else {
                json!([])
            }
        }))
        .await;
        let list =
            ask(&Backend::new(prometheus, QuerySet::Linkerd), "/namespaces/shop/deployments").await.unwrap();
        assert_eq!(list["kind"], "TrafficMetricsList");
        assert_eq!(list["resource"], json!({"kind": "Deployment", "namespace": "shop"}));
        let items = list["items"].as_array().unwrap();
        let names: Vec<&str> = items.iter().map(|i| i["resource"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["api", "web"], "sorted, and the series without a name is left out");
        assert_eq!(metric(&items[0], "failure_count"), Some("0"));
        assert_eq!(metric(&items[1], "failure_count"), Some("1"));
        assert_eq!(metric(&items[1], "p50_response_latency"), Some("30"));
        assert_eq!(items[1]["metadata"], json!({"name": "web", "namespace": "shop"}));
    }

    #[tokio::test]
    async fn edges_come_from_both_directions() {
        let prometheus = fake_prometheus(Arc::new(|q: &str| {
            if !q.contains(r#"classification="success""#) {
                return json!([]);
            }
            if q.contains(r#"dst_deployment="web""#) {
                // Callers of web, grouped by caller.
                json!([sample(json!({"namespace": "shop", "deployment": "loadgen"}), "20")])
            } else if q.contains(r#"deployment="web""#) {
                // web's own calls, grouped by callee (in another namespace).
                json!([sample(json!({"dst_namespace": "data", "dst_deployment": "db"}), "7")])
            } else {
                json!([])
            }
        }))
        .await;
        let edges =
            ask(&Backend::new(prometheus, QuerySet::Linkerd), "/namespaces/shop/deployments/web/edges")
                .await
                .unwrap();
        assert_eq!(edges["resource"], json!({"kind": "Deployment", "namespace": "shop", "name": "web"}));
        let items = edges["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{edges}");
        assert_eq!(items[0]["edge"]["direction"], "to");
        assert_eq!(
            items[0]["edge"]["resource"],
            json!({"kind": "Deployment", "namespace": "data", "name": "db"})
        );
        assert_eq!(metric(&items[0], "success_count"), Some("7"));
        assert_eq!(items[1]["edge"]["direction"], "from");
        assert_eq!(items[1]["edge"]["resource"]["name"], "loadgen");
        assert_eq!(items[1]["resource"]["name"], "web");
    }

    #[tokio::test]
    async fn what_a_query_set_cannot_name_is_a_bad_request() {
        let prometheus = fake_prometheus(Arc::new(|_| json!([]))).await;
        let istio = Backend::new(prometheus.clone(), QuerySet::Istio);
        let err = ask(&istio, "/namespaces/shop/pods/web-0/edges").await.unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)), "{err:?}");
        assert!(err.to_string().contains("istio"), "{err}");
        let otel = Backend::new(prometheus, QuerySet::Otel);
        assert!(matches!(ask(&otel, "/namespaces/shop/edges").await, Err(ApiError::BadRequest(_))));
    }
}
