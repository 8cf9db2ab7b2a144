//! Public keys as JWKs (RFC 7517), their RFC 7638 thumbprints, and the two documents that
//! publish them: the JWKS served at `jwks_uri` (`use: "sig"`) and the SPIFFE trust bundle
//! (`use: "jwt-svid"`, `spiffe_sequence`, `spiffe_refresh_hint`).
//!
//! Generic JOSE libraries skip `jwt-svid` keys, so the two documents stay separate.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::TokenError;

/// The only key type and algorithm AIMS signs with (allowed by the SPIFFE JWT-SVID spec).
pub const ALG_ES256: &str = "ES256";

/// A P-256 public key as a JWK, as stored beside each signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicJwk {
    /// Always `EC`.
    pub kty: String,
    /// Always `P-256`.
    pub crv: String,
    /// X coordinate, base64url.
    pub x: String,
    /// Y coordinate, base64url.
    pub y: String,
    /// Key id.
    pub kid: String,
    /// Always `ES256`.
    pub alg: String,
}

impl PublicJwk {
    /// Builds the JWK of an uncompressed P-256 point (`0x04 || x || y`).
    pub fn from_p256_point(kid: &str, point: &[u8]) -> Result<Self, TokenError> {
        let coordinates = match point.split_first() {
            Some((0x04, rest)) if rest.len() == 64 => rest,
            _ => return Err(TokenError::BadJwk("not an uncompressed P-256 point")),
        };
        let (x, y) = coordinates.split_at(32);
        Ok(Self {
            kty: "EC".to_owned(),
            crv: "P-256".to_owned(),
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
            kid: kid.to_owned(),
            alg: ALG_ES256.to_owned(),
        })
    }

    /// Parses and checks a stored JWK.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let jwk: Self = serde_json::from_str(text).map_err(|_| TokenError::BadJwk("not a JWK"))?;
        if jwk.kty != "EC" || jwk.crv != "P-256" || jwk.alg != ALG_ES256 {
            return Err(TokenError::BadJwk("only EC P-256 ES256 keys are supported"));
        }
        for coordinate in [&jwk.x, &jwk.y] {
            let bytes = URL_SAFE_NO_PAD
                .decode(coordinate)
                .map_err(|_| TokenError::BadJwk("coordinate is not base64url"))?;
            if bytes.len() != 32 {
                return Err(TokenError::BadJwk("coordinate is not 32 bytes"));
            }
        }
        Ok(jwk)
    }

    /// RFC 7638 thumbprint: base64url SHA-256 of the required members in lexicographic order.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
            self.crv, self.kty, self.x, self.y
        );
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    }

    fn published(&self, key_use: &str) -> Value {
        json!({
            "kty": self.kty,
            "crv": self.crv,
            "x": self.x,
            "y": self.y,
            "kid": self.kid,
            "alg": self.alg,
            "use": key_use,
        })
    }
}

/// The JWKS document served at `jwks_uri`: every published key with `use: "sig"`.
pub fn jwks(keys: &[PublicJwk]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.published("sig")).collect::<Vec<_>>() })
}

/// The SPIFFE trust bundle: every published key with `use: "jwt-svid"`, the bundle's
/// sequence number and how often relying parties should refresh it (seconds).
pub fn spiffe_bundle(keys: &[PublicJwk], sequence: u64, refresh_hint_s: u64) -> Value {
    json!({
        "keys": keys.iter().map(|k| k.published("jwt-svid")).collect::<Vec<_>>(),
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc9449_example() {
        // RFC 9449 section 6.1: the DPoP example key and its `jkt`.
        let jwk = PublicJwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs".into(),
            y: "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA".into(),
            kid: "not-part-of-the-thumbprint".into(),
            alg: "ES256".into(),
        };
        assert_eq!(
            jwk.thumbprint(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }

    #[test]
    fn parse_refuses_other_key_types() {
        assert!(PublicJwk::parse(r#"{"kty":"RSA"}"#).is_err());
        let bad_len = r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"k","alg":"ES256"}"#;
        assert!(PublicJwk::parse(bad_len).is_err());
        assert!(PublicJwk::from_p256_point("k", &[4u8; 10]).is_err());
    }

    #[test]
    fn documents_mark_key_use() {
        let jwk =
            PublicJwk::from_p256_point("k1", &[[4u8].as_slice(), &[1u8; 64]].concat()).unwrap();
        let set = jwks(std::slice::from_ref(&jwk));
        assert_eq!(set["keys"][0]["use"], "sig");
        let bundle = spiffe_bundle(&[jwk], 3, 300);
        assert_eq!(bundle["keys"][0]["use"], "jwt-svid");
        assert_eq!(bundle["spiffe_sequence"], 3);
        assert_eq!(bundle["spiffe_refresh_hint"], 300);
    }
}
