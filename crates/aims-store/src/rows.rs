//! What both backends store and how it maps to domain types: row shapes, time and integer
//! encoding, audit chaining of a batch, and the small rules every backend applies the same
//! way (revision checks, join-token outcomes, key rotation order, page limits).
//!
//! Nothing here talks to a database; the backends run the SQL and hand rows to these helpers,
//! so a rule written here cannot drift between SQLite and PostgreSQL.

use aims_core::agent::{Agent, LifecycleState};
use aims_core::approval::{ApprovalRequest, ApprovalState};
use aims_core::audit::{AuditEntry, AuditEvent, AuditRecord, ChainHash, ChainHead};
use aims_core::id::{
    AgentName, ApprovalId, Environment, Intent, ResourceServerName, TaskId, TrustDomain, UserName,
};
use aims_core::secret::Secret;
use aims_core::sighting::Sighting;
use aims_core::task::{Task, TaskState};
use aims_core::user::{Role, User};
use time::OffsetDateTime;

use crate::{
    AgentFilter, IssuedCredential, IssuedKind, JoinTokenRecord, JoinTokenUse, KeyState, MAX_PAGE,
    PolicySetVersion, PostureSnapshot, RegistryEntry, ResourceServer, Revocation, Revoked,
    SsfDelivery, SsfPending, SsfReceiver, SsfStatus, SsfStream, SsfVerification, StoreError,
    StoredCheckpoint, StoredKey, StoredLogKey, TaskFilter,
};

/// `meta` key of the trust domain.
pub(crate) const META_TRUST_DOMAIN: &str = "trust_domain";
/// `meta` key of the SPIFFE bundle sequence number.
pub(crate) const META_KEY_SEQUENCE: &str = "key_bundle_sequence";

/// Unix milliseconds. Times are stored at millisecond precision.
pub(crate) fn to_ms(t: OffsetDateTime) -> i64 {
    // `OffsetDateTime` spans at most ±999,999 years, about ±3.2e16 ms, far inside `i64`;
    // the fallback is unreachable.
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

/// The UTC time of stored unix milliseconds.
pub(crate) fn from_ms(ms: i64, what: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("{what} time {ms} is out of range")))
}

/// A counter as a database integer.
pub(crate) fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Conflict {
        reason: "number too large to store",
    })
}

/// A stored integer that must not be negative.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("stored {what} {value:?} is invalid"))
}

/// A stored trust domain.
pub(crate) fn parse_trust_domain(value: &str) -> Result<TrustDomain, StoreError> {
    TrustDomain::new(value).map_err(|_| corrupt("trust domain", value))
}

/// A stored bundle sequence number; 0 before initialization.
pub(crate) fn parse_sequence(value: Option<&str>) -> Result<u64, StoreError> {
    value.map_or(Ok(0), |v| {
        v.parse().map_err(|_| corrupt("key bundle sequence", v))
    })
}

/// The sequence number after `stored`, as stored text.
pub(crate) fn next_sequence(stored: Option<&str>) -> Result<String, StoreError> {
    let next = parse_sequence(stored)?
        .checked_add(1)
        .ok_or(StoreError::Corrupt(
            "key bundle sequence overflows".to_owned(),
        ))?;
    Ok(next.to_string())
}

/// The columns of an `agents` row.
pub(crate) struct AgentColumns {
    pub name: String,
    pub owner: String,
    pub environment: String,
    pub state: &'static str,
    pub revision: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub record: String,
}

impl AgentColumns {
    /// Encodes `agent`; the JSON `record` carries every field.
    pub fn of(agent: &Agent) -> Result<Self, StoreError> {
        let record = serde_json::to_string(agent)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode agent record: {e}")))?;
        Ok(Self {
            name: agent.name.as_str().to_owned(),
            owner: agent.owner.as_str().to_owned(),
            environment: agent.environment.as_str().to_owned(),
            state: agent.state.as_str(),
            revision: to_i64(agent.revision)?,
            created_at_ms: to_ms(agent.created_at),
            updated_at_ms: to_ms(agent.updated_at),
            record,
        })
    }
}

/// An agent read back: its key and full record.
#[derive(sqlx::FromRow)]
pub(crate) struct AgentRow {
    pub name: String,
    pub record: String,
}

impl AgentRow {
    /// Decodes the record, which must belong to the row's name.
    pub fn into_agent(self) -> Result<Agent, StoreError> {
        let agent: Agent = serde_json::from_str(&self.record).map_err(|e| {
            StoreError::Corrupt(format!("agent {:?} record does not parse: {e}", self.name))
        })?;
        if agent.name.as_str() != self.name {
            return Err(StoreError::Corrupt(format!(
                "agent row {:?} holds the record of {:?}",
                self.name,
                agent.name.as_str()
            )));
        }
        Ok(agent)
    }
}

/// The stored revision an update of `agent` must find. `Conflict` unless
/// `agent.revision == expected + 1`.
pub(crate) fn revision_step(agent: &Agent, expected: u64) -> Result<i64, StoreError> {
    if expected.checked_add(1) != Some(agent.revision) {
        return Err(StoreError::Conflict {
            reason: "new agent revision must be the expected revision plus one",
        });
    }
    to_i64(expected)
}

