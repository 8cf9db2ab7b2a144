//! Dynamic database credentials: engines (databases AIMS creates short-lived roles in), role
//! templates (what such a role may do, in a closed form), and the pure rules of a lease — how
//! long it may last, how its role is named, how its password is stored, and how every SQL
//! identifier and literal AIMS sends is quoted.
//!
//! Nothing here talks to a database: the server renders statements from these values and runs
//! them. User input never reaches SQL as text: engine and template names never appear in SQL,
//! grants are parsed into [`Grant`] values whose identifiers are checked ([`SqlIdent`]) and
//! then quoted, role names and passwords are generated from randomness passed in.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Duration, OffsetDateTime};

use crate::id::{EngineName, Environment, RoleName, SecretName, UserName};

/// Most grant statements a role template holds.
pub const MAX_GRANTS: usize = 32;
/// Largest grants file, in bytes.
pub const MAX_GRANTS_TEXT: usize = 8 * 1024;
/// Longest connection URL, in bytes.
pub const MAX_CONNECTION_URL: usize = 1024;
/// Shortest lease, in seconds.
pub const MIN_LEASE_TTL_S: u64 = 30;
/// Longest lease (and longest template maximum), in seconds: one day.
pub const MAX_LEASE_TTL_S: u64 = 86_400;
/// Prefix of every role AIMS creates for a lease: the reaper drops only such roles.
pub const ROLE_PREFIX: &str = "aims_lease_";
/// PBKDF2 iterations of the SCRAM-SHA-256 verifier sent instead of a password (PostgreSQL's
/// default).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Why an engine, template or lease request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The connection URL is not acceptable.
    #[error("connection URL {why}")]
    ConnectionUrl {
        /// What is wrong with it.
        why: &'static str,
    },
    /// A line of a grants file is outside the allowed form.
    #[error("grants line {line}: {why}")]
    Grant {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The grants file is empty, too large or has too many statements.
    #[error("grants: {why}")]
    Grants {
        /// What is wrong.
        why: &'static str,
    },
    /// An identifier outside `[a-z_][a-z0-9_]*` (at most 63 bytes).
    #[error("identifier {0:?} is not a lowercase SQL identifier of at most 63 bytes")]
    Identifier(String),
    /// A lifetime out of range.
    #[error("ttl: {why}")]
    Ttl {
        /// What is wrong with it.
        why: String,
    },
}

/// A lowercase SQL identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes (PostgreSQL's
/// `NAMEDATALEN - 1`). Always sent quoted ([`quote_ident`]), so the name stored is the name
/// used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SqlIdent(String);

impl SqlIdent {
    /// Checks `value` and wraps it.
    pub fn new(value: &str) -> Result<Self, LeaseError> {
        let mut bytes = value.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
        if first_ok
            && value.len() <= 63
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(LeaseError::Identifier(value.to_owned()))
        }
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier, quoted.
    pub fn quoted(&self) -> String {
        quote_ident(&self.0)
    }
}

impl fmt::Display for SqlIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for SqlIdent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SqlIdent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

/// `value` as a PostgreSQL quoted identifier: in double quotes, each `"` doubled (the rule of
/// PostgreSQL's `quote_ident`). NUL cannot be sent at all, so it is dropped.
pub fn quote_ident(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars().filter(|c| *c != '\0') {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `value` as a PostgreSQL string literal: in single quotes, each `'` doubled; with a
/// backslash, each backslash doubled and the escape-string form `E'…'` used, so the literal
/// means the same whatever `standard_conforming_strings` is (the rule of PostgreSQL's
/// `quote_literal`). NUL cannot be sent at all, so it is dropped.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars().filter(|c| *c != '\0') {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Checks an engine's connection URL: `postgres://` or `postgresql://`, printable ASCII, at
/// most [`MAX_CONNECTION_URL`] bytes, and no password in it (the admin password is a sealed
/// secret of the secret store, named separately).
pub fn check_connection_url(url: &str) -> Result<(), LeaseError> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or(LeaseError::ConnectionUrl {
            why: "must start with postgres:// or postgresql://",
        })?;
    if url.len() > MAX_CONNECTION_URL || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LeaseError::ConnectionUrl {
            why: "must be at most 1024 bytes of printable ASCII without spaces",
        });
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    if userinfo.is_some_and(|u| u.contains(':')) || url.to_ascii_lowercase().contains("password=") {
        return Err(LeaseError::ConnectionUrl {
            why: "must not carry a password: store it as a secret and name it with --admin-secret",
        });
    }
    if authority.is_empty() || authority.ends_with('@') {
        return Err(LeaseError::ConnectionUrl {
            why: "must name a host",
        });
    }
    Ok(())
}

