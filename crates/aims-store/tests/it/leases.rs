//! Database leases: engines and role templates, a lease registered as a child credential of
//! its task token (so the one revocation closure covers it), refusals that write nothing, and
//! the claims that let exactly one replica end a lease.

use std::sync::Arc;

use aims_core::audit::action;
use aims_core::id::{EngineName, Environment, RoleName, UserName};
use aims_core::lease::{Cleanup, Engine, EngineKind, RoleTemplate, parse_grants};
use aims_store::{IssuedCredential, IssuedKind, LeaseIssue, RevocationTarget, Store, StoreError};

use crate::fixtures::{AuditCursor, at, event, name};
use crate::harness::Harness;
use crate::tokens::{exchange, issuance, register, svid, task, token};

fn engine() -> Engine {
    Engine {
        name: EngineName::new("warehouse").unwrap(),
        kind: EngineKind::Postgres,
        connection_url: "postgres://postgres@127.0.0.1:5432/test".to_owned(),
        admin_secret: None,
        system: "warehouse".to_owned(),
        environment: Environment::new("prod").unwrap(),
        sensitivity: "internal".to_owned(),
        created_by: UserName::new("admin").unwrap(),
        created_at: at(0),
    }
}

fn template() -> RoleTemplate {
    RoleTemplate {
        engine: EngineName::new("warehouse").unwrap(),
        name: RoleName::new("reader").unwrap(),
        grants: parse_grants("GRANT SELECT ON TABLE public.sales").unwrap(),
        max_ttl_s: 600,
        cleanup: Cleanup::DropOwned,
        created_by: UserName::new("admin").unwrap(),
        created_at: at(0),
    }
}

/// The lease `id` of agent `a`, child of `parent` in task `task_id`, issued at `when` for
/// `ttl` seconds, claimed by `creator` for a minute.
fn lease(id: &str, parent: &str, task_id: &str, when: i64, ttl: i64) -> LeaseIssue {
    LeaseIssue {
        credential: IssuedCredential {
            id: id.to_owned(),
            kind: IssuedKind::Lease,
            agent: name("a"),
            parent: Some(parent.to_owned()),
            key_thumbprint: None,
            issued_at: at(when),
            expires_at: at(when + ttl),
            revoked_at: None,
            task_id: Some(task_id.to_owned()),
            audience: None,
        },
        engine: EngineName::new("warehouse").unwrap(),
        role: RoleName::new("reader").unwrap(),
        db_role: format!("aims_lease_{id}"),
        holder: "creator".to_owned(),
        claimed_until: at(when + 60),
    }
}

/// Agent `a` with SVID `s1` and task token `t1` (task `k1`, valid from 10 to 310), an
/// engine and its `reader` template.
async fn scene(store: &dyn Store, audit: &mut AuditCursor) {
    register(store, "a", "alice@acme.example").await;
    svid(store, "a", "s1", 0).await;
    *audit = AuditCursor::new(store).await;
    exchange(
        store,
        audit,
        &issuance(
            token("t1", "a", Some("s1"), "k1", 10),
            Some(task("k1", "a", 10)),
            None,
        ),
    )
    .await;
    store
        .create_engine(&engine(), &event(action::ENGINE_ADD))
        .await
        .unwrap();
    audit.one(store, action::ENGINE_ADD).await;
    store
        .create_role_template(&template(), &event(action::ENGINE_ROLE_ADD))
        .await
        .unwrap();
    audit.one(store, action::ENGINE_ROLE_ADD).await;
}

