//! The trust domain's key ring in memory: the published public keys (next, current, previous),
//! the current signing key unsealed with the master key, and the bundle sequence.
//!
//! The ring is loaded from the store at start and re-read periodically, so a rotation made by
//! another replica is picked up; a key that does not unseal stops the server from starting
//! instead of being replaced.

use std::collections::HashMap;
use std::sync::Arc;

use aims_store::{KeySet, KeyState, StoredKey};
use aims_token::jwk::PublicJwk;
use aims_token::jws::VerifyingKey;
use aims_token::master::MasterKey;
use aims_token::signing::SigningKey;
use ring::rand::SystemRandom;
use secrecy::ExposeSecret;

/// Purpose string binding sealed signing keys to their role.
pub const SEAL_PURPOSE_SIGNING_KEY: &str = "signing-key";

/// Why the key ring could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// No key is in the `Current` state.
    #[error("the store holds no current signing key")]
    NoCurrentKey,
    /// A key did not unseal or parse.
    #[error("signing key {kid} cannot be loaded: {source}")]
    Key {
        /// The key's id.
        kid: String,
        /// Why.
        source: aims_token::TokenError,
    },
}

/// The keys in use, immutable; replaced whole on reload.
pub struct KeyRing {
    /// Published public keys: next, current, previous.
    pub published: Vec<PublicJwk>,
    /// The published keys by `kid`, ready to verify tokens this trust domain issued.
    pub verifying: HashMap<String, VerifyingKey>,
    /// The key that signs.
    pub current: Arc<SigningKey>,
    /// Bundle sequence number.
    pub sequence: u64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current.kid())
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Builds the ring from stored keys, unsealing only the current key.
    pub fn load(
        set: &KeySet,
        master: &MasterKey,
        rng: &SystemRandom,
    ) -> Result<Self, KeyRingError> {
        let current = set
            .keys
            .iter()
            .find(|k| k.state == KeyState::Current)
            .ok_or(KeyRingError::NoCurrentKey)?;
        let pkcs8 = master
            .open(
                SEAL_PURPOSE_SIGNING_KEY,
                &current.kid,
                &current.sealed_private_key,
            )
            .map_err(|source| KeyRingError::Key {
                kid: current.kid.clone(),
                source,
            })?;
        let signing =
            SigningKey::from_pkcs8(&current.kid, pkcs8.expose_secret(), rng).map_err(|source| {
                KeyRingError::Key {
                    kid: current.kid.clone(),
                    source,
                }
            })?;
        // Publish in a stable order: next, current, previous.
        let mut published = Vec::with_capacity(3);
        for state in [KeyState::Next, KeyState::Current, KeyState::Previous] {
            for key in set.keys.iter().filter(|k| k.state == state) {
                published.push(PublicJwk::parse(&key.public_jwk).map_err(|source| {
                    KeyRingError::Key {
                        kid: key.kid.clone(),
                        source,
                    }
                })?);
            }
        }
        let verifying = published
            .iter()
            .map(|jwk| {
                serde_json::to_value(jwk)
                    .map_err(|_| aims_token::TokenError::BadJwk("cannot serialize"))
                    .and_then(|value| VerifyingKey::from_jwk(&value))
                    .map(|(key, _)| (jwk.kid.clone(), key))
                    .map_err(|source| KeyRingError::Key {
                        kid: jwk.kid.clone(),
                        source,
                    })
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(Self {
            published,
            verifying,
            current: Arc::new(signing),
            sequence: set.sequence,
        })
    }
}

/// Generates a new key and seals it for storage in `state`.
pub fn generate_stored_key(
    master: &MasterKey,
    rng: &SystemRandom,
    state: KeyState,
    now: time::OffsetDateTime,
) -> Result<StoredKey, aims_token::TokenError> {
    let generated = SigningKey::generate(rng)?;
    let kid = generated.key.kid().to_owned();
    let sealed = master.seal(
        rng,
        SEAL_PURPOSE_SIGNING_KEY,
        &kid,
        generated.pkcs8.expose_secret(),
    )?;
    let public_jwk = serde_json::to_string(generated.key.public_jwk())
        .map_err(|_| aims_token::TokenError::BadJwk("cannot serialize"))?;
    Ok(StoredKey {
        kid,
        alg: aims_token::jwk::ALG_ES256.to_owned(),
        state,
        created_at: now,
        public_jwk,
        sealed_private_key: sealed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_publishes_next_current_previous_and_unseals_current() {
        let rng = SystemRandom::new();
        let master = MasterKey::generate(&rng).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let keys = [
            KeyState::Previous,
            KeyState::Current,
            KeyState::Next,
            KeyState::Retired,
        ]
        .into_iter()
        .map(|s| generate_stored_key(&master, &rng, s, now).unwrap())
        .collect::<Vec<_>>();
        let set = KeySet {
            keys: keys.clone(),
            sequence: 4,
        };
        let ring = KeyRing::load(&set, &master, &rng).unwrap();
        let kids: Vec<_> = ring.published.iter().map(|k| k.kid.clone()).collect();
        assert_eq!(
            kids,
            vec![
                keys[2].kid.clone(),
                keys[1].kid.clone(),
                keys[0].kid.clone()
            ]
        );
        assert_eq!(ring.current.kid(), keys[1].kid);

        let other = MasterKey::generate(&rng).unwrap();
        assert!(matches!(
            KeyRing::load(&set, &other, &rng),
            Err(KeyRingError::Key { .. })
        ));
    }
}
