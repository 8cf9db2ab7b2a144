//! Revocation's writes: a target's own credentials, revoked inside a revoking write
//! ([`begin_revoking`], [`revoke_in`]), and the cascade that revokes their descendants in
//! bounded steps ([`finish_cascade`], [`step`]).
//!
//! **The log's order.** Replicas, resource servers and SSF streams follow the `revocations`
//! log by position, so its entries must commit in position order: every transaction that
//! appends to it holds the revocation log's lock from before it reads the log's end until it
//! ends. On SQLite the one writer connection is that lock. On PostgreSQL it is the row of
//! `revocation_log_lock` (migration 0022): a revoking write takes it right after the audit
//! head's lock and before it changes anything ([`begin_revoking`]), and a cascade step takes
//! it alone ([`Backend::cascade_step`]), without the head's lock. So on PostgreSQL a step
//! waits for no audit append, no sequencer turn and no write that does not revoke, and none of
//! them waits for a step; it waits for other revocations and for the issuances and leases that
//! read a credential it marks (`FOR SHARE`, [`crate::issuance`]). Each backend bounds a step
//! (`SqliteStore::CASCADE_STEP`, 128, since a step holds the one writer there;
//! `PostgresStore::CASCADE_STEP`, 1,024).
//!
//! **Completeness** (ARCHITECTURE.md, "Revocation is complete"): a credential is appended to
//! the log and marked revoked in one transaction, and every write that registers a child reads
//! its parent either under the same writer (SQLite) or `FOR SHARE` (PostgreSQL), so the child
//! is registered before its parent's step commits, and found by a later step, or refused.

use std::time::Duration;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;

use crate::approvals;
use crate::errors::classify;
use crate::rows;
use crate::write::{Backend, Conn, WriteTx, begin_write_alone, settle};
use crate::{EPOCH_LIFETIME, RevocationTarget, StoreError, sql};

/// How much of a target [`revoke_in`] revokes in its transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reach {
    /// The target's own credentials and all their descendants.
    Closure,
    /// The target's own credentials only.
    Members,
}

/// How many times in a row a cascade step is tried before the cascade is left to
/// [`crate::Store::finish_revocations`].
const STEP_ATTEMPTS: usize = 3;

/// The pause before a failed cascade step is tried again.
const STEP_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Begins a write that revokes: alone (it joins no group commit, so no earlier member holds a
/// row a cascade step waits for while this write waits for the step) and holding the
/// revocation log's lock before it changes anything.
pub(crate) async fn begin_revoking<B>(backend: &B) -> Result<WriteTx<B::Db>, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let mut tx = begin_write_alone(backend).await?;
    match lock_log::<B>(&mut tx).await {
        Ok(()) => Ok(tx),
        Err(refusal) => settle(backend, tx, Err(refusal), &[]).await,
    }
}

/// Takes the revocation log's lock in the transaction on `conn`, where the backend has one
/// apart from its writer. The lock's row must be there: a store without it cannot order the
/// log, so it refuses instead of appending unordered.
pub(crate) async fn lock_log<B>(conn: &mut Conn<B>) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let Some(lock) = B::LOCK_REVOCATION_LOG else {
        return Ok(());
    };
    sqlx::query(lock)
        .fetch_one(conn)
        .await
        .map(drop)
        .map_err(classify)
}

/// Revokes `target`'s own credentials inside the revoking write `tx` ([`begin_revoking`]):
/// appends every live one to the revocation log (and, for a task, agent or owner, its epoch
/// entries), each carrying the transaction's id, then marks exactly the appended credentials
/// revoked and revokes their approvals. With [`Reach::Closure`] their descendants too, in the
/// same transaction; with [`Reach::Members`] the caller leaves those to a cascade
/// ([`crate::Store::revoke`]). Returns the log position before the first appended entry and
/// how many credentials were revoked.
pub(crate) async fn revoke_in<B>(
    tx: &mut WriteTx<B::Db>,
    target: &RevocationTarget,
    reason: &str,
    now: OffsetDateTime,
    reach: Reach,
) -> Result<(i64, u64), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let (statement, epochs, key) = match target {
        RevocationTarget::Credential(id) => (sql::REVOKE_CREDENTIAL_ONLY, None, id.clone()),
        RevocationTarget::Subtree(id) => (sql::REVOKE_CHILDREN, None, id.clone()),
        RevocationTarget::Task(id) => {
            (sql::REVOKE_TASK_MEMBERS, Some(sql::TASK_EPOCHS), id.clone())
        }
        RevocationTarget::Agent(agent) => (
            sql::REVOKE_AGENT_MEMBERS,
            Some(sql::AGENT_EPOCHS),
            agent.as_str().to_owned(),
        ),
        RevocationTarget::Owner(owner) => (
            sql::REVOKE_OWNER_MEMBERS,
            Some(sql::OWNER_EPOCHS),
            owner.as_str().to_owned(),
        ),
    };
    let txn = tx.write_id().to_owned();
    let before = max_revocation_seq::<B>(&mut **tx).await?;
    sqlx::query(statement)
        .bind(key.clone())
        .bind(rows::to_ms(now))
        .bind(reason.to_owned())
        .bind(txn.clone())
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    mark_revoked::<B>(&mut **tx, now, reason, before).await?;
    if let Reach::Closure = reach {
        let mut after = before;
        loop {
            let (last, appended) =
                append_children::<B>(&mut **tx, &txn, after, now, reason, i64::MAX).await?;
            if appended == 0 {
                break;
            }
            mark_revoked::<B>(&mut **tx, now, reason, last).await?;
            after = last;
        }
    }
    if let Some(epochs) = epochs {
        sqlx::query(epochs)
            .bind(key)
            .bind(rows::to_ms(now))
            .bind(reason.to_owned())
            .bind(rows::to_ms(now + EPOCH_LIFETIME))
            .bind(txn)
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
    }
    let appended = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_REVOCATIONS_AFTER)
        .bind(before)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
    approvals::revoke_approvals_in::<B>(tx, target, before).await?;
    Ok((before, rows::to_u64(appended, "revocation count")?))
}

