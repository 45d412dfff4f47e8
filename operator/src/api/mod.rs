//! Serin's own API: the `Rollout` custom resource.
pub mod hooks;
pub mod rollout;

pub use hooks::*;
pub use rollout::*;
