//! `aims demo`: starts a real `aims server` child process on a free loopback port with a
//! temporary data directory, drives it through the SDK as an operator would, and prints what
//! happened. Each issue adds its acceptance scenario (SPEC §7) here.
//!
//! Every step talks to the server over HTTP; nothing is simulated. The server is stopped with
//! SIGTERM and restarted on the same data directory to show that state and the audit chain
//! survive.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use std::collections::BTreeMap;

use aims_api::approvals::ApprovalView;
use aims_api::oauth::{CreateTaskRequest, RegisterResourceServerRequest};
use aims_api::report::ReportQuery;
use aims_api::secrets::PutSecretRequest;
use aims_api::{
    AddUserRequest, AgentQuery, AuditQuery, DecideRequest, LifecycleRequest, PushPolicyRequest,
    RegisterAgentRequest,
};
use aims_core::agent::Limits;
use aims_core::id::{
    AgentName, EngineName, Environment, LabelKey, Owner, ResourceServerName, RoleName, SecretName,
    UserName,
};
use aims_core::posture::{Evidence, PostureProfile};
use aims_core::scope::ScopeSet;
use aims_core::user::Role;
use aims_sdk::attest::{Attestor, Credential};
use aims_sdk::oauth::{DelegationRequest, ExchangeRequest};
use aims_sdk::{AdminClient, SdkError, TokenClient};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use anyhow::{Context as _, anyhow, bail};
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long the demo waits for the server to say it is listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The audience of the repository tools (scenario 6).
const REPO_TOOLS: &str = "https://tools.acme.example/repo";
/// The audience of the gateway (scenario 1 through it).
const GATEWAY: &str = "https://gateway.acme.example";
/// The static repository token the gateway injects; the agent never sees it.
const REPOSITORY_TOKEN: &str = "ghs_demo_static_repository_token";
/// The audience of the warehouse (scenario 4).
const WAREHOUSE: &str = "https://warehouse.acme.example";
/// The variable naming the PostgreSQL database scenario 4 leases a role of (an administrator
/// that may create roles, no password in the URL); [`DEMO_DATABASE_DEFAULT`] when unset.
pub const ENV_DEMO_DATABASE: &str = "AIMS_DEMO_DATABASE_URL";
/// The local PostgreSQL the demo tries when [`ENV_DEMO_DATABASE`] is unset.
const DEMO_DATABASE_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A server child process and what it printed at start.
struct ServerProcess {
    child: Child,
    /// `http://IP:PORT`, as the server printed it.
    url: String,
    bootstrap_credential: Option<String>,
}

impl ServerProcess {
    async fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the aims binary")?;
        let mut child = Command::new(exe)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--trust-domain",
                "demo.example",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("AIMS_LOG", "warn")
            .env_remove("AIMS_CONFIG")
            .env_remove("AIMS_DATABASE_URL")
            .env_remove("AIMS_MASTER_KEY")
            .env_remove("AIMS_BOOTSTRAP_TOKEN")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start aims server")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut bootstrap_credential = None;
        let url = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(credential) = line
                    .split(": ")
                    .nth(1)
                    .filter(|_| line.starts_with("bootstrap admin credential"))
                {
                    bootstrap_credential = Some(credential.trim().to_owned());
                } else if let Some(url) = line.strip_prefix("listening on ") {
                    return Ok::<_, anyhow::Error>(url.trim().to_owned());
                }
            }
            bail!("the server exited before it was listening")
        })
        .await
        .context("the server did not start in time")??;
        Ok(Self {
            child,
            url,
            bootstrap_credential,
        })
    }

    /// SIGTERM, then wait for a clean exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow!("server already exited"))?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("could not signal the server");
        }
        let exit = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .context("the server did not stop after SIGTERM")??;
        if !exit.success() {
            bail!("the server exited with {exit}");
        }
        Ok(())
    }
}

fn name(value: &str) -> anyhow::Result<AgentName> {
    Ok(AgentName::new(value)?)
}

/// A member of a JSON object, or null.
fn at<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// The starter policy set, as shipped in the repository's `policies/` directory.
const STARTER_POLICIES: [(&str, &str); 9] = [
    (
        "aims.cedarschema",
        include_str!("../../../policies/aims.cedarschema"),
    ),
    (
        "baseline.cedar",
        include_str!("../../../policies/baseline.cedar"),
    ),
    ("cicd.cedar", include_str!("../../../policies/cicd.cedar")),
    (
        "delegation.cedar",
        include_str!("../../../policies/delegation.cedar"),
    ),
    (
        "warehouse.cedar",
        include_str!("../../../policies/warehouse.cedar"),
    ),
    (
        "coding.cedar",
        include_str!("../../../policies/coding.cedar"),
    ),
    (
        "incident.cedar",
        include_str!("../../../policies/incident.cedar"),
    ),
    (
        "support.cedar",
        include_str!("../../../policies/support.cedar"),
    ),
    (
        "scenarios.test.json",
        include_str!("../../../policies/scenarios.test.json"),
    ),
];

/// Registry labels the starter policies read (teams and roles).
fn labels_for(agent: &str) -> anyhow::Result<BTreeMap<LabelKey, String>> {
    let (key, value) = match agent {
        "coding-agent" => ("team", "coding-agents"),
        "incident-responder" => ("team", "incident-response"),
        "support-agent" => ("role", "support"),
        "ci-deployer" => ("team", "ci"),
        "data-analyst" => ("team", "data"),
        "planner" => ("role", "planner"),
        "executor" => ("role", "executor"),
        _ => return Ok(BTreeMap::new()),
    };
    Ok([(LabelKey::new(key)?, value.to_owned())].into())
}

fn resource(
    kind_type: &str,
    id: &str,
    system: &str,
    environment: &str,
    sensitivity: &str,
    kind: &str,
) -> Value {
    json!({"type": kind_type, "id": id, "system": system, "environment": environment,
                       "sensitivity": sensitivity, "kind": kind})
}

/// Attests `agent` with empty evidence and returns a client and its SVID.
async fn attested(base: &str, agent: &str, join: String) -> anyhow::Result<String> {
    let issued = Attestor::new(AdminClient::new(base, None)?, new_key()?)
        .attest(&Evidence::default(), &Credential::JoinToken(join), None)
        .await?;
    println!("{agent} attested: JWT-SVID issued");
    Ok(issued.svid)
}

