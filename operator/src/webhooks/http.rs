//! One JSON POST with a timeout per attempt and bounded retries, shared by webhooks and
//! notifications.
//!
//! - Retried (exponential backoff with jitter, at most `retries` more attempts): connection
//!   errors, timeouts, `5xx` and `429`. A `Retry-After` in seconds is honoured, up to 30 s.
//! - Not retried: other answers (`4xx`, and `3xx`: redirects are not followed, so a hook cannot
//!   send Serin elsewhere), and TLS certificate errors, which another attempt cannot fix.
//! - Messages never contain the URL, which may carry a token (Slack and Teams addresses do).

use std::error::Error as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};

/// The longest `Retry-After` Serin waits for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How much of an answer's body a message quotes.
const BODY_QUOTE: usize = 200;

/// The two HTTP clients: one that verifies TLS certificates (platform roots) and one that does
/// not, for receivers marked `insecureSkipTlsVerify`.
#[derive(Clone, Debug)]
pub struct HttpClients {
    verified: reqwest::Client,
    insecure: reqwest::Client,
}

impl HttpClients {
    /// Builds both clients. Installs the ring crypto provider first if none is installed.
    /// Certificates are verified against the system's CA store; on a machine without one
    /// (a distroless image), against Mozilla's roots built into Serin.
    pub fn new() -> Result<Self, reqwest::Error> {
        crate::ensure_crypto_provider();
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("serin/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
        };
        let verified = match builder().build() {
            Ok(client) => client,
            Err(platform) => {
                tracing::warn!(
                    error = %platform,
                    "no usable system CA certificates; verifying webhook and notification receivers against Mozilla's roots built into Serin"
                );
                let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok());
                builder().tls_certs_only(roots).build()?
            }
        };
        Ok(HttpClients { verified, insecure: builder().tls_danger_accept_invalid_certs(true).build()? })
    }

    /// The client for a receiver: certificate verification on unless `insecure`.
    pub fn client(&self, insecure: bool) -> &reqwest::Client {
        if insecure { &self.insecure } else { &self.verified }
    }
}

/// How hard to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further attempts after the first.
    pub retries: u32,
    /// The limit of one attempt.
    pub timeout: Duration,
    /// The first backoff delay; doubled after each attempt, with jitter.
    pub min_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The default backoff (250 ms doubling up to 5 s) with the given retries and timeout.
    pub fn new(retries: u32, timeout: Duration) -> Self {
        RetryPolicy {
            retries,
            timeout,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// What came of a POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The receiver answered 2xx.
    pub ok: bool,
    /// The last HTTP status, when there was an answer.
    pub code: Option<u16>,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// What happened, for humans: `answered 200 OK`, `answered 403 Forbidden: not approved`,
    /// `no answer within 10s`, `cannot connect: connection refused`.
    pub message: String,
}

/// One attempt that did not end in 2xx.
#[derive(Debug)]
enum Failure {
    /// An answer that is not 2xx.
    Status { code: StatusCode, body: String, retry_after: Option<Duration> },
    /// No answer within the timeout.
    Timeout,
    /// A TLS certificate problem: not retried.
    Tls(String),
    /// Could not connect or send.
    Transport(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Status { code, .. } => code.is_server_error() || *code == StatusCode::TOO_MANY_REQUESTS,
            Failure::Timeout | Failure::Transport(_) => true,
            Failure::Tls(_) => false,
        }
    }

    fn describe(&self, timeout: Duration) -> String {
        match self {
            Failure::Status { code, body, .. } => {
                let mut text = format!("answered {}", status_text(*code));
                if !body.is_empty() {
                    text.push_str(": ");
                    text.push_str(body);
                }
                text
            }
            Failure::Timeout => format!("no answer within {}", humanize(timeout)),
            Failure::Tls(why) => format!(
                "TLS certificate not accepted ({why}); give the receiver a certificate from a trusted CA, \
                 or set insecureSkipTlsVerify for a test receiver"
            ),
            Failure::Transport(why) => format!("cannot connect: {why}"),
        }
    }
}

