//! The client address of a request, behind trusted reverse proxies (`api.trusted_proxies`).
//!
//! The TCP peer is the client unless it is a trusted proxy. When it is, the client is the
//! right-most address in `X-Forwarded-For` that is not itself trusted (each proxy appends
//! the address it received the request from, so addresses left of the first untrusted one
//! are whatever the client wrote and cannot be believed). A header from an untrusted peer is
//! ignored. When every address in the header is trusted, or the header is missing or
//! unparsable, the peer stands. The failed-authentication limiter and the request log use
//! this address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts these networks (single addresses are /32 or /128 networks).
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    /// True when `ip` (IPv4-mapped IPv6 counts as IPv4) is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else { return peer };
            for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match parse_hop(item) {
                    Some(ip) => hops.push(ip),
                    None => return peer,
                }
            }
        }
        hops.into_iter().rev().find(|ip| !self.trusts(*ip)).map_or(peer, canonical)
    }

    /// The client address of `req` (0.0.0.0 without connection information, as when a
    /// router is called directly in tests).
    pub fn client_of(&self, req: &Request) -> IpAddr {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        self.client(peer, req.headers())
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_hop(item: &str) -> Option<IpAddr> {
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Some(ip);
    }
    item.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = proxies(&["10.0.0.0/24"]);
        assert_eq!(p.client(ip("192.0.2.9"), &xff(&["203.0.113.5"])), ip("192.0.2.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &xff(&["1.2.3.4"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/24", "127.0.0.1/32"]);
        let h = xff(&["198.51.100.1, 203.0.113.5", "10.0.0.7"]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("203.0.113.5"));
        assert_eq!(
            p.client(ip("::ffff:127.0.0.1"), &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(p.client(ip("10.0.0.2"), &xff(&["::ffff:198.51.100.2"])), ip("198.51.100.2"));
    }

    #[test]
    fn a_missing_all_trusted_or_bad_header_leaves_the_peer() {
        let p = proxies(&["10.0.0.0/24"]);
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
        assert_eq!(p.client(ip("10.0.0.2"), &xff(&["10.0.0.3"])), ip("10.0.0.2"));
        assert_eq!(p.client(ip("10.0.0.2"), &xff(&["1.2.3.4, nonsense"])), ip("10.0.0.2"));
    }
}
