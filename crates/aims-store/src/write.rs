//! The write-transaction protocol every change goes through, and the checks writes share
//! under the lock; below both [`crate::engine`] and [`crate::approvals`].
//!
//! The shape of every mutation: [`begin_write`] gives the caller a [`WriteTx`] inside a
//! transaction holding the audit-head lock, and the head its events will follow; the checks
//! and changes run inside it as one async block whose result goes to [`settle`]: a refusal is
//! rolled back, a success has its events chained after the head and inserted. Because the lock
//! is held throughout, read-check-write sequences are race-free on both backends. Two writes
//! on PostgreSQL take no head lock: an access token's issuance, which locks the rows it checks
//! and queues its event instead ([`crate::issuance`]), and a step of a revocation's cascade,
//! which writes no audit record and takes the revocation log's lock
//! ([`crate::revocation`]).
//!
//! **Group commit.** Writes of one store share transactions: a write that finds a transaction
//! opened by an earlier write and not yet committed joins it under a savepoint, and one
//! `COMMIT` (one fsync) makes every member durable at once. The members run one at a time, in
//! the order they took the [`Writer`]'s lock, each seeing what the earlier ones wrote, so a
//! batch is exactly the serial history of its members. A refused member is rolled back to its
//! savepoint and changes nothing; a member is answered only once the batch's `COMMIT` is known
//! to have succeeded. A member after which no write waits for the lock commits the batch
//! itself, at once. Otherwise it hands the commit to a task that queues for the lock behind
//! every write already waiting: whichever of those tasks first finds the batch still open
//! commits it, so a batch grows by exactly the writes that arrived while it ran, and a
//! caller cancelled while it waits never leaves a transaction open. A batch takes at most
//! [`MAX_MEMBERS`] writes. A write that holds the lock long ([`begin_write_alone`]) joins no
//! batch: it commits the open one first, so the writes waiting in it are not held to its end.
//!
//! Nothing is reported committed that is not: transactions are [`Tx`]s, whose connection is
//! closed whenever `COMMIT` or `ROLLBACK` fails, and when `COMMIT` fails the committer learns
//! on a fresh connection, under the head lock, whether the batch's last audit record is in the
//! log. It is there only if the transaction committed (the driver lost the answer, not the
//! change), and then every member succeeded; if it is not, every member failed and changed
//! nothing; if the store cannot be asked, the outcome is [`StoreError::OutcomeUnknown`].

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use aims_core::agent::LifecycleState;
use aims_core::audit::{AuditEvent, ChainHead};
use aims_core::id::AgentName;
use aims_core::task::Task;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::errors::{classify, on_unique};
use crate::queue::{self, Queued};
use crate::rows::{self, NewAuditRow, TaskRow};
use crate::tx::{Control, Tx};
use crate::{AccessTokenIssue, IssuedCredential, StoreError, WriteBatch, WriteObserver, sql};

/// A backend's connection type.
pub(crate) type Conn<B> = <<B as Backend>::Db as Database>::Connection;

/// The most writes one group commit takes; the next write opens a new transaction.
pub(crate) const MAX_MEMBERS: usize = 128;

