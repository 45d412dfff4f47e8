//! User stories of webhooks and notifications with the real operator: each hook type at its
//! moment of a real rollout, answered by real local HTTP receivers started by the tests;
//! timeouts and retries end to end; Slack and Teams messages about a real rollback.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use serin::api::{HookState, HookStatus, Phase, RolloutStatus, WaitGate, WaitReason};
use serin_e2e::mesh::traffic::{Canary, Traffic};
use serin_e2e::receiver::{Receiver, Recorded};
use serin_e2e::story::{Story, WAIT};
use serin_e2e::{Operator, eventually, kubectl_serin};

fn hook(name: &str, type_: &str, url: &str, extra: Value) -> Value {
    let mut hook = json!({"name": name, "type": type_, "url": url});
    for (k, v) in extra.as_object().unwrap() {
        hook[k] = v.clone();
    }
    hook
}

fn record<'a>(status: &'a RolloutStatus, name: &str) -> Option<&'a HookStatus> {
    status.hooks.iter().find(|h| h.name == name)
}

/// `(type, phase, step, canary weight, primary weight)` of a webhook request.
fn moment(request: &Recorded) -> (String, String, i64, i64, i64) {
    let body = request.json();
    (
        body["type"].as_str().unwrap().to_string(),
        body["phase"].as_str().unwrap().to_string(),
        body["step"].as_i64().unwrap(),
        body["weights"]["canary"].as_i64().unwrap(),
        body["weights"]["primary"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn confirm_rollout_holds_a_new_revision_until_approved() {
    let gate = Receiver::start("403:not yet").await;
    let story = Story::new(
        "wh-confirm",
        json!({"weights": [50], "interval": "2s"}),
        json!({"webhooks": [hook("start", "confirm-rollout", &gate.url("/start"), json!({}))]}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    assert!(gate.requests().is_empty(), "adopting the app needs no approval");

    story.set_image("web:2").await;
    let rollout = story
        .wait_for("a rejected approval", &operator, |s| {
            s.phase == Phase::Waiting && record(s, "start").is_some_and(|h| h.state == HookState::Failed)
        })
        .await;
    let status = rollout.status.unwrap();
    let waiting = status.waiting.clone().unwrap();
    assert_eq!(
        (waiting.reason, waiting.before, waiting.hook.as_deref()),
        (WaitReason::Approval, WaitGate::Start, Some("start"))
    );
    let message = status.message.clone().unwrap();
    assert!(message.contains("waiting for approval from start"), "{message}");
    assert!(message.contains("answered 403 Forbidden: not yet"), "{message}");
    assert_eq!(record(&status, "start").unwrap().code, Some(403));
    assert_eq!(story.replicas("web").await, Some(0), "the canary is not scaled up");
    assert_eq!(story.weights().await, Some((100, 0)));

    // Asked again each interval, with the revision it would start.
    let asks = gate.wait_for(2, WAIT).await;
    let body = asks[0].json();
    assert_eq!(body["type"], "confirm-rollout");
    assert_eq!(body["phase"], "Waiting");
    assert_eq!(body["revision"].as_str(), status.canary_revision.as_deref());
    let m = moment(&asks[0]);
    assert_eq!((m.2, m.3, m.4), (0, 0, 100), "step 0, all traffic on the primary");
    assert_eq!(story.events("ApprovalRejected").await.len(), 1, "one Event, not one per ask");
    assert_eq!(story.rollout().await.status.unwrap().phase, Phase::Waiting);

    gate.script("200");
    story.wait_phase(Phase::Succeeded, &operator).await;
    assert_eq!(story.events("Approved").await.len(), 1);
    assert_eq!(story.events("WaitingForApproval").await.len(), 1);
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:2"));
}

#[tokio::test]
async fn pre_rollout_and_rollout_hooks_get_the_payload_at_their_moments() {
    let receiver = Receiver::start("200").await;
    let hooks = json!([
        hook("smoke", "pre-rollout", &receiver.url("/pre"), json!({"metadata": {"team": "checkout"}})),
        hook("load", "rollout", &receiver.url("/load"), json!({})),
    ]);
    let story =
        Story::new("wh-moments", json!({"weights": [20, 50], "interval": "2s"}), json!({"webhooks": hooks}))
            .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    let status = story.wait_phase(Phase::Succeeded, &operator).await.status.unwrap();

    let pre = receiver.requests_to("/pre");
    assert_eq!(pre.len(), 1, "pre-rollout runs once per revision");
    assert_eq!(
        moment(&pre[0]),
        ("pre-rollout".into(), "Progressing".into(), 0, 0, 100),
        "before any traffic"
    );
    let body = pre[0].json();
    assert_eq!(body["revision"].as_str(), status.canary_revision.as_deref());
    assert_eq!(body["metadata"]["team"], "checkout");
    assert_eq!(body["rollout"], "web");
    assert_eq!(body["namespace"], story.ns.as_str());

    let load: Vec<_> = receiver.requests_to("/load").iter().map(moment).collect();
    assert_eq!(
        load,
        vec![
            ("rollout".into(), "Progressing".into(), 1, 20, 80),
            ("rollout".into(), "Progressing".into(), 2, 50, 50)
        ],
        "one call at each step's check, with that step's weights"
    );
    assert!(receiver.requests_to("/pre")[0].seq < receiver.requests_to("/load")[0].seq);
    assert!(status.hooks.iter().all(|h| h.state == HookState::Passed), "{:?}", status.hooks);
}

#[tokio::test]
async fn a_failing_rollout_hook_counts_against_tolerance_and_rolls_back() {
    let receiver = Receiver::start("500:overloaded").await;
    let story = Story::new(
        "wh-failing",
        json!({"weights": [20, 50], "interval": "2s"}),
        json!({"analysis": {"tolerance": 1},
               "webhooks": [hook("load", "rollout", &receiver.url("/load"), json!({"retries": 0}))]}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    let status = story.wait_phase(Phase::Failed, &operator).await.status.unwrap();

    let failed = story.events("WebhookFailed").await;
    assert_eq!(failed.len(), 1, "the first failure is tolerated: {failed:?}");
    assert!(failed[0].contains("(1 of 1 tolerated)"), "{failed:?}");
    let message = status.message.clone().unwrap();
    assert!(message.contains("rollout webhook load failed: answered 500"), "{message}");
    assert!(message.contains("2 failed checks, 1 tolerated"), "{message}");
    assert_eq!(receiver.requests_to("/load").len(), 2, "one call per check, no retries");
    let load = record(&status, "load").unwrap().clone();
    assert_eq!((load.state, load.code, load.attempts), (HookState::Failed, Some(500), 1));
    eventually("traffic back on the primary and the canary scaled down", WAIT, || async {
        (story.weights().await? == (100, 0) && story.replicas("web").await? == 0).then_some(())
    })
    .await;
    assert_eq!(story.events("AnalysisFailed").await.len(), 1);
}

#[tokio::test]
async fn a_rejected_promotion_waits_at_the_last_step_until_approved() {
    let gate = Receiver::start("409:change freeze").await;
    let story = Story::new(
        "wh-promotion",
        json!({"weights": [20, 50], "interval": "2s"}),
        json!({"webhooks": [hook("approve", "confirm-promotion", &gate.url("/approve"), json!({}))]}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    let rollout = story
        .wait_for("the promotion waiting after a rejection", &operator, |s| {
            s.phase == Phase::Waiting && record(s, "approve").is_some_and(|h| h.state == HookState::Failed)
        })
        .await;
    let status = rollout.status.unwrap();
    assert_eq!(status.waiting.as_ref().unwrap().before, WaitGate::Promotion);
    assert_eq!(status.waiting.as_ref().unwrap().hook.as_deref(), Some("approve"));
    assert!(status.message.clone().unwrap().contains("waiting for approval from approve"), "{status:?}");
    assert_eq!(story.weights().await, Some((50, 50)), "the last step's weights are held");
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:1"), "not promoted");
    let asks = gate.wait_for(2, WAIT).await;
    assert_eq!(moment(&asks[0]), ("confirm-promotion".into(), "Waiting".into(), 2, 50, 50));
    assert_eq!(
        story.rollout().await.status.unwrap().phase,
        Phase::Waiting,
        "still waiting after asking again"
    );

    // A CI job sees a rollout in progress, and says what it waits for.
    let (code, out) = kubectl_serin(&story.ns, &["status", "web"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("waiting for approval from approve"), "{out}");

    gate.script("200");
    story.wait_phase(Phase::Succeeded, &operator).await;
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:2"));
    assert_eq!(story.events("Approved").await.len(), 1);
}

#[tokio::test]
async fn a_rollback_hook_answering_2xx_rolls_back() {
    let receiver = Receiver::start("404").await;
    let story = Story::new(
        "wh-rollback",
        json!({"weights": [20, 50], "interval": "2s"}),
        json!({"webhooks": [hook("stop", "rollback", &receiver.url("/stop"), json!({}))]}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    story.wait_for("step 1", &operator, |s| s.step == 1).await;
    // Hold the rollout, so the story does not race its promotion.
    story
        .rollouts
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": true}})))
        .await
        .unwrap();
    story.wait_phase(Phase::Paused, &operator).await;
    let asked = receiver.wait_for(1, WAIT).await.len();
    assert_eq!(story.rollout().await.status.unwrap().phase, Phase::Paused, "a 404 asks for nothing");

    receiver.script("200");
    let status = story.wait_phase(Phase::Failed, &operator).await.status.unwrap();
    assert!(receiver.requests().len() > asked);
    let message = status.message.clone().unwrap();
    assert!(message.contains("webhook stop asked for a rollback"), "{message}");
    assert_eq!(story.events("RollbackRequested").await.len(), 1);
    let body = receiver.requests().last().unwrap().json();
    assert_eq!(body["type"], "rollback");
    eventually("traffic back on the primary", WAIT, || async {
        (story.weights().await? == (100, 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn post_rollout_and_event_hooks_hear_how_it_ended() {
    let receiver = Receiver::start("200").await;
    let hooks = json!([
        hook("report", "post-rollout", &receiver.url("/post"), json!({})),
        hook("audit", "event", &receiver.url("/events"), json!({"metadata": {"source": "serin"}})),
    ]);
    let story =
        Story::new("wh-after", json!({"weights": [50], "interval": "2s"}), json!({"webhooks": hooks})).await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    story.wait_phase(Phase::Succeeded, &operator).await;
    let status = story
        .wait_for("the post-rollout call recorded", &operator, |s| {
            record(s, "report").is_some_and(|h| h.state == HookState::Passed)
        })
        .await
        .status
        .unwrap();

    let post = receiver.requests_to("/post");
    assert_eq!(post.len(), 1, "once per finished revision");
    let body = post[0].json();
    assert_eq!((body["type"].as_str(), body["phase"].as_str()), (Some("post-rollout"), Some("Succeeded")));
    assert_eq!(body["revision"].as_str(), status.promoted_revision.as_deref());
    assert_eq!(record(&status, "report").unwrap().revision, status.promoted_revision);

    // Each transition, with its reason and message.
    let expected = ["NewRevision", "StepAdvanced", "Promoting", "Promoted"];
    let told = eventually("the event hook told about every transition", WAIT, || async {
        let told: Vec<Value> = receiver.requests_to("/events").iter().map(Recorded::json).collect();
        let reasons: Vec<&str> = told.iter().filter_map(|b| b["metadata"]["reason"].as_str()).collect();
        expected.iter().all(|r| reasons.contains(r)).then_some(told.clone())
    })
    .await;
    for body in &told {
        assert_eq!(body["type"], "event");
        assert_eq!(body["metadata"]["source"], "serin", "the hook's own metadata too");
        assert!(!body["metadata"]["message"].as_str().unwrap().is_empty(), "{body}");
    }
    for reason in expected {
        let count = told.iter().filter(|b| b["metadata"]["reason"] == reason).count();
        assert_eq!(count, 1, "{reason} told once");
    }
    let promoted = told.iter().find(|b| b["metadata"]["reason"] == "Promoted").unwrap();
    assert_eq!(promoted["phase"], "Succeeded");
}

// ----- timeouts and retries ----------------------------------------------------------------------

#[tokio::test]
async fn a_hanging_hook_times_out_and_counts_as_a_failure() {
    let receiver = Receiver::start("hang 30s").await;
    let story = Story::new(
        "wh-hang",
        json!({"weights": [50], "interval": "2s"}),
        json!({"webhooks": [hook("smoke", "pre-rollout", &receiver.url("/pre"), json!({"timeout": "1s", "retries": 0}))]}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    let status = story.wait_phase(Phase::Failed, &operator).await.status.unwrap();
    let smoke = record(&status, "smoke").unwrap();
    assert_eq!((smoke.state, smoke.code, smoke.attempts), (HookState::Failed, None, 1));
    let why = smoke.message.clone().unwrap();
    assert!(why.contains("1s"), "the timeout is named: {why}");
    let message = status.message.clone().unwrap();
    assert!(message.contains("pre-rollout webhook smoke failed"), "{message}");
    assert_eq!(status.step, 0);
    assert_eq!(receiver.requests_to("/pre").len(), 1);
}

/// A rollout hook answering 503, 503, then 200, with `retries` further attempts.
async fn flaky_rollout_hook(prefix: &str, retries: i32) -> (Story, Operator, Receiver, RolloutStatus) {
    let receiver = Receiver::start("503, 503, 200").await;
    let story = Story::new(
        prefix,
        json!({"weights": [50], "interval": "2s"}),
        json!({"webhooks": [hook("load", "rollout", &receiver.url("/load"), json!({"retries": retries}))]}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    let status = story
        .wait_for("the end of the rollout", &operator, |s| {
            matches!(s.phase, Phase::Succeeded | Phase::Failed)
        })
        .await
        .status
        .unwrap();
    (story, operator, receiver, status)
}

#[tokio::test]
async fn retries_carry_a_hook_through_two_503s() {
    let (story, _operator, receiver, status) = flaky_rollout_hook("wh-retries", 2).await;
    assert_eq!(status.phase, Phase::Succeeded, "{status:?}");
    assert_eq!(receiver.requests_to("/load").len(), 3, "two 503s retried, then 200");
    let load = record(&status, "load").unwrap();
    assert_eq!((load.state, load.code, load.attempts), (HookState::Passed, Some(200), 3));
    assert!(story.events("WebhookFailed").await.is_empty());
}

#[tokio::test]
async fn without_retries_the_first_503_fails_the_check() {
    let (story, _operator, receiver, status) = flaky_rollout_hook("wh-no-retries", 0).await;
    assert_eq!(status.phase, Phase::Failed, "{status:?}");
    assert_eq!(receiver.requests_to("/load").len(), 1);
    let load = record(&status, "load").unwrap();
    assert_eq!((load.state, load.code, load.attempts), (HookState::Failed, Some(503), 1));
    assert!(status.message.unwrap().contains("rollout webhook load failed: answered 503"));
    assert_eq!(story.events("AnalysisFailed").await.len(), 1);
}

// ----- notifications -----------------------------------------------------------------------------

async fn secret(story: &Story, name: &str, address: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"address": address}
    }))
    .unwrap();
    Api::<Secret>::namespaced(story.client.clone(), &story.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
async fn slack_and_teams_hear_a_real_rollback_with_the_failing_gate() {
    let (slack, teams) = (Receiver::start("200").await, Receiver::start("200").await);
    // Real traffic: the canary fails 30% of its requests; the gates read Prometheus directly.
    let analysis = json!({
        "source": {"prometheus": {"address": "PROMETHEUS_URL"}},
        "window": "4s", "minRequests": 10, "tolerance": 0,
        "gates": {"successRate": {"min": 99}}
    });
    let story = Story::new(
        "wh-notify",
        json!({"weights": [50], "interval": "4s"}),
        json!({"progressDeadlineSeconds": 60, "notifications": [
            {"type": "slack", "secretRef": {"name": "slack"}},
            {"type": "teams", "secretRef": {"name": "teams"}, "severity": "error"}
        ]}),
    )
    .await;
    secret(&story, "slack", &slack.url("/services/T000/B000/XXXX")).await;
    secret(&story, "teams", &teams.url("/workflows/abc/triggers/manual/paths/invoke")).await;
    let traffic = Traffic::start(
        env!("CARGO_BIN_EXE_serin-demo-app").as_ref(),
        env!("CARGO_BIN_EXE_serin-mesh").as_ref(),
        &story.ns,
        Canary { error_rate: 0.3, latency_ms: 5 },
        40,
    )
    .await;
    let analysis: Value =
        serde_json::from_str(&analysis.to_string().replace("PROMETHEUS_URL", &traffic.prometheus_url()))
            .unwrap();
    story
        .rollouts
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"analysis": analysis}})))
        .await
        .unwrap();
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    let status = story.wait_phase(Phase::Failed, &operator).await.status.unwrap();
    let gate = status.gates.iter().find(|g| g.name == "successRate").unwrap();
    let value = gate.value.unwrap();
    assert!(value < 99.0, "{gate:?}");

    // Teams (severity error) hears only the rollback; Slack (info) the start and the rollback.
    let teams_bodies = teams.wait_for(1, WAIT).await;
    let slack_bodies = eventually("Slack told about the rollback", WAIT, || async {
        let bodies = slack.requests();
        bodies.iter().any(|r| r.body.contains("rolled back")).then_some(bodies)
    })
    .await;
    assert_eq!(teams_bodies.len(), 1, "{teams_bodies:?}");
    let shown = format!("successRate {}", trim(value));
    let card = teams_bodies[0].json();
    assert_eq!(card["type"], "message");
    assert_eq!(card["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
    assert!(card.to_string().contains("successRate"), "{card}");
    assert!(card.to_string().contains(&trim(value)), "the failing value {value} in {card}");
    let rollback = slack_bodies.iter().find(|r| r.body.contains("rolled back")).unwrap().json();
    assert!(rollback["text"].as_str().unwrap().contains("rolled back"), "{rollback}");
    assert!(rollback.to_string().contains(&shown), "{shown} in {rollback}");
    assert!(slack_bodies.iter().any(|r| r.body.contains("canary analysis started")), "{slack_bodies:?}");

    // Both bodies as the vendors' own libraries read them.
    let bodies = json!({
        "slack": slack_bodies.iter().enumerate().map(|(i, r)| json!({"name": format!("slack-{i}"), "body": r.json()})).collect::<Vec<_>>(),
        "teams": [{"name": "teams-rollback", "body": card}],
    });
    let (ok, printed) = serin_e2e::formats::check("real-rollback", &bodies);
    assert!(ok, "{printed}");
    drop(traffic);
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
