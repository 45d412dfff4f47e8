//! Anytime-valid sequential tests comparing canary with primary.
//!
//! Pure functions: no I/O, no clock. The caller feeds one [`Batch`] per analysis window into a
//! small serialisable state kept in the Rollout status, and asks for a verdict after each
//! window. Every verdict may be acted on the moment it appears: the error guarantees hold
//! however often the caller looks (Ville's inequality), unlike a fixed-sample test that is
//! repeated at every window.
//!
//! - [`SequentialState`]: the two-sample test on failure counts (Lindon & Malek, NeurIPS 2022).
//!   Conditioned on a failure, it came from the canary with probability `ρ` (the canary's
//!   share of requests) when canary and primary fail at the same rate, and with probability
//!   `ρλ / (ρλ + 1 − ρ)` when the canary fails `λ` times as often. The e-value is a mixture
//!   likelihood ratio over `λ > 1` against `λ = 1`; the confidence sequence bounds `λ`, the
//!   failure-rate ratio canary / primary.
//! - [`LatencyState`]: the same test where a "failure" is a request slower than a bound, counted
//!   exactly from histogram buckets or bracketed conservatively from the p50/p90/p99 that the
//!   SMI Traffic Metrics API serves ([`slow_batch_from_quantiles`]).
//! - [`SprtConfig`] and [`SprtState`]: Wald's SPRT for a known baseline `p0` against `p1`, the
//!   information-limit benchmark.
//!
//! The maths and the status fields are described in `docs/src/reference/sequential-analysis.md`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default false-alarm rate α of the tests and of the confidence sequence.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Default margin: the largest tolerated failure-rate ratio canary / primary.
pub const DEFAULT_MARGIN: f64 = 1.5;
/// Default standard deviation τ of the normal prior on `ln λ`.
pub const DEFAULT_PRIOR_SCALE: f64 = 1.0;
/// Largest accepted prior scale τ.
pub const MAX_PRIOR_SCALE: f64 = 5.0;
/// Most share bins a [`SequentialState`] keeps; more distinct shares are merged.
pub const MAX_SHARE_BINS: usize = 20;
/// Prior grid points per prior standard deviation: the grid step is `τ / 20`.
pub const PRIOR_POINTS_PER_SCALE: i32 = 20;
/// The prior grid spans `±6τ` in `ln λ`.
pub const PRIOR_SCALES: i32 = 6;

/// `|ln λ|` beyond which estimates and confidence bounds are reported as unbounded.
const SEARCH_LIMIT: f64 = 50.0;
/// Bisection steps; each halves an interval of width at most `2 · SEARCH_LIMIT`.
const BISECTION_STEPS: usize = 200;

/// Why an input, a parameter or a stored state was refused.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SequentialError {
    /// A count that is negative, NaN or infinite.
    #[error("{field} must be a finite number >= 0, got {value}")]
    InvalidCount { field: &'static str, value: f64 },
    /// More failures (or slow requests) than requests on one side.
    #[error("{side} failures ({failures}) exceed {side} requests ({requests})")]
    FailuresExceedRequests { side: &'static str, failures: f64, requests: f64 },
    /// A configuration parameter out of its range.
    #[error("{name} = {value} is out of range: must be {expected}")]
    InvalidParameter { name: &'static str, value: f64, expected: &'static str },
    /// A state read back from the status that no sequence of `push` calls can produce.
    #[error("invalid sequential state: {0}")]
    InvalidState(String),
    /// A histogram that is not a valid cumulative Prometheus histogram.
    #[error("invalid histogram: {0}")]
    InvalidHistogram(String),
    /// Quantiles that are out of range or contradict each other.
    #[error("invalid quantiles: {0}")]
    InvalidQuantiles(String),
}

type Result<T> = std::result::Result<T, SequentialError>;

fn check_count(field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(SequentialError::InvalidCount { field, value })
    }
}

fn check_open_unit(name: &'static str, value: f64) -> Result<()> {
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(SequentialError::InvalidParameter { name, value, expected: "strictly between 0 and 1" })
    }
}

/// One analysis window's counts, e.g. `increase(...[window])` from Prometheus or the SMI
/// Traffic Metrics API. Counts are real numbers (fractional counts are fine).
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// Requests served by the canary in the window.
    pub canary_requests: f64,
    /// Of those, failed requests (or, for latency, requests slower than the bound).
    pub canary_failures: f64,
    /// Requests served by the primary in the window.
    pub primary_requests: f64,
    /// Of those, failed requests (or slow requests).
    pub primary_failures: f64,
}

impl Batch {
    /// A validated batch.
    pub fn new(
        canary_requests: f64,
        canary_failures: f64,
        primary_requests: f64,
        primary_failures: f64,
    ) -> Result<Self> {
        let batch = Batch { canary_requests, canary_failures, primary_requests, primary_failures };
        batch.validate()?;
        Ok(batch)
    }

    /// Every count is finite and `>= 0`, and failures do not exceed requests on either side.
    pub fn validate(&self) -> Result<()> {
        check_count("canaryRequests", self.canary_requests)?;
        check_count("canaryFailures", self.canary_failures)?;
        check_count("primaryRequests", self.primary_requests)?;
        check_count("primaryFailures", self.primary_failures)?;
        if self.canary_failures > self.canary_requests {
            return Err(SequentialError::FailuresExceedRequests {
                side: "canary",
                failures: self.canary_failures,
                requests: self.canary_requests,
            });
        }
        if self.primary_failures > self.primary_requests {
            return Err(SequentialError::FailuresExceedRequests {
                side: "primary",
                failures: self.primary_failures,
                requests: self.primary_requests,
            });
        }
        Ok(())
    }

    /// The canary's share of requests `ρ = canary / (canary + primary)`, or `None` without
    /// traffic. Assumes a validated batch.
    pub fn canary_share(&self) -> Option<f64> {
        let total = self.canary_requests + self.primary_requests;
        (total > 0.0).then(|| (self.canary_requests / total).clamp(0.0, 1.0))
    }
}

/// Parameters of the two-sample test and its confidence sequence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialConfig {
    /// False-alarm rate α, in (0, 1): the probability, over the whole rollout however often it
    /// is checked, of a `Regression` verdict for a canary that fails no more often than the
    /// primary, and of a `NoRegression` verdict for a canary whose failure-rate ratio is at
    /// least `margin`. Default 0.05.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// The largest tolerated regression, as a failure-rate ratio canary / primary (> 1). 1.5
    /// means "the canary may fail up to 50 % more often than the primary". `NoRegression` needs
    /// the confidence sequence's upper bound below it. Default 1.5.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Standard deviation τ of the normal prior on `ln λ`, in (0, 5]. The default 1 puts half
    /// of the alternative's prior mass on ratios up to 2 and 95 % up to 7. Default 1.
    #[serde(default = "default_prior_scale")]
    pub prior_scale: f64,
}

fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}
fn default_margin() -> f64 {
    DEFAULT_MARGIN
}
fn default_prior_scale() -> f64 {
    DEFAULT_PRIOR_SCALE
}

impl Default for SequentialConfig {
    fn default() -> Self {
        SequentialConfig { alpha: DEFAULT_ALPHA, margin: DEFAULT_MARGIN, prior_scale: DEFAULT_PRIOR_SCALE }
    }
}

impl SequentialConfig {
    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<()> {
        check_open_unit("alpha", self.alpha)?;
        if !(self.margin.is_finite() && self.margin > 1.0) {
            return Err(SequentialError::InvalidParameter {
                name: "margin",
                value: self.margin,
                expected: "a finite rate ratio greater than 1",
            });
        }
        if !(self.prior_scale > 0.0 && self.prior_scale <= MAX_PRIOR_SCALE) {
            return Err(SequentialError::InvalidParameter {
                name: "priorScale",
                value: self.prior_scale,
                expected: "greater than 0 and at most 5",
            });
        }
        Ok(())
    }
}

/// What the test says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SequentialVerdict {
    /// Evidence that the canary is worse than the primary: roll back.
    Regression,
    /// Evidence that the canary is not worse than the primary by more than the margin.
    NoRegression,
    /// Not enough evidence either way yet.
    Continue,
}

/// Sufficient statistics of the failures seen at one canary share, or at a narrow range of
/// shares once bins have been merged.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareBin {
    /// Failure-weighted mean canary share of the batches in the bin.
    pub share: f64,
    /// Smallest canary share in the bin.
    pub share_min: f64,
    /// Largest canary share in the bin.
    pub share_max: f64,
    /// Canary failures in the bin.
    pub canary_failures: f64,
    /// Primary failures in the bin.
    pub primary_failures: f64,
}

impl ShareBin {
    fn failures(&self) -> f64 {
        self.canary_failures + self.primary_failures
    }

    /// `F · (ρ̄ − ρmin)(ρmax − ρ̄)`: bounds the weighted variance of the shares in the bin
    /// (Bhatia–Davis) and so the error that merging introduced.
    fn spread(&self) -> f64 {
        self.failures() * (self.share - self.share_min) * (self.share_max - self.share)
    }

    fn merged(&self, other: &ShareBin) -> ShareBin {
        let (fa, fb) = (self.failures(), other.failures());
        let share_min = self.share_min.min(other.share_min);
        let share_max = self.share_max.max(other.share_max);
        let share = if fa + fb > 0.0 {
            (fa * self.share + fb * other.share) / (fa + fb)
        } else {
            0.5 * (self.share + other.share)
        };
        ShareBin {
            share: share.clamp(share_min, share_max),
            share_min,
            share_max,
            canary_failures: self.canary_failures + other.canary_failures,
            primary_failures: self.primary_failures + other.primary_failures,
        }
    }
}

/// The two-sample test's state: totals and failures per canary share. It lives in the
/// Rollout status; [`SequentialState::push`] adds a window, [`SequentialState::evaluate`]
/// gives the verdict. At most [`MAX_SHARE_BINS`] bins are kept: the closest shares are merged,
/// which only ever makes the e-value smaller and the confidence interval wider.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialState {
    /// Windows pushed.
    #[serde(default)]
    pub batches: i64,
    /// Canary requests over all windows.
    #[serde(default)]
    pub canary_requests: f64,
    /// Canary failures over all windows.
    #[serde(default)]
    pub canary_failures: f64,
    /// Primary requests over all windows.
    #[serde(default)]
    pub primary_requests: f64,
    /// Primary failures over all windows.
    #[serde(default)]
    pub primary_failures: f64,
    /// Failures by canary share, sorted by share. Windows without failures, and windows where
    /// one side had no traffic, carry no information about the ratio and add no bin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareBin>,
}

/// The result of [`SequentialState::evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// Regression, NoRegression or Continue.
    pub verdict: SequentialVerdict,
    /// The e-value: evidence that the canary fails more often than the primary. `Regression`
    /// when it reaches `threshold`. Saturates at the largest finite `f64`.
    pub e_value: f64,
    /// Natural logarithm of the e-value (never saturates).
    pub log_e_value: f64,
    /// `1 / α`.
    pub threshold: f64,
    /// Maximum-likelihood failure-rate ratio canary / primary; absent without failures, or
    /// when every failure was the canary's (the estimate is then unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_estimate: Option<f64>,
    /// Lower end of the (1 − α) confidence sequence for the ratio; 0 when unbounded.
    pub ratio_lower: f64,
    /// Upper end of the confidence sequence for the ratio; absent when unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_upper: Option<f64>,
    /// The configured margin, for display next to `ratioUpper`.
    pub margin: f64,
    /// Windows pushed.
    pub batches: i64,
    /// Canary requests over all windows.
    pub canary_requests: f64,
    /// Canary failures over all windows.
    pub canary_failures: f64,
    /// Primary requests over all windows.
    pub primary_requests: f64,
    /// Primary failures over all windows.
    pub primary_failures: f64,
}

