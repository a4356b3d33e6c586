//! The MQTT source: subscribe to `mqtt.events_topic`, hand each message to the pipeline,
//! acknowledge it only when the pipeline says its outcome is durable.
//!
//! # Delivery guarantee
//!
//! The connection uses a fixed client id, `clean_session = false` and manual
//! acknowledgements. A QoS 1 message is PUBACKed only when the consumer calls
//! [`AckToken::ack`], which it does after the occurrence's deliveries are in the outbox (or
//! it decided the occurrence matches nothing). If the daemon dies before that, the broker
//! still holds the message for our session and sends it again on the next connection; the
//! outbox recognises the repeat by the occurrence id.
//!
//! # The poll task
//!
//! [`MqttSource::spawn`] starts one task that owns rumqttc's `EventLoop`. It only polls and
//! forwards; matching, the database and dispatch happen elsewhere, behind a bounded
//! `tokio::sync::mpsc` channel of [`Incoming`] messages (see *Backpressure*). On every
//! `ConnAck` it subscribes again at QoS 1 (rumqttc never resubscribes by itself, and a
//! broker that lost our session has lost the subscription too). A `$share/group/...` filter works unchanged.
//! Connection errors are logged once per state change (and again when the error changes)
//! and retried forever with exponential backoff and jitter between `backoff_min` and
//! `backoff_max`; the last one is the reason [`MqttSource::down_reason`] reports. With
//! `[mqtt.tls]` the TLS files are read again before every attempt ([`crate::mqtt::tls`]).
//!
//! # Backpressure, and why the connection stays alive
//!
//! The poll task never waits for the pipeline. It hands each message to a small forwarder
//! task through an unbounded queue; the forwarder moves them, in order, into the bounded
//! channel the pipeline reads (`channel_capacity`, default [`DEFAULT_CHANNEL_CAPACITY`]),
//! waiting for room there. So a slow pipeline never stops the poll loop, which keeps
//! answering PINGs and the broker never drops us for silence.
//!
//! What bounds the queue is the broker's flow control: it sends a subscriber only a limited
//! number of unacknowledged QoS 1 messages (rumqttd: 100, a constant; Mosquitto:
//! `max_inflight_messages`, default 20; never more than 65 535, since packet ids are 16
//! bit), and a message is acknowledged only after the pipeline is done with it. A slow
//! pipeline therefore slows the broker down instead of filling memory. QoS 0 messages have
//! no such bound: beyond [`MAX_BUFFERED`] waiting messages they are dropped and counted
//! (`scriptd_mqtt_dropped_total`). The queue length is the gauge
//! `scriptd_mqtt_receive_buffered`.
//!
//! Acknowledgements travel through rumqttc's request channel, which the poll task drains.
//! Its capacity is 65 535 + the channel capacity, more than the number of QoS 1 messages
//! that can be unacknowledged at once, so [`AckToken::ack`] never waits for long.
//!
//! We deliberately never cancel `EventLoop::poll` while connected: rumqttc can lose an
//! outgoing packet (e.g. a PUBACK) when that future is dropped mid-write.
//!
//! Acknowledgements are tied to the connection that received the message: an [`AckToken`]
//! from before a reconnect is ignored (the broker sends that message again, and acking the
//! new copy is the consumer's job), so a stale packet id is never acknowledged.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use rumqttc::QoS;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::mqtt::link::{Ev, Link, Loop};
use crate::mqtt::{ConnState, GracefulStop, MqttConnectOptions};

/// Default capacity of the channel between the poll task and the pipeline.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1024;

/// Messages waiting for room in the pipeline channel beyond which QoS 0 messages are
/// dropped (QoS 1 messages are bounded by the broker's flow control and always kept).
pub const MAX_BUFFERED: usize = 65_536;

/// Options of the source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The connection.
    pub connect: MqttConnectOptions,
    /// The subscription filter, e.g. `vms/analytics/events/#` or
    /// `$share/scriptd/vms/analytics/events/#`.
    pub topic: String,
    /// Capacity of the channel to the pipeline.
    pub channel_capacity: usize,
    /// Beaten on every turn of the poll loop (packets in and out, keep-alive pings,
    /// connection errors), so the systemd watchdog stops only when the loop itself hangs.
    pub progress: Option<crate::ops::systemd::Progress>,
    /// `events.max_payload_bytes`: with MQTT 5 the broker is told not to send larger
    /// packets (see [`crate::mqtt::link`]).
    pub max_payload_bytes: u64,
}