/// A privilege a template may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// `SELECT`.
    Select,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `TRUNCATE`.
    Truncate,
    /// `REFERENCES`.
    References,
    /// `TRIGGER`.
    Trigger,
    /// `USAGE` (schemas only).
    Usage,
}

impl Privilege {
    const ALL: [Self; 8] = [
        Self::Select,
        Self::Insert,
        Self::Update,
        Self::Delete,
        Self::Truncate,
        Self::References,
        Self::Trigger,
        Self::Usage,
    ];

    /// The SQL keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Truncate => "TRUNCATE",
            Self::References => "REFERENCES",
            Self::Trigger => "TRIGGER",
            Self::Usage => "USAGE",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.keyword().eq_ignore_ascii_case(word))
    }
}

/// What a grant is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum GrantTarget {
    /// One table: `ON TABLE schema.table`.
    Table {
        /// Its schema.
        schema: SqlIdent,
        /// The table.
        table: SqlIdent,
    },
    /// Every table of a schema that exists when the lease starts: `ON ALL TABLES IN SCHEMA s`.
    AllTablesInSchema {
        /// The schema.
        schema: SqlIdent,
    },
    /// A schema itself (`USAGE` only): `ON SCHEMA s`.
    Schema {
        /// The schema.
        schema: SqlIdent,
    },
}

/// One grant of a role template, in the only forms allowed:
///
/// ```text
/// GRANT <privileges> ON TABLE <schema>.<table>
/// GRANT <privileges> ON ALL TABLES IN SCHEMA <schema>
/// GRANT USAGE ON SCHEMA <schema>
/// ```
///
/// where `<privileges>` is a comma-separated list of `SELECT`, `INSERT`, `UPDATE`, `DELETE`,
/// `TRUNCATE`, `REFERENCES`, `TRIGGER`, and identifiers are lowercase (`[a-z_][a-z0-9_]*`).
/// The grantee is always the lease's role, added by AIMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The privileges, sorted, without repeats.
    pub privileges: Vec<Privilege>,
    /// What they are on.
    #[serde(flatten)]
    pub target: GrantTarget,
}

impl Grant {
    /// The statement granting this to `role`, every identifier quoted.
    pub fn statement(&self, role: &SqlIdent) -> String {
        let privileges = self
            .privileges
            .iter()
            .map(|p| p.keyword())
            .collect::<Vec<_>>()
            .join(", ");
        let on = match &self.target {
            GrantTarget::Table { schema, table } => {
                format!("TABLE {}.{}", schema.quoted(), table.quoted())
            }
            GrantTarget::AllTablesInSchema { schema } => {
                format!("ALL TABLES IN SCHEMA {}", schema.quoted())
            }
            GrantTarget::Schema { schema } => format!("SCHEMA {}", schema.quoted()),
        };
        format!("GRANT {privileges} ON {on} TO {}", role.quoted())
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let privileges = self
            .privileges
            .iter()
            .map(|p| p.keyword())
            .collect::<Vec<_>>()
            .join(", ");
        match &self.target {
            GrantTarget::Table { schema, table } => {
                write!(f, "GRANT {privileges} ON TABLE {schema}.{table}")
            }
            GrantTarget::AllTablesInSchema { schema } => {
                write!(f, "GRANT {privileges} ON ALL TABLES IN SCHEMA {schema}")
            }
            GrantTarget::Schema { schema } => write!(f, "GRANT {privileges} ON SCHEMA {schema}"),
        }
    }
}

