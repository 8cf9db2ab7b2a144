//! Server configuration: defaults, a versioned TOML file, `AIMS_*` environment variables and
//! command-line overrides, merged in that order and validated once into [`Config`].
//!
//! The raw file is deserialized with unknown keys rejected; every problem found is reported
//! together. No configuration at all yields a working embedded server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aims_core::id::TrustDomain;
use serde::Deserialize;

use crate::federation::{RawTrustedIssuer, TrustedIssuer};
use crate::limits::Rate;
use crate::tls::TlsFiles;

/// Default listen address (loopback only; expose deliberately).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
/// Default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "aims.local";
/// The only config file version this server reads.
pub const CONFIG_VERSION: u32 = 1;

/// Path of the TOML config file.
pub const ENV_CONFIG: &str = "AIMS_CONFIG";
/// Listen address, e.g. `127.0.0.1:8700`.
pub const ENV_LISTEN: &str = "AIMS_LISTEN";
/// Data directory (SQLite database, master key file).
pub const ENV_DATA_DIR: &str = "AIMS_DATA_DIR";
/// Database URL: `sqlite://PATH` or `postgres://…`.
pub const ENV_DATABASE_URL: &str = "AIMS_DATABASE_URL";
/// Trust domain name.
pub const ENV_TRUST_DOMAIN: &str = "AIMS_TRUST_DOMAIN";
/// Public base URL (issuer), when it differs from `http://<listen>`.
pub const ENV_PUBLIC_URL: &str = "AIMS_PUBLIC_URL";
/// The master key, base64 (instead of the key file in the data directory).
pub const ENV_MASTER_KEY: &str = "AIMS_MASTER_KEY";
/// The bootstrap admin credential to use at first start (for automation).
pub const ENV_BOOTSTRAP_TOKEN: &str = "AIMS_BOOTSTRAP_TOKEN";
/// Where drift notifications are POSTed.
pub const ENV_DRIFT_WEBHOOK_URL: &str = "AIMS_DRIFT_WEBHOOK_URL";
/// Where a notification of every new approval request is POSTed.
pub const ENV_APPROVAL_WEBHOOK_URL: &str = "AIMS_APPROVAL_WEBHOOK_URL";
/// Where recertification notices (due soon, suspended) are POSTed.
pub const ENV_RECERTIFY_WEBHOOK_URL: &str = "AIMS_RECERTIFY_WEBHOOK_URL";
/// Seconds an agent may stay past its recertification date before it is suspended.
pub const ENV_RECERTIFY_GRACE_S: &str = "AIMS_RECERTIFY_GRACE_S";
/// Seconds before its recertification date an agent's owner is warned.
pub const ENV_RECERTIFY_WARN_S: &str = "AIMS_RECERTIFY_WARN_S";
/// Free space, in MiB, the SQLite store keeps on its volume; writes are refused below it.
pub const ENV_STORAGE_RESERVE_MB: &str = "AIMS_STORAGE_RESERVE_MB";
/// Rate limit per source on the endpoints anyone may call, `RATE/BURST` (default `100/500`).
pub const ENV_RATE_LIMIT_PER_SOURCE: &str = "AIMS_RATE_LIMIT_PER_SOURCE";
/// Rate limit per credential on the token endpoints, `RATE/BURST` (default `50/200`).
pub const ENV_RATE_LIMIT_PER_CREDENTIAL: &str = "AIMS_RATE_LIMIT_PER_CREDENTIAL";
/// Default per-source rate limit.
pub const DEFAULT_RATE_LIMIT_PER_SOURCE: &str = "100/500";
/// Default per-credential rate limit.
pub const DEFAULT_RATE_LIMIT_PER_CREDENTIAL: &str = "50/200";
/// PEM certificate chain to serve HTTPS with (with [`ENV_TLS_KEY`]).
pub const ENV_TLS_CERT: &str = "AIMS_TLS_CERT";
/// PEM private key to serve HTTPS with (with [`ENV_TLS_CERT`]).
pub const ENV_TLS_KEY: &str = "AIMS_TLS_KEY";
/// `true` lets SSF push streams deliver to loopback and private addresses (default `false`).
pub const ENV_SSF_PUSH_PRIVATE_NETWORKS: &str = "AIMS_SSF_PUSH_PRIVATE_NETWORKS";

