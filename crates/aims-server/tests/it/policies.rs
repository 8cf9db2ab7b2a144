//! Policy sets and decisions over HTTP: pushing the starter policies, refusing a set that does
//! not compile, deciding an agent's calls from its registry record and posture (as they are
//! now: the principal's Cedar entity a replica reuses never outlives a change to the agent or
//! to the schema), auditing every decision, and hot reload on a second server sharing the
//! store.

use std::collections::BTreeMap;
use std::sync::Arc;

use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use crate::kit::{ADMIN_TOKEN, Backend, Reply, TestServer, starter_files};
use crate::on_both_stores;

on_both_stores!(
    pushed_policies_decide_agent_calls,
    a_set_that_does_not_compile_changes_nothing,
    a_second_server_picks_up_a_new_version,
    a_changed_agent_is_decided_as_it_now_is,
    a_state_change_reaches_the_next_decision,
);

async fn push(server: &TestServer, files: &BTreeMap<String, String>, token: &str) -> Reply {
    server
        .call(
            Method::POST,
            "/v1/policies",
            Some(token),
            Some(json!({ "files": files })),
        )
        .await
}

/// Registers and attests a coding agent; returns its SVID.
async fn coding_agent(server: &TestServer) -> String {
    let reply = server
        .admin(
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "coder", "owner": "alice@acme.example", "environment": "prod", "labels": {"team": "coding-agents"}})),
        )
        .await;
    let join = reply.body["join_token"].as_str().unwrap().to_owned();
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    Attestor::new(AdminClient::new(&server.base, None).unwrap(), key)
        .attest(&Default::default(), &Credential::JoinToken(join), None)
        .await
        .unwrap()
        .svid
}

fn branch(environment: &str) -> Value {
    json!({"type": "Resource", "id": format!("github/acme/app@{environment}"), "system": "github",
           "environment": environment, "sensitivity": "internal", "kind": "branch"})
}

async fn decide(server: &TestServer, svid: &str, action: &str, resource: Value) -> Reply {
    server
        .call(
            Method::POST,
            "/v1/decisions",
            Some(svid),
            Some(json!({"action": action, "resource": resource, "task_id": "t-1", "intent": "fix the build"})),
        )
        .await
}

