//! What refusals of anonymous requests may write: a bounded amount per source per window.
//!
//! A refusal is audited, but a caller who proved no identity must not be able to grow the
//! store at will (one such caller filled 24 MiB in a second with long request paths). So for
//! requests nobody authenticated:
//!
//! - the fields taken from the request are cut to fixed sizes ([`MAX_PATH_BYTES`],
//!   [`MAX_USER_AGENT_BYTES`]; the request id is already cut to 128 characters);
//! - within each window (`refusal_window_s`, default 60 s), a source's first refusals
//!   (`refusals_written_per_source`, default 10) are written one by one, before their answers
//!   as every refusal is; at most [`MAX_WRITTEN`] are written per window from all sources
//!   together; the rest are counted in memory and written as one `api.reject.summary` record
//!   per source when the window closes, with the count per code;
//! - at most [`MAX_SOURCES`] sources are told apart per window; the rest are pooled into one
//!   summary for "other sources".
//!
//! A source is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64). So one
//! anonymous source writes at most `refusals_written_per_source + 1` records per window, and
//! all anonymous sources together at most `MAX_WRITTEN + MAX_SOURCES + 1`, each record at most
//! a few KiB. Refusals of authenticated callers are written in full, one record each, as
//! before. Everything counted shows in `/metrics` at once.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use aims_core::audit::{Actor, AuditEvent, Outcome, action};
use serde_json::json;
use time::OffsetDateTime;

/// Sources told apart per window.
pub const MAX_SOURCES: usize = 1024;
/// Anonymous refusals written one by one per window, from all sources together.
pub const MAX_WRITTEN: u64 = 1000;
/// Longest request path kept in an anonymous refusal's record.
pub const MAX_PATH_BYTES: usize = 256;
/// Longest `User-Agent` kept in an anonymous refusal's record.
pub const MAX_USER_AGENT_BYTES: usize = 128;

/// Where a request came from: an IPv4 address, or the /64 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(IpAddr);

impl Source {
    /// The source of a peer address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !u128::from(u64::MAX);
                    Self(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// What the request of a refusal says about itself, cut to size.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The peer's source, when known.
    pub source: Option<Source>,
    /// `User-Agent`, when sent.
    pub user_agent: Option<String>,
}

impl Origin {
    /// The origin of a request from `peer` with `headers`.
    pub fn of(peer: Option<IpAddr>, headers: &axum::http::HeaderMap) -> Self {
        Self {
            source: peer.map(Source::of),
            user_agent: headers
                .get(axum::http::header::USER_AGENT)
                .map(|v| truncate(&String::from_utf8_lossy(v.as_bytes()), MAX_USER_AGENT_BYTES)),
        }
    }
}

/// A source's refusals in one window: how many were written, and what was only counted.
#[derive(Debug, Default)]
struct Tally {
    written: u64,
    total: u64,
    codes: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn count(&mut self, code: &'static str) {
        self.total += 1;
        *self.codes.entry(code).or_default() += 1;
    }
}

#[derive(Debug)]
struct Window {
    opened: OffsetDateTime,
    /// Sources seen this window.
    sources: HashMap<Option<Source>, Tally>,
    /// Refusals of sources beyond [`MAX_SOURCES`].
    others: Tally,
    /// Refusals written one by one this window.
    written: u64,
}

impl Window {
    fn new(opened: OffsetDateTime) -> Self {
        Self {
            opened,
            sources: HashMap::new(),
            others: Tally::default(),
            written: 0,
        }
    }

    /// The tally of `source`, or of the pooled others once [`MAX_SOURCES`] are told apart.
    fn tally(&mut self, source: Option<Source>) -> &mut Tally {
        if self.sources.contains_key(&source) || self.sources.len() < MAX_SOURCES {
            self.sources.entry(source).or_default()
        } else {
            &mut self.others
        }
    }
}

/// Whether an anonymous refusal is written now or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The source's first this window: write it (cut to size).
    Write,
    /// Counted into the source's summary.
    Count,
}

/// This replica's window of anonymous refusals.
pub struct RefusalLog {
    window: Mutex<Window>,
    /// Refusals written one by one per source per window.
    per_source: u64,
}

