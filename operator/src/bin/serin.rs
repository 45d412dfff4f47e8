//! The Serin operator binary.
use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match serin::crdgen::rollout_crd_yaml() {
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
        },
    }
}
