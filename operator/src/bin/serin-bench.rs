//! The decision benchmark: how fast and how safely each decider rolls back a bad canary and
//! promotes a good one. A program that prints figures, not a timed test.
//!
//! ```text
//! cargo run --release -p serin --bin serin-bench                 # print the report
//! cargo run --release -p serin --bin serin-bench -- --write      # and write the docs pages
//! cargo run --release -p serin --bin serin-bench -- --runs 200   # quicker, noisier
//! ```
//!
//! A seeded simulator drives the real [`decide`] with synthetic metric windows: Poisson
//! arrivals, Bernoulli failures, log-normal latencies summarised as p50/p90/p99, and canary
//! weights that follow the schedule `decide` sets. Deciders:
//!
//! 1. Serin's sequential method (`analysis.method: sequential`, a check every 10 s);
//! 2. the same, checking once per step (window = interval);
//! 3. Serin's threshold method with Flagger's settings (interval 1m, 5 failed checks, success
//!    rate ≥ 99 %, p99 ≤ 500 ms);
//! 4. a model of Flagger's own scheduler with the same settings (failed checks counted over the
//!    whole rollout, rollback on the tick after the 5th);
//! 5. Wald's SPRT with the true p0 and p1, watching every request: the information limit.
//!
//! Everything is deterministic for a given `--seed`, whatever the number of threads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;
use serin::analysis::sequential::SprtConfig;
use serin::api::{Analysis, LatencyQuantile, Phase, RolloutSpec, RolloutStatus};
use serin::duration::parse_duration;
use serin::engine::decide::{Observations, Workload, check_due, decide};
use serin::metrics::gates;
use serin::metrics::{MetricsWindow, WorkloadMetrics};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("bad argument: {0}")]
    Usage(String),
    #[error("bad benchmark spec: {0}")]
    Spec(#[from] serde_json::Error),
    #[error("time out of range: {0}")]
    Time(#[from] k8s_openapi::jiff::Error),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
    #[error("SPRT: {0}")]
    Sprt(#[from] serin::analysis::sequential::SequentialError),
    #[error("a simulation thread panicked")]
    Thread,
}

// ---------------------------------------------------------------------------------------------
// Random numbers: splitmix64 and the samplers the simulation needs.
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut rng = Rng(seed);
        rng.next_u64();
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1), never 0 or 1.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Gamma(shape, 1): Marsaglia and Tsang, boosted below shape 1.
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }

    /// Poisson(λ): inversion below 30, Hörmann's PTRS above.
    fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let u = self.uniform();
            let mut p = (-lambda).exp();
            let mut cdf = p;
            let mut k = 0u64;
            while u > cdf && k < 1000 {
                k += 1;
                p *= lambda / k as f64;
                cdf += p;
            }
            return k;
        }
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + invalpha.ln() - (a / (us * us) + b).ln() <= -lambda + k * loglam - ln_gamma(k + 1.0) {
                return k as u64;
            }
        }
    }

    /// Successes before the next failure, at failure probability `p`.
    fn geometric(&mut self, p: f64) -> u64 {
        if p >= 1.0 {
            return 0;
        }
        (self.uniform().ln() / (-p).ln_1p()).floor() as u64
    }
}

/// `ln Γ(x)` for `x > 0`: recurrence up to 10, then Stirling's series.
fn ln_gamma(x: f64) -> f64 {
    let mut x = x;
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= x.ln();
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    shift + (x - 0.5) * x.ln() - x
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// `P(Z > z)` for a standard normal `Z` (complementary error function, Numerical Recipes'
/// Chebyshev fit, relative error < 1.2e-7).
fn normal_sf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

// ---------------------------------------------------------------------------------------------
// Scenarios: traffic, failures and latency of primary and canary.
// ---------------------------------------------------------------------------------------------

/// The step schedule every decider follows: 10 % to 50 % in steps of 10, one minute each.
const WEIGHTS: [f64; 5] = [10.0, 20.0, 30.0, 40.0, 50.0];
const STEP_SECONDS: f64 = 60.0;
/// Latency bound of the p99 gate, and the "slow" class of the sequential latency test.
const LATENCY_BOUND_MS: f64 = 500.0;
/// Log-normal latencies: the primary's median and the spread (p99 = 4× the median).
const PRIMARY_MEDIAN_MS: f64 = 100.0;
const LATENCY_SIGMA: f64 = 0.6;
/// Failure rate of the primary (and of a healthy canary).
const BASE_ERROR_RATE: f64 = 0.001;
/// Longest simulated rollout.
const TIME_LIMIT_SECONDS: f64 = 4.0 * 3600.0;

#[derive(Clone, Debug)]
struct Scenario {
    kind: Kind,
    /// Canary requests per second at the first step (10 % of the traffic).
    canary_rps: f64,
    canary_error_rate: f64,
    canary_median_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Errors,
    Latency,
    Healthy,
}

impl Scenario {
    fn total_rps(&self) -> f64 {
        self.canary_rps * 100.0 / WEIGHTS[0]
    }

    fn label(&self) -> String {
        match self.kind {
            Kind::Errors => format!("errors 0.1% → {}%", trim(self.canary_error_rate * 100.0)),
            Kind::Latency => format!("latency: median {} → {} ms", PRIMARY_MEDIAN_MS, self.canary_median_ms),
            Kind::Healthy => "healthy".to_string(),
        }
    }

    /// The canary's probability of a slow request (above the latency bound).
    fn canary_slow(&self) -> f64 {
        slow_fraction(self.canary_median_ms)
    }

    /// The SPRT the information-limit decider runs: the class it watches, its design p0 and
    /// p1, and the canary's true rate of that class.
    fn sprt(&self) -> (SprtConfig, f64) {
        let (p0, p1, truth) = match self.kind {
            Kind::Errors => (BASE_ERROR_RATE, self.canary_error_rate, self.canary_error_rate),
            Kind::Latency => (slow_fraction(PRIMARY_MEDIAN_MS), self.canary_slow(), self.canary_slow()),
            Kind::Healthy => (BASE_ERROR_RATE, 0.01, BASE_ERROR_RATE),
        };
        (SprtConfig { p0, p1, alpha: 0.05, beta: 0.05 }, truth)
    }
}

fn slow_fraction(median_ms: f64) -> f64 {
    normal_sf((LATENCY_BOUND_MS / median_ms).ln() / LATENCY_SIGMA)
}

fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    let rates = [1.0, 10.0, 100.0];
    for rate in [0.01, 0.02, 0.05] {
        for rps in rates {
            out.push(Scenario {
                kind: Kind::Errors,
                canary_rps: rps,
                canary_error_rate: rate,
                canary_median_ms: PRIMARY_MEDIAN_MS,
            });
        }
    }
    for rps in rates {
        out.push(Scenario {
            kind: Kind::Latency,
            canary_rps: rps,
            canary_error_rate: BASE_ERROR_RATE,
            canary_median_ms: 3.0 * PRIMARY_MEDIAN_MS,
        });
    }
    for rps in rates {
        out.push(Scenario {
            kind: Kind::Healthy,
            canary_rps: rps,
            canary_error_rate: BASE_ERROR_RATE,
            canary_median_ms: PRIMARY_MEDIAN_MS,
        });
    }
    out
}

