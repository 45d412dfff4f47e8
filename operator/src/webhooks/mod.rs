//! Webhooks (`spec.webhooks`): Serin POSTs a JSON [`Payload`] to each hook of a type at its
//! point of the rollout, and reports one [`HookOutcome`] per hook. What an outcome means
//! (approval, failed check, rollback request) is the engine's business; this module only calls.
//!
//! - The URL is checked again at call time: only `http` and `https`.
//! - `timeout` limits each attempt; `retries` more attempts follow a connection error, a timeout,
//!   a `5xx` or a `429`, with exponential backoff and jitter. Other answers are final.
//! - TLS certificates are verified against the platform's roots unless the hook sets
//!   `insecureSkipTlsVerify`.
//! - `headersFrom` names a Secret in the Rollout's namespace: each key is a header name, its value
//!   the header's value.

pub mod http;

use std::collections::BTreeMap;

use futures::future::join_all;
use kube::ResourceExt;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::api::{Phase, Rollout, RolloutStatus, Webhook, WebhookType};
use crate::duration::parse_duration;
use crate::secrets::SecretReader;
use http::{HttpClients, RetryPolicy};

/// What Serin POSTs to a webhook, as camelCase JSON.
///
/// ```json
/// {"rollout": "web", "namespace": "shop", "type": "confirm-promotion", "phase": "Progressing",
///  "revision": "7d9f21c4", "promotedRevision": "5c8d9f10", "step": 5, "steps": 5,
///  "weights": {"canary": 50, "primary": 50}, "failedChecks": 0,
///  "metadata": {"team": "checkout"}}
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Where the rollout stands.
    #[serde(flatten)]
    pub state: RolloutState,
    /// The hook type being called.
    #[serde(rename = "type")]
    pub type_: WebhookType,
    /// Failed checks at this revision.
    pub failed_checks: i32,
    /// The hook's `metadata`, plus `reason` and `message` for `event` hooks.
    pub metadata: BTreeMap<String, String>,
}

/// Where a rollout stands, as webhook payloads and notifications tell it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// The Rollout's name.
    pub rollout: String,
    /// The Rollout's namespace.
    pub namespace: String,
    /// `status.phase`.
    pub phase: Phase,
    /// The revision being rolled out (the canary), if any.
    pub revision: Option<String>,
    /// The revision the primary runs.
    pub promoted_revision: Option<String>,
    /// The current step, from 1; 0 before the canary gets traffic.
    pub step: i32,
    /// Steps in the schedule.
    pub steps: i32,
    /// Percent of traffic on each side.
    pub weights: Weights,
}

impl RolloutState {
    /// The state of `rollout` as `status` describes it.
    pub fn of(rollout: &Rollout, status: &RolloutStatus) -> Self {
        let canary = status.canary_weight.clamp(0, 100);
        RolloutState {
            rollout: rollout.name_any(),
            namespace: rollout.namespace().unwrap_or_default(),
            phase: status.phase,
            revision: status.canary_revision.clone(),
            promoted_revision: status.promoted_revision.clone(),
            step: status.step,
            steps: status.steps,
            weights: Weights { canary, primary: 100 - canary },
        }
    }
}

/// Percent of traffic on the canary and on the primary.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    pub canary: i32,
    pub primary: i32,
}

impl Payload {
    /// The payload for one point of a rollout. The hook's own `metadata` is added by
    /// [`Webhooks::call`].
    pub fn new(rollout: &Rollout, status: &RolloutStatus, type_: WebhookType) -> Self {
        Payload {
            state: RolloutState::of(rollout, status),
            type_,
            failed_checks: status.failed_checks,
            metadata: BTreeMap::new(),
        }
    }

    /// For `event` hooks: the transition's reason (e.g. `StepAdvanced`) and message, as
    /// `metadata.reason` and `metadata.message`. They win over hook metadata of the same name.
    pub fn with_event(mut self, reason: &str, message: &str) -> Self {
        self.metadata.insert("reason".into(), reason.into());
        self.metadata.insert("message".into(), message.into());
        self
    }
}

/// What came of calling one hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookOutcome {
    /// The hook's name.
    pub name: String,
    /// Its type.
    pub type_: WebhookType,
    /// It answered 2xx.
    pub ok: bool,
    /// The last HTTP status, if it answered at all.
    pub code: Option<u16>,
    /// Attempts made; 0 when the hook could not be called (bad URL, missing Secret).
    pub attempts: u32,
    /// What happened, for status and Events: `answered 200 OK`, `answered 403 Forbidden: not
    /// yet`, `no answer within 10s (3 attempts)`, or an error naming the Rollout field.
    pub message: String,
}

/// The webhook client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot build the HTTP client for webhooks: {0}")]
    Client(#[from] reqwest::Error),
}

