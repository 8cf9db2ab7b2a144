//! Running the server: startup, the listener, background tasks, and graceful shutdown.
//!
//! [`start`] binds and returns a [`RunningServer`] handle (tests use it with `127.0.0.1:0`);
//! the binary prints `listening on http://ADDR` once the socket accepts connections.

use std::net::SocketAddr;
use std::sync::Arc;

use aims_store::Store;
use ring::rand::SystemRandom;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit_writer::AuditWriter;
use crate::bootstrap::{self, StartupError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::router;
use crate::state::{AppState, Parts};

/// A server that is accepting connections.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The bootstrap admin credential, when this start generated it (shown once).
    pub bootstrap_credential: Option<SecretString>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Asks the server to stop accepting, finish in-flight requests, and exit.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> std::io::Result<()> {
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
    bootstrap::prepare_data_dir(&config)?;
    let store = aims_store::open(&config.database_url).await?;
    start_with_store(config, store, var).await
}

/// Starts the server on an already opened store (used by tests to run the same suite on
/// every store, and to inject storage faults).
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<RunningServer, StartupError> {
    let rng = SystemRandom::new();
    let started = bootstrap::start(&config, store, var, &rng).await?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartupError::Listen {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartupError::Listen {
            addr: config.listen,
            source,
        })?;
    let issuer = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let metrics = Arc::new(Metrics::new());
    let (audit, _writer) = AuditWriter::spawn(started.store.clone(), metrics.clone());
    let state = AppState::new(Parts {
        config,
        issuer,
        store: started.store,
        audit,
        metrics,
        master: started.master,
        keys: started.keys,
    });
    let (shutdown, mut stop) = watch::channel(false);
    tokio::spawn(reload_keys_periodically(state.clone(), stop.clone()));
    let app = router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        bootstrap_credential: started.bootstrap_credential,
        shutdown,
        task,
    })
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
