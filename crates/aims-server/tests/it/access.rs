//! Who may call what: operator credentials, roles, and credentials that must never work on
//! admin endpoints (agents' join tokens, rotated or removed credentials, malformed headers).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::{ADMIN_TOKEN, Backend, TestServer};
use crate::on_both_stores;

on_both_stores!(
    missing_or_wrong_credentials_are_refused_and_audited,
    roles_limit_what_users_may_do,
    user_credentials_rotate_and_users_are_removed,
    last_admin_cannot_be_removed,
);

async fn missing_or_wrong_credentials_are_refused_and_audited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let join = server.register("coder", "alice@acme.example").await["join_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"name": "intruder", "owner": "eve"});
    let long = "a".repeat(600);
    for token in [
        None,
        Some("wrong"),
        Some(join.as_str()),
        Some(long.as_str()),
        Some("aims_h_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let before = server.records().await.len();
        let reply = server
            .call(Method::POST, "/v1/agents", token, Some(body.clone()))
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            "{token:?}"
        );
        let events = server.events().await;
        assert_eq!(events.len(), before + 1);
        let last = events.last().unwrap();
        assert_eq!(last.action, "api.reject");
        assert_eq!(last.actor, aims_core::audit::Actor::Anonymous);
        // The presented credential never reaches the log.
        if let Some(token) = token {
            assert!(
                !server
                    .records()
                    .await
                    .iter()
                    .any(|r| r.body.contains(token))
            );
        }
    }
    let basic = server
        .send(
            server
                .http
                .get(format!("{}/v1/agents", server.base))
                .header("authorization", format!("Basic {ADMIN_TOKEN}")),
        )
        .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.agent_count().await, 1);
}

async fn roles_limit_what_users_may_do(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    let auditor = server.add_user("carol", "auditor").await;
    let approver = server.add_user("dave", "approver").await;

    // Auditors read the registry, keys and audit log, and change nothing.
    for path in [
        "/v1/agents",
        "/v1/agents/coder",
        "/v1/keys",
        "/v1/audit",
        "/v1/audit/verify",
    ] {
        let reply = server.call(Method::GET, path, Some(&auditor), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
    let writes = [
        (
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "x", "owner": "y"})),
        ),
        (
            Method::PATCH,
            "/v1/agents/coder",
            Some(json!({"description": "x"})),
        ),
        (Method::POST, "/v1/agents/coder/suspend", Some(json!({}))),
        (Method::POST, "/v1/agents/coder/join-token", None),
        (
            Method::POST,
            "/v1/users",
            Some(json!({"name": "x", "role": "admin"})),
        ),
        (Method::GET, "/v1/users", None),
        (Method::DELETE, "/v1/users/admin", None),
        (Method::POST, "/v1/users/admin/rotate", None),
        (Method::POST, "/v1/keys/rotate", None),
    ];
    for (method, path, body) in writes.iter().cloned() {
        let reply = server
            .call(method.clone(), path, Some(&auditor), body)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "auditor {method} {path}"
        );
    }
    // Approvers may not even read the registry.
    for (method, path, body) in writes.iter().cloned().chain([
        (Method::GET, "/v1/agents", None),
        (Method::GET, "/v1/audit", None),
    ]) {
        let reply = server
            .call(method.clone(), path, Some(&approver), body)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "approver {method} {path}"
        );
    }
    let shown = server.admin(Method::GET, "/v1/agents/coder", None).await;
    assert_eq!(shown.body["state"], "active");
    assert_eq!(shown.body["revision"], 1);
    let forbidden = server
        .events()
        .await
        .into_iter()
        .filter(|e| e.code.as_deref() == Some("forbidden"))
        .count();
    assert_eq!(forbidden, writes.len() * 2 + 2);
}

async fn user_credentials_rotate_and_users_are_removed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let old = server.add_user("carol", "auditor").await;
    assert!(old.starts_with("aims_h_"));
    let dup = server
        .admin(
            Method::POST,
            "/v1/users",
            Some(json!({"name": "carol", "role": "admin"})),
        )
        .await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::CONFLICT, "user_exists")
    );
    let bad_role = server
        .admin(
            Method::POST,
            "/v1/users",
            Some(json!({"name": "x", "role": "root"})),
        )
        .await;
    assert_eq!(bad_role.code(), "invalid_body");

    // A user may rotate their own credential; the old one stops working at once.
    let rotated = server
        .call(Method::POST, "/v1/users/carol/rotate", Some(&old), None)
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .call(Method::GET, "/v1/agents", Some(&old), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .call(Method::GET, "/v1/agents", Some(&new), None)
            .await
            .status,
        StatusCode::OK
    );
    // The new credential is never logged.
    assert!(!server.records().await.iter().any(|r| r.body.contains(&new)));

    let listed = server.admin(Method::GET, "/v1/users", None).await;
    let names: Vec<_> = listed.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "carol"]);
    assert!(!listed.body.to_string().contains("hash"));

    let removed = server.admin(Method::DELETE, "/v1/users/carol", None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .call(Method::GET, "/v1/agents", Some(&new), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let gone = server.admin(Method::DELETE, "/v1/users/carol", None).await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "user_not_found")
    );
}

async fn last_admin_cannot_be_removed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let reply = server.admin(Method::DELETE, "/v1/users/admin", None).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::CONFLICT, "last_admin")
    );
    let second = server.add_user("root2", "admin").await;
    let reply = server
        .call(Method::DELETE, "/v1/users/admin", Some(&second), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.admin(Method::GET, "/v1/agents", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}
