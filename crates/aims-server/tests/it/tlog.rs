//! The audit log as a Merkle tree log, seen from outside: signed checkpoints and inclusion and
//! consistency proofs fetched over HTTP and checked by a verifier written here from RFC 9162's
//! definitions (§2.1.3.1 PATH, §2.1.4.1 SUBPROOF) and the C2SP signed-note format, not by the
//! server's tree code; bad proof requests refused with stable codes; a log truncated behind the
//! server's back found at restart. The verifier's pieces serve the tiles tests
//! ([`crate::tiles`]) too.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde_json::Value;

use crate::kit::{Backend, TestServer};
use crate::on_both_stores;

on_both_stores!(
    proofs_verify_with_an_independent_verifier,
    bad_proof_requests_are_refused_and_change_nothing,
    a_truncated_log_is_found_at_restart,
    a_proof_against_an_edited_checkpoint_marks_the_log_broken,
);

pub(crate) type Hash = [u8; 32];

// --- the independent verifier ------------------------------------------------------------

fn sha256(parts: &[&[u8]]) -> Hash {
    let joined: Vec<u8> = parts.concat();
    digest(&SHA256, &joined).as_ref().try_into().unwrap()
}

pub(crate) fn leaf(entry: &[u8]) -> Hash {
    sha256(&[&[0u8], entry])
}

pub(crate) fn node(l: &Hash, r: &Hash) -> Hash {
    sha256(&[&[1u8], l, r])
}

