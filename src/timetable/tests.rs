//! Table tests for every rule of CONTRACT §7. Dates used: 2026-11-27 is a Friday,
//! 2026-11-30 a Monday; Europe/Berlin changes clocks on 2026-03-29 and 2026-10-25,
//! America/New_York on 2026-03-08 and 2026-11-01.

use chrono::DateTime;
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::*;

mod validation;

fn parse_in(v: Value, tz: Tz) -> Timetable {
    match parse_timetable(&v, &ParseContext { timezone: tz }) {
        Ok(t) => t,
        Err(e) => panic!("timetable should parse: {e}\n{v:#}"),
    }
}

fn tt(v: Value) -> Timetable {
    parse_in(v, chrono_tz::UTC)
}

fn at(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("bad instant {s}: {e}")).timestamp()
}

#[track_caller]
fn assert_active(t: &Timetable, s: &str) {
    assert!(t.is_active_at(at(s)), "expected active at {s}, got {:?}", t.explain_at(at(s)));
}

#[track_caller]
fn assert_inactive(t: &Timetable, s: &str) {
    assert!(!t.is_active_at(at(s)), "expected inactive at {s}, got {:?}", t.explain_at(at(s)));
}

#[track_caller]
fn assert_reason(t: &Timetable, s: &str, reason: &str) {
    assert_eq!(t.explain_at(at(s)).reason, reason, "at {s}");
}

/// Parsing fails with exactly these error keys.
#[track_caller]
fn assert_invalid(v: Value, keys: &[&str]) {
    match parse_timetable(&v, &ParseContext::default()) {
        Ok(_) => panic!("expected errors at {keys:?} for {v}"),
        Err(e) => {
            let got: Vec<&str> = e.paths().collect();
            assert_eq!(got, keys, "errors: {e}");
        }
    }
}

fn window(kind: &str, from: &str, to: &str) -> Value {
    json!({"type": kind, "from": from, "to": to, "breaks": []})
}

fn window_with_breaks(kind: &str, from: &str, to: &str, breaks: &[(&str, &str)]) -> Value {
    let breaks: Vec<Value> = breaks.iter().map(|(f, t)| json!({"from": f, "to": t})).collect();
    json!({"type": kind, "from": from, "to": to, "breaks": breaks})
}

fn days(entries: Vec<Value>) -> Value {
    json!({ "days": entries })
}

fn seed() -> Timetable {
    tt(days(vec![window_with_breaks(
        "same_every_day",
        "00:00:00+05:00",
        "23:59:00+05:00",
        &[("16:00:00+05:00", "17:00:00+05:00")],
    )]))
}

// --- the seed's timetable -------------------------------------------------------------

#[test]
fn seed_active_outside_its_break() {
    let t = seed();
    assert_active(&t, "2026-11-27T10:00:00+05:00");
    assert_active(&t, "2026-11-27T00:00:00+05:00");
    assert_active(&t, "2026-11-27T15:59:59+05:00");
}

#[test]
fn seed_break_is_half_open() {
    let t = seed();
    assert_inactive(&t, "2026-11-27T16:00:00+05:00");
    assert_inactive(&t, "2026-11-27T16:59:59+05:00");
    assert_active(&t, "2026-11-27T17:00:00+05:00");
}

#[test]
fn seed_2359_covers_the_last_minute() {
    let t = seed();
    assert_active(&t, "2026-11-27T23:59:00+05:00");
    assert_active(&t, "2026-11-27T23:59:59+05:00");
    assert_active(&t, "2026-11-27T18:59:59Z");
}

// --- windows ----------------------------------------------------------------------------

#[test]
fn window_is_half_open() {
    let t = tt(days(vec![window("same_every_day", "08:00", "17:00")]));
    assert_inactive(&t, "2026-11-27T07:59:59Z");
    assert_active(&t, "2026-11-27T08:00:00Z");
    assert_active(&t, "2026-11-27T16:59:59Z");
    assert_inactive(&t, "2026-11-27T17:00:00Z");
}

