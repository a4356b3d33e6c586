//! Synthetic script sets and occurrence streams for the benchmarks.
//!
//! The shape follows what a large deployment looks like: 20 event kinds; 90% of scripts
//! watch 1–4 of the cameras, 10% watch every camera; 1–3 day entries of mixed types
//! (overnight windows included) with 0–2 breaks each; 30% have 1–2 absolute intervals; 80%
//! are active. 70% of entries carry an explicit offset like the seed (`+05:00`), the rest use
//! the configured zone (Europe/Berlin, with its DST rules). Occurrence instants are spread
//! over two weeks. Everything is generated from a seed, so runs are repeatable.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::index::rules::Rule;
use crate::timetable::{CalendarDates, DateRange, ParseContext, Zone, parse_timetable};

/// Number of event kinds scripts and occurrences use (event ids `1..=EVENT_KINDS`).
pub const EVENT_KINDS: i64 = 20;

/// The zone used for times written without an offset.
pub const ZONE: chrono_tz::Tz = chrono_tz::Europe::Berlin;

/// First instant of the two-week occurrence stream (a Monday).
pub const STREAM_START: &str = "2026-11-16T00:00:00Z";

/// Length of the occurrence stream's window, seconds (two weeks).
pub const STREAM_SECONDS: i64 = 14 * 86_400;

/// One synthetic script: the API fields the matcher depends on.
#[derive(Debug, Clone)]
pub struct SyntheticScript {
    /// Script id, `1..=N`.
    pub id: i64,
    /// Event id.
    pub event_id: i64,
    /// Camera ids or `None` for every camera.
    pub cameras: Option<Vec<i64>>,
    /// `status`.
    pub active: bool,
    /// The `timetable` object as the API takes it.
    pub timetable: Value,
}

/// One synthetic occurrence.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticOccurrence {
    /// Event id.
    pub event_id: i64,
    /// Camera id, `1..=C`.
    pub camera_id: i64,
    /// Unix seconds.
    pub at: i64,
}

const OFFSETS: [&str; 5] = ["+05:00", "+03:00", "+00:00", "-05:00", "+01:00"];
const KINDS: [&str; 10] = [
    "same_every_day",
    "weekdays",
    "weekends",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn hm(secs: u32) -> String {
    let s = secs % 86_400;
    format!("{:02}:{:02}", s / 3600, (s % 3600) / 60)
}

fn day_entry(rng: &mut StdRng) -> Value {
    let kind = KINDS[rng.random_range(0..KINDS.len())];
    let suffix =
        if rng.random_bool(0.7) { OFFSETS[rng.random_range(0..OFFSETS.len())] } else { "" };
    // A quarter of the windows run overnight (start in the evening, end next morning);
    // the others last 1 to 16 hours.
    let (from, len) = if rng.random_bool(0.25) {
        let from = rng.random_range(64..92u32) * 900;
        (from, (86_400 - from) + rng.random_range(1..36u32) * 900)
    } else {
        (rng.random_range(0..96u32) * 900, rng.random_range(4..64u32) * 900)
    };
    let end = from + len;
    let to = if end % 86_400 == 0 { "23:59".to_owned() } else { hm(end) };
    let mut breaks = Vec::new();
    // Breaks on a 15-minute grid strictly inside the window.
    let quarters = len / 900;
    for _ in 0..rng.random_range(0..3) {
        if quarters < 3 {
            break;
        }
        let a = rng.random_range(1..quarters - 1);
        let b = rng.random_range(a + 1..quarters);
        breaks.push(json!({"from": format!("{}{suffix}", hm(from + a * 900)), "to": format!("{}{suffix}", hm(from + b * 900))}));
    }
    json!({"type": kind, "from": format!("{}{suffix}", hm(from)), "to": format!("{to}{suffix}"), "breaks": breaks})
}

/// [`STREAM_START`] as unix seconds.
pub fn stream_start() -> i64 {
    DateTime::parse_from_rfc3339(STREAM_START).map(|d| d.timestamp()).unwrap_or(0)
}

fn interval(rng: &mut StdRng) -> Value {
    let start = stream_start() - 7 * 86_400 + rng.random_range(0..28 * 86_400i64) / 60 * 60;
    let len = rng.random_range(1..7 * 24 * 4i64) * 900;
    let fmt = |t: i64| {
        DateTime::<Utc>::from_timestamp(t, 0)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M:%S+00:00")
            .to_string()
    };
    json!({"from": fmt(start), "to": fmt(start + len)})
}

/// `n` scripts over `cameras` cameras, generated one at a time.
pub fn scripts_iter(n: usize, cameras: i64, seed: u64) -> impl Iterator<Item = SyntheticScript> {
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=n as i64).map(move |id| {
        let event_id = rng.random_range(1..=EVENT_KINDS);
        let cams = if rng.random_bool(0.9) {
            let k = rng.random_range(1..=4).min(cameras);
            let mut c: Vec<i64> = (0..k).map(|_| rng.random_range(1..=cameras)).collect();
            c.sort_unstable();
            c.dedup();
            Some(c)
        } else {
            None
        };
        let days: Vec<Value> = (0..rng.random_range(1..=3)).map(|_| day_entry(&mut rng)).collect();
        let intervals: Vec<Value> = if rng.random_bool(0.3) {
            (0..rng.random_range(1..=2)).map(|_| interval(&mut rng)).collect()
        } else {
            Vec::new()
        };
        SyntheticScript {
            id,
            event_id,
            cameras: cams,
            active: rng.random_bool(0.8),
            timetable: json!({"days": days, "intervals": intervals}),
        }
    })
}

