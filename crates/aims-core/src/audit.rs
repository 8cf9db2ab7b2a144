//! Audit events and the hash chain that makes the log tamper-evident.
//!
//! Every event is serialized once into its stored body; each record's hash covers the
//! previous record's hash, its sequence number and that body, so flipping, deleting or
//! reordering any record breaks verification. An [`AuditEntry`] is a stored row with every
//! column, and its bytes are the leaf the Merkle tree log ([`crate::tlog`]) hashes. Storage and
//! group commit live in the store and server; this module only defines the event, the hashes
//! and the verifier.

use ring::digest;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::tlog;

mod shape;

/// Domain separation prefix of the chain hash; bump it if the encoding ever changes.
const CHAIN_HASH_DOMAIN: &[u8] = b"aims-audit-v1\n";

/// Who performed an audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A human principal, by name and role.
    User {
        /// The user's name.
        name: String,
        /// The user's role at the time.
        role: String,
    },
    /// An agent, by SPIFFE ID.
    Agent {
        /// The agent's SPIFFE ID.
        spiffe_id: String,
    },
    /// A registered resource server (introspection, revocation, the revocation feed).
    ResourceServer {
        /// Its registered name.
        name: String,
    },
    /// An unauthenticated caller.
    Anonymous,
    /// AIMS itself (startup, key generation, background work).
    System,
}

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was refused: bad input, missing rights, failed proof.
    Denied,
}

