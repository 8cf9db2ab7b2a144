//! What agents present to this server, checked with the server's trust material: the one
//! [`aims_token::authn`] core under this replica's keys, revoked set, DPoP replay cache and
//! nonce key ([`authenticate`], behind [`crate::auth::AuthenticatedAgent`]), and the single
//! checks the token endpoint, introspection, revocation and renewal make of a JWT-SVID or an
//! access token on its own.
//!
//! Offline checks come first (signature, `typ`, issuer, time, audience, proof), then the
//! revocation view of this replica ([`crate::revocation`]), then the registry. Every check
//! fails closed.

use std::sync::Arc;

use aims_core::id::SpiffeId;
use aims_token::access::AccessClaims;
use aims_token::authn::{self, Authenticated, Presented, Refusal, Rules, Scheme};
use aims_token::dpop::{ProofCheck, VerifiedProof};
use aims_token::issued::IssuedCheck;
use aims_token::svid::{self, SvidClaims};
use aims_token::{LEEWAY_S, TokenError};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::registry::KnownAgent;
use crate::state::AppState;

/// The DPoP proof header.
pub const DPOP_HEADER: &str = "dpop";
/// The response header carrying this replica's current DPoP nonce (RFC 9449 §9).
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";
/// How long a DPoP nonce stays valid.
pub const DPOP_NONCE_TTL_S: i64 = 300;

/// The value of header `name`, when exactly one was sent and it is text.
pub fn single_header(headers: &HeaderMap, name: impl AsRef<str>) -> Option<&str> {
    let mut values = headers.get_all(name.as_ref()).iter();
    let value = values.next()?.to_str().ok()?;
    values.next().is_none().then_some(value)
}

/// The `DPoP` proof header of a request to the token endpoint, if one was sent; an error
/// names what is wrong with it.
pub fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
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

/// The parts of a request to `path` of this server that authenticate it.
pub fn presented<'a>(headers: &'a HeaderMap, method: &'a str, url: &'a str) -> Presented<'a> {
    Presented {
        authorization: single_header(headers, header::AUTHORIZATION),
        proof: single_header(headers, DPOP_HEADER),
        method,
        url,
    }
}

/// Authenticates the agent behind a request to one of this server's enforcement points with
/// the one core ([`authn::authenticate`]): a task token for any audience (this server issued
/// it) or the agent's JWT-SVID for this issuer; a proof must carry this replica's nonce.
pub fn authenticate(
    state: &AppState,
    presented: &Presented<'_>,
    now: OffsetDateTime,
) -> Result<Authenticated, Refusal> {
    let keys = state.keys();
    let lookup = |kid: &str| keys.verifying.get(kid);
    state.revocations.with_view(|revoked| {
        authn::authenticate(
            presented,
            &Rules {
                issuer: &state.issuer,
                keys: &lookup,
                task_audience: None,
                svid_audience: Some(&state.issuer),
                revoked,
                replay: &state.dpop_replay,
                verified: Some(&state.verified_tokens),
                nonces: Some(&state.dpop_nonces),
                now: now.unix_timestamp(),
            },
        )
    })
}

/// Checks the DPoP proof sent to the token endpoint at `path`: signed by the key with
/// thumbprint `jkt`, for no access token, burned in this replica's replay cache (the store
/// burns it for every replica when the token is issued), no nonce required.
pub fn check_token_request_proof(
    state: &AppState,
    proof: &str,
    path: &str,
    jkt: &str,
    now: OffsetDateTime,
) -> Result<VerifiedProof, Refusal> {
    let keys = |_: &str| None::<&aims_token::jws::VerifyingKey>;
    let url = format!("{}{path}", state.issuer);
    let check = ProofCheck {
        method: "POST",
        url: &url,
        access_token: None,
        now: now.unix_timestamp(),
    };
    let rules = Rules {
        issuer: &state.issuer,
        keys: &keys,
        task_audience: None,
        svid_audience: None,
        revoked: None,
        replay: &state.dpop_replay,
        verified: None,
        nonces: None,
        now: now.unix_timestamp(),
    };
    authn::check_proof(proof, &check, jkt, &rules)
}

