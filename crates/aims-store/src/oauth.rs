//! Types of the task-token part of the store: access-token issuance, the revocation log and
//! its targets, and registered resource servers.

use aims_core::id::{AgentName, Environment, Owner, ResourceServerName};
use aims_core::task::{Task, TaskState};
use time::OffsetDateTime;

use crate::IssuedCredential;

/// Everything one access-token issuance commits, atomically, with its audit event.
#[derive(Debug, Clone)]
pub struct AccessTokenIssue {
    /// The token, as the revocation register keeps it (kind `AccessToken`, `parent` = the
    /// identity or token it was exchanged for, `task_id` set).
    pub credential: IssuedCredential,
    /// The revision of the holder's registry record the token was decided on: the issuance
    /// is refused if the record has changed since (the decisions read an older record).
    pub agent_revision: u64,
    /// The task to create with it (the first exchange of a new task); `None` when the task
    /// exists and must still be open.
    pub new_task: Option<Task>,
    /// The DPoP proof presented at the token endpoint (hash of key thumbprint and `jti`) and
    /// when it may be forgotten: a second use anywhere is refused.
    pub dpop_proof: Option<(String, OffsetDateTime)>,
}

/// What a revocation is aimed at. Every target closes over everything derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationTarget {
    /// One credential and every credential derived from it.
    Credential(String),
    /// Only the credentials derived from this one (its delegation subtree), not itself.
    Subtree(String),
    /// Every credential issued for a task; the task is closed too.
    Task(String),
    /// Every credential an agent holds (its identities included) and everything derived.
    Agent(AgentName),
    /// Every credential of every agent of this owner, and everything derived.
    Owner(Owner),
}

/// How long an epoch entry must be remembered: longer than any credential issued before it
/// may live (access tokens are capped at a day, identities at an hour), plus a minute of
/// clock leeway.
pub const EPOCH_LIFETIME: time::Duration = time::Duration::seconds(86_400 + 60);

/// What one revocation-log entry revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One credential, by id (`jti`).
    Credential(String),
    /// An epoch: every credential of the entry's agent issued at or before its `revoked_at`,
    /// whether or not the register holds it.
    Agent,
    /// An epoch: every credential of the entry's task issued at or before its `revoked_at`.
    Task,
}

impl Revoked {
    /// The stored kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Credential(_) => "credential",
            Self::Agent => "agent",
            Self::Task => "task",
        }
    }
}

/// One entry of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Position in the log, from 1, in commit order.
    pub seq: u64,
    /// What it revokes.
    pub revoked: Revoked,
    /// The agent that held the credential, or whose credentials the epoch ends.
    pub agent: AgentName,
    /// The credential's task, or the task whose credentials the epoch ends.
    pub task_id: Option<String>,
    /// The audience of the credentials it concerns: only that resource server's feed shows
    /// it; `None` for operators only.
    pub audience: Option<String>,
    /// When it was revoked (for an epoch: credentials issued at or before this are revoked).
    pub revoked_at: OffsetDateTime,
    /// When nobody needs to remember it any more: the credential's expiry, or for an epoch
    /// [`EPOCH_LIFETIME`] after it.
    pub expires_at: OffsetDateTime,
    /// Why (for operators only).
    pub reason: String,
    /// The write transaction that appended it, the `txn` of that transaction's audit
    /// records: every entry of one revocation shares it. `None` for entries written before
    /// the log recorded it.
    pub txn: Option<String>,
}

impl Revocation {
    /// The revoked credential's id, for a credential entry.
    pub fn credential(&self) -> Option<&str> {
        match &self.revoked {
            Revoked::Credential(id) => Some(id),
            Revoked::Agent | Revoked::Task => None,
        }
    }
}

/// Which tasks to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only tasks of this agent.
    pub agent: Option<AgentName>,
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// At most this many, newest first (0 or more than [`crate::MAX_PAGE`] means the cap).
    pub limit: u32,
}

/// A registered resource server: a tool server or enforcement point that task tokens are
/// issued for (their `aud`), and that may introspect tokens and follow revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceServer {
    /// Its unique name.
    pub name: ResourceServerName,
    /// The audience URI tokens for it carry; unique.
    pub audience: String,
    /// The system its tools belong to (the `system` of the Cedar `Scope` entities).
    pub system: String,
    /// The environment of its data.
    pub environment: Environment,
    /// The sensitivity of its data.
    pub sensitivity: String,
    /// Who registered it.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
}
