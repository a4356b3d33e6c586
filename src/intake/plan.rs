//! Planning one occurrence's deliveries: which recipients of a firing script get one, and
//! the rules [`super::explain`] asks too (cooldown, recipients, the disabled-user and
//! snooze gate).

use super::*;

/// What the deliveries of one occurrence share, computed once per occurrence.
pub(super) struct Shared<'a> {
    pub(super) occ: &'a Occurrence,
    /// `occurred_at` as RFC 3339.
    pub(super) occurred_at: &'a str,
    /// The `data` pushes carry, and whether it was left out for its size.
    pub(super) data: (Option<&'a serde_json::Value>, bool),
}

/// Whether a script's occurrence `occurrence_id` at `at_ms` (its `occurred_at`, unix ms)
/// on a camera is silenced by the script's last firing there, `last` (`occurred_at` and
/// id): it lies less than `cooldown_seconds` after it. The firing occurrence itself,
/// redelivered, is not silenced (the outbox ignores it as a duplicate), so replaying a
/// stream with the same ids repeats the same decisions.
pub fn in_cooldown(
    last: Option<&(i64, String)>,
    at_ms: i64,
    occurrence_id: &str,
    cooldown_seconds: u32,
) -> bool {
    last.is_some_and(|(fired_ms, id)| {
        id != occurrence_id
            && at_ms >= *fired_ms
            && at_ms - fired_ms < i64::from(cooldown_seconds) * 1000
    })
}

/// What decides, per recipient of a matched script ([`recipients_of`]), whether a delivery
/// is made: disabled accounts get nothing, then the snoozes at the occurrence's
/// `occurred_at` apply.
pub struct Gate<'a> {
    /// The active snoozes.
    pub snoozes: &'a SnoozeSet,
    /// The occurrence's `occurred_at`, unix ms.
    pub at_ms: i64,
}

impl Gate<'_> {
    /// The shared rule ([`snoozes::decide`]) for one recipient of `script` on `camera`:
    /// a user id for pushes, `None` for Telegram and webhooks.
    pub fn decide(
        &self,
        snap: &Snapshot,
        script_id: i64,
        recipient: Option<i64>,
        camera: i64,
    ) -> RecipientDecision {
        let disabled = recipient.is_some_and(|u| snap.disabled.contains(&u));
        let camera = camera.to_string();
        snoozes::decide(self.snoozes, script_id, recipient, disabled, &camera, self.at_ms)
    }
}

/// Who one delivery of a matched script goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient<'a> {
    /// A user's client apps (a push), disabled users included: the [`Gate`] leaves them out.
    User(i64),
    /// A Telegram chat, with the script's bot token.
    Chat { chat_id: &'a str, bot_token: &'a crate::secret::Secret },
    /// A webhook URL.
    Url(&'a str),
}

impl Recipient<'_> {
    /// The user id the snooze and account rules look at (`None` for chats and URLs).
    pub fn user(&self) -> Option<i64> {
        match self {
            Recipient::User(u) => Some(*u),
            Recipient::Chat { .. } | Recipient::Url(_) => None,
        }
    }
}

/// Everybody a matched script's reaction goes to: the chat of a Telegram script, the URL of a
/// webhook script, otherwise its users (plus their sub-users for the client-side reactions),
/// disabled users included. A hand-edited row without its chat, token or URL has nobody
/// (logged). The intake and explain both ask this, then the [`Gate`].
pub fn recipients_of<'a>(snap: &Snapshot, script: &'a ScriptRecord) -> Vec<Recipient<'a>> {
    match script.reaction.kind {
        ReactionKind::Telegram => {
            let (Some(bot_token), Some(chat_id)) = (&script.extra.bot_token, &script.extra.chat_id)
            else {
                // Validation requires both; a hand-edited row without them is skipped loudly.
                tracing::warn!(
                    script = script.id,
                    "telegram script without bot_token or chat_id; nothing sent"
                );
                return Vec::new();
            };
            vec![Recipient::Chat { chat_id, bot_token }]
        }
        ReactionKind::Webhook => match &script.extra.url {
            Some(url) => vec![Recipient::Url(url)],
            None => {
                tracing::warn!(script = script.id, "webhook script without url; nothing sent");
                Vec::new()
            }
        },
        ReactionKind::Client | ReactionKind::Other => {
            snap.audience(script).into_iter().map(Recipient::User).collect()
        }
    }
}

/// The deliveries of one matched script for one occurrence; true when a snooze silenced
/// at least one of them.
pub(super) fn plan_script(
    snap: &Snapshot,
    script: &ScriptRecord,
    event: &Event,
    shared: &Shared<'_>,
    gate: &Gate<'_>,
    tz: chrono_tz::Tz,
    out: &mut Vec<NewDelivery>,
) -> bool {
    let Shared { occ, occurred_at, data: (data, data_truncated) } = *shared;
    let reaction = script.reaction.name.as_str();
    let payload_for = |id: &str| {
        push_payload(&PushParts {
            reaction,
            delivery_id: id,
            script_id: script.id,
            script_title: &script.title,
            event_id: event.id,
            event_name: &event.name,
            event_description: &event.description,
            event_color: &event.color,
            occurrence_id: &occ.id,
            camera_id: occ.camera_id,
            occurred_at,
            data,
            data_truncated,
            snapshot_url: occ.snapshot_url.as_deref(),
        })
    };
    // One delivery: id, payload and the script's fields; the rest per reaction.
    let mut push =
        |recipient: String, key: &dyn std::fmt::Display, lane: String, target: Target| {
            let id = delivery_id(&occ.id, script.id, key);
            out.push(NewDelivery {
                payload: payload_for(&id),
                id,
                occurrence_id: occ.id.clone(),
                script_id: script.id,
                reaction: reaction.to_owned(),
                recipient,
                lane,
                target,
            });
        };
    let mut snoozed = false;
    for recipient in recipients_of(snap, script) {
        match gate.decide(snap, script.id, recipient.user(), occ.camera_id) {
            RecipientDecision::Delivers => {}
            RecipientDecision::SnoozedUntil(_) => {
                snoozed = true;
                continue;
            }
            RecipientDecision::UserDisabled => continue,
        }
        match recipient {
            Recipient::Chat { chat_id, bot_token } => {
                let hash = Sha256::digest(bot_token.expose().as_bytes());
                let lane = format!("tg:{}:{chat_id}", hex::encode(&hash[..8]));
                let text = message_text(
                    &script.title,
                    &event.description,
                    occ.camera_id,
                    &local_time(occ.occurred_at_utc(), tz),
                    data,
                );
                let target = Target::Telegram {
                    bot_token: bot_token.clone(),
                    chat_id: chat_id.to_owned(),
                    text,
                    photo_url: occ.snapshot_url.clone(),
                };
                push(chat_id.to_owned(), &chat_id, lane, target);
            }
            Recipient::Url(url) => {
                let target =
                    Target::Webhook { url: url.to_owned(), secret: script.extra.secret.clone() };
                push(url.to_owned(), &"webhook", String::new(), target);
            }
            Recipient::User(user) => {
                push(user.to_string(), &user, String::new(), Target::Push { user_id: user });
            }
        }
    }
    snoozed
}
