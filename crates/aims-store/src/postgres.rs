//! The PostgreSQL store: for deployments that run several `aims server` processes against
//! one database.
//!
//! Every process has a bounded pool. Writers from all processes are serialized by a row lock:
//! each write transaction first takes `SELECT … FOR UPDATE` on the one-row `audit_head`
//! table, so the audit chain never forks and the checks a write makes see every earlier
//! commit. Join tokens are consumed by a single conditional `UPDATE`, which PostgreSQL's row
//! locking makes at-most-once without the head lock.
//!
//! This module owns PostgreSQL connection setup, the schema used for isolation, the head lock,
//! the batch audit insert and the entry points of what only PostgreSQL does (the audit queue,
//! `queue`; issuance under row locks, `issuance`); the store logic, SQL text, row decoding and
//! error classification are shared with SQLite (`engine`, `sql`, `rows`, `errors`). It never
//! repeats the connection URL in an error: the URL may carry a password.

use std::str::FromStr;
use std::time::Duration;

use aims_core::audit::{AuditEvent, ChainHead};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres};
use time::OffsetDateTime;

use crate::errors::{classify, classify_migrate};
use crate::issuance;
use crate::queue::{self, Queued};
use crate::revocation;
use crate::rows::{self, HeadRow, NewAuditRow};
use crate::tx::Tx;
use crate::write::{self, Backend, Reads, Writer};
use crate::{AccessTokenIssue, StoreError, sql};

/// Connections per process.
const MAX_CONNECTIONS: u32 = 10;
/// How long an operation waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits on every pooled session, so a statement, a wait for a lock (the audit head that every
/// writer takes) or a transaction left idle by a stalled client ends with an error instead of
/// holding the head, and every writer behind it, indefinitely. Migrations run on a connection
/// of their own without them.
const SESSION_LIMITS: [(&str, &str); 3] = [
    ("statement_timeout", "30s"),
    ("lock_timeout", "10s"),
    ("idle_in_transaction_session_timeout", "60s"),
];

/// Locks the audit head until the transaction ends; taken first by every write. Also says
/// whether audit events wait in the queue, so a write takes them without another round trip
/// under the lock when none do.
const LOCK_HEAD: &str = "SELECT seq, hash, \
     EXISTS (SELECT 1 FROM audit_queue WHERE NOT taken) \
     FROM audit_head WHERE id = 1 FOR UPDATE";
/// Inserts a whole batch of audit rows in one round trip.
const INSERT_AUDIT_BATCH: &str = "INSERT INTO audit_log \
     (seq, time_ms, action, agent, prev_hash, hash, body, txn, task_id) \
     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
     $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[])";
/// Inserts a whole batch's query keys in one round trip.
const INSERT_AUDIT_KEYS: &str = "INSERT INTO audit_keys (kind, key, seq) \
     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) ON CONFLICT DO NOTHING";
/// Whether this session may write (off on a standby or a read-only default).
const READ_ONLY: &str = "SELECT current_setting('transaction_read_only')";
/// Takes the revocation log's lock ([`crate::revocation`]).
const LOCK_REVOCATION_LOG: &str = "SELECT id FROM revocation_log_lock WHERE id = 1 FOR UPDATE";

/// The PostgreSQL implementation of [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Group commit of this replica's writes.
    batches: Writer<Postgres>,
}

impl PostgresStore {
    /// Most credentials one step of a revocation's cascade revokes. A step holds only the
    /// revocation log's lock, which other revocations wait for (and, behind them, the writes that
    /// queue for the head lock such a revocation holds), so it may be larger than SQLite's, where
    /// it holds the one writer: fewer steps pay fewer commits and statements (BENCHMARKS.md,
    /// "Revocation fan-out without the head lock").
    pub const CASCADE_STEP: i64 = 1024;

    /// Connects to `url` (`postgres://…`) and runs migrations in the connection's default
    /// schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_options(parse_url(url)?).await
    }

    /// Connects to `url`, creates `schema` if missing and uses it (through `search_path`) on
    /// every pooled connection, then runs migrations there. Lets several independent stores
    /// share one database, e.g. one per test. `schema` must match `[a-z_][a-z0-9_]{0,62}`.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        if !is_valid_schema(schema) {
            return Err(StoreError::Unavailable(
                "invalid schema name: use 1 to 63 of a-z, 0-9 and _, not starting with a digit"
                    .to_owned(),
            ));
        }
        let options = parse_url(url)?;
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(classify)?;
        // The name is validated above, so quoting it is enough to use it as an identifier.
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await
            .map_err(classify)?;
        conn.close().await.map_err(classify)?;
        Self::connect_with_options(options.options([("search_path", schema)])).await
    }

    async fn connect_with_options(options: PgConnectOptions) -> Result<Self, StoreError> {
        // Name the sessions for `pg_stat_activity`, unless the URL already does.
        let options = if options.get_application_name().is_some() {
            options
        } else {
            options.application_name("aims")
        };
        let mut migrating = PgConnection::connect_with(&options)
            .await
            .map_err(classify)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&mut migrating)
            .await
            .map_err(classify_migrate)?;
        migrating.close().await.map_err(classify)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.options(SESSION_LIMITS))
            .await
            .map_err(classify)?;
        Ok(Self {
            pool,
            batches: Writer::default(),
        })
    }
}

/// Parses a connection URL without ever echoing it.
fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::Unavailable("invalid PostgreSQL connection URL".to_owned()))
}

