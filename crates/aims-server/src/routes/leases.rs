//! `/v1/engines` and `/v1/leases`: dynamic database credentials.
//!
//! Admins add engines (a PostgreSQL database and the secret holding its administrator's
//! password; AIMS checks at once that it can connect and create roles) and role templates
//! (grants in the closed form of [`aims_core::lease::Grant`], tried on the engine in a
//! transaction that is rolled back). An agent holding a task token asks for a lease on a
//! template: the active policies decide the `lease` action on the engine's role, and AIMS
//! registers the lease — pending, claimed by the request — as a child credential of the task
//! token before it creates the role, so no role exists that the store does not know; only
//! once the role exists is the lease marked granted and its password returned. A crash in
//! between leaves a pending lease, which the reaper ends (dropping the role, if it was made)
//! once the request's claim runs out. The password is returned once and stored nowhere;
//! audit events name the lease, engine, role and database role only.
//!
//! Revoking a lease is revoking its credential (`POST /v1/leases/{id}/revoke` by an operator
//! or by the agent holding it, with the task token it asked with; or `POST /v1/revocations`
//! with its id) or anything it derives from; [`crate::leases`]' reaper
//! then ends its role. The agent renews a lease with the task token it asked with, within
//! the template's maximum (from issuance) and the token's expiry.

use std::collections::BTreeMap;

use aims_api::leases::{
    AddEngineRequest, AddRoleRequest, EngineList, LeaseGranted, LeaseList, LeaseRequest, LeaseView,
    RenewLeaseRequest, RevokeLeaseRequest, RoleList,
};
use aims_core::audit::{Actor, Outcome, action};
use aims_core::credential::MAX_CREDENTIAL_LEN;
use aims_core::id::{AgentName, DecisionId, EngineName, Environment, TokenId};
use aims_core::lease::{
    self, Cleanup, Engine, EngineKind, LeaseError, RoleTemplate, SCRAM_ITERATIONS, SqlIdent,
};
use aims_core::user::Access;
use aims_policy::{Effect, Resource, ResourceObject};
use aims_store::StoreError;
use aims_store::{IssuedCredential, IssuedKind, LeaseIssue, LeaseRecord, RevocationTarget};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ring::rand::SecureRandom as _;
use serde::Deserialize;
use serde_json::{Map, json};
use sqlx::Connection as _;
use time::OffsetDateTime;

use crate::auth::{
    self, Allowed, AuthenticatedAgent, Caller, TaskCaller, TaskToken, ToAdminister, ToRead,
    Vouched, task_token_required,
};
use crate::decisions::{self, Asked, Purpose, Question};
use crate::error::{ApiError, ErrorCode, no_store};
use crate::extract::{Body, Path, Query};
use crate::leases::{self as engines, CLAIM, EngineError, WORK_TIMEOUT};
use crate::state::AppState;

/// Longest `system` or `sensitivity` of an engine.
const MAX_LABEL: usize = 128;