/// Calls webhooks. Cheap to clone; clones share HTTP connections and the Secret cache.
#[derive(Clone, Debug)]
pub struct Webhooks {
    http: HttpClients,
    secrets: SecretReader,
    backoff: Option<(std::time::Duration, std::time::Duration)>,
}

impl Webhooks {
    /// A caller that reads header Secrets through `client`, each at most once per 30 s.
    pub fn new(client: kube::Client) -> Result<Self, WebhookError> {
        Self::with_secrets(SecretReader::new(client))
    }

    /// A caller that shares a Secret cache (e.g. with the notifier).
    pub fn with_secrets(secrets: SecretReader) -> Result<Self, WebhookError> {
        Ok(Webhooks { http: HttpClients::new()?, secrets, backoff: None })
    }

    /// Overrides the backoff between attempts (first delay, longest delay). For tests.
    pub fn with_backoff(mut self, min_delay: std::time::Duration, max_delay: std::time::Duration) -> Self {
        self.backoff = Some((min_delay, max_delay));
        self
    }

    /// Calls one hook of `rollout` with `payload` (to which the hook's metadata is added).
    pub async fn call(&self, rollout: &Rollout, hook: &Webhook, payload: &Payload) -> HookOutcome {
        let field = match rollout.spec.webhooks.iter().position(|h| h.name == hook.name) {
            Some(i) => format!("spec.webhooks[{i}]"),
            None => format!("webhook {:?}", hook.name),
        };
        let outcome = |ok, code, attempts, message| HookOutcome {
            name: hook.name.clone(),
            type_: hook.type_,
            ok,
            code,
            attempts,
            message,
        };
        let request = match self.prepare(rollout, hook, payload, &field).await {
            Ok(request) => request,
            Err(message) => {
                warn!(hook = %hook.name, %message, "webhook not called");
                return outcome(false, None, 0, message);
            }
        };
        let (url, headers, body, policy) = request;
        let answer =
            http::post_json(self.http.client(hook.insecure_skip_tls_verify), &url, &headers, &body, &policy)
                .await;
        debug!(hook = %hook.name, type_ = ?hook.type_, ok = answer.ok, attempts = answer.attempts, message = %answer.message, "webhook called");
        outcome(answer.ok, answer.code, answer.attempts, answer.message)
    }

    /// Calls every hook of `type_` of the rollout, concurrently; one outcome each, in spec order.
    pub async fn call_all(
        &self,
        rollout: &Rollout,
        type_: WebhookType,
        payload: &Payload,
    ) -> Vec<HookOutcome> {
        let calls =
            rollout.spec.webhooks.iter().filter(|h| h.type_ == type_).map(|h| self.call(rollout, h, payload));
        join_all(calls).await
    }

    /// Checks the URL and timeout, reads the header Secret, and builds the body.
    async fn prepare(
        &self,
        rollout: &Rollout,
        hook: &Webhook,
        payload: &Payload,
        field: &str,
    ) -> Result<(Url, HeaderMap, serde_json::Value, RetryPolicy), String> {
        let url = check_url(&hook.url).map_err(|why| format!("{field}.url: {why}"))?;
        let timeout = parse_duration(&hook.timeout).map_err(|err| format!("{field}.timeout: {err}"))?;
        let mut policy = RetryPolicy::new(hook.retries.clamp(0, 10) as u32, timeout);
        if let Some((min, max)) = self.backoff {
            policy.min_delay = min;
            policy.max_delay = max;
        }
        let headers = match &hook.headers_from {
            Some(secret) => {
                let namespace = rollout.namespace().unwrap_or_default();
                let data = self
                    .secrets
                    .data(&format!("{field}.headersFrom.name"), &namespace, &secret.name)
                    .await
                    .map_err(|err| err.to_string())?;
                headers_from(&data, &format!("{field}.headersFrom"), &secret.name)?
            }
            None => HeaderMap::new(),
        };
        let mut payload = payload.clone();
        let mut metadata = hook.metadata.clone();
        metadata.append(&mut payload.metadata);
        payload.metadata = metadata;
        let body =
            serde_json::to_value(&payload).map_err(|err| format!("cannot encode the payload: {err}"))?;
        Ok((url, headers, body, policy))
    }
}

/// Parses a receiver address: an absolute `http` or `https` URL with a host.
pub fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim())
        .map_err(|err| format!("{text:?} is not a URL ({err}); e.g. https://gate.example/approve"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{:?} URLs are not allowed; use http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host; e.g. https://gate.example/approve"));
    }
    Ok(url)
}

