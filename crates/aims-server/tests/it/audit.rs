//! The audit log seen from outside: every change and refusal recorded, the chain verified over
//! HTTP, a tampered record detected, and a task traced as the tree of its delegations.

use aims_core::audit::AuditEvent;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::kit::{Backend, TestServer};
use crate::on_both_stores;
use crate::task_tokens::{Scene, access_token, claims};

on_both_stores!(
    audit_chain_verifies_and_pages_in_order,
    concurrent_requests_keep_the_chain_intact,
    a_tampered_record_is_detected,
    a_task_traces_as_the_tree_of_its_delegations,
    a_read_is_answered_while_the_audit_head_is_locked,
);

/// The decisions of a traced token: (resource, decision).
fn decisions(token: &Value) -> Vec<(String, String)> {
    token["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["action"] == "decision")
        .map(|e| {
            let text = |f: &str| e["event"][f].as_str().unwrap_or_default().to_owned();
            (text("resource"), text("decision"))
        })
        .collect()
}

async fn a_task_traces_as_the_tree_of_its_delegations(backend: Backend) {
    let scene = Scene::start(backend).await;
    let parent = access_token(&scene.exchange("read:repo/acme/* write:repo/acme/app").await);
    let planner_read = scene
        .decide(&scene.planner.key, &parent, "read", "repo/acme/app")
        .await;
    // The starter policies let the planner obtain and delegate, not read itself.
    assert_eq!(
        planner_read.body["decision"], "deny",
        "{}",
        planner_read.body
    );
    let child = access_token(
        &scene
            .delegate(&parent, &[("scope", "read:repo/acme/app")])
            .await,
    );
    for id in ["repo/acme/app", "repo/acme/other"] {
        scene.decide(&scene.executor.key, &child, "read", id).await;
    }
    let task_id = claims(&parent)["task_id"].as_str().unwrap().to_owned();
    let ended = scene
        .server
        .admin(Method::POST, &format!("/v1/tasks/{task_id}/end"), None)
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);

    let trace = scene
        .server
        .admin(Method::GET, &format!("/v1/audit/trace/{task_id}"), None)
        .await;
    assert_eq!(trace.status, StatusCode::OK, "{}", trace.body);
    let body = &trace.body;
    assert_eq!(body["task"]["id"], task_id.as_str());
    assert_eq!(body["task"]["state"], "ended");
    assert_eq!(body["truncated"], false);
    // The planner's token, its decision, and the executor's token delegated from it.
    let tokens = body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{body}");
    let root = &tokens[0];
    assert_eq!(root["token_id"], claims(&parent)["jti"]);
    assert_eq!(root["issued"]["event"]["action"], "token.exchange");
    assert_eq!(
        decisions(root),
        [("read Resource::repo/acme/app".to_owned(), "deny".to_owned())]
    );
    let delegated = root["delegated"].as_array().unwrap();
    assert_eq!(delegated.len(), 1, "{body}");
    assert_eq!(delegated[0]["token_id"], claims(&child)["jti"]);
    assert_eq!(delegated[0]["issued"]["event"]["action"], "token.delegate");
    assert_eq!(
        delegated[0]["issued"]["event"]["delegation_chain"],
        json!([
            "spiffe://test.example/agent/executor",
            "spiffe://test.example/agent/planner"
        ])
    );
    assert_eq!(
        decisions(&delegated[0]),
        [
            (
                "read Resource::repo/acme/app".to_owned(),
                "allow".to_owned()
            ),
            (
                "read Resource::repo/acme/other".to_owned(),
                "deny".to_owned()
            ),
        ]
    );
    // The task's own events beside the tree: it was opened and ended.
    let actions: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"task.end"), "{actions:?}");

    // The same records found by query: by agent and answer, by task and action, by policy,
    // by resource text; refused filters.
    let server = &scene.server;
    let query = |q: &str| {
        let path = format!("/v1/audit/query?{q}");
        async move { server.admin(Method::GET, &path, None).await }
    };
    let resources = |reply: &crate::kit::Reply| -> Vec<String> {
        reply.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event"]["resource"].as_str().unwrap_or("-").to_owned())
            .collect()
    };
    let denied = query("agent=executor&decision=deny").await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.body);
    assert_eq!(resources(&denied), ["read Resource::repo/acme/other"]);
    assert!(denied.body.get("next_after").is_none());
    let in_task = query(&format!("task={task_id}&action=decision")).await;
    assert_eq!(resources(&in_task).len(), 3, "{}", in_task.body);
    let by_policy = query("policy=executor-reads-delegated-repositories").await;
    assert_eq!(resources(&by_policy), ["read Resource::repo/acme/app"]);
    let paged = query(&format!("task={task_id}&action=decision&limit=1")).await;
    assert_eq!(resources(&paged).len(), 1);
    let next = paged.body["next_after"].as_u64().unwrap();
    let rest = query(&format!("task={task_id}&action=decision&after={next}")).await;
    assert_eq!(resources(&rest).len(), 2);
    for bad in [
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "limit=0",
        "task=a%20b",
        "colour=red",
    ] {
        let refused = query(bad).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            refused.body
        );
        assert!(refused.body["error"].is_string(), "{bad}");
    }

    // The same log as OCSF events for a SIEM, paged with a cursor: each with what its class
    // requires; the exchange and the delegation are Authentications, the decisions API
    // Activity.
    let mut after = 0;
    let mut events = Vec::new();
    loop {
        let page = server
            .admin(
                Method::GET,
                &format!("/v1/audit/ocsf?after={after}&limit=7"),
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        events.extend(page.body["events"].as_array().unwrap().iter().cloned());
        match page.body["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    for event in &events {
        assert_eq!(
            aims_server::ocsf::missing_required(event),
            Vec::<String>::new(),
            "{event}"
        );
    }
    let of_task: Vec<&Value> = events
        .iter()
        .filter(|e| e["unmapped"]["task_id"] == task_id.as_str())
        .collect();
    let classes: Vec<(u64, String)> = of_task
        .iter()
        .map(|e| {
            (
                e["class_uid"].as_u64().unwrap(),
                e["unmapped"]["aims_action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        classes.contains(&(3002, "token.exchange".to_owned())),
        "{classes:?}"
    );
    assert!(
        classes.contains(&(3002, "token.delegate".to_owned())),
        "{classes:?}"
    );
    assert!(
        classes.contains(&(6003, "decision".to_owned())),
        "{classes:?}"
    );

    // A task that does not exist, a malformed id, and a caller that is not an operator.
    let missing = scene
        .server
        .admin(Method::GET, "/v1/audit/trace/no-such-task", None)
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "task_not_found")
    );
    let malformed = scene
        .server
        .admin(Method::GET, "/v1/audit/trace/a%20b", None)
        .await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (StatusCode::BAD_REQUEST, "invalid_task_id")
    );
    let as_agent = scene
        .server
        .call(
            Method::GET,
            &format!("/v1/audit/trace/{task_id}"),
            Some(&parent),
            None,
        )
        .await;
    assert_eq!(
        as_agent.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        as_agent.body
    );
}

async fn audit_chain_verifies_and_pages_in_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    server
        .admin(Method::POST, "/v1/agents/coder/suspend", Some(json!({})))
        .await;
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.status, StatusCode::OK);
    assert_eq!(verify.body["intact"], true, "{}", verify.body);

    let page = server
        .admin(Method::GET, "/v1/audit?after=0&limit=2", None)
        .await;
    let records = page.body["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["seq"], 1);
    assert_eq!(records[0]["event"]["action"], "trust_domain.create");
    assert_eq!(records[1]["prev_hash"], records[0]["hash"]);
    let actions: Vec<_> = server
        .events()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        &actions[..4],
        [
            "trust_domain.create",
            "agent.register",
            "agent.lifecycle",
            "api.read"
        ]
    );
}

