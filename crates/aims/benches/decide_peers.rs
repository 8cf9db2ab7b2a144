//! Decisions beside their peers: the `aims` server (its own process, SQLite store, every
//! decision durably audited before its answer), cedar-agent (an HTTP Cedar PDP, its own
//! process) serving the same policies in Cedar's own form over the same principals and
//! resources, and a minimal axum server answering fixed JSON (the floor, this binary started
//! again as its own process), all driven by the same load generator, Debian's `wrk`.
//!
//! What is asked, each with `wrk` at 1, 16 and 64 connections for a few seconds:
//!
//! - **AIMS bearer**: `POST /v1/decisions` with the agent's JWT-SVID (a repository read,
//!   `allow`), the requests rotating over ten attested agents;
//! - **AIMS AuthZEN**: `POST /access/v1/evaluation`, the same question, the agent asking
//!   about itself with its SVID;
//! - **AIMS DPoP**: `POST /v1/decisions` with a DPoP-bound task token and a proof per request,
//!   signed with the server's nonce before the run starts (each proof is single-use; a `wrk`
//!   thread that has used all of its proofs stops);
//! - **cedar-agent**: `POST /v1/is_authorized` for the same principal, action, resource and
//!   context, its entities (agents with their owner and team, the resources) loaded at start;
//! - **floor**: the AIMS bearer requests, answered by a handler returning fixed JSON.
//!
//! The policy set is written once: five rules (only active agents act; coding agents obtain
//! read scopes, read repositories and write branches; a prod branch write needs a fresh
//! posture) plus per-agent, per-tool permits up to the size asked. The text parses both as
//! Cedar 4 under the AIMS schema and as Cedar 2 (cedar-agent's Cedar), so both servers get
//! the same policies; AIMS gets them with `@id` annotations, cedar-agent as its JSON list.
//! Before any timing, a set of probes (allowed and denied, on repositories, logs and tools,
//! for several agents) is asked of AIMS's two endpoints and of cedar-agent: the answers must
//! be equal.
//!
//! Each policy set runs several rounds; within a round every registry size measured with that
//! set (each its own server, all running for the whole bench) and every target is measured at
//! every connection count, the registry and target orders rotating each round, so a
//! slow spell of the shared machine lands on all of them. Each measurement reads the server's
//! CPU time (`/proc/<pid>/stat`) before and after and divides by the answers. Printed: the
//! medians, the per-round ratios (AIMS ÷ cedar-agent, AIMS ÷ floor, in decisions/s) and,
//! per registry size, start-up time to ready and resident memory. 100,000 agents are written
//! into the store through the store library before the server starts (on tmpfs, then
//! copied into the data directory), ten of them attested through the API.
//!
//! ```text
//! apt-get install -y wrk
//! cargo install cedar-agent --locked --root /work/tools   # optional; its rows are left out without it
//! AIMS_BENCH_CEDAR_AGENT=/work/tools/bin/cedar-agent cargo bench -p aims --bench decide_peers
//! ```
//!
//! Subsets (comma-separated lists): `AIMS_BENCH_AGENTS` (default `10,100000`),
//! `AIMS_BENCH_POLICIES` (policy sets at 10 agents, default `10,1000,10000`),
//! `AIMS_BENCH_POLICIES_AT_SCALE` (at the larger registries, default `1000`),
//! `AIMS_BENCH_CONNECTIONS` (default `1,16,64`), `AIMS_BENCH_ROUNDS` (default 3),
//! `AIMS_BENCH_SECONDS` (per measurement, default 2).

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

#[path = "common/proc.rs"]
mod proc;
#[allow(
    dead_code,
    reason = "the benchmark uses part of the shared test harness"
)]
#[path = "../tests/it/process.rs"]
mod process;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aims_core::agent::{Agent, LifecycleState, Limits};
use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_core::credential::CredentialHash;
use aims_core::id::AgentName;
use aims_core::posture::{Evidence, ModelEvidence, PostureProfile};
use aims_sdk::attest::{Attestor, Credential};
use aims_sdk::oauth::ExchangeRequest;
use aims_sdk::{AdminClient, TokenClient};
use aims_store::{
    AttestationRecord, IssuedCredential, IssuedKind, JoinTokenRecord, PostureSnapshot, SqliteStore,
    Store,
};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use time::OffsetDateTime;

use proc::{cpu_of, rss_mib};
use process::{ADMIN_TOKEN, Server, UNLIMITED};

/// Set in the environment of this binary started again as the floor server.
const ENV_FLOOR: &str = "AIMS_BENCH_FLOOR_SERVER";
/// The floor's whole answer.
const FLOOR_ANSWER: &str = r#"{"decision":"allow"}"#;
/// Agents attested through the API, whose requests are timed.
const ATTESTED: usize = 10;
/// The owner and team of every agent.
const OWNER: &str = "bench@acme.example";
const TEAM: &str = "coding-agents";
/// The resource every timed request reads.
const REPOSITORY: &str = "github/acme/app";
/// The resource server the DPoP task tokens are for.
const AUDIENCE: &str = "https://repos.bench.example";
/// The scope the task tokens carry.
const SCOPE: &str = "read:github/acme/*";

fn agent_name(i: usize) -> String {
    format!("agent-{i:06}")
}

// ---------------------------------------------------------------------------------------
// Settings

struct Settings {
    agents: Vec<usize>,
    policies: Vec<usize>,
    policies_at_scale: Vec<usize>,
    connections: Vec<usize>,
    rounds: usize,
    seconds: u64,
    cedar_agent: Option<PathBuf>,
}

fn list(var: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|x| x.trim().replace('_', "").parse().unwrap())
            .collect(),
        _ => default.to_vec(),
    }
}

