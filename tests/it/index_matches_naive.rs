//! Property: the schedule index returns exactly the naive scan's set, for random script sets
//! (day types, overnight windows, breaks, intervals, offsets and IANA zones, cameras,
//! statuses, holidays from calendars in their own zones and inline dates, with holiday
//! windows) and random instants, many of them on window edges and around DST changes.

use std::cell::RefCell;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::Value;

use crate::support::timetables::{ZONES, calendar, instant, timetable, timetable_with_holidays};
use scriptd::index::ScheduleIndex;
use scriptd::index::rules::{Rule, naive_matches};
use scriptd::script::validation::FieldErrors;
use scriptd::timetable::holidays::parse_date_range;
use scriptd::timetable::{CalendarDates, ParseContext, Zone, parse_timetable};

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
    let config = crate::support::proptest_config(96, file!());
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

/// Calendars 1..=N from generated (zone, dates).
fn calendars(specs: &[(usize, Vec<Value>)]) -> Vec<Arc<CalendarDates>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, (zone, dates))| {
            let mut errors = FieldErrors::new();
            let dates =
                dates.iter().filter_map(|d| parse_date_range(d, "dates", &mut errors)).collect();
            Arc::new(CalendarDates {
                id: i as i64 + 1,
                name: format!("calendar {}", i + 1),
                zone: Zone::from_tz(ZONES[*zone]),
                dates,
            })
        })
        .collect()
}

/// Holidays: calendars in their own zones and inline dates in the script's zone replace
/// the days with the holiday windows; the index must still equal the naive scan, and a
/// good share of the queries must fall on a holiday of some rule (asserted).
#[test]
fn holidays_agree() {
    let config = crate::support::proptest_config(96, file!());
    let coverage = RefCell::new((Coverage::default(), 0usize, 0usize));
    let strategy = (
        0usize..ZONES.len(),
        prop::collection::vec(calendar(), 3),
        prop::collection::vec(
            (
                1i64..3,
                prop::option::weighted(0.5, prop::collection::btree_set(1i64..5, 1..4)),
                prop::bool::weighted(0.85),
                timetable_with_holidays(3),
            ),
            1..70,
        ),
        prop::collection::vec((1i64..3, 1i64..6, instant()), 1..100),
    );
    let result = TestRunner::new(config).run(&strategy, |(zone, cals, specs, instants)| {
        let cals = calendars(&cals);
        let specs: Vec<_> = specs
            .into_iter()
            .map(|(e, c, en, tt)| (e, c.map(|c| c.into_iter().collect()), en, tt))
            .collect();
        let rules: Vec<Rule> = build(ZONES[zone], &specs)
            .into_iter()
            .map(|mut r| {
                let tt = r.timetable.with_calendars(|id| cals.get(id as usize - 1).cloned());
                r.timetable = Arc::new(tt);
                r
            })
            .collect();
        let on_holiday = instants
            .iter()
            .filter(|&&(_, _, t)| rules.iter().any(|r| r.timetable.holiday_at(t).is_some()))
            .count();
        let with_holidays =
            rules.iter().filter(|r| !r.timetable.holiday_spans().is_empty()).count();
        let rule_count = rules.len();
        let matching = check(rules, &instants)?;
        let mut c = coverage.borrow_mut();
        c.0.specs += specs.len();
        c.0.rules += rule_count;
        c.0.queries += instants.len();
        c.0.matching_queries += matching;
        c.1 += on_holiday;
        c.2 += with_holidays;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (c, on_holiday, with_holidays) = coverage.into_inner();
    println!(
        "{c:?}, queries on a holiday of some rule: {on_holiday}, rules with holidays: {with_holidays}"
    );
    assert!(c.rules * 10 >= c.specs * 5, "too few valid timetables: {c:?}");
    assert!(with_holidays * 3 >= c.rules, "too few rules with holidays: {with_holidays} of {c:?}");
    assert!(on_holiday * 5 >= c.queries, "too few queries on a holiday: {on_holiday} of {c:?}");
    assert!(
        on_holiday * 10 <= c.queries * 9,
        "too few queries off holidays: {on_holiday} of {c:?}"
    );
    assert!(c.matching_queries * 10 >= c.queries, "too few queries matched anything: {c:?}");
}
