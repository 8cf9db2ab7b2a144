//! What callers who prove no identity can make the server store and do: refusals cut to size
//! and counted past a per-source budget (the rest summarized once per window), nonces that
//! store nothing until they are used, and rate limits that answer 429 with `Retry-After`.

use std::time::Duration;

use aims_core::audit::action;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::{ADMIN_TOKEN, Backend, TestServer};
use crate::on_both_stores;
use crate::task_tokens::Scene;

on_both_stores!(
    a_flood_of_long_anonymous_paths_writes_a_bounded_amount,
    nonces_store_nothing_until_used,
);

/// The flood: anonymous requests with 60 KB paths. Each source writes its first
/// refusals one by one, cut to size, and one summary per window for the rest.
async fn a_flood_of_long_anonymous_paths_writes_a_bounded_amount(backend: Backend) {
    let server = TestServer::start_tuned(backend, |config| {
        config.refusals_written_per_source = 10;
        config.refusal_window = Duration::from_secs(1);
    })
    .await;
    let before = server.records().await;
    let bytes_before: usize = before.iter().map(|r| r.body.len()).sum();
    let path = format!("/v1/{}", "x".repeat(60 * 1024));
    for _ in 0..300 {
        let reply = server.call(Method::GET, &path, None, None).await;
        assert!(reply.status.is_client_error(), "{}", reply.status);
    }
    // The window closes; its summary is written.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = server.records().await;
    let added = &after[before.len()..];
    let events: Vec<_> = added.iter().map(|r| r.event().unwrap()).collect();
    let rejects: Vec<_> = events
        .iter()
        .filter(|e| e.action == action::REJECT)
        .collect();
    let summaries: Vec<_> = events
        .iter()
        .filter(|e| e.action == action::REJECT_SUMMARY)
        .collect();
    assert_eq!(
        rejects.len() + summaries.len(),
        added.len(),
        "nothing else was written"
    );
    // Every refusal is accounted for, one by one or in its window's summary.
    let summarized: u64 = summaries
        .iter()
        .map(|e| e.details["refused"].as_u64().unwrap())
        .sum();
    assert_eq!(rejects.len() as u64 + summarized, 300);
    // At most ten written one by one per window: a window that counted any has a summary,
    // and at most one (the last) counted none.
    assert!(
        rejects.len() <= 10 * (summaries.len() + 1),
        "{} written over {} windows",
        rejects.len(),
        summaries.len()
    );
    for event in &rejects {
        let resource = event.resource.as_deref().unwrap();
        assert!(resource.len() <= 4 + 256, "{} bytes", resource.len());
        assert_eq!(event.details["source"], "127.0.0.1");
    }
    for summary in &summaries {
        assert_eq!(summary.details["source"], "127.0.0.1");
    }
    let bytes_added: usize = after.iter().map(|r| r.body.len()).sum::<usize>() - bytes_before;
    assert!(
        bytes_added < added.len() * 1024,
        "{bytes_added} bytes in {} records for 300 refusals of 60 KB paths",
        added.len()
    );
    println!(
        "300 refusals of 60 KB paths: {} records, {bytes_added} bytes",
        added.len()
    );
    let metrics = server.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    // The chain still verifies.
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.body["intact"], true, "{}", verify.body);
}

/// Nonces cost the server nothing to hand out: a flood of them stores no row and no record.
async fn nonces_store_nothing_until_used(backend: Backend) {
    let server = TestServer::start(backend).await;
    let records = server.records().await.len();
    for _ in 0..200 {
        let reply = server
            .call(Method::POST, "/v1/attest/nonce", None, None)
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(server.count_rows("attestation_nonces").await, 0);
    assert_eq!(server.records().await.len(), records);
}

/// Per source: a burst, then 429 with `Retry-After`, counted but not written; requests that
/// carry credentials and the health endpoints are not limited by source.
#[tokio::test]
async fn a_source_over_its_rate_gets_429_with_retry_after() {
    let server = TestServer::start_tuned(Backend::Sqlite, |config| {
        config.rate_limit_per_source = aims_server::limits::Rate::parse("1/5").unwrap();
    })
    .await;
    let records = server.records().await.len();
    for _ in 0..5 {
        let reply = server
            .call(Method::POST, "/v1/attest/nonce", None, None)
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let limited = server
        .call(Method::POST, "/v1/attest/nonce", None, None)
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // No credential at all: the same bucket.
    let anonymous = server.call(Method::GET, "/v1/agents", None, None).await;
    assert_eq!(anonymous.status, StatusCode::TOO_MANY_REQUESTS);
    let token = server
        .call(Method::POST, "/oauth2/token", None, Some(json!({})))
        .await;
    assert_eq!(token.status, StatusCode::TOO_MANY_REQUESTS);
    // An operator's request carries its credential: not limited by source.
    assert_eq!(
        server.admin(Method::GET, "/v1/agents", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .call(Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
    // The 429s are counted, not written: only the operator's read was.
    let added: Vec<_> = server.events().await.split_off(records);
    assert_eq!(
        added.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        [action::READ]
    );
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("aims_rate_limited_requests_total 3"),
        "{metrics}"
    );
    // The bucket refills.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        server
            .call(Method::POST, "/v1/attest/nonce", None, None)
            .await
            .status,
        StatusCode::OK
    );
}

/// Per credential: a resource server's introspections and an agent's token requests have
/// buckets of their own, whatever address they come from.
#[tokio::test]
async fn a_credential_over_its_rate_gets_429_with_retry_after() {
    let server = TestServer::start_tuned(Backend::Sqlite, |config| {
        config.rate_limit_per_credential = aims_server::limits::Rate::parse("1/3").unwrap();
    })
    .await;
    let scene = Scene::on(server).await;
    let token = crate::task_tokens::access_token(&scene.exchange("read:repo/acme/*").await);
    for _ in 0..3 {
        assert_eq!(scene.introspect(&token).await.status, StatusCode::OK);
    }
    let limited = scene.introspect(&token).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["error"], "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));

    // The planner spent one token request above; two more, then 429.
    for _ in 0..2 {
        assert_eq!(
            scene.exchange("read:repo/acme/*").await.status,
            StatusCode::OK
        );
    }
    let limited = scene.exchange("read:repo/acme/*").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    // The operator is not the planner.
    assert_eq!(
        scene
            .server
            .call(Method::GET, "/v1/agents", Some(ADMIN_TOKEN), None)
            .await
            .status,
        StatusCode::OK
    );
}
