//! Versioned policy sets: versions without gaps, one push wins a race, content round-trips.

use std::sync::Arc;

use aims_store::{PolicySetVersion, StoreError};

use crate::fixtures::{AuditCursor, at, event};
use crate::harness::Harness;

fn set(version: u64, text: &str) -> PolicySetVersion {
    PolicySetVersion {
        version,
        files: [("main.cedar".to_owned(), text.to_owned())].into(),
        created_by: "admin".to_owned(),
        created_at: at(i64::try_from(version).unwrap()),
    }
}

pub async fn policy_versions_follow_each_other(h: &Harness) {
    let store = &*h.store;
    assert_eq!(store.active_policy_version().await.unwrap(), 0);
    let mut audit = AuditCursor::new(store).await;
    store
        .activate_policy_set(
            &set(1, "permit(principal, action, resource);"),
            &event("policy.activate"),
        )
        .await
        .unwrap();
    audit.one(store, "policy.activate").await;
    store
        .activate_policy_set(
            &set(2, "forbid(principal, action, resource);"),
            &event("policy.activate"),
        )
        .await
        .unwrap();
    assert_eq!(store.active_policy_version().await.unwrap(), 2);
    assert_eq!(
        store.policy_set(1).await.unwrap(),
        Some(set(1, "permit(principal, action, resource);"))
    );
    assert_eq!(store.policy_set(9).await.unwrap(), None);
    let listed: Vec<u64> = store
        .policy_versions(10)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(listed, [2, 1], "newest first");
    assert_eq!(store.policy_versions(1).await.unwrap().len(), 1);

    // Skipping or repeating a number is a conflict, and changes nothing.
    for version in [2, 4] {
        let err = store
            .activate_policy_set(&set(version, "x"), &event("policy.activate"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    }
    audit.one(store, "policy.activate").await;
    audit.none(store).await;
}

pub async fn concurrent_pushes_take_one_version(h: &Harness) {
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                store
                    .activate_policy_set(&set(1, &format!("v{i}")), &event("policy.activate"))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(h.store.active_policy_version().await.unwrap(), 1);
}
