//! The local control plane is a real Kubernetes: the real API server at its pinned version,
//! RBAC, an audit log, and Deployments that become Available on kwok's fake Nodes.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use serin_e2e::{audit_log, client, eventually, namespace};

#[tokio::test]
async fn the_api_server_is_the_pinned_kubernetes_release() {
    let client = client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.35.4");
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "35"));
}

#[tokio::test]
async fn kwok_nodes_are_ready() {
    let client = client().await;
    let nodes = Api::<Node>::all(client).list(&ListParams::default()).await.unwrap();
    let ready: Vec<_> = nodes
        .items
        .iter()
        .filter(|n| {
            n.status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .collect();
    assert!(
        !ready.is_empty(),
        "no Ready node among {:?}",
        nodes.items.iter().map(|n| &n.metadata.name).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_deployment_becomes_available_through_kwok() {
    let client = client().await;
    let ns = namespace(&client, "cp-deploy").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}
            }
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &deployment).await.unwrap();

    eventually(
        "Deployment web to become Available with 3 ready replicas",
        Duration::from_secs(120),
        || async {
            let d = api.get("web").await.ok()?;
            let status = d.status?;
            let available = status.conditions?.iter().any(|c| c.type_ == "Available" && c.status == "True");
            (available && status.ready_replicas == Some(3)).then_some(())
        },
    )
    .await;

    let pods =
        Api::<Pod>::namespaced(client, &ns).list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(pods.items.len(), 3);
    for pod in pods.items {
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(pod.spec.unwrap().node_name.is_some(), "the scheduler placed the pod");
    }
}

#[tokio::test]
async fn rbac_is_enforced_and_requests_are_audited() {
    let client = client().await;
    let ns = namespace(&client, "cp-rbac").await;
    // A user with no bindings may not list pods: RBAC is on, not AlwaysAllow.
    let review: k8s_openapi::api::authorization::v1::SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "nobody", "resourceAttributes": {"namespace": ns, "verb": "list", "resource": "pods"}}
    }))
    .unwrap();
    let answer = Api::<k8s_openapi::api::authorization::v1::SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    assert!(!answer.status.unwrap().allowed, "an unbound user must not be allowed");

    // The namespace this test created shows up in the audit log, with the user who made it.
    let log = audit_log();
    let found = eventually("the namespace creation in the audit log", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "namespaces"
                && e["objectRef"]["name"] == ns.as_str()
        })
    })
    .await;
    assert!(found["user"]["username"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(found["stage"], "ResponseComplete");
}

#[tokio::test]
async fn kwok_nodes_heartbeat_through_leases() {
    // Without node leases the node lifecycle controller deems the nodes silent after its grace
    // period and marks every pod NotReady, which would fail any rollout longer than a minute.
    let client = client().await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, "kube-node-lease");
    for node in ["kwok-node-0", "kwok-node-1"] {
        let first = eventually(&format!("a lease for {node}"), Duration::from_secs(30), || async {
            leases.get(node).await.ok()?.spec?.renew_time
        })
        .await;
        eventually(&format!("{node}'s lease to be renewed"), Duration::from_secs(90), || async {
            let renewed = leases.get(node).await.ok()?.spec?.renew_time?;
            (renewed.0 > first.0).then_some(())
        })
        .await;
    }
}
