//! The API under a descriptor limit of 1,024 (the systemd default): idle and half-sent
//! connections are closed, `/healthz` and authenticated requests keep answering, the
//! pipeline and the store are unaffected, and reaction streams are capped per token and in
//! total (429).

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::clients::{PersistentSubscriber, ReliablePublisher};
use crate::support::daemon::{Daemon, DaemonOptions, all_day, occurrence, script};
use crate::support::within;

const SIDEBAR: i64 = 2;
const FACE: i64 = 1;
/// The header-read timeout the daemon runs with here (seconds).
const HEADER_TIMEOUT: u64 = 3;

/// Raises this test process's own soft descriptor limit to its hard limit: the test holds
/// 1,600 client sockets besides its own files.
fn raise_own_nofile(at_least: u64) {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0, "getrlimit");
        assert!(
            l.rlim_max >= at_least,
            "this test needs {at_least} open files; the hard limit is {}",
            l.rlim_max
        );
        l.rlim_cur = l.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0, "setrlimit");
    }
}

fn options() -> DaemonOptions {
    DaemonOptions {
        nofile: Some(1024),
        env: vec![
            ("SCRIPTD__API__HEADER_READ_TIMEOUT_SECONDS".into(), HEADER_TIMEOUT.to_string()),
            // The occurrences carry a fixed time: never drop them as stale.
            ("SCRIPTD__EVENTS__MAX_AGE_SECONDS".into(), "0".into()),
        ],
        ..DaemonOptions::default()
    }
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// One request on a new connection; the status, or why it failed, within 1 s.
async fn answer_within_1s(d: &Daemon, path: &str, token: Option<&str>) -> Result<u16, String> {
    let client = d.client();
    let mut req = client.get(format!("{}{path}", d.base()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match tokio::time::timeout(Duration::from_secs(1), req.send()).await {
        Ok(Ok(r)) => Ok(r.status().as_u16()),
        Ok(Err(e)) => Err(format!("{path}: {e}")),
        Err(_) => Err(format!("{path}: no answer within 1 s")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_half_sent_connections_are_closed_and_the_api_keeps_answering() {
    raise_own_nofile(4096);
    let d = Daemon::start(options()).await;
    let pid = d.pid().expect("daemon pid");
    d.create_script(&script("flood", SIDEBAR, FACE, &[1], all_day())).await;
    let app =
        PersistentSubscriber::connect(d.mqtt_port, "flood-app", "vms/users/+/reactions").await;
    let vms = ReliablePublisher::connect(d.mqtt_port, "flood-vms");

    // 1,100 connections that send nothing and 500 that send half a request head.
    let addr = format!("127.0.0.1:{}", d.api_port);
    let mut attackers = Vec::new();
    for i in 0..1600 {
        let mut s = TcpStream::connect(&addr).await.expect("connect (the backlog took it)");
        if i >= 1100 {
            // A closed connection may refuse the write: that is fine.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
        }
        attackers.push(s);
    }
    let opened = Instant::now();

    // While the attackers hold the cap (before the header timeout closes them), `/healthz`
    // says why: the api component is degraded.
    let mut degraded = false;
    while !degraded && opened.elapsed() < Duration::from_secs(HEADER_TIMEOUT) {
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(1),
            d.client().get(format!("{}/healthz", d.base())).send(),
        )
        .await
        {
            let v: Value = r.json().await.unwrap_or(Value::Null);
            degraded = v["components"]["api"]["state"] == "degraded";
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Meanwhile: occurrences flow and the API answers, each on a new connection.
    for i in 0..1000 {
        vms.publish(
            "vms/analytics/events/1",
            occurrence(&format!("flood-{i}"), FACE, 1, "2026-11-27T10:00:00Z"),
        )
        .await;
    }
    let mut peak = open_descriptors(pid);
    let mut failures = Vec::new();
    for _ in 0..10 {
        for (path, token) in [("/healthz", None), ("/api/v1/scripts", Some(d.token.as_str()))] {
            match answer_within_1s(&d, path, token).await {
                Ok(200) => {}
                Ok(other) => failures.push(format!("{path}: {other}")),
                Err(e) => failures.push(e),
            }
        }
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(1),
            d.client().get(format!("{}/healthz", d.base())).send(),
        )
        .await
        {
            let v: Value = r.json().await.unwrap_or(Value::Null);
            degraded |= v["components"]["api"]["state"] == "degraded";
        }
        peak = peak.max(open_descriptors(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failures.is_empty(), "the API did not answer during the flood: {failures:?}");

    // Every attacking connection is closed within the header timeout (plus margin for
    // this loaded machine).
    let closed = futures_util::future::join_all(attackers.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }));
    within(HEADER_TIMEOUT + 10, "every idle or half-sent connection closed", closed).await;
    let took = opened.elapsed();

    vms.wait_acked(30).await;
    let pushes = app.wait_distinct(1000, 60, "1,000 pushes during the flood").await;
    assert!(pushes.len() >= 1000);
    let log = d.log();
    assert!(!log.contains("unable to open database file"), "a store call failed:\n{log}");
    assert!(!log.contains("Too many open files"), "the daemon ran out of descriptors:\n{log}");
    let budget = scriptd::api::limits::descriptors_needed(&scriptd::settings::Settings::default());
    assert!(peak as u64 <= budget, "{peak} descriptors open, over the budget of {budget}");
    assert!(degraded, "/healthz showed the api degraded while the cap was reached");
    let metrics = d.metrics().await;
    let evicted = metric(&metrics, "scriptd_api_connections_evicted_total");
    assert!(evicted > 0.0, "idle connections were closed to make room:\n{metrics}");
    eprintln!(
        "flood: all 1,600 closed after {took:?}; daemon peak {peak} descriptors; evicted {evicted}"
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Opens a stream; `Ok(response)` on 200 (kept open by the caller), `Err(status, body)`
/// otherwise.
async fn open_stream(d: &Daemon, token: &str) -> Result<reqwest::Response, (u16, Value)> {
    let r = d
        .client()
        .get(d.url("/reactions/stream"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| (0, Value::String(e.to_string())))?;
    if r.status() == 200 {
        return Ok(r);
    }
    let status = r.status().as_u16();
    assert_eq!(r.headers().get("retry-after").map(|v| v.to_str().unwrap_or("")), Some("10"));
    Err((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_past_the_caps_get_429_and_the_rest_work() {
    raise_own_nofile(4096);
    let mut opts = options();
    opts.env.push(("SCRIPTD__API__MAX_STREAMS".into(), "12".into()));
    opts.env.push(("SCRIPTD__API__MAX_STREAMS_PER_TOKEN".into(), "8".into()));
    let d = Daemon::start(opts).await;
    d.create_script(&script("streams", SIDEBAR, FACE, &[1], all_day())).await;

    // 1,000 streams with one token, 50 at a time.
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..20 {
        let batch = futures_util::future::join_all((0..50).map(|_| open_stream(&d, &d.token)));
        for r in batch.await {
            match r {
                Ok(stream) => open.push(stream),
                Err(e) => refused.push(e),
            }
        }
    }
    assert_eq!(open.len(), 8, "streams open with one token");
    assert_eq!(refused.len(), 992);
    for (status, body) in &refused {
        assert_eq!(*status, 429, "{body}");
        assert!(body["message"].as_str().unwrap_or("").contains("with this token"), "{body}");
    }

    // Another token of the same user: 4 more fit the total of 12, the 5th does not.
    let other = d.cli(&["tokens", "create", "--user", "1"]);
    for _ in 0..4 {
        open.push(open_stream(&d, &other).await.expect("a stream within the total"));
    }
    let (status, body) = open_stream(&d, &other).await.expect_err("past api.max_streams");
    assert_eq!(status, 429);
    assert!(body["message"].as_str().unwrap_or("").contains("api.max_streams"), "{body}");

    // The open streams work: each carries the push.
    let vms = ReliablePublisher::connect(d.mqtt_port, "streams-vms");
    vms.publish("vms/analytics/events/1", occurrence("s-1", FACE, 1, "2026-11-27T10:00:00Z")).await;
    for (i, mut stream) in open.drain(..).enumerate() {
        let text = within(10, "a push on an open stream", async {
            let mut text = String::new();
            while !text.contains("s-1") {
                let chunk = stream.chunk().await.expect("stream read").expect("stream open");
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        })
        .await;
        assert!(text.contains("event: reaction"), "stream {i}: {text}");
    }
    // Closed streams free their places.
    within(10, "places freed", async {
        loop {
            if open_stream(&d, &d.token).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let metrics = d.metrics().await;
    assert!(metric(&metrics, "scriptd_api_streams_refused_total") >= 993.0, "{metrics}");
    let health: Value = d
        .client()
        .get(format!("{}/healthz", d.base()))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok", "{health}");
}
