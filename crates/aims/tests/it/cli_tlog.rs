//! `aims audit verify --checkpoint FILE` against the real server process: a checkpoint saved
//! with `aims audit checkpoint --out FILE`, then the database changed behind the server's back
//! as an attacker with write access would (a copied column edited, a middle row deleted, two
//! rows reordered, the tail deleted and the head moved back), each found by the CLI, which
//! names the first bad entry, and by plain `aims audit verify` against the checkpoints the
//! server stored; and kept checkpoints signed by another key or for another origin
//! refused. On SQLite, and on PostgreSQL with `AIMS_TEST_DATABASE_URL`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aims_core::tlog::Checkpoint;
use aims_token::note::LogKey;

use crate::process::{ADMIN_TOKEN, Server};

/// Where the server's database is, to change it behind its back.
enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    async fn execute(&self, statements: &[String]) {
        match self {
            Db::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                for sql in statements {
                    sqlx::query(sql).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
            Db::Postgres(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                for sql in statements {
                    sqlx::query(sql).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
        }
    }
}

/// A server with a few audited requests behind it and a checkpoint saved to a file.
struct Logged {
    server: Server,
    db: Db,
    kept: PathBuf,
    size: u64,
    _dir: tempfile::TempDir,
}

async fn logged(postgres: bool) -> Logged {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bootstrap = [("AIMS_BOOTSTRAP_TOKEN", ADMIN_TOKEN)];
    let (server, db) = if postgres {
        let url = crate::replica_kit::database_url().await;
        let server = Server::start_with(&data, &bootstrap, &["--database-url", &url]);
        (server, Db::Postgres(url))
    } else {
        let server = Server::start_with(&data, &bootstrap, &[]);
        (server, Db::Sqlite(data.join("aims.db")))
    };
    for name in ["alpha", "beta", "gamma"] {
        server.json(&["agent", "register", name, "--owner", "team-a"]);
    }
    let kept = dir.path().join("checkpoint.txt");
    let kept_arg = kept.to_str().unwrap().to_owned();
    let mut size = 0;
    for _ in 0..100 {
        // Refused with checkpoint_not_found until the first one is signed.
        let out = server.run(
            Some(ADMIN_TOKEN),
            &[
                "audit",
                "checkpoint",
                "--out",
                &kept_arg,
                "--output",
                "json",
            ],
        );
        if out.status.success() {
            let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            size = shown["tree_size"].as_u64().unwrap();
        }
        if size >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(size >= 6, "no checkpoint of 6 entries was signed");
    let note = std::fs::read_to_string(&kept).unwrap();
    assert!(
        note.starts_with(&format!("e2e.example/aims/audit\n{size}\n")),
        "{note}"
    );
    Logged {
        server,
        db,
        kept,
        size,
        _dir: dir,
    }
}

/// Runs `aims audit verify --checkpoint FILE` (and `extra`): (success, stdout, stderr).
fn verify(server: &Server, kept: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["audit", "verify", "--checkpoint", kept.to_str().unwrap()];
    args.extend(extra);
    let out = server.run(Some(ADMIN_TOKEN), &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Changes the database with `statements` and expects verify to fail saying each of `expect`.
async fn detected(postgres: bool, statements: impl Fn(u64) -> Vec<String>, expect: &[&str]) {
    let log = logged(postgres).await;
    let (ok, stdout, stderr) = verify(&log.server, &log.kept, &[]);
    assert!(ok, "an untouched log must verify: {stderr}");
    assert!(stdout.contains("Audit tree intact"), "{stdout}");
    log.db.execute(&statements(log.size)).await;
    let (ok, _, stderr) = verify(&log.server, &log.kept, &[]);
    assert!(!ok, "the change went unnoticed");
    println!("detected: {}", stderr.trim());
    assert!(stderr.contains("audit log is NOT intact"), "{stderr}");
    for text in expect {
        assert!(stderr.contains(text), "expected {text:?} in: {stderr}");
    }
    // Without a kept checkpoint, plain verify checks the tree against the signed checkpoints
    // the server stored, which this attacker left in place.
    let plain = log.server.run(Some(ADMIN_TOKEN), &["audit", "verify"]);
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success(), "plain verify missed the change");
    assert!(stderr.contains("audit log is NOT intact"), "{stderr}");
}

fn edit_column(_: u64) -> Vec<String> {
    // Only the copied column: the body, and so the hash chain, is untouched.
    vec!["UPDATE audit_log SET action = 'api.read' WHERE seq = 3".to_owned()]
}

fn delete_middle(_: u64) -> Vec<String> {
    vec!["DELETE FROM audit_log WHERE seq = 3".to_owned()]
}

fn reorder(_: u64) -> Vec<String> {
    vec![
        "UPDATE audit_log SET seq = 1000000 WHERE seq = 2".to_owned(),
        "UPDATE audit_log SET seq = 2 WHERE seq = 3".to_owned(),
        "UPDATE audit_log SET seq = 3 WHERE seq = 1000000".to_owned(),
    ]
}

/// Deletes the entries after `size - 3` and moves the head back to the last one left, so
/// the hash chain alone still verifies.
fn truncate_tail(size: u64) -> Vec<String> {
    let keep = size - 3;
    vec![
        format!("DELETE FROM audit_log WHERE seq > {keep}"),
        format!(
            "UPDATE audit_head SET seq = {keep}, \
             hash = (SELECT hash FROM audit_log WHERE seq = {keep}) WHERE id = 1"
        ),
    ]
}

async fn every_change_is_detected(postgres: bool) {
    detected(postgres, edit_column, &["at entry 3", "`action`"]).await;
    detected(postgres, delete_middle, &["at entry 3", "missing"]).await;
    detected(postgres, reorder, &["at entry 2", "does not link"]).await;
    // The CLI's own requests append entries again at the truncated positions, so the tail
    // shows up as entries that do not match the kept checkpoint.
    detected(postgres, truncate_tail, &["checkpoint"]).await;
}

async fn foreign_checkpoints_are_refused(postgres: bool) {
    let log = logged(postgres).await;
    let rng = ring::rand::SystemRandom::new();
    let origin = "e2e.example/aims/audit";
    let kept = std::fs::read_to_string(&log.kept).unwrap();
    let body = &kept[..kept.find("\n\n").unwrap() + 1];
    let root = Checkpoint::parse_body(body).unwrap().root;
    let dir = tempfile::tempdir().unwrap();
    // The same tree, signed by a key that is not the log's.
    let impostor = LogKey::generate(&rng, origin).unwrap().key;
    let forged = dir.path().join("forged.txt");
    let checkpoint = Checkpoint {
        origin: origin.to_owned(),
        size: log.size,
        root,
    };
    std::fs::write(&forged, impostor.sign(&checkpoint)).unwrap();
    let (ok, _, stderr) = verify(&log.server, &forged, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("kept checkpoint is refused") && stderr.contains("not signed by key"),
        "{stderr}"
    );
    // A checkpoint of another log, opened with that log's own key (pinned): another origin.
    let other = dir.path().join("other.txt");
    let foreign = Checkpoint {
        origin: "elsewhere.example/aims/audit".to_owned(),
        ..checkpoint
    };
    std::fs::write(&other, impostor.sign(&foreign)).unwrap();
    let vkey = impostor.verifier_key();
    let (ok, _, stderr) = verify(&log.server, &other, &["--log-key", &vkey]);
    assert!(!ok);
    assert!(stderr.contains("for origin"), "{stderr}");
    // The genuine one still verifies, and so does plain verify (chain and tree).
    let (ok, _, stderr) = verify(&log.server, &log.kept, &[]);
    assert!(ok, "{stderr}");
    let plain = log.server.run(Some(ADMIN_TOKEN), &["audit", "verify"]);
    assert!(plain.status.success());
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(stdout.contains("Audit chain intact"), "{stdout}");
    assert!(stdout.contains("Audit tree intact"), "{stdout}");
}

#[tokio::test]
async fn sqlite_every_change_is_detected() {
    every_change_is_detected(false).await;
}

#[tokio::test]
async fn sqlite_foreign_checkpoints_are_refused() {
    foreign_checkpoints_are_refused(false).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn postgres_every_change_is_detected() {
    every_change_is_detected(true).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn postgres_foreign_checkpoints_are_refused() {
    foreign_checkpoints_are_refused(true).await;
}
