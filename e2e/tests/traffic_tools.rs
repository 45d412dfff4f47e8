//! The traffic tools: `serin-demo-app` answers real HTTP with the error rate and latency it is
//! given, and `serin-mesh` sends real traffic by a TrafficSplit on the API server and counts it
//! the way Linkerd's proxy does.
//!
//! Assertions compare counts with binomial tolerances (5 standard deviations) and never
//! absolute timings; the only timing assertions are ratios between two instances measured in
//! the same run, and lower bounds that a sleep guarantees.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serin_e2e::mesh::http_client;
use serin_e2e::mesh::process::Spawned;
use serin_e2e::mesh::scrape::Scrape;
use serin_e2e::{client, eventually, install_trafficsplit_crd, kubeconfig, namespace};

const DEMO_APP: &str = env!("CARGO_BIN_EXE_serin-demo-app");
const MESH: &str = env!("CARGO_BIN_EXE_serin-mesh");

fn demo_app(version: &str, error_rate: f64, latency_ms: u64) -> Spawned {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--version",
        version,
        "--error-rate",
        &error_rate.to_string(),
        "--latency-ms",
        &latency_ms.to_string(),
    ];
    Spawned::start(Path::new(DEMO_APP), &strings(&args), "LISTENING")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Whether `observed` successes in `n` trials are within 5 standard deviations of `p`.
fn binomial_ok(observed: f64, n: f64, p: f64) -> bool {
    let sd = (n * p * (1.0 - p)).sqrt();
    (observed - n * p).abs() <= 5.0 * sd.max(0.5)
}

