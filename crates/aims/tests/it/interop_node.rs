//! docs/PROTOCOL.md is enough to write an agent in another language: a Node.js agent written
//! from that guide alone, with `jose` as its JOSE library (tests/interop/node/agent_client.mjs),
//! discovers a real server, attests with a join token, verifies its SVID and its DPoP-bound
//! task token against the JWKS, gets decisions through the server-nonce retry, sees a replayed
//! proof and its revoked token refused with the codes the guide names.

use std::process::Command;

use aims_api::PushPolicyRequest;
use aims_sdk::AdminClient;
use serde_json::{Value, json};

use crate::interop::script;
use crate::process::{ADMIN_TOKEN, Server};
use crate::replica_kit::starter_policies;

const AUDIENCE: &str = "https://tools.acme.example/repo";

#[test]
#[ignore = "needs node with the jose package: npm ci in tests/interop/node, then run with --include-ignored"]
fn node_agent_written_from_the_protocol_guide() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let admin = AdminClient::new(&server.url, Some(ADMIN_TOKEN.to_owned())).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(admin.push_policies(&PushPolicyRequest {
            files: starter_policies(),
        }))
        .unwrap();
    server.json(&[
        "resource-server",
        "add",
        "repo-tools",
        "--audience",
        AUDIENCE,
        "--system",
        "github",
    ]);
    // A coding agent of the starter policies (coding.cedar): it may obtain repository scopes
    // for github and read repositories.
    let registered = server.json(&[
        "agent",
        "register",
        "coder",
        "--owner",
        "alice@acme.example",
        "--label",
        "team=coding-agents",
    ]);
    let spiffe_id = registered["spiffe_id"].as_str().unwrap();
    assert_eq!(spiffe_id, "spiffe://e2e.example/agent/coder");

    let resource = |kind: &str| {
        json!({"type": "Resource", "id": "repo/acme/app", "system": "github",
               "environment": "dev", "sensitivity": "internal", "kind": kind})
    };
    let scene = json!({
        "base": server.url,
        "join_token": registered["join_token"],
        "audience": AUDIENCE,
        "scope": "read:repo/acme/*",
        "intent": "check the Node.js client",
        "decisions": [
            // Covered by the scope and allowed by coding-read-repository.
            {"action": "read", "resource": resource("repository")},
            // coding-write-branch would allow it, but no scope of the token covers a write:
            // denied without asking the policies.
            {"action": "write", "resource": resource("branch")},
        ],
    });
    let scene_file = dir.path().join("scene.json");
    std::fs::write(&scene_file, serde_json::to_vec(&scene).unwrap()).unwrap();

    let out = Command::new("node")
        .arg(script("node/agent_client.mjs"))
        .arg(&scene_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["issuer"], server.url.as_str());

    // The SVID names the agent and is bound to the key the client generated.
    let thumbprint = result["thumbprint"].as_str().unwrap();
    assert_eq!(result["svid"]["sub"], spiffe_id);
    assert_eq!(result["svid"]["aud"], server.url.as_str());
    assert_eq!(result["svid"]["cnf_jkt"], thumbprint);
    assert_eq!(result["attest_replay_error"], "invalid_nonce");

    // The task token: the granted scope, the same key, the agent as holder and subject.
    let token = &result["token"];
    assert_eq!(token["scope"], "read:repo/acme/*");
    assert_eq!(token["cnf_jkt"], thumbprint);
    assert_eq!(token["aud"], AUDIENCE);
    assert_eq!(token["client_id"], spiffe_id);
    assert_eq!(token["sub"], spiffe_id);
    assert_eq!(token["token_type"], "DPoP");
    assert_eq!(token["intent"], "check the Node.js client");
    assert_eq!(
        result["token_replay"],
        json!({"status": 400, "error": "invalid_dpop_proof"})
    );

    // The first decision went through the nonce dance; the second used the stored nonce.
    let decisions = result["decisions"].as_array().unwrap();
    assert_eq!(decisions[0]["decision"], "allow", "{result}");
    assert_eq!(decisions[0]["policies"], json!(["coding-read-repository"]));
    assert_eq!(decisions[0]["nonce_retry"], true);
    assert_eq!(
        decisions[0]["nonce_challenge"],
        r#"DPoP error="use_dpop_nonce", algs="ES256 EdDSA Ed25519""#
    );
    assert_eq!(decisions[1]["decision"], "deny", "{result}");
    assert_eq!(decisions[1]["policies"], json!([]));
    assert_eq!(decisions[1]["nonce_retry"], false);

    // The refusals, with the codes and challenges of PROTOCOL.md 5.7.
    assert_eq!(
        result["replay"],
        json!({"status": 401, "error": "invalid_dpop_proof",
               "challenge": r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA Ed25519""#})
    );
    assert_eq!(result["as_bearer"]["error"], "invalid_token");
    assert_eq!(result["after_revocation"]["status"], 401);
    assert_eq!(result["after_revocation"]["error"], "invalid_token");
    // Revoking the task token leaves the SVID alone.
    assert_eq!(result["svid_decision"], "allow");
}
