//! Real storage faults under the real `aims server` process (SQLite), asserted from the
//! client's side: every 2xx the client received is in the store and in the audit log after the
//! fault clears and again after a `kill -9` and restart; every refusal changed nothing; the
//! audit chain and the Merkle tree log verify against every signed checkpoint; and the server
//! recovers by itself, without a restart.
//!
//! - A full disk: the data directory is a small tmpfs, filled by another file until writes fail,
//!   then freed (the reproduction; needs root to mount, which CI has — with `CI` set, a
//!   mount that fails fails the test instead of skipping it).
//! - The free-space reserve: below it writes are refused before the disk is full.
//! - A file lock held by another process: a Python `sqlite3` connection holds the database's
//!   write lock for longer than the server's busy timeout.
//!
//! Without root, the store's own suite fills a database to SQLite's `max_page_count` instead.
//! The PostgreSQL equivalents (a stopped database, killed connections) are in `pg_faults`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::node::Node;
use crate::process::ADMIN_TOKEN;
use crate::replica_kit::{Agent, jti};

/// What the client was told, and the check that the server keeps to it.
#[derive(Default)]
pub struct Ledger {
    /// Agents whose registration was acknowledged (201).
    registered: BTreeSet<String>,
    /// Agents whose registration was refused.
    refused: BTreeSet<String>,
    /// Registrations answered `store_outcome_unknown`: either is allowed.
    unknown: BTreeSet<String>,
    /// Ids of the decisions answered 200.
    decisions: BTreeSet<String>,
    /// Decisions refused.
    refused_decisions: usize,
    /// Ids of the task tokens issued.
    tokens: Vec<String>,
    /// Exchanges refused.
    refused_exchanges: usize,
    /// How many agents the ledger has named.
    counter: usize,
}

impl Ledger {
    /// Registers a new agent; returns the status.
    pub async fn register(&mut self, node: &Node) -> u16 {
        self.counter += 1;
        let name = format!("agent-{}", self.counter);
        let (status, body) = node
            .at()
            .admin(
                "/v1/agents",
                json!({"name": name, "owner": "alice@acme.example"}),
            )
            .await;
        match status {
            201 => self.registered.insert(name),
            _ if body["error"] == "store_outcome_unknown" => self.unknown.insert(name),
            _ => self.refused.insert(name),
        };
        status
    }

    /// `agent` asks for a decision with `token`; returns the status.
    pub async fn decide(&mut self, node: &Node, agent: &Agent, token: &str) -> u16 {
        let (status, body) = node.at().decision(agent, token).await;
        if status == 200 {
            self.decisions
                .insert(body["decision_id"].as_str().unwrap().to_owned());
        } else {
            self.refused_decisions += 1;
        }
        status
    }

    /// `agent` exchanges its SVID for a task token; returns the status.
    pub async fn exchange(&mut self, node: &Node, agent: &Agent) -> u16 {
        let (status, body) = node.at().exchange_response(agent).await;
        if status == 200 {
            self.tokens
                .push(body["access_token"].as_str().unwrap().to_owned());
        } else {
            self.refused_exchanges += 1;
        }
        status
    }

    /// One of each operation; returns their statuses.
    pub async fn round(&mut self, node: &Node, agent: &Agent, token: &str) -> [u16; 3] {
        [
            self.register(node).await,
            self.decide(node, agent, token).await,
            self.exchange(node, agent).await,
        ]
    }

    /// One line on what the client was told.
    pub fn summary(&self) -> String {
        format!(
            "{} registered, {} refused, {} of unknown outcome; {} decisions ({} refused); \
             {} tokens ({} refused)",
            self.registered.len(),
            self.refused.len(),
            self.unknown.len(),
            self.decisions.len(),
            self.refused_decisions,
            self.tokens.len(),
            self.refused_exchanges
        )
    }

    /// How many answers were refusals.
    pub fn refusals(&self) -> usize {
        self.refused.len() + self.refused_decisions + self.refused_exchanges
    }

