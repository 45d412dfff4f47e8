//! The `Rollout` custom resource, `rollouts.serin.dev/v1alpha1`.
//!
//! Validation lives in the generated schema (bounds, patterns) and in CEL rules, so the API
//! server refuses a nonsensical Rollout at `kubectl apply` time with the field's path. Each rule
//! carries a `fieldPath` and a message that names the fix.
//!
//! Every field that a later capability adds is optional, with a default that keeps older
//! Rollouts valid.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::sequential::{Evaluation, SequentialState};

/// A Go-style duration such as `30s`, `1m`, `1h30m` or `500ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// Names of objects that Serin derives Service names from (`<name>-primary`, `<name>-canary`):
/// a DNS-1035 label short enough to take the longest suffix.
pub const TARGET_NAME_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// A canary rollout of one Deployment.
///
/// Serin watches the named Deployment. When its pod template changes, Serin runs the new
/// version as a canary, shifts traffic to it step by step through an SMI TrafficSplit, checks
/// the analysis gates at each step, and promotes or rolls back.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "Rollout",
    plural = "rollouts",
    singular = "rollout",
    shortname = "srl",
    category = "serin",
    namespaced,
    doc = "A canary rollout of one Deployment over SMI traffic splitting.",
    status = "RolloutStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight","description":"Percent of traffic on the canary"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.step","description":"Current step"}"#,
    printcolumn = r#"{"name":"Steps","type":"integer","jsonPath":".status.steps","description":"Steps in the schedule"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The Deployment to roll out. The user owns it and edits it (`kubectl set image`, Git);
    /// Serin runs its new revisions as canaries.
    pub target_ref: TargetRef,

    /// The Service that clients call. Serin manages `<name>` (the root), `<name>-primary` and
    /// `<name>-canary`.
    pub service: ServiceSpec,

    /// How traffic is split between primary and canary.
    #[serde(default)]
    pub traffic: TrafficSpec,

    /// The step schedule: which canary weights, and how long each step lasts.
    #[serde(default)]
    pub strategy: Strategy,

    /// The metric gates checked at each step. Without gates, the rollout progresses on time
    /// alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,

    /// Seconds the canary may take to become ready, or a step to make progress, before the
    /// rollout fails. Like a Deployment's field of the same name.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: i32,

    /// Holds the rollout at its current step. Traffic stays where it is.
    #[serde(default)]
    pub paused: bool,

    /// What a failed analysis does: `rollback` (the default) sends all traffic back to the
    /// primary; `freeze` holds the current weights and pages a human.
    #[serde(default)]
    pub on_failure: super::hooks::FailurePolicy,

    /// Webhooks called at points of the rollout: approvals, load tests, rollback requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new("self.all(w, self.exists_one(x, x.name == w.name))")
        .message("webhook names must be unique"))]
    pub webhooks: Vec<super::hooks::Webhook>,

    /// Where to send a message at each transition (Slack, Microsoft Teams, generic JSON).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub notifications: Vec<super::hooks::Notification>,

    /// Deployment windows: when the rollout may progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<super::hooks::Schedule>,
}

fn default_progress_deadline() -> i32 {
    600
}

/// A reference to the Deployment that Serin rolls out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the target. Only `apps/v1` is supported.
    #[serde(default = "default_target_api_version")]
    #[schemars(regex(pattern = r"^apps/v1$"))]
    pub api_version: String,
    /// Kind of the target. Only `Deployment` is supported.
    #[serde(default = "default_target_kind")]
    #[schemars(regex(pattern = r"^Deployment$"))]
    pub kind: String,
    /// Name of the Deployment, in the Rollout's namespace. At most 55 characters, so that
    /// `<name>-primary` and `<name>-canary` are valid Service names.
    #[schemars(length(min = 1, max = 55), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
}

fn default_target_api_version() -> String {
    "apps/v1".to_string()
}
fn default_target_kind() -> String {
    "Deployment".to_string()
}

