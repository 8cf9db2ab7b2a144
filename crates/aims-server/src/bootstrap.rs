//! Startup: the data directory, the master key, the store, and on first start the trust
//! domain, its first signing keys and the bootstrap admin.
//!
//! Refuses to start rather than guess: a store created for another trust domain, a master key
//! that does not open the stored keys, or a missing master key for an existing store all stop
//! the server with a clear message. A new master key is generated only for a new store. The
//! data directory must be the server user's own and writable by nobody else (one that others
//! may only read is closed to 0700, as a new one is created), the master key a regular file
//! readable by that user alone, and a SQLite data
//! directory serves one server process at a time: the first holds an exclusive lock on its
//! `aims.lock` until it exits.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_core::credential::{
    CredentialHash, CredentialKind, format_credential, is_acceptable_supplied_credential,
};
use aims_core::id::UserName;
use aims_core::user::{Role, User};
use aims_store::{Initialization, KeyState, Store};
use aims_token::master::MasterKey;
use ring::rand::{SecureRandom as _, SystemRandom};
use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;

use crate::config::{Config, ENV_BOOTSTRAP_TOKEN, ENV_MASTER_KEY};
use crate::keyring::{KeyRing, generate_stored_key};

/// File name of the master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// File name of the lock a server holds on a SQLite data directory.
pub const LOCK_FILE: &str = "aims.lock";
/// Name of the bootstrap admin user.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// Why the server refused to start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The data directory cannot be created or used.
    #[error("data directory {path}: {cause}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The data directory is open to other users, or belongs to another user.
    #[error("data directory {path}: {reason}")]
    DataDirUnsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Another server process holds the data directory.
    #[error(
        "data directory {path} is in use by another aims server (it holds {path}/{LOCK_FILE}); \
         one SQLite data directory serves one server: stop the other one, or use PostgreSQL \
         for several replicas"
    )]
    DataDirInUse {
        /// The directory.
        path: PathBuf,
    },
    /// The master key is missing, unreadable, malformed or too widely readable.
    #[error("master key: {0}")]
    MasterKey(String),
    /// The store cannot be opened or initialized.
    #[error("store: {0}")]
    Store(aims_store::StoreError),
    /// The store belongs to another trust domain.
    #[error(
        "the store belongs to trust domain {stored}, not {configured}; a trust domain cannot be renamed"
    )]
    TrustDomainMismatch {
        /// In the store.
        stored: String,
        /// In the configuration.
        configured: String,
    },
    /// Keys cannot be generated or loaded.
    #[error("keys: {0}")]
    Keys(String),
    /// `AIMS_BOOTSTRAP_TOKEN` is unusable.
    #[error("{ENV_BOOTSTRAP_TOKEN} must be 32 to 512 printable ASCII characters without spaces")]
    BootstrapToken,
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
}

// Messages carry their causes and no variant has an error source, so `{:#}` prints each
// cause once.
impl From<aims_store::StoreError> for StartupError {
    fn from(err: aims_store::StoreError) -> Self {
        Self::Store(err)
    }
}

/// What startup hands the server.
pub struct Started {
    /// The open store.
    pub store: Arc<dyn Store>,
    /// The unsealed key ring.
    pub keys: KeyRing,
    /// The master key (kept to unseal keys on reload).
    pub master: MasterKey,
    /// The bootstrap admin credential, when this start created it and generated it.
    pub bootstrap_credential: Option<SecretString>,
}

/// The exclusive lock on a SQLite data directory; released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Prepares the data directory (creating it, or checking an existing one) and, when the store
/// is SQLite, locks it; the store is opened after this.
pub fn prepare_data_dir(config: &Config) -> Result<Option<DataDirLock>, StartupError> {
    create_data_dir(&config.data_dir)?;
    if config.database_url.starts_with("sqlite://") {
        lock_data_dir(&config.data_dir).map(Some)
    } else {
        Ok(None)
    }
}

/// Loads (and on first start creates) everything the server needs from an open store.
pub async fn start(
    config: &Config,
    store: Arc<dyn Store>,
    var: &dyn Fn(&str) -> Option<String>,
    rng: &SystemRandom,
) -> Result<Started, StartupError> {
    let existing = store.trust_domain().await?;
    let master = load_master_key(config, var, existing.is_some(), rng)?;

    let bootstrap_credential = match existing {
        Some(stored) if stored != config.trust_domain => {
            return Err(StartupError::TrustDomainMismatch {
                stored: stored.to_string(),
                configured: config.trust_domain.to_string(),
            });
        }
        Some(_) => None,
        None => initialize(config, store.as_ref(), &master, var, rng).await?,
    };

    let set = store.keys().await?;
    let keys = KeyRing::load(&set, &master, rng).map_err(|e| StartupError::Keys(e.to_string()))?;
    Ok(Started {
        store,
        keys,
        master,
        bootstrap_credential,
    })
}

