//! The agent registry over HTTP: registration, listing, updates, lifecycle, join tokens, and
//! the bad inputs that must be refused without changing anything.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::{Backend, TestServer};
use crate::on_both_stores;
use crate::task_tokens::{Scene, access_token};

on_both_stores!(
    the_inventory_shows_what_each_agent_has_been_doing,
    register_returns_spiffe_id_and_one_time_join_token,
    bad_registrations_are_refused_audited_and_change_nothing,
    list_filters_and_paginates,
    update_checks_revision_and_validates,
    lifecycle_follows_the_state_machine,
    join_token_reissue_requires_active_agent,
);

async fn register_returns_spiffe_id_and_one_time_join_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = server.register("coder", "alice@acme.example").await;
    assert_eq!(body["spiffe_id"], "spiffe://test.example/agent/coder");
    let token = body["join_token"].as_str().unwrap();
    assert!(token.starts_with("aims_j_"), "{token}");
    assert_eq!(body["agent"]["owner"], "alice@acme.example");
    assert_eq!(body["agent"]["state"], "active");
    assert_eq!(body["agent"]["environment"], "dev");
    assert_eq!(body["agent"]["limits"]["allow_bearer"], false);

    // Stored hashed: the token is nowhere in the store's audit log.
    let records = server.records().await;
    assert!(records.iter().all(|r| !r.body.contains(token)));
    let last = records.last().unwrap().event().unwrap();
    assert_eq!(last.action, "agent.register");
    assert_eq!(last.owner.as_deref(), Some("alice@acme.example"));
    assert_eq!(
        last.agent.as_deref(),
        Some("spiffe://test.example/agent/coder")
    );

    // The join token works for one key only.
    let hash = aims_core::credential::CredentialHash::of(token);
    let now = time::OffsetDateTime::now_utc();
    assert!(matches!(
        server
            .store
            .consume_join_token(&hash, "jkt-a", now)
            .await
            .unwrap(),
        aims_store::JoinTokenUse::Consumed(_)
    ));
    assert!(matches!(
        server
            .store
            .consume_join_token(&hash, "jkt-b", now)
            .await
            .unwrap(),
        aims_store::JoinTokenUse::AlreadyUsed(_)
    ));

    let shown = server.admin(Method::GET, "/v1/agents/coder", None).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["spiffe_id"], "spiffe://test.example/agent/coder");
    assert!(shown.body.get("join_token").is_none());
}

async fn bad_registrations_are_refused_audited_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;

    let cases = [
        (
            json!({"name": "nobody"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"name": "coder", "owner": "bob"}),
            StatusCode::CONFLICT,
            "agent_exists",
        ),
        (
            json!({"name": "../etc", "owner": "bob"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"name": "a b", "owner": "bob"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"name": "x", "owner": "bob", "is_admin": true}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"name": "x", "owner": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        // Owners that look like alice@acme.example but are not: `revoke --owner` would miss
        // them. A Cyrillic а, a right-to-left override, a zero-width space.
        (
            json!({"name": "x", "owner": "\u{430}lice@acme.example"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"name": "x", "owner": "alice@acme.example\u{202E}"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"name": "x", "owner": "alice@acme\u{200B}.example"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"name": "x", "owner": "bob", "labels": {"team": "pay\u{200B}ments"}}),
            StatusCode::BAD_REQUEST,
            "invalid_agent",
        ),
        (
            json!({"name": "x", "owner": "bob", "limits": {"max_token_ttl_s": 0}}),
            StatusCode::BAD_REQUEST,
            "invalid_agent",
        ),
        (
            json!({"name": "x", "owner": "bob", "posture_profile": {"model": {"digest": ["md5:1"]}}}),
            StatusCode::BAD_REQUEST,
            "invalid_agent",
        ),
        (
            json!({"name": "x", "owner": "bob", "recertify_days": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_agent",
        ),
    ];
    for (body, status, code) in cases {
        let before_agents = server.agent_count().await;
        let before_records = server.records().await.len();
        let reply = server
            .admin(Method::POST, "/v1/agents", Some(body.clone()))
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{body}: {}",
            reply.body
        );
        assert!(!reply.body["message"].as_str().unwrap().is_empty());
        assert_eq!(server.agent_count().await, before_agents, "{body}");
        let events = server.events().await;
        assert_eq!(
            events.len(),
            before_records + 1,
            "{body}: exactly one audit record"
        );
        let last = events.last().unwrap();
        assert_eq!(last.action, "api.reject");
        assert_eq!(last.code.as_deref(), Some(code));
    }

    // Not JSON, wrong content type, oversized.
    let url = format!("{}/v1/agents", server.base);
    let auth = format!("Bearer {}", crate::kit::ADMIN_TOKEN);
    let raw = |body: Vec<u8>, content_type: &'static str| {
        server
            .http
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", content_type)
            .body(body)
    };
    let reply = server
        .send(raw(b"{not json".to_vec(), "application/json"))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let reply = server
        .send(raw(b"name=x".to_vec(), "application/x-www-form-urlencoded"))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let huge = format!(
        r#"{{"name":"x","owner":"bob","description":"{}"}}"#,
        "a".repeat(200_000)
    );
    let reply = server
        .send(raw(huge.into_bytes(), "application/json"))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let reply = server
        .send(raw(deep.into_bytes(), "application/json"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.agent_count().await, 1);

    // A bad name in the path.
    let reply = server.admin(Method::GET, "/v1/agents/a%20b", None).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_name")
    );
    let reply = server.admin(Method::GET, "/v1/agents/ghost", None).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "agent_not_found")
    );

    // A resource server's bad name is reported as a resource server name, in the body and in
    // the path, never as an agent name.
    let body = json!({"name": "a b", "audience": "https://rs.example", "system": "repo"});
    let reply = server
        .admin(Method::POST, "/v1/resource-servers", Some(body))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let path = server
        .admin(Method::GET, "/v1/resource-servers/a%20b", None)
        .await;
    assert_eq!(
        (path.status, path.code()),
        (StatusCode::BAD_REQUEST, "invalid_name")
    );
    for message in [&reply.body["message"], &path.body["message"]] {
        let message = message.as_str().unwrap();
        assert!(message.contains("resource server name"), "{message}");
        assert!(!message.contains("agent name"), "{message}");
    }
}

