//! Metric gates with real traffic: real HTTP requests between local processes, counted by the
//! mesh stand-in the way Linkerd's proxy counts them, scraped by a real Prometheus, served by
//! Serin's Traffic Metrics server through kube-apiserver's aggregation layer, and read by the
//! real operator. Only the mesh data plane is stood in for.
//!
//! The APIService `v1alpha1.metrics.smi-spec.io` is cluster-wide, so these stories take turns
//! (the registration holds a lock); each has its own namespace, apps, mesh, Prometheus and
//! Traffic Metrics server.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use serin::api::{Phase, Rollout, Verdict};
use serin_e2e::adapter::{Adapter, Registration, register};
use serin_e2e::mesh::traffic::{Canary, Traffic};
use serin_e2e::{Operator, client, eventually, install_rollout_crd, install_trafficsplit_crd, namespace};

const WAIT: Duration = Duration::from_secs(120);

/// One story's world. Field order is drop order: the operator stops first.
struct World {
    operator: Operator,
    registration: Option<Registration>,
    _adapter: Adapter,
    traffic: Traffic,
    rollouts: Api<Rollout>,
    ns: String,
}

impl World {
    /// Deploys `web` with a Rollout whose `analysis` is given, real traffic at `rps` requests/s
    /// with the canary behaving as `canary` says (see [`Traffic`]), and the Traffic Metrics
    /// server registered.
    async fn new(prefix: &str, canary: Canary, rps: u32, analysis: Value) -> World {
        let client = client().await;
        install_rollout_crd(&client).await;
        install_trafficsplit_crd(&client).await;
        let ns = namespace(&client, prefix).await;
        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

        let traffic = Traffic::start(
            env!("CARGO_BIN_EXE_serin-demo-app").as_ref(),
            env!("CARGO_BIN_EXE_serin-mesh").as_ref(),
            &ns,
            canary,
            rps,
        )
        .await;
        // A Rollout that reads Prometheus directly names it by this placeholder.
        let analysis: Value =
            serde_json::from_str(&analysis.to_string().replace("PROMETHEUS_URL", &traffic.prometheus_url()))
                .unwrap();
        let adapter = Adapter::start(&ns, &traffic.prometheus_url(), "linkerd", &[]).await;
        let registration = register(&client, &adapter).await;

        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
        }))
        .unwrap();
        deployments.create(&PostParams::default(), &deployment).await.unwrap();
        let rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
            "spec": {"targetRef": {"name": "web"}, "service": {"port": 80},
                     "strategy": {"weights": [25, 50], "interval": "8s"},
                     "progressDeadlineSeconds": 60,
                     "analysis": analysis}
        }))
        .unwrap();
        rollouts.create(&PostParams::default(), &rollout).await.unwrap();
        let operator = Operator::start(&ns);
        World { operator, registration: Some(registration), _adapter: adapter, traffic, rollouts, ns }
    }

    async fn status(&self) -> serin::api::RolloutStatus {
        self.rollouts.get("web").await.unwrap().status.unwrap_or_default()
    }

    /// Waits for `phase`, recording every phase seen on the way.
    async fn wait_phase(&self, phase: Phase, seen: &mut Vec<Phase>) -> serin::api::RolloutStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.status().await;
            if seen.last() != Some(&status.phase) {
                seen.push(status.phase);
            }
            if status.phase == phase {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Rollout web in {} did not reach {phase:?}; phases {seen:?}; status {status:?}\noperator log:\n{}",
                self.ns,
                self.operator.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn release(mut self) {
        if let Some(registration) = self.registration.take() {
            registration.unregister().await;
        }
    }

    /// The notes of the Rollout's Events with `reason`, oldest first.
    async fn events(&self, reason: &str) -> Vec<String> {
        serin_e2e::rollout_event_notes(&client().await, &self.ns, reason).await
    }

    async fn new_image(&self) {
        serin_e2e::set_web_image(&client().await, &self.ns, "web:2").await;
    }

    async fn canary_weight_in_split(&self) -> Option<i64> {
        let gvk = GroupVersionKind::gvk("split.smi-spec.io", "v1alpha4", "TrafficSplit");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client().await, &self.ns, &ApiResource::from_gvk(&gvk));
        let split = api.get("web").await.ok()?;
        split.data["spec"]["backends"].as_array()?.iter().find(|b| b["service"] == "web-canary")?["weight"]
            .as_i64()
    }
}

