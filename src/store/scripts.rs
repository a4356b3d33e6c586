//! Scripts and their users.
//!
//! Writes take a validated [`ScriptInput`]. Reads return [`StoredScript`], which trusts
//! nothing about the row (operators edit the file with the `sqlite3` shell, or `psql`): every column is
//! read as a JSON value, JSON columns that do not parse are reported in `decode_errors`,
//! and the whole thing goes through [`crate::script::validate`] again before it is used.

use serde_json::{Map, Value};

use super::sql::{self, Dialect, Row, Sql};
use super::{StoreError, now_text};
use crate::args;
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

fn from_row(r: &Row) -> Result<StoredScript, StoreError> {
    let columns = [1, 2, 3, 4, 5, 6, 7].map(|i| to_json(r.value(i)));
    Ok(from_columns(
        r.get(0)?,
        columns,
        r.text(8),
        r.text(9),
        r.get::<Option<i64>>(10).ok().flatten(),
    ))
}

/// A column as the JSON value the body carries (text as a string, as stored).
fn to_json(v: &sql::Value) -> Value {
    match v {
        sql::Value::Null => Value::Null,
        sql::Value::Int(i) => (*i).into(),
        sql::Value::Real(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Into::into),
        sql::Value::Text(s) => s.clone().into(),
        sql::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned().into(),
        sql::Value::Bool(b) => (*b).into(),
    }
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

fn attach_users(conn: &dyn Sql, s: &mut StoredScript) -> Result<(), StoreError> {
    let users = conn
        .query(
            "SELECT user_id FROM script_users WHERE script_id = ?1 ORDER BY position, user_id",
            args![s.id],
        )?
        .iter()
        .map(|r| to_json(r.value(0)))
        .collect();
    s.body.insert("users".into(), Value::Array(users));
    Ok(())
}

/// One script, or `None`.
pub fn get(conn: &dyn Sql, id: i64) -> Result<Option<StoredScript>, StoreError> {
    let row = conn.query_opt(&format!("SELECT {COLUMNS} FROM scripts WHERE id = ?1"), args![id])?;
    let Some(row) = row else { return Ok(None) };
    let mut s = from_row(&row)?;
    attach_users(conn, &mut s)?;
    Ok(Some(s))
}

/// Runs `sql` (selecting [`COLUMNS`]) and calls `f` with each script, its users attached.
fn each_row(
    conn: &dyn Sql,
    sql: &str,
    params: &[sql::Value],
    mut f: impl FnMut(StoredScript) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    conn.for_each_row(sql, params, &mut |row| {
        let mut s = from_row(&row)?;
        attach_users(conn, &mut s)?;
        f(s)
    })
}

fn collect(
    conn: &dyn Sql,
    sql: &str,
    params: &[sql::Value],
) -> Result<Vec<StoredScript>, StoreError> {
    let mut out = Vec::new();
    each_row(conn, sql, params, |s| {
        out.push(s);
        Ok(())
    })?;
    Ok(out)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn bound(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A page of scripts by id, and the total count.
pub fn page(
    conn: &dyn Sql,
    offset: u64,
    limit: u64,
) -> Result<(Vec<StoredScript>, u64), StoreError> {
    let total: i64 = conn.query_value("SELECT COUNT(*) FROM scripts", &[])?;
    let sql = format!("SELECT {COLUMNS} FROM scripts ORDER BY id LIMIT ?1 OFFSET ?2");
    Ok((collect(conn, &sql, args![bound(limit), bound(offset)])?, count(total)))
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

/// The `WHERE` conditions of [`page_owned_by`]: the owner in the JSON array ?3, then the
/// filter's parameters ?4 to ?8 (each cast, so PostgreSQL knows its type when it is NULL).
fn owned_and_filtered(dialect: Dialect) -> String {
    let (owners, camera, title) = match dialect {
        Dialect::Sqlite => (
            "owner_id IN (SELECT value FROM json_each(?3))",
            "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(cameras) THEN cameras ELSE '[]' END)
                     WHERE value = ?7)",
            "instr(lower(title), lower(?8)) > 0",
        ),
        Dialect::Postgres => (
            "owner_id IN (SELECT CAST(e.v AS BIGINT)
                          FROM jsonb_array_elements_text(CAST(CAST(?3 AS TEXT) AS JSONB)) AS e(v))",
            "EXISTS (SELECT 1 FROM jsonb_array_elements(
                       CASE WHEN jsonb_typeof(scriptd_jsonb(cameras)) = 'array'
                            THEN scriptd_jsonb(cameras) ELSE '[]'::jsonb END) AS e(v)
                     WHERE e.v = to_jsonb(CAST(?7 AS BIGINT)))",
            "strpos(lower(title), lower(?8)) > 0",
        ),
    };
    format!(
        "{owners}
         AND (CAST(?4 AS TEXT) IS NULL OR status = ?4)
         AND (CAST(?5 AS BIGINT) IS NULL OR event_id = ?5)
         AND (CAST(?6 AS BIGINT) IS NULL OR reaction_id = ?6)
         AND (CAST(?7 AS BIGINT) IS NULL OR cameras IS NULL OR cameras = 'null' OR {camera})
         AND (CAST(?8 AS TEXT) IS NULL OR {title})"
    )
}

