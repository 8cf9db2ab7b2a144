//! Who is calling: operators on the `/v1` admin API, agents at the enforcement points, and
//! request auditing.
//!
//! [`admin_layer`] authenticates the human credential of admin routes (only its SHA-256 is
//! looked up; agent credentials never match) and makes the [`Caller`] available to handlers.
//! [`AuthenticatedAgent`] is the extractor of every enforcement point: the one agent
//! authentication ([`crate::presented::authenticate`]), then the registry.
//! [`audit_layer`], around every `/v1` route, records what handlers do not: refusals
//! (`api.reject`) and operators' successful reads (`api.read`, a credential use). State
//! changes are audited by the handler together with the change. If the audit record cannot be
//! written the caller gets 503 instead of the answer.

use std::marker::PhantomData;
use std::sync::Arc;

use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_core::credential::{CredentialHash, MAX_CREDENTIAL_LEN};
use aims_core::id::{AgentName, ResourceServerName, SpiffeId, TokenId};
use aims_core::scope::ScopeSet;
use aims_core::user::{Access, User};
use aims_store::ResourceServer;
use aims_token::access::AccessClaims;
use aims_token::authn::{self, Authenticated, Refusal, Scheme};
use aims_token::svid::SvidClaims;
use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{ApiError, ErrorCode, Form, Rejected};
use crate::limits;
use crate::presented::{self, DeadSvid};
use crate::refusals::Origin;
use crate::registry::KnownAgent;
use crate::state::AppState;
use time::OffsetDateTime;

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

    /// The audit event of a successful `action` by this operator, naming the request.
    pub fn event(&self, state: &AppState, action: &str) -> AuditEvent {
        state
            .event(self.actor(), action, Outcome::Success)
            .request(self.request_id.clone())
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

/// What an operator route requires of the caller's role.
pub trait Requires {
    /// The access the route needs.
    const ACCESS: Access;
}

/// Reading the registry, keys and audit log.
pub struct ToRead;

/// Changing the registry, users, keys or policies.
pub struct ToAdminister;

impl Requires for ToRead {
    const ACCESS: Access = Access::Read;
}

impl Requires for ToAdminister {
    const ACCESS: Access = Access::Administer;
}

/// The operator behind a request whose role allows what `R` requires: the extractor of the
/// admin routes, so a route states its access in its signature (403 otherwise).
pub struct Allowed<R>(pub Caller, pub PhantomData<R>);

impl<S: Send + Sync, R: Requires> FromRequestParts<S> for Allowed<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(R::ACCESS)?;
        Ok(Self(caller, PhantomData))
    }
}

/// The bearer credential in `Authorization`, if well-formed and at most `max_len` bytes.
pub(crate) fn bearer(headers: &HeaderMap, max_len: usize) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = authn::split_authorization(value)?;
    (scheme.eq_ignore_ascii_case("bearer") && credential.len() <= max_len).then_some(credential)
}

/// The agent behind a request at an enforcement point of this server: a task token (RFC
/// 9068, DPoP-bound unless the agent is allowed bearer, its proof checked with this
/// replica's nonce) or the agent's JWT-SVID as a bearer token, verified, not revoked, and
/// naming a registered agent of this trust domain — or an agent a registered resource server
/// asks about ([`AuthenticatedAgent::vouched_for`]).
#[derive(Debug, Clone)]
pub struct AuthenticatedAgent {
    /// The agent as this replica's registry view holds it: its record, last accepted posture
    /// and principal.
    pub known: Arc<KnownAgent>,
    /// Its SPIFFE ID, as the credential names it.
    pub spiffe_id: SpiffeId,
    /// Who established it.
    pub vouched: Vouched,
    /// The task token, when one was presented (not the SVID).
    pub task: Option<TaskToken>,
}

/// How the agent behind a request was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vouched {
    /// It presented its own credential: the task token's or the SVID's `jti`.
    Itself(TokenId),
    /// A registered resource server (an enforcement point) asks about it, passing the agent's
    /// task token when it holds one.
    ByResourceServer {
        /// The resource server.
        name: ResourceServerName,
        /// The `jti` of the agent's task token it passed.
        token: Option<TokenId>,
    },
}

impl AuthenticatedAgent {
    /// The agent as this replica's registry view holds it.
    pub fn agent(&self) -> &KnownAgent {
        &self.known
    }

