//! The HTTP side: one handler that authenticates, authorizes, routes and answers; the TLS
//! accept loop; graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use serin::smi::metrics::{API_VERSION, GROUP, VERSION};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::{Authorizer, Peer, RequestHeader, User};
use crate::backend::Backend;
use crate::routes::{self, Route};
use crate::status::ApiError;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a request needs.
pub struct App {
    pub backend: Backend,
    pub request_header: RequestHeader,
    /// `None`: every authenticated user may read (`--authorization-mode=always-allow`).
    pub authorizer: Option<Authorizer>,
}

/// The router: a single handler sees every request.
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = Instant::now();
    // The body is never read; the parts are Sync, so the future is Send.
    let (request, _body) = request.into_parts();
    let method = request.method.clone();
    let path = request.uri.path().to_string();
    let peer = request.extensions.get::<Peer>().cloned().unwrap_or_default();
    let outcome = serve(&app, &request, &peer).await;
    let (response, user) = match outcome {
        Ok((response, user)) => (response, user),
        Err((error, user)) => (error.into_response(), user),
    };
    let status = response.status().as_u16();
    let (user, groups) = user.map(|u| (u.name, u.groups.join(","))).unwrap_or_default();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let query = request.uri.query().unwrap_or_default();
    if path.starts_with("/healthz") || path.starts_with("/livez") || path.starts_with("/readyz") {
        tracing::debug!(%method, %path, status, elapsed_ms, "request");
    } else if status >= 500 {
        tracing::warn!(%method, %path, %query, status, %user, %groups, elapsed_ms, "request");
    } else {
        tracing::info!(%method, %path, %query, status, %user, %groups, elapsed_ms, "request");
    }
    response
}

type Outcome = Result<(Response, Option<User>), (ApiError, Option<User>)>;

async fn serve(app: &App, request: &axum::http::request::Parts, peer: &Peer) -> Outcome {
    let route = routes::route(request.uri.path());
    if let Ok(Route::Health) = route {
        return Ok(((StatusCode::OK, "ok").into_response(), None));
    }
    // Everything else only for kube-apiserver: authenticate before saying what exists.
    let user = app.request_header.authenticate(peer, &request.headers).map_err(|e| (e, None))?;
    let fail = |e: ApiError| (e, user.clone());
    let route = route.map_err(fail)?;
    if request.method != Method::GET {
        return Err(fail(ApiError::MethodNotAllowed(request.method.to_string())));
    }
    let body = match route {
        Route::Health => json!("ok"),
        Route::Apis => api_group_list(),
        Route::Group => api_group(),
        Route::Resources => api_resource_list(),
        Route::OpenApiV2 => openapi_v2(),
        Route::OpenApiV3 => {
            return Err(fail(ApiError::NoSuchPath(format!(
                "{}: this server publishes no OpenAPI v3 documents",
                request.uri.path()
            ))));
        }
        Route::Metrics(metrics) => {
            let Some(user) = &user else {
                return Err(fail(ApiError::Unauthorized(
                    "the front proxy named no user (X-Remote-User)".into(),
                )));
            };
            if let Some(authorizer) = &app.authorizer {
                authorizer.authorize(user, &metrics.attributes()).await.map_err(fail)?;
            }
            let window = routes::window(request.uri.query()).map_err(fail)?;
            app.backend.answer(&metrics, window).await.map_err(fail)?
        }
    };
    Ok((
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response(),
        user,
    ))
}

/// `/apis`: the one group this server serves.
pub fn api_group_list() -> serde_json::Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group_body()]})
}

/// `/apis/metrics.smi-spec.io`.
pub fn api_group() -> serde_json::Value {
    let mut group = api_group_body();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    group
}

fn api_group_body() -> serde_json::Value {
    let version = json!({"groupVersion": API_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [version.clone()], "preferredVersion": version})
}

/// `/apis/metrics.smi-spec.io/v1alpha1`: namespaces (cluster-scoped), deployments and pods
/// (namespaced), with their edges, all `TrafficMetrics`, read-only.
pub fn api_resource_list() -> serde_json::Value {
    let resource = |name: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": "TrafficMetrics",
               "verbs": ["get", "list"]})
    };
    let edges = |name: &str, namespaced: bool| {
        json!({"name": format!("{name}/edges"), "singularName": "", "namespaced": namespaced,
               "kind": "TrafficMetricsList", "verbs": ["get"]})
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [
            resource("namespaces", false),
            edges("namespaces", false),
            resource("deployments", true),
            edges("deployments", true),
            resource("pods", true),
            edges("pods", true),
        ]
    })
}

/// `/openapi/v2`: a valid, empty document. kube-apiserver merges it into its own; the
/// TrafficMetrics schema is not published (`kubectl explain` does not know it).
pub fn openapi_v2() -> serde_json::Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "serin-metrics-adapter", "version": VERSION},
        "paths": {},
        "definitions": {}
    })
}