/// `POST /v1/engines`: adds an engine once AIMS has connected to it as its administrator and
/// seen that it may create roles.
pub async fn add_engine(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(req): Body<AddEngineRequest>,
) -> Result<(StatusCode, Json<Engine>), ApiError> {
    if req.kind != "postgres" {
        return Err(invalid_engine("kind must be postgres"));
    }
    lease::check_connection_url(&req.connection_url).map_err(|e| invalid_engine(e.to_string()))?;
    let system = req.system.unwrap_or_else(|| req.name.to_string());
    let sensitivity = req.sensitivity.unwrap_or_else(|| "internal".to_owned());
    for (what, value) in [("system", &system), ("sensitivity", &sensitivity)] {
        if value.is_empty() || value.len() > MAX_LABEL || !aims_core::text::is_visible(value, false)
        {
            return Err(invalid_engine(format!(
                "{what} is 1 to {MAX_LABEL} characters of visible text"
            )));
        }
    }
    let environment = match req.environment {
        Some(environment) => environment,
        None => Environment::new("prod").map_err(|_| ApiError::internal())?,
    };
    if let Some(secret) = &req.admin_secret
        && state.store.secret(secret).await?.is_none()
    {
        return Err(ApiError::bad_request(
            ErrorCode::SecretNotFound,
            format!("no secret named {secret}"),
        ));
    }
    let engine = Engine {
        name: req.name,
        kind: EngineKind::Postgres,
        connection_url: req.connection_url,
        admin_secret: req.admin_secret,
        system,
        environment,
        sensitivity,
        created_by: caller.user.name.clone(),
        created_at: OffsetDateTime::now_utc(),
    };
    engines::options(&engine).map_err(|e| invalid_engine(e.to_string()))?;
    let checked = tokio::time::timeout(WORK_TIMEOUT, async {
        let mut conn = engines::connect(&state, &engine).await?;
        let checked = engines::check_admin(&mut conn).await;
        let _ = conn.close().await;
        checked
    })
    .await
    .unwrap_or_else(|_| Err(EngineError::Unreachable("timed out".to_owned())));
    checked.map_err(|e| engine_error(&engine.name, &e))?;
    let event = caller
        .event(&state, action::ENGINE_ADD)
        .resource(format!("Engine::{}", engine.name))
        .details(json!({
            "name": engine.name,
            "kind": "postgres",
            "admin_secret": engine.admin_secret,
            "system": engine.system,
            "environment": engine.environment,
            "sensitivity": engine.sensitivity,
        }));
    match state.store.create_engine(&engine, &event).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(engine))),
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(
            ErrorCode::EngineExists,
            "an engine of that name exists",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/engines`.
pub async fn list_engines(
    State(state): State<AppState>,
    Allowed(_, _): Allowed<ToRead>,
) -> Result<Json<EngineList>, ApiError> {
    Ok(Json(EngineList {
        engines: state.store.list_engines().await?,
    }))
}

/// `POST /v1/engines/{name}/roles`: adds a role template, after trying its grants on the
/// engine in a transaction that is rolled back.
pub async fn add_role(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Path(name): Path<String>,
    Body(req): Body<AddRoleRequest>,
) -> Result<(StatusCode, Json<RoleTemplate>), ApiError> {
    let engine = engine_named(&state, &name).await?;
    let grants = lease::parse_grants(&req.grants)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidGrants, e.to_string()))?;
    lease::check_max_ttl(req.max_ttl_s)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidTtl, e.to_string()))?;
    let template = RoleTemplate {
        engine: engine.name.clone(),
        name: req.name,
        grants,
        max_ttl_s: req.max_ttl_s,
        cleanup: req.cleanup.unwrap_or(Cleanup::DropOwned),
        created_by: caller.user.name.clone(),
        created_at: OffsetDateTime::now_utc(),
    };
    if state
        .store
        .role_template(&engine.name, &template.name)
        .await?
        .is_some()
    {
        return Err(role_exists());
    }
    // A dry run: the role and its grants are created and rolled back, so a grant on a table
    // that does not exist is refused now rather than at the first lease.
    let role = lease::lease_role(&random(&state)?);
    let verifier = lease::scram_verifier(
        &lease::lease_password(&random(&state)?),
        &random(&state)?,
        SCRAM_ITERATIONS,
    );
    let statements = engines::create_statements(
        &template,
        &role,
        &verifier,
        template.created_at + time::Duration::minutes(1),
    );
    let tried = tokio::time::timeout(WORK_TIMEOUT, async {
        let mut conn = engines::connect(&state, &engine).await?;
        let tried = engines::create_role(&mut conn, &statements, false).await;
        let _ = conn.close().await;
        tried
    })
    .await
    .unwrap_or_else(|_| Err(EngineError::Unreachable("timed out".to_owned())));
    match tried {
        Ok(()) => {}
        Err(EngineError::Failed(why)) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidGrants,
                format!("the engine cannot apply these grants: {why}"),
            ));
        }
        Err(e) => return Err(engine_error(&engine.name, &e)),
    }
    let event = caller
        .event(&state, action::ENGINE_ROLE_ADD)
        .resource(format!("Engine::{}", engine.name))
        .details(json!({
            "engine": engine.name,
            "role": template.name,
            "grants": template.grants.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "max_ttl_s": template.max_ttl_s,
            "cleanup": template.cleanup,
        }));
    match state.store.create_role_template(&template, &event).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(template))),
        Err(StoreError::Conflict { .. }) => Err(role_exists()),
        Err(StoreError::NotFound { .. }) => Err(engine_not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/engines/{name}/roles`.
pub async fn list_roles(
    State(state): State<AppState>,
    Allowed(_, _): Allowed<ToRead>,
    Path(name): Path<String>,
) -> Result<Json<RoleList>, ApiError> {
    let engine = engine_named(&state, &name).await?;
    Ok(Json(RoleList {
        roles: state.store.list_role_templates(&engine.name).await?,
    }))
}

/// `POST /v1/leases`: an agent with a task token asks for a lease on an engine's role.
pub async fn create(
    State(state): State<AppState>,
    TaskCaller(caller): TaskCaller,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Body(req): Body<LeaseRequest>,
) -> Result<Response, ApiError> {
    let (token, parent) = own_task_token(&caller)?;
    let now = OffsetDateTime::now_utc();
    let engine = state
        .store
        .engine(&req.engine)
        .await?
        .ok_or_else(engine_not_found)?;
    let template = state
        .store
        .role_template(&req.engine, &req.role)
        .await?
        .ok_or_else(role_not_found)?;
    let token_expires_at =
        OffsetDateTime::from_unix_timestamp(token.claims.exp).map_err(|_| ApiError::internal())?;
    let expires_at = lease::lease_end(now, req.ttl_s, template.max_ttl_s, token_expires_at)
        .map_err(|e: LeaseError| ApiError::bad_request(ErrorCode::InvalidTtl, e.to_string()))?;

    let question = lease_question(&engine, &template);
    let request_id = crate::auth::request_id(&headers);
    let decision_id = decide(&state, &caller, question, now, peer, request_id.clone()).await?;

    let role = lease::lease_role(&random(&state)?);
    let password = lease::lease_password(&random(&state)?);
    let verifier = lease::scram_verifier(&password, &random(&state)?, SCRAM_ITERATIONS);
    let lease_id = aims_token::random_id(&state.rng).map_err(|_| ApiError::internal())?;
    let holder = aims_token::random_id(&state.rng).map_err(|_| ApiError::internal())?;
    let task_id = token.claims.task_id.to_string();
    let issue = LeaseIssue {
        credential: IssuedCredential {
            id: lease_id.clone(),
            kind: IssuedKind::Lease,
            agent: caller.agent().name.clone(),
            parent: Some(parent.to_string()),
            key_thumbprint: None,
            issued_at: now,
            expires_at,
            revoked_at: None,
            task_id: Some(task_id.clone()),
            audience: None,
        },
        engine: engine.name.clone(),
        role: template.name.clone(),
        db_role: role.to_string(),
        holder: holder.clone(),
        claimed_until: now + CLAIM,
    };
    let mut event = state
        .event(caller.actor(), action::LEASE_ISSUE, Outcome::Success)
        .request(request_id)
        .agent(caller.spiffe_id.to_string())
        .owner(caller.agent().owner.to_string())
        .resource(format!("Resource::{}/{}", engine.name, template.name))
        .details(json!({
            "lease_id": lease_id,
            "parent": parent.to_string(),
            "engine": engine.name,
            "role": template.name,
            "db_role": role.as_str(),
            "expires_at": expires_at.unix_timestamp(),
            "decision_id": decision_id,
        }));
    event.task_id = Some(task_id);
    event.token_id = Some(parent.to_string());
    match state.store.issue_lease(&issue, &event).await {
        Ok(()) => {}
        Err(StoreError::Conflict { reason }) => {
            return Err(ApiError::conflict(ErrorCode::Conflict, reason));
        }
        Err(e) => return Err(e.into()),
    }

    // The lease is registered (and claimed by this request): now the role.
    let statements = engines::create_statements(&template, &role, &verifier, expires_at);
    let options = engines::options(&engine).map_err(|_| ApiError::internal())?;
    let created = tokio::time::timeout(WORK_TIMEOUT, async {
        let mut conn = engines::connect(&state, &engine).await?;
        let created = engines::create_role(&mut conn, &statements, true).await;
        let _ = conn.close().await;
        created
    })
    .await
    .unwrap_or_else(|_| Err(EngineError::Unreachable("timed out".to_owned())));
    if let Err(error) = created {
        tracing::warn!(lease = %lease_id, engine = %engine.name, %error, "cannot create a lease's role; revoking the lease");
        // The reaper ends it: it drops the role should it exist after all.
        let revoked = state
            .event(Actor::System, action::REVOKE, Outcome::Success)
            .resource(format!("Credential::{lease_id}"))
            .details(json!({ "lease_id": lease_id, "reason": "lease role not created" }));
        if let Err(e) = state
            .store
            .revoke(
                &RevocationTarget::Credential(lease_id.clone()),
                "lease role not created",
                OffsetDateTime::now_utc(),
                &revoked,
            )
            .await
        {
            tracing::warn!(lease = %lease_id, error = %e, "cannot revoke a lease whose role was not created; it expires on its own");
        }
        let _ = state.store.release_lease(&lease_id, &holder).await;
        return Err(engine_error(&engine.name, &error));
    }
    // The role exists: the lease stops being pending before its password is handed out.
    // Should that fail, the lease stays pending and the reaper drops the role.
    match state.store.grant_lease(&lease_id, &holder).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(lease = %lease_id, "a lease's creation outlasted its claim; its role is dropped");
            return Err(engine_error(
                &engine.name,
                &EngineError::Unreachable("creation outlasted its claim".to_owned()),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let database = options
        .get_database()
        .map(str::to_owned)
        .unwrap_or_else(|| options.get_username().to_owned());
    let granted = LeaseGranted {
        lease_id,
        engine: engine.name,
        role: template.name,
        host: options.get_host().to_owned(),
        port: options.get_port(),
        database,
        username: role.to_string(),
        password,
        expires_at,
    };
    Ok(no_store(
        (StatusCode::CREATED, Json(granted)).into_response(),
    ))
}

/// Filters of `GET /v1/leases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseQuery {
    agent: Option<AgentName>,
    limit: Option<u32>,
}

/// `GET /v1/leases`: the newest leases, of one agent with `agent`.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_, _): Allowed<ToRead>,
    Query(query): Query<LeaseQuery>,
) -> Result<Json<LeaseList>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let leases = state
        .store
        .list_leases(query.agent.as_ref(), query.limit.unwrap_or(100))
        .await?
        .into_iter()
        .map(|l| view(l, now))
        .collect();
    Ok(Json(LeaseList { leases }))
}

