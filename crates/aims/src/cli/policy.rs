//! `aims policy …`: test a policy directory locally, push it as the next active version, and
//! show the version in force.
//!
//! A directory holds `*.cedar` policies, at most one `*.cedarschema` (default: the AIMS schema)
//! and `*.test.json` policy tests (format in `aims-policy`'s `testcases` module). `push` runs
//! the tests first and pushes nothing if one fails; the server then compiles the set again in
//! strict mode before it activates it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aims_api::PushPolicyRequest;
use anyhow::{Context as _, bail};

use super::output::{self, fields};
use super::{ClientOpts, Output};

/// Policy sets: test, push, show.
#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Compile the directory (strict validation) and run its *.test.json cases, locally.
    Test {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Test the directory, then push it as the next active version.
    Push {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Show the policy version in force on the server.
    Show,
}

/// Runs `aims policy …`.
pub async fn run_policy(opts: &ClientOpts, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Test { dir } => {
            let report = test_dir(&dir)?;
            let json = serde_json::json!({ "ok": report.ok(), "summary": report.summary() });
            output::print(opts.output, &json, || {
                format!("{}\n", report.summary().trim_end())
            })?;
            if !report.ok() {
                bail!("policy tests failed");
            }
            Ok(())
        }
        PolicyCommand::Push { dir } => {
            let report = test_dir(&dir)?;
            if !report.ok() {
                eprintln!("{}", report.summary().trim_end());
                bail!("policy tests failed; nothing was pushed");
            }
            if opts.output == Output::Text {
                eprintln!("{}", report.summary().trim_end());
            }
            let files = read_files(&dir)?;
            let pushed = opts
                .client()?
                .push_policies(&PushPolicyRequest { files })
                .await?;
            output::print(opts.output, &serde_json::to_value(&pushed)?, || {
                format!(
                    "Activated policy version {} ({} policies).\n",
                    pushed.version, pushed.policies
                )
            })
        }
        PolicyCommand::Show => {
            let active = opts.client()?.active_policies().await?;
            output::print(opts.output, &serde_json::to_value(&active)?, || {
                fields(&[
                    ("Version", active.version.to_string()),
                    ("Policies", active.policy_ids.join(", ")),
                    ("Files", active.files.join(", ")),
                ])
            })
        }
    }
}

fn test_dir(dir: &Path) -> anyhow::Result<aims_policy::TestReport> {
    aims_policy::run_tests(dir).with_context(|| format!("{}", dir.display()))
}

/// The files a push sends: policies, schema and tests, by file name.
fn read_files(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if [".cedar", ".cedarschema", ".test.json"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
            files.insert(name, text);
        }
    }
    if files.is_empty() {
        bail!("{}: no *.cedar files", dir.display());
    }
    Ok(files)
}
