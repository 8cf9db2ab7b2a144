//! The audit log as a Merkle tree log (RFC 9162 §2.1): leaf and node hashing, the tree head
//! of any size, inclusion and consistency proofs with their verifiers, the compact range a
//! writer extends one leaf at a time, and the C2SP tlog-checkpoint body. A proof takes its
//! subtree roots from a [`SubtreeRoots`]: the leaves themselves (the linear reference) or
//! [`crate::tiles::TiledTree`]'s stored tile hashes (logarithmic).
//!
//! Pure functions over leaf hashes: which bytes a leaf covers is [`crate::audit::AuditEntry`]'s
//! business, signing a checkpoint is `aims-token`'s, and storing either is the store's. Nothing
//! here reads a clock, a file or the network.

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// RFC 9162 leaf prefix.
const LEAF_PREFIX: u8 = 0x00;
/// RFC 9162 interior node prefix.
const NODE_PREFIX: u8 = 0x01;

/// Why a tree operation or a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The leaf index is not inside the tree.
    #[error("index {index} is not inside a tree of size {size}")]
    IndexBeyondTree {
        /// The index asked for.
        index: u64,
        /// The tree's size.
        size: u64,
    },
    /// A tree size larger than the leaves at hand.
    #[error("tree size {size} is larger than the {available} leaves known")]
    SizeBeyondTree {
        /// The size asked for.
        size: u64,
        /// The leaves known.
        available: u64,
    },
    /// A consistency proof between sizes in the wrong order.
    #[error("the first tree size {first} is larger than the second {second}")]
    SizeOrder {
        /// The first (older) size.
        first: u64,
        /// The second (newer) size.
        second: u64,
    },
    /// A proof that does not verify.
    #[error("the proof does not verify")]
    ProofInvalid,
}

/// `SHA-256(0x00 || entry)`: the hash of one leaf.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(entry);
    finish(ctx)
}

/// [`leaf_hash`] of bytes fed in parts, for a leaf encoded as it is hashed.
pub struct LeafHasher(digest::Context);

impl LeafHasher {
    /// A leaf hash with no bytes fed yet.
    pub fn new() -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&[LEAF_PREFIX]);
        Self(ctx)
    }

    /// Feeds the next part of the leaf's bytes.
    pub fn update(&mut self, part: &[u8]) {
        self.0.update(part);
    }

    /// The leaf hash of every part fed, in order.
    pub fn finish(self) -> Hash {
        finish(self.0)
    }
}

impl Default for LeafHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    finish(digest::Context::new(&digest::SHA256))
}

fn finish(ctx: digest::Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH over leaf hashes (RFC 9162 §2.1.1).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [only] => *only,
        _ => {
            let at = usize::try_from(split_point(leaves.len() as u64)).unwrap_or(leaves.len());
            let (left, right) = leaves.split_at(at);
            node_hash(&root(left), &root(right))
        }
    }
}

/// Where a proof takes the root of each subtree it names: hashed from the leaves themselves
/// (`[Hash]`: linear in the subtree's size, the reference), or from stored roots of larger
/// subtrees ([`crate::tiles::TiledTree`]: logarithmic in the tree's size).
pub trait SubtreeRoots {
    /// How many leaves are known.
    fn leaf_count(&self) -> u64;

    /// The MTH of the leaves `leaves`, a subtree as RFC 9162's recursion names one (its start
    /// a multiple of a power of two no smaller than its length); `None` when a leaf is
    /// unknown, and may be `None` for a range that is not such a subtree.
    fn subtree_root(&self, leaves: Range<u64>) -> Option<Hash>;
}

impl SubtreeRoots for [Hash] {
    fn leaf_count(&self) -> u64 {
        self.len() as u64
    }

    fn subtree_root(&self, leaves: Range<u64>) -> Option<Hash> {
        let start = usize::try_from(leaves.start).ok()?;
        let end = usize::try_from(leaves.end).ok()?;
        self.get(start..end).map(root)
    }
}

