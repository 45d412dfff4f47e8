//! The decision core: one pure function from what Serin knows to what it should do.
//!
//! ```text
//! decide(spec, status, observations, now) -> Decision { status, desired, events, requeue_after }
//! ```
//!
//! No I/O, no clock, no randomness: the reconciler observes (from watch caches), calls
//! [`decide`], then converges the cluster to [`Desired`] and writes the new status. Because the
//! desired state is derived from the status alone, a crash between writing the status and
//! acting is harmless: the next reconcile derives the same desired state and finishes the job.
//!
//! # The state diagram
//!
//! ```text
//!                    primary Available
//!   Initializing ─────────────────────────────▶ Idle ◀──────────── (target back at promoted revision)
//!                                                 │
//!                                 new revision    │
//!        ┌────────────────────────────────────────┘
//!        ▼
//!   Progressing (step 0: canary scaling up, weight 0)
//!        │ canary ready
//!        ▼
//!   Progressing (step k: weight w_k) ── interval elapsed, gates pass ──▶ step k+1
//!        │   ▲                        ── gates fail ≤ tolerance ──────▶ same step, check again
//!        │   │ resume                 ── insufficient data (hold) ────▶ same step, until deadline
//!        │   │
//!        │   Paused (spec.paused)
//!        │
//!        ├── last step passes, or `promote --full` ───▶ Promoting ── primary rolled out ──▶ Succeeded
//!        │
//!        └── gates fail > tolerance, deadline exceeded, ──▶ Failed (all traffic on primary)
//!            failing canary, or `abort`                         │
//!                                                               │ new revision, or `retry`
//!                                                               ▼
//!                                                        Progressing (step 0)
//! ```
//!
//! A new revision in the middle of a rollout (Progressing, Paused, Promoting before the primary
//! took it) restarts the analysis at step 0.
//!
//! # The sequential method (`analysis.method: sequential`)
//!
//! The steps are the same; what happens at a due check differs. Each check counts the metrics
//! window once into the tests kept in `status.analysis` (reset when a new revision starts), then:
//!
//! ```text
//!   Progressing (step k) ── evidence of a regression (e-value ≥ 1/α) ────────▶ Failed
//!        │              ── no regression beyond the margin, onNoRegression: promote ▶ Promoting
//!        │              ── window shorter than the interval, step not over ──▶ same step, check
//!        │                                                                      again next window
//!        │              ── step over, enough data, no evidence or no regression ▶ step k+1
//!        │              ── step over, missing/stale data or < minRequests ───▶ insufficient data
//!        │                                                                      (as thresholds)
//!        └── last step over ── no regression, or no evidence with onNoEvidence: promote ▶ Promoting
//!                           ── no evidence with onNoEvidence: hold ──▶ same step until evidence;
//!                                                                      Failed after its deadline
//! ```

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::analysis::check;
use crate::analysis::sequential::SequentialVerdict;
use crate::api::{
    Analysis, AnalysisMethod, GateStatus, InsufficientDataAction, NoEvidenceAction, NoRegressionAction,
    Phase, RequestOutcome, RequestStatus, RolloutSpec, RolloutStatus, SequentialAnalysis, Verdict, condition,
};
use crate::duration::parse_duration;

/// What Serin observed about the world, read from watch caches.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Observations {
    /// `metadata.generation` of the Rollout.
    pub generation: Option<i64>,
    /// The user's Deployment, which runs the canary. `None` when it does not exist.
    pub target: Option<Workload>,
    /// The primary Deployment Serin owns. `None` when it does not exist yet.
    pub primary: Option<Workload>,
    /// Gate results for the window that ends now. Only read when a check is due (see
    /// [`check_due`]); `None` then means the metric source could not answer.
    pub gates: Option<Vec<GateStatus>>,
    /// The raw metrics window behind `gates`, for analyses that keep state across windows
    /// (the sequential method). `None` when no check is due or the source could not answer.
    pub metrics: Option<crate::metrics::MetricsWindow>,
    /// A manual request (promote, abort, retry) found on the Rollout.
    pub request: Option<Request>,
}

/// A Deployment as Serin sees it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Workload {
    /// The revision of its pod template: a hash for the target, the recorded revision for the
    /// primary.
    pub revision: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The Deployment controller has observed the current spec and every replica is updated
    /// and available.
    pub ready: bool,
    /// Why its pods cannot run, when they cannot (crash loop, image pull failure).
    pub failure: Option<String>,
}

