//! Behind a reverse proxy (`api.trusted_proxies`): the failed-authentication limiter counts
//! per forwarded client when the peer is trusted, and per peer otherwise; the request log
//! names the client.

use crate::support::daemon::{Daemon, DaemonOptions};

fn with_env(env: &[(&str, &str)]) -> DaemonOptions {
    DaemonOptions {
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..DaemonOptions::default()
    }
}

async fn get_from(d: &Daemon, forwarded: &str, token: &str) -> u16 {
    d.client()
        .get(d.url("/scripts"))
        .header("X-Forwarded-For", forwarded)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_clients_failures_do_not_block_another() {
    // The proxy (this test, on 127.0.0.1) is trusted; so is an inner proxy hop 10.0.0.0/8.
    let d = Daemon::start(with_env(&[("SCRIPTD__API__TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")]))
        .await;
    for i in 0..20 {
        assert_eq!(get_from(&d, "203.0.113.1", "wrong").await, 401, "failure {}", i + 1);
    }
    assert_eq!(get_from(&d, "203.0.113.1", "wrong").await, 429, "the 21st failure blocks");
    assert_eq!(get_from(&d, "203.0.113.1", &d.token).await, 429, "that client is blocked");
    // Another client behind the same proxy, and one whose address a client tried to forge
    // on the left of the chain: the right-most untrusted hop counts.
    assert_eq!(get_from(&d, "203.0.113.2", &d.token).await, 200);
    assert_eq!(get_from(&d, "203.0.113.1, 203.0.113.3, 10.0.0.9", &d.token).await, 200);
    assert_eq!(get_from(&d, "198.51.100.7, 203.0.113.1, 10.0.0.9", &d.token).await, 429);
    let log = d.log();
    assert!(log.contains("203.0.113.2"), "the request log names the forwarded client:\n{log}");
}

#[tokio::test]
async fn a_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let d = Daemon::start(DaemonOptions::default()).await;
    // Each failure claims another address; the limiter keys on the peer all the same.
    for i in 0..20 {
        let forged = format!("203.0.113.{}", i + 1);
        assert_eq!(get_from(&d, &forged, "wrong").await, 401, "failure {}", i + 1);
    }
    assert_eq!(get_from(&d, "192.0.2.200", "wrong").await, 429);
    assert_eq!(get_from(&d, "192.0.2.201", &d.token).await, 429, "the peer is blocked");
}

#[tokio::test]
async fn the_limiter_follows_its_settings() {
    let d = Daemon::start(with_env(&[
        ("SCRIPTD__API__AUTH_FAILURES_PER_MINUTE", "3"),
        ("SCRIPTD__API__AUTH_BLOCK_SECONDS", "7"),
    ]))
    .await;
    for _ in 0..3 {
        assert_eq!(get_from(&d, "-", "wrong").await, 401);
    }
    let r = d.client().get(d.url("/scripts")).bearer_auth("wrong").send().await.expect("request");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));

    let off = Daemon::start(with_env(&[("SCRIPTD__API__AUTH_FAILURES_PER_MINUTE", "0")])).await;
    for _ in 0..30 {
        assert_eq!(get_from(&off, "-", "wrong").await, 401);
    }
    assert_eq!(get_from(&off, "-", &off.token).await, 200);
}
