//! Decision latency and throughput: the indexed AIMS engine beside plain Cedar on the same
//! policy set, in the same run, at 10, 100, 1,000 and 10,000 policies.
//!
//! Run: `cargo bench -p aims-policy --bench decide`. Prints a Markdown table.
//!
//! Both sides do the same work per decision: build the request's entities and Cedar request
//! from a `DecisionRequest`, then decide. AIMS evaluates the policies its index selects (and
//! applies error-is-deny and the approval rule); plain Cedar runs `Authorizer::is_authorized`
//! on the whole set. AIMS is also measured as a registry view uses it: each agent's entity
//! built once (`PrincipalEntity`) and shared by its requests (`Engine::decide_as`), only the
//! resource and the context built per request. The policy sets are generated: per-agent, per-tool permits with
//! conditions, per-agent data permits over a system, per-team forbids with conditions and
//! one global forbid, with agents, tools and teams growing with the set.
//!
//! The machine may be shared: measurements are taken in interleaved rounds (every size in
//! turn, several times) and the median round is reported, so a burst of load elsewhere
//! does not land on one size only. `AIMS_BENCH_STAGES=1` also prints where the time of one
//! decision goes.

// A benchmark: a failed unwrap should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aims_policy::cedar_policy::{Authorizer, Decision as CedarDecision};
use aims_policy::{
    Agent, DecisionRequest, Effect, Engine, PolicySource, Posture, PrincipalEntity, RequestContext,
    Resource, ResourceObject, Schema, Toolchain, Validation,
};

const SIZES: &[usize] = &[10, 100, 1_000, 10_000];
const REQUESTS: usize = 256;

/// Deterministic pseudo-random numbers (no dependency, same sets every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

struct Shape {
    agents: usize,
    tools: usize,
    teams: usize,
    systems: usize,
}

impl Shape {
    fn for_size(n: usize) -> Self {
        Self {
            agents: (n / 5).max(2),
            tools: (n / 10).max(5),
            teams: (n / 100).max(2),
            systems: (n / 50).max(2),
        }
    }
}

fn policies(n: usize, s: &Shape) -> String {
    let mut out = String::from(
        "@id(\"baseline-only-active\")\nforbid(principal, action, resource) unless { principal.state == \"active\" };\n",
    );
    for i in 1..n {
        let agent = i % s.agents;
        let tool = (i * 7) % s.tools;
        let text = match i % 10 {
            9 => format!(
                "@id(\"forbid-{i}\")\nforbid(principal in Aims::Team::\"team-{}\", action == Aims::Action::\"call_tool\", resource == Aims::Tool::\"tool-{tool}\")\n  when {{ context.posture_age_s > 120 || (resource.sensitivity == \"secret\" && !context.approved) }};\n",
                i % s.teams
            ),
            8 => format!(
                "@id(\"data-{i}\")\npermit(principal == Aims::Agent::\"agent-{agent}\", action in Aims::Action::\"read_only\", resource in Aims::System::\"sys-{}\")\n  when {{ resource.environment == principal.environment && context.time.toTime() >= duration(\"6h\") }};\n",
                i % s.systems
            ),
            _ => format!(
                "@id(\"tool-{i}\")\npermit(principal == Aims::Agent::\"agent-{agent}\", action == Aims::Action::\"call_tool\", resource == Aims::Tool::\"tool-{tool}\")\n  when {{ context.posture_age_s < 300 && principal.trust_level >= 1 && principal.posture.runtime_checks_passed }};\n"
            ),
        };
        out.push_str(&text);
    }
    out
}

fn agent(i: usize, s: &Shape) -> Agent {
    Agent {
        name: format!("agent-{i}"),
        spiffe_id: format!("spiffe://acme.example/agent/agent-{i}"),
        owner: format!("owner-{}", i % 7),
        teams: vec![format!("team-{}", i % s.teams)],
        environment: "prod".to_owned(),
        state: "active".to_owned(),
        trust_level: 2,
        model: "model-x".to_owned(),
        toolchain: Toolchain {
            framework: "aims-sdk".to_owned(),
            version: "1.0".to_owned(),
            manifest_digest: None,
        },
        posture: Posture {
            identity_verified: true,
            runtime_checks_passed: true,
            model_digest: None,
            image_digest: None,
        },
        labels: [("role".to_owned(), "coding".to_owned())].into(),
    }
}

