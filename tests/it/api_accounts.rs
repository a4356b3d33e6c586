//! Accounts against the real daemon: script ownership and reach, enforced permissions,
//! token revocation, expiry and disabled users while the daemon runs, and the
//! failed-authentication limiter.
//!
//! The daemon's users (see `support::daemon`): account A is 1 (root), 2 (sub-user of 1)
//! and 3 (sub-user of 2); account B is 4.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::support::daemon::{Daemon, DaemonOptions, call, call_from, script};
use crate::support::{TestClient, within};
use reqwest::Method;
use serde_json::{Value, json};

const SIDEBAR: i64 = 2;
const SOUND: i64 = 4;
const FACE: i64 = 1;

fn all_day() -> Value {
    json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]})
}

async fn create_as(d: &Daemon, token: &str, body: &Value) -> i64 {
    let (status, v) = call(d, Method::POST, "/scripts", token, Some(body)).await;
    assert_eq!(status, 201, "create: {v}");
    v["id"].as_i64().expect("id")
}

/// The ids `token` sees in `GET /scripts`, and the list's `meta`.
async fn listed(d: &Daemon, token: &str) -> (Vec<i64>, Value) {
    let (status, v) = call(d, Method::GET, "/scripts?per_page=2", token, None).await;
    assert_eq!(status, 200, "{v}");
    let mut ids = Vec::new();
    let last = v["meta"]["last_page"].as_u64().expect("last_page");
    for page in 1..=last {
        let (_, p) =
            call(d, Method::GET, &format!("/scripts?per_page=2&page={page}"), token, None).await;
        ids.extend(p["data"].as_array().expect("data").iter().filter_map(|s| s["id"].as_i64()));
    }
    (ids, v["meta"].clone())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn occurrence(id: &str) -> Vec<u8> {
    json!({"id": id, "event_id": FACE, "camera_id": 3, "occurred_at": now()})
        .to_string()
        .into_bytes()
}

/// The token's public id (the part before the dot).
fn public_id(token: &str) -> &str {
    token.split_once('.').map_or(token, |(p, _)| p)
}

crate::on_both_daemons! {
    /// Every route across the account boundary answers exactly like a missing script and
    /// changes nothing; a sub-user sees its own and its descendants' scripts, not its
    /// parent's; `users` must lie in the caller's reach; the stream carries only the caller's
    /// own pushes.
    async fn another_accounts_scripts_do_not_exist_for_the_caller(d) {
        let t2 = d.cli(&["tokens", "create", "--user", "2"]);
        let t3 = d.cli(&["tokens", "create", "--user", "3"]);
        let (t1, t4) = (d.token.clone(), d.token_4.clone());

        let s1 = create_as(&d, &t1, &script("root of A", SIDEBAR, FACE, &[1], all_day())).await;
        let s2 = create_as(&d, &t2, &script("sub of A", SIDEBAR, FACE, &[2, 3], all_day())).await;
        let s3 = create_as(&d, &t3, &script("sub-sub of A", SIDEBAR, FACE, &[3], all_day())).await;
        let b = create_as(&d, &t4, &script("account B", SOUND, FACE, &[4], all_day())).await;
        let (_, shown) = call(&d, Method::GET, &format!("/scripts/{s2}"), &t2, None).await;
        assert_eq!(shown["owner_id"], 2);
        assert_eq!(shown["cameras"], Value::Null);

        // Reach: each caller sees its own scripts and those of the users below it.
        let (ids, meta) = listed(&d, &t1).await;
        assert_eq!(ids, [s1, s2, s3]);
        assert_eq!((meta["total"].as_u64(), meta["last_page"].as_u64()), (Some(3), Some(2)));
        assert_eq!(listed(&d, &t2).await.0, [s2, s3], "not its parent's");
        assert_eq!(listed(&d, &t3).await.0, [s3]);
        let (ids, meta) = listed(&d, &t4).await;
        assert_eq!(ids, [b]);
        assert_eq!((meta["total"].as_u64(), meta["last_page"].as_u64()), (Some(1), Some(1)));
        for (token, id) in [(&t2, s1), (&t3, s2), (&t3, s1)] {
            let (status, _) = call(&d, Method::GET, &format!("/scripts/{id}"), token, None).await;
            assert_eq!(status, 404, "a sub-user reading its parent's script {id}");
        }

        // B's script gets a delivery (and the stream of A must not carry it).
        let resp = reqwest::Client::new()
            .get(d.url("/reactions/stream"))
            .bearer_auth(&t1)
            .send()
            .await
            .expect("stream");
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let vms = TestClient::connect(d.mqtt_port, "vms-accounts").await;
        vms.publish("vms/analytics/events/3", occurrence("cross-1")).await;
        within(15, "B sees its delivery", async {
            loop {
                let v = d.get_as(&t4, &format!("/scripts/{b}/deliveries")).await;
                if v["data"].as_array().is_some_and(|a| !a.is_empty()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let text = within(15, "A's push on A's stream", async {
            use futures_util::StreamExt;
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                if text.contains("data:") && text.ends_with("\n\n") {
                    return text;
                }
            }
            text
        })
        .await;
        let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
        assert_eq!(ids, [format!("cross-1:{s1}:1")], "only user 1's own push: {text}");

        // Every route on B's script, as A, answers exactly like a missing script.
        let missing = 999_999;
        let body = script("taken over", SIDEBAR, FACE, &[1], all_day());
        let patch = json!({"title": "taken over"});
        let (_, before) = call(&d, Method::GET, &format!("/scripts/{b}"), &t4, None).await;
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::PUT, "", Some(&body)),
            (Method::PATCH, "", Some(&patch)),
            (Method::GET, "/deliveries", None),
            (Method::DELETE, "", None),
        ] {
            for token in [&t1, &t2, &t3] {
                let theirs =
                    call(&d, method.clone(), &format!("/scripts/{b}{suffix}"), token, body).await;
                let absent =
                    call(&d, method.clone(), &format!("/scripts/{missing}{suffix}"), token, body).await;
                assert_eq!(theirs.0, 404, "{method} /scripts/{b}{suffix}: {}", theirs.1);
                assert_eq!(theirs, absent, "{method} {suffix}: not exactly like a missing script");
                assert_eq!(theirs.1, json!({"message": "Script not found."}));
            }
            // And the other way round.
            let (status, _) =
                call(&d, method.clone(), &format!("/scripts/{s3}{suffix}"), &t4, body).await;
            assert_eq!(status, 404, "B: {method} /scripts/{s3}{suffix}");
        }
        let (status, after) = call(&d, Method::GET, &format!("/scripts/{b}"), &t4, None).await;
        assert_eq!(status, 200, "B's script survived");
        assert_eq!(after, before, "nothing changed");
        assert_eq!(listed(&d, &t1).await.0, [s1, s2, s3]);

        // `users` must lie in the caller's reach: the same 422 as for a user that does not exist.
        for (token, users, key) in [
            (&t1, json!([1, 4]), "users.1"),
            (&t2, json!([1]), "users.0"),
            (&t3, json!([3, 2]), "users.1"),
            (&t4, json!([1]), "users.0"),
        ] {
            let mut body = script("reach", SIDEBAR, FACE, &[], all_day());
            body["users"] = users.clone();
            let (status, v) = call(&d, Method::POST, "/scripts", token, Some(&body)).await;
            assert_eq!(status, 422, "{users}: {v}");
            assert_eq!(v["errors"].as_object().map(|e| e.len()), Some(1), "{v}");
            let index: usize = key.trim_start_matches("users.").parse().expect("index");
            let outside = &users[index];
            assert_eq!(
                v["errors"][key],
                json!([format!("The selected user {outside} does not exist.")]),
                "{users}: not the answer for a user that does not exist"
            );
        }
        let (status, v) =
            call(&d, Method::PATCH, &format!("/scripts/{s2}"), &t2, Some(&json!({"users": [1]}))).await;
        assert_eq!((status, v["errors"]["users.0"].is_array()), (422, true), "{v}");
        let (status, _) =
            call(&d, Method::PATCH, &format!("/scripts/{s2}"), &t1, Some(&json!({"users": [1]}))).await;
        assert_eq!(status, 200, "the parent may hand its sub-user's script to itself");

        // A deleted script's deliveries stay with its account.
        let (status, _) = call(&d, Method::DELETE, &format!("/scripts/{b}"), &t4, None).await;
        assert_eq!(status, 204);
        let (status, v) = call(&d, Method::GET, &format!("/scripts/{b}/deliveries"), &t4, None).await;
        assert_eq!(status, 200);
        assert_eq!(v["data"].as_array().map(Vec::len), Some(1));
        let (status, _) = call(&d, Method::GET, &format!("/scripts/{b}/deliveries"), &t1, None).await;
        assert_eq!(status, 404);
    }
}

/// `scripts.view` to read, `scripts.manage` to write; 403 otherwise, before anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permissions_are_403() {
    let d = Daemon::start(DaemonOptions::default()).await;
    let mine = create_as(&d, &d.token, &script("A", SIDEBAR, FACE, &[1], all_day())).await;
    // A viewer and a user with no script permission, both below user 1.
    let viewer = d.cli(&[
        "users",
        "add",
        "--login",
        "viewer",
        "--name",
        "V",
        "--parent",
        "1",
        "--permission",
        "scripts.view",
    ]);
    let nobody = d.cli(&[
        "users",
        "add",
        "--login",
        "nobody",
        "--name",
        "N",
        "--parent",
        "1",
        "--permission",
        "cameras.view",
    ]);
    let manager = d.cli(&[
        "users",
        "add",
        "--login",
        "mgr",
        "--name",
        "M",
        "--parent",
        "1",
        "--permission",
        "scripts.manage",
    ]);
    let listing = d.cli(&["users", "list"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&format!("{viewer}\t1\tviewer\tactive\tscripts.view"))),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("1\t-\top@example.com\tactive\tscripts.manage,scripts.view")),
        "default permissions: {listing}"
    );
    let tv = d.cli(&["tokens", "create", "--user", &viewer]);
    let tn = d.cli(&["tokens", "create", "--user", &nobody]);
    let tm = d.cli(&["tokens", "create", "--user", &manager]);
    let own_by_viewer = {
        // The viewer cannot create scripts: its own comes from an operator import.
        let file = d.dir.path().join("viewer.json");
        let mut s = script("viewer's", SIDEBAR, FACE, &[viewer.parse().unwrap()], all_day());
        s["owner_id"] = json!(viewer.parse::<i64>().unwrap());
        std::fs::write(&file, json!([s]).to_string()).unwrap();
        d.cli(&["scripts", "import", file.to_str().unwrap()]);
        let (ids, _) = listed(&d, &tv).await;
        assert_eq!(ids.len(), 1, "the imported script is the viewer's");
        ids[0]
    };
    let body = script("x", SIDEBAR, FACE, &[1], all_day());
    let forbidden = json!({"message": "This action is unauthorized."});
    let writes = |id: i64| {
        [
            (Method::POST, "/scripts".to_owned()),
            (Method::PUT, format!("/scripts/{id}")),
            (Method::PATCH, format!("/scripts/{id}")),
            (Method::DELETE, format!("/scripts/{id}")),
        ]
    };
    let reads = |id: i64| {
        ["/scripts".to_owned(), format!("/scripts/{id}"), format!("/scripts/{id}/deliveries")]
    };
    for (method, path) in writes(own_by_viewer).into_iter().chain(writes(999_999)) {
        let (status, v) = call(&d, method.clone(), &path, &tv, Some(&body)).await;
        assert_eq!((status, &v), (403, &forbidden), "viewer {method} {path}");
        let (status, v) = call(&d, method.clone(), &path, &tn, Some(&body)).await;
        assert_eq!((status, &v), (403, &forbidden), "nobody {method} {path}");
    }
    for path in reads(own_by_viewer).into_iter().chain(reads(mine)) {
        let (status, v) = call(&d, Method::GET, &path, &tn, None).await;
        assert_eq!((status, &v), (403, &forbidden), "nobody GET {path}");
    }
    for path in reads(own_by_viewer) {
        let (status, v) = call(&d, Method::GET, &path, &tv, None).await;
        assert_eq!(status, 200, "viewer GET {path}: {v}");
    }
    // Snoozes: a viewer may silence its own pushes, not the whole script; without
    // scripts.view nothing; a bad body names its keys.
    let snoozes = format!("/scripts/{own_by_viewer}/snoozes");
    let me = json!({"scope": "me", "minutes": 30});
    let whole = json!({"scope": "script", "minutes": 30});
    let (status, v) = call(&d, Method::POST, &snoozes, &tv, Some(&me)).await;
    assert_eq!(status, 201, "viewer snoozes its own pushes: {v}");
    let (status, v) = call(&d, Method::POST, &snoozes, &tv, Some(&whole)).await;
    assert_eq!((status, &v), (403, &forbidden), "a script-wide snooze needs scripts.manage");
    let (status, v) = call(&d, Method::POST, &snoozes, &tn, Some(&me)).await;
    assert_eq!((status, &v), (403, &forbidden), "nobody snoozes");
    let (status, v) =
        call(&d, Method::POST, &snoozes, &tv, Some(&json!({"minutes": 0, "camera_id": "x"}))).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["errors"]["minutes"].is_array() && v["errors"]["camera_id"].is_array(), "{v}");
    for path in [format!("/scripts/{own_by_viewer}/week"), "/occurrences/x".to_owned()] {
        let (status, v) = call(&d, Method::GET, &path, &tn, None).await;
        assert_eq!((status, &v), (403, &forbidden), "nobody GET {path}");
    }
    // The catalogs need no script permission.
    let (status, _) = call(&d, Method::GET, "/events", &tn, None).await;
    assert_eq!(status, 200);
    // scripts.manage includes reading.
    let mut own = script("managed", SIDEBAR, FACE, &[], all_day());
    own["users"] = json!([manager.parse::<i64>().unwrap()]);
    let id = create_as(&d, &tm, &own).await;
    let (status, _) = call(&d, Method::GET, &format!("/scripts/{id}"), &tm, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&d, Method::DELETE, &format!("/scripts/{id}"), &tm, None).await;
    assert_eq!(status, 204);
    let (status, v) =
        call(&d, Method::GET, &format!("/scripts/{own_by_viewer}"), &d.token, None).await;
    assert_eq!(status, 200, "the parent sees its sub-user's script: {v}");
}

