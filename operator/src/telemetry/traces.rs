//! OpenTelemetry traces of rollouts, exported over OTLP/HTTP (protobuf).
//!
//! One trace per canary revision of a Rollout; a span per stage (step 0, each step, the
//! promotion) and, under each step, a span per gate evaluation; the revision's root span when
//! its rollout ends. Reconciles are short and many, and the operator may restart mid-rollout, so
//! no span is kept open in memory: the ids are derived from what the status names,
//!
//! ```text
//! trace id        = FNV-1a-128(rollout uid, canary revision)
//! root span id    = FNV-1a-64(uid, revision, "rollout")
//! stage span id   = FNV-1a-64(uid, revision, "step-<n>" | "promotion")
//! gate span id    = FNV-1a-64(uid, revision, stage, gate, evaluation time)
//! ```
//!
//! and each span is emitted once, complete, when what it describes ends: a stage span when the
//! stage ends (start = when it began, end = now), gate spans when the check ran (children of the
//! stage span that is still running, which is emitted later with the id they already name), the
//! root span when the revision succeeds, fails, is aborted, superseded or reverted. Any process
//! (a restarted one, a new leader) names the same spans.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor};

use super::progress::{Check, RolloutEnded, Stage, StageEnded, Step};
use crate::api::{GateStatus, Verdict};

/// The OTLP/HTTP path for traces, appended to the endpoint unless it already ends with it.
pub const TRACES_PATH: &str = "/v1/traces";

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "--otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT) {endpoint:?} is not an http:// or https:// URL; \
         give the collector's OTLP/HTTP address, e.g. http://otel-collector:4318"
    )]
    Endpoint { endpoint: String },
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// The rollout a span belongs to.
#[derive(Clone, Copy, Debug)]
pub struct RolloutRef<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The trace of one revision of one Rollout.
pub fn trace_id(uid: &str, revision: &str) -> TraceId {
    let id = fnv1a_128(&[uid, revision]);
    // An all-zero id is invalid; FNV never yields it in practice, but be sure.
    TraceId::from_bytes(if id == 0 { 1u128 } else { id }.to_be_bytes())
}

/// A span of that trace, named by `key`.
pub fn span_id(uid: &str, revision: &str, key: &str) -> SpanId {
    let id = fnv1a_64(&[uid, revision, key]);
    SpanId::from_bytes(if id == 0 { 1u64 } else { id }.to_be_bytes())
}

/// The root span's id.
pub fn root_span_id(uid: &str, revision: &str) -> SpanId {
    span_id(uid, revision, "rollout")
}

/// A stage's span id.
pub fn stage_span_id(uid: &str, stage: &Stage) -> SpanId {
    span_id(uid, &stage.revision, &stage.step.key())
}

/// The span of a stage that ended.
pub fn stage_span(
    rollout: RolloutRef,
    ended: &StageEnded,
    steps: i32,
    start: Timestamp,
    end: Timestamp,
) -> SpanData {
    let stage = &ended.stage;
    let (name, step) = match stage.step {
        Step::Canary(0) => ("step 0: canary scaling up".to_string(), 0),
        Step::Canary(n) => (format!("step {n}/{steps}: {}% on the canary", ended.weight), n),
        Step::Promotion => ("promotion".to_string(), steps + 1),
    };
    let status = if ended.outcome.is_rollback() { Status::error(ended.outcome.as_str()) } else { Status::Ok };
    let mut attributes = common(rollout, &stage.revision);
    attributes.extend([
        KeyValue::new("serin.step", i64::from(step)),
        KeyValue::new("serin.steps", i64::from(steps)),
        KeyValue::new("serin.weight", i64::from(ended.weight)),
        KeyValue::new("serin.outcome", ended.outcome.as_str()),
    ]);
    span(
        rollout.uid,
        &stage.revision,
        stage_span_id(rollout.uid, stage),
        root_span_id(rollout.uid, &stage.revision),
        name,
        (start, end),
        attributes,
        status,
    )
}

/// The spans of one check: one per gate, children of the stage's span.
pub fn gate_spans(rollout: RolloutRef, check: &Check, start: Timestamp, end: Timestamp) -> Vec<SpanData> {
    let parent = stage_span_id(rollout.uid, &check.stage);
    check
        .gates
        .iter()
        .map(|gate| {
            let at = gate.at.as_ref().map_or(end, |t| t.0);
            let key = format!("{}/gate/{}/{}", check.stage.step.key(), gate.name, at.as_nanosecond());
            let mut attributes = common(rollout, &check.stage.revision);
            if let Step::Canary(n) = check.stage.step {
                attributes.push(KeyValue::new("serin.step", i64::from(n)));
            }
            attributes.extend(gate_attributes(gate));
            let status =
                if gate.verdict == Verdict::Fail { Status::error("gate failed") } else { Status::Ok };
            span(
                rollout.uid,
                &check.stage.revision,
                span_id(rollout.uid, &check.stage.revision, &key),
                parent,
                format!("gate {}", gate.name),
                (start, end),
                attributes,
                status,
            )
        })
        .collect()
}

