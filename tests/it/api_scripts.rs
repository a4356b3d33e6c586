//! The scripts API over real HTTP: the seed round trip, CRUD, pagination, catalogs,
//! deliveries, auth and limits.

use crate::support::api::{TestApi, always_body, error_keys, keys, seed_body, start};
use chrono::NaiveDateTime;
use reqwest::Method;
use serde_json::{Value, json};

fn assert_timestamp(v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok() && s.len() == 19,
        "{what} is not YYYY-MM-DD HH:MM:SS: {s}"
    );
}

fn assert_seed_shape(v: &Value) {
    assert_eq!(
        keys(v),
        [
            "cameras",
            "created_at",
            "event",
            "extra",
            "id",
            "owner_id",
            "reaction",
            "schedule",
            "status",
            "timetable",
            "title",
            "updated_at",
            "users"
        ]
    );
    assert!(v["id"].is_i64());
    assert_eq!(v["title"], "script");
    assert_eq!(v["schedule"], json!([]));
    assert_eq!(
        v["timetable"],
        json!({
            "days": [{
                "to": "23:59:00+05:00",
                "from": "00:00:00+05:00",
                "type": "same_every_day",
                "breaks": [{"to": "17:00:00+05:00", "from": "16:00:00+05:00"}]
            }],
            "intervals": []
        })
    );
    assert_eq!(v["status"], "active");
    assert_timestamp(&v["created_at"], "created_at");
    assert_timestamp(&v["updated_at"], "updated_at");
    let users = v["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    let u = &users[0];
    assert_eq!(
        keys(u),
        [
            "access_token_id",
            "can_update_password",
            "created_at",
            "id",
            "login",
            "name",
            "online_request_interval",
            "parent_id",
            "permissions",
            "updated_at"
        ]
    );
    assert_eq!(u["id"], 1);
    assert_eq!(u["login"], "user@mail.com");
    assert_eq!(u["name"], "User name");
    assert_eq!(u["parent_id"], 3);
    assert_eq!(
        u["permissions"],
        json!([{"id": 240, "name": "scripts.manage", "display_name": "Manage events and reactions"}])
    );
    assert_timestamp(&u["created_at"], "user created_at");
    assert_timestamp(&u["updated_at"], "user updated_at");
    assert!(u["online_request_interval"].is_i64());
    assert!(u["access_token_id"].is_string());
    assert!(u["can_update_password"].is_boolean());
    assert_eq!(keys(&v["event"]), ["analytic_type", "color", "description", "id", "name"]);
    assert_eq!(v["event"]["id"], 1);
    for k in ["analytic_type", "color", "description", "name"] {
        assert!(v["event"][k].is_string(), "event.{k}");
    }
    assert_eq!(keys(&v["reaction"]), ["description", "id", "is_default", "name"]);
    assert_eq!(v["reaction"]["id"], 1);
    assert_eq!(v["reaction"]["name"], "telegram-message");
    assert!(v["reaction"]["is_default"].is_boolean());
    assert!(v["reaction"]["description"].is_string());
    assert_eq!(v["extra"], json!({"chat_id": "chat_id", "bot_token": "bot_token"}));
    assert_eq!(v["cameras"], Value::Null, "cameras as stored");
    assert_eq!(v["owner_id"], 1, "owned by the token's user");
}

crate::on_both_stores! {
    async fn seed_body_creates_the_seed_object_and_get_returns_it(api) {
        let (status, created) = api.post(&seed_body()).await;
        assert_eq!(status, 201, "{created}");
        assert_seed_shape(&created);
        let id = created["id"].as_i64().unwrap();
        let (status, shown) = api.get(&format!("/scripts/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(shown, created);
        // The live snapshot has it before the answer went out.
        let snap = api.live.load();
        let record = snap.scripts.get(&id).expect("script in the live snapshot");
        assert_eq!(record.reaction.name, "telegram-message");
        assert!(!format!("{record:?}").contains("bot_token\""), "extra is masked in Debug");
        assert!(!format!("{record:?}").contains("\"bot_token\""));
    }
}

crate::on_both_stores! {
    async fn id_timestamps_and_unknown_fields_in_a_body_are_ignored(api) {
        let mut body = seed_body();
        body["id"] = json!(999);
        body["created_at"] = json!("2000-01-01 00:00:00");
        body["updated_at"] = json!("2000-01-01 00:00:00");
        body["whatever"] = json!({"x": 1});
        let (status, v) = api.post(&body).await;
        assert_eq!(status, 201, "{v}");
        assert_ne!(v["id"], 999);
        assert_ne!(v["created_at"], "2000-01-01 00:00:00");
        assert!(v.get("whatever").is_none());
    }
}

crate::on_both_stores! {
    async fn missing_days_or_breaks_are_echoed_as_empty_arrays(api) {
        let mut body = always_body("t");
        body["timetable"] = json!({"days": [{"type": "weekdays", "from": "08:00", "to": "18:00"}]});
        let (status, v) = api.post(&body).await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(
            v["timetable"],
            json!({"days": [{"type": "weekdays", "from": "08:00", "to": "18:00", "breaks": []}], "intervals": []})
        );
        let id = v["id"].as_i64().expect("id");
        assert_eq!(api.live.load().scripts.cameras(&id), Some(Some(&[17, 18][..])));
        assert_eq!(v["status"], "active");
        let mut body = always_body("t");
        body["status"] = json!(false);
        let (status, v) = api.post(&body).await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["status"], "disabled");
    }
}

crate::on_both_stores! {
    async fn patch_changes_only_what_it_names(api) {
        let id = api.create(&always_body("before")).await;
        let (_, before) = api.get(&format!("/scripts/{id}")).await;
        let (status, after) = api
            .send(api.req(Method::PATCH, &format!("/scripts/{id}")).json(&json!({"title": "after"})))
            .await;
        assert_eq!(status, 200, "{after}");
        assert_eq!(after["title"], "after");
        for k in ["id", "timetable", "status", "users", "event", "reaction", "extra", "created_at"] {
            assert_eq!(after[k], before[k], "{k} changed");
        }
        assert_eq!(api.live.load().scripts.cameras(&id), Some(Some(&[17, 18][..])), "cameras changed");
        let (_, shown) = api.get(&format!("/scripts/{id}")).await;
        assert_eq!(shown, after);
        assert_eq!(api.live.load().scripts[&id].title, "after");

        // Switching to telegram-message without chat_id/bot_token: the merged script is invalid.
        let (status, v) = api
            .send(api.req(Method::PATCH, &format!("/scripts/{id}")).json(&json!({"reaction_id": 1})))
            .await;
        assert_eq!(status, 422);
        assert_eq!(error_keys(&v), ["extra.bot_token", "extra.chat_id"]);
        let (status, v) = api
            .send(api.req(Method::PATCH, &format!("/scripts/{id}")).json(
                &json!({"reaction_id": 1, "extra": {"chat_id": 42, "bot_token": "1:x"}, "status": "disabled"}),
            ))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["reaction"]["name"], "telegram-message");
        assert_eq!(v["status"], "disabled");
        assert_eq!(v["title"], "after");
        assert!(!api.live.load().scripts[&id].enabled);
    }
}

crate::on_both_stores! {
    async fn put_replaces_and_validates_like_post(api) {
        let id = api.create(&always_body("old")).await;
        let (status, v) =
            api.send(api.req(Method::PUT, &format!("/scripts/{id}")).json(&seed_body())).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["id"], id);
        assert_eq!(v["title"], "script");
        assert_eq!(api.live.load().scripts.cameras(&id), Some(None), "cameras: null clears the filter");
        let (status, v) = api
            .send(api.req(Method::PUT, &format!("/scripts/{id}")).json(&json!({"title": "only"})))
            .await;
        assert_eq!(status, 422);
        assert_eq!(error_keys(&v), ["event_id", "reaction_id", "status", "timetable", "users"]);
    }
}

