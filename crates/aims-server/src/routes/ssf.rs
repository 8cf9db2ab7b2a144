//! The Shared Signals endpoints: the transmitter metadata (`/.well-known/ssf-configuration`),
//! stream management (`/ssf/streams`, SSF 1.0 §8.1.1: create, read, update, replace,
//! delete), stream status (`/ssf/status`, §8.1.2: read and set), verification
//! (`/ssf/verify`, §8.1.4) and poll delivery (`POST /ssf/poll/{stream_id}`, RFC 8936).
//!
//! Receivers authenticate like at introspection: a registered resource server with HTTP
//! Basic (its stream's `aud` is its audience), or an operator with its bearer credential
//! (`aud` is `urn:aims:user:<name>`; creating and deleting need the admin role). A receiver
//! sees, polls and changes only its own streams; anyone else's answer 404 like a stream that
//! does not exist. Creating, changing or deleting a stream, setting its status and asking for
//! a verification event are state changes committed with their audit events; every poll is
//! audited as a read; refusals are audited by the audit layer.
//!
//! Inputs follow the standards loosely where they say so (unknown members of a new stream and
//! unknown event types are ignored) and are otherwise bounded and checked before anything is
//! written. Updates, status changes and verification requests refuse members they do not
//! define (`unknown_member`): a misspelt property must not pass for a change made, and
//! transmitter-supplied properties sent back must be the transmitter's values
//! (`transmitter_mismatch`), as SSF 1.0 §8.1.1.3 says.

use std::collections::BTreeMap;
use std::time::Duration;

use aims_core::audit::{Actor, Outcome, action};
use aims_core::text::is_printable_within;
use aims_core::user::Access;
use aims_store::{SsfDelivery, SsfReceiver, SsfStatus, SsfStream, StoreError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{ServiceCaller, service_caller};
use crate::error::{ApiError, ErrorCode, no_store};
use crate::extract::{Path, RawBody};
use crate::signals;
use crate::state::AppState;

/// Most event types a receiver may name.
const MAX_EVENTS_REQUESTED: usize = 32;
/// Longest event type URI.
const MAX_EVENT_URI: usize = 256;
/// Longest stream description.
const MAX_DESCRIPTION: usize = 256;
/// Longest push endpoint URL.
const MAX_ENDPOINT_URL: usize = 512;
/// Longest `Authorization` header a push stream sends.
const MAX_AUTHORIZATION: usize = 1024;
/// Longest status reason.
const MAX_STATUS_REASON: usize = 256;
/// Longest verification `state`.
const MAX_VERIFICATION_STATE: usize = 512;
/// Longest stream id this server issues (22) with room to spare; longer ones do not exist.
const MAX_STREAM_ID: usize = 64;
/// SETs per poll when the receiver does not say.
const DEFAULT_POLL_EVENTS: u32 = 100;
/// Most SETs per poll, whatever the receiver asks.
const MAX_POLL_EVENTS: u32 = 500;
/// Most acknowledgements plus errors in one poll.
const MAX_ACKS: usize = 1000;
/// Longest error code and description a receiver reports for a SET.
const MAX_ERR: usize = 64;
const MAX_ERR_DESCRIPTION: usize = 256;
/// Longest a long poll waits for an event.
const LONG_POLL: Duration = Duration::from_secs(25);
/// How much of the request timeout a long poll leaves for answering.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(5);

/// `GET /.well-known/ssf-configuration`.
pub async fn configuration(State(state): State<AppState>) -> Json<Value> {
    Json(signals::configuration(&state.issuer))
}

/// 401 asking for receiver credentials.
fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidClient,
        "authenticate as a resource server (HTTP Basic) or an operator (Bearer)",
    )
    .with_challenge("Basic realm=\"aims\"".to_owned())
}

fn stream_not_found() -> ApiError {
    ApiError::not_found(
        ErrorCode::StreamNotFound,
        "no such stream for this receiver",
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidRequest, message)
}

/// The authenticated receiver: a resource server (Basic) or an operator who may read
/// (Bearer).
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<ServiceCaller, ApiError> {
    match service_caller(state, headers).await {
        Ok(Some(caller)) => Ok(caller),
        Ok(None) => Err(unauthenticated()),
        Err(refusal) => Err(match refusal.status {
            StatusCode::UNAUTHORIZED => unauthenticated(),
            StatusCode::SERVICE_UNAVAILABLE => {
                ApiError::from_store(StoreError::Unavailable("while authenticating".into()))
            }
            _ => ApiError::internal(),
        }),
    }
}

