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

/// Migration 2: the outbox stores how to deliver (`target`, JSON, see `crate::store::outbox::Target`),
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

/// Version 4: accounts. Scripts get an owner (existing rows: the root of the tree of their
/// first listed user, following `parent_id` at most 64 levels so a hand-made cycle ends);
/// users can be disabled; tokens can expire, be revoked, and remember when they were last
/// used. Users without any permission get `scripts.view` and `scripts.manage`, so an
/// upgrade locks nobody out now that permissions are enforced. A deleted script leaves its
/// owner in `deleted_scripts`, so its deliveries stay visible to that account only.
const V4: &str = r#"
ALTER TABLE scripts ADD COLUMN owner_id INTEGER;
CREATE INDEX scripts_by_owner ON scripts(owner_id, id);
UPDATE scripts SET owner_id = (
  WITH RECURSIVE chain(id, parent_id, depth) AS (
    SELECT u.id, u.parent_id, 0 FROM users u
     WHERE u.id = (SELECT su.user_id FROM script_users su WHERE su.script_id = scripts.id
                   ORDER BY su.position, su.user_id LIMIT 1)
    UNION ALL
    SELECT u.id, u.parent_id, c.depth + 1 FROM users u JOIN chain c ON u.id = c.parent_id
     WHERE c.depth < 64)
  SELECT id FROM chain ORDER BY depth DESC LIMIT 1);
CREATE TABLE deleted_scripts (
  id INTEGER PRIMARY KEY,
  owner_id INTEGER,
  deleted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now'))
);
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;
ALTER TABLE api_tokens ADD COLUMN revoked_at TEXT;
ALTER TABLE api_tokens ADD COLUMN last_used_at TEXT;
CREATE INDEX api_tokens_by_user ON api_tokens(user_id);
INSERT OR IGNORE INTO permissions (id, name, display_name) VALUES
  (240, 'scripts.manage', 'Manage events and reactions'),
  (241, 'scripts.view', 'View events and reactions');
INSERT OR IGNORE INTO user_permissions (user_id, permission_id)
  SELECT u.id, p.id FROM users u JOIN permissions p ON p.name IN ('scripts.view', 'scripts.manage')
   WHERE NOT EXISTS (SELECT 1 FROM user_permissions up WHERE up.user_id = u.id);
"#;

