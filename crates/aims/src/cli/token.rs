//! `aims token …`: task tokens from the command line — exchange an agent's JWT-SVID for a task
//! token, delegate part of a task to another agent, introspect a token, and revoke one token
//! (RFC 7009) or, as an operator, everything under a token, task, agent or owner.
//!
//! Credentials are read from files or stdin (`-`), never taken from the command line, where
//! the process list and shell history would keep them. The files are what the other commands
//! leave: the agent's PKCS#8 PEM key and its SVID from `aims attest` (the SVID alone, or that
//! command's `--output json`), access tokens from `aims token exchange` or `delegate` (the
//! token alone, or their `--output json`), and a client secret from `aims resource-server add`
//! (alone, or its `--output json`). A token is printed only where it is the command's result
//! and never appears in an error. Grants, narrowing and refusals are the server's.
//!
//! `exchange` and `delegate` print the access token alone on stdout in text mode (ready for
//! `$(aims token exchange …)`, with a summary on stderr) and the whole token response with
//! `--output json`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use aims_api::oauth::{RevokeRequest, RevokeTarget, TokenResponse};
use aims_core::id::{AgentName, Owner, ResourceServerName};
use aims_core::scope::ScopeSet;
use aims_sdk::oauth::{Binding, DelegationRequest, ExchangeRequest, Grant};
use aims_token::agent_key::AgentKey;
use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use time::OffsetDateTime;

use super::output::{self, fields, print, relative, timestamp};
use super::task::credentials;
use super::{ClientOpts, ENV_TOKEN, Output};

/// Longest lifetime a token may be asked for, seconds (the server's own bound).
const MAX_EXPIRES_IN: u64 = 86_400;

/// Task-token commands.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Exchange the agent's JWT-SVID for a task token (RFC 8693; RFC 7523 with --jwt-bearer)
    /// and print it.
    Exchange(ExchangeArgs),
    /// Hand part of a task to another agent: trade your task token for a token of that agent,
    /// within your own scope and lifetime, and print it.
    Delegate(DelegateArgs),
    /// Ask AIMS whether a token is active and what it carries (RFC 7662).
    Introspect(IntrospectArgs),
    /// Revoke a token (RFC 7009), or, as an operator, everything issued under a token, a
    /// delegation subtree, a task, an agent or an owner.
    Revoke(RevokeArgs),
}

/// `aims token exchange`.
#[derive(clap::Args, Debug)]
pub struct ExchangeArgs {
    /// File holding the agent's JWT-SVID (as `aims attest` prints it), or - for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub svid: PathBuf,
    /// The agent's private key (the PKCS#8 PEM file `aims attest --key` uses); signs the DPoP
    /// proof.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Space-separated scopes, `<action>:<resource>` (the server may grant fewer).
    #[arg(long, value_parser = parse_scopes)]
    pub scope: ScopeSet,
    /// The audience URI (or name) of the resource server the token is for.
    #[arg(long, value_name = "URI")]
    pub audience: String,
    /// The task's declared intent (required for a new task; must match for --task).
    #[arg(long, required_unless_present = "task")]
    pub intent: Option<String>,
    /// Continue this existing task instead of starting a new one.
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub task: Option<String>,
    /// Requested lifetime in seconds (the server grants at most its own limits).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_EXPIRES_IN))]
    pub expires_in: Option<u64>,
    /// Ask for a plain bearer token, sending no DPoP proof (only for agents registered with
    /// --allow-bearer).
    #[arg(long)]
    pub bearer: bool,
    /// Use the JWT-bearer grant (RFC 7523) instead of token exchange.
    #[arg(long)]
    pub jwt_bearer: bool,
}

