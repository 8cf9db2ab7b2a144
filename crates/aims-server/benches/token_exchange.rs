//! Token-exchange throughput: `POST /oauth2/token` (RFC 8693, DPoP-bound) on a real server on
//! loopback, beside two baselines measured in the same run: how many ES256 signatures one core
//! of this machine makes per second (`ring`, the key the server signs with), and how many
//! single-event durable commits per second the same store makes (`Store::append_audit` of one
//! event, sequentially: the fsync floor a lone issuance pays), plus the in-process floor of
//! one exchange's signature work ([`in_process_floor`]). Per phase it also prints the store's
//! write transactions as the store reports them (`Store::observe_writes`): how many writes
//! shared each, and how long each held the audit-head lock.
//!
//! Each exchange verifies the SVID and the DPoP proof, takes the agent, its posture and the
//! resource server from the replica's memory (its registry view and resource-server cache, which
//! read the store once), decides one `obtain` per requested scope, signs the token and commits it (with
//! its new task, the burned proof and its audit event) in one write — one fsync per exchange
//! for a lone client, which bounds its rate. On SQLite concurrent exchanges share group commits
//! under the head lock; on PostgreSQL each runs in its own transaction under row locks with its
//! event queued, so it is not among the write transactions reported. The client signs a fresh proof per request inside the
//! measured loop. Runs on SQLite, and on PostgreSQL when `AIMS_TEST_DATABASE_URL` is set.
//!
//! ```text
//! AIMS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p aims-server --bench token_exchange
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
use std::time::Instant;

use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_server::config::{Config, Overrides};
use aims_store::{PostgresStore, SqliteStore, Store, WriteBatch};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use aims_token::signing::SigningKey;
use ring::rand::SystemRandom;
use serde_json::{Value, json};

const ADMIN: &str = "aims-bench-bootstrap-credential-0123456789abcdef";
const AUDIENCE: &str = "https://tools.bench.example";
const WARMUP: usize = 50;
const SEQUENTIAL: usize = 300;
/// Concurrent clients, and how many exchanges each makes (960 in all at every level).
const CONCURRENT: [(usize, usize); 2] = [(16, 60), (64, 15)];
const SIGNATURES: usize = 5_000;
const FLOOR_EXCHANGES: usize = 3_000;
const COMMITS: usize = 300;

