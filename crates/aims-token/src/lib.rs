//! AIMS keys and JOSE: the master key that seals secrets at rest, trust-domain signing keys
//! (ES256 with `ring`), their JWK form and RFC 7638 thumbprints, and the two published key
//! documents (the JWKS at `jwks_uri` and the SPIFFE bundle).
//!
//! This crate knows nothing of storage or HTTP: callers hand it bytes and get bytes back.
//! Token minting and verification for SVIDs and access tokens grow here.

pub mod jwk;
pub mod master;
pub mod signing;

/// Why a key operation failed. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
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
}
