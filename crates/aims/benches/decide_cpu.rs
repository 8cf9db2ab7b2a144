//! Server CPU per decision: an `aims server` process (SQLite store, the starter policies) is
//! asked for bearer-SVID decisions (`POST /v1/decisions`, each durably audited before its
//! answer) by 1, 16 and 64 concurrent callers, and the server's own user and kernel CPU time
//! (`/proc/<pid>/stat`) is divided by the number of answers. The floor, measured the same way
//! in the same run, is the same server answering `GET /healthz` (a handler returning fixed
//! JSON) to the same callers. The two alternate over rounds, so a slow spell of the shared
//! machine lands on both; the table gives the medians and the ratio.
//!
//! ```text
//! cargo bench -p aims --bench decide_cpu
//! ```

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

#[allow(dead_code, reason = "the benchmark reads CPU time, not memory")]
#[path = "common/proc.rs"]
mod proc;
#[allow(
    dead_code,
    reason = "the benchmark uses part of the shared test harness"
)]
#[path = "../tests/it/process.rs"]
mod process;
#[path = "common/stats.rs"]
mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aims_api::DecideRequest;
use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use ring::rand::SystemRandom;
use serde_json::json;

use proc::cpu_of;
use process::{ADMIN_TOKEN, Server, UNLIMITED};
use stats::{ms, percentile};

const ROUNDS: usize = 4;
/// Decisions per measurement, whatever the number of callers.
const DECISIONS: usize = 2_000;
/// Floor requests per measurement: more, so that the server's CPU time (counted in 10 ms
/// ticks) is read to within a few percent.
const FLOOR_REQUESTS: usize = 20_000;
const CALLERS: [usize; 3] = [1, 16, 64];

fn starter_policies() -> BTreeMap<String, String> {
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

/// A coding agent reading a repository (`coding-read-repository`: allowed, whatever the
/// posture's age).
fn read_request() -> DecideRequest {
    DecideRequest {
        action: "read".into(),
        resource: json!({"type": "Resource", "id": "github/acme/app", "system": "github",
                         "environment": "prod", "sensitivity": "internal", "kind": "repository"}),
        task_id: "bench".into(),
        intent: "bench".into(),
        arguments: serde_json::Map::new(),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Decision,
    Floor,
}

struct Measured {
    user_us: f64,
    kernel_us: f64,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(
    pid: u32,
    agent: &AdminClient,
    svid: &str,
    kind: Kind,
    callers: usize,
) -> Measured {
    let requests = match kind {
        Kind::Decision => DECISIONS,
        Kind::Floor => FLOOR_REQUESTS,
    };
    let each = requests / callers;
    let (user0, kernel0) = cpu_of(pid);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let agent = agent.clone();
            let svid = svid.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                for _ in 0..each {
                    let asked = Instant::now();
                    match kind {
                        Kind::Decision => {
                            let answer = agent.decide(&svid, &read_request()).await.unwrap();
                            assert_eq!(answer.decision, "allow");
                        }
                        Kind::Floor => agent.health().await.unwrap(),
                    }
                    latencies.push(asked.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let (user1, kernel1) = cpu_of(pid);
    let n = latencies.len() as f64;
    Measured {
        user_us: (user1 - user0).as_secs_f64() * 1e6 / n,
        kernel_us: (kernel1 - kernel0).as_secs_f64() * 1e6 / n,
        per_s: n / elapsed.as_secs_f64(),
        p50_ms: ms(percentile(&latencies, 0.5)),
        p99_ms: ms(percentile(&latencies, 0.99)),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let [source, credential] = UNLIMITED;
    let server = Server::start_with(
        &dir.path().join("server"),
        &[("AIMS_BOOTSTRAP_TOKEN", ADMIN_TOKEN), source, credential],
        &[],
    );
    let pid = server.child.id();
    eprintln!("server pid {pid}");
    let admin = AdminClient::new(&server.url, Some(ADMIN_TOKEN.to_owned())).unwrap();
    admin
        .push_policies(&aims_api::PushPolicyRequest {
            files: starter_policies(),
        })
        .await
        .unwrap();
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/agents", server.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"name": "coder", "owner": "bench", "environment": "prod",
                      "labels": {"team": "coding-agents"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    let svid = Attestor::new(AdminClient::new(&server.url, None).unwrap(), key)
        .attest(
            &Default::default(),
            &Credential::JoinToken(registered["join_token"].as_str().unwrap().to_owned()),
            None,
        )
        .await
        .unwrap()
        .svid;
    let agent = AdminClient::new(&server.url, None).unwrap();
    // Warm up both paths (connections, caches).
    for kind in [Kind::Decision, Kind::Floor] {
        measure(pid, &agent, &svid, kind, 16).await;
    }

    let mut results: BTreeMap<(usize, &str), Vec<Measured>> = BTreeMap::new();
    for round in 0..ROUNDS {
        for &callers in &CALLERS {
            let order = if round % 2 == 0 {
                [Kind::Decision, Kind::Floor]
            } else {
                [Kind::Floor, Kind::Decision]
            };
            for kind in order {
                let m = measure(pid, &agent, &svid, kind, callers).await;
                let label = match kind {
                    Kind::Decision => "decision",
                    Kind::Floor => "floor",
                };
                eprintln!(
                    "round {round} {callers:>2} callers {label:>8}: {:.0} µs user + {:.0} µs kernel, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
                    m.user_us, m.kernel_us, m.per_s, m.p50_ms, m.p99_ms
                );
                results.entry((callers, label)).or_default().push(m);
            }
        }
    }

    println!(
        "| callers | what | server CPU µs/request (user + kernel) | user | kernel | requests/s | p50 ms | p99 ms | CPU ÷ floor |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &callers in &CALLERS {
        let cpu = |label| {
            let runs = &results[&(callers, label)];
            median(runs.iter().map(|m| m.user_us + m.kernel_us).collect())
        };
        let floor = cpu("floor");
        for label in ["decision", "floor"] {
            let runs = &results[&(callers, label)];
            let pick = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
            println!(
                "| {callers} | {label} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1}× |",
                cpu(label),
                pick(|m| m.user_us),
                pick(|m| m.kernel_us),
                pick(|m| m.per_s),
                pick(|m| m.p50_ms),
                pick(|m| m.p99_ms),
                cpu(label) / floor
            );
        }
    }
    drop(server);
}
