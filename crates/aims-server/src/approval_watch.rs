//! Wakes the agents and approvers long-polling an approval request when it changes: at once
//! when this replica changed it, and within the poll interval when another replica did (it
//! follows the store's approvals change counter, as replicas follow the revocation log). No
//! waiter polls the store on its own: each reads its request once per change it is told of.

use std::sync::Arc;
use std::time::Duration;

use aims_core::approval::{ApprovalRequest, ApprovalState};
use aims_core::id::ApprovalId;
use aims_store::Store;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::error::ApiError;

/// Wakes waiters when approval requests change: a counter that moves when this replica
/// changes one, or when the store's change counter moves (another replica changed one).
/// Clones share the counter.
#[derive(Clone)]
pub struct ApprovalWatch {
    sender: Arc<watch::Sender<u64>>,
}

impl Default for ApprovalWatch {
    fn default() -> Self {
        Self {
            sender: Arc::new(watch::channel(0).0),
        }
    }
}

impl ApprovalWatch {
    /// A receiver that sees every later change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    /// This replica changed a request: wake every waiter now.
    pub fn changed(&self) {
        self.sender.send_modify(|seen| *seen = seen.wrapping_add(1));
    }
}

/// Follows the store's approvals change counter every `every` until `stop`, waking waiters
/// when it moves. A store that cannot be read wakes nobody: waiters time out and ask again.
pub async fn follow(
    watch: ApprovalWatch,
    store: Arc<dyn Store>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Ok(version) = store.approvals_version().await {
                    if last.is_some_and(|seen| seen != version) {
                        watch.changed();
                    }
                    last = Some(version);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Waits until request `id` in `store` is no longer pending, or `deadline`: the request as it
/// then stands. `None` if it does not exist.
pub async fn wait_for_answer(
    store: &dyn Store,
    watch: &ApprovalWatch,
    id: &ApprovalId,
    deadline: tokio::time::Instant,
) -> Result<Option<ApprovalRequest>, ApiError> {
    let mut changes = watch.subscribe();
    loop {
        changes.borrow_and_update();
        let Some(request) = store.approval(id).await? else {
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc();
        let state_now = request.state_at(now);
        if state_now != ApprovalState::Pending || tokio::time::Instant::now() >= deadline {
            return Ok(Some(request));
        }
        // Wake at the request's own expiry too, to report it expired.
        let until_expiry = (request.asked.expires_at - now)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let wake = deadline.min(tokio::time::Instant::now() + until_expiry);
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}
