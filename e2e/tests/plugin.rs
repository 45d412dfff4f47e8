//! User stories of `kubectl serin`, the real plugin binary against the real control plane, with
//! the real operator watching each test's own namespace. One test per exit code of `status`
//! and per control command; errors (connection, unknown rollout, usage) exit 4 with one line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use serin::api::{Phase, RequestOutcome};
use serin::engine::revision::template_revision;
use serin_e2e::story::Story;
use serin_e2e::{Operator, client, install_rollout_crd, kubeconfig, namespace};
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = serin_e2e::story::WAIT;

/// The `kubectl-serin` binary, built once per test binary with the workspace's cargo.
fn plugin_binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "serin", "--bin", "kubectl-serin"])
            .current_dir(serin_e2e::repo_root())
            .status()
            .unwrap();
        assert!(status.success(), "building kubectl-serin failed");
        let exe = std::env::current_exe().unwrap();
        let path = exe.parent().unwrap().parent().unwrap().join("kubectl-serin");
        assert!(path.is_file(), "no kubectl-serin binary at {}", path.display());
        path
    })
}

/// What one run of the plugin did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code; stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

fn command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(plugin_binary());
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig())
        .env_remove("GITHUB_ACTIONS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `kubectl serin <args>` with the local cluster's kubeconfig.
async fn serin(args: &[&str]) -> Run {
    let out = command(args).output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What the plugin stories add to the shared sample app.
trait PluginStory {
    async fn serin(&self, args: &[&str]) -> Run;
    fn spawn(&self, args: &[&str]) -> tokio::process::Child;
    async fn target_revision(&self) -> String;
    async fn canary_at_step_1(&self, operator: &Operator);
}

impl PluginStory for Story {
    /// `kubectl serin -n <ns> <args>`.
    async fn serin(&self, args: &[&str]) -> Run {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        serin(&all).await
    }

    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        command(&all).spawn().unwrap()
    }

    /// The revision Serin computes for the Deployment's template now.
    async fn target_revision(&self) -> String {
        template_revision(&self.deployments.get("web").await.unwrap().spec.unwrap().template)
    }

    /// A new image, with the canary reaching step 1.
    async fn canary_at_step_1(&self, operator: &Operator) {
        self.wait_phase(Phase::Idle, operator).await;
        self.set_image("web:2").await;
        self.wait_for("the canary at step 1", operator, |s| s.phase == Phase::Progressing && s.step >= 1)
            .await;
    }
}

fn one_line(text: &str) -> &str {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line, got:\n{text}");
    assert!(!text.contains("panicked") && !text.contains("backtrace"), "{text}");
    lines[0]
}

#[tokio::test]
async fn status_waits_for_the_new_revision_after_apply_and_exits_0_once_promoted() {
    let story = Story::new("plugin-ok", json!({"weights": [20, 50], "interval": "2s"}), json!({})).await;
    let mut operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    let first = story.target_revision().await;
    let run = story.serin(&["status", "web"]).await.expect(0);
    assert!(run.stdout.contains(&format!("revision {first} is promoted and healthy")), "{}", run.stdout);

    // A deploy job applies a new image and a spec change while Serin is not looking (here: the
    // operator is down), then waits. status must not report the previous, healthy revision.
    operator.kill();
    story.set_image("web:2").await;
    let patch = json!({"spec": {"strategy": {"weights": [20, 50], "interval": "3s"}}});
    story.rollouts.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let new = story.target_revision().await;
    let watch = story.spawn(&["get", "web", "-w"]);
    let wait = story.spawn(&["status", "web", "--wait", "--timeout", "90s"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut wait = wait;
    assert!(
        wait.try_wait().unwrap().is_none(),
        "status --wait must keep waiting until Serin sees the change"
    );

    let operator = Operator::start(&story.ns);
    let out =
        tokio::time::timeout(WAIT, wait.wait_with_output()).await.expect("status --wait ended").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\noperator:\n{}", operator.log_tail());
    assert!(stdout.contains(&format!("rollout web: revision {new} is promoted and healthy")), "{stdout}");
    assert!(stdout.contains("waiting for Serin to observe generation 2"), "it said why it waited:\n{stdout}");
    assert!(stdout.contains("event StepAdvanced: step 2/2"), "the job log shows the steps:\n{stdout}");
    let status = story.status().await;
    assert_eq!(status.promoted_revision.as_deref(), Some(new.as_str()));
    assert_eq!(status.phase, Phase::Succeeded);

    // The machine-readable view agrees.
    let run = story.serin(&["get", "web", "-o", "json"]).await.expect(0);
    let view: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(view["verdict"]["verdict"], "Healthy");
    assert_eq!(view["primary"]["revision"], new.as_str());
    assert_eq!(view["phase"], "Succeeded");
    let run = story.serin(&["get", "web", "-o", "yaml"]).await.expect(0);
    assert!(run.stdout.contains("phase: Succeeded"), "{}", run.stdout);
    let run = story.serin(&["get"]).await.expect(0);
    assert!(run.stdout.starts_with("NAME") && run.stdout.contains("Succeeded"), "{}", run.stdout);

    // get -w, piped, printed one plain line per change.
    let mut watch = watch;
    let stdout = watch.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let done = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let last = line.contains("web: Succeeded");
            seen.push(line);
            if last {
                return;
            }
        }
    })
    .await;
    watch.kill().await.unwrap();
    assert!(done.is_ok(), "get -w never printed Succeeded: {seen:#?}");
    assert!(seen.iter().any(|l| l.contains("web: Progressing, step 1/2")), "{seen:#?}");
    assert!(seen.iter().all(|l| !l.contains('\x1b')), "no escape codes when piped: {seen:#?}");
}

