//! MCP routes: the gateway as the resource server in front of an MCP server over streamable
//! HTTP (protocol versions 2025-11-25 and 2026-07-28).
//!
//! A route of `kind = "mcp"` has one endpoint, its path prefix, forwarded to the upstream's
//! endpoint. Every `POST` carries one JSON-RPC message, read (at most [`MAX_MESSAGE`]) and
//! checked before anything is forwarded:
//! - `tools/call` is decided by AIMS as `call_tool` on the route's tool resource
//!   (`resource_id` with `{tool}` the tool's name), its `arguments` in the policy context
//!   (`context.arguments`); a refusal is answered as a JSON-RPC error an MCP client shows
//!   ([`DENIED`], [`APPROVAL_REQUIRED`]) with the decision id, policies and approval URL in
//!   its `data`.
//! - `tools/list` is forwarded and its answer (JSON, or an event stream, at most
//!   [`MAX_LISTING`]) keeps only the tools this token could call: AIMS answers one preview
//!   per tool (`aims_preview`: nothing opened or spent), and a tool that needs a human's
//!   approval is listed.
//! - Session plumbing (`initialize`, `ping`, `server/discover`, `logging/setLevel`,
//!   `subscriptions/listen`, notifications, and the client's answers to server requests)
//!   is forwarded as it is.
//! - Every other method (resources, prompts, completions, tasks) is refused: the gateway
//!   decides tool calls only, and does not let data through that no decision covered.
//! - A JSON-RPC batch is refused whole (neither protocol version has batches), so no
//!   forbidden call hides in one. `Mcp-Method` and `Mcp-Name` (2026-07-28), when sent, must
//!   name what the body does: a mismatch is 400 ([`HEADER_MISMATCH`]).
//!
//! `GET` (the 2025-11-25 stream of server messages) and `DELETE` (the end of a session) are
//! authenticated and forwarded; answers stream back without buffering, except a
//! `tools/list` answer, which must be read to be filtered. The transport headers
//! (`MCP-Protocol-Version`, `Mcp-Session-Id`, `Last-Event-ID`, `Mcp-Method`, `Mcp-Name`) pass
//! through both ways. The gateway serves RFC 9728 protected-resource metadata, and a call
//! without a valid token is answered 401 with `WWW-Authenticate: Bearer resource_metadata=…,
//! scope=…` beside the DPoP challenge.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};

pub use crate::config::CALL_TOOL;
use crate::config::{NEVER_FORWARDED, Route};
use crate::proxy::{
    Caller, Gateway, Refusal, Verdict, ask_aims, decide_held, forward, injected, refuse,
    stream_back,
};

/// Where the RFC 9728 protected-resource metadata is served (and, with a route's prefix
/// after it, that route's).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// The largest JSON-RPC message an agent may send.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The largest `tools/list` answer the gateway reads to filter.
pub const MAX_LISTING: usize = 4 << 20;
/// Most tools previewed in one AuthZEN batch.
const PREVIEW_BATCH: usize = 64;

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32_700;
/// JSON-RPC: not a single, well-formed request or notification.
pub const INVALID_REQUEST: i64 = -32_600;
/// JSON-RPC: a method the gateway does not let through.
pub const METHOD_NOT_FOUND: i64 = -32_601;
/// JSON-RPC: a `tools/call` without a usable tool name or arguments.
pub const INVALID_PARAMS: i64 = -32_602;
/// The policies deny this tool call (an AIMS code in the server-error range).
pub const DENIED: i64 = -32_003;
/// A human must approve this exact tool call first (an AIMS code).
pub const APPROVAL_REQUIRED: i64 = -32_004;
/// MCP 2026-07-28: `Mcp-Method` or `Mcp-Name` differs from the body.
pub const HEADER_MISMATCH: i64 = -32_020;

/// Methods forwarded without a decision: they call no tool and read no data.
const PLUMBING: [&str; 5] = [
    "initialize",
    "ping",
    "server/discover",
    "logging/setLevel",
    "subscriptions/listen",
];