fn gate_attributes(gate: &GateStatus) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("serin.gate", gate.name.clone()),
        KeyValue::new("serin.threshold", gate.threshold.clone()),
        KeyValue::new("serin.verdict", verdict(gate.verdict)),
    ];
    if let Some(value) = gate.value {
        attributes.push(KeyValue::new("serin.value", value));
    }
    if let Some(value) = gate.primary_value {
        attributes.push(KeyValue::new("serin.primary_value", value));
    }
    if let Some(requests) = gate.requests {
        attributes.push(KeyValue::new("serin.requests", requests));
    }
    attributes
}

/// A verdict as it appears in labels and attributes.
pub fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "Pass",
        Verdict::Fail => "Fail",
        Verdict::InsufficientData => "InsufficientData",
    }
}

/// The root span of a revision's rollout that ended.
pub fn rollout_span(rollout: RolloutRef, ended: &RolloutEnded, start: Timestamp, end: Timestamp) -> SpanData {
    let mut attributes = common(rollout, &ended.revision);
    attributes.extend([
        KeyValue::new("serin.steps", i64::from(ended.steps)),
        KeyValue::new("serin.outcome", ended.outcome.as_str()),
    ]);
    let status = if ended.outcome.is_rollback() { Status::error(ended.outcome.as_str()) } else { Status::Ok };
    span(
        rollout.uid,
        &ended.revision,
        root_span_id(rollout.uid, &ended.revision),
        SpanId::INVALID,
        format!("rollout {}/{} revision {}", rollout.namespace, rollout.name, ended.revision),
        (start, end),
        attributes,
        status,
    )
}

fn common(rollout: RolloutRef, revision: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("k8s.namespace.name", rollout.namespace.to_string()),
        KeyValue::new("serin.rollout", rollout.name.to_string()),
        KeyValue::new("serin.rollout.uid", rollout.uid.to_string()),
        KeyValue::new("serin.revision", revision.to_string()),
    ]
}

