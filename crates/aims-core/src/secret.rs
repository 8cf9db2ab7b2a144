//! Secrets AIMS brokers: long-lived upstream credentials (API keys, static tokens) that agents
//! never hold. An operator stores one; the resource servers it names as readers (enforcement
//! points such as the gateway) read its current value to inject into the calls they forward.
//!
//! This module owns what is known about a secret besides its value — versions, readers,
//! rotation period — and the bounds on values. Values are sealed under the master key by the
//! server and stored only sealed; nothing here ever holds one.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::{ResourceServerName, SecretName, UserName};

/// Largest secret value, in bytes.
pub const MAX_SECRET_LEN: usize = 16 * 1024;
/// Most resource servers one secret may name as readers.
pub const MAX_READERS: usize = 16;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 512;
/// Longest rotation period: two years, in seconds.
pub const MAX_ROTATION_PERIOD_S: u64 = 2 * 366 * 86_400;

/// What sealed secret values are bound to (with `<name>#<version>` as the record id), so a
/// sealed value cannot be passed off as another secret's or another version's.
pub const SEAL_PURPOSE: &str = "aims secret v1";

/// The record id a value of `name` at `version` is sealed for.
pub fn seal_id(name: &SecretName, version: u32) -> String {
    format!("{name}#{version}")
}

/// Whether `value` is acceptable as a secret: 1 to [`MAX_SECRET_LEN`] bytes, no NUL.
pub fn is_valid_value(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_SECRET_LEN && !value.contains('\0')
}

/// A secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Its name.
    pub name: SecretName,
    /// The current version, from 1; each rotation adds one.
    pub version: u32,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The resource servers that may read its value.
    pub readers: Vec<ResourceServerName>,
    /// How often it should be rotated, in seconds; `None`: no period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_period_s: Option<u64>,
    /// Who stored it.
    pub created_by: UserName,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the current version was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub rotated_at: OffsetDateTime,
}

impl Secret {
    /// When the current version should be replaced, if the secret has a rotation period.
    pub fn rotation_due_at(&self) -> Option<OffsetDateTime> {
        self.rotation_period_s
            .and_then(|s| i64::try_from(s).ok())
            .map(|s| self.rotated_at + time::Duration::seconds(s))
    }

    /// Whether the current version is past its rotation period at `now`.
    pub fn rotation_overdue(&self, now: OffsetDateTime) -> bool {
        self.rotation_due_at().is_some_and(|due| now >= due)
    }

    /// Whether resource server `server` may read the value.
    pub fn readable_by(&self, server: &ResourceServerName) -> bool {
        self.readers.contains(server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn secret(period: Option<u64>) -> Secret {
        Secret {
            name: SecretName::new("github-token").unwrap(),
            version: 2,
            description: None,
            readers: vec![ResourceServerName::new("gateway").unwrap()],
            rotation_period_s: period,
            created_by: UserName::new("admin").unwrap(),
            created_at: datetime!(2026-01-01 00:00 UTC),
            rotated_at: datetime!(2026-02-01 00:00 UTC),
        }
    }

    #[test]
    fn rotation_is_due_a_period_after_the_last_rotation() {
        let monthly = secret(Some(30 * 86_400));
        assert_eq!(
            monthly.rotation_due_at(),
            Some(datetime!(2026-03-03 00:00 UTC))
        );
        assert!(!monthly.rotation_overdue(datetime!(2026-03-02 23:59 UTC)));
        assert!(monthly.rotation_overdue(datetime!(2026-03-03 00:00 UTC)));
        assert!(!secret(None).rotation_overdue(datetime!(2099-01-01 00:00 UTC)));
    }

    #[test]
    fn only_named_readers_read_and_values_are_bounded() {
        let s = secret(None);
        assert!(s.readable_by(&ResourceServerName::new("gateway").unwrap()));
        assert!(!s.readable_by(&ResourceServerName::new("other").unwrap()));
        assert!(is_valid_value("ghp_x"));
        assert!(!is_valid_value(""));
        assert!(!is_valid_value("a\0b"));
        assert!(!is_valid_value(&"x".repeat(MAX_SECRET_LEN + 1)));
        assert_eq!(seal_id(&s.name, 2), "github-token#2");
    }
}
