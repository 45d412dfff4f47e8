//! A platform engineer installs the Rollout CRD, and the API server itself guards Rollouts:
//! good ones are stored with their defaults filled in, bad ones are refused with the field named.

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use serin::api::{Phase, Rollout};
use serin_e2e::{client, install_rollout_crd, namespace};

fn rollout(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "serin.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": name}, "spec": spec})
}

fn dynamic_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("serin.dev", "v1alpha1", "Rollout");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

#[tokio::test]
async fn the_rollout_crd_installs_and_a_valid_rollout_is_stored_with_defaults() {
    let client = client().await;
    install_rollout_crd(&client).await;
    let ns = namespace(&client, "api-valid").await;

    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    let object: Rollout = serde_json::from_value(rollout(
        "web",
        json!({"targetRef": {"name": "web"}, "service": {"port": 8080}}),
    ))
    .unwrap();
    let created = api.create(&PostParams::default(), &object).await.unwrap();

    // The API server filled in the schema's defaults.
    let spec = created.spec;
    assert_eq!(spec.target_ref.kind, "Deployment");
    assert_eq!(spec.target_ref.api_version, "apps/v1");
    assert_eq!(spec.strategy.interval, "1m");
    assert_eq!(spec.progress_deadline_seconds, 600);
    assert_eq!(spec.service.port_name, "http");
    assert!(!spec.paused);

    // A full spec round-trips unchanged.
    let full: Rollout = serde_json::from_value(rollout(
        "full",
        json!({
            "targetRef": {"name": "checkout"},
            "service": {"port": 80, "targetPort": "http"},
            "traffic": {"smi": {"version": "v1alpha2"}},
            "strategy": {"weights": [5, 10, 25, 50], "interval": "30s"},
            "analysis": {
                "window": "1m", "minRequests": 100, "tolerance": 2,
                "onInsufficientData": {"action": "fail", "deadline": "5m"},
                "gates": {
                    "successRate": {"min": 99.5, "maxDropVsPrimary": 0.5},
                    "latency": [{"quantile": "p99", "maxMs": 500.0}, {"quantile": "p50", "maxIncreaseVsPrimary": 20.0}]
                }
            },
            "progressDeadlineSeconds": 120,
            "paused": true
        }),
    ))
    .unwrap();
    let stored = api.create(&PostParams::default(), &full).await.unwrap();
    assert_eq!(stored.spec, full.spec);

    // The status subresource exists and takes a status.
    let mut with_status = stored.clone();
    with_status.status = Some(serin::api::RolloutStatus {
        phase: Phase::Progressing,
        step: 1,
        steps: 4,
        canary_weight: 5,
        ..Default::default()
    });
    let replaced = api.replace_status("full", &PostParams::default(), &with_status).await.unwrap();
    assert_eq!(replaced.status.unwrap().canary_weight, 5);
}

#[tokio::test]
async fn printer_columns_show_phase_weight_and_step() {
    let client = client().await;
    install_rollout_crd(&client).await;
    let ns = namespace(&client, "api-columns").await;
    let api = dynamic_api(&client, &ns);
    let object: DynamicObject = serde_json::from_value(rollout(
        "web",
        json!({"targetRef": {"name": "web"}, "service": {"port": 80}}),
    ))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();

    // Ask for the server-side table that `kubectl get` prints.
    let request = http::Request::get(format!("/apis/serin.dev/v1alpha1/namespaces/{ns}/rollouts"))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: Value = client.request(request).await.unwrap();
    let names: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in ["Name", "Target", "Phase", "Weight", "Step", "Steps", "Age"] {
        assert!(names.contains(&want), "column {want} missing from {names:?}");
    }
    assert_eq!(table["rows"][0]["cells"][1], "web", "the Target column shows the Deployment");
}

