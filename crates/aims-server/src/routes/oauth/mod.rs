//! The OAuth endpoints: the token endpoint (RFC 8693 token exchange and delegation, RFC 7523
//! JWT bearer), introspection (RFC 7662) and revocation (RFC 7009).
//!
//! The token endpoint turns an agent's JWT-SVID into a task token: every requested scope is an
//! `obtain` decision of the active policies, the lifetime is the least of what was asked, what
//! the deciding policies allow (`@max_token_ttl_s`), the agent's limit, the global ceiling,
//! the task's deadline and the identity's expiry, and the
//! token is bound to the agent's key by DPoP unless the agent is registered for bearer
//! tokens. Delegation exchanges a task token plus another agent's SVID (`actor_token`) for a
//! token of that agent, after a `delegate` decision, within the rules of
//! [`aims_core::delegation`]. The token is registered, its task created and its DPoP proof
//! burned in one store transaction with its audit event; a refusal changes nothing and is
//! audited with its RFC error code.

use std::collections::BTreeMap;

use aims_api::DecideRequest;
use aims_api::tokens::{
    GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, OAuthError, TOKEN_PATH, TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_JWT, TokenResponse,
};
use aims_core::agent::Agent;
use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_core::credential::{CredentialHash, MAX_CREDENTIAL_LEN};
use aims_core::delegation::{
    DelegationRequest, DepthLimits, Grant, GrantError, Lifetimes, delegated_grant, first_grant,
};
use aims_core::scope::ScopeSet;
use aims_core::task::{Task, TaskState, is_valid_intent, is_valid_task_id};
use aims_core::user::Access;
use aims_policy::{Effect, Resource};
use aims_store::{
    AccessTokenIssue, IssuedCredential, IssuedKind, ResourceServer, RevocationTarget, StoreError,
};
use aims_token::access::{self, AccessClaims, Actor as ActClaim, Confirmation};
use aims_token::dpop::VerifiedProof;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::refusals::{self, Origin};
use crate::routes::policies::{decision_request, principal_of, request_on};
use crate::state::AppState;
use crate::tokens;
use crate::tokens::{NonceRule, ProofRefusal};
use aims_token::svid::SvidClaims;

/// Most form parameters in one request.
const MAX_PARAMS: usize = 32;
/// Longest requested lifetime, seconds (the ceilings apply anyway).
const MAX_EXPIRES_IN: u64 = 86_400;