async fn pushed_policies_decide_agent_calls(backend: Backend) {
    let server = TestServer::start(backend).await;
    let svid = coding_agent(&server).await;

    // Nothing pushed yet: default deny.
    let before = decide(&server, &svid, "read", branch("dev")).await;
    assert_eq!(before.body["decision"], "deny", "{}", before.body);
    assert_eq!(before.body["policy_version"], 0);

    let auditor = server.add_user("carol", "auditor").await;
    assert_eq!(
        push(&server, &starter_files(), &auditor).await.status,
        StatusCode::FORBIDDEN
    );
    let pushed = push(&server, &starter_files(), ADMIN_TOKEN).await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{}", pushed.body);
    assert_eq!(pushed.body["version"], 1);
    assert!(
        pushed.body["policy_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "coding-write-branch")
    );

    let read = decide(&server, &svid, "read", branch("dev")).await;
    assert_eq!(read.body["decision"], "allow", "{}", read.body);
    assert_eq!(read.body["policies"], json!(["coding-read-repository"]));
    // Fresh posture (attested seconds ago): writing the prod branch is allowed.
    let write = decide(&server, &svid, "write", branch("prod")).await;
    assert_eq!(write.body["decision"], "allow", "{}", write.body);
    // An action no policy permits.
    let delete = decide(&server, &svid, "delete", branch("dev")).await;
    assert_eq!(delete.body["decision"], "deny");

    // Every decision is in the audit log with its policies, before the answer left.
    let decisions: Vec<_> = server
        .events()
        .await
        .into_iter()
        .filter(|e| e.action == "decision")
        .collect();
    assert_eq!(decisions.len(), 4);
    let write_event = &decisions[2];
    assert_eq!(write_event.decision.as_deref(), Some("allow"));
    assert_eq!(write_event.policy_ids, ["coding-write-branch"]);
    assert_eq!(write_event.task_id.as_deref(), Some("t-1"));
    assert_eq!(write_event.intent.as_deref(), Some("fix the build"));
    assert_eq!(
        write_event.details["decision_id"],
        write.body["decision_id"]
    );

    // Bad input: unknown action, unknown fields, no or a forged SVID.
    let unknown = decide(&server, &svid, "launch_missiles", branch("dev")).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let sneaky = server
        .call(Method::POST, "/v1/decisions", Some(&svid), Some(json!({"action": "read", "resource": branch("dev"), "principal": {"state": "active"}})))
        .await;
    assert_eq!(sneaky.code(), "invalid_body");
    let anonymous = server
        .call(
            Method::POST,
            "/v1/decisions",
            None,
            Some(json!({"action": "read", "resource": branch("dev")})),
        )
        .await;
    // No credential at all: RFC 6750 §3.1's challenge without an error code.
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (StatusCode::UNAUTHORIZED, "invalid_request")
    );
    let operator = server
        .call(
            Method::POST,
            "/v1/decisions",
            Some(ADMIN_TOKEN),
            Some(json!({"action": "read", "resource": branch("dev")})),
        )
        .await;
    assert_eq!(operator.code(), "invalid_svid", "operators are not agents");

    // Operators see why: the index skipped most policies, one matched.
    let explained = server
        .admin(Method::POST, "/v1/policies/explain", Some(json!({"agent": "coder", "request": {"action": "write", "resource": branch("prod")}})))
        .await;
    assert_eq!(explained.status, StatusCode::OK, "{}", explained.body);
    assert_eq!(explained.body["decision"]["effect"], "allow");
    let traces = explained.body["candidates"].as_array().unwrap();
    assert!(
        traces
            .iter()
            .any(|t| t["policy_id"] == "coding-write-branch" && t["status"] == "matched"),
        "{traces:?}"
    );
    assert!(
        traces.iter().any(
            |t| t["policy_id"] == "prod-branch-write-needs-fresh-posture"
                && t["status"] == "condition_false"
        ),
        "{traces:?}"
    );
    assert!(
        !explained.body["skipped_by_index"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let as_agent = server.call(Method::POST, "/v1/policies/explain", Some(&svid), Some(json!({"agent": "coder", "request": {"action": "write", "resource": branch("prod")}}))).await;
    assert_eq!(
        as_agent.status,
        StatusCode::UNAUTHORIZED,
        "agents cannot ask for explanations"
    );
    assert!(
        server
            .events()
            .await
            .iter()
            .any(|e| e.action == "policy.explain")
    );

    // Suspension revokes the SVID: no more decisions for it.
    server
        .admin(Method::POST, "/v1/agents/coder/suspend", Some(json!({})))
        .await;
    let revoked = decide(&server, &svid, "read", branch("dev")).await;
    assert_eq!(
        (revoked.status, revoked.code()),
        (StatusCode::UNAUTHORIZED, "invalid_svid")
    );
}

async fn a_set_that_does_not_compile_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    push(&server, &starter_files(), ADMIN_TOKEN).await;
    let before = server.records().await.len();
    let mut broken = starter_files();
    broken.insert(
        "oops.cedar".into(),
        "permit(principal, action == Aims::Action::\"fly\", resource);".into(),
    );
    let reply = push(&server, &broken, ADMIN_TOKEN).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_policy")
    );
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("oops.cedar"),
        "{}",
        reply.body
    );
    let mut bad_name = starter_files();
    bad_name.insert("../escape.cedar".into(), String::new());
    assert_eq!(
        push(&server, &bad_name, ADMIN_TOKEN).await.code(),
        "invalid_policy"
    );
    let active = server.admin(Method::GET, "/v1/policies/active", None).await;
    assert_eq!(active.body["version"], 1, "the active version stays");
    let events = server.events().await;
    assert_eq!(
        events.len(),
        before + 3,
        "two audited refusals and one read"
    );
    assert!(
        events
            .iter()
            .all(|e| e.action != "policy.activate" || e.details["version"] == 1)
    );
}