/// The Service in front of the Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Port that the root, primary and canary Services expose.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Container port that traffic goes to: a number or a named port. Defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    /// Name of the Service port. Meshes use it to pick the protocol (`http`, `grpc`).
    #[serde(default = "default_port_name")]
    #[schemars(length(min = 1, max = 15), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub port_name: String,
}

fn default_port_name() -> String {
    "http".to_string()
}

/// Which traffic backend Serin writes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSpec {
    /// SMI TrafficSplit settings.
    #[serde(default)]
    pub smi: SmiTraffic,
}

/// SMI TrafficSplit settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SmiTraffic {
    /// The `split.smi-spec.io` version to write. `auto` picks the best version the API server
    /// serves: meshes read different ones (linkerd-smi v1alpha1/v1alpha2, OSM v1alpha2,
    /// Traefik v1alpha3).
    #[serde(default)]
    pub version: SmiVersion,
}

/// A `split.smi-spec.io` version, or `auto`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SmiVersion {
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "v1alpha1")]
    V1alpha1,
    #[serde(rename = "v1alpha2")]
    V1alpha2,
    #[serde(rename = "v1alpha3")]
    V1alpha3,
    #[serde(rename = "v1alpha4")]
    V1alpha4,
}

/// The step schedule. Give either `stepWeight` (with an optional `maxWeight`) or an explicit
/// list of `weights`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.stepWeight) && has(self.weights))")
        .message("give either stepWeight (with maxWeight) or weights, not both")
        .field_path(".weights"),
    validation = Rule::new("!has(self.maxWeight) || has(self.stepWeight)")
        .message("maxWeight needs stepWeight; for an explicit schedule use weights")
        .field_path(".maxWeight"),
    validation = Rule::new("!has(self.maxWeight) || !has(self.stepWeight) || self.maxWeight >= self.stepWeight")
        .message("maxWeight must be at least stepWeight")
        .field_path(".maxWeight"),
)]
pub struct Strategy {
    /// Canary weight added at each step, in percent. Steps are stepWeight, 2×stepWeight, …
    /// up to maxWeight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub step_weight: Option<i32>,
    /// The last canary weight before promotion, in percent. Defaults to 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: Option<i32>,
    /// An explicit schedule of canary weights in percent, strictly increasing, e.g.
    /// `[5, 10, 25, 50]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20), inner(range(min = 1, max = 100)))]
    #[x_kube(validation = Rule::new("self.all(w, self.exists_one(x, x == w)) && self.isSorted()")
        .message("weights must be strictly increasing, e.g. [5, 10, 25, 50]"))]
    pub weights: Option<Vec<i32>>,
    /// How long each step lasts before its gates are checked, as a duration (`30s`, `1m`).
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')")
        .message("interval must be between 1s and 24h, e.g. 1m"))]
    pub interval: String,
}

fn default_interval() -> String {
    "1m".to_string()
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy { step_weight: None, max_weight: None, weights: None, interval: default_interval() }
    }
}

/// The stepWeight used when a Rollout gives neither stepWeight nor weights.
pub const DEFAULT_STEP_WEIGHT: i32 = 10;
/// The maxWeight used when a Rollout gives stepWeight without maxWeight.
pub const DEFAULT_MAX_WEIGHT: i32 = 50;

impl Strategy {
    /// The canary weight of each step, in order. Never empty; every entry is in 1..=100 and
    /// the list is strictly increasing (the CRD rules guarantee it for stored objects; this
    /// clamps and deduplicates anyway, so a Rollout that skipped validation cannot panic the
    /// operator).
    pub fn step_weights(&self) -> Vec<i32> {
        let mut weights = match &self.weights {
            Some(ws) if !ws.is_empty() => ws.iter().map(|w| (*w).clamp(1, 100)).collect(),
            _ => {
                let step = self.step_weight.unwrap_or(DEFAULT_STEP_WEIGHT).clamp(1, 100);
                let max = self.max_weight.unwrap_or(DEFAULT_MAX_WEIGHT).clamp(step, 100);
                (1..).map(|i| i * step).take_while(|w| *w <= max).collect::<Vec<_>>()
            }
        };
        weights.sort_unstable();
        weights.dedup();
        weights
    }
}

