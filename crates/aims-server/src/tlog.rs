//! This replica's view of the audit log as a Merkle tree log: the leaf hashes of every entry
//! it has integrated (with the hashes of every complete tile above them, C2SP tlog-tiles),
//! the log key that signs checkpoints, and the loop that integrates new entries and publishes
//! a signed checkpoint every `audit_checkpoint_entries` entries or
//! `audit_checkpoint_interval`.
//!
//! Integrating verifies as it goes: each new entry must follow the last one (sequence, chain
//! link and content hash) and its copied columns must match its body; at start the whole log
//! is re-read and every stored checkpoint's root checked. A break is never signed over: the
//! replica stops checkpointing, sets `aims_audit_tree_broken` and reports unready. Every
//! replica integrates and may checkpoint; the same tree signed twice is the same note
//! (Ed25519 is deterministic), so the store keeps one. Tiles and entry bundles are served for
//! the tree of a signed checkpoint only, checked against its root; a bundle row that no longer
//! hashes to the leaf integrated from it is a break. Proofs, checkpoint roots and every check
//! of a size's root against its checkpoint come from the tile hashes, logarithmic in the tree
//! size. The hashing is `aims_core::tlog`'s and `aims_core::tiles`'s; this module holds the
//! state and the I/O.

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use aims_core::audit::{self, ChainHead};
use aims_core::id::TrustDomain;
use aims_core::tiles::{self, TileError, TilePath, TiledTree};
use aims_core::tlog::{self, Hash, TreeError};
use aims_store::{MAX_PAGE, Store, StoreError, StoredCheckpoint, StoredLogKey};
use aims_token::master::MasterKey;
use aims_token::note::{LogKey, NoteVerifier};
use ring::rand::SystemRandom;
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Purpose string binding the sealed log key to its role.
pub const SEAL_PURPOSE_LOG_KEY: &str = "audit-log-key";

/// Longest wait between two looks at the log for new entries.
const POLL_AT_MOST: Duration = Duration::from_millis(200);

/// The log's origin (and its key's name) for a trust domain.
pub fn origin(trust_domain: &TrustDomain) -> String {
    format!("{trust_domain}/aims/audit")
}

/// Why the tree could not be set up or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlogError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log key did not unseal, parse or match its stored public key.
    #[error("the audit log key cannot be loaded: {0}")]
    Key(String),
    /// The stored log does not match this replica's tree or a signed checkpoint.
    #[error("the audit log is broken: {0}")]
    Broken(String),
    /// A proof request that cannot be answered.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A tile request that cannot be answered.
    #[error(transparent)]
    Tile(#[from] TileError),
    /// This replica has not integrated the asked tree size yet.
    #[error("this replica has integrated {integrated} entries, fewer than {size}")]
    Behind {
        /// Entries integrated.
        integrated: u64,
        /// Size asked for.
        size: u64,
    },
}

/// What has been integrated.
#[derive(Default)]
struct Integrated {
    tiles: TiledTree,
    head: Option<ChainHead>,
    /// Largest size this replica knows to be checkpointed.
    checkpointed: u64,
    broken: Option<String>,
}

/// The audit log's Merkle tree as this replica has integrated it.
pub struct AuditTree {
    key: LogKey,
    verifier: NoteVerifier,
    state: RwLock<Integrated>,
    /// One integration at a time.
    integrating: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AuditTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTree")
            .field("origin", &self.key.name())
            .finish_non_exhaustive()
    }
}