/// Verifies a JWT-SVID this server issued, offline: signature by a published key, `typ`,
/// issuer, time, for any audience (renewal and the like, where possession of the bound key is
/// proved besides). Whether it is still registered is the caller's to ask.
pub fn verify_svid(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<SvidClaims, TokenError> {
    let keys = state.keys();
    let lookup = |kid: &str| keys.verifying.get(kid);
    svid::verify(
        token,
        &issued_check(state, None, now),
        authn::key_resolver(&lookup),
    )
}

/// [`verify_svid`] for an SVID presented to AIMS itself (`aud` = this issuer, as at the token
/// endpoint): once per token, through the replica's verified-token cache, whose SVIDs the
/// enforcement points verify under the same rules. Whether it is still registered, and so not
/// revoked, is the caller's to ask.
pub fn verify_svid_for_issuer(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<SvidClaims, TokenError> {
    let keys = state.keys();
    let lookup = |kid: &str| keys.verifying.get(kid);
    state.verified_tokens.identity(
        token,
        &issued_check(state, Some(&state.issuer), now),
        authn::key_resolver(&lookup),
        &|kid| lookup(kid).is_some(),
    )
}

/// Verifies an access token this server issued, for any audience (AIMS is the issuer),
/// offline: signature by a published key, `typ`, issuer, time — once per token, through the
/// replica's verified-token cache (the same rules as its enforcement points). Revocation is
/// not checked.
pub fn verify_access_offline(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<AccessClaims, TokenError> {
    let keys = state.keys();
    let lookup = |kid: &str| keys.verifying.get(kid);
    state.verified_tokens.access(
        token,
        &issued_check(state, None, now),
        authn::key_resolver(&lookup),
        &|kid| lookup(kid).is_some(),
    )
}

/// What a token this server issued is checked against.
fn issued_check<'a>(
    state: &'a AppState,
    audience: Option<&'a str>,
    now: OffsetDateTime,
) -> IssuedCheck<'a> {
    IssuedCheck {
        issuer: &state.issuer,
        audience,
        now: now.unix_timestamp(),
        leeway_s: LEEWAY_S,
    }
}

/// [`verify_access_offline`], then the replica's revocation view.
pub fn verify_access(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<AccessClaims, AccessRefusal> {
    let claims = verify_access_offline(state, token, now).map_err(AccessRefusal::Token)?;
    state.revocations.with_view(|revoked| match revoked {
        None => Err(AccessRefusal::Stale),
        Some(set) if claims.is_refused_by(set) => Err(AccessRefusal::Revoked),
        Some(_) => Ok(()),
    })?;
    Ok(claims)
}

/// Refuses a verified JWT-SVID that is not live: refused by this replica's revoked set, or not
/// registered as issued and unrevoked (read from the store the first time this replica sees
/// it, [`crate::registry::IssuedCredentials`]).
pub async fn require_live_svid(
    state: &AppState,
    svid: &SvidClaims,
    now: OffsetDateTime,
) -> Result<(), DeadSvid> {
    state.revocations.with_view(|revoked| match revoked {
        None => Err(DeadSvid::Stale),
        Some(set) if svid.is_refused_by(set) => Err(DeadSvid::Revoked),
        Some(_) => Ok(()),
    })?;
    let issued = state
        .issued
        .confirm(
            state.store.as_ref(),
            svid.jti.as_str(),
            now.unix_timestamp(),
        )
        .await
        .map_err(DeadSvid::Store)?;
    if issued {
        Ok(())
    } else {
        Err(DeadSvid::RevokedOrUnknown)
    }
}

/// Why a verified JWT-SVID is not live ([`require_live_svid`]).
#[derive(Debug, thiserror::Error)]
pub enum DeadSvid {
    /// This replica has not seen the revocation log recently enough to tell.
    #[error("revocation state is stale; refusing")]
    Stale,
    /// The revoked set refuses it.
    #[error("the SVID is revoked")]
    Revoked,
    /// The store has it revoked, or never issued it.
    #[error("the SVID is revoked or unknown")]
    RevokedOrUnknown,
    /// The store could not be read.
    #[error(transparent)]
    Store(aims_store::StoreError),
}

/// Why an access token presented on its own (a subject token, an introspected one) was
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefusal {
    /// It does not verify.
    #[error("{0}")]
    Token(TokenError),
    /// It (or one it derives from) was revoked.
    #[error("the token has been revoked")]
    Revoked,
    /// This replica has not seen the revocation log recently enough to tell.
    #[error("revocation state is stale; refusing")]
    Stale,
}

/// Middleware for the enforcement points: every answer to a request that presents a token
/// with DPoP — accepted or refused, `use_dpop_nonce` included — carries a fresh nonce of this
/// replica in `DPoP-Nonce`, for the client's next proof.
pub async fn offer_dpop_nonce(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let dpop = single_header(request.headers(), header::AUTHORIZATION)
        .and_then(authn::parse_authorization)
        .is_some_and(|(scheme, _)| scheme == Scheme::Dpop);
    let mut response = next.run(request).await;
    if dpop {
        let expires_at = OffsetDateTime::now_utc().unix_timestamp() + DPOP_NONCE_TTL_S;
        if let Some(nonce) = state
            .dpop_nonces
            .mint(&state.rng, expires_at)
            .ok()
            .and_then(|n| HeaderValue::from_str(&n).ok())
        {
            response
                .headers_mut()
                .insert(HeaderName::from_static(DPOP_NONCE_HEADER), nonce);
        }
    }
    response
}

/// The agent named by a SPIFFE ID of this trust domain, if it is registered, as this
/// replica's registry view holds it ([`crate::registry`]).
pub async fn agent_of(
    state: &AppState,
    spiffe_id: &SpiffeId,
) -> Result<Option<Arc<KnownAgent>>, ApiError> {
    if spiffe_id.trust_domain() != &state.trust_domain {
        return Ok(None);
    }
    Ok(state
        .registry
        .agent(state.store.as_ref(), spiffe_id.agent())
        .await?)
}
