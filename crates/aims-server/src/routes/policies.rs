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
use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Body;
use crate::policy::{self, LoadedPolicy};
use crate::revocation::RevocationCheck;
use crate::state::AppState;
use crate::tokens::{self, AccessRefusal, NonceRule, ProofRefusal, Scheme};

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
pub(crate) fn decision_request(
    state: &AppState,
    agent: &aims_core::agent::Agent,
    snapshot: Option<&aims_store::PostureSnapshot>,
    req: &DecideRequest,
    now: OffsetDateTime,
    source_ip: std::net::IpAddr,
    decision_id: String,
) -> Result<DecisionRequest, ApiError> {
    let resource: ResourceObject = serde_json::from_value(req.resource.clone())
        .map_err(|e| ApiError::bad_request("invalid_request", format!("resource: {e}")))?;
    Ok(request_on(
        state,
        agent,
        snapshot,
        req,
        Resource::Object(resource),
        now,
        source_ip,
        decision_id,
    ))
}

/// The decision request for `agent` on an already built `resource` (an object, or another
/// agent for `delegate`); `req` supplies the action, task, intent and arguments.
#[allow(clippy::too_many_arguments)]
pub(crate) fn request_on(
    state: &AppState,
    agent: &aims_core::agent::Agent,
    snapshot: Option<&aims_store::PostureSnapshot>,
    req: &DecideRequest,
    resource: Resource,
    now: OffsetDateTime,
    source_ip: std::net::IpAddr,
    decision_id: String,
) -> DecisionRequest {
    let posture_age_s = snapshot.map_or(i64::MAX, |s| (now - s.accepted_at).whole_seconds().max(0));
    DecisionRequest {
        decision_id: Some(decision_id),
        principal: principal_of(state, agent, snapshot),
        action: req.action.clone(),
        resource,
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
    }
}

/// An agent as Cedar sees it: its registry record and last accepted posture.
pub(crate) fn principal_of(
    state: &AppState,
    agent: &aims_core::agent::Agent,
    snapshot: Option<&aims_store::PostureSnapshot>,
) -> Agent {
    let evidence = snapshot.map(|s| &s.evidence);
    let text = |value: Option<&String>| value.cloned().unwrap_or_default();
    let label = |key: &'static str| {
        agent
            .labels
            .iter()
            .filter(move |(k, _)| k.as_str() == key)
            .map(|(_, v)| v.clone())
    };
    Agent {
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
    }
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

/// The agent behind a request: its JWT-SVID (bearer, for this issuer, not revoked) or a task
/// token (DPoP-bound unless the agent is allowed bearer, not revoked) verified.
pub(crate) struct AuthenticatedAgent {
    agent: aims_core::agent::Agent,
    spiffe_id: aims_core::id::SpiffeId,
    jti: String,
    token: Option<TaskToken>,
}

/// What a task token presented at an enforcement point bounds.
struct TaskToken {
    claims: aims_token::access::AccessClaims,
    scopes: aims_core::scope::ScopeSet,
}

impl AuthenticatedAgent {
    /// The agent's name.
    pub(crate) fn agent_name(&self) -> &aims_core::id::AgentName {
        &self.agent.name
    }

    /// The agent's SPIFFE ID.
    pub(crate) fn spiffe_id(&self) -> String {
        self.spiffe_id.to_string()
    }
}

/// A 401 with an RFC 6750 / RFC 9449 challenge for `scheme`.
fn unauthorized(scheme: &str, code: &'static str, message: String) -> ApiError {
    let challenge = match scheme {
        "DPoP" => format!("DPoP error=\"{code}\", algs=\"ES256 EdDSA\""),
        _ => format!("Bearer error=\"{code}\""),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, message).with_challenge(challenge)
}

/// Authenticates the agent calling an enforcement point of this server (`method` on `path`):
/// a task token (RFC 9068, with its DPoP proof when bound) or its JWT-SVID as a bearer token.
pub(crate) async fn authenticate_agent(
    state: &AppState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    now: OffsetDateTime,
) -> Result<AuthenticatedAgent, ApiError> {
    let (scheme, token) = tokens::authorization(headers).ok_or_else(|| {
        unauthorized(
            "Bearer",
            "invalid_svid",
            "send a task token (Authorization: DPoP or Bearer) or the agent's JWT-SVID".to_owned(),
        )
    })?;
    let access_error = match tokens::verify_access(state, token, now) {
        Ok(claims) => {
            return token_caller(state, headers, scheme, token, claims, method, path, now).await;
        }
        Err(AccessRefusal::Revocation(RevocationCheck::Stale)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "revocation_state_stale",
                "this replica cannot tell whether the token is revoked; refused",
            ));
        }
        Err(e @ AccessRefusal::Revocation(RevocationCheck::Revoked)) => {
            return Err(unauthorized(
                scheme_name(scheme),
                "invalid_token",
                format!("the token was refused: {e}"),
            ));
        }
        Err(AccessRefusal::Token(e)) => e,
    };
    // An identity is only ever a bearer token, so a token sent with the DPoP scheme that is
    // not a valid task token is answered with a DPoP challenge (RFC 9449 §7.1).
    if scheme == Scheme::Dpop {
        return Err(unauthorized(
            "DPoP",
            "invalid_token",
            format!("the token was refused: {access_error}"),
        ));
    }
    // Not a valid task token: an agent's JWT-SVID, sent as a bearer token?
    let svid = match tokens::verify_svid(state, token, Some(&state.issuer), now) {
        Ok(svid) if scheme == Scheme::Bearer => svid,
        // It is a task token (`typ: at+jwt`) that failed, or the wrong scheme.
        Err(aims_token::TokenError::Type) | Ok(_) => {
            return Err(unauthorized(
                scheme_name(scheme),
                "invalid_token",
                format!("the token was refused: {access_error}"),
            ));
        }
        Err(e) => {
            return Err(unauthorized(
                "Bearer",
                "invalid_svid",
                format!("the SVID was refused: {e}"),
            ));
        }
    };
    let live = state.store.issued_credential(&svid.jti).await?;
    if live.is_none_or(|c| c.revoked_at.is_some()) {
        return Err(unauthorized(
            "Bearer",
            "invalid_svid",
            "the SVID is revoked or unknown".to_owned(),
        ));
    }
    let agent = state
        .store
        .agent(svid.sub.agent())
        .await?
        .ok_or_else(|| unauthorized("Bearer", "invalid_svid", "no such agent".to_owned()))?;
    Ok(AuthenticatedAgent {
        agent,
        spiffe_id: svid.sub,
        jti: svid.jti,
        token: None,
    })
}

