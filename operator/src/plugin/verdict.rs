//! What `kubectl serin status` concludes from a Rollout and the revision its Deployment has now.
//!
//! Pure: the same Rollout and target revision always give the same verdict, so the rules are
//! unit-tested without a cluster.

use serde::Serialize;

use crate::api::{GateStatus, Phase, Rollout, Verdict as GateVerdict, condition};

/// The process exit codes of `kubectl serin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Exit {
    /// 0: promoted / healthy, or a request was accepted.
    Ok,
    /// 1: rolled back or failed; or a request was refused.
    Failed,
    /// 2: timed out.
    Timeout,
    /// 3: paused (waiting for a human).
    Paused,
    /// 4: usage, configuration or connection error; unknown rollout.
    Error,
    /// 5: frozen (`onFailure: freeze`): needs a human to promote or abort.
    Frozen,
}

impl Exit {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Timeout => 2,
            Exit::Paused => 3,
            Exit::Error => 4,
            Exit::Frozen => 5,
        }
    }
}

/// Where the rollout of the target's current revision stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all_fields = "camelCase")]
pub enum Verdict {
    /// The current revision is promoted and Serin has seen the current spec (exit 0).
    Healthy {
        /// The promoted revision.
        revision: String,
    },
    /// The current revision was rolled back, or progress stalled at a deadline (exit 1).
    Failed {
        /// The revision that failed.
        revision: String,
        /// Serin's explanation (`status.message`).
        message: String,
        /// The gates that failed at the last check.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        failing_gates: Vec<GateStatus>,
    },
    /// `spec.paused` holds the rollout of the current revision (exit 3, unless asked to keep
    /// waiting).
    Paused {
        /// The revision being held.
        revision: String,
        /// Serin's explanation.
        message: String,
    },
    /// The analysis of the current revision failed and `onFailure: freeze` holds its weights
    /// until a human promotes or aborts (exit 5, unless asked to keep waiting).
    Frozen {
        /// The revision being held.
        revision: String,
        /// Serin's explanation: what failed, and how to resolve it.
        message: String,
        /// The gates that failed at the last check.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        failing_gates: Vec<GateStatus>,
    },
    /// Not decided yet: in progress (waiting at a gate included), or Serin has not caught up
    /// with the latest change.
    Pending {
        /// What it is waiting for.
        reason: String,
    },
}

impl Verdict {
    /// The exit code this verdict means when waiting stops here.
    pub fn exit(&self) -> Exit {
        match self {
            Verdict::Healthy { .. } => Exit::Ok,
            Verdict::Failed { .. } => Exit::Failed,
            Verdict::Paused { .. } => Exit::Paused,
            Verdict::Frozen { .. } => Exit::Frozen,
            Verdict::Pending { .. } => Exit::Timeout,
        }
    }

    /// A short word for views: Healthy, Failed, Paused, Frozen or Pending.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Healthy { .. } => "Healthy",
            Verdict::Failed { .. } => "Failed",
            Verdict::Paused { .. } => "Paused",
            Verdict::Frozen { .. } => "Frozen",
            Verdict::Pending { .. } => "Pending",
        }
    }
}