/// What a database backend supplies to the shared store logic.
pub(crate) trait Backend: Clone + Send + Sync + 'static {
    /// The sqlx database.
    type Db: Control + sqlx::database::HasStatementCache;

    /// The pool plain reads run on.
    fn reads(&self) -> &Pool<Self::Db>;

    /// The pool writes run on.
    fn writes(&self) -> &Pool<Self::Db>;

    /// The group-commit state of this store's write transactions.
    fn writer(&self) -> &Writer<Self::Db>;

    /// Whether the store takes a write now (a SQLite store's free-space reserve holds).
    fn admit_write(&self) -> Result<(), StoreError>;

    /// Begins a transaction that holds the audit-head lock, and reads the head and whether
    /// audit events wait in the queue ([`crate::queue`]; seen by the statement that took the
    /// lock, so every batch acknowledged before it began). Writes begin through
    /// [`begin_write`], which asks [`Backend::admit_write`] first.
    fn begin_locked(
        &self,
    ) -> impl Future<Output = Result<(Tx<Self::Db>, ChainHead, bool), StoreError>> + Send;

    /// Begins a read-only transaction whose reads all see one snapshot.
    fn begin_snapshot(&self) -> impl Future<Output = Result<Tx<Self::Db>, StoreError>> + Send;

    /// Inserts chained audit rows (the head is moved by the caller).
    fn insert_audit<'a>(
        conn: &'a mut Conn<Self>,
        rows: Vec<NewAuditRow>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Proves the database answers and can write.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes `events` durable without the head lock, if this backend has the queue
    /// ([`crate::queue`]); otherwise appends them as any write does.
    fn queue_audit<'a>(
        &'a self,
        events: &'a [AuditEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Takes the oldest batches waiting in the queue (at most [`queue::TAKE_AT_ONCE`]), inside
    /// the transaction holding the head lock; none without a queue.
    fn take_queued(
        conn: &mut Conn<Self>,
    ) -> impl Future<Output = Result<Vec<Queued>, StoreError>> + Send + '_;

    /// Whether any batch waits in the queue (read without the lock).
    fn has_queued(&self) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Registers an access token with its audit event (`Store::issue_access_token`), under
    /// the head lock or under row locks ([`crate::issuance`]).
    fn register_access_token<'a>(
        &'a self,
        issue: &'a AccessTokenIssue,
        event: &'a AuditEvent,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// How a write under the head lock reads the credential it registers a child of, so that
    /// a cascade step that does not take the head lock waits for it.
    const PARENT_READS: Reads;

    /// The statement a revoking write runs, right after it begins, to take the revocation
    /// log's lock (`None` where the writer is that lock); see [`crate::revocation`].
    const LOCK_REVOCATION_LOG: Option<&'static str>;

    /// Runs one step of the revocation cascade `cascade` ([`crate::revocation::step`]) in a
    /// transaction of its own holding the revocation log's lock; how many credentials it
    /// revoked, or `None` once the cascade is finished.
    fn cascade_step<'a>(
        &'a self,
        cascade: &'a str,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send + 'a;

    /// Forgets the queue's taken batches queued before `before` (see [`crate::queue`]).
    fn forget_taken(
        &self,
        before: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How a write reads the rows its checks depend on (the agent, the task, the parent
/// credential): [`crate::issuance::register`], and a lease's parent ([`crate::leases`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reads {
    /// Plainly: the transaction holds the one writer every conflicting write needs (SQLite).
    Plain,
    /// `FOR SHARE`: the rows cannot change until the transaction ends (PostgreSQL, where
    /// issuance and cascade steps take no head lock).
    Shared,
}

impl Reads {
    pub(crate) fn agent_standing(self) -> &'static str {
        match self {
            Self::Plain => sql::AGENT_STANDING,
            Self::Shared => sql::AGENT_STANDING_SHARED,
        }
    }

    pub(crate) fn credential(self) -> &'static str {
        match self {
            Self::Plain => sql::SELECT_CREDENTIAL,
            Self::Shared => sql::SELECT_CREDENTIAL_SHARED,
        }
    }

    pub(crate) fn task(self) -> &'static str {
        match self {
            Self::Plain => sql::SELECT_TASK,
            Self::Shared => sql::SELECT_TASK_SHARED,
        }
    }
}

/// A store's write transaction still open for more members, if any, and who is told about
/// each one that ends. Clones share both.
pub(crate) struct Writer<DB: Database> {
    open: Arc<Mutex<Option<Batch<DB>>>>,
    /// Writes waiting for `open`'s lock in [`begin_write`].
    waiting: Arc<AtomicUsize>,
    observer: Arc<OnceLock<WriteObserver>>,
}

impl<DB: Database> Writer<DB> {
    /// Tells `observer` about every write transaction that ends from now on; the first
    /// observer set stays.
    pub(crate) fn observe(&self, observer: WriteObserver) {
        let _ = self.observer.set(observer);
    }

    fn report(&self, batch: WriteBatch) {
        if let Some(observer) = self.observer.get() {
            observer(&batch);
        }
    }
}

