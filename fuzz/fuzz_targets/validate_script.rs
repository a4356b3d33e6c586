//! Arbitrary JSON as a script body through the validation the API uses
//! (`script::validate`). The first byte picks the configured zone, the rest is the body.
//! Validation returns `Ok` or `Err` and never panics; an error always names a key; a valid
//! body validates again to the same script when read back from its stored form (the store
//! keeps `input_to_body` as JSON text).
#![no_main]

use std::collections::{HashMap, HashSet};

use chrono_tz::Tz;
use libfuzzer_sys::fuzz_target;
use scriptd::script::{TITLE_MAX_CHARS, ValidationContext, input_to_body, validate};
use scriptd::store::catalog::{DEFAULT_EVENTS, DEFAULT_REACTIONS, Event, Reaction};
use serde_json::Value;

const ZONES: [Tz; 3] = [chrono_tz::UTC, chrono_tz::Europe::Berlin, chrono_tz::America::New_York];

fuzz_target!(|data: &[u8]| {
    let Some((&zone_byte, json)) = data.split_first() else { return };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(json) else { return };
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
            (id, Reaction { id, name: name.into(), description: description.into(), is_default })
        })
        .collect();
    let users: HashSet<i64> = [1, 2, 3].into_iter().collect();
    let ctx = ValidationContext {
        timezone: ZONES[usize::from(zone_byte) % ZONES.len()],
        events: &events,
        reactions: &reactions,
        users: &users,
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
        }
        Err(e) => {
            assert!(!e.is_empty(), "an error without a key");
            assert!(e.paths().all(|p| !p.is_empty()));
        }
    }
});
