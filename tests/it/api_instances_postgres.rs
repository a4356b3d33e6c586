//! The API of several instances on one PostgreSQL is one system (CONTRACT §11): users and
//! tokens made with the CLI work on every instance; a script created through one instance's
//! API is in force on the other within 1 s (measured with `POST /explain`); a reaction
//! stream opened on one instance carries the pushes the other made; occurrences and
//! deliveries answer the same on both. Two real `scriptd run`, a real PostgreSQL and a real
//! Mosquitto, all started by the test.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::TestClient;
use crate::support::daemon::{all_day, occurrence, script};
use crate::support::mosquitto::Mosquitto;
use crate::support::pg_daemon::{Run, cli, migrate};
use crate::support::postgres::server;
use crate::support::within;

const SIDEBAR: i64 = 2;
const FACE: i64 = 1;

/// A request to `run` as `token`: the status and the JSON body.
async fn call(
    run: &Run,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut rb = reqwest::Client::new()
        .request(method, run.url(&format!("/api/v1{path}")))
        .bearer_auth(token)
        .header("X-Client", "web");
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let res = rb.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// True when `POST /explain` on `run` says script `id` fires for an occurrence now.
async fn fires(run: &Run, token: &str, id: i64) -> bool {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let q = json!({"event_id": FACE, "camera_id": 3, "occurred_at": now});
    let (status, v) = call(run, Method::POST, "/explain", token, Some(&q)).await;
    status == 200
        && v["data"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["script_id"] == id && s["fires"] == true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_answer_as_one_system() {
    let pg = server();
    let url = pg.database();
    migrate(&url);
    // Users and a token through the CLI, on PostgreSQL.
    assert_eq!(cli(&url, &["users", "add", "--login", "ops@x", "--name", "Ops", "--id", "1"]), "1");
    let token = cli(&url, &["tokens", "create", "--user", "1"]);
    let listed = cli(&url, &["users", "list"]);
    assert!(listed.contains("ops@x"), "{listed}");

    let broker = Mosquitto::start().await;
    // A ingests nothing (its events topic gets no messages), so every push is B's.
    let mut a = Run::start_with(
        &url,
        broker.port(),
        Some("scriptd-a"),
        &[("SCRIPTD__MQTT__EVENTS_TOPIC", "nobody/publishes/here/#")],
    );
    let mut b = Run::start_as(&url, broker.port(), Some("scriptd-b"));
    a.wait_component("broker", "up", 30).await;
    b.wait_component("broker", "up", 30).await;

    // The token works on both; a script made through A is in force on B within 1 s.
    let (status, me) = call(&b, Method::GET, "/me", &token, None).await;
    assert_eq!(status, 200, "{me}");
    let (status, created) = call(
        &a,
        Method::POST,
        "/scripts",
        &token,
        Some(&script("shared", SIDEBAR, FACE, &[1], all_day())),
    )
    .await;
    assert_eq!(status, 201, "{created}\n{}", a.log());
    let id = created["id"].as_i64().expect("id");
    let made = Instant::now();
    within(5, "the script fires on instance B", async {
        while !fires(&b, &token, id).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let took = made.elapsed();
    assert!(took < Duration::from_secs(1), "in force on B after {took:?}");
    let (status, on_b) = call(&b, Method::GET, &format!("/scripts/{id}"), &token, None).await;
    assert_eq!((status, &on_b["title"]), (200, &json!("shared")), "{on_b}");

    // A reaction stream on A, occurrences ingested (and pushed) by B only.
    let stream = reqwest::Client::new()
        .get(a.url("/api/v1/reactions/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET stream");
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    // The feed connects on the first stream; give it a moment before publishing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let vms = TestClient::connect(broker.port(), "vms-two").await;
    let ids: Vec<String> = (0..5).map(|i| format!("two-{i}")).collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for oid in &ids {
        vms.publish("vms/analytics/events/1", occurrence(oid, FACE, 3, &now)).await;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut text = String::new();
    within(15, "the pushes B made reach the stream on A", async {
        while seen.len() < ids.len() {
            let Some(Ok(chunk)) = body.next().await else { panic!("stream ended: {text}") };
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: "))
                    && let Ok(v) = serde_json::from_str::<Value>(data)
                    && let Some(o) = v["occurrence_id"].as_str()
                {
                    seen.push(o.to_owned());
                }
            }
        }
    })
    .await;
    seen.sort();
    assert_eq!(seen, ids, "each push once");
    assert!(!a.log().contains("\"occurrence_id\":\"two-"), "A ingested an occurrence");

    // Occurrences and deliveries read the shared state: the same answer on both, once B
    // has recorded its outcomes (in groups, shortly after the pushes).
    within(10, "every delivery recorded as sent", async {
        loop {
            let (_, v) =
                call(&a, Method::GET, &format!("/scripts/{id}/deliveries"), &token, None).await;
            let sent = v["data"]
                .as_array()
                .map_or(0, |d| d.iter().filter(|d| d["state"] == "sent").count());
            if sent == ids.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for oid in &ids {
        let path = format!("/occurrences/{oid}");
        let (sa, va) = call(&a, Method::GET, &path, &token, None).await;
        let (sb, vb) = call(&b, Method::GET, &path, &token, None).await;
        assert_eq!((sa, sb), (200, 200), "{va}\n{vb}");
        assert_eq!(va, vb);
    }
    let q = json!({"event_id": FACE, "camera_id": 3, "occurred_at": now});
    let (sa, va) = call(&a, Method::POST, "/explain", &token, Some(&q)).await;
    let (sb, vb) = call(&b, Method::POST, "/explain", &token, Some(&q)).await;
    assert_eq!((sa, sb), (200, 200), "{va}\n{vb}");
    assert_eq!(va, vb, "explain answers the same on both");
    let path = format!("/scripts/{id}/deliveries");
    let (sa, va) = call(&a, Method::GET, &path, &token, None).await;
    let (_, vb) = call(&b, Method::GET, &path, &token, None).await;
    assert_eq!(sa, 200, "{va}");
    assert_eq!(va["data"].as_array().map(Vec::len), Some(5), "{va}");
    assert_eq!(va, vb);

    // A token revoked with the CLI is refused by both at once.
    let public = token.split('.').next().expect("public id");
    cli(&url, &["tokens", "revoke", public]);
    assert_eq!(call(&a, Method::GET, "/me", &token, None).await.0, 401);
    assert_eq!(call(&b, Method::GET, "/me", &token, None).await.0, 401);
    a.terminate();
    b.terminate();
}
