//! `aims report` against a real server: the same findings as text, JSON and one HTML file,
//! a refused window, and the HTML opened in a real browser (headless Chromium).

use std::path::Path;
use std::process::Command;

use crate::process::{ADMIN_TOKEN, Server};

/// Markup planted in an owner's name: it must reach every form of the report as text.
const HOSTILE_OWNER: &str = "<script>document.title='owned'</script>";

/// A server with an agent of an unknown (and hostile-looking) owner that may use bearer
/// tokens, and one of a registered owner.
fn seeded(dir: &Path) -> Server {
    let server = Server::start(&dir.join("data"), true);
    server.json(&["user", "add", "alice", "--role", "approver"]);
    server.json(&["agent", "register", "kept", "--owner", "alice"]);
    server.json(&[
        "agent",
        "register",
        "stray",
        "--owner",
        HOSTILE_OWNER,
        "--allow-bearer",
    ]);
    server
}

/// Writes the HTML report of `server` to a file in `dir` and returns its path.
fn html_report(server: &Server, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("report.html");
    let out = server.run(
        Some(ADMIN_TOKEN),
        &[
            "report",
            "--window-days",
            "7",
            "--format",
            "html",
            "--out",
            path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn the_report_as_text_json_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path());

    let json = server.json(&["report", "--window-days", "7"]);
    assert_eq!(json["window_days"], 7);
    let kinds_of = |subject: &str| -> Vec<String> {
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["subject"] == subject)
            .map(|f| {
                format!(
                    "{} {}",
                    f["nhi"].as_str().unwrap(),
                    f["kind"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        kinds_of("stray"),
        ["NHI1 unknown_owner", "NHI4 bearer_allowed"]
    );
    assert!(kinds_of("kept").is_empty(), "{json}");

    let text = server.run(Some(ADMIN_TOKEN), &["report", "--window-days", "7"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Governance report, 7 days"), "{text}");
    assert!(text.contains("[NHI1 unknown_owner] agent stray"), "{text}");
    assert!(
        text.contains("aims agent update stray --allow-bearer=false"),
        "{text}"
    );

    let html = std::fs::read_to_string(html_report(&server, dir.path())).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("data-kind=\"bearer_allowed\""), "{html}");
    assert!(
        !html.contains(HOSTILE_OWNER),
        "the owner's markup is escaped"
    );
    assert!(html.contains("&lt;script&gt;document.title="), "{html}");

    // A window of zero days, or of ten years, is refused with its code; nothing is written.
    for days in ["0", "3653"] {
        let out_file = dir.path().join(format!("refused-{days}.html"));
        let refused = server.run(
            Some(ADMIN_TOKEN),
            &[
                "report",
                "--window-days",
                days,
                "--format",
                "html",
                "--out",
                out_file.to_str().unwrap(),
            ],
        );
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("invalid_window"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        assert!(!out_file.exists());
    }
}

/// The Chromium binary: `AIMS_CHROMIUM`, else Debian's.
fn chromium() -> String {
    std::env::var("AIMS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

#[test]
#[ignore = "needs Chromium (Debian's chromium package, or AIMS_CHROMIUM); run with --include-ignored"]
fn the_html_report_renders_its_findings_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path());
    let path = html_report(&server, dir.path());
    let profile = dir.path().join("chromium-profile");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", path.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    // The browser built the findings table: one row per finding, with its item and subject.
    let rows = dom.matches("<tr class=\"finding\"").count();
    assert_eq!(rows, 2, "{dom}");
    for expected in [
        "NHI1 Improper Offboarding",
        "NHI4 Insecure Authentication",
        "agent stray",
        "Findings (2)",
        "<svg",
    ] {
        assert!(dom.contains(expected), "{expected} missing from {dom}");
    }
    // The planted markup stayed text: no script element, and the title is the report's.
    assert!(!dom.contains("<script"), "{dom}");
    assert!(dom.contains("&lt;script&gt;document.title="), "{dom}");
    assert!(
        dom.contains("<title>AIMS governance report, 7 days</title>"),
        "{dom}"
    );
}