/// One audit event, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Correlation id of the request that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who did it.
    pub actor: Actor,
    /// What was done, e.g. `agent.register` (see [`action`]).
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Stable error code when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The agent concerned (SPIFFE ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent's accountable owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The resource or tool acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The task the action belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The credential used or issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The credential it was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_token_id: Option<String>,
    /// Delegation chain, outermost (current) actor first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation_chain: Vec<String>,
    /// The task's declared intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// A policy decision's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The approval request the event concerns (opened, decided, or whose grant a decision
    /// used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// The policies that determined the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_ids: Vec<String>,
    /// Action-specific details (changed fields, key ids, ...). Never secrets.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An event with only the required fields set.
    pub fn new(time: OffsetDateTime, actor: Actor, action: &str, outcome: Outcome) -> Self {
        Self {
            time,
            request_id: None,
            actor,
            action: action.to_owned(),
            outcome,
            code: None,
            agent: None,
            owner: None,
            resource: None,
            task_id: None,
            token_id: None,
            parent_token_id: None,
            delegation_chain: Vec::new(),
            intent: None,
            decision: None,
            approval_id: None,
            policy_ids: Vec::new(),
            details: serde_json::Value::Null,
        }
    }

    /// The event with the request's correlation id.
    #[must_use]
    pub fn request(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The event with a refusal's stable code.
    #[must_use]
    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// The event naming the agent concerned (its SPIFFE ID).
    #[must_use]
    pub fn agent(mut self, spiffe_id: impl Into<String>) -> Self {
        self.agent = Some(spiffe_id.into());
        self
    }

    /// The event naming the agent's accountable owner.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The event naming the resource or tool acted on.
    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// The event naming the task the action belongs to.
    #[must_use]
    pub fn task(mut self, task_id: impl Into<String>) -> Self {
        self.task_id = Some(task_id.into());
        self
    }

    /// The event naming the credential used or issued.
    #[must_use]
    pub fn token(mut self, token_id: impl Into<String>) -> Self {
        self.token_id = Some(token_id.into());
        self
    }

    /// The event naming the credential the one issued derives from.
    #[must_use]
    pub fn parent_token(mut self, token_id: impl Into<String>) -> Self {
        self.parent_token_id = Some(token_id.into());
        self
    }

    /// The event with the delegation chain, outermost actor first.
    #[must_use]
    pub fn chain(mut self, chain: Vec<String>) -> Self {
        self.delegation_chain = chain;
        self
    }

    /// The event naming the task's declared intent.
    #[must_use]
    pub fn intent(mut self, intent: impl Into<String>) -> Self {
        self.intent = Some(intent.into());
        self
    }

    /// The event with a policy decision and the policies that determined it.
    #[must_use]
    pub fn decision(mut self, decision: &str, policy_ids: Vec<String>) -> Self {
        self.decision = Some(decision.to_owned());
        self.policy_ids = policy_ids;
        self
    }

    /// The event naming the approval request it concerns.
    #[must_use]
    pub fn approval(mut self, id: impl Into<String>) -> Self {
        self.approval_id = Some(id.into());
        self
    }

    /// The event with action-specific details (never secrets).
    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// The body stored and hashed for this event.
    pub fn to_body(&self) -> String {
        // Serializing plain data with string keys cannot fail; fall back to a marker that
        // would fail verification rather than panic.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// Well-known action names, so writers and readers agree on spelling.
pub mod action {
    /// The trust domain and first keys were created.
    pub const TRUST_DOMAIN_CREATE: &str = "trust_domain.create";
    /// An agent was registered.
    pub const AGENT_REGISTER: &str = "agent.register";
    /// An agent's record was changed.
    pub const AGENT_UPDATE: &str = "agent.update";
    /// An agent's lifecycle state changed.
    pub const AGENT_LIFECYCLE: &str = "agent.lifecycle";
    /// An agent's recertification date was extended by its owner's approver or an admin.
    pub const AGENT_RECERTIFY: &str = "agent.recertify";
    /// A new join token was issued for an agent.
    pub const AGENT_JOIN_TOKEN: &str = "agent.join_token";
    /// A user was added.
    pub const USER_ADD: &str = "user.add";
    /// A user was removed.
    pub const USER_REMOVE: &str = "user.remove";
    /// A user's credential was rotated.
    pub const USER_ROTATE: &str = "user.rotate";
    /// Signing keys were rotated.
    pub const KEY_ROTATE: &str = "key.rotate";
    /// An attestation was accepted and an identity (JWT-SVID) issued.
    pub const IDENTITY_ISSUE: &str = "identity.issue";
    /// Evidence did not fit the posture profile: the agent was quarantined and everything it
    /// held revoked.
    pub const POSTURE_DRIFT: &str = "posture.drift";
    /// A policy set was pushed and activated as a new version.
    pub const POLICY_ACTIVATE: &str = "policy.activate";
    /// An operator asked how the active policies answer a request.
    pub const POLICY_EXPLAIN: &str = "policy.explain";
    /// An authorization decision was made (allow, deny or approval_required).
    pub const DECISION: &str = "decision";
    /// An `approval_required` decision opened an approval request for its call.
    pub const APPROVAL_REQUEST: &str = "approval.request";
    /// A human approved or denied an approval request, or was refused.
    pub const APPROVAL_DECIDE: &str = "approval.decide";
    /// An access token was issued by token exchange or JWT bearer grant, or refused.
    pub const TOKEN_EXCHANGE: &str = "token.exchange";
    /// A token was delegated to another agent, or the delegation refused.
    pub const TOKEN_DELEGATE: &str = "token.delegate";
    /// Credentials were revoked (token, task, agent, owner or delegation subtree).
    pub const REVOKE: &str = "revoke";
    /// A task was created explicitly.
    pub const TASK_CREATE: &str = "task.create";
    /// A task was ended; everything issued for it is revoked.
    pub const TASK_END: &str = "task.end";
    /// A secret was stored.
    pub const SECRET_PUT: &str = "secret.put";
    /// A secret got a new version.
    pub const SECRET_ROTATE: &str = "secret.rotate";
    /// A secret was deleted with all its versions.
    pub const SECRET_DELETE: &str = "secret.delete";
    /// A resource server read a secret's value (the event names the secret and version only).
    pub const SECRET_READ: &str = "secret.read";
    /// A database engine was added (the event names its admin secret, never a password).
    pub const ENGINE_ADD: &str = "engine.add";
    /// A role template was added to an engine.
    pub const ENGINE_ROLE_ADD: &str = "engine.role_add";
    /// A database lease was issued (or refused): its id, engine, role and end, never its
    /// password.
    pub const LEASE_ISSUE: &str = "lease.issue";
    /// A lease was renewed: its new end (the role's new `VALID UNTIL`).
    pub const LEASE_RENEW: &str = "lease.renew";
    /// A lease's database role was ended: its sessions terminated and the role dropped.
    pub const LEASE_END: &str = "lease.end";
    /// An enforcement point reported callers it refused before any decision (one event per
    /// report, however many it counts).
    pub const SIGHTING_REPORT: &str = "sighting.report";
    /// A resource server was registered.
    pub const RESOURCE_SERVER_ADD: &str = "resource_server.add";
    /// A resource server was removed.
    pub const RESOURCE_SERVER_REMOVE: &str = "resource_server.remove";
    /// A request was authenticated and read data (credential use).
    pub const READ: &str = "api.read";
    /// A request was refused before it changed anything.
    pub const REJECT: &str = "api.reject";
    /// Anonymous refusals from one source in one window, counted instead of written one by
    /// one (the first of them is an `api.reject` of its own).
    pub const REJECT_SUMMARY: &str = "api.reject.summary";
}

/// A SHA-256 chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the first record.
    pub const GENESIS: Self = Self([0u8; 32]);

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses lowercase hex.
    pub fn from_hex(value: &str) -> Option<Self> {
        crate::decode_hex32(value).map(Self)
    }
}

/// The hash of record `seq` with stored `body`, following the record whose hash is `prev`.
pub fn chain_hash(prev: &ChainHash, seq: u64, body: &str) -> ChainHash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(CHAIN_HASH_DOMAIN);
    ctx.update(&prev.0);
    ctx.update(&seq.to_be_bytes());
    ctx.update(body.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    ChainHash(out)
}

/// One stored, chained audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log, starting at 1, without gaps.
    pub seq: u64,
    /// Hash of the record before (zeros for the first).
    pub prev_hash: ChainHash,
    /// This record's hash.
    pub hash: ChainHash,
    /// The event as stored (JSON).
    pub body: String,
}

impl AuditRecord {
    /// Chains `event` after the record `(prev_seq, prev_hash)`.
    pub fn chain(prev_seq: u64, prev_hash: ChainHash, event: &AuditEvent) -> Self {
        let seq = prev_seq.saturating_add(1);
        let body = event.to_body();
        let hash = chain_hash(&prev_hash, seq, &body);
        Self {
            seq,
            prev_hash,
            hash,
            body,
        }
    }

    /// The event inside, if the body parses.
    pub fn event(&self) -> Result<AuditEvent, serde_json::Error> {
        serde_json::from_str(&self.body)
    }
}

/// Version tag at the start of every leaf's bytes; bump it if the encoding ever changes.
const LEAF_ENCODING: &[u8] = b"aims-audit-entry-v1\n";

/// One stored audit row with every column, as the Merkle tree log hashes it: the record
/// itself and the columns copied beside it for queries (`time_ms`, `action`, `agent`,
/// `task_id`) and the appending transaction's id, so an edit to any column changes the leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The chained record (sequence, hashes, body).
    pub record: AuditRecord,
    /// Unix milliseconds of the event, copied beside it.
    pub time_ms: i64,
    /// The event's action, copied beside it.
    pub action: String,
    /// The event's agent, copied beside it.
    pub agent: Option<String>,
    /// The event's task, copied beside it.
    pub task_id: Option<String>,
    /// The transaction that appended the row (absent on rows older than that column).
    pub txn: Option<String>,
}

