//! The API's `timetable` JSON into a [`Timetable`], with errors by dotted path.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Weekday};
use chrono_tz::Tz;
use serde_json::Value;

use super::holidays::parse_holidays;
use super::zone::Zone;
use super::{Axis, AxisError, Bound, Break, DayEntry, DayKind, Interval, Timetable};
use crate::script::validation::FieldErrors;

/// What parsing needs besides the JSON: the zone of times written without an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseContext {
    /// The configured `timezone`.
    pub timezone: Tz,
}

impl Default for ParseContext {
    fn default() -> Self {
        ParseContext { timezone: chrono_tz::UTC }
    }
}

const TIME_FORMAT: &str =
    "must be a time of day HH:MM or HH:MM:SS, optionally followed by an offset ±HH:MM or Z";
const DATETIME_FORMAT: &str = "must be a date-time YYYY-MM-DD HH:MM:SS, optionally followed by an offset ±HH:MM or Z (RFC 3339 is accepted too)";
const DAY_TYPES: &str = "must be one of same_every_day, weekdays, weekends, monday, tuesday, wednesday, thursday, friday, saturday, sunday";

/// A time of day as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WrittenTime {
    secs: u32,
    offset: Option<i32>,
    /// `23:59`, `23:59:00` or `23:59:59`: the end of the day when used as an end.
    end_of_day: bool,
}

/// Parses `HH:MM`, `HH:MM:SS`, each optionally followed by `±HH:MM` or `Z`.
fn parse_time(s: &str) -> Option<WrittenTime> {
    let b = s.as_bytes();
    let two = |i: usize| -> Option<u32> {
        let (h, l) = (*b.get(i)?, *b.get(i + 1)?);
        (h.is_ascii_digit() && l.is_ascii_digit())
            .then(|| u32::from(h - b'0') * 10 + u32::from(l - b'0'))
    };
    let hh = two(0)?;
    if b.get(2) != Some(&b':') {
        return None;
    }
    let mm = two(3)?;
    let (ss, mut rest) = if b.get(5) == Some(&b':') { (two(6)?, 8) } else { (0, 5) };
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let offset = match b.get(rest) {
        None => None,
        Some(b'Z') | Some(b'z') => {
            rest += 1;
            Some(0)
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = two(rest + 1)?;
            if b.get(rest + 3) != Some(&b':') {
                return None;
            }
            let om = two(rest + 4)?;
            if oh > 23 || om > 59 {
                return None;
            }
            rest += 6;
            let off = (oh * 3600 + om * 60) as i32;
            Some(if sign == b'-' { -off } else { off })
        }
        Some(_) => return None,
    };
    if rest != b.len() {
        return None;
    }
    Some(WrittenTime {
        secs: hh * 3600 + mm * 60 + ss,
        offset,
        end_of_day: hh == 23 && mm == 59 && (ss == 0 || ss == 59),
    })
}

/// Parses an interval bound into a unix second; `late` picks the resolution of a reading
/// the clock shows twice (see [`Zone`]).
fn parse_datetime(s: &str, ctx: &ParseContext, late: bool) -> Option<i64> {
    let s = s.trim();
    // `YYYY-MM-DD HH:MM:SS…`: the seed's form; RFC 3339 uses a `T`.
    let normalized: String = if s.len() > 10 && s.as_bytes()[10] == b' ' {
        format!("{}T{}", &s[..10], &s[11..])
    } else {
        s.to_owned()
    };
    if let Ok(dt) = DateTime::parse_from_rfc3339(&normalized) {
        return Some(dt.timestamp());
    }
    for fmt in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(&normalized, fmt) {
            return Some(dt.timestamp());
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(local) = NaiveDateTime::parse_from_str(&normalized, fmt) {
            let zone = Zone::from_tz(ctx.timezone);
            return Some(if late { zone.resolve_late(local) } else { zone.resolve_early(local) });
        }
    }
    None
}

fn parse_kind(s: &str) -> Option<DayKind> {
    Some(match s {
        "same_every_day" => DayKind::EveryDay,
        "weekdays" => DayKind::Weekdays,
        "weekends" => DayKind::Weekends,
        "monday" => DayKind::Day(Weekday::Mon),
        "tuesday" => DayKind::Day(Weekday::Tue),
        "wednesday" => DayKind::Day(Weekday::Wed),
        "thursday" => DayKind::Day(Weekday::Thu),
        "friday" => DayKind::Day(Weekday::Fri),
        "saturday" => DayKind::Day(Weekday::Sat),
        "sunday" => DayKind::Day(Weekday::Sun),
        _ => return None,
    })
}

/// Reads the string field `key` of `obj`, recording "is required" / "must be a string".
fn string_field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut FieldErrors,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            errors.add(format!("{path}.{key}"), "is required");
            None
        }
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            errors.add(format!("{path}.{key}"), "must be a string");
            None
        }
    }
}

/// Reads an optional array field: missing or null is empty.
fn array_field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut FieldErrors,
) -> &'a [Value] {
    match obj.get(key) {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.add(format!("{path}.{key}"), "must be an array");
            &[]
        }
    }
}