#[test]
fn fractional_instants_follow_the_half_open_rule() {
    let t = tt(days(vec![window("same_every_day", "08:00", "17:00")]));
    assert!(t.is_active(DateTime::parse_from_rfc3339("2026-11-27T16:59:59.999Z").unwrap().into()));
    assert!(!t.is_active(DateTime::parse_from_rfc3339("2026-11-27T17:00:00.001Z").unwrap().into()));
}

#[test]
fn seconds_are_honoured() {
    let t = tt(days(vec![window("same_every_day", "08:00:30", "08:01:15")]));
    assert_inactive(&t, "2026-11-27T08:00:29Z");
    assert_active(&t, "2026-11-27T08:00:30Z");
    assert_active(&t, "2026-11-27T08:01:14Z");
    assert_inactive(&t, "2026-11-27T08:01:15Z");
}

#[test]
fn end_2359_variants_mean_end_of_day() {
    for to in ["23:59", "23:59:00", "23:59:59", "23:59:00+05:00"] {
        let t = tt(days(vec![window("same_every_day", "20:00", to)]));
        assert_active(&t, "2026-11-27T23:59:59Z");
        assert_inactive(&t, "2026-11-28T00:00:00Z");
        assert_active(&t, "2026-11-28T20:00:00Z");
    }
}

#[test]
fn end_235930_is_a_plain_time() {
    let t = tt(days(vec![window("same_every_day", "20:00", "23:59:30")]));
    assert_active(&t, "2026-11-27T23:59:29Z");
    assert_inactive(&t, "2026-11-27T23:59:45Z");
}

#[test]
fn whole_day_window_covers_every_second() {
    let t = tt(days(vec![window("same_every_day", "00:00", "23:59")]));
    for s in [
        "2026-11-27T00:00:00Z",
        "2026-11-27T12:00:00Z",
        "2026-11-27T23:59:59Z",
        "2026-11-28T00:00:00Z",
    ] {
        assert_active(&t, s);
    }
}

#[test]
fn overnight_window_spans_midnight() {
    let t = tt(days(vec![window("same_every_day", "22:00", "06:00")]));
    assert_active(&t, "2026-11-27T23:30:00Z");
    assert_active(&t, "2026-11-28T03:00:00Z");
    assert_inactive(&t, "2026-11-28T06:00:00Z");
    assert_inactive(&t, "2026-11-27T21:59:59Z");
    assert_active(&t, "2026-11-27T22:00:00Z");
}

#[test]
fn overnight_window_with_offset() {
    let t = tt(days(vec![window("same_every_day", "22:00+05:00", "06:00+05:00")]));
    assert_active(&t, "2026-11-27T23:30:00+05:00");
    assert_active(&t, "2026-11-27T20:00:00Z"); // 01:00 +05:00
    assert_inactive(&t, "2026-11-27T12:00:00+05:00");
}

#[test]
fn overnight_window_starts_on_the_named_day() {
    let t = tt(days(vec![window("monday", "22:00", "06:00")]));
    assert_active(&t, "2026-11-30T23:00:00Z"); // Monday night
    assert_active(&t, "2026-12-01T05:59:59Z"); // Tuesday morning
    assert_inactive(&t, "2026-11-30T05:00:00Z"); // Monday morning belongs to Sunday
    assert_inactive(&t, "2026-12-01T23:00:00Z");
}

#[test]
fn midnight_end_means_overnight_to_midnight() {
    let t = tt(days(vec![window("friday", "20:00", "00:00")]));
    assert_active(&t, "2026-11-27T23:59:59Z");
    assert_inactive(&t, "2026-11-28T00:00:00Z");
}

// --- day types ---------------------------------------------------------------------------

#[test]
fn weekdays_are_monday_to_friday() {
    let t = tt(days(vec![window("weekdays", "08:00", "17:00")]));
    assert_active(&t, "2026-11-27T09:00:00Z"); // Friday
    assert_active(&t, "2026-11-30T09:00:00Z"); // Monday
    assert_inactive(&t, "2026-11-28T09:00:00Z"); // Saturday
    assert_inactive(&t, "2026-11-29T09:00:00Z"); // Sunday
}

