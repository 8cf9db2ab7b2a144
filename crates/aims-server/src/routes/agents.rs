//! `/v1/agents`: register, list, show, update, lifecycle changes and join tokens.
//!
//! Handlers validate input through the `aims-core` types, build the new record, and hand the
//! store the change together with its audit event, so both commit or neither does.

use aims_api::{
    AgentList, AgentQuery, AgentView, Inventory, InventoryEntry, InventoryPosture, JoinTokenIssued,
    LastDecision, LifecycleRequest, MAX_INVENTORY_PAGE, RecertifyRequest, RegisterAgentRequest,
    UpdateAgentRequest,
};
use aims_core::agent::{Agent, LifecycleAction, LifecycleState};
use aims_core::audit::{AuditEvent, action};
use aims_core::credential::{CredentialHash, CredentialKind, format_credential};
use aims_core::id::AgentName;
use aims_core::user::Access;
use aims_store::{AgentFilter, JoinTokenRecord, MAX_PAGE, StoreError};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ring::rand::SecureRandom as _;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::auth::{Allowed, Caller, ToAdminister, ToRead};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{AgentPath, Body, Query};
use crate::lifecycle::{invalid, save, transition};
use crate::recertify::deadline;
use crate::state::AppState;

fn view(state: &AppState, agent: Agent) -> AgentView {
    AgentView {
        spiffe_id: agent.spiffe_id(&state.trust_domain).to_string(),
        agent,
    }
}

/// A fresh join token for `agent`, and its stored (hashed) form.
fn new_join_token(
    state: &AppState,
    agent: &AgentName,
    now: OffsetDateTime,
) -> Result<(String, JoinTokenRecord), ApiError> {
    let mut random = [0u8; 32];
    state
        .rng
        .fill(&mut random)
        .map_err(|_| ApiError::internal())?;
    let token = format_credential(CredentialKind::Join, &random);
    let ttl = Duration::try_from(state.config.join_token_ttl).map_err(|_| ApiError::internal())?;
    let record = JoinTokenRecord {
        hash: CredentialHash::of(&token),
        agent: agent.clone(),
        expires_at: now + ttl,
    };
    Ok((token, record))
}

fn agent_event(state: &AppState, caller: &Caller, name: &str, agent: &Agent) -> AuditEvent {
    caller
        .event(state, name)
        .agent(agent.spiffe_id(&state.trust_domain).to_string())
        .owner(agent.owner.to_string())
}

/// `POST /v1/agents`.
pub async fn register(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(req): Body<RegisterAgentRequest>,
) -> Result<(StatusCode, Json<JoinTokenIssued>), ApiError> {
    let now = OffsetDateTime::now_utc();
    let agent = Agent {
        name: req.name,
        owner: req.owner,
        environment: req.environment.unwrap_or_default(),
        description: req.description.unwrap_or_default(),
        posture_profile: req.posture_profile.unwrap_or_default(),
        limits: req.limits.unwrap_or_default(),
        labels: req.labels.unwrap_or_default(),
        state: LifecycleState::Active,
        created_at: now,
        updated_at: now,
        recertify_by: deadline(
            now,
            req.recertify_days.unwrap_or(state.config.recertify_days),
        )?,
        revision: 1,
    };
    agent.validate().map_err(invalid)?;
    let (token, record) = new_join_token(&state, &agent.name, now)?;
    let mut event = agent_event(&state, &caller, action::AGENT_REGISTER, &agent);
    event.details = json!({
        "environment": agent.environment,
        "limits": agent.limits,
        "join_token_expires_at": record.expires_at.unix_timestamp(),
    });
    match state.store.create_agent(&agent, &record, &event).await {
        Ok(()) => state.apply_own_registry_changes().await,
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::conflict(
                ErrorCode::AgentExists,
                format!(
                    "an agent named {} was already registered; names are never reused",
                    agent.name
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let view = view(&state, agent);
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenIssued {
            spiffe_id: view.spiffe_id.clone(),
            join_token: token,
            join_token_expires_at: record.expires_at,
            agent: view,
        }),
    ))
}

/// `GET /v1/agents`.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<AgentQuery>,
) -> Result<Json<AgentList>, ApiError> {
    let (agents, next_after) = page_of_agents(&state, query, MAX_PAGE).await?;
    Ok(Json(AgentList {
        agents: agents.into_iter().map(|a| view(&state, a)).collect(),
        next_after,
    }))
}

