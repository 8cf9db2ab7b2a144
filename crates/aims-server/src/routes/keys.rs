//! `/v1/keys`: the trust domain's signing keys (public facts only) and their rotation.

use aims_api::{KeyList, KeyView};
use aims_core::audit::action;
use aims_store::KeyState;
use axum::Json;
use axum::extract::State;
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::{Allowed, ToAdminister, ToRead};
use crate::error::ApiError;
use crate::keyring::generate_stored_key;
use crate::state::AppState;

async fn key_list(state: &AppState) -> Result<KeyList, ApiError> {
    let set = state.store.keys().await?;
    let mut stored = set.keys;
    // Publication order first (next, current, previous), then retired keys, newest first.
    stored.sort_by_key(|k| {
        let rank = [
            KeyState::Next,
            KeyState::Current,
            KeyState::Previous,
            KeyState::Retired,
        ]
        .iter()
        .position(|s| *s == k.state);
        (rank, std::cmp::Reverse(k.created_at))
    });
    let keys = stored
        .into_iter()
        .map(|k| KeyView {
            kid: k.kid,
            alg: k.alg,
            state: k.state.as_str().to_owned(),
            created_at: k.created_at,
        })
        .collect();
    Ok(KeyList {
        sequence: set.sequence,
        keys,
    })
}

/// `GET /v1/keys`.
pub async fn list(
    State(state): State<AppState>,
    Allowed(_caller, _): Allowed<ToRead>,
) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(key_list(&state).await?))
}

/// `POST /v1/keys/rotate`: next becomes current, current becomes previous, previous retires,
/// and a new next key is generated. Tokens signed by the previous key keep verifying.
pub async fn rotate(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<ToAdminister>,
) -> Result<Json<KeyList>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let new_next =
        generate_stored_key(state.master(), &state.rng, KeyState::Next, now).map_err(|e| {
            tracing::error!(error = %e, "key generation failed");
            ApiError::internal()
        })?;
    let event = caller.event(&state, action::KEY_ROTATE).details(
        json!({ "new_next_kid": new_next.kid, "previous_current_kid": state.keys().current.kid() }),
    );
    state.store.rotate_keys(&new_next, &event).await?;
    state.reload_keys().await?;
    Ok(Json(key_list(&state).await?))
}