/// A JSON-RPC error answer.
fn rpc_error(
    status: StatusCode,
    id: Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response {
    let mut error = Map::new();
    error.insert("code".into(), json!(code));
    error.insert("message".into(), json!(message));
    if let Some(data) = data {
        error.insert("data".into(), data);
    }
    (
        status,
        axum::Json(json!({ "jsonrpc": "2.0", "id": id, "error": error })),
    )
        .into_response()
}

/// The `WWW-Authenticate` challenge of an MCP route reached at `base` (MCP authorization,
/// RFC 9728 §5.1).
pub(crate) fn challenge(base: &str, route: &Route) -> String {
    format!(
        "Bearer resource_metadata=\"{base}{METADATA_PATH}{}\", scope=\"{}\"",
        route.path_prefix,
        route.scope()
    )
}

/// `GET /.well-known/oauth-protected-resource[/ROUTE-PREFIX]`: the gateway as an OAuth
/// protected resource. Every route is one resource, the gateway's audience: tokens are
/// issued for it and checked against it.
pub(crate) fn protected_resource_metadata(
    gateway: &Gateway,
    routes: &[&Route],
    method: &Method,
    suffix: &str,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "metadata is read with GET",
        );
    }
    let known = suffix.is_empty()
        || routes
            .iter()
            .any(|r| suffix == r.path_prefix || Some(suffix) == r.path_prefix.strip_suffix('/'));
    if !known {
        return refuse(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route serves this path",
        );
    }
    let config = gateway.config();
    let mut scopes: Vec<String> = routes.iter().map(|r| r.scope()).collect();
    scopes.sort();
    scopes.dedup();
    axum::Json(json!({
        "resource": config.audience,
        "authorization_servers": [config.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": scopes,
        "dpop_signing_alg_values_supported": aims_token::dpop::PROOF_ALGS
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        "dpop_bound_access_tokens_required": true,
        "resource_name": "AIMS gateway",
    }))
    .into_response()
}

/// The text of header `name` as MCP sends it: verbatim, or decoded from the
/// `=?base64?…?=` form a value that is not plain visible ASCII travels in. `Err` when it is
/// present but cannot be read (it then matches nothing).
fn routing_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ()> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Ok(Some(value.to_owned()));
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(payload).map_err(|_| ())?;
    if engine.encode(&bytes) != payload {
        return Err(());
    }
    String::from_utf8(bytes).map(Some).map_err(|_| ())
}

/// Whether `Mcp-Method` and `Mcp-Name`, where sent, say what the body does.
fn headers_match(headers: &HeaderMap, method: Option<&str>, params: Option<&Value>) -> bool {
    let Ok(named_method) = routing_header(headers, "mcp-method") else {
        return false;
    };
    if named_method.is_some_and(|m| Some(m.as_str()) != method) {
        return false;
    }
    let Ok(named) = routing_header(headers, "mcp-name") else {
        return false;
    };
    let Some(named) = named else {
        return true;
    };
    let key = match method {
        Some("tools/call" | "prompts/get") => "name",
        Some("resources/read") => "uri",
        _ => return false,
    };
    params.and_then(|p| p.get(key)).and_then(Value::as_str) == Some(named.as_str())
}

