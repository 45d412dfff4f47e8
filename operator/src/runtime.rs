//! The operator process around the controller: its Kubernetes client (identified by instance
//! in the API server's audit log, timed into the metrics), the operations endpoint, OTLP
//! traces, and leader election. `serin run` flattens [`OpsArgs`] into its flags.

use std::future::Future;

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::leader::{Elector, LeaderError};
use crate::telemetry::Telemetry;
use crate::telemetry::traces::{Exporter, TraceError};

/// Flags of `serin run` for running in a cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct OpsArgs {
    /// Where to serve /metrics, /healthz and /readyz (host:port).
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Run only while holding a Lease, so that of several replicas one writes at a time.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the Lease (with --leader-elect).
    #[arg(long, default_value = "serin")]
    pub lease_name: String,
    /// Namespace of the Lease (with --leader-elect); default: env POD_NAMESPACE.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// OTLP/HTTP collector to send traces to, e.g. http://otel-collector:4318; no traces when
    /// absent.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Why the process cannot start, or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "--leader-elect needs the Lease's namespace: pass --lease-namespace or set POD_NAMESPACE \
         (the Helm chart sets it from the downward API)"
    )]
    NoLeaseNamespace,
    #[error("--lease-name must not be empty")]
    NoLeaseName,
    #[error(transparent)]
    Traces(#[from] TraceError),
    #[error("cannot reach the Kubernetes API (check KUBECONFIG or the in-cluster service account): {0}")]
    Kube(#[source] kube::Error),
    #[error("cannot serve on --metrics-addr {addr}: {source} (pick a free host:port)")]
    Listen { addr: String, source: std::io::Error },
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// The process's client, telemetry and (with `--leader-elect`) its part in the election.
pub struct Runtime {
    client: Client,
    telemetry: Telemetry,
    elector: Option<Elector>,
}

impl Runtime {
    /// Validates the flags, starts trace export and the operations endpoint, and builds the
    /// Kubernetes client. `instance` names this process (the pod name): in Events, in the
    /// Lease, and in its user agent `serin/<version> (<instance>)`.
    pub async fn start(args: &OpsArgs, instance: &str) -> Result<Runtime, RuntimeError> {
        let lease_namespace = args.lease_namespace.as_deref().filter(|ns| !ns.trim().is_empty());
        if args.leader_elect && lease_namespace.is_none() {
            return Err(RuntimeError::NoLeaseNamespace);
        }
        if args.leader_elect && args.lease_name.trim().is_empty() {
            return Err(RuntimeError::NoLeaseName);
        }
        let endpoint = args.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty());
        let exporter = endpoint.map(|e| Exporter::new(e, instance)).transpose()?;
        if let Some(exporter) = &exporter {
            info!(url = %exporter.url, "exporting rollout traces over OTLP/HTTP");
        }
        let telemetry = Telemetry::new(exporter);

        let listener = TcpListener::bind(&args.metrics_addr)
            .await
            .map_err(|source| RuntimeError::Listen { addr: args.metrics_addr.clone(), source })?;
        let addr = listener.local_addr().map_or_else(|_| args.metrics_addr.clone(), |a| a.to_string());
        info!(%addr, "serving /metrics, /healthz and /readyz");
        let served = telemetry.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::telemetry::server::serve(listener, served).await {
                error!(%error, "the operations endpoint stopped");
            }
        });

        let client = client(instance, &telemetry).await?;
        let elector = match (args.leader_elect, lease_namespace) {
            (true, Some(ns)) => {
                Some(Elector::new(client.clone(), ns, &args.lease_name, instance, telemetry.clone()))
            }
            _ => {
                telemetry.metrics().leader.set(1);
                None
            }
        };
        Ok(Runtime { client, telemetry, elector })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn telemetry(&self) -> Telemetry {
        self.telemetry.clone()
    }

    /// Runs `controller` as the leader: with leader election, first waits for the Lease (or a
    /// stop signal), and stops the controller at once if the Lease is lost (an error: exit
    /// non-zero, the pod restarts as a follower). On a clean stop the Lease is released.
    pub async fn lead<F, E>(&mut self, controller: F) -> Result<Result<(), E>, RuntimeError>
    where
        F: Future<Output = Result<(), E>>,
    {
        let Some(elector) = self.elector.as_mut() else { return Ok(controller.await) };
        tokio::select! {
            () = elector.acquire() => {}
            () = stop_signal() => {
                info!("stopped while following");
                return Ok(Ok(()));
            }
        }
        let outcome = tokio::select! {
            result = controller => result,
            lost = elector.hold() => {
                error!(error = %lost, "stopping");
                return Err(lost.into());
            }
        };
        elector.release().await;
        Ok(outcome)
    }

    /// Flushes queued spans. Call once, last.
    pub fn shutdown(&self) {
        self.telemetry.shutdown();
    }
}