/// Sends `n` GETs to `url`, `concurrency` at a time; returns (status, body, elapsed) each.
async fn hammer(url: &str, n: usize, concurrency: usize) -> Vec<(u16, serde_json::Value, Duration)> {
    let http = http_client(Duration::from_secs(30)).unwrap();
    futures::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            let url = format!("{url}/item/{i}");
            async move {
                let start = Instant::now();
                let response = http.get(&url).send().await.unwrap();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                (status, body, start.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test]
async fn demo_app_fails_at_its_error_rate_and_says_its_version() {
    let app = demo_app("v2", 0.2, 0);
    let n = 2000;
    let answers = hammer(&app.url(), n, 50).await;
    let failures = answers.iter().filter(|(status, _, _)| *status == 500).count();
    assert!(answers.iter().all(|(s, _, _)| *s == 200 || *s == 500));
    assert!(
        binomial_ok(failures as f64, n as f64, 0.2),
        "{failures} of {n} failed; expected about {}",
        n / 5
    );
    for (status, body, _) in &answers {
        assert_eq!(body["version"], "v2");
        assert_eq!(body["status"], *status);
    }

    // Any method and path is the app; PUT /config changes the behaviour at run time.
    let http = http_client(Duration::from_secs(30)).unwrap();
    let config: serde_json::Value = http
        .put(format!("{}/config", app.url()))
        .json(&serde_json::json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config, serde_json::json!({"error_rate": 1.0, "latency_ms": 0, "latency_jitter_ms": 0}));
    let answers = hammer(&app.url(), 200, 20).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 500), "error rate 1 fails every request");
    let post = http.post(format!("{}/anything", app.url())).send().await.unwrap();
    assert_eq!(post.status(), 500);
    let bad = http
        .put(format!("{}/config", app.url()))
        .json(&serde_json::json!({"error_rate": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let never = demo_app("v1", 0.0, 0);
    let answers = hammer(&never.url(), 500, 50).await;
    assert!(answers.iter().all(|(status, body, _)| *status == 200 && body["version"] == "v1"));
}

#[tokio::test]
async fn demo_app_adds_its_latency_and_serves_hundreds_at_once() {
    let fast = demo_app("v1", 0.0, 0);
    let slow = demo_app("v2", 0.0, 50);
    // Interleaved, one at a time, so both see the same machine load.
    let http = http_client(Duration::from_secs(30)).unwrap();
    let (mut fast_times, mut slow_times) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        for (app, times) in [(&fast, &mut fast_times), (&slow, &mut slow_times)] {
            let start = Instant::now();
            let response = http.get(app.url()).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
            times.push(start.elapsed());
        }
    }
    fast_times.sort();
    slow_times.sort();
    let (fast_median, slow_median) = (fast_times[10], slow_times[10]);
    assert!(slow_times[0] >= Duration::from_millis(50), "a 50 ms app never answers sooner: {slow_times:?}");
    assert!(
        slow_median > fast_median * 3,
        "the 50 ms app's median {slow_median:?} is not well above the 0 ms app's {fast_median:?}"
    );

    // 250 requests at once to a 200 ms app overlap: serially they would take 50 s.
    let held = demo_app("v3", 0.0, 200);
    let start = Instant::now();
    let answers = hammer(&held.url(), 250, 250).await;
    let elapsed = start.elapsed();
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    let serial = Duration::from_millis(200) * 250;
    assert!(elapsed < serial / 10, "250 concurrent requests took {elapsed:?}, serial would be {serial:?}");
}

#[test]
fn bad_flags_are_one_line_errors() {
    let run = |exe: &str, args: &[&str]| {
        let out = std::process::Command::new(exe).args(args).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (out.status.code(), stderr)
    };
    let cases: [(&str, &[&str], &str); 6] = [
        (DEMO_APP, &["--version", "v1", "--error-rate", "1.5"], "not a rate between 0 and 1"),
        (DEMO_APP, &["--error-rate", "0.1"], "--version"),
        (DEMO_APP, &["--version", "v1", "--bogus"], "--bogus"),
        (MESH, &["--namespace", "ns", "--trafficsplit", "web", "--backend", "web=10.1.2.3:80"], "loopback"),
        (MESH, &["--namespace", "ns", "--trafficsplit", "web"], "--backend"),
        (
            MESH,
            &[
                "--namespace",
                "ns",
                "--trafficsplit",
                "web",
                "--backend",
                "a=127.0.0.1:9",
                "--workload",
                "b=x",
            ],
            "names no --backend b",
        ),
    ];
    for (exe, args, needle) in cases {
        let (code, stderr) = run(exe, args);
        assert!(code.is_some_and(|c| c != 0), "{exe} {args:?} exited {code:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{exe} {args:?}: not one line: {stderr:?}");
        assert!(stderr.contains(needle), "{exe} {args:?}: {stderr:?} does not mention {needle:?}");
    }
    let (code, stderr) = run(MESH, &["--help"]);
    assert_eq!(code, Some(0), "{stderr}");
}

fn split_api(client: &kube::Client, ns: &str, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("split.smi-spec.io", version, "TrafficSplit");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn trafficsplit(version: &str, primary: serde_json::Value, canary: serde_json::Value) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": format!("split.smi-spec.io/{version}"), "kind": "TrafficSplit",
        "metadata": {"name": "web"},
        "spec": {"service": "web", "backends": [
            {"service": "web-primary", "weight": primary},
            {"service": "web-canary", "weight": canary},
        ]}
    }))
    .unwrap()
}

