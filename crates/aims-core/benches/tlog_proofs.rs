//! Proof generation latency of the audit Merkle tree log, in memory and without HTTP: for
//! trees of random leaf hashes, p50/p99 of inclusion and consistency proof generation from the
//! tile hashes (`TiledTree`, logarithmic) beside the reference that hashes every subtree from
//! its leaves (linear), in the same run, on the same requests. Every reference proof is also
//! checked equal to the fast one.
//!
//! Run: `cargo bench -p aims-core --bench tlog_proofs` (sizes 10^4, 10^5, 10^6;
//! `TLOG_PROOF_BENCH_SIZES=10000,50000` to change). Per size: 10,000 fast proofs of each kind;
//! the reference, at seconds per proof for the largest trees, on the first
//! `clamp(10^7 / size, 50, 200)` of the same requests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::time::{Duration, Instant};

use aims_core::tiles::TiledTree;
use aims_core::tlog::{self, Hash, TreeError};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Fast proofs measured per size and kind.
const FAST_SAMPLES: usize = 10_000;

/// Uniform-enough random numbers below `bound` (`bound > 0`), from the system generator.
struct Draw {
    rng: SystemRandom,
}

impl Draw {
    fn below(&self, bound: u64) -> u64 {
        let mut bytes = [0u8; 8];
        self.rng.fill(&mut bytes).unwrap();
        u64::from_le_bytes(bytes) % bound
    }
}

/// `p`-th percentile (0–100) of `samples`, sorted in place.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort_unstable();
    let at = (samples.len() * p / 100).min(samples.len() - 1);
    samples[at]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times `f` once per request.
fn time<R>(requests: &[(u64, u64)], mut f: impl FnMut(u64, u64) -> R) -> Vec<Duration> {
    requests
        .iter()
        .map(|&(a, b)| {
            let started = Instant::now();
            std::hint::black_box(f(a, b));
            started.elapsed()
        })
        .collect()
}

/// Times the fast and the reference proofs of one kind on the same requests (the reference on
/// the first `reference_samples`), checks they agree, and prints a table row.
fn measure(
    (kind, size): (&str, u64),
    requests: &[(u64, u64)],
    reference_samples: usize,
    fast: impl Fn(u64, u64) -> Result<Vec<Hash>, TreeError>,
    reference: impl Fn(u64, u64) -> Result<Vec<Hash>, TreeError>,
) {
    let mut fast_times = time(requests, |a, b| fast(a, b).unwrap());
    let checked = &requests[..reference_samples.min(requests.len())];
    let mut reference_times = time(checked, |a, b| reference(a, b).unwrap());
    for &(a, b) in checked {
        assert_eq!(fast(a, b), reference(a, b), "{kind} {a} {b}");
    }
    let fast_p50 = percentile(&mut fast_times, 50);
    let fast_p99 = percentile(&mut fast_times, 99);
    let ref_p50 = percentile(&mut reference_times, 50);
    let ref_p99 = percentile(&mut reference_times, 99);
    println!(
        "| {size} | {kind} | {} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.0}× | {:.0}× |",
        fast_times.len(),
        micros(fast_p50),
        micros(fast_p99),
        reference_times.len(),
        micros(ref_p50),
        micros(ref_p99),
        ref_p50.as_secs_f64() / fast_p50.as_secs_f64(),
        ref_p99.as_secs_f64() / fast_p99.as_secs_f64(),
    );
}

fn bench(size: u64, draw: &Draw) {
    let mut leaves: Vec<Hash> = vec![[0u8; 32]; usize::try_from(size).unwrap()];
    for leaf in &mut leaves {
        draw.rng.fill(leaf).unwrap();
    }
    let mut tree = TiledTree::new();
    for leaf in &leaves {
        tree.push(*leaf);
    }
    let reference_samples = usize::try_from((10_000_000 / size).clamp(50, 200)).unwrap();

    // Inclusion: a random tree size, a random leaf inside it.
    let inclusion: Vec<(u64, u64)> = (0..FAST_SAMPLES)
        .map(|_| {
            let tree_size = 1 + draw.below(size);
            (draw.below(tree_size), tree_size)
        })
        .collect();
    measure(
        ("inclusion", size),
        &inclusion,
        reference_samples,
        |index, tree_size| tlog::inclusion_proof_over(&tree, index, tree_size),
        |index, tree_size| tlog::inclusion_proof(&leaves, index, tree_size),
    );

    // Consistency: two random sizes, the smaller first.
    let consistency: Vec<(u64, u64)> = (0..FAST_SAMPLES)
        .map(|_| {
            let second = 1 + draw.below(size);
            (1 + draw.below(second), second)
        })
        .collect();
    measure(
        ("consistency", size),
        &consistency,
        reference_samples,
        |first, second| tlog::consistency_proof_over(&tree, first, second),
        |first, second| tlog::consistency_proof(&leaves, first, second),
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::var("TLOG_PROOF_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    assert!(sizes.iter().all(|s| *s > 0), "sizes must be positive");
    let draw = Draw {
        rng: SystemRandom::new(),
    };
    println!(
        "| leaves | proof | fast n | fast p50 µs | fast p99 µs | reference n | reference p50 µs | reference p99 µs | p50 ratio | p99 ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for size in sizes {
        bench(size, &draw);
    }
}
