//! Scripts and their users.
//!
//! Writes take a validated [`ScriptInput`]. Reads return [`StoredScript`], which trusts
//! nothing about the row (operators edit the file with the `sqlite3` shell): every column is
//! read as a JSON value, JSON columns that do not parse are reported in `decode_errors`,
//! and the whole thing goes through [`crate::script::validate`] again before it is used.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::{Map, Value};

use super::catalog::text;
use super::{StoreError, now_text, sql_to_json};
use crate::script::validation::FieldErrors;
use crate::script::{ScriptInput, status_text};

/// A script row as found in the database.
#[derive(Clone)]
pub struct StoredScript {
    /// Script id.
    pub id: i64,
    /// Row fields as a body (`title`, `event_id`, `reaction_id`, `status`, `cameras`,
    /// `users`, `timetable`, `extra`), ready for validation.
    pub body: Map<String, Value>,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub created_at: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub updated_at: String,
    /// JSON columns whose text is not JSON, by field.
    pub decode_errors: FieldErrors,
    /// The owning user (`None`: a row without owner, visible to operator tooling only).
    pub owner_id: Option<i64>,
}

impl std::fmt::Debug for StoredScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredScript")
            .field("id", &self.id)
            .field("owner_id", &self.owner_id)
            .field("title", &self.body.get("title"))
            .field("decode_errors", &self.decode_errors)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, title, event_id, reaction_id, status, cameras, timetable, extra, \
                       created_at, updated_at, owner_id";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredScript> {
    let columns = [1, 2, 3, 4, 5, 6, 7].map(|i| r.get(i).map(sql_to_json));
    let [title, event_id, reaction_id, status, cameras, timetable, extra] = columns;
    Ok(from_columns(
        r.get(0)?,
        [title?, event_id?, reaction_id?, status?, cameras?, timetable?, extra?],
        text(r, 8)?,
        text(r, 9)?,
        r.get::<_, Option<i64>>(10).ok().flatten(),
    ))
}

/// A script row from its columns `title, event_id, reaction_id, status, cameras,
/// timetable, extra` as JSON values (text as strings, as stored): the JSON columns'
/// text is parsed, and what does not parse is reported in `decode_errors`. The users
/// are attached by the caller. Both stores read their rows through this.
pub(crate) fn from_columns(
    id: i64,
    columns: [Value; 7],
    created_at: String,
    updated_at: String,
    owner_id: Option<i64>,
) -> StoredScript {
    let mut body = Map::new();
    let mut decode_errors = FieldErrors::new();
    let [title, event_id, reaction_id, status, cameras, timetable, extra] = columns;
    body.insert("title".into(), title);
    body.insert("event_id".into(), event_id);
    body.insert("reaction_id".into(), reaction_id);
    body.insert("status".into(), status);
    for (column, key) in [(cameras, "cameras"), (timetable, "timetable"), (extra, "extra")] {
        let value = match column {
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(v) => v,
                Err(e) => {
                    decode_errors.add(key, format!("The stored {key} is not valid JSON: {e}."));
                    Value::String(s)
                }
            },
            other => other,
        };
        body.insert(key.into(), value);
    }
    StoredScript { id, body, created_at, updated_at, decode_errors, owner_id }
}

fn attach_users(conn: &Connection, s: &mut StoredScript) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id FROM script_users WHERE script_id = ?1 ORDER BY position, user_id",
    )?;
    let users: Vec<Value> = stmt
        .query_map([s.id], |r| r.get::<_, rusqlite::types::Value>(0))?
        .map(|v| v.map(sql_to_json))
        .collect::<Result<_, _>>()?;
    s.body.insert("users".into(), Value::Array(users));
    Ok(())
}

/// One script, or `None`.
pub fn get(conn: &Connection, id: i64) -> Result<Option<StoredScript>, StoreError> {
    let mut s = conn
        .query_row(&format!("SELECT {COLUMNS} FROM scripts WHERE id = ?1"), [id], from_row)
        .optional()?;
    if let Some(s) = s.as_mut() {
        attach_users(conn, s)?;
    }
    Ok(s)
}

