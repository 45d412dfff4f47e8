//! The views of `kubectl serin`, as pure functions of what was read from the cluster and the
//! current time: `(Snapshot, now, style) -> String`. No I/O and no clock, so the snapshot tests
//! under `operator/tests/snapshots/` pin every view down.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::verdict::{Verdict, verdict};
use crate::api::{
    GateStatus, HookState, HookStatus, Phase, RequestOutcome, RequestStatus, Rollout, Verdict as GateVerdict,
    WaitGate, WaitReason, WaitingStatus, labels,
};
use crate::engine::decide::{Observations, desired_state, type_name};
use crate::engine::revision::template_revision;

/// How many of the latest Events the detailed view shows.
pub const EVENTS_SHOWN: usize = 5;

/// Everything a view shows, as read from the cluster at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The Rollout.
    pub rollout: Rollout,
    /// The target Deployment, which runs the canary; `None` when it does not exist.
    pub target: Option<Deployment>,
    /// The primary Deployment (`<target>-primary`); `None` when it does not exist (yet).
    pub primary: Option<Deployment>,
    /// The Rollout's Events, oldest first.
    pub events: Vec<EventLine>,
}

/// One Event about a Rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    /// When it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// CamelCase reason, e.g. `StepAdvanced`.
    pub reason: String,
    /// The sentence.
    pub note: String,
}

/// Plain text, or text with ANSI colours for a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Ansi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Color {
    Bold,
    Dim,
    Green,
    Yellow,
    Red,
    Cyan,
}

