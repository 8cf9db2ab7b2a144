//! The gateway in the path: a real AIMS server, a real upstream and `aims_gateway` between an
//! agent and it. Every call is authenticated (DPoP-bound task token for the gateway's
//! audience), decided by AIMS, and forwarded with the route's secret injected; the agent's
//! token and proof never reach the upstream.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aims_gateway::Config;
use aims_token::agent_key::AgentKey;
use aims_token::dpop;
use axum::http::HeaderMap;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use serde_json::json;

use crate::approvals::READ_WITH_APPROVAL;
use crate::kit::{Backend, Reply, TestServer, serve_on_loopback};
use crate::on_both_stores;
use crate::task_tokens::{AUDIENCE, Scene, access_token};

on_both_stores!(
    calls_through_the_gateway_are_decided_and_the_secret_injected,
    a_held_call_goes_through_once_a_human_approves_it,
    routes_by_host_inject_into_a_query_parameter_or_basic_auth,
);

/// The upstream credential the gateway injects.
const UPSTREAM_SECRET: &str = "ghp_upstream_only_7c1e";

/// Lets the planner read one repository.
const PLANNER_READS_APP: &str = r#"
@id("planner-reads-the-app-repository")
permit (
  principal,
  action == Aims::Action::"read",
  resource == Aims::Resource::"repo/acme/app"
)
when { principal.hasTag("role") && principal.getTag("role") == "planner" };
"#;

/// What the upstream saw of each call: method, path and headers.
type Seen = Arc<Mutex<Vec<(String, String, HeaderMap)>>>;

async fn upstream() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let sink = sink.clone();
        async move {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            sink.lock().unwrap().push((
                request.method().to_string(),
                path.clone(),
                request.headers().clone(),
            ));
            format!("upstream served {path}")
        }
    });
    (serve_on_loopback(app).await, seen)
}

fn gateway_config(aims: &str, upstream: &str) -> String {
    gateway_config_holding(aims, upstream, None)
}

/// [`gateway_config`], its route holding calls that need approval for `hold` seconds.
fn gateway_config_holding(aims: &str, upstream: &str, hold: Option<u64>) -> String {
    let hold = hold.map_or_else(String::new, |s| format!("hold_for_approval_s = {s}\n"));
    format!(
        r#"
version = 1
listen = "127.0.0.1:0"
aims_url = "{aims}"
audience = "{AUDIENCE}"
client_name = "repo-tools"
client_secret_file = "repo-tools.secret"
sighting_report_s = 1

[[route]]
name = "repositories"
path_prefix = "/repo/"
upstream = "{upstream}"
system = "github"
environment = "dev"
sensitivity = "internal"
resource_kind = "repository"
resource_id = "repo/acme/{{path}}"
inject = {{ secret = "github-token", header = "authorization", format = "token {{secret}}" }}
{hold}"#
    )
}

/// Stores secret `name` with `value`, readable by the gateway's resource server.
pub async fn store_secret(server: &TestServer, name: &str, value: &str) {
    let stored = server
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": name, "value": value, "readers": ["repo-tools"]})),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
}

/// A call through the gateway with the agent's DPoP-bound `token` and a fresh proof by `key`
/// (or the `proof` given).
async fn call(
    gateway: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    key: &AgentKey,
    proof: Option<&str>,
) -> Reply {
    let url = format!("{gateway}{path}");
    let mut request = reqwest::Client::new().request(method.clone(), &url);
    if let Some(token) = token {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let fresh = dpop::sign_proof(
            key,
            &SystemRandom::new(),
            method.as_str(),
            &url,
            Some(token),
            now,
        )
        .unwrap();
        request = request
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof.unwrap_or(&fresh));
    }
    TestServer::reply(request.send().await.unwrap()).await
}