crate::on_both_stores! {
    async fn delete_answers_204_then_404(api) {
        let id = api.create(&always_body("gone")).await;
        assert!(api.live.load().scripts.contains_key(&id));
        let (status, _) = api.send(api.req(Method::DELETE, &format!("/scripts/{id}"))).await;
        assert_eq!(status, 204);
        assert!(!api.live.load().scripts.contains_key(&id));
        let (status, _) = api.send(api.req(Method::DELETE, &format!("/scripts/{id}"))).await;
        assert_eq!(status, 404);
    }
}

crate::on_both_stores! {
    async fn unknown_ids_are_404(api) {
        for path in ["/scripts/999", "/scripts/abc", "/scripts/-1", "/scripts/999/deliveries", "/nope"]
        {
            let (status, v) = api.get(path).await;
            assert_eq!(status, 404, "{path}");
            assert!(v["message"].is_string());
        }
        for method in [Method::PUT, Method::PATCH] {
            let (status, _) = api.send(api.req(method, "/scripts/999").json(&seed_body())).await;
            assert_eq!(status, 404);
        }
        let (status, _) = api.send(api.req(Method::DELETE, "/scripts/999")).await;
        assert_eq!(status, 404);
    }
}

crate::on_both_stores! {
    async fn list_is_paginated(api) {
        for i in 0..3 {
            api.create(&always_body(&format!("s{i}"))).await;
        }
        let (status, v) = api.get("/scripts?per_page=2").await;
        assert_eq!(status, 200);
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["meta"], json!({"current_page": 1, "per_page": 2, "total": 3, "last_page": 2}));
        assert_eq!(v["data"][0]["title"], "s0");
        let (_, v) = api.get("/scripts?per_page=2&page=2").await;
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["data"][0]["title"], "s2");
        let (_, v) = api.get("/scripts").await;
        assert_eq!(v["meta"]["per_page"], 15);
        assert_eq!(v["data"].as_array().unwrap().len(), 3);
        let (_, v) = api.get("/scripts?per_page=1000").await;
        assert_eq!(v["meta"]["per_page"], 100);
        let (_, v) = api.get("/scripts?page=9").await;
        assert_eq!(v["data"], json!([]));
        let (status, v) = api.get("/scripts?page=0&per_page=abc").await;
        assert_eq!(status, 422);
        assert_eq!(error_keys(&v), ["page", "per_page"]);
    }
}

