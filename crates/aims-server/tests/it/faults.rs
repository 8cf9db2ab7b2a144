//! Injected storage faults: when the audit log cannot be written, nothing is answered with
//! success, readiness reports it, and the server recovers once the log is writable again; when
//! the revocation log cannot be read, task tokens are refused once the replica's view is stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aims_core::agent::Agent;
use aims_core::approval::{ApprovalRequest, ApprovalVerdict, BoundCall};
use aims_core::audit::{AuditEvent, AuditRecord, ChainHead};
use aims_core::credential::CredentialHash;
use aims_core::id::{
    AgentName, ApprovalId, EngineName, ResourceServerName, RoleName, SecretName, TrustDomain,
    UserName,
};
use aims_core::lease::{Engine, RoleTemplate};
use aims_core::secret::Secret;
use aims_core::sighting::Sighting;
use aims_core::task::Task;
use aims_core::user::User;
use aims_store::{
    AccessTokenIssue, AgentFilter, AttestationRecord, Initialization, IssuedCredential,
    JoinTokenRecord, JoinTokenUse, KeySet, LeaseIssue, LeaseRecord, PolicySetVersion,
    PostureSnapshot, RecertificationStep, RegistryCursor, RegistryEntry, ResourceServer,
    Revocation, RevocationTarget, SsfPending, SsfReceiver, SsfStatus, SsfStream, SsfVerification,
    Store, StoreError, StoredKey, TaskFilter, WriteObserver,
};
use reqwest::{Method, StatusCode};
use time::OffsetDateTime;

use crate::kit::{ADMIN_TOKEN, Backend, TestServer, open_store};

/// A real store whose audit appends can be made to fail, like a full or unwritable disk, and
/// whose revocation log can be made unreadable, like a replica cut off from the database.
struct FailingAudit {
    inner: Arc<dyn Store>,
    broken: Arc<AtomicBool>,
    revocations_unreadable: Arc<AtomicBool>,
    registry_unreadable: Arc<AtomicBool>,
}

