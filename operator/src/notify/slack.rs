//! Slack incoming-webhook bodies: a `text` fallback (shown in notifications and by clients
//! without Block Kit) and Block Kit `blocks`: a header, the engine's words, the facts as
//! `mrkdwn` fields, the gates, and a context line.
//!
//! Limits from Slack's Block Kit reference (docs.slack.dev/reference/block-kit/blocks), which
//! the renderer keeps by truncating:
//! - header block: `plain_text`, at most 150 characters;
//! - section block: `text` at most 3000 characters; at most 10 `fields`, each at most 2000;
//! - context block: at most 10 elements;
//! - at most 50 blocks per message;
//! - top-level `text`: kept under 4000 characters (Slack truncates messages past 40,000).
//!
//! `mrkdwn` text escapes `&`, `<` and `>` (Slack's "Escaping text"), so a threshold like
//! `>= 99` is shown as written and nothing in a message can form a link or a mention.

use serde_json::{Value, json};

use super::{Message, MessageKind, describe_gate, truncate};
use crate::api::Severity;

pub const HEADER_MAX: usize = 150;
pub const SECTION_TEXT_MAX: usize = 3000;
pub const FIELD_TEXT_MAX: usize = 2000;
pub const FIELDS_MAX: usize = 10;
pub const CONTEXT_ELEMENTS_MAX: usize = 10;
pub const BLOCKS_MAX: usize = 50;
pub const FALLBACK_TEXT_MAX: usize = 4000;

/// The body for a Slack incoming webhook.
pub fn render(message: &Message) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&format!("{} {}", icon(message), message.title()), HEADER_MAX), "emoji": true}}),
    ];
    if !message.detail().is_empty() {
        blocks.push(section(&escape(message.detail())));
    }
    let mut fields = vec![
        field("Rollout", &format!("{}/{}", message.state.namespace, message.state.rollout)),
        field("Phase", &format!("{:?}", message.state.phase)),
        field("Revision", message.state.revision.as_deref().unwrap_or("none")),
        field("Primary revision", message.state.promoted_revision.as_deref().unwrap_or("none")),
        field("Step", &format!("{}/{}", message.state.step, message.state.steps)),
        field(
            "Traffic",
            &format!("canary {}% · primary {}%", message.state.weights.canary, message.state.weights.primary),
        ),
    ];
    fields.truncate(FIELDS_MAX);
    blocks.push(json!({"type": "section", "fields": fields}));
    let gates = message.shown_gates();
    if !gates.is_empty() {
        let title = if message.kind == MessageKind::StepPassed { "Gates" } else { "Failing gates" };
        let lines: Vec<String> = gates.iter().map(|g| format!("• {}", escape(&describe_gate(g)))).collect();
        blocks.push(section(&format!("*{title}*\n{}", lines.join("\n"))));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("Serin · {} · {}", severity_word(message.severity), escape(&message.reason))}
    ]}));
    blocks.truncate(BLOCKS_MAX);
    json!({"text": truncate(&fallback(message), FALLBACK_TEXT_MAX), "blocks": blocks})
}

/// The notification text: title and what happened.
fn fallback(message: &Message) -> String {
    let mut text = format!("[{}] {}", severity_word(message.severity), escape(&message.title()));
    if !message.detail().is_empty() {
        text.push_str(": ");
        text.push_str(&escape(message.detail()));
    }
    text
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_MAX)}})
}

fn field(name: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": truncate(&format!("*{name}*\n{}", escape(value)), FIELD_TEXT_MAX)})
}

/// Slack's control characters in `mrkdwn` and `text`.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warn => "warn",
        Severity::Error => "error",
    }
}

fn icon(message: &Message) -> &'static str {
    match message.kind {
        MessageKind::Promoted => "✅",
        MessageKind::RolledBack => "🔴",
        MessageKind::Frozen => "🧊",
        MessageKind::Stalled => "🛑",
        MessageKind::Waiting | MessageKind::Paused => "⏸️",
        MessageKind::CheckFailed
        | MessageKind::WebhookFailed
        | MessageKind::ApprovalRejected
        | MessageKind::Warning => "⚠️",
        MessageKind::Started
        | MessageKind::StepPassed
        | MessageKind::Approved
        | MessageKind::WindowOpened
        | MessageKind::Unfrozen => "🐤",
    }
}
