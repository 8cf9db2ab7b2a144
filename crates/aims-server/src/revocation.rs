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
//! bound (the store is unreachable), [`RevocationSet::with_view`] shows no set at all, and the
//! checks that use it refuse every token instead of trusting an old view.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aims_core::revocation::{Notice, Revoked as Refused, RevokedSet};
use aims_store::{Revocation, Revoked, Store, StoreError};
use time::OffsetDateTime;
use tokio::sync::{Mutex, broadcast, watch};

use aims_token::LEEWAY_S;

/// Entries read from the log per query.
const PAGE: u32 = 1000;
/// How many feed entries a slow subscriber may fall behind before it must resume by `since`.
const FEED_BUFFER: usize = 4096;

/// What this replica has learnt from the revocation log.
#[derive(Default)]
struct Learnt {
    /// Revoked tokens and epochs, each until it may be forgotten: its expiry plus the clock
    /// leeway tokens are verified with, so nothing is accepted again in that window.
    revoked: RevokedSet,
    /// The last log position applied.
    cursor: u64,
    /// When the log was last read successfully.
    synced_at: Option<Instant>,
}

impl Learnt {
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
    learnt: RwLock<Learnt>,
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
            learnt: RwLock::new(Learnt::default()),
            sync: Mutex::new(()),
            feed,
            max_staleness,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Learnt> {
        self.learnt.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Learnt> {
        self.learnt.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `use_set` with the revoked set, or with `None` when this replica has not caught
    /// up with the log within the staleness bound (the set is then too old to trust).
    pub fn with_view<R>(&self, use_set: impl FnOnce(Option<&RevokedSet>) -> R) -> R {
        let learnt = self.read();
        let fresh = learnt
            .synced_at
            .is_some_and(|at| at.elapsed() <= self.max_staleness);
        use_set(fresh.then_some(&learnt.revoked))
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
                let mut learnt = self.write();
                learnt.apply(&page, now);
                if !full {
                    learnt.revoked.forget_expired(now);
                    learnt.synced_at = Some(Instant::now());
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

/// Follows the log until `stop`, catching up every `every` ([`crate::follow::every`]): when
/// the store cannot be read the set goes stale and refuses tokens.
pub async fn follow(
    set: Arc<RevocationSet>,
    store: Arc<dyn Store>,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    crate::follow::every(
        every,
        stop,
        "revocation log",
        "tokens are refused until it can",
        || set.catch_up(store.as_ref()),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use aims_token::access::AccessClaims;

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
            txn: None,
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
        let mut learnt = Learnt::default();
        let token = |jti: &str| Revoked::Credential(jti.to_owned());
        learnt.apply(
            &[entry(1, token("t1"), 1_000), entry(2, token("old"), 100)],
            1_000 + LEEWAY_S,
        );
        let agents = [aims_core::id::AgentName::new("a").unwrap()];
        assert!(
            learnt.revoked.refuses(&presented("t1", &agents)),
            "still inside the leeway"
        );
        assert!(
            !learnt.revoked.refuses(&presented("old", &agents)),
            "no verifier accepts it any more"
        );
        assert_eq!(learnt.cursor, 2);
        learnt.revoked.forget_expired(1_000 + LEEWAY_S);
        assert!(learnt.revoked.refuses(&presented("t1", &agents)));
        learnt.revoked.forget_expired(1_001 + LEEWAY_S);
        assert!(learnt.revoked.is_empty());
    }

    #[test]
    fn epoch_entries_refuse_earlier_tokens_of_their_agent() {
        let mut learnt = Learnt::default();
        learnt.apply(&[entry(7, Revoked::Agent, 90_000)], 500);
        let agents = [aims_core::id::AgentName::new("a").unwrap()];
        let earlier = aims_core::revocation::Presented {
            issued_at: 499,
            ..presented("never-logged", &agents)
        };
        assert!(learnt.revoked.refuses(&earlier));
        assert!(!learnt.revoked.refuses(&presented("later", &agents)));
    }

    /// Whether the replica accepts a token with `claims` now.
    fn accepts(set: &RevocationSet, claims: &AccessClaims) -> Option<bool> {
        set.with_view(|revoked| revoked.map(|r| !claims.is_refused_by(r)))
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
        assert_eq!(accepts(&set, &claims), Some(true));
        set.refuse_unissued("signed-not-stored", claims.exp);
        assert_eq!(accepts(&set, &claims), Some(false));
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
        assert_eq!(accepts(&set, &claims), None, "no view to trust");
    }
}
