//! One `aims server` process over a data directory that outlives it, restarted as a crash or
//! a fault test needs, with the client calls those tests make against it. Shared by the crash
//! and storage-fault tests.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::process::{ADMIN_TOKEN, Server, UNLIMITED};
use crate::replica_kit::{Agent, PUBLIC_URL, Replica};

/// Tokens delegated from each revoked root: more than one step of a revocation's cascade
/// takes (128), so a kill can fall between its transactions.
pub const CHILDREN: usize = 300;

/// One server process over a data directory that outlives it. Its public URL is fixed, so
/// tokens stay valid across restarts (each start listens on a new ephemeral port).
pub struct Node {
    pub data: PathBuf,
    pub server: Server,
    pub http: reqwest::Client,
    pub rs_secret: String,
    /// Environment every start of this node gets.
    env: Vec<(String, String)>,
    /// Flags every start of this node gets (besides its public URL).
    flags: Vec<String>,
}

impl Node {
    /// A first start on a fresh data directory, with the starter policies and `repo-tools`.
    pub async fn first_start(data: PathBuf) -> Self {
        Self::first_start_with(data, &[]).await
    }

    /// [`Self::first_start`] with `env` given to this and every later start. These tests make
    /// hundreds of token and introspection requests a second from one address, so the rate
    /// limits are raised unless `env` sets them (their own tests are in `aims-server`).
    pub async fn first_start_with(data: PathBuf, env: &[(&str, &str)]) -> Self {
        Self::first_start_on(data, env, None).await
    }

    /// [`Self::first_start_with`] on the PostgreSQL database `database_url` when given (the
    /// data directory then holds the master key only), on SQLite in `data` otherwise.
    pub async fn first_start_on(
        data: PathBuf,
        env: &[(&str, &str)],
        database_url: Option<&str>,
    ) -> Self {
        let flags = database_url
            .map(|url| vec!["--database-url".to_owned(), url.to_owned()])
            .unwrap_or_default();
        let env: Vec<(String, String)> = UNLIMITED
            .iter()
            .filter(|(name, _)| !env.iter().any(|(set, _)| set == name))
            .chain(env)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let server = Self::spawn(&data, &env, &flags, true);
        let mut node = Node {
            data,
            server,
            http: reqwest::Client::new(),
            rs_secret: String::new(),
            env,
            flags,
        };
        node.rs_secret = node.at().set_up().await;
        node
    }

    fn spawn(data: &Path, env: &[(String, String)], flags: &[String], first: bool) -> Server {
        let mut all: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if first {
            all.push(("AIMS_BOOTSTRAP_TOKEN", ADMIN_TOKEN));
        }
        let mut args = vec!["--public-url", PUBLIC_URL];
        args.extend(flags.iter().map(String::as_str));
        Server::start_with(data, &all, &args)
    }

    /// SIGKILL, then a new process on the same store.
    pub fn kill_and_restart(&mut self) {
        self.server.child.kill().unwrap();
        self.server.child.wait().unwrap();
        self.server = Self::spawn(&self.data, &self.env, &self.flags, false);
    }

    /// Requests to this node.
    pub fn at(&self) -> Replica<'_> {
        Replica {
            http: &self.http,
            url: &self.server.url,
        }
    }

    /// GETs `path` as the bootstrap admin; asserts success.
    pub async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.server.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// A new task token of the planner and `CHILDREN` tokens delegated from it.
    pub async fn subtree(&self, planner: &Agent, executor: &Agent) -> Vec<String> {
        let mut tokens = vec![self.at().exchange(planner).await];
        for _ in 0..CHILDREN {
            tokens.push(self.at().delegate(&tokens[0], planner, executor).await);
        }
        tokens
    }

    /// Is `token` active, as the store tells the resource server (RFC 7662)?
    pub async fn active(&self, token: &str) -> bool {
        let resp = self
            .http
            .post(format!("{}/oauth2/introspect", self.server.url))
            .basic_auth("repo-tools", Some(&self.rs_secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["active"].as_bool().unwrap()
    }

    /// How many of `tokens` introspect as active.
    pub async fn count_active(&self, tokens: &[String]) -> usize {
        let mut active = 0;
        for token in tokens {
            active += usize::from(self.active(token).await);
        }
        active
    }

    /// The never-revoked control token is active and decides.
    pub async fn still_works(&self, holder: &Agent, token: &str) {
        assert!(self.active(token).await, "the control token was lost");
        assert_eq!(self.at().decide(holder, token).await, 200);
    }

    /// Verifies the audit chain and returns how many records it holds.
    pub async fn verified_audit_head(&self) -> u64 {
        let verified = self.get("/v1/audit/verify").await;
        assert_eq!(verified["intact"], true, "{verified}");
        verified["records"].as_u64().unwrap()
    }

    /// The audit log as a Merkle tree after a restart: the server found no break when it
    /// checked the stored log against its signed checkpoints at start (`/readyz` says
    /// `audit_tree`), and `aims audit verify` recomputes the tree and the chain and matches
    /// every stored checkpoint.
    pub async fn verified_audit_tree(&self) {
        let ready: Value = self
            .http
            .get(format!("{}/readyz", self.server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["audit_tree"], true, "{ready}");
        let verify = self.server.run(Some(ADMIN_TOKEN), &["audit", "verify"]);
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    /// `revoke` audit events naming `jti`.
    pub async fn revoke_events(&self, jti: &str) -> usize {
        self.count_events(|e| e["action"] == "revoke" && e["token_id"] == jti)
            .await
    }

    /// Audit events that `keep`, read up to the head the chain verification saw (reading the
    /// log is itself audited, so the log grows while it is read).
    pub async fn count_events(&self, keep: impl Fn(&Value) -> bool) -> usize {
        self.events().await.iter().filter(|e| keep(e)).count()
    }

    /// Every audit event up to the head the chain verification saw.
    pub async fn events(&self) -> Vec<Value> {
        let head = self.verified_audit_head().await;
        let mut after = 0u64;
        let mut events = Vec::new();
        while after < head {
            let page = self
                .get(&format!("/v1/audit?after={after}&limit=500"))
                .await;
            let records = page["records"].as_array().unwrap();
            let Some(last) = records.last() else { break };
            after = last["seq"].as_u64().unwrap();
            events.extend(
                records
                    .iter()
                    .filter(|r| r["seq"].as_u64() <= Some(head))
                    .map(|r| r["event"].clone()),
            );
        }
        events
    }
}
