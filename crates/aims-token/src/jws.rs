//! Compact JWS (RFC 7515) minting and strict verification for every AIMS token kind, following
//! the JWT best current practices (RFC 8725) and the SPIFFE JWT-SVID rules.
//!
//! This module owns the wire format: splitting, base64url, the protected header, the signature
//! and the registered claims (`exp`, `nbf`, `iat`, `aud`, `iss`). It must not fetch anything:
//! it never follows `jku` or `x5u`, never trusts `x5c`, and trusts a key embedded in the `jwk`
//! header only through [`verify_self_signed`], which exists for proof-of-possession messages
//! (attestation proofs, DPoP) whose point is to prove control of that very key. Which keys a
//! token may be verified with is the caller's decision, made in the `resolve` callback.
//!
//! Verification order: size (≤ [`MAX_TOKEN_LEN`]) → three strict base64url segments → strict
//! JSON header → header rules (`crit`, `jku`, `x5u`, `x5c`, `jwk`, `alg` allow-list, `typ`,
//! `kid` syntax) → key lookup → key type matches `alg` → signature → strict JSON claims. No
//! claim is read before the signature verifies. [`check_claims`] then applies the time,
//! audience and issuer rules; callers check their kind-specific claims after that.
//!
//! Token kinds are kept apart by `typ` (RFC 8725 §3.11): each kind has its own value (see
//! [`TYP_SVID`], [`TYP_ACCESS_TOKEN`], [`TYP_ATTESTATION`], [`TYP_DPOP`]) and the caller states
//! the one it expects, so a token minted as one kind never verifies as another.

mod claims;
mod key;
#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::fmt;

use ring::rand::SystemRandom;
use serde_json::{Map, Value};

pub use claims::{ClaimChecks, check_claims};
pub use key::{Ed25519PublicKey, P256PublicKey, RsaPublicKey, VerifyingKey};

use crate::TokenError;
use crate::codec::{b64url, b64url_decode};
use crate::json::{self, MAX_DEPTH};
use crate::signing::SigningKey;

/// `typ` of JWT-SVIDs, as SPIFFE uses it. AIMS mints no other kind with this value.
pub const TYP_SVID: &str = "JWT";
/// `typ` of AIMS access tokens (RFC 9068).
pub const TYP_ACCESS_TOKEN: &str = "at+jwt";
/// `typ` of an agent's attestation proof, self-signed with its own key.
pub const TYP_ATTESTATION: &str = "aims-attest+jwt";
/// `typ` of DPoP proofs (RFC 9449 §4.2).
pub const TYP_DPOP: &str = "dpop+jwt";

/// The longest token accepted, checked before anything else: 16 KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// The longest `kid` accepted.
pub const MAX_KID_LEN: usize = 128;

/// The JWS algorithms AIMS can verify. Every other `alg` (`none`, `HS256`, `PS256`, …) is
/// refused, whatever the caller allows. Each key type has exactly one algorithm; Ed25519's
/// goes by two names, the polymorphic `EdDSA` (RFC 8037) and the fully specified `Ed25519`
/// (RFC 9864), and an Ed25519 key verifies either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256, 64-byte `r || s` signatures (`ES256`).
    Es256,
    /// Ed25519 as `EdDSA` (RFC 8037).
    EdDsa,
    /// Ed25519 by its fully specified name, `Ed25519` (RFC 9864): the same signatures as
    /// [`Alg::EdDsa`].
    Ed25519,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048- to 8192-bit moduli (`RS256`).
    Rs256,
}

impl Alg {
    /// The wire name: `ES256`, `EdDSA`, `Ed25519` or `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Ed25519 => "Ed25519",
            Self::Rs256 => "RS256",
        }
    }

    /// Parses a wire name, case-sensitively (RFC 7515 §4.1.1).
    pub fn parse(name: &str) -> Result<Self, TokenError> {
        match name {
            "ES256" => Ok(Self::Es256),
            "EdDSA" => Ok(Self::EdDsa),
            "Ed25519" => Ok(Self::Ed25519),
            "RS256" => Ok(Self::Rs256),
            _ => Err(TokenError::Algorithm),
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The checked protected header handed to the key resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// The algorithm, already known to be one the caller allows.
    pub alg: Alg,
    /// The key id, already known to be 1–128 characters of `[A-Za-z0-9_.-]`.
    pub kid: Option<String>,
    /// The token type as written (it matched the expected one).
    pub typ: String,
}

/// A token whose header and signature verified. Its claims still need [`check_claims`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The algorithm the token was signed with.
    pub alg: Alg,
    /// The `kid` header, if any.
    pub kid: Option<String>,
    /// The `typ` header as written.
    pub typ: String,
    /// The claims, parsed strictly.
    pub claims: Map<String, Value>,
}

