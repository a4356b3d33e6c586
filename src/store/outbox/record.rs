//! Recording outcomes, carrying pending rows into a replaced file, and retention.

use super::*;

/// Records the outcomes of many attempts in one transaction begun IMMEDIATE. Only rows
/// still pending change (an operator may have edited one meanwhile).
pub fn record(
    conn: &mut Connection,
    outcomes: &[(RowRef, Recorded)],
    now_ms: i64,
) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (row, outcome) in outcomes {
        let (by, key) = match row {
            RowRef::Rowid(rowid) => ("rowid", SqlValue::Integer(*rowid)),
            RowRef::Id(id) => ("id", SqlValue::Text(id.clone())),
        };
        match outcome {
            Recorded::Sent => tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET state = 'sent', attempts = attempts + 1,
                            updated_at = ?2,
                            last_error = CASE WHEN state = 'expired' THEN NULL ELSE last_error END
                     WHERE {by} = ?1 AND state IN ('pending', 'expired')"
                ))?
                .execute(params![key, now_ms])?,
            Recorded::Failed { reason } => tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET state = 'failed', attempts = attempts + 1,
                            last_error = ?2, updated_at = ?3
                     WHERE {by} = ?1 AND state = 'pending'"
                ))?
                .execute(params![key, reason, now_ms])?,
            Recorded::Retry { reason, next_attempt_at } => tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2,
                            next_attempt_at = ?3, updated_at = ?4
                     WHERE {by} = ?1 AND state = 'pending'"
                ))?
                .execute(params![key, reason, next_attempt_at, now_ms])?,
            Recorded::Deferred { next_attempt_at } => tx
                .prepare_cached(&format!(
                    "UPDATE deliveries SET next_attempt_at = ?2, updated_at = ?3
                     WHERE {by} = ?1 AND state = 'pending'"
                ))?
                .execute(params![key, next_attempt_at, now_ms])?,
        };
    }
    tx.commit()?;
    Ok(())
}

/// Every column of the `deliveries` table, in the order [`Carried`] keeps them.
pub(super) const COLUMNS: &str = "id, occurrence_id, script_id, reaction, recipient, lane, payload, state, \
                       attempts, next_attempt_at, last_error, created_at, updated_at, target";

/// The pending rows of a database file that was replaced, copied verbatim (see
/// [`carry_over`]).
#[derive(Debug, Default)]
pub struct Carried {
    pub(super) rows: Vec<Vec<SqlValue>>,
}

impl Carried {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds the rows of a later read (a second replacement before the first was carried).
    pub fn extend(&mut self, other: Carried) {
        self.rows.extend(other.rows);
    }
}

/// Reads every pending row of the (replaced) file `conn` is on, for [`carry_over`]. Run it
/// through [`Handoff::query`]: handed-over rows are pending rows of that file too.
pub fn pending_rows(conn: &Connection) -> Result<Carried, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM deliveries WHERE state = 'pending' ORDER BY rowid"
    ))?;
    let width = stmt.column_count();
    let rows = stmt.query_map([], |r| (0..width).map(|i| r.get::<_, SqlValue>(i)).collect())?;
    Ok(Carried { rows: rows.collect::<Result<_, _>>()? })
}

/// Writes the pending rows of a replaced file into the file `conn` is on, in their order,
/// in one transaction; a delivery id the new file already has keeps the new file's row.
/// Returns how many rows were added.
pub fn carry_over(conn: &mut Connection, carried: &Carried) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut added = 0;
    {
        let mut stmt = tx.prepare(&format!(
            "INSERT OR IGNORE INTO deliveries ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))?;
        for row in &carried.rows {
            added += stmt.execute(rusqlite::params_from_iter(row.iter()))?;
        }
    }
    tx.commit()?;
    Ok(added)
}

/// Deletes up to `limit` finished (`sent`, `failed`, `expired` or `coalesced`) rows last updated before
/// `cutoff_ms`, in one short transaction. Returns how many were deleted; the caller repeats
/// while it equals `limit`.
pub fn prune(conn: &mut Connection, cutoff_ms: i64, limit: usize) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx
        .prepare_cached(
            "DELETE FROM deliveries WHERE rowid IN (
            SELECT rowid FROM deliveries
            WHERE state <> 'pending' AND updated_at < ?1 LIMIT ?2)",
        )?
        .execute(params![cutoff_ms, i64::try_from(limit).unwrap_or(i64::MAX)])?;
    tx.commit()?;
    Ok(n)
}
