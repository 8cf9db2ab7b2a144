//! Several `aims server` processes sharing one PostgreSQL database behave as one deployment:
//! a task token issued by one replica works at another, and a revocation made on one is
//! refused by the other within a second, with what was delegated from it (each replica follows
//! the store's revocation log, and its `/metrics` shows how far); an agent changed on one is
//! decided on as changed by the other within a second (each follows the registry change log).
//!
//! Needs PostgreSQL: `AIMS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test`, run
//! with `--include-ignored`. The benchmark `revocation_propagation` measures the same path,
//! `revocation_fanout` a root with many delegated descendants.

use std::time::{Duration, Instant};

use crate::replica_kit::{Deployment, database_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn a_token_revoked_on_one_replica_is_refused_by_the_other() {
    let deployment = Deployment::start(&database_url().await).await;
    let planner = deployment.at(0).planner().await;
    let executor = deployment.at(0).agent("executor", "executor").await;
    let token = deployment.at(0).exchange(&planner).await;

    // Issued by the first replica, accepted by the second; delegated on the second, accepted
    // by the first.
    assert_eq!(deployment.at(1).decide(&planner, &token).await, 200);
    let child = deployment.at(1).delegate(&token, &planner, &executor).await;
    assert_eq!(deployment.at(0).decide(&executor, &child).await, 200);

    let jti = crate::replica_kit::jti(&token);
    let revoked_at = Instant::now();
    assert_eq!(
        deployment.at(0).revoke_token(&jti).await,
        2,
        "the token and its child"
    );
    // The replica that revoked refuses at once.
    assert_eq!(deployment.at(0).decide(&planner, &token).await, 401);
    // The other within a second.
    let delay = loop {
        let status = deployment.at(1).decide(&planner, &token).await;
        if status == 401 {
            break revoked_at.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the second replica still accepts the revoked token after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!("revocation reached the second replica after {delay:?}");
    // The revocation was acknowledged complete, so replica 0's log holds the child's entry
    // too; the token's own entry commits in the revocation's first step and the child's may
    // commit in a later one, so replica 1 may have read only the first. Once it has read as far
    // as replica 0's position (within the same second), it refuses the child as well.
    let position = deployment.at(0).log_position().await;
    assert!(position >= 2, "two log entries");
    while deployment.at(1).log_position().await != position {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the second replica has not read the whole revocation after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (status, refusal) = deployment.at(1).decision(&executor, &child).await;
    assert_eq!(status, 401, "{refusal}");
    assert!(
        refusal["message"].as_str().unwrap().contains("revoked"),
        "{refusal}"
    );

    // Ending a task on the second replica refuses its tokens on the first.
    let other = deployment.at(1).exchange(&planner).await;
    assert_eq!(deployment.at(0).decide(&planner, &other).await, 200);
    deployment
        .at(1)
        .end_task(&crate::replica_kit::task_id(&other))
        .await;
    let ended = Instant::now();
    while deployment.at(0).decide(&planner, &other).await != 401 {
        assert!(
            ended.elapsed() < Duration::from_secs(1),
            "task end not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// RFC 9449 server nonces bind a DPoP proof to the replica that handed out its nonce: each
/// replica's replay cache sees every use of the proofs it accepts, so a captured proof can be
/// replayed at no replica (without nonces it could be used once at each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn a_dpop_proof_is_good_once_at_one_replica_only() {
    let deployment = Deployment::start(&database_url().await).await;
    let (a, b) = (deployment.at(0), deployment.at(1));
    let planner = a.planner().await;
    let token = a.exchange(&planner).await;
    // Each replica hands out its nonce with its answers.
    assert_eq!(a.decide(&planner, &token).await, 200);
    assert_eq!(b.decide(&planner, &token).await, 200);
    assert_ne!(a.nonce(), b.nonce());

    let proof = a.decision_proof(&planner, &token, a.nonce().as_deref());
    let (status, body) = a
        .send_decision(a.decision_request_with(&token, &proof))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .send_decision(a.decision_request_with(&token, &proof))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_dpop_proof"))
    );
    let (status, body) = b
        .send_decision(b.decision_request_with(&token, &proof))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("use_dpop_nonce")),
        "replayed at the other replica: {body}"
    );
}

/// Each replica decides from its in-memory view of the registry: a change made on one replica
/// is seen by that replica's next request, and by the other within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn an_agent_changed_on_one_replica_is_decided_as_changed_by_the_other() {
    let deployment = Deployment::start(&database_url().await).await;
    let (a, b) = (deployment.at(0), deployment.at(1));
    // Registered on the first replica, decided on by the second at once.
    let planner = a.planner().await;
    let token = a.exchange(&planner).await;
    let decision = |body: &serde_json::Value| body["decision"].as_str().unwrap_or("").to_owned();
    let (status, body) = b.decision(&planner, &token).await;
    assert_eq!(
        (status, decision(&body)),
        (200, "deny".to_owned()),
        "{body}"
    );

    // Joining the coding team lets it read repositories (`coding-read-repository`).
    let (status, body) = a
        .admin_with(
            reqwest::Method::PATCH,
            "/v1/agents/planner",
            serde_json::json!({"labels": {"role": "planner", "team": "coding-agents"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed = Instant::now();
    let (status, body) = a.decision(&planner, &token).await;
    assert_eq!(
        (status, decision(&body)),
        (200, "allow".to_owned()),
        "the replica that made the change decides on it at once: {body}"
    );
    let delay = loop {
        let (status, body) = b.decision(&planner, &token).await;
        assert_eq!(status, 200, "{body}");
        if decision(&body) == "allow" {
            break changed.elapsed();
        }
        assert_eq!(decision(&body), "deny", "{body}");
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the second replica still decides on the old record after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!("the registry change reached the second replica after {delay:?}");
}

/// The planner may obtain lease scopes and lease any database role (added to the starter
/// policies for the lease tests).
pub const LEASE_POLICY: &str = r#"
@id("replica-test-planner-obtains-leases")
permit (principal, action == Aims::Action::"obtain", resource is Aims::Scope)
when { principal.name == "planner" && resource.kind == "lease" };

@id("replica-test-planner-leases")
permit (principal, action == Aims::Action::"lease", resource is Aims::Resource)
when { principal.name == "planner" && resource.kind == "database_role" };
"#;

/// Whether `role` exists on the engine.
pub async fn role_exists(engine: &mut sqlx::PgConnection, role: &str) -> bool {
    sqlx::query_scalar::<_, String>("SELECT rolname::text FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(engine)
        .await
        .unwrap()
        .is_some()
}

/// A session logged in with a lease's parameters.
pub async fn session(granted: &serde_json::Value) -> sqlx::PgConnection {
    use sqlx::ConnectOptions as _;
    sqlx::postgres::PgConnectOptions::new()
        .host(granted["host"].as_str().unwrap())
        .port(u16::try_from(granted["port"].as_u64().unwrap()).unwrap())
        .database(granted["database"].as_str().unwrap())
        .username(granted["username"].as_str().unwrap())
        .password(granted["password"].as_str().unwrap())
        .connect()
        .await
        .unwrap()
}

/// Waits (up to ten seconds) until `replica` reports lease `id` ended.
async fn until_ended(replica: crate::replica_kit::Replica<'_>, id: &str) {
    let started = Instant::now();
    while replica.get(&format!("/v1/leases/{id}")).await["state"] != "ended" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "lease {id} not ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas on one store, both running the lease reaper: a lease issued by one and
/// revoked on the other is ended (its session terminated, its role dropped) exactly once.
/// Then every replica is killed with SIGKILL while a lease is live; the restarted replica
/// ends it when its task token is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn two_replicas_end_a_lease_once_and_a_restart_after_kill_9_still_ends_them() {
    use serde_json::json;
    use sqlx::ConnectOptions as _;

    let engine_url = std::env::var("AIMS_TEST_DATABASE_URL").unwrap();
    let mut engine = engine_url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut deployment = Deployment::start(&database_url().await).await;
    let mut files = crate::replica_kit::starter_policies();
    files.insert("leases.cedar".to_owned(), LEASE_POLICY.to_owned());
    let (status, body) = deployment
        .at(0)
        .admin("/v1/policies", json!({ "files": files }))
        .await;
    assert_eq!(status, 201, "{body}");
    for replica in 0..2 {
        let started = Instant::now();
        while deployment.at(replica).get("/v1/policies/active").await["version"] != 2 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "policy not loaded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, body) = deployment
        .at(0)
        .admin(
            "/v1/engines",
            json!({"name": "warehouse", "connection_url": engine_url}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = deployment
        .at(1)
        .admin(
            "/v1/engines/warehouse/roles",
            json!({"name": "reader", "grants": "GRANT USAGE ON SCHEMA public", "max_ttl_s": 600}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let planner = deployment.at(0).planner().await;
    let token = deployment
        .at(0)
        .exchange_scope(&planner, "lease:warehouse/reader")
        .await;
    let ask = json!({"engine": "warehouse", "role": "reader"});
    let (status, granted) = deployment.at(1).lease(&planner, &token, &ask).await;
    assert_eq!(status, 201, "{granted}");
    let id = granted["lease_id"].as_str().unwrap().to_owned();
    let role = granted["username"].as_str().unwrap().to_owned();
    let mut open = session(&granted).await;
    sqlx::query("SELECT 1").execute(&mut open).await.unwrap();

    assert_eq!(
        deployment
            .at(0)
            .revoke_token(&crate::replica_kit::jti(&token))
            .await,
        2
    );
    until_ended(deployment.at(1), &id).await;
    until_ended(deployment.at(0), &id).await;
    assert!(!role_exists(&mut engine, &role).await);
    assert!(sqlx::query("SELECT 1").execute(&mut open).await.is_err());
    // Both reapers saw it due; one ended it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ends: Vec<_> = deployment
        .at(0)
        .events("lease.end")
        .await
        .into_iter()
        .filter(|e| e["details"]["lease_id"] == id.as_str())
        .collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["details"]["sessions_terminated"], 1);

    // SIGKILL with a live lease and its open session; the restarted replica ends it.
    let token = deployment
        .at(0)
        .exchange_scope(&planner, "lease:warehouse/reader")
        .await;
    let (status, granted) = deployment.at(0).lease(&planner, &token, &ask).await;
    assert_eq!(status, 201, "{granted}");
    let id = granted["lease_id"].as_str().unwrap().to_owned();
    let role = granted["username"].as_str().unwrap().to_owned();
    let mut open = session(&granted).await;
    deployment.kill_all_and_restart_one();
    assert!(
        role_exists(&mut engine, &role).await,
        "a crash drops nothing"
    );
    sqlx::query("SELECT 1").execute(&mut open).await.unwrap();
    assert_eq!(
        deployment.at(0).get(&format!("/v1/leases/{id}")).await["state"],
        "active"
    );
    assert_eq!(
        deployment
            .at(0)
            .revoke_token(&crate::replica_kit::jti(&token))
            .await,
        2
    );
    until_ended(deployment.at(0), &id).await;
    assert!(!role_exists(&mut engine, &role).await);
    assert!(sqlx::query("SELECT 1").execute(&mut open).await.is_err());
}

/// One replica of a deployment holds the audit sequencer's lease (`aims_audit_sequencer` is 1
/// on exactly one, never on both); when it is killed with SIGKILL the other takes the lease
/// over once it runs out, and moves what it queues into the log without any reader asking: an
/// exchange (queued on PostgreSQL, no head lock) reaches the survivor's audit tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn one_replica_sequences_the_audit_log_and_another_takes_over_when_it_dies() {
    let mut deployment = Deployment::start(&database_url().await).await;
    let started = Instant::now();
    let holder = loop {
        let held = sequencers(&deployment).await;
        assert!(held.iter().sum::<u64>() <= 1, "two sequencers: {held:?}");
        if let Some(holder) = held.iter().position(|h| *h == 1) {
            break holder;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no replica holds the sequencer's lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for _ in 0..20 {
        let held = sequencers(&deployment).await;
        assert_eq!(held.iter().sum::<u64>(), 1, "{held:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let survivor = 1 - holder;
    let planner = deployment.at(survivor).planner().await;
    deployment.replicas[holder].child.kill().unwrap();
    deployment.replicas[holder].child.wait().unwrap();
    let killed = Instant::now();
    while deployment.at(survivor).gauge("aims_audit_sequencer").await != 1 {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the survivor did not take the sequencer's lease over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the survivor took the lease over after {:?}",
        killed.elapsed()
    );
    // Settled: what the survivor had queued and sequenced is in its tree.
    let mut before = deployment.at(survivor).gauge("aims_audit_tree_size").await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = deployment.at(survivor).gauge("aims_audit_tree_size").await;
        if now == before {
            break;
        }
        before = now;
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the tree never settled"
        );
    }
    deployment.at(survivor).exchange(&planner).await;
    let exchanged = Instant::now();
    while deployment.at(survivor).gauge("aims_audit_tree_size").await <= before {
        assert!(
            exchanged.elapsed() < Duration::from_secs(10),
            "the exchange's event did not reach the log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each replica's `aims_audit_sequencer` gauge.
async fn sequencers(deployment: &Deployment) -> Vec<u64> {
    let mut held = Vec::new();
    for i in 0..deployment.replicas.len() {
        held.push(deployment.at(i).gauge("aims_audit_sequencer").await);
    }
    held
}
