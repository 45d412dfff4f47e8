//! Telemetry of a real rollout: real traffic through the mesh stand-in, gates read from a real
//! Prometheus, the real operator with `--otlp-endpoint` pointing at a real OTLP/HTTP receiver
//! and `--log-format json`. The story scrapes `/metrics` while the rollout runs, then checks
//! the metrics, the exported trace and the log lines against what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};
use serin::api::{Phase, Rollout};
use serin_e2e::mesh::scrape::Scrape;
use serin_e2e::mesh::traffic::{Canary, Traffic};
use serin_e2e::otlp::{Attr, Received, Receiver};
use serin_e2e::{
    Operator, OperatorOptions, client, deploy_web_with_rollout, eventually, install_rollout_crd,
    install_trafficsplit_crd, namespace,
};

const WAIT: Duration = Duration::from_secs(150);

async fn scrape(operator: &Operator) -> Option<Scrape> {
    let http = serin_e2e::mesh::http_client(Duration::from_secs(2)).ok()?;
    let text = http.get(operator.url("/metrics")).send().await.ok()?.text().await.ok()?;
    Some(
        Scrape::parse(&text).unwrap_or_else(|e| panic!("/metrics is not valid exposition text: {e}\n{text}")),
    )
}

fn int(span: &Received, key: &str) -> i64 {
    match span.attr(key) {
        Some(Attr::Int(i)) => i,
        other => panic!("span {:?}: {key} is {other:?}", span.span.name),
    }
}

fn text(span: &Received, key: &str) -> String {
    match span.attr(key) {
        Some(Attr::Str(s)) => s,
        other => panic!("span {:?}: {key} is {other:?}", span.span.name),
    }
}

