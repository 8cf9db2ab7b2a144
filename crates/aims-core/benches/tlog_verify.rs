//! Verify throughput of the audit Merkle tree log, client side and without HTTP: for N
//! decision-like entries, in pages of 1,000 as `aims audit verify` reads them, (a) the tree
//! alone (leaf hash of every entry's bytes, the compact range, the root), (b) what
//! `aims audit verify --checkpoint` did per entry before `audit::verify_entries` (chain link
//! and content hash, the body parsed as an event once for the chain and once more for the
//! copied columns, the leaf bytes copied and hashed), (c) `audit::verify_entries` on one
//! thread and (d) on every core (the same checks, the body read once), beside (e)
//! `sha256sum` of the same leaf bytes written to a file. The five run interleaved in
//! `TLOG_BENCH_ROUNDS` rounds (3), each round checked against the same root.
//!
//! Run: `cargo bench -p aims-core --bench tlog_verify` (N = 200,000; `TLOG_BENCH_N` to change,
//! `TLOG_BENCH_PAGE` for the page size, `TLOG_BENCH_ROUNDS` for the rounds).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::io::Write as _;
use std::time::{Duration, Instant};

use aims_core::audit::{
    self, Actor, AuditEntry, AuditEvent, AuditRecord, ChainHead, Outcome, action, chain_hash,
    unix_ms,
};
use aims_core::tlog::{self, Frontier, Hash};
use time::OffsetDateTime;

fn entries(n: u64) -> Vec<AuditEntry> {
    let mut head = ChainHead::EMPTY;
    (0..n)
        .map(|i| {
            let time = OffsetDateTime::from_unix_timestamp(1_780_000_000 + i as i64).unwrap();
            let event = AuditEvent::new(
                time,
                Actor::Agent {
                    spiffe_id: format!("spiffe://acme.example/agent/coder-{}", i % 97),
                },
                action::DECISION,
                Outcome::Success,
            )
            .request(Some(format!("req-{i:016x}")))
            .agent(format!("spiffe://acme.example/agent/coder-{}", i % 97))
            .owner("team-a@acme.example")
            .resource(format!("repo/acme/app-{}", i % 13))
            .task(format!("task-{:022}", i / 10))
            .token(format!("tok-{i:022}"))
            .decision("allow", vec!["permit-read-own-repos".to_owned()]);
            let record = AuditRecord::chain(head.seq, head.hash, &event);
            head = ChainHead {
                seq: record.seq,
                hash: record.hash,
            };
            AuditEntry::new(record, &event, Some(format!("{:032x}", i / 8)))
        })
        .collect()
}

/// What the verifier did per entry before `audit::verify_entries`, with the public parts it
/// was made of: `ChainHead::verify_next` (link, content hash, body parsed as an event), then
/// `AuditEntry::check_columns` (the body parsed again, the columns compared), then the leaf
/// bytes built and hashed.
fn previous(head: ChainHead, entry: &AuditEntry) -> (ChainHead, Hash) {
    let r = &entry.record;
    assert_eq!(r.seq, head.seq + 1);
    assert_eq!(r.prev_hash, head.hash);
    assert_eq!(chain_hash(&r.prev_hash, r.seq, &r.body), r.hash);
    assert!(r.event().is_ok());
    let event = r.event().unwrap();
    assert_eq!(entry.time_ms, unix_ms(event.time));
    assert_eq!(entry.action, event.action);
    assert_eq!(entry.agent, event.agent);
    assert_eq!(entry.task_id, event.task_id);
    let next = ChainHead {
        seq: r.seq,
        hash: r.hash,
    };
    (next, tlog::leaf_hash(&entry.leaf_bytes()))
}

/// `audit::verify_entries` page by page on `workers` threads, into a tree; its root.
fn verify(all: &[AuditEntry], page: usize, workers: usize) -> Hash {
    let mut head = ChainHead::EMPTY;
    let mut frontier = Frontier::new();
    for page in all.chunks(page) {
        let verified = audit::verify_entries(head, page, workers);
        assert_eq!(verified.error, None);
        head = verified.head;
        for leaf in verified.leaves {
            frontier.push(leaf);
        }
    }
    frontier.root()
}

fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("TLOG_BENCH_N", 200_000);
    let rounds = env("TLOG_BENCH_ROUNDS", 3);
    // Entries per page, as `aims audit verify` reads them.
    let page = usize::try_from(env("TLOG_BENCH_PAGE", 1000)).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let all = entries(n);
    let bytes: Vec<Vec<u8>> = all.iter().map(AuditEntry::leaf_bytes).collect();
    let total: usize = bytes.iter().map(Vec::len).sum();

    let dir = tempfile_dir();
    let path = dir.join("leaves.bin");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for b in &bytes {
        file.write_all(b).unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    // Warm the page cache.
    let _ = std::fs::read(&path).unwrap();

    println!(
        "{n} entries, {:.0} bytes each on average, {:.1} MB of leaf bytes; {cores} cores; \
         pages of {page}; {rounds} rounds",
        total as f64 / n as f64,
        total as f64 / 1e6
    );
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mb = |d: Duration| total as f64 / d.as_secs_f64() / 1e6;
    for round in 1..=rounds {
        let started = Instant::now();
        let mut frontier = Frontier::new();
        for b in &bytes {
            frontier.push(tlog::leaf_hash(b));
        }
        let root = frontier.root();
        let tree = started.elapsed();

        let started = Instant::now();
        let mut head = ChainHead::EMPTY;
        let mut frontier = Frontier::new();
        for entry in &all {
            let (next, leaf) = previous(head, entry);
            head = next;
            frontier.push(leaf);
        }
        assert_eq!(frontier.root(), root);
        let before = started.elapsed();

        let started = Instant::now();
        assert_eq!(verify(&all, page, 1), root);
        let one = started.elapsed();

        let started = Instant::now();
        assert_eq!(verify(&all, page, cores), root);
        let every = started.elapsed();

        let started = Instant::now();
        let status = std::process::Command::new("sha256sum")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        let sha = started.elapsed();
        assert!(status.success());

        for (name, d) in [
            ("tree only (leaf hash + compact range + root)", tree),
            ("previous full verify (one entry at a time)", before),
            ("verify_entries, 1 thread", one),
            ("verify_entries, every core", every),
            ("sha256sum of the same leaf bytes", sha),
        ] {
            println!(
                "round {round}  {name:<46} {:>7.3} s {:>10.0} entries/s {:>7.1} MB/s  \
                 {:>5.2}x previous  {:>5.2}x sha256sum",
                d.as_secs_f64(),
                rate(d),
                mb(d),
                before.as_secs_f64() / d.as_secs_f64(),
                sha.as_secs_f64() / d.as_secs_f64(),
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory under the system temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aims-tlog-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
