//! Operator authentication and request auditing for the `/v1` admin API.
//!
//! The [`admin_layer`] middleware authenticates the human credential (only its SHA-256 is
//! looked up; agent credentials never match), makes the [`Caller`] available to handlers, and
//! after the handler ran records what the handler did not: refusals (`api.reject`) and
//! successful reads (`api.read`, a credential use). State changes are audited by the handler
//! together with the change. If the audit record cannot be written the caller gets 503
//! instead of the answer.

use aims_core::audit::{Actor, Outcome, action};
use aims_core::credential::{CredentialHash, MAX_CREDENTIAL_LEN};
use aims_core::user::{Access, User};
use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Rejected};
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

/// The bearer credential in `Authorization`, if well-formed and bounded.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer")
        && !credential.is_empty()
        && credential.len() <= MAX_CREDENTIAL_LEN)
        .then_some(credential)
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect())
}

/// Authenticates, runs the handler, and audits refusals and reads.
pub async fn admin_layer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    // Nested routers see the path without their prefix; audit the path the caller sent.
    let path = request.extensions().get::<OriginalUri>().map_or_else(
        || request.uri().path().to_owned(),
        |uri| uri.path().to_owned(),
    );
    let request_id = request_id(request.headers());

    let user = match bearer(request.headers()) {
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
        let refusal = ApiError::unauthenticated();
        return audit_refusal(
            &state,
            Actor::Anonymous,
            request_id,
            &method,
            &path,
            refusal.code,
        )
        .await
        .map_or_else(IntoResponse::into_response, |()| refusal.into_response());
    };
    let caller = Caller {
        user,
        request_id: request_id.clone(),
    };
    let actor = caller.actor();
    request.extensions_mut().insert(caller);

    let response = next.run(request).await;
    let recorded = if let Some(rejected) = response.extensions().get::<Rejected>() {
        audit_refusal(&state, actor, request_id, &method, &path, rejected.code).await
    } else if method == Method::GET && response.status().is_success() {
        let mut event = state.event(actor, action::READ, Outcome::Success);
        event.request_id = request_id;
        event.resource = Some(format!("GET {path}"));
        state.audit.record(event).await
    } else {
        Ok(())
    };
    match recorded {
        Ok(()) => response,
        Err(e) => e.into_response(),
    }
}

async fn audit_refusal(
    state: &AppState,
    actor: Actor,
    request_id: Option<String>,
    method: &Method,
    path: &str,
    code: &str,
) -> Result<(), ApiError> {
    let mut event = state.event(actor, action::REJECT, Outcome::Denied);
    event.request_id = request_id;
    event.resource = Some(format!("{method} {path}"));
    event.code = Some(code.to_owned());
    state.audit.record(event).await
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
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(
            bearer(&headers(&format!("Bearer {}", "a".repeat(513)))),
            None
        );
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
