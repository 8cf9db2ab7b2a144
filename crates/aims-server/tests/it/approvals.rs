//! Just-in-time human approval over HTTP: an `approval_required` decision opens a request for
//! that exact call, the agent waits on it, a human approves or denies it, and the approval
//! covers that call only, as many times as the policy says, on every replica.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_server::config::{ENV_BOOTSTRAP_TOKEN, ENV_PUBLIC_URL};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use axum::http::StatusCode as AxumStatus;
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use crate::kit::{ADMIN_TOKEN, Backend, Reply, TestServer, serve_on_loopback, starter_files};
use crate::on_both_stores;

on_both_stores!(
    an_approval_covers_one_exact_call,
    a_denial_is_final_and_shown,
    bad_answers_are_refused_and_change_nothing,
    policy_terms_decide_who_how_long_and_how_often,
    a_single_use_grant_is_spent_once_across_replicas,
    a_waiter_is_woken_by_an_answer_on_another_replica,
    revocation_ends_pending_requests,
    a_failing_notifier_leaves_the_request_pending,
    the_sdk_waits_for_the_human_and_gets_the_call,
);

const OWNER: &str = "alice";

/// An attested incident-response agent with an open task.
struct Responder {
    svid: String,
    task_id: String,
}

async fn push(server: &TestServer, files: &BTreeMap<String, String>) {
    let reply = server
        .admin(
            Method::POST,
            "/v1/policies",
            Some(json!({ "files": files })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

/// Registers and attests agent `name` of the incident-response team, owned by [`OWNER`],
/// and opens a task acting for `bob`.
async fn responder(server: &TestServer, name: &str) -> Responder {
    let reply = server
        .admin(
            Method::POST,
            "/v1/agents",
            Some(json!({"name": name, "owner": OWNER, "environment": "prod",
                        "labels": {"team": "incident-response"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let join = reply.body["join_token"].as_str().unwrap().to_owned();
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    let svid = Attestor::new(AdminClient::new(&server.base, None).unwrap(), key)
        .attest(&Default::default(), &Credential::JoinToken(join), None)
        .await
        .unwrap()
        .svid;
    let task = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&svid),
            Some(json!({"intent": "contain incident INC-42", "subject": "bob"})),
        )
        .await;
    assert_eq!(task.status, StatusCode::CREATED, "{}", task.body);
    Responder {
        svid,
        task_id: task.body["id"].as_str().unwrap().to_owned(),
    }
}

fn secret(id: &str, sensitivity: &str) -> Value {
    json!({"type": "Secret", "id": id, "system": "vault", "environment": "prod",
           "sensitivity": sensitivity, "kind": "password"})
}

/// Asks to export `resource` with `arguments`.
async fn export(
    server: &TestServer,
    agent: &Responder,
    resource: Value,
    arguments: Value,
) -> Reply {
    server
        .call(
            Method::POST,
            "/v1/decisions",
            Some(&agent.svid),
            Some(
                json!({"action": "export_secret", "resource": resource, "task_id": agent.task_id,
                        "intent": "contain incident INC-42", "arguments": arguments}),
            ),
        )
        .await
}

async fn answer(server: &TestServer, token: &str, id: &str, verb: &str, reason: &str) -> Reply {
    server
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/{verb}"),
            Some(token),
            Some(json!({ "reason": reason })),
        )
        .await
}

async fn show(server: &TestServer, token: &str, id: &str, wait: &str) -> Reply {
    server
        .call(
            Method::GET,
            &format!("/v1/approvals/{id}?wait={wait}"),
            Some(token),
            None,
        )
        .await
}

/// The agent long-polls request `id` at `server` for up to 20 s, in the background: the
/// answer and how long it waited.
fn long_poll(
    server: &TestServer,
    agent: &Responder,
    id: &str,
) -> tokio::task::JoinHandle<(Reply, Duration)> {
    let base = server.base.clone();
    let url = format!("{base}/v1/approvals/{id}?wait=20s");
    let svid = agent.svid.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let request = reqwest::Client::new().get(url).bearer_auth(svid);
        let reply = TestServer::send_to(&base, request).await;
        (reply, started.elapsed())
    })
}

/// The approval id of an `approval_required` answer.
fn pending_id(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["decision"], "approval_required",
        "{}",
        reply.body
    );
    reply.body["approval_id"].as_str().unwrap().to_owned()
}

async fn an_approval_covers_one_exact_call(backend: Backend) {
    let server = TestServer::start(backend).await;
    push(&server, &starter_files()).await;
    let agent = responder(&server, "ir").await;
    let carol = server.add_user("carol", "approver").await;
    let db = secret("vault/prod/db-password", "secret");
    let args = json!({"format": "env", "rotate_after": true});

    let asked = export(&server, &agent, db.clone(), args.clone()).await;
    let id = pending_id(&asked);
    assert_eq!(
        asked.body["approval_url"],
        format!("{}/v1/approvals/{id}", server.base)
    );
    assert_eq!(
        asked.body["policies"],
        json!(["ir-export-secret-with-approval"])
    );
    // The same call again shares the request instead of opening another.
    let again = export(
        &server,
        &agent,
        db.clone(),
        json!({"rotate_after": true, "format": "env"}),
    )
    .await;
    assert_eq!(pending_id(&again), id);

    // What the agent and the approver see: the call, the task, the policy and its text.
    let seen = show(&server, &agent.svid, &id, "0").await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert_eq!(seen.body["state"], "pending");
    let listed = server
        .call(Method::GET, "/v1/approvals", Some(&carol), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let listed = &listed.body["approvals"][0];
    assert_eq!(listed["approval_id"], id.as_str());
    assert_eq!(listed["task_id"], agent.task_id.as_str());
    assert_eq!(listed["owner"], OWNER);
    assert_eq!(listed["task_subject"], "bob");
    assert_eq!(listed["action"], "export_secret");
    assert_eq!(listed["resource"], "Secret::vault/prod/db-password");
    assert_eq!(listed["arguments"], args);
    assert!(
        listed["arguments_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(listed["four_eyes"], true);
    assert_eq!(listed["approvers"], json!(["admin", "approver"]));
    let text = listed["policy_texts"]["ir-export-secret-with-approval"]
        .as_str()
        .unwrap();
    assert!(text.contains("context.approved"), "{text}");

    // The agent long-polls; the approval wakes it well before its wait runs out.
    let waiter = long_poll(&server, &agent, &id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let approved = answer(
        &server,
        &carol,
        &id,
        "approve",
        "INC-42: export for the rotation",
    )
    .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["state"], "approved");
    let (woken, waited) = waiter.await.unwrap();
    assert_eq!(woken.body["state"], "approved", "{}", woken.body);
    assert_eq!(woken.body["verdict"]["by"], "carol");
    assert_eq!(
        woken.body["verdict"]["reason"],
        "INC-42: export for the rotation"
    );
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");

    // Another call is not covered: other arguments, another resource.
    let other_args = export(&server, &agent, db.clone(), json!({"format": "json"})).await;
    assert_ne!(pending_id(&other_args), id);
    let other_secret = export(
        &server,
        &agent,
        secret("vault/prod/api-key", "secret"),
        args.clone(),
    )
    .await;
    assert_ne!(pending_id(&other_secret), id);
    // Another agent's identical call is not covered either.
    let other_agent = responder(&server, "ir-2").await;
    let theirs = export(
        &server,
        &Responder {
            svid: other_agent.svid.clone(),
            task_id: agent.task_id.clone(),
        },
        db.clone(),
        args.clone(),
    )
    .await;
    assert_ne!(pending_id(&theirs), id);
    // Nor is the same call in another task of the same agent.
    let other_task = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&agent.svid),
            Some(json!({"intent": "another incident", "subject": "bob"})),
        )
        .await;
    let in_other_task = Responder {
        svid: agent.svid.clone(),
        task_id: other_task.body["id"].as_str().unwrap().to_owned(),
    };
    let elsewhere = export(&server, &in_other_task, db.clone(), args.clone()).await;
    assert_ne!(pending_id(&elsewhere), id);
    // AuthZEN asks the same engine and names the same pending request for a new call.
    let evaluation = server
        .call(
            Method::POST,
            "/access/v1/evaluation",
            Some(&agent.svid),
            Some(json!({
                "subject": {"type": "agent", "id": "ir"},
                "action": {"name": "export_secret"},
                "resource": {"type": "Secret", "id": "vault/prod/authzen",
                             "properties": {"system": "vault", "environment": "prod",
                                            "sensitivity": "secret", "kind": "password"}},
                "context": {"task_id": agent.task_id, "intent": "contain incident INC-42"}
            })),
        )
        .await;
    assert_eq!(evaluation.status, StatusCode::OK, "{}", evaluation.body);
    assert_eq!(evaluation.body["decision"], false);
    let context = &evaluation.body["context"];
    assert_eq!(context["reason"], "approval_required");
    let authzen_id = context["approval_id"].as_str().unwrap();
    assert_eq!(
        context["approval_url"],
        format!("{}/v1/approvals/{authzen_id}", server.base)
    );
    let same = export(
        &server,
        &agent,
        secret("vault/prod/authzen", "secret"),
        json!({}),
    )
    .await;
    assert_eq!(pending_id(&same), authzen_id);

    // The exact call is allowed once, naming the grant it spent.
    let allowed = export(&server, &agent, db.clone(), args.clone()).await;
    assert_eq!(allowed.body["decision"], "allow", "{}", allowed.body);
    assert_eq!(allowed.body["approval_id"], id.as_str());
    assert!(allowed.body.get("approval_url").is_none());
    let used = show(&server, &carol, &id, "0").await;
    assert_eq!(used.body["state"], "used");
    // The next identical call needs a new approval.
    let next = export(&server, &agent, db, args).await;
    let next_id = pending_id(&next);
    assert_ne!(next_id, id);

    // The log tells the story: opened, decided by carol with her reason, spent by a decision.
    let events = server.events().await;
    let of = |action: &str| {
        events
            .iter()
            .filter(|e| e.action == action && e.approval_id.as_deref() == Some(id.as_str()))
            .collect::<Vec<_>>()
    };
    assert_eq!(of("approval.request").len(), 1);
    let decided = of("approval.decide");
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].task_id.as_deref(), Some(agent.task_id.as_str()));
    assert_eq!(
        decided[0].details["reason"],
        "INC-42: export for the rotation"
    );
    assert!(format!("{:?}", decided[0].actor).contains("carol"));
    let decisions = of("decision");
    assert_eq!(
        decisions
            .iter()
            .map(|e| e.decision.clone().unwrap())
            .collect::<Vec<_>>(),
        ["approval_required", "approval_required", "allow"]
    );
}

async fn a_denial_is_final_and_shown(backend: Backend) {
    let server = TestServer::start(backend).await;
    push(&server, &starter_files()).await;
    let agent = responder(&server, "ir").await;
    let carol = server.add_user("carol", "approver").await;
    let db = secret("vault/prod/db-password", "secret");

    let id = pending_id(&export(&server, &agent, db.clone(), json!({})).await);
    let denied = answer(&server, &carol, &id, "deny", "not during the freeze").await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.body);
    let seen = show(&server, &agent.svid, &id, "5s").await;
    assert_eq!(seen.body["state"], "denied");
    assert_eq!(seen.body["verdict"]["approved"], false);
    assert_eq!(seen.body["verdict"]["reason"], "not during the freeze");
    // The call stays unapproved: asking again opens a new request.
    let again = export(&server, &agent, db, json!({})).await;
    assert_ne!(pending_id(&again), id);
    // Answering a denied request again is refused.
    let twice = answer(&server, &carol, &id, "approve", "changed my mind").await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.code(), "approval_already_decided");
}

