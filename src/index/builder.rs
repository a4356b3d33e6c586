//! Building a [`ScheduleIndex`] one rule at a time.

use super::slots::build_slots;
use super::spans::*;
use super::*;
use crate::timetable::compile::{FrameSpans, compile_days, compile_holiday_windows};

/// The key of a table: rules on one camera of an event, or on every camera of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Camera(i64, i64),
    Event(i64),
}

/// Builds a [`ScheduleIndex`] one rule at a time, so a caller that reads rules one by one
/// (the live snapshot streams database rows) never holds all of them: each rule is compiled
/// as it comes and only its spans are kept until [`IndexBuilder::finish`] lays out the
/// tables, each allocated at its final size.
#[derive(Default)]
pub struct IndexBuilder {
    pub(super) script_ids: Vec<i64>,
    pub(super) reference: Vec<Option<Arc<Timetable>>>,
    /// Per position: where the rule's compiled data starts in `data`, or [`NONE`].
    pub(super) at: Vec<usize>,
    /// Per enabled rule: `[word, exact, frame count, (frame, n, spans…)…, holiday frame
    /// count, (frame, n, spans…)…, interval count, first interval]` (spans encoded as in a
    /// packed table; the holiday frames are the compiled holiday windows); an exact rule
    /// stops after `exact`.
    pub(super) data: Vec<u32>,
    /// The enabled rules' intervals, each rule's consecutive.
    pub(super) intervals: Vec<(i64, i64)>,
    /// The distinct frames, indexed by the frame numbers in `data`.
    pub(super) frames: Vec<Zone>,
    /// Table number of each key, and the keys by number.
    pub(super) tables: FxHashMap<Key, u32>,
    pub(super) keys: Vec<Key>,
    /// (table number, rule position) of every membership, in the order added.
    pub(super) members: Vec<(u32, u32)>,
    pub(super) enabled: usize,
    /// The reference timetables kept so far and those of a previous index, by value: an
    /// equal timetable is kept once.
    pub(super) timetables: FxHashSet<Arc<Timetable>>,
    /// The distinct holiday span sets, and the set of each rule with holidays.
    pub(super) holiday_sets: Vec<Arc<[(i64, i64)]>>,
    pub(super) holiday_set_ids: FxHashMap<Arc<[(i64, i64)]>, u32>,
    pub(super) holiday_of: FxHashMap<u32, u32>,
}

/// One enabled rule's compiled data, read back from an [`IndexBuilder`].
pub(super) struct Compiled<'a> {
    pub(super) word: u32,
    pub(super) exact: bool,
    /// `(frame, n, spans…)…` of the day entries.
    pub(super) frames: &'a [u32],
    /// `(frame, n, spans…)…` of the holiday windows.
    pub(super) windows: &'a [u32],
    pub(super) intervals: &'a [(i64, i64)],
}

impl Compiled<'_> {
    /// Frame number and spans `[n, spans…]` of each frame of the day entries (`holiday`
    /// false) or of the holiday windows (`holiday` true).
    pub(super) fn part(&self, holiday: bool) -> impl Iterator<Item = (u32, &[u32])> {
        frame_items(if holiday { self.windows } else { self.frames })
    }
}

/// Frame number and spans of each `(frame, n, spans…)` item of `d`.
fn frame_items(d: &[u32]) -> impl Iterator<Item = (u32, &[u32])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= d.len() {
            return None;
        }
        let end = at + 2 + spans_len(d[at + 1]);
        let item = (d[at], &d[at + 1..end]);
        at = end;
        Some(item)
    })
}

impl IndexBuilder {
    /// An empty builder with room for `rules` rules.
    pub fn with_capacity(rules: usize) -> IndexBuilder {
        IndexBuilder {
            script_ids: Vec::with_capacity(rules),
            reference: Vec::with_capacity(rules),
            at: Vec::with_capacity(rules),
            ..IndexBuilder::default()
        }
    }

    /// Shares the reference timetables of `previous` (the index this one replaces): a rule
    /// whose timetable equals one of them keeps that one, so while both indexes live (a
    /// rebuild swaps the new one in while readers may still hold the old) the unchanged
    /// timetables exist once.
    pub fn share_with(&mut self, previous: &ScheduleIndex) {
        self.timetables.extend(previous.reference.iter().flatten().cloned());
    }

