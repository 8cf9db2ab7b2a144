//! The registry view at scale: what each replica's in-memory view of the agents
//! ([`RegistryView`]) costs to load and to hold, and what reading an agent from it costs
//! against reading it from the store as the decision path did before the view.
//!
//! For 10 and 100,000 registered agents, each with an accepted posture (a SQLite store on
//! tmpfs when `/dev/shm` exists, so that filling it is quick), one run measures:
//!
//! - **load**: a fresh view catching up with the whole change log (what a replica does at
//!   start), the process's resident memory before and after, and the heap the view holds per
//!   agent (bytes allocated and not freed across the load, counted by `cap`'s allocator
//!   around the system's);
//! - **decided**: every agent then decides once through the view (a repository read under one
//!   policy), which builds its principal's Cedar entity; the view keeps at most
//!   `ENTITIES_KEPT` of them. The heap this adds per agent is what a view holds at most once
//!   every agent has been active: an entity's whole size at 10 agents, the bound's share at
//!   100,000;
//! - **view lookup**: `RegistryView::get` of random agents;
//! - **store lookup** (the baseline): `Store::agent` plus `Store::posture_snapshot` of random
//!   agents, the two reads a decision made before the view.
//!
//! Every load is checked to hold every agent with its posture. The result is a Markdown table
//! on stdout. The machines are shared and noisy: the claim is the ratios within one run.
//!
//! ```text
//! cargo bench -p aims-server --bench registry_view
//! ```

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::alloc::System;
use std::time::{Duration, Instant};

use aims_core::agent::{Agent, LifecycleState, Limits};
use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use aims_core::credential::CredentialHash;
use aims_core::id::{AgentName, TrustDomain};
use aims_core::posture::{Evidence, ModelEvidence, PostureProfile};
use aims_policy::{Effect, Engine, PolicySource, Schema, Validation};
use aims_server::decisions::{Asked, Question, request_for};
use aims_server::registry::RegistryView;
use aims_store::{
    AttestationRecord, IssuedCredential, IssuedKind, JoinTokenRecord, PostureSnapshot, SqliteStore,
    Store,
};
use time::OffsetDateTime;

/// The system allocator, counting the bytes it holds for the program.
#[global_allocator]
static ALLOCATOR: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

const LOOKUPS: usize = 200_000;
const STORE_LOOKUPS: usize = 5_000;

fn name(i: usize) -> AgentName {
    AgentName::new(format!("agent-{i:06}")).unwrap()
}

/// Registers agent `i` and accepts a posture for it.
async fn register(store: &dyn Store, i: usize, now: OffsetDateTime) {
    let agent = Agent {
        name: name(i),
        owner: "bench@acme.example".parse().unwrap(),
        environment: "prod".parse().unwrap(),
        description: String::new(),
        posture_profile: PostureProfile::default(),
        limits: Limits::default(),
        labels: [("team".parse().unwrap(), "coding-agents".to_owned())].into(),
        state: LifecycleState::Active,
        created_at: now,
        updated_at: now,
        recertify_by: now + time::Duration::days(90),
        revision: 1,
    };
    let event = |what| AuditEvent::new(now, Actor::System, what, Outcome::Success);
    let join = JoinTokenRecord {
        hash: CredentialHash::of(&format!("join-{i}")),
        agent: name(i),
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
    let record = AttestationRecord {
        snapshot: PostureSnapshot {
            agent: name(i),
            digest: evidence.digest(),
            evidence,
            key_thumbprint: format!("jkt-{i}"),
            accepted_at: now,
        },
        credential: IssuedCredential {
            id: format!("svid-{i}"),
            kind: IssuedKind::Svid,
            agent: name(i),
            parent: None,
            key_thumbprint: Some(format!("jkt-{i}")),
            issued_at: now,
            expires_at: now + time::Duration::hours(1),
            revoked_at: None,
            task_id: None,
            audience: None,
        },
    };
    store
        .record_attestation(&record, &event("identity.issue"))
        .await
        .unwrap();
}

/// The process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

/// An engine of one policy: an active agent may read repositories.
fn engine() -> Engine {
    Engine::compile(
        Schema::aims().unwrap(),
        &[PolicySource::new(
            "bench.cedar",
            r#"permit(principal, action == Aims::Action::"read", resource is Aims::Resource)
               when { principal.state == "active" };"#,
        )],
        Validation::Strict,
    )
    .unwrap()
}

/// Agent `known` asks `view` to read a repository (the question as `/v1/decisions` takes it):
/// allowed.
fn decide_once(
    view: &RegistryView,
    engine: &Engine,
    known: &aims_server::registry::KnownAgent,
    now: OffsetDateTime,
) {
    let wire = serde_json::json!({
        "action": "read",
        "resource": {"type": "Resource", "id": "acme/app", "system": "github",
                     "environment": "prod", "sensitivity": "internal", "kind": "repository"},
        "task_id": "task-1",
        "intent": "bench",
    });
    let question = Question::from_wire(serde_json::from_value(wire).unwrap()).unwrap();
    let asked = Asked {
        at: now,
        source_ip: "127.0.0.1".parse().unwrap(),
    };
    let request = request_for(known, question, asked, None);
    let decision = view.decide(known, engine, &request).unwrap();
    assert_eq!(decision.effect, Effect::Allow);
}

/// A cheap deterministic sequence of agent indexes below `n`.
fn indexes(n: usize, count: usize) -> impl Iterator<Item = usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    })
}

