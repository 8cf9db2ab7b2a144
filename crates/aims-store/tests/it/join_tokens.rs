//! One-time join tokens: at most one use, expiry, replacement.

use std::sync::Arc;

use aims_core::audit::action;
use aims_core::credential::CredentialHash;
use aims_store::{JoinTokenUse, StoreError};

use crate::fixtures::{AuditCursor, agent, at, event, join_token, name};
use crate::harness::Harness;

async fn register(h: &Harness, agent_name: &str, secret: &str, expires_in: i64) {
    h.store
        .create_agent(
            &agent(agent_name, "alice@acme.example", "prod"),
            &join_token(agent_name, secret, at(expires_in)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
}

pub async fn join_token_is_consumed_once(h: &Harness) {
    let store = &*h.store;
    register(h, "coder", "t1", 3600).await;
    let audit = AuditCursor::new(store).await;
    let t1 = CredentialHash::of("t1");
    assert_eq!(
        store
            .consume_join_token(&t1, "jkt-a", at(10))
            .await
            .unwrap(),
        JoinTokenUse::Consumed(name("coder"))
    );
    assert_eq!(
        store
            .consume_join_token(&t1, "jkt-b", at(11))
            .await
            .unwrap(),
        JoinTokenUse::AlreadyUsed(name("coder"))
    );
    // The key it is bound to may retry (a lost answer must not lock the agent out)...
    assert_eq!(
        store
            .consume_join_token(&t1, "jkt-a", at(12))
            .await
            .unwrap(),
        JoinTokenUse::Consumed(name("coder"))
    );
    // ...until it expires; after that even the bound key is refused.
    assert_eq!(
        store
            .consume_join_token(&t1, "jkt-a", at(7200))
            .await
            .unwrap(),
        JoinTokenUse::AlreadyUsed(name("coder"))
    );
    // Consuming is recorded by the caller, not the store.
    audit.none(store).await;
}

pub async fn join_token_is_consumed_once_under_concurrency(h: &Harness) {
    register(h, "coder", "race", 3600).await;
    // Eight different keys race for one token.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                store
                    .consume_join_token(&CredentialHash::of("race"), &format!("jkt-{i}"), at(10))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let consumed = outcomes
        .iter()
        .filter(|o| **o == JoinTokenUse::Consumed(name("coder")))
        .count();
    let used = outcomes
        .iter()
        .filter(|o| **o == JoinTokenUse::AlreadyUsed(name("coder")))
        .count();
    assert_eq!((consumed, used), (1, 7), "{outcomes:?}");
}

pub async fn expired_and_unknown_join_tokens(h: &Harness) {
    let store = &*h.store;
    register(h, "coder", "short", 60).await;
    let short = CredentialHash::of("short");
    // Expiry is exclusive: at the expiry instant the token no longer works.
    assert_eq!(
        store
            .consume_join_token(&short, "jkt-a", at(60))
            .await
            .unwrap(),
        JoinTokenUse::Expired(name("coder"))
    );
    assert_eq!(
        store
            .consume_join_token(&short, "jkt-a", at(61))
            .await
            .unwrap(),
        JoinTokenUse::Expired(name("coder"))
    );
    assert_eq!(
        store
            .consume_join_token(&CredentialHash::of("never issued"), "jkt-a", at(0))
            .await
            .unwrap(),
        JoinTokenUse::Unknown
    );
}

pub async fn replaced_join_token_stops_working(h: &Harness) {
    let store = &*h.store;
    register(h, "coder", "old", 3600).await;
    let mut audit = AuditCursor::new(store).await;
    store
        .replace_join_token(
            &join_token("coder", "new", at(7200)),
            &event(action::AGENT_JOIN_TOKEN),
        )
        .await
        .unwrap();
    audit.one(store, action::AGENT_JOIN_TOKEN).await;
    let old = store
        .consume_join_token(&CredentialHash::of("old"), "jkt-a", at(10))
        .await
        .unwrap();
    assert!(
        !matches!(old, JoinTokenUse::Consumed(_)),
        "a replaced token still worked: {old:?}"
    );
    assert_eq!(
        store
            .consume_join_token(&CredentialHash::of("new"), "jkt-a", at(10))
            .await
            .unwrap(),
        JoinTokenUse::Consumed(name("coder"))
    );

    // A used token is history; replacing again keeps it used and issues a fresh one.
    store
        .replace_join_token(
            &join_token("coder", "newer", at(7200)),
            &event(action::AGENT_JOIN_TOKEN),
        )
        .await
        .unwrap();
    audit.one(store, action::AGENT_JOIN_TOKEN).await;
    assert_eq!(
        store
            .consume_join_token(&CredentialHash::of("new"), "jkt-b", at(11))
            .await
            .unwrap(),
        JoinTokenUse::AlreadyUsed(name("coder"))
    );

    let err = store
        .replace_join_token(
            &join_token("ghost", "ghost", at(7200)),
            &event(action::AGENT_JOIN_TOKEN),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    audit.none(store).await;
    assert_eq!(
        store
            .consume_join_token(&CredentialHash::of("ghost"), "jkt-a", at(10))
            .await
            .unwrap(),
        JoinTokenUse::Unknown
    );
}