/// A client for the cluster in KUBECONFIG (or in-cluster), with user agent
/// `serin/<version> (<instance>)` and every request timed into the metrics.
pub async fn client(instance: &str, telemetry: &Telemetry) -> Result<Client, RuntimeError> {
    let mut config = Config::infer().await.map_err(|e| RuntimeError::Kube(kube::Error::InferConfig(e)))?;
    let agent = user_agent(instance);
    if let Ok(value) = http::HeaderValue::from_str(&agent) {
        config.headers.push((http::header::USER_AGENT, value));
    }
    let builder = ClientBuilder::try_from(config).map_err(RuntimeError::Kube)?;
    Ok(builder.with_layer(&telemetry.api_layer()).build())
}

/// `serin/<version> (<instance>)`, with anything but visible ASCII in the instance replaced.
pub fn user_agent(instance: &str) -> String {
    let instance: String =
        instance.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect();
    format!("serin/{} ({instance})", env!("CARGO_PKG_VERSION"))
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ops: OpsArgs,
    }

    #[test]
    fn defaults_match_what_the_chart_expects() {
        let cli = Cli::try_parse_from(["serin"]).unwrap();
        assert_eq!(cli.ops.metrics_addr, "0.0.0.0:8080");
        assert!(!cli.ops.leader_elect);
        assert_eq!(cli.ops.lease_name, "serin");
        let cli = Cli::try_parse_from([
            "serin",
            "--leader-elect",
            "--lease-namespace",
            "serin-system",
            "--lease-name",
            "serin-leader",
            "--metrics-addr",
            "127.0.0.1:9090",
            "--otlp-endpoint",
            "http://collector:4318",
        ])
        .unwrap();
        assert!(cli.ops.leader_elect);
        assert_eq!(cli.ops.lease_namespace.as_deref(), Some("serin-system"));
        assert_eq!(cli.ops.lease_name, "serin-leader");
        assert_eq!(cli.ops.otlp_endpoint.as_deref(), Some("http://collector:4318"));
    }

    #[tokio::test]
    async fn leader_election_without_a_namespace_is_refused_naming_the_flag() {
        let args = OpsArgs {
            metrics_addr: "127.0.0.1:0".into(),
            leader_elect: true,
            lease_name: "serin".into(),
            lease_namespace: Some(" ".into()),
            otlp_endpoint: None,
        };
        let error = Runtime::start(&args, "test").await.err().unwrap().to_string();
        assert!(error.contains("--lease-namespace") && error.contains("POD_NAMESPACE"), "{error}");
        let bad = OpsArgs { leader_elect: false, otlp_endpoint: Some("collector:4318".into()), ..args };
        let error = Runtime::start(&bad, "test").await.err().unwrap().to_string();
        assert!(error.contains("--otlp-endpoint"), "{error}");
    }

    #[test]
    fn the_user_agent_names_the_instance() {
        assert_eq!(
            user_agent("serin-7d9f-abc"),
            format!("serin/{} (serin-7d9f-abc)", env!("CARGO_PKG_VERSION"))
        );
        assert!(user_agent("a\u{e9}b\n").ends_with("(a_b_)"));
    }
}
