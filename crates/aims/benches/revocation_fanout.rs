//! Revocation fan-out: a root task token with many delegated descendants (10,000 by default)
//! is revoked on one replica while the other serves unrelated decisions. Measured: the time
//! until every replica refuses all of them, and how much the unrelated traffic slows meanwhile.
//!
//! Two `aims server` processes share one PostgreSQL database. Per repeat, a planner obtains a
//! root task token from replica 0 and delegates it to an executor N times (16 concurrent
//! requests spread over both replicas), and the database is vacuumed and analyzed (as
//! autovacuum would have; this machine's PostgreSQL runs without it). Background callers then ask replica 1 for decisions
//! with an unrelated task token, and the root is revoked on replica 0 (`POST /v1/revocations`,
//! which answers once the whole closure is durable and replica 0 has applied it). Replica 1's
//! `aims_revocation_log_position` gauge is read every 2 ms from the request on, until it
//! reaches the position replica 0 reports after the acknowledgement. Finally every child is
//! checked to be refused by replica 1 as revoked (verification, reported apart).
//!
//! Baselines in the same run, on replica 1 with no revocation running: the loopback round trip
//! (`GET /healthz`), the probe's round trip (`GET /metrics`) and a decision round trip.
//! The only assertions on time are sanity bounds (propagation within 30 s).
//!
//! ```text
//! AIMS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p aims --bench revocation_fanout
//! ```
//!
//! `AIMS_FANOUT_CHILDREN` (default 10000) sets N, `AIMS_FANOUT_REPEATS` (default 3) the number
//! of roots revoked. Delegated tokens live at most five minutes (the starter policy's cap), so
//! creating the children and sweeping them must fit in that.

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

#[allow(
    dead_code,
    reason = "the benchmark uses part of the shared test harness"
)]
#[path = "../tests/it/process.rs"]
mod process;
#[allow(
    dead_code,
    reason = "the benchmark uses part of the shared test harness"
)]
#[path = "../tests/it/replica_kit.rs"]
mod replica_kit;
#[path = "common/stats.rs"]
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use replica_kit::{Agent, Deployment, database_url, jti};
use stats::{ms, percentile};
use tokio::task::JoinSet;

/// Concurrent requests while delegating the children and while sweeping them.
const CONCURRENCY: usize = 16;
/// Sequential round trips per baseline.
const ROUND_TRIPS: usize = 300;
/// Concurrent callers of the background traffic on replica 1.
const BACKGROUND_CALLERS: usize = 4;
/// How long the background traffic runs before each revocation (the "before" window).
const BEFORE: Duration = Duration::from_secs(1);
/// Interval between two reads of replica 1's log position.
const POLL: Duration = Duration::from_millis(2);
/// Sanity bound on propagation; beyond it the bench stops.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A positive count from the environment variable `name`, or `default`.
fn count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name} must be a positive integer, not {value:?}")),
        Err(_) => default,
    }
}

/// One background decision: when it was sent and when its answer arrived.
#[derive(Clone, Copy)]
struct Call {
    sent: Instant,
    answered: Instant,
}

impl Call {
    fn latency(&self) -> Duration {
        self.answered - self.sent
    }
}

/// What one repeat measured.
struct Repeat {
    /// Children delegated per second.
    delegation_rate: f64,
    /// Credentials the revocation revoked (the root and its children).
    revoked: u64,
    /// From the revocation request to its acknowledgement.
    ack: Duration,
    /// From the revocation request to replica 1 having applied every entry.
    applied: Duration,
    /// How long the sweep that checked every child is refused took.
    sweep: Duration,
}

/// `n` children of `root`, delegated by `planner` to `executor` with [`CONCURRENCY`]
/// requests in flight, alternating replicas.
async fn delegate_children(
    deployment: &Arc<Deployment>,
    root: &str,
    planner: &Agent,
    executor: &Agent,
    n: usize,
) -> Vec<String> {
    let mut workers = JoinSet::new();
    for worker in 0..CONCURRENCY {
        let share = n / CONCURRENCY + usize::from(worker < n % CONCURRENCY);
        let (deployment, root) = (deployment.clone(), root.to_owned());
        let (planner, executor) = (planner.clone(), executor.clone());
        workers.spawn(async move {
            let mut children = Vec::with_capacity(share);
            for _ in 0..share {
                children.push(
                    deployment
                        .at(worker % 2)
                        .delegate(&root, &planner, &executor)
                        .await,
                );
            }
            children
        });
    }
    let mut children = Vec::with_capacity(n);
    while let Some(share) = workers.join_next().await {
        children.extend(share.unwrap());
    }
    children
}