/// One side's metrics over `seconds` at `rps`: Poisson successes and failures, and the
/// nearest-rank p50/p90/p99 of log-normal latencies.
fn side(rng: &mut Rng, rps: f64, seconds: f64, error_rate: f64, median_ms: f64) -> WorkloadMetrics {
    let mean = rps * seconds;
    let failures = rng.poisson(mean * error_rate);
    let successes = rng.poisson(mean * (1.0 - error_rate));
    let n = failures + successes;
    let mut latency_ms = BTreeMap::new();
    let quantiles = [(LatencyQuantile::P50, 0.5), (LatencyQuantile::P90, 0.9), (LatencyQuantile::P99, 0.99)];
    if n > 0 && n <= 256 {
        let mut z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        z.sort_by(f64::total_cmp);
        for (name, q) in quantiles {
            let k = ((q * n as f64).ceil() as usize).clamp(1, z.len());
            latency_ms.insert(name, median_ms * (LATENCY_SIGMA * z[k - 1]).exp());
        }
    } else if n > 256 {
        // Order statistics of uniforms, one after the other: U(k) ~ Beta(k, n − k + 1), and
        // given U(j) = u, (U(k) − u)/(1 − u) ~ Beta(k − j, n − k + 1).
        let nf = n as f64;
        let (mut u, mut j) = (0.0f64, 0.0f64);
        for (name, q) in quantiles {
            let k = (q * nf).ceil().clamp(1.0, nf);
            u += (1.0 - u) * rng.beta(k - j, nf - k + 1.0);
            j = k;
            latency_ms.insert(name, median_ms * (LATENCY_SIGMA * normal_quantile(u)).exp());
        }
    }
    WorkloadMetrics {
        success_count: successes as f64,
        failure_count: failures as f64,
        latency_ms,
        latency_buckets: Vec::new(),
    }
}

fn window(rng: &mut Rng, sc: &Scenario, weight_pct: i32, seconds: f64, end: Timestamp) -> MetricsWindow {
    let w = f64::from(weight_pct.clamp(0, 100)) / 100.0;
    let total = sc.total_rps();
    let canary = side(rng, total * w, seconds, sc.canary_error_rate, sc.canary_median_ms);
    let primary = side(rng, total * (1.0 - w), seconds, BASE_ERROR_RATE, PRIMARY_MEDIAN_MS);
    MetricsWindow {
        end,
        length: Duration::from_secs_f64(seconds),
        canary: Some(canary),
        primary: Some(primary),
    }
}

// ---------------------------------------------------------------------------------------------
// Deciders.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decider {
    Sequential,
    SequentialPerStep,
    Thresholds,
    Flagger,
    Sprt,
}

const DECIDERS: [Decider; 5] =
    [Decider::Sequential, Decider::SequentialPerStep, Decider::Thresholds, Decider::Flagger, Decider::Sprt];

impl Decider {
    fn name(self) -> &'static str {
        match self {
            Decider::Sequential => "Serin sequential (check every 10 s)",
            Decider::SequentialPerStep => "Serin sequential (check once per step)",
            Decider::Thresholds => "Serin thresholds, Flagger settings",
            Decider::Flagger => "Flagger scheduler model",
            Decider::Sprt => "Wald SPRT, known p0/p1, per request",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Decider::Sequential => "sequential 10 s",
            Decider::SequentialPerStep => "sequential 1 m",
            Decider::Thresholds => "thresholds",
            Decider::Flagger => "Flagger model",
            Decider::Sprt => "SPRT",
        }
    }

    /// The Rollout spec `decide` runs with; `None` for the deciders that do not use it.
    fn spec(self, prior_scale: f64) -> Result<Option<RolloutSpec>, BenchError> {
        let base = json!({
            "targetRef": {"name": "app"}, "service": {"port": 80},
            "strategy": {"stepWeight": 10, "maxWeight": 50, "interval": "1m"},
            "progressDeadlineSeconds": 600,
        });
        let gates =
            json!({"successRate": {"min": 99}, "latency": [{"quantile": "p99", "maxMs": LATENCY_BOUND_MS}]});
        let analysis = match self {
            // Product defaults (alpha 0.05, margin 1.5, minRequests 50, hold on insufficient
            // data), checking every 10 s.
            Decider::Sequential => json!({"method": "sequential", "window": "10s", "gates": gates,
                "sequential": {"priorScale": prior_scale}}),
            Decider::SequentialPerStep => json!({"method": "sequential", "gates": gates,
                "sequential": {"priorScale": prior_scale}}),
            // Flagger: threshold 5 (rollback at the 5th failed check), no minimum traffic, no
            // data is a failed check.
            Decider::Thresholds => json!({"window": "1m", "tolerance": 4, "minRequests": 0,
                "onInsufficientData": {"action": "fail"}, "gates": gates}),
            Decider::Flagger | Decider::Sprt => return Ok(None),
        };
        let mut spec = base;
        spec["analysis"] = analysis;
        Ok(Some(serde_json::from_value(spec)?))
    }
}

/// How one simulated rollout ended, in seconds since the canary got traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    RolledBack { seconds: f64, canary_requests: f64 },
    Promoted { seconds: f64 },
    Undecided,
}

const T0: i64 = 1_800_000_000;

