//! The active policy set in memory, and hot reload across replicas.
//!
//! Policy sets are versioned in the store (every push is a new version). Each server compiles
//! the active version once and keeps it; a background task polls the active version number
//! every [`RELOAD_EVERY`] and swaps in a newer one. A version that does not compile here keeps
//! the last good one in force and marks the server unready until a good version arrives. With
//! no version ever pushed, the engine holds no policy: everything is denied.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aims_policy::{Engine, PolicyError, PolicySource, Schema, Validation};

/// How often replicas look for a newly activated policy version.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// One compiled policy version.
pub struct LoadedPolicy {
    /// Its version number (0: none pushed yet).
    pub version: u64,
    /// The compiled, indexed set.
    pub engine: Engine,
}

/// Compiles a stored set: its one `*.cedarschema` file (the AIMS schema if none) and every
/// `*.cedar` file in name order, validated in strict mode. Other files (tests) are ignored.
pub fn compile(files: &BTreeMap<String, String>) -> Result<Engine, PolicyError> {
    let schemas: Vec<_> = files
        .iter()
        .filter(|(name, _)| name.ends_with(".cedarschema"))
        .collect();
    let schema = match schemas.as_slice() {
        [] => Schema::aims()?,
        [(name, text)] => Schema::parse(name, text)?,
        _ => {
            return Err(PolicyError::Layout {
                path: "policy set".into(),
                message: "more than one *.cedarschema file".to_owned(),
            });
        }
    };
    let sources: Vec<PolicySource> = files
        .iter()
        .filter(|(name, _)| name.ends_with(".cedar"))
        .map(|(name, text)| PolicySource::new(name.clone(), text.clone()))
        .collect();
    Engine::compile(schema, &sources, Validation::Strict)
}

/// The policy version in force, swapped whole on reload.
pub struct PolicyHolder {
    current: RwLock<Arc<LoadedPolicy>>,
    healthy: AtomicBool,
}

impl PolicyHolder {
    /// A holder with the empty set (deny everything) until a version is loaded.
    pub fn empty() -> Result<Self, PolicyError> {
        Ok(Self {
            current: RwLock::new(Arc::new(LoadedPolicy {
                version: 0,
                engine: compile(&BTreeMap::new())?,
            })),
            healthy: AtomicBool::new(true),
        })
    }

    /// The version in force.
    pub fn current(&self) -> Arc<LoadedPolicy> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `loaded` in force.
    pub fn install(&self, loaded: LoadedPolicy) {
        let loaded = Arc::new(loaded);
        match self.current.write() {
            Ok(mut guard) => *guard = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        self.healthy.store(true, Ordering::Relaxed);
    }

    /// Records that the active version could not be loaded; the last good one stays.
    pub fn mark_failed(&self) {
        self.healthy.store(false, Ordering::Relaxed);
    }

    /// Whether the active version is the one in force.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