/// `n` scripts over `cameras` cameras.
pub fn scripts(n: usize, cameras: i64, seed: u64) -> Vec<SyntheticScript> {
    scripts_iter(n, cameras, seed).collect()
}

/// Parses one synthetic script into a rule (every generated timetable is valid).
pub fn rule(s: &SyntheticScript) -> Result<Rule, String> {
    let ctx = ParseContext { timezone: ZONE };
    let tt = parse_timetable(&s.timetable, &ctx)
        .map_err(|e| format!("synthetic script {} is invalid: {e}", s.id))?;
    Ok(Rule {
        script_id: s.id,
        event_id: s.event_id,
        cameras: s.cameras.clone(),
        enabled: s.active,
        timetable: Arc::new(tt),
    })
}

/// Parses synthetic scripts into rules.
pub fn rules(scripts: &[SyntheticScript]) -> Result<Vec<Rule>, String> {
    scripts.iter().map(rule).collect()
}

/// The rules of `n` synthetic scripts, generated and parsed one at a time so that only the
/// parsed rules are ever held in memory.
pub fn rules_streamed(n: usize, cameras: i64, seed: u64) -> Result<Vec<Rule>, String> {
    let mut out = Vec::with_capacity(n);
    for s in scripts_iter(n, cameras, seed) {
        out.push(rule(&s)?);
    }
    Ok(out)
}

/// Holidays in a synthetic set: `fraction` of the scripts list one calendar of `dates` dates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HolidayMix {
    /// Fraction of the scripts with `timetable.holidays` (0 = none).
    pub fraction: f64,
    /// Dates in the calendar they list.
    pub dates: usize,
}

/// The synthetic calendar (id 1, in [`ZONE`]): `dates` one-day holidays spaced evenly over
/// the year around the stream, so the two-week stream holds one or two of them (30 dates:
/// two, 16 and 28 November).
pub fn calendar(dates: usize) -> Arc<CalendarDates> {
    let first = DateTime::<Utc>::from_timestamp(stream_start(), 0).unwrap_or_default().date_naive()
        - chrono::Duration::days(180);
    let step = (365 / dates.max(1)).max(1) as i64;
    Arc::new(CalendarDates {
        id: 1,
        name: "Synthetic holidays".to_owned(),
        zone: Zone::from_tz(ZONE),
        dates: (0..dates as i64)
            .map(|k| {
                let d = first + chrono::Duration::days(k * step);
                DateRange { from: d, to: d, title: Some(format!("Holiday {k}")) }
            })
            .collect(),
    })
}

