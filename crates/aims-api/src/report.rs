//! Wire types of `GET /v1/report`: the governance report, its findings and the OWASP
//! Non-Human Identity Top 10 (2025) item each one addresses.
//!
//! A finding names what it concerns by name or id only (agent, secret, caller address):
//! never a credential or secret value.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Window a report covers when the request names none, in days.
pub const DEFAULT_REPORT_WINDOW_DAYS: u32 = 30;
/// Longest window a report may cover, in days (a little under ten years).
pub const MAX_REPORT_WINDOW_DAYS: u32 = 3650;

/// `GET /v1/report?window_days=N`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Days back from now the report looks at: 1 to [`MAX_REPORT_WINDOW_DAYS`], default
    /// [`DEFAULT_REPORT_WINDOW_DAYS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
}

/// An item of the OWASP Non-Human Identities Top 10 (2025).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Nhi {
    /// NHI1:2025 Improper Offboarding.
    #[serde(rename = "NHI1")]
    ImproperOffboarding,
    /// NHI2:2025 Secret Leakage.
    #[serde(rename = "NHI2")]
    SecretLeakage,
    /// NHI3:2025 Vulnerable Third-Party NHI.
    #[serde(rename = "NHI3")]
    VulnerableThirdParty,
    /// NHI4:2025 Insecure Authentication.
    #[serde(rename = "NHI4")]
    InsecureAuthentication,
    /// NHI5:2025 Overprivileged NHI.
    #[serde(rename = "NHI5")]
    Overprivileged,
    /// NHI6:2025 Insecure Cloud Deployment Configurations.
    #[serde(rename = "NHI6")]
    InsecureCloudDeployment,
    /// NHI7:2025 Long-Lived Secrets.
    #[serde(rename = "NHI7")]
    LongLivedSecrets,
    /// NHI8:2025 Environment Isolation.
    #[serde(rename = "NHI8")]
    EnvironmentIsolation,
    /// NHI9:2025 NHI Reuse.
    #[serde(rename = "NHI9")]
    Reuse,
    /// NHI10:2025 Human Use of NHI.
    #[serde(rename = "NHI10")]
    HumanUse,
}

impl Nhi {
    /// The item's id, e.g. `NHI1`.
    pub fn id(self) -> &'static str {
        match self {
            Self::ImproperOffboarding => "NHI1",
            Self::SecretLeakage => "NHI2",
            Self::VulnerableThirdParty => "NHI3",
            Self::InsecureAuthentication => "NHI4",
            Self::Overprivileged => "NHI5",
            Self::InsecureCloudDeployment => "NHI6",
            Self::LongLivedSecrets => "NHI7",
            Self::EnvironmentIsolation => "NHI8",
            Self::Reuse => "NHI9",
            Self::HumanUse => "NHI10",
        }
    }

    /// The item's title in the 2025 list.
    pub fn title(self) -> &'static str {
        match self {
            Self::ImproperOffboarding => "Improper Offboarding",
            Self::SecretLeakage => "Secret Leakage",
            Self::VulnerableThirdParty => "Vulnerable Third-Party NHI",
            Self::InsecureAuthentication => "Insecure Authentication",
            Self::Overprivileged => "Overprivileged NHI",
            Self::InsecureCloudDeployment => "Insecure Cloud Deployment Configurations",
            Self::LongLivedSecrets => "Long-Lived Secrets",
            Self::EnvironmentIsolation => "Environment Isolation",
            Self::Reuse => "NHI Reuse",
            Self::HumanUse => "Human Use of NHI",
        }
    }
}

/// What a finding is about. Each kind addresses one OWASP NHI item ([`FindingKind::nhi`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An agent whose recertification date has passed.
    PastRecertification,
    /// An agent no audit record has named within the window.
    Inactive,
    /// An agent whose owner names no registered user.
    UnknownOwner,
    /// A brokered secret whose current version is older than its rotation period.
    SecretRotationOverdue,
    /// An agent allowed plain bearer tokens instead of DPoP-bound ones.
    BearerAllowed,
    /// An agent quarantined within the window, with the cause.
    Quarantine,
    /// An agent many of whose decisions within the window were denials.
    HighDenialRate,
    /// Scopes an agent's task tokens were granted within the window and no allowed call used.
    UnusedScope,
    /// An agent that obtained tokens within the window for resource servers of other
    /// environments than its own.
    SeveralEnvironments,
    /// A caller an enforcement point refused within the window: no credential, or one AIMS
    /// did not issue for it.
    UnmanagedCaller,
}

