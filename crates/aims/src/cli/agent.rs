//! `aims agent …`: register, list, show, update, suspend, resume, release and decommission
//! agents, and issue join tokens.
//!
//! This module turns flags into `aims-api` requests (labels, limits, a posture profile file)
//! and renders agents as text. It reads the posture profile file named on the command line;
//! it does not decide whether a change is allowed — the server does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aims_api::{
    AgentList, AgentQuery, AgentView, Inventory, JoinTokenIssued, LifecycleRequest,
    RecertifyRequest, RegisterAgentRequest, UpdateAgentRequest,
};
use aims_core::agent::{
    Agent, LifecycleState, Limits, MAX_DELEGATION_DEPTH_CEILING, MAX_TOKEN_TTL_CEILING_S,
};
use aims_core::id::{AgentName, Environment, LabelKey, Owner};
use aims_core::posture::PostureProfile;
use anyhow::{Context, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use time::OffsetDateTime;

use super::ClientOpts;
use super::output::{self, fields, print, relative, table, timestamp};

/// Agent registry commands.
#[derive(clap::Subcommand, Debug)]
pub enum AgentCommand {
    /// Register a new agent and print its one-time join token.
    Register {
        /// Unique agent name (letters, digits, '.', '-', '_'); the last segment of its SPIFFE ID.
        name: AgentName,
        /// The one accountable owner, e.g. alice@acme.example.
        #[arg(long)]
        owner: Owner,
        #[command(flatten)]
        fields: AgentFields,
    },
    /// List agents, following pages until all (or --limit) are shown.
    List {
        #[command(flatten)]
        filter: AgentFilterArgs,
        /// Show at most this many agents.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Every agent with its owner, state, last activity, posture, live credentials, open
    /// tasks and last decision (one page of at most 200; continue with --after).
    Inventory {
        #[command(flatten)]
        filter: AgentFilterArgs,
        /// Show at most this many agents (1 to 200; default 100).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: Option<u32>,
    },
    /// Show one agent.
    Show {
        /// Agent name.
        name: AgentName,
    },
    /// Change an agent's owner, environment, description, profile, limits or labels.
    Update {
        /// Agent name.
        name: AgentName,
        /// New owner.
        #[arg(long)]
        owner: Option<Owner>,
        #[command(flatten)]
        fields: AgentFields,
        /// Remove this label (repeatable).
        #[arg(long = "remove-label", value_name = "KEY")]
        remove_labels: Vec<LabelKey>,
        /// Only apply if the agent is still at this revision (default: the revision read
        /// before a limits or labels change).
        #[arg(long, value_name = "N")]
        revision: Option<u64>,
    },
    /// Suspend an active agent: it loses its live credentials until resumed.
    Suspend {
        /// Agent name.
        name: AgentName,
        /// Why; recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended agent.
    Resume {
        /// Agent name.
        name: AgentName,
        /// Why; recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Retire an agent for good; its name is never reused.
    Decommission {
        /// Agent name.
        name: AgentName,
        /// Why; recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a quarantined agent attest again (admin); its posture baseline is cleared.
    Release {
        /// Agent name.
        name: AgentName,
        /// Why; recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Recertify an agent (admin, or the user its `approver` label names): its owner still
    /// needs it, so its recertification date moves to N days from now. A suspended agent
    /// stays suspended until an admin resumes it.
    Recertify {
        /// Agent name.
        name: AgentName,
        /// Days until the next recertification (default: the server's recertify_days).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: Option<u32>,
    },
    /// Issue a new one-time join token, replacing any unused one.
    JoinToken {
        /// Agent name.
        name: AgentName,
    },
}

/// The optional agent fields shared by `register` and `update`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentFields {
    /// Environment, e.g. dev, staging, prod (default on register: dev).
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<Environment>,
    /// What the agent is for.
    #[arg(long)]
    pub description: Option<String>,
    /// JSON file with the posture profile (what the agent may be at runtime).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Set a label (repeatable); on update, other labels are kept.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(LabelKey, String)>,
    /// Longest lifetime of any token issued to the agent, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_TOKEN_TTL_CEILING_S))
    )]
    pub max_ttl: Option<u32>,
    /// Deepest delegation chain the agent may be part of.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u8).range(0..=i64::from(MAX_DELEGATION_DEPTH_CEILING))
    )]
    pub max_depth: Option<u8>,
    /// Allow plain bearer tokens instead of DPoP (legacy clients only); `--allow-bearer=false`
    /// turns it off again.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub allow_bearer: Option<bool>,
    /// Days until the owner must recertify the agent (on update: recertify now).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub recertify_days: Option<u32>,
}

/// Which agents a listing shows.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentFilterArgs {
    /// Only this owner's agents.
    #[arg(long)]
    owner: Option<Owner>,
    /// Only agents in this state.
    #[arg(long, value_parser = state_parser())]
    state: Option<LifecycleState>,
    /// Only agents in this environment.
    #[arg(long = "env", value_name = "ENV")]
    environment: Option<Environment>,
    /// Start after this agent name (continues an earlier, limited listing).
    #[arg(long, value_name = "NAME")]
    after: Option<AgentName>,
}

