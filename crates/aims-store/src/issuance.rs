//! Registering an access token (`Store::issue_access_token`: exchange and delegation): the
//! checks it makes, what it writes, and the two ways a backend keeps it from racing a change
//! that would refuse it.
//!
//! - [`under_head_lock`] (SQLite): as every other write, in a group commit holding the audit
//!   head's lock, which a SQLite store's one writer connection is anyway.
//! - Under row locks (PostgreSQL, `PostgresStore::register_access_token`): in a transaction of
//!   its own that takes no lock a write elsewhere needs. [`register`] reads the agent, the
//!   task it joins and the parent credential `FOR SHARE`, and the audit event is queued in
//!   the same transaction ([`crate::queue`]), so the answer waits for this one `COMMIT`.
//!
//! **Why revocation stays complete under row locks.** Every change that would refuse an
//! issuance updates a row the issuance reads `FOR SHARE`: a revocation marks the credential's
//! `revoked_at`, ending or revoking a task sets its state, a suspension sets the agent's. An
//! `UPDATE` waits for every `FOR SHARE` holder of its row to end, and a `FOR SHARE` waits for
//! an `UPDATE` in progress and then reads the row as committed. So either the issuance reads
//! the row as updated and is refused, or it commits before the update does. In the second
//! case the revocation's later statements see the new child: each step of a cascade reads the
//! children of what the step before it marked, in a statement that starts after those marks
//! (PostgreSQL runs writes at READ COMMITTED, where every statement reads what committed before
//! it began). A child registered under a credential a revocation is taking is therefore
//! found by the next step, and the cascade ends only when a step finds nothing: no live
//! descendant is left, and none can be added under a revoked parent. The property tests in
//! `tests/it/tokens.rs` race delegations against revocations on both backends.

use aims_core::audit::AuditEvent;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use crate::errors::classify;
use crate::rows::{self, CredentialRow};
use crate::write::{self, Backend, Conn, Reads, begin_write, settle};
use crate::{AccessTokenIssue, StoreError, sql};

/// Registers `issue` with `event` in a group commit under the head lock.
pub(crate) async fn under_head_lock<B>(
    backend: &B,
    issue: &AccessTokenIssue,
    event: &AuditEvent,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<i64>: Decode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write(backend).await?;
    let outcome = register::<B>(&mut tx, issue, Reads::Plain).await;
    settle(backend, tx, outcome, std::slice::from_ref(event)).await
}

/// The checks and changes of registering `issue`, on a transaction's connection: the agent
/// may hold credentials and its record is at the revision the token was decided on, the
/// parent credential is live, the task is new or open, the DPoP proof is unused; then the task
/// (if new), the burnt proof and the credential are written.
/// `Conflict` (or `NotFound` for an unknown agent) when a check fails; the caller rolls back.
pub(crate) async fn register<B>(
    conn: &mut Conn<B>,
    issue: &AccessTokenIssue,
    reads: Reads,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<i64>: Decode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let credential = &issue.credential;
    let now = credential.issued_at;
    write::credentials_allowed::<B>(
        conn,
        &credential.agent,
        Some(issue.agent_revision),
        reads.agent_standing(),
    )
    .await?;
    let parent_id = credential.parent.clone().ok_or(StoreError::Conflict {
        reason: "an access token needs the credential it was exchanged for",
    })?;
    let parent = sqlx::query_as::<B::Db, CredentialRow>(reads.credential())
        .bind(parent_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?
        .map(CredentialRow::into_credential)
        .transpose()?;
    if !parent.is_some_and(|p| p.revoked_at.is_none() && p.expires_at > now) {
        return Err(StoreError::Conflict {
            reason: "the presented credential is revoked, expired or unknown",
        });
    }
    let task_id = credential.task_id.clone().ok_or(StoreError::Conflict {
        reason: "an access token needs a task",
    })?;
    match &issue.new_task {
        Some(task) => write::insert_task(&mut *conn, task).await?,
        None => write::require_open_task::<B>(conn, &task_id, now, reads.task()).await?,
    }
    if let Some((hash, expires_at)) = &issue.dpop_proof {
        let burnt = sqlx::query_scalar::<B::Db, String>(sql::BURN_DPOP_PROOF)
            .bind(hash.clone())
            .bind(rows::to_ms(*expires_at))
            .bind(rows::to_ms(now))
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?;
        if burnt.is_none() {
            return Err(StoreError::Conflict {
                reason: "the DPoP proof was used before",
            });
        }
    }
    write::insert_credential(&mut *conn, credential).await
}
