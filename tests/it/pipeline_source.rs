//! The MQTT source against real brokers: the embedded rumqttd and Debian's Mosquitto.
//!
//! Every scenario runs against both: receive and acknowledge, redelivery of unacknowledged
//! messages after a crash of the source, messages queued for the persistent session while
//! the source was away, and shared subscriptions. Mosquitto additionally gets killed
//! (`kill -9`, losing the session) to show the source resubscribes.

use crate::support;

use std::time::Duration;

use crate::support::mosquitto::Mosquitto;
use crate::support::{TestClient, within};
use scriptd::mqtt::MqttConnectOptions;
use scriptd::source::mqtt::{Incoming, MqttSource, SourceOptions};
use tokio::sync::{mpsc, oneshot};

const TOPIC: &str = "vms/analytics/events/#";

struct Running {
    source: MqttSource,
    rx: mpsc::Receiver<Incoming>,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    async fn start(port: u16, client_id: &str, topic: &str) -> Running {
        let mut connect = MqttConnectOptions::new("127.0.0.1", port, client_id);
        connect.keep_alive = Duration::from_secs(5);
        connect.backoff_min = Duration::from_millis(50);
        connect.backoff_max = Duration::from_millis(500);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (source, rx) = MqttSource::spawn(SourceOptions::new(connect, topic), async move {
            let _ = stop_rx.await;
        });
        let r = Running { source, rx, stop: Some(stop) };
        r.wait_subscribed().await;
        r
    }

    async fn wait_subscribed(&self) {
        let mut sub = self.source.subscribed();
        within(15, "source subscribed", sub.wait_for(|s| *s)).await.expect("source alive");
    }

    async fn next(&mut self, secs: u64) -> Incoming {
        within(secs, "message at the source", self.rx.recv()).await.expect("source running")
    }

    /// Nothing arrives within `ms`.
    async fn assert_quiet(&mut self, ms: u64) {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await {
            panic!("unexpected message on {}: {:?}", m.topic, String::from_utf8_lossy(&m.payload));
        }
    }

