//! Flags, logging and start-up.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serin::metrics::prometheus::Prometheus;
use serin::metrics::querysets::QuerySet;

use crate::Error;
use crate::auth::{Authorizer, RequestHeader, RequestHeaderFlags};
use crate::backend::{Backend, set_name};
use crate::server::{App, router, run as serve};

const EXAMPLE: &str = "Example:
  serin-metrics-adapter --prometheus-url http://prometheus.linkerd-viz:9090 --query-set linkerd \\
    --tls-cert-file /tls/tls.crt --tls-private-key-file /tls/tls.key";

/// Serves the SMI Traffic Metrics API (metrics.smi-spec.io/v1alpha1) from Prometheus, as an
/// aggregated API server behind kube-apiserver. Only kube-apiserver, as a front proxy, may call
/// it. See docs/src/guide/metrics-adapter.md.
#[derive(Parser, Debug, Clone)]
#[command(name = "serin-metrics-adapter", version, verbatim_doc_comment, after_help = EXAMPLE)]
pub struct Args {
    /// The Prometheus HTTP API.
    #[arg(long)]
    pub prometheus_url: String,
    /// Which mesh's metrics to read.
    #[arg(long, value_enum, default_value = "linkerd")]
    pub query_set: QuerySetArg,
    /// The port to serve HTTPS on.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The serving certificate (PEM, with its chain). kube-apiserver verifies it for the name
    /// SERVICE.NAMESPACE.svc against the APIService's caBundle.
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    /// The serving certificate's private key (PEM).
    #[arg(long)]
    pub tls_private_key_file: PathBuf,
    /// The CA bundle that signs kube-apiserver's front-proxy client certificate. Without it, it
    /// and the other --requestheader settings are read from the ConfigMap
    /// kube-system/extension-apiserver-authentication.
    #[arg(long)]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names allowed on the front-proxy client certificate, comma-separated; an empty
    /// value allows any certificate the CA signed. Default: front-proxy-client (or the
    /// ConfigMap's).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Option<Vec<String>>,
    /// Headers naming the user. Default: X-Remote-User (or the ConfigMap's).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_username_headers: Option<Vec<String>>,
    /// Headers naming the user's groups. Default: X-Remote-Group (or the ConfigMap's).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_group_headers: Option<Vec<String>>,
    /// Prefixes of headers carrying the user's extra attributes. Default: X-Remote-Extra-.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_extra_headers_prefix: Option<Vec<String>>,
    /// `delegated`: each request's user must pass a SubjectAccessReview (get/list on the
    /// resource in metrics.smi-spec.io); `always-allow`: any user kube-apiserver forwards.
    #[arg(long, value_enum, default_value = "delegated")]
    pub authorization_mode: AuthorizationMode,
    /// A kubeconfig for the Kubernetes API (SubjectAccessReviews, the authentication
    /// ConfigMap). Default: in-cluster configuration, or KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// How long to let open requests finish after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace_period: Duration,
    /// Log format (to stderr; RUST_LOG filters, default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `--query-set`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QuerySetArg {
    Linkerd,
    Istio,
    Otel,
}

impl From<QuerySetArg> for QuerySet {
    fn from(arg: QuerySetArg) -> Self {
        match arg {
            QuerySetArg::Linkerd => QuerySet::Linkerd,
            QuerySetArg::Istio => QuerySet::Istio,
            QuerySetArg::Otel => QuerySet::Otel,
        }
    }
}

/// `--authorization-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthorizationMode {
    Delegated,
    AlwaysAllow,
}

pub use serin::logging::LogFormat;