impl<DB: Database> Default for Writer<DB> {
    fn default() -> Self {
        Self {
            open: Arc::new(Mutex::new(None)),
            waiting: Arc::new(AtomicUsize::new(0)),
            observer: Arc::new(OnceLock::new()),
        }
    }
}

impl<DB: Database> Clone for Writer<DB> {
    fn clone(&self) -> Self {
        Self {
            open: Arc::clone(&self.open),
            waiting: Arc::clone(&self.waiting),
            observer: Arc::clone(&self.observer),
        }
    }
}

impl<DB: Database> std::fmt::Debug for Writer<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// One transaction shared by the writes of a group commit.
struct Batch<DB: Database> {
    tx: Tx<DB>,
    /// When the transaction took the head lock.
    locked_at: Instant,
    /// The head after the members so far.
    head: ChainHead,
    /// How many members succeeded so far (refused ones are rolled back and not counted).
    members: usize,
    /// The last audit record a member appended and that member's transaction id: what a
    /// failed `COMMIT` is resolved by.
    last: Option<(ChainHead, String)>,
    outcome: Outcome,
}

/// How a batch ended, shared by its members. A batch dropped before its outcome was set
/// (the connection failed while a member ran, or the task holding it was cancelled) fails its
/// members.
struct Outcome {
    cell: Arc<OnceLock<Result<(), StoreError>>>,
    /// Whether `COMMIT` was sent: after it, an unset outcome is unknown, not a failure.
    committing: bool,
}

impl Outcome {
    fn new() -> Self {
        Self {
            cell: Arc::new(OnceLock::new()),
            committing: false,
        }
    }

    fn set(&self, result: Result<(), StoreError>) {
        let _ = self.cell.set(result);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.set(Err(if self.committing {
            StoreError::OutcomeUnknown("the group commit was abandoned while committing".to_owned())
        } else {
            StoreError::Unavailable(
                "the shared write transaction failed before it committed; nothing was written"
                    .to_owned(),
            )
        }));
    }
}

/// One write's place in a group commit, between [`begin_write`] and [`settle`]: it holds the
/// writer's lock, and the batch's transaction, which it dereferences to.
pub(crate) struct WriteTx<DB: Database> {
    lock: OwnedMutexGuard<Option<Batch<DB>>>,
    batch: Batch<DB>,
    /// Whether this write runs under a savepoint (it joined earlier members).
    savepoint: bool,
    /// The id this write's audit records and revocation-log entries carry.
    id: String,
}

impl<DB: Database> WriteTx<DB> {
    /// The audit head this write's events will follow.
    pub(crate) fn head(&self) -> ChainHead {
        self.batch.head
    }

    /// The id this write records with what it appends (audit records, revocation-log
    /// entries).
    pub(crate) fn write_id(&self) -> &str {
        &self.id
    }
}

impl<DB: Database> Deref for WriteTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.batch.tx
    }
}

impl<DB: Database> DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.batch.tx
    }
}

/// The savepoint a member that joins a batch runs under.
const SAVEPOINT: &str = "SAVEPOINT aims_member";
const RELEASE: &str = "RELEASE SAVEPOINT aims_member";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT aims_member";

/// Begins a write, if the store admits writes now: joins the open batch or opens one (a
/// transaction holding the audit-head lock). The write gets a fresh id ([`WriteTx::write_id`]) that its audit records and
/// revocation-log entries carry.
pub(crate) async fn begin_write<B>(backend: &B) -> Result<WriteTx<B::Db>, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    begin::<B>(backend, Joining::Open).await
}

/// [`begin_write`] for a write that holds the lock long (a step of a revocation's cascade): it
/// joins no batch but commits the open one first, so the writes that queued behind an earlier
/// long write are not held until this one ends too. Writes arriving while it runs still join
/// its batch.
pub(crate) async fn begin_write_alone<B>(backend: &B) -> Result<WriteTx<B::Db>, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    begin::<B>(backend, Joining::Never).await
}

/// Whether a beginning write joins the open batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joining {
    Open,
    Never,
}

