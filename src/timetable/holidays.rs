//! Holidays in a timetable (CONTRACT §12): `timetable.holidays` and the calendars it names.
//!
//! A holiday is a local date, from its midnight to the next midnight: a calendar's dates in
//! the calendar's zone, the inline `dates` in the script's zone (the zone of its first day
//! entry, else `timezone`). Whether an instant is on a holiday is decided per instant: while
//! it is, the day entries are ignored (an overnight window begun the evening before stops at
//! the holiday's midnight) and the holiday `windows` are read as every-day windows, so an
//! overnight holiday window `22:00`–`06:00` covers `00:00`–`06:00` and `22:00`–`24:00` of
//! the holiday. Intervals apply on holidays too.
//!
//! A timetable is parsed without the calendars' contents; [`Timetable::with_calendars`]
//! attaches them (the live snapshot does so on every rebuild, so a changed calendar takes
//! effect like a changed script).

use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use serde_json::Value;

use super::parse::{ParseContext, parse_window};
use super::zone::{Zone, at_seconds};
use super::{DayEntry, Timetable};
use crate::script::validation::FieldErrors;

/// One `{from, to, title}` entry: local dates, both included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DateRange {
    /// First date.
    pub from: NaiveDate,
    /// Last date (included).
    pub to: NaiveDate,
    /// What the holiday is called, if given.
    pub title: Option<String>,
}

/// A calendar's contents as evaluation needs them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CalendarDates {
    /// The calendar's id.
    pub id: i64,
    /// The calendar's name.
    pub name: String,
    /// The zone its dates are read in.
    pub zone: Zone,
    /// Its dates.
    pub dates: Vec<DateRange>,
}

/// `timetable.holidays`, with the listed calendars attached once known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Holidays {
    /// The calendar ids as written.
    pub(crate) calendars: Vec<i64>,
    /// Inline dates, in `zone`.
    pub(crate) dates: Vec<DateRange>,
    /// The holiday windows (kind: every day).
    pub(crate) windows: Vec<DayEntry>,
    /// The script's zone: its first day entry's, else `timezone`.
    pub(crate) zone: Zone,
    /// The listed calendars that exist, in the order listed.
    pub(crate) attached: Vec<Arc<CalendarDates>>,
}

/// Which holiday an instant is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolidayHit {
    /// A date of a calendar.
    Calendar {
        /// The calendar's id.
        id: i64,
        /// The date's title, else the calendar's name.
        title: String,
    },
    /// `timetable.holidays.dates.N`.
    Inline {
        /// N.
        index: usize,
        /// The date's title, if any.
        title: Option<String>,
    },
}

impl HolidayHit {
    /// The explain wording: `holiday calendar 1 "New Year"`, `holiday timetable.holidays.dates.0`.
    pub fn reason(&self) -> String {
        match self {
            HolidayHit::Calendar { id, title } => format!("holiday calendar {id} {title:?}"),
            HolidayHit::Inline { index, .. } => format!("holiday timetable.holidays.dates.{index}"),
        }
    }

    /// The title shown in the week view.
    pub fn title(&self) -> Option<&str> {
        match self {
            HolidayHit::Calendar { title, .. } => Some(title),
            HolidayHit::Inline { title, .. } => title.as_deref(),
        }
    }

    /// The calendar's id, `None` for an inline date.
    pub fn calendar_id(&self) -> Option<i64> {
        match self {
            HolidayHit::Calendar { id, .. } => Some(*id),
            HolidayHit::Inline { .. } => None,
        }
    }
}

/// The first instant of `date` in `zone` (a skipped midnight: the instant the clock jumps).
pub fn midnight(zone: Zone, date: NaiveDate) -> i64 {
    zone.resolve_early(at_seconds(date, 0))
}

impl DateRange {
    /// `[first instant, end)` of the range in `zone`.
    pub fn span(&self, zone: Zone) -> (i64, i64) {
        let end = self.to.checked_add_signed(Duration::days(1)).unwrap_or(self.to);
        (midnight(zone, self.from), midnight(zone, end))
    }

    fn contains(&self, zone: Zone, t: i64) -> bool {
        let (from, to) = self.span(zone);
        from <= t && t < to
    }
}

impl Holidays {
    /// The holiday `t` is on, if any: the listed calendars first, then the inline dates.
    pub(crate) fn at(&self, t: i64) -> Option<HolidayHit> {
        for cal in &self.attached {
            if let Some(d) = cal.dates.iter().find(|d| d.contains(cal.zone, t)) {
                let title = d.title.clone().unwrap_or_else(|| cal.name.clone());
                return Some(HolidayHit::Calendar { id: cal.id, title });
            }
        }
        let index = self.dates.iter().position(|d| d.contains(self.zone, t))?;
        Some(HolidayHit::Inline { index, title: self.dates[index].title.clone() })
    }