    /// The id of the agent's credential behind the request, if one was presented.
    pub fn credential_id(&self) -> Option<&TokenId> {
        match &self.vouched {
            Vouched::Itself(id) => Some(id),
            Vouched::ByResourceServer { token, .. } => token.as_ref(),
        }
    }

    /// Who asks, as an audit actor: the agent, or the resource server asking about it.
    pub fn actor(&self) -> Actor {
        match &self.vouched {
            Vouched::Itself(_) => Actor::Agent {
                spiffe_id: self.spiffe_id.to_string(),
            },
            Vouched::ByResourceServer { name, .. } => Actor::ResourceServer {
                name: name.to_string(),
            },
        }
    }

    /// The agent `subject` (its name or SPIFFE ID) that resource server `server` asks about,
    /// with the agent's task `token` when the server passes it: a token this server issued
    /// for `server`'s audience to that agent, verified and not revoked. The principal is still
    /// the registry's record, never the caller's description.
    pub async fn vouched_for(
        state: &AppState,
        server: &ResourceServer,
        subject: &str,
        token: Option<&str>,
    ) -> Result<Self, ApiError> {
        let unknown = || ApiError::bad_request(ErrorCode::UnknownAgent, "no such agent");
        let spiffe_id = match SpiffeId::parse(subject) {
            Ok(id) => id,
            Err(_) => {
                let name = AgentName::new(subject).map_err(|_| unknown())?;
                SpiffeId::for_agent(state.trust_domain.clone(), name)
            }
        };
        let known = presented::agent_of(state, &spiffe_id)
            .await?
            .ok_or_else(unknown)?;
        let task = match token {
            None => None,
            Some(token) => Some(passed_token(state, server, &spiffe_id, token).await?),
        };
        Ok(Self {
            known,
            spiffe_id,
            vouched: Vouched::ByResourceServer {
                name: server.name.clone(),
                token: task.as_ref().map(|t| t.claims.jti.clone()),
            },
            task,
        })
    }
}

/// A task token a resource server passes for agent `spiffe_id`: issued by this server for the
/// resource server's audience to that agent, not revoked. Its proof of possession was the
/// resource server's to check when the agent presented it.
async fn passed_token(
    state: &AppState,
    server: &ResourceServer,
    spiffe_id: &SpiffeId,
    token: &str,
) -> Result<TaskToken, ApiError> {
    let refused = |why: &str| {
        ApiError::bad_request(
            ErrorCode::InvalidToken,
            format!("the subject's token is refused: {why}"),
        )
    };
    if token.len() > MAX_CREDENTIAL_LEN * 32 {
        return Err(refused("it is too long"));
    }
    let now = OffsetDateTime::now_utc();
    let claims = match presented::verify_access(state, token, now) {
        Ok(claims) => claims,
        Err(presented::AccessRefusal::Stale) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RevocationStateStale,
                "revocation state is stale; refusing",
            ));
        }
        Err(refusal) => return Err(refused(&refusal.to_string())),
    };
    if claims.aud != server.audience {
        return Err(refused("it was issued for another audience"));
    }
    if claims.client_id != spiffe_id.to_string() {
        return Err(refused("it was issued to another agent"));
    }
    if !state
        .issued
        .confirm(
            state.store.as_ref(),
            claims.jti.as_str(),
            now.unix_timestamp(),
        )
        .await?
    {
        return Err(refused("it is revoked or unknown"));
    }
    let scopes = ScopeSet::parse(&claims.scope).map_err(|_| refused("its scope is malformed"))?;
    Ok(TaskToken { claims, scopes })
}

/// A task token presented at an enforcement point, its claims parsed once.
#[derive(Debug, Clone)]
pub struct TaskToken {
    /// The token's claims.
    pub claims: AccessClaims,
    /// Its scopes.
    pub scopes: ScopeSet,
}

impl FromRequestParts<AppState> for AuthenticatedAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Nested routers see the path without their prefix; a proof names the whole URL.
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.path(), |uri| uri.path());
        let url = format!("{}{path}", state.issuer);
        let now = OffsetDateTime::now_utc();
        let presented = presented::presented(&parts.headers, parts.method.as_str(), &url);
        match presented::authenticate(state, &presented, now).map_err(refused)? {
            Authenticated::Identity(svid) => identity_holder(state, svid, now).await,
            Authenticated::Task { claims, scheme } => task_holder(state, claims, scheme).await,
        }
    }
}

