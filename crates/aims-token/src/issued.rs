//! What the tokens this issuer mints — task tokens ([`crate::access`]) and JWT-SVIDs
//! ([`crate::svid`]) — have in common: signed with the current key under their own `typ`,
//! verified offline against ES256, issuer, one audience and time. Each kind adds its claim
//! shapes on top.

use std::borrow::Borrow;

use ring::rand::SystemRandom;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::TokenError;
use crate::jws::{self, Alg, ClaimChecks, Header, VerifyingKey};
use crate::signing::SigningKey;

/// What a verification of an issued token requires.
#[derive(Debug, Clone, Copy)]
pub struct IssuedCheck<'a> {
    /// The AIMS issuer URL.
    pub issuer: &'a str,
    /// The audience the token must name; `None` accepts any (the issuer's own endpoints, which
    /// accept every task token they issued, and SVID renewal, where possession of the bound
    /// key is proved besides).
    pub audience: Option<&'a str>,
    /// Now, Unix seconds.
    pub now: i64,
    /// Allowed clock skew, seconds.
    pub leeway_s: i64,
}

/// Signs `claims` as a token of kind `typ` with `key`.
pub fn mint<C: Serialize>(
    key: &SigningKey,
    rng: &SystemRandom,
    typ: &str,
    claims: &C,
) -> Result<String, TokenError> {
    let body = serde_json::to_value(claims).map_err(|_| TokenError::Claims("cannot encode"))?;
    jws::sign(key, rng, typ, &body)
}

/// Verifies a token of kind `typ` offline: ES256 by a key `resolve` knows, issuer, audience,
/// time. Returns its claims for the kind to read.
pub fn verify<K: Borrow<VerifyingKey>>(
    token: &str,
    typ: &str,
    check: &IssuedCheck<'_>,
    resolve: impl FnOnce(&Header) -> Result<K, TokenError>,
) -> Result<Map<String, Value>, TokenError> {
    let verified = jws::verify(token, typ, &[Alg::Es256], resolve)?;
    let audience = match check.audience {
        Some(audience) => audience,
        None => verified
            .claims
            .get("aud")
            .and_then(Value::as_str)
            .ok_or(TokenError::Audience)?,
    };
    jws::check_claims(
        &verified.claims,
        &ClaimChecks {
            issuer: Some(check.issuer),
            audience,
            now: check.now,
            leeway_s: check.leeway_s,
            max_lifetime_s: None,
        },
    )?;
    Ok(verified.claims)
}
