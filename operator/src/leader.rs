//! Leader election over a `coordination.k8s.io/v1` Lease, with optimistic concurrency
//! (`resourceVersion` on every update), as client-go's leader election does it:
//!
//! - A follower reads the Lease every [`Timings::retry_period`]. It takes the Lease only when
//!   the holder's record (holder, renew time) has not changed for the Lease's duration **as
//!   measured on the follower's own monotonic clock** since it first saw that record: no clocks
//!   are compared across machines.
//! - The leader renews every [`Timings::renew_period`]. If no renewal succeeded within
//!   [`Timings::renew_deadline`] of the start of the last successful one, or another holder
//!   shows up, it has lost: [`Elector::hold`] returns and the process must stop writing at once.
//! - On a clean shutdown the leader releases the Lease, so a follower takes over on its next
//!   read instead of waiting for the Lease to expire.
//!
//! With the [`TIMINGS`] Serin uses (Lease 8 s, renew every 2 s, give up after 5 s, followers read
//! every 1 s), a follower takes over at most about 10 s after the leader dies (its last renewal
//! seen at most 1 s late, 8 s of silence, then at most 1 s to the next read), and a leader that
//! cannot renew stops at least 3 s before any follower may start.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::telemetry::Telemetry;

/// How long a Lease lasts, and how often it is renewed and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// `spec.leaseDurationSeconds`: how long followers wait after the last renewal they saw.
    pub lease_duration: Duration,
    /// The leader gives up if it could not renew for this long.
    pub renew_deadline: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// How often a follower reads the Lease.
    pub retry_period: Duration,
}

/// Serin's timings: a follower takes over within about 10 s of the leader's death.
pub const TIMINGS: Timings = Timings {
    lease_duration: Duration::from_secs(8),
    renew_deadline: Duration::from_secs(5),
    renew_period: Duration::from_secs(2),
    retry_period: Duration::from_secs(1),
};

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lost the Lease {namespace}/{name}: {why}; stopping at once so that only the new leader writes \
         (the pod restarts as a follower)"
    )]
    Lost { namespace: String, name: String, why: String },
}

/// The holder's record: what followers watch for change.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    acquire_time: Option<MicroTime>,
    duration: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time,
            acquire_time: spec.acquire_time,
            duration: spec.lease_duration_seconds,
        }
    }
}

/// One process's part in the election for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    timings: Timings,
    telemetry: Telemetry,
    /// The last record seen, and when this process first saw it.
    observed: Option<(Record, Instant)>,
    /// The Lease as this process last wrote it, while it holds it.
    held: Option<Lease>,
    /// When the last successful acquire or renew began.
    renewed: Option<Instant>,
}

