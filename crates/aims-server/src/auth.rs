//! Operator authentication and request auditing for the `/v1` admin API.
//!
//! [`admin_layer`] authenticates the human credential of admin routes (only its SHA-256 is
//! looked up; agent credentials never match) and makes the [`Caller`] available to handlers.
//! [`audit_layer`], around every `/v1` route, records what handlers do not: refusals
//! (`api.reject`) and operators' successful reads (`api.read`, a credential use). State
//! changes are audited by the handler together with the change. If the audit record cannot be
//! written the caller gets 503 instead of the answer.

use aims_core::audit::{Actor, Outcome, action};
use aims_core::credential::{CredentialHash, MAX_CREDENTIAL_LEN};
use aims_core::user::{Access, User};
use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Rejected};
use crate::limits;
use crate::refusals::{self, Origin};
use crate::state::AppState;

/// Header carrying the request's correlation id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The authenticated human behind a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user: User,
    /// The request's correlation id.
    pub request_id: Option<String>,
}

impl Caller {
    /// Refuses unless the caller's role grants `access`.
    pub fn require(&self, access: Access) -> Result<(), ApiError> {
        if self.user.role.allows(access) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not do this",
                self.user.role
            )))
        }
    }

    /// The caller as an audit actor.
    pub fn actor(&self) -> Actor {
        Actor::User {
            name: self.user.name.to_string(),
            role: self.user.role.to_string(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Only present behind `admin_layer`; absence is a wiring bug, refused closed.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// The bearer credential in `Authorization`, if well-formed and at most `max_len` bytes.
pub(crate) fn bearer(headers: &HeaderMap, max_len: usize) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty() && credential.len() <= max_len)
        .then_some(credential)
}

pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect())
}

/// Authenticates the operator for admin routes and tells [`audit_layer`] who the caller was.
pub async fn admin_layer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match bearer(request.headers(), MAX_CREDENTIAL_LEN) {
        None => None,
        Some(credential) => match state
            .store
            .user_by_credential(&CredentialHash::of(credential))
            .await
        {
            Ok(user) => user,
            Err(e) => return ApiError::from_store(e).into_response(),
        },
    };
    let Some(user) = user else {
        return ApiError::unauthenticated().into_response();
    };
    let caller = Caller {
        user,
        request_id: request_id(request.headers()),
    };
    let actor = caller.actor();
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(actor);
    response
}

/// Audits what handlers do not record themselves, for every `/v1` route: refusals
/// (`api.reject`, by the authenticated caller or `Anonymous`; an anonymous one bounded by
/// [`refusals::record`]) and an operator's successful reads (`api.read`, a credential use).
/// State changes are audited by their handlers together with the change. If the record cannot
/// be written, the caller gets 503 instead.
pub async fn audit_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // Nested routers see the path without their prefix; audit the path the caller sent.
    let path = request.extensions().get::<OriginalUri>().map_or_else(
        || request.uri().path().to_owned(),
        |uri| uri.path().to_owned(),
    );
    let request_id = request_id(request.headers());
    let origin = Origin::of(limits::peer(&request), request.headers());

    let response = next.run(request).await;
    let actor = response.extensions().get::<Actor>().cloned();
    let recorded = if let Some(rejected) = response.extensions().get::<Rejected>() {
        let mut event = state.event(
            actor.unwrap_or(Actor::Anonymous),
            action::REJECT,
            Outcome::Denied,
        );
        event.code = Some(rejected.code.to_owned());
        event.request_id = request_id;
        event.resource = Some(format!("{method} {path}"));
        refusals::record(&state, event, &origin, rejected.code).await
    } else if let Some(actor) =
        actor.filter(|_| method == Method::GET && response.status().is_success())
    {
        let mut event = state.event(actor, action::READ, Outcome::Success);
        event.request_id = request_id;
        event.resource = Some(format!("{method} {path}"));
        state.audit.record(event).await
    } else {
        return response;
    };
    match recorded {
        Ok(()) => response,
        // The client must still learn that its change may have been made: "outcome unknown"
        // is no less true for being unaudited, and any other answer would leave unaudited too.
        Err(_) if refused_with(&response, "store_outcome_unknown") => response,
        Err(e) => e.into_response(),
    }
}

/// Whether `response` is a refusal with `code`.
fn refused_with(response: &Response, code: &str) -> bool {
    response
        .extensions()
        .get::<Rejected>()
        .is_some_and(|rejected| rejected.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn bearer_parsing_is_strict_and_bounded() {
        assert_eq!(bearer(&headers("Bearer abc"), 512), Some("abc"));
        assert_eq!(bearer(&headers("bearer abc"), 512), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc"), 512), None);
        assert_eq!(bearer(&headers("Bearer "), 512), None);
        assert_eq!(bearer(&headers("Bearer abcd"), 3), None);
        assert_eq!(
            bearer(&headers(&format!("Bearer {}", "a".repeat(513))), 512),
            None
        );
        assert_eq!(bearer(&HeaderMap::new(), 512), None);
    }
}
