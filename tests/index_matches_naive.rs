//! Property: the schedule index returns exactly the naive scan's set, for random script sets
//! (day types, overnight windows, breaks, intervals, offsets and IANA zones, cameras,
//! statuses) and random instants, many of them on window edges and around DST changes.

use std::cell::RefCell;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use scriptd::index::ScheduleIndex;
use scriptd::rules::{Rule, naive_matches};
use scriptd::timetable::{ParseContext, parse_timetable};

const ZONES: [Tz; 5] = [
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Lord_Howe, // half-hour DST shift
    chrono_tz::Asia::Kolkata,
];

/// DST changes of 2026 the instants cluster around, plus an ordinary week.
const CENTERS: [&str; 6] = [
    "2026-03-29T01:00:00Z", // Berlin spring
    "2026-10-25T01:00:00Z", // Berlin autumn
    "2026-03-08T07:00:00Z", // New York spring
    "2026-11-01T06:00:00Z", // New York autumn
    "2026-04-04T15:00:00Z", // Lord Howe autumn (2026-04-05 02:00 local)
    "2026-11-27T12:00:00Z",
];

fn center(i: usize) -> i64 {
    DateTime::parse_from_rfc3339(CENTERS[i]).map(|d| d.timestamp()).unwrap_or(0)
}

fn offset_suffix() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        2 => Just("+05:00".to_owned()),
        1 => Just("Z".to_owned()),
        1 => Just("-03:30".to_owned()),
        1 => Just("+01:00".to_owned()),
    ]
}

fn hms(secs: u32) -> String {
    let s = secs % 86_400;
    if s.is_multiple_of(60) {
        format!("{:02}:{:02}", s / 3600, (s % 3600) / 60)
    } else {
        format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    }
}

/// A time of day, mostly on round minutes (edges then coincide with test instants).
fn time_of_day() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => (0u32..24, prop::sample::select(vec![0u32, 15, 30, 45])).prop_map(|(h, m)| h * 3600 + m * 60),
        1 => (0u32..24, 0u32..60).prop_map(|(h, m)| h * 3600 + m * 60),
        1 => 0u32..86_400,
        1 => prop::sample::select(vec![7200u32, 9000, 10_800, 3600, 5400]), // 02:00, 02:30, 03:00, 01:00, 01:30
    ]
}

fn day_entry() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "same_every_day", "weekdays", "weekends", "monday", "tuesday", "wednesday", "thursday",
            "friday", "saturday", "sunday",
        ]),
        time_of_day(),
        1u32..86_400,
        offset_suffix(),
        prop::option::weighted(0.15, offset_suffix()),
        prop::collection::vec((0.0f64..1.0, 0.0f64..1.0), 0..3),
        any::<bool>(),
    )
        .prop_map(|(kind, from, len, off, other_off, breaks, eod_style)| {
            let to_secs = from + len;
            let to = if to_secs == 86_400 {
                if eod_style { "23:59".to_owned() } else { "23:59:59".to_owned() }
            } else {
                hms(to_secs)
            };
            // Occasionally write the end in another zone: converted per the rules.
            let to_off = other_off.unwrap_or_else(|| off.clone());
            let breaks: Vec<Value> = breaks
                .into_iter()
                .map(|(a, b)| {
                    let (a, b) = if a <= b { (a, b) } else { (b, a) };
                    let bf = from + (a * f64::from(len)) as u32;
                    let bt = from + (b * f64::from(len)) as u32;
                    json!({"from": format!("{}{off}", hms(bf)), "to": format!("{}{off}", hms(bt))})
                })
                .collect();
            json!({"type": kind, "from": format!("{}{off}", hms(from)), "to": format!("{to}{to_off}"), "breaks": breaks})
        })
}

fn interval() -> impl Strategy<Value = Value> {
    (0usize..CENTERS.len(), -4 * 86_400i64..4 * 86_400, 60i64..5 * 86_400, 0u8..3).prop_map(
        |(c, start, len, style)| {
            let from = center(c) + start / 60 * 60;
            let to = from + len / 60 * 60;
            let fmt = |t: i64| {
                let d = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
                match style {
                    0 => d.format("%Y-%m-%d %H:%M:%S+00:00").to_string(),
                    1 => d.to_rfc3339(),
                    _ => d.format("%Y-%m-%d %H:%M:%S").to_string(), // configured zone
                }
            };
            json!({"from": fmt(from), "to": fmt(to)})
        },
    )
}

fn timetable() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(day_entry(), 0..4),
        prop::option::weighted(0.3, prop::collection::vec(interval(), 1..3)),
    )
        .prop_map(
            |(days, intervals)| json!({"days": days, "intervals": intervals.unwrap_or_default()}),
        )
}

