//! The dispatcher's queries: due rows (a lane's head only), expiry, Telegram coalescing.

use std::sync::LazyLock;

use super::*;

/// Up to `limit` due pending rows of every channel, oldest due first (tests: no index
/// serves every channel at once, so this reads all pending rows; the dispatcher asks
/// [`due_in`] per channel). A row with a non-empty lane is returned only when it is its
/// lane's head (no older pending row in the lane), so a lane waiting for a retry blocks
/// itself and nothing else.
#[cfg(test)]
pub fn due(conn: &Conn, now_ms: i64, limit: usize) -> Result<Vec<Claimed>, StoreError> {
    due_where(conn, &due_sql("1"), now_ms, limit)
}

/// [`due`] for one [`Channel`]'s rows only, so a channel's backlog cannot hide another's
/// due rows behind the limit.
pub fn due_in(
    conn: &Conn,
    channel: Channel,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, StoreError> {
    // Built once: a claim runs many times a second.
    static SQL: [LazyLock<String>; 3] = [
        LazyLock::new(|| due_sql(Channel::Push.condition())),
        LazyLock::new(|| due_sql(Channel::Telegram.condition())),
        LazyLock::new(|| due_sql(Channel::Webhook.condition())),
    ];
    due_where(conn, &SQL[channel.index()], now_ms, limit)
}

/// The query of [`due_where`] (`?1` now). With a channel's condition it reads that
/// channel's index of due rows (migration 8) in order, no sort, so reading stops after the
/// rows taken. It has no `LIMIT ?`: SQLite plans with a bound limit's value and prepares
/// the statement again whenever the value changes, which it does on nearly every claim (the
/// free slots); that cost more than the query itself.
pub(super) fn due_sql(condition: &str) -> String {
    format!(
        "SELECT d.rowid, d.id, d.reaction, d.lane, d.attempts, d.payload, d.target, d.recipient
         FROM deliveries d
         WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 AND {condition}
           AND (d.lane = '' OR NOT EXISTS (
                SELECT 1 FROM deliveries e
                WHERE e.state = 'pending' AND e.lane <> '' AND e.lane = d.lane
                  AND e.rowid < d.rowid))
         ORDER BY d.next_attempt_at, d.rowid"
    )
}

/// Runs `sql`, a [`due_sql`] query.
fn due_where(
    conn: &Conn,
    sql: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, StoreError> {
    let epoch = conn.epoch();
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![now_ms], |r| {
        let reaction = lossy_text(r.get(2)?);
        let recipient = lossy_text(r.get(7)?);
        let attempts = match r.get::<_, SqlValue>(4)? {
            SqlValue::Integer(i) => u32::try_from(i).unwrap_or(0),
            _ => 0,
        };
        let target = target_of(r.get(6)?, &reaction, &recipient);
        Ok(Claimed {
            rowid: r.get(0)?,
            epoch,
            id: lossy_text(r.get(1)?),
            reaction,
            lane: lossy_text(r.get(3)?),
            attempts,
            payload: lossy_text(r.get(5)?),
            target,
        })
    })?;
    Ok(rows.take(limit).collect::<Result<_, _>>()?)
}

/// What one claim of the dispatcher found: the rows expired now per channel, how many rows
/// were coalesced into a Telegram summary, and the due rows per channel asked.
pub type ClaimFound = (Vec<(&'static str, usize)>, usize, Vec<Vec<Claimed>>);

/// One claim of the dispatcher: expires the old pending rows of the `asked` channels, reads
/// their due rows (up to each channel's limit) under the hand-over's lock, and coalesces
/// the Telegram rows found whose lane is not in `busy` (a lane's head in flight is not
/// rewritten under its attempt).
///
/// The writes (expiry, coalescing) run **outside** the hand-over's lock: a writer holds
/// SQLite's write lock while it waits for that lock to commit and hand over, so a write
/// under the lock would wait for the writer and the writer for it, until the busy timeout
/// broke the tie (both stalled for seconds). Under the lock only reads run, which never wait
/// for a writer (WAL). Expiry first is safe: a handed-over row of an asked channel is
/// dropped by the query, so an expired one is never started from the hand-over.
pub fn claim_rows(
    conn: &mut Conn,
    handoff: &Handoff,
    asked: &[(Channel, usize)],
    now_ms: i64,
    expire_after: &crate::settings::ExpireAfter,
    busy: &std::collections::HashSet<String>,
) -> Result<ClaimFound, StoreError> {
    let is_asked = |c: Channel| asked.iter().any(|(a, _)| *a == c);
    let only_asked = crate::settings::ExpireAfter {
        push: if is_asked(Channel::Push) { expire_after.push } else { 0 },
        telegram: if is_asked(Channel::Telegram) { expire_after.telegram } else { 0 },
        webhook: if is_asked(Channel::Webhook) { expire_after.webhook } else { 0 },
    };
    let expired = expire(conn, now_ms, &only_asked)?;
    let channels: Vec<Channel> = asked.iter().map(|(c, _)| *c).collect();
    let mut found: Vec<Vec<Claimed>> = handoff.query_channels(&channels, || {
        asked.iter().map(|(channel, limit)| due_in(&*conn, *channel, now_ms, *limit)).collect()
    })?;
    let mut coalesced = 0;
    for row in found.iter_mut().flatten().filter(|r| !busy.contains(&r.lane)) {
        coalesced += coalesce(conn, row, now_ms)?;
    }
    Ok((expired, coalesced, found))
}

/// The earliest `next_attempt_at` after `now_ms` among pending rows, if any.
pub fn next_due_after(conn: &Connection, now_ms: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(&NEXT_DUE_SQL)?
        .query_row([now_ms], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// [`next_due_sql`], built once.
static NEXT_DUE_SQL: LazyLock<String> = LazyLock::new(next_due_sql);

/// The query of [`next_due_after`]: the earliest of each channel's, so each reads one entry
/// of its channel's index (migration 8).
pub(super) fn next_due_sql() -> String {
    let per_channel: Vec<String> = Channel::ALL
        .iter()
        .map(|c| {
            format!(
                "SELECT MIN(d.next_attempt_at) AS at FROM deliveries d
                 WHERE d.state = 'pending' AND d.next_attempt_at > ?1 AND {}",
                c.condition()
            )
        })
        .collect();
    format!("SELECT MIN(at) FROM ({})", per_channel.join(" UNION ALL "))
}

/// Pending rows and the `created_at` (unix ms) of the oldest.
pub fn pending_summary(conn: &Connection) -> Result<(u64, Option<i64>), StoreError> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE state = 'pending'")?
        .query_row([], |r| {
            let n: i64 = r.get(0)?;
            Ok((u64::try_from(n).unwrap_or(0), r.get::<_, Option<i64>>(1).ok().flatten()))
        })?)
}

/// Marks `expired` every pending row older than its channel's limit in `after` (seconds
/// since the row was written, which is when its occurrence was received and matched; 0 =
/// never), so [`due`] never returns it. Returns how many rows expired per channel
/// (`push`, `telegram`, `webhook`), for the metrics. Run it right before [`due`], in the
/// same [`Handoff::query`].
///
/// An attempt already in flight when its row expires is not stopped: if it succeeds,
/// [`record`] turns the row `sent` (it was started in time), otherwise it stays `expired`.
pub fn expire(
    conn: &Connection,
    now_ms: i64,
    after: &crate::settings::ExpireAfter,
) -> Result<Vec<(&'static str, usize)>, StoreError> {
    let mut out = Vec::new();
    for (channel, secs) in
        [("push", after.push), ("telegram", after.telegram), ("webhook", after.webhook)]
    {
        if secs == 0 {
            continue;
        }
        let cutoff =
            now_ms.saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
        // Rows written before the outbox stored a target are pushes (see `target_of`).
        const OF_CHANNEL: &str = "state = 'pending' AND created_at < ?1
            AND COALESCE(CASE WHEN json_valid(target) THEN json_extract(target, '$.kind') END,
                         'push') = ?2";
        // Read first: the usual answer is "none", and a read needs no write lock (another
        // writer holding it must not stop the dispatcher).
        let any: bool = conn
            .prepare_cached(&format!("SELECT EXISTS(SELECT 1 FROM deliveries WHERE {OF_CHANNEL})"))?
            .query_row(params![cutoff, channel], |r| r.get(0))?;
        if !any {
            continue;
        }
        let n = conn
            .prepare_cached(&format!(
                "UPDATE deliveries SET state = 'expired', updated_at = ?3,
                        last_error = 'expired: not delivered within ' || ?4 || ' s'
                 WHERE {OF_CHANNEL}"
            ))?
            .execute(params![cutoff, channel, now_ms, i64::try_from(secs).unwrap_or(i64::MAX)])?;
        if n > 0 {
            out.push((channel, n));
        }
    }
    Ok(out)
}

/// Telegram coalescing, run on a Telegram row about to be attempted (`head`, its lane's
/// head): when the lane (one bot and chat) holds more pending rows of the same script, they
/// end `coalesced` with `coalesced_into` = the head's delivery id, and the head's text
/// becomes a summary of itself and every row coalesced into it so far (title, count,
/// cameras, first and last time, read from the rows' payloads). One transaction: after a
/// crash either nothing changed or the head is a pending summary, so nothing is lost or
/// sent twice. `head.target` is updated, and the head's `created_at` becomes the newest
/// coalesced row's (the summary expires with its newest occurrence, see [`expire`]).
/// Returns how many rows were coalesced now.
pub fn coalesce(
    conn: &mut Connection,
    head: &mut Claimed,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let Ok(Target::Telegram { bot_token, chat_id, .. }) = &head.target else {
        return Ok(0);
    };
    if head.lane.is_empty() {
        return Ok(0);
    }
    // Read first: usually there is nothing to coalesce, and a read needs no write lock.
    let more: bool = conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM deliveries d JOIN deliveries h ON h.id = ?1
             WHERE d.state = 'pending' AND d.lane <> '' AND d.lane = ?2
               AND d.script_id = h.script_id
               AND d.rowid > h.rowid)",
        )?
        .query_row(params![head.id, head.lane], |r| r.get(0))?;
    if !more {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let script: Option<i64> = tx
        .query_row(
            "SELECT script_id FROM deliveries WHERE id = ?1 AND state = 'pending'",
            [&head.id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(script) = script else { return Ok(0) };
    let n = tx
        .prepare_cached(
            "UPDATE deliveries SET state = 'coalesced', coalesced_into = ?1, updated_at = ?2
             WHERE state = 'pending' AND lane <> '' AND lane = ?3 AND script_id = ?4
               AND id <> ?1
               AND rowid > (SELECT rowid FROM deliveries WHERE id = ?1)",
        )?
        .execute(params![head.id, now_ms, head.lane, script])?;
    if n == 0 {
        return Ok(0);
    }
    let payloads: Vec<String> = tx
        .prepare_cached(
            "SELECT payload FROM deliveries WHERE id = ?1
             UNION ALL
             SELECT payload FROM (SELECT payload FROM deliveries
                                  WHERE state = 'coalesced' AND coalesced_into = ?1 ORDER BY rowid)",
        )?
        .query_map([&head.id], |r| Ok(lossy_text(r.get(0)?)))?
        .collect::<Result<_, _>>()?;
    let text = summary_of(&payloads);
    let target = Target::Telegram {
        bot_token: bot_token.clone(),
        chat_id: chat_id.clone(),
        text,
        photo_url: None,
    };
    // The summary reports the newest occurrence: it expires with it, not with the oldest.
    tx.prepare_cached(
        "UPDATE deliveries SET target = ?2, updated_at = ?3,
                created_at = MAX(created_at, (SELECT MAX(created_at) FROM deliveries
                                              WHERE state = 'coalesced' AND coalesced_into = ?1))
         WHERE id = ?1",
    )?
    .execute(params![head.id, target.to_json(), now_ms])?;
    tx.commit()?;
    head.target = Ok(target);
    Ok(n)
}

/// The summary text of the payloads of coalesced deliveries (CONTRACT §5 push payloads).
pub(crate) fn summary_of(payloads: &[String]) -> String {
    let mut title = String::new();
    let mut cameras: Vec<i64> = Vec::new();
    let mut times: Vec<String> = Vec::new();
    for p in payloads {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(p) else { continue };
        if title.is_empty() {
            title =
                v.pointer("/script/title").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
        }
        if let Some(c) = v.get("camera_id").and_then(|c| c.as_i64())
            && !cameras.contains(&c)
        {
            cameras.push(c);
        }
        if let Some(t) = v.get("occurred_at").and_then(|t| t.as_str()) {
            times.push(t.to_owned());
        }
    }
    times.sort_by_key(|t| {
        chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp_millis()).unwrap_or(0)
    });
    let first = times.first().cloned().unwrap_or_default();
    let last = times.last().cloned().unwrap_or_default();
    crate::delivery::summary_text(&title, payloads.len(), &cameras, &first, &last)
}
