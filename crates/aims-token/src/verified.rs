//! The verified-token cache of one enforcement point: a task token or JWT-SVID whose
//! signature and claims were verified is not verified again until it expires.
//!
//! Entries are keyed by the SHA-256 of the whole token, so a hit is the very token that was
//! verified. A hit proves only what does not change with time: the signature (and only while
//! the key that made it is still trusted) and the claims checked against this enforcement
//! point's rules; expiry is checked again at every hit, and everything else — the revoked set,
//! the DPoP proof, the replay cache — is checked per request after the hit, as after a full
//! verification. One cache belongs to one set of rules (issuer, audiences): an enforcement
//! point with other rules keeps its own.
//!
//! Bounded: at most `capacity` entries; when full, expired entries are dropped (at most once a
//! second), and a token that still does not fit is verified every time instead of cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ring::digest;

use std::cell::RefCell;

use crate::access::{self, AccessCheck, AccessClaims};
use crate::jws::Header;
use crate::svid::{self, SvidCheck, SvidClaims};
use crate::{LEEWAY_S, TokenError};

/// Entries an enforcement point keeps by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The SHA-256 of a token, the cache's key.
pub type TokenDigest = [u8; 32];

/// What a verified token proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// A task token's claims.
    Task(AccessClaims),
    /// A JWT-SVID's claims.
    Identity(SvidClaims),
}

struct Entry {
    verified: Verified,
    /// The key that signed it: a hit needs it still trusted.
    kid: String,
    exp: i64,
    verified_at: i64,
}

struct Entries {
    map: HashMap<TokenDigest, Entry>,
    /// When expired entries were last dropped (Unix seconds).
    last_purge: i64,
}

/// The cache (see the module's documentation).
pub struct VerifiedTokens {
    entries: Mutex<Entries>,
    capacity: usize,
    hits: AtomicU64,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Entries hold claims of live tokens: only their count is shown.
        f.debug_struct("VerifiedTokens")
            .field("entries", &self.len())
            .field("capacity", &self.capacity)
            .field("hits", &self.hits())
            .finish()
    }
}

impl VerifiedTokens {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                last_purge: i64::MIN,
            }),
            capacity,
            hits: AtomicU64::new(0),
        }
    }

    /// The cache key of `token`.
    pub fn digest(token: &str) -> TokenDigest {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        key
    }

    /// What the token with `digest` proved, if it was verified, has not expired at `now`
    /// (with the usual leeway), and the key that signed it is still `trusted`.
    pub fn get(
        &self,
        digest: &TokenDigest,
        now: i64,
        trusted: &dyn Fn(&str) -> bool,
    ) -> Option<Verified> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.map.get(digest)?;
        let usable = now >= entry.verified_at
            && entry.exp > now.saturating_sub(LEEWAY_S)
            && trusted(&entry.kid);
        if !usable {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry.verified.clone())
    }

    /// Remembers that the token with `digest`, signed by key `kid`, verified at `now`.
    pub fn insert(&self, digest: TokenDigest, verified: Verified, kid: String, now: i64) {
        let exp = match &verified {
            Verified::Task(claims) => claims.exp,
            Verified::Identity(claims) => claims.exp,
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.map.len() >= self.capacity && !entries.map.contains_key(&digest) {
            if entries.last_purge == now {
                return;
            }
            let horizon = now.saturating_sub(LEEWAY_S);
            entries.map.retain(|_, e| e.exp > horizon);
            entries.last_purge = now;
            if entries.map.len() >= self.capacity {
                return;
            }
        }
        entries.map.insert(
            digest,
            Entry {
                verified,
                kid,
                exp,
                verified_at: now,
            },
        );
    }

    /// Verifies task token `token` against `check` with `resolve`, unless this cache already
    /// did (and its key is still `trusted`); remembers it when it verifies.
    ///
    /// # Errors
    /// Why the token does not verify.
    pub fn access<K>(
        &self,
        token: &str,
        check: &AccessCheck<'_>,
        resolve: impl Fn(&Header) -> Result<K, TokenError>,
        trusted: &dyn Fn(&str) -> bool,
    ) -> Result<AccessClaims, TokenError>
    where
        K: std::borrow::Borrow<crate::jws::VerifyingKey>,
    {
        let hit = |verified| match verified {
            Verified::Task(claims) => Some(claims),
            Verified::Identity(_) => None,
        };
        self.verify_once(
            token,
            check.now,
            trusted,
            hit,
            Verified::Task,
            |signed_by| access::verify(token, check, recording(&resolve, signed_by)),
        )
    }

    /// Verifies JWT-SVID `token` against `check` with `resolve`, unless this cache already did
    /// (and its key is still `trusted`); remembers it when it verifies. `check` must be the
    /// rules the cache's other SVIDs were verified under (its enforcement point's audience).
    ///
    /// # Errors
    /// Why the token does not verify.
    pub fn identity<K>(
        &self,
        token: &str,
        check: &SvidCheck<'_>,
        resolve: impl Fn(&Header) -> Result<K, TokenError>,
        trusted: &dyn Fn(&str) -> bool,
    ) -> Result<SvidClaims, TokenError>
    where
        K: std::borrow::Borrow<crate::jws::VerifyingKey>,
    {
        let hit = |verified| match verified {
            Verified::Identity(claims) => Some(claims),
            Verified::Task(_) => None,
        };
        self.verify_once(
            token,
            check.now,
            trusted,
            hit,
            Verified::Identity,
            |signed_by| svid::verify(token, check, recording(&resolve, signed_by)),
        )
    }

    /// What `token` proved, from the cache when an entry of the kind `hit` takes is usable at
    /// `now`; otherwise from `verify` (told where to note the key that signed it), remembered
    /// as `remember` makes it.
    fn verify_once<T: Clone>(
        &self,
        token: &str,
        now: i64,
        trusted: &dyn Fn(&str) -> bool,
        hit: impl FnOnce(Verified) -> Option<T>,
        remember: impl FnOnce(T) -> Verified,
        verify: impl FnOnce(&RefCell<Option<String>>) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let digest = Self::digest(token);
        if let Some(claims) = self.get(&digest, now, trusted).and_then(hit) {
            return Ok(claims);
        }
        let signed_by = RefCell::new(None);
        let claims = verify(&signed_by)?;
        if let Some(kid) = signed_by.into_inner() {
            self.insert(digest, remember(claims.clone()), kid, now);
        }
        Ok(claims)
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many lookups it answered (tokens not verified again).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// `resolve`, noting in `signed_by` the `kid` of the key it found (what an entry needs).
pub fn recording<'a, K>(
    resolve: &'a dyn Fn(&Header) -> Result<K, TokenError>,
    signed_by: &'a RefCell<Option<String>>,
) -> impl Fn(&Header) -> Result<K, TokenError> + Copy + 'a {
    move |header| {
        let key = resolve(header);
        if key.is_ok() {
            signed_by.replace(header.kid.clone());
        }
        key
    }
}
