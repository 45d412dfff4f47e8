//! `kubectl serin`: the kubectl plugin that watches rollouts, reports verdicts to CI jobs, and
//! sends manual requests.
//!
//! - [`cli`]: the command line.
//! - [`cluster`]: finding the cluster the way kubectl does, and reading what the views show.
//! - [`render`]: the views, pure functions of a [`render::Snapshot`] and the time.
//! - [`verdict`]: what `status` concludes, and the exit codes.
//! - [`control`]: when a manual request makes no sense, decided before writing it.
//! - [`run`]: the commands.
pub mod cli;
pub mod cluster;
pub mod complete;
pub mod control;
pub mod render;
pub mod run;
pub mod verdict;

pub use verdict::Exit;

/// Everything that stops `kubectl serin` with exit code 4. Each is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig cannot be read, or has no such context.
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// No such Rollout.
    #[error("rollout {name:?} not found in namespace {namespace:?}")]
    RolloutNotFound { name: String, namespace: String },
    /// The cluster does not serve `rollouts.serin.dev`.
    #[error("the cluster at {server} does not serve rollouts.serin.dev: is Serin's CRD installed?")]
    NoRolloutApi { server: String },
    /// The API server refused a request (forbidden, invalid, conflict...).
    #[error("{what}: {message}")]
    Api { what: String, message: String },
    /// Writing to stdout failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// A view could not be encoded.
    #[error("cannot encode the output: {0}")]
    Encode(String),
}
