//! Existing enforcement points ask AuthZEN about the agents calling them: a registered
//! resource server, with its own client credential, asks about any registered agent for
//! resources of its system, optionally passing the agent's task token to bind task, scopes
//! and delegation chain. The principal is always the registry's.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::kit::{Backend, Reply, TestServer};
use crate::on_both_stores;
use crate::task_tokens::{Scene, access_token, attested, claims};

on_both_stores!(
    a_resource_server_asks_about_the_agents_calling_it,
    a_passed_token_binds_scopes_and_delegation,
    bad_questions_from_a_resource_server_are_refused,
    sighting_reports_come_from_resource_servers_and_are_bounded,
    a_removed_resource_server_is_refused_at_once,
);

/// `POST /access/v1/evaluation` with HTTP Basic `name:secret`.
async fn evaluate(server: &TestServer, name: &str, secret: &str, body: Value) -> Reply {
    server
        .send(
            server
                .http
                .post(format!("{}/access/v1/evaluation", server.base))
                .basic_auth(name, Some(secret))
                .json(&body),
        )
        .await
}

/// An evaluation about `subject` reading repository `id`, with only the resource's type, id
/// and kind (the resource server's registered attributes fill in the rest), and no task (a
/// passed token names it).
fn reads(subject: Value, id: &str) -> Value {
    json!({"subject": subject, "action": {"name": "read"},
           "resource": {"type": "Resource", "id": id, "properties": {"kind": "repository"}},
           "context": {"intent": "serve a request"}})
}

