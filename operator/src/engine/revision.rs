//! The revision of a pod template: a short, stable hash of its content.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// A 10-hex-digit FNV-1a hash of the template's JSON. Serde serialises struct fields in a fixed
/// order and maps as BTreeMaps, so equal templates always hash alike.
pub fn template_revision(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "web", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn equal_templates_share_a_revision_and_a_change_makes_a_new_one() {
        assert_eq!(template_revision(&template("web:1")), template_revision(&template("web:1")));
        assert_ne!(template_revision(&template("web:1")), template_revision(&template("web:2")));
        assert_eq!(template_revision(&template("web:1")).len(), 10);
    }
}