/// A page of the scripts owned by one of `owners` (a caller's reach) that pass `filter`,
/// by id, and their total count; scripts of other owners are neither listed nor counted.
pub fn page_owned_by(
    conn: &dyn Sql,
    owners: &[i64],
    filter: &Filter,
    offset: u64,
    limit: u64,
) -> Result<(Vec<StoredScript>, u64), StoreError> {
    let owners = Value::from(owners.to_vec()).to_string();
    let status = filter.enabled.map(crate::script::status_text);
    let params = args![
        bound(limit),
        bound(offset),
        owners,
        status,
        filter.event_id,
        filter.reaction_id,
        filter.camera_id,
        &filter.title,
    ];
    let wh = owned_and_filtered(conn.dialect());
    let total: i64 = conn.query_value(
        &format!(
            "SELECT COUNT(*) FROM scripts WHERE {wh}
             AND CAST(?1 AS BIGINT) IS NOT NULL AND CAST(?2 AS BIGINT) IS NOT NULL"
        ),
        params,
    )?;
    let sql = format!("SELECT {COLUMNS} FROM scripts WHERE {wh} ORDER BY id LIMIT ?1 OFFSET ?2");
    Ok((collect(conn, &sql, params)?, count(total)))
}

/// Calls `f` with every script, by id, one row at a time on SQLite (the snapshot build
/// uses this so the rows' JSON is never all in memory at once).
pub fn for_each(
    conn: &dyn Sql,
    f: impl FnMut(StoredScript) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    each_row(conn, &format!("SELECT {COLUMNS} FROM scripts ORDER BY id"), &[], f)
}

/// The scripts whose stored `event_id` is `event_id`, by id (explain).
pub fn of_event(conn: &dyn Sql, event_id: i64) -> Result<Vec<StoredScript>, StoreError> {
    collect(
        conn,
        &format!("SELECT {COLUMNS} FROM scripts WHERE event_id = ?1 ORDER BY id"),
        args![event_id],
    )
}

/// Every script, by id.
pub fn all(conn: &dyn Sql) -> Result<Vec<StoredScript>, StoreError> {
    page(conn, 0, i64::MAX as u64).map(|(v, _)| v)
}

fn cameras_json(input: &ScriptInput) -> Option<String> {
    input.cameras.as_ref().map(|c| Value::from(c.clone()).to_string())
}

fn write_users(conn: &dyn Sql, id: i64, users: &[i64]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM script_users WHERE script_id = ?1", args![id])?;
    for (pos, user) in users.iter().enumerate() {
        conn.execute(
            "INSERT INTO script_users (script_id, user_id, position) VALUES (?1, ?2, ?3)",
            args![id, *user, pos as i64],
        )?;
    }
    Ok(())
}

/// Inserts a script without owner and returns its id; see [`insert_owned`].
pub fn insert(conn: &dyn Sql, id: Option<i64>, input: &ScriptInput) -> Result<i64, StoreError> {
    insert_owned(conn, id, None, input)
}

