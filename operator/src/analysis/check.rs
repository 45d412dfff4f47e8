//! One check of `analysis.method: sequential`: from a metrics window and the stored
//! [`AnalysisStatus`] to the updated status and a verdict. Pure; [`crate::engine::decide`] acts
//! on the result.
//!
//! - The failure test compares the canary's failures with the primary's
//!   ([`SequentialState`], conditioned on the traffic share).
//! - Each distinct `maxMs` of the latency gates adds a latency test, where a request slower than
//!   `maxMs` counts as a failure; its counts are bracketed from the window's quantiles
//!   ([`slow_batch_from_quantiles`]), so it can only ever report a regression.
//! - `alpha` is split evenly between the tests, so that the chance of any false rollback stays
//!   at most `alpha`.
//! - Each moment of traffic is counted once: of a window that overlaps the last one counted,
//!   only the part after the last window's end is added, its counts scaled to that part.
//! - A missing, stale, non-numeric or already counted window is not counted and the check is
//!   not `usable`: never a pass.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::sequential::{
    Batch, Evaluation, LatencyState, QuantileWindow, SequentialConfig, SequentialState, SequentialVerdict,
    bucket_bound_at_most, slow_batch_from_histograms, slow_batch_from_quantiles,
};
use crate::api::{Analysis, AnalysisStatus, LatencyQuantile, SequentialAnalysis};
use crate::metrics::{MetricsWindow, WorkloadMetrics};

/// The result of one [`check`].
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The analysis status to store.
    pub status: AnalysisStatus,
    /// `Regression` when any test found one; `NoRegression` when the failure test's
    /// confidence sequence lies below the margin; `Continue` otherwise.
    pub verdict: SequentialVerdict,
    /// The window was counted: present, fresh, numeric and not counted before.
    pub usable: bool,
    /// The canary served at least `analysis.minRequests` (and at least one) requests counted at
    /// this step.
    pub enough_data: bool,
    /// Why the window was not counted, or a test could not be evaluated.
    pub problem: Option<String>,
    /// One line on the evidence: the test that found a regression, or the failure test.
    pub summary: String,
}

/// The settings of the sequential method, with defaults when `analysis.sequential` is absent.
pub fn settings(analysis: &Analysis) -> SequentialAnalysis {
    analysis.sequential.clone().unwrap_or_default()
}

/// The distinct latency bounds (`maxMs` of the latency gates), ascending.
pub fn latency_bounds(analysis: &Analysis) -> Vec<f64> {
    let mut bounds: Vec<f64> = analysis
        .gates
        .latency
        .iter()
        .filter_map(|g| g.max_ms)
        .filter(|b| b.is_finite() && *b > 0.0)
        .collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    bounds
}

