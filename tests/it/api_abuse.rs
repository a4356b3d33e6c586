//! Hostile requests against the real HTTP API (127.0.0.1, port 0, temporary database):
//! missing and wrong tokens on every route, oversized and deeply nested bodies, hostile
//! values, and secrets that must never come back. Every answer must be the documented
//! status (401, 413, 422, 404), never a 500, and the server must keep answering.
//!
//! Routes checked (CONTRACT §6): `GET/POST /scripts`, `GET/PUT/PATCH/DELETE /scripts/{id}`,
//! `GET /scripts/{id}/deliveries`, `GET /events`, `GET /reactions`, `GET /reactions/stream`
//! (not mounted by `api::router`, so it is a 404 with a token; without one it is a 401 like
//! every path under `/api/v1`), and an unknown path under `/api/v1`.

use crate::support::api::{TestApi, error_keys, seed_body, start};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use scriptd::store::tokens;
use serde_json::{Value, json};

/// Every route, with a body for the ones that take one.
fn routes(id: i64) -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/scripts".into()),
        (Method::POST, "/scripts".into()),
        (Method::GET, format!("/scripts/{id}")),
        (Method::PUT, format!("/scripts/{id}")),
        (Method::PATCH, format!("/scripts/{id}")),
        (Method::DELETE, format!("/scripts/{id}")),
        (Method::GET, format!("/scripts/{id}/deliveries")),
        (Method::GET, "/events".into()),
        (Method::GET, "/reactions".into()),
        (Method::GET, "/reactions/stream".into()),
        (Method::GET, "/no-such-route".into()),
    ]
}

/// Sends `method path` with raw `Authorization` (or none) and a body; returns status and text.
async fn raw(
    api: &TestApi,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, String) {
    raw_from(&api.client, api, method, path, auth, body).await
}