struct Row {
    agents: usize,
    load: Duration,
    rss_before: f64,
    rss_after: f64,
    heap_per_agent: f64,
    decided_heap_per_agent: f64,
    view_ns: f64,
    store_ns: f64,
}

async fn measure(agents: usize) -> Row {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let store = SqliteStore::open(&dir.path().join("aims.db"))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let filling = Instant::now();
    for i in 0..agents {
        register(&store, i, now).await;
    }
    eprintln!("{agents} agents registered in {:?}", filling.elapsed());

    let rss_before = rss_mib();
    let held_before = ALLOCATOR.allocated();
    let view = RegistryView::new(
        TrustDomain::new("aims.local").unwrap(),
        Duration::from_secs(3600),
    );
    let started = Instant::now();
    view.catch_up(&store).await.unwrap();
    let load = started.elapsed();
    let rss_after = rss_mib();
    let heap_per_agent = ALLOCATOR.allocated().saturating_sub(held_before) as f64 / agents as f64;
    assert_eq!(view.len(), agents);
    for i in indexes(agents, 100) {
        let known = view.get(&name(i)).unwrap().unwrap();
        assert!(known.posture.is_some() && known.principal.posture.identity_verified);
    }

    let engine = engine();
    let held_before_decisions = ALLOCATOR.allocated();
    for i in 0..agents {
        decide_once(&view, &engine, &view.get(&name(i)).unwrap().unwrap(), now);
    }
    let decided_heap_per_agent =
        ALLOCATOR.allocated().saturating_sub(held_before_decisions) as f64 / agents as f64;

    let names: Vec<AgentName> = indexes(agents, LOOKUPS).map(name).collect();
    let started = Instant::now();
    for n in &names {
        std::hint::black_box(view.get(n).unwrap());
    }
    let view_ns = started.elapsed().as_nanos() as f64 / LOOKUPS as f64;

    let started = Instant::now();
    for n in names.iter().take(STORE_LOOKUPS) {
        let agent = store.agent(n).await.unwrap();
        let snapshot = store.posture_snapshot(n).await.unwrap();
        std::hint::black_box((agent, snapshot));
    }
    let store_ns = started.elapsed().as_nanos() as f64 / STORE_LOOKUPS as f64;
    Row {
        agents,
        load,
        rss_before,
        rss_after,
        heap_per_agent,
        decided_heap_per_agent,
        view_ns,
        store_ns,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<Row> = [10, 100_000]
        .into_iter()
        .map(|n| runtime.block_on(measure(n)))
        .collect();
    println!(
        "| agents | view load ms | RSS before MiB | RSS after MiB | view heap bytes per agent | added once each has decided, bytes per agent (entities kept at most: {}) | view lookup ns | store lookup ns (agent + posture) | store ÷ view |",
        aims_server::registry::ENTITIES_KEPT
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}× |",
            r.agents,
            r.load.as_secs_f64() * 1000.0,
            r.rss_before,
            r.rss_after,
            r.heap_per_agent,
            r.decided_heap_per_agent,
            r.view_ns,
            r.store_ns,
            r.store_ns / r.view_ns
        );
    }
    let (small, large) = (&rows[0], &rows[1]);
    println!();
    println!(
        "View lookup at {} agents ÷ at {} agents: {:.2}",
        large.agents,
        small.agents,
        large.view_ns / small.view_ns
    );
}