fn seconds_since(start: Timestamp, now: Timestamp) -> f64 {
    start.duration_until(now).as_secs_f64()
}

/// Runs `decide` the way the reconciler does: metrics only when a check is due, a window of
/// `analysis.window` ending now, gates from `metrics::gates::evaluate`, and the next call at
/// `requeue_after`. The cluster is perfect: the canary is ready at once.
fn run_decide(spec: &RolloutSpec, sc: &Scenario, rng: &mut Rng) -> Result<Outcome, BenchError> {
    let start = Timestamp::from_second(T0)?;
    let mut status = RolloutStatus {
        phase: Phase::Progressing,
        canary_revision: Some("canary".into()),
        promoted_revision: Some("stable".into()),
        step_started_at: Some(Time(start)),
        ..RolloutStatus::default()
    };
    let analysis: Option<&Analysis> = spec.analysis.as_ref();
    let window_seconds = analysis
        .and_then(|a| a.window.as_deref())
        .and_then(|w| parse_duration(w).ok())
        .unwrap_or(Duration::from_secs(60))
        .as_secs_f64();
    let mut obs = Observations {
        generation: Some(1),
        target: Some(Workload { revision: "canary".into(), replicas: 3, ready: true, failure: None }),
        primary: Some(Workload { revision: "stable".into(), replicas: 3, ready: true, failure: None }),
        ..Observations::default()
    };
    let mut now = start;
    let mut canary_requests = 0.0;
    loop {
        let due = check_due(spec, &status, now);
        obs.metrics = due.then(|| window(rng, sc, status.canary_weight, window_seconds, now));
        obs.gates = analysis.zip(obs.metrics.as_ref()).map(|(a, w)| gates::evaluate(a, w, now));
        canary_requests += obs.metrics.as_ref().and_then(|m| m.canary.as_ref()).map_or(0.0, |c| c.requests());
        let d = decide(spec, &status, &obs, now);
        let seconds = seconds_since(start, now);
        match d.status.phase {
            Phase::Failed => return Ok(Outcome::RolledBack { seconds, canary_requests }),
            Phase::Promoting => return Ok(Outcome::Promoted { seconds }),
            _ => {}
        }
        if seconds > TIME_LIMIT_SECONDS {
            return Ok(Outcome::Undecided);
        }
        status = d.status;
        let wait = d.requeue_after.unwrap_or(Duration::from_secs(1));
        now = now.checked_add(SignedDuration::try_from(wait).unwrap_or(SignedDuration::from_secs(1)))?;
    }
}

/// Flagger's scheduler (pkg/controller/scheduler.go) reduced to its decision: a tick every
/// interval; at each tick, roll back if the failed checks reached the threshold, else run the
/// analysis on the last interval: pass → next weight (promote after the last), fail → one more
/// failed check. Failed checks are never reset during a rollout.
fn run_flagger(sc: &Scenario, rng: &mut Rng) -> Result<Outcome, BenchError> {
    let spec = Decider::Thresholds.spec(1.0)?;
    let Some(analysis) = spec.and_then(|s| s.analysis) else { return Ok(Outcome::Undecided) };
    let start = Timestamp::from_second(T0)?;
    let (mut step, mut failed, mut canary_requests) = (0usize, 0, 0.0);
    for tick in 1.. {
        let seconds = STEP_SECONDS * f64::from(tick);
        if seconds > TIME_LIMIT_SECONDS {
            break;
        }
        if failed >= 5 {
            return Ok(Outcome::RolledBack { seconds, canary_requests });
        }
        let now = start.checked_add(SignedDuration::from_secs_f64(seconds))?;
        let w = window(rng, sc, WEIGHTS[step] as i32, STEP_SECONDS, now);
        canary_requests += w.canary.as_ref().map_or(0.0, WorkloadMetrics::requests);
        let pass = gates::evaluate(&analysis, &w, now).iter().all(|g| g.verdict == serin::api::Verdict::Pass);
        if !pass {
            failed += 1;
        } else if step + 1 < WEIGHTS.len() {
            step += 1;
        } else {
            return Ok(Outcome::Promoted { seconds });
        }
    }
    Ok(Outcome::Undecided)
}

/// The canary's expected requests by `t` seconds (the schedule, then the last weight).
fn canary_intensity(sc: &Scenario, t: f64) -> f64 {
    let total = sc.total_rps();
    let mut acc = 0.0;
    for (i, w) in WEIGHTS.iter().enumerate() {
        let from = i as f64 * STEP_SECONDS;
        if t <= from {
            return acc;
        }
        acc += total * w / 100.0 * (t - from).min(STEP_SECONDS);
    }
    let end = WEIGHTS.len() as f64 * STEP_SECONDS;
    if t > end { acc + total * WEIGHTS[WEIGHTS.len() - 1] / 100.0 * (t - end) } else { acc }
}

/// The time by which the canary expects `x` requests: the inverse of [`canary_intensity`].
fn time_of_intensity(sc: &Scenario, x: f64) -> f64 {
    let total = sc.total_rps();
    let mut acc = 0.0;
    for (i, w) in WEIGHTS.iter().enumerate() {
        let rate = total * w / 100.0;
        if acc + rate * STEP_SECONDS >= x {
            return i as f64 * STEP_SECONDS + (x - acc) / rate;
        }
        acc += rate * STEP_SECONDS;
    }
    let rate = total * WEIGHTS[WEIGHTS.len() - 1] / 100.0;
    WEIGHTS.len() as f64 * STEP_SECONDS + (x - acc) / rate
}