impl FindingKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 10] = [
        Self::PastRecertification,
        Self::Inactive,
        Self::UnknownOwner,
        Self::Quarantine,
        Self::UnusedScope,
        Self::HighDenialRate,
        Self::SecretRotationOverdue,
        Self::BearerAllowed,
        Self::SeveralEnvironments,
        Self::UnmanagedCaller,
    ];

    /// The kind's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PastRecertification => "past_recertification",
            Self::Inactive => "inactive",
            Self::UnknownOwner => "unknown_owner",
            Self::SecretRotationOverdue => "secret_rotation_overdue",
            Self::BearerAllowed => "bearer_allowed",
            Self::Quarantine => "quarantine",
            Self::HighDenialRate => "high_denial_rate",
            Self::UnusedScope => "unused_scope",
            Self::SeveralEnvironments => "several_environments",
            Self::UnmanagedCaller => "unmanaged_caller",
        }
    }

    /// The OWASP NHI item the kind addresses.
    pub fn nhi(self) -> Nhi {
        match self {
            Self::PastRecertification | Self::Inactive | Self::UnknownOwner => {
                Nhi::ImproperOffboarding
            }
            Self::SecretRotationOverdue => Nhi::LongLivedSecrets,
            Self::BearerAllowed => Nhi::InsecureAuthentication,
            // A runtime unlike the registered one presented the agent's identity.
            Self::Quarantine => Nhi::Reuse,
            Self::HighDenialRate | Self::UnusedScope => Nhi::Overprivileged,
            Self::SeveralEnvironments => Nhi::EnvironmentIsolation,
            // Refused credentials at an enforcement point: leaked, replayed or forged ones,
            // or agents holding credentials AIMS never issued.
            Self::UnmanagedCaller => Nhi::SecretLeakage,
        }
    }
}

/// What kind of object a finding concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A registered agent, by name.
    Agent,
    /// A brokered secret, by name.
    Secret,
    /// A caller an enforcement point saw, by address.
    Caller,
}

impl SubjectKind {
    /// The kind's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Secret => "secret",
            Self::Caller => "caller",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What it is about.
    pub kind: FindingKind,
    /// The OWASP NHI Top 10 (2025) item it addresses, e.g. `NHI1`.
    pub nhi: Nhi,
    /// That item's title.
    pub nhi_title: String,
    /// What kind of object it concerns.
    pub subject_kind: SubjectKind,
    /// The object: an agent or secret name, a caller's address.
    pub subject: String,
    /// The facts, in one sentence.
    pub summary: String,
    /// The facts, as data (names, counts, times; never a value of a secret).
    pub evidence: serde_json::Value,
    /// What to do about it.
    pub recommendation: String,
}

/// How many findings of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    /// The kind.
    pub kind: FindingKind,
    /// Its OWASP NHI item.
    pub nhi: Nhi,
    /// How many.
    pub count: u64,
}

/// One agent's decisions within the window (previews left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDecisions {
    /// The agent's name.
    pub agent: String,
    /// Every decision.
    pub total: u64,
    /// Allowed.
    pub allowed: u64,
    /// Denied.
    pub denied: u64,
    /// Answered `approval_required`.
    pub approval_required: u64,
}

/// What the report read, and where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportCoverage {
    /// Agents examined.
    pub agents: u64,
    /// More agents are registered than a report examines: the rest are left out.
    pub agents_truncated: bool,
    /// Audit records of the window read.
    pub records_examined: u64,
    /// The window holds more records than a report reads: only the newest were read, from
    /// `records_from`, so window-based findings cover that part only.
    pub records_truncated: bool,
    /// The time of the oldest record read, when any was.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub records_from: Option<OffsetDateTime>,
    /// Secrets examined.
    pub secrets: u64,
    /// Gateway sightings examined.
    pub sightings: u64,
}

/// Response of `GET /v1/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GovernanceReport {
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// The window, in days.
    pub window_days: u32,
    /// The window's start (`generated_at` minus `window_days`).
    #[serde(with = "time::serde::rfc3339")]
    pub window_start: OffsetDateTime,
    /// What was read.
    pub coverage: ReportCoverage,
    /// Findings per kind, every kind listed (zero included), in report order.
    pub summary: Vec<KindCount>,
    /// Every finding, in report order.
    pub findings: Vec<Finding>,
    /// Decisions per agent within the window, most denials first.
    pub decisions: Vec<AgentDecisions>,
    /// Governance questions this report does not answer yet, and why.
    pub not_covered: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_items_have_stable_names() {
        for kind in FindingKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().to_owned())
            );
            let nhi = kind.nhi();
            assert_eq!(
                serde_json::to_value(nhi).unwrap(),
                serde_json::Value::String(nhi.id().to_owned())
            );
        }
        assert_eq!(Nhi::HumanUse.id(), "NHI10");
        assert_eq!(Nhi::LongLivedSecrets.title(), "Long-Lived Secrets");
        assert!(serde_json::from_str::<ReportQuery>(r#"{"window_days": 7, "x": 1}"#).is_err());
    }
}
