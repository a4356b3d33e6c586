//! The events connection in either MQTT version: one client handle ([`Link`]) and one event
//! loop ([`Loop`]) over rumqttc's 3.1.1 and 5 clients, reduced to the few events the
//! source acts on ([`Ev`]), so the source's loop is written once.
//!
//! # Why MQTT 5
//!
//! With MQTT 5 the client announces a *Maximum Packet Size* in its CONNECT, and the broker
//! never sends it a larger packet: Mosquitto (2.x) and EMQX drop such a message for this
//! client (Mosquitto logs it) instead of sending it. One oversized message therefore never
//! reaches the daemon at all. The limit announced is `events.max_payload_bytes` plus
//! [`PACKET_OVERHEAD`] for the topic and headers; payloads between the two are read and
//! rejected as `too_large` by the intake. With 3.1.1 there is no such announcement: the
//! connection accepts the protocol's largest packet and the intake rejects the payload.
//!
//! The MQTT 5 session is kept like 3.1.1's `clean_session = false`: `clean_start = false`
//! and a session that never expires (`session_expiry_interval` = 0xFFFF_FFFF), so QoS 1
//! messages wait at the broker while the daemon is down.

use bytes::Bytes;
use rumqttc::QoS;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, Publish as Publish5, SubscribeReasonCode};

use super::{MAX_INCOMING_PACKET_SIZE, MqttConnectOptions};

/// Bytes allowed on top of `events.max_payload_bytes` in the announced Maximum Packet Size
/// (fixed header, topic of up to 64 KiB, properties).
pub const PACKET_OVERHEAD: u32 = 70 * 1024;

/// Which MQTT version a connection speaks (`mqtt.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT 5: the broker is told the largest packet the daemon accepts.
    #[default]
    V5,
    /// MQTT 3.1.1.
    V311,
}

/// A client handle of either version; cheap to clone.
#[derive(Debug, Clone)]
pub enum Link {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop of either version.
pub enum Loop {
    /// MQTT 3.1.1.
    V4(Box<rumqttc::EventLoop>),
    /// MQTT 5, and whether a CONNACK arrived since the last connection error (its network
    /// field is private, unlike 3.1.1's).
    V5(Box<rumqttc::v5::EventLoop>, bool),
}

/// A received publish, the same in both versions.
#[derive(Debug)]
pub struct Received {
    /// The topic.
    pub topic: String,
    /// The payload bytes.
    pub payload: Bytes,
    /// Packet id, for the acknowledgement.
    pub pkid: u16,
    /// Its QoS.
    pub qos: QoS,
    /// Flagged as a redelivery.
    pub dup: bool,
}

/// What the source acts on.
#[derive(Debug)]
pub enum Ev {
    /// Connected; whether the broker had our session.
    ConnAck {
        /// The broker kept the session (and the subscription).
        session_present: bool,
    },
    /// The broker answered the subscription.
    SubAck {
        /// It refused it.
        refused: bool,
    },
    /// A message.
    Publish(Received),
    /// A PUBACK was written to the broker.
    PubAckWritten,
    /// The DISCONNECT was written (shutdown).
    DisconnectWritten,
    /// Anything else (pings, our own SUBSCRIBE, ...).
    Other,
}

/// A connection failure of either version, for logs.
#[derive(Debug)]
pub struct LinkError(pub String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Link {
    /// Connects lazily (the first poll connects): the client and its event loop, with manual
    /// acknowledgements and a persistent session, as `client_id`.
    pub fn new(
        o: &MqttConnectOptions,
        client_id: &str,
        max_payload_bytes: u64,
        capacity: usize,
    ) -> (Link, Loop) {
        match o.protocol {
            Protocol::V311 => {
                let mut mqtt = o.mqtt_options(client_id, false);
                mqtt.set_manual_acks(true);
                let (client, eventloop) = rumqttc::AsyncClient::new(mqtt, capacity);
                (Link::V4(client), Loop::V4(Box::new(eventloop)))
            }
            Protocol::V5 => {
                let mut mqtt = rumqttc::v5::MqttOptions::new(client_id, o.host.clone(), o.port);
                mqtt.set_keep_alive(o.keep_alive.max(std::time::Duration::from_secs(1)));
                mqtt.set_clean_start(false);
                mqtt.set_session_expiry_interval(Some(u32::MAX));
                mqtt.set_manual_acks(true);
                mqtt.set_max_packet_size(Some(announced_max_packet(max_payload_bytes)));
                if let Some(user) = &o.username {
                    let pass =
                        o.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
                    mqtt.set_credentials(user.clone(), pass);
                }
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(mqtt, capacity);
                (Link::V5(client), Loop::V5(Box::new(eventloop), false))
            }
        }
    }

    /// Queues a QoS 1 subscription to `topic`.
    pub fn try_subscribe(&self, topic: &str) -> Result<(), LinkError> {
        match self {
            Link::V4(c) => c.try_subscribe(topic, QoS::AtLeastOnce),
            Link::V5(c) => {
                return c
                    .try_subscribe(topic, QoS5::AtLeastOnce)
                    .map_err(|e| LinkError(e.to_string()));
            }
        }
        .map_err(|e| LinkError(e.to_string()))
    }

    /// Queues a DISCONNECT (shutdown).
    pub fn try_disconnect(&self) {
        match self {
            Link::V4(c) => {
                let _ = c.try_disconnect();
            }
            Link::V5(c) => {
                let _ = c.try_disconnect();
            }
        }
    }

    /// Queues the acknowledgement of the QoS 1 publish `pkid`; an error means the event
    /// loop is gone.
    pub async fn ack(&self, pkid: u16, qos: QoS) -> Result<(), LinkError> {
        match self {
            Link::V4(c) => {
                let mut p = rumqttc::Publish::new(String::new(), qos, Vec::new());
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| LinkError(e.to_string()))
            }
            Link::V5(c) => {
                let mut p = Publish5::new(String::new(), qos5(qos), Vec::new(), None);
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| LinkError(e.to_string()))
            }
        }
    }
}

