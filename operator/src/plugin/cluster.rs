//! Finding the cluster the way kubectl does, and reading what the views show.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config, ResourceExt};

use super::Error;
use super::cli::Global;
use super::render::{EventLine, Snapshot};
use crate::api::Rollout;
use crate::engine::resources::PRIMARY_SUFFIX;

/// How long to wait for a TCP (and TLS) connection to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for an answer to one request. The plugin never watches: it polls.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for one cluster and namespace.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// The namespace: `-n`, else the context's, else `default`.
    pub namespace: String,
    /// The API server's URL, for error messages.
    pub server: String,
}

/// Connects the way kubectl does: `--kubeconfig`, else `KUBECONFIG` (a list of files, merged),
/// else `~/.kube/config`, else the in-cluster service account; the current context unless
/// `--context` names another; its namespace unless `-n` names another. No request is made yet.
pub async fn connect(global: &Global) -> Result<Cluster, Error> {
    let options = KubeConfigOptions { context: global.context.clone(), cluster: None, user: None };
    let config = match (&global.kubeconfig, &global.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(format!("{}: {}", path.display(), chain(&e))))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(kubeconfig_error)?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(kubeconfig_error)?,
        (None, None) => Config::infer().await.map_err(|e| Error::Kubeconfig(chain(&e)))?,
    };
    let mut config = config;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    let namespace = global.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_string();
    let client = Client::try_from(config)
        .map_err(|e| Error::Unreachable { server: server.clone(), reason: root_cause(&e) })?;
    Ok(Cluster { client, namespace, server })
}

fn kubeconfig_error(err: KubeconfigError) -> Error {
    match err {
        KubeconfigError::LoadContext(context) => {
            Error::Kubeconfig(format!("there is no context {context:?} in the kubeconfig"))
        }
        other => Error::Kubeconfig(chain(&other)),
    }
}

/// The messages of an error and its sources, joined, without repeats.
fn chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The innermost cause: for a refused connection, `Connection refused (os error 111)`.
fn root_cause(err: &dyn std::error::Error) -> String {
    let mut last = err;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

impl Cluster {
    fn rollouts(&self) -> Api<Rollout> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Turns a client error into one line for the user.
    pub fn error(&self, what: impl Into<String>, err: kube::Error) -> Error {
        let what = what.into();
        match err {
            kube::Error::Api(status) => {
                let message = match status.code {
                    401 => {
                        format!("unauthorized: check the credentials of your kubeconfig ({})", status.message)
                    }
                    _ if status.message.is_empty() => format!("{} {}", status.code, status.reason),
                    _ => status.message.clone(),
                };
                Error::Api { what, message }
            }
            kube::Error::Auth(e) => Error::Kubeconfig(chain(&e)),
            other => Error::Unreachable { server: self.server.clone(), reason: root_cause(&other) },
        }
    }

    /// The Rollout `name`; a clear error when it does not exist, or when the cluster does not
    /// serve Rollouts at all.
    pub async fn rollout(&self, name: &str) -> Result<Rollout, Error> {
        match self.rollouts().get(name).await {
            Ok(rollout) => Ok(rollout),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let named = status.details.as_ref().is_some_and(|d| !d.name.is_empty());
                if named {
                    Err(Error::RolloutNotFound { name: name.to_string(), namespace: self.namespace.clone() })
                } else {
                    Err(Error::NoRolloutApi { server: self.server.clone() })
                }
            }
            Err(err) => Err(self.error(format!("cannot read rollout {name:?}"), err)),
        }
    }

    /// Every Rollout in the namespace, or in all namespaces.
    pub async fn rollouts_list(&self, all_namespaces: bool) -> Result<Vec<Rollout>, Error> {
        let api: Api<Rollout> = if all_namespaces { Api::all(self.client.clone()) } else { self.rollouts() };
        match api.list(&ListParams::default()).await {
            Ok(list) => Ok(list.items),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(Error::NoRolloutApi { server: self.server.clone() })
            }
            Err(err) => Err(self.error("cannot list rollouts", err)),
        }
    }

    /// A Deployment, `None` when it does not exist.
    pub async fn deployment(&self, namespace: &str, name: &str) -> Result<Option<Deployment>, Error> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(|e| self.error(format!("cannot read Deployment {name:?}"), e))
    }

    /// The Events about a Rollout (this very object, by uid), oldest first. Events are a
    /// nicety: when they cannot be read, the views show none.
    pub async fn events(&self, rollout: &Rollout) -> Vec<EventLine> {
        let ns = rollout.namespace().unwrap_or_else(|| self.namespace.clone());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let name = rollout.name_any();
        let params = ListParams::default().fields(&format!("regarding.kind=Rollout,regarding.name={name}"));
        let Ok(list) = api.list(&params).await else { return Vec::new() };
        let uid = rollout.uid();
        let mut events: Vec<(Option<Time>, String, EventLine)> = list
            .items
            .into_iter()
            .filter(|e| {
                let regarding = e.regarding.as_ref();
                regarding.and_then(|r| r.kind.as_deref()) == Some("Rollout")
                    && regarding.and_then(|r| r.name.as_deref()) == Some(name.as_str())
                    && (uid.is_none() || regarding.and_then(|r| r.uid.clone()) == uid)
            })
            .map(|e| {
                let at = e
                    .event_time
                    .as_ref()
                    .map(|t| Time(t.0))
                    .or_else(|| e.deprecated_last_timestamp.clone())
                    .or_else(|| e.metadata.creation_timestamp.clone());
                let key = e.metadata.name.clone().unwrap_or_default();
                let line = EventLine {
                    at: at.clone(),
                    type_: e.type_.unwrap_or_else(|| "Normal".to_string()),
                    reason: e.reason.unwrap_or_default(),
                    note: e.note.unwrap_or_default(),
                };
                (at, key, line)
            })
            .collect();
        events.sort_by(|a, b| (a.0.as_ref().map(|t| t.0), &a.1).cmp(&(b.0.as_ref().map(|t| t.0), &b.1)));
        events.into_iter().map(|(_, _, line)| line).collect()
    }

    /// The Rollout with its Deployments and Events.
    pub async fn snapshot(&self, name: &str) -> Result<Snapshot, Error> {
        let rollout = self.rollout(name).await?;
        self.complete(rollout, true).await
    }

    /// Adds the Deployments (and, with `events`, the Events) to a Rollout.
    pub async fn complete(&self, rollout: Rollout, events: bool) -> Result<Snapshot, Error> {
        let ns = rollout.namespace().unwrap_or_else(|| self.namespace.clone());
        let target_name = rollout.spec.target_ref.name.clone();
        let target = self.deployment(&ns, &target_name).await?;
        let primary = self.deployment(&ns, &format!("{target_name}{PRIMARY_SUFFIX}")).await?;
        let events = if events { self.events(&rollout).await } else { Vec::new() };
        Ok(Snapshot { rollout, target, primary, events })
    }

    /// Merge-patches a Rollout: needs only `patch` on `rollouts.serin.dev`.
    pub async fn patch(&self, name: &str, patch: &serde_json::Value) -> Result<Rollout, Error> {
        self.rollouts()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| self.error(format!("cannot patch rollout {name:?}"), e))
    }
}
