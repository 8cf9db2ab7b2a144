//! The gateway's state, and a call on an HTTP route: decide, inject, forward. The deciding,
//! holding for approval, secret injection and forwarding are shared with MCP routes.
//!
//! Every refusal is a JSON body `{"error": CODE, "message": …}` with a stable code. The agent's
//! `Authorization` and `DPoP` headers, hop-by-hop headers and `Host` are never forwarded
//! upstream; bodies stream both ways without being buffered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use aims_api::sightings::ReportSightings;
use aims_core::approval::ApprovalState;
use aims_core::id::{ApprovalId, SecretName};
use aims_core::sighting::MAX_PER_REPORT;
use aims_sdk::{AdminClient, SdkError, Verifier, VerifierConfig};
use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::TryStreamExt as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::{Config, NEVER_FORWARDED, Placement, Route, RouteKind};
use crate::sightings::Sightings;

/// How long a secret's value is reused before it is read from AIMS again.
const SECRET_TTL: Duration = Duration::from_secs(30);
/// The longest one long-poll for an approval asks AIMS to hold.
const APPROVAL_POLL: Duration = Duration::from_secs(25);
/// How often the revocation feed is polled.
const FEED_POLL: Duration = Duration::from_millis(500);
/// How old the revocation view may get before every token is refused.
const FEED_MAX_STALENESS: Duration = Duration::from_secs(5);

/// The gateway's state: its configuration, its view of AIMS, and its clients.
pub struct Gateway {
    /// The configuration it started with (its identity at AIMS, where it listens).
    config: Config,
    /// The routes in force: the started configuration's, or a reloaded one's.
    routes: RwLock<Arc<Vec<Route>>>,
    /// The URL agents' DPoP proofs name (`htu`) for a path of this gateway.
    pub(crate) public_url: String,
    pub(crate) verifier: Verifier,
    aims: AdminClient,
    /// For HTTP routes: the whole exchange within the upstream timeout.
    upstream: reqwest::Client,
    /// For MCP routes, whose answers may be long-lived event streams: only until the answer
    /// starts is bounded (by the caller).
    pub(crate) streams: reqwest::Client,
    decisions: reqwest::Client,
    secrets: Mutex<HashMap<SecretName, (SecretString, Instant)>>,
    /// Callers refused before any decision, until they are reported.
    pub(crate) sightings: Sightings,
}

impl Gateway {
    /// Follows AIMS as the configured resource server (keys, revocation feed).
    ///
    /// # Errors
    /// The AIMS URL and why it cannot be followed.
    pub async fn new(config: Config, public_url: String) -> Result<Arc<Self>, (String, SdkError)> {
        let url = config.aims_url.clone();
        let failed = |cause| (url.clone(), cause);
        let verifier = Verifier::start(VerifierConfig {
            base_url: config.aims_url.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            client_name: config.client_name.clone(),
            client_secret: config.client_secret.clone(),
            poll_interval: FEED_POLL,
            max_staleness: FEED_MAX_STALENESS,
        })
        .await
        .map_err(failed)?;
        let aims = AdminClient::new(&config.aims_url, None).map_err(failed)?;
        let client = |timeout: Option<Duration>| {
            let builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5));
            let builder = match timeout {
                Some(timeout) => builder.timeout(timeout),
                None => builder,
            };
            builder
                .build()
                .map_err(|e| failed(SdkError::Transport(e.to_string())))
        };
        Ok(Arc::new(Self {
            upstream: client(Some(config.upstream_timeout))?,
            streams: client(None)?,
            decisions: client(Some(Duration::from_secs(10)))?,
            routes: RwLock::new(Arc::new(config.routes.clone())),
            config,
            public_url,
            verifier,
            aims,
            secrets: Mutex::new(HashMap::new()),
            sightings: Sightings::default(),
        }))
    }
}