    /// Adds the next rule; its position is the number of rules added before it. Disabled
    /// rules take a position but never match. Of equal timetables one is kept.
    ///
    /// # Panics
    /// With 2³¹ rules or more (positions are 31-bit), or 2³² - 1 intervals.
    pub fn add(&mut self, rule: &Rule) {
        let position = self.script_ids.len();
        assert!(position < REPEAT as usize, "too many rules for one index");
        self.script_ids.push(rule.script_id);
        if !rule.enabled {
            self.reference.push(None);
            self.at.push(NONE);
            return;
        }
        self.enabled += 1;
        let compiled = compile_days(&rule.timetable).zip(compile_holiday_windows(&rule.timetable));
        let exact = compiled.is_none();
        let (frames, windows) = compiled.unwrap_or_default();
        let holidays = if exact { Vec::new() } else { rule.timetable.holiday_spans() };
        // Each frame and each interval can find the rule once. A rule with holidays is
        // always checked for a repeat: on a holiday its day spans are masked through the
        // seen-bits (see `ScheduleIndex::matches_into`).
        let sources = frames.len().max(windows.len()) + rule.timetable.intervals.len();
        let repeat = sources > 1 || !holidays.is_empty();
        let word = position as u32 | if repeat { REPEAT } else { 0 };
        self.at.push(self.data.len());
        self.data.extend([word, u32::from(exact)]);
        if !exact {
            self.push_frames(&frames);
            self.push_frames(if holidays.is_empty() { &[] } else { &windows[..] });
            let first = u32::try_from(self.intervals.len()).unwrap_or(u32::MAX);
            assert!(first < u32::MAX, "too many intervals for one index");
            self.data.extend([rule.timetable.intervals.len() as u32, first]);
            self.intervals.extend(rule.timetable.intervals.iter().map(|i| (i.from, i.to)));
        }
        // The reference timetable is kept for what the spans cannot answer: entries that
        // convert per date, and the repeated hour of an IANA zone.
        let needs_reference = exact || frames.iter().chain(&windows).any(|f| !f.frame.is_fixed());
        if !holidays.is_empty() {
            let spans: Arc<[(i64, i64)]> = holidays.into();
            let next = self.holiday_sets.len() as u32;
            let set = *self.holiday_set_ids.entry(spans.clone()).or_insert(next);
            if set == next {
                self.holiday_sets.push(spans);
            }
            self.holiday_of.insert(position as u32, set);
        }
        match &rule.cameras {
            None => self.member(Key::Event(rule.event_id), position as u32),
            Some(cams) => {
                for &cam in cams {
                    self.member(Key::Camera(rule.event_id, cam), position as u32);
                }
            }
        }
        let reference = needs_reference.then(|| self.keep(&rule.timetable));
        self.reference.push(reference);
    }

    /// Appends `frame count, (frame, n, spans…)…` to `data`.
    fn push_frames(&mut self, frames: &[FrameSpans]) {
        self.data.push(frames.len() as u32);
        for fs in frames {
            let frame = match self.frames.iter().position(|&f| f == fs.frame) {
                Some(i) => i,
                None => {
                    self.frames.push(fs.frame);
                    self.frames.len() - 1
                }
            };
            self.data.push(frame as u32);
            encode_spans(&fs.spans, &mut self.data);
        }
    }

    /// The kept timetable equal to `timetable`, which is kept when there is none.
    pub(super) fn keep(&mut self, timetable: &Arc<Timetable>) -> Arc<Timetable> {
        match self.timetables.get(timetable) {
            Some(kept) => kept.clone(),
            None => {
                self.timetables.insert(timetable.clone());
                timetable.clone()
            }
        }
    }

    pub(super) fn member(&mut self, key: Key, position: u32) {
        let next = self.keys.len() as u32;
        let table = *self.tables.entry(key).or_insert(next);
        if table == next {
            self.keys.push(key);
        }
        self.members.push((table, position));
    }

