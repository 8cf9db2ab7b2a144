//! Running the server: startup, the listener, background tasks, and graceful shutdown.
//!
//! [`start`] binds and returns a [`RunningServer`] handle (tests use it with `127.0.0.1:0`);
//! the binary prints `listening on http://ADDR` once the socket accepts connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aims_store::Store;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ring::rand::SystemRandom;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::audit_writer::AuditWriter;
use crate::bootstrap::{self, DataDirLock, StartupError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{PolicyHolder, RELOAD_EVERY};
use crate::revocation;
use crate::routes::router;
use crate::signals;
use crate::state::{AppState, Parts};

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted; larger gets 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most connections served at once; further ones are closed at accept.
const MAX_CONNECTIONS: usize = 4096;
/// How long a connection may go without starting a request before it is closed
/// (gracefully: a response still streaming finishes).
const IDLE_CONNECTION: Duration = Duration::from_secs(10);
/// Most concurrent HTTP/2 streams on one connection.
const MAX_STREAMS: u32 = 256;
/// How often an idle HTTP/2 connection is pinged, and how long the answer may take before the
/// connection is closed.
const H2_KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(20), Duration::from_secs(10));
/// What this replica's DPoP nonces are minted for.
const DPOP_NONCE_PURPOSE: &str = "aims dpop nonce v1";
/// How often expired nonces and proofs are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often a replica looks for revocations whose cascade another replica left incomplete.
const CASCADE_CHECK: Duration = Duration::from_secs(5);
/// How long a revocation's cascade may go unadvanced before another replica finishes it.
const CASCADE_IDLE: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A server that is accepting connections.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// Where it answers: `http://ADDR`, or `https://ADDR` when it serves TLS.
    pub base_url: String,
    /// The bootstrap admin credential, when this start generated it (shown once).
    pub bootstrap_credential: Option<SecretString>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    /// Held while the server runs, when it serves a SQLite data directory.
    data_dir_lock: Option<DataDirLock>,
}

impl RunningServer {
    /// Asks the server to stop accepting, finish in-flight requests, and exit.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the server has stopped (and then releases its data directory).
    pub async fn wait(self) -> std::io::Result<()> {
        let _released_after = self.data_dir_lock;
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join.to_string())),
        }
    }
}

