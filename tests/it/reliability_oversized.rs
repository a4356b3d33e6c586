//! One oversized occurrence must never stop ingestion: against a real Mosquitto with its
//! default configuration (no `message_size_limit`), a 9 MB and a 300 KB occurrence between
//! ordinary ones never fire, the ordinary ones are pushed within 5 s, the events connection
//! never breaks, and a restart finds nothing stuck. An occurrence under the limit whose
//! `data` is over the push bound fires without its data. Both protocols:
//!
//! - MQTT 3.1.1: both large ones are read and rejected as `too_large` (and acknowledged);
//! - MQTT 5: the daemon announced a Maximum Packet Size of 256 KiB + 70 KiB, so Mosquitto
//!   never sends the 9 MB one (it drops it for this client); the 300 KB one fits the packet
//!   limit and is rejected as `too_large`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::daemon::{Daemon, DaemonOptions, script};
use crate::support::mosquitto::Mosquitto;
use crate::support::{TestClient, within};
use serde_json::{Value, json};

const TOPIC: &str = "vms/analytics/events/1";
const SIDEBAR: i64 = 2;
const FACE: i64 = 1;

fn occurrence(id: &str, data_bytes: usize) -> Vec<u8> {
    json!({
        "id": id,
        "event_id": FACE,
        "camera_id": 1,
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "data": {"image": "x".repeat(data_bytes)},
    })
    .to_string()
    .into_bytes()
}

/// The value of the metric line that starts with `series` (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

const TOO_LARGE: &str = "scriptd_occurrences_rejected_total{reason=\"too_large\"}";
const RECONNECTS: &str = "scriptd_mqtt_reconnects_total{connection=\"events\"}";

/// The metrics text once `too_large` has counted at least `n` (at most 5 s).
async fn too_large_reaches(d: &Daemon, n: f64) -> String {
    within(5, "the too_large rejections counted", async {
        loop {
            let m = d.metrics().await;
            if metric(&m, TOO_LARGE) >= n {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Collects pushes for user 1 until every id in `want` arrived (at most `secs`), and returns
/// every push received meanwhile by occurrence id.
async fn pushes_for(app: &mut TestClient, want: &[&str], secs: u64) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    within(secs, "the ordinary occurrences' pushes", async {
        while !want.iter().all(|w| seen.contains(*w)) {
            let p = app.next(secs).await;
            let v: Value = serde_json::from_slice(&p.payload).expect("push JSON");
            seen.insert(v["occurrence_id"].as_str().unwrap_or_default().to_owned());
            all.push(v);
        }
    })
    .await;
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_reads_and_rejects_oversized_occurrences() {
    scenario("3.1.1", 2.0, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_has_the_broker_keep_oversized_packets_away() {
    scenario("5", 1.0, 0.0).await;
}

/// `too_large`: how many rejections the first burst and the restart should count.
async fn scenario(protocol: &str, too_large: f64, too_large_after_restart: f64) {
    let broker = Mosquitto::start().await;
    let opts = DaemonOptions {
        external_broker: Some(broker.port()),
        env: vec![
            ("SCRIPTD__EVENTS__MAX_AGE_SECONDS".into(), "0".into()),
            ("SCRIPTD__MQTT__PROTOCOL".into(), protocol.into()),
        ],
        ..DaemonOptions::default()
    };
    let mut d = Daemon::start(opts).await;
    let all_day = json!({"days": [{"type": "same_every_day", "from": "00:00Z", "to": "23:59Z", "breaks": []}]});
    d.create_script(&script("pop-up", SIDEBAR, FACE, &[1], all_day)).await;
    let mut app = TestClient::connect(broker.port(), "app-oversized").await;
    app.subscribe("vms/users/1/reactions").await;
    let vms = TestClient::connect_with_max_packet(broker.port(), "vms-oversized", 16 << 20).await;
    let before = d.metrics().await;

    vms.publish(TOPIC, occurrence("ok-1", 10)).await;
    vms.publish(TOPIC, occurrence("huge-9mb", 9_000_000)).await;
    vms.publish(TOPIC, occurrence("ok-2", 10)).await;
    vms.publish(TOPIC, occurrence("big-300kb", 300_000)).await;
    vms.publish(TOPIC, occurrence("ok-3", 10)).await;
    // Under the 256 KiB limit, but its data is over the 64 KiB push bound.
    vms.publish(TOPIC, occurrence("data-100kb", 100_000)).await;

    let pushes = pushes_for(&mut app, &["ok-1", "ok-2", "ok-3", "data-100kb"], 5).await;
    for p in &pushes {
        let id = p["occurrence_id"].as_str().unwrap_or_default();
        assert!(!["huge-9mb", "big-300kb"].contains(&id), "an oversized occurrence fired: {id}");
        if id == "data-100kb" {
            assert_eq!(p["data"], Value::Null, "data over the bound left out");
            assert_eq!(p["data_truncated"], true);
        } else {
            assert_eq!(p["data"]["image"], "x".repeat(10));
            assert!(p.get("data_truncated").is_none(), "{p}");
        }
    }
    let after = too_large_reaches(&d, too_large).await;
    assert_eq!(metric(&after, TOO_LARGE), too_large, "{after}");
    assert_eq!(metric(&after, RECONNECTS), metric(&before, RECONNECTS), "no reconnect loop");
    assert!(d.log().contains("too_large"), "the rejection is logged with its reason");
    // Mosquitto names each client's protocol (p2 = 3.1.1, p5 = 5) and logs the packets it
    // kept from a client that announced a smaller Maximum Packet Size.
    let log = broker.log();
    let v5 = protocol == "5";
    let tag = format!("as scriptd-test-{} ({}, c0", d.api_port, if v5 { "p5" } else { "p2" });
    assert!(log.contains(&tag), "the events connection speaks MQTT {protocol}:\n{log}");
    assert_eq!(log.contains("Dropping too large outgoing PUBLISH"), v5, "{log}");

    // A restart finds nothing stuck: the oversized ones were acknowledged and never come back,
    // and one more oversized occurrence arriving while the daemon is down is rejected too.
    // (First every message received is acknowledged: a push can arrive before the ack of its
    // batch is written, and an unacknowledged message is rightly delivered again.)
    let received = if v5 { 5.0 } else { 6.0 };
    within(5, "every received occurrence acknowledged", async {
        while metric(&d.metrics().await, "scriptd_mqtt_acks_total") < received {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    d.sigterm(15).await;
    vms.publish(TOPIC, occurrence("huge-while-down", 9_000_000)).await;
    vms.publish(TOPIC, occurrence("ok-4", 10)).await;
    d.spawn().await;
    vms.publish(TOPIC, occurrence("ok-5", 10)).await;
    let pushes = pushes_for(&mut app, &["ok-4", "ok-5"], 10).await;
    assert!(pushes.iter().all(|p| p["occurrence_id"] != "huge-while-down"));
    let restarted = too_large_reaches(&d, too_large_after_restart).await;
    assert_eq!(metric(&restarted, TOO_LARGE), too_large_after_restart, "{restarted}");
    assert_eq!(metric(&restarted, RECONNECTS), 0.0, "{restarted}");
}