/// One page of the agents `query` asks for (at most `max`, 100 unless it says), and the name
/// to continue after when the page is full.
async fn page_of_agents(
    state: &AppState,
    query: AgentQuery,
    max: u32,
) -> Result<(Vec<Agent>, Option<String>), ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, max);
    let agents = state
        .store
        .list_agents(&AgentFilter {
            owner: query.owner,
            state: query.state,
            environment: query.environment,
            after: query.after,
            limit,
        })
        .await?;
    let next_after = (agents.len() == limit as usize)
        .then(|| agents.last().map(|a| a.name.to_string()))
        .flatten();
    Ok((agents, next_after))
}

/// `GET /v1/inventory`: a page of agents (filtered as the list is, at most
/// [`MAX_INVENTORY_PAGE`]) with their last activity, posture, live credentials, open tasks
/// and last decision.
pub async fn inventory(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Query(query): Query<AgentQuery>,
) -> Result<Json<Inventory>, ApiError> {
    state.audit_sequenced().await?;
    let (agents, next_after) = page_of_agents(&state, query, MAX_INVENTORY_PAGE).await?;
    let now = OffsetDateTime::now_utc();
    let mut entries = Vec::with_capacity(agents.len());
    for agent in agents {
        let spiffe_id = agent.spiffe_id(&state.trust_domain).to_string();
        let activity = state
            .store
            .agent_activity(&agent.name, &spiffe_id, now)
            .await?;
        let posture = state
            .store
            .posture_snapshot(&agent.name)
            .await?
            .map(|s| InventoryPosture {
                age_s: (now - s.accepted_at).whole_seconds().max(0),
                digest: s.digest,
                accepted_at: s.accepted_at,
            });
        let last_decision = activity
            .last_decision
            .and_then(|r| serde_json::from_str::<AuditEvent>(&r.body).ok())
            .map(|e| LastDecision {
                time: e.time,
                call: e.resource,
                decision: e.decision,
                policies: e.policy_ids,
            });
        entries.push(InventoryEntry {
            agent: view(&state, agent),
            last_seen: activity.last_seen,
            posture,
            live_credentials: activity.live_credentials,
            open_tasks: activity.open_tasks,
            last_decision,
        });
    }
    Ok(Json(Inventory {
        agents: entries,
        next_after,
    }))
}

async fn load(state: &AppState, name: &AgentName) -> Result<Agent, ApiError> {
    state.store.agent(name).await?.ok_or_else(|| {
        ApiError::not_found(ErrorCode::AgentNotFound, format!("no agent named {name}"))
    })
}

/// `GET /v1/agents/{name}`.
pub async fn show(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    AgentPath(name): AgentPath,
) -> Result<Json<AgentView>, ApiError> {
    let agent = load(&state, &name).await?;
    Ok(Json(view(&state, agent)))
}

/// `PATCH /v1/agents/{name}`.
pub async fn update(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    AgentPath(name): AgentPath,
    Body(req): Body<UpdateAgentRequest>,
) -> Result<Json<AgentView>, ApiError> {
    let current = load(&state, &name).await?;
    if let Some(expected) = req.revision
        && expected != current.revision
    {
        return Err(ApiError::conflict(
            ErrorCode::RevisionConflict,
            format!(
                "the agent is at revision {}, not {expected}",
                current.revision
            ),
        ));
    }
    if current.state == LifecycleState::Decommissioned {
        return Err(ApiError::conflict(
            ErrorCode::AgentDecommissioned,
            "a decommissioned agent cannot be changed",
        ));
    }
    let now = OffsetDateTime::now_utc();
    let mut changed = Vec::new();
    let mut next = current.clone();
    if let Some(owner) = req.owner {
        next.owner = owner;
        changed.push("owner");
    }
    if let Some(environment) = req.environment {
        next.environment = environment;
        changed.push("environment");
    }
    if let Some(description) = req.description {
        next.description = description;
        changed.push("description");
    }
    if let Some(profile) = req.posture_profile {
        next.posture_profile = profile;
        changed.push("posture_profile");
    }
    if let Some(limits) = req.limits {
        next.limits = limits;
        changed.push("limits");
    }
    if let Some(labels) = req.labels {
        next.labels = labels;
        changed.push("labels");
    }
    if let Some(days) = req.recertify_days {
        next.recertify_by = deadline(now, days)?;
        changed.push("recertify_by");
    }
    if changed.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyUpdate,
            "the update changes nothing",
        ));
    }
    next.updated_at = now;
    next.revision = current.revision.saturating_add(1);
    next.validate().map_err(invalid)?;
    let mut event = agent_event(&state, &caller, action::AGENT_UPDATE, &next);
    event.details =
        json!({ "changed": changed, "previous_owner": current.owner, "revision": next.revision });
    save(&state, &next, &current, &event).await?;
    Ok(Json(view(&state, next)))
}

