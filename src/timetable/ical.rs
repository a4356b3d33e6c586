//! iCalendar (RFC 5545) files into calendar dates (CONTRACT §12).
//!
//! Parsed with the `icalendar` crate. Each all-day `VEVENT` becomes one date range:
//! `DTSTART;VALUE=DATE` to `DTEND` (exclusive; missing: one day; `DURATION:PnD`/`PnW`
//! accepted), `SUMMARY` as the title. `RRULE:FREQ=YEARLY` (with `INTERVAL`, `COUNT`,
//! `UNTIL`, and `BYMONTH`/`BYMONTHDAY` when they restate the start) is expanded from the
//! year before the import to five years after; `EXDATE`s are left out; cancelled events
//! are skipped. Any other rule, `RDATE`, or a timed event is refused, naming the event's
//! `UID`. The number of events is checked before anything is parsed, so a huge file costs
//! one pass over its text.

use chrono::{Datelike, Duration, NaiveDate};
use icalendar::parser::{Component, read_calendar, unfold};

use super::holidays::DateRange;
use crate::script::validation::FieldErrors;

/// Most `VEVENT`s one file may hold.
pub const MAX_EVENTS: usize = 5_000;

/// Years expanded around the import's year: one before, five after.
const YEARS_BEFORE: i32 = 1;
const YEARS_AFTER: i32 = 5;

fn date_of(value: &str) -> Option<NaiveDate> {
    let v = value.trim();
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(v, "%Y%m%d").ok()
}

/// Reads a date-valued property; `Err` with the reason when it is timed or malformed.
fn date_prop(event: &Component<'_>, name: &str) -> Result<Option<NaiveDate>, String> {
    let Some(p) = event.find_prop(name) else { return Ok(None) };
    let value = p.val.as_str();
    if value.contains('T') {
        return Err(format!(
            "is a timed event ({name}:{value}); only all-day events (VALUE=DATE) are accepted"
        ));
    }
    date_of(value).map(Some).ok_or_else(|| format!("{name} {value:?} is not a date YYYYMMDD"))
}

/// Days of a `DURATION` such as `P1D` or `P2W`.
fn duration_days(s: &str) -> Option<i64> {
    let s = s.trim().strip_prefix('P')?;
    if let Some(d) = s.strip_suffix('D') {
        return d.parse::<i64>().ok().filter(|&n| n > 0);
    }
    s.strip_suffix('W')?.parse::<i64>().ok().filter(|&n| n > 0).map(|w| w * 7)
}

/// A yearly rule as far as it is supported.
struct Yearly {
    interval: i32,
    count: Option<u32>,
    until: Option<NaiveDate>,
}

fn parse_rrule(rule: &str, start: NaiveDate) -> Result<Yearly, String> {
    let refuse =
        || format!("RRULE:{rule} is not supported: only FREQ=YEARLY on the start's date is");
    let mut yearly = Yearly { interval: 1, count: None, until: None };
    let mut freq = None;
    for part in rule.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(refuse)?;
        match k.to_ascii_uppercase().as_str() {
            "FREQ" => freq = Some(v.to_ascii_uppercase()),
            "INTERVAL" => yearly.interval = v.parse().ok().filter(|&n| n > 0).ok_or_else(refuse)?,
            "COUNT" => yearly.count = Some(v.parse().ok().ok_or_else(refuse)?),
            "UNTIL" => yearly.until = Some(date_of(v.get(..8).unwrap_or(v)).ok_or_else(refuse)?),
            "WKST" => {}
            "BYMONTH" if v.parse::<u32>().ok() == Some(start.month()) => {}
            "BYMONTHDAY" if v.parse::<u32>().ok() == Some(start.day()) => {}
            _ => return Err(refuse()),
        }
    }
    match freq.as_deref() {
        Some("YEARLY") => Ok(yearly),
        _ => Err(refuse()),
    }
}

