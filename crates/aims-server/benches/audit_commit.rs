//! Audit group commit: how many durably committed audit events per second the server's
//! group-commit writer ([`AuditWriter`]) sustains, against a naive log that commits one event
//! per transaction.
//!
//! For each store — SQLite in a temporary directory always, PostgreSQL in a fresh schema (dropped
//! afterwards) when `AIMS_TEST_DATABASE_URL` is set — one run measures:
//!
//! - **baseline**: one event per transaction, appended sequentially with
//!   `Store::append_audit(&[event])`;
//! - **group commit**: N = 1, 16, 64 and 256 concurrent tasks recording a fixed total of events
//!   through one `AuditWriter`, each task awaiting every commit before its next event. On
//!   PostgreSQL the writer commits into the audit queue (`Store::queue_audit`), and the
//!   server's sequencer (`audit_writer::sequence`) runs meanwhile, moving it into the log.
//!
//! The configurations run interleaved in rounds (baseline, 1, 16, 64, 256, then again), so a
//! slow or fast spell of the shared machine lands on all of them rather than on one; each row
//! sums its rounds. After every measurement the whole audit chain is read back page by page and
//! verified, and the record count is asserted, so broken writes cannot pass for fast ones. The
//! result is a Markdown table on stdout (progress and per-round figures go to stderr). The
//! machines are shared and noisy: the claim is the ratio to the baseline measured in the same
//! run, not the bare times.
//!
//! ```text
//! cargo bench -p aims-server --bench audit_commit
//! AIMS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p aims-server --bench audit_commit
//! ```
//!
//! `AIMS_BENCH_GROUP_EVENTS` (a multiple of 4; default 5,000) sets the events of each
//! group-commit configuration, for longer rounds than the default's tens of milliseconds at 256
//! tasks.

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aims_core::audit::{Actor, AuditEvent, ChainHead, Outcome, verify_chain};
use aims_server::audit_writer::{self, AuditWriter};
use aims_server::metrics::Metrics;
use aims_store::{PostgresStore, SqliteStore, Store};
use sqlx::Connection;
use time::OffsetDateTime;

/// The environment variable naming the PostgreSQL database to benchmark.
const DATABASE_URL_VAR: &str = "AIMS_TEST_DATABASE_URL";
/// Concurrent recording tasks in the group-commit configurations.
const CONCURRENCY: [u64; 4] = [1, 16, 64, 256];
/// Sequential appends before the baseline, not timed (connections, statement caches).
const WARMUP_EVENTS: u64 = 20;
/// Records read per page when verifying the chain.
const VERIFY_PAGE: u32 = 1_000;

/// Rounds each configuration is measured in, interleaved with the others.
const ROUNDS: u64 = 4;
/// Events in the baseline, over all rounds. One fsync per event makes it (and group commit with
/// one task) the slow part; these sizes keep a run with both stores under two minutes on 2 cores.
const BASELINE_EVENTS: u64 = 2_000;
/// Events in each group-commit configuration over all rounds, whatever the number of tasks,
/// unless `AIMS_BENCH_GROUP_EVENTS` says otherwise.
const GROUP_EVENTS: u64 = 5_000;
const _: () =
    assert!(BASELINE_EVENTS.is_multiple_of(ROUNDS) && GROUP_EVENTS.is_multiple_of(ROUNDS));

/// The events of each group-commit configuration over all rounds.
fn group_events() -> u64 {
    let Ok(text) = std::env::var("AIMS_BENCH_GROUP_EVENTS") else {
        return GROUP_EVENTS;
    };
    match text.parse::<u64>() {
        Ok(events) if events > 0 && events.is_multiple_of(ROUNDS) => events,
        _ => panic!("AIMS_BENCH_GROUP_EVENTS must be a positive multiple of {ROUNDS}"),
    }
}

