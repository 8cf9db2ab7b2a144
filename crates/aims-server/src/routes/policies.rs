//! `/v1/policies` (operators push and read versioned policy sets) and `/v1/decisions` (an
//! agent asks whether it may do one action, decided by the active policy set).
//!
//! A push compiles the whole set in strict mode against its schema before anything is stored;
//! a set that does not compile is refused with Cedar's diagnostics and the active version
//! stays. Every decision is audited before the answer leaves.

use std::collections::BTreeMap;

use aims_api::{
    DecideRequest, DecisionView, ExplainRequest, PolicySetView, PolicyVersion, PolicyVersionList,
    PolicyVersionSummary, PushPolicyRequest,
};
use aims_core::audit::{Actor, Outcome, action};
use aims_core::user::Access;
use aims_policy::{
    Agent, DecisionRequest, Effect, Posture, RequestContext, Resource, ResourceObject, Toolchain,
};
use aims_store::{PolicySetVersion, StoreError};
use aims_token::jws::{self, Alg, ClaimChecks};
use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::{Caller, bearer};
use crate::error::ApiError;
use crate::extract::Body;
use crate::policy::{self, LoadedPolicy};
use crate::state::AppState;
use crate::svid::{self, LEEWAY_S};

/// Most files in one policy set.
const MAX_FILES: usize = 256;

fn view(loaded: &LoadedPolicy, files: Vec<String>) -> PolicySetView {
    PolicySetView {
        version: loaded.version,
        policies: loaded.engine.len(),
        policy_ids: loaded.engine.policy_ids().map(str::to_owned).collect(),
        files,
    }
}

fn check_file_names(files: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(ApiError::bad_request(
            "invalid_policy",
            "a policy set has 1 to 256 files",
        ));
    }
    let ok = |name: &str| {
        name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            && [".cedar", ".cedarschema", ".test.json"]
                .iter()
                .any(|ext| name.ends_with(ext))
    };
    match files.keys().find(|name| !ok(name)) {
        Some(name) => Err(ApiError::bad_request(
            "invalid_policy",
            format!(
                "{name:?}: file names are [A-Za-z0-9._-], ending in .cedar, .cedarschema or .test.json"
            ),
        )),
        None => Ok(()),
    }
}

/// Compiles `files`, stores them as the next version and puts it in force; `rollback_of` names
/// the version whose files these are, for a rollback.
async fn activate(
    state: &AppState,
    caller: &Caller,
    files: BTreeMap<String, String>,
    rollback_of: Option<u64>,
) -> Result<PolicySetView, ApiError> {
    check_file_names(&files)?;
    let engine = policy::compile(&files)
        .map_err(|e| ApiError::bad_request("invalid_policy", e.to_string()))?;
    let previous = state.store.active_policy_version().await?;
    let set = PolicySetVersion {
        version: previous.saturating_add(1),
        files,
        created_by: caller.user.name.to_string(),
        created_at: OffsetDateTime::now_utc(),
    };
    let mut event = state.event(caller.actor(), action::POLICY_ACTIVATE, Outcome::Success);
    event.request_id = caller.request_id.clone();
    event.details = json!({
        "version": set.version,
        "previous_version": previous,
        "rollback_of": rollback_of,
        "files": set.files.keys().collect::<Vec<_>>(),
        "policy_ids": engine.policy_ids().collect::<Vec<_>>(),
    });
    match state.store.activate_policy_set(&set, &event).await {
        Ok(()) => {}
        Err(StoreError::Conflict { reason }) => {
            return Err(ApiError::conflict("policy_conflict", reason));
        }
        Err(e) => return Err(e.into()),
    }
    let loaded = LoadedPolicy {
        version: set.version,
        engine,
    };
    let answer = view(&loaded, set.files.into_keys().collect());
    state.policy.install(loaded);
    Ok(answer)
}

