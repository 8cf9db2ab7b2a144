use super::*;
use crate::tlog::leaf_hash;
use proptest::prelude::*;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn tree_of(leaves: &[Hash]) -> TiledTree {
    let mut tree = TiledTree::new();
    for leaf in leaves {
        tree.push(*leaf);
    }
    tree
}

/// The spelling of a tile path as C2SP tlog-tiles gives it, written here from the spec.
fn spell(path: &TilePath) -> String {
    let head = match path.kind {
        TileKind::Hashes(level) => level.to_string(),
        TileKind::Entries => "entries".to_owned(),
    };
    let mut groups = vec![format!("{:03}", path.index % 1000)];
    let mut rest = path.index / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    let mut out = format!("{head}/{}", groups.join("/"));
    if !path.is_full() {
        out.push_str(&format!(".p/{}", path.width));
    }
    out
}

fn hashes(level: u8, index: u64, width: u16) -> TilePath {
    TilePath {
        kind: TileKind::Hashes(level),
        index,
        width,
    }
}

#[test]
fn tile_paths_parse_as_the_spec_spells_them() {
    let cases = [
        ("0/000", hashes(0, 0, 256)),
        ("1/x001/x234/067", hashes(1, 1_234_067, 256)),
        ("63/999", hashes(63, 999, 256)),
        ("2/x001/000.p/7", hashes(2, 1000, 7)),
        ("0/005.p/255", hashes(0, 5, 255)),
        (
            "entries/x012/345.p/1",
            TilePath {
                kind: TileKind::Entries,
                index: 12_345,
                width: 1,
            },
        ),
        (
            "0/x018/x446/x744/x073/x709/x551/615",
            hashes(0, u64::MAX, 256),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(TilePath::parse(text), Ok(expected), "{text}");
        assert_eq!(spell(&expected), text);
    }
}

#[test]
fn malformed_tile_paths_are_refused() {
    for text in [
        "",
        "0",
        "0/",
        "entries",
        "entries/",
        "entry/000",
        "64/000",
        "100/000",
        "00/000",
        "01/000",
        "-1/000",
        "+1/000",
        "0/1234",
        "0/12",
        "0/x001",
        "0/001/002",
        "0/x01/002",
        "0/x000/001",
        "0/x000/x001/002",
        "0/000/",
        "0//000",
        "0/000.p",
        "0/000.p/",
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/1000",
        "0/000.p/007",
        "0/000.p/5/6",
        "0/000.p/5.p/6",
        "0/x001.p/5",
        "0/000.P/5",
        "0/0a0",
        "entries/000.p/0",
    ] {
        assert!(
            matches!(TilePath::parse(text), Err(TileError::Malformed(_))),
            "{text:?}: {:?}",
            TilePath::parse(text)
        );
    }
}

#[test]
fn indices_past_a_u64_are_past_every_tree() {
    for text in [
        "0/x018/x446/x744/x073/x709/x551/616",
        "0/x001/x000/x000/x000/x000/x000/x000/000",
        "entries/x999/x999/x999/x999/x999/x999/999",
    ] {
        assert_eq!(TilePath::parse(text), Err(TileError::BeyondTree), "{text}");
    }
}

#[test]
fn which_tiles_a_tree_has_follows_the_spec_examples() {
    // "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial
    // level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width 17,
    // and one partial level 2 tile of width 1."
    let size = 70_000;
    let has = |tile: TilePath| tile.within(size).is_ok();
    assert!(has(hashes(0, 272, 256)));
    assert!(!has(hashes(0, 273, 256)));
    assert!(has(hashes(0, 273, 112)));
    assert!(!has(hashes(0, 273, 113)));
    assert!(!has(hashes(0, 274, 1)));
    assert!(has(hashes(1, 0, 256)));
    assert!(!has(hashes(1, 1, 256)));
    assert!(has(hashes(1, 1, 17)));
    assert!(!has(hashes(1, 1, 18)));
    assert!(has(hashes(2, 0, 1)));
    assert!(!has(hashes(2, 0, 2)));
    assert!(!has(hashes(3, 0, 1)));
    assert!(!has(hashes(63, 0, 1)));
    assert_eq!(hashes(1, 1, 17).within(size), Ok(256..273));
    // "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    // tile of width 1."
    assert!(hashes(0, 0, 256).within(256).is_ok());
    assert!(hashes(1, 0, 1).within(256).is_ok());
    assert!(hashes(0, 1, 1).within(256).is_err());
    // Nothing is in the empty tree; overflowing positions are past every tree.
    assert!(hashes(0, 0, 1).within(0).is_err());
    assert!(hashes(0, u64::MAX, 1).within(u64::MAX).is_err());
    // A level-7 hash spans 2^56 leaves, a level-8 one 2^64: more than any tree holds.
    assert!(hashes(7, 0, 1).within(u64::MAX).is_ok());
    assert!(hashes(7, 0, 256).within(u64::MAX).is_err());
    assert!(hashes(8, 0, 1).within(u64::MAX).is_err());
    assert!(hashes(6, 0, 255).within(u64::MAX).is_ok());
}

#[test]
fn tile_hashes_are_the_roots_of_the_subtrees_they_span() {
    let all = leaves(70_000);
    let tree = tree_of(&all);
    assert_eq!(tree.size(), 70_000);
    assert_eq!(tree.leaves(), all.as_slice());
    for (level, span) in [(1u8, 256usize), (2, 65_536)] {
        let row = tree.hashes(level, 0..(70_000 / span) as u64).unwrap();
        for (i, hash) in row.iter().enumerate() {
            assert_eq!(
                *hash,
                tlog::root(&all[i * span..(i + 1) * span]),
                "{level}/{i}"
            );
        }
        // Nothing incomplete is kept.
        assert!(tree.hashes(level, 0..(70_000 / span) as u64 + 1).is_none());
    }
    let partial = tree.tile(&hashes(1, 1, 17), 70_000).unwrap().unwrap();
    assert_eq!(partial.len(), 17);
    assert_eq!(partial[16], tlog::root(&all[272 * 256..273 * 256]));
    assert_eq!(
        tree.tile(&hashes(0, 273, 113), 70_000),
        Err(TileError::BeyondTree)
    );
    // A tile of a larger tree than this one holds is not known here.
    assert_eq!(tree.tile(&hashes(0, 0, 256), 70_001), Ok(None));
    for size in [
        0, 1, 2, 255, 256, 257, 511, 512, 65_535, 65_536, 65_537, 69_999, 70_000,
    ] {
        assert_eq!(
            tree.root(size),
            Some(tlog::root(&all[..size as usize])),
            "{size}"
        );
    }
    assert_eq!(tree.root(70_001), None);
}

/// Checks the inclusion proof from the tile hashes against the reference (every subtree
/// hashed from its leaves), byte for byte, and against the verifier with the tree's `root`.
fn check_inclusion(tree: &TiledTree, all: &[Hash], index: u64, size: u64, root: &Hash) {
    let fast = tlog::inclusion_proof_over(tree, index, size).unwrap();
    assert_eq!(
        fast,
        tlog::inclusion_proof(all, index, size).unwrap(),
        "{index} in {size}"
    );
    let leaf = all[index as usize];
    assert_eq!(
        tlog::verify_inclusion(index, size, &leaf, &fast, root),
        Ok(())
    );
}

/// Checks the consistency proof from the tile hashes against the reference, byte for byte,
/// and against the verifier with the two trees' roots.
fn check_consistency(
    tree: &TiledTree,
    all: &[Hash],
    (first, second): (u64, u64),
    roots: (&Hash, &Hash),
) {
    let fast = tlog::consistency_proof_over(tree, first, second).unwrap();
    assert_eq!(
        fast,
        tlog::consistency_proof(all, first, second).unwrap(),
        "{first} to {second}"
    );
    assert_eq!(
        tlog::verify_consistency(first, second, roots.0, roots.1, &fast),
        Ok(())
    );
}

#[test]
fn proofs_from_tiles_match_the_reference_around_level_two() {
    let all = leaves(65_536 + 600);
    let tree = tree_of(&all);
    let root = |n: u64| tlog::root(&all[..n as usize]);
    let seconds = [65_280, 65_535, 65_536, 65_537, 65_792, 65_793, 66_136];
    let firsts = [1, 255, 256, 257, 65_280, 65_535, 65_536];
    let first_roots: Vec<Hash> = firsts.iter().map(|n| root(*n)).collect();
    for second in seconds {
        let second_root = root(second);
        for index in [0, 1, 255, 256, 32_768, 65_279, 65_535, second - 1] {
            check_inclusion(&tree, &all, index.min(second - 1), second, &second_root);
        }
        for (first, first_root) in firsts.iter().zip(&first_roots) {
            if *first <= second {
                check_consistency(&tree, &all, (*first, second), (first_root, &second_root));
            }
        }
    }
}

#[test]
fn proofs_from_tiles_refuse_what_the_reference_refuses() {
    let all = leaves(300);
    let tree = tree_of(&all);
    for (index, size) in [(300, 300), (0, 301), (5, 0)] {
        assert_eq!(
            tlog::inclusion_proof_over(&tree, index, size),
            tlog::inclusion_proof(&all, index, size)
        );
        assert!(tlog::inclusion_proof_over(&tree, index, size).is_err());
    }
    for (first, second) in [(5, 4), (0, 301), (300, 301)] {
        assert_eq!(
            tlog::consistency_proof_over(&tree, first, second),
            tlog::consistency_proof(&all, first, second)
        );
        assert!(tlog::consistency_proof_over(&tree, first, second).is_err());
    }
    // A range no stored hash lines up with, or past the tree, has no root here.
    assert_eq!(tree.subtree_root(3..7), None);
    assert_eq!(
        tree.subtree_root(256..300),
        Some(tlog::root(&all[256..300]))
    );
    assert_eq!(tree.subtree_root(256..301), None);
    assert_eq!(tree.subtree_root(Range { start: 7, end: 3 }), None);
}

#[test]
fn entry_bundles_are_length_prefixed() {
    let entries: [&[u8]; 3] = [b"ab", b"", &[7u8; 300]];
    let bundle = entry_bundle(10, entries).unwrap();
    let mut expected = vec![0, 2, b'a', b'b', 0, 0, 1, 44];
    expected.extend_from_slice(&[7u8; 300]);
    assert_eq!(bundle, expected);
    let longest = vec![0u8; MAX_BUNDLE_ENTRY];
    assert_eq!(entry_bundle(0, [longest.as_slice()]).unwrap().len(), 65_537);
    let long = vec![0u8; MAX_BUNDLE_ENTRY + 1];
    assert_eq!(
        entry_bundle(5, [b"x".as_slice(), long.as_slice()]),
        Err(TileError::EntryTooLarge {
            index: 6,
            len: 65_536
        })
    );
}

proptest! {
    /// Every tile path parses back from its canonical spelling.
    #[test]
    fn tile_paths_round_trip(
        entries in any::<bool>(),
        level in 0u8..=MAX_LEVEL,
        index in prop_oneof![0u64..2000, any::<u64>()],
        width in 1u16..=256,
    ) {
        let path = TilePath {
            kind: if entries { TileKind::Entries } else { TileKind::Hashes(level) },
            index,
            width,
        };
        prop_assert_eq!(TilePath::parse(&spell(&path)), Ok(path));
    }

    /// The root of any prefix, from the tile hashes, is the MTH of its leaves.
    #[test]
    fn roots_of_every_size_match_the_mth(n in 0u64..1500, cut in any::<prop::sample::Index>()) {
        let all = leaves(n);
        let tree = tree_of(&all);
        let size = cut.index(n as usize + 1);
        prop_assert_eq!(tree.root(size as u64), Some(tlog::root(&all[..size])));
    }

    /// Inclusion and consistency proofs from the tile hashes are the reference proofs, byte
    /// for byte, and verify; sizes cluster around the 256 and 512 tile boundaries.
    #[test]
    fn proofs_from_tiles_match_the_reference(
        second in prop_oneof![1u64..3000, 250u64..262, 508u64..516, 1020u64..1030],
        index in any::<prop::sample::Index>(),
        first in any::<prop::sample::Index>(),
    ) {
        let all = leaves(second);
        let tree = tree_of(&all);
        let index = index.index(second as usize) as u64;
        let first = first.index(second as usize + 1) as u64;
        let second_root = tlog::root(&all);
        check_inclusion(&tree, &all, index, second, &second_root);
        let first_root = tlog::root(&all[..first as usize]);
        check_consistency(&tree, &all, (first, second), (&first_root, &second_root));
    }
}
