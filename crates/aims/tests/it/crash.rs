//! Crash safety under `kill -9`. Revocation: the server process is killed with SIGKILL right
//! after a cascading revocation was acknowledged, and while one is in flight, then restarted on
//! the same SQLite store. An acknowledged revocation is never lost — the store (introspection) and the
//! enforcement point (decisions, from the revocation set rebuilt at startup) both refuse the
//! whole subtree, and the revocation is in the audit log, whose chain still verifies. A
//! revocation cut off in flight (in its first transaction or between the steps of its cascade)
//! is all or nothing once the server has restarted — the restart finishes a cascade left
//! incomplete before it serves — and retrying it completes it. A token that
//! was never revoked keeps working across every restart, so the refusals are the revocation's
//! doing, not the restart's. After every kill the audit log still verifies as a Merkle tree
//! against every checkpoint signed before it (the server's own check at start, and
//! `aims audit verify`). Issuance: an exchange cut off by SIGKILL, before or after its
//! commit, locks nothing out — the agent exchanges again after the restart — and every task the
//! store holds was audited as issued.

use std::time::Duration;

use serde_json::{Value, json};

use crate::node::{CHILDREN, Node};
use crate::process::ADMIN_TOKEN;
use crate::replica_kit::{Replica, jti};

fn revocation(root: &str) -> Value {
    json!({"target": "token", "id": jti(root), "reason": "crash test"})
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_survive_kill_9_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::first_start(dir.path().join("data")).await;
    let planner = node.at().planner().await;
    let executor = node.at().agent("executor", "executor").await;

    // The control: a task token and a delegated one that are never revoked.
    let control_root = node.at().exchange(&planner).await;
    let control = node.at().delegate(&control_root, &planner, &executor).await;

    // 1. Acknowledged, then SIGKILL at once: nothing of it is lost.
    let subtree = node.subtree(&planner, &executor).await;
    assert_eq!(node.at().decide(&executor, &subtree[1]).await, 200);
    assert_eq!(
        node.at().revoke_token(&jti(&subtree[0])).await,
        1 + CHILDREN as u64
    );
    node.kill_and_restart();
    node.still_works(&executor, &control).await;
    assert_eq!(node.count_active(&subtree).await, 0);
    for child in subtree.iter().skip(1).step_by(10) {
        assert_eq!(node.at().decide(&executor, child).await, 401);
    }
    assert_eq!(node.revoke_events(&jti(&subtree[0])).await, 1);

    // 2. SIGKILL while a revocation is in flight, at several points: after restart the subtree
    //    is revoked whole or not at all (whole if it was acknowledged), and a retry completes it.
    for delay_ms in [0u64, 2, 5, 15, 40] {
        let subtree = node.subtree(&planner, &executor).await;
        let request = node
            .http
            .post(format!("{}/v1/revocations", node.server.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&revocation(&subtree[0]))
            .send();
        let in_flight = tokio::spawn(request);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        node.kill_and_restart();
        let acknowledged = matches!(in_flight.await.unwrap(), Ok(r) if r.status() == 200);
        node.verified_audit_tree().await;

        node.still_works(&executor, &control).await;
        let active = node.count_active(&subtree).await;
        println!("killed after {delay_ms} ms: acknowledged {acknowledged}, {active} active");
        assert!(
            active == 0 || (active == subtree.len() && !acknowledged),
            "killed after {delay_ms} ms: {active} of {} active, acknowledged: {acknowledged}",
            subtree.len()
        );
        let events = node.revoke_events(&jti(&subtree[0])).await;
        assert_eq!(events, usize::from(active == 0), "audited iff it happened");

        node.at().revoke_token(&jti(&subtree[0])).await;
        assert_eq!(node.count_active(&subtree).await, 0);
        assert_eq!(node.at().decide(&executor, &subtree[CHILDREN]).await, 401);
    }
    node.verified_audit_head().await;
    node.still_works(&executor, &control).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exchange_cut_off_by_kill_9_locks_nothing_and_is_audited_if_issued() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::first_start(dir.path().join("data")).await;
    let planner = node.at().planner().await;
    for delay_ms in [0u64, 1, 2, 4, 8] {
        let (http, url, holder) = (node.http.clone(), node.server.url.clone(), planner.clone());
        // A cut-off request panics inside the task: that is "not acknowledged".
        let in_flight = tokio::spawn(async move {
            Replica {
                http: &http,
                url: &url,
            }
            .exchange(&holder)
            .await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        node.kill_and_restart();
        let acknowledged = in_flight.await;
        node.verified_audit_tree().await;
        println!(
            "exchange killed after {delay_ms} ms: acknowledged {}",
            acknowledged.is_ok()
        );
        if let Ok(token) = acknowledged {
            assert!(node.active(&token).await, "an acknowledged token was lost");
        }
        // No lockout: the same identity exchanges again, and the token works.
        let retried = node.at().exchange(&planner).await;
        assert_eq!(node.at().decide(&planner, &retried).await, 200);
    }
    // Each exchange here starts a task: every task the store holds was audited as issued.
    let tasks = node.get("/v1/tasks?agent=planner&limit=1000").await;
    let tasks = tasks["tasks"].as_array().unwrap().len();
    let issued = node
        .count_events(|e| e["action"] == "token.exchange" && e["outcome"] == "success")
        .await;
    println!("{tasks} tasks, {issued} audited exchanges");
    assert!(tasks >= 5, "{tasks}");
    assert_eq!(tasks, issued);
}
