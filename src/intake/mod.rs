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

pub mod explain;
pub mod occurrence;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::delivery::{
    self, PushParts, ReactionKind, delivery_id, local_time, message_text, push_payload,
};
use crate::index::Matches;
use crate::live::{Live, ScriptRecord, Snapshot};
use crate::ops::telemetry;
use crate::settings::LiveSettings;
use crate::source::mqtt::Incoming;
use crate::store::outbox::{Fired, NewDelivery, OutboxWriter, Target};
use crate::store::snoozes::{self, RecipientDecision, SnoozeSet};
use crate::store::{Store, StoreError, catalog::Event};
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
    writer: Option<OutboxWriter>,
    store: Store,
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
    /// An intake over the live scripts, writing to `store`'s outbox.
    pub fn new(
        store: Store,
        live: Live,
        settings: Arc<ArcSwap<LiveSettings>>,
        rejections: Arc<RejectionLog>,
    ) -> Result<Intake, StoreError> {
        let writer = OutboxWriter::new(&store)?;
        let cooldowns = crate::store::outbox::load_cooldowns(&*store.connect()?)?
            .into_iter()
            .map(|f| ((f.script_id, f.camera_id), (f.occurred_at_ms, f.occurrence_id)))
            .collect();
        let timezone = live.timezone();
        Ok(Intake {
            live,
            settings,
            timezone,
            writer: Some(writer),
            store,
            rejections,
            names: None,
            matches: Matches::new(),
            meters: Meters::new(),
            cooldowns,
            fired: Vec::new(),
            cooldown_undo: Vec::new(),
            snoozes: SnoozeSet::default(),
            snoozes_checked: None,
            snoozes_purged: None,
        })
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
        let (store, version) = (self.store.clone(), self.snoozes.version);
        let result = tokio::task::spawn_blocking(move || {
            let conn = store.connect()?;
            if purge {
                let gone = snoozes::purge_expired(&conn, horizon)?;
                if gone > 0 {
                    tracing::debug!(snoozes = gone, "expired snoozes deleted");
                }
            }
            if snoozes::version(&conn)? == version {
                return Ok(None);
            }
            SnoozeSet::load(&conn, horizon).map(Some)
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::TaskFailed(format!("snooze reader: {e}"))));
        match result {
            Ok(Some(set)) => self.snoozes = set,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read snoozes; keeping the previous ones"),
        }
    }

    fn resolve(&mut self, snap: &Snapshot, event: &EventRef) -> Option<Event> {
        match event {
            EventRef::Id(id) => snap.events.get(id).cloned(),
            EventRef::Name(name) => {
                if self.names.as_ref().is_none_or(|n| n.generation != snap.generation) {
                    let by_name = snap.events.values().map(|e| (e.name.clone(), e.id)).collect();
                    self.names = Some(EventNames { generation: snap.generation, by_name });
                }
                let id = self.names.as_ref()?.by_name.get(name)?;
                snap.events.get(id).cloned()
            }
        }
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
                        });
                    }
                }
                let at_ms = occ.occurred_at_utc().timestamp_millis();
                let gate = Gate { snoozes: &self.snoozes, at_ms };
                if plan_script(snap, script, &event, &shared, &gate, self.timezone, out) {
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
        if let Some(w) = &mut self.writer {
            w.release_replaced_file();
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
        let written = self.write(deliveries, fired, now).await;
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

    /// Writes a batch's deliveries and firings in one transaction on the blocking pool.
    async fn write(
        &mut self,
        deliveries: Vec<NewDelivery>,
        fired: Vec<Fired>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut writer = match self.writer.take() {
            Some(w) => w,
            None => OutboxWriter::new(&self.store)?,
        };
        let now_ms = now.timestamp_millis();
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let r = writer.enqueue_with_cooldowns(&deliveries, &fired, now_ms);
            (writer, r)
        })
        .await
        .map_err(|e| StoreError::TaskFailed(format!("outbox writer task: {e}")))?;
        self.writer = Some(writer);
        result
    }
}

/// What the deliveries of one occurrence share, computed once per occurrence.
struct Shared<'a> {
    occ: &'a Occurrence,
    /// `occurred_at` as RFC 3339.
    occurred_at: &'a str,
    /// The `data` pushes carry, and whether it was left out for its size.
    data: (Option<&'a serde_json::Value>, bool),
}

