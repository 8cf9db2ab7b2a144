//! Rate limits: per source on the endpoints anyone may call, per credential on the token
//! endpoints. A request over its limit is answered 429 with `Retry-After` and counted (never
//! written on its own: see [`crate::refusals`]).
//!
//! - **Per source** (an IPv4 address or IPv6 /64, [`Source`]): every request to the
//!   unauthenticated endpoints (attestation and its nonce, the OAuth token, introspection and
//!   revocation endpoints, Shared Signals) and every request that carries no `Authorization`
//!   header to any other API route (it can only be refused).
//! - **Per credential**: token requests per agent once its identity verified, and
//!   introspection and revocation requests per resource server once it authenticated.
//!
//! Each is a token bucket (GCRA, the `governor` crate): a sustained rate per second and a
//! burst. Buckets of keys that are back at full capacity are forgotten every
//! [`FORGET_EVERY`], so memory follows the number of recently active keys.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{ApiError, ErrorCode};
use crate::refusals::Source;

/// How often buckets back at full capacity are dropped.
pub const FORGET_EVERY: Duration = Duration::from_secs(10);

/// A sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: NonZeroU32,
    /// Requests that may come at once.
    pub burst: NonZeroU32,
}

impl Rate {
    /// Parses `RATE/BURST`, e.g. `100/500`.
    pub fn parse(text: &str) -> Option<Self> {
        let (rate, burst) = text.split_once('/')?;
        Some(Self {
            per_second: rate.trim().parse().ok()?,
            burst: burst.trim().parse().ok()?,
        })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.per_second, self.burst)
    }
}

/// This replica's rate limiters.
pub struct RateLimits {
    per_source: DefaultKeyedRateLimiter<Source>,
    per_credential: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Limiters with the given rates.
    pub fn new(per_source: Rate, per_credential: Rate) -> Self {
        Self {
            per_source: RateLimiter::keyed(per_source.quota()),
            per_credential: RateLimiter::keyed(per_credential.quota()),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from `source`'s bucket; `Err(wait)` when it is empty.
    pub fn source(&self, source: Source) -> Result<(), Duration> {
        self.per_source
            .check_key(&source)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes one request from `credential`'s bucket; `Err(wait)` when it is empty.
    pub fn credential(&self, credential: &str) -> Result<(), Duration> {
        self.per_credential
            .check_key(&credential.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// How many sources and credentials have a bucket now.
    pub fn tracked(&self) -> usize {
        self.per_source.len() + self.per_credential.len()
    }

    pub fn forget_idle(&self) {
        self.per_source.retain_recent();
        self.per_source.shrink_to_fit();
        self.per_credential.retain_recent();
        self.per_credential.shrink_to_fit();
    }
}

/// 429 with `Retry-After` (whole seconds, at least one).
pub fn too_many(wait: Duration) -> ApiError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        "too many requests; retry later",
    )
    .with_retry_after(seconds.max(1))
}

/// The peer address a request came from.
pub fn peer(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_rate_slash_burst() {
        let rate = Rate::parse("100/500").unwrap();
        assert_eq!((rate.per_second.get(), rate.burst.get()), (100, 500));
        assert_eq!(rate.to_string(), "100/500");
        for bad in ["", "100", "0/5", "5/0", "a/b", "-1/5", "1/2/3"] {
            assert_eq!(Rate::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_waits() {
        let limits = RateLimits::new(Rate::parse("1/3").unwrap(), Rate::parse("1/2").unwrap());
        let a = Source::of("192.0.2.1".parse().unwrap());
        let b = Source::of("192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(limits.source(a).is_ok());
        }
        let wait = limits.source(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.source(b).is_ok(), "sources have their own buckets");
        assert!(limits.credential("agent-a").is_ok());
        assert!(limits.credential("agent-a").is_ok());
        assert!(limits.credential("agent-a").is_err());
        assert!(limits.credential("agent-b").is_ok());
        assert_eq!(too_many(wait).status, StatusCode::TOO_MANY_REQUESTS);
    }
}
