//! This replica's in-memory view of what a decision reads about an agent ([`RegistryView`]):
//! every registered agent with its last accepted posture and its principal as Cedar sees it
//! ([`KnownAgent`]), the credentials it has confirmed were issued ([`IssuedCredentials`]), and
//! the resource servers it has authenticated or been asked for ([`KnownResourceServers`]). The
//! decision path and the token endpoint read these instead of the store.
//!
//! A known agent is immutable: a change to its record or posture replaces it in the view. Its
//! principal's Cedar entity (attributes, tags, owner and teams as parents) is built on its first
//! decision against the schema in force and shared by the decisions after it
//! ([`KnownAgent::decide`]); a decision against another schema (a policy push that changed it)
//! builds it again. So an entity is built once per change of the agent, its posture or the
//! schema, and can never be older than the record it was built from. Entities are the largest
//! part of the view (about seven times an agent's own share), so the view keeps a bounded
//! number built ([`RegistryView::decide`], [`ENTITIES_KEPT`]): past the bound it drops all but
//! the one just built, and each is built again by its agent's next decision.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aims_core::agent::{Agent as Registered, LifecycleState, Limits};
use aims_core::credential::CredentialHash;
use aims_core::id::{AgentName, Environment, Owner, TrustDomain};
use aims_policy::{
    Agent, Decision, DecisionRequest, Engine, Posture, PrincipalEntity, RequestError, Schema,
    Toolchain,
};
use aims_store::{
    PostureSnapshot, RegistryCursor, RegistryEntry, ResourceServer, Store, StoreError,
};
use time::OffsetDateTime;
use tokio::sync::{Mutex, watch};

/// Entries read from the change log per query.
const PAGE: u32 = 1000;

/// A registered agent as a decision or an issuance reads it: what the request and its audit
/// event name of its record, its lifecycle state, limits and revision, its last accepted
/// posture's digest and time, and the principal built from record and posture once per change
/// (see the module's documentation). The rest of the record (its posture profile, labels
/// beyond the principal's, description) and of the evidence is not held: nothing on those
/// paths reads it, and the view holds one of these for every agent.
#[derive(Debug)]
pub struct KnownAgent {
    /// Its name.
    pub name: AgentName,
    /// Its one accountable owner.
    pub owner: Owner,
    /// Where it runs.
    pub environment: Environment,
    /// Its lifecycle state.
    pub state: LifecycleState,
    /// Its limits on tokens and delegation.
    pub limits: Limits,
    /// The record's revision: an issuance commits only if the record is still at it.
    pub revision: u64,
    /// Its last accepted posture, if any.
    pub posture: Option<AcceptedPosture>,
    /// The agent as Cedar sees it.
    pub principal: Arc<Agent>,
    /// `principal`'s Cedar entity, built against the schema of the last decision.
    entity: RwLock<Option<Arc<PrincipalEntity>>>,
}

