//! The official MCP Python SDK through the gateway: its client (`mcp.Client`, streamable
//! HTTP, both the initialize handshake and the stateless 2026-07-28 protocol) lists and calls
//! tools of an MCP server built with the same SDK, behind `aims gateway` as a process, with the
//! agent's DPoP-bound task token (tests/interop/check_mcp_gateway.py). The list is filtered,
//! one call is allowed, one denied and one waits for approval; the MCP server accepts only
//! the credential the gateway injects and refuses anything carrying the agent's token.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use aims_api::PushPolicyRequest;
use aims_core::scope::ScopeSet;
use aims_sdk::AdminClient;
use aims_sdk::oauth::{ExchangeRequest, TokenClient};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::interop::{attested_agent, script};
use crate::process::{ADMIN_TOKEN, Server, aims};
use crate::replica_kit::starter_policies;

const AUDIENCE: &str = "https://gateway.mcp.example";

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and reads its stdout until a line starts with `prefix`: the rest of it.
fn start_until(mut command: Command, prefix: &str) -> (Running, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let rest = lines
        .find_map(|line| line.ok()?.strip_prefix(prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"));
    (Running(child), rest)
}

#[test]
#[ignore = "needs python3 with the MCP SDK: pip install -r tests/interop/requirements.txt, then run with --include-ignored"]
fn the_official_mcp_sdk_lists_and_calls_tools_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = AdminClient::new(&server.url, Some(ADMIN_TOKEN.to_owned())).unwrap();

    // The starter policies: a coding agent searches code, merges with approval, and may not
    // delete a repository.
    let (_, key, svid) = runtime.block_on(async {
        admin
            .push_policies(&PushPolicyRequest {
                files: starter_policies(),
            })
            .await
            .unwrap();
        attested_agent(&admin, "coder", json!({"team": "coding-agents"})).await
    });
    let added = server.json(&[
        "resource-server",
        "add",
        "gateway",
        "--audience",
        AUDIENCE,
        "--system",
        "github",
    ]);
    std::fs::write(
        dir.path().join("gateway.secret"),
        added["client_secret"].as_str().unwrap(),
    )
    .unwrap();
    let upstream_secret = "mcp_server_token_0c4f";
    let secret_file = dir.path().join("mcp-token.txt");
    std::fs::write(&secret_file, upstream_secret).unwrap();
    let put = server.run(
        Some(ADMIN_TOKEN),
        &[
            "secret",
            "put",
            "github-mcp-token",
            "--value-file",
            secret_file.to_str().unwrap(),
            "--reader",
            "gateway",
        ],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let token = runtime
        .block_on(async {
            TokenClient::new(&server.url)
                .unwrap()
                .exchange(
                    &svid,
                    &key,
                    &ExchangeRequest {
                        scope: ScopeSet::parse("call_tool:mcp/github/*").unwrap(),
                        audience: AUDIENCE.to_owned(),
                        intent: "fix the failing build".to_owned(),
                        task_id: None,
                        expires_in: None,
                    },
                )
                .await
        })
        .unwrap()
        .access_token;

    let mut mcp_server = Command::new("python3");
    mcp_server
        .arg(script("mcp_tool_server.py"))
        .arg(upstream_secret)
        .arg(&token);
    let (_mcp_server, port) = start_until(mcp_server, "listening on ");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
listen = "127.0.0.1:0"
aims_url = "{aims}"
audience = "{AUDIENCE}"
client_name = "gateway"
client_secret_file = "gateway.secret"

[[route]]
kind = "mcp"
name = "github-mcp"
path_prefix = "/mcp/github/"
upstream = "http://127.0.0.1:{port}/mcp"
system = "github"
environment = "prod"
sensitivity = "internal"
resource_id = "mcp/github/{{tool}}"
inject = {{ secret = "github-mcp-token", header = "authorization", format = "Bearer {{secret}}" }}
"#,
            aims = server.url
        ),
    )
    .unwrap();
    let mut gateway = aims();
    gateway.args(["gateway", "--config"]).arg(&config);
    let (_gateway, gateway_url) = start_until(gateway, "gateway listening on ");

    let key_file = dir.path().join("coder.key.pem");
    std::fs::write(&key_file, key.to_pkcs8_pem().expose_secret()).unwrap();
    let scene_file = dir.path().join("scene.json");
    let scene = json!({
        "endpoint": format!("{gateway_url}/mcp/github/"),
        "token": token,
        "key_file": key_file,
    });
    std::fs::write(&scene_file, serde_json::to_vec(&scene).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(script("check_mcp_gateway.py"))
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
    for (mode, version) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        assert_eq!(result[mode]["protocol_version"], version);
        assert_eq!(
            result[mode]["tools"],
            json!(["search_code", "merge_pull_request"])
        );
        assert_eq!(
            result[mode]["refused"]["delete_repository"]["data"]["error"],
            "denied"
        );
    }
    assert_eq!(result["unauthenticated"]["scope"], "call_tool:mcp/github/*");
    assert_eq!(result["unauthenticated"]["resource"], AUDIENCE);
}