impl Gateway {
    /// Puts `new`'s routes in force for the next requests; requests in flight finish on the
    /// routes they started with, and no connection is dropped. Everything else (where it
    /// listens, its identity at AIMS, the upstream timeout) needs a restart: a `new` that
    /// changes it is refused and nothing changes.
    ///
    /// # Errors
    /// What differs that a reload cannot change.
    pub fn reload(&self, new: Config) -> Result<usize, String> {
        let old = &self.config;
        let unchanged = old.listen == new.listen
            && old.public_url == new.public_url
            && old.aims_url == new.aims_url
            && old.issuer == new.issuer
            && old.audience == new.audience
            && old.client_name == new.client_name
            && old.client_secret.expose_secret() == new.client_secret.expose_secret()
            && old.upstream_timeout == new.upstream_timeout;
        if !unchanged {
            return Err("only routes can be reloaded; restart the gateway to change where it listens, its identity at AIMS or the upstream timeout".to_owned());
        }
        let count = new.routes.len();
        match self.routes.write() {
            Ok(mut routes) => *routes = Arc::new(new.routes),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new.routes),
        }
        Ok(count)
    }

    /// The configuration it started with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The routes in force now.
    pub(crate) fn routes(&self) -> Arc<Vec<Route>> {
        match self.routes.read() {
            Ok(routes) => routes.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A refusal: `status` with `{"error": code, "message": message}`.
pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// One request on an HTTP route, from an authenticated agent: `rest` is the path after the
/// route's prefix. Decided (the method's action on the route's resource, the method, path
/// and query as arguments), then forwarded with bodies streamed both ways.
pub(crate) async fn http_call(
    gateway: &Gateway,
    route: &Route,
    caller: &Caller<'_>,
    request: Request,
    rest: &str,
) -> Response {
    let method = request.method().as_str().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let evaluation = caller.evaluation(
        route,
        &route.action(&method),
        rest,
        json!({"method": method, "path": rest, "query": query}),
    );
    match decide_held(gateway, route, &evaluation).await {
        Ok(Verdict::Allow) => {}
        Ok(Verdict::Refuse(refusal) | Verdict::Pending { refusal, .. }) => {
            return refusal.into_response();
        }
        Err(response) => return response,
    }
    let injected = match injected(gateway, route).await {
        Ok(injected) => injected,
        Err(response) => return response,
    };
    let mut url = format!("{}/{rest}", route.upstream);
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    let (parts, body) = request.into_parts();
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    match forward(&gateway.upstream, route, parts, url, body, injected).await {
        Ok(answer) => stream_back(answer),
        Err(response) => response,
    }
}

/// A route's upstream credential, ready to go into a forwarded call.
pub(crate) enum Injected {
    /// This header, with this (sensitive) value.
    Header(HeaderName, HeaderValue),
    /// This query parameter, with this value.
    Query(String, SecretString),
}

/// The route's upstream credential, if the route injects one.
pub(crate) async fn injected(
    gateway: &Gateway,
    route: &Route,
) -> Result<Option<Injected>, Response> {
    let Some(inject) = &route.inject else {
        return Ok(None);
    };
    let value = secret(gateway, &inject.secret).await?;
    let (name, value) = match &inject.into {
        Placement::Query { name } => return Ok(Some(Injected::Query(name.clone(), value))),
        Placement::Header { name, format } => (
            name.clone(),
            format.replace("{secret}", value.expose_secret()),
        ),
        Placement::Basic { user } => {
            let credentials = format!("{user}:{}", value.expose_secret());
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            (header::AUTHORIZATION, format!("Basic {encoded}"))
        }
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| {
        refuse(
            StatusCode::BAD_GATEWAY,
            "secret_unusable",
            "the route's secret cannot be put in a header",
        )
    })?;
    value.set_sensitive(true);
    Ok(Some(Injected::Header(name, value)))
}

/// What a query value is percent-encoded against: everything but RFC 3986's unreserved
/// characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `url` with query parameter `name` set to `value`: every parameter the agent sent under
/// that name (percent-encoded or not) is removed, the others are kept as they were.
fn with_query_parameter(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            !pair.is_empty() && percent_decode_str(key).collect::<Vec<u8>>() != name.as_bytes()
        })
        .collect();
    let set = format!("{name}={}", utf8_percent_encode(value, QUERY_VALUE));
    kept.push(&set);
    format!("{base}?{}", kept.join("&"))
}

/// The authenticated agent behind a call, as AIMS is asked about it.
pub(crate) struct Caller<'a> {
    /// The agent's SPIFFE ID.
    pub(crate) agent: &'a str,
    /// Its task token, as presented.
    pub(crate) token: &'a str,
}

impl Caller<'_> {
    /// The AuthZEN evaluation of `action` on the route's resource named by `name` (the path
    /// after the prefix, or the tool), with `arguments` in the context.
    pub(crate) fn evaluation(
        &self,
        route: &Route,
        action: &str,
        name: &str,
        arguments: Value,
    ) -> Value {
        let placeholder = match route.kind {
            RouteKind::Http => "{path}",
            RouteKind::Mcp => "{tool}",
        };
        json!({
            "subject": {"type": "agent", "id": self.agent, "properties": {"token": self.token}},
            "action": {"name": action},
            "resource": {"type": route.resource_type, "id": route.resource_id.replace(placeholder, name),
                         "properties": {"system": route.system, "environment": route.environment,
                                        "sensitivity": route.sensitivity, "kind": route.resource_kind}},
            "context": {"arguments": arguments},
        })
    }
}