/// Metric gates checked at each step, comparing canary with primary.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.sequential) || (has(self.method) && self.method == 'sequential')")
        .message("analysis.sequential is only read with method: sequential")
        .field_path(".sequential"),
    validation = Rule::new("!has(self.method) || self.method != 'sequential' || !has(self.gates) || !has(self.gates.latency) || self.gates.latency.all(g, has(g.maxMs))")
        .message("with method: sequential each latency gate needs maxMs: the latency above which a request counts as slow")
        .field_path(".gates.latency"),
)]
pub struct Analysis {
    /// The metric window, as a duration. Defaults to the step interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')")
        .message("window must be at least 1s, e.g. 1m"))]
    pub window: Option<String>,
    /// Where the metrics come from: the SMI Traffic Metrics API (default) or Prometheus.
    #[serde(default)]
    pub source: MetricSourceSpec,
    /// Fewest canary requests in a window for a verdict. Below it the result is "insufficient
    /// data": never a pass, and handled by `onInsufficientData`.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 0, max = 1000000000))]
    pub min_requests: i64,
    /// Failed checks tolerated before rollback.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub tolerance: i32,
    /// What to do while there is too little traffic for a verdict.
    #[serde(default)]
    pub on_insufficient_data: InsufficientDataPolicy,
    /// The gates.
    #[serde(default)]
    pub gates: Gates,
    /// How the canary is judged. `threshold` checks every gate against its threshold at each
    /// step; `sequential` compares the canary's failures (and, for latency gates with `maxMs`,
    /// its slow requests) with the primary's in anytime-valid tests, rolling back as soon as
    /// the evidence of a regression is strong enough (`analysis.sequential`).
    #[serde(default)]
    pub method: AnalysisMethod,
    /// Settings of the sequential method; defaults apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialAnalysis>,
}

/// `threshold` or `sequential`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum AnalysisMethod {
    /// Each gate against its threshold, with `tolerance` failed checks.
    #[default]
    Threshold,
    /// Anytime-valid tests of the canary against the primary.
    Sequential,
}

/// Settings of `analysis.method: sequential`. See the sequential analysis reference.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SequentialAnalysis {
    /// The largest probability of rolling back a canary that fails (and is slow) no more often
    /// than the primary, over the whole rollout however often it is checked. Also the error
    /// rate of the confidence sequence. Split evenly between the failure test and the latency
    /// tests.
    #[serde(default = "default_sequential_alpha")]
    #[x_kube(validation = Rule::new("self > 0.0 && self < 0.5")
        .message("alpha must be greater than 0 and less than 0.5, e.g. 0.05"))]
    pub alpha: f64,
    /// The largest tolerated regression, as a failure-rate ratio canary / primary: 1.5 means
    /// "up to 50% more failures than the primary". The test reports no regression when its
    /// confidence sequence for the ratio lies below it.
    #[serde(default = "default_sequential_margin")]
    #[x_kube(validation = Rule::new("self > 1.0 && self <= 100.0")
        .message("margin is a failure-rate ratio canary/primary greater than 1 and at most 100, e.g. 1.5"))]
    pub margin: f64,
    /// Standard deviation of the prior on the log failure-rate ratio. Larger values detect
    /// large regressions sooner and small ones later.
    #[serde(default = "default_sequential_prior_scale")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 5.0")
        .message("priorScale must be greater than 0 and at most 5, e.g. 1"))]
    pub prior_scale: f64,
    /// What evidence of no regression (the ratio's confidence sequence below `margin`) does:
    /// `advance` lets the schedule go on; `promote` promotes at once, skipping the remaining
    /// steps.
    #[serde(default)]
    pub on_no_regression: NoRegressionAction,
    /// What happens when the last step ends without evidence either way.
    #[serde(default)]
    pub on_no_evidence: NoEvidencePolicy,
}

