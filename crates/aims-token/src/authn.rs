//! How an enforcement point authenticates the agent behind a request: the one copy of the
//! rules, used by the server's enforcement points, the SDK's `Verifier` and the gateway.
//!
//! [`authenticate`] takes the request's `Authorization` and `DPoP` headers and what the
//! enforcement point trusts ([`Rules`]: issuer, keys, audiences, revoked set, replay cache,
//! nonce key, time) and answers who is calling ([`Authenticated`]) or why not ([`Refusal`]).
//! In order:
//!
//! 1. `Authorization` must be `DPoP <token>` or `Bearer <token>` ([`parse_authorization`]).
//! 2. A task token (RFC 9068, `typ: at+jwt`): signature by a known key, issuer, audience,
//!    time; then the revoked set (a stale view refuses), by id and by epoch; then the binding —
//!    a token with `cnf.jkt` needs the DPoP scheme and a proof for this request and token
//!    (`ath`), signed by that key, carrying a nonce of this enforcement point's when it
//!    requires one, never seen before; a token without one needs the Bearer scheme.
//! 3. Otherwise, where identities are accepted, the agent's JWT-SVID as a bearer token for
//!    [`Rules::svid_audience`]; whether it is still registered is the caller's to ask.
//!
//! With a verified-token cache ([`Rules::verified`], [`crate::verified`]), a token this
//! enforcement point verified before and that has not expired skips step 2's signature and
//! claim checks (while its key is still trusted); the revoked set and the binding are checked
//! every time.
//!
//! Nothing here does IO or reads a clock. A refusal never contains the token or the proof.

use std::borrow::Borrow;

use aims_core::revocation::RevokedSet;

use crate::access::{self, AccessCheck, AccessClaims};
use crate::dpop::{self, ProofCheck, ReplayCache, VerifiedProof};
use crate::jws::{self, Header, VerifyingKey};
use crate::nonce::NonceKey;
use crate::svid::{self, SvidCheck, SvidClaims};
use crate::verified::{self, Verified, VerifiedTokens};
use crate::{LEEWAY_S, TokenError};

/// How a token is presented in `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer <token>`.
    Bearer,
    /// `DPoP <token>` with a `DPoP` proof header.
    Dpop,
}

impl Scheme {
    /// The scheme's name as it appears in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::Dpop => "DPoP",
        }
    }
}

/// Splits an `Authorization` value into its scheme and credential (RFC 9110 §11.4): the
/// scheme, one space, and a non-empty credential, surrounding spaces ignored; `None` for
/// anything else. The scheme is for the caller to match, case-insensitively; whether the
/// credential is well-formed is for its verification to say (a token with a space in it is a
/// malformed token, refused as such).
pub fn split_authorization(value: &str) -> Option<(&str, &str)> {
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (!credential.is_empty()).then_some((scheme, credential))
}

/// Splits an `Authorization` value into a token scheme (`Bearer` or `DPoP`, RFC 9449) and a
/// token at most [`jws::MAX_TOKEN_LEN`] long ([`split_authorization`]); `None` for anything
/// else.
pub fn parse_authorization(value: &str) -> Option<(Scheme, &str)> {
    let (scheme, token) = split_authorization(value)?;
    let scheme = scheme_named(scheme)?;
    (token.len() <= jws::MAX_TOKEN_LEN).then_some((scheme, token))
}

/// `Bearer` or `DPoP`, case-insensitively.
fn scheme_named(name: &str) -> Option<Scheme> {
    if name.eq_ignore_ascii_case("bearer") {
        Some(Scheme::Bearer)
    } else if name.eq_ignore_ascii_case("dpop") {
        Some(Scheme::Dpop)
    } else {
        None
    }
}