/// A refusal at an OAuth endpoint: status, RFC error code and description.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: &'static str,
    description: String,
    /// Seconds for `Retry-After` (with a 429).
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        let status = match code {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    /// Takes one request from `credential`'s rate limit; 429 when it is spent.
    fn rate_limit(state: &AppState, credential: &str) -> Result<(), Self> {
        state.limits.credential(credential).map_err(|wait| {
            state.metrics.rate_limited.inc();
            let limited = crate::limits::too_many(wait);
            Self {
                status: limited.status,
                code: limited.code,
                description: limited.message,
                retry_after: limited.retry_after,
            }
        })
    }

    fn store(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { reason } => Self::new("invalid_grant", reason),
            StoreError::NotFound { what } => {
                Self::new("invalid_grant", format!("{what} not found"))
            }
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable at the token endpoint");
                Self::new(
                    "temporarily_unavailable",
                    "the store is unavailable; nothing was issued",
                )
            }
            StoreError::LowSpace { .. } => {
                tracing::error!(error = %err, "token endpoint: the store's volume is below its free-space reserve");
                Self::new(
                    "temporarily_unavailable",
                    "the server is low on storage; nothing was issued",
                )
            }
            StoreError::OutcomeUnknown(detail) => {
                // The token was never handed out, so whether its registration committed does
                // not matter to the client: it has nothing to use.
                tracing::error!(%detail, "store commit outcome unknown at the token endpoint");
                Self::new(
                    "temporarily_unavailable",
                    "the store is unavailable; nothing was issued",
                )
            }
            other => {
                tracing::error!(error = %other, "store failure at the token endpoint");
                Self::new("server_error", "internal error; nothing was issued")
            }
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(OAuthError {
                error: self.code.to_owned(),
                error_description: Some(self.description),
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"aims\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        no_store(response)
    }
}

/// Token responses must not be cached (RFC 6749 §5.1).
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Form parameters, each at most once (RFC 6749 §3.2), bounded in number and size.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, Refusal> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !form {
            return Err(Refusal::new(
                "invalid_request",
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
        let mut params = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if params.len() >= MAX_PARAMS {
                return Err(Refusal::new("invalid_request", "too many parameters"));
            }
            if value.len() > aims_token::jws::MAX_TOKEN_LEN || name.len() > 64 {
                return Err(Refusal::new("invalid_request", "a parameter is too long"));
            }
            let name = name.into_owned();
            if params.contains_key(&name) {
                return Err(Refusal::new(
                    "invalid_request",
                    format!("parameter {name} appears more than once"),
                ));
            }
            params.insert(name, value.into_owned());
        }
        Ok(Self(params))
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, Refusal> {
        self.get(name)
            .ok_or_else(|| Refusal::new("invalid_request", format!("{name} is required")))
    }
}

/// What the audit record of a token request names, filled in as it becomes known.
#[derive(Default)]
struct Attempt {
    action: &'static str,
    agent: Option<Agent>,
    spiffe_id: Option<String>,
    task_id: Option<String>,
    parent: Option<String>,
}

impl Attempt {
    fn event(&self, state: &AppState, outcome: Outcome) -> AuditEvent {
        let actor = match &self.spiffe_id {
            Some(spiffe_id) => Actor::Agent {
                spiffe_id: spiffe_id.clone(),
            },
            None => Actor::Anonymous,
        };
        let mut event = state.event(actor, self.action, outcome);
        event.agent = self.spiffe_id.clone();
        event.owner = self.agent.as_ref().map(|a| a.owner.to_string());
        event.task_id = self.task_id.clone();
        event.parent_token_id = self.parent.clone();
        event
    }
}

/// `POST /oauth2/token`.
pub async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let mut attempt = Attempt {
        action: action::TOKEN_EXCHANGE,
        ..Attempt::default()
    };
    let result = match Params::parse(&headers, &body) {
        Ok(params) => grant(&state, &headers, &params, peer.ip(), now, &mut attempt).await,
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(issued) => no_store(Json(issued).into_response()),
        Err(refusal) => {
            let mut event = attempt.event(&state, Outcome::Denied);
            event.request_id = crate::auth::request_id(&headers);
            event.code = Some(refusal.code.to_owned());
            event.details = json!({ "reason": refusal.description });
            let origin = Origin::of(Some(peer.ip()), &headers);
            match refusals::record(&state, event, &origin, refusal.code).await {
                Ok(()) => refusal.into_response(),
                Err(e) => e.into_response(),
            }
        }
    }
}

async fn grant(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    source_ip: std::net::IpAddr,
    now: OffsetDateTime,
    attempt: &mut Attempt,
) -> Result<TokenResponse, Refusal> {
    match params.require("grant_type")? {
        GRANT_JWT_BEARER => {
            let assertion = params.require("assertion")?;
            exchange_identity(state, headers, params, assertion, source_ip, now, attempt).await
        }
        GRANT_TOKEN_EXCHANGE => {
            if let Some(requested) = params.get("requested_token_type")
                && requested != TOKEN_TYPE_ACCESS_TOKEN
            {
                return Err(Refusal::new(
                    "invalid_request",
                    "only access tokens are issued",
                ));
            }
            let subject = params.require("subject_token")?;
            match params.require("subject_token_type")? {
                TOKEN_TYPE_JWT if params.get("actor_token").is_some() => Err(Refusal::new(
                    "invalid_request",
                    "delegation exchanges an access token, not an identity",
                )),
                TOKEN_TYPE_JWT => {
                    exchange_identity(state, headers, params, subject, source_ip, now, attempt)
                        .await
                }
                TOKEN_TYPE_ACCESS_TOKEN => {
                    attempt.action = action::TOKEN_DELEGATE;
                    delegate(state, headers, params, subject, source_ip, now, attempt).await
                }
                _ => Err(Refusal::new(
                    "invalid_request",
                    "subject_token_type must be the JWT or access-token URN",
                )),
            }
        }
        _ => Err(Refusal::new(
            "unsupported_grant_type",
            "grant_type must be token exchange or JWT bearer",
        )),
    }
}

/// An agent's own task token for its identity.
async fn exchange_identity(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    identity: &str,
    source_ip: std::net::IpAddr,
    now: OffsetDateTime,
    attempt: &mut Attempt,
) -> Result<TokenResponse, Refusal> {
    let svid = live_identity(state, identity, now, "the identity").await?;
    attempt.spiffe_id = Some(svid.sub.to_string());
    Refusal::rate_limit(state, &svid.sub.to_string())?;
    attempt.parent = Some(svid.jti.clone());
    let agent = active_agent(state, &svid.sub.to_string()).await?;
    attempt.agent = Some(agent.clone());
    let proof = possession(
        state,
        headers,
        Some(&svid.cnf.jkt),
        agent.limits.allow_bearer,
        now,
    )?;
    let target = target(state, params).await?;
    let requested = requested_scopes(params)?;
    let expires_in = requested_lifetime(params)?;
    let (task, new_task) = task_for(state, params, &agent, &svid, now).await?;
    attempt.task_id = Some(task.id.clone());

    let snapshot = state
        .store
        .posture_snapshot(&agent.name)
        .await
        .map_err(Refusal::store)?;
    let loaded = state.policy.current();
    let mut granted = Vec::new();
    let mut policy_limit_s: Option<u64> = None;
    let mut decisions = serde_json::Map::new();
    for scope in requested.iter() {
        let request = DecideRequest {
            action: "obtain".to_owned(),
            resource: json!({
                "type": "Scope",
                "id": scope.to_string(),
                "system": target.system,
                "environment": target.environment.as_str(),
                "sensitivity": target.sensitivity,
                "kind": scope.action(),
                "labels": { "resource": scope.resource() },
            }),
            task_id: task.id.clone(),
            intent: task.intent.clone(),
            arguments: serde_json::Map::new(),
        };
        let decision = decision_request(
            state,
            &agent,
            snapshot.as_ref(),
            &request,
            now,
            source_ip,
            String::new(),
        )
        .ok()
        .and_then(|r| loaded.engine.decide(&r).ok());
        let effect = decision.as_ref().map_or("error", |d| d.effect.as_str());
        decisions.insert(
            scope.to_string(),
            json!({
                "decision": effect,
                "policies": decision.as_ref().map(|d| d.determining_policies.clone()),
            }),
        );
        if let Some(allowed) = decision.filter(|d| d.effect == Effect::Allow) {
            let limit = loaded.engine.token_lifetime_limit_s(&allowed);
            policy_limit_s = policy_limit_s.into_iter().chain(limit).min();
            granted.push(scope.clone());
        }
    }
    if granted.is_empty() {
        return Err(Refusal::new(
            "invalid_scope",
            "policy grants none of the requested scopes",
        ));
    }
    let lifetimes = Lifetimes {
        requested_s: expires_in,
        policy_limit_s,
        agent_limit_s: u64::from(agent.limits.max_token_ttl_s),
        global_ceiling_s: state.config.max_token_ttl.as_secs(),
    };
    let not_after = task.deadline.unix_timestamp().min(svid.exp);
    let grant = first_grant(
        ScopeSet::from_scopes(granted),
        target.audience.clone(),
        now.unix_timestamp(),
        lifetimes,
        not_after,
    )
    .map_err(grant_refusal)?;
    let claims = AccessClaims {
        iss: state.issuer.clone(),
        sub: task.subject.clone(),
        aud: grant.audience.clone(),
        client_id: svid.sub.to_string(),
        scope: grant.scopes.to_string(),
        jti: aims_token::random_id(&state.rng)
            .map_err(|_| Refusal::new("server_error", "no randomness"))?,
        iat: now.unix_timestamp(),
        exp: grant.expires_at,
        task_id: task.id.clone(),
        intent: task.intent.clone(),
        cnf: proof.as_ref().map(|p| Confirmation { jkt: p.jkt.clone() }),
        act: None,
    };
    let mut event = attempt.event(state, Outcome::Success);
    event.request_id = crate::auth::request_id(headers);
    event.intent = Some(task.intent.clone());
    event.delegation_chain = vec![claims.client_id.clone()];
    event.details = json!({
        "grant_type": params.get("grant_type"),
        "requested_scope": requested.to_string(),
        "obtain": decisions,
        "policy_max_token_ttl_s": policy_limit_s,
        "policy_version": loaded.version,
        "new_task": new_task.is_some(),
    });
    issue(state, claims, &grant, svid.jti, new_task, proof, event).await
}

/// A token for another agent (the actor), derived from the caller's task token.
async fn delegate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    subject_token: &str,
    source_ip: std::net::IpAddr,
    now: OffsetDateTime,
    attempt: &mut Attempt,
) -> Result<TokenResponse, Refusal> {
    let parent = tokens::verify_access(state, subject_token, now).map_err(|e| {
        Refusal::new(
            "invalid_grant",
            format!("the subject token was refused: {e}"),
        )
    })?;
    attempt.spiffe_id = Some(parent.client_id.clone());
    Refusal::rate_limit(state, &parent.client_id)?;
    attempt.parent = Some(parent.jti.clone());
    attempt.task_id = Some(parent.task_id.clone());
    let delegator = active_agent(state, &parent.client_id).await?;
    attempt.agent = Some(delegator.clone());
    let bound = parent.cnf.as_ref().map(|c| c.jkt.as_str());
    let proof = possession(state, headers, bound, bound.is_none(), now)?;

    if params.require("actor_token_type")? != TOKEN_TYPE_JWT {
        return Err(Refusal::new(
            "invalid_request",
            "actor_token_type must be the JWT URN (the actor's JWT-SVID)",
        ));
    }
    let actor_svid = live_identity(
        state,
        params.require("actor_token")?,
        now,
        "the actor's identity",
    )
    .await?;
    let actor_id = actor_svid.sub.to_string();
    let delegate_agent = active_agent(state, &actor_id).await?;
    if delegate_agent.name == delegator.name {
        return Err(Refusal::new(
            "invalid_request",
            "an agent cannot delegate to itself",
        ));
    }

    let parent_grant = Grant {
        scopes: tokens::scopes_of(&parent)
            .map_err(|e| Refusal::new("invalid_grant", e.to_string()))?,
        audience: parent.aud.clone(),
        expires_at: parent.exp,
        depth: parent.depth(),
    };
    // A named target (by audience URI or resource-server name) must be the parent's.
    let audience = match requested_target_name(params)? {
        Some(_) => Some(target(state, params).await?.audience),
        None => None,
    };
    let request = DelegationRequest {
        scopes: params
            .get("scope")
            .map(ScopeSet::parse)
            .transpose()
            .map_err(|e| Refusal::new("invalid_scope", e.to_string()))?,
        audience,
    };

    // The structural rules first (scope, audience, depth, lifetime), then policy.
    // The policy's lifetime cap is known only after the decision below.
    let lifetimes = Lifetimes {
        requested_s: requested_lifetime(params)?,
        policy_limit_s: None,
        agent_limit_s: u64::from(delegate_agent.limits.max_token_ttl_s),
        global_ceiling_s: state.config.max_token_ttl.as_secs(),
    };
    let depth_limits = DepthLimits {
        delegator: u32::from(delegator.limits.max_delegation_depth),
        delegate: u32::from(delegate_agent.limits.max_delegation_depth),
        global: state.config.max_delegation_depth,
    };
    let mut grant = delegated_grant(
        &parent_grant,
        &request,
        now.unix_timestamp(),
        lifetimes,
        depth_limits,
    )
    .map_err(grant_refusal)?;
    grant.expires_at = grant.expires_at.min(actor_svid.exp);

    // Policy: may the delegator hand part of this task to this agent?
    let loaded = state.policy.current();
    let snapshot = state
        .store
        .posture_snapshot(&delegator.name)
        .await
        .map_err(Refusal::store)?;
    let delegate_snapshot = state
        .store
        .posture_snapshot(&delegate_agent.name)
        .await
        .map_err(Refusal::store)?;
    let question = DecideRequest {
        action: "delegate".to_owned(),
        resource: Value::Null,
        task_id: parent.task_id.clone(),
        intent: parent.intent.clone(),
        arguments: serde_json::Map::new(),
    };
    let request = decision_request_for_agent(
        state,
        &delegator,
        snapshot.as_ref(),
        &delegate_agent,
        delegate_snapshot.as_ref(),
        &question,
        &parent,
        now,
        source_ip,
    );
    let decision = loaded.engine.decide(&request).ok();
    let Some(decision) = decision.filter(|d| d.effect == Effect::Allow) else {
        return Err(Refusal::new(
            "invalid_grant",
            format!(
                "policy does not allow {} to delegate to {actor_id}",
                parent.client_id
            ),
        ));
    };
    let policy_limit_s = loaded.engine.token_lifetime_limit_s(&decision);
    if let Some(limit) = policy_limit_s {
        let policy_expiry = now
            .unix_timestamp()
            .saturating_add(i64::try_from(limit).unwrap_or(i64::MAX));
        grant.expires_at = grant.expires_at.min(policy_expiry);
    }

    let previous = parent.act.clone().unwrap_or(ActClaim {
        sub: parent.client_id.clone(),
        act: None,
    });
    let claims = AccessClaims {
        iss: state.issuer.clone(),
        sub: parent.sub.clone(),
        aud: grant.audience.clone(),
        client_id: actor_id.clone(),
        scope: grant.scopes.to_string(),
        jti: aims_token::random_id(&state.rng)
            .map_err(|_| Refusal::new("server_error", "no randomness"))?,
        iat: now.unix_timestamp(),
        exp: grant.expires_at,
        task_id: parent.task_id.clone(),
        intent: parent.intent.clone(),
        cnf: Some(Confirmation {
            jkt: actor_svid.cnf.jkt.clone(),
        }),
        act: Some(ActClaim {
            sub: actor_id,
            act: Some(Box::new(previous)),
        }),
    };
    let mut event = attempt.event(state, Outcome::Success);
    event.request_id = crate::auth::request_id(headers);
    event.intent = Some(parent.intent.clone());
    event.delegation_chain = claims.delegation_chain();
    event.decision = Some(decision.effect.as_str().to_owned());
    event.policy_ids = decision.determining_policies.clone();
    event.details = json!({
        "delegate": claims.client_id,
        "depth": grant.depth,
        "policy_max_token_ttl_s": policy_limit_s,
        "policy_version": loaded.version,
    });
    let parent_jti = parent.jti.clone();
    issue(state, claims, &grant, parent_jti, None, proof, event).await
}

