//! [`Db`]: the store the API, explain and the commands use, SQLite or PostgreSQL, with one
//! way to run a transaction on either (see [`super::sql`]).

use super::postgres::PgStore;
use super::sql::{Dialect, Sql};
use super::{Store, StoreError};

/// The database of users, tokens, scripts, calendars and snoozes; cheap to clone.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(Store),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

impl Db {
    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `f` in one read transaction. Blocking: from `spawn_blocking` or a command.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self {
            Db::Sqlite(s) => s.read(|tx| f(tx)),
            Db::Postgres(p) => p.read(f),
        }
    }

    /// Runs `f` in one write transaction: on SQLite begun `IMMEDIATE`, on PostgreSQL
    /// holding the write lock, so a check and the write it guards are not separated by
    /// another writer. An error from `f` rolls it back.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self {
            Db::Sqlite(s) => s.write(|tx| f(tx)),
            Db::Postgres(p) => p.write(f),
        }
    }

    /// The SQLite store, when this is one.
    pub fn sqlite(&self) -> Option<&Store> {
        match self {
            Db::Sqlite(s) => Some(s),
            Db::Postgres(_) => None,
        }
    }
}

impl From<Store> for Db {
    fn from(s: Store) -> Db {
        Db::Sqlite(s)
    }
}

impl From<PgStore> for Db {
    fn from(p: PgStore) -> Db {
        Db::Postgres(p)
    }
}
