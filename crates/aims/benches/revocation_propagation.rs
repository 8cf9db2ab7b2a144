//! Revocation propagation between replicas: two `aims server` processes share one PostgreSQL
//! database; a token is revoked on the first (`POST /v1/revocations`) and the second is asked
//! for decisions with it, back to back, until it refuses (401). The delay is measured from
//! the start of the revocation request, and also from its acknowledgement (when it is durable).
//!
//! The same two replicas also measure how fast a registry change reaches the other replica's
//! in-memory view: the planner's labels are changed on the first (`PATCH /v1/agents/planner`,
//! joining or leaving the team a repository read needs) and the second is asked for decisions
//! until its answer follows (allow after joining, deny after leaving). Each replica reads the
//! registry change log on the same interval as the revocation log.
//!
//! Baselines in the same run: a loopback round trip to the second replica (`GET /healthz`) and
//! one decision round trip with a live token (the polling granularity of this measurement).
//! Each replica reads the revocation log every `revocation_poll_ms` (default 20 ms), so the
//! expected delay is up to one poll interval plus a query and a decision round trip.
//!
//! ```text
//! AIMS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p aims --bench revocation_propagation
//! ```

// A bench target is test code: a broken invariant must stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark fails loudly on an unexpected error"
)]

#[allow(
    dead_code,
    reason = "the benchmark uses part of the shared test harness"
)]
#[path = "../tests/it/process.rs"]
mod process;
#[allow(
    dead_code,
    reason = "the benchmark uses part of the shared test harness"
)]
#[path = "../tests/it/replica_kit.rs"]
mod replica_kit;
#[path = "common/stats.rs"]
mod stats;

use std::time::{Duration, Instant};

use replica_kit::{Deployment, database_url, jti};
use stats::{ms, percentile};

const SAMPLES: usize = 100;
const ROUND_TRIPS: usize = 300;

fn summary(name: &str, mut values: Vec<Duration>, baseline: Duration) {
    values.sort();
    let (p50, p95, p99) = (
        percentile(&values, 0.5),
        percentile(&values, 0.95),
        percentile(&values, 0.99),
    );
    let max = *values.last().unwrap();
    println!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}× |",
        values.len(),
        ms(p50),
        ms(p95),
        ms(p99),
        ms(max),
        p99.as_secs_f64() / baseline.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::var("AIMS_TEST_DATABASE_URL").is_err() {
        println!("skipped: set AIMS_TEST_DATABASE_URL to a PostgreSQL database");
        return;
    }
    let deployment = Deployment::start(&database_url().await).await;
    let planner = deployment.at(0).planner().await;
    let second = deployment.replicas[1].url.clone();

    // Baseline: loopback round trips to the second replica.
    let mut round_trips = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        let status = deployment
            .http
            .get(format!("{second}/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
        round_trips.push(started.elapsed());
    }
    // Baseline: decision round trips with a live token.
    let live = deployment.at(0).exchange(&planner).await;
    let mut decisions = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let started = Instant::now();
        assert_eq!(deployment.at(1).decide(&planner, &live).await, 200);
        decisions.push(started.elapsed());
    }

    let mut from_request = Vec::with_capacity(SAMPLES);
    let mut from_ack = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let token = deployment.at(0).exchange(&planner).await;
        assert_eq!(deployment.at(1).decide(&planner, &token).await, 200);
        let started = Instant::now();
        deployment.at(0).revoke_token(&jti(&token)).await;
        let acknowledged = Instant::now();
        loop {
            match deployment.at(1).decide(&planner, &token).await {
                401 => break,
                200 => {}
                other => panic!("unexpected status {other}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not propagated in 5 s"
            );
        }
        from_request.push(started.elapsed());
        from_ack.push(acknowledged.elapsed());
    }

    // Registry changes: the planner joins and leaves the team `coding-read-repository` asks
    // for, alternately, on the first replica; the second's answer must follow.
    let mut view_from_request = Vec::with_capacity(SAMPLES);
    let mut view_from_ack = Vec::with_capacity(SAMPLES);
    let token = deployment.at(0).exchange(&planner).await;
    let answer = |body: &serde_json::Value| body["decision"].as_str().unwrap_or("").to_owned();
    for sample in 0..SAMPLES {
        let (labels, expected) = if sample % 2 == 0 {
            (
                serde_json::json!({"role": "planner", "team": "coding-agents"}),
                "allow",
            )
        } else {
            (serde_json::json!({"role": "planner"}), "deny")
        };
        let started = Instant::now();
        let (status, body) = deployment
            .at(0)
            .admin_with(
                reqwest::Method::PATCH,
                "/v1/agents/planner",
                serde_json::json!({ "labels": labels }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let acknowledged = Instant::now();
        loop {
            let (status, body) = deployment.at(1).decision(&planner, &token).await;
            assert_eq!(status, 200, "{body}");
            if answer(&body) == expected {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not propagated in 5 s"
            );
        }
        view_from_request.push(started.elapsed());
        view_from_ack.push(acknowledged.elapsed());
    }

    let mut sorted = round_trips.clone();
    sorted.sort();
    let rtt = percentile(&sorted, 0.5);
    let mut sorted_decisions = decisions.clone();
    sorted_decisions.sort();
    println!(
        "baselines (p50): loopback round trip {:.3} ms; decision round trip {:.3} ms",
        ms(rtt),
        ms(percentile(&sorted_decisions, 0.5))
    );
    println!();
    println!("| measure | samples | p50 ms | p95 ms | p99 ms | max ms | p99 / loopback RTT |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    summary("loopback round trip (baseline)", round_trips, rtt);
    summary("decision round trip (baseline)", decisions, rtt);
    summary(
        "revoked on replica 1 → refused on replica 2, from the request",
        from_request,
        rtt,
    );
    summary("… from the acknowledgement", from_ack, rtt);
    summary(
        "labels changed on replica 1 → decided as changed on replica 2, from the request",
        view_from_request,
        rtt,
    );
    summary("… from the acknowledgement", view_from_ack, rtt);
}
