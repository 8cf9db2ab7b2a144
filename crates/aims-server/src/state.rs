//! Shared server state handed to every handler: configuration, store, key ring, audit writer,
//! metrics and the random number generator.

use std::sync::{Arc, RwLock};

use aims_core::audit::{Actor, AuditEvent, Outcome};
use aims_core::credential::{CredentialHash, CredentialKind, format_credential};
use aims_core::id::TrustDomain;
use aims_store::Store;
use aims_token::dpop::ReplayCache;
use aims_token::master::MasterKey;
use aims_token::nonce::NonceKey;
use aims_token::verified::VerifiedTokens;
use ring::rand::{SecureRandom as _, SystemRandom};
use time::OffsetDateTime;

use crate::approval_watch::ApprovalWatch;
use crate::audit_writer::AuditWriter;
use crate::config::Config;
use crate::error::ApiError;
use crate::federation::Federation;
use crate::keyring::{KeyRing, KeyRingError};
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::policy::{self, LoadedPolicy, PolicyHolder};
use crate::readiness::Readiness;
use crate::refusals::{self, Disposition, Origin, RefusalLog};
use crate::registry::{IssuedCredentials, KnownResourceServers, RegistryView};
use crate::revocation::RevocationSet;

/// What attestation nonces are minted for (the MAC key's derivation label).
const ATTESTATION_NONCE_PURPOSE: &str = "aims attestation nonce v1";
/// Most DPoP proofs one replica remembers at once (each for a minute).
const DPOP_REPLAY_CAPACITY: usize = 1_000_000;
/// Most credential ids one replica remembers as issued (each until it expires).
const ISSUED_CREDENTIALS_CAPACITY: usize = 1_000_000;
/// Most resource-server credentials a replica remembers.
const RESOURCE_SERVERS_CAPACITY: usize = 10_000;
/// Verification requests a slow SSF waiter may fall behind by (it then looks anyway).
const SSF_QUEUED_CAPACITY: usize = 64;

/// Cheap-to-clone handle on the server's state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The state itself.
pub struct Inner {
    /// Validated configuration.
    pub config: Config,
    /// Issuer URL (public base URL), without trailing slash.
    pub issuer: String,
    /// The deployment's trust domain.
    pub trust_domain: TrustDomain,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// The group-commit audit writer.
    pub audit: AuditWriter,
    /// The audit log as a Merkle tree log, as this replica has integrated it.
    pub audit_tree: Arc<crate::tlog::AuditTree>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// System randomness.
    pub rng: SystemRandom,
    /// Client for outbound calls to operator-configured destinations (webhooks, third-party
    /// JWKS): bounded timeouts, no redirects.
    pub http: reqwest::Client,
    /// Client for SSF push deliveries: as `http`, and public addresses only unless configured
    /// otherwise ([`crate::outbound`]).
    pub push_http: reqwest::Client,
    /// Trusted third-party issuers for federated attestation.
    pub federation: Federation,
    /// The policy version in force.
    pub policy: PolicyHolder,
    /// What this replica knows is revoked.
    pub revocations: Arc<RevocationSet>,
    /// Wakes this replica's SSF long polls and push workers when a verification event is
    /// queued here (the stream's id). Other replicas find it when they next look.
    pub ssf_queued: tokio::sync::broadcast::Sender<String>,
    /// What this replica knows of the registered agents, for the decision path.
    pub registry: Arc<RegistryView>,
    /// Credentials this replica confirmed were issued.
    pub issued: IssuedCredentials,
    /// Resource servers this replica authenticated, by client credential.
    pub resource_servers: KnownResourceServers,
    /// Wakes waiters on approval requests when one changes.
    pub approval_watch: ApprovalWatch,
    /// DPoP proofs seen by this replica.
    pub dpop_replay: ReplayCache,
    /// Task tokens and SVIDs this replica's enforcement points verified, not verified again
    /// until they expire.
    pub verified_tokens: VerifiedTokens,
    /// Mints and checks this replica's DPoP nonces (a random key of this process, so a
    /// nonce, and a proof carrying it, is good at this replica only).
    pub dpop_nonces: NonceKey,
    /// The last readiness probe's answer.
    pub readiness: Readiness,
    /// Anonymous refusals of the current window.
    pub refusals: RefusalLog,
    /// Rate limits per source and per credential.
    pub limits: RateLimits,
    /// Mints and checks attestation nonces (derived from the master key, so every replica
    /// accepts every replica's nonces).
    pub attestation_nonces: NonceKey,
    master: MasterKey,
    keys: RwLock<Arc<KeyRing>>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Everything [`AppState::new`] needs.
pub struct Parts {
    /// Validated configuration.
    pub config: Config,
    /// Issuer URL.
    pub issuer: String,
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Audit writer.
    pub audit: AuditWriter,
    /// The audit Merkle tree, loaded at start.
    pub audit_tree: Arc<crate::tlog::AuditTree>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Master key.
    pub master: MasterKey,
    /// Key ring loaded at start.
    pub keys: KeyRing,
    /// Outbound clients.
    pub http: crate::outbound::Clients,
    /// The policy holder (empty until the active version is loaded).
    pub policy: PolicyHolder,
    /// This replica's DPoP nonce key.
    pub dpop_nonces: NonceKey,
}

impl AppState {
    /// Moves every event acknowledged so far, by any replica, into the audit log (see
    /// `Store::queue_audit`), so a reader of the log that calls it first sees each decision and
    /// refusal answered before it asked.
    pub async fn audit_sequenced(&self) -> Result<(), ApiError> {
        self.store.sequence_audit().await.map_err(ApiError::from)
    }

