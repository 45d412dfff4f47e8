//! One test per transition of the state diagram in `decide.rs`, plus property tests of the
//! invariants over random observation sequences.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::analysis::sequential::SequentialVerdict;
use crate::api::{GateStatus, Phase, RequestOutcome, RolloutSpec, RolloutStatus, Verdict};

const T0: i64 = 1_800_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).unwrap()
}

fn spec(extra: serde_json::Value) -> RolloutSpec {
    let mut base = json!({
        "targetRef": {"name": "web"}, "service": {"port": 80},
        "strategy": {"stepWeight": 25, "maxWeight": 50, "interval": "1m"},
        "progressDeadlineSeconds": 300
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn gated() -> RolloutSpec {
    spec(json!({"analysis": {"tolerance": 1, "gates": {"successRate": {"min": 99}}}}))
}

fn workload(revision: &str, replicas: i32, ready: bool) -> Workload {
    Workload { revision: revision.into(), replicas, ready, failure: None }
}

fn obs(target: Workload, primary: Option<Workload>) -> Observations {
    Observations {
        generation: Some(1),
        target: Some(target),
        primary,
        gates: None,
        metrics: None,
        request: None,
        hooks: Vec::new(),
    }
}

/// A status at `phase` for canary `rev2` over promoted `rev1`.
fn status(phase: Phase, step: i32, weight: i32, started: i64) -> RolloutStatus {
    RolloutStatus {
        phase,
        step,
        steps: 2,
        canary_weight: weight,
        canary_revision: Some("rev2".into()),
        promoted_revision: Some("rev1".into()),
        step_started_at: Some(Time(at(started))),
        ..RolloutStatus::default()
    }
}

fn idle() -> RolloutStatus {
    RolloutStatus { phase: Phase::Idle, promoted_revision: Some("rev1".into()), ..RolloutStatus::default() }
}

fn gate(verdict: Verdict, value: f64) -> GateStatus {
    GateStatus {
        name: "successRate".into(),
        value: Some(value),
        primary_value: Some(99.9),
        threshold: ">= 99".into(),
        verdict,
        requests: Some(500.0),
        at: None,
    }
}

fn reasons(d: &Decision) -> Vec<&str> {
    d.events.iter().map(|e| e.reason.as_str()).collect()
}

fn cond<'a>(d: &'a Decision, type_: &str) -> &'a str {
    d.status.conditions.iter().find(|c| c.type_ == type_).map_or("absent", |c| c.status.as_str())
}

fn with_request(mut o: Observations, action: RequestAction, id: &str) -> Observations {
    o.request = Some(Request { id: id.into(), action });
    o
}

// ----- Initializing ---------------------------------------------------------------------------

#[test]
fn initializing_creates_the_primary_and_keeps_traffic_on_the_running_app() {
    let d = decide(&spec(json!({})), &RolloutStatus::default(), &obs(workload("rev1", 3, true), None), at(0));
    assert_eq!(d.status.phase, Phase::Initializing);
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev1"));
    assert_eq!(d.desired.primary_replicas, 3, "the primary copies the app's replicas");
    assert_eq!(d.desired.canary_weight, 100, "the app keeps serving until the primary is ready");
    assert_eq!(d.desired.canary_replicas, 3);
    assert_eq!(cond(&d, "Reconciling"), "True");
    assert_eq!(d.requeue_after, Some(Duration::from_secs(300)), "wakes at the progress deadline");
}

#[test]
fn initializing_becomes_idle_when_the_primary_is_ready() {
    let s = RolloutStatus { step_started_at: Some(Time(at(0))), ..RolloutStatus::default() };
    let d = decide(
        &spec(json!({})),
        &s,
        &obs(workload("rev1", 3, true), Some(workload("rev1", 3, true))),
        at(10),
    );
    assert_eq!(d.status.phase, Phase::Idle);
    assert_eq!(d.status.promoted_revision.as_deref(), Some("rev1"));
    assert_eq!(d.desired.canary_weight, 0, "all traffic on the primary");
    assert_eq!(d.desired.canary_replicas, 0, "the app is scaled to zero");
    assert_eq!(reasons(&d), vec!["Initialized"]);
    assert_eq!(cond(&d, "Ready"), "True");
    assert_eq!(cond(&d, "Promoted"), "True");
}

#[test]
fn initializing_waits_for_a_primary_at_the_targets_revision() {
    let s = RolloutStatus { step_started_at: Some(Time(at(0))), ..RolloutStatus::default() };
    let d = decide(
        &spec(json!({})),
        &s,
        &obs(workload("rev2", 3, true), Some(workload("rev1", 3, true))),
        at(10),
    );
    assert_eq!(d.status.phase, Phase::Initializing);
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev2"));
}

#[test]
fn initializing_stalls_at_the_deadline_with_one_event() {
    let s = RolloutStatus { step_started_at: Some(Time(at(0))), ..RolloutStatus::default() };
    let o = obs(workload("rev1", 3, true), Some(workload("rev1", 3, false)));
    let d = decide(&spec(json!({})), &s, &o, at(301));
    assert_eq!(d.status.phase, Phase::Initializing);
    assert_eq!(cond(&d, "Stalled"), "True");
    assert_eq!(cond(&d, "Reconciling"), "False");
    assert_eq!(reasons(&d), vec!["Stalled"]);
    let again = decide(&spec(json!({})), &d.status, &o, at(400));
    assert!(again.events.is_empty(), "the stall is reported once");
}

#[test]
fn a_missing_target_is_explained() {
    let o = Observations { generation: Some(2), ..Observations::default() };
    let d = decide(&spec(json!({})), &RolloutStatus::default(), &o, at(0));
    assert!(d.status.message.unwrap().contains("spec.targetRef.name"));
    assert_eq!(d.status.observed_generation, Some(2));
}

// ----- Idle, Succeeded, Failed ------------------------------------------------------------------

#[test]
fn idle_at_the_promoted_revision_does_nothing() {
    let o = obs(workload("rev1", 0, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &idle(), &o, at(0));
    assert_eq!(d.status.phase, Phase::Idle);
    assert!(d.events.is_empty());
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(d.desired.canary_replicas, 0);
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev1"));
}

#[test]
fn a_new_revision_starts_the_canary_at_step_zero() {
    let o = obs(workload("rev2", 0, false), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &idle(), &o, at(0));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.step, 0);
    assert_eq!(d.status.canary_revision.as_deref(), Some("rev2"));
    assert_eq!(d.desired.canary_replicas, 3, "the canary matches the primary's replicas");
    assert_eq!(d.desired.canary_weight, 0, "no traffic before it is ready");
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev1"), "the primary keeps its revision");
    assert_eq!(reasons(&d), vec!["NewRevision"]);
    assert_eq!(cond(&d, "Ready"), "False");
}

#[test]
fn succeeded_starts_again_on_a_new_revision() {
    let mut s = idle();
    s.phase = Phase::Succeeded;
    let d = decide(
        &spec(json!({})),
        &s,
        &obs(workload("rev2", 0, false), Some(workload("rev1", 3, true))),
        at(0),
    );
    assert_eq!(d.status.phase, Phase::Progressing);
}

#[test]
fn failed_stays_failed_for_the_same_revision() {
    let mut s = status(Phase::Failed, 0, 0, 0);
    s.step_started_at = None;
    let o = obs(workload("rev2", 0, false), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &s, &o, at(100));
    assert_eq!(d.status.phase, Phase::Failed);
    assert!(d.events.is_empty());
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(d.desired.canary_replicas, 0);
    assert_eq!(cond(&d, "Stalled"), "True");
}

#[test]
fn failed_starts_again_on_a_newer_revision() {
    let s = status(Phase::Failed, 0, 0, 0);
    let d = decide(
        &spec(json!({})),
        &s,
        &obs(workload("rev3", 0, false), Some(workload("rev1", 3, true))),
        at(0),
    );
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.canary_revision.as_deref(), Some("rev3"));
}

