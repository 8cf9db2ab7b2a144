//! Offline verification of task tokens inside a tool server (a policy enforcement point that
//! is not the AIMS gateway).
//!
//! [`VerifierState`] is the whole decision, without IO: the signing keys by `kid`, the revoked
//! set (token ids, and the epochs of revoked agents and tasks: `aims_core::revocation`, the
//! same rules the server applies), when the revocation feed last caught up, and a DPoP
//! replay cache. Its
//! [`VerifierState::check`] takes the `Authorization` and `DPoP` headers of one request and
//! either returns the token's claims or says which check failed ([`VerifyError`]; never the
//! token). The checks are `aims_token::authn`'s, the one copy every AIMS enforcement point
//! runs (the server, this verifier, the gateway); this module feeds it what it trusts.
//!
//! [`Verifier`] wraps a state with the network: it fetches the JWKS (again when a token names
//! an unknown `kid`, at most once per [`JWKS_REFETCH_MIN_INTERVAL`]), polls the revocation feed
//! every `poll_interval`, and refuses every token when the feed has not caught up within
//! `max_staleness` (fail closed). It does not decide whether a call is allowed: that is the
//! token's scope and the decision endpoint's job.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use aims_api::oauth::{RevocationEntry, RevocationPage};
use aims_core::id::ResourceServerName;
use aims_core::revocation::RevokedSet;
use aims_token::TokenError;
use aims_token::access::AccessClaims;
use aims_token::authn::{self, Authenticated, Presented, Refusal, Rules};
use aims_token::dpop::ReplayCache;
use aims_token::jws::{Alg, VerifyingKey};
use aims_token::verified::{self, VerifiedTokens};
use reqwest::header::{AUTHORIZATION, HeaderMap};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::SdkError;
use crate::oauth::{DPOP, TokenClient};

/// Clock skew allowed when verifying, seconds (the one value every AIMS verifier uses).
pub use aims_token::LEEWAY_S;
/// How many recent DPoP proofs the replay cache holds; when full of fresh proofs, new ones
/// are refused until old ones age out.
pub const REPLAY_CACHE_CAPACITY: usize = 100_000;
/// Least time between two JWKS fetches caused by tokens with an unknown `kid`.
pub const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How often the JWKS is fetched anyway, so rotated keys are known before tokens use them.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Entries asked for per page of the revocation feed.
pub const FEED_PAGE_LIMIT: u32 = 1000;
/// Pages read in one poll before the rest is left for the next one.
const MAX_PAGES_PER_SYNC: usize = 100;