impl Default for SequentialAnalysis {
    fn default() -> Self {
        SequentialAnalysis {
            alpha: default_sequential_alpha(),
            margin: default_sequential_margin(),
            prior_scale: default_sequential_prior_scale(),
            on_no_regression: NoRegressionAction::default(),
            on_no_evidence: NoEvidencePolicy::default(),
        }
    }
}

fn default_sequential_alpha() -> f64 {
    crate::analysis::sequential::DEFAULT_ALPHA
}
fn default_sequential_margin() -> f64 {
    crate::analysis::sequential::DEFAULT_MARGIN
}
fn default_sequential_prior_scale() -> f64 {
    crate::analysis::sequential::DEFAULT_PRIOR_SCALE
}

/// `advance` or `promote`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum NoRegressionAction {
    /// The schedule goes on: each step still lasts its interval.
    #[default]
    Advance,
    /// Promote at once.
    Promote,
}

/// What to do when the last step ends and the test has decided neither way.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NoEvidencePolicy {
    /// `promote` promotes when the schedule completes, as the threshold method does when
    /// its gates pass; `hold` stays at the last step until the test decides, and rolls back
    /// if it has not decided within `deadline`.
    #[serde(default)]
    pub action: NoEvidenceAction,
    /// With `hold`, how long to wait at the last step for evidence before rolling back.
    #[serde(default = "default_no_evidence_deadline")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')")
        .message("deadline must be at least 1s, e.g. 30m"))]
    pub deadline: String,
}

impl Default for NoEvidencePolicy {
    fn default() -> Self {
        NoEvidencePolicy { action: NoEvidenceAction::default(), deadline: default_no_evidence_deadline() }
    }
}

fn default_no_evidence_deadline() -> String {
    "30m".to_string()
}

/// `promote` or `hold`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum NoEvidenceAction {
    #[default]
    Promote,
    Hold,
}

fn default_min_requests() -> i64 {
    50
}

/// Where gate metrics come from. Give at most one; with neither, the SMI Traffic Metrics API
/// (`metrics.smi-spec.io`) is read through the aggregation layer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.trafficMetrics) && has(self.prometheus))")
    .message("give either trafficMetrics or prometheus as the metric source, not both"))]
pub struct MetricSourceSpec {
    /// Read the SMI Traffic Metrics API (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_metrics: Option<TrafficMetricsSourceSpec>,
    /// Query Prometheus directly, for clusters without a Traffic Metrics server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSourceSpec>,
}

/// The SMI Traffic Metrics API source. No settings yet.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct TrafficMetricsSourceSpec {}

/// A Prometheus source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSourceSpec {
    /// The Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub address: String,
    /// Built-in queries for a mesh: `linkerd`, `istio` or `otel` (OpenTelemetry HTTP semantic
    /// conventions).
    #[serde(default)]
    pub query_set: crate::metrics::querysets::QuerySet,
    /// Your own PromQL instead of the query set. Placeholders: `{{namespace}}`,
    /// `{{deployment}}`, `{{window}}`, `{{quantile}}`; latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<crate::metrics::querysets::QueryTemplates>,
}

/// What to do when a window holds fewer requests than `minRequests`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InsufficientDataPolicy {
    /// `hold` waits at the current step; `fail` counts the window as a failed check.
    #[serde(default)]
    pub action: InsufficientDataAction,
    /// With `hold`, how long to wait for enough traffic before failing the rollout.
    #[serde(default = "default_insufficient_deadline")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')")
        .message("deadline must be at least 1s, e.g. 10m"))]
    pub deadline: String,
}

impl Default for InsufficientDataPolicy {
    fn default() -> Self {
        InsufficientDataPolicy {
            action: InsufficientDataAction::Hold,
            deadline: default_insufficient_deadline(),
        }
    }
}

fn default_insufficient_deadline() -> String {
    "10m".to_string()
}

