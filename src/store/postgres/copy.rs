//! `scriptd store copy --from PATH --to URL`: a SQLite store into an empty PostgreSQL one.
//!
//! Everything but the finished deliveries is copied in one transaction: the catalogs (the
//! target's seeded rows are replaced by the source's, operators' edits included), users,
//! permissions, tokens, scripts and their users, calendars, deleted scripts' owners, snoozes, cooldown
//! state and the pending deliveries (in their enqueue order). A target holding any row of
//! its own beyond the seeded catalogs is refused before anything is written. Identity
//! sequences are moved past the copied ids.

use rusqlite::types::Value as SqlValue;
use tokio_postgres::types::ToSql;

use super::PgStore;
use super::migrations::advance_identities;
use crate::store::{Store, StoreError};

/// How a column is read from SQLite and written to PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    /// `BIGINT`.
    Int,
    /// `INTEGER`.
    Int4,
    /// `TEXT`.
    Text,
    /// `BOOLEAN` (SQLite's 0/1).
    Bool,
    /// `BYTEA`.
    Bytes,
}

use Kind::*;

/// One table: its name, the SQLite query (columns in the order of `columns`) and the
/// PostgreSQL columns.
struct Table {
    name: &'static str,
    select: &'static str,
    columns: &'static [(&'static str, Kind)],
}

