//! Leases under real faults, against an `aims server` process whose engine is the local
//! PostgreSQL reached through a loopback forwarder the test controls ([`crate::forwarder`]);
//! the store is SQLite in one run and PostgreSQL in the other.
//!
//! - The engine goes away after a lease was made: revoking its task token marks the lease
//!   revoked at once; the reaper fails, retries with backoff, and `/readyz` (still `ready`)
//!   and the metrics report it; when the engine is back the role's session is terminated and
//!   the role dropped.
//! - The server is killed with SIGKILL while a lease is being created (before and after its
//!   role was committed) and while one is being ended (before and after its role was
//!   dropped): after restart, the lease the client was given is live and usable, every other
//!   is ended by the reaper, and no role without a live lease survives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::forwarder::{Forwarder, Mode};
use crate::node::Node;
use crate::replica_kit::{Agent, Replica, database_url, jti, starter_policies};
use crate::replicas::{LEASE_POLICY, role_exists, session};

fn engine_options() -> PgConnectOptions {
    std::env::var("AIMS_TEST_DATABASE_URL")
        .expect("AIMS_TEST_DATABASE_URL must name the engine database")
        .parse()
        .unwrap()
}

/// The local PostgreSQL's address.
fn upstream() -> SocketAddr {
    let options = engine_options();
    format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .unwrap()
}

async fn admin_connection() -> PgConnection {
    engine_options()
        .disable_statement_logging()
        .connect()
        .await
        .unwrap()
}

/// The lease roles holding a privilege on `schema` (each test has a schema of its own).
async fn lease_roles(admin: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT r.rolname::text FROM pg_roles r WHERE r.rolname LIKE 'aims\\_lease\\_%' \
         AND has_schema_privilege(r.oid, $1, 'USAGE') ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *admin)
    .await
    .unwrap()
}

/// A schema of this run's own with one table of one row.
async fn fresh_schema(admin: &mut PgConnection, tag: &str) -> String {
    let schema = format!("lease_faults_{}_{tag}", std::process::id());
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
         CREATE TABLE {schema}.sales (region text, amount int); \
         INSERT INTO {schema}.sales VALUES ('north', 42)"
    ))
    .execute(&mut *admin)
    .await
    .unwrap();
    schema
}

async fn amount(session: &mut PgConnection, schema: &str) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT amount FROM {schema}.sales WHERE region = 'north'"
    ))
    .fetch_one(session)
    .await
}

/// A lease's connection parameters, pointed at the database itself rather than the
/// forwarder: the agent's session does not cross the fault AIMS's connections do.
fn direct(granted: &Value) -> Value {
    let mut direct = granted.clone();
    direct["port"] = json!(upstream().port());
    direct
}

