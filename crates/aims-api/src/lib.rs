//! The wire types of the AIMS `/v1` JSON API: request and response bodies shared by the server,
//! the SDK and the CLI, so both ends always agree.
//!
//! Only plain serde structs live here. Requests reject unknown fields (`"is_admin": true` is an
//! error, not silently ignored); validation of values happens through the `aims-core` types
//! the fields are declared with.

use std::collections::BTreeMap;

pub mod approvals;
pub mod leases;
pub mod oauth;
pub mod report;
pub mod secrets;
pub mod sightings;
pub mod tlog;

use aims_core::agent::{Agent, LifecycleState, Limits};
use aims_core::id::{AgentName, ApprovalId, DecisionId, Environment, LabelKey, Owner, UserName};
use aims_core::posture::PostureProfile;
use aims_core::user::{Role, User};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The error body of every failed `/v1` call: a stable, greppable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code, e.g. `agent_exists`.
    pub error: String,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
}

/// `POST /v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgentRequest {
    /// Unique agent name (one SPIFFE path segment).
    pub name: AgentName,
    /// The one accountable owner (required).
    pub owner: Owner,
    /// Environment; default `dev`.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// What the agent is for.
    #[serde(default)]
    pub description: Option<String>,
    /// What the agent may be at runtime.
    #[serde(default)]
    pub posture_profile: Option<PostureProfile>,
    /// Limits on its credentials.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<LabelKey, String>>,
    /// Days until the owner must recertify it (default from server config).
    #[serde(default)]
    pub recertify_days: Option<u32>,
}

/// `PATCH /v1/agents/{name}`: every field optional; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentRequest {
    /// New owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// New environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New posture profile (replaces the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture_profile: Option<PostureProfile>,
    /// New limits (replace the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// New labels (replace the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<LabelKey, String>>,
    /// Recertify: the new deadline is this many days from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recertify_days: Option<u32>,
    /// Only apply if the agent is still at this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// Body of `POST /v1/agents/{name}/{suspend|resume|decommission}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRequest {
    /// Why; recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Body of `POST /v1/agents/{name}/recertify`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecertifyRequest {
    /// Days from now until the next recertification (default from server config, 1 to 3650).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

/// An agent as the API shows it: the stored record plus its SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    /// `spiffe://<trust-domain>/agent/<name>`.
    pub spiffe_id: String,
    /// The stored record.
    #[serde(flatten)]
    pub agent: Agent,
}

/// Response of `POST /v1/agents` and `POST /v1/agents/{name}/join-token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinTokenIssued {
    /// The agent's SPIFFE ID.
    pub spiffe_id: String,
    /// The one-time join token for the agent's first attestation. Shown only here.
    pub join_token: String,
    /// When the join token stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub join_token_expires_at: OffsetDateTime,
    /// The agent as registered.
    pub agent: AgentView,
}

/// Response of `GET /v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentList {
    /// One page of agents, by name.
    pub agents: Vec<AgentView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Response of `GET /v1/inventory`: one page of agents (by name, filtered as `GET
/// /v1/agents` is), each with what it has been doing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inventory {
    /// The page.
    pub agents: Vec<InventoryEntry>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Most agents in one inventory page.
pub const MAX_INVENTORY_PAGE: u32 = 200;

/// One agent of the inventory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// Its registry record (owner, state, environment, recertification, ...).
    #[serde(flatten)]
    pub agent: AgentView,
    /// The time of the last audit record naming it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// Its last accepted posture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture: Option<InventoryPosture>,
    /// Its live credentials (not revoked, not expired) by kind.
    pub live_credentials: BTreeMap<String, u64>,
    /// How many of its tasks are open.
    pub open_tasks: u64,
    /// Its last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<LastDecision>,
}

/// An agent's last accepted posture, as the inventory shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryPosture {
    /// The evidence's digest (`sha256:<hex>`).
    pub digest: String,
    /// When it was accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub accepted_at: OffsetDateTime,
    /// Its age when the inventory was read, seconds.
    pub age_s: i64,
}

