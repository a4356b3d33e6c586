//! # The live snapshot
//!
//! Everything the pipeline needs to match and deliver an occurrence, built from the
//! database and swapped in atomically ([`arc_swap`]): readers call [`Live::load`] and never
//! wait for a writer. The snapshot is rebuilt
//! - after every API write, before the API answers, so the next occurrence sees it;
//! - by the watcher ([`Live::spawn_watcher`]) when another program changes the scripts: it
//!   polls the `scripts_version` counter (bumped by triggers on scripts, their users, users,
//!   permissions and the catalogs — not by the outbox's constant commits) on a dedicated
//!   connection every 500 ms, and notices a replaced file (new device/inode at the path)
//!   and reopens it.
//!
//! A row that fails validation (hand-edited with the `sqlite3` shell) is left out of the
//! index, logged once with the script id and the field, and kept in [`Snapshot::invalid`]
//! so `GET /scripts/{id}` can show why; the other scripts keep working.
//!
//! ## Memory
//!
//! A rebuild holds the old snapshot, the new one and the build's transient data at once, so
//! both are kept lean: each script's timetable lives only in the index, compiled, and the
//! index keeps a reference timetable only for the rules that may need it, one per distinct
//! timetable, shared with the previous snapshot's when unchanged; the delivery side is one
//! [`ScriptRecord`] per script in one array sorted by id ([`Scripts`]), sharing catalog
//! entries and empty reaction data, with the camera filters and users in one id array. The
//! build streams the rows into an [`IndexBuilder`] and never holds every rule at once; after
//! the swap the allocator's free pages go back to the system.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono_tz::Tz;
use serde_json::Value;

use crate::delivery::ReactionKind;
use crate::index::IndexBuilder;
use crate::script::validation::FieldErrors;
use crate::script::{Lookups, Rule, ScheduleIndex, validate};
use crate::secret::Secret;
use crate::store::catalog::{Event, Reaction};
use crate::store::users::descendants;
use crate::store::{Conn, Store, StoreError, scripts, users};

/// How often the watcher looks for outside changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A script's reaction-specific data, secrets masked in `Debug`.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Telegram bot token (`telegram-message`).
    pub bot_token: Option<Secret>,
    /// Telegram chat id, as text (`telegram-message`).
    pub chat_id: Option<String>,
    /// Webhook URL (`webhook`).
    pub url: Option<String>,
    /// Webhook signing secret (`webhook`).
    pub secret: Option<Secret>,
    /// Seconds after a firing on a camera during which the script stays silent on that
    /// camera (any reaction); 0 = no cooldown.
    pub cooldown_seconds: u32,
}

impl Extra {
    /// True when no field is set (most reactions have no extra data).
    fn is_empty(&self) -> bool {
        self.bot_token.is_none()
            && self.chat_id.is_none()
            && self.url.is_none()
            && self.secret.is_none()
            && self.cooldown_seconds == 0
    }
}

/// A valid script, ready for delivery. Its timetable lives in the snapshot's
/// [`ScheduleIndex`] only, compiled; its camera filter and users in [`Scripts`]' shared id
/// array ([`Scripts::cameras`], [`Scripts::users`]).
#[derive(Debug, Clone)]
pub struct ScriptRecord {
    /// Script id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// `status` = active.
    pub enabled: bool,
    /// The event it reacts to.
    pub event: Arc<Event>,
    /// The reaction to perform.
    pub reaction: Arc<Reaction>,
    /// Where its cameras are in [`Scripts`]' id array (empty: every camera).
    cameras: (u32, u32),
    /// Where its users are in [`Scripts`]' id array.
    users: (u32, u32),
    /// Reaction data; one shared empty value for the scripts without any.
    pub extra: Arc<Extra>,
}

/// The valid scripts of a snapshot by id: one array sorted by id, looked up by binary search
/// (a map would cost a hash bucket and an allocation per script), and every script's camera
/// filter and users in one shared array of ids (most scripts have one user and a few
/// cameras: a heap block each would cost more than the ids).
#[derive(Debug, Default)]
pub struct Scripts {
    records: Box<[ScriptRecord]>,
    ids: Box<[i64]>,
}

/// Collects the records of a [`Scripts`].
#[derive(Debug, Default)]
struct ScriptsBuilder {
    records: Vec<ScriptRecord>,
    ids: Vec<i64>,
}