fn gates(success_min: f64, p99_max_ms: f64, extra: Value) -> Value {
    let mut analysis = json!({
        "window": "8s", "minRequests": 20, "tolerance": 0,
        "gates": {"successRate": {"min": success_min}, "latency": [{"quantile": "p99", "maxMs": p99_max_ms}]}
    });
    for (k, v) in extra.as_object().unwrap() {
        analysis[k] = v.clone();
    }
    analysis
}

#[tokio::test]
async fn a_healthy_canary_is_promoted_on_its_metrics() {
    let world =
        World::new("healthy", Canary { error_rate: 0.0, latency_ms: 5 }, 40, gates(99.0, 250.0, json!({})))
            .await;
    let mut seen = Vec::new();
    world.wait_phase(Phase::Idle, &mut seen).await;
    world.new_image().await;
    let status = world.wait_phase(Phase::Succeeded, &mut seen).await;
    assert!(!seen.contains(&Phase::Failed), "phases {seen:?}");
    // The last check's gates passed on measured values.
    let success = status.gates.iter().find(|g| g.name == "successRate").unwrap();
    assert_eq!(success.verdict, Verdict::Pass);
    assert_eq!(success.value, Some(100.0));
    assert!(success.requests.unwrap() >= 20.0, "{success:?}");
    let p99 = status.gates.iter().find(|g| g.name == "latency.p99").unwrap();
    assert_eq!(p99.verdict, Verdict::Pass);
    assert!(p99.value.unwrap() < 250.0, "{p99:?}");
    // `kubectl describe` explains the passes too: each check's values are in an Event.
    let passed = world.events("CheckPassed").await;
    assert_eq!(passed.len(), 2, "{passed:?}");
    assert!(
        passed.iter().all(|n| n.contains("successRate 100 (threshold >= 99)") && n.contains("latency.p99")),
        "{passed:?}"
    );
    world.release().await;
}

#[tokio::test]
async fn the_sequential_method_rolls_back_a_failing_canary_on_evidence() {
    let analysis = json!({
        "method": "sequential", "window": "4s", "minRequests": 20,
        "sequential": {"alpha": 0.05},
        "gates": {"successRate": {"min": 99}}
    });
    let world = World::new("sequential", Canary { error_rate: 0.2, latency_ms: 5 }, 60, analysis).await;
    let mut seen = Vec::new();
    world.wait_phase(Phase::Idle, &mut seen).await;
    world.new_image().await;
    let status = world.wait_phase(Phase::Failed, &mut seen).await;
    assert!(!seen.contains(&Phase::Promoting), "phases {seen:?}");
    let message = status.message.clone().unwrap();
    assert!(message.contains("regression"), "{message}");
    let analysis = status.analysis.expect("status.analysis shows the evidence");
    let evaluation = serde_json::to_value(&analysis).unwrap();
    assert!(evaluation.to_string().contains("eValue"), "{evaluation}");
    assert_eq!(world.events("SequentialRegression").await.len(), 1);
    world.release().await;
}

#[tokio::test]
async fn a_canary_with_five_percent_errors_is_rolled_back_naming_the_gate() {
    let world =
        World::new("errors", Canary { error_rate: 0.05, latency_ms: 5 }, 60, gates(99.0, 1000.0, json!({})))
            .await;
    let mut seen = Vec::new();
    world.wait_phase(Phase::Idle, &mut seen).await;
    world.new_image().await;
    let status = world.wait_phase(Phase::Failed, &mut seen).await;
    assert!(!seen.contains(&Phase::Promoting), "phases {seen:?}");
    let success = status.gates.iter().find(|g| g.name == "successRate").unwrap();
    assert_eq!(success.verdict, Verdict::Fail, "{:?}", status.gates);
    let value = success.value.unwrap();
    assert!(value < 99.0 && value > 80.0, "a 5% error rate measures near 95%: {value}");
    let message = status.message.unwrap();
    assert!(message.contains("successRate") && message.contains(">= 99"), "{message}");
    eventually("all traffic back on the primary", WAIT, || async {
        (world.canary_weight_in_split().await? == 0).then_some(())
    })
    .await;
    world.release().await;
}

