//! `kubectl-serin`: the kubectl plugin for Serin. kubectl runs it for `kubectl serin ...`.
//!
//! Exit codes: 0 promoted/healthy or accepted; 1 rolled back, failed or refused; 2 timed out;
//! 3 paused; 4 usage, connection error or unknown rollout. Errors are one line on stderr.
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use serin::plugin::cli::{Cli, Global};
use serin::plugin::{Exit, complete, run::run};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // `kubectl_complete-serin` runs `kubectl-serin __complete <words...>`; the words are not
    // parsed as a command line.
    let completing = args.get(1).is_some_and(|a| a == complete::COMPLETE);
    let cli = if completing {
        None
    } else {
        match Cli::try_parse_from(&args) {
            Ok(cli) => Some(cli),
            Err(err) => {
                let code = match err.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Ok,
                    _ => Exit::Error,
                };
                let _ = err.print();
                return ExitCode::from(code.code());
            }
        }
    };
    serin::ensure_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("kubectl serin: cannot start the async runtime: {err}");
            return ExitCode::from(Exit::Error.code());
        }
    };
    let result = runtime.block_on(async {
        match cli {
            Some(cli) => run(cli).await,
            None => complete::run(&Global::default(), &args[2..]).await.map(|()| Exit::Ok),
        }
    });
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            eprintln!("kubectl serin: {err}");
            ExitCode::from(Exit::Error.code())
        }
    }
}
