//! The live snapshot and the intake on PostgreSQL, in process: the snapshot holds the
//! scripts of the database, validated as on SQLite (an invalid row is left out and kept
//! with its errors), and follows a change made with SQL (NOTIFY or the version poll); the
//! intake writes deliveries and cooldown state there, loads the cooldown state at start,
//! and a snooze made with SQL silences the next occurrence.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use scriptd::intake::occurrence::RejectionLog;
use scriptd::intake::{Intake, Outcome};
use scriptd::live::Live;
use scriptd::settings::{DatabaseSettings, DatabaseUrl, Settings};
use scriptd::store::OutboxDb;
use scriptd::store::outbox::Handoff;
use scriptd::store::postgres::PgStore;
use scriptd::store::postgres::outbox::PgOutbox;
use tokio_util::sync::CancellationToken;

use crate::support::daemon::all_day;
use crate::support::postgres::server;
use crate::support::within;

/// A migrated database with user 4 and, with SQL, script 1 (event 1, sound to user 4,
/// `cooldown` seconds) and script 2 whose timetable is not JSON; its name and store.
async fn database(cooldown: u32) -> (String, PgStore) {
    let pg = server();
    let url = pg.database();
    let db = url.rsplit('/').next().and_then(|t| t.split('?').next()).expect("db").to_owned();
    let settings = DatabaseSettings { url: Some(DatabaseUrl::new(url)), ..Default::default() };
    let store = scriptd::store::postgres::connect_settings(&settings).await.expect("connect");
    scriptd::store::postgres::migrations::migrate(&store).await.expect("migrate");
    pg.psql(
        &db,
        &format!(
            "INSERT INTO users (id, login, name) VALUES (4, 'app@example.com', 'App');
             INSERT INTO scripts (id, title, event_id, reaction_id, status, timetable, extra)
             VALUES (1, 'sound', 1, 4, 'active', '{}', '{{\"cooldown_seconds\": {cooldown}}}'),
                    (2, 'broken', 1, 4, 'active', '{{not json', '{{}}');
             INSERT INTO script_users (script_id, user_id, position) VALUES (1, 4, 0), (2, 4, 0);",
            all_day()
        ),
    );
    (db, store)
}

fn occurrence(id: &str, at: chrono::DateTime<Utc>) -> String {
    serde_json::json!({"id": id, "event_id": 1, "camera_id": 7, "occurred_at": at.to_rfc3339()})
        .to_string()
}

async fn intake(store: &PgStore, live: &Live) -> Intake {
    let settings = Arc::new(ArcSwap::from_pointee(Settings::default().live_part()));
    Intake::new_on(
        OutboxDb::Postgres(PgOutbox::new(store.clone())),
        Arc::new(Handoff::default()),
        live.clone(),
        settings,
        Arc::new(RejectionLog::default()),
    )
    .await
    .expect("intake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_validates_the_rows_and_follows_a_change_made_with_sql() {
    let (db, store) = database(0).await;
    let live = Live::new_postgres(store, chrono_tz::UTC).await.expect("snapshot");
    let snap = live.load();
    assert_eq!(snap.scripts.len(), 1);
    assert!(snap.scripts.get(&1).is_some());
    let errors = snap.invalid.get(&2).expect("script 2 is invalid");
    assert!(errors.to_string().contains("timetable"), "{errors}");
    assert!(live.store().is_none(), "no SQLite store behind it");

    let stop = CancellationToken::new();
    live.spawn_watcher(Duration::from_millis(500), stop.clone().cancelled_owned());
    server().psql(&db, "UPDATE scripts SET status = 'disabled' WHERE id = 1");
    within(5, "the snapshot sees script 1 disabled", async {
        while live.load().scripts.get(&1).is_some_and(|s| s.enabled) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_writes_deliveries_and_cooldowns_there_and_obeys_a_snooze_made_with_sql() {
    let (db, store) = database(60).await;
    let live = Live::new_postgres(store.clone(), chrono_tz::UTC).await.expect("snapshot");
    let now = Utc::now();
    let mut first = intake(&store, &live).await;
    let one = occurrence("o1", now);
    let (outcomes, added) =
        first.write_batch(&[("vms/analytics/events/7", one.as_bytes())], now).await.expect("write");
    assert_eq!(outcomes, [Outcome::Matched { scripts: 1, deliveries: 1 }]);
    assert_eq!(added, 1);
    assert_eq!(server().psql(&db, "SELECT id FROM deliveries"), "o1:1:4");
    assert_eq!(server().psql(&db, "SELECT occurrence_id FROM cooldowns"), "o1");

    // A new intake (a restart) loads the cooldown state: o2, 1 s later, is silenced.
    let mut second = intake(&store, &live).await;
    let two = occurrence("o2", now + chrono::Duration::seconds(1));
    let (outcomes, _) = second
        .write_batch(&[("vms/analytics/events/7", two.as_bytes())], now)
        .await
        .expect("write");
    assert_eq!(outcomes, [Outcome::Matched { scripts: 1, deliveries: 0 }]);

    // Without a cooldown, a snooze of script 1 made with SQL silences the next one.
    server().psql(&db, "UPDATE scripts SET extra = '{}' WHERE id = 1");
    live.reload().await.expect("reload");
    let until = (now + chrono::Duration::hours(1)).timestamp_millis();
    server().psql(
        &db,
        &format!(
            "INSERT INTO snoozes (script_id, scope, user_id, starts_at, until)
             VALUES (1, 'script', 4, {}, {until})",
            (now - chrono::Duration::minutes(1)).timestamp_millis()
        ),
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // past the 250 ms check interval
    let three = occurrence("o3", now + chrono::Duration::seconds(2));
    let (outcomes, added) = second
        .write_batch(&[("vms/analytics/events/7", three.as_bytes())], Utc::now())
        .await
        .expect("write");
    assert_eq!(outcomes, [Outcome::Matched { scripts: 1, deliveries: 0 }]);
    assert_eq!(added, 0);
    assert_eq!(server().psql(&db, "SELECT count(*) FROM deliveries"), "1");
}
