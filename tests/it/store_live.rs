//! The live snapshot follows the database: API writes at once, other programs' writes
//! (the `sqlite3` shell, simulated with a second connection) within 2 seconds, a replaced
//! file too; invalid hand-written rows are skipped and reported, the rest keep working.

use std::time::{Duration, Instant};

use crate::support::api::{always_body, start};
use chrono::Utc;
use rusqlite::{Connection, params};
use serde_json::json;

const ALL_DAY: &str = r#"{"days":[{"type":"same_every_day","from":"00:00","to":"23:59"}]}"#;

/// Waits up to `limit` for `cond`, returning how long it took.
async fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cond().then(|| start.elapsed())
}

fn insert_script(conn: &Connection, title: &str, status: &str, timetable: &str, user: i64) -> i64 {
    // Like the sqlite3 shell: no foreign key enforcement. Owned by user 1, the API's
    // caller (a row without owner_id is shown to no API caller).
    conn.pragma_update(None, "foreign_keys", false).unwrap();
    conn.execute(
        "INSERT INTO scripts (title, event_id, reaction_id, status, cameras, timetable, extra,
                              owner_id)
         VALUES (?1, 5, 2, ?2, NULL, ?3, '{}', 1)",
        params![title, status, timetable],
    )
    .unwrap();
    let id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO script_users (script_id, user_id) VALUES (?1, ?2)",
        params![id, user],
    )
    .unwrap();
    id
}

#[tokio::test]
async fn an_outside_write_reaches_the_index_within_2_seconds() {
    let api = start().await;
    let conn = Connection::open(&api.db_path).unwrap();
    let id = insert_script(&conn, "from the shell", "active", ALL_DAY, 1);
    let took = within(Duration::from_secs(2), || {
        api.live.load().index.matches(5, 17, Utc::now()).contains(&id)
    })
    .await;
    assert!(
        took.is_some(),
        "the index did not see the outside insert within 2 s: {:?}",
        api.live.load()
    );
    let snap = api.live.load();
    assert_eq!(snap.scripts[&id].title, "from the shell");
    // Sub-users are expanded for show-camera-sidebar: 1 and its child 2.
    assert_eq!(snap.recipients(&snap.scripts[&id]), vec![1, 2]);

    conn.execute("UPDATE scripts SET status = 'disabled' WHERE id = ?1", [id]).unwrap();
    let took = within(Duration::from_secs(2), || {
        !api.live.load().index.matches(5, 17, Utc::now()).contains(&id)
    })
    .await;
    assert!(took.is_some(), "the index did not see the outside update within 2 s");

    conn.execute("DELETE FROM scripts WHERE id = ?1", [id]).unwrap();
    let took = within(Duration::from_secs(2), || !api.live.load().scripts.contains_key(&id)).await;
    assert!(took.is_some(), "the snapshot did not see the outside delete within 2 s");
}

#[tokio::test]
async fn api_writes_are_in_the_index_before_the_answer() {
    let api = start().await;
    let id = api.create(&always_body("api")).await;
    assert_eq!(api.live.load().index.matches(5, 17, Utc::now()), vec![id]);
    assert!(api.live.load().index.matches(5, 99, Utc::now()).is_empty(), "camera filter");
    assert!(api.live.load().index.matches(6, 17, Utc::now()).is_empty(), "event filter");
}

