//! Serin's Prometheus metrics, served as OpenMetrics text on `/metrics`.
//!
//! Every label takes values from a closed set, except `namespace`/`rollout` on
//! `serin_gate_value`, which has one series per Rollout and gate and disappears with the Rollout
//! (it is computed from the watch cache at scrape time). See `docs/src/guide/operations.md`.

use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::api::{Phase, Rollout};

/// `result` label of the duration histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Labels of `serin_gate_verdicts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateVerdictLabels {
    pub gate: String,
    pub verdict: String,
}

/// Labels of `serin_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

/// Labels of `serin_kube_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric Serin exposes, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `serin_rollout_step_duration_seconds{result}`.
    pub step_duration: Histograms<ResultLabel>,
    /// `serin_rollout_duration_seconds{result}`.
    pub rollout_duration: Histograms<ResultLabel>,
    /// `serin_gate_verdicts_total{gate,verdict}`.
    pub gate_verdicts: Family<GateVerdictLabels, Counter>,
    /// `serin_reconcile_errors_total{kind}`.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// `serin_kube_request_duration_seconds{verb,resource,code}`.
    pub api_requests: Histograms<ApiLabels>,
    /// `serin_leader`: 1 while this process may write (it holds the Lease, or runs without
    /// leader election), else 0.
    pub leader: Gauge,
    rollouts: Arc<Mutex<Vec<Store<Rollout>>>>,
}

fn step_buckets() -> Histogram {
    Histogram::new([1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0])
}

fn rollout_buckets() -> Histogram {
    Histogram::new([10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0])
}

fn api_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let step_duration: Histograms<ResultLabel> = Family::new_with_constructor(step_buckets);
        let rollout_duration: Histograms<ResultLabel> = Family::new_with_constructor(rollout_buckets);
        let api_requests: Histograms<ApiLabels> = Family::new_with_constructor(api_buckets);
        let gate_verdicts = Family::<GateVerdictLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let leader = Gauge::default();
        let rollouts = Arc::new(Mutex::new(Vec::new()));
        registry.register_with_unit(
            "serin_rollout_step_duration",
            "Time a step of a rollout took, from its start to its end, by how it ended",
            Unit::Seconds,
            step_duration.clone(),
        );
        registry.register_with_unit(
            "serin_rollout_duration",
            "Time a revision's rollout took, from the new revision to its end, by how it ended",
            Unit::Seconds,
            rollout_duration.clone(),
        );
        registry.register(
            "serin_gate_verdicts",
            "Gate evaluations at due checks, by gate and verdict",
            gate_verdicts.clone(),
        );
        registry.register(
            "serin_reconcile_errors",
            "Reconciles that failed and will be retried, by kind of error",
            reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "serin_kube_request_duration",
            "Kubernetes API requests by verb, resource and HTTP status code (watches: time to the response headers)",
            Unit::Seconds,
            api_requests.clone(),
        );
        registry.register(
            "serin_leader",
            "1 while this process is the one that writes (holds the Lease, or runs without leader election)",
            leader.clone(),
        );
        registry.register_collector(Box::new(RolloutCollector { rollouts: rollouts.clone() }));
        Metrics {
            registry,
            step_duration,
            rollout_duration,
            gate_verdicts,
            reconcile_errors,
            api_requests,
            leader,
            rollouts,
        }
    }

    /// Computes the per-Rollout metrics from this watch cache at each scrape. Only the first
    /// store given is used.
    pub fn watch_rollouts(&self, store: Store<Rollout>) {
        self.rollouts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(store);
    }

    /// The OpenMetrics text exposition, ending with `# EOF`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `serin_rollouts{phase}` and `serin_gate_value{namespace,rollout,gate}`, from the Rollout
/// watch cache at scrape time: no API calls, no state to clean up when a Rollout goes.
#[derive(Debug)]
struct RolloutCollector {
    /// One store per watch scope (namespace, or all namespaces).
    rollouts: Arc<Mutex<Vec<Store<Rollout>>>>,
}

const PHASES: [Phase; 9] = [
    Phase::Initializing,
    Phase::Idle,
    Phase::Progressing,
    Phase::Paused,
    Phase::Waiting,
    Phase::Promoting,
    Phase::Succeeded,
    Phase::Failed,
    Phase::Frozen,
];

impl Collector for RolloutCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rollouts: Vec<_> = self
            .rollouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .flat_map(Store::state)
            .collect();
        let mut counts = [0i64; PHASES.len()];
        for rollout in &rollouts {
            let phase = rollout.status.as_ref().map(|s| s.phase).unwrap_or_default();
            if let Some(i) = PHASES.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "serin_rollouts",
            "Rollouts in the watch cache by phase",
            None,
            gauge.metric_type(),
        )?;
        for (phase, count) in PHASES.iter().zip(counts) {
            let name = format!("{phase:?}");
            let labels = [("phase", name.as_str())];
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "serin_gate_value",
            "The last measured value of each gate of each Rollout (status.gates[].value)",
            None,
            gauge.metric_type(),
        )?;
        for rollout in &rollouts {
            let (Some(ns), Some(status)) = (rollout.namespace(), rollout.status.as_ref()) else { continue };
            let name = rollout.name_any();
            for gate in &status.gates {
                let Some(value) = gate.value.filter(|v| v.is_finite()) else { continue };
                let labels =
                    [("namespace", ns.as_str()), ("rollout", name.as_str()), ("gate", gate.name.as_str())];
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_encoded_and_every_phase_counted() {
        let metrics = Metrics::new();
        metrics.leader.set(1);
        metrics.rollout_duration.get_or_create(&ResultLabel { result: "succeeded".into() }).observe(100.0);
        metrics.reconcile_errors.get_or_create(&ErrorLabels { kind: "kube_conflict".into() }).inc();
        let labels = ApiLabels { verb: "patch".into(), resource: "services".into(), code: "200".into() };
        metrics.api_requests.get_or_create(&labels).observe(0.02);
        metrics.step_duration.get_or_create(&ResultLabel { result: "advanced".into() }).observe(12.0);
        metrics
            .gate_verdicts
            .get_or_create(&GateVerdictLabels { gate: "successRate".into(), verdict: "Pass".into() })
            .inc();
        let text = metrics.encode().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "# TYPE serin_rollout_step_duration_seconds histogram",
            "serin_rollout_step_duration_seconds_count{result=\"advanced\"} 1",
            "serin_rollout_step_duration_seconds_bucket{le=\"30.0\",result=\"advanced\"} 1",
            "serin_rollout_duration_seconds_count{result=\"succeeded\"} 1",
            "# TYPE serin_gate_verdicts counter",
            "serin_gate_verdicts_total{gate=\"successRate\",verdict=\"Pass\"} 1",
            "serin_reconcile_errors_total{kind=\"kube_conflict\"} 1",
            "serin_kube_request_duration_seconds_bucket{le=\"0.025\",verb=\"patch\",resource=\"services\",code=\"200\"} 1",
            "serin_leader 1",
            "serin_rollouts{phase=\"Progressing\"} 0",
            "serin_rollouts{phase=\"Failed\"} 0",
            "# TYPE serin_gate_value gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
