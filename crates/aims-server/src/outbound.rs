//! Outbound HTTP: the clients the server calls out with, and which addresses they may reach.
//!
//! Two clients, both with bounded timeouts and no redirects. The general one calls
//! destinations an operator configured (the drift webhook, trusted issuers' JWKS), which may
//! well be internal. The push client delivers SSF events to endpoint URLs that a resource
//! server chose when it created its stream; so that this cannot be used to reach the
//! server's own network (loopback, private ranges, link-local cloud metadata services), it
//! connects only to public unicast addresses: a host name is resolved by
//! [`PublicOnlyResolver`], which refuses the name if any of its addresses is not public (the
//! check happens on every connection, so re-binding the name later does not get past it),
//! and an address written in the URL is checked by [`push_target_allowed`]. A deployment whose
//! receivers live on a private network sets `ssf_push_private_networks`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::Config;

/// Connection timeout of every outbound call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-call timeout of every outbound call (a call may set a shorter one).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The outbound clients.
pub struct Clients {
    /// For operator-configured destinations.
    pub general: reqwest::Client,
    /// For SSF push endpoints chosen by receivers.
    pub push: reqwest::Client,
}

/// Builds both clients for `config`.
///
/// # Errors
/// When the TLS backend cannot be initialised.
pub fn clients(config: &Config) -> Result<Clients, reqwest::Error> {
    let builder = || {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
    };
    let push = if config.ssf_push_private_networks {
        builder()
    } else {
        builder().dns_resolver(Arc::new(PublicOnlyResolver))
    };
    Ok(Clients {
        general: builder().build()?,
        push: push.build()?,
    })
}

/// Whether the push client may be pointed at `url`: its host is a name (checked when it is
/// resolved) or a public address, unless private networks are allowed.
pub fn push_target_allowed(url: &reqwest::Url, private_networks: bool) -> bool {
    if private_networks {
        return true;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    // The URL parser has normalised addresses (`2130706433` is `127.0.0.1`; IPv6 in brackets).
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => is_public(ip),
        Err(_) => !bare.eq_ignore_ascii_case("localhost"),
    }
}

/// Whether `ip` is a globally routable unicast address: not loopback, private, shared (CGNAT),
/// link-local, unspecified, broadcast, multicast, documentation, benchmarking or reserved,
/// looking through IPv4-mapped and NAT64 IPv6 addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., high, low] = segments;
        return is_public_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || segments[0] == 0x2001 && segments[1] == 0x0db8
        || segments[0] == 0
        || segments[0] & 0xffc0 == 0xfec0)
}

/// Resolves host names for the push client, refusing a name any of whose addresses is not
/// public.
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
                return Err("the push endpoint's host resolves to a non-public address".into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip(private)), "{private}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    #[test]
    fn push_targets_by_address_are_checked_unless_private_networks_are_allowed() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        for refused in [
            "http://127.0.0.1:8080/events",
            "http://[::1]/events",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/events",
            "http://LOCALHOST:9/events",
            "http://10.0.0.5/events",
            "http://2130706433/events",
        ] {
            assert!(!push_target_allowed(&url(refused), false), "{refused}");
            assert!(push_target_allowed(&url(refused), true), "{refused}");
        }
        for allowed in ["https://receiver.example/events", "https://1.1.1.1/events"] {
            assert!(push_target_allowed(&url(allowed), false), "{allowed}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let system: Vec<SocketAddr> = tokio::net::lookup_host(("localhost", 0))
            .await
            .unwrap()
            .collect();
        assert!(system.iter().all(|a| a.ip().is_loopback()), "{system:?}");
        let resolved = PublicOnlyResolver
            .resolve("localhost".parse::<Name>().unwrap())
            .await;
        assert!(resolved.is_err());
    }
}
