//! HTTPS served by the server itself (rustls): a client that trusts the certificate's CA
//! connects, plain HTTP and untrusting clients do not; a renewed certificate written over the
//! files is picked up without a restart; a broken renewal keeps the previous certificate in
//! force; a mismatched key or a missing file stops the server from starting.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aims_server::config::ENV_BOOTSTRAP_TOKEN;
use aims_server::tls::{RELOAD_EVERY, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use reqwest::StatusCode;

use crate::kit::{ADMIN_TOKEN, Backend, TestServer, config_with, open_store};

/// A CA and a certificate it signed for 127.0.0.1 and localhost, as PEM.
struct Issued {
    ca: String,
    chain: String,
    key: String,
}

fn issue(name: &str) -> Issued {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    Issued {
        ca: ca.pem(),
        chain: leaf.pem(),
        key: leaf_key.serialize_pem(),
    }
}

fn write(files: &TlsFiles, issued: &Issued) {
    std::fs::write(&files.cert, &issued.chain).unwrap();
    std::fs::write(&files.key, &issued.key).unwrap();
}

fn trusting(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
}

async fn health(client: &reqwest::Client, base: &str) -> Option<StatusCode> {
    client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

async fn start_tls(dir: Arc<tempfile::TempDir>, files: TlsFiles) -> Result<TestServer, String> {
    let store = open_store(Backend::Sqlite, &dir).await;
    let env = HashMap::from([(ENV_BOOTSTRAP_TOKEN.to_owned(), ADMIN_TOKEN.to_owned())]);
    let mut config = config_with(&dir, &env);
    config.tls = Some(files);
    TestServer::start_configured(Backend::Sqlite, dir, store, env, config)
        .await
        .map_err(|e| e.to_string())
}

fn files_in(dir: &Path) -> TlsFiles {
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    }
}

#[tokio::test]
async fn https_is_served_and_a_renewed_certificate_is_picked_up() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let files = files_in(dir.path());
    let first = issue("first");
    write(&files, &first);
    let server = start_tls(dir.clone(), files.clone()).await.unwrap();
    assert!(server.base.starts_with("https://"), "{}", server.base);

    let old_client = trusting(&first.ca);
    assert_eq!(
        health(&old_client, &server.base).await,
        Some(StatusCode::OK)
    );
    let metadata: serde_json::Value = old_client
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], server.base.as_str());
    // Plain HTTP on the same port, and clients that do not trust the CA, get nothing.
    let plain = server.base.replacen("https://", "http://", 1);
    assert_eq!(health(&reqwest::Client::new(), &plain).await, None);
    let stranger = issue("stranger");
    assert_eq!(health(&trusting(&stranger.ca), &server.base).await, None);

    // Renewal: new files, no restart.
    let second = issue("second");
    write(&files, &second);
    let new_client = trusting(&second.ca);
    let deadline = Instant::now() + RELOAD_EVERY * 5;
    while health(&new_client, &server.base).await != Some(StatusCode::OK) {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A fresh client trusting only the old CA is refused now.
    assert_eq!(health(&trusting(&first.ca), &server.base).await, None);

    // A broken renewal (a key that does not match) keeps the certificate in force.
    let third = issue("third");
    std::fs::write(&files.cert, &third.chain).unwrap();
    std::fs::write(&files.key, &second.key).unwrap();
    tokio::time::sleep(RELOAD_EVERY * 2).await;
    assert_eq!(
        health(&trusting(&second.ca), &server.base).await,
        Some(StatusCode::OK)
    );
    assert_eq!(health(&trusting(&third.ca), &server.base).await, None);
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_that_cannot_be_served_stops_the_start() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let files = files_in(dir.path());
    let err = start_tls(dir.clone(), files.clone()).await.err().unwrap();
    assert!(err.contains("tls.crt"), "{err}");
    let a = issue("a");
    let b = issue("b");
    std::fs::write(&files.cert, &a.chain).unwrap();
    std::fs::write(&files.key, &b.key).unwrap();
    let err = start_tls(dir.clone(), files.clone()).await.err().unwrap();
    assert!(err.contains("does not match"), "{err}");
    std::fs::write(&files.key, "not a key").unwrap();
    let err = start_tls(dir, files).await.err().unwrap();
    assert!(err.contains("tls.key"), "{err}");
}
