//! Flood control against the real `scriptd run` with Mosquitto and the Bot API stub:
//! Telegram coalescing under a burst faster than a chat's rate limit, and the per-camera
//! cooldown (also across a restart and a replay of the same stream).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::TestClient;
use crate::support::daemon::{Daemon, DaemonOptions, all_day, occurrence, script};
use crate::support::mosquitto::Mosquitto;
use crate::support::telegram_stub::{Answer, TelegramStub};
use serde_json::json;

const TELEGRAM: i64 = 1;
const LINE: i64 = 5;

fn options(broker: &Mosquitto, stub: &TelegramStub) -> DaemonOptions {
    DaemonOptions {
        external_broker: Some(broker.port()),
        env: vec![
            ("SCRIPTD__EVENTS__MAX_AGE_SECONDS".into(), "0".into()),
            ("SCRIPTD__TELEGRAM__API_URL".into(), stub.api_url()),
        ],
        ..DaemonOptions::default()
    }
}

/// Delivery states of a script, read from the daemon's database.
fn states(d: &Daemon, script_id: i64) -> BTreeMap<String, usize> {
    let conn = rusqlite::Connection::open(d.dir.path().join("scriptd.db")).expect("open db");
    let mut stmt = conn
        .prepare("SELECT state, COUNT(*) FROM deliveries WHERE script_id = ?1 GROUP BY state")
        .expect("prepare");
    stmt.query_map([script_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn at(secs: i64) -> String {
    (chrono::DateTime::from_timestamp(1_795_000_000, 0).expect("time")
        + chrono::Duration::seconds(secs))
    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// 5 occurrences/s for 20 s to one chat without a cooldown: at most 22 Telegram requests
/// in the burst's 20 s plus 2 s, the last occurrence (the only one on camera 9) reported
/// within 2 s of its publish, and every delivery ends sent or coalesced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_one_chat_is_coalesced_to_its_rate() {
    let broker = Mosquitto::start().await;
    let stub = TelegramStub::start().await;
    let d = Daemon::start(options(&broker, &stub)).await;
    let mut body = script("line crossing", TELEGRAM, LINE, &[1], all_day());
    body["extra"] = json!({"bot_token": "123456:flood", "chat_id": "77"});
    let id = d.create_script(&body).await["id"].as_i64().expect("script id");
    let vms = TestClient::connect(broker.port(), "vms-burst").await;

    let started = Instant::now();
    let mut last_publish = started;
    for i in 0..100i64 {
        let due = started + Duration::from_millis(200 * i as u64);
        tokio::time::sleep_until(due.into()).await;
        let camera = if i == 99 { 9 } else { 7 };
        vms.publish("vms/analytics/events/1", occurrence(&format!("b{i}"), LINE, camera, &at(i)))
            .await;
        last_publish = Instant::now();
    }
    let last_time = at(99);
    let last_clock = &last_time[11..19];
    let deadline = last_publish + Duration::from_secs(2);
    let mut reported = None;
    while Instant::now() < deadline + Duration::from_secs(1) && reported.is_none() {
        reported = stub.recorded().into_iter().find(|r| {
            let text = r.text.as_deref().unwrap_or_default();
            text.contains(last_clock) && text.contains('9')
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reported = reported.expect("the last occurrence was never reported");
    assert!(
        reported.at <= deadline,
        "the last occurrence was reported {:?} after its publish",
        reported.at.duration_since(last_publish)
    );
    let window = started + Duration::from_secs(22);
    let in_window = stub.recorded().iter().filter(|r| r.at <= window).count();
    assert!(in_window <= 22, "{in_window} Telegram requests in 22 s");

    let mut finished = BTreeMap::new();
    for _ in 0..100 {
        finished = states(&d, id);
        if !finished.contains_key("pending") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!finished.contains_key("pending"), "{finished:?}");
    assert_eq!(finished.keys().cloned().collect::<Vec<_>>(), ["coalesced", "sent"], "{finished:?}");
    assert_eq!(finished.values().sum::<usize>(), 100);
    assert_eq!(finished["sent"], stub.recorded().len());
    let metrics = d.metrics().await;
    let line = format!("scriptd_deliveries_coalesced_total {}", finished["coalesced"]);
    assert!(metrics.contains(&line), "{line} not in {metrics}");
}

/// `cooldown_seconds = 10`, occurrences every 0.5 s for 25 s on cameras 7 and 8: three
/// messages per camera; a restart in the middle does not reset the cooldown and the whole
/// stream replayed after it (same ids) adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cooldown_holds_per_camera_across_a_restart_and_a_replay() {
    let broker = Mosquitto::start().await;
    let stub = TelegramStub::start().await;
    let mut d = Daemon::start(options(&broker, &stub)).await;
    let mut body = script("plate seen", TELEGRAM, LINE, &[1], all_day());
    body["extra"] = json!({"bot_token": "123456:cool", "chat_id": "78", "cooldown_seconds": 10});
    let id = d.create_script(&body).await["id"].as_i64().expect("script id");
    let stream: Vec<(String, i64, String)> = (0..50i64)
        .flat_map(|i| {
            let t = chrono::DateTime::from_timestamp_millis(1_795_000_000_000 + i * 500)
                .expect("time")
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            [7, 8].map(|cam| (format!("c{cam}-{i}"), cam, t.clone()))
        })
        .collect();
    let publish = |part: Vec<(String, i64, String)>| {
        let port = broker.port();
        async move {
            let vms = TestClient::connect(port, "vms-cool").await;
            for (oid, cam, t) in part {
                vms.publish("vms/analytics/events/1", occurrence(&oid, LINE, cam, &t)).await;
                // Firings 2 s apart in real time: each is sent before the next is queued,
                // so coalescing (tested above) does not merge them.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    // The first half (0–12 s), a restart, then the rest.
    publish(stream[..50].to_vec()).await;
    d.sigterm(10).await;
    d.spawn().await;
    publish(stream[50..].to_vec()).await;
    let sent = stub.wait_for(6, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The whole stream again, after another restart.
    d.sigterm(10).await;
    d.spawn().await;
    publish(stream.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = stub.recorded();
    assert_eq!(all.len(), 6, "{:?}", all.iter().map(|r| r.text.clone()).collect::<Vec<_>>());
    let per_camera = |cam: &str| {
        sent.iter()
            .filter(|r| r.text.as_deref().unwrap_or_default().contains(&format!("Camera: {cam}")))
            .count()
    };
    assert_eq!((per_camera("7"), per_camera("8")), (3, 3));
    assert_eq!(states(&d, id).values().sum::<usize>(), 6);
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("scriptd_occurrences_suppressed_total{reason=\"cooldown\"}"),
        "{metrics}"
    );
}

/// The Bot API down (every request to the chat answered 500) while the pushes' broker is
/// up, with `delivery.expire_after_seconds.telegram` scaled from 900 s down to 6 s: the
/// delivery older than that when the API returns ends `expired` and is never sent, the
/// younger one is sent. Same dispatcher code paths as 900 s, only shorter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_deliveries_older_than_their_expiry_are_never_sent_late() {
    let broker = Mosquitto::start().await;
    let stub = TelegramStub::start().await;
    let mut opts = options(&broker, &stub);
    opts.env.extend([
        ("SCRIPTD__DELIVERY__EXPIRE_AFTER_SECONDS__TELEGRAM".to_owned(), "6".to_owned()),
        ("SCRIPTD__DELIVERY__BACKOFF_MAX_MS".to_owned(), "500".to_owned()),
    ]);
    let d = Daemon::start(opts).await;
    let mut body = script("zone", TELEGRAM, LINE, &[1], all_day());
    body["extra"] = json!({"bot_token": "123456:down", "chat_id": "79"});
    let id = d.create_script(&body).await["id"].as_i64().expect("script id");
    for _ in 0..200 {
        stub.answer_for_chat("79", Answer::ServerError);
    }
    let vms = TestClient::connect(broker.port(), "vms-down").await;
    vms.publish("vms/analytics/events/1", occurrence("old", LINE, 7, &at(0))).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    vms.publish("vms/analytics/events/1", occurrence("young", LINE, 8, &at(60))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The API is back.
    stub.clear_answers();
    for _ in 0..100 {
        if stub.recorded().iter().any(|r| r.answer == Answer::Ok) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ok: Vec<String> = stub
        .recorded()
        .into_iter()
        .filter(|r| r.answer == Answer::Ok)
        .map(|r| r.text.unwrap_or_default())
        .collect();
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert!(ok[0].contains("Camera: 8"), "the young one is sent: {ok:?}");
    let s = states(&d, id);
    assert_eq!((s.get("expired"), s.get("sent")), (Some(&1), Some(&1)), "{s:?}");
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("scriptd_deliveries_expired_total{channel=\"telegram\"} 1"),
        "{metrics}"
    );
}
