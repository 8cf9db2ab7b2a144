//! AIMS access tokens (RFC 9068 JWT profile): their claims, minting, and offline verification
//! as an enforcement point does it.
//!
//! Header `{"alg":"ES256","kid":…,"typ":"at+jwt"}`. Claims: `iss`, `sub` (the user or system
//! the task acts for, else the agent), one `aud`, `client_id` (the holder's SPIFFE ID),
//! `scope`, `jti`, `iat`, `exp`, `task_id`, `intent`, `cnf.jkt` for DPoP-bound tokens, and
//! `act` after a delegation: the current actor outermost, each earlier one nested inside.

use std::borrow::Borrow;

use aims_core::id::{Intent, TaskId, TokenId};
use aims_core::revocation::{Presented, RevokedSet, agents_of};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::TokenError;
use crate::issued::{self, IssuedCheck};
use crate::jws::{self, Header, VerifyingKey};
use crate::signing::SigningKey;

/// Deepest `act` nesting accepted when reading a token.
pub const MAX_ACT_DEPTH: usize = 16;

/// The confirmation claim: the thumbprint of the key the token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// RFC 7638 thumbprint (RFC 9449 §6.1).
    pub jkt: String,
}

/// One actor in a delegation chain (RFC 8693 §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The actor's SPIFFE ID.
    pub sub: String,
    /// The actor before it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The chain from the current actor back to the first.
    pub fn chain(&self) -> Vec<&str> {
        let mut out = vec![self.sub.as_str()];
        let mut next = self.act.as_deref();
        while let Some(actor) = next {
            out.push(actor.sub.as_str());
            next = actor.act.as_deref();
        }
        out
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer (the AIMS public URL).
    pub iss: String,
    /// Who the task acts for.
    pub sub: String,
    /// The one audience.
    pub aud: String,
    /// The holder's SPIFFE ID.
    pub client_id: String,
    /// Space-delimited scopes.
    pub scope: String,
    /// Token id.
    pub jti: TokenId,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The task.
    pub task_id: TaskId,
    /// The task's declared intent.
    pub intent: Intent,
    /// Key binding; absent only for bearer tokens of agents allowed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The delegation chain, current actor outermost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

impl AccessClaims {
    /// Delegation depth: 0 for an agent's own token, n after n delegations.
    pub fn depth(&self) -> u32 {
        self.act.as_ref().map_or(0, |a| {
            u32::try_from(a.chain().len().saturating_sub(1)).unwrap_or(u32::MAX)
        })
    }

    /// The SPIFFE IDs of every agent in the delegation chain, current holder first.
    pub fn delegation_chain(&self) -> Vec<String> {
        match &self.act {
            Some(actor) => actor.chain().into_iter().map(str::to_owned).collect(),
            None => vec![self.client_id.clone()],
        }
    }

    /// Whether `revoked` refuses this token: by its `jti`, or by an epoch of its task or of
    /// any agent in its delegation chain that began after it was issued.
    pub fn is_refused_by(&self, revoked: &RevokedSet) -> bool {
        let chain = self.delegation_chain();
        let agents = agents_of(chain.iter().map(String::as_str));
        revoked.refuses(&Presented {
            jti: self.jti.as_str(),
            agents: &agents,
            task_id: Some(self.task_id.as_str()),
            issued_at: self.iat,
        })
    }
}

/// Mints an access token with the current signing key.
pub fn mint(
    key: &SigningKey,
    rng: &SystemRandom,
    claims: &AccessClaims,
) -> Result<String, TokenError> {
    issued::mint(key, rng, jws::TYP_ACCESS_TOKEN, claims)
}

/// What [`verify`] requires (`audience: None` only for the issuer itself: introspection,
/// delegation, its enforcement points).
pub type AccessCheck<'a> = IssuedCheck<'a>;

/// Verifies an access token offline: `typ: at+jwt`, ES256 by a key `resolve` knows, issuer,
/// audience, time, and the claim shapes. Revocation is the caller's to check (by `jti`).
pub fn verify<K: Borrow<VerifyingKey>>(
    token: &str,
    check: &AccessCheck<'_>,
    resolve: impl FnOnce(&Header) -> Result<K, TokenError>,
) -> Result<AccessClaims, TokenError> {
    let claims = issued::verify(token, jws::TYP_ACCESS_TOKEN, check, resolve)?;
    if act_depth(claims.get("act")) > MAX_ACT_DEPTH {
        return Err(TokenError::Claims("act is nested too deeply"));
    }
    serde_json::from_value(Value::Object(claims))
        .map_err(|_| TokenError::Claims("access token claims are malformed"))
}

fn act_depth(act: Option<&Value>) -> usize {
    let mut depth = 0;
    let mut next = act;
    while let Some(actor) = next {
        depth += 1;
        next = actor.get("act");
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;

    const NOW: i64 = 1_800_000_000;

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "https://aims.example".into(),
            sub: "spiffe://acme.example/agent/planner".into(),
            aud: "https://tools.example".into(),
            client_id: "spiffe://acme.example/agent/executor".into(),
            scope: "read:repo/*".into(),
            jti: aims_core::id::TokenId::new("j1").unwrap(),
            iat: NOW,
            exp: NOW + 300,
            task_id: TaskId::new("t1").unwrap(),
            intent: Intent::new("fix the build").unwrap(),
            cnf: Some(Confirmation {
                jkt: "thumb".into(),
            }),
            act: Some(Actor {
                sub: "spiffe://acme.example/agent/executor".into(),
                act: Some(Box::new(Actor {
                    sub: "spiffe://acme.example/agent/planner".into(),
                    act: None,
                })),
            }),
        }
    }

    fn check(audience: Option<&str>) -> AccessCheck<'_> {
        AccessCheck {
            issuer: "https://aims.example",
            audience,
            now: NOW,
            leeway_s: 30,
        }
    }

    #[test]
    fn round_trips_and_reports_the_chain() {
        let rng = SystemRandom::new();
        let key = SigningKey::generate(&rng).unwrap().key;
        let token = mint(&key, &rng, &claims()).unwrap();
        let public = VerifyingKey::try_from(key.public_jwk()).unwrap();
        let back = verify(&token, &check(Some("https://tools.example")), |_| {
            Ok(&public)
        })
        .unwrap();
        assert_eq!(back, claims());
        assert_eq!(back.depth(), 1);
        assert_eq!(
            back.delegation_chain(),
            vec![
                "spiffe://acme.example/agent/executor",
                "spiffe://acme.example/agent/planner"
            ]
        );
        assert!(verify(&token, &check(None), |_| Ok(&public)).is_ok());
        assert!(matches!(
            verify(&token, &check(Some("https://other.example")), |_| Ok(
                &public
            )),
            Err(TokenError::Audience)
        ));
    }

    #[test]
    fn an_svid_is_not_an_access_token() {
        let rng = SystemRandom::new();
        let key = SigningKey::generate(&rng).unwrap().key;
        let body = serde_json::to_value(claims()).unwrap();
        let svid = jws::sign(&key, &rng, jws::TYP_SVID, &body).unwrap();
        let public = VerifyingKey::try_from(key.public_jwk()).unwrap();
        assert!(matches!(
            verify(&svid, &check(None), |_| Ok(&public)),
            Err(TokenError::Type)
        ));
    }
}
