//! Runs the built `aims` binary: a server child process on an ephemeral loopback port, and
//! client commands against it.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The bootstrap credential the test servers start with.
pub const ADMIN_TOKEN: &str = "aims-e2e-bootstrap-credential-0123456789abcdef";

/// Rate limits high enough never to bind, for tests and benchmarks that make hundreds of
/// token and introspection requests a second from one address (the limits have tests of
/// their own in `aims-server`).
pub const UNLIMITED: [(&str, &str); 2] = [
    ("AIMS_RATE_LIMIT_PER_SOURCE", "1000000/1000000"),
    ("AIMS_RATE_LIMIT_PER_CREDENTIAL", "1000000/1000000"),
];

/// The built binary.
pub fn aims() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aims"));
    for var in [
        "AIMS_ADDR",
        "AIMS_TOKEN",
        "AIMS_CONFIG",
        "AIMS_DATABASE_URL",
        "AIMS_MASTER_KEY",
        "AIMS_BOOTSTRAP_TOKEN",
        "AIMS_LISTEN",
        "AIMS_DATA_DIR",
    ] {
        command.env_remove(var);
    }
    command
}

/// A running `aims server` child process.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// Lines the server printed on stdout before it was listening.
    pub banner: Vec<String>,
    stderr_file: std::path::PathBuf,
}

impl Server {
    /// Starts `aims server` on `data_dir`, with the test bootstrap credential when `bootstrap`.
    // The child is owned by the returned `Server`, whose `Drop` kills and waits for it; a
    // panic before that leaves the process to the test harness's exit.
    pub fn start(data_dir: &Path, bootstrap: bool) -> Self {
        let env: &[(&str, &str)] = if bootstrap {
            &[("AIMS_BOOTSTRAP_TOKEN", ADMIN_TOKEN)]
        } else {
            &[]
        };
        Self::start_with(data_dir, env, &[])
    }

    /// Starts `aims server` on `data_dir` with extra environment variables and flags (a shared
    /// `--database-url` and `--public-url` make it one replica of several; a `--listen` flag
    /// replaces the ephemeral loopback port, so a restart keeps the issuer's URL).
    #[allow(
        clippy::zombie_processes,
        reason = "the child is killed and reaped by the test harness below"
    )]
    pub fn start_with(data_dir: &Path, env: &[(&str, &str)], flags: &[&str]) -> Self {
        let stderr_file = data_dir.with_extension("stderr.log");
        let mut command = aims();
        command.arg("server");
        if !flags.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .args(["--trust-domain", "e2e.example", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).unwrap());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut banner = Vec::new();
        loop {
            let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(30)) else {
                let _ = child.kill();
                let log = std::fs::read_to_string(&stderr_file).unwrap_or_default();
                panic!("the server did not start; it logged:\n{log}");
            };
            if let Some(url) = line.strip_prefix("listening on ") {
                return Self {
                    child,
                    url: url.to_owned(),
                    banner,
                    stderr_file,
                };
            }
            banner.push(line);
        }
    }

    /// A client command against this server, as `token`.
    pub fn client(&self, token: Option<&str>) -> Command {
        let mut command = aims();
        command.env("AIMS_ADDR", &self.url);
        if let Some(token) = token {
            command.env("AIMS_TOKEN", token);
        }
        command
    }

    /// Runs a client command and returns its output.
    pub fn run(&self, token: Option<&str>, args: &[&str]) -> Output {
        self.client(token).args(args).output().unwrap()
    }

    /// Runs a client command that must succeed with `--output json`, and parses its stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(Some(ADMIN_TOKEN), &all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Sends SIGTERM and returns the exit status and everything logged on stderr.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.stderr_file).unwrap_or_default();
        (status, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
