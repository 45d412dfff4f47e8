//! Threshold gates: turning one window of canary and primary metrics into verdicts. Pure.
//!
//! The rules that keep a bad canary from being promoted on bad data:
//! - fewer canary requests than `analysis.minRequests`: every gate is `InsufficientData`;
//! - a missing, NaN, infinite or negative value: that gate is `InsufficientData`;
//! - a window that ended too long ago (stale): every gate is `InsufficientData`;
//! - a comparison with the primary when the primary has too little data: `InsufficientData`.
//!
//! `InsufficientData` is never a pass.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{Analysis, GateStatus, LatencyQuantile, Verdict};

/// Metrics of one workload (canary or primary) over one window.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WorkloadMetrics {
    /// Successful responses in the window (may be fractional: `increase()`).
    pub success_count: f64,
    /// Failed responses in the window.
    pub failure_count: f64,
    /// Latency quantiles in milliseconds, where known.
    pub latency_ms: BTreeMap<LatencyQuantile, f64>,
    /// The latency histogram over the window, cumulative with `le` in milliseconds and
    /// ascending, when the source has one (Prometheus); empty otherwise.
    pub latency_buckets: Vec<crate::analysis::sequential::Bucket>,
}

impl WorkloadMetrics {
    /// All responses in the window.
    pub fn requests(&self) -> f64 {
        self.success_count + self.failure_count
    }

    /// Success rate in percent, when the counts are usable.
    pub fn success_rate(&self) -> Option<f64> {
        let (s, f) = (self.success_count, self.failure_count);
        let usable = s.is_finite() && f.is_finite() && s >= 0.0 && f >= 0.0 && s + f > 0.0;
        usable.then(|| 100.0 * s / (s + f))
    }

    fn latency(&self, q: LatencyQuantile) -> Option<f64> {
        self.latency_ms.get(&q).copied().filter(|v| v.is_finite() && *v >= 0.0)
    }
}

/// One window of metrics for a rollout: canary and primary, each `None` when the source had
/// nothing for it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsWindow {
    /// When the window ended.
    pub end: Timestamp,
    /// Its length.
    pub length: std::time::Duration,
    pub canary: Option<WorkloadMetrics>,
    pub primary: Option<WorkloadMetrics>,
}

/// Evaluates every gate of `analysis` on `window` at `now`. Returns one status per gate, in a
/// fixed order: successRate, then latency by quantile.
pub fn evaluate(analysis: &Analysis, window: &MetricsWindow, now: Timestamp) -> Vec<GateStatus> {
    let min_requests = analysis.min_requests as f64;
    let stale = is_stale(window, now);
    let canary =
        window.canary.as_ref().filter(|c| !stale && c.requests().is_finite() && c.requests() >= min_requests);
    let primary = window
        .primary
        .as_ref()
        .filter(|p| !stale && p.requests().is_finite() && p.requests() >= min_requests);
    let requests = window.canary.as_ref().map(WorkloadMetrics::requests).filter(|r| r.is_finite());
    let at = Some(Time(window.end));
    let mut out = Vec::new();

    if let Some(gate) = &analysis.gates.success_rate {
        let value = canary.and_then(WorkloadMetrics::success_rate);
        let primary_value = primary.and_then(WorkloadMetrics::success_rate);
        let mut checks = Vec::new();
        let mut thresholds = Vec::new();
        if let Some(min) = gate.min {
            thresholds.push(format!(">= {}", trim(min)));
            checks.push(value.map(|v| v >= min));
        }
        if let Some(drop) = gate.max_drop_vs_primary {
            thresholds.push(format!(">= primary - {}", trim(drop)));
            checks.push(value.zip(primary_value).map(|(v, p)| v >= p - drop));
        }
        out.push(GateStatus {
            name: "successRate".to_string(),
            value,
            primary_value,
            threshold: thresholds.join(", "),
            verdict: combine(&checks),
            requests,
            at: at.clone(),
        });
    }

    let mut latency = analysis.gates.latency.clone();
    latency.sort_by_key(|g| g.quantile);
    for gate in latency {
        let q = gate.quantile;
        let value = canary.and_then(|c| c.latency(q));
        let primary_value = primary.and_then(|p| p.latency(q));
        let mut checks = Vec::new();
        let mut thresholds = Vec::new();
        if let Some(max) = gate.max_ms {
            thresholds.push(format!("<= {}ms", trim(max)));
            checks.push(value.map(|v| v <= max));
        }
        if let Some(increase) = gate.max_increase_vs_primary {
            thresholds.push(format!("<= primary + {}%", trim(increase)));
            checks.push(value.zip(primary_value).map(|(v, p)| v <= p * (1.0 + increase / 100.0)));
        }
        out.push(GateStatus {
            name: format!("latency.{}", quantile_name(q)),
            value,
            primary_value,
            threshold: thresholds.join(", "),
            verdict: combine(&checks),
            requests,
            at: at.clone(),
        });
    }
    out
}