async fn bad_answers_are_refused_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    push(&server, &starter_files()).await;
    let agent = responder(&server, "ir").await;
    let stranger = responder(&server, "ir-other").await;
    let carol = server.add_user("carol", "approver").await;
    let owner = server.add_user(OWNER, "approver").await;
    let subject = server.add_user("bob", "admin").await;
    let auditor = server.add_user("audrey", "auditor").await;
    let id = pending_id(
        &export(
            &server,
            &agent,
            secret("vault/prod/db", "secret"),
            json!({}),
        )
        .await,
    );
    let rejects_before = server.count_events("api.reject").await;

    let refusals: Vec<(Reply, StatusCode, &str)> = vec![
        (
            answer(&server, &agent.svid, &id, "approve", "self-service").await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            answer(&server, &auditor, &id, "approve", "looks fine").await,
            StatusCode::FORBIDDEN,
            "not_an_approver",
        ),
        (
            answer(&server, &owner, &id, "approve", "my own agent").await,
            StatusCode::FORBIDDEN,
            "four_eyes",
        ),
        (
            answer(&server, &subject, &id, "approve", "my own task").await,
            StatusCode::FORBIDDEN,
            "four_eyes",
        ),
        (
            answer(&server, &carol, "no-such-request", "approve", "ok").await,
            StatusCode::NOT_FOUND,
            "approval_not_found",
        ),
        (
            answer(&server, &carol, &id, "approve", " ").await,
            StatusCode::BAD_REQUEST,
            "invalid_reason",
        ),
        (
            answer(&server, &carol, &id, "approve", &"x".repeat(513)).await,
            StatusCode::BAD_REQUEST,
            "invalid_reason",
        ),
        (
            show(&server, &agent.svid, &id, "-1").await,
            StatusCode::BAD_REQUEST,
            "invalid_wait",
        ),
        (
            show(&server, &agent.svid, &id, "86400s").await,
            StatusCode::BAD_REQUEST,
            "invalid_wait",
        ),
        (
            show(&server, &stranger.svid, &id, "0").await,
            StatusCode::NOT_FOUND,
            "approval_not_found",
        ),
        (
            server
                .call(Method::GET, "/v1/approvals", Some(&agent.svid), None)
                .await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
    ];
    for (reply, status, code) in &refusals {
        assert_eq!(
            (reply.status, reply.code()),
            (*status, *code),
            "{}",
            reply.body
        );
    }
    // Every refusal is audited; the request is untouched.
    assert_eq!(
        server.count_events("api.reject").await,
        rejects_before + refusals.len()
    );
    assert_eq!(server.count_events("approval.decide").await, 0);
    assert_eq!(
        show(&server, &carol, &id, "0").await.body["state"],
        "pending"
    );

    // Answered once; twice is refused.
    let first = answer(&server, &carol, &id, "approve", "INC-42").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let twice = answer(&server, &carol, &id, "approve", "INC-42 again").await;
    assert_eq!(
        (twice.status, twice.code()),
        (StatusCode::CONFLICT, "approval_already_decided")
    );
    assert_eq!(server.count_events("approval.decide").await, 1);
}