/// A decision request for the demo task.
fn decide_request(action: &str, resource: Value) -> DecideRequest {
    DecideRequest {
        action: action.to_owned(),
        resource,
        task_id: "demo-task".to_owned(),
        intent: "demo".to_owned(),
        arguments: serde_json::Map::new(),
    }
}

/// A decision request made with a task token: the token names the task and its intent.
fn token_request(action: &str, resource: Value) -> DecideRequest {
    DecideRequest {
        task_id: String::new(),
        intent: String::new(),
        ..decide_request(action, resource)
    }
}

/// The CI/CD agent's deploy key in the vault.
fn deploy_key() -> Value {
    resource(
        "Secret",
        "vault/prod/deploy-key",
        "vault",
        "prod",
        "secret",
        "api-key",
    )
}

/// One decision, printed as `action resource: decision (policies)`.
async fn show_decision(
    base: &str,
    svid: &str,
    action: &str,
    resource: Value,
) -> anyhow::Result<String> {
    let label = format!(
        "{action} {}",
        at(&resource, "id").as_str().unwrap_or_default()
    );
    let answer = AdminClient::new(base, None)?
        .decide(svid, &decide_request(action, resource))
        .await?;
    let line = format!(
        "{label}: {} ({})",
        answer.decision,
        answer.policies.join(", ")
    );
    println!("  {line}");
    Ok(answer.decision)
}

/// SPEC §7 scenario 2: the incident responder queries logs; exporting a secret waits for a
/// human, who approves that one call; the agent's waiting call is then allowed, the same call
/// again needs a new approval (denied here), and no approval can export a root key.
async fn scenario_approval(base: &str, admin: &AdminClient, join: String) -> anyhow::Result<()> {
    step("Scenario 2, incident-response agent: queries logs; exporting a secret needs approval");
    let svid = attested(base, "incident-responder", join).await?;
    let agent = AdminClient::new(base, None)?;
    let task = agent
        .create_task(
            &svid,
            &CreateTaskRequest {
                intent: "contain incident INC-42".to_owned(),
                subject: Some("oncall@acme.example".to_owned()),
                ttl_s: None,
            },
        )
        .await?;
    println!("task {} declared: {}", task.id, task.intent);
    let in_task = |action: &str, resource: Value| DecideRequest {
        task_id: task.id.to_string(),
        intent: task.intent.to_string(),
        ..decide_request(action, resource)
    };
    let logs = resource(
        "Resource",
        "loki/prod/app",
        "loki",
        "prod",
        "internal",
        "logs",
    );
    let query = agent.decide(&svid, &in_task("query", logs)).await?;
    println!(
        "  query loki/prod/app: {} ({})",
        query.decision,
        query.policies.join(", ")
    );

    let approver = admin
        .add_user(&AddUserRequest {
            name: UserName::new("dana")?,
            role: Role::Approver,
        })
        .await?;
    let dana = AdminClient::new(base, Some(approver.token))?;
    println!("approver dana added (role approver)");
    let mut export = in_task(
        "export_secret",
        resource(
            "Secret",
            "vault/prod/db-password",
            "vault",
            "prod",
            "secret",
            "password",
        ),
    );
    export.arguments.insert("format".to_owned(), json!("env"));
    // The agent asks and waits for the answer (long-poll, no busy polling).
    let waiting = {
        let (agent, svid, export) = (agent.clone(), svid.clone(), export.clone());
        tokio::spawn(async move {
            agent
                .decide_or_wait(&svid, &export, Duration::from_secs(30))
                .await
        })
    };
    let pending = first_pending(&dana).await?;
    let asked = &pending.asked;
    println!(
        "  export_secret vault/prod/db-password: approval_required (approval {})",
        pending.approval_id
    );
    println!(
        "  dana sees: {} asks to {} {} with {} for task {} (\"{}\"), policy {}",
        asked.call.agent,
        asked.call.action,
        asked.call.resource,
        asked.arguments.as_ref().map_or_else(
            || "hidden arguments".to_owned(),
            |a| Value::Object(a.clone()).to_string()
        ),
        asked.call.task_id,
        asked.intent,
        asked.policies.join(", ")
    );
    let reason = "INC-42: rotate the leaked password";
    dana.approve(&pending.approval_id, reason).await?;
    println!("  dana approves: \"{reason}\"");
    let waited = waiting.await??;
    println!(
        "  the agent's waiting call: {} (grant {})",
        waited.decision.decision,
        waited
            .decision
            .approval_id
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    );
    let again = agent.decide(&svid, &export).await?;
    let second = again
        .approval_id
        .clone()
        .ok_or_else(|| anyhow!("the second export opened no approval request"))?;
    println!(
        "  the same export again: {} (a new approval, {second})",
        again.decision
    );
    let reason = "one export per incident";
    let denied = dana.deny(&second, reason).await?;
    println!("  dana denies it: \"{reason}\" -> {}", denied.state);
    show_decision(
        base,
        &svid,
        "export_secret",
        resource(
            "Secret",
            "vault/prod/root-ca-key",
            "vault",
            "prod",
            "root",
            "signing-key",
        ),
    )
    .await?;
    println!("  (a root key is forbidden whatever a human approves)");
    Ok(())
}