pub async fn leases_die_with_their_task_token(h: &Harness) {
    let store = h.store.as_ref();
    let mut audit = AuditCursor::new(store).await;
    scene(store, &mut audit).await;
    assert_eq!(store.list_engines().await.unwrap(), [engine()]);
    let warehouse = EngineName::new("warehouse").unwrap();
    assert_eq!(
        store
            .role_template(&warehouse, &RoleName::new("reader").unwrap())
            .await
            .unwrap(),
        Some(template())
    );
    assert!(matches!(
        store
            .create_engine(&engine(), &event(action::ENGINE_ADD))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let mut orphan = template();
    orphan.engine = EngineName::new("nowhere").unwrap();
    assert!(matches!(
        store
            .create_role_template(&orphan, &event(action::ENGINE_ROLE_ADD))
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // Refused: past the token, a parent that is an SVID, another task, an unknown parent.
    let head = store.audit_head().await.unwrap();
    for (bad, why) in [
        (lease("x1", "t1", "k1", 20, 400), "outlives the token"),
        (lease("x2", "s1", "k1", 20, 100), "parent is the SVID"),
        (lease("x3", "t1", "k2", 20, 100), "another task"),
        (lease("x4", "t9", "k1", 20, 100), "unknown parent"),
    ] {
        let refused = store.issue_lease(&bad, &event(action::LEASE_ISSUE)).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict { .. })),
            "{why}: {refused:?}"
        );
        assert_eq!(
            store.lease(&bad.credential.id).await.unwrap(),
            None,
            "{why}"
        );
    }
    assert_eq!(
        store.audit_head().await.unwrap(),
        head,
        "refusals write nothing"
    );

    let issue = lease("l1", "t1", "k1", 20, 200);
    store
        .issue_lease(&issue, &event(action::LEASE_ISSUE))
        .await
        .unwrap();
    audit.one(store, action::LEASE_ISSUE).await;
    let stored = store.lease("l1").await.unwrap().unwrap();
    assert_eq!(stored.db_role, "aims_lease_l1");
    assert_eq!(stored.parent.as_deref(), Some("t1"));
    assert!(!stored.is_due(at(30)));
    assert!(stored.pending, "pending until its creator grants it");
    assert_eq!(
        store.list_leases(Some(&name("a")), 10).await.unwrap(),
        [stored]
    );
    // Being created, it is its creator's: nobody else claims it, and it is not due.
    assert!(!store.claim_lease("l1", "r2", at(30), at(90)).await.unwrap());
    assert!(store.leases_to_end(at(30), 10).await.unwrap().is_empty());
    assert_eq!(store.leases_overdue(at(30)).await.unwrap(), 0);
    // Still pending when its creator's claim has run out (a crash mid-creation): due.
    let orphaned = store.leases_to_end(at(80), 10).await.unwrap();
    assert_eq!(orphaned.len(), 1);
    assert!(orphaned[0].pending && orphaned[0].revoked_at.is_none());
    assert_eq!(store.leases_overdue(at(80)).await.unwrap(), 1);
    // Granted by its creator only, once; then it is an ordinary live lease.
    assert!(!store.grant_lease("l1", "r2").await.unwrap());
    assert!(store.grant_lease("l1", "creator").await.unwrap());
    assert!(!store.grant_lease("l1", "creator").await.unwrap());
    assert!(!store.lease("l1").await.unwrap().unwrap().pending);
    assert!(!store.release_lease("l1", "creator").await.unwrap());
    assert!(store.leases_to_end(at(80), 10).await.unwrap().is_empty());
    assert_eq!(store.leases_overdue(at(80)).await.unwrap(), 0);

    // Renewal moves the end, never past the task token; refusals write nothing.
    store
        .renew_lease("l1", at(300), at(30), &event(action::LEASE_RENEW))
        .await
        .unwrap();
    audit.one(store, action::LEASE_RENEW).await;
    assert_eq!(
        store.lease("l1").await.unwrap().unwrap().expires_at,
        at(300)
    );
    let head = store.audit_head().await.unwrap();
    assert!(matches!(
        store
            .renew_lease("l1", at(320), at(31), &event(action::LEASE_RENEW))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store
            .renew_lease("x9", at(200), at(31), &event(action::LEASE_RENEW))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.audit_head().await.unwrap(), head);

    // Revoking the SVID the token came from revokes the lease in the same closure.
    let count = store
        .revoke(
            &RevocationTarget::Credential("s1".to_owned()),
            "test",
            at(40),
            &event(action::REVOKE),
        )
        .await
        .unwrap();
    assert_eq!(count, 3, "svid, token and lease");
    audit.one(store, action::REVOKE).await;
    assert!(matches!(
        store
            .renew_lease("l1", at(200), at(41), &event(action::LEASE_RENEW))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let due = store.leases_to_end(at(41), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert!(due[0].is_due(at(41)));
    assert_eq!(store.leases_overdue(at(41)).await.unwrap(), 1);

    // One replica claims it; the other can neither claim nor end it.
    assert!(
        store
            .claim_lease("l1", "r1", at(41), at(101))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_lease("l1", "r2", at(42), at(102))
            .await
            .unwrap()
    );
    assert!(store.leases_to_end(at(42), 10).await.unwrap().is_empty());
    let head = store.audit_head().await.unwrap();
    assert!(matches!(
        store
            .end_lease("l1", "r2", at(43), &event(action::LEASE_END))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.audit_head().await.unwrap(), head);

    // A failed attempt gives the claim up and waits for its retry time.
    assert!(
        store
            .lease_failed("l1", "r1", at(60), "engine unreachable")
            .await
            .unwrap()
    );
    assert!(store.leases_to_end(at(59), 10).await.unwrap().is_empty());
    let retried = store.leases_to_end(at(60), 10).await.unwrap();
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].last_error.as_deref(), Some("engine unreachable"));
    // A claim that ran out passes to another replica, which ends it once.
    assert!(store.claim_lease("l1", "r1", at(60), at(70)).await.unwrap());
    assert!(
        store
            .claim_lease("l1", "r2", at(71), at(131))
            .await
            .unwrap()
    );
    store
        .end_lease("l1", "r2", at(72), &event(action::LEASE_END))
        .await
        .unwrap();
    audit.one(store, action::LEASE_END).await;
    assert!(store.leases_to_end(at(500), 10).await.unwrap().is_empty());
    assert_eq!(store.leases_overdue(at(500)).await.unwrap(), 0);
    assert!(
        !store
            .claim_lease("l1", "r1", at(73), at(133))
            .await
            .unwrap()
    );
    assert_eq!(
        store.lease("l1").await.unwrap().unwrap().ended_at,
        Some(at(72))
    );
}

pub async fn a_lease_is_claimed_once_under_concurrency(h: &Harness) {
    let store: Arc<dyn Store> = h.store.clone();
    let mut audit = AuditCursor::new(store.as_ref()).await;
    scene(store.as_ref(), &mut audit).await;
    store
        .issue_lease(
            &lease("l2", "t1", "k1", 20, 100),
            &event(action::LEASE_ISSUE),
        )
        .await
        .unwrap();
    // Expired: due without a revocation, once the creator's claim ran out.
    let claimants: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_lease("l2", &format!("r{i}"), at(130), at(190))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for claimant in claimants {
        won += usize::from(claimant.await.unwrap());
    }
    assert_eq!(won, 1);
}

/// On PostgreSQL a lease reads its task token `FOR SHARE`, since a cascade step that marks the
/// token takes no head lock: while a session holds the token's row for an update (as a step
/// does), the lease waits, and it is refused once the session marks the token revoked.
pub async fn a_lease_holds_its_parent_until_it_commits(h: &Harness) {
    use std::time::Duration;
    if !h.shares_writers() {
        return;
    }
    let store: Arc<dyn Store> = h.store.clone();
    let mut audit = AuditCursor::new(store.as_ref()).await;
    scene(store.as_ref(), &mut audit).await;
    let mut step = h
        .postgres_session("BEGIN; SELECT id FROM credentials WHERE id = 't1' FOR UPDATE;")
        .await;
    let asked = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .issue_lease(
                    &lease("l3", "t1", "k1", 20, 100),
                    &event(action::LEASE_ISSUE),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !asked.is_finished(),
        "the lease did not wait for its parent"
    );
    sqlx::raw_sql(
        "UPDATE credentials SET revoked_at_ms = 25000, revoked_reason = 'test' \
         WHERE id = 't1'; COMMIT;",
    )
    .execute(&mut step)
    .await
    .unwrap();
    let refused = asked.await.unwrap();
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(store.lease("l3").await.unwrap(), None);
}
