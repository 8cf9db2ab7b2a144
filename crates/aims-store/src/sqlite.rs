//! The embedded SQLite store: the default for a single `aims server`.
//!
//! One SQLite file serves one `aims server` process; deployments that run several server
//! processes against one database use PostgreSQL ([`crate::PostgresStore`]).
//!
//! Writes go through a pool holding exactly one connection, so in-process writers queue for
//! it and run one at a time; each write is a plain `BEGIN … COMMIT` on that connection, which
//! is also what serializes the audit chain. Reads use a separate small pool of `query_only`
//! connections, which WAL mode lets run beside the writer. The file uses WAL with
//! `synchronous=FULL`, so a committed change and its audit record survive power loss.
//!
//! This module owns SQLite connection setup, transactions and the audit insert only; the
//! store logic, SQL text, row decoding and error classification are shared with PostgreSQL
//! (`engine`, `sql`, `rows`, `errors`).

use std::path::Path;
use std::time::Duration;

use aims_core::audit::{AuditEvent, ChainHead};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use time::OffsetDateTime;

use crate::errors::{classify, classify_migrate};
use crate::issuance;
use crate::queue::Queued;
use crate::revocation;
use crate::rows::{HeadRow, NewAuditRow};
use crate::space::SpaceGuard;
use crate::tx::Tx;
use crate::write::{self, Backend, Reads, Writer};
use crate::{AccessTokenIssue, StoreError, StoreOptions, sql};

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an operation waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections beside the one writer.
const READERS: u32 = 4;
/// Audit records (nine parameters each) or query keys (three) per insert statement.
const ROWS_PER_INSERT: usize = 100;

/// The SQLite implementation of [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: every write runs on it, one at a time.
    writer: SqlitePool,
    /// `query_only` connections for reads.
    reader: SqlitePool,
    /// Refuses writes while the database's volume is below its free-space reserve.
    space: SpaceGuard,
    /// Group commit of the writes on `writer`.
    batches: Writer<Sqlite>,
}

impl SqliteStore {
    /// Most credentials one step of a revocation's cascade revokes: the bound on how long a
    /// step holds the one writer every write (and every audited request) waits for.
    pub const CASCADE_STEP: i64 = 128;

    /// Opens (creating if missing) the database file at `path` and runs migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &StoreOptions::default()).await
    }

    /// [`open`](Self::open) with a free-space reserve and, optionally, a cap on the
    /// database's size in pages (fault tests use the cap where no small file system can be
    /// mounted: a write past it fails with `SQLITE_FULL`, exactly as on a full disk).
    pub async fn open_with(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let opened = |e| match classify(e) {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!(
                "cannot open SQLite database {}: {why}",
                path.display()
            )),
            other => other,
        };
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let mut writes = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        if let Some(pages) = options.max_pages {
            writes = writes.pragma("max_page_count", pages.to_string());
        }
        // A closed writer (its transaction did not end cleanly) is replaced by a new
        // connection with the same settings on the next write.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(writes)
            .await
            .map_err(opened)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(classify_migrate)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(opened)?;
        Ok(Self {
            writer,
            reader,
            space: SpaceGuard::new(path, options.reserve_bytes),
            batches: Writer::default(),
        })
    }
}

impl Backend for SqliteStore {
    type Db = Sqlite;

    const PARENT_READS: Reads = Reads::Plain;

    /// The one writer connection is the revocation log's lock.
    const LOCK_REVOCATION_LOG: Option<&'static str> = None;

    fn reads(&self) -> &SqlitePool {
        &self.reader
    }

    fn writes(&self) -> &SqlitePool {
        &self.writer
    }

    fn writer(&self) -> &Writer<Sqlite> {
        &self.batches
    }

    fn admit_write(&self) -> Result<(), StoreError> {
        self.space.check()
    }

    async fn begin_locked(&self) -> Result<(Tx<Sqlite>, ChainHead, bool), StoreError> {
        // Holding the only writer connection is the head lock within this process;
        // `IMMEDIATE` takes the database's write lock at once, against any other process.
        let mut tx = Tx::begin(&self.writer, "BEGIN IMMEDIATE").await?;
        let head = sqlx::query_as::<_, HeadRow>(sql::SELECT_HEAD)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?
            .into_head()?;
        // No queue: events are appended at once.
        Ok((tx, head, false))
    }

    async fn begin_snapshot(&self) -> Result<Tx<Sqlite>, StoreError> {
        // A deferred read transaction sees one snapshot from its first read on.
        Tx::begin(&self.reader, "BEGIN").await
    }

    async fn insert_audit(
        conn: &mut SqliteConnection,
        rows: Vec<NewAuditRow>,
    ) -> Result<(), StoreError> {
        // One statement per chunk, not per row: each statement is a hand-off to the
        // connection's worker thread. Chunks stay well under SQLite's bound-parameter limit.
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new(sql::INSERT_AUDIT_ROWS);
            insert.push_values(chunk, |mut values, row| {
                values
                    .push_bind(row.seq)
                    .push_bind(row.time_ms)
                    .push_bind(row.action.as_str())
                    .push_bind(row.agent.as_deref())
                    .push_bind(row.prev_hash.as_str())
                    .push_bind(row.hash.as_str())
                    .push_bind(row.body.as_str())
                    .push_bind(row.txn.as_str())
                    .push_bind(row.task_id.as_deref());
            });
            insert.build().execute(&mut *conn).await.map_err(classify)?;
        }
        let keys: Vec<_> = rows
            .iter()
            .flat_map(|row| {
                row.keys
                    .iter()
                    .map(move |(kind, key)| (*kind, key, row.seq))
            })
            .collect();
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new(sql::INSERT_AUDIT_KEYS);
            insert.push_values(chunk, |mut values, (kind, key, seq)| {
                values
                    .push_bind(*kind)
                    .push_bind(key.as_str())
                    .push_bind(*seq);
            });
            insert.push(sql::INSERT_AUDIT_KEYS_TAIL);
            insert.build().execute(&mut *conn).await.map_err(classify)?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // The engine's heartbeat then proves the writer commits.
        sqlx::query(sql::PING)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn queue_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        // The one writer connection is the head lock: a queue would wait for it too.
        let tx = write::begin_write(self).await?;
        write::settle(self, tx, Ok(()), events).await
    }

    async fn take_queued(_conn: &mut SqliteConnection) -> Result<Vec<Queued>, StoreError> {
        Ok(Vec::new())
    }

    async fn has_queued(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn forget_taken(&self, _before: OffsetDateTime) -> Result<(), StoreError> {
        Ok(())
    }

    async fn register_access_token(
        &self,
        issue: &AccessTokenIssue,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        issuance::under_head_lock(self, issue, event).await
    }

    /// On the one writer, as any write; alone, so the writes that queued behind one step are
    /// not held until the next ends too.
    async fn cascade_step(&self, cascade: &str) -> Result<Option<u64>, StoreError> {
        let mut tx = write::begin_write_alone(self).await?;
        let outcome = revocation::step::<Self>(&mut tx, cascade, Self::CASCADE_STEP).await;
        write::settle(self, tx, outcome, &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_is_durable_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("aims.db"))
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        // 2 = FULL
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(sync, 2);
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[tokio::test]
    async fn readers_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("aims.db"))
            .await
            .unwrap();
        let err = sqlx::query("DELETE FROM meta")
            .execute(&store.reader)
            .await
            .expect_err("reader wrote");
        assert!(err.as_database_error().is_some());
    }

    #[tokio::test]
    async fn a_missing_directory_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteStore::open(&dir.path().join("missing/aims.db"))
            .await
            .expect_err("opened");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }
}
