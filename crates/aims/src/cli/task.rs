//! `aims task …`: list, show and end tasks (operators).
//!
//! This module maps the commands onto `/v1/tasks` and renders tasks as text. Tasks are created
//! by agents (their first token exchange); ending one revokes every token issued for it on the
//! server, and this module only reports how many were revoked.

use aims_api::oauth::{TaskEnded, TaskList, TaskView};
use aims_core::id::AgentName;
use aims_core::task::TaskState;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use time::OffsetDateTime;

use super::ClientOpts;
use super::output::{fields, print, relative, table, timestamp};

/// Task commands.
#[derive(clap::Subcommand, Debug)]
pub enum TaskCommand {
    /// List tasks, newest first.
    List {
        /// Only this agent's tasks.
        #[arg(long, value_name = "NAME")]
        agent: Option<AgentName>,
        /// Only tasks in this state.
        #[arg(long, value_parser = state_parser())]
        state: Option<TaskState>,
        /// Show at most this many tasks (server default: 100).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Show one task.
    Show {
        /// Task id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// End a task: every token issued for it, delegated ones included, is revoked.
    End {
        /// Task id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

/// Runs one `aims task` command.
pub async fn run_task(opts: &ClientOpts, cmd: TaskCommand) -> anyhow::Result<()> {
    let client = opts.client()?;
    let now = OffsetDateTime::now_utc();
    match cmd {
        TaskCommand::List {
            agent,
            state,
            limit,
        } => {
            let list = client.tasks(agent.as_ref(), state, limit).await?;
            print(opts.output, &serde_json::to_value(&list)?, || {
                render_tasks(&list)
            })
        }
        TaskCommand::Show { id } => {
            let task = client.task(&id).await?;
            print(opts.output, &serde_json::to_value(&task)?, || {
                render_task(&task, now)
            })
        }
        TaskCommand::End { id } => {
            let ended = client.end_task(&id).await?;
            print(opts.output, &serde_json::to_value(&ended)?, || {
                render_ended(&ended)
            })
        }
    }
}

fn state_parser() -> impl TypedValueParser<Value = TaskState> {
    PossibleValuesParser::new(["active", "ended", "revoked"])
        .try_map(|s| TaskState::parse(&s).ok_or_else(|| format!("unknown task state {s:?}")))
}

/// `aims task list` as a table.
fn render_tasks(list: &TaskList) -> String {
    if list.tasks.is_empty() {
        return "No tasks.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.agent.to_string(),
                t.state.clone(),
                timestamp(t.created_at),
                timestamp(t.deadline),
                t.intent.to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "AGENT", "STATE", "CREATED", "DEADLINE", "INTENT"],
        &rows,
    )
}

/// `aims task show` as `label  value` lines.
fn render_task(task: &TaskView, now: OffsetDateTime) -> String {
    fields(&[
        ("Task", task.id.to_string()),
        ("Agent", task.agent.to_string()),
        ("Intent", task.intent.to_string()),
        ("Subject", task.subject.clone()),
        ("State", task.state.clone()),
        ("Created", timestamp(task.created_at)),
        (
            "Deadline",
            format!(
                "{} ({})",
                timestamp(task.deadline),
                relative(task.deadline, now)
            ),
        ),
        (
            "Ended",
            task.ended_at.map_or_else(|| "-".to_owned(), timestamp),
        ),
    ])
}

/// The text shown after `aims task end`.
fn render_ended(ended: &TaskEnded) -> String {
    format!(
        "Task {} is now {}; revoked {}.\n",
        ended.task.id,
        ended.task.state,
        credentials(ended.revoked)
    )
}

/// `1 credential`, `3 credentials`.
pub(crate) fn credentials(count: u64) -> String {
    if count == 1 {
        "1 credential".to_owned()
    } else {
        format!("{count} credentials")
    }
}

#[cfg(test)]
mod tests {
    use aims_core::id::TaskId;
    use clap::{CommandFactory, Parser};
    use time::macros::datetime;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: TaskCommand,
    }

    fn task(id: &str, state: &str) -> TaskView {
        TaskView {
            id: TaskId::new(id).unwrap(),
            agent: AgentName::new("planner").unwrap(),
            intent: aims_core::id::Intent::new("fix the build").unwrap(),
            subject: "spiffe://e2e.example/agent/planner".into(),
            state: state.into(),
            created_at: datetime!(2025-01-01 00:00 UTC),
            deadline: datetime!(2025-01-01 01:00 UTC),
            ended_at: None,
        }
    }

    #[test]
    fn states_parse_from_their_wire_names() {
        Cli::command().debug_assert();
        let cmd = Cli::try_parse_from(["task", "list", "--state", "ended", "--agent", "planner"])
            .unwrap()
            .cmd;
        let TaskCommand::List { agent, state, .. } = cmd else {
            panic!("not list: {cmd:?}");
        };
        assert_eq!(state, Some(TaskState::Ended));
        assert_eq!(agent.unwrap().as_str(), "planner");
        assert!(Cli::try_parse_from(["task", "list", "--state", "done"]).is_err());
        assert!(Cli::try_parse_from(["task", "list", "--limit", "0"]).is_err());
        let cmd = Cli::try_parse_from(["task", "end", "-x9"]).unwrap().cmd;
        assert!(matches!(cmd, TaskCommand::End { id } if id == "-x9"));
        let cmd = Cli::try_parse_from(["task", "show", "-x9"]).unwrap().cmd;
        assert!(matches!(cmd, TaskCommand::Show { id } if id == "-x9"));
    }

    #[test]
    fn tasks_render_as_a_table_and_fields() {
        let list = TaskList {
            tasks: vec![task("t-2", "active"), task("t-1", "ended")],
        };
        assert_eq!(
            render_tasks(&list),
            "ID   AGENT    STATE   CREATED               DEADLINE              INTENT\n\
             t-2  planner  active  2025-01-01T00:00:00Z  2025-01-01T01:00:00Z  fix the build\n\
             t-1  planner  ended   2025-01-01T00:00:00Z  2025-01-01T01:00:00Z  fix the build\n"
        );
        assert_eq!(render_tasks(&TaskList { tasks: vec![] }), "No tasks.\n");
        let shown = render_task(&task("t-1", "active"), datetime!(2025-01-01 00:45 UTC));
        assert!(
            shown.contains("Deadline  2025-01-01T01:00:00Z (in 15m)\n")
                && shown.ends_with("Ended     -\n"),
            "{shown}"
        );
        let ended = TaskEnded {
            task: task("t-1", "ended"),
            revoked: 1,
        };
        assert_eq!(
            render_ended(&ended),
            "Task t-1 is now ended; revoked 1 credential.\n"
        );
    }
}