impl Style {
    fn paint(self, text: &str, color: Option<Color>) -> String {
        let code = match (self, color) {
            (Style::Plain, _) | (_, None) => return text.to_string(),
            _ if text.is_empty() => return String::new(),
            (Style::Ansi, Some(Color::Bold)) => "1",
            (Style::Ansi, Some(Color::Dim)) => "2",
            (Style::Ansi, Some(Color::Green)) => "32",
            (Style::Ansi, Some(Color::Yellow)) => "33",
            (Style::Ansi, Some(Color::Red)) => "31",
            (Style::Ansi, Some(Color::Cyan)) => "36",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

fn phase_color(phase: Phase) -> Color {
    match phase {
        Phase::Idle | Phase::Succeeded => Color::Green,
        Phase::Failed => Color::Red,
        Phase::Initializing | Phase::Progressing | Phase::Promoting => Color::Cyan,
        Phase::Paused | Phase::Waiting => Color::Yellow,
        Phase::Frozen => Color::Red,
    }
}

/// A canary revision is in flight: the views show its step and time in it.
fn in_flight(phase: Phase) -> bool {
    matches!(phase, Phase::Progressing | Phase::Paused | Phase::Promoting | Phase::Waiting | Phase::Frozen)
}

fn gate_color(verdict: GateVerdict) -> Color {
    match verdict {
        GateVerdict::Pass => Color::Green,
        GateVerdict::Fail => Color::Red,
        GateVerdict::InsufficientData => Color::Yellow,
    }
}

// ----- facts derived from a snapshot -------------------------------------------------------------

/// One side of the split, as the views show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    /// The Deployment's name.
    pub deployment: String,
    /// The revision it runs, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Percent of traffic it gets; `None` before Serin has reported a status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// `spec.replicas`; `None` when the Deployment does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready replicas.
    pub ready_replicas: i32,
}

impl Side {
    fn readiness(&self) -> String {
        match self.replicas {
            Some(replicas) => format!("{}/{replicas}", self.ready_replicas),
            None => "missing".to_string(),
        }
    }

    fn weight(&self) -> String {
        self.weight.map_or("-".to_string(), |w| format!("{w}%"))
    }

    /// `web-primary 5c8d9f0a1b 80% (2/2 ready)`, for log lines.
    fn phrase(&self) -> String {
        let ready = match self.replicas {
            Some(replicas) => format!("{}/{replicas} ready", self.ready_replicas),
            None => "missing".to_string(),
        };
        format!("{} {} ({ready})", self.revision.as_deref().unwrap_or("-"), self.weight())
    }
}

impl Snapshot {
    /// A snapshot of a Rollout alone, without its Deployments or Events.
    pub fn new(rollout: Rollout) -> Self {
        Snapshot { rollout, target: None, primary: None, events: Vec::new() }
    }

    fn status(&self) -> crate::api::RolloutStatus {
        self.rollout.status.clone().unwrap_or_default()
    }

    /// The phase, `Initializing` when there is no status yet.
    pub fn phase(&self) -> Phase {
        self.rollout.status.as_ref().map_or(Phase::Initializing, |s| s.phase)
    }

    /// The revision of the target Deployment's pod template now.
    pub fn target_revision(&self) -> Option<String> {
        self.target.as_ref()?.spec.as_ref().map(|s| template_revision(&s.template))
    }

    /// The verdict `kubectl serin status` would give.
    pub fn verdict(&self) -> Verdict {
        verdict(&self.rollout, self.target_revision().as_deref())
    }

    /// Percent of traffic on the canary, as Serin routes it in this phase; `None` before Serin
    /// has reported a status.
    pub fn canary_weight(&self) -> Option<i32> {
        let status = self.rollout.status.as_ref()?;
        Some(desired_state(status, &Observations::default()).canary_weight)
    }

    /// The canary side: the target Deployment.
    pub fn canary(&self) -> Side {
        let status = self.status();
        let revision = status.canary_revision.clone().or_else(|| match status.phase {
            Phase::Initializing => self.target_revision(),
            _ => None,
        });
        side(&self.rollout.spec.target_ref.name, self.target.as_ref(), revision, self.canary_weight())
    }

    /// The primary side: `<target>-primary`.
    pub fn primary(&self) -> Side {
        let status = self.status();
        let name =
            format!("{}{}", self.rollout.spec.target_ref.name, crate::engine::resources::PRIMARY_SUFFIX);
        let revision = self
            .primary
            .as_ref()
            .and_then(|p| p.metadata.annotations.as_ref()?.get(labels::REVISION).cloned())
            .or(status.promoted_revision.clone());
        side(&name, self.primary.as_ref(), revision, self.canary_weight().map(|w| 100 - w))
    }

    /// Notes on what Serin has not caught up with yet.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let status = self.status();
        if self.rollout.status.is_none() {
            notes.push("Serin has not reported a status yet (is the operator running?)".to_string());
        }
        if let Some(generation) = self.rollout.metadata.generation
            && self.rollout.status.is_some()
            && status.observed_generation.unwrap_or(0) < generation
        {
            notes.push(format!(
                "the spec is at generation {generation}; the status describes generation {}",
                status.observed_generation.unwrap_or(0)
            ));
        }
        match (&self.target, self.target_revision()) {
            (None, _) => {
                notes.push(format!("Deployment {} does not exist", self.rollout.spec.target_ref.name))
            }
            (Some(_), Some(rev))
                if self.rollout.status.is_some()
                    && status.phase != Phase::Initializing
                    && status.canary_revision.as_deref() != Some(rev.as_str())
                    && status.promoted_revision.as_deref() != Some(rev.as_str()) =>
            {
                notes.push(format!(
                    "Deployment {} has revision {rev}, which Serin has not picked up yet",
                    self.rollout.spec.target_ref.name
                ))
            }
            _ => {}
        }
        notes
    }

    fn full_name(&self) -> String {
        match &self.rollout.metadata.namespace {
            Some(ns) => format!("{ns}/{}", self.name()),
            None => self.name().to_string(),
        }
    }

    fn name(&self) -> &str {
        self.rollout.metadata.name.as_deref().unwrap_or("")
    }
}

fn side(name: &str, deployment: Option<&Deployment>, revision: Option<String>, weight: Option<i32>) -> Side {
    Side {
        deployment: name.to_string(),
        revision,
        weight,
        replicas: deployment.map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
        ready_replicas: deployment.and_then(|d| d.status.as_ref()?.ready_replicas).unwrap_or(0),
    }
}

// ----- formatting helpers ----------------------------------------------------------------------

/// A duration the way kubectl shows ages: `42s`, `3m12s`, `2h5m`, `3d4h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ if (s % 86400) < 3600 => format!("{}d", s / 86400),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn since(at: &Time, now: Timestamp) -> Duration {
    Duration::try_from(at.0.duration_until(now)).unwrap_or(Duration::ZERO)
}