/// Why a request's token was refused. Never contains the token or the proof.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The revocation feed has not caught up within `max_staleness`: every token is refused
    /// until it does.
    #[error("the revocation feed is stale; refusing every token until it syncs")]
    Stale,
    /// The verifier's state is unusable (a thread panicked while updating it).
    #[error("the verifier's state is unavailable")]
    Unavailable,
    /// No `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// The `Authorization` header is not `DPoP <token>` or `Bearer <token>`.
    #[error("the Authorization header is not `DPoP <token>` or `Bearer <token>`")]
    Scheme,
    /// The request has more than one `DPoP` header.
    #[error("more than one DPoP header")]
    MultipleProofs,
    /// The token names a signing key that is not in the issuer's JWKS.
    #[error("no signing key is known for the token's kid")]
    UnknownKey,
    /// The token is not a valid access token for this audience: signature, `typ`, issuer,
    /// audience, time or claim shapes (the inner error says which).
    #[error("access token refused: {0}")]
    Token(#[source] TokenError),
    /// The token's `jti` is in the revocation feed.
    #[error("the access token has been revoked")]
    Revoked,
    /// A DPoP-bound token came with `Authorization: Bearer`.
    #[error("a DPoP-bound token was presented as a bearer token")]
    BoundTokenAsBearer,
    /// `Authorization: DPoP` with a token that is not bound to any key.
    #[error("the DPoP scheme was used with a token that is not DPoP-bound")]
    UnboundTokenAsDpop,
    /// A DPoP-bound token came without a `DPoP` proof header.
    #[error("the DPoP proof is missing")]
    MissingProof,
    /// The proof is not valid for this request and token (signature, `typ`, `htm`, `htu`,
    /// `iat`, `ath`; the inner error says which).
    #[error("DPoP proof refused: {0}")]
    Proof(#[source] TokenError),
    /// The proof is signed by another key than the one the token is bound to (`cnf.jkt`).
    #[error("the DPoP proof is not signed by the key the token is bound to")]
    KeyMismatch,
    /// The proof was used before (or the replay cache is full of fresh proofs).
    #[error("the DPoP proof has been used before")]
    Replay,
}

impl VerifyError {
    /// The HTTP status a resource server answers with: 400 for a malformed request, 503 when
    /// the verifier itself cannot decide, 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::Scheme | Self::MultipleProofs => 400,
            Self::Stale | Self::Unavailable => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 / RFC 9449 error code for `WWW-Authenticate`, if one applies.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::Stale | Self::Unavailable | Self::Missing => None,
            Self::Scheme | Self::MultipleProofs => Some("invalid_request"),
            Self::UnknownKey
            | Self::Token(_)
            | Self::Revoked
            | Self::BoundTokenAsBearer
            | Self::UnboundTokenAsDpop => Some("invalid_token"),
            Self::MissingProof | Self::Proof(_) | Self::KeyMismatch | Self::Replay => {
                Some("invalid_dpop_proof")
            }
        }
    }

    /// The `WWW-Authenticate` challenge for a 401 (RFC 9449 §7.1), e.g.
    /// `DPoP algs="ES256 EdDSA Ed25519", error="invalid_token", error_description="…"`; `None` when
    /// the status is not 401.
    pub fn www_authenticate(&self) -> Option<String> {
        if self.status() != 401 {
            return None;
        }
        let mut challenge = format!("DPoP algs=\"{}\"", authn::proof_algs());
        if let Some(code) = self.error_code() {
            let description = self.to_string().replace(['"', '\\'], "'");
            challenge.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
        }
        Some(challenge)
    }
}

/// The verifier's knowledge at one moment, and the check itself. No IO and no clock: the
/// caller feeds it keys and revocations and passes `now`.
#[derive(Debug)]
pub struct VerifierState {
    issuer: String,
    audience: String,
    max_staleness_s: i64,
    /// Verification keys by `kid`.
    keys: HashMap<String, VerifyingKey>,
    /// Revoked tokens and epochs, each until it may be forgotten.
    revoked: RevokedSet,
    /// The feed position to ask from next.
    since: u64,
    /// When the feed last caught up (Unix seconds of the request that found nothing new).
    synced_at: Option<i64>,
    replay: ReplayCache,
    /// Tokens already verified, not verified again until they expire.
    verified: VerifiedTokens,
}