/// Mints a compact JWS with `key`. The header is exactly
/// `{"alg":"ES256","kid":<kid>,"typ":<typ>}`; `claims` must be a JSON object no deeper than
/// the verifier accepts, and the token must fit in [`MAX_TOKEN_LEN`].
pub fn sign(
    key: &SigningKey,
    rng: &SystemRandom,
    typ: &str,
    claims: &Value,
) -> Result<String, TokenError> {
    if !kid_is_valid(key.kid()) {
        return Err(TokenError::Header(
            "kid is not 1-128 characters of [A-Za-z0-9_.-]",
        ));
    }
    if typ.is_empty() {
        return Err(TokenError::Header("typ is empty"));
    }
    let header = format!(
        r#"{{"alg":"ES256","kid":{},"typ":{}}}"#,
        json_string(key.kid())?,
        json_string(typ)?
    );
    assemble(header.as_bytes(), claims, |input| key.sign(rng, input))
}

/// Verifies a token whose key the caller knows (SVIDs, access tokens, anything we minted).
///
/// `allowed` lists the algorithms this kind of token may use; `expected_typ` is the kind's
/// `typ`, compared as a media type (RFC 7515 §4.1.9: ASCII case-insensitively, with an
/// omitted `application/` prefix restored), and required. `resolve` receives the checked
/// header and returns the key for its `kid` — it should answer [`TokenError::UnknownKey`]
/// when there is none, and is never called for a token whose header is refused. It may
/// return an owned key, a reference or an `Arc`. A `jwk` header is refused here.
pub fn verify<K: Borrow<VerifyingKey>>(
    token: &str,
    expected_typ: &str,
    allowed: &[Alg],
    resolve: impl FnOnce(&Header) -> Result<K, TokenError>,
) -> Result<Verified, TokenError> {
    verify_by_rule(token, TypRule::Exact(expected_typ), allowed, resolve)
}

/// Verifies a token minted by a trusted third-party issuer (a Kubernetes service-account token,
/// a CI system's OIDC token) with a key from that issuer's JWKS. Exactly like [`verify`] except
/// that `typ` may be absent or `JWT`, since such issuers often omit it; such tokens are only
/// ever accepted as attestation evidence, never as AIMS credentials.
pub fn verify_third_party<K: Borrow<VerifyingKey>>(
    token: &str,
    allowed: &[Alg],
    resolve: impl FnOnce(&Header) -> Result<K, TokenError>,
) -> Result<Verified, TokenError> {
    verify_by_rule(token, TypRule::AbsentOrJwt, allowed, resolve)
}

/// [`verify`] and [`verify_third_party`], which differ only in their `typ` rule.
fn verify_by_rule<K: Borrow<VerifyingKey>>(
    token: &str,
    typ: TypRule<'_>,
    allowed: &[Alg],
    resolve: impl FnOnce(&Header) -> Result<K, TokenError>,
) -> Result<Verified, TokenError> {
    let parts = Parts::split(token)?;
    let (header, _) = parse_header(&parts.header, typ, allowed, EmbeddedKey::Refused)?;
    let key = resolve(&header)?;
    parts.finish(header, key.borrow())
}

/// Verifies a proof-of-possession message signed by the key in its own `jwk` header, which is
/// required (RFC 7515 §4.1.3). Returns the key so the caller can bind it (compare its
/// [`VerifyingKey::thumbprint`] with a registered or confirmed one): this proves only that the
/// sender holds *some* key, never who the sender is. Use it for nothing but such proofs.
pub fn verify_self_signed(
    token: &str,
    expected_typ: &str,
    allowed: &[Alg],
) -> Result<(Verified, VerifyingKey), TokenError> {
    let parts = Parts::split(token)?;
    let (header, jwk) = parse_header(
        &parts.header,
        TypRule::Exact(expected_typ),
        allowed,
        EmbeddedKey::Required,
    )?;
    let jwk = jwk.ok_or(TokenError::Header("jwk is required"))?;
    let (key, _) = VerifyingKey::from_jwk(&jwk)?;
    let verified = parts.finish(header, &key)?;
    Ok((verified, key))
}

/// Builds `b64(header).b64(claims).b64(signature)` with `signer` over the first two parts.
pub(crate) fn assemble(
    header: &[u8],
    claims: &Value,
    signer: impl FnOnce(&[u8]) -> Result<Vec<u8>, TokenError>,
) -> Result<String, TokenError> {
    if !claims.is_object() {
        return Err(TokenError::Claims("claims must be a JSON object"));
    }
    if !json::within_depth(claims, MAX_DEPTH) {
        return Err(TokenError::Claims("claims are nested too deeply"));
    }
    let payload = serde_json::to_vec(claims)
        .map_err(|_| TokenError::Claims("claims cannot be serialized"))?;
    let mut token = b64url(header);
    token.push('.');
    token.push_str(&b64url(&payload));
    let signature = signer(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64url(&signature));
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    Ok(token)
}

/// Whether a `kid` is safe to use as a lookup key: 1–128 characters of `[A-Za-z0-9_.-]`, so no
/// path separators, quotes, spaces or control characters ever reach a store or a log.
pub fn kid_is_valid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn json_string(text: &str) -> Result<String, TokenError> {
    serde_json::to_string(text).map_err(|_| TokenError::Header("cannot encode header"))
}