/// The Maximum Packet Size announced for `max_payload_bytes`.
pub fn announced_max_packet(max_payload_bytes: u64) -> u32 {
    let limit = max_payload_bytes.saturating_add(u64::from(PACKET_OVERHEAD));
    u32::try_from(limit.min(MAX_INCOMING_PACKET_SIZE as u64)).unwrap_or(u32::MAX)
}

fn qos5(q: QoS) -> QoS5 {
    match q {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn qos4(q: QoS5) -> QoS {
    match q {
        QoS5::AtMostOnce => QoS::AtMostOnce,
        QoS5::AtLeastOnce => QoS::AtLeastOnce,
        QoS5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

impl Loop {
    /// True while a connection is established (polling it must not be cancelled then).
    pub fn is_connected(&self) -> bool {
        match self {
            Loop::V4(l) => l.network.is_some(),
            Loop::V5(_, connected) => *connected,
        }
    }

    /// The next event (connecting first when needed).
    pub async fn poll(&mut self) -> Result<Ev, LinkError> {
        match self {
            Loop::V4(l) => {
                use rumqttc::{Event, Outgoing, Packet};
                let ev = l.poll().await.map_err(|e| LinkError(e.to_string()))?;
                Ok(match ev {
                    Event::Incoming(Packet::ConnAck(a)) => {
                        Ev::ConnAck { session_present: a.session_present }
                    }
                    Event::Incoming(Packet::SubAck(a)) => Ev::SubAck {
                        refused: a
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                    },
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish(Received {
                        topic: p.topic,
                        payload: p.payload,
                        pkid: p.pkid,
                        qos: p.qos,
                        dup: p.dup,
                    }),
                    Event::Outgoing(Outgoing::PubAck(_)) => Ev::PubAckWritten,
                    Event::Outgoing(Outgoing::Disconnect) => Ev::DisconnectWritten,
                    _ => Ev::Other,
                })
            }
            Loop::V5(l, connected) => {
                use rumqttc::Outgoing;
                use rumqttc::v5::Event;
                let ev = match l.poll().await {
                    Ok(ev) => ev,
                    Err(e) => {
                        *connected = false;
                        return Err(LinkError(e.to_string()));
                    }
                };
                Ok(match ev {
                    Event::Incoming(Packet5::ConnAck(a)) => {
                        *connected = true;
                        Ev::ConnAck { session_present: a.session_present }
                    }
                    Event::Incoming(Packet5::SubAck(a)) => Ev::SubAck {
                        refused: a
                            .return_codes
                            .iter()
                            .any(|c| !matches!(c, SubscribeReasonCode::Success(_))),
                    },
                    Event::Incoming(Packet5::Publish(p)) => Ev::Publish(Received {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        pkid: p.pkid,
                        qos: qos4(p.qos),
                        dup: p.dup,
                    }),
                    Event::Incoming(Packet5::Disconnect(d)) => {
                        tracing::warn!(reason = ?d.reason_code, "the MQTT broker disconnected us");
                        Ev::Other
                    }
                    Event::Outgoing(Outgoing::PubAck(_)) => Ev::PubAckWritten,
                    Event::Outgoing(Outgoing::Disconnect) => Ev::DisconnectWritten,
                    _ => Ev::Other,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_limit_is_the_payload_limit_plus_headers_and_never_above_mqtts() {
        assert_eq!(announced_max_packet(256 * 1024), 256 * 1024 + PACKET_OVERHEAD);
        assert_eq!(announced_max_packet(u64::MAX), MAX_INCOMING_PACKET_SIZE as u32);
    }

    #[test]
    fn qos_maps_both_ways() {
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(qos4(qos5(q)), q);
        }
    }
}
