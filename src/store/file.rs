//! # A database file replaced under the daemon
//!
//! An operator may restore a backup by moving another file over the database
//! (`mv restored.db scriptd.db`) while scriptd runs. Connections already open keep the old
//! file (its inode); new ones would open the new file. Both at once is unsafe in WAL mode:
//! the `-wal` and `-shm` files next to the path still belong to the old database, and a
//! connection to the new file would read (and checkpoint) the old file's pages into it.
//!
//! So every connection of a [`Store`](super::Store) handle (and its clones) is counted
//! here, with the device and inode of the file it was opened on. Once any holder sees a
//! different file at the path ([`Conn::is_stale`], one `stat` per call), the handle
//! *drains*: [`Store::connect`](super::Store::connect) refuses new connections with
//! [`StoreError::Replaced`] (temporary, like [`StoreError::Busy`]), every long-lived holder
//! closes its connection at its next step, and when the last one is closed (SQLite then
//! checkpoints the old WAL into the old file and removes the `-wal` and `-shm` files) the
//! next connection opens the new file, migrates it to the current schema and, for the
//! daemon's handle, seeds the default catalogs. Each switch bumps an *epoch* that
//! connections carry, so rows read from the old file are never updated by rowid in the
//! new one.
//!
//! A file removed without a replacement is not "replaced": the open connections keep the
//! old file until a new one appears (nothing is dropped), and new connections fail with
//! the error of opening a missing file.

use std::ops::{Deref, DerefMut};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

use super::StoreError;

/// How often a long-lived holder whose work runs continuously (the dispatcher's link, the
/// intake's inline write) looks at the path for a replacement with a `stat`, instead of
/// before every use.
pub const FILE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Device and inode of a file.
pub(crate) type Identity = (u64, u64);

/// The file at `path` now, or `None` when there is none (or it cannot be read).
pub(crate) fn identity_of(path: &Path) -> Option<Identity> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The bookkeeping shared by every clone of one store handle.
#[derive(Debug, Default)]
pub(crate) struct FileGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// The file the open connections are on (`None` before the first connection).
    identity: Option<Identity>,
    /// Bumped at every switch to a new file.
    epoch: u64,
    /// Connections open on the current file.
    open: usize,
    /// Another file is at the path: no new connection until `open` is 0.
    draining: bool,
    /// The next connection is the first on a new file: migrate (and seed) it.
    fresh: bool,
    /// That connection is preparing the new file: others wait.
    preparing: bool,
    /// The `-wal` file seen next to the current file while connections to it were open.
    wal: Option<Identity>,
}

/// What [`FileGate::reserve`] grants: a counted slot on a file, and whether the connection
/// must prepare a newly switched-to file.
pub(crate) struct Reservation {
    pub(crate) lease: Lease,
    /// The file the connection must turn out to be on (`None`: nothing at the path).
    pub(crate) expected: Option<Identity>,
    pub(crate) prepare: bool,
}

impl FileGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a connection about to be opened on the file now at `path`; refuses while
    /// connections to a replaced file are open.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        path: &Path,
        now: Option<Identity>,
    ) -> Result<Reservation, StoreError> {
        let mut s = self.lock();
        let Some(now) = now else {
            // Nothing at the path: let SQLite say so (or create it, for `Store::open`).
            return Ok(Reservation {
                lease: Lease { gate: self.clone(), epoch: s.epoch, counted: false },
                expected: None,
                prepare: false,
            });
        };
        match s.identity {
            None => s.identity = Some(now),
            Some(known) if known != now => {
                if !s.draining {
                    s.draining = true;
                    announce(path, s.open);
                }
                if s.open > 0 {
                    return Err(StoreError::Replaced);
                }
                remove_old_wal(path, s.wal.take());
                s.identity = Some(now);
                s.epoch += 1;
                s.draining = false;
                s.fresh = true;
                tracing::info!(path = %path.display(), "opening the new database file");
            }
            Some(_) => {}
        }
        if s.preparing {
            return Err(StoreError::Replaced);
        }
        s.open += 1;
        let prepare = std::mem::take(&mut s.fresh);
        s.preparing = prepare;
        Ok(Reservation {
            lease: Lease { gate: self.clone(), epoch: s.epoch, counted: true },
            expected: Some(now),
            prepare,
        })
    }

    /// The current file's epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Notes the `-wal` file of the current file (`epoch`), as seen with a connection open.
    pub(crate) fn note_wal(&self, path: &Path, epoch: u64) {
        let wal = identity_of(&sidecar(path, "-wal"));
        let mut s = self.lock();
        if s.epoch == epoch && !s.draining && wal.is_some() {
            s.wal = wal;
        }
    }

    /// The connection that prepares a newly switched-to file is done: `ok` lets the
    /// others in, a failure leaves the preparing to the next connection.
    pub(crate) fn prepared(&self, ok: bool) {
        let mut s = self.lock();
        s.preparing = false;
        s.fresh = !ok;
    }

    /// Whether a holder already saw that connections of `epoch` are on a replaced file
    /// (no `stat`).
    fn known_stale(&self, epoch: u64) -> bool {
        self.lock().left(epoch)
    }

    /// Whether the file at `path` is no longer the one connections of `epoch` are on
    /// (and starts draining if so).
    fn stale(&self, path: &Path, epoch: u64) -> bool {
        let now = identity_of(path);
        let mut s = self.lock();
        if s.left(epoch) {
            return true;
        }
        match (s.identity, now) {
            (Some(known), Some(now)) if known != now => {
                s.draining = true;
                announce(path, s.open);
                true
            }
            _ => false,
        }
    }
}