/// Whether `name` is an MCP tool name: 1 to 128 of `A-Z a-z 0-9 . _ -`.
fn is_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One request on an MCP route, from an authenticated agent.
pub(crate) async fn handle(
    gateway: &Gateway,
    route: &Route,
    caller: &Caller<'_>,
    request: Request,
) -> Response {
    let url = match request.uri().query() {
        Some(query) if !query.is_empty() => format!("{}?{query}", route.upstream),
        _ => route.upstream.clone(),
    };
    let method = request.method().clone();
    if method == Method::GET || method == Method::DELETE {
        // The stream of server messages, or the end of a session: no tool is called.
        let (parts, body) = request.into_parts();
        let body = reqwest::Body::wrap_stream(body.into_data_stream());
        return match send(gateway, route, parts, url, body).await {
            Ok(answer) => stream_back(answer),
            Err(response) => response,
        };
    }
    if method != Method::POST {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "an MCP endpoint takes POST, GET and DELETE",
        );
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_MESSAGE).await else {
        return rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Value::Null,
            INVALID_REQUEST,
            "the message is larger than 1 MiB",
            None,
        );
    };
    let message = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(message)) => message,
        Ok(Value::Array(_)) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                INVALID_REQUEST,
                "JSON-RPC batches are not accepted: send one message per request",
                None,
            );
        }
        Ok(_) | Err(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                "the body is not a JSON-RPC message",
                None,
            );
        }
    };
    let id = message.get("id").cloned();
    let rpc_method = match message.get("method") {
        None => None,
        Some(Value::String(method)) => Some(method.as_str()),
        Some(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "method must be a string",
                None,
            );
        }
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id.unwrap_or(Value::Null),
            INVALID_REQUEST,
            "not a JSON-RPC 2.0 message",
            None,
        );
    }
    let params = message.get("params");
    if !headers_match(&parts.headers, rpc_method, params) {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id.unwrap_or(Value::Null),
            HEADER_MISMATCH,
            "Mcp-Method or Mcp-Name differs from the message",
            None,
        );
    }
    let plumbing = match rpc_method {
        None => true,
        Some(method) => method.starts_with("notifications/") || PLUMBING.contains(&method),
    };
    if plumbing {
        return match send(gateway, route, parts, url, bytes.into()).await {
            Ok(answer) => stream_back(answer),
            Err(response) => response,
        };
    }
    let Some(id) = id.filter(|id| id.is_string() || id.is_number()) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "a request needs a string or number id",
            None,
        );
    };
    match rpc_method {
        Some("tools/call") => {
            let call = ToolCall {
                gateway,
                route,
                caller,
                id,
            };
            call.decide_and_forward(params, parts, url, bytes).await
        }
        Some("tools/list") => match send(gateway, route, parts, url, bytes.into()).await {
            Ok(answer) => filtered_listing(gateway, route, caller, answer).await,
            Err(response) => response,
        },
        _ => rpc_error(
            StatusCode::OK,
            id,
            METHOD_NOT_FOUND,
            "this gateway lets only tool calls and session messages through",
            None,
        ),
    }
}

/// Forwards a message to the route's MCP endpoint, with the route's credential; the answer
/// must start within the upstream timeout (the stream it starts may then run on).
async fn send(
    gateway: &Gateway,
    route: &Route,
    parts: axum::http::request::Parts,
    url: String,
    body: reqwest::Body,
) -> Result<reqwest::Response, Response> {
    let injected = injected(gateway, route).await?;
    let sending = forward(&gateway.streams, route, parts, url, body, injected);
    match tokio::time::timeout(gateway.config().upstream_timeout, sending).await {
        Ok(sent) => sent,
        Err(_) => Err(upstream_timeout()),
    }
}

fn upstream_timeout() -> Response {
    refuse(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        "the upstream did not answer in time",
    )
}

/// One `tools/call` request.
struct ToolCall<'a> {
    gateway: &'a Gateway,
    route: &'a Route,
    caller: &'a Caller<'a>,
    /// The request's JSON-RPC id.
    id: Value,
}

