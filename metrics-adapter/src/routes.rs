//! What a request path asks for, and the window it asks about.
//!
//! Under `/apis/metrics.smi-spec.io/v1alpha1`:
//!
//! | path | answer |
//! |---|---|
//! | `/` | discovery (APIResourceList) |
//! | `/namespaces` | TrafficMetricsList, one item per namespace with traffic |
//! | `/namespaces/{ns}` | TrafficMetrics of the namespace |
//! | `/namespaces/{ns}/edges` | TrafficMetricsList of the namespace's edges |
//! | `/namespaces/{ns}/{deployments,pods}` | TrafficMetricsList, one item per workload with traffic |
//! | `/{deployments,pods}` | the same across every namespace |
//! | `/namespaces/{ns}/{deployments,pods}/{name}` | TrafficMetrics |
//! | `/namespaces/{ns}/{deployments,pods}/{name}/edges` | TrafficMetricsList of edges |
//!
//! The window is the query parameter `t`, a Go duration (`30s`, `1m`, `1h30m`), default 30s.

use std::time::Duration;

use serin::metrics::querysets::ResourceKind;
use serin::smi::metrics::API_VERSION;

use crate::status::ApiError;

/// The window when `t` is absent, as smi-metrics had it.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// What a path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz` (and their sub-checks): no authentication.
    Health,
    /// `/apis`: the APIGroupList.
    Apis,
    /// `/apis/metrics.smi-spec.io`: the APIGroup.
    Group,
    /// `/apis/metrics.smi-spec.io/v1alpha1`: the APIResourceList.
    Resources,
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/openapi/v3` (and anything below it).
    OpenApiV3,
    /// Traffic metrics.
    Metrics(MetricsRequest),
}

/// A request for traffic metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsRequest {
    pub kind: ResourceKind,
    /// The namespace; for a Namespace, the namespace itself. `None`: every namespace.
    pub namespace: Option<String>,
    /// One resource; `None` for a list. Unused for Namespaces (the name is `namespace`).
    pub name: Option<String>,
    /// The resource's edges rather than its own metrics.
    pub edges: bool,
}

/// What kube-apiserver's RequestInfo makes of a path, for a SubjectAccessReview: the same
/// attributes its own authorizer checked, so that one RBAC rule covers both.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub namespace: Option<String>,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub name: Option<String>,
}

impl MetricsRequest {
    /// Whether the answer is a list.
    pub fn is_list(&self) -> bool {
        self.edges
            || self.name.is_none() && !(self.kind == ResourceKind::Namespace && self.namespace.is_some())
    }

    /// The authorization attributes: `get` of one resource (`deployments/edges` for its edges),
    /// `list` of a kind. `/namespaces/{ns}/edges` reads as "list edges in {ns}", as kube-apiserver
    /// parses it.
    pub fn attributes(&self) -> Attributes {
        let resource = plural(self.kind);
        match (self.kind, &self.namespace, &self.name, self.edges) {
            (ResourceKind::Namespace, Some(ns), _, true) => Attributes {
                verb: "list",
                namespace: Some(ns.clone()),
                resource: "edges",
                subresource: None,
                name: None,
            },
            (ResourceKind::Namespace, Some(ns), _, false) => Attributes {
                verb: "get",
                namespace: Some(ns.clone()),
                resource,
                subresource: None,
                name: Some(ns.clone()),
            },
            (ResourceKind::Namespace, None, _, _) => {
                Attributes { verb: "list", namespace: None, resource, subresource: None, name: None }
            }
            (_, namespace, Some(name), edges) => Attributes {
                verb: "get",
                namespace: namespace.clone(),
                resource,
                subresource: edges.then_some("edges"),
                name: Some(name.clone()),
            },
            (_, namespace, None, _) => Attributes {
                verb: "list",
                namespace: namespace.clone(),
                resource,
                subresource: None,
                name: None,
            },
        }
    }
}

/// The resource name in paths: `deployments`, `pods`, `namespaces`.
pub fn plural(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Namespace => "namespaces",
        ResourceKind::Deployment => "deployments",
        ResourceKind::Pod => "pods",
    }
}

/// The kind as the SMI SDK spells it in `resource.kind`.
pub fn kind_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Namespace => "Namespace",
        ResourceKind::Deployment => "Deployment",
        ResourceKind::Pod => "Pod",
    }
}

fn namespaced_kind(plural: &str) -> Option<ResourceKind> {
    match plural {
        "deployments" => Some(ResourceKind::Deployment),
        "pods" => Some(ResourceKind::Pod),
        _ => None,
    }
}

/// Parses a request path (without the query).
pub fn route(path: &str) -> Result<Route, ApiError> {
    let not_found = || ApiError::NoSuchPath(path.to_string());
    let trimmed = path.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.split('/').skip(1).collect();
    match parts.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => return Ok(Route::Health),
        ["apis"] => return Ok(Route::Apis),
        ["openapi", "v2"] => return Ok(Route::OpenApiV2),
        ["openapi", "v3", ..] => return Ok(Route::OpenApiV3),
        _ => {}
    }
    let (group, version) = API_VERSION.split_once('/').ok_or_else(not_found)?;
    let rest = match parts.as_slice() {
        ["apis", g] if *g == group => return Ok(Route::Group),
        ["apis", g, v] if *g == group && *v == version => return Ok(Route::Resources),
        ["apis", g, v, rest @ ..] if *g == group && *v == version => rest,
        _ => return Err(not_found()),
    };
    if rest.iter().any(|segment| !valid_name(segment)) {
        return Err(not_found());
    }
    let owned = |s: &&str| Some(s.to_string());
    let request = match rest {
        ["namespaces"] => {
            MetricsRequest { kind: ResourceKind::Namespace, namespace: None, name: None, edges: false }
        }
        ["namespaces", ns] => {
            MetricsRequest { kind: ResourceKind::Namespace, namespace: owned(ns), name: None, edges: false }
        }
        ["namespaces", ns, "edges"] => {
            MetricsRequest { kind: ResourceKind::Namespace, namespace: owned(ns), name: None, edges: true }
        }
        [kind] => {
            let kind = namespaced_kind(kind).ok_or_else(not_found)?;
            MetricsRequest { kind, namespace: None, name: None, edges: false }
        }
        ["namespaces", ns, kind] => {
            let kind = namespaced_kind(kind).ok_or_else(not_found)?;
            MetricsRequest { kind, namespace: owned(ns), name: None, edges: false }
        }
        ["namespaces", ns, kind, name] => {
            let kind = namespaced_kind(kind).ok_or_else(not_found)?;
            MetricsRequest { kind, namespace: owned(ns), name: owned(name), edges: false }
        }
        ["namespaces", ns, kind, name, "edges"] => {
            let kind = namespaced_kind(kind).ok_or_else(not_found)?;
            MetricsRequest { kind, namespace: owned(ns), name: owned(name), edges: true }
        }
        _ => return Err(not_found()),
    };
    Ok(Route::Metrics(request))
}

/// A path segment that can name a Kubernetes object: a DNS subdomain (lower-case letters,
/// digits, `-` and `.`), at most 253 characters.
fn valid_name(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 253
        && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The window from the query string's `t`: a Go duration of at least one second, default
/// 30s. Prometheus ranges are whole seconds, so a fraction is dropped.
pub fn window(query: Option<&str>) -> Result<Duration, ApiError> {
    let params: Vec<(String, String)> = match query {
        None | Some("") => Vec::new(),
        Some(q) => {
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
                &format!("/?{q}")
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("malformed query {q:?}")))?,
            )
            .map_err(|e| ApiError::BadRequest(format!("malformed query {q:?}: {e}")))?
            .0
        }
    };
    let Some((_, t)) = params.iter().rev().find(|(k, _)| k == "t") else {
        return Ok(DEFAULT_WINDOW);
    };
    let parsed = serin::duration::parse_duration(t).map_err(|e| ApiError::BadRequest(format!("t: {e}")))?;
    if parsed < Duration::from_secs(1) {
        return Err(ApiError::BadRequest(format!("t: {t:?} is shorter than the shortest window, 1s")));
    }
    Ok(Duration::from_secs(parsed.as_secs()))
}

/// A duration as Go's `time.Duration` prints it (`30s`, `1m0s`, `1h30m0s`), as smi-metrics
/// wrote `window`. Whole seconds.
pub fn go_duration(window: Duration) -> String {
    let secs = window.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "/apis/metrics.smi-spec.io/v1alpha1";

    fn metrics(path: &str) -> MetricsRequest {
        match route(&format!("{BASE}{path}")).unwrap() {
            Route::Metrics(m) => m,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn request(
        kind: ResourceKind,
        namespace: Option<&str>,
        name: Option<&str>,
        edges: bool,
    ) -> MetricsRequest {
        MetricsRequest { kind, namespace: namespace.map(Into::into), name: name.map(Into::into), edges }
    }

    #[test]
    fn routes_every_path_shape() {
        use ResourceKind::*;
        assert_eq!(metrics("/namespaces"), request(Namespace, None, None, false));
        assert_eq!(metrics("/namespaces/shop"), request(Namespace, Some("shop"), None, false));
        assert_eq!(metrics("/namespaces/shop/edges"), request(Namespace, Some("shop"), None, true));
        assert_eq!(metrics("/namespaces/shop/deployments"), request(Deployment, Some("shop"), None, false));
        assert_eq!(metrics("/namespaces/shop/pods"), request(Pod, Some("shop"), None, false));
        assert_eq!(metrics("/deployments"), request(Deployment, None, None, false));
        assert_eq!(metrics("/pods"), request(Pod, None, None, false));
        assert_eq!(
            metrics("/namespaces/shop/deployments/web"),
            request(Deployment, Some("shop"), Some("web"), false)
        );
        assert_eq!(
            metrics("/namespaces/shop/pods/web-7d4-x2"),
            request(Pod, Some("shop"), Some("web-7d4-x2"), false)
        );
        assert_eq!(
            metrics("/namespaces/shop/deployments/web/edges"),
            request(Deployment, Some("shop"), Some("web"), true)
        );
        assert_eq!(
            metrics("/namespaces/shop/pods/web-1/edges"),
            request(Pod, Some("shop"), Some("web-1"), true)
        );
        assert_eq!(metrics("/namespaces/shop/deployments/web/"), metrics("/namespaces/shop/deployments/web"));
    }

    #[test]
    fn routes_discovery_health_and_openapi() {
        assert_eq!(route(BASE), Ok(Route::Resources));
        assert_eq!(route(&format!("{BASE}/")), Ok(Route::Resources));
        assert_eq!(route("/apis/metrics.smi-spec.io"), Ok(Route::Group));
        assert_eq!(route("/apis"), Ok(Route::Apis));
        assert_eq!(route("/healthz"), Ok(Route::Health));
        assert_eq!(route("/readyz"), Ok(Route::Health));
        assert_eq!(route("/livez/ping"), Ok(Route::Health));
        assert_eq!(route("/openapi/v2"), Ok(Route::OpenApiV2));
        assert_eq!(route("/openapi/v3"), Ok(Route::OpenApiV3));
        assert_eq!(route("/openapi/v3/apis/metrics.smi-spec.io/v1alpha1"), Ok(Route::OpenApiV3));
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "/",
            "/api/v1",
            "/apis/metrics.smi-spec.io/v1beta1",
            "/apis/split.smi-spec.io/v1alpha1/namespaces",
            &format!("{BASE}/namespaces/shop/statefulsets"),
            &format!("{BASE}/namespaces/shop/statefulsets/db"),
            &format!("{BASE}/namespaces/shop/daemonsets"),
            &format!("{BASE}/namespaces/shop/deployments/web/status"),
            &format!("{BASE}/namespaces/shop/deployments/web/edges/more"),
            &format!("{BASE}/namespaces/shop/deployments/Web"),
            &format!("{BASE}/namespaces/shop/deployments/we%22b"),
            &format!("{BASE}/namespaces//deployments"),
            &format!("{BASE}/services"),
        ] {
            assert!(matches!(route(path), Err(ApiError::NoSuchPath(_))), "{path}: {:?}", route(path));
        }
    }

    #[test]
    fn lists_and_single_objects_are_told_apart() {
        assert!(metrics("/namespaces").is_list());
        assert!(!metrics("/namespaces/shop").is_list());
        assert!(metrics("/namespaces/shop/edges").is_list());
        assert!(metrics("/namespaces/shop/deployments").is_list());
        assert!(!metrics("/namespaces/shop/deployments/web").is_list());
        assert!(metrics("/namespaces/shop/deployments/web/edges").is_list());
    }

    #[test]
    fn authorization_attributes_follow_kube_apiserver() {
        let a = metrics("/namespaces/shop/deployments/web").attributes();
        assert_eq!(
            a,
            Attributes {
                verb: "get",
                namespace: Some("shop".into()),
                resource: "deployments",
                subresource: None,
                name: Some("web".into())
            }
        );
        let a = metrics("/namespaces/shop/deployments/web/edges").attributes();
        assert_eq!((a.verb, a.subresource), ("get", Some("edges")));
        let a = metrics("/namespaces/shop/pods").attributes();
        assert_eq!((a.verb, a.resource, a.name), ("list", "pods", None));
        let a = metrics("/deployments").attributes();
        assert_eq!((a.verb, a.namespace), ("list", None));
        let a = metrics("/namespaces").attributes();
        assert_eq!((a.verb, a.resource, a.namespace), ("list", "namespaces", None));
        let a = metrics("/namespaces/shop").attributes();
        assert_eq!((a.verb, a.resource, a.name.as_deref()), ("get", "namespaces", Some("shop")));
        let a = metrics("/namespaces/shop/edges").attributes();
        assert_eq!((a.verb, a.resource, a.namespace.as_deref()), ("list", "edges", Some("shop")));
    }

    #[test]
    fn the_window_is_t_a_go_duration_defaulting_to_30s() {
        assert_eq!(window(None), Ok(Duration::from_secs(30)));
        assert_eq!(window(Some("")), Ok(Duration::from_secs(30)));
        assert_eq!(window(Some("t=1m")), Ok(Duration::from_secs(60)));
        assert_eq!(window(Some("t=1h30m")), Ok(Duration::from_secs(5400)));
        assert_eq!(window(Some("foo=bar&t=10s")), Ok(Duration::from_secs(10)));
        assert_eq!(window(Some("t=1500ms")), Ok(Duration::from_secs(1)), "whole seconds");
        assert_eq!(window(Some("t=1m0s")), Ok(Duration::from_secs(60)), "Go's own format");
        assert_eq!(window(Some("t=30%73")), Ok(Duration::from_secs(30)), "percent-decoded");
    }

    #[test]
    fn bad_windows_are_bad_requests() {
        for bad in ["t=", "t=5", "t=5x", "t=-1s", "t=500ms", "t=0s", "t=1d"] {
            let err = window(Some(bad)).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{bad}: {err:?}");
            assert!(err.to_string().starts_with("t: "), "{bad}: {err}");
        }
    }

    #[test]
    fn windows_print_as_go_durations() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(5430)), "1h30m30s");
        for secs in [1, 59, 61, 3599, 86400] {
            let d = Duration::from_secs(secs);
            assert_eq!(serin::duration::parse_duration(&go_duration(d)), Ok(d), "{secs}s round-trips");
        }
    }
}
