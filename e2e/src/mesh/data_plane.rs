//! `serin-mesh`: the mesh data plane stand-in.
//!
//! ```text
//! serin-mesh --kubeconfig PATH --namespace NS --trafficsplit web \
//!   --backend web-primary=127.0.0.1:PORT1 --backend web-canary=127.0.0.1:PORT2 \
//!   --workload web-primary=web-primary --workload web-canary=web \
//!   --rps 50 --metrics-listen 127.0.0.1:0 [--client-deployment loadgen] [--duration 2m]
//! ```
//!
//! It watches the TrafficSplit `NS/NAME` in the newest version of `split.smi-spec.io` the API
//! server serves (v1alpha1 quantity weights and later integer weights alike, normalised to
//! shares), and sends real HTTP `GET`s at `--rps` to the backends given with `--backend`,
//! choosing each request's backend Service at random by the weights. Arrivals are open-loop
//! (Poisson by default, `--arrivals uniform` for even spacing): a slow backend does not slow
//! the sender. At most `--max-in-flight` requests are outstanding, each bounded by `--timeout`.
//!
//! - No TrafficSplit yet (or it was deleted, or its weights do not parse or sum to 0): nothing
//!   is sent, the arrivals are counted as `serin_mesh_skipped_total{reason="no-trafficsplit"}`.
//!   Traffic starts with the first TrafficSplit; no request is sent under weights nobody wrote.
//! - A backend Service of the TrafficSplit that has no `--backend`: its share of the arrivals
//!   is not sent (`reason="unknown-backend"`), so the other backends still get their share of
//!   `--rps`, not more.
//! - Requests go only to the loopback addresses given with `--backend`; anything else is
//!   refused at start.
//!
//! Metrics on `http://<metrics-listen>/metrics`, named and labelled as Linkerd's proxy does:
//! see [`super::metrics`]. `--workload SERVICE=DEPLOYMENT` names the deployment behind a
//! backend Service (default: the Service's own name). The first line on stdout is
//! `METRICS <port>`, once the metrics endpoint accepts connections; logs go to stderr.
//!
//! It runs until killed, or for `--duration` and then exits 0 after the requests in flight
//! have finished.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serin::api::SmiVersion;
use serin::traffic::TrafficRouter;
use serin::traffic::smi::{SmiTrafficSplit, choose_version, served_versions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::cli;
use super::demo_app::println_flush;
use super::metrics::{MeshMetrics, Outcome};

const PROGRAM: &str = "serin-mesh";

/// How arrivals are spaced.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrivals {
    /// Exponential gaps with mean 1/rps.
    Poisson,
    /// Gaps of exactly 1/rps.
    Uniform,
}

/// Command line of `serin-mesh`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "serin-mesh",
    about = "Sends real HTTP traffic to loopback backends by an SMI TrafficSplit and exposes Linkerd-style metrics"
)]
pub struct Args {
    /// Kubeconfig to watch the TrafficSplit with; default: KUBECONFIG or in-cluster.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the TrafficSplit, and of every workload in the metrics.
    #[arg(long)]
    pub namespace: String,
    /// Name of the TrafficSplit to route by.
    #[arg(long)]
    pub trafficsplit: String,
    /// A backend Service and the loopback address serving it; repeat per backend.
    #[arg(long = "backend", value_name = "SERVICE=IP:PORT", required = true, value_parser = cli::parse_backend)]
    pub backends: Vec<(String, SocketAddr)>,
    /// The deployment a backend Service selects, for the metrics' labels; default: the
    /// Service's name.
    #[arg(long = "workload", value_name = "SERVICE=DEPLOYMENT", value_parser = cli::parse_pair)]
    pub workloads: Vec<(String, String)>,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 50.0, value_parser = cli::parse_rps)]
    pub rps: f64,
    /// Where to serve /metrics; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_listen: SocketAddr,
    /// The client deployment the outbound metrics are reported for.
    #[arg(long, default_value = "loadgen")]
    pub client_deployment: String,
    /// Stop after this long (e.g. 30s, 2m); default: run until killed.
    #[arg(long, value_parser = cli::parse_duration)]
    pub duration: Option<Duration>,
    /// Per-request timeout; a request that takes longer counts as a failure (status 504).
    #[arg(long, default_value = "5s", value_parser = cli::parse_duration)]
    pub timeout: Duration,
    /// At most this many requests outstanding; arrivals beyond it are skipped (overload).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,
    /// How arrivals are spaced.
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    pub arrivals: Arrivals,
    /// The path requested from the backends.
    #[arg(long, default_value = "/")]
    pub path: String,
}

/// A backend Service: where it is served and the deployment it reports as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub url: String,
    pub deployment: String,
}

