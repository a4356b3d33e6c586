//! The MQTT push sender against the embedded broker and Mosquitto: a subscribed client app
//! sees the payload on `{prefix}/{user_id}/reactions`, a push reports success only after
//! the broker's PUBACK, and a broker outage turns into retryable errors, then recovers.

use std::sync::Arc;
use std::time::Duration;

use crate::support::mosquitto::Mosquitto;
use crate::support::{TestClient, free_port, within};
use scriptd::dispatch::SendError;
use scriptd::dispatch::mqtt_push::MqttPusher;
use scriptd::mqtt::MqttConnectOptions;
use serde_json::json;
use tokio::sync::oneshot;

struct Pusher {
    pusher: Arc<MqttPusher>,
    _stop: oneshot::Sender<()>,
}

async fn pusher(port: u16) -> Pusher {
    let mut connect = MqttConnectOptions::new("127.0.0.1", port, "scriptd");
    connect.backoff_min = Duration::from_millis(50);
    connect.backoff_max = Duration::from_millis(300);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let pusher = MqttPusher::spawn(
        &connect,
        "scriptd-push",
        "vms/users/",
        Duration::from_secs(5),
        async move {
            let _ = stop_rx.await;
        },
    );
    let mut c = pusher.connected();
    within(10, "pusher connected", c.wait_for(|c| *c)).await.unwrap();
    Pusher { pusher: Arc::new(pusher), _stop: stop }
}

fn payload(i: usize) -> serde_json::Value {
    json!({"reaction": "show-camera", "delivery_id": format!("occ-{i}:1:42"), "camera_id": 17})
}

async fn app_sees_the_push(port: u16) {
    let mut app = TestClient::connect(port, "client-app").await;
    app.subscribe("vms/users/+/reactions").await;
    let p = pusher(port).await;
    assert_eq!(p.pusher.topic(42), "vms/users/42/reactions");
    within(10, "push", p.pusher.push(42, &payload(1))).await.unwrap();
    let m = app.next(10).await;
    assert_eq!(m.topic, "vms/users/42/reactions");
    let got: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(got, payload(1));
}

async fn many_concurrent_pushes_all_acknowledged(port: u16) {
    let mut app = TestClient::connect(port, "client-app").await;
    app.subscribe("vms/users/7/reactions").await;
    let p = pusher(port).await;
    let n = 500;
    let mut tasks = Vec::new();
    for i in 0..n {
        let pusher = p.pusher.clone();
        tasks.push(tokio::spawn(async move { pusher.push(7, &payload(i)).await }));
    }
    for t in tasks {
        within(20, "push", t).await.unwrap().unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let m = app.next(10).await;
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        seen.insert(v["delivery_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), n);
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_app_sees_the_push() {
    let port = free_port();
    scriptd::mqtt::broker::start_embedded("127.0.0.1", port).unwrap();
    app_sees_the_push(port).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_many_concurrent_pushes_all_acknowledged() {
    let port = free_port();
    scriptd::mqtt::broker::start_embedded("127.0.0.1", port).unwrap();
    many_concurrent_pushes_all_acknowledged(port).await;
}

#[tokio::test]
async fn mosquitto_app_sees_the_push() {
    let m = Mosquitto::start().await;
    app_sees_the_push(m.port()).await;
}

#[tokio::test]
async fn mosquitto_many_concurrent_pushes_all_acknowledged() {
    let m = Mosquitto::start().await;
    many_concurrent_pushes_all_acknowledged(m.port()).await;
}

#[tokio::test]
async fn mosquitto_outage_is_retryable_and_recovers() {
    let mut broker = Mosquitto::start().await;
    let p = pusher(broker.port()).await;
    within(10, "push", p.pusher.push(1, &payload(1))).await.unwrap();

    broker.kill();
    let mut c = p.pusher.connected();
    within(10, "pusher notices", c.wait_for(|c| !*c)).await.unwrap();
    let r = within(10, "push while down", p.pusher.push(1, &payload(2))).await;
    assert!(matches!(r, Err(SendError::Retryable { .. })), "{r:?}");

    broker.spawn().await;
    within(10, "pusher reconnects", c.wait_for(|c| *c)).await.unwrap();
    let mut app = TestClient::connect(broker.port(), "client-app").await;
    app.subscribe("vms/users/1/reactions").await;
    within(10, "push after recovery", p.pusher.push(1, &payload(3))).await.unwrap();
    let m = app.next(10).await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap(), payload(3));
}

#[tokio::test]
async fn no_broker_means_retryable_at_once() {
    let port = free_port();
    let connect = MqttConnectOptions::new("127.0.0.1", port, "scriptd");
    let pusher = MqttPusher::spawn(
        &connect,
        "scriptd-push",
        "vms/users",
        Duration::from_secs(5),
        std::future::pending(),
    );
    let r = within(2, "push", pusher.push(1, &payload(1))).await;
    assert!(matches!(r, Err(SendError::Retryable { .. })), "{r:?}");
}

#[tokio::test]
async fn mosquitto_crash_during_a_burst_keeps_acknowledgements_aligned() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut broker = Mosquitto::start().await;
    let p = pusher(broker.port()).await;
    let running = Arc::new(AtomicBool::new(true));
    let ok = Arc::new(AtomicUsize::new(0));
    let retry = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..20 {
        let (pusher, running, ok, retry) =
            (p.pusher.clone(), running.clone(), ok.clone(), retry.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w * 100_000;
            while running.load(Ordering::Relaxed) {
                match pusher.push(3, &payload(i)).await {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(SendError::Retryable { .. }) => retry.fetch_add(1, Ordering::Relaxed),
                    Err(e) => panic!("unexpected {e:?}"),
                };
                i += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    within(20, "pushes flowing", async {
        while ok.load(Ordering::Relaxed) < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    broker.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.spawn().await;
    let mut c = p.pusher.connected();
    within(10, "reconnect", c.wait_for(|c| *c)).await.unwrap();
    let before = ok.load(Ordering::Relaxed);
    within(20, "pushes flowing again", async {
        while ok.load(Ordering::Relaxed) < before + 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    running.store(false, Ordering::Relaxed);
    for w in workers {
        within(20, "worker ends", w).await.unwrap();
    }
    assert!(retry.load(Ordering::Relaxed) > 0, "the crash was noticed");

    let mut app = TestClient::connect(broker.port(), "client-app").await;
    app.subscribe("vms/users/3/reactions").await;
    // Every later push resolves by its own PUBACK: nothing stale is left in the queue.
    for i in 1000..1050 {
        within(10, "push after the crash", p.pusher.push(3, &payload(i))).await.unwrap();
        let m = app.next(10).await;
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap(), payload(i));
    }
    assert_eq!(p.pusher.waiting(), (0, 0));
}