/// The `delegate` question: principal the delegator, resource the delegate.
#[allow(clippy::too_many_arguments)]
fn decision_request_for_agent(
    state: &AppState,
    delegator: &Agent,
    delegator_snapshot: Option<&aims_store::PostureSnapshot>,
    delegate: &Agent,
    delegate_snapshot: Option<&aims_store::PostureSnapshot>,
    question: &DecideRequest,
    parent: &AccessClaims,
    now: OffsetDateTime,
    source_ip: std::net::IpAddr,
) -> aims_policy::DecisionRequest {
    let delegate = Resource::Agent(principal_of(state, delegate, delegate_snapshot));
    let mut request = request_on(
        state,
        delegator,
        delegator_snapshot,
        question,
        delegate,
        now,
        source_ip,
        String::new(),
    );
    request.context.delegation_depth = i64::from(parent.depth());
    request.context.delegation_chain = parent.delegation_chain();
    request
}

/// Mints a token, registers it (with its new task and DPoP proof) together with its audit
/// event, and answers it. The holder is the agent named by `client_id`.
async fn issue(
    state: &AppState,
    claims: AccessClaims,
    grant: &Grant,
    parent: String,
    new_task: Option<Task>,
    proof: Option<VerifiedProof>,
    mut event: AuditEvent,
) -> Result<TokenResponse, Refusal> {
    let keys = state.keys();
    let token = access::mint(&keys.current, &state.rng, &claims)
        .map_err(|_| Refusal::new("server_error", "the token could not be signed"))?;
    let holder = aims_core::id::SpiffeId::parse(&claims.client_id)
        .map(|id| id.agent().clone())
        .map_err(|_| Refusal::new("server_error", "bad client id"))?;
    let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp)
        .map_err(|_| Refusal::new("server_error", "bad expiry"))?;
    let issued_at = OffsetDateTime::from_unix_timestamp(claims.iat)
        .map_err(|_| Refusal::new("server_error", "bad issue time"))?;
    event.token_id = Some(claims.jti.clone());
    event.resource = Some(claims.aud.clone());
    if let Value::Object(details) = &mut event.details {
        details.insert("scope".to_owned(), Value::String(claims.scope.clone()));
        details.insert("expires_at".to_owned(), json!(claims.exp));
        details.insert(
            "token_type".to_owned(),
            json!(if claims.cnf.is_some() {
                "DPoP"
            } else {
                "Bearer"
            }),
        );
    }
    let issue = AccessTokenIssue {
        credential: IssuedCredential {
            id: claims.jti.clone(),
            kind: IssuedKind::AccessToken,
            agent: holder,
            parent: Some(parent),
            key_thumbprint: claims.cnf.as_ref().map(|c| c.jkt.clone()),
            issued_at,
            expires_at,
            revoked_at: None,
            task_id: Some(claims.task_id.clone()),
            audience: Some(claims.aud.clone()),
        },
        new_task,
        dpop_proof: proof.as_ref().and_then(|p| {
            OffsetDateTime::from_unix_timestamp(p.forget_after())
                .ok()
                .map(|t| (p.replay_key(), t))
        }),
    };
    if let Err(failed) = state.store.issue_access_token(&issue, &event).await {
        // Signed but not registered, so never handed out: should it leak anyway (a core dump,
        // a log), this replica refuses it like a revoked one.
        state.revocations.refuse_unissued(&claims.jti, claims.exp);
        return Err(Refusal::store(failed));
    }
    let expires_in = u64::try_from(claims.exp.saturating_sub(claims.iat)).unwrap_or(0);
    Ok(TokenResponse {
        access_token: token,
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.to_owned(),
        token_type: if claims.cnf.is_some() {
            "DPoP"
        } else {
            "Bearer"
        }
        .to_owned(),
        expires_in,
        scope: grant.scopes.to_string(),
        task_id: claims.task_id,
    })
}

