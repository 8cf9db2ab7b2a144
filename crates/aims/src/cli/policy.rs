//! `aims policy …`: test or validate a policy directory locally, push it as the next active
//! version, list, diff and roll back stored versions, show the version in force, and explain
//! how it answers an agent's request.
//!
//! A directory holds `*.cedar` policies, at most one `*.cedarschema` (default: the AIMS schema)
//! and `*.test.json` policy tests (format in `aims-policy`'s `testcases` module). `push` runs
//! the tests first and pushes nothing if one fails (a directory without tests is pushed, with
//! a warning that nothing was tested); the server then compiles the set again in strict mode
//! before it activates it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aims_api::{DecideRequest, ExplainRequest, PushPolicyRequest};
use aims_core::id::AgentName;
use anyhow::{Context as _, bail};

use super::output::{self, fields};
use super::{ClientOpts, Output};

/// Policy sets: test, validate, push, show, list, diff, rollback, explain.
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
    /// Compile the directory in strict mode, locally, without running its tests.
    Validate {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Show the policy version in force on the server.
    Show,
    /// List the stored policy versions, newest first.
    List,
    /// Activate an older version's files again, as a new version.
    Rollback {
        /// The version to bring back.
        version: u64,
    },
    /// Show what changed between two stored versions, file by file.
    Diff {
        /// The older version.
        from: u64,
        /// The newer version.
        to: u64,
    },
    /// Explain how the active policies answer a registered agent's request: which policies
    /// the index selected or skipped, which matched, which conditions were false or errored.
    Explain {
        /// The agent making the request.
        #[arg(long)]
        agent: AgentName,
        /// The action, e.g. read, write, call_tool, export_secret.
        #[arg(long)]
        action: String,
        /// The resource as JSON (`{"type":"Resource","id":…,"system":…,"environment":…,
        /// "sensitivity":…,"kind":…}`).
        #[arg(long)]
        resource: String,
    },
}