async fn a_second_server_picks_up_a_new_version(backend: Backend) {
    let first = TestServer::start(backend).await;
    // A second server process over the same database (replicas share the store).
    let second_dir = Arc::new(tempfile::tempdir().unwrap());
    let master = std::fs::read_to_string(first.dir.path().join("master.key")).unwrap();
    let env = [("AIMS_MASTER_KEY".to_owned(), master)].into();
    let second = TestServer::start_on(backend, second_dir, first.store.clone(), env)
        .await
        .unwrap();
    let pushed = push(&first, &starter_files(), ADMIN_TOKEN).await;
    assert_eq!(pushed.status, StatusCode::CREATED);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let active = second.admin(Method::GET, "/v1/policies/active", None).await;
        if active.body["version"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reloaded within 3 s: {}",
            active.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Policies about what a registry change alters: teams (the `team` label), owner, labels.
const PEOPLE_POLICIES: &str = r#"
@id("team-reads")
permit(principal in Aims::Team::"coding-agents", action == Aims::Action::"read", resource);
@id("bob-queries")
permit(principal in Aims::Owner::"bob@acme.example", action == Aims::Action::"query", resource);
@id("gold-writes")
permit(principal, action == Aims::Action::"write", resource)
  when { principal.hasTag("tier") && principal.getTag("tier") == "gold" };
"#;

/// The agent's decisions for read, query and write of the dev branch, over `/v1/decisions`
/// and (the read) over AuthZEN.
async fn answers(server: &TestServer, svid: &str) -> Vec<String> {
    let mut out = Vec::new();
    for action in ["read", "query", "write"] {
        let reply = decide(server, svid, action, branch("dev")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        out.push(reply.body["decision"].as_str().unwrap().to_owned());
    }
    let authzen = server
        .call(
            Method::POST,
            "/access/v1/evaluation",
            Some(svid),
            Some(
                json!({"subject": {"type": "agent", "id": "coder"}, "action": {"name": "read"},
                        "resource": {"type": "Resource", "id": "github/acme/app@dev",
                                     "properties": {"system": "github", "environment": "dev",
                                                    "sensitivity": "internal", "kind": "branch"}},
                        "context": {"task_id": "t-1", "intent": "fix the build"}}),
            ),
        )
        .await;
    assert_eq!(authzen.status, StatusCode::OK, "{}", authzen.body);
    out.push(format!("authzen {}", authzen.body["decision"]));
    out
}

/// A replica builds an agent's Cedar entity once and reuses it; a change to the agent's owner,
/// teams or labels on this replica is in its very next decision, and so is a policy push that
/// changes the schema the entity was built against.
async fn a_changed_agent_is_decided_as_it_now_is(backend: Backend) {
    let server = TestServer::start(backend).await;
    let svid = coding_agent(&server).await;
    let files = BTreeMap::from([("people.cedar".to_owned(), PEOPLE_POLICIES.to_owned())]);
    let pushed = push(&server, &files, ADMIN_TOKEN).await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{}", pushed.body);
    // Twice: the second round decides with the entity the first one built.
    for _ in 0..2 {
        assert_eq!(
            answers(&server, &svid).await,
            ["allow", "deny", "deny", "authzen true"]
        );
    }

    let revision = server
        .admin(Method::GET, "/v1/agents/coder", None)
        .await
        .body["revision"]
        .clone();
    let changed = server
        .admin(
            Method::PATCH,
            "/v1/agents/coder",
            Some(
                json!({"owner": "bob@acme.example", "labels": {"team": "sre", "tier": "gold"},
                        "revision": revision}),
            ),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(
        answers(&server, &svid).await,
        ["deny", "allow", "allow", "authzen false"]
    );

    // A schema whose agents carry no tags: an agent with labels no longer conforms, so every
    // decision is refused; an entity built against the previous schema would still allow.
    let untagged = aims_policy::AIMS_SCHEMA.replace(
        "    posture: Posture,\n  } tags String;",
        "    posture: Posture,\n  };",
    );
    assert_ne!(untagged, aims_policy::AIMS_SCHEMA);
    let files = BTreeMap::from([
        ("aims.cedarschema".to_owned(), untagged),
        (
            "all.cedar".to_owned(),
            "@id(\"all\")\npermit(principal, action, resource);".to_owned(),
        ),
    ]);
    let pushed = push(&server, &files, ADMIN_TOKEN).await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{}", pushed.body);
    let refused = decide(&server, &svid, "read", branch("dev")).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{}",
        refused.body
    );
}

/// A state change (here a suspension, which also revokes the agent's credentials, so only the
/// view shows it) replaces the agent in the registry view, and the next decision sees it: the
/// entity built for the active agent is not used for the suspended one.
async fn a_state_change_reaches_the_next_decision(backend: Backend) {
    use aims_core::id::AgentName;
    use aims_policy::{Effect, Engine, PolicySource, Schema, Validation};
    use aims_server::decisions::{Asked, Question, request_for};
    use aims_server::registry::RegistryView;

    let server = TestServer::start(backend).await;
    coding_agent(&server).await;
    let engine = Engine::compile(
        Schema::aims().unwrap(),
        &[PolicySource::new(
            "active.cedar",
            "@id(\"active-reads\")\npermit(principal, action == Aims::Action::\"read\", resource)\n  when { principal.state == \"active\" };",
        )],
        Validation::Strict,
    )
    .unwrap();
    let trust_domain = server.store.trust_domain().await.unwrap().unwrap();
    let view = RegistryView::new(trust_domain, std::time::Duration::from_secs(60));
    let name = AgentName::new("coder").unwrap();
    let effect = |view: &RegistryView| {
        let known = view.get(&name).unwrap().unwrap();
        let question = Question {
            action: "read".to_owned(),
            resource: aims_policy::Resource::Object(
                aims_server::decisions::resource_object(branch("dev")).unwrap(),
            ),
            task_id: "t-1".to_owned(),
            intent: "fix the build".to_owned(),
            arguments: serde_json::Map::new(),
        };
        let asked = Asked {
            at: time::OffsetDateTime::now_utc(),
            source_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let request = request_for(&known, question, asked, None);
        let reused = known.decide(&engine, &request).unwrap();
        assert_eq!(reused, engine.decide(&request).unwrap());
        reused.effect
    };
    view.catch_up(server.store.as_ref()).await.unwrap();
    assert_eq!(effect(&view), Effect::Allow);
    assert_eq!(effect(&view), Effect::Allow);
    let suspended = server
        .admin(
            Method::POST,
            "/v1/agents/coder/suspend",
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.body);
    view.catch_up(server.store.as_ref()).await.unwrap();
    assert_eq!(effect(&view), Effect::Deny);
}

#[tokio::test]
async fn authzen_evaluations_use_the_same_engine() {
    let server = TestServer::start(Backend::Sqlite).await;
    let svid = coding_agent(&server).await;
    push(&server, &starter_files(), ADMIN_TOKEN).await;

    let config = server
        .call(
            Method::GET,
            "/.well-known/authzen-configuration",
            None,
            None,
        )
        .await;
    assert_eq!(
        config.body["access_evaluation_endpoint"],
        format!("{}/access/v1/evaluation", server.base)
    );

    let resource = |environment: &str| {
        json!({"type": "Resource", "id": format!("github/acme/app@{environment}"),
               "properties": {"system": "github", "environment": environment, "sensitivity": "internal", "kind": "branch"}})
    };
    let one = |action: &str, subject: &str| {
        json!({"subject": {"type": "agent", "id": subject}, "action": {"name": action},
               "resource": resource("dev"), "context": {"task_id": "t-9", "intent": "review"}})
    };
    let allowed = server
        .send(
            server
                .http
                .post(format!("{}/access/v1/evaluation", server.base))
                .bearer_auth(&svid)
                .header("x-request-id", "authzen-1")
                .json(&one("read", "coder")),
        )
        .await;
    assert_eq!(allowed.headers["x-request-id"], "authzen-1");
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.body["decision"], true, "{}", allowed.body);
    assert_eq!(
        allowed.body["context"]["policies"],
        json!(["coding-read-repository"])
    );

    // A deny is HTTP 200 with decision false; the SPIFFE ID names the subject too.
    let denied = server
        .call(
            Method::POST,
            "/access/v1/evaluation",
            Some(&svid),
            Some(one("delete", "spiffe://test.example/agent/coder")),
        )
        .await;
    assert_eq!(
        (denied.status, denied.body["decision"].clone()),
        (StatusCode::OK, json!(false))
    );
    // Asking about another agent is refused.
    let other = server
        .call(
            Method::POST,
            "/access/v1/evaluation",
            Some(&svid),
            Some(one("read", "someone-else")),
        )
        .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::FORBIDDEN, "subject_mismatch")
    );
    let anonymous = server
        .call(
            Method::POST,
            "/access/v1/evaluation",
            None,
            Some(one("read", "coder")),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Batches take defaults and stop as their semantic says.
    let batch = json!({
        "subject": {"type": "agent", "id": "coder"},
        "resource": resource("dev"),
        "evaluations": [{"action": {"name": "read"}}, {"action": {"name": "delete"}}, {"action": {"name": "write"}}],
        "options": {"evaluations_semantic": "deny_on_first_deny"}
    });
    let answers = server
        .call(
            Method::POST,
            "/access/v1/evaluations",
            Some(&svid),
            Some(batch.clone()),
        )
        .await;
    let decisions: Vec<_> = answers.body["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].clone())
        .collect();
    assert_eq!(decisions, [json!(true), json!(false)], "{}", answers.body);
    let mut all = batch;
    all["options"]["evaluations_semantic"] = json!("execute_all");
    let answers = server
        .call(
            Method::POST,
            "/access/v1/evaluations",
            Some(&svid),
            Some(all),
        )
        .await;
    assert_eq!(answers.body["evaluations"].as_array().unwrap().len(), 3);
    let unknown = server
        .call(
            Method::POST,
            "/access/v1/evaluations",
            Some(&svid),
            Some(json!({"evaluations": [one("read", "coder")], "bogus": 1})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);

    // AuthZEN 1.0 batches as the spec writes them: without `evaluations`, or with none, the
    // top-level fields are one evaluation; unknown options are ignored; an error in one
    // evaluation is that evaluation's result, not the batch's.
    let post = |body: Value| {
        let svid = svid.clone();
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    "/access/v1/evaluations",
                    Some(&svid),
                    Some(body),
                )
                .await
        }
    };
    for body in [
        one("read", "coder"),
        json!({"subject": {"type": "agent", "id": "coder"}, "action": {"name": "read"},
               "resource": resource("dev"), "evaluations": []}),
        json!({"evaluations": [one("read", "coder")],
               "options": {"evaluations_semantic": "execute_all", "a_future_option": true}}),
    ] {
        let answered = post(body).await;
        assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
        assert_eq!(
            answered.body["evaluations"],
            json!([{"decision": true, "context": answered.body["evaluations"][0]["context"]}])
        );
        assert_eq!(answered.body["evaluations"][0]["decision"], true);
    }
    let mixed =
        post(json!({"evaluations": [one("read", "someone-else"), one("read", "coder")]})).await;
    assert_eq!(mixed.status, StatusCode::OK, "{}", mixed.body);
    let first = &mixed.body["evaluations"][0];
    assert_eq!(first["decision"], false);
    assert_eq!(first["context"]["error"]["status"], 403);
    assert_eq!(first["context"]["error"]["code"], "subject_mismatch");
    assert_eq!(mixed.body["evaluations"][1]["decision"], true);
    // A resource with only type and id (all AuthZEN requires) is decided: AIMS cannot tell
    // its attributes, so it is a deny naming them, never a 400.
    let bare = server
        .call(
            Method::POST,
            "/access/v1/evaluation",
            Some(&svid),
            Some(
                json!({"subject": {"type": "agent", "id": "coder"}, "action": {"name": "read"},
                        "resource": {"type": "Resource", "id": "github/acme/app"}}),
            ),
        )
        .await;
    assert_eq!(bare.status, StatusCode::OK, "{}", bare.body);
    assert_eq!(bare.body["decision"], false);
    assert_eq!(bare.body["context"]["reason"], "unknown_resource");
    assert_eq!(
        bare.body["context"]["missing"],
        json!(["system", "environment", "sensitivity", "kind"])
    );

    // Every evaluation is an audited decision; the one refused inside a batch is an audited
    // refusal.
    let events = server.events().await;
    let decisions = events.iter().filter(|e| e.action == "decision").count();
    assert_eq!(decisions, 2 + 2 + 3 + 3 + 1 + 1);
    assert!(
        events
            .iter()
            .any(|e| e.action == "api.reject" && e.code.as_deref() == Some("subject_mismatch"))
    );
}

#[tokio::test]
async fn versions_are_listed_shown_and_rolled_back() {
    let server = TestServer::start(Backend::Sqlite).await;
    let v1 = starter_files();
    push(&server, &v1, ADMIN_TOKEN).await;
    let mut v2 = starter_files();
    v2.remove("support.cedar");
    assert_eq!(push(&server, &v2, ADMIN_TOKEN).await.body["version"], 2);

    let list = server.admin(Method::GET, "/v1/policies", None).await;
    assert_eq!(list.body["active_version"], 2);
    let versions: Vec<_> = list.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(versions, [json!(2), json!(1)]);
    let shown = server.admin(Method::GET, "/v1/policies/1", None).await;
    assert_eq!(shown.body["files"]["support.cedar"], v1["support.cedar"]);
    assert_eq!(
        server
            .admin(Method::GET, "/v1/policies/9", None)
            .await
            .code(),
        "policy_version_not_found"
    );
    // Versions count from 1 and fit the store's signed 64 bits; anything else is a bad
    // request, on reading and on rolling back alike (the largest one was a 409 `conflict`).
    for bad in [
        "x",
        "0",
        "-1",
        "9223372036854775808",
        "18446744073709551616",
    ] {
        for (method, path) in [
            (Method::GET, format!("/v1/policies/{bad}")),
            (Method::POST, format!("/v1/policies/{bad}/rollback")),
        ] {
            let reply = server.admin(method, &path, None).await;
            assert_eq!(
                (reply.status, reply.code()),
                (StatusCode::BAD_REQUEST, "invalid_version"),
                "{path}"
            );
        }
    }
    assert_eq!(
        server
            .admin(Method::GET, "/v1/policies/9223372036854775807", None)
            .await
            .code(),
        "policy_version_not_found"
    );

    let auditor = server.add_user("carol", "auditor").await;
    let denied = server
        .call(
            Method::POST,
            "/v1/policies/1/rollback",
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let rolled = server
        .admin(Method::POST, "/v1/policies/1/rollback", None)
        .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.body);
    assert_eq!(rolled.body["version"], 3);
    assert!(
        rolled.body["files"]
            .as_array()
            .unwrap()
            .contains(&json!("support.cedar"))
    );
    let event = server.last_event("policy.activate").await;
    assert_eq!(event.details["rollback_of"], 1);
    assert_eq!(
        server
            .admin(Method::GET, "/v1/policies/active", None)
            .await
            .body["version"],
        3
    );
}
