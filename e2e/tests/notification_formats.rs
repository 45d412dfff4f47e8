//! Serin's Slack and Teams bodies, checked by the vendors' own libraries: Slack's Block Kit
//! types (`@slack/types`, compiled with TypeScript) and Microsoft's Adaptive Cards parser
//! (`adaptivecards`, card version 1.4). Both are pinned in `e2e/fixtures/formats/` and
//! installed into the cache by `e2e/fixtures/formats/install`. A control shows that the checks
//! do fail on malformed bodies.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use serin::api::{GateStatus, NotificationType, Phase, Severity, Verdict};
use serin::notify::{Message, MessageKind, render};
use serin::webhooks::{RolloutState, Weights};
use serin_e2e::repo_root;

/// The installed checkers' node_modules.
fn node_modules() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("e2e/fixtures/formats/install");
        let out = Command::new(&script).stderr(std::process::Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "{} failed", script.display());
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Runs the checkers over `bodies`; returns whether all passed and what they printed.
fn check(name: &str, bodies: &Value) -> (bool, String) {
    let file = std::env::temp_dir().join(format!("serin-formats-{}-{name}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(bodies).unwrap()).unwrap();
    let out = Command::new("node")
        .arg(repo_root().join("e2e/fixtures/formats/check.js"))
        .arg(&file)
        .env("NODE_PATH", node_modules())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), printed)
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

/// One message of every kind, plus ones with awkward text: markup characters, very long text,
/// no revision.
fn messages() -> Vec<(String, Message)> {
    let base = Message {
        kind: MessageKind::Started,
        severity: Severity::Info,
        reason: "NewRevision".into(),
        text: "new revision 7d9f21c4 detected; starting canary analysis".into(),
        state: RolloutState {
            rollout: "web".into(),
            namespace: "shop".into(),
            phase: Phase::Progressing,
            revision: Some("7d9f21c4".into()),
            promoted_revision: Some("5c8d9f10".into()),
            step: 2,
            steps: 5,
            weights: Weights { canary: 20, primary: 80 },
        },
        gates: vec![
            gate("successRate", Some(97.8), ">= 99.5", Verdict::Fail),
            gate("latency.p99", None, "<= 500ms", Verdict::InsufficientData),
            gate("latency.p50", Some(40.0), "<= 100ms", Verdict::Pass),
        ],
    };
    use MessageKind::*;
    let kinds = [
        (Started, Severity::Info),
        (StepPassed, Severity::Info),
        (Promoted, Severity::Info),
        (RolledBack, Severity::Error),
        (Waiting, Severity::Warn),
        (Approved, Severity::Info),
        (ApprovalRejected, Severity::Warn),
        (WindowOpened, Severity::Info),
        (CheckFailed, Severity::Warn),
        (WebhookFailed, Severity::Warn),
        (Paused, Severity::Warn),
        (Frozen, Severity::Error),
        (Unfrozen, Severity::Info),
        (Stalled, Severity::Error),
        (Warning, Severity::Warn),
    ];
    let mut all: Vec<(String, Message)> = kinds
        .iter()
        .map(|(kind, severity)| {
            (format!("{kind:?}"), Message { kind: *kind, severity: *severity, ..base.clone() })
        })
        .collect();
    all.push((
        "markup".into(),
        Message {
            kind: RolledBack,
            severity: Severity::Error,
            text: "rolled back: <@U123> & <!channel> *bold* _it_ `code` \"quotes\" \\ ü 🐤".into(),
            ..base.clone()
        },
    ));
    all.push((
        "long".into(),
        Message {
            kind: CheckFailed,
            text: "x".repeat(20_000),
            state: RolloutState { rollout: "r".repeat(300), ..base.state.clone() },
            ..base.clone()
        },
    ));
    all.push((
        "bare".into(),
        Message {
            state: RolloutState { revision: None, promoted_revision: None, ..base.state.clone() },
            text: String::new(),
            gates: vec![],
            ..base
        },
    ));
    all
}

fn bodies(messages: &[(String, Message)]) -> Value {
    let each = |type_| -> Vec<Value> {
        messages.iter().map(|(name, m)| json!({"name": name, "body": render(type_, m)})).collect()
    };
    json!({"slack": each(NotificationType::Slack), "teams": each(NotificationType::Teams)})
}

#[test]
fn slack_and_teams_bodies_pass_the_vendors_checks() {
    let messages = messages();
    let (ok, printed) = check("all", &bodies(&messages));
    assert!(ok, "{printed}");
    // Every body was checked, by both.
    assert_eq!(printed.lines().filter(|l| l.starts_with("ok slack ")).count(), messages.len(), "{printed}");
    assert_eq!(printed.lines().filter(|l| l.starts_with("ok teams ")).count(), messages.len(), "{printed}");
}

#[test]
fn the_checks_catch_malformed_bodies() {
    let (_, good) = messages().remove(3);
    let mut slack = render(NotificationType::Slack, &good);
    slack["blocks"][0]["text"]["type"] = json!("mrkdown");
    let mut slack_extra = render(NotificationType::Slack, &good);
    slack_extra["blocks"][1]["colour"] = json!("red");
    let mut teams = render(NotificationType::Teams, &good);
    teams["attachments"][0]["content"]["body"][0]["weight"] = json!("Boldest");
    let mut teams_element = render(NotificationType::Teams, &good);
    teams_element["attachments"][0]["content"]["body"][1] = json!({"type": "Chart", "data": []});
    let mut teams_wrapper = render(NotificationType::Teams, &good);
    teams_wrapper["attachments"][0]["contentType"] = json!("application/vnd.microsoft.card.hero");
    let bad = json!({
        "slack": [{"name": "bad-text-type", "body": slack}, {"name": "extra-field", "body": slack_extra}],
        "teams": [{"name": "bad-weight", "body": teams}, {"name": "unknown-element", "body": teams_element},
                  {"name": "wrong-content-type", "body": teams_wrapper}]
    });
    let (ok, printed) = check("bad", &bad);
    assert!(!ok, "{printed}");
    for name in [
        "slack bad-text-type",
        "slack extra-field",
        "teams bad-weight",
        "teams unknown-element",
        "teams wrong-content-type",
    ] {
        assert!(
            printed.lines().any(|l| l.starts_with(&format!("FAIL {name}: "))),
            "{name} not caught:\n{printed}"
        );
    }
}
