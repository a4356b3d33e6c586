//! Holiday calendars: named lists of dates, owned like scripts (CONTRACT §12).
//!
//! A row keeps its dates as one JSON array of `{from, to, title}`. Reads trust nothing: a
//! row whose zone or dates do not parse (edited by hand, in the `sqlite3` shell or `psql`)
//! is read with the dates that do and logged, so the scripts that use it keep working.

use std::collections::HashMap;
use std::sync::Arc;

use chrono_tz::Tz;
use serde_json::{Value, json};

use super::sql::{Dialect, Row, Sql};
use super::{StoreError, now_text};
use crate::args;
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

fn from_row(r: &Row) -> Result<StoredCalendar, StoreError> {
    let id: i64 = r.get(0)?;
    let dates: String = r.get::<Option<String>>(3)?.unwrap_or_default();
    Ok(StoredCalendar {
        id,
        input: CalendarInput {
            name: r.get::<Option<String>>(1)?.unwrap_or_default(),
            timezone: r.get::<Option<String>>(2)?.unwrap_or_default(),
            dates: decode_dates(id, &dates),
        },
        owner_id: r.get::<Option<i64>>(4).ok().flatten(),
        created_at: r.text(5),
        updated_at: r.text(6),
    })
}

/// One calendar, or `None`.
pub fn get(conn: &dyn Sql, id: i64) -> Result<Option<StoredCalendar>, StoreError> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM calendars WHERE id = ?1"), args![id])?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Every calendar, by id.
pub fn all(conn: &dyn Sql) -> Result<Vec<StoredCalendar>, StoreError> {
    conn.query(&format!("SELECT {COLUMNS} FROM calendars ORDER BY id"), &[])?
        .iter()
        .map(from_row)
        .collect()
}

/// Every calendar's contents by id, for attaching to timetables.
pub fn all_dates(conn: &dyn Sql) -> Result<HashMap<i64, Arc<CalendarDates>>, StoreError> {
    Ok(all(conn)?.into_iter().map(|c| (c.id, Arc::new(c.dates()))).collect())
}

/// The owner of each calendar (`None`: without owner).
pub fn owners(conn: &dyn Sql) -> Result<HashMap<i64, Option<i64>>, StoreError> {
    conn.query("SELECT id, owner_id FROM calendars", &[])?
        .iter()
        .map(|r| Ok((r.get::<i64>(0)?, r.get::<Option<i64>>(1).ok().flatten())))
        .collect()
}

/// Adds a calendar owned by `owner_id`; returns its id.
pub fn insert(
    conn: &dyn Sql,
    input: &CalendarInput,
    owner_id: Option<i64>,
) -> Result<i64, StoreError> {
    let now = now_text();
    conn.query_value::<i64>(
        "INSERT INTO calendars (name, timezone, dates, owner_id, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
        args![&input.name, &input.timezone, encode_dates(&input.dates), owner_id, now],
    )
}

/// Replaces a calendar's fields; false when it does not exist.
pub fn update(conn: &dyn Sql, id: i64, input: &CalendarInput) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE calendars SET name = ?2, timezone = ?3, dates = ?4, updated_at = ?5 WHERE id = ?1",
        args![id, &input.name, &input.timezone, encode_dates(&input.dates), now_text()],
    )?;
    Ok(n > 0)
}

/// Deletes a calendar; false when it does not exist.
pub fn delete(conn: &dyn Sql, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM calendars WHERE id = ?1", args![id])? > 0)
}

/// SQLite: `json_each` with a path walks what the path points to: an array's elements, an
/// object's member values, or a scalar itself; `integer` is a JSON number written without
/// a fraction or an exponent.
const SCRIPTS_USING_SQLITE: &str = "SELECT s.id FROM scripts s
 WHERE json_valid(s.timetable) AND EXISTS (
   SELECT 1 FROM json_each(s.timetable, '$.holidays.calendars') j
   WHERE j.type = 'integer' AND j.value = ?1)
 ORDER BY s.id";

