//! The durable outbox and its dispatcher against real peers on 127.0.0.1: Mosquitto for
//! pushes, the Telegram stub, the webhook receiver and a slow HTTP peer that counts
//! concurrent requests. Every database is a fresh temp file from `Store::migrate`.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::mosquitto::Mosquitto;
use crate::support::telegram_stub::{Answer, TelegramStub};
use crate::support::webhook_receiver::WebhookReceiver;
use crate::support::{TestClient, within};
use arc_swap::ArcSwap;
use scriptd::dispatch::hub::PushHub;
use scriptd::dispatch::mqtt_push::MqttPusher;
use scriptd::dispatch::webhook::WebhookSender;
use scriptd::dispatch::worker::{Dispatcher, DispatcherConfig, DispatcherHandle, Senders};
use scriptd::mqtt::MqttConnectOptions;
use scriptd::secret::Secret;
use scriptd::settings::{LiveSettings, Settings};
use scriptd::store::outbox::{Handoff, NewDelivery, OutboxWriter, Target};
use scriptd::store::{Store, now_ms};
use tokio::sync::oneshot;

const TOKEN: &str = "123456:ABC-secret-token";

struct Db {
    _dir: tempfile::TempDir,
    store: Store,
    /// The writer's and every dispatcher's hand-over, as the daemon shares one.
    handoff: Arc<Handoff>,
    writer: OutboxWriter,
}

fn fresh_db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::migrate(&dir.path().join("scriptd.db")).unwrap();
    let handoff = Arc::new(Handoff::default());
    let writer = OutboxWriter::new(&store, handoff.clone()).unwrap();
    Db { _dir: dir, store, handoff, writer }
}

fn live_with(telegram_url: &str, f: impl FnOnce(&mut Settings)) -> Arc<ArcSwap<LiveSettings>> {
    let mut s = Settings::default();
    s.telegram.api_url = telegram_url.to_owned();
    s.telegram.per_chat_per_second = 20;
    s.telegram.request_timeout_seconds = 2;
    s.delivery.backoff_initial_ms = 100;
    s.delivery.backoff_max_ms = 500;
    f(&mut s);
    Arc::new(ArcSwap::from_pointee(s.live_part()))
}

fn live(telegram_url: &str) -> Arc<ArcSwap<LiveSettings>> {
    live_with(telegram_url, |_| {})
}

fn senders(push: Option<Arc<MqttPusher>>, hub: PushHub) -> Senders {
    Senders { push, hub, webhook: Arc::new(WebhookSender::new(Duration::from_secs(5)).unwrap()) }
}

struct Running {
    handle: DispatcherHandle,
    stop: oneshot::Sender<()>,
}

impl Running {
    async fn stop(self, secs: u64) {
        let _ = self.stop.send(());
        within(secs, "dispatcher join", self.handle.join()).await;
    }
}

fn start(
    store: &Store,
    handoff: &Arc<Handoff>,
    senders: Senders,
    max_in_flight: usize,
    deadline: Duration,
    live: Arc<ArcSwap<LiveSettings>>,
) -> Running {
    let mut config = DispatcherConfig::new(max_in_flight, deadline);
    config.poll_interval = Duration::from_millis(200);
    let running = spawn_with(store, handoff, senders, config, live);
    running.handle.notify();
    running
}

/// A dispatcher with `config`, not woken.
fn spawn_with(
    store: &Store,
    handoff: &Arc<Handoff>,
    senders: Senders,
    config: DispatcherConfig,
    live: Arc<ArcSwap<LiveSettings>>,
) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let handle =
        Dispatcher::spawn(store.clone(), handoff.clone(), senders, config, live, async move {
            let _ = rx.await;
        });
    Running { handle, stop }
}

/// [`start`] on `db` with `push` (the MQTT pusher, if any) and a stream hub of its own.
fn start_on(
    db: &Db,
    push: Option<Arc<MqttPusher>>,
    max_in_flight: usize,
    deadline: Duration,
    live: Arc<ArcSwap<LiveSettings>>,
) -> Running {
    start(&db.store, &db.handoff, senders(push, PushHub::new(8)), max_in_flight, deadline, live)
}

