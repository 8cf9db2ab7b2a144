//! What this replica knows is revoked: an in-memory [`RevokedSet`] (revoked token ids, and
//! the epochs of revoked agents and tasks) kept in step with the store's revocation log, so
//! enforcement checks cost hash lookups instead of a query.
//!
//! The store's log is ordered by commit; every replica follows it from the position it has
//! seen (`since`), every [`Config::revocation_poll`](crate::config::Config) and at once after
//! a revocation it made itself. New entries are also broadcast to the revocation feed's
//! server-sent-event subscribers. An entry is forgotten once the token it names has expired.
//!
//! Fail closed: if the replica has not caught up with the log within the configured staleness
//! bound (the store is unreachable), [`RevocationSet::check`] refuses every token instead of
//! trusting an old view.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aims_core::revocation::{Notice, Revoked as Refused, RevokedSet};
use aims_store::{Revocation, Revoked, Store, StoreError};
use aims_token::access::AccessClaims;
use time::OffsetDateTime;
use tokio::sync::{Mutex, broadcast, watch};

use aims_token::LEEWAY_S;

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
    /// Revoked tokens and epochs, each until it may be forgotten: its expiry plus the clock
    /// leeway tokens are verified with, so nothing is accepted again in that window.
    revoked: RevokedSet,
    /// The last log position applied.
    cursor: u64,
    /// When the log was last read successfully.
    synced_at: Option<Instant>,
}

impl Known {
    /// Applies log entries: remembers each revocation a verifier could still need.
    fn apply(&mut self, entries: &[Revocation], now: i64) {
        for entry in entries {
            self.cursor = self.cursor.max(entry.seq);
            self.revoked.apply(&notice(entry), now);
        }
    }
}

/// A log entry as the revoked set applies it.
fn notice(entry: &Revocation) -> Notice {
    let revoked = match &entry.revoked {
        Revoked::Credential(jti) => Refused::Token(jti.clone()),
        Revoked::Agent => Refused::Agent(entry.agent.clone()),
        // A task entry always names its task; an empty id matches no token.
        Revoked::Task => Refused::Task(entry.task_id.clone().unwrap_or_default()),
    };
    Notice {
        revoked,
        revoked_at: entry.revoked_at.unix_timestamp(),
        forget_after: entry.expires_at.unix_timestamp().saturating_add(LEEWAY_S),
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

    /// Whether the token with `claims` may be accepted now: not revoked by its id nor by an
    /// epoch, and this replica's view is fresh.
    pub fn check(&self, claims: &AccessClaims) -> Result<(), RevocationCheck> {
        let known = self.read();
        if known
            .synced_at
            .is_none_or(|at| at.elapsed() > self.max_staleness)
        {
            return Err(RevocationCheck::Stale);
        }
        if claims.is_refused_by(&known.revoked) {
            return Err(RevocationCheck::Revoked);
        }
        Ok(())
    }

    /// Refuses token `jti` on this replica until `forget_after` (Unix seconds) without a log
    /// entry: for a token this replica signed but whose issuance did not commit, so it never
    /// went out, and must never be accepted should it leak.
    pub fn refuse_unissued(&self, jti: &str, forget_after: i64) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.write().revoked.apply(
            &Notice {
                revoked: Refused::Token(jti.to_owned()),
                revoked_at: now,
                forget_after: forget_after.saturating_add(LEEWAY_S),
            },
            now,
        );
    }

    /// The last log position this replica applied.
    pub fn cursor(&self) -> u64 {
        self.read().cursor
    }

    /// How many revoked token ids and epochs this replica remembers (each until it expires).
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
            let page = store.revocations_since(cursor, PAGE, None).await?;
            let full = page.len() >= PAGE as usize;
            let now = OffsetDateTime::now_utc().unix_timestamp();
            {
                let mut known = self.write();
                known.apply(&page, now);
                if !full {
                    known.revoked.forget_expired(now);
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

    fn entry(seq: u64, revoked: Revoked, expires_at: i64) -> Revocation {
        let at = |t| OffsetDateTime::from_unix_timestamp(t).unwrap();
        Revocation {
            seq,
            revoked,
            agent: aims_core::id::AgentName::new("a").unwrap(),
            task_id: Some("t".to_owned()),
            audience: None,
            revoked_at: at(500),
            expires_at: at(expires_at),
            reason: "test".to_owned(),
        }
    }

    fn presented<'a>(
        jti: &'a str,
        agents: &'a [aims_core::id::AgentName],
    ) -> aims_core::revocation::Presented<'a> {
        aims_core::revocation::Presented {
            jti,
            agents,
            task_id: None,
            issued_at: 600,
        }
    }

    /// A token is verified with a clock leeway after its `exp`: its revocation must be
    /// remembered at least that long, or it would be accepted again.
    #[test]
    fn revocations_outlive_expiry_by_the_leeway() {
        let mut known = Known::default();
        let token = |jti: &str| Revoked::Credential(jti.to_owned());
        known.apply(
            &[entry(1, token("t1"), 1_000), entry(2, token("old"), 100)],
            1_000 + LEEWAY_S,
        );
        let agents = [aims_core::id::AgentName::new("a").unwrap()];
        assert!(
            known.revoked.refuses(&presented("t1", &agents)),
            "still inside the leeway"
        );
        assert!(
            !known.revoked.refuses(&presented("old", &agents)),
            "no verifier accepts it any more"
        );
        assert_eq!(known.cursor, 2);
        known.revoked.forget_expired(1_000 + LEEWAY_S);
        assert!(known.revoked.refuses(&presented("t1", &agents)));
        known.revoked.forget_expired(1_001 + LEEWAY_S);
        assert!(known.revoked.is_empty());
    }

    #[test]
    fn epoch_entries_refuse_earlier_tokens_of_their_agent() {
        let mut known = Known::default();
        known.apply(&[entry(7, Revoked::Agent, 90_000)], 500);
        let agents = [aims_core::id::AgentName::new("a").unwrap()];
        let earlier = aims_core::revocation::Presented {
            issued_at: 499,
            ..presented("never-logged", &agents)
        };
        assert!(known.revoked.refuses(&earlier));
        assert!(!known.revoked.refuses(&presented("later", &agents)));
    }

    #[test]
    fn a_token_whose_issuance_did_not_commit_is_refused_here() {
        let set = RevocationSet::new(Duration::from_secs(5));
        set.write().synced_at = Some(Instant::now());
        let claims: AccessClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://aims.example", "sub": "s", "aud": "a",
            "client_id": "spiffe://aims.example/agent/a", "scope": "read:x",
            "jti": "signed-not-stored", "iat": 600, "exp": 4_000_000_000i64,
            "task_id": "t", "intent": "i"
        }))
        .unwrap();
        assert_eq!(set.check(&claims), Ok(()));
        set.refuse_unissued("signed-not-stored", claims.exp);
        assert_eq!(set.check(&claims), Err(RevocationCheck::Revoked));
    }

    #[test]
    fn refuses_everything_before_the_first_catch_up() {
        let set = RevocationSet::new(Duration::from_secs(5));
        let claims: AccessClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://aims.example", "sub": "s", "aud": "a",
            "client_id": "spiffe://aims.example/agent/a", "scope": "read:x",
            "jti": "anything", "iat": 600, "exp": 900, "task_id": "t", "intent": "i"
        }))
        .unwrap();
        assert_eq!(set.check(&claims), Err(RevocationCheck::Stale));
    }
}