#[test]
fn failed_becomes_idle_when_the_target_is_reverted() {
    let s = status(Phase::Failed, 0, 0, 0);
    let d = decide(
        &spec(json!({})),
        &s,
        &obs(workload("rev1", 0, false), Some(workload("rev1", 3, true))),
        at(0),
    );
    assert_eq!(d.status.phase, Phase::Idle);
    assert_eq!(cond(&d, "Ready"), "True");
}

// ----- Progressing ------------------------------------------------------------------------------

#[test]
fn a_ready_canary_gets_the_first_step_weight() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Progressing, 0, 0, 0), &o, at(5));
    assert_eq!(d.status.step, 1);
    assert_eq!(d.status.canary_weight, 25);
    assert_eq!(d.desired.canary_weight, 25);
    assert_eq!(d.status.step_started_at, Some(Time(at(5))));
    assert_eq!(reasons(&d), vec!["StepAdvanced"]);
    assert_eq!(d.requeue_after, Some(Duration::from_secs(60)));
}

#[test]
fn a_canary_not_ready_by_the_deadline_is_rolled_back() {
    let o = obs(workload("rev2", 3, false), Some(workload("rev1", 3, true)));
    let early = decide(&spec(json!({})), &status(Phase::Progressing, 0, 0, 0), &o, at(299));
    assert_eq!(early.status.phase, Phase::Progressing);
    assert_eq!(early.requeue_after, Some(Duration::from_secs(1)));
    let d = decide(&spec(json!({})), &status(Phase::Progressing, 0, 0, 0), &o, at(300));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(d.desired.canary_replicas, 0);
    assert_eq!(reasons(&d), vec!["ProgressDeadlineExceeded"]);
    assert!(d.status.message.unwrap().contains("progressDeadlineSeconds"));
}

#[test]
fn a_crash_looping_canary_is_rolled_back_at_once() {
    let mut target = workload("rev2", 3, false);
    target.failure = Some("container web is in CrashLoopBackOff".into());
    let d = decide(&spec(json!({})), &status(Phase::Progressing, 1, 25, 0), &obs(target, None), at(1));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(reasons(&d), vec!["CanaryFailing"]);
    assert!(d.status.message.unwrap().contains("CrashLoopBackOff"));
}

#[test]
fn a_step_waits_for_its_interval() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Progressing, 1, 25, 0), &o, at(40));
    assert_eq!(d.status.step, 1);
    assert!(d.events.is_empty());
    assert_eq!(d.requeue_after, Some(Duration::from_secs(20)));
    assert!(!check_due(&spec(json!({})), &d.status, at(40)));
    assert!(check_due(&spec(json!({})), &d.status, at(60)));
}

#[test]
fn without_gates_a_step_advances_on_time_alone() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!(d.status.step, 2);
    assert_eq!(d.status.canary_weight, 50);
}