/// A manual action asked for through the `serin.dev/request` annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The annotation's whole value, `<action>/<id>`; handled once per distinct value.
    pub id: String,
    pub action: RequestAction,
}

/// The manual actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestAction {
    /// Advance one step now, without waiting for the interval or the gates.
    Promote,
    /// Skip the remaining steps and analysis and promote now.
    PromoteFull,
    /// Roll back now.
    Abort,
    /// Run a failed revision again.
    Retry,
}

impl RequestAction {
    /// Parses the action word of a request annotation.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "promote" => Some(RequestAction::Promote),
            "promote-full" => Some(RequestAction::PromoteFull),
            "abort" => Some(RequestAction::Abort),
            "retry" => Some(RequestAction::Retry),
            _ => None,
        }
    }
}

/// The state the reconciler converges the cluster to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Percent of traffic on the canary; the primary gets the rest. Always 0..=100.
    pub canary_weight: i32,
    /// Replicas of the user's Deployment (the canary); 0 when no canary runs.
    pub canary_replicas: i32,
    /// The revision the primary must run: the reconciler copies the target's pod template into
    /// the primary when this is the target's revision and the primary runs another.
    pub primary_revision: Option<String>,
    /// Replicas of the primary.
    pub primary_replicas: i32,
}

/// One transition worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// CamelCase reason, e.g. `StepAdvanced`.
    pub reason: &'static str,
    /// A sentence for humans.
    pub message: String,
    /// Warnings are failures and rollbacks.
    pub warning: bool,
}

/// Everything [`decide`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write.
    pub status: RolloutStatus,
    /// The state to converge to.
    pub desired: Desired,
    /// What happened, for Events.
    pub events: Vec<Transition>,
    /// When to look again even if nothing changes (the next step, a deadline).
    pub requeue_after: Option<Duration>,
}

/// Whether gate results are needed now: a canary is at a step and its interval has elapsed, or,
/// with the sequential method and a window shorter than the interval, a window has passed since
/// the last check. The reconciler asks the metric source only then.
pub fn check_due(spec: &RolloutSpec, status: &RolloutStatus, now: Timestamp) -> bool {
    status.phase == Phase::Progressing
        && status.step >= 1
        && !spec.paused
        && (elapsed(status.step_started_at.as_ref(), now) >= interval(spec)
            || check_every(spec).is_some_and(|every| elapsed(last_check(status), now) >= every))
}

/// The analysis, when it uses the sequential method.
fn sequential(spec: &RolloutSpec) -> Option<&Analysis> {
    spec.analysis.as_ref().filter(|a| a.method == AnalysisMethod::Sequential)
}

/// With the sequential method and a window shorter than the interval: check every window.
fn check_every(spec: &RolloutSpec) -> Option<Duration> {
    let window = parse_duration(sequential(spec)?.window.as_deref()?).ok()?;
    (window >= Duration::from_secs(1) && window < interval(spec)).then_some(window)
}

/// The later of the step's start and the last sequential check.
fn last_check(status: &RolloutStatus) -> Option<&Time> {
    let checked = status.analysis.as_ref().and_then(|a| a.checked_at.as_ref());
    match (status.step_started_at.as_ref(), checked) {
        (Some(started), Some(checked)) => Some(if checked.0 > started.0 { checked } else { started }),
        (started, checked) => started.or(checked),
    }
}

/// Decides what to do. Pure: the same inputs always give the same decision.
pub fn decide(spec: &RolloutSpec, status: &RolloutStatus, obs: &Observations, now: Timestamp) -> Decision {
    let mut ctx =
        Ctx { spec, obs, now, next: status.clone(), events: Vec::new(), wake: Vec::new(), stalled: false };
    ctx.next.observed_generation = obs.generation.or(status.observed_generation);
    ctx.next.steps = i32::try_from(steps(spec).len()).unwrap_or(i32::MAX);
    // Run the state machine to a fixpoint, so that one call takes every transition the
    // observations allow, and deciding again on the output changes nothing. Each transition
    // moves forward (or records a handled request), so a handful of rounds always suffices.
    for _ in 0..MAX_ROUNDS {
        let before = ctx.next.clone();
        ctx.run(&before);
        if ctx.next == before {
            break;
        }
    }
    ctx.finish()
}

/// Bound on transitions taken in one call to [`decide`].
const MAX_ROUNDS: usize = 8;

