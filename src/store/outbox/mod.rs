//! # The durable delivery outbox
//!
//! Every delivery (one reaction for one recipient, caused by one occurrence and one script)
//! is a row of the `deliveries` table, written by [`OutboxWriter::enqueue`] before anything
//! is attempted. The dispatcher ([`crate::dispatch::worker`]) claims due rows, attempts them
//! and records the outcome on the same row:
//!
//! | state | meaning |
//! | --- | --- |
//! | `pending` | not delivered yet; attempted again at `next_attempt_at` (unix ms) |
//! | `sent` | delivered (the peer acknowledged it) |
//! | `failed` | given up, with the reason in `last_error` |
//! | `expired` | not done within `delivery.expire_after_seconds` of its channel, never sent (see [`expire`]) |
//! | `coalesced` | replaced by a Telegram summary, whose `delivery_id` is in `last_error` |
//!
//! The row's id is the stable `delivery_id` of CONTRACT §5: `INSERT OR IGNORE` makes a
//! redelivered occurrence add nothing. Rows with the same non-empty `lane` are attempted one
//! at a time in enqueue order (SQLite's `rowid`); lane `""` has no ordering.
//!
//! How to deliver is stored with the row as JSON in the `target` column (migration 2), see
//! [`Target`]. It holds the bot token or webhook secret in clear text, as the script's
//! `extra` does; neither ever reaches a log line, `Debug` output or `last_error`.
//!
//! The functions below the writer are the dispatcher's blocking queries; they take a
//! connection so the dispatcher can keep one open.
//!
//! # Hand-over in memory
//!
//! A freshly committed row with an empty lane (pushes, webhooks) is also handed to the
//! dispatcher in memory through the [`Handoff`] the writer and the dispatcher were both
//! given (the daemon makes one, in [`crate::app`]), so the dispatcher can attempt it without reading it back. The database stays the
//! truth: the hand-over is bounded ([`HANDOFF_MAX`]; beyond it rows are only in the
//! database and the dispatcher falls back to [`due`], as it does for rows with a lane,
//! whose order only the query keeps), and a dispatcher that queries the
//! outbox does so holding the hand-over's lock and then drops what was handed over, while
//! writers commit and hand over under that same lock. So a row is either seen by a query
//! or handed over after it, never both: no attempt starts twice.
//!
//! On PostgreSQL the same [`Handoff`] carries rows the intake wrote already leased to its
//! instance (see [`crate::store::postgres::outbox`]): no claim returns them before their
//! lease ends, so they need no lock against a query ([`Handoff::hand_over_leased`],
//! [`Handoff::claiming`]).

//!
//! # Files
//!
//! [`writer`] (the intake's side: deliveries and cooldown state in one transaction),
//! [`handoff`] (rows handed to the dispatcher in memory), [`claim`] (the dispatcher's
//! queries: due rows, lane heads, expiry, coalescing), [`record`] (outcomes, carrying rows
//! into a replaced file, retention).

pub mod backend;
pub mod claim;
pub mod handoff;
pub mod record;
pub mod writer;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::delivery::ReactionKind;
use crate::secret::Secret;
use crate::store::{Conn, HeldConn, Store, StoreError};

#[cfg(test)]
pub use claim::due;
pub use claim::{
    ClaimFound, claim_rows, coalesce, due_in, expire, next_due_after, pending_summary,
};
pub use handoff::{Fresh, HANDOFF_MAX, Handoff};
pub use record::{Carried, carry_over, pending_rows, prune, record};
pub use writer::{Fired, OutboxWriter, load_cooldowns};

/// How a delivery leaves the daemon; stored with the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// MQTT QoS 1 to `{push_topic_prefix}/{user_id}/reactions`, then the API's push hub.
    Push {
        /// The receiving user.
        user_id: i64,
    },
    /// Bot API `sendMessage` (or `sendPhoto` with `photo_url`).
    Telegram {
        /// The script's bot token.
        bot_token: Secret,
        /// Numeric chat id or `@channel`.
        chat_id: String,
        /// The message text (or photo caption).
        text: String,
        /// Snapshot URL: sent as a photo with the text as caption.
        photo_url: Option<String>,
    },
    /// HMAC-signed HTTP POST of the payload.
    Webhook {
        /// Where to POST.
        url: String,
        /// Signing key; no signature header without it.
        secret: Option<Secret>,
    },
}