fn requests(s: &Shape, rng: &mut Lcg, new_second: bool) -> Vec<DecisionRequest> {
    (0..REQUESTS)
        .map(|k| {
            let a = rng.next(s.agents);
            let (action, resource) = if k % 4 == 3 {
                (
                    "read",
                    ResourceObject {
                        entity_type: "Resource".to_owned(),
                        id: format!("doc-{}", rng.next(1000)),
                        system: format!("sys-{}", rng.next(s.systems)),
                        environment: "prod".to_owned(),
                        sensitivity: "internal".to_owned(),
                        kind: "document".to_owned(),
                        labels: Default::default(),
                        parents: Vec::new(),
                    },
                )
            } else {
                // Mostly a tool this agent has a permit for, sometimes any tool.
                let tool = if k % 4 == 0 {
                    rng.next(s.tools)
                } else {
                    ((a + s.agents * rng.next(5)) * 7) % s.tools
                };
                (
                    "call_tool",
                    ResourceObject {
                        entity_type: "Tool".to_owned(),
                        id: format!("tool-{tool}"),
                        system: format!("sys-{}", tool % s.systems),
                        environment: "prod".to_owned(),
                        sensitivity: if tool % 5 == 0 { "secret" } else { "internal" }.to_owned(),
                        kind: "mcp-tool".to_owned(),
                        labels: Default::default(),
                        parents: Vec::new(),
                    },
                )
            };
            DecisionRequest {
                decision_id: None,
                principal: agent(a, s).into(),
                action: action.to_owned(),
                resource: Resource::Object(resource),
                context: RequestContext {
                    // Spread over a few seconds, as a busy decision point sees them (or a
                    // new second for every request: the worst case for building `time`).
                    time: time::macros::datetime!(2026-03-02 10:00 UTC)
                        + time::Duration::seconds(
                            i64::try_from(if new_second { k } else { k / 64 }).unwrap_or(0),
                        ),
                    posture_age_s: i64::try_from(rng.next(200)).unwrap_or(0),
                    task_id: format!("task-{k}"),
                    intent: "bench".to_owned(),
                    delegation_depth: 0,
                    delegation_chain: Vec::new(),
                    approved: false,
                    environment: "prod".to_owned(),
                    // A handful of enforcement points.
                    source_ip: std::net::IpAddr::from([10, 0, 0, u8::try_from(k % 8).unwrap_or(0)]),
                    arguments: serde_json::Map::new(),
                },
            }
        })
        .collect()
}