/// A column copied beside a record that does not say what its body says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {seq}'s `{column}` column does not match its body")]
pub struct ColumnMismatch {
    /// The record.
    pub seq: u64,
    /// The column.
    pub column: &'static str,
}

/// Unix milliseconds of `time`, as the `time_ms` column holds it.
pub fn unix_ms(time: OffsetDateTime) -> i64 {
    // Inside `i64` for every representable time (±3.2e16 ms); the fallback is unreachable.
    i64::try_from(time.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

impl AuditEntry {
    /// The entry of `record`, appended by `txn`, with its columns as the body gives them.
    pub fn new(record: AuditRecord, event: &AuditEvent, txn: Option<String>) -> Self {
        Self {
            record,
            time_ms: unix_ms(event.time),
            action: event.action.clone(),
            agent: event.agent.clone(),
            task_id: event.task_id.clone(),
            txn,
        }
    }

    /// The leaf's bytes: a version tag, then every column, each length-prefixed (absent
    /// optional columns as a zero flag byte), so no two rows encode alike.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        let r = &self.record;
        let mut out =
            Vec::with_capacity(LEAF_ENCODING.len() + 160 + r.body.len() + self.action.len());
        self.encode(|part| out.extend_from_slice(part));
        out
    }

    /// Feeds [`Self::leaf_bytes`] to `sink`, part by part.
    fn encode(&self, mut sink: impl FnMut(&[u8])) {
        let r = &self.record;
        sink(LEAF_ENCODING);
        sink(&r.seq.to_be_bytes());
        sink(&self.time_ms.to_be_bytes());
        put(&mut sink, Some(self.action.as_str()));
        put(&mut sink, self.agent.as_deref());
        put(&mut sink, self.task_id.as_deref());
        put(&mut sink, self.txn.as_deref());
        sink(&r.prev_hash.0);
        sink(&r.hash.0);
        put(&mut sink, Some(r.body.as_str()));
    }

    /// The RFC 9162 leaf hash of this entry: [`tlog::leaf_hash`] of [`Self::leaf_bytes`],
    /// hashed as they are encoded rather than from a copy.
    pub fn leaf_hash(&self) -> tlog::Hash {
        let mut leaf = tlog::LeafHasher::new();
        self.encode(|part| leaf.update(part));
        leaf.finish()
    }

    /// Checks that the columns copied beside the record say what its body says.
    pub fn check_columns(&self) -> Result<(), ColumnMismatch> {
        match shape::Columns::of(&self.record.body) {
            Some(columns) => self.compare(&columns),
            None => Err(ColumnMismatch {
                seq: self.record.seq,
                column: "body",
            }),
        }
    }

    /// Checks everything about this entry that does not depend on the entries around it,
    /// in [`ChainHead::verify_next`]'s then [`Self::check_columns`]' order: the record's hash
    /// over its content, its body as an event, the copied columns against that body. Returns
    /// the entry's leaf hash.
    pub fn check(&self) -> Result<tlog::Hash, EntryError> {
        let columns = body_columns(&self.record)?;
        self.compare(&columns)?;
        Ok(self.leaf_hash())
    }

    /// Compares the copied columns with those the body gives.
    fn compare(&self, body: &shape::Columns<'_>) -> Result<(), ColumnMismatch> {
        let mismatch = |column| {
            Err(ColumnMismatch {
                seq: self.record.seq,
                column,
            })
        };
        if self.time_ms != body.time_ms {
            return mismatch("time_ms");
        }
        if self.action != body.action {
            return mismatch("action");
        }
        if self.agent.as_deref() != body.agent.as_deref() {
            return mismatch("agent");
        }
        if self.task_id.as_deref() != body.task_id.as_deref() {
            return mismatch("task_id");
        }
        Ok(())
    }
}

/// Feeds an optional text as a flag byte and, when present, a length-prefixed value.
fn put(sink: &mut impl FnMut(&[u8]), value: Option<&str>) {
    match value {
        None => sink(&[0]),
        Some(text) => {
            sink(&[1]);
            sink(&(text.len() as u64).to_be_bytes());
            sink(text.as_bytes());
        }
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A sequence number is missing or out of order.
    #[error("record {found} follows record {expected_after}: records are missing or reordered")]
    Gap {
        /// The sequence number of the record before.
        expected_after: u64,
        /// The sequence number found.
        found: u64,
    },
    /// A record's `prev_hash` is not the previous record's hash.
    #[error("record {seq} does not link to the record before it")]
    Link {
        /// The record that does not link.
        seq: u64,
    },
    /// A record's hash does not match its content.
    #[error("record {seq} was modified: its hash does not match its content")]
    Content {
        /// The modified record.
        seq: u64,
    },
    /// A record's body is not a valid event.
    #[error("record {seq} is not a valid audit event")]
    Body {
        /// The unreadable record.
        seq: u64,
    },
}

/// The last verified position of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number of the last record (0 for an empty log).
    pub seq: u64,
    /// Hash of the last record.
    pub hash: ChainHash,
}

impl ChainHead {
    /// The head of an empty log.
    pub const EMPTY: Self = Self {
        seq: 0,
        hash: ChainHash::GENESIS,
    };

    /// Verifies that `record` follows this head and returns the new head.
    pub fn verify_next(self, record: &AuditRecord) -> Result<Self, ChainError> {
        self.link(record)?;
        body_columns(record)?;
        Ok(self.after(record))
    }

    /// Verifies that `entry` follows this head and that everything in it holds (see
    /// [`AuditEntry::check`]); returns the new head and the entry's leaf hash. The same checks
    /// in the same order as [`Self::verify_next`] then [`AuditEntry::check_columns`], with
    /// the body parsed once.
    pub fn verify_entry(self, entry: &AuditEntry) -> Result<(Self, tlog::Hash), EntryError> {
        self.link(&entry.record)?;
        let leaf = entry.check()?;
        Ok((self.after(&entry.record), leaf))
    }

    /// The checks of `record` that depend on the head: the next sequence number, and the
    /// link to the head's hash.
    fn link(self, record: &AuditRecord) -> Result<(), ChainError> {
        if record.seq != self.seq.saturating_add(1) {
            return Err(ChainError::Gap {
                expected_after: self.seq,
                found: record.seq,
            });
        }
        if record.prev_hash != self.hash {
            return Err(ChainError::Link { seq: record.seq });
        }
        Ok(())
    }

    /// The head once `record` is appended.
    fn after(self, record: &AuditRecord) -> Self {
        Self {
            seq: record.seq,
            hash: record.hash,
        }
    }
}

/// The checks of `record` alone: its hash over its content, then its body as an event.
/// Returns the columns the body gives.
fn body_columns(record: &AuditRecord) -> Result<shape::Columns<'_>, ChainError> {
    if chain_hash(&record.prev_hash, record.seq, &record.body) != record.hash {
        return Err(ChainError::Content { seq: record.seq });
    }
    shape::Columns::of(&record.body).ok_or(ChainError::Body { seq: record.seq })
}

