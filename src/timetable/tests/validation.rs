//! Validation: errors by dotted path (see the parent module's helpers).

use super::*;

#[test]
fn invalid_not_an_object() {
    assert_invalid(json!([]), &["timetable"]);
    assert_invalid(json!("always"), &["timetable"]);
}

#[test]
fn invalid_neither_days_nor_intervals() {
    assert_invalid(json!({}), &["timetable"]);
    assert_invalid(json!({"days": [], "intervals": []}), &["timetable"]);
    assert_invalid(json!({"days": null}), &["timetable"]);
}

#[test]
fn invalid_days_not_an_array() {
    assert_invalid(json!({"days": {"type": "weekdays"}}), &["timetable.days"]);
    assert_invalid(
        json!({"days": [window("weekdays", "08:00", "09:00")], "intervals": 5}),
        &["timetable.intervals"],
    );
}

#[test]
fn invalid_day_entry_fields() {
    assert_invalid(days(vec![json!(7)]), &["timetable.days.0"]);
    assert_invalid(days(vec![json!({"from": "08:00", "to": "09:00"})]), &["timetable.days.0.type"]);
    assert_invalid(days(vec![window("holidays", "08:00", "09:00")]), &["timetable.days.0.type"]);
    assert_invalid(
        days(vec![json!({"type": "weekdays", "to": "09:00"})]),
        &["timetable.days.0.from"],
    );
    assert_invalid(days(vec![window("weekdays", "8am", "09:00")]), &["timetable.days.0.from"]);
    assert_invalid(days(vec![window("weekdays", "08:00", "24:00")]), &["timetable.days.0.to"]);
    assert_invalid(
        days(vec![json!({"type": "weekdays", "from": 8, "to": "09:00"})]),
        &["timetable.days.0.from"],
    );
}

#[test]
fn invalid_equal_bounds() {
    assert_invalid(days(vec![window("weekdays", "08:00", "08:00")]), &["timetable.days.0.to"]);
    // Equal after conversion into the entry's zone.
    assert_invalid(
        days(vec![window("weekdays", "08:00+05:00", "06:00+03:00")]),
        &["timetable.days.0.to"],
    );
}

#[test]
fn invalid_breaks() {
    assert_invalid(
        days(vec![window_with_breaks("weekdays", "08:00", "17:00", &[("07:00", "09:00")])]),
        &["timetable.days.0.breaks.0.from"],
    );
    assert_invalid(
        days(vec![window_with_breaks(
            "weekdays",
            "08:00",
            "17:00",
            &[("12:00", "13:00"), ("16:00", "18:00")],
        )]),
        &["timetable.days.0.breaks.1.to"],
    );
    assert_invalid(
        days(vec![window_with_breaks("weekdays", "22:00", "06:00", &[("05:00", "07:00")])]),
        &["timetable.days.0.breaks.0.to"],
    );
    assert_invalid(
        days(vec![window_with_breaks("weekdays", "08:00", "17:00", &[("12:00", "12:00")])]),
        &["timetable.days.0.breaks.0.to"],
    );
    assert_invalid(
        days(vec![window_with_breaks("weekdays", "08:00", "17:00", &[("noon", "13:00")])]),
        &["timetable.days.0.breaks.0.from"],
    );
    assert_invalid(
        days(vec![
            json!({"type": "weekdays", "from": "08:00", "to": "17:00", "breaks": [{"from": "12:00", "to": "13:00"}, "lunch"]}),
        ]),
        &["timetable.days.0.breaks.1"],
    );
    assert_invalid(
        days(vec![json!({"type": "weekdays", "from": "08:00", "to": "17:00", "breaks": {}})]),
        &["timetable.days.0.breaks"],
    );
}

#[test]
fn invalid_intervals() {
    assert_invalid(
        json!({"intervals": [{"from": "2026-12-01 10:00:00Z", "to": "2026-12-01 10:00:00Z"}]}),
        &["timetable.intervals.0.to"],
    );
    assert_invalid(
        json!({"intervals": [{"from": "2026-12-02 10:00:00Z", "to": "2026-12-01 10:00:00Z"}]}),
        &["timetable.intervals.0.to"],
    );
    assert_invalid(
        json!({"intervals": [{"from": "tomorrow", "to": "2026-12-01 10:00:00Z"}]}),
        &["timetable.intervals.0.from"],
    );
    assert_invalid(
        json!({"intervals": [{"to": "2026-12-01 10:00:00Z"}]}),
        &["timetable.intervals.0.from"],
    );
    assert_invalid(json!({"intervals": [[1, 2]]}), &["timetable.intervals.0"]);
}

#[test]
fn every_error_is_reported_at_once() {
    assert_invalid(
        json!({"days": [window("weekdays", "25:00", "09:00"), window("someday", "08:00", "09:00")], "intervals": [{"from": "x", "to": "y"}]}),
        &[
            "timetable.days.0.from",
            "timetable.days.1.type",
            "timetable.intervals.0.from",
            "timetable.intervals.0.to",
        ],
    );
}
