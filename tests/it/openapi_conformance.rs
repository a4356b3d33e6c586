//! The live daemon's answers match `docs/openapi.yaml`, checked by a maintained OpenAPI 3.1
//! validator (PyPI `openapi-core`, run by `tests/openapi/validate.py`).
//!
//! The test starts the real daemon, sends a request to every route — success and error
//! shapes (401, 404, 413, 422) — records each answer, and hands the recording to the
//! validator. A missing validator is a failure that names the install command, never a skip.
//! To cover a new route, add a line to `cases` below (and describe the route in the spec).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::TestClient;
use crate::support::daemon::{Daemon, DaemonOptions};
use reqwest::Method;
use serde_json::{Value, json};

/// The Python that has `openapi-core`: `SCRIPTD_OPENAPI_PYTHON`, else the virtual environment
/// `scripts/test` creates (`target/openapi-venv`, with Debian's `python3-venv`).
fn validator_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("SCRIPTD_OPENAPI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/openapi-venv/bin/python"));
    let has_core = Command::new(&python)
        .args(["-c", "import openapi_core"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_core {
        // Without python3-venv the environment cannot be made: name that package first.
        support::tools::require("ensurepip");
        panic!(
            "the OpenAPI validator is missing: {} cannot import openapi_core.\n\
             `scripts/test` creates it (target/openapi-venv, PyPI openapi-core 0.19.5), or set \
             SCRIPTD_OPENAPI_PYTHON to a python that has openapi-core",
            python.display()
        );
    }
    python
}

/// One request of the recording.
struct Case {
    method: Method,
    /// Path under the server, with an optional `?query`.
    path: String,
    body: Option<Vec<u8>>,
    token: bool,
    content_type: &'static str,
}

fn case(method: Method, path: &str, body: Option<Value>) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body: body.map(|b| b.to_string().into_bytes()),
        token: true,
        content_type: "application/json",
    }
}

