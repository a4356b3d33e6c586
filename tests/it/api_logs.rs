//! Logs carry the client headers and name invalid scripts, and never a bot token, a webhook
//! secret or an API token.

use std::time::Duration;

use crate::support::api::{seed_body, start};
use crate::support::logs;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn logs_have_client_headers_and_no_secrets() {
    // Every thread's events, at TRACE: the API's store work and the live watcher's check of
    // the hand-edited row run in spawn_blocking.
    let captured = logs::capture_global();

    let api = start().await;
    let bot_token = "123456:SECRET-BOT-TOKEN";
    let mut body = seed_body();
    body["extra"] = json!({"chat_id": "-100200", "bot_token": bot_token});
    let (status, v) = api.post(&body).await;
    assert_eq!(status, 201);
    let id = v["id"].as_i64().unwrap();
    let (status, _) = api
        .send(api.req(Method::PATCH, &format!("/scripts/{id}")).json(&json!({
            "reaction_id": 5, "extra": {"url": "https://example.com/h", "secret": "WEBHOOK-SECRET"}
        })))
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .send(api.req(Method::PATCH, &format!("/scripts/{id}")).json(&json!({
            "reaction_id": 1, "extra": {"bot_token": bot_token}
        })))
        .await;
    assert_eq!(status, 422);

    // A hand-edited row holding a token and a broken timetable.
    let conn = rusqlite::Connection::open(&api.db_path).unwrap();
    conn.execute(
        "INSERT INTO scripts (id, title, event_id, reaction_id, status, timetable, extra)
         VALUES (41, 'broken', 1, 1, 'active', '{\"days\": 5}', ?1)",
        [json!({"chat_id": "1", "bot_token": bot_token}).to_string()],
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !api.live.load().invalid.contains_key(&41) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(api.live.load().invalid.contains_key(&41));
    tracing::debug!(snapshot = ?api.live.load(), "snapshot");

    let logs = captured.text();
    assert!(logs.contains("x_client=\"web\"") || logs.contains("x_client=web"), "{logs}");
    assert!(logs.contains("test-device"), "X-UUID is logged");
    // The request log names the path the client asked for, with its /api/v1 prefix.
    assert!(logs.contains(&format!("path=\"/api/v1/scripts/{id}\"")), "{logs}");
    assert!(!logs.contains(&format!("path=\"/scripts/{id}\"")), "{logs}");
    assert!(logs.contains("script_id=41") && logs.contains("field=\"timetable.days\""), "{logs}");
    for secret in ["SECRET-BOT-TOKEN", "WEBHOOK-SECRET", api.token.split_once('.').unwrap().1] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}
