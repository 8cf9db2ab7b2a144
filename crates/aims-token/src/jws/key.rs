//! Verification keys read from public JWKs (RFC 7517/7518/8037): EC P-256 for `ES256`, OKP
//! Ed25519 for `EdDSA` (also named `Ed25519`, RFC 9864), RSA (2048–8192-bit modulus) for `RS256`, with their RFC 7638
//! thumbprints.
//!
//! A key has exactly one algorithm (RFC 8725 §3.1), fixed by its type (Ed25519's under either
//! of its two names). A JWK carrying private
//! members is refused rather than stripped: whoever sent it has mishandled a secret. Points
//! are checked to be on the curve when a signature is verified (by `ring`), not here.

use std::fmt;

use ring::digest;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use serde_json::{Map, Value, json};

use super::{Alg, kid_is_valid};
use crate::TokenError;
use crate::codec::{b64url, b64url_decode};
use crate::jwk::PublicJwk;

/// Members that only private or symmetric JWKs have (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;
/// ECDSA P-256 and Ed25519 signatures are exactly this long.
const SIGNATURE_LEN_64: usize = 64;

/// A public key that verifies exactly one JWS algorithm.
#[derive(Clone, PartialEq, Eq)]
pub enum VerifyingKey {
    /// An EC P-256 key (`ES256`).
    Es256(P256PublicKey),
    /// An Ed25519 key (`EdDSA`).
    EdDsa(Ed25519PublicKey),
    /// An RSA key (`RS256`).
    Rs256(RsaPublicKey),
}

/// A P-256 public point.
#[derive(Clone, PartialEq, Eq)]
pub struct P256PublicKey {
    x: [u8; 32],
    y: [u8; 32],
}

/// An Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519PublicKey {
    x: [u8; 32],
}

/// An RSA public key: big-endian modulus and exponent without leading zeros.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl VerifyingKey {
    /// Reads a public JWK. Returns the key and its `kid`, if it has one (which must be 1–128
    /// characters of `[A-Za-z0-9_.-]`). Refused: non-objects, private members, unsupported
    /// `kty`/`crv`, wrong coordinate lengths, RSA moduli outside 2048–8192 bits or with
    /// leading zeros, an `alg` other than the key type's own, and a `use` other than `sig`
    /// or `jwt-svid`.
    pub fn from_jwk(jwk: &Value) -> Result<(Self, Option<String>), TokenError> {
        let Value::Object(jwk) = jwk else {
            return Err(TokenError::BadJwk("a JWK is a JSON object"));
        };
        if PRIVATE_MEMBERS.iter().any(|name| jwk.contains_key(*name)) {
            return Err(TokenError::BadJwk(
                "a JWK with private key members is refused",
            ));
        }
        let key = match member(jwk, "kty")? {
            "EC" => {
                if member(jwk, "crv")? != "P-256" {
                    return Err(TokenError::BadJwk(
                        "only the P-256 curve is supported for EC",
                    ));
                }
                Self::Es256(P256PublicKey {
                    x: fixed(jwk, "x")?,
                    y: fixed(jwk, "y")?,
                })
            }
            "OKP" => {
                if member(jwk, "crv")? != "Ed25519" {
                    return Err(TokenError::BadJwk("only Ed25519 is supported for OKP"));
                }
                Self::EdDsa(Ed25519PublicKey {
                    x: fixed(jwk, "x")?,
                })
            }
            "RSA" => Self::Rs256(RsaPublicKey::new(bytes(jwk, "n")?, bytes(jwk, "e")?)?),
            _ => return Err(TokenError::BadJwk("unsupported key type")),
        };
        match jwk.get("alg") {
            None => {}
            Some(Value::String(alg)) if Alg::parse(alg).is_ok_and(|alg| key.verifies(alg)) => {}
            Some(_) => return Err(TokenError::BadJwk("alg does not match the key type")),
        }
        match jwk.get("use") {
            None => {}
            Some(Value::String(key_use)) if key_use == "sig" || key_use == "jwt-svid" => {}
            Some(_) => return Err(TokenError::BadJwk("key is not for signatures")),
        }
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) if kid_is_valid(kid) => Some(kid.clone()),
            Some(_) => {
                return Err(TokenError::BadJwk(
                    "kid is not 1-128 characters of [A-Za-z0-9_.-]",
                ));
            }
        };
        Ok((key, kid))
    }

    /// Whether a token whose header names `alg` may be verified with this key: the key's own
    /// algorithm, or for an Ed25519 key either of its names.
    pub fn verifies(&self, alg: Alg) -> bool {
        match self {
            Self::EdDsa(_) => matches!(alg, Alg::EdDsa | Alg::Ed25519),
            _ => self.alg() == alg,
        }
    }

    /// The one algorithm this key verifies (for Ed25519, the name it signs with: `EdDSA`).
    pub fn alg(&self) -> Alg {
        match self {
            Self::Es256(_) => Alg::Es256,
            Self::EdDsa(_) => Alg::EdDsa,
            Self::Rs256(_) => Alg::Rs256,
        }
    }

    /// The public JWK: the required members only (no `kid`, `alg` or `use`).
    pub fn to_jwk(&self) -> Value {
        match self {
            Self::Es256(key) => {
                json!({"kty": "EC", "crv": "P-256", "x": b64url(&key.x), "y": b64url(&key.y)})
            }
            Self::EdDsa(key) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(&key.x)}),
            Self::Rs256(key) => json!({"kty": "RSA", "n": b64url(&key.n), "e": b64url(&key.e)}),
        }
    }

    /// RFC 7638 thumbprint: base64url SHA-256 of the required members in lexicographic order
    /// (EC: `crv`, `kty`, `x`, `y`; OKP: `crv`, `kty`, `x`; RSA: `e`, `kty`, `n`).
    pub fn thumbprint(&self) -> String {
        // Every value is base64url or a fixed name, so no JSON escaping is needed.
        let canonical = match self {
            Self::Es256(key) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64url(&key.x),
                b64url(&key.y)
            ),
            Self::EdDsa(key) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64url(&key.x)
            ),
            Self::Rs256(key) => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64url(&key.e),
                b64url(&key.n)
            ),
        };
        b64url(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The key of an uncompressed P-256 point (`0x04 || x || y`).
    pub(crate) fn from_p256_point(point: &[u8]) -> Result<Self, TokenError> {
        match point.split_first() {
            Some((0x04, rest)) if rest.len() == 64 => {
                let (x, y) = rest.split_at(32);
                Ok(Self::Es256(P256PublicKey {
                    x: x.try_into().map_err(|_| TokenError::BadKey)?,
                    y: y.try_into().map_err(|_| TokenError::BadKey)?,
                }))
            }
            _ => Err(TokenError::BadKey),
        }
    }

    /// The key of a raw 32-byte Ed25519 public key.
    pub(crate) fn from_ed25519(public: &[u8]) -> Result<Self, TokenError> {
        Ok(Self::EdDsa(Ed25519PublicKey {
            x: public.try_into().map_err(|_| TokenError::BadKey)?,
        }))
    }

    /// Verifies `signature` over `message` with this key's one algorithm.
    pub(crate) fn verify_signature(
        &self,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), TokenError> {
        let result = match self {
            Self::Es256(key) => {
                // JWS uses the fixed 64-byte r || s form, never DER (RFC 7518 §3.4).
                if signature.len() != SIGNATURE_LEN_64 {
                    return Err(TokenError::Signature);
                }
                let mut point = [0u8; 65];
                let (tag, coordinates) = point.split_at_mut(1);
                let (x, y) = coordinates.split_at_mut(32);
                tag.fill(0x04);
                x.copy_from_slice(&key.x);
                y.copy_from_slice(&key.y);
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(message, signature)
            }
            Self::EdDsa(key) => {
                if signature.len() != SIGNATURE_LEN_64 {
                    return Err(TokenError::Signature);
                }
                UnparsedPublicKey::new(&ED25519, key.x).verify(message, signature)
            }
            Self::Rs256(key) => RsaPublicKeyComponents {
                n: key.n.as_slice(),
                e: key.e.as_slice(),
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature),
        };
        result.map_err(|_| TokenError::Signature)
    }
}

