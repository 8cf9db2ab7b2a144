//! The master key: 32 random bytes that seal signing keys and stored secrets with AES-256-GCM.
//!
//! Sealed blobs are `version (1) || nonce (12) || ciphertext+tag`, and every seal binds a
//! context (purpose and record id) as associated data, so a blob moved to another record does
//! not open. This module does not read or write files; the server decides where the key lives.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::TokenError;

const SEAL_VERSION: u8 = 1;
/// HKDF salt of keys derived from the master key.
const DERIVATION_SALT: &[u8] = b"aims master key derivation v1";

/// The deployment's master key. Its bytes never appear in `Debug` output.
pub struct MasterKey {
    bytes: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate(rng: &SystemRandom) -> Result<Self, TokenError> {
        let mut bytes = Box::new([0u8; 32]);
        rng.fill(bytes.as_mut()).map_err(|_| TokenError::Random)?;
        Ok(Self {
            bytes: SecretBox::new(bytes),
        })
    }

    /// Decodes the base64 form (as in the key file or `AIMS_MASTER_KEY`); surrounding
    /// whitespace is ignored.
    pub fn from_base64(encoded: &str) -> Result<Self, TokenError> {
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| TokenError::BadMasterKey)?;
        let array: [u8; 32] = decoded.try_into().map_err(|_| TokenError::BadMasterKey)?;
        Ok(Self {
            bytes: SecretBox::new(Box::new(array)),
        })
    }

    /// The base64 form, for writing the key file.
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(STANDARD.encode(self.bytes.expose_secret()))
    }

    /// An HMAC-SHA256 key for `purpose`, derived with HKDF-SHA256: the same on every replica
    /// holding this master key, and independent of every other purpose's key and of the
    /// sealing key.
    pub fn derive_mac_key(&self, purpose: &str) -> hmac::Key {
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVATION_SALT).extract(self.bytes.expose_secret());
        let info = [purpose.as_bytes()];
        match prk.expand(&info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            // Only an output longer than 255 hashes fails; an HMAC key is one hash.
            Err(_) => hmac::Key::new(hmac::HMAC_SHA256, self.bytes.expose_secret()),
        }
    }

    fn aead_key(&self) -> Result<LessSafeKey, TokenError> {
        let unbound = UnboundKey::new(&AES_256_GCM, self.bytes.expose_secret())
            .map_err(|_| TokenError::BadMasterKey)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Seals `plaintext` for the record `(purpose, id)`.
    pub fn seal(
        &self,
        rng: &SystemRandom,
        purpose: &str,
        id: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| TokenError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.aead_key()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context(purpose, id)),
                &mut in_out,
            )
            .map_err(|_| TokenError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(SEAL_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens a blob sealed for `(purpose, id)`.
    pub fn open(
        &self,
        purpose: &str,
        id: &str,
        sealed: &[u8],
    ) -> Result<SecretBox<[u8]>, TokenError> {
        let (&version, rest) = sealed.split_first().ok_or(TokenError::Unseal)?;
        if version != SEAL_VERSION || rest.len() < NONCE_LEN {
            return Err(TokenError::Unseal);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TokenError::Unseal)?;
        let mut in_out = ciphertext.to_vec();
        let plain_len = self
            .aead_key()?
            .open_in_place(nonce, Aad::from(context(purpose, id)), &mut in_out)
            .map_err(|_| TokenError::Unseal)?
            .len();
        in_out.truncate(plain_len);
        Ok(SecretBox::new(in_out.into_boxed_slice()))
    }
}

fn context(purpose: &str, id: &str) -> Vec<u8> {
    // Length-prefix the purpose so ("a:b", "c") and ("a", "b:c") differ.
    let mut aad = Vec::with_capacity(8 + purpose.len() + id.len());
    aad.extend_from_slice(&(purpose.len() as u64).to_be_bytes());
    aad.extend_from_slice(purpose.as_bytes());
    aad.extend_from_slice(id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips() {
        let rng = SystemRandom::new();
        let key = MasterKey::generate(&rng).unwrap();
        let sealed = key.seal(&rng, "signing-key", "kid1", b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        let opened = key.open("signing-key", "kid1", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), b"secret");
    }

    #[test]
    fn wrong_key_context_or_tampering_fails() {
        let rng = SystemRandom::new();
        let key = MasterKey::generate(&rng).unwrap();
        let other = MasterKey::generate(&rng).unwrap();
        let sealed = key.seal(&rng, "signing-key", "kid1", b"secret").unwrap();
        assert!(other.open("signing-key", "kid1", &sealed).is_err());
        assert!(key.open("signing-key", "kid2", &sealed).is_err());
        assert!(key.open("secret", "kid1", &sealed).is_err());
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(key.open("signing-key", "kid1", &tampered).is_err());
        assert!(key.open("signing-key", "kid1", &[]).is_err());
    }

    #[test]
    fn base64_form_round_trips_and_rejects_bad_lengths() {
        let rng = SystemRandom::new();
        let key = MasterKey::generate(&rng).unwrap();
        let again = MasterKey::from_base64(key.to_base64().expose_secret()).unwrap();
        let sealed = key.seal(&rng, "p", "i", b"x").unwrap();
        assert!(again.open("p", "i", &sealed).is_ok());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
    }
}
