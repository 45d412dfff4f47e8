//! Notifications: one message per rollout transition to Slack, Microsoft Teams or a generic JSON
//! receiver, filtered by severity.
//!
//! The engine hands [`Notifier::notify`] the transitions of one decision. They are classified
//! ([`classify`]) into message kinds with a severity, folded into one message per transition
//! (a passed check and the step it advances to are one "step passed"; a failed check that
//! causes a rollback is part of the rollback), and each message goes to every receiver, the
//! Rollout's own (`spec.notifications`) and the operator's global ones (`--notifications`),
//! whose severity admits it. Delivery is best effort with bounded retries; failures are logged
//! and returned, never raised.
//!
//! Receiver addresses live in Secrets (they carry tokens); they never appear in logs or errors.

pub mod generic;
pub mod slack;
pub mod teams;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::api::{GateStatus, NotificationType, Rollout, RolloutStatus, Severity, Verdict};
use crate::engine::decide::Transition;
use crate::secrets::SecretReader;
use crate::webhooks::http::{self, HttpClients, RetryPolicy};
use crate::webhooks::{RolloutState, check_url};

/// What a message is about.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum MessageKind {
    /// A new revision's canary analysis started (`NewRevision`, `RevisionChanged`, `Retry`).
    Started,
    /// A step passed and the canary moved on (`CheckPassed`, `StepAdvanced`).
    StepPassed,
    /// The revision was promoted.
    Promoted,
    /// The revision was rolled back; the message carries the failing gates.
    RolledBack,
    /// Waiting for an approval or a deployment window.
    Waiting,
    /// A confirm-* hook approved.
    Approved,
    /// A confirm-* hook answered no; the rollout keeps waiting.
    ApprovalRejected,
    /// A deployment window opened.
    WindowOpened,
    /// A check failed within the tolerance.
    CheckFailed,
    /// A pre-rollout or rollout hook failed (counted as a failed check).
    WebhookFailed,
    /// `spec.paused` holds the rollout.
    Paused,
    /// `onFailure: freeze` holds the weights and needs a human.
    Frozen,
    /// A frozen rollout was resolved.
    Unfrozen,
    /// Initialization or promotion passed its deadline: nothing was rolled back, but progress
    /// stopped and needs a human.
    Stalled,
    /// Any other warning the engine reports.
    Warning,
}

impl MessageKind {
    /// The words after the rollout's name in a title, e.g. `rolled back`.
    pub fn headline(self) -> &'static str {
        match self {
            MessageKind::Started => "canary analysis started",
            MessageKind::StepPassed => "step passed",
            MessageKind::Promoted => "promoted",
            MessageKind::RolledBack => "rolled back",
            MessageKind::Waiting => "waiting",
            MessageKind::Approved => "approved",
            MessageKind::ApprovalRejected => "approval rejected",
            MessageKind::WindowOpened => "deployment window opened",
            MessageKind::CheckFailed => "check failed",
            MessageKind::WebhookFailed => "webhook failed",
            MessageKind::Paused => "paused",
            MessageKind::Frozen => "frozen: needs a human",
            MessageKind::Unfrozen => "unfrozen",
            MessageKind::Stalled => "stalled: needs a human",
            MessageKind::Warning => "warning",
        }
    }

    /// Failure kinds carry the gates that did not pass.
    fn shows_failing_gates(self) -> bool {
        matches!(self, MessageKind::RolledBack | MessageKind::Frozen | MessageKind::CheckFailed)
    }
}

