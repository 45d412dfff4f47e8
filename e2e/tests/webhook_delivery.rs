//! Webhooks and notifications delivered to real local receivers, with Secrets read from the real
//! API server: payloads, retries, timeouts, TLS, headers from Secrets, the Secret cache (counted
//! in the audit log), and notifications to Slack, Teams and generic receivers by severity.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use serin::api::{NotificationType, Phase, Rollout, RolloutStatus, Severity, WebhookType};
use serin::engine::decide::Transition;
use serin::notify::{GlobalNotification, GlobalSecretRef, MessageKind, Notifier};
use serin::secrets::SecretReader;
use serin::webhooks::http::RetryPolicy;
use serin::webhooks::{Payload, Webhooks};
use serin_e2e::receiver::Receiver;
use serin_e2e::{MANAGER, audit_log, client, eventually, install_rollout_crd, namespace};

const FAST: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(50));

/// Creates a Rollout `web` in `ns` through the API server (so defaults and validation apply)
/// and returns it as stored.
async fn stored_rollout(client: &Client, ns: &str, spec: Value) -> Rollout {
    install_rollout_crd(client).await;
    let mut full = json!({"targetRef": {"name": "web"}, "service": {"port": 80}});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"}, "spec": full
    }))
    .unwrap();
    Api::namespaced(client.clone(), ns)
        .create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &rollout)
        .await
        .unwrap()
}

async fn create_secret(client: &Client, ns: &str, name: &str, data: Value) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await.unwrap();
}

fn progressing() -> RolloutStatus {
    RolloutStatus {
        phase: Phase::Progressing,
        step: 2,
        steps: 5,
        canary_weight: 20,
        canary_revision: Some("7d9f21c4".into()),
        promoted_revision: Some("5c8d9f10".into()),
        ..RolloutStatus::default()
    }
}

fn hook(name: &str, type_: &str, url: &str, extra: Value) -> Value {
    let mut hook = json!({"name": name, "type": type_, "url": url});
    for (k, v) in extra.as_object().unwrap() {
        hook[k] = v.clone();
    }
    hook
}

async fn webhooks(client: &Client) -> Webhooks {
    Webhooks::new(client.clone()).unwrap().with_backoff(FAST.0, FAST.1)
}

/// Calls the rollout's first hook with a payload of its type.
async fn call_first(hooks: &Webhooks, rollout: &Rollout) -> serin::webhooks::HookOutcome {
    let hook = &rollout.spec.webhooks[0];
    let payload = Payload::new(rollout, &progressing(), hook.type_);
    hooks.call(rollout, hook, &payload).await
}

#[tokio::test]
async fn a_hook_gets_the_payload_with_its_metadata() {
    let client = client().await;
    let ns = namespace(&client, "wh-payload").await;
    let receiver = Receiver::start("200").await;
    let rollout = stored_rollout(&client, &ns, json!({"webhooks": [
        hook("approve", "confirm-promotion", &receiver.url("/approve"), json!({"metadata": {"team": "checkout"}}))
    ]}))
    .await;
    let outcome = call_first(&webhooks(&client).await, &rollout).await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(
        (outcome.name.as_str(), outcome.type_, outcome.code, outcome.attempts),
        ("approve", WebhookType::ConfirmPromotion, Some(200), 1)
    );
    assert_eq!(outcome.message, "answered 200 OK");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/approve"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({
            "rollout": "web", "namespace": ns, "type": "confirm-promotion", "phase": "Progressing",
            "revision": "7d9f21c4", "promotedRevision": "5c8d9f10", "step": 2, "steps": 5,
            "weights": {"canary": 20, "primary": 80}, "failedChecks": 0,
            "metadata": {"team": "checkout"}
        })
    );
}

