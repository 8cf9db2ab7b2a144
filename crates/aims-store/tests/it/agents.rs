//! Agent registration, lookup, listing and optimistic updates.

use aims_core::agent::LifecycleState;
use aims_core::audit::action;
use aims_store::{AgentFilter, StoreError};

use crate::fixtures::{AuditCursor, agent, at, changed, event, join_token, name};
use crate::harness::Harness;

pub async fn agents_round_trip(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    let coder = agent("coder", "alice@acme.example", "prod");
    store
        .create_agent(
            &coder,
            &join_token("coder", "t1", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
    audit.one(store, action::AGENT_REGISTER).await;
    assert_eq!(store.agent(&name("coder")).await.unwrap(), Some(coder));
    assert_eq!(store.agent(&name("nobody")).await.unwrap(), None);

    // The first join token must be the new agent's own.
    let err = store
        .create_agent(
            &agent("other", "alice@acme.example", "prod"),
            &join_token("coder", "t2", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(store.agent(&name("other")).await.unwrap(), None);
    audit.none(store).await;
}

pub async fn agent_names_are_never_reused(h: &Harness) {
    let store = &*h.store;
    let first = agent("coder", "alice@acme.example", "prod");
    store
        .create_agent(
            &first,
            &join_token("coder", "t1", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
    let mut audit = AuditCursor::new(store).await;

    let duplicate = agent("coder", "bob@acme.example", "dev");
    let register = || async {
        store
            .create_agent(
                &duplicate,
                &join_token("coder", "t2", at(3600)),
                &event(action::AGENT_REGISTER),
            )
            .await
            .unwrap_err()
    };
    let err = register().await;
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                reason: "agent name already registered"
            }
        ),
        "{err}"
    );
    audit.none(store).await;

    let retired = changed(&first, LifecycleState::Decommissioned);
    store
        .update_agent(&retired, 1, &event(action::AGENT_LIFECYCLE))
        .await
        .unwrap();
    audit.one(store, action::AGENT_LIFECYCLE).await;

    let err = register().await;
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                reason: "agent name already registered"
            }
        ),
        "{err}"
    );
    audit.none(store).await;
    assert_eq!(store.agent(&name("coder")).await.unwrap(), Some(retired));
}

pub async fn agent_listing_filters_and_pages(h: &Harness) {
    let store = &*h.store;
    let specs = [
        ("a1", "alice@acme.example", "dev"),
        ("a2", "bob@acme.example", "prod"),
        ("a3", "alice@acme.example", "prod"),
        ("B0", "carol@acme.example", "dev"),
    ];
    for (n, owner, env) in specs {
        store
            .create_agent(
                &agent(n, owner, env),
                &join_token(n, n, at(3600)),
                &event(action::AGENT_REGISTER),
            )
            .await
            .unwrap();
    }
    let a3 = agent("a3", "alice@acme.example", "prod");
    store
        .update_agent(
            &changed(&a3, LifecycleState::Suspended),
            1,
            &event(action::AGENT_LIFECYCLE),
        )
        .await
        .unwrap();

    let names = |filter: AgentFilter| async move {
        store
            .list_agents(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name.to_string())
            .collect::<Vec<_>>()
    };
    // Byte-wise order: upper case sorts first.
    assert_eq!(
        names(AgentFilter::default()).await,
        ["B0", "a1", "a2", "a3"]
    );
    assert_eq!(
        names(AgentFilter {
            owner: Some("alice@acme.example".parse().unwrap()),
            ..AgentFilter::default()
        })
        .await,
        ["a1", "a3"]
    );
    assert_eq!(
        names(AgentFilter {
            state: Some(LifecycleState::Suspended),
            ..AgentFilter::default()
        })
        .await,
        ["a3"]
    );
    assert_eq!(
        names(AgentFilter {
            state: Some(LifecycleState::Active),
            ..AgentFilter::default()
        })
        .await,
        ["B0", "a1", "a2"]
    );
    assert_eq!(
        names(AgentFilter {
            environment: Some("prod".parse().unwrap()),
            ..AgentFilter::default()
        })
        .await,
        ["a2", "a3"]
    );
    assert_eq!(
        names(AgentFilter {
            owner: Some("alice@acme.example".parse().unwrap()),
            environment: Some("dev".parse().unwrap()),
            ..AgentFilter::default()
        })
        .await,
        ["a1"]
    );
    assert!(
        names(AgentFilter {
            owner: Some("nobody@acme.example".parse().unwrap()),
            ..AgentFilter::default()
        })
        .await
        .is_empty()
    );

    // Pagination: pages of two, each starting after the last name seen.
    let first = names(AgentFilter {
        limit: 2,
        ..AgentFilter::default()
    })
    .await;
    assert_eq!(first, ["B0", "a1"]);
    let second = names(AgentFilter {
        limit: 2,
        after: Some(name(first.last().unwrap())),
        ..AgentFilter::default()
    })
    .await;
    assert_eq!(second, ["a2", "a3"]);
    let third = names(AgentFilter {
        limit: 2,
        after: Some(name("a3")),
        ..AgentFilter::default()
    })
    .await;
    assert!(third.is_empty());
    assert_eq!(
        names(AgentFilter {
            limit: u32::MAX,
            ..AgentFilter::default()
        })
        .await
        .len(),
        4
    );

    // Listed records are the full records.
    let listed = store.list_agents(&AgentFilter::default()).await.unwrap();
    assert_eq!(listed[0], agent("B0", "carol@acme.example", "dev"));
    assert_eq!(listed[3], changed(&a3, LifecycleState::Suspended));
}

