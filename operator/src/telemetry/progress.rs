//! What a decision means for telemetry, derived from the status before and after it: which step
//! ended and how, which revision's rollout began or finished, and which gates were evaluated.
//! Pure: the metrics and the traces are both computed from its answer.
//!
//! A rollout of one canary revision is a sequence of *stages*: step 0 (the canary scaling up,
//! no traffic), steps 1..=n (the canary at each weight), then the promotion (the primary taking
//! the revision). Paused is the same stage as the step it paused at.

use k8s_openapi::jiff::Timestamp;

use crate::api::{GateStatus, Phase, RolloutStatus, WaitGate, condition};
use crate::engine::decide::Transition;

/// One stage of a revision's rollout.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stage {
    /// The canary revision (pod-template hash).
    pub revision: String,
    pub step: Step,
}

/// A step of the schedule, or the promotion after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Step 0 is the canary scaling up with no traffic; 1..=n carry the schedule's weights.
    Canary(i32),
    /// The primary is being updated to the canary's revision.
    Promotion,
}

impl Step {
    /// A short, stable key: `step-2`, `promotion`.
    pub fn key(self) -> String {
        match self {
            Step::Canary(n) => format!("step-{n}"),
            Step::Promotion => "promotion".to_string(),
        }
    }
}

/// How a stage, or a revision's whole rollout, ended. Also the `result` label of the duration
/// histograms: a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The step passed and the next step began.
    Advanced,
    /// The step passed (or was promoted by hand) and the promotion began.
    Promoted,
    /// The primary runs the revision: the rollout succeeded.
    Succeeded,
    /// Rolled back by the analysis, a deadline or failing pods.
    Failed,
    /// Rolled back by an `abort` request.
    Aborted,
    /// A newer revision replaced this one mid-rollout.
    Superseded,
    /// The target went back to the promoted revision.
    Reverted,
}

impl Outcome {
    /// Every outcome, for documentation and tests.
    pub const ALL: [Outcome; 7] = [
        Outcome::Advanced,
        Outcome::Promoted,
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Aborted,
        Outcome::Superseded,
        Outcome::Reverted,
    ];

    /// The lowercase label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Advanced => "advanced",
            Outcome::Promoted => "promoted",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::Superseded => "superseded",
            Outcome::Reverted => "reverted",
        }
    }

    /// Whether this ends the revision's rollout with a rollback.
    pub fn is_rollback(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Aborted)
    }
}

/// A stage that ended with this decision.
#[derive(Clone, Debug, PartialEq)]
pub struct StageEnded {
    pub stage: Stage,
    /// Percent of traffic the canary had during the stage.
    pub weight: i32,
    /// `status.stepStartedAt` before the decision: when the stage (or its latest retry) began.
    pub started: Option<Timestamp>,
    pub outcome: Outcome,
}

/// A revision's rollout that ended with this decision.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutEnded {
    pub revision: String,
    /// When it began, as far as the status tells: the `Reconciling` condition's transition to
    /// True, else the last stage's start. The reconciler prefers what it remembers.
    pub started: Option<Timestamp>,
    /// Number of steps in the schedule.
    pub steps: i32,
    pub outcome: Outcome,
}

/// A due check whose gates were evaluated (the threshold method).
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The stage the check belongs to (the step before the decision moved on).
    pub stage: Stage,
    pub gates: Vec<GateStatus>,
}

/// Everything telemetry learns from one decision.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Progress {
    /// The stage before the decision ended.
    pub ended: Option<StageEnded>,
    /// The revision's rollout ended (its last stage is `ended`).
    pub finished: Option<RolloutEnded>,
    /// The stage after the decision, when it is a new one, with its start.
    pub began: Option<(Stage, Option<Timestamp>)>,
    /// The stage after the decision is the first of a new revision's rollout.
    pub new_rollout: bool,
    /// Gates evaluated at a check.
    pub check: Option<Check>,
}

/// The stage a status describes, if a canary revision is being rolled out.
pub fn stage(status: &RolloutStatus) -> Option<Stage> {
    let revision = status.canary_revision.clone()?;
    let step = match status.phase {
        // Waiting at a step or before the promotion, and Frozen, hold the step like Paused.
        Phase::Waiting if status.waiting.as_ref().is_some_and(|w| w.before == WaitGate::Start) => {
            return None;
        }
        Phase::Progressing | Phase::Paused | Phase::Waiting | Phase::Frozen => Step::Canary(status.step),
        Phase::Promoting => Step::Promotion,
        Phase::Initializing | Phase::Idle | Phase::Succeeded | Phase::Failed => return None,
    };
    Some(Stage { revision, step })
}