impl SequentialState {
    /// An empty state.
    pub fn new() -> Self {
        SequentialState::default()
    }

    /// Adds one window. On error the state is left unchanged.
    pub fn push(&mut self, batch: &Batch) -> Result<()> {
        batch.validate()?;
        self.check()?;
        let canary_requests = self.canary_requests + batch.canary_requests;
        let canary_failures = self.canary_failures + batch.canary_failures;
        let primary_requests = self.primary_requests + batch.primary_requests;
        let primary_failures = self.primary_failures + batch.primary_failures;
        for (field, value) in [
            ("canaryRequests", canary_requests),
            ("canaryFailures", canary_failures),
            ("primaryRequests", primary_requests),
            ("primaryFailures", primary_failures),
        ] {
            check_count(field, value)?;
        }
        self.batches = self.batches.saturating_add(1);
        self.canary_requests = canary_requests;
        self.canary_failures = canary_failures;
        self.primary_requests = primary_requests;
        self.primary_failures = primary_failures;
        let failures = batch.canary_failures + batch.primary_failures;
        if let Some(share) = batch.canary_share()
            && failures > 0.0
            && share > 0.0
            && share < 1.0
        {
            self.add_to_bins(ShareBin {
                share,
                share_min: share,
                share_max: share,
                canary_failures: batch.canary_failures,
                primary_failures: batch.primary_failures,
            });
        }
        Ok(())
    }

    fn add_to_bins(&mut self, bin: ShareBin) {
        if let Some(existing) =
            self.shares.iter_mut().find(|b| b.share_min <= bin.share && bin.share <= b.share_max)
        {
            *existing = existing.merged(&bin);
            return;
        }
        let at = self.shares.partition_point(|b| b.share_max < bin.share);
        self.shares.insert(at, bin);
        while self.shares.len() > MAX_SHARE_BINS {
            let mut best: Option<(usize, f64)> = None;
            for i in 0..self.shares.len() - 1 {
                let (a, b) = (&self.shares[i], &self.shares[i + 1]);
                let cost = a.merged(b).spread() - a.spread() - b.spread();
                if best.is_none_or(|(_, c)| cost < c) {
                    best = Some((i, cost));
                }
            }
            let Some((i, _)) = best else { break };
            let next = self.shares.remove(i + 1);
            self.shares[i] = self.shares[i].merged(&next);
        }
    }

    /// Refuses a state that `push` cannot produce (e.g. a hand-edited status).
    fn check(&self) -> Result<()> {
        let bad = |what: String| Err(SequentialError::InvalidState(what));
        if self.batches < 0 {
            return bad(format!("batches = {} is negative", self.batches));
        }
        for (field, value) in [
            ("canaryRequests", self.canary_requests),
            ("canaryFailures", self.canary_failures),
            ("primaryRequests", self.primary_requests),
            ("primaryFailures", self.primary_failures),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return bad(format!("{field} = {value} is not a finite number >= 0"));
            }
        }
        if self.shares.len() > MAX_SHARE_BINS {
            return bad(format!("{} share bins, at most {MAX_SHARE_BINS}", self.shares.len()));
        }
        for (i, b) in self.shares.iter().enumerate() {
            let counts_ok =
                [b.canary_failures, b.primary_failures].iter().all(|v| v.is_finite() && *v >= 0.0);
            let shares_ok =
                b.share_min > 0.0 && b.share_min <= b.share && b.share <= b.share_max && b.share_max < 1.0;
            if !(counts_ok && shares_ok) {
                return bad(format!("share bin {i} is inconsistent: {b:?}"));
            }
        }
        Ok(())
    }

    /// Natural logarithm of the e-value alone: cheaper than [`SequentialState::evaluate`]. The
    /// test rejects "canary no worse than primary" when it reaches `ln(1/α)`.
    pub fn log_e_value(&self, config: &SequentialConfig) -> Result<f64> {
        config.validate()?;
        self.check()?;
        let prior = Prior::new(config.prior_scale);
        let lower_ll = Model::new(&self.shares).log_lr_lower_on(&prior);
        Ok(log_sum_exp(prior.log_w_one.iter().zip(&lower_ll[prior.zero..]).map(|(w, l)| w + l)))
    }

    /// The verdict, e-value, estimate and confidence sequence for the ratio.
    pub fn evaluate(&self, config: &SequentialConfig) -> Result<Evaluation> {
        config.validate()?;
        self.check()?;
        let prior = Prior::new(config.prior_scale);
        let model = Model::new(&self.shares);
        let lower_ll = model.log_lr_lower_on(&prior);
        let log_e_value =
            log_sum_exp(prior.log_w_one.iter().zip(&lower_ll[prior.zero..]).map(|(w, l)| w + l));
        let log_mixture = log_sum_exp(prior.log_w_two.iter().zip(&lower_ll).map(|(w, l)| w + l));
        let (ratio_lower, ratio_upper) = model.confidence_interval(log_mixture + config.alpha.ln());
        let threshold = 1.0 / config.alpha;
        let verdict = if log_e_value >= -config.alpha.ln() {
            SequentialVerdict::Regression
        } else if ratio_upper.is_some_and(|u| u < config.margin) {
            SequentialVerdict::NoRegression
        } else {
            SequentialVerdict::Continue
        };
        Ok(Evaluation {
            verdict,
            e_value: log_e_value.exp().min(f64::MAX),
            log_e_value,
            threshold,
            ratio_estimate: model.estimate(),
            ratio_lower,
            ratio_upper,
            margin: config.margin,
            batches: self.batches,
            canary_requests: self.canary_requests,
            canary_failures: self.canary_failures,
            primary_requests: self.primary_requests,
            primary_failures: self.primary_failures,
        })
    }
}

/// `ln(1 − ρ + ρ·e^t)` for `ρ` in [0, 1] and `|t| <= SEARCH_LIMIT`, without cancellation.
fn log_mix(rho: f64, t: f64) -> f64 {
    log_mix_with(rho, t.exp(), t.exp_m1())
}

/// [`log_mix`] from precomputed `e^t` and `e^t − 1`.
fn log_mix_with(rho: f64, exp: f64, exp_m1: f64) -> f64 {
    let x = rho * exp_m1;
    if x > -0.5 { x.ln_1p() } else { ((1.0 - rho) + rho * exp).ln() }
}

/// Derivative of [`log_mix`] in `t`: `ρe^t / (1 − ρ + ρe^t)`.
fn log_mix_slope(rho: f64, t: f64) -> f64 {
    if t > 0.0 {
        rho / (rho + (1.0 - rho) * (-t).exp())
    } else {
        let e = rho * t.exp();
        e / (1.0 - rho + e)
    }
}

/// `ln Σ exp(x)`, `-∞` for no terms.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// The discretised prior: a normal `N(0, τ²)` on `t = ln λ` at `t_k = k·τ/20`, `|k| ≤ 120`.
struct Prior {
    t: Vec<f64>,
    /// Index of `t = 0` in `t`.
    zero: usize,
    /// Two-sided weights over all of `t` (the confidence sequence's mixture).
    log_w_two: Vec<f64>,
    /// One-sided weights over `t[zero..]`, half weight at `t = 0` (the test's mixture).
    log_w_one: Vec<f64>,
    /// `e^t` at each grid point.
    exp: Vec<f64>,
    /// `e^t − 1` at each grid point.
    exp_m1: Vec<f64>,
}

impl Prior {
    fn new(scale: f64) -> Prior {
        let k = PRIOR_POINTS_PER_SCALE * PRIOR_SCALES;
        let step = 1.0 / f64::from(PRIOR_POINTS_PER_SCALE);
        let z: Vec<f64> = (-k..=k).map(|i| f64::from(i) * step).collect();
        let t: Vec<f64> = z.iter().map(|z| z * scale).collect();
        let exp = t.iter().map(|t| t.exp()).collect();
        let exp_m1 = t.iter().map(|t| t.exp_m1()).collect();
        let density: Vec<f64> = z.iter().map(|z| -0.5 * z * z).collect();
        let norm_two = log_sum_exp(density.iter().copied());
        let log_w_two = density.iter().map(|d| d - norm_two).collect();
        let zero = usize::try_from(k).unwrap_or(0);
        let half: Vec<f64> = density[zero..]
            .iter()
            .enumerate()
            .map(|(i, d)| if i == 0 { d + 0.5f64.ln() } else { *d })
            .collect();
        let norm_one = log_sum_exp(half.iter().copied());
        let log_w_one = half.iter().map(|d| d - norm_one).collect();
        Prior { t, zero, log_w_two, log_w_one, exp, exp_m1 }
    }
}

/// Share bin prepared for likelihood evaluation.
struct ModelBin {
    failures: f64,
    mean: f64,
    low: f64,
    high: f64,
    /// Weight of `high` in the chord through `(low, high)` at `mean`.
    chord: f64,
}

/// The conditional likelihood ratio `L(λ)/L(1) = λ^C / Π_b (1 − ρ_b + ρ_b λ)^{F_b}` as a
/// function of `t = ln λ`, with two bounds for merged bins: replacing each bin's shares by
/// their failure-weighted mean gives a lower bound (Jensen: `ln(1 − ρ + ρλ)` is concave in
/// `ρ`), the chord through the bin's extreme shares an upper bound. For unmerged bins both are
/// exact.
struct Model {
    canary_failures: f64,
    primary_failures: f64,
    bins: Vec<ModelBin>,
}

impl Model {
    fn new(shares: &[ShareBin]) -> Model {
        let bins = shares
            .iter()
            .filter(|b| b.failures() > 0.0)
            .map(|b| ModelBin {
                failures: b.failures(),
                mean: b.share,
                low: b.share_min,
                high: b.share_max,
                chord: if b.share_max > b.share_min {
                    ((b.share - b.share_min) / (b.share_max - b.share_min)).clamp(0.0, 1.0)
                } else {
                    0.0
                },
            })
            .collect();
        Model {
            canary_failures: shares.iter().map(|b| b.canary_failures).sum(),
            primary_failures: shares.iter().map(|b| b.primary_failures).sum(),
            bins,
        }
    }

    #[cfg(test)]
    fn log_lr_lower(&self, t: f64) -> f64 {
        self.canary_failures * t - self.bins.iter().map(|b| b.failures * log_mix(b.mean, t)).sum::<f64>()
    }

    /// [`Model::log_lr_lower`] at every grid point, with one logarithm per bin and point.
    fn log_lr_lower_on(&self, prior: &Prior) -> Vec<f64> {
        (0..prior.t.len())
            .map(|i| {
                let (exp, exp_m1) = (prior.exp[i], prior.exp_m1[i]);
                self.canary_failures * prior.t[i]
                    - self.bins.iter().map(|b| b.failures * log_mix_with(b.mean, exp, exp_m1)).sum::<f64>()
            })
            .collect()
    }

    fn log_lr_upper(&self, t: f64) -> f64 {
        self.canary_failures * t
            - self
                .bins
                .iter()
                .map(|b| b.failures * ((1.0 - b.chord) * log_mix(b.low, t) + b.chord * log_mix(b.high, t)))
                .sum::<f64>()
    }

    fn slope_lower(&self, t: f64) -> f64 {
        self.canary_failures - self.bins.iter().map(|b| b.failures * log_mix_slope(b.mean, t)).sum::<f64>()
    }

    fn slope_upper(&self, t: f64) -> f64 {
        self.canary_failures
            - self
                .bins
                .iter()
                .map(|b| {
                    b.failures
                        * ((1.0 - b.chord) * log_mix_slope(b.low, t) + b.chord * log_mix_slope(b.high, t))
                })
                .sum::<f64>()
    }

    /// Maximum-likelihood ratio, from the mean-share likelihood.
    fn estimate(&self) -> Option<f64> {
        if self.bins.is_empty() || self.primary_failures <= 0.0 {
            return None;
        }
        if self.canary_failures <= 0.0 {
            return Some(0.0);
        }
        Some(argmax(&|t| self.slope_lower(t)).exp())
    }

