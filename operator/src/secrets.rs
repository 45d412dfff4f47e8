//! Reading Secrets for webhooks and notifications, with a short-lived cache.
//!
//! Reading a Secret is an API call, and reconciles are frequent. [`SecretReader`] keeps each
//! Secret it read for a TTL (30 s by default), keyed by namespace and name, so a Secret is read
//! at most once per TTL however many hooks, notifications and reconciles use it. Concurrent
//! readers of the same Secret wait for one read. A Secret that does not exist is remembered for
//! the TTL too; a failed read (API unreachable, RBAC) is not.
//!
//! Errors name the Rollout field that refers to the Secret, e.g.
//! `spec.webhooks[0].headersFrom.name: Secret "x" not found in namespace "y"`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// How long a Secret read is reused.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// A Secret's `data`, decoded.
pub type SecretData = Arc<BTreeMap<String, Vec<u8>>>;

/// A Secret that could not be used. Each variant names the field that refers to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{field}: Secret {name:?} not found in namespace {namespace:?}")]
    NotFound { field: String, namespace: String, name: String },
    #[error("{field}: Secret {name:?} in namespace {namespace:?} has no key {key:?} (it has: {present})")]
    MissingKey { field: String, namespace: String, name: String, key: String, present: String },
    #[error("{field}: key {key:?} of Secret {name:?} in namespace {namespace:?} is not UTF-8 text")]
    NotText { field: String, namespace: String, name: String, key: String },
    #[error(
        "{field}: cannot read Secret {name:?} in namespace {namespace:?} ({message}); the operator needs \
         get on secrets there"
    )]
    Unreadable { field: String, namespace: String, name: String, message: String },
}

impl SecretError {
    /// The Rollout field (or configuration item) the error is about.
    pub fn field(&self) -> &str {
        match self {
            SecretError::NotFound { field, .. }
            | SecretError::MissingKey { field, .. }
            | SecretError::NotText { field, .. }
            | SecretError::Unreadable { field, .. } => field,
        }
    }
}

type Key = (String, String);
/// One Secret's cache slot; its async lock makes concurrent readers wait for one read.
type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// One cached read: the data, or `None` when the Secret did not exist.
struct Entry {
    read_at: Instant,
    data: Option<SecretData>,
}

/// Reads Secrets through the API, each at most once per TTL. Cheap to clone; clones share the
/// cache.
#[derive(Clone)]
pub struct SecretReader {
    client: kube::Client,
    ttl: Duration,
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
}

impl std::fmt::Debug for SecretReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretReader").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl SecretReader {
    /// A reader with the default TTL of 30 s.
    pub fn new(client: kube::Client) -> Self {
        Self::with_ttl(client, DEFAULT_TTL)
    }

    /// A reader that reuses each read for `ttl`.
    pub fn with_ttl(client: kube::Client, ttl: Duration) -> Self {
        SecretReader { client, ttl, slots: Arc::default() }
    }

    /// The Secret's data. `field` names the Rollout field that refers to it, for errors.
    pub async fn data(&self, field: &str, namespace: &str, name: &str) -> Result<SecretData, SecretError> {
        let slot = self.slot(namespace, name);
        let mut entry = slot.lock().await;
        let fresh = entry.as_ref().is_some_and(|e| e.read_at.elapsed() < self.ttl);
        if !fresh {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let data = match api.get_opt(name).await {
                Ok(Some(secret)) => Some(Arc::new(
                    secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
                )),
                Ok(None) => None,
                Err(err) => {
                    return Err(SecretError::Unreadable {
                        field: field.to_string(),
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        message: err.to_string(),
                    });
                }
            };
            *entry = Some(Entry { read_at: Instant::now(), data });
        }
        match entry.as_ref().and_then(|e| e.data.clone()) {
            Some(data) => Ok(data),
            None => Err(SecretError::NotFound {
                field: field.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
        }
    }

    /// One key of the Secret as text, without surrounding whitespace (a Secret made from a file
    /// often ends in a newline). `field` names the reference, e.g.
    /// `spec.notifications[0].secretRef`: errors about the Secret name `<field>.name`, errors
    /// about the key `<field>.key`.
    pub async fn text(
        &self,
        field: &str,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<String, SecretError> {
        let data = self.data(&format!("{field}.name"), namespace, name).await?;
        let key_field = format!("{field}.key");
        let bytes = data.get(key).ok_or_else(|| SecretError::MissingKey {
            field: key_field.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
            present: if data.is_empty() {
                "no keys".to_string()
            } else {
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })?;
        let text = std::str::from_utf8(bytes).map_err(|_| SecretError::NotText {
            field: key_field,
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
        })?;
        Ok(text.trim().to_string())
    }

    /// The cache slot for one Secret. Slots unused for ten TTLs are dropped on the way.
    fn slot(&self, namespace: &str, name: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let stale = self.ttl.saturating_mul(10);
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(entry) => entry.as_ref().is_none_or(|e| e.read_at.elapsed() < stale),
            Err(_) => true,
        });
        slots.entry((namespace.to_string(), name.to_string())).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_the_secret_and_the_namespace() {
        let err = SecretError::NotFound {
            field: "spec.webhooks[0].headersFrom.name".into(),
            namespace: "shop".into(),
            name: "gate-auth".into(),
        };
        assert_eq!(
            err.to_string(),
            r#"spec.webhooks[0].headersFrom.name: Secret "gate-auth" not found in namespace "shop""#
        );
        assert_eq!(err.field(), "spec.webhooks[0].headersFrom.name");
        let err = SecretError::MissingKey {
            field: "spec.notifications[1].secretRef.key".into(),
            namespace: "shop".into(),
            name: "slack".into(),
            key: "address".into(),
            present: "url".into(),
        };
        assert_eq!(
            err.to_string(),
            r#"spec.notifications[1].secretRef.key: Secret "slack" in namespace "shop" has no key "address" (it has: url)"#
        );
    }
}
