//! Helpers for Serin's end-to-end tests.
//!
//! Every test runs against the real local control plane that `e2e/cluster up` starts (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler and kwok, all on 127.0.0.1). The
//! first test to ask for a client brings the cluster up; `up` is idempotent, so a cluster that
//! is already running is reused. Tests isolate themselves in namespaces of their own.
//!
//! This crate is test support: a helper that cannot do its job panics with a message that says
//! what failed, which is how a test reports it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

pub mod adapter;
pub mod formats;
pub mod mesh;
pub mod otlp;
pub mod prometheus;
pub mod receiver;
pub mod story;

/// The field manager e2e tests write with.
pub const MANAGER: &str = "serin-e2e";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Brings the local control plane up (once per test binary) and returns the admin kubeconfig.
pub fn kubeconfig() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = repo_root().join("e2e/cluster");
        let out = std::process::Command::new(&script)
            .arg("up")
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "`e2e/cluster up` failed ({}); its log is above", out.status);
        let path = String::from_utf8(out.stdout).unwrap();
        let path = PathBuf::from(path.trim().lines().last().unwrap_or_default());
        assert!(path.is_file(), "`e2e/cluster up` printed {path:?}, which is not a kubeconfig file");
        path
    })
}

/// The cluster's state directory: certificates, logs, and the audit log.
pub fn cluster_dir() -> PathBuf {
    kubeconfig().parent().unwrap().to_path_buf()
}

/// The API server's audit log.
pub fn audit_log() -> PathBuf {
    cluster_dir().join("audit.log")
}

/// A client for the local control plane, as its admin.
pub async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// Creates a namespace with a unique name that starts with `prefix`, and returns its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    name
}

/// Applies a CRD (server-side) and waits until the API server serves it.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(crd)).await.unwrap();
    let established = await_condition(api, &name, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(60), established)
        .await
        .unwrap_or_else(|_| panic!("CRD {name} was not Established within 60s"))
        .unwrap();
}

/// Reads a CRD from a YAML file under the repository root.
pub fn crd_from_file(relative: &str) -> CustomResourceDefinition {
    let path = repo_root().join(relative);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} is not a CRD: {e}", path.display()))
}

/// Installs the committed Rollout CRD, `crds/rollouts.serin.dev.yaml`.
pub async fn install_rollout_crd(client: &Client) {
    apply_crd(client, &crd_from_file(serin::crdgen::ROLLOUT_CRD_PATH)).await;
}

/// Installs the test fixture TrafficSplit CRD, which serves v1alpha1 to v1alpha4.
pub async fn install_trafficsplit_crd(client: &Client) {
    apply_crd(client, &crd_from_file("e2e/fixtures/smi/trafficsplit-crd.yaml")).await;
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Builds a workspace binary with the workspace's cargo and returns its path. Binaries of
/// other packages are not built for this crate's tests, so the tests build them themselves.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(status.success(), "building the {bin} binary failed");
    // Test executables live in <target>/debug/deps; binaries in <target>/debug.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(bin);
    assert!(path.is_file(), "no {bin} binary at {}", path.display());
    path
}

/// The `serin` operator binary, built once per test binary.
pub fn serin_binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| workspace_binary("serin", "serin"))
}

/// The `kubectl-serin` plugin binary, built once per test binary.
pub fn plugin_binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| workspace_binary("serin", "kubectl-serin"))
}

