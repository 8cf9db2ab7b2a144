//! `aims gateway`: the enforcement point that stands in the path of an agent's tool calls.
//!
//! A request reaches a configured route ([`config`]); the gateway authenticates the agent's
//! DPoP-bound task token offline with the SDK's [`aims_sdk::Verifier`] (the one
//! authentication core, keys from the JWKS, the revocation feed followed, every token refused
//! when the feed is stale), asks AIMS to decide the call — remotely, through AuthZEN, as the
//! registered resource server it is, passing the agent's token so the task, scopes and
//! delegation chain count — and, when allowed, forwards it upstream with the route's secret
//! injected and the agent's token and proof removed ([`proxy`]). The decision is audited by
//! AIMS. Deciding remotely keeps one engine, one policy version and one audit trail for every
//! enforcement point, at the cost of one round trip to AIMS per call.

pub mod config;
pub mod ingress;
pub mod mcp;
pub mod proxy;
pub mod sightings;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Config, ConfigError};

/// A running gateway.
pub struct RunningGateway {
    gateway: std::sync::Arc<proxy::Gateway>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub base_url: String,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningGateway {
    /// Puts a new configuration's routes in force without dropping a connection (see
    /// [`proxy::Gateway::reload`]); returns how many routes are in force.
    ///
    /// # Errors
    /// What the new configuration changes that only a restart can.
    pub fn reload(&self, config: Config) -> Result<usize, String> {
        self.gateway.reload(config)
    }

    /// Asks the gateway to stop accepting connections and finish the ones in flight.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until it has stopped.
    ///
    /// # Errors
    /// The serving loop's IO error.
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its listen address cannot be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
    /// AIMS cannot be reached or refused the gateway's credential (JWKS, revocation feed).
    #[error("cannot follow AIMS at {url}: {cause}")]
    Aims {
        /// The AIMS URL.
        url: String,
        /// Why.
        cause: aims_sdk::SdkError,
    },
}

/// Starts the gateway: follows AIMS (keys and revocations) first, then listens.
///
/// # Errors
/// [`StartError`] when AIMS cannot be followed or the address cannot be bound.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|cause| StartError::Listen {
            addr: config.listen,
            cause,
        })?;
    let addr = listener.local_addr().map_err(|cause| StartError::Listen {
        addr: config.listen,
        cause,
    })?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let gateway = proxy::Gateway::new(config, public_url.clone())
        .await
        .map_err(|(url, cause)| StartError::Aims { url, cause })?;
    let app = ingress::router(gateway.clone());
    let (shutdown, stop) = watch::channel(false);
    tokio::spawn(proxy::report_sightings(
        std::sync::Arc::downgrade(&gateway),
        gateway.config().sighting_report,
        stop.clone(),
    ));
    // The server's connection handling: a header-read timeout (slow clients), a header size
    // cap, a connection limit and a bounded drain at shutdown.
    let task = tokio::spawn(aims_server::server::serve(listener, None, app, stop));
    Ok(RunningGateway {
        gateway,
        addr,
        base_url: format!("http://{addr}"),
        shutdown,
        task,
    })
}
