//! Decisions over HTTP: `POST /v1/decisions` on a real server on loopback (SQLite store, every
//! decision audited before it is answered) with 10, 100, 1,000 and 10,000 active policies,
//! beside two baselines measured in the same run: a loopback round trip (`GET /healthz`) and
//! plain Cedar evaluating the whole set in-process for the same request.
//!
//! Each size pushes the starter policies plus generated per-agent, per-tool permits with
//! conditions, attests one coding agent, checks the decision is `allow`, then measures
//! sequential decisions (latency) and 16 concurrent callers (throughput). The machines are
//! shared and noisy: the claim is the ratios, not the bare times.
//!
//! ```text
//! cargo bench -p aims-server --bench decide_http
//! ```

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aims_api::DecideRequest;
use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_server::config::{Config, Overrides};
use aims_store::SqliteStore;
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use ring::rand::SystemRandom;
use serde_json::json;

const ADMIN: &str = "aims-bench-bootstrap-credential-0123456789abcdef";
const SEQUENTIAL: usize = 400;
const CONCURRENT_TASKS: usize = 16;
const CONCURRENT_EACH: usize = 50;

fn starter() -> BTreeMap<String, String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    std::fs::read_dir(dir)
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
        .collect()
}

/// The starter set plus `total - starter` generated permits for other agents and tools.
fn policies(total: usize) -> BTreeMap<String, String> {
    let mut files = starter();
    let have = files
        .values()
        .map(|t| t.matches("@id(").count())
        .sum::<usize>();
    let mut filler = String::new();
    for i in 0..total.saturating_sub(have) {
        filler.push_str(&format!(
            "@id(\"filler-{i}\")\npermit (principal == Aims::Agent::\"agent-{}\", action == Aims::Action::\"call_tool\", resource == Aims::Tool::\"tool-{}\")\nwhen {{ context.posture_age_s < 300 && principal.trust_level >= 1 }};\n",
            i % 997,
            i
        ));
    }
    files.insert("filler.cedar".into(), filler);
    files
}

fn write_request() -> DecideRequest {
    DecideRequest {
        action: "write".into(),
        resource: json!({"type": "Resource", "id": "github/acme/app@main", "system": "github",
                         "environment": "prod", "sensitivity": "internal", "kind": "branch"}),
        task_id: "bench".into(),
        intent: "bench".into(),
        arguments: serde_json::Map::new(),
    }
}

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

struct Row {
    policies: usize,
    http_us: f64,
    http_per_s: f64,
    roundtrip_us: f64,
    cedar_us: f64,
}

