//! Telemetry: Prometheus metrics, OpenTelemetry traces of rollouts, and the health endpoints.
//!
//! The reconciler calls [`Telemetry::decided`] once per decision, after the status is written;
//! [`progress`] turns the decision into what ended and began, and both the metrics and the
//! traces are computed from that. `decide` stays pure.
//!
//! - [`metrics`]: the registry served on `/metrics`.
//! - [`traces`]: deterministic span ids and the OTLP exporter.
//! - [`kube_api`]: the tower layer timing Kubernetes API requests.
//! - [`server`]: `/metrics`, `/healthz`, `/readyz`.

pub mod kube_api;
pub mod metrics;
pub mod progress;
pub mod server;
pub mod traces;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use self::metrics::{ErrorLabels, GateVerdictLabels, Metrics, ResultLabel};
use self::progress::{Stage, progress};
use self::server::Health;
use self::traces::{Exporter, RolloutRef};
use crate::api::{AnalysisMethod, Rollout, RolloutStatus};
use crate::engine::caches::Synced;
use crate::engine::decide::{Decision, Observations};
use crate::engine::reconcile::Error;

/// Shared handle on the process's telemetry. Cheap to clone. The default has metrics and
/// health but exports no traces.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    metrics: Metrics,
    health: Health,
    traces: Option<Exporter>,
    /// Per Rollout uid: when its current revision's rollout and stage began, as first seen by
    /// this process (a stage that repeats a check moves `stepStartedAt`; this does not).
    memory: Mutex<HashMap<String, Memory>>,
}

