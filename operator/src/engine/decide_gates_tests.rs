//! One test per transition that webhooks, deployment windows and the failure policy add to the
//! state diagram in `decide.rs`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::api::{HookState, Phase, RolloutSpec, Verdict, WaitGate, WaitReason, WebhookType};
use crate::webhooks::HookOutcome;

fn hook(name: &str, type_: &str) -> serde_json::Value {
    json!({"name": name, "type": type_, "url": format!("http://127.0.0.1:9/{name}")})
}

fn with_hooks(hooks: &[(&str, &str)]) -> RolloutSpec {
    let hooks: Vec<_> = hooks.iter().map(|(n, t)| hook(n, t)).collect();
    spec(json!({"webhooks": hooks}))
}

fn outcome(name: &str, type_: WebhookType, code: u16) -> HookOutcome {
    let ok = (200..300).contains(&code);
    HookOutcome {
        name: name.into(),
        type_,
        ok,
        code: Some(code),
        attempts: 1,
        message: format!("answered {code}"),
    }
}

fn answered(mut o: Observations, outcomes: Vec<HookOutcome>) -> Observations {
    o.hooks = outcomes;
    o
}

fn names(hooks: Vec<&crate::api::Webhook>) -> Vec<String> {
    hooks.into_iter().map(|h| h.name.clone()).collect()
}

/// Rev2 is new; the primary runs rev1.
fn new_revision() -> Observations {
    obs(workload("rev2", 0, false), Some(workload("rev1", 3, true)))
}

fn canary_ready() -> Observations {
    obs(workload("rev2", 3, true), Some(workload("rev1", 3, true)))
}

fn waiting(d: &Decision) -> &crate::api::WaitingStatus {
    d.status.waiting.as_ref().expect("a waiting status")
}

// ----- confirm-rollout ---------------------------------------------------------------------------

#[test]
fn confirm_rollout_holds_a_new_revision_before_the_canary_starts() {
    let s = with_hooks(&[("gate", "confirm-rollout")]);
    let d = decide(&s, &idle(), &new_revision(), at(0));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert_eq!(d.status.canary_revision.as_deref(), Some("rev2"));
    let w = waiting(&d);
    assert_eq!(
        (w.reason, w.before, w.hook.as_deref()),
        (WaitReason::Approval, WaitGate::Start, Some("gate"))
    );
    assert!(d.status.message.as_deref().unwrap().contains("waiting for approval from gate"));
    assert_eq!(d.desired.canary_replicas, 0, "the canary is not scaled up");
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev1"));
    assert_eq!(reasons(&d), vec!["WaitingForApproval"]);
    assert_eq!(d.requeue_after, Some(Duration::from_millis(100)), "asks at once");
    assert_eq!(cond(&d, "Reconciling"), "True");
    assert_eq!(names(hooks_due(&s, &d.status, &new_revision(), at(0))), vec!["gate"]);
}

#[test]
fn an_approval_starts_the_canary() {
    let s = with_hooks(&[("gate", "confirm-rollout")]);
    let w = decide(&s, &idle(), &new_revision(), at(0)).status;
    let o = answered(new_revision(), vec![outcome("gate", WebhookType::ConfirmRollout, 200)]);
    let d = decide(&s, &w, &o, at(1));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(d.status.step, 0);
    assert_eq!(d.desired.canary_replicas, 3, "now the canary scales up");
    assert_eq!(reasons(&d), vec!["Approved", "NewRevision"]);
    assert_eq!(d.status.waiting, None);
    let recorded = &d.status.hooks[0];
    assert_eq!(
        (recorded.state, recorded.code, recorded.revision.as_deref()),
        (HookState::Passed, Some(200), Some("rev2"))
    );
    assert!(hooks_due(&s, &d.status, &o, at(1)).is_empty(), "not asked again");
}