fn payload(id: &str, reaction: &str) -> String {
    serde_json::json!({"reaction": reaction, "delivery_id": id, "camera_id": 17}).to_string()
}

fn push(i: usize, user: i64) -> NewDelivery {
    let id = format!("occ-{i}:1:{user}");
    NewDelivery {
        payload: payload(&id, "show-camera"),
        id,
        occurrence_id: format!("occ-{i}"),
        script_id: 1,
        reaction: "show-camera".into(),
        recipient: user.to_string(),
        lane: String::new(),
        target: Target::Push { user_id: user },
    }
}

fn telegram(i: usize, token: &str, chat: &str) -> NewDelivery {
    let id = format!("occ-{i}:2:{chat}");
    NewDelivery {
        payload: payload(&id, "telegram-message"),
        id,
        occurrence_id: format!("occ-{i}"),
        // One script per message: a chat's queued messages of one script are coalesced
        // (see `outbox::coalesce`); these tests are about order and retries.
        script_id: 100 + i64::try_from(i).unwrap_or(0),
        reaction: "telegram-message".into(),
        recipient: chat.into(),
        lane: format!("tg:{}:{chat}", token.len()),
        target: Target::Telegram {
            bot_token: Secret::new(token),
            chat_id: chat.into(),
            text: format!("m{i}"),
            photo_url: None,
        },
    }
}

fn webhook(i: usize, url: &str) -> NewDelivery {
    let id = format!("occ-{i}:3:{url}");
    NewDelivery {
        payload: payload(&id, "webhook"),
        id,
        occurrence_id: format!("occ-{i}"),
        script_id: 3,
        reaction: "webhook".into(),
        recipient: url.into(),
        lane: String::new(),
        target: Target::Webhook { url: url.into(), secret: Some(Secret::new("s3cret")) },
    }
}

#[derive(Debug, Clone)]
struct Row {
    id: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
}

fn rows(store: &Store) -> Vec<Row> {
    store
        .read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT CAST(id AS TEXT), state, CAST(attempts AS INTEGER), last_error FROM deliveries
                 ORDER BY rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    state: r.get(1)?,
                    attempts: r.get(2)?,
                    last_error: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap()
}

fn count(store: &Store, state: &str) -> usize {
    rows(store).iter().filter(|r| r.state == state).count()
}

async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    within(secs, what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn pusher(port: u16) -> (Arc<MqttPusher>, oneshot::Sender<()>) {
    let mut connect = MqttConnectOptions::new("127.0.0.1", port, "scriptd");
    connect.backoff_min = Duration::from_millis(50);
    connect.backoff_max = Duration::from_millis(300);
    let (stop, rx) = oneshot::channel::<()>();
    let p =
        MqttPusher::spawn(&connect, "scriptd-push", "vms/users", Duration::from_secs(5), async {
            let _ = rx.await;
        });
    let mut c = p.connected();
    within(10, "pusher connected", c.wait_for(|c| *c)).await.unwrap();
    (Arc::new(p), stop)
}

// --- enqueue -------------------------------------------------------------------------

#[test]
fn enqueue_is_idempotent_and_rows_start_pending() {
    let mut db = fresh_db();
    let batch = vec![push(1, 42), telegram(1, TOKEN, "5"), webhook(1, "http://127.0.0.1:9/h")];
    assert_eq!(db.writer.enqueue(&batch, now_ms()).unwrap(), 3);
    assert_eq!(db.writer.enqueue(&batch, now_ms()).unwrap(), 0, "a redelivery adds nothing");
    assert_eq!(db.writer.enqueue(&[push(2, 42), push(1, 42)], now_ms()).unwrap(), 1);
    let got = rows(&db.store);
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|r| r.state == "pending" && r.attempts == 0 && r.last_error.is_none()));
    assert_eq!(got[0].id, "occ-1:1:42");
}

// --- pushes through Mosquitto -----------------------------------------------------------

