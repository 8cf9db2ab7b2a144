//! The agent's own key pair, held on the agent side: it signs the agent's proof-of-possession
//! messages (attestation proofs now, DPoP proofs later) and is never sent anywhere — only its
//! public JWK and RFC 7638 thumbprint leave the process.
//!
//! Keys are ECDSA P-256 (`ES256`) or Ed25519 (signing as `EdDSA`; a proof that names the
//! fully specified `Ed25519`, RFC 9864, verifies too), made and held with `ring`, stored as
//! unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) whose protection at rest is the
//! caller's job. `Debug` shows the kind and thumbprint, never key material.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use serde_json::{Value, json};

use crate::TokenError;
use crate::codec::{pem_armor, pem_unarmor};
use crate::jws::{self, Alg, VerifyingKey};

const PEM_LABEL: &str = "PRIVATE KEY";

/// The algorithms an agent's proofs may name: `ES256`, and Ed25519 by either of its names.
pub const ALGS: &[Alg] = &[Alg::Es256, Alg::EdDsa, Alg::Ed25519];

/// Which kind of key an agent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentKeyKind {
    /// ECDSA P-256, signs `ES256`.
    P256,
    /// Ed25519, signs `EdDSA`.
    Ed25519,
}

/// An agent's private key with its public half.
pub struct AgentKey {
    pair: Pair,
    pkcs8: SecretBox<[u8]>,
    public: VerifyingKey,
    /// The name its signatures' `alg` header carries.
    alg: Alg,
}

enum Pair {
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl AgentKey {
    /// Generates a new key of `kind`.
    pub fn generate(kind: AgentKeyKind, rng: &SystemRandom) -> Result<Self, TokenError> {
        let document = match kind {
            AgentKeyKind::P256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
            }
            AgentKeyKind::Ed25519 => Ed25519KeyPair::generate_pkcs8(rng),
        }
        .map_err(|_| TokenError::Random)?;
        Self::from_pkcs8_der(document.as_ref(), rng)
    }