    /// Asserts the promise on `node`: what was acknowledged is in the store and in the audit
    /// log, what was refused left nothing, and the chain and the tree verify.
    pub async fn assert_kept(&self, node: &Node) {
        for name in &self.registered {
            assert_eq!(
                agent_status(node, name).await,
                200,
                "acknowledged registration {name} was lost"
            );
        }
        for name in &self.refused {
            assert_eq!(
                agent_status(node, name).await,
                404,
                "refused registration {name} was written"
            );
        }
        for token in &self.tokens {
            assert!(node.active(token).await, "an issued task token was lost");
        }
        let events = node.events().await;
        let named = |action: &str, field: &str| -> BTreeSet<String> {
            events
                .iter()
                .filter(|e| e["action"] == action && e["outcome"] == "success")
                .filter_map(|e| field_of(e, field))
                .collect()
        };
        let registered = named("agent.register", "agent");
        for name in &self.registered {
            assert!(
                registered
                    .iter()
                    .any(|id| id.ends_with(&format!("/agent/{name}"))),
                "registration of {name} is not audited"
            );
        }
        for name in &self.refused {
            assert!(
                !registered
                    .iter()
                    .any(|id| id.ends_with(&format!("/agent/{name}"))),
                "refused registration of {name} is audited as done"
            );
        }
        let decided: BTreeSet<String> = events
            .iter()
            .filter(|e| e["action"] == "decision")
            .filter_map(|e| field_of(e, "decision_id"))
            .collect();
        assert!(
            self.decisions.is_subset(&decided),
            "{} acknowledged decisions are not audited",
            self.decisions.difference(&decided).count()
        );
        let issued = named("token.exchange", "token_id");
        for token in &self.tokens {
            assert!(
                issued.contains(&jti(token)),
                "an issued token is not audited"
            );
        }
        node.verified_audit_tree().await;
    }
}

/// `field` of an audit event, or of its details.
fn field_of(event: &Value, field: &str) -> Option<String> {
    event[field]
        .as_str()
        .or_else(|| event["details"][field].as_str())
        .map(str::to_owned)
}

async fn agent_status(node: &Node, name: &str) -> u16 {
    node.http
        .get(format!("{}/v1/agents/{name}", node.server.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `/readyz` after the readiness probe's caching interval: (status, body).
pub async fn readiness(node: &Node) -> (u16, Value) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = node
        .http
        .get(format!("{}/readyz", node.server.url))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// A small tmpfs mounted for one test and unmounted when dropped.
struct Tmpfs {
    /// The mount point, which is the server's data directory.
    mount: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `8m`) with mode 0700, or returns `None` where this user
    /// may not mount — except under CI, which runs as root: there it fails the test.
    fn mount(size: &str) -> Option<Self> {
        let parent = tempfile::tempdir().unwrap();
        let mount = parent.path().join("data");
        std::fs::create_dir(&mount).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mount)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self {
                mount,
                _parent: parent,
            }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI runs as root and must run this test, but mounting a tmpfs failed: {why}"
                );
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here ({why}); run as root to test a full disk"
                );
                None
            }
        }
    }

    /// Remounts the file system with `mode` (`ro` or `rw`).
    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.mount)
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode}");
    }

    /// Fills the file system with a file until a write fails; returns the file.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Down to the last bytes.
        while file.write_all(&[0u8]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// An attested planner and a task token of it, made while the store is healthy.
async fn planner_with_token(node: &Node) -> (Agent, String) {
    let planner = node.at().planner().await;
    let token = node.at().exchange(&planner).await;
    assert_eq!(node.at().decide(&planner, &token).await, 200);
    (planner, token)
}

/// Every operation of `rounds` rounds must succeed: the server has recovered by itself.
async fn assert_recovered(ledger: &mut Ledger, node: &Node, agent: &Agent, token: &str) {
    for _ in 0..10 {
        let statuses = ledger.round(node, agent, token).await;
        assert_eq!(
            statuses,
            [201, 200, 200],
            "the server did not recover by itself"
        );
    }
    let (status, body) = readiness(node).await;
    assert_eq!(status, 200, "{body}");
}

/// The reproduction: fill the disk, let writes fail, free it, write, restart. Before
/// transactions ended by hand, every write after the first failed COMMIT was acknowledged and
/// lost, and only a restart ended it.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_loses_no_acknowledged_write() {
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    // No reserve: the disk itself must fill (the reserve is tested separately).
    let mut node =
        Node::first_start_with(disk.mount.clone(), &[("AIMS_STORAGE_RESERVE_MB", "0")]).await;
    let (planner, token) = planner_with_token(&node).await;
    let mut ledger = Ledger::default();
    ledger.round(&node, &planner, &token).await;

    let filler = disk.fill();
    for _ in 0..15 {
        ledger.round(&node, &planner, &token).await;
    }
    assert!(
        ledger.refusals() >= 15,
        "a full disk refused only {} of 45 writes: the others were acknowledged with no room \
         to store them",
        ledger.refusals()
    );
    let (status, body) = readiness(&node).await;
    assert_eq!(status, 503, "ready on a full disk: {body}");

    std::fs::remove_file(filler).unwrap();
    assert_recovered(&mut ledger, &node, &planner, &token).await;
    ledger.assert_kept(&node).await;

    node.kill_and_restart();
    ledger.assert_kept(&node).await;
    println!("full disk: {}", ledger.summary());
}