/// A JWT-SVID of this trust domain, meant for AIMS, still registered and not revoked.
async fn live_identity(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
    what: &str,
) -> Result<SvidClaims, Refusal> {
    let svid = tokens::verify_svid(state, token, Some(&state.issuer), now)
        .map_err(|e| Refusal::new("invalid_grant", format!("{what} was refused: {e}")))?;
    let registered = state
        .store
        .issued_credential(&svid.jti)
        .await
        .map_err(Refusal::store)?;
    if registered.is_none_or(|c| c.revoked_at.is_some()) {
        return Err(Refusal::new(
            "invalid_grant",
            format!("{what} is revoked or unknown"),
        ));
    }
    Ok(svid)
}

/// The registered, active agent behind a SPIFFE ID.
async fn active_agent(state: &AppState, spiffe_id: &str) -> Result<Agent, Refusal> {
    let agent = tokens::agent_of(state, spiffe_id)
        .await
        .map_err(Refusal::store)?
        .ok_or_else(|| Refusal::new("invalid_grant", "no such agent"))?;
    if !agent.state.may_hold_credentials() {
        return Err(Refusal::new(
            "invalid_grant",
            format!("agent {} is {}", agent.name, agent.state),
        ));
    }
    Ok(agent)
}

/// The caller's proof of possession at the token endpoint: a DPoP proof by the key with
/// thumbprint `bound_to`, or nothing when bearer is allowed.
fn possession(
    state: &AppState,
    headers: &HeaderMap,
    bound_to: Option<&str>,
    bearer_allowed: bool,
    now: OffsetDateTime,
) -> Result<Option<VerifiedProof>, Refusal> {
    let header = tokens::dpop_header(headers).map_err(|e| Refusal::new("invalid_dpop_proof", e))?;
    match (header, bound_to) {
        (Some(proof), Some(jkt)) => tokens::check_proof(
            state,
            proof,
            "POST",
            TOKEN_PATH,
            None,
            jkt,
            NonceRule::NotRequired,
            now,
        )
        .map(Some)
        .map_err(|refusal| match refusal {
            ProofRefusal::Invalid(why) => Refusal::new("invalid_dpop_proof", why),
            ProofRefusal::UseNonce => Refusal::new("use_dpop_nonce", "a nonce is required"),
        }),
        (Some(_), None) => Err(Refusal::new(
            "invalid_dpop_proof",
            "the subject token is not bound to a key",
        )),
        (None, _) if bearer_allowed => Ok(None),
        (None, _) => Err(Refusal::new(
            "invalid_request",
            "a DPoP proof is required (this agent is not allowed bearer tokens)",
        )),
    }
}