crate::on_both_stores! {
    async fn catalogs_list_events_and_reactions(api) {
        let (status, v) = api.get("/events").await;
        assert_eq!(status, 200);
        let events = v["data"].as_array().unwrap();
        assert!(events.len() >= 11);
        for e in events {
            assert_eq!(keys(e), ["analytic_type", "color", "description", "id", "name"]);
        }
        let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
        for n in
            ["face_recognized", "plate_recognized", "line_crossing", "smoke_fire", "camera_offline"]
        {
            assert!(names.contains(&n), "{n}");
        }
        let (status, v) = api.get("/reactions").await;
        assert_eq!(status, 200);
        let names: Vec<&str> =
            v["data"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(
            names,
            ["telegram-message", "show-camera-sidebar", "show-camera", "sound", "webhook"]
        );
    }
}

#[tokio::test]
async fn deliveries_are_listed_newest_first_with_a_limit() {
    let api = start().await;
    let id = api.create(&always_body("d")).await;
    let (status, v) = api.get(&format!("/scripts/{id}/deliveries")).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"data": []}));
    let conn = rusqlite::Connection::open(&api.db_path).unwrap();
    for (i, state) in ["sent", "failed", "pending"].iter().enumerate() {
        conn.execute(
            "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient, lane, payload,
                 state, attempts, next_attempt_at, last_error, created_at, updated_at)
             VALUES (?1, 'occ', ?2, 'show-camera-sidebar', '1', 'user:1', '{}', ?3, 1, 0, ?4, ?5, ?5)",
            rusqlite::params![
                format!("occ{i}:{id}:1"),
                id,
                state,
                (*state == "failed").then_some("HTTP 400"),
                1_764_000_000_000i64 + i as i64 * 1000
            ],
        )
        .unwrap();
    }
    let (_, v) = api.get(&format!("/scripts/{id}/deliveries?limit=2")).await;
    let list = v["data"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(list[1]["state"], "failed");
    assert_eq!(list[1]["last_error"], "HTTP 400");
    assert_eq!(
        keys(&list[0]),
        [
            "attempts",
            "coalesced_into",
            "created_at",
            "id",
            "last_error",
            "occurrence_id",
            "reaction",
            "recipient",
            "state",
            "updated_at"
        ]
    );
    assert_timestamp(&list[0]["created_at"], "delivery created_at");
    let (status, v) = api.get(&format!("/scripts/{id}/deliveries?limit=0")).await;
    assert_eq!(status, 422);
    assert_eq!(error_keys(&v), ["limit"]);
}

async fn all_routes(api: &TestApi, auth: Option<&str>) {
    let routes = [
        (Method::GET, "/scripts"),
        (Method::POST, "/scripts"),
        (Method::GET, "/scripts/1"),
        (Method::PUT, "/scripts/1"),
        (Method::PATCH, "/scripts/1"),
        (Method::DELETE, "/scripts/1"),
        (Method::GET, "/scripts/1/deliveries"),
        (Method::GET, "/events"),
        (Method::GET, "/reactions"),
        (Method::GET, "/no-such-route"),
    ];
    // Each call from its own loopback address, so the 10 failures stay under the
    // failed-authentication limit (20 a minute per address).
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    let host = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 2, host]))
        .build()
        .unwrap();
    for (method, path) in routes {
        let mut rb = client.request(method.clone(), format!("{}{path}", api.base));
        if let Some(value) = auth {
            rb = rb.header("Authorization", value);
        }
        let res = rb.json(&seed_body()).send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 401, "{method} {path} with {auth:?}");
        assert_eq!(body, json!({"message": "Unauthenticated."}), "{method} {path}");
    }
}

