//! The synthetic database and the occurrences to publish, with what each should make.

use super::*;
use crate::store::sql::Sql;

/// One pre-checked (event, camera, instant) and the scripts the daemon's index finds for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Combo {
    pub(super) event_id: i64,
    pub(super) camera_id: i64,
    /// `occurred_at`, unix seconds.
    pub(super) at: i64,
    /// The matching scripts' ids (the first `n`).
    pub(super) scripts: [i64; MAX_MATCHES],
    pub(super) n: u8,
}

impl Combo {
    /// `ids` holds at most [`MAX_MATCHES`] script ids (the rest are dropped).
    pub(super) fn new(event_id: i64, camera_id: i64, at: i64, ids: &[i64]) -> Combo {
        let mut scripts = [0; MAX_MATCHES];
        let n = ids.len().min(MAX_MATCHES);
        scripts[..n].copy_from_slice(&ids[..n]);
        Combo { event_id, camera_id, at, scripts, n: n as u8 }
    }

    pub(super) fn scripts(&self) -> &[i64] {
        &self.scripts[..usize::from(self.n)]
    }
}

/// What the daemon must send for a stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Expectation {
    /// The `delivery_id`s of the pushes it must send.
    pub(super) deliveries: Vec<String>,
    /// Pushes the cooldown suppresses.
    pub(super) suppressed: u64,
}

/// The pushes for `stream` (occurrence id and combo, in publish order = arrival order),
/// deciding each matched script's firing as the intake does: with the same
/// [`crate::intake::in_cooldown`] per (script, camera), starting from and updating
/// `state` (the last firing's `occurred_at` in ms and occurrence id). `recipients` gives
/// each script's users (one push each).
pub(super) fn expect<'a>(
    stream: impl IntoIterator<Item = (String, &'a Combo)>,
    cooldown_seconds: u32,
    recipients: &HashMap<i64, Vec<i64>>,
    state: &mut HashMap<(i64, i64), (i64, String)>,
) -> Expectation {
    let mut out = Expectation::default();
    for (id, combo) in stream {
        for &script in combo.scripts() {
            let users = recipients.get(&script).map_or(&[][..], Vec::as_slice);
            if cooldown_seconds > 0 {
                let at_ms = combo.at * 1000;
                let key = (script, combo.camera_id);
                let last = state.get(&key);
                if crate::intake::in_cooldown(last, at_ms, &id, cooldown_seconds) {
                    out.suppressed += users.len() as u64;
                    continue;
                }
                if last.is_none_or(|(_, fired)| *fired != id) {
                    state.insert(key, (at_ms, id.clone()));
                }
            }
            for user in users {
                out.deliveries.push(crate::delivery::delivery_id(&id, script, user));
            }
        }
    }
    out
}

/// The occurrence payload of CONTRACT §4, with the publish instant in `data.t_ns`.
pub(super) fn occurrence_json(id: &str, c: &Combo, t_ns: u64) -> Vec<u8> {
    let at = DateTime::<Utc>::from_timestamp(c.at, 0).unwrap_or_default();
    format!(
        r#"{{"id":"{id}","event_id":{},"camera_id":{},"occurred_at":"{}","data":{{"t_ns":{t_ns}}}}}"#,
        c.event_id,
        c.camera_id,
        at.format("%Y-%m-%dT%H:%M:%SZ")
    )
    .into_bytes()
}

/// Draws per matched slot before giving up.
pub(super) const DRAWS: usize = 1000;
/// Draws per unmatched slot among the generated cameras before using a camera no script
/// watches.
pub(super) const UNMATCHED_DRAWS: usize = 50;

/// What the measured run publishes, and what the daemon must send for it.
pub(super) struct Prepared {
    /// The warm-up occurrence (at least a day before the stream).
    pub(super) warm: Combo,
    /// The `M` occurrences in publish order, `occurred_at` non-decreasing.
    pub(super) plan: Vec<Combo>,
    /// The users of every script in `warm` and `plan` (one push each).
    pub(super) recipients: HashMap<i64, Vec<i64>>,
}

/// Instant of occurrence `i` of `m`: the two-week window divided evenly, so `occurred_at`
/// never decreases in publish order (strictly increases when `m` ≤ the window's seconds).
pub(super) fn slot_instant(i: usize, m: usize) -> i64 {
    let offset = (i as i128 * i128::from(synth::STREAM_SECONDS)) / m.max(1) as i128;
    synth::stream_start() + offset as i64
}