async fn list_filters_and_paginates(backend: Backend) {
    let server = TestServer::start(backend).await;
    for i in 0..5 {
        let owner = if i % 2 == 0 {
            "even@acme.example"
        } else {
            "odd@acme.example"
        };
        server.register(&format!("agent-{i}"), owner).await;
    }
    let reply = server
        .admin(Method::GET, "/v1/agents?owner=even@acme.example", None)
        .await;
    let names: Vec<_> = reply.body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["agent-0", "agent-2", "agent-4"]);

    let page = server.admin(Method::GET, "/v1/agents?limit=2", None).await;
    assert_eq!(page.body["agents"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["next_after"], "agent-1");
    let page = server
        .admin(Method::GET, "/v1/agents?limit=2&after=agent-3", None)
        .await;
    assert_eq!(page.body["agents"][0]["name"], "agent-4");
    assert!(page.body.get("next_after").is_none());

    let reply = server
        .admin(Method::GET, "/v1/agents?state=zombie", None)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
}

async fn update_checks_revision_and_validates(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    let path = "/v1/agents/coder";
    let reply = server
        .admin(
            Method::PATCH,
            path,
            Some(json!({"owner": "bob@acme.example", "environment": "prod", "revision": 1})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["owner"], "bob@acme.example");
    assert_eq!(reply.body["revision"], 2);

    let stale = server
        .admin(
            Method::PATCH,
            path,
            Some(json!({"description": "x", "revision": 1})),
        )
        .await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::CONFLICT, "revision_conflict")
    );
    let empty = server.admin(Method::PATCH, path, Some(json!({}))).await;
    assert_eq!(
        (empty.status, empty.code()),
        (StatusCode::BAD_REQUEST, "empty_update")
    );
    let bad = server
        .admin(
            Method::PATCH,
            path,
            Some(json!({"limits": {"max_delegation_depth": 99}})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid_agent")
    );
    let unchanged = server.admin(Method::GET, path, None).await;
    assert_eq!(unchanged.body["revision"], 2);
    assert_eq!(unchanged.body["limits"]["max_delegation_depth"], 2);

    let update_event = server.last_event("agent.update").await;
    assert_eq!(update_event.details["previous_owner"], "alice@acme.example");
}