/// Each case: a name, a spec, and the field path the API server's message must name, plus a
/// fragment of the message that tells the user what to do.
fn invalid_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let ok_target = json!({"name": "web"});
    let ok_service = json!({"port": 80});
    let with = |extra: Value| {
        let mut spec = json!({"targetRef": ok_target, "service": ok_service});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    vec![
        ("no-target", json!({"service": ok_service}), "spec.targetRef", "Required value"),
        ("no-service", json!({"targetRef": ok_target}), "spec.service", "Required value"),
        ("target-upper", with(json!({"targetRef": {"name": "Web"}})), "spec.targetRef.name", "should match"),
        (
            "target-long",
            with(json!({"targetRef": {"name": "a".repeat(56)}})),
            "spec.targetRef.name",
            "may not be more than 55 bytes",
        ),
        (
            "target-kind",
            with(json!({"targetRef": {"name": "web", "kind": "StatefulSet"}})),
            "spec.targetRef.kind",
            "Deployment",
        ),
        (
            "port-zero",
            with(json!({"service": {"port": 0}})),
            "spec.service.port",
            "greater than or equal to 1",
        ),
        (
            "port-high",
            with(json!({"service": {"port": 70000}})),
            "spec.service.port",
            "less than or equal to 65535",
        ),
        (
            "step-zero",
            with(json!({"strategy": {"stepWeight": 0}})),
            "spec.strategy.stepWeight",
            "greater than or equal to 1",
        ),
        (
            "step-over",
            with(json!({"strategy": {"stepWeight": 101}})),
            "spec.strategy.stepWeight",
            "less than or equal to 100",
        ),
        (
            "max-below-step",
            with(json!({"strategy": {"stepWeight": 30, "maxWeight": 20}})),
            "spec.strategy.maxWeight",
            "maxWeight must be at least stepWeight",
        ),
        (
            "max-alone",
            with(json!({"strategy": {"maxWeight": 50}})),
            "spec.strategy.maxWeight",
            "maxWeight needs stepWeight",
        ),
        (
            "step-and-list",
            with(json!({"strategy": {"stepWeight": 10, "weights": [10, 20]}})),
            "spec.strategy.weights",
            "not both",
        ),
        (
            "weights-down",
            with(json!({"strategy": {"weights": [10, 5, 20]}})),
            "spec.strategy.weights",
            "strictly increasing",
        ),
        (
            "weights-dup",
            with(json!({"strategy": {"weights": [10, 10, 20]}})),
            "spec.strategy.weights",
            "strictly increasing",
        ),
        (
            "weights-over",
            with(json!({"strategy": {"weights": [10, 150]}})),
            "spec.strategy.weights[1]",
            "less than or equal to 100",
        ),
        (
            "weights-negative",
            with(json!({"strategy": {"weights": [-5, 10]}})),
            "spec.strategy.weights[0]",
            "greater than or equal to 1",
        ),
        (
            "weights-empty",
            with(json!({"strategy": {"weights": []}})),
            "spec.strategy.weights",
            "at least 1 item",
        ),
        (
            "interval-words",
            with(json!({"strategy": {"interval": "1 minute"}})),
            "spec.strategy.interval",
            "should match",
        ),
        (
            "interval-short",
            with(json!({"strategy": {"interval": "100ms"}})),
            "spec.strategy.interval",
            "between 1s and 24h",
        ),
        (
            "interval-long",
            with(json!({"strategy": {"interval": "48h"}})),
            "spec.strategy.interval",
            "between 1s and 24h",
        ),
        (
            "deadline-zero",
            with(json!({"progressDeadlineSeconds": 0})),
            "spec.progressDeadlineSeconds",
            "greater than or equal to 1",
        ),
        (
            "smi-version",
            with(json!({"traffic": {"smi": {"version": "v2"}}})),
            "spec.traffic.smi.version",
            "Unsupported value",
        ),
        (
            "sr-over",
            with(json!({"analysis": {"gates": {"successRate": {"min": 101}}}})),
            "spec.analysis.gates.successRate.min",
            "less than or equal to 100",
        ),
        (
            "sr-empty",
            with(json!({"analysis": {"gates": {"successRate": {}}}})),
            "spec.analysis.gates.successRate",
            "needs min, maxDropVsPrimary, or both",
        ),
        (
            "lat-quantile",
            with(json!({"analysis": {"gates": {"latency": [{"quantile": "p75", "maxMs": 100}]}}})),
            "spec.analysis.gates.latency[0].quantile",
            "Unsupported value",
        ),
        (
            "lat-empty",
            with(json!({"analysis": {"gates": {"latency": [{"quantile": "p99"}]}}})),
            "spec.analysis.gates.latency[0]",
            "needs maxMs, maxIncreaseVsPrimary, or both",
        ),
        (
            "lat-dup",
            with(
                json!({"analysis": {"gates": {"latency": [{"quantile": "p99", "maxMs": 1}, {"quantile": "p99", "maxMs": 2}]}}}),
            ),
            "spec.analysis.gates.latency",
            "each latency quantile may appear once",
        ),
        ("window-bad", with(json!({"analysis": {"window": "5"}})), "spec.analysis.window", "should match"),
        (
            "min-requests",
            with(json!({"analysis": {"minRequests": -1}})),
            "spec.analysis.minRequests",
            "greater than or equal to 0",
        ),
        (
            "insufficient-action",
            with(json!({"analysis": {"onInsufficientData": {"action": "skip"}}})),
            "spec.analysis.onInsufficientData.action",
            "Unsupported value",
        ),
        (
            "hook-scheme",
            with(
                json!({"webhooks": [{"name": "gate", "type": "confirm-rollout", "url": "ftp://gate.test/ok"}]}),
            ),
            "spec.webhooks[0].url",
            "should match",
        ),
        (
            "hook-dup",
            with(json!({"webhooks": [
                {"name": "gate", "type": "confirm-rollout", "url": "https://gate.test/a"},
                {"name": "gate", "type": "rollout", "url": "https://gate.test/b"}
            ]})),
            "spec.webhooks",
            "webhook names must be unique",
        ),
        (
            "hook-type",
            with(json!({"webhooks": [{"name": "gate", "type": "pre-flight", "url": "https://gate.test/a"}]})),
            "spec.webhooks[0].type",
            "Unsupported value",
        ),
        (
            "hook-timeout",
            with(
                json!({"webhooks": [{"name": "gate", "type": "rollout", "url": "https://gate.test/a", "timeout": "10m"}]}),
            ),
            "spec.webhooks[0].timeout",
            "between 100ms and 5m",
        ),
        (
            "hook-retries",
            with(
                json!({"webhooks": [{"name": "gate", "type": "rollout", "url": "https://gate.test/a", "retries": 11}]}),
            ),
            "spec.webhooks[0].retries",
            "less than or equal to 10",
        ),
        (
            "cron-fields",
            with(json!({"schedule": {"windows": [{"cron": "0 9 * *", "duration": "8h"}]}})),
            "spec.schedule.windows[0].cron",
            "cron must have five fields",
        ),
        (
            "window-duration",
            with(json!({"schedule": {"windows": [{"cron": "0 9 * * *", "duration": "10s"}]}})),
            "spec.schedule.windows[0].duration",
            "between 1m and 168h",
        ),
        (
            "window-duration-words",
            with(json!({"schedule": {"windows": [{"cron": "0 9 * * *", "duration": "8 hours"}]}})),
            "spec.schedule.windows[0].duration",
            "should match",
        ),
        (
            "windows-empty",
            with(json!({"schedule": {"windows": []}})),
            "spec.schedule.windows",
            "at least 1 item",
        ),
        ("on-failure", with(json!({"onFailure": "retry"})), "spec.onFailure", "Unsupported value"),
        (
            "notify-type",
            with(json!({"notifications": [{"type": "pagerduty", "secretRef": {"name": "x"}}]})),
            "spec.notifications[0].type",
            "Unsupported value",
        ),
    ]
}

#[tokio::test]
async fn the_api_server_rejects_invalid_rollouts_naming_the_field() {
    let client = client().await;
    install_rollout_crd(&client).await;
    let ns = namespace(&client, "api-invalid").await;
    let api = dynamic_api(&client, &ns);

    let cases = invalid_cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (name, spec, field, hint) in cases {
        let object: DynamicObject = serde_json::from_value(rollout(name, spec)).unwrap();
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => failures.push(format!("{name}: accepted, but should be rejected at {field}")),
            Err(kube::Error::Api(status)) => {
                let message = status.message.clone();
                if status.code != 422 {
                    failures.push(format!("{name}: expected 422 Invalid, got {}: {message}", status.code));
                } else if !message.contains(&format!("{field}:")) {
                    failures.push(format!("{name}: message does not name {field}: {message}"));
                } else if !message.contains(hint) {
                    failures.push(format!("{name}: message lacks {hint:?}: {message}"));
                }
            }
            Err(other) => failures.push(format!("{name}: unexpected error {other}")),
        }
    }
    assert!(failures.is_empty(), "{} case(s) wrong:\n{}", failures.len(), failures.join("\n"));
}