    /// A fresh random name for a claim this replica holds in the store (a push stream's, the
    /// audit sequencer's), so two replicas never share one.
    pub fn claim_holder(&self) -> String {
        aims_token::random_id(&self.rng)
            .unwrap_or_else(|_| format!("replica-{}", std::process::id()))
    }

    /// Applies the revocations this replica just committed, so it refuses those credentials
    /// before it answers; the other replicas follow within their poll interval. If the log
    /// cannot be read now, the set goes stale and refuses every token, so failing here is
    /// safe to ignore.
    pub async fn apply_own_revocations(&self) {
        let _ = self.revocations.catch_up(self.store.as_ref()).await;
    }

    /// Applies the registry changes this replica just committed (an agent registered or
    /// changed, a posture accepted), so its next request sees them; the other replicas follow
    /// within their poll interval. If the change log cannot be read now, the view goes stale
    /// and refuses, so failing here is safe to ignore.
    pub async fn apply_own_registry_changes(&self) {
        let _ = self.registry.catch_up(self.store.as_ref()).await;
    }

    /// Assembles the state.
    pub fn new(parts: Parts) -> Self {
        let federation = Federation::new(parts.config.trusted_issuers.clone());
        let revocations = Arc::new(RevocationSet::new(parts.config.revocation_max_staleness));
        let registry = Arc::new(RegistryView::new(
            parts.config.trust_domain.clone(),
            parts.config.revocation_max_staleness,
        ));
        Self(Arc::new(Inner {
            federation,
            revocations,
            ssf_queued: tokio::sync::broadcast::channel(SSF_QUEUED_CAPACITY).0,
            registry,
            issued: IssuedCredentials::new(ISSUED_CREDENTIALS_CAPACITY),
            resource_servers: KnownResourceServers::new(
                parts.config.revocation_poll,
                RESOURCE_SERVERS_CAPACITY,
            ),
            approval_watch: ApprovalWatch::default(),
            dpop_replay: ReplayCache::new(DPOP_REPLAY_CAPACITY),
            verified_tokens: VerifiedTokens::new(aims_token::verified::DEFAULT_CAPACITY),
            dpop_nonces: parts.dpop_nonces,
            readiness: Readiness::default(),
            refusals: RefusalLog::new(parts.config.refusals_written_per_source),
            limits: RateLimits::new(
                parts.config.rate_limit_per_source,
                parts.config.rate_limit_per_credential,
            ),
            attestation_nonces: NonceKey::derived(&parts.master, ATTESTATION_NONCE_PURPOSE),
            policy: parts.policy,
            trust_domain: parts.config.trust_domain.clone(),
            config: parts.config,
            issuer: parts.issuer,
            store: parts.store,
            audit: parts.audit,
            audit_tree: parts.audit_tree,
            metrics: parts.metrics,
            rng: SystemRandom::new(),
            http: parts.http.general,
            push_http: parts.http.push,
            master: parts.master,
            keys: RwLock::new(Arc::new(parts.keys)),
        }))
    }