/// The config file as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Must be [`CONFIG_VERSION`].
    pub version: Option<u32>,
    /// Listen address.
    pub listen: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Database URL.
    pub database_url: Option<String>,
    /// Trust domain.
    pub trust_domain: Option<String>,
    /// Public base URL.
    pub public_url: Option<String>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: Option<usize>,
    /// Whole-request timeout, seconds.
    pub request_timeout_s: Option<u64>,
    /// Lifetime of join tokens, seconds.
    pub join_token_ttl_s: Option<u64>,
    /// Default days until an agent must be recertified.
    pub recertify_days: Option<u32>,
    /// Seconds an agent may stay past its recertification date before it is suspended.
    pub recertify_grace_s: Option<u64>,
    /// Seconds before its recertification date the owner is warned.
    pub recertify_warn_s: Option<u64>,
    /// How often recertification dates are checked, seconds.
    pub recertify_check_s: Option<u64>,
    /// Where recertification notices are POSTed (signed JWS bodies), if anywhere.
    pub recertify_webhook_url: Option<String>,
    /// `spiffe_refresh_hint` of the bundle, seconds.
    pub bundle_refresh_hint_s: Option<u64>,
    /// How often the key set is re-read from the store (for other replicas' rotations), seconds.
    pub key_reload_s: Option<u64>,
    /// Default and longest lifetime of a JWT-SVID, seconds (an agent's own limit may be lower).
    pub svid_ttl_s: Option<u64>,
    /// Global ceiling on access-token lifetime, seconds.
    pub max_token_ttl_s: Option<u64>,
    /// Global ceiling on delegation depth.
    pub max_delegation_depth: Option<u64>,
    /// Default and longest task lifetime, seconds.
    pub task_ttl_s: Option<u64>,
    /// How often each replica reads new revocations from the store, milliseconds.
    pub revocation_poll_ms: Option<u64>,
    /// How long a replica may go without reading the revocation log before it refuses every
    /// token, seconds.
    pub revocation_max_staleness_s: Option<u64>,
    /// Where drift notifications are POSTed (signed JWS bodies), if anywhere.
    pub drift_webhook_url: Option<String>,
    /// Where new approval requests are announced (signed JWS bodies), if anywhere.
    pub approval_webhook_url: Option<String>,
    /// Third-party issuers whose tokens prove an agent's identity at attestation.
    pub trusted_issuers: Option<Vec<RawTrustedIssuer>>,
    /// Whether SSF push streams may deliver to loopback and private addresses.
    pub ssf_push_private_networks: Option<bool>,
    /// Free space (MiB) the SQLite store keeps on its volume; 0 turns the guard off.
    pub storage_reserve_mb: Option<u64>,
    /// Window of anonymous refusals, seconds: per window each source's first refusals are
    /// written one by one and the rest summarized.
    pub refusal_window_s: Option<u64>,
    /// Anonymous refusals written one by one per source per window.
    pub refusals_written_per_source: Option<u64>,
    /// The audit log is checkpointed at least this often while it grows, milliseconds.
    pub audit_checkpoint_interval_ms: Option<u64>,
    /// ... and as soon as this many entries were appended since the last checkpoint.
    pub audit_checkpoint_entries: Option<u64>,
    /// PEM certificate chain (leaf first) to serve HTTPS with; reloaded when it changes.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub tls_key_file: Option<PathBuf>,
    /// Per-source rate limit, `RATE/BURST` (requests per second, and at once).
    pub rate_limit_per_source: Option<String>,
    /// Per-credential rate limit on the token endpoints, `RATE/BURST`.
    pub rate_limit_per_credential: Option<String>,
}

