//! `serin-metrics-adapter`: see the crate documentation and `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = serin_metrics_adapter::cli::Args::parse();
    serin_metrics_adapter::cli::init_logging(args.log_format);
    match serin_metrics_adapter::cli::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "serin-metrics-adapter stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
