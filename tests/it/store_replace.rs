//! A database file replaced under open connections (`mv restored.db scriptd.db`): the
//! store notices, refuses new connections until the old file's connections are closed,
//! removes the old file's write-ahead log, then opens and migrates the new file.

use rusqlite::Connection;
use scriptd::store::{Conn, Store, StoreError};

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// A migrated database in a temporary folder and one connection held open on it.
fn opened() -> (tempfile::TempDir, std::path::PathBuf, Store, Conn) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("scriptd.db");
    let store = Store::migrate(&path).expect("migrate");
    let held = store.connect().expect("connect");
    (dir, path, store, held)
}

#[test]
fn connections_drain_before_the_new_file_is_opened() {
    let (dir, path, store, held) = opened();
    held.execute("INSERT INTO users (id, login, name) VALUES (77, 'old@x', 'old')", [])
        .expect("write the old file");
    // A schema change: page 1 of the old file is in its write-ahead log now.
    held.execute("CREATE TABLE old_only (v INTEGER)", []).expect("old schema");
    assert!(!held.is_stale());
    let old_epoch = held.epoch();

    // The replacement: an empty, unmigrated SQLite file.
    let replacement = dir.path().join("new.db");
    Connection::open(&replacement)
        .expect("create")
        .execute("CREATE TABLE marker (v INTEGER)", [])
        .expect("marker table");
    std::fs::rename(&replacement, &path).expect("replace");

    assert!(held.is_stale(), "the replacement is noticed");
    assert!(matches!(store.connect(), Err(StoreError::Replaced)));
    // The old connection still works on the old file until it is closed.
    assert_eq!(count(&held, "SELECT COUNT(*) FROM users WHERE id = 77"), 1);
    drop(held);
    assert!(
        dir.path().join("scriptd.db-wal").exists(),
        "SQLite leaves a moved file's log behind (what the store must clean up)"
    );

    let fresh = store.connect().expect("the new file opens once the old one is closed");
    assert!(fresh.epoch() > old_epoch);
    assert!(!fresh.is_stale());
    assert_eq!(
        count(&fresh, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'old_only'"),
        0,
        "the old file's pages are not read into the new one"
    );
    assert_eq!(count(&fresh, "SELECT COUNT(*) FROM marker"), 0, "this is the new file");
    assert_eq!(count(&fresh, "SELECT COUNT(*) FROM users WHERE id = 77"), 0, "no old pages");
    assert!(
        count(&fresh, "SELECT COUNT(*) FROM events") > 0,
        "the new file is migrated and seeded like the daemon's own"
    );
    assert_eq!(
        fresh.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(),
        "ok"
    );
}

#[test]
fn a_removed_file_is_not_a_replacement() {
    let (_dir, path, store, held) = opened();
    std::fs::remove_file(&path).expect("remove");
    assert!(!held.is_stale(), "nothing to switch to: keep the old file");
    assert_eq!(count(&held, "SELECT COUNT(*) FROM users"), 0);
    let err = store.connect().expect_err("a removed file is not recreated");
    assert!(!matches!(err, StoreError::Replaced), "{err}");
}
