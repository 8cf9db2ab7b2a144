//! The HTTP surface: every route, the layers around them, and [`router`], which tests drive
//! without sockets.
//!
//! Public routes (discovery, health, metrics, OpenAPI) need no credential. `/v1` routes sit
//! behind the operator authentication and audit middleware of [`crate::auth`].

pub mod agents;
pub mod approvals;
pub mod attest;
pub mod audit;
pub mod authzen;
pub mod discovery;
pub mod health;
pub mod keys;
pub mod leases;
pub mod oauth;
pub mod policies;
pub mod report;
pub mod resource_servers;
pub mod revocations;
pub mod secrets;
pub mod sightings;
pub mod ssf;
pub mod tasks;
pub mod users;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ring::rand::SecureRandom as _;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;

use crate::auth::{REQUEST_ID_HEADER, admin_layer, audit_layer};
use crate::error::{ApiError, ErrorCode};
use crate::limits;
use crate::metrics::RequestLabels;
use crate::presented;
use crate::refusals::Source;
use crate::state::AppState;

/// Builds the full router over `state`.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/agents", post(agents::register).get(agents::list))
        .route("/agents/{name}", get(agents::show).patch(agents::update))
        .route("/inventory", get(agents::inventory))
        .route("/report", get(report::report))
        .route("/agents/{name}/suspend", post(agents::suspend))
        .route("/agents/{name}/recertify", post(agents::recertify))
        .route("/agents/{name}/resume", post(agents::resume))
        .route("/agents/{name}/decommission", post(agents::decommission))
        .route("/agents/{name}/release", post(agents::release))
        .route("/agents/{name}/join-token", post(agents::join_token))
        .route("/users", post(users::add).get(users::list))
        .route("/users/{name}", axum::routing::delete(users::remove))
        .route("/users/{name}/rotate", post(users::rotate))
        .route("/keys", get(keys::list))
        .route("/keys/rotate", post(keys::rotate))
        .route("/audit", get(audit::page))
        .route("/audit/verify", get(audit::verify))
        .route("/audit/trace/{task_id}", get(audit::trace))
        .route("/audit/query", get(audit::query))
        .route("/audit/ocsf", get(audit::ocsf))
        .route("/audit/checkpoint", get(audit::checkpoint))
        .route("/audit/checkpoints", get(audit::checkpoints))
        .route("/audit/entries", get(audit::entries))
        .route("/audit/proof/inclusion", get(audit::inclusion))
        .route("/audit/proof/consistency", get(audit::consistency))
        .route("/audit/tlog/checkpoint", get(audit::tlog_checkpoint))
        .route("/audit/tlog/tile/{*path}", get(audit::tlog_tile))
        .route("/policies", post(policies::push).get(policies::list))
        .route("/policies/{version}", get(policies::show))
        .route("/policies/{version}/rollback", post(policies::rollback))
        .route("/policies/active", get(policies::active))
        .route("/policies/explain", post(policies::explain))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::show))
        .route("/tasks/{id}/end", post(tasks::end))
        .route("/revocations", post(revocations::revoke))
        .route("/secrets", post(secrets::put).get(secrets::list))
        .route(
            "/secrets/{name}",
            get(secrets::show).delete(secrets::delete),
        )
        .route("/secrets/{name}/rotate", post(secrets::rotate))
        .route("/sightings", get(sightings::list))
        .route(
            "/engines",
            post(leases::add_engine).get(leases::list_engines),
        )
        .route(
            "/engines/{name}/roles",
            post(leases::add_role).get(leases::list_roles),
        )
        .route("/leases", get(leases::list))
        .route("/leases/{id}", get(leases::show))
        .route(
            "/resource-servers",
            post(resource_servers::register).get(resource_servers::list),
        )
        .route(
            "/resource-servers/{name}",
            get(resource_servers::show).delete(resource_servers::remove),
        )
        .layer(middleware::from_fn_with_state(state.clone(), admin_layer));
    // Anyone may call these: each request takes from its source's rate limit.
    let open = Router::new()
        .route("/attest/nonce", post(attest::nonce))
        .route("/attest", post(attest::attest))
        .layer(middleware::from_fn_with_state(state.clone(), audit_layer))
        .layer(middleware::from_fn_with_state(state.clone(), per_source));
    let agent = Router::new()
        .route("/decisions", post(policies::decide))
        // The agent that asked, or an operator (told apart by the credential's format).
        .route("/approvals/{id}", get(approvals::show))
        // Resource servers a secret names as readers (HTTP Basic), authenticated inside.
        .route("/secrets/{name}/value", get(secrets::value))
        .route("/sightings/report", post(sightings::report))
        .route("/tasks", post(tasks::create))
        // Agents with a task token ask for database leases.
        .route("/leases", post(leases::create))
        .route("/leases/{id}/renew", post(leases::renew))
        // The lease's holder (task token) or an operator (a user's bearer credential).
        .route("/leases/{id}/revoke", post(leases::revoke))
        .route("/revocations", get(revocations::page))
        .route("/revocations/stream", get(revocations::stream))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            presented::offer_dpop_nonce,
        ));
    // Rate limits wrap the audit layer: a request refused for its rate is counted, never
    // written on its own (`crate::refusals`).
    let unless_credentialed =
        middleware::from_fn_with_state(state.clone(), per_source_unless_credentialed);
    let v1 = admin
        .merge(agent)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), audit_layer))
        .layer(unless_credentialed.clone())
        .merge(open);

    let authzen = Router::new()
        .route("/evaluation", post(authzen::evaluation))
        .route("/evaluations", post(authzen::evaluations))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            presented::offer_dpop_nonce,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), audit_layer))
        .layer(unless_credentialed.clone());

    // Shared Signals receivers authenticate in the handlers (HTTP Basic or Bearer); the
    // audit layer records their refusals and reads.
    let shared_signals = Router::new()
        .route(
            crate::signals::STREAMS_PATH,
            get(ssf::read)
                .post(ssf::create)
                .patch(ssf::update)
                .put(ssf::replace)
                .delete(ssf::delete),
        )
        .route(
            crate::signals::STATUS_PATH,
            get(ssf::status).post(ssf::update_status),
        )
        .route(crate::signals::VERIFY_PATH, post(ssf::verify))
        .route("/ssf/poll/{stream_id}", post(ssf::poll))
        .layer(middleware::from_fn_with_state(state.clone(), audit_layer))
        .layer(unless_credentialed);

    // The OAuth endpoints authenticate inside (a token in the form, or client credentials):
    // every request takes from its source's rate limit.
    let oauth = Router::new()
        .route(aims_api::oauth::TOKEN_PATH, post(oauth::token))
        .route(aims_api::oauth::INTROSPECTION_PATH, post(oauth::introspect))
        .route(aims_api::oauth::REVOCATION_PATH, post(oauth::revoke))
        .layer(middleware::from_fn_with_state(state.clone(), per_source));

    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    Router::new()
        .route(discovery::METADATA_PATH, get(discovery::metadata))
        .route(aims_api::oauth::JWKS_PATH, get(discovery::jwks))
        .route(aims_api::tlog::LOG_KEY_PATH, get(audit::log_key))
        .route(discovery::BUNDLE_PATH, get(discovery::bundle))
        .route(discovery::OPENAPI_PATH, get(discovery::openapi))
        .route(
            "/.well-known/authzen-configuration",
            get(authzen::configuration),
        )
        .route(crate::signals::CONFIGURATION_PATH, get(ssf::configuration))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/v1", v1)
        .nest("/access/v1", authzen)
        .merge(shared_signals)
        .merge(oauth)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, RandomRequestId))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::not_found(ErrorCode::NoRoute, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method",
    )
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Request ids of 16 random bytes, hex-encoded, for requests that bring none.
#[derive(Clone)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let mut bytes = [0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
        HeaderValue::from_str(&hex::encode(bytes))
            .ok()
            .map(RequestId::new)
    }
}

/// Middleware for routes anyone may call: every request takes from its source's bucket.
pub async fn per_source(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match over_rate(&state, &request) {
        None => next.run(request).await,
        Some(refused) => refused,
    }
}

/// Middleware for the other API routes: a request without any `Authorization` header takes
/// from its source's bucket (it can only be refused); one with credentials is left to them.
pub async fn per_source_unless_credentialed(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.headers().contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    match over_rate(&state, &request) {
        None => next.run(request).await,
        Some(refused) => refused,
    }
}

/// Takes one request from the bucket of `request`'s source; the 429 when it is empty.
fn over_rate(state: &AppState, request: &Request) -> Option<Response> {
    // Requests that came in on no socket (handler tests) have no source to limit.
    let source = limits::peer(request).map(Source::of)?;
    let wait = state.limits.source(source).err()?;
    state.metrics.rate_limited.inc();
    state.refusals.count(Some(source), "rate_limited");
    Some(limits::too_many(wait).into_response())
}