/// The stored form of [`Target`]: plain strings, because [`Secret`] serialises as a mask.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum StoredTarget {
    Push {
        user_id: i64,
    },
    Telegram {
        bot_token: String,
        chat_id: String,
        text: String,
        #[serde(default)]
        photo_url: Option<String>,
    },
    Webhook {
        url: String,
        #[serde(default)]
        secret: Option<String>,
    },
}

impl Target {
    /// The JSON text stored in the `target` column.
    pub fn to_json(&self) -> String {
        let stored = match self {
            Target::Push { user_id } => StoredTarget::Push { user_id: *user_id },
            Target::Telegram { bot_token, chat_id, text, photo_url } => StoredTarget::Telegram {
                bot_token: bot_token.expose().to_owned(),
                chat_id: chat_id.clone(),
                text: text.clone(),
                photo_url: photo_url.clone(),
            },
            Target::Webhook { url, secret } => StoredTarget::Webhook {
                url: url.clone(),
                secret: secret.as_ref().map(|s| s.expose().to_owned()),
            },
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Parses the `target` column. The error never contains the text (it may hold a token).
    pub fn from_json(text: &str) -> Result<Target, String> {
        let stored: StoredTarget = serde_json::from_str(text).map_err(|e| {
            format!(
                "unreadable delivery target (line {} column {}: {:?})",
                e.line(),
                e.column(),
                e.classify()
            )
        })?;
        Ok(match stored {
            StoredTarget::Push { user_id } => Target::Push { user_id },
            StoredTarget::Telegram { bot_token, chat_id, text, photo_url } => {
                Target::Telegram { bot_token: Secret::new(bot_token), chat_id, text, photo_url }
            }
            StoredTarget::Webhook { url, secret } => {
                Target::Webhook { url, secret: secret.map(Secret::new) }
            }
        })
    }

    /// `push`, `telegram` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Push { .. } => "push",
            Target::Telegram { .. } => "telegram",
            Target::Webhook { .. } => "webhook",
        }
    }
}

/// The delivery channels; each has its own in-flight budget in the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// [`Target::Push`], and every row whose target is neither Telegram nor webhook (rows
    /// without or with an unreadable target are attempted, and failed, here).
    Push,
    /// [`Target::Telegram`].
    Telegram,
    /// [`Target::Webhook`].
    Webhook,
}

impl Channel {
    /// Every channel, in index order.
    pub const ALL: [Channel; 3] = [Channel::Push, Channel::Telegram, Channel::Webhook];

    /// `push`, `telegram` or `webhook` (as [`Target::kind`]).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Telegram => "telegram",
            Channel::Webhook => "webhook",
        }
    }

    /// 0, 1, 2: for arrays indexed by channel.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The channel of a claimed row's target (an unreadable target counts as push).
    pub fn of(target: &Result<Target, String>) -> Channel {
        match target {
            Ok(Target::Telegram { .. }) => Channel::Telegram,
            Ok(Target::Webhook { .. }) => Channel::Webhook,
            _ => Channel::Push,
        }
    }

    /// The SQL condition on `d.target` selecting this channel's rows. The stored JSON
    /// starts with its `kind` tag ([`Target::to_json`]). Each channel's index of due rows
    /// (migration 8) has the same condition, without the `d.`, so changing one means a
    /// migration for the other.
    fn condition(self) -> &'static str {
        match self {
            Channel::Telegram => "d.target LIKE '{\"kind\":\"telegram\"%'",
            Channel::Webhook => "d.target LIKE '{\"kind\":\"webhook\"%'",
            Channel::Push => {
                "(d.target IS NULL OR NOT (d.target LIKE '{\"kind\":\"telegram\"%' \
                 OR d.target LIKE '{\"kind\":\"webhook\"%'))"
            }
        }
    }
}

