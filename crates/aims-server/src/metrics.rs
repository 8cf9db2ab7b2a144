//! Prometheus metrics: request counts by route and status, audit throughput and failures, the
//! store's write transactions (writes per group commit, head-lock hold time), how
//! far this replica has followed the revocation log (to watch replica lag), and what anonymous
//! refusals and rate limits are holding back.
//!
//! Labels never carry caller-supplied values other than the matched route template, so the
//! series count stays bounded.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use aims_store::WriteBatch;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Matched route template, e.g. `/v1/agents/{name}`.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Requests served.
    pub requests: Family<RequestLabels, Counter>,
    /// Audit events committed through the group-commit writer.
    pub audit_events: Counter,
    /// Events per group commit.
    pub audit_batch_size: Histogram,
    /// Group commits that failed (every request in them was refused).
    pub audit_failures: Counter,
    /// The last revocation-log position this replica applied; set when scraped.
    pub revocation_log_position: Gauge<u64, AtomicU64>,
    /// Revoked token ids this replica remembers (until they expire); set when scraped.
    pub revoked_tokens_tracked: Gauge<u64, AtomicU64>,
    /// Anonymous refusals written one by one (a source's first in its window).
    pub anonymous_refusals_written: Counter,
    /// Anonymous refusals counted into their source's summary instead.
    pub anonymous_refusals_counted: Counter,
    /// Requests refused with 429 for their rate.
    pub rate_limited: Counter,
    /// Sources the current refusal window tells apart; set when scraped.
    pub refusal_sources_tracked: Gauge<u64, AtomicU64>,
    /// Sources and credentials that have a rate-limit bucket; set when scraped.
    pub rate_limit_buckets: Gauge<u64, AtomicU64>,
    /// Tokens this replica's verified-token cache holds; set when scraped.
    pub verified_tokens_cached: Gauge<u64, AtomicU64>,
    /// Tokens taken from the verified-token cache instead of verified again since start; set
    /// when scraped.
    pub verified_token_cache_hits: Gauge<u64, AtomicU64>,
    /// 1 while this replica holds the audit sequencer's lease, else 0.
    pub audit_sequencer: Gauge<u64, AtomicU64>,
    /// Leases revoked, expired or left pending by a crash whose database role is not ended yet.
    pub leases_overdue: Gauge<u64, AtomicU64>,
    /// Failed attempts to end a lease's role (an engine unreachable or refusing).
    pub lease_end_failures: Counter,
    /// Entries this replica has integrated into the audit Merkle tree.
    pub audit_tree_size: Gauge<u64, AtomicU64>,
    /// 1 once the stored audit log no longer matches this replica's tree or a signed
    /// checkpoint (the replica is then unready), else 0.
    pub audit_tree_broken: Gauge<u64, AtomicU64>,
    /// Checkpoints this replica signed and stored.
    pub audit_checkpoints: Counter,
    /// Writes per store write transaction (group commit).
    pub store_write_batch_size: Histogram,
    /// How long each store write transaction held the audit-head lock, seconds.
    pub store_write_lock_seconds: Histogram,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aims");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        let audit_events = Counter::default();
        registry.register(
            "audit_events",
            "Audit events committed by the group-commit writer",
            audit_events.clone(),
        );
        let audit_batch_size = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        registry.register(
            "audit_batch_size",
            "Audit events per group commit",
            audit_batch_size.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "audit_commit_failures",
            "Group commits that failed; their requests were refused",
            audit_failures.clone(),
        );
        let revocation_log_position = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "revocation_log_position",
            "Last revocation-log position this replica has applied",
            revocation_log_position.clone(),
        );
        let revoked_tokens_tracked = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "revoked_tokens_tracked",
            "Revoked token ids this replica remembers until they expire",
            revoked_tokens_tracked.clone(),
        );
        let anonymous_refusals_written = Counter::default();
        registry.register(
            "anonymous_refusals_written",
            "Anonymous refusals written one by one (each source's first per window)",
            anonymous_refusals_written.clone(),
        );
        let anonymous_refusals_counted = Counter::default();
        registry.register(
            "anonymous_refusals_counted",
            "Anonymous refusals counted into their source's per-window summary",
            anonymous_refusals_counted.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused with 429 for their rate",
            rate_limited.clone(),
        );
        let refusal_sources_tracked = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "refusal_sources_tracked",
            "Anonymous sources the current refusal window tells apart",
            refusal_sources_tracked.clone(),
        );
        let rate_limit_buckets = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "rate_limit_buckets",
            "Sources and credentials with a rate-limit bucket",
            rate_limit_buckets.clone(),
        );
        let verified_tokens_cached = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "verified_tokens_cached",
            "Tokens whose signature and claims this replica verified and remembers until they expire",
            verified_tokens_cached.clone(),
        );
        let verified_token_cache_hits = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "verified_token_cache_hits",
            "Tokens taken from the verified-token cache instead of verified again, since start",
            verified_token_cache_hits.clone(),
        );
        let audit_sequencer = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "audit_sequencer",
            "1 while this replica holds the lease to move the audit queue into the log, else 0",
            audit_sequencer.clone(),
        );
        let leases_overdue = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "leases_overdue",
            "Leases revoked, expired or left pending by a crash whose database role is not ended yet",
            leases_overdue.clone(),
        );
        let lease_end_failures = Counter::default();
        registry.register(
            "lease_end_failures",
            "Failed attempts to end a lease's database role",
            lease_end_failures.clone(),
        );
        let audit_tree_size = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "audit_tree_size",
            "Entries this replica has integrated into the audit Merkle tree",
            audit_tree_size.clone(),
        );
        let audit_tree_broken = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "audit_tree_broken",
            "1 when the stored audit log does not match the tree or a signed checkpoint",
            audit_tree_broken.clone(),
        );
        let audit_checkpoints = Counter::default();
        registry.register(
            "audit_checkpoints",
            "Audit log checkpoints this replica signed and stored",
            audit_checkpoints.clone(),
        );
        let store_write_batch_size = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]);
        registry.register(
            "store_write_batch_size",
            "Writes that shared one store write transaction (group commit)",
            store_write_batch_size.clone(),
        );
        let store_write_lock_seconds = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]);
        registry.register(
            "store_write_lock_seconds",
            "How long each store write transaction held the audit-head lock",
            store_write_lock_seconds.clone(),
        );
        Self {
            registry,
            store_write_batch_size,
            store_write_lock_seconds,
            leases_overdue,
            lease_end_failures,
            audit_tree_size,
            audit_tree_broken,
            audit_checkpoints,
            anonymous_refusals_written,
            anonymous_refusals_counted,
            rate_limited,
            refusal_sources_tracked,
            rate_limit_buckets,
            verified_tokens_cached,
            verified_token_cache_hits,
            audit_sequencer,
            requests,
            audit_events,
            audit_batch_size,
            audit_failures,
            revocation_log_position,
            revoked_tokens_tracked,
        }
    }

    /// Records one store write transaction as it ended.
    pub fn observe_write(&self, batch: &WriteBatch) {
        self.store_write_batch_size.observe(batch.writes as f64);
        self.store_write_lock_seconds
            .observe(batch.held.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
