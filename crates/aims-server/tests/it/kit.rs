//! The testkit: boots the real server on `127.0.0.1:0` over a fresh store (SQLite in a
//! temporary directory, or a fresh PostgreSQL schema) and talks to it over HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aims_core::audit::{AuditEvent, AuditRecord};
use aims_server::config::{Config, ENV_BOOTSTRAP_TOKEN, Overrides};
use aims_server::server::{RunningServer, start_with_store};
use aims_store::{PostgresStore, SqliteStore, Store};
use aims_token::jws::{self, Alg, VerifyingKey};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

/// The bootstrap admin credential every test server starts with.
pub const ADMIN_TOKEN: &str = "aims-test-bootstrap-credential-0123456789abcdef";
/// The variable naming the PostgreSQL database for the PostgreSQL runs.
pub const PG_ENV: &str = "AIMS_TEST_DATABASE_URL";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates each named `async fn(Backend)` as a SQLite test and a PostgreSQL test.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::kit::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
                async fn $name() {
                    super::$name($crate::kit::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A response: status, JSON body (Null when empty or not JSON), headers, and the body's bytes
/// (for answers that are not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The stable error code of a refusal.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub dir: Arc<TempDir>,
    pub backend: Backend,
    running: Option<RunningServer>,
}

/// A fresh store for `backend` in `dir`.
pub async fn open_store(backend: Backend, dir: &TempDir) -> Arc<dyn Store> {
    match backend {
        Backend::Sqlite => Arc::new(
            SqliteStore::open(&dir.path().join("aims.db"))
                .await
                .unwrap(),
        ),
        Backend::Postgres => {
            let url = std::env::var(PG_ENV).unwrap_or_else(|_| {
                panic!("{PG_ENV} must name a PostgreSQL database for the PostgreSQL runs")
            });
            Arc::new(
                PostgresStore::connect_with_schema(&url, &pg_schema(dir))
                    .await
                    .unwrap(),
            )
        }
    }
}

/// Server configuration for tests: ephemeral loopback port, data in `dir`.
pub fn config(dir: &TempDir) -> Config {
    config_with(dir, &HashMap::new())
}

/// [`config`] with `AIMS_*` variables from `env`.
///
/// The suite checks that every refusal is audited one by one, so its servers write every
/// anonymous refusal (`refusals_written_per_source` at its maximum); the bound on what
/// anonymous callers may write has tests of its own (`anonymous.rs`), on the default.
pub fn config_with(dir: &TempDir, env: &HashMap<String, String>) -> Config {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_owned()),
        trust_domain: Some("test.example".into()),
        ..Overrides::default()
    };
    let mut config = Config::load_with(&overrides, &|name| env.get(name).cloned()).unwrap();
    config.refusals_written_per_source = 10_000;
    config
}

