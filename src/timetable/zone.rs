//! Zones of timetable entries and the DST policy.
//!
//! A time written with an offset (`08:00+05:00`) lives in that fixed offset; a time without
//! one lives in the configured IANA zone (`timezone`), whose offset depends on the date.
//! Turning a local wall-clock reading into an instant follows one policy everywhere:
//!
//! * a reading the clock shows once maps to that instant;
//! * a reading the clock shows twice (the repeated hour when clocks go back) maps to its
//!   **first** occurrence for a window's start and to its **last** occurrence for a window's
//!   end ([`Zone::resolve_early`], [`Zone::resolve_late`]), so a window is one unbroken span
//!   that covers every instant whose reading lies inside it — it never opens twice;
//! * a reading the clock skips (the missing hour when clocks go forward) maps to the instant
//!   the clock jumps, so a window never covers a time the clock did not show.

use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Seconds in a week.
pub const WEEK: i64 = 7 * DAY;

/// The zone a time of day is read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Zone {
    /// A fixed offset from UTC, in seconds east.
    Fixed(i32),
    /// An IANA zone with its daylight-saving rules.
    Named(Tz),
}

impl Zone {
    /// The zone for times written without an offset. Zones that never change their offset
    /// (UTC and its aliases, `Etc/GMT±N`) become fixed offsets, so they cost nothing at run time.
    pub fn from_tz(tz: Tz) -> Zone {
        let name = tz.name();
        const UTC_ALIASES: &[&str] = &[
            "UTC",
            "Etc/UTC",
            "Etc/UCT",
            "UCT",
            "Etc/Universal",
            "Universal",
            "Etc/Zulu",
            "Zulu",
            "GMT",
            "Etc/GMT",
            "Etc/GMT0",
            "Etc/GMT+0",
            "Etc/GMT-0",
            "GMT0",
            "GMT+0",
            "GMT-0",
            "Etc/Greenwich",
            "Greenwich",
        ];
        if UTC_ALIASES.contains(&name) {
            return Zone::Fixed(0);
        }
        // POSIX style: Etc/GMT+5 is five hours *behind* UTC.
        if let Some(Ok(hours)) = name.strip_prefix("Etc/GMT").map(str::parse::<i32>) {
            return Zone::Fixed(-hours * 3600);
        }
        Zone::Named(tz)
    }

    /// True for a fixed offset.
    pub fn is_fixed(self) -> bool {
        matches!(self, Zone::Fixed(_))
    }

    /// The offset from UTC, in seconds east, in force at unix second `t`.
    pub fn offset_at(self, t: i64) -> i32 {
        match self {
            Zone::Fixed(off) => off,
            Zone::Named(tz) => match DateTime::<Utc>::from_timestamp(t, 0) {
                Some(utc) => tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc(),
                None => 0,
            },
        }
    }

    /// The wall-clock reading at unix second `t`.
    pub fn local(self, t: i64) -> NaiveDateTime {
        let shifted = t + i64::from(self.offset_at(t));
        DateTime::<Utc>::from_timestamp(shifted, 0).map(|d| d.naive_utc()).unwrap_or_default()
    }

    /// True when the reading at `t` is shown twice that day (the repeated hour).
    pub fn is_ambiguous_at(self, t: i64) -> bool {
        match self {
            Zone::Fixed(_) => false,
            Zone::Named(tz) => {
                matches!(tz.from_local_datetime(&self.local(t)), LocalResult::Ambiguous(..))
            }
        }
    }

    /// The first instant whose reading is `local` (a window's or break's start).
    pub fn resolve_early(self, local: NaiveDateTime) -> i64 {
        self.resolve(local, false)
    }

    /// The last instant whose reading is `local` (a window's or break's end).
    pub fn resolve_late(self, local: NaiveDateTime) -> i64 {
        self.resolve(local, true)
    }

    fn resolve(self, local: NaiveDateTime, late: bool) -> i64 {
        match self {
            Zone::Fixed(off) => local.and_utc().timestamp() - i64::from(off),
            Zone::Named(tz) => match tz.from_local_datetime(&local) {
                LocalResult::Single(d) => d.timestamp(),
                LocalResult::Ambiguous(a, b) => {
                    let (a, b) = (a.timestamp(), b.timestamp());
                    if late { a.max(b) } else { a.min(b) }
                }
                LocalResult::None => self.gap_end(local),
            },
        }
    }

