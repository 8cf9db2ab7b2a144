//! The revoked set an enforcement point keeps in memory, built from the revocation log.
//!
//! The log says two kinds of things: a token (by `jti`) is revoked, or — an **epoch** — every
//! token of an agent, or of a task, issued before a moment is revoked. Epochs are written
//! whenever a task, an agent or an owner's agents are revoked, beside the entry of each
//! revoked token the register held, so a token escapes a revocation neither because its
//! register row is missing nor because it was delegated onward: a token is refused when any
//! agent in its delegation chain, or its task, has an epoch later than the token's `iat`.
//!
//! The epoch compares whole seconds and refuses tokens issued *strictly before* the second of
//! the revocation; a token issued within that second is covered by its own log entry (issuance
//! and revocation exclude each other in the store, so a registered token of that second was
//! either revoked with the rest or issued after). Entries are forgotten once nothing they
//! refuse could still verify. Time is always passed in.

use std::collections::HashMap;

use crate::id::{AgentName, SpiffeId};

/// Longest reason given for a revocation (of credentials or of a lease), in characters.
pub const MAX_REASON_LEN: usize = 256;

/// Whether `reason` is acceptable for a revocation: 1–256 characters of visible text.
pub fn is_valid_reason(reason: &str) -> bool {
    !reason.is_empty() && crate::text::is_visible_within(reason, MAX_REASON_LEN)
}

/// What one log entry revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One token, by `jti`.
    Token(String),
    /// Every token an agent held or delegated, issued before the entry's time.
    Agent(AgentName),
    /// Every token of a task issued before the entry's time.
    Task(String),
}

/// One revocation-log entry, as an enforcement point applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it revokes.
    pub revoked: Revoked,
    /// When it was revoked, Unix seconds.
    pub revoked_at: i64,
    /// When it may be forgotten, Unix seconds (the token's expiry, or the epoch's end, plus
    /// the verification leeway).
    pub forget_after: i64,
}

/// What the revoked set needs to know of a presented, verified token.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// Its `jti`.
    pub jti: &'a str,
    /// The agents behind it: its holder and every agent in its delegation chain.
    pub agents: &'a [AgentName],
    /// Its task, if it has one.
    pub task_id: Option<&'a str>,
    /// Its `iat`, Unix seconds.
    pub issued_at: i64,
}

/// The agents named by SPIFFE IDs (a token's holder and delegation chain), for
/// [`Presented::agents`]; a value that is not an agent's SPIFFE ID names nobody.
pub fn agents_of<'a>(spiffe_ids: impl IntoIterator<Item = &'a str>) -> Vec<AgentName> {
    spiffe_ids
        .into_iter()
        .filter_map(|id| SpiffeId::parse(id).ok())
        .map(|id| id.agent().clone())
        .collect()
}

/// An epoch: tokens issued before `not_before` are revoked, until `forget_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Epoch {
    not_before: i64,
    forget_after: i64,
}

impl Epoch {
    fn merge(&mut self, other: Epoch) {
        self.not_before = self.not_before.max(other.not_before);
        self.forget_after = self.forget_after.max(other.forget_after);
    }
}

/// Revoked tokens and epochs, each remembered until it may be forgotten.
#[derive(Debug, Clone, Default)]
pub struct RevokedSet {
    tokens: HashMap<String, i64>,
    agents: HashMap<AgentName, Epoch>,
    tasks: HashMap<String, Epoch>,
}

impl RevokedSet {
    /// Applies `notice` unless it may already be forgotten at `now`.
    pub fn apply(&mut self, notice: &Notice, now: i64) {
        if notice.forget_after < now {
            return;
        }
        let epoch = Epoch {
            not_before: notice.revoked_at,
            forget_after: notice.forget_after,
        };
        match &notice.revoked {
            Revoked::Token(jti) => {
                let known = self
                    .tokens
                    .entry(jti.clone())
                    .or_insert(notice.forget_after);
                *known = (*known).max(notice.forget_after);
            }
            Revoked::Agent(agent) => self
                .agents
                .entry(agent.clone())
                .or_insert(epoch)
                .merge(epoch),
            Revoked::Task(task) => self.tasks.entry(task.clone()).or_insert(epoch).merge(epoch),
        }
    }

