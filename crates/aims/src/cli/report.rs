//! `aims report`: the governance report as text, JSON or one self-contained HTML file.
//!
//! The server finds; this module only fetches the report and renders it. Everything in it is
//! treated as untrusted text: control characters are escaped in the text form and every value
//! is HTML-escaped in the HTML form ([`super::report_html`]).

use std::io::Write as _;
use std::path::PathBuf;

use aims_api::report::{GovernanceReport, ReportQuery};

use super::output::{clean, table, timestamp};
use super::report_html::render_html;
use super::{ClientOpts, Output};

/// `aims report` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Days back from now the report looks at (1 to 3650; the server's default, 30, unless
    /// given).
    #[arg(long, value_name = "DAYS")]
    pub window_days: Option<u32>,
    /// Text, JSON, or one self-contained HTML file (no network fetches, charts drawn inline).
    /// Without it, `--output` decides between text and JSON.
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The forms of the report.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// A readable summary and the findings.
    Text,
    /// The server's JSON.
    Json,
    /// One HTML file.
    Html,
}

/// Runs `aims report`.
pub async fn run_report(opts: &ClientOpts, args: ReportArgs) -> anyhow::Result<()> {
    let client = opts.client()?;
    let report = client
        .report(&ReportQuery {
            window_days: args.window_days,
        })
        .await?;
    let format = args.format.unwrap_or(match opts.output {
        Output::Json => ReportFormat::Json,
        Output::Text => ReportFormat::Text,
    });
    let rendered = match format {
        ReportFormat::Text => render_text(&report),
        ReportFormat::Json => {
            let mut json = serde_json::to_string_pretty(&report)?;
            json.push('\n');
            json
        }
        ReportFormat::Html => render_html(&report),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, rendered.as_bytes())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!(
                "{} findings written to {}",
                report.findings.len(),
                path.display()
            );
            Ok(())
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(rendered.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => Ok(other?),
            }
        }
    }
}

/// The report as text: its summary ([`render_summary`]), decisions per agent, then every
/// finding with its evidence and recommendation.
pub(crate) fn render_text(report: &GovernanceReport) -> String {
    let mut out = render_summary(report);
    if !report.decisions.is_empty() {
        out.push_str("\nDecisions by agent\n");
        let rows: Vec<Vec<String>> = report
            .decisions
            .iter()
            .map(|d| {
                vec![
                    d.agent.clone(),
                    d.total.to_string(),
                    d.allowed.to_string(),
                    d.denied.to_string(),
                    d.approval_required.to_string(),
                    format!("{}%", d.denied.saturating_mul(100) / d.total.max(1)),
                ]
            })
            .collect();
        out.push_str(&table(
            &["AGENT", "TOTAL", "ALLOW", "DENY", "APPROVAL", "DENIED"],
            &rows,
        ));
    }
    if report.findings.is_empty() {
        out.push_str("\nNo findings.\n");
    }
    for (i, f) in report.findings.iter().enumerate() {
        out.push_str(&format!(
            "\n{}. [{} {}] {} {}: {}\n   evidence: {}\n   do: {}\n",
            i + 1,
            f.nhi.id(),
            f.kind.as_str(),
            f.subject_kind.as_str(),
            clean(&f.subject),
            clean(&f.summary),
            clean(&f.evidence.to_string()),
            clean(&f.recommendation)
        ));
    }
    if !report.not_covered.is_empty() {
        out.push_str("\nNot covered yet:\n");
        for note in &report.not_covered {
            out.push_str(&format!("- {}\n", clean(note)));
        }
    }
    out
}

/// The report's summary: the window, what was read, and findings per kind.
pub(crate) fn render_summary(report: &GovernanceReport) -> String {
    let mut out = format!(
        "Governance report, {} days from {} to {}\n",
        report.window_days,
        timestamp(report.window_start),
        timestamp(report.generated_at)
    );
    let c = &report.coverage;
    out.push_str(&format!(
        "Read: {} agents{}, {} audit records{}, {} secrets, {} gateway sightings\n\n",
        c.agents,
        if c.agents_truncated {
            " (more exist: left out)"
        } else {
            ""
        },
        c.records_examined,
        match (c.records_truncated, c.records_from) {
            (true, Some(from)) => format!(" (window too long: read from {})", timestamp(from)),
            _ => String::new(),
        },
        c.secrets,
        c.sightings
    ));
    let rows: Vec<Vec<String>> = report
        .summary
        .iter()
        .map(|k| {
            vec![
                k.kind.as_str().to_owned(),
                format!("{} {}", k.nhi.id(), k.nhi.title()),
                k.count.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["FINDING", "OWASP NHI", "COUNT"], &rows));
    out
}
