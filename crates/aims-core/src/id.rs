//! Validated names and identifiers: trust domains, agent names, SPIFFE IDs, owners,
//! environments, user names and label keys.
//!
//! Every type here can only be built through a constructor that checks its input, so a value
//! that exists is valid ("parse, don't validate"). Nothing here touches storage or the network.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name or identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The value is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of identifier.
        kind: &'static str,
    },
    /// The value is longer than allowed.
    #[error("{kind} is longer than {max} bytes")]
    TooLong {
        /// Which kind of identifier.
        kind: &'static str,
        /// The limit in bytes.
        max: usize,
    },
    /// The value holds a character the kind does not allow.
    #[error("{kind} contains a character that is not allowed ({allowed})")]
    BadCharacter {
        /// Which kind of identifier.
        kind: &'static str,
        /// The characters that are allowed.
        allowed: &'static str,
    },
    /// The value has the right characters but the wrong shape.
    #[error("{kind} is malformed: {why}")]
    Malformed {
        /// Which kind of identifier.
        kind: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

fn check_len(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    Ok(())
}

/// Defines a string newtype with a validating constructor, `Display`, `AsRef<str>` and serde
/// impls that go through the constructor.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident, $check:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A SPIFFE trust domain name such as `acme.example`: lowercase letters, digits, `.`, `-`
/// and `_`, at most 255 bytes (SPIFFE ID standard §2.1).
fn check_trust_domain(value: &str) -> Result<(), IdError> {
    const KIND: &str = "trust domain";
    check_len(KIND, value, 255)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(IdError::BadCharacter {
            kind: KIND,
            allowed: "a-z 0-9 . - _",
        });
    }
    Ok(())
}

validated_string!(
    /// The name of one AIMS deployment's trust domain, e.g. `acme.example`.
    TrustDomain,
    check_trust_domain
);

/// Longest agent name AIMS accepts; SPIFFE allows longer paths, but names are also used in
/// logs, policies and database keys.
pub const AGENT_NAME_MAX: usize = 128;

/// An agent name is one SPIFFE path segment: letters, digits, `.`, `-`, `_`, never `.` or `..`
/// (SPIFFE ID standard §2.2).
fn check_agent_name(value: &str) -> Result<(), IdError> {
    check_segment_name("agent name", value)
}

/// A resource server's name: the rules of agent names, reported as a resource server's.
fn check_resource_server_name(value: &str) -> Result<(), IdError> {
    check_segment_name("resource server name", value)
}

/// A secret's name: the rules of agent names, reported as a secret's.
fn check_secret_name(value: &str) -> Result<(), IdError> {
    check_segment_name("secret name", value)
}

/// An engine's name: the rules of agent names, reported as an engine's.
fn check_engine_name(value: &str) -> Result<(), IdError> {
    check_segment_name("engine name", value)
}

/// A role template's name: the rules of agent names, reported as a role's.
fn check_role_name(value: &str) -> Result<(), IdError> {
    check_segment_name("role name", value)
}

/// The rules of agent names, with errors that name `kind`.
fn check_segment_name(kind: &'static str, value: &str) -> Result<(), IdError> {
    check_len(kind, value, AGENT_NAME_MAX)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(IdError::BadCharacter {
            kind,
            allowed: "A-Z a-z 0-9 . - _",
        });
    }
    if value == "." || value == ".." {
        return Err(IdError::Malformed {
            kind,
            why: "'.' and '..' are not path segments",
        });
    }
    Ok(())
}

validated_string!(
    /// The unique name of a registered agent; also the last segment of its SPIFFE ID.
    /// Names are never reused, even after decommissioning.
    AgentName,
    check_agent_name
);

/// An id AIMS mints (128 random bits in base64url) and later reads back: 1 to `max`
/// characters of `[A-Za-z0-9_-]`.
fn check_minted_id(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    check_len(kind, value, max)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(IdError::BadCharacter {
            kind,
            allowed: "A-Z a-z 0-9 - _",
        });
    }
    Ok(())
}

/// Longest task id a client may send, in bytes.
pub const MAX_TASK_ID_LEN: usize = 64;

fn check_task_id(value: &str) -> Result<(), IdError> {
    check_minted_id("task id", value, MAX_TASK_ID_LEN)
}

validated_string!(
    /// The id of a task, named by every token issued for it.
    TaskId,
    check_task_id
);

/// Longest token id (`jti`), decision id or approval id AIMS accepts.
pub const TOKEN_ID_MAX: usize = 128;