    /// Whether `token` is revoked: by its `jti`, or by an epoch of its task or of an agent
    /// behind it that began after it was issued.
    pub fn refuses(&self, token: &Presented<'_>) -> bool {
        let before = |epoch: Option<&Epoch>| epoch.is_some_and(|e| token.issued_at < e.not_before);
        self.tokens.contains_key(token.jti)
            || token
                .agents
                .iter()
                .any(|agent| before(self.agents.get(agent)))
            || token
                .task_id
                .is_some_and(|task| before(self.tasks.get(task)))
    }

    /// Forgets what nothing could be refused by any more at `now`.
    pub fn forget_expired(&mut self, now: i64) {
        self.tokens.retain(|_, forget_after| *forget_after >= now);
        self.agents.retain(|_, epoch| epoch.forget_after >= now);
        self.tasks.retain(|_, epoch| epoch.forget_after >= now);
    }

    /// How many tokens and epochs are remembered.
    pub fn len(&self) -> usize {
        self.tokens.len() + self.agents.len() + self.tasks.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentName {
        AgentName::new(name).unwrap()
    }

    fn notice(revoked: Revoked, revoked_at: i64) -> Notice {
        Notice {
            revoked,
            revoked_at,
            forget_after: revoked_at + 1_000,
        }
    }

    fn token<'a>(jti: &'a str, agents: &'a [AgentName], task: &'a str, iat: i64) -> Presented<'a> {
        Presented {
            jti,
            agents,
            task_id: Some(task),
            issued_at: iat,
        }
    }

    #[test]
    fn a_token_is_refused_by_its_id() {
        let mut set = RevokedSet::default();
        set.apply(&notice(Revoked::Token("t1".into()), 100), 100);
        let holder = [agent("a")];
        assert!(set.refuses(&token("t1", &holder, "task", 90)));
        assert!(!set.refuses(&token("t2", &holder, "task", 90)));
    }

    #[test]
    fn an_agent_epoch_refuses_what_it_held_or_delegated_before() {
        let mut set = RevokedSet::default();
        set.apply(&notice(Revoked::Agent(agent("planner")), 100), 100);
        let own = [agent("planner")];
        let delegated = [agent("executor"), agent("planner")];
        let other = [agent("executor")];
        assert!(set.refuses(&token("x", &own, "t", 99)));
        assert!(
            set.refuses(&token("y", &delegated, "t", 50)),
            "delegated onward"
        );
        assert!(
            !set.refuses(&token("z", &other, "t", 50)),
            "another agent's"
        );
        assert!(
            !set.refuses(&token("w", &own, "t", 100)),
            "the second of the revocation is its entries' to cover"
        );
        assert!(!set.refuses(&token("v", &own, "t", 101)), "issued after");
    }

    #[test]
    fn a_chain_names_its_agents() {
        assert_eq!(
            agents_of([
                "spiffe://acme.example/agent/executor",
                "spiffe://acme.example/agent/planner",
                "not a spiffe id",
            ]),
            [agent("executor"), agent("planner")]
        );
    }

    #[test]
    fn a_task_epoch_refuses_the_task_only() {
        let mut set = RevokedSet::default();
        set.apply(&notice(Revoked::Task("t1".into()), 100), 100);
        let holder = [agent("a")];
        assert!(set.refuses(&token("x", &holder, "t1", 99)));
        assert!(!set.refuses(&token("y", &holder, "t2", 99)));
    }

    #[test]
    fn epochs_keep_their_latest_moment_and_are_forgotten_in_time() {
        let mut set = RevokedSet::default();
        set.apply(&notice(Revoked::Agent(agent("a")), 200), 200);
        set.apply(&notice(Revoked::Agent(agent("a")), 100), 200);
        let holder = [agent("a")];
        assert!(
            set.refuses(&token("x", &holder, "t", 150)),
            "the later epoch holds"
        );
        // Already forgettable: not applied at all.
        set.apply(&notice(Revoked::Token("old".into()), 0), 5_000);
        assert_eq!(set.len(), 1);
        set.forget_expired(1_200);
        assert_eq!(set.len(), 1);
        set.forget_expired(1_201);
        assert!(set.is_empty());
    }
}
