//! Rendering for the client commands: pretty JSON, aligned tables and `label  value` blocks,
//! timestamps, and writing to stdout.
//!
//! Everything here except [`print`] is a pure function from data to text, so command output
//! can be tested without a server. Text from the server is treated as untrusted: control
//! characters are escaped so a stored value cannot drive the terminal.

use std::io::Write;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::Output;

/// Writes the command's result: `json` pretty-printed for `--output json`, else the text that
/// `text` renders. A closed pipe (`aims agent list | head`) is not an error.
pub(crate) fn print(
    output: Output,
    json: &serde_json::Value,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let rendered = match output {
        Output::Json => {
            let mut pretty = serde_json::to_string_pretty(json)?;
            pretty.push('\n');
            pretty
        }
        Output::Text => text(),
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(rendered.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `value` with control characters escaped (`\n`, `\u{1b}`), safe to show in a terminal.
pub(crate) fn clean(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An aligned table: a header line, then one line per row, columns two spaces apart. The last
/// column is not padded, so lines carry no trailing spaces. Cells are [`clean`]ed.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let rows: Vec<Vec<String>> = std::iter::once(header_row)
        .chain(
            rows.iter()
                .map(|row| row.iter().map(|cell| clean(cell)).collect()),
        )
        .collect();
    let mut widths: Vec<usize> = vec![0; headers.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        let cells = row.len().min(widths.len());
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            line.push_str(cell);
            if i + 1 < cells {
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `label  value` lines with the values aligned. Values are [`clean`]ed.
pub(crate) fn fields(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let line = format!("{label:<width$}  {}", clean(value));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An RFC 3339 timestamp in UTC to the second, e.g. `2025-01-01T00:15:00Z`.
pub(crate) fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// How far `t` is from `now`, in its two largest units: `in 14m 59s`, `3d 4h ago`.
pub(crate) fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let seconds = (t - now).whole_seconds();
    let span = span(seconds.unsigned_abs());
    if seconds >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn span(seconds: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    let (major, major_unit, minor, minor_unit) = if seconds >= DAY {
        (seconds / DAY, "d", seconds % DAY / HOUR, "h")
    } else if seconds >= HOUR {
        (seconds / HOUR, "h", seconds % HOUR / MINUTE, "m")
    } else if seconds >= MINUTE {
        (seconds / MINUTE, "m", seconds % MINUTE, "s")
    } else {
        return format!("{seconds}s");
    };
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit} {minor}{minor_unit}")
    }
}

/// A string field of a JSON object, or `-`.
pub(crate) fn str_field(value: &serde_json::Value, key: &str) -> String {
    match value.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let out = table(
            &["NAME", "OWNER", "STATE"],
            &[
                vec!["coder".into(), "alice@acme.example".into(), "active".into()],
                vec!["ci-runner-long".into(), "bob".into(), "suspended".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME            OWNER               STATE\n\
             coder           alice@acme.example  active\n\
             ci-runner-long  bob                 suspended\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
        // An empty last cell leaves no trailing spaces.
        assert_eq!(
            table(&["A", "B"], &[vec!["x".into(), String::new()]]),
            "A  B\nx\n"
        );
    }

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        assert_eq!(clean("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        let out = table(&["X"], &[vec!["\u{7}bell".into()]]);
        assert_eq!(out, "X\n\\u{7}bell\n");
        assert_eq!(
            fields(&[("Note", "two\nlines".into())]),
            "Note  two\\nlines\n"
        );
    }

    #[test]
    fn fields_align_values() {
        assert_eq!(
            fields(&[
                ("SPIFFE ID", "spiffe://x/agent/a".into()),
                ("Owner", "alice".into())
            ]),
            "SPIFFE ID  spiffe://x/agent/a\nOwner      alice\n"
        );
    }

    #[test]
    fn timestamps_are_utc_rfc3339_to_the_second() {
        assert_eq!(
            timestamp(datetime!(2025-01-01 02:15:30.123 +02:00)),
            "2025-01-01T00:15:30Z"
        );
    }

    #[test]
    fn relative_times_use_two_units() {
        let now = datetime!(2025-01-01 00:00 UTC);
        for (then, want) in [
            (datetime!(2025-01-01 00:00:45 UTC), "in 45s"),
            (datetime!(2025-01-01 00:15 UTC), "in 15m"),
            (datetime!(2025-01-01 00:14:59 UTC), "in 14m 59s"),
            (datetime!(2025-01-01 02:05 UTC), "in 2h 5m"),
            (datetime!(2025-01-04 04:00 UTC), "in 3d 4h"),
            (datetime!(2024-12-31 23:57 UTC), "3m ago"),
            (now, "in 0s"),
        ] {
            assert_eq!(relative(then, now), want);
        }
    }

    #[test]
    fn string_fields_of_json() {
        let v = serde_json::json!({"a": "x", "n": 3, "z": null});
        assert_eq!(str_field(&v, "a"), "x");
        assert_eq!(str_field(&v, "n"), "3");
        assert_eq!(str_field(&v, "z"), "-");
        assert_eq!(str_field(&v, "missing"), "-");
    }
}
