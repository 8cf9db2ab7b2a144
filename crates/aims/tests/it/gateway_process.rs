//! `aims gateway` as a process: it starts from its documented-shape configuration file,
//! follows AIMS as its resource server, and reloads its routes when the file changes — a
//! file that does not load leaves the routes in force.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::process::{Server, aims};

fn config(aims_url: &str, prefix: &str) -> String {
    format!(
        r#"version = 1
listen = "127.0.0.1:0"
aims_url = "{aims_url}"
audience = "https://gateway.e2e.example"
client_name = "gateway"
client_secret_file = "gateway.secret"

[[route]]
name = "tools"
path_prefix = "{prefix}"
upstream = "http://127.0.0.1:9"
system = "github"
environment = "dev"
sensitivity = "internal"
resource_kind = "repository"
"#
    )
}

/// The status of `GET url` (no credential).
fn status(url: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { reqwest::get(url).await.unwrap().status().as_u16() })
}

/// Waits up to ten seconds for `GET url` to answer `expected`.
fn eventually(url: &str, expected: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status(url);
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: {got}, expected {expected}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_gateway_reloads_its_routes_when_its_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let added = server.json(&[
        "resource-server",
        "add",
        "gateway",
        "--audience",
        "https://gateway.e2e.example",
        "--system",
        "github",
    ]);
    std::fs::write(
        dir.path().join("gateway.secret"),
        added["client_secret"].as_str().unwrap(),
    )
    .unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, config(&server.url, "/tools/")).unwrap();
    let mut child = aims()
        .args(["gateway", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .find_map(|line| {
            line.ok()?
                .strip_prefix("gateway listening on ")
                .map(str::to_owned)
        })
        .unwrap();

    // The route exists: a call without a token is refused by it (401), another path has none.
    assert_eq!(status(&format!("{url}/tools/x")), 401);
    assert_eq!(status(&format!("{url}/repo/x")), 404);
    // The file changes: the new routes are in force without a restart.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&file, config(&server.url, "/repo/")).unwrap();
    eventually(&format!("{url}/repo/x"), 401);
    assert_eq!(status(&format!("{url}/tools/x")), 404);
    // A file that does not load changes nothing.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&file, "version = 1\nlisten = \"nowhere\"\n").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(status(&format!("{url}/repo/x")), 401);

    let _ = child.kill();
    let _ = child.wait();
}
