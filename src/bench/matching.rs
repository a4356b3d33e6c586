//! `scriptd bench match`: the indexed evaluator against the naive scan, on the same inputs.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::synth;
use crate::index::rules::naive_matches;
use crate::index::{Matches, ScheduleIndex};

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct MatchBenchOptions {
    /// Scripts to generate.
    pub scripts: usize,
    /// Occurrences to match.
    pub events: usize,
    /// Cameras in the deployment.
    pub cameras: i64,
    /// Generator seed.
    pub seed: u64,
    /// Occurrences also run through the naive scan (it is slow by design).
    pub naive_sample: usize,
    /// Timed passes; the median is reported.
    pub passes: usize,
    /// Scripts with holidays.
    pub holidays: synth::HolidayMix,
}

/// The result, printed as text or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct MatchBenchReport {
    /// Scripts generated.
    pub scripts: usize,
    /// Of which active.
    pub scripts_active: usize,
    /// Occurrences matched by the index.
    pub events: usize,
    /// Cameras.
    pub cameras: i64,
    /// Seed.
    pub seed: u64,
    /// Occurrences compared with the naive scan.
    pub naive_sample: usize,
    /// Building the index, milliseconds.
    pub build_ms: f64,
    /// Index, nanoseconds per occurrence (median of the passes).
    pub indexed_ns_per_event: f64,
    /// Naive scan, nanoseconds per occurrence (median of the passes).
    pub naive_ns_per_event: f64,
    /// naive / indexed.
    pub speedup: f64,
    /// Matches the index found on the compared occurrences.
    pub matches_indexed: usize,
    /// Matches the naive scan found on the compared occurrences.
    pub matches_naive: usize,
    /// Matches the index found on all occurrences.
    pub matches_total: usize,
    /// True when both found the same scripts for every compared occurrence.
    pub identical: bool,
    /// Peak resident memory of the process, MiB.
    pub rss_mb: f64,
    /// Fraction of the scripts with holidays (`--holiday-fraction`).
    pub holiday_fraction: f64,
    /// Dates of the calendar they list (`--holiday-dates`).
    pub holiday_dates: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Runs the benchmark.
pub fn run(opts: &MatchBenchOptions) -> Result<MatchBenchReport, String> {
    let rules = synth::rules_with_holidays(opts.scripts, opts.cameras, opts.seed, opts.holidays)?;
    let occurrences = synth::occurrences(opts.events, opts.cameras, opts.seed);
    let scripts_active = rules.iter().filter(|r| r.enabled).count();

    let rss_rules = peak_rss_mb();
    // The index keeps only what queries read; the naive scan below needs the rules, so the
    // index gets its own copy (the timetables are shared).
    let copy = rules.clone();
    let started = Instant::now();
    let index = ScheduleIndex::build(copy);
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    if std::env::var_os("SCRIPTD_BENCH_DEBUG").is_some() {
        eprintln!(
            "rss after rules {rss_rules:.0} MiB; index parts {:?} KiB; {} reference timetables",
            index.heap_bytes().map(|b| b >> 10),
            index.references()
        );
    }
    let rules = &rules[..];

    let passes = opts.passes.max(1);
    let mut out = Matches::new();
    let mut indexed_times = Vec::with_capacity(passes);
    let mut matches_total = 0;
    for _ in 0..passes {
        matches_total = 0;
        let started = Instant::now();
        for o in &occurrences {
            index.matches_into(o.event_id, o.camera_id, o.at, &mut out);
            matches_total += out.positions.len();
        }
        indexed_times.push(started.elapsed().as_nanos() as f64 / occurrences.len().max(1) as f64);
    }

    let sample = &occurrences[..opts.naive_sample.min(occurrences.len())];
    let at = |t: i64| DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
    let mut naive_times = Vec::new();
    let mut naive_sets = Vec::new();
    for pass in 0..passes.min(3) {
        let started = Instant::now();
        let sets: Vec<Vec<i64>> = sample
            .iter()
            .map(|o| naive_matches(rules, o.event_id, o.camera_id, at(o.at)))
            .collect();
        naive_times.push(started.elapsed().as_nanos() as f64 / sample.len().max(1) as f64);
        if pass == 0 {
            naive_sets = sets;
        }
    }
    let mut identical = true;
    let (mut matches_indexed, mut matches_naive) = (0, 0);
    for (o, want) in sample.iter().zip(&naive_sets) {
        let got = index.matches(o.event_id, o.camera_id, at(o.at));
        matches_indexed += got.len();
        matches_naive += want.len();
        identical &= got == *want;
    }
    let indexed_ns_per_event = median(indexed_times);
    let naive_ns_per_event = median(naive_times);
    Ok(MatchBenchReport {
        scripts: opts.scripts,
        scripts_active,
        events: occurrences.len(),
        cameras: opts.cameras,
        seed: opts.seed,
        naive_sample: sample.len(),
        build_ms,
        indexed_ns_per_event,
        naive_ns_per_event,
        speedup: if indexed_ns_per_event > 0.0 {
            naive_ns_per_event / indexed_ns_per_event
        } else {
            0.0
        },
        matches_indexed,
        matches_naive,
        matches_total,
        identical,
        rss_mb: peak_rss_mb(),
        holiday_fraction: opts.holidays.fraction,
        holiday_dates: opts.holidays.dates,
    })
}

impl std::fmt::Display for MatchBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scripts            {} ({} active), cameras {}, seed {}",
            self.scripts, self.scripts_active, self.cameras, self.seed
        )?;
        writeln!(
            f,
            "occurrences        {} (naive scan on the first {})",
            self.events, self.naive_sample
        )?;
        if self.holiday_fraction > 0.0 {
            writeln!(
                f,
                "holidays           {:.0}% of the scripts on a calendar of {} dates",
                self.holiday_fraction * 100.0,
                self.holiday_dates
            )?;
        }
        writeln!(f, "index build        {:.1} ms", self.build_ms)?;
        writeln!(f, "indexed            {:.0} ns/occurrence (median)", self.indexed_ns_per_event)?;
        writeln!(f, "naive              {:.0} ns/occurrence (median)", self.naive_ns_per_event)?;
        writeln!(f, "speedup            {:.0}x", self.speedup)?;
        writeln!(
            f,
            "matches            {} on all occurrences; {} indexed vs {} naive on the sample ({})",
            self.matches_total,
            self.matches_indexed,
            self.matches_naive,
            if self.identical { "identical" } else { "DIFFERENT" }
        )?;
        write!(f, "peak RSS           {:.0} MiB", self.rss_mb)
    }
}
