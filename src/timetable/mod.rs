//! Timetables: when a script is active (CONTRACT §7).
//!
//! The API's `timetable` JSON is parsed ([`parse_timetable`]) into a [`Timetable`]: typed day
//! entries whose bounds are already converted into the entry's zone, and absolute intervals as
//! unix seconds. Parsing reports every problem with the dotted path of the field.
//!
//! [`Timetable::is_active_at`] is the reference evaluation, written straight from the rules:
//! for each day entry, take the entry's windows that could contain the instant (the one
//! starting on the instant's local date and, for overnight windows, the one starting the day
//! before), turn their bounds into instants with the DST policy of [`zone`], and check the
//! window and its breaks; then the intervals. The schedule index (`crate::index`) compiles
//! the same timetables into week-position spans and must always agree with it.
//!
//! Time is always an argument: nothing here reads the clock.

pub(crate) mod compile;
pub mod holidays;
pub mod ical;
mod parse;
pub mod zone;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};

pub use holidays::{CalendarDates, DateRange, HolidayHit};
pub use parse::{ParseContext, parse_timetable};
pub use zone::Zone;

use zone::{DAY, at_seconds};

/// A parsed, validated timetable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timetable {
    pub(crate) days: Vec<DayEntry>,
    pub(crate) intervals: Vec<Interval>,
    /// `holidays`, when written.
    pub(crate) holidays: Option<holidays::Holidays>,
}

/// Which days a day entry applies to (the day its window starts on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayKind {
    /// `same_every_day`
    EveryDay,
    /// `weekdays`: Monday to Friday.
    Weekdays,
    /// `weekends`: Saturday and Sunday.
    Weekends,
    /// `monday` … `sunday`.
    Day(Weekday),
}

impl DayKind {
    /// True when a window of this entry starts on `day`.
    pub fn applies(self, day: Weekday) -> bool {
        match self {
            DayKind::EveryDay => true,
            DayKind::Weekdays => day.num_days_from_monday() < 5,
            DayKind::Weekends => day.num_days_from_monday() >= 5,
            DayKind::Day(d) => d == day,
        }
    }
}

/// A bound of a day entry, as seconds after the midnight of the entry's day in its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Bound {
    /// Known without a date: `0..=86400` (86400 is the end of the day).
    Fixed(u32),
    /// Written in another zone whose difference to the entry's zone depends on the date
    /// (one of them is an IANA zone with daylight saving): converted per date.
    Convert { secs: u32, zone: Zone },
}

/// One `{from, to}` pause of a day entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Break {
    pub(crate) from: Bound,
    pub(crate) to: Bound,
}

/// One entry of `timetable.days`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DayEntry {
    pub(crate) kind: DayKind,
    /// The zone of the entry's `from`; all bounds are expressed in it.
    pub(crate) zone: Zone,
    /// Seconds after midnight, `0..86400`.
    pub(crate) from: u32,
    pub(crate) to: Bound,
    pub(crate) breaks: Vec<Break>,
}

/// One window of a day entry laid on a line of seconds from the midnight that starts the
/// entry's day: `[from, to)` with `to` past 86400 for overnight windows; breaks likewise.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) breaks: Vec<(i64, i64)>,
}

/// Why a window's bounds do not form a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AxisError {
    /// `from` equals `to`.
    Empty,
    /// Break `i` has `from` equal to `to`.
    BreakEmpty(usize),
    /// Break `i` starts outside the window.
    BreakStartsOutside(usize),
    /// Break `i` ends outside the window.
    BreakEndsOutside(usize),
}

impl Axis {
    /// Lays out a window from bounds in seconds after midnight (`to`, break ends up to 86400).
    pub(crate) fn new(from: u32, to: u32, breaks: &[(u32, u32)]) -> Result<Axis, AxisError> {
        let f = i64::from(from);
        let mut t = i64::from(to);
        if t == f {
            return Err(AxisError::Empty);
        }
        if t < f {
            t += DAY; // overnight: ends on the next day
        }
        let mut laid = Vec::with_capacity(breaks.len());
        for (i, &(bf, bt)) in breaks.iter().enumerate() {
            if bf == bt {
                return Err(AxisError::BreakEmpty(i));
            }
            let bf = if i64::from(bf) >= f { i64::from(bf) } else { i64::from(bf) + DAY };
            let mut bt = i64::from(bt);
            while bt <= bf {
                bt += DAY;
            }
            if bf >= t {
                return Err(AxisError::BreakStartsOutside(i));
            }
            if bt > t {
                return Err(AxisError::BreakEndsOutside(i));
            }
            laid.push((bf, bt));
        }
        Ok(Axis { from: f, to: t, breaks: laid })
    }
}