/// `[a-z_][a-z0-9_]{0,62}`: an identifier PostgreSQL accepts unquoted and unchanged.
fn is_valid_schema(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Backend for PostgresStore {
    type Db = Postgres;

    const PARENT_READS: Reads = Reads::Shared;

    const LOCK_REVOCATION_LOG: Option<&'static str> = Some(LOCK_REVOCATION_LOG);

    fn reads(&self) -> &PgPool {
        &self.pool
    }

    fn writes(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &Writer<Postgres> {
        &self.batches
    }

    fn admit_write(&self) -> Result<(), StoreError> {
        // The database server's disk is its own to watch.
        Ok(())
    }

    async fn begin_locked(&self) -> Result<(Tx<Postgres>, ChainHead, bool), StoreError> {
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        let (seq, hash, queued) = sqlx::query_as::<_, (i64, String, bool)>(LOCK_HEAD)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        let head = HeadRow { seq, hash }.into_head()?;
        Ok((tx, head, queued))
    }

    async fn begin_snapshot(&self) -> Result<Tx<Postgres>, StoreError> {
        Tx::begin(
            &self.pool,
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )
        .await
    }

    async fn insert_audit(
        conn: &mut PgConnection,
        rows: Vec<NewAuditRow>,
    ) -> Result<(), StoreError> {
        let mut columns = AuditColumns::default();
        let mut keys: (Vec<&str>, Vec<String>, Vec<i64>) = Default::default();
        for row in rows {
            for (kind, key) in row.keys {
                keys.0.push(kind);
                keys.1.push(key);
                keys.2.push(row.seq);
            }
            columns.seq.push(row.seq);
            columns.time_ms.push(row.time_ms);
            columns.action.push(row.action);
            columns.agent.push(row.agent);
            columns.prev_hash.push(row.prev_hash);
            columns.hash.push(row.hash);
            columns.body.push(row.body);
            columns.txn.push(row.txn);
            columns.task_id.push(row.task_id);
        }
        sqlx::query(INSERT_AUDIT_BATCH)
            .bind(columns.seq)
            .bind(columns.time_ms)
            .bind(columns.action)
            .bind(columns.agent)
            .bind(columns.prev_hash)
            .bind(columns.hash)
            .bind(columns.body)
            .bind(columns.txn)
            .bind(columns.task_id)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        if !keys.0.is_empty() {
            sqlx::query(INSERT_AUDIT_KEYS)
                .bind(keys.0)
                .bind(keys.1)
                .bind(keys.2)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PING)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        let read_only: String = sqlx::query_scalar(READ_ONLY)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        if read_only == "on" {
            return Err(StoreError::Unavailable(
                "the database is read-only (a standby, or default_transaction_read_only)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    async fn queue_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.admit_write()?;
        let txn = write::transaction_id()?;
        let now_ms = rows::to_ms(OffsetDateTime::now_utc());
        queue::queue(&self.pool, &txn, events, now_ms).await
    }

    async fn take_queued(conn: &mut PgConnection) -> Result<Vec<Queued>, StoreError> {
        queue::take(conn).await
    }

    async fn has_queued(&self) -> Result<bool, StoreError> {
        queue::waiting(&self.pool).await
    }

    async fn forget_taken(&self, before: OffsetDateTime) -> Result<(), StoreError> {
        queue::forget_taken(&self.pool, rows::to_ms(before)).await
    }

    async fn register_access_token(
        &self,
        issue: &AccessTokenIssue,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        // Under row locks, with the event queued in the same transaction: no head lock.
        self.admit_write()?;
        let txn = write::transaction_id()?;
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        if let Err(refusal) = issuance::register::<Self>(&mut tx, issue, Self::PARENT_READS).await {
            let _ = tx.rollback().await;
            return Err(refusal);
        }
        let now_ms = rows::to_ms(OffsetDateTime::now_utc());
        queue::commit_with(&self.pool, tx, &txn, std::slice::from_ref(event), now_ms).await
    }

    /// Without the audit head's lock: the step writes no audit record, and the revocation
    /// log's lock orders it against every other append to the log. A step whose `COMMIT`
    /// failed may have committed; the caller runs it again either way (it starts from the
    /// cascade's row).
    async fn cascade_step(&self, cascade: &str) -> Result<Option<u64>, StoreError> {
        self.admit_write()?;
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        let stepped = async {
            revocation::lock_log::<Self>(&mut tx).await?;
            revocation::step::<Self>(&mut tx, cascade, Self::CASCADE_STEP).await
        }
        .await;
        match stepped {
            Ok(revoked) => {
                tx.commit().await?;
                Ok(revoked)
            }
            Err(error) => {
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }
}

/// Audit rows transposed into one array per column, for `UNNEST`.
#[derive(Default)]
struct AuditColumns {
    seq: Vec<i64>,
    time_ms: Vec<i64>,
    action: Vec<String>,
    agent: Vec<Option<String>>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
    body: Vec<String>,
    txn: Vec<String>,
    task_id: Vec<Option<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["a", "_", "aims_test_1", &"a".repeat(63)] {
            assert!(is_valid_schema(good), "{good}");
        }
        for bad in ["", "1a", "A", "a-b", "a;drop", "a\"b", "ä", &"a".repeat(64)] {
            assert!(!is_valid_schema(bad), "{bad}");
        }
    }

    #[test]
    fn bad_urls_are_not_echoed() {
        let Err(err) = parse_url("postgres://u:hunter2@[::1") else {
            return;
        };
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