/// The `M` occurrences, in publish order. Occurrence `i` lies at [`slot_instant`]; it is
/// matched when `floor((i+1)·F) > floor(i·F)` (the last one always): an (event, camera)
/// for which `matches` (the daemon's index) finds 1 to [`MAX_MATCHES`] scripts *at that
/// instant*, drawn from a random active script. Matched occurrences come in pairs: the
/// second repeats the first's event and camera at its own, later instant (when that still
/// matches 1–3 scripts), as a camera that keeps seeing the same thing does; a cooldown
/// longer than the gap (`W / (M·F)`, 60 s at 200,000 occurrences and F = 0.1) suppresses
/// it. The last occurrence is a fresh draw none of whose (script, camera) pairs matched
/// within the longest cooldown (one day) before it, so it fires under any cooldown and the
/// run's end is observable. Unmatched occurrences: an (event, camera) the index finds
/// nothing for at that instant (at worst a camera no script watches). `candidates` are the
/// active scripts' (event, cameras).
pub(super) fn plan_occurrences(
    opts: &PipelineBenchOptions,
    candidates: &[(i64, &[i64])],
    matches: impl Fn(i64, i64, i64) -> Vec<i64>,
) -> Result<(Combo, Vec<Combo>), String> {
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    if candidates.is_empty() {
        return Err("no active script watches a camera; use more scripts".into());
    }
    let draw = |rng: &mut StdRng, at: i64, fits: &dyn Fn(&[i64], i64) -> bool| {
        (0..DRAWS).find_map(|_| {
            let (event_id, cams) = candidates[rng.random_range(0..candidates.len())];
            let camera_id = cams[rng.random_range(0..cams.len())];
            let ids = matches(event_id, camera_id, at);
            ((1..=MAX_MATCHES).contains(&ids.len()) && fits(&ids, camera_id))
                .then(|| Combo::new(event_id, camera_id, at, &ids))
        })
    };
    let none_found = |at: i64| {
        let at = DateTime::<Utc>::from_timestamp(at, 0).unwrap_or_default();
        format!(
            "found no occurrence at {at} that matches 1-3 scripts in {DRAWS} draws; use more scripts"
        )
    };
    let any = |_: &[i64], _: i64| true;
    // The warm-up: one to seven days before the stream.
    let start = synth::stream_start();
    let warm = (0..10)
        .find_map(|_| {
            let at = rng.random_range(start - 7 * 86_400..=start - 86_400);
            draw(&mut rng, at, &any)
        })
        .ok_or_else(|| none_found(start - 86_400))?;
    let f = opts.match_fraction;
    let m = opts.events;
    let mut plan = Vec::with_capacity(m);
    // When each (script, camera) last matched in the plan.
    let mut last_match: HashMap<(i64, i64), i64> = HashMap::new();
    let mut repeat: Option<(i64, i64)> = None;
    for i in 0..m {
        let at = slot_instant(i, m);
        let is_last = i + 1 == m;
        let combo = if ((i + 1) as f64 * f).floor() > (i as f64 * f).floor() || is_last {
            let again = repeat.take().filter(|_| !is_last).and_then(|(e, c)| {
                let ids = matches(e, c, at);
                (1..=MAX_MATCHES).contains(&ids.len()).then(|| Combo::new(e, c, at, &ids))
            });
            let combo = match again {
                Some(c) => c,
                None if is_last => {
                    let quiet = |ids: &[i64], camera: i64| {
                        ids.iter().all(|s| {
                            last_match
                                .get(&(*s, camera))
                                .is_none_or(|t| at - t >= crate::script::COOLDOWN_MAX as i64)
                        })
                    };
                    draw(&mut rng, at, &quiet)
                        .or_else(|| draw(&mut rng, at, &any))
                        .ok_or_else(|| none_found(at))?
                }
                None => {
                    let c = draw(&mut rng, at, &any).ok_or_else(|| none_found(at))?;
                    repeat = Some((c.event_id, c.camera_id));
                    c
                }
            };
            for &s in combo.scripts() {
                last_match.insert((s, combo.camera_id), at);
            }
            combo
        } else {
            let mut found = None;
            for tries in 0..DRAWS {
                let event_id = rng.random_range(1..=synth::EVENT_KINDS);
                // After many misses (dense script sets), a camera no script watches.
                let camera_id = if tries < UNMATCHED_DRAWS {
                    rng.random_range(1..=opts.cameras)
                } else {
                    opts.cameras + rng.random_range(1..=1000)
                };
                if matches(event_id, camera_id, at).is_empty() {
                    found = Some(Combo::new(event_id, camera_id, at, &[]));
                    break;
                }
            }
            found.ok_or("found no unmatched occurrence; the script set covers everything")?
        };
        plan.push(combo);
    }
    Ok((warm, plan))
}