/// The stream owner a caller is.
fn receiver_of(caller: &ServiceCaller) -> SsfReceiver {
    match caller {
        ServiceCaller::ResourceServer(rs) => SsfReceiver::ResourceServer(rs.name.clone()),
        ServiceCaller::Operator(user) => SsfReceiver::User(user.name.clone()),
    }
}

/// The `aud` of the caller's streams.
fn audience_of(caller: &ServiceCaller) -> String {
    match caller {
        ServiceCaller::ResourceServer(rs) => rs.audience.clone(),
        ServiceCaller::Operator(user) => format!("urn:aims:user:{}", user.name),
    }
}

/// Refuses operators whose role may not change state (resource servers manage their own
/// streams).
fn require_change(caller: &ServiceCaller) -> Result<(), ApiError> {
    match caller {
        ServiceCaller::Operator(user) if !user.role.allows(Access::Administer) => Err(
            ApiError::forbidden(format!("role {} may not manage streams", user.role)),
        ),
        _ => Ok(()),
    }
}

/// Runs `handler` for an authenticated receiver and names the caller on the response, so
/// the audit layer attributes its reads and refusals.
async fn as_receiver<F, Fut>(state: AppState, headers: HeaderMap, handler: F) -> Response
where
    F: FnOnce(AppState, HeaderMap, ServiceCaller) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let caller = match authenticate(&state, &headers).await {
        Ok(caller) => caller,
        Err(refused) => return no_store(refused.into_response()),
    };
    let actor: Actor = caller.actor();
    let mut response = match handler(state, headers, caller).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    };
    response.extensions_mut().insert(actor);
    no_store(response)
}

/// A stream id this server could have issued: base64url, bounded.
fn stream_id_is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STREAM_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The caller's stream `id`; anyone else's is not found.
async fn owned_stream(
    state: &AppState,
    caller: &ServiceCaller,
    id: &str,
) -> Result<SsfStream, ApiError> {
    if !stream_id_is_valid(id) {
        return Err(stream_not_found());
    }
    match state.store.ssf_stream(id).await? {
        Some(stream) if stream.receiver == receiver_of(caller) => Ok(stream),
        _ => Err(stream_not_found()),
    }
}

/// The `stream_id` query parameter; no other parameter is accepted.
fn stream_id_param(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut stream_id = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name != "stream_id" {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "the only query parameter is stream_id",
            ));
        }
        if stream_id.replace(value.into_owned()).is_some() {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "stream_id is given twice",
            ));
        }
    }
    Ok(stream_id)
}

/// The required `stream_id` query parameter.
fn required_stream_id(query: Option<&str>) -> Result<String, ApiError> {
    stream_id_param(query)?.ok_or_else(|| invalid("stream_id is required"))
}

/// A JSON object body; unknown members are ignored, as SSF and RFC 8936 receivers expect.
/// Anything but an object is refused (serde would otherwise read an array such as
/// `[null, null]` as the fields in order).
fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request(ErrorCode::InvalidJson, "the body is not valid JSON"))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.to_string()))
}

/// The body of a create-stream request (SSF §8.1.1.1).
#[derive(Debug, Default, Deserialize)]
struct CreateStream {
    #[serde(default)]
    delivery: Option<DeliveryRequest>,
    #[serde(default)]
    events_requested: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

/// The receiver-supplied delivery configuration.
#[derive(Debug, Deserialize)]
struct DeliveryRequest {
    method: String,
    #[serde(default)]
    endpoint_url: Option<String>,
    #[serde(default)]
    authorization_header: Option<String>,
}

/// A push endpoint: an absolute http(s) URL with a host, no credentials, no fragment, and
/// (unless private networks are allowed) not an address or name of the server's own network.
fn check_endpoint_url(url: &str, private_networks: bool) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(
            ErrorCode::InvalidEndpointUrl,
            "endpoint_url must be an http or https URL of at most 512 characters with a host, \
             without credentials or fragment",
        )
    };
    if url.len() > MAX_ENDPOINT_URL {
        return Err(bad());
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    let ok = matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some_and(|h| !h.is_empty())
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.fragment().is_none();
    if !ok {
        return Err(bad());
    }
    if !crate::outbound::push_target_allowed(&parsed, private_networks) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidEndpointUrl,
            "endpoint_url must reach a public address (loopback, private and link-local \
             addresses are refused unless ssf_push_private_networks is set)",
        ));
    }
    Ok(())
}

