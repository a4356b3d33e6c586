//! The versioned schema: one entry per migration, applied in order by `rusqlite_migration`.
//!
//! The schema version lives in SQLite's `user_version`. A database whose version is higher
//! than the number of migrations this binary knows was written by a newer scriptd: it is
//! refused with [`StoreError::TooNew`] rather than half-understood.

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::StoreError;

/// Migration 1: catalogs, users, tokens, scripts and the delivery outbox.
const V1: &str = r#"
CREATE TABLE events (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL,
  color TEXT NOT NULL,
  analytic_type TEXT NOT NULL
);
CREATE TABLE reactions (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL,
  is_default INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE permissions (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  display_name TEXT NOT NULL
);
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  login TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  parent_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
  online_request_interval INTEGER NOT NULL DEFAULT 100,
  access_token_id TEXT,
  can_update_password INTEGER NOT NULL DEFAULT 1,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now')),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now'))
);
CREATE TABLE user_permissions (
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  permission_id INTEGER NOT NULL REFERENCES permissions(id) ON DELETE CASCADE,
  PRIMARY KEY (user_id, permission_id)
);
CREATE TABLE api_tokens (
  id INTEGER PRIMARY KEY,
  public_id TEXT NOT NULL UNIQUE,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  token_sha256 BLOB NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now'))
);
CREATE TABLE scripts (
  id INTEGER PRIMARY KEY,
  title TEXT NOT NULL,
  event_id INTEGER NOT NULL REFERENCES events(id),
  reaction_id INTEGER NOT NULL REFERENCES reactions(id),
  status TEXT NOT NULL DEFAULT 'active',
  cameras TEXT,
  timetable TEXT NOT NULL,
  extra TEXT NOT NULL DEFAULT '{}',
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now')),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now'))
);
CREATE TABLE script_users (
  script_id INTEGER NOT NULL REFERENCES scripts(id) ON DELETE CASCADE,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  position INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (script_id, user_id)
);
CREATE INDEX script_users_by_user ON script_users(user_id);
CREATE TABLE deliveries (
  id TEXT PRIMARY KEY,
  occurrence_id TEXT NOT NULL,
  script_id INTEGER NOT NULL,
  reaction TEXT NOT NULL,
  recipient TEXT NOT NULL,
  lane TEXT NOT NULL,
  payload TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending','sent','failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_error TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX deliveries_pending ON deliveries(next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_script ON deliveries(script_id, created_at);
"#;

/// Migration 2: the outbox stores how to deliver (`target`, JSON, see `crate::outbox::Target`),
/// finds a lane's head by index, and prunes finished rows by index.
const V2: &str = r#"
ALTER TABLE deliveries ADD COLUMN target TEXT;
CREATE INDEX deliveries_pending_lane ON deliveries(lane) WHERE state = 'pending';
CREATE INDEX deliveries_finished ON deliveries(updated_at) WHERE state <> 'pending';
"#;

/// Version 3: a counter that only writes to what the script snapshot is built from bump
/// (scripts, their users, users, permissions, the catalogs), through triggers, so the
/// watcher notices an operator's edit in the `sqlite3` shell without rebuilding for every
/// outbox commit (`PRAGMA data_version` changes on any other connection's commit).
const V3: &str = r#"
CREATE TABLE scripts_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT INTO scripts_version (id, version) VALUES (1, 0);
CREATE TRIGGER scripts_version_events_insert AFTER INSERT ON events
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_events_update AFTER UPDATE ON events
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_events_delete AFTER DELETE ON events
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_reactions_insert AFTER INSERT ON reactions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_reactions_update AFTER UPDATE ON reactions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_reactions_delete AFTER DELETE ON reactions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_permissions_insert AFTER INSERT ON permissions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_permissions_update AFTER UPDATE ON permissions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_permissions_delete AFTER DELETE ON permissions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_users_insert AFTER INSERT ON users
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_users_update AFTER UPDATE ON users
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_users_delete AFTER DELETE ON users
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_user_permissions_insert AFTER INSERT ON user_permissions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_user_permissions_update AFTER UPDATE ON user_permissions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_user_permissions_delete AFTER DELETE ON user_permissions
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_scripts_insert AFTER INSERT ON scripts
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_scripts_update AFTER UPDATE ON scripts
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_scripts_delete AFTER DELETE ON scripts
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_script_users_insert AFTER INSERT ON script_users
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_script_users_update AFTER UPDATE ON script_users
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_script_users_delete AFTER DELETE ON script_users
BEGIN UPDATE scripts_version SET version = version + 1; END;
"#;

/// Every migration, oldest first. Append only; never edit a released entry.
/// Migration 4 (flood control): the outbox's states `expired` and `coalesced` (SQLite
/// cannot change a CHECK, so the table is rebuilt with the same columns, rowids and
/// indexes); the cooldown state, one row per script and camera holding the `occurred_at`
/// (unix ms) and id of the last occurrence that fired, written in the intake's outbox
/// transaction; `coalesced_into`, the summary's delivery id of a `coalesced` row; and an
/// index for the expiry sweep over pending rows.
const V4: &str = r#"
CREATE TABLE deliveries_v4 (
  id TEXT PRIMARY KEY,
  occurrence_id TEXT NOT NULL,
  script_id INTEGER NOT NULL,
  reaction TEXT NOT NULL,
  recipient TEXT NOT NULL,
  lane TEXT NOT NULL,
  payload TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending','sent','failed','expired','coalesced')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_error TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  target TEXT,
  coalesced_into TEXT
);
INSERT INTO deliveries_v4 (rowid, id, occurrence_id, script_id, reaction, recipient, lane,
    payload, state, attempts, next_attempt_at, last_error, created_at, updated_at, target)
  SELECT rowid, id, occurrence_id, script_id, reaction, recipient, lane, payload, state,
    attempts, next_attempt_at, last_error, created_at, updated_at, target FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v4 RENAME TO deliveries;
CREATE INDEX deliveries_pending ON deliveries(next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_script ON deliveries(script_id, created_at);
CREATE INDEX deliveries_pending_lane ON deliveries(lane) WHERE state = 'pending';
CREATE INDEX deliveries_finished ON deliveries(updated_at) WHERE state <> 'pending';
CREATE TABLE cooldowns (
  script_id INTEGER NOT NULL,
  camera TEXT NOT NULL,
  fired_at INTEGER NOT NULL,
  occurrence_id TEXT NOT NULL,
  PRIMARY KEY (script_id, camera)
) WITHOUT ROWID;
CREATE INDEX deliveries_pending_age ON deliveries(created_at) WHERE state = 'pending';
"#;

const MIGRATIONS: &[M<'static>] = &[M::up(V1), M::up(V2), M::up(V3), M::up(V4)];

/// The schema version this binary writes and understands.
pub fn latest_version() -> usize {
    MIGRATIONS.len()
}

/// The version recorded in the database (`PRAGMA user_version`).
pub fn current_version(conn: &Connection) -> Result<usize, StoreError> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    usize::try_from(v).map_err(|_| StoreError::Migration(format!("invalid user_version {v}")))
}

/// Refuses a database written by a newer scriptd.
pub fn check_not_newer(conn: &Connection) -> Result<usize, StoreError> {
    let found = current_version(conn)?;
    if found > latest_version() {
        return Err(StoreError::TooNew { found, supported: latest_version() });
    }
    Ok(found)
}

/// Applies every pending migration; a no-op on an up-to-date database.
pub fn to_latest(conn: &mut Connection) -> Result<(), StoreError> {
    check_not_newer(conn)?;
    Migrations::from_slice(MIGRATIONS)
        .to_latest(conn)
        .map_err(|e| StoreError::Migration(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(Migrations::from_slice(MIGRATIONS).validate().is_ok());
    }
}
