//! `aims audit query` over a large log: a real server on a SQLite store holding
//! `AIMS_BENCH_EVENTS` audit events (default 1,000,000; on tmpfs when `/dev/shm` exists), asked
//! over HTTP for the first page (100 records) of each filter — agent, owner, task, decision,
//! action, resource, policy and a one-hour time range — and, as the baseline in the same run,
//! the same filter answered by reading every record (`SELECT COUNT(*) … WHERE body LIKE`, a
//! full scan of the log, on the same database).
//!
//! The events look like a busy deployment's: 1,000 agents of 100 owners, a task per 20
//! events, half of them decisions (allow, deny, approval_required) each naming one of 200
//! policies, resources from 5,000, times spread over 30 days in log order. Each query
//! is timed five times; the median is reported with how many records it answered and read.
//! The result is a Markdown table on stdout. The machines are shared and noisy: the claim is
//! the ratio to the full scan within one run. Last, the whole log is verified end to end as
//! `aims audit verify` does it (`aims_sdk::tlog::verify_log`: pages over HTTP, every entry
//! checked against the server's signed checkpoints), and its entries/s printed.
//!
//! ```text
//! cargo bench -p aims-server --bench audit_query
//! AIMS_BENCH_EVENTS=20000 cargo bench -p aims-server --bench audit_query   # a quick check
//! ```

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_server::config::{Config, Overrides};
use aims_store::{SqliteStore, Store};
use serde_json::Value;
use time::OffsetDateTime;

const ADMIN: &str = "aims_h_benchadminbenchadminbenchadmin0";
const BATCH: usize = 2_000;
const RUNS: usize = 5;

/// Event `i` of `total`, timed in log order over the 30 days after `start` (after the
/// server's own records, so that times follow the log's order as they do in a real one).
fn event(i: usize, total: usize, start: OffsetDateTime) -> AuditEvent {
    let span = time::Duration::days(30);
    let offset = span * (i as f64 / total as f64);
    let kind = match i % 4 {
        0 | 1 => action::DECISION,
        2 => action::TOKEN_EXCHANGE,
        _ => action::READ,
    };
    let mut e = AuditEvent::new(start + offset, Actor::System, kind, Outcome::Success);
    e.agent = Some(format!(
        "spiffe://bench.example/agent/agent-{:04}",
        i % 1000
    ));
    e.owner = Some(format!("owner-{:02}@acme.example", i % 100));
    e.task_id = Some(format!("task-{:08}", i / 20));
    e.resource = Some(format!("Resource::repo/acme/r{:04}", i % 5000));
    if kind == action::DECISION {
        e.decision = Some(
            match i % 3 {
                0 => "allow",
                1 => "deny",
                _ => "approval_required",
            }
            .to_owned(),
        );
        e.policy_ids = vec![format!("policy-{:03}", i % 200)];
    }
    e
}

