//! The reaction stream's pushes from the broker, for several instances.
//!
//! On PostgreSQL several instances share the work, and a reaction stream opened on one of
//! them must carry the caller's pushes whichever instance made them (CONTRACT §11). Every
//! push goes through the broker, so while at least one stream is open on this instance a
//! connection of its own (`{mqtt.client_id}-feed`, clean session, QoS 0) subscribes to
//! `{push_topic_prefix}/+/reactions` and hands each push it receives to the
//! [`PushHub`]; [`IDLE`] after the last stream closed it disconnects, so an instance
//! without streams pays nothing. The dispatcher then does not feed the hub itself (its own
//! pushes come back through the broker, and would otherwise be shown twice).
//!
//! Best effort, like the hub: a push the broker carried while this connection was being
//! made is not shown (a stream sees pushes from the moment it is connected), and the
//! durable record stays the outbox (`GET /scripts/{id}/deliveries`).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hub::PushHub;
use crate::mqtt::{ConnState, GracefulStop, MqttConnectOptions};

/// How long the connection stays after the last stream closed.
pub const IDLE: Duration = Duration::from_secs(30);

/// Feeds `hub` from the broker while it has subscribers, until `shutdown`.
pub fn spawn(
    connect: MqttConnectOptions,
    client_id: String,
    push_topic_prefix: &str,
    hub: PushHub,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let prefix = push_topic_prefix.trim_end_matches('/').to_owned();
    tokio::spawn(async move {
        loop {
            while hub.subscribers() == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = hub.wanted() => {}
                }
            }
            session(&connect, &client_id, &prefix, &hub, &shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    })
}

/// One connection, from the first stream until [`IDLE`] after the last (or `shutdown`).
async fn session(
    connect: &MqttConnectOptions,
    client_id: &str,
    prefix: &str,
    hub: &PushHub,
    shutdown: &CancellationToken,
) {
    let (client, mut eventloop) = AsyncClient::new(connect.mqtt_options(client_id, true), 16);
    let (state, _) = watch::channel(false);
    let (reason, _) = watch::channel(None);
    let mut conn = ConnState::new("feed", state, reason, connect);
    let unwanted = {
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(IDLE) => {
                        if hub.subscribers() == 0 {
                            return;
                        }
                    }
                }
            }
        }
    };
    let disconnect = client.clone();
    let mut stop = GracefulStop::new(
        move || {
            let _ = disconnect.try_disconnect();
        },
        unwanted,
    );
    let topic = format!("{prefix}/+/reactions");
    while stop.load_tls(&mut eventloop, &mut conn, connect.tls.as_ref()).await
        && let Some(event) = stop.poll(&mut eventloop).await
    {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                conn.up(ack.session_present);
                // A clean session has no subscriptions: subscribe on every connection.
                if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtMostOnce) {
                    tracing::warn!(error = %e, "cannot subscribe to the pushes for the reaction streams");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(user_id) = recipient(prefix, &p.topic) {
                    hub.publish(user_id, &String::from_utf8_lossy(&p.payload));
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !stop.back_off(&mut conn, &e).await {
                    break;
                }
            }
        }
    }
    conn.closed();
}

/// The user of a push topic `{prefix}/{user_id}/reactions`.
fn recipient(prefix: &str, topic: &str) -> Option<i64> {
    let user = topic.strip_prefix(prefix)?.strip_prefix('/')?.strip_suffix("/reactions")?;
    user.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipient_is_read_from_the_push_topic() {
        assert_eq!(recipient("scriptd/push", "scriptd/push/42/reactions"), Some(42));
        assert_eq!(recipient("scriptd/push", "scriptd/push/x/reactions"), None);
        assert_eq!(recipient("scriptd/push", "scriptd/pushy/42/reactions"), None);
        assert_eq!(recipient("scriptd/push", "scriptd/push/42/other"), None);
    }
}
