//! A simulated year at the wall clock: every minute of 2026 (and every second around each
//! DST change) in Europe/Berlin and America/New_York, against windows at and around the
//! skipped and repeated hours, plus overnight windows and breaks inside the repeated hour.
//!
//! Three independent checks per zone:
//!
//! 1. **Policy.** An oracle built only from "which reading does the clock show at t" (no
//!    local-to-UTC resolution) implements the README's rule literally: a window on date D
//!    opens at the first instant whose reading is at or past `D from` and closes after the
//!    last instant whose reading is before `to`. `Timetable::is_active_at` must agree with it
//!    at every instant checked: minutes it misses are *lost*, extra minutes *duplicated*.
//! 2. **Firings.** Counting inactive→active transitions per local day (the date the window
//!    opens on): exactly one per window per day (two for a window with a break), zero only
//!    where the README says the window is empty (`02:00–03:00` on the spring day). The active
//!    minutes per day equal the window's wall-clock length, ± one hour on a change day.
//! 3. **Index.** `ScheduleIndex` returns the same set as the naive matcher at every instant.
//!
//! The per-case counts are printed (`cargo test --test it dst_year -- --nocapture`) and
//! recorded in `docs/reliability.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde_json::{Value, json};

use scriptd::index::rules::Rule;
use scriptd::index::{Matches, ScheduleIndex};
use scriptd::timetable::{ParseContext, Timetable, parse_timetable};

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;

/// A `same_every_day` window `from`–`to` (local wall clock, no offset) with breaks.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    from: &'static str,
    to: &'static str,
    breaks: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case { name: "02:00-03:00", from: "02:00", to: "03:00", breaks: &[] },
    Case { name: "02:30-03:30", from: "02:30", to: "03:30", breaks: &[] },
    Case { name: "01:00-02:30", from: "01:00", to: "02:30", breaks: &[] },
    Case { name: "02:30-04:00", from: "02:30", to: "04:00", breaks: &[] },
    Case { name: "03:00-04:00", from: "03:00", to: "04:00", breaks: &[] },
    Case { name: "overnight 22:00-06:00", from: "22:00", to: "06:00", breaks: &[] },
    Case { name: "overnight 23:00-02:30", from: "23:00", to: "02:30", breaks: &[] },
    // Berlin repeats 02:00–03:00, New York 01:00–02:00: each zone has one break inside its
    // repeated hour and one outside it.
    Case {
        name: "01:00-04:00 break 02:15-02:45",
        from: "01:00",
        to: "04:00",
        breaks: &[("02:15", "02:45")],
    },
    Case {
        name: "00:30-03:00 break 01:15-01:45",
        from: "00:30",
        to: "03:00",
        breaks: &[("01:15", "01:45")],
    },
];

/// Europe/Berlin's 2026 changes: spring forward 02:00 CET → 03:00 CEST, fall back
/// 03:00 CEST → 02:00 CET (repeated hour 02:00–03:00).
const BERLIN_CHANGES: [&str; 2] = ["2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z"];
/// America/New_York's 2026 changes: spring forward 02:00 EST → 03:00 EDT, fall back
/// 02:00 EDT → 01:00 EST (repeated hour 01:00–02:00).
const NEW_YORK_CHANGES: [&str; 2] = ["2026-03-08T07:00:00Z", "2026-11-01T06:00:00Z"];

/// The expected (firings, active minutes) of each case, in `CASES` order, for the windows
/// that start on the day before a change (only the overnight ones reach it) and on the change
/// day, worked out by hand from the README's policy. Every other day of 2026 must show the
/// case's ordinary firings and exact wall-clock length.
struct ChangeDays {
    spring_eve: [(usize, i64); 9],
    spring: [(usize, i64); 9],
    autumn_eve: [(usize, i64); 9],
    autumn: [(usize, i64); 9],
}

