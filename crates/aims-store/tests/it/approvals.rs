//! Approval requests: opened once per distinct call, answered once, a grant spent exactly as
//! many times as it allows under any concurrency, and revoked with the revocation closure.

use std::collections::BTreeMap;
use std::sync::Arc;

use aims_core::agent::LifecycleState;
use aims_core::approval::{
    ApprovalRequest, ApprovalState, ApprovalVerdict, AskedApproval, BoundCall,
    MAX_PENDING_PER_AGENT, arguments_digest,
};
use aims_core::audit::{AuditRecord, action};
use aims_core::id::{ApprovalId, Intent, Owner, TaskId, UserName};
use aims_core::task::{Task, TaskState};
use aims_store::{RevocationTarget, Store, StoreError};
use serde_json::{Map, json};

use crate::fixtures::{
    AuditCursor, agent, assert_chain_verifies, at, changed, event, join_token, name,
};
use crate::harness::Harness;

const OWNER: &str = "alice@acme.example";

/// Registers agent `ir` with task `t1`, open for an hour from `at(0)`.
async fn agent_with_task(store: &dyn Store) {
    store
        .create_agent(
            &agent("ir", OWNER, "prod"),
            &join_token("ir", "ir", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
    let task = Task {
        id: TaskId::new("t1").unwrap(),
        agent: name("ir"),
        intent: Intent::new("rotate the database password").unwrap(),
        subject: "user:bob".to_owned(),
        state: TaskState::Active,
        created_at: at(0),
        deadline: at(3600),
        ended_at: None,
    };
    store
        .create_task(&task, &event(action::TASK_CREATE))
        .await
        .unwrap();
}

fn call(resource: &str, password_length: u64) -> BoundCall {
    let mut arguments = Map::new();
    arguments.insert("length".to_owned(), json!(password_length));
    BoundCall {
        task_id: TaskId::new("t1").unwrap(),
        agent: name("ir"),
        action: "export_secret".to_owned(),
        resource: format!("Aims::Secret::{resource}"),
        arguments_digest: arguments_digest(&arguments),
    }
}

/// Opens (or joins) `request` with its decision and `approval.request` events.
async fn open(store: &dyn Store, request: &ApprovalRequest) -> Result<ApprovalRequest, StoreError> {
    store
        .open_approval(
            request,
            &event(action::DECISION),
            &event(action::APPROVAL_REQUEST),
        )
        .await
}

/// A request `id` for `call`, opened at `at(opened)` and waiting 15 minutes, whose grant
/// covers `uses` calls.
fn request(id: &str, call: BoundCall, opened: i64, uses: u32) -> ApprovalRequest {
    ApprovalRequest::open(
        ApprovalId::new(id).unwrap(),
        AskedApproval {
            call,
            spiffe_id: "spiffe://acme.example/agent/ir".to_owned(),
            owner: Owner::new(OWNER).unwrap(),
            intent: "rotate the database password".to_owned(),
            task_subject: "user:bob".to_owned(),
            delegation_chain: Vec::new(),
            credential_id: "tok-1".to_owned(),
            enforcement_point: None,
            resource_attributes: json!({"type": "Secret"}),
            arguments: None,
            policies: vec!["ir-export-secret-with-approval".to_owned()],
            policy_texts: BTreeMap::new(),
            policy_version: 3,
            approvers: None,
            four_eyes: true,
            uses,
            created_at: at(opened),
            expires_at: at(opened + 900),
        },
    )
}

fn verdict(approved: bool, when: i64) -> ApprovalVerdict {
    ApprovalVerdict {
        approved,
        by: UserName::new("carol").unwrap(),
        role: "approver".to_owned(),
        reason: "ticket INC-42".to_owned(),
        at: at(when),
    }
}

/// The actions and approval ids of the records appended after `cursor`'s position.
async fn appended(store: &dyn Store, after: u64) -> Vec<(String, Option<String>)> {
    let records: Vec<AuditRecord> = store.audit_records(after, 100).await.unwrap();
    records
        .iter()
        .map(|r| {
            let e = r.event().unwrap();
            (e.action, e.approval_id)
        })
        .collect()
}

pub async fn identical_calls_share_one_pending_request(h: &Harness) {
    let store = &*h.store;
    agent_with_task(store).await;
    let head = store.audit_head().await.unwrap().seq;

    let first = request("a1", call("db", 32), 10, 1);
    let opened = open(store, &first).await.unwrap();
    assert_eq!(opened, first);
    // The same call again joins it: only the decision is written, naming the shared request.
    let again = request("a2", call("db", 32), 20, 1);
    let joined = open(store, &again).await.unwrap();
    assert_eq!(joined.id.as_str(), "a1");
    // Other arguments, or another resource, are another call.
    for (id, other) in [("a3", call("db", 64)), ("a4", call("cache", 32))] {
        let opened = open(store, &request(id, other, 30, 1)).await.unwrap();
        assert_eq!(opened.id.as_str(), id);
    }
    let a1 = Some("a1".to_owned());
    assert_eq!(
        appended(store, head).await[..3],
        [
            (action::DECISION.to_owned(), a1.clone()),
            (action::APPROVAL_REQUEST.to_owned(), a1.clone()),
            (action::DECISION.to_owned(), a1),
        ]
    );
    assert_eq!(store.approval(&first.id).await.unwrap(), Some(first));
    let pending = store.list_approvals(Some(at(40)), 10).await.unwrap();
    assert_eq!(pending.len(), 3);
    // Past its expiry a request is not pending: the same call opens a new one.
    assert!(
        store
            .list_approvals(Some(at(2000)), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let late = open(store, &request("a5", call("db", 32), 1000, 1))
        .await
        .unwrap();
    assert_eq!(late.id.as_str(), "a5");
    assert_chain_verifies(store).await;
}

pub async fn an_agent_cannot_flood_the_queue(h: &Harness) {
    let store = &*h.store;
    agent_with_task(store).await;
    for n in 0..MAX_PENDING_PER_AGENT {
        open(
            store,
            &request(&format!("a{n}"), call("db", u64::from(n)), 10, 1),
        )
        .await
        .unwrap();
    }
    let audit = AuditCursor::new(store).await;
    let one_more = open(store, &request("over", call("db", 9999), 10, 1)).await;
    assert!(
        matches!(one_more, Err(StoreError::Conflict { .. })),
        "{one_more:?}"
    );
    audit.none(store).await;
    // An identical call still joins its pending request.
    let joined = open(store, &request("again", call("db", 0), 20, 1))
        .await
        .unwrap();
    assert_eq!(joined.id.as_str(), "a0");
    // Once they expire, the agent may ask again.
    open(store, &request("later", call("db", 9999), 2000, 1))
        .await
        .unwrap();
}

pub async fn a_request_is_answered_once(h: &Harness) {
    let store = &*h.store;
    agent_with_task(store).await;
    let opened = request("a1", call("db", 32), 10, 1);
    open(store, &opened).await.unwrap();
    let mut audit = AuditCursor::new(store).await;

    let decided = store
        .decide_approval(
            &opened.id,
            &verdict(true, 60),
            &event(action::APPROVAL_DECIDE),
        )
        .await
        .unwrap();
    audit.one(store, action::APPROVAL_DECIDE).await;
    assert_eq!(decided.state, ApprovalState::Approved);
    assert_eq!(decided.uses_left, 1);
    assert_eq!(decided.grant_expires_at(), Some(at(60 + 900)));
    assert_eq!(store.approval(&opened.id).await.unwrap(), Some(decided));

    // Twice, denied after approval, unknown, expired: refused, nothing written.
    for (id, answer) in [("a1", verdict(true, 70)), ("a1", verdict(false, 70))] {
        let refused = store
            .decide_approval(
                &ApprovalId::new(id).unwrap(),
                &answer,
                &event(action::APPROVAL_DECIDE),
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict { .. })),
            "{refused:?}"
        );
    }
    let unknown = store
        .decide_approval(
            &ApprovalId::new("nope").unwrap(),
            &verdict(true, 70),
            &event(action::APPROVAL_DECIDE),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );
    let stale = request("a2", call("db", 64), 10, 1);
    open(store, &stale).await.unwrap();
    let audit = AuditCursor::new(store).await;
    let expired = store
        .decide_approval(
            &stale.id,
            &verdict(true, 10 + 900),
            &event(action::APPROVAL_DECIDE),
        )
        .await;
    assert!(
        matches!(expired, Err(StoreError::Conflict { .. })),
        "{expired:?}"
    );
    audit.none(store).await;

    // A denial is final and grants nothing.
    let denied_request = request("a3", call("cache", 1), 10, 1);
    open(store, &denied_request).await.unwrap();
    let denied = store
        .decide_approval(
            &denied_request.id,
            &verdict(false, 20),
            &event(action::APPROVAL_DECIDE),
        )
        .await
        .unwrap();
    assert_eq!(denied.state, ApprovalState::Denied);
    assert_eq!(
        store.grant_for(&call("cache", 1), at(30)).await.unwrap(),
        None
    );
}

pub async fn a_grant_covers_its_call_and_uses_only(h: &Harness) {
    let store = &*h.store;
    agent_with_task(store).await;
    let opened = request("a1", call("db", 32), 10, 2);
    open(store, &opened).await.unwrap();
    assert_eq!(
        store.grant_for(&call("db", 32), at(20)).await.unwrap(),
        None
    );
    store
        .decide_approval(
            &opened.id,
            &verdict(true, 20),
            &event(action::APPROVAL_DECIDE),
        )
        .await
        .unwrap();
    // Another call is not covered.
    assert_eq!(
        store.grant_for(&call("db", 64), at(30)).await.unwrap(),
        None
    );
    assert_eq!(
        store.grant_for(&call("cache", 32), at(30)).await.unwrap(),
        None
    );
    let grant = store
        .grant_for(&call("db", 32), at(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant, opened.id);
    // Past its window the grant covers nothing.
    assert_eq!(
        store
            .grant_for(&call("db", 32), at(20 + 900))
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .use_grant(&grant, at(20 + 900), &event(action::DECISION))
            .await
            .unwrap()
    );

    let mut audit = AuditCursor::new(store).await;
    assert!(
        store
            .use_grant(&grant, at(30), &event(action::DECISION))
            .await
            .unwrap()
    );
    audit.one(store, action::DECISION).await;
    let records = store.audit_records(0, 1000).await.unwrap();
    let last = records.last().unwrap().event().unwrap();
    assert_eq!(last.approval_id.as_deref(), Some("a1"));
    assert!(
        store
            .use_grant(&grant, at(31), &event(action::DECISION))
            .await
            .unwrap()
    );
    audit.one(store, action::DECISION).await;
    assert!(
        !store
            .use_grant(&grant, at(32), &event(action::DECISION))
            .await
            .unwrap()
    );
    audit.none(store).await;
    let spent = store.approval(&grant).await.unwrap().unwrap();
    assert_eq!((spent.state, spent.uses_left), (ApprovalState::Used, 0));
    assert_eq!(
        store.grant_for(&call("db", 32), at(33)).await.unwrap(),
        None
    );
}

/// Spends a grant of `uses` from many tasks at once, half of them through a second store on
/// the same database where it may have writers of its own (two PostgreSQL replicas).
async fn spend_concurrently(h: &Harness, uses: u32) {
    let store = h.store.clone();
    agent_with_task(&*store).await;
    let opened = request("a1", call("db", 32), 10, uses);
    open(&*store, &opened).await.unwrap();
    store
        .decide_approval(
            &opened.id,
            &verdict(true, 20),
            &event(action::APPROVAL_DECIDE),
        )
        .await
        .unwrap();
    let other: Arc<dyn Store> = if h.shares_writers() {
        h.reopen().await
    } else {
        store.clone()
    };
    let callers: Vec<_> = (0..24)
        .map(|i| {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            let id = opened.id.clone();
            tokio::spawn(
                async move { store.use_grant(&id, at(30), &event(action::DECISION)).await },
            )
        })
        .collect();
    let mut spent = 0;
    for caller in callers {
        if caller.await.unwrap().unwrap() {
            spent += 1;
        }
    }
    assert_eq!(spent, uses);
    let records = assert_chain_verifies(&*store).await;
    let decisions = records
        .iter()
        .filter(|r| r.event().unwrap().action == action::DECISION)
        .count();
    // The decision that opened the request, and one per spent use.
    assert_eq!(decisions, 1 + uses as usize);
}

pub async fn a_single_use_grant_is_spent_once_under_concurrency(h: &Harness) {
    spend_concurrently(h, 1).await;
}

pub async fn a_grant_of_three_is_spent_three_times_under_concurrency(h: &Harness) {
    spend_concurrently(h, 3).await;
}

pub async fn revocation_revokes_requests_and_grants(h: &Harness) {
    let store = &*h.store;
    agent_with_task(store).await;
    let pending = request("a1", call("db", 1), 10, 1);
    let granted = request("a2", call("db", 2), 10, 1);
    for r in [&pending, &granted] {
        open(store, r).await.unwrap();
    }
    store
        .decide_approval(
            &granted.id,
            &verdict(true, 20),
            &event(action::APPROVAL_DECIDE),
        )
        .await
        .unwrap();
    let version = store.approvals_version().await.unwrap();
    store
        .end_task("t1", at(30), &event(action::TASK_END))
        .await
        .unwrap();
    assert!(store.approvals_version().await.unwrap() > version);
    for id in [&pending.id, &granted.id] {
        let revoked = store.approval(id).await.unwrap().unwrap();
        assert_eq!(revoked.state, ApprovalState::Revoked, "{id}");
    }
    assert_eq!(store.grant_for(&call("db", 2), at(40)).await.unwrap(), None);
    assert!(
        !store
            .use_grant(&granted.id, at(40), &event(action::DECISION))
            .await
            .unwrap()
    );
    // A closed task opens no request and takes no answer.
    let refused = open(store, &request("a3", call("db", 3), 40, 1)).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
}

pub async fn quarantine_revokes_the_agents_requests(h: &Harness) {
    let store = &*h.store;
    agent_with_task(store).await;
    let pending = request("a1", call("db", 1), 10, 1);
    open(store, &pending).await.unwrap();
    let registered = store.agent(&name("ir")).await.unwrap().unwrap();
    store
        .update_agent(
            &changed(&registered, LifecycleState::Quarantined),
            registered.revision,
            &event(action::AGENT_LIFECYCLE),
        )
        .await
        .unwrap();
    let revoked = store.approval(&pending.id).await.unwrap().unwrap();
    assert_eq!(revoked.state, ApprovalState::Revoked);
    let refused = store
        .decide_approval(
            &pending.id,
            &verdict(true, 20),
            &event(action::APPROVAL_DECIDE),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    // Revoking by owner reaches requests too (here: none left pending, nothing fails).
    store
        .revoke(
            &RevocationTarget::Owner(Owner::new(OWNER).unwrap()),
            "owner left",
            at(30),
            &event(action::REVOKE),
        )
        .await
        .unwrap();
}