/// `hold` or `fail`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum InsufficientDataAction {
    #[default]
    Hold,
    Fail,
}

/// Success-rate and latency gates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    /// Success rate of the canary, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateGate>,
    /// Latency quantiles of the canary, in milliseconds. At most one entry per quantile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    #[x_kube(validation = Rule::new("self.all(g, self.exists_one(h, h.quantile == g.quantile))")
        .message("each latency quantile may appear once"))]
    pub latency: Vec<LatencyGate>,
}

/// Success-rate gate. Give `min`, `maxDropVsPrimary`, or both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.min) || has(self.maxDropVsPrimary)")
    .message("successRate needs min, maxDropVsPrimary, or both"))]
pub struct SuccessRateGate {
    /// Lowest acceptable canary success rate, in percent (0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min: Option<f64>,
    /// How many percentage points the canary may be below the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_drop_vs_primary: Option<f64>,
}

/// Latency gate for one quantile. Give `maxMs`, `maxIncreaseVsPrimary`, or both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.maxMs) || has(self.maxIncreaseVsPrimary)")
    .message("a latency gate needs maxMs, maxIncreaseVsPrimary, or both"))]
pub struct LatencyGate {
    /// The quantile: `p50`, `p90` or `p99`.
    pub quantile: LatencyQuantile,
    /// Highest acceptable canary latency at this quantile, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001, max = 3600000.0))]
    pub max_ms: Option<f64>,
    /// How much slower than the primary the canary may be, in percent of the primary's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10000.0))]
    pub max_increase_vs_primary: Option<f64>,
}

/// A latency quantile served by the SMI Traffic Metrics API.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LatencyQuantile {
    P50,
    P90,
    P99,
}

/// Where a rollout is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    /// Serin is creating the primary from the first revision.
    #[default]
    Initializing,
    /// The promoted revision serves all traffic; nothing to do.
    Idle,
    /// A canary is receiving traffic and being analysed.
    Progressing,
    /// `spec.paused` holds the rollout at its step.
    Paused,
    /// The primary is being updated to the canary's revision.
    Promoting,
    /// The last revision was promoted.
    Succeeded,
    /// The last revision was rolled back.
    Failed,
    /// Held at a gate: a new revision waiting to start, a step waiting to advance, or the
    /// last step waiting to promote, until a confirm webhook approves or a deployment window
    /// opens. `status.waiting` says what for.
    Waiting,
    /// `onFailure: freeze` stopped a failing rollout where it was: weights and replicas held
    /// until a human promotes or aborts it.
    Frozen,
}

