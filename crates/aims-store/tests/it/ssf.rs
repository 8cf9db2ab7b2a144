//! Shared Signals streams: creation at the log's head with its audit record, ownership and
//! listing, pending entries with their credential kinds, out-of-order acknowledgements that
//! never hide later entries, deletion, exclusive delivery claims, receiver updates that keep
//! the transmitter's fields, statuses (a paused stream keeps its backlog, a disabled one keeps
//! nothing, only an enabled push stream is claimed) and bounded verification queues.

use std::collections::BTreeSet;
use std::sync::Arc;

use aims_core::audit::action;
use aims_core::credential::CredentialHash;
use aims_core::id::{ResourceServerName, UserName};
use aims_core::posture::Evidence;
use aims_core::task::{Task, TaskState};
use aims_store::{
    AccessTokenIssue, AttestationRecord, IssuedCredential, IssuedKind,
    MAX_SSF_STREAMS_PER_RECEIVER, MAX_SSF_VERIFICATIONS_PENDING, PostureSnapshot, ResourceServer,
    RevocationTarget, Revoked, SsfDelivery, SsfReceiver, SsfStatus, SsfStream, Store, StoreError,
};

use crate::fixtures::{AuditCursor, agent, assert_chain_verifies, at, event, join_token, name};
use crate::harness::Harness;

const CREATE: &str = "ssf.stream.create";
/// The audience of the task tokens, and of the `repo-tools` resource server.
const AUDIENCE: &str = "https://tools.acme.example/repo";
const DELETE: &str = "ssf.stream.delete";

fn repo_tools() -> SsfReceiver {
    SsfReceiver::ResourceServer(ResourceServerName::new("repo-tools").unwrap())
}

fn root() -> SsfReceiver {
    SsfReceiver::User(UserName::new("root").unwrap())
}

fn stream(id: &str, receiver: SsfReceiver, delivery: SsfDelivery) -> SsfStream {
    SsfStream {
        id: id.to_owned(),
        receiver,
        audience: "https://tools.acme.example/repo".to_owned(),
        delivery,
        events_requested: vec!["urn:example:unknown".to_owned()],
        events_delivered: vec![
            "https://schemas.openid.net/secevent/caep/event-type/session-revoked".to_owned(),
        ],
        description: Some("revocations for the repo tools".to_owned()),
        created_at: at(5),
        // The store decides where a stream starts.
        acked_through: 12_345,
        status: SsfStatus::Enabled,
        status_reason: None,
    }
}

fn push() -> SsfDelivery {
    SsfDelivery::Push {
        endpoint_url: "https://receiver.example/events".to_owned(),
        sealed_authorization: Some(vec![1, 2, 3, 4]),
    }
}

/// Creates `s` and asserts it appended exactly one record; returns it as stored.
async fn create(store: &dyn Store, audit: &mut AuditCursor, s: &SsfStream) -> SsfStream {
    let stored = store.create_ssf_stream(s, &event(CREATE)).await.unwrap();
    audit.one(store, CREATE).await;
    stored
}

