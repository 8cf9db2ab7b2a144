//! Callers the gateway refused before any decision (no token, a token AIMS did not issue for
//! it, a bad proof), counted by source, route, user agent and reason in a bounded table until
//! `proxy::report_sightings` sends them to AIMS — a flood is a count, never a record per
//! request, here or in AIMS.

use std::collections::HashMap;
use std::sync::Mutex;

use aims_core::sighting::{MAX_USER_AGENT, Sighting};
use time::OffsetDateTime;

/// Most distinct refused callers kept between two reports; later new ones are only counted.
pub const MAX_KEPT: usize = 10_000;

/// Who was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: String,
    route: String,
    user_agent: String,
    reason: String,
}

/// The refused callers seen since the last report.
#[derive(Debug, Default)]
pub struct Sightings {
    seen: Mutex<(HashMap<Key, Sighting>, u64)>,
}

impl Sightings {
    /// Counts one refused call.
    pub fn record(&self, source: &str, route: &str, user_agent: &str, reason: &str) {
        let user_agent: String = user_agent
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT)
            .collect();
        let key = Key {
            source: source.to_owned(),
            route: route.to_owned(),
            user_agent,
            reason: reason.to_owned(),
        };
        let now = OffsetDateTime::now_utc();
        let Ok(mut guard) = self.seen.lock() else {
            return;
        };
        let (seen, dropped) = &mut *guard;
        if let Some(sighting) = seen.get_mut(&key) {
            sighting.count = sighting.count.saturating_add(1);
            sighting.last_seen = now;
        } else if seen.len() < MAX_KEPT {
            let sighting = Sighting {
                source: key.source.clone(),
                route: key.route.clone(),
                user_agent: key.user_agent.clone(),
                reason: key.reason.clone(),
                first_seen: now,
                last_seen: now,
                count: 1,
            };
            seen.insert(key, sighting);
        } else {
            *dropped = dropped.saturating_add(1);
        }
    }

    /// Everything seen since the last call, and how many calls did not fit.
    pub(crate) fn take(&self) -> (Vec<Sighting>, u64) {
        let Ok(mut guard) = self.seen.lock() else {
            return (Vec::new(), 0);
        };
        let (seen, dropped) = std::mem::take(&mut *guard);
        (seen.into_values().collect(), dropped)
    }
}