/// A policy set whose permits ask for approval on their own terms.
fn terms_policies() -> BTreeMap<String, String> {
    let schema = starter_files().remove("aims.cedarschema").unwrap();
    let policies = r#"
@id("two-uses-dave-only")
@approvers("dave")
@approval_uses("2")
permit (principal, action == Aims::Action::"export_secret", resource is Aims::Secret)
when { resource.sensitivity == "secret" && context.approved };

@id("one-second-wait")
@approval_ttl_s("1")
permit (principal, action == Aims::Action::"export_secret", resource is Aims::Secret)
when { resource.sensitivity == "confidential" && context.approved };
"#;
    BTreeMap::from([
        ("aims.cedarschema".to_owned(), schema),
        ("terms.cedar".to_owned(), policies.to_owned()),
    ])
}

async fn policy_terms_decide_who_how_long_and_how_often(backend: Backend) {
    let server = TestServer::start(backend).await;
    push(&server, &terms_policies()).await;
    let agent = responder(&server, "ir").await;
    let carol = server.add_user("carol", "approver").await;
    let dave = server.add_user("dave", "approver").await;
    let db = secret("vault/prod/db", "secret");

    // Only dave may approve; the owner may (no four eyes here); arguments are not shown.
    let id =
        pending_id(&export(&server, &agent, db.clone(), json!({"token": "never-shown"})).await);
    let seen = show(&server, &dave, &id, "0").await;
    assert!(seen.body.get("arguments").is_none(), "{}", seen.body);
    assert!(!seen.body.to_string().contains("never-shown"));
    let by_carol = answer(&server, &carol, &id, "approve", "ok").await;
    assert_eq!(by_carol.code(), "not_an_approver");
    let by_admin = answer(&server, ADMIN_TOKEN, &id, "approve", "ok").await;
    assert_eq!(by_admin.code(), "not_an_approver");
    let by_dave = answer(
        &server,
        &dave,
        &id,
        "approve",
        "two exports for the migration",
    )
    .await;
    assert_eq!(by_dave.status, StatusCode::OK, "{}", by_dave.body);
    // Two uses, then a new approval.
    for _ in 0..2 {
        let allowed = export(&server, &agent, db.clone(), json!({"token": "never-shown"})).await;
        assert_eq!(allowed.body["decision"], "allow", "{}", allowed.body);
    }
    let third = export(&server, &agent, db, json!({"token": "never-shown"})).await;
    assert_ne!(pending_id(&third), id);

    // A one-second wait: the waiter learns it expired, and no one can approve it after.
    let quick = pending_id(
        &export(
            &server,
            &agent,
            secret("vault/prod/c", "confidential"),
            json!({}),
        )
        .await,
    );
    let waited = show(&server, &agent.svid, &quick, "10s").await;
    assert_eq!(waited.body["state"], "expired", "{}", waited.body);
    let late = answer(&server, &carol, &quick, "approve", "too late").await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "approval_expired")
    );
}

