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
//!        ▼            start gate closed (confirm-rollout not approved, outside a window)
//!   [start gate] ───────────────────────────────▶ Waiting (before: Start; canary at 0 replicas)
//!        │ open        ◀── approved / window opens ──┘
//!        ▼
//!   Progressing (step 0: canary scaling up, weight 0)
//!        │ canary ready, pre-rollout hooks passed (a failure is a failed check)
//!        ▼
//!   Progressing (step k: weight w_k) ── interval elapsed, gates and rollout hooks pass ──▶ [step gate] ──▶ step k+1
//!        │   ▲                        ── gates or hooks fail ≤ tolerance ──▶ same step       │ closed (outside a
//!        │   │ resume                 ── insufficient data (hold) ────▶ same step,          ▼  window, scope all)
//!        │   │                           until deadline              Waiting (before: Step; weight held;
//!        │   Paused (spec.paused)                                     checks go on)
//!        │
//!        ├── last step passes ──▶ [promotion gate] ── open ──▶ Promoting ── primary rolled out ──▶ Succeeded
//!        │                          │ closed (confirm-promotion      ▲
//!        │                          ▼ not approved, outside window)  │ approved / window opens,
//!        │                        Waiting (before: Promotion) ───────┘ or `promote`
//!        │
//!        ├── `promote --full` (from Progressing, Paused, Waiting or Frozen) ──▶ Promoting
//!        │
//!        ├── gates fail > tolerance, deadline exceeded, ──▶ onFailure: rollback ──▶ Failed (all traffic on primary)
//!        │   failing canary                                                          │
//!        │                                              ──▶ onFailure: freeze ──▶ Frozen (weights held)
//!        │                                                  `promote` resumes, `abort` rolls back
//!        │
//!        └── `abort`, or a rollback hook answers 2xx ──▶ Failed (always, whatever onFailure says)
//!                                                          │ new revision, or `retry`
//!                                                          ▼
//!                                                   Progressing (step 0)
//! ```
//!
//! A new revision in the middle of a rollout (Progressing, Paused, Waiting, Frozen, Promoting
//! before the primary took it) restarts at the start gate. The gates are evaluated by
//! [`Ctx::gate_open`]: deployment windows first (`spec.schedule`, read by the pure
//! [`crate::schedule::window_state`]), then confirm webhooks. Webhooks are called by the
//! reconciler when [`hooks_due`] says so, and their outcomes come back in
//! [`Observations::hooks`]; `decide` records them in `status.hooks` and acts on them. Manual
//! `promote` and `promote --full` override a closed gate: a human decided.
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
    Analysis, AnalysisMethod, FailurePolicy, GateStatus, HookState, HookStatus, InsufficientDataAction,
    NoEvidenceAction, NoRegressionAction, Phase, RequestOutcome, RequestStatus, RolloutSpec, RolloutStatus,
    ScheduleScope, SequentialAnalysis, Verdict, WaitGate, WaitReason, WaitingStatus, Webhook, WebhookType,
    condition,
};
use crate::duration::parse_duration;
use crate::schedule::{self, WindowState};
use crate::webhooks::HookOutcome;

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
    /// Outcomes of the webhooks [`hooks_due`] asked for, one per hook called.
    pub hooks: Vec<HookOutcome>,
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
    pub reason: String,
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
/// the last check. The reconciler asks the metric source (and calls the rollout webhooks) only
/// then. Checks go on while a step waits for its gate (phase `Waiting` after step 1).
pub fn check_due(spec: &RolloutSpec, status: &RolloutStatus, now: Timestamp) -> bool {
    let analysing = status.phase == Phase::Progressing || waiting_mid_rollout(status);
    analysing
        && status.step >= 1
        && !spec.paused
        && (elapsed(status.step_started_at.as_ref(), now) >= interval(spec)
            || check_every(spec).is_some_and(|every| elapsed(last_check(status), now) >= every))
}

/// Waiting with a canary running: before the next step or the promotion.
fn waiting_mid_rollout(status: &RolloutStatus) -> bool {
    status.phase == Phase::Waiting && status.waiting.as_ref().is_none_or(|w| w.before != WaitGate::Start)
}

