//! AIMS keys and JOSE: the master key that seals secrets at rest, trust-domain signing keys
//! (ES256 with `ring`), their JWK form and RFC 7638 thumbprints, and the two published key
//! documents (the JWKS at `jwks_uri` and the SPIFFE bundle), and the audit log's Ed25519
//! checkpoint key with its C2SP signed notes ([`note`]).
//!
//! This crate knows nothing of storage or HTTP: callers hand it bytes and get bytes back.
//! [`jws`] mints and strictly verifies compact JWS tokens (SVIDs, access tokens, attestation
//! proofs) and checks their registered claims; [`agent_key`] is the agent-side key pair that
//! signs proof-of-possession messages. Time is always an argument, never read from a clock.

pub mod access;
pub mod agent_key;
pub mod authn;
mod codec;
pub mod dpop;
pub mod issued;
mod json;
pub mod jwk;
pub mod jws;
pub mod master;
pub mod nonce;
pub mod note;
pub mod signing;
pub mod svid;
pub mod verified;

/// Clock skew allowed when verifying any token (`exp`, `nbf`, `iat`), seconds, everywhere: a
/// revoked token must also be remembered this long past its expiry.
pub const LEEWAY_S: i64 = 30;

/// A fresh random identifier (128 bits, base64url): token ids, task ids, decision ids.
pub fn random_id(rng: &ring::rand::SystemRandom) -> Result<String, TokenError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| TokenError::Random)?;
    Ok(codec::b64url(&bytes))
}

/// A fresh id of an id type AIMS mints (`TaskId`, `TokenId`, `DecisionId`): a [`random_id`],
/// which is always a well-formed one.
pub fn new_id<T: std::str::FromStr>(rng: &ring::rand::SystemRandom) -> Result<T, TokenError> {
    random_id(rng)?.parse().map_err(|_| TokenError::Random)
}

/// Why a key or token operation failed. Messages never contain key material or token content,
/// so they may be logged; the variants classify the failure for audit and HTTP mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// A master key has the wrong length or encoding.
    #[error("master key must be 32 bytes, base64-encoded")]
    BadMasterKey,
    /// Sealed data could not be opened: wrong master key, wrong context, or tampered data.
    #[error("sealed data could not be opened (wrong master key or tampered data)")]
    Unseal,
    /// Stored key material does not parse.
    #[error("key material is invalid")]
    BadKey,
    /// A JWK does not parse or is not a supported key.
    #[error("unsupported or malformed JWK: {0}")]
    BadJwk(&'static str),
    /// The token is longer than any AIMS token may be; nothing else was looked at.
    #[error("token is too large")]
    TooLarge,
    /// The token is not a well-formed compact JWS with strict JSON inside.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The `alg` is not one the caller allows, or does not match the key.
    #[error("signature algorithm is not allowed or does not match the key")]
    Algorithm,
    /// The protected header is unacceptable (missing `typ`, `crit`, `jku`, a hostile `kid`, …).
    #[error("unacceptable token header: {0}")]
    Header(&'static str),
    /// The token's `typ` names another kind of token than the one expected.
    #[error("token is not of the expected type")]
    Type,
    /// No verification key is known for the token's `kid`.
    #[error("no verification key is known for this token")]
    UnknownKey,
    /// The signature does not verify.
    #[error("signature is invalid")]
    Signature,
    /// A claim is missing or has the wrong type or value.
    #[error("unacceptable claims: {0}")]
    Claims(&'static str),
    /// `exp` has passed (beyond the allowed clock skew).
    #[error("token has expired")]
    Expired,
    /// `nbf` is still in the future (beyond the allowed clock skew).
    #[error("token is not yet valid")]
    NotYetValid,
    /// `aud` is missing, not a single string, or names another audience.
    #[error("token is not intended for this audience")]
    Audience,
    /// `iss` is missing or names another issuer.
    #[error("token is not from the expected issuer")]
    Issuer,
}