/// Observed state, following kstatus: `observedGeneration` and the conditions `Ready`,
/// `Reconciling` and `Stalled`, plus `Promoted`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the rollout is.
    #[serde(default)]
    pub phase: Phase,
    /// A human-readable sentence that explains the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The current step, from 1; 0 when no canary runs.
    #[serde(default)]
    pub step: i32,
    /// Number of steps in the schedule.
    #[serde(default)]
    pub steps: i32,
    /// Percent of traffic on the canary.
    #[serde(default)]
    pub canary_weight: i32,
    /// Pod-template hash of the revision being rolled out (the canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Pod-template hash of the revision the primary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_revision: Option<String>,
    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Failed checks at the current revision, against `analysis.tolerance`.
    #[serde(default)]
    pub failed_checks: i32,
    /// The TrafficSplit version in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_split_version: Option<String>,
    /// Since when the gates have lacked data at this step (`analysis.onInsufficientData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insufficient_data_since: Option<Time>,
    /// The last manual request (promote, abort, retry) and what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<RequestStatus>,
    /// The last verdict of each gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateStatus>,
    /// The sequential analysis of the canary revision (`analysis.method: sequential`): the
    /// tests' state, e-values, estimates and sample sizes. Starts afresh with each revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// What a `Waiting` rollout waits for. Present only in phase `Waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingStatus>,
    /// The last call of each webhook (one entry per webhook name): so a pre-rollout hook runs
    /// once per revision, a post-rollout hook once per finished revision, and users see why a
    /// gate waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub hooks: Vec<HookStatus>,
    /// Transitions written together with the state they describe, until their Events are
    /// recorded and the event webhooks and notification receivers are told. Normally empty: a
    /// process that stops between the two writes leaves them here, and the next reconcile (by
    /// whichever process leads) sends them, so no transition is lost and none is recorded twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub outbox: Vec<OutboxEntry>,
    /// Transitions numbered so far for this Rollout; names its Events.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub transitions: i64,
    /// kstatus conditions: Ready, Reconciling, Stalled, Promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What a `Waiting` rollout waits for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WaitingStatus {
    /// `Approval` (a confirm webhook has not answered 2xx), `Window` (outside the deployment
    /// windows) or `InvalidSchedule` (`spec.schedule` cannot be evaluated: progress is blocked
    /// until it is fixed).
    pub reason: WaitReason,
    /// What waits: `Start` (a new revision, the canary not yet scaled up), `Step` (the next
    /// step) or `Promotion`.
    pub before: WaitGate,
    /// The confirm webhook waited for, with reason `Approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// Since when it has waited for this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// With reason `Window`: when the next window opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window_start: Option<Time>,
    /// A sentence: "waiting for approval from <hook>", "outside deployment windows; next
    /// window opens at ...".
    pub message: String,
}

/// Why a rollout waits.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    Approval,
    Window,
    InvalidSchedule,
}

/// What a waiting rollout holds back.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitGate {
    /// Starting a new revision: the canary is not scaled up and gets no traffic.
    Start,
    /// The next step: the canary keeps its current weight.
    Step,
    /// The promotion, after the last step passed: the canary keeps its weight.
    Promotion,
}

/// The last call of one webhook.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HookStatus {
    /// The webhook's name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_: super::hooks::WebhookType,
    /// The canary revision the call was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `Passed` (answered 2xx), `Failed`, or `Pending` (a post-rollout call not made yet).
    pub state: HookState,
    /// The HTTP status of the last attempt, when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Attempts made (1 + retries used).
    #[serde(default)]
    pub attempts: i32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the call ended (or, while `Pending`, when it became due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// The outcome of a webhook call.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookState {
    Pending,
    Passed,
    Failed,
}

/// A transition waiting in [`RolloutStatus::outbox`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// Its number among the Rollout's transitions (`status.transitions`).
    pub seq: i64,
    /// CamelCase reason, e.g. `StepAdvanced`.
    pub reason: String,
    /// A sentence for humans.
    pub message: String,
    /// A failure or rollback.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    /// When it happened.
    pub at: Time,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The last evaluation of one gate.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// The gate, e.g. `successRate` or `latency.p99`.
    pub name: String,
    /// The canary's measured value, or absent when nothing could be measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The primary's measured value, when the gate compares with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_value: Option<f64>,
    /// The threshold, as text, e.g. `>= 99`.
    pub threshold: String,
    /// Pass, Fail or InsufficientData.
    pub verdict: Verdict,
    /// Canary requests in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// When it was evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// The sequential analysis of one canary revision. Bounded: at most 20 share bins per test and
/// at most four tests.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// When Serin last looked at a metrics window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// The end of the last window counted. Each moment is counted once: of a window that
    /// overlaps the previous one, only the part after this is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<Time>,
    /// The step that `stepCanaryRequests` counts.
    #[serde(default)]
    pub step: i32,
    /// Canary requests counted during that step, against `analysis.minRequests`.
    #[serde(default)]
    pub step_canary_requests: f64,
    /// With `onNoEvidence.action: hold`: since when the last step has waited for evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_since: Option<Time>,
    /// The failure test: canary failures against the primary's.
    #[serde(default)]
    pub errors: SequentialTestStatus,
    /// One latency test per distinct latency-gate `maxMs`: requests slower than it count as
    /// failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub latency: Vec<SequentialTestStatus>,
}

