//! The governance report over HTTP: one test per finding kind on data seeded through the API
//! (or, for what the API cannot backdate, straight into the store), and its refusals.

use std::sync::Arc;

use aims_core::agent::{Agent, LifecycleState};
use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_core::credential::CredentialHash;
use aims_core::posture::{Evidence, ModelEvidence};
use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_store::JoinTokenRecord;
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::kit::{Backend, TestServer};
use crate::on_both_stores;
use crate::task_tokens::{AUDIENCE, Scene, access_token};

on_both_stores!(
    agents_past_recertification_are_reported,
    agents_inactive_in_the_window_are_reported,
    agents_whose_owner_is_no_longer_a_user_are_reported,
    overdue_secrets_are_reported_without_their_value,
    agents_allowed_bearer_tokens_are_reported,
    quarantines_are_reported_with_their_cause,
    denial_rates_are_reported,
    scopes_granted_and_never_used_are_reported,
    agents_reaching_into_other_environments_are_reported,
    unmanaged_callers_are_reported,
    bad_windows_and_agents_are_refused,
);

/// The report of the last `days` as the admin.
async fn report(server: &TestServer, days: u32) -> Value {
    let reply = server
        .admin(Method::GET, &format!("/v1/report?window_days={days}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

/// The findings of `kind`.
fn of_kind(report: &Value, kind: &str) -> Vec<Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .cloned()
        .collect()
}

/// The subjects of the findings of `kind`.
fn subjects(report: &Value, kind: &str) -> Vec<String> {
    of_kind(report, kind)
        .iter()
        .map(|f| f["subject"].as_str().unwrap().to_owned())
        .collect()
}

/// The one finding of `kind` about `subject`, checked to name `nhi`.
fn the_finding(report: &Value, kind: &str, subject: &str, nhi: &str) -> Value {
    let found: Vec<Value> = of_kind(report, kind)
        .into_iter()
        .filter(|f| f["subject"] == subject)
        .collect();
    assert_eq!(found.len(), 1, "{kind} {subject}: {report}");
    let finding = found.into_iter().next().unwrap();
    assert_eq!(finding["nhi"], nhi, "{finding}");
    assert!(finding["nhi_title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(finding["summary"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        finding["recommendation"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    finding
}

/// An agent record as the registry writes one, created `days_ago`.
fn record(name: &str, owner: &str, days_ago: i64) -> Agent {
    let created = OffsetDateTime::now_utc() - Duration::days(days_ago);
    Agent {
        name: name.parse().unwrap(),
        owner: owner.parse().unwrap(),
        environment: "dev".parse().unwrap(),
        description: String::new(),
        posture_profile: Default::default(),
        limits: Default::default(),
        labels: Default::default(),
        state: LifecycleState::Active,
        created_at: created,
        updated_at: created,
        recertify_by: created + Duration::days(365),
        revision: 1,
    }
}

/// Writes `agent` into the store with a registration event of its creation time, as a
/// registry that has been running for a while holds it.
async fn seed_agent(server: &TestServer, agent: &Agent) {
    let mut event = AuditEvent::new(
        agent.created_at,
        Actor::System,
        action::AGENT_REGISTER,
        Outcome::Success,
    );
    event.agent = Some(format!("spiffe://test.example/agent/{}", agent.name));
    event.owner = Some(agent.owner.to_string());
    let join = JoinTokenRecord {
        hash: CredentialHash::of(&format!("aims_j_seed_{}", agent.name)),
        agent: agent.name.clone(),
        expires_at: agent.created_at + Duration::hours(1),
    };
    server
        .store
        .create_agent(agent, &join, &event)
        .await
        .unwrap();
}

async fn agents_past_recertification_are_reported(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.add_user("alice", "approver").await;
    let mut late = record("late", "alice", 400);
    late.recertify_by = OffsetDateTime::now_utc() - Duration::days(5);
    seed_agent(&server, &late).await;
    server.register("current", "alice").await;
    let report = report(&server, 30).await;
    let finding = the_finding(&report, "past_recertification", "late", "NHI1");
    assert_eq!(finding["subject_kind"], "agent");
    assert_eq!(finding["evidence"]["days_overdue"], 5, "{finding}");
    assert_eq!(subjects(&report, "past_recertification"), ["late"]);
    // Suspended (as the recertification watcher does), it is still past its date.
    let suspended = server
        .admin(Method::POST, "/v1/agents/late/suspend", Some(json!({})))
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.body);
    let still = report_again(&server).await;
    let finding = the_finding(&still, "past_recertification", "late", "NHI1");
    assert_eq!(finding["evidence"]["state"], "suspended", "{finding}");
    assert!(
        finding["recommendation"]
            .as_str()
            .unwrap()
            .contains("aims agent recertify late"),
        "{finding}"
    );
    // Recertified: the finding is gone.
    let renewed = server
        .admin(
            Method::POST,
            "/v1/agents/late/recertify",
            Some(json!({"days": 90})),
        )
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    assert!(subjects(&report_again(&server).await, "past_recertification").is_empty());
}

async fn report_again(server: &TestServer) -> Value {
    report(server, 30).await
}

async fn agents_inactive_in_the_window_are_reported(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.add_user("alice", "approver").await;
    seed_agent(&server, &record("dormant", "alice", 40)).await;
    server.register("busy", "alice").await;
    let month = report(&server, 30).await;
    let finding = the_finding(&month, "inactive", "dormant", "NHI1");
    assert!(finding["evidence"]["last_seen"].is_string(), "{finding}");
    assert_eq!(subjects(&month, "inactive"), ["dormant"]);
    // Its registration falls inside a longer window.
    assert!(subjects(&report(&server, 60).await, "inactive").is_empty());
    // Decommissioned, it is offboarded: not reported any more.
    let gone = server
        .admin(
            Method::POST,
            "/v1/agents/dormant/decommission",
            Some(json!({})),
        )
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.body);
    assert!(subjects(&report(&server, 1).await, "inactive").is_empty());
}

async fn agents_whose_owner_is_no_longer_a_user_are_reported(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.add_user("alice", "approver").await;
    server.register("kept", "alice").await;
    server.register("stray", "team payments").await;
    let before = report(&server, 30).await;
    assert_eq!(subjects(&before, "unknown_owner"), ["stray"]);
    the_finding(&before, "unknown_owner", "stray", "NHI1");
    // Alice leaves: her agent has no known owner any more.
    let removed = server.admin(Method::DELETE, "/v1/users/alice", None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    let after = report(&server, 30).await;
    assert_eq!(subjects(&after, "unknown_owner"), ["kept", "stray"]);
    assert_eq!(
        the_finding(&after, "unknown_owner", "kept", "NHI1")["evidence"]["owner"],
        "alice"
    );
}

async fn overdue_secrets_are_reported_without_their_value(backend: Backend) {
    const VALUE: &str = "ghp_report-canary-value-0123456789";
    let server = TestServer::start(backend).await;
    let rs = server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "gateway", "audience": "https://gw.example", "system": "gw"})),
        )
        .await;
    assert_eq!(rs.status, StatusCode::CREATED, "{}", rs.body);
    for (name, period) in [("due", 1), ("yearly", 365 * 86_400)] {
        let stored = server
            .admin(
                Method::POST,
                "/v1/secrets",
                Some(json!({"name": name, "value": VALUE, "readers": ["gateway"],
                            "rotation_period_s": period})),
            )
            .await;
        assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reply = server
        .admin(Method::GET, "/v1/report?window_days=30", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let report = reply.body;
    assert_eq!(subjects(&report, "secret_rotation_overdue"), ["due"]);
    let finding = the_finding(&report, "secret_rotation_overdue", "due", "NHI7");
    assert_eq!(finding["subject_kind"], "secret");
    assert_eq!(finding["evidence"]["version"], 1);
    assert!(!report.to_string().contains(VALUE));
    // Rotated: no longer due.
    let rotated = server
        .admin(
            Method::POST,
            "/v1/secrets/due/rotate",
            Some(json!({"value": "ghp_report-canary-value-rotated"})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert!(subjects(&report_again(&server).await, "secret_rotation_overdue").is_empty());
}

async fn agents_allowed_bearer_tokens_are_reported(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.add_user("alice", "approver").await;
    for (name, bearer) in [("legacy", true), ("modern", false)] {
        let reply = server
            .admin(
                Method::POST,
                "/v1/agents",
                Some(json!({"name": name, "owner": "alice",
                            "limits": {"allow_bearer": bearer}})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let report = report(&server, 30).await;
    assert_eq!(subjects(&report, "bearer_allowed"), ["legacy"]);
    the_finding(&report, "bearer_allowed", "legacy", "NHI4");
}

async fn quarantines_are_reported_with_their_cause(backend: Backend) {
    let server = TestServer::start(backend).await;
    let reply = server
        .admin(
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "drifter", "owner": "alice",
                        "posture_profile": {"model": {"id": ["m1"]}}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let join = reply.body["join_token"].as_str().unwrap().to_owned();
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    let evidence = Evidence {
        model: ModelEvidence {
            id: Some("m2".into()),
            digest: None,
        },
        ..Evidence::default()
    };
    let refused = Attestor::new(AdminClient::new(&server.base, None).unwrap(), key)
        .attest(&evidence, &Credential::JoinToken(join), None)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let report = report(&server, 30).await;
    let finding = the_finding(&report, "quarantine", "drifter", "NHI9");
    assert_eq!(finding["evidence"]["cause"], "posture_drift");
    assert_eq!(finding["evidence"]["fields"], json!(["model.id"]));
    assert_eq!(finding["evidence"]["state_now"], "quarantined");
}

async fn denial_rates_are_reported(backend: Backend) {
    let scene = Scene::start(backend).await;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    // The starter policies let the planner obtain and delegate, not read itself.
    for _ in 0..5 {
        let denied = scene
            .decide(&scene.planner.key, &token, "read", "repo/acme/app")
            .await;
        assert_eq!(denied.body["decision"], "deny", "{}", denied.body);
    }
    let report = report(&scene.server, 30).await;
    let finding = the_finding(&report, "high_denial_rate", "planner", "NHI5");
    assert_eq!(finding["evidence"]["denied"], 5, "{finding}");
    assert_eq!(finding["evidence"]["percent_denied"], 100);
    let planner = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["agent"] == "planner")
        .unwrap();
    assert_eq!(
        (planner["total"].as_u64(), planner["denied"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(subjects(&report, "high_denial_rate"), ["planner"]);
}

async fn scopes_granted_and_never_used_are_reported(backend: Backend) {
    let scene = Scene::start(backend).await;
    let parent = access_token(&scene.exchange("read:repo/acme/* write:repo/acme/app").await);
    let child = access_token(
        &scene
            .delegate(&parent, &[("scope", "read:repo/acme/app")])
            .await,
    );
    let allowed = scene
        .decide(&scene.executor.key, &child, "read", "repo/acme/app")
        .await;
    assert_eq!(allowed.body["decision"], "allow", "{}", allowed.body);
    let report = report(&scene.server, 30).await;
    // The planner used its read scope through the executor; it never wrote.
    let finding = the_finding(&report, "unused_scope", "planner", "NHI5");
    assert_eq!(
        finding["evidence"]["unused"],
        json!(["write:repo/acme/app"])
    );
    assert_eq!(finding["evidence"]["used"], json!(["read:repo/acme/*"]));
    assert_eq!(subjects(&report, "unused_scope"), ["planner"]);
}

async fn agents_reaching_into_other_environments_are_reported(backend: Backend) {
    // The planner runs in prod; the scene's resource server holds dev data.
    let scene = Scene::start_with(backend, json!({"environment": "prod"}), json!({})).await;
    access_token(&scene.exchange("read:repo/acme/*").await);
    let report = report(&scene.server, 30).await;
    let finding = the_finding(&report, "several_environments", "planner", "NHI8");
    assert_eq!(finding["evidence"]["environment"], "prod");
    assert_eq!(
        finding["evidence"]["elsewhere"],
        json!([{"audience": AUDIENCE, "environment": "dev"}])
    );
    assert_eq!(subjects(&report, "several_environments"), ["planner"]);
}

async fn unmanaged_callers_are_reported(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    let now = OffsetDateTime::now_utc();
    let at = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let sighting = |source: &str, last: OffsetDateTime| {
        json!({"source": source, "route": "repositories", "user_agent": "<b>scanner</b>",
               "reason": "invalid_token", "first_seen": at(last - Duration::minutes(5)),
               "last_seen": at(last), "count": 12})
    };
    let sent = server
        .send(
            server
                .http
                .post(format!("{}/v1/sightings/report", server.base))
                .basic_auth("repo-tools", Some(scene.rs_secret.clone()))
                .json(&json!({"sightings": [
                    sighting("203.0.113.7", now - Duration::hours(1)),
                    sighting("203.0.113.8", now - Duration::days(40)),
                ]})),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK);
    let report = report(server, 30).await;
    assert_eq!(subjects(&report, "unmanaged_caller"), ["203.0.113.7"]);
    let finding = the_finding(&report, "unmanaged_caller", "203.0.113.7", "NHI2");
    assert_eq!(finding["subject_kind"], "caller");
    assert_eq!(finding["evidence"]["count"], 12);
    assert_eq!(finding["evidence"]["reporter"], "repo-tools");
}

async fn bad_windows_and_agents_are_refused(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    for (query, code) in [
        ("window_days=0", "invalid_window"),
        ("window_days=3651", "invalid_window"),
        ("window_days=3653", "invalid_window"),
        ("window_days=-1", "invalid_query"),
        ("window_days=ten", "invalid_query"),
        ("window_days=99999999999", "invalid_query"),
        ("days=7", "invalid_query"),
    ] {
        let reply = server
            .admin(Method::GET, &format!("/v1/report?{query}"), None)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, code),
            "{query}: {}",
            reply.body
        );
    }
    // The longest window and the default answer; an auditor reads it.
    let longest = report(server, 3650).await;
    assert_eq!(longest["window_days"], 3650);
    let auditor = server.add_user("ada", "auditor").await;
    let read = server
        .call(Method::GET, "/v1/report", Some(&auditor), None)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["window_days"], 30);
    assert_eq!(read.body["summary"].as_array().unwrap().len(), 10);
    // An approver, an agent's task token, no credential: refused.
    let approver = server.add_user("otto", "approver").await;
    let as_approver = server
        .call(Method::GET, "/v1/report", Some(&approver), None)
        .await;
    assert_eq!(
        as_approver.status,
        StatusCode::FORBIDDEN,
        "{}",
        as_approver.body
    );
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    for credential in [
        Some(token.as_str()),
        Some(scene.planner.svid.as_str()),
        None,
    ] {
        let reply = server
            .call(Method::GET, "/v1/report?window_days=0", credential, None)
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }
}
