//! MQTT clients for fault tests that must not lose anything themselves: a publisher that
//! counts PUBACKs (and resends after a broker restart), and a subscriber with a persistent
//! session, so every message the daemon pushes is accounted for even across broker restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::Mutex;

use super::within;

/// A QoS 1 publisher with a persistent session; [`ReliablePublisher::wait_acked`] waits for
/// the broker's PUBACKs.
pub struct ReliablePublisher {
    client: AsyncClient,
    acked: Arc<AtomicUsize>,
    sent: AtomicUsize,
    task: tokio::task::JoinHandle<()>,
}

impl ReliablePublisher {
    /// Connects to 127.0.0.1:`port` as `client_id` (clean_session = false).
    pub fn connect(port: u16, client_id: &str) -> Self {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_inflight(200);
        let (client, mut eventloop) = AsyncClient::new(o, 100_000);
        let acked = Arc::new(AtomicUsize::new(0));
        let a = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        ReliablePublisher { client, acked, sent: AtomicUsize::new(0), task }
    }

    /// Queues one QoS 1 publish.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("queue publish");
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until every publish so far was acknowledged by the broker.
    pub async fn wait_acked(&self, secs: u64) {
        let want = self.sent.load(Ordering::Relaxed);
        within(secs, "broker PUBACKs for every publish", async {
            while self.acked.load(Ordering::Relaxed) < want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

impl Drop for ReliablePublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A QoS 1 subscriber with a persistent session that keeps every payload it receives.
pub struct PersistentSubscriber {
    /// Every payload received, in order of arrival.
    pub received: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PersistentSubscriber {
    /// Connects as `client_id` (clean_session = false) and subscribes to `filter`
    /// (again whenever the broker lost the session).
    pub async fn connect(port: u16, client_id: &str, filter: &str) -> Self {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 10_000);
        let received = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let r = received.clone();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let _ = client.subscribe(&filter, QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = ready.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                            r.lock().await.push(v);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        within(10, "subscriber SUBACK", ready_rx).await.expect("subscribed");
        PersistentSubscriber { received, task }
    }

    /// Waits until payloads for `n` distinct occurrences arrived; returns them all.
    pub async fn wait_distinct(&self, n: usize, secs: u64, what: &str) -> Vec<Value> {
        within(secs, what, async {
            loop {
                {
                    let got = self.received.lock().await;
                    let distinct: std::collections::HashSet<&str> =
                        got.iter().filter_map(|v| v["occurrence_id"].as_str()).collect();
                    if distinct.len() >= n {
                        return got.clone();
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// Everything received so far.
    pub async fn all(&self) -> Vec<Value> {
        self.received.lock().await.clone()
    }
}

impl Drop for PersistentSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
