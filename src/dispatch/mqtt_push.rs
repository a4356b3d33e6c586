//! MQTT pushes to users' client apps: a QoS 1 publish of the push payload to
//! `{push_topic_prefix}/{user_id}/reactions`, reported sent only once the broker has
//! acknowledged it (PUBACK).
//!
//! # Its own connection
//!
//! The pusher uses a second MQTT connection (client id of the caller's choice, e.g.
//! `{mqtt.client_id}-push`, `clean_session = true`), not the source's. The source's poll
//! task may wait for room in the pipeline channel, and the pipeline may wait for pushes: one
//! shared connection could deadlock. The outbox is the durable store of pushes, so the
//! connection needs no session: an unacknowledged push is reported as retryable and the
//! outbox tries it again (a repeat carries the same `delivery_id`).
//!
//! # Knowing a publish was acknowledged
//!
//! rumqttc 0.25 has no per-publish completion. The pusher's poll task therefore matches
//! events to callers: publishes are queued into rumqttc's request channel under a lock,
//! together with a waiter in a FIFO; rumqttc takes requests in that order and reports
//! `Outgoing::Publish(pkid)` for each, which moves the oldest waiter to a `pkid` map;
//! `Incoming::PubAck(pkid)` resolves it. rumqttc's collision path (`AwaitAck`) is followed
//! too. When the connection fails, rumqttc moves unsent requests into `EventLoop::pending`;
//! the task fails exactly that many waiters from the front of the FIFO plus every waiter
//! that was waiting for a PUBACK, and drops the pending publishes (the outbox retries them),
//! so the FIFO stays aligned with the request channel.
//!
//! A push while the connection is down fails at once as retryable; a push without PUBACK
//! within `ack_timeout` is retryable as well.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS, Request};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::SendError;
use crate::source::mqtt::{ConnState, MqttConnectOptions, Stop};

/// Publishes pushes and waits for the broker's PUBACK; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MqttPusher {
    client: AsyncClient,
    waiters: Arc<Mutex<Waiters>>,
    connected: watch::Receiver<bool>,
    prefix: String,
    ack_timeout: Duration,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Waiters {
    /// Callers whose publish is in rumqttc's request channel, in channel order.
    queued: VecDeque<oneshot::Sender<()>>,
    /// Callers whose publish is on the wire, by packet id.
    sent: HashMap<u16, oneshot::Sender<()>>,
    /// The caller whose publish rumqttc parked on a packet-id collision.
    collided: Option<(u16, oneshot::Sender<()>)>,
}

impl Waiters {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) if *pkid != 0 => {
                let waiter = match self.collided.take() {
                    Some((p, w)) if p == *pkid => Some(w),
                    other => {
                        self.collided = other;
                        self.queued.pop_front()
                    }
                };
                if let Some(w) = waiter {
                    self.sent.insert(*pkid, w);
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                if let Some(w) = self.queued.pop_front() {
                    self.collided = Some((*pkid, w));
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(w) = self.sent.remove(&ack.pkid) {
                    let _ = w.send(());
                }
            }
            _ => {}
        }
    }
}

fn lock(w: &Mutex<Waiters>) -> MutexGuard<'_, Waiters> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