/// Whether a script's occurrence `occurrence_id` at `at_ms` (its `occurred_at`, unix ms)
/// on a camera is silenced by the script's last firing there, `last` (`occurred_at` and
/// id): it lies less than `cooldown_seconds` after it. The firing occurrence itself,
/// redelivered, is not silenced (the outbox ignores it as a duplicate), so replaying a
/// stream with the same ids repeats the same decisions.
pub fn in_cooldown(
    last: Option<&(i64, String)>,
    at_ms: i64,
    occurrence_id: &str,
    cooldown_seconds: u32,
) -> bool {
    last.is_some_and(|(fired_ms, id)| {
        id != occurrence_id
            && at_ms >= *fired_ms
            && at_ms - fired_ms < i64::from(cooldown_seconds) * 1000
    })
}

/// What decides, per recipient of a matched script ([`recipients_of`]), whether a delivery
/// is made: disabled accounts get nothing, then the snoozes at the occurrence's
/// `occurred_at` apply.
pub struct Gate<'a> {
    /// The active snoozes.
    pub snoozes: &'a SnoozeSet,
    /// The occurrence's `occurred_at`, unix ms.
    pub at_ms: i64,
}

impl Gate<'_> {
    /// The shared rule ([`snoozes::decide`]) for one recipient of `script` on `camera`:
    /// a user id for pushes, `None` for Telegram and webhooks.
    pub fn decide(
        &self,
        snap: &Snapshot,
        script_id: i64,
        recipient: Option<i64>,
        camera: i64,
    ) -> RecipientDecision {
        let disabled = recipient.is_some_and(|u| snap.disabled.contains(&u));
        let camera = camera.to_string();
        snoozes::decide(self.snoozes, script_id, recipient, disabled, &camera, self.at_ms)
    }
}

/// Who one delivery of a matched script goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient<'a> {
    /// A user's client apps (a push), disabled users included: the [`Gate`] leaves them out.
    User(i64),
    /// A Telegram chat, with the script's bot token.
    Chat { chat_id: &'a str, bot_token: &'a crate::secret::Secret },
    /// A webhook URL.
    Url(&'a str),
}

impl Recipient<'_> {
    /// The user id the snooze and account rules look at (`None` for chats and URLs).
    pub fn user(&self) -> Option<i64> {
        match self {
            Recipient::User(u) => Some(*u),
            Recipient::Chat { .. } | Recipient::Url(_) => None,
        }
    }
}

/// Everybody a matched script's reaction goes to: the chat of a Telegram script, the URL of a
/// webhook script, otherwise its users (plus their sub-users for the client-side reactions),
/// disabled users included. A hand-edited row without its chat, token or URL has nobody
/// (logged). The intake and explain both ask this, then the [`Gate`].
pub fn recipients_of<'a>(snap: &Snapshot, script: &'a ScriptRecord) -> Vec<Recipient<'a>> {
    match script.reaction.kind {
        ReactionKind::Telegram => {
            let (Some(bot_token), Some(chat_id)) = (&script.extra.bot_token, &script.extra.chat_id)
            else {
                // Validation requires both; a hand-edited row without them is skipped loudly.
                tracing::warn!(
                    script = script.id,
                    "telegram script without bot_token or chat_id; nothing sent"
                );
                return Vec::new();
            };
            vec![Recipient::Chat { chat_id, bot_token }]
        }
        ReactionKind::Webhook => match &script.extra.url {
            Some(url) => vec![Recipient::Url(url)],
            None => {
                tracing::warn!(script = script.id, "webhook script without url; nothing sent");
                Vec::new()
            }
        },
        ReactionKind::Client | ReactionKind::Other => {
            snap.audience(script).into_iter().map(Recipient::User).collect()
        }
    }
}