#[test]
fn weekdays_overnight_runs_into_saturday_but_not_from_sunday() {
    let t = tt(days(vec![window("weekdays", "22:00", "04:00")]));
    assert_active(&t, "2026-11-28T03:00:00Z"); // Friday's window, Saturday morning
    assert_inactive(&t, "2026-11-28T23:00:00Z"); // Saturday night
    assert_inactive(&t, "2026-11-30T03:00:00Z"); // Sunday's window would be, but Sunday is not a weekday
    assert_active(&t, "2026-11-30T23:00:00Z");
}

#[test]
fn weekends_are_saturday_and_sunday() {
    let t = tt(days(vec![window("weekends", "10:00", "03:00")]));
    assert_active(&t, "2026-11-28T11:00:00Z");
    assert_active(&t, "2026-11-29T11:00:00Z");
    assert_active(&t, "2026-11-30T02:00:00Z"); // Sunday's overnight window
    assert_inactive(&t, "2026-11-30T11:00:00Z");
    assert_inactive(&t, "2026-11-27T11:00:00Z");
}

#[test]
fn each_weekday_name_applies_to_its_day_only() {
    let names = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    // 2026-11-30 .. 2026-12-06 is Monday .. Sunday.
    for (i, name) in names.iter().enumerate() {
        let t = tt(days(vec![window(name, "12:00", "13:00")]));
        for d in 0..7 {
            let day =
                chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap() + chrono::Duration::days(d);
            let instant = format!("{}T12:30:00Z", day.format("%Y-%m-%d"));
            if d as usize == i {
                assert_active(&t, &instant);
            } else {
                assert_inactive(&t, &instant);
            }
        }
    }
}

#[test]
fn weekday_is_taken_at_the_entrys_own_offset() {
    // Sunday 20:00 UTC is Monday 01:00 at +05:00.
    let t = tt(days(vec![window("monday", "00:00+05:00", "06:00+05:00")]));
    assert_active(&t, "2026-11-29T20:00:00Z");
    assert_inactive(&t, "2026-11-30T02:00:00Z"); // Monday 07:00 at +05:00
}

#[test]
fn weekday_is_taken_in_the_configured_zone() {
    let t = parse_in(days(vec![window("saturday", "00:00", "02:00")]), chrono_tz::Asia::Tokyo);
    assert_active(&t, "2026-11-27T15:30:00Z"); // Saturday 00:30 in Tokyo
    assert_inactive(&t, "2026-11-28T00:30:00Z");
}

// --- breaks --------------------------------------------------------------------------------

#[test]
fn break_after_midnight_in_overnight_window() {
    let t = tt(days(vec![window_with_breaks(
        "same_every_day",
        "22:00",
        "06:00",
        &[("02:00", "03:00")],
    )]));
    assert_active(&t, "2026-11-28T01:59:59Z");
    assert_inactive(&t, "2026-11-28T02:00:00Z");
    assert_inactive(&t, "2026-11-28T02:30:00Z");
    assert_active(&t, "2026-11-28T03:00:00Z");
}

#[test]
fn break_across_midnight_in_overnight_window() {
    let t = tt(days(vec![window_with_breaks(
        "same_every_day",
        "22:00",
        "06:00",
        &[("23:00", "01:00")],
    )]));
    assert_active(&t, "2026-11-27T22:30:00Z");
    assert_inactive(&t, "2026-11-27T23:30:00Z");
    assert_inactive(&t, "2026-11-28T00:30:00Z");
    assert_active(&t, "2026-11-28T01:00:00Z");
}

#[test]
fn breaks_may_touch_the_window_edges() {
    let t = tt(days(vec![window_with_breaks(
        "same_every_day",
        "08:00",
        "17:00",
        &[("08:00", "09:00"), ("16:00", "17:00")],
    )]));
    assert_inactive(&t, "2026-11-27T08:00:00Z");
    assert_active(&t, "2026-11-27T09:00:00Z");
    assert_inactive(&t, "2026-11-27T16:59:59Z");
}

#[test]
fn overlapping_breaks() {
    let t = tt(days(vec![window_with_breaks(
        "same_every_day",
        "08:00",
        "17:00",
        &[("10:00", "12:00"), ("11:00", "13:00")],
    )]));
    assert_inactive(&t, "2026-11-27T10:30:00Z");
    assert_inactive(&t, "2026-11-27T12:30:00Z");
    assert_active(&t, "2026-11-27T13:00:00Z");
}

