//! Random timetables for property tests: day entries of every type (overnight windows,
//! breaks, offsets written per time, other-zone ends), absolute intervals, the zones they
//! are read in, and instants clustered around the DST changes of 2026.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use serde_json::{Value, json};

pub const ZONES: [Tz; 5] = [
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Lord_Howe, // half-hour DST shift
    chrono_tz::Asia::Kolkata,
];

/// DST changes of 2026 the instants cluster around, plus an ordinary week.
pub const CENTERS: [&str; 6] = [
    "2026-03-29T01:00:00Z", // Berlin spring
    "2026-10-25T01:00:00Z", // Berlin autumn
    "2026-03-08T07:00:00Z", // New York spring
    "2026-11-01T06:00:00Z", // New York autumn
    "2026-04-04T15:00:00Z", // Lord Howe autumn (2026-04-05 02:00 local)
    "2026-11-27T12:00:00Z",
];

pub fn center(i: usize) -> i64 {
    DateTime::parse_from_rfc3339(CENTERS[i]).map(|d| d.timestamp()).unwrap_or(0)
}

pub fn offset_suffix() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        2 => Just("+05:00".to_owned()),
        1 => Just("Z".to_owned()),
        1 => Just("-03:30".to_owned()),
        1 => Just("+01:00".to_owned()),
    ]
}

pub fn hms(secs: u32) -> String {
    let s = secs % 86_400;
    if s.is_multiple_of(60) {
        format!("{:02}:{:02}", s / 3600, (s % 3600) / 60)
    } else {
        format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    }
}

/// A time of day, mostly on round minutes (edges then coincide with test instants).
pub fn time_of_day() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => (0u32..24, prop::sample::select(vec![0u32, 15, 30, 45])).prop_map(|(h, m)| h * 3600 + m * 60),
        1 => (0u32..24, 0u32..60).prop_map(|(h, m)| h * 3600 + m * 60),
        1 => 0u32..86_400,
        1 => prop::sample::select(vec![7200u32, 9000, 10_800, 3600, 5400]), // 02:00, 02:30, 03:00, 01:00, 01:30
    ]
}

pub fn day_entry() -> impl Strategy<Value = Value> {
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

pub fn interval() -> impl Strategy<Value = Value> {
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

pub fn timetable() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(day_entry(), 0..4),
        prop::option::weighted(0.3, prop::collection::vec(interval(), 1..3)),
    )
        .prop_map(
            |(days, intervals)| json!({"days": days, "intervals": intervals.unwrap_or_default()}),
        )
}

pub fn instant() -> impl Strategy<Value = i64> {
    (
        0usize..CENTERS.len(),
        -3 * 1440i64..3 * 1440,
        prop::sample::select(vec![-1i64, 0, 0, 0, 1, 1800]),
    )
        .prop_map(|(c, minutes, delta)| center(c) + minutes * 60 + delta)
}

/// A local date near one of the [`CENTERS`] (±3 days), as `YYYY-MM-DD`, and a range of 1–3
/// days from it.
pub fn date_range() -> impl Strategy<Value = Value> {
    (0usize..CENTERS.len(), -3i64..=3, 0i64..3, any::<bool>()).prop_map(
        |(c, shift, len, titled)| {
            let day = |d: i64| {
                DateTime::<Utc>::from_timestamp(center(c) + d * 86_400, 0)
                    .unwrap_or_default()
                    .format("%Y-%m-%d")
                    .to_string()
            };
            let mut v = json!({"from": day(shift), "to": day(shift + len)});
            if titled {
                v["title"] = json!(format!("Holiday {c}{shift}"));
            }
            v
        },
    )
}

/// A holiday window: a day entry without `type`.
pub fn holiday_window() -> impl Strategy<Value = Value> {
    day_entry().prop_map(|mut d| {
        if let Value::Object(m) = &mut d {
            m.remove("type");
        }
        d
    })
}

/// `timetable.holidays` listing some of the calendars `1..=calendars`, inline dates and
/// 0–2 holiday windows.
pub fn holidays(calendars: i64) -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_set(1i64..=calendars.max(1), 0..3),
        prop::collection::vec(date_range(), 0..3),
        prop::collection::vec(holiday_window(), 0..3),
    )
        .prop_map(|(cals, dates, windows)| {
            json!({"calendars": cals.into_iter().collect::<Vec<_>>(), "dates": dates, "windows": windows})
        })
}

/// A timetable that may have holidays (70 %) over calendars `1..=calendars`.
pub fn timetable_with_holidays(calendars: i64) -> impl Strategy<Value = Value> {
    (timetable(), prop::option::weighted(0.7, holidays(calendars))).prop_map(|(mut tt, h)| {
        if let Some(h) = h {
            tt["holidays"] = h;
        }
        tt
    })
}

/// A calendar's contents: a zone of [`ZONES`] and 1–6 date ranges near the [`CENTERS`].
pub fn calendar() -> impl Strategy<Value = (usize, Vec<Value>)> {
    (0usize..ZONES.len(), prop::collection::vec(date_range(), 1..6))
}
