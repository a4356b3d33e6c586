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
//! Connection errors are logged once per state change and retried forever with
//! exponential backoff and jitter between `backoff_min` and `backoff_max`.
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
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rumqttc::{Event, EventLoop, MqttOptions, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::link::{Ev, Link, Loop, Protocol};
use crate::secret::Secret;

/// Default capacity of the channel between the poll task and the pipeline.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1024;

/// Largest MQTT packet the pusher sends (8 MiB; pushes carry at most
/// [`crate::dispatch::MAX_PUSH_DATA_BYTES`] of `data`, so they stay far below it).
pub const MAX_PACKET_SIZE: usize = 8 * 1024 * 1024;

/// Largest MQTT packet a connection accepts: the protocol's own maximum (256 MiB), so no
/// message, however large, can break the connection. rumqttc fails the connection on a
/// larger incoming packet, and since the broker keeps an unacknowledged QoS 1 message for
/// our session it would send it again after every reconnect: one oversized message would
/// stop ingestion for good. The size limit that matters is applied after reading
/// (`events.max_payload_bytes`, reason `too_large`, acknowledged so it never comes back).
pub const MAX_INCOMING_PACKET_SIZE: usize = crate::settings::MAX_MQTT_PACKET_BYTES as usize;

/// Messages waiting for room in the pipeline channel beyond which QoS 0 messages are
/// dropped (QoS 1 messages are bounded by the broker's flow control and always kept).
pub const MAX_BUFFERED: usize = 65_536;

/// Where and how to connect; shared by the source and the MQTT push sender.
#[derive(Debug, Clone)]
pub struct MqttConnectOptions {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (the source's session is keyed by it).
    pub client_id: String,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password; masked in `Debug`.
    pub password: Option<Secret>,
    /// MQTT keep alive; the broker drops a silent client after 1.5 × this.
    pub keep_alive: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Most QoS 1 publishes awaiting their PUBACK at once on a publishing connection (the
    /// pusher; `mqtt.inflight`).
    pub inflight: u16,
    /// The MQTT version of the events connection (`mqtt.protocol`). The push connection
    /// always speaks 3.1.1: it only publishes and reads acknowledgements.
    pub protocol: Protocol,
}

impl MqttConnectOptions {
    /// Options with the defaults: keep alive 30 s, backoff 100 ms … 30 s, no credentials,
    /// 100 publishes in flight, MQTT 3.1.1.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: client_id.into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            inflight: 100,
            // The daemon sets `mqtt.protocol` (default 5); a connection made in code speaks
            // 3.1.1 unless told otherwise, which every broker understands.
            protocol: Protocol::V311,
        }
    }

    /// rumqttc options for this connection.
    pub(crate) fn mqtt_options(&self, client_id: &str, clean_session: bool) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(1)));
        o.set_clean_session(clean_session);
        // rumqttc defaults to 10 KiB incoming; a larger message would fail the connection
        // and come back forever (see MAX_INCOMING_PACKET_SIZE).
        o.set_max_packet_size(MAX_INCOMING_PACKET_SIZE, MAX_PACKET_SIZE);
        if let Some(user) = &self.username {
            let pass = self.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
            o.set_credentials(user.clone(), pass);
        }
        o
    }
}

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
    pub progress: Option<crate::systemd::Progress>,
    /// `events.max_payload_bytes`: with MQTT 5 the broker is told not to send larger
    /// packets (see [`super::link`]).
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
        let (sub_tx, subscribed) = watch::channel(false);
        let acks_written = Arc::new(AtomicU64::new(0));
        let links = Links { state_tx, sub_tx, acks_written: acks_written.clone() };
        let task = tokio::spawn(run(options, client, eventloop, tx, links, shutdown));
        (MqttSource { connected, subscribed, acks_written, task }, rx)
    }

    /// Whether the source is connected right now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A receiver of the connection state, for health checks and tests.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
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
    let Links { state_tx, sub_tx, acks_written } = links;
    let generation = Arc::new(AtomicU64::new(0));
    let buffered = Arc::new(AtomicUsize::new(0));
    let (fwd_tx, forwarder) = spawn_forwarder(tx, buffered.clone());
    let mut conn = ConnState::new("events", state_tx, &options.connect);
    let disconnect = client.clone();
    let mut stop = Stop::new(move || disconnect.try_disconnect(), shutdown);
    // Handles registered once; the per-message macros would look them up every time.
    let buffered_gauge = metrics::gauge!("scriptd_mqtt_receive_buffered");
    let acks_counter = metrics::counter!("scriptd_mqtt_acks_total");
    while let Some(event) = stop.poll(&mut eventloop).await {
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

/// How long a stopping connection may take to write its last acknowledgements and the
/// DISCONNECT.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Shutdown for a poll loop without cancelling `EventLoop::poll` while connected (rumqttc
/// can lose an outgoing packet when that future is dropped mid-write, and the last
/// acknowledgements would go with it).
///
/// When the shutdown future completes, a DISCONNECT is queued behind everything already in
/// rumqttc's request channel; [`Stop::poll`] keeps polling until that DISCONNECT is written
/// (so every acknowledgement queued before shutdown reaches the broker), the connection
/// fails, or [`STOP_GRACE`] passes, and then until the broker closes the connection (it has
/// then processed everything). While not connected, polling is simply cancelled.
pub(crate) struct Stop {
    rx: watch::Receiver<bool>,
    deadline: Option<tokio::time::Instant>,
    task: JoinHandle<()>,
}

/// An MQTT event loop [`Stop`] can drive: rumqttc's 3.1.1 one, or the source's [`Loop`].
pub(crate) trait PollLoop {
    /// One event.
    type Event;
    /// A connection failure.
    type Error: std::fmt::Display;
    /// True while connected (polling must then not be cancelled).
    fn is_connected(&self) -> bool;
    /// The next event.
    fn next(&mut self) -> impl Future<Output = Result<Self::Event, Self::Error>> + Send;
    /// True for "our DISCONNECT was written".
    fn is_disconnect(event: &Self::Event) -> bool;
}

impl PollLoop for EventLoop {
    type Event = Event;
    type Error = rumqttc::ConnectionError;
    fn is_connected(&self) -> bool {
        self.network.is_some()
    }
    fn next(&mut self) -> impl Future<Output = Result<Event, rumqttc::ConnectionError>> + Send {
        self.poll()
    }
    fn is_disconnect(event: &Event) -> bool {
        matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect))
    }
}