/// The deliveries of one matched script for one occurrence; true when a snooze silenced
/// at least one of them.
fn plan_script(
    snap: &Snapshot,
    script: &ScriptRecord,
    event: &Event,
    shared: &Shared<'_>,
    gate: &Gate<'_>,
    tz: chrono_tz::Tz,
    out: &mut Vec<NewDelivery>,
) -> bool {
    let Shared { occ, occurred_at, data: (data, data_truncated) } = *shared;
    let reaction = script.reaction.name.as_str();
    let payload_for = |id: &str| {
        push_payload(&PushParts {
            reaction,
            delivery_id: id,
            script_id: script.id,
            script_title: &script.title,
            event_id: event.id,
            event_name: &event.name,
            event_description: &event.description,
            event_color: &event.color,
            occurrence_id: &occ.id,
            camera_id: occ.camera_id,
            occurred_at,
            data,
            data_truncated,
            snapshot_url: occ.snapshot_url.as_deref(),
        })
        .to_string()
    };
    // One delivery: id, payload and the script's fields; the rest per reaction.
    let mut push =
        |recipient: String, key: &dyn std::fmt::Display, lane: String, target: Target| {
            let id = delivery_id(&occ.id, script.id, key);
            out.push(NewDelivery {
                payload: payload_for(&id),
                id,
                occurrence_id: occ.id.clone(),
                script_id: script.id,
                reaction: reaction.to_owned(),
                recipient,
                lane,
                target,
            });
        };
    let mut snoozed = false;
    for recipient in recipients_of(snap, script) {
        match gate.decide(snap, script.id, recipient.user(), occ.camera_id) {
            RecipientDecision::Delivers => {}
            RecipientDecision::SnoozedUntil(_) => {
                snoozed = true;
                continue;
            }
            RecipientDecision::UserDisabled => continue,
        }
        match recipient {
            Recipient::Chat { chat_id, bot_token } => {
                let hash = Sha256::digest(bot_token.expose().as_bytes());
                let lane = format!("tg:{}:{chat_id}", hex::encode(&hash[..8]));
                let text = message_text(
                    &script.title,
                    &event.description,
                    occ.camera_id,
                    &local_time(occ.occurred_at_utc(), tz),
                    data,
                );
                let target = Target::Telegram {
                    bot_token: bot_token.clone(),
                    chat_id: chat_id.to_owned(),
                    text,
                    photo_url: occ.snapshot_url.clone(),
                };
                push(chat_id.to_owned(), &chat_id, lane, target);
            }
            Recipient::Url(url) => {
                let target =
                    Target::Webhook { url: url.to_owned(), secret: script.extra.secret.clone() };
                push(url.to_owned(), &"webhook", String::new(), target);
            }
            Recipient::User(user) => {
                push(user.to_string(), &user, String::new(), Target::Push { user_id: user });
            }
        }
    }
    snoozed
}