#[test]
fn a_rejected_approval_keeps_waiting_and_asks_again_each_interval() {
    let s = with_hooks(&[("gate", "confirm-rollout")]);
    let w = decide(&s, &idle(), &new_revision(), at(0)).status;
    let o = answered(new_revision(), vec![outcome("gate", WebhookType::ConfirmRollout, 403)]);
    let d = decide(&s, &w, &o, at(1));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert_eq!(reasons(&d), vec!["ApprovalRejected"]);
    let message = d.status.message.clone().unwrap();
    assert!(
        message.contains("waiting for approval from gate") && message.contains("answered 403"),
        "{message}"
    );
    assert_eq!(d.requeue_after, Some(Duration::from_secs(60)), "asks again after an interval");
    assert!(hooks_due(&s, &d.status, &new_revision(), at(30)).is_empty());
    assert_eq!(names(hooks_due(&s, &d.status, &new_revision(), at(61))), vec!["gate"]);

    // Rejected again: no new Event; the wait keeps its start.
    let o = answered(new_revision(), vec![outcome("gate", WebhookType::ConfirmRollout, 403)]);
    let again = decide(&s, &d.status, &o, at(61));
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(waiting(&again).since, Some(Time(at(0))));
    // The progress deadline (300 s) does not fail a rollout waiting for approval.
    let later = decide(&s, &again.status, &new_revision(), at(5000));
    assert_eq!(later.status.phase, Phase::Waiting);
}

#[test]
fn every_confirm_hook_must_approve_and_approvals_are_kept() {
    let s = with_hooks(&[("a", "confirm-rollout"), ("b", "confirm-rollout")]);
    let w = decide(&s, &idle(), &new_revision(), at(0)).status;
    let o = answered(
        new_revision(),
        vec![outcome("a", WebhookType::ConfirmRollout, 200), outcome("b", WebhookType::ConfirmRollout, 500)],
    );
    let d = decide(&s, &w, &o, at(1));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert_eq!(waiting(&d).hook.as_deref(), Some("b"));
    assert_eq!(names(hooks_due(&s, &d.status, &new_revision(), at(70))), vec!["b"], "a approved already");
}

#[test]
fn a_newer_revision_while_waiting_to_start_waits_for_its_own_approval() {
    let s = with_hooks(&[("gate", "confirm-rollout")]);
    let w = decide(&s, &idle(), &new_revision(), at(0)).status;
    let o = obs(workload("rev3", 0, false), Some(workload("rev1", 3, true)));
    let d = decide(&s, &w, &o, at(5));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert_eq!(d.status.canary_revision.as_deref(), Some("rev3"));
    // Back at the promoted revision: nothing to wait for.
    let o = obs(workload("rev1", 0, false), Some(workload("rev1", 3, true)));
    let d = decide(&s, &w, &o, at(5));
    assert_eq!(d.status.phase, Phase::Idle);
}

// ----- pre-rollout -------------------------------------------------------------------------------

#[test]
fn pre_rollout_runs_when_the_canary_is_ready_and_passing_takes_step_one() {
    let s = with_hooks(&[("migrate", "pre-rollout")]);
    let st = status(Phase::Progressing, 0, 0, 0);
    assert!(hooks_due(&s, &st, &obs(workload("rev2", 3, false), None), at(5)).is_empty(), "not before ready");
    assert_eq!(names(hooks_due(&s, &st, &canary_ready(), at(5))), vec!["migrate"]);

    // Not called yet (the canary became ready within this decision): ask at once.
    let d = decide(&s, &st, &canary_ready(), at(5));
    assert_eq!(d.status.step, 0);
    assert_eq!(d.requeue_after, Some(Duration::from_millis(100)));
    assert!(d.status.message.unwrap().contains("pre-rollout"));

    let o = answered(canary_ready(), vec![outcome("migrate", WebhookType::PreRollout, 200)]);
    let d = decide(&s, &st, &o, at(5));
    assert_eq!(d.status.step, 1);
    assert_eq!(reasons(&d), vec!["StepAdvanced"]);
    assert!(hooks_due(&s, &d.status, &canary_ready(), at(500)).is_empty(), "once per revision");
}