impl RawConfig {
    /// Fills unset fields from `other` (which wins).
    fn overlay(self, other: RawConfig) -> RawConfig {
        RawConfig {
            version: other.version.or(self.version),
            listen: other.listen.or(self.listen),
            data_dir: other.data_dir.or(self.data_dir),
            database_url: other.database_url.or(self.database_url),
            trust_domain: other.trust_domain.or(self.trust_domain),
            public_url: other.public_url.or(self.public_url),
            max_body_bytes: other.max_body_bytes.or(self.max_body_bytes),
            request_timeout_s: other.request_timeout_s.or(self.request_timeout_s),
            join_token_ttl_s: other.join_token_ttl_s.or(self.join_token_ttl_s),
            recertify_days: other.recertify_days.or(self.recertify_days),
            recertify_grace_s: other.recertify_grace_s.or(self.recertify_grace_s),
            recertify_warn_s: other.recertify_warn_s.or(self.recertify_warn_s),
            recertify_check_s: other.recertify_check_s.or(self.recertify_check_s),
            recertify_webhook_url: other.recertify_webhook_url.or(self.recertify_webhook_url),
            bundle_refresh_hint_s: other.bundle_refresh_hint_s.or(self.bundle_refresh_hint_s),
            key_reload_s: other.key_reload_s.or(self.key_reload_s),
            svid_ttl_s: other.svid_ttl_s.or(self.svid_ttl_s),
            max_token_ttl_s: other.max_token_ttl_s.or(self.max_token_ttl_s),
            max_delegation_depth: other.max_delegation_depth.or(self.max_delegation_depth),
            task_ttl_s: other.task_ttl_s.or(self.task_ttl_s),
            revocation_poll_ms: other.revocation_poll_ms.or(self.revocation_poll_ms),
            revocation_max_staleness_s: other
                .revocation_max_staleness_s
                .or(self.revocation_max_staleness_s),
            drift_webhook_url: other.drift_webhook_url.or(self.drift_webhook_url),
            approval_webhook_url: other.approval_webhook_url.or(self.approval_webhook_url),
            trusted_issuers: other.trusted_issuers.or(self.trusted_issuers),
            ssf_push_private_networks: other
                .ssf_push_private_networks
                .or(self.ssf_push_private_networks),
            storage_reserve_mb: other.storage_reserve_mb.or(self.storage_reserve_mb),
            tls_cert_file: other.tls_cert_file.or(self.tls_cert_file),
            tls_key_file: other.tls_key_file.or(self.tls_key_file),
            refusal_window_s: other.refusal_window_s.or(self.refusal_window_s),
            refusals_written_per_source: other
                .refusals_written_per_source
                .or(self.refusals_written_per_source),
            audit_checkpoint_interval_ms: other
                .audit_checkpoint_interval_ms
                .or(self.audit_checkpoint_interval_ms),
            audit_checkpoint_entries: other
                .audit_checkpoint_entries
                .or(self.audit_checkpoint_entries),
            rate_limit_per_source: other.rate_limit_per_source.or(self.rate_limit_per_source),
            rate_limit_per_credential: other
                .rate_limit_per_credential
                .or(self.rate_limit_per_credential),
        }
    }

    /// The settings given by `AIMS_*` environment variables, read through `var`.
    fn from_env(var: &dyn Fn(&str) -> Option<String>) -> RawConfig {
        RawConfig {
            listen: var(ENV_LISTEN),
            data_dir: var(ENV_DATA_DIR).map(PathBuf::from),
            database_url: var(ENV_DATABASE_URL),
            trust_domain: var(ENV_TRUST_DOMAIN),
            public_url: var(ENV_PUBLIC_URL),
            drift_webhook_url: var(ENV_DRIFT_WEBHOOK_URL),
            approval_webhook_url: var(ENV_APPROVAL_WEBHOOK_URL),
            recertify_webhook_url: var(ENV_RECERTIFY_WEBHOOK_URL),
            tls_cert_file: var(ENV_TLS_CERT).map(PathBuf::from),
            tls_key_file: var(ENV_TLS_KEY).map(PathBuf::from),
            rate_limit_per_source: var(ENV_RATE_LIMIT_PER_SOURCE),
            rate_limit_per_credential: var(ENV_RATE_LIMIT_PER_CREDENTIAL),
            ..RawConfig::default()
        }
    }
}