/// The first pending approval request `approver` sees, within ten seconds.
async fn first_pending(approver: &AdminClient) -> anyhow::Result<ApprovalView> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pending) = approver.approvals(false, 10).await?.approvals.pop() {
            return Ok(pending);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no approval request arrived");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SPEC §7 scenarios 1–3: decisions at request time, by the policies just pushed (scenario 2,
/// with its human approval, is [`scenario_approval`]).
async fn scenario_decisions(
    base: &str,
    admin: &AdminClient,
    join: &impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    step("Scenario 1, coding agent: reads the repository; a prod-branch write needs fresh posture");
    let svid = attested(base, "coding-agent", join("coding-agent")?).await?;
    show_decision(
        base,
        &svid,
        "read",
        resource(
            "Resource",
            "github/acme/app",
            "github",
            "prod",
            "internal",
            "repository",
        ),
    )
    .await?;
    show_decision(
        base,
        &svid,
        "write",
        resource(
            "Resource",
            "github/acme/app@main",
            "github",
            "prod",
            "internal",
            "branch",
        ),
    )
    .await?;
    println!(
        "  (posture attested seconds ago; past 60 s the forbid prod-branch-write-needs-fresh-posture"
    );
    println!("   denies the same write: checked by the policy tests that ran before the push)");

    scenario_approval(base, admin, join("incident-responder")?).await?;

    step(
        "Scenario 3, support agent: ticket metadata only in its environment, role and time window",
    );
    let svid = attested(base, "support-agent", join("support-agent")?).await?;
    let now = time::OffsetDateTime::now_utc();
    println!(
        "  time is {:02}:{:02} UTC; the window is 08:00-18:00 UTC",
        now.hour(),
        now.minute()
    );
    show_decision(
        base,
        &svid,
        "read_metadata",
        resource(
            "Resource",
            "zendesk/staging/T-1",
            "zendesk",
            "staging",
            "internal",
            "ticket",
        ),
    )
    .await?;
    show_decision(
        base,
        &svid,
        "read_metadata",
        resource(
            "Resource",
            "zendesk/prod/T-1",
            "zendesk",
            "prod",
            "confidential",
            "ticket",
        ),
    )
    .await?;
    Ok(())
}

/// The posture profiles of the scenario agents (the others check nothing yet).
fn profile_for(agent: &str) -> anyhow::Result<PostureProfile> {
    let profile = match agent {
        "ci-deployer" => json!({
            "toolchain": {"name": ["github-actions"], "version": ["2.320.0"]},
            "deployment": {"image_digest": [CI_IMAGE], "namespace": ["ci"]},
            "may_change": []
        }),
        "data-analyst" => json!({
            "model": {"id": ["warehouse-llm-1"], "digest": [MODEL_DIGEST]},
            "deployment": {"region": ["eu-west-1", "eu-central-1"]},
            "may_change": ["deployment"]
        }),
        _ => json!({}),
    };
    Ok(serde_json::from_value(profile)?)
}

const CI_IMAGE: &str = "sha256:1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988";
const MODEL_DIGEST: &str =
    "sha256:9a8b7c6d5e4f30219a8b7c6d5e4f30219a8b7c6d5e4f30219a8b7c6d5e4f3021";

fn evidence(value: Value) -> anyhow::Result<Evidence> {
    Ok(serde_json::from_value(value)?)
}

fn new_key() -> anyhow::Result<Arc<AgentKey>> {
    Ok(Arc::new(AgentKey::generate(
        AgentKeyKind::P256,
        &SystemRandom::new(),
    )?))
}

/// Claims of an SVID for display (the demo trusts the server it just got it from).
fn svid_summary(svid: &str) -> String {
    use base64::Engine as _;
    let claims = svid
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or_default();
    format!(
        "sub={} aud={} cnf.jkt={} lifetime={}s",
        at(&claims, "sub"),
        at(&claims, "aud"),
        at(at(&claims, "cnf"), "jkt"),
        at(&claims, "exp").as_i64().unwrap_or(0) - at(&claims, "iat").as_i64().unwrap_or(0)
    )
}

/// SPEC §7 scenario 5 (identity half): no identity until proof and runtime checks pass.
async fn scenario_ci_deployer(base: &str, join: String) -> anyhow::Result<()> {
    step("Scenario 5, CI/CD agent: no identity until its proof and runtime checks pass");
    let runner = evidence(json!({
        "toolchain": {"name": "github-actions", "version": "2.320.0"},
        "deployment": {"image_digest": CI_IMAGE, "namespace": "ci"}
    }))?;
    let key = new_key()?;
    let agent = Attestor::new(AdminClient::new(base, None)?, key);
    let no_identity = AdminClient::new(base, None)?
        .decide(
            "not-an-svid",
            &decide_request("retrieve_secret", deploy_key()),
        )
        .await;
    println!(
        "retrieve a secret without an identity: {}",
        refused(no_identity)?
    );
    let guess = agent
        .attest(
            &runner,
            &Credential::JoinToken("aims_j_guessed".to_owned()),
            None,
        )
        .await;
    println!("attest with a guessed join token: {}", refused(guess)?);
    let issued = agent
        .attest(&runner, &Credential::JoinToken(join.clone()), None)
        .await?;
    println!("attest with its join token and matching runtime evidence: JWT-SVID issued");
    println!("  {}", svid_summary(&issued.svid));
    let copy = Attestor::new(AdminClient::new(base, None)?, new_key()?)
        .attest(&runner, &Credential::JoinToken(join), None)
        .await;
    println!(
        "another machine replays the same join token with its own key: {}",
        refused(copy)?
    );
    show_decision(base, &issued.svid, "retrieve_secret", deploy_key()).await?;
    println!(
        "  (brokered delivery of the secret itself lands with the gateway and secrets issues)"
    );
    Ok(())
}

/// SPEC §7 scenario 4 (drift half): a different model quarantines the agent.
async fn scenario_data_analyst(
    base: &str,
    admin: &AdminClient,
    join: String,
) -> anyhow::Result<()> {
    step("Scenario 4, data-analysis agent: it reports a different model and is quarantined");
    let measured = |model: &str| {
        evidence(json!({
            "model": {"id": model, "digest": MODEL_DIGEST},
            "deployment": {"region": "eu-west-1"}
        }))
    };
    let key = new_key()?;
    let agent = Attestor::new(AdminClient::new(base, None)?, key.clone());
    let issued = agent
        .attest(
            &measured("warehouse-llm-1")?,
            &Credential::JoinToken(join),
            None,
        )
        .await?;
    println!("attest with model warehouse-llm-1: JWT-SVID issued");
    let tokens = TokenClient::new(base)?;
    let token = tokens
        .exchange(
            &issued.svid,
            &key,
            &ExchangeRequest {
                scope: ScopeSet::parse("query:warehouse/* lease:warehouse/reader")?,
                audience: WAREHOUSE.to_owned(),
                intent: "weekly revenue report".to_owned(),
                task_id: None,
                expires_in: None,
            },
        )
        .await?;
    println!(
        "task token ({}, {} s) for scope {}",
        token.token_type, token.expires_in, token.scope
    );
    let query = token_request(
        "query",
        resource(
            "Resource",
            "warehouse/sales",
            "warehouse",
            "prod",
            "confidential",
            "table",
        ),
    );
    let answer = tokens.authorize(&token.access_token, &key, &query).await?;
    println!(
        "  query warehouse/sales with the token: {}",
        answer.decision
    );
    let leased = lease_and_read(admin, &tokens, &token.access_token, &key).await?;
    let drift = agent
        .attest(
            &measured("gpt-unvetted")?,
            &Credential::Svid(issued.svid.clone()),
            None,
        )
        .await;
    println!("renew reporting model gpt-unvetted: {}", refused(drift)?);
    let state = admin.agent(&name("data-analyst")?).await?.agent.state;
    println!("data-analyst is now {state}; everything it held is revoked");
    let reuse = agent
        .attest(
            &measured("warehouse-llm-1")?,
            &Credential::Svid(issued.svid),
            None,
        )
        .await;
    println!("its old SVID presented again: {}", refused(reuse)?);
    if let Some(leased) = leased {
        show_lease_ended(admin, leased).await?;
    }
    println!(
        "its task token presented again: {}",
        refused(tokens.authorize(&token.access_token, &key, &query).await)?
    );
    let page = admin.audit(&AuditQuery::default()).await?;
    if let Some(drift) = page
        .records
        .iter()
        .map(|r| &r.event)
        .find(|e| at(e, "action") == "posture.drift")
    {
        println!(
            "audit posture.drift: mismatches {} (the agent was told only posture_rejected)",
            at(at(drift, "details"), "mismatches")
        );
    }
    Ok(())
}

/// A live lease of scenario 4: its id, its open session, the engine's administrator.
struct Leased {
    id: String,
    role: String,
    session: sqlx::PgConnection,
    engine: sqlx::PgConnection,
}

/// Scenario 4's database: the warehouse engine is the local PostgreSQL ([`ENV_DEMO_DATABASE`]),
/// with a `reader` role template on a demo table. The analyst leases it with its task token,
/// connects with the lease and reads the table. `None` (and a message) when no PostgreSQL
/// answers: the rest of the demo needs none.
async fn lease_and_read(
    admin: &AdminClient,
    tokens: &TokenClient,
    access_token: &str,
    key: &AgentKey,
) -> anyhow::Result<Option<Leased>> {
    use aims_api::leases::{AddEngineRequest, AddRoleRequest, LeaseRequest};
    use sqlx::{ConnectOptions as _, Executor as _};

    let url = std::env::var(ENV_DEMO_DATABASE).unwrap_or_else(|_| DEMO_DATABASE_DEFAULT.to_owned());
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .with_context(|| format!("{ENV_DEMO_DATABASE} is not a PostgreSQL URL"))?;
    let options = options.disable_statement_logging();
    let mut engine = match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
        Ok(Ok(conn)) => conn,
        _ => {
            println!(
                "  (skipping database leases: no PostgreSQL answers at {}; set {ENV_DEMO_DATABASE} \
                 to a database whose user may create roles)",
                options.get_host()
            );
            return Ok(None);
        }
    };
    engine
        .execute(
            "CREATE SCHEMA IF NOT EXISTS aims_demo; \
             CREATE TABLE IF NOT EXISTS aims_demo.sales (region text PRIMARY KEY, amount int); \
             INSERT INTO aims_demo.sales VALUES ('north', 4200), ('south', 3100) \
             ON CONFLICT (region) DO NOTHING",
        )
        .await
        .context("cannot create the demo table aims_demo.sales")?;
    admin
        .add_engine(&AddEngineRequest {
            name: EngineName::new("warehouse")?,
            kind: "postgres".to_owned(),
            connection_url: url,
            admin_secret: None,
            system: Some("warehouse".to_owned()),
            environment: None,
            sensitivity: Some("confidential".to_owned()),
        })
        .await?;
    let template = admin
        .add_engine_role(
            &EngineName::new("warehouse")?,
            &AddRoleRequest {
                name: RoleName::new("reader")?,
                grants: "GRANT USAGE ON SCHEMA aims_demo\nGRANT SELECT ON TABLE aims_demo.sales\n"
                    .to_owned(),
                max_ttl_s: 600,
                cleanup: None,
            },
        )
        .await?;
    println!(
        "engine warehouse (local PostgreSQL) with role template reader: {}",
        template
            .grants
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let granted = tokens
        .lease(
            access_token,
            key,
            &LeaseRequest {
                engine: EngineName::new("warehouse")?,
                role: RoleName::new("reader")?,
                ttl_s: None,
            },
        )
        .await?;
    println!(
        "lease {}: role {} until {} (a child of the task token; password shown once, not here)",
        granted.lease_id,
        granted.username,
        granted
            .expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    let mut session = sqlx::postgres::PgConnectOptions::new()
        .host(&granted.host)
        .port(granted.port)
        .database(&granted.database)
        .username(&granted.username)
        .password(&granted.password)
        .connect()
        .await
        .context("cannot connect with the lease")?;
    let total: i64 = sqlx::query_scalar("SELECT sum(amount)::bigint FROM aims_demo.sales")
        .fetch_one(&mut session)
        .await?;
    println!(
        "  connected as {}: SELECT sum(amount) FROM aims_demo.sales = {total}",
        granted.username
    );
    let write = sqlx::query("DELETE FROM aims_demo.sales")
        .execute(&mut session)
        .await;
    println!(
        "  DELETE FROM aims_demo.sales with the lease: {}",
        if write.is_err() {
            "refused by PostgreSQL (reader grants only)"
        } else {
            "allowed?!"
        }
    );
    Ok(Some(Leased {
        id: granted.lease_id,
        role: granted.username,
        session,
        engine,
    }))
}

/// After the quarantine: the lease was revoked with everything the agent held; the reaper
/// terminated its open session and dropped its role.
async fn show_lease_ended(admin: &AdminClient, mut leased: Leased) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let view = loop {
        let view = admin.lease(&leased.id).await?;
        if view.state == "ended" || started.elapsed() > Duration::from_secs(15) {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("lease {} is {}", view.id, view.state);
    let used = sqlx::query("SELECT 1").execute(&mut leased.session).await;
    println!(
        "  its open database session: {}",
        if used.is_err() {
            "terminated"
        } else {
            "still open?!"
        }
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&leased.role)
        .fetch_one(&mut leased.engine)
        .await?;
    println!(
        "  SELECT count(*) FROM pg_roles WHERE rolname = '{}': {left} (the role is gone)",
        leased.role
    );
    Ok(())
}

/// A registration with only a name and an owner.
fn bare_registration(agent: &str, owner: &str) -> anyhow::Result<RegisterAgentRequest> {
    Ok(RegisterAgentRequest {
        name: name(agent)?,
        owner: Owner::new(owner)?,
        environment: None,
        description: None,
        posture_profile: None,
        limits: None,
        labels: None,
        recertify_days: None,
    })
}

/// SPEC §7 scenario 6: a planner hands a narrower part of its task to an executor, which can
/// neither widen it, nor delegate deeper, nor outlive it; ending the task refuses both at once.
async fn scenario_delegation(
    base: &str,
    admin: &AdminClient,
    join: &impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    step("Scenario 6, delegation: a planner hands a narrower task to an executor");
    let (planner_key, executor_key) = (new_key()?, new_key()?);
    let planner = Attestor::new(AdminClient::new(base, None)?, planner_key.clone())
        .attest(
            &Evidence::default(),
            &Credential::JoinToken(join("planner")?),
            None,
        )
        .await?
        .svid;
    let executor = Attestor::new(AdminClient::new(base, None)?, executor_key.clone())
        .attest(
            &Evidence::default(),
            &Credential::JoinToken(join("executor")?),
            None,
        )
        .await?
        .svid;
    println!("planner and executor attested: each holds its own key and JWT-SVID");
    let tokens = TokenClient::new(base)?;
    let parent = tokens
        .exchange(
            &planner,
            &planner_key,
            &ExchangeRequest {
                scope: ScopeSet::parse(
                    "read:repo/acme/* write:repo/acme/app delete:repo/acme/app",
                )?,
                audience: REPO_TOOLS.to_owned(),
                intent: "fix the failing build of repo/acme/app".to_owned(),
                task_id: None,
                expires_in: None,
            },
        )
        .await?;
    println!(
        "planner asks read:repo/acme/* write:repo/acme/app delete:repo/acme/app; policy grants \"{}\" ({} token, {} s, task {})",
        parent.scope, parent.token_type, parent.expires_in, parent.task_id
    );
    let delegated = |scope: &str, expires_in: Option<u64>| -> anyhow::Result<DelegationRequest> {
        Ok(DelegationRequest {
            scope: Some(ScopeSet::parse(scope)?),
            audience: None,
            expires_in,
        })
    };
    let child = tokens
        .delegate(
            &parent.access_token,
            &planner_key,
            &executor,
            &delegated("read:repo/acme/app", Some(86_400))?,
        )
        .await?;
    println!(
        "delegate read:repo/acme/app to executor, asking for a day: granted \"{}\" for {} s (the parent has {} s)",
        child.scope, child.expires_in, parent.expires_in
    );
    let wider = tokens
        .delegate(
            &parent.access_token,
            &planner_key,
            &executor,
            &delegated("write:repo/acme/*", None)?,
        )
        .await;
    println!(
        "delegate write:repo/acme/* (wider than the planner's): {}",
        refused(wider)?
    );
    let deeper = tokens
        .delegate(
            &child.access_token,
            &executor_key,
            &planner,
            &DelegationRequest::default(),
        )
        .await;
    println!(
        "executor delegates onward (depth 2 > its limit 1): {}",
        refused(deeper)?
    );

    let read = |id: &str| {
        token_request(
            "read",
            resource("Resource", id, "github", "prod", "internal", "repository"),
        )
    };
    for id in ["repo/acme/app", "repo/acme/other"] {
        let answer = tokens
            .authorize(&child.access_token, &executor_key, &read(id))
            .await?;
        println!(
            "  executor reads {id}: {} ({})",
            answer.decision,
            if answer.policies.is_empty() {
                "outside its token's scope".to_owned()
            } else {
                answer.policies.join(", ")
            }
        );
    }
    let stolen = tokens
        .authorize(&child.access_token, &planner_key, &read("repo/acme/app"))
        .await;
    println!(
        "the executor's token used with the planner's key: {}",
        refused(stolen)?
    );

    let ended = admin.end_task(parent.task_id.as_str()).await?;
    println!(
        "operator ends the planner's task: {} credentials revoked",
        ended.revoked
    );
    let after = tokens
        .authorize(&child.access_token, &executor_key, &read("repo/acme/app"))
        .await;
    println!("executor reads repo/acme/app again: {}", refused(after)?);
    // What an investigator sees afterwards: the task as the tree of its delegations.
    let trace = admin.trace_task(parent.task_id.as_str()).await?;
    println!("aims audit trace {}:", parent.task_id);
    print!("{}", crate::cli::audit::render_trace(&trace));
    Ok(())
}

/// SPEC §7 scenario 7 (investigate and govern): every scenario's task as a tree, the
/// governance report's summary, the HTML report written to a file that outlives the demo,
/// and the log verified.
async fn scenario_investigate(admin: &AdminClient) -> anyhow::Result<()> {
    step("Scenario 7, investigate: each scenario's task as a tree (aims audit trace TASK)");
    let tasks = admin.tasks(None, None, Some(100)).await?.tasks;
    for task in tasks.iter().rev() {
        let trace = admin.trace_task(task.id.as_str()).await?;
        print!("{}", crate::cli::audit::render_trace(&trace));
    }

    step("Scenario 7, govern: the governance report (aims report)");
    let report = admin
        .report(&ReportQuery {
            window_days: Some(30),
        })
        .await?;
    print!("{}", crate::cli::report::render_summary(&report));
    let (_, path) = tempfile::Builder::new()
        .prefix("aims-demo-report-")
        .suffix(".html")
        .tempfile()?
        .keep()?;
    std::fs::write(&path, crate::cli::report_html::render_html(&report))?;
    println!(
        "{} findings; the HTML report (self-contained, no fetches) is at {}",
        report.findings.len(),
        path.display()
    );

    step("Scenario 7, verify: the audit log's hash chain (aims audit verify)");
    let verification = admin.verify_audit().await?;
    println!(
        "chain intact: {} ({} records, head {})",
        verification.intact, verification.records, verification.head_hash
    );
    if !verification.intact {
        bail!("the audit chain does not verify");
    }
    Ok(())
}

/// Copies the stopped server's data directory `from` to `to` and alters, in the copy, the
/// stored audit event of `ci-deployer`'s suspension (its reason); returns the record's
/// sequence number.
async fn tamper_with_a_copy(from: &Path, to: &Path) -> anyhow::Result<i64> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    let url = format!("sqlite://{}", to.join("aims.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await?;
    let seq: i64 = sqlx::query_scalar(
        "SELECT seq FROM audit_log WHERE action = 'agent.lifecycle' \
         AND body LIKE '%pipeline paused%' ORDER BY seq LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    sqlx::query(
        "UPDATE audit_log SET body = replace(body, 'pipeline paused', 'routine check') \
         WHERE seq = ?",
    )
    .bind(seq)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(seq)
}

/// SPEC §7 scenario 1 through the gateway: the coding agent reads the repository with a task
/// token for the gateway; the gateway has AIMS decide each call and injects the repository's
/// static token, which the agent never holds. The "repository" is a small HTTP server started
/// here that reports what it was sent; beside it, the repository's MCP tool server (also
/// started here) sits behind an MCP route: the agent's tool list is filtered to what it may
/// call, one call goes through and one is denied.
async fn scenario_gateway(base: &str, admin: &AdminClient) -> anyhow::Result<()> {
    step(
        "Scenario 1 through the gateway: the repository's token is injected; the agent never holds it",
    );
    let registered = admin
        .register_resource_server(&RegisterResourceServerRequest {
            name: ResourceServerName::new("gateway")?,
            audience: GATEWAY.to_owned(),
            system: "github".to_owned(),
            environment: Some(Environment::new("prod")?),
            sensitivity: None,
        })
        .await?;
    admin
        .put_secret(&PutSecretRequest {
            name: SecretName::new("github-token")?,
            value: REPOSITORY_TOKEN.to_owned(),
            readers: vec![ResourceServerName::new("gateway")?],
            rotation_period_s: Some(30 * 86_400),
            description: Some("the repository's static API token".to_owned()),
        })
        .await?;
    println!("secret github-token stored sealed; only the gateway may read it");

    // The repository: answers with what it was sent, as far as credentials go.
    let repository = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let repository_url = format!("http://{}", repository.local_addr()?);
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        let shown = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map_or_else(
                    || "none".to_owned(),
                    |v| format!("{}…", v.chars().take(14).collect::<String>()),
                )
        };
        format!(
            "contents of {} (authorization: {}, dpop: {})",
            request.uri().path(),
            shown("authorization"),
            shown("dpop")
        )
    });
    let serving = tokio::spawn(async move { axum::serve(repository, app).await });
    let tool_server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tool_server_url = format!("http://{}/mcp", tool_server.local_addr()?);
    let tools_serving =
        tokio::spawn(async move { axum::serve(tool_server, repository_tools()).await });
    let config = format!(
        r#"
version = 1
listen = "127.0.0.1:0"
aims_url = "{base}"
audience = "{GATEWAY}"
client_name = "gateway"
client_secret_file = "gateway.secret"

[[route]]
name = "repositories"
path_prefix = "/repo/"
upstream = "{repository_url}"
system = "github"
environment = "prod"
sensitivity = "internal"
resource_kind = "repository"
resource_id = "github/acme/{{path}}"
inject = {{ secret = "github-token", header = "authorization", format = "token {{secret}}" }}

[[route]]
kind = "mcp"
name = "repository-tools"
path_prefix = "/mcp/github/"
upstream = "{tool_server_url}"
system = "github"
environment = "prod"
sensitivity = "internal"
resource_id = "mcp/github/{{tool}}"
inject = {{ secret = "github-token", header = "authorization", format = "token {{secret}}" }}
"#
    );
    let client_secret = registered.client_secret.clone();
    let config = aims_gateway::Config::parse(&config, &|_| Ok(client_secret.clone()))?;
    let gateway = aims_gateway::start(config).await?;
    println!(
        "gateway listening on {} (route /repo/ -> the repository, MCP route /mcp/github/ -> its tool server)",
        gateway.base_url
    );

    // The coding agent attests again with a key of its own, and gets a token for the gateway.
    let key = new_key()?;
    let join = admin
        .issue_join_token(&name("coding-agent")?)
        .await?
        .join_token;
    let svid = Attestor::new(AdminClient::new(base, None)?, key.clone())
        .attest(&Evidence::default(), &Credential::JoinToken(join), None)
        .await?
        .svid;
    let tokens = TokenClient::new(base)?;
    let token = tokens
        .exchange(
            &svid,
            &key,
            &ExchangeRequest {
                scope: ScopeSet::parse("read:github/acme/* call_tool:mcp/github/*")?,
                audience: GATEWAY.to_owned(),
                intent: "read the build files".to_owned(),
                task_id: None,
                expires_in: None,
            },
        )
        .await?;
    println!(
        "coding-agent: task token for the gateway, scope {}",
        token.scope
    );
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/repo/app/README.md"),
        ("POST", "/repo/app/README.md"),
    ] {
        let url = format!("{}{path}", gateway.base_url);
        let headers = tokens.headers(tokens.binding(), &token.access_token, &key, method, &url)?;
        let request = http.request(reqwest::Method::from_bytes(method.as_bytes())?, &url);
        let answer = headers.apply(request).send().await?;
        let status = answer.status().as_u16();
        let body = answer.text().await?;
        println!("  {method} {path}: HTTP {status} {body}");
    }
    let anonymous = http
        .get(format!("{}/repo/app/README.md", gateway.base_url))
        .send()
        .await?;
    println!(
        "  GET /repo/app/README.md without a token: HTTP {}",
        anonymous.status().as_u16()
    );

    // The same token at the MCP route: JSON-RPC messages, each POSTed with a fresh proof.
    let endpoint = format!("{}/mcp/github/", gateway.base_url);
    let mcp = |message: Value| {
        let (http, tokens, token, key, endpoint) = (&http, &tokens, &token, &key, &endpoint);
        async move {
            let headers =
                tokens.headers(tokens.binding(), &token.access_token, key, "POST", endpoint)?;
            let answer = headers
                .apply(http.post(endpoint.as_str()))
                .json(&message)
                .send()
                .await?;
            anyhow::Ok(answer.json::<Value>().await?)
        }
    };
    let listed = mcp(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await?;
    let names: Vec<&str> = listed
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .map(|tools| tools.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    println!(
        "  MCP tools/list: {} (of {} the tool server has)",
        names.join(", "),
        REPOSITORY_TOOLS.len()
    );
    for (tool, arguments) in [
        ("search_code", json!({"query": "build.gradle"})),
        (
            "delete_repository",
            json!({"repository": "github/acme/app"}),
        ),
    ] {
        let called = mcp(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                "params": {"name": tool, "arguments": arguments}}))
        .await?;
        let shown = called
            .pointer("/result/content/0/text")
            .or_else(|| called.pointer("/error/message"))
            .and_then(Value::as_str)
            .unwrap_or("no answer");
        println!("  MCP tools/call {tool}: {shown}");
    }
    gateway.shutdown();
    gateway.wait().await?;
    serving.abort();
    tools_serving.abort();
    Ok(())
}