async fn begin<B>(backend: &B, joining: Joining) -> Result<WriteTx<B::Db>, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    backend.admit_write()?;
    let id = transaction_id()?;
    let mut lock = {
        let _waiting = Waiting::enter(&backend.writer().waiting);
        Arc::clone(&backend.writer().open).lock_owned().await
    };
    let open = match (lock.take(), joining) {
        (Some(batch), Joining::Never) => {
            // Its members are answered by this commit; their committer tasks find it gone.
            commit::<B>(backend, batch).await;
            None
        }
        (open, _) => open,
    };
    let (batch, savepoint) = match open {
        Some(mut batch) => {
            // On failure the batch is dropped: its connection closes, its members fail.
            statement::<B>(&mut batch.tx, SAVEPOINT).await?;
            (batch, true)
        }
        None => {
            let (tx, head, queued) = backend.begin_locked().await?;
            let mut batch = Batch {
                tx,
                locked_at: Instant::now(),
                head,
                members: 0,
                last: None,
                outcome: Outcome::new(),
            };
            if queued {
                // On failure the batch is dropped: its connection closes and nothing was taken.
                sequence_queued::<B>(&mut batch).await?;
            }
            (batch, false)
        }
    };
    Ok(WriteTx {
        lock,
        batch,
        savepoint,
        id,
    })
}

/// The pool a single-statement write runs on, if the store admits writes now.
pub(crate) fn write_pool<B: Backend>(backend: &B) -> Result<&Pool<B::Db>, StoreError> {
    backend.admit_write()?;
    Ok(backend.writes())
}

/// Ends a write whose checks and changes came out as `outcome`: a success has `events`
/// chained and inserted and is answered once its group commit committed; a refusal is rolled
/// back and returned as it is.
pub(crate) async fn settle<B, T>(
    backend: &B,
    tx: WriteTx<B::Db>,
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
    settle_at(backend, tx, outcome, events)
        .await
        .map(|(value, _head)| value)
}

/// [`settle`], also returning the head after this write's events.
pub(crate) async fn settle_at<B, T>(
    backend: &B,
    tx: WriteTx<B::Db>,
    outcome: Result<T, StoreError>,
    events: &[AuditEvent],
) -> Result<(T, ChainHead), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let WriteTx {
        mut lock,
        mut batch,
        savepoint,
        id,
    } = tx;
    let appended = match outcome {
        Ok(value) => append::<B>(&mut batch, events, &id, savepoint)
            .await
            .map(|head| (value, head)),
        Err(refusal) => Err(refusal),
    };
    let (value, head) = match appended {
        Ok(done) => done,
        Err(refusal) => {
            if savepoint {
                // Earlier members still wait for the batch's commit; a batch whose rollback
                // to the savepoint failed is dropped, which fails them.
                if statement::<B>(&mut batch.tx, ROLLBACK_TO).await.is_ok()
                    && statement::<B>(&mut batch.tx, RELEASE).await.is_ok()
                {
                    *lock = Some(batch);
                }
            } else {
                // The first member: nobody else is in the transaction.
                let locked_at = batch.locked_at;
                let _ = batch.tx.rollback().await;
                backend.writer().report(WriteBatch {
                    writes: 1,
                    held: locked_at.elapsed(),
                });
            }
            return Err(refusal);
        }
    };
    let done = Arc::clone(&batch.outcome.cell);
    let nobody_waits = backend.writer().waiting.load(Ordering::Acquire) == 0;
    if nobody_waits || batch.members >= MAX_MEMBERS {
        commit::<B>(backend, batch).await;
        drop(lock);
    } else {
        *lock = Some(batch);
        drop(lock);
        // Queue behind every write already waiting, in a task of its own so that a caller
        // cancelled meanwhile still gets its batch committed.
        let open = Arc::clone(&backend.writer().open);
        let backend = backend.clone();
        let mine = Arc::clone(&done);
        let committer = tokio::spawn(async move {
            let mut lock = open.lock_owned().await;
            if lock
                .as_ref()
                .is_some_and(|batch| Arc::ptr_eq(&batch.outcome.cell, &mine))
                && let Some(batch) = lock.take()
            {
                commit::<B>(&backend, batch).await;
            }
        });
        if committer.await.is_err() {
            return Err(StoreError::OutcomeUnknown(
                "the group commit's task failed".to_owned(),
            ));
        }
    }
    match done.get() {
        Some(Ok(())) => Ok((value, head)),
        Some(Err(failure)) => Err(failure.clone()),
        None => Err(StoreError::OutcomeUnknown(
            "the group commit ended without an outcome".to_owned(),
        )),
    }
}

