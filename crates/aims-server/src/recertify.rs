//! Recertification: an agent's owner confirms, by a date (`recertify_by`), that the agent is
//! still needed; past it the agent may not attest.
//!
//! The watcher ([`watch`]) warns the owner on the recertification webhook
//! ([`crate::webhook::Hook::Recertify`]) once the date is within
//! [`Config::recertify_warn`](crate::config::Config), and suspends the agent once it is
//! [`Config::recertify_grace`](crate::config::Config) past the date, through the transition an
//! operator's suspension takes ([`crate::lifecycle::transition`], so its credentials are
//! revoked with it), audited with the cause [`CAUSE`] and announced on the webhook. Each
//! happens once per agent per date: with several replicas on one store, the claim on an
//! agent's date ([`aims_store::Store::claim_recertification`]) lets one replica do the work,
//! as the claims on SSF push streams and leases do.
//!
//! [`recertify`] is the other half: an admin, or the human the agent's `approver` label names
//! (with the approver role), moves the date forward. It never changes the agent's lifecycle
//! state; an agent suspended for a lapsed recertification is resumed by an admin.

use std::time::Duration;

use aims_core::agent::{Agent, LifecycleAction, LifecycleState};
use aims_core::audit::{Actor, Outcome, action};
use aims_core::id::AgentName;
use aims_core::user::Role;
use aims_store::{AgentFilter, RecertificationStep};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::lifecycle::{invalid, save, transition};
use crate::state::AppState;
use crate::webhook::{self, Hook};

/// The cause recorded on a suspension for a lapsed recertification.
pub const CAUSE: &str = "recertification_overdue";
/// The label naming the human (a user with the approver role) who may recertify an agent
/// besides admins: the owner's designated approver.
pub const APPROVER_LABEL: &str = "approver";
/// How long one replica's claim on an agent's date lasts.
const CLAIM_FOR: Duration = Duration::from_secs(60);
/// Agents read per page.
const PAGE: u32 = 500;
/// Longest recertification period, days.
pub const MAX_DAYS: u32 = 3650;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The body of a recertification notice about `agent`, with its `cause` when it was
/// suspended.
fn notice(
    state: &AppState,
    kind: &str,
    agent: &Agent,
    cause: Option<&str>,
    now: OffsetDateTime,
) -> Value {
    json!({
        "type": kind,
        "agent": agent.spiffe_id(&state.trust_domain).to_string(),
        "name": agent.name,
        "owner": agent.owner,
        "recertify_by": rfc3339(agent.recertify_by),
        "suspend_after": rfc3339(agent.recertify_by + state.config.recertify_grace),
        "cause": cause,
        "time": now.unix_timestamp(),
    })
}

/// One round of the watcher at `now`: every active agent whose date is within the warning
/// window is looked at by whichever replica claims it.
pub async fn check_once(state: &AppState, holder: &str, now: OffsetDateTime) {
    let horizon = now + state.config.recertify_warn;
    let mut after: Option<AgentName> = None;
    loop {
        let filter = AgentFilter {
            state: Some(LifecycleState::Active),
            after: after.clone(),
            limit: PAGE,
            ..AgentFilter::default()
        };
        let page = match state.store.list_agents(&filter).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "cannot list agents to recertify; retrying");
                return;
            }
        };
        for agent in page.iter().filter(|a| a.recertify_by <= horizon) {
            check_agent(state, holder, agent, now).await;
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.name.clone()),
            _ => return,
        }
    }
}

/// Warns `agent`'s owner, or suspends it, if this replica claims its date and it is due.
async fn check_agent(state: &AppState, holder: &str, agent: &Agent, now: OffsetDateTime) {
    let due = agent.recertify_by;
    let claimed = state
        .store
        .claim_recertification(&agent.name, due, holder, now, now + CLAIM_FOR)
        .await;
    let step = match claimed {
        Ok(Some(step)) => step,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(agent = %agent.name, %error, "cannot claim a recertification");
            return;
        }
    };
    let overdue = now >= due + state.config.recertify_grace;
    let done = match (step, overdue) {
        (RecertificationStep::Suspended, _) | (RecertificationStep::Warned, false) => None,
        (_, true) => suspend(state, &agent.name, due, now).await,
        (RecertificationStep::New, false) => {
            webhook::notify(
                state,
                Hook::Recertify,
                notice(state, "agent.recertification_due", agent, None, now),
            );
            Some(RecertificationStep::Warned)
        }
    };
    if let Err(error) = state
        .store
        .finish_recertification(&agent.name, due, holder, done, now)
        .await
    {
        tracing::warn!(agent = %agent.name, %error, "cannot record a recertification step");
    }
}