/// `POST /v1/policies`.
pub async fn push(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<PushPolicyRequest>,
) -> Result<(StatusCode, Json<PolicySetView>), ApiError> {
    caller.require(Access::Administer)?;
    let answer = activate(&state, &caller, req.files, None).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The `{version}` path segment.
fn version_path(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request("invalid_version", "a policy version is a positive integer")
    })
}

async fn stored(state: &AppState, version: u64) -> Result<PolicySetVersion, ApiError> {
    state.store.policy_set(version).await?.ok_or_else(|| {
        ApiError::not_found(
            "policy_version_not_found",
            format!("no policy version {version}"),
        )
    })
}

/// `GET /v1/policies`: the newest stored versions.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PolicyVersionList>, ApiError> {
    caller.require(Access::Read)?;
    let versions = state
        .store
        .policy_versions(100)
        .await?
        .into_iter()
        .map(|v| PolicyVersionSummary {
            version: v.version,
            created_by: v.created_by,
            created_at: v.created_at,
            files: v.files.into_keys().collect(),
        })
        .collect();
    Ok(Json(PolicyVersionList {
        active_version: state.policy.current().version,
        versions,
    }))
}

/// `GET /v1/policies/{version}`: one version with its files.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<PolicyVersion>, ApiError> {
    caller.require(Access::Read)?;
    let set = stored(&state, version_path(&raw)?).await?;
    Ok(Json(PolicyVersion {
        version: set.version,
        created_by: set.created_by,
        created_at: set.created_at,
        files: set.files,
    }))
}