/// Wald's SPRT on every canary request of the watched class, with the true p0 and p1. The n-th
/// request arrives at `Λ⁻¹(Gamma(n, 1))` (Poisson arrivals at the schedule's rates), independent
/// of the failure marks, so the request count at the decision is drawn first. Undecided when the
/// schedule ends: promoted then, like the others without evidence.
fn run_sprt(sc: &Scenario, rng: &mut Rng) -> Result<Outcome, BenchError> {
    let (config, p) = sc.sprt();
    let (upper, lower) = (config.upper_threshold()?, config.lower_threshold()?);
    let up = (config.p1 / config.p0).ln();
    let down = -((-config.p1).ln_1p() - (-config.p0).ln_1p());
    let (mut llr, mut n) = (0.0f64, 0u64);
    let schedule_end = WEIGHTS.len() as f64 * STEP_SECONDS;
    let max_requests = canary_intensity(sc, schedule_end) * 2.0 + 100.0;
    let verdict = loop {
        let successes = rng.geometric(p);
        if llr - successes as f64 * down <= lower {
            n += ((llr - lower) / down).ceil().max(1.0) as u64;
            break Some(false);
        }
        n += successes + 1;
        llr += up - successes as f64 * down;
        if llr >= upper {
            break Some(true);
        }
        if n as f64 > max_requests {
            break None;
        }
    };
    let arrival = time_of_intensity(sc, rng.gamma(n as f64));
    Ok(match verdict {
        Some(true) if arrival <= schedule_end => {
            Outcome::RolledBack { seconds: arrival, canary_requests: n as f64 }
        }
        Some(false) if arrival <= schedule_end => Outcome::Promoted { seconds: arrival },
        _ => Outcome::Promoted { seconds: schedule_end },
    })
}

fn run(
    decider: Decider,
    spec: Option<&RolloutSpec>,
    sc: &Scenario,
    rng: &mut Rng,
) -> Result<Outcome, BenchError> {
    match (decider, spec) {
        (Decider::Flagger, _) => run_flagger(sc, rng),
        (Decider::Sprt, _) => run_sprt(sc, rng),
        (_, Some(spec)) => run_decide(spec, sc, rng),
        (_, None) => Ok(Outcome::Undecided),
    }
}

fn seed_for(seed: u64, scenario: usize, decider: usize, run: usize) -> u64 {
    let mut rng = Rng::new(seed ^ ((scenario as u64) << 40) ^ ((decider as u64) << 32) ^ run as u64);
    rng.next_u64()
}

/// Runs `runs` rollouts on `threads` threads; results in run order.
fn simulate(
    o: &Options,
    (si, sc): (usize, &Scenario),
    (di, decider): (usize, Decider),
) -> Result<Vec<Outcome>, BenchError> {
    let (seed, runs) = (o.seed, o.runs);
    let spec = decider.spec(o.prior_scale)?;
    let chunk = runs.div_ceil(o.threads.max(1));
    let results: Vec<Result<Vec<Outcome>, BenchError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..runs)
            .step_by(chunk.max(1))
            .map(|from| {
                let spec = spec.as_ref();
                scope.spawn(move || {
                    (from..(from + chunk).min(runs))
                        .map(|r| run(decider, spec, sc, &mut Rng::new(seed_for(seed, si, di, r))))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(BenchError::Thread))).collect()
    });
    let mut out = Vec::with_capacity(runs);
    for part in results {
        out.extend(part?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Statistics of the outcomes and the report.
// ---------------------------------------------------------------------------------------------

struct Summary {
    runs: usize,
    rolled_back: usize,
    promoted: usize,
    /// Time to rollback over all runs, a run that did not roll back counting as never.
    rollback_median: f64,
    rollback_p90: f64,
    /// Canary requests seen by the decider when it rolled back (median over rollbacks).
    rollback_requests_median: f64,
    promotion_median: f64,
}

/// The `q` quantile (nearest rank) of values where `f64::INFINITY` means "never".
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let k = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[k - 1]
}

fn summarise(outcomes: &[Outcome]) -> Summary {
    let mut rollback: Vec<f64> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::RolledBack { seconds, .. } => *seconds,
            _ => f64::INFINITY,
        })
        .collect();
    let mut promotion: Vec<f64> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Promoted { seconds } => *seconds,
            _ => f64::INFINITY,
        })
        .collect();
    let mut requests: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::RolledBack { canary_requests, .. } => Some(*canary_requests),
            _ => None,
        })
        .collect();
    Summary {
        runs: outcomes.len(),
        rolled_back: outcomes.iter().filter(|o| matches!(o, Outcome::RolledBack { .. })).count(),
        promoted: outcomes.iter().filter(|o| matches!(o, Outcome::Promoted { .. })).count(),
        rollback_median: quantile(&mut rollback, 0.5),
        rollback_p90: quantile(&mut rollback, 0.9),
        rollback_requests_median: quantile(&mut requests, 0.5),
        promotion_median: quantile(&mut promotion, 0.5),
    }
}

/// One-sided 95 % upper confidence bound of a binomial proportion (Clopper–Pearson), by
/// bisection on the binomial tail.
fn upper_bound_95(k: usize, n: usize) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    let cdf = |p: f64| -> f64 {
        // P(X <= k) for X ~ Binomial(n, p), summed in log space.
        let (nf, lp, lq) = (n as f64, p.ln(), (-p).ln_1p());
        (0..=k)
            .map(|i| {
                let i = i as f64;
                (ln_gamma(nf + 1.0) - ln_gamma(i + 1.0) - ln_gamma(nf - i + 1.0) + i * lp + (nf - i) * lq)
                    .exp()
            })
            .sum()
    };
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) > 0.05 { lo = mid } else { hi = mid }
    }
    hi
}

fn secs(v: f64) -> String {
    if !v.is_finite() {
        return "never".to_string();
    }
    if v >= 600.0 {
        format!("{:.1} min", v / 60.0)
    } else if v < 10.0 {
        format!("{v:.1} s")
    } else {
        format!("{v:.0} s")
    }
}

fn pct(k: usize, n: usize) -> String {
    format!("{}%", trim(100.0 * k as f64 / n.max(1) as f64))
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

struct Options {
    runs: usize,
    seed: u64,
    threads: usize,
    write: bool,
    /// `analysis.sequential.priorScale` of the sequential deciders.
    prior_scale: f64,
}

fn options() -> Result<Options, BenchError> {
    let mut o = Options {
        runs: 1000,
        seed: 20_261_128,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        write: false,
        prior_scale: serin::analysis::sequential::DEFAULT_PRIOR_SCALE,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("serin-bench [--runs N] [--seed S] [--threads T] [--prior-scale X] [--write]");
            std::process::exit(0);
        }
        if arg == "--write" {
            o.write = true;
            continue;
        }
        let value = args.next().ok_or_else(|| BenchError::Usage(format!("{arg} needs a value")))?;
        let number = |max: f64| {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && *v <= max)
                .ok_or_else(|| BenchError::Usage(format!("{arg} {value}: out of range")))
        };
        match arg.as_str() {
            "--runs" => o.runs = number(1e9)? as usize,
            "--threads" => o.threads = number(1024.0)? as usize,
            "--prior-scale" => o.prior_scale = number(5.0)?,
            "--seed" => {
                o.seed =
                    value.parse().map_err(|_| BenchError::Usage(format!("--seed {value}: not a number")))?
            }
            other => return Err(BenchError::Usage(other.to_string())),
        }
    }
    Ok(o)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