/// `aims token delegate`.
#[derive(clap::Args, Debug)]
pub struct DelegateArgs {
    /// File holding the delegator's access token (as `aims token exchange` prints it), or - for
    /// stdin.
    #[arg(long, value_name = "FILE|-")]
    pub token_file: PathBuf,
    /// The delegator's private key (PKCS#8 PEM); signs the DPoP proof for its token.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// File holding the JWT-SVID of the agent to delegate to, or - for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub actor_svid: PathBuf,
    /// Scopes for the delegate, within the delegator's (default: all of them).
    #[arg(long, value_parser = parse_scopes)]
    pub scope: Option<ScopeSet>,
    /// The audience, which must be the delegator's (default: the delegator's).
    #[arg(long, value_name = "URI")]
    pub audience: Option<String>,
    /// Requested lifetime in seconds (never beyond the delegator's token).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_EXPIRES_IN))]
    pub expires_in: Option<u64>,
    /// The delegator's token is a bearer token: send no DPoP proof.
    #[arg(long)]
    pub bearer: bool,
}

/// `aims token introspect`.
#[derive(clap::Args, Debug)]
pub struct IntrospectArgs {
    /// File holding the token, or - for stdin.
    #[arg(value_name = "TOKEN_FILE|-")]
    pub token_file: PathBuf,
    /// Introspect as this resource server (it sees only tokens for its audience); without it,
    /// as the operator in AIMS_TOKEN.
    #[arg(long, value_name = "NAME", requires = "secret_file")]
    pub client: Option<ResourceServerName>,
    /// File holding the resource server's client secret, or - for stdin.
    #[arg(long, value_name = "FILE|-", requires = "client")]
    pub secret_file: Option<PathBuf>,
}

/// `aims token revoke`: one target.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .args(["token_file", "jti", "subtree", "task", "agent", "owner"])
))]
pub struct RevokeArgs {
    /// File holding a token to revoke (RFC 7009: holding it is enough), or - for stdin.
    /// Everything delegated from it is revoked too.
    #[arg(value_name = "TOKEN_FILE|-")]
    pub token_file: Option<PathBuf>,
    /// Operator: the token with this id (`jti`) and everything delegated from it.
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub jti: Option<String>,
    /// Operator: only what was delegated from the token with this id (`jti`).
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub subtree: Option<String>,
    /// Operator: everything issued for this task.
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub task: Option<String>,
    /// Operator: every credential this agent holds (the kill switch).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<AgentName>,
    /// Operator: every credential of every agent of this owner.
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<Owner>,
    /// Why; recorded in the audit log and the revocation feed.
    #[arg(long, conflicts_with = "token_file")]
    pub reason: Option<String>,
    /// With a token file: revoke as this resource server (only tokens for its audience).
    #[arg(long, value_name = "NAME", requires_all = ["secret_file", "token_file"])]
    pub client: Option<ResourceServerName>,
    /// File holding the resource server's client secret, or - for stdin.
    #[arg(long, value_name = "FILE|-", requires = "client")]
    pub secret_file: Option<PathBuf>,
}

/// Runs one `aims token` command.
pub async fn run_token(opts: &ClientOpts, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Exchange(args) => exchange(opts, args).await,
        TokenCommand::Delegate(args) => delegate(opts, args).await,
        TokenCommand::Introspect(args) => introspect(opts, args).await,
        TokenCommand::Revoke(args) => revoke(opts, args).await,
    }
}

async fn exchange(opts: &ClientOpts, args: ExchangeArgs) -> anyhow::Result<()> {
    let svid = read_credential(&args.svid, "SVID", Some("svid"))?;
    let key = read_key(&args.key)?;
    let client = opts.token_client()?.with_binding(binding(args.bearer));
    let grant = if args.jwt_bearer {
        Grant::JwtBearer
    } else {
        Grant::TokenExchange
    };
    let request = ExchangeRequest {
        scope: args.scope,
        audience: args.audience,
        intent: args.intent.unwrap_or_default(),
        task_id: args.task,
        expires_in: args.expires_in,
    };
    let response = client.obtain(grant, &svid, &key, &request).await?;
    print_token(opts, &response)
}