/// POSTs `body` as JSON to `url`, retrying as [`RetryPolicy`] allows.
pub async fn post_json(
    client: &reqwest::Client,
    url: &Url,
    headers: &HeaderMap,
    body: &serde_json::Value,
    policy: &RetryPolicy,
) -> Answer {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(err) => {
            return Answer {
                ok: false,
                code: None,
                attempts: 0,
                message: format!("cannot encode the payload: {err}"),
            };
        }
    };
    let attempts = AtomicU32::new(0);
    let attempt = || async {
        attempts.fetch_add(1, Ordering::Relaxed);
        let mut request = client.post(url.clone()).timeout(policy.timeout).body(bytes.clone());
        request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let code = response.status();
                if code.is_success() {
                    return Ok(code);
                }
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = quote_body(response).await;
                Err(Failure::Status { code, body, retry_after })
            }
            Err(err) => Err(classify(err)),
        }
    };
    let backoff = ExponentialBuilder::new()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.retries as usize)
        .with_jitter();
    let result = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(Failure::retryable)
        .adjust(|failure, delay| {
            delay.map(|d| match failure {
                Failure::Status { retry_after: Some(after), .. } => (*after).min(MAX_RETRY_AFTER),
                _ => d,
            })
        })
        .notify(|failure, delay| {
            tracing::debug!(failure = %failure.describe(policy.timeout), ?delay, "retrying");
        })
        .await;
    let attempts = attempts.load(Ordering::Relaxed);
    let after = if attempts > 1 { format!(" ({attempts} attempts)") } else { String::new() };
    match result {
        Ok(code) => Answer {
            ok: true,
            code: Some(code.as_u16()),
            attempts,
            message: format!("answered {}", status_text(code)),
        },
        Err(failure) => {
            let code = match &failure {
                Failure::Status { code, .. } => Some(code.as_u16()),
                _ => None,
            };
            Answer {
                ok: false,
                code,
                attempts,
                message: format!("{}{after}", failure.describe(policy.timeout)),
            }
        }
    }
}

fn status_text(code: StatusCode) -> String {
    match code.canonical_reason() {
        Some(reason) => format!("{} {reason}", code.as_u16()),
        None => code.as_u16().to_string(),
    }
}

/// The start of an answer's body on one line, for messages.
async fn quote_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_QUOTE * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > BODY_QUOTE {
        format!("{}…", line.chars().take(BODY_QUOTE).collect::<String>())
    } else {
        line
    }
}

/// Sorts a transport error into timeout, TLS, or other; the URL is left out.
fn classify(err: reqwest::Error) -> Failure {
    if err.is_timeout() {
        return Failure::Timeout;
    }
    let err = err.without_url();
    let mut causes = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(cause) = source {
        if let Some(tls) = rustls_error(cause) {
            return Failure::Tls(tls.to_string());
        }
        causes.push(cause.to_string());
        source = cause.source();
    }
    // The innermost cause says the most ("connection refused"); keep the chain short.
    let why = causes.last().cloned().unwrap_or_else(|| err.to_string());
    Failure::Transport(why)
}

/// A rustls error in the chain, directly or inside (possibly nested) `io::Error`s, whose
/// `source` skips the error they wrap.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = err;
    loop {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner: &'a (dyn std::error::Error + 'static) =
            current.downcast_ref::<std::io::Error>()?.get_ref()?;
        current = inner;
    }
}

/// `10s`, `1.5s`, `250ms`.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_failures_are_transient_ones() {
        let status = |code: u16| Failure::Status {
            code: StatusCode::from_u16(code).unwrap(),
            body: String::new(),
            retry_after: None,
        };
        for code in [500, 502, 503, 504, 429] {
            assert!(status(code).retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 301, 302] {
            assert!(!status(code).retryable(), "{code}");
        }
        assert!(Failure::Timeout.retryable());
        assert!(Failure::Transport("connection refused".into()).retryable());
        assert!(!Failure::Tls("invalid peer certificate: UnknownIssuer".into()).retryable());
    }

    #[test]
    fn descriptions_quote_the_answer() {
        let failure =
            Failure::Status { code: StatusCode::FORBIDDEN, body: "not approved".into(), retry_after: None };
        assert_eq!(failure.describe(Duration::from_secs(10)), "answered 403 Forbidden: not approved");
        assert_eq!(Failure::Timeout.describe(Duration::from_millis(1500)), "no answer within 1.5s");
        assert_eq!(Failure::Timeout.describe(Duration::from_millis(300)), "no answer within 300ms");
        assert!(Failure::Tls("x".into()).describe(Duration::ZERO).contains("insecureSkipTlsVerify"));
    }
}
