//! Wire types of the audit log as a Merkle tree log: its entries with every column, its
//! signed checkpoints, inclusion and consistency proofs, and the published log key. Hashes
//! travel as standard base64, as in the checkpoint notes themselves.

use serde::{Deserialize, Serialize};

/// Where the log's checkpoint key is published, beside the JWKS (no authentication).
pub const LOG_KEY_PATH: &str = "/.well-known/aims-audit-log-key";

/// `GET /.well-known/aims-audit-log-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogKeyView {
    /// The log's origin (also the key's name).
    pub origin: String,
    /// The signed-note verifier key: `<name>+<hex key id>+<base64(0x01 || Ed25519 key)>`.
    pub verifier_key: String,
}

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// Entries in the tree.
    pub tree_size: u64,
    /// The tree's root (base64).
    pub root_hash: String,
    /// The C2SP signed note; save it to check the log against later.
    pub note: String,
}

/// Query of `GET /v1/audit/checkpoint`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// The checkpoint of this tree size (default: the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_size: Option<u64>,
}

/// `GET /v1/audit/checkpoints?after=&limit=`: checkpoints of trees larger than `after`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointPage {
    /// In size order.
    pub checkpoints: Vec<CheckpointView>,
}

/// One stored audit row with every column: what a leaf hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntryView {
    /// Position, from 1; the leaf index is `seq - 1`.
    pub seq: u64,
    /// The `time_ms` column.
    pub time_ms: i64,
    /// The `action` column.
    pub action: String,
    /// The `agent` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The `task_id` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The `txn` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    /// Chain hash of the record before (hex).
    pub prev_hash: String,
    /// This record's chain hash (hex).
    pub hash: String,
    /// The stored event, byte for byte.
    pub body: String,
}

/// `GET /v1/audit/entries?after=&limit=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntryPage {
    /// In order.
    pub entries: Vec<AuditEntryView>,
}

/// Query of `GET /v1/audit/proof/inclusion`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The leaf index (`seq - 1`).
    pub index: u64,
    /// A checkpointed tree size.
    pub tree_size: u64,
}

/// `GET /v1/audit/proof/inclusion`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InclusionProofView {
    /// The leaf index.
    pub index: u64,
    /// The tree size.
    pub tree_size: u64,
    /// The leaf's hash (base64).
    pub leaf_hash: String,
    /// Sibling hashes, nearest first (base64), as RFC 9162 §2.1.3.
    pub proof: Vec<String>,
    /// The signed checkpoint of `tree_size`.
    pub checkpoint: String,
}

/// Query of `GET /v1/audit/proof/consistency`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older checkpointed tree size.
    pub first: u64,
    /// The newer checkpointed tree size.
    pub second: u64,
}

/// `GET /v1/audit/proof/consistency`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencyProofView {
    /// The older size.
    pub first: u64,
    /// The newer size.
    pub second: u64,
    /// The proof's hashes (base64), as RFC 9162 §2.1.4.
    pub proof: Vec<String>,
    /// The signed checkpoint of `first`.
    pub first_checkpoint: String,
    /// The signed checkpoint of `second`.
    pub second_checkpoint: String,
}