/// Counts `window` into the tests of `previous` (a fresh analysis when `None`) for the canary at
/// `step`, and evaluates them. `now` is the time of the check.
pub fn check(
    analysis: &Analysis,
    previous: Option<&AnalysisStatus>,
    step: i32,
    window: Option<&MetricsWindow>,
    now: Timestamp,
) -> Check {
    let settings = settings(analysis);
    let bounds = latency_bounds(analysis);
    let tests = bounds.len() + 1;
    let alpha = settings.alpha / tests as f64;
    let config = SequentialConfig { alpha, margin: settings.margin, prior_scale: settings.prior_scale };

    let mut status = previous.cloned().unwrap_or_default();
    status.checked_at = Some(Time(now));
    if status.step != step {
        status.step = step;
        status.step_canary_requests = 0.0;
    }
    status.errors.bound_ms = None;
    status.errors.alpha = alpha;
    // One latency test per bound; a bound added mid-rollout starts with an empty state.
    status.latency = bounds
        .iter()
        .map(|bound| {
            let kept = status.latency.iter().find(|t| t.bound_ms == Some(*bound)).cloned();
            let mut test = kept.unwrap_or_default();
            test.bound_ms = Some(*bound);
            test.alpha = alpha;
            test
        })
        .collect();

    let mut problem = None;
    let usable = match counted_part(window, status.window_end.as_ref(), now) {
        Ok((window, canary, primary, fraction)) => {
            match count(&mut status, window, canary, primary, fraction) {
                Ok(()) => true,
                Err(why) => {
                    problem = Some(why);
                    false
                }
            }
        }
        Err(why) => {
            problem = Some(why);
            false
        }
    };

    let mut verdict = SequentialVerdict::Continue;
    let mut summary = None;
    let mut failed_evaluation = None;
    match status.errors.state.evaluate(&config) {
        Ok(evaluation) => {
            if evaluation.verdict != SequentialVerdict::Continue {
                verdict = evaluation.verdict;
            }
            status.errors.evaluation = Some(evaluation);
        }
        Err(error) => failed_evaluation = Some(format!("failure test: {error}")),
    }
    for test in &mut status.latency {
        let bound = test.bound_ms.unwrap_or(f64::INFINITY);
        // Exact slow counts from histograms get the full two-sided test; bracketed ones only
        // the regression side.
        let evaluated =
            LatencyState { bound, exact: test.histogram, slow: test.state.clone() }.evaluate(&config);
        match evaluated {
            Ok(evaluation) => {
                if evaluation.verdict == SequentialVerdict::Regression
                    && verdict != SequentialVerdict::Regression
                {
                    verdict = SequentialVerdict::Regression;
                    summary = Some(describe(&format!("requests slower than {}ms", trim(bound)), &evaluation));
                }
                test.evaluation = Some(evaluation);
            }
            Err(error) => failed_evaluation = Some(format!("latency test at {}ms: {error}", trim(bound))),
        }
    }
    if let Some(why) = failed_evaluation {
        // A state that cannot be evaluated (a hand-edited status, a config that skipped
        // validation) never passes.
        problem = Some(why);
        if verdict != SequentialVerdict::Regression {
            verdict = SequentialVerdict::Continue;
        }
        let summary = summary.unwrap_or_default();
        return Check { status, verdict, usable: false, enough_data: false, problem, summary };
    }
    let summary = summary.unwrap_or_else(|| match &status.errors.evaluation {
        Some(evaluation) => describe("failures", evaluation),
        None => String::new(),
    });
    let min_requests = (analysis.min_requests as f64).max(1.0);
    let enough_data = usable && status.step_canary_requests >= min_requests;
    Check { status, verdict, usable, enough_data, problem, summary }
}

/// The window, its canary and primary metrics, and the fraction of it not counted before; or
/// why it cannot be counted.
fn counted_part<'w>(
    window: Option<&'w MetricsWindow>,
    last_end: Option<&Time>,
    now: Timestamp,
) -> Result<(&'w MetricsWindow, &'w WorkloadMetrics, &'w WorkloadMetrics, f64), String> {
    let Some(window) = window else {
        return Err("the metric source did not answer".to_string());
    };
    if is_stale(window, now) {
        return Err(format!("the metrics window ended at {}, too far from now", window.end));
    }
    let (Some(canary), Some(primary)) = (window.canary.as_ref(), window.primary.as_ref()) else {
        let side = if window.canary.is_none() { "canary" } else { "primary" };
        return Err(format!("no {side} metrics in the window"));
    };
    let numeric =
        |m: &WorkloadMetrics| [m.success_count, m.failure_count].iter().all(|v| v.is_finite() && *v >= 0.0);
    if !numeric(canary) || !numeric(primary) {
        return Err("the window's request counts are not usable numbers".to_string());
    }
    let length = SignedDuration::try_from(window.length).unwrap_or(SignedDuration::ZERO);
    if length <= SignedDuration::ZERO {
        return Err("the metrics window is empty".to_string());
    }
    let start =
        window.end.checked_sub(length).map_err(|_| "the metrics window is out of range".to_string())?;
    let from = match last_end {
        Some(last) if last.0 >= window.end => {
            return Err(format!("the window ending at {} was already counted", window.end));
        }
        Some(last) if last.0 > start => last.0,
        _ => start,
    };
    let fraction = (from.duration_until(window.end).as_secs_f64() / length.as_secs_f64()).clamp(0.0, 1.0);
    Ok((window, canary, primary, fraction))
}

