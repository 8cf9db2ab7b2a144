//! JWT-SVIDs: minting the identity an accepted attestation earns, and verifying one this
//! trust domain issued (for renewal).
//!
//! SVIDs follow the SPIFFE JWT-SVID standard: `typ: JWT`, `alg: ES256`, a `kid`, `sub` = the
//! SPIFFE ID, one `aud`, `exp`, `iat`, `jti`; AIMS adds `cnf.jkt` (RFC 7638 thumbprint of the
//! agent's key, so only its holder can use it) and `aims_posture` (the digest of the accepted
//! evidence).

use aims_core::id::SpiffeId;
use aims_token::TokenError;
use aims_token::jws::{self, Alg, ClaimChecks, Verified};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom as _;
use serde_json::json;
use time::OffsetDateTime;

use crate::keyring::KeyRing;
use crate::state::AppState;

/// `typ` of JWT-SVIDs (SPIFFE JWT-SVID §3).
pub const SVID_TYP: &str = jws::TYP_SVID;
/// Allowed clock skew when verifying, seconds.
pub const LEEWAY_S: i64 = 30;

/// What goes into a new SVID.
pub struct SvidClaims<'a> {
    /// The agent's SPIFFE ID.
    pub spiffe_id: &'a SpiffeId,
    /// The one audience.
    pub audience: &'a str,
    /// Thumbprint of the agent's key.
    pub key_thumbprint: &'a str,
    /// Digest of the accepted evidence.
    pub posture_digest: &'a str,
    /// Issue time.
    pub issued_at: OffsetDateTime,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

/// A minted SVID and its id.
pub struct Minted {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
}

/// A fresh random token id (128 bits, base64url).
pub fn new_jti(state: &AppState) -> Result<String, TokenError> {
    let mut bytes = [0u8; 16];
    state.rng.fill(&mut bytes).map_err(|_| TokenError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Signs a JWT-SVID with the current key.
pub fn mint(state: &AppState, claims: &SvidClaims<'_>) -> Result<Minted, TokenError> {
    let jti = new_jti(state)?;
    let body = json!({
        "iss": state.issuer,
        "sub": claims.spiffe_id.to_string(),
        "aud": claims.audience,
        "iat": claims.issued_at.unix_timestamp(),
        "exp": claims.expires_at.unix_timestamp(),
        "jti": jti,
        "cnf": { "jkt": claims.key_thumbprint },
        "aims_posture": claims.posture_digest,
    });
    let keys = state.keys();
    let token = jws::sign(&keys.current, &state.rng, SVID_TYP, &body)?;
    Ok(Minted { token, jti })
}

/// A verified SVID of this trust domain.
pub struct PresentedSvid {
    /// Its subject.
    pub spiffe_id: SpiffeId,
    /// Its `jti`.
    pub jti: String,
    /// The key it is bound to.
    pub key_thumbprint: String,
    /// Its one audience.
    pub audience: String,
    /// Its expiry, Unix seconds.
    pub expires_at: i64,
}

/// Verifies an SVID this server issued: signature by a published key, `typ`, issuer, expiry.
/// Any audience is accepted (renewal also proves possession of the bound key); callers that
/// need the SVID to be meant for AIMS itself compare [`PresentedSvid::audience`].
pub fn verify_presented(
    keys: &KeyRing,
    issuer: &str,
    token: &str,
    now: OffsetDateTime,
) -> Result<PresentedSvid, TokenError> {
    let Verified { claims, .. } = jws::verify(token, SVID_TYP, &[Alg::Es256], |header| {
        header
            .kid
            .as_deref()
            .and_then(|kid| keys.verifying.get(kid))
            .ok_or(TokenError::UnknownKey)
    })?;
    let audience = claims
        .get("aud")
        .and_then(|a| a.as_str())
        .ok_or(TokenError::Audience)?
        .to_owned();
    jws::check_claims(
        &claims,
        &ClaimChecks {
            issuer: Some(issuer),
            audience: &audience,
            now: now.unix_timestamp(),
            leeway_s: LEEWAY_S,
            max_lifetime_s: None,
        },
    )?;
    let text = |name: &'static str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or(TokenError::Claims(name))
    };
    let spiffe_id = SpiffeId::parse(&text("sub")?).map_err(|_| TokenError::Claims("sub"))?;
    let key_thumbprint = claims
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(|j| j.as_str())
        .map(str::to_owned)
        .ok_or(TokenError::Claims("cnf.jkt"))?;
    let expires_at = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or(TokenError::Claims("exp"))?;
    Ok(PresentedSvid {
        spiffe_id,
        jti: text("jti")?,
        key_thumbprint,
        audience,
        expires_at,
    })
}