impl Elector {
    /// An elector for Lease `namespace/name`, as `identity` (unique per process: the pod name).
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, telemetry: Telemetry) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            timings: TIMINGS,
            telemetry,
            observed: None,
            held: None,
            renewed: None,
        }
    }

    /// Overrides the timings (tests).
    pub fn with_timings(mut self, timings: Timings) -> Elector {
        self.timings = timings;
        self
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&mut self) {
        self.telemetry.health().set_electing();
        let mut announced = None;
        loop {
            let started = Instant::now();
            match tokio::time::timeout(self.timings.renew_deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    self.renewed = Some(started);
                    self.telemetry.health().set_leader(true);
                    self.telemetry.metrics().leader.set(1);
                    info!(lease = %self.name, namespace = %self.namespace, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(Ok(false)) => {
                    let holder = self.observed.as_ref().and_then(|(r, _)| r.holder.clone());
                    if holder != announced {
                        info!(lease = %self.name, namespace = %self.namespace, holder = ?holder, "following; waiting for the Lease");
                        announced = holder;
                    }
                }
                Ok(Err(error)) => {
                    warn!(lease = %self.name, namespace = %self.namespace, %error, "cannot read or take the Lease; retrying")
                }
                Err(_) => {
                    self.telemetry.health().set_lease_reachable(false);
                    warn!(lease = %self.name, namespace = %self.namespace, "the API server did not answer about the Lease in time; retrying")
                }
            }
            tokio::time::sleep(jittered(self.timings.retry_period)).await;
        }
    }

    /// Keeps the Lease renewed. Returns only when leadership is lost: the caller must stop
    /// writing at once.
    pub async fn hold(&mut self) -> LeaderError {
        loop {
            let last = self.renewed.unwrap_or_else(Instant::now);
            let deadline = last + self.timings.renew_deadline;
            tokio::time::sleep_until((Instant::now() + self.timings.renew_period).min(deadline)).await;
            if Instant::now() >= deadline {
                return self.lost(format!(
                    "no renewal succeeded within {}s",
                    self.timings.renew_deadline.as_secs_f64()
                ));
            }
            let started = Instant::now();
            match tokio::time::timeout_at(deadline, self.renew()).await {
                Ok(Ok(true)) => self.renewed = Some(started),
                Ok(Ok(false)) => {
                    let holder = self.observed.as_ref().and_then(|(r, _)| r.holder.clone());
                    return self
                        .lost(format!("the Lease is now held by {}", holder.as_deref().unwrap_or("nobody")));
                }
                Ok(Err(error)) => {
                    warn!(lease = %self.name, %error, "could not renew the Lease; retrying until the deadline")
                }
                Err(_) => {}
            }
        }
    }

    /// Gives the Lease up (clean shutdown), so a follower takes it on its next read.
    pub async fn release(&mut self) {
        let Some(mut lease) = self.held.take() else { return };
        let now = MicroTime(Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(now.clone()),
            acquire_time: Some(now),
            ..lease.spec.clone().unwrap_or_default()
        });
        let params = PostParams::default();
        let write = self.api.replace(&self.name, &params, &lease);
        match tokio::time::timeout(self.timings.renew_deadline, write).await {
            Ok(Ok(_)) => info!(lease = %self.name, namespace = %self.namespace, "released the Lease"),
            Ok(Err(error)) => {
                warn!(lease = %self.name, %error, "could not release the Lease; it expires on its own")
            }
            Err(_) => warn!(lease = %self.name, "releasing the Lease timed out; it expires on its own"),
        }
        self.telemetry.health().set_leader(false);
        self.telemetry.metrics().leader.set(0);
    }

    fn lost(&mut self, why: String) -> LeaderError {
        self.held = None;
        self.telemetry.health().set_leader(false);
        self.telemetry.metrics().leader.set(0);
        LeaderError::Lost { namespace: self.namespace.clone(), name: self.name.clone(), why }
    }

    /// Renews from the Lease last written; on a conflict, reads it again and decides.
    async fn renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.held.clone() else { return self.try_acquire_or_renew().await };
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                self.wrote(written);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => self.try_acquire_or_renew().await,
            Err(error) => Err(error),
        }
    }

    /// One round of the election: read the Lease, and take or renew it if this process may.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let read = self.api.get_opt(&self.name).await;
        self.telemetry.health().set_lease_reachable(read.is_ok());
        let Some(lease) = read? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.wrote(created);
                    Ok(true)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };

        let record = Record::of(&lease);
        if self.observed.as_ref().map(|(r, _)| r) != Some(&record) {
            self.observed = Some((record.clone(), Instant::now()));
        }
        let first_seen = self.observed.as_ref().map_or_else(Instant::now, |(_, at)| *at);
        let mine = record.holder.as_deref() == Some(self.identity.as_str());
        let duration = record
            .duration
            .and_then(|d| u64::try_from(d).ok())
            .map_or(self.timings.lease_duration, Duration::from_secs);
        if record.holder.is_some() && !mine && Instant::now() < first_seen + duration {
            return Ok(false);
        }

        let mut spec = lease.spec.clone().unwrap_or_default();
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        let mut update = lease.clone();
        update.spec = Some(spec);
        // `metadata.resourceVersion` is kept: if anyone wrote since the read, this is a 409.
        match self.api.replace(&self.name, &PostParams::default(), &update).await {
            Ok(written) => {
                if !mine {
                    info!(lease = %self.name, previous = ?record.holder, resource_version = ?written.resource_version(), "took the Lease");
                }
                self.wrote(written);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn wrote(&mut self, lease: Lease) {
        self.observed = Some((Record::of(&lease), Instant::now()));
        self.held = Some(lease);
    }
}

/// `period` plus up to 20% more, so that followers started together spread out.
fn jittered(period: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let spread = u64::try_from(period.as_millis() / 5).unwrap_or(0).max(1);
    period + Duration::from_millis((nanos ^ u64::from(std::process::id())) % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timings_let_a_follower_take_over_within_15s_and_never_overlap() {
        let t = TIMINGS;
        // Worst case after the leader's death: its last renewal seen one read late, a whole
        // Lease of silence, then one more (jittered) read.
        let takeover = t.retry_period + t.lease_duration + jittered(t.retry_period);
        assert!(takeover <= Duration::from_secs(12), "{takeover:?}");
        // A leader that cannot renew stops before a follower may start, with room for slow
        // requests.
        assert!(t.renew_deadline + Duration::from_secs(2) < t.lease_duration);
        assert!(t.renew_period < t.renew_deadline);
    }

    #[test]
    fn an_empty_holder_is_no_holder() {
        let lease = Lease {
            spec: Some(LeaseSpec { holder_identity: Some(String::new()), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(Record::of(&lease).holder, None);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(1));
            assert!(d >= Duration::from_secs(1) && d < Duration::from_millis(1200), "{d:?}");
        }
    }
}