#[tokio::test]
async fn a_4xx_answer_is_final_and_quoted() {
    let client = client().await;
    let ns = namespace(&client, "wh-4xx").await;
    let receiver = Receiver::start("403:not approved by the release manager").await;
    let rollout = stored_rollout(
        &client,
        &ns,
        json!({"webhooks": [
            hook("approve", "confirm-rollout", &receiver.url("/approve"), json!({"retries": 5}))
        ]}),
    )
    .await;
    let outcome = call_first(&webhooks(&client).await, &rollout).await;
    assert_eq!((outcome.ok, outcome.code, outcome.attempts), (false, Some(403), 1), "{outcome:?}");
    assert_eq!(outcome.message, "answered 403 Forbidden: not approved by the release manager");
    assert_eq!(receiver.requests().len(), 1, "a 4xx is not retried");
}

#[tokio::test]
async fn server_errors_are_retried_and_counted() {
    let client = client().await;
    let ns = namespace(&client, "wh-5xx").await;
    let receiver = Receiver::start("503, 502, 200").await;
    let rollout = stored_rollout(
        &client,
        &ns,
        json!({"webhooks": [
            hook("load", "rollout", &receiver.url("/load"), json!({"retries": 3}))
        ]}),
    )
    .await;
    let outcome = call_first(&webhooks(&client).await, &rollout).await;
    assert_eq!((outcome.ok, outcome.code, outcome.attempts), (true, Some(200), 3), "{outcome:?}");
    assert_eq!(receiver.requests().len(), 3);
    // Every attempt carries the same payload.
    let bodies: Vec<Value> = receiver.requests().iter().map(|r| r.json()).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));

    // Retries are bounded: always 503 with retries 2 is three attempts, then a failure.
    let mut rollout_two = rollout.clone();
    rollout_two.spec.webhooks[0].retries = 2;
    receiver.script("503:overloaded");
    let before = receiver.requests().len();
    let outcome = call_first(&webhooks(&client).await, &rollout_two).await;
    assert_eq!((outcome.ok, outcome.code, outcome.attempts), (false, Some(503), 3), "{outcome:?}");
    assert_eq!(outcome.message, "answered 503 Service Unavailable: overloaded (3 attempts)");
    assert_eq!(receiver.requests().len() - before, 3);

    // 429 is retried too.
    receiver.script("429, 200");
    let outcome = call_first(&webhooks(&client).await, &rollout_two).await;
    assert_eq!((outcome.ok, outcome.attempts), (true, 2), "{outcome:?}");
}

#[tokio::test]
async fn a_hanging_receiver_hits_the_timeout() {
    let client = client().await;
    let ns = namespace(&client, "wh-hang").await;
    let receiver = Receiver::start("hang 60s").await;
    let rollout = stored_rollout(
        &client,
        &ns,
        json!({"webhooks": [
            hook("slow", "pre-rollout", &receiver.url("/slow"), json!({"timeout": "300ms", "retries": 1}))
        ]}),
    )
    .await;
    let outcome = call_first(&webhooks(&client).await, &rollout).await;
    assert_eq!((outcome.ok, outcome.code, outcome.attempts), (false, None, 2), "{outcome:?}");
    assert_eq!(outcome.message, "no answer within 300ms (2 attempts)");
    assert_eq!(receiver.requests().len(), 2, "both attempts reached the receiver");
}

#[tokio::test]
async fn a_self_signed_receiver_is_refused_unless_verification_is_skipped() {
    let client = client().await;
    let ns = namespace(&client, "wh-tls").await;
    let receiver = Receiver::start_tls("200").await;
    let url = receiver.url("/tls");
    assert!(url.starts_with("https://127.0.0.1:"));
    let rollout = stored_rollout(
        &client,
        &ns,
        json!({"webhooks": [
            hook("verified", "rollout", &url, json!({"retries": 2})),
            hook("test-only", "rollout", &url, json!({"insecureSkipTlsVerify": true})),
        ]}),
    )
    .await;
    let hooks = webhooks(&client).await;
    let payload = Payload::new(&rollout, &progressing(), WebhookType::Rollout);
    let outcomes = hooks.call_all(&rollout, WebhookType::Rollout, &payload).await;
    assert_eq!(outcomes.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), vec!["verified", "test-only"]);
    let (verified, skipped) = (&outcomes[0], &outcomes[1]);
    assert_eq!((verified.ok, verified.code, verified.attempts), (false, None, 1), "{verified:?}");
    assert!(verified.message.starts_with("TLS certificate not accepted"), "{}", verified.message);
    assert!(verified.message.contains("UnknownIssuer"), "{}", verified.message);
    assert!(verified.message.contains("insecureSkipTlsVerify"), "{}", verified.message);
    assert_eq!((skipped.ok, skipped.code), (true, Some(200)), "{skipped:?}");
    assert_eq!(receiver.requests().len(), 1, "only the hook that skips verification got through");
}

