//! One request through the gateway: route, authenticate, decide, inject, forward.
//!
//! Every refusal is a JSON body `{"error": CODE, "message": …}` with a stable code. The agent's
//! `Authorization` and `DPoP` headers, hop-by-hop headers and `Host` are never forwarded
//! upstream; bodies stream both ways without being buffered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use aims_api::sightings::ReportSightings;
use aims_core::approval::ApprovalState;
use aims_core::id::{ApprovalId, SecretName};
use aims_core::sighting::MAX_PER_REPORT;
use aims_sdk::{AdminClient, SdkError, Verifier, VerifierConfig};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::{Config, NEVER_FORWARDED, Route};
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
    public_url: String,
    verifier: Verifier,
    aims: AdminClient,
    upstream: reqwest::Client,
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
        let client = |timeout| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .timeout(timeout)
                .build()
                .map_err(|e| failed(SdkError::Transport(e.to_string())))
        };
        Ok(Arc::new(Self {
            upstream: client(config.upstream_timeout)?,
            decisions: client(Duration::from_secs(10))?,
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
    fn routes(&self) -> Arc<Vec<Route>> {
        match self.routes.read() {
            Ok(routes) => routes.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The gateway's one handler, for every path.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gateway)
}

/// A refusal: `status` with `{"error": code, "message": message}`.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// Whether `path` tries to leave its route: a `.` or `..` segment, or an encoded dot, slash or
/// backslash (which an upstream might decode into one).
fn escapes(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
        || ["%2e", "%2f", "%5c", "\\"]
            .iter()
            .any(|bad| lower.contains(bad))
}

async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if escapes(&path) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path has dot segments or encoded separators",
        );
    }
    let routes = gateway.routes();
    let Some(route) = crate::config::route_for(&routes, &path) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route serves this path",
        );
    };
    let method = request.method().as_str().to_owned();
    let url = format!("{}{path}", gateway.public_url);
    let claims = match gateway
        .verifier
        .verify_headers(request.headers(), &method, &url)
        .await
    {
        Ok(claims) => claims,
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let code = refusal.error_code().unwrap_or("invalid_token");
            // The caller's failing, not the gateway's (a stale revocation view is a 503).
            if status.is_client_error() {
                let source = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
                let user_agent = request
                    .headers()
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                gateway
                    .sightings
                    .record(&source, &route.name, user_agent, code);
            }
            let mut response = refuse(status, code, &refusal.to_string());
            if let Some(challenge) = refusal
                .www_authenticate()
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            return response;
        }
    };
    let token = presented_token(request.headers()).unwrap_or_default();
    let rest = path.get(route.path_prefix.len()..).unwrap_or_default();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let call = Call {
        route,
        agent: &claims.client_id,
        token: &token,
        method: &method,
        rest,
        query: &query,
    };
    let mut verdict = match decide(&gateway, &call).await {
        Ok(verdict) => verdict,
        Err(response) => return response,
    };
    // Where the route says so, the call waits for its approval instead of being refused now.
    if let (Verdict::Pending { approval_id, .. }, Some(hold)) = (&verdict, route.hold_for_approval)
        && approved_within(&gateway, approval_id, hold).await
    {
        verdict = match decide(&gateway, &call).await {
            Ok(verdict) => verdict,
            Err(response) => return response,
        };
    }
    match verdict {
        Verdict::Allow => {}
        Verdict::Refuse(refused) | Verdict::Pending { refused, .. } => return refused,
    }
    let injected = match &route.inject {
        None => None,
        Some(inject) => match secret(&gateway, &inject.secret).await {
            Ok(value) => {
                let value = inject.format.replace("{secret}", value.expose_secret());
                match HeaderValue::from_str(&value) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        Some((inject.header.clone(), value))
                    }
                    Err(_) => {
                        return refuse(
                            StatusCode::BAD_GATEWAY,
                            "secret_unusable",
                            "the route's secret cannot be put in a header",
                        );
                    }
                }
            }
            Err(response) => return response,
        },
    };
    forward(&gateway, route, request, rest, &query, injected).await
}

/// The token in `Authorization` (after its scheme).
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (_, token) = value.split_once(' ')?;
    Some(token.trim().to_owned())
}

/// One call through a route, as AIMS is asked about it.
struct Call<'a> {
    route: &'a Route,
    /// The agent's SPIFFE ID.
    agent: &'a str,
    /// Its task token, as presented.
    token: &'a str,
    method: &'a str,
    /// The path after the route's prefix.
    rest: &'a str,
    query: &'a str,
}

