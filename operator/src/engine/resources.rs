//! The objects Serin owns, built from the Rollout and the user's Deployment. Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::{Rollout, labels};

/// Why an object could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error(
        "Deployment {0} selects pods with matchExpressions; Serin needs spec.selector.matchLabels only, \
         so it can give the primary labels of its own"
    )]
    SelectorExpressions(String),
    #[error("Deployment {0} has no spec.selector.matchLabels")]
    NoSelector(String),
    #[error("Deployment {0} has no spec; it cannot be rolled out")]
    NoSpec(String),
    #[error("Rollout has no namespace or uid yet")]
    NotPersisted,
}

/// Suffix of the primary Deployment, its Service, and its selector label values.
pub const PRIMARY_SUFFIX: &str = "-primary";
/// Suffix of the canary Service.
pub const CANARY_SUFFIX: &str = "-canary";

/// The names of everything a Rollout manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The user's Deployment and the root Service clients call.
    pub root: String,
    /// The primary Deployment and its Service.
    pub primary: String,
    /// The canary Service, which selects the user's Deployment's pods.
    pub canary: String,
}

impl Names {
    pub fn of(rollout: &Rollout) -> Self {
        let root = rollout.spec.target_ref.name.clone();
        Names { primary: format!("{root}{PRIMARY_SUFFIX}"), canary: format!("{root}{CANARY_SUFFIX}"), root }
    }
}

/// The user's Deployment's selector labels.
pub fn target_selector(target: &Deployment) -> Result<BTreeMap<String, String>, ResourceError> {
    let name = target.name_any();
    let selector = &target.spec.as_ref().ok_or_else(|| ResourceError::NoSpec(name.clone()))?.selector;
    if selector.match_expressions.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(ResourceError::SelectorExpressions(name));
    }
    match &selector.match_labels {
        Some(labels) if !labels.is_empty() => Ok(labels.clone()),
        _ => Err(ResourceError::NoSelector(name)),
    }
}

/// The primary's selector: the user's, with every value suffixed, so the two sets of pods never
/// overlap.
pub fn primary_selector(target: &Deployment) -> Result<BTreeMap<String, String>, ResourceError> {
    Ok(target_selector(target)?.into_iter().map(|(k, v)| (k, suffixed(&v))).collect())
}

fn suffixed(value: &str) -> String {
    // Label values are at most 63 characters.
    let keep = 63 - PRIMARY_SUFFIX.len();
    let base: String = value.chars().take(keep).collect();
    format!("{}{PRIMARY_SUFFIX}", base.trim_end_matches(['-', '_', '.']))
}

fn metadata(rollout: &Rollout, name: &str) -> Result<ObjectMeta, ResourceError> {
    let owner = rollout.controller_owner_ref(&()).ok_or(ResourceError::NotPersisted)?;
    Ok(ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(rollout.namespace().ok_or(ResourceError::NotPersisted)?),
        labels: Some(BTreeMap::from([(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string())])),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// The primary Deployment running `target`'s pod template at `revision`, with `replicas`.
/// The template's labels that the selector uses get the primary suffix; the rollout strategy,
/// minReadySeconds, revisionHistoryLimit and progressDeadlineSeconds are copied.
pub fn primary_deployment(
    rollout: &Rollout,
    target: &Deployment,
    revision: &str,
    replicas: i32,
) -> Result<Deployment, ResourceError> {
    let names = Names::of(rollout);
    let spec = target.spec.as_ref().ok_or_else(|| ResourceError::NoSpec(target.name_any()))?;
    let selector = primary_selector(target)?;
    let mut template = spec.template.clone();
    let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let template_labels = template_meta.labels.get_or_insert_with(BTreeMap::new);
    template_labels.extend(selector.clone());
    let mut meta = metadata(rollout, &names.primary)?;
    meta.annotations = Some(BTreeMap::from([(labels::REVISION.to_string(), revision.to_string())]));
    Ok(Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector), match_expressions: None },
            template,
            strategy: spec.strategy.clone(),
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            paused: None,
        }),
        status: None,
    })
}

