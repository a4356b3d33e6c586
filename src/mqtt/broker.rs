//! The embedded MQTT broker (rumqttd), for `mqtt.embedded_broker = true`.
//!
//! With it, `scriptd run` on a fresh checkout works with nothing else installed: analytics
//! publishers and client apps connect to `mqtt.host:mqtt.port` as they would to Mosquitto.
//! Production setups point scriptd at the VMS's broker instead (`embedded_broker = false`).
//!
//! What operators should know about it:
//! - MQTT 3.1.1 only (rumqttd's `v4` listener), no TLS, no authentication.
//! - Persistent sessions (`clean_session = false`) work: QoS 1 messages for an offline
//!   subscriber are kept in the router's in-memory commit log and delivered when it comes
//!   back. They are **in memory only**: they do not survive a restart of the daemon.
//! - rumqttd sends at most 100 unacknowledged QoS 1 messages to one subscriber (a constant
//!   in rumqttd), which is what bounds scriptd's own receive queue in practice.
//! - `Broker::start` blocks forever and has no shutdown API, so the broker runs on its own OS
//!   threads until the process exits; [`EmbeddedBroker`] is only a handle to read its address.
//! - rumqttd logs a lot at `info`: the daemon's log filter should include `rumqttd=warn`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Largest payload the embedded broker accepts (bytes).
pub const MAX_PAYLOAD_SIZE: usize = 1024 * 1024;

/// How long [`start_embedded`] waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Something already listens on the address (probably a real broker).
    #[error(
        "{addr} is already in use; set mqtt.embedded_broker = false to use the broker that is running there"
    )]
    PortInUse {
        /// The address asked for.
        addr: String,
    },
    /// The address cannot be used for another reason (not local, permission, ...).
    #[error("cannot listen on {addr} for the embedded MQTT broker: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The broker thread failed or did not open the port in time.
    #[error("the embedded MQTT broker did not start on {addr}: {reason}")]
    Start {
        /// The address asked for.
        addr: String,
        /// What happened.
        reason: String,
    },
}

/// A running embedded broker. Dropping it does not stop the broker (rumqttd cannot be
/// stopped); it runs until the process exits.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts the embedded broker on `host:port` and returns once it accepts TCP connections.
///
/// Fails with [`BrokerError::PortInUse`] (whose message tells the operator to set
/// `mqtt.embedded_broker = false`) when something already listens there.
pub fn start_embedded(host: &str, port: u16) -> Result<EmbeddedBroker, BrokerError> {
    let shown = format!("{host}:{port}");
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|source| BrokerError::Bind { addr: shown.clone(), source })?
        .next()
        .ok_or_else(|| BrokerError::Bind {
            addr: shown.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "host has no address"),
        })?;

    // Fail early with a clear message; rumqttd would only log the bind error on its thread.
    match TcpListener::bind(addr) {
        Ok(listener) => drop(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(BrokerError::PortInUse { addr: shown });
        }
        Err(source) => return Err(BrokerError::Bind { addr: shown, source }),
    }

    let config = config(addr);
    let thread = std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start { addr: shown.clone(), reason: e.to_string() })?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            tracing::info!(%addr, "embedded MQTT broker listening");
            return Ok(EmbeddedBroker { addr, _thread: thread });
        }
        if thread.is_finished() {
            return Err(BrokerError::Start {
                addr: shown,
                reason: "the broker thread exited (see the log above)".into(),
            });
        }
        if Instant::now() >= deadline {
            return Err(BrokerError::Start {
                addr: shown,
                reason: format!("the port did not open within {READY_TIMEOUT:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The rumqttd configuration: every router and listener field set (rumqttd's defaults are
/// zeros, which refuse every connection).
fn config(listen: SocketAddr) -> Config {
    let router = RouterConfig {
        max_connections: 10_010,
        // QoS 0 messages read from the commit log per round.
        max_outgoing_packet_count: 200,
        // The commit log keeps up to 10 x 16 MiB per topic filter: what an offline persistent
        // session can find when it comes back.
        max_segment_size: 16 * 1024 * 1024,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: MAX_PAYLOAD_SIZE,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "scriptd-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_says_how_to_use_the_running_broker() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = start_embedded("127.0.0.1", port).unwrap_err();
        assert!(matches!(err, BrokerError::PortInUse { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "127.0.0.1:{port} is already in use; set mqtt.embedded_broker = false to use the broker that is running there"
            )
        );
    }

    #[test]
    fn starts_and_accepts_connections() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let broker = start_embedded("127.0.0.1", port).unwrap();
        assert_eq!(broker.local_addr().port(), port);
        assert!(TcpStream::connect(broker.local_addr()).is_ok());
    }
}