fn mesh(ns: &str, primary: &Spawned, canary: &Spawned, rps: u32, extra: &[&str]) -> Spawned {
    let mut args = strings(&[
        "--kubeconfig",
        &kubeconfig().display().to_string(),
        "--namespace",
        ns,
        "--trafficsplit",
        "web",
        "--backend",
        &format!("web-primary={}", primary.addr()),
        "--backend",
        &format!("web-canary={}", canary.addr()),
        "--workload",
        "web-primary=web-primary",
        "--workload",
        "web-canary=web",
        "--rps",
        &rps.to_string(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    args.extend(strings(extra));
    Spawned::start(Path::new(MESH), &args, "METRICS")
}

async fn scrape(mesh: &Spawned) -> Scrape {
    let http = http_client(Duration::from_secs(10)).unwrap();
    Scrape::fetch(&http, mesh.port).await.unwrap_or_else(|e| panic!("{e}; mesh log:\n{}", mesh.log_tail()))
}

/// Counts in one scrape, for one namespace.
struct Counts<'a>(&'a Scrape, &'a str);

impl Counts<'_> {
    fn inbound(&self, deployment: &str) -> f64 {
        let m = [("direction", "inbound"), ("namespace", self.1), ("deployment", deployment)];
        self.0.sum("response_total", &m)
    }
    fn inbound_failures(&self, deployment: &str) -> f64 {
        let m = [
            ("direction", "inbound"),
            ("namespace", self.1),
            ("deployment", deployment),
            ("classification", "failure"),
        ];
        self.0.sum("response_total", &m)
    }
    fn outbound(&self, dst: &str) -> f64 {
        let m = [
            ("direction", "outbound"),
            ("namespace", self.1),
            ("deployment", "loadgen"),
            ("dst_namespace", self.1),
            ("dst_deployment", dst),
        ];
        self.0.sum("response_total", &m)
    }
}

#[tokio::test]
async fn mesh_splits_real_traffic_by_the_trafficsplit_and_counts_it_like_linkerd() {
    let client = client().await;
    install_trafficsplit_crd(&client).await;
    let ns = namespace(&client, "traffic-mesh").await;
    split_api(&client, &ns, "v1alpha2")
        .create(&PostParams::default(), &trafficsplit("v1alpha2", 80.into(), 20.into()))
        .await
        .unwrap();
    let primary = demo_app("v1", 0.0, 0);
    let canary = demo_app("v2", 1.0, 0);
    let mesh = mesh(&ns, &primary, &canary, 400, &[]);

    // Phase 1: 80/20, until at least 2000 requests were answered.
    let s = eventually("2000 requests through the mesh", Duration::from_secs(120), || async {
        let s = scrape(&mesh).await;
        let c = Counts(&s, &ns);
        (c.inbound("web-primary") + c.inbound("web") >= 2000.0).then_some(s)
    })
    .await;
    let c = Counts(&s, &ns);
    let (to_primary, to_canary) = (c.inbound("web-primary"), c.inbound("web"));
    let n = to_primary + to_canary;
    assert!(
        binomial_ok(to_canary, n, 0.2),
        "canary got {to_canary} of {n} requests, expected about 20%; mesh log:\n{}",
        mesh.log_tail()
    );
    assert_eq!(c.inbound_failures("web-primary"), 0.0, "the healthy primary never fails");
    assert_eq!(c.inbound_failures("web"), to_canary, "the canary fails every request");
    assert!(to_primary > 0.0);
    // No transport errors on loopback: outbound sees what inbound saw.
    assert_eq!(c.outbound("web-primary"), to_primary);
    assert_eq!(c.outbound("web"), to_canary);
    let outbound_failures = [
        ("direction", "outbound"),
        ("dst_deployment", "web"),
        ("classification", "failure"),
        ("status_code", "500"),
    ];
    assert_eq!(s.sum("response_total", &outbound_failures), to_canary);

    // Histograms count exactly what response_total counts, per side and workload.
    for (direction, key, deployment) in [
        ("inbound", "deployment", "web-primary"),
        ("inbound", "deployment", "web"),
        ("outbound", "dst_deployment", "web-primary"),
        ("outbound", "dst_deployment", "web"),
    ] {
        let m = [("direction", direction), ("namespace", ns.as_str()), (key, deployment)];
        let total = s.sum("response_total", &m);
        assert_eq!(s.sum("response_latency_ms_count", &m), total, "{direction} {deployment}");
        let inf = [("direction", direction), (key, deployment), ("le", "+Inf")];
        assert_eq!(s.sum("response_latency_ms_bucket", &inf), total, "{direction} {deployment}");
        assert!(s.sum("response_latency_ms_sum", &m) > 0.0);
        let buckets = s
            .samples("response_latency_ms_bucket")
            .filter(|x| x.labels["direction"] == direction && x.labels[key] == deployment)
            .count();
        assert_eq!(buckets, 26, "Linkerd's 25 bounds and +Inf");
    }

    // Labels exactly as Linkerd's proxy names them.
    let keys_of = |name: &str, direction: &str| -> Vec<String> {
        let mut keys: Vec<String> = s
            .samples(name)
            .filter(|x| x.labels.get("direction").map(String::as_str) == Some(direction))
            .flat_map(|x| x.labels.keys().cloned().collect::<Vec<_>>())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    };
    assert_eq!(
        keys_of("response_total", "inbound"),
        ["classification", "deployment", "direction", "namespace", "status_code"]
    );
    assert_eq!(
        keys_of("response_total", "outbound"),
        [
            "classification",
            "deployment",
            "direction",
            "dst_deployment",
            "dst_namespace",
            "namespace",
            "status_code"
        ]
    );
    assert_eq!(
        keys_of("response_latency_ms_bucket", "inbound"),
        ["deployment", "direction", "le", "namespace"]
    );
    assert_eq!(
        keys_of("response_latency_ms_bucket", "outbound"),
        ["deployment", "direction", "dst_deployment", "dst_namespace", "le", "namespace"]
    );
    assert!(s.samples("response_total").all(|x| x.labels["namespace"] == ns));

    // Phase 2: all to the canary, written through v1alpha1 as quantities.
    let patch = serde_json::json!({"spec": {"service": "web", "backends": [
        {"service": "web-primary", "weight": "0"},
        {"service": "web-canary", "weight": "1"},
    ]}});
    split_api(&client, &ns, "v1alpha1")
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let switched = eventually("the mesh to route 0/1000", Duration::from_secs(60), || async {
        let s = scrape(&mesh).await;
        let primary = s.sum("serin_mesh_backend_weight_milli", &[("service", "web-primary")]);
        let canary = s.sum("serin_mesh_backend_weight_milli", &[("service", "web-canary")]);
        (primary == 0.0 && canary == 1000.0).then_some(s)
    })
    .await;
    let before = Counts(&switched, &ns);
    let in_flight = switched.sum("serin_mesh_in_flight", &[]);
    let after = eventually("500 more requests to the canary", Duration::from_secs(120), || async {
        let s = scrape(&mesh).await;
        (Counts(&s, &ns).inbound("web") >= before.inbound("web") + 500.0).then_some(s)
    })
    .await;
    let after_c = Counts(&after, &ns);
    let primary_delta = after_c.inbound("web-primary") - before.inbound("web-primary");
    assert!(
        primary_delta <= in_flight,
        "{primary_delta} requests reached the primary after the switch; only {in_flight} were in flight"
    );
    assert!(after_c.inbound_failures("web") - before.inbound_failures("web") >= 500.0);
    assert_eq!(after_c.inbound_failures("web-primary"), 0.0);
}

#[tokio::test]
async fn mesh_sends_nothing_without_a_trafficsplit_and_stops_after_its_duration() {
    let client = client().await;
    install_trafficsplit_crd(&client).await;
    let ns = namespace(&client, "traffic-none").await;
    let primary = demo_app("v1", 0.0, 0);
    let canary = demo_app("v2", 0.0, 0);
    let mut mesh = mesh(&ns, &primary, &canary, 200, &["--duration", "8s", "--arrivals", "uniform"]);

    let s = eventually("arrivals to be skipped", Duration::from_secs(60), || async {
        let s = scrape(&mesh).await;
        (s.sum("serin_mesh_skipped_total", &[("reason", "no-trafficsplit")]) >= 100.0).then_some(s)
    })
    .await;
    assert_eq!(s.samples("response_total").count(), 0, "no request without a TrafficSplit");
    assert_eq!(s.samples("serin_mesh_backend_weight_milli").count(), 0);

    // A split naming a Service the mesh has no address for: that share is not sent.
    let ts = serde_json::from_value::<DynamicObject>(serde_json::json!({
        "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
        "metadata": {"name": "web"},
        "spec": {"service": "web", "backends": [
            {"service": "web-primary", "weight": 50},
            {"service": "web-elsewhere", "weight": 50},
        ]}
    }))
    .unwrap();
    split_api(&client, &ns, "v1alpha4").create(&PostParams::default(), &ts).await.unwrap();
    let s = eventually("requests to the known backend", Duration::from_secs(60), || async {
        let s = scrape(&mesh).await;
        (Counts(&s, &ns).inbound("web-primary") >= 100.0
            && s.sum("serin_mesh_skipped_total", &[("reason", "unknown-backend")]) >= 1.0)
            .then_some(s)
    })
    .await;
    assert_eq!(Counts(&s, &ns).inbound("web"), 0.0, "web-canary is not in the split");

    let status = eventually("the mesh to stop after --duration", Duration::from_secs(60), || {
        let status = mesh.try_wait();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status}; log:\n{}", mesh.log_tail());
}