#[test]
fn passing_gates_advance_the_step_and_are_recorded() {
    let mut o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    o.gates = Some(vec![gate(Verdict::Pass, 99.8)]);
    let d = decide(&gated(), &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!(d.status.step, 2);
    assert_eq!(d.status.gates, vec![gate(Verdict::Pass, 99.8)]);
}

#[test]
fn the_last_step_passing_starts_promotion() {
    let mut o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    o.gates = Some(vec![gate(Verdict::Pass, 99.8)]);
    let d = decide(&gated(), &status(Phase::Progressing, 2, 50, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Promoting);
    assert_eq!(
        d.desired.primary_revision.as_deref(),
        Some("rev2"),
        "the primary takes the canary's template"
    );
    assert_eq!(d.desired.canary_weight, 50, "the canary keeps its traffic while the primary rolls out");
    assert_eq!(reasons(&d), vec!["CheckPassed", "Promoting"]);
    assert_eq!(d.events[0].message, "step 2/2: gates passed: successRate 99.8 (threshold >= 99)");
}

#[test]
fn a_failed_check_within_tolerance_holds_the_step() {
    let mut o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    o.gates = Some(vec![gate(Verdict::Fail, 97.5)]);
    let d = decide(&gated(), &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.step, 1);
    assert_eq!(d.status.failed_checks, 1);
    assert_eq!(reasons(&d), vec!["CheckFailed"]);
    let message = d.status.message.unwrap();
    assert!(message.contains("successRate 97.5 (threshold >= 99)"), "{message}");
    assert!(message.contains("1 of 1 tolerated"), "{message}");
}

#[test]
fn failed_checks_beyond_tolerance_roll_back_naming_the_gate() {
    let mut o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    o.gates = Some(vec![gate(Verdict::Fail, 95.0)]);
    let mut s = status(Phase::Progressing, 1, 25, 0);
    s.failed_checks = 1;
    let d = decide(&gated(), &s, &o, at(60));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(d.status.gates[0].value, Some(95.0), "the failing values stay in status");
    assert_eq!(reasons(&d), vec!["AnalysisFailed"]);
    assert!(d.events[0].warning);
    assert!(d.status.message.unwrap().contains("successRate 95"));
}

#[test]
fn missing_metrics_hold_and_never_pass() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&gated(), &status(Phase::Progressing, 2, 50, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Progressing, "not promoted on missing metrics");
    assert_eq!(d.status.step, 2);
    assert_eq!(d.status.insufficient_data_since, Some(Time(at(60))));
    assert!(d.status.message.unwrap().contains("insufficient data"));
}

#[test]
fn insufficient_data_gates_hold_too() {
    let mut o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    o.gates = Some(vec![gate(Verdict::InsufficientData, 100.0)]);
    let d = decide(&gated(), &status(Phase::Progressing, 2, 50, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Progressing);
    o.gates = Some(vec![]);
    let d = decide(&gated(), &status(Phase::Progressing, 2, 50, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Progressing, "an empty gate report is not a pass");
}

#[test]
fn holding_past_the_insufficient_data_deadline_fails() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let mut s = status(Phase::Progressing, 1, 25, 560);
    s.insufficient_data_since = Some(Time(at(0)));
    let d = decide(&gated(), &s, &o, at(620));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(reasons(&d), vec!["InsufficientData"]);
}

#[test]
fn insufficient_data_counts_as_a_failed_check_with_the_fail_policy() {
    let spec = spec(json!({"analysis": {"tolerance": 0, "onInsufficientData": {"action": "fail"},
        "gates": {"successRate": {"min": 99}}}}));
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec, &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(reasons(&d), vec!["AnalysisFailed"]);
}

#[test]
fn a_new_revision_mid_rollout_restarts_the_analysis() {
    let o = obs(workload("rev3", 3, false), Some(workload("rev1", 3, true)));
    let mut s = status(Phase::Progressing, 2, 50, 0);
    s.failed_checks = 1;
    let d = decide(&spec(json!({})), &s, &o, at(30));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.step, 0);
    assert_eq!(d.status.failed_checks, 0);
    assert_eq!(d.status.canary_revision.as_deref(), Some("rev3"));
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(reasons(&d), vec!["RevisionChanged"]);
}

#[test]
fn reverting_the_target_mid_rollout_ends_it() {
    let o = obs(workload("rev1", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Progressing, 1, 25, 0), &o, at(30));
    assert_eq!(d.status.phase, Phase::Idle);
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(reasons(&d), vec!["RevisionReverted"]);
}

#[test]
fn pausing_holds_the_weights_and_resuming_restarts_the_step() {
    let paused = spec(json!({"paused": true}));
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&paused, &status(Phase::Progressing, 1, 25, 0), &o, at(600));
    assert_eq!(d.status.phase, Phase::Paused);
    assert_eq!(d.status.step, 1, "no step is taken while paused");
    assert_eq!(d.desired.canary_weight, 25);
    assert_eq!(reasons(&d), vec!["Paused"]);
    assert_eq!(cond(&d, "Reconciling"), "False");

    let resumed = decide(&spec(json!({})), &d.status, &o, at(700));
    assert_eq!(resumed.status.phase, Phase::Progressing);
    assert_eq!(resumed.status.step, 1, "the step starts over rather than advancing at once");
    assert_eq!(resumed.status.step_started_at, Some(Time(at(700))));
    assert_eq!(reasons(&resumed), vec!["Resumed"]);
}

// ----- Promoting --------------------------------------------------------------------------------

#[test]
fn promoting_waits_for_the_primary_to_roll_out() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Promoting, 2, 50, 0), &o, at(10));
    assert_eq!(d.status.phase, Phase::Promoting);
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev2"));
    assert_eq!(d.desired.canary_weight, 50);
    let o = obs(workload("rev2", 3, true), Some(workload("rev2", 3, false)));
    let d = decide(&spec(json!({})), &status(Phase::Promoting, 2, 50, 0), &o, at(20));
    assert_eq!(d.status.phase, Phase::Promoting, "not until the primary is ready");
}

#[test]
fn a_promoted_primary_takes_all_traffic_and_the_canary_scales_down() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev2", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Promoting, 2, 50, 0), &o, at(30));
    assert_eq!(d.status.phase, Phase::Succeeded);
    assert_eq!(d.status.promoted_revision.as_deref(), Some("rev2"));
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(d.desired.canary_replicas, 0);
    assert_eq!(reasons(&d), vec!["Promoted"]);
    assert_eq!(cond(&d, "Ready"), "True");
    assert_eq!(cond(&d, "Promoted"), "True");
}

#[test]
fn promotion_stalls_at_the_deadline() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev2", 3, false)));
    let d = decide(&spec(json!({})), &status(Phase::Promoting, 2, 50, 0), &o, at(301));
    assert_eq!(d.status.phase, Phase::Promoting);
    assert_eq!(cond(&d, "Stalled"), "True");
    assert_eq!(reasons(&d), vec!["Stalled"]);
}

#[test]
fn a_new_revision_during_promotion_restarts_unless_the_primary_took_the_canary() {
    let o = obs(workload("rev3", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Promoting, 2, 50, 0), &o, at(10));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.canary_revision.as_deref(), Some("rev3"));

    let o = obs(workload("rev3", 3, false), Some(workload("rev2", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Promoting, 2, 50, 0), &o, at(10));
    assert_eq!(d.status.promoted_revision.as_deref(), Some("rev2"), "rev2 finishes its promotion");
    assert_eq!(d.status.phase, Phase::Progressing, "then rev3 starts");
    assert_eq!(d.status.canary_revision.as_deref(), Some("rev3"));
    assert_eq!(reasons(&d), vec!["Promoted", "NewRevision"]);
}