/// The stored columns of a script's fields, in the order `title, event_id, reaction_id,
/// status, cameras, timetable, extra` (the parameters `?2` to `?8` of the writes below),
/// after `first` and before `last`.
fn columns(first: sql::Value, input: &ScriptInput, last: &[sql::Value]) -> Vec<sql::Value> {
    let mut v = vec![
        first,
        input.title.clone().into(),
        input.event_id.into(),
        input.reaction_id.into(),
        status_text(input.enabled).into(),
        cameras_json(input).into(),
        input.timetable.to_string().into(),
        Value::Object(input.extra.clone()).to_string().into(),
    ];
    v.extend_from_slice(last);
    v
}

/// Inserts a script owned by `owner_id` and returns its id (`id` given only by import,
/// which keeps ids).
pub fn insert_owned(
    conn: &dyn Sql,
    id: Option<i64>,
    owner_id: Option<i64>,
    input: &ScriptInput,
) -> Result<i64, StoreError> {
    // Without an id the column is left out (PostgreSQL's identity takes no NULL); ?1 is
    // still used, so both statements take the same parameters.
    let sql = match id {
        Some(_) => {
            "INSERT INTO scripts (id, title, event_id, reaction_id, status, cameras, timetable,
                                  extra, created_at, updated_at, owner_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10) RETURNING id"
        }
        None => {
            "INSERT INTO scripts (title, event_id, reaction_id, status, cameras, timetable,
                                      extra, created_at, updated_at, owner_id)
                 SELECT ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10 WHERE CAST(?1 AS BIGINT) IS NULL
                 RETURNING id"
        }
    };
    let params = columns(id.into(), input, &[now_text().into(), owner_id.into()]);
    let new_id: i64 = conn.query_value(sql, &params)?;
    if id.is_some() && conn.dialect() == Dialect::Postgres {
        super::postgres::sync::follow_explicit_ids(conn, "scripts")?;
    }
    // A new script with the id of a deleted one does not inherit its deliveries' owner.
    conn.execute("DELETE FROM deleted_scripts WHERE id = ?1", args![new_id])?;
    write_users(conn, new_id, &input.users)?;
    Ok(new_id)
}

/// Gives script `id` to `owner_id`.
pub fn set_owner(conn: &dyn Sql, id: i64, owner_id: i64) -> Result<(), StoreError> {
    conn.execute("UPDATE scripts SET owner_id = ?2 WHERE id = ?1", args![id, owner_id])?;
    Ok(())
}

/// The owner a script had when it was deleted (its deliveries are shown to that account),
/// or `None`.
pub fn deleted_owner(conn: &dyn Sql, id: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_opt("SELECT owner_id FROM deleted_scripts WHERE id = ?1", args![id])?
        .map(|r| r.get::<Option<i64>>(0))
        .transpose()?
        .flatten())
}

/// Replaces a script's fields; false when it does not exist.
pub fn update(conn: &dyn Sql, id: i64, input: &ScriptInput) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE scripts SET title = ?2, event_id = ?3, reaction_id = ?4, status = ?5,
                cameras = ?6, timetable = ?7, extra = ?8, updated_at = ?9
         WHERE id = ?1",
        &columns(id.into(), input, &[now_text().into()]),
    )?;
    if n == 0 {
        return Ok(false);
    }
    write_users(conn, id, &input.users)?;
    Ok(true)
}

/// Deletes a script, remembering its owner in `deleted_scripts`; false when it did not
/// exist.
pub fn delete(conn: &dyn Sql, id: i64) -> Result<bool, StoreError> {
    conn.execute(
        "INSERT INTO deleted_scripts (id, owner_id, deleted_at)
         SELECT id, owner_id, ?2 FROM scripts WHERE id = ?1
         ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id,
                                        deleted_at = excluded.deleted_at",
        args![id, now_text()],
    )?;
    Ok(conn.execute("DELETE FROM scripts WHERE id = ?1", args![id])? > 0)
}
