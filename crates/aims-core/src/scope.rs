//! OAuth scopes of task tokens, and the one rule for what a scope permits.
//!
//! A scope is `<action>:<resource>`: the Cedar action id it allows (`read`, `call_tool`, ...)
//! and the resource id it allows it on, either exact (`repo/acme/app`) or a prefix ending in
//! `*` (`repo/acme/*`, or `*` for any). A [`ScopeSet`] is the space-delimited `scope` of a
//! token request or an access token (RFC 6749 §3.3).
//!
//! [`Scope::covers`] is the partial order every narrowing check uses: a delegated token's
//! scopes must each be covered by one of its parent's, and an enforcement point allows a call
//! only if one of the token's scopes covers the call's action and resource.

use std::collections::BTreeSet;
use std::fmt;

/// Most scopes in one request or token.
pub const MAX_SCOPES: usize = 32;
/// Longest single scope.
pub const MAX_SCOPE_LEN: usize = 256;
/// Longest action part.
const MAX_ACTION_LEN: usize = 64;

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// No scope at all.
    #[error("scope is empty")]
    Empty,
    /// More than [`MAX_SCOPES`].
    #[error("at most {MAX_SCOPES} scopes may be requested")]
    TooMany,
    /// One scope is malformed.
    #[error("scope {index} is malformed: {why}")]
    Malformed {
        /// Its position (0-based) in the request.
        index: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// One scope: an action on a resource or resource prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    action: String,
    resource: String,
}

impl Scope {
    /// Parses `<action>:<resource>`. The action is `[a-z_]` (a Cedar action id); the resource
    /// is `[A-Za-z0-9._/-]` with an optional single trailing `*`.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.len() > MAX_SCOPE_LEN {
            return Err("longer than 256 characters");
        }
        let (action, resource) = value.split_once(':').ok_or("not <action>:<resource>")?;
        if action.is_empty() || action.len() > MAX_ACTION_LEN {
            return Err("the action must be 1-64 characters");
        }
        if !action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err("the action may hold only a-z and _");
        }
        let body = resource.strip_suffix('*').unwrap_or(resource);
        if resource.is_empty() {
            return Err("the resource is empty");
        }
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
        {
            return Err("the resource may hold only A-Z a-z 0-9 . _ / - and a final *");
        }
        Ok(Self {
            action: action.to_owned(),
            resource: resource.to_owned(),
        })
    }

    /// The action it allows.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The resource id or prefix pattern, as written.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The resource prefix when the scope is a wildcard (`repo/*` → `repo/`).
    fn prefix(&self) -> Option<&str> {
        self.resource.strip_suffix('*')
    }

    /// Whether this scope allows `action` on the resource `resource_id`.
    pub fn permits(&self, action: &str, resource_id: &str) -> bool {
        self.action == action
            && match self.prefix() {
                Some(prefix) => resource_id.starts_with(prefix),
                None => self.resource == resource_id,
            }
    }

    /// Whether everything `other` allows, this allows too.
    pub fn covers(&self, other: &Self) -> bool {
        if self.action != other.action {
            return false;
        }
        match (self.prefix(), other.prefix()) {
            (None, None) => self.resource == other.resource,
            // An exact scope never covers a wildcard (the wildcard names more than one id).
            (None, Some(_)) => false,
            (Some(mine), Some(theirs)) => theirs.starts_with(mine),
            (Some(mine), None) => other.resource.starts_with(mine),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.action, self.resource)
    }
}

/// A set of scopes, as in a token's `scope` claim. Never empty once parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses a space-delimited list (RFC 6749 §3.3). Duplicates collapse; an empty list, more
    /// than [`MAX_SCOPES`] entries or any malformed entry is refused.
    pub fn parse(value: &str) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for (index, part) in value.split(' ').filter(|p| !p.is_empty()).enumerate() {
            if index >= MAX_SCOPES {
                return Err(ScopeError::TooMany);
            }
            let scope = Scope::parse(part).map_err(|why| ScopeError::Malformed { index, why })?;
            set.insert(scope);
        }
        if set.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Self(set))
    }

    /// A set of the given scopes.
    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().collect())
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Whether it holds no scope.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many scopes it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether some scope covers `scope`.
    pub fn covers(&self, scope: &Scope) -> bool {
        self.0.iter().any(|mine| mine.covers(scope))
    }

    /// Whether every scope of `other` is covered by one of these.
    pub fn covers_all(&self, other: &Self) -> bool {
        other.0.iter().all(|theirs| self.covers(theirs))
    }

    /// Whether some scope permits `action` on `resource_id`.
    pub fn permits(&self, action: &str, resource_id: &str) -> bool {
        self.0.iter().any(|s| s.permits(action, resource_id))
    }
}

impl fmt::Display for ScopeSet {
    /// The space-delimited form of the `scope` claim.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            scope.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(value: &str) -> Scope {
        Scope::parse(value).unwrap()
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(s("read:repo/acme/app").action(), "read");
        assert_eq!(s("read:repo/acme/*").resource(), "repo/acme/*");
        assert_eq!(s("call_tool:*").to_string(), "call_tool:*");
    }

    #[test]
    fn refuses_malformed_scopes() {
        for bad in [
            "",
            "read",
            ":x",
            "read:",
            "Read:x",
            "read:a*b",
            "read:a**",
            "read:a b",
            "read:a\"b",
            "read:../x;DROP",
            "re-ad:x",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Scope::parse(&format!("read:{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn sets_are_bounded_and_never_empty() {
        assert_eq!(ScopeSet::parse("  "), Err(ScopeError::Empty));
        let many = (0..33).map(|i| format!("read:r{i}")).collect::<Vec<_>>();
        assert_eq!(ScopeSet::parse(&many.join(" ")), Err(ScopeError::TooMany));
        let set = ScopeSet::parse("read:b read:a read:b").unwrap();
        assert_eq!(set.to_string(), "read:a read:b");
        assert!(matches!(
            ScopeSet::parse("read:a bad"),
            Err(ScopeError::Malformed { index: 1, .. })
        ));
    }

    #[test]
    fn covering_follows_prefixes() {
        assert!(s("read:repo/*").covers(&s("read:repo/acme/*")));
        assert!(s("read:repo/*").covers(&s("read:repo/acme/app")));
        assert!(s("read:repo/acme/app").covers(&s("read:repo/acme/app")));
        assert!(!s("read:repo/acme/app").covers(&s("read:repo/acme/*")));
        assert!(!s("read:repo/acme/*").covers(&s("read:repo/*")));
        assert!(!s("read:repo/*").covers(&s("write:repo/a")));
        assert!(s("read:*").covers(&s("read:anything/at/all")));
    }

    #[test]
    fn permitting_matches_covering_an_exact_scope() {
        let cases = [
            ("read:repo/*", "repo/x"),
            ("read:repo/x", "repo/x"),
            ("read:repo/x", "repo/xy"),
        ];
        for (scope, id) in cases {
            let exact = s(&format!("read:{id}"));
            assert_eq!(s(scope).permits("read", id), s(scope).covers(&exact));
        }
    }
}
