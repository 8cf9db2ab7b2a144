//! `aims resource-server …`: register, list, show and remove the resource servers (tool
//! servers, enforcement points) task tokens are issued for.
//!
//! This module maps the commands onto `/v1/resource-servers` and renders them as text. It shows
//! a new client secret exactly once, as the server returns it, and never stores it; whether a
//! registration is valid is the server's to decide.

use aims_api::oauth::{
    RegisterResourceServerRequest, ResourceServerList, ResourceServerRegistered, ResourceServerView,
};
use aims_core::id::{Environment, ResourceServerName};

use super::ClientOpts;
use super::output::{fields, print, table, timestamp};

/// Resource-server commands.
#[derive(clap::Subcommand, Debug)]
pub enum ResourceServerCommand {
    /// Register a resource server and print its one-time client secret.
    Add {
        /// Unique name; also its client id at introspection and the revocation feed.
        name: ResourceServerName,
        /// The audience URI tokens for it carry (http(s):// or spiffe://).
        #[arg(long, value_name = "URI")]
        audience: String,
        /// The system its tools belong to, as policies name it (e.g. github).
        #[arg(long)]
        system: String,
        /// The environment of its data (default: dev).
        #[arg(long, visible_alias = "env", value_name = "ENV")]
        environment: Option<Environment>,
        /// The sensitivity of its data (default: internal).
        #[arg(long, value_name = "LEVEL")]
        sensitivity: Option<String>,
    },
    /// List resource servers.
    List,
    /// Show one resource server.
    Show {
        /// Resource-server name.
        name: ResourceServerName,
    },
    /// Remove a resource server; tokens already issued for it simply expire.
    Remove {
        /// Resource-server name.
        name: ResourceServerName,
    },
}

/// Runs one `aims resource-server` command.
pub async fn run_resource_server(
    opts: &ClientOpts,
    cmd: ResourceServerCommand,
) -> anyhow::Result<()> {
    let client = opts.client()?;
    match cmd {
        ResourceServerCommand::Add {
            name,
            audience,
            system,
            environment,
            sensitivity,
        } => {
            let request = RegisterResourceServerRequest {
                name,
                audience,
                system,
                environment,
                sensitivity,
            };
            let registered = client.register_resource_server(&request).await?;
            print(opts.output, &serde_json::to_value(&registered)?, || {
                render_registered(&registered)
            })
        }
        ResourceServerCommand::List => {
            let list = client.resource_servers().await?;
            print(opts.output, &serde_json::to_value(&list)?, || {
                render_list(&list)
            })
        }
        ResourceServerCommand::Show { name } => {
            let server = client.resource_server(&name).await?;
            print(opts.output, &serde_json::to_value(&server)?, || {
                render_server(&server)
            })
        }
        ResourceServerCommand::Remove { name } => {
            client.remove_resource_server(&name).await?;
            // The server answers 204 without a body; JSON output still gets an object.
            let json = serde_json::json!({ "removed": name.as_str() });
            print(opts.output, &json, || {
                format!("Removed resource server {name}.\n")
            })
        }
    }
}

/// The text shown after `add`: the server, its client id and the secret, once.
fn render_registered(registered: &ResourceServerRegistered) -> String {
    let server = &registered.resource_server;
    format!(
        "Registered resource server {} (audience {}, system {}).\n{}\
         The secret is shown only once: store it for the resource server, which authenticates \
         with it (HTTP Basic) to introspect tokens and follow the revocation feed.\n",
        server.name,
        super::output::clean(&server.audience),
        super::output::clean(&server.system),
        fields(&[
            ("Client ID", server.name.to_string()),
            ("Client secret", registered.client_secret.clone()),
        ])
    )
}

/// `aims resource-server list` as a table.
fn render_list(list: &ResourceServerList) -> String {
    if list.resource_servers.is_empty() {
        return "No resource servers.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .resource_servers
        .iter()
        .map(|s| {
            vec![
                s.name.to_string(),
                s.audience.clone(),
                s.system.clone(),
                s.environment.to_string(),
                s.sensitivity.clone(),
                timestamp(s.created_at),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "AUDIENCE",
            "SYSTEM",
            "ENV",
            "SENSITIVITY",
            "CREATED",
        ],
        &rows,
    )
}

/// `aims resource-server show` as `label  value` lines.
fn render_server(server: &ResourceServerView) -> String {
    fields(&[
        ("Name", server.name.to_string()),
        ("Audience", server.audience.clone()),
        ("System", server.system.clone()),
        ("Environment", server.environment.to_string()),
        ("Sensitivity", server.sensitivity.clone()),
        ("Created by", server.created_by.clone()),
        ("Created", timestamp(server.created_at)),
    ])
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use time::macros::datetime;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: ResourceServerCommand,
    }

    fn server() -> ResourceServerView {
        ResourceServerView {
            name: ResourceServerName::new("repo-tools").unwrap(),
            audience: "https://tools.acme.example/repo".into(),
            system: "github".into(),
            environment: Environment::new("prod").unwrap(),
            sensitivity: "internal".into(),
            created_by: "admin".into(),
            created_at: datetime!(2025-01-01 00:00 UTC),
        }
    }

    #[test]
    fn add_takes_the_registration_fields() {
        Cli::command().debug_assert();
        let cmd = Cli::try_parse_from([
            "rs",
            "add",
            "repo-tools",
            "--audience",
            "https://tools.acme.example/repo",
            "--system",
            "github",
            "--env",
            "prod",
        ])
        .unwrap()
        .cmd;
        let ResourceServerCommand::Add {
            name, environment, ..
        } = cmd
        else {
            panic!("not add: {cmd:?}");
        };
        assert_eq!(name.as_str(), "repo-tools");
        assert_eq!(environment.unwrap().as_str(), "prod");
        assert!(Cli::try_parse_from(["rs", "add", "x", "--system", "github"]).is_err());
        assert!(
            Cli::try_parse_from(["rs", "add", "../x", "--audience", "a", "--system", "s"]).is_err()
        );
    }

    #[test]
    fn the_secret_is_shown_once_with_a_warning() {
        let registered = ResourceServerRegistered {
            resource_server: server(),
            client_secret: "aims_r_xyz".into(),
        };
        let text = render_registered(&registered);
        assert!(
            text.starts_with(
                "Registered resource server repo-tools (audience https://tools.acme.example/repo, \
                 system github).\n\
                 Client ID      repo-tools\n\
                 Client secret  aims_r_xyz\n\
                 The secret is shown only once"
            ),
            "{text}"
        );
    }

    #[test]
    fn servers_render_as_a_table_and_fields() {
        let list = ResourceServerList {
            resource_servers: vec![server()],
        };
        assert_eq!(
            render_list(&list),
            "NAME        AUDIENCE                         SYSTEM  ENV   SENSITIVITY  CREATED\n\
             repo-tools  https://tools.acme.example/repo  github  prod  internal     2025-01-01T00:00:00Z\n"
        );
        assert_eq!(
            render_list(&ResourceServerList {
                resource_servers: vec![]
            }),
            "No resource servers.\n"
        );
        assert!(render_server(&server()).contains("Created by   admin\n"));
    }
}