#[tokio::test]
async fn pushes_reach_the_app_and_the_hub_with_their_delivery_id() {
    let broker = Mosquitto::start().await;
    let mut app = TestClient::connect(broker.port(), "client-app").await;
    app.subscribe("vms/users/+/reactions").await;
    let (p, _stop_pusher) = pusher(broker.port()).await;
    let hub = PushHub::new(64);
    let mut hub_rx = hub.subscribe();
    let mut db = fresh_db();
    let batch: Vec<_> = (0..5).map(|i| push(i, 42)).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    let d = start(
        &db.store,
        &db.handoff,
        senders(Some(p), hub),
        10,
        Duration::from_secs(5),
        live("http://127.0.0.1:9"),
    );

    let mut seen = HashMap::new();
    for _ in 0..5 {
        let m = app.next(10).await;
        assert_eq!(m.topic, "vms/users/42/reactions");
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let id = v["delivery_id"].as_str().unwrap().to_owned();
        let expected = batch.iter().find(|b| b.id == id).expect("a known delivery_id");
        assert_eq!(text, expected.payload, "the exact payload");
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 5);
    for _ in 0..5 {
        let e = within(5, "hub", hub_rx.recv()).await.unwrap();
        assert_eq!(e.user_id, 42);
    }
    let store = db.store.clone();
    wait_until(10, "rows sent", || count(&store, "sent") == 5).await;
    assert!(rows(&db.store).iter().all(|r| r.attempts == 1));
    let h = d.handle.clone();
    wait_until(5, "counters", || h.stats().sent == 5).await;
    d.stop(10).await;
}

