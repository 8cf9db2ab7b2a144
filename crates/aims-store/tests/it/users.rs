//! Human principals: creation, lookup by credential, rotation, removal.

use aims_core::audit::action;
use aims_core::credential::CredentialHash;
use aims_core::id::UserName;
use aims_core::user::Role;
use aims_store::StoreError;

use crate::fixtures::{ADMIN_CREDENTIAL, AuditCursor, at, event, initialize, user};
use crate::harness::Harness;

fn user_name(value: &str) -> UserName {
    UserName::new(value).unwrap()
}

pub async fn users_are_found_by_credential(h: &Harness) {
    let store = &*h.store;
    initialize(store).await;
    let mut audit = AuditCursor::new(store).await;
    let alice = user("alice", Role::Approver);
    store
        .create_user(
            &alice,
            &CredentialHash::of("alice-cred"),
            &event(action::USER_ADD),
        )
        .await
        .unwrap();
    audit.one(store, action::USER_ADD).await;
    assert_eq!(
        store
            .user_by_credential(&CredentialHash::of("alice-cred"))
            .await
            .unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store
            .user_by_credential(&CredentialHash::of("nobody"))
            .await
            .unwrap(),
        None
    );

    // Same name, or someone else's credential: refused.
    let err = store
        .create_user(
            &user("alice", Role::Auditor),
            &CredentialHash::of("fresh"),
            &event(action::USER_ADD),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .create_user(
            &user("mallory", Role::Admin),
            &CredentialHash::of("alice-cred"),
            &event(action::USER_ADD),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    audit.none(store).await;

    let auditor = user("audra", Role::Auditor);
    store
        .create_user(
            &auditor,
            &CredentialHash::of("audra-cred"),
            &event(action::USER_ADD),
        )
        .await
        .unwrap();
    audit.one(store, action::USER_ADD).await;
    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name.to_string())
        .collect();
    assert_eq!(names, ["alice", "audra", "root"]);
}

pub async fn user_credential_rotation(h: &Harness) {
    let store = &*h.store;
    initialize(store).await;
    let alice = user("alice", Role::Approver);
    store
        .create_user(&alice, &CredentialHash::of("old"), &event(action::USER_ADD))
        .await
        .unwrap();
    let mut audit = AuditCursor::new(store).await;

    store
        .rotate_user_credential(
            &user_name("alice"),
            &CredentialHash::of("new"),
            at(500),
            &event(action::USER_ROTATE),
        )
        .await
        .unwrap();
    audit.one(store, action::USER_ROTATE).await;
    assert_eq!(
        store
            .user_by_credential(&CredentialHash::of("old"))
            .await
            .unwrap(),
        None
    );
    let rotated = store
        .user_by_credential(&CredentialHash::of("new"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.credential_rotated_at, at(500));
    assert_eq!(rotated.created_at, alice.created_at);

    let err = store
        .rotate_user_credential(
            &user_name("ghost"),
            &CredentialHash::of("ghost"),
            at(500),
            &event(action::USER_ROTATE),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    // Taking over another user's credential is refused.
    let err = store
        .rotate_user_credential(
            &user_name("alice"),
            &CredentialHash::of(ADMIN_CREDENTIAL),
            at(501),
            &event(action::USER_ROTATE),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    audit.none(store).await;
    assert_eq!(
        store
            .user_by_credential(&CredentialHash::of("new"))
            .await
            .unwrap()
            .map(|u| u.name),
        Some(user_name("alice"))
    );
}

pub async fn removal_keeps_an_admin(h: &Harness) {
    let store = &*h.store;
    initialize(store).await;
    store
        .create_user(
            &user("alice", Role::Approver),
            &CredentialHash::of("alice-cred"),
            &event(action::USER_ADD),
        )
        .await
        .unwrap();
    let mut audit = AuditCursor::new(store).await;

    let err = store
        .remove_user(&user_name("root"), &event(action::USER_REMOVE))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                reason: "cannot remove the last admin"
            }
        ),
        "{err}"
    );
    let err = store
        .remove_user(&user_name("ghost"), &event(action::USER_REMOVE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    audit.none(store).await;

    store
        .remove_user(&user_name("alice"), &event(action::USER_REMOVE))
        .await
        .unwrap();
    audit.one(store, action::USER_REMOVE).await;
    assert_eq!(
        store
            .user_by_credential(&CredentialHash::of("alice-cred"))
            .await
            .unwrap(),
        None
    );

    store
        .create_user(
            &user("root2", Role::Admin),
            &CredentialHash::of("root2-cred"),
            &event(action::USER_ADD),
        )
        .await
        .unwrap();
    audit.one(store, action::USER_ADD).await;
    store
        .remove_user(&user_name("root"), &event(action::USER_REMOVE))
        .await
        .unwrap();
    audit.one(store, action::USER_REMOVE).await;
    let err = store
        .remove_user(&user_name("root2"), &event(action::USER_REMOVE))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                reason: "cannot remove the last admin"
            }
        ),
        "{err}"
    );
    audit.none(store).await;
    assert_eq!(
        store.list_users().await.unwrap(),
        [user("root2", Role::Admin)]
    );
}