#[tokio::test]
async fn only_http_and_https_urls_are_called() {
    let client = client().await;
    let ns = namespace(&client, "wh-ftp").await;
    install_rollout_crd(&client).await;
    // The API server refuses the URL ...
    let spec = json!({"targetRef": {"name": "web"}, "service": {"port": 80},
                      "webhooks": [hook("files", "post-rollout", "ftp://127.0.0.1/upload", json!({}))]});
    let mut rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web", "namespace": ns}, "spec": spec
    }))
    .unwrap();
    let refused =
        Api::<Rollout>::namespaced(client.clone(), &ns).create(&PostParams::default(), &rollout).await;
    let err = refused.unwrap_err().to_string();
    assert!(err.contains("spec.webhooks[0].url"), "{err}");
    // ... and so does the caller, should one reach it (a Rollout stored before a schema change).
    rollout.metadata.namespace = Some(ns.clone());
    let outcome = call_first(&webhooks(&client).await, &rollout).await;
    assert_eq!((outcome.ok, outcome.attempts), (false, 0), "{outcome:?}");
    assert_eq!(outcome.message, "spec.webhooks[0].url: \"ftp\" URLs are not allowed; use http or https");
}

#[tokio::test]
async fn headers_from_a_secret_reach_the_receiver() {
    let client = client().await;
    let ns = namespace(&client, "wh-headers").await;
    create_secret(
        &client,
        &ns,
        "gate-auth",
        json!({"Authorization": "Bearer s3cret\n", "X-Team": "checkout"}),
    )
    .await;
    let receiver = Receiver::start("200").await;
    let rollout = stored_rollout(&client, &ns, json!({"webhooks": [
        hook("approve", "confirm-promotion", &receiver.url("/approve"), json!({"headersFrom": {"name": "gate-auth"}}))
    ]}))
    .await;
    let outcome = call_first(&webhooks(&client).await, &rollout).await;
    assert!(outcome.ok, "{outcome:?}");
    let request = &receiver.requests()[0];
    assert_eq!(request.header("authorization"), Some("Bearer s3cret"), "trailing newline trimmed");
    assert_eq!(request.header("x-team"), Some("checkout"));
    assert_eq!(request.header("content-type"), Some("application/json"));

    // A value that cannot be a header value is named by its key. (Every valid Secret key is a
    // valid header name: the API server allows only letters, digits, '-', '_' and '.'.)
    create_secret(&client, &ns, "bad-headers", json!({"X-Token": "line one\nline two"})).await;
    let bad = stored_rollout_named(&client, &ns, "bad", json!({"webhooks": [
        hook("approve", "confirm-promotion", &receiver.url("/approve"), json!({"headersFrom": {"name": "bad-headers"}}))
    ]}))
    .await;
    let outcome = call_first(&webhooks(&client).await, &bad).await;
    assert_eq!((outcome.ok, outcome.attempts), (false, 0));
    assert_eq!(
        outcome.message,
        "spec.webhooks[0].headersFrom: the value of key \"X-Token\" of Secret \"bad-headers\" is not a valid HTTP header value (no line breaks or control characters)"
    );
}

async fn stored_rollout_named(client: &Client, ns: &str, name: &str, spec: Value) -> Rollout {
    let mut full = json!({"targetRef": {"name": name}, "service": {"port": 80}});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": name}, "spec": full
    }))
    .unwrap();
    Api::namespaced(client.clone(), ns).create(&PostParams::default(), &rollout).await.unwrap()
}