/// Runs `aims policy …`.
pub async fn run_policy(opts: &ClientOpts, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Test { dir } => {
            let report = test_dir(&dir)?;
            if report.is_empty() {
                bail!(
                    "{}: no policy tests to run (no *.test.json cases); \
                     `aims policy validate` compiles a directory without tests",
                    dir.display()
                );
            }
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
            if report.is_empty() {
                // Said even with JSON output: pushing untested policies should not go unnoticed.
                eprintln!(
                    "warning: {} has no policy tests (no *.test.json cases); \
                     pushing it untested",
                    dir.display()
                );
            } else if !report.ok() {
                eprintln!("{}", report.summary().trim_end());
                bail!("policy tests failed; nothing was pushed");
            } else if opts.output == Output::Text {
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
        PolicyCommand::Validate { dir } => {
            let engine = aims_policy::Engine::from_dir(&dir)
                .with_context(|| format!("{}", dir.display()))?;
            let json = serde_json::json!({ "policies": engine.len() });
            output::print(opts.output, &json, || {
                format!("{}: {} policies compile.\n", dir.display(), engine.len())
            })
        }
        PolicyCommand::Explain {
            agent,
            action,
            resource,
        } => {
            let resource = serde_json::from_str(&resource).context("--resource is not JSON")?;
            let request = ExplainRequest {
                agent,
                request: DecideRequest {
                    action,
                    resource,
                    task_id: String::new(),
                    intent: String::new(),
                    arguments: serde_json::Map::new(),
                },
            };
            let explanation = opts.client()?.explain(&request).await?;
            output::print(opts.output, &explanation, || {
                render_explanation(&explanation)
            })
        }
        PolicyCommand::List => {
            let list = opts.client()?.policy_versions().await?;
            output::print(opts.output, &serde_json::to_value(&list)?, || {
                let rows: Vec<Vec<String>> = list
                    .versions
                    .iter()
                    .map(|v| {
                        vec![
                            if v.version == list.active_version {
                                format!("{} *", v.version)
                            } else {
                                v.version.to_string()
                            },
                            output::clean(&v.created_by),
                            output::timestamp(v.created_at),
                            v.files.join(", "),
                        ]
                    })
                    .collect();
                output::table(&["VERSION", "BY", "CREATED", "FILES"], &rows)
            })
        }
        PolicyCommand::Rollback { version } => {
            let pushed = opts.client()?.rollback_policies(version).await?;
            output::print(opts.output, &serde_json::to_value(&pushed)?, || {
                format!(
                    "Activated the files of version {version} as version {} ({} policies).\n",
                    pushed.version, pushed.policies
                )
            })
        }
        PolicyCommand::Diff { from, to } => {
            let client = opts.client()?;
            let (old, new) = (
                client.policy_version(from).await?,
                client.policy_version(to).await?,
            );
            let changes = diff_files(&old.files, &new.files);
            let json = serde_json::json!({ "from": from, "to": to, "diff": changes });
            output::print(opts.output, &json, || {
                if changes.is_empty() {
                    format!("versions {from} and {to} are identical\n")
                } else {
                    changes.clone()
                }
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

/// One line per candidate policy, then the decision.
fn render_explanation(explanation: &serde_json::Value) -> String {
    let field = |v: &serde_json::Value, k: &str| output::str_field(v, k);
    let mut out = String::new();
    for trace in explanation["candidates"].as_array().into_iter().flatten() {
        let detail = ["part", "message"]
            .iter()
            .map(|k| field(trace, k))
            .find(|d| !d.is_empty())
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<8} {:<40} {}{detail}\n",
            field(trace, "effect"),
            field(trace, "policy_id"),
            field(trace, "status")
        ));
    }
    let skipped = explanation["skipped_by_index"]
        .as_array()
        .map_or(0, Vec::len);
    out.push_str(&format!("{skipped} policies skipped by the index\n"));
    let decision = &explanation["decision"];
    out.push_str(&format!(
        "decision: {} ({})\n",
        field(decision, "effect"),
        field(decision, "reason")
    ));
    out
}

/// A line-level difference per file: `--- file` / `+++ file` headers, then lines only in the
/// old version (`-`) and lines only in the new one (`+`), in file order.
fn diff_files(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let (a, b) = (old.get(name), new.get(name));
        if a == b {
            continue;
        }
        out.push_str(&format!("--- {name}\n+++ {name}\n"));
        let a_lines: Vec<&str> = a.map(|t| t.lines().collect()).unwrap_or_default();
        let b_lines: Vec<&str> = b.map(|t| t.lines().collect()).unwrap_or_default();
        for line in a_lines.iter().filter(|l| !b_lines.contains(l)) {
            out.push_str(&format!("-{line}\n"));
        }
        for line in b_lines.iter().filter(|l| !a_lines.contains(l)) {
            out.push_str(&format!("+{line}\n"));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_changed_added_and_removed_files() {
        let old: BTreeMap<String, String> = [
            ("a.cedar".to_owned(), "one\ntwo\n".to_owned()),
            ("gone.cedar".to_owned(), "x\n".to_owned()),
            ("same.cedar".to_owned(), "s\n".to_owned()),
        ]
        .into();
        let new: BTreeMap<String, String> = [
            ("a.cedar".to_owned(), "one\nthree\n".to_owned()),
            ("new.cedar".to_owned(), "y\n".to_owned()),
            ("same.cedar".to_owned(), "s\n".to_owned()),
        ]
        .into();
        let diff = diff_files(&old, &new);
        assert_eq!(
            diff,
            "--- a.cedar\n+++ a.cedar\n-two\n+three\n--- gone.cedar\n+++ gone.cedar\n-x\n--- new.cedar\n+++ new.cedar\n+y\n"
        );
        assert!(diff_files(&old, &old).is_empty());
    }
}