impl AgentFilterArgs {
    /// The query for these agents, `limit` per page.
    pub(crate) fn query(self, limit: Option<u32>) -> AgentQuery {
        AgentQuery {
            owner: self.owner,
            state: self.state,
            environment: self.environment,
            after: self.after,
            limit,
        }
    }
}

/// Runs one `aims agent` command.
pub async fn run_agent(opts: &ClientOpts, cmd: AgentCommand) -> anyhow::Result<()> {
    let client = opts.client()?;
    match cmd {
        AgentCommand::Register {
            name,
            owner,
            fields,
        } => {
            let request = register_request(name, owner, &fields)?;
            let issued = client.register_agent(&request).await?;
            let now = OffsetDateTime::now_utc();
            print(opts.output, &serde_json::to_value(&issued)?, || {
                render_join_token(&issued, true, now)
            })
        }
        AgentCommand::List { filter, limit } => {
            let query = filter.query(None);
            let max = limit.and_then(|l| usize::try_from(l).ok());
            let list = client.list_all_agents(&query, max).await?;
            print(opts.output, &serde_json::to_value(&list)?, || {
                render_agent_list(&list)
            })
        }
        AgentCommand::Inventory { filter, limit } => {
            let inventory = client.inventory(&filter.query(limit)).await?;
            print(opts.output, &serde_json::to_value(&inventory)?, || {
                render_inventory(&inventory)
            })
        }
        AgentCommand::Show { name } => {
            let view = client.agent(&name).await?;
            print(opts.output, &serde_json::to_value(&view)?, || {
                render_agent(&view)
            })
        }
        AgentCommand::Update {
            name,
            owner,
            fields,
            remove_labels,
            revision,
        } => {
            let current = if fields.needs_current() || !remove_labels.is_empty() {
                Some(client.agent(&name).await?.agent)
            } else {
                None
            };
            let request =
                update_request(owner, &fields, &remove_labels, revision, current.as_ref())?;
            let view = client.update_agent(&name, &request).await?;
            print(opts.output, &serde_json::to_value(&view)?, || {
                format!(
                    "Updated agent {} (revision {}).\n",
                    view.agent.name, view.agent.revision
                )
            })
        }
        AgentCommand::Suspend { name, reason } => {
            let view = client
                .suspend_agent(&name, &LifecycleRequest { reason })
                .await?;
            print_lifecycle(opts, &view)
        }
        AgentCommand::Resume { name, reason } => {
            let view = client
                .resume_agent(&name, &LifecycleRequest { reason })
                .await?;
            print_lifecycle(opts, &view)
        }
        AgentCommand::Decommission { name, reason } => {
            let view = client
                .decommission_agent(&name, &LifecycleRequest { reason })
                .await?;
            print_lifecycle(opts, &view)
        }
        AgentCommand::Release { name, reason } => {
            let view = client
                .release_agent(&name, &LifecycleRequest { reason })
                .await?;
            print_lifecycle(opts, &view)
        }
        AgentCommand::Recertify { name, days } => {
            let view = client
                .recertify_agent(&name, &RecertifyRequest { days })
                .await?;
            print(opts.output, &serde_json::to_value(&view)?, || {
                format!(
                    "Agent {} is recertified until {} (it is {}).\n",
                    view.agent.name,
                    timestamp(view.agent.recertify_by),
                    view.agent.state
                )
            })
        }
        AgentCommand::JoinToken { name } => {
            let issued = client.issue_join_token(&name).await?;
            let now = OffsetDateTime::now_utc();
            print(opts.output, &serde_json::to_value(&issued)?, || {
                render_join_token(&issued, false, now)
            })
        }
    }
}