/// What one measurement does.
#[derive(Clone, Copy)]
enum Config {
    /// `append_audit(&[event])` in a loop: one transaction, one fsync per event.
    Baseline,
    /// This many tasks recording through one group-commit writer.
    GroupCommit { tasks: u64 },
}

impl Config {
    fn label(self) -> String {
        match self {
            Self::Baseline => "baseline: 1 event per transaction, sequential".to_owned(),
            Self::GroupCommit { tasks: 1 } => "group commit, 1 task".to_owned(),
            Self::GroupCommit { tasks } => format!("group commit, {tasks} tasks"),
        }
    }
}

/// The events, time and commits of one configuration, summed over rounds.
#[derive(Clone, Copy, Default)]
struct Tally {
    events: u64,
    elapsed: Duration,
    commits: u64,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn add(&mut self, other: Tally) {
        self.events += other.events;
        self.elapsed += other.elapsed;
        self.commits += other.commits;
    }
}

/// One row of the table.
struct Row {
    store: &'static str,
    config: Config,
    tally: Tally,
}

#[tokio::main]
async fn main() {
    let mut rows = Vec::new();

    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("bench.db"))
        .await
        .unwrap();
    // Both stores run on a worker task, as the server's requests do.
    rows.extend(tokio::spawn(run("SQLite", Arc::new(sqlite))).await.unwrap());

    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) => {
            let schema = format!("aims_bench_{}", std::process::id());
            let store = PostgresStore::connect_with_schema(&url, &schema)
                .await
                .unwrap_or_else(|e| panic!("cannot use {DATABASE_URL_VAR}: {e}"));
            // Joined before unwrapping, so the schema is dropped even when an assertion fails.
            let outcome = tokio::spawn(run("PostgreSQL", Arc::new(store))).await;
            drop_schema(&url, &schema).await;
            match outcome {
                Ok(measured) => rows.extend(measured),
                Err(e) => match e.try_into_panic() {
                    Ok(payload) => std::panic::resume_unwind(payload),
                    Err(e) => panic!("PostgreSQL benchmark did not finish: {e}"),
                },
            }
        }
        Err(_) => eprintln!("{DATABASE_URL_VAR} is not set: PostgreSQL skipped"),
    }

    print_table(&rows);
}

/// Measures every configuration on `store` in interleaved rounds, verifying the chain after
/// each measurement. The baseline row comes first.
async fn run(store_name: &'static str, store: Arc<dyn Store>) -> Vec<Row> {
    let configs: Vec<Config> = std::iter::once(Config::Baseline)
        .chain(CONCURRENCY.map(|tasks| Config::GroupCommit { tasks }))
        .collect();
    let mut tallies = vec![Tally::default(); configs.len()];

    for _ in 0..WARMUP_EVENTS {
        store.append_audit(&[event()]).await.unwrap();
    }
    let mut expected = WARMUP_EVENTS;

    for round in 1..=ROUNDS {
        for (config, tally) in configs.iter().zip(&mut tallies) {
            let measured = match *config {
                Config::Baseline => baseline(&store, BASELINE_EVENTS / ROUNDS).await,
                Config::GroupCommit { tasks } => {
                    group_commit(&store, tasks, group_events() / ROUNDS).await
                }
            };
            expected += measured.events;
            verify(store.as_ref(), expected).await;
            eprintln!(
                "{store_name} round {round}/{ROUNDS}, {}: {} events in {:.3} s, {:.0} events/s",
                config.label(),
                measured.events,
                measured.elapsed.as_secs_f64(),
                measured.rate(),
            );
            tally.add(measured);
        }
    }

    configs
        .into_iter()
        .zip(tallies)
        .map(|(config, tally)| Row {
            store: store_name,
            config,
            tally,
        })
        .collect()
}

/// Appends `events` events one per transaction, sequentially.
async fn baseline(store: &Arc<dyn Store>, events: u64) -> Tally {
    let start = Instant::now();
    for _ in 0..events {
        store.append_audit(&[event()]).await.unwrap();
    }
    Tally {
        events,
        elapsed: start.elapsed(),
        commits: events,
    }
}

