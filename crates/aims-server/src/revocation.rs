//! What this replica knows is revoked: an in-memory set of revoked token ids kept in step with
//! the store's revocation log, so enforcement checks cost a hash lookup instead of a query.
//!
//! The store's log is ordered by commit; every replica follows it from the position it has
//! seen (`since`), every [`Config::revocation_poll`](crate::config::Config) and at once after
//! a revocation it made itself. New entries are also broadcast to the revocation feed's
//! server-sent-event subscribers. An entry is forgotten once the token it names has expired.
//!
//! Fail closed: if the replica has not caught up with the log within the configured staleness
//! bound (the store is unreachable), [`RevocationSet::check`] refuses every token instead of
//! trusting an old view.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aims_store::{Revocation, Store, StoreError};
use time::OffsetDateTime;
use tokio::sync::{Mutex, broadcast, watch};

use crate::svid::LEEWAY_S;

/// Entries read from the log per query.
const PAGE: u32 = 1000;
/// How many feed entries a slow subscriber may fall behind before it must resume by `since`.
const FEED_BUFFER: usize = 4096;

/// Why a token cannot be accepted by the revocation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevocationCheck {
    /// The token (or one it derives from) was revoked.
    #[error("the token has been revoked")]
    Revoked,
    /// This replica has not seen the revocation log recently enough to tell.
    #[error("revocation state is stale; refusing")]
    Stale,
}

#[derive(Default)]
struct Known {
    /// Revoked `jti` → when it may be forgotten (Unix seconds): its expiry plus the clock
    /// leeway tokens are verified with, so it is never accepted again in that window.
    revoked: HashMap<String, i64>,
    /// The last log position applied.
    cursor: u64,
    /// When the log was last read successfully.
    synced_at: Option<Instant>,
}

impl Known {
    /// Applies log entries: remembers each revoked credential a verifier could still accept.
    fn apply(&mut self, entries: &[Revocation], now: i64) {
        for entry in entries {
            self.cursor = self.cursor.max(entry.seq);
            let forget_after = entry.expires_at.unix_timestamp().saturating_add(LEEWAY_S);
            if forget_after >= now {
                self.revoked.insert(entry.credential.clone(), forget_after);
            }
        }
    }

    /// Forgets revoked credentials no verifier accepts any more.
    fn forget_expired(&mut self, now: i64) {
        self.revoked.retain(|_, forget_after| *forget_after >= now);
    }
}

/// The revoked-token set of this replica, and the feed it publishes.
pub struct RevocationSet {
    known: RwLock<Known>,
    /// Serializes catch-ups so two never apply the same page twice.
    sync: Mutex<()>,
    feed: broadcast::Sender<Revocation>,
    max_staleness: Duration,
}

impl RevocationSet {
    /// An empty set that refuses everything until its first catch-up.
    pub fn new(max_staleness: Duration) -> Self {
        let (feed, _) = broadcast::channel(FEED_BUFFER);
        Self {
            known: RwLock::new(Known::default()),
            sync: Mutex::new(()),
            feed,
            max_staleness,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.known.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a token with id `jti` may be accepted now.
    pub fn check(&self, jti: &str) -> Result<(), RevocationCheck> {
        let known = self.read();
        if known
            .synced_at
            .is_none_or(|at| at.elapsed() > self.max_staleness)
        {
            return Err(RevocationCheck::Stale);
        }
        if known.revoked.contains_key(jti) {
            return Err(RevocationCheck::Revoked);
        }
        Ok(())
    }

    /// The last log position this replica applied.
    pub fn cursor(&self) -> u64 {
        self.read().cursor
    }

    /// How many revoked token ids this replica remembers (each until it expires).
    pub fn tracked(&self) -> usize {
        self.read().revoked.len()
    }

    /// Subscribes to entries applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.feed.subscribe()
    }

    /// Reads every log entry after the cursor and applies it; forgets expired entries.
    pub async fn catch_up(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _one_at_a_time = self.sync.lock().await;
        loop {
            let cursor = self.cursor();
            let page = store.revocations_since(cursor, PAGE).await?;
            let full = page.len() >= PAGE as usize;
            let now = OffsetDateTime::now_utc().unix_timestamp();
            {
                let mut known = self.write();
                known.apply(&page, now);
                if !full {
                    known.forget_expired(now);
                    known.synced_at = Some(Instant::now());
                }
            }
            for entry in page {
                // No subscriber is fine: the feed is best effort, `since` is the contract.
                let _ = self.feed.send(entry);
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Follows the log until `stop`: catches up every `every`, and logs (once per outage) when
/// the store cannot be read — the set then goes stale and refuses tokens.
pub async fn follow(
    set: Arc<RevocationSet>,
    store: Arc<dyn Store>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => match set.catch_up(store.as_ref()).await {
                Ok(()) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::error!(%error, "cannot read the revocation log; tokens are refused until it can");
                }
                Err(_) => {}
            },
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, jti: &str, expires_at: i64) -> Revocation {
        let at = |t| OffsetDateTime::from_unix_timestamp(t).unwrap();
        Revocation {
            seq,
            credential: jti.to_owned(),
            agent: aims_core::id::AgentName::new("a").unwrap(),
            task_id: None,
            revoked_at: at(0),
            expires_at: at(expires_at),
            reason: "test".to_owned(),
        }
    }

    /// A token is verified with a clock leeway after its `exp`: its revocation must be
    /// remembered at least that long, or it would be accepted again.
    #[test]
    fn revocations_outlive_expiry_by_the_leeway() {
        let mut known = Known::default();
        known.apply(
            &[entry(1, "t1", 1_000), entry(2, "old", 100)],
            1_000 + LEEWAY_S,
        );
        assert!(known.revoked.contains_key("t1"), "still inside the leeway");
        assert!(
            !known.revoked.contains_key("old"),
            "no verifier accepts it any more"
        );
        assert_eq!(known.cursor, 2);
        known.forget_expired(1_000 + LEEWAY_S);
        assert!(known.revoked.contains_key("t1"));
        known.forget_expired(1_001 + LEEWAY_S);
        assert!(known.revoked.is_empty());
    }

    #[test]
    fn refuses_everything_before_the_first_catch_up() {
        let set = RevocationSet::new(Duration::from_secs(5));
        assert_eq!(set.check("anything"), Err(RevocationCheck::Stale));
    }
}