    /// `{λ : upper log-likelihood ratio > log_level}`, an interval because the log-likelihood
    /// is concave in `ln λ`. Each end is reported on its excluded side, so the interval
    /// contains the exact one.
    fn confidence_interval(&self, log_level: f64) -> (f64, Option<f64>) {
        let f = |t: f64| self.log_lr_upper(t);
        let peak = argmax(&|t| self.slope_upper(t));
        if f(peak) <= log_level {
            return (peak.exp(), Some(peak.exp()));
        }
        let lower = if f(-SEARCH_LIMIT) > log_level {
            0.0
        } else {
            boundary(&f, peak, -SEARCH_LIMIT, log_level).exp()
        };
        let upper = (f(SEARCH_LIMIT) <= log_level).then(|| boundary(&f, peak, SEARCH_LIMIT, log_level).exp());
        (lower, upper)
    }
}

/// The maximiser over `[-SEARCH_LIMIT, SEARCH_LIMIT]` of a concave function, given its
/// (decreasing) derivative.
fn argmax(slope: &dyn Fn(f64) -> f64) -> f64 {
    let (mut a, mut b) = (-SEARCH_LIMIT, SEARCH_LIMIT);
    if slope(a) <= 0.0 {
        return a;
    }
    if slope(b) >= 0.0 {
        return b;
    }
    for _ in 0..BISECTION_STEPS {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        if slope(m) > 0.0 { a = m } else { b = m }
    }
    0.5 * (a + b)
}

/// Bisection between `inside` (`f > level`) and `outside` (`f <= level`); returns the last
/// point found outside.
fn boundary(f: &dyn Fn(f64) -> f64, inside: f64, outside: f64, level: f64) -> f64 {
    let (mut i, mut o) = (inside, outside);
    for _ in 0..BISECTION_STEPS {
        let m = 0.5 * (i + o);
        if m == i || m == o {
            break;
        }
        if f(m) > level { i = m } else { o = m }
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------------

/// One cumulative bucket of a Prometheus histogram over a window: `count` requests took at
/// most `le` (e.g. `increase(..._bucket{le="0.5"}[W])`). The last bucket is `le = +Inf`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Upper bound of the bucket, in the histogram's unit.
    pub le: f64,
    /// Requests at or below `le`.
    pub count: f64,
}

/// Checks a cumulative histogram; returns (total, count at or below `bound`).
fn histogram_counts(side: &str, buckets: &[Bucket], bound: f64) -> Result<(f64, f64)> {
    let bad = |what: String| Err(SequentialError::InvalidHistogram(format!("{side}: {what}")));
    let Some(last) = buckets.last() else { return bad("no buckets".into()) };
    if last.le != f64::INFINITY {
        return bad(format!("the last bucket must be le=+Inf, got {}", last.le));
    }
    for (i, b) in buckets.iter().enumerate() {
        if b.le.is_nan() {
            return bad(format!("bucket {i} has le=NaN"));
        }
        if i > 0 && b.le <= buckets[i - 1].le {
            return bad(format!("bucket bounds must increase, got {} after {}", b.le, buckets[i - 1].le));
        }
        if !(b.count.is_finite() && b.count >= 0.0) {
            return bad(format!("bucket le={} has count {}", b.le, b.count));
        }
    }
    let Some(at_bound) = buckets.iter().find(|b| b.le == bound) else {
        return bad(format!("no bucket with le={bound}"));
    };
    Ok((last.count, at_bound.count.min(last.count)))
}

/// Turns a window's canary and primary histograms into a [`Batch`] whose "failures" are the
/// requests slower than `bound`, which must be a finite bucket boundary present in both.
/// Requests come from the `+Inf` bucket. Bucket counts from `increase()` may be slightly
/// non-monotone; the slow count is clamped to `[0, requests]`.
pub fn slow_batch_from_histograms(canary: &[Bucket], primary: &[Bucket], bound: f64) -> Result<Batch> {
    if !bound.is_finite() {
        return Err(SequentialError::InvalidParameter {
            name: "bound",
            value: bound,
            expected: "a finite bucket boundary",
        });
    }
    let (canary_requests, canary_fast) = histogram_counts("canary", canary, bound)?;
    let (primary_requests, primary_fast) = histogram_counts("primary", primary, bound)?;
    Batch::new(
        canary_requests,
        (canary_requests - canary_fast).max(0.0),
        primary_requests,
        (primary_requests - primary_fast).max(0.0),
    )
}

/// The largest finite bucket boundary at or below `limit`: the bound to classify against when
/// a latency gate's limit (e.g. `maxMs`) falls between buckets. `None` if every boundary is
/// above it.
pub fn bucket_bound_at_most(buckets: &[Bucket], limit: f64) -> Option<f64> {
    buckets
        .iter()
        .map(|b| b.le)
        .filter(|le| le.is_finite() && *le <= limit)
        .fold(None, |acc, le| Some(acc.map_or(le, |a: f64| a.max(le))))
}

/// One side's latency summary over a window, as the SMI Traffic Metrics API serves it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantileWindow<'a> {
    /// Requests in the window (`success_count + failure_count`).
    pub requests: f64,
    /// `(quantile, latency)` pairs, e.g. `[(0.5, p50), (0.9, p90), (0.99, p99)]`; may be empty
    /// when `requests` is 0.
    pub quantiles: &'a [(f64, f64)],
}

/// Bounds on the fraction of requests slower than `bound` implied by quantiles alone: a
/// quantile `q` above the bound means at least `1 − q` are slower; at or below it, at most
/// `1 − q`. Returns `(lower, upper)`.
pub fn slow_fraction_bounds(quantiles: &[(f64, f64)], bound: f64) -> Result<(f64, f64)> {
    if !bound.is_finite() {
        return Err(SequentialError::InvalidParameter { name: "bound", value: bound, expected: "finite" });
    }
    let (mut lower, mut upper) = (0.0f64, 1.0f64);
    for &(q, value) in quantiles {
        if !(q > 0.0 && q < 1.0) {
            return Err(SequentialError::InvalidQuantiles(format!("quantile {q} is not in (0, 1)")));
        }
        if !value.is_finite() {
            return Err(SequentialError::InvalidQuantiles(format!("quantile {q} has value {value}")));
        }
        if value > bound {
            lower = lower.max(1.0 - q);
        } else {
            upper = upper.min(1.0 - q);
        }
    }
    if lower > upper {
        return Err(SequentialError::InvalidQuantiles(format!(
            "quantiles are not monotone around the bound {bound}: {quantiles:?}"
        )));
    }
    Ok((lower, upper))
}

/// Turns SMI quantile summaries into a [`Batch`] of slow requests, conservatively for the
/// regression test: the canary gets the fewest slow requests its quantiles allow, the primary
/// the most. The e-value then never exceeds the one exact slow counts would give, so
/// `Regression` keeps its α guarantee. The ratio's confidence sequence is biased low by the same
/// choice, so `NoRegression` must not be drawn from such batches ([`LatencyState`] does not
/// report it once it has counted one).
pub fn slow_batch_from_quantiles(
    canary: &QuantileWindow<'_>,
    primary: &QuantileWindow<'_>,
    bound: f64,
) -> Result<Batch> {
    check_count("canaryRequests", canary.requests)?;
    check_count("primaryRequests", primary.requests)?;
    let canary_slow = if canary.requests > 0.0 {
        slow_fraction_bounds(canary.quantiles, bound)?.0 * canary.requests
    } else {
        0.0
    };
    let primary_slow = if primary.requests > 0.0 {
        slow_fraction_bounds(primary.quantiles, bound)?.1 * primary.requests
    } else {
        0.0
    };
    Batch::new(canary.requests, canary_slow, primary.requests, primary_slow)
}

/// The latency test: the two-sample test where a "failure" is a request slower than `bound`.
/// One-sided: a canary that is faster never triggers `Regression`.
///
/// Windows from histograms ([`LatencyState::push_histograms`]) give exact slow counts. Windows
/// from SMI quantiles ([`LatencyState::push_quantiles`]) only bracket them, conservatively for
/// the regression test ([`slow_batch_from_quantiles`]); once one such window is counted, only
/// `Regression` is sound, so `evaluate` reports `Continue` where the exact test would say
/// `NoRegression`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyState {
    /// The latency that separates fast from slow: a bucket boundary for histograms, in the
    /// quantiles' unit (ms for SMI) otherwise.
    pub bound: f64,
    /// Every window so far came from histograms.
    #[serde(default)]
    pub exact: bool,
    /// The two-sample state; its "failures" are slow requests.
    #[serde(default)]
    pub slow: SequentialState,
}

impl LatencyState {
    /// An empty state classifying against `bound`, which must be finite.
    pub fn new(bound: f64) -> Result<Self> {
        if !bound.is_finite() {
            return Err(SequentialError::InvalidParameter {
                name: "bound",
                value: bound,
                expected: "finite",
            });
        }
        Ok(LatencyState { bound, exact: true, slow: SequentialState::new() })
    }

    /// Adds one window's histograms. On error the state is left unchanged.
    pub fn push_histograms(&mut self, canary: &[Bucket], primary: &[Bucket]) -> Result<()> {
        let batch = slow_batch_from_histograms(canary, primary, self.bound)?;
        self.slow.push(&batch)
    }

    /// Adds one window of SMI quantiles. On error the state is left unchanged.
    pub fn push_quantiles(
        &mut self,
        canary: &QuantileWindow<'_>,
        primary: &QuantileWindow<'_>,
    ) -> Result<()> {
        let batch = slow_batch_from_quantiles(canary, primary, self.bound)?;
        self.slow.push(&batch)?;
        self.exact = false;
        Ok(())
    }

    /// As [`SequentialState::evaluate`]; the ratio is that of the slow fractions. Without exact
    /// counts, `NoRegression` is replaced by `Continue`.
    pub fn evaluate(&self, config: &SequentialConfig) -> Result<Evaluation> {
        if !self.bound.is_finite() {
            return Err(SequentialError::InvalidState(format!("bound = {} is not finite", self.bound)));
        }
        let mut evaluation = self.slow.evaluate(config)?;
        if !self.exact && evaluation.verdict == SequentialVerdict::NoRegression {
            evaluation.verdict = SequentialVerdict::Continue;
        }
        Ok(evaluation)
    }
}

// ---------------------------------------------------------------------------------------------
// Wald SPRT
// ---------------------------------------------------------------------------------------------

/// Wald's sequential probability ratio test of the canary's failure rate, `p0` (healthy)
/// against `p1` (regressed), both known. The benchmark for how fast any test can decide.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SprtConfig {
    /// Failure rate of a healthy canary, in (0, 1).
    pub p0: f64,
    /// Failure rate of a regressed canary, in (p0, 1).
    pub p1: f64,
    /// Probability of `Regression` when the rate is `p0`.
    pub alpha: f64,
    /// Probability of `NoRegression` when the rate is `p1`.
    pub beta: f64,
}

/// Bernoulli Kullback–Leibler divergence `KL(p ‖ q)`.
fn bernoulli_kl(p: f64, q: f64) -> f64 {
    p * (p / q).ln() + (1.0 - p) * ((-p).ln_1p() - (-q).ln_1p())
}

impl SprtConfig {
    /// A validated configuration.
    pub fn new(p0: f64, p1: f64, alpha: f64, beta: f64) -> Result<Self> {
        let config = SprtConfig { p0, p1, alpha, beta };
        config.validate()?;
        Ok(config)
    }

