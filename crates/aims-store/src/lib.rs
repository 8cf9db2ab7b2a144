//! AIMS persistence: the [`Store`] trait, its SQLite (embedded default) and PostgreSQL
//! (scale-out) implementations, and their migrations.
//!
//! Every state change is written in the same transaction as its audit event, which is chained
//! onto the audit log under the log's head lock, so a change is never committed without its
//! record and the chain never forks; on PostgreSQL an access token's issuance instead queues
//! its event in its own transaction, under row locks on what it checked (`issuance`). Pure
//! audit events (reads, decisions, rejections) arrive in batches from the server's
//! group-commit writer through [`Store::queue_audit`] (durable in the PostgreSQL audit queue
//! until a write chains them; appended at once on SQLite).
//!
//! Callers never see SQL: errors are classified into [`StoreError`]. Both implementations must
//! pass the same conformance suite (`tests/it`).

use std::collections::BTreeMap;
use std::sync::Arc;

use aims_core::agent::{Agent, LifecycleState};
use aims_core::approval::{ApprovalRequest, ApprovalVerdict, BoundCall};
use aims_core::audit::{AuditEntry, AuditEvent, AuditRecord, ChainHead};
use aims_core::credential::CredentialHash;
use aims_core::id::{
    AgentName, ApprovalId, EngineName, Environment, Owner, ResourceServerName, RoleName,
    SecretName, TrustDomain, UserName,
};
use aims_core::lease::{Engine, RoleTemplate};
use aims_core::posture::Evidence;
use aims_core::secret::Secret;
use aims_core::sighting::Sighting;
use aims_core::task::Task;
use aims_core::user::User;
use async_trait::async_trait;
use time::OffsetDateTime;

mod approvals;
mod engine;
mod errors;
mod issuance;
mod leases;
mod oauth;
mod postgres;
mod queue;
mod revocation;
mod rows;
mod secrets;
mod sightings;
mod space;
mod sql;
mod sqlite;
mod ssf;
mod tlog;
mod tx;
mod write;

pub use oauth::{
    AccessTokenIssue, EPOCH_LIFETIME, ResourceServer, Revocation, RevocationTarget, Revoked,
    TaskFilter,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use ssf::{
    MAX_SSF_STREAMS_PER_RECEIVER, MAX_SSF_VERIFICATIONS_PENDING, SsfDelivery, SsfPending,
    SsfReceiver, SsfStatus, SsfStream, SsfVerification,
};

/// One write transaction of the store as it ended: how many writes shared it (a group
/// commit) and how long it held the audit-head lock (from taking it to the end of `COMMIT`
/// or `ROLLBACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBatch {
    /// Writes that ran in the transaction and were not refused (1 for a lone refused write).
    pub writes: usize,
    /// How long it held the audit-head lock.
    pub held: std::time::Duration,
}

/// Told about every write transaction that ends ([`Store::observe_writes`]); called on the
/// writing task, so it must be quick.
pub type WriteObserver = std::sync::Arc<dyn Fn(&WriteBatch) + Send + Sync>;

/// Why a store operation failed. Callers match on the class, never on database text.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The addressed record does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: &'static str,
    },
    /// The write conflicts with existing state (duplicate key, stale revision, last admin).
    #[error("conflict: {reason}")]
    Conflict {
        /// What conflicted, safe to show to an operator.
        reason: &'static str,
    },
    /// The database cannot be reached or cannot write (IO, disk full, lock timeout).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not parse or breaks an invariant.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// The volume holding the database has less free space than the configured reserve: the
    /// write was refused before the database could run out of room.
    #[error(
        "free space on the store's volume ({free_bytes} bytes) is below its reserve ({reserve_bytes} bytes)"
    )]
    LowSpace {
        /// Bytes free for the server's user.
        free_bytes: u64,
        /// The reserve.
        reserve_bytes: u64,
    },
    /// A commit failed in a way that leaves its outcome unknown (the database went away while
    /// committing and cannot be asked): the change may or may not have been made.
    #[error("store commit outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// Lifecycle of a trust-domain signing key. JWKS and the SPIFFE bundle publish `Next`,
/// `Current` and `Previous`; only `Current` signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published ahead of use so verifiers cache it before it signs.
    Next,
    /// The one key that signs.
    Current,
    /// Signed until the last rotation; still verifies tokens it signed.
    Previous,
    /// No longer published; kept so its `kid` is never reused.
    Retired,
}

impl KeyState {
    /// The state's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Current => "current",
            Self::Previous => "previous",
            Self::Retired => "retired",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Next, Self::Current, Self::Previous, Self::Retired]
            .into_iter()
            .find(|s| s.as_str() == value)
    }
}

/// A signing key as stored: the private key only ever encrypted under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id; unique forever.
    pub kid: String,
    /// JOSE algorithm, e.g. `ES256`.
    pub alg: String,
    /// Where the key is in its rotation.
    pub state: KeyState,
    /// When it was generated.
    pub created_at: OffsetDateTime,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    /// The PKCS#8 private key, sealed under the master key.
    pub sealed_private_key: Vec<u8>,
}