/// Why an `Authorization` value [`parse_authorization`] refuses was refused: a `Bearer` or
/// `DPoP` token longer than any AIMS accepts is a refused token; anything else (another
/// scheme, no token) is no credential at all.
fn unusable(value: Option<&str>) -> Refusal {
    value
        .and_then(split_authorization)
        .and_then(|(scheme, token)| Some((scheme_named(scheme)?, token)))
        .filter(|(_, token)| token.len() > jws::MAX_TOKEN_LEN)
        .map_or(Refusal::NoCredential, |(scheme, _)| Refusal::Token {
            error: TokenError::TooLarge,
            scheme,
        })
}

/// The parts of one request that authenticate it.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The `Authorization` value, when exactly one was sent as text.
    pub authorization: Option<&'a str>,
    /// The `DPoP` proof, when exactly one was sent as text.
    pub proof: Option<&'a str>,
    /// The request's method.
    pub method: &'a str,
    /// The request's full URL as the client addressed it (query and fragment are ignored).
    pub url: &'a str,
}

/// What the enforcement point trusts and remembers.
pub struct Rules<'a, K> {
    /// The AIMS issuer URL tokens must name.
    pub issuer: &'a str,
    /// The issuer's verification keys, by `kid`.
    pub keys: &'a dyn Fn(&str) -> Option<K>,
    /// The audience task tokens must name; `None` only for the issuer's own endpoints, which
    /// accept its tokens for any audience.
    pub task_audience: Option<&'a str>,
    /// The audience of the JWT-SVIDs accepted as bearer credentials; `None` accepts task
    /// tokens only.
    pub svid_audience: Option<&'a str>,
    /// The revoked tokens and epochs; `None` when the view is too old to trust (every task
    /// token is then refused).
    pub revoked: Option<&'a RevokedSet>,
    /// Proofs seen before.
    pub replay: &'a ReplayCache,
    /// Tokens verified before, not verified again until they expire; `None`: every token is
    /// verified every time.
    pub verified: Option<&'a VerifiedTokens>,
    /// When proofs must carry a nonce this enforcement point handed out: the key they are
    /// checked with.
    pub nonces: Option<&'a NonceKey>,
    /// Now, Unix seconds.
    pub now: i64,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    /// An agent with a task token, its proof of possession checked.
    Task {
        /// The token's claims.
        claims: AccessClaims,
        /// How it was presented.
        scheme: Scheme,
    },
    /// An agent with its JWT-SVID as a bearer token.
    Identity(SvidClaims),
}

/// Why a request was not authenticated. Displays never contain a token or a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No usable `Authorization` header.
    #[error("send a task token (Authorization: DPoP or Bearer) or the agent's JWT-SVID")]
    NoCredential,
    /// The revoked set is too old to trust: every task token is refused until it catches up.
    #[error("this replica cannot tell whether the token is revoked; refused")]
    Stale,
    /// The task token does not verify (the inner error says why); `scheme` is how it came.
    #[error("the token was refused: {error}")]
    Token {
        /// Why.
        error: TokenError,
        /// How it was presented.
        scheme: Scheme,
    },
    /// The task token is revoked, by its id or an epoch.
    #[error("the token was refused: the token has been revoked")]
    Revoked {
        /// How it was presented.
        scheme: Scheme,
    },
    /// The bearer credential is neither a valid task token nor a valid SVID.
    #[error("the SVID was refused: {0}")]
    Identity(TokenError),
    /// A DPoP-bound token came with the Bearer scheme.
    #[error("a DPoP-bound token is presented as a bearer token")]
    BoundTokenAsBearer,
    /// A token bound to no key came with the DPoP scheme.
    #[error("a bearer token is presented with the DPoP scheme")]
    UnboundTokenAsDpop,
    /// A DPoP-bound token came without a (usable) proof.
    #[error("a DPoP proof is required")]
    MissingProof,
    /// The proof is not valid for this request and token (the inner error says why).
    #[error("the DPoP proof was refused: {0}")]
    Proof(TokenError),
    /// The proof is signed by another key than the token is bound to.
    #[error("the DPoP proof is not signed by the key the token is bound to")]
    KeyMismatch,
    /// The proof carries no nonce of this enforcement point's, or an expired one.
    #[error("the DPoP proof must carry this server's nonce (see the DPoP-Nonce header)")]
    UseNonce,
    /// The proof was used before (or the replay cache is full of fresh proofs).
    #[error("the DPoP proof was used before")]
    Replay,
}