/// Agent `a` with identity `svid-a` and, for task `t1`, access tokens `tok-1` … `tok-n`
/// derived from it.
async fn credentials(store: &dyn Store, tokens: usize) {
    store
        .create_agent(
            &agent("a", "alice@acme.example", "prod"),
            &join_token("a", "a", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
    let evidence = Evidence::default();
    let record = AttestationRecord {
        snapshot: PostureSnapshot {
            agent: name("a"),
            digest: evidence.digest(),
            evidence,
            key_thumbprint: "jkt-a".to_owned(),
            accepted_at: at(10),
        },
        credential: IssuedCredential {
            id: "svid-a".to_owned(),
            kind: IssuedKind::Svid,
            agent: name("a"),
            parent: None,
            key_thumbprint: Some("jkt-a".to_owned()),
            issued_at: at(10),
            expires_at: at(3610),
            revoked_at: None,
            task_id: None,
            audience: None,
        },
    };
    store
        .record_attestation(&record, &event(action::IDENTITY_ISSUE))
        .await
        .unwrap();
    for n in 1..=tokens {
        let new_task = (n == 1).then(|| Task {
            id: aims_core::id::TaskId::new("t1").unwrap(),
            agent: name("a"),
            intent: aims_core::id::Intent::new("work").unwrap(),
            subject: "user:alice".to_owned(),
            state: TaskState::Active,
            created_at: at(20),
            deadline: at(3620),
            ended_at: None,
        });
        let issue = AccessTokenIssue {
            credential: IssuedCredential {
                id: format!("tok-{n}"),
                kind: IssuedKind::AccessToken,
                agent: name("a"),
                parent: Some("svid-a".to_owned()),
                key_thumbprint: Some("jkt-a".to_owned()),
                issued_at: at(20),
                expires_at: at(320),
                revoked_at: None,
                task_id: Some("t1".to_owned()),
                audience: Some(AUDIENCE.to_owned()),
            },
            agent_revision: 1,
            new_task,
            dpop_proof: None,
        };
        store
            .issue_access_token(&issue, &event(action::TOKEN_EXCHANGE))
            .await
            .unwrap();
    }
}

async fn revoke(store: &dyn Store, target: RevocationTarget) -> u64 {
    store
        .revoke(&target, "test", at(30), &event(action::REVOKE))
        .await
        .unwrap()
}

/// The pending entries of `id`: (credential, kind), in log order.
async fn pending(store: &dyn Store, id: &str) -> Vec<(String, IssuedKind)> {
    store
        .ssf_pending(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.revocation.credential().unwrap().to_owned(), p.kind))
        .collect()
}

/// The log positions of the pending entries of `id`.
async fn pending_seqs(store: &dyn Store, id: &str) -> Vec<u64> {
    store
        .ssf_pending(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.revocation.seq)
        .collect()
}

pub async fn ssf_streams_round_trip_from_the_log_head(h: &Harness) {
    let store = &*h.store;
    credentials(store, 1).await;
    assert_eq!(
        revoke(store, RevocationTarget::Credential("tok-1".into())).await,
        1
    );
    let head = store.revocations_since(0, 0, None).await.unwrap()[0].seq;
    let mut audit = AuditCursor::new(store).await;

    let poll = stream("s-poll", repo_tools(), SsfDelivery::Poll);
    let stored = create(store, &mut audit, &poll).await;
    assert_eq!(
        stored.acked_through, head,
        "a stream starts at the log's head"
    );
    assert_eq!(
        stored,
        SsfStream {
            acked_through: head,
            ..poll.clone()
        }
    );
    assert_eq!(
        store.ssf_stream("s-poll").await.unwrap(),
        Some(stored.clone())
    );
    assert!(pending(store, "s-poll").await.is_empty(), "no backlog");

    let pushed = create(store, &mut audit, &stream("s-push", root(), push())).await;
    assert_eq!(
        store.ssf_stream("s-push").await.unwrap(),
        Some(pushed.clone())
    );
    let unsealed = SsfStream {
        delivery: SsfDelivery::Push {
            endpoint_url: "http://127.0.0.1:9/events".to_owned(),
            sealed_authorization: None,
        },
        description: None,
        events_requested: Vec::new(),
        ..stream("s-push-2", root(), SsfDelivery::Poll)
    };
    let unsealed = create(store, &mut audit, &unsealed).await;
    assert_eq!(store.ssf_stream("s-push-2").await.unwrap(), Some(unsealed));

    // Each receiver lists its own; without a receiver, everything pages by id.
    let ids = |streams: Vec<SsfStream>| streams.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .list_ssf_streams(Some(&repo_tools()), "", 0)
            .await
            .unwrap()),
        ["s-poll"]
    );
    assert_eq!(
        ids(store.list_ssf_streams(Some(&root()), "", 0).await.unwrap()),
        ["s-push", "s-push-2"]
    );
    let stranger = SsfReceiver::ResourceServer(ResourceServerName::new("other").unwrap());
    assert!(
        store
            .list_ssf_streams(Some(&stranger), "", 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store.list_ssf_streams(None, "", 2).await.unwrap()),
        ["s-poll", "s-push"]
    );
    assert_eq!(
        ids(store.list_ssf_streams(None, "s-push", 2).await.unwrap()),
        ["s-push-2"]
    );

    // A duplicate id changes nothing.
    let again = store
        .create_ssf_stream(&stream("s-poll", root(), SsfDelivery::Poll), &event(CREATE))
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    audit.none(store).await;

    store
        .delete_ssf_stream("s-poll", &event(DELETE))
        .await
        .unwrap();
    audit.one(store, DELETE).await;
    assert_eq!(store.ssf_stream("s-poll").await.unwrap(), None);
    let gone = store.delete_ssf_stream("s-poll", &event(DELETE)).await;
    assert!(matches!(gone, Err(StoreError::NotFound { .. })), "{gone:?}");
    audit.none(store).await;

    // Streams are durable.
    let reopened = h.reopen().await;
    assert_eq!(reopened.ssf_stream("s-push").await.unwrap(), Some(pushed));
    assert_chain_verifies(store).await;
}