/// Why a call was refused, as AIMS said.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// A stable code: `denied`, `approval_required`, or AIMS's error code.
    pub(crate) code: String,
    pub(crate) message: String,
    /// What else AIMS said: `decision_id`, `policies`, `approval_id`, `approval_url`.
    pub(crate) details: serde_json::Map<String, Value>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.details);
        (self.status, axum::Json(Value::Object(body))).into_response()
    }
}

/// What AIMS answered about a call.
pub(crate) enum Verdict {
    /// Allowed: forward it.
    Allow,
    /// Refused.
    Refuse(Refusal),
    /// It needs a human's approval (request `approval_id`).
    Pending {
        approval_id: ApprovalId,
        refusal: Refusal,
    },
}

/// Asks AIMS about `evaluation`; where the route holds calls for their approval and one is
/// needed, waits for the human's answer and asks again.
pub(crate) async fn decide_held(
    gateway: &Gateway,
    route: &Route,
    evaluation: &Value,
) -> Result<Verdict, Response> {
    let verdict = decide(gateway, route, evaluation).await?;
    if let (Verdict::Pending { approval_id, .. }, Some(hold)) = (&verdict, route.hold_for_approval)
        && approved_within(gateway, approval_id, hold).await
    {
        return decide(gateway, route, evaluation).await;
    }
    Ok(verdict)
}

/// Waits up to `hold` for approval request `approval_id` to be approved (long-polling AIMS
/// as the resource server that opened it); `false` when it was denied, expired or revoked, the
/// time ran out, or AIMS could not be asked.
async fn approved_within(gateway: &Gateway, approval_id: &ApprovalId, hold: Duration) -> bool {
    let deadline = Instant::now() + hold;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let wait_s = left.min(APPROVAL_POLL).as_secs().max(1);
        let answer = gateway
            .aims
            .approval_as(
                &gateway.config.client_name,
                gateway.config.client_secret.expose_secret(),
                approval_id,
                wait_s,
            )
            .await;
        match answer.map(|a| a.state) {
            Ok(ApprovalState::Approved) => return true,
            Ok(ApprovalState::Pending) => {}
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot wait on an approval request; refusing the call");
                return false;
            }
        }
    }
}

/// The AIMS refusal for a decision it could not give: the call is refused (503).
fn unavailable(route: &Route, why: &str) -> Response {
    tracing::warn!(
        route = route.name,
        why,
        "cannot get a decision from AIMS; refusing"
    );
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "decision_unavailable",
        "AIMS cannot decide this call now; refused",
    )
}

/// POSTs `body` to AIMS's AuthZEN endpoint `path` as this gateway's resource server; the
/// status and the JSON answer.
pub(crate) async fn ask_aims(
    gateway: &Gateway,
    route: &Route,
    path: &str,
    body: &Value,
) -> Result<(StatusCode, Value), Response> {
    let sent = gateway
        .decisions
        .post(format!("{}{path}", gateway.config.aims_url))
        .basic_auth(
            gateway.config.client_name.as_str(),
            Some(gateway.config.client_secret.expose_secret()),
        )
        .json(body)
        .send()
        .await
        .map_err(|e| unavailable(route, &e.without_url().to_string()))?;
    let status = sent.status();
    let answer: Value = sent
        .json()
        .await
        .map_err(|_| unavailable(route, "an answer that is not JSON"))?;
    if status.is_server_error() {
        return Err(unavailable(route, "AIMS answered with a server error"));
    }
    Ok((status, answer))
}