fn time_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut FieldErrors,
) -> Option<WrittenTime> {
    let s = string_field(obj, key, path, errors)?;
    let t = parse_time(s);
    if t.is_none() {
        errors.add(format!("{path}.{key}"), TIME_FORMAT);
    }
    t
}

/// Converts a written end or break bound into the entry's zone.
fn bound_in(entry_zone: Zone, t: WrittenTime, is_end: bool, ctx: &ParseContext) -> Bound {
    if is_end && t.end_of_day {
        return Bound::Fixed(86_400);
    }
    let zone = match t.offset {
        Some(off) => Zone::Fixed(off),
        None => Zone::from_tz(ctx.timezone),
    };
    match (zone, entry_zone) {
        (a, b) if a == b => Bound::Fixed(t.secs),
        (Zone::Fixed(a), Zone::Fixed(b)) => {
            Bound::Fixed((i64::from(t.secs) - i64::from(a) + i64::from(b)).rem_euclid(86_400) as u32)
        }
        _ => Bound::Convert { secs: t.secs, zone },
    }
}

/// Dates on which entries whose bounds convert per date are checked: one winter and one
/// summer day on each hemisphere's clock.
fn check_dates() -> [NaiveDate; 2] {
    [
        NaiveDate::from_ymd_opt(2026, 1, 15).unwrap_or_default(),
        NaiveDate::from_ymd_opt(2026, 7, 15).unwrap_or_default(),
    ]
}

fn parse_day(
    value: &Value,
    path: &str,
    ctx: &ParseContext,
    errors: &mut FieldErrors,
) -> Option<DayEntry> {
    parse_entry(value, path, ctx, errors, true)
}

/// Parses a holiday window: a day entry without `type` (read as every day).
pub(super) fn parse_window(
    value: &Value,
    path: &str,
    ctx: &ParseContext,
    errors: &mut FieldErrors,
) -> Option<DayEntry> {
    parse_entry(value, path, ctx, errors, false)
}

fn parse_entry(
    value: &Value,
    path: &str,
    ctx: &ParseContext,
    errors: &mut FieldErrors,
    typed: bool,
) -> Option<DayEntry> {
    let Value::Object(obj) = value else {
        let keys = if typed { "type, from, to and breaks" } else { "from, to and breaks" };
        errors.add(path, format!("must be an object with {keys}"));
        return None;
    };
    let before = errors.len();
    let kind = if typed {
        string_field(obj, "type", path, errors).and_then(|s| {
            let k = parse_kind(s);
            if k.is_none() {
                errors.add(format!("{path}.type"), DAY_TYPES);
            }
            k
        })
    } else {
        Some(DayKind::EveryDay)
    };
    let from = time_field(obj, "from", path, errors);
    let to = time_field(obj, "to", path, errors);
    let mut breaks_written = Vec::new();
    for (j, b) in array_field(obj, "breaks", path, errors).iter().enumerate() {
        let bpath = format!("{path}.breaks.{j}");
        let Value::Object(bobj) = b else {
            errors.add(bpath, "must be an object with from and to");
            continue;
        };
        let bf = time_field(bobj, "from", &bpath, errors);
        let bt = time_field(bobj, "to", &bpath, errors);
        if let (Some(bf), Some(bt)) = (bf, bt) {
            breaks_written.push((bf, bt));
        }
    }
    if errors.len() != before {
        return None;
    }
    let (kind, from, to) = (kind?, from?, to?);
    let zone = match from.offset {
        Some(off) => Zone::Fixed(off),
        None => Zone::from_tz(ctx.timezone),
    };
    let entry = DayEntry {
        kind,
        zone,
        from: from.secs,
        to: bound_in(zone, to, true, ctx),
        breaks: breaks_written
            .iter()
            .map(|&(bf, bt)| Break {
                from: bound_in(zone, bf, false, ctx),
                to: bound_in(zone, bt, true, ctx),
            })
            .collect(),
    };
    // Check the window's shape: on any day for static bounds, on sample dates otherwise.
    let dates: Vec<NaiveDate> =
        if entry.is_static() { vec![check_dates()[0]] } else { check_dates().to_vec() };
    for date in dates {
        let to = entry.to.seconds_on(date, zone);
        let breaks: Vec<(u32, u32)> = entry
            .breaks
            .iter()
            .map(|b| (b.from.seconds_on(date, zone), b.to.seconds_on(date, zone)))
            .collect();
        if let Err(e) = Axis::new(entry.from, to, &breaks) {
            let (key, reason) = match e {
                AxisError::Empty => (
                    format!("{path}.to"),
                    "must differ from from: a window cannot be empty".to_owned(),
                ),
                AxisError::BreakEmpty(j) => (
                    format!("{path}.breaks.{j}.to"),
                    "must differ from from: a break cannot be empty".to_owned(),
                ),
                AxisError::BreakStartsOutside(j) => {
                    (format!("{path}.breaks.{j}.from"), window_reason(obj))
                }
                AxisError::BreakEndsOutside(j) => {
                    (format!("{path}.breaks.{j}.to"), window_reason(obj))
                }
            };
            errors.add(key, reason);
            return None;
        }
    }
    Some(entry)
}

