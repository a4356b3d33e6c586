//! MQTT plumbing shared by the source (occurrences in) and the push sender (pushes out):
//! where and how to connect ([`MqttConnectOptions`]), the v3.1.1/v5 connection wrapper
//! ([`link`]), shutdown without losing queued acknowledgements (`GracefulStop`), connection state
//! and its metrics (`ConnState`, with its reconnect [`Backoff`]), TLS to the broker
//! ([`tls`]), and the embedded broker ([`broker`]).

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod link;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Event, EventLoop, MqttOptions, TlsConfiguration, Transport};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::secret::Secret;
use link::{Ev, Loop, Protocol};
use tls::TlsFiles;

/// Largest MQTT packet the pusher sends (8 MiB; pushes carry at most
/// [`crate::delivery::MAX_PUSH_DATA_BYTES`] of `data`, so they stay far below it).
pub const MAX_PACKET_SIZE: usize = 8 * 1024 * 1024;

/// Largest MQTT packet a connection accepts: the protocol's own maximum (256 MiB), so no
/// message, however large, can break the connection. rumqttc fails the connection on a
/// larger incoming packet, and since the broker keeps an unacknowledged QoS 1 message for
/// our session it would send it again after every reconnect: one oversized message would
/// stop ingestion for good. The size limit that matters is applied after reading
/// (`events.max_payload_bytes`, reason `too_large`, acknowledged so it never comes back).
pub const MAX_INCOMING_PACKET_SIZE: usize = crate::settings::MAX_MQTT_PACKET_BYTES as usize;

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
    /// TLS to the broker (`[mqtt.tls]`); `None`: plain TCP. The files are read before
    /// every connection attempt (see [`tls`]).
    pub tls: Option<TlsFiles>,
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
            tls: None,
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

/// How long a stopping connection may take to write its last acknowledgements and the
/// DISCONNECT.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Shutdown for a poll loop without cancelling `EventLoop::poll` while connected (rumqttc
/// can lose an outgoing packet when that future is dropped mid-write, and the last
/// acknowledgements would go with it).
///
/// When the shutdown future completes, a DISCONNECT is queued behind everything already in
/// rumqttc's request channel; [`GracefulStop::poll`] keeps polling until that DISCONNECT is written
/// (so every acknowledgement queued before shutdown reaches the broker), the connection
/// fails, or [`STOP_GRACE`] passes, and then until the broker closes the connection (it has
/// then processed everything). While not connected, polling is simply cancelled.
pub(crate) struct GracefulStop {
    /// Cancelled once the DISCONNECT was queued.
    requested: CancellationToken,
    deadline: Option<tokio::time::Instant>,
    task: JoinHandle<()>,
}

/// An MQTT event loop [`GracefulStop`] can drive: rumqttc's 3.1.1 one, or the source's [`Loop`].
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
    /// The TLS configuration of the next connection attempt.
    fn set_tls(&mut self, config: Arc<rustls::ClientConfig>);
}

fn tls_transport(config: Arc<rustls::ClientConfig>) -> Transport {
    Transport::tls_with_config(TlsConfiguration::Rustls(config))
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
    fn set_tls(&mut self, config: Arc<rustls::ClientConfig>) {
        self.mqtt_options.set_transport(tls_transport(config));
    }
}

impl PollLoop for Loop {
    type Event = Ev;
    type Error = link::LinkError;
    fn is_connected(&self) -> bool {
        Loop::is_connected(self)
    }
    fn next(&mut self) -> impl Future<Output = Result<Ev, Self::Error>> + Send {
        self.poll()
    }
    fn is_disconnect(event: &Ev) -> bool {
        matches!(event, Ev::DisconnectWritten)
    }
    fn set_tls(&mut self, config: Arc<rustls::ClientConfig>) {
        match self {
            Loop::V4(l) => {
                l.mqtt_options.set_transport(tls_transport(config));
            }
            Loop::V5(l, _) => {
                l.options.set_transport(tls_transport(config));
            }
        }
    }
}

