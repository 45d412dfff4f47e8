//! `serin-metrics-adapter`: the SMI Traffic Metrics API (`metrics.smi-spec.io/v1alpha1`) as a
//! Kubernetes aggregated API server, backed by Prometheus.
//!
//! kube-apiserver forwards `/apis/metrics.smi-spec.io/v1alpha1/...` here (an `APIService`), over
//! TLS, as a front proxy: it presents its front-proxy client certificate and names the user in
//! `X-Remote-User`/`X-Remote-Group`. This server trusts nothing else ([`auth`]), asks
//! kube-apiserver whether that user may read ([`auth::Authorizer`]), and answers from Prometheus
//! with the operator's query sets ([`backend`]), in the shapes of the SMI SDK ([`traffic`]).
//!
//! - [`routes`]: paths, the `t` window, authorization attributes.
//! - [`status`]: errors as Kubernetes `Status` objects.
//! - [`tls`]: rustls (ring) with client certificates verified against the front-proxy CA.
//! - [`server`]: the handler, discovery, the accept loop, graceful shutdown.
//! - [`cli`]: flags, logging, start-up.

pub mod auth;
pub mod backend;
pub mod cli;
pub mod routes;
pub mod server;
pub mod status;
pub mod tls;
pub mod traffic;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    AuthConfig(#[from] auth::AuthConfigError),
    #[error("Prometheus: {0}")]
    Prometheus(#[from] serin::metrics::MetricsError),
    #[error("cannot reach the Kubernetes API, needed to {0}: configure --kubeconfig or run in a cluster")]
    NoKubeClient(&'static str),
    #[error("Kubernetes client: {0}")]
    Kube(String),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("{0}")]
    Usage(String),
}
