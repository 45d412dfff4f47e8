//! The SMI Traffic Metrics server, end to end: a real Prometheus scrapes Linkerd-proxy-style
//! counters that this test serves and increments at known rates; `serin-metrics-adapter` reads
//! them with the Linkerd query set; kube-apiserver proxies `metrics.smi-spec.io/v1alpha1` to
//! it through the APIService. Read with `kubectl get --raw`, with kube's client, and with the
//! operator's own Traffic Metrics reader.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use serde_json::Value;
use serin::metrics::traffic_metrics::{TrafficMetricsApi, workload_metrics};
use serin::smi::metrics::{TrafficMetrics, TrafficMetricsList};
use serin_e2e::adapter::{Adapter, CertPair, register};
use serin_e2e::prometheus::Prometheus;
use serin_e2e::{client, kubeconfig, namespace};

const BASE: &str = "/apis/metrics.smi-spec.io/v1alpha1";
/// The window the test asks for; the exporter runs at least this long before the reads.
const WINDOW: Duration = Duration::from_secs(10);
/// Requests per second the exporter counts.
const WEB_SUCCESS_PER_S: f64 = 10.0;
const WEB_FAILURE_PER_S: f64 = 1.0;
const API_SUCCESS_PER_S: f64 = 5.0;

/// Linkerd's proxy metrics for three workloads: `web` and `api` serve (inbound), `loadgen`
/// calls `web` (outbound). Every request takes 30 ms: inside the (10, 50] bucket, so
/// `histogram_quantile(q)` interpolates to exactly 10 + 40·q ms.
#[derive(Default)]
struct Exporter {
    counters: BTreeMap<String, f64>,
}

const BUCKETS: [&str; 4] = ["10", "50", "100", "+Inf"];

impl Exporter {
    fn add(&mut self, series: String) {
        *self.counters.entry(series).or_default() += 1.0;
    }

    /// One request: its count, and its 30 ms latency in every bucket from 50 up.
    fn request(&mut self, labels: &str, classification: &str, status: u16) {
        self.add(format!(
            "response_total{{{labels},classification=\"{classification}\",status_code=\"{status}\"}}"
        ));
        for le in BUCKETS {
            let key = format!("response_latency_ms_bucket{{{labels},le=\"{le}\"}}");
            if le == "10" {
                self.counters.entry(key).or_default();
            } else {
                self.add(key);
            }
        }
    }

    fn render(&self) -> String {
        let mut out = String::from("# TYPE response_total counter\n# TYPE response_latency_ms histogram\n");
        for (series, value) in &self.counters {
            out.push_str(&format!("{series} {value}\n"));
        }
        out
    }
}

