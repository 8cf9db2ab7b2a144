//! Introspection (RFC 7662) and revocation (RFC 7009): for resource servers (their own
//! audience only) and operators; revocation also for a token's holder.

use aims_core::audit::{Actor, Outcome, action};
use aims_store::RevocationTarget;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::params::{FormPost, Params};
use super::rate_limit;
use crate::auth::{ServiceCaller, service_caller};
use crate::error::{ApiError, ErrorCode, no_store};
use crate::presented;
use crate::refusals::Origin;
use crate::state::AppState;

/// `POST /oauth2/introspect` (RFC 7662): for resource servers (their own audience only) and
/// operators. Anything not active answers exactly `{"active": false}`.
pub async fn introspect(State(state): State<AppState>, post: FormPost) -> Response {
    let now = OffsetDateTime::now_utc();
    let (caller, token) = match token_request(&state, &post.headers, &post.body).await {
        Ok((Some(caller), token)) => (caller, token),
        Ok((None, _)) => {
            let refusal = ApiError::oauth(
                ErrorCode::InvalidClient,
                "authenticate as a resource server",
            );
            return refuse_service(&state, post.peer, &post.headers, refusal).await;
        }
        Err(refusal) => return refuse_service(&state, post.peer, &post.headers, refusal).await,
    };
    let inactive = || no_store(Json(json!({ "active": false })).into_response());
    let Ok(claims) = presented::verify_access(&state, &token, now) else {
        return inactive();
    };
    if !caller.may_see(&claims.aud) {
        return inactive();
    }
    match state.store.issued_credential(claims.jti.as_str()).await {
        Ok(Some(c)) if c.revoked_at.is_none() => {}
        Ok(_) => return inactive(),
        Err(e) => return ApiError::oauth_from_store(e).into_response(),
    }
    let event = state
        .event(caller.actor(), action::READ, Outcome::Success)
        .request(crate::auth::request_id(&post.headers))
        .resource("POST /oauth2/introspect")
        .token(claims.jti.clone())
        .task(claims.task_id.clone());
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
) -> Result<(Option<ServiceCaller>, String), ApiError> {
    let caller = service_caller(state, headers).await?;
    if let Some(caller) = &caller {
        rate_limit(state, &caller.rate_limit_key())?;
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
    refusal: ApiError,
) -> Response {
    let event = state
        .event(Actor::Anonymous, action::REJECT, Outcome::Denied)
        .request(crate::auth::request_id(headers))
        .code(refusal.code.as_str());
    let origin = Origin::of(Some(peer.ip()), headers);
    match state
        .record_refusal(event, &origin, refusal.code.as_str())
        .await
    {
        Ok(()) => refusal.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /oauth2/revoke` (RFC 7009): revokes an access token or JWT-SVID and everything
/// derived from it. Possession of the token is enough to revoke it; a resource server may
/// revoke only tokens for its audience. Unknown or invalid tokens get 200 and change nothing.
pub async fn revoke(State(state): State<AppState>, post: FormPost) -> Response {
    let now = OffsetDateTime::now_utc();
    let (caller, token) = match token_request(&state, &post.headers, &post.body).await {
        Ok(request) => request,
        Err(refusal) => return refuse_service(&state, post.peer, &post.headers, refusal).await,
    };
    let target = match presented::verify_access_offline(&state, &token, now) {
        Ok(claims) if caller.as_ref().is_none_or(|c| c.may_see(&claims.aud)) => {
            Some((claims.jti, claims.client_id, Some(claims.task_id)))
        }
        Ok(_) => None,
        Err(_) => presented::verify_svid(&state, &token, now)
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
    let mut event = state
        .event(actor, action::REVOKE, Outcome::Success)
        .request(crate::auth::request_id(&post.headers))
        .token(jti.clone())
        .agent(holder)
        .details(json!({ "target": "token", "via": "rfc7009" }));
    event.task_id = task_id.map(String::from);
    let reason = if caller.is_some() {
        "revoked through the revocation endpoint"
    } else {
        "revoked by its holder"
    };
    match state
        .store
        .revoke(
            &RevocationTarget::Credential(String::from(jti)),
            reason,
            now,
            &event,
        )
        .await
    {
        Ok(_) => {
            state.apply_own_revocations().await;
            ok()
        }
        Err(e) => ApiError::oauth_from_store(e).into_response(),
    }
}
