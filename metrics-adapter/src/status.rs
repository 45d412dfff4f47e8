//! Errors as Kubernetes answers them: a `Status` object (`kind: Status`, `apiVersion: v1`,
//! `status: Failure`) with a reason and an HTTP code. kube-apiserver passes an aggregated
//! server's Status through unchanged, so `kubectl` prints it and kube's client returns it as
//! `kube::Error::Api`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use serin::metrics::MetricsError;
use serin::smi::metrics::GROUP;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A path this server does not serve (an unknown resource, a malformed path).
    #[error("the server could not find the requested resource {0}")]
    NoSuchPath(String),
    /// The resource is known, but Prometheus has no traffic for it in the window.
    #[error("{kind} {name:?} has no traffic metrics in the last {window}")]
    NoMetrics { kind: &'static str, name: String, window: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("method {0} is not allowed: this API is read-only")]
    MethodNotAllowed(String),
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Prometheus (or the API server, for authorization) did not answer.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP code and the Kubernetes `reason`.
    pub fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NoSuchPath(_) | ApiError::NoMetrics { .. } => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> serde_json::Value {
        let (code, reason) = self.code_and_reason();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        if let ApiError::NoMetrics { kind, name, .. } = self {
            status["details"] = json!({"name": name, "group": GROUP, "kind": kind});
        }
        status
    }
}

impl From<MetricsError> for ApiError {
    fn from(e: MetricsError) -> Self {
        match e {
            MetricsError::Unavailable(m) => ApiError::Unavailable(m),
            MetricsError::Malformed(m) => ApiError::Internal(m),
            MetricsError::NotConfigured => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_and_reason();
        (code, axum::Json(self.status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_kubernetes_status_objects() {
        let status = ApiError::BadRequest("t: \"5x\" is not a duration".into()).status();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(status["code"], 400);
        assert_eq!(status["message"], "t: \"5x\" is not a duration");
        // kube's client must be able to read it.
        let parsed: kube::core::Status = serde_json::from_value(status).unwrap();
        assert_eq!(parsed.code, 400);
    }

    #[test]
    fn every_error_has_its_code_and_reason() {
        let cases = [
            (ApiError::NoSuchPath("/x".into()), 404, "NotFound"),
            (
                ApiError::NoMetrics { kind: "deployments", name: "web".into(), window: "30s".into() },
                404,
                "NotFound",
            ),
            (ApiError::MethodNotAllowed("POST".into()), 405, "MethodNotAllowed"),
            (ApiError::Unauthorized("no client certificate".into()), 401, "Unauthorized"),
            (ApiError::Forbidden("no".into()), 403, "Forbidden"),
            (ApiError::Unavailable("Prometheus down".into()), 503, "ServiceUnavailable"),
            (ApiError::Internal("bad".into()), 500, "InternalError"),
        ];
        for (error, code, reason) in cases {
            let status = error.status();
            assert_eq!(
                (status["code"].as_u64(), status["reason"].as_str()),
                (Some(code), Some(reason)),
                "{error}"
            );
        }
    }

    #[test]
    fn no_metrics_names_the_resource() {
        let status =
            ApiError::NoMetrics { kind: "deployments", name: "web".into(), window: "30s".into() }.status();
        assert_eq!(
            status["details"],
            json!({"name": "web", "group": "metrics.smi-spec.io", "kind": "deployments"})
        );
        assert_eq!(status["message"], "deployments \"web\" has no traffic metrics in the last 30s");
    }

    #[test]
    fn prometheus_errors_map_to_unavailable_and_internal() {
        assert!(matches!(ApiError::from(MetricsError::Unavailable("x".into())), ApiError::Unavailable(_)));
        assert!(matches!(ApiError::from(MetricsError::Malformed("x".into())), ApiError::Internal(_)));
    }
}