/// Runs `kubectl serin -n <ns> <args>` as the cluster's admin (outside any CI's environment)
/// and returns its exit code and its output, stdout then stderr.
pub async fn kubectl_serin(ns: &str, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(plugin_binary())
        .args(["-n", ns])
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .env_remove("GITHUB_ACTIONS")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Writes a kubeconfig that authenticates as ServiceAccount `ns/name` with a token from the
/// TokenRequest API (valid one hour, like `kubectl create token`), for the local cluster, and
/// returns its path.
pub async fn service_account_kubeconfig(client: &Client, ns: &str, name: &str) -> PathBuf {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for ServiceAccount {ns}/{name}: {e}"));
    let token = answer.status.expect("a TokenRequest answer carries a status").token;
    let admin = Kubeconfig::read_from(kubeconfig()).unwrap();
    let cluster = admin.clusters[0].cluster.clone().expect("the admin kubeconfig names its cluster");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "serin-e2e", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": format!("{ns}-{name}"), "user": {"token": token}}],
        "contexts": [{"name": "serin-e2e", "context": {"cluster": "serin-e2e", "user": format!("{ns}-{name}")}}],
        "current-context": "serin-e2e",
    });
    let path = std::env::temp_dir().join(format!("serin-sa-{ns}-{name}-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// The `helm` binary (Helm v3, pinned by `e2e/tools/helm/go.mod`), built by `e2e/build-tools
/// --helm` on first use (about 2 minutes on 2 cores) and cached under `~/.cache/serin/bin`.
pub fn helm_binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = repo_root().join("e2e/build-tools");
        let out = std::process::Command::new(&script)
            .arg("--helm")
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "`e2e/build-tools --helm` failed ({}); its log is above", out.status);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let path = PathBuf::from(stdout.trim().lines().last().unwrap_or_default());
        assert!(path.is_file(), "`e2e/build-tools --helm` printed {path:?}, which is not a file");
        path
    })
}

/// Runs `helm <args>` with Helm's config, cache and data directories in a temporary directory
/// of this test binary, and returns its output. Commands that talk to a cluster (`install`,
/// `upgrade`, `uninstall`, `status`, `list`, `get`, `history`, `rollback`, `test`) get the
/// local cluster's admin kubeconfig; the others (`lint`, `template`, ...) get none, so they
/// work offline.
pub fn helm(args: &[&str]) -> std::process::Output {
    const ONLINE: [&str; 9] =
        ["install", "upgrade", "uninstall", "status", "list", "get", "history", "rollback", "test"];
    let kubeconfig_path = match args.first() {
        Some(command) if ONLINE.contains(command) => kubeconfig().to_path_buf(),
        _ => PathBuf::from("/nonexistent/kubeconfig"),
    };
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    let home = HOME.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("serin-helm-home-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    std::process::Command::new(helm_binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig_path)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm {args:?}: {e}"))
}

/// The last `lines` lines of a log file, for assertion messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running operator process. Killed when dropped.
pub struct Operator {
    child: std::process::Child,
    /// Where its log goes.
    pub log: PathBuf,
    /// Its `--metrics-addr` port on 127.0.0.1 (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_port: u16,
}

/// How to start an [`Operator`]: [`Operator::start`] is the common case, one namespace as the
/// cluster's admin; [`Operator::start_with`] takes these.
#[derive(Clone, Debug, Default)]
pub struct OperatorOptions {
    /// `--namespace` (comma-joined); all namespaces when empty.
    pub namespaces: Vec<String>,
    /// The identity it runs as; the admin kubeconfig when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// More arguments after `run`.
    pub args: Vec<String>,
    /// More environment variables, e.g. `POD_NAME` (the instance name in Events, the Lease and
    /// the user agent).
    pub env: Vec<(String, String)>,
}

impl OperatorOptions {
    /// One namespace, as the cluster's admin.
    pub fn namespace(ns: &str) -> Self {
        OperatorOptions { namespaces: vec![ns.to_string()], ..Default::default() }
    }

    /// Adds flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The port of a `--metrics-addr` among the flags, if one is given.
    fn metrics_port(&self) -> Option<u16> {
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            let addr = match arg.strip_prefix("--metrics-addr") {
                Some(rest) if rest.starts_with('=') => rest[1..].to_string(),
                Some("") => args.next()?.clone(),
                _ => continue,
            };
            return addr.rsplit(':').next()?.parse().ok();
        }
        None
    }
}

impl Operator {
    /// Starts `serin run --namespace <ns>` against the local cluster, as its admin.
    pub fn start(namespace: &str) -> Self {
        Operator::start_with(OperatorOptions::namespace(namespace))
    }