#[allow(clippy::too_many_arguments)]
fn span(
    uid: &str,
    revision: &str,
    id: SpanId,
    parent: SpanId,
    name: String,
    (start, end): (Timestamp, Timestamp),
    attributes: Vec<KeyValue>,
    status: Status,
) -> SpanData {
    let end = if end < start { start } else { end };
    SpanData {
        span_context: SpanContext::new(
            trace_id(uid, revision),
            id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(name),
        start_time: SystemTime::from(start),
        end_time: SystemTime::from(end),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder("serin")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

/// The URL spans are posted to: the endpoint with [`TRACES_PATH`] appended, as for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, unless it already ends with it.
pub fn traces_url(endpoint: &str) -> Result<String, TraceError> {
    let trimmed = endpoint.trim();
    let valid = (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
        && trimmed.parse::<http::Uri>().is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if !valid {
        return Err(TraceError::Endpoint { endpoint: endpoint.to_string() });
    }
    let base = trimmed.trim_end_matches('/');
    Ok(if base.ends_with(TRACES_PATH) { base.to_string() } else { format!("{base}{TRACES_PATH}") })
}

/// Sends finished spans to an OTLP collector in batches, from a thread of its own.
#[derive(Debug)]
pub struct Exporter {
    processor: BatchSpanProcessor,
    /// Where spans go.
    pub url: String,
}

impl Exporter {
    /// An exporter to the collector at `endpoint` (OTLP/HTTP, protobuf), with this process as
    /// the resource: `service.name` (`OTEL_SERVICE_NAME`, default `serin`),
    /// `service.instance.id` and `service.version`.
    pub fn new(endpoint: &str, instance: &str) -> Result<Exporter, TraceError> {
        let url = traces_url(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TraceError::Exporter { endpoint: url.clone(), reason: e.to_string() })?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        let service = std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty());
        processor.set_resource(
            &Resource::builder_empty()
                .with_service_name(service.unwrap_or_else(|| "serin".to_string()))
                .with_attributes([
                    KeyValue::new("service.instance.id", instance.to_string()),
                    KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                ])
                .build(),
        );
        Ok(Exporter { processor, url })
    }

    /// Queues a finished span. Never blocks; a full queue drops the span.
    pub fn export(&self, span: SpanData) {
        self.processor.on_end(span);
    }

    /// Sends what is queued and stops the export thread.
    pub fn shutdown(&self) {
        if let Err(error) = self.processor.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(%error, "could not flush the last spans to the OTLP collector");
        }
    }
}

fn fnv1a_128(parts: &[&str]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    for byte in framed(parts) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

fn fnv1a_64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in framed(parts) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The parts' bytes, each followed by a 0xff byte (never in UTF-8), so ("ab","c") and
/// ("a","bc") differ.
fn framed<'a>(parts: &'a [&'a str]) -> impl Iterator<Item = u8> + 'a {
    parts.iter().flat_map(|p| p.bytes().chain(std::iter::once(0xff)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use opentelemetry::Value;

    use super::*;
    use crate::telemetry::progress::Outcome;

    const R: RolloutRef = RolloutRef { uid: "0f6c-uid", namespace: "shop", name: "web" };

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
    }

    fn stage(step: Step) -> Stage {
        Stage { revision: "abc123".into(), step }
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(trace_id("u", "r1"), trace_id("u", "r1"));
        assert_ne!(trace_id("u", "r1"), trace_id("u", "r2"));
        assert_ne!(trace_id("u1", "r"), trace_id("u2", "r"));
        assert_ne!(trace_id("ab", "c"), trace_id("a", "bc"), "parts are framed");
        assert_ne!(span_id("u", "r", "step-1"), span_id("u", "r", "step-2"));
        assert_ne!(
            root_span_id("u", "r"),
            stage_span_id("u", &Stage { revision: "r".into(), step: Step::Promotion })
        );
        assert_ne!(trace_id("u", "r"), TraceId::INVALID);
    }

    #[test]
    fn a_stage_span_is_a_child_of_the_root_with_its_step_weight_and_outcome() {
        let ended = StageEnded {
            stage: stage(Step::Canary(2)),
            weight: 50,
            started: None,
            outcome: Outcome::Advanced,
        };
        let span = stage_span(R, &ended, 3, t(10), t(40));
        assert_eq!(span.span_context.trace_id(), trace_id(R.uid, "abc123"));
        assert_eq!(span.span_context.span_id(), stage_span_id(R.uid, &ended.stage));
        assert_eq!(span.parent_span_id, root_span_id(R.uid, "abc123"));
        assert_eq!(span.name, "step 2/3: 50% on the canary");
        assert_eq!(span.start_time, SystemTime::from(t(10)));
        assert_eq!(span.end_time, SystemTime::from(t(40)));
        assert_eq!(attr(&span, "serin.step"), Some(&Value::I64(2)));
        assert_eq!(attr(&span, "serin.weight"), Some(&Value::I64(50)));
        assert_eq!(attr(&span, "serin.outcome"), Some(&Value::from("advanced")));
        assert_eq!(attr(&span, "k8s.namespace.name"), Some(&Value::from("shop")));
        assert_eq!(span.status, Status::Ok);
        assert!(span.span_context.is_sampled());

        let failed = StageEnded { outcome: Outcome::Failed, ..ended };
        assert!(matches!(stage_span(R, &failed, 3, t(10), t(5)).status, Status::Error { .. }));
        assert_eq!(
            stage_span(R, &failed, 3, t(10), t(5)).end_time,
            SystemTime::from(t(10)),
            "never ends before it starts"
        );
    }

    #[test]
    fn gate_spans_are_children_of_the_running_stage() {
        let gate = GateStatus {
            name: "latency.p99".into(),
            value: Some(180.0),
            primary_value: Some(120.0),
            threshold: "<= 250ms".into(),
            verdict: Verdict::Pass,
            requests: Some(400.0),
            at: Some(Time(t(30))),
        };
        let check = Check {
            stage: stage(Step::Canary(1)),
            gates: vec![
                gate.clone(),
                GateStatus { name: "successRate".into(), verdict: Verdict::Fail, ..gate },
            ],
        };
        let spans = gate_spans(R, &check, t(29), t(30));
        assert_eq!(spans.len(), 2);
        let parent = stage_span_id(R.uid, &check.stage);
        assert!(spans.iter().all(|s| s.parent_span_id == parent));
        assert_ne!(spans[0].span_context.span_id(), spans[1].span_context.span_id());
        assert_eq!(attr(&spans[0], "serin.gate"), Some(&Value::from("latency.p99")));
        assert_eq!(attr(&spans[0], "serin.value"), Some(&Value::F64(180.0)));
        assert_eq!(attr(&spans[0], "serin.threshold"), Some(&Value::from("<= 250ms")));
        assert_eq!(attr(&spans[0], "serin.verdict"), Some(&Value::from("Pass")));
        assert!(matches!(spans[1].status, Status::Error { .. }));
        // The same check named again (a replayed decision) names the same spans.
        assert_eq!(gate_spans(R, &check, t(29), t(30))[0].span_context, spans[0].span_context);
    }

    #[test]
    fn the_root_span_has_no_parent() {
        let ended =
            RolloutEnded { revision: "abc123".into(), started: None, steps: 3, outcome: Outcome::Succeeded };
        let span = rollout_span(R, &ended, t(0), t(100));
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        assert_eq!(span.span_context.span_id(), root_span_id(R.uid, "abc123"));
        assert_eq!(attr(&span, "serin.outcome"), Some(&Value::from("succeeded")));
        assert_eq!(span.name, "rollout shop/web revision abc123");
    }

    #[test]
    fn the_traces_url_follows_the_otlp_endpoint_convention() {
        assert_eq!(traces_url("http://collector:4318").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces").unwrap(),
            "https://c.example/otlp/v1/traces"
        );
        for bad in ["collector:4318", "", "grpc://collector:4317", "http://"] {
            let error = traces_url(bad).unwrap_err().to_string();
            assert!(error.contains("--otlp-endpoint"), "{error}");
        }
    }
}