async fn concurrent_requests_keep_the_chain_intact(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                server
                    .register(&format!("a{i}"), "owner@acme.example")
                    .await;
            } else {
                let reply = server.admin(Method::GET, "/v1/agents", None).await;
                assert_eq!(reply.status, StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let records = server.records().await;
    assert_eq!(records.len(), 1 + 8 + 16);
    aims_core::audit::verify_chain(aims_core::audit::ChainHead::EMPTY, &records).unwrap();
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.body["intact"], true, "{}", verify.body);
}

async fn a_tampered_record_is_detected(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("coder", "alice@acme.example").await;
    server.register("helper", "bob@acme.example").await;
    let records = server.records().await;
    let target = &records[1];
    let forged = target
        .body
        .replace("alice@acme.example", "mallory@acme.example");
    assert_ne!(forged, target.body);
    server.tamper_with_record(target.seq, &forged).await;
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.status, StatusCode::OK);
    assert_eq!(verify.body["intact"], false, "{}", verify.body);
    assert_eq!(
        verify.body["records"], 1,
        "verified up to the record before"
    );
    assert!(
        verify.body["problem"]
            .as_str()
            .unwrap()
            .contains("record 2"),
        "{}",
        verify.body
    );
}

/// On PostgreSQL a read's `api.read` event is durable in the audit queue, so the read is
/// answered while another session holds the audit head's lock (as a state change or a step of
/// a revocation's cascade on any replica does); the event is in the log, in order, once the
/// lock is let go. On SQLite (one writer) the event is appended at once, as before.
async fn a_read_is_answered_while_the_audit_head_is_locked(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register("before", "owner@acme.example").await;
    let holder = match backend {
        Backend::Postgres => {
            let options: sqlx::postgres::PgConnectOptions =
                std::env::var(crate::kit::PG_ENV).unwrap().parse().unwrap();
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
                .await
                .unwrap();
            sqlx::raw_sql(&format!(
                "SET search_path = {}; BEGIN; SELECT * FROM audit_head FOR UPDATE;",
                crate::kit::pg_schema(&server.dir)
            ))
            .execute(&mut conn)
            .await
            .unwrap();
            Some(conn)
        }
        Backend::Sqlite => None,
    };
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        server.admin(Method::GET, "/v1/users", None),
    )
    .await
    .expect("the read waited for the audit head's lock");
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    if let Some(mut conn) = holder {
        sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
    }
    server.register("after", "owner@acme.example").await;
    // The read's event lies between the two registrations.
    let events = server.events().await;
    let at = |found: &dyn Fn(&AuditEvent) -> bool| events.iter().position(found).unwrap();
    let registered = |name: &'static str| {
        move |e: &AuditEvent| {
            e.action == "agent.register" && e.agent.as_deref().is_some_and(|a| a.ends_with(name))
        }
    };
    let read_at = at(&|e| e.action == "api.read" && e.resource.as_deref() == Some("GET /v1/users"));
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert!(at(&registered("/before")) < read_at, "{actions:?}");
    assert!(read_at < at(&registered("/after")), "{actions:?}");
    let verify = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(verify.body["intact"], true, "{}", verify.body);
}