#[tokio::test]
async fn a_missing_secret_names_the_field() {
    let client = client().await;
    let ns = namespace(&client, "wh-nosecret").await;
    let receiver = Receiver::start("200").await;
    let rollout = stored_rollout(&client, &ns, json!({"webhooks": [
        hook("other", "rollout", &receiver.url("/other"), json!({})),
        hook("approve", "confirm-promotion", &receiver.url("/approve"), json!({"headersFrom": {"name": "absent"}})),
    ]}))
    .await;
    let hooks = webhooks(&client).await;
    let payload = Payload::new(&rollout, &progressing(), WebhookType::ConfirmPromotion);
    let outcome = hooks.call(&rollout, &rollout.spec.webhooks[1], &payload).await;
    assert_eq!((outcome.ok, outcome.code, outcome.attempts), (false, None, 0));
    assert_eq!(
        outcome.message,
        format!("spec.webhooks[1].headersFrom.name: Secret \"absent\" not found in namespace \"{ns}\"")
    );
    assert!(receiver.requests().is_empty(), "nothing is sent without its headers");
}

/// GETs of one Secret in the audit log, counted once a later marker request shows up (the log
/// is written in order, so every earlier GET is in by then).
async fn secret_gets(client: &Client, ns: &str, name: &str) -> usize {
    static MARKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let marker = format!("marker-{}", MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let _ = Api::<Secret>::namespaced(client.clone(), ns).get_opt(&marker).await.unwrap();
    let gets = |text: &str, secret: &str| {
        text.lines()
            .filter(|l| l.contains(ns) && l.contains(secret))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["verb"] == "get"
                    && e["objectRef"]["resource"] == "secrets"
                    && e["objectRef"]["namespace"] == ns
                    && e["objectRef"]["name"] == secret
            })
            .count()
    };
    eventually("the marker GET in the audit log", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(audit_log()).ok()?;
        (gets(&text, &marker) > 0).then(|| gets(&text, name))
    })
    .await
}

#[tokio::test]
async fn the_secret_cache_reads_a_secret_once_per_ttl() {
    let client = client().await;
    let ns = namespace(&client, "wh-cache").await;
    create_secret(&client, &ns, "cached-auth", json!({"Authorization": "Bearer one"})).await;
    let receiver = Receiver::start("200").await;
    let rollout = stored_rollout(
        &client,
        &ns,
        json!({"webhooks": [
            hook("a", "rollout", &receiver.url("/a"), json!({"headersFrom": {"name": "cached-auth"}})),
            hook("b", "rollout", &receiver.url("/b"), json!({"headersFrom": {"name": "cached-auth"}})),
        ]}),
    )
    .await;
    let ttl = Duration::from_secs(3);
    let secrets = SecretReader::with_ttl(client.clone(), ttl);
    let hooks = Webhooks::with_secrets(secrets).unwrap();
    let payload = Payload::new(&rollout, &progressing(), WebhookType::Rollout);
    // Ten calls of two hooks at once, within one TTL: one read.
    for _ in 0..5 {
        let outcomes = hooks.call_all(&rollout, WebhookType::Rollout, &payload).await;
        assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    }
    assert_eq!(receiver.requests().len(), 10);
    assert_eq!(
        secret_gets(&client, &ns, "cached-auth").await,
        1,
        "ten calls within the TTL read the Secret once"
    );
    // Once the TTL has passed, the next call reads it again.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let outcomes = hooks.call_all(&rollout, WebhookType::Rollout, &payload).await;
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    assert_eq!(secret_gets(&client, &ns, "cached-auth").await, 2);
}

