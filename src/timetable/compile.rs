//! A timetable's day entries compiled into spans of week position, per frame (the wall
//! clock a span is read on): what the schedule index stores ([`crate::index`]).

use chrono::Weekday;

use crate::timetable::zone::{DAY, WEEK};
use crate::timetable::{Axis, DayEntry, Timetable, Zone};

/// Spans of one rule in one frame while building.
pub(crate) struct FrameSpans {
    pub(crate) frame: Zone,
    pub(crate) spans: Vec<(u32, u32)>,
}

pub(crate) const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// The frame an entry's spans are expressed in, and the shift into it.
pub(crate) fn frame_of(zone: Zone) -> (Zone, i64) {
    match zone {
        Zone::Fixed(off) => (Zone::Fixed(0), -i64::from(off)),
        named => (named, 0),
    }
}

/// Adds `[from, to)` (any integers) to `out` as spans within `[0, WEEK)`.
pub(crate) fn push_wrapped(out: &mut Vec<(u32, u32)>, from: i64, to: i64) {
    if to <= from {
        return;
    }
    if to - from >= WEEK {
        out.push((0, WEEK as u32));
        return;
    }
    let f = from.rem_euclid(WEEK);
    let t = f + (to - from);
    if t <= WEEK {
        out.push((f as u32, t as u32));
    } else {
        out.push((f as u32, WEEK as u32));
        out.push((0, (t - WEEK) as u32));
    }
}

/// Sorts and merges overlapping or touching spans.
pub(crate) fn merge(spans: &mut Vec<(u32, u32)>) {
    spans.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(spans.len());
    for &(f, t) in spans.iter() {
        match out.last_mut() {
            Some(last) if f <= last.1 => last.1 = last.1.max(t),
            _ => out.push((f, t)),
        }
    }
    *spans = out;
}

/// The window minus its breaks, as pieces on the entry's day line.
pub(crate) fn window_pieces(axis: &Axis) -> Vec<(i64, i64)> {
    let mut breaks = axis.breaks.clone();
    breaks.sort_unstable();
    let mut pieces = Vec::with_capacity(breaks.len() + 1);
    let mut cursor = axis.from;
    for (bf, bt) in breaks {
        if bf > cursor {
            pieces.push((cursor, bf));
        }
        cursor = cursor.max(bt);
    }
    if cursor < axis.to {
        pieces.push((cursor, axis.to));
    }
    pieces
}

/// Compiles a timetable's day entries into week spans per frame, or `None` when an entry
/// needs per-date conversion (the rule then takes the reference evaluation).
pub(crate) fn compile_days(tt: &Timetable) -> Option<Vec<FrameSpans>> {
    compile_entries(&tt.days)
}

/// Compiles a timetable's holiday windows (every-day windows, read only while the instant
/// is on a holiday) into week spans per frame, exactly as [`compile_days`] compiles day
/// entries; empty without holidays, `None` when a window needs per-date conversion.
pub(crate) fn compile_holiday_windows(tt: &Timetable) -> Option<Vec<FrameSpans>> {
    match &tt.holidays {
        Some(h) => compile_entries(&h.windows),
        None => Some(Vec::new()),
    }
}

/// Compiles day entries into week spans per frame, or `None` when one needs per-date
/// conversion.
fn compile_entries(entries: &[DayEntry]) -> Option<Vec<FrameSpans>> {
    let mut frames: Vec<FrameSpans> = Vec::new();
    for entry in entries {
        let (frame, shift) = frame_of(entry.zone);
        let pieces = static_pieces(entry)?;
        let slot = match frames.iter().position(|f| f.frame == frame) {
            Some(i) => i,
            None => {
                frames.push(FrameSpans { frame, spans: Vec::new() });
                frames.len() - 1
            }
        };
        let spans = &mut frames[slot].spans;
        for (w, day) in WEEKDAYS.iter().enumerate() {
            if !entry.kind.applies(*day) {
                continue;
            }
            let base = w as i64 * DAY + shift;
            for &(f, t) in &pieces {
                push_wrapped(spans, base + f, base + t);
            }
        }
    }
    for f in &mut frames {
        merge(&mut f.spans);
    }
    frames.retain(|f| !f.spans.is_empty());
    Some(frames)
}

pub(crate) fn static_pieces(entry: &DayEntry) -> Option<Vec<(i64, i64)>> {
    if !entry.is_static() {
        return None;
    }
    // Static bounds do not depend on the date: any date gives the same axis.
    let axis = entry.axis_on(chrono::NaiveDate::default())?;
    Some(window_pieces(&axis))
}
