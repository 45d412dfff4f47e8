//! Real traffic and real metrics for a Rollout `web`, for the stories that need gates to
//! measure something: two demo apps standing in for the primary's and the canary's pods, the
//! mesh stand-in sending requests by the TrafficSplit `web`, and a Prometheus scraping it.

use std::path::Path;

use crate::kubeconfig;
use crate::mesh::process::Spawned;
use crate::prometheus::Prometheus;

/// How the canary (the new version) behaves.
#[derive(Clone, Copy, Debug)]
pub struct Canary {
    /// Share of requests answered with a 500.
    pub error_rate: f64,
    /// Added latency.
    pub latency_ms: u64,
}

/// The running traffic. Field order is drop order: Prometheus first, the apps last.
pub struct Traffic {
    /// Prometheus, scraping the mesh (or, with no traffic, an app that exposes no mesh
    /// metrics). `take()` it to stop it mid-story.
    pub prometheus: Option<Prometheus>,
    /// The mesh stand-in, when `rps > 0`.
    pub mesh: Option<Spawned>,
    /// The primary's and the canary's app.
    pub apps: Vec<Spawned>,
}

impl Traffic {
    /// Starts the primary's app (healthy, 5 ms), the canary's app (as `canary` says), the mesh
    /// sending `rps` requests/s by TrafficSplit `web` in `ns` (none when 0), and Prometheus.
    /// `app` and `mesh` are the `serin-demo-app` and `serin-mesh` binaries (integration tests
    /// get them from `env!("CARGO_BIN_EXE_...")`).
    pub async fn start(app: &Path, mesh: &Path, ns: &str, canary: Canary, rps: u32) -> Traffic {
        let primary = Spawned::start(
            app,
            &["--version", "v1", "--error-rate", "0", "--latency-ms", "5", "--latency-jitter-ms", "2"]
                .map(String::from),
            "LISTENING",
        );
        let canary_app = Spawned::start(
            app,
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
                mesh,
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
        Traffic { prometheus: Some(prometheus), mesh, apps: vec![primary, canary_app] }
    }

    /// Prometheus's URL.
    pub fn prometheus_url(&self) -> String {
        self.prometheus.as_ref().map(Prometheus::url).unwrap_or_default()
    }
}
