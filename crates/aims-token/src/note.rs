//! The audit log's checkpoint key and C2SP signed notes: an Ed25519 key that signs
//! tlog-checkpoint bodies, the verifier key string that publishes it
//! (`<name>+<hex key id>+<base64(0x01 || public key)>`), and the verifier that opens a note
//! only when a signature line of that very key verifies and the origin is the expected one.
//!
//! The key is generated once, stored as PKCS#8 sealed under the master key (the caller seals
//! it, as it seals the signing keys); this module holds no storage, no clock and no I/O.

use aims_core::tlog::Checkpoint;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use secrecy::SecretBox;

use crate::TokenError;

/// The signed-note signature type of Ed25519.
const ALG_ED25519: u8 = 0x01;
/// What starts every signature line: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a note or a verifier key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// Not a signed note (body, blank line, signature lines), or its body is not a checkpoint.
    #[error("malformed signed note: {0}")]
    Malformed(&'static str),
    /// A verifier key string that does not parse.
    #[error("malformed verifier key")]
    BadVerifierKey,
    /// No signature line of the expected key (name and key id).
    #[error("the note is not signed by key {0}")]
    NotSignedByKey(String),
    /// The expected key's signature line does not verify.
    #[error("the signature of key {0} does not verify")]
    BadSignature(String),
    /// The checkpoint is for another log.
    #[error("the checkpoint is for origin {found:?}, not {expected:?}")]
    WrongOrigin {
        /// The origin expected.
        expected: String,
        /// The origin found.
        found: String,
    },
}

/// The 4-byte key id of signed notes: `SHA-256(name || "\n" || 0x01 || public key)[..4]`.
fn key_id(name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ALG_ED25519]);
    ctx.update(public_key);
    let digest = ctx.finish();
    let mut id = [0u8; 4];
    for (slot, byte) in id.iter_mut().zip(digest.as_ref()) {
        *slot = *byte;
    }
    id
}

/// Whether `name` may name a note key: non-empty, no whitespace or `+`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The log's checkpoint-signing key.
pub struct LogKey {
    name: String,
    pair: Ed25519KeyPair,
    id: [u8; 4],
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A freshly generated log key and its PKCS#8 encoding, to be sealed and stored.
pub struct GeneratedLogKey {
    /// The usable key.
    pub key: LogKey,
    /// PKCS#8 DER of the private key.
    pub pkcs8: SecretBox<[u8]>,
}

impl LogKey {
    /// Generates a key named `name` (the log's origin).
    pub fn generate(rng: &SystemRandom, name: &str) -> Result<GeneratedLogKey, TokenError> {
        let document = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| TokenError::Random)?;
        let key = Self::from_pkcs8(name, document.as_ref())?;
        Ok(GeneratedLogKey {
            key,
            pkcs8: SecretBox::new(document.as_ref().to_vec().into_boxed_slice()),
        })
    }

    /// Loads a stored key.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, TokenError> {
        if !valid_name(name) {
            return Err(TokenError::BadKey);
        }
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| TokenError::BadKey)?;
        let id = key_id(name, pair.public_key().as_ref());
        Ok(Self {
            name: name.to_owned(),
            pair,
            id,
        })
    }

    /// The key's name (the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The verifier key string that publishes this key.
    pub fn verifier_key(&self) -> String {
        verifier_key_string(&self.name, self.public_key())
    }

    /// Signs `checkpoint` as a signed note: its body, a blank line and one signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.pair.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.id);
        blob.extend_from_slice(signature.as_ref());
        format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        )
    }
}

/// The verifier key string of the Ed25519 key `public_key` named `name`.
pub fn verifier_key_string(name: &str, public_key: &[u8]) -> String {
    let mut encoded = Vec::with_capacity(1 + public_key.len());
    encoded.push(ALG_ED25519);
    encoded.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex_lower(&key_id(name, public_key)),
        STANDARD.encode(encoded)
    )
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A published log key, ready to open checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    public_key: [u8; 32],
}

