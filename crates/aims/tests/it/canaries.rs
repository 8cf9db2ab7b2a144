//! No credential value reaches the server's log, the audit trail, or any answer that reads
//! state back: a real `aims server` process (debug logging) is driven through every kind of
//! credential — the bootstrap operator credential, a join token, an SVID, a resource server's
//! client secret, a DPoP-bound task token, a brokered secret, and a made-up token presented
//! where a real one is expected — then the whole log file, every audit record (raw and as
//! OCSF), the task's trace, the inventory, the governance report and the registry and secret
//! listings are searched for each value. Only ids and hashes may appear.

use serde_json::{Value, json};

use crate::process::{ADMIN_TOKEN, Server, UNLIMITED};
use crate::replica_kit::{PUBLIC_URL, Replica, jti, task_id};

/// A value planted as a brokered secret.
const SECRET_CANARY: &str = "canary-secret-value-3f9c1e7a5b2d";
/// A made-up token presented as an agent's and as an operator's credential.
const BOGUS_CANARY: &str = "canary-bogus-credential-8e41d0c6";

/// GETs `path` as the bootstrap operator; the body as text (the status must be 200).
async fn read(replica: Replica<'_>, path: &str) -> String {
    let response = replica
        .http
        .get(format!("{}{path}", replica.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Records per audit page read here.
const PAGE: usize = 1000;

/// Every raw audit record (`/v1/audit`, paged by sequence number) as text, and how many. A
/// short page is the end: each read is itself audited, so the log never stops growing while
/// it is read.
async fn every_record(replica: Replica<'_>) -> (String, usize) {
    let (mut text, mut count, mut after) = (String::new(), 0, 0u64);
    loop {
        let page = read(replica, &format!("/v1/audit?after={after}&limit={PAGE}")).await;
        let parsed: Value = serde_json::from_str(&page).unwrap();
        let records = parsed["records"].as_array().unwrap();
        count += records.len();
        text.push_str(&page);
        match records.last() {
            Some(last) if records.len() == PAGE => after = last["seq"].as_u64().unwrap(),
            _ => return (text, count),
        }
    }
}

/// Every audit record as an OCSF event (`/v1/audit/ocsf`, following its cursor) as text, and
/// how many.
async fn every_ocsf_event(replica: Replica<'_>) -> (String, usize) {
    let (mut text, mut count, mut after) = (String::new(), 0, 0u64);
    loop {
        let page = read(
            replica,
            &format!("/v1/audit/ocsf?after={after}&limit={PAGE}"),
        )
        .await;
        let parsed: Value = serde_json::from_str(&page).unwrap();
        count += parsed["events"].as_array().unwrap().len();
        text.push_str(&page);
        match parsed["next_after"].as_u64() {
            Some(next) => after = next,
            None => return (text, count),
        }
    }
}

/// The credential values to look for: each whole, and for a JWT its signature alone too.
fn needles(values: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (what, value) in values {
        out.push(((*what).to_owned(), (*value).to_owned()));
        if let Some(signature) = value.rsplit('.').next().filter(|_| value.contains('.')) {
            out.push((format!("{what} (signature)"), signature.to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_values_never_reach_the_log_the_audit_trail_or_read_answers() {
    let dir = tempfile::tempdir().unwrap();
    let [source, credential] = UNLIMITED;
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            ("AIMS_BOOTSTRAP_TOKEN", ADMIN_TOKEN),
            ("AIMS_LOG", "debug"),
            source,
            credential,
        ],
        &["--public-url", PUBLIC_URL],
    );
    let http = reqwest::Client::new();
    let replica = Replica {
        http: &http,
        url: &server.url,
    };

    // Every kind of credential, used the way an agent, a tool server and an operator use it.
    let client_secret = replica.set_up().await;
    let planner = replica.planner().await;
    let (status, idle) = replica
        .admin(
            "/v1/agents",
            json!({"name": "idle", "owner": "alice@acme.example"}),
        )
        .await;
    assert_eq!(status, 201, "{idle}");
    let join_token = idle["join_token"].as_str().unwrap().to_owned();
    let token = replica.exchange(&planner).await;
    assert_eq!(replica.decide(&planner, &token).await, 200);
    let introspected = http
        .post(format!("{}/oauth2/introspect", server.url))
        .basic_auth("repo-tools", Some(&client_secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(introspected.status(), 200);
    let (status, body) = replica
        .admin(
            "/v1/secrets",
            json!({"name": "warehouse-password", "value": SECRET_CANARY,
                   "readers": ["repo-tools"], "rotation_period_s": 86400}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let value = http
        .get(format!(
            "{}/v1/secrets/warehouse-password/value",
            server.url
        ))
        .basic_auth("repo-tools", Some(&client_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(value.status(), 200, "the reader gets the value");
    // Made-up credentials where real ones are expected: refused, and not repeated anywhere.
    for (path, scheme) in [("/v1/decisions", "Bearer"), ("/v1/agents", "Bearer")] {
        let refused = http
            .post(format!("{}{path}", server.url))
            .header("Authorization", format!("{scheme} {BOGUS_CANARY}"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let body = refused.text().await.unwrap();
        assert!(!body.contains(BOGUS_CANARY), "{path} repeats it: {body}");
    }
    replica.revoke_token(&jti(&token)).await;

    // Everything that reads state back, as an auditor or operator would.
    let (raw, records) = every_record(replica).await;
    let (ocsf, events) = every_ocsf_event(replica).await;
    assert!(records >= 10, "the scenario wrote {records} audit records");
    // The OCSF walk comes later, so it also sees the raw walk's own audited reads.
    assert!(
        events > records,
        "one OCSF event per record: {events} for {records}"
    );
    let mut haystacks = vec![("audit records", raw), ("OCSF events", ocsf)];
    for path in [
        format!("/v1/audit/trace/{}", task_id(&token)),
        "/v1/inventory".to_owned(),
        "/v1/report?window_days=1".to_owned(),
        "/v1/agents".to_owned(),
        "/v1/agents/planner".to_owned(),
        "/v1/resource-servers".to_owned(),
        "/v1/secrets".to_owned(),
        "/v1/secrets/warehouse-password".to_owned(),
    ] {
        let body = read(replica, &path).await;
        haystacks.push(("a read answer", format!("{path}: {body}")));
    }
    let (_, log) = server.terminate();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "the server logged at debug level: {log}"
    );
    haystacks.push(("the server's log", log));

    let planted = needles(&[
        ("the bootstrap credential", ADMIN_TOKEN),
        ("a join token", &join_token),
        ("an SVID", &planner.svid),
        ("a client secret", &client_secret),
        ("a task token", &token),
        ("a brokered secret", SECRET_CANARY),
        ("a made-up credential", BOGUS_CANARY),
    ]);
    for (where_, text) in &haystacks {
        for (what, value) in &planted {
            assert!(!text.contains(value.as_str()), "{what} appears in {where_}");
        }
    }
}