/// The kind and severity of an engine transition, by its Event reason; `None` for transitions
/// that are not notified (`Initialized`, `Promoting`, `Resumed`, `RevisionReverted`,
/// `HoldingForEvidence`, `RequestRefused`). Unknown reasons are notified as warnings when the
/// engine marks them so, so a failure added later is never silent.
pub fn classify(reason: &str, warning: bool) -> Option<(MessageKind, Severity)> {
    use MessageKind::*;
    use Severity::*;
    Some(match reason {
        "NewRevision" | "RevisionChanged" | "Retry" => (Started, Info),
        "StepAdvanced" | "CheckPassed" => (StepPassed, Info),
        "Promoted" => (Promoted, Info),
        "Approved" => (Approved, Info),
        "WindowOpened" => (WindowOpened, Info),
        "Unfrozen" => (Unfrozen, Info),
        "WaitingForApproval" | "WaitingForWindow" => (Waiting, Warn),
        "ApprovalRejected" => (ApprovalRejected, Warn),
        "CheckFailed" => (CheckFailed, Warn),
        "WebhookFailed" => (WebhookFailed, Warn),
        "Paused" => (Paused, Warn),
        "AnalysisFailed"
        | "SequentialRegression"
        | "InsufficientData"
        | "NoEvidence"
        | "ProgressDeadlineExceeded"
        | "CanaryFailing"
        | "Aborted"
        | "RollbackRequested" => (RolledBack, Error),
        "Frozen" => (Frozen, Error),
        "Stalled" => (Stalled, Error),
        "Initialized" | "Promoting" | "Resumed" | "RevisionReverted" | "HoldingForEvidence"
        | "RequestRefused" => {
            return None;
        }
        _ if warning => (Warning, Warn),
        _ => return None,
    })
}

/// One message, ready to render for any receiver type.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub kind: MessageKind,
    pub severity: Severity,
    /// The Event reason that decided the kind (the last one when several were folded).
    pub reason: String,
    /// What happened, in the engine's words; several transitions joined by `; `.
    pub text: String,
    /// Where the rollout stands.
    pub state: RolloutState,
    /// Every gate's last verdict (`status.gates`).
    pub gates: Vec<GateStatus>,
}

impl Message {
    /// `shop/web: rolled back`.
    pub fn title(&self) -> String {
        format!("{}/{}: {}", self.state.namespace, self.state.rollout, self.kind.headline())
    }

    /// The engine's words without a leading repeat of the headline (`rolled back: ` after a
    /// title that already says "rolled back"), for bodies that show both.
    pub fn detail(&self) -> &str {
        let prefix = format!("{}: ", self.kind.headline());
        self.text.strip_prefix(&prefix).unwrap_or(&self.text)
    }

    /// The gates worth showing: those that did not pass for failures, all of them for a passed
    /// step, none otherwise.
    pub fn shown_gates(&self) -> Vec<&GateStatus> {
        if self.kind.shows_failing_gates() {
            self.gates.iter().filter(|g| g.verdict != Verdict::Pass).collect()
        } else if self.kind == MessageKind::StepPassed {
            self.gates.iter().collect()
        } else {
            Vec::new()
        }
    }
}

/// A gate as one line: `successRate 97.8 (threshold >= 99.5, primary 99.9, 1204 requests): Fail`.
pub fn describe_gate(gate: &GateStatus) -> String {
    let value = gate.value.map_or_else(|| "no data".to_string(), number);
    let mut details = vec![format!("threshold {}", gate.threshold)];
    if let Some(primary) = gate.primary_value {
        details.push(format!("primary {}", number(primary)));
    }
    if let Some(requests) = gate.requests {
        details.push(format!("{} requests", number(requests)));
    }
    let verdict = match gate.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::InsufficientData => "insufficient data",
    };
    format!("{} {value} ({}): {verdict}", gate.name, details.join(", "))
}

fn number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Folds one decision's transitions into messages: one per kind, in order of first appearance;
/// failed checks that end in a rollback or a freeze become part of it.
pub fn messages(rollout: &Rollout, status: &RolloutStatus, transitions: &[Transition]) -> Vec<Message> {
    let mut classified: Vec<(MessageKind, Severity, &str, String)> = Vec::new();
    for t in transitions {
        let Some((kind, severity)) = classify(&t.reason, t.warning) else { continue };
        match classified.iter_mut().find(|(k, ..)| *k == kind) {
            Some(entry) => {
                entry.2 = &t.reason;
                if !t.message.is_empty() {
                    entry.3 = join(&entry.3, &t.message);
                }
            }
            None => classified.push((kind, severity, &t.reason, t.message.clone())),
        }
    }
    let ends_badly =
        classified.iter().any(|(k, ..)| matches!(k, MessageKind::RolledBack | MessageKind::Frozen));
    if ends_badly {
        let precursors: Vec<String> = classified
            .iter()
            .filter(|(k, ..)| matches!(k, MessageKind::CheckFailed | MessageKind::WebhookFailed))
            .map(|(.., text)| text.clone())
            .collect();
        classified.retain(|(k, ..)| !matches!(k, MessageKind::CheckFailed | MessageKind::WebhookFailed));
        if let Some(end) =
            classified.iter_mut().find(|(k, ..)| matches!(k, MessageKind::RolledBack | MessageKind::Frozen))
        {
            for text in precursors {
                end.3 = join(&end.3, &text);
            }
        }
    }
    classified
        .into_iter()
        .map(|(kind, severity, reason, text)| Message {
            kind,
            severity,
            reason: reason.to_string(),
            text,
            state: RolloutState::of(rollout, status),
            gates: status.gates.clone(),
        })
        .collect()
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() { b.to_string() } else { format!("{a}; {b}") }
}

