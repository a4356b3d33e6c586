//! Holiday calendars against the real daemon: a public-holiday `.ics` imported into a
//! calendar, attached to a script with holiday hours, seen in the week view and named by
//! explain; a calendar change taking effect at once; the 409 on deleting a calendar in use;
//! import refusals; tenancy and permissions; the `calendars` commands.
//!
//! The daemon's users (see `support::daemon`): account A is 1 (root), 2 and 3; account B is 4.

use crate::support::daemon::{Daemon, DaemonOptions, call, script};
use reqwest::Method;
use serde_json::{Value, json};

const SIDEBAR: i64 = 2;
const FACE: i64 = 1;

/// A feed in the shape public-holiday calendars publish: CRLF, folded lines, `X-`
/// properties, `VALUE=DATE`, two events on one day and a yearly rule.
fn feed() -> String {
    [
        "BEGIN:VCALENDAR",
        "PRODID:-//Example//Holidays//EN",
        "VERSION:2.0",
        "METHOD:PUBLISH",
        "X-WR-CALNAME:Public holidays",
        "BEGIN:VEVENT",
        "DTSTART;VALUE=DATE:20270101",
        "DTEND;VALUE=DATE:20270102",
        "UID:newyear@example.org",
        "SUMMARY:New",
        "  Year",
        "X-MICROSOFT-CDO-ALLDAYEVENT:TRUE",
        "END:VEVENT",
        "BEGIN:VEVENT",
        "DTSTART;VALUE=DATE:20270101",
        "UID:observance@example.org",
        "SUMMARY:Observance",
        "END:VEVENT",
        "BEGIN:VEVENT",
        "DTSTART;VALUE=DATE:20250501",
        "DTEND;VALUE=DATE:20250502",
        "RRULE:FREQ=YEARLY",
        "UID:mayday@example.org",
        "SUMMARY:Labour Day",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    .iter()
    .map(|l| format!("{l}\r\n"))
    .collect()
}

/// POST `body` as `content_type` with `token`: status and JSON answer.
async fn post_raw(
    d: &Daemon,
    path: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(d.url(path))
        .bearer_auth(token)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The status line the daemon answers to `POST path` with a `len`-byte `text/calendar`
/// body, written over a raw connection (the daemon may answer and close before reading it
/// all, which an HTTP client reports as a broken pipe instead of the answer).
async fn raw_status(d: &Daemon, path: &str, token: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{}", d.api_port);
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /api/v1{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/calendar\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write the head");
    let chunk = vec![b'A'; 64 * 1024];
    for _ in 0..len / chunk.len() {
        if stream.write_all(&chunk).await.is_err() {
            break; // answered and closed before the whole body was read
        }
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).lines().next().unwrap_or("").to_owned()
}

async fn explain_at(d: &Daemon, at: &str) -> Value {
    let body = json!({"event_id": FACE, "camera_id": 5, "occurred_at": at});
    let (status, v) = call(d, Method::POST, "/explain", &d.token, Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    v["data"][0].clone()
}

crate::on_both_daemons! {
    async fn an_imported_holiday_shows_in_the_week_and_explain_names_it(d) {
        let t = d.token.clone();
        let (status, cal) = call(
            &d,
            Method::POST,
            "/calendars",
            &t,
            Some(&json!({"name": "Public holidays", "timezone": "UTC"})),
        )
        .await;
        assert_eq!(status, 201, "{cal}");
        let cid = cal["id"].as_i64().expect("id");
        assert_eq!((cal["owner_id"].as_i64(), cal["dates"].clone()), (Some(1), json!([])));

        let (status, imported) =
            post_raw(&d, &format!("/calendars/{cid}/import"), &t, "text/calendar", feed().into_bytes())
                .await;
        assert_eq!(status, 200, "{imported}");
        // New Year, the observance, and Labour Day from the year before the import to five after.
        assert_eq!(imported["added"], 2 + 7, "{imported}");
        assert_eq!(
            imported["dates"][0],
            json!({"from": "2027-01-01", "to": "2027-01-01", "title": "New Year"})
        );
        // The same file again adds nothing.
        let (_, again) =
            post_raw(&d, &format!("/calendars/{cid}/import"), &t, "text/calendar", feed().into_bytes())
                .await;
        assert_eq!(again["added"], 0, "{again}");

        let timetable = json!({
            "days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}],
            "holidays": {"calendars": [cid], "windows": [{"from": "10:00", "to": "16:00"}]}
        });
        let s = d.create_script(&script("office", SIDEBAR, FACE, &[1], timetable)).await;
        let sid = s["id"].as_i64().expect("id");
        assert_eq!(s["timetable"]["holidays"]["calendars"], json!([cid]));

        // The week grid: 1 January 2027 (a Friday) is a holiday, named; the Thursday is not.
        let week = d.get(&format!("/scripts/{sid}/week?start=2026-12-28")).await;
        let days = week["data"]["days"].as_array().expect("days").clone();
        assert_eq!(days[3]["holiday"], Value::Null);
        let ny = &days[4];
        assert_eq!(ny["date"], "2027-01-01");
        assert_eq!(ny["holiday"]["title"], "New Year");
        assert_eq!(ny["holiday"]["calendar_id"], cid);
        assert_eq!(ny["holiday"]["reason"], format!("holiday calendar {cid} \"New Year\""));
        let segs: Vec<(bool, String)> = ny["segments"]
            .as_array()
            .expect("segments")
            .iter()
            .map(|s| {
                (s["active"].as_bool().unwrap_or(false), s["reason"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        let holiday = format!("holiday calendar {cid} \"New Year\"");
        let window = "in holiday window timetable.holidays.windows.0".to_owned();
        assert_eq!(
            segs,
            vec![(false, holiday.clone()), (true, window.clone()), (false, holiday.clone())]
        );

        // Explain on the holiday names it.
        let v = explain_at(&d, "2027-01-01T08:00:00Z").await;
        assert_eq!(
            (v["fires"].as_bool(), v["reason"].as_str()),
            (Some(false), Some(holiday.as_str())),
            "{v}"
        );
        assert_eq!(v["holiday"], holiday.as_str());
        let v = explain_at(&d, "2027-01-01T12:00:00Z").await;
        assert_eq!(
            (v["fires"].as_bool(), v["reason"].as_str()),
            (Some(true), Some(window.as_str())),
            "{v}"
        );
        let v = explain_at(&d, "2027-01-04T08:00:00Z").await;
        assert_eq!(v["fires"], true, "{v}");
        assert!(v.get("holiday").is_none(), "{v}");

        // A calendar change takes effect on the next occurrence: without dates, no holiday.
        let (status, _) =
            call(&d, Method::PATCH, &format!("/calendars/{cid}"), &t, Some(&json!({"dates": []})))
                .await;
        assert_eq!(status, 200);
        let v = explain_at(&d, "2027-01-01T08:00:00Z").await;
        assert_eq!(
            (v["fires"].as_bool(), v["reason"].as_str()),
            (Some(true), Some("active in window timetable.days.0")),
            "{v}"
        );

        // In use: 409 naming the script; after the script is gone, 204.
        let (status, v) = call(&d, Method::DELETE, &format!("/calendars/{cid}"), &t, None).await;
        assert_eq!(status, 409, "{v}");
        assert_eq!(v["scripts"], json!([sid]));
        assert!(v["message"].as_str().unwrap_or("").contains(&sid.to_string()), "{v}");
        let (status, _) = call(&d, Method::DELETE, &format!("/scripts/{sid}"), &t, None).await;
        assert_eq!(status, 204);
        let (status, _) = call(&d, Method::DELETE, &format!("/calendars/{cid}"), &t, None).await;
        assert_eq!(status, 204);
        let (status, v) = call(&d, Method::GET, &format!("/calendars/{cid}"), &t, None).await;
        assert_eq!((status, v["message"].as_str()), (404, Some("Calendar not found.")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_files_tenancy_and_permissions() {
    let d = Daemon::start(DaemonOptions::default()).await;
    let (t1, t4) = (d.token.clone(), d.token_4.clone());
    let (status, v) = call(
        &d,
        Method::POST,
        "/calendars",
        &t1,
        Some(&json!({
            "name": "", "timezone": "Mars/Olympus", "dates": [{"from": "2026-02-30"}]
        })),
    )
    .await;
    assert_eq!(status, 422);
    for key in ["name", "timezone", "dates.0.from"] {
        assert!(v["errors"][key].is_array(), "{key}: {v}");
    }
    let (status, cal) =
        call(&d, Method::POST, "/calendars", &t1, Some(&json!({"name": "A's"}))).await;
    assert_eq!(status, 201);
    assert_eq!(cal["timezone"], "UTC", "the timezone setting by default");
    let cid = cal["id"].as_i64().expect("id");
    let import = format!("/calendars/{cid}/import");

    // Import refusals: a timed event and a weekly rule name their UID; nothing is added.
    let timed = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:ok\r\nDTSTART;VALUE=DATE:20270101\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:standup@x\r\nDTSTART:20270104T090000Z\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:weekly@x\r\nDTSTART;VALUE=DATE:20270105\r\nRRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let (status, v) = post_raw(&d, &import, &t1, "text/calendar", timed.into()).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["errors"]["events.1"][0].as_str().unwrap_or("").contains("UID standup@x"), "{v}");
    assert!(v["errors"]["events.2"][0].as_str().unwrap_or("").contains("UID weekly@x"), "{v}");
    assert_eq!(d.get(&format!("/calendars/{cid}")).await["dates"], json!([]));
    let (status, v) = post_raw(&d, &import, &t1, "application/json", b"{}".to_vec()).await;
    assert_eq!((status, v["errors"]["body"].is_array()), (422, true), "{v}");
    // Too many events (checked before parsing) and a body over the limit.
    let many = format!(
        "BEGIN:VCALENDAR\r\n{}END:VCALENDAR\r\n",
        "BEGIN:VEVENT\r\nEND:VEVENT\r\n".repeat(6000)
    );
    let (status, v) = post_raw(&d, &import, &t1, "text/calendar", many.into()).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["errors"]["file"][0].as_str().unwrap_or("").contains("6000 events"), "{v}");
    assert_eq!(
        raw_status(&d, &import, &t1, 5 * 1024 * 1024).await,
        "HTTP/1.1 413 Payload Too Large"
    );

    // Account B does not see A's calendar, and cannot list it in a script.
    for (m, path) in
        [(Method::GET, format!("/calendars/{cid}")), (Method::DELETE, format!("/calendars/{cid}"))]
    {
        let (status, _) = call(&d, m, &path, &t4, None).await;
        assert_eq!(status, 404);
    }
    let (_, list) = call(&d, Method::GET, "/calendars", &t4, None).await;
    assert_eq!(list["data"], json!([]));
    let tt = json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}],
        "holidays": {"calendars": [cid]}});
    let (status, v) = call(
        &d,
        Method::POST,
        "/scripts",
        &t4,
        Some(&script("b", SIDEBAR, FACE, &[4], tt.clone())),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert!(v["errors"]["timetable.holidays.calendars.0"].is_array(), "{v}");
    // A sub-user of A (user 2) may not list its parent's calendar either; A may.
    let t2 = d.cli(&["tokens", "create", "--user", "2"]);
    let (status, _) = call(
        &d,
        Method::POST,
        "/scripts",
        &t2,
        Some(&script("s2", SIDEBAR, FACE, &[2], tt.clone())),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) =
        call(&d, Method::POST, "/scripts", &t1, Some(&script("s1", SIDEBAR, FACE, &[1], tt))).await;
    assert_eq!(status, 201);

    // Permissions: a viewer reads, but cannot change.
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
    let tv = d.cli(&["tokens", "create", "--user", viewer.trim()]);
    let (status, _) = call(&d, Method::GET, "/calendars", &tv, None).await;
    assert_eq!(status, 200);
    let (status, v) = call(&d, Method::POST, "/calendars", &tv, Some(&json!({"name": "x"}))).await;
    assert_eq!((status, v["message"].as_str()), (403, Some("This action is unauthorized.")));
    let (status, _) =
        call(&d, Method::PUT, &format!("/calendars/{cid}"), &tv, Some(&json!({"name": "x"}))).await;
    assert_eq!(status, 403);

    // The command line: import a file, list.
    let file = d.dir.path().join("holidays.ics");
    std::fs::write(&file, feed()).expect("write the file");
    let out = d.cli(&[
        "calendars",
        "import",
        "--calendar",
        &cid.to_string(),
        file.to_str().expect("path"),
    ]);
    assert_eq!(out.trim(), format!("added 9 dates to calendar {cid}"));
    let out = d.cli(&["calendars", "list"]);
    assert!(out.contains(&format!("{cid}\towner 1\tUTC\t9 dates\tA's")), "{out}");
}
