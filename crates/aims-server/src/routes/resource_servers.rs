//! `/v1/resource-servers`: the tool servers and enforcement points task tokens are issued for.
//! Registering one returns its client secret once; it authenticates with it (HTTP Basic) to
//! introspect tokens and follow the revocation feed.

use aims_api::oauth::{
    RegisterResourceServerRequest, ResourceServerList, ResourceServerRegistered, ResourceServerView,
};
use aims_core::audit::action;
use aims_core::credential::CredentialKind;
use aims_core::id::{Environment, ResourceServerName};
use aims_store::{ResourceServer, StoreError};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::{Allowed, ToAdminister, ToRead};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Body, Path};
use crate::state::AppState;

/// Longest audience URI.
const MAX_AUDIENCE: usize = 512;

fn view(server: ResourceServer) -> ResourceServerView {
    ResourceServerView {
        name: server.name,
        audience: server.audience,
        system: server.system,
        environment: server.environment,
        sensitivity: server.sensitivity,
        created_by: server.created_by,
        created_at: server.created_at,
    }
}

fn label_is_valid(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn parse_name(name: &str) -> Result<ResourceServerName, ApiError> {
    ResourceServerName::new(name)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidName, e.to_string()))
}

/// `POST /v1/resource-servers`.
pub async fn register(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(req): Body<RegisterResourceServerRequest>,
) -> Result<(StatusCode, Json<ResourceServerRegistered>), ApiError> {
    let audience_ok = req.audience.len() <= MAX_AUDIENCE
        && (req.audience.starts_with("https://")
            || req.audience.starts_with("http://")
            || req.audience.starts_with("spiffe://"))
        && !req
            .audience
            .chars()
            .any(|c| c.is_control() || c.is_whitespace());
    if !audience_ok {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidAudience,
            "audience must be an http(s) or spiffe URI of at most 512 characters",
        ));
    }
    let sensitivity = req.sensitivity.unwrap_or_else(|| "internal".to_owned());
    if !label_is_valid(&req.system) || !label_is_valid(&sensitivity) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "system and sensitivity are 1-64 characters of A-Z a-z 0-9 . - _",
        ));
    }
    let environment = match req.environment {
        Some(environment) => environment,
        None => Environment::new("dev").map_err(|_| ApiError::internal())?,
    };
    let server = ResourceServer {
        name: req.name,
        audience: req.audience,
        system: req.system,
        environment,
        sensitivity,
        created_by: caller.user.name.to_string(),
        created_at: OffsetDateTime::now_utc(),
    };
    let (secret, hash) = state.new_credential(CredentialKind::ResourceServer)?;
    let event = caller
        .event(&state, action::RESOURCE_SERVER_ADD)
        .resource(format!("resource_server:{}", server.name))
        .details(json!({ "audience": server.audience, "system": server.system }));
    match state
        .store
        .create_resource_server(&server, &hash, &event)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::conflict(
                ErrorCode::ResourceServerExists,
                "a resource server with this name or audience exists",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    Ok((
        StatusCode::CREATED,
        Json(ResourceServerRegistered {
            resource_server: view(server),
            client_secret: secret,
        }),
    ))
}

/// `GET /v1/resource-servers`.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
) -> Result<Json<ResourceServerList>, ApiError> {
    let servers = state.store.list_resource_servers().await?;
    Ok(Json(ResourceServerList {
        resource_servers: servers.into_iter().map(view).collect(),
    }))
}

/// `GET /v1/resource-servers/{name}`.
pub async fn show(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
    Path(name): Path<String>,
) -> Result<Json<ResourceServerView>, ApiError> {
    let name = parse_name(&name)?;
    let server = state.store.resource_server(&name).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::ResourceServerNotFound,
            format!("no resource server {name}"),
        )
    })?;
    Ok(Json(view(server)))
}

/// `DELETE /v1/resource-servers/{name}`: tokens already issued for it simply expire.
pub async fn remove(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    let event = caller
        .event(&state, action::RESOURCE_SERVER_REMOVE)
        .resource(format!("resource_server:{name}"));
    let removed = state.store.remove_resource_server(&name, &event).await;
    // Also after an error: the removal may have committed.
    state.resource_servers.forget_all();
    match removed {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound { .. }) => Err(ApiError::not_found(
            ErrorCode::ResourceServerNotFound,
            format!("no resource server {name}"),
        )),
        Err(e) => Err(e.into()),
    }
}