// ----- Manual requests --------------------------------------------------------------------------

#[test]
fn promote_advances_one_step_without_waiting() {
    let o = with_request(
        obs(workload("rev2", 3, true), Some(workload("rev1", 3, true))),
        RequestAction::Promote,
        "promote/1",
    );
    let d = decide(&gated(), &status(Phase::Progressing, 1, 25, 0), &o, at(5));
    assert_eq!(d.status.step, 2);
    assert_eq!(d.status.last_request.as_ref().unwrap().outcome, RequestOutcome::Accepted);
    let again = decide(&gated(), &d.status, &o, at(6));
    assert_eq!(again.status.step, 2, "the same request is handled once");
}

#[test]
fn promote_at_the_last_step_promotes() {
    let o = with_request(obs(workload("rev2", 3, true), None), RequestAction::Promote, "promote/2");
    let d = decide(&gated(), &status(Phase::Progressing, 2, 50, 0), &o, at(5));
    assert_eq!(d.status.phase, Phase::Promoting);
}

#[test]
fn promote_full_skips_the_remaining_steps() {
    let o = with_request(obs(workload("rev2", 3, true), None), RequestAction::PromoteFull, "promote-full/1");
    let d = decide(&gated(), &status(Phase::Progressing, 0, 0, 0), &o, at(5));
    assert_eq!(d.status.phase, Phase::Promoting);
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev2"));
}

#[test]
fn abort_rolls_back() {
    let o = with_request(obs(workload("rev2", 3, true), None), RequestAction::Abort, "abort/1");
    let d = decide(&gated(), &status(Phase::Paused, 1, 25, 0), &o, at(5));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(reasons(&d), vec!["Aborted"]);
}

#[test]
fn retry_runs_a_failed_revision_again() {
    let o = with_request(
        obs(workload("rev2", 0, false), Some(workload("rev1", 3, true))),
        RequestAction::Retry,
        "retry/1",
    );
    let d = decide(&gated(), &status(Phase::Failed, 0, 0, 0), &o, at(5));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.step, 0);
    assert_eq!(reasons(&d), vec!["Retry"]);
}

#[test]
fn requests_that_make_no_sense_are_refused_once_with_a_reason() {
    let cases = [
        (idle(), RequestAction::Promote, "progressing, paused"),
        (idle(), RequestAction::Abort, "in progress"),
        (status(Phase::Progressing, 1, 25, 0), RequestAction::Retry, "failed rollout"),
    ];
    for (s, action, why) in cases {
        let target = if s.phase == Phase::Idle { "rev1" } else { "rev2" };
        let o = with_request(obs(workload(target, 3, true), Some(workload("rev1", 3, true))), action, "x/1");
        let d = decide(&spec(json!({})), &s, &o, at(1));
        let handled = d.status.last_request.clone().unwrap();
        assert_eq!(handled.outcome, RequestOutcome::Refused, "{action:?}");
        assert!(handled.message.unwrap().contains(why), "{action:?}");
        assert_eq!(d.status.phase, s.phase, "{action:?} changed nothing");
        assert_eq!(reasons(&d), vec!["RequestRefused"]);
        assert!(decide(&spec(json!({})), &d.status, &o, at(2)).events.is_empty());
    }
}

// ----- Conditions and durations -----------------------------------------------------------------

#[test]
fn conditions_keep_their_transition_time_while_unchanged() {
    let o = obs(workload("rev1", 0, true), Some(workload("rev1", 3, true)));
    let first = decide(&spec(json!({})), &idle(), &o, at(0));
    let later = decide(&spec(json!({})), &first.status, &o, at(500));
    let ready = |d: &Decision| d.status.conditions.iter().find(|c| c.type_ == "Ready").cloned().unwrap();
    assert_eq!(ready(&first).last_transition_time, ready(&later).last_transition_time);
    assert_eq!(first.status, later.status);
}

#[test]
fn requeue_is_never_zero() {
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&spec(json!({})), &status(Phase::Progressing, 1, 25, 0), &o, at(59));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(1)));
}

// ----- Sequential analysis ----------------------------------------------------------------------

/// Sequential method, a check every 10 s within 1-minute steps of 25% and 50%.
fn sequential_spec(settings: serde_json::Value) -> RolloutSpec {
    spec(json!({"analysis": {"method": "sequential", "window": "10s", "minRequests": 100,
        "sequential": settings}}))
}

fn side(requests: f64, failures: f64) -> crate::metrics::WorkloadMetrics {
    crate::metrics::WorkloadMetrics {
        success_count: requests - failures,
        failure_count: failures,
        latency_ms: Default::default(),
        latency_buckets: Vec::new(),
    }
}

/// Observations with a metrics window of `length` seconds ending at `end`.
fn with_window(end: i64, length: u64, canary: (f64, f64), primary: (f64, f64)) -> Observations {
    let mut o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    o.metrics = Some(crate::metrics::MetricsWindow {
        end: at(end),
        length: Duration::from_secs(length),
        canary: Some(side(canary.0, canary.1)),
        primary: Some(side(primary.0, primary.1)),
    });
    o
}

const QUIET: (f64, f64) = (100.0, 0.0);
const QUIET_PRIMARY: (f64, f64) = (300.0, 0.0);

#[test]
fn sequential_checks_every_window_within_a_step() {
    let s = sequential_spec(json!({}));
    let st = status(Phase::Progressing, 1, 25, 0);
    assert!(!check_due(&s, &st, at(9)));
    assert!(check_due(&s, &st, at(10)), "a window has passed");
    let d = decide(&s, &st, &with_window(10, 10, QUIET, QUIET_PRIMARY), at(10));
    assert_eq!(d.status.step, 1, "the step lasts its interval");
    assert_eq!(d.status.step_started_at, Some(Time(at(0))));
    assert!(d.events.is_empty());
    let analysis = d.status.analysis.clone().unwrap();
    assert_eq!(analysis.errors.state.batches, 1);
    assert_eq!(analysis.checked_at, Some(Time(at(10))));
    assert_eq!(analysis.window_end, Some(Time(at(10))));
    assert!(analysis.errors.evaluation.is_some());
    assert!(d.status.message.as_ref().unwrap().contains("e-value"));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(10)), "the next window");
    assert!(!check_due(&s, &d.status, at(15)));
    assert!(check_due(&s, &d.status, at(20)));
}

