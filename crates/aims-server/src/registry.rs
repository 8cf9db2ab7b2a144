//! This replica's in-memory view of what a decision reads about an agent ([`RegistryView`]):
//! every registered agent with its last accepted posture and its principal as Cedar sees it
//! ([`KnownAgent`]), and the credentials it has confirmed were issued ([`IssuedCredentials`]).
//! The decision path reads these instead of the store.
//!
//! A known agent is immutable: a change to its record or posture replaces it in the view. Its
//! principal's Cedar entity (attributes, tags, owner and teams as parents) is built on its first
//! decision against the schema in force and shared by the decisions after it
//! ([`KnownAgent::decide`]); a decision against another schema (a policy push that changed it)
//! builds it again. So an entity is built once per change of the agent, its posture or the
//! schema, and can never be older than the record it was built from.
//!
//! The view is loaded at start and kept current from the store's registry change log
//! ([`aims_store::Store::registry_changes`]), in the revocation set's manner: every
//! [`Config::revocation_poll`](crate::config::Config) ([`follow`]), and at once after a change
//! this replica made itself ([`crate::state::AppState::apply_own_registry_changes`]), so its next
//! request sees the change and the other replicas see it within their poll interval.
//!
//! Fail closed: a view that has not caught up within
//! [`Config::revocation_max_staleness`](crate::config::Config) answers nothing
//! ([`ViewStale`]), and requests that need it are refused with 503 rather than decided on an
//! old record. An agent the view does not hold yet (registered on another replica since the
//! last poll) is read from the store, not remembered: only the change log fills the view.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aims_core::agent::Agent as Registered;
use aims_core::id::{AgentName, TrustDomain};
use aims_policy::{
    Agent, Decision, DecisionRequest, Engine, Posture, PrincipalEntity, RequestError, Schema,
    Toolchain,
};
use aims_store::{PostureSnapshot, RegistryCursor, RegistryEntry, Store, StoreError};
use tokio::sync::{Mutex, watch};

/// Entries read from the change log per query.
const PAGE: u32 = 1000;

/// A registered agent as a decision reads it: its record, its last accepted posture, and the
/// principal built from both once per change (see the module's documentation).
#[derive(Debug)]
pub struct KnownAgent {
    /// Its registry record.
    pub agent: Registered,
    /// Its last accepted posture, if any.
    pub snapshot: Option<PostureSnapshot>,
    /// The agent as Cedar sees it.
    pub principal: Arc<Agent>,
    /// `principal`'s Cedar entity, built against the schema of the last decision.
    entity: RwLock<Option<Arc<PrincipalEntity>>>,
}

impl KnownAgent {
    /// The agent `agent` of `trust_domain` with its last accepted posture `snapshot`.
    pub fn new(
        trust_domain: &TrustDomain,
        agent: Registered,
        snapshot: Option<PostureSnapshot>,
    ) -> Self {
        let principal = Arc::new(principal_of(trust_domain, &agent, snapshot.as_ref()));
        Self {
            agent,
            snapshot,
            principal,
            entity: RwLock::new(None),
        }
    }

    /// Decides `request`, which this agent makes, with `engine`: its principal's entity is the
    /// one built for `engine`'s schema by an earlier decision, or built now and kept for the
    /// next. The same decision as `engine.decide(request)`.
    pub fn decide(
        &self,
        engine: &Engine,
        request: &DecisionRequest,
    ) -> Result<Decision, RequestError> {
        match self.entity(engine.schema()) {
            Some(entity) => engine.decide_as(&entity, request),
            // The principal does not conform to the schema: `decide` says why.
            None => engine.decide(request),
        }
    }

    /// The principal's entity built against `schema`, if it conforms.
    fn entity(&self, schema: &Schema) -> Option<Arc<PrincipalEntity>> {
        let held = self.entity.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(entity) = held.as_ref().filter(|e| e.is_for(schema)) {
            return Some(Arc::clone(entity));
        }
        drop(held);
        let built = Arc::new(PrincipalEntity::new(Arc::clone(&self.principal), schema).ok()?);
        *self.entity.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&built));
        Some(built)
    }
}