/// The event types to deliver for `requested`: every supported one when the receiver names
/// none; otherwise the supported ones it names (others are ignored, SSF §8.1.1), at least one.
fn events_delivered(requested: Option<&[String]>) -> Result<Vec<String>, ApiError> {
    let Some(requested) = requested else {
        return Ok(signals::EVENTS_SUPPORTED.map(str::to_owned).to_vec());
    };
    if requested.is_empty() || requested.len() > MAX_EVENTS_REQUESTED {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidEvents,
            "events_requested lists 1 to 32 event type URIs",
        ));
    }
    if requested.iter().any(|e| {
        e.len() > MAX_EVENT_URI
            || e.is_empty()
            || !e.contains(':')
            || e.chars().any(|c| c.is_control() || c.is_whitespace())
    }) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidEvents,
            "each requested event type is a URI of at most 256 characters",
        ));
    }
    let delivered: Vec<String> = signals::EVENTS_SUPPORTED
        .iter()
        .filter(|supported| requested.iter().any(|r| r == *supported))
        .map(|e| (*e).to_owned())
        .collect();
    if delivered.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::UnsupportedEvents,
            format!(
                "none of the requested event types is supported; supported: {}",
                signals::EVENTS_SUPPORTED.join(", ")
            ),
        ));
    }
    Ok(delivered)
}