    /// Every holiday as sorted, merged `[from, to)` unix-second spans.
    pub(crate) fn spans(&self) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = self
            .attached
            .iter()
            .flat_map(|c| c.dates.iter().map(|d| d.span(c.zone)))
            .chain(self.dates.iter().map(|d| d.span(self.zone)))
            .filter(|(f, t)| f < t)
            .collect();
        out.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(out.len());
        for (f, t) in out {
            match merged.last_mut() {
                Some(last) if f <= last.1 => last.1 = last.1.max(t),
                _ => merged.push((f, t)),
            }
        }
        merged
    }
}

impl Timetable {
    /// The calendar ids `timetable.holidays.calendars` lists.
    pub fn calendar_ids(&self) -> &[i64] {
        self.holidays.as_ref().map_or(&[], |h| &h.calendars[..])
    }

    /// True when the timetable has a `holidays` key.
    pub fn has_holidays(&self) -> bool {
        self.holidays.is_some()
    }

    /// This timetable with the listed calendars' contents attached; `lookup` answers a
    /// calendar id (`None`: no such calendar, which then has no dates).
    pub fn with_calendars(
        &self,
        mut lookup: impl FnMut(i64) -> Option<Arc<CalendarDates>>,
    ) -> Timetable {
        let mut tt = self.clone();
        if let Some(h) = &mut tt.holidays {
            h.attached = h.calendars.iter().filter_map(|&id| lookup(id)).collect();
        }
        tt
    }

    /// The holiday `t` is on, if any.
    pub fn holiday_at(&self, t: i64) -> Option<HolidayHit> {
        self.holidays.as_ref()?.at(t)
    }

    /// Every holiday of this timetable as sorted, merged unix-second spans (empty without).
    pub fn holiday_spans(&self) -> Vec<(i64, i64)> {
        self.holidays.as_ref().map(Holidays::spans).unwrap_or_default()
    }
}

/// Parses a local date `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Parses one `{from, to, title}` date entry at `path` (`to` defaults to `from`).
pub fn parse_date_range(value: &Value, path: &str, errors: &mut FieldErrors) -> Option<DateRange> {
    const DATE: &str = "must be a date YYYY-MM-DD";
    let Value::Object(obj) = value else {
        errors.add(path, "must be an object with from, to and title");
        return None;
    };
    let date = |key: &str, errors: &mut FieldErrors| -> Option<Option<NaiveDate>> {
        match obj.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => match parse_date(s) {
                Some(d) => Some(Some(d)),
                None => {
                    errors.add(format!("{path}.{key}"), DATE);
                    None
                }
            },
            Some(_) => {
                errors.add(format!("{path}.{key}"), DATE);
                None
            }
        }
    };
    let from = date("from", errors);
    let to = date("to", errors);
    let title = match obj.get("title") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.chars().count() <= 255 && !s.chars().any(char::is_control) => {
            Some(Some(s.clone()))
        }
        Some(_) => {
            errors.add(
                format!("{path}.title"),
                "must be a string of at most 255 characters without control characters",
            );
            None
        }
    };
    let from = match from? {
        Some(f) => f,
        None => {
            errors.add(format!("{path}.from"), "is required");
            return None;
        }
    };
    let to = to?.unwrap_or(from);
    if to < from {
        errors.add(format!("{path}.to"), "must not be before from");
        return None;
    }
    Some(DateRange { from, to, title: title? })
}

/// Parses `timetable.holidays`; `zone` is the script's zone.
pub(crate) fn parse_holidays(
    value: &Value,
    zone: Zone,
    ctx: &ParseContext,
    errors: &mut FieldErrors,
) -> Option<Holidays> {
    const PATH: &str = "timetable.holidays";
    let Value::Object(obj) = value else {
        errors.add(PATH, "must be an object with calendars, dates and windows");
        return None;
    };
    let before = errors.len();
    let list = |key: &str, errors: &mut FieldErrors| -> Vec<Value> {
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                errors.add(format!("{PATH}.{key}"), "must be an array");
                Vec::new()
            }
        }
    };
    let mut calendars = Vec::new();
    for (i, c) in list("calendars", errors).iter().enumerate() {
        match c.as_i64().filter(|&id| id > 0) {
            Some(id) if !calendars.contains(&id) => calendars.push(id),
            Some(_) => {}
            None => errors.add(format!("{PATH}.calendars.{i}"), "must be a calendar id"),
        }
    }
    let mut dates = Vec::new();
    for (i, d) in list("dates", errors).iter().enumerate() {
        if let Some(r) = parse_date_range(d, &format!("{PATH}.dates.{i}"), errors) {
            dates.push(r);
        }
    }
    let mut windows = Vec::new();
    for (i, w) in list("windows", errors).iter().enumerate() {
        if let Some(entry) = parse_window(w, &format!("{PATH}.windows.{i}"), ctx, errors) {
            windows.push(entry);
        }
    }
    (errors.len() == before).then_some(Holidays {
        calendars,
        dates,
        windows,
        zone,
        attached: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