async fn delegate(opts: &ClientOpts, args: DelegateArgs) -> anyhow::Result<()> {
    one_stdin(&[Some(&args.token_file), Some(&args.actor_svid)])?;
    let token = read_credential(&args.token_file, "access token", Some("access_token"))?;
    let actor_svid = read_credential(&args.actor_svid, "actor SVID", Some("svid"))?;
    let key = read_key(&args.key)?;
    let client = opts.token_client()?.with_binding(binding(args.bearer));
    let request = DelegationRequest {
        scope: args.scope,
        audience: args.audience,
        expires_in: args.expires_in,
    };
    let response = client.delegate(&token, &key, &actor_svid, &request).await?;
    print_token(opts, &response)
}

async fn introspect(opts: &ClientOpts, args: IntrospectArgs) -> anyhow::Result<()> {
    one_stdin(&[Some(&args.token_file), args.secret_file.as_ref()])?;
    let token = read_credential(&args.token_file, "token", Some("access_token"))?;
    let answer = match (&args.client, &args.secret_file) {
        (Some(name), Some(file)) => {
            let secret = read_credential(file, "client secret", Some("client_secret"))?;
            opts.token_client()?
                .introspect(name, &secret, &token)
                .await?
        }
        _ => {
            if opts.token.as_deref().is_none_or(|t| t.trim().is_empty()) {
                bail!(
                    "give --client NAME --secret-file FILE (a resource server's credentials), \
                     or set {ENV_TOKEN} to an operator's API token"
                );
            }
            opts.client()?.introspect(&token).await?
        }
    };
    let now = OffsetDateTime::now_utc();
    print(opts.output, &answer, || render_introspection(&answer, now))
}

async fn revoke(opts: &ClientOpts, args: RevokeArgs) -> anyhow::Result<()> {
    let RevokeArgs {
        token_file,
        jti,
        subtree,
        task,
        agent,
        owner,
        reason,
        client,
        secret_file,
    } = args;
    if let Some(path) = token_file {
        one_stdin(&[Some(&path), secret_file.as_ref()])?;
        let token = read_credential(&path, "token", Some("access_token"))?;
        let secret = secret_file
            .as_deref()
            .map(|file| read_credential(file, "client secret", Some("client_secret")))
            .transpose()?;
        let caller = client.as_ref().zip(secret.as_deref());
        opts.token_client()?.revoke(&token, caller).await?;
        let json = serde_json::json!({ "accepted": true });
        return print(opts.output, &json, || {
            "Revocation accepted; the token and everything delegated from it no longer work \
             (the server answers the same for a token it does not know).\n"
                .to_owned()
        });
    }
    let (target, id) = match (jti, subtree, task, agent, owner) {
        (Some(id), ..) => (RevokeTarget::Token, id),
        (_, Some(id), ..) => (RevokeTarget::Subtree, id),
        (_, _, Some(id), ..) => (RevokeTarget::Task, id),
        (_, _, _, Some(name), _) => (RevokeTarget::Agent, name.to_string()),
        (_, _, _, _, Some(owner)) => (RevokeTarget::Owner, owner.to_string()),
        // The argument group requires exactly one target.
        _ => bail!("give a token file, --jti, --subtree, --task, --agent or --owner"),
    };
    let request = RevokeRequest {
        target,
        id: id.clone(),
        reason,
    };
    let answer = opts.client()?.revoke(&request).await?;
    print(opts.output, &serde_json::to_value(&answer)?, || {
        format!(
            "Revoked {} ({} {}).\n",
            credentials(answer.revoked),
            target_name(target),
            output::clean(&id)
        )
    })
}

fn binding(bearer: bool) -> Binding {
    if bearer {
        Binding::Bearer
    } else {
        Binding::Dpop
    }
}

fn target_name(target: RevokeTarget) -> &'static str {
    match target {
        RevokeTarget::Token => "token",
        RevokeTarget::Subtree => "delegations from token",
        RevokeTarget::Task => "task",
        RevokeTarget::Agent => "agent",
        RevokeTarget::Owner => "owner",
    }
}

