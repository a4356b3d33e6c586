//! A script's week as the engine sees it: for each local day of a week, the stretches when
//! its timetable is active or not, and why (the status page draws them).
//!
//! Whether a moment is active comes from a [`ScheduleIndex`] built from the script's
//! timetable alone (the index the intake matches with, same compile step); the reason of
//! each stretch (window, interval, break, outside) from [`Timetable::explain_at`]. The day
//! is sampled every minute and every change is then placed to the second by bisection, so
//! the picture agrees with what fires down to the second. (A window or break shorter than a
//! minute that starts and ends between two sampled minutes is not drawn.)
//!
//! Days are local calendar days in the configured zone, so a day holding a DST change is
//! 23 or 25 hours long; offsets within a day count elapsed seconds from its start.

use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::index::ScheduleIndex;
use crate::index::rules::Rule;
use crate::timetable::{HolidayHit, Timetable};

/// One stretch of a day with one state and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Start, unix seconds (inclusive).
    pub from: i64,
    /// End, unix seconds (exclusive).
    pub to: i64,
    /// The script fires in it (event and camera permitting).
    pub active: bool,
    /// Why: `in window timetable.days.N`, `in break timetable.days.N.breaks.M`, …
    pub reason: String,
}

/// One local day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// The local date.
    pub date: NaiveDate,
    /// Its first instant, unix seconds.
    pub start: i64,
    /// The next day's first instant, unix seconds.
    pub end: i64,
    /// Its stretches, in order, covering `[start, end)`.
    pub segments: Vec<Segment>,
    /// The holiday the day is (partly) on, if any: the first one it overlaps.
    pub holiday: Option<HolidayHit>,
}

/// The first instant of local `date` in `tz` (a midnight skipped by a DST change starts
/// the day at the first valid local time after it).
fn day_start(tz: Tz, date: NaiveDate) -> i64 {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..=3)
        .find_map(|h| tz.from_local_datetime(&(midnight + chrono::Duration::hours(h))).earliest())
        .map_or_else(|| midnight.and_utc().timestamp(), |t| t.timestamp())
}

/// The seven days from `start` of a timetable read in `tz`.
pub fn week(timetable: Arc<Timetable>, tz: Tz, start: NaiveDate) -> Vec<Day> {
    let index = ScheduleIndex::build(vec![Rule {
        script_id: 1,
        event_id: 1,
        cameras: None,
        enabled: true,
        timetable: timetable.clone(),
    }]);
    let state = |t: i64| -> (bool, String) {
        let at = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
        (!index.matches(1, 1, at).is_empty(), timetable.explain_at(t).reason)
    };
    let holidays = timetable.holiday_spans();
    (0..7)
        .filter_map(|i| start.checked_add_days(Days::new(i)))
        .map(|date| {
            let (from, to) = (day_start(tz, date), day_start(tz, date.succ_opt().unwrap_or(date)));
            let holiday = holidays
                .iter()
                .find(|&&(f, t)| f < to && from < t)
                .and_then(|&(f, _)| timetable.holiday_at(f.max(from)));
            Day { date, start: from, end: to, segments: segments(&state, from, to), holiday }
        })
        .collect()
}

/// The stretches of `[from, to)`: sampled every minute, each change placed by bisection.
fn segments(state: &impl Fn(i64) -> (bool, String), from: i64, to: i64) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut current = state(from);
    let mut seg_start = from;
    let mut prev = from;
    let mut t = from;
    while t < to {
        t = (t + 60).min(to);
        let probe = if t < to { state(t) } else { current.clone() };
        if probe != current {
            // The first second in (prev, t] whose state differs from `current`.
            let (mut lo, mut hi) = (prev, t);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if state(mid) == current { lo = mid } else { hi = mid }
            }
            out.push(Segment { from: seg_start, to: hi, active: current.0, reason: current.1 });
            seg_start = hi;
            current = state(hi);
            // A second change within the same minute is found on the next sample.
            t = hi;
        }
        prev = t;
    }
    out.push(Segment { from: seg_start, to, active: current.0, reason: current.1 });
    out
}

/// The API's object for a day (times RFC 3339 in the zone, offsets in seconds from the
/// day's start, `hours` its length).
pub fn day_json(day: &Day, tz: Tz) -> Value {
    let local = |t: i64| {
        tz.timestamp_opt(t, 0)
            .single()
            .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let segments: Vec<Value> = day
        .segments
        .iter()
        .map(|s| {
            json!({
                "from": local(s.from),
                "to": local(s.to),
                "from_second": s.from - day.start,
                "to_second": s.to - day.start,
                "active": s.active,
                "reason": s.reason,
            })
        })
        .collect();
    json!({
        "date": day.date.to_string(),
        "starts_at": local(day.start),
        "ends_at": local(day.end),
        "hours": (day.end - day.start) as f64 / 3600.0,
        "segments": segments,
        "holiday": day.holiday.as_ref().map(|h| json!({
            "title": h.title(),
            "calendar_id": h.calendar_id(),
            "reason": h.reason(),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timetable::{ParseContext, parse_timetable};

    fn tt(v: Value, tz: Tz) -> Arc<Timetable> {
        Arc::new(parse_timetable(&v, &ParseContext { timezone: tz }).unwrap())
    }

    #[test]
    fn a_break_is_a_gap_to_the_second_and_days_cover_the_week() {
        let t = tt(
            json!({"days": [{"type": "weekdays", "from": "08:00", "to": "18:00",
                             "breaks": [{"from": "12:00:30", "to": "13:00"}]}]}),
            chrono_tz::UTC,
        );
        let monday = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let days = week(t, chrono_tz::UTC, monday);
        assert_eq!(days.len(), 7);
        let m = &days[0];
        let shape: Vec<(i64, i64, bool, &str)> = m
            .segments
            .iter()
            .map(|s| (s.from - m.start, s.to - m.start, s.active, s.reason.as_str()))
            .collect();
        assert_eq!(
            shape,
            [
                (0, 8 * 3600, false, "outside days"),
                (8 * 3600, 12 * 3600 + 30, true, "in window timetable.days.0"),
                (12 * 3600 + 30, 13 * 3600, false, "in break timetable.days.0.breaks.0"),
                (13 * 3600, 18 * 3600, true, "in window timetable.days.0"),
                (18 * 3600, 86_400, false, "outside days"),
            ]
        );
        // Saturday: nothing.
        assert_eq!(days[5].segments.len(), 1);
        assert!(!days[5].segments[0].active);
        for w in days.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }

    #[test]
    fn dst_days_are_23_and_25_hours_and_the_window_follows_local_time() {
        let berlin = chrono_tz::Europe::Berlin;
        let t = tt(
            json!({"days": [{"type": "same_every_day", "from": "01:00", "to": "04:00"}]}),
            berlin,
        );
        let spring = week(t.clone(), berlin, NaiveDate::from_ymd_opt(2026, 3, 29).unwrap());
        assert_eq!(spring[0].end - spring[0].start, 23 * 3600);
        // 01:00–04:00 local on the short night is two hours long.
        let active: i64 =
            spring[0].segments.iter().filter(|s| s.active).map(|s| s.to - s.from).sum();
        assert_eq!(active, 2 * 3600);
        let autumn = week(t, berlin, NaiveDate::from_ymd_opt(2026, 10, 25).unwrap());
        assert_eq!(autumn[0].end - autumn[0].start, 25 * 3600);
        let active: i64 =
            autumn[0].segments.iter().filter(|s| s.active).map(|s| s.to - s.from).sum();
        assert_eq!(active, 4 * 3600);
    }
}