/// Runs `sql` (selecting [`COLUMNS`]) and calls `f` with each script, its users attached.
fn each_row(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut f: impl FnMut(StoredScript) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    for row in stmt.query_map(params, from_row)? {
        let mut s = row?;
        attach_users(conn, &mut s)?;
        f(s)?;
    }
    Ok(())
}

/// A page of scripts by id, and the total count.
pub fn page(
    conn: &Connection,
    offset: u64,
    limit: u64,
) -> Result<(Vec<StoredScript>, u64), StoreError> {
    let total: i64 = conn.query_row("SELECT COUNT(*) FROM scripts", [], |r| r.get(0))?;
    let mut out = Vec::new();
    each_row(
        conn,
        &format!("SELECT {COLUMNS} FROM scripts ORDER BY id LIMIT ?1 OFFSET ?2"),
        params![
            i64::try_from(limit).unwrap_or(i64::MAX),
            i64::try_from(offset).unwrap_or(i64::MAX)
        ],
        |s| {
            out.push(s);
            Ok(())
        },
    )?;
    Ok((out, u64::try_from(total).unwrap_or(0)))
}

/// Narrows a list of scripts (`GET /scripts`' query parameters); `None` = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `active` (true) or `disabled` (false).
    pub enabled: Option<bool>,
    /// This event.
    pub event_id: Option<i64>,
    /// This reaction.
    pub reaction_id: Option<i64>,
    /// Scripts that react on this camera (a filter holding it, or no filter).
    pub camera_id: Option<i64>,
    /// Titles containing this text, ignoring ASCII case.
    pub title: Option<String>,
}

/// The `WHERE` conditions of [`page_owned_by`] past the owner (parameters ?4 to ?8).
const FILTERED: &str = "(?4 IS NULL OR status = ?4)
    AND (?5 IS NULL OR event_id = ?5)
    AND (?6 IS NULL OR reaction_id = ?6)
    AND (?7 IS NULL OR cameras IS NULL OR cameras = 'null'
         OR EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(cameras) THEN cameras ELSE '[]' END)
                    WHERE value = ?7))
    AND (?8 IS NULL OR instr(lower(title), lower(?8)) > 0)";

/// A page of the scripts owned by one of `owners` (a caller's reach) that pass `filter`,
/// by id, and their total count; scripts of other owners are neither listed nor counted.
pub fn page_owned_by(
    conn: &Connection,
    owners: &[i64],
    filter: &Filter,
    offset: u64,
    limit: u64,
) -> Result<(Vec<StoredScript>, u64), StoreError> {
    let owners = Value::from(owners.to_vec()).to_string();
    let status = filter.enabled.map(crate::script::status_text);
    let args = params![
        i64::try_from(limit).unwrap_or(i64::MAX),
        i64::try_from(offset).unwrap_or(i64::MAX),
        owners,
        status,
        filter.event_id,
        filter.reaction_id,
        filter.camera_id,
        filter.title,
    ];
    let total: i64 = conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM scripts WHERE owner_id IN (SELECT value FROM json_each(?3))
             AND {FILTERED} AND ?1 IS NOT NULL AND ?2 IS NOT NULL"
        ),
        args,
        |r| r.get(0),
    )?;
    let mut out = Vec::new();
    each_row(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM scripts WHERE owner_id IN (SELECT value FROM json_each(?3))
             AND {FILTERED} ORDER BY id LIMIT ?1 OFFSET ?2"
        ),
        args,
        |s| {
            out.push(s);
            Ok(())
        },
    )?;
    Ok((out, u64::try_from(total).unwrap_or(0)))
}

/// Calls `f` with every script, by id, one row at a time (the snapshot build uses this so
/// the rows' JSON is never all in memory at once).
pub fn for_each(
    conn: &Connection,
    f: impl FnMut(StoredScript) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    each_row(conn, &format!("SELECT {COLUMNS} FROM scripts ORDER BY id"), [], f)
}

/// The scripts whose stored `event_id` is `event_id`, by id (explain).
pub fn of_event(conn: &Connection, event_id: i64) -> Result<Vec<StoredScript>, StoreError> {
    let mut out = Vec::new();
    each_row(
        conn,
        &format!("SELECT {COLUMNS} FROM scripts WHERE event_id = ?1 ORDER BY id"),
        [event_id],
        |s| {
            out.push(s);
            Ok(())
        },
    )?;
    Ok(out)
}