/// A script body; `event_id` 1 is the one the test publishes, so only the sidebar script
/// (reaction 2) uses it: the Telegram script must never send anything. The Telegram script
/// has the documented timetable (with a break); the sidebar script is active all day, so
/// its delivery does not depend on the hour the test runs.
fn script_body(reaction_id: i64, event_id: i64, extra: Value) -> Value {
    let timetable = if event_id == 1 {
        support::daemon::all_day()
    } else {
        json!({"days": [{"type": "same_every_day", "from": "00:00:00+05:00",
            "to": "23:59:00+05:00", "breaks": [{"from": "16:00:00+05:00", "to": "17:00:00+05:00"}]}]})
    };
    json!({
        "reaction_id": reaction_id, "event_id": event_id, "title": "script", "status": "active",
        "cameras": null, "users": [1], "timetable": timetable, "extra": extra
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_openapi_file_says() {
    let python = validator_python();
    let daemon = Daemon::start(DaemonOptions::default()).await;

    // A script (the documented POST body) and one delivery, so lists are not empty.
    let seed = script_body(1, 4, json!({"chat_id": "chat_id", "bot_token": "bot_token"}));
    let sidebar = daemon.create_script(&script_body(2, 1, json!({}))).await;
    let sid = sidebar["id"].as_i64().expect("script id");
    let mqtt = TestClient::connect(daemon.mqtt_port, "openapi-publisher").await;
    mqtt.publish(
        "vms/analytics/events/17",
        json!({"id": "occ-openapi", "event_id": 1, "camera_id": 17, "data": {"plate": "A123BC"}})
            .to_string(),
    )
    .await;
    support::within(20, "the delivery is recorded", async {
        loop {
            let d = daemon.get(&format!("/scripts/{sid}/deliveries")).await;
            if d["data"].as_array().is_some_and(|a| !a.is_empty()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    let invalid = json!({"title": "", "users": [], "timetable": {"days": []}});
    let mut cases = vec![
        case(Method::POST, "/api/v1/scripts", Some(seed.clone())),
        case(Method::GET, "/api/v1/reactions/stream", None),
        Case { token: false, ..case(Method::GET, "/api/v1/reactions/stream", None) },
        case(Method::POST, "/api/v1/scripts", Some(invalid.clone())),
        Case { body: Some(b"[1]".to_vec()), ..case(Method::POST, "/api/v1/scripts", None) },
        Case {
            body: Some(vec![b'a'; 1024 * 1024 + 1]),
            ..case(Method::POST, "/api/v1/scripts", None)
        },
        Case { token: false, ..case(Method::POST, "/api/v1/scripts", Some(seed.clone())) },
        case(Method::GET, "/api/v1/scripts", None),
        case(Method::GET, "/api/v1/scripts?page=1&per_page=1", None),
        case(Method::GET, "/api/v1/scripts?page=0", None),
        Case { token: false, ..case(Method::GET, "/api/v1/scripts", None) },
        case(Method::GET, &format!("/api/v1/scripts/{sid}"), None),
        case(Method::GET, "/api/v1/scripts/999", None),
        case(Method::PUT, &format!("/api/v1/scripts/{sid}"), Some(script_body(2, 1, json!({})))),
        case(Method::PUT, &format!("/api/v1/scripts/{sid}"), Some(invalid)),
        case(Method::PUT, "/api/v1/scripts/999", Some(seed.clone())),
        case(Method::PATCH, &format!("/api/v1/scripts/{sid}"), Some(json!({"status": "disabled"}))),
        case(Method::PATCH, &format!("/api/v1/scripts/{sid}"), Some(json!({"users": []}))),
        case(Method::PATCH, "/api/v1/scripts/999", Some(json!({"status": "active"}))),
        case(Method::GET, &format!("/api/v1/scripts/{sid}/deliveries"), None),
        case(Method::GET, &format!("/api/v1/scripts/{sid}/deliveries?limit=1"), None),
        case(Method::GET, "/api/v1/scripts/999/deliveries", None),
        case(Method::POST, &format!("/api/v1/scripts/{sid}/snoozes"), Some(json!({"minutes": 30}))),
        case(Method::POST, &format!("/api/v1/scripts/{sid}/snoozes"), Some(json!({"scope": "x"}))),
        case(Method::GET, &format!("/api/v1/scripts/{sid}/snoozes"), None),
        case(Method::GET, "/api/v1/scripts/999/snoozes", None),
        case(Method::DELETE, &format!("/api/v1/scripts/{sid}/snoozes/999"), None),
        case(Method::GET, "/api/v1/scripts?status=active&camera_id=17&q=scr", None),
        case(Method::GET, "/api/v1/scripts?status=maybe", None),
        case(Method::GET, &format!("/api/v1/scripts/{sid}/week?start=2026-10-19"), None),
        case(Method::GET, &format!("/api/v1/scripts/{sid}/week?start=nope"), None),
        case(Method::GET, "/api/v1/scripts/999/week", None),
        case(Method::POST, "/api/v1/reactions/stream/ticket", Some(json!({}))),
        case(Method::POST, "/api/v1/explain", Some(json!({"event_id": 1, "camera_id": 17}))),
        case(Method::POST, "/api/v1/explain", Some(json!({"event": "nope", "camera_id": 0}))),
        case(Method::GET, "/api/v1/occurrences/occ-openapi", None),
        case(Method::GET, "/api/v1/occurrences/occ-unknown", None),
        case(Method::GET, "/api/v1/me", None),
        Case { token: false, ..case(Method::GET, "/api/v1/me", None) },
        case(Method::GET, "/api/v1/events", None),
        Case { token: false, ..case(Method::GET, "/api/v1/events", None) },
        case(Method::GET, "/api/v1/reactions", None),
        Case { token: false, ..case(Method::GET, "/api/v1/reactions", None) },
        case(Method::GET, "/healthz", None),
        case(Method::GET, "/livez", None),
        case(Method::GET, "/metrics", None),
        case(Method::POST, "/api/v1/calendars", Some(json!({"name": "Holidays", "dates": [{"from": "2027-01-01", "title": "New Year"}]}))),
        case(Method::POST, "/api/v1/calendars", Some(json!({"name": "", "timezone": "Nowhere"}))),
        case(Method::GET, "/api/v1/calendars", None),
        case(Method::GET, "/api/v1/calendars/1", None),
        case(Method::GET, "/api/v1/calendars/999", None),
        case(Method::PUT, "/api/v1/calendars/1", Some(json!({"name": "Public holidays"}))),
        case(Method::PATCH, "/api/v1/calendars/1", Some(json!({"dates": [{"from": "2027-01-01", "to": "2027-01-08"}]}))),
        case(Method::PATCH, "/api/v1/calendars/1", Some(json!({"dates": [{"from": "x"}]}))),
        Case {
            content_type: "text/calendar",
            body: Some(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART;VALUE=DATE:20270501\r\nSUMMARY:Labour Day\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n".to_vec()),
            ..case(Method::POST, "/api/v1/calendars/1/import", None)
        },
        Case {
            content_type: "text/calendar",
            body: Some(b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:t\r\nDTSTART:20270501T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n".to_vec()),
            ..case(Method::POST, "/api/v1/calendars/1/import", None)
        },
        Case {
            content_type: "text/calendar",
            body: Some(vec![b'a'; 1024 * 1024 + 1]),
            ..case(Method::POST, "/api/v1/calendars/1/import", None)
        },
        case(Method::POST, "/api/v1/scripts", Some(json!({
            "reaction_id": 2, "event_id": 3, "title": "holidays", "status": "active", "cameras": null, "users": [1],
            "timetable": {"days": [{"type": "weekdays", "from": "08:00", "to": "20:00"}],
                          "holidays": {"calendars": [1], "windows": [{"from": "10:00", "to": "16:00"}]}}}))),
        case(Method::DELETE, "/api/v1/calendars/1", None),
        case(Method::DELETE, "/api/v1/calendars/999", None),
        case(Method::DELETE, "/api/v1/scripts/999", None),
        case(Method::DELETE, &format!("/api/v1/scripts/{sid}"), None),
        Case { token: false, ..case(Method::DELETE, "/api/v1/scripts/1", None) },
    ];

    let client = reqwest::Client::new();
    let mut recorded = Vec::new();
    let mut statuses = Vec::new();
    for c in cases.drain(..) {
        let url = format!("http://127.0.0.1:{}{}", daemon.api_port, c.path);
        let mut req = client.request(c.method.clone(), url).header("X-Client", "web");
        if c.token {
            req = req.bearer_auth(&daemon.token);
        }
        if let Some(body) = c.body {
            req = req.header("Content-Type", c.content_type).body(body);
        }
        let resp = req.send().await.expect("request to the daemon");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // The stream never ends: publish an occurrence and keep its first event.
        let body = if content_type.starts_with("text/event-stream") {
            mqtt.publish(
                "vms/analytics/events/17",
                json!({"id": "occ-stream", "event_id": 1, "camera_id": 17}).to_string(),
            )
            .await;
            let mut resp = resp;
            let chunk = support::within(20, "the first stream event", resp.chunk()).await;
            let text =
                String::from_utf8_lossy(&chunk.expect("stream").expect("an event")).into_owned();
            assert!(text.contains("event: reaction"), "stream: {text}");
            text
        } else {
            resp.text().await.expect("body")
        };
        let (path, query) = c.path.split_once('?').unwrap_or((&c.path, ""));
        statuses.push(status);
        recorded.push(json!({
            "method": c.method.as_str(), "path": path, "query": query,
            "status": status, "content_type": content_type, "body": body,
        }));
    }
    // Every documented status shape was produced at least once.
    for code in [200, 201, 204, 401, 404, 413, 422] {
        assert!(statuses.contains(&code), "no answer with status {code}: {statuses:?}");
    }

    let file = daemon.dir.path().join("exchanges.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&recorded).expect("json")).expect("write");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .arg(root.join("tests/openapi/validate.py"))
        .arg(root.join("docs/openapi.yaml"))
        .arg(&file)
        .output()
        .expect("run the validator");
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "answers that do not match docs/openapi.yaml:\n{report}");
    assert!(report.contains(&format!("{n} of {n} answers match", n = recorded.len())), "{report}");
}