/// What a decision reads of an agent's last accepted posture beside its principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedPosture {
    /// The evidence's digest (`sha256:<hex>`), as named in the identity issued for it.
    pub digest: String,
    /// When it was accepted: a decision's posture age is counted from here.
    pub accepted_at: OffsetDateTime,
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
            name: agent.name,
            owner: agent.owner,
            environment: agent.environment,
            state: agent.state,
            limits: agent.limits,
            revision: agent.revision,
            posture: snapshot.map(|s| AcceptedPosture {
                digest: s.digest,
                accepted_at: s.accepted_at,
            }),
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
        self.decide_noting_build(engine, request).0
    }

    /// As [`Self::decide`], and whether an entity was built (and kept) for it.
    fn decide_noting_build(
        &self,
        engine: &Engine,
        request: &DecisionRequest,
    ) -> (Result<Decision, RequestError>, bool) {
        match self.entity(engine.schema()) {
            Some((entity, built)) => (engine.decide_as(&entity, request), built),
            // The principal does not conform to the schema: `decide` says why.
            None => (engine.decide(request), false),
        }
    }

    /// The principal's entity built against `schema`, if it conforms, and whether it was
    /// built now.
    fn entity(&self, schema: &Schema) -> Option<(Arc<PrincipalEntity>, bool)> {
        let held = self.entity.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(entity) = held.as_ref().filter(|e| e.is_for(schema)) {
            return Some((Arc::clone(entity), false));
        }
        drop(held);
        let built = Arc::new(PrincipalEntity::new(Arc::clone(&self.principal), schema).ok()?);
        *self.entity.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&built));
        Some((built, true))
    }

    /// Drops the entity kept for the next decision; the next one builds it again.
    fn forget_entity(&self) {
        *self.entity.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether an entity is kept for the next decision.
    #[cfg(test)]
    fn holds_entity(&self) -> bool {
        self.entity
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
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

/// Entities a view keeps built: at about 7 KB each (BENCHMARKS.md, "The view slimmed, and its
/// entities bounded"), about 70 MB, whatever the number of agents.
pub const ENTITIES_KEPT: usize = 10_000;

/// The registry view of this replica (see the module's documentation).
pub struct RegistryView {
    trust_domain: TrustDomain,
    learnt: RwLock<Learnt>,
    /// Serializes catch-ups so two never apply pages out of order.
    sync: Mutex<()>,
    max_staleness: Duration,
    /// Entities built by [`Self::decide`] since the view last dropped the others.
    entities_built: AtomicUsize,
    /// How many may be built before the others are dropped.
    entities_kept: usize,
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
            entities_built: AtomicUsize::new(0),
            entities_kept: ENTITIES_KEPT,
        }
    }

    /// The view, keeping at most `kept` entities built instead of [`ENTITIES_KEPT`].
    #[cfg(test)]
    #[must_use]
    fn keeping_entities(mut self, kept: usize) -> Self {
        self.entities_kept = kept;
        self
    }

    /// Decides `request`, which agent `known` makes, with `engine`, as
    /// [`KnownAgent::decide`] does, keeping the entities its agents hold bounded: once more
    /// than the bound have been built, every other agent's is dropped and built again by its
    /// next decision. A busy agent pays one build per round (tens of microseconds); memory stays
    /// at most the bound's worth of entities, plus those built by decisions running while
    /// they are dropped, however many agents decide.
    pub fn decide(
        &self,
        known: &KnownAgent,
        engine: &Engine,
        request: &DecisionRequest,
    ) -> Result<Decision, RequestError> {
        let (decision, built) = known.decide_noting_build(engine, request);
        if built && self.entities_built.fetch_add(1, Ordering::Relaxed) >= self.entities_kept {
            // The one just built stays: it counts as the first of the next round.
            self.entities_built.store(1, Ordering::Relaxed);
            for agent in self.read().agents.values() {
                if !std::ptr::eq(agent.as_ref(), known) {
                    agent.forget_entity();
                }
            }
        }
        decision
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
                learnt.agents.insert(known.name.clone(), known);
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

/// Resource servers this replica has read from the store, by the client credential they
/// authenticated with and by the name a token request targets them with, each remembered for
/// at most the registry poll interval, so an enforcement point asking many questions, or
/// agents asking for many tokens, cost one store read per interval instead of one per request.
/// A removal on this replica forgets them all at once ([`Self::forget_all`]); one on another
/// replica takes effect here once the entry expires, within the poll interval, as a registry
/// change does. A key that matches no resource server is never remembered: it is looked up
/// every time. Bounded: when full, expired entries are dropped, and a key that still does not
/// fit is looked up every time.
pub struct KnownResourceServers {
    held: std::sync::Mutex<HeldResourceServers>,
    ttl: Duration,
    capacity: usize,
}

/// A resource server, and when it was read from the store.
type Held = (ResourceServer, Instant);

#[derive(Default)]
struct HeldResourceServers {
    by_credential: HashMap<CredentialHash, Held>,
    /// By the audience URI or name a token request named.
    by_target: HashMap<String, Held>,
    /// Incremented by every [`KnownResourceServers::forget_all`]: a store read begun before
    /// one is not remembered after it.
    forgotten: u64,
}

impl KnownResourceServers {
    /// An empty set remembering at most `capacity` resource servers by each key, each for
    /// `ttl`.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            held: std::sync::Mutex::new(HeldResourceServers::default()),
            ttl,
            capacity,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HeldResourceServers> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The resource server whose client credential hashes to `credential`: remembered, or
    /// read from `store`.
    pub async fn by_credential(
        &self,
        store: &dyn Store,
        credential: &CredentialHash,
    ) -> Result<Option<ResourceServer>, StoreError> {
        self.remembered(
            |held| &mut held.by_credential,
            credential,
            store.resource_server_by_credential(credential),
        )
        .await
    }

    /// The resource server a token request names as its target, by audience URI or else by
    /// name: remembered, or read from `store`.
    pub async fn by_target(
        &self,
        store: &dyn Store,
        target: &str,
    ) -> Result<Option<ResourceServer>, StoreError> {
        let read = async {
            if let Some(server) = store.resource_server_by_audience(target).await? {
                return Ok(Some(server));
            }
            match aims_core::id::ResourceServerName::new(target) {
                Ok(name) => store.resource_server(&name).await,
                Err(_) => Ok(None),
            }
        };
        self.remembered(|held| &mut held.by_target, &target.to_owned(), read)
            .await
    }

    /// The resource server `table` holds under `key` while fresh, or what `read` finds,
    /// remembered unless it is nothing or a [`Self::forget_all`] came while it read.
    async fn remembered<K: Clone + Eq + std::hash::Hash>(
        &self,
        table: fn(&mut HeldResourceServers) -> &mut HashMap<K, Held>,
        key: &K,
        read: impl Future<Output = Result<Option<ResourceServer>, StoreError>>,
    ) -> Result<Option<ResourceServer>, StoreError> {
        let forgotten = {
            let mut held = self.held();
            if let Some((server, _)) = table(&mut held)
                .get(key)
                .filter(|(_, at)| at.elapsed() < self.ttl)
            {
                return Ok(Some(server.clone()));
            }
            held.forgotten
        };
        let found = read.await?;
        let mut held = self.held();
        let current = held.forgotten == forgotten;
        let entries = table(&mut held);
        match &found {
            Some(server) if current => {
                if entries.len() >= self.capacity {
                    let ttl = self.ttl;
                    entries.retain(|_, (_, at)| at.elapsed() < ttl);
                }
                if entries.len() < self.capacity {
                    entries.insert(key.clone(), (server.clone(), Instant::now()));
                }
            }
            _ => {
                entries.remove(key);
            }
        }
        Ok(found)
    }

    /// Forgets every remembered resource server (one was removed on this replica), and
    /// whatever a store read already under way would have remembered.
    pub fn forget_all(&self) {
        let mut held = self.held();
        held.by_credential.clear();
        held.by_target.clear();
        held.forgotten += 1;
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

#[cfg(test)]
mod tests {
    use aims_core::audit::{Actor, AuditEvent, Outcome, action};
    use aims_core::credential::CredentialHash;
    use aims_policy::{Effect, PolicySource, Resource, ResourceObject, Validation};
    use aims_store::{JoinTokenRecord, SqliteStore};

    use super::*;
    use crate::decisions::{Asked, Question, request_for};

    const AGENTS: usize = 10;
    const KEPT: usize = 3;

    async fn register(store: &SqliteStore, i: usize, now: OffsetDateTime) {
        let name = AgentName::new(format!("agent-{i}")).unwrap();
        let agent = Registered {
            name: name.clone(),
            owner: "alice@acme.example".parse().unwrap(),
            environment: "prod".parse().unwrap(),
            description: String::new(),
            posture_profile: Default::default(),
            limits: Limits::default(),
            labels: [("team".parse().unwrap(), format!("team-{}", i % 2))].into(),
            state: LifecycleState::Active,
            created_at: now,
            updated_at: now,
            recertify_by: now + time::Duration::days(90),
            revision: 1,
        };
        let join = JoinTokenRecord {
            hash: CredentialHash::of(&format!("join-{i}")),
            agent: name,
            expires_at: now + time::Duration::hours(1),
        };
        let event = AuditEvent::new(now, Actor::System, action::AGENT_REGISTER, Outcome::Success);
        store.create_agent(&agent, &join, &event).await.unwrap();
    }

    fn reads(known: &KnownAgent, now: OffsetDateTime) -> DecisionRequest {
        let question = Question {
            action: "read".to_owned(),
            resource: Resource::Object(ResourceObject {
                entity_type: "Resource".to_owned(),
                id: "acme/app".to_owned(),
                system: "github".to_owned(),
                environment: "prod".to_owned(),
                sensitivity: "internal".to_owned(),
                kind: "repository".to_owned(),
                labels: Default::default(),
                parents: Vec::new(),
            }),
            task_id: "task-1".to_owned(),
            intent: "test".to_owned(),
            arguments: Default::default(),
        };
        let asked = Asked {
            at: now,
            source_ip: "127.0.0.1".parse().unwrap(),
        };
        request_for(known, question, asked, None)
    }

    #[tokio::test]
    async fn a_resource_server_is_remembered_for_its_interval_and_forgotten_when_removed() {
        const TTL: Duration = Duration::from_millis(300);
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("aims.db"))
            .await
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let event = |what| AuditEvent::new(now, Actor::System, what, Outcome::Success);
        let server = ResourceServer {
            name: "repo-tools".parse().unwrap(),
            audience: "https://tools.example".to_owned(),
            system: "github".to_owned(),
            environment: "prod".parse().unwrap(),
            sensitivity: "internal".to_owned(),
            created_by: "alice".to_owned(),
            created_at: now,
        };
        let credential = CredentialHash::of("rs-secret");
        let known = KnownResourceServers::new(TTL, 10);
        // By credential, and by the audience and the name a token request targets: each key
        // is remembered and forgotten alike.
        let found = || async {
            let by_credential = known.by_credential(&store, &credential).await.unwrap();
            for target in [server.audience.as_str(), server.name.as_str()] {
                let by_target = known.by_target(&store, target).await.unwrap();
                assert_eq!(by_target, by_credential, "{target}");
            }
            by_credential
        };
        let add = || async {
            let added = event(action::RESOURCE_SERVER_ADD);
            store
                .create_resource_server(&server, &credential, &added)
                .await
                .unwrap();
        };
        let remove = || async {
            let removed = event(action::RESOURCE_SERVER_REMOVE);
            store
                .remove_resource_server(&server.name, &removed)
                .await
                .unwrap();
        };

        assert_eq!(found().await, None);
        add().await;
        // Unknown credentials were not remembered: the registration is seen at once.
        assert_eq!(found().await.map(|s| s.name), Some(server.name.clone()));

        // Removed behind this replica's back (as by another replica): remembered until the
        // interval ends, then refused.
        remove().await;
        assert!(found().await.is_some());
        tokio::time::sleep(TTL).await;
        assert_eq!(found().await, None);

        // Removed on this replica: forgotten at once.
        add().await;
        assert!(found().await.is_some());
        remove().await;
        known.forget_all();
        assert_eq!(found().await, None);
    }

    #[tokio::test]
    async fn the_view_keeps_a_bounded_number_of_entities_and_decides_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("aims.db"))
            .await
            .unwrap();
        let now = OffsetDateTime::now_utc();
        for i in 0..AGENTS {
            register(&store, i, now).await;
        }
        let view = RegistryView::new(
            TrustDomain::new("acme.example").unwrap(),
            Duration::from_secs(60),
        )
        .keeping_entities(KEPT);
        view.catch_up(&store).await.unwrap();
        let engine = Engine::compile(
            Schema::aims().unwrap(),
            &[PolicySource::new(
                "test.cedar",
                r#"permit(principal in Aims::Team::"team-0", action == Aims::Action::"read", resource);"#,
            )],
            Validation::Strict,
        )
        .unwrap();
        let agents: Vec<Arc<KnownAgent>> = (0..AGENTS)
            .map(|i| {
                view.get(&AgentName::new(format!("agent-{i}")).unwrap())
                    .unwrap()
                    .unwrap()
            })
            .collect();
        // Three passes over all agents: entities are dropped and built again many times.
        for (round, known) in agents.iter().cycle().take(3 * AGENTS).enumerate() {
            let request = reads(known, now);
            let decided = view.decide(known, &engine, &request).unwrap();
            assert_eq!(
                decided,
                engine.decide(&request).unwrap(),
                "decision {round}"
            );
            let team = known.principal.teams.first().unwrap();
            let allowed = team == "team-0";
            assert_eq!(decided.effect == Effect::Allow, allowed, "decision {round}");
            let held = agents.iter().filter(|a| a.holds_entity()).count();
            assert!((1..=KEPT).contains(&held), "{held} entities held");
        }
    }
}
