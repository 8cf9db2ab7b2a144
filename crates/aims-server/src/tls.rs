//! HTTPS without a proxy in front: rustls (with `ring`, as everywhere else) serving the
//! certificate chain and private key of two PEM files, reloaded when either file changes.
//!
//! The pair is loaded at start and a server that cannot load it does not start. Afterwards the
//! files are looked at every [`RELOAD_EVERY`]; when their size or modification time changed,
//! the pair is loaded again and, if the key matches the certificate, swapped in for every new
//! handshake (open connections keep theirs). A pair that does not load (half-written files
//! during a renewal, a mismatched key) is logged and the previous one stays in force, so a
//! botched renewal never takes the server down. Only TLS 1.2 and 1.3 with rustls' default
//! cipher suites are offered; HTTP/1.1 is announced by ALPN.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no PEM object of the kind expected.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The key does not belong to the certificate, or is of a kind rustls cannot use.
    #[error("the private key in {key} does not match the certificate in {cert}: {why}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        why: String,
    },
}

/// Where the certificate chain (leaf first) and the private key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The certificate in force, handed to every new handshake.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// What the files looked like when they were last loaded.
    seen: RwLock<Option<(FileStamp, FileStamp)>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

impl Certificates {
    /// Loads `files` once; the server does not start if this fails.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let seen = (stamp(&files.cert), stamp(&files.key));
        let key = load_pair(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(key)),
            seen: RwLock::new(Some(seen)),
        }))
    }

    /// The acceptor that serves the certificate in force.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Loads the files again if they changed since last time; keeps the pair in force when
    /// the new one does not load. Returns whether a new pair was swapped in.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now_seen = (stamp(&self.files.cert), stamp(&self.files.key));
        let unchanged = match self.seen.read() {
            Ok(seen) => *seen == Some(now_seen),
            Err(poisoned) => *poisoned.into_inner() == Some(now_seen),
        };
        if unchanged {
            return Ok(false);
        }
        let loaded = load_pair(&self.files);
        // Remember this state of the files either way: a broken pair is reported once, and
        // loaded again only when the files change again.
        match self.seen.write() {
            Ok(mut seen) => *seen = Some(now_seen),
            Err(poisoned) => *poisoned.into_inner() = Some(now_seen),
        }
        let key = Arc::new(loaded?);
        match self.current.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(true)
    }
}

/// Watches the files until `stop`, reloading on change.
pub async fn watch(certificates: Arc<Certificates>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => match certificates.reload_if_changed() {
                Ok(true) => tracing::info!(cert = %certificates.files.cert.display(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(error) => tracing::error!(%error, "TLS certificate not reloaded; the previous one stays in force"),
            },
            _ = stop.changed() => return,
        }
    }
}

/// Size and modification time of a file (`None` when it cannot be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp(Option<(u64, SystemTime)>);

fn stamp(path: &Path) -> FileStamp {
    FileStamp(
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?))),
    )
}

fn load_pair(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, why: String| TlsError::File {
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "no certificate in it".to_owned()));
    }
    warn_if_readable_by_others(&files.key);
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, e.to_string()))?;
    let mismatch = |why: String| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why,
    };
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(certified)
}

/// A private key others may read is worth a warning (deployments mount keys in many ways, so
/// it is not refused).
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(key = %path.display(), "the TLS private key file is readable by group or others");
    }
}