#[derive(Clone, Debug, Default)]
struct Memory {
    revision: String,
    rollout_started: Option<Timestamp>,
    stage: Option<Stage>,
    stage_started: Option<Timestamp>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.inner.traces.as_ref().map(|e| e.url.as_str()))
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Telemetry that exports traces through `traces`, when given.
    pub fn new(traces: Option<Exporter>) -> Telemetry {
        Telemetry { inner: Arc::new(Inner { traces, ..Default::default() }) }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// The layer that times Kubernetes API requests into this process's metrics.
    pub fn api_layer(&self) -> kube_api::ApiLatencyLayer {
        kube_api::ApiLatencyLayer::new(self.inner.metrics.api_requests.clone())
    }

    /// Hook for the controller: per-Rollout metrics come from `rollouts`, and the process is
    /// ready once the Rollout watch has listed (see [`Telemetry::on_rollouts_listed`]) and the
    /// other watch caches have synced (`caches`).
    pub fn track(&self, rollouts: Store<Rollout>, caches: Synced) {
        self.inner.metrics.watch_rollouts(rollouts);
        let telemetry = self.clone();
        tokio::spawn(async move {
            caches.wait().await;
            telemetry.health().set_caches_synced();
        });
    }

    /// Hook for the Rollout watch stream (`.inspect(...)`): marks the Rollout cache as listed
    /// at its first complete list. (Waiting on the store itself would race the controller,
    /// which waits on it too; see [`crate::engine::caches`].)
    pub fn on_rollouts_listed(&self) -> impl Fn(&Result<watcher::Event<Rollout>, watcher::Error>) + use<> {
        let telemetry = self.clone();
        // InitDone comes again after every re-list; this scope counts once.
        let listed = std::sync::atomic::AtomicBool::new(false);
        move |event| {
            if matches!(event, Ok(watcher::Event::InitDone))
                && !listed.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                telemetry.health().set_rollouts_listed();
            }
        }
    }

    /// Hook for the reconciler, after the status of `decision` is written: records the steps
    /// and rollouts that ended and the gates evaluated, as metrics and as spans. `checked_at` is
    /// when the reconcile began observing (a check's spans run from then to now).
    pub fn decided(
        &self,
        rollout: &Rollout,
        old: &RolloutStatus,
        observations: &Observations,
        decision: &Decision,
        checked_at: Timestamp,
    ) {
        let (Some(uid), Some(namespace)) = (rollout.uid(), rollout.namespace()) else { return };
        let name = rollout.name_any();
        let sequential =
            rollout.spec.analysis.as_ref().is_some_and(|a| a.method == AnalysisMethod::Sequential);
        let gates = observations.gates.as_deref().filter(|_| !sequential);
        let progress = progress(old, &decision.status, &decision.events, gates);
        let now = Timestamp::now();
        let r = RolloutRef { uid: &uid, namespace: &namespace, name: &name };
        let metrics = &self.inner.metrics;
        let traces = self.inner.traces.as_ref();
        let Ok(mut memory) = self.inner.memory.lock() else { return };
        let remembered = memory.get(&uid).cloned().unwrap_or_default();

        if let Some(check) = &progress.check {
            for gate in &check.gates {
                let labels = GateVerdictLabels {
                    gate: gate.name.clone(),
                    verdict: traces::verdict(gate.verdict).into(),
                };
                metrics.gate_verdicts.get_or_create(&labels).inc();
            }
            if let Some(exporter) = traces {
                traces::gate_spans(r, check, checked_at.min(now), now)
                    .into_iter()
                    .for_each(|s| exporter.export(s));
            }
        }
        if let Some(ended) = &progress.ended {
            let start = (remembered.stage.as_ref() == Some(&ended.stage))
                .then_some(remembered.stage_started)
                .flatten()
                .or(ended.started)
                .unwrap_or(now);
            let label = ResultLabel { result: ended.outcome.as_str().into() };
            metrics.step_duration.get_or_create(&label).observe(seconds(start, now));
            if let Some(exporter) = traces {
                exporter.export(traces::stage_span(r, ended, old.steps, start, now));
            }
        }
        if let Some(finished) = &progress.finished {
            let start = (remembered.revision == finished.revision)
                .then_some(remembered.rollout_started)
                .flatten()
                .or(finished.started)
                .unwrap_or(now);
            let label = ResultLabel { result: finished.outcome.as_str().into() };
            metrics.rollout_duration.get_or_create(&label).observe(seconds(start, now));
            if let Some(exporter) = traces {
                exporter.export(traces::rollout_span(r, finished, start, now));
            }
        }

        match (&progress.began, progress::stage(&decision.status)) {
            (Some((stage, started)), _) => {
                let entry = memory.entry(uid.clone()).or_default();
                if progress.new_rollout || entry.revision != stage.revision {
                    *entry = Memory {
                        revision: stage.revision.clone(),
                        rollout_started: started.filter(|_| progress.new_rollout),
                        ..Memory::default()
                    };
                }
                entry.stage = Some(stage.clone());
                entry.stage_started = *started;
            }
            (None, Some(current)) if remembered.stage.as_ref() != Some(&current) => {
                // First sight of a running stage (e.g. after a restart): its start so far.
                memory.insert(
                    uid.clone(),
                    Memory {
                        revision: current.revision.clone(),
                        rollout_started: None,
                        stage_started: decision.status.step_started_at.as_ref().map(|t| t.0),
                        stage: Some(current),
                    },
                );
            }
            (None, Some(_)) => {}
            (None, None) => {
                memory.remove(&uid);
            }
        }
    }

    /// Hook for the controller's error policy: counts a failed reconcile by kind.
    pub fn reconcile_failed(&self, error: &Error) {
        let labels = ErrorLabels { kind: error_kind(error).to_string() };
        self.inner.metrics.reconcile_errors.get_or_create(&labels).inc();
    }

    /// Flushes the spans still queued. Call once, before the process exits.
    pub fn shutdown(&self) {
        if let Some(exporter) = &self.inner.traces {
            exporter.shutdown();
        }
    }
}

fn seconds(start: Timestamp, end: Timestamp) -> f64 {
    end.duration_since(start).as_secs_f64().max(0.0)
}