/// The request body for a receiver type. Pure.
pub fn render(type_: NotificationType, message: &Message) -> serde_json::Value {
    match type_ {
        NotificationType::Slack => slack::render(message),
        NotificationType::Teams => teams::render(message),
        NotificationType::Generic => generic::render(message),
    }
}

/// A receiver from the operator's `--notifications` file: like a Rollout's, with the Secret's
/// namespace.
///
/// ```yaml
/// - type: slack
///   secretRef: {namespace: serin-system, name: slack-deploys, key: address}
///   severity: warn
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNotification {
    #[serde(rename = "type")]
    pub type_: NotificationType,
    pub secret_ref: GlobalSecretRef,
    #[serde(default)]
    pub severity: Severity,
}

/// A Secret key in a given namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalSecretRef {
    pub namespace: String,
    pub name: String,
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_key() -> String {
    "address".to_string()
}

/// Something went wrong setting notifications up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot build the HTTP client for notifications: {0}")]
    Client(#[from] reqwest::Error),
    #[error("notifications file {file}: {message}")]
    File { file: String, message: String },
}

/// Reads the operator's global receivers from a YAML list. Errors name the file and the item.
pub fn load_global(path: &Path) -> Result<Vec<GlobalNotification>, NotifyError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| NotifyError::File { file: file.clone(), message: format!("cannot read it: {err}") })?;
    parse_global(&text).map_err(|message| NotifyError::File { file, message })
}

/// Parses the global receivers' YAML. Errors name the item, e.g. `item [1].type: ...`.
pub fn parse_global(text: &str) -> Result<Vec<GlobalNotification>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<serde_json::Value> = serde_saphyr::from_str(text).map_err(|err| {
        format!("not a YAML list of receivers ({err}); e.g. - {{type: slack, secretRef: {{namespace: serin-system, name: slack}}}}")
    })?;
    let mut receivers = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let receiver: GlobalNotification =
            serde_json::from_value(item).map_err(|err| format!("item [{i}]: {err}"))?;
        for (field, value) in [
            ("namespace", &receiver.secret_ref.namespace),
            ("name", &receiver.secret_ref.name),
            ("key", &receiver.secret_ref.key),
        ] {
            if value.trim().is_empty() {
                return Err(format!("item [{i}].secretRef.{field}: must not be empty"));
            }
        }
        receivers.push(receiver);
    }
    Ok(receivers)
}

/// What became of one message to one receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// `spec.notifications[0]` or `global[1]`.
    pub receiver: String,
    pub type_: NotificationType,
    pub kind: MessageKind,
    pub severity: Severity,
    /// The receiver answered 2xx.
    pub ok: bool,
    pub code: Option<u16>,
    pub attempts: u32,
    /// `answered 200 OK`, or why it was not delivered.
    pub message: String,
}

/// One receiver of a rollout.
struct Receiver {
    label: String,
    type_: NotificationType,
    severity: Severity,
    namespace: String,
    name: String,
    key: String,
}

/// Sends notifications. Cheap to clone; clones share HTTP connections and the Secret cache.
#[derive(Clone, Debug)]
pub struct Notifier {
    http: HttpClients,
    secrets: SecretReader,
    global: Arc<Vec<GlobalNotification>>,
    policy: RetryPolicy,
}