/// Checks what clap cannot: backends named once, workloads only for backends, a path.
pub fn backends(args: &Args) -> Result<BTreeMap<String, Backend>, String> {
    let mut out = BTreeMap::new();
    if !args.path.starts_with('/') {
        return Err(format!("--path {:?} must start with /", args.path));
    }
    for (service, addr) in &args.backends {
        let backend = Backend { url: format!("http://{addr}{}", args.path), deployment: service.clone() };
        if out.insert(service.clone(), backend).is_some() {
            return Err(format!("--backend {service} is given twice"));
        }
    }
    let mut named = BTreeMap::new();
    for (service, deployment) in &args.workloads {
        let Some(backend) = out.get_mut(service) else {
            return Err(format!("--workload {service}={deployment} names no --backend {service}"));
        };
        if named.insert(service, deployment).is_some() {
            return Err(format!("--workload {service} is given twice"));
        }
        backend.deployment = deployment.clone();
    }
    Ok(out)
}

/// The shares the mesh routes by: backend Service → thousandths, summing to about 1000.
pub type Split = Vec<(String, i64)>;

/// Picks a backend by weight; `roll` is uniform in `0..total`.
pub fn pick(split: &Split, roll: i64) -> Option<&str> {
    let mut acc = 0;
    for (service, milli) in split {
        acc += milli;
        if roll < acc {
            return Some(service);
        }
    }
    None
}

struct Plane {
    /// The one lock: the current split, held around every metrics update and every scrape.
    split: Mutex<Option<Split>>,
    metrics: MeshMetrics,
    backends: BTreeMap<String, Backend>,
    permits: Arc<Semaphore>,
    client: reqwest::Client,
}

impl Plane {
    fn lock(&self) -> MutexGuard<'_, Option<Split>> {
        self.split.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_split(&self, split: Option<Split>) {
        let mut current = self.lock();
        if *current != split {
            match &split {
                Some(s) => {
                    let shares: Vec<String> = s.iter().map(|(svc, m)| format!("{svc}={m}")).collect();
                    eprintln!("{PROGRAM}: routing by weights (thousandths) {}", shares.join(" "));
                    for (svc, _) in s.iter().filter(|(svc, m)| *m > 0 && !self.backends.contains_key(svc)) {
                        eprintln!("{PROGRAM}: backend {svc} has no --backend; its share is not sent");
                    }
                }
                None => eprintln!("{PROGRAM}: no usable TrafficSplit; sending nothing"),
            }
        }
        self.metrics.set_weights(split.as_deref());
        *current = split;
    }

    /// One arrival: choose a backend by the current weights and send to it.
    fn arrive(self: &Arc<Self>) {
        let (backend, permit) = {
            let split = self.lock();
            let Some(split) = split.as_ref() else {
                self.metrics.skipped("no-trafficsplit");
                return;
            };
            let total: i64 = split.iter().map(|(_, m)| m).sum();
            let roll = rand::random_range(0..total.max(1));
            let Some(backend) = pick(split, roll).and_then(|svc| self.backends.get(svc)) else {
                self.metrics.skipped("unknown-backend");
                return;
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.metrics.skipped("overload");
                return;
            };
            self.metrics.sent();
            (backend.clone(), permit)
        };
        tokio::spawn(self.clone().send(backend, permit));
    }

    async fn send(self: Arc<Self>, backend: Backend, permit: OwnedSemaphorePermit) {
        let start = Instant::now();
        let outcome = match self.client.get(&backend.url).send().await {
            // Read the whole body: the response stream completes then.
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(_) => Outcome::Response(status),
                    Err(e) if e.is_timeout() => Outcome::Timeout,
                    Err(_) => Outcome::TransportError,
                }
            }
            Err(e) if e.is_timeout() => Outcome::Timeout,
            Err(_) => Outcome::TransportError,
        };
        let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        {
            let _consistent = self.lock();
            self.metrics.record(&backend.deployment, outcome, latency_ms);
        }
        drop(permit);
    }

    fn scrape(&self) -> String {
        let _consistent = self.lock();
        self.metrics.encode()
    }
}

async fn metrics_handler(State(plane): State<Arc<Plane>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], plane.scrape())
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| format!("no kubeconfig: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

/// Watches the TrafficSplit and keeps the plane's split current, forever.
async fn watch_split(client: Client, namespace: String, name: String, plane: Arc<Plane>) {
    let mut waiting_logged = false;
    let version = loop {
        match served_versions(&client).await.map(|served| choose_version(SmiVersion::Auto, &served)) {
            Ok(Ok(version)) => break version,
            Ok(Err(e)) if !waiting_logged => eprintln!("{PROGRAM}: waiting: {e}"),
            Err(e) if !waiting_logged => eprintln!("{PROGRAM}: waiting for the API server: {e}"),
            _ => {}
        }
        waiting_logged = true;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let Some(router) = SmiTrafficSplit::new(version) else { return };
    eprintln!("{PROGRAM}: watching TrafficSplit {namespace}/{name} as split.smi-spec.io/{version}");
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &router.api_resource());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listed = false;
    let apply = |object: &DynamicObject| {
        let routing = router.read(object);
        if routing.is_none() {
            eprintln!("{PROGRAM}: TrafficSplit {namespace}/{name} has no usable weights");
        }
        plane.set_split(routing.map(|r| r.backends));
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitApply(object)) | Ok(watcher::Event::Apply(object)) => {
                listed = true;
                apply(&object);
            }
            Ok(watcher::Event::InitDone) if !listed => {
                eprintln!(
                    "{PROGRAM}: TrafficSplit {namespace}/{name} does not exist; sending nothing until it does"
                );
                plane.set_split(None);
            }
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => plane.set_split(None),
            Err(e) => eprintln!("{PROGRAM}: watch: {e}"),
        }
    }
}

