//! The server process: first start, graceful shutdown, restart, and the demo.

use crate::process::{ADMIN_TOKEN, Server, aims};

#[test]
fn first_start_prints_a_one_time_credential_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, false);
    let credential = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("bootstrap admin credential (shown once, store it now): "))
        .expect("first start prints the credential")
        .to_owned();
    assert!(credential.starts_with("aims_h_"));
    let listed = server.run(Some(&credential), &["agent", "list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    let (status, log) = server.terminate();
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    assert!(!log.contains(&credential), "the credential is never logged");
    assert!(log.contains("shutting down"), "{log}");

    // A restart prints no new credential and the old one still works.
    let server = Server::start(&data, false);
    assert!(server.banner.is_empty(), "{:?}", server.banner);
    assert!(
        server
            .run(Some(&credential), &["agent", "list"])
            .status
            .success()
    );
}

#[test]
fn bad_configuration_is_reported_and_the_server_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aims.toml");
    std::fs::write(&config, "version = 1\nlisten = \"nowhere\"\nbogus = 1\n").unwrap();
    let out = aims()
        .args(["server", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus"), "{err}");

    let out = aims()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("d"))
        .env("AIMS_TRUST_DOMAIN", "Not A Domain")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("trust_domain"));
}

#[test]
fn the_demo_runs_end_to_end() {
    // Scenario 4 leases a role of the PostgreSQL the suite has when it has one; without one
    // the demo says it skips that part.
    let database = std::env::var("AIMS_TEST_DATABASE_URL").ok();
    let mut demo = aims();
    demo.arg("demo");
    match &database {
        Some(url) => demo.env("AIMS_DEMO_DATABASE_URL", url),
        None => demo.env(
            "AIMS_DEMO_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
        ),
    };
    let out = demo.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let leases: &[&str] = if database.is_some() {
        &[
            "SELECT sum(amount) FROM aims_demo.sales = 7300",
            "DELETE FROM aims_demo.sales with the lease: refused by PostgreSQL",
            "its open database session: terminated",
            "(the role is gone)",
        ]
    } else {
        &["(skipping database leases: no PostgreSQL answers"]
    };
    for expected in leases {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "spiffe://demo.example/agent/coding-agent",
        "refused: HTTP 409 agent_exists",
        "refused: HTTP 403 forbidden",
        "JWKS now publishes 3 keys",
        "policy version 1 active",
        "read github/acme/app: allow (coding-read-repository)",
        "query loki/prod/app: allow (ir-query-logs)",
        "export_secret vault/prod/db-password: approval_required (approval ",
        "policy ir-export-secret-with-approval",
        "dana approves: \"INC-42: rotate the leaked password\"",
        "the agent's waiting call: allow (grant ",
        "the same export again: approval_required (a new approval, ",
        "dana denies it: \"one export per incident\" -> denied",
        "export_secret vault/prod/root-ca-key: deny (never-export-root-secrets)",
        "read_metadata zendesk/prod/T-1: deny (support-never-prod-data)",
        "retrieve a secret without an identity: refused: HTTP 401 invalid_svid",
        "retrieve_secret vault/prod/deploy-key: allow (cicd-retrieve-vault-secrets)",
        "attest with a guessed join token: refused: HTTP 401 invalid_join_token",
        "replays the same join token with its own key: refused: HTTP 401 join_token_used",
        "renew reporting model gpt-unvetted: refused: HTTP 403 posture_rejected",
        "data-analyst is now quarantined",
        "its old SVID presented again: refused: HTTP 401 invalid_svid",
        "query warehouse/sales with the token: allow",
        "its task token presented again: refused: HTTP 401 invalid_token",
        "policy grants \"read:repo/acme/* write:repo/acme/app\"",
        "delegate write:repo/acme/* (wider than the planner's): refused: HTTP 400 invalid_scope",
        "executor delegates onward (depth 2 > its limit 1): refused: HTTP 400 invalid_grant",
        "executor reads repo/acme/app: allow (executor-reads-delegated-repositories)",
        "executor reads repo/acme/other: deny (outside its token's scope)",
        "the executor's token used with the planner's key: refused: HTTP 401 invalid_dpop_proof",
        "operator ends the planner's task: 2 credentials revoked",
        "executor reads repo/acme/app again: refused: HTTP 401 invalid_token",
        "to spiffe://demo.example/agent/executor (token.delegate, scope read:repo/acme/app)",
        "decision success: read Resource::repo/acme/app -> allow (executor-reads-delegated-repositories)",
        "GET /repo/app/README.md: HTTP 200 contents of /app/README.md (authorization: token ghs_demo…, dpop: none)",
        "POST /repo/app/README.md: HTTP 403 {\"error\":\"denied\"",
        "GET /repo/app/README.md without a token: HTTP 401",
        "MCP tools/list: search_code, open_pull_request, merge_pull_request (of 4 the tool server has)",
        "MCP tools/call search_code: search_code ran (authorization: token ghs_demo…)",
        "MCP tools/call delete_repository: AIMS refused this tool call: the policies deny this call",
        "chain intact: true",
        "same keys: true",
        // Scenario 7: every scenario's task as a tree, the report, verify, tamper evidence.
        "Task ",
        "of planner (ended): fix the failing build of repo/acme/app",
        "of incident-responder (active): contain incident INC-42",
        "approval.decide success: export_secret Secret::vault/prod/db-password -> approved",
        "FINDING                  OWASP NHI                     COUNT",
        "quarantine               NHI9 NHI Reuse                1",
        "verify the copy: chain intact: false; record ",
        "was modified: its hash does not match its content",
        "demo complete",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains(ADMIN_TOKEN));
    // The record the demo altered on its copy is the one verify names.
    let altered = stdout
        .split("record #")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    assert!(
        stdout.contains(&format!(
            "chain intact: false; record {altered} was modified"
        )),
        "{stdout}"
    );
    // The HTML report is where the demo says, and shows its findings.
    let path = stdout
        .split("the HTML report (self-contained, no fetches) is at ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap();
    let html = std::fs::read_to_string(path).unwrap();
    std::fs::remove_file(path).unwrap();
    assert!(html.contains("<svg"), "{html}");
    assert!(html.contains("quarantine"), "{html}");
}