impl AuditTree {
    /// Loads (or creates, sealed under `master`) the log key, integrates the whole log and
    /// checks it against every stored checkpoint. A break found here leaves the tree marked
    /// broken rather than failing start-up, so the replica still serves and says why.
    pub async fn load(
        store: &dyn Store,
        master: &MasterKey,
        rng: &SystemRandom,
        trust_domain: &TrustDomain,
        now: OffsetDateTime,
    ) -> Result<Self, TlogError> {
        let origin = origin(trust_domain);
        let stored = match store.log_key().await? {
            Some(stored) => stored,
            None => {
                let generated =
                    LogKey::generate(rng, &origin).map_err(|e| TlogError::Key(e.to_string()))?;
                let sealed = master
                    .seal(
                        rng,
                        SEAL_PURPOSE_LOG_KEY,
                        &origin,
                        generated.pkcs8.expose_secret(),
                    )
                    .map_err(|e| TlogError::Key(e.to_string()))?;
                store
                    .create_log_key(&StoredLogKey {
                        name: origin.clone(),
                        public_key: generated.key.public_key().to_vec(),
                        sealed_private_key: sealed,
                        created_at: now,
                    })
                    .await?
            }
        };
        if stored.name != origin {
            return Err(TlogError::Key(format!(
                "the stored key is for origin {:?}, not {origin:?}",
                stored.name
            )));
        }
        let pkcs8 = master
            .open(
                SEAL_PURPOSE_LOG_KEY,
                &stored.name,
                &stored.sealed_private_key,
            )
            .map_err(|e| TlogError::Key(e.to_string()))?;
        let key = LogKey::from_pkcs8(&stored.name, pkcs8.expose_secret())
            .map_err(|e| TlogError::Key(e.to_string()))?;
        if key.public_key() != stored.public_key.as_slice() {
            return Err(TlogError::Key(
                "the sealed key does not match its stored public key".to_owned(),
            ));
        }
        let verifier =
            NoteVerifier::parse(&key.verifier_key()).map_err(|e| TlogError::Key(e.to_string()))?;
        let tree = Self {
            key,
            verifier,
            state: RwLock::new(Integrated::default()),
            integrating: tokio::sync::Mutex::new(()),
        };
        tree.integrate(store).await?;
        tree.check_stored_checkpoints(store).await?;
        Ok(tree)
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        self.key.name()
    }

    /// The published verifier key string.
    pub fn verifier_key(&self) -> String {
        self.key.verifier_key()
    }

    /// Why the log is broken, if it is.
    pub fn broken(&self) -> Option<String> {
        self.read(|s| s.broken.clone())
    }

    /// Entries integrated.
    pub fn size(&self) -> u64 {
        self.read(|s| s.tiles.size())
    }