    /// `0 < p0 < p1 < 1`, α and β in (0, 1) with `α + β < 1`.
    pub fn validate(&self) -> Result<()> {
        check_open_unit("p0", self.p0)?;
        check_open_unit("p1", self.p1)?;
        if self.p1 <= self.p0 {
            return Err(SequentialError::InvalidParameter {
                name: "p1",
                value: self.p1,
                expected: "greater than p0",
            });
        }
        check_open_unit("alpha", self.alpha)?;
        check_open_unit("beta", self.beta)?;
        if self.alpha + self.beta >= 1.0 {
            return Err(SequentialError::InvalidParameter {
                name: "beta",
                value: self.beta,
                expected: "less than 1 - alpha",
            });
        }
        Ok(())
    }

    /// `A = ln((1 − β)/α)`: `Regression` when the log-likelihood ratio reaches it.
    pub fn upper_threshold(&self) -> Result<f64> {
        self.validate()?;
        Ok(((1.0 - self.beta) / self.alpha).ln())
    }

    /// `B = ln(β/(1 − α))`: `NoRegression` when the log-likelihood ratio falls to it.
    pub fn lower_threshold(&self) -> Result<f64> {
        self.validate()?;
        Ok((self.beta / (1.0 - self.alpha)).ln())
    }

    /// `x·ln(p1/p0) + (n − x)·ln((1 − p1)/(1 − p0))` for `n` requests with `x` failures.
    pub fn log_likelihood_ratio(&self, requests: f64, failures: f64) -> Result<f64> {
        self.validate()?;
        check_count("requests", requests)?;
        check_count("failures", failures)?;
        if failures > requests {
            return Err(SequentialError::FailuresExceedRequests { side: "canary", failures, requests });
        }
        Ok(failures * (self.p1 / self.p0).ln()
            + (requests - failures) * ((-self.p1).ln_1p() - (-self.p0).ln_1p()))
    }

    /// `KL(p1 ‖ p0)`, the mean log-likelihood ratio per request under `p1`.
    pub fn kl_h1_h0(&self) -> Result<f64> {
        self.validate()?;
        Ok(bernoulli_kl(self.p1, self.p0))
    }

    /// `KL(p0 ‖ p1)`; the mean log-likelihood ratio per request under `p0` is its negative.
    pub fn kl_h0_h1(&self) -> Result<f64> {
        self.validate()?;
        Ok(bernoulli_kl(self.p0, self.p1))
    }

    /// Wald's approximation of the expected number of requests to decide when the rate is
    /// `p1`: `((1 − β)A + βB) / KL(p1 ‖ p0)`.
    pub fn expected_sample_size_h1(&self) -> Result<f64> {
        let (a, b) = (self.upper_threshold()?, self.lower_threshold()?);
        Ok(((1.0 - self.beta) * a + self.beta * b) / self.kl_h1_h0()?)
    }

    /// Wald's approximation of the expected number of requests to decide when the rate is
    /// `p0`: `(αA + (1 − α)B) / −KL(p0 ‖ p1)`.
    pub fn expected_sample_size_h0(&self) -> Result<f64> {
        let (a, b) = (self.upper_threshold()?, self.lower_threshold()?);
        Ok((self.alpha * a + (1.0 - self.alpha) * b) / -self.kl_h0_h1()?)
    }

    /// The fewest requests `n` for which a one-sided exact binomial test at a fixed sample
    /// size has size at most α under `p0` and power at least `1 − β` under `p1`; `None` if
    /// no `n <= max_requests` does. For comparison with the SPRT's expected sample sizes.
    pub fn fixed_sample_size(&self, max_requests: u64) -> Result<Option<u64>> {
        self.validate()?;
        let odds0 = (self.p0 / (1.0 - self.p0)).ln();
        let odds1 = (self.p1 / (1.0 - self.p1)).ln();
        for n in 1..=max_requests {
            let nf = n as f64;
            // Walk up the p0 lower tail until the upper tail P0(X >= c) is at most alpha.
            let (mut log_p0, mut log_p1) = (nf * (-self.p0).ln_1p(), nf * (-self.p1).ln_1p());
            let (mut cdf0, mut cdf1) = (0.0f64, 0.0f64);
            let mut c = 0u64;
            while c <= n && 1.0 - cdf0 > self.alpha {
                cdf0 += log_p0.exp();
                cdf1 += log_p1.exp();
                let k = c as f64;
                let step = ((nf - k) / (k + 1.0)).ln();
                log_p0 += step + odds0;
                log_p1 += step + odds1;
                c += 1;
            }
            if c <= n && 1.0 - cdf1 >= 1.0 - self.beta {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }
}

/// The SPRT's state: the canary's totals (the log-likelihood ratio is linear in them).
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SprtState {
    /// Windows pushed.
    #[serde(default)]
    pub batches: i64,
    /// Canary requests.
    #[serde(default)]
    pub requests: f64,
    /// Canary failures.
    #[serde(default)]
    pub failures: f64,
}

/// The result of [`SprtState::evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SprtEvaluation {
    /// Regression (LLR ≥ A), NoRegression (LLR ≤ B) or Continue.
    pub verdict: SequentialVerdict,
    /// The log-likelihood ratio of `p1` against `p0`.
    pub log_likelihood_ratio: f64,
    /// A.
    pub upper_threshold: f64,
    /// B.
    pub lower_threshold: f64,
    /// Windows pushed.
    pub batches: i64,
    /// Canary requests.
    pub requests: f64,
    /// Canary failures.
    pub failures: f64,
}

impl SprtState {
    /// An empty state.
    pub fn new() -> Self {
        SprtState::default()
    }

    /// Adds one window of canary requests and failures. On error the state is left unchanged.
    pub fn push(&mut self, requests: f64, failures: f64) -> Result<()> {
        check_count("requests", requests)?;
        check_count("failures", failures)?;
        if failures > requests {
            return Err(SequentialError::FailuresExceedRequests { side: "canary", failures, requests });
        }
        let (total_requests, total_failures) = (self.requests + requests, self.failures + failures);
        check_count("requests", total_requests)?;
        check_count("failures", total_failures)?;
        self.batches = self.batches.saturating_add(1);
        self.requests = total_requests;
        self.failures = total_failures;
        Ok(())
    }

    /// Adds the canary side of a batch (the SPRT ignores the primary).
    pub fn push_batch(&mut self, batch: &Batch) -> Result<()> {
        batch.validate()?;
        self.push(batch.canary_requests, batch.canary_failures)
    }

    /// The verdict. Act on the first one that is not `Continue`: Wald's error bounds are for
    /// stopping there.
    pub fn evaluate(&self, config: &SprtConfig) -> Result<SprtEvaluation> {
        if self.batches < 0 || self.failures > self.requests {
            return Err(SequentialError::InvalidState(format!("inconsistent SPRT state {self:?}")));
        }
        let llr = config.log_likelihood_ratio(self.requests, self.failures)?;
        let (upper, lower) = (config.upper_threshold()?, config.lower_threshold()?);
        let verdict = if llr >= upper {
            SequentialVerdict::Regression
        } else if llr <= lower {
            SequentialVerdict::NoRegression
        } else {
            SequentialVerdict::Continue
        };
        Ok(SprtEvaluation {
            verdict,
            log_likelihood_ratio: llr,
            upper_threshold: upper,
            lower_threshold: lower,
            batches: self.batches,
            requests: self.requests,
            failures: self.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // -----------------------------------------------------------------------------------------
    // A small seeded PRNG (splitmix64) and samplers, so the Monte-Carlo tests are reproducible.
    // -----------------------------------------------------------------------------------------

    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let u = 1.0 - self.uniform();
            let v = self.uniform();
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }

        /// Binomial(n, p): inversion for small means, a rounded normal for large ones.
        fn binomial(&mut self, n: u64, p: f64) -> u64 {
            if n == 0 || p <= 0.0 {
                return 0;
            }
            if p >= 1.0 {
                return n;
            }
            if p > 0.5 {
                return n - self.binomial(n, 1.0 - p);
            }
            let nf = n as f64;
            let mean = nf * p;
            if mean > 200.0 {
                let x = (mean + (mean * (1.0 - p)).sqrt() * self.normal()).round();
                return x.clamp(0.0, nf) as u64;
            }
            let u = self.uniform();
            let odds = p / (1.0 - p);
            let mut pmf = (nf * (-p).ln_1p()).exp();
            let mut cdf = pmf;
            let mut k = 0u64;
            while u > cdf && k < n {
                pmf *= (nf - k as f64) / (k as f64 + 1.0) * odds;
                k += 1;
                cdf += pmf;
            }
            k
        }
    }

    /// A rollout: steps of canary weights, windows per step, requests per window.
    #[derive(Clone, Copy)]
    struct Scenario {
        weights: &'static [f64],
        windows_per_step: usize,
        requests_per_window: u64,
        /// Primary failure rate.
        base_rate: f64,
        /// Canary failure rate / primary failure rate.
        ratio: f64,
        /// Route each request independently (shares vary per window) or split exactly.
        random_routing: bool,
    }

    const STEPS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5];

    impl Scenario {
        fn peeks(&self) -> usize {
            self.weights.len() * self.windows_per_step
        }

        fn window(&self, rng: &mut Rng, peek: usize) -> Batch {
            let w = self.weights[peek / self.windows_per_step];
            let n = self.requests_per_window;
            let canary = if self.random_routing { rng.binomial(n, w) } else { (n as f64 * w).round() as u64 };
            let primary = n - canary;
            let canary_failures = rng.binomial(canary, (self.base_rate * self.ratio).min(1.0));
            let primary_failures = rng.binomial(primary, self.base_rate);
            Batch::new(canary as f64, canary_failures as f64, primary as f64, primary_failures as f64)
                .unwrap()
        }
    }

    fn binomial_slack(runs: usize, p: f64) -> f64 {
        runs as f64 * p + 3.0 * (runs as f64 * p * (1.0 - p)).sqrt()
    }

    fn batch(cr: f64, cf: f64, pr: f64, pf: f64) -> Batch {
        Batch::new(cr, cf, pr, pf).unwrap()
    }

    fn state_of(batches: &[Batch]) -> SequentialState {
        let mut state = SequentialState::new();
        for b in batches {
            state.push(b).unwrap();
        }
        state
    }

    /// The exact log-likelihood ratio from the batches themselves, no bins.
    fn exact_log_lr(batches: &[Batch], t: f64) -> f64 {
        batches
            .iter()
            .filter_map(|b| b.canary_share().map(|rho| (b, rho)))
            .map(|(b, rho)| {
                let theta = rho * t.exp() / (rho * t.exp() + 1.0 - rho);
                let term = |x: f64, p: f64| if x > 0.0 { x * p.ln() } else { 0.0 };
                term(b.canary_failures, theta) + term(b.primary_failures, 1.0 - theta)
                    - term(b.canary_failures, rho)
                    - term(b.primary_failures, 1.0 - rho)
            })
            .sum()
    }

    fn exact_log_e_value(batches: &[Batch], scale: f64) -> f64 {
        let prior = Prior::new(scale);
        log_sum_exp(
            prior.log_w_one.iter().zip(&prior.t[prior.zero..]).map(|(w, &t)| w + exact_log_lr(batches, t)),
        )
    }

    // -----------------------------------------------------------------------------------------
    // Batch
    // -----------------------------------------------------------------------------------------

    #[test]
    fn batch_rejects_negative_nan_and_infinite_counts() {
        for bad in [-1.0, -1e-300, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for field in 0..4 {
                let mut v = [10.0, 1.0, 10.0, 1.0];
                v[field] = bad;
                let err = Batch::new(v[0], v[1], v[2], v[3]).unwrap_err();
                assert!(matches!(err, SequentialError::InvalidCount { .. }), "{field} {bad}: {err}");
                let raw = Batch {
                    canary_requests: v[0],
                    canary_failures: v[1],
                    primary_requests: v[2],
                    primary_failures: v[3],
                };
                let mut state = SequentialState::new();
                assert!(state.push(&raw).is_err());
                assert_eq!(state, SequentialState::new(), "a refused batch leaves the state unchanged");
            }
        }
    }

