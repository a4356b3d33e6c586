//! Building a snapshot from the database: every script row validated, streamed into the
//! index builder.

use super::*;
use crate::store::postgres::snapshot::SnapshotRows;

pub(super) fn extra_of(extra: &serde_json::Map<String, Value>) -> Extra {
    let text = |k: &str| match extra.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Extra {
        bot_token: text("bot_token").map(Secret::new),
        chat_id: text("chat_id"),
        url: text("url"),
        secret: text("secret").map(Secret::new),
        cooldown_seconds: extra
            .get("cooldown_seconds")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
    }
}

/// Reads and validates every script into a snapshot; the timetables that equal one of
/// `previous` are shared with it.
pub(super) fn build(
    store: &Store,
    timezone: Tz,
    generation: u64,
    previous: &ScheduleIndex,
) -> Result<Snapshot, StoreError> {
    let (lookups, parents, disabled, built, source) = store.read(|tx| {
        // The file cannot be switched while this read's connection is open.
        let source = (store.epoch(), data_version(tx)?);
        let lookups = Lookups::load(tx)?;
        let parents = users::parents(tx)?;
        let disabled = users::disabled_ids(tx)?;
        let rows: i64 = tx.query_row("SELECT COUNT(*) FROM scripts", [], |r| r.get(0))?;
        let rows = usize::try_from(rows).unwrap_or(0);
        let built = assemble(&lookups, timezone, rows, previous, |f| scripts::for_each(tx, f))?;
        Ok((lookups, parents, disabled, built, source))
    })?;
    Ok(snapshot(built, lookups, parents, disabled, generation, source))
}

/// [`build`] from the rows read from PostgreSQL ([`SnapshotRows`]); `source` is
/// `(0, scripts_version)`.
pub(super) fn build_from_rows(
    rows: SnapshotRows,
    timezone: Tz,
    generation: u64,
    previous: &ScheduleIndex,
) -> Result<Snapshot, StoreError> {
    let SnapshotRows { lookups, parents, disabled, scripts, version } = rows;
    let built = assemble(&lookups, timezone, scripts.len(), previous, |f| {
        scripts.into_iter().try_for_each(f)
    })?;
    Ok(snapshot(built, lookups, parents, disabled, generation, (0, version)))
}

/// The snapshot of what [`assemble`] built and the lookups it was built with.
fn snapshot(
    (invalid, records, index): Assembled,
    lookups: Lookups,
    parents: HashMap<i64, Option<i64>>,
    disabled: HashSet<i64>,
    generation: u64,
    source: (u64, i64),
) -> Snapshot {
    Snapshot {
        index: index.finish(),
        scripts: records.finish(),
        invalid,
        parents,
        disabled,
        events: lookups.events,
        generation,
        source: Some(source),
    }
}

/// What [`assemble`] makes: the rows that failed validation, the records, the index.
type Assembled = (BTreeMap<i64, FieldErrors>, ScriptsBuilder, IndexBuilder);

/// Validates the `rows` script rows that `each` calls its argument with (in id order) and
/// streams them into the records and the index; both stores' builds go through this.
fn assemble(
    lookups: &Lookups,
    timezone: Tz,
    rows: usize,
    previous: &ScheduleIndex,
    each: impl FnOnce(
        &mut dyn FnMut(scripts::StoredScript) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>,
) -> Result<Assembled, StoreError> {
    let mut invalid = BTreeMap::new();
    let ctx = lookups.context(timezone);
    // Sized once: growing by doubling would hold up to twice the records for a moment.
    let mut records =
        ScriptsBuilder { records: Vec::with_capacity(rows), ids: Vec::with_capacity(rows * 3) };
    let mut index = IndexBuilder::with_capacity(rows);
    index.share_with(previous);
    // Shared catalog entries: one allocation per event and reaction, not per script;
    // likewise one empty `Extra` for every script without reaction data.
    let events: HashMap<i64, Arc<_>> =
        lookups.events.iter().map(|(id, e)| (*id, Arc::new(e.clone()))).collect();
    let reactions: HashMap<i64, Arc<_>> =
        lookups.reactions.iter().map(|(id, r)| (*id, Arc::new(r.clone()))).collect();
    let no_extra = Arc::new(Extra::default());
    each(&mut |row| {
        if !row.decode_errors.is_empty() {
            invalid.insert(row.id, row.decode_errors);
            return Ok(());
        }
        match validate(&row.body, &ctx) {
            Ok(v) => {
                let (Some(event), Some(reaction)) =
                    (events.get(&v.input.event_id), reactions.get(&v.input.reaction_id))
                else {
                    return Ok(()); // validate checked both exist
                };
                let rule = Rule {
                    script_id: row.id,
                    event_id: v.input.event_id,
                    cameras: v.input.cameras,
                    enabled: v.input.enabled,
                    timetable: v.timetable,
                };
                index.add(&rule);
                let extra = extra_of(&v.input.extra);
                let record = ScriptRecord {
                    id: row.id,
                    title: v.input.title,
                    enabled: v.input.enabled,
                    event: event.clone(),
                    reaction: reaction.clone(),
                    cameras: (0, 0),
                    users: (0, 0),
                    extra: if extra.is_empty() { no_extra.clone() } else { Arc::new(extra) },
                };
                records.push(record, rule.cameras.as_deref(), &v.input.users);
            }
            Err(errors) => {
                invalid.insert(row.id, errors);
            }
        }
        Ok(())
    })?;
    Ok((invalid, records, index))
}
