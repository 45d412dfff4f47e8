//! `serin-demo-app`: the app under rollout, one process per version.
//!
//! ```text
//! serin-demo-app --listen 127.0.0.1:0 --version v2 --error-rate 0.05 --latency-ms 20 --latency-jitter-ms 5
//! ```
//!
//! Every request (any method, any path but `/config`) is answered after sleeping
//! `latency-ms ± latency-jitter-ms` (uniform, never below 0; an async sleep, so slow answers do
//! not hold back others), with a 500 with probability `error-rate` and a 200 otherwise. The body
//! is JSON: `{"version":"v2","status":200}`.
//!
//! The first line on stdout is `LISTENING <port>`, printed once the socket accepts connections.
//!
//! `GET /config` shows the behaviour; `PUT /config` with any of
//! `{"error_rate":0.5,"latency_ms":20,"latency_jitter_ms":5}` changes it at run time and answers
//! with the whole new configuration (400 for an invalid one).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::cli;

const PROGRAM: &str = "serin-demo-app";

/// Command line of `serin-demo-app`.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "serin-demo-app", about = "A demo HTTP app with a configurable error rate and latency")]
pub struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The version this process reports in every answer, e.g. v2.
    #[arg(long)]
    pub version: String,
    /// Probability of answering 500 instead of 200, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = cli::parse_rate)]
    pub error_rate: f64,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Uniform jitter around the latency, in milliseconds (latency ± jitter, never below 0).
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
}

/// How the app behaves; changeable at run time with `PUT /config`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    pub error_rate: f64,
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
}

/// A partial [`Behaviour`], as `PUT /config` takes it.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct BehaviourPatch {
    pub error_rate: Option<f64>,
    pub latency_ms: Option<u64>,
    pub latency_jitter_ms: Option<u64>,
}

impl Behaviour {
    /// How long to wait before this answer: latency ± uniform jitter, never negative.
    pub fn delay(&self) -> Duration {
        let jitter = (rand::random::<f64>() * 2.0 - 1.0) * self.latency_jitter_ms as f64;
        Duration::from_secs_f64((self.latency_ms as f64 + jitter).max(0.0) / 1000.0)
    }

    /// Whether this answer fails. `random::<f64>()` is in `[0, 1)`: rate 0 never fails, 1 always.
    pub fn fails(&self) -> bool {
        rand::random::<f64>() < self.error_rate
    }

    fn patched(self, patch: BehaviourPatch) -> Result<Behaviour, String> {
        let error_rate = patch.error_rate.unwrap_or(self.error_rate);
        if !(0.0..=1.0).contains(&error_rate) {
            return Err(format!("error_rate {error_rate} is not between 0 and 1"));
        }
        Ok(Behaviour {
            error_rate,
            latency_ms: patch.latency_ms.unwrap_or(self.latency_ms),
            latency_jitter_ms: patch.latency_jitter_ms.unwrap_or(self.latency_jitter_ms),
        })
    }
}

struct App {
    version: String,
    behaviour: RwLock<Behaviour>,
}

impl App {
    fn behaviour(&self) -> Behaviour {
        *self.behaviour.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The app's routes: `/config`, and everything else answered as the app.
fn router(version: String, behaviour: Behaviour) -> Router {
    let app = Arc::new(App { version, behaviour: RwLock::new(behaviour) });
    Router::new().route("/config", get(get_config).put(put_config)).fallback(answer).with_state(app)
}

async fn answer(State(app): State<Arc<App>>) -> Response {
    let behaviour = app.behaviour();
    let delay = behaviour.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = if behaviour.fails() { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    let body = serde_json::json!({"version": app.version, "status": status.as_u16()}).to_string();
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

async fn get_config(State(app): State<Arc<App>>) -> Json<Behaviour> {
    Json(app.behaviour())
}

async fn put_config(State(app): State<Arc<App>>, Json(patch): Json<BehaviourPatch>) -> Response {
    let mut current = app.behaviour.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    match current.patched(patch) {
        Ok(new) => {
            *current = new;
            eprintln!("{PROGRAM}: behaviour is now {new:?}");
            Json(new).into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, message).into_response(),
    }
}

/// Runs the app until the process is killed.
pub async fn run(args: Args) -> Result<(), String> {
    let behaviour = Behaviour {
        error_rate: args.error_rate,
        latency_ms: args.latency_ms,
        latency_jitter_ms: args.latency_jitter_ms,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let port = listener.local_addr().map_err(|e| format!("cannot read the listening address: {e}"))?.port();
    println_flush(&format!("LISTENING {port}"));
    eprintln!("{PROGRAM}: version {} on 127.0.0.1:{port}, {behaviour:?}", args.version);
    axum::serve(listener, router(args.version, behaviour)).await.map_err(|e| format!("serving failed: {e}"))
}

/// Prints one line on stdout and flushes it, so a parent reading a pipe sees it at once.
pub(crate) fn println_flush(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout only loses the announcement; the server still runs.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The binary's `main`.
pub fn main() {
    cli::main::<Args, _, _>(PROGRAM, run);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_stays_within_latency_plus_minus_jitter() {
        let b = Behaviour { error_rate: 0.0, latency_ms: 20, latency_jitter_ms: 5 };
        for _ in 0..1000 {
            let d = b.delay();
            assert!(d >= Duration::from_millis(15) && d <= Duration::from_millis(25), "{d:?}");
        }
        let b = Behaviour { error_rate: 0.0, latency_ms: 1, latency_jitter_ms: 10 };
        assert!((0..1000).all(|_| b.delay() <= Duration::from_millis(11)));
    }

    #[test]
    fn error_rate_zero_and_one_are_exact() {
        let never = Behaviour { error_rate: 0.0, latency_ms: 0, latency_jitter_ms: 0 };
        let always = Behaviour { error_rate: 1.0, ..never };
        assert!((0..10_000).all(|_| !never.fails()));
        assert!((0..10_000).all(|_| always.fails()));
    }

    #[test]
    fn patches_keep_unset_fields_and_refuse_bad_rates() {
        let b = Behaviour { error_rate: 0.1, latency_ms: 20, latency_jitter_ms: 5 };
        let p = b.patched(BehaviourPatch { latency_ms: Some(50), ..Default::default() }).unwrap();
        assert_eq!(p, Behaviour { latency_ms: 50, ..b });
        assert!(b.patched(BehaviourPatch { error_rate: Some(2.0), ..Default::default() }).is_err());
    }
}
