//! A revocation holds for tokens the register does not hold: ending a task or revoking an
//! agent also writes an epoch that every check applies to tokens issued earlier, so a token
//! whose register row is missing (the register is what a revocation closes over) is refused
//! all the same — also when it was delegated onward. And each reader of the revocation feed
//! sees what concerns it. A revocation's reason is bounded visible text.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::kit::{ADMIN_TOKEN, Backend, TestServer};
use crate::on_both_stores;
use crate::task_tokens::{Scene, access_token, claims};

on_both_stores!(
    unregistered_tokens_are_refused_once_their_task_or_agent_is_revoked,
    each_feed_reader_sees_what_concerns_it,
    a_revocation_reason_is_bounded_in_characters_and_visible,
);

/// Deletes a credential's register row behind the server's back.
async fn unregister(server: &TestServer, token: &str) {
    let jti = claims(token)["jti"].as_str().unwrap().to_owned();
    server
        .raw_sql(&format!("DELETE FROM credentials WHERE id = '{jti}'"))
        .await;
}

async fn unregistered_tokens_are_refused_once_their_task_or_agent_is_revoked(backend: Backend) {
    let scene = Scene::start(backend).await;
    let key = scene.planner.key.clone();

    // A task: its unregistered token is refused once the task ends.
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    unregister(&scene.server, &token).await;
    let read = |token: String| {
        let (scene, key) = (&scene, key.clone());
        async move { scene.decide(&key, &token, "read", "repo/acme/app").await }
    };
    assert_eq!(read(token.clone()).await.status, StatusCode::OK);
    let task = claims(&token)["task_id"].as_str().unwrap().to_owned();
    // Tokens issued in the second of the revocation are their own log entries' to cover.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let ended = scene
        .server
        .admin(Method::POST, &format!("/v1/tasks/{task}/end"), None)
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(ended.body["revoked"], 0, "the register never held it");
    let refused = read(token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);

    // An agent: a token delegated from its task, unregistered, is refused once the agent is.
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    let delegated = access_token(&scene.delegate(&parent, &[]).await);
    unregister(&scene.server, &delegated).await;
    let executor = scene.executor.key.clone();
    let by_executor = |token: String| {
        let (scene, key) = (&scene, executor.clone());
        async move { scene.decide(&key, &token, "read", "repo/acme/app").await }
    };
    assert_eq!(by_executor(delegated.clone()).await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let revoked = scene
        .server
        .admin(
            Method::POST,
            "/v1/revocations",
            Some(json!({"target": "agent", "id": "planner", "reason": "kill switch"})),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let refused = by_executor(delegated.clone()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(
        scene.introspect(&delegated).await.body,
        json!({"active": false})
    );
}

/// The revocation feed's entries as `who` (Basic `(name, secret)`, else the admin) reads them.
async fn feed(scene: &Scene, who: Option<(&str, &str)>) -> Vec<Value> {
    let mut req = scene.server.http.get(scene.url("/v1/revocations?since=0"));
    req = match who {
        Some((name, secret)) => req.basic_auth(name, Some(secret)),
        None => req.bearer_auth(ADMIN_TOKEN),
    };
    let reply = scene.server.send(req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["revocations"].as_array().unwrap().clone()
}

async fn each_feed_reader_sees_what_concerns_it(backend: Backend) {
    let scene = Scene::start(backend).await;
    let other = scene
        .server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "other-tools", "audience": "https://other.example", "system": "jira"})),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    let other_secret = other.body["client_secret"].as_str().unwrap().to_owned();

    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let task = claims(&token)["task_id"].as_str().unwrap().to_owned();
    let ended = scene
        .server
        .admin(Method::POST, &format!("/v1/tasks/{task}/end"), None)
        .await;
    assert_eq!(ended.status, StatusCode::OK);

    // The operator: every entry, the token and the task's epochs, with reasons.
    let all = feed(&scene, None).await;
    assert!(
        all.iter()
            .any(|e| e["kind"] == "token" && e["jti"] == claims(&token)["jti"])
    );
    assert!(
        all.iter()
            .any(|e| e["kind"] == "task" && e["task_id"] == task.as_str())
    );
    assert!(all.iter().all(|e| e["reason"] == "task ended"), "{all:?}");

    // The resource server the token was for: its entries, no reasons.
    let mine = feed(&scene, Some(("repo-tools", &scene.rs_secret))).await;
    assert!(mine.iter().any(|e| e["jti"] == claims(&token)["jti"]));
    assert!(mine.iter().any(|e| e["kind"] == "task"));
    assert!(mine.iter().all(|e| e.get("reason").is_none()), "{mine:?}");

    // Another resource server: nothing of it — no token id, agent, task or reason.
    let theirs = feed(&scene, Some(("other-tools", &other_secret))).await;
    assert_eq!(theirs, Vec::<Value>::new());
}

/// A reason is 1 to 256 characters, as openapi.json's `RevocationReason` states (JSON Schema
/// counts characters, not bytes), with no hidden character; a refused one revokes nothing.
async fn a_revocation_reason_is_bounded_in_characters_and_visible(backend: Backend) {
    let server = TestServer::start(backend).await;
    let registered = server
        .admin(
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "coder", "owner": "eve@acme.example"})),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let revoke = |reason: String| {
        let server = &server;
        async move {
            server
                .admin(
                    Method::POST,
                    "/v1/revocations",
                    Some(json!({"target": "agent", "id": "coder", "reason": reason})),
                )
                .await
        }
    };
    for refused in [
        String::new(),
        "€".repeat(257),
        "compromised\u{7}".to_owned(),
        "read\u{202E}me".to_owned(),
        "two\nlines".to_owned(),
    ] {
        let answer = revoke(refused.clone()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::BAD_REQUEST, "invalid_reason"),
            "{refused:?}: {}",
            answer.body
        );
    }
    assert!(
        !server.events().await.iter().any(|e| e.action == "revoke"),
        "a refused revocation revoked nothing"
    );
    // 256 characters of three bytes each: within the bound.
    let accepted = revoke("€".repeat(256)).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
}