/// Serves the exporter on a free loopback port and increments it every 100 ms: `web` 10
/// successes and 1 failure per second (and `loadgen`'s outbound view of the same), `api` 5
/// successes per second and no failures.
async fn start_exporter(ns: &str) -> u16 {
    let exporter = Arc::new(Mutex::new(Exporter::default()));
    let web_in = format!(r#"direction="inbound",namespace="{ns}",deployment="web",pod="web-0""#);
    let api_in = format!(r#"direction="inbound",namespace="{ns}",deployment="api",pod="api-0""#);
    let web_out = format!(
        r#"direction="outbound",namespace="{ns}",deployment="loadgen",pod="loadgen-0",dst_namespace="{ns}",dst_deployment="web",dst_pod="web-0""#
    );
    let ticker = exporter.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        for tick in 0u64.. {
            interval.tick().await;
            let mut e = ticker.lock().unwrap();
            e.request(&web_in, "success", 200);
            e.request(&web_out, "success", 200);
            if tick % 10 == 0 {
                e.request(&web_in, "failure", 500);
                e.request(&web_out, "failure", 500);
            }
            if tick % 2 == 0 {
                e.request(&api_in, "success", 200);
            }
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let exporter = exporter.clone();
            async move { exporter.lock().unwrap().render() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// `kubectl get --raw <path>`: the parsed body, or kubectl's stderr.
fn kubectl_raw(path: &str) -> Result<Value, String> {
    let out = Command::new("kubectl")
        .args(["get", "--raw", path])
        .env("KUBECONFIG", kubeconfig())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: {e}")))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn kube_get<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> Result<T, kube::Error> {
    client.request::<T>(http::Request::get(path).body(Vec::new()).unwrap()).await
}

/// The value of a metric as a number.
fn value(tm: &Value, name: &str) -> f64 {
    let metric = tm["metrics"].as_array().unwrap().iter().find(|m| m["name"] == name);
    let text = metric.unwrap_or_else(|| panic!("no {name} in {tm}"))["value"].as_str().unwrap().to_string();
    serin::quantity::Quantity::parse(&text).unwrap().as_f64()
}

/// `increase()` over a window of one-second scrapes extrapolates to the window's edges; a
/// counter increasing at `rate` reads within ±25% (and ±3) of rate × window.
fn assert_count(tm: &Value, name: &str, rate: f64) {
    let expected = rate * WINDOW.as_secs_f64();
    let got = value(tm, name);
    let tolerance = (expected * 0.25).max(3.0);
    assert!((got - expected).abs() <= tolerance, "{name} = {got}, expected {expected} ± {tolerance} in {tm}");
}

fn assert_latency(tm: &Value) {
    for (name, want) in
        [("p50_response_latency", 30.0), ("p90_response_latency", 46.0), ("p99_response_latency", 49.6)]
    {
        let got = value(tm, name);
        assert!((got - want).abs() < 0.01, "{name} = {got}, want {want}: {tm}");
        let unit =
            tm["metrics"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["unit"].clone();
        assert_eq!(unit, "ms");
    }
}

#[tokio::test]
async fn traffic_metrics_are_served_through_kube_apiserver_from_prometheus() {
    let client = client().await;
    let ns = namespace(&client, "metrics-adapter").await;
    let exporter_port = start_exporter(&ns).await;
    let prometheus = Prometheus::start(&[format!("127.0.0.1:{exporter_port}")]).await;
    let mut adapter = Adapter::start(&ns, &prometheus.url(), "linkerd", &[]).await;
    let registration = register(&client, &adapter).await;

    // Discovery through the aggregator.
    let discovery = kubectl_raw(BASE).unwrap();
    assert_eq!(discovery["kind"], "APIResourceList");
    let names: Vec<&str> =
        discovery["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    for resource in ["namespaces", "deployments", "pods"] {
        assert!(names.contains(&resource), "{discovery}");
    }

    // A full window of data before reading.
    prometheus
        .wait_for_series(&format!(r#"response_total{{namespace="{ns}"}}"#), Duration::from_secs(30))
        .await;
    tokio::time::sleep(WINDOW + Duration::from_secs(2)).await;
    let t = format!("t={}s", WINDOW.as_secs());

    // One deployment, with kubectl.
    let web = kubectl_raw(&format!("{BASE}/namespaces/{ns}/deployments/web?{t}"))
        .unwrap_or_else(|e| panic!("{e}\nadapter log:\n{}", adapter.log_tail()));
    assert_eq!(web["kind"], "TrafficMetrics");
    assert_eq!(web["apiVersion"], "metrics.smi-spec.io/v1alpha1");
    assert_eq!(web["window"], "10s");
    assert_eq!(web["resource"], serde_json::json!({"kind": "Deployment", "namespace": ns, "name": "web"}));
    assert_eq!(web["metadata"]["name"], "web");
    assert_eq!(web["edge"], serde_json::json!({"direction": "from", "resource": null}));
    let timestamp: k8s_openapi::jiff::Timestamp = web["timestamp"].as_str().unwrap().parse().unwrap();
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(timestamp);
    assert!(age.as_secs() < 60, "timestamp {timestamp} is the query time");
    eprintln!("web over {t}: {}", web["metrics"]);
    assert_count(&web, "success_count", WEB_SUCCESS_PER_S);
    assert_count(&web, "failure_count", WEB_FAILURE_PER_S);
    assert_latency(&web);

    // The same with kube's client, and with the operator's reader.
    let typed: TrafficMetrics =
        kube_get(&client, &format!("{BASE}/namespaces/{ns}/deployments/web?{t}")).await.unwrap();
    assert_eq!(typed.window, "10s");
    let reader = TrafficMetricsApi::new(client.clone());
    let read = reader.read(&ns, "web", WINDOW).await.unwrap().expect("metrics for web");
    let gates = workload_metrics(&read).unwrap();
    assert!((gates.success_count - 100.0).abs() <= 25.0, "{gates:?}");
    assert!(gates.latency_ms.len() == 3, "{gates:?}");
    assert_eq!(reader.read(&ns, "nothing-here", WINDOW).await.unwrap(), None, "404 reads as no metrics");

    // The list: one item per workload with inbound traffic; `api` has no failure series.
    let list = kubectl_raw(&format!("{BASE}/namespaces/{ns}/deployments?{t}")).unwrap();
    assert_eq!(list["kind"], "TrafficMetricsList");
    assert_eq!(list["resource"], serde_json::json!({"kind": "Deployment", "namespace": ns}));
    let items = list["items"].as_array().unwrap();
    let listed: Vec<&str> = items.iter().map(|i| i["resource"]["name"].as_str().unwrap()).collect();
    assert_eq!(listed, ["api", "web"], "{list}");
    assert_count(&items[0], "success_count", API_SUCCESS_PER_S);
    assert_eq!(value(&items[0], "failure_count"), 0.0);
    assert_count(&items[1], "success_count", WEB_SUCCESS_PER_S);
    let typed: TrafficMetricsList =
        kube_get(&client, &format!("{BASE}/namespaces/{ns}/deployments?{t}")).await.unwrap();
    assert_eq!(typed.items.len(), 2);

    // A pod and the namespace.
    let pod = kubectl_raw(&format!("{BASE}/namespaces/{ns}/pods/web-0?{t}")).unwrap();
    assert_eq!(pod["resource"], serde_json::json!({"kind": "Pod", "namespace": ns, "name": "web-0"}));
    assert_count(&pod, "success_count", WEB_SUCCESS_PER_S);
    let namespace = kubectl_raw(&format!("{BASE}/namespaces/{ns}?{t}")).unwrap();
    assert_eq!(namespace["resource"], serde_json::json!({"kind": "Namespace", "name": ns}));
    assert_count(&namespace, "success_count", WEB_SUCCESS_PER_S + API_SUCCESS_PER_S);
    let namespaces = kubectl_raw(&format!("{BASE}/namespaces?{t}")).unwrap();
    assert!(
        namespaces["items"].as_array().unwrap().iter().any(|i| i["resource"]["name"] == ns.as_str()),
        "{namespaces}"
    );

    // Edges, both ways.
    let edges = kubectl_raw(&format!("{BASE}/namespaces/{ns}/deployments/web/edges?{t}")).unwrap();
    assert_eq!(edges["kind"], "TrafficMetricsList");
    let items = edges["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{edges}");
    assert_eq!(items[0]["edge"]["direction"], "from");
    assert_eq!(
        items[0]["edge"]["resource"],
        serde_json::json!({"kind": "Deployment", "namespace": ns, "name": "loadgen"})
    );
    assert_eq!(items[0]["resource"]["name"], "web");
    assert_count(&items[0], "success_count", WEB_SUCCESS_PER_S);
    assert_count(&items[0], "failure_count", WEB_FAILURE_PER_S);
    assert_latency(&items[0]);
    let edges = kubectl_raw(&format!("{BASE}/namespaces/{ns}/deployments/loadgen/edges?{t}")).unwrap();
    let items = edges["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{edges}");
    assert_eq!(items[0]["edge"]["direction"], "to");
    assert_eq!(items[0]["edge"]["resource"]["name"], "web");

    // Errors are Kubernetes Status objects, through kubectl and kube's client alike.
    let missing = kubectl_raw(&format!("{BASE}/namespaces/{ns}/deployments/nothing-here")).unwrap_err();
    assert!(missing.contains("NotFound"), "{missing}");
    match kube_get::<TrafficMetrics>(&client, &format!("{BASE}/namespaces/{ns}/deployments/nothing-here"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"), "{status:?}")
        }
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    let bad_window = kubectl_raw(&format!("{BASE}/namespaces/{ns}/deployments/web?t=5x")).unwrap_err();
    assert!(bad_window.contains("BadRequest") && bad_window.contains("5x"), "{bad_window}");
    match kube_get::<TrafficMetrics>(&client, &format!("{BASE}/namespaces/{ns}/deployments/web?t=5x")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"))
        }
        other => panic!("expected a 400 Status, got {other:?}"),
    }
    let unknown = kubectl_raw(&format!("{BASE}/namespaces/{ns}/statefulsets/db")).unwrap_err();
    assert!(unknown.contains("NotFound"), "{unknown}");

    // The adapter logged who asked, as kube-apiserver named them.
    assert!(adapter.log_text().contains("serin-admin"), "{}", adapter.log_tail());

    // Directly, not through kube-apiserver: refused without the front-proxy certificate.
    let path = adapter.url(&format!("{BASE}/namespaces/{ns}/deployments/web"));
    let response =
        adapter.https_client(None).get(&path).header("X-Remote-User", "serin-admin").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let status: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("Unauthorized")));
    // A certificate with the right name from another CA fails the handshake.
    let dir = std::env::temp_dir().join(format!("serin-rogue-{ns}"));
    let rogue = CertPair::ca(&dir, "rogue-ca").sign(
        &dir,
        "rogue-client",
        "/CN=front-proxy-client",
        &["extendedKeyUsage=clientAuth"],
    );
    let refused =
        adapter.https_client(Some(&rogue)).get(&path).header("X-Remote-User", "serin-admin").send().await;
    assert!(refused.is_err(), "a client certificate from another CA was accepted: {refused:?}");
    assert!(adapter.log_text().contains("UnknownIssuer"), "{}", adapter.log_tail());
    let _ = std::fs::remove_dir_all(&dir);
    // The front proxy's certificate, naming a user RBAC does not allow: the SubjectAccessReview says no.
    let front_proxy = adapter.https_client(Some(&CertPair::front_proxy_client()));
    let response = front_proxy.get(&path).header("X-Remote-User", "nobody").send().await.unwrap();
    assert_eq!(response.status(), 403, "{}", response.text().await.unwrap());
    let response = front_proxy
        .get(&path)
        .header("X-Remote-User", "serin-admin")
        .header("X-Remote-Group", "system:masters")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    registration.unregister().await;
    // SIGTERM: a graceful, successful exit.
    let exit = adapter.terminate(Duration::from_secs(15));
    assert!(exit.is_some_and(|s| s.success()), "exit on SIGTERM: {exit:?}\n{}", adapter.log_tail());
    assert!(adapter.log_text().contains("shutting down"), "{}", adapter.log_tail());
}

/// Without `--requestheader-client-ca-file` the adapter reads the front-proxy CA and allowed
/// names from kube-system/extension-apiserver-authentication.
#[tokio::test]
async fn the_front_proxy_ca_comes_from_the_cluster_when_no_flag_names_it() {
    let client = client().await;
    let ns = namespace(&client, "metrics-adapter-cm").await;
    // No Prometheus is needed for discovery; nothing listens on port 1.
    let adapter = Adapter::start_with(&ns, "http://127.0.0.1:1", "istio", &[], false).await;
    let url = adapter.url(BASE);
    let response =
        adapter.https_client(Some(&CertPair::front_proxy_client())).get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", adapter.log_tail());
    let response = adapter.https_client(None).get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(adapter.log_text().contains("configmap"), "{}", adapter.log_tail());
    // Prometheus down: a Status, 503.
    let response = adapter
        .https_client(Some(&CertPair::front_proxy_client()))
        .get(adapter.url(&format!("{BASE}/namespaces/{ns}/deployments/web")))
        .header("X-Remote-User", "serin-admin")
        .header("X-Remote-Group", "system:masters")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let status: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(status["reason"], "ServiceUnavailable");
}

/// `metrics-adapter/deploy/` is what kube-apiserver accepts (server-side dry run; the namespace
/// its objects go in is created for real, as the dry run cannot create it first).
#[tokio::test]
async fn the_deploy_manifests_pass_a_server_side_dry_run() {
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl").args(args).env("KUBECONFIG", kubeconfig()).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubectl {args:?}: {text}");
        text
    };
    let manifests = serin_e2e::repo_root().join("metrics-adapter/deploy");
    let namespace = manifests.join("namespace.yaml");
    kubectl(&[
        "apply",
        "--server-side",
        "--field-manager",
        serin_e2e::MANAGER,
        "-f",
        namespace.to_str().unwrap(),
    ]);
    let out = kubectl(&["apply", "--dry-run=server", "-k", manifests.to_str().unwrap()]);
    for object in [
        "serviceaccount/serin-metrics-adapter",
        "clusterrolebinding.rbac.authorization.k8s.io/serin-metrics-adapter:system:auth-delegator",
        "rolebinding.rbac.authorization.k8s.io/serin-metrics-adapter:extension-apiserver-authentication-reader",
        "clusterrole.rbac.authorization.k8s.io/smi-traffic-metrics-reader",
        "service/serin-metrics-adapter",
        "deployment.apps/serin-metrics-adapter",
        "apiservice.apiregistration.k8s.io/v1alpha1.metrics.smi-spec.io",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
}
