//! SMI TrafficSplit as a traffic backend, in whichever version the API server serves.

use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::{Routing, TrafficError, TrafficRouter, normalise};
use crate::api::{Rollout, SmiVersion};
use crate::engine::resources::Names;
use crate::quantity::{Quantity, format_milli};
use crate::smi::split::{GROUP, VERSIONS};

/// Writes `split.smi-spec.io` TrafficSplits of one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmiTrafficSplit {
    version: &'static str,
}

impl SmiTrafficSplit {
    /// A router for `version`, which must be one of [`VERSIONS`].
    pub fn new(version: &str) -> Option<Self> {
        VERSIONS.iter().find(|v| **v == version).map(|v| SmiTrafficSplit { version: v })
    }

    /// The version it writes.
    pub fn version(&self) -> &'static str {
        self.version
    }
}

/// The versions of TrafficSplit the API server serves, oldest first.
pub async fn served_versions(client: &Client) -> Result<Vec<String>, kube::Error> {
    let groups = client.list_api_groups().await?;
    let mut versions: Vec<String> = groups
        .groups
        .into_iter()
        .filter(|g| g.name == GROUP)
        .flat_map(|g| g.versions.into_iter().map(|v| v.version))
        .filter(|v| VERSIONS.contains(&v.as_str()))
        .collect();
    versions.sort_by_key(|v| VERSIONS.iter().position(|k| k == v));
    Ok(versions)
}

/// Chooses the version to write: the pinned one if served, otherwise the newest served. Newer
/// versions are supersets for Serin's purposes (integer weights, optional matches), and the
/// newest served is what the installed mesh reads: linkerd-smi serves v1alpha1+v1alpha2, OSM
/// v1alpha2, Traefik Mesh v1alpha3, the SMI SDK v1alpha4.
pub fn choose_version(wanted: SmiVersion, served: &[String]) -> Result<&'static str, TrafficError> {
    let served_known: Vec<&'static str> =
        VERSIONS.iter().copied().filter(|v| served.iter().any(|s| s == v)).collect();
    let pinned = match wanted {
        SmiVersion::Auto => None,
        SmiVersion::V1alpha1 => Some("v1alpha1"),
        SmiVersion::V1alpha2 => Some("v1alpha2"),
        SmiVersion::V1alpha3 => Some("v1alpha3"),
        SmiVersion::V1alpha4 => Some("v1alpha4"),
    };
    match pinned {
        Some(v) if served_known.contains(&v) => Ok(v),
        Some(v) if served_known.is_empty() => {
            Err(TrafficError::VersionNotServed { wanted: v.to_string(), served: "none".to_string() })
        }
        Some(v) => {
            Err(TrafficError::VersionNotServed { wanted: v.to_string(), served: served_known.join(", ") })
        }
        None => served_known.last().copied().ok_or(TrafficError::NoTrafficSplit),
    }
}