    #[test]
    fn batch_rejects_more_failures_than_requests() {
        let err = Batch::new(1.0, 2.0, 10.0, 0.0).unwrap_err();
        assert_eq!(
            err,
            SequentialError::FailuresExceedRequests { side: "canary", failures: 2.0, requests: 1.0 }
        );
        assert!(err.to_string().contains("canary failures (2) exceed canary requests (1)"));
        assert!(matches!(
            Batch::new(10.0, 0.0, 0.5, 0.75),
            Err(SequentialError::FailuresExceedRequests { side: "primary", .. })
        ));
        // Equal is fine: every request failed.
        assert!(Batch::new(3.5, 3.5, 2.0, 2.0).is_ok());
    }

    #[test]
    fn batch_share_is_the_canary_fraction_of_requests() {
        assert_eq!(batch(10.0, 0.0, 90.0, 0.0).canary_share(), Some(0.1));
        assert_eq!(batch(0.0, 0.0, 5.0, 0.0).canary_share(), Some(0.0));
        assert_eq!(batch(5.0, 0.0, 0.0, 0.0).canary_share(), Some(1.0));
        assert_eq!(batch(0.0, 0.0, 0.0, 0.0).canary_share(), None);
        assert_eq!(batch(0.25, 0.0, 0.75, 0.0).canary_share(), Some(0.25));
        assert!(batch(1.0, 0.0, 1.0, 0.0).validate().is_ok());
    }

    // -----------------------------------------------------------------------------------------
    // Config
    // -----------------------------------------------------------------------------------------

