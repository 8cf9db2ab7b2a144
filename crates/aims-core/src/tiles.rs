//! The audit Merkle tree log as C2SP tlog-tiles: what a tile path names, which hashes a tile
//! holds in a tree of a given size, the hashes of every complete tile kept as the tree grows
//! (so a tile, the root of any size, and an inclusion or consistency proof are at most a few
//! hundred hashes per tile level away rather than a walk of the tree), and the entry bundle
//! encoding.
//!
//! A tile at level `L` and index `N` holds up to 256 consecutive hashes, each the root of a
//! perfect subtree of `256^L` leaves: `MTH(D[(N*256 + i) * 256^L .. (N*256 + i + 1) * 256^L])`.
//! Level 0 holds the leaf hashes themselves. A full tile has 256 hashes; a partial one
//! (`.p/W`) the first `W` of them, 1 to 255. Entry bundles hold the leaves' bytes, each
//! prefixed by its length as a big-endian `u16`, in the order of the level-0 tile of the
//! same index.
//!
//! Pure: the hashing is [`crate::tlog`]'s, which bytes a leaf covers is
//! [`crate::audit::AuditEntry`]'s, and reading rows or answering HTTP is the server's.

use std::ops::Range;

use crate::tlog::{self, Hash, SubtreeRoots, node_hash};

/// Hashes in a full tile.
pub const TILE_WIDTH: u16 = 256;

/// The largest level a tile path may name (C2SP tlog-tiles: 0 to 63).
pub const MAX_LEVEL: u8 = 63;

/// The longest entry an entry bundle can hold (its length prefix is a `u16`).
pub const MAX_BUNDLE_ENTRY: usize = u16::MAX as usize;

/// Levels between two tile levels: a tile is a subtree of height 8.
const TILE_HEIGHT: u32 = 8;

/// What a tile path names: hashes at a level, or entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// `tile/<L>/…`: Merkle tree hashes at level `L`.
    Hashes(u8),
    /// `tile/entries/…`: the entries of the level-0 tile of the same index.
    Entries,
}

/// A parsed tile path: `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]` (what follows
/// `<prefix>/tile/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePath {
    /// Hashes or entries.
    pub kind: TileKind,
    /// The tile's index within its level.
    pub index: u64,
    /// How many hashes (or entries) it holds: [`TILE_WIDTH`] for a full tile, 1 to 255 for a
    /// partial one.
    pub width: u16,
}

/// Why a tile cannot be named or served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// The path is not a C2SP tlog-tiles tile path.
    #[error("malformed tile path: {0}")]
    Malformed(&'static str),
    /// The tile holds hashes or entries the tree does not have.
    #[error("the tile reaches past the tree")]
    BeyondTree,
    /// An entry too long for an entry bundle.
    #[error("entry {index} is {len} bytes, more than an entry bundle holds ({MAX_BUNDLE_ENTRY})")]
    EntryTooLarge {
        /// The entry's leaf index.
        index: u64,
        /// Its length.
        len: usize,
    },
}

impl TilePath {
    /// Parses what follows `<prefix>/tile/`. Only the one canonical spelling of each tile is
    /// accepted: no leading zeros in the level or width, and an index whose first element
    /// is not `x000`. A well-formed index too large for a `u64` is past every tree.
    pub fn parse(path: &str) -> Result<Self, TileError> {
        let (head, rest) = path.split_once('/').ok_or(TileError::Malformed(
            "a tile path is `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`",
        ))?;
        let kind = if head == "entries" {
            TileKind::Entries
        } else {
            TileKind::Hashes(level(head)?)
        };
        let (elements, width) = match rest.split_once(".p/") {
            Some((elements, w)) => (elements, width(w)?),
            None => (rest, TILE_WIDTH),
        };
        Ok(Self {
            kind,
            index: index(elements)?,
            width,
        })
    }

    /// The tile's level (entries are at level 0).
    pub fn level(&self) -> u8 {
        match self.kind {
            TileKind::Hashes(level) => level,
            TileKind::Entries => 0,
        }
    }

    /// Whether this is a full tile (immutable once the tree has it).
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The positions, within its level, of the hashes this tile holds, if a tree of
    /// `tree_size` leaves has every one of them complete.
    pub fn within(&self, tree_size: u64) -> Result<Range<u64>, TileError> {
        let start = self
            .index
            .checked_mul(u64::from(TILE_WIDTH))
            .ok_or(TileError::BeyondTree)?;
        let end = start
            .checked_add(u64::from(self.width))
            .ok_or(TileError::BeyondTree)?;
        // The leaves the last hash reaches: `end * 256^level`, past any tree when it overflows.
        let reach = 1u64
            .checked_shl(TILE_HEIGHT * u32::from(self.level()))
            .and_then(|leaves_per_hash| end.checked_mul(leaves_per_hash))
            .ok_or(TileError::BeyondTree)?;
        if reach > tree_size {
            return Err(TileError::BeyondTree);
        }
        Ok(start..end)
    }
}

/// `<L>`: a decimal 0 to 63 without leading zeros.
fn level(text: &str) -> Result<u8, TileError> {
    decimal(text)
        .and_then(|l| u8::try_from(l).ok())
        .filter(|l| *l <= MAX_LEVEL)
        .ok_or(TileError::Malformed(
            "the level is a decimal from 0 to 63 without leading zeros",
        ))
}

/// `<W>`: a decimal 1 to 255 without leading zeros.
fn width(text: &str) -> Result<u16, TileError> {
    decimal(text)
        .and_then(|w| u16::try_from(w).ok())
        .filter(|w| (1..TILE_WIDTH).contains(w))
        .ok_or(TileError::Malformed(
            "a partial tile's width is a decimal from 1 to 255 without leading zeros",
        ))
}

