//! The dispatcher: drains the outbox ([`crate::store::outbox`]) through the senders.
//!
//! # One loop, many attempts
//!
//! One task owns the outbox connection and the scheduling state. It repeatedly
//!
//! 1. records the outcomes of finished attempts in one transaction (sent, failed, retry),
//!    in groups ([`super::group`]: at most 50 ms or 256 outcomes, sooner when half a
//!    channel's budget waits or a channel runs out of slots), and only then frees their
//!    in-flight slots,
//! 2. claims due rows per channel (a lane's head only, see [`crate::store::outbox::due_in`]) within
//!    the bulkheads of [`super::bulkhead`] (budgets per channel and per target, circuit
//!    breakers), skipping rows already in flight and lanes that have an attempt in flight,
//!    deferring rows of a backed-off target, and spawns one task per attempt,
//! 3. sleeps until an attempt finishes, [`DispatcherHandle::notify`] is called, the next
//!    retry is due, or `poll_interval` passes.
//!
//! Step 2 reads the outbox only while it may hold due rows the dispatcher was not handed
//! in memory (see *Hand-over in memory* in [`crate::store::outbox`]): at start, after a retry was
//! recorded, a database error, a [`DispatcherHandle::notify`] without handed-over rows
//! (SQLite only; the intake wakes it with [`DispatcherHandle::handed_over`], which never
//! queries), a full hand-over, a row with a lane, and at least every `poll_interval`.
//! Otherwise it starts the rows the intake handed over, before recording outcomes, so a
//! fresh push waits for no query and no transaction.
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

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::SendError;
use super::attempt::{Finished, millis, run};
use super::bulkhead::{Admit, Bulkheads, Change, TargetKey, Verdict, report};
use super::group::Group;
use super::handle::Stats;
pub use super::handle::{DispatchStats, DispatcherConfig, DispatcherHandle, Senders};
use super::in_flight::{InFlight, Slot};
use super::link::{Handle, Link};
use super::telegram::{SenderCache, TelegramSender};
pub use super::upkeep::PRUNE_BATCH;
use super::upkeep::Upkeep;

use crate::ops::telemetry;
use crate::settings::LiveSettings;
use crate::store::outbox::{self, Channel, Claimed, Recorded, RowRef, Target};
use crate::store::{OutboxDb, Store, StoreError, now_ms};

mod steps;

/// An attempt that takes longer than this is abandoned as retryable (the senders have
/// their own, shorter, timeouts; this is the safety net).
pub(super) const ATTEMPT_DEADLINE: Duration = Duration::from_secs(120);
/// Due rows read per channel beyond its attempts in flight and free slots, so rows of a
/// target that has no free share do not hide other targets' rows of the same channel.
const SCAN_EXTRA: usize = 256;
/// On PostgreSQL, how far the next attempt of a claimed row that found no free slot of its
/// target moves: claimed rows are leased, so it is given back with this delay rather than
/// held for the whole lease.
const GIVE_BACK: Duration = Duration::from_secs(1);

/// [`SCAN_EXTRA`] for `channel`: none for pushes, which all go to one broker (a single
/// target, no lanes), so no due push row can be hidden behind another that may not start.
/// Reading them anyway cost 10–17 % of the throughput at full speed with a backlog (306
/// rows read per claim to start ~27).
fn scan_extra(channel: Channel) -> usize {
    match channel {
        Channel::Push => 0,
        Channel::Telegram | Channel::Webhook => SCAN_EXTRA,
    }
}

/// Drains the outbox; see the module documentation.
#[derive(Debug)]
pub struct Dispatcher;