#[test]
fn a_failed_pre_rollout_is_a_failed_check_and_blocks_step_one() {
    let s = spec(json!({"webhooks": [hook("migrate", "pre-rollout")], "analysis": {"tolerance": 1}}));
    let o = answered(canary_ready(), vec![outcome("migrate", WebhookType::PreRollout, 500)]);
    let d = decide(&s, &status(Phase::Progressing, 0, 0, 0), &o, at(5));
    assert_eq!((d.status.phase, d.status.step, d.status.failed_checks), (Phase::Progressing, 0, 1));
    assert_eq!(reasons(&d), vec!["WebhookFailed"]);
    assert!(d.events[0].warning);
    let message = d.status.message.clone().unwrap();
    assert!(message.contains("pre-rollout webhook migrate failed: answered 500"), "{message}");
    assert!(hooks_due(&s, &d.status, &canary_ready(), at(30)).is_empty());
    assert_eq!(
        names(hooks_due(&s, &d.status, &canary_ready(), at(65))),
        vec!["migrate"],
        "again an interval later"
    );

    let again = decide(&s, &d.status, &o, at(65));
    assert_eq!(again.status.phase, Phase::Failed, "beyond tolerance");
    assert_eq!(reasons(&again), vec!["AnalysisFailed"]);
    assert!(again.status.message.unwrap().contains("migrate"));
}

// ----- rollout -----------------------------------------------------------------------------------

#[test]
fn rollout_hooks_are_called_at_each_due_check() {
    let s = with_hooks(&[("load", "rollout")]);
    let st = status(Phase::Progressing, 1, 25, 0);
    assert!(hooks_due(&s, &st, &canary_ready(), at(30)).is_empty());
    assert_eq!(names(hooks_due(&s, &st, &canary_ready(), at(60))), vec!["load"]);

    // Due but not answered yet: no step is taken without them.
    let d = decide(&s, &st, &canary_ready(), at(60));
    assert_eq!(d.status.step, 1);
    assert_eq!(d.requeue_after, Some(Duration::from_millis(100)));

    let o = answered(canary_ready(), vec![outcome("load", WebhookType::Rollout, 200)]);
    let d = decide(&s, &st, &o, at(60));
    assert_eq!(d.status.step, 2);
    assert_eq!(d.status.hooks[0].state, HookState::Passed);
}

#[test]
fn a_failing_rollout_hook_counts_against_tolerance_and_rolls_back() {
    let s = spec(json!({"webhooks": [hook("load", "rollout")],
        "analysis": {"tolerance": 1, "gates": {"successRate": {"min": 99}}}}));
    let mut o = answered(canary_ready(), vec![outcome("load", WebhookType::Rollout, 503)]);
    o.gates = Some(vec![gate(Verdict::Pass, 99.9)]);
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!((d.status.step, d.status.failed_checks), (1, 1), "held at the step");
    assert_eq!(reasons(&d), vec!["WebhookFailed"]);
    assert_eq!(d.status.gates, vec![gate(Verdict::Pass, 99.9)], "gate values still recorded");
    let again = decide(&s, &d.status, &o, at(120));
    assert_eq!(again.status.phase, Phase::Failed);
    assert_eq!(reasons(&again), vec!["AnalysisFailed"]);
    assert!(again.status.message.unwrap().contains("rollout webhook load failed: answered 503"));
    // Deciding again on the same outcome counts nothing twice.
    let same = decide(&s, &d.status, &o, at(60));
    assert_eq!(same.status, d.status);
}

