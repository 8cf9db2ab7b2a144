use super::*;
use proptest::prelude::*;

/// The leaves of the Certificate Transparency test tree (RFC 6962 reference tests).
fn ct_leaves() -> Vec<Hash> {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    inputs.iter().map(|i| leaf_hash(i)).collect()
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

#[test]
fn roots_match_the_certificate_transparency_vectors() {
    let expected = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let all = ct_leaves();
    for (n, want) in expected.iter().enumerate() {
        assert_eq!(hex::encode(root(&all[..=n])), *want, "size {}", n + 1);
    }
    assert_eq!(
        hex::encode(root(&[])),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn bad_requests_are_refused() {
    let all = leaves(5);
    assert_eq!(
        inclusion_proof(&all, 5, 5),
        Err(TreeError::IndexBeyondTree { index: 5, size: 5 })
    );
    assert_eq!(
        inclusion_proof(&all, 0, 6),
        Err(TreeError::SizeBeyondTree {
            size: 6,
            available: 5
        })
    );
    assert_eq!(
        consistency_proof(&all, 4, 3),
        Err(TreeError::SizeOrder {
            first: 4,
            second: 3
        })
    );
    assert!(consistency_proof(&all, 2, 6).is_err());
    assert_eq!(
        verify_inclusion(3, 3, &all[0], &[], &root(&all[..3])),
        Err(TreeError::IndexBeyondTree { index: 3, size: 3 })
    );
}

#[test]
fn a_proof_with_an_extra_or_missing_hash_fails() {
    let all = leaves(7);
    let r = root(&all);
    let mut proof = inclusion_proof(&all, 2, 7).unwrap();
    proof.push(all[0]);
    assert!(verify_inclusion(2, 7, &all[2], &proof, &r).is_err());
    proof.truncate(proof.len() - 2);
    assert!(verify_inclusion(2, 7, &all[2], &proof, &r).is_err());
    let mut consistency = consistency_proof(&all, 3, 7).unwrap();
    let first = root(&all[..3]);
    consistency.pop();
    assert!(verify_consistency(3, 7, &first, &r, &consistency).is_err());
}

#[test]
fn checkpoint_bodies_round_trip_and_bad_ones_are_refused() {
    let checkpoint = Checkpoint {
        origin: "e2e.example/aims/audit".to_owned(),
        size: 12,
        root: leaf_hash(b"x"),
    };
    let body = checkpoint.body();
    assert_eq!(body.lines().count(), 3);
    assert_eq!(Checkpoint::parse_body(&body).unwrap(), checkpoint);
    let root_b64 = STANDARD.encode(checkpoint.root);
    for bad in [
        String::new(),
        format!("o\n12\n{root_b64}"),
        format!("\n12\n{root_b64}\n"),
        format!("o\n012\n{root_b64}\n"),
        format!("o\n-1\n{root_b64}\n"),
        format!("o\n99999999999999999999\n{root_b64}\n"),
        "o\n12\nAAAA\n".to_owned(),
        format!("o\n12\n{root_b64}\n\n"),
    ] {
        assert!(Checkpoint::parse_body(&bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn the_frontier_agrees_with_the_recursive_root(n in 0usize..70) {
        let all = leaves(n);
        let mut frontier = Frontier::new();
        for (i, leaf) in all.iter().enumerate() {
            prop_assert_eq!(frontier.root(), root(&all[..i]));
            frontier.push(*leaf);
        }
        prop_assert_eq!(frontier.size(), n as u64);
        prop_assert_eq!(frontier.root(), root(&all));
    }

    #[test]
    fn every_inclusion_proof_verifies(size in 1u64..70) {
        let all = leaves(size as usize);
        let r = root(&all);
        for index in 0..size {
            let proof = inclusion_proof(&all, index, size).unwrap();
            prop_assert!(verify_inclusion(index, size, &all[index as usize], &proof, &r).is_ok());
        }
    }

    #[test]
    fn every_consistency_proof_verifies(second in 0u64..50) {
        let all = leaves(second as usize);
        let r2 = root(&all);
        for first in 0..=second {
            let proof = consistency_proof(&all, first, second).unwrap();
            let r1 = root(&all[..first as usize]);
            prop_assert!(verify_consistency(first, second, &r1, &r2, &proof).is_ok());
        }
    }

    #[test]
    fn any_flipped_bit_fails_inclusion(size in 1u64..40, index in 0u64..40, pick in 0usize..64, bit in 0usize..256, what in 0u8..3) {
        let index = index % size;
        let all = leaves(size as usize);
        let mut r = root(&all);
        let mut leaf = all[index as usize];
        let mut proof = inclusion_proof(&all, index, size).unwrap();
        match what {
            0 if !proof.is_empty() => {
                let at = pick % proof.len();
                proof[at][bit / 8] ^= 1 << (bit % 8);
            }
            1 => r[bit / 8] ^= 1 << (bit % 8),
            _ => leaf[bit / 8] ^= 1 << (bit % 8),
        }
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &r).is_err());
    }

    #[test]
    // The root alone does not bind the size (a proof for size 6 can check out as size 7
    // against the same root): the signed checkpoint binds it.
    fn a_proof_for_another_index_fails(size in 2u64..40, index in 0u64..40, other in 0u64..40) {
        let index = index % size;
        let other = other % size;
        prop_assume!(other != index);
        let all = leaves(size as usize);
        let r = root(&all);
        let proof = inclusion_proof(&all, index, size).unwrap();
        prop_assert!(verify_inclusion(other, size, &all[index as usize], &proof, &r).is_err());
    }

    #[test]
    fn any_flipped_bit_fails_consistency(second in 2u64..40, first in 1u64..40, pick in 0usize..64, bit in 0usize..256, what in 0u8..3) {
        let first = 1 + first % (second - 1);
        let all = leaves(second as usize);
        let mut r1 = root(&all[..first as usize]);
        let mut r2 = root(&all);
        let mut proof = consistency_proof(&all, first, second).unwrap();
        match what {
            0 => {
                let at = pick % proof.len();
                proof[at][bit / 8] ^= 1 << (bit % 8);
            }
            1 => r1[bit / 8] ^= 1 << (bit % 8),
            _ => r2[bit / 8] ^= 1 << (bit % 8),
        }
        prop_assert!(verify_consistency(first, second, &r1, &r2, &proof).is_err());
    }
}