/// The webhooks to call now, in spec order, before [`decide`] runs on the same status. Pure,
/// like [`check_due`]; the reconciler calls them and hands their outcomes over in
/// [`Observations::hooks`].
///
/// - confirm-rollout: while a new revision waits for approval to start; each hook until it
///   approves, asked again every interval.
/// - pre-rollout: once the canary is ready at step 0; each hook until it passes for the revision,
///   again every interval after a failure.
/// - rollout: at every due check.
/// - confirm-promotion: while the last step waits for approval; like confirm-rollout.
/// - rollback: every interval while a canary runs (Progressing, Paused, Waiting after the start,
///   Frozen).
/// - post-rollout: once per finished revision (recorded `Pending` when it finishes).
///
/// Event hooks are not here: they are told about transitions after the status is written.
pub fn hooks_due<'a>(
    spec: &'a RolloutSpec,
    status: &RolloutStatus,
    obs: &Observations,
    now: Timestamp,
) -> Vec<&'a Webhook> {
    let revision = status.canary_revision.as_deref();
    let target_is_canary =
        obs.target.as_ref().is_some_and(|t| Some(t.revision.as_str()) == revision && revision.is_some());
    let waiting_for_approval = |before: WaitGate| {
        status.phase == Phase::Waiting
            && status.waiting.as_ref().is_some_and(|w| w.reason == WaitReason::Approval && w.before == before)
    };
    let canary_ready = obs.target.as_ref().is_some_and(|t| t.ready && t.replicas > 0);
    let check = check_due(spec, status, now);
    let canary_running = matches!(status.phase, Phase::Progressing | Phase::Paused | Phase::Frozen)
        || waiting_mid_rollout(status);
    // A gate hook that has not passed for this revision, and is due to be asked (again).
    let unanswered = |hook: &Webhook| {
        target_is_canary && !passed(status, hook, revision) && ask_again(spec, status, hook, revision, now)
    };
    spec.webhooks
        .iter()
        .filter(|hook| match hook.type_ {
            WebhookType::ConfirmRollout => waiting_for_approval(WaitGate::Start) && unanswered(hook),
            WebhookType::PreRollout => {
                status.phase == Phase::Progressing
                    && status.step == 0
                    && !spec.paused
                    && canary_ready
                    && obs.target.as_ref().is_none_or(|t| t.failure.is_none())
                    && unanswered(hook)
            }
            WebhookType::Rollout => check && target_is_canary,
            WebhookType::ConfirmPromotion => waiting_for_approval(WaitGate::Promotion) && unanswered(hook),
            WebhookType::Rollback => {
                canary_running && target_is_canary && ask_again(spec, status, hook, revision, now)
            }
            WebhookType::PostRollout => record(status, hook).is_some_and(|r| r.state == HookState::Pending),
            WebhookType::Event => false,
        })
        .collect()
}

/// The recorded call of `hook`, when it is of the hook's current type.
fn record<'a>(status: &'a RolloutStatus, hook: &Webhook) -> Option<&'a HookStatus> {
    status.hooks.iter().find(|r| r.name == hook.name && r.type_ == hook.type_)
}

/// `hook` answered 2xx about `revision`.
fn passed(status: &RolloutStatus, hook: &Webhook, revision: Option<&str>) -> bool {
    record(status, hook).is_some_and(|r| r.state == HookState::Passed && r.revision.as_deref() == revision)
}