fn parse_scopes(raw: &str) -> Result<ScopeSet, String> {
    ScopeSet::parse(raw).map_err(|e| e.to_string())
}

/// The access token alone (text, with a summary on stderr) or the whole response (JSON).
fn print_token(opts: &ClientOpts, response: &TokenResponse) -> anyhow::Result<()> {
    print(opts.output, &serde_json::to_value(response)?, || {
        format!("{}\n", response.access_token)
    })?;
    if opts.output == Output::Text {
        eprintln!("{}", summary(response));
    }
    Ok(())
}

/// One line about an issued token, without the token.
fn summary(response: &TokenResponse) -> String {
    format!(
        "{} token for task {}, scope {:?}, expires in {}s",
        output::clean(&response.token_type),
        output::clean(response.task_id.as_str()),
        output::clean(&response.scope),
        response.expires_in
    )
}

/// Refuses more than one `-` among `paths`: stdin can be read once.
fn one_stdin(paths: &[Option<&PathBuf>]) -> anyhow::Result<()> {
    let stdin = paths
        .iter()
        .flatten()
        .filter(|p| p.as_os_str() == "-")
        .count();
    if stdin > 1 {
        bail!("only one credential can come from stdin (-); give the others as files");
    }
    Ok(())
}

/// A credential from a file or stdin (`-`): the trimmed content, or, when the content is a
/// JSON object, its string field `json_field` (what `--output json` of the command that made
/// it printed). Errors name the file and what is missing, never the content.
pub(super) fn read_credential(
    path: &Path,
    what: &str,
    json_field: Option<&str>,
) -> anyhow::Result<String> {
    let (source, text) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read the {what} from stdin"))?;
        ("stdin".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} from {}", path.display()))?;
        (path.display().to_string(), text)
    };
    credential_in(&text, json_field).map_err(|why| anyhow!("{source}: {why} (expected the {what})"))
}

/// The credential in `text`; see [`read_credential`]. The error never quotes `text`.
fn credential_in(text: &str, json_field: Option<&str>) -> Result<String, String> {
    let text = text.trim();
    let value = match json_field {
        Some(field) if text.starts_with('{') => {
            let json: Value =
                serde_json::from_str(text).map_err(|_| "JSON that does not parse".to_owned())?;
            json.get(field)
                .and_then(Value::as_str)
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| format!("JSON without a {field} string"))?
        }
        _ => text.to_owned(),
    };
    if value.is_empty() {
        return Err("empty".to_owned());
    }
    Ok(value)
}

/// The agent's private key, as `aims attest --key` wrote it. Unlike `attest`, never creates
/// one: a token is bound to the key the SVID names.
pub(super) fn read_key(path: &Path) -> anyhow::Result<AgentKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key from {}", path.display()))?;
    AgentKey::from_pkcs8_pem(&pem).map_err(|_| {
        anyhow!(
            "{}: not a PKCS#8 P-256 or Ed25519 private key",
            path.display()
        )
    })
}

/// An introspection answer as `label  value` lines: `Active  no` alone for an inactive token.
fn render_introspection(answer: &Value, now: OffsetDateTime) -> String {
    if answer.get("active").and_then(Value::as_bool) != Some(true) {
        return fields(&[("Active", "no".to_owned())]);
    }
    let field = |key: &str| output::str_field(answer, key);
    let expires = answer
        .get("exp")
        .and_then(Value::as_i64)
        .and_then(|exp| OffsetDateTime::from_unix_timestamp(exp).ok())
        .map_or_else(
            || "-".to_owned(),
            |t| format!("{} ({})", timestamp(t), relative(t, now)),
        );
    let mut rows = vec![
        ("Active", "yes".to_owned()),
        ("Holder", field("client_id")),
        ("Subject", field("sub")),
        ("Audience", field("aud")),
        ("Scope", field("scope")),
        ("Task", field("task_id")),
        ("Intent", field("intent")),
        ("Type", field("token_type")),
        ("Expires", expires),
        ("Token ID", field("jti")),
    ];
    if let Some(chain) = delegation_chain(answer) {
        rows.push(("Delegated", chain));
    }
    fields(&rows)
}