fn check_token_id(value: &str) -> Result<(), IdError> {
    check_minted_id("token id", value, TOKEN_ID_MAX)
}

fn check_decision_id(value: &str) -> Result<(), IdError> {
    check_minted_id("decision id", value, TOKEN_ID_MAX)
}

validated_string!(
    /// The id (`jti`) of a credential AIMS issued: an SVID or a task token.
    TokenId,
    check_token_id
);

validated_string!(
    /// The id of one policy decision, in its answer and its audit event.
    DecisionId,
    check_decision_id
);

fn check_approval_id(value: &str) -> Result<(), IdError> {
    check_minted_id("approval id", value, TOKEN_ID_MAX)
}

validated_string!(
    /// The id of one approval request, in the decision that opened it and every event about it.
    ApprovalId,
    check_approval_id
);

/// Longest declared intent, in bytes.
pub const MAX_INTENT_LEN: usize = 1024;

/// An intent: 1–1024 bytes of visible text (no control, invisible or direction-changing
/// characters), not only spaces.
fn check_intent(value: &str) -> Result<(), IdError> {
    const KIND: &str = "intent";
    check_len(KIND, value, MAX_INTENT_LEN)?;
    if value.trim().is_empty() || !crate::text::is_visible(value, false) {
        return Err(IdError::Malformed {
            kind: KIND,
            why: "an intent is visible text without control characters",
        });
    }
    Ok(())
}

validated_string!(
    /// What a task declares it is for, carried by every token issued for it.
    Intent,
    check_intent
);

/// An owner has one spelling, so that `revoke --owner` and every report find all of its
/// agents: printable ASCII (letters, digits, punctuation) with single spaces between words,
/// at most 256 bytes — no letters of other scripts that look like Latin ones, no invisible
/// or direction-changing characters. Owners are compared exactly, case included.
fn check_owner(value: &str) -> Result<(), IdError> {
    const KIND: &str = "owner";
    check_len(KIND, value, 256)?;
    if !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(IdError::BadCharacter {
            kind: KIND,
            allowed: "printable ASCII and single spaces",
        });
    }
    if value.trim() != value || value.contains("  ") {
        return Err(IdError::Malformed {
            kind: KIND,
            why: "spaces only between words, one at a time",
        });
    }
    Ok(())
}

validated_string!(
    /// The unique name of a registered resource server (a tool server or enforcement point
    /// that task tokens are issued for). Same rules as agent names.
    ResourceServerName,
    check_resource_server_name
);

validated_string!(
    /// The unique name of a brokered secret, e.g. `github-deploy-token`. Same rules as agent
    /// names.
    SecretName,
    check_secret_name
);

validated_string!(
    /// The unique name of a database engine AIMS creates leased roles in, e.g. `warehouse`.
    /// Same rules as agent names: no quotes, spaces or other SQL metacharacters.
    EngineName,
    check_engine_name
);

validated_string!(
    /// The name of a role template of an engine, e.g. `reader`. Same rules as agent names.
    /// It names the template to AIMS and policies; it is never a database role name.
    RoleName,
    check_role_name
);

validated_string!(
    /// The one accountable owner of an agent: a person or team, e.g. `alice@acme.example`.
    Owner,
    check_owner
);

/// Lowercase slugs: `a-z`, `0-9`, `-`, `_`, `.`, starting with a letter or digit.
fn check_slug(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    check_len(kind, value, max)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(IdError::BadCharacter {
            kind,
            allowed: "a-z 0-9 - _ .",
        });
    }
    if !value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
    {
        return Err(IdError::Malformed {
            kind,
            why: "must start with a letter or digit",
        });
    }
    Ok(())
}

fn check_environment(value: &str) -> Result<(), IdError> {
    check_slug("environment", value, 32)
}

validated_string!(
    /// The environment an agent runs in, e.g. `dev`, `staging`, `prod`.
    Environment,
    check_environment
);

impl Default for Environment {
    fn default() -> Self {
        Self("dev".to_owned())
    }
}

fn check_user_name(value: &str) -> Result<(), IdError> {
    check_slug("user name", value, 64)
}

validated_string!(
    /// The name of a human principal (operator, approver, auditor).
    UserName,
    check_user_name
);

fn check_label_key(value: &str) -> Result<(), IdError> {
    check_slug("label key", value, 63)
}

validated_string!(
    /// The key of a free-form agent label.
    LabelKey,
    check_label_key
);