/// The agent at an endpoint that acts on its task token (database leases):
/// [`AuthenticatedAgent`], except that a valid JWT-SVID of this issuer presented in a task
/// token's place under the DPoP scheme — which the one core refuses as a malformed task
/// token, `invalid_token` — is refused with `task_token_required`, naming what the endpoint
/// needs. Whether the agent then holds a task token of its own is the handler's to check
/// ([`task_token_required`] for an SVID as a bearer token).
pub struct TaskCaller(pub AuthenticatedAgent);

impl FromRequestParts<AppState> for TaskCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match AuthenticatedAgent::from_request_parts(parts, state).await {
            Ok(agent) => Ok(Self(agent)),
            Err(refused)
                if refused.code == ErrorCode::InvalidToken
                    && presents_svid(state, &parts.headers) =>
            {
                Err(task_token_required())
            }
            Err(refused) => Err(refused),
        }
    }
}

/// Whether the token in `Authorization` (either scheme) is a JWT-SVID this server issued,
/// signature, issuer and time checked.
fn presents_svid(state: &AppState, headers: &HeaderMap) -> bool {
    presented::single_header(headers, header::AUTHORIZATION)
        .and_then(authn::parse_authorization)
        .is_some_and(|(_, token)| {
            presented::verify_svid(state, token, OffsetDateTime::now_utc()).is_ok()
        })
}

/// The refusal of an agent that presented its SVID (or was vouched for by a resource server)
/// where its own task token is needed.
pub fn task_token_required() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::TaskTokenRequired,
        "this is asked with the agent's own task token, not an SVID",
    )
}

/// The answer to a request the one authentication core refused: 401 with the RFC 6750 /
/// RFC 9449 challenge, or 503 when this replica cannot tell whether the token is revoked.
fn refused(refusal: Refusal) -> ApiError {
    let code = ErrorCode::of_refusal(&refusal);
    match refusal {
        Refusal::Stale => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, refusal.to_string()),
        _ => ApiError::new(StatusCode::UNAUTHORIZED, code, refusal.to_string())
            .with_challenge(refusal.challenge()),
    }
}

/// A 401 for a credential that verified but names nothing this registry accepts.
fn unregistered(scheme: Scheme, code: ErrorCode, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
        .with_challenge(authn::challenge(scheme, code.as_str()))
}

/// The holder of a verified JWT-SVID: not revoked (by the revoked set, then, for an SVID this
/// replica has not seen before, by its register), its agent known.
async fn identity_holder(
    state: &AppState,
    svid: SvidClaims,
    now: OffsetDateTime,
) -> Result<AuthenticatedAgent, ApiError> {
    let refused = |message: &str| unregistered(Scheme::Bearer, ErrorCode::InvalidSvid, message);
    presented::require_live_svid(state, &svid, now)
        .await
        .map_err(|dead| match dead {
            DeadSvid::Stale => self::refused(Refusal::Stale),
            DeadSvid::Store(e) => e.into(),
            dead @ (DeadSvid::Revoked | DeadSvid::RevokedOrUnknown) => refused(&dead.to_string()),
        })?;
    let known = presented::agent_of(state, &svid.sub)
        .await?
        .ok_or_else(|| refused("no such agent"))?;
    Ok(AuthenticatedAgent {
        known,
        spiffe_id: svid.sub,
        vouched: Vouched::Itself(svid.jti),
        task: None,
    })
}

/// The holder of a verified task token: a registered agent of this trust domain, with the
/// token's scopes.
async fn task_holder(
    state: &AppState,
    claims: AccessClaims,
    scheme: Scheme,
) -> Result<AuthenticatedAgent, ApiError> {
    let refused = |message| unregistered(scheme, ErrorCode::InvalidToken, message);
    let spiffe_id = SpiffeId::parse(&claims.client_id)
        .map_err(|_| refused("the token's client_id is not a SPIFFE ID"))?;
    let known = presented::agent_of(state, &spiffe_id)
        .await?
        .ok_or_else(|| refused("no such agent"))?;
    let scopes =
        ScopeSet::parse(&claims.scope).map_err(|_| refused("the token's scope is malformed"))?;
    Ok(AuthenticatedAgent {
        known,
        spiffe_id,
        vouched: Vouched::Itself(claims.jti.clone()),
        task: Some(TaskToken { claims, scopes }),
    })
}