/// The largest power of two smaller than `n` (n >= 2).
pub(crate) fn k_of(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root that PATH(m, D[n]) leads to from leaf hash `h`, read from its definition: the
/// last element of the path is the sibling of the subtree that holds `m`.
fn root_from_path(m: u64, n: u64, h: Hash, path: &[Hash]) -> Option<Hash> {
    if n == 1 {
        return path.is_empty().then_some(h);
    }
    let (last, rest) = path.split_last()?;
    let k = k_of(n);
    if m < k {
        Some(node(&root_from_path(m, k, h, rest)?, last))
    } else {
        Some(node(last, &root_from_path(m - k, n - k, h, rest)?))
    }
}

/// The (old, new) roots SUBPROOF(m, D[n], b) leads to, read from its definition; `old` is
/// the root of the first m leaves (given, when b and m == n).
fn roots_from_subproof(
    m: u64,
    n: u64,
    b: bool,
    old: &Hash,
    proof: &[Hash],
) -> Option<(Hash, Hash)> {
    if m == n {
        return match (b, proof) {
            (true, []) => Some((*old, *old)),
            (false, [h]) => Some((*h, *h)),
            _ => None,
        };
    }
    let (last, rest) = proof.split_last()?;
    let k = k_of(n);
    if m <= k {
        let (o, nw) = roots_from_subproof(m, k, b, old, rest)?;
        Some((o, node(&nw, last)))
    } else {
        let (o, nw) = roots_from_subproof(m - k, n - k, false, old, rest)?;
        Some((node(last, &o), node(last, &nw)))
    }
}

/// MTH (RFC 9162 §2.1.1) by its definition.
pub(crate) fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let k = k_of(n as u64) as usize;
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn inclusion_ok(index: u64, size: u64, h: Hash, path: &[Hash], root: &Hash) -> bool {
    index < size && root_from_path(index, size, h, path).as_ref() == Some(root)
}

fn consistency_ok(m: u64, n: u64, old: &Hash, new: &Hash, proof: &[Hash]) -> bool {
    0 < m && m < n && roots_from_subproof(m, n, true, old, proof) == Some((*old, *new))
}

/// Opens a signed checkpoint note with verifier key `vkey`: (origin, size, root).
pub(crate) fn open_note(vkey: &str, note: &str) -> Option<(String, u64, Hash)> {
    let mut parts = vkey.splitn(3, '+');
    let (name, id_hex, key) = (parts.next()?, parts.next()?, parts.next()?);
    let key = STANDARD.decode(key).ok()?;
    let (alg, public) = key.split_first()?;
    let id = sha256(&[name.as_bytes(), b"\n", &[1u8], public]);
    if *alg != 1 || hex::encode(&id[..4]) != id_hex {
        return None;
    }
    let at = note.find("\n\n")?;
    let (body, sigs) = note.split_at(at + 1);
    let signed = sigs.lines().skip(1).any(|line| {
        let Some((who, sig)) = line
            .strip_prefix("\u{2014} ")
            .and_then(|l| l.split_once(' '))
        else {
            return false;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            return false;
        };
        who == name
            && sig.len() == 68
            && sig[..4] == id[..4]
            && UnparsedPublicKey::new(&ED25519, public)
                .verify(body.as_bytes(), &sig[4..])
                .is_ok()
    });
    let lines: Vec<&str> = body.lines().collect();
    if !signed || lines.len() < 3 || lines[0] != name {
        return None;
    }
    let root: Hash = STANDARD.decode(lines[2]).ok()?.try_into().ok()?;
    Some((lines[0].to_owned(), lines[1].parse().ok()?, root))
}

fn hashes(value: &Value) -> Vec<Hash> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            STANDARD
                .decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

// --- helpers -------------------------------------------------------------------------------

pub(crate) async fn start(backend: Backend) -> TestServer {
    TestServer::start_tuned(backend, |config| {
        config.audit_checkpoint_interval = Duration::from_millis(20);
        config.audit_checkpoint_entries = 1;
    })
    .await
}

/// Waits until a checkpoint of at least `size` entries is stored, and returns the latest.
pub(crate) async fn checkpoint_of_at_least(server: &TestServer, size: u64) -> Value {
    for _ in 0..300 {
        let reply = server
            .admin(Method::GET, "/v1/audit/checkpoint", None)
            .await;
        if reply.status == StatusCode::OK && reply.body["tree_size"].as_u64().unwrap() >= size {
            return reply.body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no checkpoint of {size} entries was signed");
}

pub(crate) async fn log_key(server: &TestServer) -> String {
    let reply = server
        .call(Method::GET, aims_api::tlog::LOG_KEY_PATH, None, None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body["verifier_key"].as_str().unwrap().to_owned()
}

/// The leaf hashes of every stored entry, computed here from the served columns.
async fn leaves(server: &TestServer) -> Vec<Hash> {
    let reply = server
        .admin(Method::GET, "/v1/audit/entries?limit=1000", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let view: aims_api::tlog::AuditEntryView = serde_json::from_value(e.clone()).unwrap();
            // The entry's byte encoding is AIMS's; the hashing over it is done here.
            leaf(&aims_sdk::tlog::entry_of(&view).unwrap().leaf_bytes())
        })
        .collect()
}

// --- tests ---------------------------------------------------------------------------------

async fn proofs_verify_with_an_independent_verifier(backend: Backend) {
    let server = start(backend).await;
    for i in 0..4 {
        server.register(&format!("first-{i}"), "team-a").await;
    }
    let first = checkpoint_of_at_least(&server, 5).await;
    let vkey = log_key(&server).await;
    let (origin, m, old_root) = open_note(&vkey, first["note"].as_str().unwrap()).unwrap();
    assert_eq!(origin, "test.example/aims/audit");
    assert_eq!(m, first["tree_size"].as_u64().unwrap());
    for i in 0..7 {
        server.register(&format!("second-{i}"), "team-b").await;
    }
    let second = checkpoint_of_at_least(&server, m + 7).await;
    let (_, n, new_root) = open_note(&vkey, second["note"].as_str().unwrap()).unwrap();
    assert!(n > m);

    let leaves = leaves(&server).await;
    assert!(leaves.len() as u64 >= n);
    for (size, root) in [(m, old_root), (n, new_root)] {
        for index in 0..size {
            let reply = server
                .admin(
                    Method::GET,
                    &format!("/v1/audit/proof/inclusion?index={index}&tree_size={size}"),
                    None,
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let served: Hash = STANDARD
                .decode(reply.body["leaf_hash"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            assert_eq!(served, leaves[index as usize], "leaf {index}");
            let path = hashes(&reply.body["proof"]);
            let (_, signed_size, signed_root) =
                open_note(&vkey, reply.body["checkpoint"].as_str().unwrap()).unwrap();
            assert_eq!((signed_size, signed_root), (size, root));
            assert!(
                inclusion_ok(index, size, served, &path, &root),
                "{index}/{size}"
            );
            // The verifier is not vacuous: a changed leaf, path or index fails.
            let mut other = served;
            other[0] ^= 1;
            assert!(!inclusion_ok(index, size, other, &path, &root));
            if let Some(first_hash) = path.first() {
                let mut bent = path.clone();
                bent[0] = node(first_hash, first_hash);
                assert!(!inclusion_ok(index, size, served, &bent, &root));
                assert!(!inclusion_ok(
                    (index + 1) % size,
                    size,
                    served,
                    &path,
                    &root
                ));
            }
        }
    }

    let reply = server
        .admin(
            Method::GET,
            &format!("/v1/audit/proof/consistency?first={m}&second={n}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let proof = hashes(&reply.body["proof"]);
    assert!(consistency_ok(m, n, &old_root, &new_root, &proof));
    let mut wrong_old = old_root;
    wrong_old[31] ^= 1;
    assert!(!consistency_ok(m, n, &wrong_old, &new_root, &proof));
    assert!(!consistency_ok(m, n, &old_root, &new_root, &proof[1..]));

    // Every stored checkpoint opens with the published key and signs the root of that many
    // leaves as computed here.
    let page = server
        .admin(Method::GET, "/v1/audit/checkpoints?limit=1000", None)
        .await;
    let stored = page.body["checkpoints"].as_array().unwrap();
    let mut checked = 0;
    for c in stored {
        let (_, size, root) = open_note(&vkey, c["note"].as_str().unwrap()).unwrap();
        assert_eq!(size, c["tree_size"].as_u64().unwrap());
        // Checkpoints signed after the leaves were read are left out.
        if let Some(prefix) = leaves.get(..size as usize) {
            assert_eq!(mth(prefix), root, "checkpoint {size}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "{checked}");
}

async fn bad_proof_requests_are_refused_and_change_nothing(backend: Backend) {
    let server = start(backend).await;
    server.register("coder", "team-a").await;
    let cp = checkpoint_of_at_least(&server, 2).await;
    let size = cp["tree_size"].as_u64().unwrap();
    let refused = [
        (
            format!("/v1/audit/proof/inclusion?index={size}&tree_size={size}"),
            StatusCode::BAD_REQUEST,
            "index_beyond_tree",
        ),
        (
            format!(
                "/v1/audit/proof/inclusion?index=0&tree_size={}",
                size + 100_000
            ),
            StatusCode::NOT_FOUND,
            "checkpoint_not_found",
        ),
        (
            format!("/v1/audit/proof/consistency?first={size}&second=1"),
            StatusCode::BAD_REQUEST,
            "tree_sizes_out_of_order",
        ),
        (
            format!(
                "/v1/audit/proof/consistency?first=1&second={}",
                size + 100_000
            ),
            StatusCode::NOT_FOUND,
            "checkpoint_not_found",
        ),
        (
            "/v1/audit/proof/inclusion?index=0".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/audit/proof/consistency?first=-1&second=2".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("/v1/audit/checkpoint?tree_size={}", size + 100_000),
            StatusCode::NOT_FOUND,
            "checkpoint_not_found",
        ),
    ];
    for (path, status, code) in &refused {
        let reply = server.admin(Method::GET, path, None).await;
        assert_eq!(
            (reply.status, reply.code()),
            (*status, *code),
            "{path}: {}",
            reply.body
        );
    }
    let anonymous = server
        .call(
            Method::GET,
            &format!("/v1/audit/proof/inclusion?index=0&tree_size={size}"),
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // Nothing changed: the checkpoint is the same note, the tree still serves, and the
    // replica is ready.
    let again = server
        .admin(
            Method::GET,
            &format!("/v1/audit/checkpoint?tree_size={size}"),
            None,
        )
        .await;
    assert_eq!(again.body["note"], cp["note"]);
    let ok = server
        .admin(
            Method::GET,
            &format!("/v1/audit/proof/inclusion?index=0&tree_size={size}"),
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
}

async fn a_truncated_log_is_found_at_restart(backend: Backend) {
    let server = start(backend).await;
    for i in 0..3 {
        server.register(&format!("agent-{i}"), "team-a").await;
    }
    let cp = checkpoint_of_at_least(&server, 4).await;
    let size = cp["tree_size"].as_u64().unwrap();
    let (dir, store) = server.stop().await;
    let restarted = {
        let env = std::collections::HashMap::new();
        TestServer::start_on(backend, dir, store, env)
            .await
            .unwrap()
    };
    let ready = restarted.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let (dir, store) = restarted.stop().await;
    // An attacker with the database deletes the tail under the checkpoint and moves the
    // head: the hash chain alone would still verify.
    let keep = size - 2;
    let server = TestServer::start_on(backend, dir, store, std::collections::HashMap::new())
        .await
        .unwrap();
    server
        .raw_sql(&format!("DELETE FROM audit_log WHERE seq > {keep}"))
        .await;
    server
        .raw_sql(&format!(
            "UPDATE audit_head SET seq = {keep}, hash = (SELECT hash FROM audit_log WHERE seq = {keep}) WHERE id = 1"
        ))
        .await;
    let (dir, store) = server.stop().await;
    let broken = TestServer::start_on(backend, dir, store, std::collections::HashMap::new())
        .await
        .unwrap();
    let ready = broken.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert!(
        ready.body["reasons"]
            .as_array()
            .unwrap()
            .contains(&Value::from("audit_tree_broken")),
        "{}",
        ready.body
    );
    let metrics = broken
        .http
        .get(format!("{}/metrics", broken.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("aims_audit_tree_broken 1"), "{metrics}");
}

/// A stored checkpoint whose root no longer matches the tree (its row edited in the
/// database) is a break when a proof is asked at its size: refused, and the replica unready.
async fn a_proof_against_an_edited_checkpoint_marks_the_log_broken(backend: Backend) {
    let server = start(backend).await;
    for i in 0..3 {
        server.register(&format!("agent-{i}"), "team-a").await;
    }
    let cp = checkpoint_of_at_least(&server, 4).await;
    let size = cp["tree_size"].as_u64().unwrap();
    server
        .raw_sql(&format!(
            "UPDATE audit_checkpoints SET root_hash = '{}' WHERE tree_size = {size}",
            "ab".repeat(32)
        ))
        .await;
    let proof = server
        .admin(
            Method::GET,
            &format!("/v1/audit/proof/inclusion?index=0&tree_size={size}"),
            None,
        )
        .await;
    assert_eq!(
        (proof.status, proof.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_tree_broken"),
        "{}",
        proof.body
    );
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
}
