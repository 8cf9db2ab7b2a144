//! `aims`: the one binary. `aims server` runs the server, `aims demo` runs the acceptance
//! scenarios against a real server on loopback, and the client subcommands (`agent`, `user`,
//! `key`, `policy`, `bundle`, `audit`, `attest`, `token`, `task`, `resource-server`,
//! `report`) drive a running server through the SDK.
//!
//! This file only parses flags and wires crates together; behaviour lives in the libraries.

mod cli;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use aims_server::config::{Config, Overrides};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret as _;
use tracing_subscriber::EnvFilter;

/// Log filter, e.g. `info` or `aims_server=debug` (tracing-subscriber syntax).
const ENV_LOG: &str = "AIMS_LOG";
/// `json` for one JSON object per log line; anything else gives human-readable lines.
const ENV_LOG_FORMAT: &str = "AIMS_LOG_FORMAT";

#[derive(Parser)]
#[command(
    name = "aims",
    version,
    about = "AIMS: the Agent Identity Management System"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the AIMS server.
    Server(ServerArgs),
    /// Run the gateway: every tool call through it is authenticated, decided by AIMS and
    /// forwarded with the route's secret injected (see `crates/aims-gateway`).
    Gateway {
        /// The gateway's TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Start a real server on loopback with a temporary data directory, run the acceptance
    /// scenarios against it, and print what happened.
    Demo,
    /// Register and manage agents.
    Agent {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::AgentCommand,
    },
    /// Manage human principals (operators, approvers, auditors).
    User {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::UserCommand,
    },
    /// Inspect and rotate the trust domain's signing keys.
    Key {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::KeyCommand,
    },
    /// Test, push and show policy sets.
    Policy {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::PolicyCommand,
    },
    /// Show the SPIFFE trust bundle.
    Bundle {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::BundleCommand,
    },
    /// Attest as an agent (join token or renewal) and print a JWT-SVID.
    Attest {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(flatten)]
        args: cli::AttestArgs,
    },
    /// Read and verify the audit log.
    Audit {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::AuditCommand,
    },
    /// Obtain, delegate, introspect and revoke task tokens.
    Token {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::TokenCommand,
    },
    /// List, show and end tasks.
    Task {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::TaskCommand,
    },
    /// List, watch, show, approve and deny approval requests (humans).
    Approval {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::ApprovalCommand,
    },
    /// Store, rotate and delete brokered secrets (values are never shown).
    Secret {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::SecretCommand,
    },
    /// Add database engines and their role templates (dynamic database credentials).
    Engine {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::EngineCommand,
    },
    /// Ask for, renew, list, show and revoke database leases.
    Lease {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::LeaseCommand,
    },
    /// Register and manage resource servers (the tool servers task tokens are issued for).
    ResourceServer {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(subcommand)]
        command: cli::ResourceServerCommand,
    },
    /// The governance report: stale, ownerless and over-privileged agents, overdue secrets,
    /// unmanaged callers, each finding with its OWASP NHI Top 10 item (text, JSON or HTML).
    Report {
        #[command(flatten)]
        opts: cli::ClientOpts,
        #[command(flatten)]
        args: cli::ReportArgs,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// TOML config file (also AIMS_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, default 127.0.0.1:8700 (also AIMS_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (also AIMS_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://… (also AIMS_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
    /// Trust domain created at first start (also AIMS_TRUST_DOMAIN).
    #[arg(long)]
    trust_domain: Option<String>,
    /// Public base URL used as issuer (also AIMS_PUBLIC_URL).
    #[arg(long)]
    public_url: Option<String>,
    /// PEM certificate chain to serve HTTPS with, reloaded when it changes (also AIMS_TLS_CERT).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate (also AIMS_TLS_KEY).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(args) => serve(args).await,
        Command::Demo => demo::run().await,
        Command::Gateway { config } => gateway(&config).await,
        Command::Agent { opts, command } => cli::run_agent(&opts, command).await,
        Command::User { opts, command } => cli::run_user(&opts, command).await,
        Command::Key { opts, command } => cli::run_key(&opts, command).await,
        Command::Bundle { opts, command } => cli::run_bundle(&opts, command).await,
        Command::Policy { opts, command } => cli::run_policy(&opts, command).await,
        Command::Audit { opts, command } => cli::run_audit(&opts, command).await,
        Command::Attest { opts, args } => cli::run_attest(&opts, args).await,
        Command::Token { opts, command } => cli::run_token(&opts, command).await,
        Command::Task { opts, command } => cli::run_task(&opts, command).await,
        Command::Approval { opts, command } => cli::run_approval(&opts, command).await,
        Command::Secret { opts, command } => cli::run_secret(&opts, command).await,
        Command::Engine { opts, command } => cli::run_engine(&opts, command).await,
        Command::Lease { opts, command } => cli::run_lease(&opts, command).await,
        Command::ResourceServer { opts, command } => cli::run_resource_server(&opts, command).await,
        Command::Report { opts, args } => cli::run_report(&opts, args).await,
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_env(ENV_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var(ENV_LOG_FORMAT).is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let overrides = Overrides {
        config_file: args.config,
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        trust_domain: args.trust_domain,
        public_url: args.public_url,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    };
    let config = Config::load(&overrides)?;
    let data_dir = config.data_dir.clone();
    let trust_domain = config.trust_domain.clone();
    let server = aims_server::server::start(config, &|name| std::env::var(name).ok()).await?;
    if let Some(credential) = &server.bootstrap_credential {
        // Printed once, to the terminal only: never logged, only its hash is stored.
        println!(
            "bootstrap admin credential (shown once, store it now): {}",
            credential.expose_secret()
        );
    }
    tracing::info!(
        addr = %server.addr,
        trust_domain = %trust_domain,
        data_dir = %data_dir.display(),
        "aims server started"
    );
    println!("listening on {}", server.base_url);
    shutdown_signal().await?;
    tracing::info!("shutting down: finishing in-flight requests");
    server.shutdown();
    server.wait().await?;
    Ok(())
}

/// How often `aims gateway` looks at its configuration file for changes.
const GATEWAY_CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

async fn gateway(path: &std::path::Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    init_logging();
    let config = aims_gateway::Config::load(path)?;
    let gateway = aims_gateway::start(config).await?;
    tracing::info!(addr = %gateway.addr, "aims gateway started");
    println!("gateway listening on {}", gateway.base_url);
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut seen = modified(path);
    let mut hangup = signal(SignalKind::hangup())?;
    let mut poll = tokio::time::interval(GATEWAY_CONFIG_POLL);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let reason = tokio::select! {
            stopped = &mut stop => { stopped?; break; }
            _ = hangup.recv() => "SIGHUP",
            _ = poll.tick() => {
                let now = modified(path);
                if now == seen { continue; }
                seen = now;
                "the file changed"
            }
        };
        // A configuration that does not load, or that changes what only a restart can,
        // leaves the routes in force as they are.
        match aims_gateway::Config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| gateway.reload(c))
        {
            Ok(routes) => tracing::info!(reason, routes, "gateway routes reloaded"),
            Err(error) => {
                tracing::error!(reason, %error, "gateway configuration not reloaded; the routes in force stay")
            }
        }
    }
    gateway.shutdown();
    gateway.wait().await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
