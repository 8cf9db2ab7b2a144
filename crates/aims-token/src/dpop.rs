//! DPoP proofs (RFC 9449): minting them with an agent's key and checking them at the token
//! endpoint and at every enforcement point, with a replay cache.
//!
//! A proof is a JWT with `typ: dpop+jwt`, signed by the key in its own `jwk` header (ES256, or
//! Ed25519 under either name: `EdDSA` or `Ed25519`), whose claims bind it to one request: `htm` (method), `htu` (URI without query and
//! fragment), `iat`, a unique `jti` and, when it accompanies an access token, `ath` (the
//! token's SHA-256, base64url). [`verify_proof`] checks all of that and returns the key's
//! thumbprint, which the caller compares with the token's `cnf.jkt`; [`ReplayCache`] then
//! refuses a second use of the same proof. A proof may carry the `nonce` a server handed out
//! (RFC 9449 §8–9); whether one is required, and which are valid, is the server's to decide.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use ring::digest;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde_json::{Value, json};

use crate::TokenError;
use crate::agent_key::AgentKey;
use crate::codec::b64url;
use crate::jws::{self, Alg};

/// Algorithms a DPoP proof may use: those of an agent's key, advertised in the metadata's
/// `dpop_signing_alg_values_supported` and in DPoP challenges' `algs`.
pub const PROOF_ALGS: &[Alg] = crate::agent_key::ALGS;
/// Longest accepted proof.
pub const MAX_PROOF_LEN: usize = 4 * 1024;
/// How old a proof may be (from its `iat`), seconds.
pub const MAX_AGE_S: i64 = 60;
/// How far in the future a proof's `iat` may be (clock skew), seconds.
pub const FUTURE_SKEW_S: i64 = 5;
/// Longest accepted `jti`.
const MAX_JTI_LEN: usize = 128;
/// Longest accepted `nonce`.
const MAX_NONCE_LEN: usize = 256;

/// `ath`: the base64url SHA-256 of an access token.
pub fn access_token_hash(access_token: &str) -> String {
    b64url(digest::digest(&digest::SHA256, access_token.as_bytes()).as_ref())
}

/// The `htu` form of a URL: without query and fragment (RFC 9449 §4.3).
pub fn htu(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url.get(..end).unwrap_or(url)
}

/// Signs a proof for `method` on `url` at `now` (Unix seconds), for `access_token` when one
/// is sent with it.
pub fn sign_proof(
    key: &AgentKey,
    rng: &SystemRandom,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now: i64,
) -> Result<String, TokenError> {
    sign_proof_with_nonce(key, rng, method, url, access_token, None, now)
}

/// [`sign_proof`] carrying the `nonce` the server handed out (its `DPoP-Nonce`), if any.
pub fn sign_proof_with_nonce(
    key: &AgentKey,
    rng: &SystemRandom,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
    now: i64,
) -> Result<String, TokenError> {
    let mut jti = [0u8; 16];
    rng.fill(&mut jti).map_err(|_| TokenError::Random)?;
    let mut claims = json!({
        "jti": b64url(&jti),
        "htm": method,
        "htu": htu(url),
        "iat": now,
    });
    if let Value::Object(map) = &mut claims {
        if let Some(token) = access_token {
            map.insert("ath".to_owned(), Value::String(access_token_hash(token)));
        }
        if let Some(nonce) = nonce {
            map.insert("nonce".to_owned(), Value::String(nonce.to_owned()));
        }
    }
    key.sign_self_signed(rng, jws::TYP_DPOP, &claims)
}

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The request's method.
    pub method: &'a str,
    /// The request's full URL as this server is addressed (query and fragment are ignored).
    pub url: &'a str,
    /// The access token sent with the proof, if any: `ath` is then required and must match;
    /// without one, `ath` must be absent.
    pub access_token: Option<&'a str>,
    /// Now, Unix seconds.
    pub now: i64,
}

/// A proof that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `iat`.
    pub iat: i64,
    /// The server-provided `nonce` it carries, if any.
    pub nonce: Option<String>,
}

impl VerifiedProof {
    /// When the replay cache may forget this proof: once it is too old to be accepted.
    pub fn forget_after(&self) -> i64 {
        self.iat.saturating_add(MAX_AGE_S)
    }

