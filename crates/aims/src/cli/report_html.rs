//! The governance report as one self-contained HTML file: inline CSS, charts drawn as inline
//! SVG, no script, and a Content-Security-Policy that forbids every fetch, so opening it
//! reaches no network. Every value from the report — names, addresses, user agents — goes
//! through [`escape`]; nothing else is ever interpolated.

use std::fmt::Write as _;

use aims_api::report::GovernanceReport;

use super::output::timestamp;

/// Inline style sheet.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1a1a1a;max-width:78rem}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#f0f0f0}pre{margin:0;white-space:pre-wrap;font-size:.8rem}\
.nhi{font-weight:600;white-space:nowrap}.meta{color:#555}svg text{font-size:12px}";

/// Widest bar of a chart, in SVG units.
const BAR_WIDTH: u64 = 360;
/// Most agents the denial chart draws.
const MAX_CHART_AGENTS: usize = 25;

/// `value` safe as HTML text and attribute values.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A horizontal bar chart of `(label, value, of)` rows as inline SVG: each bar is
/// `value / of` of the widest, labelled with `text`.
fn bar_chart(title: &str, rows: &[(String, u64, u64, String)]) -> String {
    let height = 24 * rows.len().max(1) + 8;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"760\" height=\"{height}\" \
         aria-label=\"{}\">",
        escape(title)
    );
    for (i, (label, value, of, text)) in rows.iter().enumerate() {
        let y = 8 + 24 * i;
        let width = value.saturating_mul(BAR_WIDTH) / (*of).max(1);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text>\
             <rect x=\"230\" y=\"{y}\" width=\"{width}\" height=\"16\" fill=\"#c0392b\"></rect>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            y + 13,
            escape(label),
            236 + width,
            y + 13,
            escape(text)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The report as one HTML document.
pub(crate) fn render_html(report: &GovernanceReport) -> String {
    let mut html =
        String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">",
    );
    let _ = write!(
        html,
        "<title>AIMS governance report, {} days</title><style>{STYLE}</style></head><body>",
        report.window_days
    );
    let _ = write!(
        html,
        "<h1>AIMS governance report</h1><p class=\"meta\">Window: {} days, from {} to {}. \
         Read {} agents, {} audit records, {} secrets, {} gateway sightings.{}</p>",
        report.window_days,
        escape(&timestamp(report.window_start)),
        escape(&timestamp(report.generated_at)),
        report.coverage.agents,
        report.coverage.records_examined,
        report.coverage.secrets,
        report.coverage.sightings,
        if report.coverage.records_truncated || report.coverage.agents_truncated {
            " The report read only part of what exists: see the JSON form's coverage."
        } else {
            ""
        }
    );

    html.push_str("<h2>Findings by kind</h2>");
    let most = report.summary.iter().map(|k| k.count).max().unwrap_or(0);
    let rows: Vec<(String, u64, u64, String)> = report
        .summary
        .iter()
        .map(|k| {
            (
                format!("{} {}", k.nhi.id(), k.kind.as_str()),
                k.count,
                most,
                k.count.to_string(),
            )
        })
        .collect();
    html.push_str(&bar_chart("Findings by kind", &rows));

    if !report.decisions.is_empty() {
        html.push_str("<h2>Denial rate by agent</h2>");
        let rows: Vec<(String, u64, u64, String)> = report
            .decisions
            .iter()
            .take(MAX_CHART_AGENTS)
            .map(|d| {
                (
                    d.agent.clone(),
                    d.denied,
                    d.total,
                    format!(
                        "{}% ({} of {})",
                        d.denied.saturating_mul(100) / d.total.max(1),
                        d.denied,
                        d.total
                    ),
                )
            })
            .collect();
        html.push_str(&bar_chart("Denial rate by agent", &rows));
    }

    let _ = write!(html, "<h2>Findings ({})</h2>", report.findings.len());
    if report.findings.is_empty() {
        html.push_str("<p>No findings.</p>");
    } else {
        html.push_str(
            "<table id=\"findings\"><thead><tr><th>OWASP NHI</th><th>Kind</th><th>Subject</th>\
             <th>Finding</th><th>Evidence</th><th>Recommended action</th></tr></thead><tbody>",
        );
        for f in &report.findings {
            let evidence = serde_json::to_string_pretty(&f.evidence)
                .unwrap_or_else(|_| f.evidence.to_string());
            let _ = write!(
                html,
                "<tr class=\"finding\" data-kind=\"{kind}\"><td class=\"nhi\" title=\"{title}\">{id} \
                 {title}</td><td>{kind}</td><td>{subject_kind} {subject}</td><td>{summary}</td>\
                 <td><pre>{evidence}</pre></td><td>{recommendation}</td></tr>",
                kind = escape(f.kind.as_str()),
                id = escape(f.nhi.id()),
                title = escape(&f.nhi_title),
                subject_kind = escape(f.subject_kind.as_str()),
                subject = escape(&f.subject),
                summary = escape(&f.summary),
                evidence = escape(&evidence),
                recommendation = escape(&f.recommendation),
            );
        }
        html.push_str("</tbody></table>");
    }

    if !report.not_covered.is_empty() {
        html.push_str("<h2>Not covered yet</h2><ul>");
        for note in &report.not_covered {
            let _ = write!(html, "<li>{}</li>", escape(note));
        }
        html.push_str("</ul>");
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use aims_api::report::{
        AgentDecisions, Finding, FindingKind, KindCount, ReportCoverage, SubjectKind,
    };
    use time::macros::datetime;

    use super::*;

    fn report() -> GovernanceReport {
        let kind = FindingKind::UnmanagedCaller;
        GovernanceReport {
            generated_at: datetime!(2026-06-01 00:00 UTC),
            window_days: 30,
            window_start: datetime!(2026-05-02 00:00 UTC),
            coverage: ReportCoverage {
                agents: 1,
                agents_truncated: false,
                records_examined: 10,
                records_truncated: false,
                records_from: None,
                secrets: 0,
                sightings: 1,
            },
            summary: vec![KindCount {
                kind,
                nhi: kind.nhi(),
                count: 1,
            }],
            findings: vec![Finding {
                kind,
                nhi: kind.nhi(),
                nhi_title: kind.nhi().title().to_owned(),
                subject_kind: SubjectKind::Caller,
                subject: "203.0.113.7".to_owned(),
                summary: "refused <img src=x onerror=alert(1)>".to_owned(),
                evidence: serde_json::json!({ "user_agent": "</pre><script>alert('x')</script>" }),
                recommendation: "block \"it\" & see".to_owned(),
            }],
            decisions: vec![AgentDecisions {
                agent: "<svg onload=x>".to_owned(),
                total: 4,
                allowed: 1,
                denied: 3,
                approval_required: 0,
            }],
            not_covered: vec!["groups".to_owned()],
        }
    }

    #[test]
    fn every_value_is_escaped_and_nothing_is_fetched() {
        let html = render_html(&report());
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<svg onload"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("&lt;/pre&gt;&lt;script&gt;"));
        assert!(html.contains("block &quot;it&quot; &amp; see"));
        // Nothing that loads: no src, no link, no url(); the policy forbids fetches anyway.
        for loads in ["src=\"", "<link", "url(", "@import", "https://"] {
            assert!(!html.contains(loads), "{loads}");
        }
        assert!(html.contains("default-src 'none'"));
        assert!(html.contains("NHI2 Secret Leakage"));
        assert!(html.contains("75% (3 of 4)"));
    }

    #[test]
    fn escape_covers_markup_and_controls() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(escape("\u{1b}[2J"), "&#27;[2J");
    }
}
