use std::sync::Arc;

use chrono::DateTime;
use serde_json::{Value, json};

use super::*;
use crate::timetable::{ParseContext, parse_timetable};

fn t(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

fn d(s: &str) -> NaiveDate {
    parse_date(s).unwrap()
}

fn new_year() -> Arc<CalendarDates> {
    Arc::new(CalendarDates {
        id: 1,
        name: "Public holidays".into(),
        zone: Zone::from_tz(chrono_tz::Asia::Yekaterinburg),
        dates: vec![DateRange {
            from: d("2026-12-31"),
            to: d("2027-01-08"),
            title: Some("New Year".into()),
        }],
    })
}

fn parse(v: Value) -> Timetable {
    parse_timetable(&v, &ParseContext { timezone: chrono_tz::Europe::Berlin })
        .unwrap()
        .with_calendars(|id| (id == 1).then(new_year))
}

fn reason(tt: &Timetable, at: &str) -> (bool, String) {
    let v = tt.explain_at(t(at));
    (v.active, v.reason)
}

#[test]
fn a_calendar_day_replaces_the_days_with_the_holiday_windows() {
    let tt = parse(json!({
        "days": [{"type": "same_every_day", "from": "09:00", "to": "18:00"}],
        "holidays": {"calendars": [1], "windows": [{"from": "10:00", "to": "16:00", "breaks": [{"from": "12:00", "to": "13:00"}]}]}
    }));
    // An ordinary day.
    assert_eq!(
        reason(&tt, "2026-12-29T09:30:00+01:00"),
        (true, "in window timetable.days.0".into())
    );
    // 31 December in Yekaterinburg (+05:00) starts at 20:00 Berlin time on the 30th.
    assert_eq!(
        reason(&tt, "2026-12-30T17:00:00+01:00"),
        (true, "in window timetable.days.0".into())
    );
    assert_eq!(
        tt.holiday_at(t("2026-12-30T19:59:59+01:00")),
        None,
        "still the 30th in Yekaterinburg"
    );
    assert_eq!(
        tt.holiday_at(t("2026-12-30T20:00:00+01:00")),
        Some(HolidayHit::Calendar { id: 1, title: "New Year".into() })
    );
    assert_eq!(
        reason(&tt, "2026-12-31T09:30:00+01:00"),
        (false, "holiday calendar 1 \"New Year\"".into())
    );
    assert_eq!(
        reason(&tt, "2026-12-31T10:30:00+01:00"),
        (true, "in holiday window timetable.holidays.windows.0".into())
    );
    assert_eq!(
        reason(&tt, "2026-12-31T12:30:00+01:00"),
        (false, "in break timetable.holidays.windows.0.breaks.0".into())
    );
    // The last date (8 January) is included; the 9th in Yekaterinburg begins at 20:00 on the 8th Berlin time.
    assert!(!tt.is_active_at(t("2027-01-08T09:30:00+01:00")));
    assert!(tt.is_active_at(t("2027-01-08T10:30:00+01:00")));
    assert_eq!(
        tt.holiday_at(t("2027-01-08T19:59:59+01:00")).map(|h| h.reason()),
        Some("holiday calendar 1 \"New Year\"".into())
    );
    assert_eq!(tt.holiday_at(t("2027-01-08T20:00:00+01:00")), None);
    assert!(tt.is_active_at(t("2027-01-09T09:30:00+01:00")));
}

#[test]
fn inline_dates_without_windows_are_inactive_and_intervals_still_apply() {
    let tt = parse(json!({
        "days": [{"type": "weekdays", "from": "22:00", "to": "06:00"}],
        "intervals": [{"from": "2026-05-01 12:00:00", "to": "2026-05-01 13:00:00"}],
        "holidays": {"dates": [{"from": "2026-05-01", "title": "Labour Day"}]}
    }));
    // The Thursday-night window stops at the holiday's midnight (Berlin, the script's zone).
    assert!(tt.is_active_at(t("2026-04-30T23:59:59+02:00")));
    assert_eq!(
        reason(&tt, "2026-05-01T00:00:00+02:00"),
        (false, "holiday timetable.holidays.dates.0".into())
    );
    assert_eq!(
        reason(&tt, "2026-05-01T12:30:00+02:00"),
        (true, "in interval timetable.intervals.0".into())
    );
    assert_eq!(
        tt.holiday_at(t("2026-05-01T12:30:00+02:00")),
        Some(HolidayHit::Inline { index: 0, title: Some("Labour Day".into()) })
    );
    // The Friday-night window starts on the holiday: not applied either.
    assert!(!tt.is_active_at(t("2026-05-01T23:00:00+02:00")));
    // Monday night is ordinary again.
    assert!(tt.is_active_at(t("2026-05-04T23:00:00+02:00")));
}

#[test]
fn a_holiday_on_a_dst_change_day_lasts_as_long_as_the_day() {
    let tt = parse(json!({
        "days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}],
        "holidays": {"dates": [{"from": "2026-03-29", "to": "2026-03-29"}]}
    }));
    let spans = tt.holiday_spans();
    assert_eq!(spans, vec![(t("2026-03-29T00:00:00+01:00"), t("2026-03-30T00:00:00+02:00"))]);
    assert_eq!(spans[0].1 - spans[0].0, 23 * 3600);
    assert!(tt.is_active_at(t("2026-03-28T23:59:59+01:00")));
    assert!(!tt.is_active_at(t("2026-03-29T12:00:00+02:00")));
    assert!(tt.is_active_at(t("2026-03-30T00:00:00+02:00")));
}

#[test]
fn spans_merge_overlapping_dates() {
    let tt = parse(json!({
        "days": [{"type": "same_every_day", "from": "09:00", "to": "18:00"}],
        "holidays": {"calendars": [1], "dates": [{"from": "2027-01-08", "to": "2027-01-10"}]}
    }));
    let spans = tt.holiday_spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].0, t("2026-12-31T00:00:00+05:00"));
    assert_eq!(spans[0].1, t("2027-01-11T00:00:00+01:00"));
}

#[test]
fn unknown_calendars_have_no_dates_and_bad_keys_are_named() {
    let tt = parse_timetable(
        &json!({"days": [{"type": "same_every_day", "from": "09:00", "to": "18:00"}], "holidays": {"calendars": [7]}}),
        &ParseContext::default(),
    )
    .unwrap();
    assert_eq!(tt.calendar_ids(), &[7]);
    assert!(tt.holiday_spans().is_empty());
    let e = parse_timetable(
        &json!({"days": [{"type": "same_every_day", "from": "09:00", "to": "18:00"}], "holidays": {
            "calendars": ["x", 0],
            "dates": [{"from": "2026-5-1"}, {"from": "2026-05-02", "to": "2026-05-01"}],
            "windows": [{"from": "10:00", "to": "10:00"}, {"from": "10:00", "to": "16:00", "breaks": [{"from": "17:00", "to": "18:00"}]}]
        }}),
        &ParseContext::default(),
    )
    .unwrap_err();
    for key in [
        "timetable.holidays.calendars.0",
        "timetable.holidays.calendars.1",
        "timetable.holidays.dates.0.from",
        "timetable.holidays.dates.1.to",
        "timetable.holidays.windows.0.to",
        "timetable.holidays.windows.1.breaks.0.from",
    ] {
        assert!(e.contains(key), "{key} missing: {}", e.message());
    }
    let e = parse_timetable(
        &json!({"days": [{"type": "same_every_day", "from": "09:00", "to": "18:00"}], "holidays": []}),
        &ParseContext::default(),
    )
    .unwrap_err();
    assert!(e.contains("timetable.holidays"));
}