/// The median of `RUNS` timings of `GET /v1/audit/query?{query}`, with the last answer's
/// record count and records examined.
async fn time_query(http: &reqwest::Client, base: &str, query: &str) -> (Duration, usize, u64) {
    let mut timings = Vec::new();
    let mut answer = Value::Null;
    for _ in 0..RUNS {
        let started = Instant::now();
        let response = http
            .get(format!("{base}/v1/audit/query?limit=100&{query}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{query}: {}",
            response.status()
        );
        answer = response.json().await.unwrap();
        timings.push(started.elapsed());
    }
    timings.sort();
    let records = answer["records"].as_array().unwrap().len();
    (
        timings[RUNS / 2],
        records,
        answer["examined"].as_u64().unwrap(),
    )
}

/// The median of `RUNS` timings of `sql` (a full scan) on the database at `url`, and its
/// count.
async fn time_scan(url: &str, sql: &str) -> (Duration, i64) {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let mut timings = Vec::new();
    let mut count = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        count = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        timings.push(started.elapsed());
    }
    pool.close().await;
    timings.sort();
    (timings[RUNS / 2], count)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn run(total: usize) {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let path = dir.path().join("aims.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_owned()),
        trust_domain: Some("bench.example".into()),
        ..Overrides::default()
    };
    let env: HashMap<String, String> =
        [("AIMS_BOOTSTRAP_TOKEN".to_owned(), ADMIN.to_owned())].into();
    let config = Config::load_with(&overrides, &|k| env.get(k).cloned()).unwrap();
    let server =
        aims_server::server::start_with_store(config, store.clone(), &|k| env.get(k).cloned())
            .await
            .unwrap();
    let base = server.base_url.clone();

    let now = OffsetDateTime::now_utc();
    let started = Instant::now();
    for first in (0..total).step_by(BATCH) {
        let events: Vec<AuditEvent> = (first..(first + BATCH).min(total))
            .map(|i| event(i, total, now))
            .collect();
        store.append_audit(&events).await.unwrap();
    }
    eprintln!(
        "filled {total} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let rfc = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let middle = now + time::Duration::days(15);
    let range = format!(
        "since={}&until={}",
        rfc(middle),
        rfc(middle + time::Duration::hours(1))
    );
    let (since_ms, until_ms) = (
        (middle.unix_timestamp_nanos() / 1_000_000) as i64,
        ((middle + time::Duration::hours(1)).unix_timestamp_nanos() / 1_000_000) as i64,
    );
    let cases: Vec<(&str, String, String)> = vec![
        (
            "agent",
            "agent=agent-0007".to_owned(),
            "body LIKE '%\"agent\":\"spiffe://bench.example/agent/agent-0007\"%'".to_owned(),
        ),
        (
            "owner",
            "owner=owner-07%40acme.example".to_owned(),
            "body LIKE '%\"owner\":\"owner-07@acme.example\"%'".to_owned(),
        ),
        (
            "task",
            format!("task=task-{:08}", total / 40),
            format!("body LIKE '%\"task_id\":\"task-{:08}\"%'", total / 40),
        ),
        (
            "decision",
            "decision=deny".to_owned(),
            "body LIKE '%\"decision\":\"deny\"%'".to_owned(),
        ),
        (
            "action",
            "action=token.exchange".to_owned(),
            "body LIKE '%\"action\":\"token.exchange\"%'".to_owned(),
        ),
        (
            "resource",
            "resource=repo/acme/r0042".to_owned(),
            "body LIKE '%repo/acme/r0042%'".to_owned(),
        ),
        (
            "policy",
            "policy=policy-040".to_owned(),
            "body LIKE '%\"policy-040\"%'".to_owned(),
        ),
        (
            "time range (1 hour)",
            range,
            // `+` keeps SQLite off the time index: the baseline reads every record.
            format!("+time_ms >= {since_ms} AND +time_ms < {until_ms}"),
        ),
    ];
    let http = reqwest::Client::new();
    let url = format!("sqlite://{}", path.display());
    let (all_ms, all) = time_scan(&url, "SELECT COUNT(*) FROM audit_log").await;
    println!(
        "{total} events (+{} of the server's own); SELECT COUNT(*) FROM audit_log: {} ms\n",
        all - total as i64,
        ms(all_ms)
    );
    println!(
        "| filter | records answered (page of 100) | records read | HTTP query ms (median of {RUNS}) | full scan ms, same filter | matches in the log | full scan ÷ query |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, query, filter) in cases {
        let (query_time, answered, examined) = time_query(&http, &base, &query).await;
        let (scan_time, matches) = time_scan(
            &url,
            &format!("SELECT COUNT(*) FROM audit_log WHERE {filter}"),
        )
        .await;
        println!(
            "| {name} | {answered} | {examined} | {} | {} | {matches} | {:.0}× |",
            ms(query_time),
            ms(scan_time),
            scan_time.as_secs_f64() / query_time.as_secs_f64().max(1e-9)
        );
    }
    // What `aims audit verify` does, end to end: every entry read over HTTP in pages and
    // checked (chain, columns, tree) against the signed checkpoints the server holds.
    let admin = aims_sdk::AdminClient::new(&base, Some(ADMIN.to_owned())).unwrap();
    let started = Instant::now();
    let report = aims_sdk::tlog::verify_log(&admin, None, None)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    // The queries above were audited too, so the log has grown since it was counted.
    assert!(
        i64::try_from(report.entries).unwrap() >= all,
        "every entry verified"
    );
    println!(
        "\n`aims audit verify` end to end (`aims_sdk::tlog::verify_log` over HTTP): {} entries in {:.2} s, \
         {:.0} entries/s; checkpoints matched: {}",
        report.entries,
        took.as_secs_f64(),
        report.entries as f64 / took.as_secs_f64(),
        report.checkpoints_matched.len()
    );
    server.shutdown();
    server.wait().await.unwrap();
}

fn main() {
    let total = std::env::var("AIMS_BENCH_EVENTS")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .expect("AIMS_BENCH_EVENTS is a whole number")
        })
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(total));
}
