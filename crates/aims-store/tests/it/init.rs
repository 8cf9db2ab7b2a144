//! Initialization, health and persistence across a reopen.

use aims_core::audit::action;
use aims_core::credential::CredentialHash;
use aims_store::{KeyState, StoreError};

use crate::fixtures::{
    ADMIN_CREDENTIAL, AuditCursor, agent, assert_chain_verifies, at, event, initialization,
    initialize, join_token, name,
};
use crate::harness::Harness;

pub async fn initializes_once(h: &Harness) {
    let store = &*h.store;
    assert_eq!(store.trust_domain().await.unwrap(), None);
    assert_eq!(store.keys().await.unwrap().sequence, 0);
    let mut audit = AuditCursor::new(store).await;

    initialize(store).await;
    audit.one(store, action::TRUST_DOMAIN_CREATE).await;

    let init = initialization();
    assert_eq!(
        store.trust_domain().await.unwrap(),
        Some(init.trust_domain.clone())
    );
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.sequence, 1);
    assert_eq!(keys.keys, init.keys);
    assert_eq!(
        store.list_users().await.unwrap(),
        std::slice::from_ref(&init.admin)
    );
    assert_eq!(
        store
            .user_by_credential(&CredentialHash::of(ADMIN_CREDENTIAL))
            .await
            .unwrap(),
        Some(init.admin.clone())
    );

    let mut again = initialization();
    again.trust_domain = "other.example".parse().unwrap();
    again.keys = vec![crate::fixtures::key("k9", KeyState::Current)];
    let err = store
        .initialize(&again, &event(action::TRUST_DOMAIN_CREATE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    audit.none(store).await;
    assert_eq!(store.trust_domain().await.unwrap(), Some(init.trust_domain));
    assert_eq!(store.keys().await.unwrap().keys, init.keys);
}

pub async fn ping_answers(h: &Harness) {
    h.store.ping().await.unwrap();
    initialize(&*h.store).await;
    h.store.ping().await.unwrap();
    // A ping writes nothing.
    assert_eq!(h.store.audit_head().await.unwrap().seq, 1);
}

pub async fn data_survives_reopen(h: &Harness) {
    let store = &*h.store;
    initialize(store).await;
    let coder = agent("coder", "alice@acme.example", "prod");
    store
        .create_agent(
            &coder,
            &join_token("coder", "secret", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
    store
        .append_audit(&[event(action::READ), event(action::REJECT)])
        .await
        .unwrap();
    let records = assert_chain_verifies(store).await;

    let reopened = h.reopen().await;
    let reopened = &*reopened;
    assert_eq!(
        reopened.trust_domain().await.unwrap(),
        Some(initialization().trust_domain)
    );
    assert_eq!(reopened.agent(&name("coder")).await.unwrap(), Some(coder));
    assert_eq!(reopened.keys().await.unwrap(), store.keys().await.unwrap());
    assert_eq!(
        reopened.list_users().await.unwrap(),
        [initialization().admin]
    );
    assert_eq!(assert_chain_verifies(reopened).await, records);
    // The reopened store continues the same chain.
    reopened.append_audit(&[event(action::READ)]).await.unwrap();
    assert_eq!(
        assert_chain_verifies(reopened).await.len(),
        records.len() + 1
    );
}