/// A SPIFFE ID of an AIMS agent: `spiffe://<trust-domain>/agent/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    agent: AgentName,
}

impl SpiffeId {
    /// The SPIFFE ID of `agent` in `trust_domain`.
    pub fn for_agent(trust_domain: TrustDomain, agent: AgentName) -> Self {
        Self {
            trust_domain,
            agent,
        }
    }

    /// Parses `spiffe://<trust-domain>/agent/<name>`; any other SPIFFE ID shape is refused.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        const KIND: &str = "SPIFFE ID";
        check_len(KIND, value, 2048)?;
        let rest = value.strip_prefix("spiffe://").ok_or(IdError::Malformed {
            kind: KIND,
            why: "must start with spiffe://",
        })?;
        let (domain, path) = rest.split_once('/').ok_or(IdError::Malformed {
            kind: KIND,
            why: "missing path",
        })?;
        let name = path.strip_prefix("agent/").ok_or(IdError::Malformed {
            kind: KIND,
            why: "path must be /agent/<name>",
        })?;
        Ok(Self {
            trust_domain: TrustDomain::new(domain)?,
            agent: AgentName::new(name)?,
        })
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The agent name part.
    pub fn agent(&self) -> &AgentName {
        &self.agent
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/agent/{}", self.trust_domain, self.agent)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn agent_names_follow_spiffe_segment_rules() {
        for good in ["coder", "a", "ci-runner_01", "v1.2", "A.b-C_d"] {
            assert!(AgentName::new(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%2F", &"x".repeat(129)] {
            assert!(AgentName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_names_say_what_they_name() {
        for bad in ["", "a b", "..", &"x".repeat(129)] {
            let said = |e: IdError| e.to_string();
            assert!(said(AgentName::new(bad).unwrap_err()).starts_with("agent name "));
            assert!(
                said(ResourceServerName::new(bad).unwrap_err())
                    .starts_with("resource server name "),
                "{bad}"
            );
            assert!(said(SecretName::new(bad).unwrap_err()).starts_with("secret name "));
        }
        assert!(ResourceServerName::new("repo-tools").is_ok());
        assert!(SecretName::new("github-deploy-token").is_ok());
    }

    #[test]
    fn trust_domains_are_lowercase() {
        assert!(TrustDomain::new("acme.example").is_ok());
        assert!(TrustDomain::new("Acme.example").is_err());
        assert!(TrustDomain::new("acme:443").is_err());
    }

    #[test]
    fn owners_have_one_ascii_spelling() {
        assert!(Owner::new("alice@acme.example").is_ok());
        assert!(Owner::new("team payments").is_ok());
        assert!(Owner::new("Team-Payments/EU").is_ok());
        for bad in [
            "alice\n",
            " alice",
            "alice ",
            "team  payments",
            "",
            // Cyrillic а, a right-to-left override, a zero-width space, a no-break space.
            "\u{430}lice@acme.example",
            "alice@acme.example\u{202E}",
            "alice@acme\u{200B}.example",
            "alice\u{a0}bob",
            "äpfel",
        ] {
            assert!(Owner::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spiffe_id_round_trips() {
        let id = SpiffeId::parse("spiffe://acme.example/agent/coder").unwrap();
        assert_eq!(id.agent().as_str(), "coder");
        assert_eq!(id.to_string(), "spiffe://acme.example/agent/coder");
        for bad in [
            "spiffe://acme.example/workload/coder",
            "https://acme.example/agent/coder",
            "spiffe://acme.example/agent/a/b",
            "spiffe://acme.example/agent/",
            "spiffe://ACME/agent/x",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<AgentName>("\"../etc\"").is_err());
        assert!(serde_json::from_str::<AgentName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<TaskId>("\"Zq3-_x\"").is_ok());
        assert!(serde_json::from_str::<TaskId>("\"a/b\"").is_err());
        assert!(TaskId::new("x".repeat(65)).is_err());
        assert!(serde_json::from_str::<TokenId>("\"q1-_Zz\"").is_ok());
        assert!(serde_json::from_str::<TokenId>("\"a b\"").is_err());
        assert!(TokenId::new("x".repeat(TOKEN_ID_MAX + 1)).is_err());
    }

    proptest! {
        #[test]
        fn valid_names_always_make_parseable_spiffe_ids(name in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}") {
            let agent = AgentName::new(name).unwrap();
            let td = TrustDomain::new("acme.example").unwrap();
            let id = SpiffeId::for_agent(td, agent);
            prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }
    }
}
