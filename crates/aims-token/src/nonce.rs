//! Stateless nonces: a value the server can hand out without storing anything and recognise
//! later as its own, unaltered and unexpired.
//!
//! A nonce is `base64url(expires_at (8, big-endian Unix seconds) || random (16) || tag (32))`,
//! the tag an HMAC-SHA256 over a purpose label, the expiry and the random bytes. Minting one
//! costs an HMAC; checking one costs an HMAC and a constant-time comparison. That a nonce is
//! used only once is the caller's business (it remembers used ones until they expire): this
//! module only proves origin and age. Keys are either derived from the master key, so that
//! every replica recognises every other's nonces, or random per process, so that a nonce is
//! recognised only by the replica that issued it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::TokenError;
use crate::master::MasterKey;

const EXPIRY_LEN: usize = 8;
const RANDOM_LEN: usize = 16;
const TAG_LEN: usize = 32;
const NONCE_LEN: usize = EXPIRY_LEN + RANDOM_LEN + TAG_LEN;

/// Longest encoded nonce (anything longer is refused unread).
pub const MAX_NONCE_LEN: usize = NONCE_LEN.div_ceil(3) * 4;

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Not one of ours: malformed, altered, for another purpose, or from another key.
    #[error("the nonce was not issued here")]
    Unknown,
    /// Ours, but past its expiry.
    #[error("the nonce has expired")]
    Expired,
}

/// Mints and checks nonces for one purpose under one key.
pub struct NonceKey {
    key: hmac::Key,
    purpose: &'static str,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NonceKey({})", self.purpose)
    }
}

impl NonceKey {
    /// A key derived from the master key for `purpose`: the same on every replica.
    pub fn derived(master: &MasterKey, purpose: &'static str) -> Self {
        Self {
            key: master.derive_mac_key(purpose),
            purpose,
        }
    }

    /// A random key for `purpose`: nonces are recognised by this process only.
    pub fn random(rng: &SystemRandom, purpose: &'static str) -> Result<Self, TokenError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, rng).map_err(|_| TokenError::Random)?;
        Ok(Self { key, purpose })
    }

    /// A new nonce that expires at `expires_at` (Unix seconds).
    pub fn mint(&self, rng: &SystemRandom, expires_at: i64) -> Result<String, TokenError> {
        let mut raw = [0u8; NONCE_LEN];
        let (head, tag) = raw.split_at_mut(EXPIRY_LEN + RANDOM_LEN);
        let (expiry, random) = head.split_at_mut(EXPIRY_LEN);
        expiry.copy_from_slice(&expires_at.to_be_bytes());
        rng.fill(random).map_err(|_| TokenError::Random)?;
        tag.copy_from_slice(self.tag(head).as_ref());
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// Checks that `nonce` is one of this key's, unaltered and not expired at `now`; returns
    /// its expiry.
    pub fn check(&self, nonce: &str, now: i64) -> Result<i64, NonceError> {
        if nonce.len() > MAX_NONCE_LEN {
            return Err(NonceError::Unknown);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| NonceError::Unknown)?;
        if raw.len() != NONCE_LEN {
            return Err(NonceError::Unknown);
        }
        let (head, tag) = raw.split_at(EXPIRY_LEN + RANDOM_LEN);
        hmac::verify(&self.key, &self.message(head), tag).map_err(|_| NonceError::Unknown)?;
        let expiry: [u8; EXPIRY_LEN] = head
            .get(..EXPIRY_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(NonceError::Unknown)?;
        let expires_at = i64::from_be_bytes(expiry);
        if expires_at <= now {
            return Err(NonceError::Expired);
        }
        Ok(expires_at)
    }

    fn message(&self, head: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(self.purpose.len() + 1 + head.len());
        message.extend_from_slice(self.purpose.as_bytes());
        message.push(0);
        message.extend_from_slice(head);
        message
    }

    fn tag(&self, head: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, &self.message(head))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    fn master() -> (MasterKey, SystemRandom) {
        let rng = SystemRandom::new();
        (MasterKey::generate(&rng).unwrap(), rng)
    }

    #[test]
    fn a_minted_nonce_checks_until_it_expires() {
        let (master, rng) = master();
        let key = NonceKey::derived(&master, "test");
        let nonce = key.mint(&rng, 1_000).unwrap();
        assert!(nonce.len() <= MAX_NONCE_LEN);
        assert_eq!(key.check(&nonce, 999), Ok(1_000));
        assert_eq!(key.check(&nonce, 1_000), Err(NonceError::Expired));
        assert_ne!(nonce, key.mint(&rng, 1_000).unwrap(), "random part");
    }

    #[test]
    fn altered_and_malformed_nonces_are_unknown() {
        let (master, rng) = master();
        let key = NonceKey::derived(&master, "test");
        let nonce = key.mint(&rng, 1_000).unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        // A later expiry, claimed without the key.
        raw[7] ^= 1;
        assert_eq!(
            key.check(&URL_SAFE_NO_PAD.encode(&raw), 0),
            Err(NonceError::Unknown)
        );
        for bad in ["", "!!!", &"A".repeat(MAX_NONCE_LEN + 1), &nonce[..10]] {
            assert_eq!(key.check(bad, 0), Err(NonceError::Unknown), "{bad}");
        }
    }

    #[test]
    fn purposes_and_master_keys_separate_nonces() {
        let (master, rng) = master();
        let nonce = NonceKey::derived(&master, "a").mint(&rng, 1_000).unwrap();
        let other_purpose = NonceKey::derived(&master, "b");
        assert_eq!(other_purpose.check(&nonce, 0), Err(NonceError::Unknown));
        let (stranger, _) = super::tests::master();
        let other_master = NonceKey::derived(&stranger, "a");
        assert_eq!(other_master.check(&nonce, 0), Err(NonceError::Unknown));
    }

    #[test]
    fn derived_keys_agree_across_replicas_and_random_ones_do_not() {
        let (master, rng) = master();
        let copy = MasterKey::from_base64(master.to_base64().expose_secret()).unwrap();
        let nonce = NonceKey::derived(&master, "p").mint(&rng, 9).unwrap();
        assert_eq!(NonceKey::derived(&copy, "p").check(&nonce, 0), Ok(9));
        let mine = NonceKey::random(&rng, "p").unwrap();
        let theirs = NonceKey::random(&rng, "p").unwrap();
        let nonce = mine.mint(&rng, 9).unwrap();
        assert_eq!(mine.check(&nonce, 0), Ok(9));
        assert_eq!(theirs.check(&nonce, 0), Err(NonceError::Unknown));
    }
}
