//! `aims engine …` and `aims lease …`: admins add database engines and their role templates;
//! agents ask for, renew and revoke their leases with their task token; operators list, show
//! and revoke leases.
//!
//! The engine's administrator password is never on the command line: it is a sealed secret of
//! the secret store (`aims secret put`), named with `--admin-secret`. A lease's password is
//! printed once, by `aims lease create`, and nowhere else.

use std::path::PathBuf;

use aims_api::leases::{
    AddEngineRequest, AddRoleRequest, LeaseGranted, LeaseList, LeaseRequest, LeaseView,
    RenewLeaseRequest, RevokeLeaseRequest, RoleList,
};
use aims_core::id::{AgentName, EngineName, Environment, RoleName, SecretName};
use aims_core::lease::{Cleanup, Engine, SqlIdent};
use anyhow::Context as _;
use time::OffsetDateTime;

use super::ClientOpts;
use super::output::{clean, fields, print, relative, table, timestamp};
use super::token::{read_credential, read_key};

/// Engine commands.
#[derive(clap::Subcommand, Debug)]
pub enum EngineCommand {
    /// Add a database engine; AIMS connects to it as its administrator at once.
    Add {
        /// The kind of database (only `postgres`).
        #[arg(value_parser = ["postgres"])]
        kind: String,
        /// The engine's name.
        name: EngineName,
        /// `postgres://USER@HOST:PORT/DATABASE`, without a password.
        #[arg(long, value_name = "URL")]
        connection_url: String,
        /// The secret (of `aims secret put`) holding the administrator's password.
        #[arg(long, value_name = "SECRET")]
        admin_secret: Option<SecretName>,
        /// The system its roles belong to, for policies (default: the engine's name).
        #[arg(long)]
        system: Option<String>,
        /// The environment of its data (default: prod).
        #[arg(long)]
        environment: Option<Environment>,
        /// The sensitivity of its data (default: internal).
        #[arg(long)]
        sensitivity: Option<String>,
    },
    /// List engines.
    List,
    /// Role templates of an engine.
    #[command(subcommand)]
    Role(RoleCommand),
}

/// Role-template commands.
#[derive(clap::Subcommand, Debug)]
pub enum RoleCommand {
    /// Add a role template: what a leased role may do, tried on the engine first.
    Add {
        /// The engine.
        engine: EngineName,
        /// The template's name.
        role: RoleName,
        /// File of grants, one per line: `GRANT SELECT ON TABLE schema.table`,
        /// `GRANT SELECT ON ALL TABLES IN SCHEMA schema`, `GRANT USAGE ON SCHEMA schema`.
        #[arg(long, value_name = "FILE")]
        grants: PathBuf,
        /// The longest lease: seconds, or a number with s, m or h (e.g. 15m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        max_ttl: u64,
        /// At the lease's end, give what the role created to this role instead of dropping it.
        #[arg(long, value_name = "ROLE")]
        reassign_to: Option<String>,
    },
    /// List an engine's role templates.
    List {
        /// The engine.
        engine: EngineName,
    },
}

/// Lease commands.
#[derive(clap::Subcommand, Debug)]
pub enum LeaseCommand {
    /// Ask for a lease with a task token (an agent); prints the password once.
    Create {
        /// The engine.
        engine: EngineName,
        /// The role template.
        role: RoleName,
        /// File holding the task token (as `aims token exchange` prints it), or - for stdin.
        #[arg(long, value_name = "FILE|-")]
        token_file: PathBuf,
        /// The agent's private key (PKCS#8 PEM); signs the DPoP proof.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// How long: seconds, or a number with s, m or h (default: as long as allowed).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<u64>,
    },
    /// Renew a lease with the task token it was asked with (an agent).
    Renew {
        /// The lease id.
        id: String,
        /// File holding the task token, or - for stdin.
        #[arg(long, value_name = "FILE|-")]
        token_file: PathBuf,
        /// The agent's private key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// How long from now (default: as long as allowed).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<u64>,
    },
    /// List the newest leases.
    List {
        /// Only this agent's.
        #[arg(long)]
        agent: Option<AgentName>,
    },
    /// Show one lease.
    Show {
        /// The lease id.
        id: String,
    },
    /// Revoke a lease, as an operator or — with `--token-file` and `--key` — as the agent
    /// holding it; its sessions are terminated and its role dropped.
    Revoke {
        /// The lease id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// As the lease's holder: the task token it was asked with, or - for stdin.
        #[arg(long, value_name = "FILE|-", requires = "key")]
        token_file: Option<PathBuf>,
        /// The holder's private key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE", requires = "token_file")]
        key: Option<PathBuf>,
    },
}

