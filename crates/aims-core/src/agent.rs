//! Registered agents: their record, limits, labels and lifecycle rules.
//!
//! This module decides which lifecycle transitions are legal and what a valid agent record
//! is. It does not store agents or issue credentials.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::{AgentName, Environment, IdError, LabelKey, Owner, SpiffeId, TrustDomain};
use crate::posture::{PostureError, PostureProfile};

/// Hard ceiling on any token lifetime an agent may be configured with (24 hours).
pub const MAX_TOKEN_TTL_CEILING_S: u32 = 86_400;
/// Hard ceiling on any delegation depth an agent may be configured with.
pub const MAX_DELEGATION_DEPTH_CEILING: u8 = 16;
/// Most labels one agent may carry.
pub const MAX_LABELS: usize = 64;
/// Longest description accepted.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest reason given for a lifecycle change (suspend, resume, decommission), in characters.
pub const MAX_LIFECYCLE_REASON_LEN: usize = 512;

/// Why an agent record or change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A name, owner, environment or label key is invalid.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The posture profile is invalid.
    #[error("posture profile: {0}")]
    Posture(#[from] PostureError),
    /// A limit is outside its allowed range.
    #[error("{field} must be between {min} and {max}")]
    LimitOutOfRange {
        /// The limit's field name.
        field: &'static str,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// Labels or description break their bounds.
    #[error("{0}")]
    Bounds(&'static str),
    /// The lifecycle transition is not allowed from the current state.
    #[error("cannot {action} an agent that is {from}")]
    Transition {
        /// The state the agent is in.
        from: LifecycleState,
        /// The attempted action.
        action: LifecycleAction,
    },
}

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// May attest and obtain credentials.
    Active,
    /// Paused by an operator; holds no live credentials.
    Suspended,
    /// Stopped because its posture drifted; only an admin can release it.
    Quarantined,
    /// Retired for good; its name is never reused.
    Decommissioned,
}

impl LifecycleState {
    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Quarantined => "quarantined",
            Self::Decommissioned => "decommissioned",
        }
    }

    /// Parses a wire name.
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Active,
            Self::Suspended,
            Self::Quarantined,
            Self::Decommissioned,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }

    /// The state after `action`, or why the action is not allowed now.
    pub fn apply(self, action: LifecycleAction) -> Result<Self, AgentError> {
        use LifecycleAction as A;
        use LifecycleState as S;
        let next = match (self, action) {
            (S::Active, A::Suspend) => S::Suspended,
            (S::Suspended, A::Resume) => S::Active,
            (S::Active | S::Suspended, A::Quarantine) => S::Quarantined,
            (S::Quarantined, A::Release) => S::Active,
            (S::Active | S::Suspended | S::Quarantined, A::Decommission) => S::Decommissioned,
            (from, action) => return Err(AgentError::Transition { from, action }),
        };
        Ok(next)
    }

    /// Whether an agent in this state may hold live credentials.
    pub fn may_hold_credentials(self) -> bool {
        self == Self::Active
    }
}

impl std::fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's (or the posture check's) lifecycle action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    /// Pause an active agent.
    Suspend,
    /// Resume a suspended agent.
    Resume,
    /// Stop an agent whose posture drifted.
    Quarantine,
    /// Release a quarantined agent (admin only).
    Release,
    /// Retire an agent for good.
    Decommission,
}

impl std::fmt::Display for LifecycleAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::Quarantine => "quarantine",
            Self::Release => "release",
            Self::Decommission => "decommission",
        })
    }
}

/// Per-agent limits on the credentials AIMS issues to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest lifetime of any token issued to the agent, in seconds.
    #[serde(default = "Limits::default_ttl")]
    pub max_token_ttl_s: u32,
    /// Deepest delegation chain the agent may be part of.
    #[serde(default = "Limits::default_depth")]
    pub max_delegation_depth: u8,
    /// Whether the agent may use plain bearer tokens instead of DPoP (legacy only).
    #[serde(default)]
    pub allow_bearer: bool,
}

impl Limits {
    fn default_ttl() -> u32 {
        900
    }
    fn default_depth() -> u8 {
        2
    }