    /// A fixed-length replay key (SHA-256 of thumbprint and `jti`, hex).
    pub fn replay_key(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(self.jkt.as_bytes());
        ctx.update(b".");
        ctx.update(self.jti.as_bytes());
        ctx.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Verifies a proof's signature and claims against `check`. Replay is the caller's to check
/// with [`ReplayCache::first_use`].
pub fn verify_proof(proof: &str, check: &ProofCheck<'_>) -> Result<VerifiedProof, TokenError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(TokenError::TooLarge);
    }
    let (verified, key) = jws::verify_self_signed(proof, jws::TYP_DPOP, PROOF_ALGS)?;
    let claims = &verified.claims;
    let text = |name: &'static str| claims.get(name).and_then(Value::as_str);
    let jti = text("jti").ok_or(TokenError::Claims("jti is required"))?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(TokenError::Claims("jti must be 1-128 characters"));
    }
    if text("htm") != Some(check.method) {
        return Err(TokenError::Claims("htm does not match the request method"));
    }
    if text("htu").map(htu) != Some(htu(check.url)) {
        return Err(TokenError::Claims("htu does not match the request URI"));
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(TokenError::Claims("iat must be an integer"))?;
    if iat > check.now.saturating_add(FUTURE_SKEW_S) {
        return Err(TokenError::NotYetValid);
    }
    if iat < check.now.saturating_sub(MAX_AGE_S) {
        return Err(TokenError::Expired);
    }
    match (check.access_token, text("ath")) {
        (Some(token), Some(ath)) if access_token_hash(token) == ath => {}
        (Some(_), _) => return Err(TokenError::Claims("ath does not match the access token")),
        (None, None) => {}
        (None, Some(_)) => return Err(TokenError::Claims("ath without an access token")),
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(nonce)) if !nonce.is_empty() && nonce.len() <= MAX_NONCE_LEN => {
            Some(nonce.clone())
        }
        Some(_) => {
            return Err(TokenError::Claims(
                "nonce must be a string of 1-256 characters",
            ));
        }
    };
    Ok(VerifiedProof {
        jkt: key.thumbprint(),
        jti: jti.to_owned(),
        iat,
        nonce,
    })
}

/// Remembers recently used proofs so each is accepted once. Bounded in memory and in time:
/// a proof is forgotten once it could no longer be accepted anyway (oldest first, at every
/// use, each proof once), and when the cache is full of proofs that are all still fresh, new
/// proofs are refused (fail closed) — at the cost of one lookup, not a scan.
#[derive(Debug)]
pub struct ReplayCache {
    seen: Mutex<Seen>,
    capacity: usize,
}

/// The proofs remembered, by replay key and by when they may be forgotten.
#[derive(Debug, Default)]
struct Seen {
    by_key: HashMap<String, i64>,
    by_expiry: BTreeSet<(i64, String)>,
}

