//! `/v1/users`: human principals and their credentials (admin only, except that every user may
//! rotate their own credential).

use aims_api::{AddUserRequest, UserCredential, UserList};
use aims_core::audit::{AuditEvent, action};
use aims_core::credential::CredentialKind;
use aims_core::id::UserName;
use aims_core::user::{Access, User};
use aims_store::StoreError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::{Allowed, Caller, ToAdminister};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Body, UserPath};
use crate::state::AppState;

fn user_event(state: &AppState, caller: &Caller, name: &str, user: &UserName) -> AuditEvent {
    caller.event(state, name).resource(format!("user:{user}"))
}

fn user_not_found(name: &UserName) -> ApiError {
    ApiError::not_found(ErrorCode::UserNotFound, format!("no user named {name}"))
}

/// `POST /v1/users`.
pub async fn add(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(req): Body<AddUserRequest>,
) -> Result<(StatusCode, Json<UserCredential>), ApiError> {
    let now = OffsetDateTime::now_utc();
    let user = User {
        name: req.name,
        role: req.role,
        created_at: now,
        credential_rotated_at: now,
    };
    let (token, hash) = state.new_credential(CredentialKind::Human)?;
    let event = user_event(&state, &caller, action::USER_ADD, &user.name)
        .details(json!({ "role": user.role }));
    match state.store.create_user(&user, &hash, &event).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(UserCredential { user, token }))),
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(
            ErrorCode::UserExists,
            format!("a user named {} exists", user.name),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/users`.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToAdminister>,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList {
        users: state.store.list_users().await?,
    }))
}

/// `DELETE /v1/users/{name}`.
pub async fn remove(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    UserPath(name): UserPath,
) -> Result<StatusCode, ApiError> {
    let event = user_event(&state, &caller, action::USER_REMOVE, &name);
    match state.store.remove_user(&name, &event).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound { .. }) => Err(user_not_found(&name)),
        Err(StoreError::Conflict { reason }) => {
            Err(ApiError::conflict(ErrorCode::LastAdmin, reason))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/users/{name}/rotate`: a new credential; the old one stops working at once.
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(name): UserPath,
) -> Result<Json<UserCredential>, ApiError> {
    if caller.user.name != name {
        caller.require(Access::Administer)?;
    }
    let now = OffsetDateTime::now_utc();
    let (token, hash) = state.new_credential(CredentialKind::Human)?;
    let event = user_event(&state, &caller, action::USER_ROTATE, &name);
    match state
        .store
        .rotate_user_credential(&name, &hash, now, &event)
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound { .. }) => return Err(user_not_found(&name)),
        Err(e) => return Err(e.into()),
    }
    let user = state
        .store
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| user_not_found(&name))?;
    Ok(Json(UserCredential { user, token }))
}