/// The target named by `audience` or `resource` (one of them, once).
fn requested_target_name(params: &Params) -> Result<Option<&str>, Refusal> {
    match (params.get("audience"), params.get("resource")) {
        (Some(a), Some(r)) if a != r => Err(Refusal::new(
            "invalid_target",
            "a token has one audience: send audience or resource, not both",
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, r) => Ok(r),
    }
}

/// The registered resource server the token is for (by audience URI or name).
async fn target(state: &AppState, params: &Params) -> Result<ResourceServer, Refusal> {
    let name = requested_target_name(params)?.ok_or_else(|| {
        Refusal::new(
            "invalid_target",
            "name the target with audience or resource",
        )
    })?;
    if let Some(server) = state
        .store
        .resource_server_by_audience(name)
        .await
        .map_err(Refusal::store)?
    {
        return Ok(server);
    }
    let by_name = match aims_core::id::ResourceServerName::new(name) {
        Ok(valid) => state
            .store
            .resource_server(&valid)
            .await
            .map_err(Refusal::store)?,
        Err(_) => None,
    };
    by_name.ok_or_else(|| Refusal::new("invalid_target", "unknown target"))
}

fn requested_scopes(params: &Params) -> Result<ScopeSet, Refusal> {
    let scope = params
        .get("scope")
        .ok_or_else(|| Refusal::new("invalid_scope", "scope is required"))?;
    ScopeSet::parse(scope).map_err(|e| Refusal::new("invalid_scope", e.to_string()))
}

fn requested_lifetime(params: &Params) -> Result<Option<u64>, Refusal> {
    params
        .get("expires_in")
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|s| (1..=MAX_EXPIRES_IN).contains(s))
                .ok_or_else(|| {
                    Refusal::new("invalid_request", "expires_in must be 1 to 86400 seconds")
                })
        })
        .transpose()
}

