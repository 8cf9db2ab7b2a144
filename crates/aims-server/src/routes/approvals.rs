//! `/v1/approvals`: humans list approval requests and approve or deny them; the agent that
//! asked, the resource server that asked on its behalf (a gateway holding the call), and
//! approvers read one and may long-poll it until it is answered.
//!
//! Deciding needs a human credential whose role may approve, named by the policy's
//! `@approvers` when it names any, and, under `@four_eyes`, not the agent's owner nor the
//! human the task acts for. An agent credential never decides. The answer is one audit event
//! (`approval.decide`) naming the request and its task, committed with the change.

use std::time::Duration;

use aims_api::approvals::{AnswerApproval, ApprovalList, ApprovalView};
use aims_core::approval::{ApprovalState, Barred, is_valid_reason};
use aims_core::audit::action;
use aims_core::credential::{CredentialKind, MAX_CREDENTIAL_LEN};
use aims_core::id::ApprovalId;
use aims_core::user::Access;
use aims_store::{ResourceServer, StoreError};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::approval_watch;
use crate::auth::{self, AuthenticatedAgent, Caller};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Body, Path, Query};
use crate::state::AppState;

/// The longest a long-poll may ask to wait, in seconds.
pub const MAX_WAIT_S: u64 = 60;
/// The default page of `GET /v1/approvals`.
const DEFAULT_LIMIT: u32 = 100;

/// `GET /v1/approvals` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending` (default: unanswered and unexpired) or `all`.
    #[serde(default)]
    pub state: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `GET /v1/approvals/{id}` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Wait up to this long for an answer: `30s` or `30`, 0 to 60 seconds.
    #[serde(default)]
    pub wait: Option<String>,
}

/// `GET /v1/approvals`: approvers and readers list requests.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ApprovalList>, ApiError> {
    require_reader(&caller)?;
    let now = OffsetDateTime::now_utc();
    let pending_at = match query.state.as_deref() {
        None | Some("pending") => Some(now),
        Some("all") => None,
        Some(_) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "state must be pending or all",
            ));
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let approvals = state
        .store
        .list_approvals(pending_at, limit)
        .await?
        .into_iter()
        .map(|request| ApprovalView::of(request, now))
        .collect();
    Ok(Json(ApprovalList { approvals }))
}

/// Who reads one request: the agent that asked, the resource server that asked on its behalf
/// (an enforcement point holding the call), or a human who may approve or read.
pub enum Reader {
    /// An operator.
    Human(Caller),
    /// An agent, by its SVID or task token.
    Agent(Box<AuthenticatedAgent>),
    /// A resource server, by its client credential (HTTP Basic).
    ResourceServer(ResourceServer),
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if auth::is_basic(&parts.headers) {
            let server = auth::resource_server_caller(state, &parts.headers).await?;
            return Ok(Self::ResourceServer(server));
        }
        let human = auth::bearer(&parts.headers, MAX_CREDENTIAL_LEN)
            .is_some_and(|credential| CredentialKind::Human.marks(credential));
        if !human {
            let agent = AuthenticatedAgent::from_request_parts(parts, state).await?;
            return Ok(Self::Agent(Box::new(agent)));
        }
        let caller = auth::operator(state, &parts.headers).await?;
        require_reader(&caller)?;
        Ok(Self::Human(caller))
    }
}

/// `GET /v1/approvals/{id}[?wait=30s]`: the request as it stands, after waiting up to `wait`
/// (and never past the server's request timeout) for it to stop being pending.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    reader: Reader,
    Query(query): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let wait = wait_of(query.wait.as_deref())?;
    let id = approval_id(&id)?;
    let visible = |request: &aims_core::approval::ApprovalRequest| match &reader {
        Reader::Human(_) => true,
        Reader::Agent(agent) => request.asked.call.agent == agent.agent().name,
        Reader::ResourceServer(server) => {
            request.asked.enforcement_point.as_ref() == Some(&server.name)
        }
    };
    // Check before waiting: an agent or a resource server never waits on a request that is
    // not its own.
    match state.store.approval(&id).await? {
        Some(request) if visible(&request) => {}
        _ => return Err(not_found()),
    }
    let ceiling = state
        .config
        .request_timeout
        .saturating_sub(Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + wait.min(ceiling);
    let request =
        approval_watch::wait_for_answer(state.store.as_ref(), &state.approval_watch, &id, deadline)
            .await?
            .ok_or_else(not_found)?;
    let mut response = Json(ApprovalView::of(request, OffsetDateTime::now_utc())).into_response();
    if let Reader::Human(caller) = reader {
        // The audit layer records an operator's read.
        response.extensions_mut().insert(caller.actor());
    }
    Ok(response)
}

/// `POST /v1/approvals/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    Body(answer): Body<AnswerApproval>,
) -> Result<Json<ApprovalView>, ApiError> {
    answer_request(&state, &caller, &id, answer, true).await
}

/// `POST /v1/approvals/{id}/deny`.
pub async fn deny(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    Body(answer): Body<AnswerApproval>,
) -> Result<Json<ApprovalView>, ApiError> {
    answer_request(&state, &caller, &id, answer, false).await
}