impl GateState {
    /// Whether connections of `epoch` are known to be on a file that was left: another
    /// file is open now, or a replacement was seen and the connections drain.
    fn left(&self, epoch: u64) -> bool {
        self.epoch != epoch || self.draining
    }
}

/// `path` with `suffix` appended (`scriptd.db-wal`).
fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Removes the `-wal` and `-shm` files the replaced file left at the path: SQLite does not
/// remove them when the last connection to a moved file closes, and the new file would
/// read the old file's pages from them. A `-wal` file that is not the one seen with the
/// old file (the operator put the new file's own log there) is kept.
fn remove_old_wal(path: &Path, old: Option<Identity>) {
    let wal = sidecar(path, "-wal");
    let Some(old) = old else { return };
    if identity_of(&wal) != Some(old) {
        return;
    }
    for f in [wal, sidecar(path, "-shm")] {
        match std::fs::remove_file(&f) {
            Ok(()) => {
                tracing::info!(file = %f.display(), "removed the replaced database's log file")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(
                file = %f.display(),
                error = %e,
                "cannot remove the replaced database's log file; the new file may read stale pages"
            ),
        }
    }
}

fn announce(path: &Path, open: usize) {
    tracing::warn!(
        path = %path.display(),
        open_connections = open,
        "the database file was replaced; closing the connections to the old file, then \
         opening the new one"
    );
}

/// A counted place on one file; released when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    gate: Arc<FileGate>,
    epoch: u64,
    counted: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut s = self.gate.lock();
        if s.epoch == self.epoch {
            s.open = s.open.saturating_sub(1);
        }
    }
}

/// A connection of a [`Store`](super::Store): a [`Connection`] (through `Deref`) that
/// knows which file it is on. Dropping it closes the SQLite connection first, then frees
/// its place (see the module documentation).
#[derive(Debug)]
pub struct Conn {
    // Field order matters: the connection closes before the lease is released.
    conn: Connection,
    lease: Lease,
    path: std::path::PathBuf,
}

impl Conn {
    pub(crate) fn new(conn: Connection, lease: Lease, path: &Path) -> Conn {
        Conn { conn, lease, path: path.to_path_buf() }
    }

    /// Begins an `IMMEDIATE` transaction and holds the file's write lock until the returned
    /// guard is dropped (rolled back): another writer then finds the database busy, as
    /// when an operator's `sqlite3` session writes. For tests.
    pub fn hold_write_lock(&mut self) -> Result<impl Drop + '_, StoreError> {
        Ok(self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// Which file generation of the store this connection is on: it changes when the file
    /// is replaced. Rowids are only meaningful within one epoch.
    pub fn epoch(&self) -> u64 {
        self.lease.epoch
    }

    /// Whether the database file was replaced since this connection was opened: the holder
    /// should drop it (and open a new one) before its next use. One `stat` call.
    pub fn is_stale(&self) -> bool {
        self.staleness().is_stale()
    }

    /// [`Conn::is_stale`] without borrowing the connection (e.g. while a transaction holds
    /// it).
    pub fn staleness(&self) -> Staleness {
        Staleness {
            gate: self.lease.counted.then(|| self.lease.gate.clone()),
            path: self.path.clone(),
            epoch: self.lease.epoch,
        }
    }
}

/// Tells whether a [`Conn`]'s file was replaced; see [`Conn::staleness`].
#[derive(Debug, Clone)]
pub struct Staleness {
    gate: Option<Arc<FileGate>>,
    path: std::path::PathBuf,
    epoch: u64,
}

impl Staleness {
    /// See [`Conn::is_stale`].
    pub fn is_stale(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.stale(&self.path, self.epoch))
    }

    /// Whether another holder already found the file replaced ([`Conn::is_stale`] returned
    /// true for any connection of the store): no `stat`, so it misses a replacement nobody
    /// has looked for yet.
    pub fn is_known_stale(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.known_stale(self.epoch))
    }
}

impl Deref for Conn {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}