/// The task a token is for: the named one (the agent's own, still open) or a new one.
async fn task_for(
    state: &AppState,
    params: &Params,
    agent: &Agent,
    svid: &SvidClaims,
    now: OffsetDateTime,
) -> Result<(Task, Option<Task>), Refusal> {
    if let Some(id) = params.get("task_id") {
        if !is_valid_task_id(id) {
            return Err(Refusal::new("invalid_request", "task_id is malformed"));
        }
        let task = state
            .store
            .task(id)
            .await
            .map_err(Refusal::store)?
            .ok_or_else(|| Refusal::new("invalid_grant", "unknown task"))?;
        if task.agent != agent.name {
            return Err(Refusal::new(
                "invalid_grant",
                "the task belongs to another agent",
            ));
        }
        if !task.is_open(now) {
            return Err(Refusal::new("invalid_grant", "the task has ended"));
        }
        if params.get("intent").is_some_and(|i| i != task.intent) {
            return Err(Refusal::new(
                "invalid_request",
                "intent differs from the task's declared intent",
            ));
        }
        return Ok((task, None));
    }
    let intent = params
        .get("intent")
        .ok_or_else(|| Refusal::new("invalid_request", "intent is required for a new task"))?;
    if !is_valid_intent(intent) {
        return Err(Refusal::new(
            "invalid_request",
            "intent must be 1 to 1024 characters without control characters",
        ));
    }
    let task = Task {
        id: aims_token::random_id(&state.rng)
            .map_err(|_| Refusal::new("server_error", "no randomness"))?,
        agent: agent.name.clone(),
        intent: intent.to_owned(),
        subject: svid.sub.to_string(),
        state: TaskState::Active,
        created_at: now,
        deadline: now + state.config.task_ttl,
        ended_at: None,
    };
    Ok((task.clone(), Some(task)))
}

