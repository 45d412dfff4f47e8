//! Snapshot tests of the views of `kubectl serin`: each view is rendered from a fixed Rollout,
//! its Deployments, its Events and a fixed time, and compared with a reviewed file under
//! `tests/snapshots/`. `SERIN_UPDATE_SNAPSHOTS=1 cargo test -p serin --test plugin_render`
//! rewrites the files; review the diff before committing it.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use serin::api::Rollout;
use serin::engine::revision::template_revision;
use serin::plugin::cli::Cli;
use serin::plugin::render::{
    EventLine, Snapshot, Style, render_event, render_line, render_table, render_verdict, render_view, view,
};

/// Compares `actual` with `tests/snapshots/<name>`, or rewrites it with SERIN_UPDATE_SNAPSHOTS=1.
fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var("SERIN_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("no snapshot {} ({e}); write it with SERIN_UPDATE_SNAPSHOTS=1 and review it", path.display())
    });
    if expected != actual {
        let first = expected.lines().zip(actual.lines()).position(|(a, b)| a != b);
        panic!(
            "{name} differs from {} (first difference at line {}).\n--- expected\n{expected}\n--- actual\n{actual}\n\
             If the change is intended, rerun with SERIN_UPDATE_SNAPSHOTS=1 and review the diff.",
            path.display(),
            first.map_or("end".to_string(), |l| (l + 1).to_string()),
        );
    }
}

fn now() -> Timestamp {
    "2025-11-28T12:00:00Z".parse().unwrap()
}

/// An RFC 3339 time `seconds` before [`now`].
fn ago(seconds: i64) -> String {
    Timestamp::from_second(now().as_second() - seconds).unwrap().to_string()
}

fn deployment(name: &str, image: &str, replicas: i32, ready: i32, revision: Option<&str>) -> Deployment {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "web", "image": image}]}}
        },
        "status": {"replicas": replicas, "readyReplicas": ready}
    });
    if let Some(rev) = revision {
        d["metadata"]["annotations"] = json!({"serin.dev/revision": rev});
    }
    serde_json::from_value(d).unwrap()
}

fn target(image: &str, replicas: i32, ready: i32) -> Deployment {
    deployment("web", image, replicas, ready, None)
}

fn revision_of(d: &Deployment) -> String {
    template_revision(&d.spec.as_ref().unwrap().template)
}

fn rollout(name: &str, spec_extra: Value, status: Option<Value>) -> Rollout {
    let mut spec = json!({
        "targetRef": {"name": "web"}, "service": {"port": 80},
        "strategy": {"weights": [10, 20, 30, 40, 50], "interval": "1m"}
    });
    for (k, v) in spec_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut r = json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": "shop", "generation": 3, "uid": "u-1"},
        "spec": spec
    });
    if let Some(status) = status {
        r["status"] = status;
    }
    serde_json::from_value(r).unwrap()
}

fn event(seconds_ago: i64, warning: bool, reason: &str, note: &str) -> EventLine {
    serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>(json!(ago(seconds_ago)))
        .map(|at| EventLine {
            at: Some(at),
            type_: if warning { "Warning" } else { "Normal" }.to_string(),
            reason: reason.to_string(),
            note: note.to_string(),
        })
        .unwrap()
}

const OLD: &str = "5c8d9f0a1b";

fn analysis() -> Value {
    json!({"analysis": {"tolerance": 2, "gates": {
        "successRate": {"min": 99, "maxDropVsPrimary": 0.5},
        "latency": [{"quantile": "p99", "maxMs": 500}]
    }}})
}