/// `POST /v1/policies/{version}/rollback`: activates the files of an older version again, as a
/// new version (history stays linear and audited).
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<(StatusCode, Json<PolicySetView>), ApiError> {
    caller.require(Access::Administer)?;
    let version = version_path(&raw)?;
    let set = stored(&state, version).await?;
    let answer = activate(&state, &caller, set.files, Some(version)).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /v1/policies/active`.
pub async fn active(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PolicySetView>, ApiError> {
    caller.require(Access::Read)?;
    let loaded = state.policy.current();
    let files = match state.store.policy_set(loaded.version).await? {
        Some(set) => set.files.into_keys().collect(),
        None => Vec::new(),
    };
    Ok(Json(view(&loaded, files)))
}

/// `type::id` of a request's resource, for the audit log.
fn resource_name(resource: &serde_json::Value) -> String {
    let field = |name: &str| resource.get(name).and_then(|v| v.as_str()).unwrap_or("?");
    format!("{}::{}", field("type"), field("id"))
}

/// The decision request for `agent`: the principal from its registry record and last accepted
/// posture (never from the caller), the resource and task facts from `req`.
fn decision_request(
    state: &AppState,
    agent: &aims_core::agent::Agent,
    snapshot: Option<&aims_store::PostureSnapshot>,
    req: &DecideRequest,
    now: OffsetDateTime,
    source_ip: std::net::IpAddr,
    decision_id: String,
) -> Result<DecisionRequest, ApiError> {
    let evidence = snapshot.map(|s| &s.evidence);
    let text = |value: Option<&String>| value.cloned().unwrap_or_default();
    let label = |key: &'static str| {
        agent
            .labels
            .iter()
            .filter(move |(k, _)| k.as_str() == key)
            .map(|(_, v)| v.clone())
    };
    let principal = Agent {
        name: agent.name.to_string(),
        spiffe_id: agent.spiffe_id(&state.trust_domain).to_string(),
        owner: agent.owner.to_string(),
        teams: label("team").collect(),
        environment: agent.environment.to_string(),
        state: agent.state.to_string(),
        trust_level: label("trust_level")
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        model: text(evidence.and_then(|e| e.model.id.as_ref())),
        toolchain: Toolchain {
            framework: text(evidence.and_then(|e| e.toolchain.name.as_ref())),
            version: text(evidence.and_then(|e| e.toolchain.version.as_ref())),
            manifest_digest: evidence.and_then(|e| e.toolchain.manifest_digest.clone()),
        },
        posture: Posture {
            identity_verified: snapshot.is_some(),
            runtime_checks_passed: snapshot.is_some() && agent.state.may_hold_credentials(),
            model_digest: evidence.and_then(|e| e.model.digest.clone()),
            image_digest: evidence.and_then(|e| e.deployment.image_digest.clone()),
        },
        labels: agent
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let resource: ResourceObject = serde_json::from_value(req.resource.clone())
        .map_err(|e| ApiError::bad_request("invalid_request", format!("resource: {e}")))?;
    let posture_age_s = snapshot.map_or(i64::MAX, |s| (now - s.accepted_at).whole_seconds().max(0));
    Ok(DecisionRequest {
        decision_id: Some(decision_id),
        principal,
        action: req.action.clone(),
        resource: Resource::Object(resource),
        context: RequestContext {
            time: now,
            posture_age_s,
            task_id: req.task_id.clone(),
            intent: req.intent.clone(),
            delegation_depth: 0,
            delegation_chain: Vec::new(),
            approved: false,
            environment: agent.environment.to_string(),
            source_ip,
            arguments: req.arguments.clone(),
        },
    })
}

/// `POST /v1/policies/explain`: for operators, how the active policies answer a request by a
/// registered agent — which policies the index selected or skipped, which matched, which
/// conditions were false, which errored. Nothing is decided or granted.
pub async fn explain(
    State(state): State<AppState>,
    caller: Caller,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Body(req): Body<ExplainRequest>,
) -> Result<Json<aims_policy::Explanation>, ApiError> {
    caller.require(Access::Read)?;
    let agent = state.store.agent(&req.agent).await?.ok_or_else(|| {
        ApiError::not_found("agent_not_found", format!("no agent named {}", req.agent))
    })?;
    let snapshot = state.store.posture_snapshot(&agent.name).await?;
    let request = decision_request(
        &state,
        &agent,
        snapshot.as_ref(),
        &req.request,
        OffsetDateTime::now_utc(),
        peer.ip(),
        "explain".to_owned(),
    )?;
    let explanation = state
        .policy
        .current()
        .engine
        .explain(&request)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let mut event = state.event(caller.actor(), action::POLICY_EXPLAIN, Outcome::Success);
    event.request_id = caller.request_id.clone();
    event.agent = Some(agent.spiffe_id(&state.trust_domain).to_string());
    event.resource = Some(format!(
        "{} {}",
        req.request.action,
        resource_name(&req.request.resource)
    ));
    state.audit.record(event).await?;
    Ok(Json(explanation))
}

/// The agent behind a request: its SVID (bearer, for this issuer, not revoked) verified.
pub(crate) struct AuthenticatedAgent {
    agent: aims_core::agent::Agent,
    spiffe_id: aims_core::id::SpiffeId,
    jti: String,
}

impl AuthenticatedAgent {
    /// The agent's name.
    pub(crate) fn agent_name(&self) -> &str {
        self.agent.name.as_str()
    }

    /// The agent's SPIFFE ID.
    pub(crate) fn spiffe_id(&self) -> String {
        self.spiffe_id.to_string()
    }
}

/// Verifies the bearer JWT-SVID of an agent calling a decision endpoint.
pub(crate) async fn authenticate_agent(
    state: &AppState,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Result<AuthenticatedAgent, ApiError> {
    let unauthorized =
        |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_svid", message);
    let token = bearer(headers, jws::MAX_TOKEN_LEN)
        .ok_or_else(|| unauthorized("send the agent's JWT-SVID as a bearer token"))?;
    let keys = state.keys();
    let verified = jws::verify(token, svid::SVID_TYP, &[Alg::Es256], |header| {
        header
            .kid
            .as_deref()
            .and_then(|kid| keys.verifying.get(kid))
            .ok_or(aims_token::TokenError::UnknownKey)
    })
    .and_then(|v| {
        jws::check_claims(
            &v.claims,
            &ClaimChecks {
                issuer: Some(&state.issuer),
                audience: &state.issuer,
                now: now.unix_timestamp(),
                leeway_s: LEEWAY_S,
                max_lifetime_s: None,
            },
        )
        .map(|()| v)
    })
    .map_err(|e| unauthorized(&format!("the SVID was refused: {e}")))?;
    let claim = |name: &str| {
        verified
            .claims
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let spiffe_id =
        aims_core::id::SpiffeId::parse(&claim("sub")).map_err(|_| unauthorized("bad subject"))?;
    let jti = claim("jti");
    let live = state.store.issued_credential(&jti).await?;
    if live.is_none_or(|c| c.revoked_at.is_some()) {
        return Err(unauthorized("the SVID is revoked or unknown"));
    }
    let agent = state
        .store
        .agent(spiffe_id.agent())
        .await?
        .ok_or_else(|| unauthorized("no such agent"))?;
    Ok(AuthenticatedAgent {
        agent,
        spiffe_id,
        jti,
    })
}

/// Decides one request of an authenticated agent with the policy version in force, and
/// commits its audit event before returning.
pub(crate) async fn decide_for(
    state: &AppState,
    caller: &AuthenticatedAgent,
    req: DecideRequest,
    source_ip: std::net::IpAddr,
    request_id: Option<String>,
    now: OffsetDateTime,
) -> Result<DecisionView, ApiError> {
    let agent = &caller.agent;
    let snapshot = state.store.posture_snapshot(&agent.name).await?;
    let decision_id = svid::new_jti(state).map_err(|_| ApiError::internal())?;
    let resource_name = resource_name(&req.resource);
    let request = decision_request(
        state,
        agent,
        snapshot.as_ref(),
        &req,
        now,
        source_ip,
        decision_id.clone(),
    )?;
    let posture_age_s = request.context.posture_age_s;
    let loaded = state.policy.current();
    let decision = loaded
        .engine
        .decide(&request)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;

    let spiffe_id = caller.spiffe_id.to_string();
    let mut event = state.event(
        Actor::Agent {
            spiffe_id: spiffe_id.clone(),
        },
        action::DECISION,
        if decision.effect == Effect::Allow {
            Outcome::Success
        } else {
            Outcome::Denied
        },
    );
    event.request_id = request_id;
    event.agent = Some(spiffe_id);
    event.owner = Some(agent.owner.to_string());
    event.resource = Some(format!("{} {resource_name}", req.action));
    event.token_id = Some(caller.jti.clone());
    event.task_id = (!req.task_id.is_empty()).then(|| req.task_id.clone());
    event.intent = (!req.intent.is_empty()).then(|| req.intent.clone());
    event.decision = Some(decision.effect.as_str().to_owned());
    event.policy_ids = decision.determining_policies.clone();
    event.details = json!({
        "decision_id": decision_id,
        "policy_version": loaded.version,
        "reason": decision.reason,
        "posture_age_s": posture_age_s,
        "posture_digest": snapshot.as_ref().map(|s| s.digest.clone()),
        "errors": decision.errors,
    });
    // Audit first: no answer leaves unless its record is durable.
    state.audit.record(event).await?;
    Ok(DecisionView {
        decision_id,
        decision: decision.effect.as_str().to_owned(),
        policies: decision.determining_policies,
        policy_version: loaded.version,
    })
}

/// `POST /v1/decisions`: one decision for the agent presenting its SVID.
pub async fn decide(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Body(req): Body<DecideRequest>,
) -> Result<Json<DecisionView>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let caller = authenticate_agent(&state, &headers, now).await?;
    let request_id = crate::auth::request_id(&headers);
    Ok(Json(
        decide_for(&state, &caller, req, peer.ip(), request_id, now).await?,
    ))
}