/// Same for both zones except where a window or break touches the repeated hour, which is
/// 02:00–03:00 in Berlin but 01:00–02:00 in New York.
fn expected(tz: Tz) -> ChangeDays {
    let ordinary =
        [(1, 60), (1, 60), (1, 90), (1, 90), (1, 60), (1, 480), (1, 210), (2, 150), (2, 120)];
    let mut spring_eve = ordinary;
    spring_eve[5] = (1, 420); // 22:00–06:00 loses the skipped hour
    spring_eve[6] = (1, 180); // 23:00–02:30 ends at the jump (02:00 → 03:00)
    let spring = [
        (0, 0),   // 02:00–03:00 lies in the skipped hour: empty, documented
        (1, 30),  // 02:30–03:30 starts at the jump
        (1, 60),  // 01:00–02:30 ends at the jump
        (1, 60),  // 02:30–04:00 starts at the jump
        (1, 60),  // 03:00–04:00 untouched
        (1, 480), // the overnight windows starting tonight end before the next change
        (1, 210),
        (1, 120), // break 02:15–02:45 lies in the skipped hour: empty, one span 01:00–04:00
        (2, 60),  // 00:30–01:15 and 01:45–03:00 (15 real minutes)
    ];
    let mut autumn_eve = ordinary;
    autumn_eve[5] = (1, 540); // 22:00–06:00 gains the repeated hour
    autumn_eve[6] = (1, 270); // 23:00 to the second 02:30
    let autumn = if tz == chrono_tz::Europe::Berlin {
        [
            (1, 120), // 02:00 (first) to 03:00 (shown once)
            (1, 120), // 02:30 (first) to 03:30
            (1, 150), // 01:00 to the second 02:30
            (1, 150), // 02:30 CEST to 04:00 CET without closing
            (1, 60),
            (1, 480),
            (1, 210),
            (2, 150), // the break covers 02:15 CEST–02:45 CET (90 minutes)
            (2, 180), // 00:30 to 03:00 CET is 210 minutes, break 01:15–01:45 untouched
        ]
    } else {
        [
            (1, 60), // 02:00–03:00 after the repeated hour 01:00–02:00: untouched
            (1, 60),
            (1, 150), // 01:00 EDT to 02:30 EST
            (1, 90),
            (1, 60),
            (1, 480),
            (1, 210),
            (2, 210), // 01:00 EDT to 04:00 EST is 240 minutes, break 02:15–02:45 untouched
            (2, 120), // the break covers 01:15 EDT–01:45 EST (90 minutes)
        ]
    };
    ChangeDays { spring_eve, spring, autumn_eve, autumn }
}

fn utc(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).expect("test instant").timestamp()
}

fn hm(s: &str) -> i64 {
    let t = NaiveTime::parse_from_str(s, "%H:%M").expect("test time");
    i64::from(chrono::Timelike::num_seconds_from_midnight(&t))
}

impl Case {
    fn timetable_json(&self) -> Value {
        let breaks: Vec<Value> =
            self.breaks.iter().map(|(f, t)| json!({"from": f, "to": t})).collect();
        json!({"days": [{"type": "same_every_day", "from": self.from, "to": self.to, "breaks": breaks}]})
    }

    /// Wall-clock length of the window minus its breaks, in minutes.
    fn wall_minutes(&self) -> i64 {
        let len = |f: &str, t: &str| (hm(t) - hm(f)).rem_euclid(86_400) / MINUTE;
        len(self.from, self.to) - self.breaks.iter().map(|(f, t)| len(f, t)).sum::<i64>()
    }

    /// Inactive→active transitions per ordinary day.
    fn firings_per_day(&self) -> usize {
        1 + self.breaks.len()
    }
}

/// The wall-clock reading at `t`: the only zone question the oracle asks.
fn reading(tz: Tz, t: i64) -> NaiveDateTime {
    let utc = DateTime::<Utc>::from_timestamp(t, 0).expect("in range").naive_utc();
    utc + Duration::seconds(i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()))
}

/// `[start, end)` spans, unix seconds, of the oracle's answer for one window instance.
type Span = (i64, i64);

/// `[start, end)` as wall-clock readings.
type LocalSpan = (NaiveDateTime, NaiveDateTime);

/// The README's policy, by scanning the grid of instants: for each date D, the span opens at
/// the first instant whose reading is at or past `D + from`, and closes at the instant after
/// the last one whose reading is before `D + to` (the next day for an overnight window).
/// Breaks likewise. It never turns a reading into an instant, so it shares no code (and no
/// mistake) with `timetable::zone`.
struct Oracle {
    per_day: BTreeMap<NaiveDate, (Span, Vec<Span>)>,
}