#[tokio::test]
async fn invalid_hand_written_rows_are_skipped_and_reported() {
    let api = start().await;
    let good = api.create(&always_body("good")).await;
    let conn = Connection::open(&api.db_path).unwrap();
    let garbage = insert_script(&conn, "garbage json", "active", "{oops", 1);
    let bad_status = insert_script(&conn, "bad status", "maybe", ALL_DAY, 1);
    let no_days = insert_script(&conn, "no days", "active", r#"{"days":[],"intervals":[]}"#, 1);
    let bad_break = insert_script(
        &conn,
        "bad break",
        "active",
        r#"{"days":[{"type":"monday","from":"10:00","to":"12:00","breaks":[{"from":"13:00","to":"14:00"}]}]}"#,
        1,
    );
    // The shell does not enforce foreign keys by default: a user that does not exist.
    let ghost_user = insert_script(&conn, "ghost user", "active", ALL_DAY, 77);
    let took = within(Duration::from_secs(2), || api.live.load().invalid.len() == 5).await;
    assert!(took.is_some(), "invalid rows not noticed: {:?}", api.live.load().invalid);
    let snap = api.live.load();
    let keys = |id: i64| snap.invalid[&id].paths().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(keys(garbage), ["timetable"]);
    assert_eq!(keys(bad_status), ["status"]);
    assert_eq!(keys(no_days), ["timetable"]);
    assert_eq!(keys(bad_break), ["timetable.days.0.breaks.0.from"]);
    assert_eq!(keys(ghost_user), ["users.0"]);
    // The valid script keeps working.
    assert_eq!(snap.index.matches(5, 17, Utc::now()), vec![good]);
    assert_eq!(snap.scripts.len(), 1);

    // The API shows the rows and says why they are skipped.
    let (status, v) = api.get(&format!("/scripts/{garbage}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["timetable"], "{oops");
    assert!(v["invalid"]["timetable"][0].as_str().unwrap().contains("not valid JSON"));
    let (_, v) = api.get(&format!("/scripts/{bad_break}")).await;
    assert!(v["invalid"]["timetable.days.0.breaks.0.from"].is_array());
    let (_, v) = api.get(&format!("/scripts/{good}")).await;
    assert!(v.get("invalid").is_none());
    let (status, v) = api.get("/scripts").await;
    assert_eq!(status, 200);
    assert_eq!(v["meta"]["total"], 6);

    // A PATCH that fixes the field makes the script valid again; one that does not is a 422.
    let (status, v) = api
        .send(
            api.req(reqwest::Method::PATCH, &format!("/scripts/{garbage}"))
                .json(&json!({"title": "still broken"})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(crate::support::api::error_keys(&v), ["timetable"]);
    let (status, v) = api
        .send(
            api.req(reqwest::Method::PATCH, &format!("/scripts/{garbage}"))
                .json(&json!({"timetable": {"intervals": [{"from": "2026-01-01 00:00:00", "to": "2036-01-01 00:00:00"}]}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(api.live.load().scripts.contains_key(&garbage));
    assert!(!api.live.load().invalid.contains_key(&garbage));
}

#[tokio::test]
async fn a_replaced_database_file_is_picked_up() {
    let api = start().await;
    let old = api.create(&always_body("old file")).await;
    let dir = api.db_path.parent().unwrap().to_path_buf();
    let replacement = dir.join("replacement.db");
    {
        let conn = Connection::open(&api.db_path).unwrap();
        conn.execute("VACUUM INTO ?1", [replacement.to_str().unwrap()]).unwrap();
    }
    let new_id = {
        let conn = Connection::open(&replacement).unwrap();
        conn.execute("DELETE FROM scripts", []).unwrap();
        insert_script(&conn, "new file", "active", ALL_DAY, 1)
    };
    // Checkpoint and drop the old WAL so it cannot be applied to the new file.
    {
        let conn = Connection::open(&api.db_path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    std::fs::rename(&replacement, &api.db_path).unwrap();
    let took = within(Duration::from_secs(2), || {
        let snap = api.live.load();
        snap.scripts.get(&new_id).is_some_and(|s| s.title == "new file")
            && (new_id == old || !snap.scripts.contains_key(&old))
    })
    .await;
    assert!(took.is_some(), "replaced file not picked up: {:?}", api.live.load().scripts.keys());
}

#[tokio::test]
async fn an_api_write_rebuilds_once_not_again_by_the_watcher() {
    let api = start().await;
    // Let the watcher open its connection (it rebuilds once when it does).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = api.live.load().generation;
    let id = api.create(&always_body("once")).await;
    let after = api.live.load().generation;
    // (+2 only if the watcher polled between the commit and the API's own rebuild.)
    assert!(after == before + 1 || after == before + 2, "{before} -> {after}");
    assert!(api.live.load().scripts.contains_key(&id));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(api.live.load().generation, after, "the watcher rebuilt again for the API's write");
}

#[tokio::test]
async fn the_real_sqlite3_shell_is_seen_too() {
    let sqlite3 = crate::support::tools::require("sqlite3");
    let out = match std::process::Command::new(&sqlite3).arg("--version").output() {
        Ok(out) => out,
        Err(e) => panic!("the sqlite3 shell cannot run: {e}"),
    };
    assert!(out.status.success());
    let api = start().await;
    let sql = format!(
        "INSERT INTO scripts (id, title, event_id, reaction_id, status, timetable, extra) \
         VALUES (500, 'shell', 5, 2, 'active', '{ALL_DAY}', '{{}}'); \
         INSERT INTO script_users (script_id, user_id) VALUES (500, 1);"
    );
    let out = std::process::Command::new(&sqlite3).arg(&api.db_path).arg(sql).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = within(Duration::from_secs(2), || {
        api.live.load().index.matches(5, 1, Utc::now()).contains(&500)
    })
    .await;
    assert!(took.is_some(), "the sqlite3 shell's insert was not seen within 2 s");
}

#[tokio::test]
async fn outbox_writes_do_not_rebuild_the_snapshot_but_user_edits_do() {
    let api = start().await;
    let id = api.create(&always_body("steady")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = api.live.load().generation;
    let conn = Connection::open(&api.db_path).unwrap();
    // The daemon's own outbox traffic: many commits from another connection.
    for i in 0..20 {
        conn.execute(
            "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient, lane, payload, state, next_attempt_at, created_at, updated_at)
             VALUES (?1, 'o', ?2, 'sound', '1', '', '{}', 'pending', 0, 0, 0)",
            params![format!("o:{id}:{i}"), id],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(api.live.load().generation, before, "outbox commits rebuilt the snapshot");
    // A user edited in the shell (a new parent) is still seen.
    conn.execute("UPDATE users SET parent_id = NULL WHERE id = 2", []).unwrap();
    let took = within(Duration::from_secs(2), || api.live.load().generation > before).await;
    assert!(took.is_some(), "a users edit was not noticed");
}
