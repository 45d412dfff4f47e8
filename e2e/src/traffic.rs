//! Real traffic for stories that need measured gate values: two demo apps standing in for the
//! primary's and the canary's pods, the mesh stand-in sending requests by the TrafficSplit `web`
//! (counting them the way Linkerd's proxy does), and a real Prometheus scraping the mesh.
//!
//! The tools are binaries of this crate: integration tests pass their paths,
//! `env!("CARGO_BIN_EXE_serin-demo-app")` and `env!("CARGO_BIN_EXE_serin-mesh")`.

use std::path::Path;

use crate::kubeconfig;
use crate::mesh::process::Spawned;
use crate::prometheus::Prometheus;

/// The binaries of the traffic tools.
#[derive(Clone, Copy, Debug)]
pub struct Tools<'a> {
    pub demo_app: &'a Path,
    pub mesh: &'a Path,
}

/// How the canary's demo app behaves.
#[derive(Clone, Copy, Debug)]
pub struct Canary {
    /// Share of requests that fail, 0–1.
    pub error_rate: f64,
    /// Added latency.
    pub latency_ms: u64,
}

/// The running traffic. Fields drop in order: Prometheus, the mesh, then the apps.
pub struct Traffic {
    /// Scrapes the mesh every second; `None` once a story stopped it.
    pub prometheus: Option<Prometheus>,
    /// Its address, for `analysis.source.prometheus.address`.
    pub prometheus_url: String,
    /// The mesh stand-in; `None` with no traffic.
    pub mesh: Option<Spawned>,
    /// The primary's and the canary's demo apps.
    pub apps: Vec<Spawned>,
}

impl Traffic {
    /// Starts the apps, the mesh sending `rps` requests/s through the TrafficSplit `web` of `ns`
    /// (none when 0), and Prometheus scraping the mesh (or, with no mesh, an app that exposes no
    /// mesh metrics: no traffic data).
    pub async fn start(tools: Tools<'_>, ns: &str, canary: Canary, rps: u32) -> Traffic {
        let primary = Spawned::start(
            tools.demo_app,
            &["--version", "v1", "--error-rate", "0", "--latency-ms", "5", "--latency-jitter-ms", "2"]
                .map(String::from),
            "LISTENING",
        );
        let canary_app = Spawned::start(
            tools.demo_app,
            &[
                "--version".to_string(),
                "v2".to_string(),
                "--error-rate".to_string(),
                canary.error_rate.to_string(),
                "--latency-ms".to_string(),
                canary.latency_ms.to_string(),
                "--latency-jitter-ms".to_string(),
                "2".to_string(),
            ],
            "LISTENING",
        );
        let mesh = (rps > 0).then(|| {
            Spawned::start(
                tools.mesh,
                &[
                    "--kubeconfig".to_string(),
                    kubeconfig().display().to_string(),
                    "--namespace".to_string(),
                    ns.to_string(),
                    "--trafficsplit".to_string(),
                    "web".to_string(),
                    "--backend".to_string(),
                    format!("web-primary={}", primary.addr()),
                    "--backend".to_string(),
                    format!("web-canary={}", canary_app.addr()),
                    "--workload".to_string(),
                    "web-primary=web-primary".to_string(),
                    "--workload".to_string(),
                    "web-canary=web".to_string(),
                    "--rps".to_string(),
                    rps.to_string(),
                ],
                "METRICS",
            )
        });
        let targets: Vec<String> = mesh.iter().map(|m| format!("127.0.0.1:{}", m.port)).collect();
        let targets = if targets.is_empty() { vec![primary.addr()] } else { targets };
        let prometheus = Prometheus::start(&targets).await;
        Traffic {
            prometheus_url: prometheus.url(),
            prometheus: Some(prometheus),
            mesh,
            apps: vec![primary, canary_app],
        }
    }

    /// `analysis` with every `PROMETHEUS_URL` placeholder replaced by this Prometheus's address.
    pub fn with_address(&self, analysis: &serde_json::Value) -> serde_json::Value {
        serde_json::from_str(&analysis.to_string().replace("PROMETHEUS_URL", &self.prometheus_url))
            .expect("the analysis stays JSON")
    }
}
