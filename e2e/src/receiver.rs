//! A real local HTTP(S) receiver for webhook and notification tests.
//!
//! It binds 127.0.0.1 on a free port, records every request (method, path, headers, body, order
//! of arrival), and answers from a script:
//!
//! ```text
//! "200"                      always 200
//! "503, 503, 200"            503 twice, then 200 (the last answer repeats)
//! "403:not approved, 200"    403 with a body, then 200
//! "200 after 2s"             wait 2 s, then 200
//! "hang 30s"                 answer nothing for 30 s (then 200): the caller's timeout fires
//! ```
//!
//! Scripts can differ by path ([`Receiver::script_for`]) and change mid-test (an approval that
//! says no, then yes). [`Receiver::start_tls`] serves HTTPS with a throwaway self-signed
//! certificate made by the openssl CLI, which a verifying client refuses.
//!
//! Requests are recorded on arrival, before any delay, so a request the caller gave up on is
//! still seen.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::adapter::CertPair;
use crate::eventually;

/// One answer of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub delay: Duration,
    pub body: String,
}

/// A sequence of answers; the last one repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    answers: Vec<Answer>,
    next: usize,
}

impl Script {
    /// Parses `"503, 503, 200"`, `"403:not approved"`, `"200 after 2s"`, `"hang 30s"`.
    pub fn parse(text: &str) -> Script {
        let answers: Vec<Answer> = text.split(',').map(|item| parse_answer(item.trim())).collect();
        assert!(!answers.is_empty(), "empty receiver script");
        Script { answers, next: 0 }
    }

    fn take(&mut self) -> Answer {
        let answer = self.answers[self.next.min(self.answers.len() - 1)].clone();
        self.next += 1;
        answer
    }
}

fn parse_answer(item: &str) -> Answer {
    let duration = |text: &str| {
        serin::duration::parse_duration(text.trim())
            .unwrap_or_else(|e| panic!("receiver script {item:?}: {e}"))
    };
    if let Some(rest) = item.strip_prefix("hang ") {
        return Answer { status: 200, delay: duration(rest), body: String::new() };
    }
    let (head, body) = item.split_once(':').unwrap_or((item, ""));
    let (code, delay) = match head.split_once(" after ") {
        Some((code, delay)) => (code, duration(delay)),
        None => (head, Duration::ZERO),
    };
    let status = code.trim().parse().unwrap_or_else(|_| panic!("receiver script {item:?}: no status code"));
    Answer { status, delay, body: body.trim().to_string() }
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Order of arrival, from 0, across all paths.
    pub seq: usize,
    pub method: String,
    /// Path and query, e.g. `/approve`.
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: String,
}

impl Recorded {
    /// The body as JSON; panics when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    default: Mutex<Option<Script>>,
    by_path: Mutex<HashMap<String, Script>>,
}

impl Shared {
    fn answer_for(&self, path: &str) -> Answer {
        let path_only = path.split('?').next().unwrap_or(path);
        if let Some(script) = self.by_path.lock().unwrap().get_mut(path_only) {
            return script.take();
        }
        self.default.lock().unwrap().as_mut().expect("a receiver always has a default script").take()
    }
}

/// A running receiver. Stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    tls: Option<CertPair>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A plain HTTP receiver answering from `script`.
    pub async fn start(script: &str) -> Receiver {
        Self::spawn(script, None).await
    }

    /// An HTTPS receiver with a fresh self-signed certificate for 127.0.0.1 and localhost.
    pub async fn start_tls(script: &str) -> Receiver {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "serin-receiver-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let cert = CertPair::self_signed(
            &dir,
            "receiver",
            "/CN=serin-test-receiver",
            &["subjectAltName=IP:127.0.0.1,DNS:localhost", "basicConstraints=critical,CA:FALSE"],
        );
        Self::spawn(script, Some(cert)).await
    }

    async fn spawn(script: &str, tls: Option<CertPair>) -> Receiver {
        serin::ensure_crypto_provider();
        let shared = Arc::new(Shared::default());
        *shared.default.lock().unwrap() = Some(Script::parse(script));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.as_ref().map(|pair| {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&pair.cert).unwrap().map(Result::unwrap).collect();
            let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
            let config =
                rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
            TlsAcceptor::from(Arc::new(config))
        });
        let task = tokio::spawn(serve(listener, acceptor, shared.clone()));
        Receiver { addr, tls, shared, task }
    }

    /// `http(s)://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The certificate of an HTTPS receiver.
    pub fn certificate(&self) -> Option<&CertPair> {
        self.tls.as_ref()
    }

    /// Replaces the script for every path without a script of its own; starts from its first
    /// answer.
    pub fn script(&self, script: &str) {
        *self.shared.default.lock().unwrap() = Some(Script::parse(script));
    }

    /// Gives `path` a script of its own.
    pub fn script_for(&self, path: &str, script: &str) {
        self.shared.by_path.lock().unwrap().insert(path.to_string(), Script::parse(script));
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests to one path (query ignored), in order of arrival.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path.split('?').next() == Some(path)).collect()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`), and returns all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        eventually(&format!("{n} requests at the receiver {}", self.url("")), timeout, || async {
            let all = self.requests();
            (all.len() >= n).then_some(all)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, acceptor: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, shared.clone()));
            let http = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(acceptor) => {
                    // A client that refuses the certificate ends the handshake here.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |p| p.to_string());
    let answer = {
        let mut requests = shared.requests.lock().unwrap();
        let recorded = Recorded {
            seq: requests.len(),
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        requests.push(recorded);
        drop(requests);
        shared.answer_for(&path)
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let response = Response::builder()
        .status(answer.status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(answer.body)))
        .unwrap();
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_codes_bodies_delays_and_hangs() {
        let mut script = Script::parse("503, 403:not approved, 200 after 2s, hang 30s");
        assert_eq!(script.take(), Answer { status: 503, delay: Duration::ZERO, body: String::new() });
        assert_eq!(script.take(), Answer { status: 403, delay: Duration::ZERO, body: "not approved".into() });
        assert_eq!(script.take(), Answer { status: 200, delay: Duration::from_secs(2), body: String::new() });
        assert_eq!(script.take().delay, Duration::from_secs(30));
        assert_eq!(script.take().delay, Duration::from_secs(30), "the last answer repeats");
    }

    #[tokio::test]
    async fn records_requests_and_answers_in_script_order() {
        let receiver = Receiver::start("503, 200").await;
        receiver.script_for("/other", "418:teapot");
        let client = reqwest::Client::new();
        let post = |path: &str| client.post(receiver.url(path)).body(r#"{"a":1}"#).send();
        assert_eq!(post("/hook").await.unwrap().status(), 503);
        assert_eq!(post("/hook?x=1").await.unwrap().status(), 200);
        let teapot = post("/other").await.unwrap();
        assert_eq!(teapot.status(), 418);
        assert_eq!(teapot.text().await.unwrap(), "teapot");
        let all = receiver.requests();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(all[1].path, "/hook?x=1");
        assert_eq!(all[0].method, "POST");
        assert_eq!(all[0].json(), serde_json::json!({"a": 1}));
        assert_eq!(receiver.requests_to("/hook").len(), 2);
    }
}