struct Ctx<'a> {
    spec: &'a RolloutSpec,
    obs: &'a Observations,
    now: Timestamp,
    next: RolloutStatus,
    events: Vec<Transition>,
    /// Moments at which something time-based happens; the earliest becomes `requeue_after`.
    wake: Vec<Timestamp>,
    /// Progress stopped at a deadline without a rollback (initialization, promotion).
    stalled: bool,
}

impl Ctx<'_> {
    fn run(&mut self, old: &RolloutStatus) {
        let Some(target) = self.obs.target.clone() else {
            self.next.message = Some(format!(
                "waiting for Deployment {} (spec.targetRef.name) to exist",
                self.spec.target_ref.name
            ));
            return;
        };

        if self.handle_request(&target) {
            return;
        }

        match old.phase {
            Phase::Initializing => self.initializing(&target),
            Phase::Idle | Phase::Succeeded | Phase::Failed => self.steady(&target),
            Phase::Progressing | Phase::Paused => self.progressing(&target),
            Phase::Promoting => self.promoting(&target),
        }
    }

    // ----- Initializing --------------------------------------------------------------------

    fn initializing(&mut self, target: &Workload) {
        let primary_ready =
            self.obs.primary.as_ref().is_some_and(|p| p.ready && p.revision == target.revision);
        if primary_ready {
            self.next.phase = Phase::Idle;
            self.next.promoted_revision = Some(target.revision.clone());
            self.next.canary_revision = None;
            self.next.step = 0;
            self.next.canary_weight = 0;
            self.next.step_started_at = None;
            self.next.message =
                Some(format!("primary runs revision {}; all traffic on primary", target.revision));
            self.event("Initialized", format!("primary initialized at revision {}", target.revision), false);
            return;
        }
        let since = self.next.step_started_at.get_or_insert_with(|| time(self.now)).clone();
        if self.past(&since, self.deadline()) {
            self.next.message = Some(format!(
                "primary did not become ready within {}s (spec.progressDeadlineSeconds)",
                self.spec.progress_deadline_seconds
            ));
            self.stall();
            return;
        }
        self.wake_at(&since, self.deadline());
        self.next.message = Some(format!("creating primary from revision {}", target.revision));
    }

    // ----- Idle, Succeeded, Failed ---------------------------------------------------------

    fn steady(&mut self, target: &Workload) {
        let promoted = self.next.promoted_revision.clone();
        if promoted.as_deref() == Some(target.revision.as_str()) {
            if self.next.phase == Phase::Failed {
                // The user reverted to the promoted revision after a failure: nothing to do.
                self.next.phase = Phase::Idle;
                self.next.canary_revision = None;
                self.next.message = Some(format!("back at promoted revision {}", target.revision));
            }
            return;
        }
        let failed_same = self.next.phase == Phase::Failed
            && self.next.canary_revision.as_deref() == Some(target.revision.as_str());
        if failed_same {
            return; // stays Failed until a new revision or a retry
        }
        self.start(target, "NewRevision");
    }

    /// Starts analysing the target's revision from step 0.
    fn start(&mut self, target: &Workload, reason: &'static str) {
        self.next.phase = Phase::Progressing;
        self.next.canary_revision = Some(target.revision.clone());
        self.next.step = 0;
        self.next.canary_weight = 0;
        self.next.failed_checks = 0;
        self.next.gates.clear();
        self.next.analysis = None;
        self.next.insufficient_data_since = None;
        self.next.step_started_at = Some(time(self.now));
        self.next.message = Some(format!("revision {}: scaling up the canary", target.revision));
        self.event(
            reason,
            format!("new revision {} detected; starting canary analysis", target.revision),
            false,
        );
        self.wake_after(self.deadline());
    }

    // ----- Progressing and Paused ----------------------------------------------------------

    fn progressing(&mut self, target: &Workload) {
        if self.next.promoted_revision.as_deref() == Some(target.revision.as_str()) {
            self.next.phase = Phase::Idle;
            self.next.canary_revision = None;
            self.reset_step();
            self.next.message = Some(format!("target is back at promoted revision {}", target.revision));
            self.event("RevisionReverted", self.next.message.clone().unwrap_or_default(), false);
            return;
        }
        if self.next.canary_revision.as_deref() != Some(target.revision.as_str()) {
            self.start(target, "RevisionChanged");
            return;
        }
        if self.spec.paused {
            if self.next.phase != Phase::Paused {
                self.next.phase = Phase::Paused;
                self.event("Paused", format!("paused at step {}", self.next.step), false);
            }
            self.next.message = Some(format!(
                "paused at step {}/{} with {}% on the canary (spec.paused)",
                self.next.step, self.next.steps, self.next.canary_weight
            ));
            return;
        }
        if self.next.phase == Phase::Paused {
            // Resume: the current step starts over, so the canary gets a full interval.
            self.next.phase = Phase::Progressing;
            self.next.step_started_at = Some(time(self.now));
            self.next.message = Some(self.step_message());
            self.event("Resumed", format!("resumed at step {}", self.next.step), false);
        }
        if let Some(reason) = &target.failure {
            self.fail("CanaryFailing", format!("canary pods are failing: {reason}"));
            return;
        }
        if self.next.step == 0 {
            self.waiting_for_canary(target);
        } else {
            self.at_step(target);
        }
    }

    fn waiting_for_canary(&mut self, target: &Workload) {
        let since = self.next.step_started_at.get_or_insert_with(|| time(self.now)).clone();
        if target.ready && target.replicas > 0 {
            self.advance_to(1);
            return;
        }
        if self.past(&since, self.deadline()) {
            self.fail(
                "ProgressDeadlineExceeded",
                format!(
                    "canary revision {} was not ready within {}s (spec.progressDeadlineSeconds)",
                    target.revision, self.spec.progress_deadline_seconds
                ),
            );
            return;
        }
        self.wake_at(&since, self.deadline());
        self.next.message =
            Some(format!("revision {}: waiting for the canary to become ready", target.revision));
    }

    fn at_step(&mut self, target: &Workload) {
        let since = self.next.step_started_at.get_or_insert_with(|| time(self.now)).clone();
        if !target.ready && self.past(&since, self.deadline()) {
            self.fail(
                "ProgressDeadlineExceeded",
                format!("canary lost readiness for more than {}s", self.spec.progress_deadline_seconds),
            );
            return;
        }
        if !check_due(self.spec, &self.next, self.now) {
            // Keep the message: it explains the step, a failed check or a hold.
            self.wake_at(&since, interval(self.spec));
            if let (Some(every), Some(last)) = (check_every(self.spec), last_check(&self.next).cloned()) {
                self.wake_at(&last, every);
            }
            return;
        }
        let spec = self.spec;
        if let Some(analysis) = sequential(spec) {
            self.sequential_check(analysis);
            return;
        }
        match self.gate_verdict() {
            Verdict::Pass => {
                self.next.insufficient_data_since = None;
                let step = self.next.step;
                if !self.next.gates.is_empty() {
                    // Every check's measured values go into an Event, so `kubectl describe`
                    // explains passes as well as failures.
                    let summary = gate_summary(&self.next.gates);
                    self.event("CheckPassed", format!("step {step}/{}: {summary}", self.next.steps), false);
                }
                if step >= self.next.steps {
                    self.promote("analysis passed at the last step".to_string());
                } else {
                    self.advance_to(step + 1);
                }
            }
            Verdict::Fail => self.failed_check(),
            Verdict::InsufficientData => self.insufficient_data(),
        }
    }

    /// The overall verdict of the gates at a due check. No analysis: pass on time alone.
    /// Analysis configured but no answer from the metric source: never a pass.
    fn gate_verdict(&mut self) -> Verdict {
        let Some(analysis) = &self.spec.analysis else {
            return Verdict::Pass;
        };
        let has_gates = analysis.gates.success_rate.is_some() || !analysis.gates.latency.is_empty();
        if !has_gates {
            return Verdict::Pass;
        }
        match &self.obs.gates {
            None => {
                self.next.gates.clear();
                Verdict::InsufficientData
            }
            Some(gates) if gates.is_empty() => Verdict::InsufficientData,
            Some(gates) => {
                self.next.gates = gates.clone();
                if gates.iter().any(|g| g.verdict == Verdict::Fail) {
                    Verdict::Fail
                } else if gates.iter().all(|g| g.verdict == Verdict::Pass) {
                    Verdict::Pass
                } else {
                    Verdict::InsufficientData
                }
            }
        }
    }

    /// A due check of the sequential method: counts the window into the tests, then acts on the
    /// evidence. A regression rolls back at any check; otherwise the step ends on time.
    fn sequential_check(&mut self, analysis: &Analysis) {
        let settings = check::settings(analysis);
        let step_over = elapsed(self.next.step_started_at.as_ref(), self.now) >= interval(self.spec);
        let result = check::check(
            analysis,
            self.next.analysis.as_ref(),
            self.next.step,
            self.obs.metrics.as_ref(),
            self.now,
        );
        let holding = result.status.holding_since.is_some();
        self.next.gates.clear();
        self.next.analysis = Some(result.status);
        let (step, steps) = (self.next.step, self.next.steps);
        let summary = result.summary;
        match result.verdict {
            SequentialVerdict::Regression => {
                self.fail("SequentialRegression", format!("step {step}/{steps}: regression, {summary}"));
                return;
            }
            SequentialVerdict::NoRegression
                if result.usable && (settings.on_no_regression == NoRegressionAction::Promote || holding) =>
            {
                self.promote(format!(
                    "no regression beyond a failure ratio of {} at step {step}/{steps}: {summary}",
                    trim(settings.margin)
                ));
                return;
            }
            _ => {}
        }
        if !step_over {
            // A check within the step: the evidence grows, the step ends on time.
            let note = match &result.problem {
                Some(problem) => format!("last check not counted: {problem}"),
                None => summary,
            };
            self.next.message = Some(format!("{}; {note}", self.step_message()));
            if let Some(started) = self.next.step_started_at.clone() {
                self.wake_at(&started, interval(self.spec));
            }
            if let Some(every) = check_every(self.spec) {
                self.wake_after(every);
            }
            return;
        }
        let enough =
            result.usable && (result.enough_data || result.verdict == SequentialVerdict::NoRegression);
        if !enough {
            self.insufficient_data();
            if self.next.phase == Phase::Progressing {
                let why = result.problem.unwrap_or_else(|| {
                    format!("fewer than {} canary requests at this step", analysis.min_requests.max(1))
                });
                self.next.message = Some(format!("step {step}/{steps}: holding, insufficient data: {why}"));
            }
            return;
        }
        self.next.insufficient_data_since = None;
        if step < steps {
            self.advance_to(step + 1);
            self.next.message = Some(format!("{}; {summary}", self.step_message()));
            return;
        }
        match (result.verdict, settings.on_no_evidence.action) {
            (SequentialVerdict::NoRegression, _) => self.promote(format!(
                "no regression beyond a failure ratio of {} at the last step: {summary}",
                trim(settings.margin)
            )),
            (_, NoEvidenceAction::Promote) => {
                self.promote(format!("the schedule completed without evidence of a regression: {summary}"))
            }
            (_, NoEvidenceAction::Hold) => self.hold_for_evidence(&settings, &summary),
        }
    }

    /// The last step is over without evidence either way, and `onNoEvidence` says hold: stay at
    /// the step until the test decides, and roll back after the deadline.
    fn hold_for_evidence(&mut self, settings: &SequentialAnalysis, summary: &str) {
        let deadline = parse_duration(&settings.on_no_evidence.deadline).unwrap_or(Duration::from_secs(1800));
        let (step, steps) = (self.next.step, self.next.steps);
        let now = time(self.now);
        let Some(analysis) = self.next.analysis.as_mut() else { return };
        let first = analysis.holding_since.is_none();
        let since = analysis.holding_since.get_or_insert(now).clone();
        if self.past(&since, deadline) {
            self.fail(
                "NoEvidence",
                format!(
                    "step {step}/{steps}: no evidence either way within {} \
                     (analysis.sequential.onNoEvidence.deadline): {summary}",
                    settings.on_no_evidence.deadline
                ),
            );
            return;
        }
        self.next.step_started_at = Some(time(self.now));
        self.next.message =
            Some(format!("step {step}/{steps}: holding for evidence (onNoEvidence: hold); {summary}"));
        if first {
            self.event(
                "HoldingForEvidence",
                format!(
                    "step {step}/{steps}: schedule complete without evidence either way; holding for up to {}",
                    settings.on_no_evidence.deadline
                ),
                false,
            );
        }
        self.wake_after(interval(self.spec));
        if let Some(every) = check_every(self.spec) {
            self.wake_after(every);
        }
        self.wake_at(&since, deadline);
    }

    fn failed_check(&mut self) {
        let tolerance = self.spec.analysis.as_ref().map_or(0, |a| a.tolerance);
        self.next.failed_checks += 1;
        self.next.insufficient_data_since = None;
        let failing = self.failing_gates();
        if self.next.failed_checks > tolerance {
            self.fail(
                "AnalysisFailed",
                format!(
                    "step {}/{}: {failing} ({} failed checks, {} tolerated)",
                    self.next.step, self.next.steps, self.next.failed_checks, tolerance
                ),
            );
            return;
        }
        self.next.step_started_at = Some(time(self.now));
        self.next.message = Some(format!(
            "step {}/{}: {failing} ({} of {} tolerated)",
            self.next.step, self.next.steps, self.next.failed_checks, tolerance
        ));
        self.event("CheckFailed", self.next.message.clone().unwrap_or_default(), true);
        self.wake_after(interval(self.spec));
    }

    fn insufficient_data(&mut self) {
        let Some(analysis) = &self.spec.analysis else { return };
        if analysis.on_insufficient_data.action == InsufficientDataAction::Fail {
            self.failed_check();
            return;
        }
        let deadline =
            parse_duration(&analysis.on_insufficient_data.deadline).unwrap_or(Duration::from_secs(600));
        let since = self.next.insufficient_data_since.get_or_insert_with(|| time(self.now)).clone();
        if self.past(&since, deadline) {
            self.fail(
                "InsufficientData",
                format!(
                    "step {}/{}: not enough metric data for {} (analysis.onInsufficientData.deadline)",
                    self.next.step, self.next.steps, analysis.on_insufficient_data.deadline
                ),
            );
            return;
        }
        // Check again after another interval, without moving the step's start: the hold is
        // bounded by the deadline above.
        self.next.step_started_at = Some(time(self.now));
        self.next.message = Some(format!(
            "step {}/{}: holding, insufficient data (fewer than {} requests or no metrics)",
            self.next.step, self.next.steps, analysis.min_requests
        ));
        self.wake_after(interval(self.spec));
        self.wake_at(&since, deadline);
    }

    fn advance_to(&mut self, step: i32) {
        let weights = steps(self.spec);
        let index = usize::try_from(step - 1).unwrap_or(0).min(weights.len().saturating_sub(1));
        self.next.step = step;
        self.next.canary_weight = weights.get(index).copied().unwrap_or(0);
        self.next.failed_checks = 0;
        self.next.step_started_at = Some(time(self.now));
        self.next.message = Some(self.step_message());
        self.event(
            "StepAdvanced",
            format!(
                "step {}/{}: {}% of traffic on the canary",
                step, self.next.steps, self.next.canary_weight
            ),
            false,
        );
        self.wake_after(interval(self.spec));
    }

    fn step_message(&self) -> String {
        format!(
            "step {}/{}: {}% on canary revision {}",
            self.next.step,
            self.next.steps,
            self.next.canary_weight,
            self.next.canary_revision.as_deref().unwrap_or("?")
        )
    }

    // ----- Promoting -----------------------------------------------------------------------

    fn promote(&mut self, why: String) {
        self.next.phase = Phase::Promoting;
        self.next.step_started_at = Some(time(self.now));
        self.next.message = Some(format!(
            "promoting revision {}: updating the primary",
            self.next.canary_revision.as_deref().unwrap_or("?")
        ));
        self.event("Promoting", why, false);
        self.wake_after(self.deadline());
    }

    fn promoting(&mut self, target: &Workload) {
        let canary = self.next.canary_revision.clone().unwrap_or_default();
        if target.revision != canary {
            let primary_took_it = self.obs.primary.as_ref().is_some_and(|p| p.revision == canary);
            if !primary_took_it {
                self.start(target, "RevisionChanged");
                return;
            }
        }
        let primary_ready = self.obs.primary.as_ref().is_some_and(|p| p.ready && p.revision == canary);
        if primary_ready {
            self.next.phase = Phase::Succeeded;
            self.next.promoted_revision = Some(canary.clone());
            self.reset_step();
            self.next.message = Some(format!("revision {canary} promoted; all traffic on primary"));
            self.event("Promoted", format!("revision {canary} promoted"), false);
            return;
        }
        let since = self.next.step_started_at.get_or_insert_with(|| time(self.now)).clone();
        if self.past(&since, self.deadline()) {
            self.next.message = Some(format!(
                "primary did not finish rolling out revision {canary} within {}s; canary keeps its traffic",
                self.spec.progress_deadline_seconds
            ));
            self.stall();
            return;
        }
        self.wake_at(&since, self.deadline());
    }

    // ----- Failure and manual requests -----------------------------------------------------

    fn fail(&mut self, reason: &'static str, message: String) {
        self.next.phase = Phase::Failed;
        self.reset_step();
        self.next.message = Some(format!("rolled back: {message}"));
        self.event(reason, format!("rolled back: {message}"), true);
    }

    fn reset_step(&mut self) {
        self.next.step = 0;
        self.next.canary_weight = 0;
        self.next.failed_checks = 0;
        self.next.step_started_at = None;
        self.next.insufficient_data_since = None;
    }

    /// Handles a manual request once. Returns true when it decided the outcome of this call.
    fn handle_request(&mut self, target: &Workload) -> bool {
        let Some(request) = &self.obs.request else { return false };
        if self.next.last_request.as_ref().is_some_and(|r| r.id == request.id) {
            return false;
        }
        let phase = self.next.phase;
        let refuse = |why: &str| Some(why.to_string());
        let refusal = match request.action {
            RequestAction::Promote | RequestAction::PromoteFull
                if !matches!(phase, Phase::Progressing | Phase::Paused) =>
            {
                refuse("only a progressing or paused rollout can be promoted")
            }
            RequestAction::Abort
                if !matches!(phase, Phase::Progressing | Phase::Paused | Phase::Promoting) =>
            {
                refuse("only a rollout in progress can be aborted")
            }
            RequestAction::Retry if phase != Phase::Failed => refuse("only a failed rollout can be retried"),
            RequestAction::Retry
                if self.next.canary_revision.as_deref() != Some(target.revision.as_str()) =>
            {
                refuse("the failed revision is no longer the target's revision")
            }
            _ => None,
        };
        let outcome = if refusal.is_some() { RequestOutcome::Refused } else { RequestOutcome::Accepted };
        self.next.last_request = Some(RequestStatus {
            id: request.id.clone(),
            outcome,
            message: refusal.clone(),
            at: Some(time(self.now)),
        });
        if let Some(why) = refusal {
            self.event("RequestRefused", format!("{}: {why}", request.id), true);
            return false;
        }
        match request.action {
            RequestAction::Promote if self.next.step == 0 => self.advance_to(1),
            RequestAction::Promote if self.next.step >= self.next.steps => {
                self.promote("manual promotion of the last step".to_string())
            }
            RequestAction::Promote => {
                let step = self.next.step + 1;
                self.next.phase = Phase::Progressing;
                self.advance_to(step);
            }
            RequestAction::PromoteFull => {
                self.promote("manual full promotion, skipping analysis".to_string())
            }
            RequestAction::Abort => self.fail("Aborted", format!("aborted by request {}", request.id)),
            RequestAction::Retry => self.start(target, "Retry"),
        }
        true
    }

    fn failing_gates(&self) -> String {
        let failing: Vec<&GateStatus> =
            self.next.gates.iter().filter(|g| g.verdict == Verdict::Fail).collect();
        if failing.is_empty() { "insufficient data".to_string() } else { describe_gates(failing) }
    }

    // ----- helpers -------------------------------------------------------------------------

    fn deadline(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.spec.progress_deadline_seconds.max(1)).unwrap_or(600))
    }

    fn past(&self, since: &Time, after: Duration) -> bool {
        elapsed(Some(since), self.now) >= after
    }

    fn wake_at(&mut self, since: &Time, after: Duration) {
        if let Ok(at) = since.0.checked_add(SignedDuration::try_from(after).unwrap_or_default()) {
            self.wake.push(at);
        }
    }

    fn wake_after(&mut self, after: Duration) {
        self.wake_at(&time(self.now), after);
    }

    /// Marks progress as stalled at a deadline, with one Event when it first happens.
    fn stall(&mut self) {
        let first = !self.stalled && !self.has_condition(condition::STALLED);
        self.stalled = true;
        if first {
            self.event("ProgressDeadlineExceeded", self.next.message.clone().unwrap_or_default(), true);
        }
    }

    fn has_condition(&self, type_: &str) -> bool {
        self.next.conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
    }

    fn event(&mut self, reason: &'static str, message: String, warning: bool) {
        self.events.push(Transition { reason, message, warning });
    }

    fn finish(mut self) -> Decision {
        let desired = desired_state(&self.next, self.obs);
        set_conditions(&mut self.next, self.now, self.stalled);
        let requeue_after = self
            .wake
            .iter()
            .filter_map(|at| {
                let d = self.now.duration_until(*at);
                Duration::try_from(d).ok()
            })
            .min()
            .map(|d| d.max(Duration::from_millis(100)));
        Decision { status: self.next, desired, events: self.events, requeue_after }
    }
}

