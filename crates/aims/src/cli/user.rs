//! `aims user …`: add, list, remove human principals and rotate their API tokens.
//!
//! This module maps the commands onto the `/v1/users` API and renders users as text. It shows
//! a newly issued API token exactly once, as the server returns it, and never stores it.

use aims_api::{AddUserRequest, UserCredential, UserList};
use aims_core::id::UserName;
use aims_core::user::Role;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use super::ClientOpts;
use super::output::{fields, print, table, timestamp};

/// Human principal commands.
#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user and print their one-time API token.
    Add {
        /// Unique user name (lowercase letters, digits, '-', '_', '.').
        name: UserName,
        /// What the user may do.
        #[arg(long, value_parser = role_parser())]
        role: Role,
    },
    /// List users.
    List,
    /// Remove a user; their API token stops working.
    Remove {
        /// User name.
        name: UserName,
    },
    /// Issue a new API token for a user; the old one stops working.
    Rotate {
        /// User name.
        name: UserName,
    },
}

/// Runs one `aims user` command.
pub async fn run_user(opts: &ClientOpts, cmd: UserCommand) -> anyhow::Result<()> {
    let client = opts.client()?;
    match cmd {
        UserCommand::Add { name, role } => {
            let credential = client.add_user(&AddUserRequest { name, role }).await?;
            print(opts.output, &serde_json::to_value(&credential)?, || {
                render_credential(&credential, true)
            })
        }
        UserCommand::List => {
            let users = client.users().await?;
            print(opts.output, &serde_json::to_value(&users)?, || {
                render_users(&users)
            })
        }
        UserCommand::Remove { name } => {
            client.remove_user(&name).await?;
            // The server answers 204 without a body; JSON output still gets an object.
            let json = serde_json::json!({ "removed": name.as_str() });
            print(opts.output, &json, || format!("Removed user {name}.\n"))
        }
        UserCommand::Rotate { name } => {
            let credential = client.rotate_user(&name).await?;
            print(opts.output, &serde_json::to_value(&credential)?, || {
                render_credential(&credential, false)
            })
        }
    }
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(["admin", "approver", "auditor"])
        .try_map(|s| Role::parse(&s).ok_or_else(|| format!("unknown role {s:?}")))
}

/// The text shown after `add` (`added`) or `rotate`.
fn render_credential(credential: &UserCredential, added: bool) -> String {
    let user = &credential.user;
    let heading = if added {
        format!("Added user {} ({}).\n", user.name, user.role)
    } else {
        format!(
            "New API token for user {}; the old one no longer works.\n",
            user.name
        )
    };
    format!(
        "{heading}{}The token is shown only once: hand it to {} to use as AIMS_TOKEN.\n",
        fields(&[("API token", credential.token.clone())]),
        user.name
    )
}

/// `aims user list` as a table.
fn render_users(list: &UserList) -> String {
    if list.users.is_empty() {
        return "No users.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .users
        .iter()
        .map(|u| {
            vec![
                u.name.to_string(),
                u.role.to_string(),
                timestamp(u.created_at),
                timestamp(u.credential_rotated_at),
            ]
        })
        .collect();
    table(&["NAME", "ROLE", "CREATED", "TOKEN_ISSUED"], &rows)
}

#[cfg(test)]
mod tests {
    use aims_core::user::User;
    use clap::{CommandFactory, Parser};
    use time::macros::datetime;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: UserCommand,
    }

    fn user(name: &str, role: Role) -> User {
        User {
            name: UserName::new(name).unwrap(),
            role,
            created_at: datetime!(2025-01-01 00:00 UTC),
            credential_rotated_at: datetime!(2025-02-01 12:00 UTC),
        }
    }

    #[test]
    fn roles_parse_from_their_wire_names() {
        Cli::command().debug_assert();
        let cmd = Cli::try_parse_from(["user", "add", "bob", "--role", "approver"])
            .unwrap()
            .cmd;
        let UserCommand::Add { name, role } = cmd else {
            panic!("not add: {cmd:?}");
        };
        assert_eq!((name.as_str(), role), ("bob", Role::Approver));
        assert!(Cli::try_parse_from(["user", "add", "bob", "--role", "root"]).is_err());
        assert!(Cli::try_parse_from(["user", "add", "bob"]).is_err());
        assert!(Cli::try_parse_from(["user", "add", "Bob", "--role", "admin"]).is_err());
    }

    #[test]
    fn credentials_render_once_with_a_warning() {
        let credential = UserCredential {
            user: user("bob", Role::Auditor),
            token: "aims_u_xyz".into(),
        };
        assert_eq!(
            render_credential(&credential, true),
            "Added user bob (auditor).\n\
             API token  aims_u_xyz\n\
             The token is shown only once: hand it to bob to use as AIMS_TOKEN.\n"
        );
        assert!(render_credential(&credential, false).starts_with("New API token for user bob"));
    }

    #[test]
    fn users_render_as_a_table() {
        let list = UserList {
            users: vec![user("admin", Role::Admin), user("bob", Role::Auditor)],
        };
        assert_eq!(
            render_users(&list),
            "NAME   ROLE     CREATED               TOKEN_ISSUED\n\
             admin  admin    2025-01-01T00:00:00Z  2025-02-01T12:00:00Z\n\
             bob    auditor  2025-01-01T00:00:00Z  2025-02-01T12:00:00Z\n"
        );
        assert_eq!(render_users(&UserList { users: vec![] }), "No users.\n");
    }
}