impl Refusal {
    /// The RFC 6750 / RFC 9449 error code; `invalid_svid` for a refused identity and
    /// `invalid_request` when no credential came at all.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoCredential => "invalid_request",
            Self::Identity(_) => "invalid_svid",
            Self::Stale => "revocation_state_stale",
            Self::Token { .. }
            | Self::Revoked { .. }
            | Self::BoundTokenAsBearer
            | Self::UnboundTokenAsDpop => "invalid_token",
            Self::MissingProof | Self::Proof(_) | Self::KeyMismatch | Self::Replay => {
                "invalid_dpop_proof"
            }
            Self::UseNonce => "use_dpop_nonce",
        }
    }

    /// The scheme of the `WWW-Authenticate` challenge that answers it (RFC 9449 §7.1): the
    /// one a valid credential of this kind would use.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::NoCredential | Self::Identity(_) | Self::UnboundTokenAsDpop | Self::Stale => {
                Scheme::Bearer
            }
            Self::Token { scheme, .. } | Self::Revoked { scheme } => *scheme,
            Self::BoundTokenAsBearer
            | Self::MissingProof
            | Self::Proof(_)
            | Self::KeyMismatch
            | Self::UseNonce
            | Self::Replay => Scheme::Dpop,
        }
    }

    /// The `WWW-Authenticate` challenge: `DPoP error="…", algs="ES256 EdDSA Ed25519"` or
    /// `Bearer error="…"`. A request without any credential gets both schemes it could use
    /// and no error (RFC 6750 §3.1: the client may not know that authentication is needed;
    /// RFC 9449 §7.1: the DPoP challenge lists the proof algorithms).
    pub fn challenge(&self) -> String {
        match self {
            Self::NoCredential => format!("Bearer, DPoP algs=\"{}\"", proof_algs()),
            _ => challenge(self.scheme(), self.code()),
        }
    }
}

/// A `WWW-Authenticate` challenge for `scheme` with error `code` (a DPoP challenge lists the
/// proof algorithms accepted).
pub fn challenge(scheme: Scheme, code: &str) -> String {
    match scheme {
        Scheme::Dpop => format!("DPoP error=\"{code}\", algs=\"{}\"", proof_algs()),
        Scheme::Bearer => format!("Bearer error=\"{code}\""),
    }
}