/// Decides where the rollout of `target_revision` (the revision of the target Deployment's pod
/// template now, see [`crate::engine::revision::template_revision`]) stands.
///
/// - **Healthy**: phase Idle or Succeeded, `promotedRevision` is the target's revision, and
///   `status.observedGeneration` is the Rollout's `metadata.generation`.
/// - **Failed**: phase Failed with `canaryRevision` the target's revision; or progress stalled
///   at a deadline while initializing or promoting it (condition `Stalled`).
/// - **Paused**: phase Paused with `canaryRevision` the target's revision.
/// - **Frozen**: phase Frozen with `canaryRevision` the target's revision.
/// - **Pending** otherwise, including a rollout Waiting at a gate (for an approval or a
///   deployment window), and right after `kubectl apply`, before Serin has observed the new
///   generation or noticed the new revision.
pub fn verdict(rollout: &Rollout, target_revision: Option<&str>) -> Verdict {
    let pending = |reason: String| Verdict::Pending { reason };
    let Some(status) = rollout.status.as_ref() else {
        return pending("Serin has not reported a status yet (is the operator running?)".to_string());
    };
    if let Some(generation) = rollout.metadata.generation
        && status.observed_generation.unwrap_or(0) < generation
    {
        return pending(format!(
            "waiting for Serin to observe generation {generation} (status describes generation {})",
            status.observed_generation.unwrap_or(0)
        ));
    }
    let target_name = &rollout.spec.target_ref.name;
    let Some(target) = target_revision else {
        return pending(format!("waiting for Deployment {target_name} to exist"));
    };
    let message = status.message.clone().unwrap_or_default();
    let is_canary = status.canary_revision.as_deref() == Some(target);
    let is_promoted = status.promoted_revision.as_deref() == Some(target);
    let stalled = status.conditions.iter().any(|c| c.type_ == condition::STALLED && c.status == "True");
    match status.phase {
        Phase::Idle | Phase::Succeeded if is_promoted => Verdict::Healthy { revision: target.to_string() },
        Phase::Failed if is_canary => Verdict::Failed {
            revision: target.to_string(),
            message,
            failing_gates: status.gates.iter().filter(|g| g.verdict == GateVerdict::Fail).cloned().collect(),
        },
        Phase::Paused if is_canary => Verdict::Paused { revision: target.to_string(), message },
        Phase::Frozen if is_canary => Verdict::Frozen {
            revision: target.to_string(),
            message,
            failing_gates: status.gates.iter().filter(|g| g.verdict == GateVerdict::Fail).cloned().collect(),
        },
        Phase::Initializing | Phase::Promoting
            if stalled && (is_canary || status.phase == Phase::Initializing) =>
        {
            Verdict::Failed { revision: target.to_string(), message, failing_gates: Vec::new() }
        }
        _ if is_canary || status.phase == Phase::Initializing => {
            pending(if message.is_empty() { format!("{:?}", status.phase) } else { message })
        }
        _ => pending(picking_up(target_name, target, status.phase, &message)),
    }
}

