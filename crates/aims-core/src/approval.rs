//! Human approval of one exact tool call: the request an `approval_required` decision opens,
//! the call a grant is bound to, where a request is in its life, and who may decide it.
//!
//! A request is opened once per distinct call ([`BoundCall`]: task, agent, action, resource,
//! arguments digest); identical calls while it is pending share it. Approved, it becomes a
//! grant for that call only, good for [`AskedApproval::uses`] calls within its window. The
//! store keeps the mutable part (state, decision, uses left) beside the immutable
//! [`AskedApproval`], so every change is one row update under the store's write lock.

use std::collections::BTreeMap;

use ring::digest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::id::{AgentName, ApprovalId, Owner, ResourceServerName, TaskId, UserName};
use crate::user::{Access, User};

/// The most approval requests one agent may have pending at once: past it, an
/// `approval_required` call opens no new request (identical calls still join theirs), so an
/// agent cannot flood the approvers' queue.
pub const MAX_PENDING_PER_AGENT: u32 = 100;

/// Longest reason an approver may give, in characters (as JSON Schema's `maxLength` counts,
/// so openapi.json can state it exactly).
pub const MAX_REASON_LEN: usize = 512;

/// Whether `reason` is acceptable: 1–512 characters of visible text, not only spaces.
pub fn is_valid_reason(reason: &str) -> bool {
    !reason.trim().is_empty()
        && reason.chars().count() <= MAX_REASON_LEN
        && crate::text::is_visible(reason, false)
}

/// The SHA-256 digest (`sha256:<hex>`) of a call's arguments in canonical form: JSON with
/// object members sorted by name and no insignificant whitespace. Two calls are the same
/// call only if their digests are equal.
pub fn arguments_digest(arguments: &Map<String, Value>) -> String {
    let canonical =
        serde_json::to_vec(&sorted(&Value::Object(arguments.clone()))).unwrap_or_default();
    format!(
        "sha256:{}",
        hex::encode(digest::digest(&digest::SHA256, &canonical))
    )
}

/// `value` with every object's members inserted in name order, so that its compact text is
/// the same however the members arrived (serde_json may keep insertion order: another crate
/// in the build can turn on its `preserve_order` feature).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(members) => {
            let mut entries: Vec<(&String, &Value)> = members.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(name, member)| (name.clone(), sorted(member)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The exact call an approval request is about, and a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BoundCall {
    /// The task the call belongs to.
    pub task_id: TaskId,
    /// The agent making it.
    pub agent: AgentName,
    /// The action, e.g. `export_secret`.
    pub action: String,
    /// The resource, as `Type::id`.
    pub resource: String,
    /// [`arguments_digest`] of its arguments.
    pub arguments_digest: String,
}

/// Everything about an approval request that is fixed when it is opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskedApproval {
    /// The call.
    #[serde(flatten)]
    pub call: BoundCall,
    /// The agent's SPIFFE ID.
    pub spiffe_id: String,
    /// The agent's accountable owner.
    pub owner: Owner,
    /// The task's declared intent.
    pub intent: String,
    /// Who the task acts for (a user, a system, or the agent itself).
    pub task_subject: String,
    /// The delegation chain of the credential that asked, outermost first.
    pub delegation_chain: Vec<String>,
    /// The credential that asked.
    pub credential_id: String,
    /// The resource server (an enforcement point such as the gateway) that asked on the
    /// agent's behalf, if one did: it may wait on the request too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement_point: Option<ResourceServerName>,
    /// The resource as the agent named it (type, id and attributes).
    pub resource_attributes: Value,
    /// The arguments, when the policy lets approvers see them; otherwise only their digest is
    /// kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Map<String, Value>>,
    /// The policies that asked for approval.
    pub policies: Vec<String>,
    /// Their text, by policy id, as it was when the request was opened.
    pub policy_texts: BTreeMap<String, String>,
    /// The policy version that decided.
    pub policy_version: u64,
    /// The roles or users allowed to decide; `None`: any approver or admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
    /// Whether the agent's owner and the task's subject are barred from deciding.
    pub four_eyes: bool,
    /// How many matching calls an approval covers.
    pub uses: u32,
    /// When it was opened.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it expires unanswered; an approval's grant lasts as long again from its decision.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl AskedApproval {
    /// How long the request waits, and how long a grant lasts once approved.
    pub fn window(&self) -> time::Duration {
        self.expires_at - self.created_at
    }
}

