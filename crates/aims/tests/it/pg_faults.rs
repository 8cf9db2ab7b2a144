//! PostgreSQL faults under the real `aims server` process, on a PostgreSQL cluster of the
//! test's own (so stopping it disturbs no other test): the database stopped and started again
//! while requests keep arriving, and the server's connections killed with
//! `pg_terminate_backend` mid-transaction. Asserted from the client's side as the SQLite fault
//! tests are ([`Ledger`]): every 2xx survives the fault, a `kill -9` and a restart; every
//! refusal changed nothing (an answer of `store_outcome_unknown` may have either way); the
//! audit chain verifies; the server recovers by itself once the database is back.
//!
//! Needs PostgreSQL's server programs (`initdb`, `pg_ctl`; `.ci/run` installs them); ignored
//! otherwise, like the other PostgreSQL tests. As root the cluster runs as user `postgres`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::replica_kit::Agent;
use crate::storage_faults::{Ledger, readiness};

/// A PostgreSQL cluster in a temporary directory, listening on a free loopback port.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Creates and starts a cluster.
    fn start() -> Self {
        let bin = server_programs();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("cluster");
        let port = free_port();
        let cluster = Self {
            bin,
            data,
            port,
            _dir: dir,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&cluster.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.pg_ctl("start");
        cluster
    }

    /// `postgres://` URL of its `postgres` database.
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start` or `pg_ctl stop -m fast`, waiting until done.
    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            path(self.data.parent().unwrap())
        );
        let log = self.data.with_extension("log");
        let mut args = vec![action, "-w", "-D", path(&self.data), "-l", path(&log)];
        if action == "start" {
            args.extend(["-o", &options]);
        } else {
            args.extend(["-m", "fast"]);
        }
        self.run("pg_ctl", &args);
    }

    /// Runs one of the server programs, as `postgres` when root.
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let out = command.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D", path(&self.data)])
            .output();
        if is_root() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-D", path(&self.data)])
                .output();
        }
    }
}

/// The newest installed PostgreSQL's server programs.
fn server_programs() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs are installed under /usr/lib/postgresql")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("initdb is installed")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server on `cluster`, with its data directory in `dir`, an attested planner and the
/// planner's task token.
async fn node_on(cluster: &PrivatePostgres, dir: &Path) -> (Node, Agent, String) {
    let node =
        Node::first_start_with(dir.join("data"), &[("AIMS_DATABASE_URL", &cluster.url())]).await;
    let planner = node.at().planner().await;
    let token = node.at().exchange(&planner).await;
    assert_eq!(node.at().decide(&planner, &token).await, 200);
    (node, planner, token)
}

/// Every operation must succeed again within `within`: the server recovered by itself.
async fn recovers(ledger: &mut Ledger, node: &Node, agent: &Agent, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clean = 0;
    while clean < 10 {
        assert!(
            Instant::now() < deadline,
            "the server did not recover by itself"
        );
        if ledger.round(node, agent, token).await == [201, 200, 200] {
            clean += 1;
        } else {
            clean = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (status, body) = readiness(node).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL's server programs (initdb, pg_ctl): run with --include-ignored"]
async fn a_stopped_and_restarted_database_loses_no_acknowledged_write() {
    let cluster = Arc::new(PrivatePostgres::start());
    let dir = tempfile::tempdir().unwrap();
    let (mut node, planner, token) = node_on(&cluster, dir.path()).await;
    let mut ledger = Ledger::default();
    for _ in 0..5 {
        ledger.round(&node, &planner, &token).await;
    }

    // Stop the database while requests keep coming, then start it again.
    let stopped = Arc::new(AtomicBool::new(false));
    let fault = {
        let (stopped, cluster) = (stopped.clone(), cluster.clone());
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(300));
            cluster.pg_ctl("stop");
            stopped.store(true, Ordering::SeqCst);
            // Longer than the server waits for a connection (5 s), so requests are refused
            // meanwhile instead of only waiting.
            std::thread::sleep(Duration::from_secs(8));
            cluster.pg_ctl("start");
        })
    };
    while !fault.is_finished() {
        ledger.round(&node, &planner, &token).await;
    }
    fault.await.unwrap();
    assert!(stopped.load(Ordering::SeqCst));
    // Each request waits up to 5 s for a connection before it is refused, so an 8 s outage
    // refuses a few of them.
    assert!(
        ledger.refusals() > 0,
        "nothing was refused while the database was down"
    );
    let (status, _) = readiness(&node).await;
    println!("readiness right after the database came back: {status}");

    recovers(&mut ledger, &node, &planner, &token).await;
    ledger.assert_kept(&node).await;
    node.kill_and_restart();
    ledger.assert_kept(&node).await;
    println!("{}", ledger.summary());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL's server programs (initdb, pg_ctl): run with --include-ignored"]
async fn connections_killed_mid_transaction_lose_no_acknowledged_write() {
    let cluster = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut node, planner, token) = node_on(&cluster, dir.path()).await;
    let mut ledger = Ledger::default();

    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let url = cluster.url();
        tokio::spawn(async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let mut killed = 0i64;
            while !stop.load(Ordering::SeqCst) {
                // Materialized first, so only the server's sessions are terminated.
                let now: i64 = sqlx::query_scalar(
                    "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
                     WHERE application_name = 'aims') \
                     SELECT count(*) FROM victims WHERE pg_terminate_backend(pid)",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                killed += now;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            killed
        })
    };
    for _ in 0..40 {
        ledger.round(&node, &planner, &token).await;
    }
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no connection was killed");
    assert!(
        ledger.refusals() > 0,
        "the kills cut no request: the test did not test anything"
    );

    recovers(&mut ledger, &node, &planner, &token).await;
    ledger.assert_kept(&node).await;
    node.kill_and_restart();
    ledger.assert_kept(&node).await;
    println!("{killed} connections killed; {}", ledger.summary());
}
