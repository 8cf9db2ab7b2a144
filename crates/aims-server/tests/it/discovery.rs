//! Public documents: RFC 8414 metadata, JWKS, SPIFFE bundle, OpenAPI; key rotation with
//! overlap; health, readiness and metrics; request ids.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::{ADMIN_TOKEN, Backend, TestServer};
use crate::on_both_stores;

on_both_stores!(
    metadata_jwks_and_bundle_are_served_without_credentials,
    rotation_publishes_next_current_previous_and_never_reuses_kids,
    every_documented_route_exists,
    health_readiness_metrics_and_request_ids,
);

async fn metadata_jwks_and_bundle_are_served_without_credentials(backend: Backend) {
    let server = TestServer::start(backend).await;
    let meta = server
        .call(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            None,
            None,
        )
        .await;
    assert_eq!(meta.status, StatusCode::OK);
    assert_eq!(meta.body["issuer"], server.base);
    assert_eq!(
        meta.body["jwks_uri"],
        format!("{}/.well-known/jwks.json", server.base)
    );
    // Only endpoints that exist are advertised (no browser flow: no authorization endpoint).
    assert_eq!(
        meta.body["token_endpoint"],
        format!("{}/oauth2/token", server.base)
    );
    assert!(meta.body.get("authorization_endpoint").is_none());
    // RFC 8414 §2 requires response_types_supported, and §3.2 forbids an empty array: the
    // response type that issues nothing.
    assert_eq!(meta.body["response_types_supported"], json!(["none"]));
    // Not an OpenID provider: no OIDC discovery document.
    let oidc = server
        .call(Method::GET, "/.well-known/openid-configuration", None, None)
        .await;
    assert_eq!(oidc.status, StatusCode::NOT_FOUND);

    let jwks = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "current and next");
    for key in keys {
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256");
        assert!(key["kid"].as_str().unwrap().len() >= 16);
        assert!(key.get("d").is_none(), "no private material");
    }
    let bundle = server
        .call(Method::GET, "/.well-known/spiffe-bundle", None, None)
        .await;
    assert_eq!(bundle.body["spiffe_sequence"], 1);
    assert_eq!(bundle.body["spiffe_refresh_hint"], 300);
    let bundle_kids: HashSet<_> = bundle.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(k["use"], "jwt-svid");
            k["kid"].as_str().unwrap().to_owned()
        })
        .collect();
    let jwks_kids: HashSet<_> = keys
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bundle_kids, jwks_kids);
}

async fn rotation_publishes_next_current_previous_and_never_reuses_kids(backend: Backend) {
    let server = TestServer::start(backend).await;
    let kids = |reply: &crate::kit::Reply| -> Vec<(String, String)> {
        reply.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap().to_owned(),
                    k["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let initial = server.admin(Method::GET, "/v1/keys", None).await;
    let initial_kids = kids(&initial);
    let current0 = initial_kids
        .iter()
        .find(|(_, s)| s == "current")
        .unwrap()
        .0
        .clone();
    let next0 = initial_kids
        .iter()
        .find(|(_, s)| s == "next")
        .unwrap()
        .0
        .clone();

    let first = server.admin(Method::POST, "/v1/keys/rotate", None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["sequence"], 2);
    let after = kids(&first);
    assert!(after.contains(&(next0.clone(), "current".into())));
    assert!(after.contains(&(current0.clone(), "previous".into())));
    let jwks = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(jwks.body["keys"].as_array().unwrap().len(), 3);

    let second = server.admin(Method::POST, "/v1/keys/rotate", None).await;
    let after = kids(&second);
    assert!(after.contains(&(current0.clone(), "retired".into())));
    let jwks = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let published: Vec<_> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(published.len(), 3);
    assert!(
        !published.contains(&current0),
        "retired keys are not published"
    );
    let all: HashSet<_> = after.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(all.len(), after.len(), "kids are unique");
    let bundle = server
        .call(Method::GET, "/.well-known/spiffe-bundle", None, None)
        .await;
    assert_eq!(bundle.body["spiffe_sequence"], 3);
    assert_eq!(server.count_events("key.rotate").await, 2);
}

async fn every_documented_route_exists(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    server.add_user("carol", "auditor").await;
    let doc = server
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.len() >= 20);
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace(
                "{name}",
                if path.starts_with("/v1/users") {
                    "carol"
                } else {
                    "coder"
                },
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            if ops[method.as_str().to_lowercase()]["responses"]["200"]["content"]
                .get("text/event-stream")
                .is_some()
            {
                // An event stream never ends: check that it opens, then hang up.
                let resp = server
                    .http
                    .request(method.clone(), format!("{}{concrete}", server.base))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "documented {method} {path}");
                assert_eq!(resp.headers()["content-type"], "text/event-stream");
                continue;
            }
            let reply = server
                .admin(method.clone(), &concrete, Some(serde_json::json!({})))
                .await;
            assert!(
                !matches!(reply.code(), "no_route" | "method_not_allowed"),
                "documented {method} {path} is not served"
            );
        }
    }
    let unknown = server.admin(Method::GET, "/v1/nothing-here", None).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "no_route")
    );
}

async fn health_readiness_metrics_and_request_ids(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_eq!(
        server
            .call(Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);

    let resp = server
        .send(
            server
                .http
                .get(format!("{}/v1/agents", server.base))
                .bearer_auth(crate::kit::ADMIN_TOKEN)
                .header("x-request-id", "req-12345"),
        )
        .await;
    assert_eq!(resp.headers["x-request-id"], "req-12345");
    let read = server.events().await.into_iter().last().unwrap();
    assert_eq!(read.action, "api.read");
    assert_eq!(read.request_id.as_deref(), Some("req-12345"));
    assert_eq!(read.resource.as_deref(), Some("GET /v1/agents"));

    let generated = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(generated.headers["x-request-id"].len(), 32);

    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("aims_http_requests_total"), "{metrics}");
    assert!(metrics.contains("aims_audit_events_total"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/agents\""), "{metrics}");
    // The readiness heartbeat above committed through a store write transaction.
    for written in [
        "aims_store_write_batch_size_count",
        "aims_store_write_lock_seconds_count",
    ] {
        let count = metrics
            .lines()
            .find_map(|line| line.strip_prefix(written))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{written} missing: {metrics}"));
        assert!(count >= 1, "{written} {count}");
    }
}