/// Creates the database with the scripts (each with `extra.cooldown_seconds` when asked)
/// and plans the occurrences with the daemon's own index over it.
pub(super) fn prepare_database(db: &Path, opts: &PipelineBenchOptions) -> Result<Prepared, String> {
    let err = |e: crate::store::StoreError| format!("bench database: {e}");
    let store = Store::migrate(db).map_err(err)?;
    let scripts = synth::scripts(opts.scripts, opts.cameras, opts.seed);
    let mut extra = Map::new();
    if opts.cooldown_seconds > 0 {
        extra.insert("cooldown_seconds".into(), opts.cooldown_seconds.into());
    }
    store
        .write(|tx| {
            for id in (crate::store::catalog::DEFAULT_EVENTS.len() as i64 + 1)..=WILDCARD_EVENT {
                Sql::execute(
                    tx,
                    "INSERT OR IGNORE INTO events (id, name, description, color, analytic_type)
                     VALUES (?1, ?2, ?3, '#888888', 'bench')",
                    crate::args![id, format!("bench_event_{id}"), format!("Bench event {id}")],
                )?;
            }
            for u in 1..=USERS {
                Sql::execute(
                    tx,
                    "INSERT INTO users (id, login, name, created_at, updated_at)
                     VALUES (?1, ?2, ?3, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
                    crate::args![u, format!("bench-{u}"), format!("Bench user {u}")],
                )?;
            }
            for s in &scripts {
                let Value::Object(timetable) = &s.timetable else { continue };
                let input = ScriptInput {
                    title: format!("bench script {}", s.id),
                    event_id: if s.cameras.is_some() { s.event_id } else { WILDCARD_EVENT },
                    reaction_id: PUSH_REACTION_ID,
                    enabled: s.active,
                    cameras: s.cameras.clone(),
                    users: vec![(s.id - 1) % USERS + 1],
                    timetable: Value::Object(timetable.clone()),
                    extra: extra.clone(),
                };
                crate::store::scripts::insert(tx, Some(s.id), &input)?;
            }
            Ok(())
        })
        .map_err(err)?;
    // The daemon's own view of these scripts: the same snapshot code it will run.
    let live = Live::new(store, synth::ZONE).map_err(err)?;
    let snap = live.load();
    if !snap.invalid.is_empty() {
        return Err(format!("{} synthetic scripts are invalid", snap.invalid.len()));
    }
    if let Some(s) = snap.scripts.iter().find(|s| s.extra.cooldown_seconds != opts.cooldown_seconds)
    {
        return Err(format!(
            "script {} has cooldown_seconds {} instead of {}",
            s.id, s.extra.cooldown_seconds, opts.cooldown_seconds
        ));
    }
    let candidates: Vec<(i64, &[i64])> = scripts
        .iter()
        .filter(|s| s.active)
        .filter_map(|s| Some((s.event_id, s.cameras.as_deref().filter(|c| !c.is_empty())?)))
        .collect();
    let matches = |e: i64, c: i64, t: i64| {
        snap.index.matches(e, c, DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default())
    };
    let (warm, plan) = plan_occurrences(opts, &candidates, matches)?;
    let mut recipients = HashMap::new();
    for combo in plan.iter().chain([&warm]) {
        for id in combo.scripts() {
            if !recipients.contains_key(id) {
                let users = snap.scripts.get(id).map(|s| snap.recipients(s)).unwrap_or_default();
                recipients.insert(*id, users);
            }
        }
    }
    Ok(Prepared { warm, plan, recipients })
}