#[tokio::test]
async fn event_hooks_get_the_transition_and_call_all_keeps_spec_order() {
    let client = client().await;
    let ns = namespace(&client, "wh-event").await;
    let first = Receiver::start("200 after 300ms").await;
    let second = Receiver::start("500").await;
    let rollout = stored_rollout(&client, &ns, json!({"webhooks": [
        hook("audit", "event", &first.url("/events"), json!({"metadata": {"reason": "overridden", "env": "prod"}})),
        hook("approve", "confirm-promotion", &second.url("/approve"), json!({})),
        hook("chat", "event", &second.url("/events"), json!({"retries": 0})),
    ]}))
    .await;
    let hooks = webhooks(&client).await;
    let payload = Payload::new(&rollout, &progressing(), WebhookType::Event)
        .with_event("StepAdvanced", "step 2/5: 20% of traffic on the canary");
    let outcomes = hooks.call_all(&rollout, WebhookType::Event, &payload).await;
    // Spec order, though the first answers last.
    assert_eq!(
        outcomes.iter().map(|o| (o.name.as_str(), o.ok)).collect::<Vec<_>>(),
        vec![("audit", true), ("chat", false)]
    );
    assert_eq!(outcomes[1].message, "answered 500 Internal Server Error");
    let body = first.requests()[0].json();
    assert_eq!(body["type"], "event");
    assert_eq!(
        body["metadata"],
        json!({"env": "prod", "reason": "StepAdvanced", "message": "step 2/5: 20% of traffic on the canary"})
    );
    assert!(second.requests_to("/approve").is_empty(), "other types are not called");
}

// ----- notifications -----------------------------------------------------------------------

fn transition(reason: &'static str, message: &str, warning: bool) -> Transition {
    Transition { reason: reason.into(), message: message.into(), warning }
}

fn quick(notifier: Notifier) -> Notifier {
    notifier.with_policy(RetryPolicy {
        retries: 2,
        timeout: Duration::from_secs(5),
        min_delay: FAST.0,
        max_delay: FAST.1,
    })
}

fn failed_status() -> RolloutStatus {
    serde_json::from_value(json!({
        "phase": "Failed", "step": 0, "steps": 5, "canaryWeight": 0,
        "canaryRevision": "7d9f21c4", "promotedRevision": "5c8d9f10",
        "gates": [
            {"name": "successRate", "value": 97.8, "primaryValue": 99.9, "threshold": ">= 99.5", "verdict": "Fail", "requests": 1204.0},
            {"name": "latency.p99", "value": 180.0, "threshold": "<= 500ms", "verdict": "Pass", "requests": 1204.0}
        ]
    }))
    .unwrap()
}

