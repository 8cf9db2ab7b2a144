//! Test data and the audit assertions every check uses.

use aims_core::agent::{Agent, LifecycleState, Limits};
use aims_core::audit::{Actor, AuditEvent, AuditRecord, ChainHead, Outcome, verify_chain};
use aims_core::credential::CredentialHash;
use aims_core::id::{AgentName, TrustDomain, UserName};
use aims_core::posture::PostureProfile;
use aims_core::user::{Role, User};
use aims_store::{Initialization, JoinTokenRecord, KeyState, MAX_PAGE, Store, StoredKey};
use time::OffsetDateTime;

/// A fixed instant plus `secs` seconds (whole seconds: the store keeps milliseconds).
pub fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
}

/// An event recording `action`.
pub fn event(action: &str) -> AuditEvent {
    let mut event = AuditEvent::new(at(0), Actor::System, action, Outcome::Success);
    event.request_id = Some("req-1".to_owned());
    event
}

pub fn name(value: &str) -> AgentName {
    AgentName::new(value).unwrap()
}

pub fn agent(value: &str, owner: &str, environment: &str) -> Agent {
    Agent {
        name: name(value),
        owner: owner.parse().unwrap(),
        environment: environment.parse().unwrap(),
        description: format!("the {value} agent"),
        posture_profile: PostureProfile::default(),
        limits: Limits::default(),
        labels: [("team".parse().unwrap(), "core".to_owned())].into(),
        state: LifecycleState::Active,
        created_at: at(0),
        updated_at: at(0),
        recertify_by: at(86_400 * 90),
        revision: 1,
    }
}

/// `agent` with the next revision and `state`.
pub fn changed(agent: &Agent, state: LifecycleState) -> Agent {
    Agent {
        state,
        updated_at: agent.updated_at + time::Duration::seconds(1),
        revision: agent.revision + 1,
        ..agent.clone()
    }
}

pub fn join_token(agent: &str, secret: &str, expires_at: OffsetDateTime) -> JoinTokenRecord {
    JoinTokenRecord {
        hash: CredentialHash::of(secret),
        agent: name(agent),
        expires_at,
    }
}

pub fn user(value: &str, role: Role) -> User {
    User {
        name: UserName::new(value).unwrap(),
        role,
        created_at: at(0),
        credential_rotated_at: at(0),
    }
}

pub fn key(kid: &str, state: KeyState) -> StoredKey {
    StoredKey {
        kid: kid.to_owned(),
        alg: "ES256".to_owned(),
        state,
        created_at: at(kid.len() as i64),
        public_jwk: format!(r#"{{"kty":"EC","kid":"{kid}"}}"#),
        sealed_private_key: kid.as_bytes().iter().rev().copied().collect(),
    }
}

pub const ADMIN_CREDENTIAL: &str = "aims_h_root-credential";

pub fn initialization() -> Initialization {
    Initialization {
        trust_domain: TrustDomain::new("acme.example").unwrap(),
        keys: vec![key("k1", KeyState::Current), key("k2", KeyState::Next)],
        admin: user("root", Role::Admin),
        admin_credential: CredentialHash::of(ADMIN_CREDENTIAL),
    }
}

/// Initializes `store` with [`initialization`].
pub async fn initialize(store: &dyn Store) {
    store
        .initialize(
            &initialization(),
            &event(aims_core::audit::action::TRUST_DOMAIN_CREATE),
        )
        .await
        .unwrap();
}

/// Every record in the log, read page by page after sequencing what waits in the queue.
pub async fn all_records(store: &dyn Store) -> Vec<AuditRecord> {
    store.sequence_audit().await.unwrap();
    let mut records = Vec::new();
    loop {
        let after = records.last().map_or(0, |r: &AuditRecord| r.seq);
        let page = store.audit_records(after, MAX_PAGE).await.unwrap();
        if page.is_empty() {
            return records;
        }
        records.extend(page);
    }
}

/// Tracks the audit log and asserts what each step appended. It reads as the server's routes
/// do, after sequencing: on PostgreSQL an issuance's event is queued, not yet in the log.
pub struct AuditCursor {
    seq: u64,
}

impl AuditCursor {
    /// Starts at the current head.
    pub async fn new(store: &dyn Store) -> Self {
        store.sequence_audit().await.unwrap();
        Self {
            seq: store.audit_head().await.unwrap().seq,
        }
    }

    /// Asserts that exactly one record with `action` was appended since the last check.
    pub async fn one(&mut self, store: &dyn Store, action: &str) {
        store.sequence_audit().await.unwrap();
        let records = store.audit_records(self.seq, MAX_PAGE).await.unwrap();
        let actions: Vec<String> = records.iter().map(|r| r.event().unwrap().action).collect();
        assert_eq!(actions, [action], "records appended after seq {}", self.seq);
        self.seq = records[0].seq;
    }

    /// Asserts that nothing was appended since the last check.
    pub async fn none(&self, store: &dyn Store) {
        store.sequence_audit().await.unwrap();
        let records = store.audit_records(self.seq, MAX_PAGE).await.unwrap();
        assert!(
            records.is_empty(),
            "a failed change appended {} audit record(s)",
            records.len()
        );
        assert_eq!(store.audit_head().await.unwrap().seq, self.seq);
    }
}

/// The audit head once every queued event is sequenced (what a reader of the log sees).
pub async fn sequenced_head(store: &dyn Store) -> ChainHead {
    store.sequence_audit().await.unwrap();
    store.audit_head().await.unwrap()
}

/// Asserts the whole log verifies from the start and ends at the stored head.
pub async fn assert_chain_verifies(store: &dyn Store) -> Vec<AuditRecord> {
    let records = all_records(store).await;
    let head = verify_chain(ChainHead::EMPTY, &records).unwrap();
    assert_eq!(head, store.audit_head().await.unwrap());
    records
}