    /// Loads a key from PKCS#8 PEM, as written by [`AgentKey::to_pkcs8_pem`] or by
    /// `openssl genpkey` (P-256 with its public key inside; Ed25519 as PKCS#8 v1 or v2).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, TokenError> {
        let der = pem_unarmor(PEM_LABEL, pem)?;
        Self::from_pkcs8_der(der.expose_secret(), &SystemRandom::new())
    }

    fn from_pkcs8_der(der: &[u8], rng: &SystemRandom) -> Result<Self, TokenError> {
        let (pair, public) = if let Ok(pair) =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, rng)
        {
            let public = VerifyingKey::from_p256_point(pair.public_key().as_ref())?;
            (Pair::P256(pair), public)
        } else if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let public = VerifyingKey::from_ed25519(pair.public_key().as_ref())?;
            (Pair::Ed25519(pair), public)
        } else {
            return Err(TokenError::BadKey);
        };
        Ok(Self {
            pair,
            pkcs8: SecretBox::new(der.to_vec().into_boxed_slice()),
            alg: public.alg(),
            public,
        })
    }

    /// The same key, naming its algorithm `alg` in what it signs: an Ed25519 key signs as
    /// `EdDSA` unless told `Ed25519` (RFC 9864's fully specified name). Refused with
    /// [`TokenError::Algorithm`] when the key does not make `alg` signatures.
    pub fn signing_as(mut self, alg: Alg) -> Result<Self, TokenError> {
        if !self.public.verifies(alg) {
            return Err(TokenError::Algorithm);
        }
        self.alg = alg;
        Ok(self)
    }

    /// The kind of key.
    pub fn kind(&self) -> AgentKeyKind {
        match self.pair {
            Pair::P256(_) => AgentKeyKind::P256,
            Pair::Ed25519(_) => AgentKeyKind::Ed25519,
        }
    }

    /// The algorithm this key signs with, as its `alg` header names it.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The private key as PKCS#8 PEM, base64 wrapped at 64 characters.
    pub fn to_pkcs8_pem(&self) -> SecretString {
        pem_armor(PEM_LABEL, self.pkcs8.expose_secret())
    }

    /// The public JWK (`kty`, `crv`, `x`, and `y` for P-256); no private members.
    pub fn public_jwk(&self) -> Value {
        self.public.to_jwk()
    }

    /// The public key as a verifier sees it.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The RFC 7638 thumbprint of the public key.
    pub fn thumbprint(&self) -> String {
        self.public.thumbprint()
    }

    /// Signs `claims` as a compact JWS whose header is `{"alg", "jwk", "typ"}`, with the
    /// public key in `jwk`, for [`jws::verify_self_signed`].
    pub fn sign_self_signed(
        &self,
        rng: &SystemRandom,
        typ: &str,
        claims: &Value,
    ) -> Result<String, TokenError> {
        if typ.is_empty() {
            return Err(TokenError::Header("typ is empty"));
        }
        let header = json!({ "alg": self.alg().as_str(), "jwk": self.public_jwk(), "typ": typ });
        let header =
            serde_json::to_vec(&header).map_err(|_| TokenError::Header("cannot encode header"))?;
        jws::assemble(&header, claims, |input| self.sign_raw(rng, input))
    }

    /// Signs raw bytes; crate-private so nothing outside signs anything but a JWS.
    pub(crate) fn sign_raw(
        &self,
        rng: &SystemRandom,
        message: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        match &self.pair {
            Pair::P256(pair) => pair
                .sign(rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| TokenError::Random),
            Pair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKey")
            .field("kind", &self.kind())
            .field("thumbprint", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::{TYP_ATTESTATION, verify_self_signed};

    const BOTH: [AgentKeyKind; 2] = [AgentKeyKind::P256, AgentKeyKind::Ed25519];

    #[test]
    fn pem_round_trips_for_both_kinds() {
        let rng = SystemRandom::new();
        for kind in BOTH {
            let key = AgentKey::generate(kind, &rng).unwrap();
            assert_eq!(key.kind(), kind);
            let pem = key.to_pkcs8_pem();
            let text = pem.expose_secret();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert!(text.lines().all(|line| line.len() <= 64));
            let again = AgentKey::from_pkcs8_pem(text).unwrap();
            assert_eq!(again.kind(), kind);
            assert_eq!(again.public_jwk(), key.public_jwk());
            assert_eq!(again.thumbprint(), key.thumbprint());
        }
    }

    #[test]
    fn reads_keys_made_by_openssl() {
        let ed = AgentKey::from_pkcs8_pem(include_str!("../tests/fixtures/ed25519.pem")).unwrap();
        assert_eq!(ed.kind(), AgentKeyKind::Ed25519);
        let ec = AgentKey::from_pkcs8_pem(include_str!("../tests/fixtures/p256.pem")).unwrap();
        assert_eq!(ec.kind(), AgentKeyKind::P256);
        // Written back, the OpenSSL encoding is kept byte for byte.
        assert_eq!(
            ed.to_pkcs8_pem().expose_secret(),
            include_str!("../tests/fixtures/ed25519.pem")
        );
    }

    #[test]
    fn public_jwk_has_no_private_members_and_matches_the_thumbprint() {
        let rng = SystemRandom::new();
        for kind in BOTH {
            let key = AgentKey::generate(kind, &rng).unwrap();
            let jwk = key.public_jwk();
            let members: Vec<&str> = jwk
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut members = members;
            members.sort_unstable();
            match kind {
                AgentKeyKind::P256 => assert_eq!(members, ["crv", "kty", "x", "y"]),
                AgentKeyKind::Ed25519 => assert_eq!(members, ["crv", "kty", "x"]),
            }
            let (parsed, kid) = VerifyingKey::from_jwk(&jwk).unwrap();
            assert_eq!(kid, None);
            assert_eq!(parsed.thumbprint(), key.thumbprint());
            assert_eq!(&parsed, key.verifying_key());
        }
    }

    #[test]
    fn self_signed_tokens_verify_and_carry_the_key() {
        let rng = SystemRandom::new();
        for kind in BOTH {
            let key = AgentKey::generate(kind, &rng).unwrap();
            let claims =
                json!({"aud": "https://aims.example", "exp": 2_000_000_000, "nonce": "n1"});
            let token = key
                .sign_self_signed(&rng, TYP_ATTESTATION, &claims)
                .unwrap();
            let (verified, public) =
                verify_self_signed(&token, TYP_ATTESTATION, &[Alg::Es256, Alg::EdDsa]).unwrap();
            assert_eq!(verified.alg, key.alg());
            assert_eq!(verified.claims["nonce"], "n1");
            assert_eq!(public.thumbprint(), key.thumbprint());
            // An Ed25519 key may name its algorithm `Ed25519` (RFC 9864); a P-256 key may not.
            if kind == AgentKeyKind::Ed25519 {
                let named = AgentKey::from_pkcs8_pem(key.to_pkcs8_pem().expose_secret())
                    .unwrap()
                    .signing_as(Alg::Ed25519)
                    .unwrap();
                let token = named
                    .sign_self_signed(&rng, TYP_ATTESTATION, &claims)
                    .unwrap();
                let (verified, public) = verify_self_signed(&token, TYP_ATTESTATION, ALGS).unwrap();
                assert_eq!(verified.alg, Alg::Ed25519);
                assert_eq!(public.thumbprint(), key.thumbprint());
                assert!(matches!(
                    verify_self_signed(&token, TYP_ATTESTATION, &[Alg::EdDsa]),
                    Err(TokenError::Algorithm)
                ));
            } else {
                let p256 = AgentKey::generate(kind, &rng).unwrap();
                assert!(matches!(
                    p256.signing_as(Alg::Ed25519),
                    Err(TokenError::Algorithm)
                ));
            }
            // The algorithm allow-list still applies.
            let only_other = if kind == AgentKeyKind::P256 {
                Alg::EdDsa
            } else {
                Alg::Es256
            };
            assert!(matches!(
                verify_self_signed(&token, TYP_ATTESTATION, &[only_other]),
                Err(TokenError::Algorithm)
            ));
        }
    }

    #[test]
    fn garbage_and_foreign_keys_are_refused() {
        assert!(AgentKey::from_pkcs8_pem("").is_err());
        assert!(
            AgentKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
            )
            .is_err()
        );
        // An RSA key is PKCS#8 too, but not an agent key.
        let rsa = crate::codec::pem_armor(
            PEM_LABEL,
            include_bytes!("../tests/fixtures/rsa2048.pk8.der"),
        );
        assert!(matches!(
            AgentKey::from_pkcs8_pem(rsa.expose_secret()),
            Err(TokenError::BadKey)
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let rng = SystemRandom::new();
        let key = AgentKey::generate(AgentKeyKind::Ed25519, &rng).unwrap();
        let shown = format!("{key:?}");
        let pem = key.to_pkcs8_pem();
        let body: String = pem
            .expose_secret()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(shown.starts_with("AgentKey { kind: Ed25519, thumbprint: "));
        assert!(!shown.contains(&body));
        assert!(!shown.contains("pkcs8"));
    }
}