impl Settings {
    fn from_env() -> Self {
        let cedar_agent = std::env::var_os("AIMS_BENCH_CEDAR_AGENT")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("cedar-agent")))
            .filter(|path| {
                Command::new(path)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
        Self {
            agents: list("AIMS_BENCH_AGENTS", &[10, 100_000]),
            policies: list("AIMS_BENCH_POLICIES", &[10, 1_000, 10_000]),
            policies_at_scale: list("AIMS_BENCH_POLICIES_AT_SCALE", &[1_000]),
            connections: list("AIMS_BENCH_CONNECTIONS", &[1, 16, 64]),
            rounds: list("AIMS_BENCH_ROUNDS", &[3])[0],
            seconds: list("AIMS_BENCH_SECONDS", &[2])[0] as u64,
            cedar_agent,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The policy set, in both forms

/// `(id, text without annotations)` of a set of `total` policies (at least the five rules).
fn policy_set(total: usize) -> Vec<(String, String)> {
    let mut set: Vec<(String, String)> = [
        (
            "baseline-only-active-agents",
            "forbid (principal, action, resource)\nunless { principal.state == \"active\" };",
        ),
        (
            "coding-obtains-read-scopes",
            "permit (principal in Aims::Team::\"coding-agents\", action == Aims::Action::\"obtain\", resource)\nwhen { resource.system == \"github\" && [\"read\"].contains(resource.kind) };",
        ),
        (
            "coding-read-repository",
            "permit (principal in Aims::Team::\"coding-agents\", action == Aims::Action::\"read\", resource)\nwhen { resource.kind == \"repository\" || resource.kind == \"branch\" };",
        ),
        (
            "coding-write-branch",
            "permit (principal in Aims::Team::\"coding-agents\", action == Aims::Action::\"write\", resource)\nwhen { resource.kind == \"branch\" };",
        ),
        (
            "prod-branch-write-needs-fresh-posture",
            "forbid (principal, action == Aims::Action::\"write\", resource)\nwhen { resource.kind == \"branch\" && resource.environment == \"prod\" && context.posture_age_s > 60 };",
        ),
    ]
    .into_iter()
    .map(|(id, text)| (id.to_owned(), text.to_owned()))
    .collect();
    for i in 0..total.saturating_sub(set.len()) {
        set.push((
            format!("filler-{i}"),
            format!(
                "permit (principal == Aims::Agent::\"{}\", action == Aims::Action::\"call_tool\", resource == Aims::Tool::\"tool-{i}\")\nwhen {{ context.posture_age_s < 86400 && principal.trust_level >= 1 }};",
                agent_name(i % 997)
            ),
        ));
    }
    set
}

/// The set as AIMS takes it: the schema and one file of annotated policies.
fn aims_files(set: &[(String, String)]) -> BTreeMap<String, String> {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/aims.cedarschema");
    let mut text = String::new();
    for (id, policy) in set {
        text.push_str(&format!("@id(\"{id}\")\n{policy}\n\n"));
    }
    BTreeMap::from([
        (
            "aims.cedarschema".to_owned(),
            std::fs::read_to_string(schema).unwrap(),
        ),
        ("bench.cedar".to_owned(), text),
    ])
}

/// The set as cedar-agent takes it (`--policies`): a JSON list of ids and texts.
fn cedar_agent_policies(set: &[(String, String)]) -> Value {
    Value::Array(
        set.iter()
            .map(|(id, text)| json!({"id": id, "content": text}))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Resources and requests

struct Object {
    ty: &'static str,
    id: &'static str,
    system: &'static str,
    kind: &'static str,
}

const OBJECTS: [Object; 4] = [
    Object {
        ty: "Resource",
        id: REPOSITORY,
        system: "github",
        kind: "repository",
    },
    Object {
        ty: "Resource",
        id: "loki/prod/app",
        system: "loki",
        kind: "logs",
    },
    Object {
        ty: "Tool",
        id: "tool-3",
        system: "mcp",
        kind: "tool",
    },
    Object {
        ty: "Tool",
        id: "tool-4",
        system: "mcp",
        kind: "tool",
    },
];

fn object(id: &str) -> &'static Object {
    OBJECTS.iter().find(|o| o.id == id).unwrap()
}

/// `POST /v1/decisions` body; with a task token the task is the token's, so none is named.
fn decide_body(action: &str, o: &Object, with_task: bool) -> String {
    let mut body = json!({
        "action": action,
        "resource": {"type": o.ty, "id": o.id, "system": o.system, "environment": "prod",
                     "sensitivity": "internal", "kind": o.kind},
        "arguments": {},
    });
    if with_task {
        body["task_id"] = json!("bench");
        body["intent"] = json!("bench");
    }
    body.to_string()
}

/// `POST /access/v1/evaluation` body.
fn authzen_body(agent: &str, action: &str, o: &Object) -> String {
    json!({
        "subject": {"type": "agent", "id": agent},
        "action": {"name": action},
        "resource": {"type": o.ty, "id": o.id, "properties": {"system": o.system,
                     "environment": "prod", "sensitivity": "internal", "kind": o.kind}},
        "context": {"task_id": "bench", "intent": "bench"},
    })
    .to_string()
}

/// cedar-agent's `POST /v1/is_authorized` body: the context AIMS builds, without the request
/// time (Cedar 2 has no `datetime`; no policy here reads it).
fn cedar_body(agent: &str, action: &str, o: &Object) -> String {
    json!({
        "principal": format!("Aims::Agent::\"{agent}\""),
        "action": format!("Aims::Action::\"{action}\""),
        "resource": format!("Aims::{}::\"{}\"", o.ty, o.id),
        "context": {
            "posture_age_s": 0, "task_id": "bench", "intent": "bench", "delegation_depth": 0,
            "delegation_chain": [], "approved": false, "environment": "prod",
            "source_ip": {"__extn": {"fn": "ip", "arg": "127.0.0.1"}}, "arguments": {},
        },
    })
    .to_string()
}

/// cedar-agent's entities (`--data`): what AIMS's registry view makes of the same agents
/// (attributes, owner and team as parents), the owner, team and systems, and the resources.
fn cedar_agent_data(agents: usize) -> Vec<u8> {
    let uid = |ty: &str, id: &str| json!({"type": format!("Aims::{ty}"), "id": id});
    let mut entities = Vec::with_capacity(agents + 10);
    for i in 0..agents {
        let name = agent_name(i);
        entities.push(json!({
            "uid": uid("Agent", &name),
            "attrs": {
                "name": name, "spiffe_id": format!("spiffe://e2e.example/agent/{name}"),
                "owner": OWNER, "environment": "prod", "state": "active", "trust_level": 1,
                "model": "model-a", "toolchain": {"framework": "", "version": ""},
                "posture": {"identity_verified": true, "runtime_checks_passed": true},
            },
            "parents": [uid("Owner", OWNER), uid("Team", TEAM)],
        }));
    }
    entities.push(json!({"uid": uid("Owner", OWNER), "attrs": {}, "parents": []}));
    entities.push(json!({"uid": uid("Team", TEAM), "attrs": {}, "parents": []}));
    for system in ["github", "loki", "mcp"] {
        entities.push(json!({"uid": uid("System", system), "attrs": {}, "parents": []}));
    }
    for o in &OBJECTS {
        entities.push(json!({
            "uid": uid(o.ty, o.id),
            "attrs": {"system": o.system, "environment": "prod", "sensitivity": "internal",
                      "kind": o.kind},
            "parents": [uid("System", o.system)],
        }));
    }
    serde_json::to_vec(&entities).unwrap()
}

/// Questions asked of every server before timing: `(agent, action, resource)`. Their
/// answers differ (allow and deny) and must agree across the servers.
const PROBES: [(usize, &str, &str); 7] = [
    (1, "read", REPOSITORY),
    (7, "read", REPOSITORY),
    (1, "read", "loki/prod/app"),
    (1, "delete", REPOSITORY),
    (3, "call_tool", "tool-3"),
    (3, "call_tool", "tool-4"),
    (4, "call_tool", "tool-4"),
];

// ---------------------------------------------------------------------------------------
// Child processes

/// A child process killed and reaped when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The floor: this binary again, serving fixed JSON; `(process, base URL)`.
fn start_floor() -> (Owned, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ENV_FLOOR, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    (Owned(child), url)
}

/// The floor server itself: any request, its body read, answered with [`FLOOR_ANSWER`].
fn serve_floor() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut out = std::io::stdout();
        writeln!(
            out,
            "listening on http://{}",
            listener.local_addr().unwrap()
        )
        .unwrap();
        out.flush().unwrap();
        let app = axum::Router::new().fallback(|_body: axum::body::Bytes| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                FLOOR_ANSWER,
            )
        });
        axum::serve(listener, app).await.unwrap();
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// cedar-agent at its quietest, with `policies` and `data` loaded from files; returns the
/// process, its base URL and the time it took to answer its first authorization request.
async fn start_cedar_agent(
    binary: &Path,
    dir: &Path,
    policies: &Value,
    data: &[u8],
) -> (Owned, String, Duration) {
    let policies_file = dir.join("cedar-policies.json");
    let data_file = dir.join("cedar-data.json");
    std::fs::write(&policies_file, serde_json::to_vec(policies).unwrap()).unwrap();
    std::fs::write(&data_file, data).unwrap();
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(binary)
        .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
        .args(["--log-level", "off"])
        .arg("--policies")
        .arg(&policies_file)
        .arg("--data")
        .arg(&data_file)
        .env("ROCKET_LOG_LEVEL", "off")
        .env("ROCKET_CLI_COLORS", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Owned(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let probe = cedar_body(&agent_name(1), "read", object(REPOSITORY));
    loop {
        let answer = http
            .post(format!("{url}/v1/is_authorized"))
            .header("content-type", "application/json")
            .body(probe.clone())
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status().is_success()
        {
            let body: Value = answer.json().await.unwrap();
            // Policies and data load after the socket opens: ready once the probe is allowed.
            if body["decision"] == "Allow" {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "cedar-agent did not become ready (did its policies and data load? run it with --log-level info)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = started.elapsed();
    let loaded: Value = http
        .get(format!("{url}/v1/policies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        loaded.as_array().map(Vec::len),
        policies.as_array().map(Vec::len),
        "cedar-agent did not load every policy"
    );
    (child, url, ready)
}

// ---------------------------------------------------------------------------------------
// The AIMS server

/// An AIMS server with its attested agents.
struct Aims {
    server: Server,
    /// The agents' SVIDs, by index.
    svids: Vec<String>,
    /// The agents' keys.
    keys: Vec<Arc<AgentKey>>,
    /// Each agent's DPoP-bound task token.
    task_tokens: Vec<String>,
    /// Spawn to `/readyz` answering 200, on the restart with the full registry.
    startup: Duration,
    /// Resident memory just after that restart.
    rss_ready: f64,
    /// How long writing the registry took.
    fill: Duration,
}

fn server_env(config: &Path) -> Vec<(&'static str, String)> {
    let [source, credential] = UNLIMITED;
    vec![
        ("AIMS_BOOTSTRAP_TOKEN", ADMIN_TOKEN.to_owned()),
        ("AIMS_CONFIG", config.to_string_lossy().into_owned()),
        (source.0, source.1.to_owned()),
        (credential.0, credential.1.to_owned()),
    ]
}

/// The server on `port`: the same port after a restart keeps the issuer's URL, which the
/// SVIDs' audience and the DPoP proofs' `htu` name.
fn start_server(data_dir: &Path, config: &Path, port: u16) -> Server {
    let env = server_env(config);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let listen = format!("127.0.0.1:{port}");
    Server::start_with(data_dir, &env, &["--listen", &listen])
}

/// Polls `/readyz` until it answers 200.
async fn until_ready(url: &str, since: Instant) {
    let http = reqwest::Client::new();
    loop {
        if let Ok(answer) = http.get(format!("{url}/readyz")).send().await
            && answer.status().is_success()
        {
            return;
        }
        assert!(since.elapsed() < Duration::from_secs(120), "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes agents `ATTESTED..agents` (active, in the coding team, each with an accepted
/// posture and a live SVID record) straight into a SQLite store at `db`, from concurrent
/// writers so that the store's group commit batches them.
async fn fill_registry(db: &Path, agents: usize) {
    const WRITERS: usize = 32;
    let store = Arc::new(SqliteStore::open(db).await.unwrap());
    let now = OffsetDateTime::now_utc();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (ATTESTED + w..agents).step_by(WRITERS) {
                    write_agent(store.as_ref(), i, now).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

/// Writes agent `i` and an accepted posture for it.
async fn write_agent(store: &SqliteStore, i: usize, now: OffsetDateTime) {
    let event = |what| AuditEvent::new(now, Actor::System, what, Outcome::Success);
    let name = AgentName::new(agent_name(i)).unwrap();
    let agent = Agent {
        name: name.clone(),
        owner: OWNER.parse().unwrap(),
        environment: "prod".parse().unwrap(),
        description: String::new(),
        posture_profile: PostureProfile::default(),
        limits: Limits::default(),
        labels: [
            ("team".parse().unwrap(), TEAM.to_owned()),
            ("trust_level".parse().unwrap(), "1".to_owned()),
        ]
        .into(),
        state: LifecycleState::Active,
        created_at: now,
        updated_at: now,
        recertify_by: now + time::Duration::days(90),
        revision: 1,
    };
    let join = JoinTokenRecord {
        hash: CredentialHash::of(&format!("join-{i}")),
        agent: name.clone(),
        expires_at: now + time::Duration::hours(1),
    };
    store
        .create_agent(&agent, &join, &event(action::AGENT_REGISTER))
        .await
        .unwrap();
    let evidence = Evidence {
        model: ModelEvidence {
            id: Some("model-a".to_owned()),
            digest: None,
        },
        ..Evidence::default()
    };
    let credential = IssuedCredential {
        id: format!("svid-{i}"),
        kind: IssuedKind::Svid,
        agent: name.clone(),
        parent: None,
        key_thumbprint: Some(format!("jkt-{i}")),
        issued_at: now,
        expires_at: now + time::Duration::hours(1),
        revoked_at: None,
        task_id: None,
        audience: None,
    };
    let snapshot = PostureSnapshot {
        agent: name,
        digest: evidence.digest(),
        evidence,
        key_thumbprint: format!("jkt-{i}"),
        accepted_at: now,
    };
    store
        .record_attestation(
            &AttestationRecord {
                snapshot,
                credential,
            },
            &event("identity.issue"),
        )
        .await
        .unwrap();
}

impl Aims {
    /// A server whose registry holds `agents` agents: all but [`ATTESTED`] written through
    /// the store (on tmpfs, then copied), the rest registered and attested through the API,
    /// each with a DPoP-bound task token; then restarted, timing the start to ready.
    async fn start(dir: &Path, agents: usize) -> Self {
        let data_dir = dir.join(format!("aims-{agents}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let config = dir.join("aims.toml");
        // Large policy sets need a large body; SVIDs live for the whole run.
        std::fs::write(
            &config,
            "version = 1\nmax_body_bytes = 33554432\nsvid_ttl_s = 3600\nmax_token_ttl_s = 3600\n",
        )
        .unwrap();
        let filling = Instant::now();
        if agents > ATTESTED {
            let scratch = if Path::new("/dev/shm").is_dir() {
                tempfile::tempdir_in("/dev/shm").unwrap()
            } else {
                tempfile::tempdir().unwrap()
            };
            let db = scratch.path().join("aims.db");
            fill_registry(&db, agents).await;
            // The store's pools close behind the last handle; give them a moment, then copy
            // the database with its write-ahead log (SQLite replays it when it opens).
            tokio::time::sleep(Duration::from_millis(500)).await;
            for suffix in ["", "-wal"] {
                let from = scratch.path().join(format!("aims.db{suffix}"));
                if from.exists() {
                    std::fs::copy(&from, data_dir.join(format!("aims.db{suffix}"))).unwrap();
                }
            }
        }
        let fill = filling.elapsed();
        eprintln!("{agents} agents: registry written in {fill:.1?}");

        let port = free_port();
        let server = start_server(&data_dir, &config, port);
        let admin = AdminClient::new(&server.url, Some(ADMIN_TOKEN.to_owned())).unwrap();
        admin
            .push_policies(&aims_api::PushPolicyRequest {
                files: aims_files(&policy_set(10)),
            })
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let registered = http
            .post(format!("{}/v1/resource-servers", server.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "repos", "audience": AUDIENCE, "system": "github"}))
            .send()
            .await
            .unwrap();
        assert!(registered.status().is_success());
        let rng = SystemRandom::new();
        let tokens = TokenClient::new(&server.url).unwrap();
        let (mut svids, mut keys, mut task_tokens) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..ATTESTED {
            let registered: Value = http
                .post(format!("{}/v1/agents", server.url))
                .bearer_auth(ADMIN_TOKEN)
                .json(
                    &json!({"name": agent_name(i), "owner": OWNER, "environment": "prod",
                              "labels": {"team": TEAM, "trust_level": "1"}}),
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &rng).unwrap());
            let svid = Attestor::new(AdminClient::new(&server.url, None).unwrap(), key.clone())
                .attest(
                    &Default::default(),
                    &Credential::JoinToken(registered["join_token"].as_str().unwrap().to_owned()),
                    None,
                )
                .await
                .unwrap()
                .svid;
            let token = tokens
                .exchange(
                    &svid,
                    &key,
                    &ExchangeRequest {
                        scope: aims_core::scope::ScopeSet::parse(SCOPE).unwrap(),
                        audience: AUDIENCE.to_owned(),
                        intent: "bench".to_owned(),
                        task_id: None,
                        expires_in: Some(3600),
                    },
                )
                .await
                .unwrap()
                .access_token;
            svids.push(svid);
            keys.push(key);
            task_tokens.push(token);
        }
        // Restart: what a replica with this registry does at start, timed to ready.
        let (status, _) = server.terminate();
        assert!(status.success(), "the server did not stop cleanly");
        let started = Instant::now();
        let server = start_server(&data_dir, &config, port);
        until_ready(&server.url, started).await;
        let startup = started.elapsed();
        let rss_ready = rss_mib(server.child.id());
        eprintln!(
            "{agents} agents: ready in {startup:.2?} after a restart, RSS {rss_ready:.1} MiB"
        );
        Self {
            server,
            svids,
            keys,
            task_tokens,
            startup,
            rss_ready,
            fill,
        }
    }

    async fn push(&self, set: &[(String, String)]) {
        let admin = AdminClient::new(&self.server.url, Some(ADMIN_TOKEN.to_owned())).unwrap();
        let pushed = admin
            .push_policies(&aims_api::PushPolicyRequest {
                files: aims_files(set),
            })
            .await
            .unwrap();
        assert_eq!(pushed.policies, set.len(), "policy count");
    }

    /// The server's current DPoP nonce: the challenge of a proof sent without one.
    async fn dpop_nonce(&self) -> String {
        let url = format!("{}/v1/decisions", self.server.url);
        let proof = aims_token::dpop::sign_proof(
            &self.keys[0],
            &SystemRandom::new(),
            "POST",
            &url,
            Some(self.task_tokens[0].as_str()),
            OffsetDateTime::now_utc().unix_timestamp(),
        )
        .unwrap();
        let answer = reqwest::Client::new()
            .post(&url)
            .header("authorization", format!("DPoP {}", self.task_tokens[0]))
            .header("dpop", proof)
            .header("content-type", "application/json")
            .body(decide_body("read", object(REPOSITORY), false))
            .send()
            .await
            .unwrap();
        answer
            .headers()
            .get("dpop-nonce")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// `count` requests with a DPoP proof each, signed now with the server's nonce, the
    /// agents in turn.
    async fn dpop_lines(&self, count: usize) -> Vec<String> {
        let url = format!("{}/v1/decisions", self.server.url);
        let nonce = self.dpop_nonce().await;
        let rng = SystemRandom::new();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let body = decide_body("read", object(REPOSITORY), false);
        (0..count)
            .map(|n| {
                let i = n % ATTESTED;
                let proof = aims_token::dpop::sign_proof_with_nonce(
                    &self.keys[i],
                    &rng,
                    "POST",
                    &url,
                    Some(self.task_tokens[i].as_str()),
                    Some(nonce.as_str()),
                    now,
                )
                .unwrap();
                line(&format!("DPoP {}", self.task_tokens[i]), &proof, &body)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Equal answers

async fn post(url: &str, bearer: Option<&str>, body: String) -> Value {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Asks every probe of AIMS (`/v1/decisions` and AuthZEN) and of cedar-agent; panics on any
/// disagreement. Returns how many allowed and denied.
async fn check_equal(aims: &Aims, cedar: Option<&str>) -> (usize, usize) {
    let (mut allowed, mut denied) = (0, 0);
    for (i, action, resource) in PROBES {
        let o = object(resource);
        let name = agent_name(i);
        let decided = post(
            &format!("{}/v1/decisions", aims.server.url),
            Some(&aims.svids[i]),
            decide_body(action, o, true),
        )
        .await;
        let allow = match decided["decision"].as_str().unwrap() {
            "allow" => true,
            "deny" => false,
            other => panic!("unexpected decision {other}"),
        };
        let evaluated = post(
            &format!("{}/access/v1/evaluation", aims.server.url),
            Some(&aims.svids[i]),
            authzen_body(&name, action, o),
        )
        .await;
        assert_eq!(
            evaluated["decision"].as_bool().unwrap(),
            allow,
            "AuthZEN and /v1/decisions differ on {name} {action} {resource}"
        );
        if let Some(cedar) = cedar {
            let answered = post(
                &format!("{cedar}/v1/is_authorized"),
                None,
                cedar_body(&name, action, o),
            )
            .await;
            let cedar_allow = match answered["decision"].as_str().unwrap() {
                "Allow" => true,
                "Deny" => false,
                other => panic!("unexpected cedar-agent decision {other}"),
            };
            assert_eq!(
                cedar_allow, allow,
                "cedar-agent and AIMS differ on {name} {action} {resource}: {answered}"
            );
        }
        if allow {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    (allowed, denied)
}

// ---------------------------------------------------------------------------------------
// wrk

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Target {
    AimsBearer,
    AimsAuthzen,
    AimsDpop,
    CedarAgent,
    Floor,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::AimsBearer => "AIMS /v1/decisions, bearer SVID",
            Self::AimsAuthzen => "AIMS AuthZEN evaluation",
            Self::AimsDpop => "AIMS /v1/decisions, DPoP task token",
            Self::CedarAgent => "cedar-agent /v1/is_authorized",
            Self::Floor => "axum fixed JSON (floor)",
        }
    }
}

/// One request for the wrk script: `Authorization`, `DPoP` (may be empty) and the body,
/// tab-separated (none of them holds a tab or a newline).
fn line(authorization: &str, dpop: &str, body: &str) -> String {
    assert!(
        ![authorization, dpop, body]
            .iter()
            .any(|s| s.contains(['\t', '\n']))
    );
    format!("{authorization}\t{dpop}\t{body}")
}

/// The wrk script: each thread builds its requests from the lines file (every thread all of
/// them when `once` is false, cycling; with `once`, thread `t` of `threads` takes lines
/// `t, t + threads, …` and sends each once, then stops), and `done` prints one result line.
fn script(path: &str, lines: &Path, threads: usize, once: bool) -> String {
    format!(
        r#"local path = "{path}"
local lines = "{lines}"
local threads = {threads}
local once = {once}
local made = 0
function setup(thread)
  thread:set("tid", made)
  made = made + 1
end
function init(args)
  reqs = {{}}
  local n = 0
  for l in io.lines(lines) do
    if not once or n % threads == tid then
      local auth, dpop, body = l:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {{ ["Content-Type"] = "application/json" }}
      if auth ~= "" then headers["Authorization"] = auth end
      if dpop ~= "" then headers["DPoP"] = dpop end
      reqs[#reqs + 1] = wrk.format("POST", path, headers, body)
    end
    n = n + 1
  end
  nxt = 0
end
function request()
  if once and nxt >= #reqs - 1 then wrk.thread:stop() end
  local r = reqs[(nxt % #reqs) + 1]
  nxt = nxt + 1
  return r
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("AIMS-BENCH %d %d %d %d %d %d %d %.0f %.0f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#,
        lines = lines.display(),
    )
}

#[derive(Clone, Copy, Debug)]
struct Measured {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    user_us: f64,
    kernel_us: f64,
}

impl Measured {
    fn cpu_us(&self) -> f64 {
        self.user_us + self.kernel_us
    }
}

/// Waits until process `pid` has finished the requests wrk left in flight (less than 10% of
/// a core over 200 ms), so that they do not run during the next measurement.
fn settle(pid: u32) {
    let busy = || {
        let (user, kernel) = cpu_of(pid);
        user + kernel
    };
    let since = Instant::now();
    loop {
        let before = busy();
        std::thread::sleep(Duration::from_millis(200));
        if busy() - before < Duration::from_millis(20) || since.elapsed() > Duration::from_secs(120)
        {
            return;
        }
    }
}

/// What one wrk run sends: `lines` to `url` + `path`, answered by server process `pid`; with
/// `once`, each line is sent at most once.
struct Load<'a> {
    pid: u32,
    url: &'a str,
    path: &'static str,
    lines: &'a [String],
    once: bool,
}

/// Runs wrk with `load` at `connections` for `seconds`.
fn wrk(dir: &Path, load: &Load<'_>, connections: usize, seconds: u64) -> Measured {
    let Load {
        pid,
        url,
        path,
        lines,
        once,
    } = *load;
    let threads = connections.min(2);
    let lines_file = dir.join("wrk-lines.txt");
    std::fs::write(&lines_file, lines.join("\n") + "\n").unwrap();
    let script_file = dir.join("wrk.lua");
    std::fs::write(&script_file, script(path, &lines_file, threads, once)).unwrap();
    let (user0, kernel0) = cpu_of(pid);
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--timeout", "30s", "-s"])
        .arg(&script_file)
        .arg(url)
        .output()
        .unwrap();
    let (user1, kernel1) = cpu_of(pid);
    settle(pid);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("AIMS-BENCH "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no result: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let f: Vec<f64> = result
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (requests, duration_us) = (f[0], f[1]);
    let errors = f[2] + f[3] + f[4] + f[5] + f[6];
    // With single-use proofs, a thread may send one request past its last proof.
    let tolerated = if once { connections as f64 } else { 0.0 };
    assert!(
        errors <= tolerated,
        "{url}{path}: {errors} errors (connect, read, write, status, timeout: {:?})",
        &f[2..7]
    );
    // A server slower than one answer per run gives no figures (NaN), not a failure.
    let answered = |x: f64| if requests > 0.0 { x } else { f64::NAN };
    Measured {
        per_s: requests / (duration_us / 1e6),
        p50_ms: answered(f[7] / 1e3),
        p99_ms: answered(f[8] / 1e3),
        user_us: (user1 - user0).as_secs_f64() * 1e6 / requests,
        kernel_us: (kernel1 - kernel0).as_secs_f64() * 1e6 / requests,
    }
}

// ---------------------------------------------------------------------------------------
// The run

/// One configuration's servers and their request lines.
struct Config<'a> {
    aims: &'a Aims,
    /// Set when cedar-agent answered fewer than [`SLOW`] requests a second at one connection:
    /// more connections would only queue behind it (and keep it busy into the next
    /// measurement), so they are not measured.
    cedar_slow: std::cell::Cell<bool>,
    cedar: Option<(u32, String)>,
    floor: &'a (u32, String),
    bearer: Vec<String>,
    authzen: Vec<String>,
    cedar_lines: Vec<String>,
}

impl Config<'_> {
    /// A load on the AIMS server.
    fn aims<'s>(&'s self, path: &'static str, lines: &'s [String], once: bool) -> Load<'s> {
        Load {
            pid: self.aims.server.child.id(),
            url: &self.aims.server.url,
            path,
            lines,
            once,
        }
    }

    async fn measure(
        &self,
        dir: &Path,
        target: Target,
        connections: usize,
        seconds: u64,
    ) -> Option<Measured> {
        let dpop_lines;
        let load = match target {
            Target::AimsBearer => self.aims("/v1/decisions", &self.bearer, false),
            Target::AimsAuthzen => self.aims("/access/v1/evaluation", &self.authzen, false),
            Target::AimsDpop => {
                // Enough single-use proofs for ~10,000 decisions/s; they are valid for 60 s.
                dpop_lines = self
                    .aims
                    .dpop_lines(10_000 * seconds as usize + 1_000)
                    .await;
                self.aims("/v1/decisions", &dpop_lines, true)
            }
            Target::CedarAgent => {
                if self.cedar_slow.get() && connections > 1 {
                    return None;
                }
                let (pid, url) = self.cedar.as_ref()?;
                Load {
                    pid: *pid,
                    url,
                    path: "/v1/is_authorized",
                    lines: &self.cedar_lines,
                    once: false,
                }
            }
            Target::Floor => Load {
                pid: self.floor.0,
                url: &self.floor.1,
                path: "/v1/decisions",
                lines: &self.bearer,
                once: false,
            },
        };
        let measured = wrk(dir, &load, connections, seconds);
        if target == Target::CedarAgent && connections == 1 && measured.per_s < SLOW {
            self.cedar_slow.set(true);
        }
        Some(measured)
    }
}

/// Decisions a second below which a server is not asked with more connections.
const SLOW: f64 = 5.0;

/// Results by (agents, policies, connections, target), one per round.
type Results = BTreeMap<(usize, usize, usize, Target), Vec<Measured>>;

struct Scale {
    agents: usize,
    fill: Duration,
    startup: Duration,
    rss_ready: f64,
    rss_after: f64,
    cedar_startup: Vec<(usize, Duration, f64)>,
}

/// `x` with `decimals` decimals, or a dash when there is no figure (no answers in a run).
fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "–".to_owned()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One registry size's AIMS server and what is asked of it.
struct Registry {
    agents: usize,
    aims: Aims,
    /// The policy set sizes it is measured with.
    sets: Vec<usize>,
    /// cedar-agent's entities for the same registry, when cedar-agent is measured.
    cedar_data: Option<Vec<u8>>,
    bearer: Vec<String>,
    authzen: Vec<String>,
    cedar_lines: Vec<String>,
    /// cedar-agent's start-up time and resident memory, per policy set.
    cedar_startup: Vec<(usize, Duration, f64)>,
}

impl Registry {
    async fn start(settings: &Settings, dir: &Path, agents: usize) -> Self {
        let aims = Aims::start(dir, agents).await;
        let cedar_data = settings
            .cedar_agent
            .as_ref()
            .map(|_| cedar_agent_data(agents));
        let bearer = (0..ATTESTED)
            .map(|i| {
                line(
                    &format!("Bearer {}", aims.svids[i]),
                    "",
                    &decide_body("read", object(REPOSITORY), true),
                )
            })
            .collect();
        let authzen = (0..ATTESTED)
            .map(|i| {
                line(
                    &format!("Bearer {}", aims.svids[i]),
                    "",
                    &authzen_body(&agent_name(i), "read", object(REPOSITORY)),
                )
            })
            .collect();
        let cedar_lines = (0..ATTESTED)
            .map(|i| {
                line(
                    "",
                    "",
                    &cedar_body(&agent_name(i), "read", object(REPOSITORY)),
                )
            })
            .collect();
        let sets = if agents == ATTESTED {
            settings.policies.clone()
        } else {
            settings.policies_at_scale.clone()
        };
        Self {
            agents,
            aims,
            sets,
            cedar_data,
            bearer,
            authzen,
            cedar_lines,
            cedar_startup: Vec::new(),
        }
    }
}

async fn run(settings: Settings) {
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<Target> = [
        Target::AimsBearer,
        Target::AimsAuthzen,
        Target::AimsDpop,
        Target::CedarAgent,
        Target::Floor,
    ]
    .into_iter()
    .filter(|t| *t != Target::CedarAgent || settings.cedar_agent.is_some())
    .collect();
    match &settings.cedar_agent {
        Some(path) => {
            let version = Command::new(path).arg("--version").output().unwrap();
            println!(
                "cedar-agent: {} ({})",
                path.display(),
                String::from_utf8_lossy(&version.stdout).trim()
            );
        }
        None => println!(
            "cedar-agent not found (set AIMS_BENCH_CEDAR_AGENT or put it on PATH; \
             `cargo install cedar-agent --locked --root DIR`): its rows are left out"
        ),
    }
    let wrk_version = Command::new("wrk").arg("--version").output().unwrap();
    println!(
        "{}",
        String::from_utf8_lossy(&wrk_version.stdout)
            .lines()
            .next()
            .unwrap_or("wrk")
    );
    println!("load average at start: {}", loadavg());
    let (floor_process, floor_url) = start_floor();
    let floor = (floor_process.0.id(), floor_url);

    // Every registry's server runs for the whole bench, so that the sizes sharing a policy
    // set are measured in the same rounds.
    let mut registries = Vec::new();
    for &agents in &settings.agents {
        assert!(agents >= ATTESTED, "at least {ATTESTED} agents");
        registries.push(Registry::start(&settings, dir.path(), agents).await);
    }
    let policy_counts: std::collections::BTreeSet<usize> =
        registries.iter().flat_map(|r| r.sets.clone()).collect();
    let mut results = Results::new();
    for policies in policy_counts {
        let set = policy_set(policies);
        let mut cedar_agents = Vec::new();
        let mut configs = Vec::new();
        for registry in registries.iter_mut().filter(|r| r.sets.contains(&policies)) {
            let agents = registry.agents;
            registry.aims.push(&set).await;
            let cedar = match (&settings.cedar_agent, &registry.cedar_data) {
                (Some(binary), Some(data)) => {
                    let (child, url, ready) =
                        start_cedar_agent(binary, dir.path(), &cedar_agent_policies(&set), data)
                            .await;
                    let rss = rss_mib(child.0.id());
                    registry.cedar_startup.push((policies, ready, rss));
                    let measured = (child.0.id(), url.clone());
                    cedar_agents.push(child);
                    Some(measured)
                }
                _ => None,
            };
            let (allowed, denied) =
                check_equal(&registry.aims, cedar.as_ref().map(|(_, url)| url.as_str())).await;
            eprintln!(
                "{agents} agents, {policies} policies: {allowed} allowed and {denied} denied probes agree"
            );
            configs.push((agents, cedar));
        }
        let configs: Vec<(usize, Config<'_>)> = configs
            .into_iter()
            .map(|(agents, cedar)| {
                let registry = registries.iter().find(|r| r.agents == agents).unwrap();
                let config = Config {
                    aims: &registry.aims,
                    cedar_slow: std::cell::Cell::new(false),
                    cedar,
                    floor: &floor,
                    bearer: registry.bearer.clone(),
                    authzen: registry.authzen.clone(),
                    cedar_lines: registry.cedar_lines.clone(),
                };
                (agents, config)
            })
            .collect();
        // Warm-up: connections, caches, the registry view's entities (and whether
        // cedar-agent is too slow for more than one connection).
        for (_, config) in &configs {
            for &target in &targets {
                for connections in [1, 16] {
                    config.measure(dir.path(), target, connections, 1).await;
                }
            }
        }
        for round in 0..settings.rounds {
            for &connections in &settings.connections {
                let mut registry_order: Vec<&(usize, Config<'_>)> = configs.iter().collect();
                registry_order.rotate_left(round % configs.len());
                for (agents, config) in registry_order {
                    let agents = *agents;
                    let mut order = targets.clone();
                    order.rotate_left(round % targets.len());
                    for &target in &order {
                        let Some(m) = config
                            .measure(dir.path(), target, connections, settings.seconds)
                            .await
                        else {
                            continue;
                        };
                        eprintln!(
                            "{agents} agents, {policies} policies, round {round}, {connections:>2} conns, {:<38} {:>7.0}/s p50 {:>6.2} ms p99 {:>7.2} ms, {:>5.0} µs CPU ({:.0} user + {:.0} kernel)",
                            target.label(),
                            m.per_s,
                            m.p50_ms,
                            m.p99_ms,
                            m.cpu_us(),
                            m.user_us,
                            m.kernel_us
                        );
                        results
                            .entry((agents, policies, connections, target))
                            .or_default()
                            .push(m);
                    }
                }
            }
        }
        drop(configs);
        drop(cedar_agents);
    }
    let scales: Vec<Scale> = registries
        .iter()
        .map(|r| Scale {
            agents: r.agents,
            fill: r.aims.fill,
            startup: r.aims.startup,
            rss_ready: r.aims.rss_ready,
            rss_after: rss_mib(r.aims.server.child.id()),
            cedar_startup: r.cedar_startup.clone(),
        })
        .collect();
    println!("load average at end: {}", loadavg());
    report(&settings, &targets, &results, &scales);
}

fn report(settings: &Settings, targets: &[Target], results: &Results, scales: &[Scale]) {
    println!();
    println!(
        "Medians of {} rounds, {} s each:",
        settings.rounds, settings.seconds
    );
    println!();
    println!(
        "| agents | policies | conns | server | decisions/s | p50 ms | p99 ms | server CPU µs/request | user | kernel |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    let configs: Vec<(usize, usize, usize)> = {
        let mut c: Vec<_> = results.keys().map(|(a, p, n, _)| (*a, *p, *n)).collect();
        c.dedup();
        c
    };
    for &(agents, policies, connections) in &configs {
        for &target in targets {
            let Some(runs) = results.get(&(agents, policies, connections, target)) else {
                continue;
            };
            let pick = |f: fn(&Measured) -> f64, decimals| {
                num(median(runs.iter().map(f).collect()), decimals)
            };
            println!(
                "| {agents} | {policies} | {connections} | {} | {} | {} | {} | {} | {} | {} |",
                target.label(),
                pick(|m| m.per_s, 1),
                pick(|m| m.p50_ms, 2),
                pick(|m| m.p99_ms, 2),
                pick(Measured::cpu_us, 0),
                pick(|m| m.user_us, 0),
                pick(|m| m.kernel_us, 0),
            );
        }
    }
    println!();
    println!(
        "Ratios per round, decisions/s (bearer, AuthZEN, DPoP ÷ cedar-agent; bearer ÷ floor); server CPU per request, bearer ÷ cedar-agent:"
    );
    println!();
    println!(
        "| agents | policies | conns | bearer ÷ cedar-agent | AuthZEN ÷ cedar-agent | DPoP ÷ cedar-agent | bearer ÷ floor | CPU/request bearer ÷ cedar-agent |"
    );
    println!("|---:|---:|---:|---|---|---|---|---|");
    for &(agents, policies, connections) in &configs {
        let runs = |t| results.get(&(agents, policies, connections, t));
        let ratios = |a: Target, b: Target, f: fn(&Measured) -> f64| match (runs(a), runs(b)) {
            (Some(a), Some(b)) => a
                .iter()
                .zip(b)
                .map(|(x, y)| num(f(x) / f(y), 2))
                .collect::<Vec<_>>()
                .join(" / "),
            _ => "–".to_owned(),
        };
        let rate = |m: &Measured| m.per_s;
        println!(
            "| {agents} | {policies} | {connections} | {} | {} | {} | {} | {} |",
            ratios(Target::AimsBearer, Target::CedarAgent, rate),
            ratios(Target::AimsAuthzen, Target::CedarAgent, rate),
            ratios(Target::AimsDpop, Target::CedarAgent, rate),
            ratios(Target::AimsBearer, Target::Floor, rate),
            ratios(Target::AimsBearer, Target::CedarAgent, Measured::cpu_us),
        );
    }
    println!();
    println!("Registry sizes:");
    println!();
    println!(
        "| agents | registry written s | AIMS start-up to ready s | AIMS RSS at ready MiB | AIMS RSS after the run MiB | cedar-agent ready s (policies) | cedar-agent RSS at ready MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---|---|");
    for s in scales {
        let cedar = |f: &dyn Fn(&(usize, Duration, f64)) -> String| {
            s.cedar_startup.iter().map(f).collect::<Vec<_>>().join(", ")
        };
        println!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.1} | {} | {} |",
            s.agents,
            s.fill.as_secs_f64(),
            s.startup.as_secs_f64(),
            s.rss_ready,
            s.rss_after,
            cedar(&|(p, d, _)| format!("{:.2} ({p})", d.as_secs_f64())),
            cedar(&|(p, _, r)| format!("{r:.1} ({p})")),
        );
    }
    // Decisions at the largest registry against the smallest, same policies and connections.
    if let (Some(small), Some(large)) = (settings.agents.first(), settings.agents.last())
        && small != large
    {
        println!();
        println!("Bearer decisions/s at {large} agents ÷ at {small}, per round:");
        println!();
        for &(agents, policies, connections) in &configs {
            if agents != *large {
                continue;
            }
            let key = |a| (a, policies, connections, Target::AimsBearer);
            if let (Some(l), Some(s)) = (results.get(&key(*large)), results.get(&key(*small))) {
                let r: Vec<String> = l
                    .iter()
                    .zip(s)
                    .map(|(l, s)| format!("{:.2}", l.per_s / s.per_s))
                    .collect();
                println!(
                    "- {policies} policies, {connections} connections: {}",
                    r.join(" / ")
                );
            }
        }
    }
}

fn main() {
    if std::env::var_os(ENV_FLOOR).is_some() {
        serve_floor();
        return;
    }
    let wrk_present = Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !wrk_present {
        println!(
            "wrk is not installed; this benchmark needs it as its load generator \
             (Debian: `apt-get install -y wrk`). Skipped."
        );
        return;
    }
    let settings = Settings::from_env();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(settings));
}