fn print_lifecycle(opts: &ClientOpts, view: &AgentView) -> anyhow::Result<()> {
    print(opts.output, &serde_json::to_value(view)?, || {
        format!("Agent {} is now {}.\n", view.agent.name, view.agent.state)
    })
}

fn state_parser() -> impl TypedValueParser<Value = LifecycleState> {
    PossibleValuesParser::new(["active", "suspended", "quarantined", "decommissioned"]).try_map(
        |s| LifecycleState::parse(&s).ok_or_else(|| format!("unknown lifecycle state {s:?}")),
    )
}

/// Parses `KEY=VALUE`; the value may itself contain `=` and may be empty.
fn parse_label(raw: &str) -> Result<(LabelKey, String), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {raw:?}"))?;
    let key = LabelKey::new(key).map_err(|e| e.to_string())?;
    Ok((key, value.to_owned()))
}

/// The labels given on the command line as a map; a key given twice is an error.
fn label_map(labels: &[(LabelKey, String)]) -> anyhow::Result<BTreeMap<LabelKey, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in labels {
        if map.insert(key.clone(), value.clone()).is_some() {
            bail!("label {key} is given twice");
        }
    }
    Ok(map)
}

/// Reads a posture profile from a JSON file: unknown fields and invalid values are refused,
/// naming the file.
fn read_profile(path: &Path) -> anyhow::Result<PostureProfile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read posture profile {}", path.display()))?;
    let profile: PostureProfile = serde_json::from_str(&text)
        .with_context(|| format!("invalid posture profile {}", path.display()))?;
    profile
        .validate()
        .with_context(|| format!("invalid posture profile {}", path.display()))?;
    Ok(profile)
}

impl AgentFields {
    fn sets_limits(&self) -> bool {
        self.max_ttl.is_some() || self.max_depth.is_some() || self.allow_bearer.is_some()
    }

    /// Whether an update must read the agent first, to merge limits or labels.
    fn needs_current(&self) -> bool {
        self.sets_limits() || !self.labels.is_empty()
    }

    /// `base` with the limits given on the command line applied.
    fn apply_limits(&self, base: Limits) -> Limits {
        Limits {
            max_token_ttl_s: self.max_ttl.unwrap_or(base.max_token_ttl_s),
            max_delegation_depth: self.max_depth.unwrap_or(base.max_delegation_depth),
            allow_bearer: self.allow_bearer.unwrap_or(base.allow_bearer),
        }
    }

    fn profile(&self) -> anyhow::Result<Option<PostureProfile>> {
        self.profile.as_deref().map(read_profile).transpose()
    }
}

/// The `POST /v1/agents` body for `aims agent register`.
fn register_request(
    name: AgentName,
    owner: Owner,
    fields: &AgentFields,
) -> anyhow::Result<RegisterAgentRequest> {
    let labels = label_map(&fields.labels)?;
    Ok(RegisterAgentRequest {
        name,
        owner,
        environment: fields.environment.clone(),
        description: fields.description.clone(),
        posture_profile: fields.profile()?,
        limits: fields
            .sets_limits()
            .then(|| fields.apply_limits(Limits::default())),
        labels: (!labels.is_empty()).then_some(labels),
        recertify_days: fields.recertify_days,
    })
}

