//! The answer of the decision point, as a value: [`Decision`] with its [`Effect`], the
//! policies that determined it and Cedar's diagnostics; and [`Explanation`], the per-policy
//! trace behind a decision.
//!
//! These types are what the server returns and the audit log stores. They hold no Cedar
//! types, only strings, so they serialize stably.

use serde::{Deserialize, Serialize};

/// The three answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Go ahead.
    Allow,
    /// Refused.
    Deny,
    /// Refused as asked, but allowed once a human approves exactly this call.
    ApprovalRequired,
}

impl Effect {
    /// `allow`, `deny` or `approval_required`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::ApprovalRequired => "approval_required",
        }
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the effect is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// At least one `permit` matched and no `forbid` did.
    Permitted,
    /// At least one `forbid` matched.
    Forbidden,
    /// No `permit` matched (default deny).
    NoPermit,
    /// A policy that could apply failed to evaluate: deny (fail closed).
    EvaluationError,
    /// Denied as asked; allowed with `context.approved = true`.
    NeedsApproval,
    /// Denied before any policy ran: the caller's task token does not cover the action on
    /// this resource (set by the enforcement point, never by the engine).
    OutsideTokenScope,
}

/// A policy that failed to evaluate for this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluationDiagnostic {
    /// The policy id.
    pub policy_id: String,
    /// Cedar's message.
    pub message: String,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The caller's id for this decision, echoed from the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// Allow, deny or approval required.
    pub effect: Effect,
    /// Why.
    pub reason: Reason,
    /// The policies that determined the effect, sorted: the matching permits (allow), the
    /// matching forbids (forbidden), the failing policies (evaluation error), or the permits
    /// that would allow once approved (approval required). Empty for default deny.
    pub determining_policies: Vec<String>,
    /// Evaluation errors of policies that could apply (any error makes the decision a deny).
    pub errors: Vec<EvaluationDiagnostic>,
    /// How many policies the index selected and Cedar evaluated.
    pub evaluated_policies: usize,
}

impl Decision {
    /// The deny an enforcement point answers, without asking Cedar, when the caller's task
    /// token does not cover the request.
    #[must_use]
    pub fn outside_scope(decision_id: String) -> Self {
        Self {
            decision_id: Some(decision_id),
            effect: Effect::Deny,
            reason: Reason::OutsideTokenScope,
            determining_policies: Vec::new(),
            errors: Vec::new(),
            evaluated_policies: 0,
        }
    }

    /// Is the effect `Allow`?
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// What happened to one policy when a request was explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PolicyOutcome {
    /// Scope and conditions held: the policy applies.
    Matched,
    /// Selected by the index, but its scope does not hold for this request.
    ScopeMismatch {
        /// `principal`, `action` or `resource`: the first scope part that does not hold.
        part: String,
    },
    /// Scope holds, a `when`/`unless` condition is false.
    ConditionFalse,
    /// Evaluation failed (Cedar skips such a policy; AIMS denies).
    Errored {
        /// Cedar's message.
        message: String,
    },
}

/// One candidate policy in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTrace {
    /// Policy id.
    pub policy_id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// The file it was loaded from.
    pub file: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: PolicyOutcome,
}

/// The decision and why: every candidate policy with its outcome, and the policies the
/// index skipped because their scope cannot match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The decision (as [`crate::Engine::decide`] returns it).
    pub decision: Decision,
    /// Policies selected by the index, in load order.
    pub candidates: Vec<PolicyTrace>,
    /// Ids of the policies skipped by the index (scope cannot match), in load order.
    pub skipped_by_index: Vec<String>,
}
