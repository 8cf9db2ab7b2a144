//! [`AdminClient`]: the typed client of the human-facing `/v1` administration API and of the
//! public discovery documents.
//!
//! One method per endpoint, each returning the `aims-api` body the server promises. The
//! client owns the base URL, the timeouts and the operator's bearer token; it sends the token
//! only to authenticated `/v1` endpoints and never shows it in errors or `Debug` output. It
//! makes no decisions of its own: validation and authorization happen on the server.

use std::fmt;
use std::time::Duration;

use aims_api::approvals::{AnswerApproval, ApprovalList, ApprovalView};
use aims_api::leases::{
    AddEngineRequest, AddRoleRequest, EngineList, LeaseList, LeaseView, RevokeLeaseRequest,
    RoleList,
};
use aims_api::oauth::{
    CreateTaskRequest, INTROSPECTION_PATH, RegisterResourceServerRequest, ResourceServerList,
    ResourceServerRegistered, ResourceServerView, RevokeRequest, RevokeResponse, TaskEnded,
    TaskList, TaskView,
};
use aims_api::secrets::{
    PutSecretRequest, RotateSecretRequest, SecretList, SecretValue, SecretView,
};
use aims_api::sightings::{ReportSightings, SightingList, SightingsReported};
use aims_api::{
    AddUserRequest, AgentList, AgentQuery, AgentView, AttestRequest, AttestResponse, AuditPage,
    AuditQuery, AuditVerification, DecideRequest, DecisionView, ExplainRequest, JoinTokenIssued,
    KeyList, LifecycleRequest, NonceResponse, PolicySetView, PolicyVersion, PolicyVersionList,
    PushPolicyRequest, RecertifyRequest, RegisterAgentRequest, UpdateAgentRequest, UserCredential,
    UserList,
};
use aims_core::id::{AgentName, ApprovalId, EngineName, ResourceServerName, SecretName, UserName};
use aims_core::lease::{Engine, RoleTemplate};
use aims_core::task::{TaskState, is_valid_task_id};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder};

use crate::SdkError;
use crate::approval::{self, WaitedDecision};
use crate::http::{http_client, lease_path, parse_base_url, receive, receive_empty, receive_oauth};
use crate::oauth::{credential, with_basic};

pub use crate::http::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// Largest page the server hands out for `GET /v1/agents` and `GET /v1/audit`.
pub const MAX_PAGE: u32 = 1000;

