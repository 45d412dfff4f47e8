//! The Serin operator binary.
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serin::engine::reconcile::{self, Options};
use serin::logging::LogFormat;
use serin::metrics::Sources;
use serin::metrics::prometheus::PrometheusSource;
use serin::metrics::traffic_metrics::TrafficMetricsApi;

/// Serin: canary rollouts over the Service Mesh Interface.
#[derive(Parser)]
#[command(name = "serin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Rollout CustomResourceDefinition as YAML.
    ///
    /// Example: serin crd | kubectl apply --server-side -f -
    Crd,
    /// Run the operator against the cluster in KUBECONFIG (or in-cluster config).
    ///
    /// Example: RUST_LOG=info serin run --namespace shop
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Operations: metrics and health endpoint, leader election, traces.
        #[command(flatten)]
        ops: serin::runtime::OpsArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print_crd(),
        Command::Run { namespace, log_format, ops } => {
            serin::logging::init(log_format);
            serin::ensure_crypto_provider();
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("serin: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async move {
                let instance = std::env::var("POD_NAME")
                    .ok()
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| format!("pid-{}", std::process::id()));
                let mut ops = match serin::runtime::Runtime::start(&ops, &instance).await {
                    Ok(ops) => ops,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot start");
                        return ExitCode::FAILURE;
                    }
                };
                let client = ops.client();
                let options = Options { namespace, instance: Some(instance), telemetry: ops.telemetry() };
                let sources = Sources {
                    traffic_metrics: TrafficMetricsApi::new(client.clone()),
                    prometheus: PrometheusSource::default(),
                };
                let outcome = ops.lead(reconcile::run(client, options, Arc::new(sources))).await;
                ops.shutdown();
                match outcome {
                    Ok(Ok(())) => ExitCode::SUCCESS,
                    Ok(Err(err)) => {
                        tracing::error!(error = %err, "operator stopped");
                        ExitCode::FAILURE
                    }
                    // Lost the Lease: already logged; a restart makes this process a follower.
                    Err(_) => ExitCode::FAILURE,
                }
            })
        }
    }
}

fn print_crd() -> ExitCode {
    match serin::crdgen::rollout_crd_yaml() {
        Ok(yaml) => match std::io::stdout().write_all(yaml.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("serin crd: could not write to stdout: {err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("serin crd: {err}");
            ExitCode::FAILURE
        }
    }
}