    fn read<T>(&self, f: impl FnOnce(&Integrated) -> T) -> T {
        // A poisoned lock means a panic mid-update of plain data; the data is still usable
        // for reading, and a half-made update is caught by the next verification.
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Integrated) -> T) -> T {
        f(&mut self.state.write().unwrap_or_else(PoisonError::into_inner))
    }

    fn mark_broken(&self, why: String) {
        tracing::error!(problem = %why, "the audit log is broken");
        self.write(|s| {
            if s.broken.is_none() {
                s.broken = Some(why);
            }
        });
    }

    /// Reads the entries appended since the last integration and adds them, verifying each
    /// follows the one before. Returns the tree size.
    pub async fn integrate(&self, store: &dyn Store) -> Result<u64, TlogError> {
        let _one = self.integrating.lock().await;
        loop {
            if self.broken().is_some() {
                return Ok(self.size());
            }
            let (after, mut head) = self.read(|s| (s.tiles.size(), s.head));
            let page = store.audit_entries(after, MAX_PAGE).await?;
            if page.is_empty() {
                return Ok(after);
            }
            // One thread: this runs beside the requests, which the other cores serve.
            let verified = audit::verify_entries(head.unwrap_or(ChainHead::EMPTY), &page, 1);
            if !verified.leaves.is_empty() {
                head = Some(verified.head);
            }
            let full = page.len() == MAX_PAGE as usize;
            self.write(|s| {
                for leaf in verified.leaves {
                    s.tiles.push(leaf);
                }
                s.head = head;
            });
            if let Some(error) = verified.error {
                self.mark_broken(error.to_string());
            }
            if !full {
                return Ok(self.size());
            }
        }
    }

    /// Checks the integrated tree against every stored checkpoint: each must be signed by the
    /// log key and its root must be the root of that many integrated entries.
    async fn check_stored_checkpoints(&self, store: &dyn Store) -> Result<(), TlogError> {
        let mut after = 0;
        loop {
            let page = store.checkpoints(after, MAX_PAGE).await?;
            for stored in &page {
                after = stored.tree_size;
                if let Err(why) = self.matches(stored) {
                    self.mark_broken(why);
                    return Ok(());
                }
                self.write(|s| s.checkpointed = s.checkpointed.max(stored.tree_size));
            }
            if page.len() < MAX_PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Whether `stored` is a valid checkpoint of the integrated tree.
    fn matches(&self, stored: &StoredCheckpoint) -> Result<(), String> {
        let size = stored.tree_size;
        let opened = self
            .verifier
            .open(&stored.note)
            .map_err(|e| format!("the stored checkpoint of size {size} is not valid: {e}"))?;
        if opened.size != size || opened.root != stored.root {
            return Err(format!(
                "the stored checkpoint of size {size} does not say what its row says"
            ));
        }
        self.read(|s| match s.tiles.root(size) {
            None => Err(format!(
                "the log holds {} entries but a checkpoint signed {size}: entries were \
                 deleted from its end",
                s.tiles.size()
            )),
            Some(root) if root != opened.root => Err(mismatch(size)),
            Some(_) => Ok(()),
        })
    }

    /// Signs and stores a checkpoint of the integrated tree if it grew since the last one.
    /// Returns the size checkpointed, if any.
    pub async fn checkpoint(
        &self,
        store: &dyn Store,
        now: OffsetDateTime,
    ) -> Result<Option<u64>, TlogError> {
        let (size, root, checkpointed, broken) = self.read(|s| {
            let size = s.tiles.size();
            (size, s.tiles.root(size), s.checkpointed, s.broken.clone())
        });
        if let Some(why) = broken {
            return Err(TlogError::Broken(why));
        }
        let Some(root) = root.filter(|_| size > checkpointed) else {
            return Ok(None);
        };
        let note = self.key.sign(&tlog::Checkpoint {
            origin: self.origin().to_owned(),
            size,
            root,
        });
        store
            .add_checkpoint(&StoredCheckpoint {
                tree_size: size,
                root,
                note: note.clone(),
                created_at: now,
            })
            .await?;
        // Another replica may have checkpointed this size first: the same tree gives the
        // same note, so a different one means the replicas saw different logs.
        match store.checkpoint(size).await? {
            Some(stored) if stored.note == note => {}
            _ => {
                let why = format!("the stored checkpoint of size {size} is not this tree's");
                self.mark_broken(why.clone());
                return Err(TlogError::Broken(why));
            }
        }
        self.write(|s| s.checkpointed = s.checkpointed.max(size));
        Ok(Some(size))
    }

    /// The leaf hash of `index` and its inclusion proof in the checkpointed tree `stored`.
    pub fn inclusion(
        &self,
        index: u64,
        stored: &StoredCheckpoint,
    ) -> Result<(Hash, Vec<Hash>), TlogError> {
        let size = stored.tree_size;
        if index >= size {
            return Err(TreeError::IndexBeyondTree { index, size }.into());
        }
        self.serve(|tiles| {
            signed(tiles, stored)?;
            let leaf = usize::try_from(index)
                .ok()
                .and_then(|i| tiles.leaves().get(i))
                .copied()
                .ok_or(TreeError::IndexBeyondTree { index, size })?;
            Ok((leaf, tlog::inclusion_proof_over(tiles, index, size)?))
        })
    }

    /// The consistency proof between the checkpointed trees `first` and `second`.
    pub fn consistency(
        &self,
        first: &StoredCheckpoint,
        second: &StoredCheckpoint,
    ) -> Result<Vec<Hash>, TlogError> {
        self.serve(|tiles| {
            signed(tiles, first)?;
            signed(tiles, second)?;
            Ok(tlog::consistency_proof_over(
                tiles,
                first.tree_size,
                second.tree_size,
            )?)
        })
    }

    /// The hashes tile `tile` holds in the checkpointed tree `stored` (C2SP tlog-tiles; an
    /// entry bundle's path gives its level-0 tile), after checking that this replica's tree of
    /// that size has the checkpoint's root.
    pub fn tile(&self, tile: &TilePath, stored: &StoredCheckpoint) -> Result<Vec<Hash>, TlogError> {
        let size = stored.tree_size;
        self.serve(|tiles| {
            let hashes = tiles.tile(tile, size)?.ok_or(TlogError::Behind {
                integrated: tiles.size(),
                size,
            })?;
            signed(tiles, stored)?;
            Ok(hashes.to_vec())
        })
    }

    /// The entry bundle `tile` of the checkpointed tree `stored`: the stored rows' leaf bytes,
    /// each checked against the leaf hash integrated from it (a row edited since is a break).
    pub async fn entry_bundle(
        &self,
        store: &dyn Store,
        tile: &TilePath,
        stored: &StoredCheckpoint,
    ) -> Result<Vec<u8>, TlogError> {
        let leaves = self.tile(tile, stored)?;
        let first = tile.within(stored.tree_size)?.start;
        let rows = store.audit_entries(first, u32::from(tile.width)).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for (index, leaf) in (first..).zip(&leaves) {
            let bytes = rows
                .get(entries.len())
                .filter(|row| row.record.seq == index + 1)
                .map(|row| row.leaf_bytes())
                .filter(|bytes| tlog::leaf_hash(bytes) == *leaf);
            let Some(bytes) = bytes else {
                let why = format!(
                    "entry {} is missing or changed since it was integrated",
                    index + 1
                );
                self.mark_broken(why.clone());
                return Err(TlogError::Broken(why));
            };
            entries.push(bytes);
        }
        Ok(tiles::entry_bundle(
            first,
            entries.iter().map(Vec::as_slice),
        )?)
    }

    /// Answers `f` from the integrated tree unless the log is known to be broken; a break
    /// `f` finds (a stored checkpoint the tree does not match) marks the log broken.
    fn serve<T>(&self, f: impl FnOnce(&TiledTree) -> Result<T, TlogError>) -> Result<T, TlogError> {
        let mut found = None;
        let served = self.read(|s| match &s.broken {
            Some(why) => Err(TlogError::Broken(why.clone())),
            None => f(&s.tiles).inspect_err(|e| {
                if let TlogError::Broken(why) = e {
                    found = Some(why.clone());
                }
            }),
        });
        if let Some(why) = found {
            self.mark_broken(why);
        }
        served
    }
}

/// Checks that the first `stored.tree_size` integrated leaves have the checkpoint's root,
/// computed from the tile hashes (logarithmic in the size).
fn signed(tiles: &TiledTree, stored: &StoredCheckpoint) -> Result<(), TlogError> {
    let size = stored.tree_size;
    match tiles.root(size) {
        None => Err(TlogError::Behind {
            integrated: tiles.size(),
            size,
        }),
        Some(root) if root != stored.root => Err(TlogError::Broken(mismatch(size))),
        Some(_) => Ok(()),
    }
}

/// Why the tree of `size` leaves is not the one a checkpoint of that size signed.
fn mismatch(size: u64) -> String {
    format!("the first {size} entries do not match the signed checkpoint of that size")
}

/// Integrates new entries and checkpoints the tree every `entries` entries or `interval`,
/// until `stop`. Failures are logged and retried; a broken log sets the metric and stops
/// checkpointing.
pub async fn run(
    tree: std::sync::Arc<AuditTree>,
    store: std::sync::Arc<dyn Store>,
    metrics: std::sync::Arc<Metrics>,
    (interval, entries): (Duration, u64),
    mut stop: watch::Receiver<bool>,
) {
    let poll = interval.min(POLL_AT_MOST);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        if let Err(error) = tree.integrate(store.as_ref()).await {
            tracing::warn!(%error, "cannot read new audit entries");
            continue;
        }
        let size = tree.size();
        metrics.audit_tree_size.set(size);
        if tree.broken().is_some() {
            let _ = metrics.audit_tree_broken.set(1);
            continue;
        }
        let pending = size.saturating_sub(tree.read(|s| s.checkpointed));
        if pending == 0 || (pending < entries && last.elapsed() < interval) {
            continue;
        }
        match tree
            .checkpoint(store.as_ref(), OffsetDateTime::now_utc())
            .await
        {
            Ok(Some(_)) => {
                metrics.audit_checkpoints.inc();
                last = Instant::now();
            }
            Ok(None) => {}
            Err(TlogError::Broken(_)) => {
                metrics.audit_tree_broken.set(1);
            }
            Err(error) => tracing::warn!(%error, "cannot store an audit checkpoint"),
        }
    }
}
