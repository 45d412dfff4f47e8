//! Metric sources: where gate values come from.
//!
//! A [`MetricSource`] evaluates a Rollout's gates over a window, comparing canary with primary.
//! It answers `None` when it cannot measure at all; the decision core treats that, like any
//! missing, NaN or stale value, as insufficient data, never as a pass. Each source lives in a
//! file of its own (the SMI Traffic Metrics API and Prometheus are next).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::api::{GateStatus, Rollout};

/// A boxed future, so that sources can be chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Evaluates a Rollout's gates.
pub trait MetricSource: Send + Sync {
    /// The verdict of every gate in `rollout.spec.analysis.gates` over the `window` that ends
    /// now, or `None` when the source cannot answer.
    fn evaluate<'a>(
        &'a self,
        rollout: &'a Rollout,
        window: Duration,
    ) -> BoxFuture<'a, Option<Vec<GateStatus>>>;
}

/// The source used when none is configured: it can measure nothing, so a Rollout with gates
/// holds and then fails by its `onInsufficientData` policy, and a Rollout without gates
/// progresses on time alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl MetricSource for NoMetrics {
    fn evaluate<'a>(
        &'a self,
        _rollout: &'a Rollout,
        _window: Duration,
    ) -> BoxFuture<'a, Option<Vec<GateStatus>>> {
        Box::pin(async { None })
    }
}