async fn a_resource_server_asks_about_the_agents_calling_it(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let coder = attested(
        server,
        "coder",
        "coder",
        json!({"labels": {"team": "coding-agents"}}),
    )
    .await;

    let asked = evaluate(
        server,
        "repo-tools",
        &scene.rs_secret,
        reads(json!({"type": "agent", "id": "coder"}), "github/acme/app"),
    )
    .await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    // The same question asked by the agent itself gets the same answer.
    let own = server
        .call(
            Method::POST,
            "/v1/decisions",
            Some(&coder.svid),
            Some(json!({"action": "read", "intent": "serve a request",
                        "resource": {"type": "Resource", "id": "github/acme/app", "system": "github",
                                     "environment": "dev", "sensitivity": "internal", "kind": "repository"}})),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert_eq!(
        asked.body["decision"],
        own.body["decision"] == "allow",
        "{}",
        asked.body
    );
    assert_eq!(asked.body["context"]["policies"], own.body["policies"]);
    assert_eq!(own.body["decision"], "allow", "{}", own.body);

    // By SPIFFE ID too; the decision is audited as asked by the resource server about the agent.
    let by_id = evaluate(
        server,
        "repo-tools",
        &scene.rs_secret,
        reads(
            json!({"type": "agent", "id": "spiffe://test.example/agent/coder"}),
            "github/acme/app",
        ),
    )
    .await;
    assert_eq!(by_id.body["decision"], true, "{}", by_id.body);
    let event = server.last_event("decision").await;
    assert!(
        format!("{:?}", event.actor).contains("repo-tools"),
        "{:?}",
        event.actor
    );
    assert_eq!(
        event.agent.as_deref(),
        Some("spiffe://test.example/agent/coder")
    );
    assert_eq!(event.token_id, None);
}

async fn a_passed_token_binds_scopes_and_delegation(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let parent = access_token(&scene.exchange("read:repo/acme/*").await);
    let delegated = access_token(
        &scene
            .delegate(&parent, &[("scope", "read:repo/acme/app")])
            .await,
    );
    let executor = json!({"type": "agent", "id": "executor"});
    let with_token = json!({"type": "agent", "id": "executor", "properties": {"token": delegated}});

    // Without its token the executor is not delegated anything: no policy lets it read.
    let bare = evaluate(
        server,
        "repo-tools",
        &scene.rs_secret,
        reads(executor, "repo/acme/app"),
    )
    .await;
    assert_eq!(bare.body["decision"], false, "{}", bare.body);
    // With it, the delegation chain is the token's: the delegated read is allowed.
    let bound = evaluate(
        server,
        "repo-tools",
        &scene.rs_secret,
        reads(with_token.clone(), "repo/acme/app"),
    )
    .await;
    assert_eq!(bound.body["decision"], true, "{}", bound.body);
    let event = server.last_event("decision").await;
    let jti = claims(&delegated)["jti"].as_str().unwrap().to_owned();
    assert_eq!(event.token_id.as_deref(), Some(jti.as_str()));
    assert_eq!(
        event.task_id.as_deref(),
        claims(&delegated)["task_id"].as_str()
    );
    assert_eq!(
        event.delegation_chain.len(),
        2,
        "{:?}",
        event.delegation_chain
    );
    // And the token's scope bounds it: another repository is outside it.
    let outside = evaluate(
        server,
        "repo-tools",
        &scene.rs_secret,
        reads(with_token, "repo/acme/other"),
    )
    .await;
    assert_eq!(outside.body["decision"], false, "{}", outside.body);

    // A token of another agent, a revoked token: refused.
    let not_theirs = json!({"type": "agent", "id": "planner", "properties": {"token": delegated}});
    let refused = evaluate(
        server,
        "repo-tools",
        &scene.rs_secret,
        reads(not_theirs, "repo/acme/app"),
    )
    .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "invalid_token"),
        "{}",
        refused.body
    );
    let revoked = server
        .admin(
            Method::POST,
            "/v1/revocations",
            Some(json!({"target": "token", "id": jti})),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let with_revoked =
        json!({"type": "agent", "id": "executor", "properties": {"token": delegated}});
    let refused = evaluate(
        server,
        "repo-tools",
        &scene.rs_secret,
        reads(with_revoked, "repo/acme/app"),
    )
    .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "invalid_token"),
        "{}",
        refused.body
    );

    // A token issued for another resource server's audience: refused.
    let other = server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "other-tools", "audience": "https://other.acme.example", "system": "github"})),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    let other_secret = other.body["client_secret"].as_str().unwrap().to_owned();
    let planner_token = json!({"type": "agent", "id": "planner", "properties": {"token": parent}});
    let refused = evaluate(
        server,
        "other-tools",
        &other_secret,
        reads(planner_token, "repo/acme/app"),
    )
    .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "invalid_token"),
        "{}",
        refused.body
    );
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("another audience")
    );
}