fn main() -> Result<(), BenchError> {
    let o = options()?;
    let began = Instant::now();
    let scenarios = scenarios();
    let mut results: Vec<Vec<Summary>> = Vec::new();
    for (si, sc) in scenarios.iter().enumerate() {
        let mut row = Vec::new();
        for (di, decider) in DECIDERS.iter().enumerate() {
            let outcomes = simulate(&o, (si, sc), (di, *decider))?;
            row.push(summarise(&outcomes));
            eprintln!(
                "{:>32} @ {:>3} req/s  {:<40} done ({:.0} s)",
                sc.label(),
                sc.canary_rps,
                decider.name(),
                began.elapsed().as_secs_f64()
            );
        }
        results.push(row);
    }
    let elapsed = began.elapsed();
    let report = report(&o, &scenarios, &results, elapsed)?;
    print!("{report}");
    if o.write {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for path in ["docs/benchmarks/decision.md", "docs/src/benchmarks/decision.md"] {
            let full = root.join(path);
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir).map_err(|e| BenchError::Write(path.to_string(), e))?;
            }
            std::fs::write(&full, &report).map_err(|e| BenchError::Write(path.to_string(), e))?;
            eprintln!("wrote {path}");
        }
    }
    Ok(())
}

fn index(d: Decider) -> usize {
    DECIDERS.iter().position(|x| *x == d).unwrap_or(0)
}

/// The expected canary requests to a decision of a test that, like Serin's, conditions on the
/// failures and knows only the canary's share `rho` (but, unlike it, the ratio p1/p0): Wald's
/// formula with the information per canary request of the conditional test,
/// `(p1 + p0 (1 − ρ)/ρ) · KL(θ1 ‖ ρ)`, `θ1 = ρ p1 / (ρ p1 + (1 − ρ) p0)`.
fn two_sample_limit(config: &SprtConfig, rho: f64) -> Result<f64, BenchError> {
    let (p0, p1) = (config.p0, config.p1);
    let theta = rho * p1 / (rho * p1 + (1.0 - rho) * p0);
    let kl = theta * (theta / rho).ln() + (1.0 - theta) * ((1.0 - theta) / (1.0 - rho)).ln();
    let per_request = (p1 + p0 * (1.0 - rho) / rho) * kl;
    let (a, b) = (config.upper_threshold()?, config.lower_threshold()?);
    Ok(((1.0 - config.beta) * a + config.beta * b) / per_request)
}