#[test]
fn sequential_counts_each_window_once() {
    let s = sequential_spec(json!({}));
    let o = with_window(10, 10, QUIET, QUIET_PRIMARY);
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &o, at(10));
    let again = decide(&s, &d.status, &o, at(10));
    assert_eq!(again.status, d.status, "deciding on its own output counts nothing twice");
    // The same window handed over at the next check is not counted again.
    let later = decide(&s, &d.status, &o, at(20));
    assert_eq!(later.status.analysis.as_ref().unwrap().errors.state.batches, 1);
    assert!(later.status.message.unwrap().contains("already counted"));
}

#[test]
fn sequential_regression_rolls_back_at_the_first_check_that_shows_it() {
    let s = sequential_spec(json!({}));
    let o = with_window(10, 10, (1000.0, 30.0), (3000.0, 3.0));
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &o, at(10));
    assert_eq!(d.status.phase, Phase::Failed, "rolled back within the step");
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(reasons(&d), vec!["SequentialRegression"]);
    assert!(d.events[0].warning);
    let message = d.status.message.unwrap();
    assert!(message.contains("e-value") && message.contains("ratio"), "{message}");
    let evaluation = d.status.analysis.unwrap().errors.evaluation.unwrap();
    assert_eq!(evaluation.verdict, SequentialVerdict::Regression, "the evidence stays in status");
}

#[test]
fn sequential_regression_ignores_tolerance() {
    let s = spec(json!({"analysis": {"method": "sequential", "tolerance": 5}}));
    let o = with_window(60, 60, (1000.0, 30.0), (3000.0, 3.0));
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!(reasons(&d), vec!["SequentialRegression"]);
}

#[test]
fn sequential_without_evidence_advances_on_time() {
    let s = sequential_spec(json!({}));
    let mut st = status(Phase::Progressing, 1, 25, 0);
    let mut now = 0;
    for _ in 0..6 {
        now += 10;
        st = decide(&s, &st, &with_window(now, 10, QUIET, QUIET_PRIMARY), at(now)).status;
    }
    assert_eq!(st.step, 2, "600 canary requests at step 1, no evidence: the schedule goes on");
    assert_eq!(st.canary_weight, 50);
    assert_eq!(st.analysis.as_ref().unwrap().errors.state.batches, 6, "kept across steps");
    assert_eq!(st.step_started_at, Some(Time(at(60))));
}

#[test]
fn sequential_window_equal_to_the_interval_checks_once_per_step() {
    let s = spec(json!({"analysis": {"method": "sequential"}}));
    let st = status(Phase::Progressing, 1, 25, 0);
    assert!(!check_due(&s, &st, at(30)));
    let d = decide(&s, &st, &with_window(60, 60, QUIET, QUIET_PRIMARY), at(60));
    assert_eq!(d.status.step, 2);
    assert_eq!(reasons(&d), vec!["StepAdvanced"]);
}

#[test]
fn sequential_too_few_requests_at_the_step_end_hold() {
    let s = sequential_spec(json!({}));
    let d = decide(
        &s,
        &status(Phase::Progressing, 1, 25, 0),
        &with_window(60, 10, (20.0, 0.0), QUIET_PRIMARY),
        at(60),
    );
    assert_eq!(d.status.step, 1);
    assert_eq!(d.status.insufficient_data_since, Some(Time(at(60))));
    let message = d.status.message.unwrap();
    assert!(message.contains("fewer than 100 canary requests"), "{message}");
}

#[test]
fn sequential_missing_metrics_never_pass_the_last_step() {
    let s = sequential_spec(json!({}));
    let o = obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)));
    let d = decide(&s, &status(Phase::Progressing, 2, 50, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Progressing, "not promoted on missing metrics");
    assert_eq!(d.status.insufficient_data_since, Some(Time(at(60))));
    assert!(d.status.message.unwrap().contains("did not answer"));
    // A stale window is no better.
    let d =
        decide(&s, &status(Phase::Progressing, 2, 50, 0), &with_window(0, 10, QUIET, QUIET_PRIMARY), at(600));
    assert_eq!(d.status.phase, Phase::Progressing);
    // With the fail policy it counts as a failed check.
    let strict =
        spec(json!({"analysis": {"method": "sequential", "onInsufficientData": {"action": "fail"}}}));
    let d = decide(&strict, &status(Phase::Progressing, 2, 50, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(reasons(&d), vec!["AnalysisFailed"]);
}

#[test]
fn sequential_last_step_without_evidence_promotes_by_default() {
    let s = spec(json!({"analysis": {"method": "sequential"}}));
    let d =
        decide(&s, &status(Phase::Progressing, 2, 50, 0), &with_window(60, 60, QUIET, QUIET_PRIMARY), at(60));
    assert_eq!(d.status.phase, Phase::Promoting);
    assert_eq!(reasons(&d), vec!["Promoting"]);
    assert!(d.events[0].message.contains("without evidence of a regression"), "{}", d.events[0].message);
}

/// A window with so many failures on both sides, at the same rate, that the ratio's
/// confidence sequence is well below 1.5.
fn convincing(end: i64, length: u64) -> Observations {
    with_window(end, length, (100_000.0, 2_000.0), (100_000.0, 2_000.0))
}

#[test]
fn sequential_no_regression_promotes_early_with_on_no_regression_promote() {
    let s = sequential_spec(json!({"onNoRegression": "promote"}));
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &convincing(10, 10), at(10));
    assert_eq!(d.status.phase, Phase::Promoting, "promoted at step 1, mid-step");
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev2"));
    assert!(d.events[0].message.contains("no regression beyond a failure ratio of 1.5"));
    let evaluation = d.status.analysis.unwrap().errors.evaluation.unwrap();
    assert!(evaluation.ratio_upper.unwrap() < 1.5);
}

#[test]
fn sequential_no_regression_advances_by_default() {
    let s = sequential_spec(json!({}));
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &convincing(10, 10), at(10));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.step, 1, "each step still lasts its interval");
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &convincing(60, 10), at(60));
    assert_eq!(d.status.step, 2);
}