#[tokio::test]
async fn after_a_restart_pending_pushes_are_delivered_exactly_once() {
    let mut db = fresh_db();
    let batch: Vec<_> = (0..50).map(|i| push(i, 7)).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    // First run: no broker connection at all.
    let d = start_on(&db, None, 10, Duration::from_secs(2), live("http://127.0.0.1:9"));
    let h = d.handle.clone();
    wait_until(10, "failed attempts", || h.stats().retried >= 10).await;
    d.stop(5).await;
    let after_first = rows(&db.store);
    assert!(after_first.iter().all(|r| r.state == "pending"));
    assert!(after_first.iter().any(|r| r.last_error.as_deref() == Some("no MQTT connection")));

    // Second run: a working broker.
    let broker = Mosquitto::start().await;
    let mut app = TestClient::connect(broker.port(), "client-app").await;
    app.subscribe("vms/users/+/reactions").await;
    let (p, _stop_pusher) = pusher(broker.port()).await;
    let d = start_on(&db, Some(p), 10, Duration::from_secs(2), live("http://127.0.0.1:9"));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..50 {
        let m = app.next(10).await;
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        *seen.entry(v["delivery_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let store = db.store.clone();
    wait_until(10, "all sent", || count(&store, "sent") == 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(100), async { Some(app.next(1).await) }).await
    {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        *seen.entry(v["delivery_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(seen.len(), 50);
    assert!(seen.values().all(|n| *n == 1), "duplicates: {seen:?}");
    d.stop(10).await;
}

// --- Telegram ----------------------------------------------------------------------------

#[tokio::test]
async fn twenty_messages_to_one_chat_arrive_in_order() {
    let stub = TelegramStub::start().await;
    let mut db = fresh_db();
    let batch: Vec<_> = (0..20).map(|i| telegram(i, TOKEN, "1")).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    let d = start_on(&db, None, 50, Duration::from_secs(5), live(&stub.api_url()));
    let got = stub.wait_for(20, Duration::from_secs(20)).await;
    let texts: Vec<_> = got.iter().map(|r| r.text.clone().unwrap_or_default()).collect();
    let expected: Vec<_> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    let store = db.store.clone();
    wait_until(10, "rows sent", || count(&store, "sent") == 20).await;
    d.stop(10).await;
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_and_delivered_once() {
    let stub = TelegramStub::start().await;
    stub.answer_for_chat("5", Answer::RetryAfter(2));
    let mut db = fresh_db();
    db.writer.enqueue(&[telegram(1, TOKEN, "5"), telegram(2, TOKEN, "5")], now_ms()).unwrap();
    let d = start_on(&db, None, 10, Duration::from_secs(5), live(&stub.api_url()));
    let got = stub.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(got[0].answer, Answer::RetryAfter(2));
    assert_eq!(got[1].answer, Answer::Ok);
    assert_eq!(got[1].text.as_deref(), Some("m1"), "the chat's order holds across the retry");
    assert_eq!(got[2].text.as_deref(), Some("m2"));
    assert!(
        got[1].at.duration_since(got[0].at) >= Duration::from_secs(2),
        "retried after {:?}",
        got[1].at.duration_since(got[0].at)
    );
    let store = db.store.clone();
    wait_until(10, "rows sent", || count(&store, "sent") == 2).await;
    let r = rows(&db.store);
    assert_eq!(r[0].attempts, 2);
    assert_eq!(r[1].attempts, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.recorded().len(), 3, "exactly one message each");
    d.stop(10).await;
}

#[tokio::test]
async fn permanent_telegram_errors_fail_without_retries() {
    let stub = TelegramStub::start().await;
    stub.answer_for_chat("6", Answer::ChatNotFound);
    stub.answer_for_chat("7", Answer::Blocked);
    stub.answer_for_chat("8", Answer::Unauthorized);
    let mut db = fresh_db();
    let other_token = "999:other-secret";
    db.writer
        .enqueue(
            &[telegram(1, TOKEN, "6"), telegram(2, TOKEN, "7"), telegram(3, other_token, "8")],
            now_ms(),
        )
        .unwrap();
    let d = start_on(&db, None, 10, Duration::from_secs(5), live(&stub.api_url()));
    let store = db.store.clone();
    wait_until(10, "rows failed", || count(&store, "failed") == 3).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(stub.recorded().len(), 3, "no retries");
    for r in rows(&db.store) {
        assert_eq!(r.attempts, 1);
        let e = r.last_error.unwrap();
        assert!(!e.contains(TOKEN) && !e.contains(other_token), "token leaked: {e}");
        assert!(!e.is_empty());
    }
    let h = d.handle.clone();
    wait_until(5, "counters", || h.stats().failed == 3).await;
    d.stop(10).await;
}

#[tokio::test]
async fn a_hung_chat_does_not_block_another_chat() {
    let stub = TelegramStub::start().await;
    stub.answer_for_chat("9", Answer::Hang);
    let mut db = fresh_db();
    db.writer.enqueue(&[telegram(1, TOKEN, "9"), telegram(2, TOKEN, "10")], now_ms()).unwrap();
    let d = start_on(&db, None, 10, Duration::from_secs(1), live(&stub.api_url()));
    let store = db.store.clone();
    let t = Instant::now();
    wait_until(5, "the other chat's row sent", || {
        rows(&store).iter().any(|r| r.id == "occ-2:2:10" && r.state == "sent")
    })
    .await;
    assert!(t.elapsed() < Duration::from_millis(1500), "took {:?}", t.elapsed());
    let hung = rows(&db.store).into_iter().find(|r| r.id == "occ-1:2:9").unwrap();
    assert_eq!(hung.state, "pending");
    d.stop(10).await;
}

// --- webhooks and the dispatcher itself --------------------------------------------------

#[tokio::test]
async fn a_webhook_500_then_200_is_delivered_on_the_second_attempt() {
    let rx = WebhookReceiver::start(Some("s3cret")).await;
    rx.push_status(500);
    let mut db = fresh_db();
    db.writer.enqueue(&[webhook(1, &rx.url())], now_ms()).unwrap();
    let d = start_on(&db, None, 10, Duration::from_secs(5), live("http://127.0.0.1:9"));
    let store = db.store.clone();
    wait_until(10, "row sent", || count(&store, "sent") == 1).await;
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].status, 500);
    assert!(got[1].signature_valid);
    assert_eq!(got[1].json()["delivery_id"], "occ-1:3:".to_owned() + &rx.url());
    let r = &rows(&db.store)[0];
    assert_eq!(r.attempts, 2);
    assert_eq!(r.last_error.as_deref(), Some("webhook answered HTTP 500"));
    let h = d.handle.clone();
    wait_until(5, "counters", || h.stats().sent == 1).await;
    let s = d.handle.stats();
    assert_eq!((s.sent, s.retried, s.failed), (1, 1, 0));
    d.stop(10).await;
}

/// An HTTP peer that answers 200 after `delay` and counts requests at once.
struct SlowPeer {
    url: String,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    /// `delivery_id`s in arrival order.
    arrived: Arc<std::sync::Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn slow_peer(delay: Duration) -> SlowPeer {
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (n, m, t, a) = (now.clone(), max.clone(), total.clone(), arrived.clone());
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (n, m, t) = (n.clone(), m.clone(), t.clone());
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            a.lock().unwrap().push(v["delivery_id"].as_str().unwrap_or_default().to_owned());
            async move {
                let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(c, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                n.fetch_sub(1, Ordering::SeqCst);
                t.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    SlowPeer { url, now, max, total, arrived, _task: task }
}

#[tokio::test]
async fn max_in_flight_is_respected() {
    let peer = slow_peer(Duration::from_millis(30)).await;
    let mut db = fresh_db();
    let batch: Vec<_> = (0..200).map(|i| webhook(i, &peer.url)).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    let d = start_on(&db, None, 7, Duration::from_secs(5), live("http://127.0.0.1:9"));
    let h = d.handle.clone();
    let mut most = 0;
    within(30, "all sent", async {
        while h.stats().sent < 200 {
            most = most.max(h.stats().in_flight);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(most <= 7, "stats showed {most} in flight");
    assert_eq!(peer.max.load(Ordering::SeqCst), 7, "the peer saw at most (and reached) the limit");
    assert_eq!(peer.total.load(Ordering::SeqCst), 200);
    assert_eq!(count(&db.store, "sent"), 200);
    d.stop(10).await;
}

/// 500 webhooks to a peer that answers after `answer_after`, 20 in flight, then a stop with
/// `deadline`: the store, the peer, and how long the stop took.
async fn stop_with_attempts_in_flight(
    answer_after: Duration,
    deadline: Duration,
) -> (Db, SlowPeer, Duration) {
    let peer = slow_peer(answer_after).await;
    let mut db = fresh_db();
    let batch: Vec<_> = (0..500).map(|i| webhook(i, &peer.url)).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    let d = start_on(&db, None, 20, deadline, live("http://127.0.0.1:9"));
    let now = peer.now.clone();
    wait_until(10, "attempts in flight", || now.load(Ordering::SeqCst) == 20).await;
    let t = Instant::now();
    d.stop(5).await;
    (db, peer, t.elapsed())
}

#[tokio::test]
async fn shutdown_returns_within_the_deadline_and_leaves_the_rest_pending() {
    // Attempts that outlive the deadline are abandoned.
    let (db, _peer, took) =
        stop_with_attempts_in_flight(Duration::from_secs(30), Duration::from_millis(500)).await;
    assert!(took < Duration::from_millis(1500), "join took {took:?}");
    let r = rows(&db.store);
    assert!(r.iter().all(|r| r.state == "pending" && r.attempts == 0), "nothing recorded");

    // Attempts that finish within the deadline are recorded.
    let (db, peer, took) =
        stop_with_attempts_in_flight(Duration::from_millis(300), Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(3), "join took {took:?}");
    let sent = count(&db.store, "sent");
    let pending = count(&db.store, "pending");
    assert_eq!(sent, peer.total.load(Ordering::SeqCst), "every finished request is recorded");
    assert!(sent >= 20, "in-flight attempts finished: {sent}");
    assert_eq!(sent + pending, 500);
    assert!(pending >= 400);
}

#[tokio::test]
async fn a_hand_edited_garbage_row_fails_alone() {
    let rx = WebhookReceiver::start(Some("s3cret")).await;
    let mut db = fresh_db();
    let batch: Vec<_> = (0..4).map(|i| webhook(i, &rx.url())).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    db.store
        .write(|tx| {
            tx.execute("UPDATE deliveries SET target = 'garbage{' WHERE id = ?1", [&batch[1].id])?;
            tx.execute("UPDATE deliveries SET target = 42 WHERE id = ?1", [&batch[2].id])?;
            tx.execute("UPDATE deliveries SET attempts = 'x' WHERE id = ?1", [&batch[3].id])?;
            Ok(())
        })
        .unwrap();
    let d = start_on(&db, None, 10, Duration::from_secs(5), live("http://127.0.0.1:9"));
    let store = db.store.clone();
    wait_until(10, "all finished", || count(&store, "pending") == 0).await;
    let r = rows(&db.store);
    assert_eq!(r[0].state, "sent");
    assert_eq!(r[1].state, "failed");
    assert!(r[1].last_error.as_deref().unwrap().contains("unreadable delivery target"), "{r:?}");
    assert_eq!(r[2].state, "failed");
    assert_eq!(r[3].state, "sent");
    assert_eq!(rx.received().len(), 2);
    d.stop(10).await;
}

#[tokio::test]
async fn exhausted_retries_fail_with_the_count() {
    let peer_url = format!("http://127.0.0.1:{}/hook", support::free_port());
    let mut db = fresh_db();
    db.writer.enqueue(&[webhook(1, &peer_url)], now_ms()).unwrap();
    let live = live_with("http://127.0.0.1:9", |s| {
        s.delivery.max_attempts = 3;
        s.delivery.backoff_initial_ms = 20;
    });
    let d = start_on(&db, None, 10, Duration::from_secs(5), live);
    let store = db.store.clone();
    wait_until(10, "row failed", || count(&store, "failed") == 1).await;
    let r = &rows(&db.store)[0];
    assert_eq!(r.attempts, 3);
    assert!(
        r.last_error.as_deref().unwrap().starts_with("gave up after 3 attempts: webhook"),
        "{r:?}"
    );
    d.stop(10).await;
}

#[tokio::test]
async fn a_busy_database_delays_recording_but_loses_and_repeats_nothing() {
    let rx = WebhookReceiver::start(Some("s3cret")).await;
    let mut db = fresh_db();
    let batch: Vec<_> = (0..10).map(|i| webhook(i, &rx.url())).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    // Another writer holds the lock for a while.
    let blocker = db.store.connect().unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let store = db.store.clone().with_busy_timeout(Duration::from_millis(50));
    let d = start(
        &store,
        &db.handoff,
        senders(None, PushHub::new(8)),
        10,
        Duration::from_secs(5),
        live("http://127.0.0.1:9"),
    );
    rx.wait_for(10, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(count(&db.store, "pending"), 10, "nothing recorded while the lock is held");
    assert_eq!(d.handle.stats().in_flight, 10, "unrecorded deliveries stay in flight");
    blocker.execute_batch("COMMIT").unwrap();
    let s = db.store.clone();
    wait_until(10, "rows sent", || count(&s, "sent") == 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 10, "no repeats");
    d.stop(10).await;
}

#[tokio::test]
async fn a_sighup_change_of_the_telegram_url_reaches_the_next_message() {
    let old = TelegramStub::start().await;
    let new = TelegramStub::start().await;
    let mut db = fresh_db();
    let live = live(&old.api_url());
    db.writer.enqueue(&[telegram(1, TOKEN, "1")], now_ms()).unwrap();
    let d = start_on(&db, None, 10, Duration::from_secs(5), live.clone());
    old.wait_for(1, Duration::from_secs(10)).await;
    let mut changed = (**live.load()).clone();
    changed.telegram.api_url = new.api_url();
    live.store(Arc::new(changed));
    db.writer.enqueue(&[telegram(2, TOKEN, "1")], now_ms()).unwrap();
    d.handle.notify();
    let got = new.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].text.as_deref(), Some("m2"));
    assert_eq!(old.recorded().len(), 1);
    d.stop(10).await;
}

#[tokio::test]
async fn finished_rows_older_than_the_retention_are_pruned() {
    let mut db = fresh_db();
    let batch: Vec<_> = (0..4).map(|i| push(i, 1)).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    let two_hours_ago = now_ms() - 2 * 3600 * 1000;
    db.store
        .write(|tx| {
            tx.execute(
                "UPDATE deliveries SET state = 'sent', updated_at = ?1 WHERE id = ?2",
                rusqlite::params![two_hours_ago, batch[0].id],
            )?;
            tx.execute(
                "UPDATE deliveries SET state = 'failed', updated_at = ?1 WHERE id = ?2",
                rusqlite::params![two_hours_ago, batch[1].id],
            )?;
            tx.execute("UPDATE deliveries SET state = 'sent' WHERE id = ?1", [&batch[2].id])?;
            Ok(())
        })
        .unwrap();
    let live = live_with("http://127.0.0.1:9", |s| s.delivery.retention_hours = 1);
    let d = start_on(&db, None, 10, Duration::from_secs(5), live);
    let store = db.store.clone();
    wait_until(10, "pruned", || rows(&store).len() == 2).await;
    let r = rows(&db.store);
    assert_eq!(r[0].id, batch[2].id, "a recent sent row stays");
    assert_eq!(r[1].id, batch[3].id, "a pending row stays, however old");
    d.stop(10).await;
}

#[tokio::test]
async fn the_dispatcher_beats_its_heartbeat_while_idle_and_reports_pending() {
    let mut db = fresh_db();
    db.writer.enqueue(&[push(1, 1)], now_ms()).unwrap();
    let watchdog = scriptd::ops::systemd::Watchdog::new();
    let mut config = DispatcherConfig::new(10, Duration::from_secs(1));
    config.poll_interval = Duration::from_millis(50);
    config.progress = Some(watchdog.register("dispatcher", Duration::from_millis(300)));
    let idle = senders(None, PushHub::new(8));
    let d = spawn_with(&db.store, &db.handoff, idle, config, live("http://127.0.0.1:9"));
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(watchdog.stalled().is_empty());
    }
    assert_eq!(d.handle.stats().pending, 1, "the push waits: no MQTT connection");
    d.stop(5).await;
}

#[tokio::test]
async fn a_stop_without_grace_repeats_at_most_max_in_flight_deliveries() {
    // Like a kill -9 mid-run: a zero deadline abandons every attempt in flight.
    let peer = slow_peer(Duration::from_millis(100)).await;
    let mut db = fresh_db();
    let batch: Vec<_> = (0..60).map(|i| webhook(i, &peer.url)).collect();
    db.writer.enqueue(&batch, now_ms()).unwrap();
    let d = start_on(&db, None, 5, Duration::ZERO, live("http://127.0.0.1:9"));
    let total = peer.total.clone();
    wait_until(10, "some delivered", || total.load(Ordering::SeqCst) >= 12).await;
    d.stop(5).await;
    assert!(count(&db.store, "pending") > 0);

    let d = start_on(&db, None, 5, Duration::from_secs(5), live("http://127.0.0.1:9"));
    let store = db.store.clone();
    wait_until(20, "all sent", || count(&store, "sent") == 60).await;
    d.stop(10).await;
    let arrived = peer.arrived.lock().unwrap().clone();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for id in &arrived {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 60, "every delivery arrived");
    let repeats = arrived.len() - 60;
    assert!(repeats <= 5, "{repeats} repeats, more than max_in_flight");
    assert!(per_id.values().all(|n| *n <= 2));
}

/// The intake's wake-up ([`DispatcherHandle::handed_over`]) starts the rows it handed over
/// and never queries the outbox; a row only in the database (written through another
/// hand-over, as another program would) waits for [`DispatcherHandle::notify`] or the poll.
#[tokio::test]
async fn the_intakes_wake_up_starts_handed_over_rows_without_a_query() {
    let rx = WebhookReceiver::start(Some("s3cret")).await;
    let mut db = fresh_db();
    let mut config = DispatcherConfig::new(10, Duration::from_secs(5));
    config.poll_interval = Duration::from_secs(60);
    let idle = senders(None, PushHub::new(8));
    let d = spawn_with(&db.store, &db.handoff, idle, config, live("http://127.0.0.1:9"));
    let handle = &d.handle;
    // The start-up query (of an empty outbox) is behind it once a handed-over row arrives.
    db.writer.enqueue(&[webhook(1, &rx.url())], now_ms()).unwrap();
    handle.handed_over();
    rx.wait_for(1, Duration::from_secs(10)).await;

    let mut elsewhere = OutboxWriter::new(&db.store, Arc::new(Handoff::default())).unwrap();
    elsewhere.enqueue(&[webhook(2, &rx.url())], now_ms()).unwrap();
    handle.handed_over();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.received().len(), 1, "a row nobody handed over was found without a query");

    handle.notify();
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].json()["delivery_id"], "occ-2:3:".to_owned() + &rx.url());
    d.stop(10).await;
}
