//! Secrets through the CLI against a real server: stored from a file, rotated from stdin,
//! listed and shown without their value, read only by the resource server named as reader.

use std::io::Write as _;
use std::process::Stdio;

use aims_core::id::{ResourceServerName, SecretName};
use aims_sdk::AdminClient;

use crate::process::{ADMIN_TOKEN, Server};

const CANARY: &str = "ghp_CLI_CANARY_51d0c2";

#[test]
fn secrets_are_stored_rotated_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let added = server.json(&[
        "resource-server",
        "add",
        "gateway",
        "--audience",
        "https://gateway.acme.example",
        "--system",
        "github",
    ]);
    let gateway_secret = added["client_secret"].as_str().unwrap().to_owned();
    let value_file = dir.path().join("value");
    std::fs::write(&value_file, format!("{CANARY}\n")).unwrap();

    let put = server.run(
        Some(ADMIN_TOKEN),
        &[
            "secret",
            "put",
            "github-token",
            "--value-file",
            value_file.to_str().unwrap(),
            "--reader",
            "gateway",
            "--rotate-every-days",
            "30",
        ],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let mut rotate = server
        .client(Some(ADMIN_TOKEN))
        .args(["secret", "rotate", "github-token", "--value-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    rotate
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{CANARY}-v2").as_bytes())
        .unwrap();
    let rotated = rotate.wait_with_output().unwrap();
    assert!(rotated.status.success());
    assert!(!String::from_utf8_lossy(&rotated.stdout).contains(CANARY));

    for args in [
        &["secret", "list"][..],
        &["secret", "show", "github-token"][..],
    ] {
        let out = server.run(Some(ADMIN_TOKEN), args);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("github-token"), "{text}");
        assert!(!text.contains(CANARY), "{args:?} showed the value");
    }
    let shown = server.json(&["secret", "show", "github-token"]);
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["readers"][0], "gateway");

    // The reader reads the current value (trimmed of the file's newline).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let read = runtime
        .block_on(AdminClient::new(&server.url, None).unwrap().read_secret_as(
            &ResourceServerName::new("gateway").unwrap(),
            &gateway_secret,
            &SecretName::new("github-token").unwrap(),
        ))
        .unwrap();
    assert_eq!(read.value, format!("{CANARY}-v2"));
    assert_eq!(read.version, 2);

    let deleted = server.run(Some(ADMIN_TOKEN), &["secret", "delete", "github-token"]);
    assert!(deleted.status.success());
    let gone = server.run(Some(ADMIN_TOKEN), &["secret", "show", "github-token"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("secret_not_found"));
}