#[tokio::test]
async fn a_slow_canary_is_rolled_back_on_p99() {
    let world =
        World::new("slow", Canary { error_rate: 0.0, latency_ms: 400 }, 40, gates(90.0, 150.0, json!({})))
            .await;
    let mut seen = Vec::new();
    world.wait_phase(Phase::Idle, &mut seen).await;
    world.new_image().await;
    let status = world.wait_phase(Phase::Failed, &mut seen).await;
    let p99 = status.gates.iter().find(|g| g.name == "latency.p99").unwrap();
    assert_eq!(p99.verdict, Verdict::Fail, "{:?}", status.gates);
    assert!(p99.value.unwrap() > 150.0, "{p99:?}");
    assert!(status.message.unwrap().contains("latency.p99"));
    world.release().await;
}

#[tokio::test]
async fn with_prometheus_gone_the_rollout_holds_and_fails_at_its_deadline() {
    let analysis = gates(99.0, 1000.0, json!({"onInsufficientData": {"action": "hold", "deadline": "20s"}}));
    let mut world =
        World::new("no-prometheus", Canary { error_rate: 0.0, latency_ms: 5 }, 40, analysis).await;
    let mut seen = Vec::new();
    world.wait_phase(Phase::Idle, &mut seen).await;
    world.new_image().await;
    eventually("the canary at step 1", WAIT, || async { (world.status().await.step >= 1).then_some(()) })
        .await;
    drop(world.traffic.prometheus.take());

    let status = world.wait_phase(Phase::Failed, &mut seen).await;
    assert!(
        !seen.contains(&Phase::Promoting) && !seen.contains(&Phase::Succeeded),
        "never promoted without metrics: {seen:?}"
    );
    let message = status.message.unwrap();
    assert!(message.contains("not enough metric data"), "{message}");
    world.release().await;
}

#[tokio::test]
async fn without_traffic_the_rollout_reports_insufficient_data_and_follows_its_policy() {
    let analysis = gates(99.0, 1000.0, json!({"onInsufficientData": {"action": "hold", "deadline": "16s"}}));
    let world = World::new("no-traffic", Canary { error_rate: 0.0, latency_ms: 5 }, 0, analysis).await;
    let mut seen = Vec::new();
    world.wait_phase(Phase::Idle, &mut seen).await;
    world.new_image().await;
    let holding = eventually("the rollout to hold on insufficient data", WAIT, || async {
        let s = world.status().await;
        (s.insufficient_data_since.is_some()).then_some(s)
    })
    .await;
    assert!(holding.message.as_deref().unwrap_or("").contains("insufficient data"), "{holding:?}");
    let status = world.wait_phase(Phase::Failed, &mut seen).await;
    assert!(!seen.contains(&Phase::Promoting), "phases {seen:?}");
    assert!(status.message.unwrap().contains("onInsufficientData.deadline"));
    world.release().await;
}

#[tokio::test]
async fn prometheus_histograms_let_the_sequential_method_count_slow_requests_exactly() {
    // The operator reads Prometheus directly (no Traffic Metrics API), so the latency test gets
    // the histogram's bucket counts.
    let analysis = json!({
        "method": "sequential", "window": "4s", "minRequests": 20,
        "source": {"prometheus": {"address": "PROMETHEUS_URL", "querySet": "linkerd"}},
        "gates": {"latency": [{"quantile": "p99", "maxMs": 200}]}
    });
    let world = World::new("histogram", Canary { error_rate: 0.0, latency_ms: 400 }, 60, analysis).await;
    let mut seen = Vec::new();
    world.wait_phase(Phase::Idle, &mut seen).await;
    world.new_image().await;
    let status = world.wait_phase(Phase::Failed, &mut seen).await;
    assert!(!seen.contains(&Phase::Promoting), "phases {seen:?}");
    let analysis = status.analysis.expect("status.analysis");
    let latency = &analysis.latency[0];
    assert!(latency.histogram, "the latency test was fed by bucket counts: {latency:?}");
    assert!(latency.state.canary_failures > 0.0, "{latency:?}");
    assert!(status.message.unwrap().contains("slower than 200ms"));
    world.release().await;
}