/// The three decoded segments of a compact JWS, plus the exact text the signature covers.
struct Parts<'t> {
    signing_input: &'t str,
    header: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl<'t> Parts<'t> {
    fn split(token: &'t str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(TokenError::Malformed(
                "a compact JWS has exactly three segments",
            ));
        };
        let signing_input =
            token
                .get(..header.len() + 1 + payload.len())
                .ok_or(TokenError::Malformed(
                    "a compact JWS has exactly three segments",
                ))?;
        let decode = |segment| {
            b64url_decode(segment).ok_or(TokenError::Malformed("segment is not unpadded base64url"))
        };
        Ok(Self {
            signing_input,
            header: decode(header)?,
            payload: decode(payload)?,
            signature: decode(signature)?,
        })
    }

    /// Checks the key against the header, then the signature, and only then parses claims.
    fn finish(self, header: Header, key: &VerifyingKey) -> Result<Verified, TokenError> {
        if !key.verifies(header.alg) {
            return Err(TokenError::Algorithm);
        }
        key.verify_signature(self.signing_input.as_bytes(), &self.signature)?;
        let claims = json::parse_object(&self.payload)?;
        Ok(Verified {
            alg: header.alg,
            kid: header.kid,
            typ: header.typ,
            claims,
        })
    }
}

/// What the `typ` header must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TypRule<'a> {
    /// Exactly this type (our own tokens: one `typ` per kind).
    Exact(&'a str),
    /// `JWT` or absent: tokens of third-party issuers, which often omit `typ`.
    AbsentOrJwt,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EmbeddedKey {
    Refused,
    Required,
}

/// Applies the header rules; returns the `jwk` member when `embedded` requires one.
fn parse_header(
    bytes: &[u8],
    expected_typ: TypRule<'_>,
    allowed: &[Alg],
    embedded: EmbeddedKey,
) -> Result<(Header, Option<Value>), TokenError> {
    let mut map = json::parse_object(bytes)?;
    let alg = match map.get("alg") {
        Some(Value::String(name)) => Alg::parse(name)?,
        Some(_) => return Err(TokenError::Header("alg must be a string")),
        None => return Err(TokenError::Header("alg is required")),
    };
    if !allowed.contains(&alg) {
        return Err(TokenError::Algorithm);
    }
    // We implement no JWS extension, so any `crit` makes the token invalid (RFC 7515 §4.1.11).
    if map.contains_key("crit") {
        return Err(TokenError::Header("crit is not supported"));
    }
    // Keys are never fetched from, or certified by, the token itself (RFC 8725 §3.10).
    if ["jku", "x5u", "x5c"]
        .iter()
        .any(|name| map.contains_key(*name))
    {
        return Err(TokenError::Header("jku, x5u and x5c are refused"));
    }
    let typ = match (map.get("typ"), expected_typ) {
        (Some(Value::String(typ)), _) if !typ.is_empty() => typ.clone(),
        (Some(Value::String(_)), _) => return Err(TokenError::Header("typ is empty")),
        (Some(_), _) => return Err(TokenError::Header("typ must be a string")),
        (None, TypRule::AbsentOrJwt) => TYP_SVID.to_owned(),
        (None, TypRule::Exact(_)) => return Err(TokenError::Header("typ is required")),
    };
    let expected = match expected_typ {
        TypRule::Exact(expected) => expected,
        TypRule::AbsentOrJwt => TYP_SVID,
    };
    if !media_type_eq(&typ, expected) {
        return Err(TokenError::Type);
    }
    let kid = match map.get("kid") {
        Some(Value::String(kid)) if kid_is_valid(kid) => Some(kid.clone()),
        Some(_) => {
            return Err(TokenError::Header(
                "kid is not 1-128 characters of [A-Za-z0-9_.-]",
            ));
        }
        None => None,
    };
    let jwk = match (map.remove("jwk"), embedded) {
        (None, EmbeddedKey::Refused) => None,
        (Some(_), EmbeddedKey::Refused) => {
            return Err(TokenError::Header("an embedded jwk is not trusted here"));
        }
        (Some(jwk @ Value::Object(_)), EmbeddedKey::Required) => Some(jwk),
        (Some(_), EmbeddedKey::Required) => {
            return Err(TokenError::Header("jwk must be an object"));
        }
        (None, EmbeddedKey::Required) => return Err(TokenError::Header("jwk is required")),
    };
    Ok((Header { alg, kid, typ }, jwk))
}

/// Compares two `typ` values as media types: ASCII case-insensitively, with `application/`
/// implied when there is no `/` (RFC 7515 §4.1.9), so `at+jwt` equals `application/AT+JWT`.
fn media_type_eq(a: &str, b: &str) -> bool {
    fn subtype(typ: &str) -> &str {
        const PREFIX: &str = "application/";
        match typ.get(..PREFIX.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(PREFIX) => {
                typ.get(PREFIX.len()..).unwrap_or(typ)
            }
            _ => typ,
        }
    }
    let (a, b) = (subtype(a), subtype(b));
    // "application/" with nothing after it, or a subtype that itself has a '/', matches nothing.
    !a.is_empty() && !a.contains('/') && a.eq_ignore_ascii_case(b)
}