/// Why an entry does not verify: its chain, or a column copied beside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The chain breaks at the entry.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A copied column disagrees with the body.
    #[error(transparent)]
    Column(#[from] ColumnMismatch),
}

/// What [`verify_entries`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntries {
    /// The head after the last entry that verified.
    pub head: ChainHead,
    /// The leaf hashes of the entries that verified, in order: every entry before the first
    /// bad one.
    pub leaves: Vec<tlog::Hash>,
    /// Why the first bad entry (the one after `leaves`) does not verify, if one does not.
    pub error: Option<EntryError>,
}

/// Entries per worker below which [`verify_entries`] does not start a thread.
const ENTRIES_PER_WORKER: usize = 64;

/// Verifies consecutive `entries` starting after `head`, as [`ChainHead::verify_entry`] does
/// one by one, and stops at the first bad one. What an entry shows alone (content hash,
/// body, columns, leaf hash) does not depend on the entries before it, so it is computed on
/// up to `workers` threads over contiguous slices of `entries`; the links and the first
/// error are then taken in order, so the answer is the one-by-one answer whatever `workers`
/// is. Work past the first bad entry is wasted, never reported.
pub fn verify_entries(head: ChainHead, entries: &[AuditEntry], workers: usize) -> VerifiedEntries {
    let checks = check_all(entries, workers);
    let mut verified = VerifiedEntries {
        head,
        leaves: Vec::with_capacity(entries.len()),
        error: None,
    };
    for (entry, check) in entries.iter().zip(checks) {
        let linked = verified.head.link(&entry.record).map_err(EntryError::from);
        match linked.and(check) {
            Ok(leaf) => {
                verified.head = verified.head.after(&entry.record);
                verified.leaves.push(leaf);
            }
            Err(error) => {
                verified.error = Some(error);
                break;
            }
        }
    }
    verified
}