#[test]
fn rollout_hooks_run_with_the_sequential_method_too() {
    let s = spec(json!({"webhooks": [hook("load", "rollout")], "analysis": {"method": "sequential"}}));
    let o = answered(canary_ready(), vec![outcome("load", WebhookType::Rollout, 500)]);
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Failed, "tolerance 0");
    assert_eq!(reasons(&d), vec!["AnalysisFailed"]);
}

// ----- confirm-promotion -------------------------------------------------------------------------

#[test]
fn confirm_promotion_holds_the_last_step_with_its_weights() {
    let s = with_hooks(&[("approve", "confirm-promotion")]);
    let d = decide(&s, &status(Phase::Progressing, 2, 50, 0), &canary_ready(), at(60));
    assert_eq!(d.status.phase, Phase::Waiting);
    let w = waiting(&d);
    assert_eq!(
        (w.reason, w.before, w.hook.as_deref()),
        (WaitReason::Approval, WaitGate::Promotion, Some("approve"))
    );
    assert_eq!(
        d.status.message.as_deref(),
        Some("step 2/2: waiting for approval from approve (confirm-promotion)")
    );
    assert_eq!((d.desired.canary_weight, d.desired.canary_replicas), (50, 3), "weights held");
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev1"), "not promoted");
    assert_eq!(reasons(&d), vec!["WaitingForApproval"]);
    assert_eq!(names(hooks_due(&s, &d.status, &canary_ready(), at(60))), vec!["approve"]);

    // Rejected: keeps waiting.
    let o = answered(canary_ready(), vec![outcome("approve", WebhookType::ConfirmPromotion, 409)]);
    let rejected = decide(&s, &d.status, &o, at(61));
    assert_eq!(rejected.status.phase, Phase::Waiting);
    assert_eq!(reasons(&rejected), vec!["ApprovalRejected"]);
    assert!(rejected.status.message.clone().unwrap().contains("waiting for approval from approve"));

    // Approved at the next ask: promoted.
    let o = answered(canary_ready(), vec![outcome("approve", WebhookType::ConfirmPromotion, 200)]);
    let approved = decide(&s, &rejected.status, &o, at(121));
    assert_eq!(approved.status.phase, Phase::Promoting);
    assert_eq!(reasons(&approved), vec!["Approved", "Promoting"]);
    assert_eq!(approved.desired.primary_revision.as_deref(), Some("rev2"));
}

#[test]
fn checks_go_on_while_the_promotion_waits() {
    let s = spec(json!({"webhooks": [hook("approve", "confirm-promotion")],
        "analysis": {"gates": {"successRate": {"min": 99}}}}));
    let mut o = canary_ready();
    o.gates = Some(vec![gate(Verdict::Pass, 99.9)]);
    let w = decide(&s, &status(Phase::Progressing, 2, 50, 0), &o, at(60));
    assert_eq!(w.status.phase, Phase::Waiting);
    assert_eq!(w.status.step_started_at, Some(Time(at(60))), "the next check is an interval away");
    assert!(check_due(&s, &w.status, at(120)));

    // A passing check while waiting: still waiting, quietly.
    let d = decide(&s, &w.status, &o, at(120));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert!(d.events.is_empty(), "{:?}", d.events);
    assert_eq!(waiting(&d).since, Some(Time(at(60))));

    // A failing one: back to Progressing with the failure; tolerance 0 rolls back.
    o.gates = Some(vec![gate(Verdict::Fail, 90.0)]);
    let d = decide(&s, &w.status, &o, at(120));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(reasons(&d), vec!["AnalysisFailed"]);
}

// ----- rollback ----------------------------------------------------------------------------------

