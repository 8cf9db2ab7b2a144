//! What a task token grants, and the rules that make every derived grant narrower.
//!
//! A [`Grant`] is the part of an access token that bounds what its holder may do: scopes, the
//! one audience, expiry and delegation depth. [`first_grant`] computes the grant of a token
//! exchanged for an agent's own identity; [`delegated_grant`] the grant of a token handed to
//! another agent. Both are pure functions of their inputs, so the invariant the whole design
//! rests on — no delegated token is ever wider, longer-lived or deeper than its parent — is
//! checked here by property tests over random chains.

use crate::scope::ScopeSet;

/// The global ceiling on token lifetime unless configured lower: 15 minutes.
pub const DEFAULT_MAX_TOKEN_TTL_S: u64 = 15 * 60;
/// The global ceiling on delegation depth unless configured lower.
pub const DEFAULT_MAX_DELEGATION_DEPTH: u32 = 4;

/// The bounds of one access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What it allows.
    pub scopes: ScopeSet,
    /// The one audience (resource server) it is valid at.
    pub audience: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// 0 for the agent's own token; n after n delegations.
    pub depth: u32,
}

/// Lifetime limits that apply to a new token, in seconds. The token lives for the least of
/// them (and never past its parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// What the client asked for, if it asked.
    pub requested_s: Option<u64>,
    /// What the deciding policies allow (`@max_token_ttl_s`), if they say.
    pub policy_limit_s: Option<u64>,
    /// The receiving agent's registered limit.
    pub agent_limit_s: u64,
    /// The deployment's ceiling.
    pub global_ceiling_s: u64,
}

impl Lifetimes {
    /// The shortest of the limits.
    pub fn least_s(&self) -> u64 {
        self.requested_s
            .unwrap_or(u64::MAX)
            .min(self.policy_limit_s.unwrap_or(u64::MAX))
            .min(self.agent_limit_s)
            .min(self.global_ceiling_s)
    }
}

/// Why a grant cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// A requested scope is not covered by the parent's (OAuth `invalid_scope`).
    #[error("the requested scope is wider than the parent token's")]
    WiderScope,
    /// A different audience than the parent's was requested (OAuth `invalid_target`).
    #[error("the requested audience is not the parent token's")]
    OtherAudience,
    /// One more hop would exceed a depth limit (OAuth `invalid_grant`).
    #[error("delegation depth {depth} exceeds the limit {limit}")]
    TooDeep {
        /// The depth the new token would have.
        depth: u32,
        /// The least of the limits that applies.
        limit: u32,
    },
    /// The parent has expired or would leave no lifetime (OAuth `invalid_grant`).
    #[error("the parent token has expired")]
    Expired,
    /// A zero lifetime was requested or allowed (OAuth `invalid_request`).
    #[error("the token would have no lifetime")]
    NoLifetime,
}

/// The grant of an agent's own task token: the scopes policy granted, for the least lifetime,
/// never past `not_after` (the task's deadline and the presented identity's expiry).
pub fn first_grant(
    granted: ScopeSet,
    audience: String,
    now: i64,
    lifetimes: Lifetimes,
    not_after: i64,
) -> Result<Grant, GrantError> {
    let ttl = i64::try_from(lifetimes.least_s()).unwrap_or(i64::MAX);
    if ttl == 0 {
        return Err(GrantError::NoLifetime);
    }
    let expires_at = now.saturating_add(ttl).min(not_after);
    if expires_at <= now {
        return Err(GrantError::Expired);
    }
    Ok(Grant {
        scopes: granted,
        audience,
        expires_at,
        depth: 0,
    })
}

/// What a delegation asks for: every part optional, defaulting to the parent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelegationRequest {
    /// Scopes for the new holder; `None` = all of the parent's.
    pub scopes: Option<ScopeSet>,
    /// Audience; `None` = the parent's.
    pub audience: Option<String>,
}

/// Depth limits of a delegation hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthLimits {
    /// The delegating agent's registered limit.
    pub delegator: u32,
    /// The receiving agent's registered limit.
    pub delegate: u32,
    /// The deployment's ceiling.
    pub global: u32,
}

