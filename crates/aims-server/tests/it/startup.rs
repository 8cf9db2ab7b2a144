//! Startup and restart: state survives a restart; the server refuses to start rather than
//! guess when the master key, trust domain or bootstrap credential is wrong.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use aims_server::bootstrap::{MASTER_KEY_FILE, StartupError};
use aims_server::config::{ENV_BOOTSTRAP_TOKEN, ENV_MASTER_KEY};
use reqwest::{Method, StatusCode};

use crate::kit::{ADMIN_TOKEN, Backend, TestServer, open_store};
use crate::on_both_stores;

on_both_stores!(restart_keeps_agents_keys_users_and_the_audit_chain);

async fn restart_keeps_agents_keys_users_and_the_audit_chain(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    let carol = server.add_user("carol", "auditor").await;
    server.admin(Method::POST, "/v1/keys/rotate", None).await;
    let jwks_before = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    let records_before = server.records().await.len();
    let (dir, store) = server.stop().await;

    // Restart without the bootstrap variable: nothing is re-initialized.
    let server = TestServer::start_on(backend, dir, store, HashMap::new())
        .await
        .unwrap();
    let agent = server.admin(Method::GET, "/v1/agents/coder", None).await;
    assert_eq!(agent.status, StatusCode::OK);
    assert_eq!(agent.body["owner"], "alice@acme.example");
    assert_eq!(
        server
            .call(Method::GET, "/v1/agents", Some(&carol), None)
            .await
            .status,
        StatusCode::OK
    );
    let jwks_after = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    assert_eq!(jwks_before, jwks_after);
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.body["intact"], true);
    assert!(verify.body["records"].as_u64().unwrap() as usize > records_before);
    assert_eq!(server.count_events("trust_domain.create").await, 1);
}

async fn stopped_sqlite_server() -> (Arc<tempfile::TempDir>, Arc<dyn aims_store::Store>) {
    TestServer::start(Backend::Sqlite).await.stop().await
}

