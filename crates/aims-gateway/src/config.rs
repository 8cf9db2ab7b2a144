//! The gateway's configuration file (TOML, `version = 1`): where it listens, how it follows
//! AIMS as a registered resource server, and its routes. Unknown keys are refused and every
//! error is reported at once.
//!
//! ```toml
//! version = 1
//! listen = "127.0.0.1:8800"
//! aims_url = "https://aims.acme.example"
//! audience = "https://gateway.acme.example"     # the resource server's audience
//! client_name = "gateway"                       # its registered name
//! client_secret_file = "/etc/aims/gateway.secret"
//!
//! [[route]]
//! name = "repositories"
//! path_prefix = "/repo/"
//! upstream = "http://127.0.0.1:9000"
//! system = "github"
//! environment = "prod"
//! sensitivity = "internal"
//! resource_kind = "repository"
//! resource_id = "github/acme/{path}"           # {path}: the request path after the prefix
//! inject = { secret = "github-token", header = "authorization", format = "Bearer {secret}" }
//! hold_for_approval_s = 60                     # wait for a human instead of answering 403
//!
//! [[route]]
//! name = "legacy-api"
//! host = "legacy.acme.example"                 # only requests for this host (no port)
//! path_prefix = "/"
//! upstream = "https://legacy.internal.example"
//! system = "legacy"
//! environment = "prod"
//! sensitivity = "internal"
//! resource_kind = "api"
//! inject = { secret = "legacy-key", query = "api_key" }   # or basic_user = "NAME"
//!
//! [[route]]
//! kind = "mcp"                                 # an MCP server (streamable HTTP)
//! name = "github-mcp"
//! path_prefix = "/mcp/github/"                 # the MCP endpoint agents connect to
//! upstream = "http://127.0.0.1:9100/mcp"       # the MCP server's endpoint, exactly
//! system = "github"
//! environment = "prod"
//! sensitivity = "internal"
//! resource_id = "mcp/github/{tool}"            # {tool}: the tool a `tools/call` names
//! ```
//!
//! A route is `kind = "http"` (the default: the method and path are the call) or
//! `kind = "mcp"` (every `tools/call` is the call, see [`crate::mcp`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aims_core::id::{ResourceServerName, SecretName};
use axum::http::HeaderName;
use secrecy::SecretString;
use serde::Deserialize;

/// The action of every MCP tool call.
pub const CALL_TOOL: &str = "call_tool";
/// The one configuration format version this gateway reads.
pub const VERSION: u32 = 1;
/// The longest a call may be held for its approval, in seconds.
pub const MAX_HOLD_S: u64 = 300;
/// Most routes one gateway serves.
pub const MAX_ROUTES: usize = 256;

/// Request headers never forwarded upstream: hop-by-hop headers (RFC 9110 §7.6.1), the
/// agent's credential and proof, and `Host` (the upstream's is set).
pub const NEVER_FORWARDED: [&str; 11] = [
    "authorization",
    "dpop",
    "host",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why a configuration was refused: every problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid gateway configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// This gateway's public base URL, what agents' DPoP proofs name (default `http://LISTEN`).
    pub public_url: Option<String>,
    /// The AIMS server.
    pub aims_url: String,
    /// The issuer tokens name (default: `aims_url`).
    pub issuer: String,
    /// This gateway's audience URI (its resource-server registration).
    pub audience: String,
    /// Its registered resource-server name.
    pub client_name: ResourceServerName,
    /// Its client secret.
    pub client_secret: SecretString,
    /// How long an upstream may take to answer.
    pub upstream_timeout: Duration,
    /// How often refused callers are reported to AIMS as sightings.
    pub sighting_report: Duration,
    /// The routes, longest prefix first.
    pub routes: Vec<Route>,
}