/// A canary at step 2 of 5 with one failed check: the richest view.
fn progressing() -> Snapshot {
    let web = target("web:2", 2, 2);
    let rev = revision_of(&web);
    let status = json!({
        "observedGeneration": 3, "phase": "Progressing", "step": 2, "steps": 5, "canaryWeight": 20,
        "canaryRevision": rev, "promotedRevision": OLD, "stepStartedAt": ago(72), "failedChecks": 1,
        "message": format!("step 2/5: successRate 97.8 (threshold >= 99, >= primary - 0.5) (1 of 2 tolerated)"),
        "gates": [
            {"name": "successRate", "value": 97.8, "primaryValue": 99.91, "threshold": ">= 99, >= primary - 0.5",
             "verdict": "Fail", "requests": 1204.0, "at": ago(12)},
            {"name": "latency.p99", "value": 412.5, "threshold": "<= 500ms", "verdict": "Pass",
             "requests": 1204.0, "at": ago(12)}
        ],
        "lastRequest": {"id": "promote/1764330000000", "outcome": "Accepted", "at": ago(300)}
    });
    Snapshot {
        rollout: rollout("web", analysis(), Some(status)),
        primary: Some(deployment("web-primary", "web:1", 2, 2, Some(OLD))),
        target: Some(web),
        events: vec![
            event(3600, false, "Initialized", "primary initialized at revision 5c8d9f0a1b"),
            event(
                400,
                false,
                "NewRevision",
                &format!("new revision {rev} detected; starting canary analysis"),
            ),
            event(390, false, "StepAdvanced", "step 1/5: 10% of traffic on the canary"),
            event(300, false, "StepAdvanced", "step 2/5: 20% of traffic on the canary"),
            event(
                132,
                true,
                "CheckFailed",
                "step 2/5: successRate 97.8 (threshold >= 99, >= primary - 0.5) (1 of 2 tolerated)",
            ),
            event(72, false, "Paused", "paused at step 2"),
            event(72, false, "Resumed", "resumed at step 2"),
        ],
    }
}

fn failed() -> Snapshot {
    let web = target("web:2", 0, 0);
    let rev = revision_of(&web);
    let message = "rolled back: step 3/5: successRate 91.2 (threshold >= 99, >= primary - 0.5) (3 failed checks, 2 tolerated)";
    let status = json!({
        "observedGeneration": 3, "phase": "Failed", "step": 0, "steps": 5, "canaryWeight": 0,
        "canaryRevision": rev, "promotedRevision": OLD, "message": message,
        "gates": [
            {"name": "successRate", "value": 91.2, "primaryValue": 99.9, "threshold": ">= 99, >= primary - 0.5",
             "verdict": "Fail", "requests": 880.0, "at": ago(40)},
            {"name": "latency.p99", "value": 380.0, "threshold": "<= 500ms", "verdict": "Pass",
             "requests": 880.0, "at": ago(40)}
        ],
        "conditions": [{"type": "Stalled", "status": "True", "reason": "Failed", "message": message,
                        "lastTransitionTime": ago(40)}]
    });
    Snapshot {
        rollout: rollout("web", analysis(), Some(status)),
        primary: Some(deployment("web-primary", "web:1", 2, 2, Some(OLD))),
        target: Some(web),
        events: vec![event(40, true, "AnalysisFailed", message)],
    }
}

fn paused() -> Snapshot {
    let web = target("web:2", 3, 3);
    let rev = revision_of(&web);
    let status = json!({
        "observedGeneration": 3, "phase": "Paused", "step": 1, "steps": 2, "canaryWeight": 25,
        "canaryRevision": rev, "promotedRevision": OLD, "stepStartedAt": ago(3700),
        "message": "paused at step 1/2 with 25% on the canary (spec.paused)"
    });
    Snapshot {
        rollout: rollout(
            "web",
            json!({"paused": true, "strategy": {"weights": [25, 50], "interval": "30s"}}),
            Some(status),
        ),
        primary: Some(deployment("web-primary", "web:1", 3, 3, Some(OLD))),
        target: Some(web),
        events: vec![event(3700, false, "Paused", "paused at step 1")],
    }
}

fn idle() -> Snapshot {
    let web = target("web:1", 0, 0);
    let rev = revision_of(&web);
    let status = json!({
        "observedGeneration": 3, "phase": "Idle", "steps": 5, "promotedRevision": rev,
        "message": format!("primary runs revision {rev}; all traffic on primary")
    });
    Snapshot {
        rollout: rollout("web", json!({}), Some(status)),
        primary: Some(deployment("web-primary", "web:1", 2, 2, Some(&rev))),
        target: Some(web),
        events: Vec::new(),
    }
}

/// Right after `kubectl set image`: Serin has not picked the new revision up yet.
fn just_applied() -> Snapshot {
    let mut snap = idle();
    let web = target("web:3", 0, 0);
    snap.target = Some(web);
    snap.rollout.metadata.generation = Some(4);
    snap
}