#[tokio::test]
async fn a_rollout_is_measured_traced_and_logged() {
    let client = client().await;
    install_rollout_crd(&client).await;
    install_trafficsplit_crd(&client).await;
    let ns = namespace(&client, "telemetry").await;
    let traffic = Traffic::start(
        env!("CARGO_BIN_EXE_serin-demo-app").as_ref(),
        env!("CARGO_BIN_EXE_serin-mesh").as_ref(),
        &ns,
        Canary { error_rate: 0.0, latency_ms: 5 },
        40,
    )
    .await;
    let analysis = json!({
        "window": "8s", "minRequests": 20, "tolerance": 0,
        "source": {"prometheus": {"address": traffic.prometheus_url(), "querySet": "linkerd"}},
        "gates": {"successRate": {"min": 99}, "latency": [{"quantile": "p99", "maxMs": 500}]}
    });
    deploy_web_with_rollout(
        &client,
        &ns,
        json!({"strategy": {"weights": [25, 50], "interval": "8s"}, "progressDeadlineSeconds": 60, "analysis": analysis}),
    )
    .await;
    let receiver = Receiver::start().await;
    let instance = format!("serin-telemetry-{}", std::process::id());
    let operator = Operator::start_with(
        OperatorOptions::namespace(&ns)
            .args(["--log-format", "json", "--otlp-endpoint", &receiver.endpoint()])
            .env("POD_NAME", &instance),
    );
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    let status = || async { rollouts.get("web").await.ok()?.status };

    eventually("the Rollout to be initialized", WAIT, || async {
        (status().await?.phase == Phase::Idle).then_some(())
    })
    .await;
    eventually("the phase gauge to count the Rollout as Idle", WAIT, || async {
        (scrape(&operator).await?.sum("serin_rollouts", &[("phase", "Idle")]) == 1.0).then_some(())
    })
    .await;
    let healthz = serin_e2e::mesh::http_client(Duration::from_secs(2)).unwrap();
    for path in ["/healthz", "/readyz"] {
        let response = healthz.get(operator.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    serin_e2e::set_web_image(&client, &ns, "web:2").await;

    // Scrape while the rollout runs: the phase gauge follows the Rollout.
    let mut phases_seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(scrape) = scrape(&operator).await {
            for sample in scrape.samples("serin_rollouts").filter(|s| s.value == 1.0) {
                phases_seen.insert(sample.labels["phase"].clone());
            }
        }
        let current = status().await.map(|s| s.phase);
        if current == Some(Phase::Succeeded) {
            break;
        }
        assert_ne!(
            current,
            Some(Phase::Failed),
            "the canary failed: {:?}\n{}",
            status().await,
            operator.log_tail()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "not promoted in time: {:?}\n{}",
            status().await,
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(phases_seen.contains("Progressing"), "phases seen: {phases_seen:?}");
    let rollout = rollouts.get("web").await.unwrap();
    let revision = rollout.status.clone().unwrap().promoted_revision.unwrap();

    // ----- metrics --------------------------------------------------------------------------
    let m = scrape(&operator).await.expect("a scrape after promotion");
    assert_eq!(m.sum("serin_rollouts", &[("phase", "Succeeded")]), 1.0);
    assert_eq!(m.sum("serin_rollouts", &[]), 1.0, "one Rollout in the watched namespace");
    let steps = |result: &str| m.sum("serin_rollout_step_duration_seconds_count", &[("result", result)]);
    assert_eq!(steps("advanced"), 2.0, "step 0 and step 1 advanced");
    assert_eq!(steps("promoted"), 1.0, "the last step promoted");
    assert_eq!(steps("succeeded"), 1.0, "the promotion succeeded");
    assert_eq!(steps("failed") + steps("aborted"), 0.0);
    assert_eq!(m.sum("serin_rollout_duration_seconds_count", &[("result", "succeeded")]), 1.0);
    // Two steps of an 8 s interval each: the rollout and its steps took at least that long, by
    // the schedule (a lower bound from the logic, not from the machine's speed), less up to 1 s
    // per step because `stepStartedAt` is stored with second precision.
    let rollout_seconds = m.sum("serin_rollout_duration_seconds_sum", &[]);
    let step_seconds = m.sum("serin_rollout_step_duration_seconds_sum", &[]);
    assert!(
        rollout_seconds >= 14.0 && step_seconds >= 14.0,
        "rollout {rollout_seconds}s, steps {step_seconds}s"
    );
    println!("rollout {rollout_seconds:.1}s; its stages {step_seconds:.1}s in all");
    let passes = |gate: &str| m.sum("serin_gate_verdicts_total", &[("gate", gate), ("verdict", "Pass")]);
    assert!(passes("successRate") >= 2.0 && passes("latency.p99") >= 2.0, "a passed check per step");
    assert_eq!(m.sum("serin_gate_verdicts_total", &[("verdict", "Fail")]), 0.0);
    assert_eq!(
        m.sum("serin_gate_value", &[("namespace", &ns), ("rollout", "web"), ("gate", "successRate")]),
        100.0,
        "the last measured success rate"
    );
    let p99 = m.sum("serin_gate_value", &[("namespace", &ns), ("rollout", "web"), ("gate", "latency.p99")]);
    assert!(p99 > 0.0 && p99 < 500.0, "p99 {p99}");
    let api = |verb: &str, resource: &str, code: &str| {
        m.sum(
            "serin_kube_request_duration_seconds_count",
            &[("verb", verb), ("resource", resource), ("code", code)],
        )
    };
    assert!(api("patch", "rollouts.serin.dev/status", "200") >= 4.0, "status writes are timed");
    assert!(api("create", "events.events.k8s.io", "201") >= 4.0, "Event creations are timed");
    assert!(api("patch", "trafficsplits.split.smi-spec.io", "200") >= 3.0, "traffic shifts are timed");
    assert!(api("watch", "deployments.apps", "200") >= 1.0, "watches are timed to their headers");
    let api_series: Vec<_> = m.samples("serin_kube_request_duration_seconds_count").collect();
    assert!(
        api_series
            .iter()
            .all(|s| !s.labels["resource"].contains(&ns) && !s.labels["resource"].contains("web")),
        "no namespace or object name in the resource label: {api_series:?}"
    );
    assert_eq!(m.sum("serin_leader", &[]), 1.0);

    // ----- traces ---------------------------------------------------------------------------
    let uid = rollout.uid().unwrap();
    let spans =
        eventually("the revision's root span at the OTLP receiver", Duration::from_secs(60), || async {
            let spans: Vec<Received> = receiver
                .spans()
                .into_iter()
                .filter(|s| s.attr("serin.rollout.uid") == Some(Attr::Str(uid.clone())))
                .collect();
            spans.iter().any(|s| s.parent_id().is_empty()).then_some(spans)
        })
        .await;
    for span in &spans {
        assert_eq!(span.resource.get("service.name"), Some(&Attr::Str("serin".into())));
        assert_eq!(span.resource.get("service.instance.id"), Some(&Attr::Str(instance.clone())));
        assert_eq!(text(span, "k8s.namespace.name"), ns);
        assert_eq!(text(span, "serin.revision"), revision);
    }
    let traces: BTreeSet<String> = spans.iter().map(Received::trace_id).collect();
    assert_eq!(traces.len(), 1, "one trace per revision: {traces:?}");
    let roots: Vec<&Received> = spans.iter().filter(|s| s.parent_id().is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root span");
    let root = roots[0];
    assert_eq!(text(root, "serin.outcome"), "succeeded");
    assert!(root.span.name.contains(&revision), "{}", root.span.name);

    let stages: Vec<&Received> = spans.iter().filter(|s| s.parent_id() == root.span_id()).collect();
    let by_step: BTreeMap<i64, &Received> = stages.iter().map(|s| (int(s, "serin.step"), *s)).collect();
    assert_eq!(
        stages.len(),
        4,
        "step 0, 1, 2 and the promotion: {:?}",
        stages.iter().map(|s| &s.span.name).collect::<Vec<_>>()
    );
    assert_eq!(by_step.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3], "each stage once");
    let outcomes: Vec<String> = by_step.values().map(|s| text(s, "serin.outcome")).collect();
    assert_eq!(outcomes, ["advanced", "advanced", "promoted", "succeeded"]);
    let weights: Vec<i64> = by_step.values().map(|s| int(s, "serin.weight")).collect();
    assert_eq!(weights, [0, 25, 50, 50]);
    for stage in by_step.values() {
        let s = &stage.span;
        assert!(
            s.start_time_unix_nano >= root.span.start_time_unix_nano
                && s.end_time_unix_nano <= root.span.end_time_unix_nano,
            "stage {:?} within the rollout",
            s.name
        );
    }
    for pair in by_step.values().collect::<Vec<_>>().windows(2) {
        assert!(pair[0].span.end_time_unix_nano <= pair[1].span.end_time_unix_nano, "stages end in order");
    }

    let gates: Vec<&Received> = spans.iter().filter(|s| s.attr("serin.gate").is_some()).collect();
    assert!(!gates.is_empty());
    let step_ids: BTreeMap<String, i64> = [1, 2].iter().map(|n| (by_step[n].span_id(), *n)).collect();
    let mut gates_per_step: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for gate in &gates {
        let step = step_ids
            .get(&gate.parent_id())
            .unwrap_or_else(|| panic!("gate span {:?} is not under step 1 or 2", gate.span.name));
        assert_eq!(int(gate, "serin.step"), *step);
        let parent = &by_step[step].span;
        assert!(
            gate.span.start_time_unix_nano >= parent.start_time_unix_nano
                && gate.span.end_time_unix_nano <= parent.end_time_unix_nano,
            "gate {:?} within its step",
            gate.span.name
        );
        assert!(!text(gate, "serin.threshold").is_empty());
        assert!(matches!(gate.attr("serin.value"), Some(Attr::Double(_))), "{:?}", gate.span.attributes);
        gates_per_step.entry(*step).or_default().insert(text(gate, "serin.gate"));
    }
    for step in [1, 2] {
        assert_eq!(
            gates_per_step.get(&step).cloned().unwrap_or_default(),
            BTreeSet::from(["latency.p99".to_string(), "successRate".to_string()]),
            "both gates evaluated at step {step}"
        );
    }
    let last_success = gates
        .iter()
        .filter(|g| text(g, "serin.gate") == "successRate" && text(g, "serin.verdict") == "Pass")
        .count();
    assert_eq!(last_success as f64, passes("successRate"), "the trace and the counter agree");

    // ----- logs -----------------------------------------------------------------------------
    let log = std::fs::read_to_string(&operator.log).unwrap();
    for line in log.lines() {
        assert_eq!(
            line.matches("\"message\":").count(),
            1,
            "one message per line, no field shadowing it: {line}"
        );
    }
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let reconciler: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with("serin::engine")))
        // Process-wide lines at start, before any Rollout is looked at.
        .filter(|l| {
            !["discovered TrafficSplit versions", "watching namespaces", "watching all namespaces"]
                .contains(&l["message"].as_str().unwrap_or_default())
        })
        .collect();
    let transitions =
        reconciler.iter().filter(|l| l["message"] == "transition" && l["note"].is_string()).count();
    assert!(transitions >= 5, "NewRevision, 2 StepAdvanced, Promoting, Promoted at least: {transitions}");
    for line in &reconciler {
        let span = &line["span"];
        let outer = line["spans"].as_array().and_then(|s| s.first()).cloned().unwrap_or_default();
        let carries =
            |field: &str, want: &str| span[field] == want || outer[field] == want || line[field] == want;
        assert!(
            carries("rollout", "web") && carries("namespace", &ns),
            "a reconciler line without the Rollout: {line}"
        );
    }
    println!(
        "{} reconciler log lines, {} spans in 1 trace ({} gate spans), {} API series",
        reconciler.len(),
        spans.len(),
        gates.len(),
        api_series.len()
    );
    drop(operator);
    drop(traffic);
}
