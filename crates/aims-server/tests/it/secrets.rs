//! Brokered secrets over HTTP: admins store and rotate them, nobody but the resource servers a
//! secret names reads its value, and the value is in no answer, audit event or stored row in
//! clear.

use aims_core::id::SecretName;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::kit::{ADMIN_TOKEN, Backend, Reply, TestServer};
use crate::on_both_stores;

on_both_stores!(
    only_named_readers_read_a_secret,
    bad_secrets_are_refused_and_change_nothing,
);

/// A value no other test data contains, to search for.
const CANARY: &str = "ghp_CANARY_3f9a1c77d2e54b0b";

/// Registers resource server `name` (system github) and returns its client secret.
async fn resource_server(server: &TestServer, name: &str) -> String {
    let reply = server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": name, "audience": format!("https://{name}.acme.example"), "system": "github"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["client_secret"].as_str().unwrap().to_owned()
}

/// `GET /v1/secrets/{name}/value` as resource server `reader` with `secret`.
async fn read_value(server: &TestServer, name: &str, reader: &str, secret: &str) -> Reply {
    server
        .send(
            server
                .http
                .get(format!("{}/v1/secrets/{name}/value", server.base))
                .basic_auth(reader, Some(secret)),
        )
        .await
}

async fn only_named_readers_read_a_secret(backend: Backend) {
    let server = TestServer::start(backend).await;
    let gateway = resource_server(&server, "gateway").await;
    let other = resource_server(&server, "other-tools").await;
    let auditor = server.add_user("audrey", "auditor").await;
    let approver = server.add_user("carol", "approver").await;

    let stored = server
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(
                json!({"name": "github-token", "value": CANARY, "readers": ["gateway"],
                        "rotation_period_s": 2_592_000, "description": "repository deploy token"}),
            ),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    assert_eq!(stored.body["version"], 1);
    assert_eq!(stored.body["readers"], json!(["gateway"]));
    assert_eq!(stored.body["rotation_overdue"], false);
    assert!(stored.body["rotation_due_at"].is_string());

    // Operators see everything but the value; auditors read, approvers do not.
    let listed = server
        .call(Method::GET, "/v1/secrets", Some(&auditor), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["secrets"][0]["name"], "github-token");
    let shown = server
        .admin(Method::GET, "/v1/secrets/github-token", None)
        .await;
    assert_eq!(shown.body["created_by"], "admin");
    let refused = server
        .call(Method::GET, "/v1/secrets", Some(&approver), None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // The named reader reads the current value, never cached.
    let read = read_value(&server, "github-token", "gateway", &gateway).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["value"], CANARY);
    assert_eq!(read.body["version"], 1);
    assert_eq!(read.headers["cache-control"], "no-store");
    let event = server.last_event("secret.read").await;
    assert!(format!("{:?}", event.actor).contains("gateway"));

    // Anyone else learns nothing: another resource server, an operator, no credential.
    let not_reader = read_value(&server, "github-token", "other-tools", &other).await;
    assert_eq!(
        (not_reader.status, not_reader.code()),
        (StatusCode::NOT_FOUND, "secret_not_found")
    );
    let unknown = read_value(&server, "no-such-secret", "gateway", &gateway).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "secret_not_found")
    );
    let wrong_secret = read_value(&server, "github-token", "gateway", "aims_r_wrong").await;
    assert_eq!(
        (wrong_secret.status, wrong_secret.code()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let operator = server
        .call(
            Method::GET,
            "/v1/secrets/github-token/value",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (operator.status, operator.code()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let anonymous = server
        .call(Method::GET, "/v1/secrets/github-token/value", None, None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Rotation makes a new current version.
    let rotated = server
        .admin(
            Method::POST,
            "/v1/secrets/github-token/rotate",
            Some(json!({"value": format!("{CANARY}-v2")})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert_eq!(rotated.body["version"], 2);
    let read = read_value(&server, "github-token", "gateway", &gateway).await;
    assert_eq!(read.body["value"], format!("{CANARY}-v2"));
    assert_eq!(read.body["version"], 2);

    // The value is stored sealed, and no audit event or operator answer holds it.
    let (_, sealed) = server
        .store
        .secret_value(&SecretName::new("github-token").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!sealed.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));
    let events: Vec<Value> = server
        .events()
        .await
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert!(events.iter().any(|e| e["action"] == "secret.rotate"));
    for text in events.iter().map(Value::to_string).chain([
        listed.body.to_string(),
        shown.body.to_string(),
        rotated.body.to_string(),
    ]) {
        assert!(!text.contains(CANARY), "the value leaked into {text}");
    }

    // Deleted: nobody reads it any more.
    let deleted = server
        .admin(Method::DELETE, "/v1/secrets/github-token", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let gone = read_value(&server, "github-token", "gateway", &gateway).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

async fn bad_secrets_are_refused_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    resource_server(&server, "gateway").await;
    let put = |body: Value| server.admin(Method::POST, "/v1/secrets", Some(body));
    let first = put(json!({"name": "api-key", "value": "v", "readers": ["gateway"]})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let rejects = server.count_events("api.reject").await;
    let cases = [
        (
            put(json!({"name": "api-key", "value": "v2", "readers": ["gateway"]})).await,
            StatusCode::CONFLICT,
            "secret_exists",
        ),
        (
            put(json!({"name": "x", "value": "", "readers": ["gateway"]})).await,
            StatusCode::BAD_REQUEST,
            "invalid_secret",
        ),
        (
            put(json!({"name": "x", "value": "a".repeat(16 * 1024 + 1), "readers": ["gateway"]}))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_secret",
        ),
        (
            put(json!({"name": "x", "value": "v", "readers": []})).await,
            StatusCode::BAD_REQUEST,
            "invalid_secret",
        ),
        (
            put(json!({"name": "x", "value": "v", "readers": ["nobody"]})).await,
            StatusCode::BAD_REQUEST,
            "resource_server_not_found",
        ),
        (
            put(json!({"name": "x", "value": "v", "readers": ["gateway"], "rotation_period_s": 0}))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_secret",
        ),
        (
            put(json!({"name": "../x", "value": "v", "readers": ["gateway"]})).await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            put(json!({"name": "x", "value": "v", "readers": ["gateway"], "shown": true})).await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            server
                .admin(
                    Method::POST,
                    "/v1/secrets/nope/rotate",
                    Some(json!({"value": "v"})),
                )
                .await,
            StatusCode::NOT_FOUND,
            "secret_not_found",
        ),
        (
            server.admin(Method::DELETE, "/v1/secrets/nope", None).await,
            StatusCode::NOT_FOUND,
            "secret_not_found",
        ),
    ];
    for (reply, status, code) in &cases {
        assert_eq!(
            (reply.status, reply.code()),
            (*status, *code),
            "{}",
            reply.body
        );
    }
    assert_eq!(
        server.count_events("api.reject").await,
        rejects + cases.len()
    );
    let listed = server.admin(Method::GET, "/v1/secrets", None).await;
    assert_eq!(listed.body["secrets"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["secrets"][0]["version"], 1);
}