impl FailingAudit {
    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "injected: audit log unwritable".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Store for FailingAudit {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn trust_domain(&self) -> Result<Option<TrustDomain>, StoreError> {
        self.inner.trust_domain().await
    }
    async fn initialize(
        &self,
        init: &Initialization,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.initialize(init, event).await
    }
    async fn create_agent(
        &self,
        agent: &Agent,
        join: &JoinTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_agent(agent, join, event).await
    }
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>, StoreError> {
        self.inner.agent(name).await
    }
    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, StoreError> {
        self.inner.list_agents(filter).await
    }
    async fn update_agent(
        &self,
        agent: &Agent,
        expected: u64,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.update_agent(agent, expected, event).await
    }
    async fn replace_join_token(
        &self,
        join: &JoinTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.replace_join_token(join, event).await
    }
    async fn consume_join_token(
        &self,
        hash: &CredentialHash,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<JoinTokenUse, StoreError> {
        self.inner.consume_join_token(hash, key, now).await
    }
    async fn consume_nonce(
        &self,
        hash: &CredentialHash,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.consume_nonce(hash, expires_at, now).await
    }
    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        self.inner.sweep_expired(now).await
    }
    async fn posture_snapshot(
        &self,
        agent: &AgentName,
    ) -> Result<Option<PostureSnapshot>, StoreError> {
        self.inner.posture_snapshot(agent).await
    }
    async fn record_attestation(
        &self,
        record: &AttestationRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_attestation(record, event).await
    }
    async fn issued_credential(&self, id: &str) -> Result<Option<IssuedCredential>, StoreError> {
        self.inner.issued_credential(id).await
    }
    async fn create_user(
        &self,
        user: &User,
        credential: &CredentialHash,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_user(user, credential, event).await
    }
    async fn user_by_credential(
        &self,
        credential: &CredentialHash,
    ) -> Result<Option<User>, StoreError> {
        self.inner.user_by_credential(credential).await
    }
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.inner.list_users().await
    }
    async fn remove_user(&self, name: &UserName, event: &AuditEvent) -> Result<(), StoreError> {
        self.check()?;
        self.inner.remove_user(name, event).await
    }
    async fn rotate_user_credential(
        &self,
        name: &UserName,
        credential: &CredentialHash,
        at: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner
            .rotate_user_credential(name, credential, at, event)
            .await
    }
    async fn keys(&self) -> Result<KeySet, StoreError> {
        self.inner.keys().await
    }
    async fn rotate_keys(
        &self,
        new_next: &StoredKey,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.rotate_keys(new_next, event).await
    }
    async fn activate_policy_set(
        &self,
        set: &PolicySetVersion,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.activate_policy_set(set, event).await
    }
    async fn active_policy_version(&self) -> Result<u64, StoreError> {
        self.inner.active_policy_version().await
    }
    async fn policy_set(&self, version: u64) -> Result<Option<PolicySetVersion>, StoreError> {
        self.inner.policy_set(version).await
    }
    async fn policy_versions(&self, limit: u32) -> Result<Vec<PolicySetVersion>, StoreError> {
        self.inner.policy_versions(limit).await
    }
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<ChainHead, StoreError> {
        self.check()?;
        self.inner.append_audit(events).await
    }
    async fn queue_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.queue_audit(events).await
    }
    async fn sequence_audit(&self) -> Result<(), StoreError> {
        self.inner.sequence_audit().await
    }
    async fn audit_records(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_records(after, limit).await
    }
    async fn agent_activity(
        &self,
        name: &AgentName,
        spiffe_id: &str,
        now: OffsetDateTime,
    ) -> Result<aims_store::AgentActivity, StoreError> {
        self.inner.agent_activity(name, spiffe_id, now).await
    }
    async fn audit_records_of(
        &self,
        key: aims_store::AuditKey<'_>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit_records_of(key, after, limit).await
    }
    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.inner.audit_head().await
    }
    fn observe_writes(&self, observer: WriteObserver) {
        self.inner.observe_writes(observer);
    }
    async fn audit_entries(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<aims_core::audit::AuditEntry>, StoreError> {
        self.inner.audit_entries(after, limit).await
    }
    async fn log_key(&self) -> Result<Option<aims_store::StoredLogKey>, StoreError> {
        self.inner.log_key().await
    }
    async fn create_log_key(
        &self,
        key: &aims_store::StoredLogKey,
    ) -> Result<aims_store::StoredLogKey, StoreError> {
        self.inner.create_log_key(key).await
    }
    async fn add_checkpoint(
        &self,
        checkpoint: &aims_store::StoredCheckpoint,
    ) -> Result<(), StoreError> {
        self.inner.add_checkpoint(checkpoint).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<aims_store::StoredCheckpoint>, StoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn checkpoint(
        &self,
        tree_size: u64,
    ) -> Result<Option<aims_store::StoredCheckpoint>, StoreError> {
        self.inner.checkpoint(tree_size).await
    }
    async fn checkpoints(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<aims_store::StoredCheckpoint>, StoreError> {
        self.inner.checkpoints(after, limit).await
    }
    async fn audit_position_at(&self, time: OffsetDateTime) -> Result<u64, StoreError> {
        self.inner.audit_position_at(time).await
    }
    async fn issue_access_token(
        &self,
        issue: &AccessTokenIssue,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner.issue_access_token(issue, event).await
    }
    async fn create_task(&self, task: &Task, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner.create_task(task, event).await
    }
    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.inner.task(id).await
    }
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.inner.list_tasks(filter).await
    }
    async fn end_task(
        &self,
        id: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<u64, StoreError> {
        self.inner.end_task(id, now, event).await
    }
    async fn revoke(
        &self,
        target: &RevocationTarget,
        reason: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<u64, StoreError> {
        self.inner.revoke(target, reason, now, event).await
    }
    async fn finish_revocations(&self, idle_since: OffsetDateTime) -> Result<u64, StoreError> {
        self.inner.finish_revocations(idle_since).await
    }
    async fn revocations_since(
        &self,
        after: u64,
        limit: u32,
        audience: Option<&str>,
    ) -> Result<Vec<Revocation>, StoreError> {
        if self.revocations_unreadable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "injected: revocation log unreachable".into(),
            ));
        }
        self.inner.revocations_since(after, limit, audience).await
    }
    async fn registry_changes(
        &self,
        after: &RegistryCursor,
        limit: u32,
    ) -> Result<Vec<RegistryEntry>, StoreError> {
        if self.registry_unreadable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "injected: registry change log unreachable".into(),
            ));
        }
        self.inner.registry_changes(after, limit).await
    }
    async fn create_resource_server(
        &self,
        server: &ResourceServer,
        credential: &CredentialHash,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner
            .create_resource_server(server, credential, event)
            .await
    }
    async fn resource_server(
        &self,
        name: &ResourceServerName,
    ) -> Result<Option<ResourceServer>, StoreError> {
        self.inner.resource_server(name).await
    }
    async fn resource_server_by_audience(
        &self,
        audience: &str,
    ) -> Result<Option<ResourceServer>, StoreError> {
        self.inner.resource_server_by_audience(audience).await
    }
    async fn resource_server_by_credential(
        &self,
        credential: &CredentialHash,
    ) -> Result<Option<ResourceServer>, StoreError> {
        self.inner.resource_server_by_credential(credential).await
    }
    async fn list_resource_servers(&self) -> Result<Vec<ResourceServer>, StoreError> {
        self.inner.list_resource_servers().await
    }
    async fn remove_resource_server(
        &self,
        name: &ResourceServerName,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner.remove_resource_server(name, event).await
    }
    async fn create_ssf_stream(
        &self,
        stream: &SsfStream,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError> {
        self.check()?;
        self.inner.create_ssf_stream(stream, event).await
    }
    async fn ssf_stream(&self, id: &str) -> Result<Option<SsfStream>, StoreError> {
        self.inner.ssf_stream(id).await
    }
    async fn list_ssf_streams(
        &self,
        receiver: Option<&SsfReceiver>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SsfStream>, StoreError> {
        self.inner.list_ssf_streams(receiver, after, limit).await
    }
    async fn delete_ssf_stream(&self, id: &str, event: &AuditEvent) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete_ssf_stream(id, event).await
    }
    async fn ssf_pending(&self, id: &str, limit: u32) -> Result<Vec<SsfPending>, StoreError> {
        self.inner.ssf_pending(id, limit).await
    }
    async fn acknowledge_ssf(&self, id: &str, seqs: &[u64]) -> Result<(), StoreError> {
        self.inner.acknowledge_ssf(id, seqs).await
    }
    async fn claim_ssf_stream(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.claim_ssf_stream(id, holder, now, until).await
    }
    async fn claim_sequencer(
        &self,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.claim_sequencer(holder, now, until).await
    }
    async fn update_ssf_stream(
        &self,
        stream: &SsfStream,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError> {
        self.check()?;
        self.inner.update_ssf_stream(stream, event).await
    }
    async fn set_ssf_status(
        &self,
        id: &str,
        status: SsfStatus,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<SsfStream, StoreError> {
        self.check()?;
        self.inner.set_ssf_status(id, status, reason, event).await
    }
    async fn queue_ssf_verification(
        &self,
        id: &str,
        state: Option<&str>,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner
            .queue_ssf_verification(id, state, now, event)
            .await
    }
    async fn ssf_verifications(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<SsfVerification>, StoreError> {
        self.inner.ssf_verifications(id, limit).await
    }
    async fn acknowledge_ssf_verifications(
        &self,
        id: &str,
        seqs: &[u64],
    ) -> Result<(), StoreError> {
        self.inner.acknowledge_ssf_verifications(id, seqs).await
    }
    async fn open_approval(
        &self,
        request: &ApprovalRequest,
        decision: &AuditEvent,
        opened: &AuditEvent,
    ) -> Result<ApprovalRequest, StoreError> {
        self.check()?;
        self.inner.open_approval(request, decision, opened).await
    }
    async fn approval(&self, id: &ApprovalId) -> Result<Option<ApprovalRequest>, StoreError> {
        self.inner.approval(id).await
    }
    async fn list_approvals(
        &self,
        pending_at: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.inner.list_approvals(pending_at, limit).await
    }
    async fn decide_approval(
        &self,
        id: &ApprovalId,
        verdict: &ApprovalVerdict,
        event: &AuditEvent,
    ) -> Result<ApprovalRequest, StoreError> {
        self.check()?;
        self.inner.decide_approval(id, verdict, event).await
    }
    async fn grant_for(
        &self,
        call: &BoundCall,
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalId>, StoreError> {
        self.inner.grant_for(call, now).await
    }
    async fn use_grant(
        &self,
        id: &ApprovalId,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.use_grant(id, now, event).await
    }
    async fn approvals_version(&self) -> Result<u64, StoreError> {
        self.inner.approvals_version().await
    }
    async fn create_secret(
        &self,
        secret: &Secret,
        sealed_value: &[u8],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_secret(secret, sealed_value, event).await
    }
    async fn rotate_secret(
        &self,
        secret: &Secret,
        sealed_value: &[u8],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.rotate_secret(secret, sealed_value, event).await
    }
    async fn delete_secret(&self, name: &SecretName, event: &AuditEvent) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete_secret(name, event).await
    }
    async fn secret(&self, name: &SecretName) -> Result<Option<Secret>, StoreError> {
        self.inner.secret(name).await
    }
    async fn secret_value(
        &self,
        name: &SecretName,
    ) -> Result<Option<(Secret, Vec<u8>)>, StoreError> {
        self.inner.secret_value(name).await
    }
    async fn list_secrets(&self, limit: u32) -> Result<Vec<Secret>, StoreError> {
        self.inner.list_secrets(limit).await
    }
    async fn report_sightings(
        &self,
        reporter: &ResourceServerName,
        sightings: &[Sighting],
        event: &AuditEvent,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner
            .report_sightings(reporter, sightings, event)
            .await
    }
    async fn sightings(
        &self,
        limit: u32,
    ) -> Result<Vec<(ResourceServerName, Sighting)>, StoreError> {
        self.inner.sightings(limit).await
    }
    async fn create_engine(&self, engine: &Engine, event: &AuditEvent) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_engine(engine, event).await
    }
    async fn engine(&self, name: &EngineName) -> Result<Option<Engine>, StoreError> {
        self.inner.engine(name).await
    }
    async fn list_engines(&self) -> Result<Vec<Engine>, StoreError> {
        self.inner.list_engines().await
    }
    async fn create_role_template(
        &self,
        template: &RoleTemplate,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_role_template(template, event).await
    }
    async fn role_template(
        &self,
        engine: &EngineName,
        name: &RoleName,
    ) -> Result<Option<RoleTemplate>, StoreError> {
        self.inner.role_template(engine, name).await
    }
    async fn list_role_templates(
        &self,
        engine: &EngineName,
    ) -> Result<Vec<RoleTemplate>, StoreError> {
        self.inner.list_role_templates(engine).await
    }
    async fn issue_lease(&self, issue: &LeaseIssue, event: &AuditEvent) -> Result<(), StoreError> {
        self.check()?;
        self.inner.issue_lease(issue, event).await
    }
    async fn renew_lease(
        &self,
        id: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.renew_lease(id, expires_at, now, event).await
    }
    async fn lease(&self, id: &str) -> Result<Option<LeaseRecord>, StoreError> {
        self.inner.lease(id).await
    }
    async fn list_leases(
        &self,
        agent: Option<&AgentName>,
        limit: u32,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        self.inner.list_leases(agent, limit).await
    }
    async fn leases_to_end(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        self.inner.leases_to_end(now, limit).await
    }
    async fn leases_overdue(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.inner.leases_overdue(now).await
    }
    async fn claim_lease(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.claim_lease(id, holder, now, until).await
    }
    async fn grant_lease(&self, id: &str, holder: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.grant_lease(id, holder).await
    }
    async fn release_lease(&self, id: &str, holder: &str) -> Result<bool, StoreError> {
        self.inner.release_lease(id, holder).await
    }
    async fn end_lease(
        &self,
        id: &str,
        holder: &str,
        now: OffsetDateTime,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.end_lease(id, holder, now, event).await
    }
    async fn lease_failed(
        &self,
        id: &str,
        holder: &str,
        retry_at: OffsetDateTime,
        error: &str,
    ) -> Result<bool, StoreError> {
        self.inner.lease_failed(id, holder, retry_at, error).await
    }
    async fn claim_recertification(
        &self,
        agent: &AgentName,
        due: OffsetDateTime,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<RecertificationStep>, StoreError> {
        self.inner
            .claim_recertification(agent, due, holder, now, until)
            .await
    }
    async fn finish_recertification(
        &self,
        agent: &AgentName,
        due: OffsetDateTime,
        holder: &str,
        done: Option<RecertificationStep>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner
            .finish_recertification(agent, due, holder, done, now)
            .await
    }
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_every_answer_until_it_recovers() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let broken = Arc::new(AtomicBool::new(false));
    let store: Arc<dyn Store> = Arc::new(FailingAudit {
        inner: open_store(Backend::Sqlite, &dir).await,
        broken: broken.clone(),
        revocations_unreadable: Arc::new(AtomicBool::new(false)),
        registry_unreadable: Arc::new(AtomicBool::new(false)),
    });
    let env = std::collections::HashMap::from([(
        aims_server::config::ENV_BOOTSTRAP_TOKEN.to_owned(),
        ADMIN_TOKEN.to_owned(),
    )]);
    let server = TestServer::start_on(Backend::Sqlite, dir, store, env)
        .await
        .unwrap();
    server.register("coder", "alice@acme.example").await;
    let before = server.records().await.len();

    broken.store(true, Ordering::SeqCst);
    let read = server.admin(Method::GET, "/v1/agents", None).await;
    assert_eq!(
        (read.status, read.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable")
    );
    assert!(
        !read.body.to_string().contains("coder"),
        "no data leaves unaudited"
    );
    let write = server
        .admin(
            Method::POST,
            "/v1/agents",
            Some(serde_json::json!({"name": "x", "owner": "y"})),
        )
        .await;
    assert_eq!(write.status, StatusCode::SERVICE_UNAVAILABLE);
    let anonymous = server.call(Method::GET, "/v1/agents", None, None).await;
    assert_eq!(anonymous.status, StatusCode::SERVICE_UNAVAILABLE);
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert_eq!(server.agent_count().await, 1);
    assert_eq!(server.records().await.len(), before);

    broken.store(false, Ordering::SeqCst);
    // Readiness is probed at most once a second; the next answer is a new probe.
    tokio::time::sleep(aims_server::readiness::PROBE_EVERY).await;
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(
        server.events().await.last().unwrap().action,
        "audit.recovered"
    );
    assert_eq!(
        server.admin(Method::GET, "/v1/agents", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_replica_cut_off_from_the_revocation_log_refuses_task_tokens() {
    refuses_while_cut_off(
        |store| &store.revocations_unreadable,
        "revocation_state_stale",
    )
    .await;
}

/// Decisions read the agent from the replica's registry view, which goes stale like the
/// revoked set.
#[tokio::test]
async fn a_replica_cut_off_from_the_registry_change_log_refuses_decisions() {
    refuses_while_cut_off(|store| &store.registry_unreadable, "registry_state_stale").await;
}

/// A replica whose store stops answering one log (`log` of the store) refuses a task token's
/// decision with 503 `code` once its view is older than the bound (1 s), and decides again
/// once the log can be read.
async fn refuses_while_cut_off(log: fn(&FailingAudit) -> &Arc<AtomicBool>, code: &str) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let failing = FailingAudit {
        inner: open_store(Backend::Sqlite, &dir).await,
        broken: Arc::new(AtomicBool::new(false)),
        revocations_unreadable: Arc::new(AtomicBool::new(false)),
        registry_unreadable: Arc::new(AtomicBool::new(false)),
    };
    let cut_off = log(&failing).clone();
    let store: Arc<dyn Store> = Arc::new(failing);
    let config = dir.path().join("aims.toml");
    std::fs::write(&config, "version = 1\nrevocation_max_staleness_s = 1\n").unwrap();
    let env = std::collections::HashMap::from([
        (
            aims_server::config::ENV_BOOTSTRAP_TOKEN.to_owned(),
            ADMIN_TOKEN.to_owned(),
        ),
        (
            "AIMS_CONFIG".to_owned(),
            config.to_string_lossy().into_owned(),
        ),
    ]);
    let server = TestServer::start_on(Backend::Sqlite, dir, store, env)
        .await
        .unwrap();
    let scene = crate::task_tokens::Scene::on(server).await;
    let token = crate::task_tokens::access_token(&scene.exchange("read:repo/acme/*").await);
    let call = || scene.decide(&scene.planner.key, &token, "read", "repo/acme/app");
    assert_eq!(call().await.status, StatusCode::OK);

    cut_off.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let refused = call().await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::SERVICE_UNAVAILABLE, code),
        "{}",
        refused.body
    );

    cut_off.store(false, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(call().await.status, StatusCode::OK);
}
