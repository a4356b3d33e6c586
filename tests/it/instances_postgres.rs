//! Several `scriptd run` processes on one PostgreSQL database (real server, real
//! Mosquitto): one client id is held by one running instance (a second start is refused
//! with exit 78 naming the holder's host), a crashed holder gives it up at once so that the
//! restart systemd makes is not refused, `/healthz` and the `scriptd_instances_live`
//! gauge list the live instances, without the ones that stopped, and a script written by
//! anyone is in force on every instance within 1 s.

use std::time::Duration;

use serde_json::Value;

use crate::support::clients::{PersistentSubscriber, ReliablePublisher};
use crate::support::mosquitto::Mosquitto;
use crate::support::pg_daemon::{Run, db_name, migrate, seed_push_script, seed_script_with_extra};
use crate::support::postgres::server;
use crate::support::within;

/// The client ids `/healthz` of `run` lists under `instances`.
async fn listed(run: &Run) -> Vec<String> {
    let body: Value = match reqwest::get(run.url("/healthz")).await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    body["instances"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["client_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Waits until `run`'s `/healthz` lists exactly `ids` (sorted).
async fn wait_listed(run: &Run, ids: &[&str], what: &str) {
    within(15, what, async {
        loop {
            if listed(run).await == ids {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_running_instance_per_client_id_and_a_crash_frees_it_for_the_restart() {
    let pg = server();
    let url = pg.database();
    migrate(&url);
    let broker = Mosquitto::start().await;
    let host = scriptd::store::postgres::instances::host_name();

    let mut a = Run::start_as(&url, broker.port(), Some("scriptd-a"));
    a.wait_component("broker", "up", 30).await;
    wait_listed(&a, &["scriptd-a"], "the first instance lists itself").await;
    let body: Value =
        reqwest::get(a.url("/healthz")).await.expect("healthz").json().await.expect("json");
    let me = &body["instances"][0];
    assert_eq!(me["host"], host.as_str(), "{body}");
    assert!(me["started_at"].is_string() && me["heartbeat_at"].is_string(), "{body}");

    // A second instance with the same client id: refused, naming the holder's host.
    let mut twin = Run::start_as(&url, broker.port(), Some("scriptd-a"));
    assert_eq!(twin.wait_exit(30), Some(78), "{}", twin.log());
    let said = twin.log();
    assert!(said.contains("\"scriptd-a\" is held by another running instance"), "{said}");
    assert!(said.contains(&format!("on host {host}")), "{said}");

    // Another client id is welcome; both list both, and the gauge counts them.
    let mut c = Run::start_as(&url, broker.port(), Some("scriptd-c"));
    c.wait_component("broker", "up", 30).await;
    wait_listed(&a, &["scriptd-a", "scriptd-c"], "instance A lists both").await;
    wait_listed(&c, &["scriptd-a", "scriptd-c"], "instance C lists both").await;
    let metrics =
        reqwest::get(a.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.lines().any(|l| l == "scriptd_instances_live 2"), "{metrics}");

    // A crashes; its restart right away (as systemd's) is not refused.
    a.kill();
    let mut again = Run::start_as(&url, broker.port(), Some("scriptd-a"));
    again.wait_component("broker", "up", 30).await;
    assert_eq!(again.wait_exit(1), None, "the restart was refused:\n{}", again.log());
    wait_listed(&again, &["scriptd-a", "scriptd-c"], "the restarted instance lists both").await;

    // C stops gracefully: its row goes at once, not after the 10 s of a stale heartbeat.
    assert_eq!(c.terminate(), Some(0), "{}", c.log());
    let rows = pg.psql(
        db_name(&url),
        "SELECT string_agg(client_id, ',' ORDER BY client_id) FROM scriptd_instances",
    );
    assert_eq!(rows, "scriptd-a", "the stopped instance's row is deleted");
    wait_listed(&again, &["scriptd-a"], "the stopped instance is no longer listed").await;
}

/// `scriptd_occurrences_received_total` of `run` (0 when unreadable).
async fn received(run: &Run) -> u64 {
    let Ok(r) = reqwest::get(run.url("/metrics")).await else { return 0 };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("scriptd_occurrences_received_total ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// [`received`] of each of `runs`.
async fn received_by(runs: &[Run]) -> Vec<u64> {
    let mut out = Vec::new();
    for r in runs {
        out.push(received(r).await);
    }
    out
}

/// `scriptd_scripts_loaded` of `run`.
async fn scripts_loaded(run: &Run) -> Option<u64> {
    let text = reqwest::get(run.url("/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("scriptd_scripts_loaded ")?.trim().parse().ok())
}

/// A change written by anyone (here SQL, as the CLI or another instance's API would) is in
/// every instance's matching within 1 s: the triggers' NOTIFY reaches each instance's
/// LISTEN connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_change_is_in_force_on_every_instance_within_a_second() {
    let pg = server();
    let url = pg.database();
    migrate(&url);
    seed_push_script(pg, db_name(&url), 1, 1, 4);
    let broker = Mosquitto::start().await;
    let mut runs = [
        Run::start_as(&url, broker.port(), Some("scriptd-x")),
        Run::start_as(&url, broker.port(), Some("scriptd-y")),
    ];
    for r in &mut runs {
        r.wait_component("broker", "up", 30).await;
    }
    for r in &runs {
        assert_eq!(scripts_loaded(r).await, Some(1), "{}", r.log());
    }
    for round in 2..=4_i64 {
        seed_push_script(pg, db_name(&url), round, 2, 4);
        let written = std::time::Instant::now();
        let mut took = Vec::new();
        for r in &runs {
            while scripts_loaded(r).await != Some(round as u64) {
                assert!(
                    written.elapsed() < Duration::from_secs(5),
                    "script {round} not loaded within 5 s\n{}",
                    r.log()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            took.push(written.elapsed());
        }
        eprintln!("script {round} in force on both instances after {took:?}");
        assert!(took.iter().all(|t| *t <= Duration::from_secs(1)), "{took:?}");
    }
}

/// Cooldown across instances, end to end: two instances on a shared subscription take 20
/// occurrences of one moment for one script (cooldown 60 s) and camera, about half each;
/// one push comes. An occurrence 61 s later fires again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_taking_one_moment_within_a_cooldown_push_once() {
    let pg = server();
    let url = pg.database();
    migrate(&url);
    seed_script_with_extra(pg, db_name(&url), 1, 1, 4, r#"{"cooldown_seconds": 60}"#);
    let broker = Mosquitto::start().await;
    let app =
        PersistentSubscriber::connect(broker.port(), "app-cooldown", "vms/users/4/reactions").await;
    let shared = [("SCRIPTD__MQTT__EVENTS_TOPIC", "$share/scriptd/vms/analytics/events/#")];
    let mut runs = [
        Run::start_with(&url, broker.port(), Some("scriptd-p"), &shared),
        Run::start_with(&url, broker.port(), Some("scriptd-q"), &shared),
    ];
    for r in &mut runs {
        r.wait_component("broker", "up", 30).await;
    }
    let moment = chrono::Utc::now();
    let occ = |id: String, at: chrono::DateTime<chrono::Utc>| {
        serde_json::json!({"id": id, "event_id": 1, "camera_id": 1, "occurred_at": at.to_rfc3339()})
            .to_string()
            .into_bytes()
    };
    let vms = ReliablePublisher::connect(broker.port(), "vms-cooldown");
    // Both instances take part: occurrences on another camera until each has received one
    // (an instance's share starts once its subscription is in place).
    within(30, "both instances subscribed", async {
        let mut k = 0;
        loop {
            let warm = occ(format!("warm-{k}"), moment);
            let warm = String::from_utf8_lossy(&warm).replace("\"camera_id\":1", "\"camera_id\":2");
            vms.publish("vms/analytics/events/2", warm.into_bytes()).await;
            k += 1;
            let mut all = true;
            for r in &runs {
                all &= received(r).await > 0;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let before: Vec<u64> = received_by(&runs).await;
    for i in 0..20 {
        vms.publish("vms/analytics/events/1", occ(format!("c-{i}"), moment)).await;
    }
    vms.wait_acked(30).await;
    let on_camera_1 = |pushes: &[Value]| pushes.iter().filter(|p| p["camera_id"] == 1).count();
    within(30, "the one firing", async {
        while on_camera_1(&app.all().await) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pushed = app.all().await;
    assert_eq!(on_camera_1(&pushed), 1, "one push for one moment within the cooldown: {pushed:?}");
    // Both instances took some of the burst (a shared subscription alternates).
    let after: Vec<u64> = received_by(&runs).await;
    assert!(after.iter().zip(&before).all(|(a, b)| a > b), "{before:?} → {after:?}");

    vms.publish(
        "vms/analytics/events/1",
        occ("c-later".into(), moment + chrono::Duration::seconds(61)),
    )
    .await;
    vms.wait_acked(30).await;
    app.wait_distinct(2, 30, "the firing after the cooldown").await;
}
