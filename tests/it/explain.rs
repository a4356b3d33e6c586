//! `POST /explain`, `GET /occurrences/{id}` and `scriptd explain` against the real daemon:
//! every reason is produced and named exactly, recipients say why they get nothing
//! (snoozed, user disabled), only the caller's reach is shown, and bad bodies and missing
//! permissions are refused.
//!
//! The daemon's users (see `support::daemon`): account A is 1 (root), 2 (sub-user of 1)
//! and 3 (sub-user of 2); account B is 4.

use std::time::Duration;

use crate::support::TestClient;
use crate::support::daemon::{Daemon, DaemonOptions, call, script};
use reqwest::Method;
use serde_json::{Value, json};

const SIDEBAR: i64 = 2;
const WEBHOOK: i64 = 5;
const FACE: i64 = 1;
const UNKNOWN_FACE: i64 = 2;
/// A Monday; the windows below are in UTC.
const DAY: &str = "2026-12-07";

fn at(hm: &str) -> String {
    format!("{DAY}T{hm}:00Z")
}

/// The verdict of script `id` in an explain answer.
fn verdict(answer: &Value, id: i64) -> Value {
    answer["data"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["script_id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("script {id} not in {answer}"))
}

async fn explain(d: &Daemon, token: &str, body: Value) -> (u16, Value) {
    call(d, Method::POST, "/explain", token, Some(&body)).await
}

/// The recipients' reasons of one verdict, in order.
fn recipient_reasons(v: &Value) -> Vec<&str> {
    v["recipients"].as_array().into_iter().flatten().filter_map(|x| x["reason"].as_str()).collect()
}

/// The script ids an explain answer (or its `explanation`) lists, in order.
fn script_ids(list: &Value) -> Vec<i64> {
    list.as_array().into_iter().flatten().filter_map(|s| s["script_id"].as_i64()).collect()
}

/// The reasons of every script at `when` on `camera`, by script id.
async fn reasons(d: &Daemon, camera: i64, when: &str) -> Value {
    let (status, v) =
        explain(d, &d.token, json!({"event_id": FACE, "camera_id": camera, "occurred_at": when}))
            .await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reason_is_named_and_only_the_callers_scripts_are_shown() {
    let d = Daemon::start(DaemonOptions::default()).await;
    let office = json!({"days": [{"type": "same_every_day", "from": "08:00Z", "to": "18:00Z",
                                  "breaks": [{"from": "12:00Z", "to": "13:00Z"}]}]});
    let mut s = script("office", SIDEBAR, FACE, &[1], office.clone());
    s["cameras"] = json!([7]);
    let window = d.create_script(&s).await["id"].as_i64().expect("id");
    let interval = json!({"intervals": [{"from": format!("{DAY} 09:00:00Z"), "to": format!("{DAY} 11:00:00Z")}]});
    let interval = d.create_script(&script("visit", SIDEBAR, FACE, &[1], interval)).await["id"]
        .as_i64()
        .expect("id");
    let mut s = script("off", SIDEBAR, FACE, &[1], office.clone());
    s["status"] = json!("disabled");
    let disabled = d.create_script(&s).await["id"].as_i64().expect("id");
    let broken =
        d.create_script(&script("broken", SIDEBAR, FACE, &[1], office.clone())).await["id"]
            .as_i64()
            .expect("id");
    let other = d.create_script(&script("B's", SIDEBAR, FACE, &[4], office.clone())).await["id"]
        .as_i64()
        .expect("id");
    let mut s = script("hook", WEBHOOK, UNKNOWN_FACE, &[1], office.clone());
    s["extra"] = json!({"url": "http://127.0.0.1:9/hook"});
    let hook = d.create_script(&s).await["id"].as_i64().expect("id");
    // A hand edit breaks one script's timetable; the daemon notices within a second.
    let conn = rusqlite::Connection::open(d.dir.path().join("scriptd.db")).expect("open db");
    conn.execute(
        "UPDATE scripts SET timetable = ?2 WHERE id = ?1",
        rusqlite::params![
            broken,
            r#"{"days": [{"type": "someday", "from": "08:00", "to": "09:00"}]}"#
        ],
    )
    .expect("hand edit");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Window, interval, disabled, invalid, in reach only.
    let v = reasons(&d, 7, &at("10:00")).await;
    assert_eq!(v["meta"]["occurred_at"], "2026-12-07T10:00:00.000Z", "{v}");
    let w = verdict(&v, window);
    assert_eq!(w["fires"], true, "{w}");
    assert_eq!(w["reason"], "active in window timetable.days.0");
    assert_eq!(w["title"], "office");
    assert_eq!(
        w["recipients"],
        json!([{"user_id": 1, "delivers": true, "reason": "delivers"},
               {"user_id": 2, "delivers": true, "reason": "delivers"},
               {"user_id": 3, "delivers": true, "reason": "delivers"}])
    );
    assert_eq!(verdict(&v, interval)["reason"], "in interval timetable.intervals.0");
    assert_eq!(verdict(&v, interval)["fires"], true);
    assert_eq!(verdict(&v, disabled)["reason"], "disabled");
    assert_eq!(verdict(&v, disabled)["fires"], false);
    let b = verdict(&v, broken);
    assert_eq!(b["fires"], false);
    assert!(
        b["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("invalid script: timetable.days.0.type: "),
        "{b}"
    );
    let ids = script_ids(&v["data"]);
    assert!(!ids.contains(&other), "another account's script shown: {v}");
    assert!(!ids.contains(&hook), "a script of another event shown: {v}");
    let (_, theirs) = explain(
        &d,
        &d.token_4,
        json!({"event_id": FACE, "camera_id": 7, "occurred_at": at("10:00")}),
    )
    .await;
    let ids = script_ids(&theirs["data"]);
    assert_eq!(ids, [other], "{theirs}");

    // Break, outside, camera filter; the event by name.
    assert_eq!(
        verdict(&reasons(&d, 7, &at("12:30")).await, window)["reason"],
        "in break timetable.days.0.breaks.0"
    );
    assert_eq!(verdict(&reasons(&d, 7, &at("20:00")).await, window)["reason"], "outside days");
    assert_eq!(
        verdict(&reasons(&d, 7, &at("20:00")).await, interval)["reason"],
        "outside intervals"
    );
    assert_eq!(
        verdict(&reasons(&d, 8, &at("10:00")).await, window)["reason"],
        "camera not in filter"
    );
    let (_, by_name) =
        explain(&d, &d.token, json!({"event": "unknown_face_nope", "camera_id": 1})).await;
    assert!(by_name["errors"]["event"].is_array(), "{by_name}");
    let (status, by_name) = explain(
        &d,
        &d.token,
        json!({"event": "face_unknown", "camera_id": 1, "occurred_at": at("10:00")}),
    )
    .await;
    assert_eq!(status, 200);
    let h = verdict(&by_name, hook);
    assert_eq!(
        h["recipients"],
        json!([{"url": "http://127.0.0.1:9/hook", "delivers": true, "reason": "delivers"}]),
        "{h}"
    );

    // Recipients: a snooze of the caller's own pushes, a disabled user, then a snooze of
    // the whole script on one camera (through a script active all day).
    let all_day = json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]});
    let always = d.create_script(&script("always", SIDEBAR, FACE, &[1], all_day)).await["id"]
        .as_i64()
        .expect("id");
    let snooze = |scope: &str, camera: Option<i64>| json!({"scope": scope, "camera_id": camera, "minutes": 30});
    let path = format!("/scripts/{always}/snoozes");
    let (status, made) = call(&d, Method::POST, &path, &d.token, Some(&snooze("me", None))).await;
    assert_eq!(status, 201, "{made}");
    let me_until = made["data"]["until"].as_str().expect("until").to_owned();
    d.cli(&["users", "disable", "3"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = reasons(&d, 7, &chrono::Utc::now().to_rfc3339()).await;
    let a = verdict(&v, always);
    assert_eq!(a["fires"], true, "{a}");
    assert_eq!(
        a["recipients"],
        json!([{"user_id": 1, "delivers": false, "reason": format!("snoozed until {me_until}")},
               {"user_id": 2, "delivers": true, "reason": "delivers"},
               {"user_id": 3, "delivers": false, "reason": "user disabled"}]),
        "{a}"
    );
    let (status, made) =
        call(&d, Method::POST, &path, &d.token, Some(&snooze("script", Some(7)))).await;
    assert_eq!(status, 201, "{made}");
    let script_until = made["data"]["until"].as_str().expect("until").to_owned();
    let now = chrono::Utc::now().to_rfc3339();
    let a = verdict(&reasons(&d, 7, &now).await, always);
    let r = recipient_reasons(&a);
    let snoozed = format!("snoozed until {script_until}");
    assert_eq!(r, [snoozed.as_str(), snoozed.as_str(), "user disabled"], "{a}");
    let a = verdict(&reasons(&d, 8, &now).await, always);
    let r = recipient_reasons(&a);
    let me = format!("snoozed until {me_until}");
    assert_eq!(r, [me.as_str(), "delivers", "user disabled"], "camera_id limits it: {a}");

    // The CLI prints one line per script, every account's.
    let out =
        d.cli(&["explain", "--event", "face_recognized", "--camera", "7", "--at", &at("12:30")]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "the five scripts of A and the one of B: {out}");
    assert!(
        out.contains(&format!(
            "script {window} \"office\": does not fire (in break timetable.days.0.breaks.0)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "script {other} \"B's\": does not fire (in break timetable.days.0.breaks.0)"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("script {disabled} \"off\": does not fire (disabled)")), "{out}");
    let out = d.cli(&["explain", "--event", "1", "--camera", "7", "--at", &at("10:00")]);
    assert!(out.contains(&format!("script {window} \"office\": fires (active in window timetable.days.0); user 1 delivers, user 2 delivers, user 3 user disabled")), "{out}");
}

crate::on_both_daemons! {
    async fn cooldown_and_occurrences_are_explained_and_bad_requests_refused(d) {
        let all_day = json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]});
        let mut s = script("door", SIDEBAR, FACE, &[2], all_day.clone());
        s["extra"] = json!({"cooldown_seconds": 600});
        let door = d.create_script(&s).await["id"].as_i64().expect("id");
        let theirs = d.create_script(&script("B's", SIDEBAR, FACE, &[4], all_day)).await["id"]
            .as_i64()
            .expect("id");
        let mut app = TestClient::connect(d.mqtt_port, "app-2").await;
        app.subscribe("vms/users/2/reactions").await;
        let vms = TestClient::connect(d.mqtt_port, "vms-explain").await;
        let occurred = chrono::Utc::now();
        let occ = json!({"id": "occ-1", "event_id": FACE, "camera_id": 7, "occurred_at": occurred.to_rfc3339()});
        vms.publish("vms/analytics/events/7", occ.to_string().into_bytes()).await;
        app.next(10).await;

        // The next occurrence on that camera is in the cooldown; another camera is not.
        let later = occurred + chrono::Duration::seconds(5);
        let (_, v) = explain(
            &d,
            &d.token,
            json!({"event_id": FACE, "camera_id": 7, "occurred_at": later.to_rfc3339()}),
        )
        .await;
        let until = (occurred + chrono::Duration::seconds(600))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(verdict(&v, door)["reason"], format!("cooldown until {until}"), "{v}");
        assert_eq!(verdict(&v, door)["fires"], false);
        let (_, v) = explain(
            &d,
            &d.token,
            json!({"event_id": FACE, "camera_id": 8, "occurred_at": later.to_rfc3339()}),
        )
        .await;
        assert_eq!(verdict(&v, door)["fires"], true, "{v}");

        // The occurrence: its deliveries (only the caller's scripts') and the explanation at
        // its time, where it is the firing one, not a cooldown.
        let (status, o) = call(&d, Method::GET, "/occurrences/occ-1", &d.token, None).await;
        assert_eq!(status, 200, "{o}");
        let data = &o["data"];
        assert_eq!(data["occurrence_id"], "occ-1");
        assert_eq!(data["camera_id"], 7);
        assert_eq!(data["event_id"], FACE);
        let deliveries = data["deliveries"].as_array().expect("deliveries");
        let recipients: Vec<&str> = deliveries.iter().filter_map(|x| x["recipient"].as_str()).collect();
        assert_eq!(recipients, ["2", "3"], "{o}");
        assert!(deliveries.iter().all(|x| x["script_id"] == door), "{o}");
        for x in deliveries {
            for key in ["id", "state", "attempts", "last_error", "created_at", "updated_at"] {
                assert!(x.get(key).is_some(), "{key} missing: {x}");
            }
        }
        let e = verdict(&json!({"data": data["explanation"]}), door);
        assert_eq!(e["fires"], true, "{o}");
        assert_eq!(e["reason"], "active in window timetable.days.0");
        let shown = script_ids(&data["explanation"]);
        assert!(!shown.contains(&theirs), "{o}");
        // Another account made deliveries for it too, but sees only its own.
        let (status, o4) = call(&d, Method::GET, "/occurrences/occ-1", &d.token_4, None).await;
        assert_eq!(status, 200, "{o4}");
        let r4: Vec<&str> = o4["data"]["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .filter_map(|x| x["recipient"].as_str())
            .collect();
        assert_eq!(r4, ["4"], "{o4}");
        let (status, _) = call(&d, Method::GET, "/occurrences/nope", &d.token, None).await;
        assert_eq!(status, 404);

        // 422 names each bad key; 403 without scripts.view.
        let (status, v) =
            explain(&d, &d.token, json!({"camera_id": 0, "occurred_at": "yesterday"})).await;
        assert_eq!(status, 422, "{v}");
        for key in ["event_id", "camera_id", "occurred_at"] {
            assert!(v["errors"][key].is_array(), "{key}: {v}");
        }
        let (status, v) = explain(&d, &d.token, json!({"event_id": 999, "camera_id": 1})).await;
        assert_eq!(status, 422);
        assert!(v["errors"]["event_id"].is_array(), "{v}");
        d.cli(&[
            "users",
            "add",
            "--login",
            "viewer-less",
            "--name",
            "x",
            "--parent",
            "1",
            "--id",
            "9",
            "--permission",
            "cameras.view",
        ]);
        let token_9 = d.cli(&["tokens", "create", "--user", "9"]);
        let (status, v) = explain(&d, &token_9, json!({"event_id": FACE, "camera_id": 1})).await;
        assert_eq!((status, v["message"].as_str()), (403, Some("This action is unauthorized.")));
        let (status, _) = call(&d, Method::GET, "/occurrences/occ-1", &token_9, None).await;
        assert_eq!(status, 403);
    }
}