/// Why a guarded update changed no row: the agent is missing, or its revision moved on.
pub(crate) fn stale_agent(exists: bool) -> StoreError {
    if exists {
        StoreError::Conflict {
            reason: "agent was changed since it was read",
        }
    } else {
        StoreError::NotFound { what: "agent" }
    }
}

/// A new agent's first join token must be its own.
pub(crate) fn check_token_owner(agent: &Agent, token: &JoinTokenRecord) -> Result<(), StoreError> {
    if token.agent != agent.name {
        return Err(StoreError::Conflict {
            reason: "join token belongs to another agent",
        });
    }
    Ok(())
}

/// A listing query (agents by name, tasks newest first): its SQL, its text binds in
/// placeholder order, and finally the page size bound as the last placeholder.
pub(crate) struct Listing {
    pub sql: String,
    pub binds: Vec<String>,
    pub limit: i64,
}

impl Listing {
    /// The agents matching `filter`, ordered by name.
    pub fn of(filter: &AgentFilter) -> Self {
        Self::build(
            "SELECT name, record FROM agents",
            [
                (
                    "owner =",
                    filter.owner.as_ref().map(|o| o.as_str().to_owned()),
                ),
                ("state =", filter.state.map(|s| s.as_str().to_owned())),
                (
                    "environment =",
                    filter.environment.as_ref().map(|e| e.as_str().to_owned()),
                ),
                (
                    "name >",
                    filter.after.as_ref().map(|a| a.as_str().to_owned()),
                ),
            ],
            "name",
            filter.limit,
        )
    }

    /// `select` with one bound `AND` per present condition, `order`, and the page size. Only
    /// fixed column names enter the SQL; values are all bound.
    fn build<const N: usize>(
        select: &str,
        conditions: [(&str, Option<String>); N],
        order: &str,
        limit: u32,
    ) -> Self {
        let mut sql = format!("{select} WHERE TRUE");
        let mut binds = Vec::new();
        for (condition, value) in conditions {
            if let Some(value) = value {
                binds.push(value);
                sql.push_str(&format!(" AND {condition} ${}", binds.len()));
            }
        }
        sql.push_str(&format!(" ORDER BY {order} LIMIT ${}", binds.len() + 1));
        Self {
            sql,
            binds,
            limit: i64::from(page_limit(limit)),
        }
    }
}

/// A listing's page size: 0 means [`MAX_PAGE`], and nothing exceeds it.
pub(crate) fn page_limit(limit: u32) -> u32 {
    if limit == 0 {
        MAX_PAGE
    } else {
        limit.min(MAX_PAGE)
    }
}

/// The `seq > after` bound of an audit page; nothing lies beyond `i64::MAX`.
pub(crate) fn audit_after(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

/// A user read back.
#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    pub name: String,
    pub role: String,
    pub created_at_ms: i64,
    pub credential_rotated_at_ms: i64,
}

impl UserRow {
    /// Decodes the row.
    pub fn into_user(self) -> Result<User, StoreError> {
        Ok(User {
            name: UserName::new(self.name.as_str())
                .map_err(|_| corrupt("user name", &self.name))?,
            role: Role::parse(&self.role).ok_or_else(|| corrupt("role", &self.role))?,
            created_at: from_ms(self.created_at_ms, "user creation")?,
            credential_rotated_at: from_ms(self.credential_rotated_at_ms, "credential rotation")?,
        })
    }
}

/// Refuses to remove an admin when `admins` (counted before removal) is the last one.
pub(crate) fn check_admin_remains(admins: i64) -> Result<(), StoreError> {
    if admins <= 1 {
        return Err(StoreError::Conflict {
            reason: "cannot remove the last admin",
        });
    }
    Ok(())
}

/// The role column of a user about to be removed.
pub(crate) fn parse_role(value: &str) -> Result<Role, StoreError> {
    Role::parse(value).ok_or_else(|| corrupt("role", value))
}

/// A signing key read back.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub created_at_ms: i64,
    pub public_jwk: String,
    pub sealed_private_key: Vec<u8>,
}

impl KeyRow {
    /// Decodes the row.
    pub fn into_key(self) -> Result<StoredKey, StoreError> {
        Ok(StoredKey {
            state: KeyState::parse(&self.state).ok_or_else(|| corrupt("key state", &self.state))?,
            created_at: from_ms(self.created_at_ms, "key creation")?,
            kid: self.kid,
            alg: self.alg,
            public_jwk: self.public_jwk,
            sealed_private_key: self.sealed_private_key,
        })
    }
}

/// The state moves of one rotation, in the order they must run so that at no point two keys
/// share a live state (a unique index forbids it).
pub(crate) const KEY_ROTATION: [(KeyState, KeyState); 3] = [
    (KeyState::Previous, KeyState::Retired),
    (KeyState::Current, KeyState::Previous),
    (KeyState::Next, KeyState::Current),
];

/// A join token's row, looked up after a consume attempt changed nothing.
#[derive(sqlx::FromRow)]
pub(crate) struct JoinTokenRow {
    pub agent: String,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
}