pub async fn agent_updates_check_revisions(h: &Harness) {
    let store = &*h.store;
    let v1 = agent("coder", "alice@acme.example", "prod");
    store
        .create_agent(
            &v1,
            &join_token("coder", "t1", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
    let mut audit = AuditCursor::new(store).await;

    let mut v2 = changed(&v1, LifecycleState::Active);
    v2.description = "rewritten".to_owned();
    v2.environment = "staging".parse().unwrap();
    v2.owner = "bob@acme.example".parse().unwrap();
    store
        .update_agent(&v2, 1, &event(action::AGENT_UPDATE))
        .await
        .unwrap();
    audit.one(store, action::AGENT_UPDATE).await;
    assert_eq!(store.agent(&name("coder")).await.unwrap(), Some(v2.clone()));
    // The filter columns follow the record.
    let by_owner = store
        .list_agents(&AgentFilter {
            owner: Some("bob@acme.example".parse().unwrap()),
            environment: Some("staging".parse().unwrap()),
            ..AgentFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_owner, [v2.clone()]);

    // A writer that read revision 1 lost the race.
    let stale = changed(&v1, LifecycleState::Suspended);
    let err = store
        .update_agent(&stale, 1, &event(action::AGENT_LIFECYCLE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

    // The new revision must be exactly one more than the expected one.
    let mut skipping = changed(&v2, LifecycleState::Suspended);
    skipping.revision = 4;
    let err = store
        .update_agent(&skipping, 2, &event(action::AGENT_LIFECYCLE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .update_agent(&v2, 2, &event(action::AGENT_LIFECYCLE))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

    let missing = agent("ghost", "alice@acme.example", "prod");
    let err = store
        .update_agent(
            &changed(&missing, LifecycleState::Suspended),
            1,
            &event(action::AGENT_UPDATE),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    audit.none(store).await;
    assert_eq!(store.agent(&name("coder")).await.unwrap(), Some(v2.clone()));

    let v3 = changed(&v2, LifecycleState::Suspended);
    store
        .update_agent(&v3, 2, &event(action::AGENT_LIFECYCLE))
        .await
        .unwrap();
    audit.one(store, action::AGENT_LIFECYCLE).await;
    assert_eq!(store.agent(&name("coder")).await.unwrap(), Some(v3));
}
