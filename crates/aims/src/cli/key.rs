//! `aims key …`: list the signing keys and rotate them.
//!
//! This module maps the commands onto `/v1/keys` and renders key metadata. Only public key
//! information ever reaches the client; rotation itself happens on the server.

use aims_api::KeyList;

use super::ClientOpts;
use super::output::{print, table, timestamp};

/// Signing key commands.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Rotate the signing keys: next becomes current, current becomes previous, a new next key
    /// is generated.
    Rotate,
    /// List the signing keys and their states.
    List,
}

/// Runs one `aims key` command.
pub async fn run_key(opts: &ClientOpts, cmd: KeyCommand) -> anyhow::Result<()> {
    let client = opts.client()?;
    let (keys, rotated) = match cmd {
        KeyCommand::Rotate => (client.rotate_keys().await?, true),
        KeyCommand::List => (client.keys().await?, false),
    };
    print(opts.output, &serde_json::to_value(&keys)?, || {
        render_keys(&keys, rotated)
    })
}

/// The key list, after a heading that says whether keys were just rotated.
fn render_keys(list: &KeyList, rotated: bool) -> String {
    let heading = if rotated {
        format!(
            "Rotated signing keys; bundle sequence is now {}.\n",
            list.sequence
        )
    } else {
        format!("Bundle sequence {}.\n", list.sequence)
    };
    let rows: Vec<Vec<String>> = list
        .keys
        .iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                k.alg.clone(),
                k.state.clone(),
                timestamp(k.created_at),
            ]
        })
        .collect();
    format!(
        "{heading}{}",
        table(&["KID", "ALG", "STATE", "CREATED"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use aims_api::KeyView;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn keys_render_as_a_table() {
        let list = KeyList {
            sequence: 4,
            keys: vec![
                KeyView {
                    kid: "k-next".into(),
                    alg: "ES256".into(),
                    state: "next".into(),
                    created_at: datetime!(2025-03-01 00:00 UTC),
                },
                KeyView {
                    kid: "k-current".into(),
                    alg: "ES256".into(),
                    state: "current".into(),
                    created_at: datetime!(2025-02-01 00:00 UTC),
                },
            ],
        };
        assert_eq!(
            render_keys(&list, false),
            "Bundle sequence 4.\n\
             KID        ALG    STATE    CREATED\n\
             k-next     ES256  next     2025-03-01T00:00:00Z\n\
             k-current  ES256  current  2025-02-01T00:00:00Z\n"
        );
        assert!(
            render_keys(&list, true).starts_with("Rotated signing keys; bundle sequence is now 4.")
        );
    }
}
