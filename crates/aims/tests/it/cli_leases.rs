//! Engines, role templates and leases through the CLI against a real server, with the local
//! PostgreSQL as the engine: add an engine (refused with a password in its URL), add a role
//! template from a grants file (refused outside the allowed form), list them; the lease
//! commands' refusals exit non-zero with the stable code (an SVID in a task token's place:
//! `task_token_required`); and the success path: `aims token exchange`, `aims lease create`,
//! a session reading a table with the credential, `aims lease renew`, and the holder's
//! `aims lease revoke`, after which the session is terminated and the credential refused.

use sqlx::ConnectOptions as _;

use crate::process::{ADMIN_TOKEN, Server};
use crate::replica_kit::AUDIENCE;

#[test]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
fn engines_roles_and_leases_through_the_cli() {
    let url = std::env::var("AIMS_TEST_DATABASE_URL").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);

    let refused = server.run(
        Some(ADMIN_TOKEN),
        &[
            "engine",
            "add",
            "postgres",
            "warehouse",
            "--connection-url",
            "postgres://postgres:hunter2@127.0.0.1/test",
        ],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invalid_engine"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is never echoed: {stderr}"
    );

    let added = server.json(&[
        "engine",
        "add",
        "postgres",
        "warehouse",
        "--connection-url",
        &url,
        "--sensitivity",
        "confidential",
    ]);
    assert_eq!(added["name"], "warehouse");
    assert_eq!(added["sensitivity"], "confidential");
    let listed = server.json(&["engine", "list"]);
    assert_eq!(listed["engines"][0]["name"], "warehouse");

    let grants = dir.path().join("reader.grants");
    std::fs::write(&grants, "ALTER ROLE postgres NOSUPERUSER\n").unwrap();
    let refused = server.run(
        Some(ADMIN_TOKEN),
        &[
            "engine",
            "role",
            "add",
            "warehouse",
            "reader",
            "--grants",
            grants.to_str().unwrap(),
            "--max-ttl",
            "15m",
        ],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid_grants"));
    std::fs::write(
        &grants,
        "-- the reader\nGRANT USAGE ON SCHEMA public\nGRANT SELECT ON ALL TABLES IN SCHEMA public\n",
    )
    .unwrap();
    let role = server.json(&[
        "engine",
        "role",
        "add",
        "warehouse",
        "reader",
        "--grants",
        grants.to_str().unwrap(),
        "--max-ttl",
        "15m",
    ]);
    assert_eq!(role["max_ttl_s"], 900);
    assert_eq!(role["grants"].as_array().unwrap().len(), 2);
    let text = server.run(Some(ADMIN_TOKEN), &["engine", "role", "list", "warehouse"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("reader")
            && text.contains("900 s")
            && text.contains("GRANT USAGE ON SCHEMA public"),
        "{text}"
    );

    let leases = server.json(&["lease", "list"]);
    assert_eq!(leases["leases"], serde_json::json!([]));
    for args in [
        &["lease", "show", "nope"][..],
        &["lease", "revoke", "nope", "--reason", "test"][..],
    ] {
        let out = server.run(Some(ADMIN_TOKEN), args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("lease_not_found"), "{args:?}: {stderr}");
    }
    // An SVID is not a task token: presented as one, it is refused at authentication.
    let registered = server.json(&[
        "agent",
        "register",
        "analyst",
        "--owner",
        "alice@acme.example",
        "--label",
        "team=data",
    ]);
    let evidence = dir.path().join("evidence.json");
    std::fs::write(&evidence, "{}").unwrap();
    let key = dir.path().join("analyst.key");
    let attested = server.run(
        None,
        &[
            "attest",
            "--join-token",
            registered["join_token"].as_str().unwrap(),
            "--evidence",
            evidence.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        attested.status.success(),
        "{}",
        String::from_utf8_lossy(&attested.stderr)
    );
    let svid = dir.path().join("analyst.svid");
    std::fs::write(&svid, &attested.stdout).unwrap();
    let out = server.run(
        None,
        &[
            "lease",
            "create",
            "warehouse",
            "reader",
            "--token-file",
            svid.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("task_token_required"), "{stderr}");
    assert_eq!(
        server.json(&["lease", "list"])["leases"],
        serde_json::json!([])
    );

    // The success path: a task token from `aims token exchange`, a lease from `aims lease
    // create`, a session reading a table with it, a renewal, and the holder's revocation.
    let table = format!("public.cli_lease_sales_{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut admin = runtime.block_on(connect(&url.parse().unwrap()));
    runtime.block_on(async {
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (region text, amount int); \
             INSERT INTO {table} VALUES ('north', 42)"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    });
    // The starter policies let team `data` lease the warehouse's `reader` role.
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    server.json(&["policy", "push", policies.to_str().unwrap()]);
    server.json(&[
        "resource-server",
        "add",
        "warehouse-tools",
        "--audience",
        AUDIENCE,
        "--system",
        "warehouse",
    ]);
    let exchanged = server.run(
        None,
        &[
            "token",
            "exchange",
            "--svid",
            svid.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--scope",
            "lease:warehouse/reader",
            "--audience",
            AUDIENCE,
            "--intent",
            "read the sales table",
            "--output",
            "json",
        ],
    );
    assert!(
        exchanged.status.success(),
        "{}",
        String::from_utf8_lossy(&exchanged.stderr)
    );
    let token = dir.path().join("analyst.token.json");
    std::fs::write(&token, &exchanged.stdout).unwrap();
    let as_agent = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend([
            "--token-file",
            token.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--output",
            "json",
        ]);
        let out = server.run(None, &all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let granted = as_agent(&["lease", "create", "warehouse", "reader", "--ttl", "1m"]);
    let id = granted["lease_id"].as_str().unwrap().to_owned();
    let mut session = runtime.block_on(connect(
        &sqlx::postgres::PgConnectOptions::new()
            .host(granted["host"].as_str().unwrap())
            .port(u16::try_from(granted["port"].as_u64().unwrap()).unwrap())
            .database(granted["database"].as_str().unwrap())
            .username(granted["username"].as_str().unwrap())
            .password(granted["password"].as_str().unwrap()),
    ));
    let read = |session: &mut sqlx::PgConnection| {
        runtime.block_on(
            sqlx::query_scalar::<_, i32>(&format!(
                "SELECT amount FROM {table} WHERE region = 'north'"
            ))
            .fetch_one(session),
        )
    };
    assert_eq!(read(&mut session).unwrap(), 42);
    let renewed = as_agent(&["lease", "renew", &id, "--ttl", "3m"]);
    assert_eq!(renewed["state"], "active", "{renewed}");
    assert!(renewed["expires_at"].as_str() > granted["expires_at"].as_str());
    // The holder's SVID is no task token for a revocation either.
    let out = server.run(
        None,
        &[
            "lease",
            "revoke",
            &id,
            "--token-file",
            svid.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("task_token_required"), "{stderr}");
    assert_eq!(read(&mut session).unwrap(), 42, "a refusal changes nothing");
    let revoked = as_agent(&["lease", "revoke", &id, "--reason", "done reading"]);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let started = std::time::Instant::now();
    while server.json(&["lease", "show", &id])["state"] != "ended" {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(read(&mut session).is_err(), "the session was terminated");
    let again = runtime.block_on(
        sqlx::postgres::PgConnectOptions::new()
            .host(granted["host"].as_str().unwrap())
            .port(u16::try_from(granted["port"].as_u64().unwrap()).unwrap())
            .database(granted["database"].as_str().unwrap())
            .username(granted["username"].as_str().unwrap())
            .password(granted["password"].as_str().unwrap())
            .connect(),
    );
    assert!(again.is_err(), "the credential is refused after revocation");
    runtime.block_on(async {
        sqlx::raw_sql(&format!("DROP TABLE {table}"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}

async fn connect(options: &sqlx::postgres::PgConnectOptions) -> sqlx::PgConnection {
    options.connect().await.unwrap()
}
