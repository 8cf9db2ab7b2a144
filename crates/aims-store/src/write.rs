//! The write-transaction protocol every change goes through, and the checks writes share
//! under the lock; below both [`crate::engine`] and [`crate::approvals`].
//!
//! The shape of every mutation: [`begin_write`] opens a transaction holding the
//! audit-head lock and returns the head; the checks and changes run inside it as one async
//! block whose result goes to [`settle`]: a refusal rolls the transaction back, a success
//! goes to [`finish`], which chains the events after the head, inserts them, moves the head
//! and commits. Because the lock is taken first, read-check-write sequences are race-free on
//! both backends.
//!
//! Nothing is reported committed that is not: transactions are [`Tx`]s, whose connection is
//! closed whenever `COMMIT` or `ROLLBACK` fails, and when `COMMIT` fails [`finish`] learns on a
//! fresh connection, under the head lock, whether the events it wrote are in the log. They
//! are there only if the transaction committed (the driver lost the answer, not the change),
//! and then the write succeeded; if they are not, it failed and changed nothing; if the
//! store cannot be asked, the outcome is [`StoreError::OutcomeUnknown`].

use std::future::Future;

use aims_core::agent::LifecycleState;
use aims_core::audit::{AuditEvent, ChainHead};
use aims_core::id::AgentName;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use crate::errors::{classify, on_unique};
use crate::rows::{self, NewAuditRow};
use crate::tx::{Control, Tx};
use crate::{IssuedCredential, StoreError, sql};

/// A backend's connection type.
pub(crate) type Conn<B> = <<B as Backend>::Db as Database>::Connection;

/// What a database backend supplies to the shared store logic.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The sqlx database.
    type Db: Control;

    /// The pool plain reads run on.
    fn reads(&self) -> &Pool<Self::Db>;

    /// The pool writes run on.
    fn writes(&self) -> &Pool<Self::Db>;

    /// Whether the store takes a write now (a SQLite store's free-space reserve holds).
    fn admit_write(&self) -> Result<(), StoreError>;

    /// Begins a transaction that holds the audit-head lock, and reads the head. Writes begin
    /// through [`begin_write`], which asks [`Backend::admit_write`] first.
    fn begin_locked(
        &self,
    ) -> impl Future<Output = Result<(Tx<Self::Db>, ChainHead), StoreError>> + Send;

    /// Begins a read-only transaction whose reads all see one snapshot.
    fn begin_snapshot(&self) -> impl Future<Output = Result<Tx<Self::Db>, StoreError>> + Send;

    /// Inserts chained audit rows (the head is moved by the caller).
    fn insert_audit<'a>(
        conn: &'a mut Conn<Self>,
        rows: Vec<NewAuditRow>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Proves the database answers and can write.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Begins a write transaction holding the audit-head lock, if the store admits writes now.
/// The transaction gets a fresh id ([`Tx::write_id`]) that its audit records and
/// revocation-log entries carry.
pub(crate) async fn begin_write<B: Backend>(
    backend: &B,
) -> Result<(Tx<B::Db>, ChainHead), StoreError> {
    backend.admit_write()?;
    let id = transaction_id()?;
    let (tx, head) = backend.begin_locked().await?;
    Ok((tx.for_write(id), head))
}

/// The pool a single-statement write runs on, if the store admits writes now.
pub(crate) fn write_pool<B: Backend>(backend: &B) -> Result<&Pool<B::Db>, StoreError> {
    backend.admit_write()?;
    Ok(backend.writes())
}

/// Ends a write transaction whose checks and changes came out as `outcome`: a success is
/// committed with `events` ([`finish`]); a refusal is rolled back and returned as it is
/// (should the rollback fail, its connection is closed, which rolls back too).
pub(crate) async fn settle<B, T>(
    backend: &B,
    tx: Tx<B::Db>,
    head: ChainHead,
    outcome: Result<T, StoreError>,
    events: &[AuditEvent],
) -> Result<T, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    match outcome {
        Ok(value) => {
            finish(backend, tx, head, events).await?;
            Ok(value)
        }
        Err(refusal) => {
            let _ = tx.rollback().await;
            Err(refusal)
        }
    }
}