fn restart_error(result: Result<TestServer, StartupError>) -> String {
    match result {
        Ok(_) => panic!("the server started but should have refused"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn missing_master_key_for_an_existing_store_refuses_to_start() {
    let (dir, store) = stopped_sqlite_server().await;
    let key = dir.path().join(MASTER_KEY_FILE);
    std::fs::rename(&key, dir.path().join("moved.key")).unwrap();
    let err = restart_error(
        TestServer::start_on(Backend::Sqlite, dir.clone(), store, HashMap::new()).await,
    );
    assert!(err.contains("never generated"), "{err}");
    assert!(!key.exists(), "no new key was written");
}

#[tokio::test]
async fn wrong_master_key_refuses_to_start() {
    let (dir, store) = stopped_sqlite_server().await;
    let env = HashMap::from([(
        ENV_MASTER_KEY.to_owned(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
    )]);
    let err =
        restart_error(TestServer::start_on(Backend::Sqlite, dir.clone(), store.clone(), env).await);
    assert!(err.contains("cannot be loaded"), "{err}");
    let env = HashMap::from([(ENV_MASTER_KEY.to_owned(), "short".to_owned())]);
    let err = restart_error(TestServer::start_on(Backend::Sqlite, dir, store, env).await);
    assert!(err.contains(ENV_MASTER_KEY), "{err}");
}

#[tokio::test]
async fn readable_master_key_file_refuses_to_start() {
    let (dir, store) = stopped_sqlite_server().await;
    let key = dir.path().join(MASTER_KEY_FILE);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err =
        restart_error(TestServer::start_on(Backend::Sqlite, dir, store, HashMap::new()).await);
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn another_trust_domain_refuses_to_start() {
    let (dir, store) = stopped_sqlite_server().await;
    let mut config = crate::kit::config(&dir);
    config.trust_domain = aims_core::id::TrustDomain::new("other.example").unwrap();
    let result = aims_server::server::start_with_store(config, store, &|_| None).await;
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("test.example") && err.contains("other.example"),
        "{err}"
    );
}

#[tokio::test]
async fn weak_bootstrap_token_refuses_to_start_and_writes_nothing() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = open_store(Backend::Sqlite, &dir).await;
    let env = HashMap::from([(ENV_BOOTSTRAP_TOKEN.to_owned(), "short".to_owned())]);
    let err =
        restart_error(TestServer::start_on(Backend::Sqlite, dir.clone(), store.clone(), env).await);
    assert!(err.contains(ENV_BOOTSTRAP_TOKEN), "{err}");
    assert_eq!(store.trust_domain().await.unwrap(), None);
}

#[tokio::test]
async fn generated_bootstrap_credential_works_once_issued() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = open_store(Backend::Sqlite, &dir).await;
    let running =
        aims_server::server::start_with_store(crate::kit::config(&dir), store.clone(), &|_| None)
            .await
            .unwrap();
    let credential = running
        .bootstrap_credential
        .clone()
        .expect("first start generates one");
    let credential = secrecy::ExposeSecret::expose_secret(&credential).to_owned();
    assert!(credential.starts_with("aims_h_"));
    assert_ne!(credential, ADMIN_TOKEN);
    let base = format!("http://{}", running.addr);
    let resp = crate::kit::TestServer::send_to(
        &base,
        reqwest::Client::new()
            .get(format!("{base}/v1/agents"))
            .bearer_auth(&credential),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    // Only the hash is stored: the credential is nowhere in the database file.
    running.shutdown();
    running.wait().await.unwrap();
    for file in ["aims.db", "aims.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes
                .windows(credential.len())
                .any(|w| w == credential.as_bytes()),
            "{file}"
        );
    }
}

/// Starts the server the way `aims server` does (data directory checks and lock included) on
/// the data directory `dir`.
async fn start_in(
    dir: &std::path::Path,
) -> Result<aims_server::server::RunningServer, StartupError> {
    let overrides = aims_server::config::Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_owned()),
        trust_domain: Some("test.example".into()),
        ..Default::default()
    };
    let config = aims_server::config::Config::load_with(&overrides, &|_| None).unwrap();
    aims_server::server::start(config, &|_| None).await
}

#[tokio::test]
async fn one_sqlite_data_directory_serves_one_server() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let first = start_in(&dir).await.unwrap();
    let second = start_in(&dir).await;
    assert!(
        matches!(second, Err(StartupError::DataDirInUse { .. })),
        "{:?}",
        second.err()
    );
    first.shutdown();
    first.wait().await.unwrap();
    let again = start_in(&dir).await.expect("the lock goes with the server");
    again.shutdown();
    again.wait().await.unwrap();
}

#[tokio::test]
async fn a_data_directory_others_may_write_refuses_to_start_and_is_left_alone() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    for mode in [0o777, 0o770, 0o702, 0o1777] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = start_in(&dir).await.err().map(|e| e.to_string());
        let err = err.unwrap_or_else(|| panic!("started in a {mode:o} directory"));
        assert!(err.contains("writable by group or others"), "{err}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing is written into a directory that was refused"
        );
    }
    // One others may only read (a plain `mkdir`) is closed before anything goes into it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = start_in(&dir).await.unwrap();
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test]
async fn a_master_key_that_is_not_a_regular_file_is_named_as_such() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let server = start_in(&dir).await.unwrap();
    server.shutdown();
    server.wait().await.unwrap();
    let key = dir.join(MASTER_KEY_FILE);
    std::fs::rename(&key, dir.join("kept.key")).unwrap();

    std::os::unix::fs::symlink("/dev/null", &key).unwrap();
    let err = start_in(&dir).await.err().unwrap().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    std::fs::remove_file(&key).unwrap();

    std::fs::create_dir(&key).unwrap();
    let err = start_in(&dir).await.err().unwrap().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    std::fs::remove_dir(&key).unwrap();

    std::fs::rename(dir.join("kept.key"), &key).unwrap();
    let server = start_in(&dir).await.expect("the real key opens the store");
    server.shutdown();
    server.wait().await.unwrap();
}
