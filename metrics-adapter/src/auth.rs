//! Who may ask: only kube-apiserver, acting as a front proxy for an authenticated user.
//!
//! Authentication follows kube-apiserver's request-header scheme:
//! - the connection must present a client certificate signed by the front-proxy CA
//!   (`--requestheader-client-ca-file`; rustls verifies it during the handshake), whose common
//!   name is in `--requestheader-allowed-names` (an empty list allows any name the CA signed);
//! - the user is then read from `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-*`
//!   (the header names are configurable, as kube-apiserver's are).
//!
//! When the CA flag is absent, the CA, the allowed names and the header names come from the
//! ConfigMap `kube-system/extension-apiserver-authentication`, which kube-apiserver publishes.
//!
//! Authorization is delegated: each metrics request becomes a SubjectAccessReview for the user
//! (`get`/`list` on `deployments`, `pods`, `namespaces`, `deployments/edges`, ... in group
//! `metrics.smi-spec.io`), cached for ten seconds like kube-apiserver's webhook authorizer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serin::smi::metrics::{GROUP, VERSION};

use crate::routes::Attributes;
use crate::status::ApiError;

/// The ConfigMap kube-apiserver publishes its client CAs and request-header settings in.
pub const AUTHENTICATION_CONFIGMAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

/// How long an authorization decision is reused.
const DECISION_TTL: Duration = Duration::from_secs(10);
/// Expired decisions are dropped once the cache holds this many.
const CACHE_PRUNE_AT: usize = 4096;

/// Why the request-header settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot read ConfigMap kube-system/extension-apiserver-authentication: {0}")]
    ConfigMap(kube::Error),
    #[error(
        "ConfigMap kube-system/extension-apiserver-authentication has no requestheader-client-ca-file: \
         kube-apiserver runs without --requestheader-client-ca-file, so it cannot proxy to aggregated servers"
    )]
    NoRequestHeaderCa,
    #[error("ConfigMap key {key} is not a JSON list of strings: {source}")]
    List { key: String, source: serde_json::Error },
}

/// The request-header authentication settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// PEM: the CAs that sign the front proxy's client certificate.
    pub client_ca_pem: Vec<u8>,
    /// Common names allowed; empty allows any certificate the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_headers_prefixes: Vec<String>,
}

/// Flag values; `None` where a flag was not given.
#[derive(Clone, Debug, Default)]
pub struct RequestHeaderFlags {
    pub client_ca_file: Option<std::path::PathBuf>,
    pub allowed_names: Option<Vec<String>>,
    pub username_headers: Option<Vec<String>>,
    pub group_headers: Option<Vec<String>>,
    pub extra_headers_prefixes: Option<Vec<String>>,
}

impl RequestHeader {
    /// From flags alone (when the CA file is given), with kube-apiserver's usual defaults.
    pub fn from_flags(flags: &RequestHeaderFlags, client_ca_pem: Vec<u8>) -> RequestHeader {
        let or =
            |v: &Option<Vec<String>>, default: &str| v.clone().unwrap_or_else(|| vec![default.to_string()]);
        RequestHeader {
            client_ca_pem,
            allowed_names: or(&flags.allowed_names, "front-proxy-client"),
            username_headers: or(&flags.username_headers, "X-Remote-User"),
            group_headers: or(&flags.group_headers, "X-Remote-Group"),
            extra_headers_prefixes: or(&flags.extra_headers_prefixes, "X-Remote-Extra-"),
        }
        .normalized()
    }

    /// From the data of `extension-apiserver-authentication`; flags that were given win.
    pub fn from_configmap(
        data: &BTreeMap<String, String>,
        flags: &RequestHeaderFlags,
    ) -> Result<RequestHeader, AuthConfigError> {
        let ca = data.get("requestheader-client-ca-file").filter(|ca| !ca.trim().is_empty());
        let ca = ca.ok_or(AuthConfigError::NoRequestHeaderCa)?;
        let list = |key: &str, flag: &Option<Vec<String>>| -> Result<Vec<String>, AuthConfigError> {
            if let Some(values) = flag {
                return Ok(values.clone());
            }
            match data.get(key) {
                None => Ok(Vec::new()),
                Some(text) => serde_json::from_str(text)
                    .map_err(|source| AuthConfigError::List { key: key.to_string(), source }),
            }
        };
        Ok(RequestHeader {
            client_ca_pem: ca.as_bytes().to_vec(),
            allowed_names: list("requestheader-allowed-names", &flags.allowed_names)?,
            username_headers: list("requestheader-username-headers", &flags.username_headers)?,
            group_headers: list("requestheader-group-headers", &flags.group_headers)?,
            extra_headers_prefixes: list(
                "requestheader-extra-headers-prefix",
                &flags.extra_headers_prefixes,
            )?,
        }
        .normalized())
    }