/// Run `f` over the requests round-robin until `budget` has passed (at least `min`
/// decisions); µs per decision.
fn measure(
    reqs: &[DecisionRequest],
    budget: Duration,
    min: usize,
    mut f: impl FnMut(&DecisionRequest),
) -> f64 {
    for r in reqs.iter().take(8) {
        f(r);
    }
    let start = Instant::now();
    let mut n = 0usize;
    while n < min || start.elapsed() < budget {
        if let Some(r) = reqs.get(n % reqs.len()) {
            f(r);
        }
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

struct Case {
    n: usize,
    engine: Engine,
    reqs: Vec<DecisionRequest>,
    /// The same requests already in Cedar's form, for the evaluation-only comparison.
    built: Vec<aims_policy::CedarRequest>,
    /// Each request's principal, built once per agent (as a registry view holds it).
    principals: Vec<Arc<PrincipalEntity>>,
    mix: (usize, usize, usize),
    evaluated: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Each request's principal entity, one per agent, shared by that agent's requests.
fn principals(engine: &Engine, reqs: &[DecisionRequest]) -> Vec<Arc<PrincipalEntity>> {
    let mut by_name: HashMap<String, Arc<PrincipalEntity>> = HashMap::new();
    reqs.iter()
        .map(|r| {
            Arc::clone(by_name.entry(r.principal.name.clone()).or_insert_with(|| {
                Arc::new(PrincipalEntity::new(r.principal.clone(), engine.schema()).unwrap())
            }))
        })
        .collect()
}

fn plain_decide(authorizer: &Authorizer, engine: &Engine, r: &DecisionRequest) {
    let built = r.to_cedar(engine.schema()).unwrap();
    black_box(authorizer.is_authorized(
        built.request_as_asked(),
        engine.cedar_policy_set(),
        built.entities(),
    ));
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let authorizer = Authorizer::new();
    let mut cases = Vec::new();
    for &n in SIZES {
        let shape = Shape::for_size(n);
        let compile_start = Instant::now();
        let engine = match Engine::compile(
            Schema::aims().unwrap(),
            &[PolicySource::new("bench.cedar", policies(n, &shape))],
            Validation::Strict,
        ) {
            Ok(e) => e,
            Err(e) => panic!("bench policies do not compile: {e}"),
        };
        eprintln!(
            "{n} policies: compiled and validated in {:.2} s, {} index buckets",
            compile_start.elapsed().as_secs_f64(),
            engine.index_buckets()
        );
        let reqs = requests(&shape, &mut Lcg(42 + n as u64), false);
        // The outcome mix, and the same answers on both sides (no errors in these sets).
        let (mut allow, mut approval, mut deny, mut evaluated) = (0, 0, 0, 0usize);
        for (k, r) in reqs.iter().enumerate() {
            let d = engine.decide(r).unwrap();
            evaluated += d.evaluated_policies;
            match d.effect {
                Effect::Allow => allow += 1,
                Effect::ApprovalRequired => approval += 1,
                Effect::Deny => deny += 1,
            }
            if n < 10_000 || k < 32 {
                let built = r.to_cedar(engine.schema()).unwrap();
                let plain = authorizer.is_authorized(
                    built.request_as_asked(),
                    engine.cedar_policy_set(),
                    built.entities(),
                );
                assert_eq!(
                    d.effect == Effect::Allow,
                    plain.decision() == CedarDecision::Allow,
                    "engines disagree"
                );
            }
        }
        let principals = principals(&engine, &reqs);
        for (r, p) in reqs.iter().zip(&principals) {
            assert_eq!(
                engine.decide_as(p, r).unwrap(),
                engine.decide(r).unwrap(),
                "the reused entity decides differently"
            );
        }
        if std::env::var_os("AIMS_BENCH_STAGES").is_some() {
            stages(&engine, &reqs, &principals);
        }
        let built = reqs
            .iter()
            .map(|r| r.to_cedar(engine.schema()).unwrap())
            .collect();
        cases.push(Case {
            n,
            built,
            principals,
            engine,
            mix: (allow, approval, deny),
            evaluated: evaluated as f64 / reqs.len() as f64,
            reqs,
        });
    }

    // `AIMS_BENCH_PROFILE=1`: only run AIMS at 1,000 policies for a while (for a profiler).
    if std::env::var_os("AIMS_BENCH_PROFILE").is_some() {
        if let Some(c) = cases.iter().find(|c| c.n == 1_000) {
            measure(&c.reqs, Duration::from_secs(5), 1, |r| {
                black_box(c.engine.decide(black_box(r)).ok());
            });
        }
        return;
    }
    const ROUNDS: usize = 5;
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut ours_reused: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut plain: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut ours_eval: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut plain_eval: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let worst_reqs = requests(&Shape::for_size(1_000), &mut Lcg(42 + 1_000), true);
    let mut worst = Vec::new();
    for _ in 0..ROUNDS {
        if let Some(c) = cases.iter().find(|c| c.n == 1_000) {
            worst.push(measure(&worst_reqs, Duration::from_millis(250), 200, |r| {
                black_box(c.engine.decide(black_box(r)).ok());
            }));
        }
        for (i, c) in cases.iter().enumerate() {
            ours[i].push(measure(&c.reqs, Duration::from_millis(250), 200, |r| {
                black_box(c.engine.decide(black_box(r)).ok());
            }));
            let mut k = 0;
            ours_reused[i].push(measure(&c.reqs, Duration::from_millis(250), 200, |_| {
                k += 1;
                let j = k % c.reqs.len();
                black_box(
                    c.engine
                        .decide_as(&c.principals[j], black_box(&c.reqs[j]))
                        .ok(),
                );
            }));
            let mut k = 0;
            ours_eval[i].push(measure(&c.reqs, Duration::from_millis(150), 200, |_| {
                k += 1;
                let b = &c.built[k % c.built.len()];
                black_box(c.engine.decide_built(black_box(b), None).ok());
            }));
        }
    }
    for _ in 0..3 {
        for (i, c) in cases.iter().enumerate() {
            // Plain Cedar at 10,000 policies takes milliseconds a decision: bounded.
            let min = if c.n >= 10_000 { 8 } else { 50 };
            plain[i].push(measure(&c.reqs, Duration::from_millis(400), min, |r| {
                plain_decide(&authorizer, &c.engine, r);
            }));
            let mut k = 0;
            plain_eval[i].push(measure(&c.reqs, Duration::from_millis(300), min, |_| {
                k += 1;
                let b = &c.built[k % c.built.len()];
                black_box(authorizer.is_authorized(
                    b.request_as_asked(),
                    c.engine.cedar_policy_set(),
                    b.entities(),
                ));
            }));
        }
    }
    let parallel: Vec<f64> = cases
        .iter()
        .map(|c| {
            let per_thread = 10_000usize;
            let start = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let (engine, reqs) = (&c.engine, &c.reqs);
                    scope.spawn(move || {
                        for k in 0..per_thread {
                            let r = &reqs[(k + t * 31) % reqs.len()];
                            black_box(engine.decide(black_box(r)).ok());
                        }
                    });
                }
            });
            (per_thread * threads) as f64 / start.elapsed().as_secs_f64()
        })
        .collect();

    println!("machine: {threads} CPUs, {}", cpu_model());
    println!();
    println!(
        "| policies | AIMS µs/decision | AIMS µs/decision, entity reused | plain Cedar µs/decision | speed-up | speed-up, entity reused | AIMS evaluation only µs | plain Cedar evaluation only µs | speed-up (evaluation) | AIMS decisions/s (1 thread) | AIMS decisions/s ({threads} threads) | plain Cedar decisions/s | policies AIMS evaluates (mean) | allow / approval_required / deny |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut first = None;
    for (i, c) in cases.iter().enumerate() {
        let o = median(ours[i].clone());
        let or = median(ours_reused[i].clone());
        let p = median(plain[i].clone());
        let oe = median(ours_eval[i].clone());
        let pe = median(plain_eval[i].clone());
        first.get_or_insert(o);
        println!(
            "| {} | {o:.1} | {or:.1} | {p:.1} | {:.0}× | {:.0}× | {oe:.1} | {pe:.1} | {:.0}× | {:.0} | {:.0} | {:.0} | {:.1} | {} / {} / {} |",
            c.n,
            p / o,
            p / or,
            pe / oe,
            1e6 / o,
            parallel[i],
            1e6 / p,
            c.evaluated,
            c.mix.0,
            c.mix.1,
            c.mix.2,
        );
    }
    if let (Some(f), Some(last)) = (first, ours.last()) {
        println!();
        println!(
            "AIMS at 10,000 policies / at 10 policies: {:.2}×",
            median(last.clone()) / f
        );
    }
    if let (Some(f), Some(last)) = (ours_reused.first(), ours_reused.last()) {
        println!(
            "AIMS, entity reused, at 10,000 policies / at 10 policies: {:.2}×",
            median(last.clone()) / median(f.clone())
        );
    }
    if let Some(i) = cases.iter().position(|c| c.n == 1_000) {
        println!(
            "AIMS at 1,000 policies, the same requests but each in a new second (the `time` value cannot be reused): {:.1} µs/decision (vs {:.1})",
            median(worst.clone()),
            median(ours[i].clone()),
        );
    }
}

/// Where the time of one decision goes (`AIMS_BENCH_STAGES=1`), on this size's requests.
fn stages(engine: &Engine, reqs: &[DecisionRequest], principals: &[Arc<PrincipalEntity>]) {
    use aims_policy::cedar_policy::{Context, Entities, RestrictedExpression};
    let schema = engine.schema();
    let t = |name: &str, f: &mut dyn FnMut(&DecisionRequest)| {
        let us = measure(reqs, Duration::from_millis(300), 100, f);
        eprintln!("  {name}: {us:.2} µs");
    };
    t(
        "DecisionRequest::to_cedar (entities, context, request)",
        &mut |r| {
            black_box(r.to_cedar(schema).ok());
        },
    );
    let mut i = 0;
    t(
        "DecisionRequest::to_cedar_as (principal's entity reused: resource, context, request)",
        &mut |_| {
            i += 1;
            let j = i % reqs.len();
            black_box(reqs[j].to_cedar_as(&principals[j], schema).ok());
        },
    );
    t("  (once per agent change) PrincipalEntity::new", &mut |r| {
        black_box(PrincipalEntity::new(r.principal.clone(), schema).ok());
    });
    let built: Vec<_> = reqs.iter().map(|r| r.to_cedar(schema).unwrap()).collect();
    let mut i = 0;
    t(
        "Engine::decide_built (index lookup, evaluation, approval rule)",
        &mut |_| {
            i += 1;
            black_box(engine.decide_built(&built[i % built.len()], None).ok());
        },
    );
    let entities: Vec<Vec<_>> = built
        .iter()
        .map(|b| {
            b.entities()
                .iter()
                .filter(|e| e.uid().type_name().basename() != "Action")
                .cloned()
                .collect()
        })
        .collect();
    let mut i = 0;
    t(
        "  of which could be: Entities::from_entities without schema",
        &mut |_| {
            i += 1;
            black_box(Entities::from_entities(entities[i % entities.len()].clone(), None).ok());
        },
    );
    // The same stores built around each request's prebuilt principal: the resource and the
    // action entity added to a copy of the principal's store.
    let added: Vec<Vec<_>> = built
        .iter()
        .zip(principals)
        .map(|(b, p)| {
            b.entities()
                .iter()
                .filter(|e| p.entities().get(&e.uid()).is_none())
                .cloned()
                .collect()
        })
        .collect();
    let mut i = 0;
    t(
        "  of which, entity reused: Entities::add_entities onto the principal's store",
        &mut |_| {
            i += 1;
            let j = i % added.len();
            black_box(
                principals[j]
                    .entities()
                    .clone()
                    .add_entities(added[j].clone(), None)
                    .ok(),
            );
        },
    );
    let mut i = 0;
    t(
        "  (avoided) Entities::from_entities with schema",
        &mut |_| {
            i += 1;
            black_box(
                Entities::from_entities(entities[i % entities.len()].clone(), Some(schema.cedar()))
                    .ok(),
            );
        },
    );
    t(
        "  (avoided by reuse) RestrictedExpression::new_datetime",
        &mut |_| {
            black_box(RestrictedExpression::new_datetime("2026-03-02T10:00:00Z"));
        },
    );
    let authorizer = Authorizer::new();
    let empty = aims_policy::cedar_policy::PolicySet::new();
    let mut i = 0;
    t(
        "  Authorizer::is_authorized on an empty set (per-call overhead)",
        &mut |_| {
            i += 1;
            let b = &built[i % built.len()];
            black_box(authorizer.is_authorized(b.request_as_asked(), &empty, b.entities()));
        },
    );
    let mut i = 0;
    t("  CedarRequest::with_approved", &mut |_| {
        i += 1;
        black_box(built[i % built.len()].with_approved(true).ok());
    });
    let pre = RestrictedExpression::new_datetime("2026-03-02T10:00:00Z");
    t("  Context::from_pairs with one datetime", &mut |_| {
        black_box(Context::from_pairs([("t".to_owned(), pre.clone())]).ok());
    });
}