/// The free-space reserve: below it the server refuses writes with 503 `storage_reserve` and
/// says so on `/readyz`, before the disk itself is full; above it again, it writes.
#[tokio::test(flavor = "multi_thread")]
async fn below_the_reserve_writes_are_refused_before_the_disk_is_full() {
    let Some(disk) = Tmpfs::mount("16m") else {
        return;
    };
    let node =
        Node::first_start_with(disk.mount.clone(), &[("AIMS_STORAGE_RESERVE_MB", "8")]).await;
    let (planner, token) = planner_with_token(&node).await;
    let mut ledger = Ledger::default();

    // Leave 4 MiB: above the disk's wall, below the reserve.
    let filler = disk.mount.join("filler");
    let free = rustix::fs::statvfs(&disk.mount).unwrap();
    let free = free.f_bavail * free.f_frsize;
    let keep = 4 * 1024 * 1024;
    std::fs::write(&filler, vec![0u8; usize::try_from(free - keep).unwrap()]).unwrap();

    assert_eq!(ledger.register(&node).await, 503);
    let (status, body) = node
        .at()
        .admin(
            "/v1/agents",
            json!({"name": "below", "owner": "a@b.example"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("storage_reserve"))
    );
    assert_eq!(ledger.decide(&node, &planner, &token).await, 503);
    let (status, body) = readiness(&node).await;
    assert_eq!(status, 503);
    assert!(
        body["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("storage_reserve")),
        "{body}"
    );

    std::fs::remove_file(filler).unwrap();
    assert_recovered(&mut ledger, &node, &planner, &token).await;
    ledger.assert_kept(&node).await;
}

/// A read-only file system under the data directory. Linux will not make a file system
/// read-only while a process holds files on it open for writing, so the fault is met where it
/// can be: the server is stopped, the tmpfs remounted read-only, and the server refuses to
/// start (fail closed, with the reason) rather than run unable to write; made writable again,
/// it starts with everything it had acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_data_directory_refuses_to_start_and_loses_nothing() {
    let Some(disk) = Tmpfs::mount("16m") else {
        return;
    };
    // The reserve is tested elsewhere; this tmpfs is smaller than the default one.
    let mut node =
        Node::first_start_with(disk.mount.clone(), &[("AIMS_STORAGE_RESERVE_MB", "0")]).await;
    let (planner, token) = planner_with_token(&node).await;
    let mut ledger = Ledger::default();
    ledger.round(&node, &planner, &token).await;
    assert!(node.server.child.kill().is_ok());
    node.server.child.wait().unwrap();

    disk.remount("ro");
    let refused = crate::process::aims()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&disk.mount)
        .env("AIMS_STORAGE_RESERVE_MB", "0")
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "started on a read-only file system"
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("Read-only file system"), "{said}");

    disk.remount("rw");
    node.kill_and_restart();
    ledger.assert_kept(&node).await;
    assert_recovered(&mut ledger, &node, &planner, &token).await;
}

/// Another process holds the database's write lock longer than the server waits for it: the
/// writes that time out are refused and change nothing; once it lets go, writes succeed.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_by_another_process_refuses_writes_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::first_start(dir.path().join("data")).await;
    let (planner, token) = planner_with_token(&node).await;
    let mut ledger = Ledger::default();

    let mut holder = hold_write_lock(&node.data.join("aims.db"), Duration::from_secs(7));
    // While it holds the lock (the server's busy timeout is 5 s), writes wait, then fail.
    let status = ledger.register(&node).await;
    assert_eq!(
        status, 503,
        "a write succeeded under another process's lock"
    );
    let decision = ledger.decide(&node, &planner, &token).await;
    assert!(holder.wait().unwrap().success());
    println!("under the lock: registration {status}, decision {decision}");

    assert_recovered(&mut ledger, &node, &planner, &token).await;
    ledger.assert_kept(&node).await;
    node.kill_and_restart();
    ledger.assert_kept(&node).await;
}

/// Holds `database`'s write lock from another process (Python's `sqlite3`) for `hold`; returns
/// once the lock is taken.
fn hold_write_lock(database: &Path, hold: Duration) -> std::process::Child {
    let script = format!(
        "import sqlite3, sys, time\n\
         c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
         c.execute('BEGIN IMMEDIATE')\n\
         print('locked', flush=True)\n\
         time.sleep({})\n\
         c.execute('ROLLBACK')\n",
        hold.as_secs_f64()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .arg(database)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the lock holder");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}