/// `GET /v1/leases/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Allowed(_, _): Allowed<ToRead>,
    Path(id): Path<String>,
) -> Result<Json<LeaseView>, ApiError> {
    let found = lease_named(&state, &id)
        .await?
        .ok_or_else(lease_not_found)?;
    Ok(Json(view(found, OffsetDateTime::now_utc())))
}

fn view(lease: LeaseRecord, now: OffsetDateTime) -> LeaseView {
    let state = if lease.ended_at.is_some() {
        "ended"
    } else if lease.pending {
        "pending"
    } else if lease.is_due(now) {
        "ending"
    } else {
        "active"
    };
    LeaseView {
        state: state.to_owned(),
        id: lease.id,
        engine: lease.engine,
        role: lease.role,
        db_role: lease.db_role,
        agent: lease.agent,
        task_id: lease.task_id,
        issued_at: lease.issued_at,
        expires_at: lease.expires_at,
        revoked_at: lease.revoked_at,
        ended_at: lease.ended_at,
        attempts: lease.attempts,
        last_error: lease.last_error,
    }
}

/// `POST /v1/leases/{id}/renew`: the agent, with the task token it asked for the lease with,
/// moves the lease's end. The active policies decide the `lease` action again; the new end is
/// bounded by the template's maximum counted from issuance and by the task token's expiry.
/// The role's `VALID UNTIL` moves first, then the store's end: should the second fail, the
/// reaper still ends the role at the old end.
pub async fn renew(
    State(state): State<AppState>,
    TaskCaller(caller): TaskCaller,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(req): Body<RenewLeaseRequest>,
) -> Result<Json<LeaseView>, ApiError> {
    let (token, parent) = own_task_token(&caller)?;
    let now = OffsetDateTime::now_utc();
    // Another agent's lease, or one asked with another token, is as good as absent.
    let lease = lease_named(&state, &id)
        .await?
        .filter(|l| l.agent == caller.agent().name && l.parent.as_deref() == Some(parent.as_str()))
        .ok_or_else(lease_not_found)?;
    if lease.pending
        || lease.revoked_at.is_some()
        || lease.ended_at.is_some()
        || lease.expires_at <= now
    {
        return Err(ApiError::conflict(
            ErrorCode::LeaseNotActive,
            "the lease is revoked, expired or ended",
        ));
    }
    let engine = state
        .store
        .engine(&lease.engine)
        .await?
        .ok_or_else(engine_not_found)?;
    let template = state
        .store
        .role_template(&lease.engine, &lease.role)
        .await?
        .ok_or_else(role_not_found)?;
    let token_expires_at =
        OffsetDateTime::from_unix_timestamp(token.claims.exp).map_err(|_| ApiError::internal())?;
    let expires_at = lease::renewal_end(
        now,
        req.ttl_s,
        lease.issued_at,
        template.max_ttl_s,
        token_expires_at,
    )
    .map_err(|e| ApiError::bad_request(ErrorCode::InvalidTtl, e.to_string()))?;
    let request_id = crate::auth::request_id(&headers);
    let decision_id = decide(
        &state,
        &caller,
        lease_question(&engine, &template),
        now,
        peer,
        request_id.clone(),
    )
    .await?;
    let role = SqlIdent::new(&lease.db_role).map_err(|_| ApiError::internal())?;
    let statement = engines::valid_until_statement(&role, expires_at);
    let moved = tokio::time::timeout(WORK_TIMEOUT, async {
        let mut conn = engines::connect(&state, &engine).await?;
        let moved = engines::create_role(&mut conn, std::slice::from_ref(&statement), true).await;
        let _ = conn.close().await;
        moved
    })
    .await
    .unwrap_or_else(|_| Err(EngineError::Unreachable("timed out".to_owned())));
    moved.map_err(|e| engine_error(&engine.name, &e))?;
    let mut event = state
        .event(caller.actor(), action::LEASE_RENEW, Outcome::Success)
        .request(request_id)
        .agent(caller.spiffe_id.to_string())
        .owner(caller.agent().owner.to_string())
        .resource(format!("Resource::{}/{}", engine.name, template.name))
        .details(json!({
            "lease_id": lease.id,
            "engine": engine.name,
            "role": template.name,
            "db_role": lease.db_role,
            "previous_expires_at": lease.expires_at.unix_timestamp(),
            "expires_at": expires_at.unix_timestamp(),
            "decision_id": decision_id,
        }));
    event.task_id.clone_from(&lease.task_id);
    event.token_id = Some(lease.id.clone());
    match state
        .store
        .renew_lease(&lease.id, expires_at, now, &event)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict { reason }) => {
            return Err(ApiError::conflict(ErrorCode::LeaseNotActive, reason));
        }
        Err(StoreError::NotFound { .. }) => return Err(lease_not_found()),
        Err(e) => return Err(e.into()),
    }
    let renewed = state
        .store
        .lease(&lease.id)
        .await?
        .ok_or_else(lease_not_found)?;
    Ok(Json(view(renewed, OffsetDateTime::now_utc())))
}