/// Command-line flags of `aims server`; each overrides file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`.
    pub config_file: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--trust-domain`.
    pub trust_domain: Option<String>,
    /// `--public-url`.
    pub public_url: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Data directory (created if missing).
    pub data_dir: PathBuf,
    /// Database URL; secrets in it are never logged.
    pub database_url: String,
    /// The trust domain to create at first start (must match afterwards).
    pub trust_domain: TrustDomain,
    /// Public base URL without trailing slash; `None` means `http://<bound address>`.
    pub public_url: Option<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Lifetime of join tokens.
    pub join_token_ttl: Duration,
    /// Default days until an agent must be recertified.
    pub recertify_days: u32,
    /// How long an agent may stay past its recertification date before it is suspended
    /// (default 7 days).
    pub recertify_grace: Duration,
    /// How long before its recertification date the owner is warned (default 14 days).
    pub recertify_warn: Duration,
    /// How often recertification dates are checked (default 5 minutes).
    pub recertify_check: Duration,
    /// Where recertification notices are POSTed.
    pub recertify_webhook_url: Option<String>,
    /// `spiffe_refresh_hint` of the bundle.
    pub bundle_refresh_hint: Duration,
    /// How often the key set is re-read from the store.
    pub key_reload: Duration,
    /// Default and longest lifetime of a JWT-SVID.
    pub svid_ttl: Duration,
    /// Global ceiling on access-token lifetime (default 15 minutes).
    pub max_token_ttl: Duration,
    /// Global ceiling on delegation depth.
    pub max_delegation_depth: u32,
    /// Default and longest task lifetime.
    pub task_ttl: Duration,
    /// How often the revocation log is read.
    pub revocation_poll: Duration,
    /// How stale the revocation view may get before tokens are refused.
    pub revocation_max_staleness: Duration,
    /// Where drift notifications are POSTed.
    pub drift_webhook_url: Option<String>,
    /// Where new approval requests are announced.
    pub approval_webhook_url: Option<String>,
    /// Third-party issuers trusted for federated attestation.
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Whether SSF push streams may deliver to loopback and private addresses (default: only
    /// public ones, so a receiver cannot aim the server at its own network).
    pub ssf_push_private_networks: bool,
    /// Free bytes the SQLite store keeps on its volume (default 64 MiB); writes are refused
    /// with 503 below it, and `/readyz` says so.
    pub storage_reserve_bytes: u64,
    /// The certificate and key to serve HTTPS with ([`crate::tls`]); plain HTTP without.
    pub tls: Option<TlsFiles>,
    /// Window of anonymous refusals ([`crate::refusals`]; default 60 s).
    pub refusal_window: Duration,
    /// Anonymous refusals written one by one per source per window (default 10).
    pub refusals_written_per_source: u64,
    /// How often a growing audit log is checkpointed ([`crate::tlog`]; default 1 s).
    pub audit_checkpoint_interval: Duration,
    /// Entries appended since the last checkpoint that call for the next one (default 1000).
    pub audit_checkpoint_entries: u64,
    /// Rate limit per source on the endpoints anyone may call ([`crate::limits`]).
    pub rate_limit_per_source: Rate,
    /// Rate limit per credential on the token endpoints.
    pub rate_limit_per_credential: Rate,
}