/// The desired state implied by a status. Derived, never stored, so that acting twice is
/// harmless.
///
/// - Initializing: the user's Deployment keeps serving (all traffic on `<name>-canary`, which
///   selects its pods) until the primary is ready, so adopting a live app drops nothing.
/// - Progressing, Paused, Promoting: the canary runs as many replicas as the primary and gets
///   the weight of its step.
/// - Idle, Succeeded, Failed: the canary is scaled to zero and gets no traffic.
pub fn desired_state(status: &RolloutStatus, obs: &Observations) -> Desired {
    let target = obs.target.as_ref();
    let target_replicas = target.map_or(0, |t| t.replicas);
    let primary_replicas = obs.primary.as_ref().map_or(target_replicas.max(1), |p| p.replicas.max(1));
    let (canary_weight, canary_replicas) = match status.phase {
        Phase::Initializing => (100, target_replicas),
        Phase::Progressing | Phase::Paused | Phase::Promoting => {
            (status.canary_weight.clamp(0, 100), primary_replicas)
        }
        Phase::Idle | Phase::Succeeded | Phase::Failed => (0, 0),
    };
    let primary_revision = match status.phase {
        Phase::Initializing => target.map(|t| t.revision.clone()),
        Phase::Promoting => status.canary_revision.clone(),
        _ => status.promoted_revision.clone(),
    };
    Desired { canary_weight, canary_replicas, primary_revision, primary_replicas }
}