/// The public URL both replicas serve under (as behind one load balancer): credentials are
/// issued for it, so either replica accepts them.
const PUBLIC_URL: &str = "https://aims.test.example";

/// Two servers over one store, each with its own process state (its own waiters).
async fn two_replicas(backend: Backend) -> (TestServer, TestServer) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = crate::kit::open_store(backend, &dir).await;
    let env = HashMap::from([
        (ENV_BOOTSTRAP_TOKEN.to_owned(), ADMIN_TOKEN.to_owned()),
        (ENV_PUBLIC_URL.to_owned(), PUBLIC_URL.to_owned()),
    ]);
    let first = TestServer::start_on(backend, dir, store.clone(), env)
        .await
        .unwrap();
    let master = std::fs::read_to_string(first.dir.path().join("master.key")).unwrap();
    let env = HashMap::from([
        ("AIMS_MASTER_KEY".to_owned(), master),
        (ENV_PUBLIC_URL.to_owned(), PUBLIC_URL.to_owned()),
    ]);
    // On PostgreSQL the second replica has a store (and connection pool) of its own on the
    // same schema; one SQLite file serves one process, so there the replicas share it.
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
    let second = TestServer::start_on(backend, second_dir, second_store, env)
        .await
        .unwrap();
    (first, second)
}