/// The audit log's checkpoint-signing key (Ed25519), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLogKey {
    /// The key name of its signed notes (the log's origin).
    pub name: String,
    /// The 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The PKCS#8 private key, sealed under the master key.
    pub sealed_private_key: Vec<u8>,
    /// When it was generated.
    pub created_at: OffsetDateTime,
}

/// A signed checkpoint of the audit log's Merkle tree, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// How many entries the tree holds.
    pub tree_size: u64,
    /// The tree's root (RFC 9162 MTH).
    pub root: aims_core::tlog::Hash,
    /// The C2SP signed note.
    pub note: String,
    /// When it was signed.
    pub created_at: OffsetDateTime,
}

/// The published key set and its SPIFFE bundle sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// Every key, retired ones included.
    pub keys: Vec<StoredKey>,
    /// Incremented on every rotation (`spiffe_sequence`).
    pub sequence: u64,
}

/// A one-time join token as stored (hash only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRecord {
    /// SHA-256 of the token.
    pub hash: CredentialHash,
    /// The agent it lets attest.
    pub agent: AgentName,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// What presenting a join token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinTokenUse {
    /// The token was valid and is now bound to the presenting key (or already was: a retry
    /// with the same key after a lost answer).
    Consumed(AgentName),
    /// The token was used before, by another key.
    AlreadyUsed(AgentName),
    /// The token expired unused.
    Expired(AgentName),
    /// No such token.
    Unknown,
}

/// The last accepted posture of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostureSnapshot {
    /// The agent.
    pub agent: AgentName,
    /// The evidence that was accepted.
    pub evidence: Evidence,
    /// Its digest (`sha256:<hex>`), as named in the identity issued for it.
    pub digest: String,
    /// RFC 7638 thumbprint of the key the identity is bound to.
    pub key_thumbprint: String,
    /// When it was accepted.
    pub accepted_at: OffsetDateTime,
}

/// Which records [`Store::audit_records_of`] reads, each key by its own index: those naming
/// one agent (its SPIFFE ID), of one task (its id), of one action, or naming one owner,
/// decision or determining policy (the `audit_keys` table beside the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKey<'a> {
    /// The agent with this SPIFFE ID.
    Agent(&'a str),
    /// The task with this id.
    Task(&'a str),
    /// This action, e.g. `decision`.
    Action(&'a str),
    /// This owner.
    Owner(&'a str),
    /// This decision, e.g. `deny`.
    Decision(&'a str),
    /// This determining policy id.
    Policy(&'a str),
}

/// Where a reader of the registry's change log has got to: the last change it applied
/// (`change`, the audit sequence number of the transaction that made it) and, among agents
/// changed by that transaction, the last name. The default reads from the beginning.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RegistryCursor {
    /// The audit sequence number of the last change read.
    pub change: u64,
    /// The last agent read at that change (empty before the first).
    pub name: String,
}

/// An agent as it stands after a change, with its last accepted posture: what an in-memory
/// view of the registry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// The audit sequence number of the transaction that last changed it.
    pub change: u64,
    /// Its record.
    pub agent: Agent,
    /// Its last accepted posture, if any.
    pub snapshot: Option<PostureSnapshot>,
}

impl RegistryEntry {
    /// The position just after this entry.
    pub fn cursor(&self) -> RegistryCursor {
        RegistryCursor {
            change: self.change,
            name: self.agent.name.to_string(),
        }
    }
}

/// What an agent has been doing, for the inventory: read from the audit log, the credentials
/// and the tasks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentActivity {
    /// The time of the last audit record naming the agent.
    pub last_seen: Option<OffsetDateTime>,
    /// Its live credentials (not revoked, not expired), counted by kind (`svid`,
    /// `access_token`, ...).
    pub live_credentials: BTreeMap<String, u64>,
    /// How many of its tasks are open.
    pub open_tasks: u64,
    /// Its last decision's audit record.
    pub last_decision: Option<AuditRecord>,
}

/// What kind of credential AIMS issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IssuedKind {
    /// A JWT-SVID.
    Svid,
    /// An access token (RFC 9068) issued by token exchange or delegation.
    AccessToken,
    /// A database lease, derived from a task token.
    Lease,
}

impl IssuedKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Svid => "svid",
            Self::AccessToken => "access_token",
            Self::Lease => "lease",
        }
    }

    /// Parses a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "svid" => Some(Self::Svid),
            "access_token" => Some(Self::AccessToken),
            "lease" => Some(Self::Lease),
            _ => None,
        }
    }
}

/// One credential AIMS issued, as the revocation register keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredential {
    /// Its id (`jti`).
    pub id: String,
    /// Its kind.
    pub kind: IssuedKind,
    /// The agent holding it.
    pub agent: AgentName,
    /// The credential it was derived from, if any.
    pub parent: Option<String>,
    /// Thumbprint of the key it is bound to.
    pub key_thumbprint: Option<String>,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// The task it was issued for (access tokens).
    pub task_id: Option<String>,
    /// The audience it was issued for (`aud`); `None` for credentials registered before the
    /// register kept it.
    pub audience: Option<String>,
}

