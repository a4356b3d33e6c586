//! # The live snapshot
//!
//! Everything the pipeline needs to match and deliver an occurrence, built from the
//! database and swapped in atomically ([`arc_swap`]): readers call [`Live::load`] and never
//! wait for a writer. The snapshot is rebuilt
//! - after every API write, before the API answers, so the next occurrence sees it;
//! - by the watcher ([`Live::spawn_watcher`]) when another program changes the scripts: it
//!   looks at the database every [`POLL_INTERVAL`] on a dedicated connection, and notices a
//!   replaced file (new device/inode at the path) and reopens it. A look is a `stat` and
//!   `PRAGMA data_version` (which moves only when another connection committed), run on a
//!   thread of its own that sleeps in between: when nothing was written, an idle daemon
//!   wakes once per look and touches no page. Only after a commit does it read
//!   the `scripts_version` counter (bumped by triggers on scripts, their users, users,
//!   permissions, the catalogs and the holiday calendars — not by the outbox's constant commits), and only a moved
//!   counter rebuilds, on the blocking pool. What the watcher saw ([`Seen`]: a commit by
//!   another connection, a replaced file) is passed on, so the rest of the daemon needs no
//!   poll of its own for it (see `crate::app`).
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
//!
//! ## Files
//!
//! [`snapshot`]: what readers see (script records, their users and cameras, the index);
//! `build`: a snapshot from the database; `postgres`: the snapshot and its watcher on
//! PostgreSQL; this file: the [`Live`] handle and the watcher.

mod build;
mod postgres;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
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
use crate::store::sql::Sql;
use crate::store::users::descendants;
use crate::store::{Conn, Store, StoreError, scripts, users};

use snapshot::ScriptsBuilder;
pub use snapshot::{Extra, Keys, ScriptRecord, Scripts, Snapshot};

/// How often the watcher looks for outside changes. A change written by another program
/// takes effect within one look and a rebuild (CONTRACT §6: within 2 seconds).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What one look of the watcher saw (see [`Live::spawn_watcher_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Another connection (this process's or another program's) committed since the last
    /// look; a moved scripts version was rebuilt already.
    Written,
    /// The database file was replaced: every connection to the old one must be let go.
    Replaced,
}

