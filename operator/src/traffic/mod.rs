//! Traffic backends: how a canary weight becomes routing in the mesh.
//!
//! A [`TrafficRouter`] renders the routing object for a weight and reads the weight back from
//! an observed object. The reconciler does the I/O the same way for every backend: it compares
//! the observed object (from a watch cache) with the rendered one and writes only when they
//! differ, so hand edits are put back and nothing is written when nothing changed. Each backend
//! lives in a file of its own: SMI TrafficSplit in [`smi`]; Gateway API HTTPRoute can follow
//! without touching the core.

pub mod smi;

use kube::api::DynamicObject;
use kube::core::ApiResource;

use crate::api::Rollout;
use crate::engine::resources::Names;

/// Why routing could not be rendered or chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrafficError {
    #[error(
        "the API server serves no split.smi-spec.io TrafficSplit version; install your mesh's SMI \
         extension (for Linkerd: linkerd-smi) or set spec.traffic"
    )]
    NoTrafficSplit,
    #[error(
        "spec.traffic.smi.version is {wanted}, but the API server serves only {served}; pick one of \
         those or `auto`"
    )]
    VersionNotServed { wanted: String, served: String },
    #[error("canary weight {0} is outside 0..=100")]
    Weight(i32),
    #[error("Rollout has no namespace")]
    NoNamespace,
}

/// Weights as the routing object states them, normalised to shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// The Service that is split.
    pub root: String,
    /// Each backend Service with its weight in thousandths of the total (rounded).
    pub backends: Vec<(String, i64)>,
}

/// A traffic backend.
pub trait TrafficRouter: Send + Sync {
    /// The resource it writes, for watches and writes.
    fn api_resource(&self) -> ApiResource;

    /// The routing object that sends `canary_weight` percent to the canary and the rest to the
    /// primary. Both weights are always written, zeroes included; they never are both zero.
    fn render(
        &self,
        rollout: &Rollout,
        names: &Names,
        canary_weight: i32,
    ) -> Result<DynamicObject, TrafficError>;

    /// Reads the routing an observed object states, or `None` when it does not parse.
    fn read(&self, object: &DynamicObject) -> Option<Routing>;

    /// Whether the observed object already routes as the rendered one does.
    fn in_sync(&self, observed: &DynamicObject, rendered: &DynamicObject) -> bool {
        match (self.read(observed), self.read(rendered)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

/// Normalises raw weights (any unit) to thousandths of their sum. `None` when they sum to zero
/// or less, which no mesh defines.
pub fn normalise(backends: Vec<(String, i64)>) -> Option<Vec<(String, i64)>> {
    let total: i64 = backends.iter().map(|(_, w)| *w).sum();
    if total <= 0 || backends.iter().any(|(_, w)| *w < 0) {
        return None;
    }
    let mut out: Vec<_> = backends.into_iter().map(|(s, w)| (s, (w * 1000 + total / 2) / total)).collect();
    out.sort();
    Some(out)
}
