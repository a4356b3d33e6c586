//! Arbitrary bytes as an MQTT payload: `occurrence::decode` returns `Ok` or `Err`, never
//! panics, and an `Ok` keeps the decoder's documented invariants.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use scriptd::occurrence::{DERIVED_ID_PREFIX, EventRef, MAX_ID_LEN, MAX_SNAPSHOT_URL_LEN, decode};

fuzz_target!(|data: &[u8]| {
    let now = DateTime::<Utc>::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    match decode("vms/analytics/events/17", data, now) {
        Ok(o) => {
            assert!(o.camera_id > 0, "camera_id must be positive");
            match &o.event {
                EventRef::Id(id) => assert!(*id > 0, "event_id must be positive"),
                EventRef::Name(n) => assert!(!n.is_empty() && n.len() <= MAX_ID_LEN),
            }
            assert!(!o.id.is_empty());
            assert!(o.id.len() <= MAX_ID_LEN || o.id.starts_with(DERIVED_ID_PREFIX), "id too long");
            assert!(!o.id.chars().any(char::is_control), "control character in id");
            if let Some(d) = &o.data {
                assert!(d.is_object(), "data must be an object");
            }
            if let Some(u) = &o.snapshot_url {
                assert!(u.len() <= MAX_SNAPSHOT_URL_LEN);
                // Forwarded as written: no whitespace or control characters.
                assert!(!u.chars().any(|c| c.is_control() || c.is_whitespace()), "{u:?}");
            }
            // The formatting used for the push payload and the timetable instant must not
            // panic either.
            let _ = o.occurred_at_rfc3339();
            let _ = o.occurred_at_utc().timestamp();
            // Same bytes, same answer (the derived id is deterministic).
            let again = decode("vms/analytics/events/17", data, now);
            assert_eq!(again.as_ref().ok(), Some(&o));
        }
        Err(r) => {
            assert!(!r.message.is_empty());
            // Messages name the field but never echo a whole large payload.
            assert!(r.message.len() < 1024, "message too long: {}", r.message.len());
        }
    }
});
