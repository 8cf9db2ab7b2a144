//! The OAuth endpoints: the token endpoint (RFC 8693 token exchange and delegation, RFC 7523
//! JWT bearer), introspection (RFC 7662) and revocation (RFC 7009).
//!
//! The token endpoint turns an agent's JWT-SVID into a task token ([`identity`]): every
//! requested scope is an `obtain` decision of the active policies, the lifetime is the least of
//! what was asked, what the deciding policies allow (`@max_token_ttl_s`), the agent's limit,
//! the global ceiling, the task's deadline and the identity's expiry, and the token is bound to
//! the agent's key by DPoP unless the agent is registered for bearer tokens. Delegation
//! ([`delegation`]) exchanges a task token plus another agent's SVID (`actor_token`) for a
//! token of that agent, after a `delegate` decision, within the rules of
//! [`aims_core::delegation`]. The token is registered, its task created and its DPoP proof
//! burned in one store transaction with its audit event ([`issue`]); a refusal changes nothing
//! and is audited with its RFC error code.
//!
//! Each handler parses the request, runs one step function per protocol step over an
//! [`Exchange`], and maps the result; every refusal is an [`ApiError`] in the OAuth form.

mod delegation;
mod identity;
mod issue;
mod params;
mod service;

pub use service::{introspect, revoke};

use std::sync::Arc;

use aims_api::oauth::{
    GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, TOKEN_PATH, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT,
    TokenResponse,
};
use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_core::delegation::GrantError;
use aims_core::id::{Owner, SpiffeId, TaskId};
use aims_store::ResourceServer;
use aims_token::dpop::VerifiedProof;
use aims_token::svid::SvidClaims;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

pub use self::params::FormPost;
use self::params::Params;
use crate::decisions::Asked;
use crate::error::{ApiError, ErrorCode, Form, no_store};
use crate::presented::{self, DeadSvid};
use crate::refusals::Origin;
use crate::registry::KnownAgent;
use crate::state::AppState;

/// Longest requested lifetime, seconds (the ceilings apply anyway).
const MAX_EXPIRES_IN: u64 = 86_400;

/// One token request being served: what every step reads.
struct Exchange<'a> {
    state: &'a AppState,
    headers: &'a HeaderMap,
    params: &'a Params,
    asked: Asked,
}

/// What the audit record of a token request names, filled in as it becomes known.
#[derive(Default)]
struct Attempt {
    action: &'static str,
    owner: Option<Owner>,
    spiffe_id: Option<String>,
    task_id: Option<TaskId>,
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
        event.owner = self.owner.as_ref().map(ToString::to_string);
        event.task_id = self.task_id.clone().map(String::from);
        event.parent_token_id = self.parent.clone();
        event
    }
}

/// `POST /oauth2/token`.
pub async fn token(State(state): State<AppState>, post: FormPost) -> Response {
    let asked = Asked {
        at: OffsetDateTime::now_utc(),
        source_ip: post.peer.ip(),
    };
    let mut attempt = Attempt {
        action: action::TOKEN_EXCHANGE,
        ..Attempt::default()
    };
    let result = match Params::parse(&post.headers, &post.body) {
        Ok(params) => {
            let exchange = Exchange {
                state: &state,
                headers: &post.headers,
                params: &params,
                asked,
            };
            grant(&exchange, &mut attempt).await
        }
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(issued) => no_store(Json(issued).into_response()),
        Err(refusal) => {
            let event = attempt
                .event(&state, Outcome::Denied)
                .request(crate::auth::request_id(&post.headers))
                .code(refusal.code.as_str())
                .details(serde_json::json!({ "reason": refusal.message }));
            let origin = Origin::of(Some(post.peer.ip()), &post.headers);
            match state
                .record_refusal(event, &origin, refusal.code.as_str())
                .await
            {
                Ok(()) => refusal.into_response(),
                Err(e) => e.into_response(),
            }
        }
    }
}

/// Dispatches on the grant type and subject token type.
async fn grant(ex: &Exchange<'_>, attempt: &mut Attempt) -> Result<TokenResponse, ApiError> {
    let params = ex.params;
    match params.require("grant_type")? {
        GRANT_JWT_BEARER => {
            let assertion = params.require("assertion")?;
            identity::exchange(ex, assertion, attempt).await
        }
        GRANT_TOKEN_EXCHANGE => {
            if let Some(requested) = params.get("requested_token_type")
                && requested != TOKEN_TYPE_ACCESS_TOKEN
            {
                return Err(invalid_request("only access tokens are issued"));
            }
            let subject = params.require("subject_token")?;
            match params.require("subject_token_type")? {
                TOKEN_TYPE_JWT if params.get("actor_token").is_some() => Err(invalid_request(
                    "delegation exchanges an access token, not an identity",
                )),
                TOKEN_TYPE_JWT => identity::exchange(ex, subject, attempt).await,
                TOKEN_TYPE_ACCESS_TOKEN => {
                    attempt.action = action::TOKEN_DELEGATE;
                    delegation::delegate(ex, subject, attempt).await
                }
                _ => Err(invalid_request(
                    "subject_token_type must be the JWT or access-token URN",
                )),
            }
        }
        _ => Err(ApiError::oauth(
            ErrorCode::UnsupportedGrantType,
            "grant_type must be token exchange or JWT bearer",
        )),
    }
}

/// An `invalid_request` refusal.
fn invalid_request(description: impl Into<String>) -> ApiError {
    ApiError::oauth(ErrorCode::InvalidRequest, description)
}

