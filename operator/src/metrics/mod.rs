//! Metric sources: where gate values come from.
//!
//! A [`MetricSource`] fetches one window of canary and primary metrics; [`gates::evaluate`]
//! turns it into verdicts. A source that cannot answer returns an error; the reconciler then
//! hands the decision core no gates, which it treats as insufficient data, never as a pass.
//! Each source lives in a file of its own: [`traffic_metrics`] (the SMI Traffic Metrics API,
//! the default) and [`prometheus`]; [`Sources`] picks one per Rollout.

pub mod gates;
pub mod prometheus;
pub mod querysets;
pub mod traffic_metrics;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use gates::{MetricsWindow, WorkloadMetrics};

use crate::api::Rollout;

/// A boxed future, so that sources can be chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a source could not produce a window.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("no metric source is configured")]
    NotConfigured,
    #[error("metric source unavailable: {0}")]
    Unavailable(String),
    #[error("metric source answered nonsense: {0}")]
    Malformed(String),
}

/// Fetches canary and primary metrics for a Rollout.
pub trait MetricSource: Send + Sync {
    /// Metrics of the Rollout's canary (its target Deployment) and primary over the `window`
    /// that ends now.
    fn fetch<'a>(
        &'a self,
        rollout: &'a Rollout,
        window: Duration,
    ) -> BoxFuture<'a, Result<MetricsWindow, MetricsError>>;
}

/// The source used when none is configured: it can measure nothing, so a Rollout with gates
/// holds and then fails by its `onInsufficientData` policy, and a Rollout without gates
/// progresses on time alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl MetricSource for NoMetrics {
    fn fetch<'a>(
        &'a self,
        _rollout: &'a Rollout,
        _window: Duration,
    ) -> BoxFuture<'a, Result<MetricsWindow, MetricsError>> {
        Box::pin(async { Err(MetricsError::NotConfigured) })
    }
}

/// Picks each Rollout's source from `spec.analysis.source`: Prometheus when configured, the
/// SMI Traffic Metrics API otherwise.
pub struct Sources {
    pub traffic_metrics: traffic_metrics::TrafficMetricsApi,
    pub prometheus: prometheus::PrometheusSource,
}

impl MetricSource for Sources {
    fn fetch<'a>(
        &'a self,
        rollout: &'a Rollout,
        window: Duration,
    ) -> BoxFuture<'a, Result<MetricsWindow, MetricsError>> {
        let uses_prometheus = rollout.spec.analysis.as_ref().is_some_and(|a| a.source.prometheus.is_some());
        if uses_prometheus {
            self.prometheus.fetch(rollout, window)
        } else {
            self.traffic_metrics.fetch(rollout, window)
        }
    }
}