impl ScriptsBuilder {
    /// Adds a record with its camera filter (`None`: every camera) and users.
    fn push(&mut self, mut record: ScriptRecord, cameras: Option<&[i64]>, users: &[i64]) {
        record.cameras = self.ids(cameras.unwrap_or_default());
        record.users = self.ids(users);
        self.records.push(record);
    }

    /// Appends `ids` to the shared array and returns where they are. Past 2³² ids in one
    /// snapshot nothing is appended (an empty range).
    fn ids(&mut self, ids: &[i64]) -> (u32, u32) {
        let (Ok(start), Ok(len)) = (u32::try_from(self.ids.len()), u32::try_from(ids.len())) else {
            return (0, 0);
        };
        if start.checked_add(len).is_none() {
            return (0, 0);
        }
        self.ids.extend_from_slice(ids);
        (start, len)
    }

    /// The records sorted by id; a repeated id keeps its first record.
    fn finish(mut self) -> Scripts {
        if !self.records.is_sorted_by_key(|r| r.id) {
            self.records.sort_by_key(|r| r.id);
        }
        self.records.dedup_by_key(|r| r.id);
        Scripts { records: self.records.into_boxed_slice(), ids: self.ids.into_boxed_slice() }
    }
}

impl Scripts {
    fn ids(&self, (start, len): (u32, u32)) -> &[i64] {
        self.ids.get(start as usize..start as usize + len as usize).unwrap_or_default()
    }

    /// The cameras of the script with this id: `None` when there is no such script,
    /// `Some(None)` when it watches every camera.
    pub fn cameras(&self, id: &i64) -> Option<Option<&[i64]>> {
        let cameras = self.ids(self.get(id)?.cameras);
        Some((!cameras.is_empty()).then_some(cameras))
    }

    /// The users listed on a script of this snapshot (see [`Snapshot::recipients`] for
    /// sub-users).
    pub fn users(&self, script: &ScriptRecord) -> &[i64] {
        self.ids(script.users)
    }

    /// The script with this id.
    pub fn get(&self, id: &i64) -> Option<&ScriptRecord> {
        self.records.binary_search_by_key(id, |r| r.id).ok().map(|i| &self.records[i])
    }

    /// True when a valid script has this id.
    pub fn contains_key(&self, id: &i64) -> bool {
        self.get(id).is_some()
    }

    /// Number of valid scripts.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there is no valid script.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The ids, ascending.
    pub fn keys(&self) -> Keys<'_> {
        Keys(self.records.iter())
    }

    /// The records, by ascending id.
    pub fn iter(&self) -> std::slice::Iter<'_, ScriptRecord> {
        self.records.iter()
    }
}

impl std::ops::Index<&i64> for Scripts {
    type Output = ScriptRecord;

    /// The script with this id.
    ///
    /// # Panics
    /// When there is none (like a map's index).
    fn index(&self, id: &i64) -> &ScriptRecord {
        match self.get(id) {
            Some(r) => r,
            None => panic!("no valid script {id} in the snapshot"),
        }
    }
}

/// The ids of [`Scripts`], ascending.
#[derive(Clone)]
pub struct Keys<'a>(std::slice::Iter<'a, ScriptRecord>);

impl<'a> Iterator for Keys<'a> {
    type Item = &'a i64;

    fn next(&mut self) -> Option<&'a i64> {
        self.0.next().map(|r| &r.id)
    }
}

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// One consistent view of the scripts.
#[derive(Debug)]
pub struct Snapshot {
    /// `(event, camera, instant) → script ids`.
    pub index: ScheduleIndex,
    /// Valid scripts by id.
    pub scripts: Scripts,
    /// Scripts skipped because their row is invalid, with the reasons.
    pub invalid: BTreeMap<i64, FieldErrors>,
    /// Every user's parent, for sub-user expansion.
    pub parents: HashMap<i64, Option<i64>>,
    /// Users disabled by `scriptd users disable`: they get no deliveries.
    pub disabled: HashSet<i64>,
    /// The event catalog by id.
    pub events: HashMap<i64, Event>,
    /// Counts rebuilds: a higher generation is a newer snapshot.
    pub generation: u64,
    /// What it was built from: the database file's epoch ([`crate::store::Conn::epoch`])
    /// and its scripts version (`None` before the first load).
    pub source: Option<(u64, i64)>,
}