/// Chains `events` after `head` inside `tx`, moves the head and commits. When `COMMIT`
/// fails, asks the store whether it committed anyway ([`committed_anyway`]).
pub(crate) async fn finish<B>(
    backend: &B,
    mut tx: Tx<B::Db>,
    head: ChainHead,
    events: &[AuditEvent],
) -> Result<ChainHead, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let txn = tx
        .write_id()
        .ok_or_else(|| StoreError::Unavailable("a write transaction without an id".to_owned()))?
        .to_owned();
    let (rows, new_head) = rows::chain_batch(head, events, &txn)?;
    let written: Result<(), StoreError> = async {
        B::insert_audit(&mut tx, rows).await?;
        sqlx::query(sql::UPDATE_HEAD)
            .bind(rows::to_i64(new_head.seq)?)
            .bind(new_head.hash.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        Ok(())
    }
    .await;
    if let Err(failure) = written {
        let _ = tx.rollback().await;
        return Err(failure);
    }
    match tx.commit().await {
        Ok(()) => Ok(new_head),
        Err(failure) => committed_anyway(backend, &new_head, &txn, failure).await,
    }
}

/// A fresh random id for one write transaction (128 bits, hex).
fn transaction_id() -> Result<String, StoreError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Unavailable("no randomness for a transaction id".to_owned()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// After a failed `COMMIT`: whether the transaction `txn` that would have moved the head to
/// `new_head` committed all the same. The question is asked under the head lock, which the
/// failed transaction held, so it has ended (committed or rolled back) by the time it is
/// answered. `Ok` if the record at the head's position was appended by `txn`; `failure` if
/// not (nothing there, or another transaction's record, even one with the same hash: two
/// transactions that append identical events after the same head produce identical hashes);
/// `OutcomeUnknown` if the store cannot be asked.
async fn committed_anyway<B>(
    backend: &B,
    new_head: &ChainHead,
    txn: &str,
    failure: StoreError,
) -> Result<ChainHead, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let unknown = |why: StoreError| {
        StoreError::OutcomeUnknown(format!(
            "commit failed ({failure}) and its outcome cannot be read back ({why})"
        ))
    };
    let (mut probe, _head) = backend.begin_locked().await.map_err(unknown)?;
    let found = sqlx::query_scalar::<B::Db, Option<String>>(sql::AUDIT_TXN_AT)
        .bind(rows::to_i64(new_head.seq)?)
        .fetch_optional(&mut *probe)
        .await
        .map_err(classify);
    let _ = probe.rollback().await;
    match found {
        Ok(Some(Some(appended_by))) if appended_by == txn => {
            tracing::warn!(%failure, seq = new_head.seq, "COMMIT reported a failure but the transaction committed");
            Ok(*new_head)
        }
        Ok(_) => Err(failure),
        Err(why) => Err(unknown(why)),
    }
}

/// Refuses unless `agent` exists and its lifecycle state lets it hold credentials (it may
/// have been suspended or quarantined since the caller read it); read under the write lock.
pub(crate) async fn require_credentials_allowed<B>(
    tx: &mut Tx<B::Db>,
    agent: &AgentName,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let state = sqlx::query_scalar::<B::Db, String>(sql::AGENT_STATE)
        .bind(agent.as_str().to_owned())
        .fetch_optional(&mut **tx)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound { what: "agent" })?;
    if !LifecycleState::parse(&state).is_some_and(LifecycleState::may_hold_credentials) {
        return Err(StoreError::Conflict {
            reason: "the agent may not hold credentials",
        });
    }
    Ok(())
}

/// Registers an issued credential; its id is unique.
pub(crate) async fn insert_credential<'c, DB, E>(
    conn: E,
    credential: &IssuedCredential,
) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(sql::INSERT_CREDENTIAL)
        .bind(credential.id.clone())
        .bind(credential.kind.as_str().to_owned())
        .bind(credential.agent.as_str().to_owned())
        .bind(credential.parent.clone())
        .bind(credential.key_thumbprint.clone())
        .bind(rows::to_ms(credential.issued_at))
        .bind(rows::to_ms(credential.expires_at))
        .bind(credential.task_id.clone())
        .bind(credential.audience.clone())
        .execute(conn)
        .await
        .map_err(on_unique("credential id already issued"))?;
    Ok(())
}
