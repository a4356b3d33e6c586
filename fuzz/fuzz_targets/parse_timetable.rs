//! Differential fuzzer for timetables. The first byte picks the configured zone, the rest is
//! JSON. When it parses, the reference evaluation (`Timetable::is_active_at`/`explain_at`)
//! must not panic and must agree with itself, and the schedule index built from it must give
//! the same answer as the naive matcher at instants around the 2026 DST changes and at an
//! instant taken from the input.
#![no_main]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use libfuzzer_sys::fuzz_target;
use scriptd::index::ScheduleIndex;
use scriptd::rules::{Rule, naive_matches};
use scriptd::timetable::{ParseContext, parse_timetable};

const ZONES: [Tz; 6] = [
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

fuzz_target!(|data: &[u8]| {
    let Some((&zone_byte, json)) = data.split_first() else { return };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    let ctx = ParseContext { timezone: ZONES[usize::from(zone_byte) % ZONES.len()] };
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
});
