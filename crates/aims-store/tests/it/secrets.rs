//! Brokered secrets: stored sealed, versioned by rotation (a lost race changes nothing),
//! read back as the current version only, deleted with every version.

use aims_core::audit::action;
use aims_core::id::{ResourceServerName, SecretName, UserName};
use aims_core::secret::Secret;
use aims_store::StoreError;

use crate::fixtures::{AuditCursor, at, event};
use crate::harness::Harness;

fn secret(version: u32, rotated: i64) -> Secret {
    Secret {
        name: SecretName::new("github-token").unwrap(),
        version,
        description: Some("the repository's deploy token".into()),
        readers: vec![ResourceServerName::new("gateway").unwrap()],
        rotation_period_s: Some(86_400),
        created_by: UserName::new("admin").unwrap(),
        created_at: at(0),
        rotated_at: at(rotated),
    }
}

pub async fn secrets_are_versioned_and_read_current(h: &Harness) {
    let store = &*h.store;
    let name = SecretName::new("github-token").unwrap();
    let mut audit = AuditCursor::new(store).await;
    store
        .create_secret(&secret(1, 0), b"sealed-1", &event(action::SECRET_PUT))
        .await
        .unwrap();
    audit.one(store, action::SECRET_PUT).await;
    let again = store
        .create_secret(&secret(1, 5), b"sealed-x", &event(action::SECRET_PUT))
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    audit.none(store).await;
    assert_eq!(store.secret(&name).await.unwrap(), Some(secret(1, 0)));
    assert_eq!(
        store.secret_value(&name).await.unwrap(),
        Some((secret(1, 0), b"sealed-1".to_vec()))
    );

    store
        .rotate_secret(&secret(2, 10), b"sealed-2", &event(action::SECRET_ROTATE))
        .await
        .unwrap();
    audit.one(store, action::SECRET_ROTATE).await;
    assert_eq!(
        store.secret_value(&name).await.unwrap(),
        Some((secret(2, 10), b"sealed-2".to_vec()))
    );
    // A rotation from a stale version loses the race and changes nothing.
    let stale = store
        .rotate_secret(
            &secret(2, 20),
            b"sealed-stale",
            &event(action::SECRET_ROTATE),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let unknown = store
        .rotate_secret(
            &Secret {
                name: SecretName::new("nope").unwrap(),
                ..secret(2, 20)
            },
            b"x",
            &event(action::SECRET_ROTATE),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );
    audit.none(store).await;
    assert_eq!(store.list_secrets(10).await.unwrap(), vec![secret(2, 10)]);

    store
        .delete_secret(&name, &event(action::SECRET_DELETE))
        .await
        .unwrap();
    audit.one(store, action::SECRET_DELETE).await;
    assert_eq!(store.secret_value(&name).await.unwrap(), None);
    assert!(store.list_secrets(10).await.unwrap().is_empty());
    let twice = store
        .delete_secret(&name, &event(action::SECRET_DELETE))
        .await;
    assert!(
        matches!(twice, Err(StoreError::NotFound { .. })),
        "{twice:?}"
    );
    // The name may be used again, from version 1.
    store
        .create_secret(&secret(1, 30), b"sealed-new", &event(action::SECRET_PUT))
        .await
        .unwrap();
}
