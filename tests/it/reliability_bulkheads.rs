//! Bulkheads through the real daemon and Mosquitto: a hung webhook receiver or a
//! hung Bot API holds only its own channel's slots, so the camera pushes of the same
//! occurrences still arrive within 2 s of their publish; the hung target's circuit breaker
//! opens (`/healthz` degraded, `scriptd_breakers_open{channel=…}`), and once the target
//! answers again its deliveries arrive, none lost and none twice.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::support::clients::ReliablePublisher;
use crate::support::daemon::{Daemon, DaemonOptions, all_day, script};
use crate::support::mosquitto::Mosquitto;
use crate::support::telegram_stub::TelegramStub;
use crate::support::webhook_receiver::WebhookReceiver;
use crate::support::{TestClient, within};
use serde_json::{Value, json};

const TELEGRAM: i64 = 1;
const SIDEBAR: i64 = 2;
const WEBHOOK: i64 = 5;
const FACE: i64 = 1;
const TOPIC: &str = "vms/analytics/events/1";
const N: usize = 1_000;
/// The two scenarios run one after the other: each measures latency on a shared machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// The bound: publish → push at the operator's app.
const PUSH_BOUND: Duration = Duration::from_secs(2);

fn occ(seq: usize) -> Vec<u8> {
    json!({"id": format!("bh-{seq}"), "event_id": FACE, "camera_id": 1,
           "occurred_at": chrono::Utc::now().to_rfc3339()})
    .to_string()
    .into_bytes()
}

/// Short timeouts and probes so the test takes seconds, not minutes.
fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("SCRIPTD__WEBHOOK__TIMEOUT_SECONDS", "2"),
        ("SCRIPTD__TELEGRAM__REQUEST_TIMEOUT_SECONDS", "2"),
        ("SCRIPTD__DELIVERY__BACKOFF_INITIAL_MS", "200"),
        ("SCRIPTD__DELIVERY__BACKOFF_MAX_MS", "1000"),
        ("SCRIPTD__DELIVERY__BREAKER_AFTER_TIMEOUTS", "3"),
        ("SCRIPTD__DELIVERY__BREAKER_PROBE_SECONDS", "2"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    v.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    v
}

/// Publishes `N` occurrences at once and checks that every push for user 1 arrives within
/// [`PUSH_BOUND`] of its publish.
async fn every_push_in_time(broker: &Mosquitto, app: &mut TestClient, name: &str) {
    let vms = ReliablePublisher::connect(broker.port(), &format!("vms-{name}"));
    let mut published: HashMap<String, Instant> = HashMap::new();
    for i in 0..N {
        published.insert(format!("bh-{i}"), Instant::now());
        vms.publish(TOPIC, occ(i)).await;
    }
    let mut late: BTreeMap<String, Duration> = BTreeMap::new();
    let mut arrived: HashMap<String, Duration> = HashMap::new();
    while arrived.len() < N {
        let p = app.next(60).await;
        let v: Value = serde_json::from_slice(&p.payload).expect("push is JSON");
        let id = v["occurrence_id"].as_str().unwrap_or_default().to_owned();
        let Some(at) = published.get(&id) else { continue };
        let took = at.elapsed();
        if took > PUSH_BOUND {
            late.insert(id.clone(), took);
        }
        arrived.entry(id).or_insert(took);
    }
    vms.wait_acked(30).await;
    let worst = arrived.values().max().copied().unwrap_or_default();
    eprintln!("{name}: {N} pushes, slowest {worst:?} after its publish");
    assert!(late.is_empty(), "{} of {N} pushes later than {PUSH_BOUND:?}: {late:?}", late.len());
}

async fn healthz(d: &Daemon) -> (u16, Value) {
    let r = reqwest::get(format!("http://127.0.0.1:{}/healthz", d.api_port))
        .await
        .expect("GET /healthz");
    let code = r.status().as_u16();
    (code, r.json().await.expect("healthz JSON"))
}