/// The primary's HPA: a copy of the user's HPA for their Deployment, aimed at the primary.
pub fn primary_autoscaler(
    rollout: &Rollout,
    user: &HorizontalPodAutoscaler,
) -> Result<HorizontalPodAutoscaler, ResourceError> {
    let names = Names::of(rollout);
    let mut spec = user.spec.clone().unwrap_or_default();
    spec.scale_target_ref.name = names.primary.clone();
    Ok(HorizontalPodAutoscaler {
        metadata: metadata(rollout, &names.primary)?,
        spec: Some(spec),
        status: None,
    })
}

/// A ClusterIP Service named `name` that selects `selector` on the Rollout's port.
pub fn service(
    rollout: &Rollout,
    name: &str,
    selector: BTreeMap<String, String>,
) -> Result<Service, ResourceError> {
    let svc = &rollout.spec.service;
    Ok(Service {
        metadata: metadata(rollout, name)?,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(svc.port_name.clone()),
                port: svc.port,
                target_port: Some(svc.target_port.clone().unwrap_or(IntOrString::Int(svc.port))),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The three Services: root and primary select the primary's pods, canary the user's.
pub fn services(rollout: &Rollout, target: &Deployment) -> Result<[Service; 3], ResourceError> {
    let names = Names::of(rollout);
    let primary = primary_selector(target)?;
    Ok([
        service(rollout, &names.root, primary.clone())?,
        service(rollout, &names.primary, primary)?,
        service(rollout, &names.canary, target_selector(target)?)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout() -> Rollout {
        let mut r: Rollout = serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"targetRef": {"name": "web"}, "service": {"port": 80, "targetPort": "http"}}
        }))
        .unwrap();
        r.metadata.uid = Some("u-1".into());
        r
    }

    fn target() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "replicas": 0, "minReadySeconds": 5,
                "strategy": {"type": "RollingUpdate"},
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "team": "a"}},
                             "spec": {"containers": [{"name": "web", "image": "web:2"}]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_primary_copies_the_template_with_suffixed_selector_labels() {
        let d = primary_deployment(&rollout(), &target(), "abc", 3).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("web-primary"));
        assert_eq!(d.metadata.annotations.unwrap()[labels::REVISION], "abc");
        let owner = &d.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Rollout", Some(true)));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.min_ready_seconds, Some(5));
        assert_eq!(spec.selector.match_labels.unwrap()["app"], "web-primary");
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app"], "web-primary");
        assert_eq!(labels["team"], "a", "other labels are kept");
        assert_eq!(spec.template.spec.unwrap().containers[0].image.as_deref(), Some("web:2"));
    }

    #[test]
    fn services_select_primary_and_canary_pods() {
        let [root, primary, canary] = services(&rollout(), &target()).unwrap();
        let selector = |s: &Service| s.spec.as_ref().unwrap().selector.clone().unwrap()["app"].clone();
        assert_eq!((root.metadata.name.as_deref(), selector(&root).as_str()), (Some("web"), "web-primary"));
        assert_eq!(primary.metadata.name.as_deref(), Some("web-primary"));
        assert_eq!(selector(&canary), "web");
        let port = &canary.spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    }

    #[test]
    fn selectors_with_expressions_are_refused_with_the_fix() {
        let mut t = target();
        t.spec.as_mut().unwrap().selector.match_expressions = Some(vec![
            serde_json::from_value(json!({"key": "app", "operator": "In", "values": ["web"]})).unwrap(),
        ]);
        let err = primary_deployment(&rollout(), &t, "abc", 1).unwrap_err();
        assert!(err.to_string().contains("matchLabels only"));
    }

    #[test]
    fn the_primary_autoscaler_copies_the_users_and_aims_at_the_primary() {
        let user: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "web-hpa", "namespace": "shop"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 7}
        }))
        .unwrap();
        let twin = primary_autoscaler(&rollout(), &user).unwrap();
        assert_eq!(twin.metadata.name.as_deref(), Some("web-primary"));
        let spec = twin.spec.unwrap();
        assert_eq!(spec.scale_target_ref.name, "web-primary");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 7));
        assert_eq!(twin.metadata.owner_references.unwrap()[0].kind, "Rollout");
    }

    #[test]
    fn long_label_values_stay_valid() {
        assert_eq!(suffixed(&"a".repeat(63)).len(), 63);
        assert!(suffixed(&format!("{}-", "a".repeat(55))).ends_with("a-primary"));
    }
}
