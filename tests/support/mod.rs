//! Real peers for integration tests, shared by every `tests/*.rs` file (`mod support;`).
//!
//! Each peer listens on 127.0.0.1 on a free port, records what it received, can be scripted
//! to answer badly, and stops when dropped:
//!
//! - `mosquitto::Mosquitto`: Debian's `mosquitto` broker in a temp dir (persistent).
//! - `telegram_stub::TelegramStub`: a Bot API stand-in (ok, 429, 400, 401, 403, 500, hang).
//! - [`webhook_receiver::WebhookReceiver`]: checks `X-Scriptd-Signature`, scripted statuses.
//!
//! Plus [`free_port`], [`wait_for_port`] and [`within`] (a timeout that fails the test).
#![allow(dead_code)]

pub mod webhook_receiver;

use std::future::Future;
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

/// Awaits `f` for at most `secs` seconds; a timeout fails the test with `what`.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}