/// Every migration, oldest first. Append only; never edit a released entry.
/// Migration 5 (flood control): the outbox's states `expired` and `coalesced` (SQLite
/// cannot change a CHECK, so the table is rebuilt with the same columns, rowids and
/// indexes); the cooldown state, one row per script and camera holding the `occurred_at`
/// (unix ms) and id of the last occurrence that fired, written in the intake's outbox
/// transaction; `coalesced_into`, the summary's delivery id of a `coalesced` row; and an
/// index for the expiry sweep over pending rows.
const V5: &str = r#"
CREATE TABLE deliveries_v5 (
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
INSERT INTO deliveries_v5 (rowid, id, occurrence_id, script_id, reaction, recipient, lane,
    payload, state, attempts, next_attempt_at, last_error, created_at, updated_at, target)
  SELECT rowid, id, occurrence_id, script_id, reaction, recipient, lane, payload, state,
    attempts, next_attempt_at, last_error, created_at, updated_at, target FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v5 RENAME TO deliveries;
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

/// Migration 6 (snoozes): a snooze silences one script's deliveries for occurrences whose
/// `occurred_at` (unix ms) falls in `[starts_at, until)`, either for its creator's own pushes
/// (`scope` `me`) or for everybody (`script`), optionally on one camera. `snoozes_version` is
/// bumped by triggers on every change so the daemon reloads its small snooze cache without
/// rebuilding the script index (which watches `scripts_version` only).
const V6: &str = r#"
CREATE TABLE snoozes (
  id INTEGER PRIMARY KEY,
  script_id INTEGER NOT NULL,
  scope TEXT NOT NULL CHECK (scope IN ('me', 'script')),
  user_id INTEGER NOT NULL,
  camera_id TEXT,
  starts_at INTEGER NOT NULL,
  until INTEGER NOT NULL
);
CREATE INDEX snoozes_by_script ON snoozes(script_id, id);
CREATE INDEX snoozes_by_until ON snoozes(until);
CREATE TABLE snoozes_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT INTO snoozes_version (id, version) VALUES (1, 0);
CREATE TRIGGER snoozes_version_insert AFTER INSERT ON snoozes
BEGIN UPDATE snoozes_version SET version = version + 1; END;
CREATE TRIGGER snoozes_version_update AFTER UPDATE ON snoozes
BEGIN UPDATE snoozes_version SET version = version + 1; END;
CREATE TRIGGER snoozes_version_delete AFTER DELETE ON snoozes
BEGIN UPDATE snoozes_version SET version = version + 1; END;
"#;

/// Migration 7: the lane index holds only the pending rows that have a lane (Telegram's).
/// Every other pending row used to enter it with the empty lane, one more index page per
/// write of a push or webhook row; the lane queries say `lane <> ''` so they use it.
const V7: &str = r#"
DROP INDEX deliveries_pending_lane;
CREATE INDEX deliveries_pending_lane ON deliveries(lane) WHERE state = 'pending' AND lane <> '';
"#;

/// Migration 8: one index of pending rows by due time per channel, instead of one over
/// every pending row. The dispatcher claims per channel; with the shared index a claim of
/// Telegram or webhook rows walked past every pending push, one table lookup and one `LIKE`
/// each, so a backlog of pushes made every claim read all of it twice (at full speed with a
/// backlog, most of the daemon's CPU). Each row enters exactly one of the three, so a write
/// touches as many index pages as before. The conditions are the ones the claim's queries
/// use (`Channel::condition`); a test checks that the queries use these indexes.
const V8: &str = r#"
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_due_push ON deliveries(next_attempt_at)
  WHERE state = 'pending' AND (target IS NULL OR NOT (target LIKE '{"kind":"telegram"%'
                                                      OR target LIKE '{"kind":"webhook"%'));
CREATE INDEX deliveries_due_telegram ON deliveries(next_attempt_at)
  WHERE state = 'pending' AND target LIKE '{"kind":"telegram"%';
CREATE INDEX deliveries_due_webhook ON deliveries(next_attempt_at)
  WHERE state = 'pending' AND target LIKE '{"kind":"webhook"%';
"#;

/// Migration 9: holiday calendars (named lists of dates, owned like scripts). A change to a
/// calendar bumps `scripts_version`, so the running daemons rebuild their snapshot.
const V9: &str = r#"
CREATE TABLE calendars (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  timezone TEXT NOT NULL,
  dates TEXT NOT NULL DEFAULT '[]',
  owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now')),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%S', 'now'))
);
CREATE INDEX calendars_owner ON calendars(owner_id);
CREATE TRIGGER scripts_version_calendars_insert AFTER INSERT ON calendars
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_calendars_update AFTER UPDATE ON calendars
BEGIN UPDATE scripts_version SET version = version + 1; END;
CREATE TRIGGER scripts_version_calendars_delete AFTER DELETE ON calendars
BEGIN UPDATE scripts_version SET version = version + 1; END;
"#;

const MIGRATIONS: &[M<'static>] = &[
    M::up(V1),
    M::up(V2),
    M::up(V3),
    M::up(V4),
    M::up(V5),
    M::up(V6),
    M::up(V7),
    M::up(V8),
    M::up(V9),
];

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

