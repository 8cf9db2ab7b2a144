//! Third-party clients against a real server: PyJWT loads the JWKS and the SPIFFE bundle the
//! server publishes (tests/interop/check_discovery.py) and validates SVIDs (check_svid.py);
//! Authlib exchanges, delegates, introspects and revokes task tokens with DPoP proofs built by
//! joserfc, which also verifies the access tokens against `jwks_uri`
//! (check_token_exchange.py).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use aims_api::{AuditQuery, PushPolicyRequest, RegisterAgentRequest};
use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use ring::rand::SystemRandom;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::process::{ADMIN_TOKEN, Server};
use crate::replica_kit::starter_policies;

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(name)
}

#[test]
#[ignore = "needs python3 with PyJWT: pip install -r tests/interop/requirements.txt, then run with --include-ignored"]
fn pyjwt_loads_metadata_jwks_and_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let check = |when: &str| {
        let out = Command::new("python3")
            .arg(script("check_discovery.py"))
            .arg(&server.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{when}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = check("after first start");
    assert_eq!(first["keys"].as_array().unwrap().len(), 2);
    assert!(
        server
            .run(Some(crate::process::ADMIN_TOKEN), &["key", "rotate"])
            .status
            .success()
    );
    let rotated = check("after a rotation");
    assert_eq!(rotated["keys"].as_array().unwrap().len(), 3);
    assert_eq!(rotated["spiffe_sequence"], 2);
}

#[test]
#[ignore = "needs python3 with PyJWT: pip install -r tests/interop/requirements.txt, then run with --include-ignored"]
fn pyjwt_validates_svids_against_the_bundle_and_refuses_other_audiences() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let registered = server.json(&[
        "agent",
        "register",
        "coder",
        "--owner",
        "alice@acme.example",
    ]);
    let join = registered["join_token"].as_str().unwrap();
    let evidence = dir.path().join("evidence.json");
    std::fs::write(&evidence, r#"{"model": {"id": "m1"}}"#).unwrap();
    let key = dir.path().join("agent.key");
    let svid_file = dir.path().join("svid.jwt");
    let audience = "https://tools.acme.example";
    let out = server
        .client(None)
        .args(["attest", "--join-token", join, "--evidence"])
        .arg(&evidence)
        .arg("--key")
        .arg(&key)
        .args(["--audience", audience])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&svid_file, &out.stdout).unwrap();
    let check = Command::new("python3")
        .arg(script("check_svid.py"))
        .arg(&server.url)
        .arg(&svid_file)
        .arg(audience)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(result["sub"], "spiffe://e2e.example/agent/coder");
}

/// Registers an agent with `labels` and attests it with a fresh P-256 key: its SPIFFE ID,
/// key and JWT-SVID.
pub async fn attested_agent(
    admin: &AdminClient,
    name: &str,
    labels: Value,
) -> (String, Arc<AgentKey>, String) {
    let request: RegisterAgentRequest = serde_json::from_value(json!({
        "name": name,
        "owner": "alice@acme.example",
        "labels": labels,
    }))
    .unwrap();
    let issued = admin.register_agent(&request).await.unwrap();
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    let attestor = Attestor::new(
        AdminClient::new(admin.base_url(), None).unwrap(),
        key.clone(),
    );
    let svid = attestor
        .attest(
            &Default::default(),
            &Credential::JoinToken(issued.join_token),
            None,
        )
        .await
        .unwrap()
        .svid;
    (issued.spiffe_id, key, svid)
}

#[test]
#[ignore = "needs python3 with Authlib and joserfc: pip install -r tests/interop/requirements.txt, then run with --include-ignored"]
fn authlib_and_joserfc_exchange_introspect_revoke_and_verify_access_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = AdminClient::new(&server.url, Some(ADMIN_TOKEN.to_owned())).unwrap();

    // The scene of the server's own token tests: the starter policies let a planner obtain
    // repository scopes and delegate to an executor.
    let ((planner_id, planner_key, planner_svid), (executor_id, _, executor_svid)) = runtime
        .block_on(async {
            admin
                .push_policies(&PushPolicyRequest {
                    files: starter_policies(),
                })
                .await
                .unwrap();
            (
                attested_agent(&admin, "planner", json!({"role": "planner"})).await,
                attested_agent(&admin, "executor", json!({"role": "executor"})).await,
            )
        });
    let key_file = dir.path().join("planner.key.pem");
    std::fs::write(&key_file, planner_key.to_pkcs8_pem().expose_secret()).unwrap();
    let scene_file = dir.path().join("scene.json");
    let scene = json!({
        "base": server.url,
        "admin_token": ADMIN_TOKEN,
        "resource_server": "repo-tools",
        "audience": "https://tools.acme.example/repo",
        "scope": "read:repo/acme/* write:repo/acme/app",
        "delegated_scope": "read:repo/acme/app",
        "intent": "fix the failing build",
        "planner": {"spiffe_id": planner_id, "svid": planner_svid, "key_file": key_file},
        "executor": {"spiffe_id": executor_id, "svid": executor_svid},
    });
    std::fs::write(&scene_file, serde_json::to_vec(&scene).unwrap()).unwrap();

    let out = Command::new("python3")
        .arg(script("check_token_exchange.py"))
        .arg(&scene_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"], true);
    assert_eq!(result["thumbprint"], planner_key.thumbprint());
    // Authlib's RFC 8414 validator passed on the whole document: the script tolerates no
    // deviation any more.
    assert!(result.get("deviations").is_none(), "{result}");
    assert_eq!(
        result["checked"][0],
        json!("rfc8414 metadata (authlib validator)")
    );

    // What the Python clients did is in the audit trail, token by token: the exchange or
    // delegation that issued it, each introspection that saw it active, its revocation.
    let records = runtime
        .block_on(admin.audit(&AuditQuery {
            limit: Some(aims_sdk::admin::MAX_PAGE),
            ..AuditQuery::default()
        }))
        .unwrap()
        .records;
    let trail = |jti: &Value| {
        records
            .iter()
            .filter(|r| r.event["token_id"] == *jti && r.event["outcome"] == "success")
            .map(|r| r.event["action"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        trail(&result["access_jti"]),
        ["token.exchange", "api.read", "api.read", "revoke"],
        "{result}"
    );
    assert_eq!(
        trail(&result["delegated_jti"]),
        ["token.delegate", "api.read", "revoke"],
        "{result}"
    );
}

/// Seconds schemathesis fuzzes for (`AIMS_FUZZ_SECONDS`, default 60).
fn fuzz_seconds() -> String {
    std::env::var("AIMS_FUZZ_SECONDS").unwrap_or_else(|_| "60".to_owned())
}

#[test]
#[ignore = "needs schemathesis: pip install -r tests/interop/requirements.txt, then run with --include-ignored"]
fn schemathesis_finds_no_answer_outside_the_openapi_document() {
    // A property-based fuzzer generates requests from the served document (as the bootstrap
    // operator, so the operator routes are reached past authentication) and checks every
    // answer: no 5xx, a status the document lists, its content type and its schema. Its
    // settings (tests/interop/schemathesis.toml) also fail the run when an operation refuses
    // every valid request it generates: the document would not state what the server
    // enforces. One worker: hypothesis's source cache is not safe across threads.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let config =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/schemathesis.toml");
    let out = Command::new("st")
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/v1/openapi.json", server.url)])
        .args(["--url", &server.url])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--max-time", &fuzz_seconds(), "--workers", "1"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found answers outside openapi.json:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}