/// [`raw`] through `client` (e.g. one bound to another loopback address).
async fn raw_from(
    client: &reqwest::Client,
    api: &TestApi,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, String) {
    let mut rb = client.request(method, format!("{}{path}", api.base));
    if let Some(a) = auth {
        rb = rb.header(AUTHORIZATION, a);
    }
    if let Some(b) = body {
        rb = rb.header(CONTENT_TYPE, "application/json").body(b);
    }
    let res = rb.send().await.expect("the server answers");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

/// With the valid token.
async fn authed(api: &TestApi, method: Method, path: &str, body: Vec<u8>) -> (u16, String) {
    let auth = format!("Bearer {}", api.token);
    raw(api, method, path, Some(&auth), Some(body)).await
}

/// The server still answers an ordinary request.
async fn still_alive(api: &TestApi) {
    let (status, v) = api.get("/events").await;
    assert_eq!(status, 200, "server stopped answering: {v}");
}

// Answered before any body is read: the HTTP layer's, the same on both stores (and racy
// under a multi-threaded runtime, where the 401 can close the socket mid-upload).
#[tokio::test]
async fn every_route_without_or_with_a_wrong_token_is_401() {
    let api = start().await;
    let id = api.create(&seed_body()).await;
    let (public_id, _) = api.token.split_once('.').expect("token is public.secret");
    let forged = format!("{public_id}.{}", "0".repeat(64));
    let long = "a".repeat(8 * 1024);
    let wrong: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong".into()),
        Some(format!("Bearer {forged}")),
        Some(format!("Bearer {}x", api.token)),
        Some(format!("Basic {}", api.token)),
        Some(format!("Bearer  {}", api.token)),
        Some("Bearer".into()),
        Some(format!("Bearer {long}")),
        Some("Bearer '; DROP TABLE api_tokens; --".into()),
    ];
    let body = serde_json::to_vec(&seed_body()).unwrap();
    let mut checked = 0;
    for (i, (method, path)) in routes(id).into_iter().enumerate() {
        // Each route from its own loopback address: 9 failures each stay under the
        // failed-authentication limit (20 a minute per address; see `api_accounts.rs`).
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 1, i as u8 + 1]))
            .build()
            .expect("client");
        for auth in &wrong {
            let (status, text) =
                raw_from(&client, &api, method.clone(), &path, auth.as_deref(), Some(body.clone()))
                    .await;
            let what = format!(
                "{method} {path} with {:?}",
                auth.as_deref().map(|a| &a[..a.len().min(40)])
            );
            assert_eq!(status, 401, "{what}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert_eq!(v, json!({"message": "Unauthenticated."}), "{what}");
            if let Some(a) = auth {
                let presented = a.split_once(' ').map_or(a.as_str(), |(_, t)| t).trim();
                if presented.len() > 3 {
                    assert!(!text.contains(presented), "{what}: the token is echoed");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 11 * 9);
    // A 2 MiB body without a token is refused before it is read.
    let big = vec![b' '; 2 * 1024 * 1024];
    let (status, _) = raw(&api, Method::POST, "/scripts", None, Some(big)).await;
    assert_eq!(status, 401);
    // Nothing was created, changed or deleted.
    let (status, v) = api.get("/scripts").await;
    assert_eq!(status, 200);
    assert_eq!(v["meta"]["total"], 1, "{v}");
    let (_, v) = api.get(&format!("/scripts/{id}")).await;
    assert_eq!(v["title"], "script");
    // The stream route: documented here as not mounted by `api::router`.
    let (status, _) = api.get("/reactions/stream").await;
    assert!(status == 404 || status == 200, "reactions/stream with a token: {status}");
}

// The body limit is the HTTP layer's, the same on both stores.
#[tokio::test]
async fn oversized_bodies_are_413_and_the_server_survives() {
    let api = start().await;
    let id = api.create(&seed_body()).await;
    let mut big = seed_body();
    big["title"] = json!("x".repeat(2 * 1024 * 1024));
    let big = serde_json::to_vec(&big).unwrap();
    let mut just_over = seed_body();
    just_over["title"] = json!("x".repeat(1024 * 1024));
    let just_over = serde_json::to_vec(&just_over).unwrap();
    for (method, path) in [
        (Method::POST, "/scripts".to_owned()),
        (Method::PUT, format!("/scripts/{id}")),
        (Method::PATCH, format!("/scripts/{id}")),
    ] {
        for body in [&big, &just_over] {
            let (status, text) = authed(&api, method.clone(), &path, body.clone()).await;
            assert_eq!(status, 413, "{method} {path} {} bytes: {text}", body.len());
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(v["message"].is_string(), "{text}");
        }
    }
    // Just under the limit: read, then refused on the key.
    let mut under = seed_body();
    under["title"] = json!("x".repeat(1024 * 1024 - 1024));
    let (status, text) =
        authed(&api, Method::POST, "/scripts", serde_json::to_vec(&under).unwrap()).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(error_keys(&serde_json::from_str(&text).unwrap()), ["title"]);
    still_alive(&api).await;
}

crate::on_both_stores! {
    async fn deeply_nested_json_is_422_and_the_server_survives(api) {
        let id = api.create(&seed_body()).await;
        let deep = |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n));
        let mut bodies: Vec<(&str, String)> = vec![
            ("100k [", "[".repeat(100_000)),
            ("100k [ closed", deep("[", "]", 100_000)),
            ("100k {\"a\":", format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000))),
        ];
        let mut nested_title = seed_body().to_string();
        nested_title = nested_title.replacen("\"script\"", &deep("[", "]", 50_000), 1);
        bodies.push(("title nested 50k", nested_title));
        let mut nested_extra = seed_body().to_string();
        nested_extra = nested_extra.replacen(
            "\"bot_token\":\"bot_token\"",
            &format!("\"bot_token\":\"bot_token\",\"deep\":{}", deep("[", "]", 50_000)),
            1,
        );
        bodies.push(("extra nested 50k", nested_extra));
        // Under serde_json's recursion limit (128) the body parses; validation must cope too.
        let mut nested_timetable = seed_body();
        let mut v = json!("08:00");
        for _ in 0..120 {
            v = json!([v]);
        }
        nested_timetable["timetable"]["days"][0]["from"] = v;
        bodies.push(("timetable from nested 120", nested_timetable.to_string()));
        for (method, path) in [
            (Method::POST, "/scripts".to_owned()),
            (Method::PUT, format!("/scripts/{id}")),
            (Method::PATCH, format!("/scripts/{id}")),
        ] {
            for (name, body) in &bodies {
                let (status, text) =
                    authed(&api, method.clone(), &path, body.clone().into_bytes()).await;
                assert_eq!(status, 422, "{method} {name}: {}", &text[..text.len().min(300)]);
                let v: Value = serde_json::from_str(&text).expect("422 is JSON");
                assert!(!error_keys(&v).is_empty(), "{name}: no key in {v}");
                still_alive(&api).await;
            }
        }
    }
}