#[tokio::test]
async fn notifications_reach_slack_teams_and_generic_receivers_by_severity() {
    let client = client().await;
    let ns = namespace(&client, "nt-severity").await;
    let (slack, teams, generic) =
        (Receiver::start("200").await, Receiver::start("200").await, Receiver::start("200").await);
    create_secret(&client, &ns, "slack-hook", json!({"address": slack.url("/services/T000/B000/XXXX")}))
        .await;
    create_secret(
        &client,
        &ns,
        "teams-hook",
        json!({"url": format!("{}\n", teams.url("/workflows/abc/triggers/manual/paths/invoke"))}),
    )
    .await;
    create_secret(&client, &ns, "pager", json!({"address": generic.url("/serin")})).await;
    let rollout = stored_rollout(
        &client,
        &ns,
        json!({"notifications": [
            {"type": "slack", "secretRef": {"name": "slack-hook"}},
            {"type": "teams", "secretRef": {"name": "teams-hook", "key": "url"}, "severity": "warn"},
            {"type": "generic", "secretRef": {"name": "pager"}, "severity": "error"},
        ]}),
    )
    .await;
    let notifier = quick(Notifier::new(client.clone(), Vec::new()).unwrap());

    // Info: a passed step reaches only the info receiver.
    let step = RolloutStatus {
        gates: failed_status()
            .gates
            .iter()
            .map(|g| serin::api::GateStatus { verdict: serin::api::Verdict::Pass, ..g.clone() })
            .collect(),
        ..progressing()
    };
    let deliveries = notifier
        .notify(
            &rollout,
            &step,
            &[
                transition("CheckPassed", "step 1/5: gates passed", false),
                transition("StepAdvanced", "step 2/5: 20% of traffic on the canary", false),
            ],
        )
        .await;
    assert_eq!(
        deliveries.iter().map(|d| (d.receiver.as_str(), d.kind, d.ok)).collect::<Vec<_>>(),
        vec![("spec.notifications[0]", MessageKind::StepPassed, true)],
        "{deliveries:?}"
    );
    assert_eq!(slack.requests().len(), 1, "one message for the check and the step");
    assert!(teams.requests().is_empty() && generic.requests().is_empty());
    let body = slack.requests()[0].json();
    assert!(body["text"].as_str().unwrap().starts_with(&format!("[info] {ns}/web: step passed")), "{body}");
    assert!(body.to_string().contains("*Gates*"), "{body}");

    // Warn: a failed check within the tolerance reaches Slack and Teams.
    let deliveries = notifier
        .notify(
            &rollout,
            &progressing(),
            &[transition("CheckFailed", "step 2/5: successRate 97.8 < 99.5", true)],
        )
        .await;
    let mut receivers: Vec<&str> = deliveries.iter().map(|d| d.receiver.as_str()).collect();
    receivers.sort();
    assert_eq!(receivers, vec!["spec.notifications[0]", "spec.notifications[1]"]);
    assert!(deliveries.iter().all(|d| d.ok && d.severity == Severity::Warn), "{deliveries:?}");

    // Error: a rollback reaches all three, once each, with the failing gate and its value.
    let deliveries = notifier
        .notify(
            &rollout,
            &failed_status(),
            &[
                transition("CheckFailed", "step 2/5: successRate 97.8 < 99.5", true),
                transition("AnalysisFailed", "rolled back: 1 failed check exceeds tolerance 0", true),
            ],
        )
        .await;
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    assert!(
        deliveries.iter().all(|d| d.ok && d.kind == MessageKind::RolledBack && d.attempts == 1),
        "{deliveries:?}"
    );
    assert_eq!((slack.requests().len(), teams.requests().len(), generic.requests().len()), (3, 2, 1));

    let slack_body = slack.requests()[2].json();
    assert!(
        slack_body
            .to_string()
            .contains("successRate 97.8 (threshold &gt;= 99.5, primary 99.9, 1204 requests): fail"),
        "{slack_body}"
    );
    let teams_body = teams.requests()[1].json();
    assert_eq!(teams.requests()[1].path, "/workflows/abc/triggers/manual/paths/invoke");
    assert_eq!(teams_body["type"], "message");
    assert_eq!(teams_body["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(teams_body["attachments"][0]["content"]["type"], "AdaptiveCard");
    assert!(
        teams_body.to_string().contains(
            r#""title":"successRate","value":"97.8 (threshold >= 99.5, primary 99.9, 1204 requests): fail""#
        ),
        "{teams_body}"
    );
    let generic_body = generic.requests()[0].json();
    assert_eq!(generic_body["kind"], "rolledBack");
    assert_eq!(generic_body["severity"], "error");
    assert_eq!(generic_body["reason"], "AnalysisFailed");
    assert_eq!(generic_body["namespace"], ns.as_str());
    assert_eq!(generic_body["gates"][0]["value"], 97.8);
    assert!(generic_body["message"].as_str().unwrap().contains("successRate 97.8 < 99.5"), "{generic_body}");
}

#[tokio::test]
async fn global_receivers_hear_about_every_rollout() {
    let client = client().await;
    let ops = namespace(&client, "nt-ops").await;
    let app = namespace(&client, "nt-app").await;
    let receiver = Receiver::start("503, 200").await;
    create_secret(&client, &ops, "ops-hook", json!({"address": receiver.url("/ops")})).await;
    let global = vec![GlobalNotification {
        type_: NotificationType::Generic,
        secret_ref: GlobalSecretRef {
            namespace: ops.clone(),
            name: "ops-hook".into(),
            key: "address".into(),
        },
        severity: Severity::Warn,
    }];
    let rollout = stored_rollout(&client, &app, json!({})).await;
    let notifier = quick(Notifier::new(client.clone(), global).unwrap());
    let deliveries = notifier
        .notify(
            &rollout,
            &progressing(),
            &[transition("NewRevision", "new revision 7d9f21c4 detected", false)],
        )
        .await;
    assert!(deliveries.is_empty(), "info is below the global receiver's severity: {deliveries:?}");
    let deliveries = notifier
        .notify(
            &rollout,
            &progressing(),
            &[transition("WaitingForApproval", "waiting for approval from approve", false)],
        )
        .await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (deliveries[0].receiver.as_str(), deliveries[0].ok, deliveries[0].attempts),
        ("global[0]", true, 2),
        "{deliveries:?}"
    );
    let body = receiver.requests()[1].json();
    assert_eq!((body["kind"].as_str(), body["namespace"].as_str()), (Some("waiting"), Some(app.as_str())));
    assert_eq!(body["message"], "waiting for approval from approve");
}

#[tokio::test]
async fn an_unusable_notification_secret_is_reported_by_field() {
    let client = client().await;
    let ns = namespace(&client, "nt-nosecret").await;
    create_secret(&client, &ns, "wrong-key", json!({"url": "https://hooks.slack.test/x"})).await;
    create_secret(&client, &ns, "not-a-url", json!({"address": "ftp://files.test/x"})).await;
    let rollout = stored_rollout(
        &client,
        &ns,
        json!({"notifications": [
            {"type": "slack", "secretRef": {"name": "absent"}},
            {"type": "teams", "secretRef": {"name": "wrong-key"}},
            {"type": "generic", "secretRef": {"name": "not-a-url"}},
        ]}),
    )
    .await;
    let notifier = quick(Notifier::new(client.clone(), Vec::new()).unwrap());
    let mut deliveries = notifier
        .notify(
            &rollout,
            &failed_status(),
            &[transition("Aborted", "rolled back: aborted by request abort/1", true)],
        )
        .await;
    deliveries.sort_by(|a, b| a.receiver.cmp(&b.receiver));
    let messages: Vec<(&str, bool, &str)> =
        deliveries.iter().map(|d| (d.receiver.as_str(), d.ok, d.message.as_str())).collect();
    assert_eq!(
        messages,
        vec![
            (
                "spec.notifications[0]",
                false,
                &*format!(
                    "spec.notifications[0].secretRef.name: Secret \"absent\" not found in namespace \"{ns}\""
                )
            ),
            (
                "spec.notifications[1]",
                false,
                &*format!(
                    "spec.notifications[1].secretRef.key: Secret \"wrong-key\" in namespace \"{ns}\" has no key \"address\" (it has: url)"
                )
            ),
            (
                "spec.notifications[2]",
                false,
                "spec.notifications[2].secretRef.key: key \"address\" of Secret \"not-a-url\" does not hold an http(s) URL"
            ),
        ]
    );
}

#[tokio::test]
async fn a_receiver_nobody_listens_on_is_retried_then_reported() {
    let client = client().await;
    let ns = namespace(&client, "wh-refused").await;
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rollout = stored_rollout(
        &client,
        &ns,
        json!({"webhooks": [
            hook("gone", "rollout", &format!("http://127.0.0.1:{port}/gone"), json!({"retries": 2}))
        ]}),
    )
    .await;
    let outcome = call_first(&webhooks(&client).await, &rollout).await;
    assert_eq!((outcome.ok, outcome.code, outcome.attempts), (false, None, 3), "{outcome:?}");
    assert!(outcome.message.starts_with("cannot connect: "), "{}", outcome.message);
    assert!(outcome.message.ends_with(" (3 attempts)"), "{}", outcome.message);
    assert!(
        !outcome.message.contains(&port.to_string()),
        "the URL is not in the message: {}",
        outcome.message
    );
}