fn parse_duration(text: &str) -> Result<Duration, String> {
    serin::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// Logs to stderr, filtered by RUST_LOG (default info).
pub fn init_logging(format: LogFormat) {
    serin::logging::init(format);
}

impl Args {
    fn request_header_flags(&self) -> RequestHeaderFlags {
        RequestHeaderFlags {
            client_ca_file: self.requestheader_client_ca_file.clone(),
            allowed_names: self.requestheader_allowed_names.clone(),
            username_headers: self.requestheader_username_headers.clone(),
            group_headers: self.requestheader_group_headers.clone(),
            extra_headers_prefixes: self.requestheader_extra_headers_prefix.clone(),
        }
    }

    /// Whether the Kubernetes API is needed: for SubjectAccessReviews, or to read the CA.
    fn needs_kube(&self) -> bool {
        self.authorization_mode == AuthorizationMode::Delegated || self.requestheader_client_ca_file.is_none()
    }
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, Error> {
    serin::ensure_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Kube(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kube(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Kube(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
}

/// Starts the server and runs it until SIGTERM or SIGINT.
pub async fn run(args: Args) -> Result<(), Error> {
    serin::ensure_crypto_provider();
    let query_set = QuerySet::from(args.query_set);
    let prometheus = Prometheus::new(&args.prometheus_url)?;
    let client = if args.needs_kube() { Some(kube_client(args.kubeconfig.as_ref()).await?) } else { None };
    let request_header = RequestHeader::load(&args.request_header_flags(), client.as_ref()).await?;
    let tls = crate::tls::server_config(
        &args.tls_cert_file,
        &args.tls_private_key_file,
        &request_header.client_ca_pem,
    )?;
    let authorizer = match args.authorization_mode {
        AuthorizationMode::Delegated => {
            Some(Authorizer::new(client.ok_or(Error::NoKubeClient("create SubjectAccessReviews"))?))
        }
        AuthorizationMode::AlwaysAllow => None,
    };
    let address = SocketAddr::new(args.bind_address, args.secure_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen { address: address.to_string(), source })?;
    let bound =
        listener.local_addr().map_err(|source| Error::Listen { address: address.to_string(), source })?;
    tracing::info!(
        address = %bound,
        prometheus = %args.prometheus_url,
        query_set = set_name(query_set),
        authorization = ?args.authorization_mode,
        requestheader_ca = if args.requestheader_client_ca_file.is_some() { "flag" } else { "configmap" },
        allowed_names = ?request_header.allowed_names,
        "serving metrics.smi-spec.io/v1alpha1"
    );
    let app = Arc::new(App { backend: Backend::new(prometheus, query_set), request_header, authorizer });
    let shutdown = shutdown_signal()?;
    serve(listener, Arc::new(tls), router(app), shutdown, args.shutdown_grace_period).await;
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "received");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Args {
        let mut argv = vec![
            "serin-metrics-adapter",
            "--prometheus-url",
            "http://prometheus:9090",
            "--tls-cert-file",
            "/tls/tls.crt",
            "--tls-private-key-file",
            "/tls/tls.key",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults() {
        let args = parse(&[]);
        assert_eq!(args.query_set, QuerySetArg::Linkerd);
        assert_eq!(args.secure_port, 6443);
        assert_eq!(args.authorization_mode, AuthorizationMode::Delegated);
        assert_eq!(args.shutdown_grace_period, Duration::from_secs(10));
        assert!(args.needs_kube(), "the CA comes from the ConfigMap and SARs need the API");
        assert_eq!(args.request_header_flags().allowed_names, None);
    }

    #[test]
    fn flags() {
        let args = parse(&[
            "--query-set",
            "istio",
            "--requestheader-client-ca-file",
            "/ca.crt",
            "--requestheader-allowed-names",
            "front-proxy-client,aggregator",
            "--authorization-mode",
            "always-allow",
            "--shutdown-grace-period",
            "30s",
        ]);
        assert_eq!(QuerySet::from(args.query_set), QuerySet::Istio);
        assert!(!args.needs_kube());
        assert_eq!(
            args.request_header_flags().allowed_names,
            Some(vec!["front-proxy-client".to_string(), "aggregator".to_string()])
        );
        assert_eq!(args.shutdown_grace_period, Duration::from_secs(30));
    }

    #[test]
    fn refuses_unknown_query_sets() {
        let argv =
            ["x", "--prometheus-url", "http://p", "--tls-cert-file", "a", "--tls-private-key-file", "b"];
        let mut argv = argv.to_vec();
        argv.extend(["--query-set", "consul"]);
        assert!(Args::try_parse_from(argv).is_err());
    }
}