/// The status line and the rest of the answer to `GET path`, sent byte for byte.
async fn raw_get(addr: &std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

async fn calls_through_the_gateway_are_decided_and_the_secret_injected(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    Scene::push_policies(
        server,
        &[
            ("gateway.cedar", PLANNER_READS_APP),
            ("approval.cedar", READ_WITH_APPROVAL),
        ],
    )
    .await;
    store_secret(server, "github-token", UPSTREAM_SECRET).await;
    let (upstream, seen) = upstream().await;
    let rs_secret = scene.rs_secret.clone();
    let config = Config::parse(&gateway_config(&server.base, &upstream), &|file: &Path| {
        assert_eq!(file, Path::new("repo-tools.secret"));
        Ok(rs_secret.clone())
    })
    .unwrap();
    let running = aims_gateway::start(config).await.unwrap();
    let gw = running.base_url.clone();
    // A client that never finishes its headers is cut off (checked while the rest runs).
    let slow = {
        let addr = running.addr;
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /repo/app HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            let mut rest = Vec::new();
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                stream.read_to_end(&mut rest),
            )
            .await
            .is_ok()
        })
    };
    let key = scene.planner.key.clone();
    let token = access_token(&scene.exchange("read:repo/acme/*").await);

    // Allowed: forwarded with the injected credential; the agent's token and proof stay here.
    let allowed = call(&gw, Method::GET, "/repo/app", Some(&token), &key, None).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    {
        let seen = seen.lock().unwrap();
        let (method, path, headers) = seen.last().unwrap();
        assert_eq!((method.as_str(), path.as_str()), ("GET", "/app"));
        assert_eq!(headers["authorization"], format!("token {UPSTREAM_SECRET}"));
        assert!(headers.get("dpop").is_none());
        for value in headers.values() {
            assert!(
                !value.to_str().unwrap_or("").contains(&token),
                "the agent's token was forwarded"
            );
        }
    }
    // Decided by AIMS, as the gateway's resource server, with the agent's token.
    let event = server.last_event("decision").await;
    assert!(format!("{:?}", event.actor).contains("repo-tools"));
    assert_eq!(event.decision.as_deref(), Some("allow"));
    assert_eq!(
        event.resource.as_deref(),
        Some("read Resource::repo/acme/app")
    );
    // The same question at /v1/decisions gets the same answer.
    let direct = scene.decide(&key, &token, "read", "repo/acme/app").await;
    assert_eq!(direct.body["decision"], "allow", "{}", direct.body);
    assert_eq!(
        direct.body["policies"],
        json!(["planner-reads-the-app-repository"])
    );
    // HTTP/2 (in the clear, by prior knowledge): the same call, the same answer.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("{gw}/repo/app");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let proof =
        dpop::sign_proof(&key, &SystemRandom::new(), "GET", &url, Some(&token), now).unwrap();
    let answer = h2
        .get(&url)
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "upstream served /app");
    let forwarded = seen.lock().unwrap().len();

    // Refused before the upstream: no token, a replayed proof, a proof for another URL,
    // a denied call, a call outside the token's scope, one that needs approval, paths that
    // leave their route, a path no route serves.
    let proof = dpop::sign_proof(
        &key,
        &SystemRandom::new(),
        "GET",
        &format!("{gw}/repo/app"),
        Some(&token),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    let first = call(
        &gw,
        Method::GET,
        "/repo/app",
        Some(&token),
        &key,
        Some(&proof),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    let forwarded = forwarded + 1;
    let other_url = dpop::sign_proof(
        &key,
        &SystemRandom::new(),
        "GET",
        &format!("{gw}/repo/other"),
        Some(&token),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    let refusals = [
        (
            call(&gw, Method::GET, "/repo/app", None, &key, None).await,
            StatusCode::UNAUTHORIZED,
            None,
        ),
        (
            call(
                &gw,
                Method::GET,
                "/repo/app",
                Some(&token),
                &key,
                Some(&proof),
            )
            .await,
            StatusCode::UNAUTHORIZED,
            None,
        ),
        (
            call(
                &gw,
                Method::GET,
                "/repo/app",
                Some(&token),
                &key,
                Some(&other_url),
            )
            .await,
            StatusCode::UNAUTHORIZED,
            None,
        ),
        (
            call(&gw, Method::GET, "/repo/other", Some(&token), &key, None).await,
            StatusCode::FORBIDDEN,
            Some("denied"),
        ),
        (
            call(&gw, Method::POST, "/repo/app", Some(&token), &key, None).await,
            StatusCode::FORBIDDEN,
            Some("denied"),
        ),
        (
            call(&gw, Method::GET, "/repo/vault", Some(&token), &key, None).await,
            StatusCode::FORBIDDEN,
            Some("approval_required"),
        ),
        (
            call(&gw, Method::GET, "/repo/a%2Fb", Some(&token), &key, None).await,
            StatusCode::BAD_REQUEST,
            Some("invalid_path"),
        ),
        (
            call(&gw, Method::GET, "/elsewhere", Some(&token), &key, None).await,
            StatusCode::NOT_FOUND,
            Some("no_route"),
        ),
    ];
    for (reply, status, code) in &refusals {
        assert_eq!(reply.status, *status, "{}", reply.body);
        if let Some(code) = code {
            assert_eq!(reply.code(), *code, "{}", reply.body);
        }
    }
    // An HTTP client normalizes `%2e%2e` away; a hostile one sends it as it is.
    for raw in ["/repo/%2e%2e/admin", "/repo/%2E%2e/x", "/repo/..%5cadmin"] {
        assert!(
            raw_get(&running.addr, raw)
                .await
                .starts_with("HTTP/1.1 400"),
            "{raw}"
        );
    }
    let approval = &refusals[5].0.body;
    assert!(approval["approval_id"].is_string(), "{approval}");
    assert!(
        approval["approval_url"]
            .as_str()
            .unwrap()
            .starts_with(&server.base)
    );
    assert!(refusals[0].0.headers.contains_key("www-authenticate"));
    assert_eq!(
        seen.lock().unwrap().len(),
        forwarded,
        "a refused call reached the upstream"
    );

    // A huge header is refused before any handler; the upstream saw neither.
    let huge = reqwest::Client::new()
        .get(format!("{gw}/repo/app"))
        .header("x-padding", "a".repeat(1024 * 1024))
        .send()
        .await;
    if let Ok(huge) = huge {
        assert_eq!(huge.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    assert!(
        slow.await.unwrap(),
        "the gateway kept a connection with unfinished headers open"
    );
    assert_eq!(seen.lock().unwrap().len(), forwarded);

    // The refused callers reach AIMS as counted sightings, not one record per request.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reported = loop {
        let listed = server.admin(Method::GET, "/v1/sightings", None).await;
        let calls: u64 = listed.body["sightings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["count"].as_u64().unwrap())
            .sum();
        if calls >= 3 {
            break listed;
        }
        assert!(std::time::Instant::now() < deadline, "{}", listed.body);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let first = &reported.body["sightings"][0];
    assert_eq!(first["reporter"], "repo-tools");
    assert_eq!(first["source"], "127.0.0.1");
    assert_eq!(first["route"], "repositories");
    assert!(server.count_events("sighting.report").await >= 1);

    // A reload puts new routes in force; what only a restart can change is refused.
    let reloaded = gateway_config(&server.base, &upstream).replace("/repo/", "/tools/");
    let secret = |_: &Path| Ok(scene.rs_secret.clone());
    assert_eq!(
        running.reload(Config::parse(&reloaded, &secret).unwrap()),
        Ok(1)
    );
    let moved = call(&gw, Method::GET, "/tools/app", Some(&token), &key, None).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let old = call(&gw, Method::GET, "/repo/app", Some(&token), &key, None).await;
    assert_eq!(old.code(), "no_route");
    let elsewhere = reloaded.replace(AUDIENCE, "https://other.acme.example");
    assert!(
        running
            .reload(Config::parse(&elsewhere, &secret).unwrap())
            .is_err()
    );
    let still = call(&gw, Method::GET, "/tools/app", Some(&token), &key, None).await;
    assert_eq!(still.status, StatusCode::OK, "{}", still.body);

    running.shutdown();
    running.wait().await.unwrap();
}

/// Two routes for the same path on hosts of their own, one putting the secret in a query
/// parameter, the other in HTTP Basic; a host that names no route and has no host-less route
/// is refused.
async fn routes_by_host_inject_into_a_query_parameter_or_basic_auth(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    Scene::push_policies(server, &[("gateway.cedar", PLANNER_READS_APP)]).await;
    store_secret(server, "github-token", "s3cr&t key").await;
    let (upstream, seen) = upstream().await;
    let route = |host: &str, inject: &str| {
        format!(
            r#"
[[route]]
name = "{host}"
host = "{host}"
path_prefix = "/repo/"
upstream = "{upstream}"
system = "github"
environment = "dev"
sensitivity = "internal"
resource_kind = "repository"
resource_id = "repo/acme/{{path}}"
inject = {{ secret = "github-token", {inject} }}
"#
        )
    };
    let config = format!(
        r#"
version = 1
listen = "127.0.0.1:0"
aims_url = "{}"
audience = "{AUDIENCE}"
client_name = "repo-tools"
client_secret_file = "repo-tools.secret"
{}{}"#,
        server.base,
        route("query.gateway.test", r#"query = "access_token""#),
        route("basic.gateway.test", r#"basic_user = "ci-bot""#),
    );
    let rs_secret = scene.rs_secret.clone();
    let config = Config::parse(&config, &|_: &Path| Ok(rs_secret.clone())).unwrap();
    let running = aims_gateway::start(config).await.unwrap();
    let port = running.addr.port();
    let key = scene.planner.key.clone();
    let token = access_token(&scene.exchange("read:repo/acme/*").await);
    // The agent calls `http://HOST:PORT/...` (its proof names that URL); the connection goes
    // to the gateway's address.
    let via = |host: &str, path_and_query: &str| {
        let url = format!("http://{host}:{port}{path_and_query}");
        let htu = url.split('?').next().unwrap().to_owned();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let proof =
            dpop::sign_proof(&key, &SystemRandom::new(), "GET", &htu, Some(&token), now).unwrap();
        reqwest::Client::builder()
            .resolve(host, running.addr)
            .build()
            .unwrap()
            .get(url)
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof)
    };
    let answer = via("query.gateway.test", "/repo/app?access_token=mine&ref=main")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer = via("basic.gateway.test", "/repo/app").send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    {
        let seen = seen.lock().unwrap();
        let (_, with_query, headers) = &seen[0];
        // The agent's own access_token parameter is replaced by the secret.
        assert_eq!(with_query, "/app?ref=main&access_token=s3cr%26t%20key");
        assert!(headers.get("authorization").is_none());
        let (_, plain, headers) = &seen[1];
        assert_eq!(plain, "/app");
        let basic = base64::engine::general_purpose::STANDARD.encode("ci-bot:s3cr&t key");
        assert_eq!(headers["authorization"], format!("Basic {basic}"));
    }
    // A host no route names, with no route for every other host: no route.
    let nowhere = via("other.gateway.test", "/repo/app").send().await.unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(seen.lock().unwrap().len(), 2);
    running.shutdown();
    running.wait().await.unwrap();
}

async fn a_held_call_goes_through_once_a_human_approves_it(backend: Backend) {
    let scene = Scene::start(backend).await;
    let server = &scene.server;
    Scene::push_policies(server, &[("approval.cedar", READ_WITH_APPROVAL)]).await;
    store_secret(server, "github-token", UPSTREAM_SECRET).await;
    let carol = server.add_user("carol", "approver").await;
    let (upstream, seen) = upstream().await;
    let rs_secret = scene.rs_secret.clone();
    let text = gateway_config_holding(&server.base, &upstream, Some(20));
    let config = Config::parse(&text, &|_: &Path| Ok(rs_secret.clone())).unwrap();
    let running = aims_gateway::start(config).await.unwrap();
    let gw = running.base_url.clone();
    let key = scene.planner.key.clone();
    let token = access_token(&scene.exchange("read:repo/acme/*").await);

    // The call waits in the gateway while carol approves it; then it reaches the upstream.
    let held = {
        let (gw, token, key) = (gw.clone(), token.clone(), key.clone());
        tokio::spawn(async move {
            call(&gw, Method::GET, "/repo/vault", Some(&token), &key, None).await
        })
    };
    let approval_id = approve_first_pending(server, &carol, "approve").await;
    let answered = held.await.unwrap();
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
    assert_eq!(seen.lock().unwrap().last().unwrap().1, "/vault");
    // The gateway may wait on the request it opened; another resource server may not.
    let other = server
        .admin(
            Method::POST,
            "/v1/resource-servers",
            Some(json!({"name": "other-tools", "audience": "https://other.acme.example", "system": "github"})),
        )
        .await;
    let other_secret = other.body["client_secret"].as_str().unwrap().to_owned();
    let as_server = |name: &str, secret: &str| {
        server.send(
            server
                .http
                .get(format!("{}/v1/approvals/{approval_id}", server.base))
                .basic_auth(name.to_owned(), Some(secret.to_owned())),
        )
    };
    let mine = as_server("repo-tools", &scene.rs_secret).await;
    assert_eq!(mine.body["state"], "used", "{}", mine.body);
    let theirs = as_server("other-tools", &other_secret).await;
    assert_eq!(theirs.code(), "approval_not_found");

    // The same call again needs a new approval; denied, the held call is refused.
    let forwarded = seen.lock().unwrap().len();
    let held = {
        let (gw, token, key) = (gw.clone(), token.clone(), key.clone());
        tokio::spawn(async move {
            call(&gw, Method::GET, "/repo/vault", Some(&token), &key, None).await
        })
    };
    let second = approve_first_pending(server, &carol, "deny").await;
    assert_ne!(second, approval_id);
    let refused = held.await.unwrap();
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "approval_required")
    );
    assert_eq!(refused.body["approval_id"], second.as_str());
    assert_eq!(seen.lock().unwrap().len(), forwarded);

    running.shutdown();
    running.wait().await.unwrap();
}

/// Answers (`verb`: approve or deny), as `approver`, the first pending request that shows up.
async fn approve_first_pending(server: &TestServer, approver: &str, verb: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed = server
            .call(Method::GET, "/v1/approvals", Some(approver), None)
            .await;
        if let Some(id) = listed.body["approvals"][0]["approval_id"].as_str() {
            let answered = server
                .call(
                    Method::POST,
                    &format!("/v1/approvals/{id}/{verb}"),
                    Some(approver),
                    Some(json!({"reason": "checked with the on-call lead"})),
                )
                .await;
            assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
            return id.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no approval request showed up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
