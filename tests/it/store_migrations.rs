//! The schema: migrations are idempotent, a database from a newer scriptd is refused, the
//! catalogs are seeded without overwriting operators' edits, and a locked database is a
//! distinct, retryable error.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use scriptd::store::migrations::latest_version;
use scriptd::store::users::NewUser;
use scriptd::store::{Store, StoreError, catalog, tokens, users};

fn schema(conn: &Connection) -> Vec<(String, String)> {
    let mut stmt =
        conn.prepare("SELECT name, COALESCE(sql, '') FROM sqlite_master ORDER BY name").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn migrating_twice_is_a_no_op_and_keeps_operator_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("scriptd.db");
    let store = Store::migrate(&path).unwrap();
    assert!(path.exists(), "folder and file are created");
    let conn = store.connect().unwrap();
    let before = schema(&conn);
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version as usize, latest_version());
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    conn.execute("UPDATE events SET description = 'Edited' WHERE id = 1", []).unwrap();
    conn.execute("DELETE FROM events WHERE id = 13", []).unwrap();
    drop(conn);

    let store = Store::migrate(&path).unwrap();
    let conn = store.connect().unwrap();
    assert_eq!(schema(&conn), before);
    let events = catalog::events(&conn).unwrap();
    assert_eq!(events[0].description, "Edited", "an operator's edit survives");
    assert_eq!(events.len(), catalog::DEFAULT_EVENTS.len(), "a missing default is re-added");
    assert_eq!(catalog::reactions(&conn).unwrap().len(), 5);
}

#[test]
fn a_database_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scriptd.db");
    Store::migrate(&path).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", latest_version() as i64 + 1).unwrap();
    drop(conn);
    for result in [Store::open(&path), Store::migrate(&path)] {
        match result {
            Err(e @ StoreError::TooNew { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("newer than this scriptd supports"), "{msg}");
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
    }
    // Nothing was changed.
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version as usize, latest_version() + 1);
}

#[test]
fn a_locked_database_is_a_busy_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scriptd.db");
    let store = Store::migrate(&path).unwrap().with_busy_timeout(Duration::from_millis(100));
    let mut holder = store.connect().unwrap();
    let tx = holder.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    let result = store.write(|tx| {
        users::add(tx, &NewUser { login: "x".into(), name: "X".into(), ..Default::default() })
    });
    assert!(matches!(result, Err(StoreError::Busy)), "{result:?}");
    drop(tx);
    assert!(
        store
            .write(|tx| users::add(
                tx,
                &NewUser { login: "x".into(), name: "X".into(), ..Default::default() }
            ))
            .is_ok()
    );
}

#[test]
fn tokens_store_only_a_digest_and_check_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scriptd.db");
    let store = Store::migrate(&path).unwrap();
    let id = store
        .write(|tx| {
            users::add(tx, &NewUser { login: "a".into(), name: "A".into(), ..Default::default() })
        })
        .unwrap();
    let token = store.write(|tx| tokens::create(tx, id)).unwrap();
    assert!(token.expose().len() >= 64);
    let conn = store.connect().unwrap();
    let stored: Vec<u8> =
        conn.query_row("SELECT token_sha256 FROM api_tokens", [], |r| r.get(0)).unwrap();
    assert_eq!(stored.len(), 32);
    let dump: String = conn
        .query_row("SELECT group_concat(public_id || hex(token_sha256)) FROM api_tokens", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!dump.contains(token.expose().split_once('.').unwrap().1));
    assert_eq!(tokens::authenticate(&conn, token.expose()).unwrap(), Some(id));
    assert_eq!(tokens::authenticate(&conn, &format!("{}x", token.expose())).unwrap(), None);
    assert_eq!(tokens::authenticate(&conn, "no-dot").unwrap(), None);
    assert_eq!(tokens::authenticate(&conn, "").unwrap(), None);
    assert!(matches!(store.write(|tx| tokens::create(tx, 999)), Err(StoreError::NotFound(_))));
}

#[test]
fn a_removed_database_is_an_error_not_a_new_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scriptd.db");
    let store = Store::migrate(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(store.connect().is_err());
    assert!(store.read(|tx| catalog::events(tx)).is_err());
    assert!(!path.exists(), "a connection must not create an empty database");
}