/// What the decision from `old` to `new` (with its `events`) means for telemetry. `gates` are
/// the gate results the reconciler observed for a due check (`None` when no check was due or
/// the method is sequential, whose verdict is not per gate).
pub fn progress(
    old: &RolloutStatus,
    new: &RolloutStatus,
    events: &[Transition],
    gates: Option<&[GateStatus]>,
) -> Progress {
    let before = stage(old);
    let after = stage(new);
    let mut progress = Progress::default();

    if let (Some(stage), Some(gates)) = (&before, gates)
        && old.phase == Phase::Progressing
        && matches!(stage.step, Step::Canary(n) if n >= 1)
        && !gates.is_empty()
    {
        progress.check = Some(Check { stage: stage.clone(), gates: gates.to_vec() });
    }

    if before == after {
        return progress;
    }
    if let Some(stage) = &before {
        let outcome = outcome(stage, new, after.as_ref(), events);
        progress.ended = Some(StageEnded {
            stage: stage.clone(),
            weight: old.canary_weight,
            started: old.step_started_at.as_ref().map(|t| t.0),
            outcome,
        });
        if after.as_ref().is_none_or(|a| a.revision != stage.revision) {
            progress.finished = Some(RolloutEnded {
                revision: stage.revision.clone(),
                started: rollout_start(old),
                steps: old.steps,
                outcome,
            });
        }
    }
    if let Some(stage) = after {
        progress.new_rollout = before.as_ref().is_none_or(|b| b.revision != stage.revision);
        progress.began = Some((stage, new.step_started_at.as_ref().map(|t| t.0)));
    }
    progress
}

/// How the stage `ended` ended, given the status after the decision.
fn outcome(ended: &Stage, new: &RolloutStatus, after: Option<&Stage>, events: &[Transition]) -> Outcome {
    if events.iter().any(|e| e.reason == "Aborted") {
        return Outcome::Aborted;
    }
    match (new.phase, after) {
        (Phase::Failed, _) => Outcome::Failed,
        (Phase::Succeeded, _) => Outcome::Succeeded,
        (_, Some(next)) if next.revision != ended.revision => Outcome::Superseded,
        (_, Some(Stage { step: Step::Promotion, .. })) => Outcome::Promoted,
        (_, Some(_)) => Outcome::Advanced,
        (_, None) => Outcome::Reverted,
    }
}

