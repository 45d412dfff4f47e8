//! An aggregated API on localhost is reachable through kube-apiserver: an APIService backed by
//! a Service of type ExternalName pointing at `localhost`. This is the path the SMI Traffic
//! Metrics server takes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use serin_e2e::{MANAGER, client, cluster_dir, eventually, kubeconfig, namespace, repo_root};

/// Kills the probe server when the test ends, pass or fail.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl").args(args).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "openssl {args:?} failed");
}

#[tokio::test]
async fn an_apiservice_reaches_a_local_server_through_an_externalname_service() {
    let client = client().await;
    let ns = namespace(&client, "aggregation").await;
    let service_name = "probe";
    let server_name = format!("{service_name}.{ns}.svc");

    // A serving certificate for the name kube-apiserver verifies: <service>.<namespace>.svc.
    let dir = std::env::temp_dir().join(format!("serin-probe-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=probe",
        "-addext",
        &format!("subjectAltName=DNS:{server_name}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);

    let mut child = Command::new("python3")
        .arg(repo_root().join("e2e/fixtures/aggregation/probe-server.py"))
        .args([&cert, &key, &cluster_dir().join("certs/front-proxy-ca.crt")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first_line).unwrap();
    let _server = Server(child);
    let port: i32 = first_line.trim().strip_prefix("LISTENING ").unwrap().parse().unwrap();

    let apply = PatchParams::apply(MANAGER).force();
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": service_name},
        "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": port}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .patch(service_name, &apply, &Patch::Apply(&service))
        .await
        .unwrap();

    let ca_bundle = std::fs::read(&cert).unwrap();
    let apiservice: APIService = serde_json::from_value(json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1.probe.e2e.serin.dev"},
        "spec": {
            "group": "probe.e2e.serin.dev", "version": "v1",
            "groupPriorityMinimum": 1000, "versionPriority": 15,
            "service": {"namespace": ns, "name": service_name, "port": port},
            "caBundle": k8s_openapi::ByteString(ca_bundle)
        }
    }))
    .unwrap();
    let apiservices = Api::<APIService>::all(client.clone());
    apiservices.patch("v1.probe.e2e.serin.dev", &apply, &Patch::Apply(&apiservice)).await.unwrap();

    eventually("APIService v1.probe.e2e.serin.dev to become Available", Duration::from_secs(60), || async {
        let current = apiservices.get("v1.probe.e2e.serin.dev").await.ok()?;
        let available = current.status?.conditions?.into_iter().find(|c| c.type_ == "Available")?;
        (available.status == "True").then_some(())
    })
    .await;

    // The user-facing proof: kubectl answers through kube-apiserver's aggregation layer.
    let path = format!("/apis/probe.e2e.serin.dev/v1/namespaces/{ns}/echoes/hello");
    let output = Command::new("kubectl")
        .args(["get", "--raw", &path])
        .env("KUBECONFIG", kubeconfig())
        .output()
        .unwrap();
    assert!(output.status.success(), "kubectl get --raw failed: {}", String::from_utf8_lossy(&output.stderr));
    let echo: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(echo["kind"], "Echo");
    assert_eq!(echo["metadata"]["name"], "hello");
    assert_eq!(echo["metadata"]["namespace"], ns.as_str());
    // kube-apiserver authenticated the admin and passed the identity on as a front proxy.
    assert_eq!(echo["user"], "serin-admin");
    assert!(echo["groups"].as_array().unwrap().iter().any(|g| g == "system:masters"), "{echo}");

    apiservices.delete("v1.probe.e2e.serin.dev", &DeleteParams::default()).await.unwrap();
}
