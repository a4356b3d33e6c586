//! Reading the delivery outbox (the pipeline writes it) for `GET /scripts/{id}/deliveries`.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::StoreError;
use super::catalog::text;

/// One delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    /// `{occurrence_id}:{script_id}:{recipient}`.
    pub id: String,
    /// The occurrence that caused it.
    pub occurrence_id: String,
    /// User id, Telegram chat id or webhook URL.
    pub recipient: String,
    /// Reaction name.
    pub reaction: String,
    /// `pending`, `sent`, `failed`, `expired` or `coalesced`.
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// For a `coalesced` delivery: the `delivery_id` of the Telegram summary that replaced it.
    pub coalesced_into: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub created_at: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub updated_at: String,
}

fn ms_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The most recent deliveries of a script, newest first.
pub fn recent(
    conn: &Connection,
    script_id: i64,
    limit: u32,
) -> Result<Vec<DeliveryView>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, occurrence_id, recipient, reaction, state, attempts, last_error,
                created_at, updated_at, coalesced_into
         FROM deliveries WHERE script_id = ?1
         ORDER BY created_at DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![script_id, limit], |r| {
        Ok(DeliveryView {
            id: text(r, 0)?,
            occurrence_id: text(r, 1)?,
            recipient: text(r, 2)?,
            reaction: text(r, 3)?,
            state: text(r, 4)?,
            attempts: r.get::<_, i64>(5).unwrap_or(0),
            last_error: r.get::<_, Option<String>>(6).ok().flatten(),
            created_at: ms_text(r.get::<_, i64>(7).unwrap_or(0)),
            updated_at: ms_text(r.get::<_, i64>(8).unwrap_or(0)),
            coalesced_into: r.get::<_, Option<String>>(9).ok().flatten(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// True when any delivery of this script exists (they outlive deleted scripts).
pub fn any_for(conn: &Connection, script_id: i64) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM deliveries WHERE script_id = ?1)",
        [script_id],
        |r| r.get(0),
    )?)
}