/// A short decimal without leading zeros (at most three digits: every level and width).
fn decimal(text: &str) -> Option<u32> {
    let canonical = !text.is_empty()
        && text.len() <= 3
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return None;
    }
    text.parse().ok()
}

/// `<N>`: three-digit elements, all but the last prefixed with `x`, the first not `x000`.
fn index(text: &str) -> Result<u64, TileError> {
    let elements: Vec<&str> = text.split('/').collect();
    let (last, leading) = elements
        .split_last()
        .ok_or(TileError::Malformed("no index"))?;
    let groups: Option<Vec<u64>> = leading
        .iter()
        .map(|e| e.strip_prefix('x'))
        .chain(std::iter::once(Some(*last)))
        .map(|digits| {
            digits
                .filter(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
        })
        .collect();
    let groups = groups.ok_or(TileError::Malformed(
        "the index is zero-padded three-digit elements, all but the last starting with `x`",
    ))?;
    if leading.first() == Some(&"x000") {
        return Err(TileError::Malformed(
            "the index's first element must not be `x000`",
        ));
    }
    groups.into_iter().try_fold(0u64, |value, group| {
        value
            .checked_mul(1000)
            .and_then(|v| v.checked_add(group))
            .ok_or(TileError::BeyondTree)
    })
}

/// The hashes of every complete tile of a growing tree: level 0 is the leaf hashes, and
/// level `L + 1` gains the root of each 256 consecutive level-`L` hashes as they complete,
/// which costs 255 node hashes per 256 hashes below (under one extra hash per leaf) and
/// 1/255 more memory than the leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TiledTree {
    /// `levels[L][i]`: the root of leaves `i * 256^L .. (i + 1) * 256^L`.
    levels: Vec<Vec<Hash>>,
}

impl TiledTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves it holds.
    pub fn size(&self) -> u64 {
        self.leaves().len() as u64
    }

    /// Every leaf hash, in order.
    pub fn leaves(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// Appends one leaf hash, completing the tiles above it that it fills.
    pub fn push(&mut self, leaf: Hash) {
        let width = usize::from(TILE_WIDTH);
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                return;
            };
            row.push(hash);
            if row.len() % width != 0 {
                return;
            }
            hash = tlog::root(row.get(row.len() - width..).unwrap_or_default());
            level += 1;
        }
    }

    /// The hashes at `positions` of level `level`, if the tree has them all complete.
    pub fn hashes(&self, level: u8, positions: Range<u64>) -> Option<&[Hash]> {
        let start = usize::try_from(positions.start).ok()?;
        let end = usize::try_from(positions.end).ok()?;
        self.levels.get(usize::from(level))?.get(start..end)
    }

    /// The hashes tile `tile` holds in the tree of the first `tree_size` leaves; `None` when
    /// this tree holds fewer leaves than that.
    pub fn tile(&self, tile: &TilePath, tree_size: u64) -> Result<Option<&[Hash]>, TileError> {
        let positions = tile.within(tree_size)?;
        if tree_size > self.size() {
            return Ok(None);
        }
        Ok(self.hashes(tile.level(), positions))
    }

    /// The root (RFC 9162 MTH) of the tree of the first `size` leaves, from the perfect
    /// subtrees that make it up (each at most 127 node hashes over the tile hashes below
    /// it); `None` when this tree holds fewer leaves.
    pub fn root(&self, size: u64) -> Option<Hash> {
        self.subtree_root(0..size)
    }

    /// The root of the perfect subtree of `2^height` leaves from leaf `start`: the MTH of the
    /// `2^(height % 8)` hashes at level `height / 8` that it spans. `None` when `start` is
    /// not a multiple of its size (no stored hash lines up with it) or a leaf is unknown.
    fn perfect(&self, height: u32, start: u64) -> Option<Hash> {
        let span = 1u64.checked_shl(height)?;
        if start & (span - 1) != 0 {
            return None;
        }
        let level = u8::try_from(height / TILE_HEIGHT).ok()?;
        let first = start >> (TILE_HEIGHT * u32::from(level));
        let count = 1u64 << (height % TILE_HEIGHT);
        Some(tlog::root(self.hashes(level, first..first + count)?))
    }
}

/// Subtree roots for proofs in logarithmic time: a subtree is the perfect subtrees its length
/// spells in binary, largest first, and each of those is at most 127 node hashes over the
/// finest stored level below it, so a proof costs at most about 255 node hashes per tile
/// level on each side of the path instead of a hash of every leaf.
impl SubtreeRoots for TiledTree {
    fn leaf_count(&self) -> u64 {
        self.size()
    }

    fn subtree_root(&self, leaves: Range<u64>) -> Option<Hash> {
        let len = leaves.end.checked_sub(leaves.start)?;
        if leaves.end > self.size() {
            return None;
        }
        let mut peaks = Vec::new();
        let mut start = leaves.start;
        for height in (0..u64::BITS).rev() {
            let span = 1u64 << height;
            if len & span != 0 {
                peaks.push(self.perfect(height, start)?);
                start += span;
            }
        }
        let Some((last, rest)) = peaks.split_last() else {
            return Some(tlog::empty_root());
        };
        Some(
            rest.iter()
                .rev()
                .fold(*last, |right, left| node_hash(left, &right)),
        )
    }
}

/// An entry bundle: each entry prefixed by its length as a big-endian `u16`. `first` is the
/// leaf index of the first entry, for the error naming one too long.
pub fn entry_bundle<'a>(
    first: u64,
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, TileError> {
    let mut out = Vec::new();
    for (index, entry) in (first..).zip(entries) {
        let len = u16::try_from(entry.len()).map_err(|_| TileError::EntryTooLarge {
            index,
            len: entry.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "tiles_tests.rs"]
mod tests;