impl Snapshot {
    /// An empty snapshot (before the first load).
    pub fn empty() -> Snapshot {
        Snapshot {
            index: ScheduleIndex::build(Vec::new()),
            scripts: Scripts::default(),
            invalid: BTreeMap::new(),
            parents: HashMap::new(),
            disabled: HashSet::new(),
            events: HashMap::new(),
            generation: 0,
            source: None,
        }
    }

    /// The given users and all their sub-users, breadth-first, each once.
    pub fn descendants(&self, user_ids: &[i64]) -> Vec<i64> {
        descendants(&self.parents, user_ids)
    }

    /// The users a script's reaction goes to: its users, plus every sub-user below them
    /// for the client-side reactions (`show-camera-sidebar`, `show-camera`, `sound`);
    /// disabled users included (the intake's gate leaves them out, explain names them).
    pub fn audience(&self, script: &ScriptRecord) -> Vec<i64> {
        match script.reaction.kind {
            ReactionKind::Client => self.descendants(self.scripts.users(script)),
            ReactionKind::Telegram | ReactionKind::Webhook | ReactionKind::Other => {
                self.scripts.users(script).to_vec()
            }
        }
    }

    /// [`Self::audience`] without the disabled users (their sub-users still get theirs).
    pub fn recipients(&self, script: &ScriptRecord) -> Vec<i64> {
        let mut users = self.audience(script);
        if !self.disabled.is_empty() {
            users.retain(|u| !self.disabled.contains(u));
        }
        users
    }
}

/// Shared handle on the current snapshot; cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    timezone: Tz,
    current: ArcSwap<Snapshot>,
    /// The watcher's connection; its lock also serialises rebuilds, so an older snapshot
    /// never replaces a newer one.
    watch: Mutex<Option<Watch>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("generation", &self.load().generation).finish()
    }
}

impl Live {
    /// Loads the first snapshot (blocking).
    pub fn new(store: Store, timezone: Tz) -> Result<Live, StoreError> {
        let live = Live {
            inner: Arc::new(Inner {
                store,
                timezone,
                current: ArcSwap::from_pointee(Snapshot::empty()),
                watch: Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        };
        live.reload_blocking()?;
        Ok(live)
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// The store this snapshot is built from.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The zone for times without an offset.
    pub fn timezone(&self) -> Tz {
        self.inner.timezone
    }

    /// Rebuilds the snapshot from the database and swaps it in (blocking).
    pub fn reload_blocking(&self) -> Result<(), StoreError> {
        let mut watch = self.inner.watch.lock().unwrap_or_else(|p| p.into_inner());
        self.reload_locked(&mut watch)
    }

    /// Rebuilds with the watcher locked. The watcher's data version is noted *before* the
    /// read, so the rebuild covers every commit up to it (the watcher does not rebuild a
    /// second time for an API write) and any later commit is seen by the next poll.
    fn reload_locked(&self, watch: &mut Option<Watch>) -> Result<(), StoreError> {
        if let Some(w) = watch.as_mut() {
            match data_version(&w.conn) {
                Ok(v) => w.data_version = v,
                Err(_) => *watch = None,
            }
        }
        let previous = self.load();
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let started = std::time::Instant::now();
        let built = build(&self.inner.store, self.inner.timezone, generation, &previous.index);
        let snapshot = match built {
            Ok(s) => s,
            Err(e) => {
                // Forget the noted version: the watcher reopens and rebuilds next time.
                *watch = None;
                return Err(e);
            }
        };
        for (id, errors) in &snapshot.invalid {
            if previous.invalid.get(id) != Some(errors) {
                tracing::error!(
                    script_id = id,
                    field = errors.paths().next().unwrap_or("script"),
                    errors = %errors,
                    "script skipped: its row in the database is invalid"
                );
            }
        }
        metrics::histogram!(crate::ops::telemetry::INDEX_REBUILD)
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!(crate::ops::telemetry::SCRIPTS_LOADED).set(snapshot.scripts.len() as f64);
        metrics::gauge!(crate::ops::telemetry::SCRIPTS_INVALID).set(snapshot.invalid.len() as f64);
        tracing::debug!(
            generation,
            scripts = snapshot.scripts.len(),
            invalid = snapshot.invalid.len(),
            "scripts reloaded"
        );
        self.inner.current.store(Arc::new(snapshot));
        // The old snapshot is freed here unless a reader still holds it (it then goes with
        // the reader's last reference): give its pages and the build's back to the system.
        drop(previous);
        release_free_memory();
        Ok(())
    }

    /// [`Live::reload_blocking`] on the blocking pool.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let live = self.clone();
        tokio::task::spawn_blocking(move || live.reload_blocking())
            .await
            .map_err(|e| StoreError::TaskFailed(format!("reload task: {e}")))?
    }

    /// Watches the database file for changes made by other programs until `shutdown`
    /// resolves; see the module documentation.
    pub fn spawn_watcher(
        &self,
        interval: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let live = self.clone();
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut last_error: Option<String> = None;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = ticker.tick() => {}
                }
                let l = live.clone();
                match tokio::task::spawn_blocking(move || poll_once(&l)).await {
                    Ok(Ok(())) => last_error = None,
                    Ok(Err(e)) => {
                        let msg = e.to_string();
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(error = %msg, "watching the database failed");
                        }
                        last_error = Some(msg);
                    }
                    Err(e) => tracing::error!(error = %e, "database watcher step panicked"),
                }
            }
        })
    }
}

