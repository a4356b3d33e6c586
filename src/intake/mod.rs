//! The intake pipeline: MQTT messages in, deliveries written to the outbox, then acked.
//!
//! ```text
//! source ──Incoming──▶ decode ─▶ resolve event ─▶ stale? ─▶ index.matches ─▶ recipients
//!                                                                             │
//!        ack ◀── commit (one IMMEDIATE transaction per batch) ◀── NewDelivery ┘
//! ```
//!
//! Messages are taken in batches (whatever is waiting, up to [`BATCH_MAX`]) so one SQLite
//! transaction carries many occurrences; every message of a batch is acknowledged only after
//! that transaction committed, so a crash at any point leaves the broker holding the messages
//! whose outcome is not durable, and it redelivers them. A redelivered occurrence adds nothing:
//! delivery ids are stable per occurrence × script × recipient and the outbox ignores ids it
//! already has. Invalid and stale messages are durable decisions too: they are counted,
//! logged at a bounded rate, and acknowledged.
//!
//! The timetable is evaluated at the occurrence's `occurred_at`.
//!
//! # Where the write runs
//!
//! SQLite calls block, so a batch is normally written on tokio's blocking pool: a hand-over
//! to another thread and back. At a steady trickle (each batch one or two messages, a few
//! rows) that hand-over costs more than the write: in the pipeline benchmark at 1,000
//! occurrences per second that all fire, about a sixth of the daemon's CPU per occurrence.
//! Such a small batch is therefore written on the intake's own task, but only when that
//! cannot wait: over the writer's open connection, with `synchronous = normal` (no fsync
//! in a commit), and without waiting for the write lock (see
//! [`OutboxWriter::try_enqueue_without_waiting`]). When another writer holds the lock, the
//! batch goes to the blocking pool as usual. Larger batches (a burst, a backlog) always
//! go to the pool, so the next batch is received while this one is written. (The commit
//! can still wait for the hand-over's lock while a dispatcher's claim reads due rows: a
//! read of well under a millisecond.)
//!
//! On PostgreSQL ([`OutboxDb::Postgres`]) a batch is one transaction through
//! [`OutboxBackend::enqueue`] on the connection pool (asynchronous, no blocking pool), and
//! the snoozes are read from there; nothing is handed over in memory. While PostgreSQL is
//! down the batch's write fails and is retried, and no message of it is acknowledged.

mod db;
pub mod explain;
pub mod occurrence;
mod plan;
mod run;

pub use plan::{Gate, Recipient, in_cooldown, recipients_of};
use plan::{Shared, plan_script};
pub use run::run;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::backoff::{Backoff, Jitter};
use crate::delivery::{
    self, PushParts, ReactionKind, delivery_id, local_time, message_text, push_payload,
};
use crate::index::Matches;
use crate::live::{Live, ScriptRecord, Snapshot};
use crate::ops::health::Health;
use crate::ops::telemetry;
use crate::settings::LiveSettings;
use crate::source::mqtt::Incoming;
use crate::store::outbox::backend::OutboxBackend;
use crate::store::outbox::{Fired, Handoff, NewDelivery, OutboxWriter, Target};
use crate::store::snoozes::{self, RecipientDecision, SnoozeSet};
use crate::store::{Conn, HeldConn, OutboxDb, Store, StoreError, catalog::Event};
use db::Db;
use occurrence::{EventRef, Occurrence, Reason, Rejected, RejectionLog};

/// Most messages written in one transaction.
pub const BATCH_MAX: usize = 1024;

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded and matched against the scripts: how many fired and how many deliveries
    /// they planned (a redelivered occurrence plans them again; the outbox keeps one each).
    Matched { scripts: usize, deliveries: usize },
    /// Older than `events.max_age_seconds` when received.
    Stale,
    /// Not a valid occurrence.
    Rejected(Reason),
}

/// The event name → catalog entry map of one snapshot generation.
struct EventNames {
    generation: u64,
    by_name: HashMap<String, i64>,
}

