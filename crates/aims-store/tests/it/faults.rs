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
    let killer = kill_sessions_until(&harness, "aims_kill_test", stop.clone()).await;
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

/// Kills every PostgreSQL session named `application_name` every 10 ms until `stop`; the task
/// answers how many it killed.
async fn kill_sessions_until(
    harness: &Harness,
    application_name: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    let mut conn = harness.postgres_connection().await;
    tokio::spawn(async move {
        let mut killed = 0i64;
        while !stop.load(Ordering::SeqCst) {
            // Materialized first, so the planner cannot call pg_terminate_backend on sessions
            // before filtering them.
            let now: i64 = sqlx::query_scalar(
                "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
                 WHERE application_name = $1) \
                 SELECT count(*) FROM victims WHERE pg_terminate_backend(pid)",
            )
            .bind(application_name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            killed += now;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        killed
    })
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
    let mut holder = harness
        .postgres_session("BEGIN; SELECT * FROM audit_head FOR UPDATE;")
        .await;
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

/// PostgreSQL connections killed while decisions' events are queued (`Store::queue_audit`)
/// and while the queue is being moved into the log: every batch the store acknowledged is in
/// the log exactly once after recovery and after a reopen, every batch it refused is not,
/// and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn killed_postgres_connections_lose_no_acknowledged_queued_event() {
    let harness = Harness::postgres_named("aims_queue_kill_test").await;
    initialize(harness.store.as_ref()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let killer = kill_sessions_until(&harness, "aims_queue_kill_test", stop.clone()).await;
    let sequencer = {
        let stop = stop.clone();
        let store = harness.store.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = store.sequence_audit().await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = harness.store.clone();
            tokio::spawn(async move {
                let mut outcomes: Vec<(String, Result<(), StoreError>)> = Vec::new();
                for i in 0..60 {
                    let marker = format!("w{w}-{i}");
                    let mut decision = event(action::DECISION);
                    decision.request_id = Some(marker.clone());
                    outcomes.push((marker, store.queue_audit(&[decision]).await));
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.extend(writer.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    sequencer.await.unwrap();
    assert!(killed > 0, "no connection was killed");
    let refused = outcomes
        .iter()
        .filter(|(_, r)| matches!(r, Err(e) if !matches!(e, StoreError::OutcomeUnknown(_))))
        .count();
    assert!(
        refused > 0,
        "the kills never cut a queued write: the test did not test anything"
    );
    // Recovery: with the killing stopped, the queue empties into the log.
    harness
        .store
        .sequence_audit()
        .await
        .unwrap_or_else(|e| panic!("the store did not recover: {e}"));
    for store in [harness.store.clone(), harness.reopen().await] {
        let records = assert_chain_verifies(store.as_ref()).await;
        let markers: Vec<String> = records
            .iter()
            .map(|r| r.event().unwrap())
            .filter(|e| e.action == action::DECISION)
            .filter_map(|e| e.request_id)
            .collect();
        for (marker, outcome) in &outcomes {
            let found = markers.iter().filter(|m| *m == marker).count();
            match outcome {
                Ok(()) => assert_eq!(
                    found, 1,
                    "acknowledged {marker} is in the log {found} times"
                ),
                Err(StoreError::OutcomeUnknown(_)) => assert!(found <= 1, "{marker}"),
                Err(e) => assert_eq!(found, 0, "refused {marker} ({e}) is in the log"),
            }
        }
    }
    eprintln!(
        "{} acknowledged, {refused} refused, {killed} connections killed",
        outcomes.iter().filter(|(_, r)| r.is_ok()).count()
    );
}

/// A queued batch whose transaction committed but whose answer the driver never got (the
/// connection cut after PostgreSQL answered `COMMIT`): the store reads back that it committed,
/// acknowledges it, and the batch is in the log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn a_queued_batch_whose_answer_was_lost_is_acknowledged() {
    let harness = Harness::postgres().await;
    initialize(harness.store.as_ref()).await;
    let proxy = AnswerCutter::start(harness.postgres_url()).await;
    let store =
        aims_store::PostgresStore::connect_with_schema(&proxy.url, harness.postgres_schema())
            .await
            .unwrap();
    let mut decision = event(action::DECISION);
    decision.request_id = Some("answer-lost".to_owned());
    proxy.armed.store(true, Ordering::SeqCst);
    let queued = store.queue_audit(std::slice::from_ref(&decision)).await;
    assert!(
        proxy.cut.load(Ordering::SeqCst),
        "no answer was cut: the test tested nothing"
    );
    assert!(
        queued.is_ok(),
        "a committed batch was not acknowledged: {queued:?}"
    );
    store.sequence_audit().await.unwrap();
    let records = assert_chain_verifies(harness.store.as_ref()).await;
    let found = records
        .iter()
        .filter(|r| r.event().unwrap().request_id.as_deref() == Some("answer-lost"))
        .count();
    assert_eq!(found, 1);
}

/// A TCP proxy in front of PostgreSQL that, once armed, withholds the first answer that
/// reports a `COMMIT` and cuts that connection when the server reports it ready again (so the
/// transaction has committed): the driver sees a broken connection in place of the answer.
struct AnswerCutter {
    url: String,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
}

impl AnswerCutter {
    async fn start(database_url: &str) -> Self {
        use std::str::FromStr as _;
        let options = sqlx::postgres::PgConnectOptions::from_str(database_url).unwrap();
        let upstream = format!("{}:{}", options.get_host(), options.get_port());
        assert!(
            database_url.contains(&upstream),
            "the test needs host:port spelled out in the database URL"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = database_url.replacen(&upstream, &listener.local_addr().unwrap().to_string(), 1);
        let armed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (armed_in, cut_in) = (armed.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, armed_in.clone(), cut_in.clone()));
            }
        });
        Self { url, armed, cut }
    }
}

/// Relays one connection; see [`AnswerCutter`].
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut client_in, mut client_out) = client.into_split();
    let (mut server_in, mut server_out) = server.into_split();
    let upward = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_in, &mut server_out).await;
    });
    let mut withholding = false;
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = server_in.read(&mut buffer).await {
        let chunk = &buffer[..n];
        let answer = chunk.windows(7).position(|w| w == b"COMMIT\0");
        if !withholding && answer.is_some() && armed.swap(false, Ordering::SeqCst) {
            withholding = true;
        }
        if withholding {
            // ReadyForQuery ('Z', length 5) after the answer: the transaction ended.
            let from = answer.unwrap_or(0);
            if chunk[from..].windows(5).any(|w| w == b"Z\0\0\0\x05") {
                cut.store(true, Ordering::SeqCst);
                break;
            }
            continue;
        }
        if client_out.write_all(chunk).await.is_err() {
            break;
        }
    }
    upward.abort();
}
