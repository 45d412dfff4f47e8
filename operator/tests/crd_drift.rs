//! The committed CRD under `crds/` must match the Rust types.

#[test]
fn committed_crd_matches_the_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join(serin::crdgen::ROLLOUT_CRD_PATH);
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let generated = serin::crdgen::rollout_crd_yaml().unwrap();
    assert!(
        committed == generated,
        "{} is out of date with the Rust types; regenerate it with\n  \
         cargo run -p serin --bin serin -- crd > {}",
        serin::crdgen::ROLLOUT_CRD_PATH,
        serin::crdgen::ROLLOUT_CRD_PATH
    );
}

#[test]
fn committed_crd_parses_as_a_crd_with_status_and_columns() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(serin::crdgen::ROLLOUT_CRD_PATH)).unwrap();
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_saphyr::from_str(&text).unwrap();
    assert_eq!(crd.metadata.name.as_deref(), Some("rollouts.serin.dev"));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
    let columns: Vec<_> =
        version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    for want in ["Phase", "Weight", "Step", "Age"] {
        assert!(columns.contains(&want), "printer column {want} missing from {columns:?}");
    }
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["srl".to_string()][..]));
    assert_eq!(crd.spec.names.categories.as_deref(), Some(&["serin".to_string()][..]));
}

#[test]
fn the_helm_charts_crd_is_the_committed_crd() {
    // Helm installs charts/serin/crds/ as is; it must be the same file as crds/.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chart_copy = "charts/serin/crds/rollouts.serin.dev.yaml";
    let committed = std::fs::read_to_string(root.join(serin::crdgen::ROLLOUT_CRD_PATH)).unwrap();
    let in_chart = std::fs::read_to_string(root.join(chart_copy))
        .unwrap_or_else(|e| panic!("cannot read {chart_copy}: {e}"));
    assert!(
        in_chart == committed,
        "{chart_copy} differs from {}; copy it over:\n  cp {} {chart_copy}",
        serin::crdgen::ROLLOUT_CRD_PATH,
        serin::crdgen::ROLLOUT_CRD_PATH
    );
}
