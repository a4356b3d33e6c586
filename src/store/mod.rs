//! # The SQLite store
//!
//! One file holds the event and reaction catalogs, users and their API tokens, scripts and
//! the delivery outbox. [`Store`] opens short-lived connections configured the same way
//! every time: WAL journal, a busy timeout, foreign keys on. Every write runs in a
//! transaction begun `IMMEDIATE`, so a writer takes the lock up front instead of failing
//! half-way; when SQLite stays busy past the timeout the caller gets [`StoreError::Busy`]
//! (the API answers 503 with `Retry-After`).
//!
//! Calls are blocking: async callers wrap them in `tokio::task::spawn_blocking`.
//!
//! Layout: [`migrations`] (the versioned schema), [`catalog`] (events, reactions and the
//! default set), [`users`], [`tokens`], [`scripts`], [`deliveries`], [`snoozes`]; `file` counts the
//! connections per file so a database file replaced under the daemon is switched to
//! safely (see [`Conn`]).

pub mod calendars;
pub mod catalog;
pub mod checkpoint;
pub mod db;
pub mod deliveries;
mod file;
pub mod migrations;
pub mod outbox;
pub mod postgres;
pub mod scripts;
pub mod snoozes;
pub mod sql;
pub mod sqlite;
pub mod tokens;
pub mod transfer;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::script::validation::FieldErrors;
pub use db::Db;
use file::FileGate;
pub use file::{Conn, FILE_CHECK_EVERY, Staleness};

/// The database the daemon's outbox is in: the dispatcher and the intake take one.
#[derive(Debug, Clone)]
pub enum OutboxDb {
    /// A SQLite file: the intake writes through its own connection and hands new rows over
    /// in memory; the dispatcher reads through one connection (see [`outbox`]).
    Sqlite(Store),
    /// PostgreSQL: every operation through [`OutboxBackend`](outbox::backend::OutboxBackend);
    /// claims lease their rows.
    Postgres(postgres::outbox::PgOutbox),
}

/// How long a connection waits for another writer before giving up with [`StoreError::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong in the store; variants say what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite stayed locked by another writer past the busy timeout: retry later.
    #[error("the database is busy; retry later")]
    Busy,
    /// The database was written by a newer scriptd.
    #[error(
        "database schema version {found} is newer than this scriptd supports ({supported}); \
         upgrade scriptd or restore a backup"
    )]
    TooNew {
        /// `user_version` found in the file.
        found: usize,
        /// The latest version this binary knows.
        supported: usize,
    },
    /// Applying a migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The input is not valid (import, users, tokens).
    #[error("invalid input: {0}")]
    Invalid(FieldErrors),
    /// A referenced row does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The database folder could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database file was replaced; the connections to the old file are being closed
    /// (see [`Conn::is_stale`]). Temporary: retry shortly.
    #[error(
        "the database file was replaced; waiting for the connections to the old file to \
         close before opening the new one"
    )]
    Replaced,
    /// A blocking database task did not complete (it panicked or was cancelled); the
    /// text says which task. Nothing about the file itself is known to be wrong.
    #[error("database task failed: {0}")]
    TaskFailed(String),
    /// PostgreSQL cannot be reached, or the connection broke (the server stopped, the
    /// network): temporary, retry later. The text names the endpoint, never the password.
    #[error("PostgreSQL at {endpoint}: {message}")]
    Unreachable {
        /// `user@host:port/dbname`.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// PostgreSQL refused a statement or failed otherwise; the text names the endpoint
    /// (`user@host:port/dbname`), never the password.
    #[error("PostgreSQL at {endpoint}: {message}")]
    Postgres {
        /// `user@host:port/dbname`.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// A stored row cannot be read as what it should be (a hand-edited row); the text says
    /// which column and what it holds.
    #[error("a stored row cannot be read: {0}")]
    Corrupt(String),
    /// Any other SQLite error.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
            _ => StoreError::Sqlite(e),
        }
    }
}

/// SQLite's `synchronous` setting (`database.synchronous`): when a commit waits for the
/// disk. The journal is always WAL.
///
/// | value | a commit is durable against | cost |
/// | --- | --- | --- |
/// | `normal` | the process crashing or being killed (`kill -9`), at any point | no fsync per commit; the WAL is synced at checkpoints |
/// | `full` | also power loss and an operating-system crash | one fsync per commit |
///
/// With `normal` a power loss or OS crash can undo the last commits before the next
/// checkpoint: deliveries written (and occurrences acknowledged to the broker) in that
/// window are gone, and outcomes recorded as sent can become pending again (repeats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`.
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Handle on the database file; cheap to clone, opens a connection per operation. Clones
/// share the bookkeeping that notices a replaced file (see [`Conn`]).
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    busy_timeout: Duration,
    synchronous: Synchronous,
    file: Arc<FileGate>,
    /// `wal_autocheckpoint` of every connection; `None`: SQLite's default (see
    /// [`checkpoint`]).
    autocheckpoint: Option<u32>,
    /// Seed the default catalogs into a file that replaces the database ([`Store::migrate`]).
    seed: bool,
}