fn grant_refusal(err: GrantError) -> Refusal {
    let code = match err {
        GrantError::WiderScope => "invalid_scope",
        GrantError::OtherAudience => "invalid_target",
        GrantError::TooDeep { .. } | GrantError::Expired => "invalid_grant",
        GrantError::NoLifetime => "invalid_request",
    };
    Refusal::new(code, err.to_string())
}

/// Who is calling introspection, revocation or the revocation feed.
pub(crate) enum ServiceCaller {
    /// A registered resource server (HTTP Basic with its name and secret).
    ResourceServer(ResourceServer),
    /// An operator (Bearer with a human credential allowed to read).
    Operator(aims_core::user::User),
}

impl ServiceCaller {
    pub(crate) fn actor(&self) -> Actor {
        match self {
            Self::ResourceServer(rs) => Actor::ResourceServer {
                name: rs.name.to_string(),
            },
            Self::Operator(user) => Actor::User {
                name: user.name.to_string(),
                role: user.role.to_string(),
            },
        }
    }

    /// The key of the caller's rate limit.
    fn rate_limit_key(&self) -> String {
        match self {
            Self::ResourceServer(rs) => format!("resource-server:{}", rs.name),
            Self::Operator(user) => format!("user:{}", user.name),
        }
    }

    /// Whether the caller may see a token for `audience`.
    fn may_see(&self, audience: &str) -> bool {
        match self {
            Self::ResourceServer(rs) => rs.audience == audience,
            Self::Operator(_) => true,
        }
    }
}

/// Authenticates a resource server (Basic) or an operator (Bearer); `None` without
/// `Authorization`; `invalid_client` for a credential that does not match.
pub(crate) async fn service_caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<ServiceCaller>, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || Refusal::new("invalid_client", "client authentication failed");
    let value = value.to_str().map_err(|_| invalid())?;
    let (scheme, credential) = value.split_once(' ').ok_or_else(invalid)?;
    let credential = credential.trim();
    if credential.len() > 2 * MAX_CREDENTIAL_LEN {
        return Err(invalid());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(credential).map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        // RFC 6749 §2.3.1: both halves are form-urlencoded before they are joined.
        let (name, secret) = decoded.split_once(':').ok_or_else(invalid)?;
        let (name, secret) = (form_decode(name), form_decode(secret));
        let server = state
            .store
            .resource_server_by_credential(&CredentialHash::of(&secret))
            .await
            .map_err(Refusal::store)?
            .filter(|rs| rs.name.as_str() == name)
            .ok_or_else(invalid)?;
        Ok(Some(ServiceCaller::ResourceServer(server)))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let user = state
            .store
            .user_by_credential(&CredentialHash::of(credential))
            .await
            .map_err(Refusal::store)?
            .filter(|u| u.role.allows(Access::Read))
            .ok_or_else(invalid)?;
        Ok(Some(ServiceCaller::Operator(user)))
    } else {
        Err(invalid())
    }
}