/// The `PATCH /v1/agents/{name}` body for `aims agent update`. Limits and labels are merged
/// into `current` (read just before), and the change is made conditional on `current`'s
/// revision unless `revision` says otherwise, so a concurrent change is not overwritten.
fn update_request(
    owner: Option<Owner>,
    fields: &AgentFields,
    remove_labels: &[LabelKey],
    revision: Option<u64>,
    current: Option<&Agent>,
) -> anyhow::Result<UpdateAgentRequest> {
    let limits = match current {
        Some(agent) if fields.sets_limits() => Some(fields.apply_limits(agent.limits)),
        _ => None,
    };
    let labels = match current {
        Some(agent) if !fields.labels.is_empty() || !remove_labels.is_empty() => {
            let mut labels = agent.labels.clone();
            for key in remove_labels {
                if labels.remove(key).is_none() {
                    bail!("agent {} has no label {key}", agent.name);
                }
            }
            labels.extend(label_map(&fields.labels)?);
            Some(labels)
        }
        _ => None,
    };
    let request = UpdateAgentRequest {
        owner,
        environment: fields.environment.clone(),
        description: fields.description.clone(),
        posture_profile: fields.profile()?,
        limits,
        labels,
        recertify_days: fields.recertify_days,
        revision: revision.or(current.map(|agent| agent.revision)),
    };
    let UpdateAgentRequest {
        owner,
        environment,
        description,
        posture_profile,
        limits,
        labels,
        recertify_days,
        revision: _,
    } = &request;
    if owner.is_none()
        && environment.is_none()
        && description.is_none()
        && posture_profile.is_none()
        && limits.is_none()
        && labels.is_none()
        && recertify_days.is_none()
    {
        bail!(
            "nothing to update: give at least one of --owner, --env, --description, --profile, \
             --label, --remove-label, --max-ttl, --max-depth, --allow-bearer, --recertify-days"
        );
    }
    Ok(request)
}

/// The text shown after `register` (`registered`) or `join-token`.
fn render_join_token(issued: &JoinTokenIssued, registered: bool, now: OffsetDateTime) -> String {
    let agent = &issued.agent.agent;
    let heading = if registered {
        format!(
            "Registered agent {} (owner {}, env {}).\n",
            agent.name,
            output::clean(agent.owner.as_str()),
            agent.environment
        )
    } else {
        format!(
            "New join token for agent {}; any earlier unused token no longer works.\n",
            agent.name
        )
    };
    let expires = issued.join_token_expires_at;
    format!(
        "{heading}{}The join token is shown only once: give it to the agent for its first \
         attestation.\n",
        fields(&[
            ("SPIFFE ID", issued.spiffe_id.clone()),
            ("Join token", issued.join_token.clone()),
            (
                "Expires",
                format!("{} ({})", timestamp(expires), relative(expires, now))
            ),
        ])
    )
}

