//! Database leases against the real local PostgreSQL as the engine: a lease is a working
//! credential; revoking its task token terminates its session and drops its role; a lease
//! left revoked while no server ran is ended by the next one; the holder revokes its own
//! lease with its task token, another agent cannot; bad input (an SVID in a task token's
//! place included) is refused with a stable code and creates no role. The engine is always the local PostgreSQL; the store is
//! SQLite in one run and PostgreSQL in the other.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use aims_token::agent_key::AgentKey;

use crate::kit::{Backend, PG_ENV, Reply, TestServer};
use crate::task_tokens::{Scene, access_token, claims};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn a_lease_works_and_dies_with_its_task_token_on_sqlite() {
    lease_lifecycle(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn a_lease_works_and_dies_with_its_task_token_on_postgres() {
    lease_lifecycle(Backend::Postgres).await;
}

/// The planner may obtain lease scopes and lease `reader` roles (and nothing else).
const POLICY: &str = r#"
@id("test-planner-obtains-leases")
permit (principal, action == Aims::Action::"obtain", resource is Aims::Scope)
when { principal.name == "planner" && resource.kind == "lease" };

@id("test-planner-leases-readers")
permit (principal, action == Aims::Action::"lease", resource is Aims::Resource)
when {
  principal.name == "planner" && resource.kind == "database_role" &&
  resource.hasTag("role") && resource.getTag("role") == "reader"
};
"#;

fn engine_url() -> String {
    std::env::var(PG_ENV).unwrap_or_else(|_| panic!("{PG_ENV} must name the engine database"))
}

async fn admin_connection() -> PgConnection {
    engine_url()
        .parse::<PgConnectOptions>()
        .unwrap()
        .disable_statement_logging()
        .connect()
        .await
        .unwrap()
}

/// The lease roles that hold a privilege on `schema` (tests run side by side, each with a
/// schema of its own, so this is what one test created).
async fn lease_roles(admin: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT r.rolname::text FROM pg_roles r \
         WHERE r.rolname LIKE 'aims\\_lease\\_%' AND has_schema_privilege(r.oid, $1, 'USAGE') \
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *admin)
    .await
    .unwrap()
}

async fn role_exists(admin: &mut PgConnection, role: &str) -> bool {
    sqlx::query_scalar::<_, String>("SELECT rolname::text FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut *admin)
        .await
        .unwrap()
        .is_some()
}

/// Connects with a lease's parameters.
async fn connect_as(granted: &Value) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::new()
        .host(granted["host"].as_str().unwrap())
        .port(u16::try_from(granted["port"].as_u64().unwrap()).unwrap())
        .database(granted["database"].as_str().unwrap())
        .username(granted["username"].as_str().unwrap())
        .password(granted["password"].as_str().unwrap())
        .connect()
        .await
}

/// POSTs `body` to `path` with `token` under the DPoP scheme, proved by `key`.
async fn post_dpop(scene: &Scene, key: &AgentKey, token: &str, path: &str, body: Value) -> Reply {
    let proof = scene.proof(key, "POST", path, Some(token));
    let req = scene
        .server
        .http
        .post(scene.url(path))
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", proof)
        .json(&body);
    let reply = scene.server.send(req).await;
    scene.remember_nonce(&reply);
    reply
}

/// `POST /v1/leases` with the planner's DPoP-bound task token.
async fn ask(scene: &Scene, token: &str, body: Value) -> Reply {
    post_dpop(scene, &scene.planner.key, token, "/v1/leases", body).await
}

/// Asserts that the newest refusal audited is `code` (every refusal is audited).
async fn audited_refusal(server: &TestServer, code: &str) {
    let rejected = server.last_event("api.reject").await;
    assert_eq!(rejected.code.as_deref(), Some(code), "{rejected:?}");
}

/// `POST /v1/leases/{id}/renew` with the planner's DPoP-bound task token.
async fn renew(scene: &Scene, token: &str, id: &str, body: Value) -> Reply {
    let path = format!("/v1/leases/{id}/renew");
    post_dpop(scene, &scene.planner.key, token, &path, body).await
}

/// The `VALID UNTIL` of `role`, in Unix seconds.
async fn valid_until(admin: &mut PgConnection, role: &str) -> i64 {
    sqlx::query_scalar::<_, f64>(
        "SELECT extract(epoch FROM rolvaliduntil)::float8 FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_one(&mut *admin)
    .await
    .unwrap() as i64
}

/// Waits until lease `id` is ended, or fails after ten seconds.
async fn until_ended(server: &TestServer, id: &str) -> Value {
    for _ in 0..100 {
        let lease = server
            .admin(Method::GET, &format!("/v1/leases/{id}"), None)
            .await;
        assert_eq!(lease.status, StatusCode::OK, "{}", lease.body);
        if lease.body["state"] == "ended" {
            return lease.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("lease {id} was not ended");
}

async fn lease_lifecycle(backend: Backend) {
    let mut admin = admin_connection().await;
    // A schema of this run's own, with one table of one row.
    let schema = format!("lease_it_{}_{backend:?}", std::process::id()).to_lowercase();
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
         CREATE TABLE {schema}.sales (region text, amount int); \
         INSERT INTO {schema}.sales VALUES ('north', 42)"
    ))
    .execute(&mut admin)
    .await
    .unwrap();

    let scene = Scene::start(backend).await;
    Scene::push_policies(&scene.server, &[("leases.cedar", POLICY)]).await;
    let server = &scene.server;

    // Engines: a password in the URL, an unreachable database, then the real one.
    let refused = server
        .admin(
            Method::POST,
            "/v1/engines",
            Some(json!({"name": "w", "connection_url": "postgres://postgres:pw@127.0.0.1/test"})),
        )
        .await;
    assert_eq!(refused.code(), "invalid_engine", "{}", refused.body);
    let refused = server
        .admin(
            Method::POST,
            "/v1/engines",
            Some(json!({"name": "w", "connection_url": "postgres://postgres@127.0.0.1:1/test"})),
        )
        .await;
    assert_eq!(refused.code(), "engine_unavailable", "{}", refused.body);
    audited_refusal(server, "engine_unavailable").await;
    // A wrong administrator: a user the database does not know.
    let wrong_admin = engine_url().replacen("postgres@", "aims_it_nobody@", 1);
    assert_ne!(
        wrong_admin,
        engine_url(),
        "the engine URL names the postgres user"
    );
    let refused = server
        .admin(
            Method::POST,
            "/v1/engines",
            Some(json!({"name": "w", "connection_url": wrong_admin})),
        )
        .await;
    assert_eq!(refused.code(), "engine_refused", "{}", refused.body);
    audited_refusal(server, "engine_refused").await;
    let refused = server
        .admin(
            Method::POST,
            "/v1/engines",
            Some(json!({"name": "w", "connection_url": engine_url(), "admin_secret": "nope"})),
        )
        .await;
    assert_eq!(refused.code(), "secret_not_found", "{}", refused.body);
    let refused = server
        .admin(
            Method::POST,
            "/v1/engines",
            Some(json!({"name": "w'; DROP ROLE postgres; --", "connection_url": engine_url()})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    audited_refusal(server, refused.code()).await;
    let listed = server.admin(Method::GET, "/v1/engines", None).await;
    assert_eq!(
        listed.body["engines"],
        json!([]),
        "no refused engine is kept"
    );
    let added = server
        .admin(
            Method::POST,
            "/v1/engines",
            Some(json!({"name": "warehouse", "connection_url": engine_url()})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body["system"], "warehouse");

    // Role templates: only the closed grant form, only tables that exist.
    let roles = "/v1/engines/warehouse/roles";
    for (grants, why) in [
        (
            format!("GRANT SELECT ON TABLE {schema}.sales TO postgres"),
            "a grantee",
        ),
        (
            format!("GRANT SELECT ON TABLE \"{schema}\".sales"),
            "quotes",
        ),
        (
            "ALTER ROLE postgres NOSUPERUSER".to_owned(),
            "another statement",
        ),
        (
            format!("GRANT SELECT ON TABLE {schema}.missing"),
            "a missing table",
        ),
    ] {
        let refused = server
            .admin(
                Method::POST,
                roles,
                Some(json!({"name": "reader", "grants": grants, "max_ttl_s": 300})),
            )
            .await;
        assert_eq!(refused.code(), "invalid_grants", "{why}: {}", refused.body);
        audited_refusal(server, "invalid_grants").await;
    }
    let refused = server
        .admin(
            Method::POST,
            roles,
            Some(json!({"name": "reader\"; DROP ROLE postgres; --", "grants": format!("GRANT SELECT ON TABLE {schema}.sales"), "max_ttl_s": 300})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    audited_refusal(server, refused.code()).await;
    let grants = format!("GRANT USAGE ON SCHEMA {schema}\nGRANT SELECT ON TABLE {schema}.sales\n");
    for name in ["reader", "admin"] {
        let added = server
            .admin(
                Method::POST,
                roles,
                Some(json!({"name": name, "grants": grants, "max_ttl_s": 3600})),
            )
            .await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    }

    let token = access_token(
        &scene
            .exchange("lease:warehouse/reader lease:warehouse/admin")
            .await,
    );
    let jti = claims(&token)["jti"].as_str().unwrap().to_owned();

    // Refusals create no role and no lease.
    let svid = server
        .call(
            Method::POST,
            "/v1/leases",
            Some(&scene.planner.svid),
            Some(json!({"engine": "warehouse", "role": "reader"})),
        )
        .await;
    assert_eq!(svid.status, StatusCode::FORBIDDEN, "{}", svid.body);
    assert_eq!(svid.code(), "task_token_required");
    audited_refusal(server, "task_token_required").await;
    // The SVID in a task token's place (the DPoP scheme, with a proof by its key): the same.
    let svid = ask(
        &scene,
        &scene.planner.svid,
        json!({"engine": "warehouse", "role": "reader"}),
    )
    .await;
    assert_eq!(svid.status, StatusCode::FORBIDDEN, "{}", svid.body);
    assert_eq!(svid.code(), "task_token_required", "{}", svid.body);
    audited_refusal(server, "task_token_required").await;
    // A token that is no SVID either is still just an invalid token.
    let forged = ask(
        &scene,
        &format!("{}x", scene.planner.svid),
        json!({"engine": "warehouse", "role": "reader"}),
    )
    .await;
    assert_eq!(forged.code(), "invalid_token", "{}", forged.body);
    let long = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "reader", "ttl_s": 3601}),
    )
    .await;
    assert_eq!(
        long.code(),
        "invalid_ttl",
        "past the template: {}",
        long.body
    );
    audited_refusal(server, "invalid_ttl").await;
    let token_left =
        claims(&token)["exp"].as_i64().unwrap() - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        token_left < 3000,
        "the task token ends before the template's maximum"
    );
    let long = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "reader", "ttl_s": token_left + 60}),
    )
    .await;
    assert_eq!(
        long.code(),
        "invalid_ttl",
        "past the task token: {}",
        long.body
    );
    audited_refusal(server, "invalid_ttl").await;
    let denied = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "admin"}),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.code(), "lease_denied");
    audited_refusal(server, "lease_denied").await;
    let unknown = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "writer"}),
    )
    .await;
    assert_eq!(unknown.code(), "role_not_found", "{}", unknown.body);
    audited_refusal(server, "role_not_found").await;
    let quoted = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "reader\"--"}),
    )
    .await;
    assert_eq!(quoted.status, StatusCode::BAD_REQUEST, "{}", quoted.body);
    audited_refusal(server, quoted.code()).await;
    let quoted = ask(
        &scene,
        &token,
        json!({"engine": "ware'house", "role": "reader"}),
    )
    .await;
    assert_eq!(quoted.status, StatusCode::BAD_REQUEST, "{}", quoted.body);
    audited_refusal(server, quoted.code()).await;
    assert_eq!(lease_roles(&mut admin, &schema).await, Vec::<String>::new());
    let listed = server.admin(Method::GET, "/v1/leases", None).await;
    assert_eq!(listed.body["leases"], json!([]));

    // A lease: a working credential, shown once, with its password in no audit record.
    let granted = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "reader", "ttl_s": 120}),
    )
    .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
    assert_eq!(granted.headers["cache-control"], "no-store");
    let lease_id = granted.body["lease_id"].as_str().unwrap().to_owned();
    let role = granted.body["username"].as_str().unwrap().to_owned();
    assert!(role.starts_with("aims_lease_"));
    assert_eq!(
        lease_roles(&mut admin, &schema).await,
        std::slice::from_ref(&role),
        "the check for created roles sees this one"
    );
    let mut session = connect_as(&granted.body).await.unwrap();
    let amount: i32 = sqlx::query_scalar(&format!(
        "SELECT amount FROM {schema}.sales WHERE region = 'north'"
    ))
    .fetch_one(&mut session)
    .await
    .unwrap();
    assert_eq!(amount, 42);
    let denied_write = sqlx::query(&format!("INSERT INTO {schema}.sales VALUES ('south', 1)"))
        .execute(&mut session)
        .await;
    assert!(denied_write.is_err(), "the reader may only read");
    // Renewal: with the token it was asked with, not past that token, never with an SVID.
    let before = valid_until(&mut admin, &role).await;
    let renewed = renew(&scene, &token, &lease_id, json!({"ttl_s": 240})).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    let after = valid_until(&mut admin, &role).await;
    assert!(
        after >= before + 100,
        "VALID UNTIL moved: {before} -> {after}"
    );
    let renewal = server.last_event("lease.renew").await;
    assert_eq!(renewal.details["lease_id"], lease_id.as_str());
    assert_eq!(renewal.details["expires_at"], after);
    let too_long = renew(&scene, &token, &lease_id, json!({"ttl_s": token_left + 60})).await;
    assert_eq!(too_long.code(), "invalid_ttl", "{}", too_long.body);
    audited_refusal(server, "invalid_ttl").await;
    assert_eq!(
        valid_until(&mut admin, &role).await,
        after,
        "a refused renewal changes nothing"
    );
    let svid_renew = server
        .call(
            Method::POST,
            &format!("/v1/leases/{lease_id}/renew"),
            Some(&scene.planner.svid),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        svid_renew.code(),
        "task_token_required",
        "{}",
        svid_renew.body
    );
    let password = granted.body["password"].as_str().unwrap();
    let records = server.records().await;
    assert!(records.iter().all(|r| !r.body.contains(password)));
    let issued = server.last_event("lease.issue").await;
    assert_eq!(issued.details["lease_id"], lease_id.as_str());
    assert_eq!(issued.details["parent"], jti.as_str());

    // Revoking the task token revokes the lease in the same closure; the reaper ends it:
    // the open session is terminated and the role dropped.
    let revoked = server
        .admin(
            Method::POST,
            "/v1/revocations",
            Some(json!({"target": "token", "id": jti, "reason": "test"})),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["revoked"], 2, "the token and its lease");
    let ended = until_ended(server, &lease_id).await;
    assert!(ended["revoked_at"].is_string());
    assert!(
        sqlx::query("SELECT 1").execute(&mut session).await.is_err(),
        "the lease's session is terminated"
    );
    assert!(!role_exists(&mut admin, &role).await);
    assert!(connect_as(&granted.body).await.is_err());
    let end = server.last_event("lease.end").await;
    assert_eq!(end.details["lease_id"], lease_id.as_str());
    assert_eq!(end.details["sessions_terminated"], 1);
    assert_eq!(end.details["role_dropped"], true);
    assert_eq!(server.count_events("lease.end").await, 1);
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["leases_overdue"], 0, "{}", ready.body);

    // A lease revoked while no server runs is ended by the next server on the store.
    let token = access_token(&scene.exchange("lease:warehouse/reader").await);

    // An operator revokes one lease: its role is dropped; the task token stays good.
    let granted = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "reader"}),
    )
    .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
    let lease_id = granted.body["lease_id"].as_str().unwrap().to_owned();
    let role = granted.body["username"].as_str().unwrap().to_owned();
    let revoked = server
        .admin(
            Method::POST,
            &format!("/v1/leases/{lease_id}/revoke"),
            Some(json!({"reason": "done with it"})),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert!(revoked.body["revoked_at"].is_string());
    until_ended(server, &lease_id).await;
    assert!(!role_exists(&mut admin, &role).await);
    let gone = renew(&scene, &token, &lease_id, json!({})).await;
    assert_eq!(gone.code(), "lease_not_active", "{}", gone.body);
    let missing = server
        .admin(Method::POST, "/v1/leases/nope/revoke", Some(json!({})))
        .await;
    assert_eq!(missing.code(), "lease_not_found", "{}", missing.body);

    // The holder revokes its own lease with the task token it asked with. Another agent's
    // task token, or the holder's SVID, is refused with a stable code and changes nothing.
    let granted = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "reader"}),
    )
    .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
    let lease_id = granted.body["lease_id"].as_str().unwrap().to_owned();
    let role = granted.body["username"].as_str().unwrap().to_owned();
    let path = format!("/v1/leases/{lease_id}/revoke");
    let repo = access_token(&scene.exchange("read:repo/acme/*").await);
    let executors = access_token(&scene.delegate(&repo, &[]).await);
    let other = post_dpop(&scene, &scene.executor.key, &executors, &path, json!({})).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    assert_eq!(other.code(), "lease_not_found", "{}", other.body);
    audited_refusal(server, "lease_not_found").await;
    let other_token = post_dpop(&scene, &scene.planner.key, &repo, &path, json!({})).await;
    assert_eq!(
        other_token.code(),
        "lease_not_found",
        "{}",
        other_token.body
    );
    let svid = post_dpop(
        &scene,
        &scene.planner.key,
        &scene.planner.svid,
        &path,
        json!({}),
    )
    .await;
    assert_eq!(svid.code(), "task_token_required", "{}", svid.body);
    audited_refusal(server, "task_token_required").await;
    let shown = server
        .admin(Method::GET, &format!("/v1/leases/{lease_id}"), None)
        .await;
    assert_eq!(shown.body["state"], "active", "{}", shown.body);
    assert!(shown.body["revoked_at"].is_null(), "{}", shown.body);
    assert!(
        role_exists(&mut admin, &role).await,
        "refusals change nothing"
    );
    let own = post_dpop(
        &scene,
        &scene.planner.key,
        &token,
        &path,
        json!({"reason": "the task is done with it"}),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert!(own.body["revoked_at"].is_string(), "{}", own.body);
    let revoked = server.last_event("revoke").await;
    assert_eq!(revoked.details["id"], lease_id.as_str(), "{revoked:?}");
    assert_eq!(revoked.details["reason"], "the task is done with it");
    assert!(
        matches!(revoked.actor, aims_core::audit::Actor::Agent { .. }),
        "{revoked:?}"
    );
    until_ended(server, &lease_id).await;
    assert!(!role_exists(&mut admin, &role).await);

    let granted = ask(
        &scene,
        &token,
        json!({"engine": "warehouse", "role": "reader"}),
    )
    .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
    let lease_id = granted.body["lease_id"].as_str().unwrap().to_owned();
    let role = granted.body["username"].as_str().unwrap().to_owned();
    let (dir, store) = scene.server.stop().await;
    store
        .revoke(
            &aims_store::RevocationTarget::Agent(aims_core::id::AgentName::new("planner").unwrap()),
            "revoked while no server ran",
            time::OffsetDateTime::now_utc(),
            &aims_core::audit::AuditEvent::new(
                time::OffsetDateTime::now_utc(),
                aims_core::audit::Actor::System,
                "revoke",
                aims_core::audit::Outcome::Success,
            ),
        )
        .await
        .unwrap();
    assert!(role_exists(&mut admin, &role).await, "nobody ended it yet");
    let restarted = TestServer::start_on(backend, dir, store, Default::default())
        .await
        .unwrap();
    let ended = until_ended(&restarted, &lease_id).await;
    assert_eq!(ended["attempts"], 0);
    assert!(!role_exists(&mut admin, &role).await);
    restarted.stop().await;

    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}