fn policies() -> BTreeMap<String, String> {
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

/// Exchanges per second on one core counting only the signature work the server must do per
/// exchange, with no HTTP, no store and no policy: verifying a fresh DPoP proof (ES256) and
/// signing the access token (ES256, a message of a token's size). The SVID's own check is
/// left out because the server verifies a known SVID once until it expires; the two `obtain`
/// decisions (a few µs each) are left out too, so this floor is an upper bound on the
/// in-process rate of the same exchange.
fn in_process_floor() -> f64 {
    let rng = SystemRandom::new();
    let server = SigningKey::generate(&rng).unwrap().key;
    let agent = AgentKey::generate(AgentKeyKind::P256, &rng).unwrap();
    let url = "https://aims.bench.example/oauth2/token";
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let proofs: Vec<String> = (0..FLOOR_EXCHANGES + 200)
        .map(|_| aims_token::dpop::sign_proof(&agent, &rng, "POST", url, None, now).unwrap())
        .collect();
    let token = [7u8; 700];
    let check = aims_token::dpop::ProofCheck {
        method: "POST",
        url,
        access_token: None,
        now,
    };
    let exchange = |proof: &String| {
        aims_token::dpop::verify_proof(proof, &check).unwrap();
        server.sign(&rng, &token).unwrap();
    };
    proofs.iter().take(200).for_each(exchange);
    let started = Instant::now();
    proofs.iter().skip(200).for_each(exchange);
    FLOOR_EXCHANGES as f64 / started.elapsed().as_secs_f64()
}

/// ES256 signatures per second on one core, by the server's signing key type.
fn signing_rate() -> f64 {
    let rng = SystemRandom::new();
    let key = SigningKey::generate(&rng).unwrap().key;
    let message = [7u8; 200];
    for _ in 0..200 {
        key.sign(&rng, &message).unwrap();
    }
    let started = Instant::now();
    for _ in 0..SIGNATURES {
        key.sign(&rng, &message).unwrap();
    }
    SIGNATURES as f64 / started.elapsed().as_secs_f64()
}

struct Agent {
    base: String,
    http: reqwest::Client,
    key: Arc<AgentKey>,
    svid: String,
}

impl Agent {
    async fn exchange(&self) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let url = format!("{}/oauth2/token", self.base);
        let proof =
            aims_token::dpop::sign_proof(&self.key, &SystemRandom::new(), "POST", &url, None, now)
                .unwrap();
        let resp = self
            .http
            .post(&url)
            .header("DPoP", proof)
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", self.svid.as_str()),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("scope", "read:repo/acme/* write:repo/acme/app"),
                ("audience", AUDIENCE),
                ("intent", "benchmark"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
}

async fn setup(store: Arc<dyn Store>, dir: &tempfile::TempDir) -> Agent {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_owned()),
        ..Overrides::default()
    };
    // One agent exchanging as fast as it can: the per-credential rate limit would measure
    // itself, not the server, so it is raised out of the way.
    let env: HashMap<String, String> = [
        ("AIMS_BOOTSTRAP_TOKEN", ADMIN),
        ("AIMS_RATE_LIMIT_PER_SOURCE", "1000000/1000000"),
        ("AIMS_RATE_LIMIT_PER_CREDENTIAL", "1000000/1000000"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let config = Config::load_with(&overrides, &|k| env.get(k).cloned()).unwrap();
    let server = aims_server::server::start_with_store(config, store, &|k| env.get(k).cloned())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    std::mem::forget(server); // serve until the process exits
    let admin = AdminClient::new(&base, Some(ADMIN.to_owned())).unwrap();
    admin
        .push_policies(&aims_api::PushPolicyRequest { files: policies() })
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let rs = post(
        "/v1/resource-servers",
        json!({"name": "bench-tools", "audience": AUDIENCE, "system": "github"}),
    )
    .await
    .unwrap();
    assert_eq!(rs.status(), 201);
    let registered: Value = post(
        "/v1/agents",
        json!({"name": "planner", "owner": "bench", "labels": {"role": "planner"},
               "limits": {"max_token_ttl_s": 900}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
    let svid = Attestor::new(AdminClient::new(&base, None).unwrap(), key.clone())
        .attest(
            &Default::default(),
            &Credential::JoinToken(registered["join_token"].as_str().unwrap().to_owned()),
            None,
        )
        .await
        .unwrap()
        .svid;
    Agent {
        base,
        http,
        key,
        svid,
    }
}

/// Single-event durable commits per second on `store`, sequentially.
async fn commit_rate(store: &dyn Store) -> f64 {
    let event = |i: usize| {
        let mut e = aims_core::audit::AuditEvent::new(
            time::OffsetDateTime::now_utc(),
            aims_core::audit::Actor::System,
            "bench.commit",
            aims_core::audit::Outcome::Success,
        );
        e.details = json!({ "i": i });
        e
    };
    for i in 0..20 {
        store.append_audit(&[event(i)]).await.unwrap();
    }
    let started = Instant::now();
    for i in 0..COMMITS {
        store.append_audit(&[event(i)]).await.unwrap();
    }
    COMMITS as f64 / started.elapsed().as_secs_f64()
}

async fn measure(
    name: &str,
    store: Arc<dyn Store>,
    dir: &tempfile::TempDir,
    baselines: &Baselines,
) {
    let commits_per_s = commit_rate(store.as_ref()).await;
    let batches = Arc::new(std::sync::Mutex::new(Vec::<WriteBatch>::new()));
    store.observe_writes({
        let batches = Arc::clone(&batches);
        Arc::new(move |batch| batches.lock().unwrap().push(*batch))
    });
    // What the store's write transactions did during one phase: their count, writes per
    // transaction, and how long each held the audit-head lock.
    let phase = |what: String| {
        let mut seen = std::mem::take(&mut *batches.lock().unwrap());
        seen.sort_by_key(|b| b.held);
        let writes: usize = seen.iter().map(|b| b.writes).sum();
        let at = |q: f64| {
            seen[((seen.len() - 1) as f64 * q) as usize]
                .held
                .as_secs_f64()
                * 1e6
        };
        format!(
            "| {name} | {what} | {} | {:.1} | {:.0} | {:.0} |",
            seen.len(),
            writes as f64 / seen.len() as f64,
            at(0.5),
            at(0.99)
        )
    };
    let agent = Arc::new(setup(store, dir).await);
    for _ in 0..WARMUP {
        agent.exchange().await;
    }
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        agent.exchange().await;
    }
    let sequential = SEQUENTIAL as f64 / started.elapsed().as_secs_f64();
    let mut locks = vec![phase("exchange, 1 client, sequential".to_owned())];
    let mut concurrent = Vec::new();
    for (clients, each) in CONCURRENT {
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let agent = agent.clone();
                tokio::spawn(async move {
                    for _ in 0..each {
                        agent.exchange().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let rate = (clients * each) as f64 / started.elapsed().as_secs_f64();
        concurrent.push((clients, each, rate));
        locks.push(phase(format!("exchange, {clients} concurrent clients")));
    }
    println!(
        "| store | what | operations | per second | × ES256 signing rate | × in-process floor | × durable commit rate |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let row = |what: String, operations: usize, rate: f64| {
        println!(
            "| {name} | {what} | {operations} | {rate:.0} | {:.3} | {:.3} | {:.2} |",
            rate / baselines.signatures,
            rate / baselines.floor,
            rate / commits_per_s
        );
    };
    row(
        "baseline: 1-event durable commits, sequential".to_owned(),
        COMMITS,
        commits_per_s,
    );
    row(
        "exchange, 1 client, sequential".to_owned(),
        SEQUENTIAL,
        sequential,
    );
    for (clients, each, rate) in concurrent {
        row(
            format!("exchange, {clients} concurrent clients"),
            clients * each,
            rate,
        );
    }
    println!();
    println!(
        "| store | phase | write transactions | writes per transaction | head lock held p50, µs | p99, µs |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for line in locks {
        println!("{line}");
    }
    println!();
}

/// What the exchange rates are compared with, measured in the same run.
struct Baselines {
    /// ES256 signatures per second on one core.
    signatures: f64,
    /// [`in_process_floor`].
    floor: f64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let baselines = Baselines {
        signatures: signing_rate(),
        floor: in_process_floor(),
    };
    println!(
        "baseline: ES256 signatures/s on one core (ring): {:.0}",
        baselines.signatures
    );
    println!(
        "baseline: in-process exchange floor on one core (DPoP proof verify + token sign): {:.0}/s",
        baselines.floor
    );
    println!();
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("aims.db"))
            .await
            .unwrap(),
    );
    measure("SQLite", sqlite, &dir, &baselines).await;
    if let Ok(url) = std::env::var("AIMS_TEST_DATABASE_URL") {
        let pg_dir = tempfile::tempdir().unwrap();
        let schema = format!("bench_exchange_{}", std::process::id());
        let pg: Arc<dyn Store> = Arc::new(
            PostgresStore::connect_with_schema(&url, &schema)
                .await
                .unwrap(),
        );
        measure("PostgreSQL", pg, &pg_dir, &baselines).await;
    }
}
