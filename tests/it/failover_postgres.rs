//! Several instances on one PostgreSQL and one Mosquitto, any one of them allowed to die
//! (CONTRACT §11): real `scriptd run` processes started by the test, one shared database,
//! pushes counted at the client app's subscription.
//!
//! - Shared subscription (`$share/scriptd/...`), three instances, one SIGKILLed mid-burst
//!   and restarted 2 s later as systemd would: every occurrence is pushed, at most
//!   `delivery.max_in_flight` of them twice.
//! - Redundant ingest (every instance subscribed to the plain topic), two instances, one
//!   SIGKILLed for good mid-burst: the other pushes every occurrence, also those published
//!   after the kill, and the ones the dead instance had claimed once their lease ends; every
//!   occurrence is one delivery in the database however many instances took it in.
//! - PostgreSQL restarted mid-burst under two instances: 0 lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::clients::{PersistentSubscriber, ReliablePublisher};
use crate::support::mosquitto::Mosquitto;
use crate::support::pg_daemon::{Run, db_name, migrate, seed_push_script};
use crate::support::postgres::{PgServer, server};
use crate::support::within;

const TOPIC: &str = "vms/analytics/events/1";
/// A short lease, so that the rows a dead instance had claimed are due again soon.
const LEASE_SECONDS: &str = "5";
/// `delivery.max_in_flight`'s default: the most deliveries that may repeat per failure.
const MAX_IN_FLIGHT: usize = 100;

fn occ(seq: usize) -> Vec<u8> {
    json!({"id": format!("f-{seq}"), "event_id": 1, "camera_id": 1,
           "occurred_at": chrono::Utc::now().to_rfc3339()})
    .to_string()
    .into_bytes()
}

