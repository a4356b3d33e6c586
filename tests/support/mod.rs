//! Helpers shared by the integration tests (`tests/it/`, one test binary; `tests/it/main.rs`
//! includes this directory as `crate::support`).
//!
//! Real peers, each listening on 127.0.0.1 on a free port, recording what it received,
//! scriptable to answer badly, and stopping when dropped:
//!
//! - [`mosquitto::Mosquitto`]: Debian's `mosquitto` broker in a temp dir (persistent).
//! - [`postgres::server`]: Debian's PostgreSQL in a temp dir, one database per test.
//! - [`telegram_stub::TelegramStub`]: a Bot API stand-in (ok, 429, 400, 401, 403, 500, a late 500, hang).
//! - [`webhook_receiver::WebhookReceiver`]: checks `X-Scriptd-Signature`, scripted statuses.
//!
//! Programs besides Rust come through [`tools::require`]`("mosquitto")`, which returns the
//! program's path or fails naming its Debian package; each program must be listed in
//! `scripts/test-packages` (what `scripts/test` installs; `tests/it/test_packages.rs` checks
//! that the list and the tests agree).
//!
//! Plus [`daemon`] (the real `scriptd run` as a child process), [`api`] (the API in-process
//! over a temporary database), [`clients`], [`logs`] (log capture), [`timetables`]
//! (proptest generators), [`free_port`], [`wait_for_port`], [`within`] (a timeout that fails
//! the test), [`write_file`], [`proptest_config`] and [`TestClient`], a plain rumqttc client that publishes and
//! subscribes like an analytics server or a client app would.

pub mod api;
pub mod clients;
pub mod daemon;
pub mod logs;
pub mod mosquitto;
pub mod pg_daemon;
pub mod postgres;
pub mod telegram_stub;
pub mod timetables;
pub mod tools;
pub mod webhook_receiver;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, release it).
/// Only for peers that cannot bind port 0 themselves (Mosquitto, rumqttd).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Waits until 127.0.0.1:`port` accepts TCP connections; panics after `timeout`.
pub async fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "127.0.0.1:{port} did not open in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `text` to `dir`/`name` (a configuration file for a test).
pub fn write_file(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write test config");
}

/// proptest's configuration for the suite's properties: `cases` cases, failures kept in
/// `<source>.proptest-regressions` beside `source_file` (pass `file!()`). Named explicitly:
/// the default (`SourceParallel`) would put them in `tests/proptest-regressions/*.txt`, as
/// it looks for the `main.rs` next to the source.
pub fn proptest_config(cases: u32, source_file: &'static str) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        source_file: Some(source_file),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// Awaits `f` for at most `secs` seconds; a timeout fails the test with `what`.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

/// A plain MQTT client for tests (auto acks, clean session): publishes like an analytics
/// server, subscribes like a client app. Its poll task stops when it is dropped.
pub struct TestClient {
    pub client: rumqttc::AsyncClient,
    received: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    subacks: tokio::sync::mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl TestClient {
    /// Connects to 127.0.0.1:`port` as `client_id` and waits for the CONNACK.
    pub async fn connect(port: u16, client_id: &str) -> Self {
        Self::connect_with_max_packet(port, client_id, 1 << 20).await
    }

    /// [`TestClient::connect`] that sends and receives packets up to `max_packet` bytes.
    pub async fn connect_with_max_packet(port: u16, client_id: &str, max_packet: usize) -> Self {
        let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(max_packet, max_packet);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 10_000);
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let (sub_tx, subacks) = tokio::sync::mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut conn_tx = Some(conn_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(t) = conn_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        within(10, "test client CONNACK", conn_rx).await.expect("test client connected");
        TestClient { client, received, subacks, task }
    }

    /// Publishes at QoS 1.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .expect("queue publish");
    }

    /// Subscribes at QoS 1 and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.expect("queue subscribe");
        within(10, "SUBACK", self.subacks.recv()).await.expect("suback");
    }

    /// The next message received, waiting at most `secs`.
    pub async fn next(&mut self, secs: u64) -> rumqttc::Publish {
        within(secs, "message to the test client", self.received.recv()).await.expect("message")
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}
