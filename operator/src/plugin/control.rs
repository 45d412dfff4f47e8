//! Manual requests, and when they make no sense.
//!
//! Promote, abort and retry are written as the annotation `serin.dev/request: <action>/<id>`
//! (see the control guide); pause and resume set `spec.paused`. Both need only `patch` on
//! `rollouts.serin.dev`. The plugin refuses a request that clearly makes no sense before
//! writing it, with the same rules as Serin, which has the last word.

use crate::api::{Phase, RequestOutcome, RequestStatus, Rollout, labels};

/// A request sent through the `serin.dev/request` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Promote,
    PromoteFull,
    Abort,
    Retry,
}

impl Action {
    /// The action word of the annotation.
    pub fn word(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::PromoteFull => "promote-full",
            Action::Abort => "abort",
            Action::Retry => "retry",
        }
    }

    /// The verb for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::PromoteFull => "fully promote",
            Action::Abort => "abort",
            Action::Retry => "retry",
        }
    }

    /// The annotation's value for this request: `<action>/<id>`.
    pub fn value(self, id: &str) -> String {
        format!("{}/{id}", self.word())
    }
}

/// The merge patch that writes a request.
pub fn request_patch(value: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {labels::REQUEST: value}}})
}

/// The merge patch that pauses or resumes.
pub fn paused_patch(paused: bool) -> serde_json::Value {
    serde_json::json!({"spec": {"paused": paused}})
}

/// The request currently in the annotation, if any.
pub fn pending_request(rollout: &Rollout) -> Option<&str> {
    rollout.metadata.annotations.as_ref()?.get(labels::REQUEST).map(String::as_str)
}

/// Why a request makes no sense now, or `None` when Serin may accept it. `target_revision` is
/// the revision of the target Deployment's template, when it could be read.
pub fn refusal(action: Action, rollout: &Rollout, target_revision: Option<&str>) -> Option<String> {
    let name = rollout.metadata.name.as_deref().unwrap_or("");
    let Some(status) = rollout.status.as_ref() else {
        return Some(format!(
            "rollout {name} has no status yet: Serin has not seen it (is the operator running?)"
        ));
    };
    let phase = status.phase;
    let is = format!("rollout {name} is {phase:?}");
    match action {
        Action::Promote | Action::PromoteFull
            if !matches!(phase, Phase::Progressing | Phase::Paused | Phase::Waiting | Phase::Frozen) =>
        {
            let hint = match phase {
                Phase::Promoting => "; it is already being promoted",
                Phase::Failed => "; to run the failed revision again, use retry",
                Phase::Idle | Phase::Succeeded => "; there is no canary to promote",
                _ => "",
            };
            Some(format!("{is}: only a progressing, paused, waiting or frozen rollout can be promoted{hint}"))
        }
        Action::Abort
            if !matches!(
                phase,
                Phase::Progressing | Phase::Paused | Phase::Promoting | Phase::Waiting | Phase::Frozen
            ) =>
        {
            Some(format!("{is}: only a rollout in progress can be aborted"))
        }
        Action::Retry if phase != Phase::Failed => {
            Some(format!("{is}: only a failed rollout can be retried"))
        }
        Action::Retry => match (status.canary_revision.as_deref(), target_revision) {
            (Some(failed), Some(now)) if failed != now => Some(format!(
                "the failed revision {failed} is no longer the revision of Deployment {} (it has {now}); \
                 a new revision starts a rollout by itself",
                rollout.spec.target_ref.name
            )),
            _ => None,
        },
        _ => None,
    }
}

/// Why pausing or resuming makes no sense now, or `None`.
pub fn pause_refusal(paused: bool, rollout: &Rollout) -> Option<String> {
    let name = rollout.metadata.name.as_deref().unwrap_or("");
    let phase = rollout.status.as_ref().map(|s| s.phase);
    (paused && phase == Some(Phase::Promoting))
        .then(|| format!("rollout {name} is Promoting: a promotion cannot be paused; abort it instead"))
}