/// Records `caller`'s answer to request `id`, after every check that names what is wrong.
async fn answer_request(
    state: &AppState,
    caller: &Caller,
    id: &str,
    answer: AnswerApproval,
    approved: bool,
) -> Result<Json<ApprovalView>, ApiError> {
    let id = approval_id(id)?;
    if !is_valid_reason(&answer.reason) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidReason,
            "reason must be 1 to 512 characters of visible text",
        ));
    }
    let request = state.store.approval(&id).await?.ok_or_else(not_found)?;
    request
        .may_be_decided_by(&caller.user)
        .map_err(|barred| match barred {
            Barred::NotAnApprover => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::NotAnApprover,
                "you are not among the approvers of this request",
            ),
            Barred::FourEyes => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::FourEyes,
                "four eyes: the agent's owner, or the human the task acts for, may not approve",
            ),
        })?;
    let now = OffsetDateTime::now_utc();
    match request.state_at(now) {
        ApprovalState::Pending => {}
        ApprovalState::Expired => {
            return Err(ApiError::conflict(
                ErrorCode::ApprovalExpired,
                "the approval request expired",
            ));
        }
        ApprovalState::Revoked => {
            return Err(ApiError::conflict(
                ErrorCode::ApprovalRevoked,
                "the approval request was revoked with its task, token, agent or owner",
            ));
        }
        answered => {
            return Err(ApiError::conflict(
                ErrorCode::ApprovalAlreadyDecided,
                format!("the approval request was answered before ({answered})"),
            ));
        }
    }
    let asked = &request.asked;
    let task_open = state
        .store
        .task(asked.call.task_id.as_str())
        .await?
        .is_some_and(|t| t.is_open(now));
    if !task_open {
        return Err(ApiError::conflict(
            ErrorCode::TaskNotActive,
            "the task the call belongs to has ended",
        ));
    }
    let agent_active = state
        .store
        .agent(&asked.call.agent)
        .await?
        .is_some_and(|a| a.state.may_hold_credentials());
    if !agent_active {
        return Err(ApiError::conflict(
            ErrorCode::AgentNotActive,
            "the agent may not act in its current state",
        ));
    }
    let verdict = aims_core::approval::ApprovalVerdict {
        approved,
        by: caller.user.name.clone(),
        role: caller.user.role.to_string(),
        reason: answer.reason,
        at: now,
    };
    let answer_word = if approved { "approved" } else { "denied" };
    let mut event = caller
        .event(state, action::APPROVAL_DECIDE)
        .agent(asked.spiffe_id.clone())
        .owner(asked.owner.to_string())
        .resource(format!("{} {}", asked.call.action, asked.call.resource))
        .token(asked.credential_id.clone())
        .chain(asked.delegation_chain.clone())
        .approval(id.as_str())
        .decision(answer_word, asked.policies.clone())
        .details(json!({
            "reason": verdict.reason,
            "arguments_digest": asked.call.arguments_digest,
        }));
    event.task_id = Some(asked.call.task_id.to_string());
    event.intent = Some(asked.intent.clone());
    let decided = match state.store.decide_approval(&id, &verdict, &event).await {
        Ok(decided) => decided,
        Err(StoreError::Conflict { reason }) => {
            return Err(ApiError::conflict(ErrorCode::Conflict, reason));
        }
        Err(e) => return Err(e.into()),
    };
    state.approval_watch.changed();
    Ok(Json(ApprovalView::of(decided, now)))
}

/// Refuses a caller whose role may neither approve nor read.
fn require_reader(caller: &Caller) -> Result<(), ApiError> {
    let role = caller.user.role;
    if role.allows(Access::Approve) || role.allows(Access::Read) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "role {role} may not see approval requests"
        )))
    }
}

fn approval_id(raw: &str) -> Result<ApprovalId, ApiError> {
    ApprovalId::new(raw).map_err(|_| not_found())
}

fn not_found() -> ApiError {
    ApiError::not_found(ErrorCode::ApprovalNotFound, "no such approval request")
}

/// `wait` as a duration: whole seconds, with or without `s`, 0 to [`MAX_WAIT_S`].
fn wait_of(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw else {
        return Ok(Duration::ZERO);
    };
    let digits = raw.strip_suffix('s').unwrap_or(raw);
    digits
        .parse::<u64>()
        .ok()
        .filter(|s| {
            *s <= MAX_WAIT_S && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .map(Duration::from_secs)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidWait,
                format!("wait must be 0 to {MAX_WAIT_S} seconds, e.g. 30s"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_whole_seconds_up_to_a_minute() {
        assert_eq!(wait_of(None).unwrap(), Duration::ZERO);
        assert_eq!(wait_of(Some("30s")).unwrap(), Duration::from_secs(30));
        assert_eq!(wait_of(Some("0")).unwrap(), Duration::ZERO);
        assert_eq!(wait_of(Some("60")).unwrap(), Duration::from_secs(60));
        for bad in [
            "61s",
            "-1",
            "-1s",
            "+5",
            "1m",
            "s",
            "",
            "99999999999999999999",
            "1.5s",
        ] {
            let refused = wait_of(Some(bad)).unwrap_err();
            assert_eq!(refused.code, ErrorCode::InvalidWait, "{bad}");
        }
    }
}
