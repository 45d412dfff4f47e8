//! A mesh installs the TrafficSplit CRD; Serin's SMI types are what that CRD accepts, in
//! every version, with zero weights written out.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};
use kube::discovery::Discovery;
use serin::smi::split::{self, v1alpha1, v1alpha2, v1alpha3, v1alpha4};
use serin_e2e::{client, install_trafficsplit_crd, namespace};

#[tokio::test]
async fn the_fixture_crd_serves_every_trafficsplit_version() {
    let client = client().await;
    install_trafficsplit_crd(&client).await;
    let discovery = Discovery::new(client).filter(&[split::GROUP]).run().await.unwrap();
    let group = discovery.get(split::GROUP).expect("split.smi-spec.io is discovered");
    let mut versions: Vec<_> = group.versions().collect();
    versions.sort();
    assert_eq!(versions, split::VERSIONS.to_vec());
}

#[tokio::test]
async fn every_version_accepts_serins_objects_including_zero_weights() {
    let client = client().await;
    install_trafficsplit_crd(&client).await;
    let ns = namespace(&client, "smi-types").await;
    let pp = PostParams::default();

    let api: Api<v1alpha1::TrafficSplit> = Api::namespaced(client.clone(), &ns);
    let ts = v1alpha1::TrafficSplit::new(
        "a1",
        v1alpha1::TrafficSplitSpec {
            service: "web".into(),
            backends: vec![
                v1alpha1::TrafficSplitBackend {
                    service: "web-primary".into(),
                    weight: Quantity("900m".into()),
                },
                v1alpha1::TrafficSplitBackend {
                    service: "web-canary".into(),
                    weight: Quantity("100m".into()),
                },
            ],
        },
    );
    let back = api.create(&pp, &ts).await.unwrap();
    let milli: Vec<_> = back.spec.backends.iter().map(split::v1alpha1_weight_milli).collect();
    assert_eq!(milli, vec![Some(900), Some(100)]);

    let int_backends = vec![
        v1alpha2::TrafficSplitBackend { service: "web-primary".into(), weight: 100 },
        v1alpha2::TrafficSplitBackend { service: "web-canary".into(), weight: 0 },
    ];
    let api: Api<v1alpha2::TrafficSplit> = Api::namespaced(client.clone(), &ns);
    let back = api
        .create(
            &pp,
            &v1alpha2::TrafficSplit::new(
                "a2",
                v1alpha2::TrafficSplitSpec { service: "web".into(), backends: int_backends.clone() },
            ),
        )
        .await
        .unwrap();
    assert_eq!(back.spec.backends, int_backends, "a zero weight survives the round trip");

    let api: Api<v1alpha3::TrafficSplit> = Api::namespaced(client.clone(), &ns);
    let back = api
        .create(
            &pp,
            &v1alpha3::TrafficSplit::new(
                "a3",
                v1alpha3::TrafficSplitSpec {
                    service: "web".into(),
                    backends: int_backends.clone(),
                    matches: None,
                },
            ),
        )
        .await
        .unwrap();
    assert_eq!(back.spec.backends[1].weight, 0);

    let api: Api<v1alpha4::TrafficSplit> = Api::namespaced(client.clone(), &ns);
    let back = api
        .create(
            &pp,
            &v1alpha4::TrafficSplit::new(
                "a4",
                v1alpha4::TrafficSplitSpec {
                    service: "web".into(),
                    backends: int_backends.clone(),
                    matches: Some(vec![split::RouteRef {
                        kind: "HTTPRouteGroup".into(),
                        name: "api".into(),
                        api_group: None,
                    }]),
                },
            ),
        )
        .await
        .unwrap();
    assert_eq!(back.spec.matches.unwrap()[0].name, "api");

    // The CRD refuses a backend without a weight, which is why Serin never omits a zero.
    let raw = serde_json::json!({
        "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit", "metadata": {"name": "bad"},
        "spec": {"service": "web", "backends": [{"service": "web-canary"}]}
    });
    let gvk = kube::core::GroupVersionKind::gvk(split::GROUP, "v1alpha2", "TrafficSplit");
    let dynamic: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client, &ns, &kube::core::ApiResource::from_gvk(&gvk));
    let err = dynamic.create(&pp, &serde_json::from_value(raw).unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("spec.backends[0].weight"), "{err}");
}