impl TrafficRouter for SmiTrafficSplit {
    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, self.version, "TrafficSplit"))
    }

    fn render(
        &self,
        rollout: &Rollout,
        names: &Names,
        canary_weight: i32,
    ) -> Result<DynamicObject, TrafficError> {
        if !(0..=100).contains(&canary_weight) {
            return Err(TrafficError::Weight(canary_weight));
        }
        let primary_weight = 100 - canary_weight;
        let weight = |percent: i32| -> Value {
            if self.version == "v1alpha1" {
                // Milli-units summing to 1: never mix "1" with "500m" units by accident.
                json!(format_milli(i64::from(percent) * 10))
            } else {
                json!(percent)
            }
        };
        let owner = rollout.controller_owner_ref(&()).map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
        let object = json!({
            "apiVersion": format!("{GROUP}/{}", self.version),
            "kind": "TrafficSplit",
            "metadata": {
                "name": names.root,
                "namespace": rollout.namespace().ok_or(TrafficError::NoNamespace)?,
                "labels": {crate::api::labels::MANAGED_BY: crate::api::labels::MANAGER},
                "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
            },
            "spec": {
                "service": names.root,
                "backends": [
                    {"service": names.primary, "weight": weight(primary_weight)},
                    {"service": names.canary, "weight": weight(canary_weight)},
                ]
            }
        });
        serde_json::from_value(object).map_err(|_| TrafficError::NoNamespace)
    }

    fn read(&self, object: &DynamicObject) -> Option<Routing> {
        let spec = object.data.get("spec")?;
        let root = spec.get("service")?.as_str()?.to_string();
        let backends = spec
            .get("backends")?
            .as_array()?
            .iter()
            .map(|b| {
                let service = b.get("service")?.as_str()?.to_string();
                // Integers (v1alpha2+) and quantities (v1alpha1) alike, in thousandths.
                let milli = match b.get("weight")? {
                    Value::Number(n) => n.as_i64()?.checked_mul(1000)?,
                    Value::String(s) => Quantity::parse(s).ok()?.as_milli()?,
                    _ => return None,
                };
                Some((service, milli))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Routing { root, backends: normalise(backends)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"targetRef": {"name": "web"}, "service": {"port": 80}}
        }))
        .unwrap()
    }

    fn served(vs: &[&str]) -> Vec<String> {
        vs.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn auto_picks_the_newest_served_version() {
        assert_eq!(choose_version(SmiVersion::Auto, &served(&["v1alpha1", "v1alpha2"])), Ok("v1alpha2"));
        assert_eq!(choose_version(SmiVersion::Auto, &served(&["v1alpha3"])), Ok("v1alpha3"));
        assert_eq!(choose_version(SmiVersion::Auto, &served(&["v1alpha4", "v1alpha1"])), Ok("v1alpha4"));
        assert_eq!(
            choose_version(SmiVersion::Auto, &served(&["v1beta9"])),
            Err(TrafficError::NoTrafficSplit)
        );
        assert_eq!(choose_version(SmiVersion::Auto, &[]), Err(TrafficError::NoTrafficSplit));
    }

    #[test]
    fn a_pinned_version_must_be_served() {
        assert_eq!(choose_version(SmiVersion::V1alpha1, &served(&["v1alpha1", "v1alpha2"])), Ok("v1alpha1"));
        let err = choose_version(SmiVersion::V1alpha3, &served(&["v1alpha1", "v1alpha2"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.traffic.smi.version is v1alpha3, but the API server serves only v1alpha1, v1alpha2; pick one of those or `auto`"
        );
    }

    #[test]
    fn every_version_renders_both_weights_including_zero() {
        let names = Names::of(&rollout());
        for version in VERSIONS {
            let router = SmiTrafficSplit::new(version).unwrap();
            let obj = router.render(&rollout(), &names, 0).unwrap();
            let backends = obj.data["spec"]["backends"].as_array().unwrap();
            assert_eq!(backends.len(), 2, "{version}");
            assert!(backends[1].get("weight").is_some(), "{version}: zero weight written out");
            let routing = router.read(&obj).unwrap();
            assert_eq!(
                routing.backends,
                vec![("web-canary".into(), 0), ("web-primary".into(), 1000)],
                "{version}"
            );
            assert_eq!(obj.types.as_ref().unwrap().api_version, format!("split.smi-spec.io/{version}"));
            assert_eq!(obj.metadata.owner_references.as_ref().unwrap()[0].name, "web");
        }
    }

    #[test]
    fn v1alpha1_writes_milli_quantities_and_later_versions_integers() {
        let names = Names::of(&rollout());
        let v1 = SmiTrafficSplit::new("v1alpha1").unwrap().render(&rollout(), &names, 25).unwrap();
        assert_eq!(v1.data["spec"]["backends"][0]["weight"], "750m");
        assert_eq!(v1.data["spec"]["backends"][1]["weight"], "250m");
        let full = SmiTrafficSplit::new("v1alpha1").unwrap().render(&rollout(), &names, 100).unwrap();
        assert_eq!(full.data["spec"]["backends"][0]["weight"], "0");
        assert_eq!(full.data["spec"]["backends"][1]["weight"], "1");
        let v2 = SmiTrafficSplit::new("v1alpha2").unwrap().render(&rollout(), &names, 25).unwrap();
        assert_eq!(v2.data["spec"]["backends"][1]["weight"], 25);
    }

    #[test]
    fn reading_compares_shares_across_versions_and_units() {
        let names = Names::of(&rollout());
        let v1 = SmiTrafficSplit::new("v1alpha1").unwrap();
        let v4 = SmiTrafficSplit::new("v1alpha4").unwrap();
        let written_v1 = v1.render(&rollout(), &names, 25).unwrap();
        let rendered_v4 = v4.render(&rollout(), &names, 25).unwrap();
        assert!(v4.in_sync(&written_v1, &rendered_v4), "250m/750m is 25/75");
        let edited = v4.render(&rollout(), &names, 40).unwrap();
        assert!(!v4.in_sync(&edited, &rendered_v4), "a hand edit is noticed");
    }

    #[test]
    fn unreadable_or_all_zero_splits_are_out_of_sync() {
        let v2 = SmiTrafficSplit::new("v1alpha2").unwrap();
        let mut obj = v2.render(&rollout(), &Names::of(&rollout()), 25).unwrap();
        obj.data["spec"]["backends"][0]["weight"] = json!(0);
        obj.data["spec"]["backends"][1]["weight"] = json!(0);
        assert_eq!(v2.read(&obj), None);
        obj.data["spec"]["backends"][1]["weight"] = json!("lots");
        assert_eq!(v2.read(&obj), None);
        assert!(SmiTrafficSplit::new("v2").is_none());
    }
}