#[test]
fn break_ending_2359_ends_at_midnight() {
    let t = tt(days(vec![window_with_breaks(
        "same_every_day",
        "20:00",
        "06:00",
        &[("23:00", "23:59")],
    )]));
    assert_inactive(&t, "2026-11-27T23:59:30Z");
    assert_active(&t, "2026-11-28T00:00:00Z");
}

#[test]
fn break_of_one_window_does_not_cancel_another_window() {
    let t = tt(days(vec![
        window_with_breaks("same_every_day", "08:00", "17:00", &[("12:00", "13:00")]),
        window("friday", "12:30", "12:45"),
    ]));
    assert_active(&t, "2026-11-27T12:35:00Z"); // Friday: the second window covers it
    assert_inactive(&t, "2026-11-28T12:35:00Z"); // Saturday: only the break
}

#[test]
fn breaks_may_be_missing_or_null() {
    let t = tt(json!({"days": [{"type": "same_every_day", "from": "08:00", "to": "09:00"}]}));
    assert_active(&t, "2026-11-27T08:30:00Z");
    let t = tt(
        json!({"days": [{"type": "same_every_day", "from": "08:00", "to": "09:00", "breaks": null}]}),
    );
    assert_active(&t, "2026-11-27T08:30:00Z");
}

// --- offsets and zones ----------------------------------------------------------------------

#[test]
fn z_is_utc() {
    let t = tt(days(vec![window("same_every_day", "08:00Z", "09:00Z")]));
    assert_active(&t, "2026-11-27T08:30:00Z");
    assert_active(&t, "2026-11-27T13:30:00+05:00");
}

#[test]
fn times_without_offset_use_the_configured_zone() {
    let t =
        parse_in(days(vec![window("same_every_day", "09:00", "10:00")]), chrono_tz::Asia::Tokyo);
    assert_active(&t, "2026-11-27T00:30:00Z");
    assert_inactive(&t, "2026-11-27T09:30:00Z");
}

#[test]
fn end_in_another_offset_is_converted() {
    // 15:00+03:00 is 17:00+05:00.
    let t = tt(days(vec![window("same_every_day", "08:00+05:00", "15:00+03:00")]));
    assert_active(&t, "2026-11-27T16:30:00+05:00");
    assert_inactive(&t, "2026-11-27T17:00:00+05:00");
}

#[test]
fn break_in_another_offset_is_converted() {
    // 10:00Z is 15:00+05:00.
    let t = tt(days(vec![window_with_breaks(
        "same_every_day",
        "08:00+05:00",
        "17:00+05:00",
        &[("10:00Z", "11:00Z")],
    )]));
    assert_inactive(&t, "2026-11-27T15:30:00+05:00");
    assert_active(&t, "2026-11-27T14:30:00+05:00");
}

#[test]
fn end_in_configured_dst_zone_is_converted_per_date() {
    // Entry at +00:00, end written without offset in Berlin: 18:00 Berlin is 17:00Z in
    // winter and 16:00Z in summer.
    let t = parse_in(
        days(vec![window("same_every_day", "08:00Z", "18:00")]),
        chrono_tz::Europe::Berlin,
    );
    assert_active(&t, "2026-01-15T16:30:00Z");
    assert_inactive(&t, "2026-01-15T17:00:00Z");
    assert_inactive(&t, "2026-07-15T16:30:00Z");
    assert_active(&t, "2026-07-15T15:59:59Z");
}

#[test]
fn fixed_offset_has_no_dst() {
    let t = tt(days(vec![window("same_every_day", "02:00+05:00", "03:00+05:00")]));
    assert_active(&t, "2026-03-28T21:30:00Z");
    assert_active(&t, "2026-10-24T21:30:00Z");
}

// --- DST in IANA zones (README: "Daylight saving time") ------------------------------------

fn berlin(v: Value) -> Timetable {
    parse_in(v, chrono_tz::Europe::Berlin)
}