/// Chains every batch waiting in the queue after the head of a batch just opened, before any
/// member's changes: so an event acknowledged before a write began precedes its events.
async fn sequence_queued<B>(batch: &mut Batch<B::Db>) -> Result<(), StoreError>
where
    B: Backend,
{
    loop {
        let taken = B::take_queued(&mut batch.tx).await?;
        let more = taken.len() >= queue::TAKE_AT_ONCE;
        let mut rows = Vec::new();
        for Queued { txn, events } in taken {
            let (chained, head) = rows::chain_batch(batch.head, &events, &txn)?;
            rows.extend(chained);
            if !events.is_empty() {
                batch.last = Some((head, txn));
            }
            batch.head = head;
        }
        if !rows.is_empty() {
            B::insert_audit(&mut batch.tx, rows).await?;
        }
        if !more {
            return Ok(());
        }
    }
}

/// Counts a write waiting for the writer's lock while it exists (so also when the waiting
/// write is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Chains `events` after the batch's head, inserts them and counts the member in; returns
/// the head after them. A member under a savepoint releases it.
async fn append<B>(
    batch: &mut Batch<B::Db>,
    events: &[AuditEvent],
    id: &str,
    savepoint: bool,
) -> Result<ChainHead, StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
{
    let (rows, head) = rows::chain_batch(batch.head, events, id)?;
    B::insert_audit(&mut batch.tx, rows).await?;
    if savepoint {
        statement::<B>(&mut batch.tx, RELEASE).await?;
    }
    if !events.is_empty() {
        batch.last = Some((head, id.to_owned()));
    }
    batch.head = head;
    batch.members += 1;
    Ok(head)
}

/// Moves the head past the batch's events and commits, and records the outcome for every
/// member. When `COMMIT` fails, asks the store whether it committed anyway
/// ([`committed_anyway`]).
async fn commit<B>(backend: &B, batch: Batch<B::Db>)
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let Batch {
        mut tx,
        locked_at,
        head,
        members,
        last,
        mut outcome,
    } = batch;
    let report = || WriteBatch {
        writes: members,
        held: locked_at.elapsed(),
    };
    if last.is_some() {
        let moved = match rows::to_i64(head.seq) {
            Ok(seq) => sqlx::query(sql::UPDATE_HEAD)
                .bind(seq)
                .bind(head.hash.to_hex())
                .execute(&mut *tx)
                .await
                .map(drop)
                .map_err(classify),
            Err(e) => Err(e),
        };
        if let Err(failure) = moved {
            let _ = tx.rollback().await;
            outcome.set(Err(failure));
            backend.writer().report(report());
            return;
        }
    }
    outcome.committing = true;
    let result = match tx.commit().await {
        Ok(()) => Ok(()),
        Err(failure) => match &last {
            Some((head, txn)) => committed_anyway(backend, head, txn, failure).await,
            None => Err(failure),
        },
    };
    backend.writer().report(report());
    outcome.set(result);
}

