//! Holiday calendars in the store: a calendar changed by another program (the `sqlite3`
//! shell, simulated with a second connection) reaches the index within 2 seconds, like a
//! script; the scripts that list a calendar are found for the 409.

use std::time::{Duration, Instant};

use crate::support::api::start;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use scriptd::store::calendars;

async fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cond()
}

#[tokio::test]
async fn an_outside_calendar_change_reaches_the_index_within_2_seconds() {
    let api = start().await;
    let conn = Connection::open(&api.db_path).unwrap();
    conn.pragma_update(None, "foreign_keys", false).unwrap();
    conn.execute(
        "INSERT INTO calendars (id, name, timezone, dates, owner_id) VALUES (5, 'Shop', 'UTC', '[]', 1)",
        [],
    )
    .unwrap();
    let tt = r#"{"days":[{"type":"same_every_day","from":"00:00","to":"23:59"}],"holidays":{"calendars":[5]}}"#;
    conn.execute(
        "INSERT INTO scripts (title, event_id, reaction_id, status, cameras, timetable, extra, owner_id)
         VALUES ('closed on holidays', 5, 2, 'active', NULL, ?1, '{}', 1)",
        params![tt],
    )
    .unwrap();
    let id = conn.last_insert_rowid();
    conn.execute("INSERT INTO script_users (script_id, user_id) VALUES (?1, 1)", [id]).unwrap();
    let at: DateTime<Utc> = "2027-03-08T12:00:00Z".parse().unwrap();
    assert!(
        within(Duration::from_secs(2), || api.live.load().index.matches(5, 17, at).contains(&id))
            .await,
        "the script was not loaded within 2 s"
    );
    assert_eq!(calendars::scripts_using(&conn, 5).unwrap(), vec![id]);
    assert!(calendars::scripts_using(&conn, 6).unwrap().is_empty());

    conn.execute(
        "UPDATE calendars SET dates = '[{\"from\": \"2027-03-08\", \"to\": \"2027-03-08\", \"title\": \"Women''s Day\"}]' WHERE id = 5",
        [],
    )
    .unwrap();
    assert!(
        within(Duration::from_secs(2), || !api.live.load().index.matches(5, 17, at).contains(&id))
            .await,
        "the calendar change did not reach the index within 2 s"
    );
    // The day after is ordinary.
    let next: DateTime<Utc> = "2027-03-09T12:00:00Z".parse().unwrap();
    assert!(api.live.load().index.matches(5, 17, next).contains(&id));

    // A hand-edited calendar with a bad date keeps its good ones (and is logged).
    conn.execute(
        "UPDATE calendars SET dates = '[{\"from\": \"nope\"}, {\"from\": \"2027-03-09\"}]' WHERE id = 5",
        [],
    )
    .unwrap();
    assert!(
        within(Duration::from_secs(2), || {
            let snap = api.live.load();
            snap.index.matches(5, 17, at).contains(&id)
                && !snap.index.matches(5, 17, next).contains(&id)
        })
        .await,
        "the edited calendar was not read with its valid date"
    );
}
