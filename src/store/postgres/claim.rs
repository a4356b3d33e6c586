//! The claim on PostgreSQL: the statement that leases one channel's due rows (a lane's
//! head only), with the Telegram pacing shared by the instances ([`ChatPacing`]).

use tokio_postgres::Row;

use crate::store::outbox::{Channel, Claimed, target_from};

/// The least time between two messages to one Telegram chat, for every instance together:
/// a chat's next message is claimed only once its last sent one is that old (each instance
/// also paces its own sends, see `dispatch::telegram`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatPacing {
    /// A chat (a positive id or `@channel`), ms.
    pub chat_ms: i64,
    /// A group chat (an id starting with `-`), ms.
    pub group_ms: i64,
}

impl Default for ChatPacing {
    /// Telegram's published limits: 1 message a second per chat, 20 a minute per group.
    fn default() -> Self {
        ChatPacing { chat_ms: 1_000, group_ms: 3_000 }
    }
}

impl ChatPacing {
    /// From the `[telegram]` rates: a chat's interval is the stricter of its per-second and
    /// per-minute rate; a group's, its per-minute rate evenly spread.
    pub fn from_settings(t: &crate::settings::TelegramSettings) -> ChatPacing {
        let every = |per: u32, window_ms: i64| window_ms / i64::from(per.max(1));
        let chat_ms = every(t.per_chat_per_second, 1_000).max(every(t.per_chat_per_minute, 60_000));
        ChatPacing { chat_ms, group_ms: chat_ms.max(every(t.per_group_per_minute, 60_000)) }
    }
}

/// The columns a claim returns, in [`claimed`]'s order.
const CLAIMED: &str =
    "d.seq, d.id, d.reaction, d.lane, d.attempts, d.payload, d.target, d.recipient";

/// The claim of one channel's due rows (`$1` now, `$2` limit, `$3` the lease's end). The
/// channel is a literal, not a parameter: a partial index's condition (`channel = 'push'`)
/// can only be proven from a constant, so with `channel = $1` PostgreSQL's generic plan
/// (used after a statement's first executions) could not read the channel's due index.
pub fn claim_sql(channel: Channel) -> String {
    claim_sql_paced(channel, ChatPacing::default())
}

/// [`claim_sql`] with `pacing` between two messages to one chat: a lane's head is due only
/// once the lane's last sent message is that old (every instance's sends count).
pub fn claim_sql_paced(channel: Channel, pacing: ChatPacing) -> String {
    let paced = if channel == Channel::Telegram {
        format!(
            "AND (d.lane = '' OR NOT EXISTS (
                  SELECT 1 FROM deliveries s
                  WHERE s.state = 'sent' AND s.lane <> '' AND s.lane = d.lane
                    AND s.updated_at > $1 - CASE WHEN d.recipient LIKE '-%'
                                                 THEN {} ELSE {} END))",
            pacing.group_ms, pacing.chat_ms
        )
    } else {
        String::new()
    };
    format!(
        "WITH due AS (
           SELECT d.seq, d.next_attempt_at AS due_at FROM deliveries d
           WHERE d.state = 'pending' AND d.channel = '{}' AND d.next_attempt_at <= $1
             AND (d.lane = '' OR NOT EXISTS (
                  SELECT 1 FROM deliveries e
                  WHERE e.state = 'pending' AND e.lane <> '' AND e.lane = d.lane
                    AND e.seq < d.seq))
             {paced}
           ORDER BY d.next_attempt_at, d.seq
           LIMIT $2
           FOR UPDATE SKIP LOCKED)
         UPDATE deliveries d SET next_attempt_at = $3 FROM due WHERE d.seq = due.seq
         RETURNING {CLAIMED}, due.due_at",
        channel.name()
    )
}

pub(super) fn claimed(r: &Row) -> Claimed {
    let reaction: String = r.get(2);
    let recipient: String = r.get(7);
    let target: Option<String> = r.get(6);
    let attempts: i32 = r.get(4);
    Claimed {
        rowid: r.get(0),
        epoch: 0,
        id: r.get(1),
        target: target_from(target.as_deref(), &reaction, &recipient),
        reaction,
        lane: r.get(3),
        attempts: u32::try_from(attempts).unwrap_or(0),
        payload: r.get(5),
    }
}