impl ReplayCache {
    /// A cache holding at most `capacity` proofs.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(Seen::default()),
            capacity,
        }
    }

    /// Records `proof` and says whether this is its first use. Of concurrent callers with the
    /// same proof exactly one gets `true`. Returns `false` when the cache is full.
    pub fn first_use(&self, proof: &VerifiedProof, now: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((forget_after, _)) = seen.by_expiry.first()
            && *forget_after < now
        {
            if let Some((_, key)) = seen.by_expiry.pop_first() {
                seen.by_key.remove(&key);
            }
        }
        let key = proof.replay_key();
        if seen.by_key.contains_key(&key) || seen.by_key.len() >= self.capacity {
            return false;
        }
        let forget_after = proof.forget_after();
        seen.by_expiry.insert((forget_after, key.clone()));
        seen.by_key.insert(key, forget_after);
        true
    }

    /// How many proofs it remembers.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_key::AgentKeyKind;

    const NOW: i64 = 1_800_000_000;
    const URL: &str = "https://aims.example/v1/decisions";

    fn key(kind: AgentKeyKind) -> AgentKey {
        AgentKey::generate(kind, &SystemRandom::new()).unwrap()
    }

    fn check(access_token: Option<&str>) -> ProofCheck<'_> {
        ProofCheck {
            method: "POST",
            url: URL,
            access_token,
            now: NOW,
        }
    }

    #[test]
    fn a_fresh_proof_verifies_with_either_algorithm() {
        for kind in [AgentKeyKind::P256, AgentKeyKind::Ed25519] {
            let key = key(kind);
            let rng = SystemRandom::new();
            let proof = sign_proof(&key, &rng, "POST", URL, Some("tok"), NOW).unwrap();
            let verified = verify_proof(&proof, &check(Some("tok"))).unwrap();
            assert_eq!(verified.jkt, key.thumbprint());
        }
        // Ed25519 under its fully specified name (RFC 9864) too.
        let key = key(AgentKeyKind::Ed25519).signing_as(Alg::Ed25519).unwrap();
        let rng = SystemRandom::new();
        let proof = sign_proof(&key, &rng, "POST", URL, Some("tok"), NOW).unwrap();
        let header = proof.split('.').next().unwrap();
        let header = crate::codec::b64url_decode(header).unwrap();
        assert!(
            String::from_utf8(header)
                .unwrap()
                .contains(r#""alg":"Ed25519""#)
        );
        let verified = verify_proof(&proof, &check(Some("tok"))).unwrap();
        assert_eq!(verified.jkt, key.thumbprint());
    }

    #[test]
    fn a_server_nonce_is_carried_and_must_be_a_short_string() {
        let key = key(AgentKeyKind::P256);
        let rng = SystemRandom::new();
        let bare = sign_proof(&key, &rng, "POST", URL, None, NOW).unwrap();
        assert_eq!(verify_proof(&bare, &check(None)).unwrap().nonce, None);
        let with = sign_proof_with_nonce(&key, &rng, "POST", URL, None, Some("n-1"), NOW).unwrap();
        assert_eq!(
            verify_proof(&with, &check(None)).unwrap().nonce.as_deref(),
            Some("n-1")
        );
        for bad in [json!(""), json!(7), json!("x".repeat(257))] {
            let claims = json!({"jti": "j", "htm": "POST", "htu": URL, "iat": NOW, "nonce": bad});
            let proof = key.sign_self_signed(&rng, jws::TYP_DPOP, &claims).unwrap();
            assert!(verify_proof(&proof, &check(None)).is_err(), "{claims}");
        }
    }

    #[test]
    fn every_binding_is_checked() {
        let key = key(AgentKeyKind::P256);
        let rng = SystemRandom::new();
        let proof = sign_proof(&key, &rng, "POST", URL, Some("tok"), NOW).unwrap();
        let get = ProofCheck {
            method: "GET",
            ..check(Some("tok"))
        };
        assert!(verify_proof(&proof, &get).is_err(), "method");
        let other = ProofCheck {
            url: "https://aims.example/oauth2/token",
            ..check(Some("tok"))
        };
        assert!(verify_proof(&proof, &other).is_err(), "uri");
        let query = ProofCheck {
            url: "https://aims.example/v1/decisions?x=1",
            ..check(Some("tok"))
        };
        assert!(verify_proof(&proof, &query).is_ok(), "query is ignored");
        assert!(verify_proof(&proof, &check(Some("other"))).is_err(), "ath");
        assert!(
            verify_proof(&proof, &check(None)).is_err(),
            "ath without token"
        );
        let bare = sign_proof(&key, &rng, "POST", URL, None, NOW).unwrap();
        assert!(
            verify_proof(&bare, &check(Some("tok"))).is_err(),
            "missing ath"
        );
        let old = ProofCheck {
            now: NOW + MAX_AGE_S + 1,
            ..check(Some("tok"))
        };
        assert!(matches!(
            verify_proof(&proof, &old),
            Err(TokenError::Expired)
        ));
        let early = ProofCheck {
            now: NOW - FUTURE_SKEW_S - 1,
            ..check(Some("tok"))
        };
        assert!(matches!(
            verify_proof(&proof, &early),
            Err(TokenError::NotYetValid)
        ));
    }

    #[test]
    fn other_token_kinds_are_not_proofs() {
        let key = key(AgentKeyKind::P256);
        let rng = SystemRandom::new();
        let claims = json!({"jti": "x", "htm": "POST", "htu": URL, "iat": NOW});
        let attestation = key
            .sign_self_signed(&rng, jws::TYP_ATTESTATION, &claims)
            .unwrap();
        assert!(matches!(
            verify_proof(&attestation, &check(None)),
            Err(TokenError::Type)
        ));
    }

    #[test]
    fn a_proof_is_accepted_once() {
        let key = key(AgentKeyKind::Ed25519);
        let rng = SystemRandom::new();
        let proof = sign_proof(&key, &rng, "POST", URL, None, NOW).unwrap();
        let verified = verify_proof(&proof, &check(None)).unwrap();
        let cache = ReplayCache::new(2);
        assert!(cache.first_use(&verified, NOW));
        assert!(!cache.first_use(&verified, NOW));
        let second = verify_proof(
            &sign_proof(&key, &rng, "POST", URL, None, NOW).unwrap(),
            &check(None),
        )
        .unwrap();
        assert!(cache.first_use(&second, NOW));
        let third = verify_proof(
            &sign_proof(&key, &rng, "POST", URL, None, NOW).unwrap(),
            &check(None),
        )
        .unwrap();
        assert!(
            !cache.first_use(&third, NOW),
            "full of fresh proofs: refused"
        );
        assert!(
            cache.first_use(&third, NOW + MAX_AGE_S + 1),
            "old proofs age out"
        );
        // Forgotten in time, not only when full: the two old proofs went at that use.
        assert_eq!(cache.len(), 1);
        let big = ReplayCache::new(1000);
        assert!(big.first_use(&verified, NOW));
        assert!(big.first_use(&second, NOW));
        assert!(big.first_use(&third, NOW + MAX_AGE_S + 1));
        assert_eq!(big.len(), 1, "aged-out proofs are dropped at the next use");
    }

    #[test]
    fn concurrent_uses_of_one_proof_succeed_once() {
        let key = key(AgentKeyKind::P256);
        let rng = SystemRandom::new();
        let proof = sign_proof(&key, &rng, "POST", URL, None, NOW).unwrap();
        let verified = verify_proof(&proof, &check(None)).unwrap();
        let cache = std::sync::Arc::new(ReplayCache::new(1000));
        let winners: usize = (0..8)
            .map(|_| {
                let (cache, verified) = (cache.clone(), verified.clone());
                std::thread::spawn(move || usize::from(cache.first_use(&verified, NOW)))
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(winners, 1);
    }
}