    /// Checks every limit against its hard range.
    pub fn validate(&self) -> Result<(), AgentError> {
        if !(1..=MAX_TOKEN_TTL_CEILING_S).contains(&self.max_token_ttl_s) {
            return Err(AgentError::LimitOutOfRange {
                field: "max_token_ttl_s",
                min: 1,
                max: MAX_TOKEN_TTL_CEILING_S.into(),
            });
        }
        if self.max_delegation_depth > MAX_DELEGATION_DEPTH_CEILING {
            return Err(AgentError::LimitOutOfRange {
                field: "max_delegation_depth",
                min: 0,
                max: MAX_DELEGATION_DEPTH_CEILING.into(),
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_ttl_s: Self::default_ttl(),
            max_delegation_depth: Self::default_depth(),
            allow_bearer: false,
        }
    }
}

/// Free-form labels, validated: keys are slugs, values printable and bounded.
pub type Labels = BTreeMap<LabelKey, String>;

fn validate_labels(labels: &Labels) -> Result<(), AgentError> {
    if labels.len() > MAX_LABELS {
        return Err(AgentError::Bounds("at most 64 labels"));
    }
    if !labels.values().all(|v| is_valid_label_value(v)) {
        return Err(AgentError::Bounds(
            "label values must be at most 256 printable characters, none of them invisible",
        ));
    }
    Ok(())
}

/// Longest label value, in characters.
pub const MAX_LABEL_VALUE_LEN: usize = 256;

/// Whether `value` may be a label's value: at most 256 characters of visible text on one line.
pub fn is_valid_label_value(value: &str) -> bool {
    crate::text::is_visible_within(value, MAX_LABEL_VALUE_LEN)
}

/// Whether `description` may describe an agent: at most 1024 characters (as JSON Schema's
/// `maxLength` counts) of visible text, line breaks allowed.
pub fn is_valid_description(description: &str) -> bool {
    description.chars().count() <= MAX_DESCRIPTION && crate::text::is_visible(description, true)
}

fn validate_description(description: &str) -> Result<(), AgentError> {
    if !is_valid_description(description) {
        return Err(AgentError::Bounds(
            "description must be at most 1024 printable characters, none of them invisible",
        ));
    }
    Ok(())
}

/// A registered agent as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Unique name; the last segment of the SPIFFE ID.
    pub name: AgentName,
    /// The one accountable owner.
    pub owner: Owner,
    /// Where it runs.
    pub environment: Environment,
    /// What it is for.
    pub description: String,
    /// What it may be at runtime.
    pub posture_profile: PostureProfile,
    /// Limits on its credentials.
    pub limits: Limits,
    /// Free-form labels.
    pub labels: Labels,
    /// Lifecycle state.
    pub state: LifecycleState,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When its owner must next recertify it; past this it may not attest.
    #[serde(with = "time::serde::rfc3339")]
    pub recertify_by: OffsetDateTime,
    /// Incremented on every change; used for optimistic concurrency.
    pub revision: u64,
}

impl Agent {
    /// The agent's SPIFFE ID in `trust_domain`.
    pub fn spiffe_id(&self, trust_domain: &TrustDomain) -> SpiffeId {
        SpiffeId::for_agent(trust_domain.clone(), self.name.clone())
    }

    /// Checks the record's mutable fields.
    pub fn validate(&self) -> Result<(), AgentError> {
        self.limits.validate()?;
        self.posture_profile.validate()?;
        validate_labels(&self.labels)?;
        validate_description(&self.description)?;
        if self.recertify_by <= self.created_at {
            return Err(AgentError::Bounds(
                "recertification date must be after registration",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleAction as A;
    use LifecycleState as S;

    #[test]
    fn lifecycle_transitions() {
        assert_eq!(S::Active.apply(A::Suspend), Ok(S::Suspended));
        assert_eq!(S::Suspended.apply(A::Resume), Ok(S::Active));
        assert_eq!(S::Active.apply(A::Quarantine), Ok(S::Quarantined));
        assert_eq!(S::Quarantined.apply(A::Release), Ok(S::Active));
        assert_eq!(S::Quarantined.apply(A::Decommission), Ok(S::Decommissioned));
        assert!(S::Quarantined.apply(A::Resume).is_err());
        assert!(S::Active.apply(A::Resume).is_err());
        for action in [
            A::Suspend,
            A::Resume,
            A::Quarantine,
            A::Release,
            A::Decommission,
        ] {
            assert!(S::Decommissioned.apply(action).is_err(), "{action}");
        }
    }

    #[test]
    fn only_active_agents_hold_credentials() {
        assert!(S::Active.may_hold_credentials());
        assert!(!S::Suspended.may_hold_credentials());
        assert!(!S::Quarantined.may_hold_credentials());
        assert!(!S::Decommissioned.may_hold_credentials());
    }

    #[test]
    fn limits_are_bounded() {
        assert!(Limits::default().validate().is_ok());
        let zero = Limits {
            max_token_ttl_s: 0,
            ..Limits::default()
        };
        assert!(zero.validate().is_err());
        let deep = Limits {
            max_delegation_depth: 17,
            ..Limits::default()
        };
        assert!(deep.validate().is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"is_admin":true}"#).is_err());
    }

    #[test]
    fn state_names_round_trip() {
        for s in [S::Active, S::Suspended, S::Quarantined, S::Decommissioned] {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("deleted"), None);
    }
}