/// Parses a grants file: one grant per line in the forms of [`Grant`], keywords in any case,
/// an optional `;` at the end of a line; blank lines and lines starting with `--` are
/// skipped. Anything else refuses the whole file.
pub fn parse_grants(text: &str) -> Result<Vec<Grant>, LeaseError> {
    if text.len() > MAX_GRANTS_TEXT {
        return Err(LeaseError::Grants {
            why: "the file is larger than 8 KiB",
        });
    }
    let mut grants = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        let grant = parse_grant(line).map_err(|why| LeaseError::Grant {
            line: index + 1,
            why,
        })?;
        grants.push(grant);
        if grants.len() > MAX_GRANTS {
            return Err(LeaseError::Grants {
                why: "more than 32 grants",
            });
        }
    }
    if grants.is_empty() {
        return Err(LeaseError::Grants {
            why: "no grant: a role that may do nothing is not worth leasing",
        });
    }
    Ok(grants)
}

fn parse_grant(line: &str) -> Result<Grant, String> {
    let line = line.strip_suffix(';').unwrap_or(line).trim_end();
    if !line.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err("only printable ASCII and spaces are allowed".to_owned());
    }
    let upper = line.to_ascii_uppercase();
    let after_grant = upper
        .strip_prefix("GRANT ")
        .ok_or("a grant starts with GRANT")?;
    let on_at = after_grant
        .find(" ON ")
        .ok_or("a grant says ON what it is")?;
    // Offsets into `upper` apply to `line`: uppercasing ASCII keeps every byte's position.
    let privileges_text = line.get(6..6 + on_at).ok_or("malformed grant")?;
    let target_text = line.get(6 + on_at + 4..).ok_or("malformed grant")?.trim();
    let mut privileges = Vec::new();
    for word in privileges_text.split(',') {
        let word = word.trim();
        let privilege =
            Privilege::parse(word).ok_or_else(|| format!("{word:?} is not a privilege allowed"))?;
        privileges.push(privilege);
    }
    privileges.sort();
    privileges.dedup();
    let words: Vec<&str> = target_text.split(' ').filter(|w| !w.is_empty()).collect();
    let keyword = |i: usize, expected: &str| {
        words
            .get(i)
            .is_some_and(|w| w.eq_ignore_ascii_case(expected))
    };
    let ident = |i: usize| -> Result<SqlIdent, String> {
        let word = words.get(i).ok_or("an identifier is missing")?;
        SqlIdent::new(word).map_err(|e| e.to_string())
    };
    let target = if words.len() == 2 && keyword(0, "TABLE") {
        let (schema, table) = words
            .get(1)
            .and_then(|w| w.split_once('.'))
            .ok_or("a table is named schema.table")?;
        GrantTarget::Table {
            schema: SqlIdent::new(schema).map_err(|e| e.to_string())?,
            table: SqlIdent::new(table).map_err(|e| e.to_string())?,
        }
    } else if words.len() == 5
        && keyword(0, "ALL")
        && keyword(1, "TABLES")
        && keyword(2, "IN")
        && keyword(3, "SCHEMA")
    {
        GrantTarget::AllTablesInSchema { schema: ident(4)? }
    } else if words.len() == 2 && keyword(0, "SCHEMA") {
        GrantTarget::Schema { schema: ident(1)? }
    } else {
        return Err(
            "ON TABLE schema.table, ON ALL TABLES IN SCHEMA schema or ON SCHEMA schema, \
             and nothing after it"
                .to_owned(),
        );
    };
    let schema_grant = matches!(target, GrantTarget::Schema { .. });
    if schema_grant && privileges != [Privilege::Usage] {
        return Err("a schema takes USAGE only".to_owned());
    }
    if !schema_grant && privileges.contains(&Privilege::Usage) {
        return Err("USAGE applies to schemas only".to_owned());
    }
    Ok(Grant { privileges, target })
}