/// Runs a savepoint statement inside a batch's transaction.
async fn statement<B>(tx: &mut Tx<B::Db>, statement: &'static str) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
{
    (&mut **tx)
        .execute(statement)
        .await
        .map(drop)
        .map_err(classify)
}

/// A fresh random id for one write (128 bits, hex).
pub(crate) fn transaction_id() -> Result<String, StoreError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Unavailable("no randomness for a transaction id".to_owned()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// After a failed `COMMIT`: whether the transaction whose last record, appended by the write
/// `txn`, moved the head to `new_head` committed all the same. The question is asked under
/// the head lock, which the failed transaction held, so it has ended (committed or rolled
/// back) by the time it is answered. `Ok` if the record at the head's position was appended
/// by `txn`; `failure` if not (nothing there, or another transaction's record, even one with
/// the same hash: two transactions that append identical events after the same head produce
/// identical hashes); `OutcomeUnknown` if the store cannot be asked.
async fn committed_anyway<B>(
    backend: &B,
    new_head: &ChainHead,
    txn: &str,
    failure: StoreError,
) -> Result<(), StoreError>
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
    let (mut probe, _head, _queued) = backend.begin_locked().await.map_err(unknown)?;
    let found = sqlx::query_scalar::<B::Db, Option<String>>(sql::AUDIT_TXN_AT)
        .bind(rows::to_i64(new_head.seq)?)
        .fetch_optional(&mut *probe)
        .await
        .map_err(classify);
    let _ = probe.rollback().await;
    match found {
        Ok(Some(Some(appended_by))) if appended_by == txn => {
            tracing::warn!(%failure, seq = new_head.seq, "COMMIT reported a failure but the transaction committed");
            Ok(())
        }
        Ok(_) => Err(failure),
        Err(why) => Err(unknown(why)),
    }
}

/// Refuses unless `agent` exists and its lifecycle state lets it hold credentials (it may
/// have been suspended or quarantined since the caller read it); read under the write lock.
pub(crate) async fn require_credentials_allowed<B>(
    tx: &mut WriteTx<B::Db>,
    agent: &AgentName,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Decode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    credentials_allowed::<B>(tx, agent, None, sql::AGENT_STANDING).await
}

/// [`require_credentials_allowed`] on any transaction's connection, reading the agent's state
/// and revision with `statement` (plainly, or `FOR SHARE` under row locks); with `revision`,
/// refuses too unless the record is still at that revision (what the caller decided on).
pub(crate) async fn credentials_allowed<B>(
    conn: &mut Conn<B>,
    agent: &AgentName,
    revision: Option<u64>,
    statement: &'static str,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> i64: Decode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let (state, stored) = sqlx::query_as::<B::Db, (String, i64)>(statement)
        .bind(agent.as_str().to_owned())
        .fetch_optional(conn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound { what: "agent" })?;
    if !LifecycleState::parse(&state).is_some_and(LifecycleState::may_hold_credentials) {
        return Err(StoreError::Conflict {
            reason: "the agent may not hold credentials",
        });
    }
    if revision
        .is_some_and(|expected| rows::to_u64(stored, "agent revision").ok() != Some(expected))
    {
        return Err(StoreError::Conflict {
            reason: "the agent's record changed while the token was decided; ask again",
        });
    }
    Ok(())
}

/// Refuses unless task `id` exists and is open at `now`, read with `statement`: plainly
/// ([`sql::SELECT_TASK`]) under the write lock, or `FOR SHARE` under row locks.
pub(crate) async fn require_open_task<B>(
    conn: &mut Conn<B>,
    id: &str,
    now: OffsetDateTime,
    statement: &'static str,
) -> Result<(), StoreError>
where
    B: Backend,
    for<'c> &'c mut Conn<B>: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db> + Decode<'q, B::Db>,
    for<'q> Option<String>: Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Decode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Decode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    let task = sqlx::query_as::<B::Db, TaskRow>(statement)
        .bind(id.to_owned())
        .fetch_optional(conn)
        .await
        .map_err(classify)?
        .map(TaskRow::into_task)
        .transpose()?;
    if task.is_some_and(|t| t.is_open(now)) {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            reason: "the task is not open",
        })
    }
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

/// Inserts a task; its id is unique.
pub(crate) async fn insert_task<'c, DB, E>(conn: E, task: &Task) -> Result<(), StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(sql::INSERT_TASK)
        .bind(task.id.as_str().to_owned())
        .bind(task.agent.as_str().to_owned())
        .bind(task.intent.as_str().to_owned())
        .bind(task.subject.clone())
        .bind(task.state.as_str().to_owned())
        .bind(rows::to_ms(task.created_at))
        .bind(rows::to_ms(task.deadline))
        .execute(conn)
        .await
        .map_err(on_unique("task id already exists"))?;
    Ok(())
}