/// One sequential test's state and last evaluation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SequentialTestStatus {
    /// For a latency test: the bound in milliseconds above which a request is slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_ms: Option<f64>,
    /// For a latency test: every window so far came from histogram bucket counts, which give
    /// exact slow-request counts, so the test may also conclude "no regression". Windows from
    /// quantiles (the SMI Traffic Metrics API) only bracket them: then only a regression is
    /// concluded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub histogram: bool,
    /// The false-rollback rate of this test: `analysis.sequential.alpha` divided by the number
    /// of tests.
    #[serde(default)]
    pub alpha: f64,
    /// Counts so far (windows, requests, failures by canary share).
    #[serde(default)]
    pub state: SequentialState,
    /// The last evaluation: verdict, e-value, ratio estimate with its confidence sequence,
    /// sample sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

/// A manual request handled by Serin. Requests are made through the `serin.dev/request`
/// annotation, `<action>/<id>`, and each distinct value is handled once.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// The annotation's value, e.g. `promote/1732771234`.
    pub id: String,
    /// Accepted or Refused.
    pub outcome: RequestOutcome,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// What became of a manual request.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    Accepted,
    Refused,
}

/// A gate's verdict. Missing, NaN or stale data is `InsufficientData`, never `Pass`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    InsufficientData,
}

/// Condition types Serin sets.
pub mod condition {
    /// kstatus: the rollout has reached its desired state.
    pub const READY: &str = "Ready";
    /// kstatus: the controller is working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: progress has stopped and needs a human (failed, deadline exceeded).
    pub const STALLED: &str = "Stalled";
    /// The canary revision was promoted.
    pub const PROMOTED: &str = "Promoted";
}

/// Labels and annotations Serin puts on objects it manages.
pub mod labels {
    /// Marks objects Serin created.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The value of [`MANAGED_BY`].
    pub const MANAGER: &str = "serin";
    /// Annotation through which users (and `kubectl serin`) ask for promote, abort or retry:
    /// `<action>/<id>`, where the id makes each request distinct.
    pub const REQUEST: &str = "serin.dev/request";
    /// Annotation on the primary Deployment: the revision of the template it runs.
    pub const REVISION: &str = "serin.dev/revision";
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn spec_from(json: serde_json::Value) -> RolloutSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_minimal_spec_gets_every_default() {
        let spec = spec_from(serde_json::json!({"targetRef": {"name": "web"}, "service": {"port": 80}}));
        assert_eq!(spec.target_ref.api_version, "apps/v1");
        assert_eq!(spec.target_ref.kind, "Deployment");
        assert_eq!(spec.service.port_name, "http");
        assert_eq!(spec.traffic.smi.version, SmiVersion::Auto);
        assert_eq!(spec.strategy.interval, "1m");
        assert_eq!(spec.progress_deadline_seconds, 600);
        assert!(!spec.paused);
        assert_eq!(spec.analysis, None);
        assert_eq!(spec.strategy.step_weights(), vec![10, 20, 30, 40, 50]);
    }

    #[test]
    fn analysis_defaults_hold_on_insufficient_data() {
        let spec = spec_from(serde_json::json!({
            "targetRef": {"name": "web"}, "service": {"port": 80},
            "analysis": {"gates": {"successRate": {"min": 99}}}
        }));
        let analysis = spec.analysis.unwrap();
        assert_eq!(analysis.min_requests, 50);
        assert_eq!(analysis.tolerance, 0);
        assert_eq!(analysis.on_insufficient_data.action, InsufficientDataAction::Hold);
        assert_eq!(analysis.on_insufficient_data.deadline, "10m");
        assert_eq!(analysis.gates.success_rate.unwrap().min, Some(99.0));
    }

