//! The dispatcher: drains the outbox ([`crate::store::outbox`]) through the senders.
//!
//! # One loop, many attempts
//!
//! One task owns the outbox connection and the scheduling state. It repeatedly
//!
//! 1. records the outcomes of finished attempts in one transaction (sent, failed, retry),
//!    and only then frees their in-flight slots,
//! 2. claims due rows per channel (a lane's head only, see [`crate::store::outbox::due_in`]) within
//!    the bulkheads of [`super::bulkhead`] (budgets per channel and per target, circuit
//!    breakers), skipping rows already in flight and lanes that have an attempt in flight,
//!    deferring rows of a backed-off target, and spawns one task per attempt,
//! 3. sleeps until an attempt finishes, [`DispatcherHandle::notify`] is called, the next
//!    retry is due, or `poll_interval` passes.
//!
//! Step 2 reads the outbox only while it may hold due rows the dispatcher was not handed
//! in memory (see *Hand-over in memory* in [`crate::store::outbox`]): at start, after a retry was
//! recorded, a database error, a wake-up without handed-over rows, a full hand-over, a row
//! with a lane, and at least every `poll_interval`. Otherwise it starts the rows the
//! intake handed over, before recording outcomes, so a fresh push waits for no query and
//! no transaction.
//!
//! Queries are per channel with the channel's own limit, so one channel's backlog never
//! hides another's due rows; a query of some channels leaves the other channels' handed-over
//! rows in the hand-over.
//!
//! A delivery counts as in flight from its claim until its new state is committed, so after
//! a crash at most `max_in_flight` deliveries (the sum of the channel budgets) can repeat
//! (CONTRACT §5). The database calls
//! are blocking and run on tokio's blocking pool, one at a time.
//!
//! # Outcomes
//!
//! | attempt | row |
//! | --- | --- |
//! | `Ok` | `sent` |
//! | [`SendError::Permanent`], an unreadable row | `failed` with the reason |
//! | [`SendError::Retryable`] | attempts + 1, retried after the policy's exponential delay ±20 % jitter, at least the peer's `after`; `failed` "gave up after N attempts: …" once `max_attempts` (≠ 0) is reached |
//! | [`SendError::NotYet`] (the Telegram rate limiter, no request made) | not an attempt: only `next_attempt_at` moves |
//!
//! Rows of one lane (one Telegram chat) go one at a time in enqueue order: while the head
//! waits for its retry, the rest of the lane waits too; other lanes do not.
//!
//! # Housekeeping
//!
//! Every few seconds the gauges `OUTBOX_DEPTH` and `OUTBOX_OLDEST_PENDING` are refreshed;
//! every few minutes `sent` **and** `failed` rows last updated longer ago than
//! `LiveSettings::retention` are deleted in batches of [`PRUNE_BATCH`] (both are
//! "finished", as `delivery.retention_hours` documents; a failed row stays visible for the
//! whole retention period).
//!
//! # Busy database
//!
//! When SQLite stays busy (another writer) or fails, nothing is lost: outcomes stay in
//! memory and their slots stay taken, the error is logged once per streak, and the loop
//! tries again after a growing pause.
//!
//! # Shutdown
//!
//! When `shutdown` completes no new rows are claimed; attempts in flight get until
//! `shutdown_deadline` to finish and their outcomes are recorded; attempts still running
//! then are abandoned and their rows stay pending, like every row not yet attempted.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::SendError;
use super::attempt::{attempt, millis, outcome, shown_id};
use super::bulkhead::{Admit, Bulkheads, Change, Limits, TargetKey, Verdict};
use super::mqtt_push::MqttPusher;
use super::telegram::{RateLimits, TelegramSender};
use super::webhook::WebhookSender;
use crate::dispatch::hub::PushHub;
use crate::ops::health::{self, Health};
use crate::ops::systemd::Progress;
use crate::ops::telemetry;
use crate::settings::{LiveSettings, TelegramSettings};
use crate::store::outbox::{self, Carried, Channel, Claimed, Recorded, RowRef, Target};
use crate::store::{Conn, Store, StoreError, now_ms};