    async fn wait_acks_written(&self, n: u64) {
        within(10, "PUBACK written", async {
            while self.source.acks_written() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Clean shutdown: DISCONNECT, the session stays on the broker.
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        within(10, "source stops", self.source.join()).await;
    }

    /// Like `kill -9` of the daemon: the task and its socket vanish without DISCONNECT.
    async fn crash(self) {
        self.source.abort();
        within(10, "source aborted", self.source.join()).await;
    }
}

#[cfg(feature = "embedded-broker")]
fn embedded() -> u16 {
    let port = support::free_port();
    scriptd::mqtt::broker::start_embedded("127.0.0.1", port).expect("embedded broker");
    port
}

fn event(i: usize) -> String {
    format!(r#"{{"id":"occ-{i}","event_id":1,"camera_id":17}}"#)
}

async fn receive_and_ack(port: u16) {
    let mut src = Running::start(port, "scriptd-a", TOPIC).await;
    let publisher = TestClient::connect(port, "analytics").await;
    for i in 0..3 {
        publisher.publish("vms/analytics/events/17", event(i)).await;
    }
    for i in 0..3 {
        let m = src.next(10).await;
        assert_eq!(m.topic, "vms/analytics/events/17");
        assert_eq!(&*m.payload, event(i).as_bytes());
        within(5, "ack", m.ack.ack()).await.unwrap();
    }
    src.stop().await;
    // Acknowledged: a new connection of the same session gets nothing again.
    let mut again = Running::start(port, "scriptd-a", TOPIC).await;
    again.assert_quiet(700).await;
    again.stop().await;
}

async fn unacked_is_redelivered_after_a_crash(port: u16) {
    let mut src = Running::start(port, "scriptd-b", TOPIC).await;
    let publisher = TestClient::connect(port, "analytics").await;
    publisher.publish("vms/analytics/events/5", event(1)).await;
    publisher.publish("vms/analytics/events/5", event(2)).await;
    let first = src.next(10).await;
    assert_eq!(&*first.payload, event(1).as_bytes());
    within(5, "ack", first.ack.ack()).await.unwrap();
    let second = src.next(10).await;
    assert_eq!(&*second.payload, event(2).as_bytes());
    drop(second); // never acknowledged
    // ack() only queues the PUBACK; a crash right after it may lose it (and the message is
    // then redelivered, which the outbox deduplicates). Here we want it on the wire first.
    src.wait_acks_written(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    src.crash().await;

    let mut src = Running::start(port, "scriptd-b", TOPIC).await;
    let again = src.next(10).await;
    assert_eq!(&*again.payload, event(2).as_bytes(), "only the unacknowledged one comes back");
    within(5, "ack", again.ack.ack()).await.unwrap();
    src.assert_quiet(700).await;
    src.stop().await;
}

async fn offline_messages_wait_for_the_session(port: u16) {
    let src = Running::start(port, "scriptd-c", TOPIC).await;
    src.stop().await;
    let publisher = TestClient::connect(port, "analytics").await;
    for i in 0..5 {
        publisher.publish("vms/analytics/events/9", event(i)).await;
    }
    // Let the broker take them all before the session returns.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut src = Running::start(port, "scriptd-c", TOPIC).await;
    for i in 0..5 {
        let m = src.next(10).await;
        assert_eq!(&*m.payload, event(i).as_bytes());
        within(5, "ack", m.ack.ack()).await.unwrap();
    }
    src.stop().await;
}

async fn shared_subscription_works(port: u16) {
    let mut src = Running::start(port, "scriptd-d", "$share/scriptd/vms/analytics/events/#").await;
    let publisher = TestClient::connect(port, "analytics").await;
    publisher.publish("vms/analytics/events/3", event(7)).await;
    let m = src.next(10).await;
    assert_eq!(m.topic, "vms/analytics/events/3");
    within(5, "ack", m.ack.ack()).await.unwrap();
    src.stop().await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_receive_and_ack() {
    receive_and_ack(embedded()).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_unacked_is_redelivered_after_a_crash() {
    unacked_is_redelivered_after_a_crash(embedded()).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_offline_messages_wait_for_the_session() {
    offline_messages_wait_for_the_session(embedded()).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_shared_subscription_works() {
    shared_subscription_works(embedded()).await;
}

#[tokio::test]
async fn mosquitto_receive_and_ack() {
    let m = Mosquitto::start().await;
    receive_and_ack(m.port()).await;
}

#[tokio::test]
async fn mosquitto_unacked_is_redelivered_after_a_crash() {
    let m = Mosquitto::start().await;
    unacked_is_redelivered_after_a_crash(m.port()).await;
}

#[tokio::test]
async fn mosquitto_offline_messages_wait_for_the_session() {
    let m = Mosquitto::start().await;
    offline_messages_wait_for_the_session(m.port()).await;
}

#[tokio::test]
async fn mosquitto_shared_subscription_works() {
    let m = Mosquitto::start().await;
    shared_subscription_works(m.port()).await;
}

#[tokio::test]
async fn mosquitto_killed_broker_loses_the_session_and_the_source_resubscribes() {
    let mut broker = Mosquitto::start().await;
    let mut src = Running::start(broker.port(), "scriptd-e", TOPIC).await;
    let mut connected = src.source.connected();
    broker.kill_and_restart().await;
    within(15, "source notices", connected.wait_for(|c| !*c)).await.unwrap();
    within(15, "source reconnects", connected.wait_for(|c| *c)).await.unwrap();
    src.wait_subscribed().await;
    let publisher = TestClient::connect(broker.port(), "analytics").await;
    publisher.publish("vms/analytics/events/1", event(1)).await;
    let m = src.next(10).await;
    assert_eq!(&*m.payload, event(1).as_bytes());
    within(5, "ack", m.ack.ack()).await.unwrap();
    src.stop().await;
}

#[tokio::test]
async fn mosquitto_graceful_restart_keeps_queued_messages() {
    let mut broker = Mosquitto::start().await;
    let src = Running::start(broker.port(), "scriptd-f", TOPIC).await;
    src.stop().await;
    {
        let publisher = TestClient::connect(broker.port(), "analytics").await;
        publisher.publish("vms/analytics/events/2", event(3)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    broker.restart().await;
    let mut src = Running::start(broker.port(), "scriptd-f", TOPIC).await;
    let m = src.next(10).await;
    assert_eq!(&*m.payload, event(3).as_bytes());
    within(5, "ack", m.ack.ack()).await.unwrap();
    src.stop().await;
}

/// A slow pipeline behind a tiny channel: the poll loop waits for room, keeps the
/// connection, and every message arrives once, in order.
async fn slow_consumer_gets_everything(port: u16) {
    let mut connect = MqttConnectOptions::new("127.0.0.1", port, "scriptd-slow");
    connect.keep_alive = Duration::from_secs(1);
    let mut options = SourceOptions::new(connect, TOPIC);
    options.channel_capacity = 2;
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (source, mut rx) = MqttSource::spawn(options, async move {
        let _ = stop_rx.await;
    });
    let mut sub = source.subscribed();
    within(10, "subscribed", sub.wait_for(|s| *s)).await.unwrap();
    let publisher = TestClient::connect(port, "analytics").await;
    let n = 60;
    for i in 0..n {
        publisher.publish("vms/analytics/events/1", event(i)).await;
    }
    for i in 0..n {
        let m = within(20, "message", rx.recv()).await.unwrap();
        assert_eq!(&*m.payload, event(i).as_bytes());
        if i % 20 == 0 {
            // Longer than 1.5 x keep alive with the channel full.
            tokio::time::sleep(Duration::from_millis(1600)).await;
        }
        within(5, "ack", m.ack.ack()).await.unwrap();
    }
    assert!(source.is_connected());
    let _ = stop.send(());
    within(10, "stop", source.join()).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn embedded_slow_consumer_gets_everything() {
    slow_consumer_gets_everything(embedded()).await;
}

#[tokio::test]
async fn mosquitto_slow_consumer_gets_everything() {
    let m = Mosquitto::start().await;
    slow_consumer_gets_everything(m.port()).await;
}

#[cfg(feature = "embedded-broker")]
#[tokio::test]
async fn source_waits_for_a_broker_that_is_not_there_yet() {
    let port = support::free_port();
    let mut connect = MqttConnectOptions::new("127.0.0.1", port, "scriptd-g");
    connect.backoff_min = Duration::from_millis(50);
    connect.backoff_max = Duration::from_millis(200);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (source, _rx) = MqttSource::spawn(SourceOptions::new(connect, TOPIC), async move {
        let _ = stop_rx.await;
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!source.is_connected());
    scriptd::mqtt::broker::start_embedded("127.0.0.1", port).expect("embedded broker");
    let mut sub = source.subscribed();
    within(10, "subscribed once the broker is up", sub.wait_for(|s| *s)).await.unwrap();
    let _ = stop.send(());
    within(10, "stop", source.join()).await;
}

/// The poll loop beats the watchdog heartbeat while it turns, also while the broker is
/// unreachable (reconnect attempts are progress); a heartbeat nobody feeds stalls.
#[tokio::test]
async fn the_poll_loop_beats_its_watchdog_heartbeat() {
    let watchdog = scriptd::ops::systemd::Watchdog::new();
    let port = support::free_port();
    let mut connect = MqttConnectOptions::new("127.0.0.1", port, "scriptd-wd");
    connect.backoff_min = Duration::from_millis(50);
    connect.backoff_max = Duration::from_millis(100);
    let mut options = SourceOptions::new(connect, TOPIC);
    options.progress = Some(watchdog.register("mqtt", Duration::from_millis(500)));
    let _unfed = watchdog.register("unfed", Duration::from_millis(500));
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (source, _rx) = MqttSource::spawn(options, async move {
        let _ = stop_rx.await;
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(watchdog.stalled(), vec!["unfed".to_owned()]);
    let _ = stop.send(());
    within(10, "stop", source.join()).await;
}