/// Returns the allocator's free pages to the system. A rebuild frees a whole snapshot and
/// the build's transient data; glibc's malloc keeps such memory (split between its per-thread
/// arenas) resident until told otherwise, so without this the daemon's RSS after the first
/// rebuild stays near its peak for good. A no-op with other C libraries.
fn release_free_memory() {
    // SAFETY: `malloc_trim` (glibc) takes no pointer and only walks glibc's own arenas
    // under their locks; it is safe to call from any thread at any time.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The watcher's dedicated connection and what it saw last.
struct Watch {
    conn: Conn,
    data_version: i64,
}

/// The scripts version: bumped by triggers on every write to the tables the snapshot is
/// built from (migration 3), and by nothing else — outbox commits leave it alone.
fn data_version(conn: &rusqlite::Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT version FROM scripts_version WHERE id = 1", [], |r| r.get(0))?)
}

/// One watcher step: (re)open when needed, reload when the data or the file changed.
fn poll_once(live: &Live) -> Result<(), StoreError> {
    let mut watch = live.inner.watch.lock().unwrap_or_else(|p| p.into_inner());
    if watch.as_ref().is_some_and(|w| w.conn.is_stale()) {
        // Replaced: close now, so the store can switch to the new file (see `Conn`).
        *watch = None;
    }
    if watch.is_none() {
        // (Re)opened: reload unless the snapshot was built from this very file and version
        // (at start-up it was, moments ago; a replaced file has another epoch).
        let conn = live.inner.store.connect()?;
        let v = data_version(&conn)?;
        let source = Some((conn.epoch(), v));
        *watch = Some(Watch { conn, data_version: v });
        if live.load().source == source {
            return Ok(());
        }
        return live.reload_locked(&mut watch);
    }
    let changed = match watch.as_ref() {
        Some(w) => data_version(&w.conn)? != w.data_version,
        None => false,
    };
    if changed { live.reload_locked(&mut watch) } else { Ok(()) }
}

fn extra_of(extra: &serde_json::Map<String, Value>) -> Extra {
    let text = |k: &str| match extra.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Extra {
        bot_token: text("bot_token").map(Secret::new),
        chat_id: text("chat_id"),
        url: text("url"),
        secret: text("secret").map(Secret::new),
        cooldown_seconds: extra
            .get("cooldown_seconds")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
    }
}

/// Reads and validates every script into a snapshot; the timetables that equal one of
/// `previous` are shared with it.
fn build(
    store: &Store,
    timezone: Tz,
    generation: u64,
    previous: &ScheduleIndex,
) -> Result<Snapshot, StoreError> {
    let mut invalid = BTreeMap::new();
    let (lookups, parents, disabled, records, index, source) = store.read(|tx| {
        // The file cannot be switched while this read's connection is open.
        let source = (store.epoch(), data_version(tx)?);
        let lookups = Lookups::load(tx)?;
        let parents = users::parents(tx)?;
        let disabled = users::disabled_ids(tx)?;
        let ctx = lookups.context(timezone);
        // Sized once: growing by doubling would hold up to twice the records for a moment.
        let rows: i64 = tx.query_row("SELECT COUNT(*) FROM scripts", [], |r| r.get(0))?;
        let rows = usize::try_from(rows).unwrap_or(0);
        let mut records =
            ScriptsBuilder { records: Vec::with_capacity(rows), ids: Vec::with_capacity(rows * 3) };
        let mut index = IndexBuilder::with_capacity(rows);
        index.share_with(previous);
        // Shared catalog entries: one allocation per event and reaction, not per script;
        // likewise one empty `Extra` for every script without reaction data.
        let events: HashMap<i64, Arc<_>> =
            lookups.events.iter().map(|(id, e)| (*id, Arc::new(e.clone()))).collect();
        let reactions: HashMap<i64, Arc<_>> =
            lookups.reactions.iter().map(|(id, r)| (*id, Arc::new(r.clone()))).collect();
        let no_extra = Arc::new(Extra::default());
        scripts::for_each(tx, |row| {
            if !row.decode_errors.is_empty() {
                invalid.insert(row.id, row.decode_errors);
                return Ok(());
            }
            match validate(&row.body, &ctx) {
                Ok(v) => {
                    let (Some(event), Some(reaction)) =
                        (events.get(&v.input.event_id), reactions.get(&v.input.reaction_id))
                    else {
                        return Ok(()); // validate checked both exist
                    };
                    let rule = Rule {
                        script_id: row.id,
                        event_id: v.input.event_id,
                        cameras: v.input.cameras,
                        enabled: v.input.enabled,
                        timetable: v.timetable,
                    };
                    index.add(&rule);
                    let extra = extra_of(&v.input.extra);
                    let record = ScriptRecord {
                        id: row.id,
                        title: v.input.title,
                        enabled: v.input.enabled,
                        event: event.clone(),
                        reaction: reaction.clone(),
                        cameras: (0, 0),
                        users: (0, 0),
                        extra: if extra.is_empty() { no_extra.clone() } else { Arc::new(extra) },
                    };
                    records.push(record, rule.cameras.as_deref(), &v.input.users);
                }
                Err(errors) => {
                    invalid.insert(row.id, errors);
                }
            }
            Ok(())
        })?;
        Ok((lookups, parents, disabled, records, index, source))
    })?;
    Ok(Snapshot {
        index: index.finish(),
        scripts: records.finish(),
        invalid,
        parents,
        disabled,
        events: lookups.events,
        generation,
        source: Some(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, catalog: &(Arc<Event>, Arc<Reaction>)) -> ScriptRecord {
        ScriptRecord {
            id,
            title: format!("script {id}"),
            enabled: true,
            event: catalog.0.clone(),
            reaction: catalog.1.clone(),
            cameras: (0, 0),
            users: (0, 0),
            extra: Arc::new(Extra::default()),
        }
    }

    #[test]
    fn scripts_are_found_by_id_with_their_cameras_in_any_order() {
        let event = Event {
            id: 1,
            name: "e".into(),
            description: "E".into(),
            color: "#000".into(),
            analytic_type: "t".into(),
        };
        let reaction = Reaction {
            id: 2,
            name: "sound".into(),
            description: "S".into(),
            is_default: true,
            kind: crate::delivery::ReactionKind::Client,
        };
        let catalog = (Arc::new(event), Arc::new(reaction));
        let mut b = ScriptsBuilder::default();
        b.push(record(30, &catalog), Some(&[7, 8]), &[3]);
        b.push(record(10, &catalog), None, &[1, 2]);
        b.push(record(20, &catalog), Some(&[9]), &[]);
        b.push(record(10, &catalog), Some(&[1]), &[5]);
        let scripts = b.finish();
        assert_eq!(scripts.len(), 3);
        assert_eq!(format!("{:?}", scripts.keys()), "[10, 20, 30]");
        assert_eq!(scripts[&20].title, "script 20");
        assert!(scripts.get(&15).is_none() && !scripts.contains_key(&40));
        assert_eq!(scripts.cameras(&30), Some(Some(&[7, 8][..])));
        assert_eq!(scripts.cameras(&20), Some(Some(&[9][..])));
        assert_eq!(scripts.cameras(&10), Some(None), "the first record of a repeated id");
        assert_eq!(scripts.cameras(&11), None);
        assert_eq!(scripts.users(&scripts[&10]), [1, 2]);
        assert_eq!(scripts.users(&scripts[&20]), [0i64; 0]);
        assert_eq!(scripts.users(&scripts[&30]), [3]);
        assert_eq!(scripts.iter().map(|r| r.id).collect::<Vec<_>>(), [10, 20, 30]);
    }
}
