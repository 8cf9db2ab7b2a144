//! Database engines as AIMS drives them: connecting as an engine's administrator, creating a
//! lease's role, ending it (terminating its sessions, then dropping it), and the reaper that
//! ends every revoked or expired lease — and every pending one whose creator's claim ran out
//! (a crash between registering it and handing it out) — on every replica, exactly once per
//! lease.
//!
//! Every statement is built from checked values ([`aims_core::lease`]): generated role
//! names, the template's parsed grants, quoted identifiers and literals; values that can be
//! bound (role names in queries) are bound. The password never reaches the database: the role
//! gets its SCRAM-SHA-256 verifier. Nothing here logs a password, a verifier or the admin
//! secret; errors carry a class and SQLSTATE only.
//!
//! This module must not decide anything: who may have a lease is the policy's
//! ([`crate::routes::leases`]), what is revoked is the store's closure.

use std::str::FromStr as _;
use std::time::Duration;

use aims_core::audit::{Actor, Outcome, action};
use aims_core::lease::{Cleanup, Engine, RoleTemplate, SqlIdent, is_lease_role, quote_literal};
use aims_core::secret;
use aims_store::LeaseRecord;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::state::AppState;

/// Longest wait for an engine to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest any one statement may run on an engine (its `statement_timeout`).
const STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// Longest creating or ending one lease's role may take, all statements included.
pub const WORK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a claim on a lease lasts: longer than [`WORK_TIMEOUT`], so a claim never runs
/// out under work that is still going on.
pub const CLAIM: Duration = Duration::from_secs(60);
/// How often the reaper looks for leases to end.
pub const REAP_EVERY: Duration = Duration::from_secs(1);
/// Most leases the reaper takes on in one round.
const REAP_BATCH: u32 = 32;
/// The first retry of a failed end waits this long; each further one twice as long, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between two attempts to end a lease.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why an engine could not do what AIMS asked. Messages carry classes and SQLSTATEs, never a
/// password or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The admin secret is missing or does not open under the master key.
    #[error("the engine's admin secret is missing or unreadable")]
    Secret,
    /// The engine did not answer (network, timeout, TLS).
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    /// The engine refused the administrator (authentication, privileges).
    #[error("engine refused the administrator: {0}")]
    Refused(String),
    /// A statement failed (a table the grants name does not exist, ...).
    #[error("engine statement failed: {0}")]
    Failed(String),
}

impl EngineError {
    /// The class recorded with a failed attempt.
    pub fn class(&self) -> String {
        self.to_string()
    }
}

fn classify(error: &sqlx::Error) -> EngineError {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // 28xxx: invalid authorization; 42501: insufficient privilege.
            if code.starts_with("28") || code == "42501" {
                EngineError::Refused(format!("SQLSTATE {code}"))
            } else {
                EngineError::Failed(format!("SQLSTATE {code}: {}", db.message()))
            }
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            EngineError::Unreachable("connection failed".to_owned())
        }
        _ => EngineError::Failed("protocol error".to_owned()),
    }
}

/// The connection options of `engine` (its URL, without a password).
pub fn options(engine: &Engine) -> Result<PgConnectOptions, EngineError> {
    PgConnectOptions::from_str(&engine.connection_url)
        .map_err(|_| EngineError::Failed("the connection URL does not parse".to_owned()))
}

/// The administrator's password of `engine`, opened from the secret store.
async fn admin_password(
    state: &AppState,
    engine: &Engine,
) -> Result<Option<SecretString>, EngineError> {
    let Some(name) = &engine.admin_secret else {
        return Ok(None);
    };
    let (found, sealed) = state
        .store
        .secret_value(name)
        .await
        .map_err(|_| EngineError::Secret)?
        .ok_or(EngineError::Secret)?;
    let value = state
        .master()
        .open(
            secret::SEAL_PURPOSE,
            &secret::seal_id(&found.name, found.version),
            &sealed,
        )
        .map_err(|_| EngineError::Secret)?;
    let text = std::str::from_utf8(value.expose_secret()).map_err(|_| EngineError::Secret)?;
    Ok(Some(SecretString::from(text.to_owned())))
}

/// Connects to `engine` as its administrator, with a statement timeout and statement
/// logging off (statements carry verifiers).
pub async fn connect(state: &AppState, engine: &Engine) -> Result<PgConnection, EngineError> {
    let mut options = options(engine)?
        .application_name("aims")
        .options([("statement_timeout", STATEMENT_TIMEOUT_MS.to_string())])
        .disable_statement_logging();
    if let Some(password) = admin_password(state, engine).await? {
        options = options.password(password.expose_secret());
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(classify(&error)),
        Err(_) => Err(EngineError::Unreachable("connect timed out".to_owned())),
    }
}

