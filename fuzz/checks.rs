//! The checks of the fuzz targets, one function per target: the targets under
//! `fuzz_targets/` call them on libFuzzer's inputs, and `tests/it/fuzz_regressions.rs` replays
//! the kept inputs through the very same functions (both include this file with `#[path]`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use scriptd::index::ScheduleIndex;
use scriptd::index::rules::{Rule, naive_matches};
use scriptd::intake::occurrence::{
    DERIVED_ID_PREFIX, EventRef, MAX_ID_LEN, MAX_SNAPSHOT_URL_LEN, decode,
};
use scriptd::script::{TITLE_MAX_CHARS, ValidationContext, input_to_body, validate};
use scriptd::store::catalog::{DEFAULT_EVENTS, DEFAULT_REACTIONS, Event, Reaction};
use scriptd::timetable::{ParseContext, parse_timetable};
use serde_json::Value;

/// `decode_occurrence`: arbitrary bytes as an MQTT payload. `occurrence::decode` returns
/// `Ok` or `Err`, never panics, and an `Ok` keeps the decoder's documented invariants.
pub fn check_decode(data: &[u8]) {
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
}

pub const TIMETABLE_ZONES: [Tz; 6] = [
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Etc::GMTPlus5,
];

/// 2026 DST changes (Berlin, New York, Lord Howe) and an ordinary day, unix seconds.
const BASES: [i64; 6] = [
    1_774_746_000, // 2026-03-29T01:00:00Z
    1_792_890_000, // 2026-10-25T01:00:00Z
    1_772_953_200, // 2026-03-08T07:00:00Z
    1_793_512_800, // 2026-11-01T06:00:00Z
    1_775_314_800, // 2026-04-04T15:00:00Z
    1_795_780_800, // 2026-11-27T12:00:00Z
];

/// The range of instants an RFC 3339 `occurred_at` can name (years 0000–9999).
const MIN_T: i64 = -62_167_219_200;
const MAX_T: i64 = 253_402_300_799;

/// `parse_timetable`, differential: the first byte picks the configured zone, the rest is
/// JSON. When it parses, the reference evaluation must not panic and must agree with itself,
/// and the schedule index must give the naive matcher's answer at instants around the 2026
/// DST changes and at an instant taken from the input.
pub fn check_timetable(data: &[u8]) {
    let Some((&zone_byte, json)) = data.split_first() else { return };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    let ctx =
        ParseContext { timezone: TIMETABLE_ZONES[usize::from(zone_byte) % TIMETABLE_ZONES.len()] };
    let Ok(tt) = parse_timetable(&value, &ctx) else { return };

    // Instants: around each base every 10 minutes for ±26 h, plus the second on either side
    // of each step, shifted by an amount from the input; and one arbitrary instant.
    let mut seed: i64 = 0;
    for &b in data.iter().rev().take(8) {
        seed = (seed << 8) | i64::from(b);
    }
    let mut instants = Vec::with_capacity(BASES.len() * 320 + 3);
    let shift = seed.rem_euclid(600);
    for base in BASES {
        for step in -156..=156 {
            let t = base + step * 600 + shift;
            instants.extend([t - 1, t]);
        }
    }
    instants.push(MIN_T + seed.rem_euclid(MAX_T - MIN_T));
    instants.extend([MIN_T, MAX_T]);

    let tt = Arc::new(tt);
    let rules = vec![Rule {
        script_id: 7,
        event_id: 1,
        cameras: None,
        enabled: true,
        timetable: tt.clone(),
    }];
    let index = ScheduleIndex::build(rules.clone());
    for t in instants {
        let verdict = tt.explain_at(t);
        assert_eq!(verdict.active, tt.is_active_at(t));
        assert!(verdict.reason.starts_with("in ") || verdict.reason.starts_with("outside "));
        let Some(at) = DateTime::<Utc>::from_timestamp(t, 0) else { continue };
        let naive = naive_matches(&rules, 1, 17, at);
        assert_eq!(naive, if verdict.active { vec![7] } else { vec![] });
        let fast = index.matches(1, 17, at);
        assert_eq!(fast, naive, "index and naive disagree at {at} ({t}) for {value}");
    }
}

const SCRIPT_ZONES: [Tz; 3] =
    [chrono_tz::UTC, chrono_tz::Europe::Berlin, chrono_tz::America::New_York];

/// `validate_script`: the first byte picks the configured zone, the rest is a script body
/// for `script::validate`. It never panics; an error always names a key; a valid body
/// validates again to the same script when read back from its stored form. Returns whether
/// the body was valid.
pub fn check_validate(data: &[u8]) -> bool {
    let Some((&zone_byte, json)) = data.split_first() else { return false };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(json) else { return false };
    let events: HashMap<i64, Event> = DEFAULT_EVENTS
        .iter()
        .map(|&(id, name, description, color, analytic_type)| {
            (
                id,
                Event {
                    id,
                    name: name.into(),
                    description: description.into(),
                    color: color.into(),
                    analytic_type: analytic_type.into(),
                },
            )
        })
        .collect();
    let reactions: HashMap<i64, Reaction> = DEFAULT_REACTIONS
        .iter()
        .map(|&(id, name, description, is_default)| {
            let kind = scriptd::delivery::ReactionKind::of(name);
            (
                id,
                Reaction {
                    id,
                    name: name.into(),
                    description: description.into(),
                    is_default,
                    kind,
                },
            )
        })
        .collect();
    let users: HashSet<i64> = [1, 2, 3].into_iter().collect();
    let calendars = HashMap::new();
    let ctx = ValidationContext {
        timezone: SCRIPT_ZONES[usize::from(zone_byte) % SCRIPT_ZONES.len()],
        events: &events,
        reactions: &reactions,
        users: &users,
        calendars: &calendars,
    };
    match validate(&body, &ctx) {
        Ok(v) => {
            let input = &v.input;
            let n = input.title.chars().count();
            assert!(n > 0 && n <= TITLE_MAX_CHARS);
            assert!(events.contains_key(&input.event_id));
            assert!(reactions.contains_key(&input.reaction_id));
            assert!(!input.users.is_empty() && input.users.iter().all(|u| users.contains(u)));
            if let Some(c) = &input.cameras {
                assert!(!c.is_empty() && c.iter().all(|&c| c > 0));
            }
            // Stored as text, read back, validated again: the same script.
            let stored = serde_json::to_string(&Value::Object(input_to_body(input)))
                .expect("a validated body serialises");
            let Ok(Value::Object(back)) = serde_json::from_str::<Value>(&stored) else {
                panic!("stored body does not read back as an object: {stored}");
            };
            match validate(&back, &ctx) {
                Ok(again) => {
                    // Free-form JSON (extra, unknown timetable keys) may hold floats that do
                    // not survive a text round trip bit for bit: compare what the matcher uses.
                    let (a, b) = (&again.input, &v.input);
                    assert_eq!(
                        (&a.title, a.event_id, a.reaction_id, a.enabled, &a.cameras, &a.users),
                        (&b.title, b.event_id, b.reaction_id, b.enabled, &b.cameras, &b.users),
                        "read back differently"
                    );
                    assert_eq!(
                        a.extra.keys().collect::<Vec<_>>(),
                        b.extra.keys().collect::<Vec<_>>()
                    );
                    assert_eq!(*again.timetable, *v.timetable, "timetable compiled differently");
                }
                Err(e) => panic!("stored script no longer validates: {e}"),
            }
            true
        }
        Err(e) => {
            assert!(!e.is_empty(), "an error without a key");
            assert!(e.paths().all(|p| !p.is_empty()));
            false
        }
    }
}
