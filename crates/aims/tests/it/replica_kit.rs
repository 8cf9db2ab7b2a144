//! Two `aims server` processes over one fresh PostgreSQL database, as replicas behind a load
//! balancer: both are configured with the same public URL (so tokens and DPoP proofs name it)
//! and the same master key, while requests go to each process's own loopback address.
//! [`Replica`] drives one such process (agents, exchange, delegation, decisions, revocation);
//! it also serves a lone server started with `--public-url` [`PUBLIC_URL`].
//! Shared by the replica and crash tests and the `revocation_propagation` and
//! `revocation_fanout` benchmarks.

use std::collections::BTreeMap;
use std::sync::Arc;

use aims_sdk::AdminClient;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde_json::{Value, json};

use crate::process::{ADMIN_TOKEN, Server};

/// The public URL the servers answer for.
pub const PUBLIC_URL: &str = "http://aims.replicas.test";
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The resource server task tokens are issued for.
pub const AUDIENCE: &str = "https://tools.acme.example/repo";

/// A fresh database on the server named by `AIMS_TEST_DATABASE_URL` (dropping, once per
/// process, what earlier runs left behind: never another test's of this run).
pub async fn database_url() -> String {
    static LEFTOVERS_DROPPED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let base = std::env::var("AIMS_TEST_DATABASE_URL")
        .expect("AIMS_TEST_DATABASE_URL must name a PostgreSQL database");
    let mut suffix = [0u8; 6];
    SystemRandom::new().fill(&mut suffix).unwrap();
    let name = format!(
        "aims_replicas_{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let pool = sqlx::PgPool::connect(&base).await.unwrap();
    LEFTOVERS_DROPPED
        .get_or_init(|| async {
            // A database still in use refuses to be dropped, so only leftovers go.
            let leftovers: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database WHERE datname LIKE 'aims\\_replicas\\_%'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            for leftover in leftovers {
                let _ = sqlx::query(&format!("DROP DATABASE {leftover}"))
                    .execute(&pool)
                    .await;
            }
        })
        .await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let without_query = base.split('?').next().unwrap();
    let (server, _) = without_query.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

/// An attested agent.
#[derive(Clone)]
pub struct Agent {
    pub key: Arc<AgentKey>,
    pub svid: String,
}

/// Requests to one server process at `url`, which answers for [`PUBLIC_URL`].
#[derive(Clone, Copy)]
pub struct Replica<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
}

/// Two replicas and an HTTP client.
pub struct Deployment {
    pub replicas: Vec<Server>,
    pub http: reqwest::Client,
    database_url: String,
    _dir: tempfile::TempDir,
}

/// The starter policy set shipped in the repository's `policies/`: schema, policies and
/// their test cases (a push runs them first).
pub fn starter_policies() -> BTreeMap<String, String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    std::fs::read_dir(dir)
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

/// The claims of a token (unverified: the servers verified it).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A token's `jti`.
pub fn jti(token: &str) -> String {
    claims(token)["jti"].as_str().unwrap().to_owned()
}

/// A task token's task.
pub fn task_id(token: &str) -> String {
    claims(token)["task_id"].as_str().unwrap().to_owned()
}

/// The access token of a token response; panics on a refusal.
fn issued(body: &Value) -> String {
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("token request refused: {body}"))
        .to_owned()
}

/// The last `DPoP-Nonce` each server process (by its own URL) handed out: a proof for an
/// enforcement point must carry the nonce of the replica it goes to.
static NONCES: std::sync::Mutex<BTreeMap<String, String>> = std::sync::Mutex::new(BTreeMap::new());

fn proof(
    agent: &Agent,
    method: &str,
    path: &str,
    token: Option<&str>,
    nonce: Option<&str>,
) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let url = format!("{PUBLIC_URL}{path}");
    aims_token::dpop::sign_proof_with_nonce(
        &agent.key,
        &SystemRandom::new(),
        method,
        &url,
        token,
        nonce,
        now,
    )
    .unwrap()
}

