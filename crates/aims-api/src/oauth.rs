//! Wire types of the token side: the OAuth token, introspection and revocation endpoints, the
//! revocation feed, tasks and resource servers.

use aims_core::id::{AgentName, Environment, Intent, ResourceServerName, TaskId};
use aims_core::revocation::{Notice, Revoked};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// RFC 8693 token-exchange grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523 JWT-bearer grant type.
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693 token type of a JWT (the agent's JWT-SVID).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an access token.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/oauth2/token";
/// Path of the introspection endpoint.
pub const INTROSPECTION_PATH: &str = "/oauth2/introspect";
/// Path of the revocation endpoint.
pub const REVOCATION_PATH: &str = "/oauth2/revoke";
/// Path of the issuer's JWKS (the keys that verify its SVIDs and task tokens).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token (RFC 9068 JWT).
    pub access_token: String,
    /// Always [`TOKEN_TYPE_ACCESS_TOKEN`].
    pub issued_token_type: String,
    /// `DPoP` or `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The scopes granted (may be fewer than requested).
    pub scope: String,
    /// The task the token is for.
    pub task_id: TaskId,
}

/// An OAuth error response (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    /// The RFC error code (`invalid_grant`, `invalid_scope`, …).
    pub error: String,
    /// What was wrong; never contains a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// What a revocation-feed entry revokes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One token, by its `jti`.
    #[default]
    Token,
    /// An epoch: every token of `agent`, or delegated from one of its tokens, issued before
    /// the second of `revoked_at`.
    Agent,
    /// An epoch: every token of `task_id` issued before the second of `revoked_at`.
    Task,
}

/// One entry of the revocation feed. A resource server sees the entries that concern tokens
/// for its audience, without the operator's reason; an operator sees every entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEntry {
    /// Position in the feed; resume with `since=<seq>`.
    pub seq: u64,
    /// What it revokes.
    #[serde(default)]
    pub kind: RevocationKind,
    /// The revoked token's `jti` (kind `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The agent that held the token, or whose tokens the epoch revokes.
    pub agent: AgentName,
    /// The token's task, or the task whose tokens the epoch revokes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// When it may be forgotten: the token's expiry, or the end of the epoch.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Why (operators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RevocationEntry {
    /// The entry as an enforcement point applies it, remembered until `leeway_s` after it
    /// expires; `None` for an entry that names nothing to refuse (a token entry without a
    /// `jti`, a task entry without a task).
    pub fn notice(&self, leeway_s: i64) -> Option<Notice> {
        let revoked = match self.kind {
            RevocationKind::Token => Revoked::Token(self.jti.clone()?),
            RevocationKind::Agent => Revoked::Agent(self.agent.clone()),
            RevocationKind::Task => Revoked::Task(self.task_id.clone()?),
        };
        Some(Notice {
            revoked,
            revoked_at: self.revoked_at.unix_timestamp(),
            forget_after: self.expires_at.unix_timestamp().saturating_add(leeway_s),
        })
    }
}

/// `GET /v1/revocations?since=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationPage {
    /// Entries after `since`, in order.
    pub revocations: Vec<RevocationEntry>,
    /// The `since` to ask with next.
    pub next: u64,
}

/// What `POST /v1/revocations` aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeTarget {
    /// A token (by `jti`) and everything derived from it.
    Token,
    /// Only what was delegated from this token (by `jti`).
    Subtree,
    /// A task (by id): everything issued for it.
    Task,
    /// An agent (by name): every credential it holds (kill switch).
    Agent,
    /// Every agent of an owner.
    Owner,
}

/// `POST /v1/revocations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// What kind of target `id` names.
    pub target: RevokeTarget,
    /// The token `jti`, task id, agent name or owner.
    pub id: String,
    /// Why (recorded in the audit log and the feed).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to a revocation or task end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// How many credentials were newly revoked.
    pub revoked: u64,
}

/// `POST /v1/tasks` (by an agent, with its SVID).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// The declared intent.
    pub intent: String,
    /// The user or system the task acts for; default the agent itself.
    #[serde(default)]
    pub subject: Option<String>,
    /// Seconds until the task's deadline; default and maximum: the server's task ceiling.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// Its id.
    pub id: TaskId,
    /// The agent that owns it.
    pub agent: AgentName,
    /// The declared intent.
    pub intent: Intent,
    /// Who it acts for.
    pub subject: String,
    /// `active`, `ended` or `revoked`.
    pub state: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its deadline.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// When it ended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
}

impl From<aims_core::task::Task> for TaskView {
    fn from(task: aims_core::task::Task) -> Self {
        Self {
            id: task.id,
            agent: task.agent,
            intent: task.intent,
            subject: task.subject,
            state: task.state.as_str().to_owned(),
            created_at: task.created_at,
            deadline: task.deadline,
            ended_at: task.ended_at,
        }
    }
}

/// `GET /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskList {
    /// Newest first.
    pub tasks: Vec<TaskView>,
}

/// `POST /v1/tasks/{id}/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEnded {
    /// The task as it is now.
    pub task: TaskView,
    /// How many credentials ending it revoked.
    pub revoked: u64,
}

/// `POST /v1/resource-servers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterResourceServerRequest {
    /// Unique name (also its OAuth `client_id` at introspection).
    pub name: ResourceServerName,
    /// The audience URI tokens for it carry.
    pub audience: String,
    /// The system its tools belong to.
    pub system: String,
    /// The environment of its data; default `dev`.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// The sensitivity of its data; default `internal`.
    #[serde(default)]
    pub sensitivity: Option<String>,
}

/// A resource server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceServerView {
    /// Its name.
    pub name: ResourceServerName,
    /// Its audience URI.
    pub audience: String,
    /// Its system.
    pub system: String,
    /// Its environment.
    pub environment: Environment,
    /// Its data sensitivity.
    pub sensitivity: String,
    /// Who registered it.
    pub created_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The answer to registering a resource server: its secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceServerRegistered {
    /// The server.
    pub resource_server: ResourceServerView,
    /// Its client secret (`aims_r_…`), for HTTP Basic at introspection and the feed.
    pub client_secret: String,
}

/// `GET /v1/resource-servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceServerList {
    /// By name.
    pub resource_servers: Vec<ResourceServerView>,
}
