//! `aims approval …`: humans list, watch, show, approve and deny approval requests.
//!
//! This module maps the commands onto `/v1/approvals` and renders a request in plain words:
//! who asked, for which task, the exact call, what the policy that asked for approval says,
//! and who may answer. Whether the caller may answer is the server's decision.

use std::collections::BTreeSet;
use std::time::Duration;

use aims_api::approvals::{ApprovalList, ApprovalView};
use aims_core::approval::ApprovalState;
use aims_core::id::ApprovalId;
use time::OffsetDateTime;

use super::ClientOpts;
use super::output::{clean, fields, print, relative, table, timestamp};

/// How often `aims approval list --watch` asks for new requests.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Approval commands.
#[derive(clap::Subcommand, Debug)]
pub enum ApprovalCommand {
    /// List approval requests waiting for a human (newest first).
    List {
        /// Every request, answered and expired ones included.
        #[arg(long, conflicts_with = "watch")]
        all: bool,
        /// Keep running, printing each new pending request as it arrives.
        #[arg(long)]
        watch: bool,
        /// Show at most this many (server default: 100).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
    },
    /// Show one request: the call, the task, the policy that asked for approval.
    Show {
        /// Approval id.
        #[arg(allow_hyphen_values = true)]
        id: ApprovalId,
    },
    /// Approve one exact call: the agent may make it as often as the policy allows.
    Approve {
        /// Approval id.
        #[arg(allow_hyphen_values = true)]
        id: ApprovalId,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Deny the call.
    Deny {
        /// Approval id.
        #[arg(allow_hyphen_values = true)]
        id: ApprovalId,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

/// Runs one `aims approval` command.
pub async fn run_approval(opts: &ClientOpts, cmd: ApprovalCommand) -> anyhow::Result<()> {
    let client = opts.client()?;
    let limit = |limit: Option<u32>| limit.unwrap_or(100);
    match cmd {
        ApprovalCommand::List {
            watch: true,
            limit: n,
            ..
        } => {
            let mut shown = BTreeSet::new();
            loop {
                let list = client.approvals(false, limit(n)).await?;
                let now = OffsetDateTime::now_utc();
                for approval in list.approvals.iter().rev() {
                    if shown.insert(approval.approval_id.clone()) {
                        print(opts.output, &serde_json::to_value(approval)?, || {
                            render_one_line(approval, now)
                        })?;
                    }
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
        }
        ApprovalCommand::List { all, limit: n, .. } => {
            let list = client.approvals(all, limit(n)).await?;
            let now = OffsetDateTime::now_utc();
            print(opts.output, &serde_json::to_value(&list)?, || {
                render_list(&list, now)
            })
        }
        ApprovalCommand::Show { id } => {
            let approval = client.approval(&id).await?;
            show(opts, &approval)
        }
        ApprovalCommand::Approve { id, reason } => {
            let approval = client.approve(&id, &reason).await?;
            show(opts, &approval)
        }
        ApprovalCommand::Deny { id, reason } => {
            let approval = client.deny(&id, &reason).await?;
            show(opts, &approval)
        }
    }
}

fn show(opts: &ClientOpts, approval: &ApprovalView) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    print(opts.output, &serde_json::to_value(approval)?, || {
        render_approval(approval, now)
    })
}

/// `aims approval list` as a table.
fn render_list(list: &ApprovalList, now: OffsetDateTime) -> String {
    if list.approvals.is_empty() {
        return "No approval requests.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .approvals
        .iter()
        .map(|a| {
            vec![
                a.approval_id.to_string(),
                a.state.to_string(),
                a.asked.call.agent.to_string(),
                format!("{} {}", a.asked.call.action, a.asked.call.resource),
                a.asked.call.task_id.to_string(),
                relative(a.asked.expires_at, now),
            ]
        })
        .collect();
    table(&["ID", "STATE", "AGENT", "CALL", "TASK", "EXPIRES"], &rows)
}

/// One line per new request, for `--watch`.
fn render_one_line(approval: &ApprovalView, now: OffsetDateTime) -> String {
    let asked = &approval.asked;
    format!(
        "{}  {} asks to {} {} (task {}, expires {})\n",
        approval.approval_id,
        asked.call.agent,
        clean(&asked.call.action),
        clean(&asked.call.resource),
        asked.call.task_id,
        relative(asked.expires_at, now),
    )
}

/// `aims approval show` in plain words, with the text of the policies that asked.
fn render_approval(approval: &ApprovalView, now: OffsetDateTime) -> String {
    let asked = &approval.asked;
    let state = match approval.state {
        ApprovalState::Pending => format!("pending, expires {}", relative(asked.expires_at, now)),
        ApprovalState::Approved => format!(
            "approved, covers {} more call(s){}",
            approval.uses_left,
            approval
                .grant_expires_at
                .map(|end| format!(" until {}", timestamp(end)))
                .unwrap_or_default()
        ),
        other => other.to_string(),
    };
    let arguments = match &asked.arguments {
        Some(arguments) => format!(
            "{} ({})",
            clean(&serde_json::Value::Object(arguments.clone()).to_string()),
            asked.call.arguments_digest
        ),
        None => format!("not shown by policy ({})", asked.call.arguments_digest),
    };
    let approvers = match &asked.approvers {
        Some(names) => clean(&names.join(", ")),
        None => "any approver or admin".to_owned(),
    };
    let approvers = if asked.four_eyes {
        format!("{approvers}; not the agent's owner nor the human the task acts for")
    } else {
        approvers
    };
    let chain = if asked.delegation_chain.is_empty() {
        "-".to_owned()
    } else {
        clean(&asked.delegation_chain.join(" <- "))
    };
    let answer = approval.verdict.as_ref().map_or_else(
        || "-".to_owned(),
        |v| {
            format!(
                "{} by {} ({}) at {}: {}",
                if v.approved { "approved" } else { "denied" },
                v.by,
                v.role,
                timestamp(v.at),
                clean(&v.reason)
            )
        },
    );
    let mut text = fields(&[
        ("Approval", approval.approval_id.to_string()),
        ("State", state),
        (
            "Agent",
            format!(
                "{} (owner {})",
                clean(&asked.spiffe_id),
                clean(asked.owner.as_str())
            ),
        ),
        (
            "Task",
            format!(
                "{}: {} (for {})",
                asked.call.task_id,
                clean(&asked.intent),
                clean(&asked.task_subject)
            ),
        ),
        (
            "Call",
            format!(
                "{} {}",
                clean(&asked.call.action),
                clean(&asked.call.resource)
            ),
        ),
        ("Arguments", arguments),
        ("Delegation", chain),
        ("Asked with", clean(&asked.credential_id)),
        ("Asked at", timestamp(asked.created_at)),
        (
            "Policies",
            format!(
                "{} (version {})",
                clean(&asked.policies.join(", ")),
                asked.policy_version
            ),
        ),
        ("Approvers", approvers),
        ("Uses", asked.uses.to_string()),
        ("Answer", answer),
    ]);
    for (id, policy) in &asked.policy_texts {
        text.push_str(&format!("\nPolicy {}:\n", clean(id)));
        for line in policy.lines() {
            text.push_str(&format!("  {}\n", clean(line)));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aims_core::approval::{ApprovalRequest, ApprovalVerdict, AskedApproval, BoundCall};
    use aims_core::id::{AgentName, Owner, TaskId, UserName};
    use clap::{CommandFactory, Parser};
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: ApprovalCommand,
    }

    fn approval() -> ApprovalView {
        let request = ApprovalRequest::open(
            ApprovalId::new("ap-1").unwrap(),
            AskedApproval {
                call: BoundCall {
                    task_id: TaskId::new("t-1").unwrap(),
                    agent: AgentName::new("ir").unwrap(),
                    action: "export_secret".into(),
                    resource: "Secret::vault/prod/db".into(),
                    arguments_digest: "sha256:ab".into(),
                },
                spiffe_id: "spiffe://e2e.example/agent/ir".into(),
                owner: Owner::new("alice").unwrap(),
                intent: "contain INC-42".into(),
                task_subject: "bob".into(),
                delegation_chain: Vec::new(),
                credential_id: "svid-1".into(),
                enforcement_point: None,
                resource_attributes: json!({}),
                arguments: None,
                policies: vec!["ir-export".into()],
                policy_texts: BTreeMap::from([(
                    "ir-export".into(),
                    "permit (principal, action, resource)\nwhen { context.approved };".into(),
                )]),
                policy_version: 2,
                approvers: None,
                four_eyes: true,
                uses: 1,
                created_at: datetime!(2025-01-01 00:00 UTC),
                expires_at: datetime!(2025-01-01 00:15 UTC),
            },
        );
        ApprovalView::of(request, datetime!(2025-01-01 00:05 UTC))
    }

    #[test]
    fn commands_parse_and_need_a_reason() {
        Cli::command().debug_assert();
        let cmd = Cli::try_parse_from(["approval", "approve", "ap-1", "--reason", "ok"])
            .unwrap()
            .cmd;
        assert!(
            matches!(cmd, ApprovalCommand::Approve { id, reason } if id == "ap-1" && reason == "ok")
        );
        assert!(Cli::try_parse_from(["approval", "deny", "ap-1"]).is_err());
        assert!(Cli::try_parse_from(["approval", "show", "a/b"]).is_err());
        assert!(Cli::try_parse_from(["approval", "list", "--all", "--watch"]).is_err());
        let cmd = Cli::try_parse_from(["approval", "list", "--watch"])
            .unwrap()
            .cmd;
        assert!(matches!(cmd, ApprovalCommand::List { watch: true, .. }));
    }

    #[test]
    fn a_request_reads_in_plain_words() {
        let now = datetime!(2025-01-01 00:05 UTC);
        let mut shown = approval();
        let text = render_approval(&shown, now);
        assert!(text.contains("pending, expires in 10m"), "{text}");
        assert!(
            text.contains("export_secret Secret::vault/prod/db"),
            "{text}"
        );
        assert!(text.contains("not shown by policy (sha256:ab)"), "{text}");
        assert!(text.contains("t-1: contain INC-42 (for bob)"), "{text}");
        assert!(text.contains("not the agent's owner"), "{text}");
        assert!(
            text.contains("Policy ir-export:\n  permit (principal"),
            "{text}"
        );
        shown.state = ApprovalState::Denied;
        shown.verdict = Some(ApprovalVerdict {
            approved: false,
            by: UserName::new("carol").unwrap(),
            role: "approver".into(),
            reason: "not now\u{1b}[31m".into(),
            at: now,
        });
        let text = render_approval(&shown, now);
        assert!(text.contains("denied by carol (approver)"), "{text}");
        assert!(!text.contains('\u{1b}'), "control characters are escaped");
        let list = render_list(
            &ApprovalList {
                approvals: vec![approval()],
            },
            now,
        );
        assert!(list.starts_with("ID"), "{list}");
        assert!(list.contains("ap-1"), "{list}");
        assert!(render_one_line(&approval(), now).starts_with("ap-1  ir asks to export_secret"));
    }
}