async fn lifecycle_follows_the_state_machine(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    let act = |a: &'static str| {
        let server = &server;
        async move {
            server
                .admin(
                    Method::POST,
                    &format!("/v1/agents/coder/{a}"),
                    Some(json!({"reason": "test"})),
                )
                .await
        }
    };
    assert_eq!(act("suspend").await.body["state"], "suspended");
    let again = act("suspend").await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "invalid_transition")
    );
    assert_eq!(act("resume").await.body["state"], "active");
    assert_eq!(act("decommission").await.body["state"], "decommissioned");
    let resume = act("resume").await;
    assert_eq!(
        (resume.status, resume.code()),
        (StatusCode::CONFLICT, "invalid_transition")
    );
    let update = server
        .admin(
            Method::PATCH,
            "/v1/agents/coder",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(update.code(), "agent_decommissioned");
    // Names are never reused.
    let reuse = server
        .admin(
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "coder", "owner": "eve@acme.example"})),
        )
        .await;
    assert_eq!(
        (reuse.status, reuse.code()),
        (StatusCode::CONFLICT, "agent_exists")
    );

    let bad_reason = server
        .admin(
            Method::POST,
            "/v1/agents/coder/suspend",
            Some(json!({"reason": "a\u{0}b"})),
        )
        .await;
    assert_eq!(bad_reason.code(), "invalid_reason");

    let transitions: Vec<_> = server
        .events()
        .await
        .into_iter()
        .filter(|e| e.action == "agent.lifecycle")
        .map(|e| e.details["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(transitions, ["suspended", "active", "decommissioned"]);
}

async fn join_token_reissue_requires_active_agent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first = server.register("coder", "alice@acme.example").await;
    let old = first["join_token"].as_str().unwrap().to_owned();
    let reissued = server
        .admin(Method::POST, "/v1/agents/coder/join-token", None)
        .await;
    assert_eq!(reissued.status, StatusCode::OK, "{}", reissued.body);
    let new = reissued.body["join_token"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    let now = time::OffsetDateTime::now_utc();
    let use_of = |t: &str| aims_core::credential::CredentialHash::of(t);
    assert!(!matches!(
        server
            .store
            .consume_join_token(&use_of(&old), "jkt-a", now)
            .await
            .unwrap(),
        aims_store::JoinTokenUse::Consumed(_)
    ));
    assert!(matches!(
        server
            .store
            .consume_join_token(&use_of(&new), "jkt-a", now)
            .await
            .unwrap(),
        aims_store::JoinTokenUse::Consumed(_)
    ));

    server
        .admin(Method::POST, "/v1/agents/coder/suspend", Some(json!({})))
        .await;
    let refused = server
        .admin(Method::POST, "/v1/agents/coder/join-token", None)
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "agent_not_active")
    );
}

async fn the_inventory_shows_what_each_agent_has_been_doing(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    server.register("idle", "bob@acme.example").await;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    scene
        .decide(&scene.planner.key, &token, "read", "repo/acme/app")
        .await;
    let auditor = server.add_user("ada", "auditor").await;
    let listed = server
        .call(Method::GET, "/v1/inventory", Some(&auditor), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let entry = |name: &str| {
        listed.body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap()
    };
    let planner = entry("planner");
    assert_eq!(planner["spiffe_id"], "spiffe://test.example/agent/planner");
    assert_eq!(planner["owner"], "alice@acme.example");
    assert!(planner["last_seen"].is_string(), "{planner}");
    assert!(
        planner["posture"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(planner["live_credentials"]["svid"], 1, "{planner}");
    assert_eq!(planner["live_credentials"]["access_token"], 1, "{planner}");
    assert_eq!(planner["open_tasks"], 1);
    assert_eq!(
        planner["last_decision"]["call"],
        "read Resource::repo/acme/app"
    );
    assert_eq!(planner["last_decision"]["decision"], "deny");
    // An agent that never attested: registered, no posture, nothing live, no decision.
    let idle = entry("idle");
    assert!(idle.get("posture").is_none(), "{idle}");
    assert_eq!(idle["live_credentials"], json!({}));
    assert_eq!(idle["open_tasks"], 0);
    assert!(idle.get("last_decision").is_none());

    // Filtered and paged like the list; an agent's credential does not read it.
    let suspended = server
        .admin(Method::GET, "/v1/inventory?state=suspended", None)
        .await;
    assert_eq!(suspended.body["agents"], json!([]));
    let page = server
        .admin(Method::GET, "/v1/inventory?limit=1", None)
        .await;
    assert_eq!(page.body["agents"].as_array().unwrap().len(), 1);
    assert!(page.body["next_after"].is_string());
    let as_agent = server
        .call(Method::GET, "/v1/inventory", Some(&token), None)
        .await;
    assert_eq!(as_agent.status, StatusCode::UNAUTHORIZED);
}
