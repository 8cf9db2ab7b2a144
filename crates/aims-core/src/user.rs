//! Human principals (operators, approvers, auditors) and their roles.
//!
//! Humans authenticate with their own API credentials; agents never hold these. This module
//! says what each role may do; it does not authenticate anyone.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::UserName;

/// What a human principal is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: registry, users, keys, policies, audit.
    Admin,
    /// Approval endpoints only.
    Approver,
    /// Read-only access to the registry, keys and audit log.
    Auditor,
}

/// The kinds of access an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Change the registry, users, keys or policies.
    Administer,
    /// Read the registry, keys and audit log.
    Read,
    /// Answer approval requests.
    Approve,
}

impl Role {
    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Approver => "approver",
            Self::Auditor => "auditor",
        }
    }

    /// Parses a wire name.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Admin, Self::Approver, Self::Auditor]
            .into_iter()
            .find(|r| r.as_str() == value)
    }

    /// Whether the role grants `access`.
    pub fn allows(self, access: Access) -> bool {
        match self {
            Self::Admin => true,
            Self::Auditor => access == Access::Read,
            Self::Approver => access == Access::Approve,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A human principal as stored (the credential itself is stored only as a hash, elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique name.
    pub name: UserName,
    /// What the user may do.
    pub role: Role,
    /// When the user was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the user's credential was last issued or rotated.
    #[serde(with = "time::serde::rfc3339")]
    pub credential_rotated_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_only_their_access() {
        assert!(Role::Admin.allows(Access::Administer));
        assert!(Role::Admin.allows(Access::Approve));
        assert!(Role::Auditor.allows(Access::Read));
        assert!(!Role::Auditor.allows(Access::Administer));
        assert!(!Role::Auditor.allows(Access::Approve));
        assert!(Role::Approver.allows(Access::Approve));
        assert!(!Role::Approver.allows(Access::Read));
        assert!(!Role::Approver.allows(Access::Administer));
    }
}
