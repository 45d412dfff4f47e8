//! Real traffic and real metrics for the end-to-end tests, standing in only for a mesh's data
//! plane.
//!
//! Two binaries of this crate use this module:
//!
//! - `serin-demo-app` ([`demo_app`]): the app under rollout, one process per version. It answers
//!   every HTTP request after a configurable latency, with a configurable share of 500s.
//! - `serin-mesh` ([`data_plane`]): watches a TrafficSplit, sends open-loop HTTP traffic to the
//!   loopback backends by its weights, and exposes the metrics Linkerd's proxy exposes
//!   (`response_total`, `response_latency_ms`, inbound and outbound) on `/metrics`, so a
//!   Prometheus and an SMI metrics adapter can be pointed at it as at a meshed namespace.
//!
//! Test support lives here too: [`process::Spawned`] runs either binary and kills it when
//! dropped, [`scrape::Scrape`] parses what `/metrics` serves, and [`traffic::Traffic`] runs the
//! apps, the mesh and a Prometheus for a Rollout `web`.

pub mod cli;
pub mod data_plane;
pub mod demo_app;
pub mod metrics;
pub mod process;
pub mod scrape;
pub mod traffic;

use std::sync::Once;
use std::time::Duration;

/// An HTTP client for loopback traffic: never through a proxy (an `HTTP_PROXY` in the
/// environment would send requests off the machine), TLS (unused) through rustls with ring.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}
