//! The loop each replica runs to keep one in-memory view in step with a log in the store (the
//! revocation log, the registry's change log): catch up every poll interval until stopped,
//! and log once per outage when the store cannot be read. The view itself decides what a
//! failed catch-up means (each goes stale after its bound and then refuses to answer).

use std::future::Future;
use std::time::Duration;

use aims_store::StoreError;
use tokio::sync::watch;

/// Runs `catch_up` every `every` until `stop`; `what` names the log in the error logged when
/// it cannot be read, and `consequence` says what that means for requests.
pub async fn every<F, Fut>(
    every: Duration,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    consequence: &'static str,
    mut catch_up: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => match catch_up().await {
                Ok(()) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::error!(%error, "cannot read the {what}; {consequence}");
                }
                Err(_) => {}
            },
            _ = stop.changed() => return,
        }
    }
}
