//! Identity and posture: single-use nonces, posture snapshots, the register of issued
//! credentials, and revocation when an agent leaves the active state.

use std::sync::Arc;

use aims_core::agent::LifecycleState;
use aims_core::audit::action;
use aims_core::credential::CredentialHash;
use aims_core::posture::{Evidence, ModelEvidence};
use aims_store::{
    AttestationRecord, IssuedCredential, IssuedKind, PostureSnapshot, RegistryCursor,
    RegistryEntry, Store, StoreError,
};

use crate::fixtures::{AuditCursor, agent, at, changed, event, join_token, name};
use crate::harness::Harness;

fn attestation(agent_name: &str, jti: &str, model: &str, when: i64) -> AttestationRecord {
    let evidence = Evidence {
        model: ModelEvidence {
            id: Some(model.to_owned()),
            digest: None,
        },
        ..Evidence::default()
    };
    AttestationRecord {
        snapshot: PostureSnapshot {
            agent: name(agent_name),
            digest: evidence.digest(),
            evidence,
            key_thumbprint: "jkt-a".to_owned(),
            accepted_at: at(when),
        },
        credential: IssuedCredential {
            id: jti.to_owned(),
            kind: IssuedKind::Svid,
            agent: name(agent_name),
            parent: None,
            key_thumbprint: Some("jkt-a".to_owned()),
            issued_at: at(when),
            expires_at: at(when + 600),
            revoked_at: None,
            task_id: None,
            audience: None,
        },
    }
}