/// Turns messages into deliveries; owns the outbox connection. Used by [`run`] and by the
/// benchmark, which drives it directly. Its metric handles are taken from the recorder
/// installed when it is created.
pub struct Intake {
    live: Live,
    settings: Arc<ArcSwap<LiveSettings>>,
    timezone: chrono_tz::Tz,
    /// The outbox database and, on SQLite, the connections held to it.
    db: Db,
    rejections: Arc<RejectionLog>,
    names: Option<EventNames>,
    matches: Matches,
    meters: Meters,
    /// Cooldown state per (script, camera): the last firing's `occurred_at` (unix ms) and
    /// occurrence id; loaded from the database at start, written with each batch.
    cooldowns: HashMap<CooldownKey, Fire>,
    /// Firings of the batch being planned, written with its deliveries.
    fired: Vec<Fired>,
    /// The cooldown state each firing of the batch replaced, restored when the batch's
    /// write fails: its retry must find the state as it was, or the firing would look
    /// like its own redelivery and never be written.
    cooldown_undo: Vec<(CooldownKey, Option<Fire>)>,
    /// The active snoozes, reloaded when `snoozes_version` moves (checked at most every
    /// [`SNOOZE_CHECK`] while occurrences arrive), apart from the script index.
    snoozes: SnoozeSet,
    /// When `snoozes_version` was last compared.
    snoozes_checked: Option<Instant>,
    /// When expired snoozes were last deleted.
    snoozes_purged: Option<Instant>,
    /// Where the outcome of every outbox write is reported (the store's health).
    health: Option<Health>,
}

/// A script on a camera (the unit a cooldown applies to).
type CooldownKey = (i64, i64);

/// A firing: its `occurred_at` (unix ms) and occurrence id.
type Fire = (i64, String);

/// How often the intake deletes snoozes that ended longer ago than an accepted occurrence
/// can be old (they can apply to nothing any more).
const SNOOZE_PURGE: Duration = Duration::from_secs(60);

/// How long an ended snooze is kept when `events.max_age_seconds` is 0 (no age limit).
const SNOOZE_KEEP: Duration = Duration::from_secs(24 * 3600);

/// Most rows (deliveries and cooldown states) a batch may have to be written on the
/// intake's own task (a few tens of microseconds of SQLite); see *Where the write runs*.
const INLINE_ROWS: usize = 8;

/// Most messages a batch may have to be written on the intake's own task. A larger batch
/// means messages are arriving faster than one at a time: its write goes to the blocking
/// pool so that receiving goes on meanwhile. (Writing every batch of up to 8 rows on the
/// task, whatever its size, measured 48k–51k against 58k–66k occurrences per second at
/// full speed with F = 0.1 and 10k scripts.)
const INLINE_MESSAGES: usize = 2;

/// How often the intake compares `snoozes_version`, so an API or CLI snooze change applies
/// well within a second.
const SNOOZE_CHECK: Duration = Duration::from_millis(250);

/// Metric handles, registered once (a `metrics::counter!` per message is a registry
/// lookup).
struct Meters {
    received: metrics::Counter,
    stale: metrics::Counter,
    matched: metrics::Counter,
    suppressed: metrics::Counter,
    snoozed: metrics::Counter,
    match_duration: metrics::Histogram,
}

impl Meters {
    fn new() -> Meters {
        Meters {
            received: metrics::counter!(telemetry::OCCURRENCES_RECEIVED),
            stale: metrics::counter!(telemetry::OCCURRENCES_STALE),
            matched: metrics::counter!(telemetry::OCCURRENCES_MATCHED),
            suppressed: metrics::counter!(telemetry::OCCURRENCES_SUPPRESSED,
                telemetry::LABEL_REASON => telemetry::REASON_COOLDOWN),
            snoozed: metrics::counter!(telemetry::OCCURRENCES_SUPPRESSED,
                telemetry::LABEL_REASON => telemetry::REASON_SNOOZE),
            match_duration: metrics::histogram!(telemetry::MATCH_DURATION),
        }
    }
}

impl Intake {
    /// An intake over the live scripts, writing to `store`'s outbox and handing new rows
    /// over through `handoff` (the dispatcher's).
    pub fn new(
        store: Store,
        handoff: Arc<Handoff>,
        live: Live,
        settings: Arc<ArcSwap<LiveSettings>>,
        rejections: Arc<RejectionLog>,
    ) -> Result<Intake, StoreError> {
        let writer = OutboxWriter::new(&store, handoff.clone())?;
        let cooldowns = crate::store::outbox::load_cooldowns(&*store.connect()?)?;
        let db = Db::Sqlite { writer: Some(writer), store, handoff, snooze_conn: None };
        Ok(Intake::with_db(db, cooldowns, live, settings, rejections))
    }

