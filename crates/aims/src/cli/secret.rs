//! `aims secret …`: admins store, list, show, rotate and delete brokered secrets.
//!
//! Values are read from a file or stdin (`-`), never from the command line, where other users
//! could read them in the process list, and are never printed: list and show describe a
//! secret (version, readers, rotation) without its value.

use std::path::PathBuf;

use aims_api::secrets::{PutSecretRequest, RotateSecretRequest, SecretList, SecretView};
use aims_core::id::{ResourceServerName, SecretName};
use time::OffsetDateTime;

use super::ClientOpts;
use super::output::{clean, fields, print, relative, table, timestamp};
use super::token::read_credential;

/// Secret commands.
#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a new secret; only the resource servers named with --reader read its value.
    Put {
        /// Secret name (letters, digits, . - _).
        name: SecretName,
        /// File holding the value, or - for stdin.
        #[arg(long, value_name = "FILE")]
        value_file: PathBuf,
        /// A resource server (e.g. a gateway) that may read the value; repeat for more.
        #[arg(long = "reader", value_name = "RESOURCE_SERVER", required = true)]
        readers: Vec<ResourceServerName>,
        /// Rotate it every this many days (shown as overdue after).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=732))]
        rotate_every_days: Option<u64>,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// List secrets (never their values).
    List,
    /// Show one secret (never its value).
    Show {
        /// Secret name.
        name: SecretName,
    },
    /// Store a new value as the current version.
    Rotate {
        /// Secret name.
        name: SecretName,
        /// File holding the new value, or - for stdin.
        #[arg(long, value_name = "FILE")]
        value_file: PathBuf,
    },
    /// Delete a secret and every version of its value.
    Delete {
        /// Secret name.
        name: SecretName,
    },
}

/// Runs one `aims secret` command.
pub async fn run_secret(opts: &ClientOpts, cmd: SecretCommand) -> anyhow::Result<()> {
    let client = opts.client()?;
    let now = OffsetDateTime::now_utc();
    match cmd {
        SecretCommand::Put {
            name,
            value_file,
            readers,
            rotate_every_days,
            description,
        } => {
            let value = read_credential(&value_file, "secret value", None)?;
            let request = PutSecretRequest {
                name,
                value,
                readers,
                rotation_period_s: rotate_every_days.map(|days| days * 86_400),
                description,
            };
            let stored = client.put_secret(&request).await?;
            show(opts, &stored, now)
        }
        SecretCommand::List => {
            let list = client.secrets().await?;
            print(opts.output, &serde_json::to_value(&list)?, || {
                render_list(&list, now)
            })
        }
        SecretCommand::Show { name } => show(opts, &client.secret(&name).await?, now),
        SecretCommand::Rotate { name, value_file } => {
            let value = read_credential(&value_file, "secret value", None)?;
            let rotated = client
                .rotate_secret(&name, &RotateSecretRequest { value })
                .await?;
            show(opts, &rotated, now)
        }
        SecretCommand::Delete { name } => {
            client.delete_secret(&name).await?;
            print(opts.output, &serde_json::json!({ "deleted": name }), || {
                format!("Deleted secret {name} and every version of its value.\n")
            })
        }
    }
}

fn show(opts: &ClientOpts, view: &SecretView, now: OffsetDateTime) -> anyhow::Result<()> {
    print(opts.output, &serde_json::to_value(view)?, || {
        render_secret(view, now)
    })
}

/// When rotation is due, in words.
fn rotation(view: &SecretView, now: OffsetDateTime) -> String {
    match view.rotation_due_at {
        None => "no period".to_owned(),
        Some(due) if view.rotation_overdue => format!("OVERDUE since {}", timestamp(due)),
        Some(due) => format!("due {} ({})", timestamp(due), relative(due, now)),
    }
}

/// `aims secret list` as a table.
fn render_list(list: &SecretList, now: OffsetDateTime) -> String {
    if list.secrets.is_empty() {
        return "No secrets.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .secrets
        .iter()
        .map(|s| {
            vec![
                s.secret.name.to_string(),
                s.secret.version.to_string(),
                readers(s),
                rotation(s, now),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "READERS", "ROTATION"], &rows)
}

fn readers(view: &SecretView) -> String {
    view.secret
        .readers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `aims secret show` as `label  value` lines.
fn render_secret(view: &SecretView, now: OffsetDateTime) -> String {
    let secret = &view.secret;
    fields(&[
        ("Secret", secret.name.to_string()),
        ("Version", secret.version.to_string()),
        ("Readers", readers(view)),
        ("Rotation", rotation(view, now)),
        (
            "Description",
            secret
                .description
                .as_deref()
                .map_or_else(|| "-".to_owned(), clean),
        ),
        (
            "Created",
            format!("{} by {}", timestamp(secret.created_at), secret.created_by),
        ),
        ("Rotated", timestamp(secret.rotated_at)),
        ("Value", "never shown; only its readers read it".to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use aims_core::id::UserName;
    use aims_core::secret::Secret;
    use clap::{CommandFactory, Parser};
    use time::macros::datetime;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: SecretCommand,
    }

    #[test]
    fn values_come_from_files_and_readers_are_required() {
        Cli::command().debug_assert();
        let cmd = Cli::try_parse_from([
            "secret",
            "put",
            "gh",
            "--value-file",
            "-",
            "--reader",
            "gateway",
            "--rotate-every-days",
            "30",
        ])
        .unwrap()
        .cmd;
        assert!(matches!(
            cmd,
            SecretCommand::Put {
                rotate_every_days: Some(30),
                ..
            }
        ));
        assert!(Cli::try_parse_from(["secret", "put", "gh", "--value-file", "-"]).is_err());
        assert!(
            Cli::try_parse_from(["secret", "put", "gh", "--value", "x", "--reader", "g"]).is_err()
        );
        assert!(Cli::try_parse_from(["secret", "show", "a/b"]).is_err());
    }

    #[test]
    fn a_secret_renders_without_its_value() {
        let now = datetime!(2026-03-10 00:00 UTC);
        let secret = Secret {
            name: SecretName::new("gh").unwrap(),
            version: 3,
            description: Some("deploy token".into()),
            readers: vec![ResourceServerName::new("gateway").unwrap()],
            rotation_period_s: Some(30 * 86_400),
            created_by: UserName::new("admin").unwrap(),
            created_at: datetime!(2026-01-01 00:00 UTC),
            rotated_at: datetime!(2026-02-01 00:00 UTC),
        };
        let view = SecretView::of(secret, now);
        let text = render_secret(&view, now);
        assert!(
            text.contains("OVERDUE since 2026-03-03T00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("gateway"), "{text}");
        let list = render_list(
            &SecretList {
                secrets: vec![view],
            },
            now,
        );
        assert!(list.starts_with("NAME"), "{list}");
    }
}