impl Bound {
    /// Seconds after the midnight of `date` in `entry_zone`.
    fn seconds_on(self, date: NaiveDate, entry_zone: Zone) -> u32 {
        match self {
            Bound::Fixed(s) => s,
            Bound::Convert { secs, zone } => {
                let instant = zone.resolve_early(at_seconds(date, i64::from(secs)));
                let local = entry_zone.local(instant);
                chrono::Timelike::num_seconds_from_midnight(&local)
            }
        }
    }
}

impl DayEntry {
    /// True when no bound needs the date to be known.
    pub(crate) fn is_static(&self) -> bool {
        matches!(self.to, Bound::Fixed(_))
            && self
                .breaks
                .iter()
                .all(|b| matches!((b.from, b.to), (Bound::Fixed(_), Bound::Fixed(_))))
    }

    /// The window of this entry that starts on `date` (ignoring the day type), or `None` when
    /// its bounds, converted for that date, do not form a window.
    pub(crate) fn axis_on(&self, date: NaiveDate) -> Option<Axis> {
        let to = self.to.seconds_on(date, self.zone);
        let breaks: Vec<(u32, u32)> = self
            .breaks
            .iter()
            .map(|b| (b.from.seconds_on(date, self.zone), b.to.seconds_on(date, self.zone)))
            .collect();
        Axis::new(self.from, to, &breaks).ok()
    }
}

/// One absolute `{from, to}` interval, unix seconds, half-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Interval {
    pub(crate) from: i64,
    pub(crate) to: i64,
}

/// The answer to "is the timetable active at t, and why".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Active at the instant.
    pub active: bool,
    /// Which rule decided, with the dotted path of the entry: `in window timetable.days.0`,
    /// `in interval timetable.intervals.1`, `in break timetable.days.0.breaks.0`,
    /// `outside days`, `outside intervals`, `outside days and intervals`.
    pub reason: String,
}

impl Timetable {
    /// Active at `at`.
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        self.is_active_at(at.timestamp())
    }

    /// Active at unix second `t` (the reference evaluation).
    pub fn is_active_at(&self, t: i64) -> bool {
        self.explain_at(t).active
    }

    /// Active at `t`, and the rule that decided.
    pub fn explain_at(&self, t: i64) -> Verdict {
        let holiday = self.holiday_at(t);
        let (entries, window, brk) = match (&holiday, &self.holidays) {
            (Some(_), Some(h)) => (
                &h.windows[..],
                "in holiday window timetable.holidays.windows",
                "timetable.holidays.windows",
            ),
            _ => (&self.days[..], "in window timetable.days", "timetable.days"),
        };
        let in_break = match window_at(entries, t) {
            Ok(i) => return Verdict { active: true, reason: format!("{window}.{i}") },
            Err(hit) => hit.map(|(i, j)| format!("in break {brk}.{i}.breaks.{j}")),
        };
        if let Some(k) = self.intervals.iter().position(|iv| iv.from <= t && t < iv.to) {
            return Verdict {
                active: true,
                reason: format!("in interval timetable.intervals.{k}"),
            };
        }
        if let Some(h) = holiday {
            return Verdict { active: false, reason: in_break.unwrap_or_else(|| h.reason()) };
        }
        let reason = match (in_break, self.days.is_empty(), self.intervals.is_empty()) {
            (Some(b), _, _) => b,
            (None, false, true) => "outside days".to_owned(),
            (None, true, false) => "outside intervals".to_owned(),
            (None, _, _) => "outside days and intervals".to_owned(),
        };
        Verdict { active: false, reason }
    }

    /// Number of day entries.
    pub fn day_count(&self) -> usize {
        self.days.len()
    }

    /// Number of absolute intervals.
    pub fn interval_count(&self) -> usize {
        self.intervals.len()
    }
}

/// The first entry with a window containing `t` outside its breaks (`Ok(entry)`), else the
/// first break containing it (`Err(Some((entry, break)))`).
fn window_at(entries: &[DayEntry], t: i64) -> Result<usize, Option<(usize, usize)>> {
    let mut in_break = None;
    for (i, entry) in entries.iter().enumerate() {
        let today = entry.zone.local(t).date();
        for date in [today - Duration::days(1), today] {
            if !entry.kind.applies(date.weekday()) {
                continue;
            }
            let Some(axis) = entry.axis_on(date) else { continue };
            let start = entry.zone.resolve_early(at_seconds(date, axis.from));
            let end = entry.zone.resolve_late(at_seconds(date, axis.to));
            if !(start <= t && t < end) {
                continue;
            }
            let hit = axis.breaks.iter().position(|&(bf, bt)| {
                let bs = entry.zone.resolve_early(at_seconds(date, bf));
                let be = entry.zone.resolve_late(at_seconds(date, bt));
                bs <= t && t < be
            });
            match hit {
                None => return Ok(i),
                Some(j) => {
                    in_break.get_or_insert((i, j));
                }
            }
        }
    }
    Err(in_break)
}

#[cfg(test)]
mod tests;
