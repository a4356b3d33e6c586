//! Bulkheads of the dispatcher: in-flight budgets per channel and per target, and a
//! circuit breaker per target.
//!
//! # Budgets
//!
//! Each [`Channel`] (push, Telegram, webhook) has its own budget of attempts in flight, so
//! a channel whose peer hangs holds only its own slots: a camera push never waits behind a
//! hung webhook receiver or Bot API. Within the Telegram and webhook channels each *target*
//! (a bot token; a webhook URL's host and port) may hold at most its share of the channel's
//! budget, so one broken receiver leaves room for the others. The sum of the channel
//! budgets never exceeds the total (`delivery.max_in_flight`), which stays the bound on
//! deliveries repeated after a crash. A slot is taken when an attempt starts and given back
//! when its outcome is committed.
//!
//! # Circuit breaker
//!
//! A target whose attempts end with no answer at all (timeout, connection failure;
//! [`SendError::Retryable`](super::SendError) with `no_answer`) `after` times in a row is
//! backed off as a whole: its breaker *opens*, and instead of sending every delivery the
//! dispatcher defers the target's due deliveries (their `next_attempt_at` moves, no attempt
//! is counted) and lets one *probe* attempt through per `probe` interval. Any answer (a
//! success, or an error the peer sent, such as a 4xx or 5xx) closes the breaker; deliveries
//! deferred for it are then due at once. A delivery that is not attempted (the Telegram
//! limiter's [`NotYet`](super::SendError::NotYet)) changes nothing.
//!
//! Target keys never hold a secret: a bot token is known here only by a short hash.

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::ops::health::{self, Health};
use crate::ops::telemetry;
use crate::store::outbox::{Channel, Claimed, Target};

/// The limits of a [`Bulkheads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Attempts in flight at once, all channels together (at least 1).
    pub total: usize,
    /// Attempts in flight at once per channel, indexed by [`Channel::index`].
    pub channel: [usize; 3],
    /// Attempts in flight at once per target, per channel (push has a single target).
    pub per_target: [usize; 3],
    /// Consecutive unanswered attempts that open a target's breaker; 0 = never.
    pub breaker_after: u32,
    /// While a breaker is open: one probe per this interval.
    pub probe: Duration,
}

impl Limits {
    /// One shared budget: every channel and target may use all of `total`; no breaker.
    pub fn shared(total: usize) -> Limits {
        let total = total.max(1);
        Limits {
            total,
            channel: [total; 3],
            per_target: [total; 3],
            breaker_after: 0,
            probe: Duration::from_secs(30),
        }
    }
}

/// A Telegram bot (by token hash) or a webhook host; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    channel: Channel,
    name: String,
}

impl TargetKey {
    /// The target of a claimed row; `None` for pushes (one broker) and unreadable targets.
    pub fn of(row: &Claimed) -> Option<TargetKey> {
        match &row.target {
            Ok(Target::Telegram { bot_token, .. }) => {
                let hash = Sha256::digest(bot_token.expose().as_bytes());
                Some(TargetKey {
                    channel: Channel::Telegram,
                    name: format!("bot {}", hex::encode(&hash[..4])),
                })
            }
            Ok(Target::Webhook { url, .. }) => {
                let url = reqwest::Url::parse(url).ok()?;
                let host = url.host_str()?.to_owned();
                let port = url.port_or_known_default().unwrap_or(0);
                Some(TargetKey { channel: Channel::Webhook, name: format!("{host}:{port}") })
            }
            _ => None,
        }
    }

    /// For logs and health: `bot 1a2b3c4d` or `host:port`; never a secret.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Whether a row may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Start the attempt.
    Start,
    /// Its channel or target has no free slot: leave the row pending (it stays due).
    Wait,
    /// Its target's breaker is open: move the row's next attempt this far ahead.
    Defer(Duration),
}

/// How an attempt ended, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The peer answered (success or an error it sent).
    Answered,
    /// No answer: timeout or connection failure.
    NoAnswer,
    /// No request was made (rate limiter, unreadable row, internal error).
    NotAttempted,
}

/// A breaker state change, to be logged and shown in health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The target is backed off now.
    Opened(TargetKey),
    /// The target answered again.
    Closed(TargetKey),
}

#[derive(Debug, Default)]
struct Breaker {
    /// Consecutive unanswered attempts.
    failures: u32,
    /// Open until then (the next probe); `None`: closed.
    open_until: Option<Instant>,
    /// A probe attempt is in flight.
    probing: bool,
}

/// In-flight counts and breakers; owned by the dispatcher loop.
#[derive(Debug)]
pub struct Bulkheads {
    limits: Limits,
    in_flight: [usize; 3],
    per_target: HashMap<TargetKey, usize>,
    breakers: HashMap<TargetKey, Breaker>,
}

impl Bulkheads {
    /// No attempts in flight, every breaker closed.
    pub fn new(mut limits: Limits) -> Bulkheads {
        limits.total = limits.total.max(1);
        for c in &mut limits.channel {
            *c = (*c).clamp(1, limits.total);
        }
        for (i, t) in limits.per_target.iter_mut().enumerate() {
            *t = (*t).clamp(1, limits.channel[i]);
        }
        Bulkheads {
            limits,
            in_flight: [0; 3],
            per_target: HashMap::new(),
            breakers: HashMap::new(),
        }
    }