/// [`AuditEntry::check`] of every entry, in order, on up to `workers` threads.
fn check_all(entries: &[AuditEntry], workers: usize) -> Vec<Result<tlog::Hash, EntryError>> {
    let workers = workers.min(entries.len() / ENTRIES_PER_WORKER).max(1);
    if workers == 1 {
        return entries.iter().map(AuditEntry::check).collect();
    }
    let per = entries.len().div_ceil(workers);
    let check = |slice: &[AuditEntry]| slice.iter().map(AuditEntry::check).collect::<Vec<_>>();
    std::thread::scope(|scope| {
        let mut slices = entries.chunks(per);
        // This thread takes the first slice; the others go to new threads, or to this one
        // when a thread cannot be started.
        let first = slices.next().unwrap_or_default();
        let started: Vec<_> = slices
            .map(|slice| {
                std::thread::Builder::new()
                    .name("audit-verify".to_owned())
                    .spawn_scoped(scope, move || check(slice))
                    .map_err(|_| slice)
            })
            .collect();
        let mut all = check(first);
        for worker in started {
            match worker {
                Ok(handle) => match handle.join() {
                    Ok(part) => all.extend(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(slice) => all.extend(check(slice)),
            }
        }
        all
    })
}

/// Verifies consecutive records starting after `head`; returns the final head.
pub fn verify_chain<'a>(
    head: ChainHead,
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<ChainHead, ChainError> {
    records
        .into_iter()
        .try_fold(head, |head, record| head.verify_next(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(i: u64) -> AuditEvent {
        let mut e = AuditEvent::new(
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            Actor::System,
            action::AGENT_REGISTER,
            Outcome::Success,
        );
        e.agent = Some(format!("spiffe://acme.example/agent/a{i}"));
        e
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut head = ChainHead::EMPTY;
        (0..n)
            .map(|i| {
                let r = AuditRecord::chain(head.seq, head.hash, &event(i));
                head = ChainHead {
                    seq: r.seq,
                    hash: r.hash,
                };
                r
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let records = chain(5);
        let head = verify_chain(ChainHead::EMPTY, &records).unwrap();
        assert_eq!(head.seq, 5);
    }

    #[test]
    fn event_body_round_trips() {
        let e = event(1);
        assert_eq!(serde_json::from_str::<AuditEvent>(&e.to_body()).unwrap(), e);
    }

    #[test]
    fn reordering_is_detected() {
        let mut records = chain(4);
        records.swap(1, 2);
        assert!(matches!(
            verify_chain(ChainHead::EMPTY, &records),
            Err(ChainError::Gap { .. })
        ));
    }

    #[test]
    fn recomputed_hash_without_relinking_is_detected() {
        let mut records = chain(3);
        let r = &mut records[1];
        r.body = r.body.replace("a1", "zz");
        r.hash = chain_hash(&r.prev_hash, r.seq, &r.body);
        assert_eq!(
            verify_chain(ChainHead::EMPTY, &records),
            Err(ChainError::Link { seq: 3 })
        );
    }

    fn entry(record: AuditRecord) -> AuditEntry {
        let event = record.event().unwrap();
        AuditEntry::new(record, &event, Some("t1".to_owned()))
    }

    #[test]
    fn every_column_changes_the_leaf() {
        let base = entry(chain(1).remove(0));
        let leaf = base.leaf_hash();
        assert!(base.check_columns().is_ok());
        let edits: [fn(&mut AuditEntry); 9] = [
            |e| e.record.seq += 1,
            |e| e.time_ms += 1,
            |e| e.action.push('x'),
            |e| e.agent = None,
            |e| e.task_id = Some(String::new()),
            |e| e.txn = None,
            |e| e.record.prev_hash.0[0] ^= 1,
            |e| e.record.hash.0[31] ^= 1,
            |e| e.record.body.push(' '),
        ];
        for edit in edits {
            let mut changed = base.clone();
            edit(&mut changed);
            assert_ne!(changed.leaf_hash(), leaf, "{changed:?}");
        }
    }

    #[test]
    fn the_leaf_hash_is_the_hash_of_the_leaf_bytes() {
        let mut e = entry(chain(1).remove(0));
        assert_eq!(e.leaf_hash(), tlog::leaf_hash(&e.leaf_bytes()));
        e.txn = None;
        e.task_id = Some("t".to_owned());
        assert_eq!(e.leaf_hash(), tlog::leaf_hash(&e.leaf_bytes()));
    }

    /// What callers did before [`verify_entries`]: one entry at a time, the body parsed as an
    /// event by each check.
    fn one_by_one(mut head: ChainHead, entries: &[AuditEntry]) -> VerifiedEntries {
        let mut leaves = Vec::new();
        for e in entries {
            let checked = head
                .verify_next(&e.record)
                .map_err(EntryError::from)
                .and_then(|next| {
                    let event = e
                        .record
                        .event()
                        .map_err(|_| ChainError::Body { seq: e.record.seq })?;
                    let columns = AuditEntry::new(e.record.clone(), &event, e.txn.clone());
                    for (column, same) in [
                        ("time_ms", e.time_ms == columns.time_ms),
                        ("action", e.action == columns.action),
                        ("agent", e.agent == columns.agent),
                        ("task_id", e.task_id == columns.task_id),
                    ] {
                        if !same {
                            let seq = e.record.seq;
                            return Err(ColumnMismatch { seq, column }.into());
                        }
                    }
                    Ok(next)
                });
            match checked {
                Ok(next) => {
                    head = next;
                    leaves.push(tlog::leaf_hash(&e.leaf_bytes()));
                }
                Err(error) => {
                    return VerifiedEntries {
                        head,
                        leaves,
                        error: Some(error),
                    };
                }
            }
        }
        VerifiedEntries {
            head,
            leaves,
            error: None,
        }
    }

    #[test]
    fn verify_entries_answers_as_one_entry_at_a_time() {
        let base: Vec<AuditEntry> = chain(300).into_iter().map(entry).collect();
        let relinked = |v: &mut Vec<AuditEntry>, i: usize, body: &str| {
            let r = &mut v[i].record;
            r.body = body.to_owned();
            r.hash = chain_hash(&r.prev_hash, r.seq, &r.body);
        };
        // An edit of the entries, and the first break it must be reported as.
        type Tamper = (fn(&mut Vec<AuditEntry>), Option<EntryError>);
        let tampers: Vec<Tamper> = vec![
            (|_| {}, None),
            (
                |v| v[150].record.body = v[150].record.body.replace("a150", "zz"),
                Some(ChainError::Content { seq: 151 }.into()),
            ),
            (
                |v| {
                    v.remove(200);
                },
                Some(
                    ChainError::Gap {
                        expected_after: 200,
                        found: 202,
                    }
                    .into(),
                ),
            ),
            (
                |v| v.swap(10, 11),
                Some(
                    ChainError::Gap {
                        expected_after: 10,
                        found: 12,
                    }
                    .into(),
                ),
            ),
            (|v| v.truncate(250), None),
            (
                |v| v[299].action = action::REVOKE.to_owned(),
                Some(
                    ColumnMismatch {
                        seq: 300,
                        column: "action",
                    }
                    .into(),
                ),
            ),
            (
                |v| v[5].agent = None,
                Some(
                    ColumnMismatch {
                        seq: 6,
                        column: "agent",
                    }
                    .into(),
                ),
            ),
            (
                |v| v[64].task_id = Some("t".to_owned()),
                Some(
                    ColumnMismatch {
                        seq: 65,
                        column: "task_id",
                    }
                    .into(),
                ),
            ),
            (
                |v| v[0].time_ms += 1,
                Some(
                    ColumnMismatch {
                        seq: 1,
                        column: "time_ms",
                    }
                    .into(),
                ),
            ),
            (
                |v| v[77].record.prev_hash.0[3] ^= 1,
                Some(ChainError::Link { seq: 78 }.into()),
            ),
            // Two breaks: the first is the one reported, whichever worker found the other.
            (
                |v| {
                    v[290].action.push('x');
                    v[100].record.hash.0[0] ^= 1;
                },
                Some(ChainError::Content { seq: 101 }.into()),
            ),
        ];
        for (tamper, expected) in tampers {
            let mut v = base.clone();
            tamper(&mut v);
            let want = one_by_one(ChainHead::EMPTY, &v);
            assert_eq!(want.error, expected);
            for workers in [0, 1, 2, 3, 8] {
                assert_eq!(verify_entries(ChainHead::EMPTY, &v, workers), want);
            }
        }
        // A body rehashed and relinked but no longer an event; then one with a duplicated
        // copied column.
        let mut v = base.clone();
        relinked(&mut v, 40, "{}");
        let got = verify_entries(ChainHead::EMPTY, &v, 2);
        assert_eq!(got.error, Some(ChainError::Body { seq: 41 }.into()));
        assert_eq!(got, one_by_one(ChainHead::EMPTY, &v));
        let mut v = base;
        let body = v[40].record.body.replacen('{', r#"{"action":"revoke","#, 1);
        relinked(&mut v, 40, &body);
        let got = verify_entries(ChainHead::EMPTY, &v, 2);
        assert_eq!(got.error, Some(ChainError::Body { seq: 41 }.into()));
        assert_eq!(got, one_by_one(ChainHead::EMPTY, &v));
    }

    #[test]
    fn verify_entries_continues_from_a_head() {
        let all: Vec<AuditEntry> = chain(10).into_iter().map(entry).collect();
        let first = verify_entries(ChainHead::EMPTY, &all[..4], 2);
        let rest = verify_entries(first.head, &all[4..], 2);
        assert_eq!(rest.error, None);
        assert_eq!(rest.head.seq, 10);
        let whole = verify_entries(ChainHead::EMPTY, &all, 1);
        assert_eq!([first.leaves, rest.leaves].concat(), whole.leaves);
        let (head, leaf) = ChainHead::EMPTY.verify_entry(&all[0]).unwrap();
        assert_eq!((head.seq, leaf), (1, whole.leaves[0]));
        assert_eq!(
            ChainHead::EMPTY.verify_entry(&all[1]),
            Err(ChainError::Gap {
                expected_after: 0,
                found: 2
            }
            .into())
        );
    }

    #[test]
    fn a_column_that_disagrees_with_the_body_is_named() {
        let base = entry(chain(1).remove(0));
        let mut e = base.clone();
        e.action = action::REVOKE.to_owned();
        assert_eq!(
            e.check_columns(),
            Err(ColumnMismatch {
                seq: 1,
                column: "action"
            })
        );
        let mut e = base.clone();
        e.agent = Some("spiffe://acme.example/agent/other".to_owned());
        assert_eq!(e.check_columns().unwrap_err().column, "agent");
        let mut e = base;
        e.time_ms -= 1;
        assert_eq!(e.check_columns().unwrap_err().column, "time_ms");
    }

    proptest! {
        #[test]
        fn any_single_byte_change_is_detected(n in 1u64..8, pick in 0usize..8, pos in 0usize..200, bit in 0u8..7) {
            let mut records = chain(n);
            let idx = pick % records.len();
            let mut bytes = records[idx].body.clone().into_bytes();
            let at = pos % bytes.len();
            bytes[at] ^= 1 << bit;
            prop_assume!(bytes[at].is_ascii());
            records[idx].body = String::from_utf8(bytes).unwrap();
            prop_assert!(verify_chain(ChainHead::EMPTY, &records).is_err());
        }

        #[test]
        fn deleting_any_record_is_detected(n in 2u64..8, pick in 0usize..7) {
            let mut records = chain(n);
            let idx = pick % (records.len() - 1);
            records.remove(idx);
            prop_assert!(verify_chain(ChainHead::EMPTY, &records).is_err());
        }
    }
}