impl SourceOptions {
    /// Options with [`DEFAULT_CHANNEL_CAPACITY`] and no heartbeat.
    pub fn new(connect: MqttConnectOptions, topic: impl Into<String>) -> Self {
        Self {
            connect,
            topic: topic.into(),
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            progress: None,
            max_payload_bytes: crate::settings::DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

/// A message payload; cheap to clone (reference-counted bytes), dereferences to `[u8]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(Bytes);

impl Payload {
    /// Wraps bytes (for tests and benchmarks that feed the pipeline without a broker).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Payload(Bytes::from(bytes))
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// One received message and the token that acknowledges it.
#[derive(Debug)]
pub struct Incoming {
    /// The topic it was published on.
    pub topic: String,
    /// The payload bytes.
    pub payload: Payload,
    /// Set by brokers that flag redeliveries (Mosquitto does, rumqttd does not).
    pub dup: bool,
    /// Acknowledge once the outcome is durable.
    pub ack: AckToken,
}

/// Acknowledges one QoS 1 message to the broker. Dropping it without [`AckToken::ack`]
/// leaves the message unacknowledged: the broker sends it again after the next reconnect.
#[derive(Debug)]
pub struct AckToken {
    client: Link,
    pkid: u16,
    qos: QoS,
    generation: u64,
    current: Arc<AtomicU64>,
}

/// The source's poll task is gone (shut down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the MQTT source has stopped; the message will be redelivered on the next start")]
pub struct AckError;

impl AckToken {
    /// Sends the PUBACK (a no-op for QoS 0, and for a message received on an earlier
    /// connection, which the broker redelivers).
    pub async fn ack(self) -> Result<(), AckError> {
        if self.qos == QoS::AtMostOnce {
            return Ok(());
        }
        if self.generation != self.current.load(Ordering::Acquire) {
            tracing::debug!(
                pkid = self.pkid,
                "not acknowledging a message from an earlier connection"
            );
            return Ok(());
        }
        self.client.ack(self.pkid, self.qos).await.map_err(|_| AckError)
    }
}

/// Handle of a running source.
#[derive(Debug)]
pub struct MqttSource {
    connected: watch::Receiver<bool>,
    down_reason: watch::Receiver<Option<String>>,
    subscribed: watch::Receiver<bool>,
    acks_written: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MqttSource {
    /// Starts the poll task. Messages arrive on the returned receiver; the task stops when
    /// `shutdown` completes (after a clean MQTT disconnect) or when the receiver is dropped.
    pub fn spawn(
        options: SourceOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (MqttSource, mpsc::Receiver<Incoming>) {
        let capacity = options.channel_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        // Enough room for every possible outstanding PUBACK (see the module docs).
        let (client, eventloop) = Link::new(
            &options.connect,
            &options.connect.client_id,
            options.max_payload_bytes,
            u16::MAX as usize + capacity,
        );
        let (state_tx, connected) = watch::channel(false);
        let (reason_tx, down_reason) = watch::channel(Some("connecting".to_owned()));
        let (sub_tx, subscribed) = watch::channel(false);
        let acks_written = Arc::new(AtomicU64::new(0));
        let links = Links { state_tx, reason_tx, sub_tx, acks_written: acks_written.clone() };
        let task = tokio::spawn(run(options, client, eventloop, tx, links, shutdown));
        (MqttSource { connected, down_reason, subscribed, acks_written, task }, rx)
    }

    /// Whether the source is connected right now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A receiver of the connection state, for health checks and tests.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// A receiver of the last connection error while not connected (`None` while
    /// connected), e.g. a failed TLS handshake, for `/healthz`.
    pub fn down_reason(&self) -> watch::Receiver<Option<String>> {
        self.down_reason.clone()
    }

    /// A receiver of the subscription state: true once the broker granted the subscription
    /// on the current connection.
    pub fn subscribed(&self) -> watch::Receiver<bool> {
        self.subscribed.clone()
    }

    /// How many PUBACKs were written to the broker connection so far (also counted in
    /// `scriptd_mqtt_acks_total`).
    pub fn acks_written(&self) -> u64 {
        self.acks_written.load(Ordering::Relaxed)
    }

    /// Waits for the poll task to end (after shutdown).
    pub async fn join(self) {
        let _ = self.task.await;
    }

    /// Stops the poll task at once, without a clean disconnect (tests: a "crash").
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// What the poll task reports to the [`MqttSource`] handle.
struct Links {
    state_tx: watch::Sender<bool>,
    reason_tx: watch::Sender<Option<String>>,
    sub_tx: watch::Sender<bool>,
    acks_written: Arc<AtomicU64>,
}

async fn run(
    options: SourceOptions,
    client: Link,
    mut eventloop: Loop,
    tx: mpsc::Sender<Incoming>,
    links: Links,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let Links { state_tx, reason_tx, sub_tx, acks_written } = links;
    let generation = Arc::new(AtomicU64::new(0));
    let buffered = Arc::new(AtomicUsize::new(0));
    let (fwd_tx, forwarder) = spawn_forwarder(tx, buffered.clone());
    let mut conn = ConnState::new("events", state_tx, reason_tx, &options.connect);
    let disconnect = client.clone();
    let mut stop = GracefulStop::new(move || disconnect.try_disconnect(), shutdown);
    // Handles registered once; the per-message macros would look them up every time.
    let buffered_gauge = metrics::gauge!("scriptd_mqtt_receive_buffered");
    let acks_counter = metrics::counter!("scriptd_mqtt_acks_total");
    let tls = options.connect.tls.as_ref();
    while stop.load_tls(&mut eventloop, &mut conn, tls).await
        && let Some(event) = stop.poll(&mut eventloop).await
    {
        if let Some(progress) = &options.progress {
            progress.beat();
        }
        match event {
            Ok(Ev::ConnAck { session_present }) => {
                generation.fetch_add(1, Ordering::AcqRel);
                conn.up(session_present);
                if let Err(e) = client.try_subscribe(&options.topic) {
                    tracing::error!(topic = %options.topic, error = %e, "cannot subscribe");
                }
            }
            Ok(Ev::SubAck { refused }) => {
                if refused {
                    tracing::error!(topic = %options.topic, "the broker refused the subscription");
                } else {
                    tracing::debug!(topic = %options.topic, "subscribed");
                }
                sub_tx.send_replace(!refused);
            }
            Ok(Ev::Publish(p)) => {
                if stop.requested() {
                    // Not handed over, not acknowledged: redelivered on the next start.
                    continue;
                }
                let incoming = Incoming {
                    ack: AckToken {
                        client: client.clone(),
                        pkid: p.pkid,
                        qos: p.qos,
                        generation: generation.load(Ordering::Acquire),
                        current: generation.clone(),
                    },
                    dup: p.dup,
                    topic: p.topic,
                    payload: Payload(p.payload),
                };
                let waiting = buffered.fetch_add(1, Ordering::Relaxed) + 1;
                if incoming.ack.qos == QoS::AtMostOnce && waiting > MAX_BUFFERED {
                    buffered.fetch_sub(1, Ordering::Relaxed);
                    metrics::counter!("scriptd_mqtt_dropped_total").increment(1);
                    continue;
                }
                buffered_gauge.set(waiting as f64);
                if fwd_tx.send(incoming).is_err() {
                    tracing::debug!("the pipeline dropped its receiver; stopping the MQTT source");
                    break;
                }
            }
            Ok(Ev::PubAckWritten) => {
                acks_written.fetch_add(1, Ordering::Relaxed);
                acks_counter.increment(1);
            }
            Ok(_) => {}
            Err(e) => {
                sub_tx.send_replace(false);
                if !stop.back_off(&mut conn, &e).await {
                    break;
                }
            }
        }
    }
    sub_tx.send_replace(false);
    forwarder.abort();
    conn.closed();
}

/// Moves messages from the poll task's unbounded queue into the pipeline's bounded channel,
/// in order, waiting for room; `buffered` counts what is between the two.
fn spawn_forwarder(
    tx: mpsc::Sender<Incoming>,
    buffered: Arc<AtomicUsize>,
) -> (mpsc::UnboundedSender<Incoming>, JoinHandle<()>) {
    let (fwd_tx, mut fwd_rx) = mpsc::unbounded_channel::<Incoming>();
    let gauge = metrics::gauge!("scriptd_mqtt_receive_buffered");
    let task = tokio::spawn(async move {
        while let Some(incoming) = fwd_rx.recv().await {
            let sent = tx.send(incoming).await;
            let left = buffered.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
            gauge.set(left as f64);
            if sent.is_err() {
                break;
            }
        }
    });
    (fwd_tx, task)
}
