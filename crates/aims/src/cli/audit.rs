//! `aims audit …`: read the audit log, trace one task, and have the server verify its hash
//! chain.
//!
//! This module pages through `/v1/audit` and summarizes each event on one line, and draws a
//! task's trace (`/v1/audit/trace/{task}`) as a tree of its tokens. A chain that does not
//! verify is a failure of the command (non-zero exit), never just a printed line.

use aims_api::{
    AuditPage, AuditQuery, AuditSearch, AuditVerification, TaskTrace, TracedEvent, TracedToken,
};
use aims_core::audit::Outcome;
use aims_core::id::AgentName;
use serde_json::Value;

use super::ClientOpts;
use super::output::{clean, print, str_field, table};

/// Audit log commands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Show audit records in order, starting after a sequence number.
    Tail {
        /// Only records after this sequence number (default: from the first).
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// Show at most this many records (the server caps a page at 1000).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
    },
    /// Verify the audit hash chain (on the server) and the Merkle tree log (here, from every
    /// stored entry) against the signed checkpoints; fails if either is not intact.
    Verify {
        /// A checkpoint note saved earlier (`aims audit checkpoint --out FILE`): the log must
        /// still extend it. Opened with the published log key (or --log-key).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
        /// The log key (signed-note verifier key) to trust instead of the one the server
        /// publishes.
        #[arg(long, value_name = "VKEY")]
        log_key: Option<String>,
    },
    /// Show the latest signed checkpoint of the audit log, or save its note to keep.
    Checkpoint {
        /// Write the signed note to this file (created or truncated).
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Find the records matching every filter given (reads on through the log until --limit
    /// records are found or it ends).
    Query {
        #[command(flatten)]
        filter: SearchArgs,
        /// Show at most this many records (default 100).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: Option<u32>,
    },
    /// Export records as OCSF 1.2.0 events, one JSON object per line, from the first (or
    /// after --after) to the log's end: Authentication 3002, Account Change 3001, API
    /// Activity 6003.
    Export {
        /// Only records after this sequence number (where an earlier export stopped).
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// Write to this file (created or truncated) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Show one task as a tree: the tokens obtained for it, what each was used for, and the
    /// tokens delegated from each.
    Trace {
        /// The task's id.
        task: String,
    },
}

/// What `aims audit query` looks for; every filter given must match.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SearchArgs {
    /// Records naming this agent.
    #[arg(long, value_name = "NAME")]
    agent: Option<AgentName>,
    /// Records of this task.
    #[arg(long, value_name = "TASK")]
    task: Option<String>,
    /// Records naming this owner.
    #[arg(long)]
    owner: Option<String>,
    /// Records of this action (decision, token.exchange, revoke, ...).
    #[arg(long)]
    action: Option<String>,
    /// Decisions with this answer (allow, deny, approval_required).
    #[arg(long)]
    decision: Option<String>,
    /// Records whose resource contains this text.
    #[arg(long)]
    resource: Option<String>,
    /// Decisions this policy determined.
    #[arg(long)]
    policy: Option<String>,
    /// Records at or after this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    since: Option<time::OffsetDateTime>,
    /// Records before this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    until: Option<time::OffsetDateTime>,
}

impl SearchArgs {
    /// The first page's query.
    fn search(self) -> AuditSearch {
        AuditSearch {
            agent: self.agent,
            task: self.task,
            owner: self.owner,
            action: self.action,
            decision: self.decision,
            resource: self.resource,
            policy: self.policy,
            since: self.since,
            until: self.until,
            after: None,
            limit: None,
        }
    }
}

/// An RFC 3339 time from the command line.
fn rfc3339(value: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| "an RFC 3339 time such as 2026-12-06T18:00:00Z".to_owned())
}