/// A window is stale when it ended more than its own length (and at least a minute) ago, or
/// claims to end in the future by more than a minute (clock skew beyond reason).
fn is_stale(window: &MetricsWindow, now: Timestamp) -> bool {
    let age = window.end.duration_until(now);
    let allowed = SignedDuration::try_from(window.length)
        .unwrap_or(SignedDuration::ZERO)
        .max(SignedDuration::from_secs(60));
    age > allowed || age < -SignedDuration::from_secs(60)
}

/// Any failing check fails the gate; any unknown check (missing data) makes it insufficient;
/// only all checks known and passing pass it.
fn combine(checks: &[Option<bool>]) -> Verdict {
    if checks.contains(&Some(false)) {
        Verdict::Fail
    } else if checks.is_empty() || checks.iter().any(Option::is_none) {
        Verdict::InsufficientData
    } else {
        Verdict::Pass
    }
}

/// `p50`, `p90` or `p99`.
pub fn quantile_name(q: LatencyQuantile) -> &'static str {
    match q {
        LatencyQuantile::P50 => "p50",
        LatencyQuantile::P90 => "p90",
        LatencyQuantile::P99 => "p99",
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn analysis(gates: serde_json::Value) -> Analysis {
        serde_json::from_value(json!({"minRequests": 100, "gates": gates})).unwrap()
    }

    fn workload(success: f64, failure: f64, p99: f64) -> WorkloadMetrics {
        WorkloadMetrics {
            success_count: success,
            failure_count: failure,
            latency_ms: BTreeMap::from([(LatencyQuantile::P99, p99), (LatencyQuantile::P50, p99 / 4.0)]),
            latency_buckets: Vec::new(),
        }
    }

    fn window(canary: Option<WorkloadMetrics>, primary: Option<WorkloadMetrics>) -> MetricsWindow {
        MetricsWindow {
            end: Timestamp::from_second(NOW).unwrap(),
            length: std::time::Duration::from_secs(60),
            canary,
            primary,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW + 5).unwrap()
    }

    #[test]
    fn a_healthy_canary_passes_every_gate() {
        let a = analysis(json!({"successRate": {"min": 99, "maxDropVsPrimary": 0.5},
            "latency": [{"quantile": "p99", "maxMs": 500, "maxIncreaseVsPrimary": 20}]}));
        let w = window(Some(workload(995.0, 5.0, 300.0)), Some(workload(998.0, 2.0, 290.0)));
        let gates = evaluate(&a, &w, now());
        assert_eq!(gates.len(), 2);
        assert!(gates.iter().all(|g| g.verdict == Verdict::Pass), "{gates:?}");
        assert_eq!(gates[0].value, Some(99.5));
        assert_eq!(gates[0].primary_value, Some(99.8));
        assert_eq!(gates[0].threshold, ">= 99, >= primary - 0.5");
        assert_eq!(gates[0].requests, Some(1000.0));
        assert_eq!(gates[1].name, "latency.p99");
        assert_eq!(gates[1].threshold, "<= 500ms, <= primary + 20%");
    }

    #[test]
    fn errors_below_the_minimum_fail() {
        let a = analysis(json!({"successRate": {"min": 99}}));
        let gates = evaluate(&a, &window(Some(workload(950.0, 50.0, 1.0)), None), now());
        assert_eq!(gates[0].verdict, Verdict::Fail);
        assert_eq!(gates[0].value, Some(95.0));
    }

    #[test]
    fn a_canary_worse_than_the_primary_by_more_than_allowed_fails() {
        let a = analysis(json!({"successRate": {"maxDropVsPrimary": 0.5}}));
        let gates =
            evaluate(&a, &window(Some(workload(990.0, 10.0, 1.0)), Some(workload(1000.0, 0.0, 1.0))), now());
        assert_eq!(gates[0].verdict, Verdict::Fail, "99% vs 100% is a 1 point drop");
    }

    #[test]
    fn slow_canaries_fail_absolute_and_relative_latency_gates() {
        let a = analysis(json!({"latency": [{"quantile": "p99", "maxMs": 500}]}));
        let gates = evaluate(&a, &window(Some(workload(1000.0, 0.0, 650.0)), None), now());
        assert_eq!(gates[0].verdict, Verdict::Fail);
        let a = analysis(json!({"latency": [{"quantile": "p99", "maxIncreaseVsPrimary": 20}]}));
        let gates = evaluate(
            &a,
            &window(Some(workload(1000.0, 0.0, 130.0)), Some(workload(1000.0, 0.0, 100.0))),
            now(),
        );
        assert_eq!(gates[0].verdict, Verdict::Fail, "30% slower than the primary");
    }

    #[test]
    fn too_little_traffic_is_insufficient_data_not_a_pass() {
        let a = analysis(json!({"successRate": {"min": 99}, "latency": [{"quantile": "p99", "maxMs": 500}]}));
        let gates = evaluate(&a, &window(Some(workload(99.0, 0.0, 10.0)), None), now());
        assert!(gates.iter().all(|g| g.verdict == Verdict::InsufficientData), "{gates:?}");
        assert_eq!(gates[0].value, None);
        assert_eq!(gates[0].requests, Some(99.0), "the request count explains why");
    }

    #[test]
    fn missing_nan_and_stale_data_are_never_a_pass() {
        let a = analysis(json!({"successRate": {"min": 99}, "latency": [{"quantile": "p90", "maxMs": 500}]}));
        // No canary metrics at all.
        assert!(
            evaluate(&a, &window(None, None), now()).iter().all(|g| g.verdict == Verdict::InsufficientData)
        );
        // NaN counts.
        let nan = evaluate(&a, &window(Some(workload(f64::NAN, 0.0, 10.0)), None), now());
        assert!(nan.iter().all(|g| g.verdict == Verdict::InsufficientData), "{nan:?}");
        // A quantile that is absent (p90 was not reported).
        let gates = evaluate(&a, &window(Some(workload(1000.0, 0.0, 10.0)), None), now());
        assert_eq!(gates[0].verdict, Verdict::Pass);
        assert_eq!(gates[1].verdict, Verdict::InsufficientData);
        // NaN latency.
        let a99 = analysis(json!({"latency": [{"quantile": "p99", "maxMs": 500}]}));
        let gates = evaluate(&a99, &window(Some(workload(1000.0, 0.0, f64::NAN)), None), now());
        assert_eq!(gates[0].verdict, Verdict::InsufficientData);
        // A window that ended ten minutes ago.
        let late = Timestamp::from_second(NOW + 600).unwrap();
        let gates = evaluate(&a99, &window(Some(workload(1000.0, 0.0, 10.0)), None), late);
        assert_eq!(gates[0].verdict, Verdict::InsufficientData);
    }

    #[test]
    fn a_comparison_without_primary_data_is_insufficient() {
        let a = analysis(json!({"successRate": {"min": 99, "maxDropVsPrimary": 1}}));
        let gates =
            evaluate(&a, &window(Some(workload(1000.0, 0.0, 1.0)), Some(workload(10.0, 0.0, 1.0))), now());
        assert_eq!(gates[0].verdict, Verdict::InsufficientData, "the primary had 10 requests, below 100");
        let gates = evaluate(&a, &window(Some(workload(900.0, 100.0, 1.0)), None), now());
        assert_eq!(
            gates[0].verdict,
            Verdict::Fail,
            "a failing absolute check fails even without the primary"
        );
    }
}