    /// Attempts in flight, all channels.
    pub fn total(&self) -> usize {
        self.in_flight.iter().sum()
    }

    /// Attempts in flight in `channel`.
    pub fn in_flight(&self, channel: Channel) -> usize {
        self.in_flight[channel.index()]
    }

    /// Attempts `channel` may have in flight at most.
    pub fn budget(&self, channel: Channel) -> usize {
        self.limits.channel[channel.index()].min(self.limits.total)
    }

    /// Attempts `channel` may start now.
    pub fn free(&self, channel: Channel) -> usize {
        let own = self.limits.channel[channel.index()].saturating_sub(self.in_flight(channel));
        own.min(self.limits.total.saturating_sub(self.total()))
    }

    /// Whether a row of `channel` to `target` may start at `now`.
    pub fn admit(&self, channel: Channel, target: Option<&TargetKey>, now: Instant) -> Admit {
        if self.free(channel) == 0 {
            return Admit::Wait;
        }
        let Some(target) = target else { return Admit::Start };
        if let Some(b) = self.breakers.get(target)
            && let Some(until) = b.open_until
        {
            if b.probing {
                return Admit::Wait;
            }
            if now < until {
                return Admit::Defer(until - now);
            }
            // The probe is due: it goes alone.
            return if self.per_target.get(target).copied().unwrap_or(0) == 0 {
                Admit::Start
            } else {
                Admit::Wait
            };
        }
        if self.per_target.get(target).copied().unwrap_or(0)
            >= self.limits.per_target[channel.index()]
        {
            return Admit::Wait;
        }
        Admit::Start
    }

    /// An attempt admitted by [`Self::admit`] starts.
    pub fn start(&mut self, channel: Channel, target: Option<&TargetKey>) {
        self.in_flight[channel.index()] += 1;
        if let Some(target) = target {
            *self.per_target.entry(target.clone()).or_default() += 1;
            if let Some(b) = self.breakers.get_mut(target)
                && b.open_until.is_some()
            {
                b.probing = true;
            }
        }
    }

    /// An attempt finished: updates the target's breaker (its slot stays taken until
    /// [`Self::release`]).
    pub fn finished(
        &mut self,
        target: Option<&TargetKey>,
        verdict: Verdict,
        now: Instant,
    ) -> Option<Change> {
        let target = target?;
        let after = self.limits.breaker_after;
        match verdict {
            Verdict::NotAttempted => {
                if let Some(b) = self.breakers.get_mut(target) {
                    b.probing = false;
                }
                None
            }
            Verdict::Answered => {
                let b = self.breakers.remove(target)?;
                b.open_until.map(|_| Change::Closed(target.clone()))
            }
            Verdict::NoAnswer if after == 0 => None,
            Verdict::NoAnswer => {
                let b = self.breakers.entry(target.clone()).or_default();
                b.failures = b.failures.saturating_add(1);
                b.probing = false;
                if b.failures < after {
                    return None;
                }
                let was_open = b.open_until.is_some();
                b.open_until = Some(now + self.limits.probe);
                (!was_open).then(|| Change::Opened(target.clone()))
            }
        }
    }

    /// Gives back the slot of an attempt whose outcome is committed.
    pub fn release(&mut self, channel: Channel, target: Option<&TargetKey>) {
        let n = &mut self.in_flight[channel.index()];
        *n = n.saturating_sub(1);
        if let Some(target) = target
            && let Some(n) = self.per_target.get_mut(target)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_target.remove(target);
            }
        }
    }

    /// Targets with an open breaker, per channel.
    pub fn open(&self) -> [Vec<&TargetKey>; 3] {
        let mut out: [Vec<&TargetKey>; 3] = Default::default();
        for (k, b) in &self.breakers {
            if b.open_until.is_some() {
                out[k.channel.index()].push(k);
            }
        }
        for v in &mut out {
            v.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out
    }
}