impl VerifierState {
    /// A state for tokens of `issuer` addressed to `audience`, refusing everything until the
    /// feed is first marked synced, and again whenever it is older than `max_staleness`
    /// (whole seconds, at least one).
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        max_staleness: Duration,
    ) -> Self {
        let max_staleness_s = i64::try_from(max_staleness.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            max_staleness_s,
            keys: HashMap::new(),
            revoked: RevokedSet::default(),
            since: 0,
            synced_at: None,
            replay: ReplayCache::new(REPLAY_CACHE_CAPACITY),
            verified: VerifiedTokens::new(verified::DEFAULT_CAPACITY),
        }
    }

    /// Replaces the verification keys.
    pub fn set_keys(&mut self, keys: impl IntoIterator<Item = (String, VerifyingKey)>) {
        self.keys = keys.into_iter().collect();
    }

    /// Replaces the verification keys with the ES256 signing keys of a JWKS document
    /// (`use` absent or `sig`, with a `kid`); other keys are skipped. A document with no such
    /// key is refused and the current keys stay.
    pub fn set_jwks(&mut self, jwks: &Value) -> Result<usize, SdkError> {
        let listed = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| SdkError::Decode("the JWKS has no `keys` array".into()))?;
        let mut keys = HashMap::new();
        for jwk in listed {
            if jwk
                .get("use")
                .is_some_and(|key_use| key_use.as_str() != Some("sig"))
            {
                continue;
            }
            if let Ok((key, Some(kid))) = VerifyingKey::from_jwk(jwk)
                && key.alg() == Alg::Es256
            {
                keys.insert(kid, key);
            }
        }
        if keys.is_empty() {
            return Err(SdkError::Decode(
                "the JWKS has no ES256 signing key with a kid".into(),
            ));
        }
        let count = keys.len();
        self.keys = keys;
        Ok(count)
    }

    /// How many verification keys are known.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Records revoked tokens and epochs; each is remembered until nothing it revokes would
    /// verify any more (its expiry plus the leeway), as of `now`.
    pub fn insert_revocations<'e>(
        &mut self,
        entries: impl IntoIterator<Item = &'e RevocationEntry>,
        now: i64,
    ) {
        for notice in entries.into_iter().filter_map(|e| e.notice(LEEWAY_S)) {
            self.revoked.apply(&notice, now);
        }
    }

    /// Whether the token with `claims` is known to be revoked, by its id or an epoch.
    pub fn is_revoked(&self, claims: &AccessClaims) -> bool {
        claims.is_refused_by(&self.revoked)
    }

    /// How many revoked tokens and epochs are remembered.
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }

    /// Forgets revocations nothing could be refused by any more (expired, beyond the leeway).
    pub fn prune(&mut self, now: i64) {
        self.revoked.forget_expired(now);
    }

    /// The feed position to ask from next.
    pub fn since(&self) -> u64 {
        self.since
    }

    /// When the feed last caught up, Unix seconds.
    pub fn synced_at(&self) -> Option<i64> {
        self.synced_at
    }

    /// Records that the feed had nothing newer than what is applied, as of `now` (the time
    /// the request was sent).
    pub fn mark_synced(&mut self, now: i64) {
        self.synced_at = Some(self.synced_at.map_or(now, |at| at.max(now)));
    }

    /// Applies one page of the feed asked for at `asked_at` (Unix seconds) with
    /// `since = self.since()`. An empty page means the feed has caught up: it marks the
    /// state synced and prunes. Returns whether it caught up. A page whose `next` goes back,
    /// or stands still while carrying entries, is refused and changes nothing.
    pub fn apply_page(&mut self, page: &RevocationPage, asked_at: i64) -> Result<bool, SdkError> {
        if page.next < self.since || (!page.revocations.is_empty() && page.next == self.since) {
            return Err(SdkError::Decode(format!(
                "the revocation feed does not advance (asked since {}, told next {})",
                self.since, page.next
            )));
        }
        self.insert_revocations(&page.revocations, asked_at);
        self.since = page.next;
        if page.revocations.is_empty() {
            self.mark_synced(asked_at);
            self.prune(asked_at);
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the feed has caught up within `max_staleness` of `now`.
    pub fn is_fresh(&self, now: i64) -> bool {
        self.synced_at
            .is_some_and(|at| now.saturating_sub(at) <= self.max_staleness_s)
    }

    /// Checks one request: `authorization` is its `Authorization` header, `dpop` its `DPoP`
    /// header, `method` and `url` the request as the client addressed it (scheme, host and
    /// path; query and fragment are ignored). Feed freshness first, then the one
    /// authentication core every AIMS enforcement point runs (`aims_token::authn`): scheme,
    /// the token for this audience, revocation, then the binding — a token with `cnf.jkt`
    /// needs `DPoP` and a proof for this request and token, signed by that key and never seen
    /// before; a token without one needs `Bearer`.
    pub fn check(
        &self,
        authorization: &str,
        dpop: Option<&str>,
        method: &str,
        url: &str,
        now: i64,
    ) -> Result<AccessClaims, VerifyError> {
        if !self.is_fresh(now) {
            return Err(VerifyError::Stale);
        }
        if authorization.trim().is_empty() {
            return Err(VerifyError::Missing);
        }
        let keys = |kid: &str| self.keys.get(kid);
        let rules = Rules {
            issuer: &self.issuer,
            keys: &keys,
            task_audience: Some(&self.audience),
            svid_audience: None,
            revoked: Some(&self.revoked),
            replay: &self.replay,
            verified: Some(&self.verified),
            nonces: None,
            now,
        };
        let presented = Presented {
            authorization: Some(authorization),
            proof: dpop,
            method,
            url,
        };
        match authn::authenticate(&presented, &rules) {
            Ok(Authenticated::Task { claims, .. }) => Ok(claims),
            // Identities are not accepted here (`svid_audience` is `None`).
            Ok(Authenticated::Identity(_)) => Err(VerifyError::Token(TokenError::Type)),
            Err(refusal) => Err(VerifyError::from(refusal)),
        }
    }
}

impl From<Refusal> for VerifyError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NoCredential => Self::Scheme,
            Refusal::Stale => Self::Stale,
            Refusal::Token {
                error: TokenError::UnknownKey,
                ..
            } => Self::UnknownKey,
            Refusal::Token { error, .. } | Refusal::Identity(error) => Self::Token(error),
            Refusal::Revoked { .. } => Self::Revoked,
            Refusal::BoundTokenAsBearer => Self::BoundTokenAsBearer,
            Refusal::UnboundTokenAsDpop => Self::UnboundTokenAsDpop,
            Refusal::MissingProof => Self::MissingProof,
            Refusal::Proof(error) => Self::Proof(error),
            Refusal::KeyMismatch => Self::KeyMismatch,
            Refusal::Replay => Self::Replay,
            // A verifier asks for no nonce; a refusal it does not know stays a refusal.
            _ => Self::Proof(TokenError::Claims("the proof was refused")),
        }
    }
}