fn picking_up(target_name: &str, target: &str, phase: Phase, message: &str) -> String {
    let mut reason =
        format!("waiting for Serin to pick up revision {target} of Deployment {target_name} (now {phase:?}");
    if !message.is_empty() {
        reason.push_str(": ");
        reason.push_str(message);
    }
    reason.push(')');
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RolloutSpec, RolloutStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    fn rollout(generation: i64, status: Option<RolloutStatus>) -> Rollout {
        let spec: RolloutSpec = serde_json::from_value(
            serde_json::json!({"targetRef": {"name": "web"}, "service": {"port": 80}}),
        )
        .unwrap();
        let mut r = Rollout::new("web", spec);
        r.metadata.generation = Some(generation);
        r.status = status;
        r
    }

    fn status(phase: Phase, canary: Option<&str>, promoted: Option<&str>) -> RolloutStatus {
        RolloutStatus {
            observed_generation: Some(1),
            phase,
            canary_revision: canary.map(str::to_string),
            promoted_revision: promoted.map(str::to_string),
            message: Some(format!("{phase:?} message")),
            ..RolloutStatus::default()
        }
    }

    fn stalled() -> Condition {
        Condition {
            type_: "Stalled".into(),
            status: "True".into(),
            reason: "x".into(),
            message: "x".into(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn healthy_needs_the_target_revision_promoted_and_the_generation_observed() {
        for phase in [Phase::Idle, Phase::Succeeded] {
            let r = rollout(1, Some(status(phase, None, Some("new"))));
            assert_eq!(verdict(&r, Some("new")), Verdict::Healthy { revision: "new".into() });
        }
        // Right after `kubectl apply` of a new image: still Idle at the old revision.
        let r = rollout(1, Some(status(Phase::Idle, None, Some("old"))));
        let v = verdict(&r, Some("new"));
        assert!(
            matches!(&v, Verdict::Pending { reason } if reason.contains("pick up revision new")),
            "{v:?}"
        );
        // A spec change not yet observed.
        let r = rollout(2, Some(status(Phase::Idle, None, Some("new"))));
        let v = verdict(&r, Some("new"));
        assert!(matches!(&v, Verdict::Pending { reason } if reason.contains("generation 2")), "{v:?}");
    }

    #[test]
    fn no_status_or_no_target_is_pending() {
        assert!(matches!(verdict(&rollout(1, None), Some("x")), Verdict::Pending { .. }));
        let r = rollout(1, Some(status(Phase::Idle, None, Some("x"))));
        let v = verdict(&r, None);
        assert!(matches!(&v, Verdict::Pending { reason } if reason.contains("Deployment web")), "{v:?}");
    }

    #[test]
    fn failed_only_for_the_current_revision() {
        let mut s = status(Phase::Failed, Some("new"), Some("old"));
        s.gates = vec![
            GateStatus {
                name: "successRate".into(),
                value: Some(90.0),
                primary_value: None,
                threshold: ">= 99".into(),
                verdict: GateVerdict::Fail,
                requests: Some(100.0),
                at: None,
            },
            GateStatus {
                name: "latency.p99".into(),
                value: Some(10.0),
                primary_value: None,
                threshold: "<= 500ms".into(),
                verdict: GateVerdict::Pass,
                requests: Some(100.0),
                at: None,
            },
        ];
        let r = rollout(1, Some(s));
        match verdict(&r, Some("new")) {
            Verdict::Failed { revision, message, failing_gates } => {
                assert_eq!(revision, "new");
                assert_eq!(message, "Failed message");
                assert_eq!(failing_gates.len(), 1);
                assert_eq!(failing_gates[0].name, "successRate");
            }
            other => panic!("{other:?}"),
        }
        // A newer revision arrived after the failure: not decided yet.
        assert!(matches!(verdict(&r, Some("newer")), Verdict::Pending { .. }));
    }

    #[test]
    fn paused_and_progressing() {
        let r = rollout(1, Some(status(Phase::Paused, Some("new"), Some("old"))));
        assert!(matches!(verdict(&r, Some("new")), Verdict::Paused { .. }));
        assert!(matches!(verdict(&r, Some("newer")), Verdict::Pending { .. }));
        let r = rollout(1, Some(status(Phase::Progressing, Some("new"), Some("old"))));
        assert_eq!(verdict(&r, Some("new")), Verdict::Pending { reason: "Progressing message".into() });
        assert_eq!(verdict(&r, Some("new")).exit(), Exit::Timeout);
    }

    #[test]
    fn a_stall_while_promoting_or_initializing_is_a_failure() {
        let mut s = status(Phase::Promoting, Some("new"), Some("old"));
        s.conditions = vec![stalled()];
        assert!(matches!(verdict(&rollout(1, Some(s.clone())), Some("new")), Verdict::Failed { .. }));
        s.phase = Phase::Initializing;
        s.canary_revision = None;
        s.promoted_revision = None;
        assert!(matches!(verdict(&rollout(1, Some(s)), Some("new")), Verdict::Failed { .. }));
    }

    #[test]
    fn frozen_and_waiting() {
        let r = rollout(1, Some(status(Phase::Frozen, Some("new"), Some("old"))));
        let v = verdict(&r, Some("new"));
        assert!(matches!(&v, Verdict::Frozen { revision, .. } if revision == "new"), "{v:?}");
        assert_eq!(v.exit(), Exit::Frozen);
        assert!(matches!(verdict(&r, Some("newer")), Verdict::Pending { .. }));
        let r = rollout(1, Some(status(Phase::Waiting, Some("new"), Some("old"))));
        assert_eq!(verdict(&r, Some("new")), Verdict::Pending { reason: "Waiting message".into() });
    }

    #[test]
    fn exit_codes() {
        let codes: Vec<u8> = [Exit::Ok, Exit::Failed, Exit::Timeout, Exit::Paused, Exit::Error, Exit::Frozen]
            .iter()
            .map(|e| e.code())
            .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5]);
    }
}