    /// For a reading inside a skipped hour: the instant the clock jumps past it, i.e. the
    /// first instant whose reading is later than `local`.
    fn gap_end(self, local: NaiveDateTime) -> i64 {
        let guess = local.and_utc().timestamp();
        // Offsets stay within ±26 h, so the reading at `lo` is earlier and at `hi` later.
        let (mut lo, mut hi) = (guess - 30 * 3600, guess + 30 * 3600);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.local(mid) >= local {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Monday-based position of the reading at `t` within its week, in seconds.
    pub fn week_position(self, t: i64) -> u32 {
        match self {
            Zone::Fixed(off) => week_position_fixed(t, off),
            Zone::Named(_) => {
                let l = self.local(t);
                (l.weekday().num_days_from_monday() * DAY as u32) + l.num_seconds_from_midnight()
            }
        }
    }
}

/// Monday-based week position of unix second `t` read at a fixed offset.
pub fn week_position_fixed(t: i64, offset: i32) -> u32 {
    // 1970-01-01 was a Thursday: Monday 00:00 lies three days earlier.
    (t + i64::from(offset) + 3 * DAY).rem_euclid(WEEK) as u32
}

/// The local date-time `secs` seconds after midnight starting `date` (may pass midnight).
pub fn at_seconds(date: NaiveDate, secs: i64) -> NaiveDateTime {
    date.and_hms_opt(0, 0, 0).unwrap_or_default() + chrono::Duration::seconds(secs)
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Fixed(off) => {
                let sign = if *off < 0 { '-' } else { '+' };
                let a = off.unsigned_abs();
                write!(f, "{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
            }
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ndt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn utc_aliases_and_etc_zones_are_fixed() {
        assert_eq!(Zone::from_tz(chrono_tz::UTC), Zone::Fixed(0));
        assert_eq!(Zone::from_tz(chrono_tz::Etc::GMTPlus5), Zone::Fixed(-5 * 3600));
        assert_eq!(
            Zone::from_tz(chrono_tz::Europe::Berlin),
            Zone::Named(chrono_tz::Europe::Berlin)
        );
    }

    #[test]
    fn skipped_reading_maps_to_the_jump() {
        let z = Zone::Named(chrono_tz::Europe::Berlin);
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
        let jump = utc("2026-03-29T01:00:00Z");
        assert_eq!(z.resolve_early(ndt("2026-03-29 02:30:00")), jump);
        assert_eq!(z.resolve_late(ndt("2026-03-29 02:00:00")), jump);
    }

    #[test]
    fn repeated_reading_maps_to_first_for_start_and_last_for_end() {
        let z = Zone::Named(chrono_tz::Europe::Berlin);
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET at 01:00 UTC.
        assert_eq!(z.resolve_early(ndt("2026-10-25 02:30:00")), utc("2026-10-25T00:30:00Z"));
        assert_eq!(z.resolve_late(ndt("2026-10-25 02:30:00")), utc("2026-10-25T01:30:00Z"));
        assert!(z.is_ambiguous_at(utc("2026-10-25T00:30:00Z")));
        assert!(z.is_ambiguous_at(utc("2026-10-25T01:30:00Z")));
        assert!(!z.is_ambiguous_at(utc("2026-10-25T02:00:00Z")));
    }

    #[test]
    fn week_position_is_monday_based() {
        // 2026-11-30 is a Monday.
        assert_eq!(week_position_fixed(utc("2026-11-30T00:00:00Z"), 0), 0);
        assert_eq!(week_position_fixed(utc("2026-11-29T23:00:00Z"), 3600), 0);
        assert_eq!(week_position_fixed(utc("2026-11-29T23:59:59Z"), 0), (WEEK - 1) as u32);
        let z = Zone::Named(chrono_tz::America::New_York);
        assert_eq!(z.week_position(utc("2026-11-30T05:00:00Z")), 0);
    }
}
