//! Opaque secret credentials (human API tokens, join tokens, resource-server secrets): their format and how they are
//! hashed for storage.
//!
//! Only the SHA-256 hash of a credential is ever stored; the credential itself is shown once.
//! Randomness is passed in, so this module stays pure.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;

/// Longest credential accepted at any boundary, in bytes.
pub const MAX_CREDENTIAL_LEN: usize = 512;
/// Shortest credential an operator may supply (e.g. `AIMS_BOOTSTRAP_TOKEN`).
pub const MIN_SUPPLIED_CREDENTIAL_LEN: usize = 32;

/// What a generated credential is for; the prefix tells a reader at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A human principal's API token.
    Human,
    /// An agent's one-time join token.
    Join,
    /// A resource server's client secret (introspection, revocation feed).
    ResourceServer,
}

impl CredentialKind {
    /// Whether `credential` is formatted as one of this kind (it says nothing of validity).
    pub fn marks(self, credential: &str) -> bool {
        credential.starts_with(self.prefix())
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Human => "aims_h_",
            Self::Join => "aims_j_",
            Self::ResourceServer => "aims_r_",
        }
    }
}

/// Formats 32 random bytes as a credential of `kind`, e.g. `aims_h_<43 base64url chars>`.
pub fn format_credential(kind: CredentialKind, random: &[u8; 32]) -> String {
    format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(random))
}

/// The SHA-256 hash of a credential, as stored and looked up. Credentials carry 256 bits of
/// entropy, so a fast hash is enough (no password stretching needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialHash([u8; 32]);

impl CredentialHash {
    /// Hashes a presented credential.
    pub fn of(credential: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, credential.as_bytes()).as_ref());
        Self(out)
    }

    /// Rebuilds a hash read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, for storage.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses lowercase hex read back from storage.
    pub fn from_hex(value: &str) -> Option<Self> {
        crate::decode_hex32(value).map(Self)
    }
}

/// Whether `value` is acceptable as an operator-supplied credential: long enough, bounded,
/// printable ASCII without spaces.
pub fn is_acceptable_supplied_credential(value: &str) -> bool {
    (MIN_SUPPLIED_CREDENTIAL_LEN..=MAX_CREDENTIAL_LEN).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_have_kind_prefix_and_fixed_length() {
        let h = format_credential(CredentialKind::Human, &[7u8; 32]);
        assert!(h.starts_with("aims_h_"));
        assert_eq!(h.len(), 7 + 43);
        let j = format_credential(CredentialKind::Join, &[7u8; 32]);
        assert!(j.starts_with("aims_j_"));
        assert_ne!(CredentialHash::of(&h), CredentialHash::of(&j));
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let h = CredentialHash::of("secret");
        assert_eq!(CredentialHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(CredentialHash::from_hex("zz"), None);
    }

    #[test]
    fn supplied_credentials_must_be_long_and_printable() {
        assert!(is_acceptable_supplied_credential(&"a".repeat(32)));
        assert!(!is_acceptable_supplied_credential(&"a".repeat(31)));
        assert!(!is_acceptable_supplied_credential(&format!(
            "{} b",
            "a".repeat(32)
        )));
        assert!(!is_acceptable_supplied_credential(&"a".repeat(513)));
    }
}
