//! Tasks: bounded units of work with a declared intent. Every token issued for a task names
//! it, and ending the task revokes them all.

use std::fmt;

use time::OffsetDateTime;

use crate::id::{AgentName, Intent, TaskId};

/// Longest declared subject (the user or system a task acts for), in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Whether `value` is a well-formed task id: 1–64 characters of `[A-Za-z0-9_-]` (AIMS mints
/// them as 128 random bits in base64url).
pub fn is_valid_task_id(value: &str) -> bool {
    TaskId::new(value).is_ok()
}

/// Whether `value` is acceptable as a declared subject: 1–256 bytes, no control characters.
pub fn is_valid_subject(value: &str) -> bool {
    is_bounded_text(value, MAX_SUBJECT_LEN)
}

fn is_bounded_text(value: &str, max: usize) -> bool {
    !value.trim().is_empty() && value.len() <= max && crate::text::is_visible(value, false)
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Tokens may be issued for it.
    Active,
    /// Ended by its agent or an operator; everything issued for it is revoked.
    Ended,
    /// Revoked (directly, or with its agent or owner); everything issued for it is revoked.
    Revoked,
}

impl TaskState {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Ended => "ended",
            Self::Revoked => "revoked",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "active" => Some(Self::Active),
            "ended" => Some(Self::Ended),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// The agent that owns it (the one whose first exchange created it).
    pub agent: AgentName,
    /// The declared intent.
    pub intent: Intent,
    /// The user or system it acts for (the agent's SPIFFE ID when it acts for itself).
    pub subject: String,
    /// Its state.
    pub state: TaskState,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it ends at the latest; no token outlives it.
    pub deadline: OffsetDateTime,
    /// When it ended, if it did.
    pub ended_at: Option<OffsetDateTime>,
}

impl Task {
    /// Whether tokens may be issued for it at `now`.
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        self.state == TaskState::Active && now < self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_texts_are_bounded() {
        assert!(is_valid_task_id("Zq3-_x"));
        assert!(!is_valid_task_id(""));
        assert!(!is_valid_task_id("a/b"));
        assert!(!is_valid_task_id(&"a".repeat(65)));
        assert!(Intent::new("summarize the incident").is_ok());
        assert!(Intent::new("   ").is_err());
        assert!(Intent::new("line\nbreak").is_err());
        assert!(Intent::new("x".repeat(1025)).is_err());
        assert!(is_valid_subject("user:alice"));
    }

    #[test]
    fn states_round_trip() {
        for s in [TaskState::Active, TaskState::Ended, TaskState::Revoked] {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskState::parse("open"), None);
    }
}