impl PollLoop for Loop {
    type Event = Ev;
    type Error = super::link::LinkError;
    fn is_connected(&self) -> bool {
        Loop::is_connected(self)
    }
    fn next(&mut self) -> impl Future<Output = Result<Ev, Self::Error>> + Send {
        self.poll()
    }
    fn is_disconnect(event: &Ev) -> bool {
        matches!(event, Ev::DisconnectWritten)
    }
}

impl Stop {
    /// Calls `disconnect` (queue a DISCONNECT) once `shutdown` completes.
    pub(crate) fn new(
        disconnect: impl FnOnce() + Send + 'static,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            shutdown.await;
            disconnect();
            tx.send_replace(true);
        });
        Self { rx, deadline: None, task }
    }

    /// True once shutdown was requested.
    pub(crate) fn requested(&mut self) -> bool {
        let requested = *self.rx.borrow();
        if requested && self.deadline.is_none() {
            self.deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
        }
        requested
    }

    /// Resolves when shutdown is requested.
    pub(crate) async fn wait(&mut self) {
        let _ = self.rx.wait_for(|s| *s).await;
        self.requested();
    }

    /// After a connection error: records the drop and waits out the reconnect backoff.
    /// Returns false when shutdown was requested (before or during the wait): end the loop.
    pub(crate) async fn back_off(
        &mut self,
        conn: &mut ConnState,
        e: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        if self.requested() {
            return false;
        }
        conn.down(e);
        let delay = conn.backoff.next_delay();
        tokio::select! {
            biased;
            _ = self.wait() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// The next event, or `None` when the loop should end.
    pub(crate) async fn poll<L: PollLoop>(
        &mut self,
        eventloop: &mut L,
    ) -> Option<Result<L::Event, L::Error>> {
        let event = if self.requested() {
            if !eventloop.is_connected() {
                return None;
            }
            let deadline = self.deadline?;
            tokio::time::timeout_at(deadline, eventloop.next()).await.ok()?
        } else if !eventloop.is_connected() {
            tokio::select! {
                biased;
                _ = self.wait() => return None,
                event = eventloop.next() => event,
            }
        } else {
            eventloop.next().await
        };
        match event {
            Ok(ev) if L::is_disconnect(&ev) => {
                // The broker closes the connection once it has processed everything we
                // sent; returning earlier lets a quick restart of the same session race
                // our last acknowledgements (Mosquitto drops the old connection's unread
                // packets when the new one takes over).
                let deadline =
                    self.deadline.unwrap_or_else(|| tokio::time::Instant::now() + STOP_GRACE);
                while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, eventloop.next()).await {}
                None
            }
            other => Some(other),
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connection state bookkeeping shared by the source and the push sender: the watch, the
/// metrics (`scriptd_mqtt_connected{connection}`, `scriptd_mqtt_reconnects_total{connection}`)
/// and logs written once per state change.
pub(crate) struct ConnState {
    label: &'static str,
    addr: String,
    tx: watch::Sender<bool>,
    ever_connected: bool,
    failures: u64,
    pub(crate) backoff: Backoff,
}

impl ConnState {
    pub(crate) fn new(
        label: &'static str,
        tx: watch::Sender<bool>,
        o: &MqttConnectOptions,
    ) -> Self {
        metrics::gauge!("scriptd_mqtt_connected", "connection" => label).set(0.0);
        Self {
            label,
            addr: format!("{}:{}", o.host, o.port),
            tx,
            ever_connected: false,
            failures: 0,
            backoff: Backoff::new(o.backoff_min, o.backoff_max),
        }
    }

    pub(crate) fn up(&mut self, session_present: bool) {
        if self.ever_connected {
            metrics::counter!("scriptd_mqtt_reconnects_total", "connection" => self.label)
                .increment(1);
        }
        metrics::gauge!("scriptd_mqtt_connected", "connection" => self.label).set(1.0);
        tracing::info!(
            connection = self.label,
            broker = %self.addr,
            session_present,
            failed_attempts = self.failures,
            "MQTT connected"
        );
        self.ever_connected = true;
        self.failures = 0;
        self.backoff.reset();
        self.tx.send_replace(true);
    }

    pub(crate) fn down(&mut self, e: &(dyn std::fmt::Display + Sync)) {
        let was_up = self.tx.send_replace(false);
        metrics::gauge!("scriptd_mqtt_connected", "connection" => self.label).set(0.0);
        self.failures += 1;
        if was_up {
            tracing::warn!(connection = self.label, broker = %self.addr, error = %e, "MQTT connection lost; reconnecting");
        } else if self.failures == 1 {
            tracing::warn!(connection = self.label, broker = %self.addr, error = %e, "MQTT broker unreachable; retrying");
        } else {
            tracing::debug!(connection = self.label, broker = %self.addr, error = %e, attempt = self.failures, "MQTT reconnect failed");
        }
    }

    pub(crate) fn closed(&mut self) {
        self.tx.send_replace(false);
        metrics::gauge!("scriptd_mqtt_connected", "connection" => self.label).set(0.0);
        tracing::info!(connection = self.label, "MQTT disconnected");
    }
}

/// Exponential backoff with jitter: each delay is drawn from `[d/2, d]` where `d` doubles
/// from `min` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff between `min` and `max` (`max` is raised to `min` if smaller).
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self { min, max: max.max(min), current: min }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// Back to `min` (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut last_cap = Duration::ZERO;
        for i in 0..10 {
            let cap = (Duration::from_millis(100) * 2u32.pow(i)).min(Duration::from_secs(2));
            let d = b.next_delay();
            assert!(d >= cap / 2 && d <= cap, "{i}: {d:?} not in [{:?}, {cap:?}]", cap / 2);
            last_cap = cap;
        }
        assert_eq!(last_cap, Duration::from_secs(2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn password_is_not_in_debug() {
        let mut o = MqttConnectOptions::new("127.0.0.1", 1883, "scriptd");
        o.username = Some("u".into());
        o.password = Some(Secret::new("hunter2"));
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