/// Where and as whom a [`Verifier`] follows AIMS.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The AIMS server, e.g. `https://aims.acme.example`.
    pub base_url: String,
    /// The issuer tokens must name (`iss`: the AIMS public URL).
    pub issuer: String,
    /// This resource server's audience URI; tokens for any other audience are refused.
    pub audience: String,
    /// This resource server's registered name (its client id for the revocation feed).
    pub client_name: ResourceServerName,
    /// Its client secret.
    pub client_secret: SecretString,
    /// How often to poll the revocation feed.
    pub poll_interval: Duration,
    /// How old the last successful poll may be before every token is refused; must exceed
    /// `poll_interval`.
    pub max_staleness: Duration,
}

/// What a [`Verifier`] currently knows, for health checks and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierStatus {
    /// When the revocation feed last caught up.
    pub synced_at: Option<OffsetDateTime>,
    /// Whether tokens are being accepted (the feed is fresh enough).
    pub fresh: bool,
    /// The feed position asked from next.
    pub since: u64,
    /// Verification keys known.
    pub keys: usize,
    /// Revoked tokens remembered.
    pub revoked: usize,
    /// The last error talking to AIMS, cleared by the next success.
    pub last_error: Option<String>,
}

/// An offline token verifier for a tool server, kept current by a background task. Cheap to
/// clone; the task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<VerifierState>,
    client: TokenClient,
    client_name: ResourceServerName,
    client_secret: SecretString,
    /// When the JWKS was last fetched; holding the lock makes fetches single-flight.
    jwks_fetched: tokio::sync::Mutex<Fetched>,
    last_error: Mutex<Option<String>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// When the JWKS was last fetched, for any reason and because of an unknown `kid`.
#[derive(Debug, Default)]
struct Fetched {
    any: Option<Instant>,
    unknown_kid: Option<Instant>,
}

