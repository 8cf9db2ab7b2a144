//! The gateway in front of an MCP server (streamable HTTP): every `tools/call` is decided by
//! AIMS by tool name and arguments, `tools/list` shows only the tools the token could call
//! (as JSON and as an event stream), batches and mismatched routing headers are refused,
//! methods that no decision covers are not let through, and the agent's token never reaches
//! the MCP server.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aims_gateway::Config;
use aims_gateway::mcp::{
    APPROVAL_REQUIRED, DENIED, HEADER_MISMATCH, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
};
use aims_token::agent_key::AgentKey;
use aims_token::dpop;
use axum::http::HeaderMap;
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use crate::gateway::store_secret;
use crate::kit::{Backend, serve_on_loopback};
use crate::on_both_stores;
use crate::task_tokens::{AUDIENCE, Scene, access_token};

on_both_stores!(mcp_tool_calls_are_decided_and_lists_filtered);

/// The MCP server's own credential, injected by the gateway.
const MCP_SECRET: &str = "mcp_upstream_only_51ab";

/// The planner may obtain tool-call scopes, search, merge once a human approves, and call
/// nothing else.
const PLANNER_TOOLS: &str = r#"
@id("planner-obtains-tool-scopes")
permit (principal, action == Aims::Action::"obtain", resource is Aims::Scope)
when {
  principal.hasTag("role") && principal.getTag("role") == "planner" &&
  resource.system == "github" && resource.kind == "call_tool"
};

@id("planner-searches")
permit (
  principal,
  action == Aims::Action::"call_tool",
  resource == Aims::Tool::"mcp/github/search"
)
when { principal.hasTag("role") && principal.getTag("role") == "planner" };

@id("planner-merges-with-approval")
permit (
  principal,
  action == Aims::Action::"call_tool",
  resource == Aims::Tool::"mcp/github/merge"
)
when { principal.hasTag("role") && principal.getTag("role") == "planner" && context.approved };
"#;

/// What the MCP server received: each message and its headers.
type Received = Arc<Mutex<Vec<(Value, HeaderMap)>>>;

/// A small MCP server: it lists four tools (as an event stream when asked with
/// `x-test-stream: 1`) and answers every call.
async fn mcp_server() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let message: Value = serde_json::from_slice(&body).unwrap();
                sink.lock().unwrap().push((message.clone(), headers.clone()));
                let id = message["id"].clone();
                let result = match message["method"].as_str() {
                    Some("tools/list") => json!({"tools": [
                        {"name": "search", "inputSchema": {"type": "object"}},
                        {"name": "merge", "inputSchema": {"type": "object"}},
                        {"name": "delete_repo", "inputSchema": {"type": "object"}},
                        {"name": "not a tool name", "inputSchema": {"type": "object"}},
                    ]}),
                    Some("tools/call") => json!({"content": [
                        {"type": "text", "text": format!("called {}", message["params"]["name"])}
                    ]}),
                    _ => json!({}),
                };
                let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
                if headers.get("x-test-stream").is_some() {
                    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                          "params": {"progressToken": 1, "progress": 1}});
                    let stream = format!(
                        "event: message\nid: 1\ndata: {progress}\n\nevent: message\nid: 2\ndata: {answer}\n\n"
                    );
                    ([("content-type", "text/event-stream")], stream)
                } else {
                    ([("content-type", "application/json")], answer.to_string())
                }
            }
        }),
    );
    (serve_on_loopback(app).await, received)
}

fn gateway_config(aims: &str, upstream: &str) -> String {
    format!(
        r#"
version = 1
listen = "127.0.0.1:0"
aims_url = "{aims}"
audience = "{AUDIENCE}"
client_name = "repo-tools"
client_secret_file = "repo-tools.secret"

[[route]]
kind = "mcp"
name = "github-mcp"
path_prefix = "/mcp/github/"
upstream = "{upstream}/mcp"
system = "github"
environment = "dev"
sensitivity = "internal"
resource_id = "mcp/github/{{tool}}"
inject = {{ secret = "mcp-token", header = "authorization", format = "Bearer {{secret}}" }}
"#
    )
}

/// The agent's MCP client: every message a POST with its DPoP-bound token.
struct Agent<'a> {
    endpoint: String,
    token: &'a str,
    key: &'a AgentKey,
}

impl Agent<'_> {
    /// POSTs `body` (raw) with `headers`; the status and the body as text.
    async fn post_raw(&self, body: String, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let proof = dpop::sign_proof(
            self.key,
            &SystemRandom::new(),
            "POST",
            &self.endpoint,
            Some(self.token),
            now,
        )
        .unwrap();
        let mut request = reqwest::Client::new()
            .post(&self.endpoint)
            .header("Authorization", format!("DPoP {}", self.token))
            .header("DPoP", proof)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = request.send().await.unwrap();
        (answer.status(), answer.text().await.unwrap())
    }

    /// A JSON-RPC request; the status and the JSON answer.
    async fn request(&self, method: &str, params: Value) -> (StatusCode, Value) {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
        let (status, text) = self.post_raw(body.to_string(), &[]).await;
        (status, serde_json::from_str(&text).unwrap())
    }
}