    #[test]
    fn config_defaults_and_ranges() {
        let config = SequentialConfig::default();
        assert_eq!((config.alpha, config.margin, config.prior_scale), (0.05, 1.5, 1.0));
        assert!(config.validate().is_ok());
        let parsed: SequentialConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, config);
        let parsed: SequentialConfig = serde_json::from_str(r#"{"alpha":0.01,"priorScale":2}"#).unwrap();
        assert_eq!((parsed.alpha, parsed.margin, parsed.prior_scale), (0.01, 1.5, 2.0));
        for (alpha, margin, prior_scale, name) in [
            (0.0, 1.5, 1.0, "alpha"),
            (1.0, 1.5, 1.0, "alpha"),
            (f64::NAN, 1.5, 1.0, "alpha"),
            (0.05, 1.0, 1.0, "margin"),
            (0.05, 0.5, 1.0, "margin"),
            (0.05, f64::INFINITY, 1.0, "margin"),
            (0.05, f64::NAN, 1.0, "margin"),
            (0.05, 1.5, 0.0, "priorScale"),
            (0.05, 1.5, 5.5, "priorScale"),
            (0.05, 1.5, f64::NAN, "priorScale"),
        ] {
            let config = SequentialConfig { alpha, margin, prior_scale };
            match config.validate() {
                Err(SequentialError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{config:?}: {other:?}"),
            }
            assert!(SequentialState::new().evaluate(&config).is_err());
            assert!(SequentialState::new().log_e_value(&config).is_err());
        }
    }

    // -----------------------------------------------------------------------------------------
    // Prior and likelihood internals
    // -----------------------------------------------------------------------------------------

    #[test]
    fn prior_weights_are_normalised_normal_weights() {
        let prior = Prior::new(1.0);
        assert_eq!(prior.t.len(), 241);
        assert_eq!(prior.t[prior.zero], 0.0);
        assert!((prior.t[prior.t.len() - 1] - 6.0).abs() < 1e-12);
        let total_two: f64 = prior.log_w_two.iter().map(|w| w.exp()).sum();
        let total_one: f64 = prior.log_w_one.iter().map(|w| w.exp()).sum();
        assert!((total_two - 1.0).abs() < 1e-12 && (total_one - 1.0).abs() < 1e-12);
        // Half weight at zero on the one-sided grid, relative to its neighbour.
        let ratio = (prior.log_w_one[0] - prior.log_w_one[1]).exp();
        assert!((ratio - 0.5 / (-0.5f64 * 0.05 * 0.05).exp()).abs() < 1e-12);
        // The weights do not depend on the scale; the points do.
        let wide = Prior::new(2.0);
        assert_eq!(wide.log_w_one, prior.log_w_one);
        assert!((wide.t[wide.t.len() - 1] - 12.0).abs() < 1e-12);
    }

    #[test]
    fn log_mix_is_stable_and_matches_its_definition() {
        for rho in [0.0, 1e-9, 0.1, 0.5, 0.9, 1.0] {
            for t in [-40.0, -3.0, -1e-9, 0.0, 1e-9, 2.5, 40.0] {
                let direct = (1.0 - rho + rho * f64::exp(t)).ln();
                assert!((log_mix(rho, t) - direct).abs() < 1e-9 * (1.0 + direct.abs()), "{rho} {t}");
                let h = 1e-6;
                let numeric = (log_mix(rho, t + h) - log_mix(rho, t - h)) / (2.0 * h);
                assert!((log_mix_slope(rho, t) - numeric).abs() < 1e-6, "{rho} {t}");
            }
        }
        assert_eq!(log_sum_exp([].into_iter()), f64::NEG_INFINITY);
        assert!((log_sum_exp([0.0, 0.0].into_iter()) - 2f64.ln()).abs() < 1e-15);
        assert!((log_sum_exp([1000.0, 1000.0].into_iter()) - (1000.0 + 2f64.ln())).abs() < 1e-12);
    }

    #[test]
    fn grid_likelihood_matches_pointwise_likelihood() {
        let batches = [batch(100.0, 3.0, 900.0, 7.0), batch(210.5, 4.25, 790.0, 2.0)];
        let state = state_of(&batches);
        let model = Model::new(&state.shares);
        let prior = Prior::new(0.7);
        for (t, on_grid) in prior.t.iter().zip(model.log_lr_lower_on(&prior)) {
            assert!((model.log_lr_lower(*t) - on_grid).abs() < 1e-9 * (1.0 + on_grid.abs()));
            assert!((model.log_lr_upper(*t) - on_grid).abs() < 1e-9 * (1.0 + on_grid.abs()));
            assert!((exact_log_lr(&batches, *t) - on_grid).abs() < 1e-9 * (1.0 + on_grid.abs()));
        }
    }

    // -----------------------------------------------------------------------------------------
    // SequentialState
    // -----------------------------------------------------------------------------------------

    #[test]
    fn empty_state_has_no_evidence() {
        let evaluation = SequentialState::new().evaluate(&SequentialConfig::default()).unwrap();
        assert_eq!(evaluation.verdict, SequentialVerdict::Continue);
        assert!(evaluation.log_e_value.abs() < 1e-12);
        assert!((evaluation.e_value - 1.0).abs() < 1e-12);
        assert_eq!(evaluation.threshold, 20.0);
        assert_eq!(
            (evaluation.ratio_estimate, evaluation.ratio_lower, evaluation.ratio_upper),
            (None, 0.0, None)
        );
        assert_eq!(evaluation.batches, 0);
    }

    #[test]
    fn zero_failures_and_zero_traffic_carry_no_evidence() {
        let mut state = SequentialState::new();
        state.push(&batch(1000.0, 0.0, 9000.0, 0.0)).unwrap();
        state.push(&batch(0.0, 0.0, 0.0, 0.0)).unwrap();
        // One side without traffic: its failures say nothing about the ratio.
        state.push(&batch(0.0, 0.0, 500.0, 20.0)).unwrap();
        state.push(&batch(500.0, 20.0, 0.0, 0.0)).unwrap();
        assert!(state.shares.is_empty());
        assert_eq!(state.batches, 4);
        assert_eq!(
            (state.canary_requests, state.canary_failures, state.primary_requests, state.primary_failures),
            (1500.0, 20.0, 9500.0, 20.0)
        );
        let evaluation = state.evaluate(&SequentialConfig::default()).unwrap();
        assert_eq!(evaluation.verdict, SequentialVerdict::Continue);
        assert!(evaluation.log_e_value.abs() < 1e-12);
        assert_eq!(
            (evaluation.ratio_estimate, evaluation.ratio_lower, evaluation.ratio_upper),
            (None, 0.0, None)
        );
        assert_eq!(evaluation.canary_failures, 20.0);
        assert_eq!(evaluation.batches, 4);
    }

    #[test]
    fn all_failures_on_the_canary_is_a_regression_with_unbounded_ratio() {
        let mut state = SequentialState::new();
        let mut verdicts = Vec::new();
        for _ in 0..6 {
            state.push(&batch(100.0, 1.0, 900.0, 0.0)).unwrap();
            verdicts.push(state.evaluate(&SequentialConfig::default()).unwrap());
        }
        let last = verdicts.last().unwrap();
        assert_eq!(last.verdict, SequentialVerdict::Regression);
        assert_eq!(last.ratio_estimate, None);
        assert_eq!(last.ratio_upper, None);
        assert!(last.ratio_lower > 1.0, "{last:?}");
        // The e-value grows with every canary failure.
        assert!(verdicts.windows(2).all(|w| w[1].log_e_value > w[0].log_e_value));
        // Even a canary that fails every request.
        let all = state_of(&[batch(50.0, 50.0, 50.0, 0.0)]);
        assert_eq!(
            all.evaluate(&SequentialConfig::default()).unwrap().verdict,
            SequentialVerdict::Regression
        );
    }

    #[test]
    fn all_failures_on_the_primary_bounds_the_ratio_from_above() {
        let state = state_of(&[batch(5000.0, 0.0, 5000.0, 40.0)]);
        let evaluation = state.evaluate(&SequentialConfig::default()).unwrap();
        assert_eq!(evaluation.ratio_estimate, Some(0.0));
        assert_eq!(evaluation.ratio_lower, 0.0);
        let upper = evaluation.ratio_upper.unwrap();
        assert!(upper < 0.5, "{evaluation:?}");
        assert_eq!(evaluation.verdict, SequentialVerdict::NoRegression);
        assert!(evaluation.log_e_value < 0.0);
    }

    #[test]
    fn both_sides_failing_every_request_is_no_regression_given_enough_failures() {
        let state = state_of(&[batch(2000.0, 2000.0, 2000.0, 2000.0)]);
        let evaluation = state.evaluate(&SequentialConfig::default()).unwrap();
        assert!((evaluation.ratio_estimate.unwrap() - 1.0).abs() < 1e-9);
        assert!(evaluation.ratio_lower < 1.0 && evaluation.ratio_upper.unwrap() > 1.0);
        assert_eq!(evaluation.verdict, SequentialVerdict::NoRegression, "{evaluation:?}");
    }

    #[test]
    fn fractional_counts_are_real_valued() {
        let fractional = state_of(&[batch(100.5, 2.25, 900.25, 3.5)]);
        let evaluation = fractional.evaluate(&SequentialConfig::default()).unwrap();
        assert!(evaluation.log_e_value.is_finite());
        assert_eq!(fractional.shares.len(), 1);
        assert!((fractional.shares[0].share - 100.5 / 1000.75).abs() < 1e-15);
        // Between the integer neighbours.
        let less = state_of(&[batch(100.5, 2.0, 900.25, 3.5)]).log_e_value(&SequentialConfig::default());
        let more = state_of(&[batch(100.5, 3.0, 900.25, 3.5)]).log_e_value(&SequentialConfig::default());
        assert!(less.unwrap() < evaluation.log_e_value && evaluation.log_e_value < more.unwrap());
        assert!(
            (exact_log_e_value(&[batch(100.5, 2.25, 900.25, 3.5)], 1.0) - evaluation.log_e_value).abs()
                < 1e-12
        );
    }

    #[test]
    fn estimate_and_interval_for_a_constant_share_match_the_rate_ratio() {
        // Canary 2 % vs primary 1 % at 20 % share: the conditional MLE is the rate ratio.
        let state = state_of(&[batch(2000.0, 40.0, 8000.0, 80.0)]);
        let evaluation = state.evaluate(&SequentialConfig::default()).unwrap();
        let estimate = evaluation.ratio_estimate.unwrap();
        assert!((estimate - 2.0).abs() < 1e-9, "{estimate}");
        assert!(evaluation.ratio_lower < estimate && estimate < evaluation.ratio_upper.unwrap());
        assert_eq!(evaluation.ratio_estimate, Some(estimate));
        // Pooled windows at one share are merged exactly into one bin.
        let split = state_of(&[batch(1000.0, 15.0, 4000.0, 50.0), batch(1000.0, 25.0, 4000.0, 30.0)]);
        assert_eq!(split.shares.len(), 1);
        let again = split.evaluate(&SequentialConfig::default()).unwrap();
        assert!((again.log_e_value - evaluation.log_e_value).abs() < 1e-9);
        assert!((again.ratio_upper.unwrap() - evaluation.ratio_upper.unwrap()).abs() < 1e-9);
    }

    #[test]
    fn interval_endpoints_sit_on_the_confidence_boundary() {
        let batches = [batch(1000.0, 12.0, 9000.0, 60.0), batch(2000.0, 20.0, 8000.0, 45.0)];
        let state = state_of(&batches);
        let config = SequentialConfig { alpha: 0.1, ..SequentialConfig::default() };
        let evaluation = state.evaluate(&config).unwrap();
        let prior = Prior::new(config.prior_scale);
        let ll: Vec<f64> = prior.t.iter().map(|&t| exact_log_lr(&batches, t)).collect();
        let level = log_sum_exp(prior.log_w_two.iter().zip(&ll).map(|(w, l)| w + l)) + config.alpha.ln();
        for end in [evaluation.ratio_lower, evaluation.ratio_upper.unwrap()] {
            let t = end.ln();
            assert!(exact_log_lr(&batches, t) <= level, "the reported end is excluded");
            assert!((exact_log_lr(&batches, t) - level).abs() < 1e-9, "and sits on the boundary");
        }
        assert!(exact_log_lr(&batches, evaluation.ratio_estimate.unwrap().ln()) > level);
    }

    #[test]
    fn more_canary_failures_mean_more_evidence() {
        let config = SequentialConfig::default();
        let mut last = f64::NEG_INFINITY;
        for canary_failures in [0.0, 1.0, 2.0, 5.0, 10.0, 20.0] {
            let e = state_of(&[batch(1000.0, canary_failures, 9000.0, 20.0)]).log_e_value(&config).unwrap();
            assert!(e > last);
            last = e;
        }
    }

    #[test]
    fn log_e_value_agrees_with_evaluate_and_the_exact_mixture() {
        let batches = [batch(100.0, 4.0, 900.0, 6.0), batch(300.0, 9.0, 700.0, 5.0)];
        let state = state_of(&batches);
        for scale in [0.3, 1.0, 2.5] {
            let config = SequentialConfig { prior_scale: scale, ..SequentialConfig::default() };
            let cheap = state.log_e_value(&config).unwrap();
            let full = state.evaluate(&config).unwrap();
            assert_eq!(cheap, full.log_e_value);
            assert!((cheap - exact_log_e_value(&batches, scale)).abs() < 1e-12);
            assert!((full.e_value - cheap.exp()).abs() < 1e-12 * full.e_value);
        }
    }

    #[test]
    fn regression_takes_precedence_and_alpha_sets_the_threshold() {
        // Strong evidence of a small regression: the test rejects λ ≤ 1 while the ratio is
        // known to be below a generous margin.
        let state = state_of(&[batch(50_000.0, 6_000.0, 50_000.0, 5_000.0)]);
        let config = SequentialConfig { margin: 3.0, ..SequentialConfig::default() };
        let evaluation = state.evaluate(&config).unwrap();
        assert!(evaluation.ratio_upper.unwrap() < 3.0 && evaluation.ratio_lower > 1.0);
        assert_eq!(evaluation.verdict, SequentialVerdict::Regression);
        // A stricter alpha raises the bar.
        let weak = state_of(&[batch(1000.0, 8.0, 9000.0, 30.0)]);
        let loose = weak.evaluate(&SequentialConfig { alpha: 0.3, ..SequentialConfig::default() }).unwrap();
        let strict = weak.evaluate(&SequentialConfig { alpha: 0.01, ..SequentialConfig::default() }).unwrap();
        assert_eq!(loose.verdict, SequentialVerdict::Regression, "{loose:?}");
        assert_eq!(strict.verdict, SequentialVerdict::Continue, "{strict:?}");
        assert!(strict.ratio_lower < loose.ratio_lower);
    }

    #[test]
    fn distinct_shares_are_merged_conservatively() {
        let mut rng = Rng(7);
        let mut batches = Vec::new();
        for i in 0..60 {
            let share = STEPS[i / 12] + 0.02 * (rng.uniform() - 0.5);
            let canary = (4000.0 * share).round();
            let primary = 4000.0 - canary;
            batches.push(batch(
                canary,
                rng.binomial(canary as u64, 0.02) as f64,
                primary,
                rng.binomial(primary as u64, 0.01) as f64,
            ));
        }
        let mut state = SequentialState::new();
        for (i, b) in batches.iter().enumerate() {
            state.push(b).unwrap();
            assert!(state.shares.len() <= MAX_SHARE_BINS);
            assert!(state.shares.windows(2).all(|w| w[0].share_max < w[1].share_min), "sorted, disjoint");
            let config = SequentialConfig::default();
            let merged = state.log_e_value(&config).unwrap();
            let exact = exact_log_e_value(&batches[..=i], 1.0);
            assert!(merged <= exact + 1e-9, "merging never adds evidence: {merged} > {exact}");
            assert!(exact - merged < 0.05, "and loses little: {merged} vs {exact}");
        }
        assert_eq!(state.shares.len(), MAX_SHARE_BINS);
        let total: f64 = state.shares.iter().map(|b| b.canary_failures + b.primary_failures).sum();
        assert!((total - (state.canary_failures + state.primary_failures)).abs() < 1e-9);
        // The reported interval contains the exact one.
        let config = SequentialConfig::default();
        let evaluation = state.evaluate(&config).unwrap();
        let prior = Prior::new(1.0);
        let ll: Vec<f64> = prior.t.iter().map(|&t| exact_log_lr(&batches, t)).collect();
        let level = log_sum_exp(prior.log_w_two.iter().zip(&ll).map(|(w, l)| w + l)) + config.alpha.ln();
        assert!(exact_log_lr(&batches, evaluation.ratio_lower.ln()) <= level + 1e-9);
        assert!(exact_log_lr(&batches, evaluation.ratio_upper.unwrap().ln()) <= level + 1e-9);
        assert!(exact_log_lr(&batches, evaluation.ratio_estimate.unwrap().ln()) > level);
    }

    #[test]
    fn a_share_inside_a_merged_bin_joins_it() {
        let mut state = SequentialState::new();
        for i in 0..=MAX_SHARE_BINS {
            let canary = 100.0 + i as f64;
            state.push(&batch(canary, 1.0, 1000.0 - canary, 1.0)).unwrap();
        }
        assert_eq!(state.shares.len(), MAX_SHARE_BINS);
        let merged = state.shares.iter().find(|b| b.share_max > b.share_min).copied().unwrap();
        let inside = 0.5 * (merged.share_min + merged.share_max);
        state.push(&batch(inside * 1000.0, 2.0, (1.0 - inside) * 1000.0, 0.0)).unwrap();
        assert_eq!(state.shares.len(), MAX_SHARE_BINS);
        let grown = state.shares.iter().find(|b| b.share_min == merged.share_min).unwrap();
        assert_eq!(grown.canary_failures, merged.canary_failures + 2.0);
    }

    #[test]
    fn state_serialises_in_camel_case_and_round_trips() {
        let state = state_of(&[batch(100.0, 2.0, 900.0, 3.0), batch(200.0, 1.0, 800.0, 0.0)]);
        let json = serde_json::to_value(&state).unwrap();
        for key in
            ["batches", "canaryRequests", "canaryFailures", "primaryRequests", "primaryFailures", "shares"]
        {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        let bin = &json["shares"][0];
        for key in ["share", "shareMin", "shareMax", "canaryFailures", "primaryFailures"] {
            assert!(bin.get(key).is_some(), "{key} in {bin}");
        }
        let back: SequentialState = serde_json::from_value(json).unwrap();
        assert_eq!(back, state);
        let empty: SequentialState = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, SequentialState::new());
        assert!(serde_json::to_value(SequentialState::new()).unwrap().get("shares").is_none());
        let evaluation = state.evaluate(&SequentialConfig::default()).unwrap();
        let json = serde_json::to_value(&evaluation).unwrap();
        assert!(json.get("logEValue").is_some() && json.get("ratioLower").is_some());
        assert_eq!(json["verdict"], "Continue");
        let back: Evaluation = serde_json::from_value(json).unwrap();
        assert_eq!(back, evaluation);
        // The schemas generate (the lead embeds these in the Rollout status).
        let schema = serde_json::to_value(schemars::schema_for!(SequentialState)).unwrap();
        assert!(schema.to_string().contains("shareMin"));
        let schema = serde_json::to_value(schemars::schema_for!(LatencyState)).unwrap();
        assert!(schema.to_string().contains("bound"));
        let _ = schemars::schema_for!(SprtState);
        let _ = schemars::schema_for!(SequentialConfig);
        let _ = schemars::schema_for!(Evaluation);
    }

    #[test]
    fn hand_edited_states_are_refused() {
        let good = state_of(&[batch(100.0, 2.0, 900.0, 3.0)]);
        let config = SequentialConfig::default();
        let mut cases = Vec::new();
        let mut s = good.clone();
        s.batches = -1;
        cases.push(s);
        let mut s = good.clone();
        s.canary_requests = f64::NAN;
        cases.push(s);
        let mut s = good.clone();
        s.shares[0].share = 1.5;
        cases.push(s);
        let mut s = good.clone();
        s.shares[0].share_min = 0.0;
        cases.push(s);
        let mut s = good.clone();
        s.shares[0].primary_failures = -1.0;
        cases.push(s);
        let mut s = good.clone();
        s.shares = vec![good.shares[0]; MAX_SHARE_BINS + 1];
        cases.push(s);
        for s in cases {
            assert!(matches!(s.evaluate(&config), Err(SequentialError::InvalidState(_))), "{s:?}");
            let mut pushed = s.clone();
            assert!(pushed.push(&batch(1.0, 0.0, 1.0, 0.0)).is_err());
            assert_eq!(format!("{pushed:?}"), format!("{s:?}"), "unchanged (NaN-safe comparison)");
        }
    }

    #[test]
    fn overflowing_totals_are_refused() {
        let mut state = state_of(&[batch(f64::MAX, 0.0, 1.0, 0.0)]);
        let before = state.clone();
        assert!(matches!(
            state.push(&batch(f64::MAX, 0.0, 1.0, 0.0)),
            Err(SequentialError::InvalidCount { .. })
        ));
        assert_eq!(state, before);
    }

    // -----------------------------------------------------------------------------------------
    // Monte-Carlo properties
    // -----------------------------------------------------------------------------------------

    /// 2000 healthy canaries (equal failure rates), 50 peeks each with per-request random
    /// routing: the fraction ever declared a regression stays below α, whereas a fixed-sample
    /// test checked at every peek exceeds it several times over.
    #[test]
    fn monte_carlo_healthy_canaries_are_rarely_rolled_back() {
        let config = SequentialConfig::default();
        let threshold = -config.alpha.ln();
        let scenario = Scenario {
            weights: STEPS,
            windows_per_step: 10,
            requests_per_window: 2000,
            base_rate: 0.01,
            ratio: 1.0,
            random_routing: true,
        };
        let runs = 2000;
        let mut rng = Rng(0x5e41);
        let (mut false_alarms, mut naive_alarms) = (0, 0);
        for _ in 0..runs {
            let mut state = SequentialState::new();
            let (mut rejected, mut naive_rejected) = (false, false);
            for peek in 0..scenario.peeks() {
                state.push(&scenario.window(&mut rng, peek)).unwrap();
                rejected = rejected || state.log_e_value(&config).unwrap() >= threshold;
                // For contrast: a one-sided two-proportion z-test at level α, repeated at
                // every peek as if each look were the only one.
                let (nc, np) = (state.canary_requests, state.primary_requests);
                let pooled = (state.canary_failures + state.primary_failures) / (nc + np);
                let se = (pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / np)).sqrt();
                let z = (state.canary_failures / nc - state.primary_failures / np) / se;
                naive_rejected = naive_rejected || (se > 0.0 && z > 1.644_853_626_951_472_2);
            }
            false_alarms += usize::from(rejected);
            naive_alarms += usize::from(naive_rejected);
        }
        let rate = false_alarms as f64 / runs as f64;
        let naive = naive_alarms as f64 / runs as f64;
        println!(
            "healthy canaries, 50 peeks: e-process rolled back {false_alarms}/{runs} ({:.2} %); a fixed-sample \
             z-test at every peek {naive_alarms}/{runs} ({:.1} %); α = 5 %",
            100.0 * rate,
            100.0 * naive
        );
        assert!(false_alarms as f64 <= binomial_slack(runs, config.alpha), "{false_alarms}/{runs}");
        assert!(naive > 2.0 * config.alpha, "peeking at a fixed-sample test inflates false alarms");
    }

