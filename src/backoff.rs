//! Exponential backoff: the one rule for every retry in the daemon. MQTT reconnects
//! ([`crate::mqtt`]), the intake's and the dispatcher's database retries, and delivery
//! retries ([`crate::settings::RetryPolicy`]) all wait `initial · 2ⁿ` capped at a maximum,
//! and differ only in their bounds and their jitter.

use std::time::Duration;

use rand::Rng;

/// The delay before retry `n` (0 = the first retry): `initial · 2ⁿ`, capped at `max`.
/// Never overflows: a large `n` gives `max`.
pub fn exponential(initial: Duration, max: Duration, n: u32) -> Duration {
    initial.saturating_mul(1u32 << n.min(31)).min(max)
}

/// How a delay is randomised so that many clients retrying together spread out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// The delay as computed.
    None,
    /// Uniform in `[d/2, d]` ("equal jitter"): never longer than the cap.
    Half,
    /// Uniform in `[d·(1−s), d·(1+s)]`.
    Spread(f64),
}

impl Jitter {
    /// `d` randomised.
    pub fn apply(self, d: Duration) -> Duration {
        match self {
            Jitter::None => d,
            Jitter::Half => {
                let half = d / 2;
                let extra = rand::rng().random_range(0..=half.as_millis() as u64);
                half + Duration::from_millis(extra)
            }
            Jitter::Spread(s) if s > 0.0 => {
                let s = s.min(1.0);
                d.mul_f64(rand::rng().random_range((1.0 - s)..=(1.0 + s)))
            }
            Jitter::Spread(_) => d,
        }
    }
}

/// A retry loop's state: the delay grows from `min` to `max` with each failure and goes
/// back to `min` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: Jitter,
    failures: u32,
}

impl Backoff {
    /// A backoff between `min` and `max` (`max` is raised to `min` if smaller) with
    /// [`Jitter::Half`].
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self { min, max: max.max(min), jitter: Jitter::Half, failures: 0 }
    }

    /// The same with another jitter.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Counts a failure and returns the delay before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let d = exponential(self.min, self.max, self.failures);
        self.failures = self.failures.saturating_add(1);
        self.jitter.apply(d)
    }

    /// Failures since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to `min` (after a success). Returns true when there had been failures.
    pub fn reset(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_doubles_to_the_cap_and_never_overflows() {
        let d: Vec<_> = (0..5).map(|n| exponential(100 * MS, 1000 * MS, n)).collect();
        assert_eq!(d, [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS]);
        assert_eq!(
            exponential(Duration::from_secs(1), Duration::MAX, 200),
            Duration::from_secs(1 << 31)
        );
        assert_eq!(exponential(100 * MS, 5000 * MS, u32::MAX), 5000 * MS);
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(100 * MS, Duration::from_secs(2));
        let mut last_cap = Duration::ZERO;
        for i in 0..10 {
            let cap = (100 * MS * 2u32.pow(i)).min(Duration::from_secs(2));
            let d = b.next_delay();
            assert!(d >= cap / 2 && d <= cap, "{i}: {d:?} not in [{:?}, {cap:?}]", cap / 2);
            last_cap = cap;
        }
        assert_eq!(last_cap, Duration::from_secs(2));
        assert_eq!(b.failures(), 10);
        assert!(b.reset());
        assert!(!b.reset());
        assert!(b.next_delay() <= 100 * MS);
    }

    #[test]
    fn without_jitter_the_delays_are_exact() {
        let mut b = Backoff::new(50 * MS, 300 * MS).with_jitter(Jitter::None);
        let d: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(d, [50 * MS, 100 * MS, 200 * MS, 300 * MS, 300 * MS]);
    }

    #[test]
    fn spread_jitter_stays_in_its_band() {
        for _ in 0..200 {
            let d = Jitter::Spread(0.2).apply(Duration::from_secs(4));
            assert!((3200 * MS..=4800 * MS).contains(&d), "{d:?}");
        }
        assert_eq!(Jitter::Spread(0.0).apply(Duration::from_secs(4)), Duration::from_secs(4));
    }
}