/// `POST /ssf/streams`: creates a stream for the caller (201 with its configuration).
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    as_receiver(state, headers, |state, headers, caller| async move {
        require_change(&caller)?;
        let req: CreateStream = json_body(&body)?;
        let events_delivered = events_delivered(req.events_requested.as_deref())?;
        if let Some(description) = &req.description
            && !is_printable_within(description, MAX_DESCRIPTION)
        {
            return Err(invalid(
                "description is 1 to 256 characters without control characters",
            ));
        }
        let id = aims_token::random_id(&state.rng).map_err(|_| ApiError::internal())?;
        let delivery = delivery_of(&state, req.delivery, &id, None)?;
        let stream = SsfStream {
            id: id.clone(),
            receiver: receiver_of(&caller),
            audience: audience_of(&caller),
            delivery,
            events_requested: req.events_requested.unwrap_or_default(),
            events_delivered,
            description: req.description,
            created_at: OffsetDateTime::now_utc(),
            acked_through: 0,
            status: SsfStatus::Enabled,
            status_reason: None,
        };
        let event = state
            .event(
                caller.actor(),
                signals::ACTION_STREAM_CREATE,
                Outcome::Success,
            )
            .request(crate::auth::request_id(&headers))
            .resource(format!("ssf_stream:{id}"))
            .details(created_details(&stream));
        let stored = match state.store.create_ssf_stream(&stream, &event).await {
            Ok(stored) => stored,
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::conflict(
                    ErrorCode::TooManyStreams,
                    format!(
                        "a receiver holds at most {} streams; delete one first",
                        aims_store::MAX_SSF_STREAMS_PER_RECEIVER
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        Ok((
            StatusCode::CREATED,
            Json(signals::stream_view(&state.issuer, &stored)),
        )
            .into_response())
    })
    .await
}

/// The delivery a stream asks for: poll (also when none is named) or push to a checked
/// endpoint, its `Authorization` value sealed under the stream's id. A poll delivery may
/// name the endpoint only as `poll_url`, the transmitter's own value for an existing stream
/// (a configuration read, changed and sent back carries it).
fn delivery_of(
    state: &AppState,
    requested: Option<DeliveryRequest>,
    id: &str,
    poll_url: Option<&str>,
) -> Result<SsfDelivery, ApiError> {
    match requested {
        // No delivery means poll (SSF §8.1.1.1).
        None => Ok(SsfDelivery::Poll),
        Some(d) if d.method == signals::DELIVERY_POLL => {
            let url_ok = d
                .endpoint_url
                .as_deref()
                .is_none_or(|url| poll_url == Some(url));
            if !url_ok || d.authorization_header.is_some() {
                return Err(invalid(
                    "a poll stream's endpoint_url is chosen by the transmitter",
                ));
            }
            Ok(SsfDelivery::Poll)
        }
        Some(d) if d.method == signals::DELIVERY_PUSH => {
            let endpoint_url = d
                .endpoint_url
                .ok_or_else(|| invalid("a push stream needs delivery.endpoint_url"))?;
            check_endpoint_url(&endpoint_url, state.config.ssf_push_private_networks)?;
            let sealed_authorization = d
                .authorization_header
                .map(|value| sealed_push_authorization(state, &value, id))
                .transpose()?;
            Ok(SsfDelivery::Push {
                endpoint_url,
                sealed_authorization,
            })
        }
        Some(_) => Err(ApiError::bad_request(
            ErrorCode::UnsupportedDeliveryMethod,
            format!(
                "delivery.method is {} (poll) or {} (push)",
                signals::DELIVERY_POLL,
                signals::DELIVERY_PUSH
            ),
        )),
    }
}

/// The `Authorization` value a push stream sends, checked and sealed under the stream's id.
fn sealed_push_authorization(state: &AppState, value: &str, id: &str) -> Result<Vec<u8>, ApiError> {
    let usable = value.len() <= MAX_AUTHORIZATION
        && !value.trim().is_empty()
        && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if !usable {
        return Err(invalid(
            "authorization_header is 1 to 1024 printable ASCII characters",
        ));
    }
    state
        .master()
        .seal(
            &state.rng,
            signals::SEAL_PURPOSE_PUSH_AUTHORIZATION,
            id,
            value.as_bytes(),
        )
        .map_err(|_| ApiError::internal())
}

/// What the audit record of a new stream says about it.
fn created_details(stream: &SsfStream) -> serde_json::Value {
    let endpoint = match &stream.delivery {
        SsfDelivery::Poll => None,
        SsfDelivery::Push { endpoint_url, .. } => Some(endpoint_url.clone()),
    };
    json!({
        "aud": stream.audience,
        "method": if endpoint.is_some() { signals::DELIVERY_PUSH } else { signals::DELIVERY_POLL },
        "endpoint_url": endpoint,
        "events_delivered": stream.events_delivered,
    })
}

/// `GET /ssf/streams[?stream_id=]`: one of the caller's streams, or all of them (a list,
/// empty when there is none).
pub async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    as_receiver(state, headers, |state, _, caller| async move {
        match stream_id_param(query.as_deref())? {
            Some(id) => {
                let stream = owned_stream(&state, &caller, &id).await?;
                Ok(Json(signals::stream_view(&state.issuer, &stream)).into_response())
            }
            None => {
                let streams = state
                    .store
                    .list_ssf_streams(Some(&receiver_of(&caller)), "", aims_store::MAX_PAGE)
                    .await?;
                let views: Vec<Value> = streams
                    .iter()
                    .map(|s| signals::stream_view(&state.issuer, s))
                    .collect();
                Ok(Json(views).into_response())
            }
        }
    })
    .await
}

/// `DELETE /ssf/streams?stream_id=`: 204.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    as_receiver(state, headers, |state, headers, caller| async move {
        require_change(&caller)?;
        let id = required_stream_id(query.as_deref())?;
        let stream = owned_stream(&state, &caller, &id).await?;
        let event = state
            .event(
                caller.actor(),
                signals::ACTION_STREAM_DELETE,
                Outcome::Success,
            )
            .request(crate::auth::request_id(&headers))
            .resource(format!("ssf_stream:{}", stream.id));
        match state.store.delete_ssf_stream(&stream.id, &event).await {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(StoreError::NotFound { .. }) => Err(stream_not_found()),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// The stream's status as SSF 1.0 §8.1.2.1 shows it.
fn status_view(stream: &SsfStream) -> Value {
    let mut view = json!({ "stream_id": stream.id, "status": stream.status.as_str() });
    if let (Some(reason), Value::Object(fields)) = (&stream.status_reason, &mut view) {
        fields.insert("reason".into(), json!(reason));
    }
    view
}

/// `GET /ssf/status?stream_id=`: the stream's status and the reason given for it.
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    as_receiver(state, headers, |state, _, caller| async move {
        let id = required_stream_id(query.as_deref())?;
        let stream = owned_stream(&state, &caller, &id).await?;
        Ok(Json(status_view(&stream)).into_response())
    })
    .await
}

/// A JSON object body whose members are all among `allowed` (SSF's own, for the endpoints
/// that change a stream): anything else is refused with `unknown_member`.
fn strict_object(body: &Bytes, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request(ErrorCode::InvalidJson, "the body is not valid JSON"))?;
    let Value::Object(members) = value else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "the body must be a JSON object",
        ));
    };
    if let Some(unknown) = members.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            ErrorCode::UnknownMember,
            format!(
                "{unknown:.64} is not a member of this request; the members are {}",
                allowed.join(", ")
            ),
        ));
    }
    Ok(members)
}