/// `hook` was not asked about `revision` yet, or an interval has passed since.
fn ask_again(
    spec: &RolloutSpec,
    status: &RolloutStatus,
    hook: &Webhook,
    revision: Option<&str>,
    now: Timestamp,
) -> bool {
    match record(status, hook) {
        Some(r) if r.revision.as_deref() == revision => elapsed(r.at.as_ref(), now) >= interval(spec),
        _ => true,
    }
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
    let mut ctx = Ctx {
        spec,
        obs,
        now,
        next: status.clone(),
        events: Vec::new(),
        wake: Vec::new(),
        stalled: false,
        fresh: Vec::new(),
        checking_while_waiting: false,
    };
    ctx.next.observed_generation = obs.generation.or(status.observed_generation);
    ctx.next.steps = i32::try_from(steps(spec).len()).unwrap_or(i32::MAX);
    ctx.record_hooks();
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
    /// Webhook outcomes that this call recorded for the first time: only these count (a failed
    /// check, a rollback request), so deciding again on the output counts nothing twice.
    fresh: Vec<HookOutcome>,
    /// A due check runs while the step waits for its gate: a pass keeps waiting quietly.
    checking_while_waiting: bool,
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
        if self.rollback_requested(&target) {
            return;
        }

        match old.phase {
            Phase::Initializing => self.initializing(&target),
            Phase::Idle | Phase::Succeeded | Phase::Failed => self.steady(&target),
            Phase::Waiting if !waiting_mid_rollout(old) => self.waiting_to_start(&target),
            Phase::Progressing | Phase::Paused | Phase::Waiting => self.progressing(&target),
            Phase::Frozen => self.frozen(&target),
            Phase::Promoting => self.promoting(&target),
        }
    }

    // ----- Webhook outcomes ------------------------------------------------------------------

    /// Records the outcomes of the webhooks the reconciler called (one entry per webhook name in
    /// `status.hooks`), remembers which ones are new, and says when an approval came or was
    /// refused. Entries of webhooks no longer in the spec are dropped.
    fn record_hooks(&mut self) {
        let spec = self.spec;
        // Only the calls this status asked for count: deciding again on the output (where none
        // is due any more) records nothing twice, and an outcome meant for an earlier state is
        // ignored.
        let due: Vec<(String, WebhookType)> = hooks_due(spec, &self.next, self.obs, self.now)
            .into_iter()
            .map(|h| (h.name.clone(), h.type_))
            .collect();
        self.next.hooks.retain(|r| spec.webhooks.iter().any(|h| h.name == r.name && h.type_ == r.type_));
        for outcome in &self.obs.hooks {
            if !due.iter().any(|(name, type_)| *name == outcome.name && *type_ == outcome.type_) {
                continue;
            }
            let Some(hook) =
                spec.webhooks.iter().find(|h| h.name == outcome.name && h.type_ == outcome.type_)
            else {
                continue;
            };
            let existing = record(&self.next, hook).cloned();
            let revision = match outcome.type_ {
                // The revision that finished, recorded when the call became due.
                WebhookType::PostRollout => existing.as_ref().and_then(|r| r.revision.clone()),
                _ => self.next.canary_revision.clone(),
            };
            let entry = HookStatus {
                name: outcome.name.clone(),
                type_: outcome.type_,
                revision: revision.clone(),
                state: if outcome.ok { HookState::Passed } else { HookState::Failed },
                code: outcome.code.map(i32::from),
                attempts: i32::try_from(outcome.attempts).unwrap_or(i32::MAX),
                message: (!outcome.ok && !outcome.message.is_empty()).then(|| outcome.message.clone()),
                at: Some(time(self.now)),
            };
            if existing.as_ref() == Some(&entry) {
                continue; // this call's outcome is already recorded
            }
            let was_rejected =
                existing.as_ref().is_some_and(|r| r.state == HookState::Failed && r.revision == revision);
            match self.next.hooks.iter_mut().find(|r| r.name == entry.name) {
                Some(slot) => *slot = entry,
                None => self.next.hooks.push(entry),
            }
            self.fresh.push(outcome.clone());
            let rev = revision.as_deref().unwrap_or("?");
            match (outcome.type_, outcome.ok) {
                (WebhookType::ConfirmRollout | WebhookType::ConfirmPromotion, true) => self.event(
                    "Approved",
                    format!("{} approved {} of revision {rev}", outcome.name, gate_word(outcome.type_)),
                    false,
                ),
                (WebhookType::ConfirmRollout | WebhookType::ConfirmPromotion, false) if !was_rejected => self
                    .event(
                        "ApprovalRejected",
                        format!(
                            "{} did not approve {} of revision {rev}: {}; asking again every {}",
                            outcome.name,
                            gate_word(outcome.type_),
                            answer(outcome),
                            self.spec.strategy.interval
                        ),
                        false,
                    ),
                _ => {}
            }
        }
    }

    /// Takes the new outcomes of `type_` (each counts once) and returns those that failed.
    fn fresh_failures(&mut self, type_: WebhookType) -> Vec<HookOutcome> {
        let (taken, kept) = std::mem::take(&mut self.fresh).into_iter().partition(|o| o.type_ == type_);
        self.fresh = kept;
        taken.into_iter().filter(|o: &HookOutcome| !o.ok).collect()
    }

    fn has_hooks(&self, type_: WebhookType) -> bool {
        self.spec.webhooks.iter().any(|h| h.type_ == type_)
    }

    /// Every webhook of `type_` answered 2xx about the canary revision.
    fn all_passed(&self, type_: WebhookType) -> bool {
        let revision = self.next.canary_revision.clone();
        self.spec
            .webhooks
            .iter()
            .filter(|h| h.type_ == type_)
            .all(|h| passed(&self.next, h, revision.as_deref()))
    }

    /// When a webhook of `type_` that has not passed will be asked again: an interval after its
    /// last answer about this revision, or now when it was not asked yet.
    fn wake_for_hooks(&mut self, type_: WebhookType) {
        let revision = self.next.canary_revision.clone();
        let every = interval(self.spec);
        let mut times = Vec::new();
        for hook in self.spec.webhooks.iter().filter(|h| h.type_ == type_) {
            match record(&self.next, hook) {
                Some(r) if r.revision == revision && r.state == HookState::Passed => {}
                Some(r) if r.revision == revision => times.push((r.at.clone(), every)),
                _ => times.push((Some(time(self.now)), Duration::ZERO)),
            }
        }
        for (at, after) in times {
            let at = at.unwrap_or_else(|| time(self.now));
            self.wake_at(&at, after);
        }
    }

    /// A rollback webhook answered 2xx: roll back, whatever `onFailure` says (it is an explicit
    /// ask). Returns true when it did.
    fn rollback_requested(&mut self, target: &Workload) -> bool {
        let running = matches!(self.next.phase, Phase::Progressing | Phase::Paused | Phase::Frozen)
            || waiting_mid_rollout(&self.next);
        if !running || self.next.canary_revision.as_deref() != Some(target.revision.as_str()) {
            return false;
        }
        let Some(asked) = self.fresh.iter().find(|o| o.type_ == WebhookType::Rollback && o.ok).cloned()
        else {
            return false;
        };
        self.fail(
            "RollbackRequested",
            format!("webhook {} asked for a rollback ({})", asked.name, answer(&asked)),
        );
        true
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
        self.begin(target, "NewRevision");
    }

    /// A new revision: starts it when the start gate is open, else waits at the gate with the
    /// canary scaled to zero.
    fn begin(&mut self, target: &Workload, reason: &'static str) {
        if self.next.canary_revision.as_deref() != Some(target.revision.as_str())
            || !matches!(self.next.phase, Phase::Waiting)
        {
            self.reset_for(target);
            self.next.waiting = None;
        }
        if self.gate_open(WaitGate::Start) {
            self.start(target, reason);
        }
    }

    /// Clears what belonged to the previous revision.
    fn reset_for(&mut self, target: &Workload) {
        self.next.canary_revision = Some(target.revision.clone());
        self.next.step = 0;
        self.next.canary_weight = 0;
        self.next.failed_checks = 0;
        self.next.gates.clear();
        self.next.analysis = None;
        self.next.insufficient_data_since = None;
        self.next.step_started_at = None;
    }

    /// Starts analysing the target's revision from step 0.
    fn start(&mut self, target: &Workload, reason: &'static str) {
        self.reset_for(target);
        self.next.phase = Phase::Progressing;
        self.next.waiting = None;
        self.next.step_started_at = Some(time(self.now));
        // Per-attempt webhook state starts afresh; the approval that let it start, and
        // post-rollout calls still due for an earlier revision, stay.
        self.next.hooks.retain(|r| {
            matches!(r.type_, WebhookType::ConfirmRollout)
                || (r.type_ == WebhookType::PostRollout && r.state == HookState::Pending)
        });
        self.next.message = Some(format!("revision {}: scaling up the canary", target.revision));
        self.event(
            reason,
            format!("new revision {} detected; starting canary analysis", target.revision),
            false,
        );
        self.wake_after(self.deadline());
    }

    /// Waiting to start a new revision: the gate is evaluated again each time.
    fn waiting_to_start(&mut self, target: &Workload) {
        if self.next.promoted_revision.as_deref() == Some(target.revision.as_str()) {
            self.next.phase = Phase::Idle;
            self.next.canary_revision = None;
            self.reset_step();
            self.next.message = Some(format!("target is back at promoted revision {}", target.revision));
            self.event("RevisionReverted", self.next.message.clone().unwrap_or_default(), false);
            return;
        }
        self.begin(target, "NewRevision");
    }

    // ----- Gates: deployment windows and approvals -------------------------------------------

    /// Whether the rollout may pass `gate` now: inside a deployment window (when the schedule
    /// restricts this gate), and approved by every confirm webhook of the gate. When not, the
    /// rollout waits (phase `Waiting`, `status.waiting` says for what) and false is returned.
    fn gate_open(&mut self, gate: WaitGate) -> bool {
        let revision = self.next.canary_revision.clone().unwrap_or_default();
        if let Some(schedule) = self.spec.schedule.as_ref() {
            let restricted = match (schedule.scope, gate) {
                (ScheduleScope::All, _) => true,
                (ScheduleScope::Promotion, WaitGate::Promotion) => true,
                (ScheduleScope::Promotion, _) => false,
            };
            if restricted {
                match schedule::window_state(schedule, self.now) {
                    Ok(WindowState::Open { .. }) => {}
                    Ok(WindowState::Closed { opens_at }) => {
                        let message = format!(
                            "outside deployment windows; next window opens at {}",
                            window_time(schedule, opens_at)
                        );
                        self.wait(gate, WaitReason::Window, None, Some(opens_at), message);
                        self.wake.push(opens_at);
                        return false;
                    }
                    Err(error) => {
                        let message = format!(
                            "spec.schedule cannot be evaluated, so nothing progresses until it is fixed: {error}"
                        );
                        self.wait(gate, WaitReason::InvalidSchedule, None, None, message);
                        return false;
                    }
                }
            }
        }
        let approval = match gate {
            WaitGate::Start => Some(WebhookType::ConfirmRollout),
            WaitGate::Promotion => Some(WebhookType::ConfirmPromotion),
            WaitGate::Step => None,
        };
        if let Some(type_) = approval {
            let spec = self.spec;
            let pending = spec
                .webhooks
                .iter()
                .find(|h| h.type_ == type_ && !passed(&self.next, h, Some(revision.as_str())));
            if let Some(hook) = pending {
                let mut message = format!("waiting for approval from {} ({})", hook.name, type_name(type_));
                if let Some(r) =
                    record(&self.next, hook).filter(|r| r.revision.as_deref() == Some(revision.as_str()))
                {
                    message.push_str(&format!(
                        "; {}, asking again every {}",
                        recorded_answer(r),
                        self.spec.strategy.interval
                    ));
                }
                self.wait(gate, WaitReason::Approval, Some(hook.name.clone()), None, message);
                self.wake_for_hooks(type_);
                return false;
            }
        }
        if let Some(previous) = self.next.waiting.take()
            && previous.reason == WaitReason::Window
        {
            self.event(
                "WindowOpened",
                format!("deployment window open: {}", gate_phrase(gate, &revision)),
                false,
            );
        }
        true
    }

    /// Holds the rollout at `gate`. One Event when it starts waiting for something new.
    fn wait(
        &mut self,
        gate: WaitGate,
        reason: WaitReason,
        hook: Option<String>,
        next_window: Option<Timestamp>,
        message: String,
    ) {
        let previous = self.next.waiting.clone();
        let same =
            previous.as_ref().is_some_and(|w| w.reason == reason && w.before == gate && w.hook == hook);
        if !same {
            if previous.as_ref().is_some_and(|w| w.reason == WaitReason::Window)
                && reason != WaitReason::Window
            {
                let revision = self.next.canary_revision.clone().unwrap_or_default();
                self.event(
                    "WindowOpened",
                    format!("deployment window open: {}", gate_phrase(gate, &revision)),
                    false,
                );
            }
            let what = gate_phrase(gate, self.next.canary_revision.as_deref().unwrap_or("?"));
            match reason {
                WaitReason::Approval => {
                    self.event("WaitingForApproval", format!("{what} is {message}"), false)
                }
                WaitReason::Window => {
                    self.event("WaitingForWindow", format!("{what} waits: {message}"), false)
                }
                WaitReason::InvalidSchedule => {
                    self.event("WaitingForWindow", format!("{what} waits: {message}"), true)
                }
            }
        }
        let since = previous.filter(|_| same).and_then(|w| w.since).unwrap_or_else(|| time(self.now));
        if gate != WaitGate::Start && check_due(self.spec, &self.next, self.now) {
            // The check that led here passed: the next one is an interval away.
            self.next.step_started_at = Some(time(self.now));
        }
        self.next.phase = Phase::Waiting;
        self.next.message = Some(format!("{}: {message}", self.where_phrase(gate)));
        self.next.waiting = Some(WaitingStatus {
            reason,
            before: gate,
            hook,
            since: Some(since),
            next_window_start: next_window.map(Time),
            message,
        });
        if gate != WaitGate::Start
            && let Some(started) = self.next.step_started_at.clone()
        {
            // Checks go on while the step waits.
            self.wake_at(&started, interval(self.spec));
        }
    }

    fn where_phrase(&self, gate: WaitGate) -> String {
        match gate {
            WaitGate::Start => format!("revision {}", self.next.canary_revision.as_deref().unwrap_or("?")),
            _ => format!("step {}/{}", self.next.step, self.next.steps),
        }
    }

    /// After a passed check (or when a waiting gate opens): the next step or the promotion,
    /// through its gate.
    fn proceed(&mut self, why: String) {
        let step = self.next.step;
        if step >= 1 && step >= self.next.steps {
            if self.gate_open(WaitGate::Promotion) {
                self.promote(why);
            }
        } else if self.gate_open(WaitGate::Step) {
            self.next.phase = Phase::Progressing;
            self.advance_to(step + 1);
        }
    }

    // ----- Progressing, Paused and Waiting mid-rollout ---------------------------------------

    fn progressing(&mut self, target: &Workload) {
        if self.revision_moved(target) {
            return;
        }
        if self.spec.paused {
            if self.next.phase != Phase::Paused {
                self.next.phase = Phase::Paused;
                self.next.waiting = None;
                self.event("Paused", format!("paused at step {}", self.next.step), false);
            }
            self.next.message = Some(format!(
                "paused at step {}/{} with {}% on the canary (spec.paused)",
                self.next.step, self.next.steps, self.next.canary_weight
            ));
            self.wake_for_hooks(WebhookType::Rollback);
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
        if self.next.phase == Phase::Waiting && !check_due(self.spec, &self.next, self.now) {
            // The step passed and waits for its gate: look at the gate again.
            self.proceed("the promotion gate opened".to_string());
            if self.next.phase == Phase::Waiting {
                self.wake_for_hooks(WebhookType::Rollback);
            }
            return;
        }
        if self.next.step == 0 {
            self.waiting_for_canary(target);
        } else {
            self.at_step(target);
        }
        if matches!(self.next.phase, Phase::Progressing | Phase::Waiting) {
            self.wake_for_hooks(WebhookType::Rollback);
        }
    }

    fn waiting_for_canary(&mut self, target: &Workload) {
        let since = self.next.step_started_at.get_or_insert_with(|| time(self.now)).clone();
        if target.ready && target.replicas > 0 {
            if self.has_hooks(WebhookType::PreRollout) && !self.all_passed(WebhookType::PreRollout) {
                self.pre_rollout(target);
                return;
            }
            self.proceed(String::new());
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

    /// The canary is ready at step 0 and the pre-rollout hooks have not all passed: a failure
    /// is a failed check, and the hooks are asked again an interval later.
    fn pre_rollout(&mut self, target: &Workload) {
        let failures = self.fresh_failures(WebhookType::PreRollout);
        if !failures.is_empty() {
            self.webhook_failed(&failures);
            if self.next.phase == Phase::Progressing {
                self.wake_for_hooks(WebhookType::PreRollout);
            }
            return;
        }
        let waiting_for: Vec<String> = self
            .spec
            .webhooks
            .iter()
            .filter(|h| {
                h.type_ == WebhookType::PreRollout && !passed(&self.next, h, Some(target.revision.as_str()))
            })
            .map(|h| h.name.clone())
            .collect();
        if !self.next.message.as_deref().is_some_and(|m| m.contains("pre-rollout")) {
            self.next.message = Some(format!(
                "revision {}: canary ready; running pre-rollout webhooks {}",
                target.revision,
                waiting_for.join(", ")
            ));
        }
        self.wake_for_hooks(WebhookType::PreRollout);
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
        if self.has_hooks(WebhookType::Rollout) && !self.fresh.iter().any(|o| o.type_ == WebhookType::Rollout)
        {
            // The rollout webhooks belong to this check and were not called yet: the reconciler
            // calls them at once (see `hooks_due`).
            self.wake_after(Duration::ZERO);
            return;
        }
        // A due check while waiting: the step is analysed again, and a pass keeps waiting.
        self.checking_while_waiting = self.next.phase == Phase::Waiting;
        if self.checking_while_waiting {
            self.next.phase = Phase::Progressing;
        }
        let failures = self.fresh_failures(WebhookType::Rollout);
        if !failures.is_empty() {
            // The gates are still evaluated, so status shows their values too.
            if sequential(self.spec).is_none() {
                self.gate_verdict();
            }
            self.webhook_failed(&failures);
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
                if !self.next.gates.is_empty() && !self.checking_while_waiting {
                    // Every check's measured values go into an Event, so `kubectl describe`
                    // explains passes as well as failures.
                    let summary = gate_summary(&self.next.gates);
                    self.event("CheckPassed", format!("step {step}/{}: {summary}", self.next.steps), false);
                }
                self.proceed("analysis passed at the last step".to_string());
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
        // While the step waits for its gate, it is over: every check may let it go on.
        let step_over = self.checking_while_waiting
            || elapsed(self.next.step_started_at.as_ref(), self.now) >= interval(self.spec);
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
                let why = format!(
                    "no regression beyond a failure ratio of {} at step {step}/{steps}: {summary}",
                    trim(settings.margin)
                );
                if self.gate_open(WaitGate::Promotion) {
                    self.promote(why);
                }
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
            self.proceed(String::new());
            if self.next.phase == Phase::Progressing {
                self.next.message = Some(format!("{}; {summary}", self.step_message()));
            }
            return;
        }
        match (result.verdict, settings.on_no_evidence.action) {
            (SequentialVerdict::NoRegression, _) => self.proceed(format!(
                "no regression beyond a failure ratio of {} at the last step: {summary}",
                trim(settings.margin)
            )),
            (_, NoEvidenceAction::Promote) => {
                self.proceed(format!("the schedule completed without evidence of a regression: {summary}"))
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
        let failing = self.failing_gates();
        self.count_failed_check("CheckFailed", failing);
    }

    /// Pre-rollout or rollout webhooks failed: one failed check.
    fn webhook_failed(&mut self, failures: &[HookOutcome]) {
        let mut what = failures
            .iter()
            .map(|o| format!("{} webhook {} failed: {}", type_name(o.type_), o.name, answer(o)))
            .collect::<Vec<_>>()
            .join(", ");
        let failing: Vec<&GateStatus> =
            self.next.gates.iter().filter(|g| g.verdict == Verdict::Fail).collect();
        if !failing.is_empty() {
            what.push_str(&format!("; {}", describe_gates(failing)));
        }
        self.count_failed_check("WebhookFailed", what);
    }

    /// Counts a failed check against `analysis.tolerance`: within it, the step is checked again
    /// after another interval; beyond it, the failure policy applies.
    fn count_failed_check(&mut self, reason: &'static str, failing: String) {
        let tolerance = self.spec.analysis.as_ref().map_or(0, |a| a.tolerance);
        self.next.failed_checks += 1;
        self.next.insufficient_data_since = None;
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
        self.event(reason, self.next.message.clone().unwrap_or_default(), true);
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

    /// The target no longer runs the canary's revision: back at the promoted one (nothing to
    /// roll out), or at a new one (the analysis starts over). Returns whether it moved.
    fn revision_moved(&mut self, target: &Workload) -> bool {
        if self.next.promoted_revision.as_deref() == Some(target.revision.as_str()) {
            self.next.phase = Phase::Idle;
            self.next.canary_revision = None;
            self.reset_step();
            self.next.message = Some(format!("target is back at promoted revision {}", target.revision));
            self.event("RevisionReverted", self.next.message.clone().unwrap_or_default(), false);
            return true;
        }
        if self.next.canary_revision.as_deref() != Some(target.revision.as_str()) {
            self.begin(target, "RevisionChanged");
            return true;
        }
        false
    }

    // ----- Frozen ----------------------------------------------------------------------------

    /// `onFailure: freeze`: weights and replicas stay where they are until a human promotes or
    /// aborts (see [`Ctx::handle_request`]), a new revision starts over, or a rollback webhook
    /// asks for a rollback.
    fn frozen(&mut self, target: &Workload) {
        if self.revision_moved(target) {
            return;
        }
        self.wake_for_hooks(WebhookType::Rollback);
    }

    fn freeze(&mut self, reason: &'static str, message: String) {
        self.next.phase = Phase::Frozen;
        self.next.waiting = None;
        self.next.insufficient_data_since = None;
        let message = format!(
            "frozen ({reason}): {message}. {}% stays on the canary until a human resolves it: \
             `kubectl serin promote` goes on, `kubectl serin abort` rolls back",
            self.next.canary_weight
        );
        self.next.message = Some(message.clone());
        self.event("Frozen", message, true);
    }

    // ----- Promoting -----------------------------------------------------------------------

    fn promote(&mut self, why: String) {
        self.next.phase = Phase::Promoting;
        self.next.waiting = None;
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
                self.begin(target, "RevisionChanged");
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
            self.finished(&canary);
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

    /// The rollout of the canary revision failed. With `onFailure: freeze`, an automatic failure
    /// freezes instead; an abort or a rollback webhook always rolls back.
    fn fail(&mut self, reason: &'static str, message: String) {
        let explicit = matches!(reason, "Aborted" | "RollbackRequested");
        if self.spec.on_failure == FailurePolicy::Freeze && !explicit {
            self.freeze(reason, message);
            return;
        }
        self.next.phase = Phase::Failed;
        self.next.waiting = None;
        self.reset_step();
        self.next.message = Some(format!("rolled back: {message}"));
        self.event(reason, format!("rolled back: {message}"), true);
        if let Some(revision) = self.next.canary_revision.clone() {
            self.finished(&revision);
        }
    }

    /// A revision finished (promoted or rolled back): its post-rollout webhooks become due.
    fn finished(&mut self, revision: &str) {
        let spec = self.spec;
        for hook in spec.webhooks.iter().filter(|h| h.type_ == WebhookType::PostRollout) {
            let entry = HookStatus {
                name: hook.name.clone(),
                type_: hook.type_,
                revision: Some(revision.to_string()),
                state: HookState::Pending,
                code: None,
                attempts: 0,
                message: None,
                at: Some(time(self.now)),
            };
            match self.next.hooks.iter_mut().find(|r| r.name == hook.name) {
                Some(slot) => *slot = entry,
                None => self.next.hooks.push(entry),
            }
            self.wake_after(Duration::ZERO);
        }
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
                if !matches!(phase, Phase::Progressing | Phase::Paused | Phase::Waiting | Phase::Frozen) =>
            {
                refuse("only a progressing, paused, waiting or frozen rollout can be promoted")
            }
            RequestAction::Abort
                if !matches!(
                    phase,
                    Phase::Progressing | Phase::Paused | Phase::Promoting | Phase::Waiting | Phase::Frozen
                ) =>
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
        let unfreezing = phase == Phase::Frozen
            && matches!(request.action, RequestAction::Promote | RequestAction::PromoteFull);
        if unfreezing {
            self.event(
                "Unfrozen",
                format!(
                    "{} resolves the freeze at step {}/{}: the rollout goes on",
                    request.id, self.next.step, self.next.steps
                ),
                false,
            );
        }
        let waiting_to_start = phase == Phase::Waiting && !waiting_mid_rollout(&self.next);
        match request.action {
            RequestAction::Promote if waiting_to_start => {
                // A human starts the revision; the start gate does not ask again.
                self.start(target, "NewRevision");
            }
            RequestAction::Promote if self.next.step == 0 => {
                self.next.phase = Phase::Progressing;
                self.advance_to(1);
            }
            RequestAction::Promote if self.next.step >= self.next.steps => {
                self.promote("manual promotion of the last step".to_string())
            }
            RequestAction::Promote => {
                let step = self.next.step + 1;
                self.next.phase = Phase::Progressing;
                self.advance_to(step);
            }
            RequestAction::PromoteFull => {
                if waiting_to_start {
                    self.next.canary_revision = Some(target.revision.clone());
                }
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
            self.event("Stalled", self.next.message.clone().unwrap_or_default(), true);
        }
    }

    fn has_condition(&self, type_: &str) -> bool {
        self.next.conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
    }

    fn event(&mut self, reason: &'static str, message: String, warning: bool) {
        self.events.push(Transition { reason: reason.to_string(), message, warning });
    }

    fn finish(mut self) -> Decision {
        if self.next.phase != Phase::Waiting {
            self.next.waiting = None;
        }
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

/// What a webhook answered, as the webhook client describes it (`answered 503 Service
/// Unavailable (3 attempts)`, `no answer within 10s`), or its HTTP status.
fn answer(outcome: &HookOutcome) -> String {
    match (outcome.message.is_empty(), outcome.code) {
        (false, _) => outcome.message.clone(),
        (true, Some(code)) => format!("HTTP {code}"),
        (true, None) => "no answer".to_string(),
    }
}

fn recorded_answer(r: &HookStatus) -> String {
    match (&r.message, r.code) {
        (Some(message), _) => message.clone(),
        (None, Some(code)) => format!("answered HTTP {code}"),
        (None, None) => "no answer".to_string(),
    }
}

/// The kebab-case name of a webhook type, as in the spec.
pub fn type_name(type_: WebhookType) -> &'static str {
    match type_ {
        WebhookType::ConfirmRollout => "confirm-rollout",
        WebhookType::PreRollout => "pre-rollout",
        WebhookType::Rollout => "rollout",
        WebhookType::ConfirmPromotion => "confirm-promotion",
        WebhookType::PostRollout => "post-rollout",
        WebhookType::Rollback => "rollback",
        WebhookType::Event => "event",
    }
}

fn gate_word(type_: WebhookType) -> &'static str {
    match type_ {
        WebhookType::ConfirmPromotion => "the promotion",
        _ => "the start",
    }
}

fn gate_phrase(gate: WaitGate, revision: &str) -> String {
    match gate {
        WaitGate::Start => format!("revision {revision}: the start"),
        WaitGate::Step => format!("revision {revision}: the next step"),
        WaitGate::Promotion => format!("revision {revision}: the promotion"),
    }
}

/// When a window opens, in the zone of the window that opens then and in UTC:
/// `2026-03-30 09:00 CEST (Europe/Berlin), 07:00 UTC`.
fn window_time(schedule: &crate::api::Schedule, opens_at: Timestamp) -> String {
    let utc = opens_at.strftime("%Y-%m-%d %H:%M UTC").to_string();
    let zone_name = schedule.windows.iter().find_map(|w| {
        let single = crate::api::Schedule { windows: vec![w.clone()], scope: schedule.scope };
        let before = opens_at.checked_sub(SignedDuration::from_secs(1)).ok()?;
        match schedule::window_state(&single, before) {
            Ok(WindowState::Closed { opens_at: at }) if at == opens_at => Some(w.time_zone.clone()),
            _ => None,
        }
    });
    match zone_name.and_then(|name| schedule::time_zone(&name).map(|zone| (name, zone))) {
        Some((name, zone)) if name != "UTC" && name != "Etc/UTC" => {
            let local = opens_at.to_zoned(zone);
            format!("{} ({name}), {}", local.strftime("%Y-%m-%d %H:%M %Z"), opens_at.strftime("%H:%M UTC"))
        }
        _ => utc,
    }
}

/// The desired state implied by a status. Derived, never stored, so that acting twice is
/// harmless.
///
/// - Initializing: the user's Deployment keeps serving (all traffic on `<name>-canary`, which
///   selects its pods) until the primary is ready, so adopting a live app drops nothing.
/// - Progressing, Paused, Promoting, Frozen, and Waiting after the start: the canary runs as
///   many replicas as the primary and gets the weight of its step.
/// - Idle, Succeeded, Failed, and Waiting to start: the canary is scaled to zero and gets no
///   traffic.
pub fn desired_state(status: &RolloutStatus, obs: &Observations) -> Desired {
    let target = obs.target.as_ref();
    let target_replicas = target.map_or(0, |t| t.replicas);
    let primary_replicas = obs.primary.as_ref().map_or(target_replicas.max(1), |p| p.replicas.max(1));
    let (canary_weight, canary_replicas) = match status.phase {
        Phase::Initializing => (100, target_replicas),
        Phase::Waiting if !waiting_mid_rollout(status) => (0, 0),
        Phase::Progressing | Phase::Paused | Phase::Promoting | Phase::Waiting | Phase::Frozen => {
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
        Phase::Initializing | Phase::Progressing | Phase::Promoting | Phase::Waiting => (false, true, false),
        Phase::Paused => (false, false, false),
        Phase::Failed | Phase::Frozen => (false, false, true),
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