/// Who revokes a lease: an operator who may administer (a bearer credential that is a user's),
/// or the agent holding the lease, with the task token it asked for the lease with.
pub enum Revoker {
    /// An operator.
    Operator(Caller),
    /// The lease's holder.
    Holder(Box<AuthenticatedAgent>),
}

impl FromRequestParts<AppState> for Revoker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Only a user's credential's SHA-256 is looked up; an agent's token matches none.
        if auth::bearer(&parts.headers, MAX_CREDENTIAL_LEN).is_some() {
            match auth::operator(state, &parts.headers).await {
                Ok(caller) => {
                    caller.require(Access::Administer)?;
                    return Ok(Self::Operator(caller));
                }
                Err(refused) if refused.status == StatusCode::UNAUTHORIZED => {}
                Err(failed) => return Err(failed),
            }
        }
        let TaskCaller(agent) = TaskCaller::from_request_parts(parts, state).await?;
        Ok(Self::Holder(Box::new(agent)))
    }
}

/// `POST /v1/leases/{id}/revoke`: an operator, or the agent holding the lease with the task
/// token it asked with, revokes one lease (its credential, in the one revocation closure);
/// the reaper then terminates its sessions and drops its role. Another agent's lease, or one
/// asked with another token, is as good as absent to an agent: `lease_not_found`, nothing
/// changed.
pub async fn revoke(
    State(state): State<AppState>,
    revoker: Revoker,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(req): Body<RevokeLeaseRequest>,
) -> Result<Json<LeaseView>, ApiError> {
    let lease = lease_named(&state, &id).await?;
    let lease = match &revoker {
        Revoker::Operator(_) => lease,
        Revoker::Holder(agent) => {
            let (_, parent) = own_task_token(agent)?;
            lease.filter(|l| {
                l.agent == agent.agent().name && l.parent.as_deref() == Some(parent.as_str())
            })
        }
    }
    .ok_or_else(lease_not_found)?;
    let reason = req.reason.unwrap_or_else(|| {
        match revoker {
            Revoker::Operator(_) => "revoked by an operator",
            Revoker::Holder(_) => "revoked by its holder",
        }
        .to_owned()
    });
    if !aims_core::revocation::is_valid_reason(&reason) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidReason,
            "reason must be 1 to 256 characters without control characters",
        ));
    }
    if lease.revoked_at.is_none() {
        let event = match &revoker {
            Revoker::Operator(caller) => caller.event(&state, action::REVOKE),
            Revoker::Holder(agent) => state
                .event(agent.actor(), action::REVOKE, Outcome::Success)
                .request(crate::auth::request_id(&headers))
                .agent(agent.spiffe_id.to_string())
                .owner(agent.agent().owner.to_string()),
        };
        let mut event = event
            .resource(format!("Resource::{}/{}", lease.engine, lease.role))
            .details(json!({ "target": "token", "id": lease.id, "reason": reason }));
        event.token_id = Some(lease.id.clone());
        event.task_id.clone_from(&lease.task_id);
        state
            .store
            .revoke(
                &RevocationTarget::Credential(lease.id.clone()),
                &reason,
                OffsetDateTime::now_utc(),
                &event,
            )
            .await?;
        state.apply_own_revocations().await;
    }
    let revoked = state
        .store
        .lease(&lease.id)
        .await?
        .ok_or_else(lease_not_found)?;
    Ok(Json(view(revoked, OffsetDateTime::now_utc())))
}