impl TestServer {
    /// A fresh server on a fresh store.
    pub async fn start(backend: Backend) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let store = open_store(backend, &dir).await;
        let env = HashMap::from([(ENV_BOOTSTRAP_TOKEN.to_owned(), ADMIN_TOKEN.to_owned())]);
        Self::start_on(backend, dir, store, env).await.unwrap()
    }

    /// A fresh server whose configuration `tune` adjusts first.
    pub async fn start_tuned(backend: Backend, tune: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let store = open_store(backend, &dir).await;
        let env = HashMap::from([(ENV_BOOTSTRAP_TOKEN.to_owned(), ADMIN_TOKEN.to_owned())]);
        let mut config = config_with(&dir, &env);
        tune(&mut config);
        Self::start_configured(backend, dir, store, env, config)
            .await
            .unwrap()
    }

    /// A server over an existing store and data directory, with environment `env`.
    pub async fn start_on(
        backend: Backend,
        dir: Arc<TempDir>,
        store: Arc<dyn Store>,
        env: HashMap<String, String>,
    ) -> Result<Self, aims_server::bootstrap::StartupError> {
        let config = config_with(&dir, &env);
        Self::start_configured(backend, dir, store, env, config).await
    }

    /// A server over an existing store and data directory, with `config` and environment
    /// `env`.
    pub async fn start_configured(
        backend: Backend,
        dir: Arc<TempDir>,
        store: Arc<dyn Store>,
        env: HashMap<String, String>,
        config: Config,
    ) -> Result<Self, aims_server::bootstrap::StartupError> {
        let lookup = |name: &str| env.get(name).cloned();
        let running = start_with_store(config, store.clone(), &lookup).await?;
        Ok(Self {
            base: running.base_url.clone(),
            http: reqwest::Client::new(),
            store,
            dir,
            backend,
            running: Some(running),
        })
    }

    /// Stops the server gracefully and returns its data directory and store.
    pub async fn stop(mut self) -> (Arc<TempDir>, Arc<dyn Store>) {
        let running = self.running.take().unwrap();
        running.shutdown();
        running.wait().await.unwrap();
        (self.dir.clone(), self.store.clone())
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Sends a request a test built itself (its own credentials, headers or body) to this
    /// server on the client that built it, and holds the answer to openapi.json as every
    /// [`TestServer::call`] is ([`crate::contract::check`]).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        Self::send_to(&self.base, req).await
    }

    /// [`TestServer::send`] to the server at `base`, for a request sent where no
    /// [`TestServer`] is at hand (a spawned task, a server started by hand).
    pub async fn send_to(base: &str, req: reqwest::RequestBuilder) -> Reply {
        let (client, request) = req.build_split();
        let request = request.unwrap();
        let method = request.method().clone();
        let url = request.url().to_string();
        let path = url
            .strip_prefix(base)
            .unwrap_or_else(|| panic!("{url} is not a request to {base}"))
            .to_owned();
        let reply = Self::reply(client.execute(request).await.unwrap()).await;
        let content_type = reply
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        crate::contract::check(&method, &path, reply.status, content_type, &reply.body);
        reply
    }

    /// Turns a response into a [`Reply`].
    pub async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
            bytes: bytes.to_vec(),
        }
    }

    /// As the bootstrap admin.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// Registers an agent as admin and asserts success.
    pub async fn register(&self, name: &str, owner: &str) -> Value {
        let reply = self
            .admin(
                Method::POST,
                "/v1/agents",
                Some(serde_json::json!({"name": name, "owner": owner})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    /// Adds a user with `role` and returns its credential.
    pub async fn add_user(&self, name: &str, role: &str) -> String {
        let reply = self
            .admin(
                Method::POST,
                "/v1/users",
                Some(serde_json::json!({"name": name, "role": role})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }

    /// Every audit record, straight from the store (every acknowledged event sequenced first).
    pub async fn records(&self) -> Vec<AuditRecord> {
        self.store.sequence_audit().await.unwrap();
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |r: &AuditRecord| r.seq);
            let page = self.store.audit_records(after, 1000).await.unwrap();
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// Every audit event, in order.
    pub async fn events(&self) -> Vec<AuditEvent> {
        self.records()
            .await
            .iter()
            .map(|r| r.event().unwrap())
            .collect()
    }

    /// The newest audit event with `action`.
    pub async fn last_event(&self, action: &str) -> AuditEvent {
        self.events()
            .await
            .into_iter()
            .rev()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no {action} event"))
    }

    /// How many audit events have `action`.
    pub async fn count_events(&self, action: &str) -> usize {
        self.events()
            .await
            .iter()
            .filter(|e| e.action == action)
            .count()
    }

    /// How many agents are registered.
    pub async fn agent_count(&self) -> usize {
        self.store
            .list_agents(&aims_store::AgentFilter::default())
            .await
            .unwrap()
            .len()
    }
}

impl TestServer {
    /// Runs `sql` (one statement, tables unqualified) on the server's database behind its
    /// back, as an attacker or a fault with database access would.
    pub async fn raw_sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", self.dir.path().join("aims.db").display());
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let options: sqlx::postgres::PgConnectOptions =
                    std::env::var(PG_ENV).unwrap().parse().unwrap();
                let options = options.options([("search_path", pg_schema(&self.dir))]);
                let pool = sqlx::PgPool::connect_with(options).await.unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// How many rows `table` holds, read behind the server's back.
    pub async fn count_rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self.backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", self.dir.path().join("aims.db").display());
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let count = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                count
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&std::env::var(PG_ENV).unwrap())
                    .await
                    .unwrap();
                let sql = format!("SELECT COUNT(*) FROM {}.{table}", pg_schema(&self.dir));
                let count = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                count
            }
        }
    }

    /// Rewrites the body of audit record `seq` behind the server's back, as an attacker with
    /// database access would.
    pub async fn tamper_with_record(&self, seq: u64, new_body: &str) {
        let seq = i64::try_from(seq).unwrap();
        match self.backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", self.dir.path().join("aims.db").display());
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let done = sqlx::query("UPDATE audit_log SET body = ? WHERE seq = ?")
                    .bind(new_body)
                    .bind(seq)
                    .execute(&pool)
                    .await
                    .unwrap();
                assert_eq!(done.rows_affected(), 1);
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&std::env::var(PG_ENV).unwrap())
                    .await
                    .unwrap();
                let sql = format!(
                    "UPDATE {}.audit_log SET body = $1 WHERE seq = $2",
                    pg_schema(&self.dir)
                );
                let done = sqlx::query(&sql)
                    .bind(new_body)
                    .bind(seq)
                    .execute(&pool)
                    .await
                    .unwrap();
                assert_eq!(done.rows_affected(), 1);
                pool.close().await;
            }
        }
    }
}

/// The PostgreSQL schema a test's store lives in, derived from its temporary directory.
pub fn pg_schema(dir: &TempDir) -> String {
    let unique = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    format!(
        "it_{}",
        unique.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// Serves `app` on an ephemeral loopback port for the rest of the test; returns its base URL.
pub async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The starter policy set shipped in the repository's `policies/`.
pub fn starter_files() -> BTreeMap<String, String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".cedar")
                || name.ends_with(".cedarschema")
                || name.ends_with(".test.json")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// The claims of a signed event body (`typ: aims-event+jwt`), verified against the server's
/// JWKS (the key named by its `kid`).
pub async fn event_claims(server: &TestServer, body: &str) -> serde_json::Map<String, Value> {
    let jwks = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    jws::verify(body, "aims-event+jwt", &[Alg::Es256], |header| {
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| Some(k["kid"].as_str().unwrap()) == header.kid.as_deref())
            .unwrap();
        VerifyingKey::from_jwk(jwk).map(|(k, _)| k)
    })
    .unwrap()
    .claims
}
