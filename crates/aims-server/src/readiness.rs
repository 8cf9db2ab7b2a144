//! This replica's last readiness answer: `/readyz` probes at most once per [`PROBE_EVERY`]
//! however often it is asked (callers in between get the last answer), so polling it cannot
//! load the store. What is probed is [`crate::routes`]'s business; this module only keeps the
//! answer and lets one probe run at a time.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

/// How long one readiness probe's answer is reused.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// This replica's last readiness answer, and the lock that lets one probe run at a time.
#[derive(Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Report)>>,
}

impl Readiness {
    /// The last answer if it is younger than [`PROBE_EVERY`], else the answer of `probe`,
    /// kept for the next callers.
    pub async fn answer<F, Fut>(&self, probe: F) -> Report
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Report>,
    {
        let mut last = self.last.lock().await;
        match &*last {
            Some((at, report)) if at.elapsed() < PROBE_EVERY => report.clone(),
            _ => {
                let report = probe().await;
                *last = Some((Instant::now(), report.clone()));
                report
            }
        }
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// Whether the store committed a heartbeat.
    pub store: bool,
    /// Whether the audit log can be written.
    pub audit: bool,
    /// Whether the policy in force is loaded.
    pub policy: bool,
    /// Whether the stored audit log matches this replica's Merkle tree and its checkpoints.
    pub audit_tree: bool,
    /// Why the replica is not ready (empty when it is).
    pub reasons: Vec<&'static str>,
    /// Leases revoked, expired or left pending by a crash whose database role is not ended
    /// yet (an engine unreachable or refusing; the reaper retries with backoff). Reported, not
    /// a reason to be unready — `status` stays `ready` (200): the replica still serves, and
    /// the roles expire on their own by `VALID UNTIL`.
    pub leases_overdue: u64,
}
