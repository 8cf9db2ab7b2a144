//! Approvals through the CLI against a real server: an approver lists, shows, approves and
//! denies the requests an agent's calls opened; refusals exit non-zero with their stable code.
//! The agent side (attestation, task, decisions) goes through the SDK, as an agent would.

use std::sync::Arc;

use aims_api::DecideRequest;
use aims_api::oauth::CreateTaskRequest;
use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use ring::rand::SystemRandom;
use serde_json::json;

use crate::process::Server;

/// An attested incident responder of `server` with an open task: its SVID and a decision
/// request to export a database password in that task.
fn responder(server: &Server, runtime: &tokio::runtime::Runtime) -> (String, DecideRequest) {
    let registered = server.json(&[
        "agent",
        "register",
        "ir",
        "--owner",
        "alice@acme.example",
        "--env",
        "prod",
        "--label",
        "team=incident-response",
    ]);
    let join = registered["join_token"].as_str().unwrap().to_owned();
    runtime.block_on(async {
        let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
        let agent = AdminClient::new(&server.url, None).unwrap();
        let svid = Attestor::new(agent.clone(), key)
            .attest(&Default::default(), &Credential::JoinToken(join), None)
            .await
            .unwrap()
            .svid;
        let task = agent
            .create_task(
                &svid,
                &CreateTaskRequest {
                    intent: "contain INC-7".into(),
                    subject: Some("bob".into()),
                    ttl_s: None,
                },
            )
            .await
            .unwrap();
        let request = DecideRequest {
            action: "export_secret".into(),
            resource: json!({"type": "Secret", "id": "vault/prod/db", "system": "vault",
                             "environment": "prod", "sensitivity": "secret", "kind": "password"}),
            task_id: task.id.to_string(),
            intent: task.intent.to_string(),
            arguments: serde_json::Map::new(),
        };
        (svid, request)
    })
}

#[test]
fn approvers_answer_requests_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    server.json(&["policy", "push", policies.to_str().unwrap()]);
    let dana = server.json(&["user", "add", "dana", "--role", "approver"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (svid, export) = responder(&server, &runtime);
    let agent = AdminClient::new(&server.url, None).unwrap();
    let asked = runtime.block_on(agent.decide(&svid, &export)).unwrap();
    assert_eq!(asked.decision, "approval_required");
    let id = asked.approval_id.unwrap().to_string();

    let as_dana = |args: &[&str]| server.run(Some(&dana), args);
    let listed = as_dana(&["approval", "list"]);
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(&id), "{listed}");
    assert!(
        listed.contains("export_secret Secret::vault/prod/db"),
        "{listed}"
    );
    let shown = as_dana(&["approval", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("contain INC-7 (for bob)"), "{shown}");
    assert!(
        shown.contains("Policy ir-export-secret-with-approval:"),
        "{shown}"
    );
    assert!(shown.contains("context.approved"), "{shown}");

    // The agent's owner's colleague approves; the call is then allowed once.
    let approved = as_dana(&[
        "approval",
        "approve",
        &id,
        "--reason",
        "INC-7 rotation",
        "--output",
        "json",
    ]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let approved: serde_json::Value = serde_json::from_slice(&approved.stdout).unwrap();
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["verdict"]["by"], "dana");
    let allowed = runtime.block_on(agent.decide(&svid, &export)).unwrap();
    assert_eq!(allowed.decision, "allow");

    // Answering twice exits non-zero with the stable code; so does a missing reason.
    let twice = as_dana(&["approval", "deny", &id, "--reason", "too late"]);
    assert!(!twice.status.success());
    assert!(
        String::from_utf8_lossy(&twice.stderr).contains("approval_already_decided"),
        "{}",
        String::from_utf8_lossy(&twice.stderr)
    );
    assert!(!as_dana(&["approval", "deny", &id]).status.success());

    // The next identical call needs a new approval; dana denies it.
    let again = runtime.block_on(agent.decide(&svid, &export)).unwrap();
    let second = again.approval_id.unwrap().to_string();
    assert_ne!(second, id);
    let denied = as_dana(&["approval", "deny", &second, "--reason", "one is enough"]);
    assert!(denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stdout).contains("denied by dana (approver)"));
    let all = server.json(&["approval", "list", "--all"]);
    let states: Vec<&str> = all["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["denied", "used"]);
    // Nothing is pending any more.
    let pending = server.json(&["approval", "list"]);
    assert_eq!(pending["approvals"], json!([]));
}