/// An agent's last decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastDecision {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The action and resource (`read Resource::repo/acme/app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// `allow`, `deny` or `approval_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The policies that determined it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// Query of `GET /v1/agents`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentQuery {
    /// Only this owner's agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Only agents in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LifecycleState>,
    /// Only agents in this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// Start after this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AgentName>,
    /// Page size (at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `POST /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUserRequest {
    /// Unique user name.
    pub name: UserName,
    /// What the user may do.
    pub role: Role,
}

/// Response of `POST /v1/users` and `POST /v1/users/{name}/rotate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserCredential {
    /// The user.
    pub user: User,
    /// The user's new API credential. Shown only here; only its hash is stored.
    pub token: String,
}

/// Response of `GET /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    /// Every user, by name.
    pub users: Vec<User>,
}

/// One signing key as the API shows it (public information only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// Key id.
    pub kid: String,
    /// JOSE algorithm.
    pub alg: String,
    /// `next`, `current`, `previous` or `retired`.
    pub state: String,
    /// When it was generated.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Response of `GET /v1/keys` and `POST /v1/keys/rotate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyList {
    /// Bundle sequence number (`spiffe_sequence`).
    pub sequence: u64,
    /// Every key, newest first.
    pub keys: Vec<KeyView>,
}

/// One audit record as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecordView {
    /// Position in the log.
    pub seq: u64,
    /// Hash of the previous record (hex).
    pub prev_hash: String,
    /// This record's hash (hex).
    pub hash: String,
    /// The event.
    pub event: serde_json::Value,
}

/// Response of `GET /v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    /// Records in order.
    pub records: Vec<AuditRecordView>,
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only records after this sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Page size (at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Query of `GET /v1/audit/query`: every filter given must match. The most selective filter
/// given (agent, task, policy, owner, action, decision, in that order) picks the index the log
/// is read by, and `since`/`until` bound the part read through the time index; the other
/// filters (the resource always) are applied to the records read, at most
/// [`MAX_AUDIT_EXAMINED`] per request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSearch {
    /// Records naming this agent (its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentName>,
    /// Records of this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Records naming this owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Records of this action (`decision`, `token.exchange`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Decisions with this answer (`allow`, `deny`, `approval_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Records whose resource contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Decisions this policy determined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Records at or after this time (RFC 3339).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<OffsetDateTime>,
    /// Records before this time (RFC 3339).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<OffsetDateTime>,
    /// Only records after this sequence number (a page's `next_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Most records to answer (1 to 1000, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Most records one `GET /v1/audit/query` request reads to find its matches.
pub const MAX_AUDIT_EXAMINED: u64 = 10_000;

/// Response of `GET /v1/audit/query`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditSearchPage {
    /// The matching records, in order.
    pub records: Vec<AuditRecordView>,
    /// How many records were read to find them.
    pub examined: u64,
    /// Pass as `after` to go on; absent once the log has been read to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// Response of `GET /v1/audit/trace/{task_id}`: one task as a tree of the tokens issued for
/// it, each with what was done with it and the tokens delegated from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskTrace {
    /// The task.
    pub task: oauth::TaskView,
    /// The task's events that belong to no token of it (opening and ending the task, refused
    /// exchanges, revocations, approvals decided by humans), in order.
    pub events: Vec<TracedEvent>,
    /// The task tokens obtained for it (by token exchange), in order, each with the tokens
    /// delegated from it.
    pub tokens: Vec<TracedToken>,
    /// Whether the task has more events than a trace reads ([`MAX_TRACE_EVENTS`]); the
    /// rest are in the log.
    pub truncated: bool,
}

/// Most events one trace reads.
pub const MAX_TRACE_EVENTS: usize = 10_000;

/// One token of a traced task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TracedToken {
    /// Its id.
    pub token_id: String,
    /// The event that issued it (`token.exchange` or `token.delegate`).
    pub issued: TracedEvent,
    /// What was done with it (decisions, approvals it opened or used, its revocation), in
    /// order.
    pub events: Vec<TracedEvent>,
    /// The tokens delegated from it.
    pub delegated: Vec<TracedToken>,
}

/// One audit event of a trace, with its position in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TracedEvent {
    /// Position in the log.
    pub seq: u64,
    /// The event.
    pub event: aims_core::audit::AuditEvent,
}

