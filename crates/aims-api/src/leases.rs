//! Wire types of `/v1/engines` and `/v1/leases`: database engines, their role templates, and
//! leases — the connection parameters an agent receives once, and what operators see of a
//! lease afterwards. A password never appears in `Debug` output.

use std::fmt;

use aims_core::id::{AgentName, EngineName, Environment, RoleName, SecretName};
use aims_core::lease::{Cleanup, Engine, RoleTemplate};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `POST /v1/engines`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddEngineRequest {
    /// Its name.
    pub name: EngineName,
    /// `postgres` (the only kind so far).
    #[serde(default = "postgres")]
    pub kind: String,
    /// `postgres://user@host:port/database`, without a password.
    pub connection_url: String,
    /// The secret holding the administrator's password, if it needs one.
    #[serde(default)]
    pub admin_secret: Option<SecretName>,
    /// The system its roles belong to, for policies; the engine's name by default.
    #[serde(default)]
    pub system: Option<String>,
    /// The environment of its data; `prod` by default.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// The sensitivity of its data; `internal` by default.
    #[serde(default)]
    pub sensitivity: Option<String>,
}

fn postgres() -> String {
    "postgres".to_owned()
}

/// `GET /v1/engines`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineList {
    /// Every engine, by name.
    pub engines: Vec<Engine>,
}

/// `POST /v1/engines/{name}/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRoleRequest {
    /// The template's name.
    pub name: RoleName,
    /// The grants file: one `GRANT … ON …` per line, in the forms of
    /// [`aims_core::lease::Grant`].
    pub grants: String,
    /// The longest lease of it, in seconds.
    pub max_ttl_s: u64,
    /// What ending a lease does with what the role owns; `drop_owned` by default.
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
}

/// `GET /v1/engines/{name}/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleList {
    /// The engine's templates, by name.
    pub roles: Vec<RoleTemplate>,
}

/// `POST /v1/leases`, by an agent with a task token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The engine.
    pub engine: EngineName,
    /// The role template.
    pub role: RoleName,
    /// How long, in seconds; by default the template's maximum, cut to the token's expiry.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// The answer to a lease request: how to connect, shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGranted {
    /// The lease's id (revoke it by this id).
    pub lease_id: String,
    /// The engine.
    pub engine: EngineName,
    /// The role template.
    pub role: RoleName,
    /// The database host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The database.
    pub database: String,
    /// The role to log in as.
    pub username: String,
    /// Its password.
    pub password: String,
    /// When the role stops working on its own.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl fmt::Debug for LeaseGranted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGranted")
            .field("lease_id", &self.lease_id)
            .field("engine", &self.engine)
            .field("role", &self.role)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A lease as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Its id.
    pub id: String,
    /// The engine.
    pub engine: EngineName,
    /// The role template.
    pub role: RoleName,
    /// The database role.
    pub db_role: String,
    /// The agent holding it.
    pub agent: AgentName,
    /// Its task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// When it ends on its own.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When its role was ended (sessions terminated, role dropped).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// `pending` (registered, never handed out: its creation was cut off, and the reaper ends
    /// it), `active`, `ending` (revoked or expired, role not yet ended) or `ended`.
    pub state: String,
    /// Failed attempts to end it.
    pub attempts: u64,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `GET /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseList {
    /// The newest leases first.
    pub leases: Vec<LeaseView>,
}

/// `POST /v1/leases/{id}/renew`, by the agent with the task token the lease was asked with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewLeaseRequest {
    /// How long from now, in seconds; by default as long as the template's maximum (counted
    /// from issuance) and the task token allow.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// `POST /v1/leases/{id}/revoke`, by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeLeaseRequest {
    /// Why (recorded in the audit log); `revoked by an operator` by default.
    #[serde(default)]
    pub reason: Option<String>,
}