/// An agent as Cedar sees it: its registry record and last accepted posture, never anything a
/// caller says about it.
fn principal_of(
    trust_domain: &TrustDomain,
    agent: &Registered,
    snapshot: Option<&PostureSnapshot>,
) -> Agent {
    let evidence = snapshot.map(|s| &s.evidence);
    let text = |value: Option<&String>| value.cloned().unwrap_or_default();
    let label = |key: &'static str| {
        agent
            .labels
            .iter()
            .filter(move |(k, _)| k.as_str() == key)
            .map(|(_, v)| v.clone())
    };
    Agent {
        name: agent.name.to_string(),
        spiffe_id: agent.spiffe_id(trust_domain).to_string(),
        owner: agent.owner.to_string(),
        teams: label("team").collect(),
        environment: agent.environment.to_string(),
        state: agent.state.to_string(),
        trust_level: label("trust_level")
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        model: text(evidence.and_then(|e| e.model.id.as_ref())),
        toolchain: Toolchain {
            framework: text(evidence.and_then(|e| e.toolchain.name.as_ref())),
            version: text(evidence.and_then(|e| e.toolchain.version.as_ref())),
            manifest_digest: evidence.and_then(|e| e.toolchain.manifest_digest.clone()),
        },
        posture: Posture {
            identity_verified: snapshot.is_some(),
            runtime_checks_passed: snapshot.is_some() && agent.state.may_hold_credentials(),
            model_digest: evidence.and_then(|e| e.model.digest.clone()),
            image_digest: evidence.and_then(|e| e.deployment.image_digest.clone()),
        },
        labels: agent
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// The view has not caught up with the change log within its staleness bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the registry view is stale; refusing")]
pub struct ViewStale;

/// What this replica has learnt from the change log.
#[derive(Default)]
struct Learnt {
    agents: HashMap<AgentName, Arc<KnownAgent>>,
    cursor: RegistryCursor,
    /// When the log was last read to its end.
    synced_at: Option<Instant>,
}

/// The registry view of this replica (see the module's documentation).
pub struct RegistryView {
    trust_domain: TrustDomain,
    learnt: RwLock<Learnt>,
    /// Serializes catch-ups so two never apply pages out of order.
    sync: Mutex<()>,
    max_staleness: Duration,
}

impl RegistryView {
    /// An empty view of `trust_domain`'s agents that answers nothing until its first
    /// catch-up.
    pub fn new(trust_domain: TrustDomain, max_staleness: Duration) -> Self {
        Self {
            trust_domain,
            learnt: RwLock::new(Learnt::default()),
            sync: Mutex::new(()),
            max_staleness,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Learnt> {
        self.learnt.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Agent `name` as the view holds it (`None`: the view does not hold it), or
    /// [`ViewStale`].
    pub fn get(&self, name: &AgentName) -> Result<Option<Arc<KnownAgent>>, ViewStale> {
        let learnt = self.read();
        let fresh = learnt
            .synced_at
            .is_some_and(|at| at.elapsed() <= self.max_staleness);
        if !fresh {
            return Err(ViewStale);
        }
        Ok(learnt.agents.get(name).cloned())
    }

    /// Agent `name` from the view, or read from `store` when the view does not hold it yet.
    /// `Ok(None)`: no such agent.
    pub async fn agent(
        &self,
        store: &dyn Store,
        name: &AgentName,
    ) -> Result<Option<Arc<KnownAgent>>, LookupError> {
        if let Some(known) = self.get(name)? {
            return Ok(Some(known));
        }
        let Some(agent) = store.agent(name).await? else {
            return Ok(None);
        };
        let snapshot = store.posture_snapshot(name).await?;
        Ok(Some(Arc::new(KnownAgent::new(
            &self.trust_domain,
            agent,
            snapshot,
        ))))
    }

    /// How many agents the view holds.
    pub fn len(&self) -> usize {
        self.read().agents.len()
    }

    /// Whether the view holds no agent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads every change after the cursor and applies it.
    pub async fn catch_up(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _one_at_a_time = self.sync.lock().await;
        loop {
            let cursor = self.read().cursor.clone();
            let page = store.registry_changes(&cursor, PAGE).await?;
            let full = page.len() >= PAGE as usize;
            // Built outside the lock: requests keep reading the view meanwhile.
            let changed: Vec<(RegistryCursor, Arc<KnownAgent>)> = page
                .into_iter()
                .map(|entry: RegistryEntry| {
                    let next = entry.cursor();
                    let known = KnownAgent::new(&self.trust_domain, entry.agent, entry.snapshot);
                    (next, Arc::new(known))
                })
                .collect();
            let mut learnt = self.learnt.write().unwrap_or_else(PoisonError::into_inner);
            for (next, known) in changed {
                learnt.cursor = next;
                learnt.agents.insert(known.agent.name.clone(), known);
            }
            if !full {
                learnt.synced_at = Some(Instant::now());
                return Ok(());
            }
        }
    }
}

/// Credentials this replica has read from the store as issued and live, by id, each until it
/// expires: a token whose issuance was confirmed once is not looked up again. Revocation is not
/// this set's business: every revoked credential is in the revocation log, which the revoked
/// set follows and the authentication checks first. Bounded: when full, expired ids are
/// dropped (at most once a second), and an id that still does not fit is looked up every time.
pub struct IssuedCredentials {
    confirmed: std::sync::Mutex<Confirmed>,
    capacity: usize,
}

#[derive(Default)]
struct Confirmed {
    /// Expiry (Unix seconds) by credential id.
    ids: HashMap<String, i64>,
    /// When expired ids were last dropped (Unix seconds).
    last_purge: i64,
}

impl IssuedCredentials {
    /// An empty set of at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            confirmed: std::sync::Mutex::new(Confirmed::default()),
            capacity,
        }
    }

    fn confirmed(&self) -> std::sync::MutexGuard<'_, Confirmed> {
        self.confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether credential `id` was issued and, when it was not seen before, is not revoked in
    /// `store`, at `now` (Unix seconds).
    pub async fn confirm(&self, store: &dyn Store, id: &str, now: i64) -> Result<bool, StoreError> {
        if self
            .confirmed()
            .ids
            .get(id)
            .is_some_and(|expires| *expires > now)
        {
            return Ok(true);
        }
        let Some(credential) = store.issued_credential(id).await? else {
            return Ok(false);
        };
        if credential.revoked_at.is_some() {
            return Ok(false);
        }
        let expires = credential.expires_at.unix_timestamp();
        let mut confirmed = self.confirmed();
        if confirmed.ids.len() >= self.capacity && confirmed.last_purge < now {
            confirmed.ids.retain(|_, expires| *expires > now);
            confirmed.last_purge = now;
        }
        if confirmed.ids.len() < self.capacity {
            confirmed.ids.insert(id.to_owned(), expires);
        }
        Ok(true)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.confirmed().ids.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why an agent could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The view is stale.
    #[error(transparent)]
    Stale(#[from] ViewStale),
    /// The store could not be read for an agent the view does not hold.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Follows the change log until `stop`, catching up every `every`: when the store cannot be
/// read the view goes stale and requests that need it are refused.
pub async fn follow(
    view: Arc<RegistryView>,
    store: Arc<dyn Store>,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    crate::follow::every(
        every,
        stop,
        "registry change log",
        "agents' requests are refused until it can",
        || view.catch_up(store.as_ref()),
    )
    .await;
}