/// The answer to a request, as one line, and whether it was accepted.
pub fn answer(rollout: &Rollout, request: &RequestStatus) -> (bool, String) {
    let name = rollout.metadata.name.as_deref().unwrap_or("");
    match request.outcome {
        RequestOutcome::Accepted => {
            let state = rollout
                .status
                .as_ref()
                .map(|s| match &s.message {
                    Some(m) => format!("{:?}: {m}", s.phase),
                    None => format!("{:?}", s.phase),
                })
                .unwrap_or_default();
            (true, format!("rollout {name}: request {} accepted; now {state}", request.id))
        }
        RequestOutcome::Refused => (
            false,
            format!(
                "rollout {name}: Serin refused request {}: {}",
                request.id,
                request.message.as_deref().unwrap_or("no reason given")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RolloutSpec, RolloutStatus};

    fn rollout(phase: Option<Phase>, canary: Option<&str>) -> Rollout {
        let spec: RolloutSpec = serde_json::from_value(
            serde_json::json!({"targetRef": {"name": "web"}, "service": {"port": 80}}),
        )
        .unwrap();
        let mut r = Rollout::new("web", spec);
        r.status = phase.map(|phase| RolloutStatus {
            phase,
            canary_revision: canary.map(str::to_string),
            ..RolloutStatus::default()
        });
        r
    }

    #[test]
    fn refusals_follow_the_engine_rules() {
        let all = [
            Phase::Initializing,
            Phase::Idle,
            Phase::Progressing,
            Phase::Paused,
            Phase::Promoting,
            Phase::Succeeded,
            Phase::Failed,
            Phase::Waiting,
            Phase::Frozen,
        ];
        let accepted = |action| -> Vec<Phase> {
            all.iter()
                .copied()
                .filter(|p| refusal(action, &rollout(Some(*p), Some("a")), Some("a")).is_none())
                .collect()
        };
        let promotable = vec![Phase::Progressing, Phase::Paused, Phase::Waiting, Phase::Frozen];
        assert_eq!(accepted(Action::Promote), promotable);
        assert_eq!(accepted(Action::PromoteFull), promotable);
        assert_eq!(
            accepted(Action::Abort),
            vec![Phase::Progressing, Phase::Paused, Phase::Promoting, Phase::Waiting, Phase::Frozen]
        );
        assert_eq!(accepted(Action::Retry), vec![Phase::Failed]);
    }

    #[test]
    fn refusals_say_why() {
        let why = refusal(Action::Promote, &rollout(Some(Phase::Idle), None), None).unwrap();
        assert_eq!(
            why,
            "rollout web is Idle: only a progressing, paused, waiting or frozen rollout can be promoted; there is no canary to promote"
        );
        let why = refusal(Action::Retry, &rollout(Some(Phase::Failed), Some("old")), Some("new")).unwrap();
        assert!(why.contains("the failed revision old is no longer the revision of Deployment web"), "{why}");
        assert!(refusal(Action::Retry, &rollout(Some(Phase::Failed), Some("old")), None).is_none());
        let why = refusal(Action::Abort, &rollout(None, None), None).unwrap();
        assert!(why.contains("no status yet"), "{why}");
        assert!(pause_refusal(true, &rollout(Some(Phase::Promoting), None)).is_some());
        assert!(pause_refusal(true, &rollout(Some(Phase::Idle), None)).is_none());
        assert!(pause_refusal(false, &rollout(Some(Phase::Promoting), None)).is_none());
    }

    #[test]
    fn requests_are_annotations() {
        assert_eq!(Action::PromoteFull.value("7"), "promote-full/7");
        assert_eq!(
            request_patch("abort/1"),
            serde_json::json!({"metadata": {"annotations": {"serin.dev/request": "abort/1"}}})
        );
    }
}
