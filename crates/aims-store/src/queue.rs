//! The durable queue in front of the audit log (PostgreSQL; table `audit_queue`, migration
//! 0020): what lets a request whose event changes nothing else (a decision, a refusal) be
//! answered once the event is durable, without waiting for the audit head's lock that every
//! state change, and every step of a revocation's cascade, holds.
//!
//! [`queue`] commits one batch of events as one row, in a transaction of its own that takes
//! no lock another write needs. The log stays one chain: every write transaction that opens a
//! group commit (and so holds the head's lock) first [`take`]s every waiting batch, oldest
//! first, and chains it after the head before its own changes (`write::begin`). So an event
//! acknowledged before a write began precedes that write's events in the log, and a reader
//! that wants every acknowledged event sequences first (`Store::sequence_audit`). A taken row
//! keeps its `txn` with its events cleared until the store's sweep forgets it
//! ([`forget_taken`]), so a writer whose `COMMIT` failed can still learn that it committed.
//!
//! A SQLite store has one writer connection, which is its head lock: a queued event would wait
//! for the same lock, so there events join the group commit as they always did.

use std::time::Duration;

use aims_core::audit::AuditEvent;
use sqlx::Postgres;
use sqlx::postgres::{PgConnection, PgPool};

use crate::errors::{classify, is_unique_violation};
use crate::tx::Tx;
use crate::{StoreError, rows};

/// Most queued batches one statement takes; a write that took this many takes again.
pub(crate) const TAKE_AT_ONCE: usize = 64;

/// How long a taken batch's `txn` is kept, so a writer whose `COMMIT` failed can read back
/// that it committed ([`queue`] asks within seconds).
pub(crate) const TAKEN_KEPT: Duration = Duration::from_secs(600);

/// A batch of events waiting for the log, and the write that queued it.
#[derive(Debug)]
pub(crate) struct Queued {
    pub txn: String,
    pub events: Vec<AuditEvent>,
}

const INSERT: &str = "INSERT INTO audit_queue (txn, events, queued_at_ms) VALUES ($1, $2, $3)";
/// Inserts a row with the txn of a write whose `COMMIT` failed, in a transaction that is
/// rolled back: it waits for that write to end, and fails with a unique violation only if the
/// write's row is there.
const PROBE: &str =
    "INSERT INTO audit_queue (txn, events, queued_at_ms, taken) VALUES ($1, '', 0, TRUE)";
const TAKE: &str = "WITH picked AS ( \
         SELECT id, txn, events FROM audit_queue WHERE NOT taken ORDER BY id LIMIT $1 \
         FOR UPDATE) \
     UPDATE audit_queue q SET taken = TRUE, events = '' FROM picked WHERE q.id = picked.id \
     RETURNING picked.id, picked.txn, picked.events";
const WAITING: &str = "SELECT EXISTS (SELECT 1 FROM audit_queue WHERE NOT taken)";
const FORGET: &str = "DELETE FROM audit_queue WHERE taken AND queued_at_ms < $1";

/// Queues `events` durably as the write `txn`: `Ok` once they are committed (and so will be in
/// the log, in this order, before the events of any write that begins later).
///
/// # Errors
/// `Unavailable` when they were not queued; `OutcomeUnknown` when `COMMIT` failed and
/// whether it committed cannot be read back.
pub(crate) async fn queue(
    pool: &PgPool,
    txn: &str,
    events: &[AuditEvent],
    now_ms: i64,
) -> Result<(), StoreError> {
    // An explicit transaction, not one statement on its own: until `COMMIT` is sent nothing can
    // commit, and once it is sent the insert already holds `txn`'s key, so the probe after a
    // failed `COMMIT` waits for this transaction to end.
    let tx = Tx::begin(pool, "BEGIN").await?;
    commit_with(pool, tx, txn, events, now_ms).await
}

/// Queues `events` as the write `txn` in `tx`, an open transaction holding that write's other
/// changes, and commits it: `Ok` once all of it is committed. On failure nothing was written;
/// the errors are [`queue`]'s.
pub(crate) async fn commit_with(
    pool: &PgPool,
    mut tx: Tx<Postgres>,
    txn: &str,
    events: &[AuditEvent],
    now_ms: i64,
) -> Result<(), StoreError> {
    let body = match serde_json::to_string(events) {
        Ok(body) => body,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(StoreError::Corrupt(format!(
                "audit events do not encode: {e}"
            )));
        }
    };
    let inserted = sqlx::query(INSERT)
        .bind(txn)
        .bind(body)
        .bind(now_ms)
        .execute(&mut *tx)
        .await;
    if let Err(failure) = inserted {
        let _ = tx.rollback().await;
        return Err(classify(failure));
    }
    match tx.commit().await {
        Ok(()) => Ok(()),
        Err(failure) => queued_anyway(pool, txn, failure).await,
    }
}

/// After a failed `COMMIT`: whether the row of `txn` committed all the same (the driver lost
/// the answer, not the change). The probe waits on the row's unique key for the write to end.
async fn queued_anyway(pool: &PgPool, txn: &str, failure: StoreError) -> Result<(), StoreError> {
    let unknown = |why: StoreError| {
        StoreError::OutcomeUnknown(format!(
            "queueing audit events failed ({failure}) and its outcome cannot be read back ({why})"
        ))
    };
    let mut probe = Tx::begin(pool, "BEGIN").await.map_err(unknown)?;
    let tried = sqlx::query(PROBE).bind(txn).execute(&mut *probe).await;
    let _ = probe.rollback().await;
    match tried {
        Err(e) if is_unique_violation(&e) => {
            tracing::warn!(%failure, "queueing audit events reported a failure but committed");
            Ok(())
        }
        Ok(_) => Err(failure),
        Err(e) => Err(unknown(classify(e))),
    }
}

/// Takes the oldest waiting batches (at most [`TAKE_AT_ONCE`]), oldest first, marking them
/// taken; run inside the transaction that holds the head's lock and chains them.
pub(crate) async fn take(conn: &mut PgConnection) -> Result<Vec<Queued>, StoreError> {
    let limit = rows::to_i64(TAKE_AT_ONCE as u64)?;
    let mut taken: Vec<(i64, String, String)> = sqlx::query_as(TAKE)
        .bind(limit)
        .fetch_all(conn)
        .await
        .map_err(classify)?;
    taken.sort_unstable_by_key(|(id, _, _)| *id);
    taken
        .into_iter()
        .map(|(_, txn, events)| {
            let events = serde_json::from_str(&events).map_err(|e| {
                StoreError::Corrupt(format!("a queued audit batch does not decode: {e}"))
            })?;
            Ok(Queued { txn, events })
        })
        .collect()
}

/// Whether any batch waits to be taken.
pub(crate) async fn waiting(pool: &PgPool) -> Result<bool, StoreError> {
    sqlx::query_scalar(WAITING)
        .fetch_one(pool)
        .await
        .map_err(classify)
}

/// Forgets the batches taken that were queued before `before_ms`.
pub(crate) async fn forget_taken(pool: &PgPool, before_ms: i64) -> Result<(), StoreError> {
    sqlx::query(FORGET)
        .bind(before_ms)
        .execute(pool)
        .await
        .map(drop)
        .map_err(classify)
}
