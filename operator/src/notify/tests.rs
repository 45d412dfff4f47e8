use super::*;
use crate::api::{GateStatus, Phase, RolloutSpec};
use crate::webhooks::Weights;
use serde_json::Value;

fn rollout() -> Rollout {
    let spec: RolloutSpec =
        serde_json::from_value(serde_json::json!({"targetRef": {"name": "web"}, "service": {"port": 80}}))
            .unwrap();
    let mut rollout = Rollout::new("web", spec);
    rollout.metadata.namespace = Some("shop".into());
    rollout
}

fn gate(name: &str, value: Option<f64>, threshold: &str, verdict: Verdict) -> GateStatus {
    GateStatus {
        name: name.into(),
        value,
        primary_value: Some(99.9),
        threshold: threshold.into(),
        verdict,
        requests: Some(1204.0),
        at: None,
    }
}

fn status() -> RolloutStatus {
    RolloutStatus {
        phase: Phase::Failed,
        step: 0,
        steps: 5,
        canary_weight: 0,
        canary_revision: Some("7d9f21c4".into()),
        promoted_revision: Some("5c8d9f10".into()),
        gates: vec![
            gate("successRate", Some(97.8), ">= 99.5", Verdict::Fail),
            gate("latency.p99", Some(180.0), "<= 500ms", Verdict::Pass),
        ],
        ..RolloutStatus::default()
    }
}

fn t(reason: &'static str, message: &str, warning: bool) -> Transition {
    Transition { reason: reason.into(), message: message.into(), warning }
}