    /// The same with a canary 10× worse (1 % vs 0.1 %): detected in almost every run, fast.
    #[test]
    fn monte_carlo_ten_times_worse_canary_is_detected() {
        let config = SequentialConfig::default();
        let threshold = -config.alpha.ln();
        let scenario = Scenario {
            weights: STEPS,
            windows_per_step: 10,
            requests_per_window: 2000,
            base_rate: 0.001,
            ratio: 10.0,
            random_routing: true,
        };
        let runs = 500;
        let mut rng = Rng(0xbad);
        let mut detected_after = Vec::new();
        for _ in 0..runs {
            let mut state = SequentialState::new();
            for peek in 0..scenario.peeks() {
                state.push(&scenario.window(&mut rng, peek)).unwrap();
                if state.log_e_value(&config).unwrap() >= threshold {
                    detected_after.push((peek + 1, state.canary_requests));
                    break;
                }
            }
        }
        detected_after.sort_by(|a, b| a.1.total_cmp(&b.1));
        let detected = detected_after.len();
        let median = detected_after.get(detected / 2).copied().unwrap_or((0, 0.0));
        println!(
            "10x worse canary (1 % vs 0.1 %): detected in {detected}/{runs} runs; median after {} windows, \
             {} canary requests",
            median.0, median.1
        );
        assert!(detected as f64 >= 0.95 * runs as f64, "{detected}/{runs}");
        assert!(median.0 <= 10, "median detection within the first step: {median:?}");
    }

    /// Is the true ratio ever excluded from the confidence sequence? At most α of the runs,
    /// with the ratio at the margin (so also: NoRegression for a canary exactly at the margin).
    #[test]
    fn monte_carlo_confidence_sequence_covers_the_true_ratio() {
        let config = SequentialConfig::default();
        let scenario = Scenario {
            weights: STEPS,
            windows_per_step: 10,
            requests_per_window: 1000,
            base_rate: 0.02,
            ratio: config.margin,
            random_routing: true,
        };
        let runs = 600;
        let t0 = scenario.ratio.ln();
        let prior = Prior::new(config.prior_scale);
        let mut rng = Rng(0xc0ffee);
        let (mut excluded, mut no_regression) = (0, 0);
        for _ in 0..runs {
            let mut state = SequentialState::new();
            let mut said_no_regression = false;
            for peek in 0..scenario.peeks() {
                state.push(&scenario.window(&mut rng, peek)).unwrap();
                let model = Model::new(&state.shares);
                let ll = model.log_lr_lower_on(&prior);
                let level =
                    log_sum_exp(prior.log_w_two.iter().zip(&ll).map(|(w, l)| w + l)) + config.alpha.ln();
                if model.log_lr_upper(t0) <= level {
                    excluded += 1;
                    // Excluded from above or below; NoRegression is the former.
                    let evaluation = state.evaluate(&config).unwrap();
                    said_no_regression = evaluation.verdict == SequentialVerdict::NoRegression;
                    break;
                }
            }
            no_regression += usize::from(said_no_regression);
        }
        println!(
            "canary at the margin (ratio {}): true ratio excluded in {excluded}/{runs} runs, \
             NoRegression in {no_regression}/{runs}",
            config.margin
        );
        assert!(excluded as f64 <= binomial_slack(runs, config.alpha));
        assert!(no_regression as f64 <= binomial_slack(runs, config.alpha));
    }

    /// A healthy canary with enough failures is cleared (NoRegression) in most runs, and
    /// `evaluate` agrees with the cheap e-value path.
    #[test]
    fn monte_carlo_healthy_canary_with_many_failures_is_cleared() {
        let config = SequentialConfig { margin: 2.0, ..SequentialConfig::default() };
        let scenario = Scenario {
            weights: STEPS,
            windows_per_step: 10,
            requests_per_window: 1000,
            base_rate: 0.02,
            ratio: 1.0,
            random_routing: false,
        };
        let runs = 200;
        let mut rng = Rng(42);
        let mut cleared_at = Vec::new();
        let mut rolled_back = 0;
        for _ in 0..runs {
            let mut state = SequentialState::new();
            for peek in 0..scenario.peeks() {
                state.push(&scenario.window(&mut rng, peek)).unwrap();
                let evaluation = state.evaluate(&config).unwrap();
                assert_eq!(evaluation.log_e_value, state.log_e_value(&config).unwrap());
                match evaluation.verdict {
                    SequentialVerdict::NoRegression => {
                        cleared_at.push(peek + 1);
                        break;
                    }
                    SequentialVerdict::Regression => {
                        rolled_back += 1;
                        break;
                    }
                    SequentialVerdict::Continue => {}
                }
            }
        }
        cleared_at.sort_unstable();
        let median = cleared_at.get(cleared_at.len() / 2).copied().unwrap_or(0);
        println!(
            "healthy canary, 2 % failures, margin 2: cleared in {}/{runs} runs (median window {median}), \
             rolled back in {rolled_back}",
            cleared_at.len()
        );
        assert!(cleared_at.len() as f64 >= 0.9 * runs as f64);
        assert!(rolled_back as f64 <= binomial_slack(runs, config.alpha));
    }

    // -----------------------------------------------------------------------------------------
    // Latency
    // -----------------------------------------------------------------------------------------

    fn histogram(counts: &[(f64, f64)]) -> Vec<Bucket> {
        counts.iter().map(|&(le, count)| Bucket { le, count }).collect()
    }

    #[test]
    fn histograms_become_slow_request_batches() {
        let canary = histogram(&[(100.0, 50.0), (250.0, 80.0), (500.0, 95.0), (f64::INFINITY, 100.0)]);
        let primary = histogram(&[(100.0, 500.0), (250.0, 850.0), (500.0, 990.0), (f64::INFINITY, 1000.0)]);
        let b = slow_batch_from_histograms(&canary, &primary, 250.0).unwrap();
        assert_eq!(b, batch(100.0, 20.0, 1000.0, 150.0));
        let b = slow_batch_from_histograms(&canary, &primary, 500.0).unwrap();
        assert_eq!(b, batch(100.0, 5.0, 1000.0, 10.0));
        // Non-monotone counts from increase() are clamped, fractional counts kept.
        let wobbly = histogram(&[(100.0, 10.5), (250.0, 10.25), (f64::INFINITY, 10.0)]);
        assert_eq!(slow_batch_from_histograms(&wobbly, &wobbly, 250.0).unwrap(), batch(10.0, 0.0, 10.0, 0.0));
        assert_eq!(slow_batch_from_histograms(&wobbly, &wobbly, 100.0).unwrap(), batch(10.0, 0.0, 10.0, 0.0));
    }

    #[test]
    fn malformed_histograms_are_refused() {
        let good = histogram(&[(100.0, 5.0), (f64::INFINITY, 10.0)]);
        let cases = [
            histogram(&[]),
            histogram(&[(100.0, 5.0), (200.0, 10.0)]),
            histogram(&[(200.0, 5.0), (100.0, 6.0), (f64::INFINITY, 10.0)]),
            histogram(&[(100.0, 5.0), (100.0, 6.0), (f64::INFINITY, 10.0)]),
            histogram(&[(f64::NAN, 5.0), (f64::INFINITY, 10.0)]),
            histogram(&[(100.0, -1.0), (f64::INFINITY, 10.0)]),
            histogram(&[(100.0, 5.0), (f64::INFINITY, f64::NAN)]),
            histogram(&[(50.0, 5.0), (f64::INFINITY, 10.0)]),
        ];
        for bad in &cases {
            assert!(matches!(
                slow_batch_from_histograms(bad, &good, 100.0),
                Err(SequentialError::InvalidHistogram(_))
            ));
            assert!(slow_batch_from_histograms(&good, bad, 100.0).is_err());
        }
        for bound in [f64::NAN, f64::INFINITY] {
            assert!(matches!(
                slow_batch_from_histograms(&good, &good, bound),
                Err(SequentialError::InvalidParameter { .. })
            ));
            assert!(LatencyState::new(bound).is_err());
        }
    }

    #[test]
    fn bucket_bound_at_most_picks_the_boundary_below_a_limit() {
        let buckets = histogram(&[(100.0, 0.0), (250.0, 0.0), (500.0, 0.0), (f64::INFINITY, 0.0)]);
        assert_eq!(bucket_bound_at_most(&buckets, 300.0), Some(250.0));
        assert_eq!(bucket_bound_at_most(&buckets, 250.0), Some(250.0));
        assert_eq!(bucket_bound_at_most(&buckets, 1e9), Some(500.0));
        assert_eq!(bucket_bound_at_most(&buckets, 99.0), None);
        assert_eq!(bucket_bound_at_most(&buckets, f64::NAN), None);
        assert_eq!(bucket_bound_at_most(&[], 1.0), None);
    }

    #[test]
    fn latency_histogram_state_detects_a_slow_canary_and_clears_a_fast_one() {
        let config = SequentialConfig::default();
        let mut slow = LatencyState::new(250.0).unwrap();
        let mut fast = LatencyState::new(250.0).unwrap();
        let primary = histogram(&[(100.0, 4500.0), (250.0, 8800.0), (f64::INFINITY, 9000.0)]);
        let slow_canary = histogram(&[(100.0, 300.0), (250.0, 800.0), (f64::INFINITY, 1000.0)]);
        let fast_canary = histogram(&[(100.0, 600.0), (250.0, 990.0), (f64::INFINITY, 1000.0)]);
        for _ in 0..5 {
            slow.push_histograms(&slow_canary, &primary).unwrap();
            fast.push_histograms(&fast_canary, &primary).unwrap();
        }
        let s = slow.evaluate(&config).unwrap();
        assert_eq!(s.verdict, SequentialVerdict::Regression, "{s:?}");
        assert!(s.ratio_lower > 1.0);
        let f = fast.evaluate(&config).unwrap();
        assert_eq!(f.verdict, SequentialVerdict::NoRegression, "{f:?}");
        assert_eq!((f.canary_requests, f.canary_failures), (5000.0, 50.0));
        // A bad window leaves the state unchanged; the state round-trips.
        let before = slow.clone();
        assert!(slow.push_histograms(&histogram(&[(f64::INFINITY, 1.0)]), &primary).is_err());
        assert_eq!(slow, before);
        let json = serde_json::to_value(&slow).unwrap();
        assert_eq!(json["bound"], 250.0);
        assert!(json["slow"].get("canaryFailures").is_some());
        assert_eq!(serde_json::from_value::<LatencyState>(json).unwrap(), slow);
        let mut broken = slow.clone();
        broken.bound = f64::NAN;
        assert!(matches!(broken.evaluate(&config), Err(SequentialError::InvalidState(_))));
    }

