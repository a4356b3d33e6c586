//! Invalid bodies over real HTTP: each answers 422 (or 413) with exactly the expected
//! `errors` keys, and nothing is written.

use crate::support::api::{TestApi, error_keys, seed_body, start};
use reqwest::Method;
use serde_json::{Value, json};

/// The seed body with `edit` applied.
fn seed_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = seed_body();
    edit(&mut body);
    body
}

fn without(key: &'static str) -> impl FnOnce(&mut Value) {
    move |b| {
        b.as_object_mut().unwrap().remove(key);
    }
}

fn set(key: &'static str, value: Value) -> impl FnOnce(&mut Value) {
    move |b| b[key] = value
}

async fn expect_422(api: &TestApi, name: &str, body: &Value, keys: &[&str]) {
    let (status, v) = api.post(body).await;
    assert_eq!(status, 422, "{name}: {v}");
    assert_eq!(error_keys(&v), keys, "{name}: {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}");
    for (k, reasons) in v["errors"].as_object().unwrap() {
        let reasons = reasons.as_array().unwrap();
        assert!(!reasons.is_empty() && reasons.iter().all(Value::is_string), "{name}: {k}");
    }
}

crate::on_both_stores! {
    async fn invalid_bodies_are_422_with_the_exact_keys(api) {
        let long = "x".repeat(256);
        let cases: Vec<(&str, Value, &[&str])> = vec![
            ("title missing", seed_with(without("title")), &["title"]),
            ("title empty", seed_with(set("title", json!(""))), &["title"]),
            ("title blank", seed_with(set("title", json!("   "))), &["title"]),
            ("title too long", seed_with(set("title", json!(long))), &["title"]),
            ("title number", seed_with(set("title", json!(123))), &["title"]),
            ("title null", seed_with(set("title", Value::Null)), &["title"]),
            ("event_id missing", seed_with(without("event_id")), &["event_id"]),
            ("event_id unknown", seed_with(set("event_id", json!(999))), &["event_id"]),
            ("event_id string", seed_with(set("event_id", json!("abc"))), &["event_id"]),
            ("reaction_id missing", seed_with(without("reaction_id")), &["reaction_id"]),
            ("reaction_id unknown", seed_with(set("reaction_id", json!(999))), &["reaction_id"]),
            ("reaction_id float", seed_with(set("reaction_id", json!(1.5))), &["reaction_id"]),
            ("users missing", seed_with(without("users")), &["users"]),
            ("users empty", seed_with(set("users", json!([]))), &["users"]),
            ("users not array", seed_with(set("users", json!("1"))), &["users"]),
            ("users unknown id", seed_with(set("users", json!([999]))), &["users.0"]),
            ("users non-integer", seed_with(set("users", json!([1, "x"]))), &["users.1"]),
            ("users duplicate", seed_with(set("users", json!([1, 1]))), &["users.1"]),
            ("users negative", seed_with(set("users", json!([1, -3]))), &["users.1"]),
            ("status missing", seed_with(without("status")), &["status"]),
            ("status unknown word", seed_with(set("status", json!("on"))), &["status"]),
            ("status number", seed_with(set("status", json!(5))), &["status"]),
            ("cameras string", seed_with(set("cameras", json!("all"))), &["cameras"]),
            ("cameras negative", seed_with(set("cameras", json!([1, -2]))), &["cameras.1"]),
            ("cameras non-integer", seed_with(set("cameras", json!([1, "x"]))), &["cameras.1"]),
            ("timetable missing", seed_with(without("timetable")), &["timetable"]),
            ("timetable string", seed_with(set("timetable", json!("always"))), &["timetable"]),
            (
                "timetable bad from",
                seed_with(|b| b["timetable"]["days"][0]["from"] = json!("25:00")),
                &["timetable.days.0.from"],
            ),
            (
                "timetable bad break to",
                seed_with(|b| b["timetable"]["days"][0]["breaks"][0]["to"] = json!("nope")),
                &["timetable.days.0.breaks.0.to"],
            ),
            (
                "timetable bad type",
                seed_with(|b| b["timetable"]["days"][0]["type"] = json!("someday")),
                &["timetable.days.0.type"],
            ),
            ("extra string", seed_with(set("extra", json!("x"))), &["extra"]),
            (
                "telegram without extra",
                seed_with(without("extra")),
                &["extra.bot_token", "extra.chat_id"],
            ),
            (
                "telegram without bot_token",
                seed_with(set("extra", json!({"chat_id": "c"}))),
                &["extra.bot_token"],
            ),
            (
                "telegram empty bot_token",
                seed_with(set("extra", json!({"chat_id": "c", "bot_token": ""}))),
                &["extra.bot_token"],
            ),
            (
                "telegram chat_id object",
                seed_with(set("extra", json!({"chat_id": {}, "bot_token": "t"}))),
                &["extra.chat_id"],
            ),
            (
                "cooldown too long",
                seed_with(set(
                    "extra",
                    json!({"chat_id": "c", "bot_token": "t", "cooldown_seconds": 86_401}),
                )),
                &["extra.cooldown_seconds"],
            ),
            (
                "cooldown negative",
                seed_with(set(
                    "extra",
                    json!({"chat_id": "c", "bot_token": "t", "cooldown_seconds": -1}),
                )),
                &["extra.cooldown_seconds"],
            ),
            (
                "cooldown text",
                seed_with(set(
                    "extra",
                    json!({"chat_id": "c", "bot_token": "t", "cooldown_seconds": "10"}),
                )),
                &["extra.cooldown_seconds"],
            ),
            (
                "webhook without url",
                seed_with(|b| {
                    b["reaction_id"] = json!(5);
                    b["extra"] = json!({});
                }),
                &["extra.url"],
            ),
            (
                "webhook ftp url",
                seed_with(|b| {
                    b["reaction_id"] = json!(5);
                    b["extra"] = json!({"url": "ftp://example.com/x"});
                }),
                &["extra.url"],
            ),
            (
                "webhook not a url",
                seed_with(|b| {
                    b["reaction_id"] = json!(5);
                    b["extra"] = json!({"url": "not a url"});
                }),
                &["extra.url"],
            ),
            (
                "webhook secret number",
                seed_with(|b| {
                    b["reaction_id"] = json!(5);
                    b["extra"] = json!({"url": "https://example.com/hook", "secret": 5});
                }),
                &["extra.secret"],
            ),
            (
                "empty object",
                json!({}),
                &["event_id", "reaction_id", "status", "timetable", "title", "users"],
            ),
            (
                "several at once",
                seed_with(|b| {
                    b["title"] = json!("");
                    b["users"] = json!([1, 999]);
                    b["cameras"] = json!([0]);
                }),
                &["cameras.0", "title", "users.1"],
            ),
        ];
        assert!(cases.len() >= 30);
        for (name, body, keys) in &cases {
            expect_422(&api, name, body, keys).await;
        }
        let (_, list) = api.get("/scripts").await;
        assert_eq!(list["meta"]["total"], 0, "nothing was written");
    }
}