/// Waits until `server` has loaded the first policy version (pushed on another replica).
async fn policy_loaded(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .admin(Method::GET, "/v1/policies/active", None)
        .await
        .body["version"]
        != 1
    {
        assert!(
            Instant::now() < deadline,
            "the policies did not reach the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_single_use_grant_is_spent_once_across_replicas(backend: Backend) {
    let (first, second) = two_replicas(backend).await;
    push(&first, &starter_files()).await;
    policy_loaded(&second).await;
    let agent = Arc::new(responder(&first, "ir").await);
    let carol = first.add_user("carol", "approver").await;
    let db = secret("vault/prod/db", "secret");
    let id = pending_id(&export(&first, &agent, db.clone(), json!({"n": 1})).await);
    let approved = answer(&first, &carol, &id, "approve", "once").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);

    let servers = Arc::new([first, second]);
    let callers: Vec<_> = (0..16)
        .map(|i| {
            let (servers, agent, db) = (servers.clone(), agent.clone(), db.clone());
            tokio::spawn(async move {
                export(&servers[i % 2], &agent, db, json!({"n": 1}))
                    .await
                    .body["decision"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for caller in callers {
        answers.push(caller.await.unwrap());
    }
    let allowed = answers.iter().filter(|d| *d == "allow").count();
    assert_eq!(allowed, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|d| d == "allow" || d == "approval_required"),
        "{answers:?}"
    );
}

async fn a_waiter_is_woken_by_an_answer_on_another_replica(backend: Backend) {
    let (first, second) = two_replicas(backend).await;
    push(&first, &starter_files()).await;
    policy_loaded(&second).await;
    let agent = responder(&first, "ir").await;
    let carol = first.add_user("carol", "approver").await;
    let id =
        pending_id(&export(&first, &agent, secret("vault/prod/db", "secret"), json!({})).await);

    let waiter = long_poll(&second, &agent, &id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let approved = answer(&first, &carol, &id, "approve", "from the other replica").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let (woken, waited) = waiter.await.unwrap();
    assert_eq!(woken.body["state"], "approved", "{}", woken.body);
    // Woken through the store's change counter (polled every 20 ms), not by the wait running out.
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
}

async fn revocation_ends_pending_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    push(&server, &starter_files()).await;
    let agent = responder(&server, "ir").await;
    let carol = server.add_user("carol", "approver").await;
    let id = pending_id(
        &export(
            &server,
            &agent,
            secret("vault/prod/db", "secret"),
            json!({}),
        )
        .await,
    );

    // Ending the task revokes its pending request: no one can approve it any more.
    let ended = server
        .admin(
            Method::POST,
            &format!("/v1/tasks/{}/end", agent.task_id),
            None,
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    let seen = show(&server, &carol, &id, "0").await;
    assert_eq!(seen.body["state"], "revoked");
    let late = answer(&server, &carol, &id, "approve", "after the task").await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "approval_revoked")
    );

    // Suspending the agent revokes its grants: an approved call stops being covered.
    let other = responder(&server, "ir-2").await;
    let db = secret("vault/prod/db", "secret");
    let granted = pending_id(&export(&server, &other, db.clone(), json!({})).await);
    let approved = answer(&server, &carol, &granted, "approve", "ok").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let suspended = server
        .admin(
            Method::POST,
            "/v1/agents/ir-2/suspend",
            Some(json!({"reason": "suspicious export"})),
        )
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.body);
    let seen = show(&server, &carol, &granted, "0").await;
    assert_eq!(seen.body["state"], "revoked");
}

async fn a_failing_notifier_leaves_the_request_pending(backend: Backend) {
    // A webhook that refuses every delivery, remembering what it was sent.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                AxumStatus::INTERNAL_SERVER_ERROR
            }
        }),
    );
    let hook = format!("{}/hook", serve_on_loopback(app).await);
    let server = TestServer::start_tuned(backend, |config| {
        config.approval_webhook_url = Some(hook);
    })
    .await;
    push(&server, &starter_files()).await;
    let agent = responder(&server, "ir").await;
    let carol = server.add_user("carol", "approver").await;

    let started = Instant::now();
    let asked = export(
        &server,
        &agent,
        secret("vault/prod/db", "secret"),
        json!({}),
    )
    .await;
    let id = pending_id(&asked);
    // The answer did not wait for the notifier.
    assert!(started.elapsed() < Duration::from_secs(5));
    // It is retried: a second attempt follows the first after its backoff.
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the notifier was not retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each delivery is a JWS of the new request, signed by the trust domain's key.
    let body = received.lock().unwrap()[0].clone();
    let claims = crate::kit::event_claims(&server, &body).await;
    assert_eq!(claims["event"]["type"], "approval.requested");
    assert_eq!(claims["event"]["approval_id"], id.as_str());
    // The failure changed nothing: still pending, and a human can still approve.
    assert_eq!(
        show(&server, &carol, &id, "0").await.body["state"],
        "pending"
    );
    let approved = answer(
        &server,
        &carol,
        &id,
        "approve",
        "notifier down, approved in the console",
    )
    .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
}

