//! The CLI against a real server: the registry end to end, roles, keys, bundle and audit, and
//! the fixed interfaces scripts rely on (`AIMS_ADDR`, `AIMS_TOKEN`, `--output json`).

use crate::process::{ADMIN_TOKEN, Server};

#[test]
fn registry_end_to_end_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"model": {"id": ["gpt-x"]}, "deployment": {"region": ["eu-west-1"]}, "may_change": ["deployment"]}"#,
    )
    .unwrap();

    let registered = server.json(&[
        "agent",
        "register",
        "coder",
        "--owner",
        "alice@acme.example",
        "--env",
        "prod",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(registered["spiffe_id"], "spiffe://e2e.example/agent/coder");
    assert!(
        registered["join_token"]
            .as_str()
            .unwrap()
            .starts_with("aims_j_")
    );
    assert_eq!(
        registered["agent"]["posture_profile"]["model"]["id"][0],
        "gpt-x"
    );

    let text = server.run(
        Some(ADMIN_TOKEN),
        &[
            "agent",
            "register",
            "helper",
            "--owner",
            "bob@acme.example",
            "--label",
            "team=core",
        ],
    );
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("spiffe://e2e.example/agent/helper"), "{text}");

    let listed = server.json(&["agent", "list"]);
    assert_eq!(listed["agents"].as_array().unwrap().len(), 2);
    let shown = server.json(&["agent", "show", "helper"]);
    assert_eq!(shown["labels"]["team"], "core");

    let updated = server.json(&[
        "agent",
        "update",
        "coder",
        "--owner",
        "carol@acme.example",
        "--max-ttl",
        "300",
    ]);
    assert_eq!(updated["owner"], "carol@acme.example");
    assert_eq!(updated["limits"]["max_token_ttl_s"], 300);

    assert_eq!(
        server.json(&["agent", "suspend", "coder", "--reason", "maintenance"])["state"],
        "suspended"
    );
    assert_eq!(
        server.json(&["agent", "resume", "coder"])["state"],
        "active"
    );
    let reissued = server.json(&["agent", "join-token", "coder"]);
    assert_ne!(reissued["join_token"], registered["join_token"]);
    assert_eq!(
        server.json(&["agent", "decommission", "coder"])["state"],
        "decommissioned"
    );

    // Refusals: non-zero exit, the stable code on stderr.
    let dup = server.run(
        Some(ADMIN_TOKEN),
        &["agent", "register", "coder", "--owner", "x"],
    );
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("agent_exists"));
    let bad_profile = dir.path().join("bad.json");
    std::fs::write(&bad_profile, r#"{"model": {"ids": []}}"#).unwrap();
    let out = server.run(
        Some(ADMIN_TOKEN),
        &[
            "agent",
            "register",
            "x",
            "--owner",
            "y",
            "--profile",
            bad_profile.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
    let no_token = server.run(None, &["agent", "list"]);
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("AIMS_TOKEN"));
    assert_eq!(
        server.json(&["agent", "list"])["agents"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn users_keys_bundle_and_audit_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let added = server.json(&["user", "add", "carol", "--role", "auditor"]);
    let carol = added["token"].as_str().unwrap().to_owned();
    let users = server.json(&["user", "list"]);
    assert_eq!(users["users"].as_array().unwrap().len(), 2);

    // The auditor reads but cannot register.
    assert!(
        server
            .run(Some(&carol), &["agent", "list"])
            .status
            .success()
    );
    let denied = server.run(Some(&carol), &["agent", "register", "x", "--owner", "y"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));

    let rotated = server.json(&["user", "rotate", "carol"]);
    assert_ne!(rotated["token"].as_str().unwrap(), carol);
    assert!(
        !server
            .run(Some(&carol), &["agent", "list"])
            .status
            .success()
    );
    assert!(
        server
            .run(Some(ADMIN_TOKEN), &["user", "remove", "carol"])
            .status
            .success()
    );

    let before = server.json(&["key", "list"]);
    let after = server.json(&["key", "rotate"]);
    assert_eq!(
        after["sequence"].as_u64().unwrap(),
        before["sequence"].as_u64().unwrap() + 1
    );
    let bundle = server
        .client(None)
        .args(["bundle", "show", "--output", "json"])
        .output()
        .unwrap();
    assert!(bundle.status.success());
    let bundle: serde_json::Value = serde_json::from_slice(&bundle.stdout).unwrap();
    assert_eq!(bundle["keys"].as_array().unwrap().len(), 3);
    assert_eq!(bundle["spiffe_sequence"], 2);

    let verify = server.run(Some(ADMIN_TOKEN), &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let tail = server.json(&["audit", "tail", "--limit", "3"]);
    assert_eq!(tail["records"][0]["event"]["action"], "trust_domain.create");

    // Investigating: the inventory, a query, and a trace of a task that does not exist.
    server.json(&[
        "agent",
        "register",
        "coder",
        "--owner",
        "alice@acme.example",
    ]);
    let inventory = server.json(&["agent", "inventory"]);
    let coder = &inventory["agents"][0];
    assert_eq!(
        (coder["name"].as_str(), coder["open_tasks"].as_u64()),
        (Some("coder"), Some(0))
    );
    assert!(coder["last_seen"].is_string(), "{coder}");
    let rotations = server.json(&["audit", "query", "--action", "key.rotate"]);
    assert_eq!(rotations["records"].as_array().unwrap().len(), 1);
    let table = server.run(Some(ADMIN_TOKEN), &["audit", "query", "--agent", "coder"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("agent.register"));
    // The log as OCSF events, one per line, every one with what its class requires.
    let exported = dir.path().join("audit.ocsf.jsonl");
    let export = server.run(
        Some(ADMIN_TOKEN),
        &["audit", "export", "--out", exported.to_str().unwrap()],
    );
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let lines = std::fs::read_to_string(&exported).unwrap();
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 5, "{lines}");
    for event in &events {
        assert_eq!(
            aims_server::ocsf::missing_required(event),
            Vec::<String>::new(),
            "{event}"
        );
    }
    let classes: std::collections::BTreeSet<u64> = events
        .iter()
        .filter_map(|e| e["class_uid"].as_u64())
        .collect();
    assert!(
        classes.contains(&3001) && classes.contains(&6003),
        "{classes:?}"
    );
    let missing = server.run(Some(ADMIN_TOKEN), &["audit", "trace", "no-such-task"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("task_not_found"));
}

#[test]
fn attest_creates_the_key_renews_and_drift_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, r#"{"model": {"id": ["m1"]}}"#).unwrap();
    let registered = server.json(&[
        "agent",
        "register",
        "coder",
        "--owner",
        "alice@acme.example",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    let join = registered["join_token"].as_str().unwrap().to_owned();
    let good = dir.path().join("good.json");
    std::fs::write(&good, r#"{"model": {"id": "m1"}}"#).unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"model": {"id": "m2"}}"#).unwrap();
    let key = dir.path().join("agent.key");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let out = server.run(
        None,
        &[
            "attest",
            "--join-token",
            &join,
            "--evidence",
            &path(&good),
            "--key",
            &path(&key),
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(issued["spiffe_id"], "spiffe://e2e.example/agent/coder");
    let svid = issued["svid"].as_str().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    let svid_file = dir.path().join("svid.jwt");
    std::fs::write(&svid_file, svid).unwrap();
    let renewed = server.run(
        None,
        &[
            "attest",
            "--renew",
            "--svid",
            &path(&svid_file),
            "--evidence",
            &path(&good),
            "--key",
            &path(&key),
        ],
    );
    assert!(
        renewed.status.success(),
        "{}",
        String::from_utf8_lossy(&renewed.stderr)
    );
    let text = String::from_utf8(renewed.stdout).unwrap();
    assert_eq!(
        text.trim().split('.').count(),
        3,
        "text output is the SVID alone"
    );

    std::fs::write(&svid_file, text.trim()).unwrap();
    let drift = server.run(
        None,
        &[
            "attest",
            "--renew",
            "--svid",
            &path(&svid_file),
            "--evidence",
            &path(&bad),
            "--key",
            &path(&key),
        ],
    );
    assert!(!drift.status.success());
    assert!(String::from_utf8_lossy(&drift.stderr).contains("posture_rejected"));
    assert_eq!(
        server.json(&["agent", "show", "coder"])["state"],
        "quarantined"
    );
    assert_eq!(
        server.json(&["agent", "release", "coder", "--reason", "checked"])["state"],
        "active"
    );

    let bad_evidence = dir.path().join("typo.json");
    std::fs::write(&bad_evidence, r#"{"modle": {}}"#).unwrap();
    let out = server.run(
        None,
        &[
            "attest",
            "--join-token",
            &join,
            "--evidence",
            &path(&bad_evidence),
            "--key",
            &path(&key),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("typo.json"));
}

#[test]
fn policies_are_tested_pushed_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let starter = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let starter = starter.to_str().unwrap();
    let tested = server.run(None, &["policy", "test", starter]);
    assert!(
        tested.status.success(),
        "{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(String::from_utf8_lossy(&tested.stdout).contains(" passed, 0 failed"));
    let validated = server.run(None, &["policy", "validate", starter]);
    assert!(String::from_utf8_lossy(&validated.stdout).contains("policies compile"));
    let pushed = server.json(&["policy", "push", starter]);
    assert_eq!(pushed["version"], 1);
    server.json(&[
        "agent",
        "register",
        "coder",
        "--owner",
        "alice@acme.example",
        "--label",
        "team=coding-agents",
    ]);
    let explained = server.run(
        Some(ADMIN_TOKEN),
        &["policy", "explain", "--agent", "coder", "--action", "read", "--resource",
          r#"{"type":"Resource","id":"github/acme/app","system":"github","environment":"prod","sensitivity":"internal","kind":"repository"}"#],
    );
    assert!(
        explained.status.success(),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(
        text.contains("coding-read-repository") && text.contains("decision: "),
        "{text}"
    );
    assert_eq!(server.json(&["policy", "show"])["version"], 1);

    // A set whose tests fail is not pushed.
    let broken = copy_dir(std::path::Path::new(starter), &dir.path().join("broken"));
    std::fs::remove_file(broken.join("coding.cedar")).unwrap();
    let out = server.run(
        Some(ADMIN_TOKEN),
        &["policy", "push", broken.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was pushed"));
    assert_eq!(server.json(&["policy", "show"])["version"], 1);

    // A set without any *.test.json says so plainly: `test` has nothing to run, `push`
    // warns and pushes.
    let untested = copy_dir(std::path::Path::new(starter), &dir.path().join("untested"));
    for entry in std::fs::read_dir(&untested).unwrap() {
        let path = entry.unwrap().path();
        if path.to_str().unwrap().ends_with(".test.json") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let out = server.run(None, &["policy", "test", untested.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no policy tests to run"), "{stderr}");
    assert!(!stderr.contains("failed"), "{stderr}");
    let out = server.run(
        Some(ADMIN_TOKEN),
        &["policy", "push", untested.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("has no policy tests"), "{stderr}");
    assert!(
        !stderr.contains("0 passed") && !stderr.contains("failed"),
        "{stderr}"
    );
    assert_eq!(server.json(&["policy", "show"])["version"], 2);
    server.json(&["policy", "rollback", "1"]);

    // A second version, its diff against the first, the list, and a rollback.
    let second = copy_dir(std::path::Path::new(starter), &dir.path().join("second"));
    let baseline = second.join("baseline.cedar");
    let mut text = std::fs::read_to_string(&baseline).unwrap();
    text.push_str("// reviewed\n");
    std::fs::write(&baseline, text).unwrap();
    assert_eq!(
        server.json(&["policy", "push", second.to_str().unwrap()])["version"],
        4
    );
    let diff = server.run(Some(ADMIN_TOKEN), &["policy", "diff", "1", "4"]);
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(
        diff.contains("+++ baseline.cedar") && diff.contains("+// reviewed"),
        "{diff}"
    );
    let list = server.run(Some(ADMIN_TOKEN), &["policy", "list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("4 *"),
        "the active version is marked"
    );
    assert_eq!(server.json(&["policy", "rollback", "1"])["version"], 5);
}

/// A copy of the files of `from` in a new directory `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    to.to_owned()
}

#[test]
fn the_designated_approver_recertifies_an_agent_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    server.json(&[
        "agent",
        "register",
        "nightly",
        "--owner",
        "alice@acme.example",
        "--label",
        "approver=dana",
    ]);
    let token = |name: &str, role: &str| {
        server.json(&["user", "add", name, "--role", role])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let dana = token("dana", "approver");
    let erin = token("erin", "approver");
    let frank = token("frank", "auditor");

    // Refused with the stable code on stderr, for a human who may not.
    for (who, code) in [(&erin, "not_an_approver"), (&frank, "forbidden")] {
        let out = server.run(Some(who), &["agent", "recertify", "nightly"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(code), "{stderr}");
    }
    let out = server.run(
        Some(&dana),
        &["agent", "recertify", "nightly", "--days", "0"],
    );
    assert!(!out.status.success());

    // The designated approver: the date moves, the text says until when.
    let out = server.run(
        Some(&dana),
        &["agent", "recertify", "nightly", "--days", "30"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Agent nightly is recertified until"),
        "{text}"
    );
    assert!(text.contains("(it is active)"), "{text}");
    let shown = server.json(&["agent", "show", "nightly"]);
    let due = time::OffsetDateTime::parse(
        shown["recertify_by"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expected = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    assert!((due - expected).abs() < time::Duration::minutes(1), "{due}");
    let events = server.json(&["audit", "query", "--action", "agent.recertify"]);
    let records = events["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{events}");
}
