//! The client side of the audit Merkle tree log: reads every stored entry and every signed
//! checkpoint from a server, recomputes the tree itself and checks it against the latest
//! checkpoint, the stored ones and a checkpoint the caller kept outside the database, all
//! opened with the published (or a pinned) log key. It trusts the server for nothing but
//! the bytes: the hashing is `aims_core::tlog`'s and the note rules `aims_token::note`'s.
//!
//! What is found is a value ([`LogReport::problem`]): the first entry that is wrong, when the
//! entries themselves show it (a gap, a broken link, a hash that does not match the content, a
//! copied column that disagrees with its body, a tail missing under a checkpoint), else the
//! narrowest range between two signed checkpoints that holds it.

use std::collections::BTreeMap;

use aims_api::AuditQuery;
use aims_api::tlog::AuditEntryView;
use aims_core::audit::{
    self, AuditEntry, AuditRecord, ChainError, ChainHash, ChainHead, EntryError,
};
use aims_core::tlog::{Checkpoint, Frontier, Hash};
use aims_token::note::NoteVerifier;
use serde::Serialize;

use crate::{AdminClient, SdkError};

/// Page size of the reads.
const PAGE: u32 = 1000;

/// What was found wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogProblem {
    /// The first bad entry's sequence number, when the entries pin it down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What is wrong.
    pub message: String,
}

/// The outcome of [`verify_log`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogReport {
    /// The log's origin.
    pub origin: String,
    /// Entries read and verified before any problem.
    pub entries: u64,
    /// Checkpoint sizes whose root matched the recomputed tree.
    pub checkpoints_matched: Vec<u64>,
    /// The kept checkpoint's size, when one was given and opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_size: Option<u64>,
    /// The latest checkpoint's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_size: Option<u64>,
    /// The first problem, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<LogProblem>,
}