/// Asks replica 1 with every child, [`CONCURRENCY`] at a time; each must be refused (401)
/// because it is revoked, not for any other reason (an expired child would be).
async fn sweep(deployment: &Arc<Deployment>, executor: &Agent, children: Vec<String>) {
    let mut workers = JoinSet::new();
    for share in children.chunks(children.len().div_ceil(CONCURRENCY)) {
        let (deployment, executor, share) = (deployment.clone(), executor.clone(), share.to_vec());
        workers.spawn(async move {
            for child in share {
                let (status, body) = deployment.at(1).decision(&executor, &child).await;
                let reason = body["message"].as_str().unwrap_or_default();
                assert!(
                    status == 401 && reason.contains("revoked"),
                    "a child was not refused as revoked by replica 1: {status} {body}"
                );
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
}

/// Decisions on replica 1 with `token` (unrelated to any revocation) by
/// [`BACKGROUND_CALLERS`] callers until `stop`; each must be allowed.
fn background(
    deployment: &Arc<Deployment>,
    agent: &Agent,
    token: &str,
    stop: &Arc<AtomicBool>,
) -> JoinSet<Vec<Call>> {
    let mut callers = JoinSet::new();
    for _ in 0..BACKGROUND_CALLERS {
        let (deployment, agent, token) = (deployment.clone(), agent.clone(), token.to_owned());
        let stop = stop.clone();
        callers.spawn(async move {
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let (status, body) = deployment.at(1).decision(&agent, &token).await;
                assert_eq!(status, 200, "unrelated traffic refused: {body}");
                calls.push(Call {
                    sent,
                    answered: Instant::now(),
                });
            }
            calls
        });
    }
    callers
}

/// Reads replica 1's log position every [`POLL`] until it reaches `target` (unknown, i.e.
/// `u64::MAX`, until the revocation is acknowledged); returns when it was first seen there.
async fn applied_on_replica_1(deployment: Arc<Deployment>, target: Arc<AtomicU64>) -> Instant {
    let started = Instant::now();
    let mut seen: Vec<(Instant, u64)> = Vec::new();
    loop {
        let position = deployment.at(1).log_position().await;
        seen.push((Instant::now(), position));
        let target = target.load(Ordering::SeqCst);
        // Positions only grow: the first reading at the target is when it was reached.
        if let Some((at, _)) = seen.iter().find(|(_, position)| *position >= target) {
            return *at;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "replica 1 did not apply the revocation within {TIMEOUT:?}: at {position}, target {target}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Sequential round trips: `call` `ROUND_TRIPS` times.
async fn round_trips<F, Fut>(mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        call().await;
        times.push(started.elapsed());
    }
    times
}

/// `VACUUM ANALYZE` of the deployment's database: what autovacuum would have done by then on a
/// server that runs it (this machine's PostgreSQL runs without), so the planner knows the
/// tables' sizes and each repeat starts on tables without the previous repeats' dead rows.
async fn vacuum(database_url: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::var("AIMS_TEST_DATABASE_URL").is_err() {
        println!("skipped: set AIMS_TEST_DATABASE_URL to a PostgreSQL database");
        return;
    }
    let children_per_root = count("AIMS_FANOUT_CHILDREN", 10_000);
    let repeats = count("AIMS_FANOUT_REPEATS", 3);
    let database = database_url().await;
    let deployment = Arc::new(Deployment::start(&database).await);
    let planner = deployment.at(0).planner().await;
    let second = deployment.replicas[1].url.clone();

    let healthz = round_trips(|| async {
        let status = deployment
            .http
            .get(format!("{second}/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    })
    .await;
    let scrapes = round_trips(|| async {
        deployment.at(1).log_position().await;
    })
    .await;
    let live = deployment.at(0).exchange(&planner).await;
    let decisions = round_trips(|| async {
        let (status, body) = deployment.at(1).decision(&planner, &live).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
    let rtt = percentile(&healthz, 0.5);

    let mut measured = Vec::with_capacity(repeats);
    let (mut before, mut during) = (Vec::new(), Vec::new());
    for repeat in 1..=repeats {
        // Fresh identities each repeat: a task token lives no longer than the identity it was
        // obtained with, and a long run outlives the first ones.
        let planner = deployment
            .at(0)
            .agent(&format!("planner-{repeat}"), "planner")
            .await;
        let executor = deployment
            .at(0)
            .agent(&format!("executor-{repeat}"), "executor")
            .await;
        let root = deployment.at(0).exchange(&planner).await;
        let created = Instant::now();
        let children =
            delegate_children(&deployment, &root, &planner, &executor, children_per_root).await;
        let delegation_rate = children.len() as f64 / created.elapsed().as_secs_f64();
        eprintln!(
            "repeat {repeat}: {children_per_root} children delegated ({delegation_rate:.0}/s)"
        );

        vacuum(&database).await;
        let unrelated = deployment.at(1).exchange(&planner).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut callers = background(&deployment, &planner, &unrelated, &stop);
        tokio::time::sleep(BEFORE).await;

        let position_before = deployment.at(0).log_position().await;
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let requested = Instant::now();
        let watcher = tokio::spawn(applied_on_replica_1(deployment.clone(), target.clone()));
        let revoked = deployment.at(0).revoke_token(&jti(&root)).await;
        let acknowledged = Instant::now();
        assert_eq!(
            revoked,
            children_per_root as u64 + 1,
            "the root and every child"
        );
        let position = deployment.at(0).log_position().await;
        assert!(
            position > position_before,
            "replica 0 applied its revocation"
        );
        target.store(position, Ordering::SeqCst);
        let applied = watcher.await.unwrap();
        stop.store(true, Ordering::Relaxed);

        while let Some(calls) = callers.join_next().await {
            for call in calls.unwrap() {
                if call.answered <= requested && call.sent >= requested - BEFORE {
                    before.push(call.latency());
                } else if call.sent < applied && call.answered > requested {
                    during.push(call.latency());
                }
            }
        }

        let swept = Instant::now();
        sweep(&deployment, &executor, children).await;
        let sweep_time = swept.elapsed();
        eprintln!("repeat {repeat}: revoked and swept");
        measured.push(Repeat {
            delegation_rate,
            revoked,
            ack: acknowledged - requested,
            applied: applied.saturating_duration_since(requested),
            sweep: sweep_time,
        });
    }

    report(
        &healthz, &scrapes, &decisions, rtt, &measured, &before, &during,
    );
}

/// Prints the tables.
fn report(
    healthz: &[Duration],
    scrapes: &[Duration],
    decisions: &[Duration],
    rtt: Duration,
    measured: &[Repeat],
    before: &[Duration],
    during: &[Duration],
) {
    let ratio = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
    println!("baselines on replica 1, no revocation running:");
    println!();
    println!("| baseline | samples | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (name, times) in [
        ("loopback round trip (`GET /healthz`)", healthz),
        ("log position probe (`GET /metrics`)", scrapes),
        ("decision round trip, sequential", decisions),
    ] {
        println!(
            "| {name} | {} | {:.2} | {:.2} |",
            times.len(),
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.99)),
        );
    }
    println!();
    println!(
        "fan-out: a root and its {} delegated children revoked on replica 0; times from the \
         revocation request (ratios to the loopback round trip, {:.3} ms):",
        measured.first().map_or(0, |r| r.revoked.saturating_sub(1)),
        ms(rtt)
    );
    println!();
    println!(
        "| repeat | children delegated/s | revoked | acknowledged ms | ÷ RTT | replica 1 \
         applied all ms | ÷ RTT | applied − acknowledged ms | every replica refuses all ms | sweep: \
         all refused on replica 1, s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in measured.iter().enumerate() {
        let every = r.ack.max(r.applied);
        println!(
            "| {} | {:.0} | {} | {:.1} | {:.0}× | {:.1} | {:.0}× | {:.1} | {:.1} | {:.1} |",
            i + 1,
            r.delegation_rate,
            r.revoked,
            ms(r.ack),
            ratio(r.ack),
            ms(r.applied),
            ratio(r.applied),
            ms(r.applied) - ms(r.ack),
            ms(every),
            r.sweep.as_secs_f64(),
        );
    }
    let max = |f: fn(&Repeat) -> Duration| measured.iter().map(f).max().unwrap_or_default();
    let (ack, applied) = (max(|r| r.ack), max(|r| r.applied));
    let after_ack = measured
        .iter()
        .map(|r| ms(r.applied) - ms(r.ack))
        .fold(f64::NEG_INFINITY, f64::max);
    let every = max(|r| r.ack.max(r.applied));
    let sweep = max(|r| r.sweep);
    println!(
        "| max of {} | | | {:.1} | {:.0}× | {:.1} | {:.0}× | {:.1} | {:.1} | {:.1} |",
        measured.len(),
        ms(ack),
        ratio(ack),
        ms(applied),
        ratio(applied),
        after_ack,
        ms(every),
        sweep.as_secs_f64(),
    );
    println!();
    println!(
        "background: {BACKGROUND_CALLERS} callers asking replica 1 for decisions with an \
         unrelated task token, pooled over the repeats:"
    );
    println!();
    println!("| window | decisions | p50 ms | p99 ms | max ms | p50 ÷ before | p99 ÷ before |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (before_p50, before_p99) = (percentile(before, 0.5), percentile(before, 0.99));
    for (name, times) in [
        ("before: the second before each revocation", before),
        (
            "during: from the revocation request until replica 1 applied all",
            during,
        ),
    ] {
        let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            times.len(),
            ms(p50),
            ms(p99),
            ms(*times.iter().max().unwrap()),
            p50.as_secs_f64() / before_p50.as_secs_f64(),
            p99.as_secs_f64() / before_p99.as_secs_f64(),
        );
    }
}
