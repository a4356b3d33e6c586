//! `scriptd run` on PostgreSQL, end to end: a real daemon process with `database.url`, a
//! real Mosquitto and a real PostgreSQL server of the test's own. The script and its user
//! are put in place with SQL (as an operator's `psql` would); occurrences published to the
//! broker come out as pushes to the client app's subscription. The server is stopped for
//! about 5 s in the middle of a burst: `/healthz` shows `store` down and the API answers 503
//! with `Retry-After` while it is, and once it is back every occurrence is pushed exactly
//! once (the intake acknowledged nothing it could not write).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::clients::{PersistentSubscriber, ReliablePublisher};
use crate::support::daemon::all_day;
use crate::support::mosquitto::Mosquitto;
use crate::support::pg_daemon::{Run, cli, db_name, migrate, seed_push_script};
use crate::support::postgres::PgServer;
use crate::support::within;

const TOPIC: &str = "vms/analytics/events/1";

/// The outbox's rows by state.
fn states(pg: &PgServer, db: &str) -> BTreeMap<String, i64> {
    pg.psql(db, "SELECT state, count(*) FROM deliveries GROUP BY state ORDER BY state")
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(s, n)| (s.to_owned(), n.parse().unwrap_or(-1)))
        .collect()
}

fn occ(seq: usize) -> Vec<u8> {
    json!({"id": format!("pg-{seq}"), "event_id": 1, "camera_id": 1,
           "occurred_at": chrono::Utc::now().to_rfc3339()})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_are_pushed_once_each_through_postgresql_also_across_a_server_stop() {
    // A server of its own: this test stops it.
    let pg = PgServer::start();
    let url = pg.database();
    let db = db_name(&url).to_owned();
    migrate(&url);
    // User 4 and one always-active sound script (reaction 4) for event 1, as SQL.
    seed_push_script(&pg, &db, 1, 1, 4);
    let broker = Mosquitto::start().await;
    let app = PersistentSubscriber::connect(broker.port(), "app-pg", "vms/users/4/reactions").await;
    let mut run = Run::start(&url, broker.port());
    run.wait_component("broker", "up", 30).await;
    let (code, _) = run.wait_component("store", "up", 10).await;
    assert_eq!(code, 200);
    assert!(run.log().contains("postgresql postgres@127.0.0.1"), "{}", run.log());

    // The API runs on PostgreSQL too: without a token it is a 401, with one the catalog.
    let r = reqwest::get(run.url("/api/v1/scripts")).await.expect("GET /api/v1/scripts");
    assert_eq!(r.status().as_u16(), 401);
    let token = cli(&url, &["tokens", "create", "--user", "4"]);
    let list = run.url("/api/v1/events");
    let scripts =
        || reqwest::Client::new().get(&list).bearer_auth(&token).header("X-Client", "web").send();
    assert_eq!(scripts().await.expect("GET").status().as_u16(), 200);

    // A first occurrence goes through.
    let vms = ReliablePublisher::connect(broker.port(), "vms-pg");
    vms.publish(TOPIC, occ(0)).await;
    app.wait_distinct(1, 30, "the first push").await;

    // A script added with SQL is matched soon after, without a restart (LISTEN / poll).
    pg.psql(
        &db,
        &format!(
            "INSERT INTO scripts (id, title, event_id, reaction_id, status, cameras, timetable,
                                  extra, owner_id)
             VALUES (2, 'event 2', 2, 4, 'active', NULL, '{}', '{{}}', 4);
             INSERT INTO script_users (script_id, user_id, position) VALUES (2, 4, 0);",
            all_day()
        ),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = json!({"id": "pg-event-2", "event_id": 2, "camera_id": 1,
                        "occurred_at": chrono::Utc::now().to_rfc3339()});
    vms.publish(TOPIC, second.to_string().into_bytes()).await;
    app.wait_distinct(2, 30, "the push of the script added with SQL").await;

    // 200 occurrences; the server stops after the first 100 and comes back ~5 s later.
    for i in 1..=100 {
        vms.publish(TOPIC, occ(i)).await;
    }
    pg.halt();
    for i in 101..=200 {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(30).await;
    let halted = Instant::now();
    let (code, body) = run.wait_component("store", "down", 10).await;
    assert_eq!(code, 503, "{body}");
    let reason = body["components"]["store"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains(&format!("127.0.0.1:{}", pg.port())), "{reason}");
    // Meanwhile the API answers 503 with Retry-After, not 500.
    let down = scripts().await.expect("GET while the database is down");
    assert_eq!(down.status().as_u16(), 503);
    assert!(down.headers().contains_key("retry-after"));
    let said = down.text().await.unwrap_or_default();
    assert!(said.contains("cannot be reached"), "{said}");
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(halted.elapsed())).await;
    pg.restart();
    run.wait_component("store", "up", 30).await;
    assert_eq!(scripts().await.expect("GET").status().as_u16(), 200);

    let pushes = app.wait_distinct(202, 60, "a push for every occurrence").await;
    // Nothing more comes: every occurrence was pushed exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pushes = app.all().await.len().max(pushes.len());
    assert_eq!(pushes, 202, "repeats among the pushes");
    let done = within(30, "every delivery recorded sent", async {
        loop {
            let s = states(&pg, &db);
            if s.get("sent") == Some(&202) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(done.len(), 1, "only sent rows: {done:?}");
}
