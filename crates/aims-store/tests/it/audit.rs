//! The audit log: batches, concurrent appends, verification and tamper detection.

use std::sync::Arc;

use aims_core::audit::{ChainError, ChainHead, action, verify_chain};
use aims_store::{MAX_PAGE, StoreError};

use crate::fixtures::{agent, all_records, assert_chain_verifies, at, event, join_token, name};
use crate::harness::Harness;

pub async fn audit_batches_chain(h: &Harness) {
    let store = &*h.store;
    assert_eq!(store.audit_head().await.unwrap(), ChainHead::EMPTY);
    assert_eq!(store.append_audit(&[]).await.unwrap(), ChainHead::EMPTY);
    assert!(store.audit_records(0, MAX_PAGE).await.unwrap().is_empty());

    let mut batch = vec![
        event(action::READ),
        event(action::REJECT),
        event(action::READ),
    ];
    batch[1].code = Some("forbidden".to_owned());
    batch[2].agent = Some("spiffe://acme.example/agent/coder".to_owned());
    batch[2].details = serde_json::json!({ "path": "/v1/agents" });
    let head = store.append_audit(&batch).await.unwrap();
    assert_eq!(head.seq, 3);
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert_eq!(store.append_audit(&[]).await.unwrap(), head);

    let records = assert_chain_verifies(store).await;
    let events: Vec<_> = records.iter().map(|r| r.event().unwrap()).collect();
    assert_eq!(events, batch);

    let more = store.append_audit(&[event(action::READ)]).await.unwrap();
    assert_eq!(more.seq, 4);
    // Paging: `after` is exclusive, `limit` bounds the page.
    let page = store.audit_records(1, 2).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(verify_chain(head_at(&records[0]), &page).unwrap().seq, 3);
    assert!(store.audit_records(4, MAX_PAGE).await.unwrap().is_empty());
    assert!(
        store
            .audit_records(u64::MAX, MAX_PAGE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.audit_records(0, u32::MAX).await.unwrap().len(), 4);
}

pub async fn a_window_starts_at_its_first_record(h: &Harness) {
    let store = &*h.store;
    assert_eq!(store.audit_position_at(at(0)).await.unwrap(), 0);
    // Times as concurrent writers may leave them: not ordered by position.
    let events: Vec<_> = [100, 300, 50, 200]
        .into_iter()
        .map(|secs| {
            let mut e = event(action::READ);
            e.time = at(secs);
            e
        })
        .collect();
    store.append_audit(&events).await.unwrap();
    // From record 2 (300 s) on: record 3 (50 s) is read too, and left to the reader.
    assert_eq!(store.audit_position_at(at(150)).await.unwrap(), 1);
    assert_eq!(store.audit_position_at(at(250)).await.unwrap(), 1);
    assert_eq!(store.audit_position_at(at(0)).await.unwrap(), 0);
    assert_eq!(store.audit_position_at(at(100)).await.unwrap(), 0);
    assert_eq!(store.audit_position_at(at(101)).await.unwrap(), 1);
    // Nothing that late: the head, so a reader from there reads nothing.
    assert_eq!(store.audit_position_at(at(301)).await.unwrap(), 4);
}

fn head_at(record: &aims_core::audit::AuditRecord) -> ChainHead {
    ChainHead {
        seq: record.seq,
        hash: record.hash,
    }
}

pub async fn concurrent_appends_form_one_chain(h: &Harness) {
    const TASKS: usize = 16;
    const BATCHES: usize = 8;
    // On PostgreSQL, half the writers use a second store, like a second server process.
    let other = if h.shares_writers() {
        h.reopen().await
    } else {
        Arc::clone(&h.store)
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = if task % 2 == 0 {
                Arc::clone(&h.store)
            } else {
                Arc::clone(&other)
            };
            tokio::spawn(async move {
                for batch in 0..BATCHES {
                    let size = 1 + (task + batch) % 3;
                    let events: Vec<_> = (0..size)
                        .map(|i| {
                            let mut e = event(action::READ);
                            e.request_id = Some(format!("task-{task}-batch-{batch}-{i}"));
                            e
                        })
                        .collect();
                    store.append_audit(&events).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let expected: usize = (0..TASKS)
        .flat_map(|task| (0..BATCHES).map(move |batch| 1 + (task + batch) % 3))
        .sum();
    let records = assert_chain_verifies(&*h.store).await;
    assert_eq!(records.len(), expected);
    // Every event landed exactly once.
    let mut ids: Vec<_> = records
        .iter()
        .map(|r| r.event().unwrap().request_id.unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected);
    assert_eq!(
        other.audit_head().await.unwrap(),
        h.store.audit_head().await.unwrap()
    );
}

pub async fn tampering_is_detected(h: &Harness) {
    let store = &*h.store;
    store
        .append_audit(&[
            event(action::READ),
            event(action::READ),
            event(action::READ),
        ])
        .await
        .unwrap();
    assert_chain_verifies(store).await;

    h.execute_raw(
        "UPDATE audit_log SET body = replace(body, 'api.read', 'api.reax') WHERE seq = 2",
    )
    .await;
    let records = all_records(store).await;
    assert!(
        records[1].body.contains("api.reax"),
        "the tamper did not apply"
    );
    assert_eq!(
        verify_chain(ChainHead::EMPTY, &records),
        Err(ChainError::Content { seq: 2 })
    );

    // Deleting a record is caught too.
    h.execute_raw("DELETE FROM audit_log WHERE seq = 2").await;
    let records = all_records(store).await;
    assert!(matches!(
        verify_chain(ChainHead::EMPTY, &records),
        Err(ChainError::Gap { .. })
    ));
}

/// The Merkle tree log's side of the store: entries carry every column as written, the first
/// log key stays, and a size checkpointed once keeps its first note.
pub async fn entries_keys_and_checkpoints(h: &Harness) {
    use aims_store::{StoredCheckpoint, StoredLogKey};
    let store = &*h.store;
    assert!(store.audit_entries(0, MAX_PAGE).await.unwrap().is_empty());
    let mut batch = vec![event(action::READ), event(action::REVOKE)];
    batch[1].agent = Some("spiffe://acme.example/agent/coder".to_owned());
    batch[1].task_id = Some("task-1".to_owned());
    store.append_audit(&batch).await.unwrap();
    let entries = store.audit_entries(0, MAX_PAGE).await.unwrap();
    let records = all_records(store).await;
    assert_eq!(entries.len(), 2);
    for ((entry, record), event) in entries.iter().zip(&records).zip(&batch) {
        assert_eq!(&entry.record, record);
        assert_eq!(entry.action, event.action);
        assert_eq!(entry.agent, event.agent);
        assert_eq!(entry.task_id, event.task_id);
        assert!(entry.txn.is_some());
        entry.check_columns().unwrap();
    }
    assert_eq!(store.audit_entries(1, 1).await.unwrap()[0].record.seq, 2);
    // Editing a copied column behind the store's back is what the entry shows.
    h.execute_raw("UPDATE audit_log SET action = 'api.read' WHERE seq = 2")
        .await;
    let edited = &store.audit_entries(1, 1).await.unwrap()[0];
    assert_eq!(edited.check_columns().unwrap_err().column, "action");

    assert_eq!(store.log_key().await.unwrap(), None);
    let key = |name: &str| StoredLogKey {
        name: name.to_owned(),
        public_key: vec![1; 32],
        sealed_private_key: vec![2; 40],
        created_at: at(0),
    };
    assert_eq!(
        store.create_log_key(&key("first")).await.unwrap(),
        key("first")
    );
    assert_eq!(
        store.create_log_key(&key("second")).await.unwrap(),
        key("first")
    );
    assert_eq!(store.log_key().await.unwrap(), Some(key("first")));

    assert_eq!(store.latest_checkpoint().await.unwrap(), None);
    let checkpoint = |size: u64, note: &str| StoredCheckpoint {
        tree_size: size,
        root: [u8::try_from(size).unwrap(); 32],
        note: note.to_owned(),
        created_at: at(1),
    };
    for size in [3, 1, 2] {
        store.add_checkpoint(&checkpoint(size, "a")).await.unwrap();
    }
    store.add_checkpoint(&checkpoint(2, "b")).await.unwrap();
    assert_eq!(store.checkpoint(2).await.unwrap(), Some(checkpoint(2, "a")));
    assert_eq!(store.checkpoint(4).await.unwrap(), None);
    assert_eq!(
        store.latest_checkpoint().await.unwrap(),
        Some(checkpoint(3, "a"))
    );
    let sizes = |page: Vec<StoredCheckpoint>| page.iter().map(|c| c.tree_size).collect::<Vec<_>>();
    assert_eq!(
        sizes(store.checkpoints(0, MAX_PAGE).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(sizes(store.checkpoints(1, 1).await.unwrap()), [2]);
}

/// `aims audit query`'s keys: each reads exactly its records, by an index (the plans name
/// one), never by scanning the log.
pub async fn queries_read_by_their_index(h: &Harness) {
    use aims_store::AuditKey;
    // More records, and more keys, than one insert statement of the SQLite store takes (100),
    // so a batch split over several statements is read back whole.
    const N: u32 = 250;
    let store = &*h.store;
    let mut events = Vec::new();
    for i in 0..N {
        let mut e = event(if i % 3 == 0 {
            action::DECISION
        } else {
            action::READ
        });
        e.owner = Some(if i % 2 == 0 { "alice" } else { "bob" }.to_owned());
        if i % 3 == 0 {
            e.decision = Some(if i % 2 == 0 { "allow" } else { "deny" }.to_owned());
            e.policy_ids = vec![format!("p{}", i % 4), "shared".to_owned()];
        }
        events.push(e);
    }
    store.append_audit(&events).await.unwrap();
    let seqs = |records: Vec<aims_core::audit::AuditRecord>| {
        records.iter().map(|r| r.seq).collect::<Vec<_>>()
    };
    let expected = |keep: &dyn Fn(u32) -> bool| {
        (0..N)
            .filter(|i| keep(*i))
            .map(|i| u64::from(i) + 1)
            .collect::<Vec<_>>()
    };
    let read = |key| async move { seqs(store.audit_records_of(key, 0, 1000).await.unwrap()) };
    assert_eq!(
        read(AuditKey::Owner("alice")).await,
        expected(&|i| i % 2 == 0)
    );
    assert_eq!(
        read(AuditKey::Decision("deny")).await,
        expected(&|i| i % 6 == 3)
    );
    assert_eq!(
        read(AuditKey::Policy("p2")).await,
        expected(&|i| i % 3 == 0 && i % 4 == 2)
    );
    assert_eq!(
        read(AuditKey::Policy("shared")).await,
        expected(&|i| i % 3 == 0)
    );
    assert_eq!(
        read(AuditKey::Action(action::DECISION)).await,
        expected(&|i| i % 3 == 0)
    );
    assert!(read(AuditKey::Owner("carol")).await.is_empty());
    // Paged: after a sequence number, at most the limit.
    let page = seqs(
        store
            .audit_records_of(AuditKey::Owner("bob"), 4, 2)
            .await
            .unwrap(),
    );
    assert_eq!(page, [6, 8]);

    // The plans: each key's statement reads an index, the time range too.
    let keyed = "SELECT a.seq, a.prev_hash, a.hash, a.body FROM audit_keys k \
                 JOIN audit_log a ON a.seq = k.seq WHERE k.kind = 'owner' \
                 AND k.key = 'alice' AND k.seq > 0 ORDER BY k.seq LIMIT 100";
    let by_action = "SELECT seq, prev_hash, hash, body FROM audit_log \
                     WHERE action = 'decision' AND seq > 0 ORDER BY seq LIMIT 100";
    let by_agent = "SELECT seq, prev_hash, hash, body FROM audit_log \
                    WHERE agent = 'x' AND seq > 0 ORDER BY seq LIMIT 100";
    let by_task = "SELECT seq, prev_hash, hash, body FROM audit_log \
                   WHERE task_id = 'x' AND seq > 0 ORDER BY seq LIMIT 100";
    // The start of a time range (`Store::audit_position_at`): the lowest `seq` of the records
    // timed at or after it, from the time index alone, not by walking the primary key up to
    // the first match.
    let range_start = "SELECT MIN(+seq) FROM audit_log WHERE time_ms >= 1000";
    // (SQLite names the table's alias and its primary key.)
    for (sql, indexes) in [
        (keyed, &["k USING PRIMARY KEY", "audit_keys_pkey"][..]),
        (range_start, &["audit_log_time"][..]),
        (by_action, &["audit_log_action"][..]),
        (by_agent, &["audit_log_agent"][..]),
        (by_task, &["audit_log_task"][..]),
    ] {
        let plan = h.query_plan(sql).await;
        assert!(
            indexes.iter().any(|index| plan.contains(index)),
            "{sql}:\n{plan}"
        );
        let scans_the_log = plan.lines().any(|l| {
            l.contains("SCAN audit_log") && !l.contains("INDEX")
                || l.contains("Seq Scan on audit_log")
        });
        assert!(!scans_the_log, "{sql}:\n{plan}");
    }
}

/// Writes that share a group commit form a serial history: of concurrent registrations of
/// the same names exactly one per name succeeds, a refused one changes nothing and undoes
/// nothing of the others, every success is in the store with exactly one audit record, and
/// the log chains.
pub async fn concurrent_writes_with_refusals_commit_as_a_serial_history(h: &Harness) {
    const NAMES: usize = 24;
    const TRIES: usize = 3;
    let before = all_records(&*h.store).await.len();
    let tasks: Vec<_> = (0..NAMES * TRIES)
        .map(|i| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                let n = format!("batch-{}", i % NAMES);
                let mut registered = event(action::AGENT_REGISTER);
                registered.request_id = Some(format!("try-{i}"));
                store
                    .create_agent(
                        &agent(&n, "alice@acme.example", "prod"),
                        &join_token(&n, &format!("secret-{i}"), at(3600)),
                        &registered,
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(won, NAMES, "exactly one registration per name succeeds");
    for i in 0..NAMES {
        let n = format!("batch-{i}");
        assert!(h.store.agent(&name(&n)).await.unwrap().is_some(), "{n}");
    }
    let records = assert_chain_verifies(&*h.store).await;
    let registrations: Vec<_> = records
        .iter()
        .skip(before)
        .filter(|r| r.event().unwrap().action == action::AGENT_REGISTER)
        .collect();
    assert_eq!(
        registrations.len(),
        NAMES,
        "one record per success, none per refusal"
    );
    assert_eq!(records.len() - before, NAMES);
}

/// Queued events (`Store::queue_audit`) enter the log in the order they were acknowledged and
/// before the events of any write that begins later, on either store; what waits in the
/// queue survives a restart.
pub async fn queued_events_precede_later_writes(h: &Harness) {
    let store = &*h.store;
    let marked = |marker: &str| {
        let mut e = event(action::DECISION);
        e.request_id = Some(marker.to_owned());
        e
    };
    store.sequence_audit().await.unwrap();
    assert_eq!(store.audit_head().await.unwrap(), ChainHead::EMPTY);
    store.queue_audit(&[]).await.unwrap();
    store
        .queue_audit(&[marked("a"), marked("b")])
        .await
        .unwrap();
    store.queue_audit(&[marked("c")]).await.unwrap();
    // A write that begins now chains after them.
    store.append_audit(&[marked("d")]).await.unwrap();
    store.queue_audit(&[marked("e")]).await.unwrap();
    // A restart (or another replica) finds what waits and sequences it.
    let reopened = h.reopen().await;
    reopened.sequence_audit().await.unwrap();
    reopened.sequence_audit().await.unwrap();
    let records = assert_chain_verifies(reopened.as_ref()).await;
    let order: Vec<String> = records
        .iter()
        .map(|r| r.event().unwrap().request_id.unwrap())
        .collect();
    assert_eq!(order, ["a", "b", "c", "d", "e"]);
    assert_eq!(records[0].event().unwrap(), marked("a"));
    assert_eq!(store.audit_head().await.unwrap().seq, 5);
}

/// On PostgreSQL an event is queued and acknowledged while another session holds the audit
/// head's lock (as a step of a revocation's cascade does); sequencing it waits for the lock.
/// A SQLite store has one writer, so there is nothing to show.
pub async fn a_queued_event_waits_for_no_lock(h: &Harness) {
    if !h.shares_writers() {
        return;
    }
    let store = h.store.clone();
    let mut holder = h
        .postgres_session("BEGIN; SELECT * FROM audit_head FOR UPDATE;")
        .await;
    let queued = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.queue_audit(&[event(action::DECISION)]),
    )
    .await;
    assert!(
        matches!(queued, Ok(Ok(()))),
        "queueing waited for the head lock: {queued:?}"
    );
    let sequencing = tokio::spawn(async move { store.sequence_audit().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !sequencing.is_finished(),
        "sequencing did not wait for the head lock"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    sequencing.await.unwrap().unwrap();
    let records = assert_chain_verifies(h.store.as_ref()).await;
    assert_eq!(records.len(), 1);
    // The taken batch is remembered for a while (for a writer whose COMMIT failed), then
    // forgotten by the sweep.
    let sql = format!("SELECT count(*) FROM {}.audit_queue", h.postgres_schema());
    let kept = || sqlx::query_scalar::<_, i64>(&sql);
    assert_eq!(kept().fetch_one(&mut holder).await.unwrap(), 1);
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(11);
    h.store.sweep_expired(later).await.unwrap();
    assert_eq!(kept().fetch_one(&mut holder).await.unwrap(), 0);
}

/// The audit sequencer's lease has one holder: a claim succeeds when the lease is free, already
/// the claimant's, or ran out by the time given; of concurrent claimants exactly one wins.
pub async fn the_sequencer_lease_has_one_holder(h: &Harness) {
    let store = &*h.store;
    let claim =
        |holder: &'static str, now: i64| store.claim_sequencer(holder, at(now), at(now + 2));
    assert!(claim("a", 0).await.unwrap(), "a free lease");
    assert!(!claim("b", 1).await.unwrap(), "a's until 2");
    assert!(claim("a", 1).await.unwrap(), "a renews, until 3");
    assert!(!claim("b", 2).await.unwrap(), "renewed past 2");
    assert!(claim("b", 3).await.unwrap(), "a's ran out at 3");
    assert!(!claim("a", 4).await.unwrap(), "b's until 5");

    let claimants: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                store
                    .claim_sequencer(&format!("c{i}"), at(10), at(12))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for claimant in claimants {
        won += usize::from(claimant.await.unwrap());
    }
    assert_eq!(won, 1, "of concurrent claimants exactly one wins");
}