    pub(super) fn compiled(&self, position: u32) -> Option<Compiled<'_>> {
        let at = *self.at.get(position as usize)?;
        let d = self.data.get(at..)?;
        let (&word, &exact) = (d.first()?, d.get(1)?);
        if exact != 0 {
            return Some(Compiled { word, exact: true, frames: &[], windows: &[], intervals: &[] });
        }
        // `count, (frame, n, spans…)…` from `start`: the items' range.
        let items = |start: usize| -> Option<(usize, usize)> {
            let count = *d.get(start)? as usize;
            let mut end = start + 1;
            for _ in 0..count {
                end += 2 + spans_len(*d.get(end + 1)?);
            }
            Some((start + 1, end))
        };
        let (f0, f1) = items(2)?;
        let (w0, w1) = items(f1)?;
        let (n, first) = (*d.get(w1)? as usize, *d.get(w1 + 1)? as usize);
        Some(Compiled {
            word,
            exact: false,
            frames: d.get(f0..f1)?,
            windows: d.get(w0..w1)?,
            intervals: self.intervals.get(first..first + n)?,
        })
    }

    /// Lays out one table from its members' positions (ascending).
    pub(super) fn table(&self, members: &[u32]) -> Table {
        let mut exact = Vec::new();
        let mut ivs = Vec::new();
        for c in members.iter().filter_map(|&p| self.compiled(p)) {
            if c.exact {
                exact.push(c.word & !REPEAT);
            }
            ivs.extend(c.intervals.iter().map(|&(f, t)| (f, t, c.word)));
        }
        let mut tables = self.frame_tables(members, false).into_iter();
        let inline = [tables.next(), tables.next()];
        let more: Box<[FrameTable]> = tables.collect();
        let (intervals, mut long) = Intervals::build(ivs);
        long.sort_unstable();
        long.dedup();
        let holidays = self.holiday_groups(members);
        let rare = (!more.is_empty() || !long.is_empty() || !exact.is_empty()).then(|| {
            Box::new(Rare {
                frames: more,
                long: long.into_boxed_slice(),
                exact: exact.into_boxed_slice(),
            })
        });
        let holidays = (!holidays.is_empty()).then_some(holidays);
        Table { frames: inline, intervals, rare, holidays }
    }

    /// The frame tables of the members' day entries (`holiday` false) or holiday windows
    /// (`holiday` true), frames in order of first appearance, each laid out at its size.
    fn frame_tables(&self, members: &[u32], holiday: bool) -> Vec<FrameTable> {
        // First pass: the frames with their sizes.
        let mut frames: Vec<(u32, usize, usize)> = Vec::new(); // (frame, packed len, members)
        for c in members.iter().filter_map(|&p| self.compiled(p)) {
            for (frame, spans) in c.part(holiday) {
                let i = match frames.iter().position(|f| f.0 == frame) {
                    Some(i) => i,
                    None => {
                        frames.push((frame, 0, 0));
                        frames.len() - 1
                    }
                };
                frames[i].1 += 1 + spans.len();
                frames[i].2 += 1;
            }
        }
        // Second pass: fill each frame's packed array.
        let mut packed: Vec<Vec<u32>> = frames.iter().map(|f| Vec::with_capacity(f.1)).collect();
        for c in members.iter().filter_map(|&p| self.compiled(p)) {
            for (frame, spans) in c.part(holiday) {
                if let Some(i) = frames.iter().position(|f| f.0 == frame) {
                    packed[i].push(c.word);
                    packed[i].extend_from_slice(spans);
                }
            }
        }
        frames
            .iter()
            .zip(packed)
            .map(|(&(frame, _, members), packed)| {
                let packed = packed.into_boxed_slice();
                let slots = (members > SCAN_MAX).then(|| Box::new(build_slots(&packed, members)));
                FrameTable { frame: self.frames[frame as usize], packed, slots }
            })
            .collect()
    }

    /// The members with holidays (positions ascending), grouped by their holiday spans,
    /// each group with its compiled holiday windows.
    fn holiday_groups(&self, members: &[u32]) -> Box<[HolidayGroup]> {
        let mut groups: Vec<(u32, Vec<u32>)> = Vec::new();
        for &p in members {
            let Some(&set) = self.holiday_of.get(&p) else { continue };
            match groups.iter_mut().find(|g| g.0 == set) {
                Some(g) => g.1.push(p),
                None => groups.push((set, vec![p])),
            }
        }
        groups
            .into_iter()
            .map(|(set, members)| HolidayGroup {
                spans: self.holiday_sets[set as usize].clone(),
                windows: self.frame_tables(&members, true).into_boxed_slice(),
                members: members.into_boxed_slice(),
            })
            .collect()
    }

    /// Lays out every table and returns the finished index.
    pub fn finish(mut self) -> ScheduleIndex {
        self.timetables = FxHashSet::default();
        // The memberships grouped by table (a counting sort keeps positions ascending).
        let tables = self.keys.len();
        let mut start = vec![0u32; tables + 1];
        for &(t, _) in &self.members {
            start[t as usize + 1] += 1;
        }
        for t in 0..tables {
            start[t + 1] += start[t];
        }
        let mut next = start[..tables].to_vec();
        let mut grouped = vec![0u32; self.members.len()];
        for &(t, p) in &self.members {
            grouped[next[t as usize] as usize] = p;
            next[t as usize] += 1;
        }
        drop(next);
        let cameras = self.keys.iter().filter(|k| matches!(k, Key::Camera(..))).count();
        let mut by_camera = FxHashMap::with_capacity_and_hasher(cameras, Default::default());
        let mut by_event =
            FxHashMap::with_capacity_and_hasher(tables - cameras, Default::default());
        for (t, key) in self.keys.iter().enumerate() {
            let table = self.table(&grouped[start[t] as usize..start[t + 1] as usize]);
            match *key {
                Key::Camera(event, camera) => {
                    by_camera.insert((event, camera), table);
                }
                Key::Event(event) => {
                    by_event.insert(event, table);
                }
            }
        }
        let mut holidays: Vec<(i64, i64)> =
            self.holiday_sets.iter().flat_map(|s| s.iter().copied()).collect();
        holidays.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(holidays.len());
        for (f, t) in holidays {
            match merged.last_mut() {
                Some(last) if f <= last.1 => last.1 = last.1.max(t),
                _ => merged.push((f, t)),
            }
        }
        ScheduleIndex {
            holidays: merged.into_boxed_slice(),
            script_ids: self.script_ids.into_boxed_slice(),
            reference: self.reference.into_boxed_slice(),
            by_camera,
            by_event,
            enabled: self.enabled,
        }
    }
}
