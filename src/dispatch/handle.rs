//! What the daemon gives a dispatcher ([`super::worker::Dispatcher`]): its senders and
//! configuration; and what it gets back: a handle to wake it, wait for it and read its
//! counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::bulkhead::Limits;
use super::mqtt_push::MqttPusher;
use super::webhook::WebhookSender;
use crate::dispatch::hub::PushHub;
use crate::ops::health::Health;
use crate::ops::systemd::Progress;

/// The channels the dispatcher delivers through. Telegram is built by the dispatcher from
/// `LiveSettings::telegram` (and rebuilt when SIGHUP changes it).
#[derive(Debug, Clone)]
pub struct Senders {
    /// MQTT pushes; `None` makes push deliveries fail retryably ("no MQTT connection").
    pub push: Option<Arc<MqttPusher>>,
    /// Delivered pushes are also handed to the API's server-sent-event streams.
    pub hub: PushHub,
    /// Webhook POSTs.
    pub webhook: Arc<WebhookSender>,
}

/// How the dispatcher runs (fixed at start).
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Deliveries attempted at once: in total (`delivery.max_in_flight`), per channel, per
    /// target; and the circuit breaker (see [`super::bulkhead`]).
    pub limits: Limits,
    /// On shutdown, how long attempts in flight may take to finish.
    pub shutdown_deadline: Duration,
    /// The longest the dispatcher sleeps without looking at the outbox (a safety net for
    /// rows written by someone who did not call [`DispatcherHandle::notify`]), e.g. 1 s.
    pub poll_interval: Duration,
    /// Beaten every loop iteration, also when idle.
    pub progress: Option<Progress>,
    /// Where open circuit breakers are shown (component [`health::DISPATCHERS`],
    /// degraded while any is open).
    pub health: Option<Health>,
    /// How long a claimed row stays leased on PostgreSQL (`delivery.lease_seconds`).
    pub lease: Duration,
}

impl DispatcherConfig {
    /// One budget of `max_in_flight` shared by every channel and target
    /// ([`Limits::shared`], no circuit breaker), `shutdown_deadline` as given, a 1 s poll
    /// interval, no heartbeat, no health.
    pub fn new(max_in_flight: usize, shutdown_deadline: Duration) -> Self {
        Self {
            limits: Limits::shared(max_in_flight),
            shutdown_deadline,
            poll_interval: Duration::from_secs(1),
            progress: None,
            health: None,
            lease: crate::store::outbox::backend::DEFAULT_LEASE,
        }
    }

    /// The bulkheads of `[delivery]`: `max_in_flight` in total, the channel budgets of
    /// [`DeliverySettings::budgets`](crate::settings::DeliverySettings::budgets) (settings
    /// that do not validate fall back to one shared budget), `per_target_max_in_flight`
    /// (0: half the channel's budget), the breaker keys, `shutdown_deadline_seconds`; a
    /// 1 s poll interval, no heartbeat, no health, the lease of `lease_seconds`.
    pub fn from_settings(delivery: &crate::settings::DeliverySettings) -> Self {
        let total = usize::try_from(delivery.max_in_flight).unwrap_or(usize::MAX).max(1);
        let mut config = Self::new(total, delivery.shutdown_deadline());
        config.lease = delivery.lease();
        if let Ok(b) = delivery.budgets() {
            let channel = [b.push, b.telegram, b.webhook].map(|v| v as usize);
            let per_target = channel.map(|c| match delivery.per_target_max_in_flight {
                0 => c.div_ceil(2),
                n => n as usize,
            });
            config.limits = Limits {
                total,
                channel,
                // Pushes have one target (the broker): the whole channel.
                per_target: [channel[0], per_target[1], per_target[2]],
                breaker_after: delivery.breaker_after_timeouts,
                probe: delivery.breaker_probe(),
            };
        }
        config
    }
}

/// A snapshot of the dispatcher's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Deliveries claimed and not yet recorded.
    pub in_flight: usize,
    /// Pending rows when last counted (every few seconds).
    pub pending: u64,
    /// Deliveries recorded `sent` since start.
    pub sent: u64,
    /// Deliveries recorded `failed` since start.
    pub failed: u64,
    /// Failed attempts recorded for a retry since start.
    pub retried: u64,
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) in_flight: AtomicUsize,
    pub(super) pending: AtomicU64,
    pub(super) sent: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) retried: AtomicU64,
}

/// The running dispatcher; cheap to clone.
#[derive(Debug, Clone)]
pub struct DispatcherHandle {
    pub(super) notify: Arc<Notify>,
    pub(super) handed: Arc<Notify>,
    pub(super) stats: Arc<Stats>,
    pub(super) done: watch::Receiver<bool>,
}

impl DispatcherHandle {
    /// Rows may have been written that were not handed over (another connection or
    /// program committed): look at the outbox now, with a query unless rows wait in the
    /// hand-over.
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    /// This daemon's writer committed and handed its rows over (what only a query finds
    /// it flagged in the hand-over): start them, no query needed. At 1,000 occurrences per
    /// second a query after every wake-up whose rows an earlier turn had already taken
    /// was a tenth of the daemon's CPU.
    pub fn handed_over(&self) {
        self.handed.notify_one();
    }

    /// Returns after shutdown: attempts in flight finished or the deadline passed; the
    /// rest stays pending in the database.
    pub async fn join(mut self) {
        let _ = self.done.wait_for(|d| *d).await;
    }

    /// The counters now.
    pub fn stats(&self) -> DispatchStats {
        DispatchStats {
            in_flight: self.stats.in_flight.load(Ordering::Relaxed),
            pending: self.stats.pending.load(Ordering::Relaxed),
            sent: self.stats.sent.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            retried: self.stats.retried.load(Ordering::Relaxed),
        }
    }
}