/// The rules of `n` synthetic scripts (the same set as [`rules_streamed`]) of which a
/// `mix.fraction` list the [`calendar`]; half of those have holiday hours 10:00–16:00, the
/// others are inactive on holidays.
pub fn rules_with_holidays(
    n: usize,
    cameras: i64,
    seed: u64,
    mix: HolidayMix,
) -> Result<Vec<Rule>, String> {
    if mix.fraction <= 0.0 || mix.dates == 0 {
        return rules_streamed(n, cameras, seed);
    }
    let cal = calendar(mix.dates);
    let mut pick = StdRng::seed_from_u64(seed ^ 0x4f1b_5eed);
    let mut out = Vec::with_capacity(n);
    for mut s in scripts_iter(n, cameras, seed) {
        if pick.random_bool(mix.fraction.min(1.0)) {
            let windows = if pick.random_bool(0.5) {
                json!([{"from": "10:00", "to": "16:00"}])
            } else {
                json!([])
            };
            s.timetable["holidays"] = json!({"calendars": [1], "windows": windows});
            let mut r = rule(&s)?;
            r.timetable = Arc::new(r.timetable.with_calendars(|_| Some(cal.clone())));
            out.push(r);
        } else {
            out.push(rule(&s)?);
        }
    }
    Ok(out)
}

/// `m` occurrences spread uniformly over two weeks from [`STREAM_START`].
pub fn occurrences(m: usize, cameras: i64, seed: u64) -> Vec<SyntheticOccurrence> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let start = stream_start();
    (0..m)
        .map(|_| SyntheticOccurrence {
            event_id: rng.random_range(1..=EVENT_KINDS),
            camera_id: rng.random_range(1..=cameras),
            at: start + rng.random_range(0..STREAM_SECONDS),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_scripts_parse_and_follow_the_mix() {
        let s = scripts(2000, 100, 7);
        let rules = rules(&s).unwrap();
        assert_eq!(rules.len(), 2000);
        let wildcard = rules.iter().filter(|r| r.cameras.is_none()).count();
        assert!((100..300).contains(&wildcard), "{wildcard}");
        let active = rules.iter().filter(|r| r.enabled).count();
        assert!((1500..1700).contains(&active), "{active}");
        let with_intervals = rules.iter().filter(|r| r.timetable.interval_count() > 0).count();
        assert!((450..750).contains(&with_intervals), "{with_intervals}");
        // Same seed, same set.
        assert_eq!(scripts(5, 10, 1)[4].timetable, scripts(5, 10, 1)[4].timetable);
    }

    #[test]
    fn holiday_mix_adds_the_calendar_to_a_fraction() {
        let mix = HolidayMix { fraction: 0.1, dates: 30 };
        let with = rules_with_holidays(2000, 100, 7, mix).unwrap();
        let plain = rules_streamed(2000, 100, 7).unwrap();
        let n = with.iter().filter(|r| r.timetable.has_holidays()).count();
        assert!((120..290).contains(&n), "{n}");
        // The same scripts otherwise.
        assert!(
            with.iter()
                .zip(&plain)
                .all(|(a, b)| a.script_id == b.script_id && a.enabled == b.enabled)
        );
        let cal = calendar(30);
        assert_eq!(cal.dates.len(), 30);
        let start = stream_start();
        let spans: Vec<_> = cal.dates.iter().map(|d| d.span(cal.zone)).collect();
        let inside =
            spans.iter().filter(|&&(f, t)| f < start + STREAM_SECONDS && t > start).count();
        assert_eq!(inside, 2, "two holidays fall in the stream");
    }
}
