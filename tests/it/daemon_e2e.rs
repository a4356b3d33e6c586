//! End to end through the real `scriptd run`: scripts created through the API, occurrences
//! published at QoS 1 like an analytics server, pushes received like a client app — against
//! the embedded broker and against Debian's Mosquitto; Telegram and webhooks against local
//! peers; a SIGKILL with deliveries pending and occurrences published while the daemon is
//! down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::daemon::{Daemon, DaemonOptions, all_day, occurrence, script};
use crate::support::mosquitto::Mosquitto;
use crate::support::telegram_stub::TelegramStub;
use crate::support::webhook_receiver::WebhookReceiver;
use crate::support::{TestClient, within};
use serde_json::{Value, json};

const SIDEBAR: i64 = 2;
const SOUND: i64 = 4;
const TELEGRAM: i64 = 1;
const WEBHOOK: i64 = 5;
const FACE: i64 = 1;
const LINE: i64 = 5;

fn never_stale() -> DaemonOptions {
    DaemonOptions {
        env: vec![("SCRIPTD__EVENTS__MAX_AGE_SECONDS".into(), "0".into())],
        ..DaemonOptions::default()
    }
}

fn office_hours() -> Value {
    json!({"days": [{"type": "same_every_day", "from": "08:00Z", "to": "17:00Z",
                     "breaks": [{"from": "12:00Z", "to": "13:00Z"}]}]})
}

/// Receives pushes until `quiet` passes without one; returns (user, payload) pairs.
async fn collect(app: &mut TestClient, expect: usize, quiet: Duration) -> Vec<(i64, Value)> {
    let mut got = Vec::new();
    loop {
        let wait = if got.len() < expect { 15 } else { quiet.as_secs().max(1) };
        let next = tokio::time::timeout(Duration::from_secs(wait), app.next(wait + 1)).await;
        let Ok(p) = next else { break };
        let user: i64 =
            p.topic.split('/').nth(2).and_then(|u| u.parse().ok()).expect("user in topic");
        let v: Value = serde_json::from_slice(&p.payload).expect("push is JSON");
        got.push((user, v));
        if got.len() >= expect && quiet.is_zero() {
            break;
        }
    }
    got
}