impl Oracle {
    fn new(case: &Case, grid: &[i64], readings: &[NaiveDateTime]) -> Oracle {
        let first = readings[0].date() + Duration::days(1);
        let last = readings[readings.len() - 1].date() - Duration::days(2);
        let dates: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
        let local =
            |d: NaiveDate, s: i64| d.and_hms_opt(0, 0, 0).expect("midnight") + Duration::seconds(s);
        let bound = |from: &str, to: &str, d: NaiveDate| {
            let f = hm(from);
            let mut t = hm(to);
            if t <= f {
                t += 86_400;
            }
            (local(d, f), local(d, t))
        };
        let mut bounds: Vec<(NaiveDate, LocalSpan, Vec<LocalSpan>)> = Vec::new();
        for &d in &dates {
            let w = bound(case.from, case.to, d);
            let mut bs = Vec::new();
            for (bf, bt) in case.breaks {
                // Breaks of these cases lie after the window's start on the same date.
                bs.push(bound(bf, bt, d));
            }
            bounds.push((d, w, bs));
        }
        // Offsets stay within ±14 h, so a reading is reached within 15 h of its UTC guess:
        // scan only that stretch of the grid.
        let scan = |target: NaiveDateTime, start: bool| -> i64 {
            let guess = target.and_utc().timestamp();
            let lo = grid.partition_point(|&g| g < guess - 15 * HOUR);
            let hi = grid.partition_point(|&g| g < guess + 15 * HOUR);
            let (g, r) = (&grid[lo..hi], &readings[lo..hi]);
            if start {
                g[r.iter().position(|x| *x >= target).expect("reached")]
            } else {
                // The instant after the last one read before `to` (bounds are on whole
                // minutes and the grid holds every minute, so this is exact).
                g[r.iter().rposition(|x| *x < target).expect("before") + 1]
            }
        };
        let mut per_day = BTreeMap::new();
        for (d, (wf, wt), bs) in bounds {
            let span = (scan(wf, true), scan(wt, false));
            let breaks = bs.iter().map(|&(bf, bt)| (scan(bf, true), scan(bt, false))).collect();
            per_day.insert(d, (span, breaks));
        }
        Oracle { per_day }
    }

    /// Active at `t`, whose reading is `reading`.
    fn active(&self, t: i64, reading: NaiveDateTime) -> bool {
        let today = reading.date();
        [today - Duration::days(1), today].iter().any(|d| {
            self.per_day.get(d).is_some_and(|((s, e), breaks)| {
                *s <= t && t < *e && !breaks.iter().any(|(bs, be)| *bs <= t && t < *be)
            })
        })
    }
}

/// What one zone's run found for one case.
#[derive(Debug, Default)]
struct Outcome {
    /// Instants in 2026 the oracle has active and the timetable not.
    lost: usize,
    /// Instants in 2026 the timetable has active and the oracle not.
    duplicated: usize,
    /// (firings, active minutes) per local date a window opens on.
    per_day: BTreeMap<NaiveDate, (usize, i64)>,
    /// Instants where the index disagrees with the naive matcher (all cases at once).
    index_mismatches: usize,
}

/// Instants checked: every minute from 2025-12-30 to 2027-01-03 UTC, plus every second in
/// the two hours either side of each change.
fn instants(changes: &[i64; 2]) -> Vec<i64> {
    let start = utc("2025-12-30T00:00:00Z");
    let end = utc("2027-01-03T00:00:00Z");
    let mut ts: Vec<i64> = (start..end).step_by(MINUTE as usize).collect();
    for c in changes {
        ts.extend((c - 2 * HOUR)..(c + 2 * HOUR));
    }
    ts.sort_unstable();
    ts.dedup();
    ts
}