#[test]
fn sequential_last_step_holds_for_evidence_with_hold() {
    let s = spec(json!({"analysis": {"method": "sequential",
        "sequential": {"onNoEvidence": {"action": "hold", "deadline": "5m"}}}}));
    let d =
        decide(&s, &status(Phase::Progressing, 2, 50, 0), &with_window(60, 60, QUIET, QUIET_PRIMARY), at(60));
    assert_eq!(d.status.phase, Phase::Progressing, "held at the last step");
    assert_eq!(d.status.step, 2);
    assert_eq!(reasons(&d), vec!["HoldingForEvidence"]);
    assert_eq!(d.status.analysis.as_ref().unwrap().holding_since, Some(Time(at(60))));
    assert!(d.status.message.as_ref().unwrap().contains("holding for evidence"));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(60)));

    // Still nothing a minute later: keeps holding, without a new Event.
    let held = decide(&s, &d.status, &with_window(120, 60, QUIET, QUIET_PRIMARY), at(120));
    assert_eq!(held.status.phase, Phase::Progressing);
    assert!(held.events.is_empty());

    // Evidence of no regression while holding promotes.
    let promoted = decide(&s, &held.status, &convincing(180, 60), at(180));
    assert_eq!(promoted.status.phase, Phase::Promoting);

    // No evidence by the deadline: rolled back.
    let mut st = held.status;
    let mut now = 120;
    while st.phase == Phase::Progressing && now < 1000 {
        now += 60;
        st = decide(&s, &st, &with_window(now, 60, QUIET, QUIET_PRIMARY), at(now)).status;
    }
    assert_eq!(st.phase, Phase::Failed);
    assert_eq!(now, 360, "5 minutes after the hold began");
    assert!(st.message.unwrap().contains("onNoEvidence.deadline"));
}

#[test]
fn sequential_hold_deadline_event_is_no_evidence() {
    let s = spec(json!({"analysis": {"method": "sequential",
        "sequential": {"onNoEvidence": {"action": "hold", "deadline": "1m"}}}}));
    let mut st = status(Phase::Progressing, 2, 50, 60);
    st.analysis = Some(crate::api::AnalysisStatus { holding_since: Some(Time(at(0))), ..Default::default() });
    let d = decide(&s, &st, &with_window(120, 60, QUIET, QUIET_PRIMARY), at(120));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(reasons(&d), vec!["NoEvidence"]);
}

#[test]
fn a_new_revision_resets_the_sequential_analysis() {
    let s = sequential_spec(json!({}));
    let d =
        decide(&s, &status(Phase::Progressing, 1, 25, 0), &with_window(10, 10, QUIET, QUIET_PRIMARY), at(10));
    assert!(d.status.analysis.is_some());
    let o = obs(workload("rev3", 3, false), Some(workload("rev1", 3, true)));
    let restarted = decide(&s, &d.status, &o, at(15));
    assert_eq!(restarted.status.canary_revision.as_deref(), Some("rev3"));
    assert_eq!(restarted.status.analysis, None);
}

#[test]
fn sequential_checks_pause_with_the_rollout() {
    let mut s = sequential_spec(json!({}));
    s.paused = true;
    assert!(!check_due(&s, &status(Phase::Paused, 1, 25, 0), at(30)));
}

#[test]
fn the_threshold_method_ignores_the_sequential_window_cadence() {
    let s = spec(json!({"analysis": {"window": "10s", "gates": {"successRate": {"min": 99}}}}));
    assert!(!check_due(&s, &status(Phase::Progressing, 1, 25, 0), at(30)));
}

#[path = "decide_gates_tests.rs"]
mod gates;

// ----- Properties -------------------------------------------------------------------------------

mod properties {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Event {
        Tick(u16),
        TargetRevision(u8),
        TargetReady(bool),
        PrimaryReady(bool),
        Gates(Option<Vec<Verdict>>),
        Request(u8),
        Pause(bool),
        Crash(bool),
        /// Canary requests, canary failures, primary requests, primary failures per window; `None`
        /// when the metric source does not answer.
        Traffic(Option<(u16, u16, u16, u16)>),
        /// How webhooks answer from now on: confirm hooks approve, check hooks (pre-rollout,
        /// rollout) pass, a rollback hook asks for a rollback.
        Answers {
            approve: bool,
            pass: bool,
            rollback: bool,
        },
    }