/// Creates the directory with mode 0700, or checks that an existing one is the server user's
/// and writable by nobody else: anyone who could write into it may already have replaced the
/// database or the master key, which no `chmod` now undoes, so that is refused; a directory
/// others may only read (a plain `mkdir`) is closed to 0700 before anything is written, so
/// nobody can copy what goes into it.
fn create_data_dir(dir: &Path) -> Result<(), StartupError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let wrap = |cause| StartupError::DataDir {
        path: dir.to_owned(),
        cause,
    };
    let unsafe_dir = |reason: String| StartupError::DataDirUnsafe {
        path: dir.to_owned(),
        reason,
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(wrap),
        Err(e) => Err(wrap(e)),
        Ok(meta) if !meta.is_dir() => Err(unsafe_dir("is not a directory".to_owned())),
        Ok(meta) => {
            let me = rustix::process::geteuid().as_raw();
            if meta.uid() != me {
                return Err(unsafe_dir(format!(
                    "belongs to uid {}, not to the server's user (uid {me})",
                    meta.uid()
                )));
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(unsafe_dir(format!(
                    "is writable by group or others (mode {mode:04o}), so its contents cannot be \
                     trusted; check them, then run: chmod 700 {}",
                    dir.display()
                )));
            }
            if mode & 0o077 != 0 {
                tracing::warn!(path = %dir.display(), mode = format!("{mode:04o}"), "closing the data directory to group and others (mode 0700)");
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(wrap)?;
            }
            Ok(())
        }
    }
}

/// Takes the exclusive lock on `dir`'s lock file without waiting.
fn lock_data_dir(dir: &Path) -> Result<DataDirLock, StartupError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|cause| StartupError::DataDir {
            path: path.clone(),
            cause,
        })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(StartupError::DataDirInUse {
            path: dir.to_owned(),
        }),
        Err(e) => Err(StartupError::DataDir {
            path,
            cause: e.into(),
        }),
    }
}

/// `AIMS_MASTER_KEY`, else the key file; generates the file only for a new store.
fn load_master_key(
    config: &Config,
    var: &dyn Fn(&str) -> Option<String>,
    store_exists: bool,
    rng: &SystemRandom,
) -> Result<MasterKey, StartupError> {
    if let Some(encoded) = var(ENV_MASTER_KEY) {
        return MasterKey::from_base64(&encoded).map_err(|_| {
            StartupError::MasterKey(format!("{ENV_MASTER_KEY} is not 32 bytes of base64"))
        });
    }
    let path = config.data_dir.join(MASTER_KEY_FILE);
    // Not followed: a link could point the server at a key somebody else controls.
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(StartupError::MasterKey(format!(
            "{} is a symbolic link; the master key must be a regular file in the data directory",
            path.display()
        ))),
        Ok(meta) if !meta.is_file() => Err(StartupError::MasterKey(format!(
            "{} is not a regular file; the master key must be a regular file in the data directory",
            path.display()
        ))),
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(StartupError::MasterKey(format!(
                    "{} is readable by group or others; run: chmod 600 {}",
                    path.display(),
                    path.display()
                )));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| StartupError::MasterKey(format!("{}: {e}", path.display())))?;
            MasterKey::from_base64(&text)
                .map_err(|_| StartupError::MasterKey(format!("{} is malformed", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !store_exists => {
            let key =
                MasterKey::generate(rng).map_err(|e| StartupError::MasterKey(e.to_string()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| StartupError::MasterKey(format!("{}: {e}", path.display())))?;
            file.write_all(key.to_base64().expose_secret().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| StartupError::MasterKey(format!("{}: {e}", path.display())))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StartupError::MasterKey(format!(
                "{} is missing but the store already holds sealed keys; restore the key file or set {ENV_MASTER_KEY} (a new key is never generated for an existing store)",
                path.display()
            )))
        }
        Err(e) => Err(StartupError::MasterKey(format!("{}: {e}", path.display()))),
    }
}

async fn initialize(
    config: &Config,
    store: &dyn Store,
    master: &MasterKey,
    var: &dyn Fn(&str) -> Option<String>,
    rng: &SystemRandom,
) -> Result<Option<SecretString>, StartupError> {
    let now = OffsetDateTime::now_utc();
    let (credential, generated) = match var(ENV_BOOTSTRAP_TOKEN) {
        Some(supplied) if is_acceptable_supplied_credential(&supplied) => {
            (SecretString::from(supplied), false)
        }
        Some(_) => return Err(StartupError::BootstrapToken),
        None => {
            let mut random = [0u8; 32];
            rng.fill(&mut random)
                .map_err(|_| StartupError::Keys("random number generator failed".to_owned()))?;
            (
                SecretString::from(format_credential(CredentialKind::Human, &random)),
                true,
            )
        }
    };
    let keys = [KeyState::Current, KeyState::Next]
        .into_iter()
        .map(|state| generate_stored_key(master, rng, state, now))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartupError::Keys(e.to_string()))?;
    let admin_name = UserName::new(BOOTSTRAP_ADMIN)
        .map_err(|e| StartupError::Keys(format!("bootstrap admin name: {e}")))?;
    let init = Initialization {
        trust_domain: config.trust_domain.clone(),
        keys,
        admin: User {
            name: admin_name,
            role: Role::Admin,
            created_at: now,
            credential_rotated_at: now,
        },
        admin_credential: CredentialHash::of(credential.expose_secret()),
    };
    let mut event = AuditEvent::new(
        now,
        Actor::System,
        action::TRUST_DOMAIN_CREATE,
        Outcome::Success,
    );
    event.details = serde_json::json!({
        "trust_domain": config.trust_domain.as_str(),
        "kids": init.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        "bootstrap_admin": BOOTSTRAP_ADMIN,
        "bootstrap_credential_source": if generated { "generated" } else { ENV_BOOTSTRAP_TOKEN },
    });
    store.initialize(&init, &event).await?;
    Ok(generated.then_some(credential))
}
