//! The sample app of the engine and plugin stories: a namespace with a Deployment `web` and a
//! Rollout for it, and the questions the stories ask about it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use serin::api::{Phase, Rollout, RolloutStatus};

use crate::{Operator, client, install_rollout_crd, install_trafficsplit_crd, namespace};

/// How long a story waits for a state before it fails, with the operator's log.
pub const WAIT: Duration = Duration::from_secs(90);

/// A namespace with the sample app `web` under a Rollout.
pub struct Story {
    pub client: Client,
    pub ns: String,
    pub rollouts: Api<Rollout>,
    pub deployments: Api<Deployment>,
    pub services: Api<Service>,
    /// TrafficSplits as the fixture CRD stores them (v1alpha4).
    pub splits: Api<DynamicObject>,
}

impl Story {
    /// A namespace named after `prefix` with a Deployment `web` (2 replicas, image web:1) and a
    /// Rollout for it with `strategy` and the other spec fields in `extra`.
    pub async fn new(prefix: &str, strategy: Value, extra: Value) -> Story {
        let client = client().await;
        install_rollout_crd(&client).await;
        install_trafficsplit_crd(&client).await;
        let ns = namespace(&client, prefix).await;
        let split = GroupVersionKind::gvk("split.smi-spec.io", "v1alpha4", "TrafficSplit");
        let story = Story {
            rollouts: Api::namespaced(client.clone(), &ns),
            deployments: Api::namespaced(client.clone(), &ns),
            services: Api::namespaced(client.clone(), &ns),
            splits: Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&split)),
            client,
            ns,
        };
        let mut spec = json!({"strategy": strategy});
        for (k, v) in extra.as_object().expect("extra spec fields are a JSON object") {
            spec[k] = v.clone();
        }
        crate::deploy_web_with_rollout(&story.client, &story.ns, spec).await;
        story
    }

    /// The Rollout `web` now.
    pub async fn rollout(&self) -> Rollout {
        self.rollouts.get("web").await.expect("Rollout web exists")
    }

    /// Its status now (the default before the operator wrote one).
    pub async fn status(&self) -> RolloutStatus {
        self.rollout().await.status.unwrap_or_default()
    }

    /// Waits until the status satisfies `check`, and returns that Rollout. On timeout it fails
    /// with the last status and the operator's log.
    pub async fn wait_for(
        &self,
        what: &str,
        operator: &Operator,
        check: impl Fn(&RolloutStatus) -> bool,
    ) -> Rollout {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(rollout) = self.rollouts.get("web").await
                    && rollout.status.as_ref().is_some_and(&check)
                {
                    return rollout;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        match found {
            Ok(rollout) => rollout,
            Err(_) => panic!(
                "timed out waiting for {what} in {}; status {:?}\noperator log:\n{}",
                self.ns,
                self.status().await,
                operator.log_tail()
            ),
        }
    }

    /// Waits for `phase`.
    pub async fn wait_phase(&self, phase: Phase, operator: &Operator) -> Rollout {
        self.wait_for(&format!("phase {phase:?}"), operator, |s| s.phase == phase).await
    }

    /// Changes the app's image: a new revision.
    pub async fn set_image(&self, image: &str) {
        crate::set_web_image(&self.client, &self.ns, image).await;
    }

    /// A new revision whose pods never become ready: kwok leaves pods with the label
    /// `serin.dev/e2e-never-ready` Pending (see `e2e/fixtures/kwok/stages.yaml`).
    pub async fn set_never_ready(&self) {
        let patch =
            json!({"spec": {"template": {"metadata": {"labels": {"serin.dev/e2e-never-ready": "true"}}}}});
        self.deployments
            .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .expect("label the pod template of Deployment web never-ready");
    }

    /// (primary, canary) weights of the TrafficSplit.
    pub async fn weights(&self) -> Option<(i64, i64)> {
        let split = self.splits.get("web").await.ok()?;
        let backends = split.data["spec"]["backends"].as_array()?.clone();
        let weight = |name: &str| backends.iter().find(|b| b["service"] == name)?["weight"].as_i64();
        Some((weight("web-primary")?, weight("web-canary")?))
    }

    /// `spec.replicas` of Deployment `name`.
    pub async fn replicas(&self, name: &str) -> Option<i32> {
        self.deployments.get(name).await.ok()?.spec?.replicas
    }

    /// The first container's image of Deployment `name`.
    pub async fn image(&self, name: &str) -> Option<String> {
        self.deployments.get(name).await.ok()?.spec?.template.spec?.containers[0].image.clone()
    }

    /// The notes of the Rollout's Events with `reason`, oldest first, one per Event object.
    pub async fn events(&self, reason: &str) -> Vec<String> {
        crate::rollout_event_notes(&self.client, &self.ns, reason).await
    }
}