    #[test]
    fn schema_defaults_match_serde_defaults() {
        // The API server applies the schema's defaults; the operator applies serde's. They
        // must agree, or an object means different things depending on who read it.
        let crd = serde_json::to_value(Rollout::crd()).unwrap();
        let spec =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["progressDeadlineSeconds"]["default"], 600);
        assert_eq!(spec["strategy"]["properties"]["interval"]["default"], "1m");
        assert_eq!(spec["service"]["properties"]["portName"]["default"], "http");
        assert_eq!(spec["targetRef"]["properties"]["kind"]["default"], "Deployment");
        assert_eq!(spec["analysis"]["properties"]["minRequests"]["default"], 50);
    }

    #[test]
    fn step_weights_follow_step_and_max() {
        let s = |step, max| Strategy { step_weight: step, max_weight: max, ..Strategy::default() };
        assert_eq!(s(Some(25), Some(100)).step_weights(), vec![25, 50, 75, 100]);
        assert_eq!(s(Some(20), None).step_weights(), vec![20, 40]);
        assert_eq!(s(Some(30), Some(80)).step_weights(), vec![30, 60]);
        assert_eq!(s(Some(60), Some(50)).step_weights(), vec![60], "max below step is clamped up to step");
        assert_eq!(s(Some(0), Some(5)).step_weights(), vec![1, 2, 3, 4, 5], "a zero step is clamped to 1");
    }

    #[test]
    fn explicit_weights_are_used_and_sanitised() {
        let s = |ws: Vec<i32>| Strategy { weights: Some(ws), ..Strategy::default() };
        assert_eq!(s(vec![5, 10, 25, 50]).step_weights(), vec![5, 10, 25, 50]);
        assert_eq!(s(vec![50, 10, 10, 500]).step_weights(), vec![10, 50, 100]);
        assert_eq!(s(vec![]).step_weights(), vec![10, 20, 30, 40, 50]);
    }

    #[test]
    fn rollout_round_trips_through_json_and_yaml() {
        let spec = spec_from(serde_json::json!({
            "targetRef": {"name": "web"},
            "service": {"port": 80, "targetPort": "http"},
            "traffic": {"smi": {"version": "v1alpha2"}},
            "strategy": {"weights": [5, 10, 25, 50], "interval": "30s"},
            "analysis": {
                "window": "1m", "minRequests": 100, "tolerance": 2,
                "onInsufficientData": {"action": "fail", "deadline": "5m"},
                "gates": {
                    "successRate": {"min": 99.5, "maxDropVsPrimary": 0.5},
                    "latency": [{"quantile": "p99", "maxMs": 500, "maxIncreaseVsPrimary": 20}]
                }
            },
            "progressDeadlineSeconds": 120,
            "paused": true
        }));
        let mut rollout = Rollout::new("web", spec);
        rollout.status = Some(RolloutStatus {
            observed_generation: Some(3),
            phase: Phase::Progressing,
            step: 2,
            steps: 4,
            canary_weight: 10,
            canary_revision: Some("7d9f21".into()),
            promoted_revision: Some("5c8d9f".into()),
            gates: vec![GateStatus {
                name: "successRate".into(),
                value: Some(97.8),
                primary_value: Some(99.9),
                threshold: ">= 99.5".into(),
                verdict: Verdict::Fail,
                requests: Some(1204.0),
                at: None,
            }],
            ..RolloutStatus::default()
        });
        let json = serde_json::to_string(&rollout).unwrap();
        let back: Rollout = serde_json::from_str(&json).unwrap();
        assert_eq!(back.spec, rollout.spec);
        assert_eq!(back.status, rollout.status);

        let yaml = serde_saphyr::to_string(&rollout).unwrap();
        let back: Rollout = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back.spec, rollout.spec);
        assert_eq!(back.status, rollout.status);
    }

    #[test]
    fn unknown_enum_values_are_refused_by_name() {
        let err = serde_json::from_value::<RolloutSpec>(serde_json::json!({
            "targetRef": {"name": "web"}, "service": {"port": 80},
            "traffic": {"smi": {"version": "v2"}}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("v2"), "{err}");
    }
}
