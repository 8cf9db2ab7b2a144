//! `/v1/secrets`: long-lived upstream credentials AIMS brokers so agents never hold them.
//! Admins store, rotate and delete them; admins and auditors see everything but the value.
//! Only the resource servers a secret names as readers (enforcement points such as the
//! gateway, with their client credential) read its current value, to inject into the calls
//! they forward. Values are sealed under the master key before they reach the store, and
//! appear in no log, no error and no audit event (those name the secret and version only).

use aims_api::secrets::{
    PutSecretRequest, RotateSecretRequest, SecretList, SecretValue, SecretView,
};
use aims_core::audit::{AuditEvent, action};
use aims_core::id::SecretName;
use aims_core::secret::{
    self, MAX_DESCRIPTION_LEN, MAX_READERS, MAX_ROTATION_PERIOD_S, Secret, is_valid_value,
};
use aims_store::StoreError;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::{Allowed, Caller, ToAdminister, ToRead, resource_server_caller};
use crate::error::{ApiError, ErrorCode, no_store};
use crate::extract::{Body, Path};
use crate::state::AppState;

/// `POST /v1/secrets`: stores a new secret (version 1).
pub async fn put(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(req): Body<PutSecretRequest>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    check_value(&req.value)?;
    if req.readers.is_empty() || req.readers.len() > MAX_READERS {
        return Err(invalid(format!(
            "readers names 1 to {MAX_READERS} resource servers"
        )));
    }
    for reader in &req.readers {
        if state.store.resource_server(reader).await?.is_none() {
            return Err(ApiError::bad_request(
                ErrorCode::ResourceServerNotFound,
                format!("no resource server named {reader}"),
            ));
        }
    }
    if req
        .rotation_period_s
        .is_some_and(|s| s == 0 || s > MAX_ROTATION_PERIOD_S)
    {
        return Err(invalid(format!(
            "rotation_period_s is 1 to {MAX_ROTATION_PERIOD_S}"
        )));
    }
    if req
        .description
        .as_deref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN || !aims_core::text::is_visible(d, false))
    {
        return Err(invalid(format!(
            "description is at most {MAX_DESCRIPTION_LEN} characters of visible text"
        )));
    }
    let now = OffsetDateTime::now_utc();
    let mut readers = req.readers;
    readers.sort();
    readers.dedup();
    let stored = Secret {
        name: req.name,
        version: 1,
        description: req.description,
        readers,
        rotation_period_s: req.rotation_period_s,
        created_by: caller.user.name.clone(),
        created_at: now,
        rotated_at: now,
    };
    let sealed = seal(&state, &stored, &req.value)?;
    let event = secret_event(&state, &caller, action::SECRET_PUT, &stored);
    match state.store.create_secret(&stored, &sealed, &event).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(SecretView::of(stored, now)))),
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(
            ErrorCode::SecretExists,
            "a secret of that name exists; rotate it instead",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/secrets`.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_, _): Allowed<ToRead>,
) -> Result<Json<SecretList>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let secrets = state
        .store
        .list_secrets(aims_store::MAX_PAGE)
        .await?
        .into_iter()
        .map(|s| SecretView::of(s, now))
        .collect();
    Ok(Json(SecretList { secrets }))
}

/// `GET /v1/secrets/{name}`: everything but the value.
pub async fn show(
    State(state): State<AppState>,
    Allowed(_, _): Allowed<ToRead>,
    Path(name): Path<String>,
) -> Result<Json<SecretView>, ApiError> {
    let name = secret_name(&name)?;
    let found = state.store.secret(&name).await?.ok_or_else(not_found)?;
    Ok(Json(SecretView::of(found, OffsetDateTime::now_utc())))
}

/// `POST /v1/secrets/{name}/rotate`: a new version becomes the current one.
pub async fn rotate(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Path(name): Path<String>,
    Body(req): Body<RotateSecretRequest>,
) -> Result<Json<SecretView>, ApiError> {
    let name = secret_name(&name)?;
    check_value(&req.value)?;
    let current = state.store.secret(&name).await?.ok_or_else(not_found)?;
    let now = OffsetDateTime::now_utc();
    let rotated = Secret {
        version: current.version.saturating_add(1),
        rotated_at: now,
        ..current
    };
    let sealed = seal(&state, &rotated, &req.value)?;
    let event = secret_event(&state, &caller, action::SECRET_ROTATE, &rotated);
    match state.store.rotate_secret(&rotated, &sealed, &event).await {
        Ok(()) => Ok(Json(SecretView::of(rotated, now))),
        Err(StoreError::NotFound { .. }) => Err(not_found()),
        Err(StoreError::Conflict { reason }) => {
            Err(ApiError::conflict(ErrorCode::Conflict, reason))
        }
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /v1/secrets/{name}`: the secret and every version of its value.
pub async fn delete(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = secret_name(&name)?;
    let event = caller
        .event(&state, action::SECRET_DELETE)
        .resource(format!("Secret::{name}"))
        .details(json!({ "name": name }));
    match state.store.delete_secret(&name, &event).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound { .. }) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/secrets/{name}/value`: the current value, for a resource server the secret names
/// as a reader (HTTP Basic with its client credential). Anyone else — an operator, an agent,
/// another resource server — learns nothing, not even whether the secret exists.
pub async fn value(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let reader = resource_server_caller(&state, &headers).await?;
    let name = secret_name(&name)?;
    let Some((found, sealed)) = state.store.secret_value(&name).await? else {
        return Err(not_found());
    };
    if !found.readable_by(&reader.name) {
        return Err(not_found());
    }
    let value = state
        .master()
        .open(
            secret::SEAL_PURPOSE,
            &secret::seal_id(&found.name, found.version),
            &sealed,
        )
        .map_err(|_| {
            tracing::error!(secret = %found.name, version = found.version, "a stored secret does not open under the master key");
            ApiError::internal()
        })?;
    let value =
        String::from_utf8(value.expose_secret().to_vec()).map_err(|_| ApiError::internal())?;
    let event = state
        .event(
            aims_core::audit::Actor::ResourceServer {
                name: reader.name.to_string(),
            },
            action::SECRET_READ,
            aims_core::audit::Outcome::Success,
        )
        .request(crate::auth::request_id(&headers))
        .resource(format!("Secret::{}", found.name))
        .details(json!({ "name": found.name, "version": found.version }));
    state.audit.record(event).await?;
    Ok(no_store(
        Json(SecretValue {
            name: found.name,
            version: found.version,
            value,
        })
        .into_response(),
    ))
}

/// The audit event of a stored or rotated secret: its name, version, readers and period,
/// never its value.
fn secret_event(state: &AppState, caller: &Caller, what: &str, stored: &Secret) -> AuditEvent {
    caller
        .event(state, what)
        .resource(format!("Secret::{}", stored.name))
        .details(json!({
            "name": stored.name,
            "version": stored.version,
            "readers": stored.readers,
            "rotation_period_s": stored.rotation_period_s,
        }))
}

/// `value` sealed for `stored`'s name and version.
fn seal(state: &AppState, stored: &Secret, value: &str) -> Result<Vec<u8>, ApiError> {
    state
        .master()
        .seal(
            &state.rng,
            secret::SEAL_PURPOSE,
            &secret::seal_id(&stored.name, stored.version),
            value.as_bytes(),
        )
        .map_err(|_| ApiError::internal())
}

fn check_value(value: &str) -> Result<(), ApiError> {
    if is_valid_value(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "value is 1 to {} bytes of text",
            secret::MAX_SECRET_LEN
        )))
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidSecret, message)
}

fn secret_name(raw: &str) -> Result<SecretName, ApiError> {
    SecretName::new(raw).map_err(|_| not_found())
}

fn not_found() -> ApiError {
    ApiError::not_found(ErrorCode::SecretNotFound, "no such secret")
}