    /// The key ring in force now.
    pub fn keys(&self) -> Arc<KeyRing> {
        // A poisoned lock only means a writer panicked mid-swap of an `Arc`; the value inside
        // is still a complete ring.
        match self.keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The master key, for sealing new keys.
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Re-reads the key set from the store and swaps it in.
    pub async fn reload_keys(&self) -> Result<(), ApiError> {
        let set = self.store.keys().await?;
        let ring = KeyRing::load(&set, &self.master, &self.rng).map_err(|e: KeyRingError| {
            tracing::error!(error = %e, "key ring reload failed; keeping the previous ring");
            ApiError::internal()
        })?;
        match self.keys.write() {
            Ok(mut guard) => *guard = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(())
    }

    /// Loads the active policy version if it is not the one in force. A version that does not
    /// compile leaves the last good one in force and marks the server unready.
    pub async fn reload_policy(&self) -> Result<(), ApiError> {
        let active = self.store.active_policy_version().await?;
        if active == self.policy.current().version {
            return Ok(());
        }
        let Some(set) = self.store.policy_set(active).await? else {
            self.policy.mark_failed();
            return Err(ApiError::internal());
        };
        match policy::compile(&set.files) {
            Ok(engine) => {
                self.policy.install(LoadedPolicy {
                    version: active,
                    engine,
                });
                Ok(())
            }
            Err(error) => {
                tracing::error!(version = active, %error, "active policy version does not load; keeping the last good one");
                self.policy.mark_failed();
                Err(ApiError::internal())
            }
        }
    }

    /// An audit event stamped now.
    pub fn event(&self, actor: Actor, action: &str, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(OffsetDateTime::now_utc(), actor, action, outcome)
    }

    /// A fresh random credential of `kind` and its hash (the only part stored).
    pub fn new_credential(
        &self,
        kind: CredentialKind,
    ) -> Result<(String, CredentialHash), ApiError> {
        let mut random = [0u8; 32];
        self.rng
            .fill(&mut random)
            .map_err(|_| ApiError::internal())?;
        let token = format_credential(kind, &random);
        let hash = CredentialHash::of(&token);
        Ok((token, hash))
    }

    /// Records the refusal `event` (its `code` set) of a request from `origin`, before the
    /// answer leaves: in full when the actor authenticated; bounded as [`crate::refusals`]
    /// says when it is [`Actor::Anonymous`]. Fails when a record that must be written cannot
    /// be.
    pub async fn record_refusal(
        &self,
        event: AuditEvent,
        origin: &Origin,
        code: &'static str,
    ) -> Result<(), ApiError> {
        if event.actor != Actor::Anonymous {
            return self.audit.record(event).await;
        }
        match self.refusals.admit(origin.source, code) {
            Disposition::Count => {
                self.metrics.anonymous_refusals_counted.inc();
                Ok(())
            }
            Disposition::Write => {
                self.metrics.anonymous_refusals_written.inc();
                self.audit.record(refusals::bounded(event, origin)).await
            }
        }
    }
}