/// The policy question of a lease on `template` of `engine`: the `lease` action on the
/// engine's role as a resource (id `<engine>/<role>`, kind `database_role`, the engine's
/// system, environment and sensitivity, tags `engine` and `role`).
fn lease_question(engine: &Engine, template: &RoleTemplate) -> Question {
    Question {
        action: "lease".to_owned(),
        resource: Resource::Object(ResourceObject {
            entity_type: "Resource".to_owned(),
            id: format!("{}/{}", engine.name, template.name),
            system: engine.system.clone(),
            environment: engine.environment.to_string(),
            sensitivity: engine.sensitivity.clone(),
            kind: "database_role".to_owned(),
            labels: BTreeMap::from([
                ("engine".to_owned(), engine.name.to_string()),
                ("role".to_owned(), template.name.to_string()),
            ]),
            parents: Vec::new(),
        }),
        task_id: String::new(),
        intent: String::new(),
        arguments: Map::new(),
    }
}

/// Asks the active policies `question` (recorded as a decision); refuses with
/// `lease_denied` unless they allow it. Returns the decision's id.
async fn decide(
    state: &AppState,
    caller: &AuthenticatedAgent,
    question: Question,
    now: OffsetDateTime,
    peer: std::net::SocketAddr,
    request_id: Option<String>,
) -> Result<DecisionId, ApiError> {
    let asked = Asked {
        at: now,
        source_ip: peer.ip(),
    };
    let decided =
        decisions::decide_for(state, caller, question, asked, request_id, Purpose::Call).await?;
    if decided.effect != Effect::Allow {
        let pending = decided
            .approval_id
            .map(|id| format!(" (approval request {id})"))
            .unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::LeaseDenied,
            format!(
                "the active policies answer {} to this lease{pending}",
                decided.effect.as_str()
            ),
        ));
    }
    Ok(decided.id)
}