/// One `application/x-www-form-urlencoded` value, decoded (`+` is a space, `%XX` a byte).
/// A value holding `&` decodes to its first part only, which then matches no credential.
fn form_decode(value: &str) -> String {
    form_urlencoded::parse(format!("v={value}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .next()
        .unwrap_or_default()
}

/// `POST /oauth2/introspect` (RFC 7662): for resource servers (their own audience only) and
/// operators. Anything not active answers exactly `{"active": false}`.
pub async fn introspect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let (caller, token) = match token_request(&state, &headers, &body).await {
        Ok((Some(caller), token)) => (caller, token),
        Ok((None, _)) => {
            let refusal = Refusal::new("invalid_client", "authenticate as a resource server");
            return refuse_service(&state, peer, &headers, refusal).await;
        }
        Err(refusal) => return refuse_service(&state, peer, &headers, refusal).await,
    };
    let token = token.as_str();
    let inactive = || no_store(Json(json!({ "active": false })).into_response());
    let Ok(claims) = tokens::verify_access(&state, token, now) else {
        return inactive();
    };
    if !caller.may_see(&claims.aud) {
        return inactive();
    }
    match state.store.issued_credential(&claims.jti).await {
        Ok(Some(c)) if c.revoked_at.is_none() => {}
        Ok(_) => return inactive(),
        Err(e) => return Refusal::store(e).into_response(),
    }
    let mut event = state.event(caller.actor(), action::READ, Outcome::Success);
    event.request_id = crate::auth::request_id(&headers);
    event.resource = Some("POST /oauth2/introspect".to_owned());
    event.token_id = Some(claims.jti.clone());
    event.task_id = Some(claims.task_id.clone());
    if let Err(e) = state.audit.record(event).await {
        return e.into_response();
    }
    let token_type = if claims.cnf.is_some() {
        "DPoP"
    } else {
        "Bearer"
    };
    let mut body = serde_json::to_value(&claims).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut body {
        map.insert("active".to_owned(), Value::Bool(true));
        map.insert(
            "token_type".to_owned(),
            Value::String(token_type.to_owned()),
        );
    }
    no_store(Json(body).into_response())
}

/// The caller (if it authenticated) and the `token` parameter of an introspection or
/// revocation request.
async fn token_request(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Option<ServiceCaller>, String), Refusal> {
    let caller = service_caller(state, headers).await?;
    if let Some(caller) = &caller {
        Refusal::rate_limit(state, &caller.rate_limit_key())?;
    }
    let params = Params::parse(headers, body)?;
    let token = params.require("token")?.to_owned();
    Ok((caller, token))
}

/// Audits a refused introspection or revocation request and answers it.
async fn refuse_service(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    refusal: Refusal,
) -> Response {
    let mut event = state.event(Actor::Anonymous, action::REJECT, Outcome::Denied);
    event.request_id = crate::auth::request_id(headers);
    event.code = Some(refusal.code.to_owned());
    let origin = Origin::of(Some(peer.ip()), headers);
    match refusals::record(state, event, &origin, refusal.code).await {
        Ok(()) => refusal.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /oauth2/revoke` (RFC 7009): revokes an access token or JWT-SVID and everything
/// derived from it. Possession of the token is enough to revoke it; a resource server may
/// revoke only tokens for its audience. Unknown or invalid tokens get 200 and change nothing.
pub async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let (caller, token) = match token_request(&state, &headers, &body).await {
        Ok(request) => request,
        Err(refusal) => return refuse_service(&state, peer, &headers, refusal).await,
    };
    let token = token.as_str();
    let access = tokens::verify_access_offline(&state, token, now);
    let target = match access {
        Ok(claims) if caller.as_ref().is_none_or(|c| c.may_see(&claims.aud)) => {
            Some((claims.jti, claims.client_id, Some(claims.task_id)))
        }
        Ok(_) => None,
        Err(_) => tokens::verify_svid(&state, token, None, now)
            .ok()
            .filter(|_| !matches!(caller, Some(ServiceCaller::ResourceServer(_))))
            .map(|s| (s.jti, s.sub.to_string(), None)),
    };
    let ok = || no_store(StatusCode::OK.into_response());
    let Some((jti, holder, task_id)) = target else {
        return ok();
    };
    let actor = caller
        .as_ref()
        .map_or(Actor::Anonymous, ServiceCaller::actor);
    let mut event = state.event(actor, action::REVOKE, Outcome::Success);
    event.request_id = crate::auth::request_id(&headers);
    event.token_id = Some(jti.clone());
    event.agent = Some(holder);
    event.task_id = task_id;
    event.details = json!({ "target": "token", "via": "rfc7009" });
    let reason = if caller.is_some() {
        "revoked through the revocation endpoint"
    } else {
        "revoked by its holder"
    };
    match state
        .store
        .revoke(&RevocationTarget::Credential(jti), reason, now, &event)
        .await
    {
        Ok(_) => {
            state.apply_own_revocations().await;
            ok()
        }
        Err(e) => Refusal::store(e).into_response(),
    }
}
