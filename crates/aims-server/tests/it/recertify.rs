//! Recertification over HTTP: the watcher warns the owner on the signed webhook before an
//! agent's date, suspends it (revoking its credentials, audited with the cause) once the grace
//! period is over, each once per date across two replicas; and `POST
//! /v1/agents/{name}/recertify` moves the date for an admin or the designated approver only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_server::config::{ENV_BOOTSTRAP_TOKEN, ENV_MASTER_KEY};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::kit::{ADMIN_TOKEN, Backend, TestServer, config_with, event_claims, serve_on_loopback};
use crate::on_both_stores;
use crate::task_tokens::attested;

on_both_stores!(
    a_lapsed_agent_is_warned_then_suspended_once_across_replicas,
    only_an_admin_or_the_designated_approver_recertifies,
);

/// The bodies a webhook receiver was sent.
type Received = Arc<Mutex<Vec<String>>>;

/// A webhook receiver that accepts everything; where it listens and what it got.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    (format!("{}/hook", serve_on_loopback(app).await), received)
}

/// Two replicas on one store, checking recertification every 100 ms with a warning window
/// of 30 days and a grace period of one hour, notifying `hook`.
async fn two_replicas(backend: Backend, hook: &str) -> (TestServer, TestServer) {
    let tune = |config: &mut aims_server::config::Config| {
        config.recertify_check = Duration::from_millis(100);
        config.recertify_warn = Duration::from_secs(30 * 86_400);
        config.recertify_grace = Duration::from_secs(3600);
        config.recertify_webhook_url = Some(hook.to_owned());
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = crate::kit::open_store(backend, &dir).await;
    let env = HashMap::from([(ENV_BOOTSTRAP_TOKEN.to_owned(), ADMIN_TOKEN.to_owned())]);
    let mut config = config_with(&dir, &env);
    tune(&mut config);
    let first = TestServer::start_configured(backend, dir, store.clone(), env, config)
        .await
        .unwrap();
    let master = std::fs::read_to_string(first.dir.path().join("master.key")).unwrap();
    let env = HashMap::from([(ENV_MASTER_KEY.to_owned(), master)]);
    let second_store: Arc<dyn aims_store::Store> = match backend {
        Backend::Sqlite => store,
        Backend::Postgres => Arc::new(
            aims_store::PostgresStore::connect_with_schema(
                &std::env::var(crate::kit::PG_ENV).unwrap(),
                &crate::kit::pg_schema(&first.dir),
            )
            .await
            .unwrap(),
        ),
    };
    let second_dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = config_with(&second_dir, &env);
    tune(&mut config);
    let second = TestServer::start_configured(backend, second_dir, second_store, env, config)
        .await
        .unwrap();
    (first, second)
}

/// Moves agent `name`'s recertification date to `due` behind the API's back, as time
/// passing would.
async fn set_due(server: &TestServer, name: &str, due: OffsetDateTime) {
    let name = name.parse().unwrap();
    let current = server.store.agent(&name).await.unwrap().unwrap();
    let mut next = current.clone();
    next.recertify_by = due;
    next.created_at = next.created_at.min(due - time::Duration::days(1));
    next.revision += 1;
    let event = AuditEvent::new(
        OffsetDateTime::now_utc(),
        Actor::System,
        action::AGENT_UPDATE,
        Outcome::Success,
    );
    server
        .store
        .update_agent(&next, current.revision, &event)
        .await
        .unwrap();
}

/// The verified event bodies of kind `kind` among `received`.
async fn notices(server: &TestServer, received: &Received, kind: &str) -> Vec<Value> {
    let bodies = received.lock().unwrap().clone();
    let mut found = Vec::new();
    for body in bodies {
        let claims = event_claims(server, &body).await;
        if claims["event"]["type"] == kind {
            found.push(claims["event"].clone());
        }
    }
    found
}

/// Waits up to ten seconds for `kind` notices to reach `count`.
async fn wait_for(server: &TestServer, received: &Received, kind: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while notices(server, received, kind).await.len() < count {
        assert!(Instant::now() < deadline, "no {kind} notice arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn state_of(server: &TestServer, name: &str) -> Value {
    let reply = server
        .admin(Method::GET, &format!("/v1/agents/{name}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["state"].clone()
}

/// How many unrevoked credentials agent `name` holds, read behind the server's back.
async fn live_credentials(server: &TestServer, name: &str) -> i64 {
    server
        .count_rows(&format!(
            "credentials WHERE agent = '{name}' AND revoked_at_ms IS NULL"
        ))
        .await
}

/// The `agent.lifecycle` events that suspended an agent for a lapsed recertification.
async fn lapse_suspensions(server: &TestServer) -> Vec<AuditEvent> {
    server
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.action == action::AGENT_LIFECYCLE && e.details["cause"] == "recertification_overdue"
        })
        .collect()
}

async fn a_lapsed_agent_is_warned_then_suspended_once_across_replicas(backend: Backend) {
    let (hook, received) = receiver().await;
    let (first, second) = two_replicas(backend, &hook).await;
    let held = attested(&first, "nightly", "planner", json!({})).await;
    assert!(!held.svid.is_empty());
    assert_eq!(live_credentials(&first, "nightly").await, 1);

    // Due in two days, inside the warning window: the owner is warned, once.
    let soon = OffsetDateTime::now_utc() + time::Duration::days(2);
    set_due(&first, "nightly", soon).await;
    wait_for(&first, &received, "agent.recertification_due", 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let warned = notices(&first, &received, "agent.recertification_due").await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0]["name"], "nightly");
    assert_eq!(warned[0]["owner"], "alice@acme.example");
    assert_eq!(warned[0]["agent"], "spiffe://test.example/agent/nightly");
    assert_eq!(state_of(&first, "nightly").await, "active");
    assert!(lapse_suspensions(&first).await.is_empty());

    // Past the date but within the grace period: still active.
    set_due(
        &first,
        "nightly",
        OffsetDateTime::now_utc() - time::Duration::minutes(30),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(state_of(&first, "nightly").await, "active");

    // Past the grace period: suspended by exactly one replica, its credentials revoked, the
    // cause audited and the owner told.
    set_due(
        &first,
        "nightly",
        OffsetDateTime::now_utc() - time::Duration::hours(2),
    )
    .await;
    wait_for(&second, &received, "agent.suspended", 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let told = notices(&second, &received, "agent.suspended").await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["cause"], "recertification_overdue");
    assert_eq!(state_of(&second, "nightly").await, "suspended");
    assert_eq!(live_credentials(&first, "nightly").await, 0);
    let suspensions = lapse_suspensions(&first).await;
    assert_eq!(suspensions.len(), 1, "{suspensions:?}");
    let event = &suspensions[0];
    assert_eq!(event.actor, Actor::System);
    assert_eq!(event.details["to"], "suspended");
    assert_eq!(
        event.agent.as_deref(),
        Some("spiffe://test.example/agent/nightly")
    );
    assert_eq!(event.owner.as_deref(), Some("alice@acme.example"));

    // Recertifying moves the date but leaves it suspended; an admin resumes it, and the
    // watcher leaves it alone.
    let renewed = first
        .admin(
            Method::POST,
            "/v1/agents/nightly/recertify",
            Some(json!({"days": 30})),
        )
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    assert_eq!(renewed.body["state"], "suspended");
    let resumed = first
        .admin(Method::POST, "/v1/agents/nightly/resume", Some(json!({})))
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(state_of(&second, "nightly").await, "active");
    assert_eq!(lapse_suspensions(&first).await.len(), 1);
}

async fn only_an_admin_or_the_designated_approver_recertifies(backend: Backend) {
    let server = TestServer::start(backend).await;
    let held = attested(
        &server,
        "ledger",
        "planner",
        json!({"labels": {"role": "planner", "approver": "carol"}}),
    )
    .await;
    let carol = server.add_user("carol", "approver").await;
    let dave = server.add_user("dave", "approver").await;
    let erin = server.add_user("erin", "auditor").await;
    let before = server
        .admin(Method::GET, "/v1/agents/ledger", None)
        .await
        .body;
    let recertify = |token: String, name: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    &format!("/v1/agents/{name}/recertify"),
                    Some(&token),
                    Some(body),
                )
                .await
        }
    };

    // Refused, changing nothing: an auditor, an approver not designated (for a real agent
    // and for an unknown one alike), an agent's own credential, bad periods.
    let refused = [
        (
            erin.clone(),
            "ledger",
            json!({}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            dave.clone(),
            "ledger",
            json!({}),
            StatusCode::FORBIDDEN,
            "not_an_approver",
        ),
        (
            dave.clone(),
            "nobody",
            json!({}),
            StatusCode::FORBIDDEN,
            "not_an_approver",
        ),
        (
            ADMIN_TOKEN.to_owned(),
            "nobody",
            json!({}),
            StatusCode::NOT_FOUND,
            "agent_not_found",
        ),
        (
            carol.clone(),
            "ledger",
            json!({"days": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_agent",
        ),
        (
            carol.clone(),
            "ledger",
            json!({"days": 4000}),
            StatusCode::BAD_REQUEST,
            "invalid_agent",
        ),
        (
            carol.clone(),
            "ledger",
            json!({"days": 30, "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (token, name, body, status, code) in refused {
        let reply = recertify(token, name, body.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{body} {}",
            reply.body
        );
    }
    let by_agent = recertify(held.svid.clone(), "ledger", json!({})).await;
    assert_eq!(
        by_agent.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        by_agent.body
    );
    assert!(!by_agent.code().is_empty());
    assert_eq!(server.count_events(action::AGENT_RECERTIFY).await, 0);
    let unchanged = server
        .admin(Method::GET, "/v1/agents/ledger", None)
        .await
        .body;
    assert_eq!(unchanged, before);

    // The designated approver recertifies: the date moves, audited with the human actor.
    let reply = recertify(carol.clone(), "ledger", json!({"days": 30})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let due = OffsetDateTime::parse(
        reply.body["recertify_by"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expected = OffsetDateTime::now_utc() + time::Duration::days(30);
    assert!((due - expected).abs() < time::Duration::minutes(1), "{due}");
    assert_eq!(reply.body["state"], "active");
    let event = server.last_event(action::AGENT_RECERTIFY).await;
    assert_eq!(
        event.actor,
        Actor::User {
            name: "carol".into(),
            role: "approver".into()
        }
    );
    assert_eq!(event.details["days"], 30);
    assert_eq!(
        event.details["previous_recertify_by"],
        before["recertify_by"]
    );
    assert_eq!(event.owner.as_deref(), Some("alice@acme.example"));

    // An admin may too, with the configured default period; not once decommissioned.
    let reply = recertify(ADMIN_TOKEN.to_owned(), "ledger", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let gone = server
        .admin(
            Method::POST,
            "/v1/agents/ledger/decommission",
            Some(json!({})),
        )
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.body);
    let reply = recertify(carol, "ledger", json!({})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::CONFLICT, "agent_decommissioned")
    );
    assert_eq!(server.count_events(action::AGENT_RECERTIFY).await, 2);
}
