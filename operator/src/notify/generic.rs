//! Serin's own JSON, for receivers of any kind (an incident tool, a chat bridge, a log):
//!
//! ```json
//! {"rollout": "web", "namespace": "shop", "kind": "rolledBack", "severity": "error",
//!  "reason": "AnalysisFailed", "message": "rolled back: ...", "title": "shop/web: rolled back",
//!  "phase": "Failed", "revision": "7d9f21c4", "promotedRevision": "5c8d9f10",
//!  "step": 0, "steps": 5, "weights": {"canary": 0, "primary": 100},
//!  "gates": [{"name": "successRate", "value": 97.8, "primaryValue": 99.9, "threshold": ">= 99.5",
//!             "verdict": "Fail", "requests": 1204.0}]}
//! ```
//!
//! `gates` holds every gate's last verdict, as in `status.gates`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Message, MessageKind};
use crate::api::{GateStatus, Severity};
use crate::webhooks::RolloutState;

/// The generic body, also usable by receivers to parse it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenericBody {
    #[serde(flatten)]
    pub state: RolloutState,
    pub kind: MessageKind,
    pub severity: Severity,
    pub reason: String,
    pub message: String,
    pub title: String,
    pub gates: Vec<GateStatus>,
}

/// The body for a generic receiver.
pub fn render(message: &Message) -> Value {
    let body = GenericBody {
        state: message.state.clone(),
        kind: message.kind,
        severity: message.severity,
        reason: message.reason.clone(),
        message: message.text.clone(),
        title: message.title(),
        gates: message.gates.clone(),
    };
    serde_json::to_value(&body).unwrap_or(Value::Null)
}
