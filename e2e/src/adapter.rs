//! The SMI metrics adapter (`serin-metrics-adapter`) in end-to-end tests: build it, give it a
//! serving certificate, start it on loopback against a Prometheus, and register it with the
//! local kube-apiserver as the APIService `v1alpha1.metrics.smi-spec.io`, reached through a
//! Service of type ExternalName pointing at `localhost`.
//!
//! The APIService is cluster-scoped and its name is fixed by the group, so only one test at a
//! time may hold it: [`register`] takes an exclusive file lock in the cluster's state directory
//! (which also serialises test binaries run in parallel) and [`Registration::unregister`]
//! releases it after deleting the APIService.
//!
//! ```no_run
//! # async fn demo(client: kube::Client, prometheus_url: &str) {
//! use serin_e2e::adapter::{Adapter, register};
//! let adapter = Adapter::start("my-ns", prometheus_url, "linkerd", &[]).await;
//! let registration = register(&client, &adapter).await;
//! // ... kubectl get --raw /apis/metrics.smi-spec.io/v1alpha1/namespaces/my-ns/deployments/web
//! registration.unregister().await;
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use crate::prometheus::free_port;
use crate::{MANAGER, cluster_dir, eventually, kubeconfig};

/// The APIService's name, fixed by the group and version.
pub const APISERVICE: &str = "v1alpha1.metrics.smi-spec.io";
/// The name of the Service the APIService points at, in the adapter's namespace.
pub const SERVICE: &str = "serin-metrics-adapter";