/// The repository's MCP tools (name, description).
const REPOSITORY_TOOLS: [(&str, &str); 4] = [
    ("search_code", "Searches the repository's code"),
    ("open_pull_request", "Opens a pull request"),
    ("merge_pull_request", "Merges a pull request"),
    ("delete_repository", "Deletes the repository"),
];

/// The repository's MCP tool server, as small as MCP streamable HTTP allows: one endpoint
/// answering `initialize`, `tools/list` and `tools/call` with JSON, and saying which
/// credential each call came with.
fn repository_tools() -> axum::Router {
    let answer = |headers: axum::http::HeaderMap, message: axum::Json<Value>| async move {
        let id = message.get("id").cloned().unwrap_or_default();
        let credential = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map_or_else(
                || "none".to_owned(),
                |v| format!("{}…", v.chars().take(14).collect::<String>()),
            );
        let result = match message.get("method").and_then(Value::as_str) {
            Some("initialize") => {
                json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                         "serverInfo": {"name": "repository-tools", "version": "1"}})
            }
            Some("tools/list") => {
                json!({"tools": REPOSITORY_TOOLS.iter().map(|(name, description)| json!({
                "name": name, "description": description, "inputSchema": {"type": "object"}})).collect::<Vec<_>>()})
            }
            Some("tools/call") => json!({"content": [{"type": "text", "text": format!(
                "{} ran (authorization: {credential})",
                message.pointer("/params/name").and_then(Value::as_str).unwrap_or_default())}]}),
            _ => json!({}),
        };
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    };
    axum::Router::new().route("/mcp", axum::routing::post(answer))
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn refused(result: Result<impl std::fmt::Debug, SdkError>) -> anyhow::Result<String> {
    match result {
        Err(SdkError::Api { status, code, .. }) => Ok(format!("refused: HTTP {status} {code}")),
        Err(SdkError::OAuth { status, error, .. }) => Ok(format!("refused: HTTP {status} {error}")),
        Err(other) => Err(other.into()),
        Ok(value) => bail!("expected a refusal, got {value:?}"),
    }
}