/// The required `stream_id` member of a body.
fn body_stream_id(members: &Map<String, Value>) -> Result<String, ApiError> {
    match members.get("stream_id") {
        Some(Value::String(id)) => Ok(id.clone()),
        Some(_) => Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "stream_id is a string",
        )),
        None => Err(invalid("stream_id is required")),
    }
}

/// Member `name` decoded as a `T`, if present; `null` is no value.
fn member<T: DeserializeOwned>(
    members: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match members.get(name) {
        None => Ok(None),
        Some(Value::Null) => Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("{name} is null; leave it out instead"),
        )),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, format!("{name}: {e}"))),
    }
}

/// The body of a status update (SSF 1.0 §8.1.2.2).
const STATUS_MEMBERS: [&str; 3] = ["stream_id", "status", "reason"];

/// `POST /ssf/status`: sets the stream's status (`enabled`, `paused` or `disabled`) and the
/// reason; answers the status as stored.
pub async fn update_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    as_receiver(state, headers, |state, headers, caller| async move {
        require_change(&caller)?;
        let members = strict_object(&body, &STATUS_MEMBERS)?;
        let id = body_stream_id(&members)?;
        let status =
            member::<String>(&members, "status")?.ok_or_else(|| invalid("status is required"))?;
        let status = SsfStatus::parse(&status).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidStatus,
                "status is enabled, paused or disabled",
            )
        })?;
        let reason = member::<String>(&members, "reason")?;
        if let Some(reason) = &reason
            && !is_printable_within(reason, MAX_STATUS_REASON)
        {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidReason,
                "reason is 1 to 256 characters without control characters",
            ));
        }
        let stream = owned_stream(&state, &caller, &id).await?;
        let event = state
            .event(
                caller.actor(),
                signals::ACTION_STREAM_STATUS,
                Outcome::Success,
            )
            .request(crate::auth::request_id(&headers))
            .resource(format!("ssf_stream:{}", stream.id))
            .details(json!({ "from": stream.status.as_str(), "to": status.as_str() }));
        let stored = match state
            .store
            .set_ssf_status(&stream.id, status, reason.as_deref(), &event)
            .await
        {
            Ok(stored) => stored,
            Err(StoreError::NotFound { .. }) => return Err(stream_not_found()),
            Err(e) => return Err(e.into()),
        };
        Ok(Json(status_view(&stored)).into_response())
    })
    .await
}

/// The body of a verification request (SSF 1.0 §8.1.4.2).
const VERIFY_MEMBERS: [&str; 2] = ["stream_id", "state"];

/// `POST /ssf/verify`: queues a verification event carrying the receiver's `state` on the
/// stream; 204. Delivered like every event, by poll or push, once the stream is enabled.
pub async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    as_receiver(state, headers, |state, headers, caller| async move {
        require_change(&caller)?;
        let members = strict_object(&body, &VERIFY_MEMBERS)?;
        let id = body_stream_id(&members)?;
        let verification_state = member::<String>(&members, "state")?;
        if let Some(value) = &verification_state
            && !is_printable_within(value, MAX_VERIFICATION_STATE)
        {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidState,
                "state is 1 to 512 characters without control characters",
            ));
        }
        let stream = owned_stream(&state, &caller, &id).await?;
        if stream.status == SsfStatus::Disabled {
            // A disabled stream holds nothing for later (SSF 1.0 §8.1.2.1): the event would
            // never be delivered, so it is not promised.
            return Err(ApiError::bad_request(
                ErrorCode::StreamDisabled,
                "the stream is disabled; enable it first",
            ));
        }
        let event = state
            .event(
                caller.actor(),
                signals::ACTION_STREAM_VERIFY,
                Outcome::Success,
            )
            .request(crate::auth::request_id(&headers))
            .resource(format!("ssf_stream:{}", stream.id));
        match state
            .store
            .queue_ssf_verification(
                &stream.id,
                verification_state.as_deref(),
                OffsetDateTime::now_utc(),
                &event,
            )
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotFound { .. }) => return Err(stream_not_found()),
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyVerifications,
                    format!(
                        "at most {} verification events wait on a stream; poll or wait for \
                         delivery first",
                        aims_store::MAX_SSF_VERIFICATIONS_PENDING
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        // Wakes this replica's long poll or push worker; no one listening is fine.
        let _ = state.ssf_queued.send(stream.id);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// The members a stream configuration sent back may have: `stream_id`, the
/// receiver-supplied ones (changed) and the transmitter-supplied ones (checked).
const CONFIG_MEMBERS: [&str; 10] = [
    "stream_id",
    "delivery",
    "events_requested",
    "description",
    "iss",
    "aud",
    "events_supported",
    "events_delivered",
    "min_verification_interval",
    "inactivity_timeout",
];

/// Whether `value` lists the same strings as `expected`, in any order.
fn same_set(value: &Value, expected: &[String]) -> bool {
    let Some(items) = value.as_array() else {
        return false;
    };
    let mut given: Vec<&str> = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str() {
            Some(text) => given.push(text),
            None => return false,
        }
    }
    let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    given.sort_unstable();
    given.dedup();
    expected.sort_unstable();
    expected.dedup();
    given == expected
}

