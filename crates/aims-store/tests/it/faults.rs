//! Real storage faults under the store, asserted from the caller's side: every write the store
//! acknowledged is there after the fault clears and after a reopen, every write it refused
//! left nothing behind, the audit chain verifies, and the store recovers by itself.
//!
//! SQLite runs out of room through its own `max_page_count` (the same `SQLITE_FULL` a full disk
//! raises, without needing to mount anything); PostgreSQL has its connections killed with
//! `pg_terminate_backend` while writes are in flight. Full disks, read-only file systems, locks
//! held by other processes and a stopped PostgreSQL are driven against the real server process
//! in the `aims` crate's tests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aims_core::audit::action;
use aims_store::{SqliteStore, Store, StoreError, StoreOptions};
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::fixtures::{agent, assert_chain_verifies, event, initialize, join_token};
use crate::harness::Harness;

/// What the caller was told about each attempted registration.
#[derive(Default)]
struct Outcomes {
    acknowledged: BTreeSet<String>,
    refused: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

impl Outcomes {
    /// Registers agent `name` and files the answer.
    async fn register(&mut self, store: &dyn Store, name: &str) -> Result<(), StoreError> {
        let result = store
            .create_agent(
                &agent(name, "alice@acme.example", "prod"),
                &join_token(name, &format!("join-{name}"), crate::fixtures::at(3600)),
                &event(action::AGENT_REGISTER),
            )
            .await;
        match &result {
            Ok(()) => self.acknowledged.insert(name.to_owned()),
            Err(StoreError::OutcomeUnknown(_)) => self.unknown.insert(name.to_owned()),
            Err(_) => self.refused.insert(name.to_owned()),
        };
        result
    }

    /// Asserts the promise against `store`: acknowledged registrations are there, with their
    /// audit records; refused ones left nothing; the chain verifies.
    async fn assert_kept(&self, store: &dyn Store) {
        for name in &self.acknowledged {
            assert!(
                store
                    .agent(&crate::fixtures::name(name))
                    .await
                    .unwrap()
                    .is_some(),
                "acknowledged registration {name} was lost"
            );
        }
        for name in &self.refused {
            assert!(
                store
                    .agent(&crate::fixtures::name(name))
                    .await
                    .unwrap()
                    .is_none(),
                "refused registration {name} was written"
            );
        }
        let records = assert_chain_verifies(store).await;
        let registrations = records
            .iter()
            .filter(|r| r.event().unwrap().action == action::AGENT_REGISTER)
            .count();
        let stored = store
            .list_agents(&aims_store::AgentFilter::default())
            .await
            .unwrap()
            .len();
        assert_eq!(
            registrations, stored,
            "every stored agent has exactly one audit record"
        );
    }
}

/// The reproduction, on SQLite's own limit: fill the database, let writes fail, free
/// room, write again, reopen. Before transactions were ended by hand, the first failure left
/// the writer connection inside a transaction that was never committed, and every later
/// write was acknowledged and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aims.db");
    // Room the test can give back later: a table of filler rows outside the store's schema.
    {
        let store = SqliteStore::open(&path).await.unwrap();
        initialize(&store).await;
    }
    raw(&path, "CREATE TABLE filler (b BLOB NOT NULL)").await;
    raw(
        &path,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64) \
         INSERT INTO filler SELECT randomblob(4000) FROM n",
    )
    .await;
    let pages: u64 = {
        let mut conn = connect(&path).await;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        u64::try_from(pages).unwrap()
    };
    let capped = StoreOptions {
        max_pages: Some(pages + 4),
        ..StoreOptions::default()
    };
    let store = SqliteStore::open_with(&path, &capped).await.unwrap();
    let mut outcomes = Outcomes::default();

    // Fill: register until the database is full, then keep trying.
    let mut i = 0;
    while outcomes.refused.len() < 10 {
        i += 1;
        assert!(i < 2_000, "the capped database never filled");
        let _ = outcomes.register(&store, &format!("fill-{i}")).await;
    }
    assert!(
        !outcomes.acknowledged.is_empty(),
        "some registrations fit first"
    );
    // Audit records are small: they fill the last free bytes of the pages there are.
    let mut decisions = 0;
    let mut refused_appends = 0;
    while refused_appends < 10 {
        assert!(decisions < 10_000, "the capped database never filled");
        match store.append_audit(&[event(action::DECISION)]).await {
            Ok(_) => decisions += 1,
            Err(_) => refused_appends += 1,
        }
    }

    // Free room behind the store's back, as an operator deleting a file would.
    raw(&path, "DELETE FROM filler").await;
    for j in 0..20 {
        outcomes
            .register(&store, &format!("after-{j}"))
            .await
            .unwrap_or_else(|e| panic!("the store did not recover once room was free: {e}"));
    }
    store
        .append_audit(&[event(action::DECISION)])
        .await
        .unwrap();
    decisions += 1;
    outcomes.assert_kept(&store).await;
    assert_eq!(count(&store, action::DECISION).await, decisions);

    // And after a restart.
    drop(store);
    let reopened = SqliteStore::open(&path).await.unwrap();
    outcomes.assert_kept(&reopened).await;
    assert_eq!(count(&reopened, action::DECISION).await, decisions);
    assert!(outcomes.unknown.is_empty(), "SQLite answers every commit");
}