fn ago(at: Option<&Time>, now: Timestamp) -> String {
    at.map_or("-".to_string(), |t| format!("{} ago", human(since(t, now))))
}

/// A number with at most two decimals and no trailing zeros.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn gate_value(gate: &GateStatus, value: Option<f64>) -> String {
    match value {
        None => "-".to_string(),
        Some(v) if gate.name.starts_with("successRate") => format!("{}%", number(v)),
        Some(v) if gate.name.starts_with("latency") => format!("{}ms", number(v)),
        Some(v) => number(v),
    }
}

fn verdict_word(v: GateVerdict) -> &'static str {
    match v {
        GateVerdict::Pass => "Pass",
        GateVerdict::Fail => "Fail",
        GateVerdict::InsufficientData => "InsufficientData",
    }
}

fn request_line(request: &RequestStatus, now: Timestamp) -> String {
    let outcome = match request.outcome {
        RequestOutcome::Accepted => "Accepted",
        RequestOutcome::Refused => "Refused",
    };
    let mut line = format!("{} {outcome}", request.id);
    if let Some(message) = &request.message {
        line.push_str(&format!(": {message}"));
    }
    if let Some(at) = &request.at {
        line.push_str(&format!(" ({})", ago(Some(at), now)));
    }
    line
}

/// `the promotion, for approval from release-gate, for 3m20s`; `the start, for a deployment
/// window that opens in 2h, for 10m`.
fn waiting_line(waiting: &WaitingStatus, now: Timestamp) -> String {
    let what = match waiting.before {
        WaitGate::Start => "the start",
        WaitGate::Step => "the next step",
        WaitGate::Promotion => "the promotion",
    };
    let mut line = match (waiting.reason, &waiting.next_window_start) {
        (WaitReason::Approval, _) => {
            format!("{what}, for approval from {}", waiting.hook.as_deref().unwrap_or("a webhook"))
        }
        (WaitReason::Window, Some(opens)) => {
            let left = Duration::try_from(now.duration_until(opens.0)).unwrap_or(Duration::ZERO);
            format!("{what}, for a deployment window that opens in {}", human(left))
        }
        (WaitReason::Window, None) => format!("{what}, for a deployment window"),
        (WaitReason::InvalidSchedule, _) => format!("{what}, until spec.schedule is fixed"),
    };
    if let Some(at) = &waiting.since {
        line.push_str(&format!(", for {}", human(since(at, now))));
    }
    line
}

fn hook_state_word(state: HookState) -> &'static str {
    match state {
        HookState::Pending => "Pending",
        HookState::Passed => "Passed",
        HookState::Failed => "Failed",
    }
}

fn hook_color(state: HookState) -> Color {
    match state {
        HookState::Pending => Color::Yellow,
        HookState::Passed => Color::Green,
        HookState::Failed => Color::Red,
    }
}

fn hook_answer(hook: &HookStatus) -> String {
    match (&hook.message, hook.code) {
        (Some(message), _) => message.clone(),
        (None, Some(code)) => format!("HTTP {code}"),
        (None, None) => "-".to_string(),
    }
}

struct Cell {
    text: String,
    color: Option<Color>,
}

fn cell(text: impl Into<String>) -> Cell {
    Cell { text: text.into(), color: None }
}

fn colored(text: impl Into<String>, color: Color) -> Cell {
    Cell { text: text.into(), color: Some(color) }
}

/// Aligns cells into columns three spaces apart; the last column is not padded.
fn table(rows: &[Vec<Cell>], style: Style, indent: &str) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.text.chars().count()).max().unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = indent.to_string();
            for (c, cell) in row.iter().enumerate() {
                let last = c + 1 == row.len();
                let pad = if last { 0 } else { widths[c].saturating_sub(cell.text.chars().count()) + 3 };
                line.push_str(&style.paint(&cell.text, cell.color));
                line.push_str(&" ".repeat(pad));
            }
            line.trim_end().to_string()
        })
        .collect()
}

// ----- the views ------------------------------------------------------------------------------