/// `POST /v1/agents/{name}/suspend|resume|decommission`.
async fn lifecycle(
    state: AppState,
    caller: Caller,
    name: AgentName,
    request: LifecycleRequest,
    lifecycle_action: LifecycleAction,
) -> Result<Json<AgentView>, ApiError> {
    caller.require(Access::Administer)?;
    if let Some(reason) = &request.reason
        && !aims_core::text::is_visible_within(reason, aims_core::agent::MAX_LIFECYCLE_REASON_LEN)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidReason,
            "reason must be at most 512 printable characters",
        ));
    }
    let current = load(&state, &name).await?;
    let event = caller.event(&state, action::AGENT_LIFECYCLE);
    let next = transition(
        &state,
        &current,
        lifecycle_action,
        event,
        request.reason.as_deref(),
        None,
    )
    .await?;
    Ok(Json(view(&state, next)))
}

/// `POST /v1/agents/{name}/suspend`.
pub async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    AgentPath(name): AgentPath,
    Body(req): Body<LifecycleRequest>,
) -> Result<Json<AgentView>, ApiError> {
    lifecycle(state, caller, name, req, LifecycleAction::Suspend).await
}

/// `POST /v1/agents/{name}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    AgentPath(name): AgentPath,
    Body(req): Body<LifecycleRequest>,
) -> Result<Json<AgentView>, ApiError> {
    lifecycle(state, caller, name, req, LifecycleAction::Resume).await
}

/// `POST /v1/agents/{name}/decommission`.
pub async fn decommission(
    State(state): State<AppState>,
    caller: Caller,
    AgentPath(name): AgentPath,
    Body(req): Body<LifecycleRequest>,
) -> Result<Json<AgentView>, ApiError> {
    lifecycle(state, caller, name, req, LifecycleAction::Decommission).await
}

/// `POST /v1/agents/{name}/release`: an admin lets a quarantined agent attest again; its
/// posture baseline is cleared, so the next accepted attestation sets a new one.
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    AgentPath(name): AgentPath,
    Body(req): Body<LifecycleRequest>,
) -> Result<Json<AgentView>, ApiError> {
    lifecycle(state, caller, name, req, LifecycleAction::Release).await
}

/// `POST /v1/agents/{name}/recertify`: an admin or the agent's designated approver moves its
/// recertification date forward ([`crate::recertify::recertify`]).
pub async fn recertify(
    State(state): State<AppState>,
    caller: Caller,
    AgentPath(name): AgentPath,
    Body(req): Body<RecertifyRequest>,
) -> Result<Json<AgentView>, ApiError> {
    let next = crate::recertify::recertify(&state, &caller, &name, req.days).await?;
    Ok(Json(view(&state, next)))
}

/// `POST /v1/agents/{name}/join-token`: replaces any unused join token with a new one.
pub async fn join_token(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    AgentPath(name): AgentPath,
) -> Result<Json<JoinTokenIssued>, ApiError> {
    let agent = load(&state, &name).await?;
    if !agent.state.may_hold_credentials() {
        return Err(ApiError::conflict(
            ErrorCode::AgentNotActive,
            format!(
                "the agent is {}; only active agents get join tokens",
                agent.state
            ),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let (token, record) = new_join_token(&state, &agent.name, now)?;
    let mut event = agent_event(&state, &caller, action::AGENT_JOIN_TOKEN, &agent);
    event.details = json!({ "join_token_expires_at": record.expires_at.unix_timestamp() });
    state.store.replace_join_token(&record, &event).await?;
    let view = view(&state, agent);
    Ok(Json(JoinTokenIssued {
        spiffe_id: view.spiffe_id.clone(),
        join_token: token,
        join_token_expires_at: record.expires_at,
        agent: view,
    }))
}
