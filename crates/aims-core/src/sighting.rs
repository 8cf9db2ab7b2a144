//! Sightings: callers an enforcement point refused before any decision — no token, a token AIMS
//! did not issue for it, a bad proof — counted by source, route, user agent and reason, so the
//! governance report can show unmanaged callers without one audit record per flood request.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Most sightings one report carries: at the longest, a report stays within the server's
/// default body limit (64 KiB).
pub const MAX_PER_REPORT: usize = 40;
/// Most distinct sightings kept per reporting enforcement point; later ones are dropped (and
/// the report says how many).
pub const MAX_PER_REPORTER: u64 = 100_000;
/// Longest user agent kept, in characters (longer ones are cut).
pub const MAX_USER_AGENT: usize = 256;

/// One kind of refused caller, as an enforcement point saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sighting {
    /// The caller's address.
    pub source: String,
    /// The route it called.
    pub route: String,
    /// Its `User-Agent`, cut to [`MAX_USER_AGENT`] characters (empty when none).
    pub user_agent: String,
    /// Why it was refused (the refusal's code, e.g. `invalid_token`).
    pub reason: String,
    /// When it was first seen.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// When it was last seen.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// How many times.
    pub count: u64,
}

impl Sighting {
    /// Whether every field is within bounds: visible text of bounded length, a positive
    /// count, first no later than last.
    pub fn is_valid(&self) -> bool {
        let text = |value: &str, max: usize| {
            value.chars().count() <= max && crate::text::is_visible(value, false)
        };
        !self.source.is_empty()
            && text(&self.source, 64)
            && !self.route.is_empty()
            && text(&self.route, 64)
            && text(&self.user_agent, MAX_USER_AGENT)
            && !self.reason.is_empty()
            && text(&self.reason, 64)
            && (1..=1_000_000_000).contains(&self.count)
            && self.first_seen <= self.last_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn sightings_are_bounded_visible_text() {
        let good = Sighting {
            source: "203.0.113.7".into(),
            route: "repositories".into(),
            user_agent: "curl/8.0".into(),
            reason: "invalid_token".into(),
            first_seen: datetime!(2026-01-01 00:00 UTC),
            last_seen: datetime!(2026-01-01 00:05 UTC),
            count: 3,
        };
        assert!(good.is_valid());
        for bad in [
            Sighting {
                count: 0,
                ..good.clone()
            },
            Sighting {
                user_agent: "x".repeat(MAX_USER_AGENT + 1),
                ..good.clone()
            },
            Sighting {
                user_agent: "evil\u{1b}[2J".into(),
                ..good.clone()
            },
            Sighting {
                source: String::new(),
                ..good.clone()
            },
            Sighting {
                first_seen: good.last_seen + time::Duration::SECOND,
                ..good.clone()
            },
        ] {
            assert!(!bad.is_valid(), "{bad:?}");
        }
    }
}
