//! The commands of `kubectl serin`.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::CommandFactory;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::time::Instant;

use super::Error;
use super::cli::{Cli, Command, GetArgs, Output, StatusArgs, ToggleArgs};
use super::cluster::{Cluster, connect};
use super::control::{self, Action};
use super::render::{self, EventLine, Snapshot, Style};
use super::verdict::{Exit, Verdict};
use crate::api::Phase;

/// How often `get -w` and the waits poll the API server.
const POLL: Duration = Duration::from_secs(1);
/// How often a request or pause waits for Serin's answer.
const ANSWER_POLL: Duration = Duration::from_millis(250);

/// Runs one command. `Err` is for exit code 4; every other outcome is an [`Exit`].
pub async fn run(cli: Cli) -> Result<Exit, Error> {
    match cli.command {
        Command::Completion { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-serin", &mut out);
            out.flush()?;
            Ok(Exit::Ok)
        }
        command => {
            let cluster = connect(&cli.global).await?;
            match command {
                Command::Get(args) => get(&cluster, &args).await,
                Command::Status(args) => status(&cluster, &args).await,
                Command::Promote(args) => {
                    let action = if args.full { Action::PromoteFull } else { Action::Promote };
                    request(
                        &cluster,
                        action,
                        &args.request.name,
                        args.request.id.clone(),
                        args.request.timeout,
                    )
                    .await
                }
                Command::Abort(args) => {
                    request(&cluster, Action::Abort, &args.name, args.id.clone(), args.timeout).await
                }
                Command::Retry(args) => {
                    request(&cluster, Action::Retry, &args.name, args.id.clone(), args.timeout).await
                }
                Command::Pause(args) => set_paused(&cluster, &args, true).await,
                Command::Resume(args) => set_paused(&cluster, &args, false).await,
                Command::Completion { .. } => Ok(Exit::Ok),
            }
        }
    }
}

fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn println(line: &str) -> Result<(), Error> {
    print(&format!("{line}\n"))
}

fn eprintln(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Colours on a terminal, unless `NO_COLOR` is set or `TERM=dumb`.
fn style(tty: bool) -> Style {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
        || std::env::var("TERM").is_ok_and(|t| t == "dumb");
    if tty && !no_color { Style::Ansi } else { Style::Plain }
}

/// `[12:03:04]`: the prefix of log lines.
fn clock(now: Timestamp) -> String {
    format!("[{}]", now.strftime("%H:%M:%S"))
}

/// In GitHub Actions, an annotation that shows up on the run's summary page.
fn github_annotation(level: &str, title: &str, message: &str) -> Result<(), Error> {
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        let message = message.trim_end().replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
        println(&format!("::{level} title={title}::{message}"))?;
    }
    Ok(())
}

// ----- get --------------------------------------------------------------------------------------

fn encode(view: &impl serde::Serialize, output: Output, compact: bool) -> Result<String, Error> {
    match output {
        Output::Json if compact => {
            serde_json::to_string(view).map(|s| s + "\n").map_err(|e| Error::Encode(e.to_string()))
        }
        Output::Json => {
            serde_json::to_string_pretty(view).map(|s| s + "\n").map_err(|e| Error::Encode(e.to_string()))
        }
        Output::Yaml => serde_saphyr::to_string(view).map_err(|e| Error::Encode(e.to_string())),
        Output::Text => Ok(String::new()),
    }
}

async fn list(cluster: &Cluster, all_namespaces: bool) -> Result<Vec<Snapshot>, Error> {
    let mut snaps = Vec::new();
    for rollout in cluster.rollouts_list(all_namespaces).await? {
        snaps.push(cluster.complete(rollout, false).await?);
    }
    snaps.sort_by_key(|s| (s.rollout.namespace(), s.rollout.name_any()));
    Ok(snaps)
}