/// Turns a Secret's keys and values into HTTP headers. Values are trimmed (a Secret made from a
/// file often ends in a newline). Errors name the Secret key.
pub fn headers_from(
    data: &BTreeMap<String, Vec<u8>>,
    field: &str,
    secret: &str,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (key, value) in data {
        let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
            format!("{field}: key {key:?} of Secret {secret:?} is not a valid HTTP header name (letters, digits and -)")
        })?;
        let value = HeaderValue::from_bytes(value.trim_ascii()).map_err(|_| {
            format!("{field}: the value of key {key:?} of Secret {secret:?} is not a valid HTTP header value (no line breaks or control characters)")
        })?;
        headers.insert(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RolloutSpec;

    fn rollout() -> Rollout {
        let spec: RolloutSpec = serde_json::from_value(serde_json::json!({
            "targetRef": {"name": "web"}, "service": {"port": 80},
            "webhooks": [{"name": "gate", "type": "confirm-promotion", "url": "https://gate.test/approve",
                          "metadata": {"team": "checkout", "reason": "hook's own"}}]
        }))
        .unwrap();
        let mut rollout = Rollout::new("web", spec);
        rollout.metadata.namespace = Some("shop".into());
        rollout
    }

    #[test]
    fn the_payload_is_camel_case_json_with_both_weights() {
        let status = RolloutStatus {
            phase: Phase::Progressing,
            step: 5,
            steps: 5,
            canary_weight: 50,
            canary_revision: Some("7d9f21c4".into()),
            promoted_revision: Some("5c8d9f10".into()),
            ..RolloutStatus::default()
        };
        let payload = Payload::new(&rollout(), &status, WebhookType::ConfirmPromotion);
        assert_eq!(
            serde_json::to_value(&payload).unwrap(),
            serde_json::json!({
                "rollout": "web", "namespace": "shop", "type": "confirm-promotion", "phase": "Progressing",
                "revision": "7d9f21c4", "promotedRevision": "5c8d9f10", "step": 5, "steps": 5,
                "weights": {"canary": 50, "primary": 50}, "failedChecks": 0, "metadata": {}
            })
        );
        let event =
            Payload::new(&rollout(), &status, WebhookType::Event).with_event("StepAdvanced", "step 2 of 5");
        assert_eq!(event.metadata["reason"], "StepAdvanced");
        assert_eq!(event.metadata["message"], "step 2 of 5");
    }

    #[test]
    fn only_http_and_https_urls_are_called() {
        assert!(check_url("https://gate.test/approve").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        for (bad, why) in [
            ("ftp://files.test/x", "\"ftp\" URLs are not allowed"),
            ("file:///etc/passwd", "\"file\" URLs are not allowed"),
            ("gate.test/approve", "is not a URL"),
            ("http://", "is not a URL"),
        ] {
            let err = check_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn header_secrets_become_headers_and_bad_keys_are_named() {
        let data = BTreeMap::from([
            ("Authorization".to_string(), b"Bearer s3cret\n".to_vec()),
            ("X-Team".to_string(), b"checkout".to_vec()),
        ]);
        let headers = headers_from(&data, "spec.webhooks[0].headersFrom", "gate-auth").unwrap();
        assert_eq!(headers["authorization"], "Bearer s3cret");
        assert_eq!(headers["x-team"], "checkout");

        let bad_name = BTreeMap::from([("bad key".to_string(), b"v".to_vec())]);
        let err = headers_from(&bad_name, "spec.webhooks[0].headersFrom", "gate-auth").unwrap_err();
        assert!(
            err.starts_with("spec.webhooks[0].headersFrom: key \"bad key\" of Secret \"gate-auth\""),
            "{err}"
        );
        let bad_value = BTreeMap::from([("X-Token".to_string(), b"a\nb".to_vec())]);
        let err = headers_from(&bad_value, "spec.webhooks[0].headersFrom", "gate-auth").unwrap_err();
        assert!(err.contains("key \"X-Token\"") && err.contains("not a valid HTTP header value"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_at_call_time_naming_the_field() {
        // The schema refuses such URLs; a Rollout stored before a schema change may still have one.
        let mut rollout = rollout();
        rollout.spec.webhooks[0].url = "ftp://gate.test/approve".into();
        let client = unreachable_client();
        let hooks = Webhooks::new(client).unwrap();
        let payload = Payload::new(&rollout, &RolloutStatus::default(), WebhookType::ConfirmPromotion);
        let outcome = hooks.call(&rollout, &rollout.spec.webhooks[0], &payload).await;
        assert_eq!((outcome.ok, outcome.code, outcome.attempts), (false, None, 0));
        assert!(
            outcome.message.starts_with("spec.webhooks[0].url: \"ftp\" URLs are not allowed"),
            "{}",
            outcome.message
        );
    }

    /// A kube client for a server that does not exist: these tests never reach it.
    fn unreachable_client() -> kube::Client {
        crate::ensure_crypto_provider();
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }
}