/// Why a join token presented at `now_ms` could not be consumed.
pub(crate) fn unconsumed_join_token(
    row: Option<JoinTokenRow>,
    now_ms: i64,
) -> Result<JoinTokenUse, StoreError> {
    let Some(row) = row else {
        return Ok(JoinTokenUse::Unknown);
    };
    let agent = parse_agent_name(&row.agent)?;
    Ok(if row.used_at_ms.is_some() {
        JoinTokenUse::AlreadyUsed(agent)
    } else if row.expires_at_ms <= now_ms {
        JoinTokenUse::Expired(agent)
    } else {
        // Unused and valid, yet the consume saw no such row: it was written after the
        // attempt, so at the attempt it did not exist.
        JoinTokenUse::Unknown
    })
}

/// A stored agent name.
pub(crate) fn parse_agent_name(value: &str) -> Result<AgentName, StoreError> {
    AgentName::new(value).map_err(|_| corrupt("agent name", value))
}

/// A stored task id.
pub(crate) fn parse_task_id(value: &str) -> Result<TaskId, StoreError> {
    TaskId::new(value).map_err(|_| corrupt("task id", value))
}

/// The audit head row.
#[derive(sqlx::FromRow)]
pub(crate) struct HeadRow {
    pub seq: i64,
    pub hash: String,
}

impl HeadRow {
    /// Decodes the row.
    pub fn into_head(self) -> Result<ChainHead, StoreError> {
        Ok(ChainHead {
            seq: to_u64(self.seq, "audit head sequence")?,
            hash: ChainHash::from_hex(&self.hash)
                .ok_or_else(|| corrupt("audit head hash", &self.hash))?,
        })
    }
}

/// An audit record read back.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    pub body: String,
}

impl AuditRow {
    /// Decodes the row. The chain itself is checked by readers with `verify_chain`, not
    /// here, so a tampered record is still returned for them to find.
    pub fn into_record(self) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            seq: to_u64(self.seq, "audit sequence")?,
            prev_hash: ChainHash::from_hex(&self.prev_hash)
                .ok_or_else(|| corrupt("audit prev_hash", &self.prev_hash))?,
            hash: ChainHash::from_hex(&self.hash)
                .ok_or_else(|| corrupt("audit hash", &self.hash))?,
            body: self.body,
        })
    }
}

/// An audit row with every column read back.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditEntryRow {
    pub seq: i64,
    pub time_ms: i64,
    pub action: String,
    pub agent: Option<String>,
    pub task_id: Option<String>,
    pub txn: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub body: String,
}

impl AuditEntryRow {
    /// Decodes the row without judging it: verifiers find what is wrong.
    pub fn into_entry(self) -> Result<AuditEntry, StoreError> {
        let record = AuditRow {
            seq: self.seq,
            prev_hash: self.prev_hash,
            hash: self.hash,
            body: self.body,
        }
        .into_record()?;
        Ok(AuditEntry {
            record,
            time_ms: self.time_ms,
            action: self.action,
            agent: self.agent,
            task_id: self.task_id,
            txn: self.txn,
        })
    }
}

/// The audit log key row.
#[derive(sqlx::FromRow)]
pub(crate) struct LogKeyRow {
    pub name: String,
    pub public_key: Vec<u8>,
    pub sealed_private_key: Vec<u8>,
    pub created_at_ms: i64,
}

impl LogKeyRow {
    /// Decodes the row.
    pub fn into_key(self) -> Result<StoredLogKey, StoreError> {
        Ok(StoredLogKey {
            created_at: from_ms(self.created_at_ms, "log key creation")?,
            name: self.name,
            public_key: self.public_key,
            sealed_private_key: self.sealed_private_key,
        })
    }
}

/// A stored checkpoint row.
#[derive(sqlx::FromRow)]
pub(crate) struct CheckpointRow {
    pub tree_size: i64,
    pub root_hash: String,
    pub note: String,
    pub created_at_ms: i64,
}

impl CheckpointRow {
    /// Decodes the row.
    pub fn into_checkpoint(self) -> Result<StoredCheckpoint, StoreError> {
        Ok(StoredCheckpoint {
            tree_size: to_u64(self.tree_size, "checkpoint tree size")?,
            root: ChainHash::from_hex(&self.root_hash)
                .map(|h| h.0)
                .ok_or_else(|| corrupt("checkpoint root", &self.root_hash))?,
            note: self.note,
            created_at: from_ms(self.created_at_ms, "checkpoint creation")?,
        })
    }
}

