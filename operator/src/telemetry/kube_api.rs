//! A tower layer on the kube client that times every Kubernetes API request into
//! `serin_kube_request_duration_seconds{verb,resource,code}`.
//!
//! Labels are bounded: `verb` is a Kubernetes verb derived from the HTTP method and path
//! (get, list, watch, create, update, patch, delete, deletecollection), `resource` is the
//! resource with its API group and subresource (`deployments.apps`, `rollouts.serin.dev/status`,
//! `services`; `discovery` for discovery paths, `other` for anything else), never a name or a
//! namespace, and `code` the HTTP status (`error` when no response came back).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response, Uri};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tower::{Layer, Service};

use super::metrics::ApiLabels;

/// The layer: give it to `kube::client::ClientBuilder::with_layer`.
#[derive(Clone)]
pub struct ApiLatencyLayer {
    histograms: Family<ApiLabels, Histogram, fn() -> Histogram>,
}

impl ApiLatencyLayer {
    pub fn new(histograms: Family<ApiLabels, Histogram, fn() -> Histogram>) -> Self {
        ApiLatencyLayer { histograms }
    }
}

impl<S> Layer<S> for ApiLatencyLayer {
    type Service = ApiLatency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiLatency { inner, histograms: self.histograms.clone() }
    }
}

/// The service the layer wraps around the client's stack.
#[derive(Clone)]
pub struct ApiLatency<S> {
    inner: S,
    histograms: Family<ApiLabels, Histogram, fn() -> Histogram>,
}

impl<S, B, R> Service<Request<B>> for ApiLatency<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri());
        let histograms = self.histograms.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            histograms
                .get_or_create(&ApiLabels { verb: verb.to_string(), resource, code })
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// The Kubernetes verb and the resource of a request, from its method and URI.
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... (core) or /apis/<group>/<version>/...
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return (verb(method, false, uri), "other".to_string()),
    };
    let (resource, name, subresource) = match rest {
        [] => return (verb(method, false, uri), "discovery".to_string()),
        ["namespaces", _ns, resource, tail @ ..] => (*resource, tail.first(), tail.get(1)),
        [resource, tail @ ..] => (*resource, tail.first(), tail.get(1)),
    };
    let mut label = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
    if let Some(sub) = subresource {
        label.push('/');
        label.push_str(sub);
    }
    (verb(method, name.is_some(), uri), label)
}

fn verb(method: &Method, named: bool, uri: &Uri) -> &'static str {
    let watch = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, uri: &str) -> (&'static str, String) {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_and_resources_are_bounded_labels() {
        assert_eq!(
            c(Method::GET, "/apis/apps/v1/namespaces/shop/deployments/web"),
            ("get", "deployments.apps".into())
        );
        assert_eq!(
            c(Method::GET, "/apis/apps/v1/namespaces/shop/deployments?labelSelector=a%3Db"),
            ("list", "deployments.apps".into())
        );
        assert_eq!(
            c(Method::GET, "/apis/apps/v1/deployments?watch=true&resourceVersion=10"),
            ("watch", "deployments.apps".into())
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/serin.dev/v1alpha1/namespaces/shop/rollouts/web/status?fieldManager=serin"
            ),
            ("patch", "rollouts.serin.dev/status".into())
        );
        assert_eq!(
            c(Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events"),
            ("create", "events.events.k8s.io".into())
        );
        assert_eq!(
            c(Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/ops/leases/serin"),
            ("update", "leases.coordination.k8s.io".into())
        );
        assert_eq!(c(Method::DELETE, "/api/v1/namespaces/shop/services/web"), ("delete", "services".into()));
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/shop/services"),
            ("deletecollection", "services".into())
        );
        assert_eq!(c(Method::GET, "/api/v1/namespaces/shop"), ("get", "namespaces".into()));
        assert_eq!(c(Method::GET, "/api/v1/namespaces"), ("list", "namespaces".into()));
        assert_eq!(c(Method::GET, "/apis/split.smi-spec.io/v1alpha4"), ("list", "discovery".into()));
        assert_eq!(c(Method::GET, "/apis"), ("list", "other".into()));
        assert_eq!(c(Method::GET, "/version"), ("list", "other".into()));
    }
}