/// Shared handle on the current snapshot; cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    /// The SQLite store; `None` on PostgreSQL.
    store: Option<Store>,
    /// The PostgreSQL store (see `postgres`); `None` on SQLite.
    pg: Option<crate::store::postgres::PgStore>,
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
                store: Some(store),
                pg: None,
                timezone,
                current: ArcSwap::from_pointee(Snapshot::empty()),
                watch: Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        };
        live.reload_blocking()?;
        Ok(live)
    }

    /// The snapshot of `db`, loaded now. Blocking: from a command or `spawn_blocking`,
    /// never from async code.
    pub fn load_from(db: &crate::store::Db, timezone: Tz) -> Result<Live, StoreError> {
        match db {
            crate::store::Db::Sqlite(store) => Live::new(store.clone(), timezone),
            crate::store::Db::Postgres(pg) => pg.block_on(Live::new_postgres(pg.clone(), timezone)),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// The SQLite store this snapshot is built from (`None` on PostgreSQL).
    pub fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
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
        let Some(store) = &self.inner.store else {
            return Err(StoreError::TaskFailed(
                "a PostgreSQL snapshot reloads with Live::reload".into(),
            ));
        };
        let previous = self.load();
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let started = std::time::Instant::now();
        let built = build::build(store, self.inner.timezone, generation, &previous.index);
        let snapshot = match built {
            Ok(s) => s,
            Err(e) => {
                // Forget the noted version: the watcher reopens and rebuilds next time.
                *watch = None;
                return Err(e);
            }
        };
        self.install(previous, snapshot, started);
        Ok(())
    }

    /// Swaps `snapshot` in for `previous`: logs the rows that became invalid, records the
    /// rebuild's metrics, and gives the freed memory back.
    fn install(&self, previous: Arc<Snapshot>, snapshot: Snapshot, started: std::time::Instant) {
        let generation = snapshot.generation;
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
    }

    /// [`Live::reload_blocking`] on the blocking pool; on PostgreSQL a read of the rows
    /// and a build on the blocking pool.
    pub async fn reload(&self) -> Result<(), StoreError> {
        if let Some(pg) = &self.inner.pg {
            return postgres::reload(self, pg).await;
        }
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
        self.spawn_watcher_with(interval, |_| {}, shutdown)
    }

    /// [`Live::spawn_watcher`], calling `seen` after every look that saw a commit by another
    /// connection or a replaced file.
    pub fn spawn_watcher_with(
        &self,
        interval: Duration,
        seen: impl Fn(Seen) + Send + 'static,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        if let Some(pg) = &self.inner.pg {
            return postgres::spawn_watcher(self.clone(), pg.clone(), interval, shutdown);
        }
        let live = self.clone();
        let mut looks = Looks::start(&live, interval);
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut last_error: Option<String> = None;
            loop {
                let quick = tokio::select! {
                    () = &mut shutdown => break,
                    quick = looks.next(&live) => quick,
                };
                match quick {
                    Quick::Unchanged | Quick::Locked => continue,
                    Quick::Written => {
                        last_error = None;
                        seen(Seen::Written);
                        continue;
                    }
                    Quick::Blocking => {}
                }
                let l = live.clone();
                match tokio::task::spawn_blocking(move || poll_once(&l)).await {
                    Ok(Ok(saw)) => {
                        last_error = None;
                        if let Some(saw) = saw {
                            seen(saw);
                        }
                    }
                    Ok(Err(e)) => {
                        if matches!(e, StoreError::Replaced) {
                            // Someone still holds the old file: say it again until all let go.
                            seen(Seen::Replaced);
                        }
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
    /// The scripts version the snapshot was built at.
    data_version: i64,
    /// `PRAGMA data_version` at the last look: it moves when another connection commits.
    commits: i64,
}

/// The scripts version: bumped by triggers on every write to the tables the snapshot is
/// built from (migrations 3 and 9), and by nothing else — outbox commits leave it alone.
fn data_version(conn: &dyn Sql) -> Result<i64, StoreError> {
    conn.query_value("SELECT version FROM scripts_version WHERE id = 1", &[])
}

/// SQLite's own counter of commits by other connections (no page is read).
fn commits(conn: &dyn Sql) -> Result<i64, StoreError> {
    conn.query_value("PRAGMA data_version", &[])
}

/// Where the watcher's looks run.
///
/// On a thread of their own, which sleeps between looks: tokio's timer wheel wakes a
/// runtime thread twice for a deadline a second away (once when the deadline's 64 ms slot
/// comes up, once at the deadline), which made the looks half of an idle daemon's
/// wake-ups. Only a look that saw something wakes the watcher's task. Should the thread
/// not start, the task looks on a timer of its own.
enum Looks {
    /// The looks' thread: what it saw, and the channel whose closing (the task ended)
    /// stops it.
    Thread { seen: tokio::sync::mpsc::Receiver<Quick>, _stop: std::sync::mpsc::Sender<()> },
    /// The task looks itself.
    Ticker(tokio::time::Interval),
}

impl Looks {
    fn start(live: &Live, interval: Duration) -> Looks {
        let (seen_tx, seen) = tokio::sync::mpsc::channel(1);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let looker = live.clone();
        let started = std::thread::Builder::new().name("scriptd-watcher".into()).spawn(move || {
            loop {
                let quick = look_quickly(&looker);
                // Waits while the task handles the previous look; fails once it ended.
                if !matches!(quick, Quick::Unchanged | Quick::Locked)
                    && seen_tx.blocking_send(quick).is_err()
                {
                    return;
                }
                // The sleep, cut short only when the task ended.
                if !matches!(
                    stopped.recv_timeout(interval),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ) {
                    return;
                }
            }
        });
        match started {
            Ok(_) => Looks::Thread { seen, _stop: stop },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the watcher's thread; it looks on a runtime timer");
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Looks::Ticker(ticker)
            }
        }
    }

    /// The next look that saw something (or any look, on the ticker).
    async fn next(&mut self, live: &Live) -> Quick {
        match self {
            Looks::Thread { seen, .. } => match seen.recv().await {
                Some(quick) => quick,
                // The thread ended (it does only when the task is gone): wait for shutdown.
                None => std::future::pending().await,
            },
            Looks::Ticker(ticker) => {
                ticker.tick().await;
                look_quickly(live)
            }
        }
    }
}

/// What a look of the watcher found.
enum Quick {
    /// No commit by another connection since the last look.
    Unchanged,
    /// Commits, but the scripts version did not move: nothing to rebuild.
    Written,
    /// A rebuild holds the watcher's lock: the next look sees the rest.
    Locked,
    /// (Re)open, rebuild, a replaced file or an error: the step goes to the blocking pool.
    Blocking,
}

/// The cheap part of a watcher step, on the looks' thread ([`Looks`]): a `stat` of the path and, with
/// no wait for any lock (busy timeout 0 for these reads; in WAL mode a reader waits only
/// while another connection recovers the log), `PRAGMA data_version` and, after a commit,
/// the scripts version. Anything more is left to [`poll_once`] on the blocking pool.
fn look_quickly(live: &Live) -> Quick {
    let mut watch = match live.inner.watch.try_lock() {
        Ok(w) => w,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return Quick::Locked,
    };
    let Some(w) = watch.as_mut() else { return Quick::Blocking };
    // A watch exists only on SQLite, whose store is set.
    let Some(wait) = live.inner.store.as_ref().map(Store::busy_timeout) else {
        return Quick::Unchanged;
    };
    if w.conn.is_stale() || w.conn.busy_timeout(Duration::ZERO).is_err() {
        return Quick::Blocking;
    }
    let quick = match commits(&w.conn) {
        Ok(c) if c == w.commits => Quick::Unchanged,
        Ok(c) => match data_version(&w.conn) {
            Ok(v) if v == w.data_version => {
                w.commits = c;
                Quick::Written
            }
            _ => Quick::Blocking,
        },
        Err(_) => Quick::Blocking,
    };
    if w.conn.busy_timeout(wait).is_err() {
        // Not restored: the blocking step reopens the connection.
        *watch = None;
        return Quick::Blocking;
    }
    quick
}

/// One watcher step: (re)open when needed, reload when the data or the file changed.
/// Returns what it saw for the watcher's callback.
fn poll_once(live: &Live) -> Result<Option<Seen>, StoreError> {
    let mut watch = live.inner.watch.lock().unwrap_or_else(|p| p.into_inner());
    if watch.as_ref().is_some_and(|w| w.conn.is_stale()) {
        // Replaced: close now, so the store can switch to the new file (see `Conn`), and
        // say so at once: the new file opens only once every connection to the old one is
        // closed. The next look opens it.
        *watch = None;
        return Ok(Some(Seen::Replaced));
    }
    if watch.is_none() {
        // (Re)opened: reload unless the snapshot was built from this very file and version
        // (at start-up it was, moments ago; a replaced file has another epoch).
        let Some(store) = &live.inner.store else { return Ok(None) };
        let conn = store.connect()?;
        let v = data_version(&conn)?;
        let c = commits(&conn)?;
        let source = Some((conn.epoch(), v));
        *watch = Some(Watch { conn, data_version: v, commits: c });
        if live.load().source == source {
            return Ok(None);
        }
        return live.reload_locked(&mut watch).map(|()| Some(Seen::Written));
    }
    let Some(w) = watch.as_mut() else { return Ok(None) };
    let c = commits(&w.conn)?;
    if c == w.commits {
        return Ok(None);
    }
    w.commits = c;
    if data_version(&w.conn)? != w.data_version {
        live.reload_locked(&mut watch)?;
    }
    Ok(Some(Seen::Written))
}

#[cfg(test)]
mod tests;