    /// Reloads the snooze cache when `snoozes_version` moved; at most every
    /// [`SNOOZE_CHECK`], on the blocking pool (never on the intake's async task). A read
    /// error keeps the previous cache (logged).
    ///
    /// A snooze applies by `occurred_at`, so it is kept while an occurrence it covers can
    /// still be accepted: until `events.max_age_seconds` after it ended (a day when that is
    /// 0 = no limit); then it is deleted.
    async fn refresh_snoozes(&mut self, now: DateTime<Utc>) {
        if self.snoozes_checked.is_some_and(|t| t.elapsed() < SNOOZE_CHECK) {
            return;
        }
        self.snoozes_checked = Some(Instant::now());
        let max_age = self.settings.load().events.max_age_seconds;
        let keep = if max_age == 0 { SNOOZE_KEEP } else { Duration::from_secs(max_age) };
        let horizon = now.timestamp_millis() - i64::try_from(keep.as_millis()).unwrap_or(0);
        let purge = self.snoozes_purged.is_none_or(|t| t.elapsed() >= SNOOZE_PURGE);
        if purge {
            self.snoozes_purged = Some(Instant::now());
        }
        let version = self.snoozes.version;
        let (store, snooze_conn) = match &mut self.db {
            Db::Sqlite { store, snooze_conn, .. } => (store, snooze_conn),
            Db::Postgres(pg) => {
                let result = db::read_snoozes(pg, purge, horizon, version).await;
                self.snoozes_read(result);
                return;
            }
        };
        let mut held = snooze_conn.take().unwrap_or_else(|| HeldConn::new(store.clone()));
        let result = tokio::task::spawn_blocking(move || {
            let read = |conn: &Conn| {
                if purge {
                    let gone = snoozes::purge_expired(conn, horizon)?;
                    if gone > 0 {
                        tracing::debug!(snoozes = gone, "expired snoozes deleted");
                    }
                }
                if snoozes::version(conn)? == version {
                    return Ok(None);
                }
                SnoozeSet::load(conn, horizon).map(Some)
            };
            let result = held.get().and_then(|c| read(c));
            if result.is_err() {
                // A broken connection is not reused.
                held.close();
            }
            (Some(held), result)
        })
        .await
        .unwrap_or_else(|e| (None, Err(StoreError::TaskFailed(format!("snooze reader: {e}")))));
        let (held, result) = result;
        *snooze_conn = held;
        self.snoozes_read(result);
    }

    /// Takes what a snooze check read.
    fn snoozes_read(&mut self, result: Result<Option<SnoozeSet>, StoreError>) {
        match result {
            Ok(Some(set)) => self.snoozes = set,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read snoozes; keeping the previous ones"),
        }
    }