fn script() -> impl Strategy<Value = (i64, Option<Vec<i64>>, bool, Value)> {
    (
        1i64..3,
        prop::option::weighted(0.6, prop::collection::btree_set(1i64..5, 1..4)),
        prop::bool::weighted(0.85),
        timetable(),
    )
        .prop_map(|(event, cams, enabled, tt)| {
            (event, cams.map(|c| c.into_iter().collect()), enabled, tt)
        })
}

fn instant() -> impl Strategy<Value = i64> {
    (
        0usize..CENTERS.len(),
        -3 * 1440i64..3 * 1440,
        prop::sample::select(vec![-1i64, 0, 0, 0, 1, 1800]),
    )
        .prop_map(|(c, minutes, delta)| center(c) + minutes * 60 + delta)
}

fn build(tz: Tz, specs: &[(i64, Option<Vec<i64>>, bool, Value)]) -> Vec<Rule> {
    let ctx = ParseContext { timezone: tz };
    specs
        .iter()
        .enumerate()
        .filter_map(|(i, (event, cameras, enabled, tt))| {
            // Invalid random timetables (e.g. a break that rounds onto a window edge) are
            // simply not part of the set.
            let timetable = parse_timetable(tt, &ctx).ok()?;
            Some(Rule {
                script_id: i as i64 + 1,
                event_id: *event,
                cameras: cameras.clone(),
                enabled: *enabled,
                timetable: Arc::new(timetable),
            })
        })
        .collect()
}

/// What a property run exercised; asserted so a generator that stops producing valid
/// timetables, or queries that never match, cannot pass unnoticed.
#[derive(Debug, Default)]
struct Coverage {
    specs: usize,
    rules: usize,
    queries: usize,
    matching_queries: usize,
}

type Case = (usize, Vec<(i64, Option<Vec<i64>>, bool, Value)>, Vec<(i64, i64, i64)>);

/// Returns the number of queries whose answer was not empty.
fn check(rules: Vec<Rule>, instants: &[(i64, i64, i64)]) -> Result<usize, TestCaseError> {
    let index = ScheduleIndex::build(rules.clone());
    let mut matching = 0;
    for &(event, camera, t) in instants {
        let at = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
        let want = naive_matches(&rules, event, camera, at);
        let got = index.matches(event, camera, at);
        prop_assert_eq!(&got, &want, "event {} camera {} at {}", event, camera, at);
        matching += usize::from(!want.is_empty());
    }
    Ok(matching)
}

/// Runs the property over 96 generated cases (failures are kept in the
/// `.proptest-regressions` file beside this one) and returns what it covered.
fn run_property(strategy: impl Strategy<Value = Case>, empty_answers_expected: bool) -> Coverage {
    let config =
        ProptestConfig { cases: 96, source_file: Some(file!()), ..ProptestConfig::default() };
    let coverage = RefCell::new(Coverage::default());
    let result = TestRunner::new(config).run(&strategy, |(zone, specs, instants)| {
        let rules = build(ZONES[zone], &specs);
        let rule_count = rules.len();
        let matching = check(rules, &instants)?;
        let mut c = coverage.borrow_mut();
        c.specs += specs.len();
        c.rules += rule_count;
        c.queries += instants.len();
        c.matching_queries += matching;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = coverage.into_inner();
    println!("{c:?}");
    // Most random timetables must be valid (a few land a break on a window edge), and the
    // queries must exercise both answers.
    assert!(c.rules * 10 >= c.specs * 6, "too few valid timetables: {c:?}");
    assert!(c.matching_queries * 10 >= c.queries, "too few queries matched anything: {c:?}");
    if empty_answers_expected {
        assert!(c.matching_queries * 10 <= c.queries * 9, "too few queries matched nothing: {c:?}");
    }
    c
}

/// Small sets: every table is scanned member by member.
#[test]
fn small_sets_agree() {
    run_property(
        (
            0usize..ZONES.len(),
            prop::collection::vec(script(), 1..25),
            prop::collection::vec((1i64..3, 1i64..6, instant()), 1..80),
        ),
        true,
    );
}

/// Large sets on one event: wildcard tables get slot bitsets (with 60+ scripts nearly
/// every instant matches some of them, so only the "something matched" bound applies).
#[test]
fn large_sets_agree() {
    run_property(
        (
            0usize..ZONES.len(),
            prop::collection::vec(script().prop_map(|(_, _, e, tt)| (1, None, e, tt)), 60..160),
            prop::collection::vec((Just(1i64), 1i64..6, instant()), 1..120),
        ),
        false,
    );
}
