//! The operations endpoint (`--metrics-addr`): `/metrics`, `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::Telemetry;

/// What `/readyz` answers from.
#[derive(Debug, Default)]
pub struct Health {
    /// Watch scopes (one per watched namespace, or one for all namespaces); 0 counts as 1.
    scopes: AtomicUsize,
    /// Scopes whose Deployment, HPA, Service and TrafficSplit caches have finished their first
    /// list.
    caches_synced: AtomicUsize,
    /// Scopes whose Rollout watch has finished its first list.
    rollouts_listed: AtomicUsize,
    /// Leader election is on.
    electing: AtomicBool,
    /// This process holds the Lease.
    leader: AtomicBool,
    /// The last attempt to read (or take) the Lease reached the API server.
    lease_reachable: AtomicBool,
}

impl Health {
    /// How many watch scopes must sync before the process is ready.
    pub fn expect_scopes(&self, scopes: usize) {
        self.scopes.store(scopes, Ordering::SeqCst);
    }

    /// One scope's caches finished their first list (called once per scope).
    pub fn set_caches_synced(&self) {
        self.caches_synced.fetch_add(1, Ordering::SeqCst);
        self.log_when_ready();
    }

    /// One scope's Rollout watch finished its first list (called once per scope).
    pub fn set_rollouts_listed(&self) {
        self.rollouts_listed.fetch_add(1, Ordering::SeqCst);
        self.log_when_ready();
    }

    fn synced(&self) -> bool {
        let scopes = self.scopes.load(Ordering::SeqCst).max(1);
        self.caches_synced.load(Ordering::SeqCst) >= scopes
            && self.rollouts_listed.load(Ordering::SeqCst) >= scopes
    }

    fn log_when_ready(&self) {
        if self.synced() {
            tracing::info!("watch caches synced; ready");
        }
    }

    pub fn set_electing(&self) {
        self.electing.store(true, Ordering::SeqCst);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    pub fn set_lease_reachable(&self, reachable: bool) {
        self.lease_reachable.store(reachable, Ordering::SeqCst);
    }

    /// Ready, with a word on why, or not ready, with the reason.
    ///
    /// - Without leader election, and for the leader: ready once the caches are synced.
    /// - A follower runs no controller and has no caches: it is ready while it can read the
    ///   Lease, i.e. while it stands ready to take over.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        let synced = self.synced();
        let electing = self.electing.load(Ordering::SeqCst);
        let leader = self.leader.load(Ordering::SeqCst);
        let reachable = self.lease_reachable.load(Ordering::SeqCst);
        match (electing, leader) {
            _ if synced => Ok("ok"),
            (true, false) if reachable => Ok("ok: follower, watching the Lease"),
            (true, false) => Err("not ready: follower cannot read the Lease"),
            _ => Err("not ready: watch caches not synced yet"),
        }
    }
}

/// Serves the endpoints on `listener` until the process ends.
pub async fn serve(listener: TcpListener, telemetry: Telemetry) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    axum::serve(listener, app).await
}

async fn metrics(State(telemetry): State<Telemetry>) -> Response {
    match telemetry.metrics().encode() {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "could not encode the metrics").into_response(),
    }
}

async fn readyz(State(telemetry): State<Telemetry>) -> Response {
    match telemetry.health().readiness() {
        Ok(why) => (StatusCode::OK, why).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_caches_and_the_lease() {
        let standalone = Health::default();
        assert!(standalone.readiness().is_err());
        standalone.set_caches_synced();
        assert!(standalone.readiness().is_err(), "the Rollout watch has not listed yet");
        standalone.set_rollouts_listed();
        assert_eq!(standalone.readiness(), Ok("ok"));

        let follower = Health::default();
        follower.set_electing();
        assert_eq!(follower.readiness(), Err("not ready: follower cannot read the Lease"));
        follower.set_lease_reachable(true);
        assert!(follower.readiness().unwrap().contains("follower"));

        let leader = Health::default();
        leader.set_electing();
        leader.set_lease_reachable(true);
        leader.set_leader(true);
        assert_eq!(leader.readiness(), Err("not ready: watch caches not synced yet"));
        leader.set_rollouts_listed();
        leader.set_caches_synced();
        assert_eq!(leader.readiness(), Ok("ok"));

        // Watching two namespaces: ready only once both have synced.
        let two = Health::default();
        two.expect_scopes(2);
        two.set_caches_synced();
        two.set_rollouts_listed();
        assert!(two.readiness().is_err(), "one namespace of two has synced");
        two.set_caches_synced();
        two.set_rollouts_listed();
        assert_eq!(two.readiness(), Ok("ok"));
    }
}