async fn bad_questions_from_a_resource_server_are_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let rejects = server.count_events("api.reject").await;
    let planner = json!({"type": "agent", "id": "planner"});
    let vault = json!({"subject": planner, "action": {"name": "read"},
                       "resource": {"type": "Resource", "id": "vault/x",
                                    "properties": {"system": "vault", "kind": "repository"}}});
    let cases = [
        (
            evaluate(
                server,
                "repo-tools",
                "aims_r_wrong",
                reads(planner.clone(), "repo/acme/app"),
            )
            .await,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            evaluate(
                server,
                "someone-else",
                &scene.rs_secret,
                reads(planner.clone(), "repo/acme/app"),
            )
            .await,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            evaluate(server, "repo-tools", &scene.rs_secret, vault).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            evaluate(
                server,
                "repo-tools",
                &scene.rs_secret,
                reads(json!({"type": "agent", "id": "ghost"}), "repo/acme/app"),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "unknown_agent",
        ),
        (
            evaluate(
                server,
                "repo-tools",
                &scene.rs_secret,
                reads(
                    json!({"type": "agent", "id": "spiffe://elsewhere.example/agent/planner"}),
                    "repo/acme/app",
                ),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "unknown_agent",
        ),
        (
            evaluate(
                server,
                "repo-tools",
                &scene.rs_secret,
                reads(json!({"type": "user", "id": "planner"}), "repo/acme/app"),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            evaluate(
                server,
                "repo-tools",
                &scene.rs_secret,
                reads(
                    json!({"type": "agent", "id": "planner", "properties": {"token": 7}}),
                    "repo/acme/app",
                ),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (reply, status, code) in &cases {
        assert_eq!(
            (reply.status, reply.code()),
            (*status, *code),
            "{}",
            reply.body
        );
        assert!(reply.body["message"].is_string(), "{}", reply.body);
    }
    assert_eq!(
        server.count_events("api.reject").await,
        rejects + cases.len()
    );
    assert_eq!(server.count_events("decision").await, 0);
}

async fn sighting_reports_come_from_resource_servers_and_are_bounded(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let sighting = |count: u64| {
        json!({"source": "203.0.113.9", "route": "repositories", "user_agent": "scanner/1.0",
               "reason": "invalid_token", "first_seen": "2026-12-06T10:00:00Z",
               "last_seen": "2026-12-06T10:05:00Z", "count": count})
    };
    let report = |body: Value, name: &str, secret: &str| {
        server.send(
            server
                .http
                .post(format!("{}/v1/sightings/report", server.base))
                .basic_auth(name.to_owned(), Some(secret.to_owned()))
                .json(&body),
        )
    };
    let ok = report(
        json!({"sightings": [sighting(40)]}),
        "repo-tools",
        &scene.rs_secret,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["kept"], 1);
    let many: Vec<Value> = (0..41).map(|_| sighting(1)).collect();
    let cases = [
        (
            report(
                json!({"sightings": [sighting(1)]}),
                "repo-tools",
                "aims_r_wrong",
            )
            .await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            report(json!({"sightings": []}), "repo-tools", &scene.rs_secret).await,
            StatusCode::BAD_REQUEST,
        ),
        (
            report(json!({"sightings": many}), "repo-tools", &scene.rs_secret).await,
            StatusCode::BAD_REQUEST,
        ),
        (
            report(
                json!({"sightings": [sighting(0)]}),
                "repo-tools",
                &scene.rs_secret,
            )
            .await,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (reply, status) in cases {
        assert_eq!(reply.status, status);
    }
    let operator = server
        .admin(
            Method::POST,
            "/v1/sightings/report",
            Some(json!({"sightings": [sighting(1)]})),
        )
        .await;
    assert_eq!(operator.status, StatusCode::UNAUTHORIZED);
    let listed = server.admin(Method::GET, "/v1/sightings", None).await;
    assert_eq!(listed.body["sightings"][0]["count"], 40, "{}", listed.body);
    assert_eq!(listed.body["sightings"].as_array().unwrap().len(), 1);
}

/// The replica remembers an authenticated resource server for a poll interval (here 5 s, so
/// that only forgetting can explain a refusal); removing it here forgets it at once.
async fn a_removed_resource_server_is_refused_at_once(backend: Backend) {
    let server = TestServer::start_tuned(backend, |config| {
        config.revocation_poll = std::time::Duration::from_secs(5);
        config.revocation_max_staleness = std::time::Duration::from_secs(30);
    })
    .await;
    let registered = server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "repo-tools", "audience": "https://tools.acme.example", "system": "github"})),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let secret = registered.body["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Introspection answers an authenticated resource server (a token it cannot know is
    // simply inactive) and refuses anyone else.
    let introspect = || {
        server.send(
            server
                .http
                .post(format!(
                    "{}{}",
                    server.base,
                    aims_api::oauth::INTROSPECTION_PATH
                ))
                .basic_auth("repo-tools", Some(&secret))
                .form(&[("token", "not-a-token")]),
        )
    };
    let answered = introspect().await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    assert_eq!(answered.body["active"], false, "{}", answered.body);
    let removed = server
        .admin(Method::DELETE, "/v1/resource-servers/repo-tools", None)
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    let refused = introspect().await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
}