/// Lease policies in force, an engine `warehouse` behind `forwarder` with a `reader` role on
/// `schema`, and an attested planner.
async fn set_up(node: &Node, forwarder: &Forwarder, schema: &str) -> Agent {
    let at = node.at();
    let mut files = starter_policies();
    files.insert("leases.cedar".to_owned(), LEASE_POLICY.to_owned());
    let (status, body) = at.admin("/v1/policies", json!({ "files": files })).await;
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();
    while at.get("/v1/policies/active").await["version"] != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "policy not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let options = engine_options();
    let url = format!(
        "postgres://{}@{}/{}",
        options.get_username(),
        forwarder.addr,
        options.get_database().unwrap()
    );
    let (status, body) = at
        .admin(
            "/v1/engines",
            json!({"name": "warehouse", "connection_url": url}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let grants = format!("GRANT USAGE ON SCHEMA {schema}\nGRANT SELECT ON TABLE {schema}.sales");
    let (status, body) = at
        .admin(
            "/v1/engines/warehouse/roles",
            json!({"name": "reader", "grants": grants, "max_ttl_s": 900}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    at.planner().await
}

const ASK: &str = r#"{"engine": "warehouse", "role": "reader"}"#;

/// A new task token with the lease scope, and a lease asked with it (which must be granted).
async fn granted_lease(at: Replica<'_>, planner: &Agent) -> (String, Value) {
    let token = at.exchange_scope(planner, "lease:warehouse/reader").await;
    let (status, granted) = at
        .lease(planner, &token, &serde_json::from_str(ASK).unwrap())
        .await;
    assert_eq!(status, 201, "{granted}");
    (token, granted)
}

async fn lease_of(node: &Node, id: &str) -> Value {
    node.get(&format!("/v1/leases/{id}")).await
}

/// Waits up to `limit` until lease `id` satisfies `done`; returns it.
async fn until_lease(
    node: &Node,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let lease = lease_of(node, id).await;
        if done(&lease) {
            return lease;
        }
        assert!(started.elapsed() < limit, "lease {id} stuck: {lease}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readyz(node: &Node) -> (u16, Value) {
    let resp = node
        .http
        .get(format!("{}/readyz", node.server.url))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The `aims_lease_end_failures_total` counter.
async fn end_failures(node: &Node) -> u64 {
    let text = node
        .http
        .get(format!("{}/metrics", node.server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("aims_lease_end_failures_total "))
        .unwrap_or_else(|| panic!("no lease_end_failures in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn an_unreachable_engine_is_retried_reported_and_cleaned_up_on_sqlite() {
    engine_outage(None, "outage_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn an_unreachable_engine_is_retried_reported_and_cleaned_up_on_postgres() {
    engine_outage(Some(database_url().await), "outage_postgres").await;
}

async fn engine_outage(store: Option<String>, tag: &str) {
    let mut admin = admin_connection().await;
    let schema = fresh_schema(&mut admin, tag).await;
    let forwarder = Forwarder::start(upstream());
    let dir = tempfile::tempdir().unwrap();
    let node = Node::first_start_on(dir.path().join("data"), &[], store.as_deref()).await;
    let planner = set_up(&node, &forwarder, &schema).await;

    let (token, granted) = granted_lease(node.at(), &planner).await;
    let id = granted["lease_id"].as_str().unwrap().to_owned();
    let role = granted["username"].as_str().unwrap().to_owned();
    let mut open = session(&direct(&granted)).await;
    assert_eq!(amount(&mut open, &schema).await.unwrap(), 42);
    let failures_before = end_failures(&node).await;

    // The engine goes away; the lease's task token is revoked.
    forwarder.set(Mode::Down);
    assert_eq!(node.at().revoke_token(&jti(&token)).await, 2);
    let shown = lease_of(&node, &id).await;
    assert!(shown["revoked_at"].is_string(), "revoked at once: {shown}");
    assert_eq!(shown["state"], "ending", "{shown}");
    let listed = node.get("/v1/leases").await;
    let in_list = listed["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(in_list["state"], "ending", "{in_list}");
    assert!(in_list["revoked_at"].is_string());

    // The reaper fails, then waits out its backoff (5 s) before the next attempt.
    let failed = until_lease(&node, &id, Duration::from_secs(10), |l| {
        l["attempts"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(failed["state"], "ending", "{failed}");
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{failed}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lease_of(&node, &id).await["attempts"],
        1,
        "no retry before the backoff ran out"
    );
    until_lease(&node, &id, Duration::from_secs(10), |l| {
        l["attempts"].as_u64() >= Some(2)
    })
    .await;
    let (status, ready) = readyz(&node).await;
    assert_eq!(
        status, 200,
        "overdue leases do not make a replica unready: {ready}"
    );
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["leases_overdue"].as_u64() >= Some(1), "{ready}");
    assert!(
        end_failures(&node).await >= failures_before + 2,
        "every failed attempt is counted"
    );
    // Nothing could be ended: the role and its session are still there.
    assert!(role_exists(&mut admin, &role).await);
    assert_eq!(amount(&mut open, &schema).await.unwrap(), 42);

    // The engine is back: the next attempt terminates the session and drops the role.
    forwarder.set(Mode::Pass);
    let ended = until_lease(&node, &id, Duration::from_secs(30), |l| {
        l["state"] == "ended"
    })
    .await;
    assert!(ended["last_error"].is_null(), "{ended}");
    assert!(
        amount(&mut open, &schema).await.is_err(),
        "session terminated"
    );
    assert!(!role_exists(&mut admin, &role).await);
    assert!(lease_roles(&mut admin, &schema).await.is_empty());
    let (status, ready) = readyz(&node).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["leases_overdue"], 0, "{ready}");
    let ends: Vec<Value> = node
        .at()
        .events("lease.end")
        .await
        .into_iter()
        .filter(|e| e["details"]["lease_id"] == id.as_str())
        .collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["details"]["sessions_terminated"], 1);
    assert_eq!(ends[0]["details"]["role_dropped"], true);
    assert!(ends[0]["details"]["attempts"].as_u64() >= Some(3));

    drop(node);
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn kill_9_while_creating_or_ending_a_role_leaves_no_orphan_on_sqlite() {
    kill_mid_work(None, "kill_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn kill_9_while_creating_or_ending_a_role_leaves_no_orphan_on_postgres() {
    kill_mid_work(Some(database_url().await), "kill_postgres").await;
}

/// Asks for a lease in the background; the answer is `None` when the request was cut off.
fn ask_in_background(node: &Node, planner: &Agent) -> tokio::task::JoinHandle<(u16, Value)> {
    let (http, url, planner) = (node.http.clone(), node.server.url.clone(), planner.clone());
    tokio::spawn(async move {
        let at = Replica {
            http: &http,
            url: &url,
        };
        let token = at.exchange_scope(&planner, "lease:warehouse/reader").await;
        at.lease(&planner, &token, &serde_json::from_str(ASK).unwrap())
            .await
    })
}

/// How many leases are pending (registered, never handed out).
async fn pending_leases(node: &Node) -> usize {
    let listed = node.get("/v1/leases").await;
    listed["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "pending")
        .count()
}

/// Waits up to ten seconds until the forwarder let a `COMMIT` through.
async fn until_committed(forwarder: &Forwarder) {
    let started = Instant::now();
    while forwarder.mode() != Mode::Hold {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no COMMIT went through"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the database finish the commit it received.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn kill_mid_work(store: Option<String>, tag: &str) {
    let mut admin = admin_connection().await;
    let schema = fresh_schema(&mut admin, tag).await;
    let forwarder = Forwarder::start(upstream());
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::first_start_on(dir.path().join("data"), &[], store.as_deref()).await;
    let planner = set_up(&node, &forwarder, &schema).await;

    // The control: a lease granted before every crash, with a session open on it.
    let (_, control) = granted_lease(node.at(), &planner).await;
    let control_id = control["lease_id"].as_str().unwrap().to_owned();
    let control_role = control["username"].as_str().unwrap().to_owned();
    let mut open = session(&direct(&control)).await;
    assert_eq!(amount(&mut open, &schema).await.unwrap(), 42);

    // A refusal changes nothing.
    let token = node
        .at()
        .exchange_scope(&planner, "lease:warehouse/reader")
        .await;
    let (status, refused) = node
        .at()
        .lease(
            &planner,
            &token,
            &json!({"engine": "warehouse", "role": "reader", "ttl_s": 100_000}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        node.get("/v1/leases").await["leases"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        lease_roles(&mut admin, &schema).await,
        std::slice::from_ref(&control_role)
    );

    // 1. Killed while connecting to the engine to create the role: the lease is registered
    //    (pending), the role never made.
    forwarder.set(Mode::Hold);
    let asked = ask_in_background(&node, &planner);
    let started = Instant::now();
    while pending_leases(&node).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no lease registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the request reach the engine, where it hangs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.kill_and_restart();
    forwarder.set(Mode::Pass);
    let answer = asked.await;
    assert!(
        !matches!(&answer, Ok((status, _)) if *status < 300),
        "a lease cut off before its role was made was handed out: {answer:?}"
    );
    assert_eq!(
        pending_leases(&node).await,
        1,
        "the cut-off lease is known after the restart, pending"
    );

    // 2. Killed after the role's CREATE was committed, before the answer: an orphan role
    //    unless the reaper finds it.
    forwarder.set(Mode::HoldAfterCommit);
    let asked = ask_in_background(&node, &planner);
    until_committed(&forwarder).await;
    assert_eq!(
        lease_roles(&mut admin, &schema).await.len(),
        2,
        "the role was committed"
    );
    node.kill_and_restart();
    forwarder.set(Mode::Pass);
    let answer = asked.await;
    assert!(
        !matches!(&answer, Ok((status, _)) if *status < 300),
        "a lease whose answer was cut off was handed out: {answer:?}"
    );

    // 3. Killed while ending a revoked lease, its engine hanging: nothing was done yet.
    let (token, revoked) = granted_lease(node.at(), &planner).await;
    let first_end = revoked["lease_id"].as_str().unwrap().to_owned();
    forwarder.set(Mode::Hold);
    assert_eq!(node.at().revoke_token(&jti(&token)).await, 2);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    node.kill_and_restart();
    forwarder.set(Mode::Pass);
    assert!(lease_of(&node, &first_end).await["revoked_at"].is_string());

    // 4. Killed after the role's DROP was committed, before the end was recorded.
    let (token, revoked) = granted_lease(node.at(), &planner).await;
    let second_end = revoked["lease_id"].as_str().unwrap().to_owned();
    forwarder.set(Mode::HoldAfterCommit);
    assert_eq!(node.at().revoke_token(&jti(&token)).await, 2);
    until_committed(&forwarder).await;
    node.kill_and_restart();
    forwarder.set(Mode::Pass);

    // Once the dead process's claims run out (a minute), the reaper ends every lease but
    // the control: the pending ones (dropping the orphan role) and the revoked ones.
    let started = Instant::now();
    loop {
        let listed = node.get("/v1/leases").await;
        let leases = listed["leases"].as_array().unwrap().clone();
        let open_ones: Vec<&Value> = leases
            .iter()
            .filter(|l| l["id"] != control_id.as_str() && l["state"] != "ended")
            .collect();
        if open_ones.is_empty() {
            assert_eq!(leases.len(), 5, "{listed}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(100),
            "not ended: {open_ones:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in [&first_end, &second_end] {
        assert!(lease_of(&node, id).await["revoked_at"].is_string());
    }
    let ends = node.at().events("lease.end").await;
    let never_granted = ends
        .iter()
        .filter(|e| e["details"]["why"] == "never granted")
        .count();
    assert_eq!(never_granted, 2, "{ends:?}");
    assert_eq!(
        ends.iter()
            .filter(
                |e| e["details"]["why"] == "never granted" && e["details"]["role_dropped"] == true
            )
            .count(),
        1,
        "the orphan role was dropped: {ends:?}"
    );

    // No role without a live lease survived; the control lease is live and usable.
    assert_eq!(
        lease_roles(&mut admin, &schema).await,
        std::slice::from_ref(&control_role)
    );
    assert_eq!(lease_of(&node, &control_id).await["state"], "active");
    assert_eq!(amount(&mut open, &schema).await.unwrap(), 42);
    let (status, ready) = readyz(&node).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["leases_overdue"], 0, "{ready}");

    drop(node);
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}