/// A database lease as stored: its credential's facts and where its role stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Its id (the credential's).
    pub id: String,
    /// The engine its role is in.
    pub engine: EngineName,
    /// The role template it was made from.
    pub role: RoleName,
    /// The database role AIMS created for it.
    pub db_role: String,
    /// The agent holding it.
    pub agent: AgentName,
    /// The task it belongs to.
    pub task_id: Option<String>,
    /// The task token it was asked with.
    pub parent: Option<String>,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
    /// When it ends on its own (the role's `VALID UNTIL`).
    pub expires_at: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// When its role was ended (sessions terminated, role dropped), if it was.
    pub ended_at: Option<OffsetDateTime>,
    /// Failed attempts to end it.
    pub attempts: u64,
    /// Why the last attempt failed (a class, never a secret).
    pub last_error: Option<String>,
    /// Whether it was never handed out: registered, its role perhaps being created, not yet
    /// granted ([`Store::grant_lease`]). A pending lease whose creator's claim ran out is
    /// ended by the reaper.
    pub pending: bool,
}

impl LeaseRecord {
    /// Whether its role should be ended at `now`: revoked or expired, and not ended yet.
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        self.ended_at.is_none() && (self.revoked_at.is_some() || self.expires_at <= now)
    }
}

/// How far the recertification work of one agent's due date went (see
/// [`Store::claim_recertification`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecertificationStep {
    /// Nothing done yet.
    New,
    /// The owner was warned.
    Warned,
    /// The agent was suspended (its owner told).
    Suspended,
}

impl RecertificationStep {
    pub(crate) fn parse(value: &str) -> Result<Self, StoreError> {
        match value {
            "new" => Ok(Self::New),
            "warned" => Ok(Self::Warned),
            "suspended" => Ok(Self::Suspended),
            _ => Err(StoreError::Corrupt(
                "unknown recertification step".to_owned(),
            )),
        }
    }
}

/// A lease to register: its credential (kind [`IssuedKind::Lease`], parent the task token,
/// with its task) and its role, claimed by `holder` until `claimed_until` while the role is
/// being created, so no replica ends it half made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseIssue {
    /// The credential.
    pub credential: IssuedCredential,
    /// The engine.
    pub engine: EngineName,
    /// The role template.
    pub role: RoleName,
    /// The database role to create.
    pub db_role: String,
    /// Who creates the role.
    pub holder: String,
    /// Until when the creator holds the lease.
    pub claimed_until: OffsetDateTime,
}

/// An accepted attestation: the snapshot and the identity issued for it.
#[derive(Debug, Clone)]
pub struct AttestationRecord {
    /// The accepted posture.
    pub snapshot: PostureSnapshot,
    /// The identity issued.
    pub credential: IssuedCredential,
}

/// One stored version of the policy set: every file of it, by file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySetVersion {
    /// Version number, from 1, without gaps.
    pub version: u64,
    /// File name → content (`*.cedar`, `*.cedarschema`, `*.test.json`).
    pub files: std::collections::BTreeMap<String, String>,
    /// Who pushed it.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
}

/// Everything the first start writes, in one transaction.
#[derive(Debug, Clone)]
pub struct Initialization {
    /// The deployment's trust domain.
    pub trust_domain: TrustDomain,
    /// The first keys (one `Current`, one `Next`).
    pub keys: Vec<StoredKey>,
    /// The bootstrap admin.
    pub admin: User,
    /// Hash of the bootstrap admin's credential.
    pub admin_credential: CredentialHash,
}

/// Which agents to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AgentFilter {
    /// Only agents of this owner.
    pub owner: Option<Owner>,
    /// Only agents in this state.
    pub state: Option<LifecycleState>,
    /// Only agents in this environment.
    pub environment: Option<Environment>,
    /// Only agents whose name sorts after this one (pagination).
    pub after: Option<AgentName>,
    /// At most this many (the store caps it at [`MAX_PAGE`]).
    pub limit: u32,
}

/// Largest page any listing returns.
pub const MAX_PAGE: u32 = 1000;

