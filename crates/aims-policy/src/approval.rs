//! What a policy that asks for human approval says about that approval, read from its
//! annotations once, when the policy set is compiled.
//!
//! A `permit` whose conditions read `context.approved` makes a decision
//! `approval_required`; these annotations on it say how the approval is given:
//!
//! - `@approvers("<name>, <name>")`: the groups or roles whose members may approve (default,
//!   none named: the deployment's approver roles);
//! - `@approval_ttl_s("<seconds>")`: how long the request waits, 1 to [`MAX_APPROVAL_TTL_S`]
//!   (default: the deployment's);
//! - `@approval_uses("<n>")`: how many matching calls one approval covers, 1 to
//!   [`MAX_APPROVAL_USES`] (default 1);
//! - `@approval_show_arguments("true" | "false")`: whether approvers see the call's
//!   arguments or only their digest (default `false`);
//! - `@four_eyes` (or `@four_eyes("true")`): the agent's owner may not approve.
//!
//! A malformed value, or one of these on a `forbid`, fails compilation. When several permits
//! ask for the same approval, the strictest terms hold ([`ApprovalTerms::strictest`]).

use std::collections::BTreeSet;

use cedar_policy::{Effect, Policy};

/// `@approvers`.
pub const APPROVERS: &str = "approvers";
/// `@approval_ttl_s`.
pub const APPROVAL_TTL: &str = "approval_ttl_s";
/// `@approval_uses`.
pub const APPROVAL_USES: &str = "approval_uses";
/// `@approval_show_arguments`.
pub const APPROVAL_SHOW_ARGUMENTS: &str = "approval_show_arguments";
/// `@four_eyes`.
pub const FOUR_EYES: &str = "four_eyes";

/// The longest an approval request may wait (one day).
pub const MAX_APPROVAL_TTL_S: u64 = 86_400;
/// The most calls one approval may cover.
pub const MAX_APPROVAL_USES: u32 = 1_000;
/// The most approver names one policy may list.
pub const MAX_APPROVERS: usize = 16;
/// The longest approver name.
pub const MAX_APPROVER_LEN: usize = 64;

/// How an approval is given, as the policies that ask for it say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalTerms {
    /// Who may approve: `None` when no policy names anyone (the deployment's approver
    /// roles); an empty set when the policies' lists have no name in common (nobody may).
    pub approvers: Option<BTreeSet<String>>,
    /// How long the request waits; `None`: the deployment's default.
    pub ttl_s: Option<u64>,
    /// How many matching calls one approval covers.
    pub uses: u32,
    /// Whether approvers see the call's arguments (otherwise only their digest).
    pub show_arguments: bool,
    /// Whether the agent's owner is barred from approving.
    pub four_eyes: bool,
}

impl ApprovalTerms {
    /// The terms of one policy, read from its annotations.
    ///
    /// # Errors
    /// A message naming the annotation that is malformed, or misplaced on a `forbid`.
    pub fn of(policy: &Policy) -> Result<Self, String> {
        let named = [
            APPROVERS,
            APPROVAL_TTL,
            APPROVAL_USES,
            APPROVAL_SHOW_ARGUMENTS,
            FOUR_EYES,
        ];
        if policy.effect() == Effect::Forbid {
            if let Some(name) = named.iter().find(|n| policy.annotation(n).is_some()) {
                return Err(format!(
                    "@{name} belongs on a permit; a forbid asks for no approval"
                ));
            }
            return Ok(Self::default());
        }
        Ok(Self {
            approvers: policy.annotation(APPROVERS).map(approvers).transpose()?,
            ttl_s: policy
                .annotation(APPROVAL_TTL)
                .map(|raw| whole(APPROVAL_TTL, raw, MAX_APPROVAL_TTL_S))
                .transpose()?,
            uses: policy
                .annotation(APPROVAL_USES)
                .map(|raw| whole(APPROVAL_USES, raw, u64::from(MAX_APPROVAL_USES)))
                .transpose()?
                .map_or(Ok(1), u32::try_from)
                .map_err(|_| format!("@{APPROVAL_USES} is out of range"))?,
            show_arguments: policy
                .annotation(APPROVAL_SHOW_ARGUMENTS)
                .map(|raw| flag(APPROVAL_SHOW_ARGUMENTS, raw, false))
                .transpose()?
                .unwrap_or(false),
            four_eyes: policy
                .annotation(FOUR_EYES)
                .map(|raw| flag(FOUR_EYES, raw, true))
                .transpose()?
                .unwrap_or(false),
        })
    }

    /// The terms that satisfy every one of `terms`: approvers every list admits (a policy
    /// naming none admits any; lists with no name in common admit nobody), the shortest wait, the fewest uses, arguments shown only if
    /// all agree, four eyes if any asks.
    pub fn strictest<'a>(terms: impl IntoIterator<Item = &'a Self>) -> Self {
        let mut strictest: Option<Self> = None;
        for t in terms {
            strictest = Some(match strictest {
                None => t.clone(),
                Some(s) => Self {
                    approvers: match (s.approvers, &t.approvers) {
                        (None, theirs) => theirs.clone(),
                        (ours, None) => ours,
                        (Some(ours), Some(theirs)) => {
                            Some(ours.intersection(theirs).cloned().collect())
                        }
                    },
                    ttl_s: s.ttl_s.into_iter().chain(t.ttl_s).min(),
                    uses: s.uses.min(t.uses),
                    show_arguments: s.show_arguments && t.show_arguments,
                    four_eyes: s.four_eyes || t.four_eyes,
                },
            });
        }
        strictest.unwrap_or_default()
    }
}