#[test]
fn a_rollback_hook_answering_2xx_rolls_back() {
    let s = with_hooks(&[("stop", "rollback")]);
    let st = status(Phase::Progressing, 1, 25, 0);
    assert_eq!(names(hooks_due(&s, &st, &canary_ready(), at(10))), vec!["stop"]);
    let o = answered(canary_ready(), vec![outcome("stop", WebhookType::Rollback, 404)]);
    let d = decide(&s, &st, &o, at(10));
    assert_eq!(d.status.phase, Phase::Progressing, "a non-2xx answer asks for nothing");
    assert!(d.events.is_empty());
    assert!(hooks_due(&s, &d.status, &canary_ready(), at(30)).is_empty(), "asked every interval");
    assert_eq!(names(hooks_due(&s, &d.status, &canary_ready(), at(70))), vec!["stop"]);

    let o = answered(canary_ready(), vec![outcome("stop", WebhookType::Rollback, 200)]);
    let d = decide(&s, &d.status, &o, at(70));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(d.desired.canary_weight, 0);
    assert_eq!(reasons(&d), vec!["RollbackRequested"]);
    assert!(d.status.message.unwrap().contains("webhook stop asked for a rollback"));
}

#[test]
fn a_rollback_request_rolls_back_even_with_freeze() {
    let mut s = with_hooks(&[("stop", "rollback")]);
    s.on_failure = FailurePolicy::Freeze;
    let o = answered(canary_ready(), vec![outcome("stop", WebhookType::Rollback, 200)]);
    for phase in [Phase::Progressing, Phase::Frozen] {
        let d = decide(&s, &status(phase, 1, 25, 0), &o, at(10));
        assert_eq!(d.status.phase, Phase::Failed, "from {phase:?}");
    }
}

// ----- post-rollout ------------------------------------------------------------------------------

#[test]
fn post_rollout_is_called_once_per_finished_revision() {
    let s = with_hooks(&[("report", "post-rollout")]);
    let promoted = obs(workload("rev2", 3, true), Some(workload("rev2", 3, true)));
    let d = decide(&s, &status(Phase::Promoting, 2, 50, 0), &promoted, at(30));
    assert_eq!(d.status.phase, Phase::Succeeded);
    assert_eq!(d.status.hooks[0].state, HookState::Pending);
    assert_eq!(d.requeue_after, Some(Duration::from_millis(100)));
    assert_eq!(names(hooks_due(&s, &d.status, &promoted, at(30))), vec!["report"]);

    let o = answered(promoted.clone(), vec![outcome("report", WebhookType::PostRollout, 500)]);
    let called = decide(&s, &d.status, &o, at(31));
    let recorded = &called.status.hooks[0];
    assert_eq!((recorded.state, recorded.revision.as_deref()), (HookState::Failed, Some("rev2")));
    assert!(called.events.is_empty(), "its outcome is only recorded");
    assert!(hooks_due(&s, &called.status, &promoted, at(500)).is_empty(), "once");

    // A rollback finishes a revision too.
    let o = with_request(canary_ready(), RequestAction::Abort, "abort/1");
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &o, at(5));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(names(hooks_due(&s, &d.status, &o, at(5))), vec!["report"]);
}

#[test]
fn hooks_removed_from_the_spec_leave_status() {
    let s = with_hooks(&[("load", "rollout")]);
    let o = answered(canary_ready(), vec![outcome("load", WebhookType::Rollout, 200)]);
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!(d.status.hooks.len(), 1);
    let d = decide(&spec(json!({})), &d.status, &canary_ready(), at(61));
    assert!(d.status.hooks.is_empty());
}

// ----- deployment windows ------------------------------------------------------------------------

fn windowed(cron: &str, zone: &str, scope: &str) -> RolloutSpec {
    spec(
        json!({"schedule": {"scope": scope, "windows": [{"cron": cron, "duration": "1h", "timeZone": zone}]}}),
    )
}

// at(0) is Friday 2027-01-15 08:00 UTC, 09:00 in Berlin.