/// Why the JWKS is to be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// At start: always.
    Start,
    /// The periodic refresh: when the last fetch is [`JWKS_REFRESH_INTERVAL`] old.
    Periodic,
    /// A token named an unknown `kid`: at most once per [`JWKS_REFETCH_MIN_INTERVAL`], so
    /// made-up kids cannot make the verifier hammer AIMS.
    UnknownKid,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = match self.task.get_mut() {
            Ok(task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("base_url", &self.inner.client.base_url())
            .field("client_name", &self.inner.client_name)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Fetches the JWKS and catches up with the revocation feed (either failing is an error),
    /// then keeps both current in a background task. Must be called inside a Tokio runtime.
    pub async fn start(config: VerifierConfig) -> Result<Self, SdkError> {
        if config.poll_interval.is_zero() || config.max_staleness <= config.poll_interval {
            return Err(SdkError::InvalidRequest(
                "poll_interval must be positive and max_staleness longer than it".into(),
            ));
        }
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(SdkError::InvalidRequest(
                "the issuer and the audience must be given".into(),
            ));
        }
        let inner = Arc::new(Inner {
            state: RwLock::new(VerifierState::new(
                config.issuer,
                config.audience,
                config.max_staleness,
            )),
            client: TokenClient::new(&config.base_url)?,
            client_name: config.client_name,
            client_secret: config.client_secret,
            jwks_fetched: tokio::sync::Mutex::new(Fetched::default()),
            last_error: Mutex::new(None),
            task: Mutex::new(None),
        });
        inner.refresh_keys(Fetch::Start).await?;
        inner.sync_feed().await?;
        let task = tokio::spawn(follow(Arc::downgrade(&inner), config.poll_interval));
        match inner.task.lock() {
            Ok(mut slot) => *slot = Some(task),
            Err(_) => task.abort(),
        }
        Ok(Self { inner })
    }

    /// Verifies one request's token (see [`VerifierState::check`]). A token naming an unknown
    /// `kid` makes the verifier fetch the JWKS again (at most once per
    /// [`JWKS_REFETCH_MIN_INTERVAL`]) and check once more.
    pub async fn verify(
        &self,
        authorization: &str,
        dpop: Option<&str>,
        method: &str,
        url: &str,
    ) -> Result<AccessClaims, VerifyError> {
        match self.check_now(authorization, dpop, method, url) {
            Err(VerifyError::UnknownKey) => {
                let refreshed = self.inner.refresh_keys(Fetch::UnknownKid).await;
                self.inner.record(refreshed);
                self.check_now(authorization, dpop, method, url)
            }
            other => other,
        }
    }

    /// [`Verifier::verify`] on a request's headers: exactly one `Authorization` header and at
    /// most one `DPoP` header.
    pub async fn verify_headers(
        &self,
        headers: &HeaderMap,
        method: &str,
        url: &str,
    ) -> Result<AccessClaims, VerifyError> {
        let mut authorizations = headers.get_all(AUTHORIZATION).iter();
        let authorization = match (authorizations.next(), authorizations.next()) {
            (None, _) => return Err(VerifyError::Missing),
            (Some(value), None) => value.to_str().map_err(|_| VerifyError::Scheme)?,
            (Some(_), Some(_)) => return Err(VerifyError::Scheme),
        };
        let mut proofs = headers.get_all(DPOP).iter();
        let dpop = match (proofs.next(), proofs.next()) {
            (None, _) => None,
            (Some(value), None) => Some(value.to_str().map_err(|_| {
                VerifyError::Proof(TokenError::Malformed("the DPoP header is not ASCII"))
            })?),
            (Some(_), Some(_)) => return Err(VerifyError::MultipleProofs),
        };
        self.verify(authorization, dpop, method, url).await
    }

    /// Polls the revocation feed now, in addition to the background polls.
    pub async fn sync(&self) -> Result<(), SdkError> {
        let result = self.inner.sync_feed().await;
        self.inner.record(result.clone());
        result
    }

    /// What the verifier knows now.
    pub fn status(&self) -> VerifierStatus {
        let last_error = self
            .inner
            .last_error
            .lock()
            .ok()
            .and_then(|error| error.clone());
        let now = unix_now();
        match self.inner.state.read() {
            Ok(state) => VerifierStatus {
                synced_at: state
                    .synced_at()
                    .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok()),
                fresh: state.is_fresh(now),
                since: state.since(),
                keys: state.key_count(),
                revoked: state.revoked_count(),
                last_error,
            },
            Err(_) => VerifierStatus {
                synced_at: None,
                fresh: false,
                since: 0,
                keys: 0,
                revoked: 0,
                last_error: Some("the verifier's state is unavailable".into()),
            },
        }
    }

    fn check_now(
        &self,
        authorization: &str,
        dpop: Option<&str>,
        method: &str,
        url: &str,
    ) -> Result<AccessClaims, VerifyError> {
        let state = self
            .inner
            .state
            .read()
            .map_err(|_| VerifyError::Unavailable)?;
        state.check(authorization, dpop, method, url, unix_now())
    }
}