/// The scenario of the seed API description: listed users and sub-users only, nothing outside the
/// timetable, breaks respected, a disabled script silent, a camera filter respected, a
/// duplicate id delivered once, an event given by name, invalid payloads counted.
async fn scenario(d: &Daemon) {
    let a = d.create_script(&script("office", SIDEBAR, FACE, &[1], office_hours())).await;
    let mut b = script("gate", SOUND, LINE, &[4], all_day());
    b["cameras"] = json!([17]);
    let b = d.create_script(&b).await;
    let mut c = script("disabled", SOUND, FACE, &[4], all_day());
    c["status"] = json!("disabled");
    d.create_script(&c).await;

    let mut app = TestClient::connect(d.mqtt_port, &format!("app-{}", d.api_port)).await;
    app.subscribe("vms/users/+/reactions").await;
    let vms = TestClient::connect(d.mqtt_port, &format!("vms-{}", d.api_port)).await;
    let topic = "vms/analytics/events/5";
    vms.publish(topic, occurrence("o1", FACE, 5, "2026-11-27T10:00:00Z")).await; // inside
    vms.publish(topic, occurrence("o2", FACE, 5, "2026-11-27T12:30:00Z")).await; // in the break
    vms.publish(topic, occurrence("o3", FACE, 5, "2026-11-27T20:00:00Z")).await; // outside
    vms.publish(topic, occurrence("o4", LINE, 17, "2026-11-27T10:00:00Z")).await; // camera 17
    vms.publish(topic, occurrence("o5", LINE, 18, "2026-11-27T10:00:00Z")).await; // other camera
    vms.publish(topic, occurrence("o1", FACE, 5, "2026-11-27T10:00:00Z")).await; // duplicate id
    vms.publish(
        topic,
        json!({"id": "o7", "event": "face_recognized", "camera_id": 9, "occurred_at": "2026-11-27T15:30:00+05:00"})
            .to_string(),
    )
    .await; // by name, 10:30Z
    vms.publish(topic, "not json").await;

    let got = collect(&mut app, 7, Duration::from_secs(2)).await;
    let seen: BTreeSet<(i64, String)> = got
        .iter()
        .map(|(u, v)| (*u, v["occurrence_id"].as_str().unwrap_or_default().to_owned()))
        .collect();
    let want: BTreeSet<(i64, String)> =
        [(1, "o1"), (2, "o1"), (3, "o1"), (4, "o4"), (1, "o7"), (2, "o7"), (3, "o7")]
            .into_iter()
            .map(|(u, o)| (u, o.to_owned()))
            .collect();
    assert_eq!(seen, want, "pushes: {got:#?}");
    assert_eq!(got.len(), 7, "a push arrived twice: {got:#?}");
    // The payload of CONTRACT §5.
    let (_, p) =
        got.iter().find(|(u, v)| *u == 2 && v["occurrence_id"] == "o1").expect("push for user 2");
    let a_id = a["id"].as_i64().expect("script id");
    assert_eq!(p["reaction"], "show-camera-sidebar");
    assert_eq!(p["delivery_id"], format!("o1:{a_id}:2"));
    assert_eq!(p["script"], json!({"id": a_id, "title": "office"}));
    assert_eq!(p["event"]["name"], "face_recognized");
    assert_eq!(p["camera_id"], 5);
    assert_eq!(p["occurred_at"], "2026-11-27T10:00:00+00:00");
    assert_eq!(p["data"], json!({"plate": "A123BC"}));
    let (_, p7) = got.iter().find(|(_, v)| v["occurrence_id"] == "o7").expect("o7");
    assert_eq!(p7["occurred_at"], "2026-11-27T15:30:00+05:00", "the sender's offset is kept");

    // The deliveries are visible through the API, sent.
    let deliveries = within(10, "deliveries marked sent", async {
        loop {
            let v = d.get(&format!("/scripts/{a_id}/deliveries")).await;
            let rows = v["data"].as_array().cloned().unwrap_or_default();
            if rows.len() == 6 && rows.iter().all(|r| r["state"] == "sent") {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(deliveries.len(), 6);
    let b_id = b["id"].as_i64().expect("id");
    let v = d.get_as(&d.token_4, &format!("/scripts/{b_id}/deliveries")).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1));

    // The invalid payload was counted, not fatal.
    let metrics = d.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("scriptd_occurrences_rejected_total{reason=\"not_json\"} 1")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_end_to_end() {
    let mut d = Daemon::start(never_stale()).await;
    scenario(&d).await;
    let status = d.sigterm(20).await;
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_end_to_end() {
    let broker = Mosquitto::start().await;
    let mut d =
        Daemon::start(DaemonOptions { external_broker: Some(broker.port()), ..never_stale() })
            .await;
    scenario(&d).await;
    let status = d.sigterm(20).await;
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_and_webhook_end_to_end() {
    let stub = TelegramStub::start().await;
    let hook = WebhookReceiver::start(Some("s3cret")).await;
    let mut opts = never_stale();
    opts.env.push(("SCRIPTD__TELEGRAM__API_URL".into(), stub.api_url()));
    let d = Daemon::start(opts).await;
    let mut tg = script("front door", TELEGRAM, FACE, &[1], all_day());
    tg["extra"] = json!({"bot_token": "123456:SECRET-token", "chat_id": "4242"});
    let tg = d.create_script(&tg).await;
    let mut wh = script("hook", WEBHOOK, FACE, &[1], all_day());
    wh["extra"] = json!({"url": hook.url(), "secret": "s3cret"});
    d.create_script(&wh).await;

    let vms = TestClient::connect(d.mqtt_port, "vms-tg").await;
    for i in 0..3 {
        vms.publish(
            "vms/analytics/events/1",
            occurrence(&format!("t{i}"), FACE, 7, &format!("2026-11-27T10:00:0{i}Z")),
        )
        .await;
        // One at a time: messages of one script queued together for a chat are coalesced.
        stub.wait_for(i + 1, Duration::from_secs(20)).await;
    }
    let sent = stub.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(sent.len(), 3);
    for (i, r) in sent.iter().enumerate() {
        assert_eq!(r.token, "123456:SECRET-token");
        assert_eq!(r.chat_id, "4242");
        let text = r.text.as_deref().unwrap_or_default();
        assert!(
            text.contains("front door") && text.contains("Face recognised") && text.contains('7'),
            "{text}"
        );
        assert!(text.contains(&format!("10:00:0{i}")), "in order, with the local time: {text}");
        assert!(text.contains("plate: A123BC"), "the occurrence's data: {text}");
    }
    let hooks = hook.wait_for(3, Duration::from_secs(20)).await;
    assert!(hooks.iter().all(|h| h.signature_valid), "signatures verify");
    let ids: BTreeSet<String> = hooks
        .iter()
        .map(|h| h.json()["occurrence_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, ["t0", "t1", "t2"].into_iter().map(String::from).collect());
    // The bot token never reaches the log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!d.log().contains("SECRET-token"), "bot token in the log:\n{}", d.log());
    let tg_id = tg["id"].as_i64().expect("id");
    let v = d.get(&format!("/scripts/{tg_id}/deliveries")).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(3));
}

/// SIGKILL while deliveries are pending, occurrences published while the daemon is down
/// (persistent session at Mosquitto): after the restart every occurrence is delivered, and
/// repeats are few, bounded by `delivery.max_in_flight`, and carry the same delivery id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_downtime_lose_nothing() {
    let broker = Mosquitto::start().await;
    let mut d =
        Daemon::start(DaemonOptions { external_broker: Some(broker.port()), ..never_stale() })
            .await;
    d.create_script(&script("all", SOUND, FACE, &[4], all_day())).await;
    let mut app = TestClient::connect(broker.port(), "app-kill").await;
    app.subscribe("vms/users/4/reactions").await;
    let vms = TestClient::connect(broker.port(), "vms-kill").await;

    const BEFORE: usize = 300;
    const DOWN: usize = 200;
    for i in 0..BEFORE {
        vms.publish(
            "vms/analytics/events/1",
            occurrence(&format!("k{i}"), FACE, 1, "2026-11-27T10:00:00Z"),
        )
        .await;
    }
    // Kill it while it is working through the burst: after the first push, with deliveries
    // still pending in its outbox (counted just before the kill).
    let first = app.next(20).await;
    let db = rusqlite::Connection::open_with_flags(
        d.dir.path().join("scriptd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the daemon's database read-only");
    let pending: i64 = db
        .query_row("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'", [], |r| r.get(0))
        .expect("count pending deliveries");
    d.kill9();
    drop(db);
    println!("sigkill: {pending} deliveries pending at the kill");
    assert!(pending > 0, "nothing was pending when the daemon was killed: the kill proves nothing");
    for i in BEFORE..BEFORE + DOWN {
        vms.publish(
            "vms/analytics/events/1",
            occurrence(&format!("k{i}"), FACE, 1, "2026-11-27T10:00:00Z"),
        )
        .await;
    }
    d.spawn().await;

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    fn record(
        p: &rumqttc::Publish,
        counts: &mut BTreeMap<String, usize>,
        ids: &mut BTreeMap<String, BTreeSet<String>>,
    ) {
        let v: Value = serde_json::from_slice(&p.payload).expect("json");
        let occ = v["occurrence_id"].as_str().unwrap_or_default().to_owned();
        ids.entry(occ.clone())
            .or_default()
            .insert(v["delivery_id"].as_str().unwrap_or_default().to_owned());
        *counts.entry(occ).or_default() += 1;
    }
    record(&first, &mut counts, &mut ids);
    within(60, "every occurrence delivered after the restart", async {
        while counts.len() < BEFORE + DOWN {
            let p = app.next(30).await;
            record(&p, &mut counts, &mut ids);
        }
    })
    .await;
    // Let stragglers (repeats) arrive.
    while let Ok(p) = tokio::time::timeout(Duration::from_secs(2), app.next(3)).await {
        record(&p, &mut counts, &mut ids);
    }
    let repeats: usize = counts.values().map(|c| c - 1).sum();
    assert_eq!(counts.len(), BEFORE + DOWN, "lost occurrences");
    assert!(repeats <= 100, "{repeats} repeats for one kill, more than delivery.max_in_flight");
    assert!(ids.values().all(|s| s.len() == 1), "a repeat carried another delivery id");
    println!("sigkill: {} occurrences delivered, {repeats} repeated", counts.len());
    let integrity = std::process::Command::new(crate::support::tools::require("sqlite3"))
        .arg(d.dir.path().join("scriptd.db"))
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("sqlite3");
    assert_eq!(String::from_utf8_lossy(&integrity.stdout).trim(), "ok");
}

/// Opens user 1's reaction stream (200 asserted).
async fn open_stream(d: &Daemon) -> reqwest::Response {
    let resp = reqwest::Client::new()
        .get(d.url("/reactions/stream"))
        .bearer_auth(&d.token)
        .send()
        .await
        .expect("GET stream");
    assert_eq!(resp.status(), 200);
    resp
}

/// The server-sent-event stream carries the caller's pushes (and only theirs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaction_stream_carries_the_callers_pushes() {
    use futures_util::StreamExt;
    let d = Daemon::start(never_stale()).await;
    d.create_script(&script("stream", SIDEBAR, FACE, &[1, 2], all_day())).await;
    let resp = open_stream(&d).await;
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let mut body = resp.bytes_stream();
    let vms = TestClient::connect(d.mqtt_port, "vms-sse").await;
    vms.publish("vms/analytics/events/1", occurrence("sse-1", FACE, 3, "2026-11-27T10:00:00Z"))
        .await;
    let text = within(15, "a push on the stream", async {
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            if text.contains("\n\n") && text.contains("data:") {
                return text;
            }
        }
        text
    })
    .await;
    assert!(text.contains("event: reaction"), "{text}");
    assert!(text.contains("id: sse-1:"), "{text}");
    let data: Value = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str(d).ok())
        .expect("data line with JSON");
    assert_eq!(data["occurrence_id"], "sse-1");
    // The token's user is 1: the pushes for its sub-users 2 and 3 are not on this stream.
    assert!(data["delivery_id"].as_str().is_some_and(|id| id.ends_with(":1")), "{data}");
    let unauth = reqwest::get(d.url("/reactions/stream")).await.expect("GET");
    assert_eq!(unauth.status(), 401);
}

/// Open reaction streams never hold up SIGTERM: each ends with a `shutdown` event and the
/// daemon exits 0 within `delivery.shutdown_deadline_seconds` (10) + 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_open_reaction_streams_exits_promptly() {
    use futures_util::StreamExt;
    let mut d = Daemon::start(never_stale()).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let resp = open_stream(&d).await;
        streams.push(tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut text = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        }));
    }
    // Let the streams be established server-side before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = d.sigterm(12).await;
    assert!(status.success(), "exit status {status:?} after SIGTERM with open streams");
    println!("exit {:?} after SIGTERM with 3 open streams", started.elapsed());
    for s in streams {
        let text = within(5, "the stream to end", s).await.expect("stream task");
        assert!(
            text.contains("event: shutdown"),
            "stream ended without the shutdown event: {text:?}"
        );
    }
}

