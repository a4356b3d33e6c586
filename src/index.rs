//! The schedule index: which scripts fire for (event, camera, instant).
//!
//! Built once from every rule ([`ScheduleIndex::build`]) and then only read, so a changed
//! script set means building a new index and swapping it in (`arc_swap`); readers never wait.
//!
//! ## How a query avoids looking at scripts that cannot match
//!
//! 1. **Event and camera.** Rules are grouped into tables by `(event, camera)`, plus one
//!    table per event for rules with `cameras: null`. A query reads two tables.
//! 2. **Time of week.** A day entry repeats every week on the wall clock of its zone, so a
//!    rule's day entries compile into *spans* of week position (seconds after Monday 00:00)
//!    with the breaks already cut out. Entries written with fixed offsets all share one frame
//!    (UTC week position); entries in an IANA zone use that zone's wall-clock week. In a large
//!    table the week is cut into 15-minute slots: per slot a bitset of the members active for
//!    the whole slot (emitted without any check) and a short list of members with a span
//!    boundary inside the slot (checked against their spans). Small tables check each member's
//!    spans directly with a binary search.
//! 3. **Intervals.** Absolute intervals are kept per table in classes by length (powers of
//!    two), each sorted by start: an interval that contains t starts less than its class's
//!    length before t, so a binary search finds the few candidates.
//!
//! Two cases go to the reference evaluation ([`crate::timetable::Timetable::is_active_at`]):
//! an instant inside an IANA zone's repeated hour (its wall-clock reading is ambiguous, so
//! the week position alone cannot apply the DST policy), and entries whose bounds are written
//! in zones whose difference depends on the date. Both are rare, and the property test
//! `tests/index_matches_naive.rs` checks that the index always equals the naive scan.
//!
//! Nothing here reads the clock: the instant is an argument.

use std::collections::HashMap;

use chrono::{DateTime, Utc, Weekday};

use crate::rules::Rule;
use crate::timetable::zone::{DAY, WEEK, week_position_fixed};
use crate::timetable::{Axis, DayEntry, Timetable, Zone};

/// Width of a week slot in large tables, seconds.
const SLOT: u32 = 900;
/// Slots in a week.
const SLOTS: usize = (WEEK as u32 / SLOT) as usize;
/// Tables with more members than this get slot bitsets; smaller ones are scanned.
const SCAN_MAX: usize = 48;

/// The compiled schedule of every enabled rule.
pub struct ScheduleIndex {
    rules: Vec<Rule>,
    /// Week spans of (rule, frame) pairs; members point into it.
    spans: Vec<(u32, u32)>,
    by_camera: HashMap<(i64, i64), Table>,
    by_event: HashMap<i64, Table>,
    enabled: usize,
}

/// The rules of one (event, camera) or (event, any camera) key.
#[derive(Default)]
struct Table {
    frames: Vec<FrameTable>,
    intervals: Vec<IntervalClass>,
    /// Rules that always take the reference evaluation.
    exact: Vec<u32>,
}

/// The members of a table whose day entries live in one frame.
struct FrameTable {
    frame: Zone,
    members: Vec<Member>,
    slots: Option<Slots>,
}

#[derive(Clone, Copy)]
struct Member {
    rule: u32,
    spans_from: u32,
    spans_to: u32,
}

struct Slots {
    words: usize,
    /// `SLOTS × words` bits: member active during the whole slot.
    full: Vec<u64>,
    /// CSR offsets into `partial`, `SLOTS + 1` entries.
    partial_at: Vec<u32>,
    /// Member indices with a span boundary inside the slot.
    partial: Vec<u32>,
}

/// Intervals shorter than `max_len`, sorted by start.
struct IntervalClass {
    max_len: i64,
    items: Vec<(i64, i64, u32)>,
}

/// Spans of one rule in one frame while building.
struct FrameSpans {
    frame: Zone,
    spans: Vec<(u32, u32)>,
}

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// The frame an entry's spans are expressed in, and the shift into it.
fn frame_of(zone: Zone) -> (Zone, i64) {
    match zone {
        Zone::Fixed(off) => (Zone::Fixed(0), -i64::from(off)),
        named => (named, 0),
    }
}