/// How many pushes each occurrence got.
fn per_occurrence(pushes: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in pushes {
        if let Some(id) = p["occurrence_id"].as_str() {
            *counts.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Asserts that occurrences `f-0` … `f-{n-1}` were all pushed and at most
/// [`MAX_IN_FLIGHT`] of them twice; the repeats.
fn every_one_pushed(pushes: &[Value], n: usize) -> usize {
    let counts = per_occurrence(pushes);
    let missing: Vec<usize> = (0..n).filter(|i| !counts.contains_key(&format!("f-{i}"))).collect();
    assert!(missing.is_empty(), "not pushed: {missing:?}");
    let repeats = pushes.len() - counts.len();
    assert!(repeats <= MAX_IN_FLIGHT, "{repeats} repeated pushes (at most {MAX_IN_FLIGHT})");
    repeats
}

/// A database of its own on `pg` with one push script (event 1 to user 4), a Mosquitto,
/// and the client app's subscription (`app_id`).
async fn setup(pg: &PgServer, app_id: &str) -> (String, Mosquitto, PersistentSubscriber) {
    let url = pg.database();
    migrate(&url);
    seed_push_script(pg, db_name(&url), 1, 1, 4);
    let broker = Mosquitto::start().await;
    let app = PersistentSubscriber::connect(broker.port(), app_id, "vms/users/4/reactions").await;
    (url, broker, app)
}

fn start(url: &str, port: u16, client_id: &str, topic: &str) -> Run {
    Run::start_with(
        url,
        port,
        Some(client_id),
        &[
            ("SCRIPTD__MQTT__EVENTS_TOPIC", topic),
            ("SCRIPTD__DELIVERY__LEASE_SECONDS", LEASE_SECONDS),
        ],
    )
}

/// Waits for `n` distinct occurrences at the app, then 2 s more for stray repeats; the
/// pushes and when the last distinct one came. Panics with every instance's log tail when
/// they do not all come.
async fn all_pushed(
    app: &PersistentSubscriber,
    n: usize,
    secs: u64,
    runs: &[&Run],
) -> (Vec<Value>, Instant) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = app.all().await;
        if per_occurrence(&got).len() >= n {
            let complete = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            return (app.all().await, complete);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = runs
                .iter()
                .map(|r| {
                    let l = r.log();
                    l[l.len().saturating_sub(4_000)..].to_owned()
                })
                .collect();
            panic!(
                "{} of {n} occurrences pushed within {secs} s\n{}",
                per_occurrence(&got).len(),
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_three_instances_one_killed_and_restarted_loses_nothing() {
    const N: usize = 3_000;
    let pg = server();
    let (url, broker, app) = setup(pg, "app-failover").await;
    let shared = "$share/scriptd/vms/analytics/events/#";
    let mut runs: Vec<Run> =
        (1..=3).map(|i| start(&url, broker.port(), &format!("scriptd-{i}"), shared)).collect();
    for r in &mut runs {
        r.wait_component("broker", "up", 30).await;
    }

    let vms = ReliablePublisher::connect(broker.port(), "vms-failover");
    for i in 0..N / 3 {
        vms.publish(TOPIC, occ(i)).await;
    }
    // Mid-burst: instance 2 dies; systemd restarts it 2 s later with the same client id
    // (its broker session holds what was sent to it meanwhile).
    runs[1].kill();
    let killed = Instant::now();
    for i in N / 3..2 * N / 3 {
        vms.publish(TOPIC, occ(i)).await;
    }
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed())).await;
    runs[1] = start(&url, broker.port(), "scriptd-2", shared);
    for i in 2 * N / 3..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(60).await;
    runs[1].wait_component("broker", "up", 30).await;

    let refs: Vec<&Run> = runs.iter().collect();
    let (pushes, _) = all_pushed(&app, N, 120, &refs).await;
    let repeats = every_one_pushed(&pushes, N);
    let rows = pg.psql(db_name(&url), "SELECT count(*) FROM deliveries");
    assert_eq!(rows, N.to_string(), "one delivery per occurrence");
    eprintln!("shared subscription: {N} occurrences pushed, {repeats} repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundant_ingest_two_instances_one_killed_for_good_the_other_delivers_everything() {
    const N: usize = 2_000;
    let pg = server();
    let (url, broker, app) = setup(pg, "app-redundant").await;
    let plain = "vms/analytics/events/#";
    let mut a = start(&url, broker.port(), "scriptd-a", plain);
    let mut b = start(&url, broker.port(), "scriptd-b", plain);
    a.wait_component("broker", "up", 30).await;
    b.wait_component("broker", "up", 30).await;

    let vms = ReliablePublisher::connect(broker.port(), "vms-redundant");
    for i in 0..N / 2 {
        vms.publish(TOPIC, occ(i)).await;
    }
    a.kill(); // for good
    let killed = Instant::now();
    for i in N / 2..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    vms.wait_acked(60).await;

    let (pushes, complete) = all_pushed(&app, N, 120, &[&a, &b]).await;
    let repeats = every_one_pushed(&pushes, N);
    // Both instances took every occurrence in before the kill; each is one row.
    let rows = pg.psql(db_name(&url), "SELECT count(*) FROM deliveries");
    assert_eq!(rows, N.to_string(), "one delivery per occurrence");
    // What the dead instance had claimed is attempted by the other once the lease ends.
    let lease = Duration::from_secs(LEASE_SECONDS.parse().unwrap_or(5));
    // Rows the dead instance pushed but did not record as sent are pushed again by the
    // other once their lease ends (repeats, within max_in_flight), and then recorded.
    let unsent = "SELECT count(*) FROM deliveries WHERE state <> 'sent'";
    within(lease.as_secs() + 10, "every delivery recorded as sent", async {
        while pg.psql(db_name(&url), unsent) != "0" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let took = complete.duration_since(killed);
    assert!(took <= lease + Duration::from_secs(5), "the last push came {took:?} after the kill");
    eprintln!(
        "redundant ingest: {N} occurrences pushed, {repeats} repeated, the last {took:?} after the kill"
    );
}

/// PostgreSQL restarted in the middle of a burst taken in by two instances (a shared
/// subscription): nothing is acknowledged while it is down, and once it is back every
/// occurrence is pushed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_mid_burst_under_two_instances_loses_nothing() {
    const N: usize = 600;
    // A server of its own: this test stops it.
    let pg = PgServer::start();
    let (url, broker, app) = setup(&pg, "app-pg-restart").await;
    let shared = "$share/scriptd/vms/analytics/events/#";
    let mut runs = [
        start(&url, broker.port(), "scriptd-r1", shared),
        start(&url, broker.port(), "scriptd-r2", shared),
    ];
    for r in &mut runs {
        r.wait_component("broker", "up", 30).await;
    }
    let vms = ReliablePublisher::connect(broker.port(), "vms-pg-restart");
    for i in 0..N / 2 {
        vms.publish(TOPIC, occ(i)).await;
    }
    pg.halt();
    let halted = Instant::now();
    for i in N / 2..N {
        vms.publish(TOPIC, occ(i)).await;
    }
    for r in &mut runs {
        r.wait_component("store", "down", 15).await;
    }
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(halted.elapsed())).await;
    pg.restart();
    vms.wait_acked(60).await;

    let refs: Vec<&Run> = runs.iter().collect();
    let (pushes, _) = all_pushed(&app, N, 120, &refs).await;
    let repeats = every_one_pushed(&pushes, N);
    eprintln!("PostgreSQL restarted: {N} occurrences pushed, {repeats} repeated");
}