/// The DPoP proof algorithms accepted, space-separated, for a challenge's `algs`.
pub fn proof_algs() -> String {
    dpop::PROOF_ALGS
        .iter()
        .map(|alg| alg.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Authenticates the agent behind `presented` under `rules` (see the module's documentation
/// for the order of the checks).
pub fn authenticate<K: Borrow<VerifyingKey>>(
    presented: &Presented<'_>,
    rules: &Rules<'_, K>,
) -> Result<Authenticated, Refusal> {
    let (scheme, token) = presented
        .authorization
        .and_then(parse_authorization)
        .ok_or_else(|| unusable(presented.authorization))?;
    let digest = rules.verified.map(|_| VerifiedTokens::digest(token));
    if let (Some(cache), Some(digest)) = (rules.verified, &digest) {
        let trusted = |kid: &str| (rules.keys)(kid).is_some();
        match cache.get(digest, rules.now, &trusted) {
            Some(Verified::Task(claims)) => {
                return task_holder(presented, rules, scheme, token, claims);
            }
            Some(Verified::Identity(claims))
                if scheme == Scheme::Bearer && rules.svid_audience.is_some() =>
            {
                return Ok(Authenticated::Identity(claims));
            }
            _ => {}
        }
    }
    // The key that verified the token, for the cache.
    let signed_by = std::cell::RefCell::new(None);
    let lookup = key_resolver(rules.keys);
    let resolve = verified::recording(&lookup, &signed_by);
    let remember = |verified: Verified| {
        if let (Some(cache), Some(digest), Some(kid)) =
            (rules.verified, digest, signed_by.borrow().clone())
        {
            cache.insert(digest, verified, kid, rules.now);
        }
    };
    let task = access::verify(
        token,
        &AccessCheck {
            issuer: rules.issuer,
            audience: rules.task_audience,
            now: rules.now,
            leeway_s: LEEWAY_S,
        },
        resolve,
    );
    let error = match task {
        Ok(claims) => {
            remember(Verified::Task(claims.clone()));
            return task_holder(presented, rules, scheme, token, claims);
        }
        Err(error) => error,
    };
    // An identity is only ever a bearer token.
    let refused = Refusal::Token { error, scheme };
    let Some(audience) = rules.svid_audience.filter(|_| scheme == Scheme::Bearer) else {
        return Err(refused);
    };
    let check = SvidCheck {
        issuer: rules.issuer,
        audience: Some(audience),
        now: rules.now,
        leeway_s: LEEWAY_S,
    };
    match svid::verify(token, &check, resolve) {
        Ok(claims) => {
            remember(Verified::Identity(claims.clone()));
            Ok(Authenticated::Identity(claims))
        }
        // It is a task token (`typ: at+jwt`) that failed.
        Err(TokenError::Type) => Err(refused),
        Err(error) => Err(Refusal::Identity(error)),
    }
}

/// The checks of a task token that verified: revocation, then the binding.
fn task_holder<K: Borrow<VerifyingKey>>(
    presented: &Presented<'_>,
    rules: &Rules<'_, K>,
    scheme: Scheme,
    token: &str,
    claims: AccessClaims,
) -> Result<Authenticated, Refusal> {
    let revoked = rules.revoked.ok_or(Refusal::Stale)?;
    if claims.is_refused_by(revoked) {
        return Err(Refusal::Revoked { scheme });
    }
    match (&claims.cnf, scheme) {
        (None, Scheme::Bearer) => {}
        (None, Scheme::Dpop) => return Err(Refusal::UnboundTokenAsDpop),
        (Some(_), Scheme::Bearer) => return Err(Refusal::BoundTokenAsBearer),
        (Some(cnf), Scheme::Dpop) => {
            let proof = presented.proof.ok_or(Refusal::MissingProof)?;
            let check = ProofCheck {
                method: presented.method,
                url: presented.url,
                access_token: Some(token),
                now: rules.now,
            };
            check_proof(proof, &check, &cnf.jkt, rules)?;
        }
    }
    Ok(Authenticated::Task { claims, scheme })
}

/// Checks a DPoP proof: valid for `check` (request, token, time), signed by the key with
/// thumbprint `jkt`, carrying a nonce of [`Rules::nonces`] when there is one, and never seen
/// by [`Rules::replay`] before — remembered only if it passes everything else.
pub fn check_proof<K>(
    proof: &str,
    check: &ProofCheck<'_>,
    jkt: &str,
    rules: &Rules<'_, K>,
) -> Result<VerifiedProof, Refusal> {
    let verified = dpop::verify_proof(proof, check).map_err(Refusal::Proof)?;
    if verified.jkt != jkt {
        return Err(Refusal::KeyMismatch);
    }
    if let Some(nonces) = rules.nonces
        && verified
            .nonce
            .as_deref()
            .is_none_or(|nonce| nonces.check(nonce, rules.now).is_err())
    {
        return Err(Refusal::UseNonce);
    }
    if !rules.replay.first_use(&verified, rules.now) {
        return Err(Refusal::Replay);
    }
    Ok(verified)
}

/// Resolves a token header's `kid` with `keys`: the key lookup every verification uses.
pub fn key_resolver<'a, K>(
    keys: &'a dyn Fn(&str) -> Option<K>,
) -> impl Fn(&Header) -> Result<K, TokenError> + 'a {
    move |header| {
        header
            .kid
            .as_deref()
            .and_then(keys)
            .ok_or(TokenError::UnknownKey)
    }
}

#[cfg(test)]
#[path = "authn_tests.rs"]
mod tests;