/// Starts the server with `config`, reading `AIMS_MASTER_KEY` and `AIMS_BOOTSTRAP_TOKEN`
/// through `var`.
pub async fn start(
    config: Config,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<RunningServer, StartupError> {
    let data_dir_lock = bootstrap::prepare_data_dir(&config)?;
    let options = aims_store::StoreOptions {
        reserve_bytes: config.storage_reserve_bytes,
        max_pages: None,
    };
    let store = aims_store::open(&config.database_url, &options).await?;
    let mut running = start_with_store(config, store, var).await?;
    running.data_dir_lock = data_dir_lock;
    Ok(running)
}

/// Starts the server on an already opened store (used by tests to run the same suite on
/// every store, and to inject storage faults).
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<RunningServer, StartupError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|cause| StartupError::Listen {
                addr: config.listen,
                cause,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|cause| StartupError::Listen {
            addr: config.listen,
            cause,
        })?;
    let tls = match &config.tls {
        Some(files) => {
            let certificates = crate::tls::Certificates::load(files.clone())
                .map_err(|e| StartupError::Tls(e.to_string()))?;
            let acceptor = certificates
                .acceptor()
                .map_err(|e| StartupError::Tls(e.to_string()))?;
            Some((certificates, acceptor))
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let issuer = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let (state, bootstrap_credential) = app_state(config, store, var, issuer).await?;
    let (shutdown, stop) = watch::channel(false);
    tokio::spawn(reload_keys_periodically(state.clone(), stop.clone()));
    tokio::spawn(reload_policy_periodically(state.clone(), stop.clone()));
    tokio::spawn(revocation::follow(
        state.revocations.clone(),
        state.store.clone(),
        state.config.revocation_poll,
        stop.clone(),
    ));
    tokio::spawn(crate::registry::follow(
        state.registry.clone(),
        state.store.clone(),
        state.config.revocation_poll,
        stop.clone(),
    ));
    tokio::spawn(crate::approval_watch::follow(
        state.approval_watch.clone(),
        state.store.clone(),
        state.config.revocation_poll,
        stop.clone(),
    ));
    tokio::spawn(crate::audit_writer::sequence(
        state.store.clone(),
        state.claim_holder(),
        state.metrics.clone(),
        stop.clone(),
    ));
    tokio::spawn(sweep_periodically(state.clone(), stop.clone()));
    tokio::spawn(finish_revocations_periodically(state.clone(), stop.clone()));
    tokio::spawn(crate::recertify::watch(state.clone(), stop.clone()));
    tokio::spawn(summarize_refusals(
        state.clone(),
        state.config.refusal_window,
        stop.clone(),
    ));
    tokio::spawn(forget_idle_buckets(state.clone(), stop.clone()));
    tokio::spawn(crate::tlog::run(
        state.audit_tree.clone(),
        state.store.clone(),
        state.metrics.clone(),
        (
            state.config.audit_checkpoint_interval,
            state.config.audit_checkpoint_entries,
        ),
        stop.clone(),
    ));
    // Pushes SSF events to the push streams whose delivery this replica claims.
    tokio::spawn(signals::push(state.clone(), stop.clone()));
    tokio::spawn(crate::leases::reap(state.clone(), stop.clone()));
    let acceptor = tls.map(|(certificates, acceptor)| {
        tokio::spawn(crate::tls::watch(certificates, stop.clone()));
        acceptor
    });
    let app = router(state);
    let task = tokio::spawn(serve(listener, acceptor, app, stop));
    Ok(RunningServer {
        base_url: format!("{scheme}://{addr}"),
        addr,
        bootstrap_credential,
        shutdown,
        task,
        data_dir_lock: None,
    })
}

/// The state of a replica serving `issuer` over `store`: bootstrapped (schema, keys, first
/// admin, whose credential comes back when it was just made), its active policy loaded and
/// the revocation log read once. Serving it is [`start_with_store`]'s job; tests drive
/// [`crate::routes::router`] over it without sockets.
pub async fn app_state(
    config: Config,
    store: Arc<dyn Store>,
    var: &dyn Fn(&str) -> Option<String>,
    issuer: String,
) -> Result<(AppState, Option<SecretString>), StartupError> {
    let rng = SystemRandom::new();
    let started = bootstrap::start(&config, store, var, &rng).await?;
    let metrics = Arc::new(Metrics::new());
    started.store.observe_writes({
        let metrics = Arc::clone(&metrics);
        Arc::new(move |batch| metrics.observe_write(batch))
    });
    let (audit, _writer) = AuditWriter::spawn(started.store.clone(), metrics.clone());
    let http = crate::outbound::clients(&config)
        .map_err(|e| StartupError::Keys(format!("HTTP client: {e}")))?;
    let policy =
        PolicyHolder::empty().map_err(|e| StartupError::Keys(format!("policy engine: {e}")))?;
    let dpop_nonces = aims_token::nonce::NonceKey::random(&rng, DPOP_NONCE_PURPOSE)
        .map_err(|e| StartupError::Keys(format!("DPoP nonce key: {e}")))?;
    let audit_tree = crate::tlog::AuditTree::load(
        started.store.as_ref(),
        &started.master,
        &rng,
        &config.trust_domain,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .map_err(|e| StartupError::Keys(format!("audit log: {e}")))?;
    metrics.audit_tree_size.set(audit_tree.size());
    metrics
        .audit_tree_broken
        .set(u64::from(audit_tree.broken().is_some()));
    let state = AppState::new(Parts {
        audit_tree: Arc::new(audit_tree),
        dpop_nonces,
        policy,
        http,
        config,
        issuer,
        store: started.store,
        audit,
        metrics,
        master: started.master,
        keys: started.keys,
    });
    // A version that does not load leaves the server unready; it keeps polling.
    let _ = state.reload_policy().await;
    // A revocation this replica left incomplete when it stopped is finished before the log is
    // read, so no descendant of what it revoked is honoured after the restart.
    if let Err(error) = state
        .store
        .finish_revocations(time::OffsetDateTime::now_utc())
        .await
    {
        tracing::error!(%error, "cannot finish incomplete revocations at start; retrying");
    }
    // Tokens are refused until the revocation log has been read once.
    if let Err(error) = state.revocations.catch_up(state.store.as_ref()).await {
        tracing::error!(%error, "cannot read the revocation log at start; tokens are refused until it can");
    }
    // Agents' requests are refused until the registry has been read once.
    if let Err(error) = state.registry.catch_up(state.store.as_ref()).await {
        tracing::error!(%error, "cannot read the registry at start; agents' requests are refused until it can");
    }
    Ok((state, started.bootstrap_credential))
}

/// How every connection is served: HTTP/1.1, or HTTP/2 (with TLS by ALPN, in the clear by
/// prior knowledge). HTTP/1.1 has a header-read timeout and a header size cap; HTTP/2 the same
/// header cap, at most [`MAX_STREAMS`] streams per connection and keep-alive pings.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let (ping_every, ping_timeout) = H2_KEEP_ALIVE;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(ping_every)
        .keep_alive_timeout(ping_timeout);
    builder
}

/// Accepts connections until `stop`, then lets in-flight requests finish (bounded by
/// [`DRAIN_TIMEOUT`]). Each connection is HTTP/1.1 or HTTP/2 ([`connection_builder`]) with a
/// header size cap, and HTTP/1.1 a header-read timeout, so slow or huge headers cannot hold
/// a connection; a connection that starts no request for [`IDLE_CONNECTION`] (one that
/// sends nothing, or an idle HTTP/2 connection) is closed gracefully ([`serve_connection`]);
/// at most [`MAX_CONNECTIONS`] are served at once. With `tls`, every connection is HTTPS (a
/// handshake that does not finish within [`crate::tls::HANDSHAKE_TIMEOUT`] is dropped). The
/// gateway serves its connections with it too.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let http = connection_builder();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached; dropping a new connection");
            continue;
        };
        // Handlers see the caller's address as `ConnectInfo`.
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let (http, stop) = (http.clone(), stop.clone());
        match &tls {
            None => {
                tokio::spawn(async move {
                    serve_connection(&http, stream, app, stop).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, handshake).await
                    {
                        serve_connection(&http, stream, app, stop).await;
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means all drained.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time; closing them");
    }
    Ok(())
}

/// Serves one connection until it ends. It is closed gracefully (requests in flight finish,
/// no new one starts) when the server stops, or when no request started on it during the
/// last [`IDLE_CONNECTION`]. A connection error (the client went away, a timeout) concerns
/// that client only.
async fn serve_connection<IO>(
    http: &auto::Builder<TokioExecutor>,
    io: IO,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicU64::new(0));
    let counted = {
        let started = started.clone();
        let service = TowerToHyperService::new(app);
        hyper::service::service_fn(move |request| {
            started.fetch_add(1, Ordering::Relaxed);
            hyper::service::Service::call(&service, request)
        })
    };
    let connection = http.serve_connection(TokioIo::new(io), counted);
    let mut connection = std::pin::pin!(connection);
    let mut idle = tokio::time::interval(IDLE_CONNECTION);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    idle.tick().await;
    let mut seen = 0;
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = stop.wait_for(|stopped| *stopped), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle.tick(), if !closing => {
                let now = started.load(Ordering::Relaxed);
                if now == seen {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                seen = now;
            }
        }
    }
}

/// Picks up policy versions activated on any replica within [`RELOAD_EVERY`].
async fn reload_policy_periodically(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Failures are logged inside; the last good version stays in force.
                let _ = state.reload_policy().await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Deletes used attestation nonces and DPoP proofs once they have expired, and what the audit
/// queue keeps of batches already in the log, every [`SWEEP_EVERY`], so what anonymous
/// callers can make the store remember stays bounded.
async fn sweep_periodically(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = state.store.sweep_expired(time::OffsetDateTime::now_utc()).await {
                    tracing::warn!(%error, "sweeping expired nonces and proofs failed; retrying later");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Finishes, every [`CASCADE_CHECK`], the cascade of every revocation nobody has advanced for
/// [`CASCADE_IDLE`] (a replica stopped or failed mid-way; see `Store::revoke`). Those left
/// before this replica started were finished at its start.
async fn finish_revocations_periodically(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CASCADE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let idle_since = time::OffsetDateTime::now_utc() - CASCADE_IDLE;
                match state.store.finish_revocations(idle_since).await {
                    Ok(0) => {}
                    Ok(revoked) => {
                        tracing::warn!(revoked, "finished revocations left incomplete");
                        state.apply_own_revocations().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "finishing incomplete revocations failed; retrying");
                    }
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Picks up key rotations made by other replicas sharing the store.
async fn reload_keys_periodically(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.key_reload);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Failures are logged inside; the previous ring stays in force.
                let _ = state.reload_keys().await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Writes each refusal window's summaries when it closes (every `window`), until `stop`.
async fn summarize_refusals(state: AppState, window: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the first window closes one period later.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        let stopping = *stop.borrow();
        for event in state.refusals.close(time::OffsetDateTime::now_utc()) {
            if let Err(error) = state.audit.record(event).await {
                tracing::warn!(
                    code = error.code.as_str(),
                    "a refusal summary could not be written"
                );
            }
        }
        if stopping {
            return;
        }
    }
}

/// Drops idle rate-limit buckets every [`crate::limits::FORGET_EVERY`] until `stop`.
async fn forget_idle_buckets(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(crate::limits::FORGET_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => state.limits.forget_idle(),
            _ = stop.changed() => return,
        }
    }
}