/// `aims agent list` as a table.
/// One line per agent: who owns it, its state, when it was last seen, its posture's age, its
/// live credentials, open tasks and last decision.
fn render_inventory(inventory: &Inventory) -> String {
    if inventory.agents.is_empty() {
        return "No agents.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = inventory
        .agents
        .iter()
        .map(|entry| {
            let a = &entry.agent.agent;
            let credentials = entry
                .live_credentials
                .iter()
                .map(|(kind, n)| format!("{kind}:{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let last_decision = entry.last_decision.as_ref().map_or_else(
                || "-".to_owned(),
                |d| {
                    format!(
                        "{} {}",
                        d.decision.as_deref().unwrap_or("-"),
                        d.call.as_deref().unwrap_or("-")
                    )
                },
            );
            vec![
                a.name.to_string(),
                a.owner.to_string(),
                a.state.to_string(),
                entry
                    .last_seen
                    .map_or_else(|| "never".to_owned(), |t| t.to_string()),
                entry
                    .posture
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |p| format!("{}s old", p.age_s)),
                if credentials.is_empty() {
                    "-".to_owned()
                } else {
                    credentials
                },
                entry.open_tasks.to_string(),
                output::clean(&last_decision),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "OWNER",
            "STATE",
            "LAST SEEN",
            "POSTURE",
            "LIVE CREDENTIALS",
            "OPEN TASKS",
            "LAST DECISION",
        ],
        &rows,
    );
    if let Some(after) = &inventory.next_after {
        out.push_str(&format!(
            "More agents follow; continue with --after {}\n",
            output::clean(after)
        ));
    }
    out
}

fn render_agent_list(list: &AgentList) -> String {
    if list.agents.is_empty() {
        return "No agents.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .agents
        .iter()
        .map(|view| {
            let a = &view.agent;
            vec![
                a.name.to_string(),
                a.owner.to_string(),
                a.environment.to_string(),
                a.state.to_string(),
                view.spiffe_id.clone(),
            ]
        })
        .collect();
    let mut out = table(&["NAME", "OWNER", "ENV", "STATE", "SPIFFE_ID"], &rows);
    if let Some(after) = &list.next_after {
        out.push_str(&format!(
            "More agents follow; continue with --after {}\n",
            output::clean(after)
        ));
    }
    out
}

/// `aims agent show` as `label  value` lines.
fn render_agent(view: &AgentView) -> String {
    let a = &view.agent;
    let labels = if a.labels.is_empty() {
        "none".to_owned()
    } else {
        a.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        ("Name", a.name.to_string()),
        ("SPIFFE ID", view.spiffe_id.clone()),
        ("Owner", a.owner.to_string()),
        ("Environment", a.environment.to_string()),
        ("State", a.state.to_string()),
        (
            "Description",
            if a.description.is_empty() {
                "-".to_owned()
            } else {
                a.description.clone()
            },
        ),
        ("Labels", labels),
        ("Max token TTL", format!("{}s", a.limits.max_token_ttl_s)),
        ("Max delegation", a.limits.max_delegation_depth.to_string()),
        (
            "Bearer tokens",
            if a.limits.allow_bearer {
                "allowed (legacy)"
            } else {
                "refused (DPoP required)"
            }
            .to_owned(),
        ),
    ];
    let posture = posture_lines(&a.posture_profile);
    if posture.is_empty() {
        rows.push(("Posture", "no checks".to_owned()));
    }
    for (i, line) in posture.into_iter().enumerate() {
        rows.push((if i == 0 { "Posture" } else { "" }, line));
    }
    rows.extend([
        ("Recertify by", timestamp(a.recertify_by)),
        ("Created", timestamp(a.created_at)),
        ("Updated", timestamp(a.updated_at)),
        ("Revision", a.revision.to_string()),
    ]);
    fields(&rows)
}

/// One line per checked posture field (`model.id: gpt-x, gpt-y`), then the sections allowed
/// to change. Empty for a profile that checks nothing.
fn posture_lines(profile: &PostureProfile) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(profile) else {
        return lines;
    };
    for (section, value) in &sections {
        let serde_json::Value::Object(checks) = value else {
            continue;
        };
        for (field, allowed) in checks {
            let allowed = allowed
                .as_array()
                .map(|values| {
                    values
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| allowed.to_string());
            lines.push(format!("{section}.{field}: {allowed}"));
        }
    }
    if !lines.is_empty() || !profile.may_change.is_empty() {
        let may_change = profile
            .may_change
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect::<Vec<_>>();
        lines.push(format!(
            "may change without approval: {}",
            if may_change.is_empty() {
                "nothing".to_owned()
            } else {
                may_change.join(", ")
            }
        ));
    }
    lines
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