    #[test]
    fn quantiles_bracket_the_slow_fraction() {
        let q = [(0.5, 120.0), (0.9, 300.0), (0.99, 800.0)];
        let close = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-12;
        assert!(close(slow_fraction_bounds(&q, 100.0).unwrap(), (0.5, 1.0)));
        assert!(close(slow_fraction_bounds(&q, 120.0).unwrap(), (0.1, 0.5)));
        assert!(close(slow_fraction_bounds(&q, 500.0).unwrap(), (0.01, 0.1)));
        assert!(close(slow_fraction_bounds(&q, 800.0).unwrap(), (0.0, 0.01)));
        assert!(close(slow_fraction_bounds(&q, 1e6).unwrap(), (0.0, 0.01)));
        assert_eq!(slow_fraction_bounds(&[], 1.0).unwrap(), (0.0, 1.0));
        // Contradictory (non-monotone) quantiles, bad levels and values are refused.
        assert!(matches!(
            slow_fraction_bounds(&[(0.5, 500.0), (0.99, 100.0)], 200.0),
            Err(SequentialError::InvalidQuantiles(_))
        ));
        for bad in [[(0.0, 1.0)], [(1.0, 1.0)], [(f64::NAN, 1.0)], [(0.5, f64::NAN)], [(0.5, f64::INFINITY)]]
        {
            assert!(matches!(slow_fraction_bounds(&bad, 1.0), Err(SequentialError::InvalidQuantiles(_))));
        }
        assert!(slow_fraction_bounds(&q, f64::NAN).is_err());
    }

    #[test]
    fn quantile_batches_are_conservative() {
        let canary_q = [(0.5, 120.0), (0.9, 300.0), (0.99, 800.0)];
        let primary_q = [(0.5, 100.0), (0.9, 150.0), (0.99, 200.0)];
        let canary = QuantileWindow { requests: 1000.0, quantiles: &canary_q };
        let primary = QuantileWindow { requests: 9000.0, quantiles: &primary_q };
        // Bound 250: the canary has at least 10 % slow, the primary at most 1 %.
        let b = slow_batch_from_quantiles(&canary, &primary, 250.0).unwrap();
        assert!((b.canary_failures - 100.0).abs() < 1e-9 && (b.primary_failures - 90.0).abs() < 1e-9);
        assert_eq!((b.canary_requests, b.primary_requests), (1000.0, 9000.0));
        // No traffic: no quantiles needed.
        let none = QuantileWindow { requests: 0.0, quantiles: &[] };
        assert_eq!(slow_batch_from_quantiles(&none, &none, 250.0).unwrap(), batch(0.0, 0.0, 0.0, 0.0));
        let bad = QuantileWindow { requests: -1.0, quantiles: &[] };
        assert!(slow_batch_from_quantiles(&bad, &primary, 250.0).is_err());
        assert!(slow_batch_from_quantiles(&canary, &bad, 250.0).is_err());
        // The state: regression is reported, NoRegression never is.
        let config = SequentialConfig::default();
        let mut state = LatencyState::new(250.0).unwrap();
        for _ in 0..3 {
            state.push_quantiles(&canary, &primary).unwrap();
        }
        assert_eq!(state.evaluate(&config).unwrap().verdict, SequentialVerdict::Regression);
        let mut healthy = LatencyState::new(1000.0).unwrap();
        let fast_q = [(0.5, 10.0), (0.99, 20.0)];
        let fast = QuantileWindow { requests: 100_000.0, quantiles: &fast_q };
        let slowish_q = [(0.5, 500.0), (0.9, 1500.0)];
        let slowish = QuantileWindow { requests: 100_000.0, quantiles: &slowish_q };
        healthy.push_quantiles(&fast, &slowish).unwrap();
        let evaluation = healthy.evaluate(&config).unwrap();
        assert!(evaluation.ratio_upper.is_some_and(|u| u < config.margin), "{evaluation:?}");
        assert_eq!(evaluation.verdict, SequentialVerdict::Continue);
        let mut broken = healthy.clone();
        broken.bound = f64::INFINITY;
        assert!(broken.evaluate(&config).is_err());
        let before = healthy.clone();
        assert!(healthy.push_quantiles(&bad, &primary).is_err());
        assert_eq!(healthy, before);
    }

    // -----------------------------------------------------------------------------------------
    // SPRT
    // -----------------------------------------------------------------------------------------

    fn notes_sprt() -> SprtConfig {
        SprtConfig::new(0.001, 0.01, 0.05, 0.05).unwrap()
    }

    #[test]
    fn sprt_matches_the_field_notes() {
        let sprt = notes_sprt();
        assert!((sprt.upper_threshold().unwrap() - 19f64.ln()).abs() < 1e-12);
        assert!((sprt.lower_threshold().unwrap() + 19f64.ln()).abs() < 1e-12);
        let h1 = sprt.expected_sample_size_h1().unwrap();
        let h0 = sprt.expected_sample_size_h0().unwrap();
        println!("SPRT p0=0.001 p1=0.01 α=β=0.05: E1[N] = {h1:.1}, E0[N] = {h0:.1}");
        assert_eq!((h1.round(), h0.round()), (188.0, 393.0));
        assert_eq!(sprt.fixed_sample_size(10_000).unwrap(), Some(628));
        assert_eq!(sprt.fixed_sample_size(627).unwrap(), None);
    }

    #[test]
    fn sprt_log_likelihood_ratio_per_request() {
        let sprt = notes_sprt();
        let fail = sprt.log_likelihood_ratio(1.0, 1.0).unwrap();
        let pass = sprt.log_likelihood_ratio(1.0, 0.0).unwrap();
        assert!((fail - 10f64.ln()).abs() < 1e-12);
        assert!((pass - (0.99f64 / 0.999).ln()).abs() < 1e-12);
        let batch_llr = sprt.log_likelihood_ratio(100.5, 2.5).unwrap();
        assert!((batch_llr - (2.5 * fail + 98.0 * pass)).abs() < 1e-9);
        assert!((sprt.kl_h1_h0().unwrap() - (0.01 * fail + 0.99 * pass)).abs() < 1e-15);
        assert!((sprt.kl_h0_h1().unwrap() + (0.001 * fail + 0.999 * pass)).abs() < 1e-15);
        assert!(sprt.log_likelihood_ratio(1.0, 2.0).is_err());
        assert!(sprt.log_likelihood_ratio(-1.0, 0.0).is_err());
        assert!(sprt.log_likelihood_ratio(f64::NAN, 0.0).is_err());
    }

    #[test]
    fn sprt_config_ranges() {
        for (p0, p1, alpha, beta) in [
            (0.0, 0.01, 0.05, 0.05),
            (0.01, 0.01, 0.05, 0.05),
            (0.02, 0.01, 0.05, 0.05),
            (0.001, 1.0, 0.05, 0.05),
            (0.001, 0.01, 0.0, 0.05),
            (0.001, 0.01, 0.05, 1.0),
            (0.001, 0.01, 0.6, 0.5),
            (f64::NAN, 0.01, 0.05, 0.05),
        ] {
            assert!(SprtConfig::new(p0, p1, alpha, beta).is_err(), "{p0} {p1} {alpha} {beta}");
            let raw = SprtConfig { p0, p1, alpha, beta };
            assert!(raw.upper_threshold().is_err() && raw.lower_threshold().is_err());
            assert!(raw.expected_sample_size_h0().is_err() && raw.expected_sample_size_h1().is_err());
            assert!(raw.kl_h0_h1().is_err() && raw.kl_h1_h0().is_err());
            assert!(raw.fixed_sample_size(10).is_err());
            assert!(SprtState::new().evaluate(&raw).is_err());
        }
    }

    #[test]
    fn sprt_state_decides_on_batches() {
        let sprt = notes_sprt();
        let mut state = SprtState::new();
        assert_eq!(state.evaluate(&sprt).unwrap().verdict, SequentialVerdict::Continue);
        // Two failures in 20 requests: LLR = 2 ln 10 + 18 ln(0.99/0.999) ≈ 4.44 ≥ ln 19.
        state.push(20.0, 2.0).unwrap();
        let evaluation = state.evaluate(&sprt).unwrap();
        assert_eq!(evaluation.verdict, SequentialVerdict::Regression);
        assert_eq!((evaluation.requests, evaluation.failures, evaluation.batches), (20.0, 2.0, 1));
        // 400 clean requests push it below B.
        let mut clean = SprtState::new();
        clean.push_batch(&batch(400.0, 0.0, 3600.0, 5.0)).unwrap();
        let evaluation = clean.evaluate(&sprt).unwrap();
        assert_eq!(evaluation.verdict, SequentialVerdict::NoRegression, "{evaluation:?}");
        assert!(evaluation.log_likelihood_ratio <= evaluation.lower_threshold);
        // Bad input leaves the state unchanged.
        let before = clean;
        assert!(clean.push(1.0, 2.0).is_err());
        assert!(clean.push(f64::INFINITY, 0.0).is_err());
        assert!(clean.push_batch(&Batch { canary_requests: -1.0, ..Batch::default() }).is_err());
        assert!(clean.push(f64::MAX, 0.0).is_ok());
        assert!(clean.push(f64::MAX, 0.0).is_err());
        assert_eq!(clean.batches, 2);
        assert_eq!(before.batches, 1);
        let broken = SprtState { batches: 1, requests: 1.0, failures: 2.0 };
        assert!(matches!(broken.evaluate(&sprt), Err(SequentialError::InvalidState(_))));
        let json = serde_json::to_value(state).unwrap();
        assert_eq!(json, serde_json::json!({"batches": 1, "requests": 20.0, "failures": 2.0}));
    }

    /// Per-request SPRT: error rates within α, β and average sample numbers near Wald's.
    #[test]
    fn monte_carlo_sprt_error_rates_and_sample_sizes() {
        let sprt = notes_sprt();
        let runs = 2000;
        let mut rng = Rng(1);
        for (p, label) in [(sprt.p0, "H0"), (sprt.p1, "H1")] {
            let (mut regressions, mut total) = (0usize, 0.0);
            for _ in 0..runs {
                let mut state = SprtState::new();
                loop {
                    let failed = rng.uniform() < p;
                    state.push(1.0, if failed { 1.0 } else { 0.0 }).unwrap();
                    match state.evaluate(&sprt).unwrap().verdict {
                        SequentialVerdict::Continue => continue,
                        SequentialVerdict::Regression => regressions += 1,
                        SequentialVerdict::NoRegression => {}
                    }
                    total += state.requests;
                    break;
                }
            }
            let mean = total / runs as f64;
            println!("SPRT under {label}: {regressions}/{runs} regressions, mean {mean:.0} requests");
            if label == "H0" {
                assert!(regressions as f64 <= binomial_slack(runs, sprt.alpha));
                let expected = sprt.expected_sample_size_h0().unwrap();
                assert!((mean / expected - 1.0).abs() < 0.15, "{mean} vs {expected}");
            } else {
                assert!((runs - regressions) as f64 <= binomial_slack(runs, sprt.beta));
                // Wald's approximation ignores the overshoot past A; one failure adds ln 10 = 2.3
                // against A = 2.9, so the real mean is noticeably larger.
                let expected = sprt.expected_sample_size_h1().unwrap();
                assert!(mean / expected > 0.9 && mean / expected < 1.4, "{mean} vs {expected}");
            }
        }
    }
}
