//! Signing key rotation.

use aims_core::audit::action;
use aims_store::{KeyState, StoreError};

use crate::fixtures::{AuditCursor, event, initialize, key};
use crate::harness::Harness;

pub async fn keys_rotate(h: &Harness) {
    let store = &*h.store;
    let err = store
        .rotate_keys(&key("k0", KeyState::Next), &event(action::KEY_ROTATE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

    initialize(store).await;
    let mut audit = AuditCursor::new(store).await;
    let states = || async {
        let set = store.keys().await.unwrap();
        let mut states: Vec<_> = set.keys.iter().map(|k| (k.kid.clone(), k.state)).collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        (states, set.sequence)
    };
    let owned = |pairs: &[(&str, KeyState)]| {
        pairs
            .iter()
            .map(|(kid, state)| ((*kid).to_owned(), *state))
            .collect::<Vec<_>>()
    };

    store
        .rotate_keys(&key("k3", KeyState::Next), &event(action::KEY_ROTATE))
        .await
        .unwrap();
    audit.one(store, action::KEY_ROTATE).await;
    assert_eq!(
        states().await,
        (
            owned(&[
                ("k1", KeyState::Previous),
                ("k2", KeyState::Current),
                ("k3", KeyState::Next)
            ]),
            2
        )
    );

    // Whatever state the caller set, the new key enters as next.
    store
        .rotate_keys(&key("k4", KeyState::Current), &event(action::KEY_ROTATE))
        .await
        .unwrap();
    audit.one(store, action::KEY_ROTATE).await;
    let expected = (
        owned(&[
            ("k1", KeyState::Retired),
            ("k2", KeyState::Previous),
            ("k3", KeyState::Current),
            ("k4", KeyState::Next),
        ]),
        3,
    );
    assert_eq!(states().await, expected);
    // Keys come back whole.
    let stored = store.keys().await.unwrap();
    let k4 = stored.keys.iter().find(|k| k.kid == "k4").unwrap();
    assert_eq!(
        *k4,
        aims_store::StoredKey {
            state: KeyState::Next,
            ..key("k4", KeyState::Next)
        }
    );

    // A kid is never reused, retired ones included.
    for kid in ["k1", "k4"] {
        let err = store
            .rotate_keys(&key(kid, KeyState::Next), &event(action::KEY_ROTATE))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{kid}: {err}");
    }
    audit.none(store).await;
    assert_eq!(states().await, expected);
}
