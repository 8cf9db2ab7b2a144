//! The client subcommands of the `aims` binary — `agent`, `user`, `key`, `bundle`, `audit`,
//! `policy`, `task`, `approval`, `secret`, `engine`, `lease`, `resource-server`, `report`,
//! the agent-side `attest` and the task-token commands of `token` — which drive a running
//! AIMS server through the SDK.
//!
//! This module owns the command-line shape (clap definitions), turning flags into API
//! requests, and printing answers as text or JSON. It must not decide anything the server
//! decides: validation beyond parsing, authorization and state rules stay on the server.
//! `main.rs` flattens [`ClientOpts`] into its top-level options and calls one `run_*` per
//! command group; each returns an error whose `Display` is the message to print after
//! `error: ` (for a refused call, `<code>: <message>`).

use std::fmt;

use aims_sdk::{AdminClient, SdkError, TokenClient};

mod agent;
mod approval;
mod attest;
pub(crate) mod audit;
mod bundle;
mod key;
mod lease;
mod output;
mod policy;
pub(crate) mod report;
pub(crate) mod report_html;
mod resource_server;
mod secret;
mod task;
mod token;
mod user;

pub use agent::{AgentCommand, run_agent};
pub use approval::{ApprovalCommand, run_approval};
pub use attest::{AttestArgs, run_attest};
pub use audit::{AuditCommand, run_audit};
pub use bundle::{BundleCommand, run_bundle};
pub use key::{KeyCommand, run_key};
pub use lease::{EngineCommand, LeaseCommand, run_engine, run_lease};
pub use policy::{PolicyCommand, run_policy};
pub use report::{ReportArgs, run_report};
pub use resource_server::{ResourceServerCommand, run_resource_server};
pub use secret::{SecretCommand, run_secret};
pub use task::{TaskCommand, run_task};
pub use token::{TokenCommand, run_token};
pub use user::{UserCommand, run_user};

/// The environment variable holding the server address.
pub const ENV_ADDR: &str = "AIMS_ADDR";
/// The environment variable holding the operator's API token.
pub const ENV_TOKEN: &str = "AIMS_TOKEN";

/// Where the server is, who is calling, and how to print answers. Shared by every client
/// command.
#[derive(clap::Args, Clone)]
pub struct ClientOpts {
    /// Base URL of the AIMS server.
    #[arg(
        long,
        env = "AIMS_ADDR",
        default_value = "http://127.0.0.1:8700",
        global = true
    )]
    pub addr: String,
    /// Operator API token (prefer the AIMS_TOKEN variable: flags show in the process list).
    #[arg(long, env = "AIMS_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print human-readable text, or the server's JSON response body.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub output: Output,
}

impl fmt::Debug for ClientOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOpts")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("output", &self.output)
            .finish()
    }
}

/// How client commands print their result.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Short, aligned, human-readable text.
    Text,
    /// The response body as pretty-printed JSON.
    Json,
}

impl ClientOpts {
    /// A client for the authenticated `/v1` API; refuses early, naming `AIMS_TOKEN`, when no
    /// token is configured.
    fn client(&self) -> anyhow::Result<AdminClient> {
        if self.token.as_deref().is_none_or(|t| t.trim().is_empty()) {
            anyhow::bail!(
                "no API token: set {ENV_TOKEN} (or pass --token) to an operator's API token"
            );
        }
        self.build(self.token.clone())
    }

    /// A client for the public endpoints; the token is neither needed nor sent.
    fn public_client(&self) -> anyhow::Result<AdminClient> {
        self.build(None)
    }

    /// A client of the OAuth endpoints (token, introspection, revocation); the operator's
    /// token is not sent.
    fn token_client(&self) -> anyhow::Result<TokenClient> {
        TokenClient::new(&self.addr).map_err(address_error)
    }

    fn build(&self, token: Option<String>) -> anyhow::Result<AdminClient> {
        AdminClient::new(&self.addr, token).map_err(address_error)
    }
}

/// A client-construction error, naming the variable to fix.
fn address_error(e: SdkError) -> anyhow::Error {
    match e {
        SdkError::InvalidUrl(why) => {
            anyhow::anyhow!("invalid server address (--addr or {ENV_ADDR}): {why}")
        }
        SdkError::InvalidToken => anyhow::anyhow!(
            "invalid API token in {ENV_TOKEN} (or --token): it contains characters that \
             cannot be sent in an HTTP header"
        ),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(addr: &str, token: Option<&str>) -> ClientOpts {
        ClientOpts {
            addr: addr.to_owned(),
            token: token.map(str::to_owned),
            output: Output::Text,
        }
    }

    #[test]
    fn a_missing_token_names_the_variable() {
        for token in [None, Some(""), Some("  ")] {
            let err = opts("http://127.0.0.1:8700", token).client().unwrap_err();
            assert!(err.to_string().contains("AIMS_TOKEN"), "{err}");
        }
        assert!(opts("http://127.0.0.1:8700", None).public_client().is_ok());
        assert!(opts("http://127.0.0.1:8700", Some("t")).client().is_ok());
    }

    #[test]
    fn bad_addresses_name_the_variable() {
        let err = opts("127.0.0.1:8700", Some("t")).client().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("AIMS_ADDR") && text.contains("http://"),
            "{text}"
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let debug = format!("{:?}", opts("http://x", Some("s3cret")));
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