/// The detailed view of one Rollout: phase, step, weights, revisions and readiness, each gate
/// against its threshold, the time in the current step, the last request, and the latest Events.
pub fn render_view(snap: &Snapshot, now: Timestamp, style: Style) -> String {
    let status = snap.status();
    let phase = snap.phase();
    let mut out = Vec::new();
    out.push(format!(
        "{} {}: {}",
        style.paint("Rollout", Some(Color::Bold)),
        style.paint(&snap.full_name(), Some(Color::Bold)),
        style.paint(&format!("{phase:?}"), Some(phase_color(phase)))
    ));

    let mut facts: Vec<Vec<Cell>> = Vec::new();
    if let Some(message) = &status.message {
        facts.push(vec![cell("Message"), cell(message.clone())]);
    }
    let running = in_flight(phase);
    let waiting_to_start = status.waiting.as_ref().is_some_and(|w| w.before == WaitGate::Start);
    if running {
        let mut step = format!("{} of {}", status.step, status.steps);
        if waiting_to_start {
            step.push_str(", not started");
        } else if status.step == 0 && !matches!(phase, Phase::Promoting | Phase::Waiting | Phase::Frozen) {
            step.push_str(", waiting for the canary to become ready");
        }
        if let Some(started) = status.step_started_at.as_ref().filter(|_| !waiting_to_start) {
            let label = match phase {
                Phase::Promoting => "promoting for",
                Phase::Paused => "paused; in this step for",
                Phase::Frozen => "frozen; in this step for",
                _ => "in this step for",
            };
            step.push_str(&format!(
                ", {label} {} (interval {})",
                human(since(started, now)),
                snap.rollout.spec.strategy.interval
            ));
        }
        facts.push(vec![cell("Step"), cell(step)]);
    }
    if let Some(waiting) = &status.waiting {
        facts.push(vec![cell("Waiting"), colored(waiting_line(waiting, now), Color::Yellow)]);
    }
    if phase == Phase::Frozen {
        let name = snap.name();
        facts.push(vec![
            cell("Resolve"),
            colored(
                format!(
                    "kubectl serin promote {name} (go on), kubectl serin promote {name} --full, or kubectl serin abort {name} (roll back)"
                ),
                Color::Red,
            ),
        ]);
    }
    if let Some(analysis) = &snap.rollout.spec.analysis
        && running
        && !waiting_to_start
    {
        facts.push(vec![
            cell("Checks"),
            cell(format!("{} failed at this step, {} tolerated", status.failed_checks, analysis.tolerance)),
        ]);
    }
    if let Some(request) = &status.last_request {
        let color = match request.outcome {
            RequestOutcome::Accepted => None,
            RequestOutcome::Refused => Some(Color::Yellow),
        };
        facts.push(vec![cell("Request"), Cell { text: request_line(request, now), color }]);
    }
    for note in snap.notes() {
        facts.push(vec![cell("Note"), colored(note, Color::Yellow)]);
    }
    out.extend(table(&facts, style, "  "));

    out.push(String::new());
    let header = |names: &[&str]| names.iter().map(|n| colored(*n, Color::Dim)).collect::<Vec<_>>();
    let mut sides = vec![header(&["", "DEPLOYMENT", "REVISION", "READY", "WEIGHT"])];
    for (role, side) in [("canary", snap.canary()), ("primary", snap.primary())] {
        sides.push(vec![
            cell(role),
            cell(side.deployment.clone()),
            cell(side.revision.clone().unwrap_or_else(|| "-".to_string())),
            cell(side.readiness()),
            cell(side.weight()),
        ]);
    }
    out.extend(table(&sides, style, "  "));

    if !status.gates.is_empty() {
        out.push(String::new());
        let mut gates =
            vec![header(&["GATE", "CANARY", "PRIMARY", "THRESHOLD", "REQUESTS", "VERDICT", "CHECKED"])];
        for gate in &status.gates {
            gates.push(vec![
                cell(gate.name.clone()),
                cell(gate_value(gate, gate.value)),
                cell(gate_value(gate, gate.primary_value)),
                cell(gate.threshold.clone()),
                cell(gate.requests.map_or("-".to_string(), number)),
                colored(verdict_word(gate.verdict), gate_color(gate.verdict)),
                cell(ago(gate.at.as_ref(), now)),
            ]);
        }
        out.extend(table(&gates, style, "  "));
    } else if snap.rollout.spec.analysis.is_some() && running && !waiting_to_start {
        out.push(String::new());
        out.push("  No gate checked at this step yet.".to_string());
    }

    if !status.hooks.is_empty() {
        out.push(String::new());
        let mut hooks = vec![header(&["WEBHOOK", "TYPE", "REVISION", "LAST", "ATTEMPTS", "WHEN", "ANSWER"])];
        for hook in &status.hooks {
            hooks.push(vec![
                cell(hook.name.clone()),
                cell(type_name(hook.type_)),
                cell(hook.revision.clone().unwrap_or_else(|| "-".to_string())),
                colored(hook_state_word(hook.state), hook_color(hook.state)),
                cell(if hook.state == HookState::Pending {
                    "-".to_string()
                } else {
                    hook.attempts.to_string()
                }),
                cell(ago(hook.at.as_ref(), now)),
                cell(hook_answer(hook)),
            ]);
        }
        out.extend(table(&hooks, style, "  "));
    }

    out.push(String::new());
    if snap.events.is_empty() {
        out.push(format!("  {}", style.paint("No events.", Some(Color::Dim))));
    } else {
        out.push(format!("  {}", style.paint("EVENTS", Some(Color::Dim))));
        let skip = snap.events.len().saturating_sub(EVENTS_SHOWN);
        let rows: Vec<Vec<Cell>> = snap.events[skip..]
            .iter()
            .map(|e| {
                let color = if e.type_ == "Warning" { Some(Color::Yellow) } else { None };
                vec![
                    cell(ago(e.at.as_ref(), now)),
                    Cell { text: e.reason.clone(), color },
                    cell(e.note.clone()),
                ]
            })
            .collect();
        out.extend(table(&rows, style, "  "));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The table of several Rollouts, for `kubectl serin get` without a name.
pub fn render_table(snaps: &[Snapshot], now: Timestamp, style: Style, with_namespace: bool) -> String {
    if snaps.is_empty() {
        return "No rollouts found.\n".to_string();
    }
    let mut head = vec!["NAME", "PHASE", "STEP", "WEIGHT", "CANARY", "PRIMARY", "IN STEP", "MESSAGE"];
    if with_namespace {
        head.insert(0, "NAMESPACE");
    }
    let mut rows = vec![head.iter().map(|h| cell(*h)).collect::<Vec<_>>()];
    for snap in snaps {
        let status = snap.status();
        let phase = snap.phase();
        let running = in_flight(phase);
        let (canary, primary) = (snap.canary(), snap.primary());
        let mut row = vec![
            cell(snap.name()),
            colored(format!("{phase:?}"), phase_color(phase)),
            cell(if running { format!("{}/{}", status.step, status.steps) } else { "-".to_string() }),
            cell(canary.weight()),
            cell(format!("{} {}", canary.revision.as_deref().unwrap_or("-"), canary.readiness())),
            cell(format!("{} {}", primary.revision.as_deref().unwrap_or("-"), primary.readiness())),
            cell(match (&status.step_started_at, running) {
                (Some(t), true) => human(since(t, now)),
                _ => "-".to_string(),
            }),
            cell(status.message.clone().unwrap_or_default()),
        ];
        if with_namespace {
            row.insert(0, cell(snap.rollout.metadata.namespace.clone().unwrap_or_default()));
        }
        rows.push(row);
    }
    let mut text = table(&rows, style, "").join("\n");
    text.push('\n');
    text
}

/// One line that summarises a Rollout, for logs: what `get -w` prints on each change when its
/// output is not a terminal, and what `status --wait` prints while it waits. It contains no
/// time, so that equal lines mean nothing changed.
pub fn render_line(snap: &Snapshot) -> String {
    let status = snap.status();
    let phase = snap.phase();
    let (canary, primary) = (snap.canary(), snap.primary());
    let mut line = format!("{}: {phase:?}", snap.name());
    if in_flight(phase) {
        line.push_str(&format!(", step {}/{}", status.step, status.steps));
    }
    line.push_str(&format!(", canary {}, primary {}", canary.phrase(), primary.phrase()));
    if let Some(message) = &status.message {
        line.push_str(&format!(": {message}"));
    }
    line
}

/// One Event as a log line.
pub fn render_event(event: &EventLine) -> String {
    let kind = if event.type_ == "Warning" { " (Warning)" } else { "" };
    format!("event {}{kind}: {}", event.reason, event.note)
}

/// What `kubectl serin status` prints when it stops.
pub fn render_verdict(name: &str, verdict: &Verdict, timeout: Option<Duration>) -> String {
    match verdict {
        Verdict::Healthy { revision } => {
            format!("rollout {name}: revision {revision} is promoted and healthy\n")
        }
        Verdict::Failed { revision, message, failing_gates } => {
            let mut s = format!("rollout {name}: revision {revision} failed: {message}\n");
            for gate in failing_gates {
                s.push_str(&format!(
                    "  gate {}: canary {}{}, threshold {}\n",
                    gate.name,
                    gate_value(gate, gate.value),
                    gate.primary_value.map_or(String::new(), |_| format!(
                        ", primary {}",
                        gate_value(gate, gate.primary_value)
                    )),
                    gate.threshold
                ));
            }
            s
        }
        Verdict::Paused { revision, message } => format!(
            "rollout {name}: revision {revision} is paused: {message}\n  resume with: kubectl serin resume {name}\n"
        ),
        Verdict::Frozen { revision, message, failing_gates } => {
            let mut s = format!("rollout {name}: revision {revision} is frozen: {message}\n");
            for gate in failing_gates {
                s.push_str(&format!(
                    "  gate {}: canary {}, threshold {}\n",
                    gate.name,
                    gate_value(gate, gate.value),
                    gate.threshold
                ));
            }
            s.push_str(&format!(
                "  go on with: kubectl serin promote {name}; roll back with: kubectl serin abort {name}\n"
            ));
            s
        }
        Verdict::Pending { reason } => match timeout {
            Some(t) if !t.is_zero() => format!("rollout {name}: timed out after {}: {reason}\n", human(t)),
            _ => format!("rollout {name}: in progress: {reason}\n"),
        },
    }
}

// ----- the machine-readable view ----------------------------------------------------------------

/// The machine-readable view (`-o json`, `-o yaml`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What `kubectl serin status` would conclude: Healthy, Failed, Paused or Pending.
    pub verdict: Verdict,
    pub step: i32,
    pub steps: i32,
    pub canary: Side,
    pub primary: Side,
    /// The revision of the target Deployment's pod template now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Seconds since the current step began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_in_step: Option<u64>,
    pub failed_checks: i32,
    pub gates: Vec<GateStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_request: Option<RequestStatus>,
    /// What a `Waiting` rollout waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingStatus>,
    /// The last call of each webhook.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookStatus>,
    /// The latest Events, oldest first.
    pub events: Vec<EventLine>,
}

/// The machine-readable view of one Rollout.
pub fn view(snap: &Snapshot, now: Timestamp) -> View {
    let status = snap.status();
    let running = in_flight(snap.phase());
    let skip = snap.events.len().saturating_sub(EVENTS_SHOWN);
    View {
        name: snap.name().to_string(),
        namespace: snap.rollout.metadata.namespace.clone(),
        phase: snap.phase(),
        message: status.message.clone(),
        verdict: snap.verdict(),
        step: status.step,
        steps: status.steps,
        canary: snap.canary(),
        primary: snap.primary(),
        target_revision: snap.target_revision(),
        generation: snap.rollout.metadata.generation,
        observed_generation: status.observed_generation,
        step_started_at: status.step_started_at.clone().filter(|_| running),
        seconds_in_step: status.step_started_at.as_ref().filter(|_| running).map(|t| since(t, now).as_secs()),
        failed_checks: status.failed_checks,
        gates: status.gates.clone(),
        last_request: status.last_request.clone(),
        waiting: status.waiting.clone(),
        hooks: status.hooks.clone(),
        events: snap.events[skip..].to_vec(),
    }
}