/// A client of one AIMS server's administration API.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    /// The base URL without a trailing slash, e.g. `http://127.0.0.1:8700`.
    base: String,
    /// `Bearer <token>`, marked sensitive so it is never logged by the HTTP stack.
    auth: Option<HeaderValue>,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("base_url", &self.base)
            .field("token", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client of the server at `base_url` (`http://` or `https://`, a trailing slash is
    /// fine), authenticating with the operator's API `token` when one is given. An empty
    /// token counts as none; calls that need one then fail with [`SdkError::MissingToken`].
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, SdkError> {
        let base = parse_base_url(base_url)?;
        let auth = match token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| SdkError::InvalidToken)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = http_client()?;
        Ok(Self { http, base, auth })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Whether the client has an API token.
    pub fn has_token(&self) -> bool {
        self.auth.is_some()
    }

    // --- agents -------------------------------------------------------------------------

    /// `POST /v1/agents`: registers an agent and returns its one-time join token.
    pub async fn register_agent(
        &self,
        request: &RegisterAgentRequest,
    ) -> Result<JoinTokenIssued, SdkError> {
        let builder = self.authed(Method::POST, "/v1/agents")?.json(request);
        receive(builder).await
    }

    /// `GET /v1/agents`: one page of agents matching `query`.
    pub async fn list_agents(&self, query: &AgentQuery) -> Result<AgentList, SdkError> {
        let builder = self.authed(Method::GET, "/v1/agents")?.query(query);
        receive(builder).await
    }

    /// `GET /v1/inventory`: one page of agents matching `query`, each with its last activity,
    /// posture, live credentials, open tasks and last decision.
    pub async fn inventory(&self, query: &AgentQuery) -> Result<aims_api::Inventory, SdkError> {
        receive(self.authed(Method::GET, "/v1/inventory")?.query(query)).await
    }

    /// `GET /v1/report`: the governance report of the window `query` names (the server's
    /// default when it names none).
    pub async fn report(
        &self,
        query: &aims_api::report::ReportQuery,
    ) -> Result<aims_api::report::GovernanceReport, SdkError> {
        receive(self.authed(Method::GET, "/v1/report")?.query(query)).await
    }

    /// Follows `next_after` through every page of `GET /v1/agents` matching `query`, stopping
    /// once `max` agents are collected. The result's `next_after` is set when more agents
    /// remain, so the listing can be continued.
    pub async fn list_all_agents(
        &self,
        query: &AgentQuery,
        max: Option<usize>,
    ) -> Result<AgentList, SdkError> {
        let mut query = query.clone();
        let mut agents: Vec<AgentView> = Vec::new();
        if max == Some(0) {
            return Ok(AgentList {
                agents,
                next_after: None,
            });
        }
        loop {
            if let Some(max) = max {
                let remaining = max.saturating_sub(agents.len());
                let remaining = u32::try_from(remaining).unwrap_or(MAX_PAGE).min(MAX_PAGE);
                query.limit = Some(query.limit.map_or(remaining, |l| l.min(remaining)));
            }
            let page = self.list_agents(&query).await?;
            let got_any = !page.agents.is_empty();
            agents.extend(page.agents);
            if let Some(max) = max.filter(|&max| agents.len() >= max) {
                let next_after = if agents.len() > max {
                    // The server sent more than asked for: continue after the last one kept.
                    agents.truncate(max);
                    agents.last().map(|a| a.agent.name.to_string())
                } else {
                    page.next_after
                };
                return Ok(AgentList { agents, next_after });
            }
            let Some(next) = page.next_after else {
                return Ok(AgentList {
                    agents,
                    next_after: None,
                });
            };
            let next = AgentName::new(next)
                .map_err(|e| SdkError::Decode(format!("next_after is not an agent name: {e}")))?;
            if !got_any || query.after.as_ref() == Some(&next) {
                return Err(SdkError::Decode(
                    "the server's agent pagination does not advance".into(),
                ));
            }
            query.after = Some(next);
        }
    }

    /// `GET /v1/agents/{name}`.
    pub async fn agent(&self, name: &AgentName) -> Result<AgentView, SdkError> {
        receive(self.authed(Method::GET, &agent_path(name, ""))?).await
    }

    /// `PATCH /v1/agents/{name}`: changes the fields set in `request`.
    pub async fn update_agent(
        &self,
        name: &AgentName,
        request: &UpdateAgentRequest,
    ) -> Result<AgentView, SdkError> {
        let builder = self
            .authed(Method::PATCH, &agent_path(name, ""))?
            .json(request);
        receive(builder).await
    }

    /// `POST /v1/agents/{name}/suspend`.
    pub async fn suspend_agent(
        &self,
        name: &AgentName,
        request: &LifecycleRequest,
    ) -> Result<AgentView, SdkError> {
        self.lifecycle(name, "/suspend", request).await
    }

    /// `POST /v1/agents/{name}/recertify`: moves the agent's recertification date forward
    /// (admin, or the agent's designated approver).
    pub async fn recertify_agent(
        &self,
        name: &AgentName,
        request: &RecertifyRequest,
    ) -> Result<AgentView, SdkError> {
        let builder = self
            .authed(Method::POST, &agent_path(name, "/recertify"))?
            .json(request);
        receive(builder).await
    }

    /// `POST /v1/agents/{name}/resume`.
    pub async fn resume_agent(
        &self,
        name: &AgentName,
        request: &LifecycleRequest,
    ) -> Result<AgentView, SdkError> {
        self.lifecycle(name, "/resume", request).await
    }

    /// `POST /v1/agents/{name}/release`: lets a quarantined agent attest again.
    pub async fn release_agent(
        &self,
        name: &AgentName,
        request: &LifecycleRequest,
    ) -> Result<AgentView, SdkError> {
        self.lifecycle(name, "/release", request).await
    }

    /// `POST /v1/agents/{name}/decommission`: retires the agent for good.
    pub async fn decommission_agent(
        &self,
        name: &AgentName,
        request: &LifecycleRequest,
    ) -> Result<AgentView, SdkError> {
        self.lifecycle(name, "/decommission", request).await
    }

    /// `POST /v1/agents/{name}/join-token`: a fresh join token, replacing any unused one.
    pub async fn issue_join_token(&self, name: &AgentName) -> Result<JoinTokenIssued, SdkError> {
        receive(self.authed(Method::POST, &agent_path(name, "/join-token"))?).await
    }

    async fn lifecycle(
        &self,
        name: &AgentName,
        action: &str,
        request: &LifecycleRequest,
    ) -> Result<AgentView, SdkError> {
        let builder = self
            .authed(Method::POST, &agent_path(name, action))?
            .json(request);
        receive(builder).await
    }

    // --- users --------------------------------------------------------------------------

    /// `POST /v1/users`: adds a human principal and returns its one-time API token.
    pub async fn add_user(&self, request: &AddUserRequest) -> Result<UserCredential, SdkError> {
        receive(self.authed(Method::POST, "/v1/users")?.json(request)).await
    }

    /// `GET /v1/users`.
    pub async fn users(&self) -> Result<UserList, SdkError> {
        receive(self.authed(Method::GET, "/v1/users")?).await
    }

    /// `DELETE /v1/users/{name}`.
    pub async fn remove_user(&self, name: &UserName) -> Result<(), SdkError> {
        receive_empty(self.authed(Method::DELETE, &user_path(name, ""))?).await
    }

    /// `POST /v1/users/{name}/rotate`: a new API token for the user; the old one stops working.
    pub async fn rotate_user(&self, name: &UserName) -> Result<UserCredential, SdkError> {
        receive(self.authed(Method::POST, &user_path(name, "/rotate"))?).await
    }

    // --- keys ---------------------------------------------------------------------------

    /// `GET /v1/keys`.
    pub async fn keys(&self) -> Result<KeyList, SdkError> {
        receive(self.authed(Method::GET, "/v1/keys")?).await
    }

    /// `POST /v1/keys/rotate`: promotes the next key and generates a new one.
    pub async fn rotate_keys(&self) -> Result<KeyList, SdkError> {
        receive(self.authed(Method::POST, "/v1/keys/rotate")?).await
    }

    // --- audit --------------------------------------------------------------------------

    /// `GET /v1/audit`: one page of audit records.
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, SdkError> {
        receive(self.authed(Method::GET, "/v1/audit")?.query(query)).await
    }

    /// `GET /v1/audit/ocsf`: one page of records as OCSF events.
    pub async fn audit_ocsf(&self, query: &AuditQuery) -> Result<aims_api::OcsfPage, SdkError> {
        receive(self.authed(Method::GET, "/v1/audit/ocsf")?.query(query)).await
    }

    /// `GET /v1/audit/query`: one page of the records matching `search`.
    pub async fn search_audit(
        &self,
        search: &aims_api::AuditSearch,
    ) -> Result<aims_api::AuditSearchPage, SdkError> {
        receive(self.authed(Method::GET, "/v1/audit/query")?.query(search)).await
    }

    /// `GET /.well-known/aims-audit-log-key`: the key that signs the log's checkpoints.
    pub async fn audit_log_key(&self) -> Result<aims_api::tlog::LogKeyView, SdkError> {
        receive(self.public(aims_api::tlog::LOG_KEY_PATH)).await
    }

    /// `GET /v1/audit/checkpoint`: the latest signed checkpoint, or the one of `tree_size`.
    pub async fn audit_checkpoint(
        &self,
        tree_size: Option<u64>,
    ) -> Result<aims_api::tlog::CheckpointView, SdkError> {
        let query = aims_api::tlog::CheckpointQuery { tree_size };
        receive(
            self.authed(Method::GET, "/v1/audit/checkpoint")?
                .query(&query),
        )
        .await
    }

    /// `GET /v1/audit/checkpoints`: stored checkpoints of trees larger than `query.after`.
    pub async fn audit_checkpoints(
        &self,
        query: &AuditQuery,
    ) -> Result<aims_api::tlog::CheckpointPage, SdkError> {
        receive(
            self.authed(Method::GET, "/v1/audit/checkpoints")?
                .query(query),
        )
        .await
    }

    /// `GET /v1/audit/entries`: one page of stored rows with every column.
    pub async fn audit_entries(
        &self,
        query: &AuditQuery,
    ) -> Result<aims_api::tlog::AuditEntryPage, SdkError> {
        receive(self.authed(Method::GET, "/v1/audit/entries")?.query(query)).await
    }

    /// `GET /v1/audit/trace/{task_id}`: the task as a tree of its tokens and what was done
    /// with each.
    pub async fn trace_task(&self, task_id: &str) -> Result<aims_api::TaskTrace, SdkError> {
        let path = format!("/v1/audit/trace/{}", task_segment(task_id)?);
        receive(self.authed(Method::GET, &path)?).await
    }

    /// `GET /v1/audit/verify`: has the server check the whole hash chain.
    pub async fn verify_audit(&self) -> Result<AuditVerification, SdkError> {
        receive(self.authed(Method::GET, "/v1/audit/verify")?).await
    }

    // --- tasks and revocation -------------------------------------------------------------

    /// `GET /v1/tasks`: the newest tasks, only `agent`'s and only those in `state` when given,
    /// at most `limit` (the server's default when `None`).
    pub async fn tasks(
        &self,
        agent: Option<&AgentName>,
        state: Option<TaskState>,
        limit: Option<u32>,
    ) -> Result<TaskList, SdkError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(agent) = agent {
            query.push(("agent", agent.to_string()));
        }
        if let Some(state) = state {
            query.push(("state", state.as_str().to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        receive(self.authed(Method::GET, "/v1/tasks")?.query(&query)).await
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn task(&self, id: &str) -> Result<TaskView, SdkError> {
        receive(self.authed(Method::GET, &task_path(id, "")?)?).await
    }

    /// `POST /v1/tasks/{id}/end`: ends the task and revokes every token issued for it,
    /// delegated ones included.
    pub async fn end_task(&self, id: &str) -> Result<TaskEnded, SdkError> {
        receive(self.authed(Method::POST, &task_path(id, "/end")?)?).await
    }

    /// `POST /v1/revocations`: revokes a token, a delegation subtree, a task, an agent's or an
    /// owner's credentials, and answers how many were newly revoked.
    pub async fn revoke(&self, request: &RevokeRequest) -> Result<RevokeResponse, SdkError> {
        receive(self.authed(Method::POST, "/v1/revocations")?.json(request)).await
    }

    /// `POST /oauth2/introspect` (RFC 7662) as the operator: the token's claims with
    /// `"active": true`, or exactly `{"active": false}`. Resource servers introspect with their
    /// own credentials through [`crate::TokenClient::introspect`].
    pub async fn introspect(&self, token: &str) -> Result<serde_json::Value, SdkError> {
        let builder = self
            .authed(Method::POST, INTROSPECTION_PATH)?
            .form(&[("token", credential("token", token)?)]);
        receive_oauth(builder).await
    }

    // --- resource servers ---------------------------------------------------------------

    /// `POST /v1/resource-servers`: registers a resource server and returns its one-time
    /// client secret.
    pub async fn register_resource_server(
        &self,
        request: &RegisterResourceServerRequest,
    ) -> Result<ResourceServerRegistered, SdkError> {
        receive(
            self.authed(Method::POST, "/v1/resource-servers")?
                .json(request),
        )
        .await
    }

    /// `GET /v1/resource-servers`.
    pub async fn resource_servers(&self) -> Result<ResourceServerList, SdkError> {
        receive(self.authed(Method::GET, "/v1/resource-servers")?).await
    }

    /// `GET /v1/resource-servers/{name}`.
    pub async fn resource_server(
        &self,
        name: &ResourceServerName,
    ) -> Result<ResourceServerView, SdkError> {
        receive(self.authed(Method::GET, &resource_server_path(name))?).await
    }

    /// `DELETE /v1/resource-servers/{name}`: tokens already issued for it simply expire.
    pub async fn remove_resource_server(&self, name: &ResourceServerName) -> Result<(), SdkError> {
        receive_empty(self.authed(Method::DELETE, &resource_server_path(name))?).await
    }

    // --- public documents ---------------------------------------------------------------

    /// `GET /.well-known/oauth-authorization-server` (RFC 8414 metadata).
    pub async fn metadata(&self) -> Result<serde_json::Value, SdkError> {
        receive(self.public("/.well-known/oauth-authorization-server")).await
    }

    /// `POST /v1/policies`: pushes a complete policy set; it becomes the active version if it
    /// compiles.
    pub async fn push_policies(
        &self,
        request: &PushPolicyRequest,
    ) -> Result<PolicySetView, SdkError> {
        receive(self.authed(Method::POST, "/v1/policies")?.json(request)).await
    }

    /// `GET /v1/policies`: the newest stored policy versions.
    pub async fn policy_versions(&self) -> Result<PolicyVersionList, SdkError> {
        receive(self.authed(Method::GET, "/v1/policies")?).await
    }

    /// `GET /v1/policies/{version}`: one stored version with its files.
    pub async fn policy_version(&self, version: u64) -> Result<PolicyVersion, SdkError> {
        receive(self.authed(Method::GET, &format!("/v1/policies/{version}"))?).await
    }

    /// `POST /v1/policies/{version}/rollback`: activates an older version's files again.
    pub async fn rollback_policies(&self, version: u64) -> Result<PolicySetView, SdkError> {
        receive(self.authed(Method::POST, &format!("/v1/policies/{version}/rollback"))?).await
    }

    /// `GET /v1/policies/active`: the policy version in force.
    pub async fn active_policies(&self) -> Result<PolicySetView, SdkError> {
        receive(self.authed(Method::GET, "/v1/policies/active")?).await
    }

    /// `POST /v1/policies/explain`: how the active policies answer a registered agent's
    /// request (operators only; the answer is the policy engine's explanation as JSON).
    pub async fn explain(&self, request: &ExplainRequest) -> Result<serde_json::Value, SdkError> {
        receive(
            self.authed(Method::POST, "/v1/policies/explain")?
                .json(request),
        )
        .await
    }

    /// `POST /v1/decisions` as an agent: `svid` is the agent's JWT-SVID (the operator token,
    /// if any, is not sent).
    pub async fn decide(
        &self,
        svid: &str,
        request: &DecideRequest,
    ) -> Result<DecisionView, SdkError> {
        let builder = self
            .http
            .post(self.url("/v1/decisions"))
            .bearer_auth(svid)
            .json(request);
        receive(builder).await
    }

    /// `POST /v1/tasks` as the agent whose SVID is `svid`: declares a task before its first
    /// call (calls that may need approval belong to a task).
    pub async fn create_task(
        &self,
        svid: &str,
        request: &CreateTaskRequest,
    ) -> Result<TaskView, SdkError> {
        let builder = self
            .http
            .post(self.url("/v1/tasks"))
            .bearer_auth(svid)
            .json(request);
        receive(builder).await
    }

    /// `GET /v1/approvals/{id}?wait=…` as the agent whose SVID is `svid`: the approval
    /// request its call opened, after the server held the answer up to `wait_s` seconds.
    pub async fn agent_approval(
        &self,
        svid: &str,
        id: &ApprovalId,
        wait_s: u64,
    ) -> Result<ApprovalView, SdkError> {
        let builder = self
            .http
            .get(self.url(&approval::approval_path(id)))
            .query(&[("wait", wait_s)])
            .bearer_auth(svid);
        receive(builder).await
    }

    /// `GET /v1/approvals/{id}?wait=…` as resource server `server` (HTTP Basic with its
    /// `client_secret`): an approval request it opened on an agent's behalf, after the server
    /// held the answer up to `wait_s` seconds.
    pub async fn approval_as(
        &self,
        server: &ResourceServerName,
        client_secret: &str,
        id: &ApprovalId,
        wait_s: u64,
    ) -> Result<ApprovalView, SdkError> {
        let builder = self
            .http
            .get(self.url(&approval::approval_path(id)))
            .query(&[("wait", wait_s)]);
        receive(with_basic(builder, server, client_secret)?).await
    }

    /// `POST /v1/sightings/report` as resource server `server` (HTTP Basic with its
    /// `client_secret`): callers it refused before any decision, counted.
    pub async fn report_sightings_as(
        &self,
        server: &ResourceServerName,
        client_secret: &str,
        report: &ReportSightings,
    ) -> Result<SightingsReported, SdkError> {
        let builder = self
            .http
            .post(self.url("/v1/sightings/report"))
            .json(report);
        receive(with_basic(builder, server, client_secret)?).await
    }

    /// `GET /v1/sightings`: the most recently seen refused callers (admins, auditors).
    pub async fn sightings(&self) -> Result<SightingList, SdkError> {
        receive(self.authed(Method::GET, "/v1/sightings")?).await
    }

    /// [`AdminClient::decide`] that, when the call needs a human's approval, waits up to
    /// `max_wait` for the answer and asks again once approved (see [`crate::approval`]).
    pub async fn decide_or_wait(
        &self,
        svid: &str,
        request: &DecideRequest,
        max_wait: Duration,
    ) -> Result<WaitedDecision, SdkError> {
        approval::decide_or_wait(
            || self.decide(svid, request),
            |id, wait_s| async move { self.agent_approval(svid, &id, wait_s).await },
            max_wait,
        )
        .await
    }

    // --- approvals (humans) --------------------------------------------------------------

    /// `GET /v1/approvals`: the newest approval requests, only those pending unless `all`.
    pub async fn approvals(&self, all: bool, limit: u32) -> Result<ApprovalList, SdkError> {
        let state = if all { "all" } else { "pending" };
        let query = [("state", state.to_owned()), ("limit", limit.to_string())];
        receive(self.authed(Method::GET, "/v1/approvals")?.query(&query)).await
    }

    /// `GET /v1/approvals/{id}` as an operator.
    pub async fn approval(&self, id: &ApprovalId) -> Result<ApprovalView, SdkError> {
        receive(self.authed(Method::GET, &approval::approval_path(id))?).await
    }

    /// `POST /v1/approvals/{id}/approve`, with the approver's `reason`.
    pub async fn approve(&self, id: &ApprovalId, reason: &str) -> Result<ApprovalView, SdkError> {
        self.answer(id, "approve", reason).await
    }

    /// `POST /v1/approvals/{id}/deny`, with the approver's `reason`.
    pub async fn deny(&self, id: &ApprovalId, reason: &str) -> Result<ApprovalView, SdkError> {
        self.answer(id, "deny", reason).await
    }

    async fn answer(
        &self,
        id: &ApprovalId,
        verb: &str,
        reason: &str,
    ) -> Result<ApprovalView, SdkError> {
        let path = format!("{}/{verb}", approval::approval_path(id));
        let body = AnswerApproval {
            reason: reason.to_owned(),
        };
        receive(self.authed(Method::POST, &path)?.json(&body)).await
    }

    // --- secrets --------------------------------------------------------------------------

    /// `POST /v1/secrets`: stores a secret; only the resource servers it names read it.
    pub async fn put_secret(&self, request: &PutSecretRequest) -> Result<SecretView, SdkError> {
        receive(self.authed(Method::POST, "/v1/secrets")?.json(request)).await
    }

    /// `POST /v1/engines`: adds a database engine (the server connects to it first).
    pub async fn add_engine(&self, request: &AddEngineRequest) -> Result<Engine, SdkError> {
        receive(self.authed(Method::POST, "/v1/engines")?.json(request)).await
    }

    /// `GET /v1/engines`: every engine.
    pub async fn engines(&self) -> Result<EngineList, SdkError> {
        receive(self.authed(Method::GET, "/v1/engines")?).await
    }

    /// `POST /v1/engines/{name}/roles`: adds a role template to an engine.
    pub async fn add_engine_role(
        &self,
        engine: &EngineName,
        request: &AddRoleRequest,
    ) -> Result<RoleTemplate, SdkError> {
        let path = format!("/v1/engines/{}/roles", engine.as_str());
        receive(self.authed(Method::POST, &path)?.json(request)).await
    }

    /// `GET /v1/engines/{name}/roles`: an engine's role templates.
    pub async fn engine_roles(&self, engine: &EngineName) -> Result<RoleList, SdkError> {
        let path = format!("/v1/engines/{}/roles", engine.as_str());
        receive(self.authed(Method::GET, &path)?).await
    }

    /// `GET /v1/leases`: the newest leases, only `agent`'s when given.
    pub async fn leases(&self, agent: Option<&AgentName>) -> Result<LeaseList, SdkError> {
        let query: Vec<(&str, String)> = agent
            .map(|a| ("agent", a.as_str().to_owned()))
            .into_iter()
            .collect();
        receive(self.authed(Method::GET, "/v1/leases")?.query(&query)).await
    }

    /// `GET /v1/leases/{id}`: one lease.
    pub async fn lease(&self, id: &str) -> Result<LeaseView, SdkError> {
        receive(self.authed(Method::GET, &lease_path(id, "")?)?).await
    }

    /// `POST /v1/leases/{id}/revoke`: revokes a lease; the server then drops its role.
    pub async fn revoke_lease(
        &self,
        id: &str,
        request: &RevokeLeaseRequest,
    ) -> Result<LeaseView, SdkError> {
        receive(
            self.authed(Method::POST, &lease_path(id, "/revoke")?)?
                .json(request),
        )
        .await
    }

    /// `GET /v1/secrets`: every secret, without values.
    pub async fn secrets(&self) -> Result<SecretList, SdkError> {
        receive(self.authed(Method::GET, "/v1/secrets")?).await
    }

    /// `GET /v1/secrets/{name}`: one secret, without its value.
    pub async fn secret(&self, name: &SecretName) -> Result<SecretView, SdkError> {
        receive(self.authed(Method::GET, &secret_path(name, ""))?).await
    }

    /// `POST /v1/secrets/{name}/rotate`: a new current version.
    pub async fn rotate_secret(
        &self,
        name: &SecretName,
        request: &RotateSecretRequest,
    ) -> Result<SecretView, SdkError> {
        receive(
            self.authed(Method::POST, &secret_path(name, "/rotate"))?
                .json(request),
        )
        .await
    }

    /// `DELETE /v1/secrets/{name}`.
    pub async fn delete_secret(&self, name: &SecretName) -> Result<(), SdkError> {
        receive_empty(self.authed(Method::DELETE, &secret_path(name, ""))?).await
    }

    /// `GET /v1/secrets/{name}/value` as resource server `server` (HTTP Basic with its
    /// `client_secret`): the current value, for a secret that names it as a reader.
    pub async fn read_secret_as(
        &self,
        server: &ResourceServerName,
        client_secret: &str,
        name: &SecretName,
    ) -> Result<SecretValue, SdkError> {
        let builder = self.http.get(self.url(&secret_path(name, "/value")));
        receive(with_basic(builder, server, client_secret)?).await
    }

    /// `POST /v1/attest/nonce`: a single-use nonce for an attestation proof (no token sent).
    pub async fn attestation_nonce(&self) -> Result<NonceResponse, SdkError> {
        receive(self.http.post(self.url("/v1/attest/nonce"))).await
    }

    /// `POST /v1/attest`: presents an attestation (no operator token is sent; the proof and
    /// the join token or SVID inside the request authenticate the agent).
    pub async fn attest(&self, request: &AttestRequest) -> Result<AttestResponse, SdkError> {
        receive(self.http.post(self.url("/v1/attest")).json(request)).await
    }

    /// `GET /.well-known/jwks.json`: the keys that verify tokens (`use: "sig"`).
    pub async fn jwks(&self) -> Result<serde_json::Value, SdkError> {
        receive(self.public("/.well-known/jwks.json")).await
    }

    /// `GET /.well-known/spiffe-bundle`: the SPIFFE trust bundle (`use: "jwt-svid"` keys,
    /// `spiffe_sequence`, `spiffe_refresh_hint`).
    pub async fn bundle(&self) -> Result<serde_json::Value, SdkError> {
        receive(self.public("/.well-known/spiffe-bundle")).await
    }

    /// `GET /healthz`: succeeds when the server process is up.
    pub async fn health(&self) -> Result<(), SdkError> {
        receive_empty(self.public("/healthz")).await
    }

    /// `GET /readyz`: succeeds when the server is ready to serve requests.
    pub async fn readiness(&self) -> Result<(), SdkError> {
        receive_empty(self.public("/readyz")).await
    }

    // --- plumbing -----------------------------------------------------------------------

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to an authenticated endpoint, carrying the bearer token.
    fn authed(&self, method: Method, path: &str) -> Result<RequestBuilder, SdkError> {
        let auth = self.auth.clone().ok_or(SdkError::MissingToken)?;
        Ok(self
            .http
            .request(method, self.url(path))
            .header(AUTHORIZATION, auth))
    }

    /// A request to a public endpoint; the token is not sent.
    fn public(&self, path: &str) -> RequestBuilder {
        self.http.get(self.url(path))
    }
}

/// `/v1/agents/{name}{suffix}`. Agent names are validated to unreserved URL characters and are
/// never `.` or `..`, so they need no escaping.
fn agent_path(name: &AgentName, suffix: &str) -> String {
    format!("/v1/agents/{}{suffix}", name.as_str())
}

/// `/v1/users/{name}{suffix}`. User names are lowercase slugs, safe in a path segment.
fn user_path(name: &UserName, suffix: &str) -> String {
    format!("/v1/users/{}{suffix}", name.as_str())
}

/// `/v1/tasks/{id}{suffix}`.
fn task_path(id: &str, suffix: &str) -> Result<String, SdkError> {
    Ok(format!("/v1/tasks/{}{suffix}", task_segment(id)?))
}

/// A task id as a path segment: a well-formed one is `[A-Za-z0-9_-]`, safe as it is;
/// anything else is refused before it is sent.
fn task_segment(id: &str) -> Result<&str, SdkError> {
    if is_valid_task_id(id) {
        Ok(id)
    } else {
        Err(SdkError::InvalidRequest(
            "a task id is 1 to 64 characters of A-Z a-z 0-9 _ -".into(),
        ))
    }
}

/// `/v1/secrets/{name}{suffix}`. Secret names follow the agent-name rules: unreserved URL
/// characters, never `.` or `..`.
fn secret_path(name: &SecretName, suffix: &str) -> String {
    format!("/v1/secrets/{}{suffix}", name.as_str())
}

/// `/v1/resource-servers/{name}`. Resource-server names follow the agent-name rules: unreserved
/// URL characters, never `.` or `..`.
fn resource_server_path(name: &ResourceServerName) -> String {
    format!("/v1/resource-servers/{}", name.as_str())
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