crate::on_both_stores! {
    async fn timetable_errors_are_path_precise(api) {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("neither days nor intervals", json!({}), "timetable"),
            ("empty days and intervals", json!({"days": [], "intervals": []}), "timetable"),
            (
                "from equals to",
                json!({"days": [{"type": "monday", "from": "10:00", "to": "10:00"}]}),
                "timetable.days.0.to",
            ),
            (
                "break outside window",
                json!({"days": [{"type": "monday", "from": "10:00", "to": "12:00",
                                  "breaks": [{"from": "13:00", "to": "14:00"}]}]}),
                "timetable.days.0.breaks.0.from",
            ),
            (
                "interval backwards",
                json!({"intervals": [{"from": "2026-01-02 00:00:00", "to": "2026-01-01 00:00:00"}]}),
                "timetable.intervals.0.to",
            ),
            ("days not array", json!({"days": "monday"}), "timetable.days"),
        ];
        for (name, timetable, key) in cases {
            let body = seed_with(set("timetable", timetable));
            let (status, v) = api.post(&body).await;
            assert_eq!(status, 422, "{name}: {v}");
            assert_eq!(error_keys(&v), [key], "{name}: {v}");
        }
    }
}

crate::on_both_stores! {
    async fn bodies_that_are_not_json_objects_are_422_on_body(api) {
        let raw: Vec<(&str, &str, &str)> = vec![
            ("malformed", "{\"title\": ", "application/json"),
            ("array", "[1, 2]", "application/json"),
            ("null", "null", "application/json"),
            ("string", "\"script\"", "application/json"),
            ("empty", "", "application/json"),
            ("not utf-8 json", "\u{00ff}\u{00fe}", "application/json"),
            ("form", "title=x", "application/x-www-form-urlencoded"),
            ("text", "{}", "text/plain"),
        ];
        for (name, body, content_type) in raw {
            let rb = api
                .req(Method::POST, "/scripts")
                .header("Content-Type", content_type)
                .body(body.to_owned());
            let (status, v) = api.send(rb).await;
            assert_eq!(status, 422, "{name}: {v}");
            assert_eq!(error_keys(&v), ["body"], "{name}");
            // The same for PUT and PATCH.
            let id_path = "/scripts/1";
            for method in [Method::PUT, Method::PATCH] {
                let rb =
                    api.req(method, id_path).header("Content-Type", content_type).body(body.to_owned());
                let (status, _) = api.send(rb).await;
                assert_eq!(status, 422, "{name}");
            }
        }
    }
}

// The body limit is the HTTP layer's, the same on both stores.
#[tokio::test]
async fn a_2_mib_body_is_413_on_every_write_route() {
    let api = start().await;
    let id = api.create(&seed_body()).await;
    let big = format!("{{\"title\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    for (method, path) in [
        (Method::POST, "/scripts".to_owned()),
        (Method::PUT, format!("/scripts/{id}")),
        (Method::PATCH, format!("/scripts/{id}")),
    ] {
        let rb = api
            .req(method.clone(), &path)
            .header("Content-Type", "application/json")
            .body(big.clone());
        let (status, _) = api.send(rb).await;
        assert_eq!(status, 413, "{method} {path}");
    }
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = start().await;
    let addr = api.base.trim_start_matches("http://").trim_end_matches("/api/v1").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/scripts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        api.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
    for _ in 0..32 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may answer and close before reading everything
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{}", text.lines().next().unwrap_or(""));
}