/// Counts the new part of a window into every test. All or nothing: on error the status is
/// unchanged.
fn count(
    status: &mut AnalysisStatus,
    window: &MetricsWindow,
    canary: &WorkloadMetrics,
    primary: &WorkloadMetrics,
    fraction: f64,
) -> Result<(), String> {
    let scale = |b: Batch| Batch {
        canary_requests: b.canary_requests * fraction,
        canary_failures: b.canary_failures * fraction,
        primary_requests: b.primary_requests * fraction,
        primary_failures: b.primary_failures * fraction,
    };
    let failures = scale(
        Batch::new(canary.requests(), canary.failure_count, primary.requests(), primary.failure_count)
            .map_err(|e| format!("failure counts: {e}"))?,
    );
    let mut errors = status.errors.state.clone();
    errors.push(&failures).map_err(|e| format!("failure test: {e}"))?;

    let canary_quantiles = quantiles(canary);
    let primary_quantiles = quantiles(primary);
    let mut latency: Vec<(SequentialState, bool)> = Vec::with_capacity(status.latency.len());
    for test in &status.latency {
        let mut state = test.state.clone();
        let bound = test.bound_ms.unwrap_or(f64::INFINITY);
        // Histograms on both sides give exact slow counts, classified at the largest bucket
        // boundary at or below the bound; otherwise the quantiles bracket them.
        let from_histograms = histogram_bound(canary, primary, bound)
            .map(|b| slow_batch_from_histograms(&canary.latency_buckets, &primary.latency_buckets, b));
        let (batch, histogram) = match from_histograms {
            Some(batch) => (batch, true),
            None => (
                slow_batch_from_quantiles(
                    &QuantileWindow { requests: canary.requests(), quantiles: &canary_quantiles },
                    &QuantileWindow { requests: primary.requests(), quantiles: &primary_quantiles },
                    bound,
                ),
                false,
            ),
        };
        // A window that says nothing about slow requests (contradictory quantiles, a broken
        // histogram) is left out of this latency test only.
        let mut exact = test.histogram || state.batches == 0;
        if let Ok(batch) = batch {
            state.push(&scale(batch)).map_err(|e| format!("latency test at {}ms: {e}", trim(bound)))?;
            exact = exact && histogram;
        }
        let histogram = exact && state.batches > 0;
        latency.push((state, histogram));
    }

    status.errors.state = errors;
    for (test, (state, histogram)) in status.latency.iter_mut().zip(latency) {
        test.state = state;
        test.histogram = histogram;
    }
    status.window_end = Some(Time(window.end));
    status.step_canary_requests += canary.requests() * fraction;
    Ok(())
}

/// The bucket boundary to classify slow requests at, when both sides have histograms and one
/// of their boundaries is at or below `bound`.
fn histogram_bound(canary: &WorkloadMetrics, primary: &WorkloadMetrics, bound: f64) -> Option<f64> {
    if canary.latency_buckets.is_empty() || primary.latency_buckets.is_empty() {
        return None;
    }
    bucket_bound_at_most(&canary.latency_buckets, bound)
}

/// The usable quantiles of a side, as `(quantile, milliseconds)`.
fn quantiles(metrics: &WorkloadMetrics) -> Vec<(f64, f64)> {
    metrics
        .latency_ms
        .iter()
        .filter(|(_, v)| v.is_finite() && **v >= 0.0)
        .map(|(q, v)| {
            let q = match q {
                LatencyQuantile::P50 => 0.5,
                LatencyQuantile::P90 => 0.9,
                LatencyQuantile::P99 => 0.99,
            };
            (q, *v)
        })
        .collect()
}

/// As the threshold gates: a window is stale when it ended more than its own length (and at
/// least a minute) ago, or claims to end more than a minute in the future.
fn is_stale(window: &MetricsWindow, now: Timestamp) -> bool {
    let age = window.end.duration_until(now);
    let allowed = SignedDuration::try_from(window.length)
        .unwrap_or(SignedDuration::ZERO)
        .max(SignedDuration::from_secs(60));
    age > allowed || age < -SignedDuration::from_secs(60)
}

/// `failures: e-value 3.2 (rollback at 40), ratio 2.1 [0.84, 5.3], 1200 canary / 10800 primary
/// requests`.
pub fn describe(name: &str, evaluation: &Evaluation) -> String {
    let estimate = evaluation.ratio_estimate.map_or_else(|| "n/a".to_string(), number);
    let upper = evaluation.ratio_upper.map_or_else(|| "∞".to_string(), number);
    format!(
        "{name}: e-value {} (rollback at {}), canary/primary ratio {estimate} [{}, {upper}], \
         {} canary / {} primary requests",
        number(evaluation.e_value),
        number(evaluation.threshold),
        number(evaluation.ratio_lower),
        evaluation.canary_requests.round(),
        evaluation.primary_requests.round(),
    )
}

/// Three significant digits, scientific beyond a million.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() >= 1e6 {
        return format!("{v:.2e}");
    }
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    trim_zeros(format!("{v:.digits$}"))
}

