//! Holiday calendars: named lists of dates, owned like scripts (CONTRACT §12).
//!
//! A row keeps its dates as one JSON array of `{from, to, title}`. Reads trust nothing: a
//! row whose zone or dates do not parse (edited with the `sqlite3` shell) is read with the
//! dates that do and logged, so the scripts that use it keep working.

use std::collections::HashMap;
use std::sync::Arc;

use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::catalog::text;
use super::{StoreError, now_text};
use crate::script::validation::FieldErrors;
use crate::timetable::holidays::parse_date_range;
use crate::timetable::{CalendarDates, DateRange, Zone};

/// A validated calendar body.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarInput {
    /// 1–255 characters.
    pub name: String,
    /// IANA zone name its dates are read in.
    pub timezone: String,
    /// Its dates, in the order given.
    pub dates: Vec<DateRange>,
}

/// A calendar row.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCalendar {
    /// Calendar id.
    pub id: i64,
    /// The fields.
    pub input: CalendarInput,
    /// The owning user.
    pub owner_id: Option<i64>,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub created_at: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub updated_at: String,
}

/// One date as stored and shown: `{"from", "to", "title"}`.
pub fn date_json(d: &DateRange) -> Value {
    json!({
        "from": d.from.format("%Y-%m-%d").to_string(),
        "to": d.to.format("%Y-%m-%d").to_string(),
        "title": d.title,
    })
}

impl StoredCalendar {
    /// The API object: id, name, timezone, dates, owner_id, created_at, updated_at.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.input.name,
            "timezone": self.input.timezone,
            "dates": self.input.dates.iter().map(date_json).collect::<Vec<_>>(),
            "owner_id": self.owner_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    /// What evaluation needs (an unknown zone name reads as UTC).
    pub fn dates(&self) -> CalendarDates {
        let zone = self.input.timezone.parse::<Tz>().map_or(Zone::Fixed(0), Zone::from_tz);
        CalendarDates {
            id: self.id,
            name: self.input.name.clone(),
            zone,
            dates: self.input.dates.clone(),
        }
    }
}

/// Reads the stored dates text; entries that do not parse are left out and logged.
pub(crate) fn decode_dates(id: i64, s: &str) -> Vec<DateRange> {
    let items = match serde_json::from_str::<Value>(s) {
        Ok(Value::Array(items)) => items,
        _ => {
            tracing::error!(calendar_id = id, "the stored dates are not a JSON array; ignored");
            return Vec::new();
        }
    };
    let mut errors = FieldErrors::new();
    let dates = items
        .iter()
        .enumerate()
        .filter_map(|(i, d)| parse_date_range(d, &format!("dates.{i}"), &mut errors))
        .collect();
    if !errors.is_empty() {
        tracing::error!(calendar_id = id, errors = %errors.message(), "stored dates left out");
    }
    dates
}

fn encode_dates(dates: &[DateRange]) -> String {
    Value::Array(dates.iter().map(date_json).collect()).to_string()
}

const COLUMNS: &str = "id, name, timezone, dates, owner_id, created_at, updated_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCalendar> {
    let id: i64 = r.get(0)?;
    let dates: String = r.get::<_, Option<String>>(3)?.unwrap_or_default();
    Ok(StoredCalendar {
        id,
        input: CalendarInput {
            name: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            timezone: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            dates: decode_dates(id, &dates),
        },
        owner_id: r.get::<_, Option<i64>>(4).ok().flatten(),
        created_at: text(r, 5)?,
        updated_at: text(r, 6)?,
    })
}

/// One calendar, or `None`.
pub fn get(conn: &Connection, id: i64) -> Result<Option<StoredCalendar>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM calendars WHERE id = ?1"), [id], from_row)
        .optional()?)
}

/// Every calendar, by id.
pub fn all(conn: &Connection) -> Result<Vec<StoredCalendar>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM calendars ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Every calendar's contents by id, for attaching to timetables.
pub fn all_dates(conn: &Connection) -> Result<HashMap<i64, Arc<CalendarDates>>, StoreError> {
    Ok(all(conn)?.into_iter().map(|c| (c.id, Arc::new(c.dates()))).collect())
}

/// The owner of each calendar (`None`: without owner).
pub fn owners(conn: &Connection) -> Result<HashMap<i64, Option<i64>>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, owner_id FROM calendars")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1).ok().flatten())))?
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(rows)
}

/// Adds a calendar owned by `owner_id`; returns its id.
pub fn insert(
    conn: &Connection,
    input: &CalendarInput,
    owner_id: Option<i64>,
) -> Result<i64, StoreError> {
    let now = now_text();
    conn.execute(
        "INSERT INTO calendars (name, timezone, dates, owner_id, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![input.name, input.timezone, encode_dates(&input.dates), owner_id, now],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Replaces a calendar's fields; false when it does not exist.
pub fn update(conn: &Connection, id: i64, input: &CalendarInput) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE calendars SET name = ?2, timezone = ?3, dates = ?4, updated_at = ?5 WHERE id = ?1",
        params![id, input.name, input.timezone, encode_dates(&input.dates), now_text()],
    )?;
    Ok(n > 0)
}

/// Deletes a calendar; false when it does not exist.
pub fn delete(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM calendars WHERE id = ?1", [id])? > 0)
}

/// Ids of the scripts whose `timetable.holidays.calendars` lists calendar `id`, ascending.
pub fn scripts_using(conn: &Connection, id: i64) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id FROM scripts s WHERE json_valid(s.timetable) AND EXISTS (
           SELECT 1 FROM json_each(s.timetable, '$.holidays.calendars') j
           WHERE j.type = 'integer' AND j.value = ?1)
         ORDER BY s.id",
    )?;
    let ids = stmt.query_map([id], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

/// Adds `dates` to calendar `id` (a date equal to one it has is not added twice); returns
/// how many were added, or `None` when the calendar does not exist.
pub fn add_dates(
    conn: &Connection,
    id: i64,
    dates: &[DateRange],
) -> Result<Option<(StoredCalendar, usize)>, StoreError> {
    let Some(mut cal) = get(conn, id)? else { return Ok(None) };
    let before = cal.input.dates.len();
    for d in dates {
        if !cal.input.dates.contains(d) {
            cal.input.dates.push(d.clone());
        }
    }
    let added = cal.input.dates.len() - before;
    if added > 0 {
        update(conn, id, &cal.input)?;
    }
    Ok(get(conn, id)?.map(|c| (c, added)))
}