impl Store {
    /// A store on `path`: creates the folder if missing, refuses a database from a newer
    /// scriptd, and applies pending migrations. The catalogs are not seeded (see
    /// [`Store::migrate`]).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let store = Store {
            path: path.to_path_buf(),
            busy_timeout: BUSY_TIMEOUT,
            synchronous: Synchronous::default(),
            file: Arc::new(FileGate::default()),
            autocheckpoint: None,
            seed: false,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        }
        let mut conn = store.connect_with(OpenFlags::SQLITE_OPEN_CREATE)?;
        migrations::to_latest(&mut conn)?;
        Ok(store)
    }

    /// `scriptd migrate`: [`Store::open`], then seeds the default catalogs (existing rows are
    /// kept, so operators' edits survive). Idempotent.
    pub fn migrate(path: &Path) -> Result<Store, StoreError> {
        let mut store = Store::open(path)?;
        store.write(|tx| catalog::seed_defaults(tx))?;
        store.seed = true;
        Ok(store)
    }

    /// Overrides the busy timeout (tests use a short one).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Store {
        self.busy_timeout = timeout;
        self
    }

    /// Sets `synchronous` for every connection opened from now on (`database.synchronous`).
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Store {
        self.synchronous = synchronous;
        self
    }

    /// For a process that runs a [`checkpoint::Checkpointer`]: connections opened from now
    /// on checkpoint inside a commit only past [`checkpoint::FALLBACK_PAGES`] of log.
    pub fn with_background_checkpoints(mut self) -> Store {
        self.autocheckpoint = Some(checkpoint::FALLBACK_PAGES);
        self
    }

    /// The generation of the database file this handle's connections are on: bumped each
    /// time a replaced file is switched to (see [`Conn::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.file.epoch()
    }

    /// How long a connection waits for another writer (`database.busy_timeout_ms`).
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// The `synchronous` setting of this handle's connections.
    pub fn synchronous(&self) -> Synchronous {
        self.synchronous
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection to the existing file: WAL, busy timeout, `synchronous`, foreign keys
    /// on. Only [`Store::open`] creates the file, so a database removed while the daemon
    /// runs is an error, not a silently empty new one. While connections to a replaced file
    /// are still open this is [`StoreError::Replaced`]; the first connection to the new
    /// file migrates it (see [`Conn`]).
    pub fn connect(&self) -> Result<Conn, StoreError> {
        self.connect_with(OpenFlags::empty())
    }

    fn connect_with(&self, extra: OpenFlags) -> Result<Conn, StoreError> {
        let reservation = self.file.reserve(&self.path, file::identity_of(&self.path))?;
        let prepare = reservation.prepare;
        let result = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra,
        )
        .map_err(StoreError::from)
        .and_then(|conn| self.configure(conn, reservation));
        if prepare {
            self.file.prepared(result.is_ok());
        }
        result
    }

    fn configure(
        &self,
        conn: Connection,
        reservation: file::Reservation,
    ) -> Result<Conn, StoreError> {
        // Nothing has been read yet: if the path moved meanwhile, this connection may be on
        // either file, and closing it now touches neither.
        if reservation.expected.is_some_and(|e| file::identity_of(&self.path) != Some(e)) {
            return Err(StoreError::Replaced);
        }
        let mut conn = Conn::new(conn, reservation.lease, &self.path);
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", self.synchronous.pragma())?;
        conn.pragma_update(None, "foreign_keys", true)?;
        if let Some(pages) = self.autocheckpoint {
            conn.pragma_update(None, "wal_autocheckpoint", pages)?;
        }
        if reservation.prepare {
            self.prepare_new_file(&mut conn)?;
        }
        self.file.note_wal(&self.path, conn.epoch());
        Ok(conn)
    }

    /// The first connection to a file that replaced the database: bring it to the current
    /// schema (and seed the catalogs, as `scriptd migrate` and `run` do).
    fn prepare_new_file(&self, conn: &mut Connection) -> Result<(), StoreError> {
        migrations::to_latest(conn)?;
        if self.seed {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            catalog::seed_defaults(&tx)?;
            tx.commit()?;
        }
        tracing::info!(path = %self.path.display(), "the new database file is ready");
        Ok(())
    }

    /// Runs `f` in a read transaction (a consistent view across several queries).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connect()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in a write transaction begun IMMEDIATE; commits when `f` returns `Ok`,
    /// rolls back otherwise.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connect()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Now as the API's timestamp text, `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A connection kept open between uses, for a component that talks to the database
/// often (the outbox writer, the WAL checkpointer, the intake's snooze checks): opened on
/// first use, let go once the database file was replaced (see [`Conn`]) or on
/// [`HeldConn::close`], and opened again on the next use.
#[derive(Debug)]
pub struct HeldConn {
    store: Store,
    conn: Option<Conn>,
}

impl HeldConn {
    /// Nothing is opened until [`HeldConn::get`].
    pub fn new(store: Store) -> HeldConn {
        HeldConn { store, conn: None }
    }

    /// [`HeldConn::new`] with the connection opened now.
    pub fn open(store: Store) -> Result<HeldConn, StoreError> {
        let conn = store.connect()?;
        Ok(HeldConn { store, conn: Some(conn) })
    }

    /// The held connection, or a new one; a connection to a replaced file is let go first.
    pub fn get(&mut self) -> Result<&mut Conn, StoreError> {
        self.release_replaced_file();
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.store.connect()?,
        };
        Ok(self.conn.insert(conn))
    }

    /// The held connection if one is open (and not to a replaced file); never opens one.
    pub fn get_open(&mut self) -> Option<&mut Conn> {
        self.release_replaced_file();
        self.conn.as_mut()
    }

    /// The held connection if one is open, without looking whether the file was replaced
    /// (a `stat`): for a caller that looks right before its commit, as
    /// [`OutboxWriter`](outbox::OutboxWriter) does under the hand-over's lock.
    pub fn get_open_unchecked(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    /// The store the connection is opened from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Closes the connection if the database file was replaced.
    pub fn release_replaced_file(&mut self) {
        if self.conn.as_ref().is_some_and(Conn::is_stale) {
            self.conn = None;
        }
    }

    /// Closes the connection (e.g. after an error, so that it is not reused).
    pub fn close(&mut self) {
        self.conn = None;
    }
}

/// Now in unix milliseconds (the outbox's clock).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
