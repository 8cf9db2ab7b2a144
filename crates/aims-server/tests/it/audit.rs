//! The audit log seen from outside: every change and refusal recorded, the chain verified over
//! HTTP, and a tampered record detected.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::{Backend, TestServer};
use crate::on_both_stores;

on_both_stores!(
    audit_chain_verifies_and_pages_in_order,
    concurrent_requests_keep_the_chain_intact,
    a_tampered_record_is_detected,
);

async fn audit_chain_verifies_and_pages_in_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    server
        .admin(Method::POST, "/v1/agents/coder/suspend", Some(json!({})))
        .await;
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.status, StatusCode::OK);
    assert_eq!(verify.body["intact"], true, "{}", verify.body);

    let page = server
        .admin(Method::GET, "/v1/audit?after=0&limit=2", None)
        .await;
    let records = page.body["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["seq"], 1);
    assert_eq!(records[0]["event"]["action"], "trust_domain.create");
    assert_eq!(records[1]["prev_hash"], records[0]["hash"]);
    let actions: Vec<_> = server
        .events()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        &actions[..4],
        [
            "trust_domain.create",
            "agent.register",
            "agent.lifecycle",
            "api.read"
        ]
    );
}

async fn concurrent_requests_keep_the_chain_intact(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                server
                    .register(&format!("a{i}"), "owner@acme.example")
                    .await;
            } else {
                let reply = server.admin(Method::GET, "/v1/agents", None).await;
                assert_eq!(reply.status, StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let records = server.records().await;
    assert_eq!(records.len(), 1 + 8 + 16);
    aims_core::audit::verify_chain(aims_core::audit::ChainHead::EMPTY, &records).unwrap();
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.body["intact"], true, "{}", verify.body);
}

async fn a_tampered_record_is_detected(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    server.register("helper", "bob@acme.example").await;
    let records = server.records().await;
    let target = &records[1];
    let forged = target
        .body
        .replace("alice@acme.example", "mallory@acme.example");
    assert_ne!(forged, target.body);
    server.tamper_with_record(target.seq, &forged).await;
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.status, StatusCode::OK);
    assert_eq!(verify.body["intact"], false, "{}", verify.body);
    assert_eq!(
        verify.body["records"], 1,
        "verified up to the record before"
    );
    assert!(
        verify.body["problem"]
            .as_str()
            .unwrap()
            .contains("record 2"),
        "{}",
        verify.body
    );
}
