//! Third-party clients against a real server: PyJWT loads the JWKS and the SPIFFE bundle the
//! server publishes (tests/interop/check_discovery.py).

use std::path::PathBuf;
use std::process::Command;

use crate::process::Server;

fn script(name: &str) -> PathBuf {
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