/// Waits until `/healthz` shows the dispatchers in `state` (and the status `status`).
async fn wait_health(d: &Daemon, state: &str, status: &str, secs: u64) -> Value {
    within(secs, &format!("/healthz dispatchers {state}"), async {
        loop {
            let (code, v) = healthz(d).await;
            if v["components"]["dispatchers"]["state"] == state && v["status"] == status {
                assert_eq!(code, 200, "{v}");
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_webhook_receiver_delays_no_push_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let broker = Mosquitto::start().await;
    let hook = WebhookReceiver::start(Some("k")).await;
    hook.hang(true);
    let d = Daemon::start(DaemonOptions {
        external_broker: Some(broker.port()),
        env: env(&[]),
        ..DaemonOptions::default()
    })
    .await;
    d.create_script(&script("popup", SIDEBAR, FACE, &[1], all_day())).await;
    let mut s = script("hook", WEBHOOK, FACE, &[1], all_day());
    s["extra"] = json!({"url": hook.url(), "secret": "k"});
    d.create_script(&s).await;
    let mut app = TestClient::connect(broker.port(), "operator-app").await;
    app.subscribe("vms/users/1/reactions").await;

    every_push_in_time(&broker, &mut app, "webhook hangs").await;

    // The receiver's breaker opened: degraded, not unavailable; visible per channel.
    let v = wait_health(&d, "degraded", "degraded", 30).await;
    let reason = v["components"]["dispatchers"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("webhook: 127.0.0.1:"), "{v}");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "scriptd_breakers_open{channel=\"webhook\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "scriptd_breakers_open{channel=\"push\"}"), Some(0.0), "{m}");
    assert!(metric(&m, "scriptd_breaker_opened_total{channel=\"webhook\"}") >= Some(1.0));
    let hung = hook.hung();
    assert!(hung > 0, "the receiver saw attempts");
    // Backed off: no longer one attempt per delivery.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let hung_later = hook.hung();
    assert!(hung_later - hung <= 10, "{} attempts while backed off", hung_later - hung);

    // The receiver answers again: every webhook arrives, exactly once.
    hook.hang(false);
    let got = hook.wait_for(N, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = if got.len() < hook.received().len() { hook.received() } else { got };
    let mut per_occurrence: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        assert_eq!(r.status, 200);
        assert!(r.signature_valid);
        *per_occurrence
            .entry(r.json()["occurrence_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_occurrence.len(), N, "every webhook delivered");
    let twice: Vec<_> = per_occurrence.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    wait_health(&d, "up", "ok", 30).await;
    let m = d.metrics().await;
    assert_eq!(metric(&m, "scriptd_breakers_open{channel=\"webhook\"}"), Some(0.0), "{m}");
}

/// The daemon with a camera pop-up script and two Telegram scripts (two chats of one bot)
/// on the same event, the Bot API at `stub`, and the operator's app subscribed.
async fn popup_and_two_chats(
    broker: &Mosquitto,
    stub: &TelegramStub,
    app_id: &str,
) -> (Daemon, TestClient) {
    let d = Daemon::start(DaemonOptions {
        external_broker: Some(broker.port()),
        env: env(&[("SCRIPTD__TELEGRAM__API_URL", &stub.api_url())]),
        ..DaemonOptions::default()
    })
    .await;
    d.create_script(&script("popup", SIDEBAR, FACE, &[1], all_day())).await;
    // Two chats of one bot: two Telegram attempts at once (a chat's messages go one at a
    // time, so the rest of each chat's messages wait, to be coalesced).
    for chat in 0..2 {
        let mut s = script(&format!("tg {chat}"), TELEGRAM, FACE, &[1], all_day());
        s["extra"] = json!({"bot_token": "111:AAA", "chat_id": format!("{}", 500 + chat)});
        d.create_script(&s).await;
    }
    let mut app = TestClient::connect(broker.port(), app_id).await;
    app.subscribe("vms/users/1/reactions").await;
    (d, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_bot_api_delays_no_push() {
    let _serial = SERIAL.lock().await;
    let broker = Mosquitto::start().await;
    let stub = TelegramStub::start().await;
    stub.hang_all(true);
    let (d, mut app) = popup_and_two_chats(&broker, &stub, "operator-app-tg").await;

    every_push_in_time(&broker, &mut app, "Bot API hangs").await;

    let v = wait_health(&d, "degraded", "degraded", 30).await;
    let reason = v["components"]["dispatchers"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("telegram: bot "), "{v}");
    assert!(!reason.contains("AAA") && !v.to_string().contains("111:AAA"), "token shown: {v}");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "scriptd_breakers_open{channel=\"telegram\"}"), Some(1.0), "{m}");
    assert!(!m.contains("111:AAA"));

    // The Bot API answers again: the breaker closes and messages flow.
    stub.hang_all(false);
    stub.wait_for(2, Duration::from_secs(60)).await;
    wait_health(&d, "up", "ok", 30).await;
}

/// A working Bot API: each chat's queue is rate-limited, so the Telegram channel keeps
/// coalescing (writing) while the pushes flow. Its writes must never stall the intake
/// (they once waited for the intake's write lock while holding the hand-over's lock: every
/// push stalled for the busy timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_telegram_channel_delays_no_push() {
    let _serial = SERIAL.lock().await;
    let broker = Mosquitto::start().await;
    let stub = TelegramStub::start().await;
    let (d, mut app) = popup_and_two_chats(&broker, &stub, "operator-app-tg-busy").await;

    every_push_in_time(&broker, &mut app, "Telegram busy").await;

    // Both chats got messages, and the queued rest ended coalesced into summaries.
    stub.wait_for(2, Duration::from_secs(30)).await;
    let coalesced = within(30, "coalesced deliveries counted", async {
        loop {
            let m = d.metrics().await;
            if let Some(n) = metric(&m, "scriptd_deliveries_coalesced_total").filter(|n| *n > 0.0) {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(coalesced >= 1.0);
    assert!(!d.log().contains("database is busy"), "the outbox stalled on its own lock");
}