/// Every script, by id.
pub fn all(conn: &Connection) -> Result<Vec<StoredScript>, StoreError> {
    page(conn, 0, i64::MAX as u64).map(|(v, _)| v)
}

fn cameras_json(input: &ScriptInput) -> Option<String> {
    input.cameras.as_ref().map(|c| Value::from(c.clone()).to_string())
}

fn write_users(conn: &Connection, id: i64, users: &[i64]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM script_users WHERE script_id = ?1", [id])?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO script_users (script_id, user_id, position) VALUES (?1, ?2, ?3)",
    )?;
    for (pos, user) in users.iter().enumerate() {
        stmt.execute(params![id, user, pos as i64])?;
    }
    Ok(())
}

/// Inserts a script without owner and returns its id; see [`insert_owned`].
pub fn insert(conn: &Connection, id: Option<i64>, input: &ScriptInput) -> Result<i64, StoreError> {
    insert_owned(conn, id, None, input)
}

/// The stored columns of a script's fields, in the order `title, event_id, reaction_id,
/// status, cameras, timetable, extra` (the parameters `?2` to `?8` of the writes below).
fn columns(input: &ScriptInput) -> [SqlValue; 7] {
    [
        SqlValue::from(input.title.clone()),
        SqlValue::from(input.event_id),
        SqlValue::from(input.reaction_id),
        SqlValue::from(status_text(input.enabled).to_owned()),
        SqlValue::from(cameras_json(input)),
        SqlValue::from(input.timetable.to_string()),
        SqlValue::from(Value::Object(input.extra.clone()).to_string()),
    ]
}

/// Inserts a script owned by `owner_id` and returns its id (`id` given only by import,
/// which keeps ids).
pub fn insert_owned(
    conn: &Connection,
    id: Option<i64>,
    owner_id: Option<i64>,
    input: &ScriptInput,
) -> Result<i64, StoreError> {
    let now = now_text();
    conn.execute(
        "INSERT INTO scripts (id, title, event_id, reaction_id, status, cameras, timetable, extra,
                              created_at, updated_at, owner_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
        params_from_iter(
            [SqlValue::from(id)]
                .into_iter()
                .chain(columns(input))
                .chain([SqlValue::from(now), SqlValue::from(owner_id)]),
        ),
    )?;
    let id = conn.last_insert_rowid();
    // A new script with the id of a deleted one does not inherit its deliveries' owner.
    conn.execute("DELETE FROM deleted_scripts WHERE id = ?1", [id])?;
    write_users(conn, id, &input.users)?;
    Ok(id)
}

/// Gives script `id` to `owner_id`.
pub fn set_owner(conn: &Connection, id: i64, owner_id: i64) -> Result<(), StoreError> {
    conn.execute("UPDATE scripts SET owner_id = ?2 WHERE id = ?1", params![id, owner_id])?;
    Ok(())
}

/// The owner a script had when it was deleted (its deliveries are shown to that account),
/// or `None`.
pub fn deleted_owner(conn: &Connection, id: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row("SELECT owner_id FROM deleted_scripts WHERE id = ?1", [id], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten())
}

/// Replaces a script's fields; false when it does not exist.
pub fn update(conn: &Connection, id: i64, input: &ScriptInput) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE scripts SET title = ?2, event_id = ?3, reaction_id = ?4, status = ?5,
                cameras = ?6, timetable = ?7, extra = ?8, updated_at = ?9
         WHERE id = ?1",
        params_from_iter(
            [SqlValue::from(id)]
                .into_iter()
                .chain(columns(input))
                .chain([SqlValue::from(now_text())]),
        ),
    )?;
    if n == 0 {
        return Ok(false);
    }
    write_users(conn, id, &input.users)?;
    Ok(true)
}

/// Deletes a script, remembering its owner in `deleted_scripts`; false when it did not
/// exist.
pub fn delete(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO deleted_scripts (id, owner_id, deleted_at)
         SELECT id, owner_id, ?2 FROM scripts WHERE id = ?1",
        params![id, now_text()],
    )?;
    Ok(conn.execute("DELETE FROM scripts WHERE id = ?1", [id])? > 0)
}