pub async fn ssf_streams_per_receiver_are_bounded(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    for n in 0..MAX_SSF_STREAMS_PER_RECEIVER {
        create(
            store,
            &mut audit,
            &stream(&format!("s-{n:02}"), repo_tools(), SsfDelivery::Poll),
        )
        .await;
    }
    let one_more = store
        .create_ssf_stream(
            &stream("s-more", repo_tools(), SsfDelivery::Poll),
            &event(CREATE),
        )
        .await;
    assert!(
        matches!(one_more, Err(StoreError::Conflict { .. })),
        "{one_more:?}"
    );
    audit.none(store).await;
    // Another receiver is not affected; a deletion frees a place.
    create(
        store,
        &mut audit,
        &stream("s-root", root(), SsfDelivery::Poll),
    )
    .await;
    store
        .delete_ssf_stream("s-00", &event(DELETE))
        .await
        .unwrap();
    audit.one(store, DELETE).await;
    create(
        store,
        &mut audit,
        &stream("s-more", repo_tools(), SsfDelivery::Poll),
    )
    .await;
}

pub async fn ssf_acknowledgements_hide_only_what_was_delivered(h: &Harness) {
    let store = &*h.store;
    credentials(store, 3).await;
    let mut audit = AuditCursor::new(store).await;
    // An operator's stream: it carries every revoked credential.
    create(store, &mut audit, &stream("s", root(), SsfDelivery::Poll)).await;

    // The identity and every token derived from it, in log order, with their kinds.
    assert_eq!(revoke(store, RevocationTarget::Agent(name("a"))).await, 4);
    assert_eq!(
        pending(store, "s").await,
        [
            ("svid-a".to_owned(), IssuedKind::Svid),
            ("tok-1".to_owned(), IssuedKind::AccessToken),
            ("tok-2".to_owned(), IssuedKind::AccessToken),
            ("tok-3".to_owned(), IssuedKind::AccessToken),
        ]
    );
    let seqs = pending_seqs(store, "s").await;
    assert_eq!(store.ssf_pending("s", 2).await.unwrap().len(), 2);
    let records = store.audit_head().await.unwrap();

    // Out of order: the second and fourth; the first and third stay pending.
    store
        .acknowledge_ssf("s", &[seqs[3], seqs[1]])
        .await
        .unwrap();
    assert_eq!(pending_seqs(store, "s").await, [seqs[0], seqs[2]]);
    // Repeats, positions the log does not hold yet, and positions beyond any are ignored:
    // an acknowledgement never hides an entry written later.
    let future = store
        .revocations_since(0, 0, None)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq
        + 1;
    store
        .acknowledge_ssf("s", &[seqs[1], future, future + 1, u64::MAX])
        .await
        .unwrap();
    assert_eq!(pending_seqs(store, "s").await, [seqs[0], seqs[2]]);
    store.acknowledge_ssf("s", &[seqs[0]]).await.unwrap();
    assert_eq!(pending_seqs(store, "s").await, [seqs[2]]);
    assert_eq!(
        store.ssf_stream("s").await.unwrap().unwrap().acked_through,
        seqs[1],
        "the position moves up to the first unacknowledged entry"
    );
    store.acknowledge_ssf("s", &[seqs[2]]).await.unwrap();
    assert!(pending(store, "s").await.is_empty());
    assert_eq!(
        store.ssf_stream("s").await.unwrap().unwrap().acked_through,
        seqs[3]
    );
    // Acknowledging is bookkeeping: no audit record.
    assert_eq!(store.audit_head().await.unwrap(), records);

    // A later revocation is pending, even though its position was acknowledged in advance.
    store
        .create_agent(
            &agent("b", "bob@acme.example", "prod"),
            &join_token("b", "b", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
    let later = store.revocations_since(0, 0, None).await.unwrap();
    assert_eq!(later.iter().filter(|r| r.credential().is_some()).count(), 4);
    credentials_for_b(store).await;
    assert_eq!(revoke(store, RevocationTarget::Agent(name("b"))).await, 1);
    assert_eq!(
        pending(store, "s").await,
        [("svid-b".to_owned(), IssuedKind::Svid)]
    );

    // Another stream has its own position; acknowledgements do not cross streams.
    let mut audit = AuditCursor::new(store).await;
    create(store, &mut audit, &stream("t", root(), SsfDelivery::Poll)).await;
    let s_pending = pending_seqs(store, "s").await;
    store.acknowledge_ssf("t", &s_pending).await.unwrap();
    assert_eq!(pending_seqs(store, "s").await, s_pending);

    // Positions and acknowledgements are durable; deleting a stream takes its
    // acknowledgements with it.
    let reopened = h.reopen().await;
    assert_eq!(pending_seqs(&*reopened, "s").await, s_pending);
    store.acknowledge_ssf("s", &[u64::MAX - 1]).await.unwrap();
    store.delete_ssf_stream("s", &event(DELETE)).await.unwrap();
    audit.one(store, DELETE).await;
    assert!(pending(store, "s").await.is_empty());
    let unknown = store.acknowledge_ssf("s", &[1]).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound { .. })),
        "{unknown:?}"
    );
    assert_chain_verifies(store).await;
}

