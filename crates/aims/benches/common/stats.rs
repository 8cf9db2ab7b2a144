//! Latency statistics shared by the benchmarks: nearest-rank percentiles and milliseconds.

use std::time::Duration;

/// Nearest-rank percentile `p` (0..=1) of `values`, sorted or not.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