/// Refuses transmitter-supplied members that are not this stream's values (SSF 1.0
/// §8.1.1.3): checked against the stream before any change.
fn check_transmitter_members(
    issuer: &str,
    stream: &SsfStream,
    members: &Map<String, Value>,
) -> Result<(), ApiError> {
    let mismatch = |name: &str| {
        ApiError::bad_request(
            ErrorCode::TransmitterMismatch,
            format!("{name} is set by the transmitter and is not this stream's value"),
        )
    };
    if let Some(iss) = members.get("iss")
        && iss.as_str() != Some(issuer)
    {
        return Err(mismatch("iss"));
    }
    if let Some(aud) = members.get("aud") {
        let matches = match aud {
            Value::String(one) => one == &stream.audience,
            list => same_set(list, std::slice::from_ref(&stream.audience)),
        };
        if !matches {
            return Err(mismatch("aud"));
        }
    }
    let supported: Vec<String> = signals::EVENTS_SUPPORTED.map(str::to_owned).to_vec();
    if let Some(events) = members.get("events_supported")
        && !same_set(events, &supported)
    {
        return Err(mismatch("events_supported"));
    }
    if let Some(events) = members.get("events_delivered")
        && !same_set(events, &stream.events_delivered)
    {
        return Err(mismatch("events_delivered"));
    }
    // This transmitter sets neither: any value is not its value.
    for name in ["min_verification_interval", "inactivity_timeout"] {
        if members.contains_key(name) {
            return Err(mismatch(name));
        }
    }
    Ok(())
}

/// How a configuration request changes the receiver-supplied properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// `PATCH`: the members given change, the others stay.
    Update,
    /// `PUT`: the members given are the whole configuration; missing ones are removed.
    Replace,
}

/// `PATCH /ssf/streams`: changes the receiver-supplied properties given (SSF 1.0 §8.1.1.3).
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    change(state, headers, body, Change::Update).await
}

/// `PUT /ssf/streams`: replaces the receiver-supplied properties (SSF 1.0 §8.1.1.4).
pub async fn replace(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    change(state, headers, body, Change::Replace).await
}