/// Records `events` events from `tasks` concurrent tasks through one new group-commit writer.
async fn group_commit(store: &Arc<dyn Store>, tasks: u64, events: u64) -> Tally {
    let metrics = Arc::new(Metrics::new());
    let (writer, writer_task) = AuditWriter::spawn(store.clone(), metrics.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sequencer = tokio::spawn(audit_writer::sequence(
        store.clone(),
        "audit-commit-bench".to_owned(),
        metrics.clone(),
        stopped,
    ));
    let start = Instant::now();
    let recorders: Vec<_> = (0..tasks)
        .map(|i| {
            let writer = writer.clone();
            let share = share(events, tasks, i);
            tokio::spawn(async move {
                for _ in 0..share {
                    writer.record(event()).await.unwrap();
                }
            })
        })
        .collect();
    for recorder in recorders {
        recorder.await.unwrap();
    }
    let elapsed = start.elapsed();
    stop.send(true).unwrap();
    sequencer.await.unwrap();
    drop(writer);
    writer_task.await.unwrap();

    assert_eq!(
        metrics.audit_events.get(),
        events,
        "events the writer committed"
    );
    assert_eq!(metrics.audit_failures.get(), 0, "failed group commits");
    Tally {
        events,
        elapsed,
        commits: commits(&metrics),
    }
}

/// A minimal event, as a decision or read would record.
fn event() -> AuditEvent {
    AuditEvent::new(
        OffsetDateTime::now_utc(),
        Actor::System,
        "bench.event",
        Outcome::Success,
    )
}

/// Task `i`'s part of `total` events split over `tasks` tasks, remainder to the first ones.
fn share(total: u64, tasks: u64, i: u64) -> u64 {
    total / tasks + u64::from(i < total % tasks)
}

/// Moves what is still queued into the log, reads the whole log back, verifies the hash chain
/// and asserts it holds `expected` records and ends at the store's head.
async fn verify(store: &dyn Store, expected: u64) {
    store.sequence_audit().await.unwrap();
    let mut head = ChainHead::EMPTY;
    loop {
        let page = store.audit_records(head.seq, VERIFY_PAGE).await.unwrap();
        if page.is_empty() {
            break;
        }
        head = verify_chain(head, &page).unwrap_or_else(|e| panic!("audit chain broken: {e}"));
    }
    assert_eq!(head.seq, expected, "audit record count");
    assert_eq!(store.audit_head().await.unwrap(), head, "audit head");
}

/// Group commits the writer made, read from its batch-size histogram.
fn commits(metrics: &Metrics) -> u64 {
    let text = metrics.encode().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("aims_audit_batch_size_count "))
        .unwrap_or_else(|| panic!("no batch count in metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Drops the benchmark's PostgreSQL schema, best effort.
async fn drop_schema(url: &str, schema: &str) {
    let dropped = async {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    if let Err(e) = dropped {
        eprintln!("could not drop benchmark schema {schema}: {e}");
    }
}

/// Prints the Markdown table; each ratio is against its own store's baseline.
fn print_table(rows: &[Row]) {
    println!(
        "| store | configuration | events | seconds | events/s | × baseline | events/commit |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for row in rows {
        // `run` returns each store's baseline first.
        let baseline = rows
            .iter()
            .find(|r| r.store == row.store)
            .map(|r| r.tally.rate())
            .unwrap();
        let tally = row.tally;
        println!(
            "| {} | {} | {} | {:.3} | {:.0} | {:.2} | {:.1} |",
            row.store,
            row.config.label(),
            tally.events,
            tally.elapsed.as_secs_f64(),
            tally.rate(),
            tally.rate() / baseline,
            tally.events as f64 / tally.commits as f64,
        );
    }
}
