//! Changes to an agent's record shared by the admin routes and background work: storing a new
//! revision with its audit event (mapping a lost race), and lifecycle transitions (suspend,
//! resume, decommission, release). The store revokes an agent's credentials in the same
//! transaction when its new state may not hold any, so a suspension by an operator and one by
//! the recertification watcher ([`crate::recertify`]) revoke the same things.

use aims_core::agent::{Agent, AgentError, LifecycleAction};
use aims_core::audit::AuditEvent;
use aims_store::StoreError;
use serde_json::json;
use time::OffsetDateTime;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The refusal of an invalid agent record or transition.
pub fn invalid(e: AgentError) -> ApiError {
    match e {
        AgentError::Transition { .. } => {
            ApiError::conflict(ErrorCode::InvalidTransition, e.to_string())
        }
        other => ApiError::bad_request(ErrorCode::InvalidAgent, other.to_string()),
    }
}

/// Stores `next` (whose revision must be `current.revision + 1`), mapping a lost race.
pub async fn save(
    state: &AppState,
    next: &Agent,
    current: &Agent,
    event: &AuditEvent,
) -> Result<(), ApiError> {
    match state
        .store
        .update_agent(next, current.revision, event)
        .await
    {
        Ok(()) => {
            // The store revoked the agent's credentials with it.
            if !next.state.may_hold_credentials() {
                state.apply_own_revocations().await;
            }
            state.apply_own_registry_changes().await;
            Ok(())
        }
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(
            ErrorCode::RevisionConflict,
            "the agent was changed concurrently; read it again and retry",
        )),
        Err(StoreError::NotFound { .. }) => Err(ApiError::not_found(
            ErrorCode::AgentNotFound,
            format!("no agent named {}", next.name),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Applies `lifecycle_action` to `current` and stores it with `event` (its actor and request
/// set by the caller), whose agent, owner and details this fills in: the transition, the
/// operator's `reason` and, for remediation, its `cause`. Returns the stored record.
pub async fn transition(
    state: &AppState,
    current: &Agent,
    lifecycle_action: LifecycleAction,
    mut event: AuditEvent,
    reason: Option<&str>,
    cause: Option<&str>,
) -> Result<Agent, ApiError> {
    let mut next = current.clone();
    next.state = current.state.apply(lifecycle_action).map_err(invalid)?;
    next.updated_at = OffsetDateTime::now_utc();
    next.revision = current.revision.saturating_add(1);
    event.agent = Some(next.spiffe_id(&state.trust_domain).to_string());
    event.owner = Some(next.owner.to_string());
    let mut details = serde_json::Map::new();
    details.insert("action".into(), json!(lifecycle_action));
    details.insert("from".into(), json!(current.state));
    details.insert("to".into(), json!(next.state));
    details.insert("reason".into(), json!(reason));
    if let Some(cause) = cause {
        details.insert("cause".into(), json!(cause));
    }
    event.details = details.into();
    save(state, &next, current, &event).await?;
    Ok(next)
}