crate::on_both_stores! {
    async fn every_route_needs_a_valid_bearer_token(api) {
        let id = api.create(&always_body("x")).await;
        assert_eq!(id, 1);
        all_routes(&api, None).await;
        all_routes(&api, Some("Bearer wrong")).await;
        all_routes(&api, Some("Bearer ")).await;
        all_routes(&api, Some("Bearer")).await;
        let (public, secret) = api.token.split_once('.').unwrap();
        all_routes(
            &api,
            Some(&format!("Bearer {public}.{}", secret.replace('a', "b").replace('0', "1"))),
        )
        .await;
        all_routes(&api, Some(&format!("Bearer {public}."))).await;
        all_routes(&api, Some(&format!("Basic {}", api.token))).await;
        all_routes(&api, Some(&format!("Bearer {} x", api.token))).await;
        // The real token works on the same routes.
        let (status, _) = api.get("/scripts/1").await;
        assert_eq!(status, 200);
    }
}

crate::on_both_stores! {
    async fn x_client_outside_the_list_is_422_and_auth_comes_first(api) {
        let (status, v) = api.send(api.req(Method::GET, "/events").header("X-Client", "curl")).await;
        assert_eq!(status, 422);
        assert_eq!(error_keys(&v), ["X-Client"]);
        for ok in ["ios-cctv", "android-cctv", "thick-legal", "web"] {
            let (status, _) = api.send(api.req(Method::GET, "/events").header("X-Client", ok)).await;
            assert_eq!(status, 200, "{ok}");
        }
        let res = api
            .client
            .get(format!("{}/events", api.base))
            .header("X-Client", "curl")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
    }
}

// The body limit is the HTTP layer's, the same on both stores.
#[tokio::test]
async fn a_2_mib_body_is_413_and_1_mib_minus_a_bit_is_read() {
    let api = start().await;
    let mut body = seed_body();
    body["padding"] = json!("x".repeat(2 * 1024 * 1024));
    let (status, v) = api.post(&body).await;
    assert_eq!(status, 413, "{v}");
    let mut body = seed_body();
    body["padding"] = json!("x".repeat(1024 * 1024 - 1024));
    let (status, v) = api.post(&body).await;
    assert_eq!(status, 201, "{v}");
}

#[tokio::test]
async fn a_locked_database_is_503_with_retry_after() {
    let api =
        crate::support::api::start_with_busy_timeout(std::time::Duration::from_millis(200)).await;
    let mut holder = rusqlite::Connection::open(&api.db_path).unwrap();
    let tx = holder.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    let res = api.req(Method::POST, "/scripts").json(&always_body("x")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    // Reads still work while another program writes (WAL).
    let (status, _) = api.get("/scripts").await;
    assert_eq!(status, 200);
    drop(tx);
    let (status, _) = api.post(&always_body("x")).await;
    assert_eq!(status, 201);
}

crate::on_both_stores! {
    async fn put_without_cameras_keeps_the_stored_filter(api) {
        let id = api.create(&always_body("gate")).await;
        assert_eq!(api.live.load().scripts.cameras(&id), Some(Some(&[17, 18][..])));
        // A client written against the seed's object (no cameras key) sends a body without it.
        let (_, shown) = api.get(&format!("/scripts/{id}")).await;
        assert_eq!(shown["cameras"], json!([17, 18]));
        let mut body = always_body("gate renamed");
        if let Some(b) = body.as_object_mut() {
            b.remove("cameras");
        }
        let (status, v) = api.send(api.req(Method::PUT, &format!("/scripts/{id}")).json(&body)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["title"], "gate renamed");
        assert_eq!(api.live.load().scripts.cameras(&id), Some(Some(&[17, 18][..])), "filter kept");
        // An explicit null still means every camera.
        body["cameras"] = Value::Null;
        let (status, _) = api.send(api.req(Method::PUT, &format!("/scripts/{id}")).json(&body)).await;
        assert_eq!(status, 200);
        assert_eq!(api.live.load().scripts.cameras(&id), Some(None));
    }
}
