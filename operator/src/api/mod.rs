//! Serin's own API: the `Rollout` custom resource.
pub mod rollout;

pub use rollout::*;