fn report(
    o: &Options,
    scenarios: &[Scenario],
    results: &[Vec<Summary>],
    elapsed: Duration,
) -> Result<String, BenchError> {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# Decision benchmark\n");
    let _ = writeln!(
        w,
        "How quickly each decider rolls back a bad canary, how often it rolls back a good one, and how \
         quickly it promotes. Written by `serin-bench` ({} runs per scenario and decider, seed {}, \
         priorScale {}); do not edit by hand. `docs/benchmarks/decision.md` and \
         `docs/src/benchmarks/decision.md` are identical copies.\n",
        o.runs,
        o.seed,
        trim(o.prior_scale)
    );
    let _ = writeln!(w, "## Rerun it\n");
    let _ = writeln!(
        w,
        "```console\n$ cargo run --release -p serin --bin serin-bench -- --write\n```\n\n\
         Options: `--runs N` (default 1000), `--seed S`, `--threads T` (default: all cores; the \
         figures do not depend on it), `--prior-scale X` (the sequential deciders' \
         `priorScale`, default 1). Without `--write` it only prints. This run: {} runs per cell in \
         {:.0} s on {} thread(s) of an {} (release build; the first build of the dependencies takes \
         longer than the run).\n",
        o.runs,
        elapsed.as_secs_f64(),
        o.threads,
        cpu_model()
    );

    let _ = writeln!(w, "## Set-up\n");
    let _ = writeln!(
        w,
        "- **Traffic.** Poisson arrivals. The *canary req/s* of a scenario is the canary's rate at \
         the first step; the service gets ten times that, and the canary's share follows the schedule \
         `decide` sets: 10, 20, 30, 40, 50 %, one minute each (`stepWeight: 10, maxWeight: 50, \
         interval: 1m`), then promotion.\n\
         - **Failures.** Bernoulli: the primary fails 0.1 % of requests; a bad canary 1, 2 or 5 %.\n\
         - **Latency.** Log-normal, σ = {LATENCY_SIGMA}, primary median {PRIMARY_MEDIAN_MS} ms \
         (p99 ≈ {:.0} ms; {}% of requests slower than {LATENCY_BOUND_MS} ms); the latency regression \
         triples the canary's median (p99 ≈ {:.0} ms; {}% slower than {LATENCY_BOUND_MS} ms). Each \
         window reports the nearest-rank p50, p90 and p99 of its requests, as the SMI Traffic \
         Metrics API would. The p99 gate's bound is {LATENCY_BOUND_MS} ms.\n\
         - **Healthy canaries** behave exactly like the primary.\n\
         - **Time** runs from the moment the canary gets traffic. `decide` is called at the \
         `requeue_after` it asks for, with a metrics window only when `check_due` says a check is \
         due, exactly as the reconciler does; the cluster is perfect (pods ready at once).\n",
        PRIMARY_MEDIAN_MS * (LATENCY_SIGMA * normal_quantile(0.99)).exp(),
        trim(100.0 * slow_fraction(PRIMARY_MEDIAN_MS)),
        3.0 * PRIMARY_MEDIAN_MS * (LATENCY_SIGMA * normal_quantile(0.99)).exp(),
        trim(100.0 * slow_fraction(3.0 * PRIMARY_MEDIAN_MS)),
    );
    let _ = writeln!(w, "Deciders:\n");
    let _ = writeln!(
        w,
        "1. **{}**: `analysis.method: sequential` with the product defaults (α = 0.05 split between \
         the failure test and the latency test at the p99 gate's 500 ms, margin 1.5, minRequests \
         50 per step, onNoRegression: advance, onNoEvidence: promote) and `window: 10s`, so that \
         `decide` checks every 10 s within each 1-minute step.\n\
         2. **{}**: the same with the default window (= the interval): one check per step.\n\
         3. **{}**: `decide`'s threshold method with Flagger's settings: interval 1m, \
         `successRate.min: 99`, `latency p99 maxMs: 500`, `tolerance: 4` (rollback at the 5th failed \
         check, Flagger's `threshold: 5`), `minRequests: 0` and `onInsufficientData: fail` (Flagger \
         counts a query without data as a failed check). Serin resets the failed checks when a step \
         passes.\n\
         4. **{}**: Flagger's scheduler loop reduced to its decisions, with the same gates \
         evaluated by `metrics::gates::evaluate`: failed checks are counted over the whole rollout \
         and the rollback happens on the tick after the 5th.\n\
         5. **{}**: Wald's sequential probability ratio test given the true p0 (primary) and p1 \
         (canary) of the regressed class (failures, or requests slower than 500 ms), α = β = 0.05, \
         looking after every canary request. No real decider knows p0 and p1: this is the \
         information limit. Healthy runs use p1 = 1 %. Without a decision by the end of the \
         schedule it promotes, like the others.\n",
        Decider::Sequential.name(),
        Decider::SequentialPerStep.name(),
        Decider::Thresholds.name(),
        Decider::Flagger.name(),
        Decider::Sprt.name()
    );

    // Regressions.
    let _ = writeln!(w, "## Time to rollback of regressed canaries\n");
    let _ = writeln!(
        w,
        "Median / p90 time to rollback, and the share of runs rolled back. A run that was promoted \
         counts as never rolled back, so a median or p90 of *never* means that at least half or a \
         tenth of the bad canaries were promoted.\n"
    );
    let mut header = "| scenario | canary req/s |".to_string();
    let mut rule = "|---|---:|".to_string();
    for d in DECIDERS {
        let _ = write!(header, " {} |", d.short());
        rule.push_str("---|");
    }
    let _ = writeln!(w, "{header}\n{rule}");
    for (sc, row) in scenarios.iter().zip(results) {
        if sc.kind == Kind::Healthy {
            continue;
        }
        let mut line = format!("| {} | {} |", sc.label(), sc.canary_rps);
        for r in row {
            let _ = write!(
                line,
                " {} / {} ({}) |",
                secs(r.rollback_median),
                secs(r.rollback_p90),
                pct(r.rolled_back, r.runs)
            );
        }
        let _ = writeln!(w, "{line}");
    }

    let _ = writeln!(w, "\n### Canary requests until rollback\n");
    let _ = writeln!(
        w,
        "Median canary requests the decider had seen when it rolled back; Wald's expected sample \
         size of the SPRT, `E[N | p1] = ((1 − β)A + βB) / KL(p1 ‖ p0)`; and the same formula for a \
         test that, like Serin's, only sees how the failures split between canary and primary at the \
         first step's 10 % share (but, unlike Serin's, knows the ratio p1/p0): the information limit \
         of any two-sample test there.\n"
    );
    let _ = writeln!(
        w,
        "| scenario | canary req/s | sequential 10 s | sequential 1 m | thresholds | SPRT (simulated) | SPRT E[N] | two-sample limit |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (sc, row) in scenarios.iter().zip(results) {
        if sc.kind == Kind::Healthy {
            continue;
        }
        let (config, _) = sc.sprt();
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            sc.label(),
            sc.canary_rps,
            row[index(Decider::Sequential)].rollback_requests_median,
            row[index(Decider::SequentialPerStep)].rollback_requests_median,
            row[index(Decider::Thresholds)].rollback_requests_median,
            row[index(Decider::Sprt)].rollback_requests_median,
            config.expected_sample_size_h1()?,
            two_sample_limit(&config, WEIGHTS[0] / 100.0)?
        );
    }

    // Healthy.
    let _ = writeln!(w, "\n## Healthy canaries: false rollbacks and time to promotion\n");
    let _ = writeln!(
        w,
        "False rollbacks (with the one-sided 95 % Clopper–Pearson upper bound), the share promoted, \
         and the median time to promotion.\n"
    );
    let mut header = "| canary req/s |".to_string();
    let mut rule = "|---:|".to_string();
    for d in DECIDERS {
        let _ = write!(header, " {} |", d.short());
        rule.push_str("---|");
    }
    let _ = writeln!(w, "{header}\n{rule}");
    for (sc, row) in scenarios.iter().zip(results) {
        if sc.kind != Kind::Healthy {
            continue;
        }
        let mut line = format!("| {} |", sc.canary_rps);
        for r in row {
            let _ = write!(
                line,
                " {} rolled back (≤ {}%); {} promoted, median {} |",
                pct(r.rolled_back, r.runs),
                trim(100.0 * upper_bound_95(r.rolled_back, r.runs)),
                pct(r.promoted, r.runs),
                secs(r.promotion_median)
            );
        }
        let _ = writeln!(w, "{line}");
    }

    // Speed-up.
    let seq = index(Decider::Sequential);
    let _ = writeln!(w, "\n## Speed-up over the thresholds\n");
    let _ = writeln!(
        w,
        "Median time to rollback of the thresholds divided by the sequential method's (every 10 s). \
         Where the thresholds promote at least half of the bad canaries their median is *never*.\n"
    );
    let _ = writeln!(
        w,
        "| scenario | canary req/s | sequential 10 s | thresholds | × | Flagger model | × |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let speedup = |mine: &Summary, theirs: &Summary| {
        if !theirs.rollback_median.is_finite() {
            "∞".to_string()
        } else {
            format!("{:.1}", theirs.rollback_median / mine.rollback_median)
        }
    };
    let (mut met_thresholds, mut met_flagger, mut regressions) = (0, 0, 0);
    for (sc, row) in scenarios.iter().zip(results) {
        if sc.kind == Kind::Healthy {
            continue;
        }
        regressions += 1;
        let (mine, th, fl) = (&row[seq], &row[index(Decider::Thresholds)], &row[index(Decider::Flagger)]);
        met_thresholds += usize::from(th.rollback_median >= 10.0 * mine.rollback_median);
        met_flagger += usize::from(fl.rollback_median >= 10.0 * mine.rollback_median);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            sc.label(),
            sc.canary_rps,
            secs(mine.rollback_median),
            secs(th.rollback_median),
            speedup(mine, th),
            secs(fl.rollback_median),
            speedup(mine, fl)
        );
    }

    // Targets.
    let _ = writeln!(w, "\n## Targets\n");
    let _ = writeln!(w, "| target | measured | met? |\n|---|---|---|");
    let target_scenario = scenarios.iter().position(|sc| {
        sc.kind == Kind::Errors
            && (sc.canary_rps - 10.0).abs() < 1e-9
            && (sc.canary_error_rate - 0.01).abs() < 1e-12
    });
    if let Some(i) = target_scenario {
        let (config, _) = scenarios[i].sprt();
        let expected = config.expected_sample_size_h1()?;
        let expected_seconds = time_of_intensity(&scenarios[i], expected);
        let limit = two_sample_limit(&config, WEIGHTS[0] / 100.0)?;
        let r = &results[i][seq];
        let ratio = r.rollback_median / expected_seconds;
        let _ = writeln!(
            w,
            "| time to rollback ≤ 1.5 × the SPRT's expected sample size (0.1 % → 1 %, 10 canary req/s) | \
             median {} and {:.0} canary requests: {:.1} × and {:.1} × E[N] = {:.0} requests ({:.1} s). \
             The two-sample limit alone is {:.1} × E[N]. | {} |",
            secs(r.rollback_median),
            r.rollback_requests_median,
            ratio,
            r.rollback_requests_median / expected,
            expected,
            expected_seconds,
            limit / expected,
            if ratio <= 1.5 { "yes" } else { "**no**" }
        );
    }
    for (sc, row) in scenarios.iter().zip(results) {
        if sc.kind != Kind::Healthy {
            continue;
        }
        let r = &row[seq];
        let rate = r.rolled_back as f64 / r.runs as f64;
        let _ = writeln!(
            w,
            "| false rollbacks ≤ α = 5 % on healthy canaries ({} canary req/s) | {} ({} of {}; 95 % bound {}%) | {} |",
            sc.canary_rps,
            pct(r.rolled_back, r.runs),
            r.rolled_back,
            r.runs,
            trim(100.0 * upper_bound_95(r.rolled_back, r.runs)),
            if rate <= 0.05 { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(
        w,
        "| ≥ 10× faster than the thresholds on the same traffic (median time to rollback) | in {met_thresholds} of \
         {regressions} regression scenarios against Serin's thresholds, {met_flagger} of {regressions} against the \
         Flagger model (table above) | {} |",
        if met_thresholds == regressions && met_flagger == regressions { "yes" } else { "**partly**" }
    );
    let _ = writeln!(w, "\n{}", COMMENTARY.trim());
    Ok(s)
}

/// Why the figures are what they are. Kept with the program so that the page stays one piece.
const COMMENTARY: &str = r#"
## Reading the figures

- **Check cadence bounds the speed.** A decider that looks once a minute cannot roll back in less
  than a minute, however strong the evidence. Anytime-valid tests may look as often as they like
  without inflating false rollbacks, so the sequential method's natural setting is a window
  shorter than the interval (`window: 10s`): `decide` then checks every window within each step,
  rolls back at the first check whose e-value crosses 1/α, and still advances the steps on the
  interval. At 100 canary requests/s every decider with a cadence rolls back at its first check;
  the SPRT, looking at every request, needs a second or two.
- **Why about 2.8 × the SPRT's expected sample size at 0.1 % → 1 %, and not 1.5 ×.** The SPRT is
  told the primary's failure rate (0.1 %) and the canary's (1 %); it gains
  KL(p1 ‖ p0) ≈ 0.0141 nats per canary request and stops at ln(19) ≈ 2.9. Serin knows neither
  rate. Its test conditions on the failures and asks how they split between canary and primary
  given the canary's share, which keeps it valid when the primary's rate drifts (load, a shared
  dependency failing), at three costs:
  1. *Information.* At the first step's 10 % share, the split of the failures carries about
     0.0108 nats per canary request: even a two-sample test told the ratio (10 ×) would need
     1.3 × the SPRT's E[N] (the *two-sample limit* column).
  2. *Not knowing the ratio.* The e-value averages the likelihood ratio over a prior on the log
     ratio (τ = 1); near the crossing that costs about 2.4 nats at a 10 × regression (the prior's
     density at ln 10 and the width of the likelihood), as much again as the SPRT's whole
     threshold.
  3. *α split* between the failure and the latency test: the failure test crosses at ln 40 ≈ 3.7
     rather than ln 20 ≈ 3.0.

  Together about 3.7 + 2.4 ≈ 6.1 nats at 0.0108 per request: about 560 canary requests, where the
  benchmark measures a median of about 530, plus up to 10 s of check cadence. A larger
  `priorScale` (`--prior-scale 2`) trims the second cost for large regressions at the expense of
  small ones; nothing can remove the first. The target is out of reach for a test that does not
  know the baseline rate; the figures say by how much.
- **Thresholds are slow by design and blind near the threshold.** Flagger's settings need five
  failed one-minute checks, so five to six minutes at best. A canary failing 1 % of requests
  against a 99 % success-rate floor fails only about half of its checks, so Serin's threshold
  method, which resets the failed checks when a step passes, promotes most such canaries, and the
  Flagger model rolls them back late or not at all. At 1 canary request/s a single failure in a
  window of 60 requests drops the success rate to 98.3 %: thresholds then react to noise.
- **Low traffic limits everyone.** At 1 canary request/s a canary failing 1 % of requests fails
  about 9 times in the whole 5-minute schedule; no decider can be sure within it, and the
  sequential method promotes about 4 in 10 of them on schedule (`onNoEvidence: hold` would keep
  them waiting for evidence instead). Sequential tests let one look often; they cannot create
  evidence that the traffic does not carry.
- **Latency from quantiles is conservative.** The sequential latency test brackets the number of
  slow requests from p50/p90/p99 (`slow_batch_from_quantiles`): it credits the canary with the
  fewest slow requests its quantiles allow and the primary with the most. It catches the tripled
  median (canary p90 above 500 ms while the primary's p99 is below it), but the brackets are wide
  for small windows: at 1 canary request/s a 10-second window holds 10 canary and 90 primary
  requests, the primary's "p99" is then its slowest request, and the test learns less per window
  than from one-minute windows (which is why it is slower there than the once-per-step
  variant). It would miss a regression that moves only the tail between two reported quantiles.
  Prometheus histograms would give exact slow counts; the metrics window does not carry bucket
  counts yet.
- **False rollbacks** stay well below α: the guarantee is an upper bound, and the latency test's
  brackets make it conservative.
- **Promotion.** With the defaults a healthy canary is promoted when the schedule completes (5
  minutes), like with thresholds. `onNoRegression: promote` promotes as soon as the confidence
  sequence for the failure ratio lies below the margin, which needs hundreds of failures at a
  0.1 % failure rate: it did not shorten the median time to promotion at these traffic levels.
  The SPRT promotes early because it is told the healthy rate.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(kind: Kind, rps: f64, error_rate: f64) -> Scenario {
        Scenario { kind, canary_rps: rps, canary_error_rate: error_rate, canary_median_ms: PRIMARY_MEDIAN_MS }
    }

    #[test]
    fn the_samplers_have_the_right_moments() {
        let mut rng = Rng::new(1);
        for lambda in [0.3, 5.0, 29.0, 31.0, 200.0, 40_000.0] {
            let n = 20_000;
            let draws: Vec<f64> = (0..n).map(|_| rng.poisson(lambda) as f64).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let se = (lambda / n as f64).sqrt();
            assert!((mean - lambda).abs() < 5.0 * se, "Poisson({lambda}) mean {mean}");
            assert!((var / lambda - 1.0).abs() < 0.1, "Poisson({lambda}) variance {var}");
        }
        let g: f64 = (0..20_000).map(|_| rng.gamma(3.5)).sum::<f64>() / 20_000.0;
        assert!((g - 3.5).abs() < 0.1, "Gamma(3.5) mean {g}");
        let geo: f64 = (0..20_000).map(|_| rng.geometric(0.1) as f64).sum::<f64>() / 20_000.0;
        assert!((geo - 9.0).abs() < 0.3, "Geometric(0.1) mean {geo}");
    }

    #[test]
    fn normal_quantile_inverts_the_tail() {
        for z in [-3.0, -1.0, 0.0, 0.5, 2.326, 4.0] {
            let p = 1.0 - normal_sf(z);
            assert!((normal_quantile(p) - z).abs() < 1e-5, "z {z}");
        }
        assert!((normal_sf(1.959_964) - 0.025).abs() < 1e-7);
    }

    #[test]
    fn the_schedule_intensity_inverts() {
        let sc = scenario(Kind::Healthy, 10.0, BASE_ERROR_RATE);
        assert_eq!(canary_intensity(&sc, 60.0), 600.0);
        assert_eq!(canary_intensity(&sc, 90.0), 1200.0, "the second step doubles the rate");
        for t in [1.0, 59.0, 60.0, 123.4, 299.0, 400.0] {
            assert!((time_of_intensity(&sc, canary_intensity(&sc, t)) - t).abs() < 1e-9, "t {t}");
        }
    }

    #[test]
    fn the_two_sample_limit_matches_a_hand_computation() {
        // θ1 = 0.1·0.01/(0.1·0.01 + 0.9·0.001) = 1/1.9; KL(θ1‖0.1) ≈ 0.57 nats per failure;
        // 0.019 failures per canary request; Wald's numerator 0.9·ln 19.
        let config = SprtConfig { p0: 0.001, p1: 0.01, alpha: 0.05, beta: 0.05 };
        let theta: f64 = 1.0 / 1.9;
        let kl = theta * (theta / 0.1).ln() + (1.0 - theta) * ((1.0 - theta) / 0.9).ln();
        let expected = 0.9 * 19f64.ln() / (0.019 * kl);
        assert!((two_sample_limit(&config, 0.1).unwrap() - expected).abs() < 1e-6);
        assert!((expected - 244.6).abs() < 0.5, "{expected}");
    }

    #[test]
    fn a_gross_regression_is_rolled_back_at_the_first_sequential_check() {
        let spec = Decider::Sequential.spec(1.0).unwrap().unwrap();
        let sc = scenario(Kind::Errors, 100.0, 0.05);
        for seed in 0..5 {
            let outcome = run_decide(&spec, &sc, &mut Rng::new(seed)).unwrap();
            assert!(matches!(outcome, Outcome::RolledBack { seconds, .. } if seconds == 10.0), "{outcome:?}");
        }
    }

    #[test]
    fn a_healthy_canary_is_promoted_when_the_schedule_completes() {
        for decider in [Decider::Sequential, Decider::Thresholds] {
            let spec = decider.spec(1.0).unwrap().unwrap();
            let sc = scenario(Kind::Healthy, 100.0, BASE_ERROR_RATE);
            let outcome = run_decide(&spec, &sc, &mut Rng::new(3)).unwrap();
            assert_eq!(outcome, Outcome::Promoted { seconds: 300.0 }, "{decider:?}");
        }
        let outcome =
            run_flagger(&scenario(Kind::Healthy, 100.0, BASE_ERROR_RATE), &mut Rng::new(3)).unwrap();
        assert_eq!(outcome, Outcome::Promoted { seconds: 300.0 });
    }

    #[test]
    fn flagger_rolls_back_on_the_tick_after_the_fifth_failed_check() {
        let outcome = run_flagger(&scenario(Kind::Errors, 100.0, 0.05), &mut Rng::new(4)).unwrap();
        assert!(matches!(outcome, Outcome::RolledBack { seconds, .. } if seconds == 360.0), "{outcome:?}");
    }

    #[test]
    fn quantiles_count_never_as_infinite() {
        let mut v = vec![3.0, f64::INFINITY, 1.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), 2.0);
        assert_eq!(quantile(&mut v, 0.9), f64::INFINITY);
        assert!((upper_bound_95(0, 1000) - 0.002_991).abs() < 1e-5, "{}", upper_bound_95(0, 1000));
    }
}
