//! Brute-force protection for the API's authentication, and the `last_used_at` throttle.
//!
//! Only *failed* authentications are counted, per client address (the TCP peer, or behind a
//! trusted reverse proxy the forwarded client: [`super::client`]; an `X-Forwarded-For`
//! from any other peer is ignored, since any client can send one). The count is a
//! `governor` keyed GCRA limiter with the quota `api.auth_failures_per_minute` (default 20
//! a minute: 20 failures at once, then one more every 3 s; 0 turns the limiter off). The
//! failure that exceeds it blocks the address for `api.auth_block_seconds` ([`BLOCK`] by
//! default): every
//! request from it, with a valid token or not, gets 429 with `Retry-After` until the block
//! ends, so guessing on cannot tell a right token from a wrong one. Valid tokens from other
//! addresses never touch the limiter.
//!
//! Memory is bounded under an attack from many addresses: the limiter forgets addresses
//! whose count is back to zero at most once a second ([`governor::RateLimiter::retain_recent`]),
//! and past [`MAX_TRACKED`] addresses a failure from a new one is refused (429) without
//! being recorded; blocks are kept for at most [`MAX_TRACKED`] addresses. IPv6 addresses
//! count per /64 (one host usually holds a whole /64).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Failed authentications allowed per client address per minute.
pub const FAILURES_PER_MINUTE: u32 = 20;
/// How long an address that exceeded [`FAILURES_PER_MINUTE`] is refused.
pub const BLOCK: Duration = Duration::from_secs(60);
/// Most client addresses tracked at once (limiter entries, and blocks).
pub const MAX_TRACKED: usize = 65_536;
/// A token's `last_used_at` is written at most this often.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Failed-authentication limiter and token-use throttle shared by the API's requests.
pub struct AuthGuard {
    /// `None` when the limiter is off (`api.auth_failures_per_minute = 0`).
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    block: Duration,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    last_cleanup: Mutex<Instant>,
    touched: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for AuthGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGuard").field("tracked", &self.tracked()).finish_non_exhaustive()
    }
}

impl Default for AuthGuard {
    fn default() -> Self {
        AuthGuard::new()
    }
}

/// The key an address is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by
/// its /64 prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuthGuard {
    /// A guard with nothing recorded and the default limits.
    pub fn new() -> AuthGuard {
        AuthGuard::with_limits(FAILURES_PER_MINUTE, BLOCK)
    }

    /// A guard allowing `per_minute` failures per address (0 = no limit) and blocking for
    /// `block` past them.
    pub fn with_limits(per_minute: u32, block: Duration) -> AuthGuard {
        AuthGuard {
            failures: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            block,
            blocked: Mutex::new(HashMap::new()),
            last_cleanup: Mutex::new(Instant::now()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(retry after)` while `ip` is blocked.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let key = client_key(ip);
        let now = Instant::now();
        let mut blocked = lock(&self.blocked);
        match blocked.get(&key) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                blocked.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Records a failed authentication from `ip`; `Some(retry after)` when the address is
    /// now blocked (answer 429), `None` when it may still fail (answer 401).
    pub fn failed(&self, ip: IpAddr) -> Option<Duration> {
        let key = client_key(ip);
        let failures = self.failures.as_ref()?;
        self.cleanup();
        if failures.len() >= MAX_TRACKED {
            // Too many addresses at once: refuse failures rather than grow.
            return Some(self.block);
        }
        if failures.check_key(&key).is_ok() {
            return None;
        }
        let mut blocked = lock(&self.blocked);
        if blocked.len() >= MAX_TRACKED {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        if blocked.len() < MAX_TRACKED {
            blocked.insert(key, Instant::now() + self.block);
        }
        Some(self.block)
    }

    /// At most once a second: forget addresses whose count is back to zero, and ended
    /// blocks.
    fn cleanup(&self) {
        let now = Instant::now();
        {
            let mut last = lock(&self.last_cleanup);
            if now.duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        if let Some(failures) = &self.failures {
            failures.retain_recent();
            failures.shrink_to_fit();
        }
        lock(&self.blocked).retain(|_, until| *until > now);
    }

    /// Number of client addresses the limiter holds (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.failures.as_ref().map_or(0, |f| f.len())
    }

    /// True when the token `public_id` was last recorded as used over [`TOUCH_INTERVAL`]
    /// ago (or never): the caller then writes `last_used_at`.
    pub fn should_touch(&self, public_id: &str) -> bool {
        let now = Instant::now();
        let mut touched = lock(&self.touched);
        if touched.get(public_id).is_some_and(|t| now.duration_since(*t) < TOUCH_INTERVAL) {
            return false;
        }
        if touched.len() >= MAX_TRACKED {
            touched.retain(|_, t| now.duration_since(*t) < TOUCH_INTERVAL);
        }
        touched.insert(public_id.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_21st_failure_blocks_that_address_only() {
        let g = AuthGuard::new();
        for i in 0..FAILURES_PER_MINUTE {
            assert_eq!(g.failed(ip("10.0.0.1")), None, "failure {}", i + 1);
            assert_eq!(g.blocked(ip("10.0.0.1")), None);
        }
        assert_eq!(g.failed(ip("10.0.0.1")), Some(BLOCK));
        let left = g.blocked(ip("10.0.0.1")).expect("blocked");
        assert!(left > Duration::from_secs(55) && left <= BLOCK, "{left:?}");
        assert!(g.blocked(ip("::ffff:10.0.0.1")).is_some(), "mapped IPv4 is the same");
        assert_eq!(g.blocked(ip("10.0.0.2")), None);
        assert_eq!(g.failed(ip("10.0.0.2")), None);
    }

    #[test]
    fn the_limits_are_configurable_and_zero_turns_the_limiter_off() {
        let g = AuthGuard::with_limits(2, Duration::from_secs(5));
        assert_eq!(g.failed(ip("10.0.0.1")), None);
        assert_eq!(g.failed(ip("10.0.0.1")), None);
        assert_eq!(g.failed(ip("10.0.0.1")), Some(Duration::from_secs(5)));
        let off = AuthGuard::with_limits(0, BLOCK);
        for _ in 0..100 {
            assert_eq!(off.failed(ip("10.0.0.1")), None);
        }
        assert_eq!(off.blocked(ip("10.0.0.1")), None);
    }

    #[test]
    fn memory_is_bounded_under_failures_from_many_addresses() {
        let g = AuthGuard::new();
        let extra = 1_000;
        let mut refused = 0;
        for i in 0..(MAX_TRACKED + extra) as u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if g.failed(addr).is_some() {
                refused += 1;
            }
        }
        assert!(g.tracked() <= MAX_TRACKED, "{} tracked", g.tracked());
        // (Entries whose count is back to zero may be dropped meanwhile: at most `extra`.)
        assert!(refused <= extra, "{refused}");
        if g.tracked() >= MAX_TRACKED {
            assert!(g.failed(ip("192.0.2.1")).is_some(), "past the cap, a failure is refused");
            assert!(g.tracked() <= MAX_TRACKED);
        }
        assert!(lock(&g.blocked).len() <= MAX_TRACKED);
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn last_used_is_written_at_most_once_a_minute_per_token() {
        let g = AuthGuard::new();
        assert!(g.should_touch("a"));
        assert!(!g.should_touch("a"));
        assert!(g.should_touch("b"));
    }
}
