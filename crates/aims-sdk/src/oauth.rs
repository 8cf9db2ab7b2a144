//! The agent side of task tokens and the client side of the OAuth endpoints: token exchange
//! (RFC 8693), the JWT-bearer grant (RFC 7523), delegation, introspection (RFC 7662),
//! revocation (RFC 7009), the revocation feed, and presenting a token with a DPoP proof
//! (RFC 9449) at the decision endpoint or any resource server.
//!
//! [`TokenClient`] sends one request per call and returns the wire answer; [`TaskToken`] keeps
//! one task's token and re-exchanges it (same task) when less than a fifth of its lifetime is
//! left. Proofs are made with `aims_token::dpop`; this module signs nothing itself and decides
//! nothing — the server grants, narrows and refuses. Credentials never appear in errors or
//! `Debug` output.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aims_api::approvals::ApprovalView;
use aims_api::leases::{
    LeaseGranted, LeaseRequest, LeaseView, RenewLeaseRequest, RevokeLeaseRequest,
};
use aims_api::oauth::{
    GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, INTROSPECTION_PATH, REVOCATION_PATH, RevocationPage,
    TOKEN_PATH, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TokenResponse,
};
use aims_api::{DecideRequest, DecisionView};
use aims_core::id::{ApprovalId, ResourceServerName};
use aims_core::scope::ScopeSet;
use aims_token::agent_key::AgentKey;
use aims_token::dpop;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder};
use ring::rand::SystemRandom;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::SdkError;
use crate::approval::{self, WaitedDecision};
use crate::attest::SvidSource;
use crate::http::{
    decode, http_client, parse_base_url, receive, receive_oauth, receive_oauth_empty,
};

/// The header that carries a DPoP proof.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The header a server hands out DPoP nonces in (RFC 9449 §8–9).
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");
/// Path of the decision endpoint.
pub const DECISIONS_PATH: &str = "/v1/decisions";
/// Path of the revocation feed.
pub const REVOCATIONS_PATH: &str = "/v1/revocations";
/// Path of the JWKS document.
pub use aims_api::oauth::JWKS_PATH;
/// A [`TaskToken`] is exchanged again once less than `1 / REFRESH_FRACTION` of its lifetime
/// remains.
pub const REFRESH_FRACTION: i64 = 5;

/// How a token is tied to its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Binding {
    /// Sender-constrained (RFC 9449): every use carries a proof signed by the holder's key.
    #[default]
    Dpop,
    /// A plain bearer token, only for agents the operator explicitly allowed it (legacy).
    Bearer,
}

impl Binding {
    /// The `token_type` of a token response (`DPoP` or `Bearer`, any case), if it is one.
    pub fn from_token_type(token_type: &str) -> Option<Self> {
        if token_type.eq_ignore_ascii_case("DPoP") {
            Some(Self::Dpop)
        } else if token_type.eq_ignore_ascii_case("Bearer") {
            Some(Self::Bearer)
        } else {
            None
        }
    }

    /// The `Authorization` scheme: `DPoP` or `Bearer`.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Dpop => "DPoP",
            Self::Bearer => "Bearer",
        }
    }
}

/// Which grant obtains a task token from the agent's SVID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grant {
    /// RFC 8693 token exchange with the SVID as `subject_token`.
    #[default]
    TokenExchange,
    /// RFC 7523 JWT bearer with the SVID as `assertion`.
    JwtBearer,
}

/// What an agent asks for when it starts (or continues) a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// The scopes asked for (`<action>:<resource>`); the server may grant fewer.
    pub scope: ScopeSet,
    /// The audience URI of the resource server the token is for.
    pub audience: String,
    /// The task's declared intent: required for a new task; for an existing one it may be
    /// left empty (not sent) and must otherwise match.
    pub intent: String,
    /// An existing task to issue the token for; `None` starts a new one.
    pub task_id: Option<String>,
    /// Requested lifetime, seconds; the server grants at most its own limits.
    pub expires_in: Option<u64>,
}

/// What agent A asks for when it hands part of its task to agent B.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelegationRequest {
    /// Scopes for B, within A's; `None` asks for all of A's.
    pub scope: Option<ScopeSet>,
    /// The audience, which must equal A's; `None` keeps A's.
    pub audience: Option<String>,
    /// Requested lifetime, seconds; never beyond A's token.
    pub expires_in: Option<u64>,
}