/// Suspends agent `name` if it is still active and still due on `due`; whether it did.
async fn suspend(
    state: &AppState,
    name: &AgentName,
    due: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<RecertificationStep> {
    let current = match state.store.agent(name).await {
        Ok(Some(agent)) if agent.state == LifecycleState::Active && agent.recertify_by == due => {
            agent
        }
        Ok(_) => return None,
        Err(error) => {
            tracing::warn!(agent = %name, %error, "cannot read an agent to suspend");
            return None;
        }
    };
    let event = state.event(Actor::System, action::AGENT_LIFECYCLE, Outcome::Success);
    let reason = format!("not recertified by {}", rfc3339(due));
    match transition(
        state,
        &current,
        LifecycleAction::Suspend,
        event,
        Some(&reason),
        Some(CAUSE),
    )
    .await
    {
        Ok(suspended) => {
            tracing::info!(agent = %name, "suspended an agent whose recertification lapsed");
            let body = notice(state, "agent.suspended", &suspended, Some(CAUSE), now);
            webhook::notify(state, Hook::Recertify, body);
            Some(RecertificationStep::Suspended)
        }
        Err(error) => {
            tracing::warn!(agent = %name, code = %error.code, "cannot suspend an agent whose recertification lapsed");
            None
        }
    }
}

/// The watcher: every [`Config::recertify_check`](crate::config::Config), one round of
/// [`check_once`]. Runs on every replica; the claims make each step happen once.
pub async fn watch(state: AppState, mut stop: watch::Receiver<bool>) {
    let holder = aims_token::random_id(&state.rng)
        .unwrap_or_else(|_| format!("replica-{}", std::process::id()));
    let mut tick = tokio::time::interval(state.config.recertify_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => check_once(&state, &holder, OffsetDateTime::now_utc()).await,
            _ = stop.changed() => return,
        }
    }
}

/// `now` plus `days` (1 to [`MAX_DAYS`]): a recertification date.
pub fn deadline(now: OffsetDateTime, days: u32) -> Result<OffsetDateTime, ApiError> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidAgent,
            "recertify_days must be between 1 and 3650",
        ));
    }
    Ok(now + time::Duration::days(i64::from(days)))
}

/// The refusal of a human who may not recertify an agent (or of an approver naming an agent
/// that does not exist, so approvers do not learn the registry's names).
fn not_designated() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        ErrorCode::NotAnApprover,
        "only an admin or the agent's designated approver may recertify it",
    )
}

/// Moves agent `name`'s recertification date to `days` from now (default from the
/// configuration), for `caller`: an admin, or the user its [`APPROVER_LABEL`] names when
/// their role is approver. Audited with the human actor and both dates; the lifecycle state
/// is left as it is.
pub async fn recertify(
    state: &AppState,
    caller: &Caller,
    name: &AgentName,
    days: Option<u32>,
) -> Result<Agent, ApiError> {
    let admin = match caller.user.role {
        Role::Admin => true,
        Role::Approver => false,
        Role::Auditor => return Err(ApiError::forbidden("role auditor may not do this")),
    };
    let current = match state.store.agent(name).await? {
        Some(agent) => agent,
        None if admin => {
            return Err(ApiError::not_found(
                ErrorCode::AgentNotFound,
                format!("no agent named {name}"),
            ));
        }
        None => return Err(not_designated()),
    };
    let designated = current
        .labels
        .iter()
        .any(|(k, v)| k.as_str() == APPROVER_LABEL && v == caller.user.name.as_str());
    if !admin && !designated {
        return Err(not_designated());
    }
    if current.state == LifecycleState::Decommissioned {
        return Err(ApiError::conflict(
            ErrorCode::AgentDecommissioned,
            "a decommissioned agent cannot be recertified",
        ));
    }
    let days = days.unwrap_or(state.config.recertify_days);
    let now = OffsetDateTime::now_utc();
    let mut next = current.clone();
    next.recertify_by = deadline(now, days)?;
    next.updated_at = now;
    next.revision = current.revision.saturating_add(1);
    next.validate().map_err(invalid)?;
    let mut event = caller
        .event(state, action::AGENT_RECERTIFY)
        .agent(next.spiffe_id(&state.trust_domain).to_string())
        .owner(next.owner.to_string());
    event.details = json!({
        "previous_recertify_by": rfc3339(current.recertify_by),
        "recertify_by": rfc3339(next.recertify_by),
        "days": days,
        "state": next.state,
        "revision": next.revision,
    });
    save(state, &next, &current, &event).await?;
    Ok(next)
}