impl ToolCall<'_> {
    /// Decides the call and, if allowed, forwards the message as it came.
    async fn decide_and_forward(
        self,
        params: Option<&Value>,
        parts: axum::http::request::Parts,
        url: String,
        bytes: axum::body::Bytes,
    ) -> Response {
        let Some(name) = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .filter(|name| is_tool_name(name))
        else {
            return self.invalid("params.name must be a tool name: 1 to 128 of A-Z a-z 0-9 . _ -");
        };
        let arguments = match params.and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(arguments @ Value::Object(_)) => arguments.clone(),
            Some(_) => return self.invalid("params.arguments must be an object"),
        };
        let evaluation = self
            .caller
            .evaluation(self.route, CALL_TOOL, name, arguments);
        match decide_held(self.gateway, self.route, &evaluation).await {
            Ok(Verdict::Allow) => {}
            Ok(Verdict::Refuse(refusal) | Verdict::Pending { refusal, .. }) => {
                return self.refused(refusal);
            }
            Err(response) => return response,
        }
        match send(self.gateway, self.route, parts, url, bytes.into()).await {
            Ok(answer) => stream_back(answer),
            Err(response) => response,
        }
    }

    fn invalid(&self, message: &str) -> Response {
        rpc_error(
            StatusCode::OK,
            self.id.clone(),
            INVALID_PARAMS,
            message,
            None,
        )
    }

    /// AIMS's refusal as the JSON-RPC error an MCP client shows.
    fn refused(&self, refusal: Refusal) -> Response {
        let code = if refusal.code == "approval_required" {
            APPROVAL_REQUIRED
        } else {
            DENIED
        };
        let mut data = refusal.details;
        data.insert("error".into(), json!(refusal.code));
        let message = format!("AIMS refused this tool call: {}", refusal.message);
        rpc_error(
            StatusCode::OK,
            self.id.clone(),
            code,
            &message,
            Some(Value::Object(data)),
        )
    }
}

/// The names, among `names`, of the tools the caller's token could call: AIMS previews each
/// (allowed, or allowed once a human approves). Names that are not tool names are left out.
async fn callable(
    gateway: &Gateway,
    route: &Route,
    caller: &Caller<'_>,
    names: &[String],
) -> Result<HashSet<String>, Response> {
    let names: Vec<&String> = names.iter().filter(|n| is_tool_name(n)).collect();
    let mut shown = HashSet::new();
    for chunk in names.chunks(PREVIEW_BATCH) {
        let mut batch = caller.evaluation(route, CALL_TOOL, "", json!({}));
        let evaluations: Vec<Value> = chunk
            .iter()
            .map(|name| {
                let one = caller.evaluation(route, CALL_TOOL, name, json!({}));
                json!({ "resource": one.get("resource") })
            })
            .collect();
        if let Some(batch) = batch.as_object_mut() {
            batch.remove("resource");
            batch.insert("evaluations".into(), Value::Array(evaluations));
            batch.insert("options".into(), json!({ "aims_preview": true }));
        }
        let (status, answer) = ask_aims(gateway, route, "/access/v1/evaluations", &batch).await?;
        let results = answer.get("evaluations").and_then(Value::as_array);
        let Some(results) = results.filter(|r| status.is_success() && r.len() == chunk.len())
        else {
            let message = answer
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("AIMS refused to preview the tools");
            return Err(refuse(StatusCode::FORBIDDEN, "decision_refused", message));
        };
        for (name, result) in chunk.iter().zip(results) {
            let allowed = result.get("decision") == Some(&Value::Bool(true));
            let approvable = result.pointer("/context/reason").and_then(Value::as_str)
                == Some("approval_required");
            if allowed || approvable {
                shown.insert((*name).clone());
            }
        }
    }
    Ok(shown)
}

/// Keeps, in a JSON-RPC answer carrying `result.tools`, only the tools the caller could call.
async fn filter_message(
    gateway: &Gateway,
    route: &Route,
    caller: &Caller<'_>,
    message: &mut Value,
) -> Result<(), Response> {
    let Some(tools) = message
        .pointer_mut("/result/tools")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    let names: Vec<String> = tools
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let shown = callable(gateway, route, caller, &names).await?;
    tools.retain(|t| {
        t.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| shown.contains(n))
    });
    Ok(())
}

