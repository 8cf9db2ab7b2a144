//! Task tokens, tasks and resource servers through the CLI against a real server: exchange,
//! delegation, introspection (as a resource server and as an operator), task end, RFC 7009 and
//! cascading revocation, and refusals that exit non-zero with the RFC error code — with every
//! credential read from files or stdin.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use serde_json::{Value, json};

use crate::process::{ADMIN_TOKEN, Server};

const AUDIENCE: &str = "https://tools.acme.example/repo";
const PLANNER_SCOPE: &str = "read:repo/acme/* write:repo/acme/app";

/// A server with the starter policies, the `repo-tools` resource server (system `github`), and
/// two attested agents: `planner` (role=planner) and `executor` (role=executor), both owned by
/// alice. Files live in `dir`: `<agent>.key`, `planner.svid` (the SVID alone),
/// `executor.svid.json` (`aims attest --output json`), `rs.secret`.
struct Scene {
    dir: tempfile::TempDir,
    server: Server,
}

impl Scene {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"), true);
        let scene = Self { dir, server };
        let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        scene.json(&["policy", "push", policies.to_str().unwrap()]);
        let added = scene.json(&[
            "resource-server",
            "add",
            "repo-tools",
            "--audience",
            AUDIENCE,
            "--system",
            "github",
        ]);
        let secret = added["client_secret"].as_str().unwrap();
        assert!(secret.starts_with("aims_r_"), "{added}");
        std::fs::write(scene.file("rs.secret"), secret).unwrap();
        std::fs::write(scene.file("evidence.json"), "{}").unwrap();
        scene.attest("planner", "planner.svid", false);
        scene.attest("executor", "executor.svid.json", true);
        scene
    }

    /// Registers `name` with label role=`name` and attests it, saving its key and SVID.
    fn attest(&self, name: &str, svid_file: &str, json_output: bool) {
        let label = format!("role={name}");
        let registered = self.json(&[
            "agent",
            "register",
            name,
            "--owner",
            "alice@acme.example",
            "--label",
            &label,
        ]);
        let join = registered["join_token"].as_str().unwrap();
        let key = self.path(&format!("{name}.key"));
        let evidence = self.path("evidence.json");
        let mut args = vec![
            "attest",
            "--join-token",
            join,
            "--evidence",
            &evidence,
            "--key",
            &key,
        ];
        if json_output {
            args.extend(["--output", "json"]);
        }
        let out = self.server.run(None, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::write(self.file(svid_file), &out.stdout).unwrap();
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path(&self, name: &str) -> String {
        self.file(name).to_str().unwrap().to_owned()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap()
    }

    /// Runs a command as the admin.
    fn run(&self, args: &[&str]) -> Output {
        self.server.run(Some(ADMIN_TOKEN), args)
    }

    /// Runs a command with no operator token, `input` on stdin.
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .server
            .client(None)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command as the admin with `--output json`; it must succeed.
    fn json(&self, args: &[&str]) -> Value {
        self.server.json(args)
    }

    /// The planner's token exchange (no operator token) with `extra` arguments.
    fn exchange(&self, scope: &str, intent: &str, extra: &[&str]) -> Output {
        let (svid, key) = (self.path("planner.svid"), self.path("planner.key"));
        let mut args = vec![
            "token",
            "exchange",
            "--svid",
            &svid,
            "--key",
            &key,
            "--scope",
            scope,
            "--audience",
            AUDIENCE,
            "--intent",
            intent,
        ];
        args.extend_from_slice(extra);
        self.server.run(None, &args)
    }

    /// A successful exchange with `--output json`, saved as `file`.
    fn exchange_json(&self, intent: &str, file: &str) -> Value {
        let out = self.exchange("read:repo/acme/app", intent, &["--output", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::write(self.file(file), &out.stdout).unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Introspects the token in `file` as the resource server.
    fn introspect(&self, file: &str) -> Value {
        let (token, secret) = (self.path(file), self.path("rs.secret"));
        let out = self.server.run(
            None,
            &[
                "token",
                "introspect",
                &token,
                "--client",
                "repo-tools",
                "--secret-file",
                &secret,
                "--output",
                "json",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The planner delegates the token in `file` to the executor, with `--output json`.
    fn delegate(&self, file: &str, scope: &str) -> Value {
        let (token, key, actor) = (
            self.path(file),
            self.path("planner.key"),
            self.path("executor.svid.json"),
        );
        let out = self.server.run(
            None,
            &[
                "token",
                "delegate",
                "--token-file",
                &token,
                "--key",
                &key,
                "--actor-svid",
                &actor,
                "--scope",
                scope,
                "--output",
                "json",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `aims token revoke` as the admin with `--output json`: how many were revoked.
    fn revoke(&self, args: &[&str]) -> u64 {
        let all = [&["token", "revoke"], args].concat();
        self.json(&all)["revoked"].as_u64().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exchange_delegate_introspect_then_ending_the_task_deactivates_the_tokens() {
    let scene = Scene::start();

    // Text output is the access token alone, ready for $(…); the summary goes to stderr.
    let out = scene.exchange(PLANNER_SCOPE, "fix the failing build", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(token.trim_end().split('.').count(), 3, "{token}");
    assert!(!token.trim_end().contains(char::is_whitespace));
    assert!(
        stderr(&out).starts_with("DPoP token for task "),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(token.trim_end()));
    std::fs::write(scene.file("planner.token"), &token).unwrap();

    // The planner hands a narrower part to the executor (actor SVID from attest's JSON).
    let delegated = scene.delegate("planner.token", "read:repo/acme/app");
    assert_eq!(delegated["token_type"], "DPoP");
    assert_eq!(delegated["scope"], "read:repo/acme/app");
    let task = delegated["task_id"].as_str().unwrap().to_owned();
    std::fs::write(
        scene.file("executor.json"),
        serde_json::to_vec(&delegated).unwrap(),
    )
    .unwrap();

    // The resource server sees the executor's token active, with the delegation chain.
    let seen = scene.introspect("executor.json");
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["client_id"], "spiffe://e2e.example/agent/executor");
    assert_eq!(seen["scope"], "read:repo/acme/app");
    assert_eq!(seen["task_id"], task.as_str());
    assert_eq!(
        seen["act"]["act"]["sub"],
        "spiffe://e2e.example/agent/planner"
    );
    // So does the operator, without resource-server credentials; the text names the chain.
    let planner_token = scene.path("planner.token");
    let as_admin = scene.json(&["token", "introspect", &planner_token]);
    assert_eq!(as_admin["active"], true);
    assert_eq!(as_admin["scope"], PLANNER_SCOPE);
    let executor_token = scene.path("executor.json");
    let text = scene.run(&["token", "introspect", &executor_token]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.starts_with("Active     yes\n")
            && text.contains(
                "Delegated  spiffe://e2e.example/agent/planner → spiffe://e2e.example/agent/executor"
            ),
        "{text}"
    );
    // Without either credential, the command says what to give.
    let out = scene
        .server
        .run(None, &["token", "introspect", &planner_token]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--client") && stderr(&out).contains("AIMS_TOKEN"),
        "{}",
        stderr(&out)
    );

    // The operator finds the task, shows it, and ends it: both tokens are revoked.
    let listed = scene.json(&["task", "list", "--agent", "planner", "--state", "active"]);
    let tasks = listed["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], task.as_str());
    let shown = scene.json(&["task", "show", &task]);
    assert_eq!(shown["intent"], "fix the failing build");
    assert_eq!(shown["state"], "active");
    let ended = scene.run(&["task", "end", &task]);
    assert!(ended.status.success(), "{}", stderr(&ended));
    assert_eq!(
        String::from_utf8(ended.stdout).unwrap(),
        format!("Task {task} is now ended; revoked 2 credentials.\n")
    );
    assert_eq!(scene.introspect("executor.json"), json!({"active": false}));
    assert_eq!(scene.introspect("planner.token"), json!({"active": false}));
    assert_eq!(scene.json(&["task", "show", &task])["state"], "ended");

    // Ending it again, or continuing it, is refused.
    let again = scene.run(&["task", "end", &task]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("task_not_active"),
        "{}",
        stderr(&again)
    );
    let out = scene.exchange(
        "read:repo/acme/app",
        "fix the failing build",
        &["--task", &task],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid_grant"), "{}", stderr(&out));
    assert!(
        scene.json(&["task", "list", "--state", "active"])["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn refused_exchanges_exit_non_zero_with_the_rfc_code_and_no_secret() {
    let scene = Scene::start();
    let svid = scene.read("planner.svid");
    for (scope, extra, code) in [
        // Policy grants planners read and write on github, never delete.
        ("delete:repo/acme/app", &[][..], "invalid_scope"),
        // The planner is not registered for bearer tokens.
        ("read:repo/acme/app", &["--bearer"][..], "invalid_request"),
        // The JWT-bearer grant is refused the same way.
        (
            "delete:repo/acme/app",
            &["--jwt-bearer"][..],
            "invalid_scope",
        ),
    ] {
        let out = scene.exchange(scope, "tidy up", extra);
        assert!(!out.status.success(), "{scope} {extra:?}");
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert!(err.starts_with(&format!("error: {code}")), "{err}");
        assert!(!err.contains(svid.trim()), "the SVID leaked: {err}");
    }
    let (svid_path, key) = (scene.path("planner.svid"), scene.path("planner.key"));
    let out = scene.server.run(
        None,
        &[
            "token",
            "exchange",
            "--svid",
            &svid_path,
            "--key",
            &key,
            "--scope",
            "read:repo/acme/app",
            "--audience",
            "https://unknown.example",
            "--intent",
            "x",
        ],
    );
    assert!(
        stderr(&out).starts_with("error: invalid_target"),
        "{}",
        stderr(&out)
    );
    // A key that is not the agent's own is no key at all; the error names the file only.
    let key_file = scene.file("not-a-key.pem");
    std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
    let out = scene.server.run(
        None,
        &[
            "token",
            "exchange",
            "--svid",
            &svid_path,
            "--key",
            key_file.to_str().unwrap(),
            "--scope",
            "read:repo/acme/app",
            "--audience",
            AUDIENCE,
            "--intent",
            "x",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not-a-key.pem") && !stderr(&out).contains("c2VjcmV0"),
        "{}",
        stderr(&out)
    );
    // No refusal left a task behind.
    assert!(
        scene.json(&["task", "list"])["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn revocation_by_token_jti_subtree_task_agent_and_owner() {
    let scene = Scene::start();
    let (svid, key) = (scene.read("planner.svid"), scene.path("planner.key"));

    // The SVID from stdin, with the JWT-bearer grant; RFC 7009 as the resource server.
    let out = scene.run_with_stdin(
        &[
            "token",
            "exchange",
            "--svid",
            "-",
            "--key",
            &key,
            "--scope",
            "read:repo/acme/app",
            "--audience",
            "repo-tools",
            "--intent",
            "read the docs",
            "--jwt-bearer",
            "--output",
            "json",
        ],
        &svid,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(scene.file("t1.json"), &out.stdout).unwrap();
    assert_eq!(scene.introspect("t1.json")["active"], true);
    let (t1, secret) = (scene.path("t1.json"), scene.path("rs.secret"));
    let out = scene.server.run(
        None,
        &[
            "token",
            "revoke",
            &t1,
            "--client",
            "repo-tools",
            "--secret-file",
            &secret,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Revocation accepted"));
    assert_eq!(scene.introspect("t1.json"), json!({"active": false}));

    // RFC 7009 by the holder alone, the token on stdin.
    scene.exchange_json("holder revokes", "t2.json");
    let out = scene.run_with_stdin(
        &["token", "revoke", "-", "--output", "json"],
        &scene.read("t2.json"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!({"accepted": true})
    );
    assert_eq!(scene.introspect("t2.json"), json!({"active": false}));

    // By jti: once, then nothing is left to revoke.
    scene.exchange_json("by jti", "t3.json");
    let jti = scene.introspect("t3.json")["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        scene.revoke(&["--jti", &jti, "--reason", "leaked in a log"]),
        1
    );
    assert_eq!(scene.revoke(&["--jti", &jti]), 0);
    assert_eq!(scene.introspect("t3.json"), json!({"active": false}));

    // By subtree: the delegated token goes, the parent stays; then by task: the parent goes.
    let parent = scene.exchange_json("by subtree", "t4.json");
    let parent_jti = scene.introspect("t4.json")["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let child = scene.delegate("t4.json", "read:repo/acme/app");
    std::fs::write(scene.file("t4-child.json"), child.to_string()).unwrap();
    assert_eq!(scene.revoke(&["--subtree", &parent_jti]), 1);
    assert_eq!(scene.introspect("t4-child.json"), json!({"active": false}));
    assert_eq!(scene.introspect("t4.json")["active"], true);
    let task = parent["task_id"].as_str().unwrap();
    let text = scene.run(&["token", "revoke", "--task", task]);
    assert_eq!(
        String::from_utf8(text.stdout).unwrap(),
        format!("Revoked 1 credential (task {task}).\n")
    );
    assert_eq!(scene.introspect("t4.json"), json!({"active": false}));

    // The kill switch: the planner's SVID and its two live tokens.
    scene.exchange_json("first", "t5.json");
    scene.exchange_json("second", "t6.json");
    assert_eq!(
        scene.revoke(&["--agent", "planner", "--reason", "kill switch"]),
        3
    );
    assert_eq!(scene.introspect("t5.json"), json!({"active": false}));
    assert_eq!(scene.introspect("t6.json"), json!({"active": false}));
    let out = scene.exchange("read:repo/acme/app", "after the kill switch", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid_grant"), "{}", stderr(&out));

    // By owner: what alice's agents still hold (the executor's SVID).
    assert_eq!(scene.revoke(&["--owner", "alice@acme.example"]), 1);
    assert_eq!(scene.revoke(&["--owner", "alice@acme.example"]), 0);

    // Operator targets need the operator; a malformed one is refused by the server.
    let out = scene
        .server
        .run(None, &["token", "revoke", "--agent", "planner"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("AIMS_TOKEN"), "{}", stderr(&out));
    let out = scene.run(&["token", "revoke", "--jti", "not a jti!"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid_target"), "{}", stderr(&out));
}

#[test]
fn resource_servers_are_added_listed_shown_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), true);
    let out = server.run(
        Some(ADMIN_TOKEN),
        &[
            "resource-server",
            "add",
            "ticket-tools",
            "--audience",
            "https://tickets.acme.example",
            "--system",
            "jira",
            "--environment",
            "prod",
            "--sensitivity",
            "confidential",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("Registered resource server ticket-tools")
            && text.contains("Client secret  aims_r_")
            && text.contains("shown only once"),
        "{text}"
    );

    let listed = server.json(&["resource-server", "list"]);
    let servers = listed["resource_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["environment"], "prod");
    assert!(servers[0].get("client_secret").is_none());
    let shown = server.json(&["resource-server", "show", "ticket-tools"]);
    assert_eq!(shown["sensitivity"], "confidential");
    assert_eq!(shown["created_by"], "admin");

    let dup = server.run(
        Some(ADMIN_TOKEN),
        &[
            "resource-server",
            "add",
            "ticket-tools",
            "--audience",
            "https://other.acme.example",
            "--system",
            "jira",
        ],
    );
    assert!(!dup.status.success());
    assert!(
        stderr(&dup).contains("resource_server_exists"),
        "{}",
        stderr(&dup)
    );
    let bad = server.run(
        Some(ADMIN_TOKEN),
        &[
            "resource-server",
            "add",
            "x",
            "--audience",
            "not a uri",
            "--system",
            "jira",
        ],
    );
    assert!(
        stderr(&bad).contains("invalid_audience"),
        "{}",
        stderr(&bad)
    );

    assert_eq!(
        server.json(&["resource-server", "remove", "ticket-tools"]),
        json!({"removed": "ticket-tools"})
    );
    let gone = server.run(
        Some(ADMIN_TOKEN),
        &["resource-server", "show", "ticket-tools"],
    );
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("resource_server_not_found"),
        "{}",
        stderr(&gone)
    );
    let empty = server.run(Some(ADMIN_TOKEN), &["resource-server", "list"]);
    assert_eq!(
        String::from_utf8(empty.stdout).unwrap(),
        "No resource servers.\n"
    );
}