    /// Starts `serin run` with `options`. Unless the flags give one, the operations endpoint
    /// listens on a free loopback port ([`Operator::metrics_port`]), so that operators of tests
    /// running side by side do not collide on the default port.
    pub fn start_with(options: OperatorOptions) -> Self {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let scope =
            if options.namespaces.is_empty() { "all".to_string() } else { options.namespaces.join("+") };
        let log = std::env::temp_dir()
            .join(format!("serin-operator-{scope}-{}.log", STARTS.fetch_add(1, Ordering::Relaxed)));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = std::process::Command::new(serin_binary());
        command.arg("run");
        if !options.namespaces.is_empty() {
            command.args(["--namespace", &options.namespaces.join(",")]);
        }
        let metrics_port = match options.metrics_port() {
            Some(port) => port,
            None => {
                let port = prometheus::free_port();
                command.arg(format!("--metrics-addr=127.0.0.1:{port}"));
                port
            }
        };
        let kubeconfig = options.kubeconfig.clone().unwrap_or_else(|| kubeconfig().to_path_buf());
        let child = command
            .args(&options.args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("POD_NAMESPACE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Operator { child, log, metrics_port }
    }

    /// `http://127.0.0.1:<metrics port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics_port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a clean stop) and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// The log so far, for assertion messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 30)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request the API server's audit log recorded (its `ResponseComplete` event).
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub user_agent: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// `objectRef.resource`, e.g. `deployments`, `leases`.
    pub resource: String,
    /// `objectRef.subresource`, e.g. `status`; empty when none.
    pub subresource: String,
    /// `objectRef.namespace`; empty when none.
    pub namespace: String,
    pub response_code: Option<i64>,
    /// `requestReceivedTimestamp`, as the API server's clock saw it.
    pub received: k8s_openapi::jiff::Timestamp,
}

impl AuditEvent {
    /// A create, update, patch, delete or deletecollection.
    pub fn is_write(&self) -> bool {
        matches!(self.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
    }
}

/// Every completed request in the audit log whose user agent contains `agent`, in the order
/// the API server received them.
pub fn audit_events(agent: &str) -> Vec<AuditEvent> {
    let text = std::fs::read_to_string(audit_log()).unwrap();
    let mut events: Vec<AuditEvent> = text
        .lines()
        .filter(|line| line.contains(agent))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["userAgent"].as_str().is_some_and(|a| a.contains(agent)))
        .map(|e| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            AuditEvent {
                user_agent: text(&e["userAgent"]),
                verb: text(&e["verb"]),
                resource: text(&e["objectRef"]["resource"]),
                subresource: text(&e["objectRef"]["subresource"]),
                namespace: text(&e["objectRef"]["namespace"]),
                response_code: e["responseStatus"]["code"].as_i64(),
                received: text(&e["requestReceivedTimestamp"]).parse().unwrap(),
            }
        })
        .collect();
    events.sort_by_key(|e| e.received);
    events
}

/// Changes the image of the sample app `web` in `ns`: a new revision.
pub async fn set_web_image(client: &Client, ns: &str, image: &str) {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch the image of Deployment {ns}/web: {e}"));
}

/// The notes of the Events about Rollouts in `ns` with `reason`, oldest first, one per Event
/// object.
pub async fn rollout_event_notes(client: &Client, ns: &str, reason: &str) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let mut list: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("list the Events in {ns}: {e}"))
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Rollout")
        })
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter().map(|e| e.note.unwrap_or_default()).collect()
}

/// Creates the app every story rolls out: Deployment `web` (2 replicas of image `web:1`, pods
/// labelled `app: web`) and a Rollout `web` for it on port 80, with `spec` merged into the
/// Rollout's spec (e.g. `strategy`, `analysis`, `progressDeadlineSeconds`).
pub async fn deploy_web_with_rollout(client: &Client, ns: &str, spec: serde_json::Value) {
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:1"}]}}
        }
    }))
    .unwrap();
    Api::namespaced(client.clone(), ns).create(&PostParams::default(), &deployment).await.unwrap();
    let mut full = serde_json::json!({"targetRef": {"name": "web"}, "service": {"port": 80}});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let rollout: serin::api::Rollout = serde_json::from_value(serde_json::json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"}, "spec": full
    }))
    .unwrap();
    Api::namespaced(client.clone(), ns).create(&PostParams::default(), &rollout).await.unwrap();
}