#[test]
fn outside_a_window_a_new_revision_waits_with_the_next_start() {
    let s = windowed("0 10 * * *", "Europe/Berlin", "all");
    let d = decide(&s, &idle(), &new_revision(), at(0));
    assert_eq!(d.status.phase, Phase::Waiting);
    let w = waiting(&d);
    assert_eq!((w.reason, w.before), (WaitReason::Window, WaitGate::Start));
    assert_eq!(w.next_window_start, Some(Time(at(3600))));
    assert_eq!(
        d.status.message.as_deref(),
        Some(
            "revision rev2: outside deployment windows; next window opens at 2027-01-15 10:00 CET \
             (Europe/Berlin), 09:00 UTC"
        )
    );
    assert_eq!(d.desired.canary_replicas, 0);
    assert_eq!(reasons(&d), vec!["WaitingForWindow"]);
    assert_eq!(d.requeue_after, Some(Duration::from_secs(3600)), "wakes when it opens");

    let opened = decide(&s, &d.status, &new_revision(), at(3600));
    assert_eq!(opened.status.phase, Phase::Progressing);
    assert_eq!(reasons(&opened), vec!["WindowOpened", "NewRevision"]);
}

#[test]
fn inside_a_window_a_new_revision_starts_at_once() {
    let s = windowed("0 8 * * *", "UTC", "all");
    let d = decide(&s, &idle(), &new_revision(), at(60));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!(reasons(&d), vec!["NewRevision"]);
}

#[test]
fn a_due_step_waits_for_the_window_with_its_weight() {
    let s = windowed("0 9 * * *", "UTC", "all");
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &canary_ready(), at(60));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert_eq!(waiting(&d).before, WaitGate::Step);
    assert_eq!(d.status.step, 1);
    assert_eq!((d.desired.canary_weight, d.desired.canary_replicas), (25, 3), "the canary keeps its weight");
    assert!(d.status.message.as_deref().unwrap().starts_with("step 1/2: outside deployment windows"));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(60)), "checks go on each interval");

    // Checks at 120, 180, ... keep it waiting; at 3600 the window opens.
    let mut st = d.status;
    for now in (120..3600).step_by(60) {
        let d = decide(&s, &st, &canary_ready(), at(now));
        assert_eq!(d.status.phase, Phase::Waiting);
        assert!(d.events.is_empty(), "at {now}: {:?}", d.events);
        st = d.status;
    }
    let d = decide(&s, &st, &canary_ready(), at(3600));
    assert_eq!(d.status.step, 2);
    assert_eq!(reasons(&d), vec!["WindowOpened", "StepAdvanced"]);
}

#[test]
fn step_zero_waits_for_the_window_before_the_first_weight() {
    let s = windowed("0 9 * * *", "UTC", "all");
    let d = decide(&s, &status(Phase::Progressing, 0, 0, 0), &canary_ready(), at(5));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert_eq!(waiting(&d).before, WaitGate::Step);
    assert_eq!((d.desired.canary_weight, d.desired.canary_replicas), (0, 3), "ready canary kept, no traffic");
}

#[test]
fn scope_promotion_lets_steps_advance_and_holds_the_promotion() {
    let s = windowed("0 9 * * *", "UTC", "promotion");
    let d = decide(&s, &idle(), &new_revision(), at(0));
    assert_eq!(d.status.phase, Phase::Progressing, "the analysis runs at any time");
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &canary_ready(), at(60));
    assert_eq!(d.status.step, 2);
    let d = decide(&s, &status(Phase::Progressing, 2, 50, 0), &canary_ready(), at(60));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert_eq!(waiting(&d).before, WaitGate::Promotion);
    let d = decide(&s, &d.status, &canary_ready(), at(3600));
    assert_eq!(d.status.phase, Phase::Promoting);
}

