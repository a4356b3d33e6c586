//! `[delivery]`: the outbox, its budgets, expiry and retries.

use super::*;

/// `[delivery]`: the outbox and its workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Deliveries attempted at once (1–10000); also the most that can repeat after a crash.
    pub max_in_flight: u32,
    /// Attempts before a delivery with transient failures is marked failed; 0 = keep trying.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; doubles per attempt.
    pub backoff_initial_ms: u64,
    /// Longest delay between two attempts, in milliseconds.
    pub backoff_max_ms: u64,
    /// How long finished (delivered or failed) deliveries stay in the database, in hours.
    pub retention_hours: u64,
    /// On SIGTERM, how long in-flight deliveries may take to finish, in seconds.
    pub shutdown_deadline_seconds: u64,
    /// MQTT push attempts at once; 0 = a share of `max_in_flight` (see [`Self::budgets`]).
    pub push_max_in_flight: u32,
    /// Telegram attempts at once; 0 = a share of `max_in_flight`.
    pub telegram_max_in_flight: u32,
    /// Webhook attempts at once; 0 = a share of `max_in_flight`.
    pub webhook_max_in_flight: u32,
    /// Attempts at once to one target (webhook URL host, Telegram bot token); 0 = half of
    /// its channel's budget (at least 1).
    pub per_target_max_in_flight: u32,
    /// Consecutive unanswered attempts (timeout, connection failure) after which a target
    /// is backed off as a whole (its circuit breaker opens); 0 = never.
    pub breaker_after_timeouts: u32,
    /// While a target is backed off, one probe attempt per this many seconds.
    pub breaker_probe_seconds: u64,
    /// On PostgreSQL, how long a claimed delivery stays leased to the instance that claimed
    /// it, in seconds (5–3600): a row claimed by an instance that died is due again when its
    /// lease ends.
    pub lease_seconds: u64,
    /// `[delivery.expire_after_seconds]`: per channel, how long after its occurrence was
    /// received a delivery may still be sent.
    pub expire_after_seconds: ExpireAfter,
}

/// `[delivery.expire_after_seconds]`: per channel, the age (seconds since the occurrence was
/// received, i.e. since the delivery row was written) after which a delivery not yet done
/// ends `expired` instead of being sent late; 0 = never expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpireAfter {
    /// MQTT pushes to the client apps (a pop-up minutes late is noise); default 300.
    pub push: u64,
    /// Telegram messages; default 900.
    pub telegram: u64,
    /// Webhooks (a peer system may want every event); default 0 = never.
    pub webhook: u64,
}

impl Default for ExpireAfter {
    fn default() -> Self {
        Self { push: 300, telegram: 900, webhook: 0 }
    }
}

/// The in-flight budgets of the three channels, derived by [`DeliverySettings::budgets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBudgets {
    /// MQTT pushes.
    pub push: u32,
    /// Telegram messages.
    pub telegram: u32,
    /// Webhook POSTs.
    pub webhook: u32,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_in_flight: 100,
            max_attempts: 0,
            backoff_initial_ms: 500,
            backoff_max_ms: 300_000,
            retention_hours: 168,
            shutdown_deadline_seconds: 10,
            push_max_in_flight: 0,
            telegram_max_in_flight: 0,
            webhook_max_in_flight: 0,
            per_target_max_in_flight: 0,
            breaker_after_timeouts: 5,
            breaker_probe_seconds: 30,
            lease_seconds: 30,
            expire_after_seconds: ExpireAfter::default(),
        }
    }
}

impl DeliverySettings {
    /// The retry policy part of this section.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
        }
    }

    /// [`Self::retention_hours`] as a duration.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours.saturating_mul(3600))
    }

    /// [`Self::shutdown_deadline_seconds`] as a duration.
    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.shutdown_deadline_seconds)
    }

    /// [`Self::lease_seconds`] as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }

    /// [`Self::breaker_probe_seconds`] as a duration.
    pub fn breaker_probe(&self) -> Duration {
        Duration::from_secs(self.breaker_probe_seconds)
    }

    /// The per-channel budgets: a channel's own key when set (≠ 0); the channels left unset
    /// split what `max_in_flight` leaves, 2 : 1 : 1 for push : Telegram : webhook, each at
    /// least 1. `Err` names the key when the set budgets do not fit in `max_in_flight`.
    /// Their sum never exceeds `max_in_flight` (the crash bound).
    pub fn budgets(&self) -> Result<ChannelBudgets, (&'static str, String)> {
        let keys = [
            ("delivery.push_max_in_flight", self.push_max_in_flight, 2u64),
            ("delivery.telegram_max_in_flight", self.telegram_max_in_flight, 1),
            ("delivery.webhook_max_in_flight", self.webhook_max_in_flight, 1),
        ];
        let total = u64::from(self.max_in_flight);
        let set: u64 = keys.iter().map(|k| u64::from(k.1)).sum();
        let unset: Vec<_> = keys.iter().filter(|k| k.1 == 0).collect();
        if set > total {
            let key = keys.iter().rev().find(|k| k.1 != 0).map_or(keys[0].0, |k| k.0);
            return Err((
                key,
                format!(
                    "the channel budgets ({set}) exceed delivery.max_in_flight ({total}), \
                     the bound on deliveries repeated after a crash"
                ),
            ));
        }
        let left = total - set;
        if left < unset.len() as u64 {
            let key = unset.first().map_or(keys[0].0, |k| k.0);
            return Err((
                key,
                format!(
                    "delivery.max_in_flight ({total}) leaves {left} for the channels without a \
                     budget of their own; each needs at least 1: set this key or raise \
                     delivery.max_in_flight"
                ),
            ));
        }
        let weights: u64 = unset.iter().map(|k| k.2).sum();
        let mut out = [0u64; 3];
        let mut given = 0;
        for (i, k) in keys.iter().enumerate() {
            if k.1 != 0 {
                out[i] = u64::from(k.1);
            } else {
                out[i] = (left * k.2 / weights.max(1)).max(1);
                given += out[i];
            }
        }
        // Rounding leftovers go to the first unset channel (push when unset); rounding up
        // to 1 is taken back from the largest.
        if let Some(first) = keys.iter().position(|k| k.1 == 0) {
            if given < left {
                out[first] += left - given;
            }
            while given > left {
                let Some(big) = (0..3).filter(|i| keys[*i].1 == 0).max_by_key(|i| out[*i]) else {
                    break;
                };
                out[big] -= 1;
                given -= 1;
            }
        }
        let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(ChannelBudgets {
            push: to_u32(out[0]),
            telegram: to_u32(out[1]),
            webhook: to_u32(out[2]),
        })
    }
}

/// How transient delivery failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Attempts before giving up; 0 = never give up.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub backoff_initial: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`, after `attempt` (≥ 1) failed attempts:
    /// `backoff_initial * 2^(attempt-1)`, capped at `backoff_max`. Jitter is the caller's.
    pub fn delay(&self, attempt: u32) -> Duration {
        crate::backoff::exponential(
            self.backoff_initial,
            self.backoff_max,
            attempt.saturating_sub(1),
        )
    }

    /// True when a delivery that failed `attempts` times must be marked failed.
    pub fn exhausted(&self, attempts: u32) -> bool {
        self.max_attempts != 0 && attempts >= self.max_attempts
    }
}