impl NoteVerifier {
    /// Parses a verifier key string; refuses one whose key id does not match its key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        // The key's base64 may itself hold `+`: only the first two separate.
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::BadVerifierKey);
        };
        if !valid_name(name) || id_hex.len() != 8 {
            return Err(NoteError::BadVerifierKey);
        }
        let id = u32::from_str_radix(id_hex, 16)
            .map_err(|_| NoteError::BadVerifierKey)?
            .to_be_bytes();
        let encoded = STANDARD
            .decode(key_b64)
            .map_err(|_| NoteError::BadVerifierKey)?;
        let (&alg, key) = encoded.split_first().ok_or(NoteError::BadVerifierKey)?;
        let public_key: [u8; 32] = key.try_into().map_err(|_| NoteError::BadVerifierKey)?;
        if alg != ALG_ED25519 || key_id(name, &public_key) != id {
            return Err(NoteError::BadVerifierKey);
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            public_key,
        })
    }

    /// The key's name, which is also the origin of the log it signs for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens a signed checkpoint: a signature line of this key must verify over the body, and
    /// the checkpoint's origin must be this key's name (the log's origin). Signatures by
    /// other keys are ignored, as signed notes allow (cosigners).
    pub fn open(&self, note: &str) -> Result<Checkpoint, NoteError> {
        let split = note
            .find("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (body, signatures) = note.split_at(split.saturating_add(1));
        let signatures = signatures
            .strip_prefix('\n')
            .and_then(|s| s.strip_suffix('\n'))
            .ok_or(NoteError::Malformed("the note must end with a newline"))?;
        let public = UnparsedPublicKey::new(&ED25519, &self.public_key);
        let mut found = false;
        for line in signatures.split('\n') {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(NoteError::Malformed(
                    "a signature line must start with an em dash",
                ))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("a signature line is `name signature`"))?;
            let blob = STANDARD
                .decode(blob)
                .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
            let Some((id, signature)) = blob.split_first_chunk::<4>() else {
                return Err(NoteError::Malformed("a signature is too short"));
            };
            if name != self.name || *id != self.id {
                continue;
            }
            found = true;
            if public.verify(body.as_bytes(), signature).is_err() {
                return Err(NoteError::BadSignature(self.name.clone()));
            }
        }
        if !found {
            return Err(NoteError::NotSignedByKey(self.name.clone()));
        }
        let checkpoint = Checkpoint::parse_body(body)
            .map_err(|_| NoteError::Malformed("the body is not a checkpoint"))?;
        if checkpoint.origin != self.name {
            return Err(NoteError::WrongOrigin {
                expected: self.name.clone(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aims_core::tlog::leaf_hash;
    use secrecy::ExposeSecret;

    fn checkpoint(origin: &str, size: u64) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size,
            root: leaf_hash(&size.to_be_bytes()),
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_the_published_key() {
        let rng = SystemRandom::new();
        let generated = LogKey::generate(&rng, "acme.example/audit").unwrap();
        let reloaded =
            LogKey::from_pkcs8("acme.example/audit", generated.pkcs8.expose_secret()).unwrap();
        assert_eq!(reloaded.verifier_key(), generated.key.verifier_key());
        let cp = checkpoint("acme.example/audit", 7);
        let note = reloaded.sign(&cp);
        assert!(note.starts_with(&cp.body()));
        assert!(note.contains("\n\n\u{2014} acme.example/audit "));
        // Ed25519 is deterministic: two servers signing one tree write one note.
        assert_eq!(note, generated.key.sign(&cp));
        let verifier = NoteVerifier::parse(&generated.key.verifier_key()).unwrap();
        assert_eq!(verifier.open(&note).unwrap(), cp);
    }

    #[test]
    fn other_keys_other_origins_and_edits_are_refused() {
        let rng = SystemRandom::new();
        let ours = LogKey::generate(&rng, "acme.example/audit").unwrap().key;
        let theirs = LogKey::generate(&rng, "acme.example/audit").unwrap().key;
        let verifier = NoteVerifier::parse(&ours.verifier_key()).unwrap();
        let cp = checkpoint("acme.example/audit", 7);
        assert_eq!(
            verifier.open(&theirs.sign(&cp)),
            Err(NoteError::NotSignedByKey("acme.example/audit".to_owned()))
        );
        assert!(matches!(
            verifier.open(&ours.sign(&checkpoint("other.example/audit", 7))),
            Err(NoteError::WrongOrigin { .. })
        ));
        let note = ours.sign(&cp);
        let edited = note.replacen("\n7\n", "\n8\n", 1);
        assert_eq!(
            verifier.open(&edited),
            Err(NoteError::BadSignature("acme.example/audit".to_owned()))
        );
        // A cosignature by another key beside ours is fine.
        let other = theirs.sign(&cp);
        let cosigned = format!("{note}{}", other.rsplit_once("\n\n").unwrap().1);
        assert_eq!(verifier.open(&cosigned).unwrap(), cp);
        for bad in ["", "no blank line\n", &note[..note.len() - 1]] {
            assert!(verifier.open(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn verifier_keys_must_be_consistent() {
        let rng = SystemRandom::new();
        let key = LogKey::generate(&rng, "acme.example/audit").unwrap().key;
        let vkey = key.verifier_key();
        assert!(NoteVerifier::parse(&vkey).is_ok());
        let renamed = vkey.replacen("acme.example", "evil.example", 1);
        assert_eq!(
            NoteVerifier::parse(&renamed),
            Err(NoteError::BadVerifierKey)
        );
        for bad in ["", "a+b", "a+0000000g+AQ==", "a+00000000+AQ==+x"] {
            assert_eq!(NoteVerifier::parse(bad), Err(NoteError::BadVerifierKey));
        }
        assert!(LogKey::from_pkcs8("has space", &[]).is_err());
    }
}