/// A migrated database in memory, for the store's unit tests.
#[cfg(test)]
pub(crate) fn in_memory() -> Connection {
    let mut conn = Connection::open_in_memory().expect("an in-memory database");
    to_latest(&mut conn).expect("migrations");
    conn
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    #[test]
    fn migrations_are_valid() {
        assert!(Migrations::from_slice(MIGRATIONS).validate().is_ok());
    }

    #[test]
    fn version_7_lane_index_holds_laned_rows_only_and_lane_queries_use_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        Migrations::from_slice(MIGRATIONS).to_version(&mut conn, 6).unwrap();
        let insert = |conn: &Connection, id: &str, lane: &str| {
            conn.execute(
                "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient, lane,
                   payload, state, attempts, next_attempt_at, created_at, updated_at, target)
                 VALUES (?1, 'o', 1, 'r', '1', ?2, '{}', 'pending', 0, 1, 1, 1, '{}')",
                params![id, lane],
            )
            .unwrap();
        };
        insert(&conn, "a", "");
        insert(&conn, "b", "bot:1");
        to_latest(&mut conn).unwrap();
        insert(&conn, "c", "");
        insert(&conn, "d", "bot:1");
        let in_index: Vec<String> = conn
            .prepare(
                "SELECT id FROM deliveries INDEXED BY deliveries_pending_lane
                 WHERE state = 'pending' AND lane <> '' ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(in_index, ["b", "d"]);
        let plan = |sql: &str| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params!["bot:1"], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
                .join("; ")
        };
        let with = "SELECT 1 FROM deliveries WHERE state = 'pending' AND lane <> '' AND lane = ?1";
        assert!(plan(with).contains("deliveries_pending_lane"), "{}", plan(with));
        // Without `lane <> ''` the partial index cannot be proven to cover the query.
        let without = "SELECT 1 FROM deliveries WHERE state = 'pending' AND lane = ?1";
        assert!(!plan(without).contains("deliveries_pending_lane"), "{}", plan(without));
    }

    #[test]
    fn version_4_gives_existing_scripts_the_root_of_their_first_user_and_keeps_users_in() {
        let mut conn = Connection::open_in_memory().unwrap();
        Migrations::from_slice(MIGRATIONS).to_version(&mut conn, 3).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO permissions (id, name, display_name) VALUES (242, 'cameras.view', 'C');
             INSERT INTO users (id, login, name, parent_id) VALUES
               (1, 'a', 'A', NULL), (2, 'b', 'B', 1), (3, 'c', 'C', 2), (4, 'd', 'D', NULL),
               (5, 'e', 'E', 6), (6, 'f', 'F', 5);
             INSERT INTO user_permissions VALUES (4, 242);
             INSERT INTO scripts (id, title, event_id, reaction_id, timetable) VALUES
               (1, 's', 1, 1, '{}'), (2, 's', 1, 1, '{}'), (3, 's', 1, 1, '{}'),
               (4, 's', 1, 1, '{}');
             INSERT INTO script_users (script_id, user_id, position) VALUES
               (1, 4, 1), (1, 3, 0), (2, 4, 0), (3, 5, 0);",
        )
        .unwrap();
        to_latest(&mut conn).unwrap();
        let owners: Vec<(i64, Option<i64>)> = conn
            .prepare("SELECT id, owner_id FROM scripts ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // 1: first user 3 → root 1; 2: user 4; 3: a cycle ends after 64 steps; 4: no user.
        assert_eq!(owners, [(1, Some(1)), (2, Some(4)), (3, Some(5)), (4, None)]);
        let granted: Vec<(i64, String)> = conn
            .prepare(
                "SELECT up.user_id, p.name FROM user_permissions up
                 JOIN permissions p ON p.id = up.permission_id ORDER BY up.user_id, p.id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(granted.iter().filter(|(u, _)| *u == 1).count(), 2, "{granted:?}");
        assert_eq!(
            granted.iter().filter(|(u, _)| *u == 4).collect::<Vec<_>>(),
            [&(4, "cameras.view".to_owned())],
            "a user with a permission keeps exactly it"
        );
        assert_eq!(granted.len(), 5 * 2 + 1);
    }
}