/// `/healthz` follows the real components: both MQTT connections go down with the broker
/// and come back with it, and the store goes down when the database file disappears;
/// `/livez` stays 200 throughout (nothing is hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_both_mqtt_connections_and_the_store() {
    let mut broker = Mosquitto::start().await;
    let d = Daemon::start(DaemonOptions {
        external_broker: Some(broker.port()),
        ..DaemonOptions::default()
    })
    .await;
    let get = |path: &'static str| {
        let url = format!("http://127.0.0.1:{}{path}", d.api_port);
        async move {
            let res = reqwest::get(url).await.expect("GET");
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.expect("json"))
        }
    };
    let wait_for = |want: u16, pred: fn(&Value) -> bool, what: &'static str| async move {
        within(15, what, async {
            loop {
                let (status, body) = get("/healthz").await;
                if status == want && pred(&body) {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    };
    let (status, body) = get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    for c in ["store", "broker", "push", "dispatchers"] {
        assert_eq!(body["components"][c]["state"], "up", "{c}: {body}");
    }

    broker.kill();
    let body = wait_for(
        503,
        |b| {
            b["components"]["broker"]["state"] == "down"
                && b["components"]["push"]["state"] == "down"
        },
        "both MQTT connections down",
    )
    .await;
    let reason = body["components"]["push"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("not connected to the MQTT broker: "), "{body}");
    assert_eq!(get("/livez").await.0, 200);
    broker.spawn().await;
    wait_for(200, |_| true, "healthy again after the broker's return").await;

    std::fs::remove_file(d.dir.path().join("scriptd.db")).expect("remove the database");
    let body = wait_for(503, |b| b["components"]["store"]["state"] == "down", "store down").await;
    let reason = body["components"]["store"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("database: "), "{body}");
    assert_eq!(get("/livez").await.0, 200);
}

/// SIGHUP applies a valid change live and keeps running on an invalid one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_or_keeps_the_running_config() {
    let d = Daemon::start(DaemonOptions::default()).await;
    let local = d.dir.path().join("config/local.toml");
    let hup = |pid: u32| {
        std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status().expect("kill")
    };
    let pid = d.pid().expect("running");
    std::fs::write(&local, "[events]\nmax_age_seconds = -5\n").expect("write");
    hup(pid);
    within(10, "the rejection in the log", async {
        while !d.log().contains("configuration reload rejected") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(d.log().contains("events.max_age_seconds"), "the reason names the key:\n{}", d.log());
    let health =
        reqwest::get(format!("http://127.0.0.1:{}/healthz", d.api_port)).await.expect("healthz");
    assert!(health.status().is_success(), "still running");
    std::fs::write(&local, "[events]\nmax_age_seconds = 0\n").expect("write");
    hup(pid);
    within(10, "the reload in the log", async {
        while !d.log().contains("configuration reloaded") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Applied live: an old occurrence is no longer stale.
    d.create_script(&script("old", SIDEBAR, FACE, &[4], all_day())).await;
    let mut app = TestClient::connect(d.mqtt_port, "app-hup").await;
    app.subscribe("vms/users/4/reactions").await;
    let vms = TestClient::connect(d.mqtt_port, "vms-hup").await;
    vms.publish("vms/analytics/events/1", occurrence("old-1", FACE, 1, "2020-01-01T10:00:00Z"))
        .await;
    let p = app.next(15).await;
    let v: Value = serde_json::from_slice(&p.payload).expect("json");
    assert_eq!(v["occurrence_id"], "old-1");
}