/// Runs one `aims audit` command.
pub async fn run_audit(opts: &ClientOpts, cmd: AuditCommand) -> anyhow::Result<()> {
    let client = opts.client()?;
    match cmd {
        AuditCommand::Tail { after, limit } => {
            let page = client.audit(&AuditQuery { after, limit }).await?;
            print(opts.output, &serde_json::to_value(&page)?, || {
                render_page(&page)
            })
        }
        AuditCommand::Query { filter, limit } => {
            let wanted = limit.unwrap_or(100) as usize;
            let mut search = filter.search();
            let mut found = Vec::new();
            let mut next_after = None;
            while found.len() < wanted {
                search.limit = u32::try_from((wanted - found.len()).min(1000)).ok();
                let page = client.search_audit(&search).await?;
                found.extend(page.records);
                next_after = page.next_after;
                match page.next_after {
                    Some(after) => search.after = Some(after),
                    None => break,
                }
            }
            let page = AuditPage { records: found };
            print(opts.output, &serde_json::to_value(&page)?, || {
                let mut out = render_records(&page);
                if let Some(after) = next_after {
                    out.push_str(&format!("More may follow after record {after}.\n"));
                }
                out
            })
        }
        AuditCommand::Export { after, out } => {
            use std::io::Write as _;
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut query = AuditQuery {
                after,
                limit: Some(1000),
            };
            let mut written = 0u64;
            loop {
                let page = client.audit_ocsf(&query).await?;
                for event in &page.events {
                    serde_json::to_writer(&mut sink, event)?;
                    sink.write_all(b"\n")?;
                    written += 1;
                }
                match page.next_after {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
            sink.flush()?;
            if let Some(path) = out {
                eprintln!("{written} OCSF events written to {}", path.display());
            }
            Ok(())
        }
        AuditCommand::Trace { task } => {
            let trace = client.trace_task(&task).await?;
            print(opts.output, &serde_json::to_value(&trace)?, || {
                render_trace(&trace)
            })
        }
        AuditCommand::Verify {
            checkpoint,
            log_key,
        } => {
            let kept = checkpoint
                .as_ref()
                .map(|path| {
                    std::fs::read_to_string(path).map_err(|e| {
                        anyhow::anyhow!("cannot read checkpoint {}: {e}", path.display())
                    })
                })
                .transpose()?;
            let chain = client.verify_audit().await?;
            let tree =
                aims_sdk::tlog::verify_log(&client, kept.as_deref(), log_key.as_deref()).await?;
            let both = serde_json::json!({ "chain": chain, "tree": tree });
            print(opts.output, &both, || render_tree(&chain, &tree))?;
            check_tree(&tree)?;
            check_intact(&chain)
        }
        AuditCommand::Checkpoint { out } => {
            let checkpoint = client.audit_checkpoint(None).await?;
            if let Some(path) = out {
                std::fs::write(&path, &checkpoint.note)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            }
            print(opts.output, &serde_json::to_value(&checkpoint)?, || {
                clean(&checkpoint.note)
            })
        }
    }
}

/// Fails when the chain is broken, saying where.
fn check_intact(v: &AuditVerification) -> anyhow::Result<()> {
    if v.intact {
        return Ok(());
    }
    anyhow::bail!(
        "audit chain is NOT intact: {} ({} records checked)",
        clean(v.problem.as_deref().unwrap_or("no detail given")),
        v.records
    )
}

/// Fails when the tree does not verify, saying where.
fn check_tree(report: &aims_sdk::tlog::LogReport) -> anyhow::Result<()> {
    match &report.problem {
        None => Ok(()),
        Some(problem) => anyhow::bail!(
            "audit log is NOT intact{}: {}",
            problem
                .seq
                .map(|seq| format!(" at entry {seq}"))
                .unwrap_or_default(),
            clean(&problem.message)
        ),
    }
}

/// Both verifications, when the tree verified (a failure is reported by [`check_tree`]).
fn render_tree(chain: &AuditVerification, report: &aims_sdk::tlog::LogReport) -> String {
    if !report.intact() {
        return String::new();
    }
    let sizes: Vec<String> = report
        .checkpoints_matched
        .iter()
        .map(u64::to_string)
        .collect();
    format!(
        "{}Audit tree intact: {} entries of {} recomputed; signed checkpoints matched at sizes \
         {}{}.\n",
        render_verification(chain),
        report.entries,
        clean(&report.origin),
        sizes.join(", "),
        report
            .kept_size
            .map(|k| format!(" (kept checkpoint: {k})"))
            .unwrap_or_default()
    )
}

/// The verification result for an intact chain; a broken one is reported by [`check_intact`]
/// on stderr.
fn render_verification(v: &AuditVerification) -> String {
    if v.intact {
        format!(
            "Audit chain intact: {} records verified, head {}.\n",
            v.records,
            clean(&v.head_hash)
        )
    } else {
        String::new()
    }
}

/// One line per record: sequence, time, actor, action, outcome and what it concerned.
fn render_page(page: &AuditPage) -> String {
    let mut out = render_records(page);
    if let Some(last) = page.records.last() {
        out.push_str(&format!(
            "Next page: aims audit tail --after {}\n",
            last.seq
        ));
    }
    out
}

/// The records as a table: sequence, time, actor, action, outcome and what it concerned.
fn render_records(page: &AuditPage) -> String {
    if page.records.is_empty() {
        return "No audit records.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = page
        .records
        .iter()
        .map(|r| {
            let e = &r.event;
            vec![
                r.seq.to_string(),
                str_field(e, "time"),
                actor(e.get("actor")),
                str_field(e, "action"),
                outcome(e),
                target(e),
            ]
        })
        .collect();
    table(
        &["SEQ", "TIME", "ACTOR", "ACTION", "OUTCOME", "TARGET"],
        &rows,
    )
}

/// The task, then its tokens as a tree, each event on one line under the token it used.
pub(crate) fn render_trace(trace: &TaskTrace) -> String {
    let task = &trace.task;
    let mut out = format!(
        "Task {} of {} ({}): {}\n",
        clean(task.id.as_str()),
        clean(task.agent.as_str()),
        clean(&task.state),
        clean(task.intent.as_str())
    );
    for event in &trace.events {
        out.push_str(&format!("  {}\n", event_line(event)));
    }
    for token in &trace.tokens {
        render_token(token, 1, &mut out);
    }
    if trace.truncated {
        out.push_str("  … more events than a trace shows; see aims audit tail\n");
    }
    out
}

fn render_token(token: &TracedToken, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    let issued = &token.issued.event;
    let scope = issued
        .details
        .get("scope")
        .and_then(Value::as_str)
        .map_or_else(String::new, |s| format!(", scope {}", clean(s)));
    // A delegated token is held by the chain's current actor, the outermost one.
    let holder = issued
        .delegation_chain
        .first()
        .or(issued.agent.as_ref())
        .map_or("-", String::as_str);
    out.push_str(&format!(
        "{indent}token {} to {} ({}{scope})\n",
        clean(&token.token_id),
        clean(holder),
        clean(&issued.action),
    ));
    for event in &token.events {
        out.push_str(&format!("{indent}  {}\n", event_line(event)));
    }
    for child in &token.delegated {
        render_token(child, depth + 1, out);
    }
}

/// `SEQ ACTION OUTCOME: RESOURCE -> DECISION (POLICIES)` for one traced event.
fn event_line(traced: &TracedEvent) -> String {
    let e = &traced.event;
    let outcome = match e.outcome {
        Outcome::Success => "success",
        Outcome::Denied => "denied",
    };
    let mut line = format!("#{} {} {outcome}", traced.seq, clean(&e.action));
    if let Some(resource) = &e.resource {
        line.push_str(&format!(": {}", clean(resource)));
    }
    if let Some(decision) = &e.decision {
        line.push_str(&format!(" -> {}", clean(decision)));
        if !e.policy_ids.is_empty() {
            line.push_str(&format!(" ({})", clean(&e.policy_ids.join(", "))));
        }
    }
    if let Some(approval) = &e.approval_id {
        line.push_str(&format!(" [approval {}]", clean(approval)));
    }
    if let Some(code) = &e.code {
        line.push_str(&format!(" [{}]", clean(code)));
    }
    line
}

/// `user:alice`, an agent's SPIFFE ID, `anonymous` or `system`.
fn actor(actor: Option<&Value>) -> String {
    let Some(actor) = actor else {
        return "-".to_owned();
    };
    match actor.get("kind").and_then(Value::as_str) {
        Some("user") => format!("user:{}", str_field(actor, "name")),
        Some("agent") => str_field(actor, "spiffe_id"),
        Some(kind) => kind.to_owned(),
        None => "-".to_owned(),
    }
}

/// `success`, or `denied (code)`.
fn outcome(event: &Value) -> String {
    let outcome = str_field(event, "outcome");
    match event.get("code").and_then(Value::as_str) {
        Some(code) => format!("{outcome} ({code})"),
        None => outcome,
    }
}

/// The agent the event concerns, else the resource, else `-`.
fn target(event: &Value) -> String {
    ["agent", "resource"]
        .iter()
        .map(|f| str_field(event, f))
        .find(|v| v != "-")
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use aims_api::AuditRecordView;
    use serde_json::json;

    use super::*;

    fn record(seq: u64, event: Value) -> AuditRecordView {
        AuditRecordView {
            seq,
            prev_hash: "00".into(),
            hash: "11".into(),
            event,
        }
    }

    #[test]
    fn records_render_one_line_each() {
        let page = AuditPage {
            records: vec![
                record(
                    1,
                    json!({"time": "2025-01-01T00:00:00Z", "actor": {"kind": "system"},
                           "action": "trust_domain.create", "outcome": "success"}),
                ),
                record(
                    2,
                    json!({"time": "2025-01-01T00:01:00Z",
                           "actor": {"kind": "user", "name": "admin", "role": "admin"},
                           "action": "agent.register", "outcome": "success",
                           "agent": "spiffe://acme.example/agent/coder"}),
                ),
                record(
                    3,
                    json!({"time": "2025-01-01T00:02:00Z", "actor": {"kind": "anonymous"},
                           "action": "api.reject", "outcome": "denied", "code": "unauthorized",
                           "resource": "/v1/agents"}),
                ),
            ],
        };
        assert_eq!(
            render_page(&page),
            "SEQ  TIME                  ACTOR       ACTION               OUTCOME                TARGET\n\
             1    2025-01-01T00:00:00Z  system      trust_domain.create  success                -\n\
             2    2025-01-01T00:01:00Z  user:admin  agent.register       success                spiffe://acme.example/agent/coder\n\
             3    2025-01-01T00:02:00Z  anonymous   api.reject           denied (unauthorized)  /v1/agents\n\
             Next page: aims audit tail --after 3\n"
        );
        assert_eq!(
            render_page(&AuditPage { records: vec![] }),
            "No audit records.\n"
        );
    }

    #[test]
    fn a_broken_chain_is_an_error() {
        let mut v = AuditVerification {
            intact: true,
            records: 42,
            head_hash: "ab12".into(),
            problem: None,
        };
        assert!(check_intact(&v).is_ok());
        assert_eq!(
            render_verification(&v),
            "Audit chain intact: 42 records verified, head ab12.\n"
        );
        v.intact = false;
        v.problem = Some("record 17: hash mismatch".into());
        assert_eq!(
            check_intact(&v).unwrap_err().to_string(),
            "audit chain is NOT intact: record 17: hash mismatch (42 records checked)"
        );
        assert_eq!(render_verification(&v), "");
    }
}