impl GracefulStop {
    /// Calls `disconnect` (queue a DISCONNECT) once `shutdown` completes.
    pub(crate) fn new(
        disconnect: impl FnOnce() + Send + 'static,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let requested = CancellationToken::new();
        let fire = requested.clone();
        let task = tokio::spawn(async move {
            shutdown.await;
            disconnect();
            fire.cancel();
        });
        Self { requested, deadline: None, task }
    }

    /// True once shutdown was requested.
    pub(crate) fn requested(&mut self) -> bool {
        let requested = self.requested.is_cancelled();
        if requested && self.deadline.is_none() {
            self.deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
        }
        requested
    }

    /// Resolves when shutdown is requested.
    pub(crate) async fn wait(&mut self) {
        self.requested.cancelled().await;
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

    /// Before a connection attempt: reads the TLS files afresh into `eventloop` (nothing
    /// to do without TLS or while connected). A file that cannot be used counts as a failed
    /// attempt (logged, reported, backed off) and is read again after the backoff. Returns
    /// false when shutdown was requested: end the loop.
    pub(crate) async fn load_tls<L: PollLoop>(
        &mut self,
        eventloop: &mut L,
        conn: &mut ConnState,
        tls: Option<&TlsFiles>,
    ) -> bool {
        let Some(tls) = tls else { return true };
        while !eventloop.is_connected() && !self.requested() {
            match tls.client_config() {
                Ok(config) => {
                    eventloop.set_tls(config);
                    break;
                }
                Err(e) => {
                    if !self.back_off(conn, &e).await {
                        return false;
                    }
                }
            }
        }
        true
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

impl Drop for GracefulStop {
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
    reason: watch::Sender<Option<String>>,
    ever_connected: bool,
    failures: u64,
    pub(crate) backoff: Backoff,
}

impl ConnState {
    /// `tx` carries connected or not; `reason` the last connection error while not
    /// connected (`None` while connected).
    pub(crate) fn new(
        label: &'static str,
        tx: watch::Sender<bool>,
        reason: watch::Sender<Option<String>>,
        o: &MqttConnectOptions,
    ) -> Self {
        metrics::gauge!("scriptd_mqtt_connected", "connection" => label).set(0.0);
        Self {
            label,
            addr: format!("{}:{}", o.host, o.port),
            tx,
            reason,
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
        self.reason.send_replace(None);
        self.tx.send_replace(true);
    }

    pub(crate) fn down(&mut self, e: &(dyn std::fmt::Display + Sync)) {
        let was_up = self.tx.send_replace(false);
        let reason = e.to_string();
        let new_reason = self.reason.send_if_modified(|r| {
            let changed = r.as_deref() != Some(reason.as_str());
            if changed {
                *r = Some(reason);
            }
            changed
        });
        metrics::gauge!("scriptd_mqtt_connected", "connection" => self.label).set(0.0);
        self.failures += 1;
        if was_up {
            tracing::warn!(connection = self.label, broker = %self.addr, error = %e, "MQTT connection lost; reconnecting");
        } else if self.failures == 1 || new_reason {
            // A new reason (e.g. refused, then a TLS failure) is worth a warning again.
            tracing::warn!(connection = self.label, broker = %self.addr, error = %e, "MQTT broker unreachable; retrying");
        } else {
            tracing::debug!(connection = self.label, broker = %self.addr, error = %e, attempt = self.failures, "MQTT reconnect failed");
        }
    }

    pub(crate) fn closed(&mut self) {
        self.tx.send_replace(false);
        self.reason.send_replace(Some("disconnected (stopping)".into()));
        metrics::gauge!("scriptd_mqtt_connected", "connection" => self.label).set(0.0);
        tracing::info!(connection = self.label, "MQTT disconnected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_not_in_debug() {
        let mut o = MqttConnectOptions::new("127.0.0.1", 1883, "scriptd");
        o.username = Some("u".into());
        o.password = Some(Secret::new("hunter2"));
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