fn scheme_name(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Bearer => "Bearer",
        Scheme::Dpop => "DPoP",
    }
}

/// The holder of a verified task token: its proof of possession checked.
#[allow(clippy::too_many_arguments)]
async fn token_caller(
    state: &AppState,
    headers: &HeaderMap,
    scheme: Scheme,
    token: &str,
    claims: aims_token::access::AccessClaims,
    method: &str,
    path: &str,
    now: OffsetDateTime,
) -> Result<AuthenticatedAgent, ApiError> {
    match (&claims.cnf, scheme) {
        (Some(cnf), Scheme::Dpop) => {
            let proof = tokens::dpop_header(headers).ok().flatten().ok_or_else(|| {
                unauthorized(
                    "DPoP",
                    "invalid_dpop_proof",
                    "a DPoP proof is required".to_owned(),
                )
            })?;
            tokens::check_proof(
                state,
                proof,
                method,
                path,
                Some(token),
                &cnf.jkt,
                NonceRule::Required,
                now,
            )
            .map_err(|refusal| match refusal {
                ProofRefusal::Invalid(why) => unauthorized("DPoP", "invalid_dpop_proof", why),
                // The fresh nonce goes with every answer to a DPoP request (`dpop_nonce_layer`).
                ProofRefusal::UseNonce => unauthorized(
                    "DPoP",
                    "use_dpop_nonce",
                    "the DPoP proof must carry this server's nonce (see the DPoP-Nonce header)"
                        .to_owned(),
                ),
            })?;
        }
        (Some(_), Scheme::Bearer) => {
            return Err(unauthorized(
                "DPoP",
                "invalid_token",
                "a DPoP-bound token is presented as a bearer token".to_owned(),
            ));
        }
        (None, Scheme::Bearer) => {}
        (None, Scheme::Dpop) => {
            return Err(unauthorized(
                "Bearer",
                "invalid_token",
                "a bearer token is presented with the DPoP scheme".to_owned(),
            ));
        }
    }
    let refused = |why: &str| unauthorized(scheme_name(scheme), "invalid_token", why.to_owned());
    let spiffe_id = aims_core::id::SpiffeId::parse(&claims.client_id)
        .map_err(|_| refused("the token's client_id is not a SPIFFE ID"))?;
    let agent = tokens::agent_of(state, &claims.client_id)
        .await?
        .ok_or_else(|| refused("no such agent"))?;
    let scopes =
        tokens::scopes_of(&claims).map_err(|_| refused("the token's scope is malformed"))?;
    Ok(AuthenticatedAgent {
        agent,
        spiffe_id,
        jti: claims.jti.clone(),
        token: Some(TaskToken { claims, scopes }),
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
    let mut req = req;
    if let Some(token) = &caller.token {
        // The task and intent are the token's; a request may not claim another.
        if !req.task_id.is_empty() && req.task_id != token.claims.task_id {
            return Err(ApiError::bad_request(
                "invalid_request",
                "task_id differs from the token's task",
            ));
        }
        req.task_id = token.claims.task_id.clone();
        req.intent = token.claims.intent.clone();
    }
    let snapshot = state.store.posture_snapshot(&agent.name).await?;
    let decision_id = aims_token::random_id(&state.rng).map_err(|_| ApiError::internal())?;
    let resource_name = resource_name(&req.resource);
    let mut request = decision_request(
        state,
        agent,
        snapshot.as_ref(),
        &req,
        now,
        source_ip,
        decision_id.clone(),
    )?;
    if let Some(token) = &caller.token {
        request.context.delegation_depth = i64::from(token.claims.depth());
        request.context.delegation_chain = token.claims.delegation_chain();
    }
    let posture_age_s = request.context.posture_age_s;
    let loaded = state.policy.current();
    let resource_id = req
        .resource
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let in_scope = caller
        .token
        .as_ref()
        .is_none_or(|t| t.scopes.permits(&req.action, resource_id));
    let decision = if in_scope {
        loaded
            .engine
            .decide(&request)
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?
    } else {
        aims_policy::Decision::outside_scope(decision_id.clone())
    };

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
    if let Some(token) = &caller.token {
        event.delegation_chain = token.claims.delegation_chain();
    }
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
    let caller = authenticate_agent(&state, &headers, "POST", "/v1/decisions", now).await?;
    let request_id = crate::auth::request_id(&headers);
    Ok(Json(
        decide_for(&state, &caller, req, peer.ip(), request_id, now).await?,
    ))
}
