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
use axum::http::{HeaderMap, header};
use time::OffsetDateTime;

use crate::revocation::RevocationCheck;
use crate::state::AppState;
use crate::svid::{self, LEEWAY_S, PresentedSvid};

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

/// Verifies a JWT-SVID of this trust domain that is meant for AIMS itself (`aud` = issuer).
pub fn verify_svid(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<PresentedSvid, TokenError> {
    let svid = svid::verify_presented(&state.keys(), &state.issuer, token, now)?;
    if svid.audience != state.issuer {
        return Err(TokenError::Audience);
    }
    Ok(svid)
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

/// Checks a DPoP proof for a request to `path` of this server and burns it in this replica's
/// replay cache. `expected_jkt` is the thumbprint the proof's key must have.
pub fn check_proof(
    state: &AppState,
    proof: &str,
    method: &str,
    path: &str,
    access_token: Option<&str>,
    expected_jkt: &str,
    now: OffsetDateTime,
) -> Result<VerifiedProof, String> {
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
    .map_err(|e| format!("the DPoP proof was refused: {e}"))?;
    if verified.jkt != expected_jkt {
        return Err("the DPoP proof is not signed by the key the token is bound to".to_owned());
    }
    if !state.dpop_replay.first_use(&verified, now.unix_timestamp()) {
        return Err("the DPoP proof was used before".to_owned());
    }
    Ok(verified)
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