/// The `serin-metrics-adapter` binary, built once per test binary with the workspace's cargo.
pub fn binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| crate::workspace_binary("serin-metrics-adapter", "serin-metrics-adapter"))
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed certificate and its key, in a directory of their own.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPair {
    /// A self-signed certificate for `subject` (e.g. `/CN=x`) with the given extensions (e.g.
    /// `subjectAltName=DNS:a.b.svc`), written to `dir/<stem>.crt` and `.key`.
    pub fn self_signed(dir: &Path, stem: &str, subject: &str, extensions: &[&str]) -> CertPair {
        std::fs::create_dir_all(dir).unwrap();
        let (cert, key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        let mut args = vec!["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject];
        for ext in extensions {
            args.extend(["-addext", ext]);
        }
        args.extend(["-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()]);
        openssl(&args);
        CertPair { cert, key }
    }

    /// A CA (`dir/<stem>.crt`, `.key`) for signing certificates with [`sign`](Self::sign).
    pub fn ca(dir: &Path, stem: &str) -> CertPair {
        CertPair::self_signed(dir, stem, &format!("/CN={stem}"), &["basicConstraints=critical,CA:TRUE"])
    }

    /// A certificate for `subject` with `extensions` (lines of an openssl extension file, e.g.
    /// `subjectAltName=DNS:a.b.svc`), signed by this CA, written to `dir/<stem>.crt` and `.key`.
    pub fn sign(&self, dir: &Path, stem: &str, subject: &str, extensions: &[&str]) -> CertPair {
        let (cert, key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        let (csr, ext) = (dir.join(format!("{stem}.csr")), dir.join(format!("{stem}.ext")));
        let mut lines = vec!["basicConstraints=critical,CA:FALSE"];
        lines.extend_from_slice(extensions);
        std::fs::write(&ext, lines.join("\n") + "\n").unwrap();
        let path = |p: &PathBuf| p.to_str().unwrap().to_string();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &path(&key),
            "-out",
            &path(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&self.cert),
            "-CAkey",
            &path(&self.key),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &path(&ext),
            "-out",
            &path(&cert),
        ]);
        CertPair { cert, key }
    }

    /// The cluster's front-proxy client certificate: what kube-apiserver presents.
    pub fn front_proxy_client() -> CertPair {
        let certs = cluster_dir().join("certs");
        CertPair { cert: certs.join("front-proxy-client.crt"), key: certs.join("front-proxy-client.key") }
    }
}

/// A running adapter. Killed (SIGKILL) when dropped.
pub struct Adapter {
    child: Child,
    /// Its port on 127.0.0.1; the APIService's Service port must be the same.
    pub port: u16,
    /// `<service>.<namespace>.svc`: the name its certificate is for.
    pub server_name: String,
    /// The namespace the Service goes in.
    pub namespace: String,
    /// The CA of its serving certificate: the APIService's caBundle.
    pub ca: CertPair,
    /// Its serving certificate.
    pub serving: CertPair,
    /// Its stderr.
    pub log: PathBuf,
    /// Its certificates and log; removed when dropped, unless the test is failing.
    pub dir: PathBuf,
}

impl Adapter {
    /// Starts the adapter on a free loopback port with a serving certificate for
    /// `serin-metrics-adapter.<namespace>.svc`, the cluster's front-proxy CA, the admin
    /// kubeconfig (for SubjectAccessReviews), and `extra` flags.
    pub async fn start(namespace: &str, prometheus_url: &str, query_set: &str, extra: &[&str]) -> Adapter {
        Adapter::start_with(namespace, prometheus_url, query_set, extra, true).await
    }

    /// Like [`start`](Self::start); without `--requestheader-client-ca-file` when
    /// `ca_flag` is false, so that the adapter reads the front-proxy CA from the ConfigMap
    /// kube-system/extension-apiserver-authentication.
    pub async fn start_with(
        namespace: &str,
        prometheus_url: &str,
        query_set: &str,
        extra: &[&str],
        ca_flag: bool,
    ) -> Adapter {
        let server_name = format!("{SERVICE}.{namespace}.svc");
        let dir = std::env::temp_dir().join(format!("serin-adapter-{namespace}-{}", std::process::id()));
        let ca = CertPair::ca(&dir, "serving-ca");
        let serving = ca.sign(
            &dir,
            "serving",
            "/CN=serin-metrics-adapter",
            &[&format!("subjectAltName=DNS:{server_name}"), "extendedKeyUsage=serverAuth"],
        );
        let port = free_port();
        let log = dir.join(format!("adapter-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let front_proxy_ca = cluster_dir().join("certs/front-proxy-ca.crt");
        let mut args: Vec<String> = vec![
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", serving.cert.display()),
            format!("--tls-private-key-file={}", serving.key.display()),
            format!("--prometheus-url={prometheus_url}"),
            format!("--query-set={query_set}"),
            format!("--kubeconfig={}", kubeconfig().display()),
        ];
        if ca_flag {
            args.push(format!("--requestheader-client-ca-file={}", front_proxy_ca.display()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(binary())
            .args(&args)
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut adapter =
            Adapter { child, port, server_name, namespace: namespace.to_string(), ca, serving, log, dir };
        let client = adapter.https_client(None);
        let healthz = adapter.url("/healthz");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(&healthz).send().await
                && response.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = adapter.child.try_wait() {
                panic!("serin-metrics-adapter exited ({status}); its log:\n{}", adapter.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "adapter not healthy in 60s:\n{}",
                adapter.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        adapter
    }

    /// `https://<server_name>:<port><path>` (use with [`https_client`](Self::https_client),
    /// which resolves the name to 127.0.0.1).
    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.server_name, self.port)
    }

    /// A client that talks to the adapter directly, trusting its serving CA and
    /// presenting `identity` as its client certificate, if given.
    pub fn https_client(&self, identity: Option<&CertPair>) -> reqwest::Client {
        crate::mesh::http_client(Duration::from_secs(1)).unwrap(); // installs the ring provider
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca.cert).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut tls = match identity {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                let chain = CertificateDer::pem_file_iter(&pair.cert).unwrap().map(Result::unwrap).collect();
                let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .resolve(&self.server_name, address)
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap()
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        crate::log_tail(&self.log, 40)
    }

    /// Its whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to `timeout`) for it to exit; its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("serin-metrics-adapter log: {}", self.log.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The APIService, registered; holds the lock until [`unregister`](Self::unregister) (or drop,
/// which deletes the APIService with kubectl as a fallback).
pub struct Registration {
    lock: Option<Arc<std::fs::File>>,
    client: Client,
}

/// Registers `adapter` as the APIService `v1alpha1.metrics.smi-spec.io` (ExternalName Service
/// `serin-metrics-adapter` → localhost in the adapter's namespace) and waits until
/// kube-apiserver reports it Available. Waits first for any other test holding it.
pub async fn register(client: &Client, adapter: &Adapter) -> Registration {
    let lock_path = cluster_dir().join(format!("{APISERVICE}.lock"));
    let lock = tokio::task::spawn_blocking(move || {
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).unwrap();
        file.lock().unwrap();
        Arc::new(file)
    })
    .await
    .unwrap();
    let registration = Registration { lock: Some(lock), client: client.clone() };

    let apply = PatchParams::apply(MANAGER).force();
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
        "spec": {"type": "ExternalName", "externalName": "localhost",
                 "ports": [{"name": "https", "port": adapter.port}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &adapter.namespace)
        .patch(SERVICE, &apply, &Patch::Apply(&service))
        .await
        .unwrap();
    let ca_bundle = std::fs::read(&adapter.ca.cert).unwrap();
    let apiservice: APIService = serde_json::from_value(json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": APISERVICE},
        "spec": {
            "group": "metrics.smi-spec.io", "version": "v1alpha1",
            "groupPriorityMinimum": 100, "versionPriority": 100,
            "service": {"namespace": adapter.namespace, "name": SERVICE, "port": adapter.port},
            "caBundle": k8s_openapi::ByteString(ca_bundle)
        }
    }))
    .unwrap();
    let apiservices = Api::<APIService>::all(client.clone());
    apiservices.patch(APISERVICE, &apply, &Patch::Apply(&apiservice)).await.unwrap();
    eventually(&format!("APIService {APISERVICE} to become Available"), Duration::from_secs(60), || async {
        let current = apiservices.get(APISERVICE).await.ok()?;
        let ours = current.spec.as_ref()?.service.as_ref()?.namespace.as_deref() == Some(&adapter.namespace);
        let available = current.status?.conditions?.into_iter().find(|c| c.type_ == "Available")?;
        (ours && available.status == "True").then_some(())
    })
    .await;
    registration
}

impl Registration {
    /// Deletes the APIService, waits until it is gone, and releases the lock.
    pub async fn unregister(mut self) {
        let apiservices = Api::<APIService>::all(self.client.clone());
        let _ = apiservices.delete(APISERVICE, &DeleteParams::default()).await;
        eventually(&format!("APIService {APISERVICE} to be deleted"), Duration::from_secs(30), || async {
            apiservices.get_opt(APISERVICE).await.ok()?.is_none().then_some(())
        })
        .await;
        self.lock.take();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.lock.is_some() {
            // A test that panicked: leave no APIService pointing at a dead port behind.
            let _ = Command::new("kubectl")
                .args(["delete", "apiservice", APISERVICE, "--ignore-not-found", "--wait=false"])
                .env("KUBECONFIG", kubeconfig())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