    /// Loads the settings: from the flags when the CA file is given, else from the ConfigMap
    /// (which needs `client`).
    pub async fn load(
        flags: &RequestHeaderFlags,
        client: Option<&kube::Client>,
    ) -> Result<RequestHeader, crate::Error> {
        if let Some(path) = &flags.client_ca_file {
            let pem = std::fs::read(path)
                .map_err(|source| AuthConfigError::Read { path: path.display().to_string(), source })?;
            return Ok(RequestHeader::from_flags(flags, pem));
        }
        let client = client.ok_or(crate::Error::NoKubeClient("read the front-proxy CA from the cluster"))?;
        let (ns, name) = AUTHENTICATION_CONFIGMAP;
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .map_err(AuthConfigError::ConfigMap)?;
        Ok(RequestHeader::from_configmap(&cm.data.unwrap_or_default(), flags)?)
    }

    fn normalized(mut self) -> Self {
        let clean = |v: &mut Vec<String>, lower: bool| {
            v.retain(|s| !s.trim().is_empty());
            for s in v.iter_mut() {
                *s = s.trim().to_string();
                if lower {
                    *s = s.to_ascii_lowercase();
                }
            }
        };
        clean(&mut self.allowed_names, false);
        clean(&mut self.username_headers, true);
        clean(&mut self.group_headers, true);
        clean(&mut self.extra_headers_prefixes, true);
        self
    }

    /// Authenticates a request: the connection's client certificate must be the front proxy's,
    /// and then the user is whoever the headers name. `Ok(None)` when the front proxy names no
    /// user (kube-apiserver's own discovery and availability checks).
    pub fn authenticate(&self, peer: &Peer, headers: &HeaderMap) -> Result<Option<User>, ApiError> {
        let Some(common_name) = &peer.client_common_name else {
            return Err(ApiError::Unauthorized(
                "only kube-apiserver may call this server: no front-proxy client certificate".into(),
            ));
        };
        if !self.allowed_names.is_empty() && !self.allowed_names.iter().any(|n| n == common_name) {
            return Err(ApiError::Unauthorized(format!(
                "client certificate {common_name:?} is not one of the allowed front-proxy names {:?}",
                self.allowed_names
            )));
        }
        let values = |name: &str| -> Vec<String> {
            headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
        };
        let Some(name) = self.username_headers.iter().flat_map(|h| values(h)).find(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let groups = self.group_headers.iter().flat_map(|h| values(h)).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            let header = header.as_str();
            for prefix in &self.extra_headers_prefixes {
                if let Some(key) = header.strip_prefix(prefix.as_str())
                    && let Ok(value) = value.to_str()
                {
                    extra
                        .entry(percent_decode(key).to_ascii_lowercase())
                        .or_default()
                        .push(value.to_string());
                }
            }
        }
        Ok(Some(User { name, groups, extra }))
    }
}

/// What the TLS handshake established about the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// The common name of the client certificate, which the front-proxy CA signed; `None`
    /// when the client presented no certificate. (Empty when the certificate has no CN.)
    pub client_common_name: Option<String>,
}