    fn resolve<'s>(&mut self, snap: &'s Snapshot, event: &EventRef) -> Option<&'s Event> {
        match event {
            EventRef::Id(id) => snap.events.get(id),
            EventRef::Name(name) => {
                if self.names.as_ref().is_none_or(|n| n.generation != snap.generation) {
                    let by_name = snap.events.values().map(|e| (e.name.clone(), e.id)).collect();
                    self.names = Some(EventNames { generation: snap.generation, by_name });
                }
                let id = self.names.as_ref()?.by_name.get(name)?;
                snap.events.get(id)
            }
        }
    }

    /// Reports the outcome of every outbox write to `health`: the store is down while
    /// writes fail (a full disk, a read-only file), up again with the next that succeeds.
    pub fn with_health(mut self, health: Health) -> Intake {
        self.health = Some(health);
        self
    }

    /// Decodes, matches and builds the deliveries of one message (no I/O), with the snoozes
    /// as [`Self::write_batch`] last read them.
    pub fn plan(
        &mut self,
        snap: &Snapshot,
        topic: &str,
        payload: &[u8],
        now: DateTime<Utc>,
        out: &mut Vec<NewDelivery>,
    ) -> Outcome {
        self.meters.received.increment(1);
        let max_payload = self.settings.load().events.max_payload_bytes;
        if payload.len() as u64 > max_payload {
            let what = format!(
                "{} bytes, more than events.max_payload_bytes ({max_payload})",
                payload.len()
            );
            self.rejections.record(topic, &Rejected::new(Reason::TooLarge, what));
            return Outcome::Rejected(Reason::TooLarge);
        }
        let occ = match occurrence::decode(topic, payload, now) {
            Ok(o) => o,
            Err(rejected) => {
                self.rejections.record(topic, &rejected);
                return Outcome::Rejected(rejected.reason);
            }
        };
        let Some(event) = self.resolve(snap, &occ.event) else {
            let what = match &occ.event {
                EventRef::Id(id) => format!("event_id {id} is not in the event catalog"),
                EventRef::Name(n) => format!("event {n:?} is not in the event catalog"),
            };
            self.rejections.record(topic, &Rejected::new(Reason::UnknownEvent, what));
            return Outcome::Rejected(Reason::UnknownEvent);
        };
        let max_age = self.settings.load().events.max_age_seconds;
        if occurrence::is_stale(&occ, now, max_age) {
            self.meters.stale.increment(1);
            tracing::debug!(occurrence = %occ.id, occurred_at = %occ.occurred_at, "stale occurrence dropped");
            return Outcome::Stale;
        }
        let started = Instant::now();
        let t = occ.occurred_at_utc().timestamp();
        snap.index.matches_into(event.id, occ.camera_id, t, &mut self.matches);
        self.meters.match_duration.record(started.elapsed().as_secs_f64());
        let before = out.len();
        let scripts = self.matches.positions.len();
        let occurred_at = occ.occurred_at_rfc3339();
        let shared = Shared {
            occ: &occ,
            occurred_at: &occurred_at,
            data: delivery::bounded_data(occ.data.as_ref(), payload.len()),
        };
        for &p in &self.matches.positions {
            let script_id = snap.index.script_id(p);
            if let Some(script) = snap.scripts.get(&script_id) {
                let cooldown = script.extra.cooldown_seconds;
                if cooldown > 0 {
                    let at_ms = occ.occurred_at_utc().timestamp_millis();
                    let key = (script_id, occ.camera_id);
                    let last = self.cooldowns.get(&key);
                    if in_cooldown(last, at_ms, &occ.id, cooldown) {
                        self.meters.suppressed.increment(1);
                        continue;
                    }
                    if last.is_none_or(|(_, id)| *id != occ.id) {
                        let previous = self.cooldowns.insert(key, (at_ms, occ.id.clone()));
                        self.cooldown_undo.push((key, previous));
                        self.fired.push(Fired {
                            script_id,
                            camera_id: occ.camera_id,
                            occurred_at_ms: at_ms,
                            occurrence_id: occ.id.clone(),
                            cooldown_ms: i64::from(cooldown) * 1000,
                        });
                    }
                }
                let at_ms = occ.occurred_at_utc().timestamp_millis();
                let gate = Gate { snoozes: &self.snoozes, at_ms };
                if plan_script(snap, script, event, &shared, &gate, self.timezone, out) {
                    self.meters.snoozed.increment(1);
                }
            }
        }
        if scripts > 0 {
            self.meters.matched.increment(1);
        }
        tracing::debug!(occurrence = %occ.id, event = event.id, camera = occ.camera_id, scripts, deliveries = out.len() - before, "occurrence matched");
        Outcome::Matched { scripts, deliveries: out.len() - before }
    }

    /// Closes the outbox connection if the database file was replaced (see
    /// [`crate::store::Conn`]); the next batch opens the new file.
    pub fn release_replaced_file(&mut self) {
        let Db::Sqlite { writer, snooze_conn, .. } = &mut self.db else { return };
        if let Some(w) = writer {
            w.release_replaced_file();
        }
        if let Some(c) = snooze_conn {
            c.release_replaced_file();
        }
    }

    /// Plans a batch and writes its deliveries in one transaction. Returns the outcome of
    /// each message (in order) and how many deliveries were new; on a database error nothing
    /// of the batch is durable.
    pub async fn write_batch(
        &mut self,
        batch: &[(&str, &[u8])],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Outcome>, usize), StoreError> {
        self.refresh_snoozes(now).await;
        let snap = self.live.load();
        let mut deliveries = Vec::new();
        self.fired.clear();
        self.cooldown_undo.clear();
        let outcomes: Vec<Outcome> = batch
            .iter()
            .map(|(topic, payload)| self.plan(&snap, topic, payload, now, &mut deliveries))
            .collect();
        let fired = std::mem::take(&mut self.fired);
        if deliveries.is_empty() && fired.is_empty() {
            return Ok((outcomes, 0));
        }
        let written = self.write(deliveries, fired, now, batch.len() <= INLINE_MESSAGES).await;
        if let Some(h) = &self.health {
            match &written {
                Ok(_) => h.store_write_succeeded(),
                Err(e) => h.store_write_failed(e.to_string()),
            }
        }
        if written.is_err() {
            // Nothing of the batch is durable: neither is its cooldown state.
            for (key, previous) in self.cooldown_undo.drain(..).rev() {
                match previous {
                    Some(p) => self.cooldowns.insert(key, p),
                    None => self.cooldowns.remove(&key),
                };
            }
        }
        Ok((outcomes, written?))
    }

    /// Writes a batch's deliveries and firings in one transaction: a `small` batch of at
    /// most [`INLINE_ROWS`] rows on this task when that cannot wait, otherwise on the
    /// blocking pool (see *Where the write runs* in the module documentation).
    async fn write(
        &mut self,
        deliveries: Vec<NewDelivery>,
        fired: Vec<Fired>,
        now: DateTime<Utc>,
        small: bool,
    ) -> Result<usize, StoreError> {
        let now_ms = now.timestamp_millis();
        let (writer_slot, store, handoff) = match &mut self.db {
            Db::Sqlite { writer, store, handoff, .. } => (writer, store, handoff),
            Db::Postgres(pg) => {
                let pg = pg.clone();
                let added = pg.enqueue(&deliveries, &fired, now_ms).await?;
                if !fired.is_empty() {
                    self.settle_cooldowns(&pg, &fired).await;
                }
                return Ok(added);
            }
        };
        if small
            && deliveries.len() + fired.len() <= INLINE_ROWS
            && let Some(w) = writer_slot.as_mut()
            && let Some(result) = w.try_enqueue_without_waiting(&deliveries, &fired, now_ms)
        {
            return result;
        }
        let mut writer = match writer_slot.take() {
            Some(w) => w,
            None => OutboxWriter::new(store, handoff.clone())?,
        };
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let r = writer.enqueue_with_cooldowns(&deliveries, &fired, now_ms);
            (writer, r)
        })
        .await
        .map_err(|e| StoreError::TaskFailed(format!("outbox writer task: {e}")))?;
        *writer_slot = Some(writer);
        result
    }
}

impl Intake {
    /// After a committed batch on PostgreSQL: the cooldown cache takes the stored state of
    /// every script and camera the batch fired on. A firing another instance's covered was
    /// not written (see [`PgOutbox::enqueue`](crate::store::postgres::outbox::PgOutbox)):
    /// it counts as suppressed, and the cache no longer holds it. A failed read keeps the
    /// cache (the database still decides at the next firing).
    async fn settle_cooldowns(
        &mut self,
        pg: &crate::store::postgres::outbox::PgOutbox,
        fired: &[Fired],
    ) {
        let mut keys: Vec<CooldownKey> = fired.iter().map(|f| (f.script_id, f.camera_id)).collect();
        keys.sort_unstable();
        keys.dedup();
        match pg.cooldown_states(&keys).await {
            Ok(states) => {
                for state in states {
                    let key = (state.script_id, state.camera_id);
                    let ours = fired.iter().any(|f| {
                        (f.script_id, f.camera_id) == key && f.occurrence_id == state.occurrence_id
                    });
                    if !ours {
                        self.meters.suppressed.increment(1);
                    }
                    self.cooldowns.insert(key, (state.occurred_at_ms, state.occurrence_id));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the cooldown state back"),
        }
    }
}

#[cfg(test)]
mod tests;