#[test]
fn a_window_then_an_approval() {
    let mut s = windowed("0 9 * * *", "UTC", "all");
    s.webhooks = with_hooks(&[("approve", "confirm-promotion")]).webhooks;
    let d = decide(&s, &status(Phase::Progressing, 2, 50, 0), &canary_ready(), at(60));
    assert_eq!(waiting(&d).reason, WaitReason::Window);
    assert!(hooks_due(&s, &d.status, &canary_ready(), at(60)).is_empty(), "not asked outside the window");
    let d = decide(&s, &d.status, &canary_ready(), at(3600));
    assert_eq!(waiting(&d).reason, WaitReason::Approval);
    assert_eq!(reasons(&d), vec!["WindowOpened", "WaitingForApproval"]);
}

#[test]
fn an_invalid_schedule_blocks_progress_naming_the_field() {
    let s = windowed("0 9 * * *", "Mars/Olympus", "all");
    let d = decide(&s, &idle(), &new_revision(), at(0));
    assert_eq!(d.status.phase, Phase::Waiting);
    assert_eq!(waiting(&d).reason, WaitReason::InvalidSchedule);
    let message = d.status.message.clone().unwrap();
    assert!(message.contains("spec.schedule.windows[0].timeZone"), "{message}");
    assert_eq!(reasons(&d), vec!["WaitingForWindow"]);
    assert!(d.events[0].warning);
    let again = decide(&s, &d.status, &new_revision(), at(100_000));
    assert_eq!(again.status.phase, Phase::Waiting, "never progresses");
    assert!(again.events.is_empty());
}

#[test]
fn a_manual_promote_overrides_a_window_and_an_approval() {
    let s = windowed("0 9 * * *", "UTC", "all");
    let w = decide(&s, &idle(), &new_revision(), at(0)).status;
    let d = decide(&s, &w, &with_request(new_revision(), RequestAction::Promote, "promote/1"), at(1));
    assert_eq!(d.status.phase, Phase::Progressing, "started by a human");
    assert_eq!(reasons(&d), vec!["NewRevision"]);

    let s = with_hooks(&[("approve", "confirm-promotion")]);
    let w = decide(&s, &status(Phase::Progressing, 2, 50, 0), &canary_ready(), at(60)).status;
    let d = decide(&s, &w, &with_request(canary_ready(), RequestAction::Promote, "promote/2"), at(61));
    assert_eq!(d.status.phase, Phase::Promoting);
    let d = decide(&s, &w, &with_request(canary_ready(), RequestAction::Abort, "abort/1"), at(61));
    assert_eq!(d.status.phase, Phase::Failed);
}

// ----- freeze ------------------------------------------------------------------------------------

fn freezing() -> RolloutSpec {
    spec(json!({"onFailure": "freeze", "analysis": {"tolerance": 0, "gates": {"successRate": {"min": 99}}}}))
}

fn failing_check() -> Observations {
    let mut o = canary_ready();
    o.gates = Some(vec![gate(Verdict::Fail, 90.0)]);
    o
}

#[test]
fn freeze_holds_the_weights_instead_of_rolling_back() {
    let d = decide(&freezing(), &status(Phase::Progressing, 1, 25, 0), &failing_check(), at(60));
    assert_eq!(d.status.phase, Phase::Frozen);
    assert_eq!((d.status.step, d.status.canary_weight), (1, 25));
    assert_eq!((d.desired.canary_weight, d.desired.canary_replicas), (25, 3), "traffic and replicas held");
    assert_eq!(d.desired.primary_revision.as_deref(), Some("rev1"));
    assert_eq!(reasons(&d), vec!["Frozen"]);
    assert!(d.events[0].warning);
    let message = d.status.message.clone().unwrap();
    assert!(message.contains("successRate 90") && message.contains("kubectl serin promote"), "{message}");
    assert_eq!(cond(&d, "Stalled"), "True");
    assert_eq!(cond(&d, "Ready"), "False");

    // Nothing changes by itself, however long it waits.
    let later = decide(&freezing(), &d.status, &failing_check(), at(100_000));
    assert_eq!(later.status, d.status);
    assert!(later.events.is_empty());
    assert!(!check_due(&freezing(), &d.status, at(100_000)));
}

