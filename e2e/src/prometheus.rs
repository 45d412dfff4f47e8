//! A real Prometheus for the end-to-end tests: Debian's `prometheus` package
//! (`/usr/bin/prometheus`, installed by `e2e/install-prereqs`), started on a free loopback port
//! with a generated configuration that scrapes the given targets every second, and a storage
//! directory of its own. Killed, and its directory removed, when dropped.
//!
//! ```no_run
//! # async fn demo() {
//! let prometheus = serin_e2e::prometheus::Prometheus::start(&["127.0.0.1:9100".to_string()]).await;
//! prometheus.wait_for_series("response_total", std::time::Duration::from_secs(30)).await;
//! # }
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serin::metrics::prometheus::{Prometheus as Client, Sample};

/// How often Prometheus scrapes: short, so that tests need few seconds of data.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it right after).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The Prometheus binary: `$PROMETHEUS`, else `/usr/bin/prometheus`, else `prometheus` on PATH.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMETHEUS") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.is_file() { debian } else { PathBuf::from("prometheus") }
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its configuration, storage and log.
    pub dir: PathBuf,
    client: Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`) every second as job
    /// `mesh`, and waits until it is ready.
    pub async fn start(targets: &[String]) -> Prometheus {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "serin-prometheus-{}-{}",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let targets = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        let interval = format!("{}s", SCRAPE_INTERVAL.as_secs());
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
             scrape_configs:\n  - job_name: mesh\n    scrape_interval: {interval}\n    scrape_timeout: {interval}\n    \
             static_configs:\n      - targets: [{targets}]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run e2e/install-prereqs: apt-get install prometheus)",
                    binary().display()
                )
            });
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let mut prometheus = Prometheus { child, port, dir, client };
        let http = crate::mesh::http_client(Duration::from_secs(2)).unwrap();
        let ready = format!("{}/-/ready", prometheus.url());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(&ready).send().await
                && response.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}); its log:\n{}", prometheus.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus not ready within 60s; its log:\n{}",
                prometheus.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant query.
    pub async fn query(&self, expr: &str) -> Vec<Sample> {
        self.client.query_vector(expr).await.unwrap_or_else(|e| panic!("query {expr:?}: {e}"))
    }

    /// Waits until `expr` yields at least one series.
    pub async fn wait_for_series(&self, expr: &str, timeout: Duration) -> Vec<Sample> {
        crate::eventually(&format!("Prometheus to have {expr}"), timeout, || async {
            let samples = self.client.query_vector(expr).await.ok()?;
            (!samples.is_empty()).then_some(samples)
        })
        .await
    }

    /// The last 30 lines of its log.
    pub fn log_tail(&self) -> String {
        crate::log_tail(&self.dir.join("prometheus.log"), 30)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