impl Deployment {
    /// Starts two replicas on `database_url` and sets up policies and a resource server.
    pub async fn start(database_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let flags = ["--database-url", database_url, "--public-url", PUBLIC_URL];
        let [source, credential] = crate::process::UNLIMITED;
        let first = Server::start_with(
            &dir.path().join("a"),
            &[("AIMS_BOOTSTRAP_TOKEN", ADMIN_TOKEN), source, credential],
            &flags,
        );
        let master = std::fs::read_to_string(dir.path().join("a/master.key")).unwrap();
        let second = Server::start_with(
            &dir.path().join("b"),
            &[("AIMS_MASTER_KEY", master.trim()), source, credential],
            &flags,
        );
        let deployment = Self {
            replicas: vec![first, second],
            http: reqwest::Client::new(),
            database_url: database_url.to_owned(),
            _dir: dir,
        };
        deployment.at(0).set_up().await;
        // Replicas pick up a new policy version within a second.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for replica in &deployment.replicas {
            loop {
                let active: Value = deployment
                    .http
                    .get(format!("{}/v1/policies/active", replica.url))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if active["version"] == 1 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "policy not loaded: {active}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        deployment
    }

    /// Kills every replica with SIGKILL (no shutdown of any kind), then starts the second
    /// again on its data directory and the same database; it becomes the only replica.
    pub fn kill_all_and_restart_one(&mut self) {
        for replica in &mut self.replicas {
            replica.child.kill().unwrap();
            replica.child.wait().unwrap();
        }
        let master = std::fs::read_to_string(self._dir.path().join("a/master.key")).unwrap();
        let [source, credential] = crate::process::UNLIMITED;
        let restarted = Server::start_with(
            &self._dir.path().join("b"),
            &[("AIMS_MASTER_KEY", master.trim()), source, credential],
            &[
                "--database-url",
                &self.database_url,
                "--public-url",
                PUBLIC_URL,
            ],
        );
        self.replicas = vec![restarted];
    }

    /// Requests to replica `replica`.
    pub fn at(&self, replica: usize) -> Replica<'_> {
        Replica {
            http: &self.http,
            url: &self.replicas[replica].url,
        }
    }
}