/// Checks that the administrator may create roles.
pub async fn check_admin(conn: &mut PgConnection) -> Result<(), EngineError> {
    let may: Option<bool> = sqlx::query_scalar(
        "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| classify(&e))?;
    if may == Some(true) {
        Ok(())
    } else {
        Err(EngineError::Refused(
            "the administrator may not create roles".to_owned(),
        ))
    }
}

/// The statements creating `role` for `template`: a login role with `verifier` as its
/// password, valid until `valid_until`, and the template's grants.
pub fn create_statements(
    template: &RoleTemplate,
    role: &SqlIdent,
    verifier: &str,
    valid_until: OffsetDateTime,
) -> Vec<String> {
    let until = valid_until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut statements = vec![format!(
        "CREATE ROLE {} LOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION \
         PASSWORD {} VALID UNTIL {}",
        role.quoted(),
        quote_literal(verifier),
        quote_literal(&until)
    )];
    statements.extend(template.grants.iter().map(|g| g.statement(role)));
    statements
}

/// The statement moving `role`'s `VALID UNTIL` to `valid_until` (a renewal).
pub fn valid_until_statement(role: &SqlIdent, valid_until: OffsetDateTime) -> String {
    let until = valid_until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        "ALTER ROLE {} VALID UNTIL {}",
        role.quoted(),
        quote_literal(&until)
    )
}

/// Runs `statements` (creating a role, or renewing one) in one transaction, committed only
/// with `commit` (otherwise it is a dry run that proves the grants apply, and nothing is left
/// behind).
pub async fn create_role(
    conn: &mut PgConnection,
    statements: &[String],
    commit: bool,
) -> Result<(), EngineError> {
    let mut tx = conn.begin().await.map_err(|e| classify(&e))?;
    for statement in statements {
        sqlx::query(statement)
            .persistent(false)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&e))?;
    }
    if commit {
        tx.commit().await.map_err(|e| classify(&e))
    } else {
        tx.rollback().await.map_err(|e| classify(&e))
    }
}

/// What ending a role did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Sessions terminated.
    pub sessions: u64,
    /// Whether the role existed and was dropped (false: it was gone already).
    pub dropped: bool,
}

/// Ends `role`: no more logins, its sessions terminated, what it owns dropped or reassigned
/// per `cleanup`, and the role dropped. Idempotent: a role already gone is not an error.
/// Refuses a role AIMS would not have created.
pub async fn end_role(
    conn: &mut PgConnection,
    role: &str,
    cleanup: &Cleanup,
) -> Result<Ended, EngineError> {
    if !is_lease_role(role) {
        return Err(EngineError::Failed(
            "refusing to drop a role AIMS did not create".to_owned(),
        ));
    }
    let ident =
        SqlIdent::new(role).map_err(|_| EngineError::Failed("malformed lease role".to_owned()))?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| classify(&e))?;
    if exists.is_none() {
        return Ok(Ended {
            sessions: 0,
            dropped: false,
        });
    }
    let nologin = format!("ALTER ROLE {} NOLOGIN", ident.quoted());
    sqlx::query(&nologin)
        .persistent(false)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(&e))?;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| classify(&e))?;
    let sessions = terminated.iter().filter(|t| **t).count();
    let mut tx = conn.begin().await.map_err(|e| classify(&e))?;
    let mut statements = Vec::new();
    if let Cleanup::Reassign { to } = cleanup {
        statements.push(format!(
            "REASSIGN OWNED BY {} TO {}",
            ident.quoted(),
            to.quoted()
        ));
    }
    statements.push(format!("DROP OWNED BY {}", ident.quoted()));
    statements.push(format!("DROP ROLE {}", ident.quoted()));
    for statement in &statements {
        sqlx::query(statement)
            .persistent(false)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&e))?;
    }
    tx.commit().await.map_err(|e| classify(&e))?;
    Ok(Ended {
        sessions: u64::try_from(sessions).unwrap_or(u64::MAX),
        dropped: true,
    })
}

/// Ends `lease`'s role on its engine.
async fn end_on_engine(state: &AppState, lease: &LeaseRecord) -> Result<Ended, EngineError> {
    let engine = state
        .store
        .engine(&lease.engine)
        .await
        .map_err(|e| EngineError::Failed(format!("store: {e}")))?
        .ok_or_else(|| EngineError::Failed("the lease's engine is gone".to_owned()))?;
    let cleanup = state
        .store
        .role_template(&lease.engine, &lease.role)
        .await
        .map_err(|e| EngineError::Failed(format!("store: {e}")))?
        .map_or(Cleanup::DropOwned, |t| t.cleanup);
    let mut conn = connect(state, &engine).await?;
    let ended = end_role(&mut conn, &lease.db_role, &cleanup).await;
    let _ = conn.close().await;
    ended
}

/// How long to wait after `attempts` failed attempts.
fn backoff(attempts: u64) -> Duration {
    let doublings = u32::try_from(attempts.min(16)).unwrap_or(16);
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(MAX_BACKOFF)
}

