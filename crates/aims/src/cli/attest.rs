//! `aims attest`: the agent-side command for scripts and agent developers. It keeps the agent's
//! private key in a file (created with mode 0600 if absent, never sent), signs an attestation
//! proof over a fresh nonce and the evidence file, and prints the JWT-SVID.
//!
//! Text output is the SVID alone on stdout (ready for `$(aims attest …)`); `--output json`
//! prints the server's answer (`svid`, `spiffe_id`, `expires_at`, `posture_digest`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aims_core::posture::Evidence;
use aims_sdk::attest::{Attestor, Credential};
use aims_token::agent_key::{AgentKey, AgentKeyKind};
use anyhow::{Context as _, bail};
use ring::rand::SystemRandom;
use secrecy::ExposeSecret as _;

use super::output;
use super::{ClientOpts, Output};

/// Attest to the AIMS server and print a JWT-SVID.
#[derive(clap::Args, Debug)]
pub struct AttestArgs {
    /// First boot: the one-time join token from `aims agent register`.
    #[arg(
        long,
        env = "AIMS_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "renew"
    )]
    pub join_token: Option<String>,
    /// File holding a token of a trusted third-party issuer (a Kubernetes service-account
    /// token, a CI OIDC token) instead of a join token.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["join_token", "renew"])]
    pub federated_token: Option<PathBuf>,
    /// Renew: present the current SVID (`--svid FILE`) instead of a join token.
    #[arg(long, requires = "svid")]
    pub renew: bool,
    /// File holding the current JWT-SVID (with `--renew`).
    #[arg(long, value_name = "FILE")]
    pub svid: Option<PathBuf>,
    /// JSON file with the runtime evidence (model, toolchain, deployment).
    #[arg(long, value_name = "FILE")]
    pub evidence: PathBuf,
    /// The agent's private key (PKCS#8 PEM); created with mode 0600 if it does not exist.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Key type when the key file is created.
    #[arg(long, value_enum, default_value = "p256")]
    pub key_type: KeyType,
    /// Audience of the SVID (default: the AIMS issuer).
    #[arg(long)]
    pub audience: Option<String>,
}

/// The agent key types AIMS accepts.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KeyType {
    /// ECDSA P-256 (ES256).
    P256,
    /// Ed25519 (EdDSA).
    Ed25519,
}

/// Runs `aims attest`.
pub async fn run_attest(opts: &ClientOpts, args: AttestArgs) -> anyhow::Result<()> {
    let read = |path: &Path| -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(path)
            .with_context(|| format!("{}", path.display()))?
            .trim()
            .to_owned())
    };
    let credential = match (
        &args.join_token,
        args.renew,
        &args.svid,
        &args.federated_token,
    ) {
        (Some(token), false, _, None) => Credential::JoinToken(token.trim().to_owned()),
        (None, true, Some(path), None) => Credential::Svid(read(path)?),
        (None, false, None, Some(path)) => Credential::Federated(read(path)?),
        _ => {
            bail!("give --join-token (first boot), --renew --svid FILE, or --federated-token FILE")
        }
    };
    let evidence = read_evidence(&args.evidence)?;
    let key = load_or_create_key(&args.key, args.key_type)?;
    let attestor = Attestor::new(opts.public_client()?, Arc::new(key));
    let answer = attestor
        .attest(&evidence, &credential, args.audience.as_deref())
        .await?;
    let json = serde_json::to_value(&answer)?;
    output::print(opts.output, &json, || format!("{}\n", answer.svid))?;
    if opts.output == Output::Text {
        eprintln!(
            "identity {} until {}",
            output::clean(&answer.spiffe_id),
            output::timestamp(answer.expires_at)
        );
    }
    Ok(())
}

fn read_evidence(path: &Path) -> anyhow::Result<Evidence> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let evidence: Evidence = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid evidence", path.display()))?;
    evidence
        .validate()
        .with_context(|| format!("{}: not valid evidence", path.display()))?;
    Ok(evidence)
}

/// Reads the key file, or creates it (0600, never overwriting) with a new key.
fn load_or_create_key(path: &Path, kind: KeyType) -> anyhow::Result<AgentKey> {
    match std::fs::read_to_string(path) {
        Ok(pem) => AgentKey::from_pkcs8_pem(&pem).with_context(|| {
            format!(
                "{}: not a PKCS#8 P-256 or Ed25519 private key",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kind = match kind {
                KeyType::P256 => AgentKeyKind::P256,
                KeyType::Ed25519 => AgentKeyKind::Ed25519,
            };
            let key = AgentKey::generate(kind, &SystemRandom::new())?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("{}", path.display()))?;
            file.write_all(key.to_pkcs8_pem().expose_secret().as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("{}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}