/// The last step passed; a confirm-promotion webhook has not approved yet.
fn waiting() -> Snapshot {
    let web = target("web:2", 2, 2);
    let rev = revision_of(&web);
    let message = "waiting for approval from release-gate (confirm-promotion); answered 403 Forbidden: \
                   change freeze, asking again every 1m";
    let status = json!({
        "observedGeneration": 3, "phase": "Waiting", "step": 5, "steps": 5, "canaryWeight": 50,
        "canaryRevision": rev, "promotedRevision": OLD, "stepStartedAt": ago(20),
        "message": format!("step 5/5: {message}"),
        "waiting": {"reason": "Approval", "before": "Promotion", "hook": "release-gate", "since": ago(200),
                    "message": message},
        "hooks": [
            {"name": "smoke", "type": "pre-rollout", "revision": rev, "state": "Passed", "code": 200,
             "attempts": 1, "at": ago(700)},
            {"name": "load", "type": "rollout", "revision": rev, "state": "Passed", "code": 200,
             "attempts": 2, "at": ago(20)},
            {"name": "release-gate", "type": "confirm-promotion", "revision": rev, "state": "Failed",
             "code": 403, "attempts": 1, "message": "answered 403 Forbidden: change freeze", "at": ago(80)}
        ]
    });
    Snapshot {
        rollout: rollout("web", json!({}), Some(status)),
        primary: Some(deployment("web-primary", "web:1", 2, 2, Some(OLD))),
        target: Some(web),
        events: vec![
            event(
                200,
                false,
                "WaitingForApproval",
                "revision x: the promotion is waiting for approval from release-gate",
            ),
            event(80, false, "ApprovalRejected", "release-gate did not approve the promotion"),
        ],
    }
}

/// A new revision outside the deployment windows.
fn waiting_for_window() -> Snapshot {
    let web = target("web:2", 0, 0);
    let rev = revision_of(&web);
    let message =
        "outside deployment windows; next window opens at 2025-11-28 15:00 CET (Europe/Berlin), 14:00 UTC";
    let status = json!({
        "observedGeneration": 3, "phase": "Waiting", "step": 0, "steps": 5, "canaryWeight": 0,
        "canaryRevision": rev, "promotedRevision": OLD,
        "message": format!("revision {rev}: {message}"),
        "waiting": {"reason": "Window", "before": "Start", "since": ago(600),
                    "nextWindowStart": "2025-11-28T14:00:00Z", "message": message}
    });
    Snapshot {
        rollout: rollout("web", analysis(), Some(status)),
        primary: Some(deployment("web-primary", "web:1", 2, 2, Some(OLD))),
        target: Some(web),
        events: vec![event(
            600,
            false,
            "WaitingForWindow",
            &format!("revision {rev}: the start waits: {message}"),
        )],
    }
}

/// `onFailure: freeze` after a failed check.
fn frozen() -> Snapshot {
    let web = target("web:2", 2, 2);
    let rev = revision_of(&web);
    let message = "frozen (AnalysisFailed): step 3/5: successRate 91.2 (threshold >= 99, >= primary - 0.5) \
                   (3 failed checks, 2 tolerated). 30% stays on the canary until a human resolves it: \
                   `kubectl serin promote` goes on, `kubectl serin abort` rolls back";
    let status = json!({
        "observedGeneration": 3, "phase": "Frozen", "step": 3, "steps": 5, "canaryWeight": 30,
        "canaryRevision": rev, "promotedRevision": OLD, "stepStartedAt": ago(500), "failedChecks": 3,
        "message": message,
        "gates": [
            {"name": "successRate", "value": 91.2, "primaryValue": 99.9, "threshold": ">= 99, >= primary - 0.5",
             "verdict": "Fail", "requests": 880.0, "at": ago(40)}
        ],
        "conditions": [{"type": "Stalled", "status": "True", "reason": "Frozen", "message": message,
                        "lastTransitionTime": ago(40)}]
    });
    Snapshot {
        rollout: rollout(
            "web",
            json!({"onFailure": "freeze", "analysis": analysis()["analysis"]}),
            Some(status),
        ),
        primary: Some(deployment("web-primary", "web:1", 2, 2, Some(OLD))),
        target: Some(web),
        events: vec![event(40, true, "Frozen", message)],
    }
}

fn no_status() -> Snapshot {
    Snapshot { rollout: rollout("api", json!({}), None), target: None, primary: None, events: Vec::new() }
}

#[test]
fn the_detailed_view_of_a_progressing_rollout() {
    snapshot("get-progressing.txt", &render_view(&progressing(), now(), Style::Plain));
}

#[test]
fn the_detailed_view_in_colour() {
    snapshot("get-progressing-ansi.txt", &render_view(&progressing(), now(), Style::Ansi));
}

#[test]
fn the_detailed_view_of_a_failed_rollout() {
    snapshot("get-failed.txt", &render_view(&failed(), now(), Style::Plain));
}

#[test]
fn the_detailed_view_of_a_paused_rollout() {
    snapshot("get-paused.txt", &render_view(&paused(), now(), Style::Plain));
}