/// Finished rows deleted per retention transaction.
pub const PRUNE_BATCH: usize = 1000;
/// How often the retention sweep runs.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// How often the outbox gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(2);
/// An attempt that takes longer than this is abandoned as retryable (the senders have
/// their own, shorter, timeouts; this is the safety net).
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(120);
/// Due rows read per channel beyond its attempts in flight and free slots, so rows of a
/// target that has no free share do not hide other targets' rows of the same channel.
const SCAN_EXTRA: usize = 256;

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
        }
    }

    /// The bulkheads of `[delivery]`: `max_in_flight` in total, the channel budgets of
    /// [`DeliverySettings::budgets`](crate::settings::DeliverySettings::budgets) (settings
    /// that do not validate fall back to one shared budget), `per_target_max_in_flight`
    /// (0: half the channel's budget), the breaker keys, `shutdown_deadline_seconds`; a
    /// 1 s poll interval, no heartbeat, no health.
    pub fn from_settings(delivery: &crate::settings::DeliverySettings) -> Self {
        let total = usize::try_from(delivery.max_in_flight).unwrap_or(usize::MAX).max(1);
        let mut config = Self::new(total, delivery.shutdown_deadline());
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
struct Stats {
    in_flight: AtomicUsize,
    pending: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

/// The running dispatcher; cheap to clone.
#[derive(Debug, Clone)]
pub struct DispatcherHandle {
    notify: Arc<Notify>,
    stats: Arc<Stats>,
    done: watch::Receiver<bool>,
}

impl DispatcherHandle {
    /// New rows were enqueued: look at the outbox now.
    pub fn notify(&self) {
        self.notify.notify_one();
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

/// Drains the outbox; see the module documentation.
#[derive(Debug)]
pub struct Dispatcher;

impl Dispatcher {
    /// Starts the dispatcher task (inside a tokio runtime). It runs until `shutdown`
    /// completes, then drains as documented.
    pub fn spawn(
        store: Store,
        senders: Senders,
        config: DispatcherConfig,
        live: Arc<ArcSwap<LiveSettings>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> DispatcherHandle {
        let notify = Arc::new(Notify::new());
        let stats = Arc::new(Stats::default());
        let (done_tx, done) = watch::channel(false);
        let store_handoff = store.handoff().clone();
        let bulk = Bulkheads::new(config.limits.clone());
        let state = Loop {
            store,
            conn: None,
            epoch: 0,
            carried: None,
            carry_failures: 0,
            next_file_check: Instant::now(),
            senders: Arc::new(senders),
            config,
            live,
            notify: notify.clone(),
            stats: stats.clone(),
            in_flight: HashSet::new(),
            in_flight_ids: HashSet::new(),
            busy_lanes: HashSet::new(),
            bulk,
            tasks: JoinSet::new(),
            task_rows: HashMap::new(),
            finished: Vec::new(),
            telegram: None,
            db_trouble: None,
            next_gauges: Instant::now(),
            next_prune: Instant::now(),
            handoff: store_handoff,
            backlog: [true; 3],
            last_query: Instant::now(),
        };
        tokio::spawn(async move {
            state.run(shutdown).await;
            let _ = done_tx.send(true);
        });
        DispatcherHandle { notify, stats, done }
    }
}

/// The row of an attempt in flight.
struct Slot {
    rowid: i64,
    /// The file generation the rowid belongs to ([`Conn::epoch`]).
    epoch: u64,
    id: String,
    lane: String,
    reaction: String,
    channel: Channel,
    target: Option<TargetKey>,
}

impl Slot {
    fn of(row: &Claimed) -> Slot {
        Slot {
            rowid: row.rowid,
            epoch: row.epoch,
            id: row.id.clone(),
            lane: row.lane.clone(),
            reaction: row.reaction.clone(),
            channel: Channel::of(&row.target),
            target: TargetKey::of(row),
        }
    }
}

/// One finished attempt (or a deferral without attempt), waiting to be recorded.
struct Finished {
    slot: Slot,
    recorded: Recorded,
    /// What the breaker learns from it.
    verdict: Verdict,
    /// It held a slot of the bulkheads (false: deferred by an open breaker).
    attempted: bool,
}

type Db = Arc<Mutex<Conn>>;

/// How often the dispatcher looks whether the database file was replaced.
const FILE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// How often the pending rows of a replaced file are tried to be read before giving up.
const CARRY_TRIES: u32 = 5;

struct Loop {
    store: Store,
    conn: Option<Db>,
    /// The file generation `conn` is on.
    epoch: u64,
    /// Pending rows of a replaced file, to be written into the new one.
    carried: Option<Carried>,
    /// Failed reads of a replaced file's pending rows so far.
    carry_failures: u32,
    /// When to look again whether the database file was replaced.
    next_file_check: Instant,
    senders: Arc<Senders>,
    config: DispatcherConfig,
    live: Arc<ArcSwap<LiveSettings>>,
    notify: Arc<Notify>,
    stats: Arc<Stats>,
    /// Rows (epoch, rowid) claimed and not yet recorded.
    in_flight: HashSet<(u64, i64)>,
    /// Their delivery ids: after a file replacement a row carried to the new file is the
    /// same delivery as one in flight from the old file.
    in_flight_ids: HashSet<String>,
    /// Non-empty lanes with a delivery in flight.
    busy_lanes: HashSet<String>,
    /// In-flight budgets and circuit breakers.
    bulk: Bulkheads,
    tasks: JoinSet<Finished>,
    /// Which row each running attempt belongs to (to free a panicked attempt's slot).
    task_rows: HashMap<tokio::task::Id, Slot>,
    /// Outcomes not yet committed.
    finished: Vec<Finished>,
    telegram: Option<(TelegramSettings, Result<Arc<TelegramSender>, SendError>)>,
    /// Since when the database has been failing (logged once per streak) and the pause.
    db_trouble: Option<Duration>,
    next_gauges: Instant,
    next_prune: Instant,
    /// Rows committed through this store handle, handed over in memory.
    handoff: Arc<outbox::Handoff>,
    /// Per channel: due rows may be in the database that were not handed over (start-up,
    /// retries, a full hand-over, another writer, the poll interval passed, rows that
    /// found no free slot): query the outbox.
    backlog: [bool; 3],
    /// When the outbox was last queried and found caught up.
    last_query: Instant,
}

/// [`with_db`] for a call that borrows `value`, which is given back with the result.
async fn with_db_owned<V: Send + 'static, T: Send + 'static>(
    db: &Db,
    value: V,
    f: impl FnOnce(&mut Conn, &V) -> Result<T, StoreError> + Send + 'static,
) -> Result<(V, Result<T, StoreError>), StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut conn, &value);
        (value, r)
    })
    .await
    .map_err(|e| StoreError::TaskFailed(format!("dispatcher task: {e}")))
}

/// Runs a blocking database call on the dispatcher's connection.
async fn with_db<T: Send + 'static>(
    db: &Db,
    f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || {
        let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => Err(StoreError::TaskFailed(format!("dispatcher task: {e}"))),
    }
}

