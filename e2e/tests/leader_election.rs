//! Leader election: two operator processes with `--leader-elect` watch the same namespace;
//! one holds the Lease and writes, the other waits. The API server's audit log is the witness
//! that only one of them wrote at a time.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use serde_json::json;
use serin::api::{Phase, Rollout};
use serin_e2e::{
    AuditEvent, Operator, OperatorOptions, audit_events, client, deploy_web_with_rollout, eventually,
    install_rollout_crd, install_trafficsplit_crd, namespace, rollout_event_notes, set_web_image,
};

const WAIT: Duration = Duration::from_secs(120);

/// An instance name unique to this run, so the audit log (shared by every test since the
/// cluster started) holds no other process under it.
fn instance(name: &str) -> String {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    format!("serin-{name}-{}-{nonce}", std::process::id())
}

fn elected(ns: &str, instance: &str) -> OperatorOptions {
    OperatorOptions::namespace(ns)
        .args(["--leader-elect", "--lease-name", "serin"])
        .env("POD_NAMESPACE", ns)
        .env("POD_NAME", instance)
}

async fn holder(client: &Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns).get_opt("serin").await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn wait_holder(client: &Client, ns: &str, who: &str, operators: &[&Operator]) {
    let found = tokio::time::timeout(
        WAIT,
        eventually(&format!("{who} to hold the Lease"), WAIT, || async {
            (holder(client, ns).await.as_deref() == Some(who)).then_some(())
        }),
    )
    .await;
    if found.is_err() {
        let logs: Vec<String> = operators.iter().map(|o| o.log_tail()).collect();
        panic!("{who} never held the Lease; logs:\n{}", logs.join("\n-----\n"));
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let http = serin_e2e::mesh::http_client(Duration::from_secs(2)).ok()?;
    let response = http.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

async fn phase(rollouts: &Api<Rollout>) -> Option<Phase> {
    Some(rollouts.get("web").await.ok()?.status?.phase)
}

/// The writes of an instance, leaving out its Lease traffic (acquiring and renewing).
fn writes(agent: &str) -> Vec<AuditEvent> {
    audit_events(agent).into_iter().filter(|e| e.is_write() && e.resource != "leases").collect()
}

#[tokio::test]
async fn a_follower_takes_over_mid_rollout_when_the_leader_is_killed_and_only_one_writes_at_a_time() {
    let client = client().await;
    install_rollout_crd(&client).await;
    install_trafficsplit_crd(&client).await;
    let ns = namespace(&client, "leader").await;
    deploy_web_with_rollout(
        &client,
        &ns,
        json!({"strategy": {"weights": [20, 40, 60, 80], "interval": "3s"}}),
    )
    .await;
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);

    let (a_name, b_name) = (instance("a"), instance("b"));
    let mut a = Operator::start_with(elected(&ns, &a_name));
    wait_holder(&client, &ns, &a_name, &[&a]).await;
    let b = Operator::start_with(elected(&ns, &b_name));

    // The follower is ready (it reads the Lease) but does not lead.
    let readyz = b.url("/readyz");
    let (code, body) = eventually("the follower to report ready", WAIT, || async {
        get(&readyz).await.filter(|(code, _)| *code == 200)
    })
    .await;
    assert!(body.contains("follower"), "{code} {body}");
    let scrape = get(&b.url("/metrics")).await.unwrap().1;
    assert!(scrape.contains("serin_leader 0"), "{scrape}");

    eventually("the leader to initialize the Rollout", WAIT, || async {
        (phase(&rollouts).await? == Phase::Idle).then_some(())
    })
    .await;
    assert_eq!(get(&a.url("/readyz")).await.map(|r| r.0), Some(200), "the leader's caches are synced");
    set_web_image(&client, &ns, "web:2").await;
    eventually("the rollout to reach step 2", WAIT, || async {
        let status = rollouts.get("web").await.ok()?.status?;
        (status.phase == Phase::Progressing && status.step >= 2).then_some(())
    })
    .await;

    // SIGKILL the leader mid-rollout: it cannot release the Lease.
    a.kill();
    let killed_at = Instant::now();
    let killed_wall = k8s_openapi::jiff::Timestamp::now();
    wait_holder(&client, &ns, &b_name, &[&b]).await;
    let takeover = killed_at.elapsed();
    println!("the follower took the Lease {:.1}s after the leader was killed", takeover.as_secs_f64());

    let done = tokio::time::timeout(
        WAIT,
        eventually("the rollout to succeed under the new leader", WAIT, || async {
            (phase(&rollouts).await? == Phase::Succeeded).then_some(())
        }),
    )
    .await;
    assert!(done.is_ok(), "not promoted; the new leader's log:\n{}", b.log_tail());

    // Every step taken exactly once, across the handover.
    let steps = rollout_event_notes(&client, &ns, "StepAdvanced").await;
    assert_eq!(steps.len(), 4, "{steps:?}");
    for (i, note) in steps.iter().enumerate() {
        assert!(note.starts_with(&format!("step {}/4", i + 1)), "{steps:?}");
    }
    assert_eq!(rollout_event_notes(&client, &ns, "Promoted").await.len(), 1);

    // The audit log: both wrote, and never interleaved: every write of the killed leader came
    // before every write of the new one, which began only after the kill.
    let (a_writes, b_writes) = eventually("the new leader's last writes in the audit log", WAIT, || async {
        let b_writes = writes(&b_name);
        b_writes
            .iter()
            .any(|e| e.resource == "rollouts" && e.subresource == "status")
            .then(|| (writes(&a_name), b_writes))
    })
    .await;
    assert!(!a_writes.is_empty() && !b_writes.is_empty(), "a: {}, b: {}", a_writes.len(), b_writes.len());
    assert!(
        a_writes.iter().chain(&b_writes).all(|e| e.namespace == ns),
        "writes only in the watched namespace"
    );
    let last_a = a_writes.last().unwrap().received;
    let first_b = b_writes.first().unwrap().received;
    assert!(last_a < first_b, "interleaved: leader wrote at {last_a}, follower already at {first_b}");
    assert!(
        first_b > killed_wall,
        "the follower wrote at {first_b}, before the leader was killed at {killed_wall}"
    );
    let lease_writes =
        audit_events(&b_name).into_iter().filter(|e| e.is_write() && e.resource == "leases").count();
    assert!(lease_writes >= 1, "the follower took the Lease with a write");
    println!(
        "audit log: {} writes by the first leader, then {} by the second; first write of the second {:.1}s after the kill",
        a_writes.len(),
        b_writes.len(),
        first_b.duration_since(killed_wall).as_secs_f64()
    );
}

#[tokio::test]
async fn a_leader_stopped_cleanly_releases_the_lease_to_the_follower() {
    let client = client().await;
    install_rollout_crd(&client).await;
    install_trafficsplit_crd(&client).await;
    let ns = namespace(&client, "leader-release").await;
    deploy_web_with_rollout(&client, &ns, json!({"strategy": {"weights": [50], "interval": "2s"}})).await;

    let (a_name, b_name) = (instance("a"), instance("b"));
    let mut a = Operator::start_with(elected(&ns, &a_name));
    wait_holder(&client, &ns, &a_name, &[&a]).await;
    let b = Operator::start_with(elected(&ns, &b_name));
    eventually("the follower to read the Lease", WAIT, || async {
        get(&b.url("/readyz")).await.filter(|(code, _)| *code == 200)
    })
    .await;

    let stopped = Instant::now();
    let status = a.terminate(Duration::from_secs(30)).expect("the leader exits on SIGTERM");
    assert!(status.success(), "a clean stop exits 0: {status:?}\n{}", a.log_tail());
    assert!(a.log_tail().contains("released the Lease"), "{}", a.log_tail());
    wait_holder(&client, &ns, &b_name, &[&b]).await;
    println!("the follower took the released Lease {:.1}s after SIGTERM", stopped.elapsed().as_secs_f64());
    eventually("the new leader to initialize the Rollout", WAIT, || async {
        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
        (phase(&rollouts).await? == Phase::Idle).then_some(())
    })
    .await;
}

#[tokio::test]
async fn leader_election_without_a_lease_namespace_is_refused_naming_the_flag() {
    let mut operator = Operator::start_with(OperatorOptions::namespace("default").args(["--leader-elect"]));
    let status = eventually("serin run to exit", Duration::from_secs(60), || {
        let status = operator.try_wait();
        async move { status }
    })
    .await;
    assert!(!status.success());
    let log = operator.log_tail();
    assert!(log.contains("--lease-namespace") && log.contains("POD_NAMESPACE"), "{log}");
}
