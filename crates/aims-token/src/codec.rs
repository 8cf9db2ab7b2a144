//! Strict encodings shared by the JOSE code: unpadded base64url that accepts exactly one
//! spelling of each byte string (RFC 7515 §2), and PEM armor (RFC 7468) for PKCS#8 keys.
//!
//! Nothing here knows what the bytes mean, and nothing here logs: PEM bodies are private keys.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use secrecy::zeroize::Zeroize as _;
use secrecy::{SecretBox, SecretString};

use crate::TokenError;

/// base64url without padding that refuses `=`, whitespace, the standard alphabet's `+` and `/`,
/// and non-zero trailing bits, so every byte string has exactly one accepted encoding.
pub(crate) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Decodes strict base64url; `None` on any deviation.
pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    B64URL.decode(text).ok()
}

/// Encodes as base64url without padding.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// PEM line length (RFC 7468 §2: generators wrap base64 at exactly 64 characters).
const PEM_LINE: usize = 64;

/// Wraps `der` in `-----BEGIN {label}-----` armor with 64-character lines.
pub(crate) fn pem_armor(label: &str, der: &[u8]) -> SecretString {
    let mut body = STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / PEM_LINE + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for (i, c) in body.chars().enumerate() {
        if i > 0 && i % PEM_LINE == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out.push_str("\n-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    body.zeroize();
    SecretString::from(out)
}

/// Reads one PEM block with the given label. Text before or after the block, explanatory
/// headers (`Proc-Type:`, as in encrypted legacy keys) and a second block are refused.
pub(crate) fn pem_unarmor(label: &str, text: &str) -> Result<SecretBox<[u8]>, TokenError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut lines = text.trim().lines().map(str::trim);
    if lines.next() != Some(begin.as_str()) {
        return Err(TokenError::BadKey);
    }
    let mut body = String::with_capacity(text.len());
    let mut ended = false;
    for line in lines.by_ref() {
        if line == end {
            ended = true;
            break;
        }
        body.push_str(line);
    }
    let trailing = lines.next().is_some();
    let decoded = STANDARD.decode(&body);
    body.zeroize();
    match decoded {
        Ok(der) if ended && !trailing && !der.is_empty() => {
            Ok(SecretBox::new(der.into_boxed_slice()))
        }
        Ok(mut der) => {
            der.zeroize();
            Err(TokenError::BadKey)
        }
        Err(_) => Err(TokenError::BadKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn base64url_has_one_spelling() {
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(b64url_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        // Padding, the standard alphabet, whitespace and non-zero trailing bits are refused.
        assert!(b64url_decode("-_8=").is_none());
        assert!(b64url_decode("+/8").is_none());
        assert!(b64url_decode("-_ 8").is_none());
        assert!(b64url_decode("-_9").is_none());
        assert!(b64url_decode("A").is_none());
        assert_eq!(b64url_decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn pem_round_trips_with_64_character_lines() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = pem_armor("PRIVATE KEY", &der);
        let text = pem.expose_secret();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(text.ends_with("\n-----END PRIVATE KEY-----\n"));
        let body: Vec<&str> = text
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("-----"))
            .collect();
        assert!(body.iter().rev().skip(1).all(|l| l.len() == 64));
        assert!(body.last().unwrap().len() <= 64);
        let back = pem_unarmor("PRIVATE KEY", text).unwrap();
        assert_eq!(back.expose_secret(), der.as_slice());
        // CRLF line endings and surrounding whitespace are tolerated.
        let crlf = format!("\n  {}  \n", text.replace('\n', "\r\n"));
        assert_eq!(
            pem_unarmor("PRIVATE KEY", &crlf).unwrap().expose_secret(),
            der.as_slice()
        );
    }

    #[test]
    fn pem_refuses_other_shapes() {
        let pem = pem_armor("PRIVATE KEY", b"key");
        let text = pem.expose_secret();
        assert!(pem_unarmor("EC PRIVATE KEY", text).is_err());
        assert!(pem_unarmor("PRIVATE KEY", &format!("junk\n{text}")).is_err());
        assert!(pem_unarmor("PRIVATE KEY", &format!("{text}junk\n")).is_err());
        assert!(pem_unarmor("PRIVATE KEY", &format!("{text}{text}")).is_err());
        assert!(
            pem_unarmor(
                "PRIVATE KEY",
                text.trim_end()
                    .trim_end_matches("-----END PRIVATE KEY-----")
            )
            .is_err()
        );
        let encrypted = "-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(pem_unarmor("PRIVATE KEY", encrypted).is_err());
        let empty = "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n";
        assert!(pem_unarmor("PRIVATE KEY", empty).is_err());
        assert!(pem_unarmor("PRIVATE KEY", "").is_err());
    }
}