/// The caller's own task token and its `jti`, or `task_token_required`.
fn own_task_token(caller: &AuthenticatedAgent) -> Result<(&TaskToken, &TokenId), ApiError> {
    match (&caller.task, &caller.vouched) {
        (Some(token), Vouched::Itself(jti)) => Ok((token, jti)),
        _ => Err(task_token_required()),
    }
}

async fn lease_named(state: &AppState, id: &str) -> Result<Option<LeaseRecord>, ApiError> {
    if id.len() > 64 {
        return Ok(None);
    }
    Ok(state.store.lease(id).await?)
}

fn lease_not_found() -> ApiError {
    ApiError::not_found(ErrorCode::LeaseNotFound, "no such lease")
}

fn role_not_found() -> ApiError {
    ApiError::not_found(ErrorCode::RoleNotFound, "the engine has no such role")
}

fn random<const N: usize>(state: &AppState) -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    state
        .rng
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal())?;
    Ok(bytes)
}

async fn engine_named(state: &AppState, raw: &str) -> Result<Engine, ApiError> {
    let name = EngineName::new(raw).map_err(|_| engine_not_found())?;
    state
        .store
        .engine(&name)
        .await?
        .ok_or_else(engine_not_found)
}

/// An engine's failure as an answer (its detail in the log only).
fn engine_error(engine: &EngineName, error: &EngineError) -> ApiError {
    tracing::warn!(%engine, %error, "engine operation failed");
    match error {
        EngineError::Unreachable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::EngineUnavailable,
            "the engine cannot be reached; nothing was created",
        ),
        EngineError::Secret => ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::EngineRefused,
            "the engine's admin secret cannot be read",
        ),
        EngineError::Refused(_) | EngineError::Failed(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::EngineRefused,
            "the engine refused the administrator or a statement; nothing was created",
        ),
    }
}

fn invalid_engine(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidEngine, message)
}

fn engine_not_found() -> ApiError {
    ApiError::not_found(ErrorCode::EngineNotFound, "no such engine")
}

fn role_exists() -> ApiError {
    ApiError::conflict(
        ErrorCode::RoleExists,
        "the engine has a role template of that name",
    )
}