impl LogReport {
    /// Whether the log verified.
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// A stored row as the wire gives it, back as the entry whose bytes a leaf hashes; `None` if
/// its hashes are not hex (a row no server wrote).
pub fn entry_of(view: &AuditEntryView) -> Option<AuditEntry> {
    Some(AuditEntry {
        record: AuditRecord {
            seq: view.seq,
            prev_hash: ChainHash::from_hex(&view.prev_hash)?,
            hash: ChainHash::from_hex(&view.hash)?,
            body: view.body.clone(),
        },
        time_ms: view.time_ms,
        action: view.action.clone(),
        agent: view.agent.clone(),
        task_id: view.task_id.clone(),
        txn: view.txn.clone(),
    })
}

/// Roots the tree must have at given sizes, and who vouched for each.
struct Targets {
    roots: BTreeMap<u64, (Hash, String)>,
}

impl Targets {
    /// Adds a signed checkpoint; `Err` when another one signed a different root at its size.
    fn add(&mut self, checkpoint: &Checkpoint, source: &str) -> Result<(), LogProblem> {
        match self.roots.get(&checkpoint.size) {
            Some((root, other)) if *root != checkpoint.root => Err(LogProblem {
                seq: None,
                message: format!(
                    "the {source} checkpoint and the {other} checkpoint of size {} sign \
                     different roots: the log was forked or rewritten",
                    checkpoint.size
                ),
            }),
            Some(_) => Ok(()),
            None => {
                self.roots
                    .insert(checkpoint.size, (checkpoint.root, source.to_owned()));
                Ok(())
            }
        }
    }
}

/// Verifies the server's stored log against its signed checkpoints and `kept` (a checkpoint
/// note saved earlier), opening every note with `pinned_key` (a verifier key string) or, when
/// none is given, the key the server publishes.
pub async fn verify_log(
    client: &AdminClient,
    kept: Option<&str>,
    pinned_key: Option<&str>,
) -> Result<LogReport, SdkError> {
    let published = client.audit_log_key().await?;
    let vkey = pinned_key.unwrap_or(&published.verifier_key);
    let mut report = LogReport {
        origin: published.origin.clone(),
        entries: 0,
        checkpoints_matched: Vec::new(),
        kept_size: None,
        latest_size: None,
        problem: None,
    };
    let fail = |mut report: LogReport, seq: Option<u64>, message: String| {
        report.problem = Some(LogProblem { seq, message });
        Ok(report)
    };
    let verifier = match NoteVerifier::parse(vkey) {
        Ok(v) => v,
        Err(e) => return fail(report, None, format!("the log key is refused: {e}")),
    };
    report.origin = verifier.name().to_owned();
    let mut targets = Targets {
        roots: BTreeMap::new(),
    };
    if let Some(note) = kept {
        let checkpoint = match verifier.open(note) {
            Ok(c) => c,
            Err(e) => return fail(report, None, format!("the kept checkpoint is refused: {e}")),
        };
        report.kept_size = Some(checkpoint.size);
        if let Err(p) = targets.add(&checkpoint, "kept") {
            report.problem = Some(p);
            return Ok(report);
        }
    }
    match client.audit_checkpoint(None).await {
        Ok(latest) => {
            let checkpoint = match verifier.open(&latest.note) {
                Ok(c) => c,
                Err(e) => {
                    return fail(
                        report,
                        None,
                        format!("the latest checkpoint is refused: {e}"),
                    );
                }
            };
            report.latest_size = Some(checkpoint.size);
            if let Err(p) = targets.add(&checkpoint, "latest") {
                report.problem = Some(p);
                return Ok(report);
            }
        }
        // No checkpoint stored at all: the kept one (if any) still binds the log.
        Err(SdkError::Api { status: 404, .. }) => {}
        Err(e) => return Err(e),
    }
    let mut after = 0;
    loop {
        let page = client
            .audit_checkpoints(&AuditQuery {
                after: Some(after),
                limit: Some(PAGE),
            })
            .await?;
        for stored in &page.checkpoints {
            after = stored.tree_size;
            let checkpoint = match verifier.open(&stored.note) {
                Ok(c) if c.size == stored.tree_size => c,
                Ok(_) | Err(_) => {
                    return fail(
                        report,
                        None,
                        format!(
                            "the stored checkpoint of size {} is not signed by the log key",
                            stored.tree_size
                        ),
                    );
                }
            };
            if let Err(p) = targets.add(&checkpoint, "stored") {
                report.problem = Some(p);
                return Ok(report);
            }
        }
        if page.checkpoints.len() < PAGE as usize {
            break;
        }
    }
    walk(client, &targets, report).await
}

/// Reads the entries in order, checking each and the tree at every target size.
async fn walk(
    client: &AdminClient,
    targets: &Targets,
    mut report: LogReport,
) -> Result<LogReport, SdkError> {
    let mut frontier = Frontier::new();
    let mut head = ChainHead::EMPTY;
    // What an entry shows alone is checked on every core (see `audit::verify_entries`).
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // The largest size whose checkpoint matched: the first bad entry lies after it.
    let mut good = 0u64;
    loop {
        let page = client
            .audit_entries(&AuditQuery {
                after: Some(frontier.size()),
                limit: Some(PAGE),
            })
            .await?;
        // The page's entries up to the first one whose hashes are not even hex.
        let mut entries = Vec::with_capacity(page.entries.len());
        let mut malformed = None;
        for view in &page.entries {
            match entry_of(view) {
                Some(entry) => entries.push(entry),
                None => {
                    malformed = Some(view.seq);
                    break;
                }
            }
        }
        let verified = audit::verify_entries(head, &entries, workers);
        head = verified.head;
        for leaf in verified.leaves {
            frontier.push(leaf);
            report.entries = frontier.size();
            if let Some((root, source)) = targets.roots.get(&frontier.size()) {
                if frontier.root() != *root {
                    report.problem = Some(LogProblem {
                        seq: None,
                        message: format!(
                            "the first {} entries do not match the {source} checkpoint: an \
                             entry from {} to {} was changed, removed or reordered",
                            frontier.size(),
                            good.saturating_add(1),
                            frontier.size()
                        ),
                    });
                    return Ok(report);
                }
                good = frontier.size();
                report.checkpoints_matched.push(good);
            }
        }
        let expected = frontier.size().saturating_add(1);
        let problem = match (verified.error, malformed) {
            (Some(EntryError::Chain(ChainError::Gap { found, .. })), _) => Some(format!(
                "entry {expected} is missing or out of order: the next stored entry is {found}"
            )),
            (Some(error), _) => Some(error.to_string()),
            (None, Some(seq)) => Some(format!("entry {seq} has malformed hashes")),
            (None, None) => None,
        };
        if let Some(message) = problem {
            report.problem = Some(LogProblem {
                seq: Some(expected),
                message,
            });
            return Ok(report);
        }
        if page.entries.len() < PAGE as usize {
            break;
        }
    }
    let n = frontier.size();
    if let Some((&size, (_, source))) = targets.roots.range(n.saturating_add(1)..).next_back() {
        report.problem = Some(LogProblem {
            seq: Some(n.saturating_add(1)),
            message: format!(
                "the log ends at entry {n} but the {source} checkpoint covers {size} entries: \
                 entries {} to {size} were deleted",
                n.saturating_add(1)
            ),
        });
    }
    Ok(report)
}