/// The dates of one event (several for a yearly rule).
fn event_dates(event: &Component<'_>, year: i32) -> Result<Vec<DateRange>, String> {
    let start = date_prop(event, "DTSTART")?.ok_or("has no DTSTART")?;
    let days = match (date_prop(event, "DTEND")?, event.find_prop("DURATION")) {
        (Some(end), _) if end > start => (end - start).num_days(),
        (Some(end), _) => return Err(format!("DTEND {end} is not after DTSTART {start}")),
        (None, Some(d)) => duration_days(d.val.as_str())
            .ok_or_else(|| format!("DURATION:{} is not a whole number of days", d.val.as_str()))?,
        (None, None) => 1,
    };
    if event.find_prop("RDATE").is_some() {
        return Err("RDATE is not supported".to_owned());
    }
    let title = event.find_prop("SUMMARY").map(|p| {
        let t: String =
            p.val.clone().unescape_text().as_str().chars().filter(|c| !c.is_control()).collect();
        t.chars().take(255).collect::<String>()
    });
    let range = |from: NaiveDate| DateRange {
        from,
        to: from + Duration::days(days - 1),
        title: title.clone().filter(|t| !t.is_empty()),
    };
    let Some(rule) = event.find_prop("RRULE") else { return Ok(vec![range(start)]) };
    let yearly = parse_rrule(rule.val.as_str(), start)?;
    let excluded: Vec<NaiveDate> = event
        .properties
        .iter()
        .filter(|p| p.name.as_str().eq_ignore_ascii_case("EXDATE"))
        .flat_map(|p| {
            p.val
                .as_str()
                .split(',')
                .filter_map(|v| date_of(v.get(..8).unwrap_or(v)))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = Vec::new();
    let mut n = 0u32;
    let mut y = start.year();
    while y <= year + YEARS_AFTER {
        if yearly.count.is_some_and(|c| n >= c) {
            break;
        }
        // A 29 February start recurs only in leap years (RFC 5545: invalid dates are skipped).
        if let Some(d) = NaiveDate::from_ymd_opt(y, start.month(), start.day()) {
            if yearly.until.is_some_and(|u| d > u) {
                break;
            }
            n += 1;
            if y >= year - YEARS_BEFORE && !excluded.contains(&d) {
                out.push(range(d));
            }
        }
        y += yearly.interval;
    }
    Ok(out)
}

/// The dates of an iCalendar file imported on `today`; errors keyed `file` (not an
/// iCalendar file, too many events) or `events.N` (the N-th `VEVENT`, its `UID` named).
pub fn import_dates(text: &str, today: NaiveDate) -> Result<Vec<DateRange>, FieldErrors> {
    let count = text.lines().filter(|l| l.trim_end().eq_ignore_ascii_case("BEGIN:VEVENT")).count();
    if count > MAX_EVENTS {
        return Err(FieldErrors::single(
            "file",
            format!("holds {count} events; at most {MAX_EVENTS} are accepted per import"),
        ));
    }
    let unfolded = unfold(text);
    let calendar = read_calendar(&unfolded).map_err(|e| {
        let first: String = e.lines().take(3).collect::<Vec<_>>().join(" ");
        FieldErrors::single("file", format!("is not an iCalendar (RFC 5545) file: {first}"))
    })?;
    if calendar.components.is_empty() && calendar.properties.is_empty() {
        return Err(FieldErrors::single(
            "file",
            "is not an iCalendar (RFC 5545) file: no VCALENDAR",
        ));
    }
    let mut errors = FieldErrors::new();
    let mut dates = Vec::new();
    let events =
        calendar.components.iter().filter(|c| c.name.as_str().eq_ignore_ascii_case("VEVENT"));
    for (i, event) in events.enumerate() {
        let cancelled = event
            .find_prop("STATUS")
            .is_some_and(|s| s.val.as_str().eq_ignore_ascii_case("CANCELLED"));
        if cancelled {
            continue;
        }
        match event_dates(event, today.year()) {
            Ok(d) => dates.extend(d),
            Err(reason) => {
                let uid = event.find_prop("UID").map_or("(none)", |p| p.val.as_str());
                errors.add(format!("events.{i}"), format!("UID {uid}: {reason}"));
            }
        }
    }
    errors.into_result(dates)
}

#[cfg(test)]
mod tests;