async fn measure(total: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("aims.db"))
            .await
            .unwrap(),
    );
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_owned()),
        ..Overrides::default()
    };
    // Large policy sets need more than the default 64 KiB request body.
    let config_file = dir.path().join("aims.toml");
    std::fs::write(&config_file, "version = 1\nmax_body_bytes = 33554432\n").unwrap();
    let env: HashMap<String, String> = [
        ("AIMS_BOOTSTRAP_TOKEN".to_owned(), ADMIN.to_owned()),
        (
            "AIMS_CONFIG".to_owned(),
            config_file.to_string_lossy().into_owned(),
        ),
    ]
    .into();
    let config = Config::load_with(&overrides, &|k| env.get(k).cloned()).unwrap();
    let server = aims_server::server::start_with_store(config, store, &|k| env.get(k).cloned())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    let admin = AdminClient::new(&base, Some(ADMIN.to_owned())).unwrap();
    let files = policies(total);
    let pushed = admin
        .push_policies(&aims_api::PushPolicyRequest {
            files: files.clone(),
        })
        .await
        .unwrap();
    // The starter set alone may hold more than `total`; the row names what was pushed.
    let expected = files
        .values()
        .map(|t| t.matches("@id(").count())
        .sum::<usize>();
    assert_eq!(pushed.policies, expected, "policy count");
    let http = reqwest::Client::new();
    let registered: serde_json::Value = http
        .post(format!("{base}/v1/agents"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "coder", "owner": "bench", "environment": "prod", "labels": {"team": "coding-agents"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    let svid = Attestor::new(AdminClient::new(&base, None).unwrap(), key)
        .attest(
            &Default::default(),
            &Credential::JoinToken(registered["join_token"].as_str().unwrap().to_owned()),
            None,
        )
        .await
        .unwrap()
        .svid;
    let agent = AdminClient::new(&base, None).unwrap();
    let first = agent.decide(&svid, &write_request()).await.unwrap();
    assert_eq!(first.decision, "allow");

    // Loopback round trip.
    for _ in 0..50 {
        agent.health().await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        agent.health().await.unwrap();
    }
    let roundtrip_us = micros(started.elapsed(), SEQUENTIAL);

    // Sequential decisions.
    for _ in 0..50 {
        agent.decide(&svid, &write_request()).await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        agent.decide(&svid, &write_request()).await.unwrap();
    }
    let http_us = micros(started.elapsed(), SEQUENTIAL);

    // Concurrent callers (decisions share group commits).
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT_TASKS)
        .map(|_| {
            let agent = agent.clone();
            let svid = svid.clone();
            tokio::spawn(async move {
                for _ in 0..CONCURRENT_EACH {
                    agent.decide(&svid, &write_request()).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let http_per_s = (CONCURRENT_TASKS * CONCURRENT_EACH) as f64 / started.elapsed().as_secs_f64();

    // Plain Cedar on the whole set, for the same principal, action, resource and context.
    let engine = aims_server::policy::compile(&files).unwrap();
    let explanation = admin
        .explain(&aims_api::ExplainRequest {
            agent: aims_core::id::AgentName::new("coder").unwrap(),
            request: write_request(),
        })
        .await
        .unwrap();
    assert_eq!(explanation["decision"]["effect"], "allow");
    let request: aims_policy::DecisionRequest = serde_json::from_value(json!({
        "principal": {"name": "coder", "spiffe_id": "spiffe://aims.local/agent/coder", "owner": "bench",
                      "teams": ["coding-agents"], "environment": "prod", "state": "active", "trust_level": 0,
                      "model": "", "toolchain": {"framework": "", "version": ""},
                      "posture": {"identity_verified": true, "runtime_checks_passed": true}, "labels": {"team": "coding-agents"}},
        "action": "write",
        "resource": {"object": write_request().resource},
        "context": {"time": "2026-11-23T12:00:00Z", "posture_age_s": 5, "task_id": "bench", "intent": "bench",
                    "environment": "prod", "source_ip": "127.0.0.1"}
    }))
    .unwrap();
    let built = request.to_cedar(engine.schema()).unwrap();
    let authorizer = aims_policy::cedar_policy::Authorizer::new();
    let rounds = if total >= 10_000 { 20 } else { 200 };
    let started = Instant::now();
    for _ in 0..rounds {
        let response = authorizer.is_authorized(
            built.request_as_asked(),
            engine.cedar_policy_set(),
            built.entities(),
        );
        assert_eq!(
            response.decision(),
            aims_policy::cedar_policy::Decision::Allow
        );
    }
    let cedar_us = micros(started.elapsed(), rounds);

    server.shutdown();
    server.wait().await.unwrap();
    Row {
        policies: pushed.policies,
        http_us,
        http_per_s,
        roundtrip_us,
        cedar_us,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<Row> = [10, 100, 1_000, 10_000]
        .into_iter()
        .map(|n| {
            eprintln!("measuring {n} policies");
            runtime.block_on(measure(n))
        })
        .collect();
    println!(
        "| policies | HTTP decision µs (sequential) | HTTP decisions/s (16 callers) | loopback GET /healthz µs | decision ÷ round trip | plain Cedar in-process µs (whole set) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.1}× | {:.1} |",
            r.policies,
            r.http_us,
            r.http_per_s,
            r.roundtrip_us,
            r.http_us / r.roundtrip_us,
            r.cedar_us
        );
    }
}