fn trim(v: f64) -> String {
    trim_zeros(format!("{v:.3}"))
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::analysis::sequential::Bucket;

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(T0 + s).unwrap()
    }

    fn analysis(extra: serde_json::Value) -> Analysis {
        let mut base = json!({"method": "sequential", "minRequests": 100});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn side(requests: f64, failures: f64, quantiles: &[(LatencyQuantile, f64)]) -> WorkloadMetrics {
        WorkloadMetrics {
            success_count: requests - failures,
            failure_count: failures,
            latency_ms: quantiles.iter().copied().collect::<BTreeMap<_, _>>(),
            latency_buckets: Vec::new(),
        }
    }

    fn window(end: i64, length: u64, canary: WorkloadMetrics, primary: WorkloadMetrics) -> MetricsWindow {
        MetricsWindow {
            end: at(end),
            length: Duration::from_secs(length),
            canary: Some(canary),
            primary: Some(primary),
        }
    }

    #[test]
    fn a_window_is_counted_and_evaluated() {
        let a = analysis(json!({}));
        let w = window(60, 60, side(1000.0, 2.0, &[]), side(9000.0, 9.0, &[]));
        let c = check(&a, None, 1, Some(&w), at(61));
        assert!(c.usable && c.enough_data, "{c:?}");
        assert_eq!(c.verdict, SequentialVerdict::Continue);
        assert_eq!(c.status.errors.state.batches, 1);
        assert_eq!(c.status.errors.state.canary_failures, 2.0);
        assert_eq!(c.status.window_end, Some(Time(at(60))));
        assert_eq!(c.status.checked_at, Some(Time(at(61))));
        assert_eq!(c.status.step_canary_requests, 1000.0);
        assert_eq!(c.status.errors.alpha, 0.05, "one test gets all of alpha");
        let e = c.status.errors.evaluation.as_ref().unwrap();
        assert_eq!(e.canary_requests, 1000.0);
        assert!(c.summary.starts_with("failures: e-value "), "{}", c.summary);
    }

    #[test]
    fn a_clear_regression_is_reported() {
        let a = analysis(json!({}));
        let w = window(60, 60, side(1000.0, 30.0, &[]), side(9000.0, 9.0, &[]));
        let c = check(&a, None, 1, Some(&w), at(60));
        assert_eq!(c.verdict, SequentialVerdict::Regression, "{c:?}");
        let e = c.status.errors.evaluation.unwrap();
        assert!(e.e_value >= e.threshold);
        assert!(e.ratio_lower > 1.0);
    }

    #[test]
    fn the_same_window_is_never_counted_twice() {
        let a = analysis(json!({}));
        let w = window(60, 60, side(1000.0, 2.0, &[]), side(9000.0, 9.0, &[]));
        let first = check(&a, None, 1, Some(&w), at(60));
        let again = check(&a, Some(&first.status), 1, Some(&w), at(61));
        assert!(!again.usable);
        assert!(again.problem.unwrap().contains("already counted"));
        assert_eq!(again.status.errors.state, first.status.errors.state);
    }

    #[test]
    fn only_the_new_part_of_an_overlapping_window_is_counted() {
        let a = analysis(json!({}));
        let w1 = window(60, 60, side(600.0, 0.0, &[]), side(6000.0, 0.0, &[]));
        let first = check(&a, None, 1, Some(&w1), at(60));
        // Ends 15 s later: 45 of its 60 s were counted already.
        let w2 = window(75, 60, side(600.0, 0.0, &[]), side(6000.0, 0.0, &[]));
        let second = check(&a, Some(&first.status), 1, Some(&w2), at(75));
        assert!(second.usable);
        assert_eq!(second.status.errors.state.canary_requests, 750.0);
        assert_eq!(second.status.errors.state.primary_requests, 7500.0);
        assert_eq!(second.status.step_canary_requests, 750.0);
    }

    #[test]
    fn missing_stale_and_nan_windows_are_not_usable() {
        let a = analysis(json!({}));
        let c = check(&a, None, 1, None, at(60));
        assert!(!c.usable && !c.enough_data);
        assert!(c.problem.unwrap().contains("did not answer"));

        let w = window(60, 60, side(1000.0, 0.0, &[]), side(1000.0, 0.0, &[]));
        let c = check(&a, None, 1, Some(&w), at(600));
        assert!(!c.usable, "a window that ended 9 minutes ago is stale");

        let mut w = window(60, 60, side(1000.0, 0.0, &[]), side(1000.0, 0.0, &[]));
        w.primary = None;
        let c = check(&a, None, 1, Some(&w), at(60));
        assert!(!c.usable);
        assert!(c.problem.unwrap().contains("primary"));

        let w = window(60, 60, side(f64::NAN, 0.0, &[]), side(1000.0, 0.0, &[]));
        let c = check(&a, None, 1, Some(&w), at(60));
        assert!(!c.usable);
        assert_eq!(c.status.errors.state.batches, 0);
    }

    #[test]
    fn requests_are_counted_per_step_against_min_requests() {
        let a = analysis(json!({"minRequests": 100}));
        let w1 = window(10, 10, side(60.0, 0.0, &[]), side(600.0, 0.0, &[]));
        let c1 = check(&a, None, 1, Some(&w1), at(10));
        assert!(c1.usable && !c1.enough_data, "60 of 100 requests");
        let w2 = window(20, 10, side(60.0, 0.0, &[]), side(600.0, 0.0, &[]));
        let c2 = check(&a, Some(&c1.status), 1, Some(&w2), at(20));
        assert!(c2.enough_data, "120 requests at this step");
        let w3 = window(30, 10, side(60.0, 0.0, &[]), side(600.0, 0.0, &[]));
        let c3 = check(&a, Some(&c2.status), 2, Some(&w3), at(30));
        assert!(!c3.enough_data, "a new step counts from zero");
        assert_eq!(c3.status.step, 2);
        assert_eq!(c3.status.errors.state.canary_requests, 180.0, "the test keeps every window");
    }

    #[test]
    fn alpha_is_split_between_the_failure_and_latency_tests() {
        let a = analysis(json!({"sequential": {"alpha": 0.06},
            "gates": {"latency": [{"quantile": "p99", "maxMs": 500}, {"quantile": "p90", "maxMs": 300},
                                  {"quantile": "p50", "maxMs": 500}]}}));
        let w = window(60, 60, side(1000.0, 0.0, &[]), side(1000.0, 0.0, &[]));
        let c = check(&a, None, 1, Some(&w), at(60));
        assert_eq!(
            c.status.latency.iter().map(|t| t.bound_ms.unwrap()).collect::<Vec<_>>(),
            vec![300.0, 500.0]
        );
        assert!((c.status.errors.alpha - 0.02).abs() < 1e-12);
        assert!(c.status.latency.iter().all(|t| (t.alpha - 0.02).abs() < 1e-12));
    }

    #[test]
    fn a_slow_canary_is_a_latency_regression() {
        use LatencyQuantile::*;
        let a = analysis(json!({"gates": {"latency": [{"quantile": "p99", "maxMs": 500}]}}));
        // Canary p90 above the bound: at least 10% slow. Primary p99 below: at most 1% slow.
        let slow = [(P50, 300.0), (P90, 650.0), (P99, 1200.0)];
        let fast = [(P50, 100.0), (P90, 200.0), (P99, 400.0)];
        let mut status = None;
        let mut verdict = SequentialVerdict::Continue;
        for i in 1..=5 {
            let w = window(10 * i, 10, side(100.0, 0.0, &slow), side(900.0, 0.0, &fast));
            let c = check(&a, status.as_ref(), 1, Some(&w), at(10 * i));
            verdict = c.verdict;
            status = Some(c.status);
            if verdict == SequentialVerdict::Regression {
                assert!(c.summary.starts_with("requests slower than 500ms"), "{}", c.summary);
                break;
            }
        }
        assert_eq!(verdict, SequentialVerdict::Regression);
        let status = status.unwrap();
        assert_eq!(status.errors.evaluation.unwrap().verdict, SequentialVerdict::Continue);
    }

    #[test]
    fn a_faster_canary_is_never_a_latency_regression() {
        use LatencyQuantile::*;
        let a = analysis(json!({"gates": {"latency": [{"quantile": "p99", "maxMs": 500}]}}));
        let slow = [(P50, 300.0), (P90, 650.0), (P99, 1200.0)];
        let fast = [(P50, 100.0), (P90, 200.0), (P99, 400.0)];
        let mut status = None;
        for i in 1..=30 {
            let w = window(10 * i, 10, side(100.0, 0.0, &fast), side(900.0, 0.0, &slow));
            let c = check(&a, status.as_ref(), 1, Some(&w), at(10 * i));
            assert_ne!(c.verdict, SequentialVerdict::Regression);
            status = Some(c.status);
        }
    }

    /// A cumulative histogram with Linkerd-like bounds: `total` requests, `slow` of them above
    /// 500 ms.
    fn histogram(total: f64, slow: f64) -> Vec<Bucket> {
        vec![
            Bucket { le: 100.0, count: (total - slow) * 0.5 },
            Bucket { le: 500.0, count: total - slow },
            Bucket { le: 1000.0, count: total - slow * 0.5 },
            Bucket { le: f64::INFINITY, count: total },
        ]
    }

    fn with_buckets(mut side: WorkloadMetrics, buckets: Vec<Bucket>) -> WorkloadMetrics {
        side.latency_buckets = buckets;
        side
    }

    #[test]
    fn histograms_give_exact_slow_counts_and_a_two_sided_latency_test() {
        let a = analysis(json!({"gates": {"latency": [{"quantile": "p99", "maxMs": 500}]}}));
        let w = window(
            10,
            10,
            with_buckets(side(100.0, 0.0, &[]), histogram(100.0, 30.0)),
            with_buckets(side(900.0, 0.0, &[]), histogram(900.0, 9.0)),
        );
        let c = check(&a, None, 1, Some(&w), at(10));
        let test = &c.status.latency[0];
        assert!(test.histogram, "{test:?}");
        assert_eq!(test.state.canary_failures, 30.0, "exactly the canary's requests above 500 ms");
        assert_eq!(test.state.primary_failures, 9.0);
        assert_eq!(c.verdict, SequentialVerdict::Regression, "30% slow against 1%: {c:?}");
        assert!(c.summary.starts_with("requests slower than 500ms"), "{}", c.summary);
    }

    #[test]
    fn a_window_from_quantiles_makes_the_latency_test_one_sided_again() {
        use LatencyQuantile::*;
        let a = analysis(json!({"gates": {"latency": [{"quantile": "p99", "maxMs": 500}]}}));
        let first = window(
            10,
            10,
            with_buckets(side(100.0, 0.0, &[]), histogram(100.0, 1.0)),
            with_buckets(side(900.0, 0.0, &[]), histogram(900.0, 9.0)),
        );
        let c = check(&a, None, 1, Some(&first), at(10));
        assert!(c.status.latency[0].histogram);
        let fast = [(P50, 100.0), (P90, 200.0), (P99, 400.0)];
        let second = window(20, 10, side(100.0, 0.0, &fast), side(900.0, 0.0, &fast));
        let c = check(&a, Some(&c.status), 1, Some(&second), at(20));
        assert!(!c.status.latency[0].histogram, "a quantile window makes the counts inexact");
        assert_eq!(c.status.latency[0].state.batches, 2);
    }

    #[test]
    fn an_invalid_stored_state_never_passes() {
        let a = analysis(json!({}));
        let mut broken = AnalysisStatus::default();
        broken.errors.state.canary_requests = -5.0;
        let w = window(60, 60, side(1000.0, 0.0, &[]), side(1000.0, 0.0, &[]));
        let c = check(&a, Some(&broken), 1, Some(&w), at(60));
        assert!(!c.usable && !c.enough_data);
        assert_eq!(c.verdict, SequentialVerdict::Continue);
        assert!(c.problem.unwrap().contains("invalid sequential state"));
    }

    #[test]
    fn evidence_of_no_regression_needs_many_failures() {
        let a = analysis(json!({"sequential": {"margin": 2.0}}));
        let mut status = None;
        let mut verdicts = Vec::new();
        for i in 1..=20 {
            let w = window(60 * i, 60, side(5000.0, 100.0, &[]), side(5000.0, 100.0, &[]));
            let c = check(&a, status.as_ref(), 1, Some(&w), at(60 * i));
            verdicts.push(c.verdict);
            status = Some(c.status);
        }
        assert_eq!(verdicts.last(), Some(&SequentialVerdict::NoRegression), "{verdicts:?}");
        assert!(!verdicts.contains(&SequentialVerdict::Regression));
    }

    #[test]
    fn describe_is_compact() {
        let e = Evaluation {
            verdict: SequentialVerdict::Continue,
            e_value: 3.21,
            log_e_value: 3.21f64.ln(),
            threshold: 20.0,
            ratio_estimate: Some(2.126),
            ratio_lower: 0.8412,
            ratio_upper: None,
            margin: 1.5,
            batches: 3,
            canary_requests: 1200.2,
            canary_failures: 5.0,
            primary_requests: 10800.0,
            primary_failures: 9.0,
        };
        assert_eq!(
            describe("failures", &e),
            "failures: e-value 3.21 (rollback at 20), canary/primary ratio 2.13 [0.84, ∞], \
             1200 canary / 10800 primary requests"
        );
    }
}