/// The agents of the SPEC §7 scenarios: (name, owner, environment, purpose).
const AGENTS: [(&str, &str, &str, &str); 7] = [
    (
        "coding-agent",
        "alice@acme.example",
        "prod",
        "reads repositories, writes production branches",
    ),
    (
        "incident-responder",
        "sre-team@acme.example",
        "prod",
        "queries logs during incidents",
    ),
    (
        "support-agent",
        "support-team@acme.example",
        "staging",
        "reads ticket metadata",
    ),
    (
        "data-analyst",
        "data-team@acme.example",
        "prod",
        "queries the warehouse",
    ),
    (
        "ci-deployer",
        "platform-team@acme.example",
        "prod",
        "retrieves deploy secrets in CI",
    ),
    (
        "planner",
        "alice@acme.example",
        "prod",
        "plans work and delegates to executors",
    ),
    (
        "executor",
        "alice@acme.example",
        "prod",
        "executes delegated steps",
    ),
];

/// Runs the demo end to end.
pub async fn run() -> anyhow::Result<()> {
    let data_dir = tempfile::Builder::new().prefix("aims-demo-").tempdir()?;
    step("Start a real aims server (SQLite store, fresh trust domain)");
    let server = ServerProcess::start(data_dir.path()).await?;
    let credential = server
        .bootstrap_credential
        .clone()
        .ok_or_else(|| anyhow!("the first start printed no bootstrap credential"))?;
    println!(
        "server: {} (data dir {})",
        server.url,
        data_dir.path().display()
    );
    println!("bootstrap admin credential printed once; only its hash is stored");
    let base = server.url.clone();
    let admin = AdminClient::new(&base, Some(credential.clone()))?;

    step("Discovery: RFC 8414 metadata, JWKS and SPIFFE bundle");
    let metadata = admin.metadata().await?;
    println!("issuer   {}", at(&metadata, "issuer"));
    println!("jwks_uri {}", at(&metadata, "jwks_uri"));
    let jwks = admin.jwks().await?;
    for key in at(&jwks, "keys").as_array().into_iter().flatten() {
        println!(
            "jwks key kid={} alg={} use={}",
            at(key, "kid"),
            at(key, "alg"),
            at(key, "use")
        );
    }
    let bundle = admin.bundle().await?;
    println!(
        "bundle: {} keys (use jwt-svid), spiffe_sequence={}",
        at(&bundle, "keys").as_array().map_or(0, Vec::len),
        at(&bundle, "spiffe_sequence")
    );

    step("Register the scenario agents, each with one accountable owner");
    let mut join_tokens = std::collections::HashMap::new();
    for (agent, owner, env, purpose) in AGENTS {
        let issued = admin
            .register_agent(&RegisterAgentRequest {
                name: name(agent)?,
                owner: Owner::new(owner)?,
                environment: Some(Environment::new(env)?),
                description: Some(purpose.to_owned()),
                posture_profile: Some(profile_for(agent)?),
                // The executor may not hand its part on (scenario 6).
                limits: Some(if agent == "executor" {
                    Limits {
                        max_delegation_depth: 1,
                        ..Limits::default()
                    }
                } else {
                    Limits::default()
                }),
                labels: Some(labels_for(agent)?),
                recertify_days: None,
            })
            .await?;
        let expires = issued
            .join_token_expires_at
            .replace_nanosecond(0)?
            .format(&time::format_description::well_known::Rfc3339)?;
        println!(
            "{:<50} owner={owner:<28} one-time join token, expires {expires}",
            issued.spiffe_id
        );
        join_tokens.insert(agent, issued.join_token);
    }

    step("Bad input is refused, audited, and changes nothing");
    let duplicate = admin
        .register_agent(&bare_registration("coding-agent", "mallory@evil.example")?)
        .await;
    println!(
        "re-register coding-agent under another owner: {}",
        refused(duplicate)?
    );
    let anonymous = AdminClient::new(&base, Some("not-a-credential".to_owned()))?;
    println!(
        "unknown credential lists agents: {}",
        refused(anonymous.list_agents(&AgentQuery::default()).await)?
    );

    step("Humans have roles: an auditor reads but cannot change the registry");
    let auditor = admin
        .add_user(&AddUserRequest {
            name: UserName::new("carol")?,
            role: Role::Auditor,
        })
        .await?;
    let auditor_client = AdminClient::new(&base, Some(auditor.token))?;
    let seen = auditor_client
        .list_all_agents(&AgentQuery::default(), None)
        .await?
        .agents;
    println!("auditor carol lists {} agents", seen.len());
    let attempt = auditor_client
        .suspend_agent(&name("ci-deployer")?, &LifecycleRequest::default())
        .await;
    println!("auditor carol suspends ci-deployer: {}", refused(attempt)?);

    step(
        "Policy as code: the starter policies are pushed; the server compiles them strictly first",
    );
    let files = STARTER_POLICIES
        .iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
        .collect();
    let pushed = admin.push_policies(&PushPolicyRequest { files }).await?;
    for (name, audience, system) in [
        ("repo-tools", REPO_TOOLS, "github"),
        ("warehouse", WAREHOUSE, "warehouse"),
    ] {
        admin
            .register_resource_server(&RegisterResourceServerRequest {
                name: ResourceServerName::new(name)?,
                audience: audience.to_owned(),
                system: system.to_owned(),
                environment: Some(Environment::new("prod")?),
                sensitivity: None,
            })
            .await?;
        println!("resource server {name}: tokens for {audience} (system {system})");
    }
    println!(
        "policy version {} active: {} policies ({})",
        pushed.version,
        pushed.policies,
        pushed.policy_ids.join(", ")
    );

    let join_token = |agent: &str| {
        join_tokens
            .get(agent)
            .cloned()
            .ok_or_else(|| anyhow!("no join token for {agent}"))
    };
    scenario_decisions(&base, &admin, &join_token).await?;
    scenario_ci_deployer(&base, join_token("ci-deployer")?).await?;
    scenario_data_analyst(&base, &admin, join_token("data-analyst")?).await?;
    scenario_delegation(&base, &admin, &join_token).await?;
    scenario_gateway(&base, &admin).await?;

    step("Lifecycle: suspend, resume, decommission; names are never reused");
    let reason = |r: &str| LifecycleRequest {
        reason: Some(r.to_owned()),
    };
    let agent = admin
        .suspend_agent(&name("ci-deployer")?, &reason("pipeline paused"))
        .await?;
    println!("ci-deployer -> {}", agent.agent.state);
    let agent = admin
        .resume_agent(&name("ci-deployer")?, &reason("pipeline resumed"))
        .await?;
    println!("ci-deployer -> {}", agent.agent.state);
    let agent = admin
        .decommission_agent(&name("support-agent")?, &reason("replaced"))
        .await?;
    println!("support-agent -> {}", agent.agent.state);
    println!(
        "resume support-agent: {}",
        refused(
            admin
                .resume_agent(&name("support-agent")?, &LifecycleRequest::default())
                .await
        )?
    );
    let reuse = admin
        .register_agent(&bare_registration(
            "support-agent",
            "support-team@acme.example",
        )?)
        .await;
    println!("register a new support-agent: {}", refused(reuse)?);

    step("Key rotation with overlap: next, current and previous are published");
    let before = admin.keys().await?;
    let after = admin.rotate_keys().await?;
    for key in &after.keys {
        println!("kid={} state={}", key.kid, key.state);
    }
    println!(
        "bundle sequence {} -> {}; JWKS now publishes {} keys",
        before.sequence,
        after.sequence,
        at(&admin.jwks().await?, "keys")
            .as_array()
            .map_or(0, Vec::len)
    );

    step("Audit: every change and every refusal is one hash-chained record");
    let verification = admin.verify_audit().await?;
    println!(
        "chain intact: {} ({} records, head {})",
        verification.intact, verification.records, verification.head_hash
    );
    if !verification.intact {
        bail!("the audit chain does not verify");
    }

    step("Restart on the same data directory: agents, keys and the audit chain persist");
    let kids_before: Vec<String> = after.keys.iter().map(|k| k.kid.clone()).collect();
    server.stop().await?;
    let server = ServerProcess::start(data_dir.path()).await?;
    if server.bootstrap_credential.is_some() {
        bail!("a restart must not print a new bootstrap credential");
    }
    let admin = AdminClient::new(&server.url, Some(credential.clone()))?;
    let agents = admin
        .list_all_agents(&AgentQuery::default(), None)
        .await?
        .agents;
    let keys = admin.keys().await?;
    let same_keys = keys.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>() == kids_before;
    let verification = admin.verify_audit().await?;
    println!(
        "after restart: {} agents, same keys: {same_keys}, chain intact: {} ({} records)",
        agents.len(),
        verification.intact,
        verification.records
    );
    if !same_keys || !verification.intact {
        bail!("state did not survive the restart");
    }
    scenario_investigate(&admin).await?;
    server.stop().await?;

    step("Scenario 7, tamper evidence: one stored event altered on a copy of the store");
    let copy = tempfile::Builder::new()
        .prefix("aims-demo-copy-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()?;
    let seq = tamper_with_a_copy(data_dir.path(), copy.path()).await?;
    println!(
        "copy {}: record #{seq} (ci-deployer's suspension) now gives the reason \"routine check\"",
        copy.path().display()
    );
    let server = ServerProcess::start(copy.path()).await?;
    let admin = AdminClient::new(&server.url, Some(credential))?;
    let verification = admin.verify_audit().await?;
    server.stop().await?;
    let problem = verification.problem.unwrap_or_default();
    println!(
        "verify the copy: chain intact: {}; {problem}; the last good record is #{}",
        verification.intact, verification.records
    );
    let pinpointed = problem.starts_with(&format!("record {seq} "));
    if verification.intact || !pinpointed {
        bail!("verify did not pinpoint the altered record #{seq}");
    }
    println!("the original store is untouched and still verifies");
    println!("\ndemo complete");
    Ok(())
}