/// An `invalid_grant` refusal.
fn invalid_grant(description: impl Into<String>) -> ApiError {
    ApiError::oauth(ErrorCode::InvalidGrant, description)
}

/// Takes one request from `credential`'s rate limit; 429 when it is spent.
fn rate_limit(state: &AppState, credential: &str) -> Result<(), ApiError> {
    state.limits.credential(credential).map_err(|wait| {
        state.metrics.rate_limited.inc();
        crate::limits::too_many(wait).in_form(Form::OAuth)
    })
}

/// A JWT-SVID of this trust domain, meant for AIMS, still registered and not revoked.
async fn live_identity(ex: &Exchange<'_>, token: &str, what: &str) -> Result<SvidClaims, ApiError> {
    let state = ex.state;
    let svid = presented::verify_svid_for_issuer(state, token, ex.asked.at)
        .map_err(|e| invalid_grant(format!("{what} was refused: {e}")))?;
    presented::require_live_svid(state, &svid, ex.asked.at)
        .await
        .map_err(|dead| match dead {
            DeadSvid::Stale => ApiError::oauth(ErrorCode::TemporarilyUnavailable, dead.to_string()),
            DeadSvid::Store(e) => ApiError::oauth_from_store(e),
            DeadSvid::Revoked | DeadSvid::RevokedOrUnknown => {
                invalid_grant(format!("{what} is revoked or unknown"))
            }
        })?;
    Ok(svid)
}

/// The registered, active agent behind a SPIFFE ID, as this replica's registry view holds it
/// (read from the store when the view does not hold it yet). The issuance commits only if the
/// agent's record is still at the revision decided on and it may still hold credentials
/// (`AccessTokenIssue::agent_revision`).
async fn active_agent(state: &AppState, spiffe_id: &SpiffeId) -> Result<Arc<KnownAgent>, ApiError> {
    let no_such_agent = || invalid_grant("no such agent");
    let agent = presented::agent_of(state, spiffe_id)
        .await
        .map_err(|e| e.in_form(Form::OAuth))?
        .ok_or_else(no_such_agent)?;
    if !agent.state.may_hold_credentials() {
        return Err(invalid_grant(format!(
            "agent {} is {}",
            agent.name, agent.state
        )));
    }
    Ok(agent)
}

/// The caller's proof of possession at the token endpoint: a DPoP proof by the key with
/// thumbprint `bound_to`, or nothing when bearer is allowed.
fn possession(
    ex: &Exchange<'_>,
    bound_to: Option<&str>,
    bearer_allowed: bool,
) -> Result<Option<VerifiedProof>, ApiError> {
    let invalid_proof = |why: String| ApiError::oauth(ErrorCode::InvalidDpopProof, why);
    let header = presented::proof_header(ex.headers).map_err(|e| invalid_proof(e.to_owned()))?;
    match (header, bound_to) {
        (Some(proof), Some(jkt)) => {
            presented::check_token_request_proof(ex.state, proof, TOKEN_PATH, jkt, ex.asked.at)
                .map(Some)
                .map_err(|refusal| {
                    ApiError::oauth(ErrorCode::of_refusal(&refusal), refusal.to_string())
                })
        }
        (Some(_), None) => Err(invalid_proof(
            "the subject token is not bound to a key".to_owned(),
        )),
        (None, _) if bearer_allowed => Ok(None),
        (None, _) => Err(invalid_request(
            "a DPoP proof is required (this agent is not allowed bearer tokens)",
        )),
    }
}

/// The target named by `audience` or `resource` (one of them, once).
fn requested_target_name(params: &Params) -> Result<Option<&str>, ApiError> {
    match (params.get("audience"), params.get("resource")) {
        (Some(a), Some(r)) if a != r => Err(ApiError::oauth(
            ErrorCode::InvalidTarget,
            "a token has one audience: send audience or resource, not both",
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, r) => Ok(r),
    }
}

/// The registered resource server the token is for (by audience URI or name).
async fn target(state: &AppState, params: &Params) -> Result<ResourceServer, ApiError> {
    let name = requested_target_name(params)?.ok_or_else(|| {
        ApiError::oauth(
            ErrorCode::InvalidTarget,
            "name the target with audience or resource",
        )
    })?;
    state
        .resource_servers
        .by_target(state.store.as_ref(), name)
        .await
        .map_err(ApiError::oauth_from_store)?
        .ok_or_else(|| ApiError::oauth(ErrorCode::InvalidTarget, "unknown target"))
}

/// The lifetime the client asked for, if any.
fn requested_lifetime(params: &Params) -> Result<Option<u64>, ApiError> {
    params
        .get("expires_in")
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|s| (1..=MAX_EXPIRES_IN).contains(s))
                .ok_or_else(|| invalid_request("expires_in must be 1 to 86400 seconds"))
        })
        .transpose()
}

/// The refusal for a grant the structural rules do not allow.
fn grant_refusal(err: GrantError) -> ApiError {
    let code = match err {
        GrantError::WiderScope => ErrorCode::InvalidScope,
        GrantError::OtherAudience => ErrorCode::InvalidTarget,
        GrantError::TooDeep { .. } | GrantError::Expired => ErrorCode::InvalidGrant,
        GrantError::NoLifetime => ErrorCode::InvalidRequest,
    };
    ApiError::oauth(code, err.to_string())
}

/// `server_error` for a random-number-generator failure.
fn no_randomness(_: aims_token::TokenError) -> ApiError {
    ApiError::oauth(ErrorCode::ServerError, "no randomness")
}