fn rolled_back() -> Message {
    let transitions = [
        t("CheckFailed", "step 2/5: successRate 97.8 < 99.5", true),
        t("AnalysisFailed", "rolled back: 1 failed check > tolerance 0", true),
    ];
    let mut all = messages(&rollout(), &status(), &transitions);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn every_reason_has_its_kind_and_severity() {
    use MessageKind::*;
    use Severity::*;
    let expected: &[(&str, MessageKind, Severity)] = &[
        ("NewRevision", Started, Info),
        ("RevisionChanged", Started, Info),
        ("Retry", Started, Info),
        ("StepAdvanced", StepPassed, Info),
        ("CheckPassed", StepPassed, Info),
        ("Promoted", Promoted, Info),
        ("Approved", Approved, Info),
        ("WindowOpened", WindowOpened, Info),
        ("Unfrozen", Unfrozen, Info),
        ("WaitingForApproval", Waiting, Warn),
        ("WaitingForWindow", Waiting, Warn),
        ("ApprovalRejected", ApprovalRejected, Warn),
        ("CheckFailed", CheckFailed, Warn),
        ("WebhookFailed", WebhookFailed, Warn),
        ("Paused", Paused, Warn),
        ("AnalysisFailed", RolledBack, Error),
        ("SequentialRegression", RolledBack, Error),
        ("InsufficientData", RolledBack, Error),
        ("NoEvidence", RolledBack, Error),
        ("ProgressDeadlineExceeded", RolledBack, Error),
        ("CanaryFailing", RolledBack, Error),
        ("Aborted", RolledBack, Error),
        ("RollbackRequested", RolledBack, Error),
        ("Frozen", Frozen, Error),
        ("Stalled", Stalled, Error),
    ];
    for (reason, kind, severity) in expected {
        assert_eq!(classify(reason, false), Some((*kind, *severity)), "{reason}");
    }
    for reason in
        ["Initialized", "Promoting", "Resumed", "RevisionReverted", "HoldingForEvidence", "RequestRefused"]
    {
        assert_eq!(classify(reason, false), None, "{reason}");
        assert_eq!(classify(reason, true), None, "{reason}");
    }
    assert_eq!(classify("SomethingNew", true), Some((Warning, Warn)));
    assert_eq!(classify("SomethingNew", false), None);
}

#[test]
fn one_message_per_transition() {
    // A passed check and the step it advances to are one "step passed".
    let step = messages(
        &rollout(),
        &RolloutStatus { phase: Phase::Progressing, step: 3, steps: 5, canary_weight: 30, ..status() },
        &[
            t("CheckPassed", "step 2/5: gates passed", false),
            t("StepAdvanced", "step 3/5: 30% of traffic on the canary", false),
        ],
    );
    assert_eq!(step.len(), 1, "{step:?}");
    assert_eq!(
        (step[0].kind, step[0].severity, step[0].reason.as_str()),
        (MessageKind::StepPassed, Severity::Info, "StepAdvanced")
    );
    assert_eq!(step[0].text, "step 2/5: gates passed; step 3/5: 30% of traffic on the canary");
    assert_eq!(step[0].state.weights, Weights { canary: 30, primary: 70 });

    // A failed check that ends in a rollback is part of the rollback.
    let back = rolled_back();
    assert_eq!(
        (back.kind, back.severity, back.reason.as_str()),
        (MessageKind::RolledBack, Severity::Error, "AnalysisFailed")
    );
    assert!(back.text.contains("successRate 97.8 < 99.5"), "{}", back.text);

    // A failed check within the tolerance is its own warning.
    let failed =
        messages(&rollout(), &status(), &[t("CheckFailed", "step 2/5: successRate 97.8 < 99.5", true)]);
    assert_eq!(failed.iter().map(|m| m.kind).collect::<Vec<_>>(), vec![MessageKind::CheckFailed]);

    // Transitions that are not notified produce nothing.
    assert!(messages(&rollout(), &status(), &[t("Initialized", "primary initialized", false)]).is_empty());

    // Different kinds in one decision stay apart, in order.
    let two = messages(
        &rollout(),
        &status(),
        &[t("Approved", "gate approved", false), t("Promoted", "revision 7d9f21c4 promoted", false)],
    );
    assert_eq!(
        two.iter().map(|m| m.kind).collect::<Vec<_>>(),
        vec![MessageKind::Approved, MessageKind::Promoted]
    );
}

#[test]
fn failures_show_failing_gates_and_steps_show_all() {
    let back = rolled_back();
    let shown: Vec<&str> = back.shown_gates().iter().map(|g| g.name.as_str()).collect();
    assert_eq!(shown, vec!["successRate"]);
    assert_eq!(
        describe_gate(&back.gates[0]),
        "successRate 97.8 (threshold >= 99.5, primary 99.9, 1204 requests): fail"
    );
    let step = Message { kind: MessageKind::StepPassed, ..back.clone() };
    assert_eq!(step.shown_gates().len(), 2);
    let promoted = Message { kind: MessageKind::Promoted, ..back };
    assert!(promoted.shown_gates().is_empty());
}

/// Checks a Slack body against the Block Kit reference (docs.slack.dev/reference/block-kit):
/// message `text` is a string; at most 50 blocks; header: `plain_text` of at most 150
/// characters; section: `text` (at most 3000) and/or `fields` (at most 10, each at most 2000),
/// text objects of type `plain_text` or `mrkdwn`; context: 1 to 10 elements.
fn assert_slack_shape(body: &Value) {
    let text = body["text"].as_str().expect("text is a string");
    assert!(!text.is_empty() && text.chars().count() <= slack::FALLBACK_TEXT_MAX);
    let blocks = body["blocks"].as_array().expect("blocks is an array");
    assert!(!blocks.is_empty() && blocks.len() <= slack::BLOCKS_MAX);
    let text_object = |t: &Value, max: usize| {
        let kind = t["type"].as_str().unwrap();
        assert!(kind == "plain_text" || kind == "mrkdwn", "{t}");
        let s = t["text"].as_str().unwrap();
        assert!(!s.is_empty() && s.chars().count() <= max, "{} characters > {max}", s.chars().count());
    };
    for block in blocks {
        match block["type"].as_str().unwrap() {
            "header" => {
                assert_eq!(block["text"]["type"], "plain_text");
                text_object(&block["text"], slack::HEADER_MAX);
            }
            "section" => {
                assert!(block.get("text").is_some() || block.get("fields").is_some(), "{block}");
                if let Some(t) = block.get("text") {
                    text_object(t, slack::SECTION_TEXT_MAX);
                }
                if let Some(fields) = block.get("fields") {
                    let fields = fields.as_array().unwrap();
                    assert!(!fields.is_empty() && fields.len() <= slack::FIELDS_MAX);
                    fields.iter().for_each(|f| text_object(f, slack::FIELD_TEXT_MAX));
                }
            }
            "context" => {
                let elements = block["elements"].as_array().unwrap();
                assert!(!elements.is_empty() && elements.len() <= slack::CONTEXT_ELEMENTS_MAX);
                elements.iter().for_each(|e| text_object(e, 3000));
            }
            other => panic!("unexpected block type {other}"),
        }
    }
}

#[test]
fn slack_bodies_follow_block_kit() {
    let back = rolled_back();
    let body = render(NotificationType::Slack, &back);
    assert_slack_shape(&body);
    assert_eq!(body["blocks"][0]["type"], "header");
    assert!(body["blocks"][0]["text"]["text"].as_str().unwrap().ends_with("shop/web: rolled back"));
    let all = body.to_string();
    // `>` is escaped in mrkdwn, so thresholds read as written.
    assert!(all.contains("threshold &gt;= 99.5"), "{all}");
    assert!(all.contains("*Failing gates*"), "{all}");
    assert!(!all.contains("latency.p99"), "passing gates are not listed on a rollback: {all}");
    assert_eq!(
        body["text"],
        "[error] shop/web: rolled back: 1 failed check &gt; tolerance 0; step 2/5: successRate 97.8 &lt; 99.5",
        "the engine's leading 'rolled back:' is not repeated after the title"
    );

    // Over-long engine text and names are cut to Slack's limits.
    let mut long = Message { text: "x".repeat(10_000), ..rolled_back() };
    long.state.rollout = "r".repeat(300);
    assert_slack_shape(&render(NotificationType::Slack, &long));
}

/// Checks a Teams body against the Workflows webhook format (Microsoft Teams platform docs,
/// "Send Adaptive Cards using an Incoming Webhook") and the Adaptive Cards schema for the
/// elements used (adaptivecards.io/explorer: TextBlock requires `text`; FactSet requires
/// `facts` of `{title, value}` strings; colors and sizes from their enums).
fn assert_teams_shape(body: &Value) {
    assert_eq!(body["type"], "message");
    let attachments = body["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0]["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &attachments[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["$schema"], "http://adaptivecards.io/schemas/adaptive-card.json");
    let elements = card["body"].as_array().unwrap();
    assert!(!elements.is_empty());
    for element in elements {
        match element["type"].as_str().unwrap() {
            "TextBlock" => {
                assert!(!element["text"].as_str().unwrap().is_empty());
                if let Some(color) = element.get("color") {
                    let allowed = ["Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"];
                    assert!(allowed.contains(&color.as_str().unwrap()), "{color}");
                }
                if let Some(size) = element.get("size") {
                    assert!(
                        ["Small", "Default", "Medium", "Large", "ExtraLarge"]
                            .contains(&size.as_str().unwrap())
                    );
                }
            }
            "FactSet" => {
                for fact in element["facts"].as_array().unwrap() {
                    assert!(fact["title"].is_string() && fact["value"].is_string(), "{fact}");
                }
            }
            other => panic!("unexpected element {other}"),
        }
    }
}

#[test]
fn teams_bodies_are_adaptive_cards_in_a_message() {
    let back = rolled_back();
    let body = render(NotificationType::Teams, &back);
    assert_teams_shape(&body);
    let card = &body["attachments"][0]["content"];
    assert_eq!(card["body"][0]["text"], "shop/web: rolled back");
    assert_eq!(card["body"][0]["color"], "Attention");
    let all = body.to_string();
    assert!(
        all.contains(
            r#"{"title":"successRate","value":"97.8 (threshold >= 99.5, primary 99.9, 1204 requests): fail"}"#
        ),
        "{all}"
    );
    let promoted = Message { kind: MessageKind::Promoted, severity: Severity::Info, ..back };
    let body = render(NotificationType::Teams, &promoted);
    assert_teams_shape(&body);
    assert_eq!(body["attachments"][0]["content"]["body"][0]["color"], "Good");
}

#[test]
fn generic_bodies_carry_everything() {
    let body = render(NotificationType::Generic, &rolled_back());
    assert_eq!(body["rollout"], "web");
    assert_eq!(body["namespace"], "shop");
    assert_eq!(body["kind"], "rolledBack");
    assert_eq!(body["severity"], "error");
    assert_eq!(body["reason"], "AnalysisFailed");
    assert_eq!(body["phase"], "Failed");
    assert_eq!(body["revision"], "7d9f21c4");
    assert_eq!(body["promotedRevision"], "5c8d9f10");
    assert_eq!(body["weights"], serde_json::json!({"canary": 0, "primary": 100}));
    assert_eq!(body["gates"][0]["name"], "successRate");
    assert_eq!(body["gates"][0]["value"], 97.8);
    assert_eq!(body["gates"][0]["verdict"], "Fail");
    assert_eq!(body["gates"].as_array().unwrap().len(), 2);
    let parsed: generic::GenericBody = serde_json::from_value(body).unwrap();
    assert_eq!(parsed.kind, MessageKind::RolledBack);
}

#[test]
fn the_global_file_is_a_yaml_list_and_errors_name_the_item() {
    let parsed = parse_global(
        "- type: slack\n  secretRef: {namespace: serin-system, name: slack}\n  severity: warn\n\
         - type: generic\n  secretRef: {namespace: ops, name: pager, key: url}\n",
    )
    .unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(
        (parsed[0].type_, parsed[0].severity, parsed[0].secret_ref.key.as_str()),
        (NotificationType::Slack, Severity::Warn, "address")
    );
    assert_eq!((parsed[1].severity, parsed[1].secret_ref.key.as_str()), (Severity::Info, "url"));
    assert_eq!(parse_global("").unwrap(), vec![]);

    for (yaml, expected) in [
        ("- type: slak\n  secretRef: {namespace: a, name: b}\n", "item [0]: unknown variant `slak`"),
        (
            "- type: slack\n  secretRef: {namespace: a, name: b}\n- type: teams\n",
            "item [1]: missing field `secretRef`",
        ),
        ("- type: slack\n  secretRef: {name: b}\n", "item [0]: missing field `namespace`"),
        (
            "- type: slack\n  secretRef: {namespace: a, name: b}\n  severty: warn\n",
            "item [0]: unknown field `severty`",
        ),
        (
            "- type: slack\n  secretRef: {namespace: '', name: b}\n",
            "item [0].secretRef.namespace: must not be empty",
        ),
        ("type: slack\n", "not a YAML list"),
    ] {
        let err = parse_global(yaml).unwrap_err();
        assert!(err.starts_with(expected), "{yaml}: {err}");
    }
    let err = load_global(Path::new("/nonexistent/serin-notifications.yaml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("notifications file /nonexistent/serin-notifications.yaml: cannot read it"),
        "{err}"
    );
}

/// The reconciler runs on a multi-threaded runtime: calls must be `Send` futures, and the
/// clients shareable.
#[tokio::test]
async fn futures_are_send_and_clients_are_shareable() {
    fn send<T: Send>(_: &T) {}
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Notifier>();
    shareable::<crate::webhooks::Webhooks>();
    shareable::<SecretReader>();
    crate::ensure_crypto_provider();
    let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let notifier = Notifier::new(client.clone(), Vec::new()).unwrap();
    let hooks = crate::webhooks::Webhooks::new(client).unwrap();
    let rollout = rollout();
    let status = status();
    let payload = crate::webhooks::Payload::new(&rollout, &status, crate::api::WebhookType::Event);
    send(&notifier.notify(&rollout, &status, &[]));
    send(&hooks.call_all(&rollout, crate::api::WebhookType::Event, &payload));
}