impl MqttPusher {
    /// Connects as `client_id` (clean session) and starts the poll task; it stops with a
    /// clean DISCONNECT when `shutdown` completes.
    pub fn spawn(
        connect: &MqttConnectOptions,
        client_id: &str,
        push_topic_prefix: &str,
        ack_timeout: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> MqttPusher {
        let mut options = connect.mqtt_options(client_id, true);
        options.set_inflight(connect.inflight.max(1));
        let (client, eventloop) = AsyncClient::new(options, 1024);
        let (state_tx, connected) = watch::channel(false);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let conn = ConnState::new("push", state_tx, connect);
        let disconnect = client.clone();
        let stop = Stop::new(
            move || {
                let _ = disconnect.try_disconnect();
            },
            shutdown,
        );
        let task = tokio::spawn(run(eventloop, waiters.clone(), conn, stop));
        MqttPusher {
            client,
            waiters,
            connected,
            prefix: push_topic_prefix.trim_end_matches('/').to_owned(),
            ack_timeout,
            task,
        }
    }

    /// `{prefix}/{user_id}/reactions`.
    pub fn topic(&self, user_id: i64) -> String {
        format!("{}/{user_id}/reactions", self.prefix)
    }

    /// Publishes `payload` (compact JSON) to the user's topic at QoS 1 and waits for PUBACK.
    pub async fn push(&self, user_id: i64, payload: &serde_json::Value) -> Result<(), SendError> {
        let bytes = serde_json::to_vec(payload)
            .map_err(|e| SendError::permanent(format!("cannot serialise the payload: {e}")))?;
        self.publish(self.topic(user_id), bytes).await
    }

    /// Publishes `bytes` to `topic` at QoS 1 and waits for PUBACK (at most `ack_timeout`).
    pub async fn publish(&self, topic: String, bytes: Vec<u8>) -> Result<(), SendError> {
        if !*self.connected.borrow() {
            return Err(SendError::retryable("MQTT broker not connected"));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut w = lock(&self.waiters);
            match self.client.try_publish(topic, QoS::AtLeastOnce, false, bytes) {
                Ok(()) => w.queued.push_back(tx),
                Err(rumqttc::ClientError::TryRequest(_))
                | Err(rumqttc::ClientError::Request(_)) => {
                    return Err(SendError::retryable("MQTT push queue is full or closed"));
                }
            }
        }
        match tokio::time::timeout(self.ack_timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendError::retryable("MQTT connection lost before the PUBACK")),
            Err(_) => Err(SendError::retryable(format!(
                "no PUBACK from the MQTT broker within {:?}",
                self.ack_timeout
            ))),
        }
    }

    /// Callers waiting (queued in rumqttc, waiting for a PUBACK); both 0 when idle. For
    /// tests and diagnostics.
    pub fn waiting(&self) -> (usize, usize) {
        let w = lock(&self.waiters);
        (w.queued.len() + usize::from(w.collided.is_some()), w.sent.len())
    }

    /// Whether the push connection is up.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Waits for the poll task to end (after shutdown).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

async fn run(
    mut eventloop: EventLoop,
    waiters: Arc<Mutex<Waiters>>,
    mut conn: ConnState,
    mut stop: Stop,
) {
    while let Some(event) = stop.poll(&mut eventloop).await {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => conn.up(ack.session_present),
            Ok(event) => lock(&waiters).on_event(&event),
            Err(e) => {
                fail_in_flight(&mut eventloop, &waiters);
                if !stop.back_off(&mut conn, &e).await {
                    break;
                }
            }
        }
    }
    fail_in_flight(&mut eventloop, &waiters);
    conn.closed();
}

/// After a connection error: settle the waiters of everything rumqttc will not report on.
fn fail_in_flight(eventloop: &mut EventLoop, waiters: &Mutex<Waiters>) {
    let mut w = lock(waiters);
    // Events rumqttc buffered before the error (e.g. the `Outgoing::Publish` of a request
    // it took just before the socket failed).
    for event in eventloop.state.events.drain(..) {
        w.on_event(&event);
    }
    // Publishes that were on the wire: their PUBACK will never come on this connection.
    w.sent.clear();
    w.collided = None;
    eventloop.state.collision = None;
    // Requests rumqttc drained from the channel into `pending` without a packet id: they
    // are exactly the oldest queued callers.
    let unsent = eventloop
        .pending
        .iter()
        .filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0))
        .count();
    for _ in 0..unsent.min(w.queued.len()) {
        w.queued.pop_front();
    }
    // The outbox retries them; a new clean session must not resend them as well.
    eventloop.pending.clear();
}