fn new_york(v: Value) -> Timetable {
    parse_in(v, chrono_tz::America::New_York)
}

#[test]
fn berlin_skipped_hour_window_is_empty_that_day() {
    let t = berlin(days(vec![window("same_every_day", "02:00", "03:00")]));
    assert_inactive(&t, "2026-03-29T00:59:59Z"); // 01:59:59 CET
    assert_inactive(&t, "2026-03-29T01:00:00Z"); // 03:00 CEST
    assert_active(&t, "2026-03-28T01:30:00Z"); // the day before: 02:30 CET
    assert_active(&t, "2026-03-30T00:30:00Z"); // the day after: 02:30 CEST
}

#[test]
fn berlin_window_ending_in_skipped_hour_ends_at_the_jump() {
    let t = berlin(days(vec![window("same_every_day", "01:00", "02:30")]));
    assert_active(&t, "2026-03-29T00:59:59Z");
    assert_inactive(&t, "2026-03-29T01:00:00Z");
}

#[test]
fn berlin_window_starting_in_skipped_hour_starts_at_the_jump() {
    let t = berlin(days(vec![window("same_every_day", "02:30", "04:00")]));
    assert_inactive(&t, "2026-03-29T00:59:59Z");
    assert_active(&t, "2026-03-29T01:00:00Z"); // 03:00 CEST
    assert_inactive(&t, "2026-03-29T02:00:00Z"); // 04:00 CEST
}

#[test]
fn berlin_repeated_hour_window_opens_once_and_stays_open() {
    let t = berlin(days(vec![window("same_every_day", "02:30", "04:00")]));
    assert_inactive(&t, "2026-10-25T00:29:59Z");
    assert_active(&t, "2026-10-25T00:30:00Z"); // first 02:30 (CEST)
    assert_active(&t, "2026-10-25T01:15:00Z"); // 02:15 CET: stays open, no second opening
    assert_active(&t, "2026-10-25T02:59:59Z");
    assert_inactive(&t, "2026-10-25T03:00:00Z"); // 04:00 CET
}

#[test]
fn berlin_window_ending_in_repeated_hour_ends_at_its_last_reading() {
    let t = berlin(days(vec![window("same_every_day", "01:00", "02:30")]));
    assert_active(&t, "2026-10-24T23:00:00Z"); // 01:00 CEST
    assert_active(&t, "2026-10-25T01:29:59Z"); // 02:29:59 CET
    assert_inactive(&t, "2026-10-25T01:30:00Z"); // 02:30 CET
}

#[test]
fn berlin_break_in_repeated_hour_covers_both_passes() {
    let t = berlin(days(vec![window_with_breaks(
        "same_every_day",
        "00:00",
        "23:59",
        &[("02:00", "03:00")],
    )]));
    assert_active(&t, "2026-10-24T23:59:59Z"); // 01:59:59 CEST
    assert_inactive(&t, "2026-10-25T00:30:00Z"); // 02:30 CEST
    assert_inactive(&t, "2026-10-25T01:30:00Z"); // 02:30 CET
    assert_active(&t, "2026-10-25T02:00:00Z"); // 03:00 CET
}

#[test]
fn berlin_overnight_window_over_spring_change_is_seven_hours() {
    let t = berlin(days(vec![window("saturday", "22:00", "06:00")]));
    assert_inactive(&t, "2026-03-28T20:59:59Z");
    assert_active(&t, "2026-03-28T21:00:00Z"); // 22:00 CET
    assert_active(&t, "2026-03-29T03:59:59Z"); // 05:59:59 CEST
    assert_inactive(&t, "2026-03-29T04:00:00Z"); // 06:00 CEST
}

#[test]
fn berlin_overnight_window_over_autumn_change_is_nine_hours() {
    let t = berlin(days(vec![window("saturday", "22:00", "06:00")]));
    assert_active(&t, "2026-10-24T20:00:00Z"); // 22:00 CEST
    assert_active(&t, "2026-10-25T04:59:59Z"); // 05:59:59 CET
    assert_inactive(&t, "2026-10-25T05:00:00Z"); // 06:00 CET
}

