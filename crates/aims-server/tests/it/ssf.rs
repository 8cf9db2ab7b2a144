//! Shared Signals over HTTP: the transmitter metadata, streams created by resource servers
//! and operators, CAEP SETs for revoked tokens and identities that verify against the JWKS,
//! acknowledgements, long polls that wake on a revocation, receivers kept apart, bad input
//! refused, push delivery to a loopback receiver where private networks are allowed, and no
//! push to the server's own network where they are not (the default); streams updated and
//! replaced (only the receiver's properties change, the transmitter's are checked), statuses
//! that hold or drop events for poll and push, and verification events on request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aims_token::jws::{self, Alg, VerifyingKey};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use aims_server::config::{ENV_BOOTSTRAP_TOKEN, ENV_SSF_PUSH_PRIVATE_NETWORKS};

use crate::kit::{ADMIN_TOKEN, Backend, Reply, TestServer, open_store, serve_on_loopback};
use crate::on_both_stores;
use crate::task_tokens::{AUDIENCE, Scene, access_token, claims};

on_both_stores!(
    a_poll_stream_carries_signed_caep_events,
    a_long_poll_wakes_on_a_new_revocation,
    receivers_see_only_their_own_streams,
    bad_stream_requests_change_nothing,
    push_delivers_to_a_loopback_receiver,
    push_never_reaches_the_servers_own_network,
    streams_are_updated_and_replaced,
    bad_changes_change_nothing,
    status_round_trips_and_governs_polling,
    verification_events_are_signed_and_delivered,
    push_respects_status_and_carries_verifications,
);

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
const POLL: &str = "urn:ietf:rfc:8936";
const PUSH: &str = "urn:ietf:rfc:8935";

/// How a test authenticates to the SSF endpoints.
#[derive(Clone, Copy)]
enum As<'a> {
    /// A resource server, HTTP Basic.
    Rs(&'a str, &'a str),
    /// An operator, Bearer.
    User(&'a str),
    Nobody,
}

async fn ssf(
    server: &TestServer,
    who: As<'_>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let mut req = server
        .http
        .request(method, format!("{}{path}", server.base));
    req = match who {
        As::Rs(name, secret) => req.basic_auth(name, Some(secret)),
        As::User(token) => req.bearer_auth(token),
        As::Nobody => req,
    };
    if let Some(body) = body {
        req = req.json(&body);
    }
    server.send(req).await
}