impl Notifier {
    /// A notifier that reads receiver Secrets through `client` (each at most once per 30 s) and
    /// also sends to `global` receivers.
    pub fn new(client: kube::Client, global: Vec<GlobalNotification>) -> Result<Self, NotifyError> {
        Self::with_secrets(SecretReader::new(client), global)
    }

    /// A notifier that shares a Secret cache (e.g. with the webhooks).
    pub fn with_secrets(secrets: SecretReader, global: Vec<GlobalNotification>) -> Result<Self, NotifyError> {
        Ok(Notifier {
            http: HttpClients::new()?,
            secrets,
            global: Arc::new(global),
            policy: RetryPolicy::new(2, Duration::from_secs(10)),
        })
    }

    /// Overrides the retries, timeout and backoff. For tests.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The global receivers.
    pub fn global(&self) -> &[GlobalNotification] {
        &self.global
    }

    /// One message per transition to each receiver (the rollout's and the global ones) whose
    /// severity admits it. Receivers are served concurrently, each in message order. Best
    /// effort: returns what became of each delivery, for logs and tests.
    pub async fn notify(
        &self,
        rollout: &Rollout,
        status: &RolloutStatus,
        transitions: &[Transition],
    ) -> Vec<Delivery> {
        let messages = messages(rollout, status, transitions);
        if messages.is_empty() {
            return Vec::new();
        }
        let namespace = rollout.namespace().unwrap_or_default();
        let receivers = rollout
            .spec
            .notifications
            .iter()
            .enumerate()
            .map(|(i, n)| Receiver {
                label: format!("spec.notifications[{i}]"),
                type_: n.type_,
                severity: n.severity,
                namespace: namespace.clone(),
                name: n.secret_ref.name.clone(),
                key: n.secret_ref.key.clone(),
            })
            .chain(self.global.iter().enumerate().map(|(i, n)| Receiver {
                label: format!("global[{i}]"),
                type_: n.type_,
                severity: n.severity,
                namespace: n.secret_ref.namespace.clone(),
                name: n.secret_ref.name.clone(),
                key: n.secret_ref.key.clone(),
            }));
        let sends = receivers.map(|receiver| {
            let admitted: Vec<&Message> = messages.iter().filter(|m| m.severity >= receiver.severity).collect();
            async move {
                let mut deliveries = Vec::new();
                if admitted.is_empty() {
                    return deliveries;
                }
                let address = self
                    .secrets
                    .text(&format!("{}.secretRef", receiver.label), &receiver.namespace, &receiver.name, &receiver.key)
                    .await
                    .map_err(|err| err.to_string())
                    .and_then(|text| {
                        check_url(&text).map_err(|_| {
                            format!(
                                "{}.secretRef.key: key {:?} of Secret {:?} does not hold an http(s) URL",
                                receiver.label, receiver.key, receiver.name
                            )
                        })
                    });
                for message in admitted {
                    let delivery = match &address {
                        Ok(url) => {
                            let body = render(receiver.type_, message);
                            let answer = http::post_json(
                                self.http.client(false),
                                url,
                                &reqwest::header::HeaderMap::new(),
                                &body,
                                &self.policy,
                            )
                            .await;
                            delivery(&receiver, message, answer.ok, answer.code, answer.attempts, answer.message)
                        }
                        Err(why) => delivery(&receiver, message, false, None, 0, why.clone()),
                    };
                    if delivery.ok {
                        debug!(receiver = %delivery.receiver, kind = ?delivery.kind, "notification delivered");
                    } else {
                        warn!(receiver = %delivery.receiver, kind = ?delivery.kind, why = %delivery.message, "notification not delivered");
                    }
                    deliveries.push(delivery);
                }
                deliveries
            }
        });
        join_all(sends).await.into_iter().flatten().collect()
    }
}

fn delivery(
    receiver: &Receiver,
    message: &Message,
    ok: bool,
    code: Option<u16>,
    attempts: u32,
    text: String,
) -> Delivery {
    Delivery {
        receiver: receiver.label.clone(),
        type_: receiver.type_,
        kind: message.kind,
        severity: message.severity,
        ok,
        code,
        attempts,
        message: text,
    }
}

/// Cuts `text` to at most `max` characters, ending in `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