/// Where an approval request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a human.
    Pending,
    /// Approved: a grant for the call, with uses left and not yet expired.
    Approved,
    /// Approved, and every use of the grant spent.
    Used,
    /// Denied by a human.
    Denied,
    /// Unanswered in time, or approved but its grant ran out unused.
    Expired,
    /// Revoked with its task, token, agent or owner.
    Revoked,
}

impl ApprovalState {
    /// Every state.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Approved,
        Self::Used,
        Self::Denied,
        Self::Expired,
        Self::Revoked,
    ];

    /// The wire and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Used => "used",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// Parses a name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether nothing can change it any more.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Approved)
    }
}

impl std::fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A human's answer to an approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVerdict {
    /// Approved (`true`) or denied.
    pub approved: bool,
    /// Who decided.
    pub by: UserName,
    /// Their role when they decided.
    pub role: String,
    /// Why, in their words.
    pub reason: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One approval request as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Its id.
    pub id: ApprovalId,
    /// What was asked.
    pub asked: AskedApproval,
    /// Its state as stored ([`ApprovalRequest::state_at`] adds expiry).
    pub state: ApprovalState,
    /// The human's answer, once given.
    pub verdict: Option<ApprovalVerdict>,
    /// Calls the grant still covers (0 until approved).
    pub uses_left: u32,
}

impl ApprovalRequest {
    /// A new pending request.
    pub fn open(id: ApprovalId, asked: AskedApproval) -> Self {
        Self {
            id,
            asked,
            state: ApprovalState::Pending,
            verdict: None,
            uses_left: 0,
        }
    }

    /// When an approval's grant stops covering calls.
    pub fn grant_expires_at(&self) -> Option<OffsetDateTime> {
        self.verdict
            .as_ref()
            .filter(|v| v.approved)
            .map(|v| v.at + self.asked.window())
    }

    /// Its state at `now`: a pending request past its expiry, or a grant past its window,
    /// has expired.
    pub fn state_at(&self, now: OffsetDateTime) -> ApprovalState {
        match self.state {
            ApprovalState::Pending if now >= self.asked.expires_at => ApprovalState::Expired,
            ApprovalState::Approved if self.uses_left == 0 => ApprovalState::Used,
            ApprovalState::Approved if self.grant_expires_at().is_some_and(|end| now >= end) => {
                ApprovalState::Expired
            }
            state => state,
        }
    }

    /// Whether `user` may decide this request; the reason they may not otherwise.
    pub fn may_be_decided_by(&self, user: &User) -> Result<(), Barred> {
        if !user.role.allows(Access::Approve) {
            return Err(Barred::NotAnApprover);
        }
        if let Some(approvers) = &self.asked.approvers {
            let named = |name: &String| name == user.role.as_str() || name == user.name.as_str();
            if !approvers.iter().any(named) {
                return Err(Barred::NotAnApprover);
            }
        }
        if self.asked.four_eyes
            && (user.name.as_str() == self.asked.owner.as_str()
                || user.name.as_str() == self.asked.task_subject)
        {
            return Err(Barred::FourEyes);
        }
        Ok(())
    }
}