/// Who is calling introspection, revocation or the revocation feed.
pub(crate) enum ServiceCaller {
    /// A registered resource server (HTTP Basic with its name and secret).
    ResourceServer(ResourceServer),
    /// An operator (Bearer with a human credential allowed to read).
    Operator(User),
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
    pub(crate) fn rate_limit_key(&self) -> String {
        match self {
            Self::ResourceServer(rs) => format!("resource-server:{}", rs.name),
            Self::Operator(user) => format!("user:{}", user.name),
        }
    }

    /// Whether the caller may see a token for `audience`.
    pub(crate) fn may_see(&self, audience: &str) -> bool {
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
) -> Result<Option<ServiceCaller>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || ApiError::oauth(ErrorCode::InvalidClient, "client authentication failed");
    let value = value.to_str().map_err(|_| invalid())?;
    let (scheme, credential) = authn::split_authorization(value).ok_or_else(invalid)?;
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
            .resource_servers
            .by_credential(state.store.as_ref(), &CredentialHash::of(&secret))
            .await
            .map_err(ApiError::oauth_from_store)?
            .filter(|rs| rs.name.as_str() == name)
            .ok_or_else(invalid)?;
        Ok(Some(ServiceCaller::ResourceServer(server)))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let user = state
            .store
            .user_by_credential(&CredentialHash::of(credential))
            .await
            .map_err(ApiError::oauth_from_store)?
            .filter(|u| u.role.allows(Access::Read))
            .ok_or_else(invalid)?;
        Ok(Some(ServiceCaller::Operator(user)))
    } else {
        Err(invalid())
    }
}

/// Whether the request authenticates with HTTP Basic (a resource server's client credential).
pub(crate) fn is_basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(authn::split_authorization)
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
}

/// The registered resource server authenticating a `/v1` request with HTTP Basic. Any other
/// credential, or none, is a 401 `invalid_client` with a Basic challenge, in the API's error
/// form; a store that cannot be asked is reported as such.
pub(crate) async fn resource_server_caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<ResourceServer, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidClient,
            "authenticate as a registered resource server (HTTP Basic)",
        )
        .with_challenge("Basic realm=\"aims\"".to_owned())
    };
    match service_caller(state, headers).await {
        Ok(Some(ServiceCaller::ResourceServer(server))) => Ok(server),
        Ok(_) => Err(invalid()),
        Err(e) if e.code == ErrorCode::InvalidClient => Err(invalid()),
        Err(e) => Err(e.in_form(Form::Api)),
    }
}

/// One `application/x-www-form-urlencoded` value, decoded (`+` is a space, `%XX` a byte).
/// A value holding `&` decodes to its first part only, which then matches no credential.
pub(crate) fn form_decode(value: &str) -> String {
    form_urlencoded::parse(format!("v={value}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .next()
        .unwrap_or_default()
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
    let caller = match operator(&state, request.headers()).await {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    let actor = caller.actor();
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(actor);
    response
}

/// The operator whose human credential the request presents as its bearer token (only its
/// SHA-256 is looked up): 401 without one that matches.
pub(crate) async fn operator(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(credential) = bearer(headers, MAX_CREDENTIAL_LEN) else {
        return Err(ApiError::unauthenticated());
    };
    let user = state
        .store
        .user_by_credential(&CredentialHash::of(credential))
        .await
        .map_err(ApiError::from_store)?
        .ok_or_else(ApiError::unauthenticated)?;
    Ok(Caller {
        user,
        request_id: request_id(headers),
    })
}

/// Audits what handlers do not record themselves, for every `/v1` route: refusals
/// (`api.reject`, by the authenticated caller or `Anonymous`; an anonymous one bounded by
/// [`AppState::record_refusal`]) and an operator's successful reads (`api.read`, a credential use).
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
        event.code = Some(rejected.code.as_str().to_owned());
        event.request_id = request_id;
        event.resource = Some(format!("{method} {path}"));
        state
            .record_refusal(event, &origin, rejected.code.as_str())
            .await
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
        Err(_) if refused_with(&response, ErrorCode::StoreOutcomeUnknown) => response,
        Err(e) => e.into_response(),
    }
}

/// Whether `response` is a refusal with `code`.
fn refused_with(response: &Response, code: ErrorCode) -> bool {
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
