//! The audit log as C2SP tlog-tiles, mirrored from outside: a client that knows only RFC 9162
//! and the tlog-tiles spec fetches the latest signed checkpoint, every hash tile and entry
//! bundle of its tree over HTTP, rebuilds the root from the tiles (level 0 alone, and the
//! highest levels where they reach) and finds the signed one, and checks that every entry
//! hashes to its level-0 tile hash. Tiles past the tree and malformed tile paths are refused
//! with stable codes and change nothing; a row edited behind the server's back is never served.

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use crate::kit::{Backend, Reply, TestServer};
use crate::on_both_stores;
use crate::tlog::{Hash, checkpoint_of_at_least, k_of, leaf, log_key, mth, node, open_note, start};

on_both_stores!(
    tiles_rebuild_the_signed_tree,
    bad_tile_requests_are_refused_and_change_nothing,
);

/// Hashes in a full tile.
const WIDTH: u64 = 256;

// --- the mirror, from the tlog-tiles spec ----------------------------------------------------

/// `<prefix>/tile/<kind>/<N>[.p/<W>]`: N in zero-padded three-digit elements, all but the last
/// prefixed with `x`; `.p/<W>` only for a partial tile.
fn tile_path(kind: &str, n: u64, width: u64) -> String {
    let mut elements = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        elements.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    elements.reverse();
    let mut path = format!("/v1/audit/tlog/tile/{kind}/{}", elements.join("/"));
    if width < WIDTH {
        path.push_str(&format!(".p/{width}"));
    }
    path
}

async fn get(server: &TestServer, path: &str) -> Reply {
    server.admin(Method::GET, path, None).await
}

fn header(reply: &Reply, name: reqwest::header::HeaderName) -> &str {
    reply.headers[name].to_str().unwrap()
}

/// Checks a tile or bundle answer: bytes, cached for good only when full.
fn check_served(reply: &Reply, path: &str, width: u64) {
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    assert_eq!(header(reply, CONTENT_TYPE), "application/octet-stream");
    assert_eq!(
        header(reply, CACHE_CONTROL).contains("immutable"),
        width == WIDTH,
        "{path}"
    );
}

/// The `count` hashes of `level` a tree holds: its full tiles, then the partial one.
async fn level_hashes(server: &TestServer, level: usize, count: u64) -> Vec<Hash> {
    let mut hashes = Vec::new();
    for n in 0..count.div_ceil(WIDTH) {
        let width = (count - n * WIDTH).min(WIDTH);
        let path = tile_path(&level.to_string(), n, width);
        let reply = get(server, &path).await;
        check_served(&reply, &path, width);
        assert_eq!(reply.bytes.len() as u64, 32 * width, "{path}");
        hashes.extend(reply.bytes.chunks(32).map(|h| Hash::try_from(h).unwrap()));
    }
    hashes
}

/// MTH(D[lo:hi]) (RFC 9162 §2.1.1) from tile hashes: `levels[l][i]` is
/// MTH(D[i * 256^l : (i + 1) * 256^l]) (tlog-tiles), used wherever the range is exactly one
/// of them, from the highest level down.
fn range_hash(levels: &[Vec<Hash>], lo: u64, hi: u64) -> Hash {
    let n = hi - lo;
    for (l, hashes) in levels.iter().enumerate().rev() {
        let span = WIDTH.pow(l as u32);
        if n == span && lo.is_multiple_of(span) {
            return hashes[(lo / span) as usize];
        }
    }
    let k = k_of(n);
    node(
        &range_hash(levels, lo, lo + k),
        &range_hash(levels, lo + k, hi),
    )
}

/// The entries of a bundle: each a big-endian uint16 length, then that many bytes.
fn bundle_entries(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        entries.push(bytes[2..2 + len].to_vec());
        bytes = &bytes[2 + len..];
    }
    entries
}

