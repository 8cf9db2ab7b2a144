//! Every request's first steps: the path checked, its route found, the agent authenticated
//! (a refusal counted as a sighting), then the call handed to its route's kind — plain HTTP
//! ([`crate::proxy`]) or MCP ([`crate::mcp`]). The RFC 9728 metadata is answered here too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::config::{Route, RouteKind, route_for, routes_for_host};
use crate::mcp;
use crate::proxy::{Caller, Gateway, refuse};

/// The gateway's one handler, for every path.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gateway)
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
    let authority = authority(&request);
    let host = authority.as_ref().map(Authority::host);
    if let Some(resource) = path.strip_prefix(mcp::METADATA_PATH) {
        let visible: Vec<&Route> = routes_for_host(&routes, host).collect();
        return mcp::protected_resource_metadata(&gateway, &visible, request.method(), resource);
    }
    let Some(route) = route_for(&routes, host, &path) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route serves this path",
        );
    };
    let rest = path.get(route.path_prefix.len()..).unwrap_or_default();
    if route.kind == RouteKind::Mcp && !rest.is_empty() {
        // An MCP server has one endpoint: the route's prefix itself.
        return refuse(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route serves this path",
        );
    }
    // What the agent's proof names: the gateway's public URL, or for a route of its own
    // host, that host as the request named it (with the public URL's scheme).
    let base = match (&route.host, &authority) {
        (Some(_), Some(authority)) => {
            let scheme = gateway.public_url.split("://").next().unwrap_or("http");
            format!("{scheme}://{authority}")
        }
        _ => gateway.public_url.clone(),
    };
    let method = request.method().as_str().to_owned();
    let url = format!("{base}{path}");
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
            if route.kind == RouteKind::Mcp
                && let Ok(challenge) = HeaderValue::from_str(&mcp::challenge(&base, route))
            {
                response
                    .headers_mut()
                    .append(header::WWW_AUTHENTICATE, challenge);
            }
            if let Some(challenge) = refusal
                .www_authenticate()
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                response
                    .headers_mut()
                    .append(header::WWW_AUTHENTICATE, challenge);
            }
            return response;
        }
    };
    let token = presented_token(request.headers()).unwrap_or_default();
    let caller = Caller {
        agent: &claims.client_id,
        token: &token,
    };
    if route.kind == RouteKind::Mcp {
        return mcp::handle(&gateway, route, &caller, request).await;
    }
    crate::proxy::http_call(&gateway, route, &caller, request, rest).await
}

/// The authority the request names: its target's (HTTP/2, or an absolute URI), else its
/// `Host` header.
fn authority(request: &Request) -> Option<Authority> {
    request.uri().authority().cloned().or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse().ok())
    })
}

/// The token in `Authorization` (after its scheme).
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (_, token) = value.split_once(' ')?;
    Some(token.trim().to_owned())
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