/// Accepts TLS connections on `listener` until `shutdown` resolves, then waits up to `grace`
/// for open connections to finish their requests.
pub async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some((tls_stream, peer)) = handshake(&acceptor, stream, remote).await else { return };
            let service = router.map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer.clone());
                request.map(axum::body::Body::new)
            });
            let connection =
                builder.serve_connection(TokioIo::new(tls_stream), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: no new connections; waiting for open ones");
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(?grace, "connections still open after the grace period; closing them"),
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Peer)> {
    let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // A client certificate that the front-proxy CA did not sign ends here.
            tracing::info!(%remote, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            tracing::info!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let client_common_name = tls_stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| crate::tls::common_name(cert.as_ref()));
    Some((tls_stream, Peer { client_common_name }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::HeaderValue;
    use http_body_util::BodyExt;
    use serin::metrics::prometheus::Prometheus;
    use serin::metrics::querysets::QuerySet;

    use super::*;
    use crate::auth::RequestHeaderFlags;

    /// An app whose Prometheus is unreachable (port 1 on loopback refuses at once).
    fn app() -> Router {
        let backend = Backend::new(Prometheus::new("http://127.0.0.1:1").unwrap(), QuerySet::Linkerd);
        let request_header = RequestHeader::from_flags(&RequestHeaderFlags::default(), Vec::new());
        router(Arc::new(App { backend, request_header, authorizer: None }))
    }

    async fn call(path: &str, peer: Option<&str>, user: Option<&'static str>) -> (u16, serde_json::Value) {
        let mut request = Request::builder().uri(path).body(Body::empty()).unwrap();
        if let Some(cn) = peer {
            request.extensions_mut().insert(Peer { client_common_name: Some(cn.to_string()) });
        }
        if let Some(user) = user {
            request.headers_mut().insert("x-remote-user", HeaderValue::from_static(user));
        }
        let response = app().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, body)
    }

    const PROXY: Option<&str> = Some("front-proxy-client");
    const BASE: &str = "/apis/metrics.smi-spec.io/v1alpha1";

    #[tokio::test]
    async fn health_needs_no_certificate() {
        assert_eq!(call("/healthz", None, None).await, (200, json!("ok")));
        assert_eq!(call("/readyz", None, None).await.0, 200);
    }

    #[tokio::test]
    async fn everything_else_needs_the_front_proxy() {
        let (code, body) = call(BASE, None, None).await;
        assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));
        let (code, _) =
            call(&format!("{BASE}/namespaces/shop/deployments/web"), Some("someone"), Some("alice")).await;
        assert_eq!(code, 401);
        // Metrics also need a user; discovery does not (kube-apiserver's own checks name none).
        let (code, _) = call(&format!("{BASE}/namespaces/shop/deployments/web"), PROXY, None).await;
        assert_eq!(code, 401);
        assert_eq!(call(BASE, PROXY, None).await.0, 200);
    }

    #[tokio::test]
    async fn serves_discovery() {
        let (code, body) = call(BASE, PROXY, None).await;
        assert_eq!(code, 200);
        assert_eq!(body["kind"], "APIResourceList");
        assert_eq!(body["groupVersion"], "metrics.smi-spec.io/v1alpha1");
        let resources = body["resources"].as_array().unwrap();
        let find = |name: &str| resources.iter().find(|r| r["name"] == name).unwrap().clone();
        assert_eq!(find("namespaces")["namespaced"], false);
        assert_eq!(find("deployments")["namespaced"], true);
        assert_eq!(find("pods")["kind"], "TrafficMetrics");
        assert_eq!(find("pods")["verbs"], json!(["get", "list"]));
        let (_, group) = call("/apis/metrics.smi-spec.io", PROXY, None).await;
        assert_eq!(group["preferredVersion"]["groupVersion"], "metrics.smi-spec.io/v1alpha1");
        let (_, groups) = call("/apis", PROXY, None).await;
        assert_eq!(groups["groups"][0]["name"], "metrics.smi-spec.io");
        let (code, v2) = call("/openapi/v2", PROXY, None).await;
        assert_eq!((code, v2["swagger"].as_str()), (200, Some("2.0")));
        assert_eq!(call("/openapi/v3", PROXY, None).await.0, 404);
    }

    #[tokio::test]
    async fn bad_requests_are_status_objects() {
        let (code, body) =
            call(&format!("{BASE}/namespaces/shop/statefulsets/db"), PROXY, Some("alice")).await;
        assert_eq!(
            (code, body["kind"].as_str(), body["reason"].as_str()),
            (404, Some("Status"), Some("NotFound"))
        );
        let (code, body) =
            call(&format!("{BASE}/namespaces/shop/deployments/web?t=5x"), PROXY, Some("alice")).await;
        assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
        assert!(body["message"].as_str().unwrap().contains("5x"), "{body}");
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_service_unavailable() {
        for path in [
            "/namespaces/shop/deployments/web",
            "/namespaces/shop/pods",
            "/namespaces/shop/deployments/web/edges",
        ] {
            let (code, body) = call(&format!("{BASE}{path}"), PROXY, Some("alice")).await;
            assert_eq!((code, body["reason"].as_str()), (503, Some("ServiceUnavailable")), "{path}: {body}");
            assert_eq!(body["status"], "Failure");
        }
    }

    #[tokio::test]
    async fn only_get_is_allowed() {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{BASE}/namespaces/shop/deployments/web"))
            .extension(Peer { client_common_name: PROXY.map(str::to_string) })
            .header("x-remote-user", "alice")
            .body(Body::empty())
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