impl Dispatcher {
    /// Starts the dispatcher task (inside a tokio runtime) on a SQLite store. It runs until
    /// `shutdown` completes, then drains as documented.
    pub fn spawn(
        store: Store,
        handoff: Arc<outbox::Handoff>,
        senders: Senders,
        config: DispatcherConfig,
        live: Arc<ArcSwap<LiveSettings>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> DispatcherHandle {
        Dispatcher::spawn_on(OutboxDb::Sqlite(store), handoff, senders, config, live, shutdown)
    }

    /// [`Dispatcher::spawn`] on either database. On PostgreSQL rows are claimed with a
    /// lease of [`DispatcherConfig::lease`], so several instances never attempt the same
    /// row at once; the rows this instance's intake wrote already leased to it are handed
    /// over in memory (see [`crate::store::postgres::outbox`]).
    pub fn spawn_on(
        db: OutboxDb,
        handoff: Arc<outbox::Handoff>,
        senders: Senders,
        config: DispatcherConfig,
        live: Arc<ArcSwap<LiveSettings>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> DispatcherHandle {
        let notify = Arc::new(Notify::new());
        let handed = Arc::new(Notify::new());
        let stats = Arc::new(Stats::default());
        let (done_tx, done) = watch::channel(false);
        let bulk = Bulkheads::new(config.limits.clone());
        let state = Loop {
            link: Link::new(db, handoff.clone()),
            senders: Arc::new(senders),
            config,
            live,
            notify: notify.clone(),
            handed: handed.clone(),
            stats: stats.clone(),
            in_flight: InFlight::default(),
            bulk,
            tasks: JoinSet::new(),
            task_rows: HashMap::new(),
            group: Group::default(),
            telegram: SenderCache::default(),
            upkeep: Upkeep::new(),
            handoff,
            backlog: [true; 3],
            last_query: Instant::now(),
            held: HashMap::new(),
        };
        tokio::spawn(async move {
            state.run(shutdown).await;
            let _ = done_tx.send(true);
        });
        DispatcherHandle { notify, handed, stats, done }
    }
}

struct Loop {
    /// The outbox database, its failures (and on SQLite a replaced file).
    link: Link,
    senders: Arc<Senders>,
    config: DispatcherConfig,
    live: Arc<ArcSwap<LiveSettings>>,
    notify: Arc<Notify>,
    /// This daemon's writer handed rows over ([`DispatcherHandle::handed_over`]).
    handed: Arc<Notify>,
    stats: Arc<Stats>,
    /// Rows claimed and not yet recorded, and their lanes.
    in_flight: InFlight,
    /// In-flight budgets and circuit breakers.
    bulk: Bulkheads,
    tasks: JoinSet<Finished>,
    /// Which row each running attempt belongs to (to free a panicked attempt's slot).
    task_rows: HashMap<tokio::task::Id, Slot>,
    /// Outcomes not yet committed.
    group: Group,
    telegram: SenderCache,
    /// The outbox gauges and the retention sweep.
    upkeep: Upkeep,
    /// Rows committed through this store handle, handed over in memory.
    handoff: Arc<outbox::Handoff>,
    /// Per channel: due rows may be in the database that were not handed over (start-up,
    /// retries, a full hand-over, another writer, the poll interval passed, rows that
    /// found no free slot): query the outbox.
    backlog: [bool; 3],
    /// When the outbox was last queried and found caught up.
    last_query: Instant,
    /// On PostgreSQL, since when each handed-over row waiting for a free slot (by `seq`)
    /// has waited (see [`Loop::start_handed_over`]).
    held: HashMap<i64, Instant>,
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
            let record_at = self.record_at();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.take(joined);
                }
                () = self.notify.notified() => {
                    // Rows written through another store handle are only in the database.
                    // On PostgreSQL only this instance's intake wakes the dispatcher, and
                    // what it wrote that only a claim finds is flagged in the hand-over
                    // (`Handoff::db_only`): a wake-up after its rows were already taken
                    // (the permit outlives them) needs no claim.
                    if self.handoff.is_empty() && !self.link.leases() {
                        self.set_backlog();
                    }
                }
                () = self.handed.notified() => {}
                // Only a wake-up to record outcomes (see `record_due`).
                () = tokio::time::sleep_until(record_at.unwrap_or(sleep_until)), if record_at.is_some_and(|r| r < sleep_until) => {}
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
            if self.record_due() && !self.commit().await {
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
                if self.link.leases() {
                    // Leased rows waiting in the hand-over for the slots a commit freed.
                    self.start_handed_over();
                }
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
    ///
    /// On PostgreSQL the handed-over rows are leased to this instance (no claim returns
    /// them), so they start whatever the backlog; a row that finds no free slot stays in
    /// the hand-over for the next turn, for up to half its lease (then it is given back,
    /// due now, so its lease never ends while it waits here), one of a target whose
    /// breaker is open is deferred.
    fn start_handed_over(&mut self) {
        let leases = self.link.leases();
        if (!leases && self.backlog.iter().all(|b| *b)) || self.handoff.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut back = Vec::new();
        for row in self.handoff.take(usize::MAX) {
            let channel = Channel::of(&row.target);
            if (!leases && self.backlog[channel.index()]) || self.in_flight.contains(&row) {
                continue;
            }
            match self.bulk.admit(channel, TargetKey::of(&row).as_ref(), now) {
                Admit::Start => self.start(row),
                Admit::Wait if leases => {
                    let since = *self.held.entry(row.rowid).or_insert(now);
                    if now.duration_since(since) < self.config.lease / 2 {
                        back.push(row);
                    } else {
                        self.held.remove(&row.rowid);
                        self.defer(row, Duration::ZERO);
                    }
                }
                Admit::Defer(wait) if leases => {
                    self.held.remove(&row.rowid);
                    self.defer(row, wait);
                }
                Admit::Wait | Admit::Defer(_) => self.backlog[channel.index()] = true,
            }
        }
        if !back.is_empty() {
            self.handoff.put_back(back);
        }
        self.publish_in_flight();
    }

    /// Awaits `call`, a database call of the loop. On PostgreSQL, where a call is a round
    /// trip (and an outcome's commit a flush of the server's log), rows handed over
    /// meanwhile are started as they come, in free slots; the others stay in the hand-over
    /// for the loop, which is woken once more (what a wake-up flagged, e.g. rows only a
    /// claim finds, is its to see).
    ///
    /// With `record` (the calls that can take long: claims with expiry and coalescing, the
    /// look for the next retry, the housekeeping, which scan the due indexes), finished
    /// attempts are also taken in and their outcomes recorded, on a connection of their
    /// own, as soon as a group is due: a slow scan (e.g. over the dead row versions a
    /// long-held snapshot keeps from being vacuumed) then holds up neither a fresh push nor
    /// the slots of finished attempts.
    async fn meanwhile<T>(&mut self, call: impl Future<Output = T>, record: bool) -> T {
        if !self.link.leases() {
            return call.await;
        }
        tokio::pin!(call);
        let mut woken = false;
        loop {
            let record_at = self.record_at().filter(|_| record);
            tokio::select! {
                biased;
                out = &mut call => {
                    if woken {
                        self.notify.notify_one();
                    }
                    return out;
                }
                Some(joined) = self.tasks.join_next_with_id(), if record && !self.tasks.is_empty() => {
                    self.take(joined);
                    while let Some(joined) = self.tasks.try_join_next_with_id() {
                        self.take(joined);
                    }
                }
                () = self.notify.notified() => woken = true,
                () = self.handed.notified() => {}
                () = tokio::time::sleep_until(record_at.unwrap_or_else(Instant::now)), if record_at.is_some() => {}
            }
            if record
                && self.record_due()
                && let Ok((db, outcomes)) = self.outcomes().await
            {
                let done = db.record(outcomes).await;
                self.recorded(done);
            }
            self.start_free();
        }
    }

    /// Starts the handed-over rows that have a free slot; puts the others back.
    fn start_free(&mut self) {
        let now = Instant::now();
        let mut back = Vec::new();
        for row in self.handoff.take(usize::MAX) {
            let channel = Channel::of(&row.target);
            if self.in_flight.contains(&row) {
                continue;
            }
            match self.bulk.admit(channel, TargetKey::of(&row).as_ref(), now) {
                Admit::Start => self.start(row),
                Admit::Wait | Admit::Defer(_) => {
                    self.held.entry(row.rowid).or_insert(now);
                    back.push(row);
                }
            }
        }
        self.handoff.put_back(back);
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
        report(&change, &self.bulk, &self.config.limits, self.config.health.as_ref());
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
                self.finish(f);
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
                self.finish(Finished {
                    slot,
                    recorded,
                    verdict: Verdict::NotAttempted,
                    attempted: true,
                });
            }
        }
    }

    /// The pause after a database failure.
    fn trouble_pause(&mut self) -> Duration {
        self.link.pause()
    }

    fn db_ok(&mut self) {
        self.link.ok();
    }

    fn db_failed(&mut self, what: &str, e: &StoreError) {
        self.set_backlog();
        self.link.failed(what, e);
    }

    /// The outbox database for a step (see [`Link::get`]); `None` when it failed.
    async fn db(&mut self) -> Option<Handle> {
        let (db, requery) = self.link.get().await;
        if requery {
            self.set_backlog();
        }
        db
    }

    /// Queues a finished attempt (or a deferral) for [`Loop::commit`].
    fn finish(&mut self, f: Finished) {
        self.group.push(f, Instant::now());
    }

    /// When the queued outcomes must be recorded at the latest.
    fn record_at(&self) -> Option<Instant> {
        self.group.record_at()
    }

    /// Whether to record the queued outcomes now (see [`super::group`]).
    fn record_due(&self) -> bool {
        self.group.due(&self.bulk, Instant::now())
    }
}