/// The tables in an order that satisfies their references.
const TABLES: &[Table] = &[
    Table {
        name: "events",
        select: "SELECT id, name, description, color, analytic_type FROM events ORDER BY id",
        columns: &[
            ("id", Int),
            ("name", Text),
            ("description", Text),
            ("color", Text),
            ("analytic_type", Text),
        ],
    },
    Table {
        name: "reactions",
        select: "SELECT id, name, description, is_default FROM reactions ORDER BY id",
        columns: &[("id", Int), ("name", Text), ("description", Text), ("is_default", Bool)],
    },
    Table {
        name: "permissions",
        select: "SELECT id, name, display_name FROM permissions ORDER BY id",
        columns: &[("id", Int), ("name", Text), ("display_name", Text)],
    },
    Table {
        name: "users",
        select: "SELECT id, login, name, parent_id, online_request_interval, access_token_id,
                        can_update_password, disabled, created_at, updated_at
                 FROM users ORDER BY id",
        columns: &[
            ("id", Int),
            ("login", Text),
            ("name", Text),
            ("parent_id", Int),
            ("online_request_interval", Int4),
            ("access_token_id", Text),
            ("can_update_password", Bool),
            ("disabled", Bool),
            ("created_at", Text),
            ("updated_at", Text),
        ],
    },
    Table {
        name: "user_permissions",
        select: "SELECT user_id, permission_id FROM user_permissions ORDER BY user_id, permission_id",
        columns: &[("user_id", Int), ("permission_id", Int)],
    },
    Table {
        name: "api_tokens",
        select: "SELECT id, public_id, user_id, token_sha256, created_at, expires_at, revoked_at,
                        last_used_at
                 FROM api_tokens ORDER BY id",
        columns: &[
            ("id", Int),
            ("public_id", Text),
            ("user_id", Int),
            ("token_sha256", Bytes),
            ("created_at", Text),
            ("expires_at", Text),
            ("revoked_at", Text),
            ("last_used_at", Text),
        ],
    },
    Table {
        name: "scripts",
        select: "SELECT id, title, event_id, reaction_id, status, cameras, timetable, extra,
                        owner_id, created_at, updated_at
                 FROM scripts ORDER BY id",
        columns: &[
            ("id", Int),
            ("title", Text),
            ("event_id", Int),
            ("reaction_id", Int),
            ("status", Text),
            ("cameras", Text),
            ("timetable", Text),
            ("extra", Text),
            ("owner_id", Int),
            ("created_at", Text),
            ("updated_at", Text),
        ],
    },
    Table {
        name: "calendars",
        select: "SELECT id, name, timezone, dates, owner_id, created_at, updated_at
                 FROM calendars ORDER BY id",
        columns: &[
            ("id", Int),
            ("name", Text),
            ("timezone", Text),
            ("dates", Text),
            ("owner_id", Int),
            ("created_at", Text),
            ("updated_at", Text),
        ],
    },
    Table {
        name: "script_users",
        select: "SELECT script_id, user_id, position FROM script_users ORDER BY script_id, user_id",
        columns: &[("script_id", Int), ("user_id", Int), ("position", Int4)],
    },
    Table {
        name: "deleted_scripts",
        select: "SELECT id, owner_id, deleted_at FROM deleted_scripts ORDER BY id",
        columns: &[("id", Int), ("owner_id", Int), ("deleted_at", Text)],
    },
    Table {
        name: "snoozes",
        select: "SELECT id, script_id, scope, user_id, camera_id, starts_at, until
                 FROM snoozes ORDER BY id",
        columns: &[
            ("id", Int),
            ("script_id", Int),
            ("scope", Text),
            ("user_id", Int),
            ("camera_id", Text),
            ("starts_at", Int),
            ("until", Int),
        ],
    },
    Table {
        name: "cooldowns",
        select: "SELECT script_id, camera, fired_at, occurrence_id FROM cooldowns
                 ORDER BY script_id, camera",
        columns: &[
            ("script_id", Int),
            ("camera", Text),
            ("fired_at", Int),
            ("occurrence_id", Text),
        ],
    },
    Table {
        name: "deliveries",
        // The channel as the SQLite claim derives it from the target (Channel::condition).
        select: "SELECT id, occurrence_id, script_id, reaction, recipient, lane,
                        CASE WHEN target LIKE '{\"kind\":\"telegram\"%' THEN 'telegram'
                             WHEN target LIKE '{\"kind\":\"webhook\"%' THEN 'webhook'
                             ELSE 'push' END,
                        payload, target, state, attempts, next_attempt_at, last_error,
                        coalesced_into, created_at, updated_at
                 FROM deliveries WHERE state = 'pending' ORDER BY rowid",
        columns: &[
            ("id", Text),
            ("occurrence_id", Text),
            ("script_id", Int),
            ("reaction", Text),
            ("recipient", Text),
            ("lane", Text),
            ("channel", Text),
            ("payload", Text),
            ("target", Text),
            ("state", Text),
            ("attempts", Int4),
            ("next_attempt_at", Int),
            ("last_error", Text),
            ("coalesced_into", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
];

/// The tables whose rows make a target "not empty" (the catalogs are seeded by migrate).
const OWN_ROWS: &[&str] = &[
    "users",
    "user_permissions",
    "api_tokens",
    "scripts",
    "calendars",
    "script_users",
    "deleted_scripts",
    "snoozes",
    "cooldowns",
    "deliveries",
];

/// One value read from SQLite, typed for PostgreSQL.
#[derive(Debug)]
enum Value {
    Int(Option<i64>),
    Int4(Option<i32>),
    Text(Option<String>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    fn of(v: SqlValue, kind: Kind, table: &str, column: &str) -> Result<Value, StoreError> {
        let bad = || {
            StoreError::Migration(format!(
                "{table}.{column} holds a value of the wrong type in the SQLite file"
            ))
        };
        Ok(match (kind, v) {
            (Int, SqlValue::Null) => Value::Int(None),
            (Int, SqlValue::Integer(i)) => Value::Int(Some(i)),
            (Int4, SqlValue::Null) => Value::Int4(None),
            (Int4, SqlValue::Integer(i)) => Value::Int4(Some(i32::try_from(i).map_err(|_| bad())?)),
            (Bool, SqlValue::Null) => Value::Bool(None),
            (Bool, SqlValue::Integer(i)) => Value::Bool(Some(i != 0)),
            (Text, SqlValue::Null) => Value::Text(None),
            (Text, SqlValue::Text(s)) => Value::Text(Some(s)),
            (Text, SqlValue::Integer(i)) => Value::Text(Some(i.to_string())),
            (Text, SqlValue::Blob(b)) => {
                Value::Text(Some(String::from_utf8_lossy(&b).into_owned()))
            }
            (Bytes, SqlValue::Null) => Value::Bytes(None),
            (Bytes, SqlValue::Blob(b)) => Value::Bytes(Some(b)),
            _ => return Err(bad()),
        })
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Int(v) => v,
            Value::Int4(v) => v,
            Value::Text(v) => v,
            Value::Bool(v) => v,
            Value::Bytes(v) => v,
        }
    }
}

/// Rows copied per table, in [`TABLES`] order.
pub type Counts = Vec<(&'static str, u64)>;

/// Copies the store at `from` into `to` (migrated, empty); see the module documentation.
pub async fn copy(from: &Store, to: &PgStore) -> Result<Counts, StoreError> {
    let from = from.clone();
    let rows = tokio::task::spawn_blocking(move || read_all(&from))
        .await
        .map_err(|e| StoreError::TaskFailed(format!("reading the SQLite store: {e}")))??;
    let mut conn = to.get().await?;
    let err = |e: tokio_postgres::Error| to.error(&e);
    let tx = conn.transaction().await.map_err(err)?;
    for table in OWN_ROWS {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
            .await
            .map_err(err)?
            .get(0);
        if any {
            return Err(StoreError::Postgres {
                endpoint: to.endpoint().to_owned(),
                message: format!(
                    "the database is not empty (table {table} has rows); nothing was copied"
                ),
            });
        }
    }
    tx.batch_execute(
        "SET CONSTRAINTS ALL DEFERRED; DELETE FROM permissions; DELETE FROM reactions;
         DELETE FROM events;",
    )
    .await
    .map_err(err)?;
    let mut counts = Vec::new();
    for (table, values) in TABLES.iter().zip(&rows) {
        let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let stmt = tx
            .prepare(&format!(
                "INSERT INTO {} ({}) VALUES ({})",
                table.name,
                names.join(", "),
                marks.join(", ")
            ))
            .await
            .map_err(err)?;
        for row in values {
            let params: Vec<&(dyn ToSql + Sync)> = row.iter().map(Value::as_sql).collect();
            tx.execute(&stmt, &params).await.map_err(err)?;
        }
        counts.push((table.name, values.len() as u64));
    }
    tx.batch_execute(&advance_identities(&[
        "events",
        "reactions",
        "permissions",
        "users",
        "api_tokens",
        "scripts",
        "calendars",
        "snoozes",
    ]))
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(counts)
}

/// Every row to copy, per table.
fn read_all(from: &Store) -> Result<Vec<Vec<Vec<Value>>>, StoreError> {
    from.read(|tx| {
        TABLES
            .iter()
            .map(|table| {
                let mut stmt = tx.prepare(table.select)?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut values = Vec::with_capacity(table.columns.len());
                    for (i, (column, kind)) in table.columns.iter().enumerate() {
                        values.push(Value::of(r.get(i)?, *kind, table.name, column)?);
                    }
                    out.push(values);
                }
                Ok(out)
            })
            .collect()
    })
}