/// One route: a path prefix, the upstream it leads to, and what its calls are for policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its name (for logs).
    pub name: String,
    /// The host it serves (lowercase, no port): requests naming it in `Host` (or the HTTP/2
    /// authority) see only the routes of that host; `None`: the routes for every other host.
    pub host: Option<String>,
    /// The path prefix it serves, `/…/`.
    pub path_prefix: String,
    /// The upstream base URL the rest of the path is appended to.
    pub upstream: String,
    /// The resource's Cedar type (`Resource` by default).
    pub resource_type: String,
    /// The resource id, with `{path}` standing for the request path after the prefix (HTTP
    /// routes) or `{tool}` for the tool a `tools/call` names (MCP routes).
    pub resource_id: String,
    /// The resource's `system`, `environment`, `sensitivity` and `kind` (`resource_kind`).
    pub system: String,
    /// See `system`.
    pub environment: String,
    /// See `system`.
    pub sensitivity: String,
    /// See `system`.
    pub resource_kind: String,
    /// What the route's calls are: plain HTTP requests or MCP messages.
    pub kind: RouteKind,
    /// The action of each HTTP method; unlisted ones: `GET`/`HEAD` → `read`, others `write`.
    pub actions: BTreeMap<String, String>,
    /// The secret injected into forwarded calls, if any.
    pub inject: Option<Inject>,
    /// How long a call that needs a human's approval is held open for it (then forwarded if
    /// approved); `None`: answered 403 `approval_required` at once.
    pub hold_for_approval: Option<Duration>,
}

/// What a route's calls are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Plain HTTP: each request is one call, its action from the method, its resource from
    /// the path.
    Http,
    /// MCP streamable HTTP: each `tools/call` is one call (`call_tool` on the tool), and
    /// `tools/list` shows only the tools the token could call.
    Mcp,
}

/// A secret put into every forwarded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inject {
    /// The secret.
    pub secret: SecretName,
    /// Where it goes.
    pub into: Placement,
}

/// Where an injected secret goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A header (replacing any the agent sent), its value `format` with `{secret}` standing
    /// for the secret.
    Header {
        /// The header.
        name: HeaderName,
        /// The value's template.
        format: String,
    },
    /// A query parameter (replacing any of that name the agent sent).
    Query {
        /// The parameter's name.
        name: String,
    },
    /// HTTP Basic authentication (`Authorization`), the secret as the password.
    Basic {
        /// The user name.
        user: String,
    },
}

impl Route {
    /// The scope a token needs to call anything on this route (for an MCP route's
    /// `WWW-Authenticate` challenge and protected-resource metadata): the route's action on
    /// every resource its template can name.
    pub fn scope(&self) -> String {
        let (placeholder, action) = match self.kind {
            RouteKind::Http => ("{path}", "read"),
            RouteKind::Mcp => ("{tool}", CALL_TOOL),
        };
        let stem = self
            .resource_id
            .split_once(placeholder)
            .map_or(self.resource_id.as_str(), |(stem, _)| stem);
        format!("{action}:{stem}*")
    }

    /// The action of `method` on this route.
    pub fn action(&self, method: &str) -> String {
        self.actions.get(method).cloned().unwrap_or_else(|| {
            if matches!(method, "GET" | "HEAD") {
                "read".to_owned()
            } else {
                "write".to_owned()
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    listen: String,
    #[serde(default)]
    public_url: Option<String>,
    aims_url: String,
    #[serde(default)]
    issuer: Option<String>,
    audience: String,
    client_name: String,
    client_secret_file: PathBuf,
    #[serde(default)]
    upstream_timeout_s: Option<u64>,
    #[serde(default)]
    sighting_report_s: Option<u64>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(default)]
    host: Option<String>,
    path_prefix: String,
    upstream: String,
    #[serde(default)]
    resource_type: Option<String>,
    #[serde(default)]
    resource_id: Option<String>,
    system: String,
    environment: String,
    sensitivity: String,
    #[serde(default)]
    resource_kind: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    actions: BTreeMap<String, String>,
    #[serde(default)]
    inject: Option<RawInject>,
    #[serde(default)]
    hold_for_approval_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInject {
    secret: String,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    basic_user: Option<String>,
}

impl RawInject {
    /// The validated injection, or what is wrong with it (field, problem).
    fn validate(self) -> Result<Inject, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let secret =
            SecretName::new(&self.secret).map_err(|e| errors.push(("secret", e.to_string())));
        let into = match (self.header, self.query, self.basic_user) {
            (Some(header), None, None) => {
                let name = HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
                    .ok()
                    .filter(|h| {
                        !NEVER_FORWARDED.contains(&h.as_str()) || h.as_str() == "authorization"
                    });
                let format = self.format.unwrap_or_else(|| "{secret}".to_owned());
                if !format.contains("{secret}") || format.chars().any(|c| c.is_control()) {
                    errors.push(("format", "a value with {secret}".to_owned()));
                }
                match name {
                    Some(name) => Some(Placement::Header { name, format }),
                    None => {
                        errors.push(("header", "a header name (not a hop-by-hop one)".to_owned()));
                        None
                    }
                }
            }
            (None, Some(name), None) if self.format.is_none() => {
                if is_label(&name) {
                    Some(Placement::Query { name })
                } else {
                    errors.push(("query", "1-64 characters of A-Z a-z 0-9 . - _".to_owned()));
                    None
                }
            }
            (None, None, Some(user)) if self.format.is_none() => {
                if is_label(&user) {
                    Some(Placement::Basic { user })
                } else {
                    errors.push((
                        "basic_user",
                        "1-64 characters of A-Z a-z 0-9 . - _".to_owned(),
                    ));
                    None
                }
            }
            _ => {
                errors.push((
                    "secret",
                    "one of header (with an optional format), query or basic_user".to_owned(),
                ));
                None
            }
        };
        match (secret, into) {
            (Ok(secret), Some(into)) if errors.is_empty() => Ok(Inject { secret, into }),
            _ => Err(errors),
        }
    }
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl Config {
    /// Reads and validates the file at `path`; the client secret from its own file.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &|file| {
            let file = if file.is_absolute() {
                file.to_owned()
            } else {
                base.join(file)
            };
            std::fs::read_to_string(&file)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("client_secret_file {}: {e}", file.display()))
        })
    }