/// Why a human may not decide a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barred {
    /// Their role, or their name, is not among the approvers the policy names.
    NotAnApprover,
    /// Four eyes: they own the agent or the task acts for them.
    FourEyes,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::Role;
    use serde_json::json;
    use time::Duration;

    fn asked(approvers: Option<Vec<&str>>, four_eyes: bool) -> AskedApproval {
        let now = OffsetDateTime::now_utc();
        AskedApproval {
            call: BoundCall {
                task_id: TaskId::new("t1").unwrap(),
                agent: AgentName::new("ir").unwrap(),
                action: "export_secret".into(),
                resource: "Secret::vault/db".into(),
                arguments_digest: arguments_digest(&Map::new()),
            },
            spiffe_id: "spiffe://acme.example/agent/ir".into(),
            owner: Owner::new("alice").unwrap(),
            intent: "rotate".into(),
            task_subject: "bob".into(),
            delegation_chain: Vec::new(),
            credential_id: "tok".into(),
            enforcement_point: None,
            resource_attributes: json!({}),
            arguments: None,
            policies: vec!["p".into()],
            policy_texts: BTreeMap::new(),
            policy_version: 1,
            approvers: approvers.map(|a| a.into_iter().map(String::from).collect()),
            four_eyes,
            uses: 1,
            created_at: now,
            expires_at: now + Duration::minutes(15),
        }
    }

    fn user(name: &str, role: Role) -> User {
        let now = OffsetDateTime::now_utc();
        User {
            name: UserName::new(name).unwrap(),
            role,
            created_at: now,
            credential_rotated_at: now,
        }
    }

    #[test]
    fn digest_ignores_member_order_and_whitespace_only() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": 3}}"#).expect("object");
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"x":3,"y":2},"b":1}"#).expect("object");
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"x":3,"y":2},"b":2}"#).expect("object");
        assert_eq!(arguments_digest(&a), arguments_digest(&b));
        assert_ne!(arguments_digest(&a), arguments_digest(&c));
        assert!(arguments_digest(&a).starts_with("sha256:"));
    }

    #[test]
    fn only_named_approvers_decide_and_four_eyes_bars_owner_and_subject() {
        let open = |a, f| ApprovalRequest::open(ApprovalId::new("a1").unwrap(), asked(a, f));
        let anyone = open(None, false);
        assert_eq!(
            anyone.may_be_decided_by(&user("carol", Role::Approver)),
            Ok(())
        );
        assert_eq!(anyone.may_be_decided_by(&user("root", Role::Admin)), Ok(()));
        assert_eq!(
            anyone.may_be_decided_by(&user("audrey", Role::Auditor)),
            Err(Barred::NotAnApprover)
        );
        let named = open(Some(vec!["dave"]), false);
        assert_eq!(
            named.may_be_decided_by(&user("carol", Role::Approver)),
            Err(Barred::NotAnApprover)
        );
        assert_eq!(
            named.may_be_decided_by(&user("dave", Role::Approver)),
            Ok(())
        );
        let by_role = open(Some(vec!["admin"]), false);
        assert_eq!(
            by_role.may_be_decided_by(&user("root", Role::Admin)),
            Ok(())
        );
        assert_eq!(
            by_role.may_be_decided_by(&user("carol", Role::Approver)),
            Err(Barred::NotAnApprover)
        );
        let four = open(None, true);
        assert_eq!(
            four.may_be_decided_by(&user("alice", Role::Approver)),
            Err(Barred::FourEyes)
        );
        assert_eq!(
            four.may_be_decided_by(&user("bob", Role::Admin)),
            Err(Barred::FourEyes)
        );
        assert_eq!(
            four.may_be_decided_by(&user("carol", Role::Approver)),
            Ok(())
        );
    }

    #[test]
    fn state_adds_expiry_and_spent_grants() {
        let mut request = ApprovalRequest::open(ApprovalId::new("a1").unwrap(), asked(None, false));
        let opened = request.asked.created_at;
        assert_eq!(request.state_at(opened), ApprovalState::Pending);
        assert_eq!(
            request.state_at(request.asked.expires_at),
            ApprovalState::Expired
        );
        request.state = ApprovalState::Approved;
        request.uses_left = 1;
        request.verdict = Some(ApprovalVerdict {
            approved: true,
            by: UserName::new("carol").unwrap(),
            role: "approver".into(),
            reason: "ok".into(),
            at: opened + Duration::minutes(10),
        });
        // The grant lasts a window from its approval, past the request's own expiry.
        assert_eq!(
            request.state_at(request.asked.expires_at),
            ApprovalState::Approved
        );
        assert_eq!(
            request.state_at(opened + Duration::minutes(25)),
            ApprovalState::Expired
        );
        request.uses_left = 0;
        assert_eq!(request.state_at(opened), ApprovalState::Used);
        assert!(ApprovalState::Used.is_final() && !ApprovalState::Approved.is_final());
    }

    #[test]
    fn reasons_are_bounded_visible_text() {
        assert!(is_valid_reason("ticket INC-42"));
        assert!(!is_valid_reason("   "));
        assert!(!is_valid_reason("a\u{202e}b"));
        assert!(!is_valid_reason(&"x".repeat(MAX_REASON_LEN + 1)));
    }
}