/// Updates or replaces a stream's configuration; answers it whole, as stored.
async fn change(state: AppState, headers: HeaderMap, body: Bytes, how: Change) -> Response {
    as_receiver(state, headers, |state, headers, caller| async move {
        require_change(&caller)?;
        let members = strict_object(&body, &CONFIG_MEMBERS)?;
        let id = body_stream_id(&members)?;
        let requested = member::<Vec<String>>(&members, "events_requested")?;
        let description = member::<String>(&members, "description")?;
        let delivery = member::<DeliveryRequest>(&members, "delivery")?;
        if let Some(description) = &description
            && !is_printable_within(description, MAX_DESCRIPTION)
        {
            return Err(invalid(
                "description is 1 to 256 characters without control characters",
            ));
        }
        let stream = owned_stream(&state, &caller, &id).await?;
        check_transmitter_members(&state.issuer, &stream, &members)?;
        let mut changed = stream.clone();
        if how == Change::Replace || requested.is_some() {
            changed.events_delivered = events_delivered(requested.as_deref())?;
            changed.events_requested = requested.unwrap_or_default();
        }
        if how == Change::Replace || description.is_some() {
            changed.description = description;
        }
        if how == Change::Replace || delivery.is_some() {
            let poll_url = signals::poll_endpoint(&state.issuer, &stream.id);
            changed.delivery = delivery_of(&state, delivery, &stream.id, Some(&poll_url))?;
        }
        if changed == stream {
            // Nothing to change: the configuration as it is, with nothing written.
            return Ok(Json(signals::stream_view(&state.issuer, &stream)).into_response());
        }
        let mut details = created_details(&changed);
        if let Value::Object(fields) = &mut details {
            fields.insert(
                "change".into(),
                json!(if how == Change::Replace {
                    "replace"
                } else {
                    "update"
                }),
            );
        }
        let event = state
            .event(
                caller.actor(),
                signals::ACTION_STREAM_UPDATE,
                Outcome::Success,
            )
            .request(crate::auth::request_id(&headers))
            .resource(format!("ssf_stream:{}", stream.id))
            .details(details);
        let stored = match state.store.update_ssf_stream(&changed, &event).await {
            Ok(stored) => stored,
            Err(StoreError::NotFound { .. }) => return Err(stream_not_found()),
            Err(e) => return Err(e.into()),
        };
        Ok(Json(signals::stream_view(&state.issuer, &stored)).into_response())
    })
    .await
}

/// The body of a poll request (RFC 8936 §2.2).
#[derive(Debug, Default, Deserialize)]
struct PollRequest {
    #[serde(rename = "maxEvents", default)]
    max_events: Option<u64>,
    #[serde(rename = "returnImmediately", default)]
    return_immediately: bool,
    #[serde(default)]
    ack: Vec<String>,
    #[serde(rename = "setErrs", default)]
    set_errs: BTreeMap<String, SetError>,
}

/// A receiver's report that it could not process a SET (RFC 8935 §2.3).
#[derive(Debug, Deserialize)]
struct SetError {
    err: String,
    #[serde(default)]
    description: Option<String>,
}

/// `POST /ssf/poll/{stream_id}`: acknowledges what the receiver has, then answers the SETs
/// it has not acknowledged (long-polling up to 25 s for one unless `returnImmediately`).
pub async fn poll(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
    RawBody(body): RawBody,
) -> Response {
    as_receiver(state, headers, |state, headers, caller| async move {
        let stream = owned_stream(&state, &caller, &stream_id).await?;
        if !matches!(stream.delivery, SsfDelivery::Poll) {
            return Err(invalid("this stream is delivered by push, not polled"));
        }
        let req: PollRequest = json_body(&body)?;
        if req.ack.len().saturating_add(req.set_errs.len()) > MAX_ACKS {
            return Err(invalid("at most 1000 acknowledgements and errors per poll"));
        }
        let errors = acknowledge(&state, &stream, &req).await?;
        let max = req.max_events.map_or(DEFAULT_POLL_EVENTS, |n| {
            u32::try_from(n).unwrap_or(u32::MAX).min(MAX_POLL_EVENTS)
        });
        let (batch, more) = next_batch(&state, &stream, max, req.return_immediately).await?;
        let mut sets = Map::new();
        for due in &batch {
            let (jti, set) = signals::sign_set(&state, &stream, due).map_err(|error| {
                tracing::error!(%error, "cannot sign a SET");
                ApiError::internal()
            })?;
            sets.insert(jti, Value::String(set));
        }
        let event = state
            .event(caller.actor(), action::READ, Outcome::Success)
            .request(crate::auth::request_id(&headers))
            .resource(format!("POST {}/{}", signals::POLL_PATH, stream.id))
            .details(json!({
                "sets": sets.len(),
                "acknowledged": req.ack.len(),
                "set_errors": errors,
            }));
        state.audit.record(event).await?;
        Ok(Json(json!({ "sets": sets, "moreAvailable": more })).into_response())
    })
    .await
}