/// An authenticated user, as kube-apiserver named it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Extra keys are percent-encoded in header names (kube-apiserver escapes them).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2))
        {
            // Two hex digits make at most 255.
            out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An authorization decision: allowed, or denied with the message to answer.
type Decision = Result<(), String>;

/// Delegated authorization: asks kube-apiserver with SubjectAccessReviews.
pub struct Authorizer {
    client: kube::Client,
    cache: Mutex<HashMap<(User, Attributes), (Decision, Instant)>>,
}

impl Authorizer {
    pub fn new(client: kube::Client) -> Self {
        Authorizer { client, cache: Mutex::new(HashMap::new()) }
    }

    /// Allows the request or answers 403 with kube-apiserver's reason.
    pub async fn authorize(&self, user: &User, attributes: &Attributes) -> Result<(), ApiError> {
        let key = (user.clone(), attributes.clone());
        if let Some(decision) = self.cached(&key) {
            return decision.map_err(ApiError::Forbidden);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.to_string()),
                    version: Some(VERSION.to_string()),
                    resource: Some(attributes.resource.to_string()),
                    subresource: attributes.subresource.map(str::to_string),
                    name: attributes.name.clone(),
                    namespace: attributes.namespace.clone(),
                    verb: Some(attributes.verb.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                ApiError::Unavailable(format!("cannot authorize: SubjectAccessReview failed: {e}"))
            })?;
        let status = answer.status.unwrap_or_default();
        let decision = if status.allowed && status.denied != Some(true) {
            Ok(())
        } else {
            let what = match (&attributes.subresource, &attributes.namespace) {
                (Some(sub), _) => format!("{}/{sub}", attributes.resource),
                (None, _) => attributes.resource.to_string(),
            };
            let scope = match &attributes.namespace {
                Some(ns) => format!("in the namespace {ns:?}"),
                None => "at the cluster scope".to_string(),
            };
            let reason =
                status.reason.filter(|r| !r.is_empty()).map(|r| format!(": {r}")).unwrap_or_default();
            Err(format!(
                "{what}.{GROUP} is forbidden: User {:?} cannot {} resource {what:?} in API group {GROUP:?} {scope}{reason}",
                user.name, attributes.verb
            ))
        };
        self.remember(key, decision.clone());
        decision.map_err(ApiError::Forbidden)
    }

    fn cached(&self, key: &(User, Attributes)) -> Option<Decision> {
        let cache = self.cache.lock().ok()?;
        let (decision, at) = cache.get(key)?;
        (at.elapsed() < DECISION_TTL).then(|| decision.clone())
    }

    fn remember(&self, key: (User, Attributes), decision: Decision) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_PRUNE_AT {
                cache.retain(|_, (_, at)| at.elapsed() < DECISION_TTL);
            }
            cache.insert(key, (decision, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn front_proxy() -> Peer {
        Peer { client_common_name: Some("front-proxy-client".into()) }
    }

    fn config() -> RequestHeader {
        RequestHeader::from_flags(&RequestHeaderFlags::default(), b"PEM".to_vec())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn reads_the_user_that_kube_apiserver_names() {
        let h = headers(&[
            ("x-remote-user", "alice"),
            ("x-remote-group", "dev"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-extra-scopes", "a"),
            ("x-remote-extra-scopes", "b"),
            ("x-remote-extra-acme.com%2fproject", "p"),
        ]);
        let user = config().authenticate(&front_proxy(), &h).unwrap().unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "system:authenticated"]);
        assert_eq!(user.extra.get("scopes"), Some(&vec!["a".to_string(), "b".to_string()]));
        assert_eq!(user.extra.get("acme.com/project"), Some(&vec!["p".to_string()]));
    }

    #[test]
    fn refuses_clients_that_are_not_the_front_proxy() {
        let h = headers(&[("x-remote-user", "alice")]);
        let err = config().authenticate(&Peer::default(), &h).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)), "no certificate: {err:?}");
        let other = Peer { client_common_name: Some("system:admin".into()) };
        let err = config().authenticate(&other, &h).unwrap_err();
        assert!(err.to_string().contains("system:admin"), "{err}");
        // An empty allowed list allows any name the CA signed.
        let any = RequestHeader { allowed_names: vec![], ..config() };
        assert!(any.authenticate(&other, &h).unwrap().is_some());
    }

    #[test]
    fn a_front_proxy_request_without_a_user_is_anonymous() {
        assert_eq!(config().authenticate(&front_proxy(), &HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn flags_default_like_kube_apiserver() {
        let c = config();
        assert_eq!(c.allowed_names, ["front-proxy-client"]);
        assert_eq!(c.username_headers, ["x-remote-user"]);
        let flags = RequestHeaderFlags { allowed_names: Some(vec!["".into()]), ..Default::default() };
        assert!(RequestHeader::from_flags(&flags, vec![]).allowed_names.is_empty(), "\"\" allows any name");
    }

    #[test]
    fn reads_the_extension_apiserver_authentication_configmap() {
        let data: BTreeMap<String, String> = [
            ("client-ca-file", "CLIENT CA"),
            ("requestheader-client-ca-file", "FRONT PROXY CA"),
            ("requestheader-allowed-names", r#"["front-proxy-client","aggregator"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = RequestHeader::from_configmap(&data, &RequestHeaderFlags::default()).unwrap();
        assert_eq!(c.client_ca_pem, b"FRONT PROXY CA");
        assert_eq!(c.allowed_names, ["front-proxy-client", "aggregator"]);
        assert_eq!(c.group_headers, ["x-remote-group"]);
        assert_eq!(c.extra_headers_prefixes, ["x-remote-extra-"]);

        let flags = RequestHeaderFlags { allowed_names: Some(vec!["mine".into()]), ..Default::default() };
        assert_eq!(RequestHeader::from_configmap(&data, &flags).unwrap().allowed_names, ["mine"]);

        let mut broken = data.clone();
        broken.insert("requestheader-allowed-names".into(), "front-proxy-client".into());
        assert!(matches!(
            RequestHeader::from_configmap(&broken, &RequestHeaderFlags::default()),
            Err(AuthConfigError::List { .. })
        ));
        broken.remove("requestheader-client-ca-file");
        assert!(matches!(
            RequestHeader::from_configmap(&broken, &RequestHeaderFlags::default()),
            Err(AuthConfigError::NoRequestHeaderCa)
        ));
    }

    #[test]
    fn percent_decodes_extra_keys() {
        assert_eq!(percent_decode("acme.com%2Fproject"), "acme.com/project");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%2"), "bad%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