impl RsaPublicKey {
    fn new(n: Vec<u8>, e: Vec<u8>) -> Result<Self, TokenError> {
        // Minimal big-endian encodings only (RFC 7518 §6.3.1.1 says no leading zero octets).
        let (Some(&n_first), Some(&e_first)) = (n.first(), e.first()) else {
            return Err(TokenError::BadJwk("RSA n and e must not be empty"));
        };
        if n_first == 0 || e_first == 0 {
            return Err(TokenError::BadJwk(
                "RSA n and e must not have leading zeros",
            ));
        }
        if n.len() > MAX_RSA_BITS / 8 {
            return Err(TokenError::BadJwk("RSA modulus must be 2048 to 8192 bits"));
        }
        let bits = n.len() * 8 - n_first.leading_zeros() as usize;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(TokenError::BadJwk("RSA modulus must be 2048 to 8192 bits"));
        }
        // ring accepts odd exponents from 3 up to 2^33 - 1; we keep to 32 bits.
        let odd = e.last().is_some_and(|last| last & 1 == 1);
        if e.len() > 4 || !odd || (e.len() == 1 && e_first < 3) {
            return Err(TokenError::BadJwk(
                "RSA exponent must be odd, at least 3 and 32 bits at most",
            ));
        }
        Ok(Self { n, e })
    }

    /// The modulus length in bits.
    pub fn modulus_bits(&self) -> usize {
        self.n
            .first()
            .map_or(0, |first| self.n.len() * 8 - first.leading_zeros() as usize)
    }
}

impl TryFrom<&PublicJwk> for VerifyingKey {
    type Error = TokenError;

    /// The verification key of one of our own stored signing keys.
    fn try_from(jwk: &PublicJwk) -> Result<Self, TokenError> {
        let value = serde_json::to_value(jwk).map_err(|_| TokenError::BadJwk("not a JWK"))?;
        Self::from_jwk(&value).map(|(key, _)| key)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg())
            .field("thumbprint", &self.thumbprint())
            .finish()
    }
}

macro_rules! opaque_debug {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    )*};
}
opaque_debug!(P256PublicKey, Ed25519PublicKey, RsaPublicKey);

fn member<'j>(jwk: &'j Map<String, Value>, name: &'static str) -> Result<&'j str, TokenError> {
    match jwk.get(name) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(TokenError::BadJwk("a JWK member has the wrong type")),
        None => Err(TokenError::BadJwk("a required JWK member is missing")),
    }
}

fn bytes(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, TokenError> {
    b64url_decode(member(jwk, name)?).ok_or(TokenError::BadJwk("a JWK member is not base64url"))
}

fn fixed<const N: usize>(
    jwk: &Map<String, Value>,
    name: &'static str,
) -> Result<[u8; N], TokenError> {
    bytes(jwk, name)?
        .try_into()
        .map_err(|_| TokenError::BadJwk("a key coordinate has the wrong length"))
}
