//! Verify throughput of the audit Merkle tree log, client side and without HTTP: for N
//! decision-like entries, (a) the tree alone (leaf hash of every entry's bytes, the compact
//! range, the root), (b) what `aims audit verify --checkpoint` does per entry (chain link and
//! content hash, copied columns against the parsed body, leaf hash, tree), beside
//! `sha256sum` of the same leaf bytes written to a file, in the same run.
//!
//! Run: `cargo bench -p aims-core --bench tlog_verify` (N = 200,000; `TLOG_BENCH_N` to change).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::io::Write as _;
use std::time::Instant;

use aims_core::audit::{Actor, AuditEntry, AuditEvent, AuditRecord, ChainHead, Outcome, action};
use aims_core::tlog::Frontier;
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

fn main() {
    let n: u64 = std::env::var("TLOG_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let all = entries(n);
    let bytes: Vec<Vec<u8>> = all.iter().map(AuditEntry::leaf_bytes).collect();
    let total: usize = bytes.iter().map(Vec::len).sum();

    let started = Instant::now();
    let mut frontier = Frontier::new();
    for b in &bytes {
        frontier.push(aims_core::tlog::leaf_hash(b));
    }
    let root = frontier.root();
    let tree = started.elapsed();

    let started = Instant::now();
    let mut head = ChainHead::EMPTY;
    let mut frontier = Frontier::new();
    for entry in &all {
        head = head.verify_next(&entry.record).unwrap();
        entry.check_columns().unwrap();
        frontier.push(entry.leaf_hash());
    }
    assert_eq!(frontier.root(), root);
    let full = started.elapsed();

    let dir = tempfile_dir();
    let path = dir.join("leaves.bin");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for b in &bytes {
        file.write_all(b).unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    // Warm the page cache, then time.
    let _ = std::fs::read(&path).unwrap();
    let started = Instant::now();
    let status = std::process::Command::new("sha256sum")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let sha = started.elapsed();
    assert!(status.success());
    std::fs::remove_dir_all(&dir).unwrap();

    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    let mb = |d: std::time::Duration| total as f64 / d.as_secs_f64() / 1e6;
    println!(
        "{n} entries, {:.0} bytes each on average, {:.1} MB of leaf bytes",
        total as f64 / n as f64,
        total as f64 / 1e6
    );
    println!(
        "tree only (leaf hash + compact range + root): {:>9.3} s  {:>10.0} entries/s  {:>7.1} MB/s",
        tree.as_secs_f64(),
        rate(tree),
        mb(tree)
    );
    println!(
        "full entry verify (chain + columns + tree):   {:>9.3} s  {:>10.0} entries/s  {:>7.1} MB/s",
        full.as_secs_f64(),
        rate(full),
        mb(full)
    );
    println!(
        "sha256sum of the same leaf bytes:             {:>9.3} s  {:>10.0} entries/s  {:>7.1} MB/s",
        sha.as_secs_f64(),
        rate(sha),
        mb(sha)
    );
}

/// A fresh directory under the system temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aims-tlog-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