impl Scene {
    fn rs(&self) -> As<'_> {
        As::Rs("repo-tools", &self.rs_secret)
    }

    fn operator(&self) -> As<'_> {
        As::User(crate::kit::ADMIN_TOKEN)
    }

    /// Creates a stream as the resource server and returns its configuration.
    async fn stream(&self, body: Value) -> Value {
        self.stream_as(self.rs(), body).await
    }

    /// Creates a stream as `who` and returns its configuration.
    async fn stream_as(&self, who: As<'_>, body: Value) -> Value {
        let reply = ssf(&self.server, who, Method::POST, "/ssf/streams", Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply.headers["cache-control"], "no-store");
        reply.body
    }

    /// Polls `stream` as the resource server.
    async fn poll(&self, stream: &Value, body: Value) -> Reply {
        self.poll_as(self.rs(), stream, body).await
    }

    /// Polls a stream of `who`.
    async fn poll_as(&self, who: As<'_>, stream: &Value, body: Value) -> Reply {
        let path = format!("/ssf/poll/{}", stream["stream_id"].as_str().unwrap());
        ssf(&self.server, who, Method::POST, &path, Some(body)).await
    }

    /// Polls the resource server's stream without waiting and returns the SETs.
    async fn sets(&self, stream: &Value) -> serde_json::Map<String, Value> {
        self.sets_as(self.rs(), stream).await
    }

    /// Polls a stream of `who` without waiting and returns the SETs.
    async fn sets_as(&self, who: As<'_>, stream: &Value) -> serde_json::Map<String, Value> {
        let reply = self
            .poll_as(who, stream, json!({"returnImmediately": true}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["sets"].as_object().unwrap().clone()
    }

    /// Revokes through the operator API.
    async fn revoke(&self, target: &str, id: &str) -> u64 {
        let reply = self
            .server
            .admin(
                Method::POST,
                "/v1/revocations",
                Some(json!({"target": target, "id": id, "reason": "incident 42"})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["revoked"].as_u64().unwrap()
    }
}

/// The `txn` of the last audit entry with `action` (the write transaction that appended it),
/// read from `/v1/audit/entries` as an operator would.
async fn audit_txn(server: &TestServer, action: &str) -> String {
    let mut after = 0;
    let mut found = None;
    loop {
        let page = server
            .admin(
                Method::GET,
                &format!("/v1/audit/entries?after={after}&limit=1000"),
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let entries = page.body["entries"].as_array().unwrap();
        if let Some(entry) = entries.iter().rev().find(|e| e["action"] == action) {
            found = Some(entry["txn"].as_str().unwrap().to_owned());
        }
        // Each read is audited too, so the log grows while it is read: a short page is the end.
        match entries.last() {
            Some(last) if entries.len() == 1000 => after = last["seq"].as_u64().unwrap(),
            _ => break,
        }
    }
    found.unwrap_or_else(|| panic!("no {action} entry"))
}

/// Verifies `set` against the server's JWKS as a third party would: ES256, `typ`
/// `secevent+jwt`, a published `kid`. Returns the claims.
async fn verify_set(server: &TestServer, set: &str) -> Value {
    let jwks = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    let verified = jws::verify(set, "secevent+jwt", &[Alg::Es256], |header| {
        let kid = header.kid.clone().unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .ok_or(aims_token::TokenError::UnknownKey)?;
        VerifyingKey::from_jwk(jwk).map(|(key, _)| key)
    })
    .unwrap();
    assert_eq!(verified.typ, "secevent+jwt");
    let claims = Value::Object(verified.claims);
    assert!(claims.get("sub").is_none(), "no sub in a SET: {claims}");
    assert!(claims.get("exp").is_none(), "no exp in a SET: {claims}");
    assert_eq!(claims["iss"], server.base);
    assert!(claims["iat"].is_i64());
    claims
}

/// The one event of a SET: its type and body.
fn event(claims: &Value) -> (String, Value) {
    let events = claims["events"].as_object().unwrap();
    assert_eq!(events.len(), 1, "{claims}");
    let (kind, body) = events.iter().next().unwrap();
    (kind.clone(), body.clone())
}

async fn a_poll_stream_carries_signed_caep_events(backend: Backend) {
    let scene = Scene::start(backend).await;
    let base = scene.server.base.clone();

    // Discovery.
    let meta = scene
        .server
        .call(Method::GET, "/.well-known/ssf-configuration", None, None)
        .await;
    assert_eq!(meta.status, StatusCode::OK);
    assert_eq!(meta.body["issuer"], base);
    assert_eq!(meta.body["spec_version"], "1_0");
    assert_eq!(
        meta.body["jwks_uri"],
        format!("{base}/.well-known/jwks.json")
    );
    assert_eq!(meta.body["delivery_methods_supported"], json!([PUSH, POLL]));
    assert_eq!(
        meta.body["configuration_endpoint"],
        format!("{base}/ssf/streams")
    );
    assert_eq!(meta.body["status_endpoint"], format!("{base}/ssf/status"));
    assert_eq!(
        meta.body["verification_endpoint"],
        format!("{base}/ssf/verify")
    );
    assert_eq!(
        meta.body["authorization_schemes"],
        json!([{"spec_urn": "urn:ietf:rfc:6749"}])
    );
    assert_eq!(meta.body["default_subjects"], "ALL");

    // A poll stream for the resource server; unknown event types are ignored.
    let stream = scene
        .stream(json!({
            "delivery": {"method": POLL},
            "events_requested": [SESSION_REVOKED, CREDENTIAL_CHANGE, "urn:example:unknown"],
            "description": "revocations for the repo tools",
            "format": "jwt_id",
        }))
        .await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();
    assert_eq!(stream["iss"], base);
    assert_eq!(stream["aud"], AUDIENCE);
    assert_eq!(
        stream["delivery"],
        json!({"method": POLL, "endpoint_url": format!("{base}/ssf/poll/{id}")})
    );
    assert_eq!(
        stream["events_supported"],
        json!([SESSION_REVOKED, CREDENTIAL_CHANGE])
    );
    assert_eq!(
        stream["events_delivered"],
        json!([SESSION_REVOKED, CREDENTIAL_CHANGE])
    );
    assert_eq!(stream["events_requested"][2], "urn:example:unknown");
    assert_eq!(stream["description"], "revocations for the repo tools");
    let created = scene.server.last_event("ssf.stream.create").await;
    assert_eq!(
        created.resource.as_deref(),
        Some(format!("ssf_stream:{id}").as_str())
    );
    assert_eq!(
        scene
            .server
            .call(
                Method::GET,
                &format!("/ssf/status?stream_id={id}"),
                None,
                None
            )
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let status = ssf(
        &scene.server,
        scene.rs(),
        Method::GET,
        &format!("/ssf/status?stream_id={id}"),
        None,
    )
    .await;
    assert_eq!(status.body, json!({"stream_id": id, "status": "enabled"}));

    // Nothing yet; a stream carries only what is revoked after it exists.
    let empty = scene
        .poll(&stream, json!({"returnImmediately": true}))
        .await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.body, json!({"sets": {}, "moreAvailable": false}));

    // A revoked access token: one session-revoked SET.
    let token = access_token(&scene.exchange("read:repo/acme/app").await);
    let token_jti = claims(&token)["jti"].as_str().unwrap().to_owned();
    assert_eq!(scene.revoke("token", &token_jti).await, 1);
    let sets = scene.sets(&stream).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let (set_jti, set) = sets.iter().next().unwrap();
    let c = verify_set(&scene.server, set.as_str().unwrap()).await;
    assert_eq!(&c["jti"], set_jti);
    assert!(set_jti.starts_with(&format!("{id}.")));
    assert_eq!(c["aud"], AUDIENCE);
    assert_eq!(
        c["sub_id"],
        json!({"format": "jwt_id", "iss": base, "jti": token_jti})
    );
    let (kind, body) = event(&c);
    assert_eq!(kind, SESSION_REVOKED);
    assert_eq!(body["initiating_entity"], "admin");
    assert!(
        body.get("reason_admin").is_none(),
        "the operator's reason reaches operators only: {body}"
    );
    assert!(body["event_timestamp"].as_i64().unwrap() >= c["iat"].as_i64().unwrap() - 60);
    // The SET names the transaction of the revocation (RFC 8417 `txn`): its audit record's.
    let token_txn = c["txn"].as_str().unwrap().to_owned();
    assert_eq!(token_txn, audit_txn(&scene.server, "revoke").await);

    // Not acknowledged: delivered again, with the same jti; acknowledged: gone.
    let again = scene.sets(&stream).await;
    assert_eq!(again.keys().collect::<Vec<_>>(), [set_jti]);
    let acked = scene
        .poll(
            &stream,
            json!({"ack": [set_jti], "maxEvents": 0, "returnImmediately": true}),
        )
        .await;
    assert_eq!(acked.body, json!({"sets": {}, "moreAvailable": false}));
    assert!(scene.sets(&stream).await.is_empty());
    // A repeated acknowledgement (a lost answer) is harmless.
    let repeated = scene
        .poll(
            &stream,
            json!({"ack": [set_jti], "returnImmediately": true}),
        )
        .await;
    assert_eq!(repeated.status, StatusCode::OK, "{}", repeated.body);

    // Ending a task revokes its tokens: one SET per revoked credential.
    let first = access_token(&scene.exchange("read:repo/acme/app").await);
    let task_id = claims(&first)["task_id"].as_str().unwrap().to_owned();
    let delegated = access_token(&scene.delegate(&first, &[]).await);
    let ended = scene
        .server
        .admin(Method::POST, &format!("/v1/tasks/{task_id}/end"), None)
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    let sets = scene.sets(&stream).await;
    let mut revoked = Vec::new();
    let mut txns = Vec::new();
    for set in sets.values() {
        let c = verify_set(&scene.server, set.as_str().unwrap()).await;
        let (kind, body) = event(&c);
        assert_eq!(kind, SESSION_REVOKED);
        assert!(body.get("reason_admin").is_none(), "{body}");
        revoked.push(c["sub_id"]["jti"].as_str().unwrap().to_owned());
        txns.push(c["txn"].clone());
    }
    // One revocation, one transaction: every SET of the cascade carries the `txn` of the
    // task's end in the audit log, and not the earlier revocation's.
    let end_txn = audit_txn(&scene.server, "task.end").await;
    assert_eq!(txns, [json!(end_txn), json!(end_txn)]);
    assert_ne!(end_txn, token_txn);
    revoked.sort();
    let mut expected = vec![
        claims(&first)["jti"].as_str().unwrap().to_owned(),
        claims(&delegated)["jti"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert_eq!(revoked, expected);

    // A small page says more is available; a SET the receiver reports as an error is not
    // sent again.
    let page = scene
        .poll(&stream, json!({"maxEvents": 1, "returnImmediately": true}))
        .await;
    assert_eq!(page.body["sets"].as_object().unwrap().len(), 1);
    assert_eq!(page.body["moreAvailable"], true);
    let jtis: Vec<String> = sets.keys().cloned().collect();
    let mut errs = serde_json::Map::new();
    errs.insert(
        jtis[1].clone(),
        json!({"err": "invalid_key", "description": "stale JWKS"}),
    );
    let reported = scene
        .poll(
            &stream,
            json!({"ack": [jtis[0]], "setErrs": errs, "returnImmediately": true}),
        )
        .await;
    assert_eq!(reported.body, json!({"sets": {}, "moreAvailable": false}));
    let read = scene.server.last_event("api.read").await;
    assert_eq!(read.details["set_errors"][&jtis[1]], "invalid_key");

    // The executor's kill switch revokes its identity: a credential-change SET on an
    // operator's stream, with the reason; none on the resource server's, which the identity
    // was never issued for.
    let operator = scene.stream_as(scene.operator(), json!({})).await;
    let svid_jti = claims(&scene.executor.svid)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    scene.revoke("agent", "executor").await;
    let is_svid = |s: &&Value| claims(s.as_str().unwrap())["sub_id"]["jti"] == svid_jti.as_str();
    assert!(
        !scene.sets(&stream).await.values().any(|s| is_svid(&s)),
        "the resource server sees no identity revocation"
    );
    let sets = scene.sets_as(scene.operator(), &operator).await;
    let svid_set = sets
        .values()
        .find(is_svid)
        .expect("a SET for the executor's identity");
    let c = verify_set(&scene.server, svid_set.as_str().unwrap()).await;
    let (kind, body) = event(&c);
    assert_eq!(kind, CREDENTIAL_CHANGE);
    assert_eq!(body["change_type"], "revoke");
    assert_eq!(body["credential_type"], "verifiable-credential");
    assert_eq!(body["initiating_entity"], "admin");
    assert_eq!(body["reason_admin"], json!({"en": "incident 42"}));

    // An operator's stream that asked only for session events never sees identity
    // revocations.
    let sessions = scene
        .stream_as(
            scene.operator(),
            json!({"events_requested": [SESSION_REVOKED]}),
        )
        .await;
    assert_eq!(sessions["delivery"]["method"], POLL, "poll is the default");
    assert_eq!(sessions["events_delivered"], json!([SESSION_REVOKED]));
    let live = access_token(&scene.exchange("read:repo/acme/app").await);
    // The planner's identity and its live token.
    assert_eq!(scene.revoke("agent", "planner").await, 2);
    let sets = scene.sets_as(scene.operator(), &sessions).await;
    assert_eq!(sets.len(), 1, "only the token: {sets:?}");
    let set = sets.values().next().unwrap().as_str().unwrap();
    assert_eq!(event(&claims(set)).0, SESSION_REVOKED);
    assert_eq!(claims(set)["sub_id"]["jti"], claims(&live)["jti"]);
    // The skipped identity does not hold the stream back.
    assert!(scene.sets_as(scene.operator(), &sessions).await.len() == 1);
    let acked = scene
        .poll_as(
            scene.operator(),
            &sessions,
            json!({"ack": sets.keys().collect::<Vec<_>>(), "returnImmediately": true}),
        )
        .await;
    assert_eq!(acked.body, json!({"sets": {}, "moreAvailable": false}));
}

async fn a_long_poll_wakes_on_a_new_revocation(backend: Backend) {
    let scene = Arc::new(Scene::start(backend).await);
    let stream = scene.stream(json!({})).await;
    let token = access_token(&scene.exchange("read:repo/acme/app").await);
    let jti = claims(&token)["jti"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let waiting = {
        let scene = scene.clone();
        let stream = stream.clone();
        tokio::spawn(async move { scene.poll(&stream, json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a long poll waits for an event");
    scene.revoke("token", &jti).await;
    let reply = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll woke")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let sets = reply.body["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 1);
    let set = sets.values().next().unwrap().as_str().unwrap();
    assert_eq!(claims(set)["sub_id"]["jti"], jti.as_str());
}

async fn receivers_see_only_their_own_streams(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let other = server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "other-tools", "audience": "https://other.example", "system": "jira"})),
        )
        .await;
    let other_secret = other.body["client_secret"].as_str().unwrap().to_owned();
    let other = As::Rs("other-tools", &other_secret);

    let mine = scene.stream(json!({})).await;
    let id = mine["stream_id"].as_str().unwrap().to_owned();
    let theirs = ssf(server, other, Method::POST, "/ssf/streams", Some(json!({}))).await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_eq!(theirs.body["aud"], "https://other.example");

    // Each lists only its own.
    let listed = ssf(server, scene.rs(), Method::GET, "/ssf/streams", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body, json!([mine]));
    let one = ssf(
        server,
        scene.rs(),
        Method::GET,
        &format!("/ssf/streams?stream_id={id}"),
        None,
    )
    .await;
    assert_eq!(one.body, mine);
    assert_eq!(
        server.last_event("api.read").await.resource.as_deref(),
        Some("GET /ssf/streams")
    );

    // Another receiver cannot see, poll, query or delete it: it does not exist for them.
    for (method, path) in [
        (Method::GET, format!("/ssf/streams?stream_id={id}")),
        (Method::GET, format!("/ssf/status?stream_id={id}")),
        (Method::POST, format!("/ssf/poll/{id}")),
        (Method::DELETE, format!("/ssf/streams?stream_id={id}")),
    ] {
        let reply = ssf(
            server,
            other,
            method.clone(),
            &path,
            Some(json!({"returnImmediately": true})),
        )
        .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::NOT_FOUND, "stream_not_found"),
            "{method} {path}"
        );
    }
    // Nor can the anonymous or a wrong secret.
    let anonymous = ssf(server, As::Nobody, Method::GET, "/ssf/streams", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers["www-authenticate"],
        "Basic realm=\"aims\""
    );
    let wrong = ssf(
        server,
        As::Rs("repo-tools", "nope"),
        Method::POST,
        &format!("/ssf/poll/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    assert_eq!(
        server.last_event("api.reject").await.code.as_deref(),
        Some("invalid_client")
    );

    // Operators have streams of their own; an auditor reads but may not create.
    let admin = ssf(
        server,
        As::User(ADMIN_TOKEN),
        Method::POST,
        "/ssf/streams",
        Some(json!({})),
    )
    .await;
    assert_eq!(admin.status, StatusCode::CREATED, "{}", admin.body);
    assert_eq!(admin.body["aud"], "urn:aims:user:admin");
    let auditor = server.add_user("carol", "auditor").await;
    let listed = ssf(
        server,
        As::User(&auditor),
        Method::GET,
        "/ssf/streams",
        None,
    )
    .await;
    assert_eq!(listed.body, json!([]));
    let refused = ssf(
        server,
        As::User(&auditor),
        Method::POST,
        "/ssf/streams",
        Some(json!({})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // The owner deletes it; then it is gone for the owner too.
    let before = server.count_events("ssf.stream.delete").await;
    let deleted = ssf(
        server,
        scene.rs(),
        Method::DELETE,
        &format!("/ssf/streams?stream_id={id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(server.count_events("ssf.stream.delete").await, before + 1);
    let gone = ssf(
        server,
        scene.rs(),
        Method::POST,
        &format!("/ssf/poll/{id}"),
        None,
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let listed = ssf(server, other, Method::GET, "/ssf/streams", None).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
}

async fn bad_stream_requests_change_nothing(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let before = server.count_events("ssf.stream.create").await;
    for (body, code) in [
        (
            json!({"delivery": {"method": "urn:example:carrier-pigeon"}}),
            "unsupported_delivery_method",
        ),
        (json!({"delivery": {"method": PUSH}}), "invalid_request"),
        (
            json!({"delivery": {"method": PUSH, "endpoint_url": "ftp://rx.example/x"}}),
            "invalid_endpoint_url",
        ),
        (
            json!({"delivery": {"method": PUSH, "endpoint_url": "https://u:p@rx.example/x"}}),
            "invalid_endpoint_url",
        ),
        (
            json!({"delivery": {"method": PUSH, "endpoint_url": "https://rx.example/x",
                             "authorization_header": "Bearer a\u{7}b"}}),
            "invalid_request",
        ),
        (
            json!({"delivery": {"method": POLL, "endpoint_url": "https://rx.example/x"}}),
            "invalid_request",
        ),
        (
            json!({"events_requested": ["urn:example:only-unknown"]}),
            "unsupported_events",
        ),
        (json!({"events_requested": []}), "invalid_events"),
        (json!({"events_requested": "not a list"}), "invalid_body"),
        (json!({"description": "x".repeat(300)}), "invalid_request"),
        (json!([1, 2]), "invalid_body"),
        // An array serde could read as the fields in order is no stream either.
        (json!([null, null]), "invalid_body"),
        (json!([null, null, null]), "invalid_body"),
    ] {
        let reply = ssf(
            server,
            scene.rs(),
            Method::POST,
            "/ssf/streams",
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, code),
            "{body}"
        );
    }
    let not_json = server
        .send(
            server
                .http
                .post(format!("{}/ssf/streams", server.base))
                .basic_auth("repo-tools", Some(&scene.rs_secret))
                .body("{nope"),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.count_events("ssf.stream.create").await, before);

    // Bad polls and queries.
    let stream = scene.stream(json!({})).await;
    let other = scene.stream(json!({})).await;
    let foreign_jti = format!("{}.1", other["stream_id"].as_str().unwrap());
    for body in [
        json!({"ack": [foreign_jti]}),
        json!({"ack": ["not-a-jti"]}),
        json!({"maxEvents": -1}),
        json!({"returnImmediately": "yes"}),
        json!({"setErrs": {"x": {"description": "no err"}}}),
        json!({"ack": vec!["x"; 1001]}),
    ] {
        let reply = scene.poll(&stream, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
    }
    let id = stream["stream_id"].as_str().unwrap();
    for path in [
        "/ssf/streams?stream_id=a&stream_id=b".to_owned(),
        format!("/ssf/streams?stream_id={id}&extra=1"),
        "/ssf/status".to_owned(),
    ] {
        let reply = ssf(server, scene.rs(), Method::GET, &path, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
    }
    let no_id = ssf(server, scene.rs(), Method::DELETE, "/ssf/streams", None).await;
    assert_eq!(no_id.status, StatusCode::BAD_REQUEST);

    // A receiver holds a bounded number of streams.
    let mut created = 2;
    loop {
        let reply = ssf(
            server,
            scene.rs(),
            Method::POST,
            "/ssf/streams",
            Some(json!({})),
        )
        .await;
        if reply.status == StatusCode::CONFLICT {
            assert_eq!(reply.code(), "too_many_streams");
            break;
        }
        assert_eq!(reply.status, StatusCode::CREATED);
        created += 1;
        assert!(created <= 16, "no bound");
    }
    assert_eq!(created, 16);
}

/// What the loopback receiver saw of one push.
#[derive(Debug)]
struct Pushed {
    content_type: String,
    authorization: String,
    body: String,
}

/// A server over `store` in `dir` that may (or may not) push to private networks.
async fn server_pushing(
    backend: Backend,
    dir: Arc<tempfile::TempDir>,
    store: Arc<dyn aims_store::Store>,
    private_networks: bool,
) -> TestServer {
    let env = HashMap::from([
        (ENV_BOOTSTRAP_TOKEN.to_owned(), ADMIN_TOKEN.to_owned()),
        (
            ENV_SSF_PUSH_PRIVATE_NETWORKS.to_owned(),
            private_networks.to_string(),
        ),
    ]);
    TestServer::start_on(backend, dir, store, env)
        .await
        .unwrap()
}

/// A scene whose server may push to loopback receivers.
async fn scene_pushing_to_loopback(backend: Backend) -> Scene {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = open_store(backend, &dir).await;
    Scene::on(server_pushing(backend, dir, store, true).await).await
}

/// A loopback receiver that accepts every SET and counts them.
async fn counting_receiver() -> (String, Arc<AtomicUsize>) {
    let received = Arc::new(AtomicUsize::new(0));
    let app = {
        let received = received.clone();
        axum::Router::new().route(
            "/events",
            axum::routing::post(move || {
                received.fetch_add(1, Ordering::SeqCst);
                async { AxumStatus::ACCEPTED }
            }),
        )
    };
    (serve_on_loopback(app).await, received)
}

async fn push_never_reaches_the_servers_own_network(backend: Backend) {
    // By default an endpoint on the server's own network is refused when the stream is made.
    let scene = Scene::start(backend).await;
    for url in [
        "http://127.0.0.1:9/events",
        "http://[::1]:9/events",
        "http://[::ffff:127.0.0.1]:9/events",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/events",
        "http://localhost:9/events",
    ] {
        let body = json!({"delivery": {"method": PUSH, "endpoint_url": url}});
        let reply = ssf(
            &scene.server,
            scene.rs(),
            Method::POST,
            "/ssf/streams",
            Some(body),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{url}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_endpoint_url", "{url}");
    }
    assert_eq!(scene.server.count_events("ssf.stream.create").await, 0);
    drop(scene);

    // A stream made while private networks were allowed gets nothing once they are not.
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = open_store(backend, &dir).await;
    let scene = Scene::on(server_pushing(backend, dir, store, true).await).await;
    let (receiver, received) = counting_receiver().await;
    let stream = scene
        .stream(json!({"delivery": {"method": PUSH, "endpoint_url": format!("{receiver}/events")}}))
        .await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();
    let token = access_token(&scene.exchange("read:repo/acme/app").await);
    let (dir, store) = scene.server.stop().await;
    let server = server_pushing(backend, dir, store, false).await;
    let revoked = server
        .admin(
            Method::POST,
            "/v1/revocations",
            Some(json!({"target": "token", "id": claims(&token)["jti"], "reason": "test"})),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.load(Ordering::SeqCst), 0, "pushed to loopback");
    let pending = server.store.ssf_pending(&id, 0).await.unwrap();
    assert!(!pending.is_empty(), "the SET stays pending");
}

async fn push_delivers_to_a_loopback_receiver(backend: Backend) {
    let scene = scene_pushing_to_loopback(backend).await;
    // The receiver refuses the first attempt (unavailable), then accepts.
    let (tx, mut rx) = mpsc::unbounded_channel::<Pushed>();
    let attempts = Arc::new(AtomicUsize::new(0));
    let app = {
        let attempts = attempts.clone();
        axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let tx = tx.clone();
                let attempts = attempts.clone();
                async move {
                    if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                        return AxumStatus::SERVICE_UNAVAILABLE;
                    }
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let _ = tx.send(Pushed {
                        content_type: header("content-type"),
                        authorization: header("authorization"),
                        body,
                    });
                    AxumStatus::ACCEPTED
                }
            }),
        )
    };
    let receiver = serve_on_loopback(app).await;
    let endpoint = format!("{receiver}/events");
    let stream = scene
        .stream(json!({
            "delivery": {"method": PUSH, "endpoint_url": endpoint,
                         "authorization_header": "Bearer receiver-secret"},
        }))
        .await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();
    assert_eq!(
        stream["delivery"],
        json!({"method": PUSH, "endpoint_url": endpoint}),
        "the authorization header is never shown"
    );
    let created = scene.server.last_event("ssf.stream.create").await;
    assert!(!created.details.to_string().contains("receiver-secret"));
    // A push stream is not polled.
    let polled = scene
        .poll(&stream, json!({"returnImmediately": true}))
        .await;
    assert_eq!(polled.status, StatusCode::BAD_REQUEST);

    let token = access_token(&scene.exchange("read:repo/acme/app").await);
    let jti = claims(&token)["jti"].as_str().unwrap().to_owned();
    scene.revoke("token", &jti).await;
    let pushed = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the SET was pushed")
        .unwrap();
    assert_eq!(pushed.content_type, "application/secevent+jwt");
    assert_eq!(pushed.authorization, "Bearer receiver-secret");
    let c = verify_set(&scene.server, &pushed.body).await;
    assert_eq!(c["sub_id"]["jti"], jti.as_str());
    assert_eq!(c["aud"], AUDIENCE);
    assert_eq!(c["txn"], audit_txn(&scene.server, "revoke").await.as_str());
    assert!(c["jti"].as_str().unwrap().starts_with(&format!("{id}.")));
    assert_eq!(event(&c).0, SESSION_REVOKED);
    assert!(
        attempts.load(Ordering::SeqCst) >= 2,
        "retried after a failure"
    );

    // Accepted deliveries are recorded: nothing stays pending, nothing is sent twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scene
        .server
        .store
        .ssf_pending(&id, 0)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the delivery was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "delivered once");

    // A deleted stream receives nothing more.
    let deleted = ssf(
        &scene.server,
        scene.rs(),
        Method::DELETE,
        &format!("/ssf/streams?stream_id={id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let other = access_token(&scene.exchange("read:repo/acme/app").await);
    scene
        .revoke("token", claims(&other)["jti"].as_str().unwrap())
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rx.try_recv().is_err(), "nothing pushed after deletion");
}

impl Scene {
    /// The resource server's stream configuration as the transmitter shows it.
    async fn config(&self, id: &str) -> Value {
        let path = format!("/ssf/streams?stream_id={id}");
        let reply = ssf(&self.server, self.rs(), Method::GET, &path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// Sends `body` to `path` with `method` as the resource server.
    async fn send(&self, method: Method, path: &str, body: Value) -> Reply {
        ssf(&self.server, self.rs(), method, path, Some(body)).await
    }

    /// Sets the stream's status as the resource server; returns the answer's body.
    async fn set_status(&self, id: &str, status: &str) -> Value {
        let reply = self
            .send(
                Method::POST,
                "/ssf/status",
                json!({"stream_id": id, "status": status}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// Asks for a verification event on the stream.
    async fn verify(&self, body: Value) -> Reply {
        self.send(Method::POST, "/ssf/verify", body).await
    }

    /// A fresh access token for the resource server's audience, revoked; returns its `jti`.
    async fn revoked_token(&self) -> String {
        let token = access_token(&self.exchange("read:repo/acme/app").await);
        let jti = claims(&token)["jti"].as_str().unwrap().to_owned();
        self.revoke("token", &jti).await;
        jti
    }
}

async fn streams_are_updated_and_replaced(backend: Backend) {
    let scene = Scene::start(backend).await;
    let base = scene.server.base.clone();
    let created = scene
        .stream(json!({"events_requested": [SESSION_REVOKED], "description": "first"}))
        .await;
    let id = created["stream_id"].as_str().unwrap().to_owned();
    let updates = scene.server.count_events("ssf.stream.update").await;

    // PATCH: the description given changes; everything else stays.
    let patched = scene
        .send(
            Method::PATCH,
            "/ssf/streams",
            json!({"stream_id": id, "description": "second"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.headers["cache-control"], "no-store");
    let mut expected = created.clone();
    expected["description"] = json!("second");
    assert_eq!(patched.body, expected);
    assert_eq!(scene.config(&id).await, expected);
    let recorded = scene.server.last_event("ssf.stream.update").await;
    assert_eq!(
        recorded.resource.as_deref(),
        Some(format!("ssf_stream:{id}").as_str())
    );
    assert_eq!(recorded.details["change"], "update");

    // A configuration read, changed and sent back (transmitter's fields and the poll
    // endpoint included) changes the event types; the description stays.
    let mut sent = scene.config(&id).await;
    sent["events_requested"] = json!([CREDENTIAL_CHANGE, "urn:example:unknown"]);
    let patched = scene.send(Method::PATCH, "/ssf/streams", sent).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["events_delivered"], json!([CREDENTIAL_CHANGE]));
    assert_eq!(
        patched.body["events_requested"],
        json!([CREDENTIAL_CHANGE, "urn:example:unknown"])
    );
    assert_eq!(patched.body["description"], "second");
    assert_eq!(patched.body["delivery"], created["delivery"]);

    // PUT: what is left out is removed (description), delivery defaults to poll.
    let replaced = scene
        .send(
            Method::PUT,
            "/ssf/streams",
            json!({"stream_id": id, "events_requested": [SESSION_REVOKED]}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert!(
        replaced.body.get("description").is_none(),
        "{}",
        replaced.body
    );
    assert_eq!(replaced.body["events_delivered"], json!([SESSION_REVOKED]));
    assert_eq!(
        replaced.body["delivery"],
        json!({"method": POLL, "endpoint_url": format!("{base}/ssf/poll/{id}")})
    );
    assert_eq!(replaced.body["iss"], base);
    assert_eq!(replaced.body["aud"], AUDIENCE);
    assert_eq!(
        scene.server.last_event("ssf.stream.update").await.details["change"],
        "replace"
    );
    assert_eq!(
        scene.server.count_events("ssf.stream.update").await,
        updates + 3
    );

    // PUT of the configuration as it is changes nothing and writes nothing.
    let same = scene.config(&id).await;
    let put = scene.send(Method::PUT, "/ssf/streams", same.clone()).await;
    assert_eq!((put.status, &put.body), (StatusCode::OK, &same));
    assert_eq!(
        scene.server.count_events("ssf.stream.update").await,
        updates + 3
    );

    // The changed event types govern what is delivered: a revoked token is a session.
    let jti = scene.revoked_token().await;
    let sets = scene.sets(&same).await;
    assert_eq!(sets.len(), 1);
    let c = verify_set(
        &scene.server,
        sets.values().next().unwrap().as_str().unwrap(),
    )
    .await;
    assert_eq!(c["sub_id"]["jti"], jti.as_str());
    assert_eq!(event(&c).0, SESSION_REVOKED);
}

async fn bad_changes_change_nothing(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let base = server.base.clone();
    let stream = scene
        .stream(json!({"events_requested": [SESSION_REVOKED], "description": "kept"}))
        .await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();
    let other = scene.stream(json!({})).await;
    let before = server.count_events("ssf.stream.update").await;
    for method in [Method::PATCH, Method::PUT] {
        for (body, status, code) in [
            (
                json!({"stream_id": id, "descripton": "typo"}),
                StatusCode::BAD_REQUEST,
                "unknown_member",
            ),
            (
                json!({"stream_id": id, "iss": "https://elsewhere.example"}),
                StatusCode::BAD_REQUEST,
                "transmitter_mismatch",
            ),
            (
                json!({"stream_id": id, "aud": "https://other.example"}),
                StatusCode::BAD_REQUEST,
                "transmitter_mismatch",
            ),
            (
                json!({"stream_id": id, "events_delivered": [CREDENTIAL_CHANGE]}),
                StatusCode::BAD_REQUEST,
                "transmitter_mismatch",
            ),
            (
                json!({"stream_id": id, "events_supported": [SESSION_REVOKED]}),
                StatusCode::BAD_REQUEST,
                "transmitter_mismatch",
            ),
            (
                json!({"stream_id": id, "min_verification_interval": 60}),
                StatusCode::BAD_REQUEST,
                "transmitter_mismatch",
            ),
            (
                json!({"stream_id": id, "description": null}),
                StatusCode::BAD_REQUEST,
                "invalid_body",
            ),
            (
                json!({"stream_id": id, "description": "x".repeat(300)}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                json!({"stream_id": id, "events_requested": []}),
                StatusCode::BAD_REQUEST,
                "invalid_events",
            ),
            (
                json!({"stream_id": id, "events_requested": ["urn:example:only-unknown"]}),
                StatusCode::BAD_REQUEST,
                "unsupported_events",
            ),
            (
                json!({"stream_id": id, "delivery": {"method": POLL,
                       "endpoint_url": format!("{base}/ssf/poll/{}", other["stream_id"].as_str().unwrap())}}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                json!({"stream_id": id, "delivery": {"method": PUSH,
                       "endpoint_url": "http://127.0.0.1:9/events"}}),
                StatusCode::BAD_REQUEST,
                "invalid_endpoint_url",
            ),
            (
                json!({"stream_id": id, "delivery": {"method": "urn:example:pigeon"}}),
                StatusCode::BAD_REQUEST,
                "unsupported_delivery_method",
            ),
            (
                json!({"description": "no id"}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                json!({"stream_id": 7}),
                StatusCode::BAD_REQUEST,
                "invalid_body",
            ),
            (json!([null, null]), StatusCode::BAD_REQUEST, "invalid_body"),
            (json!("text"), StatusCode::BAD_REQUEST, "invalid_body"),
            (
                json!({"stream_id": "no-such-stream", "description": "x"}),
                StatusCode::NOT_FOUND,
                "stream_not_found",
            ),
            (
                json!({"stream_id": "../../etc", "description": "x"}),
                StatusCode::NOT_FOUND,
                "stream_not_found",
            ),
        ] {
            let reply = scene
                .send(method.clone(), "/ssf/streams", body.clone())
                .await;
            assert_eq!(
                (reply.status, reply.code()),
                (status, code),
                "{method} {body}: {}",
                reply.body
            );
        }
        let not_json = server
            .send(
                server
                    .http
                    .request(method.clone(), format!("{base}/ssf/streams"))
                    .basic_auth("repo-tools", Some(&scene.rs_secret))
                    .body("{nope"),
            )
            .await;
        assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
        // Without credentials, or as a role that may not change streams.
        let anonymous = ssf(
            server,
            As::Nobody,
            method.clone(),
            "/ssf/streams",
            Some(json!({"stream_id": id, "description": "x"})),
        )
        .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }
    let auditor = server.add_user("carol", "auditor").await;
    let refused = ssf(
        server,
        As::User(&auditor),
        Method::PATCH,
        "/ssf/streams",
        Some(json!({"stream_id": id, "description": "x"})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Another receiver's stream does not exist for it.
    let rs = server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "other-tools", "audience": "https://other.example", "system": "jira"})),
        )
        .await;
    let secret = rs.body["client_secret"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (
            Method::PATCH,
            "/ssf/streams",
            json!({"stream_id": id, "description": "x"}),
        ),
        (Method::PUT, "/ssf/streams", json!({"stream_id": id})),
        (
            Method::POST,
            "/ssf/status",
            json!({"stream_id": id, "status": "paused"}),
        ),
        (Method::POST, "/ssf/verify", json!({"stream_id": id})),
    ] {
        let reply = ssf(
            server,
            As::Rs("other-tools", &secret),
            method.clone(),
            path,
            Some(body),
        )
        .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::NOT_FOUND, "stream_not_found"),
            "{method} {path}"
        );
    }
    assert_eq!(scene.config(&id).await, stream, "nothing changed");
    assert_eq!(server.count_events("ssf.stream.update").await, before);
    assert_eq!(server.count_events("ssf.stream.status").await, 0);
    assert_eq!(server.count_events("ssf.stream.verify").await, 0);
}

async fn status_round_trips_and_governs_polling(backend: Backend) {
    let scene = Scene::start(backend).await;
    let stream = scene.stream(json!({})).await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();
    let status_path = format!("/ssf/status?stream_id={id}");
    let read = ssf(&scene.server, scene.rs(), Method::GET, &status_path, None).await;
    assert_eq!(read.body, json!({"stream_id": id, "status": "enabled"}));

    // Paused, with a reason: read back as set; what is revoked meanwhile waits.
    let set = scene
        .send(
            Method::POST,
            "/ssf/status",
            json!({"stream_id": id, "status": "paused", "reason": "maintenance"}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.headers["cache-control"], "no-store");
    let paused = json!({"stream_id": id, "status": "paused", "reason": "maintenance"});
    assert_eq!(set.body, paused);
    let read = ssf(&scene.server, scene.rs(), Method::GET, &status_path, None).await;
    assert_eq!(read.body, paused);
    let event = scene.server.last_event("ssf.stream.status").await;
    assert_eq!(event.details, json!({"from": "enabled", "to": "paused"}));
    let held = scene.revoked_token().await;
    assert!(
        scene.sets(&stream).await.is_empty(),
        "a paused stream sends nothing"
    );
    // A long poll on a paused stream answers nothing when its time is up.
    let waited = scene.poll(&stream, json!({"maxEvents": 10})).await;
    assert_eq!(waited.status, StatusCode::OK);
    assert_eq!(waited.body["sets"], json!({}));

    // Enabled again: what waited is delivered; the reason is gone.
    assert_eq!(
        scene.set_status(&id, "enabled").await,
        json!({"stream_id": id, "status": "enabled"})
    );
    let sets = scene.sets(&stream).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let (jti, set) = sets.iter().next().unwrap();
    let c = verify_set(&scene.server, set.as_str().unwrap()).await;
    assert_eq!(c["sub_id"]["jti"], held.as_str());
    let acked = scene
        .poll(&stream, json!({"ack": [jti], "returnImmediately": true}))
        .await;
    assert_eq!(acked.body["sets"], json!({}));

    // Disabled: nothing sent and nothing kept, even once enabled again.
    scene.set_status(&id, "disabled").await;
    scene.revoked_token().await;
    assert!(scene.sets(&stream).await.is_empty());
    let refused = scene.verify(json!({"stream_id": id})).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "stream_disabled")
    );
    scene.set_status(&id, "enabled").await;
    assert!(
        scene.sets(&stream).await.is_empty(),
        "dropped while disabled"
    );
    let after = scene.revoked_token().await;
    let sets = scene.sets(&stream).await;
    let c = verify_set(
        &scene.server,
        sets.values().next().unwrap().as_str().unwrap(),
    )
    .await;
    assert_eq!(c["sub_id"]["jti"], after.as_str());

    // Bad status requests change nothing.
    let changes = scene.server.count_events("ssf.stream.status").await;
    for (body, status, code) in [
        (
            json!({"stream_id": id, "status": "off"}),
            StatusCode::BAD_REQUEST,
            "invalid_status",
        ),
        (
            json!({"stream_id": id, "status": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"stream_id": id}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"status": "paused"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"stream_id": id, "status": "paused", "until": 5}),
            StatusCode::BAD_REQUEST,
            "unknown_member",
        ),
        (
            json!({"stream_id": id, "status": "paused", "reason": "x".repeat(300)}),
            StatusCode::BAD_REQUEST,
            "invalid_reason",
        ),
        (
            json!({"stream_id": id, "status": "paused", "reason": "a\u{0}b"}),
            StatusCode::BAD_REQUEST,
            "invalid_reason",
        ),
        (
            json!([id, "paused"]),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"stream_id": "nope", "status": "paused"}),
            StatusCode::NOT_FOUND,
            "stream_not_found",
        ),
    ] {
        let reply = scene.send(Method::POST, "/ssf/status", body.clone()).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{body}");
    }
    assert_eq!(
        scene.server.count_events("ssf.stream.status").await,
        changes
    );
    let read = ssf(&scene.server, scene.rs(), Method::GET, &status_path, None).await;
    assert_eq!(read.body["status"], "enabled");
}

async fn verification_events_are_signed_and_delivered(backend: Backend) {
    let scene = Scene::start(backend).await;
    let stream = scene
        .stream(json!({"events_requested": [SESSION_REVOKED]}))
        .await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();

    let asked = scene
        .verify(json!({"stream_id": id, "state": "VGhpcyBpcyBhIHN0YXRl"}))
        .await;
    assert_eq!(asked.status, StatusCode::NO_CONTENT, "{}", asked.body);
    assert_eq!(asked.headers["cache-control"], "no-store");
    assert_eq!(
        scene
            .server
            .last_event("ssf.stream.verify")
            .await
            .resource
            .as_deref(),
        Some(format!("ssf_stream:{id}").as_str())
    );
    // Delivered although the stream carries only session events, signed like the others.
    let sets = scene.sets(&stream).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let (jti, set) = sets.iter().next().unwrap();
    let c = verify_set(&scene.server, set.as_str().unwrap()).await;
    assert_eq!(c["jti"], jti.as_str());
    assert!(jti.starts_with(&format!("{id}.")), "{jti}");
    assert_eq!(c["aud"], AUDIENCE);
    assert_eq!(c["sub_id"], json!({"format": "opaque", "id": id}));
    assert_eq!(
        event(&c),
        (
            VERIFICATION.to_owned(),
            json!({"state": "VGhpcyBpcyBhIHN0YXRl"})
        )
    );
    // Until acknowledged it is sent again, the same SET; then it is gone.
    assert!(scene.sets(&stream).await.contains_key(jti));
    let acked = scene
        .poll(&stream, json!({"ack": [jti], "returnImmediately": true}))
        .await;
    assert_eq!(acked.status, StatusCode::OK);
    assert_eq!(acked.body["sets"], json!({}));

    // Without a state; a long poll wakes when it is asked for.
    let poll = {
        let scene = &scene;
        let stream = stream.clone();
        async move { scene.poll(&stream, json!({})).await }
    };
    let ask = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        scene.verify(json!({"stream_id": id})).await
    };
    let started = Instant::now();
    let (polled, asked) = tokio::join!(poll, ask);
    assert_eq!(asked.status, StatusCode::NO_CONTENT);
    assert!(started.elapsed() < Duration::from_secs(10), "woke");
    let sets = polled.body["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 1, "{}", polled.body);
    let c = verify_set(
        &scene.server,
        sets.values().next().unwrap().as_str().unwrap(),
    )
    .await;
    assert_eq!(event(&c), (VERIFICATION.to_owned(), json!({})));
    let jti = sets.keys().next().unwrap().clone();
    scene
        .poll(&stream, json!({"ack": [jti], "returnImmediately": true}))
        .await;

    // Asked for while paused: held until enabled.
    scene.set_status(&id, "paused").await;
    assert_eq!(
        scene
            .verify(json!({"stream_id": id, "state": "later"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(scene.sets(&stream).await.is_empty());
    scene.set_status(&id, "enabled").await;
    let sets = scene.sets(&stream).await;
    let c = verify_set(
        &scene.server,
        sets.values().next().unwrap().as_str().unwrap(),
    )
    .await;
    assert_eq!(event(&c).1, json!({"state": "later"}));

    // Bounded, and bad requests refused.
    let mut asked = 1;
    loop {
        let reply = scene.verify(json!({"stream_id": id})).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.code(), "too_many_verifications");
            break;
        }
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        asked += 1;
        assert!(asked <= 16, "no bound");
    }
    assert_eq!(asked, 16);
    let count = scene.server.count_events("ssf.stream.verify").await;
    for (body, status, code) in [
        (
            json!({"stream_id": id, "state": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_state",
        ),
        (
            json!({"stream_id": id, "state": "x".repeat(600)}),
            StatusCode::BAD_REQUEST,
            "invalid_state",
        ),
        (
            json!({"stream_id": id, "state": 5}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"stream_id": id, "nonce": "x"}),
            StatusCode::BAD_REQUEST,
            "unknown_member",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_request"),
        (json!([id]), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            json!({"stream_id": "nope"}),
            StatusCode::NOT_FOUND,
            "stream_not_found",
        ),
    ] {
        let reply = scene.verify(body.clone()).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{body}");
    }
    assert_eq!(scene.server.count_events("ssf.stream.verify").await, count);
}

async fn push_respects_status_and_carries_verifications(backend: Backend) {
    let scene = scene_pushing_to_loopback(backend).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                AxumStatus::ACCEPTED
            }
        }),
    );
    let receiver = serve_on_loopback(app).await;
    let stream = scene
        .stream(json!({"delivery": {"method": PUSH, "endpoint_url": format!("{receiver}/events")}}))
        .await;
    let id = stream["stream_id"].as_str().unwrap().to_owned();

    // A verification event is pushed with its state.
    assert_eq!(
        scene
            .verify(json!({"stream_id": id, "state": "push-check"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let c = verify_set(&scene.server, &next_push(&mut rx).await).await;
    assert_eq!(
        event(&c),
        (VERIFICATION.to_owned(), json!({"state": "push-check"}))
    );
    assert_eq!(c["sub_id"], json!({"format": "opaque", "id": id}));

    // Paused: nothing is pushed; enabled again, what waited is.
    scene.set_status(&id, "paused").await;
    let held = scene.revoked_token().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rx.try_recv().is_err(), "pushed while paused");
    scene.set_status(&id, "enabled").await;
    let c = verify_set(&scene.server, &next_push(&mut rx).await).await;
    assert_eq!(c["sub_id"]["jti"], held.as_str());

    // Disabled: nothing pushed and nothing kept.
    scene.set_status(&id, "disabled").await;
    scene.revoked_token().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    scene.set_status(&id, "enabled").await;
    let after = scene.revoked_token().await;
    let c = verify_set(&scene.server, &next_push(&mut rx).await).await;
    assert_eq!(
        c["sub_id"]["jti"],
        after.as_str(),
        "the one revoked while disabled is dropped"
    );

    // Switched to poll delivery by PATCH: nothing more is pushed; the poll carries it.
    let patched = scene
        .send(
            Method::PATCH,
            "/ssf/streams",
            json!({"stream_id": id, "delivery": {"method": POLL}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let polled_jti = scene.revoked_token().await;
    let sets = scene.sets(&patched.body).await;
    let c = verify_set(
        &scene.server,
        sets.values().next().unwrap().as_str().unwrap(),
    )
    .await;
    assert_eq!(c["sub_id"]["jti"], polled_jti.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "pushed after switching to poll");
}

/// The next SET the loopback receiver got, within 20 s.
async fn next_push(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a SET was pushed")
        .unwrap()
}
