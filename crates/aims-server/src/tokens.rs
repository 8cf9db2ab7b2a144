//! Task tokens on the server side: verifying what agents present (their JWT-SVID, an access
//! token, a DPoP proof) for the token endpoint and every enforcement point in this server.
//!
//! Offline checks come first (signature, `typ`, issuer, time, audience, proof), then the
//! revocation view of this replica ([`crate::revocation`]), then the registry. Every check
//! fails closed.

use aims_core::agent::Agent;
use aims_core::id::SpiffeId;
use aims_core::scope::ScopeSet;
use aims_token::TokenError;
use aims_token::access::{self, AccessCheck, AccessClaims};
use aims_token::dpop::{self, ProofCheck, VerifiedProof};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use time::OffsetDateTime;

use crate::revocation::RevocationCheck;
use crate::state::AppState;
use aims_token::LEEWAY_S;
use aims_token::svid::{self, SvidCheck, SvidClaims};

/// The DPoP proof header.
pub const DPOP_HEADER: &str = "dpop";

/// How a token was presented in `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: DPoP <token>` with a `DPoP` proof header.
    Dpop,
}

/// The scheme and token of the `Authorization` header, bounded in size.
pub fn authorization(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() || token.len() > aims_token::jws::MAX_TOKEN_LEN {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, token))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((Scheme::Dpop, token))
    } else {
        None
    }
}

/// The one `DPoP` header, if exactly one was sent.
pub fn dpop_header(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut values = headers.get_all(DPOP_HEADER).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one DPoP header");
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| "the DPoP header is not ASCII")
}

/// Verifies a JWT-SVID this server issued, offline: signature by a published key, `typ`,
/// issuer, time, and `aud` = `audience` (any audience with `None`: renewal, where possession of
/// the bound key is proved besides). Whether it is still registered is the caller's to ask.
pub fn verify_svid(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
    now: OffsetDateTime,
) -> Result<SvidClaims, TokenError> {
    let keys = state.keys();
    svid::verify(
        token,
        &SvidCheck {
            issuer: &state.issuer,
            audience,
            now: now.unix_timestamp(),
            leeway_s: LEEWAY_S,
        },
        |header| {
            header
                .kid
                .as_deref()
                .and_then(|kid| keys.verifying.get(kid))
                .ok_or(TokenError::UnknownKey)
        },
    )
}

/// Verifies an access token this server issued, for any audience (AIMS is the issuer),
/// offline: signature by a published key, `typ`, issuer, time. Revocation is not checked.
pub fn verify_access_offline(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<AccessClaims, TokenError> {
    let keys = state.keys();
    access::verify(
        token,
        &AccessCheck {
            issuer: &state.issuer,
            audience: None,
            now: now.unix_timestamp(),
            leeway_s: LEEWAY_S,
        },
        |header| {
            header
                .kid
                .as_deref()
                .and_then(|kid| keys.verifying.get(kid))
                .ok_or(TokenError::UnknownKey)
        },
    )
}

/// [`verify_access_offline`], then the replica's revocation view.
pub fn verify_access(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<AccessClaims, AccessRefusal> {
    let claims = verify_access_offline(state, token, now).map_err(AccessRefusal::Token)?;
    state
        .revocations
        .check(&claims)
        .map_err(AccessRefusal::Revocation)?;
    Ok(claims)
}

/// Why an access token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessRefusal {
    /// It does not verify.
    #[error("{0}")]
    Token(TokenError),
    /// It is revoked, or this replica cannot tell.
    #[error("{0}")]
    Revocation(RevocationCheck),
}

/// The response header carrying this replica's current DPoP nonce (RFC 9449 §9).
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";
/// How long a DPoP nonce stays valid.
pub const DPOP_NONCE_TTL_S: i64 = 300;

/// Whether a proof must carry a nonce this replica handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceRule {
    /// At the token endpoint: proofs are burned store-wide instead.
    NotRequired,
    /// At the enforcement points: the nonce binds the proof to this replica, whose replay
    /// cache then sees every use of it.
    Required,
}

/// Why a DPoP proof was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofRefusal {
    /// It does not verify, is for another request or key, or was used before.
    Invalid(String),
    /// It carries no nonce of this replica's (a fresh one goes with the answer).
    UseNonce,
}

/// Checks a DPoP proof for a request to `path` of this server and burns it in this replica's
/// replay cache. `expected_jkt` is the thumbprint the proof's key must have; `nonce` says
/// whether the proof must carry a nonce this replica minted (and is still fresh). A replay
/// cache is per replica, so without a nonce a proof could be used once at each replica: the
/// nonce confines it to the one that issued it.
#[allow(
    clippy::too_many_arguments,
    reason = "each argument is one part of the check"
)]
pub fn check_proof(
    state: &AppState,
    proof: &str,
    method: &str,
    path: &str,
    access_token: Option<&str>,
    expected_jkt: &str,
    nonce: NonceRule,
    now: OffsetDateTime,
) -> Result<VerifiedProof, ProofRefusal> {
    let url = format!("{}{path}", state.issuer);
    let verified = dpop::verify_proof(
        proof,
        &ProofCheck {
            method,
            url: &url,
            access_token,
            now: now.unix_timestamp(),
        },
    )
    .map_err(|e| ProofRefusal::Invalid(format!("the DPoP proof was refused: {e}")))?;
    if verified.jkt != expected_jkt {
        return Err(ProofRefusal::Invalid(
            "the DPoP proof is not signed by the key the token is bound to".to_owned(),
        ));
    }
    if nonce == NonceRule::Required
        && verified
            .nonce
            .as_deref()
            .is_none_or(|n| state.dpop_nonces.check(n, now.unix_timestamp()).is_err())
    {
        return Err(ProofRefusal::UseNonce);
    }
    if !state.dpop_replay.first_use(&verified, now.unix_timestamp()) {
        return Err(ProofRefusal::Invalid(
            "the DPoP proof was used before".to_owned(),
        ));
    }
    Ok(verified)
}

/// Middleware for the enforcement points: every answer to a request that presents a token
/// with DPoP — accepted or refused, `use_dpop_nonce` included — carries a fresh nonce of this
/// replica in `DPoP-Nonce`, for the client's next proof.
pub async fn offer_dpop_nonce(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let dpop = matches!(authorization(request.headers()), Some((Scheme::Dpop, _)));
    let mut response = next.run(request).await;
    if dpop {
        let expires_at = OffsetDateTime::now_utc().unix_timestamp() + DPOP_NONCE_TTL_S;
        if let Some(nonce) = state
            .dpop_nonces
            .mint(&state.rng, expires_at)
            .ok()
            .and_then(|n| HeaderValue::from_str(&n).ok())
        {
            response.headers_mut().insert(DPOP_NONCE_HEADER, nonce);
        }
    }
    response
}

/// The agent named by a SPIFFE ID of this trust domain, if it is registered.
pub async fn agent_of(
    state: &AppState,
    spiffe_id: &str,
) -> Result<Option<Agent>, aims_store::StoreError> {
    let Ok(id) = SpiffeId::parse(spiffe_id) else {
        return Ok(None);
    };
    if id.trust_domain() != &state.trust_domain {
        return Ok(None);
    }
    state.store.agent(id.agent()).await
}

/// The scopes of a verified access token.
pub fn scopes_of(claims: &AccessClaims) -> Result<ScopeSet, TokenError> {
    ScopeSet::parse(&claims.scope).map_err(|_| TokenError::Claims("scope is malformed"))
}