/// Agent `b`'s identity `svid-b`.
async fn credentials_for_b(store: &dyn Store) {
    let evidence = Evidence::default();
    let record = AttestationRecord {
        snapshot: PostureSnapshot {
            agent: name("b"),
            digest: evidence.digest(),
            evidence,
            key_thumbprint: "jkt-b".to_owned(),
            accepted_at: at(10),
        },
        credential: IssuedCredential {
            id: "svid-b".to_owned(),
            kind: IssuedKind::Svid,
            agent: name("b"),
            parent: None,
            key_thumbprint: Some("jkt-b".to_owned()),
            issued_at: at(10),
            expires_at: at(3610),
            revoked_at: None,
            task_id: None,
            audience: None,
        },
    };
    store
        .record_attestation(&record, &event(action::IDENTITY_ISSUE))
        .await
        .unwrap();
}

/// A resource server's stream carries the revocations of credentials for its audience only:
/// not the agent's identity, not other resource servers' tokens, and no epoch entries; the
/// entries it does not carry count as delivered, so its position moves past them.
pub async fn ssf_streams_of_a_resource_server_carry_only_its_audience(h: &Harness) {
    let store = &*h.store;
    credentials(store, 2).await;
    for (rs, audience) in [("repo-tools", AUDIENCE), ("other", "https://other.example")] {
        store
            .create_resource_server(
                &ResourceServer {
                    name: ResourceServerName::new(rs).unwrap(),
                    audience: audience.to_owned(),
                    system: "github".to_owned(),
                    environment: "prod".parse().unwrap(),
                    sensitivity: "internal".to_owned(),
                    created_by: "root".to_owned(),
                    created_at: at(1),
                },
                &CredentialHash::of(rs),
                &event(action::RESOURCE_SERVER_ADD),
            )
            .await
            .unwrap();
    }
    let mut audit = AuditCursor::new(store).await;
    create(
        store,
        &mut audit,
        &stream("mine", repo_tools(), SsfDelivery::Poll),
    )
    .await;
    let other = SsfReceiver::ResourceServer(ResourceServerName::new("other").unwrap());
    create(
        store,
        &mut audit,
        &stream("theirs", other, SsfDelivery::Poll),
    )
    .await;

    assert_eq!(revoke(store, RevocationTarget::Agent(name("a"))).await, 3);
    assert_eq!(
        pending(store, "mine").await,
        [
            ("tok-1".to_owned(), IssuedKind::AccessToken),
            ("tok-2".to_owned(), IssuedKind::AccessToken),
        ]
    );
    assert!(pending(store, "theirs").await.is_empty());
    // The feed of the resource server's audience: its tokens and the agent's epoch for it.
    let feed = store.revocations_since(0, 0, Some(AUDIENCE)).await.unwrap();
    assert!(feed.iter().all(|r| r.audience.as_deref() == Some(AUDIENCE)));
    assert_eq!(
        feed.iter()
            .filter_map(|r| r.credential())
            .collect::<Vec<_>>(),
        ["tok-1", "tok-2"]
    );
    assert_eq!(
        feed.iter().filter(|r| r.revoked == Revoked::Agent).count(),
        1
    );
    assert!(
        store
            .revocations_since(0, 0, Some("https://other.example"))
            .await
            .unwrap()
            .is_empty()
    );

    let seqs = pending_seqs(store, "mine").await;
    store.acknowledge_ssf("mine", &seqs).await.unwrap();
    let head = store
        .revocations_since(0, 0, None)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    assert!(pending(store, "mine").await.is_empty());
    assert!(
        store
            .ssf_stream("mine")
            .await
            .unwrap()
            .unwrap()
            .acked_through
            >= seqs[1],
        "the position passes what the stream does not carry"
    );
    assert!(head > seqs[1], "epoch entries follow the credentials");
}