/// Adds `[from, to)` (any integers) to `out` as spans within `[0, WEEK)`.
fn push_wrapped(out: &mut Vec<(u32, u32)>, from: i64, to: i64) {
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
fn merge(spans: &mut Vec<(u32, u32)>) {
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
fn window_pieces(axis: &Axis) -> Vec<(i64, i64)> {
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
fn compile_days(tt: &Timetable) -> Option<Vec<FrameSpans>> {
    let mut frames: Vec<FrameSpans> = Vec::new();
    for entry in &tt.days {
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

fn static_pieces(entry: &DayEntry) -> Option<Vec<(i64, i64)>> {
    if !entry.is_static() {
        return None;
    }
    // Static bounds do not depend on the date: any date gives the same axis.
    let axis = entry.axis_on(chrono::NaiveDate::default())?;
    Some(window_pieces(&axis))
}

fn spans_contain(spans: &[(u32, u32)], pos: u32) -> bool {
    // The last span starting at or before pos.
    let i = spans.partition_point(|&(f, _)| f <= pos);
    i > 0 && pos < spans[i - 1].1
}

impl Slots {
    fn build(members: &[Member], spans: &[(u32, u32)]) -> Slots {
        let words = members.len().div_ceil(64);
        let mut full = vec![0u64; SLOTS * words];
        let mut partial_lists: Vec<Vec<u32>> = vec![Vec::new(); SLOTS];
        for (m, member) in members.iter().enumerate() {
            for &(f, t) in &spans[member.spans_from as usize..member.spans_to as usize] {
                let first = (f / SLOT) as usize;
                let last = ((t - 1) / SLOT) as usize;
                for s in first..=last {
                    let slot_start = s as u32 * SLOT;
                    if f <= slot_start && slot_start + SLOT <= t {
                        full[s * words + m / 64] |= 1 << (m % 64);
                    } else if partial_lists[s].last() != Some(&(m as u32)) {
                        partial_lists[s].push(m as u32);
                    }
                }
            }
        }
        let mut partial_at = Vec::with_capacity(SLOTS + 1);
        let mut partial = Vec::with_capacity(partial_lists.iter().map(Vec::len).sum());
        partial_at.push(0);
        for list in partial_lists {
            partial.extend(list);
            partial_at.push(partial.len() as u32);
        }
        Slots { words, full, partial_at, partial }
    }
}

/// Per-query cache of week positions, one per frame.
struct Positions {
    seen: Vec<(Zone, u32, bool)>,
    t: i64,
}

impl Positions {
    fn get(&mut self, frame: Zone) -> (u32, bool) {
        if let Some(&(_, pos, amb)) = self.seen.iter().find(|(z, _, _)| *z == frame) {
            return (pos, amb);
        }
        let (pos, amb) = match frame {
            Zone::Fixed(off) => (week_position_fixed(self.t, off), false),
            named => (named.week_position(self.t), named.is_ambiguous_at(self.t)),
        };
        self.seen.push((frame, pos, amb));
        (pos, amb)
    }
}

impl ScheduleIndex {
    /// Builds the index from every rule; disabled rules are kept but never match.
    pub fn build(rules: Vec<Rule>) -> ScheduleIndex {
        let mut spans: Vec<(u32, u32)> = Vec::new();
        let mut by_camera: HashMap<(i64, i64), Table> = HashMap::new();
        let mut by_event: HashMap<i64, Table> = HashMap::new();
        let mut enabled = 0;
        // Reused per rule: (frame, member) pairs and intervals to add to each of its tables.
        let mut frame_members: Vec<(Zone, Member)> = Vec::new();
        for (idx, rule) in rules.iter().enumerate() {
            if !rule.enabled {
                continue;
            }
            enabled += 1;
            let idx = idx as u32;
            frame_members.clear();
            let compiled = compile_days(&rule.timetable);
            let exact = compiled.is_none();
            for fs in compiled.unwrap_or_default() {
                let from = spans.len() as u32;
                spans.extend_from_slice(&fs.spans);
                frame_members.push((
                    fs.frame,
                    Member { rule: idx, spans_from: from, spans_to: spans.len() as u32 },
                ));
            }
            let add = |table: &mut Table| {
                if exact {
                    table.exact.push(idx);
                    return;
                }
                for &(frame, member) in &frame_members {
                    match table.frames.iter_mut().find(|f| f.frame == frame) {
                        Some(ft) => ft.members.push(member),
                        None => table.frames.push(FrameTable {
                            frame,
                            members: vec![member],
                            slots: None,
                        }),
                    }
                }
                for iv in &rule.timetable.intervals {
                    let len = iv.to - iv.from;
                    // Class k holds lengths in [2^k, 2^(k+1)).
                    let max_len = 1i64 << (64 - (len as u64).leading_zeros()).min(62);
                    match table.intervals.iter_mut().find(|c| c.max_len == max_len) {
                        Some(c) => c.items.push((iv.from, iv.to, idx)),
                        None => table
                            .intervals
                            .push(IntervalClass { max_len, items: vec![(iv.from, iv.to, idx)] }),
                    }
                }
            };
            match &rule.cameras {
                None => add(by_event.entry(rule.event_id).or_default()),
                Some(cams) => {
                    for &cam in cams {
                        add(by_camera.entry((rule.event_id, cam)).or_default());
                    }
                }
            }
        }
        for table in by_camera.values_mut().chain(by_event.values_mut()) {
            for ft in &mut table.frames {
                ft.members.shrink_to_fit();
                if ft.members.len() > SCAN_MAX {
                    ft.slots = Some(Slots::build(&ft.members, &spans));
                }
            }
            for class in &mut table.intervals {
                class.items.sort_unstable();
                class.items.shrink_to_fit();
            }
        }
        spans.shrink_to_fit();
        ScheduleIndex { rules, spans, by_camera, by_event, enabled }
    }

    /// Script ids (sorted) of the enabled rules that fire for `event_id` on `camera_id` at `at`.
    pub fn matches(&self, event_id: i64, camera_id: i64, at: DateTime<Utc>) -> Vec<i64> {
        let mut out = Vec::new();
        self.matches_into(event_id, camera_id, at.timestamp(), &mut out);
        let mut ids: Vec<i64> = out.iter().map(|&i| self.rules[i as usize].script_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Like [`matches`](Self::matches), at unix second `t`, writing rule positions (see
    /// [`rule`](Self::rule)) into `out` (cleared first), sorted and without repeats.
    pub fn matches_into(&self, event_id: i64, camera_id: i64, t: i64, out: &mut Vec<u32>) {
        out.clear();
        let mut positions = Positions { seen: Vec::new(), t };
        if let Some(table) = self.by_camera.get(&(event_id, camera_id)) {
            self.query_table(table, t, &mut positions, out);
        }
        if let Some(table) = self.by_event.get(&event_id) {
            self.query_table(table, t, &mut positions, out);
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    fn query_table(&self, table: &Table, t: i64, positions: &mut Positions, out: &mut Vec<u32>) {
        for ft in &table.frames {
            let (pos, ambiguous) = positions.get(ft.frame);
            if ambiguous {
                // The repeated hour: the week position cannot apply the DST policy.
                for m in &ft.members {
                    if self.rules[m.rule as usize].timetable.is_active_at(t) {
                        out.push(m.rule);
                    }
                }
                continue;
            }
            match &ft.slots {
                None => {
                    for m in &ft.members {
                        if spans_contain(
                            &self.spans[m.spans_from as usize..m.spans_to as usize],
                            pos,
                        ) {
                            out.push(m.rule);
                        }
                    }
                }
                Some(slots) => {
                    let s = (pos / SLOT) as usize;
                    let row = &slots.full[s * slots.words..(s + 1) * slots.words];
                    for (w, &word) in row.iter().enumerate() {
                        let mut bits = word;
                        while bits != 0 {
                            let b = bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            out.push(ft.members[w * 64 + b].rule);
                        }
                    }
                    let (a, b) = (slots.partial_at[s] as usize, slots.partial_at[s + 1] as usize);
                    for &m in &slots.partial[a..b] {
                        let m = &ft.members[m as usize];
                        if spans_contain(
                            &self.spans[m.spans_from as usize..m.spans_to as usize],
                            pos,
                        ) {
                            out.push(m.rule);
                        }
                    }
                }
            }
        }
        for class in &table.intervals {
            let lo = class.items.partition_point(|&(f, _, _)| f <= t - class.max_len);
            let hi = class.items.partition_point(|&(f, _, _)| f <= t);
            for &(_, to, rule) in &class.items[lo..hi] {
                if t < to {
                    out.push(rule);
                }
            }
        }
        for &rule in &table.exact {
            if self.rules[rule as usize].timetable.is_active_at(t) {
                out.push(rule);
            }
        }
    }

    /// The rule at a position returned by [`matches_into`](Self::matches_into).
    pub fn rule(&self, position: u32) -> &Rule {
        &self.rules[position as usize]
    }

    /// All rules the index was built from, in the order given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules (enabled or not).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when built from no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of enabled rules.
    pub fn enabled(&self) -> usize {
        self.enabled
    }
}

impl std::fmt::Debug for ScheduleIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleIndex")
            .field("rules", &self.rules.len())
            .field("enabled", &self.enabled)
            .field("camera_tables", &self.by_camera.len())
            .field("event_tables", &self.by_event.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::rules::naive_matches;
    use crate::timetable::{ParseContext, parse_timetable};

    fn rule(id: i64, event: i64, cameras: Option<Vec<i64>>, tt: serde_json::Value) -> Rule {
        let ctx = ParseContext { timezone: chrono_tz::Europe::Berlin };
        Rule {
            script_id: id,
            event_id: event,
            cameras,
            enabled: true,
            timetable: Arc::new(parse_timetable(&tt, &ctx).unwrap()),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    #[test]
    fn wrapped_spans_split_at_the_week_end() {
        let mut v = Vec::new();
        push_wrapped(&mut v, WEEK - 10, WEEK + 5);
        assert_eq!(v, [((WEEK - 10) as u32, WEEK as u32), (0, 5)]);
        v.clear();
        push_wrapped(&mut v, -5, 5);
        assert_eq!(v, [((WEEK - 5) as u32, WEEK as u32), (0, 5)]);
    }

    #[test]
    fn event_camera_and_wildcard() {
        let all_day =
            json!({"days": [{"type": "same_every_day", "from": "00:00Z", "to": "23:59Z"}]});
        let rules = vec![
            rule(1, 10, Some(vec![1, 2]), all_day.clone()),
            rule(2, 10, None, all_day.clone()),
            rule(3, 11, None, all_day.clone()),
            Rule { enabled: false, ..rule(4, 10, None, all_day) },
        ];
        let index = ScheduleIndex::build(rules.clone());
        let t = at("2026-11-27T12:00:00Z");
        assert_eq!(index.matches(10, 1, t), vec![1, 2]);
        assert_eq!(index.matches(10, 3, t), vec![2]);
        assert_eq!(index.matches(11, 1, t), vec![3]);
        assert_eq!(index.matches(12, 1, t), Vec::<i64>::new());
        assert_eq!(index.enabled(), 3);
        assert_eq!(naive_matches(&rules, 10, 1, t), vec![1, 2]);
    }

    #[test]
    fn large_tables_use_slots_and_agree_with_the_naive_scan() {
        let mut rules = Vec::new();
        for i in 0..300 {
            let from = format!("{:02}:{:02}", (i * 7) % 24, (i * 13) % 60);
            let to = format!("{:02}:{:02}", (i * 11 + 5) % 24, (i * 17) % 60);
            let kind = ["same_every_day", "weekdays", "weekends", "tuesday"][i % 4];
            let tt = if from == to {
                json!({"days": [{"type": "weekdays", "from": "08:00", "to": "09:00"}]})
            } else {
                json!({"days": [{"type": kind, "from": from, "to": to}],
                       "intervals": if i % 5 == 0 { json!([{"from": "2026-11-27 10:00:00Z", "to": "2026-11-28 10:00:00Z"}]) } else { json!([]) }})
            };
            rules.push(rule(i as i64, 1, None, tt));
        }
        let index = ScheduleIndex::build(rules.clone());
        assert!(index.by_event[&1].frames.iter().any(|f| f.slots.is_some()));
        let start = at("2026-11-23T00:00:00Z").timestamp();
        for k in 0..2000 {
            let t = DateTime::<Utc>::from_timestamp(start + k * 613, 0).unwrap();
            assert_eq!(index.matches(1, 5, t), naive_matches(&rules, 1, 5, t), "at {t}");
        }
    }
}