impl Inner {
    fn read(&self) -> Result<RwLockReadGuard<'_, VerifierState>, SdkError> {
        self.state
            .read()
            .map_err(|_| SdkError::Decode("the verifier's state is unavailable".into()))
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, VerifierState>, SdkError> {
        self.state
            .write()
            .map_err(|_| SdkError::Decode("the verifier's state is unavailable".into()))
    }

    /// Fetches the JWKS unless `why` says it is too soon. A failed fetch counts too, so an
    /// unreachable server is not hammered. Callers arriving while a fetch is in flight wait
    /// for it and then find it too soon.
    async fn refresh_keys(&self, why: Fetch) -> Result<(), SdkError> {
        let mut fetched = self.jwks_fetched.lock().await;
        let recent =
            |at: Option<Instant>, within: Duration| at.is_some_and(|at| at.elapsed() < within);
        let too_soon = match why {
            Fetch::Start => false,
            Fetch::Periodic => recent(fetched.any, JWKS_REFRESH_INTERVAL),
            Fetch::UnknownKid => recent(fetched.unknown_kid, JWKS_REFETCH_MIN_INTERVAL),
        };
        if too_soon {
            return Ok(());
        }
        let now = Instant::now();
        fetched.any = Some(now);
        if why == Fetch::UnknownKid {
            fetched.unknown_kid = Some(now);
        }
        let jwks = self.client.jwks().await?;
        self.write()?.set_jwks(&jwks)?;
        Ok(())
    }

    /// Reads the feed from the current position until a page comes back empty (caught up) or
    /// [`MAX_PAGES_PER_SYNC`] pages were read. Concurrent syncs (an explicit `sync` during a
    /// background poll) are harmless: a page asked for from a position the other one has
    /// already left is dropped, not applied.
    async fn sync_feed(&self) -> Result<(), SdkError> {
        for _ in 0..MAX_PAGES_PER_SYNC {
            let since = self.read()?.since();
            let asked_at = unix_now();
            let page = self
                .client
                .revocations(
                    since,
                    Some(FEED_PAGE_LIMIT),
                    &self.client_name,
                    self.client_secret.expose_secret(),
                )
                .await?;
            let mut state = self.write()?;
            if state.since() != since {
                // Another sync moved on meanwhile; its result stands.
                continue;
            }
            if state.apply_page(&page, asked_at)? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn record(&self, result: Result<(), SdkError>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = result.err().map(|e| e.to_string());
        }
    }
}

/// The background task: polls the feed every `every` and refreshes the JWKS every
/// [`JWKS_REFRESH_INTERVAL`], until the verifier is dropped.
async fn follow(inner: Weak<Inner>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; `start` has just synced.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut result = inner.sync_feed().await;
        if result.is_ok() {
            result = inner.refresh_keys(Fetch::Periodic).await;
        }
        inner.record(result);
    }
}

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
#[path = "verifier_tests.rs"]
mod tests;