pub async fn ssf_delivery_claims_are_exclusive(h: &Harness) {
    let store = &*h.store;
    let mut audit = AuditCursor::new(store).await;
    create(store, &mut audit, &stream("p", repo_tools(), push())).await;
    create(
        store,
        &mut audit,
        &stream("q", repo_tools(), SsfDelivery::Poll),
    )
    .await;

    assert!(
        store
            .claim_ssf_stream("p", "r1", at(0), at(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_ssf_stream("p", "r2", at(10), at(40))
            .await
            .unwrap()
    );
    // The holder renews; once its claim lapses, another replica takes over.
    assert!(
        store
            .claim_ssf_stream("p", "r1", at(20), at(50))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_ssf_stream("p", "r2", at(49), at(79))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_ssf_stream("p", "r2", at(50), at(80))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_ssf_stream("p", "r1", at(60), at(90))
            .await
            .unwrap()
    );
    // Poll streams and unknown streams are never claimed.
    assert!(
        !store
            .claim_ssf_stream("q", "r1", at(0), at(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_ssf_stream("nope", "r1", at(0), at(30))
            .await
            .unwrap()
    );

    // Of concurrent claimants (on several stores where the backend allows), exactly one wins.
    let stores: Vec<Arc<dyn Store>> = if h.shares_writers() {
        vec![h.store.clone(), h.reopen().await, h.reopen().await]
    } else {
        vec![h.store.clone()]
    };
    let claims = (0..12).map(|n| {
        let store = stores[n % stores.len()].clone();
        tokio::spawn(async move {
            store
                .claim_ssf_stream("p", &format!("c{n}"), at(1000), at(1030))
                .await
                .unwrap()
                .then_some(n)
        })
    });
    let mut winners = BTreeSet::new();
    for claim in claims {
        if let Some(n) = claim.await.unwrap() {
            winners.insert(n);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
}

const UPDATE: &str = "ssf.stream.update";
const STATUS: &str = "ssf.stream.status";
const VERIFY: &str = "ssf.stream.verify";

/// The states of the verification events `id` has queued, oldest first.
async fn verifications(store: &dyn Store, id: &str) -> Vec<Option<String>> {
    store
        .ssf_verifications(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.state)
        .collect()
}

pub async fn ssf_updates_keep_what_the_transmitter_set(h: &Harness) {
    let store = &*h.store;
    credentials(store, 1).await;
    let mut audit = AuditCursor::new(store).await;
    let stored = create(store, &mut audit, &stream("s", root(), SsfDelivery::Poll)).await;
    revoke(store, RevocationTarget::Credential("tok-1".into())).await;
    audit = AuditCursor::new(store).await;

    // The receiver's fields change; owner, audience, creation, position and status do not,
    // whatever the caller passes for them.
    let asked = SsfStream {
        receiver: repo_tools(),
        audience: "urn:example:other".to_owned(),
        delivery: push(),
        events_requested: Vec::new(),
        events_delivered: vec!["urn:example:delivered".to_owned()],
        description: None,
        created_at: at(999),
        acked_through: 0,
        status: SsfStatus::Disabled,
        status_reason: Some("ignored".to_owned()),
        ..stored.clone()
    };
    let updated = store
        .update_ssf_stream(&asked, &event(UPDATE))
        .await
        .unwrap();
    audit.one(store, UPDATE).await;
    let expected = SsfStream {
        delivery: push(),
        events_requested: Vec::new(),
        events_delivered: vec!["urn:example:delivered".to_owned()],
        description: None,
        ..stored.clone()
    };
    assert_eq!(updated, expected);
    assert_eq!(store.ssf_stream("s").await.unwrap(), Some(expected));
    assert_eq!(pending(store, "s").await.len(), 1, "the backlog stays");

    // An unknown stream changes nothing.
    let unknown = SsfStream {
        id: "nope".to_owned(),
        ..stored.clone()
    };
    let refused = store.update_ssf_stream(&unknown, &event(UPDATE)).await;
    assert!(
        matches!(refused, Err(StoreError::NotFound { .. })),
        "{refused:?}"
    );
    let refused = store
        .set_ssf_status("nope", SsfStatus::Paused, None, &event(STATUS))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound { .. })),
        "{refused:?}"
    );
    let refused = store
        .queue_ssf_verification("nope", None, at(40), &event(VERIFY))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound { .. })),
        "{refused:?}"
    );
    audit.none(store).await;
    assert!(store.ssf_stream("nope").await.unwrap().is_none());
}