/// Runs the data plane: until killed, or for `--duration`.
pub async fn run(args: Args) -> Result<(), String> {
    let backends = backends(&args)?;
    let kube = kube_client(args.kubeconfig.as_ref()).await?;
    let client =
        super::http_client(args.timeout).map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let plane = Arc::new(Plane {
        split: Mutex::new(None),
        metrics: MeshMetrics::new(&args.namespace, &args.client_deployment),
        backends,
        permits: Arc::new(Semaphore::new(args.max_in_flight as usize)),
        client,
    });

    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_listen))?;
    let port = listener.local_addr().map_err(|e| format!("cannot read the listening address: {e}"))?.port();
    let app = Router::new().route("/metrics", get(metrics_handler)).with_state(plane.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println_flush(&format!("METRICS {port}"));

    let watch =
        tokio::spawn(watch_split(kube, args.namespace.clone(), args.trafficsplit.clone(), plane.clone()));

    let start = Instant::now();
    let end = args.duration.map(|d| start + d);
    let mut next = start;
    loop {
        let gap = match args.arrivals {
            // 1 - U is in (0, 1]: its logarithm is finite.
            Arrivals::Poisson => -(1.0 - rand::random::<f64>()).ln() / args.rps,
            Arrivals::Uniform => 1.0 / args.rps,
        };
        next += Duration::from_secs_f64(gap);
        if end.is_some_and(|end| next >= end) {
            break;
        }
        if server.is_finished() {
            return Err("the metrics server stopped".to_string());
        }
        tokio::time::sleep_until(next).await;
        plane.arrive();
    }
    // Let the requests in flight finish (each is bounded by --timeout), then stop.
    let _all = plane.permits.acquire_many(args.max_in_flight).await;
    watch.abort();
    eprintln!("{PROGRAM}: --duration is over; stopping");
    Ok(())
}

/// The binary's `main`.
pub fn main() {
    cli::main::<Args, _, _>(PROGRAM, run);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = ["serin-mesh", "--namespace", "ns", "--trafficsplit", "web"];
        Args::try_parse_from(base.iter().chain(extra))
    }

    #[test]
    fn workloads_name_deployments_of_given_backends() {
        let a =
            args(&["--backend", "web-primary=127.0.0.1:81", "--backend", "web-canary=127.0.0.1:82"]).unwrap();
        let b = backends(&a).unwrap();
        assert_eq!(b["web-canary"].deployment, "web-canary");
        assert_eq!(b["web-canary"].url, "http://127.0.0.1:82/");
        let a = args(&[
            "--backend",
            "web-primary=127.0.0.1:81",
            "--backend",
            "web-canary=127.0.0.1:82",
            "--workload",
            "web-canary=web",
        ])
        .unwrap();
        assert_eq!(backends(&a).unwrap()["web-canary"].deployment, "web");
        let a = args(&["--backend", "a=127.0.0.1:81", "--workload", "b=web"]).unwrap();
        assert_eq!(backends(&a).unwrap_err(), "--workload b=web names no --backend b");
        let a = args(&["--backend", "a=127.0.0.1:81", "--backend", "a=127.0.0.1:82"]).unwrap();
        assert_eq!(backends(&a).unwrap_err(), "--backend a is given twice");
    }

    #[test]
    fn flags_are_checked() {
        assert!(args(&[]).is_err(), "a backend is required");
        let err = args(&["--backend", "a=192.168.1.1:80"]).unwrap_err();
        assert!(cli::one_line(&err).contains("not a loopback address"), "{}", cli::one_line(&err));
        assert!(args(&["--backend", "a=127.0.0.1:80", "--rps", "-1"]).is_err());
        assert!(args(&["--backend", "a=127.0.0.1:80", "--max-in-flight", "0"]).is_err());
        let a = args(&["--backend", "a=127.0.0.1:80", "--duration", "90s", "--arrivals", "uniform"]).unwrap();
        assert_eq!(a.duration, Some(Duration::from_secs(90)));
        assert_eq!(a.arrivals, Arrivals::Uniform);
    }

    #[test]
    fn pick_walks_the_cumulative_weights() {
        let split: Split = vec![("a".into(), 800), ("b".into(), 200), ("c".into(), 0)];
        assert_eq!(pick(&split, 0), Some("a"));
        assert_eq!(pick(&split, 799), Some("a"));
        assert_eq!(pick(&split, 800), Some("b"));
        assert_eq!(pick(&split, 999), Some("b"));
        assert_eq!(pick(&split, 1000), None);
    }
}