/// The `kind` label of `serin_reconcile_errors_total`: a closed set.
pub fn error_kind(error: &Error) -> &'static str {
    use kube::runtime::finalizer::Error as Finalizer;
    match error {
        Error::Kube(kube::Error::Api(status)) => match status.code {
            404 => "kube_not_found",
            409 => "kube_conflict",
            403 => "kube_forbidden",
            422 => "kube_invalid",
            _ => "kube_api",
        },
        Error::Kube(_) => "kube_transport",
        Error::Resource(_) => "resource",
        Error::Traffic(_) => "traffic",
        Error::NoNamespace => "no_namespace",
        Error::Finalizer(inner) => match inner.as_ref() {
            Finalizer::ApplyFailed(e) | Finalizer::CleanupFailed(e) => error_kind(e),
            _ => "finalizer",
        },
        Error::HandingBack(_) => "handing_back",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{GateStatus, Phase, Verdict};
    use crate::engine::decide::{Desired, Transition};

    fn rollout() -> Rollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "uid": "uid-1"},
            "spec": {"targetRef": {"name": "web"}, "service": {"port": 80},
                     "strategy": {"weights": [20, 50], "interval": "30s"}}
        }))
        .unwrap()
    }

    /// `s` seconds after a moment 1000 s ago.
    fn at(s: i64) -> Time {
        Time(Timestamp::now().checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(1000 - s)).unwrap())
    }

    fn status(phase: Phase, step: i32, started: i64) -> RolloutStatus {
        RolloutStatus {
            phase,
            canary_revision: Some("abc".into()),
            step,
            steps: 2,
            step_started_at: Some(at(started)),
            ..Default::default()
        }
    }

    fn decision(status: RolloutStatus, reason: &'static str) -> Decision {
        Decision {
            status,
            desired: Desired {
                canary_weight: 0,
                canary_replicas: 0,
                primary_revision: None,
                primary_replicas: 1,
            },
            events: vec![Transition { reason: reason.into(), message: String::new(), warning: false }],
            requeue_after: None,
        }
    }

    fn count(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn a_repeated_check_does_not_move_the_remembered_start_of_its_step() {
        let telemetry = Telemetry::default();
        let r = rollout();
        let none = Observations::default();
        let gate = GateStatus {
            name: "successRate".into(),
            value: Some(90.0),
            primary_value: None,
            threshold: ">= 99".into(),
            verdict: Verdict::Fail,
            requests: Some(100.0),
            at: None,
        };
        let failing = Observations { gates: Some(vec![gate.clone()]), ..Default::default() };
        let passing = Observations {
            gates: Some(vec![GateStatus { verdict: Verdict::Pass, ..gate }]),
            ..Default::default()
        };
        let now = Timestamp::now();
        // Step 1 begins; a check fails within tolerance and restarts the step's clock; the next
        // passes and the rollout advances.
        telemetry.decided(
            &r,
            &status(Phase::Progressing, 0, 0),
            &none,
            &decision(status(Phase::Progressing, 1, 10), "StepAdvanced"),
            now,
        );
        telemetry.decided(
            &r,
            &status(Phase::Progressing, 1, 10),
            &failing,
            &decision(status(Phase::Progressing, 1, 40), "CheckFailed"),
            now,
        );
        telemetry.decided(
            &r,
            &status(Phase::Progressing, 1, 40),
            &passing,
            &decision(status(Phase::Progressing, 2, 70), "StepAdvanced"),
            now,
        );
        let text = telemetry.metrics().encode().unwrap();
        assert_eq!(count(&text, "serin_rollout_step_duration_seconds_count{result=\"advanced\"}"), 2.0);
        // Step 0 from 0s, step 1 from 10s (remembered, not 40s): both end now.
        let expected = seconds(at(0).0, Timestamp::now()) + seconds(at(10).0, Timestamp::now());
        let sum = count(&text, "serin_rollout_step_duration_seconds_sum{result=\"advanced\"}");
        assert!((sum - expected).abs() < 5.0, "sum {sum}, expected about {expected}");
        assert_eq!(count(&text, "serin_gate_verdicts_total{gate=\"successRate\",verdict=\"Fail\"}"), 1.0);
        assert_eq!(count(&text, "serin_gate_verdicts_total{gate=\"successRate\",verdict=\"Pass\"}"), 1.0);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let telemetry = Telemetry::default();
        let conflict = kube::Error::Api(Box::new(kube::core::Status {
            code: 409,
            ..kube::core::Status::failure("conflict", "Conflict")
        }));
        telemetry.reconcile_failed(&Error::Kube(conflict));
        telemetry.reconcile_failed(&Error::NoNamespace);
        let text = telemetry.metrics().encode().unwrap();
        assert_eq!(count(&text, "serin_reconcile_errors_total{kind=\"kube_conflict\"}"), 1.0);
        assert_eq!(count(&text, "serin_reconcile_errors_total{kind=\"no_namespace\"}"), 1.0);
    }
}