/// Asks AIMS (AuthZEN, as this gateway's resource server, with the agent's token) whether the
/// call `evaluation` is allowed.
async fn decide(gateway: &Gateway, route: &Route, evaluation: &Value) -> Result<Verdict, Response> {
    let (status, body) = ask_aims(gateway, route, "/access/v1/evaluation", evaluation).await?;
    let text = |value: Option<&Value>, key: &str| {
        value
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if !status.is_success() {
        // The agent's call itself is bad (its token for the decision, its resource): say so.
        return Ok(Verdict::Refuse(Refusal {
            status: StatusCode::FORBIDDEN,
            code: text(Some(&body), "error").unwrap_or_else(|| "decision_refused".to_owned()),
            message: text(Some(&body), "message")
                .unwrap_or_else(|| "AIMS refused to decide".to_owned()),
            details: serde_json::Map::new(),
        }));
    }
    if body.get("decision") == Some(&Value::Bool(true)) {
        return Ok(Verdict::Allow);
    }
    let context = body.get("context");
    let pending = text(context, "reason").as_deref() == Some("approval_required");
    let (code, message) = if pending {
        (
            "approval_required",
            "a human must approve this exact call; wait on approval_url, then call again",
        )
    } else {
        ("denied", "the policies deny this call")
    };
    let mut details = serde_json::Map::new();
    for field in ["decision_id", "policies", "approval_id", "approval_url"] {
        if let Some(value) = context.and_then(|c| c.get(field)) {
            details.insert(field.into(), value.clone());
        }
    }
    let refusal = Refusal {
        status: StatusCode::FORBIDDEN,
        code: code.to_owned(),
        message: message.to_owned(),
        details,
    };
    let approval_id = text(context, "approval_id").and_then(|id| ApprovalId::new(id).ok());
    Ok(match approval_id {
        Some(approval_id) if pending => Verdict::Pending {
            approval_id,
            refusal,
        },
        _ => Verdict::Refuse(refusal),
    })
}

/// The value of secret `name`, read from AIMS at most every [`SECRET_TTL`].
async fn secret(gateway: &Gateway, name: &SecretName) -> Result<SecretString, Response> {
    let cached = gateway.secrets.lock().ok().and_then(|cache| {
        cache
            .get(name)
            .filter(|(_, at)| at.elapsed() < SECRET_TTL)
            .map(|(value, _)| value.clone())
    });
    if let Some(value) = cached {
        return Ok(value);
    }
    let read = gateway
        .aims
        .read_secret_as(
            &gateway.config.client_name,
            gateway.config.client_secret.expose_secret(),
            name,
        )
        .await
        .map_err(|e| {
            tracing::warn!(secret = %name, error = %e, "cannot read the route's secret");
            refuse(
                StatusCode::BAD_GATEWAY,
                "secret_unavailable",
                "the route's upstream credential cannot be read",
            )
        })?;
    let value = SecretString::from(read.value);
    if let Ok(mut cache) = gateway.secrets.lock() {
        cache.insert(name.clone(), (value.clone(), Instant::now()));
    }
    Ok(value)
}

/// Sends the call to `url` upstream with `client`: the agent's headers minus the ones never
/// forwarded, the route's credential in its header, `body` streamed. Until the upstream's
/// answer starts, at most the configured upstream timeout.
pub(crate) async fn forward(
    client: &reqwest::Client,
    route: &Route,
    parts: Parts,
    url: String,
    body: reqwest::Body,
    injected: Option<Injected>,
) -> Result<reqwest::Response, Response> {
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !NEVER_FORWARDED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let url = match injected {
        None => url,
        Some(Injected::Header(name, value)) => {
            headers.insert(name, value);
            url
        }
        Some(Injected::Query(name, value)) => {
            with_query_parameter(&url, &name, value.expose_secret())
        }
    };
    let sent = client
        .request(parts.method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(answer) => Ok(answer),
        Err(e) if e.is_timeout() => Err(refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the upstream did not answer in time",
        )),
        Err(e) => {
            tracing::warn!(route = route.name, error = %e.without_url(), "upstream unreachable");
            Err(refuse(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream cannot be reached",
            ))
        }
    }
}

/// The upstream's answer, its headers minus the ones never forwarded, its body streamed.
pub(crate) fn stream_back(answer: reqwest::Response) -> Response {
    let mut response = Response::builder().status(answer.status());
    if let Some(out) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !NEVER_FORWARDED.contains(&name.as_str()) {
                out.append(name.clone(), value.clone());
            }
        }
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| refuse(StatusCode::BAD_GATEWAY, "upstream_unusable", "bad answer"))
}

/// Reports the gateway's sightings to AIMS every `every` until `stop` (or the gateway is
/// gone). A report that fails is logged and its sightings dropped: they are counts for the
/// governance report, and keeping them would let an outage grow the table without bound.
pub async fn report_sightings(
    gateway: Weak<Gateway>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let (seen, dropped) = gateway.sightings.take();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "refused calls not kept as sightings: the table was full"
            );
        }
        let config = &gateway.config;
        for batch in seen.chunks(MAX_PER_REPORT) {
            let sent = gateway
                .aims
                .report_sightings_as(
                    &config.client_name,
                    config.client_secret.expose_secret(),
                    &ReportSightings {
                        sightings: batch.to_vec(),
                    },
                )
                .await;
            if let Err(error) = sent {
                tracing::warn!(%error, sightings = batch.len(), "cannot report sightings to AIMS");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_query_parameter;

    #[test]
    fn an_injected_query_parameter_replaces_the_agents_however_encoded() {
        let base = "http://up/x";
        assert_eq!(
            with_query_parameter(base, "key", "s3 cr&t"),
            "http://up/x?key=s3%20cr%26t"
        );
        assert_eq!(
            with_query_parameter(
                &format!("{base}?q=a+b&key=mine&k%65y=also&%6Bey&n=1"),
                "key",
                "v"
            ),
            "http://up/x?q=a+b&n=1&key=v"
        );
    }
}
