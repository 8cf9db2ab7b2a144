//! JWT-SVIDs: the identity an accepted attestation earns, typed like access tokens.
//!
//! They follow the SPIFFE JWT-SVID standard: `typ: JWT`, `alg: ES256`, a `kid`, `sub` = the
//! SPIFFE ID, one `aud`, `exp`, `iat`, `jti`. AIMS adds `cnf.jkt` (RFC 7638 thumbprint of the
//! agent's key, so only its holder can use it) and `aims_posture` (the digest of the accepted
//! evidence). Whether the identity is still registered and unrevoked is the caller's to ask.

use std::borrow::Borrow;

use aims_core::id::{SpiffeId, TokenId};
use aims_core::revocation::{Presented, RevokedSet};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::TokenError;
use crate::access::Confirmation;
use crate::issued::{self, IssuedCheck};
use crate::jws::{self, Header, VerifyingKey};
use crate::signing::SigningKey;

/// The claims of a JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvidClaims {
    /// The issuer (the AIMS public URL).
    pub iss: String,
    /// The agent's SPIFFE ID.
    pub sub: SpiffeId,
    /// The one audience.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Token id.
    pub jti: TokenId,
    /// The key the identity is bound to.
    pub cnf: Confirmation,
    /// Digest of the evidence accepted at attestation.
    pub aims_posture: String,
}

impl SvidClaims {
    /// Whether `revoked` refuses this identity: by its `jti`, or by an epoch of its agent that
    /// began after it was issued.
    pub fn is_refused_by(&self, revoked: &RevokedSet) -> bool {
        revoked.refuses(&Presented {
            jti: self.jti.as_str(),
            agents: std::slice::from_ref(self.sub.agent()),
            task_id: None,
            issued_at: self.iat,
        })
    }
}

/// Mints a JWT-SVID with the current signing key.
pub fn mint(
    key: &SigningKey,
    rng: &SystemRandom,
    claims: &SvidClaims,
) -> Result<String, TokenError> {
    issued::mint(key, rng, jws::TYP_SVID, claims)
}

/// What [`verify`] requires (`audience: None` accepts any: renewal, where possession of the
/// bound key is proved besides).
pub type SvidCheck<'a> = IssuedCheck<'a>;

/// Verifies a JWT-SVID of this issuer offline: `typ: JWT`, ES256 by a key `resolve` knows,
/// issuer, audience, time, and the claim shapes.
pub fn verify<K: Borrow<VerifyingKey>>(
    token: &str,
    check: &SvidCheck<'_>,
    resolve: impl FnOnce(&Header) -> Result<K, TokenError>,
) -> Result<SvidClaims, TokenError> {
    let claims = issued::verify(token, jws::TYP_SVID, check, resolve)?;
    serde_json::from_value(Value::Object(claims))
        .map_err(|_| TokenError::Claims("SVID claims are malformed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims() -> SvidClaims {
        SvidClaims {
            iss: "https://aims.example".into(),
            sub: SpiffeId::parse("spiffe://acme.example/agent/coder").unwrap(),
            aud: "https://aims.example".into(),
            iat: NOW,
            exp: NOW + 600,
            jti: aims_core::id::TokenId::new("j1").unwrap(),
            cnf: Confirmation {
                jkt: "thumb".into(),
            },
            aims_posture: "sha256:00".into(),
        }
    }

    #[test]
    fn round_trips_and_checks_issuer_audience_and_kind() {
        let rng = SystemRandom::new();
        let key = SigningKey::generate(&rng).unwrap().key;
        let token = mint(&key, &rng, &claims()).unwrap();
        let public = VerifyingKey::try_from(key.public_jwk()).unwrap();
        let check = |audience| SvidCheck {
            issuer: "https://aims.example",
            audience,
            now: NOW,
            leeway_s: 30,
        };
        assert_eq!(
            verify(&token, &check(Some("https://aims.example")), |_| Ok(
                &public
            ))
            .unwrap(),
            claims()
        );
        assert!(verify(&token, &check(None), |_| Ok(&public)).is_ok());
        assert!(matches!(
            verify(&token, &check(Some("https://other.example")), |_| Ok(
                &public
            )),
            Err(TokenError::Audience)
        ));
        let other_issuer = SvidCheck {
            issuer: "https://evil.example",
            ..check(None)
        };
        assert!(verify(&token, &other_issuer, |_| Ok(&public)).is_err());
        // An access token is not an SVID.
        let access = jws::sign(
            &key,
            &rng,
            jws::TYP_ACCESS_TOKEN,
            &serde_json::to_value(claims()).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verify(&access, &check(None), |_| Ok(&public)),
            Err(TokenError::Type)
        ));
    }
}
