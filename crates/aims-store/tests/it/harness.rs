//! Per-test stores: a fresh SQLite file or a fresh PostgreSQL schema, plus raw SQL access for
//! tampering and a way to open the same database again.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aims_store::{PostgresStore, SqliteStore, Store};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

/// The environment variable naming the PostgreSQL test database.
pub const DATABASE_URL_VAR: &str = "AIMS_TEST_DATABASE_URL";

/// One test's store and the database behind it.
pub struct Harness {
    pub store: Arc<dyn Store>,
    backend: Backend,
}

enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

impl Harness {
    /// A store on a new SQLite file in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aims.db");
        let store = SqliteStore::open(&path).await.unwrap();
        Self {
            store: Arc::new(store),
            backend: Backend::Sqlite { _dir: dir, path },
        }
    }

    /// A store in a new schema of the database named by `AIMS_TEST_DATABASE_URL`.
    pub async fn postgres() -> Self {
        Self::postgres_at(database_url()).await
    }

    /// [`postgres`](Self::postgres), with the store's sessions named `application_name` in
    /// `pg_stat_activity`, so a test can find (and kill) them.
    pub async fn postgres_named(application_name: &str) -> Self {
        let url = database_url();
        let separator = if url.contains('?') { '&' } else { '?' };
        Self::postgres_at(format!(
            "{url}{separator}application_name={application_name}"
        ))
        .await
    }

    async fn postgres_at(url: String) -> Self {
        let schema = fresh_schema_name();
        let store = PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap_or_else(|e| panic!("cannot use {DATABASE_URL_VAR}: {e}"));
        Self {
            store: Arc::new(store),
            backend: Backend::Postgres { url, schema },
        }
    }

    /// The URL of the PostgreSQL database the store lives in.
    pub fn postgres_url(&self) -> &str {
        match &self.backend {
            Backend::Postgres { url, .. } => url,
            Backend::Sqlite { .. } => panic!("not a PostgreSQL harness"),
        }
    }

    /// The PostgreSQL schema the store lives in.
    pub fn postgres_schema(&self) -> &str {
        match &self.backend {
            Backend::Postgres { schema, .. } => schema,
            Backend::Sqlite { .. } => panic!("not a PostgreSQL harness"),
        }
    }

    /// A connection of its own to the database, bypassing the store and named apart from its
    /// sessions (PostgreSQL only).
    pub async fn postgres_connection(&self) -> PgConnection {
        match &self.backend {
            Backend::Postgres { url, .. } => {
                let options = PgConnectOptions::from_str(url)
                    .unwrap()
                    .application_name("aims_test_harness");
                PgConnection::connect_with(&options).await.unwrap()
            }
            Backend::Sqlite { .. } => panic!("not a PostgreSQL harness"),
        }
    }

    /// A [`Self::postgres_connection`] in the store's schema that has run `statements` (for
    /// example `BEGIN; SELECT … FOR UPDATE;` to hold a row the store needs).
    pub async fn postgres_session(&self, statements: &str) -> PgConnection {
        let mut conn = self.postgres_connection().await;
        // Apart: a `SET` sent with a `BEGIN` joins that transaction and ends with it.
        sqlx::raw_sql(&format!("SET search_path = {}", self.postgres_schema()))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(statements).execute(&mut conn).await.unwrap();
        conn
    }

    /// Most credentials one step of a revocation's cascade revokes on this backend.
    pub fn cascade_step(&self) -> usize {
        let step = match self.backend {
            Backend::Sqlite { .. } => SqliteStore::CASCADE_STEP,
            Backend::Postgres { .. } => PostgresStore::CASCADE_STEP,
        };
        usize::try_from(step).unwrap()
    }

    /// A second, independent store on the same database (a restart, or another server).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).await.unwrap()),
            Backend::Postgres { url, schema } => Arc::new(
                PostgresStore::connect_with_schema(url, schema)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Whether several stores may write the same database at once (PostgreSQL only; one
    /// SQLite file serves one process).
    pub fn shares_writers(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Runs `sql` on a connection of its own, bypassing the store.
    pub async fn execute_raw(&self, sql: &str) {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let options = SqliteConnectOptions::new().filename(path);
                let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Backend::Postgres { url, schema } => {
                let mut conn = connect_postgres(url, Some(schema)).await;
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

impl Harness {
    /// The plan the database chooses for `sql` (`EXPLAIN QUERY PLAN` on SQLite; `EXPLAIN` on
    /// PostgreSQL with sequential scans discouraged, as on a log too large to scan), one line
    /// per step.
    pub async fn query_plan(&self, sql: &str) -> String {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let options = SqliteConnectOptions::new().filename(path);
                let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
                let rows: Vec<(i64, i64, i64, String)> =
                    sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                conn.close().await.unwrap();
                rows.into_iter().map(|r| r.3 + "\n").collect()
            }
            Backend::Postgres { url, schema } => {
                let mut conn = connect_postgres(url, Some(schema)).await;
                sqlx::raw_sql("SET enable_seqscan = off")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {sql}"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                rows.into_iter().map(|r| r.0 + "\n").collect()
            }
        }
    }
}

impl Drop for Harness {
    /// Drops the test's PostgreSQL schema, best effort, also when the test failed.
    fn drop(&mut self) {
        let Backend::Postgres { url, schema } = &self.backend else {
            return;
        };
        let (url, schema) = (url.clone(), schema.clone());
        // Drop cannot await; clean up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let mut conn = connect_postgres(&url, None).await;
                let drop_schema = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                if let Err(e) = sqlx::raw_sql(&drop_schema).execute(&mut conn).await {
                    eprintln!("could not drop test schema {schema}: {e}");
                }
                let _ = conn.close().await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn connect_postgres(url: &str, schema: Option<&str>) -> PgConnection {
    let mut options = PgConnectOptions::from_str(url).unwrap();
    if let Some(schema) = schema {
        options = options.options([("search_path", schema)]);
    }
    PgConnection::connect_with(&options).await.unwrap()
}

/// The PostgreSQL database the tests use.
fn database_url() -> String {
    std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{DATABASE_URL_VAR} is not set: the PostgreSQL conformance tests need a \
             database, e.g. {DATABASE_URL_VAR}=postgres://postgres@127.0.0.1:5432/test"
        )
    })
}

/// A schema name no other test (in this or an earlier run) uses.
fn fresh_schema_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "aims_test_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