/// The grant of a token derived from `parent` for another agent. Scopes must each be covered
/// by the parent's (else [`GrantError::WiderScope`]: a delegation never silently widens or
/// narrows what was asked), the audience must be the parent's, depth grows by one and must stay
/// within every limit, and expiry is the least lifetime capped at the parent's expiry.
pub fn delegated_grant(
    parent: &Grant,
    request: &DelegationRequest,
    now: i64,
    lifetimes: Lifetimes,
    depth_limits: DepthLimits,
) -> Result<Grant, GrantError> {
    if parent.expires_at <= now {
        return Err(GrantError::Expired);
    }
    let scopes = match &request.scopes {
        Some(asked) if !parent.scopes.covers_all(asked) => return Err(GrantError::WiderScope),
        Some(asked) => asked.clone(),
        None => parent.scopes.clone(),
    };
    if request
        .audience
        .as_ref()
        .is_some_and(|aud| *aud != parent.audience)
    {
        return Err(GrantError::OtherAudience);
    }
    let depth = parent.depth.saturating_add(1);
    let limit = depth_limits
        .delegator
        .min(depth_limits.delegate)
        .min(depth_limits.global);
    if depth > limit {
        return Err(GrantError::TooDeep { depth, limit });
    }
    let first = first_grant(
        scopes,
        parent.audience.clone(),
        now,
        lifetimes,
        parent.expires_at,
    )?;
    Ok(Grant { depth, ..first })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::scope::Scope;

    const NOW: i64 = 1_800_000_000;

    fn scopes(value: &str) -> ScopeSet {
        ScopeSet::parse(value).unwrap()
    }

    fn lifetimes(requested_s: Option<u64>) -> Lifetimes {
        Lifetimes {
            requested_s,
            policy_limit_s: None,
            agent_limit_s: 900,
            global_ceiling_s: 900,
        }
    }

    const LIMITS: DepthLimits = DepthLimits {
        delegator: 2,
        delegate: 2,
        global: 4,
    };

    fn root() -> Grant {
        first_grant(
            scopes("read:repo/* write:repo/app"),
            "https://tools.example".into(),
            NOW,
            lifetimes(Some(600)),
            i64::MAX,
        )
        .unwrap()
    }

    #[test]
    fn first_grant_takes_the_least_lifetime_and_the_deadline() {
        assert_eq!(root().expires_at, NOW + 600);
        let g = first_grant(scopes("read:x"), "a".into(), NOW, lifetimes(None), NOW + 60).unwrap();
        assert_eq!(g.expires_at, NOW + 60);
        let zero = first_grant(
            scopes("read:x"),
            "a".into(),
            NOW,
            lifetimes(Some(0)),
            i64::MAX,
        );
        assert_eq!(zero, Err(GrantError::NoLifetime));
        let past = first_grant(scopes("read:x"), "a".into(), NOW, lifetimes(None), NOW);
        assert_eq!(past, Err(GrantError::Expired));
        let policy = Lifetimes {
            policy_limit_s: Some(120),
            ..lifetimes(Some(600))
        };
        let capped = first_grant(scopes("read:x"), "a".into(), NOW, policy, i64::MAX).unwrap();
        assert_eq!(capped.expires_at, NOW + 120);
    }

    #[test]
    fn delegation_narrows_and_refuses_widening() {
        let parent = root();
        let ask = |s: &str| DelegationRequest {
            scopes: Some(scopes(s)),
            audience: None,
        };
        let child =
            delegated_grant(&parent, &ask("read:repo/app"), NOW, lifetimes(None), LIMITS).unwrap();
        assert_eq!(child.depth, 1);
        assert_eq!(child.expires_at, parent.expires_at, "capped at the parent");
        assert_eq!(
            delegated_grant(&parent, &ask("write:repo/*"), NOW, lifetimes(None), LIMITS),
            Err(GrantError::WiderScope)
        );
        let other = DelegationRequest {
            scopes: None,
            audience: Some("https://elsewhere".into()),
        };
        assert_eq!(
            delegated_grant(&parent, &other, NOW, lifetimes(None), LIMITS),
            Err(GrantError::OtherAudience)
        );
        let grandchild =
            delegated_grant(&child, &ask("read:repo/app"), NOW, lifetimes(None), LIMITS).unwrap();
        assert_eq!(
            delegated_grant(
                &grandchild,
                &ask("read:repo/app"),
                NOW,
                lifetimes(None),
                LIMITS
            ),
            Err(GrantError::TooDeep { depth: 3, limit: 2 })
        );
        let later = parent.expires_at;
        assert_eq!(
            delegated_grant(
                &parent,
                &ask("read:repo/app"),
                later,
                lifetimes(None),
                LIMITS
            ),
            Err(GrantError::Expired)
        );
    }

    /// A random scope over a small alphabet, so that covering relations actually occur.
    fn any_scope() -> impl Strategy<Value = Scope> {
        let action = prop::sample::select(vec!["read", "write", "call_tool"]);
        let resource = prop::sample::select(vec![
            "*", "a/*", "a/b", "a/b/*", "a/b/c", "a/c", "b/*", "b/a", "ab",
        ]);
        (action, resource).prop_map(|(a, r)| Scope::parse(&format!("{a}:{r}")).unwrap())
    }

    fn any_scopes() -> impl Strategy<Value = ScopeSet> {
        prop::collection::vec(any_scope(), 1..5).prop_map(ScopeSet::from_scopes)
    }

    fn any_hop()
    -> impl Strategy<Value = (Option<ScopeSet>, Option<bool>, Option<u64>, u32, u32, i64)> {
        (
            prop::option::of(any_scopes()),
            prop::option::of(any::<bool>()),
            prop::option::of(0u64..2_000),
            0u32..5,
            0u32..5,
            0i64..1_000,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Over random chains of delegations with random requests, limits and clocks, every
        /// token that is issued is within its parent: scopes covered, same audience, expiry no
        /// later, depth exactly one more and within every limit.
        #[test]
        fn no_delegated_token_is_wider_longer_or_deeper(
            root_scopes in any_scopes(),
            root_ttl in 1u64..2_000,
            hops in prop::collection::vec(any_hop(), 1..8),
        ) {
            let mut parent = first_grant(
                root_scopes, "aud".into(), NOW, lifetimes(Some(root_ttl)), i64::MAX,
            ).unwrap();
            let mut now = NOW;
            for (asked, same_audience, ttl, delegator, delegate, elapsed) in hops {
                now += elapsed;
                let request = DelegationRequest {
                    scopes: asked.clone(),
                    audience: same_audience.map(|same| {
                        if same { "aud".to_owned() } else { "other".to_owned() }
                    }),
                };
                let limits = DepthLimits { delegator, delegate, global: 4 };
                let result = delegated_grant(&parent, &request, now, lifetimes(ttl), limits);
                let Ok(child) = result else { continue };
                prop_assert!(parent.scopes.covers_all(&child.scopes));
                if let Some(asked) = &asked {
                    prop_assert_eq!(&child.scopes, asked);
                }
                prop_assert_eq!(&child.audience, &parent.audience);
                prop_assert!(child.expires_at <= parent.expires_at);
                prop_assert!(child.expires_at > now);
                prop_assert_eq!(child.depth, parent.depth + 1);
                prop_assert!(child.depth <= delegator.min(delegate).min(4));
                // Whatever the child permits, the parent permits.
                for scope in child.scopes.iter() {
                    prop_assert!(parent.scopes.permits(scope.action(), scope.resource())
                        || scope.resource().ends_with('*'));
                }
                parent = child;
            }
        }

        /// `covers` is a preorder consistent with `permits`: if `a` covers `b`, every concrete
        /// resource `b` permits, `a` permits too.
        #[test]
        fn covering_implies_permitting(a in any_scope(), b in any_scope(),
                                       id in prop::sample::select(vec!["a/b", "a/b/c", "a/c", "ab", "b/a", "x"])) {
            if a.covers(&b) && b.permits(b.action(), id) {
                prop_assert!(a.permits(b.action(), id));
            }
            prop_assert!(a.covers(&a));
        }
    }
}
