//! The command line of `kubectl serin`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Watch and steer Serin canary rollouts.";

const LONG_ABOUT: &str = "Watch and steer Serin canary rollouts.

Finds the cluster the way kubectl does: --kubeconfig, then KUBECONFIG, then ~/.kube/config, with
the current context unless --context names another, and its namespace unless -n names another.

Exit codes: 0 promoted/healthy or request accepted; 1 rolled back, failed or refused;
2 timed out; 3 paused; 4 usage, connection error or unknown rollout.";

const EXAMPLES: &str = "Examples:
  # Watch a rollout live
  kubectl serin get web -w

  # In a CI deploy job: apply, then wait for the verdict
  kubectl set image deployment/web web=registry.example/web:1.4.2
  kubectl serin status web --wait --timeout 15m

  # Steer it by hand
  kubectl serin promote web            # take the next step now
  kubectl serin promote web --full     # skip the remaining steps and promote
  kubectl serin abort web              # roll back now
  kubectl serin pause web; kubectl serin resume web
  kubectl serin retry web              # run a failed revision again

  # Shell completion
  source <(kubectl-serin completion bash)";

/// `kubectl serin`: the kubectl plugin for Serin.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-serin",
    bin_name = "kubectl serin",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the cluster is, as kubectl finds it.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a rollout (or all rollouts in the namespace): phase, step, weights, revisions,
    /// readiness, gates and the latest events.
    #[command(after_help = "Examples:
  kubectl serin get                 # every rollout in the namespace, as a table
  kubectl serin get -A              # in every namespace
  kubectl serin get web             # one rollout in detail
  kubectl serin get web -w          # live: redraws in place on a terminal, prints lines when piped
  kubectl serin get web -o json     # machine-readable (with -w: one JSON document per line)")]
    Get(GetArgs),

    /// Report whether the Deployment's current revision is promoted; with --wait, wait for the
    /// verdict. Made for CI deploy jobs.
    #[command(after_help = "Exit codes:
  0  the current revision is promoted and healthy
  1  it was rolled back or failed (the reason and failing gates are printed)
  2  timed out (without --wait: still in progress)
  3  paused (unless --keep-waiting)
  4  usage or connection error, or no such rollout
  5  frozen (onFailure: freeze): needs a human to promote or abort (unless --keep-waiting)

A rollout Waiting for an approval or a deployment window is in progress: --wait waits.

Right after `kubectl apply`, status waits for Serin to observe the new generation and the
Deployment's new revision: it never reports on the previous revision.

Examples:
  kubectl serin status web                          # one look, no waiting
  kubectl serin status web --wait --timeout 15m     # in a deploy job
  kubectl serin status web --wait --keep-waiting    # a pause is not the end: wait for a resume")]
    Status(StatusArgs),

    /// Take the next step now, without waiting for the interval or the gates; at the last step,
    /// promote. With --full, skip the remaining steps and promote now.
    #[command(
        after_help = "Accepted when the rollout is Progressing, Paused, Waiting (it overrides a deployment
window or a pending approval) or Frozen (it resolves the freeze by going on).

Examples:
  kubectl serin promote web
  kubectl serin promote web --full
  kubectl serin promote web --id deploy-4711   # re-running with the same id does nothing more"
    )]
    Promote(PromoteArgs),

    /// Roll back now: all traffic returns to the primary.
    #[command(after_help = "Accepted when the rollout is Progressing, Paused, Promoting, Waiting or Frozen.

Example:
  kubectl serin abort web")]
    Abort(RequestArgs),

    /// Run a failed revision again, from step 0.
    #[command(
        after_help = "Accepted when the rollout is Failed and the Deployment still has the failed revision.

Example:
  kubectl serin retry web"
    )]
    Retry(RequestArgs),

    /// Hold the rollout at its current step (sets spec.paused).
    #[command(
        after_help = "Traffic stays where it is, and no gate is checked. With no rollout in progress, the next
revision is held at step 0. A promotion cannot be paused; abort it instead.

Example:
  kubectl serin pause web"
    )]
    Pause(ToggleArgs),

    /// Resume a paused rollout (clears spec.paused). The current step starts over.
    #[command(after_help = "Example:
  kubectl serin resume web")]
    Resume(ToggleArgs),

    /// Print a shell completion script.
    #[command(after_help = "Examples:
  source <(kubectl-serin completion bash)
  kubectl-serin completion zsh > \"${fpath[1]}/_kubectl-serin\"
  kubectl-serin completion fish > ~/.config/fish/completions/kubectl-serin.fish

For `kubectl serin <TAB>` (kubectl 1.26+), put an executable `kubectl_complete-serin` on your
PATH that runs `kubectl-serin __complete \"$@\"`; it completes commands, flags and rollout
names from the cluster.")]
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// `get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The Rollout; every Rollout in the namespace when omitted.
    pub name: Option<String>,
    /// Keep watching: redraw on a terminal, print a line per change otherwise.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// List Rollouts in every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,
}

/// `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The Rollout.
    pub name: String,
    /// Wait until the verdict is in (or --timeout passes).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, as a Go-style duration (30s, 10m, 1h30m).
    #[arg(long, value_parser = parse_timeout, default_value = "30m", value_name = "DURATION")]
    pub timeout: Duration,
    /// When the rollout is paused or frozen, keep waiting for a human (resume, promote, abort)
    /// instead of exiting with 3 or 5.
    #[arg(long, requires = "wait")]
    pub keep_waiting: bool,
}

/// `promote`.
#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// Skip the remaining steps and analysis, and promote now.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub request: RequestArgs,
}

/// The arguments of every request (`promote`, `abort`, `retry`).
#[derive(Args, Debug)]
pub struct RequestArgs {
    /// The Rollout.
    pub name: String,
    /// The request's id: running a request again with the same id does nothing more (default:
    /// the current time in milliseconds).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// How long to wait for Serin's answer.
    #[arg(long, value_parser = parse_timeout, default_value = "30s", value_name = "DURATION")]
    pub timeout: Duration,
}

/// `pause` and `resume`.
#[derive(Args, Debug)]
pub struct ToggleArgs {
    /// The Rollout.
    pub name: String,
    /// How long to wait for Serin to confirm.
    #[arg(long, value_parser = parse_timeout, default_value = "30s", value_name = "DURATION")]
    pub timeout: Duration,
}

/// Parses a Go-style duration; `0` means no waiting.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    crate::duration::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli =
            Cli::try_parse_from(["kubectl-serin", "-n", "shop", "get", "web", "--context", "prod"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        let cli =
            Cli::try_parse_from(["kubectl-serin", "status", "web", "--wait", "--timeout", "10m", "-n", "x"])
                .unwrap();
        match cli.command {
            Command::Status(args) => {
                assert!(args.wait);
                assert_eq!(args.timeout, Duration::from_secs(600));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cli.global.namespace.as_deref(), Some("x"));
    }

    #[test]
    fn a_bad_timeout_is_a_usage_error() {
        let err = Cli::try_parse_from(["kubectl-serin", "status", "web", "--timeout", "10"]).unwrap_err();
        assert!(err.to_string().contains("\"10\" is not a duration"), "{err}");
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
    }
}
