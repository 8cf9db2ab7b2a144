//! Public discovery documents: RFC 8414 authorization-server metadata, the JWKS (`use: "sig"`),
//! the SPIFFE trust bundle (`use: "jwt-svid"`) and the OpenAPI description of the API.
//!
//! Metadata lists only endpoints that exist (no authorization endpoint: agents use token
//! exchange and the JWT-bearer grant, never a browser redirect). There is no
//! `/.well-known/openid-configuration`: AIMS is not an OpenID provider (no ID tokens, no
//! userinfo), and an OIDC discovery document would promise both.

use aims_api::oauth::{
    GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, INTROSPECTION_PATH, JWKS_PATH, REVOCATION_PATH,
    TOKEN_PATH,
};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::AppState;

/// Path of the RFC 8414 metadata document.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// Path of the SPIFFE trust bundle.
pub const BUNDLE_PATH: &str = "/.well-known/spiffe-bundle";
/// Path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The OpenAPI 3.1 description of every route this server serves.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// `GET /.well-known/oauth-authorization-server`.
pub async fn metadata(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}{JWKS_PATH}", state.issuer),
        "spiffe_bundle_endpoint": format!("{}{BUNDLE_PATH}", state.issuer),
        "service_documentation": format!("{}{OPENAPI_PATH}", state.issuer),
        "token_endpoint": format!("{}{TOKEN_PATH}", state.issuer),
        // RFC 8414 §2 makes `response_types_supported` REQUIRED, even for a server without an
        // authorization endpoint, and §3.2 says a member with zero elements MUST be omitted —
        // so `[]` is no answer, and stock validators (Authlib's) refuse both. `none` is the
        // registered response type that issues nothing (OAuth 2.0 Multiple Response Type
        // Encoding Practices §4): the honest value for a server that hands out no code and no
        // token through an authorization endpoint. No `authorization_endpoint` is listed and
        // no grant type that would use one, so no client is led to send a request there.
        "response_types_supported": ["none"],
        "grant_types_supported": [GRANT_TOKEN_EXCHANGE, GRANT_JWT_BEARER],
        // The agent authenticates with the subject token and the DPoP proof of its key.
        "token_endpoint_auth_methods_supported": ["none"],
        "dpop_signing_alg_values_supported": aims_token::dpop::PROOF_ALGS
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        "introspection_endpoint": format!("{}{INTROSPECTION_PATH}", state.issuer),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "revocation_endpoint": format!("{}{REVOCATION_PATH}", state.issuer),
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
    }))
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let keys = state.keys();
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(aims_token::jwk::jwks(&keys.published)),
    )
}

/// `GET /.well-known/spiffe-bundle`.
pub async fn bundle(State(state): State<AppState>) -> impl IntoResponse {
    let keys = state.keys();
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(aims_token::jwk::spiffe_bundle(
            &keys.published,
            keys.sequence,
            state.config.bundle_refresh_hint.as_secs(),
        )),
    )
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