    /// Validates `text`, reading the client secret with `read_secret`.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem.
    pub fn parse(
        text: &str,
        read_secret: &dyn Fn(&Path) -> Result<String, String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(vec![e.to_string()]))?;
        let mut errors = Vec::new();
        if raw.version != VERSION {
            errors.push(format!("version: this gateway reads version {VERSION}"));
        }
        let listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
            errors.push("listen: an address such as 127.0.0.1:8800".to_owned());
        });
        for (key, url) in [
            ("aims_url", Some(&raw.aims_url)),
            ("public_url", raw.public_url.as_ref()),
            ("issuer", raw.issuer.as_ref()),
        ] {
            if url.is_some_and(|u| !is_http_url(u)) {
                errors.push(format!("{key}: an http:// or https:// URL"));
            }
        }
        if raw.audience.is_empty() || raw.audience.chars().any(char::is_whitespace) {
            errors.push("audience: the gateway's registered audience URI".to_owned());
        }
        let client_name = ResourceServerName::new(&raw.client_name).map_err(|e| {
            errors.push(format!("client_name: {e}"));
        });
        let client_secret = read_secret(&raw.client_secret_file)
            .and_then(|s| {
                if s.is_empty() {
                    Err("client_secret_file: the file is empty".to_owned())
                } else {
                    Ok(SecretString::from(s))
                }
            })
            .map_err(|e| errors.push(e));
        let upstream_timeout_s = raw.upstream_timeout_s.unwrap_or(30);
        if !(1..=600).contains(&upstream_timeout_s) {
            errors.push("upstream_timeout_s: 1 to 600".to_owned());
        }
        let sighting_report_s = raw.sighting_report_s.unwrap_or(10);
        if !(1..=3600).contains(&sighting_report_s) {
            errors.push("sighting_report_s: 1 to 3600".to_owned());
        }
        if raw.route.is_empty() || raw.route.len() > MAX_ROUTES {
            errors.push(format!("route: 1 to {MAX_ROUTES} [[route]] tables"));
        }
        let mut names = BTreeSet::new();
        let mut prefixes = BTreeSet::new();
        let mut routes = Vec::new();
        for (i, r) in raw.route.into_iter().enumerate() {
            let at = |field: &str| format!("route[{i}] ({}).{field}", r.name);
            if !is_label(&r.name) || !names.insert(r.name.clone()) {
                errors.push(format!(
                    "{}: a unique name of A-Z a-z 0-9 . - _",
                    at("name")
                ));
            }
            let prefix_ok = r.path_prefix.starts_with('/')
                && r.path_prefix.ends_with('/')
                && !r.path_prefix.contains("/../")
                && !r.path_prefix.contains("/./")
                && !r.path_prefix.contains('%')
                && r.path_prefix.is_ascii();
            let host = r.host.as_deref().map(str::to_ascii_lowercase);
            if host.as_deref().is_some_and(|h| !is_host_name(h)) {
                errors.push(format!(
                    "{}: a host name such as api.acme.example (no port)",
                    at("host")
                ));
            }
            if !prefix_ok || !prefixes.insert((host.clone(), r.path_prefix.clone())) {
                errors.push(format!(
                    "{}: a path such as /repo/ (starts and ends with /), unique for its host",
                    at("path_prefix")
                ));
            }
            if !is_http_url(&r.upstream) || r.upstream.ends_with('/') {
                errors.push(format!(
                    "{}: an http(s) URL without a trailing slash",
                    at("upstream")
                ));
            }
            let kind = match r.kind.as_deref() {
                None | Some("http") => RouteKind::Http,
                Some("mcp") => RouteKind::Mcp,
                Some(_) => {
                    errors.push(format!(
                        "{}: http or mcp (the resource's kind attribute is resource_kind)",
                        at("kind")
                    ));
                    RouteKind::Http
                }
            };
            let resource_kind = r.resource_kind.unwrap_or_else(|| match kind {
                RouteKind::Mcp => "tool".to_owned(),
                RouteKind::Http => String::new(),
            });
            for (field, value) in [
                ("system", &r.system),
                ("environment", &r.environment),
                ("sensitivity", &r.sensitivity),
                ("resource_kind", &resource_kind),
            ] {
                if !is_label(value) {
                    errors.push(format!(
                        "{}: 1-64 characters of A-Z a-z 0-9 . - _",
                        at(field)
                    ));
                }
            }
            let (default_type, placeholder) = match kind {
                RouteKind::Http => ("Resource", "{path}"),
                RouteKind::Mcp => ("Tool", "{tool}"),
            };
            let resource_type = r.resource_type.unwrap_or_else(|| default_type.to_owned());
            if !["Resource", "Tool", "Secret"].contains(&resource_type.as_str()) {
                errors.push(format!("{}: Resource, Tool or Secret", at("resource_type")));
            }
            let resource_id = r.resource_id.unwrap_or_else(|| placeholder.to_owned());
            if resource_id.matches(placeholder).count() != 1 || resource_id.len() > 256 {
                errors.push(format!(
                    "{}: a template with {placeholder} once",
                    at("resource_id")
                ));
            }
            if kind == RouteKind::Mcp && !r.actions.is_empty() {
                errors.push(format!(
                    "{}: an MCP route's calls are always {}",
                    at("actions"),
                    CALL_TOOL
                ));
            }
            for (method, action) in &r.actions {
                if method.is_empty()
                    || !method.bytes().all(|b| b.is_ascii_uppercase())
                    || !is_label(action)
                {
                    errors.push(format!("{}: METHOD = \"action\"", at("actions")));
                }
            }
            let inject = match r.inject.map(RawInject::validate) {
                None => None,
                Some(Ok(inject)) => Some(inject),
                Some(Err(problems)) => {
                    for (field, problem) in problems {
                        errors.push(format!("{}: {problem}", at(&format!("inject.{field}"))));
                    }
                    None
                }
            };
            if r.hold_for_approval_s
                .is_some_and(|s| !(1..=MAX_HOLD_S).contains(&s))
            {
                errors.push(format!("{}: 1 to {MAX_HOLD_S}", at("hold_for_approval_s")));
            }
            routes.push(Route {
                name: r.name,
                host,
                path_prefix: r.path_prefix,
                upstream: r.upstream,
                resource_type,
                resource_id,
                system: r.system,
                environment: r.environment,
                sensitivity: r.sensitivity,
                resource_kind,
                kind,
                actions: r.actions,
                inject,
                hold_for_approval: r.hold_for_approval_s.map(Duration::from_secs),
            });
        }
        match (listen, client_name, client_secret) {
            (Ok(listen), Ok(client_name), Ok(client_secret)) if errors.is_empty() => {
                routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
                Ok(Self {
                    listen,
                    public_url: raw.public_url,
                    issuer: raw.issuer.unwrap_or_else(|| raw.aims_url.clone()),
                    aims_url: raw.aims_url,
                    audience: raw.audience,
                    client_name,
                    client_secret,
                    upstream_timeout: Duration::from_secs(upstream_timeout_s),
                    sighting_report: Duration::from_secs(sighting_report_s),
                    routes,
                })
            }
            _ => Err(ConfigError(errors)),
        }
    }

    /// The route serving `path` on `host`: see [`route_for`].
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        route_for(&self.routes, host, path)
    }
}