/// `15`, `15s`, `15m`, `2h` as seconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (text.get(..i).unwrap_or_default(), c),
        _ => (text, 's'),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 300, 90s, 15m, 2h)"))?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => return Err(format!("{text:?}: the unit is s, m or h")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Runs one `aims engine` command.
pub async fn run_engine(opts: &ClientOpts, cmd: EngineCommand) -> anyhow::Result<()> {
    let client = opts.client()?;
    match cmd {
        EngineCommand::Add {
            kind,
            name,
            connection_url,
            admin_secret,
            system,
            environment,
            sensitivity,
        } => {
            let request = AddEngineRequest {
                name,
                kind,
                connection_url,
                admin_secret,
                system,
                environment,
                sensitivity,
            };
            let engine = client.add_engine(&request).await?;
            print(opts.output, &serde_json::to_value(&engine)?, || {
                render_engine(&engine)
            })
        }
        EngineCommand::List => {
            let list = client.engines().await?;
            print(opts.output, &serde_json::to_value(&list)?, || {
                if list.engines.is_empty() {
                    return "No engines.\n".to_owned();
                }
                let rows: Vec<Vec<String>> = list
                    .engines
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.to_string(),
                            clean(&e.system),
                            e.environment.to_string(),
                            clean(&e.connection_url),
                        ]
                    })
                    .collect();
                table(&["NAME", "SYSTEM", "ENVIRONMENT", "CONNECTION"], &rows)
            })
        }
        EngineCommand::Role(RoleCommand::Add {
            engine,
            role,
            grants,
            max_ttl,
            reassign_to,
        }) => {
            let text = std::fs::read_to_string(&grants)
                .with_context(|| format!("cannot read the grants from {}", grants.display()))?;
            let cleanup = reassign_to
                .map(|to| {
                    SqlIdent::new(&to)
                        .map(|to| Cleanup::Reassign { to })
                        .map_err(|e| anyhow::anyhow!("--reassign-to: {e}"))
                })
                .transpose()?;
            let request = AddRoleRequest {
                name: role,
                grants: text,
                max_ttl_s: max_ttl,
                cleanup,
            };
            let template = client.add_engine_role(&engine, &request).await?;
            print(opts.output, &serde_json::to_value(&template)?, || {
                render_roles(&RoleList {
                    roles: vec![template.clone()],
                })
            })
        }
        EngineCommand::Role(RoleCommand::List { engine }) => {
            let list = client.engine_roles(&engine).await?;
            print(opts.output, &serde_json::to_value(&list)?, || {
                render_roles(&list)
            })
        }
    }
}

/// Runs one `aims lease` command.
pub async fn run_lease(opts: &ClientOpts, cmd: LeaseCommand) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        LeaseCommand::Create {
            engine,
            role,
            token_file,
            key,
            ttl,
        } => {
            let token = read_credential(&token_file, "access token", Some("access_token"))?;
            let key = read_key(&key)?;
            let request = LeaseRequest {
                engine,
                role,
                ttl_s: ttl,
            };
            let granted = opts.token_client()?.lease(&token, &key, &request).await?;
            print(opts.output, &serde_json::to_value(&granted)?, || {
                render_granted(&granted, now)
            })
        }
        LeaseCommand::Renew {
            id,
            token_file,
            key,
            ttl,
        } => {
            let token = read_credential(&token_file, "access token", Some("access_token"))?;
            let key = read_key(&key)?;
            let view = opts
                .token_client()?
                .renew_lease(&token, &key, &id, &RenewLeaseRequest { ttl_s: ttl })
                .await?;
            show(opts, &view, now)
        }
        LeaseCommand::List { agent } => {
            let list = opts.client()?.leases(agent.as_ref()).await?;
            print(opts.output, &serde_json::to_value(&list)?, || {
                render_list(&list, now)
            })
        }
        LeaseCommand::Show { id } => show(opts, &opts.client()?.lease(&id).await?, now),
        LeaseCommand::Revoke {
            id,
            reason,
            token_file,
            key,
        } => {
            let request = RevokeLeaseRequest { reason };
            let view = match (token_file, key) {
                (Some(token_file), Some(key)) => {
                    let token = read_credential(&token_file, "access token", Some("access_token"))?;
                    let key = read_key(&key)?;
                    opts.token_client()?
                        .revoke_lease(&token, &key, &id, &request)
                        .await?
                }
                _ => opts.client()?.revoke_lease(&id, &request).await?,
            };
            show(opts, &view, now)
        }
    }
}