fn tool_names(answer: &Value) -> Vec<&str> {
    answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

async fn mcp_tool_calls_are_decided_and_lists_filtered(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    Scene::push_policies(server, &[("tools.cedar", PLANNER_TOOLS)]).await;
    store_secret(server, "mcp-token", MCP_SECRET).await;
    let (upstream, received) = mcp_server().await;
    let rs_secret = scene.rs_secret.clone();
    let config = Config::parse(&gateway_config(&server.base, &upstream), &|_: &Path| {
        Ok(rs_secret.clone())
    })
    .unwrap();
    let running = aims_gateway::start(config).await.unwrap();
    let endpoint = format!("{}/mcp/github/", running.base_url);
    let token = access_token(&scene.exchange("call_tool:mcp/github/*").await);
    let agent = Agent {
        endpoint: endpoint.clone(),
        token: &token,
        key: &scene.planner.key,
    };
    let approvals_before = server.admin(Method::GET, "/v1/approvals", None).await;

    // The list shows what the token could call: search, and merge (once approved).
    let (status, listed) = agent.request("tools/list", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(tool_names(&listed), ["search", "merge"], "{listed}");
    // The same as an event stream: the progress event kept, the answer filtered.
    let body = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}).to_string();
    let (status, stream) = agent.post_raw(body, &[("x-test-stream", "1")]).await;
    assert_eq!(status, StatusCode::OK, "{stream}");
    assert!(stream.contains("notifications/progress"), "{stream}");
    assert!(stream.contains("id: 2\n"), "{stream}");
    let answer = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|m| m.get("result").is_some())
        .unwrap();
    assert_eq!(tool_names(&answer), ["search", "merge"], "{stream}");
    // Listing opened no approval request (previews open nothing).
    let approvals_after = server.admin(Method::GET, "/v1/approvals", None).await;
    assert_eq!(approvals_before.body, approvals_after.body);

    // An allowed call is forwarded with the MCP server's credential, not the agent's.
    let seen_before = received.lock().unwrap().len();
    let (status, called) = agent
        .request(
            "tools/call",
            json!({"name": "search", "arguments": {"q": "aims"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{called}");
    assert_eq!(called["result"]["content"][0]["text"], "called \"search\"");
    {
        let received = received.lock().unwrap();
        assert_eq!(received.len(), seen_before + 1);
        let (message, headers) = received.last().unwrap();
        assert_eq!(message["params"]["arguments"]["q"], "aims");
        assert_eq!(headers["authorization"], format!("Bearer {MCP_SECRET}"));
        assert!(headers.get("dpop").is_none());
        for (_, headers) in received.iter() {
            for value in headers.values() {
                assert!(!value.to_str().unwrap_or("").contains(&token));
            }
        }
    }
    let event = server.last_event("decision").await;
    assert_eq!(event.decision.as_deref(), Some("allow"));
    assert_eq!(
        event.resource.as_deref(),
        Some("call_tool Tool::mcp/github/search")
    );

    // Refused before the MCP server: a denied tool, one that needs approval, a batch hiding
    // a forbidden call, headers that disagree with the body, a body that is not JSON-RPC, a
    // method no decision covers, a tool name outside the alphabet.
    let seen = received.lock().unwrap().len();
    let (status, denied) = agent
        .request(
            "tools/call",
            json!({"name": "delete_repo", "arguments": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(denied["id"], 7);
    assert_eq!(denied["error"]["code"], DENIED, "{denied}");
    assert_eq!(denied["error"]["data"]["error"], "denied");
    assert!(denied["error"]["data"]["decision_id"].is_string());
    let (_, pending) = agent
        .request(
            "tools/call",
            json!({"name": "merge", "arguments": {"pr": 12}}),
        )
        .await;
    assert_eq!(pending["error"]["code"], APPROVAL_REQUIRED, "{pending}");
    assert!(
        pending["error"]["data"]["approval_url"]
            .as_str()
            .unwrap()
            .starts_with(&server.base)
    );
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_repo"}},
    ]);
    let (status, text) = agent.post_raw(batch.to_string(), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let refused: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(refused["error"]["code"], INVALID_REQUEST);
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "delete_repo"}})
    .to_string();
    for headers in [
        [("mcp-method", "tools/call"), ("mcp-name", "search")],
        [("mcp-method", "tools/list"), ("mcp-name", "delete_repo")],
    ] {
        let (status, text) = agent.post_raw(call.clone(), &headers).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        let refused: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(refused["error"]["code"], HEADER_MISMATCH);
    }
    let (status, text) = agent.post_raw("{not json".to_owned(), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["code"],
        PARSE_ERROR
    );
    let (_, read) = agent
        .request("resources/read", json!({"uri": "file:///etc/passwd"}))
        .await;
    assert_eq!(read["error"]["code"], METHOD_NOT_FOUND);
    let (_, odd) = agent
        .request("tools/call", json!({"name": "../search"}))
        .await;
    assert_eq!(odd["error"]["code"], -32_602);
    assert_eq!(
        received.lock().unwrap().len(),
        seen,
        "a refusal reached the server"
    );
    let event = server.last_event("decision").await;
    assert_eq!(event.decision.as_deref(), Some("approval_required"));

    // Without a token: 401 with the MCP challenge naming the metadata, which is served.
    let bare = reqwest::Client::new()
        .post(&endpoint)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    let challenges: Vec<&str> = bare
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let metadata_url = format!(
        "{}/.well-known/oauth-protected-resource/mcp/github/",
        running.base_url
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer ")
            && c.contains(&format!("resource_metadata=\"{metadata_url}\""))
            && c.contains("scope=\"call_tool:mcp/github/*\"")),
        "{challenges:?}"
    );
    assert!(challenges.iter().any(|c| c.starts_with("DPoP ")));
    let metadata: Value = reqwest::get(&metadata_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], AUDIENCE);
    assert_eq!(metadata["authorization_servers"], json!([server.base]));
    assert_eq!(metadata["dpop_bound_access_tokens_required"], true);
    assert_eq!(
        metadata["scopes_supported"],
        json!(["call_tool:mcp/github/*"])
    );
    // The MCP endpoint is the prefix itself.
    let deeper = agent.endpoint.clone() + "extra";
    let other = reqwest::Client::new().post(&deeper).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    running.shutdown();
    running.wait().await.unwrap();
}