fn parse(case: &Case, tz: Tz) -> Timetable {
    parse_timetable(&case.timetable_json(), &ParseContext { timezone: tz })
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// Evaluates every case at every instant in `tz` and compares with the oracle and the index.
fn run_zone(tz: Tz, changes: &[i64; 2]) -> Vec<Outcome> {
    let ts = instants(changes);
    let readings: Vec<NaiveDateTime> = ts.iter().map(|&t| reading(tz, t)).collect();
    let timetables: Vec<Arc<Timetable>> = CASES.iter().map(|c| Arc::new(parse(c, tz))).collect();
    let rules: Vec<Rule> = timetables
        .iter()
        .enumerate()
        .map(|(i, tt)| Rule {
            script_id: i as i64 + 1,
            event_id: 1,
            cameras: None,
            enabled: true,
            timetable: tt.clone(),
        })
        .collect();
    let index = ScheduleIndex::build(rules);

    let mut answers: Vec<Vec<bool>> = vec![Vec::with_capacity(ts.len()); CASES.len()];
    let mut index_mismatches = 0;
    let mut m = Matches::new();
    let mut naive = Vec::with_capacity(CASES.len());
    let mut fast = Vec::with_capacity(CASES.len());
    for &t in &ts {
        naive.clear();
        for (i, tt) in timetables.iter().enumerate() {
            let a = tt.is_active_at(t);
            answers[i].push(a);
            if a {
                naive.push(i as i64 + 1);
            }
        }
        index.matches_into(1, 17, t, &mut m);
        fast.clear();
        fast.extend(m.positions.iter().map(|&p| index.script_id(p)));
        fast.sort_unstable();
        if fast != naive {
            index_mismatches += 1;
        }
    }

    let year = |r: &NaiveDateTime| r.date().year() == 2026;
    CASES
        .iter()
        .zip(&answers)
        .map(|(case, answer)| {
            let oracle = Oracle::new(case, &ts, &readings);
            let mut out = Outcome { index_mismatches, ..Outcome::default() };
            for (k, &t) in ts.iter().enumerate() {
                if !year(&readings[k]) {
                    continue;
                }
                match (oracle.active(t, readings[k]), answer[k]) {
                    (true, false) => out.lost += 1,
                    (false, true) => out.duplicated += 1,
                    _ => {}
                }
            }
            // Runs of active instants, each attributed to the local date it starts on.
            let mut run_day: Option<NaiveDate> = None;
            for k in 1..ts.len() {
                if !answer[k - 1] {
                    run_day = None;
                    continue;
                }
                let day = *run_day.get_or_insert_with(|| {
                    let d = readings[k - 1].date();
                    out.per_day.entry(d).or_default().0 += 1;
                    d
                });
                out.per_day.entry(day).or_default().1 += ts[k] - ts[k - 1];
            }
            for v in out.per_day.values_mut() {
                v.1 /= MINUTE;
            }
            out
        })
        .collect()
}

/// Runs one zone and checks every case against the policy, the expected change days and the
/// index; prints one line per case for `docs/reliability.md`.
fn check_zone(tz: Tz, changes: [&str; 2]) {
    let changes = changes.map(utc);
    let change_dates = changes.map(|c| reading(tz, c).date());
    let want = expected(tz);
    let outcomes = run_zone(tz, &changes);
    let mut failures = Vec::new();
    for (i, (case, out)) in CASES.iter().zip(&outcomes).enumerate() {
        let ordinary = (case.firings_per_day(), case.wall_minutes());
        let mut wrong_days = Vec::new();
        let mut firings = 0;
        let first = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
        for d in first.iter_days().take_while(|d| d.year() == 2026) {
            let got = out.per_day.get(&d).copied().unwrap_or((0, 0));
            firings += got.0;
            let expect = if d == change_dates[0] {
                want.spring[i]
            } else if d.succ_opt() == Some(change_dates[0]) {
                want.spring_eve[i]
            } else if d == change_dates[1] {
                want.autumn[i]
            } else if d.succ_opt() == Some(change_dates[1]) {
                want.autumn_eve[i]
            } else {
                ordinary
            };
            // Minutes differ from the wall clock by the shift at most.
            assert!((expect.1 - ordinary.1).abs() <= 60 || expect == (0, 0), "{}", case.name);
            if got != expect {
                wrong_days.push((d, got, expect));
            }
        }
        let at = |d: NaiveDate| out.per_day.get(&d).copied().unwrap_or((0, 0));
        println!(
            "{tz} | {} | firings {firings} | lost {} | duplicated {} | spring {:?} | autumn {:?} | index mismatches {}",
            case.name,
            out.lost,
            out.duplicated,
            at(change_dates[0]),
            at(change_dates[1]),
            out.index_mismatches,
        );
        if out.lost + out.duplicated + out.index_mismatches > 0 || !wrong_days.is_empty() {
            failures.push(format!(
                "{tz} {}: lost {}, duplicated {}, index mismatches {}, days (date, got, expected) {wrong_days:?}",
                case.name, out.lost, out.duplicated, out.index_mismatches
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_year_in_berlin_follows_the_dst_policy() {
    check_zone(chrono_tz::Europe::Berlin, BERLIN_CHANGES);
}

#[test]
fn a_year_in_new_york_follows_the_dst_policy() {
    check_zone(chrono_tz::America::New_York, NEW_YORK_CHANGES);
}

/// Active spans of one window over the 30 hours from `scan_from` that open within its first
/// 24 hours: found at minute steps, each edge then located to the exact second.
fn spans(
    tz: Tz,
    from: &'static str,
    to: &'static str,
    breaks: &'static [(&'static str, &'static str)],
    scan_from: &str,
) -> Vec<(i64, i64)> {
    let tt = parse(&Case { name: "example", from, to, breaks }, tz);
    let start = utc(scan_from);
    // The first second in (t - 60, t] whose answer is `active`.
    let edge = |t: i64, active: bool| {
        ((t - 59)..=t).find(|&u| tt.is_active_at(u) == active).expect("edge within the minute")
    };
    let mut spans = Vec::new();
    let mut open: Option<i64> = None;
    for t in (start..start + 30 * HOUR).step_by(MINUTE as usize) {
        match (open, tt.is_active_at(t)) {
            (None, true) => open = Some(edge(t, true)),
            (Some(s), false) => {
                spans.push((s, edge(t, false)));
                open = None;
            }
            _ => {}
        }
    }
    spans.retain(|&(s, _)| s < start + 24 * HOUR);
    spans
}

/// The README's worked examples, pinned to exact seconds (Europe/Berlin, 2026).
#[test]
fn readme_examples_hold_in_berlin() {
    let tz = chrono_tz::Europe::Berlin;
    let span = |s: &str, e: &str| (utc(s), utc(e));
    // Spring: 02:00–03:00 is empty; 01:00–02:30 ends at the jump; 02:30–04:00 starts at it.
    let day = "2026-03-28T23:00:00Z"; // 2026-03-29 00:00 CET
    assert_eq!(spans(tz, "02:00", "03:00", &[], day), vec![]);
    assert_eq!(
        spans(tz, "01:00", "02:30", &[], day),
        vec![span("2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z")]
    );
    assert_eq!(
        spans(tz, "02:30", "04:00", &[], day),
        vec![span("2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z")]
    );
    // Autumn: 02:30–04:00 runs 02:30 CEST–04:00 CET without closing; 01:00–02:30 lasts until
    // the second 02:30; a break 02:00–03:00 covers both passes of the hour.
    let day = "2026-10-24T22:00:00Z"; // 2026-10-25 00:00 CEST
    assert_eq!(
        spans(tz, "02:30", "04:00", &[], day),
        vec![span("2026-10-25T00:30:00Z", "2026-10-25T03:00:00Z")]
    );
    assert_eq!(
        spans(tz, "01:00", "02:30", &[], day),
        vec![span("2026-10-24T23:00:00Z", "2026-10-25T01:30:00Z")]
    );
    assert_eq!(
        spans(tz, "01:00", "04:00", &[("02:00", "03:00")], day),
        vec![
            span("2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z"),
            span("2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"),
        ]
    );
    // Overnight 22:00–06:00: 7 hours on the spring night, 9 on the autumn night.
    let spring = spans(tz, "22:00", "06:00", &[], "2026-03-28T11:00:00Z");
    assert_eq!(spring.iter().map(|(s, e)| e - s).collect::<Vec<_>>(), [7 * HOUR]);
    let autumn = spans(tz, "22:00", "06:00", &[], "2026-10-24T10:00:00Z");
    assert_eq!(autumn.iter().map(|(s, e)| e - s).collect::<Vec<_>>(), [9 * HOUR]);
}