#[test]
fn new_york_skipped_hour() {
    let t = new_york(days(vec![window("same_every_day", "02:30", "03:30")]));
    assert_inactive(&t, "2026-03-08T06:59:59Z"); // 01:59:59 EST
    assert_active(&t, "2026-03-08T07:00:00Z"); // 03:00 EDT
    assert_inactive(&t, "2026-03-08T07:30:00Z"); // 03:30 EDT
}

#[test]
fn new_york_repeated_hour() {
    let t = new_york(days(vec![window("same_every_day", "01:00", "01:30")]));
    assert_inactive(&t, "2026-11-01T04:59:59Z");
    assert_active(&t, "2026-11-01T05:00:00Z"); // 01:00 EDT
    assert_active(&t, "2026-11-01T05:45:00Z"); // 01:45 EDT: open until the last 01:30
    assert_active(&t, "2026-11-01T06:29:59Z"); // 01:29:59 EST
    assert_inactive(&t, "2026-11-01T06:30:00Z"); // 01:30 EST
}

#[test]
fn new_york_overnight_window_over_autumn_change() {
    let t = new_york(days(vec![window("saturday", "23:00", "02:00")]));
    assert_active(&t, "2026-11-01T03:00:00Z"); // 23:00 EDT Saturday
    assert_active(&t, "2026-11-01T06:59:59Z"); // 01:59:59 EST
    assert_inactive(&t, "2026-11-01T07:00:00Z"); // 02:00 EST
}

// --- intervals ----------------------------------------------------------------------------

#[test]
fn interval_is_half_open() {
    let t = tt(
        json!({"intervals": [{"from": "2026-12-01 10:00:00+05:00", "to": "2026-12-01 12:00:00+05:00"}]}),
    );
    assert_inactive(&t, "2026-12-01T09:59:59+05:00");
    assert_active(&t, "2026-12-01T10:00:00+05:00");
    assert_active(&t, "2026-12-01T11:59:59+05:00");
    assert_inactive(&t, "2026-12-01T12:00:00+05:00");
    assert_reason(&t, "2026-12-01T13:00:00+05:00", "outside intervals");
}

#[test]
fn interval_in_rfc3339_and_without_offset() {
    let t = parse_in(
        json!({"intervals": [{"from": "2026-12-01T10:00:00Z", "to": "2026-12-01T11:00:00Z"}, {"from": "2026-12-02 10:00:00", "to": "2026-12-02 11:00:00"}]}),
        chrono_tz::Asia::Tokyo,
    );
    assert_active(&t, "2026-12-01T10:30:00Z");
    assert_active(&t, "2026-12-02T01:30:00Z"); // 10:30 Tokyo
    assert_inactive(&t, "2026-12-02T10:30:00Z");
}

#[test]
fn days_or_intervals_either_activates() {
    let t = tt(json!({
        "days": [window_with_breaks("same_every_day", "08:00", "17:00", &[("12:00", "13:00")])],
        "intervals": [{"from": "2026-12-01 00:00:00Z", "to": "2026-12-01 01:00:00Z"}, {"from": "2026-11-27 12:00:00Z", "to": "2026-11-27 12:10:00Z"}]
    }));
    assert_active(&t, "2026-12-01T00:30:00Z"); // outside days, inside interval 0
    assert_reason(&t, "2026-12-01T00:30:00Z", "in interval timetable.intervals.0");
    assert_active(&t, "2026-11-27T12:05:00Z"); // in a break, but inside interval 1
    assert_reason(&t, "2026-11-27T12:05:00Z", "in interval timetable.intervals.1");
    assert_reason(&t, "2026-11-27T12:30:00Z", "in break timetable.days.0.breaks.0");
    assert_reason(&t, "2026-11-27T09:00:00Z", "in window timetable.days.0");
    assert_reason(&t, "2026-11-27T20:00:00Z", "outside days and intervals");
}

#[test]
fn explain_outside_days() {
    let t = seed();
    assert_reason(&t, "2026-11-27T16:30:00+05:00", "in break timetable.days.0.breaks.0");
    let t = tt(days(vec![window("monday", "08:00", "09:00")]));
    assert_reason(&t, "2026-11-27T08:30:00Z", "outside days");
}