#[test]
fn the_detailed_view_of_a_waiting_rollout() {
    snapshot("get-waiting.txt", &render_view(&waiting(), now(), Style::Plain));
    snapshot("get-waiting-window.txt", &render_view(&waiting_for_window(), now(), Style::Plain));
}

#[test]
fn the_detailed_view_of_a_frozen_rollout() {
    snapshot("get-frozen.txt", &render_view(&frozen(), now(), Style::Plain));
}

#[test]
fn the_detailed_view_of_an_idle_rollout() {
    snapshot("get-idle.txt", &render_view(&idle(), now(), Style::Plain));
}

#[test]
fn the_detailed_view_says_what_serin_has_not_caught_up_with() {
    snapshot("get-just-applied.txt", &render_view(&just_applied(), now(), Style::Plain));
    snapshot("get-no-status.txt", &render_view(&no_status(), now(), Style::Plain));
}

#[test]
fn the_table_of_rollouts() {
    let mut other = paused();
    other.rollout.metadata.name = Some("checkout".into());
    other.rollout.metadata.namespace = Some("payments".into());
    let mut waiting = waiting();
    waiting.rollout.metadata.name = Some("api".into());
    let mut frozen = frozen();
    frozen.rollout.metadata.name = Some("db".into());
    let snaps = vec![progressing(), other, failed(), idle(), no_status(), waiting, frozen];
    let mut text = render_table(&snaps, now(), Style::Plain, false);
    text.push_str("\n# with -A\n");
    text.push_str(&render_table(&snaps, now(), Style::Plain, true));
    text.push_str("\n# none\n");
    text.push_str(&render_table(&[], now(), Style::Plain, false));
    snapshot("get-table.txt", &text);
}

#[test]
fn log_lines_for_pipes_and_ci() {
    let mut text = String::new();
    for snap in [no_status(), idle(), just_applied(), progressing(), paused(), failed(), waiting(), frozen()]
    {
        text.push_str(&render_line(&snap));
        text.push('\n');
    }
    for event in &progressing().events[3..5] {
        text.push_str(&render_event(event));
        text.push('\n');
    }
    snapshot("lines.txt", &text);
}

#[test]
fn the_final_words_of_status() {
    let mut text = String::new();
    for snap in [idle(), failed(), paused(), progressing(), just_applied(), no_status(), waiting(), frozen()]
    {
        let name = snap.rollout.metadata.name.clone().unwrap();
        let verdict = snap.verdict();
        text.push_str(&format!("# {} (exit {})\n", verdict.word(), verdict.exit().code()));
        text.push_str(&render_verdict(&name, &verdict, Some(std::time::Duration::from_secs(600))));
    }
    text.push_str("# without --wait\n");
    text.push_str(&render_verdict("web", &progressing().verdict(), None));
    snapshot("status-verdicts.txt", &text);
}

#[test]
fn the_machine_readable_views() {
    let json = serde_json::to_string_pretty(&view(&progressing(), now())).unwrap() + "\n";
    snapshot("get-progressing.json", &json);
    snapshot("get-failed.yaml", &serde_saphyr::to_string(&view(&failed(), now())).unwrap());
    let waiting = serde_json::to_value(view(&waiting(), now())).unwrap();
    assert_eq!(waiting["waiting"]["hook"], "release-gate");
    assert_eq!(waiting["hooks"].as_array().unwrap().len(), 3);
    let frozen = serde_json::to_value(view(&frozen(), now())).unwrap();
    assert_eq!(frozen["verdict"]["verdict"], "Frozen");
    // It parses back as JSON with the documented fields.
    let value: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["verdict"]["verdict"], "Pending");
    assert_eq!(value["canary"]["weight"], 20);
    assert_eq!(value["primary"]["weight"], 80);
    assert_eq!(value["secondsInStep"], 72);
    assert_eq!(value["events"].as_array().unwrap().len(), 5, "the latest five events");
}

#[test]
fn help_shows_examples() {
    let mut text = Cli::command().render_long_help().to_string();
    for sub in ["get", "status", "promote", "abort", "retry", "pause", "resume", "completion"] {
        text.push_str(&format!("\n===== kubectl serin {sub} --help\n"));
        let mut cmd = Cli::command();
        let sub = cmd.find_subcommand_mut(sub).unwrap();
        text.push_str(&sub.render_long_help().to_string());
    }
    assert!(text.matches("Example").count() >= 9, "every command has examples");
    snapshot("help.txt", &text);
}