#[test]
fn every_automatic_failure_freezes() {
    // The canary never becomes ready.
    let o = obs(workload("rev2", 3, false), Some(workload("rev1", 3, true)));
    let d = decide(&freezing(), &status(Phase::Progressing, 0, 0, 0), &o, at(300));
    assert_eq!(d.status.phase, Phase::Frozen);
    assert!(d.status.message.unwrap().contains("ProgressDeadlineExceeded"));
    // Its pods crash.
    let mut target = workload("rev2", 3, false);
    target.failure = Some("CrashLoopBackOff".into());
    let d = decide(&freezing(), &status(Phase::Progressing, 1, 25, 0), &obs(target, None), at(1));
    assert_eq!(d.status.phase, Phase::Frozen);
    // An abort still rolls back.
    let o = with_request(canary_ready(), RequestAction::Abort, "abort/1");
    let d = decide(&freezing(), &status(Phase::Progressing, 1, 25, 0), &o, at(1));
    assert_eq!(d.status.phase, Phase::Failed);
}

#[test]
fn promote_resolves_a_freeze_by_going_on() {
    let frozen = decide(&freezing(), &status(Phase::Progressing, 1, 25, 0), &failing_check(), at(60)).status;
    let d = decide(
        &freezing(),
        &frozen,
        &with_request(canary_ready(), RequestAction::Promote, "promote/1"),
        at(70),
    );
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!((d.status.step, d.status.canary_weight, d.status.failed_checks), (2, 50, 0));
    assert_eq!(reasons(&d), vec!["Unfrozen", "StepAdvanced"]);

    let mut at_last = frozen.clone();
    at_last.step = 2;
    at_last.canary_weight = 50;
    let d = decide(
        &freezing(),
        &at_last,
        &with_request(canary_ready(), RequestAction::Promote, "promote/2"),
        at(70),
    );
    assert_eq!(d.status.phase, Phase::Promoting, "at the last step, promote promotes");
    let d = decide(
        &freezing(),
        &frozen,
        &with_request(canary_ready(), RequestAction::PromoteFull, "p/3"),
        at(70),
    );
    assert_eq!(d.status.phase, Phase::Promoting);
}

#[test]
fn abort_resolves_a_freeze_by_rolling_back() {
    let frozen = decide(&freezing(), &status(Phase::Progressing, 1, 25, 0), &failing_check(), at(60)).status;
    let d =
        decide(&freezing(), &frozen, &with_request(canary_ready(), RequestAction::Abort, "abort/1"), at(70));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!((d.desired.canary_weight, d.desired.canary_replicas), (0, 0));
    assert_eq!(reasons(&d), vec!["Aborted"]);
}

#[test]
fn a_new_revision_while_frozen_starts_over() {
    let frozen = decide(&freezing(), &status(Phase::Progressing, 1, 25, 0), &failing_check(), at(60)).status;
    let o = obs(workload("rev3", 3, false), Some(workload("rev1", 3, true)));
    let d = decide(&freezing(), &frozen, &o, at(70));
    assert_eq!(d.status.phase, Phase::Progressing);
    assert_eq!((d.status.step, d.status.canary_revision.as_deref()), (0, Some("rev3")));
    assert_eq!(reasons(&d), vec!["RevisionChanged"]);
}

#[test]
fn a_failing_webhook_freezes_too() {
    let mut s = freezing();
    s.webhooks = with_hooks(&[("load", "rollout")]).webhooks;
    let mut o = answered(canary_ready(), vec![outcome("load", WebhookType::Rollout, 500)]);
    o.gates = Some(vec![gate(Verdict::Pass, 99.9)]);
    let d = decide(&s, &status(Phase::Progressing, 1, 25, 0), &o, at(60));
    assert_eq!(d.status.phase, Phase::Frozen);
    assert!(d.status.message.unwrap().contains("rollout webhook load failed"));
}