/// A body that is the seed with one top-level key replaced by raw JSON text.
fn seed_with_raw(key: &str, raw_json: &str) -> Vec<u8> {
    let mut body = seed_body();
    body[key] = json!("__PLACEHOLDER__");
    body.to_string().replacen("\"__PLACEHOLDER__\"", raw_json, 1).into_bytes()
}

crate::on_both_stores! {
    async fn hostile_values_are_422_with_a_named_key_never_500(api) {
        let id = api.create(&seed_body()).await;
        let long = format!("\"{}\"", "y".repeat(200_000));
        let mut cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
            ("long title", seed_with_raw("title", &long), &["title"]),
            ("title with NUL", seed_with_raw("title", r#""a\u0000b""#), &["title"]),
            ("title only control characters", seed_with_raw("title", r#""\u0000\u0007""#), &["title"]),
            ("raw NUL byte", b"{\"title\":\"a\0b\"}".to_vec(), &["body"]),
            ("invalid UTF-8", b"{\"title\":\"\xff\xfe\"}".to_vec(), &["body"]),
            ("lone surrogate escape", seed_with_raw("title", r#""\ud800""#), &["body"]),
            ("number out of range", seed_with_raw("event_id", "1e400"), &["body"]),
            ("event_id above i64", seed_with_raw("event_id", "18446744073709551616"), &["event_id"]),
            ("event_id i64::MAX", seed_with_raw("event_id", "9223372036854775807"), &["event_id"]),
            ("event_id zero", seed_with_raw("event_id", "0"), &["event_id"]),
            ("event_id negative", seed_with_raw("event_id", "-1"), &["event_id"]),
            ("event_id float", seed_with_raw("event_id", "1.0e0"), &["event_id"]),
            ("reaction_id i64::MIN", seed_with_raw("reaction_id", "-9223372036854775808"), &["reaction_id"]),
            ("users zero", seed_with_raw("users", "[0]"), &["users.0"]),
            ("users negative", seed_with_raw("users", "[-5]"), &["users.0"]),
            ("users huge", seed_with_raw("users", "[18446744073709551615]"), &["users.0"]),
            ("cameras zero", seed_with_raw("cameras", "[0]"), &["cameras.0"]),
            ("cameras huge float", seed_with_raw("cameras", "[1e300]"), &["cameras.0"]),
            ("timetable from NUL", seed_with_raw("timetable", r#"{"days":[{"type":"same_every_day","from":"\u0000","to":"10:00"}]}"#), &["timetable.days.0.from"]),
            ("timetable long string", seed_with_raw("timetable", &format!(r#"{{"days":[{{"type":{long},"from":"08:00","to":"10:00"}}]}}"#)), &["timetable.days.0.type"]),
            ("interval year 275760", seed_with_raw("timetable", r#"{"intervals":[{"from":"+275760-09-13 00:00:00","to":"+275760-09-14 00:00:00"}]}"#), &["timetable.intervals.0.from", "timetable.intervals.0.to"]),
            ("interval year 9999", seed_with_raw("timetable", r#"{"intervals":[{"from":"9999-12-31 23:59:58","to":"9999-12-31 23:59:59+14:00"}]}"#), &["timetable.intervals.0.to"]),
            ("interval multibyte", seed_with_raw("timetable", r#"{"intervals":[{"from":"2026-01-0é 00:00:00","to":"2026-01-02 00:00:00"}]}"#), &["timetable.intervals.0.from"]),
            ("10k day entries", seed_with_raw("timetable", &format!(r#"{{"days":[{}]}}"#, vec![r#"{"type":"x"}"#; 10_000].join(","))), &[]),
            ("duplicate key, last invalid", br#"{"reaction_id":1,"event_id":1,"title":"ok","title":5,"status":"active","users":[1],"timetable":{"days":[{"type":"same_every_day","from":"08:00","to":"10:00"}]},"extra":{"chat_id":"c","bot_token":"t"}}"#.to_vec(), &["body"]),
        ];
        // 10k invalid day entries: one key per entry; checked below by count.
        let many = cases.iter().position(|c| c.0 == "10k day entries").unwrap();
        let (_, many_body, _) = cases.remove(many);
        let mut failures = Vec::new();
        for (method, path) in [
            (Method::POST, "/scripts".to_owned()),
            (Method::PUT, format!("/scripts/{id}")),
            (Method::PATCH, format!("/scripts/{id}")),
        ] {
            for (name, body, keys) in &cases {
                // PATCH only names the keys it changes: the raw-byte bodies mention `title` only.
                let (status, text) = authed(&api, method.clone(), &path, body.clone()).await;
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if status != 422 || error_keys(&v) != *keys {
                    failures
                        .push(format!("{method} {name}: {status} {}", &text[..text.len().min(200)]));
                }
            }
            let (status, text) = authed(&api, method.clone(), &path, many_body.clone()).await;
            assert_eq!(status, 422, "{method} 10k day entries");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert!(v["errors"].as_object().unwrap().len() >= 10_000);
        }
        // Path and query abuse: 404 or 422, never a 500.
        for path in [
            "/scripts/0",
            "/scripts/-1",
            "/scripts/99999999999999999999",
            "/scripts/1e3",
            "/scripts/%00",
            "/scripts/0/deliveries",
            "/scripts/-1/deliveries",
        ] {
            let (status, text) = api.get(path).await;
            if status != 404 {
                failures.push(format!("GET {path}: {status} {text}"));
            }
        }
        for (path, key) in [
            ("/scripts?page=0", "page"),
            ("/scripts?page=-1", "page"),
            ("/scripts?per_page=abc", "per_page"),
            ("/scripts?page=99999999999999999999", "page"),
            ("/scripts?page=18446744073709551615", ""),
            ("/scripts?page=9223372036854775807&per_page=100", ""),
            (&format!("/scripts/{id}/deliveries?limit=0"), "limit"),
            (&format!("/scripts/{id}/deliveries?limit=18446744073709551615"), ""),
        ] {
            let (status, v) = api.get(path).await;
            let ok =
                if key.is_empty() { status == 200 } else { status == 422 && error_keys(&v) == [key] };
            if !ok {
                failures.push(format!("GET {path}: {status} {v}"));
            }
        }
        // An X-Client outside the list is a 422 that does not echo it.
        let (status, text) = {
            let res = api
                .client
                .get(format!("{}/events", api.base))
                .bearer_auth(&api.token)
                .header("X-Client", "evil-<script>-client")
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        };
        assert_eq!(status, 422, "{text}");
        assert!(!text.contains("evil-<script>"), "X-Client echoed: {text}");
        still_alive(&api).await;
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

#[tokio::test]
async fn duplicate_keys_are_not_silently_merged() {
    // CONTRACT §4 drops MQTT payloads with duplicate keys; the API should refuse them too
    // instead of keeping the last value.
    let api = start().await;
    let body = br#"{"reaction_id":1,"event_id":1,"title":5,"title":"ok","status":"active","users":[1],"timetable":{"days":[{"type":"same_every_day","from":"08:00","to":"10:00"}]},"extra":{"chat_id":"c","bot_token":"t"}}"#;
    let (status, text) = authed(&api, Method::POST, "/scripts", body.to_vec()).await;
    assert_ne!(status, 500, "{text}");
    assert_eq!(status, 422, "a body with a duplicate key was accepted: {text}");
}

crate::on_both_stores! {
    async fn secrets_of_other_users_scripts_are_never_returned(api) {
        // User 1 owns a Telegram script and a webhook script with secrets.
        let bot_token = "123456789:AAH-SECRET-bot-token-of-user-one";
        let webhook_secret = "whsec-SECRET-of-user-one";
        let mut telegram = seed_body();
        telegram["extra"] = json!({"chat_id": "42", "bot_token": bot_token});
        let tg = api.create(&telegram).await;
        let mut hook = seed_body();
        hook["reaction_id"] = json!(5);
        hook["extra"] = json!({"url": "https://hooks.example/abc", "secret": webhook_secret});
        let wh = api.create(&hook).await;
        // A 422 never echoes the secret, e.g. when another field is wrong.
        let mut bad = telegram.clone();
        bad["title"] = json!(5);
        let (status, v) = api.post(&bad).await;
        assert_eq!(status, 422);
        assert!(!v.to_string().contains("SECRET"), "{v}");
        let mut bad_hook = hook.clone();
        bad_hook["extra"]["url"] = json!(format!("not a url {webhook_secret}"));
        let (status, v) = api.post(&bad_hook).await;
        assert_eq!(status, 422);
        assert!(!v.to_string().contains("SECRET"), "{v}");

        // User 2, a sub-user of the owner (so outside its reach), with both permissions and a
        // token of its own.
        let other = api
            .write(|tx| {
                tx.execute(
                    "INSERT INTO user_permissions (user_id, permission_id) VALUES (2, 240), (2, 241)",
                    &[],
                )?;
                tokens::create(tx, 2)
            })
            .await;
        let other = other.expose().to_owned();
        let mut leaks = Vec::new();
        for path in [
            "/scripts".to_owned(),
            "/scripts?per_page=100".to_owned(),
            format!("/scripts/{tg}"),
            format!("/scripts/{wh}"),
            format!("/scripts/{tg}/deliveries"),
            format!("/scripts/{wh}/deliveries"),
        ] {
            let res =
                api.client.get(format!("{}{path}", api.base)).bearer_auth(&other).send().await.unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            assert_ne!(status, 500, "{path}");
            assert!(!text.contains(&other), "{path}: the caller's token is echoed");
            if text.contains(bot_token) || text.contains(webhook_secret) {
                leaks.push(format!("GET {path} as user 2 ({status}) returns user 1's secret"));
            }
        }
        assert!(leaks.is_empty(), "{leaks:#?}");

        // User 1's scripts do not exist for user 2: 404, and a PUT changes nothing.
        for id in [tg, wh] {
            let res = api
                .client
                .get(format!("{}/scripts/{id}", api.base))
                .bearer_auth(&other)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 404);
        }
        let mut back = telegram.clone();
        back["title"] = json!("renamed by user 2");
        back["users"] = json!([2]);
        let res = api
            .client
            .put(format!("{}/scripts/{tg}", api.base))
            .bearer_auth(&other)
            .json(&back)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let (_, mine) = api.get(&format!("/scripts/{tg}")).await;
        assert_ne!(mine["title"], "renamed by user 2");
        assert_eq!(mine["extra"]["bot_token"], bot_token, "the owner sees its own secret");
    }
}