/// The two headers that present a token: `Authorization` and, for DPoP, the proof. Both are
/// marked sensitive so HTTP stacks do not log them; `Debug` shows neither.
#[derive(Clone)]
pub struct AuthHeaders {
    /// `DPoP <token>` or `Bearer <token>`.
    pub authorization: HeaderValue,
    /// The `DPoP` proof header, for DPoP-bound tokens.
    pub dpop: Option<HeaderValue>,
}

impl AuthHeaders {
    /// Adds the headers to a request.
    pub fn apply(self, builder: RequestBuilder) -> RequestBuilder {
        let builder = builder.header(AUTHORIZATION, self.authorization);
        match self.dpop {
            Some(proof) => builder.header(DPOP, proof),
            None => builder,
        }
    }
}

impl fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeaders")
            .field("authorization", &"<redacted>")
            .field("dpop", &self.dpop.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A client of one AIMS server's OAuth endpoints, revocation feed and decision endpoint.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    /// The base URL without a trailing slash.
    base: String,
    binding: Binding,
    rng: SystemRandom,
    /// The last `DPoP-Nonce` the server handed out (RFC 9449 §9), put in every proof for it.
    /// Shared by clones: they talk to the same server.
    nonce: Arc<std::sync::Mutex<Option<String>>>,
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("base_url", &self.base)
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

impl TokenClient {
    /// A client of the server at `base_url` (`http://` or `https://`, a trailing slash is
    /// fine) that asks for DPoP-bound tokens.
    pub fn new(base_url: &str) -> Result<Self, SdkError> {
        Ok(Self {
            http: http_client()?,
            base: parse_base_url(base_url)?,
            binding: Binding::default(),
            rng: SystemRandom::new(),
            nonce: Arc::default(),
        })
    }

    /// The same client asking for (and presenting) tokens with `binding`. [`Binding::Bearer`]
    /// sends no DPoP proofs; the server then issues bearer tokens only to agents allowed them.
    #[must_use]
    pub fn with_binding(mut self, binding: Binding) -> Self {
        self.binding = binding;
        self
    }

    /// How this client asks for and presents tokens.
    pub fn binding(&self) -> Binding {
        self.binding
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The absolute URL of `path` on this server (what a DPoP proof's `htu` names).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    // --- grants -------------------------------------------------------------------------

    /// Token exchange (RFC 8693): the agent's `svid` for a task token, with a DPoP proof
    /// signed by `key` unless the client is in bearer mode.
    pub async fn exchange(
        &self,
        svid: &str,
        key: &AgentKey,
        request: &ExchangeRequest,
    ) -> Result<TokenResponse, SdkError> {
        let mut form = vec![
            ("grant_type", GRANT_TOKEN_EXCHANGE.to_owned()),
            ("subject_token", credential("SVID", svid)?.to_owned()),
            ("subject_token_type", TOKEN_TYPE_JWT.to_owned()),
        ];
        form.extend(task_fields(request)?);
        self.grant(key, &form, Some(self.binding)).await
    }

    /// The JWT-bearer grant (RFC 7523): the agent's `svid` as the assertion, otherwise as
    /// [`TokenClient::exchange`].
    pub async fn jwt_bearer(
        &self,
        svid: &str,
        key: &AgentKey,
        request: &ExchangeRequest,
    ) -> Result<TokenResponse, SdkError> {
        let mut form = vec![
            ("grant_type", GRANT_JWT_BEARER.to_owned()),
            ("assertion", credential("SVID", svid)?.to_owned()),
        ];
        form.extend(task_fields(request)?);
        self.grant(key, &form, Some(self.binding)).await
    }

    /// Either grant, as `grant` says.
    pub async fn obtain(
        &self,
        grant: Grant,
        svid: &str,
        key: &AgentKey,
        request: &ExchangeRequest,
    ) -> Result<TokenResponse, SdkError> {
        match grant {
            Grant::TokenExchange => self.exchange(svid, key, request).await,
            Grant::JwtBearer => self.jwt_bearer(svid, key, request).await,
        }
    }

    /// Delegation (RFC 8693 with an actor): agent A trades its own access token for a token
    /// of agent B (`actor_svid`), within A's scope and lifetime. The proof is signed with A's
    /// `key`; the new token is bound to B's key and is B's to present.
    pub async fn delegate(
        &self,
        subject_access_token: &str,
        key: &AgentKey,
        actor_svid: &str,
        request: &DelegationRequest,
    ) -> Result<TokenResponse, SdkError> {
        let mut form = vec![
            ("grant_type", GRANT_TOKEN_EXCHANGE.to_owned()),
            (
                "subject_token",
                credential("access token", subject_access_token)?.to_owned(),
            ),
            ("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN.to_owned()),
            (
                "actor_token",
                credential("actor SVID", actor_svid)?.to_owned(),
            ),
            ("actor_token_type", TOKEN_TYPE_JWT.to_owned()),
        ];
        if let Some(scope) = &request.scope {
            form.push(("scope", scope_field(scope)?));
        }
        if let Some(audience) = &request.audience {
            form.push(("audience", audience.clone()));
        }
        if let Some(expires_in) = request.expires_in {
            form.push(("expires_in", expires_in.to_string()));
        }
        // B's token type depends on B's registration, not on how A presents its own.
        self.grant(key, &form, None).await
    }

    /// Posts a grant to the token endpoint and checks the answer's token type: `expect` is
    /// the binding the answer must have, `None` for any known one.
    async fn grant(
        &self,
        key: &AgentKey,
        form: &[(&str, String)],
        expect: Option<Binding>,
    ) -> Result<TokenResponse, SdkError> {
        let url = self.url(TOKEN_PATH);
        let mut builder = self.http.post(&url).form(form);
        if self.binding == Binding::Dpop {
            builder = builder.header(DPOP, self.proof(key, "POST", &url, None)?);
        }
        let response: TokenResponse = receive_oauth(builder).await?;
        match Binding::from_token_type(&response.token_type) {
            Some(got) if expect.is_none_or(|want| want == got) => Ok(response),
            _ => Err(SdkError::Decode(format!(
                "the server issued a token of type {:?}, expected {}",
                response.token_type,
                expect.map_or("DPoP or Bearer", Binding::scheme)
            ))),
        }
    }

    // --- resource-server side -----------------------------------------------------------

    /// Introspection (RFC 7662) as the resource server `client_name`: the token's claims with
    /// `"active": true`, or exactly `{"active": false}`.
    pub async fn introspect(
        &self,
        client_name: &ResourceServerName,
        client_secret: &str,
        token: &str,
    ) -> Result<serde_json::Value, SdkError> {
        let builder = self
            .http
            .post(self.url(INTROSPECTION_PATH))
            .form(&[("token", credential("token", token)?)]);
        let builder = with_basic(builder, client_name, client_secret)?;
        receive_oauth(builder).await
    }

    /// Revocation (RFC 7009): ends `token` (an access token); the server answers success even
    /// for a token it does not know. `client` authenticates a resource server, if given.
    pub async fn revoke(
        &self,
        token: &str,
        client: Option<(&ResourceServerName, &str)>,
    ) -> Result<(), SdkError> {
        let mut builder = self.http.post(self.url(REVOCATION_PATH)).form(&[
            ("token", credential("token", token)?),
            ("token_type_hint", "access_token"),
        ]);
        if let Some((name, secret)) = client {
            builder = with_basic(builder, name, secret)?;
        }
        receive_oauth_empty(builder).await
    }

    /// One page of the revocation feed after position `since`, as the resource server
    /// `client_name`. Continue with `since = page.next`.
    pub async fn revocations(
        &self,
        since: u64,
        limit: Option<u32>,
        client_name: &ResourceServerName,
        client_secret: &str,
    ) -> Result<RevocationPage, SdkError> {
        let mut query = vec![("since", since.to_string())];
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let builder = self.http.get(self.url(REVOCATIONS_PATH)).query(&query);
        let builder = with_basic(builder, client_name, client_secret)?;
        receive(builder).await
    }

    /// `GET /.well-known/jwks.json`: the keys that verify access tokens.
    pub async fn jwks(&self) -> Result<serde_json::Value, SdkError> {
        receive(self.http.get(self.url(JWKS_PATH))).await
    }

    // --- presenting tokens --------------------------------------------------------------

    /// `POST /v1/decisions` with a task token: asks whether the call in `request` is allowed.
    /// The token is presented as this client's binding says (with a fresh proof signed by
    /// `key` for DPoP). A deny is an answer, not an error.
    pub async fn authorize(
        &self,
        access_token: &str,
        key: &AgentKey,
        request: &DecideRequest,
    ) -> Result<DecisionView, SdkError> {
        self.authorize_as(self.binding, access_token, key, request)
            .await
    }

    /// [`TokenClient::authorize`] with the token presented as `binding`.
    pub async fn authorize_as(
        &self,
        binding: Binding,
        access_token: &str,
        key: &AgentKey,
        request: &DecideRequest,
    ) -> Result<DecisionView, SdkError> {
        let url = self.url(DECISIONS_PATH);
        self.present(
            binding,
            access_token,
            key,
            Method::POST,
            &url,
            &[],
            Some(request),
        )
        .await
    }

    /// `POST /v1/leases` with a task token: a short-lived database role for this task, if
    /// the policies allow it. The answer holds the password, shown this once.
    pub async fn lease(
        &self,
        access_token: &str,
        key: &AgentKey,
        request: &LeaseRequest,
    ) -> Result<LeaseGranted, SdkError> {
        self.post_task(access_token, key, "/v1/leases", request)
            .await
    }

    /// `POST /v1/leases/{id}/renew` with the task token the lease was asked with.
    pub async fn renew_lease(
        &self,
        access_token: &str,
        key: &AgentKey,
        id: &str,
        request: &RenewLeaseRequest,
    ) -> Result<LeaseView, SdkError> {
        self.post_task(
            access_token,
            key,
            &crate::http::lease_path(id, "/renew")?,
            request,
        )
        .await
    }

    /// `POST /v1/leases/{id}/revoke` with the task token the lease was asked with: the agent
    /// gives its lease up; the server then terminates its sessions and drops its role.
    pub async fn revoke_lease(
        &self,
        access_token: &str,
        key: &AgentKey,
        id: &str,
        request: &RevokeLeaseRequest,
    ) -> Result<LeaseView, SdkError> {
        self.post_task(
            access_token,
            key,
            &crate::http::lease_path(id, "/revoke")?,
            request,
        )
        .await
    }

    /// `GET /v1/approvals/{id}?wait=…` with a task token: the approval request this agent's
    /// call opened, after the server held the answer up to `wait_s` seconds (at most 60)
    /// for a human to answer it.
    pub async fn approval(
        &self,
        binding: Binding,
        access_token: &str,
        key: &AgentKey,
        id: &ApprovalId,
        wait_s: u64,
    ) -> Result<ApprovalView, SdkError> {
        let url = self.url(&approval::approval_path(id));
        let wait = [("wait", wait_s.to_string())];
        self.present::<(), _>(binding, access_token, key, Method::GET, &url, &wait, None)
            .await
    }

    /// Asks about the call in `request` and, when it needs a human's approval, waits up to
    /// `max_wait` for the answer (long-polling, CIBA-style) and asks again once approved: the
    /// approval covers that exact call, so the answer is then `allow`.
    pub async fn decide_or_wait(
        &self,
        access_token: &str,
        key: &AgentKey,
        request: &DecideRequest,
        max_wait: Duration,
    ) -> Result<WaitedDecision, SdkError> {
        approval::decide_or_wait(
            || self.authorize(access_token, key, request),
            |id, wait_s| async move {
                self.approval(self.binding, access_token, key, &id, wait_s)
                    .await
            },
            max_wait,
        )
        .await
    }

    /// `POST path` with `request`, presenting the task token (bound to `key`) as this
    /// client's binding says.
    async fn post_task<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        access_token: &str,
        key: &AgentKey,
        path: &str,
        request: &B,
    ) -> Result<T, SdkError> {
        let url = self.url(path);
        self.present(
            self.binding,
            access_token,
            key,
            Method::POST,
            &url,
            &[],
            Some(request),
        )
        .await
    }

    /// Sends `method url` (with `query`, and `body` as JSON) presenting `access_token` as
    /// `binding`, and decodes the answer.
    #[allow(clippy::too_many_arguments, reason = "one request, spelled out")]
    async fn present<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        binding: Binding,
        access_token: &str,
        key: &AgentKey,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, SdkError> {
        let send = || -> Result<_, SdkError> {
            let headers = self.headers(binding, access_token, key, method.as_str(), url)?;
            let mut builder = headers
                .apply(self.http.request(method.clone(), url))
                .query(query);
            if let Some(body) = body {
                builder = builder.json(body);
            }
            Ok(builder.send())
        };
        let response = send()?.await.map_err(|e| SdkError::transport(&e))?;
        // The server binds proofs to itself with a nonce: the first proof without its current
        // one is answered `use_dpop_nonce` with the nonce, and sent again once with it.
        let response = if self.take_nonce(&response) {
            send()?.await.map_err(|e| SdkError::transport(&e))?
        } else {
            response
        };
        self.take_nonce(&response);
        decode(response).await
    }

    /// Remembers the `DPoP-Nonce` of an answer of this server; returns whether the answer
    /// asked for a proof with it (401 `use_dpop_nonce`).
    fn take_nonce(&self, response: &reqwest::Response) -> bool {
        let Some(nonce) = response
            .headers()
            .get(DPOP_NONCE)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        *self.nonce.lock().unwrap_or_else(|p| p.into_inner()) = Some(nonce.to_owned());
        response.status() == reqwest::StatusCode::UNAUTHORIZED
            && response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|challenge| challenge.contains("use_dpop_nonce"))
    }

    /// The headers that present `access_token` on a request `method url` to any resource
    /// server: `Authorization: DPoP` with a fresh proof signed by `key` (bound to the token by
    /// `ath`), or `Authorization: Bearer`. `url` is the full URL the request goes to.
    pub fn headers(
        &self,
        binding: Binding,
        access_token: &str,
        key: &AgentKey,
        method: &str,
        url: &str,
    ) -> Result<AuthHeaders, SdkError> {
        let token = credential("access token", access_token)?;
        let mut authorization = HeaderValue::from_str(&format!("{} {token}", binding.scheme()))
            .map_err(|_| SdkError::InvalidCredential {
                what: "access token",
            })?;
        authorization.set_sensitive(true);
        let dpop = match binding {
            Binding::Dpop => Some(self.proof(key, method, url, Some(token))?),
            Binding::Bearer => None,
        };
        Ok(AuthHeaders {
            authorization,
            dpop,
        })
    }

    /// A DPoP proof for `method url` signed by `key`, as a sensitive header value; it carries
    /// this server's last nonce when `url` is on this server.
    fn proof(
        &self,
        key: &AgentKey,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, SdkError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let nonce = url
            .strip_prefix(self.base.as_str())
            .is_some_and(|path| path.starts_with('/'))
            .then(|| self.nonce.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .flatten();
        let proof = dpop::sign_proof_with_nonce(
            key,
            &self.rng,
            method,
            url,
            access_token,
            nonce.as_deref(),
            now,
        )
        .map_err(|e| SdkError::Signing(e.to_string()))?;
        let mut value = HeaderValue::from_str(&proof)
            .map_err(|_| SdkError::Signing("proof encoding".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Checks that a credential can travel in a header or form field (non-empty, visible ASCII)
/// and returns it trimmed of surrounding whitespace.
pub(crate) fn credential<'a>(what: &'static str, value: &'a str) -> Result<&'a str, SdkError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SdkError::InvalidCredential { what });
    }
    Ok(value)
}

/// The form fields shared by both grants.
fn task_fields(request: &ExchangeRequest) -> Result<Vec<(&'static str, String)>, SdkError> {
    if request.audience.trim().is_empty() {
        return Err(SdkError::InvalidRequest("the audience is empty".into()));
    }
    let mut form = vec![
        ("scope", scope_field(&request.scope)?),
        ("audience", request.audience.clone()),
    ];
    // A new task needs its intent; an existing task has one, which a resent one must match.
    if !request.intent.is_empty() {
        form.push(("intent", request.intent.clone()));
    }
    if let Some(task_id) = &request.task_id {
        form.push(("task_id", task_id.clone()));
    }
    if let Some(expires_in) = request.expires_in {
        form.push(("expires_in", expires_in.to_string()));
    }
    Ok(form)
}

fn scope_field(scope: &ScopeSet) -> Result<String, SdkError> {
    if scope.is_empty() {
        return Err(SdkError::InvalidRequest("no scope was asked for".into()));
    }
    Ok(scope.to_string())
}

/// Adds `Authorization: Basic base64(urlencode(name) ":" urlencode(secret))`, as RFC 6749
/// §2.3.1 says clients authenticate (reqwest marks the header sensitive).
pub(crate) fn with_basic(
    builder: RequestBuilder,
    name: &ResourceServerName,
    secret: &str,
) -> Result<RequestBuilder, SdkError> {
    let secret = credential("client secret", secret)?;
    Ok(builder.basic_auth(form_urlencode(name.as_str()), Some(form_urlencode(secret))))
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

// --- task tokens -------------------------------------------------------------------------

/// Where a [`TaskToken`] gets the agent's current SVID each time it exchanges.
pub trait SvidProvider: Send + Sync {
    /// The current SVID, or `None` when there is none (renewal stopped).
    fn current_svid(&self) -> Option<String>;
}

impl SvidProvider for SvidSource {
    fn current_svid(&self) -> Option<String> {
        self.svid()
    }
}

/// A fixed SVID (for short-lived processes and tests).
impl SvidProvider for String {
    fn current_svid(&self) -> Option<String> {
        Some(self.clone())
    }
}

/// One task's token, re-exchanged for the same task when less than a fifth of its lifetime
/// remains. Cheap to clone; clones share the token, and concurrent callers wait for one
/// exchange rather than each making their own.
#[derive(Clone)]
pub struct TaskToken {
    inner: Arc<TaskInner>,
}

struct TaskInner {
    client: TokenClient,
    key: Arc<AgentKey>,
    svid: Box<dyn SvidProvider>,
    grant: Grant,
    /// The request, with `task_id` set to the task the first answer named.
    request: ExchangeRequest,
    task_id: String,
    current: Mutex<Issued>,
}

/// The token in hand.
#[derive(Clone)]
struct Issued {
    response: TokenResponse,
    binding: Binding,
    /// Unix seconds, by the local clock.
    issued_at: i64,
    expires_at: i64,
}

impl Issued {
    fn new(response: TokenResponse, now: i64) -> Result<Self, SdkError> {
        let binding = Binding::from_token_type(&response.token_type).ok_or_else(|| {
            SdkError::Decode(format!("unknown token_type {:?}", response.token_type))
        })?;
        let lifetime = i64::try_from(response.expires_in).unwrap_or(i64::MAX);
        Ok(Self {
            binding,
            issued_at: now,
            expires_at: now.saturating_add(lifetime),
            response,
        })
    }
}

impl fmt::Debug for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskToken")
            .field("task_id", &self.inner.task_id)
            .field("grant", &self.inner.grant)
            .finish_non_exhaustive()
    }
}

/// Whether a token issued at `issued_at` and expiring at `expires_at` should be exchanged
/// again at `now`: when less than `1 / REFRESH_FRACTION` of its lifetime remains.
pub fn needs_refresh(issued_at: i64, expires_at: i64, now: i64) -> bool {
    let lifetime = expires_at.saturating_sub(issued_at);
    let remaining = expires_at.saturating_sub(now);
    remaining.saturating_mul(REFRESH_FRACTION) < lifetime || remaining <= 0
}

impl TaskToken {
    /// Obtains the first token with `grant` (starting a task when `request.task_id` is
    /// `None`) and keeps it fresh from then on, always for the task the server named.
    pub async fn start(
        client: TokenClient,
        key: Arc<AgentKey>,
        svid: impl SvidProvider + 'static,
        grant: Grant,
        request: ExchangeRequest,
    ) -> Result<Self, SdkError> {
        let current_svid = svid
            .current_svid()
            .ok_or(SdkError::InvalidCredential { what: "SVID" })?;
        let response = client.obtain(grant, &current_svid, &key, &request).await?;
        if let Some(asked) = &request.task_id
            && asked.as_str() != response.task_id.as_str()
        {
            return Err(SdkError::Decode(
                "the server issued a token for another task than asked".into(),
            ));
        }
        let task_id = response.task_id.to_string();
        let issued = Issued::new(response, unix_now())?;
        let request = ExchangeRequest {
            task_id: Some(task_id.clone()),
            ..request
        };
        Ok(Self {
            inner: Arc::new(TaskInner {
                client,
                key,
                svid: Box::new(svid),
                grant,
                request,
                task_id,
                current: Mutex::new(issued),
            }),
        })
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.inner.task_id
    }

    /// The task's declared intent.
    pub fn intent(&self) -> &str {
        &self.inner.request.intent
    }

    /// The current token response, exchanged again first if it is due.
    pub async fn current(&self) -> Result<TokenResponse, SdkError> {
        Ok(self.fresh().await?.response)
    }

    /// The current access token, exchanged again first if it is due.
    pub async fn access_token(&self) -> Result<String, SdkError> {
        Ok(self.fresh().await?.response.access_token)
    }

    /// Exchanges again now, whatever the lifetime left.
    pub async fn refresh(&self) -> Result<TokenResponse, SdkError> {
        let mut current = self.inner.current.lock().await;
        *current = self.exchange_again().await?;
        Ok(current.response.clone())
    }

    /// The headers that present the current token on `method url` (see
    /// [`TokenClient::headers`]).
    pub async fn headers(&self, method: &str, url: &str) -> Result<AuthHeaders, SdkError> {
        let issued = self.fresh().await?;
        self.inner.client.headers(
            issued.binding,
            &issued.response.access_token,
            &self.inner.key,
            method,
            url,
        )
    }

    /// Asks the decision endpoint about one call of this task. Empty `task_id` and `intent`
    /// in `request` are filled with this task's.
    pub async fn authorize(&self, request: &DecideRequest) -> Result<DecisionView, SdkError> {
        let issued = self.fresh().await?;
        let mut request = request.clone();
        if request.task_id.is_empty() {
            request.task_id.clone_from(&self.inner.task_id);
        }
        if request.intent.is_empty() {
            request.intent.clone_from(&self.inner.request.intent);
        }
        self.inner
            .client
            .authorize_as(
                issued.binding,
                &issued.response.access_token,
                &self.inner.key,
                &request,
            )
            .await
    }

    /// [`TokenClient::decide_or_wait`] for one call of this task, its token kept fresh.
    /// Empty `task_id` and `intent` in `request` are filled with this task's.
    pub async fn decide_or_wait(
        &self,
        request: &DecideRequest,
        max_wait: Duration,
    ) -> Result<WaitedDecision, SdkError> {
        approval::decide_or_wait(
            || self.authorize(request),
            |id, wait_s| async move {
                let issued = self.fresh().await?;
                self.inner
                    .client
                    .approval(
                        issued.binding,
                        &issued.response.access_token,
                        &self.inner.key,
                        &id,
                        wait_s,
                    )
                    .await
            },
            max_wait,
        )
        .await
    }

    /// Asks for a database lease for this task with the current token (the lease's parent:
    /// revoking that token, the task or the agent ends the lease).
    pub async fn lease(&self, request: &LeaseRequest) -> Result<LeaseGranted, SdkError> {
        let issued = self.fresh().await?;
        let url = self.inner.client.url("/v1/leases");
        self.inner
            .client
            .present(
                issued.binding,
                &issued.response.access_token,
                &self.inner.key,
                Method::POST,
                &url,
                &[],
                Some(request),
            )
            .await
    }

    /// Hands part of this task to the agent whose SVID is `actor_svid`: returns B's token.
    pub async fn delegate(
        &self,
        actor_svid: &str,
        request: &DelegationRequest,
    ) -> Result<TokenResponse, SdkError> {
        let issued = self.fresh().await?;
        self.inner
            .client
            .delegate(
                &issued.response.access_token,
                &self.inner.key,
                actor_svid,
                request,
            )
            .await
    }

    /// Revokes the current token (and, on the server, everything derived from it). The task
    /// itself stays open; a later call exchanges a new token for it.
    pub async fn revoke(&self) -> Result<(), SdkError> {
        let mut current = self.inner.current.lock().await;
        self.inner
            .client
            .revoke(&current.response.access_token, None)
            .await?;
        // Make the next use exchange again instead of presenting a revoked token.
        current.expires_at = current.issued_at;
        Ok(())
    }

    /// The token in hand, exchanged again first when due. Holding the lock across the
    /// exchange makes concurrent callers share one exchange.
    async fn fresh(&self) -> Result<Issued, SdkError> {
        let mut current = self.inner.current.lock().await;
        if needs_refresh(current.issued_at, current.expires_at, unix_now()) {
            *current = self.exchange_again().await?;
        }
        Ok(current.clone())
    }

    async fn exchange_again(&self) -> Result<Issued, SdkError> {
        let inner = &self.inner;
        let svid = inner
            .svid
            .current_svid()
            .ok_or(SdkError::InvalidCredential { what: "SVID" })?;
        let response = inner
            .client
            .obtain(inner.grant, &svid, &inner.key, &inner.request)
            .await?;
        if response.task_id.as_str() != inner.task_id {
            return Err(SdkError::Decode(
                "the server issued a token for another task than asked".into(),
            ));
        }
        Issued::new(response, unix_now())
    }
}

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