/// Refuses a tree size larger than the leaves `tree` knows.
fn known(tree: &(impl SubtreeRoots + ?Sized), size: u64) -> Result<(), TreeError> {
    let available = tree.leaf_count();
    if size > available {
        return Err(TreeError::SizeBeyondTree { size, available });
    }
    Ok(())
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 9162
/// §2.1.3.1), nearest sibling first, every subtree hashed from the leaves: the reference for
/// [`inclusion_proof_over`], linear in `size`.
pub fn inclusion_proof(leaves: &[Hash], index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
    inclusion_proof_over(leaves, index, size)
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 9162
/// §2.1.3.1), nearest sibling first, with the subtree roots `tree` gives.
pub fn inclusion_proof_over(
    tree: &(impl SubtreeRoots + ?Sized),
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, TreeError> {
    known(tree, size)?;
    if index >= size {
        return Err(TreeError::IndexBeyondTree { index, size });
    }
    let mut proof = Vec::new();
    path(index, 0..size, tree, &mut proof).ok_or(TreeError::SizeBeyondTree {
        size,
        available: tree.leaf_count(),
    })?;
    Ok(proof)
}

/// RFC 9162 `PATH(m, D[n])` for leaf `m` of the subtree `leaves` (absolute positions).
fn path(
    m: u64,
    leaves: Range<u64>,
    tree: &(impl SubtreeRoots + ?Sized),
    out: &mut Vec<Hash>,
) -> Option<()> {
    let n = leaves.end.checked_sub(leaves.start)?;
    if n <= 1 {
        return Some(());
    }
    let mid = leaves.start + split_point(n);
    if m < mid {
        path(m, leaves.start..mid, tree, out)?;
        out.push(tree.subtree_root(mid..leaves.end)?);
    } else {
        path(m, mid..leaves.end, tree, out)?;
        out.push(tree.subtree_root(leaves.start..mid)?);
    }
    Some(())
}

/// The consistency proof between the trees of the first `first` and `second` leaves (RFC 9162
/// §2.1.4.1), every subtree hashed from the leaves: the reference for
/// [`consistency_proof_over`], linear in `second`. Empty when `first` is 0 or equals `second`.
pub fn consistency_proof(leaves: &[Hash], first: u64, second: u64) -> Result<Vec<Hash>, TreeError> {
    consistency_proof_over(leaves, first, second)
}

/// The consistency proof between the trees of the first `first` and `second` leaves (RFC 9162
/// §2.1.4.1), with the subtree roots `tree` gives. Empty when `first` is 0 or equals `second`.
pub fn consistency_proof_over(
    tree: &(impl SubtreeRoots + ?Sized),
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, TreeError> {
    if first > second {
        return Err(TreeError::SizeOrder { first, second });
    }
    known(tree, second)?;
    let mut proof = Vec::new();
    if first > 0 && first < second {
        subproof(first, 0..second, true, tree, &mut proof).ok_or(TreeError::SizeBeyondTree {
            size: second,
            available: tree.leaf_count(),
        })?;
    }
    Ok(proof)
}

/// RFC 9162 `SUBPROOF(m, D[n], b)` for the first `m` leaves (an absolute position) of the
/// subtree `leaves`.
fn subproof(
    m: u64,
    leaves: Range<u64>,
    complete: bool,
    tree: &(impl SubtreeRoots + ?Sized),
    out: &mut Vec<Hash>,
) -> Option<()> {
    if m == leaves.end {
        if !complete {
            out.push(tree.subtree_root(leaves)?);
        }
        return Some(());
    }
    let n = leaves.end.checked_sub(leaves.start)?;
    if n < 2 {
        // `m` lies strictly inside a subtree of one leaf: not a consistency request.
        return None;
    }
    let mid = leaves.start + split_point(n);
    if m <= mid {
        subproof(m, leaves.start..mid, complete, tree, out)?;
        out.push(tree.subtree_root(mid..leaves.end)?);
    } else {
        subproof(m, mid..leaves.end, false, tree, out)?;
        out.push(tree.subtree_root(leaves.start..mid)?);
    }
    Some(())
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), TreeError> {
    if index >= size {
        return Err(TreeError::IndexBeyondTree { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(TreeError::ProofInvalid);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 && r == *root {
        Ok(())
    } else {
        Err(TreeError::ProofInvalid)
    }
}

/// Verifies that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), TreeError> {
    if first > second {
        return Err(TreeError::SizeOrder { first, second });
    }
    if first == second {
        return if proof.is_empty() && first_root == second_root {
            Ok(())
        } else {
            Err(TreeError::ProofInvalid)
        };
    }
    if first == 0 {
        // Every tree extends the empty one; only the empty root is the empty tree's.
        return if proof.is_empty() && *first_root == empty_root() {
            Ok(())
        } else {
            Err(TreeError::ProofInvalid)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((start, rest)) = path.split_first() else {
        return Err(TreeError::ProofInvalid);
    };
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in rest {
        if sn == 0 {
            return Err(TreeError::ProofInvalid);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if fr == *first_root && sr == *second_root && sn == 0 {
        Ok(())
    } else {
        Err(TreeError::ProofInvalid)
    }
}

/// The roots of the perfect subtrees that make up a tree, largest (leftmost) first: enough to
/// append leaves and compute the root without keeping them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, root)`, heights strictly decreasing.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves the tree holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = (0u32, leaf);
        while let Some(&(height, left)) = self.peaks.last() {
            if height != carry.0 {
                break;
            }
            self.peaks.pop();
            carry = (height + 1, node_hash(&left, &carry.1));
        }
        self.peaks.push(carry);
        self.size = self.size.saturating_add(1);
    }

    /// The tree's root (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, last)) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(last, |right, (_, left)| node_hash(left, &right))
    }
}

/// Why a checkpoint body does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not `origin\nsize\nroot\n` with an optional extension lines.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
}

/// A tree head as a C2SP tlog-checkpoint body: who the log is, its size and its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (unique name of the log).
    pub origin: String,
    /// How many leaves the tree holds.
    pub size: u64,
    /// The tree's root.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body: `origin\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a note body; extension lines after the root are allowed and ignored.
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let body = body.strip_suffix('\n').ok_or(CheckpointError::Malformed(
            "the body must end with a newline",
        ))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointError::Malformed("no origin line"))?;
        let size_line = lines
            .next()
            .ok_or(CheckpointError::Malformed("no tree size line"))?;
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err(CheckpointError::Malformed("the tree size is not a decimal"));
        }
        let size = size_line
            .parse::<u64>()
            .map_err(|_| CheckpointError::Malformed("the tree size is out of range"))?;
        let root_line = lines
            .next()
            .ok_or(CheckpointError::Malformed("no root hash line"))?;
        let root: Hash = STANDARD
            .decode(root_line)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "the root hash is not 32 bytes of base64",
            ))?;
        if lines.any(str::is_empty) {
            return Err(CheckpointError::Malformed("an empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
#[path = "tlog_tests.rs"]
mod tests;