async fn get(cluster: &Cluster, args: &GetArgs) -> Result<Exit, Error> {
    let tty = std::io::stdout().is_terminal();
    let style = style(tty);
    let mut previous: Option<String> = None;
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_events: Option<HashSet<String>> = None;
    loop {
        let now = Timestamp::now();
        let (text, key) = match &args.name {
            Some(name) => {
                let snap = cluster.snapshot(name).await?;
                match (args.output, args.watch && !tty) {
                    (Output::Text, true) => {
                        // Piped: one line per change, and each new Event.
                        let line = render::render_line(&snap);
                        let mut text = String::new();
                        if lines.get(name) != Some(&line) {
                            text.push_str(&format!("{} {line}\n", clock(now)));
                            lines.insert(name.clone(), line);
                        }
                        for event in new_events(&mut seen_events, &snap.events) {
                            text.push_str(&format!("{} {}\n", clock(now), render::render_event(&event)));
                        }
                        (text, None)
                    }
                    (Output::Text, false) => (render::render_view(&snap, now, style), None),
                    (output, _) => {
                        let mut view = render::view(&snap, now);
                        let text = encode(&view, output, args.watch)?;
                        // Equal views (but for the ticking clock) are printed once.
                        view.seconds_in_step = None;
                        (text, Some(encode(&view, Output::Json, true)?))
                    }
                }
            }
            None => {
                let snaps = list(cluster, args.all_namespaces).await?;
                match (args.output, args.watch && !tty) {
                    (Output::Text, true) => {
                        let mut text = String::new();
                        for snap in &snaps {
                            let key = format!(
                                "{}/{}",
                                snap.rollout.namespace().unwrap_or_default(),
                                snap.rollout.name_any()
                            );
                            let line = render::render_line(snap);
                            if lines.get(&key) != Some(&line) {
                                text.push_str(&format!("{} {line}\n", clock(now)));
                                lines.insert(key, line);
                            }
                        }
                        (text, None)
                    }
                    (Output::Text, false) => {
                        (render::render_table(&snaps, now, style, args.all_namespaces), None)
                    }
                    (output, _) => {
                        let views: Vec<_> = snaps.iter().map(|s| render::view(s, now)).collect();
                        let doc = serde_json::json!({"items": views});
                        let text = encode(&doc, output, args.watch)?;
                        let mut stable = views;
                        for v in &mut stable {
                            v.seconds_in_step = None;
                        }
                        (text, Some(encode(&serde_json::json!({"items": stable}), Output::Json, true)?))
                    }
                }
            }
        };
        if !args.watch {
            print(&text)?;
            return Ok(Exit::Ok);
        }
        match (args.output, tty) {
            (Output::Text, true) => {
                // Redraw in place, like watch(1): home, the frame with each line cleared to its
                // end, then clear whatever the previous frame left below.
                let what = args.name.as_deref().unwrap_or(if args.all_namespaces { "-A" } else { "" });
                let header = format!(
                    "Every {}s: kubectl serin -n {} get {what}   {}\n\n",
                    POLL.as_secs(),
                    cluster.namespace,
                    now.strftime("%Y-%m-%d %H:%M:%S UTC")
                );
                let mut frame = String::from("\x1b[H");
                for line in header.lines().chain(text.lines()) {
                    frame.push_str(line);
                    frame.push_str("\x1b[K\n");
                }
                frame.push_str("\x1b[J");
                if previous.is_none() {
                    frame.insert_str(0, "\x1b[2J");
                }
                print(&frame)?;
                previous = Some(String::new());
            }
            (Output::Text, false) => {
                print(&text)?;
                previous = Some(String::new());
            }
            _ => {
                if previous != key {
                    if args.output == Output::Yaml {
                        print("---\n")?;
                    }
                    print(&text)?;
                    previous = key;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn event_key(e: &EventLine) -> String {
    format!("{:?}|{}|{}", e.at.as_ref().map(|t| t.0), e.reason, e.note)
}

/// The Events not seen before. The first call only records what exists: history is not
/// replayed.
fn new_events(seen: &mut Option<HashSet<String>>, events: &[EventLine]) -> Vec<EventLine> {
    match seen {
        None => {
            *seen = Some(events.iter().map(event_key).collect());
            Vec::new()
        }
        Some(seen) => events.iter().filter(|e| seen.insert(event_key(e))).cloned().collect(),
    }
}

// ----- status -----------------------------------------------------------------------------------

async fn status(cluster: &Cluster, args: &StatusArgs) -> Result<Exit, Error> {
    let timeout = if args.wait { args.timeout } else { Duration::ZERO };
    let deadline = Instant::now() + timeout;
    let mut last_line: Option<String> = None;
    let mut seen_events: Option<HashSet<String>> = None;
    let mut first_target: Option<String> = None;
    let mut last_reason: Option<String> = None;
    loop {
        let now = Timestamp::now();
        let snap = cluster.snapshot(&args.name).await?;
        let verdict = snap.verdict();
        let line = render::render_line(&snap);
        if last_line.as_ref() != Some(&line) {
            println(&format!("{} {line}", clock(now)))?;
            last_line = Some(line);
        }
        // Say what status waits for when the status message does not: Serin has not observed
        // the new generation, or not picked up the new revision, yet.
        if let Verdict::Pending { reason } = &verdict
            && args.wait
            && snap.rollout.status.as_ref().and_then(|s| s.message.as_ref()) != Some(reason)
            && last_reason.as_ref() != Some(reason)
        {
            println(&format!("{} {reason}", clock(now)))?;
            last_reason = Some(reason.clone());
        }
        for event in new_events(&mut seen_events, &snap.events) {
            println(&format!("{} {}", clock(now), render::render_event(&event)))?;
        }
        let target = snap.target_revision();
        match (&first_target, &target) {
            (None, Some(t)) => first_target = Some(t.clone()),
            (Some(first), Some(t)) if first != t => {
                println(&format!(
                    "{} Deployment {} changed to revision {t} while waiting (was {first}); following {t}",
                    clock(now),
                    snap.rollout.spec.target_ref.name
                ))?;
                first_target = Some(t.clone());
            }
            _ => {}
        }
        let timed_out = Instant::now() >= deadline;
        let stop = match &verdict {
            Verdict::Healthy { .. } | Verdict::Failed { .. } => true,
            Verdict::Paused { .. } | Verdict::Frozen { .. } => !args.keep_waiting || timed_out,
            Verdict::Pending { .. } => timed_out,
        };
        if stop {
            // Asked to keep waiting through a pause or a freeze, one at the deadline is a
            // time-out.
            let verdict = match verdict {
                Verdict::Paused { message, .. } if args.keep_waiting => {
                    Verdict::Pending { reason: format!("still paused: {message}") }
                }
                Verdict::Frozen { message, .. } if args.keep_waiting => {
                    Verdict::Pending { reason: format!("still frozen: {message}") }
                }
                other => other,
            };
            let text = render::render_verdict(&args.name, &verdict, args.wait.then_some(timeout));
            print(&text)?;
            match &verdict {
                Verdict::Failed { .. } => {
                    github_annotation("error", &format!("Rollout {} failed", args.name), &text)?
                }
                Verdict::Frozen { .. } => {
                    github_annotation("error", &format!("Rollout {} is frozen", args.name), &text)?
                }
                Verdict::Pending { .. } if args.wait => {
                    github_annotation("error", &format!("Rollout {} timed out", args.name), &text)?
                }
                Verdict::Paused { .. } => {
                    github_annotation("warning", &format!("Rollout {} is paused", args.name), &text)?
                }
                _ => {}
            }
            return Ok(verdict.exit());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let pause = if matches!(verdict, Verdict::Paused { .. } | Verdict::Frozen { .. }) {
            POLL
        } else {
            POLL.min(left).max(Duration::from_millis(50))
        };
        tokio::time::sleep(pause).await;
    }
}

// ----- requests ---------------------------------------------------------------------------------

fn default_id() -> String {
    Timestamp::now().as_millisecond().to_string()
}

async fn request(
    cluster: &Cluster,
    action: Action,
    name: &str,
    id: Option<String>,
    timeout: Duration,
) -> Result<Exit, Error> {
    let rollout = cluster.rollout(name).await?;
    let value = action.value(&id.unwrap_or_else(default_id));
    // The same request again (same --id): report what became of it, write nothing.
    if let Some(last) = rollout.status.as_ref().and_then(|s| s.last_request.as_ref())
        && last.id == value
    {
        return Ok(report_answer(&rollout, last, true));
    }
    if control::pending_request(&rollout) != Some(value.as_str()) {
        let target_revision = match action {
            Action::Retry => {
                let ns = rollout.namespace().unwrap_or_else(|| cluster.namespace.clone());
                match cluster.deployment(&ns, &rollout.spec.target_ref.name).await {
                    Ok(Some(d)) => {
                        d.spec.as_ref().map(|s| crate::engine::revision::template_revision(&s.template))
                    }
                    _ => None, // cannot read it: Serin checks anyway
                }
            }
            _ => None,
        };
        if let Some(why) = control::refusal(action, &rollout, target_revision.as_deref()) {
            eprintln(&format!("kubectl serin: cannot {} rollout {name}: {why}", action.verb()));
            return Ok(Exit::Failed);
        }
        cluster.patch(name, &control::request_patch(&value)).await?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let rollout = cluster.rollout(name).await?;
        if let Some(last) = rollout.status.as_ref().and_then(|s| s.last_request.as_ref())
            && last.id == value
        {
            return Ok(report_answer(&rollout, last, false));
        }
        if Instant::now() >= deadline {
            eprintln(&format!(
                "kubectl serin: wrote request {value} to rollout {name}, but Serin did not answer within {} \
                 (is the operator running?); it stays in the annotation {} and is handled when Serin sees it",
                render::human(timeout),
                crate::api::labels::REQUEST
            ));
            return Ok(Exit::Timeout);
        }
        tokio::time::sleep(ANSWER_POLL).await;
    }
}

fn report_answer(rollout: &crate::api::Rollout, last: &crate::api::RequestStatus, again: bool) -> Exit {
    let (accepted, mut line) = control::answer(rollout, last);
    if again {
        line.push_str(" (handled before; nothing written)");
    }
    if accepted {
        let _ = println(&line);
        Exit::Ok
    } else {
        eprintln(&format!("kubectl serin: {line}"));
        Exit::Failed
    }
}

async fn set_paused(cluster: &Cluster, args: &ToggleArgs, paused: bool) -> Result<Exit, Error> {
    let name = &args.name;
    let rollout = cluster.rollout(name).await?;
    if rollout.spec.paused == paused {
        let state = if paused { "already paused" } else { "not paused; nothing to resume" };
        println(&format!("rollout {name} is {state}"))?;
        return Ok(Exit::Ok);
    }
    if let Some(why) = control::pause_refusal(paused, &rollout) {
        eprintln(&format!("kubectl serin: cannot pause rollout {name}: {why}"));
        return Ok(Exit::Failed);
    }
    let patched = cluster.patch(name, &control::paused_patch(paused)).await?;
    let generation = patched.metadata.generation.unwrap_or(0);
    let deadline = Instant::now() + args.timeout;
    loop {
        let rollout = cluster.rollout(name).await?;
        let status = rollout.status.clone().unwrap_or_default();
        if status.observed_generation.unwrap_or(0) >= generation {
            let line = match (paused, status.phase) {
                (true, Phase::Paused) => format!(
                    "rollout {name} paused at step {}/{} with {}% on the canary",
                    status.step, status.steps, status.canary_weight
                ),
                (true, phase) => format!(
                    "rollout {name} paused; it is {phase:?}, so Serin will hold the next revision at step 0"
                ),
                (false, phase) => match &status.message {
                    Some(message) => format!("rollout {name} resumed; now {phase:?}: {message}"),
                    None => format!("rollout {name} resumed; now {phase:?}"),
                },
            };
            println(&line)?;
            return Ok(Exit::Ok);
        }
        if Instant::now() >= deadline {
            eprintln(&format!(
                "kubectl serin: set spec.paused={paused} on rollout {name}, but Serin did not confirm within {} \
                 (is the operator running?)",
                render::human(args.timeout)
            ));
            return Ok(Exit::Timeout);
        }
        tokio::time::sleep(ANSWER_POLL).await;
    }
}