async fn register(h: &Harness, agent_name: &str) {
    h.store
        .create_agent(
            &agent(agent_name, "alice@acme.example", "prod"),
            &join_token(agent_name, agent_name, at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
}

pub async fn nonces_are_single_use_and_expire(h: &Harness) {
    let store = &*h.store;
    let n1 = CredentialHash::of("n1");
    assert!(store.consume_nonce(&n1, at(60), at(1)).await.unwrap());
    assert!(
        !store.consume_nonce(&n1, at(60), at(2)).await.unwrap(),
        "replayed nonce"
    );
    let n2 = CredentialHash::of("n2");
    assert!(store.consume_nonce(&n2, at(120), at(1)).await.unwrap());

    // Used nonces are remembered until they expire, then swept.
    store.sweep_expired(at(59)).await.unwrap();
    assert!(!store.consume_nonce(&n1, at(60), at(59)).await.unwrap());
    store.sweep_expired(at(60)).await.unwrap();
    assert!(
        store.consume_nonce(&n1, at(60), at(60)).await.unwrap(),
        "n1 was swept"
    );
    assert!(
        !store.consume_nonce(&n2, at(120), at(61)).await.unwrap(),
        "n2 is still remembered"
    );

    // Concurrent consumers of one nonce: exactly one wins.
    let race = CredentialHash::of("race");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move { store.consume_nonce(&race, at(60), at(1)).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
}

pub async fn attestations_record_snapshot_and_credential(h: &Harness) {
    let store = &*h.store;
    register(h, "coder").await;
    assert_eq!(store.posture_snapshot(&name("coder")).await.unwrap(), None);
    let mut audit = AuditCursor::new(store).await;
    let first = attestation("coder", "svid-1", "m1", 10);
    store
        .record_attestation(&first, &event("identity.issue"))
        .await
        .unwrap();
    audit.one(store, "identity.issue").await;
    assert_eq!(
        store.posture_snapshot(&name("coder")).await.unwrap(),
        Some(first.snapshot.clone())
    );
    assert_eq!(
        store.issued_credential("svid-1").await.unwrap(),
        Some(first.credential.clone())
    );

    // A later attestation replaces the snapshot; the credential id must be new.
    let second = attestation("coder", "svid-2", "m2", 20);
    store
        .record_attestation(&second, &event("identity.issue"))
        .await
        .unwrap();
    audit.one(store, "identity.issue").await;
    let snapshot = store
        .posture_snapshot(&name("coder"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.evidence.model.id.as_deref(), Some("m2"));
    let reused = store
        .record_attestation(&second, &event("identity.issue"))
        .await;
    assert!(
        matches!(reused, Err(StoreError::Conflict { .. })),
        "{reused:?}"
    );
    audit.none(store).await;
    assert_eq!(store.issued_credential("nope").await.unwrap(), None);
}

pub async fn leaving_active_revokes_every_credential(h: &Harness) {
    let store = &*h.store;
    register(h, "coder").await;
    register(h, "other").await;
    for (agent_name, jti) in [("coder", "c1"), ("coder", "c2"), ("other", "o1")] {
        store
            .record_attestation(
                &attestation(agent_name, jti, "m1", 10),
                &event("identity.issue"),
            )
            .await
            .unwrap();
    }
    let coder = store.agent(&name("coder")).await.unwrap().unwrap();
    let quarantined = changed(&coder, LifecycleState::Quarantined);
    store
        .update_agent(
            &quarantined,
            coder.revision,
            &event(action::AGENT_LIFECYCLE),
        )
        .await
        .unwrap();
    for jti in ["c1", "c2"] {
        let c = store.issued_credential(jti).await.unwrap().unwrap();
        assert_eq!(c.revoked_at, Some(quarantined.updated_at), "{jti}");
    }
    let other = store.issued_credential("o1").await.unwrap().unwrap();
    assert_eq!(
        other.revoked_at, None,
        "another agent's credential is untouched"
    );

    // A quarantined agent cannot be issued an identity, even by a racing attestation.
    let late = store
        .record_attestation(
            &attestation("coder", "c3", "m1", 30),
            &event("identity.issue"),
        )
        .await;
    assert!(matches!(late, Err(StoreError::Conflict { .. })), "{late:?}");
    assert_eq!(store.issued_credential("c3").await.unwrap(), None);
}

/// The agents read from the change log after `cursor`, as (name, state, model of the
/// snapshot), and the cursor after them.
async fn changes_after(
    store: &dyn Store,
    cursor: &RegistryCursor,
    limit: u32,
) -> (
    Vec<(String, LifecycleState, Option<String>)>,
    RegistryCursor,
) {
    let page: Vec<RegistryEntry> = store.registry_changes(cursor, limit).await.unwrap();
    let next = page
        .last()
        .map_or_else(|| cursor.clone(), RegistryEntry::cursor);
    let seen = page
        .into_iter()
        .map(|e| {
            (
                e.agent.name.to_string(),
                e.agent.state,
                e.snapshot.and_then(|s| s.evidence.model.id),
            )
        })
        .collect();
    (seen, next)
}

pub async fn registry_changes_follow_every_change(h: &Harness) {
    let store = &*h.store;
    register(h, "alpha").await;
    register(h, "beta").await;
    let active = LifecycleState::Active;

    // From the beginning, a page at a time, in change order.
    let (first, cursor) = changes_after(store, &RegistryCursor::default(), 1).await;
    assert_eq!(first, [("alpha".to_owned(), active, None)]);
    let (second, cursor) = changes_after(store, &cursor, 1).await;
    assert_eq!(second, [("beta".to_owned(), active, None)]);
    let (none, cursor) = changes_after(store, &cursor, 100).await;
    assert!(none.is_empty(), "{none:?}");

    // An accepted attestation changes the agent's posture.
    store
        .record_attestation(
            &attestation("beta", "svid-b", "m1", 10),
            &event("identity.issue"),
        )
        .await
        .unwrap();
    let (seen, cursor) = changes_after(store, &cursor, 100).await;
    assert_eq!(seen, [("beta".to_owned(), active, Some("m1".to_owned()))]);

    // A state change; a refused update (stale revision) is no change.
    let alpha = store.agent(&name("alpha")).await.unwrap().unwrap();
    let suspended = changed(&alpha, LifecycleState::Suspended);
    store
        .update_agent(&suspended, alpha.revision, &event(action::AGENT_UPDATE))
        .await
        .unwrap();
    let stale = store
        .update_agent(&suspended, alpha.revision, &event(action::AGENT_UPDATE))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let (seen, cursor) = changes_after(store, &cursor, 100).await;
    assert_eq!(
        seen,
        [("alpha".to_owned(), LifecycleState::Suspended, None)]
    );

    // Releasing a quarantined agent clears its snapshot: the view learns that too.
    let beta = store.agent(&name("beta")).await.unwrap().unwrap();
    let quarantined = changed(&beta, LifecycleState::Quarantined);
    store
        .update_agent(&quarantined, beta.revision, &event(action::AGENT_UPDATE))
        .await
        .unwrap();
    let released = changed(&quarantined, active);
    store
        .update_agent(
            &released,
            quarantined.revision,
            &event(action::AGENT_UPDATE),
        )
        .await
        .unwrap();
    let (seen, cursor) = changes_after(store, &cursor, 100).await;
    assert_eq!(
        seen,
        [("beta".to_owned(), active, None)],
        "one entry, as it stands now"
    );
    let (none, _) = changes_after(store, &cursor, 100).await;
    assert!(none.is_empty(), "{none:?}");
}
