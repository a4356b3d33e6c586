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

const VIEW_COLUMNS: &str = "id, occurrence_id, recipient, reaction, state, attempts, last_error, \
                            created_at, updated_at, coalesced_into";

fn view(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryView> {
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
}

/// The most recent deliveries of a script, newest first.
pub fn recent(
    conn: &Connection,
    script_id: i64,
    limit: u32,
) -> Result<Vec<DeliveryView>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {VIEW_COLUMNS} FROM deliveries WHERE script_id = ?1
         ORDER BY created_at DESC, id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![script_id, limit], view)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One delivery of an occurrence, with its script and the push payload it was made from
/// (which names the occurrence's event, camera and `occurred_at`).
#[derive(Debug, Clone)]
pub struct OccurrenceDelivery {
    /// The script that made it.
    pub script_id: i64,
    /// The delivery.
    pub view: DeliveryView,
    /// The stored push payload (JSON text, CONTRACT §5).
    pub payload: String,
}

/// Every delivery made for one occurrence, by script and recipient. Found through the
/// primary key: a delivery id starts with `{occurrence_id}:` (no index on the occurrence
/// column, which every intake write would pay for).
pub fn of_occurrence(
    conn: &Connection,
    occurrence_id: &str,
) -> Result<Vec<OccurrenceDelivery>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {VIEW_COLUMNS}, script_id, payload FROM deliveries
         WHERE id >= ?1 || ':' AND id < ?1 || ';' AND occurrence_id = ?1
         ORDER BY script_id, rowid"
    ))?;
    let rows = stmt.query_map([occurrence_id], |r| {
        Ok(OccurrenceDelivery {
            view: view(r)?,
            script_id: r.get::<_, i64>(10).unwrap_or(0),
            payload: text(r, 11).unwrap_or_default(),
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