/// Runs the intake until the channel closes: batches, writes, then acknowledges. A database
/// error (e.g. busy past the timeout) leaves the batch unacknowledged and retries it, so
/// nothing is lost and the broker keeps the rest. `on_commit` runs after every commit that
/// added deliveries (the dispatcher's wake-up); `beat` after every loop, also when idle.
pub async fn run(
    mut intake: Intake,
    mut rx: mpsc::Receiver<Incoming>,
    on_commit: impl Fn(),
    beat: impl Fn(),
) {
    let mut batch: Vec<Incoming> = Vec::with_capacity(BATCH_MAX);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(first) => batch.push(first),
                None => return,
            },
            _ = tick.tick() => {
                // Idle: a replaced database file must not wait for traffic to be let go.
                intake.release_replaced_file();
                beat();
                continue;
            }
        }
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(50);
        loop {
            let items: Vec<(&str, &[u8])> =
                batch.iter().map(|m| (m.topic.as_str(), &m.payload[..])).collect();
            match intake.write_batch(&items, Utc::now()).await {
                Ok((_, inserted)) => {
                    if inserted > 0 {
                        on_commit();
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, messages = batch.len(), "cannot write the outbox; retrying the batch");
                    beat();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for m in batch.drain(..) {
            // A failed ack means the connection dropped: the broker redelivers, and the
            // outbox already has these deliveries.
            let _ = m.ack.ack().await;
        }
        beat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a stream of (id, occurred_at ms) through the decision, as the intake does,
    /// starting from `state`; returns the ids that fired.
    fn fire(
        state: &mut Option<(i64, String)>,
        stream: &[(String, i64)],
        cooldown: u32,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (id, at) in stream {
            if in_cooldown(state.as_ref(), *at, id, cooldown) {
                continue;
            }
            *state = Some((*at, id.clone()));
            out.push(id.clone());
        }
        out
    }

    #[test]
    fn cooldown_fires_once_per_window_and_a_replay_fires_the_same_ids() {
        // Every 0.5 s for 25 s, cooldown 10 s: fires at 0, 10 and 20 s.
        let stream: Vec<(String, i64)> = (0..50).map(|i| (format!("o{i}"), i * 500)).collect();
        let mut state = None;
        let first = fire(&mut state, &stream, 10);
        assert_eq!(first, ["o0", "o20", "o40"]);
        // Replayed after a restart (state kept): the same ids fire again, which the outbox
        // ignores as duplicates, so nothing new is sent.
        assert_eq!(fire(&mut state, &stream, 10), first);
        // A restart mid-stream keeps the state: the rest fires as before.
        let mut state = None;
        let head = fire(&mut state, &stream[..25], 10);
        let tail = fire(&mut state, &stream[25..], 10);
        assert_eq!([head, tail].concat(), first);
        // No cooldown: nothing is silenced.
        assert_eq!(fire(&mut None, &stream, 0).len(), 50);
    }

    #[test]
    fn the_firing_occurrence_redelivered_is_not_silenced() {
        let last = (1_000, "a".to_owned());
        assert!(!in_cooldown(Some(&last), 1_000, "a", 10));
        assert!(in_cooldown(Some(&last), 1_000, "b", 10));
        assert!(in_cooldown(Some(&last), 10_999, "b", 10));
        assert!(!in_cooldown(Some(&last), 11_000, "b", 10));
        assert!(!in_cooldown(None, 1_000, "b", 10));
    }

    #[tokio::test]
    async fn a_failed_batch_write_leaves_no_cooldown_state_and_its_retry_records_it() {
        use crate::store::users::{self, NewUser};
        use crate::store::{Store, scripts};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::migrate(&dir.path().join("t.db"))
            .unwrap()
            .with_busy_timeout(Duration::from_millis(20));
        store
            .write(|tx| {
                let user = NewUser {
                    id: Some(1),
                    login: "u1".into(),
                    name: "u1".into(),
                    parent_id: None,
                    permissions: vec![],
                };
                users::add(tx, &user)?;
                let lookups = crate::script::Lookups::load(tx)?;
                let body = serde_json::json!({
                    "title": "door", "event_id": 1, "reaction_id": 2, "status": "active",
                    "cameras": null, "users": [1], "extra": {"cooldown_seconds": 60},
                    "timetable": {"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]},
                });
                let valid = crate::script::validate(
                    body.as_object().unwrap(),
                    &lookups.context(chrono_tz::UTC),
                )
                .unwrap();
                scripts::insert_owned(tx, None, Some(1), &valid.input)
            })
            .unwrap();
        let live = Live::new(store.clone(), chrono_tz::UTC).unwrap();
        live.reload_blocking().unwrap();
        let settings =
            Arc::new(ArcSwap::from_pointee(crate::settings::Settings::default().live_part()));
        let mut intake =
            Intake::new(store.clone(), live, settings, Arc::new(RejectionLog::default())).unwrap();
        let now = Utc::now();
        let payload = serde_json::json!({"id": "o1", "event_id": 1, "camera_id": 7,
                                         "occurred_at": now.to_rfc3339()})
        .to_string();
        let batch = [("vms/analytics/events/7", payload.as_bytes())];

        // Another writer holds the database: the batch is not written.
        let mut other = store.connect().unwrap();
        let held =
            other.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
        assert!(intake.write_batch(&batch, now).await.is_err());
        drop(held);
        // Its retry writes the delivery and the firing's cooldown state.
        let (_, added) = intake.write_batch(&batch, now).await.unwrap();
        assert_eq!(added, 1);
        let stored = crate::store::outbox::load_cooldowns(&store.connect().unwrap()).unwrap();
        let stored: Vec<(i64, String)> =
            stored.into_iter().map(|f| (f.camera_id, f.occurrence_id)).collect();
        assert_eq!(stored, [(7, "o1".to_owned())]);
    }
}