/// One delivery to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The `delivery_id`, stable per occurrence × script × recipient (the row's key).
    pub id: String,
    /// The occurrence that caused it.
    pub occurrence_id: String,
    /// The script.
    pub script_id: i64,
    /// Reaction name, e.g. `show-camera-sidebar`.
    pub reaction: String,
    /// User id, Telegram chat id or webhook URL (shown by `GET /scripts/{id}/deliveries`).
    pub recipient: String,
    /// Ordering key: deliveries with the same non-empty lane are attempted one at a time,
    /// in enqueue order; `""` = no ordering.
    pub lane: String,
    /// JSON text: the CONTRACT §5 push payload (body of pushes and webhooks).
    pub payload: String,
    /// How to deliver.
    pub target: Target,
}

impl NewDelivery {
    /// This row as the dispatcher is handed it right after its commit (`rowid` and `epoch`
    /// as written; no lane: rows with one go through a claim; no attempt yet).
    pub(crate) fn handed_over(&self, rowid: i64, epoch: u64) -> Claimed {
        Claimed {
            rowid,
            epoch,
            id: self.id.clone(),
            reaction: self.reaction.clone(),
            lane: String::new(),
            attempts: 0,
            payload: self.payload.clone(),
            target: Ok(self.target.clone()),
        }
    }

    /// A sound push to user 42 of script 1, its occurrence id the delivery id (tests).
    #[cfg(test)]
    pub(crate) fn test_push(id: &str) -> NewDelivery {
        NewDelivery {
            id: id.into(),
            occurrence_id: id.into(),
            script_id: 1,
            reaction: "sound".into(),
            recipient: "42".into(),
            lane: String::new(),
            payload: format!(r#"{{"reaction":"sound","delivery_id":"{id}"}}"#),
            target: Target::Push { user_id: 42 },
        }
    }
}

/// A pending row claimed for an attempt, read without trusting its column types.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// SQLite rowid: the handle for updates (the id column may be hand-edited garbage).
    pub rowid: i64,
    /// The [`Conn::epoch`] it was read or written with: its rowid means nothing in another
    /// file (after a replacement it is updated by id).
    pub epoch: u64,
    /// The delivery id as text.
    pub id: String,
    /// Reaction name (a metric label).
    pub reaction: String,
    /// Ordering lane.
    pub lane: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The payload text.
    pub payload: String,
    /// How to deliver, or why the row cannot be delivered at all.
    pub target: Result<Target, String>,
}

fn lossy_text(v: SqlValue) -> String {
    match v {
        SqlValue::Null => String::new(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => f.to_string(),
        SqlValue::Text(s) => s,
        SqlValue::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
    }
}

/// Rows written before migration 2 have no `target`: those of the client reactions are read
/// as pushes to their recipient.
fn target_of(target: SqlValue, reaction: &str, recipient: &str) -> Result<Target, String> {
    match target {
        SqlValue::Text(t) => Target::from_json(&t),
        SqlValue::Null => target_from(None, reaction, recipient),
        _ => Err("unreadable delivery target (not text)".into()),
    }
}

/// The [`Target`] of a row's `target` text (`None`: a row without one, see `target_of`).
pub(crate) fn target_from(
    target: Option<&str>,
    reaction: &str,
    recipient: &str,
) -> Result<Target, String> {
    match target {
        Some(t) => Target::from_json(t),
        None => match recipient.parse::<i64>() {
            Ok(user_id) if ReactionKind::of(reaction) == ReactionKind::Client => {
                Ok(Target::Push { user_id })
            }
            _ => Err("the delivery has no target (written before the outbox stored one)".into()),
        },
    }
}

/// What became of one attempt, as recorded on the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Delivered: `sent`, attempts + 1.
    Sent,
    /// Given up: `failed` with the reason, attempts + 1.
    Failed {
        /// `last_error`.
        reason: String,
    },
    /// A failed attempt to be repeated at `next_attempt_at`: attempts + 1.
    Retry {
        /// `last_error`.
        reason: String,
        /// Unix ms.
        next_attempt_at: i64,
    },
    /// Not attempted (a rate limit said "not now"): only `next_attempt_at` moves.
    Deferred {
        /// Unix ms.
        next_attempt_at: i64,
    },
}

/// Which row an outcome is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRef {
    /// A row of the connection's own file, by rowid.
    Rowid(i64),
    /// A row read from a file that has since been replaced, by its delivery id (its
    /// pending copy was carried over to the new file, see [`carry_over`]).
    Id(String),
}

#[cfg(test)]
mod tests;