fn window_reason(obj: &serde_json::Map<String, Value>) -> String {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    format!("must lie inside its window {}–{}", s("from"), s("to"))
}

fn parse_interval(
    value: &Value,
    path: &str,
    ctx: &ParseContext,
    errors: &mut FieldErrors,
) -> Option<Interval> {
    let Value::Object(obj) = value else {
        errors.add(path, "must be an object with from and to");
        return None;
    };
    let mut bound = |key: &str, late: bool| -> Option<i64> {
        let s = string_field(obj, key, path, errors)?;
        let t = parse_datetime(s, ctx, late);
        if t.is_none() {
            errors.add(format!("{path}.{key}"), DATETIME_FORMAT);
        }
        t
    };
    let from = bound("from", false);
    let to = bound("to", true);
    let (from, to) = (from?, to?);
    if from >= to {
        errors.add(format!("{path}.to"), "must be later than from");
        return None;
    }
    Some(Interval { from, to })
}

/// Parses the API's `timetable` object. Errors are keyed by full dotted path
/// (`timetable.days.0.breaks.1.from`), ready for the 422 body.
///
/// ```
/// use scriptd::timetable::{ParseContext, parse_timetable};
/// let tt = parse_timetable(
///     &serde_json::json!({"days": [{"type": "same_every_day", "from": "22:00+05:00", "to": "06:00+05:00", "breaks": []}]}),
///     &ParseContext::default(),
/// ).unwrap();
/// // 23:30 at +05:00 is inside the overnight window.
/// assert!(tt.is_active_at(chrono::DateTime::parse_from_rfc3339("2026-11-27T23:30:00+05:00").unwrap().timestamp()));
/// ```
pub fn parse_timetable(value: &Value, ctx: &ParseContext) -> Result<Timetable, FieldErrors> {
    let mut errors = FieldErrors::new();
    let Value::Object(obj) = value else {
        return Err(FieldErrors::single(
            "timetable",
            "must be an object with days and/or intervals",
        ));
    };
    let days_json = array_field(obj, "days", "timetable", &mut errors);
    let intervals_json = array_field(obj, "intervals", "timetable", &mut errors);
    let mut days = Vec::with_capacity(days_json.len());
    for (i, d) in days_json.iter().enumerate() {
        if let Some(entry) = parse_day(d, &format!("timetable.days.{i}"), ctx, &mut errors) {
            days.push(entry);
        }
    }
    let mut intervals = Vec::with_capacity(intervals_json.len());
    for (k, iv) in intervals_json.iter().enumerate() {
        if let Some(interval) =
            parse_interval(iv, &format!("timetable.intervals.{k}"), ctx, &mut errors)
        {
            intervals.push(interval);
        }
    }
    // The script's zone: its first day entry's, else `timezone`.
    let zone = days.first().map_or_else(|| Zone::from_tz(ctx.timezone), |d| d.zone);
    let holidays = match obj.get("holidays") {
        None | Some(Value::Null) => None,
        Some(h) => parse_holidays(h, zone, ctx, &mut errors),
    };
    if errors.is_empty() && days.is_empty() && intervals.is_empty() {
        errors.add("timetable", "needs at least one entry in days or intervals");
    }
    errors.into_result(Timetable { days, intervals, holidays })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        let t = parse_time("08:30").unwrap();
        assert_eq!((t.secs, t.offset, t.end_of_day), (8 * 3600 + 1800, None, false));
        let t = parse_time("23:59:59+05:00").unwrap();
        assert_eq!((t.secs, t.offset, t.end_of_day), (86_399, Some(18_000), true));
        assert_eq!(parse_time("00:00Z").unwrap().offset, Some(0));
        assert_eq!(parse_time("10:00-03:30").unwrap().offset, Some(-12_600));
        assert!(parse_time("23:59:30").is_some_and(|t| !t.end_of_day));
        for bad in [
            "",
            "8:00",
            "24:00",
            "12:60",
            "12:00:60",
            "12:00+5",
            "12:00+05",
            "12:00 ",
            "12:00:00.5",
            "１２:00",
            "12:00+05:00x",
        ] {
            assert!(parse_time(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn datetime_formats() {
        let ctx = ParseContext::default();
        let want = DateTime::parse_from_rfc3339("2026-11-27T16:30:05+05:00").unwrap().timestamp();
        assert_eq!(parse_datetime("2026-11-27 16:30:05+05:00", &ctx, false), Some(want));
        assert_eq!(parse_datetime("2026-11-27T16:30:05+05:00", &ctx, false), Some(want));
        assert_eq!(parse_datetime("2026-11-27T11:30:05Z", &ctx, false), Some(want));
        assert_eq!(parse_datetime("2026-11-27 11:30:05", &ctx, false), Some(want));
        assert!(parse_datetime("2026-13-27 11:30:05", &ctx, false).is_none());
        assert!(parse_datetime("yesterday", &ctx, false).is_none());
    }
}
