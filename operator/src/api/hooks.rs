//! What teams layer on top of metric gates: webhooks, notifications, deployment windows and the
//! failure policy. Every field is optional, so Rollouts written before these existed keep their
//! meaning.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A webhook Serin calls at one point of a rollout, with the types users know from Flagger.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Unique among the Rollout's webhooks; shown in status and Events
    /// ("waiting for approval from <name>").
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// When Serin calls it.
    #[serde(rename = "type")]
    pub type_: WebhookType,
    /// The address Serin POSTs the JSON payload to. Only `http` and `https` URLs.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// How long one call may take.
    #[serde(default = "default_webhook_timeout")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms') && duration(self) <= duration('5m')")
        .message("timeout must be between 100ms and 5m, e.g. 10s"))]
    pub timeout: String,
    /// Further attempts after a failed call (connection error, timeout or 5xx), with
    /// exponential backoff. A 4xx answer is not retried.
    #[serde(default = "default_webhook_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
    /// HTTP headers from a Secret in the Rollout's namespace: each key becomes a header name,
    /// its value the header's value (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_from: Option<SecretRef>,
    /// Extra fields for the payload's `metadata`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Skip TLS certificate verification. Off by default; only for test receivers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

fn default_webhook_timeout() -> String {
    "10s".to_string()
}

fn default_webhook_retries() -> i32 {
    2
}

/// When a webhook is called, and what its answer means.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookType {
    /// Before a new revision starts: the rollout waits until it answers 2xx.
    ConfirmRollout,
    /// Once, when the canary is ready and before it gets traffic; a failure counts as a failed
    /// check.
    PreRollout,
    /// At every check; a failure counts as a failed check against `analysis.tolerance`.
    Rollout,
    /// Before promoting: the rollout waits at its last step until it answers 2xx.
    ConfirmPromotion,
    /// Once, after the rollout ends (promoted or rolled back); informational.
    PostRollout,
    /// Asked at every reconcile of a rollout in progress: a 2xx answer asks for a rollback.
    Rollback,
    /// Told about every transition; informational.
    Event,
}

/// A Secret in the Rollout's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A Secret key in the Rollout's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key that holds the value.
    #[serde(default = "default_address_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_address_key() -> String {
    "address".to_string()
}

/// Where to send one message per transition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `slack`, `teams` or `generic` (a JSON POST).
    #[serde(rename = "type")]
    pub type_: NotificationType,
    /// The Secret key holding the incoming-webhook address (key `address` by default).
    pub secret_ref: SecretKeyRef,
    /// The lowest severity sent: `info` (everything), `warn` (waiting, failed checks,
    /// rollbacks) or `error` (rollbacks and freezes only).
    #[serde(default)]
    pub severity: Severity,
}

/// The kinds of notification receivers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum NotificationType {
    Slack,
    Teams,
    Generic,
}

/// How much a transition matters.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    #[default]
    Info,
    Warn,
    Error,
}

/// Deployment windows: when a rollout may make progress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// A rollout progresses only while at least one window is open.
    #[schemars(length(min = 1, max = 10))]
    pub windows: Vec<Window>,
    /// `all`: starting a canary, advancing steps and promoting wait for a window. `promotion`:
    /// the analysis runs at any time, only the promotion waits for a window.
    #[serde(default)]
    pub scope: ScheduleScope,
}

/// One recurring window: opens at each time the cron expression matches, for `duration`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// A five-field cron expression (minute hour day-of-month month day-of-week), e.g.
    /// `0 9 * * MON-FRI`.
    #[schemars(length(min = 9, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^\\\\s*\\\\S+(\\\\s+\\\\S+){4}\\\\s*$')")
        .message("cron must have five fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * MON-FRI'"))]
    pub cron: String,
    /// How long the window stays open, e.g. `8h`.
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('168h')")
        .message("duration must be between 1m and 168h, e.g. 8h"))]
    pub duration: String,
    /// An IANA time zone, e.g. `Europe/Berlin`; the cron expression is read in it, across
    /// daylight-saving changes. Default `UTC`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$"))]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

/// What the windows restrict.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum ScheduleScope {
    #[default]
    All,
    Promotion,
}

/// What happens when the analysis fails.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum FailurePolicy {
    /// Route all traffic back to the primary and scale the canary down.
    #[default]
    Rollback,
    /// Hold the current weights and page a human, for changes where going back is worse (a
    /// database migration). `kubectl serin promote` or `abort` resolves it.
    Freeze,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_defaults_and_kebab_case_types() {
        let hook: Webhook = serde_json::from_value(serde_json::json!({
            "name": "approve", "type": "confirm-promotion", "url": "https://gate.test/approve"
        }))
        .unwrap();
        assert_eq!(hook.type_, WebhookType::ConfirmPromotion);
        assert_eq!(hook.timeout, "10s");
        assert_eq!(hook.retries, 2);
        assert!(!hook.insecure_skip_tls_verify);
        assert_eq!(serde_json::to_value(WebhookType::PreRollout).unwrap(), "pre-rollout");
    }

    #[test]
    fn notification_and_window_defaults() {
        let n: Notification =
            serde_json::from_value(serde_json::json!({"type": "slack", "secretRef": {"name": "hook"}}))
                .unwrap();
        assert_eq!((n.severity, n.secret_ref.key.as_str()), (Severity::Info, "address"));
        assert!(Severity::Error > Severity::Warn && Severity::Warn > Severity::Info);
        let s: Schedule = serde_json::from_value(
            serde_json::json!({"windows": [{"cron": "0 9 * * MON-FRI", "duration": "8h"}]}),
        )
        .unwrap();
        assert_eq!((s.scope, s.windows[0].time_zone.as_str()), (ScheduleScope::All, "UTC"));
    }
}