fn show(opts: &ClientOpts, view: &LeaseView, now: OffsetDateTime) -> anyhow::Result<()> {
    print(opts.output, &serde_json::to_value(view)?, || {
        render_lease(view, now)
    })
}

fn render_engine(engine: &Engine) -> String {
    fields(&[
        ("Engine", engine.name.to_string()),
        ("Connection", clean(&engine.connection_url)),
        (
            "Admin secret",
            engine
                .admin_secret
                .as_ref()
                .map_or_else(|| "none".to_owned(), ToString::to_string),
        ),
        ("System", clean(&engine.system)),
        ("Environment", engine.environment.to_string()),
        ("Sensitivity", clean(&engine.sensitivity)),
    ])
}

fn render_roles(list: &RoleList) -> String {
    if list.roles.is_empty() {
        return "No role templates.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .roles
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                format!("{} s", r.max_ttl_s),
                r.grants
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    table(&["ROLE", "MAX TTL", "GRANTS"], &rows)
}

/// The answer to `aims lease create`: the connection parameters, the password this once.
fn render_granted(granted: &LeaseGranted, now: OffsetDateTime) -> String {
    fields(&[
        ("Lease", granted.lease_id.clone()),
        ("Engine", format!("{} / {}", granted.engine, granted.role)),
        ("Host", format!("{}:{}", clean(&granted.host), granted.port)),
        ("Database", clean(&granted.database)),
        ("Username", granted.username.clone()),
        ("Password", granted.password.clone()),
        (
            "Expires",
            format!(
                "{} ({})",
                timestamp(granted.expires_at),
                relative(granted.expires_at, now)
            ),
        ),
    ])
}

fn render_lease(view: &LeaseView, now: OffsetDateTime) -> String {
    let mut lines = vec![
        ("Lease", view.id.clone()),
        ("State", view.state.clone()),
        ("Engine", format!("{} / {}", view.engine, view.role)),
        ("Database role", view.db_role.clone()),
        ("Agent", view.agent.to_string()),
        ("Issued", timestamp(view.issued_at)),
        (
            "Expires",
            format!(
                "{} ({})",
                timestamp(view.expires_at),
                relative(view.expires_at, now)
            ),
        ),
    ];
    if let Some(task) = &view.task_id {
        lines.push(("Task", task.clone()));
    }
    if let Some(at) = view.revoked_at {
        lines.push(("Revoked", timestamp(at)));
    }
    if let Some(at) = view.ended_at {
        lines.push(("Role ended", timestamp(at)));
    }
    if let Some(error) = &view.last_error {
        lines.push((
            "Last error",
            format!("{} ({} attempts)", clean(error), view.attempts),
        ));
    }
    fields(&lines)
}

fn render_list(list: &LeaseList, now: OffsetDateTime) -> String {
    if list.leases.is_empty() {
        return "No leases.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .leases
        .iter()
        .map(|l| {
            vec![
                l.id.clone(),
                l.agent.to_string(),
                format!("{}/{}", l.engine, l.role),
                l.state.clone(),
                relative(l.expires_at, now),
            ]
        })
        .collect();
    table(&["LEASE", "AGENT", "ROLE", "STATE", "EXPIRES"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("300"), Ok(300));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("2h"), Ok(7200));
        for bad in ["", "m", "1d", "-5", "1.5h", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
