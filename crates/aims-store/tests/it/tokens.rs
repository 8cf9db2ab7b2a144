//! Task tokens: access-token issuance with its task and DPoP proof, tasks, the revocation log
//! and its cascading targets, and registered resource servers.

use std::collections::BTreeSet;
use std::sync::Arc;

use aims_core::agent::LifecycleState;
use aims_core::audit::action;
use aims_core::credential::CredentialHash;
use aims_core::id::ResourceServerName;
use aims_core::posture::Evidence;
use aims_core::task::{Task, TaskState};
use aims_store::{
    AccessTokenIssue, AttestationRecord, EPOCH_LIFETIME, IssuedCredential, IssuedKind,
    PostureSnapshot, ResourceServer, Revocation, RevocationTarget, Revoked, Store, StoreError,
    TaskFilter,
};

use crate::fixtures::{
    AuditCursor, agent, assert_chain_verifies, at, changed, event, join_token, name, sequenced_head,
};
use crate::harness::Harness;

/// The audience task tokens are issued for here.
const TOOLS: &str = "https://tools.acme.example/repo";

const ALICE: &str = "alice@acme.example";
const BOB: &str = "bob@acme.example";

pub async fn register(store: &dyn Store, agent_name: &str, owner: &str) {
    store
        .create_agent(
            &agent(agent_name, owner, "prod"),
            &join_token(agent_name, agent_name, at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
}

/// Issues the identity `jti` to `agent_name` at `when`, valid for an hour.
pub async fn svid(store: &dyn Store, agent_name: &str, jti: &str, when: i64) -> IssuedCredential {
    let evidence = Evidence::default();
    let record = AttestationRecord {
        snapshot: PostureSnapshot {
            agent: name(agent_name),
            digest: evidence.digest(),
            evidence,
            key_thumbprint: format!("jkt-{agent_name}"),
            accepted_at: at(when),
        },
        credential: IssuedCredential {
            id: jti.to_owned(),
            kind: IssuedKind::Svid,
            agent: name(agent_name),
            parent: None,
            key_thumbprint: Some(format!("jkt-{agent_name}")),
            issued_at: at(when),
            expires_at: at(when + 3600),
            revoked_at: None,
            task_id: None,
            audience: None,
        },
    };
    store
        .record_attestation(&record, &event(action::IDENTITY_ISSUE))
        .await
        .unwrap();
    record.credential
}

/// An active task of `agent_name` created at `created`, open for an hour.
pub fn task(id: &str, agent_name: &str, created: i64) -> Task {
    Task {
        id: aims_core::id::TaskId::new(id).unwrap(),
        agent: name(agent_name),
        intent: aims_core::id::Intent::new(format!("work on {id}")).unwrap(),
        subject: "user:alice".to_owned(),
        state: TaskState::Active,
        created_at: at(created),
        deadline: at(created + 3600),
        ended_at: None,
    }
}

/// An access token `jti` of `agent_name` for `task_id`, derived from `parent`, issued at
/// `when` and valid for five minutes.
pub fn token(
    jti: &str,
    agent_name: &str,
    parent: Option<&str>,
    task_id: &str,
    when: i64,
) -> IssuedCredential {
    IssuedCredential {
        id: jti.to_owned(),
        kind: IssuedKind::AccessToken,
        agent: name(agent_name),
        parent: parent.map(str::to_owned),
        key_thumbprint: Some(format!("jkt-{agent_name}")),
        issued_at: at(when),
        expires_at: at(when + 300),
        revoked_at: None,
        task_id: Some(task_id.to_owned()),
        audience: Some(TOOLS.to_owned()),
    }
}

/// The issuance of `credential`, creating `new_task`, with DPoP proof `proof` (remembered
/// for a minute after issuance).
pub fn issuance(
    credential: IssuedCredential,
    new_task: Option<Task>,
    proof: Option<&str>,
) -> AccessTokenIssue {
    let forget_at = credential.issued_at + time::Duration::seconds(60);
    AccessTokenIssue {
        credential,
        agent_revision: 1,
        new_task,
        dpop_proof: proof.map(|p| (p.to_owned(), forget_at)),
    }
}

/// Issues `issue` as a token exchange and asserts it appended exactly one record.
pub async fn exchange(store: &dyn Store, audit: &mut AuditCursor, issue: &AccessTokenIssue) {
    store
        .issue_access_token(issue, &event(action::TOKEN_EXCHANGE))
        .await
        .unwrap();
    audit.one(store, action::TOKEN_EXCHANGE).await;
}

/// Issues `issue` as a delegation and asserts it appended exactly one record.
async fn delegate(store: &dyn Store, audit: &mut AuditCursor, issue: &AccessTokenIssue) {
    store
        .issue_access_token(issue, &event(action::TOKEN_DELEGATE))
        .await
        .unwrap();
    audit.one(store, action::TOKEN_DELEGATE).await;
}

/// Revokes `target` and asserts it appended exactly one record; returns the count.
async fn revoke(
    store: &dyn Store,
    audit: &mut AuditCursor,
    target: RevocationTarget,
    reason: &str,
    when: i64,
) -> u64 {
    let count = store
        .revoke(&target, reason, at(when), &event(action::REVOKE))
        .await
        .unwrap();
    audit.one(store, action::REVOKE).await;
    count
}

/// Asserts `issue` is refused as a conflict and leaves no trace: no credential, no new task,
/// no audit record, the same audit head.
async fn assert_refused(
    store: &dyn Store,
    audit: &AuditCursor,
    issue: &AccessTokenIssue,
    why: &str,
) {
    let head = store.audit_head().await.unwrap();
    let result = store
        .issue_access_token(issue, &event(action::TOKEN_EXCHANGE))
        .await;
    assert!(
        matches!(result, Err(StoreError::Conflict { .. })),
        "{why}: {result:?}"
    );
    assert_eq!(
        store.issued_credential(&issue.credential.id).await.unwrap(),
        None,
        "{why}: credential registered"
    );
    if let Some(new_task) = &issue.new_task {
        assert_eq!(
            store.task(new_task.id.as_str()).await.unwrap(),
            None,
            "{why}: task created"
        );
    }
    assert_eq!(store.audit_head().await.unwrap(), head, "{why}");
    audit.none(store).await;
}

/// Whether the credential `jti` is revoked, and when.
async fn revoked_at(store: &dyn Store, jti: &str) -> Option<time::OffsetDateTime> {
    store
        .issued_credential(jti)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{jti} is not registered"))
        .revoked_at
}

async fn task_state(store: &dyn Store, id: &str) -> TaskState {
    store.task(id).await.unwrap().unwrap().state
}

/// The ids in the revocation log after `after`, in log order.
async fn logged(store: &dyn Store, after: u64) -> Vec<String> {
    credential_entries(store, after)
        .await
        .iter()
        .filter_map(|r| r.credential().map(str::to_owned))
        .collect()
}

/// The credential entries of the revocation log after `after` (epochs left out).
async fn credential_entries(store: &dyn Store, after: u64) -> Vec<Revocation> {
    store
        .revocations_since(after, 0, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.credential().is_some())
        .collect()
}

/// A delegation chain across three agents and two owners, all for task `t1`:
/// `svid-a` (a) → `tok-a` (a) → `tok-b` (b) → `tok-c` (c). Bystanders: `svid-b`, `svid-c`.
async fn chain(store: &dyn Store, audit: &mut AuditCursor) {
    register(store, "a", ALICE).await;
    register(store, "b", ALICE).await;
    register(store, "c", BOB).await;
    svid(store, "a", "svid-a", 10).await;
    svid(store, "b", "svid-b", 10).await;
    svid(store, "c", "svid-c", 10).await;
    *audit = AuditCursor::new(store).await;
    let tok_a = token("tok-a", "a", Some("svid-a"), "t1", 20);
    exchange(
        store,
        audit,
        &issuance(tok_a, Some(task("t1", "a", 20)), Some("p1")),
    )
    .await;
    let tok_b = token("tok-b", "b", Some("tok-a"), "t1", 30);
    delegate(store, audit, &issuance(tok_b, None, Some("p2"))).await;
    let tok_c = token("tok-c", "c", Some("tok-b"), "t1", 40);
    delegate(store, audit, &issuance(tok_c, None, Some("p3"))).await;
}

pub async fn access_tokens_register_with_their_task(h: &Harness) {
    let store = &*h.store;
    register(store, "a", ALICE).await;
    register(store, "b", BOB).await;
    svid(store, "a", "svid-a", 10).await;
    let mut audit = AuditCursor::new(store).await;

    // The first exchange creates the task in the same transaction.
    let t1 = task("t1", "a", 20);
    let first = token("tok-1", "a", Some("svid-a"), "t1", 20);
    exchange(
        store,
        &mut audit,
        &issuance(first.clone(), Some(t1.clone()), Some("p1")),
    )
    .await;
    let stored = store.issued_credential("tok-1").await.unwrap().unwrap();
    assert_eq!(stored, first);
    assert_eq!(stored.kind, IssuedKind::AccessToken);
    assert_eq!(stored.task_id.as_deref(), Some("t1"));
    assert_eq!(stored.parent.as_deref(), Some("svid-a"));
    assert_eq!(store.task("t1").await.unwrap(), Some(t1.clone()));

    // A second token for the open task does not create it again.
    let second = token("tok-2", "a", Some("svid-a"), "t1", 30);
    exchange(
        store,
        &mut audit,
        &issuance(second.clone(), None, Some("p2")),
    )
    .await;
    assert_eq!(
        store.issued_credential("tok-2").await.unwrap(),
        Some(second)
    );

    // Delegation to another agent, derived from a token; no DPoP proof needed by the store.
    let delegated = token("tok-b", "b", Some("tok-1"), "t1", 40);
    delegate(store, &mut audit, &issuance(delegated.clone(), None, None)).await;
    assert_eq!(
        store.issued_credential("tok-b").await.unwrap(),
        Some(delegated)
    );

    // A token may be derived from its parent until the parent's last instant.
    let late = token("tok-late", "a", Some("tok-1"), "t1", 20 + 299);
    exchange(store, &mut audit, &issuance(late, None, None)).await;

    assert_eq!(store.task("t1").await.unwrap(), Some(t1));
    assert_eq!(store.task("nope").await.unwrap(), None);
    assert_eq!(logged(store, 0).await, Vec::<String>::new());
    assert_chain_verifies(store).await;
}

pub async fn refused_issuance_writes_nothing(h: &Harness) {
    let store = &*h.store;
    register(store, "a", ALICE).await;
    register(store, "s", ALICE).await;
    svid(store, "a", "svid-a", 10).await;
    svid(store, "a", "svid-r", 10).await;
    let mut audit = AuditCursor::new(store).await;
    revoke(
        store,
        &mut audit,
        RevocationTarget::Credential("svid-r".to_owned()),
        "test",
        15,
    )
    .await;
    for (id, created) in [("t-open", 20), ("t-ended", 20), ("t-revoked", 20)] {
        store
            .create_task(&task(id, "a", created), &event(action::TASK_CREATE))
            .await
            .unwrap();
        audit.one(store, action::TASK_CREATE).await;
    }
    let late = Task {
        deadline: at(50),
        ..task("t-late", "a", 20)
    };
    store
        .create_task(&late, &event(action::TASK_CREATE))
        .await
        .unwrap();
    audit.one(store, action::TASK_CREATE).await;
    store
        .end_task("t-ended", at(30), &event(action::TASK_END))
        .await
        .unwrap();
    audit.one(store, action::TASK_END).await;
    revoke(
        store,
        &mut audit,
        RevocationTarget::Task("t-revoked".to_owned()),
        "test",
        30,
    )
    .await;
    let s = store.agent(&name("s")).await.unwrap().unwrap();
    store
        .update_agent(
            &changed(&s, LifecycleState::Suspended),
            s.revision,
            &event(action::AGENT_LIFECYCLE),
        )
        .await
        .unwrap();
    audit.one(store, action::AGENT_LIFECYCLE).await;

    let fresh = |jti: &str, parent: Option<&str>, when: i64| {
        issuance(
            token(jti, "a", parent, &format!("new-{jti}"), when),
            Some(task(&format!("new-{jti}"), "a", when)),
            Some(jti),
        )
    };
    let existing = |jti: &str, task_id: &str| {
        issuance(
            token(jti, "a", Some("svid-a"), task_id, 100),
            None,
            Some(jti),
        )
    };
    let cases = [
        ("parent revoked", fresh("x1", Some("svid-r"), 100)),
        // svid-a expires at 3610.
        ("parent expired", fresh("x2", Some("svid-a"), 3610)),
        ("parent long expired", fresh("x3", Some("svid-a"), 9000)),
        ("parent unknown", fresh("x4", Some("nope"), 100)),
        ("no parent", fresh("x5", None, 100)),
        ("task ended", existing("x6", "t-ended")),
        ("task revoked", existing("x7", "t-revoked")),
        ("task past its deadline", existing("x8", "t-late")),
        ("task unknown", existing("x9", "t-unknown")),
        (
            "agent suspended",
            issuance(
                token("x10", "s", Some("svid-a"), "new-x10", 100),
                Some(task("new-x10", "s", 100)),
                Some("x10"),
            ),
        ),
        (
            "decided on another revision of the agent's record",
            AccessTokenIssue {
                agent_revision: 2,
                ..fresh("x13", Some("svid-a"), 100)
            },
        ),
    ];
    for (why, issue) in &cases {
        assert_refused(store, &audit, issue, why).await;
    }
    assert_eq!(store.task("t-unknown").await.unwrap(), None);
    let at_deadline = Task {
        deadline: at(100),
        ..task("t-edge", "a", 20)
    };
    store
        .create_task(&at_deadline, &event(action::TASK_CREATE))
        .await
        .unwrap();
    audit.one(store, action::TASK_CREATE).await;
    assert_refused(
        store,
        &audit,
        &existing("x11", "t-edge"),
        "deadline reached",
    )
    .await;

    // A new task whose id is taken: refused, and the existing task is untouched.
    let taken = issuance(
        token("x12", "a", Some("svid-a"), "t-open", 100),
        Some(task("t-open", "a", 90)),
        Some("x12"),
    );
    let err = store
        .issue_access_token(&taken, &event(action::TOKEN_EXCHANGE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(store.issued_credential("x12").await.unwrap(), None);
    audit.none(store).await;
    assert_eq!(
        store.task("t-open").await.unwrap(),
        Some(task("t-open", "a", 20))
    );

    // An unknown holder is not found; nothing is written either.
    let stranger = issuance(
        token("x13", "ghost", Some("svid-a"), "t-open", 100),
        None,
        Some("x13"),
    );
    let err = store
        .issue_access_token(&stranger, &event(action::TOKEN_EXCHANGE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(store.issued_credential("x13").await.unwrap(), None);
    audit.none(store).await;

    // A DPoP proof is used once, whatever the token and task.
    exchange(store, &mut audit, &existing("ok-1", "t-open")).await;
    let replay = issuance(
        token("ok-2", "a", Some("svid-a"), "new-ok-2", 110),
        Some(task("new-ok-2", "a", 110)),
        Some("ok-1"),
    );
    assert_refused(store, &audit, &replay, "DPoP proof replayed").await;
    // The refused attempts burned none of their proofs.
    exchange(store, &mut audit, &existing("x4", "t-open")).await;
    let reused_id = issuance(
        token("ok-1", "a", Some("svid-a"), "t-open", 120),
        None,
        Some("fresh"),
    );
    let err = store
        .issue_access_token(&reused_id, &event(action::TOKEN_EXCHANGE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    audit.none(store).await;
    assert_chain_verifies(store).await;
}

pub async fn expired_dpop_proofs_are_forgotten(h: &Harness) {
    let store = &*h.store;
    register(store, "a", ALICE).await;
    svid(store, "a", "svid-a", 10).await;
    store
        .create_task(&task("t1", "a", 20), &event(action::TASK_CREATE))
        .await
        .unwrap();
    let mut audit = AuditCursor::new(store).await;
    let with_proof = |jti: &str, when: i64| {
        issuance(
            token(jti, "a", Some("svid-a"), "t1", when),
            None,
            Some("proof"),
        )
    };
    // Issued at 100: the proof is remembered until 160.
    exchange(store, &mut audit, &with_proof("tok-1", 100)).await;
    assert_refused(
        store,
        &audit,
        &with_proof("tok-2", 130),
        "proof still remembered",
    )
    .await;
    // After its expiry the row is purged and the same proof hash is accepted again.
    exchange(store, &mut audit, &with_proof("tok-3", 161)).await;
    assert_refused(
        store,
        &audit,
        &with_proof("tok-4", 170),
        "proof remembered again",
    )
    .await;
    exchange(store, &mut audit, &with_proof("tok-5", 500)).await;
}

pub async fn one_dpop_proof_under_concurrency(h: &Harness) {
    register(&*h.store, "a", ALICE).await;
    svid(&*h.store, "a", "svid-a", 10).await;
    let head = h.store.audit_head().await.unwrap();
    // On PostgreSQL the racers also come from a second server on the same database.
    let other = if h.shares_writers() {
        h.reopen().await
    } else {
        Arc::clone(&h.store)
    };
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 {
                Arc::clone(&h.store)
            } else {
                Arc::clone(&other)
            };
            tokio::spawn(async move {
                let issue = issuance(
                    token(
                        &format!("tok-{i}"),
                        "a",
                        Some("svid-a"),
                        &format!("t{i}"),
                        100,
                    ),
                    Some(task(&format!("t{i}"), "a", 100)),
                    Some("the-proof"),
                );
                store
                    .issue_access_token(&issue, &event(action::TOKEN_EXCHANGE))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(wins, 1);
    let store = &*h.store;
    assert_eq!(sequenced_head(store).await.seq, head.seq + 1);
    let tasks = store.list_tasks(&TaskFilter::default()).await.unwrap();
    assert_eq!(tasks.len(), 1, "only the winner's task exists");
    let winner = tasks[0].id.as_str();
    for i in 0..8 {
        let issued = store.issued_credential(&format!("tok-{i}")).await.unwrap();
        assert_eq!(issued.is_some(), format!("t{i}") == winner, "tok-{i}");
    }

    // Two at once with tokio::join!, from the same store, for an existing task.
    let a = issuance(
        token("j-1", "a", Some("svid-a"), winner, 110),
        None,
        Some("joined"),
    );
    let b = issuance(
        token("j-2", "a", Some("svid-a"), winner, 110),
        None,
        Some("joined"),
    );
    let ev = event(action::TOKEN_EXCHANGE);
    let (ra, rb) = tokio::join!(
        store.issue_access_token(&a, &ev),
        other.issue_access_token(&b, &ev)
    );
    assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
    for r in [ra, rb] {
        assert!(
            matches!(r, Ok(()) | Err(StoreError::Conflict { .. })),
            "{r:?}"
        );
    }
    assert_eq!(sequenced_head(store).await.seq, head.seq + 2);
    assert_chain_verifies(store).await;
}

pub async fn revoking_a_credential_cascades(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    chain(store, &mut audit).await;
    // A second chain of b's own that must stay live.
    let own = token("tok-b2", "b", Some("svid-b"), "t2", 50);
    exchange(
        store,
        &mut audit,
        &issuance(own, Some(task("t2", "b", 50)), None),
    )
    .await;

    let count = revoke(
        store,
        &mut audit,
        RevocationTarget::Credential("svid-a".to_owned()),
        "key compromised",
        100,
    )
    .await;
    assert_eq!(count, 4);
    for jti in ["svid-a", "tok-a", "tok-b", "tok-c"] {
        assert_eq!(revoked_at(store, jti).await, Some(at(100)), "{jti}");
    }
    for jti in ["svid-b", "svid-c", "tok-b2"] {
        assert_eq!(revoked_at(store, jti).await, None, "{jti}");
    }
    // Revoking a credential does not close its task.
    assert_eq!(task_state(store, "t1").await, TaskState::Active);

    // Again, or anything inside the revoked closure, or nothing known: nothing new.
    for target in ["svid-a", "tok-b", "nope"] {
        let again = revoke(
            store,
            &mut audit,
            RevocationTarget::Credential(target.to_owned()),
            "again",
            200,
        )
        .await;
        assert_eq!(again, 0, "{target}");
    }
    assert_eq!(revoked_at(store, "tok-c").await, Some(at(100)));

    let log = store.revocations_since(0, 0, None).await.unwrap();
    let ids: Vec<&str> = log.iter().filter_map(Revocation::credential).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!(
        unique,
        BTreeSet::from(["svid-a", "tok-a", "tok-b", "tok-c"])
    );
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq), "{log:?}");
    for entry in &log {
        let credential = store
            .issued_credential(entry.credential().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.agent, credential.agent, "{entry:?}");
        assert_eq!(entry.task_id, credential.task_id, "{entry:?}");
        assert_eq!(entry.expires_at, credential.expires_at, "{entry:?}");
        assert_eq!(entry.revoked_at, at(100));
        assert_eq!(entry.reason, "key compromised");
    }
    let by_id = |id: &str| {
        log.iter()
            .find(|r| r.credential() == Some(id))
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("tok-c").agent, name("c"));
    assert_eq!(by_id("tok-c").task_id.as_deref(), Some("t1"));
    assert_eq!(by_id("svid-a").task_id, None);

    // Following the log: after the first entry, the other three; pages respect the limit.
    let rest = store.revocations_since(log[0].seq, 0, None).await.unwrap();
    assert_eq!(rest, log[1..]);
    assert_eq!(store.revocations_since(0, 2, None).await.unwrap(), log[..2]);
    assert!(
        store
            .revocations_since(log[3].seq, 10, None)
            .await
            .unwrap()
            .is_empty()
    );

    // The revoked chain can no longer be extended.
    let extend = issuance(token("tok-d", "c", Some("tok-c"), "t1", 110), None, None);
    assert_refused(store, &audit, &extend, "revoked parent").await;
    assert_chain_verifies(store).await;
}

pub async fn revoking_a_subtree_keeps_its_root(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    chain(store, &mut audit).await;
    let count = revoke(
        store,
        &mut audit,
        RevocationTarget::Subtree("tok-a".to_owned()),
        "delegation withdrawn",
        100,
    )
    .await;
    assert_eq!(count, 2);
    for jti in ["svid-a", "tok-a"] {
        assert_eq!(revoked_at(store, jti).await, None, "{jti}");
    }
    for jti in ["tok-b", "tok-c"] {
        assert_eq!(revoked_at(store, jti).await, Some(at(100)), "{jti}");
    }
    assert_eq!(logged(store, 0).await, ["tok-b", "tok-c"]);
    let again = RevocationTarget::Subtree("tok-a".to_owned());
    assert_eq!(revoke(store, &mut audit, again, "again", 110).await, 0);
    // The root still works: it may be delegated again.
    let redelegated = token("tok-b-2", "b", Some("tok-a"), "t1", 120);
    delegate(store, &mut audit, &issuance(redelegated, None, None)).await;
    // A leaf's subtree is empty.
    let leaf = RevocationTarget::Subtree("tok-b-2".to_owned());
    assert_eq!(revoke(store, &mut audit, leaf, "leaf", 130).await, 0);
    assert_eq!(revoked_at(store, "tok-b-2").await, None);

    // Revoking the root now counts only what was still live, and logs nothing twice.
    let root = RevocationTarget::Credential("svid-a".to_owned());
    assert_eq!(revoke(store, &mut audit, root, "root", 140).await, 3);
    assert_eq!(
        revoked_at(store, "tok-b").await,
        Some(at(100)),
        "first revocation kept"
    );
    assert_eq!(
        logged(store, 0).await,
        ["tok-b", "tok-c", "svid-a", "tok-a", "tok-b-2"]
    );
}

/// A revocation that was interrupted before it committed (a cancelled request, a lost
/// connection) leaves nothing behind but, on PostgreSQL, a gap in the log's sequence: sequence
/// values are not transactional. Later revocations must still count what they revoked.
pub async fn revocation_counts_survive_sequence_gaps(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    chain(store, &mut audit).await;
    h.execute_raw(
        "BEGIN; \
         INSERT INTO revocations (kind, credential, agent, task_id, revoked_at_ms, \
         expires_at_ms, reason) VALUES ('credential', 'svid-b', 'b', NULL, 0, 0, 'interrupted'), \
         ('credential', 'svid-c', 'c', NULL, 0, 0, 'interrupted'); \
         ROLLBACK;",
    )
    .await;
    assert_eq!(logged(store, 0).await, Vec::<String>::new());
    let subtree = RevocationTarget::Subtree("tok-a".to_owned());
    assert_eq!(revoke(store, &mut audit, subtree, "gap", 100).await, 2);
    h.execute_raw(
        "BEGIN; \
         INSERT INTO revocations (kind, credential, agent, task_id, revoked_at_ms, \
         expires_at_ms, reason) VALUES ('credential', 'svid-b', 'b', NULL, 0, 0, 'interrupted'); \
         ROLLBACK;",
    )
    .await;
    let root = RevocationTarget::Credential("svid-a".to_owned());
    assert_eq!(revoke(store, &mut audit, root, "gap", 110).await, 2);
    assert_eq!(revoked_at(store, "svid-a").await, Some(at(110)));
    assert_eq!(revoked_at(store, "svid-b").await, None);
    assert_eq!(
        logged(store, 0).await,
        ["tok-b", "tok-c", "svid-a", "tok-a"]
    );
}

pub async fn revoking_a_task_closes_it(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    chain(store, &mut audit).await;
    // A second token for t1, and a token of b's own task t-b derived from t1's tok-b.
    let second = token("tok-a2", "a", Some("svid-a"), "t1", 50);
    exchange(store, &mut audit, &issuance(second, None, None)).await;
    let sub = token("tok-sub", "b", Some("tok-b"), "t-b", 50);
    delegate(
        store,
        &mut audit,
        &issuance(sub, Some(task("t-b", "b", 50)), None),
    )
    .await;
    // An unrelated task t2 of a.
    let other = token("tok-t2", "a", Some("svid-a"), "t2", 60);
    exchange(
        store,
        &mut audit,
        &issuance(other, Some(task("t2", "a", 60)), None),
    )
    .await;

    let count = revoke(
        store,
        &mut audit,
        RevocationTarget::Task("t1".to_owned()),
        "task revoked",
        100,
    )
    .await;
    assert_eq!(
        count, 5,
        "tok-a, tok-a2, tok-b, tok-c and the derived tok-sub"
    );
    for jti in ["tok-a", "tok-a2", "tok-b", "tok-c", "tok-sub"] {
        assert_eq!(revoked_at(store, jti).await, Some(at(100)), "{jti}");
    }
    for jti in ["svid-a", "svid-b", "tok-t2"] {
        assert_eq!(revoked_at(store, jti).await, None, "{jti}");
    }
    let t1 = store.task("t1").await.unwrap().unwrap();
    assert_eq!(t1.state, TaskState::Revoked);
    assert_eq!(t1.ended_at, Some(at(100)));
    assert_eq!(task_state(store, "t2").await, TaskState::Active);
    assert_eq!(
        task_state(store, "t-b").await,
        TaskState::Active,
        "only the revoked task is closed"
    );
    let again = RevocationTarget::Task("t1".to_owned());
    assert_eq!(revoke(store, &mut audit, again, "again", 110).await, 0);
    let unknown = RevocationTarget::Task("nope".to_owned());
    assert_eq!(revoke(store, &mut audit, unknown, "none", 110).await, 0);
    assert_eq!(store.task("nope").await.unwrap(), None);

    // Ending t2: its one token is revoked with the reason "task ended".
    let ended = store
        .end_task("t2", at(200), &event(action::TASK_END))
        .await
        .unwrap();
    audit.one(store, action::TASK_END).await;
    assert_eq!(ended, 1);
    let t2 = store.task("t2").await.unwrap().unwrap();
    assert_eq!((t2.state, t2.ended_at), (TaskState::Ended, Some(at(200))));
    assert_eq!(revoked_at(store, "tok-t2").await, Some(at(200)));
    let log = store.revocations_since(0, 0, None).await.unwrap();
    let last = credential_entries(store, 0).await;
    let last = last.last().unwrap();
    assert_eq!(
        (last.credential(), last.reason.as_str()),
        (Some("tok-t2"), "task ended")
    );
    // And an epoch for the task: its credentials issued until now, registered or not.
    let epoch = log.last().unwrap();
    assert_eq!(
        (&epoch.revoked, epoch.task_id.as_deref(), epoch.revoked_at),
        (&Revoked::Task, Some("t2"), at(200))
    );
    assert_eq!(epoch.expires_at, at(200) + EPOCH_LIFETIME);

    // Ending a task that is not active is a conflict; an unknown one is not found.
    for id in ["t2", "t1"] {
        let err = store
            .end_task(id, at(300), &event(action::TASK_END))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{id}: {err}");
    }
    let err = store
        .end_task("nope", at(300), &event(action::TASK_END))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    audit.none(store).await;
    let t2_after = store.task("t2").await.unwrap().unwrap();
    assert_eq!(t2_after, t2, "a refused end changes nothing");

    // Ending a task without tokens revokes nothing.
    store
        .create_task(&task("t3", "a", 300), &event(action::TASK_CREATE))
        .await
        .unwrap();
    audit.one(store, action::TASK_CREATE).await;
    let none = store
        .end_task("t3", at(310), &event(action::TASK_END))
        .await
        .unwrap();
    audit.one(store, action::TASK_END).await;
    assert_eq!(none, 0);
    assert_chain_verifies(store).await;
}

/// Agents `a1`, `a2` of alice and `b1` of bob, each with an identity and a task token;
/// `a1`'s token is delegated to `b1`. `a1` also has a task that already ended.
async fn two_owners(store: &dyn Store, audit: &mut AuditCursor) {
    for (agent_name, owner) in [("a1", ALICE), ("a2", ALICE), ("b1", BOB)] {
        register(store, agent_name, owner).await;
        svid(store, agent_name, &format!("svid-{agent_name}"), 10).await;
    }
    *audit = AuditCursor::new(store).await;
    for agent_name in ["a1", "a2", "b1"] {
        let tok = token(
            &format!("tok-{agent_name}"),
            agent_name,
            Some(&format!("svid-{agent_name}")),
            &format!("t-{agent_name}"),
            20,
        );
        let new_task = task(&format!("t-{agent_name}"), agent_name, 20);
        exchange(store, audit, &issuance(tok, Some(new_task), None)).await;
    }
    let delegated = token("del-b1", "b1", Some("tok-a1"), "t-a1", 30);
    delegate(store, audit, &issuance(delegated, None, None)).await;
    store
        .create_task(&task("t-a1-old", "a1", 5), &event(action::TASK_CREATE))
        .await
        .unwrap();
    audit.one(store, action::TASK_CREATE).await;
    store
        .end_task("t-a1-old", at(6), &event(action::TASK_END))
        .await
        .unwrap();
    audit.one(store, action::TASK_END).await;
}

pub async fn revoking_an_agent_closes_its_tasks(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    two_owners(store, &mut audit).await;
    let count = revoke(
        store,
        &mut audit,
        RevocationTarget::Agent(name("a1")),
        "agent revoked",
        100,
    )
    .await;
    assert_eq!(count, 3, "svid-a1, tok-a1 and the delegated del-b1");
    for jti in ["svid-a1", "tok-a1", "del-b1"] {
        assert_eq!(revoked_at(store, jti).await, Some(at(100)), "{jti}");
    }
    for jti in ["svid-a2", "tok-a2", "svid-b1", "tok-b1"] {
        assert_eq!(revoked_at(store, jti).await, None, "{jti}");
    }
    let t = store.task("t-a1").await.unwrap().unwrap();
    assert_eq!((t.state, t.ended_at), (TaskState::Revoked, Some(at(100))));
    assert_eq!(task_state(store, "t-a1-old").await, TaskState::Ended);
    assert_eq!(task_state(store, "t-a2").await, TaskState::Active);
    assert_eq!(task_state(store, "t-b1").await, TaskState::Active);
    let log = store.revocations_since(0, 0, None).await.unwrap();
    let del = log
        .iter()
        .find(|r| r.credential() == Some("del-b1"))
        .unwrap();
    assert_eq!(del.agent, name("b1"));
    assert_eq!(del.reason, "agent revoked");
    let epochs: Vec<_> = log.iter().filter(|r| r.revoked == Revoked::Agent).collect();
    assert!(!epochs.is_empty());
    assert!(
        epochs
            .iter()
            .all(|e| e.agent == name("a1") && e.revoked_at == at(100))
    );
    let again = RevocationTarget::Agent(name("a1"));
    assert_eq!(revoke(store, &mut audit, again, "again", 110).await, 0);
    // The agent is still active (revoking is not suspending): it may get a new identity,
    // but not a token for its revoked task.
    svid(store, "a1", "svid-a1-new", 120).await;
    audit = AuditCursor::new(store).await;
    let for_revoked = token("tok-a1-new", "a1", Some("svid-a1-new"), "t-a1", 130);
    assert_refused(
        store,
        &audit,
        &issuance(for_revoked, None, None),
        "task revoked",
    )
    .await;
}

pub async fn revoking_an_owner_spares_other_owners(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    two_owners(store, &mut audit).await;
    let count = revoke(
        store,
        &mut audit,
        RevocationTarget::Owner(ALICE.parse().unwrap()),
        "owner left",
        100,
    )
    .await;
    assert_eq!(count, 5, "a1's and a2's identities and tokens, and del-b1");
    for jti in ["svid-a1", "tok-a1", "del-b1", "svid-a2", "tok-a2"] {
        assert_eq!(revoked_at(store, jti).await, Some(at(100)), "{jti}");
    }
    for jti in ["svid-b1", "tok-b1"] {
        assert_eq!(revoked_at(store, jti).await, None, "{jti}");
    }
    for id in ["t-a1", "t-a2"] {
        assert_eq!(task_state(store, id).await, TaskState::Revoked, "{id}");
    }
    assert_eq!(task_state(store, "t-a1-old").await, TaskState::Ended);
    assert_eq!(task_state(store, "t-b1").await, TaskState::Active);
    let mut ids = logged(store, 0).await;
    ids.sort();
    assert_eq!(ids, ["del-b1", "svid-a1", "svid-a2", "tok-a1", "tok-a2"]);
    // An epoch for each of the owner's agents, none for the other owner's: for the replicas
    // (no audience) and for the audience the agents' tokens were issued for.
    let log = store.revocations_since(0, 0, None).await.unwrap();
    let epochs: BTreeSet<(String, Option<String>)> = log
        .iter()
        .filter(|r| r.revoked == Revoked::Agent)
        .map(|r| (r.agent.to_string(), r.audience.clone()))
        .collect();
    assert_eq!(
        epochs,
        BTreeSet::from([
            ("a1".to_owned(), None),
            ("a1".to_owned(), Some(TOOLS.to_owned())),
            ("a2".to_owned(), None),
            ("a2".to_owned(), Some(TOOLS.to_owned())),
        ])
    );
    let again = RevocationTarget::Owner(ALICE.parse().unwrap());
    assert_eq!(revoke(store, &mut audit, again, "again", 110).await, 0);
    let nobody = RevocationTarget::Owner("nobody@acme.example".parse().unwrap());
    assert_eq!(revoke(store, &mut audit, nobody, "none", 110).await, 0);
    assert_chain_verifies(store).await;
}

pub async fn suspension_revokes_into_the_log(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    two_owners(store, &mut audit).await;
    let a1 = store.agent(&name("a1")).await.unwrap().unwrap();
    let suspended = aims_core::agent::Agent {
        updated_at: at(100),
        ..changed(&a1, LifecycleState::Suspended)
    };
    store
        .update_agent(&suspended, a1.revision, &event(action::AGENT_LIFECYCLE))
        .await
        .unwrap();
    audit.one(store, action::AGENT_LIFECYCLE).await;
    for jti in ["svid-a1", "tok-a1", "del-b1"] {
        assert_eq!(revoked_at(store, jti).await, Some(at(100)), "{jti}");
    }
    for jti in ["svid-a2", "tok-a2", "svid-b1", "tok-b1"] {
        assert_eq!(revoked_at(store, jti).await, None, "{jti}");
    }
    let log = store.revocations_since(0, 0, None).await.unwrap();
    let mut ids: Vec<&str> = log.iter().filter_map(Revocation::credential).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["del-b1", "svid-a1", "tok-a1"]);
    assert!(
        log.iter()
            .any(|r| r.revoked == Revoked::Agent && r.agent == name("a1")),
        "suspension is an epoch for the agent"
    );
    // Everything but the epoch of the task ended while setting up is the suspension's.
    for entry in log.iter().filter(|r| r.revoked != Revoked::Task) {
        assert_eq!(entry.reason, "agent suspended", "{entry:?}");
        assert_eq!(entry.revoked_at, at(100));
    }
    let del = log
        .iter()
        .find(|r| r.credential() == Some("del-b1"))
        .unwrap();
    assert_eq!(
        (del.agent.clone(), del.task_id.as_deref()),
        (name("b1"), Some("t-a1"))
    );
    // Its open tasks are closed with it; other agents' tasks are untouched.
    assert_eq!(task_state(store, "t-a1").await, TaskState::Revoked);
    assert_eq!(task_state(store, "t-b1").await, TaskState::Active);

    // A suspended agent gets no token, even from a live credential of another agent.
    let to_suspended = token("tok-x", "a1", Some("svid-a2"), "t-a2", 110);
    assert_refused(
        store,
        &audit,
        &issuance(to_suspended, None, None),
        "suspended",
    )
    .await;

    // Resuming does not bring anything back, nor add to the log.
    let resumed = aims_core::agent::Agent {
        updated_at: at(200),
        ..changed(&suspended, LifecycleState::Active)
    };
    store
        .update_agent(
            &resumed,
            suspended.revision,
            &event(action::AGENT_LIFECYCLE),
        )
        .await
        .unwrap();
    audit.one(store, action::AGENT_LIFECYCLE).await;
    assert_eq!(revoked_at(store, "tok-a1").await, Some(at(100)));
    assert_eq!(store.revocations_since(0, 0, None).await.unwrap(), log);
    assert_chain_verifies(store).await;
}

pub async fn task_listing_filters_and_orders(h: &Harness) {
    let store = &*h.store;
    register(store, "a", ALICE).await;
    register(store, "b", ALICE).await;
    let mut audit = AuditCursor::new(store).await;
    for (id, agent_name, created) in [
        ("a1", "a", 10),
        ("a2", "a", 20),
        ("b1", "b", 30),
        ("a3", "a", 40),
    ] {
        store
            .create_task(&task(id, agent_name, created), &event(action::TASK_CREATE))
            .await
            .unwrap();
        audit.one(store, action::TASK_CREATE).await;
    }
    store
        .end_task("a2", at(50), &event(action::TASK_END))
        .await
        .unwrap();
    audit.one(store, action::TASK_END).await;

    let list = |agent_name: Option<&str>, state: Option<TaskState>, limit: u32| {
        let filter = TaskFilter {
            agent: agent_name.map(name),
            state,
            limit,
        };
        async move {
            store
                .list_tasks(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(None, None, 0).await, ["a3", "b1", "a2", "a1"]);
    assert_eq!(list(Some("a"), None, 0).await, ["a3", "a2", "a1"]);
    assert_eq!(list(None, Some(TaskState::Ended), 0).await, ["a2"]);
    assert_eq!(
        list(Some("a"), Some(TaskState::Active), 0).await,
        ["a3", "a1"]
    );
    assert_eq!(
        list(Some("b"), Some(TaskState::Ended), 0).await,
        Vec::<String>::new()
    );
    assert_eq!(list(None, None, 2).await, ["a3", "b1"]);
    assert_eq!(list(Some("a"), None, 1).await, ["a3"]);
    assert_eq!(
        list(None, Some(TaskState::Revoked), 0).await,
        Vec::<String>::new()
    );
    let full = store
        .list_tasks(&TaskFilter {
            agent: Some(name("a")),
            state: Some(TaskState::Ended),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        full,
        [Task {
            state: TaskState::Ended,
            ended_at: Some(at(50)),
            ..task("a2", "a", 20)
        }]
    );

    // Creating a task: the id is unique, the agent must exist and be active.
    let err = store
        .create_task(&task("a1", "b", 60), &event(action::TASK_CREATE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .create_task(&task("g1", "ghost", 60), &event(action::TASK_CREATE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let b = store.agent(&name("b")).await.unwrap().unwrap();
    store
        .update_agent(
            &changed(&b, LifecycleState::Suspended),
            b.revision,
            &event(action::AGENT_LIFECYCLE),
        )
        .await
        .unwrap();
    audit.one(store, action::AGENT_LIFECYCLE).await;
    let err = store
        .create_task(&task("b2", "b", 60), &event(action::TASK_CREATE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    audit.none(store).await;
    assert_eq!(store.task("b2").await.unwrap(), None);
    assert_eq!(list(None, None, 0).await.len(), 4);
}

fn server(rs_name: &str, audience: &str, created: i64) -> ResourceServer {
    ResourceServer {
        name: ResourceServerName::new(rs_name).unwrap(),
        audience: audience.to_owned(),
        system: "github".to_owned(),
        environment: "prod".parse().unwrap(),
        sensitivity: "internal".to_owned(),
        created_by: "root".to_owned(),
        created_at: at(created),
    }
}

pub async fn resource_servers_round_trip(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    let github = server("github-mcp", "https://github-mcp.acme.example", 10);
    let jira = server("jira", "https://jira.acme.example", 20);
    for (rs, secret) in [(&jira, "s-jira"), (&github, "s-github")] {
        store
            .create_resource_server(
                rs,
                &CredentialHash::of(secret),
                &event(action::RESOURCE_SERVER_ADD),
            )
            .await
            .unwrap();
        audit.one(store, action::RESOURCE_SERVER_ADD).await;
    }
    assert_eq!(
        store.resource_server(&github.name).await.unwrap(),
        Some(github.clone())
    );
    assert_eq!(
        store
            .resource_server_by_audience("https://jira.acme.example")
            .await
            .unwrap(),
        Some(jira.clone())
    );
    assert_eq!(
        store
            .resource_server_by_credential(&CredentialHash::of("s-github"))
            .await
            .unwrap(),
        Some(github.clone())
    );
    let unknown = ResourceServerName::new("nope").unwrap();
    assert_eq!(store.resource_server(&unknown).await.unwrap(), None);
    assert_eq!(
        store
            .resource_server_by_audience("https://nope")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .resource_server_by_credential(&CredentialHash::of("s-nope"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.list_resource_servers().await.unwrap(),
        [github.clone(), jira.clone()],
        "by name"
    );

    // A taken name, audience or secret is a conflict and writes nothing.
    let duplicates = [
        (
            server("github-mcp", "https://other.acme.example", 30),
            "s-other",
        ),
        (server("other", "https://jira.acme.example", 30), "s-other"),
        (server("other", "https://other.acme.example", 30), "s-jira"),
    ];
    for (rs, secret) in &duplicates {
        let err = store
            .create_resource_server(
                rs,
                &CredentialHash::of(secret),
                &event(action::RESOURCE_SERVER_ADD),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{rs:?}: {err}");
    }
    audit.none(store).await;
    assert_eq!(
        store.resource_server(&github.name).await.unwrap(),
        Some(github.clone())
    );
    assert_eq!(store.list_resource_servers().await.unwrap().len(), 2);

    store
        .remove_resource_server(&github.name, &event(action::RESOURCE_SERVER_REMOVE))
        .await
        .unwrap();
    audit.one(store, action::RESOURCE_SERVER_REMOVE).await;
    assert_eq!(store.resource_server(&github.name).await.unwrap(), None);
    assert_eq!(
        store
            .resource_server_by_audience(&github.audience)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .resource_server_by_credential(&CredentialHash::of("s-github"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.list_resource_servers().await.unwrap(), [jira]);
    let err = store
        .remove_resource_server(&github.name, &event(action::RESOURCE_SERVER_REMOVE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    audit.none(store).await;

    // The name and audience are free again.
    store
        .create_resource_server(
            &github,
            &CredentialHash::of("s-github-2"),
            &event(action::RESOURCE_SERVER_ADD),
        )
        .await
        .unwrap();
    audit.one(store, action::RESOURCE_SERVER_ADD).await;
    assert_eq!(
        store
            .resource_server_by_credential(&CredentialHash::of("s-github-2"))
            .await
            .unwrap(),
        Some(github)
    );
    assert_chain_verifies(store).await;
}

/// Delegates under `parent` a chain of up to `depth` tokens of task `task_id`, each under the
/// one before and named after it with `tag` and its step, until one is refused as a conflict
/// (an ancestor revoked meanwhile); counts each success in `issued` and returns every id tried.
async fn extend_chain(
    store: Arc<dyn Store>,
    mut parent: String,
    tag: String,
    task_id: String,
    depth: usize,
    issued: Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<String> {
    let mut attempted = Vec::new();
    for step in 0..depth {
        let id = format!("{parent}-{tag}{step}");
        attempted.push(id.clone());
        let child = token(&id, "a", Some(&parent), &task_id, 21);
        match store
            .issue_access_token(&issuance(child, None, None), &event(action::TOKEN_DELEGATE))
            .await
        {
            Ok(()) => {
                issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                parent = id;
            }
            Err(StoreError::Conflict { .. }) => break,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    attempted
}

/// Issuance racing a revocation of its ancestor never leaves a live descendant: writers extend
/// chains of delegations under one root while the root (and so its closure) is revoked after a varying
/// number of them succeeded. Afterwards every credential registered under the root is
/// revoked, and every refused issuance registered nothing — whatever order the group commits
/// put them in.
pub async fn issuance_racing_revocation_leaves_no_live_descendant(h: &Harness) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const WRITERS: usize = 8;
    const DEPTH: usize = 5;
    let store = &*h.store;
    register(store, "a", ALICE).await;
    svid(store, "a", "svid-a", 10).await;
    for (round, revoke_after) in [0, 3, 9, 17, 26, 35].into_iter().enumerate() {
        let task_id = format!("t{round}");
        let root = format!("r{round}-root");
        task_root(store, &root, &task_id).await;
        let issued = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                tokio::spawn(extend_chain(
                    Arc::clone(&h.store),
                    root.clone(),
                    format!("w{writer}s"),
                    task_id.clone(),
                    DEPTH,
                    Arc::clone(&issued),
                ))
            })
            .collect();
        let revoker = {
            let store = Arc::clone(&h.store);
            let (root, issued) = (root.clone(), Arc::clone(&issued));
            tokio::spawn(async move {
                while issued.load(Ordering::SeqCst) < revoke_after {
                    tokio::task::yield_now().await;
                }
                store
                    .revoke(
                        &RevocationTarget::Credential(root),
                        "race",
                        at(30),
                        &event(action::REVOKE),
                    )
                    .await
                    .unwrap()
            })
        };
        let mut attempted = Vec::new();
        for writer in writers {
            attempted.extend(writer.await.unwrap());
        }
        revoker.await.unwrap();
        let mut registered = 0;
        for id in std::iter::once(&root).chain(&attempted) {
            if let Some(credential) = store.issued_credential(id).await.unwrap() {
                registered += 1;
                assert!(
                    credential.revoked_at.is_some(),
                    "round {round}: {id} hangs live on a revoked root"
                );
            }
        }
        assert_eq!(
            registered,
            1 + issued.load(Ordering::SeqCst),
            "round {round}: only successful issuances are registered"
        );
    }
    assert_chain_verifies(store).await;
}

/// Registers under `parent` (of agent `a`, task `task_id`) the children `{prefix}{i}` for
/// `i` in `range`, sixteen issuances at a time.
async fn children(
    store: &Arc<dyn Store>,
    parent: &str,
    prefix: &str,
    task_id: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let ids: Vec<String> = range.map(|i| format!("{prefix}{i}")).collect();
    for batch in ids.chunks(16) {
        let writes: Vec<_> = batch
            .iter()
            .map(|id| {
                let store = Arc::clone(store);
                let child = token(id, "a", Some(parent), task_id, 21);
                tokio::spawn(async move {
                    store
                        .issue_access_token(
                            &issuance(child, None, None),
                            &event(action::TOKEN_DELEGATE),
                        )
                        .await
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
    }
    ids
}

/// Registers agent `a`, its identity, the task token `root` of a new task `task_id`, and
/// `kids` tokens delegated from it (`kid-0` …), whose ids it returns.
async fn wide_root(store: &Arc<dyn Store>, task_id: &str, kids: usize) -> Vec<String> {
    register(&**store, "a", ALICE).await;
    svid(&**store, "a", "svid-a", 10).await;
    task_root(&**store, "root", task_id).await;
    children(store, "root", "kid-", task_id, 0..kids).await
}

/// Issues agent `a` (identity `svid-a`) the task token `root` of a new task `task_id`.
async fn task_root(store: &dyn Store, root: &str, task_id: &str) {
    store
        .issue_access_token(
            &issuance(
                token(root, "a", Some("svid-a"), task_id, 20),
                Some(task(task_id, "a", 20)),
                None,
            ),
            &event(action::TOKEN_EXCHANGE),
        )
        .await
        .unwrap();
}

/// The credentials the revocation log names, each once (asserting none is named twice), all
/// with one `txn`: the revocation's, also its audit record's.
async fn logged_once(store: &dyn Store) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut txns = BTreeSet::new();
    for (id, txn) in credential_log(store).await {
        assert!(seen.insert(id.clone()), "{id} is in the log twice");
        txns.insert(txn);
    }
    let mut revoke = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .audit_entries(after, aims_store::MAX_PAGE)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.record.seq;
        revoke.extend(
            page.into_iter()
                .filter(|entry| entry.action == action::REVOKE)
                .map(|entry| entry.txn),
        );
    }
    assert_eq!(revoke.len(), 1);
    assert_eq!(
        txns,
        BTreeSet::from([revoke[0].clone()]),
        "one txn, the audit record's"
    );
    seen
}

/// Every credential entry of the revocation log, in log order: its id and `txn`.
async fn credential_log(store: &dyn Store) -> Vec<(String, Option<String>)> {
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page = store.revocations_since(after, 1000, None).await.unwrap();
        let Some(last) = page.last() else {
            return entries;
        };
        after = last.seq;
        entries.extend(
            page.iter()
                .filter_map(|r| Some((r.credential()?.to_owned(), r.txn.clone()))),
        );
    }
}

/// A revocation larger than one cascade step (a root with 600 children) is revoked in several
/// transactions while writers keep delegating under the children: afterwards every credential
/// registered under the root is revoked, each appears once in the log, the count returned is
/// every one of them, and no cascade is left to finish.
pub async fn a_revocation_in_steps_stays_complete_under_racing_issuance(h: &Harness) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const WRITERS: usize = 8;
    const DEPTH: usize = 6;
    let store = &h.store;
    // Several steps on either backend.
    let kids = wide_root(store, "t-wide", (2 * h.cascade_step() + 100).max(600)).await;
    let issued = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            // Writers extend children all along the order the cascade takes them in.
            tokio::spawn(extend_chain(
                Arc::clone(store),
                kids[writer * (kids.len() / WRITERS)].clone(),
                "s".to_owned(),
                "t-wide".to_owned(),
                DEPTH,
                Arc::clone(&issued),
            ))
        })
        .collect();
    while issued.load(Ordering::SeqCst) < WRITERS {
        tokio::task::yield_now().await;
    }
    let revoked = store
        .revoke(
            &RevocationTarget::Credential("root".to_owned()),
            "wide",
            at(30),
            &event(action::REVOKE),
        )
        .await
        .unwrap();
    let mut attempted = Vec::new();
    for writer in writers {
        attempted.extend(writer.await.unwrap());
    }
    let mut registered = BTreeSet::new();
    for id in ["root".to_owned()].iter().chain(&kids).chain(&attempted) {
        if let Some(credential) = store.issued_credential(id).await.unwrap() {
            assert!(
                credential.revoked_at.is_some(),
                "{id} hangs live on a revoked root"
            );
            registered.insert(id.clone());
        }
    }
    assert_eq!(
        registered.len(),
        1 + kids.len() + issued.load(Ordering::SeqCst)
    );
    assert_eq!(
        revoked,
        registered.len() as u64,
        "the count is every credential revoked"
    );
    assert_eq!(logged_once(&**store).await, registered);
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    assert_eq!(store.finish_revocations(later).await.unwrap(), 0);
    assert_chain_verifies(&**store).await;
}

/// A revocation whose cascade fails part-way (the database refuses a step) has revoked its
/// target and what the committed steps took, and leaves its cascade to be finished: not
/// before it has been idle, and then completely, each credential logged once.
pub async fn an_incomplete_revocation_is_finished(h: &Harness) {
    let store = &h.store;
    let step = h.cascade_step();
    let kids = wide_root(store, "t-cut", step + 472).await;
    let grandchildren = children(store, "kid-599", "grandkid-", "t-cut", 0..40).await;
    revoke_root_cut_short(h).await;
    assert!(revoked_at(&**store, "root").await.is_some());
    let mut live = 0;
    for id in kids.iter().chain(&grandchildren) {
        if revoked_at(&**store, id).await.is_none() {
            live += 1;
        }
    }
    assert_eq!(
        live,
        kids.len() + 40 - step,
        "the first step's children are revoked, no more"
    );
    allow_revocations(h).await;
    // Advanced by the clock just now: not idle since a minute ago.
    let now = time::OffsetDateTime::now_utc();
    let minute = time::Duration::minutes(1);
    assert_eq!(store.finish_revocations(now - minute).await.unwrap(), 0);
    assert_eq!(store.finish_revocations(now + minute).await.unwrap(), 512);
    for id in kids.iter().chain(&grandchildren) {
        assert!(revoked_at(&**store, id).await.is_some(), "{id} is live");
    }
    assert_eq!(logged_once(&**store).await.len(), 1 + kids.len() + 40);
    assert_eq!(store.finish_revocations(now + minute).await.unwrap(), 0);
    assert_chain_verifies(&**store).await;
}

/// Revokes `root`, having made the database refuse to log more than one step's worth after
/// it: the target's own transaction (1 entry) and the first step commit, the second step fails
/// (each time it is tried), and the cascade is left to `finish_revocations`.
async fn revoke_root_cut_short(h: &Harness) {
    let step = h.cascade_step();
    if h.shares_writers() {
        h.execute_raw(&format!(
            "CREATE FUNCTION refuse_revocations() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF (SELECT COUNT(*) FROM revocations) > {step} THEN \
             RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_revocations BEFORE INSERT ON revocations \
             FOR EACH ROW EXECUTE FUNCTION refuse_revocations();"
        ))
        .await;
    } else {
        h.execute_raw(&format!(
            "CREATE TRIGGER refuse_revocations BEFORE INSERT ON revocations \
             WHEN (SELECT COUNT(*) FROM revocations) > {step} \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        ))
        .await;
    }
    let failed = h
        .store
        .revoke(
            &RevocationTarget::Credential("root".to_owned()),
            "cut short",
            at(30),
            &event(action::REVOKE),
        )
        .await;
    assert!(failed.is_err(), "the second step was refused: {failed:?}");
}

/// Revokes the credential `root` at 30 s in a task of its own.
fn revoking_root(
    store: &Arc<dyn Store>,
    reason: &'static str,
) -> tokio::task::JoinHandle<Result<u64, StoreError>> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        store
            .revoke(
                &RevocationTarget::Credential("root".to_owned()),
                reason,
                at(30),
                &event(action::REVOKE),
            )
            .await
    })
}

/// Drops the trigger [`revoke_root_cut_short`] made.
async fn allow_revocations(h: &Harness) {
    h.execute_raw(if h.shares_writers() {
        "DROP TRIGGER refuse_revocations ON revocations;"
    } else {
        "DROP TRIGGER refuse_revocations;"
    })
    .await;
}

/// On PostgreSQL a cascade step takes the revocation log's lock, not the audit head's: it
/// finishes while another session holds the head (every write and sequencer turn waits then).
pub async fn a_cascade_step_waits_for_no_audit_head_lock(h: &Harness) {
    use std::time::Duration;
    if !h.shares_writers() {
        return;
    }
    let store = &h.store;
    let kids = wide_root(store, "t-free", h.cascade_step() + 472).await;
    revoke_root_cut_short(h).await;
    allow_revocations(h).await;
    let mut holder = h
        .postgres_session("BEGIN; SELECT * FROM audit_head FOR UPDATE;")
        .await;
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let finished =
        tokio::time::timeout(Duration::from_secs(5), store.finish_revocations(later)).await;
    assert!(
        matches!(finished, Ok(Ok(472))),
        "the cascade waited for the head lock: {finished:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    for id in &kids {
        assert!(revoked_at(&**store, id).await.is_some(), "{id} is live");
    }
    assert_eq!(logged_once(&**store).await.len(), 1 + kids.len());
    assert_chain_verifies(&**store).await;
}

/// On PostgreSQL a revoking write takes the revocation log's lock before it appends, as a
/// cascade step does, so the log's entries commit in position order: while a session holds
/// the lock, a revocation commits nothing; once it is let go, the revocation completes.
pub async fn a_revoking_write_waits_for_the_revocation_log_lock(h: &Harness) {
    use std::time::Duration;
    if !h.shares_writers() {
        return;
    }
    let store = &h.store;
    wide_root(store, "t-order", 0).await;
    let mut session = h
        .postgres_session("BEGIN; SELECT id FROM revocation_log_lock WHERE id = 1 FOR UPDATE;")
        .await;
    let revocation = revoking_root(store, "ordered");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        revoked_at(&**store, "root").await.is_none(),
        "the revocation appended without the revocation log's lock"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut session)
        .await
        .unwrap();
    assert_eq!(revocation.await.unwrap().unwrap(), 1);
    assert_eq!(logged_once(&**store).await.len(), 1);
}

/// A PostgreSQL store whose revocation log has lost its lock's row cannot order the log, so it
/// refuses to revoke rather than append unordered, and changes nothing.
pub async fn a_missing_revocation_log_lock_refuses_revocation(h: &Harness) {
    if !h.shares_writers() {
        return;
    }
    let store = &h.store;
    wide_root(store, "t-unlocked", 0).await;
    h.execute_raw("DELETE FROM revocation_log_lock;").await;
    let refused = revoking_root(store, "unlocked").await.unwrap();
    assert!(
        matches!(refused, Err(StoreError::Corrupt(_))),
        "{refused:?}"
    );
    assert!(revoked_at(&**store, "root").await.is_none());
    assert!(credential_log(&**store).await.is_empty());
}

/// A cascade step the database ends to break a deadlock is run again. A session holds a child
/// `FOR SHARE`, so the step that marks it waits, holding the revocation log's lock; the
/// session then asks for that lock, which closes the circle. The step has waited longer, so
/// PostgreSQL's deadlock check ends it; the session commits, and the revocation still
/// finishes.
pub async fn a_cascade_step_ended_by_a_deadlock_is_run_again(h: &Harness) {
    use std::time::Duration;
    if !h.shares_writers() {
        return;
    }
    let store = &h.store;
    let kids = wide_root(store, "t-circle", 600).await;
    let mut session = h
        .postgres_session("BEGIN; SELECT id FROM credentials WHERE id = 'kid-300' FOR SHARE;")
        .await;
    let session_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut session)
        .await
        .unwrap();
    let revocation = revoking_root(store, "circle");
    let mut watcher = h.postgres_connection().await;
    let blocked = "SELECT COUNT(*) FROM pg_locks \
                   WHERE NOT granted AND $1 = ANY (pg_blocking_pids(pid))";
    let mut waited = Duration::ZERO;
    while sqlx::query_scalar::<_, i64>(blocked)
        .bind(session_pid)
        .fetch_one(&mut watcher)
        .await
        .unwrap()
        == 0
    {
        assert!(
            waited < Duration::from_secs(10),
            "no step waited for kid-300"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    let locked = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::raw_sql("SELECT id FROM revocation_log_lock WHERE id = 1 FOR UPDATE")
            .execute(&mut session),
    )
    .await;
    assert!(
        matches!(locked, Ok(Ok(_))),
        "the step, not the session, was to lose the deadlock: {locked:?}"
    );
    sqlx::raw_sql("COMMIT").execute(&mut session).await.unwrap();
    assert_eq!(revocation.await.unwrap().unwrap(), 601, "root and its kids");
    for id in &kids {
        assert!(revoked_at(&**store, id).await.is_some(), "{id} is live");
    }
    assert_eq!(logged_once(&**store).await.len(), 601);
}

/// A cascade step finds the live children of what the log holds after its position through
/// the partial index of live children, never by scanning the credentials.
pub async fn a_cascade_step_reads_live_children_by_index(h: &Harness) {
    let step = "SELECT c.id FROM revocations r JOIN credentials c ON c.parent = r.credential \
                WHERE r.seq > 0 AND r.kind = 'credential' AND c.revoked_at_ms IS NULL LIMIT 128";
    let plan = h.query_plan(step).await;
    assert!(plan.contains("credentials_live_children"), "{plan}");
    let scans = plan.lines().any(|l| {
        l.contains("SCAN c") && !l.contains("INDEX") || l.contains("Seq Scan on credentials")
    });
    assert!(!scans, "{plan}");
}

/// What a generated case does, after building its tree.
#[derive(Debug, Clone)]
enum RaceOp {
    /// Delegate a new token under a node of the tree.
    Delegate(proptest::sample::Index),
    /// Revoke a node (`Credential`) or its children (`Subtree`).
    Revoke(proptest::sample::Index, bool),
}

/// A generated case: hubs under the root with this many children each (more than one cascade
/// step takes, at times), a small random tree (each node's parent drawn from the nodes before
/// it), and the operations then run all at once: delegations under any node, revocations of
/// the root, a hub or a node of the tree (a hub's children are leaves until delegated under).
#[derive(Debug, Clone)]
struct RaceCase {
    hubs: Vec<usize>,
    tree: Vec<proptest::sample::Index>,
    ops: Vec<RaceOp>,
}

fn race_cases() -> impl proptest::strategy::Strategy<Value = RaceCase> {
    use proptest::prelude::*;
    let op = prop_oneof![
        3 => any::<proptest::sample::Index>().prop_map(RaceOp::Delegate),
        1 => (any::<proptest::sample::Index>(), any::<bool>())
            .prop_map(|(node, subtree)| RaceOp::Revoke(node, subtree)),
    ];
    (
        proptest::collection::vec(0usize..=300, 1..=2),
        proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
        proptest::collection::vec(op, 1..24),
    )
        .prop_map(|(hubs, tree, ops)| RaceCase { hubs, tree, ops })
}

/// Property, over generated trees and generated mixes of concurrent delegations and
/// revocations (of a token or of a subtree) within them: afterwards no registered credential
/// is live below a revoked one, every delegation that succeeded is registered and every one
/// refused is not, each credential is in the revocation log at most once, and the counts the
/// revocations returned add up to the credentials revoked. Cases are generated with proptest
/// and run one after another on one store (each in a task of its own), without shrinking: a
/// failure prints its case.
pub async fn random_races_of_issuance_and_revocation_keep_revocation_complete(h: &Harness) {
    use proptest::strategy::{Strategy, ValueTree};
    use std::collections::BTreeMap;
    const CASES: usize = 10;
    let store = &h.store;
    register(&**store, "a", ALICE).await;
    svid(&**store, "a", "svid-a", 10).await;
    let mut runner = proptest::test_runner::TestRunner::default();
    for n in 0..CASES {
        let case = race_cases().new_tree(&mut runner).unwrap().current();
        let (task_id, root) = (format!("t-race{n}"), format!("race{n}"));
        task_root(&**store, &root, &task_id).await;
        // Every node, and those that may have children (what revocations target).
        let mut nodes = vec![root.clone()];
        let mut inner = vec![root.clone()];
        for (i, children_count) in case.hubs.iter().enumerate() {
            let hub = format!("{root}-h{i}");
            let made = children(store, &root, &format!("{root}-h"), &task_id, i..i + 1).await;
            assert_eq!(made, std::slice::from_ref(&hub));
            nodes.push(hub.clone());
            inner.push(hub.clone());
            let prefix = format!("{hub}-");
            nodes.extend(children(store, &hub, &prefix, &task_id, 0..*children_count).await);
        }
        for (i, parent) in case.tree.iter().enumerate() {
            let parent = parent.get(&nodes).clone();
            let id = format!("{root}-n{i}");
            let child = token(&id, "a", Some(&parent), &task_id, 21);
            store
                .issue_access_token(&issuance(child, None, None), &event(action::TOKEN_DELEGATE))
                .await
                .unwrap();
            nodes.push(id.clone());
            inner.push(id);
        }
        let runs: Vec<_> = case
            .ops
            .iter()
            .enumerate()
            .map(|(k, op)| {
                let store = Arc::clone(store);
                let task_id = task_id.clone();
                let (op, id) = (op.clone(), format!("{root}-o{k}"));
                let target = match &op {
                    RaceOp::Delegate(node) => node.get(&nodes).clone(),
                    RaceOp::Revoke(node, _) => node.get(&inner).clone(),
                };
                tokio::spawn(async move {
                    match op {
                        RaceOp::Delegate(_) => {
                            let child = token(&id, "a", Some(&target), &task_id, 22);
                            let issued = store
                                .issue_access_token(
                                    &issuance(child, None, None),
                                    &event(action::TOKEN_DELEGATE),
                                )
                                .await;
                            match issued {
                                Ok(()) => (Some((id, true)), 0),
                                Err(StoreError::Conflict { .. }) => (Some((id, false)), 0),
                                Err(other) => panic!("unexpected refusal: {other}"),
                            }
                        }
                        RaceOp::Revoke(_, subtree) => {
                            let target = if subtree {
                                RevocationTarget::Subtree(target)
                            } else {
                                RevocationTarget::Credential(target)
                            };
                            let count = store
                                .revoke(&target, "race", at(30), &event(action::REVOKE))
                                .await
                                .unwrap();
                            (None, count)
                        }
                    }
                })
            })
            .collect();
        let mut counted = 0;
        let mut delegated = Vec::new();
        for run in runs {
            let (delegation, count) = run.await.unwrap();
            counted += count;
            delegated.extend(delegation);
        }
        let mut registered = BTreeMap::new();
        for id in &nodes {
            let credential = store.issued_credential(id).await.unwrap().unwrap();
            registered.insert(id.clone(), credential);
        }
        for (id, succeeded) in &delegated {
            let credential = store.issued_credential(id).await.unwrap();
            assert_eq!(credential.is_some(), *succeeded, "{id} in {case:?}");
            if let Some(credential) = credential {
                registered.insert(id.clone(), credential);
            }
        }
        let mut revoked = 0;
        for (id, credential) in &registered {
            revoked += u64::from(credential.revoked_at.is_some());
            let mut ancestor = credential.parent.as_deref();
            while let Some(above) = ancestor.and_then(|a| registered.get(a)) {
                assert!(
                    above.revoked_at.is_none() || credential.revoked_at.is_some(),
                    "{id} is live below the revoked {} in {case:?}",
                    above.id
                );
                ancestor = above.parent.as_deref();
            }
        }
        assert_eq!(counted, revoked, "counts against revoked in {case:?}");
    }
    let logged = credential_log(&**store).await;
    let distinct: BTreeSet<_> = logged.iter().map(|(id, _)| id).collect();
    assert_eq!(logged.len(), distinct.len(), "a credential logged twice");
    assert_chain_verifies(&**store).await;
}

/// On PostgreSQL an issuance waits for no audit-head lock, and holds the rows it checked
/// until it commits: one paused after its checks (a raw session holds its DPoP proof's key)
/// keeps a revocation of its parent from completing, and once it commits the revocation's
/// cascade takes the new child. A SQLite store has one writer, so there is nothing to show.
pub async fn an_issuance_holds_what_it_checked_until_it_commits(h: &Harness) {
    use std::time::Duration;
    if !h.shares_writers() {
        return;
    }
    let store = &h.store;
    register(&**store, "a", ALICE).await;
    svid(&**store, "a", "svid-a", 10).await;
    task_root(&**store, "root", "t-held").await;
    let mut holder = h
        .postgres_session("BEGIN; SELECT * FROM audit_head FOR UPDATE;")
        .await;
    let free = issuance(token("c-free", "a", Some("root"), "t-held", 21), None, None);
    let issued = tokio::time::timeout(
        Duration::from_secs(5),
        store.issue_access_token(&free, &event(action::TOKEN_DELEGATE)),
    )
    .await;
    assert!(
        matches!(issued, Ok(Ok(()))),
        "the issuance waited for the head lock: {issued:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();

    sqlx::raw_sql("BEGIN; INSERT INTO dpop_proofs (hash, expires_at_ms) VALUES ('held-proof', 0);")
        .execute(&mut holder)
        .await
        .unwrap();
    let paused = {
        let store = Arc::clone(store);
        let held = issuance(
            token("c-held", "a", Some("root"), "t-held", 22),
            None,
            Some("held-proof"),
        );
        tokio::spawn(async move {
            store
                .issue_access_token(&held, &event(action::TOKEN_DELEGATE))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !paused.is_finished(),
        "the issuance did not wait for its proof's key"
    );
    let revocation = revoking_root(store, "held");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !revocation.is_finished(),
        "the revocation did not wait for the issuance that checked its target"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    paused.await.unwrap().unwrap();
    assert_eq!(
        revocation.await.unwrap().unwrap(),
        3,
        "root, c-free, c-held"
    );
    for id in ["root", "c-free", "c-held"] {
        assert!(revoked_at(&**store, id).await.is_some(), "{id} is live");
    }
    assert_chain_verifies(&**store).await;
}