/// Applies a poll's acknowledgements and SET errors (both end a SET's delivery); the errors by
/// SET id, for the audit log.
async fn acknowledge(
    state: &AppState,
    stream: &SsfStream,
    req: &PollRequest,
) -> Result<Map<String, Value>, ApiError> {
    let position = |jti: &str| {
        signals::parse_jti(&stream.id, jti)
            .ok_or_else(|| invalid(format!("{jti:.80} is not a SET of this stream")))
    };
    let mut seqs = req
        .ack
        .iter()
        .map(|jti| position(jti))
        .collect::<Result<Vec<signals::SetRef>, ApiError>>()?;
    let mut errors = Map::new();
    for (jti, error) in &req.set_errs {
        seqs.push(position(jti)?);
        let description_ok = error
            .description
            .as_deref()
            .is_none_or(|d| d.is_empty() || is_printable_within(d, MAX_ERR_DESCRIPTION));
        if !is_printable_within(&error.err, MAX_ERR) || !description_ok {
            return Err(invalid(
                "each setErrs entry has an err of at most 64 and a description of at most \
                 256 printable characters",
            ));
        }
        // A SET the receiver could not process is not sent again: it would fail the same
        // way. The error is logged and audited.
        tracing::warn!(stream = %stream.id, %jti, err = %error.err, "an SSF receiver reported a SET error");
        errors.insert(jti.clone(), json!(error.err));
    }
    signals::acknowledge(state.store.as_ref(), &stream.id, &seqs).await?;
    Ok(errors)
}

/// The next SETs due on `stream` (at most `max`) and whether more wait; unless told to
/// return at once, waits for one (long poll) until the request's time is nearly spent.
async fn next_batch(
    state: &AppState,
    stream: &SsfStream,
    max: u32,
    return_immediately: bool,
) -> Result<(Vec<signals::Due>, bool), ApiError> {
    let wait = LONG_POLL.min(
        state
            .config
            .request_timeout
            .saturating_sub(LONG_POLL_MARGIN),
    );
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before looking, so a revocation applied or a verification queued in
    // between still wakes us.
    let mut live = state.revocations.subscribe();
    let mut queued = state.ssf_queued.subscribe();
    let mut stream = stream.clone();
    loop {
        let (batch, more) = signals::due(state.store.as_ref(), &stream, max).await?;
        if !batch.is_empty() || return_immediately || max == 0 {
            return Ok((batch, more));
        }
        let woken = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = live.recv() => !matches!(r, Err(RecvError::Closed)),
                r = queued.recv() => !matches!(r, Err(RecvError::Closed)),
            }
        })
        .await;
        if !matches!(woken, Ok(true)) {
            return Ok((batch, more));
        }
        // The status may have changed meanwhile (a paused stream enabled again).
        match state.store.ssf_stream(&stream.id).await? {
            Some(now) => stream = now,
            None => return Ok((Vec::new(), false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_absolute_http_without_credentials() {
        for good in [
            "https://receiver.example/events",
            "http://203.0.114.1:8080/ssf",
        ] {
            assert!(check_endpoint_url(good, false).is_ok(), "{good}");
        }
        assert!(check_endpoint_url("http://127.0.0.1:8080/ssf", false).is_err());
        assert!(check_endpoint_url("http://127.0.0.1:8080/ssf", true).is_ok());
        for bad in [
            "ftp://receiver.example/events",
            "https://user:pw@receiver.example/",
            "https://receiver.example/#frag",
            "/relative",
            "file:///etc/passwd",
            "",
            &format!("https://receiver.example/{}", "a".repeat(600)),
        ] {
            assert!(check_endpoint_url(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn requested_events_narrow_to_supported_ones() {
        assert_eq!(
            events_delivered(None).unwrap(),
            signals::EVENTS_SUPPORTED.map(str::to_owned)
        );
        let requested = vec![
            signals::SESSION_REVOKED.to_owned(),
            "urn:example:secevent:unknown".to_owned(),
        ];
        assert_eq!(
            events_delivered(Some(&requested)).unwrap(),
            [signals::SESSION_REVOKED]
        );
        for bad in [
            vec![],
            vec!["urn:example:only-unknown".to_owned()],
            vec!["not a uri".to_owned()],
            vec!["x".repeat(300)],
            vec![signals::SESSION_REVOKED.to_owned(); 33],
        ] {
            assert!(events_delivered(Some(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_stream_id_is_a_query_parameter() {
        assert_eq!(stream_id_param(None).unwrap(), None);
        assert_eq!(
            stream_id_param(Some("stream_id=abc")).unwrap().as_deref(),
            Some("abc")
        );
        assert!(stream_id_param(Some("stream_id=a&stream_id=b")).is_err());
        assert!(stream_id_param(Some("other=1")).is_err());
        assert!(required_stream_id(Some("")).is_err());
    }
}
