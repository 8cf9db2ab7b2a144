//! Trust-domain signing keys: ES256 (ECDSA P-256, SHA-256) key pairs made and held with `ring`.
//!
//! A key is generated once, stored as PKCS#8 sealed under the master key, and loaded back with
//! [`SigningKey::from_pkcs8`]. Key ids are 128 random bits, so a `kid` is never reused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use secrecy::SecretBox;

use crate::TokenError;
use crate::jwk::PublicJwk;

/// An ES256 signing key with its id and public JWK.
pub struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
    jwk: PublicJwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A freshly generated key and its PKCS#8 encoding, to be sealed and stored.
pub struct GeneratedKey {
    /// The usable key.
    pub key: SigningKey,
    /// PKCS#8 DER of the private key.
    pub pkcs8: SecretBox<[u8]>,
}

impl SigningKey {
    /// Generates a new key with a new random `kid`.
    pub fn generate(rng: &SystemRandom) -> Result<GeneratedKey, TokenError> {
        let mut kid = [0u8; 16];
        rng.fill(&mut kid).map_err(|_| TokenError::Random)?;
        let kid = URL_SAFE_NO_PAD.encode(kid);
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
            .map_err(|_| TokenError::Random)?;
        let key = Self::from_pkcs8(&kid, document.as_ref(), rng)?;
        Ok(GeneratedKey {
            key,
            pkcs8: SecretBox::new(document.as_ref().to_vec().into_boxed_slice()),
        })
    }

    /// Loads a stored key.
    pub fn from_pkcs8(kid: &str, pkcs8: &[u8], rng: &SystemRandom) -> Result<Self, TokenError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, rng)
            .map_err(|_| TokenError::BadKey)?;
        let jwk = PublicJwk::from_p256_point(kid, pair.public_key().as_ref())?;
        Ok(Self {
            kid: kid.to_owned(),
            pair,
            jwk,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// Signs `message`, returning the fixed-length `r || s` signature JWS uses.
    pub fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.pair
            .sign(rng, message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| TokenError::Random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    use secrecy::ExposeSecret;

    #[test]
    fn generated_keys_reload_and_verify() {
        let rng = SystemRandom::new();
        let generated = SigningKey::generate(&rng).unwrap();
        let reloaded =
            SigningKey::from_pkcs8(generated.key.kid(), generated.pkcs8.expose_secret(), &rng)
                .unwrap();
        assert_eq!(reloaded.public_jwk(), generated.key.public_jwk());
        let sig = reloaded.sign(&rng, b"hello").unwrap();
        assert_eq!(sig.len(), 64);
        let public = UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_FIXED,
            reloaded.pair.public_key().as_ref(),
        );
        assert!(public.verify(b"hello", &sig).is_ok());
        assert!(public.verify(b"hellp", &sig).is_err());
    }

    #[test]
    fn kids_are_unique_and_opaque() {
        let rng = SystemRandom::new();
        let a = SigningKey::generate(&rng).unwrap();
        let b = SigningKey::generate(&rng).unwrap();
        assert_ne!(a.key.kid(), b.key.kid());
        assert_eq!(a.key.kid().len(), 22);
        assert!(!format!("{:?}", a.key).contains("pair"));
    }

    #[test]
    fn garbage_pkcs8_is_refused() {
        let rng = SystemRandom::new();
        assert!(SigningKey::from_pkcs8("k", b"not a key", &rng).is_err());
    }
}