/// The persistence interface of AIMS. Methods that change state take the audit event that
/// records the change and commit both atomically.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers reads and commits a write now (a heartbeat row in
    /// `meta`), and that the free-space reserve holds.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The trust domain, if the store was initialized.
    async fn trust_domain(&self) -> Result<Option<TrustDomain>, StoreError>;

    /// First start: records the trust domain, first keys and bootstrap admin.
    /// `Conflict` if the store is already initialized.
    async fn initialize(&self, init: &Initialization, event: &AuditEvent)
    -> Result<(), StoreError>;

    /// Registers an agent with its first join token. `Conflict` if the name was ever used.
    async fn create_agent(
        &self,
        agent: &Agent,
        join_token: &JoinTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// One agent by name.
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError>;

    /// Agents matching `filter`, ordered by name.
    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, StoreError>;

    /// Replaces an agent's record if its stored revision is `expected_revision`; the new
    /// record's revision must be `expected_revision + 1`. `NotFound` or `Conflict` otherwise.
    /// When the new state may not hold credentials (suspended, quarantined, decommissioned),
    /// every live credential of the agent (and everything derived from it) is revoked and its
    /// active tasks are closed (`revoked`) in the same transaction. Releasing a
    /// quarantined agent (quarantined → active) clears its posture snapshot: the operator
    /// approved the change, and the next accepted attestation sets a new baseline.
    async fn update_agent(
        &self,
        agent: &Agent,
        expected_revision: u64,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Replaces every unused join token of an agent with a new one.
    async fn replace_join_token(
        &self,
        join_token: &JoinTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Binds a join token to the key with thumbprint `key_thumbprint` at its first use. Of
    /// concurrent callers with different keys exactly one succeeds; the same key may present
    /// it again until it expires (so a lost answer does not lock the agent out).
    async fn consume_join_token(
        &self,
        hash: &CredentialHash,
        key_thumbprint: &str,
        now: OffsetDateTime,
    ) -> Result<JoinTokenUse, StoreError>;

    /// Records the use of an attestation nonce (stateless nonces are checked by the server;
    /// only used ones are stored, until `expires_at`): `true` the first time, `false` for a
    /// nonce used before, under any concurrency.
    async fn consume_nonce(
        &self,
        hash: &CredentialHash,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Deletes what has expired by `now` and is kept only to be refused (used attestation
    /// nonces, used DPoP proofs) or read back after a failed commit (the audit queue's batches
    /// already in the log). Not audited: it changes nothing anyone could still use.
    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<(), StoreError>;

    /// Up to `limit` (capped at [`MAX_PAGE`]) agents whose record or posture snapshot
    /// changed after `after`, each as it stands now, in change order: the registry's change
    /// log, from which each replica keeps its in-memory view current. Every change commits
    /// under the audit-head lock and is numbered by its audit sequence, so a reader that
    /// resumes from the last entry it read misses none.
    async fn registry_changes(
        &self,
        after: &RegistryCursor,
        limit: u32,
    ) -> Result<Vec<RegistryEntry>, StoreError>;

    /// The last accepted posture of `agent`.
    async fn posture_snapshot(
        &self,
        agent: &AgentName,
    ) -> Result<Option<PostureSnapshot>, StoreError>;

    /// Commits an accepted attestation: replaces the agent's snapshot and registers the
    /// identity issued, with its audit event. `Conflict` if the agent may not hold
    /// credentials any more (it changed state meanwhile).
    async fn record_attestation(
        &self,
        record: &AttestationRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// One issued credential by id.
    async fn issued_credential(&self, id: &str) -> Result<Option<IssuedCredential>, StoreError>;

    /// Adds a human principal. `Conflict` if the name exists.
    async fn create_user(
        &self,
        user: &User,
        credential: &CredentialHash,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The user holding this credential, if any.
    async fn user_by_credential(
        &self,
        credential: &CredentialHash,
    ) -> Result<Option<User>, StoreError>;

    /// All users, ordered by name.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// Removes a user. `NotFound`, or `Conflict` when it is the last admin.
    async fn remove_user(&self, name: &UserName, event: &AuditEvent) -> Result<(), StoreError>;

    /// Replaces a user's credential; the old one stops working at once.
    async fn rotate_user_credential(
        &self,
        name: &UserName,
        credential: &CredentialHash,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// All keys and the bundle sequence number.
    async fn keys(&self) -> Result<KeySet, StoreError>;

    /// Rotates: previous → retired, current → previous, next → current, `new_next` → next;
    /// bumps the sequence. `Conflict` if `new_next.kid` was ever used.
    async fn rotate_keys(&self, new_next: &StoredKey, event: &AuditEvent)
    -> Result<(), StoreError>;

    /// Stores `set` as the next policy version and makes it the active one, with its audit
    /// event. `set.version` must be the active version + 1 (`Conflict` otherwise: another
    /// push won the race).
    async fn activate_policy_set(
        &self,
        set: &PolicySetVersion,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The active policy version's number (0 when none was ever pushed). Cheap: replicas
    /// poll it to hot-reload.
    async fn active_policy_version(&self) -> Result<u64, StoreError>;

    /// One stored policy version.
    async fn policy_set(&self, version: u64) -> Result<Option<PolicySetVersion>, StoreError>;

    /// The newest `limit` policy versions (capped at [`MAX_PAGE`]), newest first.
    async fn policy_versions(&self, limit: u32) -> Result<Vec<PolicySetVersion>, StoreError>;

    /// Appends events in one transaction (group commit) and returns the new head.
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<ChainHead, StoreError>;

    /// Makes events that change nothing else (decisions, refusals) durable, in this order,
    /// without waiting for the audit head's lock: on PostgreSQL they are queued and enter the
    /// log before the events of any write that begins after this returns (or at the next
    /// [`Store::sequence_audit`]); on SQLite they are appended as by [`Store::append_audit`].
    /// `Ok` only once they are durable.
    async fn queue_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;

    /// Moves every event queued before this call into the log (one write transaction; none
    /// when nothing waits). A reader that must see every acknowledged event calls it first.
    async fn sequence_audit(&self) -> Result<(), StoreError>;

    /// Up to `limit` records with `seq > after`, in order.
    async fn audit_records(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;

    /// Up to `limit` (capped at [`MAX_PAGE`]) rows with `seq > after`, in order, with every
    /// column: the Merkle tree log's entries.
    async fn audit_entries(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// The audit log's checkpoint key, if one was created.
    async fn log_key(&self) -> Result<Option<StoredLogKey>, StoreError>;

    /// Stores `key` as the log key unless one exists, and returns the one stored (so servers
    /// racing to create it all end up with the same key).
    async fn create_log_key(&self, key: &StoredLogKey) -> Result<StoredLogKey, StoreError>;

    /// Stores a signed checkpoint; a size checkpointed before keeps its first note.
    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError>;

    /// The checkpoint of the largest tree, if any.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// The checkpoint of the tree of `tree_size` entries, if one was signed.
    async fn checkpoint(&self, tree_size: u64) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Up to `limit` (capped at [`MAX_PAGE`]) checkpoints of trees larger than `after`, by
    /// size.
    async fn checkpoints(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// What agent `name` (SPIFFE ID `spiffe_id` in the audit log) has been doing, as of
    /// `now`.
    async fn agent_activity(
        &self,
        name: &AgentName,
        spiffe_id: &str,
        now: OffsetDateTime,
    ) -> Result<AgentActivity, StoreError>;

    /// Up to `limit` (capped at [`MAX_PAGE`]) records with `seq > after` of one agent or
    /// one task (`key`), in order.
    async fn audit_records_of(
        &self,
        key: AuditKey<'_>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// The last record's position and hash.
    async fn audit_head(&self) -> Result<ChainHead, StoreError>;

    /// Tells `observer` about every write transaction that ends from now on (metrics,
    /// benchmarks); the first observer set stays.
    fn observe_writes(&self, observer: WriteObserver);

    /// Where the records timed at or after `time` begin: one less than the lowest `seq` of
    /// such a record, or the head's `seq` when there is none. [`Store::audit_records`] from
    /// there reads every record of a window that starts at `time` (and, as times are not
    /// strictly ordered by `seq` across concurrent writers, possibly a few older ones, which
    /// the reader filters out by their time).
    async fn audit_position_at(&self, time: OffsetDateTime) -> Result<u64, StoreError>;

    /// Registers an access token (and creates its task, and burns its DPoP proof) with its
    /// audit event. `Conflict` when the holder may not hold credentials, the parent credential
    /// is unknown, revoked or expired, the task is not open, or the DPoP proof was used before.
    /// On PostgreSQL the event is queued (in the log once sequenced, as [`Store::queue_audit`]'s)
    /// and the issuance waits for no head lock, only for the rows it checked.
    async fn issue_access_token(
        &self,
        issue: &AccessTokenIssue,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Creates a task explicitly. `Conflict` if the id exists or the agent may not act.
    async fn create_task(&self, task: &Task, event: &AuditEvent) -> Result<(), StoreError>;

    /// One task by id.
    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError>;

    /// Tasks matching `filter`, newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;

    /// Ends an active task and revokes everything issued for it (with a task epoch, as
    /// [`Store::revoke`]); returns how many credentials were revoked. `NotFound`, or `Conflict`
    /// when it is not active.
    async fn end_task(
        &self,
        id: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<u64, StoreError>;

    /// Revokes `target` and everything derived from it, appending each newly revoked
    /// credential to the revocation log; returns how many credentials were revoked (0 for an
    /// unknown or already revoked target) once all are. A task, an agent or an owner also gets
    /// epoch entries ([`Revoked::Task`], [`Revoked::Agent`]) that refuse every credential of it
    /// issued until now, registered or not.
    ///
    /// The target's own credentials and epochs commit first, in one transaction with the audit
    /// event and a record of the cascade; their descendants follow in transactions of a bounded
    /// size, so other writes interleave with a large revocation instead of waiting for all of
    /// it. Should this call fail or the process stop in between, the record stays behind and
    /// [`Store::finish_revocations`] completes it; issuance under an already revoked parent is
    /// refused throughout.
    async fn revoke(
        &self,
        target: &RevocationTarget,
        reason: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<u64, StoreError>;

    /// Completes every revocation whose cascade nobody has advanced since `idle_since` (its
    /// revoker stopped or failed mid-way; see [`Store::revoke`]), by the clock of the process
    /// that advanced it last; returns how many credentials it revoked. Each replica runs it at
    /// start and periodically.
    async fn finish_revocations(&self, idle_since: OffsetDateTime) -> Result<u64, StoreError>;

    /// Up to `limit` revocation-log entries with `seq > after`, in order: all of them, or with
    /// `audience`, only those concerning credentials issued for it.
    async fn revocations_since(
        &self,
        after: u64,
        limit: u32,
        audience: Option<&str>,
    ) -> Result<Vec<Revocation>, StoreError>;

    /// Registers a resource server with the hash of its secret. `Conflict` if the name or
    /// audience is taken.
    async fn create_resource_server(
        &self,
        server: &ResourceServer,
        credential: &CredentialHash,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// One resource server by name.
    async fn resource_server(
        &self,
        name: &ResourceServerName,
    ) -> Result<Option<ResourceServer>, StoreError>;

    /// The resource server whose audience is `audience`.
    async fn resource_server_by_audience(
        &self,
        audience: &str,
    ) -> Result<Option<ResourceServer>, StoreError>;

    /// The resource server holding this secret.
    async fn resource_server_by_credential(
        &self,
        credential: &CredentialHash,
    ) -> Result<Option<ResourceServer>, StoreError>;

    /// Every resource server, by name.
    async fn list_resource_servers(&self) -> Result<Vec<ResourceServer>, StoreError>;

    /// Removes a resource server (tokens already issued for it simply expire). `NotFound`.
    async fn remove_resource_server(
        &self,
        name: &ResourceServerName,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Creates an SSF event stream with its audit event and returns it as stored: its
    /// `acked_through` is the revocation log's head at that moment, whatever the caller set,
    /// so it carries only what is revoked afterwards. `Conflict` if the id exists or the
    /// receiver already holds [`MAX_SSF_STREAMS_PER_RECEIVER`] streams.
    async fn create_ssf_stream(
        &self,
        stream: &SsfStream,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError>;

    /// One SSF stream by id.
    async fn ssf_stream(&self, id: &str) -> Result<Option<SsfStream>, StoreError>;

    /// Up to `limit` streams (capped at [`MAX_PAGE`]) with ids after `after` (`""` for the
    /// first page), ordered by id; only `receiver`'s when given.
    async fn list_ssf_streams(
        &self,
        receiver: Option<&SsfReceiver>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SsfStream>, StoreError>;

    /// Replaces what the receiver chose of stream `stream.id` (delivery, event types
    /// requested and delivered, description) with `stream`'s, with its audit event; the rest
    /// (owner, audience, position, status) stays. Returns the stream as stored. `NotFound`.
    async fn update_ssf_stream(
        &self,
        stream: &SsfStream,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError>;

    /// Sets stream `id`'s status and reason, with its audit event, and returns the stream as
    /// stored. A stream that leaves or enters [`SsfStatus::Disabled`] keeps nothing: its
    /// position moves to the log's head, its out-of-order acknowledgements and queued
    /// verification events are dropped. `NotFound`.
    async fn set_ssf_status(
        &self,
        id: &str,
        status: SsfStatus,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError>;

    /// Queues a verification event carrying `state` on stream `id`, with its audit event.
    /// `NotFound`; `Conflict` when [`MAX_SSF_VERIFICATIONS_PENDING`] wait already.
    async fn queue_ssf_verification(
        &self,
        id: &str,
        state: Option<&str>,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Up to `limit` (capped at [`MAX_PAGE`]) verification events stream `id` has not
    /// delivered, oldest first. Empty for an unknown stream.
    async fn ssf_verifications(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<SsfVerification>, StoreError>;

    /// Records that stream `id`'s receiver has the verification events `seqs`; positions
    /// not queued on that stream are ignored.
    async fn acknowledge_ssf_verifications(&self, id: &str, seqs: &[u64])
    -> Result<(), StoreError>;

    /// Deletes a stream and its acknowledgements, with its audit event. `NotFound`.
    async fn delete_ssf_stream(&self, id: &str, event: &AuditEvent) -> Result<(), StoreError>;

    /// Up to `limit` (capped at [`MAX_PAGE`]) revocation-log entries the stream has not
    /// delivered, oldest first. Empty for an unknown stream.
    async fn ssf_pending(&self, id: &str, limit: u32) -> Result<Vec<SsfPending>, StoreError>;

    /// Records that the stream's receiver has the log entries at positions `seqs` (in any
    /// order, repeats allowed): they are not pending any more. Positions the log does not
    /// hold, or already delivered, are ignored, so an acknowledgement never hides an entry
    /// written later. `NotFound` for an unknown stream.
    async fn acknowledge_ssf(&self, id: &str, seqs: &[u64]) -> Result<(), StoreError>;

    /// Claims the delivery of push stream `id` for `holder` until `until`: succeeds when the
    /// stream is unclaimed, already `holder`'s, or its claim ran out before `now`. Of
    /// concurrent claimants exactly one succeeds. `false` otherwise, and for an unknown or
    /// poll stream.
    async fn claim_ssf_stream(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Claims, or renews, the deployment's audit-sequencer lease for `holder` until `until`:
    /// `true` if the lease was free, already `holder`'s, or ran out by `now`. Of concurrent
    /// claimants exactly one succeeds. The holder moves the audit queue into the log on a
    /// schedule; every replica still sequences before it reads the log or changes state.
    async fn claim_sequencer(
        &self,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Opens an approval request for its call, with `decision` (the `approval_required`
    /// decision that asked) and `opened` (its `approval.request` event); when a pending,
    /// unexpired request for the same call exists, joins it instead and writes `decision`
    /// only. Either way the events written name the request, and it is returned. `Conflict`
    /// when the agent may not hold credentials, the task is not open, or the agent already
    /// has [`aims_core::approval::MAX_PENDING_PER_AGENT`] other requests pending.
    async fn open_approval(
        &self,
        request: &ApprovalRequest,
        decision: &AuditEvent,
        opened: &AuditEvent,
    ) -> Result<ApprovalRequest, StoreError>;

    /// One approval request by id.
    async fn approval(&self, id: &ApprovalId) -> Result<Option<ApprovalRequest>, StoreError>;

    /// The newest `limit` approval requests (capped at [`MAX_PAGE`]); with `pending_at`, only
    /// those pending and unexpired then.
    async fn list_approvals(
        &self,
        pending_at: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, StoreError>;

    /// Records a human's answer to a pending request, with its audit event; an approval
    /// becomes a grant of the request's uses for its window from `verdict.at`. `NotFound`;
    /// `Conflict` when the request is no longer pending at `verdict.at` (answered, expired or
    /// revoked), its agent may not hold credentials, or its task is not open.
    async fn decide_approval(
        &self,
        id: &ApprovalId,
        verdict: &ApprovalVerdict,
        event: &AuditEvent,
    ) -> Result<ApprovalRequest, StoreError>;

    /// The id of a grant covering `call` with uses left at `now`, if any (a read: spending
    /// it is [`Store::use_grant`]).
    async fn grant_for(
        &self,
        call: &BoundCall,
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalId>, StoreError>;

    /// Spends one use of grant `id` in one transaction with the decision `event` that used
    /// it. Of concurrent callers on a grant with one use left exactly one gets `true`; `false`,
    /// with nothing written, when the grant is spent, expired, revoked or unknown.
    async fn use_grant(
        &self,
        id: &ApprovalId,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// The approvals' change counter: it grows with every change to any request, so a
    /// replica polling it learns that a waiter's request may have been answered.
    async fn approvals_version(&self) -> Result<u64, StoreError>;

    /// Stores a new secret at version 1 with its value sealed under the master key, with its
    /// audit event. `Conflict` if the name is taken.
    async fn create_secret(
        &self,
        secret: &Secret,
        sealed_value: &[u8],
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Makes `secret` (whose `version` is the stored one + 1) and `sealed_value` the current
    /// version, keeping the older ones. `NotFound`, or `Conflict` when the stored version is
    /// not `secret.version - 1` (another rotation won the race).
    async fn rotate_secret(
        &self,
        secret: &Secret,
        sealed_value: &[u8],
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Deletes a secret and every version of its value. `NotFound`.
    async fn delete_secret(&self, name: &SecretName, event: &AuditEvent) -> Result<(), StoreError>;

    /// One secret, without its value.
    async fn secret(&self, name: &SecretName) -> Result<Option<Secret>, StoreError>;

    /// One secret and its current version's sealed value.
    async fn secret_value(
        &self,
        name: &SecretName,
    ) -> Result<Option<(Secret, Vec<u8>)>, StoreError>;

    /// Up to `limit` secrets (capped at [`MAX_PAGE`]), by name, without values.
    async fn list_secrets(&self, limit: u32) -> Result<Vec<Secret>, StoreError>;

    /// Adds an engine with its audit event. `Conflict` if the name is taken.
    async fn create_engine(&self, engine: &Engine, event: &AuditEvent) -> Result<(), StoreError>;

    /// One engine.
    async fn engine(&self, name: &EngineName) -> Result<Option<Engine>, StoreError>;

    /// Up to [`MAX_PAGE`] engines, by name.
    async fn list_engines(&self) -> Result<Vec<Engine>, StoreError>;

    /// Adds a role template to its engine with its audit event. `NotFound` for an unknown
    /// engine, `Conflict` if the engine has a template of that name.
    async fn create_role_template(
        &self,
        template: &RoleTemplate,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// One role template.
    async fn role_template(
        &self,
        engine: &EngineName,
        name: &RoleName,
    ) -> Result<Option<RoleTemplate>, StoreError>;

    /// Up to [`MAX_PAGE`] role templates of an engine, by name.
    async fn list_role_templates(
        &self,
        engine: &EngineName,
    ) -> Result<Vec<RoleTemplate>, StoreError>;

    /// Registers a lease (its credential and its row, claimed by its creator) with its audit
    /// event. `Conflict` when the agent may not hold credentials, the parent token is unknown,
    /// revoked, expired or of another task, the task is not open, or the lease would outlive
    /// its parent.
    async fn issue_lease(&self, issue: &LeaseIssue, event: &AuditEvent) -> Result<(), StoreError>;

    /// Moves lease `id`'s end to `expires_at` (its credential's and its row's) with its audit
    /// event. Conflict when the lease is revoked, expired at `now` or ended, or when its task
    /// token is revoked or expires before `expires_at`.
    async fn renew_lease(
        &self,
        id: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// One lease.
    async fn lease(&self, id: &str) -> Result<Option<LeaseRecord>, StoreError>;

    /// The newest `limit` leases (capped at [`MAX_PAGE`]); only `agent`'s when given.
    async fn list_leases(
        &self,
        agent: Option<&AgentName>,
        limit: u32,
    ) -> Result<Vec<LeaseRecord>, StoreError>;

    /// Up to `limit` leases whose role should be ended at `now` (revoked, expired or pending
    /// with its creator's claim run out; not
    /// ended, due for a retry, unclaimed), oldest first.
    async fn leases_to_end(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<LeaseRecord>, StoreError>;

    /// How many leases are revoked, expired or pending with their creator's claim run out at
    /// `now`, and not ended.
    async fn leases_overdue(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// Claims lease `id` for `holder` until `until`: succeeds when it is not ended and
    /// unclaimed, already `holder`'s, or its claim ran out before `now`. Of concurrent
    /// claimants exactly one succeeds.
    async fn claim_lease(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Marks pending lease `id` granted (its role made, its password about to be handed out)
    /// and gives up `holder`'s claim; false when `holder` no longer holds the claim or the
    /// lease is not pending (the reaper may then end it).
    async fn grant_lease(&self, id: &str, holder: &str) -> Result<bool, StoreError>;

    /// Gives up `holder`'s claim on lease `id` (false when it held none).
    async fn release_lease(&self, id: &str, holder: &str) -> Result<bool, StoreError>;

    /// Records that `holder`, holding the claim, ended lease `id`'s role at `now`, with its
    /// audit event. `Conflict` (nothing written) when `holder` does not hold the claim or the
    /// lease is already ended.
    async fn end_lease(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Records that `holder` failed to end lease `id` (`error`: a class, never a secret) and
    /// gives up its claim; the lease is tried again from `retry_at`. False when `holder` did
    /// not hold the claim.
    async fn lease_failed(
        &self,
        id: &str,
        holder: &str,
        retry_at: OffsetDateTime,
        error: &str,
    ) -> Result<bool, StoreError>;

    /// Claims the recertification work of agent `agent`'s due date `due` for `holder` until
    /// `until`, creating its record the first time: succeeds when it is unclaimed, already
    /// `holder`'s, or its claim ran out before `now`, and says how far the work went. Of
    /// concurrent claimants exactly one succeeds; `None` for the others.
    async fn claim_recertification(
        &self,
        agent: &AgentName,
        due: OffsetDateTime,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<RecertificationStep>, StoreError>;

    /// Records that `holder`, holding the claim on `agent`'s due date `due`, took the work to
    /// `done` at `now` (`None`: nothing more done) and gives up the claim. False when
    /// `holder` did not hold it.
    async fn finish_recertification(
        &self,
        agent: &AgentName,
        due: OffsetDateTime,
        holder: &str,
        done: Option<RecertificationStep>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Adds `reporter`'s report of refused callers, with one audit event: each sighting is
    /// merged with the stored one of the same source, route, user agent and reason (earliest
    /// first, latest last, counts summed). New ones beyond
    /// [`aims_core::sighting::MAX_PER_REPORTER`] are dropped. Returns how many were kept.
    async fn report_sightings(
        &self,
        reporter: &ResourceServerName,
        sightings: &[Sighting],
        event: &AuditEvent,
    ) -> Result<u64, StoreError>;

    /// The `limit` most recently seen sightings (capped at [`MAX_PAGE`]), with who reported
    /// them.
    async fn sightings(
        &self,
        limit: u32,
    ) -> Result<Vec<(ResourceServerName, Sighting)>, StoreError>;
}

/// How a store is opened beyond its URL.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOptions {
    /// Free bytes a SQLite store keeps on the volume of its database file: below this, every
    /// write is refused with [`StoreError::LowSpace`] before the database (and its audit log)
    /// can fill the disk. 0 turns the guard off. A PostgreSQL server watches its own disk.
    pub reserve_bytes: u64,
    /// SQLite's `max_page_count` on every writer connection: a hard cap on the database's
    /// size, beyond which writes fail with `SQLITE_FULL` as on a full disk.
    pub max_pages: Option<u64>,
}

/// Opens the store named by `url`: `sqlite://PATH` or `postgres://…`; runs migrations.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(
            SqliteStore::open_with(std::path::Path::new(path), options).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::Unavailable(
            "database URL must start with sqlite:// or postgres://".to_owned(),
        ))
    }
}