/// Every problem found in the configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Loads defaults, then the config file (`--config` or `AIMS_CONFIG`), then `AIMS_*`
    /// variables, then flags.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigErrors> {
        Self::load_with(overrides, &|name| std::env::var(name).ok())
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_with(
        overrides: &Overrides,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let file = overrides
            .config_file
            .clone()
            .or_else(|| var(ENV_CONFIG).map(PathBuf::from));
        let from_file = match file {
            Some(path) => read_file(&path)?,
            None => RawConfig::default(),
        };
        let from_flags = RawConfig {
            listen: overrides.listen.clone(),
            data_dir: overrides.data_dir.clone(),
            database_url: overrides.database_url.clone(),
            trust_domain: overrides.trust_domain.clone(),
            public_url: overrides.public_url.clone(),
            tls_cert_file: overrides.tls_cert.clone(),
            tls_key_file: overrides.tls_key.clone(),
            ..RawConfig::default()
        };
        let raw = from_file
            .overlay(RawConfig::from_env(var))
            .overlay(from_flags);
        Self::try_from_raw(raw, var)
    }

    fn try_from_raw(
        raw: RawConfig,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        if let Some(version) = raw.version
            && version != CONFIG_VERSION
        {
            errors.push(format!(
                "version: this server reads config version {CONFIG_VERSION}, found {version}"
            ));
        }
        let listen = raw
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse::<SocketAddr>()
            .map_err(|_| errors.push("listen: expected IP:PORT, e.g. 127.0.0.1:8700".to_owned()))
            .ok();
        let data_dir = raw.data_dir.unwrap_or_else(|| default_data_dir(var));
        let database_url = raw
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("aims.db").display()));
        if !(database_url.starts_with("sqlite://")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            errors.push("database_url: must start with sqlite:// or postgres://".to_owned());
        }
        let trust_domain = TrustDomain::new(
            raw.trust_domain
                .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned()),
        )
        .map_err(|e| errors.push(format!("trust_domain: {e}")))
        .ok();
        let public_url = raw.public_url.map(|u| u.trim_end_matches('/').to_owned());
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            errors.push("public_url: must start with http:// or https://".to_owned());
        }
        let storage_reserve_mb = number_from_env(
            var,
            ENV_STORAGE_RESERVE_MB,
            "MiB",
            raw.storage_reserve_mb,
            &mut errors,
        );
        let recertify_grace_s = number_from_env(
            var,
            ENV_RECERTIFY_GRACE_S,
            "seconds",
            raw.recertify_grace_s,
            &mut errors,
        );
        let recertify_warn_s = number_from_env(
            var,
            ENV_RECERTIFY_WARN_S,
            "seconds",
            raw.recertify_warn_s,
            &mut errors,
        );
        let mut bounded = |name: &str, value: Option<u64>, default: u64, min: u64, max: u64| {
            let v = value.unwrap_or(default);
            if !(min..=max).contains(&v) {
                errors.push(format!("{name}: must be between {min} and {max}"));
            }
            v
        };
        let max_body_bytes = bounded(
            "max_body_bytes",
            raw.max_body_bytes.map(|v| v as u64),
            64 * 1024,
            1024,
            32 * 1024 * 1024,
        );
        let request_timeout_s = bounded("request_timeout_s", raw.request_timeout_s, 30, 1, 600);
        let join_token_ttl_s = bounded("join_token_ttl_s", raw.join_token_ttl_s, 900, 30, 86_400);
        let recertify_days = bounded(
            "recertify_days",
            raw.recertify_days.map(u64::from),
            90,
            1,
            3650,
        );
        let recertify_grace_s = bounded(
            "recertify_grace_s",
            recertify_grace_s,
            7 * 86_400,
            0,
            365 * 86_400,
        );
        let recertify_warn_s = bounded(
            "recertify_warn_s",
            recertify_warn_s,
            14 * 86_400,
            0,
            365 * 86_400,
        );
        let recertify_check_s = bounded("recertify_check_s", raw.recertify_check_s, 300, 1, 86_400);
        let refresh_s = bounded(
            "bundle_refresh_hint_s",
            raw.bundle_refresh_hint_s,
            300,
            10,
            86_400,
        );
        let key_reload_s = bounded("key_reload_s", raw.key_reload_s, 10, 1, 3600);
        let svid_ttl_s = bounded("svid_ttl_s", raw.svid_ttl_s, 600, 30, 3600);
        let max_token_ttl_s = bounded("max_token_ttl_s", raw.max_token_ttl_s, 900, 10, 86_400);
        let max_delegation_depth =
            bounded("max_delegation_depth", raw.max_delegation_depth, 4, 0, 16);
        let task_ttl_s = bounded("task_ttl_s", raw.task_ttl_s, 3600, 60, 7 * 86_400);
        let storage_reserve_mb = bounded("storage_reserve_mb", storage_reserve_mb, 64, 0, 1 << 20);
        let refusal_window_s = bounded("refusal_window_s", raw.refusal_window_s, 60, 1, 3600);
        let audit_checkpoint_interval_ms = bounded(
            "audit_checkpoint_interval_ms",
            raw.audit_checkpoint_interval_ms,
            1000,
            10,
            3_600_000,
        );
        let audit_checkpoint_entries = bounded(
            "audit_checkpoint_entries",
            raw.audit_checkpoint_entries,
            1000,
            1,
            1_000_000,
        );
        let refusals_written_per_source = bounded(
            "refusals_written_per_source",
            raw.refusals_written_per_source,
            10,
            0,
            10_000,
        );
        let revocation_poll_ms =
            bounded("revocation_poll_ms", raw.revocation_poll_ms, 20, 5, 10_000);
        let staleness_s = bounded(
            "revocation_max_staleness_s",
            raw.revocation_max_staleness_s,
            5,
            1,
            300,
        );
        if revocation_poll_ms >= staleness_s.saturating_mul(1000) {
            errors.push(
                "revocation_poll_ms: must be shorter than revocation_max_staleness_s".to_owned(),
            );
        }
        let mut rate = |name: &str, value: Option<String>, default: &str| {
            let text = value.unwrap_or_else(|| default.to_owned());
            Rate::parse(&text).or_else(|| {
                errors.push(format!(
                    "{name}: expected RATE/BURST, two whole numbers above 0 (e.g. {default})"
                ));
                Rate::parse(default)
            })
        };
        let rate_limit_per_source = rate(
            "rate_limit_per_source",
            raw.rate_limit_per_source,
            DEFAULT_RATE_LIMIT_PER_SOURCE,
        );
        let rate_limit_per_credential = rate(
            "rate_limit_per_credential",
            raw.rate_limit_per_credential,
            DEFAULT_RATE_LIMIT_PER_CREDENTIAL,
        );
        let tls = match (raw.tls_cert_file, raw.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                errors.push(
                    "tls_cert_file and tls_key_file: give both (HTTPS) or neither (HTTP)"
                        .to_owned(),
                );
                None
            }
        };
        let mut trusted_issuers = Vec::new();
        for issuer in raw.trusted_issuers.unwrap_or_default() {
            match TrustedIssuer::try_from_raw(issuer) {
                Ok(issuer) => trusted_issuers.push(issuer),
                Err(why) => errors.push(format!("trusted_issuers: {why}")),
            }
        }
        let ssf_push_private_networks = match var(ENV_SSF_PUSH_PRIVATE_NETWORKS).as_deref() {
            None => raw.ssf_push_private_networks.unwrap_or(false),
            Some("true") => true,
            Some("false") => false,
            Some(_) => {
                errors.push(format!(
                    "{ENV_SSF_PUSH_PRIVATE_NETWORKS}: must be true or false"
                ));
                false
            }
        };
        let mut webhook = |name: &str, url: Option<String>| {
            let url = url.filter(|u| !u.is_empty());
            if let Some(url) = &url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                errors.push(format!("{name}: must start with http:// or https://"));
            }
            url
        };
        let drift_webhook_url = webhook("drift_webhook_url", raw.drift_webhook_url);
        let approval_webhook_url = webhook("approval_webhook_url", raw.approval_webhook_url);
        let recertify_webhook_url = webhook("recertify_webhook_url", raw.recertify_webhook_url);

        match (
            listen,
            trust_domain,
            rate_limit_per_source,
            rate_limit_per_credential,
        ) {
            (
                Some(listen),
                Some(trust_domain),
                Some(rate_limit_per_source),
                Some(rate_limit_per_credential),
            ) if errors.is_empty() => Ok(Self {
                listen,
                data_dir,
                database_url,
                trust_domain,
                public_url,
                max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(64 * 1024),
                request_timeout: Duration::from_secs(request_timeout_s),
                join_token_ttl: Duration::from_secs(join_token_ttl_s),
                recertify_days: u32::try_from(recertify_days).unwrap_or(90),
                recertify_grace: Duration::from_secs(recertify_grace_s),
                recertify_warn: Duration::from_secs(recertify_warn_s),
                recertify_check: Duration::from_secs(recertify_check_s),
                recertify_webhook_url,
                bundle_refresh_hint: Duration::from_secs(refresh_s),
                key_reload: Duration::from_secs(key_reload_s),
                svid_ttl: Duration::from_secs(svid_ttl_s),
                max_token_ttl: Duration::from_secs(max_token_ttl_s),
                max_delegation_depth: u32::try_from(max_delegation_depth).unwrap_or(4),
                task_ttl: Duration::from_secs(task_ttl_s),
                revocation_poll: Duration::from_millis(revocation_poll_ms),
                revocation_max_staleness: Duration::from_secs(staleness_s),
                drift_webhook_url,
                approval_webhook_url,
                trusted_issuers,
                ssf_push_private_networks,
                storage_reserve_bytes: storage_reserve_mb.saturating_mul(1 << 20),
                tls,
                refusal_window: Duration::from_secs(refusal_window_s),
                refusals_written_per_source,
                audit_checkpoint_interval: Duration::from_millis(audit_checkpoint_interval_ms),
                audit_checkpoint_entries,
                rate_limit_per_source,
                rate_limit_per_credential,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

/// The whole number environment variable `name` gives (in `unit`), else the file's `value`.
fn number_from_env(
    var: &dyn Fn(&str) -> Option<String>,
    name: &str,
    unit: &str,
    value: Option<u64>,
    errors: &mut Vec<String>,
) -> Option<u64> {
    match var(name) {
        None => value,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| errors.push(format!("{name}: must be a whole number of {unit}")))
            .ok(),
    }
}

/// `$XDG_DATA_HOME/aims`, else `$HOME/.local/share/aims`, else `./aims-data`.
fn default_data_dir(var: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(xdg) = var("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("aims");
    }
    if let Some(home) = var("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/aims");
    }
    PathBuf::from("aims-data")
}

fn read_file(path: &Path) -> Result<RawConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
    let raw: RawConfig = toml::from_str(&text)
        .map_err(|e| ConfigErrors(vec![format!("{}: {}", path.display(), e.message())]))?;
    if raw.version.is_none() {
        return Err(ConfigErrors(vec![format!(
            "{}: `version = {CONFIG_VERSION}` is required",
            path.display()
        )]));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn no_configuration_gives_embedded_defaults() {
        let config =
            Config::load_with(&Overrides::default(), &env(&[("HOME", "/home/op")])).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from("/home/op/.local/share/aims"));
        assert_eq!(
            config.database_url,
            "sqlite:///home/op/.local/share/aims/aims.db"
        );
        assert_eq!(config.trust_domain.as_str(), DEFAULT_TRUST_DOMAIN);
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aims.toml");
        std::fs::write(
            &file,
            "version = 1\nlisten = \"127.0.0.1:1000\"\ntrust_domain = \"file.example\"\njoin_token_ttl_s = 60\n",
        )
        .unwrap();
        let overrides = Overrides {
            config_file: Some(file),
            listen: Some("127.0.0.1:3000".into()),
            ..Overrides::default()
        };
        let config = Config::load_with(
            &overrides,
            &env(&[
                (ENV_LISTEN, "127.0.0.1:2000"),
                (ENV_TRUST_DOMAIN, "env.example"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 3000);
        assert_eq!(config.trust_domain.as_str(), "env.example");
        assert_eq!(config.join_token_ttl, Duration::from_secs(60));
    }

    #[test]
    fn private_push_networks_are_off_unless_said_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aims.toml");
        std::fs::write(&file, "version = 1\nssf_push_private_networks = true\n").unwrap();
        let with_file = Overrides {
            config_file: Some(file),
            ..Overrides::default()
        };
        let load = |overrides: &Overrides, value: Option<&str>| {
            let vars: Vec<(&str, &str)> = value
                .map(|v| vec![(ENV_SSF_PUSH_PRIVATE_NETWORKS, v)])
                .unwrap_or_default();
            Config::load_with(overrides, &env(&vars))
        };
        let default = Overrides::default();
        assert!(!load(&default, None).unwrap().ssf_push_private_networks);
        assert!(load(&with_file, None).unwrap().ssf_push_private_networks);
        assert!(
            !load(&with_file, Some("false"))
                .unwrap()
                .ssf_push_private_networks
        );
        assert!(
            load(&default, Some("true"))
                .unwrap()
                .ssf_push_private_networks
        );
        let err = load(&default, Some("yes")).unwrap_err().to_string();
        assert!(err.contains(ENV_SSF_PUSH_PRIVATE_NETWORKS), "{err}");
    }

    #[test]
    fn unknown_keys_and_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aims.toml");
        std::fs::write(&file, "version = 1\nlistn = \"x\"\n").unwrap();
        let overrides = Overrides {
            config_file: Some(file.clone()),
            ..Overrides::default()
        };
        let err = Config::load_with(&overrides, &env(&[])).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        std::fs::write(&file, "version = 2\n").unwrap();
        let err = Config::load_with(&overrides, &env(&[])).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\n").unwrap();
        assert!(Config::load_with(&overrides, &env(&[])).is_err());
    }

    #[test]
    fn all_errors_are_reported_together() {
        let err = Config::load_with(
            &Overrides::default(),
            &env(&[
                (ENV_LISTEN, "nowhere"),
                (ENV_TRUST_DOMAIN, "Bad Domain"),
                (ENV_DATABASE_URL, "mysql://x"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }

    #[test]
    fn storage_tls_and_rate_limits_come_from_the_environment_and_are_checked() {
        let config = Config::load_with(
            &Overrides::default(),
            &env(&[
                (ENV_STORAGE_RESERVE_MB, "3"),
                (ENV_TLS_CERT, "/etc/aims/tls.crt"),
                (ENV_TLS_KEY, "/etc/aims/tls.key"),
                (ENV_RATE_LIMIT_PER_SOURCE, "7/70"),
                (ENV_RATE_LIMIT_PER_CREDENTIAL, "2/20"),
            ]),
        )
        .unwrap();
        assert_eq!(config.storage_reserve_bytes, 3 << 20);
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert: "/etc/aims/tls.crt".into(),
                key: "/etc/aims/tls.key".into(),
            })
        );
        assert_eq!(config.rate_limit_per_source.to_string(), "7/70");
        assert_eq!(config.rate_limit_per_credential.to_string(), "2/20");
        let defaults = Config::load_with(&Overrides::default(), &env(&[])).unwrap();
        assert_eq!(defaults.storage_reserve_bytes, 64 << 20);
        assert_eq!(defaults.tls, None);
        assert_eq!(defaults.rate_limit_per_source.to_string(), "100/500");
        let err = Config::load_with(
            &Overrides::default(),
            &env(&[
                (ENV_STORAGE_RESERVE_MB, "lots"),
                (ENV_TLS_CERT, "/etc/aims/tls.crt"),
                (ENV_RATE_LIMIT_PER_SOURCE, "0/5"),
                (ENV_RATE_LIMIT_PER_CREDENTIAL, "5"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
    }

    #[test]
    fn recertification_settings_come_from_the_environment_and_are_checked() {
        let config = Config::load_with(
            &Overrides::default(),
            &env(&[
                (ENV_RECERTIFY_GRACE_S, "0"),
                (ENV_RECERTIFY_WARN_S, "86400"),
                (
                    ENV_RECERTIFY_WEBHOOK_URL,
                    "https://hooks.acme.example/recertify",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(config.recertify_grace, Duration::ZERO);
        assert_eq!(config.recertify_warn, Duration::from_secs(86_400));
        assert_eq!(
            config.recertify_webhook_url.as_deref(),
            Some("https://hooks.acme.example/recertify")
        );
        let defaults = Config::load_with(&Overrides::default(), &env(&[])).unwrap();
        assert_eq!(defaults.recertify_grace, Duration::from_secs(7 * 86_400));
        assert_eq!(defaults.recertify_warn, Duration::from_secs(14 * 86_400));
        assert_eq!(defaults.recertify_check, Duration::from_secs(300));
        assert_eq!(defaults.recertify_webhook_url, None);
        let err = Config::load_with(
            &Overrides::default(),
            &env(&[
                (ENV_RECERTIFY_GRACE_S, "a week"),
                (ENV_RECERTIFY_WARN_S, "999999999"),
                (ENV_RECERTIFY_WEBHOOK_URL, "ftp://hooks"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }
}