/// PostgreSQL connections killed by `pg_terminate_backend` while registrations run on them:
/// the pool replaces them, and no answer the callers got is contradicted by the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn killed_postgres_connections_lose_no_acknowledged_write() {
    let harness = Harness::postgres_named("aims_kill_test").await;
    initialize(harness.store.as_ref()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let mut conn = harness.postgres_connection().await;
        tokio::spawn(async move {
            let mut killed = 0i64;
            while !stop.load(Ordering::SeqCst) {
                // Materialized first, so the planner cannot call pg_terminate_backend on
                // sessions before filtering them.
                let now: i64 = sqlx::query_scalar(
                    "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
                     WHERE application_name = 'aims_kill_test') \
                     SELECT count(*) FROM victims WHERE pg_terminate_backend(pid)",
                )
                .fetch_one(&mut conn)
                .await
                .unwrap();
                killed += now;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            killed
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = harness.store.clone();
            tokio::spawn(async move {
                let mut outcomes = Outcomes::default();
                for i in 0..60 {
                    let _ = outcomes
                        .register(store.as_ref(), &format!("w{w}-{i}"))
                        .await;
                }
                outcomes
            })
        })
        .collect();
    let mut all = Outcomes::default();
    for writer in writers {
        let outcomes = writer.await.unwrap();
        all.acknowledged.extend(outcomes.acknowledged);
        all.refused.extend(outcomes.refused);
        all.unknown.extend(outcomes.unknown);
    }
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no connection was killed");
    assert!(
        !all.refused.is_empty(),
        "the kills never cut a write: the test did not test anything"
    );
    // Recovery: with the killing stopped, every write succeeds again.
    for j in 0..10 {
        all.register(harness.store.as_ref(), &format!("after-{j}"))
            .await
            .unwrap_or_else(|e| panic!("the store did not recover: {e}"));
    }
    all.assert_kept(harness.store.as_ref()).await;
    let reopened = harness.reopen().await;
    all.assert_kept(reopened.as_ref()).await;
    eprintln!(
        "{} acknowledged, {} refused, {} of unknown outcome, {killed} connections killed",
        all.acknowledged.len(),
        all.refused.len(),
        all.unknown.len()
    );
}

/// How many audit records have `action`.
async fn count(store: &dyn Store, action: &str) -> usize {
    crate::fixtures::all_records(store)
        .await
        .iter()
        .filter(|r| r.event().unwrap().action == action)
        .count()
}

async fn connect(path: &std::path::Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

async fn raw(path: &std::path::Path, sql: &str) {
    let mut conn = connect(path).await;
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// Another session holds the audit head's row lock (every write takes it first) for longer
/// than a session may wait for a lock: the writes that wait are refused after
/// `lock_timeout` instead of hanging, change nothing, and writes succeed once it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn a_postgres_lock_held_too_long_refuses_writes_then_lets_them_through() {
    let harness = Harness::postgres().await;
    initialize(harness.store.as_ref()).await;
    let mut holder = harness.postgres_connection().await;
    sqlx::raw_sql(&format!(
        "SET search_path = {}; BEGIN; SELECT * FROM audit_head FOR UPDATE;",
        harness.postgres_schema()
    ))
    .execute(&mut holder)
    .await
    .unwrap();
    let mut outcomes = Outcomes::default();
    let started = std::time::Instant::now();
    let refused = outcomes.register(harness.store.as_ref(), "blocked").await;
    let waited = started.elapsed();
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "refused after {waited:?}, not at the lock timeout"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    outcomes
        .register(harness.store.as_ref(), "after")
        .await
        .unwrap();
    outcomes.assert_kept(harness.store.as_ref()).await;
}
