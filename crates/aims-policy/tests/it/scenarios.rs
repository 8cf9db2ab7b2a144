//! The starter policies in `policies/` pass their own test cases (SPEC §7 scenarios 1–3, 5),
//! approval terms included.

use std::path::Path;

fn policies_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

#[test]
fn starter_policies_pass_their_tests() {
    let report = aims_policy::run_tests(&policies_dir()).unwrap();
    println!("{}", report.summary());
    assert!(report.ok(), "{}", report.summary());
    assert!(report.passed >= 20);
}

#[test]
fn starter_policies_validate_strictly_without_warnings() {
    let engine = aims_policy::Engine::from_dir(&policies_dir()).unwrap();
    assert!(engine.len() >= 9);
    assert!(engine.warnings().is_empty(), "{:?}", engine.warnings());
}

#[test]
fn a_failing_case_is_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"@id("all") permit(principal, action == Aims::Action::"read", resource);"#,
    )
    .unwrap();
    let src = std::fs::read_to_string(policies_dir().join("scenarios.test.json")).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&src).unwrap();
    doc["cases"] = serde_json::json!([
        {"name": "read", "principal": "coder", "action": "read", "resource": "repo", "expect": "allow"},
        {"name": "wrong", "principal": "coder", "action": "read", "resource": "repo", "expect": "deny"},
        {"name": "wrong ids", "principal": "coder", "action": "read", "resource": "repo", "expect": "allow", "policies": ["other"]}
    ]);
    std::fs::write(dir.path().join("t.test.json"), doc.to_string()).unwrap();
    let report = aims_policy::run_tests(dir.path()).unwrap();
    assert_eq!(
        (report.passed, report.failed),
        (1, 2),
        "{}",
        report.summary()
    );
    assert!(report.summary().ends_with("1 passed, 2 failed"));
}

#[test]
fn approval_terms_are_checked_when_a_case_names_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"@id("read-approved") @approvers("dave, admin") @approval_uses("2") @four_eyes
permit(principal, action == Aims::Action::"read", resource) when { context.approved };"#,
    )
    .unwrap();
    let src = std::fs::read_to_string(policies_dir().join("scenarios.test.json")).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&src).unwrap();
    let case = |name: &str, approval: serde_json::Value| {
        serde_json::json!({"name": name, "principal": "coder", "action": "read",
                           "resource": "repo", "expect": "approval_required", "approval": approval})
    };
    doc["cases"] = serde_json::json!([
        case(
            "right",
            serde_json::json!({"approvers": ["admin", "dave"], "uses": 2, "four_eyes": true, "ttl_s": null})
        ),
        case("partial", serde_json::json!({"uses": 2})),
        case("wrong approvers", serde_json::json!({"approvers": null})),
        case("wrong uses", serde_json::json!({"uses": 1})),
        case("wrong eyes", serde_json::json!({"four_eyes": false})),
        case("wrong wait", serde_json::json!({"ttl_s": 60})),
        case(
            "wrong arguments",
            serde_json::json!({"show_arguments": true})
        ),
    ]);
    std::fs::write(dir.path().join("t.test.json"), doc.to_string()).unwrap();
    let report = aims_policy::run_tests(dir.path()).unwrap();
    assert_eq!(
        (report.passed, report.failed),
        (2, 5),
        "{}",
        report.summary()
    );
    assert!(
        report
            .summary()
            .contains("expected approval uses Some(1), got 2"),
        "{}",
        report.summary()
    );
}

#[test]
fn malformed_test_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.test.json"),
        r#"{"cases": [{"nme": "typo"}]}"#,
    )
    .unwrap();
    let err = aims_policy::run_tests(dir.path()).unwrap_err();
    assert!(err.to_string().contains("t.test.json"), "{err}");
}