/// Response of `GET /v1/audit/ocsf`: audit records in order as OCSF events, a page at a
/// time — the pull stream a SIEM follows with `after`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OcsfPage {
    /// The events (OCSF 1.2.0 JSON), in log order.
    pub events: Vec<serde_json::Value>,
    /// Pass as `after` for the next page; absent when this page reached the log's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// Response of `GET /v1/audit/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Whether the whole chain verified.
    pub intact: bool,
    /// How many records were checked.
    pub records: u64,
    /// Hash of the last verified record (hex).
    pub head_hash: String,
    /// Where and how the chain breaks, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Response of `POST /v1/attest/nonce`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NonceResponse {
    /// A single-use nonce to put in the attestation proof.
    pub nonce: String,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `POST /v1/attest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The proof JWS (`typ: aims-attest+jwt`), signed by the agent's key with that key in its
    /// `jwk` header; claims `nonce`, `aud` (the AIMS issuer), `iat`, `exp`, `evidence`.
    pub proof: String,
    /// First boot: the one-time join token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// Renewal: the agent's current, unexpired JWT-SVID (bound to the same key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svid: Option<String>,
    /// Federated: a token of a trusted third-party issuer (e.g. a Kubernetes service-account
    /// token or a CI system's OIDC token) that maps to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_token: Option<String>,
    /// The audience of the SVID to issue (default: the AIMS issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Response of `POST /v1/attest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestResponse {
    /// The JWT-SVID.
    pub svid: String,
    /// The agent's SPIFFE ID.
    pub spiffe_id: String,
    /// When the SVID expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Digest of the accepted evidence (also in the SVID as `aims_posture`).
    pub posture_digest: String,
}

/// `POST /v1/policies`: a complete policy set, activated as the next version if it compiles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushPolicyRequest {
    /// File name → content: `*.cedar` policies, at most one `*.cedarschema` (default: the AIMS
    /// schema), and `*.test.json` policy tests (kept with the version).
    pub files: BTreeMap<String, String>,
}

/// Response of `POST /v1/policies` and `GET /v1/policies/active`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicySetView {
    /// The version number (0: none pushed; everything is denied).
    pub version: u64,
    /// How many policies it holds.
    pub policies: usize,
    /// The policy ids.
    pub policy_ids: Vec<String>,
    /// The file names.
    pub files: Vec<String>,
}

/// `POST /v1/decisions`, sent by an agent with its JWT-SVID as bearer credential. The
/// principal is the authenticated agent; its attributes come from the registry and its last
/// accepted posture, never from the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// The action, e.g. `read`, `write`, `call_tool`, `export_secret`.
    pub action: String,
    /// What it is on (`type`, `id`, `system`, `environment`, `sensitivity`, `kind`, …).
    pub resource: serde_json::Value,
    /// The task the call belongs to.
    #[serde(default)]
    pub task_id: String,
    /// The task's declared intent.
    #[serde(default)]
    pub intent: String,
    /// Tool-call arguments.
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// Response of `POST /v1/decisions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionView {
    /// Id of this decision (also in its audit event).
    pub decision_id: DecisionId,
    /// `allow`, `deny` or `approval_required`.
    pub decision: String,
    /// The policies that determined it.
    pub policies: Vec<String>,
    /// The policy version that decided.
    pub policy_version: u64,
    /// With `approval_required`: the approval request opened (or joined) for this exact call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<ApprovalId>,
    /// With `approval_id`: where to wait for the answer (`GET`, with `?wait=30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_url: Option<String>,
}

/// `POST /v1/policies/explain` (operators): how the active policies answer `request` made by the
/// registered agent `agent`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The agent whose request to explain.
    pub agent: AgentName,
    /// The request, as the agent would send it to `/v1/decisions`.
    pub request: DecideRequest,
}

/// One stored policy version (`GET /v1/policies/{version}`), with its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Version number.
    pub version: u64,
    /// Who pushed it.
    pub created_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// File name → content.
    pub files: BTreeMap<String, String>,
}

/// One line of `GET /v1/policies`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyVersionSummary {
    /// Version number.
    pub version: u64,
    /// Who pushed it.
    pub created_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its file names.
    pub files: Vec<String>,
}

/// Response of `GET /v1/policies`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyVersionList {
    /// The version in force on the server that answered.
    pub active_version: u64,
    /// Stored versions, newest first (at most 100).
    pub versions: Vec<PolicyVersionSummary>,
}