/// Appends at least `n` audit entries: every operator read is one.
async fn write_entries(server: &TestServer, n: usize) {
    for _ in 0..n.div_ceil(16) {
        let reads = (0..16).map(|_| get(server, "/v1/agents"));
        for reply in futures_util::future::join_all(reads).await {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
    }
}

// --- tests -----------------------------------------------------------------------------------

async fn tiles_rebuild_the_signed_tree(backend: Backend) {
    let server = start(backend).await;
    server.register("coder", "team-a").await;
    write_entries(&server, 600).await;
    checkpoint_of_at_least(&server, 600).await;
    let vkey = log_key(&server).await;

    let reply = get(&server, "/v1/audit/tlog/checkpoint").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(header(&reply, CONTENT_TYPE), "text/plain; charset=utf-8");
    assert!(header(&reply, CACHE_CONTROL).contains("no-cache"));
    let note = String::from_utf8(reply.bytes).unwrap();
    let (origin, size, root) = open_note(&vkey, &note).unwrap();
    assert_eq!(origin, "test.example/aims/audit");
    assert!(size >= 600, "{size}");

    // Every level the tree reaches: `size / 256^l` hashes at level l.
    let mut levels = Vec::new();
    while size / WIDTH.pow(levels.len() as u32) > 0 {
        let count = size / WIDTH.pow(levels.len() as u32);
        levels.push(level_hashes(&server, levels.len(), count).await);
    }
    assert_eq!(levels.len(), 2, "600+ leaves reach level 1, not level 2");
    // Each level-1 hash is the root of the full level-0 tile it stands for.
    for (i, hash) in levels[1].iter().enumerate() {
        assert_eq!(*hash, mth(&levels[0][i * 256..(i + 1) * 256]), "1/{i}");
    }
    // The signed root, from the leaves alone and from the highest tiles.
    assert_eq!(mth(&levels[0]), root);
    assert_eq!(range_hash(&levels, 0, size), root);
    assert_eq!(range_hash(&levels[..1], 0, size), root);
    // The mirror is not vacuous: one changed level-1 hash gives another root.
    let mut bent = levels.clone();
    bent[1][0][0] ^= 1;
    assert_ne!(range_hash(&bent, 0, size), root);

    // A partial tile of fewer hashes than the tree has (an earlier checkpoint's) is the
    // prefix of the same tile.
    let last = (size - 1) / WIDTH;
    let path = tile_path("0", last, 1);
    let reply = get(&server, &path).await;
    check_served(&reply, &path, 1);
    assert_eq!(reply.bytes, levels[0][(last * WIDTH) as usize]);
    // Nothing at the level above the tree's top.
    let reply = get(&server, &tile_path("2", 0, 1)).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "tile_beyond_tree")
    );

    // Every entry bundle: each entry hashes (RFC 9162 leaf) to its level-0 tile hash, and is
    // the stored row's leaf bytes as `GET /v1/audit/entries` gives its columns.
    let rows = server
        .admin(Method::GET, "/v1/audit/entries?limit=1000", None)
        .await;
    let rows = rows.body["entries"].as_array().unwrap();
    let mut entries = Vec::new();
    for n in 0..size.div_ceil(WIDTH) {
        let width = (size - n * WIDTH).min(WIDTH);
        let path = tile_path("entries", n, width);
        let reply = get(&server, &path).await;
        check_served(&reply, &path, width);
        let bundle = bundle_entries(&reply.bytes);
        assert_eq!(bundle.len() as u64, width, "{path}");
        entries.extend(bundle);
    }
    assert_eq!(entries.len() as u64, size);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(leaf(entry), levels[0][i], "entry {i}");
        if let Some(row) = rows.get(i) {
            let view: aims_api::tlog::AuditEntryView = serde_json::from_value(row.clone()).unwrap();
            assert_eq!(view.seq, i as u64 + 1);
            assert_eq!(
                *entry,
                aims_sdk::tlog::entry_of(&view).unwrap().leaf_bytes(),
                "entry {i}"
            );
        }
    }
}

async fn bad_tile_requests_are_refused_and_change_nothing(backend: Backend) {
    let server = start(backend).await;
    server.register("coder", "team-a").await;
    let cp = checkpoint_of_at_least(&server, 2).await;
    let size = cp["tree_size"].as_u64().unwrap();
    // Under 100 entries now, and well under 255 once this test's own reads are added.
    assert!(size < 100, "{size}");
    let beyond = [
        "0/000",
        "0/000.p/255",
        "0/001.p/1",
        "1/000.p/1",
        "63/000.p/1",
        "2/x001/000",
        "entries/000",
        "entries/000.p/255",
        "entries/x001/000.p/1",
        "0/x018/x446/x744/x073/x709/x551/616",
    ];
    let malformed = [
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/300",
        "0/000.p/07",
        "entries/000.p/0",
        "0/1234",
        "0/12",
        "0/x001",
        "0/001/002",
        "0/x000/001",
        "64/000",
        "100/000",
        "00/000",
        "entry/000",
        "0/000.p",
    ];
    for (paths, status, code) in [
        (&beyond[..], StatusCode::NOT_FOUND, "tile_beyond_tree"),
        (&malformed[..], StatusCode::BAD_REQUEST, "invalid_tile_path"),
    ] {
        for path in paths {
            let reply = get(&server, &format!("/v1/audit/tlog/tile/{path}")).await;
            assert_eq!((reply.status, reply.code()), (status, code), "{path}");
        }
    }
    // The same access as the proofs: operators who may read, no one else.
    let anonymous = server
        .call(Method::GET, "/v1/audit/tlog/tile/0/000.p/1", None, None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let approver = server.add_user("dave", "approver").await;
    let refused = server
        .call(
            Method::GET,
            "/v1/audit/tlog/checkpoint",
            Some(approver.as_str()),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let auditor = server.add_user("carol", "auditor").await;
    let read = server
        .call(
            Method::GET,
            "/v1/audit/tlog/tile/0/000.p/1",
            Some(auditor.as_str()),
            None,
        )
        .await;
    check_served(&read, "0/000.p/1", 1);

    // Nothing changed: the tree still serves and the replica is ready.
    let entry = get(&server, "/v1/audit/tlog/tile/entries/000.p/2").await;
    check_served(&entry, "entries/000.p/2", 2);
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);

    // A column edited behind the server's back after it was integrated: the bundle holding
    // the row is refused, and the replica reports the break.
    server
        .raw_sql("UPDATE audit_log SET action = action || '-edited' WHERE seq = 2")
        .await;
    let edited = get(&server, "/v1/audit/tlog/tile/entries/000.p/2").await;
    assert_eq!(
        (edited.status, edited.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_tree_broken"),
        "{}",
        edited.body
    );
    let tile = get(&server, "/v1/audit/tlog/tile/0/000.p/2").await;
    assert_eq!(tile.code(), "audit_tree_broken");
    // Past the readiness answer given before the edit.
    tokio::time::sleep(aims_server::readiness::PROBE_EVERY).await;
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let reasons = ready.body["reasons"].to_string();
    assert!(reasons.contains("audit_tree_broken"), "{reasons}");
}
