use super::*;
use chrono::TimeZone;

const TOPIC: &str = "vms/analytics/events/17";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 11, 31, 0).unwrap()
}

fn ok(payload: &str) -> Occurrence {
    decode(TOPIC, payload.as_bytes(), now()).expect("payload should decode")
}

fn reason(payload: &[u8]) -> Reason {
    decode(TOPIC, payload, now()).expect_err("payload should be rejected").reason
}

#[test]
fn full_contract_example_decodes() {
    let o = ok(r#"{
        "id": "7f1d2c9e-1",
        "event_id": 1,
        "camera_id": 17,
        "occurred_at": "2026-11-27T16:30:05+05:00",
        "data": {"plate": "A123BC"},
        "snapshot_url": "https://vms.local/snapshots/abc.jpg"
    }"#);
    assert_eq!(o.id, "7f1d2c9e-1");
    assert_eq!(o.event, EventRef::Id(1));
    assert_eq!(o.camera_id, 17);
    assert_eq!(o.occurred_at_rfc3339(), "2026-11-27T16:30:05+05:00");
    assert_eq!(o.occurred_at_utc(), Utc.with_ymd_and_hms(2026, 11, 27, 11, 30, 5).unwrap());
    assert_eq!(o.data, Some(serde_json::json!({"plate": "A123BC"})));
    assert_eq!(o.snapshot_url.as_deref(), Some("https://vms.local/snapshots/abc.jpg"));
}

