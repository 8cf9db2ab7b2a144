//! The group-commit audit writer: one task that makes every waiting event durable in one store
//! transaction (`Store::queue_audit`), then answers each waiting request; and the sequencer
//! ([`sequence`]), which moves what was queued into the chained log.
//!
//! A request that records an event waits until its batch is durably committed; if the commit
//! fails, or the writer is gone, the request gets an error and must not answer success (fail
//! closed). Batches form naturally: whatever queues up while one commit runs goes into the next.
//! On PostgreSQL a batch is durable once queued, without the audit head's lock that state
//! changes hold; it enters the log at the next write
//! transaction that takes that lock, at the next read of the log, or at the sequencer's next
//! turn ([`SEQUENCE_EVERY`]), whichever comes first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aims_core::audit::AuditEvent;
use aims_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Most events in one group commit.
const MAX_BATCH: usize = 256;
/// Most events waiting for a commit before `record` waits for room (backpressure).
const QUEUE_DEPTH: usize = 4096;
/// How often the sequencer moves what any replica queued into the log. Not after every batch:
/// each turn takes the audit head's lock, which every write needs, and writes and reads of
/// the log sequence by themselves.
pub const SEQUENCE_EVERY: Duration = Duration::from_millis(100);

struct Job {
    event: AuditEvent,
    done: oneshot::Sender<Result<(), ApiError>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    jobs: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
}

impl AuditWriter {
    /// Starts the writer task on `store`. The task ends when every handle is dropped.
    pub fn spawn(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> (Self, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let healthy = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(run(store, queue, healthy.clone(), metrics));
        (Self { jobs, healthy }, task)
    }

    /// Records `event` and returns once it is durably committed.
    pub async fn record(&self, event: AuditEvent) -> Result<(), ApiError> {
        let (done, committed) = oneshot::channel();
        self.jobs
            .send(Job { event, done })
            .await
            .map_err(|_| ApiError::audit_unavailable())?;
        committed
            .await
            .unwrap_or_else(|_| Err(ApiError::audit_unavailable()))
    }

    /// Whether the last group commit succeeded and the writer is running.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.jobs.is_closed()
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut queue: mpsc::Receiver<Job>,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (events, waiters): (Vec<AuditEvent>, Vec<oneshot::Sender<Result<(), ApiError>>>) =
            jobs.drain(..).map(|job| (job.event, job.done)).unzip();
        let committed = match store.queue_audit(&events).await {
            Ok(()) => {
                metrics.audit_events.inc_by(events.len() as u64);
                metrics.audit_batch_size.observe(events.len() as f64);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, events = events.len(), "audit group commit failed; refusing the requests");
                metrics.audit_failures.inc();
                Err(match error {
                    // The caller learns why: storage is low, not the log broken.
                    StoreError::LowSpace { .. } => ApiError::from_store(error),
                    _ => ApiError::audit_unavailable(),
                })
            }
        };
        healthy.store(committed.is_ok(), Ordering::Relaxed);
        for waiter in waiters {
            // A waiter that went away (client disconnected) needs no answer.
            let _ = waiter.send(committed.clone());
        }
    }
}

/// Moves the events any replica queued into the log every [`SEQUENCE_EVERY`] while this
/// replica (`holder`) holds the deployment's sequencer lease, until `stop`. The lease is
/// claimed or renewed every [`SEQUENCER_RENEW_EVERY`] for [`SEQUENCER_LEASE`], so one replica
/// takes the head lock on this schedule, not all of them, and another takes over once a
/// holder stops renewing. A failure is retried at the next turn: the events stay durable in
/// the queue meanwhile (and any replica's next read of the log or state change sequences
/// them).
pub async fn sequence(
    store: Arc<dyn Store>,
    holder: String,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SEQUENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease = Lease::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if !lease.held(store.as_ref(), &holder).await {
            metrics.audit_sequencer.set(0);
            continue;
        }
        metrics.audit_sequencer.set(1);
        if let Err(error) = store.sequence_audit().await {
            tracing::warn!(%error, "moving queued audit events into the log failed; retrying");
        }
    }
}

/// How long a claim of the sequencer's lease lasts.
pub const SEQUENCER_LEASE: Duration = Duration::from_secs(2);
/// How often the lease is claimed or renewed: several times within [`SEQUENCER_LEASE`], so
/// a holder keeps it through a slow or failed renewal.
pub const SEQUENCER_RENEW_EVERY: Duration = Duration::from_millis(500);

/// This replica's view of the sequencer's lease.
#[derive(Default)]
struct Lease {
    /// Until when this replica holds it, by its own clock, counted from before it asked.
    until: Option<std::time::Instant>,
    /// When it last asked.
    asked: Option<std::time::Instant>,
}

impl Lease {
    /// Whether `holder` holds the lease now, claiming or renewing it when due.
    async fn held(&mut self, store: &dyn Store, holder: &str) -> bool {
        let now = std::time::Instant::now();
        if self
            .asked
            .is_none_or(|asked| now >= asked + SEQUENCER_RENEW_EVERY)
        {
            self.asked = Some(now);
            let wall = time::OffsetDateTime::now_utc();
            match store
                .claim_sequencer(holder, wall, wall + SEQUENCER_LEASE)
                .await
            {
                Ok(true) => self.until = Some(now + SEQUENCER_LEASE),
                Ok(false) => self.until = None,
                Err(error) => {
                    tracing::warn!(%error, "claiming the audit sequencer's lease failed; retrying")
                }
            }
        }
        self.until.is_some_and(|until| now < until)
    }
}