/// The `act` chain, from the first agent to the current holder (`a → b → c`), if delegated.
fn delegation_chain(answer: &Value) -> Option<String> {
    let mut actors = Vec::new();
    let mut act = answer.get("act");
    while let Some(current) = act {
        actors.push(output::str_field(current, "sub"));
        act = current.get("act");
    }
    if actors.is_empty() {
        return None;
    }
    actors.reverse();
    Some(actors.join(" → "))
}

#[cfg(test)]
mod tests {
    use aims_core::id::TaskId;
    use clap::{CommandFactory, Parser};
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    /// As `main.rs` nests the commands: the global client options beside them, so a flag
    /// named like one of those (`--token`, `--output`) would clash here.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        cmd: TokenCommand,
    }

    fn parse(args: &[&str]) -> Result<TokenCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("token").chain(args.iter().copied())).map(|c| c.cmd)
    }

    /// `token exchange` with its required flags, `scope`, and `extra`.
    fn exchange(scope: &str, extra: &[&str]) -> Result<TokenCommand, clap::Error> {
        let mut args = vec![
            "exchange",
            "--svid",
            "s",
            "--key",
            "k",
            "--scope",
            scope,
            "--audience",
            "https://x",
        ];
        args.extend_from_slice(extra);
        parse(&args)
    }

    #[test]
    fn exchange_needs_an_intent_for_a_new_task() {
        Cli::command().debug_assert();
        let scope = "read:repo/a write:repo/a";
        assert!(exchange(scope, &[]).is_err());
        let TokenCommand::Exchange(args) = exchange(scope, &["--task", "t-1"]).unwrap() else {
            panic!("not exchange");
        };
        assert_eq!(args.scope.len(), 2);
        assert_eq!(args.task.as_deref(), Some("t-1"));
        assert!(exchange(scope, &["--intent", "fix"]).is_ok());
        assert!(exchange(scope, &["--intent", "x", "--expires-in", "0"]).is_err());
        assert!(exchange("nocolon", &["--intent", "x"]).is_err());
    }

    #[test]
    fn revoke_takes_exactly_one_target() {
        assert!(parse(&["revoke"]).is_err());
        assert!(parse(&["revoke", "tok.jwt", "--agent", "a"]).is_err());
        assert!(parse(&["revoke", "--jti", "j", "--task", "t"]).is_err());
        assert!(parse(&["revoke", "tok.jwt", "--reason", "why"]).is_err());
        assert!(parse(&["revoke", "--agent", "a", "--client", "rs"]).is_err());
        assert!(parse(&["revoke", "tok.jwt", "--client", "rs"]).is_err());
        assert!(parse(&["revoke", "tok.jwt", "--client", "rs", "--secret-file", "f"]).is_ok());
        let TokenCommand::Revoke(args) = parse(&[
            "revoke",
            "--owner",
            "alice@acme.example",
            "--reason",
            "left",
        ])
        .unwrap() else {
            panic!("not revoke");
        };
        assert_eq!(args.owner.unwrap().as_str(), "alice@acme.example");
        assert!(parse(&["introspect", "-", "--client", "rs"]).is_err());
        let TokenCommand::Delegate(args) = parse(&[
            "delegate",
            "--token-file",
            "-",
            "--key",
            "k",
            "--actor-svid",
            "b.svid",
            "--output",
            "json",
        ])
        .unwrap() else {
            panic!("not delegate");
        };
        assert_eq!(args.token_file, PathBuf::from("-"));
    }

    /// Token and task ids are random base64url, so one in 64 starts with `-`.
    #[test]
    fn ids_may_start_with_a_hyphen() {
        for flag in ["--jti", "--subtree", "--task"] {
            let TokenCommand::Revoke(args) = parse(&["revoke", flag, "-nkU_a", "--reason", "r"])
                .unwrap_or_else(|e| panic!("{flag}: {e}"))
            else {
                panic!("not revoke");
            };
            let id = args.jti.or(args.subtree).or(args.task);
            assert_eq!(id.as_deref(), Some("-nkU_a"), "{flag}");
        }
        let TokenCommand::Exchange(args) = exchange("read:a", &["--task", "-t1"]).unwrap() else {
            panic!("not exchange");
        };
        assert_eq!(args.task.as_deref(), Some("-t1"));
    }

    #[test]
    fn credentials_come_alone_or_inside_json() {
        assert_eq!(
            credential_in("  eyJ.a.b\n", Some("svid")).unwrap(),
            "eyJ.a.b"
        );
        assert_eq!(
            credential_in(r#"{"svid": "eyJ.a.b", "spiffe_id": "x"}"#, Some("svid")).unwrap(),
            "eyJ.a.b"
        );
        let missing = credential_in(r#"{"token": "s3cret"}"#, Some("svid")).unwrap_err();
        assert_eq!(missing, "JSON without a svid string");
        let broken = credential_in(r#"{"svid": "s3cret"#, Some("svid")).unwrap_err();
        assert!(!broken.contains("s3cret"), "{broken}");
        assert_eq!(credential_in(" \n", None).unwrap_err(), "empty");
        assert_eq!(credential_in("{raw}", None).unwrap(), "{raw}");
    }

    #[test]
    fn errors_name_the_file_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.json");
        std::fs::write(&file, r#"{"not_it": "s3cret-value"}"#).unwrap();
        let err = read_credential(&file, "access token", Some("access_token")).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("token.json")
                && text.contains("access_token")
                && !text.contains("s3cret"),
            "{text}"
        );
        std::fs::write(&file, "-----BEGIN PRIVATE KEY-----\ns3cret\n").unwrap();
        let err = format!("{:#}", read_key(&file).unwrap_err());
        assert!(err.contains("PKCS#8") && !err.contains("s3cret"), "{err}");
        let dash = PathBuf::from("-");
        assert!(one_stdin(&[Some(&dash), Some(&dash)]).is_err());
        assert!(one_stdin(&[Some(&dash), None, Some(&file)]).is_ok());
    }

    #[test]
    fn introspection_renders_the_chain_and_inactive_tokens() {
        let now = datetime!(2025-01-01 00:00 UTC);
        assert_eq!(
            render_introspection(&json!({"active": false}), now),
            "Active  no\n"
        );
        let answer = json!({
            "active": true,
            "client_id": "spiffe://d/agent/executor",
            "sub": "spiffe://d/agent/planner",
            "aud": "https://tools",
            "scope": "read:repo/a",
            "task_id": "t-1",
            "intent": "fix",
            "token_type": "DPoP",
            "exp": now.unix_timestamp() + 300,
            "jti": "j-1",
            "act": {"sub": "spiffe://d/agent/executor", "act": {"sub": "spiffe://d/agent/planner"}}
        });
        let text = render_introspection(&answer, now);
        assert!(
            text.contains("Expires    2025-01-01T00:05:00Z (in 5m)\n")
                && text
                    .ends_with("Delegated  spiffe://d/agent/planner → spiffe://d/agent/executor\n"),
            "{text}"
        );
        let own = json!({"active": true, "scope": "read:repo/a"});
        assert!(!render_introspection(&own, now).contains("Delegated"));
    }

    #[test]
    fn summaries_leave_the_token_out() {
        let response = TokenResponse {
            access_token: "eyJ.s3cret.sig".into(),
            issued_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
            token_type: "DPoP".into(),
            expires_in: 900,
            scope: "read:repo/a".into(),
            task_id: TaskId::new("t-1").unwrap(),
        };
        assert_eq!(
            summary(&response),
            "DPoP token for task t-1, scope \"read:repo/a\", expires in 900s"
        );
    }
}