impl Loop {
    async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let poll = self.config.poll_interval.max(Duration::from_millis(10));
        tokio::pin!(shutdown);
        let mut wake = Instant::now();
        loop {
            self.beat();
            // Wait for something to do.
            let sleep_until = wake.min(Instant::now() + poll);
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.take(joined);
                }
                () = self.notify.notified() => {
                    // Rows written through another store handle are only in the database.
                    if self.handoff.is_empty() {
                        self.set_backlog();
                    }
                }
                () = tokio::time::sleep_until(sleep_until) => self.set_backlog(),
            }
            while let Some(joined) = self.tasks.try_join_next_with_id() {
                self.take(joined);
            }
            // Handed-over rows go out before the outcomes are recorded: fewer steps
            // between the intake's commit and the send.
            self.start_handed_over();
            if self.db().await.is_none() {
                wake = Instant::now() + self.trouble_pause();
                continue;
            }
            if !self.commit().await {
                wake = Instant::now() + self.trouble_pause();
                continue;
            }
            self.housekeeping().await;
            if self.backlog.iter().any(|b| *b) || self.handoff.db_only() {
                let db_only = self.handoff.db_only_channels();
                for (b, d) in self.backlog.iter_mut().zip(db_only) {
                    *b |= d;
                }
                wake = self.claim().await.unwrap_or_else(|| Instant::now() + self.trouble_pause());
            } else {
                self.start_handed_over();
                // The safety-net query still runs every `poll`, also under steady traffic.
                wake = self.last_query + poll;
            }
        }
        self.drain().await;
        if let Some(p) = &self.config.progress {
            p.retire();
        }
    }

    /// Starts handed-over rows in the free slots of their channels. A row of a channel
    /// that only a query can be trusted for now, or that finds no free slot, is dropped
    /// from the hand-over: it is in the database, and its channel is marked for a query.
    fn start_handed_over(&mut self) {
        if self.backlog.iter().all(|b| *b) || self.handoff.is_empty() {
            return;
        }
        let now = Instant::now();
        for row in self.handoff.take(usize::MAX) {
            let channel = Channel::of(&row.target);
            if self.backlog[channel.index()] || self.is_in_flight(&row) {
                continue;
            }
            match self.bulk.admit(channel, TargetKey::of(&row).as_ref(), now) {
                Admit::Start => self.start(row),
                Admit::Wait | Admit::Defer(_) => self.backlog[channel.index()] = true,
            }
        }
        self.publish_in_flight();
    }

    /// Every channel needs a query.
    fn set_backlog(&mut self) {
        self.backlog = [true; 3];
    }

    fn publish_in_flight(&self) {
        self.stats.in_flight.store(self.bulk.total(), Ordering::Relaxed);
        for channel in Channel::ALL {
            metrics::gauge!(telemetry::DELIVERIES_IN_FLIGHT,
                telemetry::LABEL_CHANNEL => channel.name())
            .set(self.bulk.in_flight(channel) as f64);
        }
    }

    /// Logs a breaker change and shows the open breakers in health and metrics.
    fn breaker_changed(&mut self, change: Change) {
        match &change {
            Change::Opened(t) => tracing::warn!(
                target_name = t.name(),
                after = self.config.limits.breaker_after,
                probe_every = ?self.config.limits.probe,
                "delivery target keeps not answering; backed off (circuit breaker open)"
            ),
            Change::Closed(t) => {
                tracing::info!(
                    target_name = t.name(),
                    "delivery target answers again; breaker closed"
                )
            }
        }
        let open = self.bulk.open();
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
        if let Change::Opened(t) = &change {
            let channel = if t.name().starts_with("bot ") { "telegram" } else { "webhook" };
            metrics::counter!(telemetry::BREAKER_OPENED, telemetry::LABEL_CHANNEL => channel)
                .increment(1);
        }
        if let Some(h) = &self.config.health {
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

    fn beat(&self) {
        if let Some(p) = &self.config.progress {
            p.beat();
        }
    }

    fn take(&mut self, joined: Result<(tokio::task::Id, Finished), tokio::task::JoinError>) {
        match joined {
            Ok((id, f)) => {
                self.task_rows.remove(&id);
                if let Some(change) =
                    self.bulk.finished(f.slot.target.as_ref(), f.verdict, Instant::now())
                {
                    self.breaker_changed(change);
                }
                self.finished.push(f);
            }
            Err(e) => {
                let Some(slot) = self.task_rows.remove(&e.id()) else {
                    return;
                };
                if e.is_cancelled() {
                    // Abandoned at the shutdown deadline: the row stays pending.
                    return;
                }
                // A bug, not the peer's fault: retried like a transient failure.
                tracing::error!(error = %e, "a delivery attempt panicked");
                let recorded = Recorded::Retry {
                    reason: "internal error: the attempt panicked".into(),
                    next_attempt_at: now_ms() + 60_000,
                };
                let _ =
                    self.bulk.finished(slot.target.as_ref(), Verdict::NotAttempted, Instant::now());
                self.finished.push(Finished {
                    slot,
                    recorded,
                    verdict: Verdict::NotAttempted,
                    attempted: true,
                });
            }
        }
    }

    /// The pause after a database failure: 100 ms doubling up to 5 s.
    fn trouble_pause(&mut self) -> Duration {
        let next = self
            .db_trouble
            .map_or(Duration::from_millis(100), |d| (d * 2).min(Duration::from_secs(5)));
        self.db_trouble = Some(next);
        next
    }

    fn db_ok(&mut self) {
        if self.db_trouble.take().is_some() {
            tracing::info!("outbox database usable again");
        }
    }

    fn db_failed(&mut self, what: &str, e: &StoreError) {
        self.set_backlog();
        if self.db_trouble.is_none() {
            tracing::warn!(error = %e, what, "outbox database call failed; retrying with backoff");
        }
        if !matches!(e, StoreError::Busy) {
            // Maybe the connection itself is broken: open a new one next time.
            self.conn = None;
        }
    }

    /// The outbox connection: (re)opened when needed. When the database file was replaced,
    /// the pending rows of the old file are read and the connection closed (see
    /// [`Conn`]); once the new file can be opened they are written into it before anything
    /// else, so nothing the intake accepted is lost with the old file.
    async fn db(&mut self) -> Option<Db> {
        if let Some(db) = self.conn.clone() {
            // One `stat` per FILE_CHECK_EVERY, not one per loop turn.
            let now = Instant::now();
            if now < self.next_file_check {
                return Some(db);
            }
            self.next_file_check = now + FILE_CHECK_EVERY;
            let stale = db.lock().unwrap_or_else(|p| p.into_inner()).is_stale();
            if !stale {
                return Some(db);
            }
            if !self.leave_replaced_file(db).await {
                return None;
            }
        }
        let store = self.store.clone();
        let opened = tokio::task::spawn_blocking(move || store.connect())
            .await
            .unwrap_or_else(|e| Err(StoreError::TaskFailed(format!("connect task: {e}"))));
        let db = match opened {
            Ok(conn) => {
                self.epoch = conn.epoch();
                let db = Arc::new(Mutex::new(conn));
                self.conn = Some(db.clone());
                db
            }
            Err(e) => {
                self.db_failed("open", &e);
                return None;
            }
        };
        if let Some(carried) = self.carried.take() {
            let (carried, result) =
                match with_db_owned(&db, carried, |c, rows| outbox::carry_over(c, rows)).await {
                    Ok(pair) => pair,
                    Err(e) => {
                        self.db_failed("carry pending deliveries over", &e);
                        return None;
                    }
                };
            match result {
                Ok(added) => tracing::info!(
                    pending = carried.len(),
                    added,
                    "pending deliveries of the replaced database file carried over to the new one"
                ),
                Err(e) => {
                    self.carried = Some(carried);
                    self.db_failed("carry pending deliveries over", &e);
                    return None;
                }
            }
            self.set_backlog();
        }
        Some(db)
    }

    /// Reads the pending rows of a replaced file (dropping what was handed over: those
    /// rows are among them) and closes the connection. False when the read failed and
    /// should be tried again.
    async fn leave_replaced_file(&mut self, db: Db) -> bool {
        let handoff = self.handoff.clone();
        match with_db(&db, move |c| handoff.query(|| outbox::pending_rows(c))).await {
            Ok(rows) => {
                self.carry_failures = 0;
                match &mut self.carried {
                    Some(earlier) => earlier.extend(rows),
                    None => self.carried = Some(rows),
                }
            }
            Err(e) if self.carry_failures + 1 < CARRY_TRIES => {
                self.carry_failures += 1;
                self.db_failed("read the pending deliveries of the replaced file", &e);
                self.conn = Some(db);
                return false;
            }
            Err(e) => {
                self.carry_failures = 0;
                tracing::error!(
                    error = %e,
                    "cannot read the pending deliveries of the replaced database file; \
                     they stay in the old file"
                );
            }
        }
        self.conn = None;
        self.set_backlog();
        true
    }

    /// Records finished attempts; frees their slots only after the commit. False when the
    /// database failed (the outcomes stay for the next try).
    async fn commit(&mut self) -> bool {
        if self.finished.is_empty() {
            return true;
        }
        let Some(db) = self.db().await else { return false };
        let epoch = self.epoch;
        let outcomes: Vec<(RowRef, Recorded)> = self
            .finished
            .iter()
            .map(|f| {
                let row = if f.slot.epoch == epoch {
                    RowRef::Rowid(f.slot.rowid)
                } else {
                    RowRef::Id(f.slot.id.clone())
                };
                (row, f.recorded.clone())
            })
            .collect();
        match with_db(&db, move |c| outbox::record(c, &outcomes, now_ms())).await {
            Ok(()) => {
                self.db_ok();
                for f in std::mem::take(&mut self.finished) {
                    self.in_flight.remove(&(f.slot.epoch, f.slot.rowid));
                    self.in_flight_ids.remove(&f.slot.id);
                    if !f.slot.lane.is_empty() {
                        self.busy_lanes.remove(&f.slot.lane);
                    }
                    if f.attempted {
                        self.bulk.release(f.slot.channel, f.slot.target.as_ref());
                    }
                    if matches!(f.recorded, Recorded::Retry { .. } | Recorded::Deferred { .. }) {
                        // Its next attempt is only in the database.
                        self.backlog[f.slot.channel.index()] = true;
                    }
                    let (outcome, counter) = match f.recorded {
                        Recorded::Sent => (telemetry::OUTCOME_DELIVERED, &self.stats.sent),
                        Recorded::Failed { .. } => (telemetry::OUTCOME_FAILED, &self.stats.failed),
                        Recorded::Retry { .. } => (telemetry::OUTCOME_RETRY, &self.stats.retried),
                        Recorded::Deferred { .. } => continue,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(telemetry::DELIVERIES,
                        telemetry::LABEL_REACTION => f.slot.reaction,
                        telemetry::LABEL_OUTCOME => outcome)
                    .increment(1);
                }
                self.publish_in_flight();
                true
            }
            Err(e) => {
                self.db_failed("record outcomes", &e);
                false
            }
        }
    }

    /// Claims due rows of every channel with a free slot and spawns their attempts (see
    /// [`super::bulkhead`]). Returns when to look again (`None`: the database failed).
    async fn claim(&mut self) -> Option<Instant> {
        let far = Instant::now() + Duration::from_secs(3600);
        let asks: Vec<(Channel, usize)> = Channel::ALL
            .into_iter()
            .filter(|c| self.backlog[c.index()] && self.bulk.free(*c) > 0)
            .map(|c| (c, self.bulk.free(c) + self.bulk.in_flight(c) + SCAN_EXTRA))
            .collect();
        if asks.is_empty() {
            return Some(far); // an attempt finishing wakes the loop
        }
        let db = self.db().await?;
        let now = now_ms();
        let handoff = self.handoff.clone();
        let asked = asks.clone();
        let expire_after = self.live.load().expire_after;
        // A lane's head in flight is not rewritten under its attempt.
        let busy = self.busy_lanes.clone();
        let found = with_db(&db, move |c| {
            outbox::claim_rows(c, &handoff, &asked, now, &expire_after, &busy)
        })
        .await;
        let found = match found {
            Ok((expired, coalesced, found)) => {
                telemetry::count_expired(&expired);
                metrics::counter!(telemetry::DELIVERIES_COALESCED).increment(coalesced as u64);
                found
            }
            Err(e) => {
                self.db_failed("claim", &e);
                return None;
            }
        };
        // Handed-over rows of the channels asked were dropped: the query has them.
        let mut deferred = false;
        let at = Instant::now();
        for ((channel, limit), rows) in asks.into_iter().zip(found) {
            let full = rows.len() >= limit;
            let mut waiting = false;
            for row in rows {
                if self.is_in_flight(&row)
                    || (!row.lane.is_empty() && self.busy_lanes.contains(&row.lane))
                {
                    continue;
                }
                let target = TargetKey::of(&row);
                match self.bulk.admit(channel, target.as_ref(), at) {
                    Admit::Start => self.start(row),
                    Admit::Wait => waiting = true,
                    Admit::Defer(wait) => {
                        self.defer(row, wait);
                        deferred = true;
                    }
                }
            }
            // Caught up: rows committed from now on are handed over.
            self.backlog[channel.index()] = full || waiting;
        }
        self.publish_in_flight();
        if deferred {
            return Some(Instant::now()); // record the deferrals, then look again
        }
        if !self.backlog.iter().any(|b| *b) {
            self.last_query = Instant::now();
        }
        // Sleep until the next retry is due (or an attempt finishes).
        let next = match with_db(&db, move |c| outbox::next_due_after(c, now)).await {
            Ok(next) => next,
            Err(e) => {
                self.db_failed("next due", &e);
                return None;
            }
        };
        self.db_ok();
        Some(next.map_or(far, |at| {
            let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
            Instant::now() + Duration::from_millis(wait)
        }))
    }

    /// A row of a target whose breaker is open: its next attempt moves `wait` ahead
    /// without an attempt (recorded with the next outcomes).
    fn defer(&mut self, row: Claimed, wait: Duration) {
        self.in_flight.insert((row.epoch, row.rowid));
        self.in_flight_ids.insert(row.id.clone());
        if !row.lane.is_empty() {
            self.busy_lanes.insert(row.lane.clone());
        }
        self.finished.push(Finished {
            slot: Slot::of(&row),
            recorded: Recorded::Deferred { next_attempt_at: now_ms() + millis(wait) },
            verdict: Verdict::NotAttempted,
            attempted: false,
        });
    }

    fn telegram(&mut self) -> Result<Arc<TelegramSender>, SendError> {
        let live = self.live.load();
        let wanted = &live.telegram;
        if self.telegram.as_ref().is_none_or(|(s, _)| s != wanted) {
            let limits = RateLimits {
                per_token_per_second: wanted.per_token_per_second.max(1),
                per_chat_interval: Duration::from_secs(1) / wanted.per_chat_per_second.max(1),
                per_chat_per_minute: wanted.per_chat_per_minute.max(1),
                per_group_per_minute: wanted.per_group_per_minute.max(1),
                ..RateLimits::default()
            };
            let sender = TelegramSender::new(&wanted.api_url, wanted.request_timeout(), limits)
                .map(Arc::new);
            if let Err(e) = &sender {
                tracing::error!(error = %e, "cannot build the Telegram sender; Telegram deliveries wait");
            }
            self.telegram = Some((wanted.clone(), sender));
        }
        match &self.telegram {
            Some((_, Ok(s))) => Ok(s.clone()),
            Some((_, Err(e))) => {
                Err(SendError::retryable(format!("Telegram sender unavailable: {}", e.reason())))
            }
            None => Err(SendError::retryable("Telegram sender unavailable")),
        }
    }

    fn is_in_flight(&self, row: &Claimed) -> bool {
        self.in_flight.contains(&(row.epoch, row.rowid)) || self.in_flight_ids.contains(&row.id)
    }

    fn start(&mut self, row: Claimed) {
        let task_row = Slot::of(&row);
        self.bulk.start(task_row.channel, task_row.target.as_ref());
        self.in_flight.insert((row.epoch, row.rowid));
        self.in_flight_ids.insert(row.id.clone());
        if !row.lane.is_empty() {
            self.busy_lanes.insert(row.lane.clone());
        }
        let telegram = match &row.target {
            Ok(Target::Telegram { .. }) => Some(self.telegram()),
            _ => None,
        };
        let senders = self.senders.clone();
        let (policy, webhook_timeout) = {
            let live = self.live.load();
            (live.retry, live.webhook.timeout())
        };
        let handle = self.tasks.spawn(async move {
            let result =
                match tokio::time::timeout(ATTEMPT_DEADLINE, attempt(&row, &senders, telegram, webhook_timeout))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(SendError::no_answer(format!(
                        "the attempt took longer than {ATTEMPT_DEADLINE:?}"
                    ))),
                };
            let verdict = match &result {
                Ok(()) | Err(SendError::Permanent { .. }) => Verdict::Answered,
                Err(SendError::Retryable { no_answer: true, .. }) => Verdict::NoAnswer,
                Err(SendError::Retryable { .. }) => Verdict::Answered,
                Err(SendError::NotYet { .. }) => Verdict::NotAttempted,
            };
            let recorded = outcome(result, row.attempts, &policy, now_ms());
            if let Recorded::Failed { reason } = &recorded {
                tracing::warn!(delivery = %shown_id(&row), reaction = %row.reaction, reason = %reason, "delivery failed");
            }
            Finished { slot: Slot::of(&row), recorded, verdict, attempted: true }
        });
        self.task_rows.insert(handle.id(), task_row);
    }

    async fn housekeeping(&mut self) {
        let now = Instant::now();
        if now >= self.next_gauges {
            self.next_gauges = now + GAUGES_EVERY;
            if let Some(db) = self.conn.clone() {
                match with_db(&db, |c| outbox::pending_summary(c)).await {
                    Ok((count, oldest)) => {
                        self.stats.pending.store(count, Ordering::Relaxed);
                        metrics::gauge!(telemetry::OUTBOX_DEPTH).set(count as f64);
                        let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
                        metrics::gauge!(telemetry::OUTBOX_OLDEST_PENDING).set(age);
                    }
                    Err(e) => self.db_failed("count pending", &e),
                }
            }
        }
        if now >= self.next_prune {
            let retention = self.live.load().retention;
            let cutoff =
                now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            if let Some(db) = self.conn.clone() {
                match with_db(&db, move |c| outbox::prune(c, cutoff, PRUNE_BATCH)).await {
                    // A full batch: more to delete, next iteration (other work goes between).
                    Ok(n) if n >= PRUNE_BATCH => {}
                    Ok(n) => {
                        if n > 0 {
                            tracing::debug!(deleted = n, "pruned finished deliveries");
                        }
                        self.next_prune = now + PRUNE_EVERY;
                    }
                    Err(e) => {
                        self.db_failed("prune", &e);
                        self.next_prune = now + Duration::from_secs(10);
                    }
                }
            }
        }
    }

    /// After shutdown: let attempts finish within the deadline, record them, abandon the
    /// rest (their rows stay pending).
    async fn drain(&mut self) {
        let deadline = Instant::now() + self.config.shutdown_deadline;
        while !self.tasks.is_empty() {
            self.beat();
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => self.take(joined),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        abandoned = self.tasks.len(),
                        "shutdown deadline passed; unfinished deliveries stay pending"
                    );
                    self.tasks.abort_all();
                    // Attempts that finished meanwhile are still recorded below.
                    while let Some(joined) = self.tasks.join_next_with_id().await {
                        self.take(joined);
                    }
                    break;
                }
            }
        }
        // Record what finished; a busy database gets a few tries within the deadline.
        loop {
            if self.commit().await || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(self.trouble_pause().min(Duration::from_millis(500))).await;
        }
        if !self.finished.is_empty() {
            tracing::warn!(
                unrecorded = self.finished.len(),
                "could not record some outcomes before the deadline; they stay pending"
            );
        }
    }
}
