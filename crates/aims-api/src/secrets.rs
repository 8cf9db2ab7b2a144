//! Wire types of `/v1/secrets`: storing, rotating and describing brokered secrets, and the
//! value as a reading resource server receives it. A value never appears in `Debug` output.

use std::fmt;

use aims_core::id::{ResourceServerName, SecretName};
use aims_core::secret::Secret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `POST /v1/secrets`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    /// Its name.
    pub name: SecretName,
    /// The value (1 to 16 KiB of text).
    pub value: String,
    /// The resource servers that may read it (1 to 16, registered).
    pub readers: Vec<ResourceServerName>,
    /// How often it should be rotated, in seconds.
    #[serde(default)]
    pub rotation_period_s: Option<u64>,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
}

impl fmt::Debug for PutSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutSecretRequest")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("readers", &self.readers)
            .field("rotation_period_s", &self.rotation_period_s)
            .field("description", &self.description)
            .finish()
    }
}

/// `POST /v1/secrets/{name}/rotate`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// The new value.
    pub value: String,
}

impl fmt::Debug for RotateSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotateSecretRequest { value: <redacted> }")
    }
}

/// A secret as operators see it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretView {
    /// What is known about it.
    #[serde(flatten)]
    pub secret: Secret,
    /// When the current version should be replaced, if it has a rotation period.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub rotation_due_at: Option<OffsetDateTime>,
    /// Whether that time has passed.
    pub rotation_overdue: bool,
}

impl SecretView {
    /// The view of `secret` at `now`.
    pub fn of(secret: Secret, now: OffsetDateTime) -> Self {
        Self {
            rotation_due_at: secret.rotation_due_at(),
            rotation_overdue: secret.rotation_overdue(now),
            secret,
        }
    }
}

/// `GET /v1/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretList {
    /// By name.
    pub secrets: Vec<SecretView>,
}

/// `GET /v1/secrets/{name}/value`, for a resource server the secret names as a reader.
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretValue {
    /// The secret.
    pub name: SecretName,
    /// The version read (the current one).
    pub version: u32,
    /// The value.
    pub value: String,
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .finish()
    }
}
