//! What the gateway adds to a small request, beside a plain reverse proxy in the same run.
//!
//! One loopback upstream answers a fixed small body. Three paths reach it: directly (the
//! floor), through nginx (`proxy_pass`, keep-alive to the upstream; skipped with a note when
//! `nginx` is not installed: `apt-get install nginx-light`), and through `aims_gateway` with a
//! real AIMS server (SQLite) deciding every call — the agent presents a DPoP-bound task token
//! with a fresh proof per request, the gateway verifies it, asks AIMS through AuthZEN (the
//! decision audited before it answers), injects the route's secret and forwards. Rounds
//! alternate the three paths, so noise on this shared machine falls on all of them.
//!
//! Each round also times the durability floor on the same disk: a 200-byte append and its
//! `fdatasync` in the data directory. Every call through the gateway waits for at least one
//! such sync (its decision's audit record is committed before the decision is answered), so no
//! gateway call can add less than this to a request.
//!
//! The throughput phases also count the CPU every participant spent per call (this process —
//! callers, upstream, gateway, AIMS — and nginx's processes, from each thread's
//! `/proc/…/schedstat`), and the bench times the one check the gateway cannot skip on any call:
//! the agent's token (already verified, so from the cache) and its fresh DPoP proof (an ES256
//! signature), in this process on one core. Together they say how much CPU a gateway call may
//! add for its throughput to reach a given share of nginx's on the same cores.
//!
//! ```text
//! cargo bench -p aims-gateway --bench gateway_proxy
//! ```

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aims_sdk::attest::{Attestor, Credential};
use aims_sdk::oauth::ExchangeRequest;
use aims_sdk::{AdminClient, TokenClient};
use aims_server::config::{Config as ServerConfig, Overrides};
use aims_store::SqliteStore;
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use ring::rand::SystemRandom;
use serde_json::json;

const ADMIN: &str = "aims-bench-bootstrap-credential-0123456789abcdef";
const AUDIENCE: &str = "https://gateway.bench.example";
const ROUNDS: usize = 5;
const PER_ROUND: usize = 100;
const CONCURRENT_TASKS: usize = 16;
const CONCURRENT_EACH: usize = 25;

const PLANNER_READS: &str = r#"
@id("planner-reads-through-the-gateway")
permit (principal, action == Aims::Action::"read", resource == Aims::Resource::"repo/acme/app")
when { principal.hasTag("role") && principal.getTag("role") == "planner" };
"#;

fn policies() -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut files: BTreeMap<String, String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "cedar" || e == "cedarschema")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.insert("bench.cedar".into(), PLANNER_READS.into());
    files
}