/// Reads an answer's body, at most [`MAX_LISTING`] bytes, within `within`.
async fn read_bounded(answer: reqwest::Response, within: Duration) -> Result<Vec<u8>, Response> {
    let reading = async {
        let mut body = Vec::new();
        let mut chunks = answer.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|_| {
                refuse(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unusable",
                    "the upstream's answer broke off",
                )
            })?;
            if body.len() + chunk.len() > MAX_LISTING {
                return Err(refuse(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unusable",
                    "the upstream's tool list is larger than 4 MiB",
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(within, reading).await {
        Ok(read) => read,
        Err(_) => Err(upstream_timeout()),
    }
}

/// A `tools/list` answer with only the tools the caller could call, as JSON or as the event
/// stream it came in. An answer the gateway cannot read is not passed on (the full list
/// would show what the token may not call).
async fn filtered_listing(
    gateway: &Gateway,
    route: &Route,
    caller: &Caller<'_>,
    answer: reqwest::Response,
) -> Response {
    if !answer.status().is_success() {
        return stream_back(answer);
    }
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !NEVER_FORWARDED.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let unusable = || {
        refuse(
            StatusCode::BAD_GATEWAY,
            "upstream_unusable",
            "the upstream's tool list cannot be read",
        )
    };
    let body = match read_bounded(answer, gateway.config().upstream_timeout).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let filtered = if content_type.starts_with("application/json") {
        let Ok(mut message) = serde_json::from_slice::<Value>(&body) else {
            return unusable();
        };
        if let Err(response) = filter_message(gateway, route, caller, &mut message).await {
            return response;
        }
        message.to_string()
    } else if content_type.starts_with("text/event-stream") {
        let Ok(text) = String::from_utf8(body) else {
            return unusable();
        };
        match filter_event_stream(gateway, route, caller, &text).await {
            Ok(text) => text,
            Err(response) => return response,
        }
    } else {
        return unusable();
    };
    let mut response = (status, Body::from(filtered)).into_response();
    *response.headers_mut() = headers;
    response
}

/// An event stream (as text) with every JSON-RPC answer in it filtered: each event keeps its
/// other fields, and its data becomes one `data:` line.
async fn filter_event_stream(
    gateway: &Gateway,
    route: &Route,
    caller: &Caller<'_>,
    text: &str,
) -> Result<String, Response> {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(normalized.len());
    for event in normalized.split("\n\n").filter(|e| !e.is_empty()) {
        let mut fields = Vec::new();
        let mut data = Vec::new();
        for line in event.lines() {
            match line.strip_prefix("data:") {
                Some(value) => data.push(value.strip_prefix(' ').unwrap_or(value)),
                None => fields.push(line),
            }
        }
        for field in &fields {
            out.push_str(field);
            out.push('\n');
        }
        if !data.is_empty() {
            let joined = data.join("\n");
            match serde_json::from_str::<Value>(&joined) {
                Ok(mut message) => {
                    filter_message(gateway, route, caller, &mut message).await?;
                    out.push_str("data: ");
                    out.push_str(&message.to_string());
                    out.push('\n');
                }
                Err(_) => {
                    for line in data {
                        out.push_str("data: ");
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn routing_headers_must_name_what_the_body_does() {
        let params = json!({"name": "search", "arguments": {}});
        let call = Some("tools/call");
        assert!(headers_match(&headers(&[]), call, Some(&params)));
        assert!(headers_match(
            &headers(&[("mcp-method", "tools/call"), ("mcp-name", "search")]),
            call,
            Some(&params)
        ));
        // Another method, another tool, a name for a method that names nothing.
        assert!(!headers_match(
            &headers(&[("mcp-method", "tools/list")]),
            call,
            Some(&params)
        ));
        assert!(!headers_match(
            &headers(&[("mcp-name", "delete_repo")]),
            call,
            Some(&params)
        ));
        assert!(!headers_match(
            &headers(&[("mcp-method", "tools/list"), ("mcp-name", "x")]),
            Some("tools/list"),
            None
        ));
        // The base64 form, decoded; a non-canonical one matches nothing.
        let encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("search")
        );
        assert!(headers_match(
            &headers(&[("mcp-name", &encoded)]),
            call,
            Some(&params)
        ));
        assert!(!headers_match(
            &headers(&[("mcp-name", "=?base64?c2VhcmNo=?=")]),
            call,
            Some(&params)
        ));
    }

    #[test]
    fn tool_names_are_the_mcp_alphabet() {
        for good in ["search", "repo.read", "a-b_c", &"x".repeat(128)] {
            assert!(is_tool_name(good), "{good}");
        }
        for bad in ["", "a/b", "a b", "ünï", &"x".repeat(129), "a\"b"] {
            assert!(!is_tool_name(bad), "{bad}");
        }
    }
}