/// A whole number from 1 to `max`, digits only.
fn whole(name: &str, raw: &str, max: u64) -> Result<u64, String> {
    raw.parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n) && raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("@{name} must be a whole number from 1 to {max}"))
}

/// `"true"` or `"false"`; an empty value (`@four_eyes` alone) is `empty`.
fn flag(name: &str, raw: &str, empty: bool) -> Result<bool, String> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        "" => Ok(empty),
        _ => Err(format!("@{name} must be \"true\" or \"false\"")),
    }
}

/// A comma-separated list of group or role names: 1 to [`MAX_APPROVERS`] names, each 1 to
/// [`MAX_APPROVER_LEN`] characters of `[A-Za-z0-9._:@-]`.
fn approvers(raw: &str) -> Result<BTreeSet<String>, String> {
    let names: Vec<&str> = raw.split(',').map(str::trim).collect();
    let valid = |n: &&str| {
        !n.is_empty()
            && n.len() <= MAX_APPROVER_LEN
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
    };
    if names.len() > MAX_APPROVERS || !names.iter().all(valid) {
        return Err(format!(
            "@{APPROVERS} lists 1 to {MAX_APPROVERS} group or role names separated by commas"
        ));
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::PolicySet;

    use super::*;

    fn terms(text: &str) -> Result<ApprovalTerms, String> {
        let set = PolicySet::from_str(text).unwrap();
        ApprovalTerms::of(set.policies().next().unwrap())
    }

    #[test]
    fn annotations_are_read_and_defaulted() {
        let t = terms(
            r#"@approvers("security, sre-oncall") @approval_ttl_s("600") @approval_uses("2")
               @approval_show_arguments("true") @four_eyes
               permit(principal, action, resource) when { context.approved };"#,
        )
        .unwrap();
        assert_eq!(
            t.approvers,
            Some(BTreeSet::from([
                "security".to_owned(),
                "sre-oncall".to_owned()
            ]))
        );
        assert_eq!(
            (t.ttl_s, t.uses, t.show_arguments, t.four_eyes),
            (Some(600), 2, true, true)
        );
        let plain = terms("permit(principal, action, resource);").unwrap();
        assert_eq!(
            plain,
            ApprovalTerms {
                uses: 1,
                ..ApprovalTerms::default()
            }
        );
    }

    #[test]
    fn malformed_or_misplaced_annotations_are_refused() {
        for bad in [
            r#"@approval_ttl_s("0") permit(principal, action, resource);"#,
            r#"@approval_ttl_s("1e3") permit(principal, action, resource);"#,
            r#"@approval_ttl_s("86401") permit(principal, action, resource);"#,
            r#"@approval_uses("-1") permit(principal, action, resource);"#,
            r#"@approval_uses("1001") permit(principal, action, resource);"#,
            r#"@approval_show_arguments("yes") permit(principal, action, resource);"#,
            r#"@four_eyes("maybe") permit(principal, action, resource);"#,
            r#"@approvers("") permit(principal, action, resource);"#,
            r#"@approvers("a,,b") permit(principal, action, resource);"#,
            r#"@approvers("sec ops") permit(principal, action, resource);"#,
            r#"@approvers("admin") forbid(principal, action, resource);"#,
        ] {
            assert!(terms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_strictest_terms_hold() {
        let a = ApprovalTerms {
            approvers: Some(BTreeSet::from(["security".to_owned(), "sre".to_owned()])),
            ttl_s: Some(900),
            uses: 3,
            show_arguments: true,
            four_eyes: false,
        };
        let b = ApprovalTerms {
            approvers: Some(BTreeSet::from(["sre".to_owned()])),
            ttl_s: None,
            uses: 1,
            show_arguments: false,
            four_eyes: true,
        };
        let open = ApprovalTerms {
            uses: 5,
            ..ApprovalTerms::default()
        };
        let s = ApprovalTerms::strictest([&a, &open, &b]);
        assert_eq!(s.approvers, Some(BTreeSet::from(["sre".to_owned()])));
        assert_eq!(
            (s.ttl_s, s.uses, s.show_arguments, s.four_eyes),
            (Some(900), 1, false, true)
        );
        assert_eq!(ApprovalTerms::strictest([&open]).approvers, None);
        // Lists with no name in common leave nobody, never the default roles.
        let security = ApprovalTerms {
            approvers: Some(BTreeSet::from(["security".to_owned()])),
            ..open.clone()
        };
        let disjoint = ApprovalTerms::strictest([&security, &b]);
        assert_eq!(disjoint.approvers, Some(BTreeSet::new()));
    }
}