#[test]
fn event_name_is_accepted() {
    let o = ok(r#"{"event":"line_crossing","camera_id":3}"#);
    assert_eq!(o.event, EventRef::Name("line_crossing".into()));
}

#[test]
fn event_id_wins_over_event_name() {
    let o = ok(r#"{"event_id":4,"event":"line_crossing","camera_id":3}"#);
    assert_eq!(o.event, EventRef::Id(4));
}

#[test]
fn missing_occurred_at_means_now() {
    let o = ok(r#"{"event_id":1,"camera_id":3}"#);
    assert_eq!(o.occurred_at_utc(), now());
}

#[test]
fn missing_id_is_derived_from_the_bytes() {
    let p = r#"{"event_id":1,"camera_id":3}"#;
    let a = ok(p);
    assert!(a.id.starts_with(DERIVED_ID_PREFIX));
    assert_eq!(a.id.len(), DERIVED_ID_PREFIX.len() + 64);
    assert_eq!(a.id, ok(p).id, "same bytes, same id");
    assert_ne!(a.id, ok(r#"{"event_id":1,"camera_id":4}"#).id);
}

#[test]
fn null_counts_as_missing() {
    let o = ok(
        r#"{"id":null,"event_id":1,"camera_id":3,"occurred_at":null,"data":null,"snapshot_url":null}"#,
    );
    assert!(o.id.starts_with(DERIVED_ID_PREFIX));
    assert_eq!(o.data, None);
    assert_eq!(o.snapshot_url, None);
}

#[test]
fn numeric_strings_are_accepted_for_ids() {
    let o = ok(r#"{"event_id":"2","camera_id":"17"}"#);
    assert_eq!(o.event, EventRef::Id(2));
    assert_eq!(o.camera_id, 17);
}

#[test]
fn integer_occurrence_id_is_kept_as_text() {
    assert_eq!(ok(r#"{"id":12345,"event_id":1,"camera_id":3}"#).id, "12345");
}

#[test]
fn unknown_keys_are_ignored() {
    let o = ok(r#"{"event_id":1,"camera_id":3,"extra":{"deep":[1,2,{"x":null}]},"v":2}"#);
    assert_eq!(o.camera_id, 3);
}

#[test]
fn utc_z_and_fractions_are_kept() {
    let o = ok(r#"{"event_id":1,"camera_id":3,"occurred_at":"2026-11-27T11:30:05.250Z"}"#);
    assert_eq!(o.occurred_at_rfc3339(), "2026-11-27T11:30:05.250+00:00");
}

#[test]
fn not_utf8() {
    assert_eq!(reason(b"{\"event_id\":1,\xff}"), Reason::NotUtf8);
}

#[test]
fn not_json() {
    assert_eq!(reason(b"{\"event_id\":1,"), Reason::NotJson);
    assert_eq!(reason(b"hello"), Reason::NotJson);
    assert_eq!(reason(b""), Reason::NotJson);
}

#[test]
fn duplicate_keys_are_not_json() {
    assert_eq!(reason(br#"{"camera_id":1,"camera_id":2,"event_id":1}"#), Reason::NotJson);
}

#[test]
fn not_object() {
    assert_eq!(reason(b"[1,2]"), Reason::NotObject);
    assert_eq!(reason(b"42"), Reason::NotObject);
    assert_eq!(reason(b"\"x\""), Reason::NotObject);
    assert_eq!(reason(b"null"), Reason::NotObject);
}

#[test]
fn missing_event() {
    assert_eq!(reason(br#"{"camera_id":1}"#), Reason::MissingEvent);
}

#[test]
fn bad_event_id() {
    for p in [
        r#"{"event_id":0,"camera_id":1}"#,
        r#"{"event_id":-3,"camera_id":1}"#,
        r#"{"event_id":1.5,"camera_id":1}"#,
        r#"{"event_id":"x","camera_id":1}"#,
        r#"{"event_id":true,"camera_id":1}"#,
        r#"{"event_id":18446744073709551615,"camera_id":1}"#,
    ] {
        assert_eq!(reason(p.as_bytes()), Reason::BadEventId, "{p}");
    }
}

#[test]
fn bad_event() {
    assert_eq!(reason(br#"{"event":"","camera_id":1}"#), Reason::BadEvent);
    assert_eq!(reason(br#"{"event":7,"camera_id":1}"#), Reason::BadEvent);
}

#[test]
fn missing_camera_id() {
    let r = decode(TOPIC, br#"{"event_id":1}"#, now()).unwrap_err();
    assert_eq!(r.reason, Reason::MissingCameraId);
    assert!(r.message.contains("camera_id"));
}

#[test]
fn bad_camera_id() {
    for p in [
        r#"{"event_id":1,"camera_id":0}"#,
        r#"{"event_id":1,"camera_id":-1}"#,
        r#"{"event_id":1,"camera_id":"17.0"}"#,
        r#"{"event_id":1,"camera_id":" 17"}"#,
        r#"{"event_id":1,"camera_id":"-5"}"#,
        r#"{"event_id":1,"camera_id":[17]}"#,
        r#"{"event_id":1,"camera_id":2.5}"#,
    ] {
        let r = decode(TOPIC, p.as_bytes(), now()).unwrap_err();
        assert_eq!(r.reason, Reason::BadCameraId, "{p}");
        assert!(r.message.contains("camera_id"), "{}", r.message);
    }
}

#[test]
fn bad_occurred_at() {
    for p in [
        r#"{"event_id":1,"camera_id":1,"occurred_at":"yesterday"}"#,
        r#"{"event_id":1,"camera_id":1,"occurred_at":"2026-11-27 16:30:05"}"#,
        r#"{"event_id":1,"camera_id":1,"occurred_at":1764250205}"#,
    ] {
        assert_eq!(reason(p.as_bytes()), Reason::BadOccurredAt, "{p}");
    }
}

#[test]
fn bad_id() {
    let long = "x".repeat(MAX_ID_LEN + 1);
    for p in [
        r#"{"id":"","event_id":1,"camera_id":1}"#.to_owned(),
        r#"{"id":{"a":1},"event_id":1,"camera_id":1}"#.to_owned(),
        r#"{"id":"a\nb","event_id":1,"camera_id":1}"#.to_owned(),
        r#"{"id":1.5,"event_id":1,"camera_id":1}"#.to_owned(),
        format!(r#"{{"id":"{long}","event_id":1,"camera_id":1}}"#),
    ] {
        assert_eq!(reason(p.as_bytes()), Reason::BadId, "{p}");
    }
}

#[test]
fn bad_snapshot_url() {
    for p in [
        r#"{"event_id":1,"camera_id":1,"snapshot_url":"not a url"}"#,
        r#"{"event_id":1,"camera_id":1,"snapshot_url":"ftp://x/y.jpg"}"#,
        r#"{"event_id":1,"camera_id":1,"snapshot_url":"/relative.jpg"}"#,
        r#"{"event_id":1,"camera_id":1,"snapshot_url":5}"#,
        // The URL parser would accept these, but they would be forwarded as written.
        r#"{"event_id":1,"camera_id":1,"snapshot_url":" https://x/y.jpg"}"#,
        r#"{"event_id":1,"camera_id":1,"snapshot_url":"https://ex\nample.com/y.jpg"}"#,
        r#"{"event_id":1,"camera_id":1,"snapshot_url":"https://x/a\tb.jpg"}"#,
        r#"{"event_id":1,"camera_id":1,"snapshot_url":"https://x/\u0000.jpg"}"#,
    ] {
        assert_eq!(reason(p.as_bytes()), Reason::BadSnapshotUrl, "{p}");
    }
}

#[test]
fn bad_data() {
    assert_eq!(reason(br#"{"event_id":1,"camera_id":1,"data":[1]}"#), Reason::BadData);
    assert_eq!(reason(br#"{"event_id":1,"camera_id":1,"data":"x"}"#), Reason::BadData);
}

#[test]
fn messages_never_echo_long_values() {
    let long = "9".repeat(10_000);
    let p = format!(r#"{{"event_id":1,"camera_id":"{long}x"}}"#);
    let r = decode(TOPIC, p.as_bytes(), now()).unwrap_err();
    assert!(r.message.len() < 200, "{}", r.message);
}

#[test]
fn reason_codes_are_stable_and_distinct() {
    let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    assert_eq!(Reason::UnknownEvent.as_str(), "unknown_event");
    assert_eq!(Reason::Stale.as_str(), "stale");
}

#[test]
fn staleness() {
    let at = |s: &str| ok(&format!(r#"{{"event_id":1,"camera_id":1,"occurred_at":"{s}"}}"#));
    // now() is 11:31:00Z
    assert!(!is_stale(&at("2026-11-27T11:26:00Z"), now(), 300), "exactly 300 s old");
    assert!(is_stale(&at("2026-11-27T11:25:59Z"), now(), 300));
    assert!(is_stale(&at("2026-11-27T16:25:59+05:00"), now(), 300), "offset respected");
    assert!(!is_stale(&at("2026-11-27T12:00:00Z"), now(), 300), "future is not stale");
    assert!(!is_stale(&at("2020-01-01T00:00:00Z"), now(), 0), "0 = never");
}

#[test]
fn rejection_log_is_rate_limited_per_reason() {
    let log = RejectionLog::new(Duration::from_secs(10));
    let t0 = Instant::now();
    let bad_cam = Rejected::new(Reason::BadCameraId, "camera_id must be ...");
    let not_json = Rejected::new(Reason::NotJson, "payload is not valid JSON");
    assert_eq!(log.record_at(TOPIC, &bad_cam, t0), Some(0));
    assert_eq!(log.record_at(TOPIC, &bad_cam, t0 + Duration::from_secs(1)), None);
    assert_eq!(log.record_at(TOPIC, &bad_cam, t0 + Duration::from_secs(2)), None);
    assert_eq!(log.record_at(TOPIC, &not_json, t0 + Duration::from_secs(2)), Some(0));
    assert_eq!(log.suppressed()[&Reason::BadCameraId], 2);
    assert_eq!(log.record_at(TOPIC, &bad_cam, t0 + Duration::from_secs(10)), Some(2));
    assert_eq!(log.suppressed()[&Reason::BadCameraId], 0);
}
