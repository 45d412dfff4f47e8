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
    /// Example: RUST_LOG=info serin run --namespace shop,checkout
    Run {
        /// Watch only these namespaces: comma-separated, or the flag repeated (default: all
        /// namespaces).
        #[arg(long = "namespace", short = 'n', value_name = "NAMESPACE", value_delimiter = ',')]
        namespaces: Vec<String>,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Global notification receivers, for every Rollout: a YAML list of
        /// `{type: slack|teams|generic, secretRef: {namespace, name, key}, severity: info|warn|error}`.
        #[arg(long, value_name = "FILE")]
        notifications: Option<std::path::PathBuf>,
        /// Operations: metrics and health endpoint, leader election, traces.
        #[command(flatten)]
        ops: serin::runtime::OpsArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print_crd(),
        Command::Run { namespaces, log_format, notifications, ops } => {
            serin::logging::init(log_format);
            serin::ensure_crypto_provider();
            // A bad file stops the operator at start, naming the file and the item.
            let global_notifications =
                match notifications.as_deref().map(serin::notify::load_global).transpose() {
                    Ok(list) => list.unwrap_or_default(),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot load the global notification receivers");
                        return ExitCode::FAILURE;
                    }
                };
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
                let notifier = match serin::notify::Notifier::new(client.clone(), global_notifications) {
                    Ok(notifier) => notifier,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot set up notifications");
                        return ExitCode::FAILURE;
                    }
                };
                tracing::info!(global_receivers = notifier.global().len(), "notifications ready");
                let options = Options {
                    namespaces: namespace_list(namespaces),
                    instance: Some(instance),
                    telemetry: ops.telemetry(),
                    notifier: Some(notifier),
                };
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

/// The namespaces to watch: blanks dropped (`--namespace a,,b` or a trailing comma from a
/// template), each named once, in the order given.
fn namespace_list(given: Vec<String>) -> Vec<String> {
    let mut list: Vec<String> = Vec::new();
    for ns in given.into_iter().map(|ns| ns.trim().to_string()).filter(|ns| !ns.is_empty()) {
        if !list.contains(&ns) {
            list.push(ns);
        }
    }
    list
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Run { namespaces, .. }) => namespace_list(namespaces),
            Ok(Command::Crd) => panic!("parsed as crd"),
            Err(err) => panic!("{args:?}: {err}"),
        }
    }

    #[test]
    fn namespaces_are_comma_separated_or_repeated_and_default_to_all() {
        assert!(parsed(&["serin", "run"]).is_empty(), "no flag: all namespaces");
        assert_eq!(parsed(&["serin", "run", "--namespace", "a"]), ["a"]);
        assert_eq!(parsed(&["serin", "run", "--namespace", "a,b"]), ["a", "b"]);
        assert_eq!(parsed(&["serin", "run", "-n", "a", "-n", "b", "--namespace=c"]), ["a", "b", "c"]);
        assert_eq!(parsed(&["serin", "run", "--namespace", "b,a,b,", "-n", " a "]), ["b", "a"]);
        assert!(parsed(&["serin", "run", "--namespace", ""]).is_empty(), "blank: all namespaces");
    }
}
