//! The router driven without sockets (`tower::ServiceExt::oneshot`): the agent-authentication
//! extractor and the one error map, each answer checked as a client sees it (status, code,
//! challenge, cache headers) and as the audit log records it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use aims_core::audit::Outcome;
use aims_server::config::{Config, ENV_BOOTSTRAP_TOKEN};
use aims_server::limits::Rate;
use aims_server::routes::router;
use aims_server::server::app_state;
use aims_store::Store;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt as _;

use crate::kit::{ADMIN_TOKEN, Backend, config_with, open_store};

/// The issuer the router believes it serves.
const ISSUER: &str = "http://aims.test";

/// A router over a fresh SQLite store, its configuration adjusted by `tune`.
struct App {
    router: Router,
    store: Arc<dyn Store>,
    _dir: TempDir,
}

impl App {
    async fn new(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(Backend::Sqlite, &dir).await;
        let env = HashMap::from([(ENV_BOOTSTRAP_TOKEN.to_owned(), ADMIN_TOKEN.to_owned())]);
        let mut config = config_with(&dir, &env);
        tune(&mut config);
        let lookup = |name: &str| env.get(name).cloned();
        let (state, _) = app_state(config, store.clone(), &lookup, ISSUER.to_owned())
            .await
            .unwrap();
        Self {
            router: router(state),
            store,
            _dir: dir,
        }
    }

    /// Sends `request` as if from a documentation address; the status, headers and JSON body.
    async fn call(&self, mut request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, body)
    }

    /// The codes of the audited refusals, oldest first.
    async fn refusal_codes(&self) -> Vec<String> {
        self.store.sequence_audit().await.unwrap();
        let records = self.store.audit_records(0, 1000).await.unwrap();
        records
            .iter()
            .map(|r| r.event().unwrap())
            .filter(|e| e.outcome == Outcome::Denied)
            .filter_map(|e| e.code)
            .collect()
    }
}

fn decision_request(authorization: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post("/v1/decisions").header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let body = json!({"action": "read", "resource": {"type": "Resource", "id": "r",
                      "system": "s", "environment": "dev", "sensitivity": "internal",
                      "kind": "repository"}});
    request.body(Body::from(body.to_string())).unwrap()
}

fn challenge(headers: &HeaderMap) -> &str {
    headers[header::WWW_AUTHENTICATE].to_str().unwrap()
}

/// RFC 6750 §3.1: a request without any credential is challenged without an error code, with
/// each scheme that would work (RFC 9449 §7.1: DPoP lists its proof algorithms).
const NO_CREDENTIAL_CHALLENGE: &str = "Bearer, DPoP algs=\"ES256 EdDSA Ed25519\"";

#[tokio::test]
async fn an_enforcement_point_challenges_a_request_without_a_credential() {
    let app = App::new(|_| {}).await;
    let (status, headers, body) = app.call(decision_request(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(challenge(&headers), NO_CREDENTIAL_CHALLENGE);
    // Authentication comes before the body: no credential and a bad body (or none, or the
    // wrong content type) is still the 401.
    for (content_type, bad) in [
        ("application/json", r#"{"bogus": 1}"#),
        ("application/json", "not json"),
        ("text/plain", "hello"),
    ] {
        let request = Request::post("/v1/decisions")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(bad))
            .unwrap();
        let (status, headers, body) = app.call(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(challenge(&headers), NO_CREDENTIAL_CHALLENGE);
    }
    assert_eq!(app.refusal_codes().await, ["invalid_request"; 4]);
}

#[tokio::test]
async fn the_extractor_answers_each_presentation_with_its_scheme() {
    let app = App::new(|_| {}).await;
    // A DPoP presentation is refused with a DPoP challenge listing the proof algorithms.
    let (status, headers, body) = app.call(decision_request(Some("DPoP not.a.token"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token");
    let dpop = challenge(&headers);
    assert!(
        dpop.starts_with("DPoP error=\"invalid_token\", algs=\"ES256"),
        "{dpop}"
    );
    assert!(
        headers.contains_key("dpop-nonce"),
        "a DPoP client gets a fresh nonce"
    );
    // A bearer credential that is neither a task token nor an SVID.
    let (status, headers, body) = app.call(decision_request(Some("Bearer not.a.token"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_svid");
    assert!(challenge(&headers).starts_with("Bearer "));
    // Another scheme is no credential at all.
    let (status, headers, body) = app.call(decision_request(Some("Basic dXNlcjpwYXNz"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(challenge(&headers), NO_CREDENTIAL_CHALLENGE);
    assert_eq!(
        app.refusal_codes().await,
        ["invalid_token", "invalid_svid", "invalid_request"]
    );
}

#[tokio::test]
async fn oauth_refusals_use_the_rfc_6749_form_and_are_never_cached() {
    let app = App::new(|_| {}).await;
    let request = Request::post("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, headers, body) = app.call(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].is_string(), "{body}");
    assert!(body.get("message").is_none(), "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::PRAGMA], "no-cache");

    let request = Request::post("/oauth2/introspect")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("token=x"))
        .unwrap();
    let (status, headers, body) = app.call(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(challenge(&headers), "Basic realm=\"aims\"");
    assert_eq!(
        app.refusal_codes().await,
        ["invalid_request", "invalid_client"]
    );
}

#[tokio::test]
async fn api_refusals_use_the_api_form() {
    let app = App::new(|_| {}).await;
    let (status, headers, body) = app
        .call(Request::get("/v1/agents").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthenticated");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    // RFC 7235 §3.1: a 401 names the scheme that would work.
    assert_eq!(challenge(&headers), "Bearer realm=\"aims\"");
    let (status, _, body) = app
        .call(Request::get("/v1/nowhere").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
    let (status, _, body) = app
        .call(Request::get("/v1/decisions").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
}

/// Every extractor's refusal (query, path, body) is the error map's JSON with a stable code,
/// never axum's `text/plain` rejection.
#[tokio::test]
async fn every_extractor_rejection_is_json() {
    let app = App::new(|_| {}).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let get = |uri: &str| {
        Request::get(uri)
            .header(header::AUTHORIZATION, &admin)
            .body(Body::empty())
            .unwrap()
    };
    let large = "x".repeat(100 * 1024);
    let cases = [
        (
            get("/v1/tasks?agent="),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            get("/v1/tasks?limit=many"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            get("/v1/revocations?since=abc"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            get("/v1/revocations/stream?since=abc"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            get("/v1/audit?after=abc"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        // Without a credential the feed refuses the caller before reading its query.
        (
            Request::get("/v1/revocations?since=abc")
                .body(Body::empty())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Request::get("/v1/revocations/stream?since=abc")
                .body(Body::empty())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        // A path segment that is not UTF-8 once percent-decoded.
        (
            get("/v1/tasks/%FF"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            get("/v1/resource-servers/%FF%FE"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            get("/v1/agents/%FF"),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            Request::post("/oauth2/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(large.clone()))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Request::post("/ssf/streams")
                .header(header::AUTHORIZATION, &admin)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(large))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let uri = request.uri().to_string();
        let (got, headers, body) = app.call(request).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{uri}: {body}"
        );
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{uri}");
    }
}

#[tokio::test]
async fn a_spent_rate_limit_answers_429_with_retry_after() {
    let app = App::new(|config| {
        config.rate_limit_per_source = Rate::parse("1/1").unwrap();
    })
    .await;
    let (first, _, _) = app.call(decision_request(None)).await;
    assert_eq!(first, StatusCode::UNAUTHORIZED);
    let (status, headers, body) = app.call(decision_request(None)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
}
