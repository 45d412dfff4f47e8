//! SMI TrafficSplit, `split.smi-spec.io` v1alpha1 to v1alpha4.
//!
//! | version  | backend weight | `spec.matches` |
//! |----------|----------------|----------------|
//! | v1alpha1 | quantity (`"500m"`, `"1"`) | — |
//! | v1alpha2 | integer        | — |
//! | v1alpha3 | integer        | HTTPRouteGroup refs |
//! | v1alpha4 | integer        | HTTPRouteGroup refs |
//!
//! A backend's share is its weight over the sum of weights. Serin always writes every weight,
//! including 0 (a CRD that requires the field rejects an omitted zero), and never writes all
//! weights as 0, whose meaning the spec leaves undefined.

/// The API group of TrafficSplit.
pub const GROUP: &str = "split.smi-spec.io";

/// Versions of TrafficSplit, oldest first.
pub const VERSIONS: [&str; 4] = ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"];

/// TrafficSplit v1alpha1: weights are Kubernetes quantities. linkerd-smi stores this version.
pub mod v1alpha1 {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// Splits the traffic sent to the root `service` across `backends`.
    #[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[kube(group = "split.smi-spec.io", version = "v1alpha1", kind = "TrafficSplit", namespaced)]
    pub struct TrafficSplitSpec {
        /// The root Service that clients call.
        pub service: String,
        /// The Services traffic is split across.
        pub backends: Vec<TrafficSplitBackend>,
    }

    /// One backend and its weight as a quantity. Normalise to milli-units: the SMI SDK converts
    /// v1alpha1 by taking the unscaled integer, so `"1"` beside `"500m"` would flip the ratio.
    #[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct TrafficSplitBackend {
        pub service: String,
        pub weight: Quantity,
    }
}

/// TrafficSplit v1alpha2: integer weights. linkerd-smi and OSM read this version.
pub mod v1alpha2 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// Splits the traffic sent to the root `service` across `backends`.
    #[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[kube(group = "split.smi-spec.io", version = "v1alpha2", kind = "TrafficSplit", namespaced)]
    pub struct TrafficSplitSpec {
        pub service: String,
        pub backends: Vec<TrafficSplitBackend>,
    }

    /// One backend and its integer weight.
    #[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct TrafficSplitBackend {
        pub service: String,
        pub weight: i64,
    }
}

/// A reference to an HTTPRouteGroup (or other route kind) that narrows what is split.
#[derive(schemars::JsonSchema, serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
}

/// TrafficSplit v1alpha3: integer weights and optional `matches`. Traefik Mesh reads it.
pub mod v1alpha3 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub use super::v1alpha2::TrafficSplitBackend;

    /// Splits the traffic sent to the root `service` across `backends`. With `matches`, only
    /// matching requests are split; the rest go to the root Service itself.
    #[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[kube(group = "split.smi-spec.io", version = "v1alpha3", kind = "TrafficSplit", namespaced)]
    pub struct TrafficSplitSpec {
        pub service: String,
        pub backends: Vec<TrafficSplitBackend>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub matches: Option<Vec<super::RouteRef>>,
    }
}

/// TrafficSplit v1alpha4: the shape of v1alpha3. The SMI SDK's CRD serves only this version.
pub mod v1alpha4 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    pub use super::v1alpha2::TrafficSplitBackend;

    /// Splits the traffic sent to the root `service` across `backends`.
    #[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[kube(group = "split.smi-spec.io", version = "v1alpha4", kind = "TrafficSplit", namespaced)]
    pub struct TrafficSplitSpec {
        pub service: String,
        pub backends: Vec<TrafficSplitBackend>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub matches: Option<Vec<super::RouteRef>>,
    }
}

/// Reads a v1alpha1 backend weight in milli-units; `None` when it is not a valid quantity.
pub fn v1alpha1_weight_milli(backend: &v1alpha1::TrafficSplitBackend) -> Option<i64> {
    crate::quantity::Quantity::parse(&backend.weight.0).ok()?.as_milli()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    #[test]
    fn v1alpha1_weights_are_quantities_and_zero_is_written() {
        let split = v1alpha1::TrafficSplit::new(
            "web",
            v1alpha1::TrafficSplitSpec {
                service: "web".into(),
                backends: vec![
                    v1alpha1::TrafficSplitBackend {
                        service: "web-primary".into(),
                        weight: Quantity("1".into()),
                    },
                    v1alpha1::TrafficSplitBackend {
                        service: "web-canary".into(),
                        weight: Quantity("0".into()),
                    },
                ],
            },
        );
        let value = serde_json::to_value(&split).unwrap();
        assert_eq!(value["apiVersion"], "split.smi-spec.io/v1alpha1");
        assert_eq!(value["spec"]["backends"][0]["weight"], "1");
        assert_eq!(value["spec"]["backends"][1]["weight"], "0", "a zero weight must be written out");
    }

    #[test]
    fn v1alpha1_mixed_quantities_normalise_to_milli() {
        let parsed: v1alpha1::TrafficSplitSpec = serde_json::from_value(json!({
            "service": "web",
            "backends": [{"service": "a", "weight": "1"}, {"service": "b", "weight": "500m"}]
        }))
        .unwrap();
        let milli: Vec<_> = parsed.backends.iter().map(v1alpha1_weight_milli).collect();
        assert_eq!(milli, vec![Some(1000), Some(500)], "1 is twice 500m, not half");
        let bad = v1alpha1::TrafficSplitBackend { service: "x".into(), weight: Quantity("lots".into()) };
        assert_eq!(v1alpha1_weight_milli(&bad), None);
    }

    #[test]
    fn later_versions_use_integer_weights_and_write_zero() {
        let spec = v1alpha2::TrafficSplitSpec {
            service: "web".into(),
            backends: vec![
                v1alpha2::TrafficSplitBackend { service: "web-primary".into(), weight: 100 },
                v1alpha2::TrafficSplitBackend { service: "web-canary".into(), weight: 0 },
            ],
        };
        let value = serde_json::to_value(v1alpha2::TrafficSplit::new("web", spec.clone())).unwrap();
        assert_eq!(value["apiVersion"], "split.smi-spec.io/v1alpha2");
        assert_eq!(value["spec"]["backends"][1]["weight"], 0);

        let v3 = v1alpha3::TrafficSplit::new(
            "web",
            v1alpha3::TrafficSplitSpec {
                service: spec.service.clone(),
                backends: spec.backends.clone(),
                matches: None,
            },
        );
        let value = serde_json::to_value(&v3).unwrap();
        assert_eq!(value["apiVersion"], "split.smi-spec.io/v1alpha3");
        assert!(value["spec"].get("matches").is_none());

        let v4: v1alpha4::TrafficSplit = serde_json::from_value(json!({
            "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
            "metadata": {"name": "web"},
            "spec": {"service": "web", "backends": [{"service": "a", "weight": 90}, {"service": "b", "weight": 10}],
                     "matches": [{"kind": "HTTPRouteGroup", "name": "api"}]}
        }))
        .unwrap();
        assert_eq!(v4.spec.backends[1].weight, 10);
        assert_eq!(v4.spec.matches.unwrap()[0].kind, "HTTPRouteGroup");
    }

    #[test]
    fn integer_versions_refuse_quantity_weights() {
        let err = serde_json::from_value::<v1alpha2::TrafficSplitSpec>(json!({
            "service": "web", "backends": [{"service": "a", "weight": "500m"}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }
}
