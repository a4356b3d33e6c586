//! The API the status page stands on, against the real daemon: list filters on
//! `GET /scripts`, `GET /scripts/{id}/week` (DST days, another account's script, bad
//! dates), and single-use stream tickets for a browser's `EventSource`.

use std::time::Duration;

use crate::support::TestClient;
use crate::support::daemon::{Daemon, DaemonOptions, call, script};
use reqwest::Method;
use serde_json::{Value, json};

const SIDEBAR: i64 = 2;
const SOUND: i64 = 4;
const FACE: i64 = 1;
const PLATE: i64 = 3;

fn ids(v: &Value) -> Vec<i64> {
    v["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["id"].as_i64()).collect())
        .unwrap_or_default()
}

crate::on_both_daemons! {
    async fn list_filters_narrow_the_list_and_its_count(d) {
        let all_day = json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]});
        let mut s = script("Front door", SIDEBAR, FACE, &[1], all_day.clone());
        s["cameras"] = json!([7, 8]);
        let door = d.create_script(&s).await["id"].as_i64().expect("id");
        let mut s = script("Gate plates", SOUND, PLATE, &[1], all_day.clone());
        s["status"] = json!("disabled");
        s["cameras"] = json!([9]);
        let gate = d.create_script(&s).await["id"].as_i64().expect("id");
        let any_camera = d.create_script(&script("Lobby", SIDEBAR, FACE, &[1], all_day.clone())).await
            ["id"]
            .as_i64()
            .expect("id");
        d.create_script(&script("Front of B", SIDEBAR, FACE, &[4], all_day)).await;

        let list = |q: &str| {
            let d = &d;
            let q = q.to_owned();
            async move { call(d, Method::GET, &format!("/scripts?{q}"), &d.token, None).await }
        };
        let (_, v) = list("status=disabled").await;
        assert_eq!((ids(&v), v["meta"]["total"].clone()), (vec![gate], json!(1)), "{v}");
        let (_, v) = list("status=active").await;
        assert_eq!(ids(&v), [door, any_camera]);
        let (_, v) = list(&format!("event_id={PLATE}")).await;
        assert_eq!(ids(&v), [gate]);
        let (_, v) = list(&format!("reaction_id={SIDEBAR}")).await;
        assert_eq!(ids(&v), [door, any_camera]);
        let (_, v) = list("camera_id=8").await;
        assert_eq!(
            ids(&v),
            [door, any_camera],
            "a script without a camera filter reacts on every camera"
        );
        let (_, v) = list("camera_id=9").await;
        assert_eq!(ids(&v), [gate, any_camera]);
        let (_, v) = list("q=FRONT").await;
        assert_eq!(
            (ids(&v), v["meta"]["total"].clone()),
            (vec![door], json!(1)),
            "only the caller's: {v}"
        );
        let (_, v) = list("q=front&per_page=1&page=1&status=active&camera_id=7").await;
        assert_eq!((ids(&v), v["meta"]["last_page"].clone()), (vec![door], json!(1)));

        let (status, v) = list("status=maybe&event_id=x&camera_id=0&reaction_id=-1").await;
        assert_eq!(status, 422, "{v}");
        for key in ["status", "event_id", "camera_id", "reaction_id"] {
            assert!(v["errors"][key].is_array(), "{key}: {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_week_is_the_engines_and_only_for_the_owner() {
    let d = Daemon::start(DaemonOptions {
        env: vec![("SCRIPTD__TIMEZONE".into(), "Europe/Berlin".into())],
        ..DaemonOptions::default()
    })
    .await;
    let night = json!({"days": [{"type": "same_every_day", "from": "01:00", "to": "04:00",
                                 "breaks": [{"from": "02:30", "to": "03:30"}]}]});
    let id = d.create_script(&script("night", SIDEBAR, FACE, &[1], night.clone())).await["id"]
        .as_i64()
        .expect("id");
    let theirs =
        d.create_script(&script("B", SIDEBAR, FACE, &[4], night)).await["id"].as_i64().expect("id");

    // The autumn change: Sunday 25 October 2026 has 25 hours in Berlin.
    let (status, v) =
        call(&d, Method::GET, &format!("/scripts/{id}/week?start=2026-10-19"), &d.token, None)
            .await;
    assert_eq!(status, 200, "{v}");
    let w = &v["data"];
    assert_eq!(w["timezone"], "Europe/Berlin");
    assert_eq!(w["start"], "2026-10-19");
    let days = w["days"].as_array().expect("days");
    assert_eq!(days.len(), 7);
    let hours: Vec<f64> = days.iter().filter_map(|d| d["hours"].as_f64()).collect();
    assert_eq!(hours, [24.0, 24.0, 24.0, 24.0, 24.0, 24.0, 25.0]);
    let monday: Vec<(bool, String, String)> = days[0]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            (
                s["active"] == true,
                s["reason"].as_str().unwrap_or_default().to_owned(),
                s["from"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        monday,
        [
            (false, "outside days".into(), "2026-10-19T00:00:00+02:00".into()),
            (true, "in window timetable.days.0".into(), "2026-10-19T01:00:00+02:00".into()),
            (
                false,
                "in break timetable.days.0.breaks.0".into(),
                "2026-10-19T02:30:00+02:00".into()
            ),
            (true, "in window timetable.days.0".into(), "2026-10-19T03:30:00+02:00".into()),
            (false, "outside days".into(), "2026-10-19T04:00:00+02:00".into()),
        ]
    );
    // On the long night (02:00–03:00 twice) the window 01:00–04:00 lasts 4 real hours and
    // the break 02:30–03:30 two (from the first 02:30 to 03:30), as the engine decides.
    let active: i64 = days[6]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .filter(|s| s["active"] == true)
        .map(|s| s["to_second"].as_i64().unwrap_or(0) - s["from_second"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(active, 2 * 3600, "{}", days[6]);

    let (status, _) =
        call(&d, Method::GET, &format!("/scripts/{theirs}/week"), &d.token, None).await;
    assert_eq!(status, 404, "another account's script");
    let (status, v) =
        call(&d, Method::GET, &format!("/scripts/{id}/week?start=19.10.2026"), &d.token, None)
            .await;
    assert_eq!(status, 422);
    assert!(v["errors"]["start"].is_array(), "{v}");
    let (status, v) = call(&d, Method::GET, &format!("/scripts/{id}/week"), &d.token, None).await;
    assert_eq!(status, 200, "{v}");
    let start =
        chrono::NaiveDate::parse_from_str(v["data"]["start"].as_str().unwrap_or(""), "%Y-%m-%d")
            .expect("a date");
    assert_eq!(
        chrono::Datelike::weekday(&start),
        chrono::Weekday::Mon,
        "the current week starts on Monday"
    );
}

crate::on_both_daemons! {
    async fn a_stream_ticket_opens_one_stream_of_its_users_pushes(d) {
        let all_day = json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]});
        d.create_script(&script("door", SIDEBAR, FACE, &[1], all_day)).await;
        let (status, t) =
            call(&d, Method::POST, "/reactions/stream/ticket", &d.token, Some(&json!({}))).await;
        assert_eq!(status, 201, "{t}");
        let ticket = t["ticket"].as_str().expect("ticket").to_owned();
        assert_eq!(t["expires_in"], 30);
        assert!(!ticket.contains(&d.token) && ticket.len() >= 32);

        // No Authorization header, as from an EventSource.
        let url = d.url(&format!("/reactions/stream?ticket={ticket}"));
        let mut r = reqwest::get(&url).await.expect("open the stream");
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let vms = TestClient::connect(d.mqtt_port, "vms-ticket").await;
        vms.publish(
            "vms/analytics/events/1",
            json!({"id": "t-1", "event_id": FACE, "camera_id": 1}).to_string().into_bytes(),
        )
        .await;
        let mut got = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while !got.contains("t-1") {
                match r.chunk().await {
                    Ok(Some(c)) => got.push_str(&String::from_utf8_lossy(&c)),
                    _ => break,
                }
            }
        })
        .await;
        assert!(read.is_ok() && got.contains("event: reaction") && got.contains("\"t-1\""), "{got}");

        // Used once; a made-up one and a ticket on another route are refused.
        assert_eq!(reqwest::get(&url).await.expect("again").status(), 401);
        assert_eq!(
            reqwest::get(d.url("/reactions/stream?ticket=00ff")).await.expect("bogus").status(),
            401
        );
        let (_, t2) =
            call(&d, Method::POST, "/reactions/stream/ticket", &d.token, Some(&json!({}))).await;
        let other = d.url(&format!("/scripts?ticket={}", t2["ticket"].as_str().unwrap_or("")));
        assert_eq!(reqwest::get(&other).await.expect("other route").status(), 401);
        // Without a token no ticket is given.
        let r =
            reqwest::Client::new().post(d.url("/reactions/stream/ticket")).send().await.expect("post");
        assert_eq!(r.status(), 401);
    }
}
