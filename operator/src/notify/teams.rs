//! Microsoft Teams bodies for Workflows (Power Automate) webhooks: a message with one Adaptive
//! Card attachment.
//!
//! Microsoft retired the Office 365 connectors' incoming webhooks, and with them the MessageCard
//! format; Teams' Workflows app ("When a Teams webhook request is received") accepts Adaptive
//! Cards only, wrapped as
//!
//! ```json
//! {"type": "message",
//!  "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null,
//!                   "content": {"type": "AdaptiveCard", "version": "1.4", "body": [...]}}]}
//! ```
//!
//! (Microsoft Teams platform docs, "Create and send messages" / "Send Adaptive Cards using an
//! Incoming Webhook"). Serin uses card version 1.4, which Teams renders on desktop, web and
//! mobile, and only elements of 1.0–1.3: `TextBlock` and `FactSet`.

use serde_json::{Value, json};

use super::{Message, MessageKind, describe_gate, truncate};
use crate::api::Severity;

/// The attachment's content type.
pub const CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// The card schema version.
pub const CARD_VERSION: &str = "1.4";
/// The schema URL cards declare.
pub const SCHEMA: &str = "http://adaptivecards.io/schemas/adaptive-card.json";
/// Text longer than this is cut: Teams refuses messages over about 28 KB.
const TEXT_MAX: usize = 4000;

/// The body for a Teams Workflows webhook.
pub fn render(message: &Message) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": truncate(&message.title(), TEXT_MAX),
        "size": "Medium",
        "weight": "Bolder",
        "color": color(message),
        "wrap": true
    })];
    if !message.detail().is_empty() {
        body.push(json!({"type": "TextBlock", "text": truncate(message.detail(), TEXT_MAX), "wrap": true}));
    }
    let fact = |title: &str, value: String| json!({"title": title, "value": truncate(&value, TEXT_MAX)});
    body.push(json!({"type": "FactSet", "facts": [
        fact("Rollout", format!("{}/{}", message.state.namespace, message.state.rollout)),
        fact("Phase", format!("{:?}", message.state.phase)),
        fact("Revision", message.state.revision.clone().unwrap_or_else(|| "none".into())),
        fact("Primary revision", message.state.promoted_revision.clone().unwrap_or_else(|| "none".into())),
        fact("Step", format!("{}/{}", message.state.step, message.state.steps)),
        fact("Traffic", format!("canary {}% · primary {}%", message.state.weights.canary, message.state.weights.primary)),
        fact("Severity", severity_word(message.severity).to_string()),
    ]}));
    let gates = message.shown_gates();
    if !gates.is_empty() {
        let title = if message.kind == MessageKind::StepPassed { "Gates" } else { "Failing gates" };
        body.push(json!({"type": "TextBlock", "text": title, "weight": "Bolder", "wrap": true, "spacing": "Medium"}));
        let facts: Vec<Value> = gates
            .iter()
            .map(|g| {
                let line = describe_gate(g);
                let value = line.strip_prefix(&format!("{} ", g.name)).unwrap_or(&line).to_string();
                fact(&g.name, value)
            })
            .collect();
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CONTENT_TYPE,
            "contentUrl": null,
            "content": {
                "$schema": SCHEMA,
                "type": "AdaptiveCard",
                "version": CARD_VERSION,
                "fallbackText": truncate(&format!("{}: {}", message.title(), message.detail()), TEXT_MAX),
                "body": body
            }
        }]
    })
}

fn color(message: &Message) -> &'static str {
    match (message.kind, message.severity) {
        (MessageKind::Promoted, _) => "Good",
        (_, Severity::Error) => "Attention",
        (_, Severity::Warn) => "Warning",
        (_, Severity::Info) => "Accent",
    }
}

fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warn => "warn",
        Severity::Error => "error",
    }
}
