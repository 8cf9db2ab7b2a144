//! Upgrading a store written by an earlier build: a SQLite database at migration 5 (before
//! epoch entries and audiences), with a revocation log whose last position was deleted, opens
//! with every entry kept as a credential entry and new positions continuing after the old
//! ones (a reused position would hide an entry from a follower that already passed it).

use aims_core::audit::action;
use aims_store::{RevocationTarget, Revoked, SqliteStore, Store};
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::fixtures::{agent, at, event, initialize, join_token};

#[tokio::test]
async fn a_sqlite_store_at_migration_5_upgrades_without_reusing_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aims.db");
    // The first five migrations, as an earlier build ran them.
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(all).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.as_str() < "0006" {
            std::fs::copy(entry.path(), old.join(&name)).unwrap();
        }
    }
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO agents VALUES ('old', 'alice@acme.example', 'prod', 'active', 1, 0, 0, '{}'); \
         INSERT INTO credentials (id, kind, agent, issued_at_ms, expires_at_ms) \
           VALUES ('c1', 'svid', 'old', 0, 1), ('c2', 'svid', 'old', 0, 1), \
                  ('c3', 'svid', 'old', 0, 1); \
         INSERT INTO revocations (credential, agent, revoked_at_ms, expires_at_ms, reason) \
           VALUES ('c1', 'old', 0, 1, 'r'), ('c2', 'old', 0, 1, 'r'), ('c3', 'old', 0, 1, 'r'); \
         DELETE FROM revocations WHERE seq = 3;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    // This build opens it: migration 6 runs.
    let store = SqliteStore::open(&path).await.unwrap();
    let log = store.revocations_since(0, 0, None).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|r| (r.seq, r.revoked.clone(), r.audience.clone()))
            .collect::<Vec<_>>(),
        [
            (1, Revoked::Credential("c1".into()), None),
            (2, Revoked::Credential("c2".into()), None)
        ]
    );
    initialize(&store).await;
    store
        .create_agent(
            &agent("new", "bob@acme.example", "prod"),
            &join_token("new", "new", at(3600)),
            &event(action::AGENT_REGISTER),
        )
        .await
        .unwrap();
    store
        .revoke(
            &RevocationTarget::Agent(crate::fixtures::name("new")),
            "after the upgrade",
            at(10),
            &event(action::REVOKE),
        )
        .await
        .unwrap();
    let log = store.revocations_since(2, 0, None).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].revoked, Revoked::Agent);
    assert_eq!(
        log[0].seq, 4,
        "position 3 was used once; it is never used again"
    );
}