/// Logs a breaker change and shows the open breakers of `bulk` in health and metrics.
pub(super) fn report(change: &Change, bulk: &Bulkheads, limits: &Limits, health: Option<&Health>) {
    match change {
        Change::Opened(t) => tracing::warn!(
            target_name = t.name(),
            after = limits.breaker_after,
            probe_every = ?limits.probe,
            "delivery target keeps not answering; backed off (circuit breaker open)"
        ),
        Change::Closed(t) => {
            tracing::info!(target_name = t.name(), "delivery target answers again; breaker closed")
        }
    }
    let open = bulk.open();
    let mut parts = Vec::new();
    for channel in Channel::ALL {
        let targets = &open[channel.index()];
        metrics::gauge!(telemetry::BREAKERS_OPEN, telemetry::LABEL_CHANNEL => channel.name())
            .set(targets.len() as f64);
        if !targets.is_empty() {
            let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
            parts.push(format!("{}: {}", channel.name(), names.join(", ")));
        }
    }
    if let Change::Opened(t) = change {
        metrics::counter!(telemetry::BREAKER_OPENED, telemetry::LABEL_CHANNEL => t.channel.name())
            .increment(1);
    }
    if let Some(h) = health {
        if parts.is_empty() {
            h.set_up(health::DISPATCHERS);
        } else {
            h.set_degraded(
                health::DISPATCHERS,
                format!("targets backed off (circuit breaker open): {}", parts.join("; ")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> TargetKey {
        TargetKey { channel: Channel::Webhook, name: name.into() }
    }

    fn limits() -> Limits {
        Limits {
            total: 10,
            channel: [5, 2, 3],
            per_target: [5, 1, 2],
            breaker_after: 2,
            probe: Duration::from_secs(30),
        }
    }

    #[test]
    fn channels_and_targets_have_their_own_budgets() {
        let mut b = Bulkheads::new(limits());
        let now = Instant::now();
        let (a, other) = (key("a:80"), key("b:80"));
        for _ in 0..2 {
            assert_eq!(b.admit(Channel::Webhook, Some(&a), now), Admit::Start);
            b.start(Channel::Webhook, Some(&a));
        }
        assert_eq!(b.admit(Channel::Webhook, Some(&a), now), Admit::Wait, "a's share is full");
        assert_eq!(b.admit(Channel::Webhook, Some(&other), now), Admit::Start);
        b.start(Channel::Webhook, Some(&other));
        assert_eq!(b.admit(Channel::Webhook, Some(&other), now), Admit::Wait, "channel full");
        assert_eq!(b.admit(Channel::Push, None, now), Admit::Start, "push is not affected");
        assert_eq!(b.free(Channel::Push), 5);
        b.release(Channel::Webhook, Some(&a));
        assert_eq!(b.admit(Channel::Webhook, Some(&a), now), Admit::Start);
        assert_eq!(b.total(), 2);
    }

    #[test]
    fn the_total_bounds_the_sum() {
        let mut b = Bulkheads::new(Limits { total: 3, ..limits() });
        for _ in 0..3 {
            b.start(Channel::Push, None);
        }
        assert_eq!(b.admit(Channel::Webhook, Some(&key("a:80")), Instant::now()), Admit::Wait);
    }

    #[test]
    fn a_breaker_opens_after_n_unanswered_probes_once_and_closes_on_an_answer() {
        let mut b = Bulkheads::new(limits());
        let t0 = Instant::now();
        let a = key("a:80");
        b.start(Channel::Webhook, Some(&a));
        assert_eq!(b.finished(Some(&a), Verdict::NoAnswer, t0), None);
        b.release(Channel::Webhook, Some(&a));
        b.start(Channel::Webhook, Some(&a));
        assert_eq!(b.finished(Some(&a), Verdict::NoAnswer, t0), Some(Change::Opened(a.clone())));
        b.release(Channel::Webhook, Some(&a));
        assert_eq!(b.open()[Channel::Webhook.index()], [&a]);
        assert_eq!(
            b.admit(Channel::Webhook, Some(&a), t0 + Duration::from_secs(10)),
            Admit::Defer(Duration::from_secs(20))
        );
        // Probe time: one attempt goes, the rest wait for it.
        let probe_at = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(Channel::Webhook, Some(&a), probe_at), Admit::Start);
        b.start(Channel::Webhook, Some(&a));
        assert_eq!(b.admit(Channel::Webhook, Some(&a), probe_at), Admit::Wait);
        // The probe hangs too: open for another interval, not a new opening.
        assert_eq!(b.finished(Some(&a), Verdict::NoAnswer, probe_at), None);
        b.release(Channel::Webhook, Some(&a));
        assert!(matches!(b.admit(Channel::Webhook, Some(&a), probe_at), Admit::Defer(_)));
        let next = probe_at + Duration::from_secs(30);
        b.start(Channel::Webhook, Some(&a));
        assert_eq!(b.finished(Some(&a), Verdict::Answered, next), Some(Change::Closed(a.clone())));
        b.release(Channel::Webhook, Some(&a));
        assert!(b.open()[Channel::Webhook.index()].is_empty());
        assert_eq!(b.admit(Channel::Webhook, Some(&a), next), Admit::Start);
    }

    #[test]
    fn an_answer_resets_the_count_and_zero_disables() {
        let mut b = Bulkheads::new(limits());
        let now = Instant::now();
        let a = key("a:80");
        assert_eq!(b.finished(Some(&a), Verdict::NoAnswer, now), None);
        assert_eq!(b.finished(Some(&a), Verdict::Answered, now), None);
        assert_eq!(b.finished(Some(&a), Verdict::NoAnswer, now), None, "count restarted");
        let mut b = Bulkheads::new(Limits { breaker_after: 0, ..limits() });
        for _ in 0..10 {
            assert_eq!(b.finished(Some(&a), Verdict::NoAnswer, now), None);
        }
        assert_eq!(b.admit(Channel::Webhook, Some(&a), now), Admit::Start);
    }
}
