//! Reading the delivery outbox (the pipeline writes it) for `GET /scripts/{id}/deliveries`,
//! explain, and the cooldown state the intake keeps beside it.

use serde::Serialize;

use super::StoreError;
use super::sql::{Dialect, Row, Sql};
use crate::args;

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

fn view(r: &Row) -> DeliveryView {
    DeliveryView {
        id: r.text(0),
        occurrence_id: r.text(1),
        recipient: r.text(2),
        reaction: r.text(3),
        state: r.text(4),
        attempts: r.get::<i64>(5).unwrap_or(0),
        last_error: r.get::<Option<String>>(6).ok().flatten(),
        created_at: ms_text(r.get::<i64>(7).unwrap_or(0)),
        updated_at: ms_text(r.get::<i64>(8).unwrap_or(0)),
        coalesced_into: r.get::<Option<String>>(9).ok().flatten(),
    }
}

/// The most recent deliveries of a script, newest first (the same instant: by id, last
/// first).
pub fn recent(conn: &dyn Sql, script_id: i64, limit: u32) -> Result<Vec<DeliveryView>, StoreError> {
    let rows = conn.query(
        &format!(
            "SELECT {VIEW_COLUMNS} FROM deliveries WHERE script_id = ?1
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        ),
        args![script_id, limit],
    )?;
    Ok(rows.iter().map(view).collect())
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

/// Every delivery made for one occurrence, by script, then in the order they were
/// enqueued (SQLite's `rowid`, PostgreSQL's `seq`). A delivery id starts with
/// `{occurrence_id}:`, so both stores find them through the primary key (no index on the
/// occurrence column, which every intake write would pay for). Ids compare byte by byte on
/// both: on PostgreSQL the column's collation is "C" (its migration 6), whatever the
/// database's; in a collation that orders by language, the ids starting with
/// `{occurrence_id}:` need not lie between `{occurrence_id}:` and `{occurrence_id};`.
pub fn of_occurrence(
    conn: &dyn Sql,
    occurrence_id: &str,
) -> Result<Vec<OccurrenceDelivery>, StoreError> {
    let enqueued = match conn.dialect() {
        Dialect::Sqlite => "rowid",
        Dialect::Postgres => "seq",
    };
    let rows = conn.query(
        &format!(
            "SELECT {VIEW_COLUMNS}, script_id, payload FROM deliveries
             WHERE id >= ?1 || ':' AND id < ?1 || ';' AND occurrence_id = ?1
             ORDER BY script_id, {enqueued}"
        ),
        args![occurrence_id],
    )?;
    Ok(rows
        .iter()
        .map(|r| OccurrenceDelivery {
            view: view(r),
            script_id: r.get::<i64>(10).unwrap_or(0),
            payload: r.text(11),
        })
        .collect())
}

/// True when any delivery of this script exists (they outlive deleted scripts).
pub fn any_for(conn: &dyn Sql, script_id: i64) -> Result<bool, StoreError> {
    conn.query_value::<bool>(
        "SELECT EXISTS(SELECT 1 FROM deliveries WHERE script_id = ?1)",
        args![script_id],
    )
}

/// The stored cooldown state of one script on one camera: the last firing's `occurred_at`
/// (unix ms) and occurrence id (explain reads just the ones it needs). The table
/// `cooldowns` has the same columns on both stores; `camera` holds the camera id as text.
pub fn cooldown_of(
    conn: &dyn Sql,
    script_id: i64,
    camera_id: i64,
) -> Result<Option<(i64, String)>, StoreError> {
    match conn.query_opt(
        "SELECT fired_at, occurrence_id FROM cooldowns WHERE script_id = ?1 AND camera = ?2",
        args![script_id, camera_id.to_string()],
    )? {
        Some(r) => Ok(Some((r.get::<i64>(0)?, r.text(1)))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn db() -> Connection {
        super::super::migrations::in_memory()
    }

    #[test]
    fn of_occurrence_orders_by_script_then_enqueue_order() {
        let conn = db();
        for (id, occurrence, script) in
            [("o1:2:1", "o1", 2), ("o1:1:9", "o1", 1), ("o10:1:1", "o10", 1), ("o1:1:0", "o1", 1)]
        {
            conn.execute(
                "INSERT INTO deliveries (id, occurrence_id, script_id, reaction, recipient, lane,
                   payload, state, attempts, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'r', '1', '', '{}', 'pending', 0, 1, 1, 1)",
                rusqlite::params![id, occurrence, script],
            )
            .unwrap();
        }
        let ids: Vec<(i64, String)> = of_occurrence(&conn, "o1")
            .unwrap()
            .into_iter()
            .map(|d| (d.script_id, d.view.id))
            .collect();
        assert_eq!(
            ids,
            [(1, "o1:1:9".to_owned()), (1, "o1:1:0".to_owned()), (2, "o1:2:1".to_owned())]
        );
        assert!(any_for(&conn, 2).unwrap());
        assert!(!any_for(&conn, 3).unwrap());
        assert_eq!(recent(&conn, 1, 10).unwrap().len(), 3);
    }

    #[test]
    fn cooldown_of_reads_one_script_and_camera() {
        let conn = db();
        conn.execute(
            "INSERT INTO cooldowns (script_id, camera, fired_at, occurrence_id)
             VALUES (1, '42', 1000, 'occ')",
            [],
        )
        .unwrap();
        assert_eq!(cooldown_of(&conn, 1, 42).unwrap(), Some((1000, "occ".to_owned())));
        assert_eq!(cooldown_of(&conn, 1, 43).unwrap(), None);
        assert_eq!(cooldown_of(&conn, 2, 42).unwrap(), None);
    }
}