impl Replica<'_> {
    /// Pushes the starter policies and registers the `repo-tools` resource server for
    /// [`AUDIENCE`]; returns its client secret.
    pub async fn set_up(&self) -> String {
        let pushed = self
            .admin("/v1/policies", json!({"files": starter_policies()}))
            .await;
        assert_eq!(pushed.0, 201, "{}", pushed.1);
        let rs = self
            .admin(
                "/v1/resource-servers",
                json!({"name": "repo-tools", "audience": AUDIENCE, "system": "github"}),
            )
            .await;
        assert_eq!(rs.0, 201, "{}", rs.1);
        rs.1["client_secret"].as_str().unwrap().to_owned()
    }

    /// POSTs `body` as the bootstrap admin.
    pub async fn admin(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin_with(reqwest::Method::POST, path, body).await
    }

    /// Sends `body` with `method` as the bootstrap admin.
    pub async fn admin_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers and attests a planner agent.
    pub async fn planner(&self) -> Agent {
        self.agent("planner", "planner").await
    }

    /// Registers and attests agent `name` with label `role` (the starter policies let a `planner` obtain repository scopes and delegate to an `executor`).
    pub async fn agent(&self, name: &str, role: &str) -> Agent {
        let (status, body) = self
            .admin(
                "/v1/agents",
                json!({"name": name, "owner": "alice@acme.example",
                       "labels": {"role": role}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let join = body["join_token"].as_str().unwrap().to_owned();
        let key = Arc::new(AgentKey::generate(AgentKeyKind::P256, &SystemRandom::new()).unwrap());
        let svid = Attestor::new(AdminClient::new(self.url, None).unwrap(), key.clone())
            .attest(&Default::default(), &Credential::JoinToken(join), None)
            .await
            .unwrap()
            .svid;
        Agent { key, svid }
    }

    /// POSTs `form` to the token endpoint with a DPoP proof by `holder`; returns the status
    /// and the body.
    async fn token_response(&self, holder: &Agent, form: &[(&str, &str)]) -> (u16, Value) {
        let proof = proof(holder, "POST", "/oauth2/token", None, None);
        let resp = self
            .http
            .post(format!("{}/oauth2/token", self.url))
            .header("DPoP", proof)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// [`Self::token_response`], asserting it issued a token; returns the token.
    async fn token(&self, holder: &Agent, form: &[(&str, &str)]) -> String {
        issued(&self.token_response(holder, form).await.1)
    }

    /// The token endpoint's answer to a task-token request for `agent` (a new task each time).
    pub async fn exchange_response(&self, agent: &Agent) -> (u16, Value) {
        let form = [
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", agent.svid.as_str()),
            ("subject_token_type", TYPE_JWT),
            ("scope", "read:repo/acme/*"),
            ("audience", AUDIENCE),
            ("intent", "replica test"),
        ];
        self.token_response(agent, &form).await
    }

    /// A task token for `agent` with `scope` (a new task each time).
    pub async fn exchange_scope(&self, agent: &Agent, scope: &str) -> String {
        let form = [
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", agent.svid.as_str()),
            ("subject_token_type", TYPE_JWT),
            ("scope", scope),
            ("audience", AUDIENCE),
            ("intent", "replica test"),
        ];
        self.token(agent, &form).await
    }

    /// `POST /v1/leases` by `agent` with its task token; returns the status and the body.
    /// A proof without this replica's current nonce is sent once more with it.
    pub async fn lease(&self, agent: &Agent, token: &str, body: &Value) -> (u16, Value) {
        for _ in 0..2 {
            let proof = proof(
                agent,
                "POST",
                "/v1/leases",
                Some(token),
                self.nonce().as_deref(),
            );
            let request = self
                .http
                .post(format!("{}/v1/leases", self.url))
                .header("Authorization", format!("DPoP {token}"))
                .header("DPoP", proof)
                .json(body);
            let (status, answer) = self.send_decision(request).await;
            if !(status == 401 && answer["error"] == "use_dpop_nonce") {
                return (status, answer);
            }
        }
        panic!("the lease request was refused twice for its nonce");
    }

    /// GETs `path` as the bootstrap admin.
    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Audit events with `action`, from the start of the log to about now.
    pub async fn events(&self, action: &str) -> Vec<Value> {
        let mut after = 0u64;
        let mut events = Vec::new();
        loop {
            let page = self
                .get(&format!("/v1/audit?after={after}&limit=500"))
                .await;
            let records = page["records"].as_array().unwrap();
            let Some(last) = records.last() else { break };
            after = last["seq"].as_u64().unwrap();
            events.extend(
                records
                    .iter()
                    .map(|r| r["event"].clone())
                    .filter(|e| e["action"] == action),
            );
            // Reading the log is audited, so it never stops growing: a short page is the end.
            if records.len() < 500 {
                break;
            }
        }
        events
    }

    /// A task token for `agent` (a new task each time).
    pub async fn exchange(&self, agent: &Agent) -> String {
        issued(&self.exchange_response(agent).await.1)
    }

    /// `delegator` (holding `parent`, a task token bound to its key) delegates it to `actor`;
    /// returns the delegated token, bound to `actor`'s key.
    pub async fn delegate(&self, parent: &str, delegator: &Agent, actor: &Agent) -> String {
        let form = [
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", parent),
            ("subject_token_type", TYPE_ACCESS_TOKEN),
            ("actor_token", actor.svid.as_str()),
            ("actor_token_type", TYPE_JWT),
        ];
        self.token(delegator, &form).await
    }

    /// This replica's last DPoP nonce.
    pub fn nonce(&self) -> Option<String> {
        NONCES.lock().unwrap().get(self.url).cloned()
    }

    /// A DPoP proof by `agent` for a decision with `token` at this replica, carrying `nonce`.
    pub fn decision_proof(&self, agent: &Agent, token: &str, nonce: Option<&str>) -> String {
        proof(agent, "POST", "/v1/decisions", Some(token), nonce)
    }

    /// A decision request with `proof`: `agent` reads a repository with the task token.
    pub fn decision_request_with(&self, token: &str, proof: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/decisions", self.url))
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof)
            .json(&json!({"action": "read", "resource": {
                "type": "Resource", "id": "repo/acme/app", "system": "github",
                "environment": "dev", "sensitivity": "internal", "kind": "repository"}}))
    }

    /// Asks for a decision with the task token; returns the HTTP status.
    pub async fn decide(&self, agent: &Agent, token: &str) -> u16 {
        self.decision(agent, token).await.0
    }

    /// [`Self::decide`], also returning the body (a refusal says why). A proof without this
    /// replica's current nonce is answered `use_dpop_nonce`, and sent once more with it.
    pub async fn decision(&self, agent: &Agent, token: &str) -> (u16, Value) {
        let (status, body) = self.decision_once(agent, token).await;
        if status == 401 && body["error"] == "use_dpop_nonce" {
            return self.decision_once(agent, token).await;
        }
        (status, body)
    }

    async fn decision_once(&self, agent: &Agent, token: &str) -> (u16, Value) {
        let proof = self.decision_proof(agent, token, self.nonce().as_deref());
        self.send_decision(self.decision_request_with(token, &proof))
            .await
    }

    /// Sends a decision request; remembers the replica's nonce; returns status and body.
    pub async fn send_decision(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = request.send().await.unwrap();
        if let Some(nonce) = resp.headers().get("dpop-nonce") {
            NONCES
                .lock()
                .unwrap()
                .insert(self.url.to_owned(), nonce.to_str().unwrap().to_owned());
        }
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Revokes a token (and what derives from it); returns how many credentials were revoked.
    pub async fn revoke_token(&self, jti: &str) -> u64 {
        let (status, body) = self
            .admin(
                "/v1/revocations",
                json!({"target": "token", "id": jti, "reason": "replica test"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["revoked"].as_u64().unwrap()
    }

    /// The last revocation-log position this replica has applied (its
    /// `aims_revocation_log_position` gauge).
    pub async fn log_position(&self) -> u64 {
        self.gauge("aims_revocation_log_position").await
    }

    /// The value of gauge `name` on this replica's `/metrics` (which needs no credential).
    pub async fn gauge(&self, name: &str) -> u64 {
        let metrics = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    }

    /// Ends a task.
    pub async fn end_task(&self, task_id: &str) {
        let (status, body) = self
            .admin(&format!("/v1/tasks/{task_id}/end"), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}
