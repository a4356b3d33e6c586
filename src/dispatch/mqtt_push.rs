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
//!
//! With `[mqtt.tls]` the connection uses TLS like the source's: the files are read again
//! before every connection attempt (see [`crate::mqtt::tls`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS, Request};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::SendError;
use crate::mqtt::tls::TlsFiles;
use crate::mqtt::{ConnState, GracefulStop, MqttConnectOptions};

/// Publishes pushes and waits for the broker's PUBACK; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MqttPusher {
    client: AsyncClient,
    waiters: Arc<Mutex<Waiters>>,
    connected: watch::Receiver<bool>,
    down_reason: watch::Receiver<Option<String>>,
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
        let (reason_tx, down_reason) = watch::channel(Some("connecting".to_owned()));
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let conn = ConnState::new("push", state_tx, reason_tx, connect);
        let disconnect = client.clone();
        let stop = GracefulStop::new(
            move || {
                let _ = disconnect.try_disconnect();
            },
            shutdown,
        );
        let task = tokio::spawn(run(eventloop, waiters.clone(), conn, stop, connect.tls.clone()));
        MqttPusher {
            client,
            waiters,
            connected,
            down_reason,
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

    /// The last connection error while not connected (`None` while connected), e.g. a
    /// failed TLS handshake, for `/healthz`.
    pub fn down_reason(&self) -> watch::Receiver<Option<String>> {
        self.down_reason.clone()
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
    mut stop: GracefulStop,
    tls: Option<TlsFiles>,
) {
    while stop.load_tls(&mut eventloop, &mut conn, tls.as_ref()).await
        && let Some(event) = stop.poll(&mut eventloop).await
    {
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

#[cfg(test)]
mod tests {
    //! The PUBACK bookkeeping fed with the event sequences rumqttc 0.25 produces, so an
    //! upgrade that changes them fails here instead of losing or mis-reporting pushes.

    use rumqttc::{MqttOptions, PubAck, Publish};
    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;

    fn queue(w: &mut Waiters, n: usize) -> Vec<oneshot::Receiver<()>> {
        (0..n)
            .map(|_| {
                let (tx, rx) = oneshot::channel();
                w.queued.push_back(tx);
                rx
            })
            .collect()
    }

    fn out(pkid: u16) -> Event {
        Event::Outgoing(Outgoing::Publish(pkid))
    }

    fn ack(pkid: u16) -> Event {
        Event::Incoming(Packet::PubAck(PubAck::new(pkid)))
    }

    #[test]
    fn pubacks_resolve_their_own_publish_in_any_order() {
        let mut w = Waiters::default();
        let mut rx = queue(&mut w, 3);
        for pkid in [1, 2, 3] {
            w.on_event(&out(pkid));
        }
        assert_eq!((w.queued.len(), w.sent.len()), (0, 3));
        w.on_event(&ack(2));
        assert_eq!(rx[1].try_recv(), Ok(()));
        assert_eq!(rx[0].try_recv(), Err(TryRecvError::Empty));
        w.on_event(&ack(3));
        w.on_event(&ack(1));
        assert_eq!((rx[0].try_recv(), rx[2].try_recv()), (Ok(()), Ok(())));
        // A stray PUBACK and a QoS 0 publish (packet id 0) change nothing.
        w.on_event(&ack(9));
        w.on_event(&out(0));
        assert_eq!((w.queued.len(), w.sent.len()), (0, 0));
    }

    #[test]
    fn a_packet_id_collision_parks_the_next_caller_until_its_publish_goes_out() {
        let mut w = Waiters::default();
        let mut rx = queue(&mut w, 2);
        w.on_event(&out(1));
        // rumqttc found packet id 1 still unacknowledged for the next publish: parked.
        w.on_event(&Event::Outgoing(Outgoing::AwaitAck(1)));
        assert!(w.collided.is_some() && w.queued.is_empty());
        w.on_event(&ack(1));
        assert_eq!(rx[0].try_recv(), Ok(()));
        assert_eq!(rx[1].try_recv(), Err(TryRecvError::Empty), "not yet sent");
        // The parked publish goes out with that id, and its own PUBACK resolves it.
        w.on_event(&out(1));
        assert!(w.collided.is_none());
        w.on_event(&ack(1));
        assert_eq!(rx[1].try_recv(), Ok(()));
    }

    #[test]
    fn a_publish_of_another_id_while_one_is_parked_takes_the_next_caller() {
        let mut w = Waiters::default();
        let mut rx = queue(&mut w, 3);
        w.on_event(&out(1));
        w.on_event(&Event::Outgoing(Outgoing::AwaitAck(1)));
        // A later request went out with another id: the parked caller keeps waiting.
        w.on_event(&out(2));
        assert!(w.collided.is_some());
        w.on_event(&ack(2));
        assert_eq!(rx[2].try_recv(), Ok(()));
        assert_eq!(rx[1].try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_connection_failure_fails_exactly_the_unsent_and_the_unacknowledged() {
        let mut eventloop = EventLoop::new(MqttOptions::new("t", "127.0.0.1", 9), 10);
        let waiters = Mutex::new(Waiters::default());
        let (mut on_wire, mut rx) = {
            let mut w = lock(&waiters);
            let mut rx = queue(&mut w, 5);
            let first = rx.remove(0);
            w.on_event(&out(3)); // the first caller's publish is on the wire
            (first, rx)
        };
        // Buffered before the error: the second caller's publish went out as id 4.
        eventloop.state.events.push_back(out(4));
        // rumqttc took two more requests from the channel but never sent them.
        for _ in 0..2 {
            let publish = Publish::new("t", QoS::AtLeastOnce, b"x".to_vec());
            eventloop.pending.push_back(Request::Publish(publish));
        }
        fail_in_flight(&mut eventloop, &waiters);
        assert_eq!(on_wire.try_recv(), Err(TryRecvError::Closed), "its PUBACK never comes");
        assert_eq!(rx[0].try_recv(), Err(TryRecvError::Closed), "sent just before the error");
        assert_eq!(rx[1].try_recv(), Err(TryRecvError::Closed), "unsent, dropped");
        assert_eq!(rx[2].try_recv(), Err(TryRecvError::Closed), "unsent, dropped");
        // The last caller's publish is still in the request channel: it keeps its place.
        assert_eq!(rx[3].try_recv(), Err(TryRecvError::Empty));
        let w = lock(&waiters);
        assert_eq!((w.queued.len(), w.sent.len()), (1, 0));
        assert!(eventloop.pending.is_empty(), "a new clean session must not resend them");
    }
}