impl RefusalLog {
    /// A log that writes up to `per_source` refusals of each source per window.
    pub fn new(per_source: u64) -> Self {
        Self {
            window: Mutex::new(Window::new(OffsetDateTime::now_utc())),
            per_source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic while holding the lock leaves only counts half-updated.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files an anonymous refusal with `code` from `source`.
    pub fn admit(&self, source: Option<Source>, code: &'static str) -> Disposition {
        let mut window = self.lock();
        let room = window.written < MAX_WRITTEN;
        let per_source = self.per_source;
        let tally = window.tally(source);
        if room && tally.written < per_source {
            tally.written += 1;
            window.written += 1;
            return Disposition::Write;
        }
        tally.count(code);
        Disposition::Count
    }

    /// Counts a refusal that is never written on its own (a request refused for its rate).
    pub fn count(&self, source: Option<Source>, code: &'static str) {
        self.lock().tally(source).count(code);
    }

    /// How many sources this window tells apart.
    pub fn sources(&self) -> usize {
        self.lock().sources.len()
    }

    /// Closes the window at `now`: the summary records of what was counted in it.
    pub fn close(&self, now: OffsetDateTime) -> Vec<AuditEvent> {
        let closed = std::mem::replace(&mut *self.lock(), Window::new(now));
        let mut summaries: Vec<(String, Tally)> = closed
            .sources
            .into_iter()
            .filter(|(_, tally)| tally.total > 0)
            .map(|(source, tally)| {
                let name = source.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
                (name, tally)
            })
            .collect();
        if closed.others.total > 0 {
            summaries.push(("other sources".to_owned(), closed.others));
        }
        summaries
            .into_iter()
            .map(|(source, tally)| {
                let mut event = AuditEvent::new(
                    now,
                    Actor::Anonymous,
                    action::REJECT_SUMMARY,
                    Outcome::Denied,
                );
                event.details = json!({
                    "source": source,
                    "refused": tally.total,
                    "codes": tally.codes,
                    "window_start": closed.opened.unix_timestamp(),
                    "window_end": now.unix_timestamp(),
                });
                event
            })
            .collect()
    }
}

/// The record of an anonymous refusal that is written: the request's fields cut to their
/// bounds, its source and user agent named.
pub fn bounded(mut event: AuditEvent, origin: &Origin) -> AuditEvent {
    event.resource = event.resource.map(|r| truncate(&r, MAX_PATH_BYTES));
    let mut details = match std::mem::take(&mut event.details) {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    if let Some(source) = origin.source {
        details.insert("source".to_owned(), json!(source.to_string()));
    }
    if let Some(agent) = &origin.user_agent {
        details.insert("user_agent".to_owned(), json!(agent));
    }
    event.details = serde_json::Value::Object(details);
    event
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = text.get(..end).unwrap_or_default().to_owned();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(ip: &str) -> Option<Source> {
        ip.parse().ok().map(Source::of)
    }

    #[test]
    fn a_source_writes_its_first_refusals_per_window_and_the_rest_is_summarized() {
        let log = RefusalLog::new(2);
        let a = source("192.0.2.1");
        assert_eq!(log.admit(a, "unauthenticated"), Disposition::Write);
        assert_eq!(log.admit(a, "no_route"), Disposition::Write);
        for _ in 0..999 {
            assert_eq!(log.admit(a, "unauthenticated"), Disposition::Count);
        }
        log.count(a, "rate_limited");
        assert_eq!(
            log.admit(source("192.0.2.2"), "no_route"),
            Disposition::Write
        );
        let summaries = log.close(OffsetDateTime::now_utc());
        assert_eq!(summaries.len(), 1, "the second source had nothing counted");
        let details = &summaries[0].details;
        assert_eq!(details["source"], "192.0.2.1");
        assert_eq!(details["refused"], 1000);
        assert_eq!(details["codes"]["unauthenticated"], 999);
        assert_eq!(details["codes"]["rate_limited"], 1);
        assert_eq!(details["codes"].as_object().map(|c| c.len()), Some(2));
        assert_eq!(summaries[0].action, action::REJECT_SUMMARY);
        // A new window: the source writes its first refusals again.
        assert_eq!(log.admit(a, "unauthenticated"), Disposition::Write);
    }

    #[test]
    fn sources_beyond_the_bound_are_pooled_and_writing_is_capped_overall() {
        let log = RefusalLog::new(1);
        for i in 0..MAX_SOURCES {
            let ip = std::net::Ipv4Addr::from(u32::try_from(i).unwrap_or(0));
            let expected = if (i as u64) < MAX_WRITTEN {
                Disposition::Write
            } else {
                Disposition::Count
            };
            assert_eq!(log.admit(Some(Source::of(ip.into())), "x"), expected);
        }
        assert_eq!(log.admit(source("203.0.113.9"), "x"), Disposition::Count);
        assert_eq!(log.sources(), MAX_SOURCES);
        let summaries = log.close(OffsetDateTime::now_utc());
        let others = summaries
            .iter()
            .find(|s| s.details["source"] == "other sources")
            .unwrap();
        assert_eq!(others.details["refused"], 1);
        assert_eq!(
            summaries.len() as u64,
            1 + (MAX_SOURCES as u64 - MAX_WRITTEN)
        );
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        assert_eq!(source("2001:db8::1"), source("2001:db8::ffff:1"));
        assert_ne!(source("2001:db8::1"), source("2001:db8:0:1::1"));
        assert_eq!(source("::ffff:192.0.2.1"), source("192.0.2.1"));
        assert_eq!(
            source("2001:db8::1").map(|s| s.to_string()).as_deref(),
            Some("2001:db8::/64")
        );
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("abc", 3), "abc");
        let cut = truncate(&"é".repeat(200), 16);
        assert!(cut.len() <= 16, "{cut}");
        assert!(cut.ends_with('…'));
        assert_eq!(
            truncate(&"a".repeat(1000), MAX_PATH_BYTES).len(),
            MAX_PATH_BYTES
        );
    }
}