/// The canary weight of each step.
pub fn steps(spec: &RolloutSpec) -> Vec<i32> {
    spec.strategy.step_weights()
}

fn interval(spec: &RolloutSpec) -> Duration {
    parse_duration(&spec.strategy.interval).unwrap_or(Duration::from_secs(60))
}

fn elapsed(since: Option<&Time>, now: Timestamp) -> Duration {
    since.map_or(Duration::ZERO, |t| Duration::try_from(t.0.duration_until(now)).unwrap_or(Duration::ZERO))
}

fn time(now: Timestamp) -> Time {
    Time(now)
}

/// `successRate 97.5 (threshold >= 99), latency.p99 ...`: each gate with its measured value.
fn describe_gates<'a>(gates: impl IntoIterator<Item = &'a GateStatus>) -> String {
    gates
        .into_iter()
        .map(|g| match g.value {
            Some(v) => format!("{} {} (threshold {})", g.name, trim(v), g.threshold),
            None => format!("{} without a value (threshold {})", g.name, g.threshold),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every gate with its value and verdict, for the Event of a passed check.
fn gate_summary(gates: &[GateStatus]) -> String {
    format!("gates passed: {}", describe_gates(gates))
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Sets the kstatus conditions from the phase, keeping `lastTransitionTime` when a condition's
/// status does not change.
fn set_conditions(status: &mut RolloutStatus, now: Timestamp, deadline_exceeded: bool) {
    let generation = status.observed_generation;
    let (ready, reconciling, stalled) = match status.phase {
        Phase::Idle | Phase::Succeeded => (true, false, false),
        Phase::Initializing | Phase::Progressing | Phase::Promoting => (false, true, false),
        Phase::Paused => (false, false, false),
        Phase::Failed => (false, false, true),
    };
    let stalled = stalled || deadline_exceeded;
    let reconciling = reconciling && !stalled;
    let reason = format!("{:?}", status.phase);
    let message = status.message.clone().unwrap_or_default();
    let promoted = status.promoted_revision.clone();
    let mut set = |type_: &str, value: bool, reason: &str, message: &str| {
        let value = if value { "True" } else { "False" };
        let previous = status.conditions.iter().find(|c| c.type_ == type_);
        let last_transition_time = match previous {
            Some(c) if c.status == value => c.last_transition_time.clone(),
            _ => Time(now),
        };
        let condition = Condition {
            type_: type_.to_string(),
            status: value.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time,
        };
        match status.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => *c = condition,
            None => status.conditions.push(condition),
        }
    };
    set(condition::READY, ready, &reason, &message);
    set(condition::RECONCILING, reconciling, &reason, &message);
    set(condition::STALLED, stalled, &reason, &message);
    match &promoted {
        Some(rev) => set(condition::PROMOTED, true, "Promoted", &format!("revision {rev} is promoted")),
        None => set(condition::PROMOTED, false, "NotYetPromoted", "no revision promoted yet"),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