/// The routes a request for `host` (without its port) may take: those of that host if some
/// route names it, the routes without a host otherwise (as virtual hosts select a server).
pub fn routes_for_host<'a>(
    routes: &'a [Route],
    host: Option<&str>,
) -> impl Iterator<Item = &'a Route> {
    let host = host.map(str::to_ascii_lowercase);
    let named = routes.iter().any(|r| r.host.is_some() && r.host == host);
    let wanted = if named { host } else { None };
    routes.iter().filter(move |r| r.host == wanted)
}

/// The route of `routes` (longest prefix first) serving `path` on `host`: the longest
/// matching prefix among [`routes_for_host`].
pub fn route_for<'a>(routes: &'a [Route], host: Option<&str>, path: &str) -> Option<&'a Route> {
    routes_for_host(routes, host).find(|r| path.starts_with(&r.path_prefix))
}

/// Whether `host` is a DNS name (or an IPv4 address): dot-separated labels of `a-z 0-9 -`.
fn is_host_name(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = 1
listen = "127.0.0.1:0"
aims_url = "http://127.0.0.1:8700"
audience = "https://gateway.acme.example"
client_name = "gateway"
client_secret_file = "gateway.secret"

[[route]]
name = "repo"
path_prefix = "/repo/"
upstream = "http://127.0.0.1:9000"
system = "github"
environment = "prod"
sensitivity = "internal"
resource_kind = "repository"
resource_id = "github/acme/{path}"
actions = { DELETE = "delete" }
inject = { secret = "github-token", header = "Authorization", format = "Bearer {secret}" }

[[route]]
name = "repo-admin"
path_prefix = "/repo/admin/"
upstream = "http://127.0.0.1:9001"
system = "github"
environment = "prod"
sensitivity = "confidential"
resource_kind = "settings"

[[route]]
kind = "mcp"
name = "github-mcp"
path_prefix = "/mcp/github/"
upstream = "http://127.0.0.1:9100/mcp"
system = "github"
environment = "prod"
sensitivity = "internal"
resource_id = "mcp/github/{tool}"
"#;

    fn secret(_: &Path) -> Result<String, String> {
        Ok("aims_r_x".to_owned())
    }

    #[test]
    fn a_good_file_loads_and_routes_by_longest_prefix() {
        let config = Config::parse(GOOD, &secret).unwrap();
        assert_eq!(config.issuer, "http://127.0.0.1:8700");
        assert_eq!(
            config.route(None, "/repo/admin/x").unwrap().name,
            "repo-admin"
        );
        let repo = config.route(None, "/repo/app").unwrap();
        assert_eq!(repo.name, "repo");
        assert_eq!(repo.action("GET"), "read");
        assert_eq!(repo.action("POST"), "write");
        assert_eq!(repo.action("DELETE"), "delete");
        assert!(matches!(
            &repo.inject.as_ref().unwrap().into,
            Placement::Header { name, .. } if name == "authorization"
        ));
        assert!(config.route(None, "/other").is_none());
        assert_eq!(repo.kind, RouteKind::Http);
        assert_eq!(repo.scope(), "read:github/acme/*");
        let mcp = config.route(None, "/mcp/github/").unwrap();
        assert_eq!(mcp.kind, RouteKind::Mcp);
        assert_eq!(
            (mcp.resource_type.as_str(), mcp.resource_kind.as_str()),
            ("Tool", "tool")
        );
        assert_eq!(mcp.scope(), "call_tool:mcp/github/*");
    }

    #[test]
    fn a_route_with_a_host_serves_only_that_host() {
        let with_host = format!(
            "{GOOD}\n[[route]]\nname = \"vhost\"\nhost = \"API.acme.example\"\npath_prefix = \"/repo/\"\n\
             upstream = \"http://127.0.0.1:9002\"\nsystem = \"github\"\nenvironment = \"prod\"\n\
             sensitivity = \"internal\"\nresource_kind = \"repository\"\n"
        );
        let config = Config::parse(&with_host, &secret).unwrap();
        let name = |host, path| config.route(host, path).map(|r| r.name.as_str());
        assert_eq!(name(Some("api.ACME.example"), "/repo/x"), Some("vhost"));
        // The host names routes: the host-less ones are not its.
        assert_eq!(
            name(Some("api.acme.example"), "/repo/admin/x"),
            Some("vhost")
        );
        assert_eq!(name(Some("api.acme.example"), "/mcp/github/"), None);
        assert_eq!(
            name(Some("other.example"), "/repo/admin/x"),
            Some("repo-admin")
        );
        assert_eq!(name(None, "/repo/x"), Some("repo"));
        // A host with a port, or twice the same host and prefix, is refused.
        let bad = with_host.replace("API.acme.example", "api.acme.example:443");
        assert!(
            Config::parse(&bad, &secret)
                .unwrap_err()
                .to_string()
                .contains("host")
        );
        let twice = format!(
            "{with_host}\n[[route]]\nname = \"vhost2\"\nhost = \"api.acme.example\"\npath_prefix = \"/repo/\"\n\
             upstream = \"http://127.0.0.1:9003\"\nsystem = \"github\"\nenvironment = \"prod\"\n\
             sensitivity = \"internal\"\nresource_kind = \"repository\"\n"
        );
        assert!(
            Config::parse(&twice, &secret)
                .unwrap_err()
                .to_string()
                .contains("unique for its host")
        );
    }

    #[test]
    fn secrets_go_into_a_header_a_query_parameter_or_basic_auth() {
        let inject = |spec: &str| {
            let text = GOOD.replace(
                r#"inject = { secret = "github-token", header = "Authorization", format = "Bearer {secret}" }"#,
                &format!("inject = {{ secret = \"github-token\", {spec} }}"),
            );
            Config::parse(&text, &secret).map(|c| {
                c.route(None, "/repo/x")
                    .unwrap()
                    .inject
                    .clone()
                    .unwrap()
                    .into
            })
        };
        assert_eq!(
            inject(r#"query = "api_key""#).unwrap(),
            Placement::Query {
                name: "api_key".into()
            }
        );
        assert_eq!(
            inject(r#"basic_user = "ci""#).unwrap(),
            Placement::Basic { user: "ci".into() }
        );
        for bad in [
            r#"query = "api_key", header = "x-key""#,
            r#"basic_user = "ci", format = "{secret}""#,
            r#"query = "a b""#,
            r#"header = "connection""#,
        ] {
            assert!(inject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mcp_routes_name_tools_and_take_no_method_actions() {
        let bad = GOOD
            .replace(
                "resource_id = \"mcp/github/{tool}\"",
                "resource_id = \"mcp/{path}\"",
            )
            .replace(
                "upstream = \"http://127.0.0.1:9100/mcp\"",
                "upstream = \"http://127.0.0.1:9100/mcp\"\nactions = { POST = \"write\" }",
            );
        let err = Config::parse(&bad, &secret).unwrap_err().to_string();
        assert!(err.contains("{tool} once"), "{err}");
        assert!(err.contains("always call_tool"), "{err}");
        // The resource's kind attribute is resource_kind: a `kind` naming it is refused.
        let old = GOOD.replace("resource_kind = \"settings\"", "kind = \"settings\"");
        let err = Config::parse(&old, &secret).unwrap_err().to_string();
        assert!(err.contains("kind: http or mcp"), "{err}");
    }

    #[test]
    fn the_documented_example_loads() {
        let example = include_str!("../gateway.example.toml");
        let config = Config::parse(example, &|file| {
            assert_eq!(file, Path::new("gateway.secret"));
            Ok("aims_r_x".to_owned())
        })
        .unwrap();
        assert_eq!(config.routes.len(), 2);
        assert_eq!(
            config.route(None, "/repo/app").unwrap().action("DELETE"),
            "delete"
        );
    }

    #[test]
    fn every_error_is_reported_at_once_and_unknown_keys_are_refused() {
        let bad = GOOD
            .replace("version = 1", "version = 2")
            .replace("127.0.0.1:0", "nowhere")
            .replace("\"/repo/\"", "\"repo\"")
            .replace("format = \"Bearer {secret}\"", "format = \"Bearer\"");
        let err = Config::parse(&bad, &secret).unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        let unknown = GOOD.replace(
            "resource_kind = \"repository\"",
            "resource_kind = \"repository\"\nstrip_auth = false",
        );
        assert!(
            Config::parse(&unknown, &secret)
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
        let no_secret = Config::parse(GOOD, &|_| {
            Err("client_secret_file gateway.secret: missing".into())
        });
        assert!(
            no_secret
                .unwrap_err()
                .to_string()
                .contains("client_secret_file")
        );
    }
}
