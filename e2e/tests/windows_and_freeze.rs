//! User stories of deployment windows and the freeze failure policy with the real operator: a
//! rollout that waits for a window opening during the test, then goes on; a failing canary
//! frozen with its weights held until a human promotes or aborts it with `kubectl serin`.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use serin::api::{HookState, Phase, WaitGate, WaitReason};
use serin_e2e::receiver::Receiver;
use serin_e2e::story::{Story, WAIT};
use serin_e2e::{Operator, eventually, kubectl_serin};

/// Merges `spec` into the Rollout's spec and waits until the operator has seen it.
async fn patch_spec(story: &Story, operator: &Operator, spec: Value) {
    let patched = story
        .rollouts
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
        .await
        .unwrap();
    let generation = patched.metadata.generation;
    story.wait_for("the new generation observed", operator, |s| s.observed_generation >= generation).await;
}

#[tokio::test]
async fn a_rollout_waits_for_a_window_that_opens_during_the_test() {
    let story = Story::new("win-opens", json!({"weights": [50], "interval": "2s"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;

    // A daily window at a minute a little ahead, on the wall clock of Kolkata (UTC+05:30).
    let zone = "Asia/Kolkata";
    let ahead = Timestamp::now().checked_add(SignedDuration::from_secs(25)).unwrap();
    let opens = Timestamp::from_second((ahead.as_second() / 60 + 1) * 60).unwrap();
    let local = opens.to_zoned(serin::schedule::time_zone(zone).unwrap());
    let cron = format!("{} {} * * *", local.minute(), local.hour());
    patch_spec(
        &story,
        &operator,
        json!({"schedule": {"windows": [{"cron": cron, "duration": "1h", "timeZone": zone}]}}),
    )
    .await;

    story.set_image("web:2").await;
    let status = story.wait_phase(Phase::Waiting, &operator).await.status.unwrap();
    let waiting = status.waiting.clone().unwrap();
    assert_eq!((waiting.reason, waiting.before), (WaitReason::Window, WaitGate::Start));
    assert_eq!(waiting.next_window_start.map(|t| t.0), Some(opens), "the next start, from {cron} in {zone}");
    let message = status.message.clone().unwrap();
    let local_time = local.strftime("%H:%M").to_string();
    assert!(message.contains("outside deployment windows"), "{message}");
    assert!(message.contains(&format!("{local_time} IST ({zone})")), "{message}");
    assert!(message.contains(&opens.strftime("%H:%M UTC").to_string()), "{message}");
    assert_eq!(story.replicas("web").await, Some(0), "the new revision does not start");
    assert_eq!(story.weights().await, Some((100, 0)));
    assert_eq!(story.events("WaitingForWindow").await.len(), 1);

    // A CI job waiting on it keeps waiting, and says why when its own timeout ends.
    let (code, out) = kubectl_serin(&story.ns, &["status", "web", "--wait", "--timeout", "2s"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("outside deployment windows"), "{out}");

    // The window opens: the rollout goes on by itself.
    let opened =
        eventually("the rollout to go on once the window opens", Duration::from_secs(240), || async {
            let status = story.status().await;
            (status.phase == Phase::Succeeded).then_some(status)
        })
        .await;
    assert_eq!(opened.promoted_revision, status.canary_revision);
    assert_eq!(story.events("WindowOpened").await.len(), 1);
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:2"));
}

/// A rollout with `onFailure: freeze` whose rollout webhook fails its first check.
async fn frozen_story(prefix: &str) -> (Story, Operator, Receiver) {
    let receiver = Receiver::start("500:migration half done").await;
    let story = Story::new(
        prefix,
        json!({"weights": [20, 50], "interval": "2s"}),
        json!({"onFailure": "freeze", "analysis": {"tolerance": 0},
               "webhooks": [{"name": "check", "type": "rollout", "url": receiver.url("/check"), "retries": 0}]}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    (story, operator, receiver)
}

#[tokio::test]
async fn a_frozen_rollout_holds_its_weights_until_a_human_promotes_it() {
    let (story, operator, receiver) = frozen_story("freeze-promote").await;
    story.set_image("web:2").await;
    // A deploy job waiting on the rollout learns that a human is needed.
    let waiting_job = tokio::spawn({
        let ns = story.ns.clone();
        async move { kubectl_serin(&ns, &["status", "web", "--wait", "--timeout", "90s"]).await }
    });
    let status = story.wait_phase(Phase::Frozen, &operator).await.status.unwrap();
    assert_eq!((status.step, status.canary_weight), (1, 20));
    let message = status.message.clone().unwrap();
    assert!(message.contains("rollout webhook check failed"), "{message}");
    assert!(message.contains("kubectl serin promote"), "{message}");
    assert!(status.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"));
    assert_eq!(story.events("Frozen").await.len(), 1);
    assert!(story.events("AnalysisFailed").await.is_empty(), "not rolled back");

    let (code, out) = waiting_job.await.unwrap();
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("is frozen") && out.contains("kubectl serin promote web"), "{out}");

    // Held: the TrafficSplit keeps the step's weights, the canary keeps running, and no more
    // checks are made, however long it stays frozen.
    assert_eq!(story.weights().await, Some((80, 20)));
    assert_eq!(story.replicas("web").await, Some(2));
    let checks = receiver.requests_to("/check").len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = story.status().await;
    assert_eq!((later.phase, later.step, later.canary_weight), (Phase::Frozen, 1, 20));
    assert_eq!(story.weights().await, Some((80, 20)));
    assert_eq!(receiver.requests_to("/check").len(), checks);
    let (code, out) = kubectl_serin(&story.ns, &["status", "web"]).await;
    assert_eq!(code, 5, "{out}");

    // The migration is fixed; a human lets the rollout go on.
    receiver.script("200");
    let (code, out) = kubectl_serin(&story.ns, &["promote", "web"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepted"), "{out}");
    let done = story.wait_phase(Phase::Succeeded, &operator).await.status.unwrap();
    assert_eq!(story.events("Unfrozen").await.len(), 1);
    assert_eq!(done.hooks.iter().find(|h| h.name == "check").map(|h| h.state), Some(HookState::Passed));
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:2"));
}

#[tokio::test]
async fn abort_resolves_a_freeze_by_rolling_back() {
    let (story, operator, _receiver) = frozen_story("freeze-abort").await;
    story.set_image("web:2").await;
    story.wait_phase(Phase::Frozen, &operator).await;
    assert_eq!(story.weights().await, Some((80, 20)));

    let (code, out) = kubectl_serin(&story.ns, &["abort", "web"]).await;
    assert_eq!(code, 0, "{out}");
    let status = story.wait_phase(Phase::Failed, &operator).await.status.unwrap();
    assert!(status.message.unwrap().contains("aborted"));
    eventually("traffic back on the primary and the canary scaled down", WAIT, || async {
        (story.weights().await? == (100, 0) && story.replicas("web").await? == 0).then_some(())
    })
    .await;
    let (code, out) = kubectl_serin(&story.ns, &["status", "web"]).await;
    assert_eq!(code, 1, "a rollback: {out}");
}