/// What ending a lease does with what its role owns, before the role is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cleanup {
    /// `DROP OWNED BY role`: whatever the role created goes with it.
    DropOwned,
    /// `REASSIGN OWNED BY role TO <to>`, then `DROP OWNED BY role` (which now only revokes
    /// its privileges): what it created is kept, owned by `to`.
    Reassign {
        /// The role that takes ownership.
        to: SqlIdent,
    },
}

/// The kind of database an engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// PostgreSQL.
    Postgres,
}

/// A database AIMS creates leased roles in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    /// Its name.
    pub name: EngineName,
    /// What it is.
    pub kind: EngineKind,
    /// How AIMS connects as the engine's administrator (no password in it).
    pub connection_url: String,
    /// The secret of the secret store holding the administrator's password, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret: Option<SecretName>,
    /// The system its roles belong to, for policies (`resource.system`).
    pub system: String,
    /// The environment of its data.
    pub environment: Environment,
    /// The sensitivity of its data.
    pub sensitivity: String,
    /// Who added it.
    pub created_by: UserName,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a leased role of an engine may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleTemplate {
    /// The engine.
    pub engine: EngineName,
    /// The template's name.
    pub name: RoleName,
    /// Its grants.
    pub grants: Vec<Grant>,
    /// The longest lease of it, in seconds.
    pub max_ttl_s: u64,
    /// What ending a lease does with what the role owns.
    pub cleanup: Cleanup,
    /// Who added it.
    pub created_by: UserName,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Checks a template's maximum lease lifetime.
pub fn check_max_ttl(max_ttl_s: u64) -> Result<(), LeaseError> {
    if (MIN_LEASE_TTL_S..=MAX_LEASE_TTL_S).contains(&max_ttl_s) {
        Ok(())
    } else {
        Err(LeaseError::Ttl {
            why: format!("max_ttl_s is {MIN_LEASE_TTL_S} to {MAX_LEASE_TTL_S}"),
        })
    }
}

/// When a lease asked for at `now` ends: after `requested_s` (or the template's maximum when
/// not given), which must be at least [`MIN_LEASE_TTL_S`], at most the template's maximum,
/// and end no later than `parent_expires_at` (the task token it is derived from). Without a
/// request, the end is cut to the parent's expiry.
pub fn lease_end(
    now: OffsetDateTime,
    requested_s: Option<u64>,
    template_max_s: u64,
    parent_expires_at: OffsetDateTime,
) -> Result<OffsetDateTime, LeaseError> {
    let seconds = |s: u64| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
    let end = match requested_s {
        Some(ttl) => {
            if ttl < MIN_LEASE_TTL_S || ttl > template_max_s {
                return Err(LeaseError::Ttl {
                    why: format!("ttl_s is {MIN_LEASE_TTL_S} to {template_max_s} for this role"),
                });
            }
            let end = now + seconds(ttl);
            if end > parent_expires_at {
                return Err(LeaseError::Ttl {
                    why: "the lease would outlive the task token it is derived from".to_owned(),
                });
            }
            end
        }
        None => (now + seconds(template_max_s)).min(parent_expires_at),
    };
    if end < now + seconds(MIN_LEASE_TTL_S) {
        return Err(LeaseError::Ttl {
            why: format!("the task token expires in less than {MIN_LEASE_TTL_S} s"),
        });
    }
    Ok(end)
}

/// When a lease issued at `issued_at` ends if renewed at `now`: after `requested_s` from now
/// (or as late as allowed when not given), never later than the template's maximum counted
/// from issuance (`issued_at + template_max_s`: renewing does not stretch a template's
/// bound) nor the task token's expiry, and at least [`MIN_LEASE_TTL_S`] from now.
pub fn renewal_end(
    now: OffsetDateTime,
    requested_s: Option<u64>,
    issued_at: OffsetDateTime,
    template_max_s: u64,
    parent_expires_at: OffsetDateTime,
) -> Result<OffsetDateTime, LeaseError> {
    let seconds = |s: u64| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
    let latest = (issued_at + seconds(template_max_s)).min(parent_expires_at);
    let end = match requested_s {
        Some(ttl) => {
            let end = now + seconds(ttl);
            if ttl < MIN_LEASE_TTL_S {
                return Err(LeaseError::Ttl {
                    why: format!("ttl_s is at least {MIN_LEASE_TTL_S}"),
                });
            }
            if end > latest {
                return Err(LeaseError::Ttl {
                    why: "the renewed lease would outlive its template's maximum (counted from \
                          issuance) or the task token it is derived from"
                        .to_owned(),
                });
            }
            end
        }
        None => latest,
    };
    if end < now + seconds(MIN_LEASE_TTL_S) {
        return Err(LeaseError::Ttl {
            why: format!(
                "less than {MIN_LEASE_TTL_S} s are left to the template's maximum or the task token"
            ),
        });
    }
    Ok(end)
}

/// The database role of a lease: [`ROLE_PREFIX`] and 24 hex digits of `random`.
pub fn lease_role(random: &[u8; 12]) -> SqlIdent {
    SqlIdent(format!("{ROLE_PREFIX}{}", hex::encode(random)))
}

/// Whether `name` is a role AIMS creates for leases.
pub fn is_lease_role(name: &str) -> bool {
    name.strip_prefix(ROLE_PREFIX)
        .is_some_and(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A lease's password: 32 random bytes as base64url.
pub fn lease_password(random: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(random)
}

/// The SCRAM-SHA-256 verifier (RFC 5802/7677, PostgreSQL's stored form) of `password` with
/// `salt`: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. Sent as the role's
/// `PASSWORD`, it lets the role log in with `password` while the password itself never
/// reaches the database server (nor its statement log).
pub fn scram_verifier(password: &str, salt: &[u8; 16], iterations: u32) -> String {
    let mut salted = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    format!(
        "SCRAM-SHA-256${}:{}${}:{}",
        rounds,
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn identifiers_and_literals_are_quoted_by_postgres_rules() {
        assert_eq!(quote_ident("sales"), "\"sales\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("x\";DROP"), "\"x\"\";DROP\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
        assert_eq!(quote_literal("a\0b"), "'ab'");
    }

    #[test]
    fn only_lowercase_identifiers_are_accepted() {
        assert!(SqlIdent::new("public").is_ok());
        assert!(SqlIdent::new("_t1").is_ok());
        for bad in [
            "",
            "Sales",
            "1t",
            "a-b",
            "a\"b",
            "a;b",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(SqlIdent::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grants_parse_into_the_allowed_forms_only() {
        let grants = parse_grants(
            "-- the reader\nGRANT USAGE ON SCHEMA public;\n\n\
             grant select, SELECT,insert on table public.sales\n\
             GRANT SELECT ON ALL TABLES IN SCHEMA reports",
        )
        .unwrap();
        assert_eq!(grants.len(), 3);
        let role = lease_role(&[0xab; 12]);
        assert_eq!(
            grants[0].statement(&role),
            "GRANT USAGE ON SCHEMA \"public\" TO \"aims_lease_abababababababababababab\""
        );
        assert_eq!(
            grants[1].statement(&role),
            format!(
                "GRANT SELECT, INSERT ON TABLE \"public\".\"sales\" TO {}",
                role.quoted()
            )
        );
        assert_eq!(
            grants[2].to_string(),
            "GRANT SELECT ON ALL TABLES IN SCHEMA reports"
        );
        assert_eq!(parse_grants(&grants[1].to_string()).unwrap()[0], grants[1]);
        for bad in [
            "",
            "-- nothing",
            "GRANT ALL ON TABLE public.sales",
            "GRANT SELECT ON TABLE public.sales TO postgres",
            "GRANT SELECT ON TABLE \"public\".\"sales\"",
            "GRANT SELECT ON TABLE public.sales; DROP ROLE postgres",
            "GRANT SELECT ON TABLE public.sa'les",
            "GRANT SELECT ON DATABASE test",
            "GRANT SELECT ON SCHEMA public",
            "GRANT USAGE ON TABLE public.sales",
            "GRANT pg_read_all_data TO x",
            "REVOKE SELECT ON TABLE public.sales",
            "ALTER ROLE x SUPERUSER",
            "GRANT SELECT ON TABLE sales",
        ] {
            assert!(parse_grants(bad).is_err(), "{bad:?}");
        }
        let many = "GRANT SELECT ON TABLE public.t\n".repeat(MAX_GRANTS + 1);
        assert!(parse_grants(&many).is_err());
    }

    #[test]
    fn connection_urls_carry_no_password() {
        assert!(check_connection_url("postgres://postgres@127.0.0.1:5432/test").is_ok());
        assert!(check_connection_url("postgresql://db.internal/warehouse").is_ok());
        for bad in [
            "mysql://x@h/db",
            "postgres://postgres:hunter2@127.0.0.1/test",
            "postgres://h/db?password=x",
            "postgres://h/db ?",
            "postgres:///db",
        ] {
            assert!(check_connection_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_lease_never_outlives_its_token_or_template() {
        let now = datetime!(2026-01-01 00:00 UTC);
        let token_end = now + Duration::seconds(600);
        assert_eq!(
            lease_end(now, Some(300), 3600, token_end).unwrap(),
            now + Duration::seconds(300)
        );
        assert_eq!(lease_end(now, None, 3600, token_end).unwrap(), token_end);
        assert_eq!(
            lease_end(now, None, 120, token_end).unwrap(),
            now + Duration::seconds(120)
        );
        assert!(lease_end(now, Some(601), 3600, token_end).is_err());
        assert!(lease_end(now, Some(500), 400, token_end).is_err());
        assert!(lease_end(now, Some(5), 400, token_end).is_err());
        assert!(lease_end(now, None, 400, now + Duration::seconds(10)).is_err());
    }

    #[test]
    fn a_renewal_stays_within_the_template_from_issuance_and_the_token() {
        let issued = datetime!(2026-01-01 00:00 UTC);
        let now = issued + Duration::seconds(100);
        let token_end = issued + Duration::seconds(1000);
        assert_eq!(
            renewal_end(now, Some(200), issued, 600, token_end).unwrap(),
            now + Duration::seconds(200)
        );
        assert_eq!(
            renewal_end(now, None, issued, 600, token_end).unwrap(),
            issued + Duration::seconds(600)
        );
        assert_eq!(
            renewal_end(now, None, issued, 3600, token_end).unwrap(),
            token_end
        );
        assert!(renewal_end(now, Some(501), issued, 600, token_end).is_err());
        assert!(renewal_end(now, Some(901), issued, 3600, token_end).is_err());
        assert!(renewal_end(now, Some(5), issued, 3600, token_end).is_err());
        let late = issued + Duration::seconds(590);
        assert!(renewal_end(late, None, issued, 600, token_end).is_err());
    }

    #[test]
    fn lease_roles_are_recognizable() {
        let role = lease_role(&[1; 12]);
        assert!(is_lease_role(role.as_str()));
        assert!(!is_lease_role("postgres"));
        assert!(!is_lease_role("aims_lease_x"));
        assert_eq!(lease_password(&[0; 32]).len(), 43);
    }

    #[test]
    fn scram_verifier_matches_rfc_7677_shape_and_is_deterministic() {
        let v = scram_verifier("pencil", &[7; 16], 4096);
        assert!(v.starts_with("SCRAM-SHA-256$4096:BwcHBwcHBwcHBwcHBwcHBw==$"));
        assert_eq!(v, scram_verifier("pencil", &[7; 16], 4096));
        assert_ne!(v, scram_verifier("pencil2", &[7; 16], 4096));
    }
}