/// PostgreSQL: the same values, read as `json` (which keeps each number as written, so
/// `5.0` and `5e0` are told from `5`) once `scriptd_jsonb` has found the text to be JSON.
/// One difference remains: of a key written twice, SQLite reads the first, PostgreSQL the
/// last (as the timetable's parser does).
const SCRIPTS_USING_POSTGRES: &str = "SELECT s.id FROM scripts s
 CROSS JOIN LATERAL (SELECT CASE WHEN scriptd_jsonb(s.timetable) IS NOT NULL
                          THEN s.timetable::json -> 'holidays' -> 'calendars' END AS c) h
 WHERE EXISTS (
   SELECT 1 FROM (
       SELECT a.e FROM json_array_elements(CASE WHEN json_typeof(h.c) = 'array' THEN h.c END) a(e)
       UNION ALL
       SELECT o.e FROM json_each(CASE WHEN json_typeof(h.c) = 'object' THEN h.c END) o(k, e)
       UNION ALL
       SELECT h.c WHERE json_typeof(h.c) = 'number'
     ) v(e)
   WHERE json_typeof(v.e) = 'number' AND v.e::text ~ '^-?[0-9]+$'
     AND v.e::text::numeric = CAST(?1 AS BIGINT))
 ORDER BY s.id";

/// Ids of the scripts whose `timetable.holidays.calendars` lists calendar `id` (as a JSON
/// integer), ascending. A hand-edited timetable that is not JSON lists none.
pub fn scripts_using(conn: &dyn Sql, id: i64) -> Result<Vec<i64>, StoreError> {
    let sql = match conn.dialect() {
        Dialect::Sqlite => SCRIPTS_USING_SQLITE,
        Dialect::Postgres => SCRIPTS_USING_POSTGRES,
    };
    conn.query_column::<i64>(sql, args![id])
}

/// Adds `dates` to calendar `id` (a date equal to one it has is not added twice); returns
/// how many were added, or `None` when the calendar does not exist.
pub fn add_dates(
    conn: &dyn Sql,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn db() -> Connection {
        super::super::migrations::in_memory()
    }

    #[test]
    fn insert_update_and_read_back() {
        let conn = db();
        conn.execute("INSERT INTO users (id, login, name) VALUES (3, 'u', 'U')", []).unwrap();
        let input = CalendarInput { name: "a".into(), timezone: "UTC".into(), dates: vec![] };
        let id = insert(&conn, &input, Some(3)).unwrap();
        let stored = get(&conn, id).unwrap().unwrap();
        assert_eq!((stored.input.name.as_str(), stored.owner_id), ("a", Some(3)));
        assert!(!stored.created_at.is_empty());
        let renamed = CalendarInput { name: "b".into(), ..input };
        assert!(update(&conn, id, &renamed).unwrap());
        assert!(!update(&conn, id + 1, &renamed).unwrap());
        assert_eq!(all(&conn).unwrap()[0].input.name, "b");
        assert_eq!(owners(&conn).unwrap()[&id], Some(3));
        assert!(delete(&conn, id).unwrap());
        assert!(get(&conn, id).unwrap().is_none());
    }

    #[test]
    fn scripts_using_matches_json_integers_only() {
        let conn = db();
        conn.execute_batch(
            r#"INSERT INTO events (id, name, description, color, analytic_type)
                 VALUES (1, 'e', '', '', '');
               INSERT INTO reactions (id, name, description) VALUES (1, 'r', '');
               INSERT INTO scripts (id, title, event_id, reaction_id, timetable) VALUES
                 (1, 's', 1, 1, '{"holidays": {"calendars": [4, 5]}}'),
                 (2, 's', 1, 1, '{"holidays": {"calendars": ["5", 5.0, 5e0, [5]]}}'),
                 (3, 's', 1, 1, '{"holidays": {"calendars": {"a": 5}}}'),
                 (4, 's', 1, 1, '{"holidays": {"calendars": 5}}'),
                 (5, 's', 1, 1, '{"holidays": [{"calendars": [5]}]}'),
                 (6, 's', 1, 1, 'not json');"#,
        )
        .unwrap();
        // An array's elements, an object's member values, a bare number: as json_each walks.
        assert_eq!(scripts_using(&conn, 5).unwrap(), [1, 3, 4]);
        assert_eq!(scripts_using(&conn, 4).unwrap(), [1]);
        assert!(scripts_using(&conn, 6).unwrap().is_empty());
    }
}
