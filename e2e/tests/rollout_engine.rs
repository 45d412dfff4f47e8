//! User stories of the rollout engine, each against the real control plane with the real
//! operator binary watching the test's own namespace.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use serin::api::{Phase, Rollout};
use serin_e2e::story::Story;
use serin_e2e::{Operator, client, eventually};

const WAIT: Duration = serin_e2e::story::WAIT;

fn condition(rollout: &Rollout, type_: &str) -> String {
    rollout
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map_or("absent".into(), |c| c.status.clone())
}

#[tokio::test]
async fn initialization_creates_the_primary_and_routes_all_traffic_to_it() {
    let story = Story::new("init", json!({"weights": [20, 50], "interval": "2s"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    let rollout = story.wait_phase(Phase::Idle, &operator).await;

    let status = rollout.status.as_ref().unwrap();
    assert!(status.promoted_revision.is_some());
    assert_eq!(status.traffic_split_version.as_deref(), Some("v1alpha4"), "the newest served version");
    assert_eq!(condition(&rollout, "Ready"), "True");
    assert_eq!(condition(&rollout, "Promoted"), "True");
    assert_eq!(status.observed_generation, rollout.metadata.generation);

    eventually("web scaled to 0 and the primary serving", WAIT, || async {
        (story.replicas("web").await? == 0 && story.replicas("web-primary").await? == 2).then_some(())
    })
    .await;
    assert_eq!(story.weights().await, Some((100, 0)), "all traffic on the primary, zero written out");
    for (name, app) in [("web", "web-primary"), ("web-primary", "web-primary"), ("web-canary", "web")] {
        let svc = story.services.get(name).await.unwrap();
        assert_eq!(svc.spec.clone().unwrap().selector.unwrap()["app"], app, "Service {name}");
        assert_eq!(svc.owner_references()[0].kind, "Rollout");
    }
    assert_eq!(story.events("Initialized").await.len(), 1);
}

#[tokio::test]
async fn a_new_image_is_promoted_through_every_step() {
    let story = Story::new("promote", json!({"weights": [20, 50], "interval": "2s"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;

    // Watch the TrafficSplit move through the schedule.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some((primary, canary)) = story.weights().await {
            assert_eq!(primary + canary, 100, "weights always describe all traffic");
            if seen.last() != Some(&canary) {
                seen.push(canary);
            }
        }
        let phase = story.rollout().await.status.map(|s| s.phase);
        if phase == Some(Phase::Succeeded) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not promoted in time; saw {seen:?}\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains(&20) && seen.contains(&50), "saw canary weights {seen:?}");
    let steps: Vec<_> = seen.iter().filter(|w| **w > 0).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "weights only grow during the rollout: {seen:?}");

    let rollout = story.rollout().await;
    assert_eq!(condition(&rollout, "Ready"), "True");
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:2"), "the primary runs the new image");
    eventually("the canary scaled to 0 and traffic back on the primary", WAIT, || async {
        (story.replicas("web").await? == 0 && story.weights().await? == (100, 0)).then_some(())
    })
    .await;
    assert_eq!(story.events("StepAdvanced").await.len(), 2);
    assert_eq!(story.events("Promoted").await.len(), 1);
}

#[tokio::test]
async fn a_canary_that_never_becomes_ready_is_rolled_back_at_the_deadline() {
    let story = Story::new(
        "never-ready",
        json!({"weights": [50], "interval": "2s"}),
        json!({"progressDeadlineSeconds": 6}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;

    story.set_never_ready().await;

    let rollout = story.wait_phase(Phase::Failed, &operator).await;
    let message = rollout.status.as_ref().unwrap().message.clone().unwrap();
    assert!(message.contains("progressDeadlineSeconds"), "{message}");
    assert_eq!(condition(&rollout, "Stalled"), "True");
    assert_eq!(condition(&rollout, "Ready"), "False");
    eventually("the canary scaled to 0 with no traffic", WAIT, || async {
        (story.replicas("web").await? == 0 && story.weights().await? == (100, 0)).then_some(())
    })
    .await;
    assert_eq!(story.events("ProgressDeadlineExceeded").await.len(), 1);
    assert_eq!(
        story.image("web-primary").await.as_deref(),
        Some("web:1"),
        "the primary kept the old version"
    );
}

#[tokio::test]
async fn a_new_revision_mid_rollout_restarts_the_analysis() {
    let story = Story::new("restart", json!({"weights": [20, 40, 60], "interval": "3s"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    let first = eventually("the canary at step 1", WAIT, || async {
        let s = story.rollout().await.status?;
        (s.step >= 1).then_some(s.canary_revision?)
    })
    .await;

    story.set_image("web:3").await;
    eventually("the analysis to restart for the newer revision", WAIT, || async {
        let s = story.rollout().await.status?;
        (s.canary_revision.as_ref()? != &first).then_some(())
    })
    .await;
    story.wait_phase(Phase::Succeeded, &operator).await;
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:3"));
    assert_eq!(story.events("RevisionChanged").await.len(), 1);
    assert_eq!(story.events("Promoted").await.len(), 1, "web:2 was never promoted");
}

#[tokio::test]
async fn a_hand_edit_of_the_trafficsplit_is_put_back() {
    let story = Story::new("hand-edit", json!({"weights": [50], "interval": "2s"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    eventually("the split at 100/0", WAIT, || async { (story.weights().await? == (100, 0)).then_some(()) })
        .await;

    let edit = json!({"spec": {"backends": [{"service": "web-primary", "weight": 50}, {"service": "web-canary", "weight": 50}]}});
    story.splits.patch("web", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    eventually("Serin to put the split back to 100/0", WAIT, || async {
        (story.weights().await? == (100, 0)).then_some(())
    })
    .await;
    drop(operator);
}

#[tokio::test]
async fn an_operator_killed_mid_rollout_resumes_without_repeating_a_step() {
    let story = Story::new("sigkill", json!({"weights": [25, 50, 75], "interval": "3s"}), json!({})).await;
    let mut operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_image("web:2").await;
    eventually("the canary at step 2", WAIT, || async {
        (story.rollout().await.status?.step >= 2).then_some(())
    })
    .await;

    operator.kill();
    let step_at_kill = story.rollout().await.status.unwrap().step;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Succeeded, &operator).await;

    let steps = story.events("StepAdvanced").await;
    for n in 1..=3 {
        let count = steps.iter().filter(|note| note.starts_with(&format!("step {n}/3:"))).count();
        assert_eq!(count, 1, "step {n} was taken {count} times (killed at step {step_at_kill}): {steps:?}");
    }
    assert_eq!(story.events("Promoted").await.len(), 1);
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:2"));
}

#[tokio::test]
async fn deleting_the_rollout_hands_the_app_back() {
    let client = client().await;
    let story = Story::new("delete", json!({"weights": [50], "interval": "2s"}), json!({})).await;
    // The user already had a Service for the app: Serin adopts it and hands it back.
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    story.services.create(&PostParams::default(), &svc).await.unwrap();
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    eventually("the root Service adopted", WAIT, || async {
        let s = story.services.get("web").await.ok()?;
        (s.spec.clone()?.selector?["app"] == "web-primary"
            && s.annotations().contains_key("serin.dev/adopted"))
        .then_some(())
    })
    .await;

    story.rollouts.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("the Rollout to be gone", WAIT, || async {
        story.rollouts.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;

    let web = story.deployments.get("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(2), "the app runs as many replicas as the primary did");
    let root = story.services.get("web").await.unwrap();
    assert_eq!(root.spec.unwrap().selector.unwrap()["app"], "web", "the root Service selects the app again");
    assert!(root.metadata.owner_references.unwrap_or_default().is_empty(), "and is nobody's");
    assert!(story.splits.get_opt("web").await.unwrap().is_none(), "the TrafficSplit is gone");
    eventually("the primary and its Services garbage-collected", WAIT, || async {
        let gone = story.deployments.get_opt("web-primary").await.ok()?.is_none()
            && story.services.get_opt("web-primary").await.ok()?.is_none()
            && story.services.get_opt("web-canary").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    eventually("the app Available", WAIT, || async {
        let d = story.deployments.get("web").await.ok()?;
        d.status?.conditions?.iter().any(|c| c.type_ == "Available" && c.status == "True").then_some(())
    })
    .await;
    let _ = client;
}

#[tokio::test]
async fn an_autoscaled_app_gets_a_primary_autoscaler() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let story = Story::new("hpa", json!({"weights": [50], "interval": "2s"}), json!({})).await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(story.client.clone(), &story.ns);
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 2, "maxReplicas": 6,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}
    }))
    .unwrap();
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;

    let twin =
        eventually("the primary HPA", WAIT, || async { hpas.get_opt("web-primary").await.ok()? }).await;
    let spec = twin.spec.clone().unwrap();
    assert_eq!(spec.scale_target_ref.name, "web-primary");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    assert_eq!(twin.owner_references()[0].kind, "Rollout");

    story.set_image("web:2").await;
    story.wait_phase(Phase::Succeeded, &operator).await;
    assert_eq!(story.image("web-primary").await.as_deref(), Some("web:2"));
}

#[tokio::test]
async fn an_abort_request_rolls_back_and_kubectl_wait_sees_ready_after_a_promotion() {
    let story = Story::new("abort", json!({"weights": [20, 40, 60], "interval": "20s"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;

    // kstatus: `kubectl wait --for=condition=Ready` works on a Rollout.
    let wait = std::process::Command::new("kubectl")
        .args(["wait", "--for=condition=Ready", "rollout/web", "-n", &story.ns, "--timeout=30s"])
        .env("KUBECONFIG", serin_e2e::kubeconfig())
        .output()
        .unwrap();
    assert!(wait.status.success(), "kubectl wait: {}", String::from_utf8_lossy(&wait.stderr));

    story.set_image("web:2").await;
    eventually("the canary at step 1", WAIT, || async {
        (story.rollout().await.status?.step >= 1).then_some(())
    })
    .await;
    let request = json!({"metadata": {"annotations": {"serin.dev/request": "abort/e2e-1"}}});
    story.rollouts.patch("web", &PatchParams::default(), &Patch::Merge(&request)).await.unwrap();
    let rollout = story.wait_phase(Phase::Failed, &operator).await;
    let handled = rollout.status.unwrap().last_request.unwrap();
    assert_eq!(handled.id, "abort/e2e-1");
    assert_eq!(handled.outcome, serin::api::RequestOutcome::Accepted);
    eventually("traffic back on the primary", WAIT, || async {
        (story.weights().await? == (100, 0)).then_some(())
    })
    .await;
    assert_eq!(story.events("Aborted").await.len(), 1);
}

#[tokio::test]
async fn an_operator_watching_two_namespaces_rolls_out_in_both_and_ignores_a_third() {
    let stories = [
        Story::new("watch-a", json!({"weights": [50], "interval": "1s"}), json!({})).await,
        Story::new("watch-b", json!({"weights": [50], "interval": "1s"}), json!({})).await,
    ];
    let ignored = Story::new("watch-c", json!({"weights": [50], "interval": "1s"}), json!({})).await;
    let operator = Operator::start_with(serin_e2e::OperatorOptions {
        namespaces: stories.iter().map(|s| s.ns.clone()).collect(),
        ..Default::default()
    });
    for story in &stories {
        story.wait_phase(Phase::Idle, &operator).await;
        story.set_image("web:2").await;
    }
    for story in &stories {
        story.wait_phase(Phase::Succeeded, &operator).await;
        assert_eq!(story.image("web-primary").await.as_deref(), Some("web:2"), "promoted in {}", story.ns);
    }

    // Both rollouts went all the way while the third namespace's Rollout was never touched:
    // no status, no finalizer, no primary, and the operator never named its namespace.
    let rollout = ignored.rollout().await;
    assert!(rollout.status.is_none(), "{} was reconciled: {:?}", ignored.ns, rollout.status);
    assert!(rollout.finalizers().is_empty(), "{} got a finalizer", ignored.ns);
    assert!(ignored.deployments.get_opt("web-primary").await.unwrap().is_none());
    assert_eq!(ignored.replicas("web").await, Some(2), "the app in {} is untouched", ignored.ns);
    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(!log.contains(&ignored.ns), "the operator mentioned {}:\n{}", ignored.ns, operator.log_tail());
}