/// An audit record ready to insert.
pub(crate) struct NewAuditRow {
    pub seq: i64,
    pub time_ms: i64,
    pub action: String,
    pub agent: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub body: String,
    /// The appending transaction's id.
    pub txn: String,
    /// The task the event belongs to.
    pub task_id: Option<String>,
    /// Its query keys for `audit_keys`: (kind, key), each once.
    pub keys: Vec<(&'static str, String)>,
}

/// The query keys of `event` kept in `audit_keys`: its owner, decision and policies.
fn audit_keys(event: &AuditEvent) -> Vec<(&'static str, String)> {
    let mut keys: Vec<(&'static str, String)> = Vec::new();
    if let Some(owner) = &event.owner {
        keys.push(("owner", owner.clone()));
    }
    if let Some(decision) = &event.decision {
        keys.push(("decision", decision.clone()));
    }
    for policy in &event.policy_ids {
        if !keys.iter().any(|(k, v)| *k == "policy" && v == policy) {
            keys.push(("policy", policy.clone()));
        }
    }
    keys
}

/// Chains `events` after `head` for the transaction `txn`; returns the rows to insert and
/// the new head.
pub(crate) fn chain_batch(
    head: ChainHead,
    events: &[AuditEvent],
    txn: &str,
) -> Result<(Vec<NewAuditRow>, ChainHead), StoreError> {
    let mut rows = Vec::with_capacity(events.len());
    let mut head = head;
    for event in events {
        let record = AuditRecord::chain(head.seq, head.hash, event);
        rows.push(NewAuditRow {
            seq: to_i64(record.seq)?,
            time_ms: to_ms(event.time),
            action: event.action.clone(),
            agent: event.agent.clone(),
            prev_hash: record.prev_hash.to_hex(),
            hash: record.hash.to_hex(),
            body: record.body,
            txn: txn.to_owned(),
            task_id: event.task_id.clone(),
            keys: audit_keys(event),
        });
        head = ChainHead {
            seq: record.seq,
            hash: record.hash,
        };
    }
    Ok((rows, head))
}

/// A posture snapshot read back.
#[derive(sqlx::FromRow)]
pub(crate) struct SnapshotRow {
    pub agent: String,
    pub evidence: String,
    pub digest: String,
    pub key_thumbprint: String,
    pub accepted_at_ms: i64,
}

impl SnapshotRow {
    /// Decodes the stored evidence.
    pub fn into_snapshot(self) -> Result<PostureSnapshot, StoreError> {
        Ok(PostureSnapshot {
            agent: parse_agent_name(&self.agent)?,
            evidence: serde_json::from_str(&self.evidence)
                .map_err(|_| corrupt("posture evidence of", &self.agent))?,
            digest: self.digest,
            key_thumbprint: self.key_thumbprint,
            accepted_at: from_ms(self.accepted_at_ms, "posture snapshot")?,
        })
    }
}

/// The `change_seq` a write transaction that began at `head` gives what it changes: the
/// sequence number its first audit record takes.
pub(crate) fn change_seq(head: &ChainHead) -> Result<i64, StoreError> {
    head.seq
        .checked_add(1)
        .and_then(|seq| i64::try_from(seq).ok())
        .ok_or_else(|| StoreError::Corrupt("audit sequence out of range".to_owned()))
}

/// An agent with its posture snapshot (if it has one), as the registry view reads them.
#[derive(sqlx::FromRow)]
pub(crate) struct RegistryRow {
    pub change_seq: i64,
    pub name: String,
    pub record: String,
    pub evidence: Option<String>,
    pub digest: Option<String>,
    pub key_thumbprint: Option<String>,
    pub accepted_at_ms: Option<i64>,
}

impl RegistryRow {
    /// Decodes the agent and its snapshot.
    pub fn into_entry(self) -> Result<RegistryEntry, StoreError> {
        let change = u64::try_from(self.change_seq)
            .map_err(|_| corrupt("change sequence of agent", &self.name))?;
        let snapshot = match (
            self.evidence,
            self.digest,
            self.key_thumbprint,
            self.accepted_at_ms,
        ) {
            (Some(evidence), Some(digest), Some(key_thumbprint), Some(accepted_at_ms)) => Some(
                SnapshotRow {
                    agent: self.name.clone(),
                    evidence,
                    digest,
                    key_thumbprint,
                    accepted_at_ms,
                }
                .into_snapshot()?,
            ),
            (None, None, None, None) => None,
            _ => return Err(corrupt("posture snapshot of", &self.name)),
        };
        let agent = AgentRow {
            name: self.name,
            record: self.record,
        }
        .into_agent()?;
        Ok(RegistryEntry {
            change,
            agent,
            snapshot,
        })
    }
}

/// An issued credential read back.
#[derive(sqlx::FromRow)]
pub(crate) struct CredentialRow {
    pub id: String,
    pub kind: String,
    pub agent: String,
    pub parent: Option<String>,
    pub key_thumbprint: Option<String>,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub task_id: Option<String>,
    pub audience: Option<String>,
}

impl CredentialRow {
    /// Decodes the row.
    pub fn into_credential(self) -> Result<IssuedCredential, StoreError> {
        Ok(IssuedCredential {
            kind: IssuedKind::parse(&self.kind)
                .ok_or_else(|| corrupt("credential kind", &self.kind))?,
            agent: parse_agent_name(&self.agent)?,
            parent: self.parent,
            key_thumbprint: self.key_thumbprint,
            issued_at: from_ms(self.issued_at_ms, "credential issue")?,
            expires_at: from_ms(self.expires_at_ms, "credential expiry")?,
            revoked_at: self
                .revoked_at_ms
                .map(|ms| from_ms(ms, "credential revocation"))
                .transpose()?,
            id: self.id,
            task_id: self.task_id,
            audience: self.audience,
        })
    }
}

/// Whether a change from stored state `previous` to `next` releases a quarantined agent, which
/// clears its posture baseline (the operator approved the change it drifted to).
pub(crate) fn is_release(previous: Option<&str>, next: LifecycleState) -> bool {
    previous.and_then(LifecycleState::parse) == Some(LifecycleState::Quarantined)
        && next == LifecycleState::Active
}

/// A stored policy version read back.
#[derive(sqlx::FromRow)]
pub(crate) struct PolicySetRow {
    pub version: i64,
    pub files: String,
    pub created_by: String,
    pub created_at_ms: i64,
}

impl PolicySetRow {
    /// Decodes the row.
    pub fn into_policy_set(self) -> Result<PolicySetVersion, StoreError> {
        Ok(PolicySetVersion {
            version: u64::try_from(self.version)
                .map_err(|_| corrupt("policy version", &self.version.to_string()))?,
            files: serde_json::from_str(&self.files)
                .map_err(|_| corrupt("policy files of version", &self.version.to_string()))?,
            created_by: self.created_by,
            created_at: from_ms(self.created_at_ms, "policy set")?,
        })
    }
}

/// A stored task.
#[derive(sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub id: String,
    pub agent: String,
    pub intent: String,
    pub subject: String,
    pub state: String,
    pub created_at_ms: i64,
    pub deadline_ms: i64,
    pub ended_at_ms: Option<i64>,
}

impl TaskRow {
    /// Decodes the row.
    pub fn into_task(self) -> Result<Task, StoreError> {
        Ok(Task {
            agent: parse_agent_name(&self.agent)?,
            state: TaskState::parse(&self.state)
                .ok_or_else(|| corrupt("task state", &self.state))?,
            created_at: from_ms(self.created_at_ms, "task creation")?,
            deadline: from_ms(self.deadline_ms, "task deadline")?,
            ended_at: self
                .ended_at_ms
                .map(|ms| from_ms(ms, "task end"))
                .transpose()?,
            id: parse_task_id(&self.id)?,
            intent: Intent::new(self.intent.clone())
                .map_err(|_| corrupt("intent", &self.intent))?,
            subject: self.subject,
        })
    }
}

/// The query listing tasks that match `filter`, newest first.
pub(crate) fn task_listing(filter: &TaskFilter) -> Listing {
    Listing::build(
        "SELECT id, agent, intent, subject, state, created_at_ms, deadline_ms, ended_at_ms \
         FROM tasks",
        [
            (
                "agent =",
                filter.agent.as_ref().map(|a| a.as_str().to_owned()),
            ),
            ("state =", filter.state.map(|s| s.as_str().to_owned())),
        ],
        "created_at_ms DESC, id",
        filter.limit,
    )
}

/// A stored revocation-log entry.
#[derive(sqlx::FromRow)]
pub(crate) struct RevocationRow {
    pub seq: i64,
    pub kind: String,
    pub credential: Option<String>,
    pub agent: String,
    pub task_id: Option<String>,
    pub audience: Option<String>,
    pub revoked_at_ms: i64,
    pub expires_at_ms: i64,
    pub reason: String,
    pub txn: Option<String>,
}

impl RevocationRow {
    /// Decodes the row.
    pub fn into_revocation(self) -> Result<Revocation, StoreError> {
        let revoked = match (self.kind.as_str(), self.credential) {
            ("credential", Some(id)) => Revoked::Credential(id),
            ("agent", None) => Revoked::Agent,
            ("task", None) if self.task_id.is_some() => Revoked::Task,
            _ => return Err(corrupt("revocation kind", &self.kind)),
        };
        Ok(Revocation {
            seq: to_u64(self.seq, "revocation seq")?,
            revoked,
            agent: parse_agent_name(&self.agent)?,
            revoked_at: from_ms(self.revoked_at_ms, "revocation")?,
            expires_at: from_ms(self.expires_at_ms, "revoked credential expiry")?,
            task_id: self.task_id,
            audience: self.audience,
            reason: self.reason,
            txn: self.txn,
        })
    }
}

/// A stored resource server.
#[derive(sqlx::FromRow)]
pub(crate) struct ResourceServerRow {
    pub name: String,
    pub audience: String,
    pub system: String,
    pub environment: String,
    pub sensitivity: String,
    pub created_by: String,
    pub created_at_ms: i64,
}

impl ResourceServerRow {
    /// Decodes the row.
    pub fn into_resource_server(self) -> Result<ResourceServer, StoreError> {
        Ok(ResourceServer {
            name: ResourceServerName::new(self.name.clone())
                .map_err(|_| corrupt("resource server name", &self.name))?,
            environment: Environment::new(self.environment.clone())
                .map_err(|_| corrupt("resource server environment", &self.environment))?,
            created_at: from_ms(self.created_at_ms, "resource server")?,
            audience: self.audience,
            system: self.system,
            sensitivity: self.sensitivity,
            created_by: self.created_by,
        })
    }
}

/// The stored key of a stream's receiver: `resource_server:<name>` or `user:<name>` (names
/// never contain `:`).
pub(crate) fn receiver_key(receiver: &SsfReceiver) -> String {
    match receiver {
        SsfReceiver::ResourceServer(name) => format!("resource_server:{name}"),
        SsfReceiver::User(name) => format!("user:{name}"),
    }
}

/// A stored receiver key.
pub(crate) fn parse_receiver(value: &str) -> Result<SsfReceiver, StoreError> {
    let bad = || corrupt("SSF receiver", value);
    match value.split_once(':') {
        Some(("resource_server", name)) => ResourceServerName::new(name)
            .map(SsfReceiver::ResourceServer)
            .map_err(|_| bad()),
        Some(("user", name)) => UserName::new(name)
            .map(SsfReceiver::User)
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The columns of an `ssf_streams` row.
pub(crate) struct SsfStreamColumns {
    pub id: String,
    pub receiver: String,
    pub audience: String,
    pub delivery_method: &'static str,
    pub endpoint_url: Option<String>,
    /// Empty when there is none (a sealed value never is).
    pub sealed_authorization: Vec<u8>,
    pub events_requested: String,
    pub events_delivered: String,
    pub description: Option<String>,
    pub created_at_ms: i64,
    pub acked_through: i64,
    pub status: &'static str,
    pub status_reason: Option<String>,
}

impl SsfStreamColumns {
    /// Encodes `stream`; event-type lists are stored as JSON arrays.
    pub fn of(stream: &SsfStream) -> Result<Self, StoreError> {
        let list = |events: &[String]| {
            serde_json::to_string(events)
                .map_err(|e| StoreError::Corrupt(format!("cannot encode event types: {e}")))
        };
        let (delivery_method, endpoint_url, sealed_authorization) = match &stream.delivery {
            SsfDelivery::Poll => ("poll", None, Vec::new()),
            SsfDelivery::Push {
                endpoint_url,
                sealed_authorization,
            } => (
                "push",
                Some(endpoint_url.clone()),
                sealed_authorization.clone().unwrap_or_default(),
            ),
        };
        Ok(Self {
            id: stream.id.clone(),
            receiver: receiver_key(&stream.receiver),
            audience: stream.audience.clone(),
            delivery_method,
            endpoint_url,
            sealed_authorization,
            events_requested: list(&stream.events_requested)?,
            events_delivered: list(&stream.events_delivered)?,
            description: stream.description.clone(),
            created_at_ms: to_ms(stream.created_at),
            acked_through: to_i64(stream.acked_through)?,
            status: stream.status.as_str(),
            status_reason: stream.status_reason.clone(),
        })
    }
}

/// A stored SSF stream.
#[derive(sqlx::FromRow)]
pub(crate) struct SsfStreamRow {
    pub id: String,
    pub receiver: String,
    pub audience: String,
    pub delivery_method: String,
    pub endpoint_url: Option<String>,
    pub sealed_authorization: Vec<u8>,
    pub events_requested: String,
    pub events_delivered: String,
    pub description: Option<String>,
    pub created_at_ms: i64,
    pub acked_through: i64,
    pub status: String,
    pub status_reason: Option<String>,
}

impl SsfStreamRow {
    /// Decodes the row.
    pub fn into_stream(self) -> Result<SsfStream, StoreError> {
        let list = |value: &str| -> Result<Vec<String>, StoreError> {
            serde_json::from_str(value).map_err(|_| corrupt("SSF event types of", &self.id))
        };
        let delivery = match (self.delivery_method.as_str(), &self.endpoint_url) {
            ("poll", None) => SsfDelivery::Poll,
            ("push", Some(url)) => SsfDelivery::Push {
                endpoint_url: url.clone(),
                sealed_authorization: Some(self.sealed_authorization.clone())
                    .filter(|sealed| !sealed.is_empty()),
            },
            _ => return Err(corrupt("SSF delivery of", &self.id)),
        };
        Ok(SsfStream {
            receiver: parse_receiver(&self.receiver)?,
            events_requested: list(&self.events_requested)?,
            events_delivered: list(&self.events_delivered)?,
            created_at: from_ms(self.created_at_ms, "SSF stream creation")?,
            acked_through: to_u64(self.acked_through, "SSF stream position")?,
            status: SsfStatus::parse(&self.status)
                .ok_or_else(|| corrupt("SSF status of", &self.id))?,
            status_reason: self.status_reason,
            delivery,
            id: self.id,
            audience: self.audience,
            description: self.description,
        })
    }
}

/// A queued SSF verification event.
#[derive(sqlx::FromRow)]
pub(crate) struct SsfVerificationRow {
    pub seq: i64,
    pub state: Option<String>,
    pub requested_at_ms: i64,
}

impl SsfVerificationRow {
    /// Decodes the row.
    pub fn into_verification(self) -> Result<SsfVerification, StoreError> {
        Ok(SsfVerification {
            seq: to_u64(self.seq, "SSF verification position")?,
            state: self.state,
            requested_at: from_ms(self.requested_at_ms, "SSF verification request")?,
        })
    }
}

/// A revocation-log entry a stream has not delivered, with its credential's kind.
#[derive(sqlx::FromRow)]
pub(crate) struct SsfPendingRow {
    #[sqlx(flatten)]
    pub entry: RevocationRow,
    pub credential_kind: String,
}

impl SsfPendingRow {
    /// Decodes the row.
    pub fn into_pending(self) -> Result<SsfPending, StoreError> {
        let kind = IssuedKind::parse(&self.credential_kind)
            .ok_or_else(|| corrupt("credential kind", &self.credential_kind))?;
        Ok(SsfPending {
            revocation: self.entry.into_revocation()?,
            kind,
        })
    }
}

/// A stream's new position after acknowledgements: just before the first entry after
/// `current` it has not acknowledged (`first_unacked`, 0 for none), or, when every entry
/// after `current` is acknowledged, the last acknowledged one (`last_ack`, 0 for none). Never
/// moves back. Positions only grow, so nothing can appear below the first unacknowledged one.
pub(crate) fn next_acked_through(current: i64, first_unacked: i64, last_ack: i64) -> i64 {
    let next = if first_unacked > 0 {
        first_unacked.saturating_sub(1)
    } else {
        last_ack
    };
    next.max(current)
}

/// Why an agent's credentials are revoked when it enters `state`.
pub(crate) fn revocation_reason(state: LifecycleState) -> String {
    format!("agent {state}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aims_core::audit::{Actor, Outcome, verify_chain};

    #[test]
    fn milliseconds_round_trip_and_floor() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(to_ms(t), 1_700_000_000_123);
        assert_eq!(
            from_ms(to_ms(t), "test").unwrap().unix_timestamp_nanos(),
            1_700_000_000_123_000_000
        );
        let before_epoch = OffsetDateTime::from_unix_timestamp_nanos(-1).unwrap();
        assert_eq!(to_ms(before_epoch), -1);
        assert!(from_ms(i64::MAX, "test").is_err());
    }

    #[test]
    fn agent_listing_binds_every_value() {
        let all = Listing::of(&AgentFilter::default());
        assert_eq!(
            all.sql,
            "SELECT name, record FROM agents WHERE TRUE ORDER BY name LIMIT $1"
        );
        assert_eq!(all.limit, i64::from(MAX_PAGE));
        let filter = AgentFilter {
            environment: Some("prod".parse().unwrap()),
            after: Some("b".parse().unwrap()),
            limit: 2,
            ..AgentFilter::default()
        };
        let some = Listing::of(&filter);
        assert_eq!(
            some.sql,
            "SELECT name, record FROM agents WHERE TRUE AND environment = $1 AND name > $2 \
             ORDER BY name LIMIT $3"
        );
        assert_eq!(some.binds, ["prod", "b"]);
        assert_eq!(some.limit, 2);
    }

    #[test]
    fn join_token_outcomes() {
        let row = |expires_at_ms, used_at_ms| {
            Some(JoinTokenRow {
                agent: "coder".to_owned(),
                expires_at_ms,
                used_at_ms,
            })
        };
        let coder = AgentName::new("coder").unwrap();
        assert_eq!(
            unconsumed_join_token(None, 10).unwrap(),
            JoinTokenUse::Unknown
        );
        assert_eq!(
            unconsumed_join_token(row(5, Some(1)), 10).unwrap(),
            JoinTokenUse::AlreadyUsed(coder.clone())
        );
        assert_eq!(
            unconsumed_join_token(row(10, None), 10).unwrap(),
            JoinTokenUse::Expired(coder)
        );
        assert_eq!(
            unconsumed_join_token(row(11, None), 10).unwrap(),
            JoinTokenUse::Unknown
        );
    }

    #[test]
    fn page_limits_are_capped() {
        assert_eq!(page_limit(0), MAX_PAGE);
        assert_eq!(page_limit(5), 5);
        assert_eq!(page_limit(u32::MAX), MAX_PAGE);
    }

    #[test]
    fn a_chained_batch_verifies_and_moves_the_head() {
        let event = AuditEvent::new(
            OffsetDateTime::UNIX_EPOCH,
            Actor::System,
            "api.read",
            Outcome::Success,
        );
        let (rows, head) = chain_batch(ChainHead::EMPTY, &[event.clone(), event], "t").unwrap();
        assert_eq!(head.seq, 2);
        let records: Vec<_> = rows
            .into_iter()
            .map(|r| {
                AuditRow {
                    seq: r.seq,
                    prev_hash: r.prev_hash,
                    hash: r.hash,
                    body: r.body,
                }
                .into_record()
                .unwrap()
            })
            .collect();
        assert_eq!(verify_chain(ChainHead::EMPTY, &records).unwrap(), head);
    }

    #[test]
    fn ssf_positions_advance_only_over_acknowledged_entries() {
        // Entry 5 unacknowledged: the position stays just before it.
        assert_eq!(next_acked_through(4, 5, 7), 4);
        assert_eq!(next_acked_through(4, 7, 6), 6);
        // Everything after the position acknowledged: up to the last acknowledgement.
        assert_eq!(next_acked_through(4, 0, 9), 9);
        // Nothing acknowledged and nothing pending: unchanged, never backwards.
        assert_eq!(next_acked_through(4, 0, 0), 4);
        assert_eq!(next_acked_through(10, 3, 0), 10);
    }

    #[test]
    fn ssf_receivers_round_trip() {
        for receiver in [
            SsfReceiver::ResourceServer(ResourceServerName::new("repo-tools").unwrap()),
            SsfReceiver::User(UserName::new("root").unwrap()),
        ] {
            assert_eq!(parse_receiver(&receiver_key(&receiver)).unwrap(), receiver);
        }
        for bad in ["", "root", "group:x", "user:", "resource_server:a b"] {
            assert!(
                matches!(parse_receiver(bad), Err(StoreError::Corrupt(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn sequences_start_at_zero_and_increment() {
        assert_eq!(parse_sequence(None).unwrap(), 0);
        assert_eq!(next_sequence(Some("41")).unwrap(), "42");
        assert!(matches!(
            parse_sequence(Some("x")),
            Err(StoreError::Corrupt(_))
        ));
    }
}

/// A stored approval request: its mutable state beside the JSON of what was asked.
#[derive(sqlx::FromRow)]
pub(crate) struct ApprovalRow {
    pub id: String,
    pub state: String,
    pub uses_left: i64,
    pub asked: String,
    pub verdict: Option<String>,
}

impl ApprovalRow {
    /// Decodes the row.
    pub fn into_request(self) -> Result<ApprovalRequest, StoreError> {
        Ok(ApprovalRequest {
            id: ApprovalId::new(self.id.clone()).map_err(|_| corrupt("approval id", &self.id))?,
            state: ApprovalState::parse(&self.state)
                .ok_or_else(|| corrupt("approval state", &self.state))?,
            uses_left: u32::try_from(self.uses_left)
                .map_err(|_| corrupt("approval uses", &self.uses_left.to_string()))?,
            asked: serde_json::from_str(&self.asked)
                .map_err(|e| StoreError::Corrupt(format!("approval request: {e}")))?,
            verdict: self
                .verdict
                .map(|v| serde_json::from_str(&v))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("approval verdict: {e}")))?,
        })
    }
}

/// A stored secret's metadata (never its value).
#[derive(sqlx::FromRow)]
pub(crate) struct SecretRow {
    pub name: String,
    pub version: i64,
    pub record: String,
}

impl SecretRow {
    /// Decodes the row; its columns must agree with its record.
    pub fn into_secret(self) -> Result<Secret, StoreError> {
        let secret: Secret = serde_json::from_str(&self.record)
            .map_err(|e| StoreError::Corrupt(format!("secret record: {e}")))?;
        if secret.name.as_str() != self.name || i64::from(secret.version) != self.version {
            return Err(corrupt("secret record", &self.name));
        }
        Ok(secret)
    }
}

/// A lease joined with its credential.
#[derive(sqlx::FromRow)]
pub(crate) struct LeaseRow {
    pub id: String,
    pub engine: String,
    pub role: String,
    pub db_role: String,
    pub agent: String,
    pub task_id: Option<String>,
    pub parent: Option<String>,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub pending: i64,
}

impl LeaseRow {
    /// Decodes the row.
    pub fn into_lease(self) -> Result<crate::LeaseRecord, StoreError> {
        Ok(crate::LeaseRecord {
            engine: aims_core::id::EngineName::new(&self.engine)
                .map_err(|_| corrupt("lease engine", &self.engine))?,
            role: aims_core::id::RoleName::new(&self.role)
                .map_err(|_| corrupt("lease role", &self.role))?,
            agent: parse_agent_name(&self.agent)?,
            issued_at: from_ms(self.issued_at_ms, "lease issue")?,
            expires_at: from_ms(self.expires_at_ms, "lease expiry")?,
            revoked_at: self
                .revoked_at_ms
                .map(|ms| from_ms(ms, "lease revocation"))
                .transpose()?,
            ended_at: self
                .ended_at_ms
                .map(|ms| from_ms(ms, "lease end"))
                .transpose()?,
            attempts: to_u64(self.attempts, "lease attempts")?,
            pending: self.pending != 0,
            id: self.id,
            db_role: self.db_role,
            task_id: self.task_id,
            parent: self.parent,
            last_error: self.last_error,
        })
    }
}

/// Decodes a JSON record column.
pub(crate) fn from_record<T: serde::de::DeserializeOwned>(
    record: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(record).map_err(|e| StoreError::Corrupt(format!("{what} record: {e}")))
}

/// A stored sighting.
#[derive(sqlx::FromRow)]
pub(crate) struct SightingRow {
    pub reporter: String,
    pub source: String,
    pub route: String,
    pub user_agent: String,
    pub reason: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub count: i64,
}

impl SightingRow {
    /// Decodes the row: who reported it, and the sighting.
    pub fn into_sighting(self) -> Result<(ResourceServerName, Sighting), StoreError> {
        Ok((
            ResourceServerName::new(self.reporter.clone())
                .map_err(|_| corrupt("sighting reporter", &self.reporter))?,
            Sighting {
                first_seen: from_ms(self.first_seen_ms, "first sighting")?,
                last_seen: from_ms(self.last_seen_ms, "last sighting")?,
                count: to_u64(self.count, "sighting count")?,
                source: self.source,
                route: self.route,
                user_agent: self.user_agent,
                reason: self.reason,
            },
        ))
    }
}
