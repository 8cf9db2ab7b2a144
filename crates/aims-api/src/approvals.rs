//! Wire types of `/v1/approvals`: an approval request as agents and approvers see it, and a
//! human's answer.

use aims_core::approval::{ApprovalRequest, ApprovalState, ApprovalVerdict, AskedApproval};
use aims_core::id::ApprovalId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `GET /v1/approvals/{id}`: one approval request and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalView {
    /// Its id.
    pub approval_id: ApprovalId,
    /// `pending`, `approved`, `used`, `denied`, `expired` or `revoked`, now.
    pub state: ApprovalState,
    /// What was asked: the exact call, who asked for which task, the policies that asked
    /// for approval (with their text), and who may approve. `arguments` is absent when the
    /// policy does not let approvers see them (`arguments_digest` still names them).
    #[serde(flatten)]
    pub asked: AskedApproval,
    /// Calls the grant still covers.
    pub uses_left: u32,
    /// Who answered, when, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<ApprovalVerdict>,
    /// When an approval stops covering calls.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub grant_expires_at: Option<OffsetDateTime>,
}

impl ApprovalView {
    /// The view of `request` at `now`.
    pub fn of(request: ApprovalRequest, now: OffsetDateTime) -> Self {
        Self {
            approval_id: request.id.clone(),
            state: request.state_at(now),
            grant_expires_at: request.grant_expires_at(),
            uses_left: request.uses_left,
            verdict: request.verdict,
            asked: request.asked,
        }
    }
}

/// `GET /v1/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalList {
    /// Newest first.
    pub approvals: Vec<ApprovalView>,
}

/// `POST /v1/approvals/{id}/approve` and `…/deny`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerApproval {
    /// Why, in the approver's words (1–512 characters); recorded in the audit log.
    pub reason: String,
}