/// Starts nginx proxying `listen` to `upstream`, if nginx is installed.
fn nginx(dir: &Path, upstream: &str) -> Option<(std::process::Child, String)> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = upstream.trim_start_matches("http://");
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {log} warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {tmp};\n proxy_temp_path {tmp};\n\
             fastcgi_temp_path {tmp};\n uwsgi_temp_path {tmp};\n scgi_temp_path {tmp};\n\
             upstream up {{ server {upstream}; keepalive 32; }}\n\
             server {{ listen 127.0.0.1:{port};\n  location /repo/ {{ proxy_pass http://up/;\n\
             proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            log = dir.join("nginx.log").display(),
            tmp = dir.display(),
        ),
    )
    .unwrap();
    let child = std::process::Command::new(binary)
        .args(["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    Some((child, format!("http://127.0.0.1:{port}")))
}

/// One durable append in `file` (200 bytes, then `fdatasync`), timed.
fn durable_append(file: &mut std::fs::File) -> Duration {
    use std::io::Write as _;
    let started = Instant::now();
    file.write_all(&[b'a'; 200]).unwrap();
    file.sync_data().unwrap();
    started.elapsed()
}

/// CPU time (ns) every thread of the processes `pids` has run so far, from
/// `/proc/PID/task/TID/schedstat`; threads that have exited are not counted.
fn cpu_ns(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// Process `master` and its children (nginx's workers).
fn with_children(master: u32) -> Vec<u32> {
    let mut pids = vec![master];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: the parent is the second field after the command.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(master) {
            pids.push(pid);
        }
    }
    pids
}

/// Sorted latencies in µs → (p50, p99).
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

/// One request along a path: a plain GET, or the gateway's with the agent's token and a fresh
/// proof (signed before the clock starts: the agent's cost, not the gateway's).
#[derive(Clone)]
struct Caller {
    http: reqwest::Client,
    tokens: Option<(TokenClient, String, Arc<AgentKey>)>,
}

impl Caller {
    async fn get(&self, url: &str) -> Duration {
        let mut request = self.http.get(url);
        if let Some((tokens, token, key)) = &self.tokens {
            let headers = tokens
                .headers(tokens.binding(), token, key, "GET", url)
                .unwrap();
            request = headers.apply(request);
        }
        let started = Instant::now();
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 200, "{url}");
        answer.bytes().await.unwrap();
        started.elapsed()
    }
}

/// Times the gateway's own per-call check, as its [`aims_sdk::Verifier`] makes it: the agent's
/// task token (verified once, then from the cache) and a fresh DPoP proof per call (signed
/// before the clock starts), on one core; the latencies in µs.
async fn authentication_floor(
    gateway_config: &str,
    rs_secret: &str,
    tokens: &TokenClient,
    token: &str,
    key: &AgentKey,
) -> Vec<f64> {
    let config =
        aims_gateway::Config::parse(gateway_config, &|_| Ok(rs_secret.to_owned())).unwrap();
    let verifier = aims_sdk::Verifier::start(aims_sdk::VerifierConfig {
        base_url: config.aims_url,
        issuer: config.issuer,
        audience: config.audience,
        client_name: config.client_name,
        client_secret: config.client_secret,
        poll_interval: Duration::from_millis(500),
        max_staleness: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let url = "https://gateway.bench.example/repo/app";
    let proofs: Vec<_> = (0..1_000)
        .map(|_| {
            tokens
                .headers(tokens.binding(), token, key, "GET", url)
                .unwrap()
        })
        .collect();
    let mut taken = Vec::with_capacity(proofs.len());
    for headers in &proofs {
        let authorization = headers.authorization.to_str().unwrap();
        let proof = headers.dpop.as_ref().map(|p| p.to_str().unwrap());
        let started = Instant::now();
        verifier
            .verify(authorization, proof, "GET", url)
            .await
            .unwrap();
        taken.push(started.elapsed().as_secs_f64() * 1e6);
    }
    taken
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();

    // The upstream: a fixed small body.
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", upstream_listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async { "{\"ok\":true}" });
    tokio::spawn(async move { axum::serve(upstream_listener, app).await });

    // AIMS, with the gateway registered, a secret for it, and an attested planner.
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("aims.db"))
            .await
            .unwrap(),
    );
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_owned()),
        trust_domain: Some("bench.example".into()),
        ..Overrides::default()
    };
    let env = |name: &str| {
        (name == "AIMS_BOOTSTRAP_TOKEN")
            .then(|| ADMIN.to_owned())
            .or_else(|| {
                (name == "AIMS_RATE_LIMIT_PER_CREDENTIAL").then(|| "1000000/1000000".to_owned())
            })
            .or_else(|| {
                (name == "AIMS_RATE_LIMIT_PER_SOURCE").then(|| "1000000/1000000".to_owned())
            })
    };
    let config = ServerConfig::load_with(&overrides, &env).unwrap();
    let server = aims_server::server::start_with_store(config, store, &env)
        .await
        .unwrap();
    let base = server.base_url.clone();
    let admin = AdminClient::new(&base, Some(ADMIN.to_owned())).unwrap();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let pushed = call(
        reqwest::Method::POST,
        "/v1/policies",
        json!({"files": policies()}),
    )
    .await
    .unwrap();
    assert!(
        pushed.status().is_success(),
        "{}",
        pushed.text().await.unwrap()
    );
    let rs: serde_json::Value = call(
        reqwest::Method::POST,
        "/v1/resource-servers",
        json!({"name": "gateway", "audience": AUDIENCE, "system": "github"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let rs_secret = rs["client_secret"].as_str().unwrap().to_owned();
    let stored = call(
        reqwest::Method::POST,
        "/v1/secrets",
        json!({"name": "repo-token", "value": "ghs_bench_upstream_token", "readers": ["gateway"]}),
    )
    .await
    .unwrap();
    assert!(stored.status().is_success());
    let registered: serde_json::Value = call(
        reqwest::Method::POST,
        "/v1/agents",
        json!({"name": "planner", "owner": "alice@acme.example", "labels": {"role": "planner"}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    let svid = Attestor::new(admin.clone(), key.clone())
        .attest(
            &Default::default(),
            &Credential::JoinToken(registered["join_token"].as_str().unwrap().to_owned()),
            None,
        )
        .await
        .unwrap()
        .svid;
    let tokens = TokenClient::new(&base).unwrap();
    let token = tokens
        .exchange(
            &svid,
            &key,
            &ExchangeRequest {
                scope: aims_core::scope::ScopeSet::parse("read:repo/acme/*").unwrap(),
                audience: AUDIENCE.to_owned(),
                intent: "benchmark the gateway".to_owned(),
                task_id: None,
                expires_in: Some(600),
            },
        )
        .await
        .unwrap()
        .access_token;

    // The gateway.
    let gateway_config = format!(
        "version = 1\nlisten = \"127.0.0.1:0\"\naims_url = \"{base}\"\naudience = \"{AUDIENCE}\"\n\
         client_name = \"gateway\"\nclient_secret_file = \"gateway.secret\"\n\n[[route]]\n\
         name = \"repo\"\npath_prefix = \"/repo/\"\nupstream = \"{upstream}\"\nsystem = \"github\"\n\
         environment = \"dev\"\nsensitivity = \"internal\"\nresource_kind = \"repository\"\n\
         resource_id = \"repo/acme/{{path}}\"\n\
         inject = {{ secret = \"repo-token\", header = \"authorization\", format = \"token {{secret}}\" }}\n"
    );
    let gateway = aims_gateway::start(
        aims_gateway::Config::parse(&gateway_config, &|_| Ok(rs_secret.clone())).unwrap(),
    )
    .await
    .unwrap();
    let check_floor =
        authentication_floor(&gateway_config, &rs_secret, &tokens, &token, &key).await;
    let nginx = nginx(dir.path(), &upstream);
    if nginx.is_none() {
        println!("nginx is not installed: its row is left out (apt-get install nginx-light)");
    }

    let plain = Caller {
        http: reqwest::Client::new(),
        tokens: None,
    };
    let agent = Caller {
        http: reqwest::Client::new(),
        tokens: Some((tokens.clone(), token.clone(), key.clone())),
    };
    let mut paths: Vec<(&str, String, Caller)> = vec![
        (
            "direct to the upstream",
            format!("{upstream}/app"),
            plain.clone(),
        ),
        (
            "through the gateway",
            format!("{}/repo/app", gateway.base_url),
            agent.clone(),
        ),
    ];
    if let Some((_, url)) = &nginx {
        paths.insert(
            1,
            ("through nginx", format!("{url}/repo/app"), plain.clone()),
        );
    }
    // Warm up every path (connections, the gateway's secret cache).
    for (_, url, caller) in &paths {
        for _ in 0..20 {
            caller.get(url).await;
        }
    }
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut throughput: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut appends = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.path().join("durability-floor"))
        .unwrap();
    let mut syncs = Vec::new();
    let mut watched = vec![std::process::id()];
    if let Some((child, _)) = &nginx {
        watched.extend(with_children(child.id()));
    }
    let mut cpu_per_call: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            syncs.push(durable_append(&mut appends).as_secs_f64() * 1e6);
        }
        for (i, (_, url, caller)) in paths.iter().enumerate() {
            for _ in 0..PER_ROUND {
                latencies[i].push(caller.get(url).await.as_secs_f64() * 1e6);
            }
            let cpu_before = cpu_ns(&watched);
            let started = Instant::now();
            let tasks: Vec<_> = (0..CONCURRENT_TASKS)
                .map(|_| {
                    let (url, caller) = (url.clone(), caller.clone());
                    tokio::spawn(async move {
                        for _ in 0..CONCURRENT_EACH {
                            caller.get(&url).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let calls = (CONCURRENT_TASKS * CONCURRENT_EACH) as f64;
            throughput[i].push(calls / started.elapsed().as_secs_f64());
            cpu_per_call[i].push((cpu_ns(&watched) - cpu_before) as f64 / calls / 1e3);
        }
    }
    let floor = percentiles(latencies[0].clone());
    println!(
        "| path | p50 µs | p99 µs | added p50 µs (over direct) | requests/s ({CONCURRENT_TASKS} callers, median of {ROUNDS} rounds) | CPU µs per call, all processes (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut cpus = Vec::new();
    let mut rates = Vec::new();
    for (i, (name, _, _)) in paths.iter().enumerate() {
        let (p50, p99) = percentiles(latencies[i].clone());
        let mut rounds = throughput[i].clone();
        rounds.sort_by(f64::total_cmp);
        let rate = rounds[rounds.len() / 2];
        rates.push(rate);
        let mut cpu = cpu_per_call[i].clone();
        cpu.sort_by(f64::total_cmp);
        let cpu = cpu[cpu.len() / 2];
        cpus.push(cpu);
        println!(
            "| {name} | {p50:.0} | {p99:.0} | {:.0} | {rate:.0} | {cpu:.0} |",
            p50 - floor.0
        );
    }
    let (sync_p50, sync_p99) = percentiles(syncs);
    println!(
        "\ndurable append (200 bytes + fdatasync, data directory): p50 {sync_p50:.0} µs, p99 {sync_p99:.0} µs"
    );
    let (check_p50, _) = percentiles(check_floor);
    println!(
        "the gateway's per-call check (cached token, fresh ES256 DPoP proof), one core: p50 {check_p50:.1} µs"
    );
    if nginx.is_some() {
        println!(
            "\ngateway throughput ÷ nginx throughput: {:.2}",
            rates[2] / rates[1]
        );
        // Where the cores are the limit, throughput is inversely proportional to the CPU a call
        // costs all participants: reaching 70% of nginx's leaves a gateway call this much more
        // than a direct call.
        let allowance = cpus[1] / 0.7 - cpus[0];
        println!(
            "CPU per call added over direct: nginx {:.0} µs, the gateway with AIMS {:.0} µs; \
             70% of nginx's throughput allows the gateway {allowance:.0} µs, its per-call check alone takes {check_p50:.0} µs",
            cpus[1] - cpus[0],
            cpus[2] - cpus[0],
        );
    }
    if let Some((mut child, _)) = nginx {
        // SIGTERM: the master stops its workers (SIGKILL would orphan them).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    gateway.shutdown();
    server.shutdown();
}