/// What AIMS answered about a call.
enum Verdict {
    /// Allowed: forward it.
    Allow,
    /// Refused: send this.
    Refuse(Response),
    /// It needs a human's approval (request `approval_id`): send `refused`, or wait.
    Pending {
        approval_id: ApprovalId,
        refused: Response,
    },
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

/// Asks AIMS (AuthZEN, as this gateway's resource server, with the agent's token) whether the
/// call is allowed.
async fn decide(gateway: &Gateway, call: &Call<'_>) -> Result<Verdict, Response> {
    let Call {
        route,
        agent,
        token,
        method,
        rest,
        query,
    } = *call;
    let evaluation = json!({
        "subject": {"type": "agent", "id": agent, "properties": {"token": token}},
        "action": {"name": route.action(method)},
        "resource": {"type": route.resource_type, "id": route.resource_id.replace("{path}", rest),
                     "properties": {"system": route.system, "environment": route.environment,
                                    "sensitivity": route.sensitivity, "kind": route.kind}},
        "context": {"arguments": {"method": method, "path": rest, "query": query}},
    });
    let unavailable = |why: &str| {
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
    };
    let sent = gateway
        .decisions
        .post(format!("{}/access/v1/evaluation", gateway.config.aims_url))
        .basic_auth(
            gateway.config.client_name.as_str(),
            Some(gateway.config.client_secret.expose_secret()),
        )
        .json(&evaluation)
        .send()
        .await
        .map_err(|e| unavailable(&e.without_url().to_string()))?;
    let status = sent.status();
    let body: Value = sent
        .json()
        .await
        .map_err(|_| unavailable("an answer that is not JSON"))?;
    let text = |value: Option<&Value>, key: &str| {
        value
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if !status.is_success() {
        // The agent's call itself is bad (its token for the decision, its resource): say so.
        let code = text(Some(&body), "error").unwrap_or_else(|| "decision_refused".to_owned());
        let message =
            text(Some(&body), "message").unwrap_or_else(|| "AIMS refused to decide".to_owned());
        let status = if status.is_server_error() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::FORBIDDEN
        };
        return Ok(Verdict::Refuse(refuse(status, &code, &message)));
    }
    if body.get("decision") == Some(&Value::Bool(true)) {
        return Ok(Verdict::Allow);
    }
    let context = body.get("context");
    let pending = text(context, "reason").as_deref() == Some("approval_required");
    let mut answer = serde_json::Map::new();
    let (code, message) = if pending {
        (
            "approval_required",
            "a human must approve this exact call; wait on approval_url, then call again",
        )
    } else {
        ("denied", "the policies deny this call")
    };
    answer.insert("error".into(), json!(code));
    answer.insert("message".into(), json!(message));
    for field in ["decision_id", "policies", "approval_id", "approval_url"] {
        if let Some(value) = context.and_then(|c| c.get(field)) {
            answer.insert(field.into(), value.clone());
        }
    }
    let approval_id = text(context, "approval_id").and_then(|id| ApprovalId::new(id).ok());
    let refused = (StatusCode::FORBIDDEN, axum::Json(Value::Object(answer))).into_response();
    Ok(match approval_id {
        Some(approval_id) if pending => Verdict::Pending {
            approval_id,
            refused,
        },
        _ => Verdict::Refuse(refused),
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

/// Forwards the call upstream, streaming both bodies.
async fn forward(
    gateway: &Gateway,
    route: &Route,
    request: Request,
    rest: &str,
    query: &str,
    injected: Option<(axum::http::HeaderName, HeaderValue)>,
) -> Response {
    let mut url = format!("{}/{rest}", route.upstream);
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    let (parts, body) = request.into_parts();
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !NEVER_FORWARDED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some((name, value)) = injected {
        headers.insert(name, value);
    }
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let sent = gateway
        .upstream
        .request(parts.method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => {
            return refuse(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            );
        }
        Err(e) => {
            tracing::warn!(route = route.name, error = %e.without_url(), "upstream unreachable");
            return refuse(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream cannot be reached",
            );
        }
    };
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
    use super::escapes;

    #[test]
    fn paths_that_leave_their_route_are_caught() {
        for bad in [
            "/repo/../admin",
            "/repo/./x",
            "/repo/%2e%2e/admin",
            "/repo/%2E%2E/admin",
            "/repo/a%2fb",
            "/repo/a%5cb",
            "/repo/a\\b",
            "/repo/..",
        ] {
            assert!(escapes(bad), "{bad}");
        }
        assert!(!escapes("/repo/app/readme.md"));
        assert!(!escapes("/repo/a..b"));
    }
}