crate::on_both_daemons! {
    /// Revoking a token, revoking a user's tokens and disabling a user take effect while the
    /// daemon runs: the next request is refused; a disabled user gets no more pushes; an
    /// expired token is refused; `tokens list` shows the state and never a secret.
    async fn revoked_expired_and_disabled_are_refused_by_the_running_daemon(d) {
        let t2 = d.cli(&["tokens", "create", "--user", "2"]);
        let t3a = d.cli(&["tokens", "create", "--user", "3"]);
        let t3b = d.cli(&["tokens", "create", "--user", "3"]);
        for t in [&d.token, &t2, &t3a, &t3b, &d.token_4] {
            assert_eq!(call(&d, Method::GET, "/scripts", t, None).await.0, 200);
        }

        // An open stream of a token that gets revoked ends.
        let open = reqwest::Client::new()
            .get(d.url("/reactions/stream"))
            .bearer_auth(&t2)
            .send()
            .await
            .expect("stream");
        assert_eq!(open.status(), 200);
        let mut open = open.bytes_stream();

        // One token by its public id: refused by the very next request.
        d.cli(&["tokens", "revoke", public_id(&t2)]);
        let refused_at = Instant::now();
        let (status, v) = call(&d, Method::GET, "/scripts", &t2, None).await;
        assert_eq!((status, v), (401, json!({"message": "Unauthenticated."})));
        assert!(refused_at.elapsed() < Duration::from_secs(1));
        within(10, "the revoked token's stream ends", async {
            use futures_util::StreamExt;
            while let Some(Ok(_)) = open.next().await {}
        })
        .await;
        // Every token of a user.
        assert_eq!(d.cli(&["tokens", "revoke", "--user", "3"]), "2 tokens of user 3 revoked");
        for t in [&t3a, &t3b] {
            assert_eq!(call(&d, Method::GET, "/scripts", t, None).await.0, 401);
        }
        assert_eq!(call(&d, Method::GET, "/scripts", &d.token, None).await.0, 200, "others unaffected");

        // Disabling user 4: its token is refused and its pushes stop, while user 1 still gets
        // its own.
        create_as(&d, &d.token, &script("one", SIDEBAR, FACE, &[1], all_day())).await;
        create_as(&d, &d.token_4, &script("four", SOUND, FACE, &[4], all_day())).await;
        let mut app = TestClient::connect(d.mqtt_port, "app-accounts").await;
        app.subscribe("vms/users/1/reactions").await;
        app.subscribe("vms/users/4/reactions").await;
        let vms = TestClient::connect(d.mqtt_port, "vms-disable").await;
        vms.publish("vms/analytics/events/3", occurrence("before")).await;
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push(app.next(15).await.topic);
        }
        got.sort();
        assert_eq!(got, ["vms/users/1/reactions", "vms/users/4/reactions"]);
        d.cli(&["users", "disable", "4"]);
        assert_eq!(call(&d, Method::GET, "/scripts", &d.token_4, None).await.0, 401);
        tokio::time::sleep(Duration::from_secs(1)).await;
        vms.publish("vms/analytics/events/3", occurrence("after")).await;
        let p = app.next(15).await;
        assert_eq!(p.topic, "vms/users/1/reactions");
        vms.publish("vms/analytics/events/3", occurrence("after-2")).await;
        let p = app.next(15).await;
        assert_eq!(p.topic, "vms/users/1/reactions", "no push for the disabled user 4");
        let listing = d.cli(&["users", "list"]);
        assert!(
            listing.lines().any(|l| l.starts_with("4\t-\tother@example.com\tdisabled")),
            "{listing}"
        );

        // Expiry.
        let short = d.cli(&["tokens", "create", "--user", "1", "--expires-in", "3s"]);
        assert_eq!(call(&d, Method::GET, "/scripts", &short, None).await.0, 200);
        within(10, "the short-lived token expires", async {
            while call(&d, Method::GET, "/scripts", &short, None).await.0 != 401 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;

        // The list: public ids and states, last use recorded, never a secret.
        let list = within(10, "last use recorded", async {
            loop {
                let list = d.cli(&["tokens", "list", "--user", "1"]);
                let first = list.lines().find(|l| l.starts_with(public_id(&d.token))).unwrap_or("");
                if first.split('\t').nth(3).is_some_and(|used| used != "-") {
                    return list;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            list.lines().any(|l| l.starts_with(public_id(&short)) && l.ends_with("\texpired")),
            "{list}"
        );
        let all = d.cli(&["tokens", "list"]);
        assert!(
            all.lines().any(|l| l.starts_with(public_id(&t2)) && l.ends_with("\trevoked")),
            "{all}"
        );
        for t in [&d.token, &t2, &t3a, &short] {
            let secret = t.split_once('.').map(|(_, s)| s).unwrap_or_default();
            assert!(!all.contains(secret), "a secret in `tokens list`");
        }
        assert_eq!(all.lines().count(), 1 + 6, "header and six tokens: {all}");
    }
}

crate::on_both_daemons! {
    /// After 20 failed authentications from one address the 21st gets 429 with Retry-After,
    /// and so does a valid token from that address; other addresses are unaffected.
    async fn failed_authentications_are_limited_per_address(d) {
        let here = reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)))
            .build()
            .expect("client");
        let elsewhere = reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
            .build()
            .expect("client");
        let wrong = format!("{}.{}", public_id(&d.token), "0".repeat(64));
        for i in 1..=20 {
            let token = if i % 2 == 0 { wrong.as_str() } else { "" };
            let (status, retry, _) = call_from(&here, &d, Method::GET, "/scripts", token, None).await;
            assert_eq!((status, retry), (401, None), "failure {i}");
        }
        let (status, retry, v) = call_from(&here, &d, Method::GET, "/scripts", &wrong, None).await;
        assert_eq!(status, 429, "the 21st failure: {v}");
        let secs: u64 = retry.as_deref().and_then(|r| r.parse().ok()).expect("Retry-After seconds");
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
        let (status, retry, _) = call_from(&here, &d, Method::GET, "/scripts", &d.token, None).await;
        assert_eq!(status, 429, "a right guess from the blocked address is not told apart");
        assert!(retry.is_some());
        // Another address: a valid token works, and its own failures start from zero.
        let (status, _, _) = call_from(&elsewhere, &d, Method::GET, "/scripts", &d.token, None).await;
        assert_eq!(status, 200);
        let (status, _, _) = call_from(&elsewhere, &d, Method::GET, "/scripts", &wrong, None).await;
        assert_eq!(status, 401);
        // Health and metrics are outside the API and not limited.
        let health = here.get(format!("http://127.0.0.1:{}/healthz", d.api_port)).send().await;
        assert_eq!(health.expect("healthz").status(), 200);
    }
}