/// A permit that lets the planner read one repository once a human approves.
pub const READ_WITH_APPROVAL: &str = r#"
@id("planner-reads-the-vault-repository-with-approval")
permit (
  principal,
  action == Aims::Action::"read",
  resource == Aims::Resource::"repo/acme/vault"
)
when { principal.hasTag("role") && principal.getTag("role") == "planner" && context.approved };
"#;

/// Approves, as `approver`, the first pending request that shows up within ten seconds.
async fn approve_when_asked(server: &TestServer, approver: &str, reason: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = server
            .call(Method::GET, "/v1/approvals", Some(approver), None)
            .await;
        if let Some(id) = listed.body["approvals"][0]["approval_id"].as_str() {
            let approved = answer(server, approver, id, "approve", reason).await;
            assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
            return id.to_owned();
        }
        assert!(Instant::now() < deadline, "no approval request showed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_sdk_waits_for_the_human_and_gets_the_call(backend: Backend) {
    use crate::task_tokens::{Scene, access_token, repository};
    use aims_api::DecideRequest;
    use aims_sdk::TokenClient;

    let scene = Scene::start(backend).await;
    Scene::push_policies(&scene.server, &[("approval.cedar", READ_WITH_APPROVAL)]).await;
    let carol = scene.server.add_user("carol", "approver").await;
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    let request = DecideRequest {
        action: "read".into(),
        resource: repository("repo/acme/vault"),
        task_id: String::new(),
        intent: String::new(),
        arguments: serde_json::Map::new(),
    };

    // With a task token (DPoP): the call waits for carol, then is allowed once.
    let client = TokenClient::new(&scene.server.base).unwrap();
    let waiting = {
        let (client, key, token, request) = (
            client.clone(),
            scene.planner.key.clone(),
            token.clone(),
            request.clone(),
        );
        tokio::spawn(async move {
            client
                .decide_or_wait(&token, &key, &request, Duration::from_secs(20))
                .await
        })
    };
    let id = approve_when_asked(&scene.server, &carol, "read for the audit").await;
    let waited = waiting.await.unwrap().unwrap();
    assert_eq!(waited.decision.decision, "allow");
    assert_eq!(
        waited
            .decision
            .approval_id
            .as_ref()
            .map(ToString::to_string),
        Some(id)
    );
    let approval = waited.approval.unwrap();
    assert_eq!(approval.verdict.unwrap().reason, "read for the audit");

    // A denial ends the wait with the first answer; a short wait ends pending.
    let waiting = {
        let (client, key, token, request) = (
            client.clone(),
            scene.planner.key.clone(),
            token.clone(),
            request.clone(),
        );
        tokio::spawn(async move {
            client
                .decide_or_wait(&token, &key, &request, Duration::from_secs(20))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let listed = scene
            .server
            .call(Method::GET, "/v1/approvals", Some(&carol), None)
            .await;
        if let Some(id) = listed.body["approvals"][0]["approval_id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "no approval request showed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let denied = answer(&scene.server, &carol, &id, "deny", "not today").await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.body);
    let waited = waiting.await.unwrap().unwrap();
    assert_eq!(waited.decision.decision, "approval_required");
    assert_eq!(waited.approval.unwrap().state.as_str(), "denied");
    let short = client
        .decide_or_wait(&token, &scene.planner.key, &request, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(short.decision.decision, "approval_required");
    assert_eq!(short.approval.unwrap().state.as_str(), "pending");
}