pub async fn ssf_statuses_hold_or_drop_what_waits(h: &Harness) {
    let store = &*h.store;
    credentials(store, 4).await;
    let mut audit = AuditCursor::new(store).await;
    create(store, &mut audit, &stream("s", root(), SsfDelivery::Poll)).await;
    create(store, &mut audit, &stream("p", root(), push())).await;
    revoke(store, RevocationTarget::Credential("tok-1".into())).await;
    audit = AuditCursor::new(store).await;

    // Paused: the backlog and queued verifications wait.
    store
        .queue_ssf_verification("s", Some("first"), at(40), &event(VERIFY))
        .await
        .unwrap();
    audit.one(store, VERIFY).await;
    let paused = store
        .set_ssf_status("s", SsfStatus::Paused, Some("maintenance"), &event(STATUS))
        .await
        .unwrap();
    audit.one(store, STATUS).await;
    assert_eq!(
        (paused.status, paused.status_reason.as_deref()),
        (SsfStatus::Paused, Some("maintenance"))
    );
    revoke(store, RevocationTarget::Credential("tok-2".into())).await;
    store
        .queue_ssf_verification("s", None, at(41), &event(VERIFY))
        .await
        .unwrap();
    let tok = |n: &str| (n.to_owned(), IssuedKind::AccessToken);
    assert_eq!(pending(store, "s").await, [tok("tok-1"), tok("tok-2")]);
    assert_eq!(
        verifications(store, "s").await,
        [Some("first".to_owned()), None]
    );
    let enabled = store
        .set_ssf_status("s", SsfStatus::Enabled, None, &event(STATUS))
        .await
        .unwrap();
    assert_eq!(
        (enabled.status, enabled.status_reason),
        (SsfStatus::Enabled, None)
    );
    assert_eq!(pending(store, "s").await, [tok("tok-1"), tok("tok-2")]);

    // Acknowledged verifications go; another stream's positions are ignored.
    let queued = store.ssf_verifications("s", 0).await.unwrap();
    store
        .acknowledge_ssf_verifications("p", &[queued[0].seq])
        .await
        .unwrap();
    store
        .acknowledge_ssf_verifications("s", &[queued[0].seq, u64::MAX])
        .await
        .unwrap();
    assert_eq!(verifications(store, "s").await, [None]);

    // Disabled: nothing is kept, neither what waited nor what is revoked meanwhile.
    store
        .set_ssf_status("s", SsfStatus::Disabled, None, &event(STATUS))
        .await
        .unwrap();
    assert!(pending(store, "s").await.is_empty());
    assert!(verifications(store, "s").await.is_empty());
    revoke(store, RevocationTarget::Credential("tok-3".into())).await;
    store
        .set_ssf_status("s", SsfStatus::Enabled, None, &event(STATUS))
        .await
        .unwrap();
    assert!(
        pending(store, "s").await.is_empty(),
        "dropped while disabled"
    );
    revoke(store, RevocationTarget::Credential("tok-4".into())).await;
    assert_eq!(pending(store, "s").await, [tok("tok-4")]);

    // Only an enabled push stream is claimed.
    for (status, claimable) in [
        (SsfStatus::Paused, false),
        (SsfStatus::Disabled, false),
        (SsfStatus::Enabled, true),
    ] {
        store
            .set_ssf_status("p", status, None, &event(STATUS))
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_ssf_stream("p", "r1", at(100), at(130))
                .await
                .unwrap(),
            claimable,
            "{status:?}"
        );
    }

    // The verification queue is bounded; a refusal writes nothing.
    audit = AuditCursor::new(store).await;
    for n in 0..MAX_SSF_VERIFICATIONS_PENDING {
        store
            .queue_ssf_verification("s", Some(&n.to_string()), at(50), &event(VERIFY))
            .await
            .unwrap();
        audit.one(store, VERIFY).await;
    }
    let full = store
        .queue_ssf_verification("s", Some("one more"), at(50), &event(VERIFY))
        .await;
    assert!(matches!(full, Err(StoreError::Conflict { .. })), "{full:?}");
    audit.none(store).await;
    assert_eq!(
        verifications(store, "s").await.len(),
        usize::try_from(MAX_SSF_VERIFICATIONS_PENDING).unwrap()
    );

    // A stream with events queued is deleted with them.
    store.delete_ssf_stream("s", &event(DELETE)).await.unwrap();
    assert!(verifications(store, "s").await.is_empty());
    assert_chain_verifies(store).await;
}