/// Revokes what is left of the closure of the revocation `cascade` (its row in
/// `revocation_cascades`), one [`step`] per transaction ([`Backend::cascade_step`]), until a
/// step finds nothing left; returns how many credentials it revoked. Steps of several callers
/// (the revoker and a replica finishing an idle cascade) share the row, so they divide the
/// work. A step starts from the row, so one that failed (a deadlock the database broke by
/// ending it, a lost connection) is simply run again, up to [`STEP_ATTEMPTS`] times in a row.
pub(crate) async fn finish_cascade<B: Backend>(
    backend: &B,
    cascade: &str,
) -> Result<u64, StoreError> {
    let mut revoked = 0;
    let mut failures = 0;
    loop {
        match backend.cascade_step(cascade).await {
            Ok(Some(appended)) => {
                revoked += appended;
                failures = 0;
            }
            Ok(None) => return Ok(revoked),
            Err(error) => {
                failures += 1;
                if failures >= STEP_ATTEMPTS {
                    return Err(error);
                }
                tokio::time::sleep(STEP_RETRY_PAUSE).await;
            }
        }
    }
}

/// One step of the cascade `cascade`, on a transaction holding the revocation log's lock:
/// appends and marks at most `limit` unrevoked children of the credentials the log holds after
/// the row's position, revokes their approvals and, once a step has taken all of them
/// (found fewer than `limit`), moves the position to where the log ended before it. The step
/// that finds nothing deletes the row. Each step stamps the row with the clock's time, so a
/// cascade being worked on is never idle. Returns how many credentials it revoked, or `None`
/// once the cascade is finished (or was already).
///
/// A child is either registered before its parent's step commits (and found by a later step,
/// which reads after that position) or refused, so when a step finds nothing no live
/// descendant is left and none can be added.
pub(crate) async fn step<B>(
    conn: &mut Conn<B>,
    cascade: &str,
    limit: i64,
) -> Result<Option<u64>, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let Some((after, revoked_at_ms, reason)) =
        sqlx::query_as::<B::Db, (i64, i64, String)>(sql::SELECT_CASCADE)
            .bind(cascade.to_owned())
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?
    else {
        return Ok(None);
    };
    let revoked_at = rows::from_ms(revoked_at_ms, "revocation time")?;
    // Its entries carry the revocation's `txn`, as its first transaction's do.
    let (last, appended) =
        append_children::<B>(conn, cascade, after, revoked_at, &reason, limit).await?;
    if appended == 0 {
        sqlx::query(sql::DELETE_CASCADE)
            .bind(cascade.to_owned())
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        return Ok(None);
    }
    mark_revoked::<B>(conn, revoked_at, &reason, last).await?;
    approvals::revoke_credential_approvals_in::<B>(conn, last).await?;
    // All children of the entries up to `last` are taken only if the step had room.
    let taken_all = appended < limit.unsigned_abs();
    sqlx::query(sql::ADVANCE_CASCADE)
        .bind(cascade.to_owned())
        .bind(if taken_all { last } else { after })
        .bind(rows::to_ms(OffsetDateTime::now_utc()))
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    Ok(Some(appended))
}

/// The last revocation-log position (0 for an empty log).
async fn max_revocation_seq<B>(conn: &mut Conn<B>) -> Result<i64, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Decode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    sqlx::query_scalar::<B::Db, i64>(sql::MAX_REVOCATION_SEQ)
        .fetch_one(conn)
        .await
        .map_err(classify)
}

/// Appends to the log up to `limit` unrevoked children of the credentials the log holds after
/// position `after`, as part of the revocation written by `txn`; returns where the log ended
/// before them and how many. The caller marks them ([`mark_revoked`]) before the next step.
async fn append_children<B>(
    conn: &mut Conn<B>,
    txn: &str,
    after: i64,
    revoked_at: OffsetDateTime,
    reason: &str,
    limit: i64,
) -> Result<(i64, u64), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let last = max_revocation_seq::<B>(conn).await?;
    // Not prepared once and kept (here and in the statements of a step below): PostgreSQL then
    // plans each execution for its own positions, which select a few entries of a large log,
    // instead of a generic plan that assumes a third of the log and scans every credential.
    sqlx::query(sql::REVOKE_CASCADE_STEP)
        .persistent(false)
        .bind(after)
        .bind(rows::to_ms(revoked_at))
        .bind(reason.to_owned())
        .bind(txn.to_owned())
        .bind(limit)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    // Under the revocation log's lock the entries after `last` are exactly this step's.
    let appended = sqlx::query_scalar::<B::Db, i64>(sql::COUNT_REVOCATIONS_AFTER)
        .persistent(false)
        .bind(last)
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
    Ok((last, rows::to_u64(appended, "revocation count")?))
}

/// Marks revoked every credential the log holds after position `after` that is not yet.
async fn mark_revoked<B>(
    conn: &mut Conn<B>,
    revoked_at: OffsetDateTime,
    reason: &str,
    after: i64,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
{
    sqlx::query(sql::MARK_REVOKED)
        .persistent(false)
        .bind(rows::to_ms(revoked_at))
        .bind(reason.to_owned())
        .bind(after)
        .execute(conn)
        .await
        .map(drop)
        .map_err(classify)
}