/// When the rollout described by `status` began: the `Reconciling` condition turned True when
/// the canary revision started (or resumed after a pause).
fn rollout_start(status: &RolloutStatus) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::RECONCILING && c.status == "True")
        .map(|c| c.last_transition_time.0)
        .or_else(|| status.step_started_at.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::api::Verdict;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
    }

    fn status(phase: Phase, revision: Option<&str>, step: i32, started: i64) -> RolloutStatus {
        RolloutStatus {
            phase,
            canary_revision: revision.map(String::from),
            step,
            steps: 2,
            canary_weight: [0, 20, 50].get(usize::try_from(step).unwrap_or(0)).copied().unwrap_or(0),
            step_started_at: Some(at(started)),
            ..Default::default()
        }
    }

    fn event(reason: &'static str) -> Transition {
        Transition { reason: reason.into(), message: String::new(), warning: false }
    }

    fn gate(verdict: Verdict) -> GateStatus {
        GateStatus {
            name: "successRate".into(),
            value: Some(99.5),
            primary_value: None,
            threshold: ">= 99".into(),
            verdict,
            requests: Some(120.0),
            at: Some(at(30)),
        }
    }

    #[test]
    fn a_new_revision_begins_a_rollout_at_step_zero() {
        let old = status(Phase::Idle, None, 0, 0);
        let new = status(Phase::Progressing, Some("abc"), 0, 10);
        let p = progress(&old, &new, &[event("NewRevision")], None);
        assert_eq!(p.ended, None);
        assert_eq!(p.finished, None);
        assert!(p.new_rollout);
        let (stage, started) = p.began.unwrap();
        assert_eq!(stage, Stage { revision: "abc".into(), step: Step::Canary(0) });
        assert_eq!(started, Some(at(10).0));
    }

    #[test]
    fn a_passed_step_ends_advanced_and_the_next_begins() {
        let old = status(Phase::Progressing, Some("abc"), 1, 10);
        let new = status(Phase::Progressing, Some("abc"), 2, 40);
        let p = progress(&old, &new, &[event("StepAdvanced")], Some(&[gate(Verdict::Pass)]));
        let ended = p.ended.unwrap();
        assert_eq!(ended.stage.step, Step::Canary(1));
        assert_eq!(ended.weight, 20);
        assert_eq!(ended.started, Some(at(10).0));
        assert_eq!(ended.outcome, Outcome::Advanced);
        assert_eq!(p.finished, None, "the rollout goes on");
        assert!(!p.new_rollout);
        assert_eq!(p.began.unwrap().0.step, Step::Canary(2));
        let check = p.check.unwrap();
        assert_eq!(check.stage.step, Step::Canary(1), "the check belongs to the step it ended");
        assert_eq!(check.gates[0].verdict, Verdict::Pass);
    }

    #[test]
    fn the_last_step_ends_promoted_and_the_promotion_ends_succeeded() {
        let last = status(Phase::Progressing, Some("abc"), 2, 40);
        let promoting = status(Phase::Promoting, Some("abc"), 2, 70);
        let p = progress(&last, &promoting, &[event("Promoting")], Some(&[gate(Verdict::Pass)]));
        assert_eq!(p.ended.unwrap().outcome, Outcome::Promoted);
        assert_eq!(p.began.unwrap().0.step, Step::Promotion);
        assert_eq!(p.finished, None);

        let mut done = status(Phase::Succeeded, None, 0, 0);
        done.step_started_at = None;
        let mut promoting = promoting;
        promoting.conditions.push(Condition {
            type_: condition::RECONCILING.into(),
            status: "True".into(),
            reason: "Progressing".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: at(10),
        });
        let p = progress(&promoting, &done, &[event("Promoted")], None);
        let ended = p.ended.unwrap();
        assert_eq!((ended.stage.step, ended.outcome), (Step::Promotion, Outcome::Succeeded));
        let finished = p.finished.unwrap();
        assert_eq!(finished.outcome, Outcome::Succeeded);
        assert_eq!(finished.revision, "abc");
        assert_eq!(finished.started, Some(at(10).0), "from the Reconciling condition");
        assert_eq!(p.began, None);
    }

    #[test]
    fn a_failed_check_beyond_tolerance_fails_the_step_and_the_rollout() {
        let old = status(Phase::Progressing, Some("abc"), 1, 10);
        let new = status(Phase::Failed, Some("abc"), 0, 0);
        let p = progress(&old, &new, &[event("AnalysisFailed")], Some(&[gate(Verdict::Fail)]));
        assert_eq!(p.ended.unwrap().outcome, Outcome::Failed);
        let finished = p.finished.unwrap();
        assert_eq!(finished.outcome, Outcome::Failed);
        assert_eq!(finished.started, Some(at(10).0), "no condition: the stage's start");
        assert_eq!(p.check.unwrap().gates[0].verdict, Verdict::Fail);
    }

    #[test]
    fn an_abort_is_told_apart_from_a_failure() {
        let old = status(Phase::Paused, Some("abc"), 2, 10);
        let new = status(Phase::Failed, Some("abc"), 0, 0);
        let p = progress(&old, &new, &[event("Aborted")], None);
        assert_eq!(p.ended.unwrap().outcome, Outcome::Aborted);
        assert_eq!(p.finished.unwrap().outcome, Outcome::Aborted);
    }

    #[test]
    fn a_new_revision_mid_rollout_supersedes_the_old_one() {
        let old = status(Phase::Progressing, Some("abc"), 1, 10);
        let new = status(Phase::Progressing, Some("def"), 0, 20);
        let p = progress(&old, &new, &[event("RevisionChanged")], None);
        assert_eq!(p.ended.unwrap().outcome, Outcome::Superseded);
        assert_eq!(p.finished.unwrap().revision, "abc");
        assert!(p.new_rollout);
        assert_eq!(p.began.unwrap().0.revision, "def");
    }

    #[test]
    fn going_back_to_the_promoted_revision_reverts() {
        let old = status(Phase::Progressing, Some("abc"), 1, 10);
        let new = status(Phase::Idle, None, 0, 0);
        let p = progress(&old, &new, &[event("RevisionReverted")], None);
        assert_eq!(p.ended.unwrap().outcome, Outcome::Reverted);
        assert_eq!(p.finished.unwrap().outcome, Outcome::Reverted);
    }

    #[test]
    fn a_repeated_check_or_a_pause_is_the_same_stage() {
        let old = status(Phase::Progressing, Some("abc"), 1, 10);
        let retried = status(Phase::Progressing, Some("abc"), 1, 40);
        let p = progress(&old, &retried, &[event("CheckFailed")], Some(&[gate(Verdict::Fail)]));
        assert_eq!((p.ended, p.began.is_some()), (None, false));
        assert!(p.check.is_some(), "the check is still reported");
        let paused = status(Phase::Paused, Some("abc"), 1, 40);
        assert_eq!(progress(&retried, &paused, &[event("Paused")], None), Progress::default());
    }

    #[test]
    fn no_check_is_reported_without_gates_or_outside_a_step() {
        let old = status(Phase::Progressing, Some("abc"), 1, 10);
        assert_eq!(progress(&old, &old, &[], Some(&[])).check, None);
        let scaling = status(Phase::Progressing, Some("abc"), 0, 10);
        assert_eq!(progress(&scaling, &scaling, &[], Some(&[gate(Verdict::Pass)])).check, None);
    }

    #[test]
    fn outcome_labels_are_distinct_and_lowercase() {
        let labels: std::collections::BTreeSet<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
        assert!(labels.iter().all(|l| l.chars().all(|c| c.is_ascii_lowercase())));
    }
}