/// Ends one due lease if this replica (`holder`) wins its claim; returns whether it did.
pub async fn end_one(state: &AppState, holder: &str, lease: &LeaseRecord) -> bool {
    let now = OffsetDateTime::now_utc();
    match state
        .store
        .claim_lease(&lease.id, holder, now, now + CLAIM)
        .await
    {
        Ok(true) => {}
        Ok(false) => return false,
        Err(error) => {
            tracing::warn!(lease = %lease.id, %error, "cannot claim a lease to end it");
            return false;
        }
    }
    let outcome = tokio::time::timeout(WORK_TIMEOUT, end_on_engine(state, lease))
        .await
        .unwrap_or_else(|_| Err(EngineError::Unreachable("timed out".to_owned())));
    match outcome {
        Ok(ended) => {
            let now = OffsetDateTime::now_utc();
            let why = if lease.revoked_at.is_some() {
                "revoked"
            } else if lease.pending {
                "never granted"
            } else {
                "expired"
            };
            let mut event = state
                .event(Actor::System, action::LEASE_END, Outcome::Success)
                .resource(format!("Resource::{}/{}", lease.engine, lease.role))
                .details(json!({
                    "lease_id": lease.id,
                    "engine": lease.engine,
                    "role": lease.role,
                    "db_role": lease.db_role,
                    "why": why,
                    "sessions_terminated": ended.sessions,
                    "role_dropped": ended.dropped,
                    "attempts": lease.attempts + 1,
                }));
            event.task_id.clone_from(&lease.task_id);
            event.token_id = Some(lease.id.clone());
            match state.store.end_lease(&lease.id, holder, now, &event).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(lease = %lease.id, %error, "ended a lease's role but could not record it; it will be ended again");
                    false
                }
            }
        }
        Err(error) => {
            state.metrics.lease_end_failures.inc();
            let retry_at = OffsetDateTime::now_utc() + backoff(lease.attempts);
            tracing::warn!(lease = %lease.id, engine = %lease.engine, %error, "cannot end a lease's role; retrying later");
            if let Err(error) = state
                .store
                .lease_failed(&lease.id, holder, retry_at, &error.class())
                .await
            {
                tracing::warn!(lease = %lease.id, %error, "cannot record a failed lease end");
            }
            false
        }
    }
}

/// One round of the reaper: ends every due lease it can claim, and updates the overdue
/// gauge.
pub async fn reap_once(state: &AppState, holder: &str) {
    let now = OffsetDateTime::now_utc();
    match state.store.leases_to_end(now, REAP_BATCH).await {
        Ok(due) => {
            for lease in &due {
                end_one(state, holder, lease).await;
            }
        }
        Err(error) => tracing::warn!(%error, "cannot list leases to end; retrying"),
    }
    if let Ok(overdue) = state.store.leases_overdue(OffsetDateTime::now_utc()).await {
        state.metrics.leases_overdue.set(overdue);
    }
}

/// The reaper: every [`REAP_EVERY`], ends the leases that are revoked or expired and not
/// ended, including those left by a replica that crashed (their claims run out). Runs on
/// every replica; the claims make each lease ended once.
pub async fn reap(state: AppState, mut stop: watch::Receiver<bool>) {
    let holder = aims_token::random_id(&state.rng)
        .unwrap_or_else(|_| format!("replica-{}", std::process::id()));
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => reap_once(&state, &holder).await,
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aims_core::id::{EngineName, RoleName, UserName};
    use aims_core::lease::{lease_role, parse_grants};
    use time::macros::datetime;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u64::MAX), MAX_BACKOFF);
    }

    #[test]
    fn create_statements_quote_everything() {
        let template = RoleTemplate {
            engine: EngineName::new("warehouse").unwrap(),
            name: RoleName::new("reader").unwrap(),
            grants: parse_grants("GRANT SELECT ON TABLE public.sales").unwrap(),
            max_ttl_s: 600,
            cleanup: Cleanup::DropOwned,
            created_by: UserName::new("admin").unwrap(),
            created_at: datetime!(2026-01-01 00:00 UTC),
        };
        let role = lease_role(&[0; 12]);
        let statements = create_statements(
            &template,
            &role,
            "SCRAM-SHA-256$4096:c2FsdA==$a:b",
            datetime!(2026-01-01 00:10 UTC),
        );
        assert_eq!(
            statements,
            [
                "CREATE ROLE \"aims_lease_000000000000000000000000\" LOGIN NOINHERIT \
                 NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD \
                 'SCRAM-SHA-256$4096:c2FsdA==$a:b' VALID UNTIL '2026-01-01T00:10:00Z'",
                "GRANT SELECT ON TABLE \"public\".\"sales\" TO \
                 \"aims_lease_000000000000000000000000\"",
            ]
        );
    }
}