#[tokio::test]
async fn status_exits_1_with_the_reason_when_the_revision_is_rolled_back() {
    let story = Story::new(
        "plugin-failed",
        json!({"weights": [50], "interval": "2s"}),
        json!({"progressDeadlineSeconds": 5}),
    )
    .await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;
    story.set_never_ready().await;
    let new = story.target_revision().await;

    let run = story.serin(&["status", "web", "--wait", "--timeout", "90s"]).await.expect(1);
    assert!(
        run.stdout.contains(&format!(
            "rollout web: revision {new} failed: rolled back: canary revision {new} was not ready"
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("progressDeadlineSeconds"), "{}", run.stdout);
    // Without --wait, the verdict is the same.
    story.serin(&["status", "web"]).await.expect(1);
}

#[tokio::test]
async fn status_exits_2_when_the_timeout_passes() {
    let story = Story::new("plugin-timeout", json!({"weights": [50], "interval": "1h"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.canary_at_step_1(&operator).await;

    let started = std::time::Instant::now();
    let run = story.serin(&["status", "web", "--wait", "--timeout", "2s"]).await.expect(2);
    assert!(started.elapsed() < Duration::from_secs(30), "the timeout is kept");
    assert!(
        run.stdout.contains("rollout web: timed out after 2s: step 1/1: 50% on canary revision"),
        "{}",
        run.stdout
    );
    let run = story.serin(&["status", "web"]).await.expect(2);
    assert!(run.stdout.contains("rollout web: in progress: step 1/1"), "{}", run.stdout);
}

#[tokio::test]
async fn pause_makes_status_exit_3_and_resume_continues() {
    let story = Story::new("plugin-pause", json!({"weights": [20, 40], "interval": "1h"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.canary_at_step_1(&operator).await;

    let run = story.serin(&["pause", "web"]).await.expect(0);
    assert!(run.stdout.contains("rollout web paused at step 1/2 with 20% on the canary"), "{}", run.stdout);
    assert!(story.rollout().await.spec.paused);
    assert_eq!(story.status().await.phase, Phase::Paused);
    let run = story.serin(&["pause", "web"]).await.expect(0);
    assert!(run.stdout.contains("already paused"), "idempotent: {}", run.stdout);

    let run = story.serin(&["status", "web", "--wait", "--timeout", "60s"]).await.expect(3);
    assert!(run.stdout.contains("is paused: paused at step 1/2"), "{}", run.stdout);
    assert!(run.stdout.contains("kubectl serin resume web"), "{}", run.stdout);
    // Asked to keep waiting, a pause is not the end: here the timeout is.
    story.serin(&["status", "web", "--wait", "--keep-waiting", "--timeout", "2s"]).await.expect(2);

    let run = story.serin(&["resume", "web"]).await.expect(0);
    assert!(run.stdout.contains("rollout web resumed; now Progressing: step 1/2"), "{}", run.stdout);
    assert!(!story.rollout().await.spec.paused);
    assert_eq!(story.status().await.phase, Phase::Progressing);
    let run = story.serin(&["resume", "web"]).await.expect(0);
    assert!(run.stdout.contains("not paused"), "idempotent: {}", run.stdout);
}

#[tokio::test]
async fn promote_takes_one_step_promote_full_promotes_and_both_refuse_when_idle() {
    let story =
        Story::new("plugin-promote", json!({"weights": [20, 40, 60], "interval": "1h"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.wait_phase(Phase::Idle, &operator).await;

    // Refused by the plugin, before writing anything.
    let before = story.rollout().await.annotations().get("serin.dev/request").cloned();
    let run = story.serin(&["promote", "web"]).await.expect(1);
    let line = one_line(&run.stderr);
    assert!(line.contains("cannot promote rollout web: rollout web is Idle: only a progressing, paused, waiting or frozen rollout can be promoted"), "{line}");
    assert_eq!(
        story.rollout().await.annotations().get("serin.dev/request").cloned(),
        before,
        "nothing written"
    );

    // Refused by Serin: a request written by hand, then asked about with the same id.
    let request = json!({"metadata": {"annotations": {"serin.dev/request": "promote/by-hand"}}});
    story.rollouts.patch("web", &PatchParams::default(), &Patch::Merge(&request)).await.unwrap();
    story
        .wait_for("Serin's answer", &operator, |s| {
            s.last_request.as_ref().is_some_and(|r| r.id == "promote/by-hand")
        })
        .await;
    let run = story.serin(&["promote", "web", "--id", "by-hand"]).await.expect(1);
    let line = one_line(&run.stderr);
    assert!(
        line.contains(
            "Serin refused request promote/by-hand: only a progressing, paused, waiting or frozen rollout can be promoted"
        ),
        "{line}"
    );

    story.set_image("web:2").await;
    story.wait_for("the canary at step 1", &operator, |s| s.phase == Phase::Progressing && s.step >= 1).await;
    let run = story.serin(&["promote", "web"]).await.expect(0);
    assert!(
        run.stdout.contains("accepted; now Progressing: step 2/3: 40% on canary revision"),
        "{}",
        run.stdout
    );
    assert_eq!(story.status().await.step, 2);

    // The same id twice: handled once.
    story.serin(&["promote", "web", "--id", "job-42"]).await.expect(0);
    assert_eq!(story.status().await.step, 3);
    let run = story.serin(&["promote", "web", "--id", "job-42"]).await.expect(0);
    assert!(run.stdout.contains("handled before; nothing written"), "{}", run.stdout);
    assert_eq!(story.status().await.step, 3, "not a second step");

    let run = story.serin(&["promote", "web", "--full"]).await.expect(0);
    let promoting = ["accepted; now Promoting", "accepted; now Succeeded"];
    assert!(promoting.iter().any(|p| run.stdout.contains(p)), "{}", run.stdout);
    let last = story.status().await.last_request.unwrap();
    assert!(last.id.starts_with("promote-full/"), "{last:?}");
    assert_eq!(last.outcome, RequestOutcome::Accepted);
    story.serin(&["status", "web", "--wait", "--timeout", "60s"]).await.expect(0);
    assert_eq!(story.status().await.phase, Phase::Succeeded);
    let run = story.serin(&["promote", "web", "--full"]).await.expect(1);
    assert!(one_line(&run.stderr).contains("rollout web is Succeeded"), "{}", run.stderr);
}

#[tokio::test]
async fn abort_rolls_back_and_retry_runs_the_revision_again() {
    let story = Story::new("plugin-abort", json!({"weights": [50], "interval": "1h"}), json!({})).await;
    let operator = Operator::start(&story.ns);
    story.canary_at_step_1(&operator).await;
    let revision = story.target_revision().await;

    // `kubectl serin abort <TAB>` offers the rollout (kubectl's plugin completion protocol).
    let run = serin(&["__complete", "-n", &story.ns, "abort", ""]).await.expect(0);
    assert_eq!(run.stdout, "web\n:4\n");

    let run = story.serin(&["abort", "web"]).await.expect(0);
    assert!(
        run.stdout.contains("accepted; now Failed: rolled back: aborted by request abort/"),
        "{}",
        run.stdout
    );
    let run = story.serin(&["status", "web"]).await.expect(1);
    assert!(
        run.stdout.contains(&format!("revision {revision} failed: rolled back: aborted by request")),
        "{}",
        run.stdout
    );
    let run = story.serin(&["abort", "web"]).await.expect(1);
    assert!(one_line(&run.stderr).contains("only a rollout in progress can be aborted"), "{}", run.stderr);

    let run = story.serin(&["retry", "web"]).await.expect(0);
    assert!(run.stdout.contains("accepted; now Progressing"), "{}", run.stdout);
    let status = story.status().await;
    assert_eq!(status.canary_revision.as_deref(), Some(revision.as_str()), "the same revision again");
    let run = story.serin(&["retry", "web"]).await.expect(1);
    assert!(one_line(&run.stderr).contains("only a failed rollout can be retried"), "{}", run.stderr);
    story.wait_for("the canary at step 1 again", &operator, |s| s.step >= 1).await;
    story.serin(&["promote", "web", "--full"]).await.expect(0);
    story.serin(&["status", "web", "--wait", "--timeout", "60s"]).await.expect(0);
}

#[tokio::test]
async fn errors_are_one_line_and_exit_4() {
    let client = client().await;
    install_rollout_crd(&client).await;
    let ns = namespace(&client, "plugin-errors").await;

    // An unknown rollout, for every command that takes one.
    for args in [
        vec!["status", "nope"],
        vec!["status", "nope", "--wait"],
        vec!["get", "nope"],
        vec!["promote", "nope"],
        vec!["abort", "nope"],
        vec!["retry", "nope"],
        vec!["pause", "nope"],
        vec!["resume", "nope"],
    ] {
        let mut all = vec!["-n", ns.as_str()];
        all.extend(args.iter().copied());
        let run = serin(&all).await.expect(4);
        let line = one_line(&run.stderr);
        assert_eq!(
            line,
            format!("kubectl serin: rollout \"nope\" not found in namespace \"{ns}\""),
            "{args:?}"
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }

    // A kubeconfig that points at a closed port.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let text = std::fs::read_to_string(kubeconfig()).unwrap();
    let mut config: Value = serde_saphyr::from_str(&text).unwrap();
    for cluster in config["clusters"].as_array_mut().unwrap() {
        cluster["cluster"]["server"] = json!(format!("https://127.0.0.1:{port}"));
    }
    let closed = std::env::temp_dir().join(format!("serin-plugin-closed-{}.kubeconfig", std::process::id()));
    std::fs::write(&closed, serde_json::to_string(&config).unwrap()).unwrap();
    for args in [vec!["status", "web", "--wait"], vec!["get"], vec!["promote", "web"]] {
        let mut all = vec!["--kubeconfig", closed.to_str().unwrap()];
        all.extend(args.iter().copied());
        let run = serin(&all).await.expect(4);
        let line = one_line(&run.stderr);
        assert!(
            line.starts_with(&format!(
                "kubectl serin: cannot reach the Kubernetes API at https://127.0.0.1:{port}"
            )),
            "{line}"
        );
        assert!(line.contains("refused"), "{line}");
    }
    // The same through KUBECONFIG, as kubectl finds it.
    let out = command(&["status", "web"]).env("KUBECONFIG", &closed).output().await.unwrap();
    assert_eq!(out.status.code(), Some(4));
    one_line(&String::from_utf8_lossy(&out.stderr));

    // A context that does not exist.
    let run = serin(&["--context", "nope", "get"]).await.expect(4);
    assert_eq!(
        one_line(&run.stderr),
        "kubectl serin: cannot load the kubeconfig: there is no context \"nope\" in the kubeconfig"
    );

    // Usage errors.
    let run = serin(&["status"]).await.expect(4);
    assert!(run.stderr.contains("required"), "{}", run.stderr);
    let run = serin(&["status", "web", "--timeout", "10"]).await.expect(4);
    assert!(run.stderr.contains("\"10\" is not a duration"), "{}", run.stderr);
    serin(&["frobnicate"]).await.expect(4);
    // Help is not an error, and shows examples.
    let run = serin(&["status", "--help"]).await.expect(0);
    assert!(run.stdout.contains("Examples:") && run.stdout.contains("Exit codes:"), "{}", run.stdout);
    let run = serin(&["completion", "bash"]).await.expect(0);
    assert!(run.stdout.contains("kubectl-serin"), "a bash completion script");
    let _ = std::fs::remove_file(closed);
}