    /// The specs the histories run against.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        NoAnalysis,
        Thresholds,
        /// Sequential, a check every 10 s, default policies.
        Sequential,
        /// Sequential, promote on no regression, hold without evidence.
        SequentialStrict,
        /// Thresholds with every kind of gating webhook and deployment windows (scope all) open
        /// 5 minutes in every 10.
        Gated,
        /// Thresholds with `onFailure: freeze`, a confirm-promotion hook and a promotion window.
        Freeze,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::NoAnalysis),
            Just(Kind::Thresholds),
            Just(Kind::Sequential),
            Just(Kind::SequentialStrict),
            Just(Kind::Gated),
            Just(Kind::Freeze)
        ]
    }

    fn spec_of(kind: Kind) -> RolloutSpec {
        match kind {
            Kind::NoAnalysis => spec(json!({})),
            Kind::Thresholds => gated(),
            Kind::Sequential => sequential_spec(json!({})),
            Kind::SequentialStrict => sequential_spec(json!({"onNoRegression": "promote",
                "onNoEvidence": {"action": "hold", "deadline": "3m"}})),
            Kind::Gated => spec(json!({
                "analysis": {"tolerance": 1, "gates": {"successRate": {"min": 99}}},
                "webhooks": [
                    {"name": "start", "type": "confirm-rollout", "url": "http://h/start"},
                    {"name": "pre", "type": "pre-rollout", "url": "http://h/pre"},
                    {"name": "load", "type": "rollout", "url": "http://h/load"},
                    {"name": "approve", "type": "confirm-promotion", "url": "http://h/approve"},
                    {"name": "stop", "type": "rollback", "url": "http://h/stop"},
                    {"name": "report", "type": "post-rollout", "url": "http://h/report"}
                ],
                "schedule": {"windows": [{"cron": "*/10 * * * *", "duration": "5m"}]}
            })),
            Kind::Freeze => spec(json!({
                "onFailure": "freeze",
                "analysis": {"tolerance": 1, "gates": {"successRate": {"min": 99}}},
                "webhooks": [{"name": "approve", "type": "confirm-promotion", "url": "http://h/approve"}],
                "schedule": {"scope": "promotion", "windows": [{"cron": "*/10 * * * *", "duration": "5m"}]}
            })),
        }
    }

    fn traffic() -> impl Strategy<Value = Option<(u16, u16, u16, u16)>> {
        proptest::option::of(
            (0u16..2000, 0u16..200, 0u16..2000, 0u16..200)
                .prop_map(|(c, cf, p, pf)| (c, cf.min(c), p, pf.min(p))),
        )
    }

    fn verdict() -> impl Strategy<Value = Verdict> {
        prop_oneof![Just(Verdict::Pass), Just(Verdict::Fail), Just(Verdict::InsufficientData)]
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (1u16..400).prop_map(Event::Tick),
            1 => (0u8..3).prop_map(Event::TargetRevision),
            2 => any::<bool>().prop_map(Event::TargetReady),
            2 => any::<bool>().prop_map(Event::PrimaryReady),
            3 => proptest::option::of(proptest::collection::vec(verdict(), 0..3)).prop_map(Event::Gates),
            1 => (0u8..4).prop_map(Event::Request),
            1 => any::<bool>().prop_map(Event::Pause),
            1 => (0u8..10).prop_map(|n| Event::Crash(n == 0)),
            3 => traffic().prop_map(Event::Traffic),
            2 => (any::<bool>(), any::<bool>(), (0u8..8).prop_map(|n| n == 0))
                .prop_map(|(approve, pass, rollback)| Event::Answers { approve, pass, rollback }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

        /// Runs a random life of a Rollout through `decide`, acting like a perfect cluster in
        /// between (the primary takes the desired revision), and checks the invariants at every
        /// step.
        #[test]
        fn invariants_hold_over_random_histories(events in proptest::collection::vec(event(), 1..80), kind in kind()) {
            let base = spec_of(kind);
            let sequential = matches!(kind, Kind::Sequential | Kind::SequentialStrict);
            let mut spec = base.clone();
            let mut status = RolloutStatus::default();
            let mut now = 0i64;
            let mut target = workload("rev1", 3, true);
            let mut primary: Option<Workload> = None;
            let mut gates: Option<Vec<GateStatus>> = None;
            let mut request: Option<Request> = None;
            let mut request_counter = 0;
            let mut traffic: Option<(u16, u16, u16, u16)> = None;
            let (mut approve, mut pass, mut rollback) = (true, true, false);

            for event in events {
                match event {
                    Event::Tick(s) => now += i64::from(s),
                    Event::TargetRevision(r) => target.revision = format!("rev{}", r + 1),
                    Event::TargetReady(r) => target.ready = r,
                    Event::PrimaryReady(r) => if let Some(p) = primary.as_mut() { p.ready = r },
                    Event::Gates(g) => gates = g.map(|vs| vs.into_iter().map(|v| gate(v, 99.0)).collect()),
                    Event::Request(a) => {
                        request_counter += 1;
                        let action = [RequestAction::Promote, RequestAction::PromoteFull, RequestAction::Abort, RequestAction::Retry][a as usize];
                        request = Some(Request { id: format!("r/{request_counter}"), action });
                    }
                    Event::Pause(p) => spec.paused = p,
                    Event::Crash(c) => target.failure = c.then(|| "CrashLoopBackOff".to_string()),
                    Event::Traffic(t) => traffic = t,
                    Event::Answers { approve: a, pass: p, rollback: r } => (approve, pass, rollback) = (a, p, r),
                }
                // Like the reconciler: metrics only when a check is due, a window ending now.
                let due = check_due(&spec, &status, at(now));
                let metrics = traffic.filter(|_| due).map(|(c, cf, p, pf)| crate::metrics::MetricsWindow {
                    end: at(now),
                    length: Duration::from_secs(10),
                    canary: Some(side(f64::from(c), f64::from(cf))),
                    primary: Some(side(f64::from(p), f64::from(pf))),
                });
                let mut o = Observations { generation: Some(1), target: Some(target.clone()), primary: primary.clone(), gates: gates.clone(), metrics, request: request.clone(), hooks: Vec::new() };
                // Like the reconciler: the webhooks that are due, answered as the history says.
                let called = hooks_due(&spec, &status, &o, at(now));
                o.hooks = called.iter().map(|hook| {
                    let ok = match hook.type_ {
                        crate::api::WebhookType::ConfirmRollout | crate::api::WebhookType::ConfirmPromotion => approve,
                        crate::api::WebhookType::PreRollout | crate::api::WebhookType::Rollout => pass,
                        crate::api::WebhookType::Rollback => rollback,
                        _ => true,
                    };
                    crate::webhooks::HookOutcome { name: hook.name.clone(), type_: hook.type_, ok,
                        code: Some(if ok { 200 } else { 500 }), attempts: 1, message: String::new() }
                }).collect();
                let before = status.clone();
                let d = decide(&spec, &status, &o, at(now));
                let manual = d.status.last_request != before.last_request
                    && d.status.last_request.as_ref().is_some_and(|r| r.outcome == RequestOutcome::Accepted);
                let window_open = |scope_applies: bool| {
                    spec.schedule.as_ref().is_none_or(|s| {
                        !scope_applies || crate::schedule::window_state(s, at(now)).is_ok_and(|w| w.is_open())
                    })
                };
                let scope_all = spec.schedule.as_ref().is_some_and(|s| s.scope == crate::api::ScheduleScope::All);
                let approved = |type_: crate::api::WebhookType| {
                    spec.webhooks.iter().filter(|h| h.type_ == type_).all(|h| {
                        d.status.hooks.iter().any(|r| r.name == h.name && r.state == crate::api::HookState::Passed
                            && r.revision == d.status.canary_revision)
                    })
                };

                // Waiting says what for, and only then.
                prop_assert_eq!(d.status.phase == Phase::Waiting, d.status.waiting.is_some());
                prop_assert!(d.status.hooks.len() <= spec.webhooks.len());
                // Waiting to start runs no canary.
                if d.status.waiting.as_ref().is_some_and(|w| w.before == crate::api::WaitGate::Start) {
                    prop_assert_eq!((d.desired.canary_weight, d.desired.canary_replicas), (0, 0));
                }
                // Frozen never changes weights by itself (a human's promote may move it on, and a
                // canary still failing there freezes again; a new revision starts over).
                if before.phase == Phase::Frozen && d.status.phase == Phase::Frozen && !manual
                    && d.status.canary_revision == before.canary_revision
                {
                    prop_assert_eq!(d.status.canary_weight, before.canary_weight);
                    prop_assert_eq!(d.status.step, before.step);
                    prop_assert_eq!(d.desired.canary_weight, before.canary_weight);
                }
                // Only an explicit ask rolls back a rollout that freezes on failure.
                if spec.on_failure == crate::api::FailurePolicy::Freeze
                    && d.status.phase == Phase::Failed && before.phase != Phase::Failed
                    && d.status.canary_revision == before.canary_revision
                {
                    let asked = o.hooks.iter().any(|h| h.type_ == crate::api::WebhookType::Rollback && h.ok);
                    prop_assert!(manual || asked, "rolled back by itself with freeze: {:?}", d.events);
                }
                // A rollback hook's rollback only on its 2xx.
                if d.events.iter().any(|e| e.reason == "RollbackRequested") {
                    prop_assert!(o.hooks.iter().any(|h| h.type_ == crate::api::WebhookType::Rollback && h.ok));
                }
                // Nothing promotes without every confirm-promotion approval, or outside a promotion
                // window, unless a human asked.
                if d.status.phase == Phase::Promoting && before.phase != Phase::Promoting && !manual {
                    prop_assert!(approved(crate::api::WebhookType::ConfirmPromotion), "promoted without approval");
                    prop_assert!(window_open(true), "promoted outside a window");
                }
                // No step is taken and no revision starts outside a window (scope all), nor a
                // revision without its confirm-rollout approval, unless a human asked.
                if !manual && d.status.canary_revision == before.canary_revision && d.status.step > before.step {
                    prop_assert!(window_open(scope_all), "advanced outside a window");
                }
                let started = d.events.iter().any(|e| matches!(e.reason.as_str(), "NewRevision" | "RevisionChanged"));
                if started && !manual {
                    prop_assert!(window_open(scope_all), "started outside a window");
                    prop_assert!(approved(crate::api::WebhookType::ConfirmRollout) || d.status.canary_revision.is_none());
                }

                // Weights always describe all traffic.
                prop_assert!((0..=100).contains(&d.desired.canary_weight));
                prop_assert!((0..=100).contains(&d.status.canary_weight));
                // A failed rollout never routes traffic to the canary, nor runs it.
                if d.status.phase == Phase::Failed {
                    prop_assert_eq!(d.desired.canary_weight, 0);
                    prop_assert_eq!(d.desired.canary_replicas, 0);
                }
                // No promotion without every gate passing at the last step (or a manual promote).
                // (A promotion that waited at its gate passed its check before it waited.)
                if d.status.phase == Phase::Promoting && before.phase != Phase::Promoting
                    && before.phase != Phase::Waiting
                {
                    let evidence = d.status.analysis.as_ref().and_then(|a| a.errors.evaluation.as_ref()).map(|e| e.verdict);
                    if !manual && sequential {
                        // Never promoted on missing metrics; with the strict policies, never
                        // without evidence of no regression.
                        prop_assert!(o.metrics.is_some(), "promoted without metrics");
                        if kind == Kind::SequentialStrict {
                            prop_assert_eq!(evidence, Some(SequentialVerdict::NoRegression));
                        } else {
                            prop_assert_eq!(before.step, before.steps);
                        }
                    } else if !manual {
                        prop_assert_eq!(before.step, before.steps);
                        if base.analysis.is_some() {
                            let all_pass = o.gates.as_ref().is_some_and(|g| !g.is_empty() && g.iter().all(|g| g.verdict == Verdict::Pass));
                            prop_assert!(all_pass, "promoted without passing gates: {:?}", o.gates);
                        }
                    }
                }
                // A sequential rollback is backed by evidence in status.
                if d.events.iter().any(|e| e.reason == "SequentialRegression") {
                    let verdicts: Vec<_> = d.status.analysis.iter()
                        .flat_map(|a| std::iter::once(&a.errors).chain(a.latency.iter()))
                        .filter_map(|t| t.evaluation.as_ref().map(|e| e.verdict)).collect();
                    prop_assert!(verdicts.contains(&SequentialVerdict::Regression));
                }
                // Each call counts at most one window, and only the sequential method keeps state.
                let batches = |s: &RolloutStatus| s.analysis.as_ref().map_or(0, |a| a.errors.state.batches);
                if d.status.canary_revision == before.canary_revision {
                    prop_assert!(batches(&d.status) - batches(&before) <= 1);
                }
                if !sequential {
                    prop_assert!(d.status.analysis.is_none());
                }
                // A promotion only records a revision the canary ran.
                if d.status.promoted_revision != before.promoted_revision && before.phase != Phase::Initializing {
                    prop_assert_eq!(&d.status.promoted_revision, &before.canary_revision);
                }
                // Deciding again on its own output changes nothing.
                let again = decide(&spec, &d.status, &o, at(now));
                prop_assert_eq!(&again.status, &d.status);
                prop_assert_eq!(&again.desired, &d.desired);
                prop_assert!(again.events.is_empty(), "events on re-run: {:?}", again.events);

                // A perfect cluster converges to the desired state.
                if let Some(rev) = &d.desired.primary_revision {
                    let changed = primary.as_ref().is_none_or(|p| &p.revision != rev);
                    if changed {
                        primary = Some(workload(rev, d.desired.primary_replicas, false));
                    }
                }
                target.replicas = d.desired.canary_replicas;
                status = d.status;
            }
        }
    }
}
