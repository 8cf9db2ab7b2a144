//! Waiting for a human: the agent side of just-in-time approval, CIBA-style.
//!
//! [`TokenClient::decide_or_wait`](crate::TokenClient::decide_or_wait) (with a task token)
//! and [`AdminClient::decide_or_wait`](crate::AdminClient::decide_or_wait) (with an SVID)
//! ask for a decision; when the answer is `approval_required` they long-poll the approval
//! request the server opened for that exact call (`GET /v1/approvals/{id}?wait=…`, no busy
//! polling: the server answers when a human does) and, once it is approved, ask again: the
//! approval is a grant for that call, so the second answer is `allow`. A denial, an expiry or
//! a revocation ends the wait with the first answer.

use std::future::Future;
use std::time::Duration;

use aims_api::DecisionView;
use aims_api::approvals::ApprovalView;
use aims_core::approval::ApprovalState;
use aims_core::id::ApprovalId;
use tokio::time::Instant;

use crate::SdkError;

/// The longest one long-poll asks the server to hold (its own bound is 60 s, and its request
/// timeout).
pub const POLL_WAIT: Duration = Duration::from_secs(25);

/// How a decision that may need a human ended.
#[derive(Debug, Clone)]
pub struct WaitedDecision {
    /// The last answer: `allow` once an approval covered the call; otherwise the first
    /// answer (`approval_required` when the approval was denied, expired, revoked or is still
    /// pending when the wait ran out).
    pub decision: DecisionView,
    /// The approval request waited on, as it last stood; `None` when none was needed.
    pub approval: Option<ApprovalView>,
}

/// `/v1/approvals/{id}`. An approval id is `[A-Za-z0-9_-]` (checked when it was parsed), safe
/// in a path segment.
pub(crate) fn approval_path(id: &ApprovalId) -> String {
    format!("/v1/approvals/{id}")
}

/// Asks with `decide`; while the answer waits for approval, waits with `wait` (the request's
/// id and whole seconds to hold) until it is answered or `max_wait` has passed; asks again
/// once approved.
pub(crate) async fn decide_or_wait<D, DF, W, WF>(
    decide: D,
    wait: W,
    max_wait: Duration,
) -> Result<WaitedDecision, SdkError>
where
    D: Fn() -> DF,
    DF: Future<Output = Result<DecisionView, SdkError>>,
    W: Fn(ApprovalId, u64) -> WF,
    WF: Future<Output = Result<ApprovalView, SdkError>>,
{
    let first = decide().await?;
    let Some(id) = first
        .approval_id
        .clone()
        .filter(|_| first.decision == "approval_required")
    else {
        return Ok(WaitedDecision {
            decision: first,
            approval: None,
        });
    };
    let deadline = Instant::now() + max_wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Whole seconds, at least one while any time is left, so a wait never spins.
        let hold = left.min(POLL_WAIT).as_secs_f64().ceil();
        let approval = wait(id.clone(), hold as u64).await?;
        match approval.state {
            ApprovalState::Approved => {
                let decision = decide().await?;
                return Ok(WaitedDecision {
                    decision,
                    approval: Some(approval),
                });
            }
            ApprovalState::Pending if !left.is_zero() => {}
            _ => {
                return Ok(WaitedDecision {
                    decision: first,
                    approval: Some(approval),
                });
            }
        }
    }
}
