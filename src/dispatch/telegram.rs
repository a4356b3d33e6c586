//! Telegram deliveries through the Bot API (teloxide), rate-limited per bot token and chat.
//!
//! # One bot per token
//!
//! Scripts carry their own `extra.bot_token`. [`TelegramSender`] keeps one teloxide `Bot`
//! per token (all sharing one reqwest client with a request timeout) and one rate budget
//! per token, shared by every script that uses it:
//!
//! - at most `per_token_per_second` messages per second per token (Telegram: ~30/s),
//! - at least `per_chat_interval` between two messages to one chat (Telegram: ~1/s),
//! - at most `per_chat_per_minute` messages in any minute to one chat, and at most
//!   `per_group_per_minute` to one group (chat ids starting with `-`; Telegram: 20/min).
//!
//! The limiter reserves the earliest slot that satisfies all of them and sleeps until then
//! (tokio timers, no polling). A slot further away than `max_wait` is not waited for: the
//! send returns [`SendError::NotYet`] with `after` (no request made), so an outbox worker is never held for
//! a minute by a busy group. teloxide's `Throttle` adaptor is not used: it retries 429s
//! forever and hides the wait from the caller.
//!
//! # Order
//!
//! Messages to one chat leave in the order of the calls, as long as the caller has at most
//! one send per chat in flight (the outbox sends one message per chat at a time). The
//! limiter itself is first come, first served.
//!
//! # Errors
//!
//! | Bot API answer | result |
//! | --- | --- |
//! | 429 `retry_after: n` | `Retryable { after: n s }`; the chat's next slot moves to now + n |
//! | network error, timeout (`request_timeout`) | `Retryable`, `no_answer` (counts towards the bot's circuit breaker) |
//! | 5xx, unparsable answer | `Retryable` |
//! | 400 (chat not found, ...), 403 (blocked, kicked) | `Permanent` |
//! | 401 / bad token | `Permanent`; the token is then refused without a request for `bad_token_hold` |
//! | group migrated to a supergroup | `Permanent`, naming the new chat id |
//!
//! When Telegram refuses the snapshot of a `sendPhoto` (cannot fetch the URL, not an
//! image, ...), the text is sent with `sendMessage` instead, followed by the snapshot link,
//! so the operator still gets the alert.
//!
//! Error texts never contain the token (it is part of the request URL): every message is
//! passed through a mask before it leaves this module.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use teloxide::payloads::SendPhotoSetters;
use teloxide::prelude::Requester;
use teloxide::types::{ChatId, InputFile, Recipient};
use teloxide::{ApiError, Bot, RequestError};
use tokio::time::Instant;

use super::{SendError, error_chain, mask};
use crate::secret::Secret;
use crate::settings::TelegramSettings;

/// Longest text of a `sendMessage` (Telegram's limit, in characters).
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest caption of a `sendPhoto` (Telegram's limit, in characters).
pub const MAX_CAPTION_CHARS: usize = 1024;

/// The rate budget of one bot token and the related waits.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Messages per second per token.
    pub per_token_per_second: u32,
    /// Least time between two messages to one chat.
    pub per_chat_interval: Duration,
    /// Messages in any minute to one chat.
    pub per_chat_per_minute: u32,
    /// Messages per minute to one group chat (id starting with `-`).
    pub per_group_per_minute: u32,
    /// The longest the limiter waits inside `send`; beyond it, `NotYet { after }`.
    pub max_wait: Duration,
    /// How long a token Telegram rejected (401) is refused without asking again.
    pub bad_token_hold: Duration,
}

impl Default for RateLimits {
    /// Telegram's published limits: 30/s per token, 1/s per chat (so 60/min), 20/min per
    /// group; waits up to 5 s; a rejected token rests for 5 minutes.
    fn default() -> Self {
        Self {
            per_token_per_second: 30,
            per_chat_interval: Duration::from_secs(1),
            per_chat_per_minute: 60,
            per_group_per_minute: 20,
            max_wait: Duration::from_secs(5),
            bad_token_hold: Duration::from_secs(300),
        }
    }
}

/// Sends Telegram messages; share one per process (behind an `Arc`). Its `Debug` shows no
/// token.
pub struct TelegramSender {
    api_url: reqwest::Url,
    client: reqwest::Client,
    request_timeout: Duration,
    limits: RateLimits,
    bots: Mutex<HashMap<String, BotState>>,
}

impl std::fmt::Debug for TelegramSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bots = self.bots.lock().map(|b| b.len()).unwrap_or_default();
        f.debug_struct("TelegramSender")
            .field("api_url", &self.api_url.as_str())
            .field("request_timeout", &self.request_timeout)
            .field("limits", &self.limits)
            .field("bots", &bots)
            .finish()
    }
}

struct BotState {
    bot: Bot,
    bad_until: Option<Instant>,
    /// Reserved slots of this token, sorted, from one gap ago on.
    token_slots: VecDeque<Instant>,
    chats: HashMap<String, ChatState>,
}

impl std::fmt::Debug for BotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotState").field("chats", &self.chats.len()).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct ChatState {
    next: Option<Instant>,
    /// Group chats: the reserved slots of the last minute.
    window: VecDeque<Instant>,
}

/// How many chats per token are kept before idle ones are forgotten.
const CHAT_STATE_SWEEP: usize = 10_000;

impl TelegramSender {
    /// A sender for the Bot API at `api_url` (e.g. `https://api.telegram.org`; a trailing
    /// `/` is ignored) whose every request is bounded by `request_timeout`.
    pub fn new(
        api_url: &str,
        request_timeout: Duration,
        limits: RateLimits,
    ) -> Result<Self, SendError> {
        let api_url = reqwest::Url::parse(api_url.trim_end_matches('/'))
            .map_err(|e| SendError::permanent(format!("invalid telegram.api_url: {e}")))?;
        if api_url.cannot_be_a_base() {
            return Err(SendError::permanent("invalid telegram.api_url: not a base URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| SendError::permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { api_url, client, request_timeout, limits, bots: Mutex::new(HashMap::new()) })
    }

    /// Sends `text` to `chat_id` with `bot_token`; with `photo_url`, a `sendPhoto` with
    /// `text` as caption. One attempt, after waiting for the rate budget (see the module
    /// documentation). `chat_id` is a numeric id (`-100…` for supergroups) or `@channel`.
    pub async fn send(
        &self,
        bot_token: &Secret,
        chat_id: &str,
        text: &str,
        photo_url: Option<&str>,
    ) -> Result<(), SendError> {
        let token = bot_token.expose();
        if token.is_empty() {
            return Err(SendError::permanent("telegram bot token is empty"));
        }
        let recipient = recipient(chat_id)?;
        let photo = match photo_url {
            None => None,
            Some(u) => Some(
                reqwest::Url::parse(u)
                    .map_err(|e| SendError::permanent(format!("invalid snapshot url: {e}")))?,
            ),
        };

        let result = self.attempt(token, chat_id, &recipient, text, photo.clone()).await?;
        let result = match (result, photo) {
            (Err(RequestError::Api(api)), Some(url)) if photo_failed(&api) => {
                // Telegram could not fetch or use the snapshot: the text still matters.
                tracing::warn!(chat_id, error = %api, "snapshot refused by Telegram; sending the text with the link");
                let text = format!("{text}\n{url}");
                self.attempt(token, chat_id, &recipient, &text, None).await?
            }
            (result, _) => result,
        };
        result.map_err(|e| self.on_error(token, chat_id, e))
    }

    /// One request after waiting for the rate budget; `Err` only for a timeout or a wait
    /// longer than `max_wait`.
    async fn attempt(
        &self,
        token: &str,
        chat_id: &str,
        recipient: &Recipient,
        text: &str,
        photo: Option<reqwest::Url>,
    ) -> Result<Result<(), RequestError>, SendError> {
        let (bot, at) = self.reserve(token, chat_id, Instant::now())?;
        tokio::time::sleep_until(at).await;
        let recipient = recipient.clone();
        let request = async {
            match photo {
                Some(url) => bot
                    .send_photo(recipient, InputFile::url(url))
                    .caption(clip_chars(text, MAX_CAPTION_CHARS))
                    .await
                    .map(drop),
                None => {
                    bot.send_message(recipient, clip_chars(text, MAX_TEXT_CHARS)).await.map(drop)
                }
            }
        };
        tokio::time::timeout(self.request_timeout, request).await.map_err(|_| {
            SendError::no_answer(format!(
                "Telegram did not answer within {:?}",
                self.request_timeout
            ))
        })
    }

    /// Reserves the earliest slot for one message, or explains why not now.
    fn reserve(
        &self,
        token: &str,
        chat_id: &str,
        now: Instant,
    ) -> Result<(Bot, Instant), SendError> {
        let limits = &self.limits;
        let mut bots = self.bots.lock().unwrap_or_else(|p| p.into_inner());
        let state = bots.entry(token.to_owned()).or_insert_with(|| BotState {
            bot: Bot::with_client(token, self.client.clone()).set_api_url(self.api_url.clone()),
            bad_until: None,
            token_slots: VecDeque::new(),
            chats: HashMap::new(),
        });
        if let Some(until) = state.bad_until {
            if until > now {
                return Err(SendError::permanent(
                    "Telegram rejected this bot token (401 Unauthorized); not retried for a while",
                ));
            }
            state.bad_until = None;
        }
        if state.chats.len() >= CHAT_STATE_SWEEP {
            let minute = Duration::from_secs(60);
            state.chats.retain(|_, c| {
                c.next.is_some_and(|n| n > now)
                    || c.window.back().is_some_and(|t| *t + minute > now)
            });
        }
        let group = chat_id.starts_with('-');
        let chat = state.chats.entry(chat_id.to_owned()).or_default();

        let mut at = now;
        if let Some(next) = chat.next {
            at = at.max(next);
        }
        let mut per_minute = limits.per_chat_per_minute.max(1);
        if group {
            per_minute = per_minute.min(limits.per_group_per_minute.max(1));
        }
        let per_minute = per_minute as usize;
        while chat.window.front().is_some_and(|t| *t + Duration::from_secs(60) <= now) {
            chat.window.pop_front();
        }
        if chat.window.len() >= per_minute {
            let idx = chat.window.len() - per_minute;
            at = at.max(chat.window[idx] + Duration::from_secs(60));
        }
        // Per token: slots at least 1/rate apart (stricter than "rate per second", simple to
        // keep exact when slots are reserved out of order by different chats).
        let gap = Duration::from_secs(1) / limits.per_token_per_second.max(1);
        while state.token_slots.front().is_some_and(|t| *t + gap <= now) {
            state.token_slots.pop_front();
        }
        for slot in &state.token_slots {
            if at + gap <= *slot {
                break;
            }
            if at < *slot + gap {
                at = *slot + gap;
            }
        }
        if at.duration_since(now) > limits.max_wait {
            return Err(SendError::not_yet(
                "Telegram rate limit of this bot or chat reached",
                at.duration_since(now),
            ));
        }
        let pos = state.token_slots.partition_point(|t| *t <= at);
        state.token_slots.insert(pos, at);
        chat.next = Some(at + limits.per_chat_interval);
        let pos = chat.window.partition_point(|t| *t <= at);
        chat.window.insert(pos, at);
        Ok((state.bot.clone(), at))
    }

    fn on_error(&self, token: &str, chat_id: &str, e: RequestError) -> SendError {
        match e {
            RequestError::RetryAfter(secs) => {
                let after = secs.duration();
                let mut bots = self.bots.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(chat) = bots.get_mut(token).and_then(|b| b.chats.get_mut(chat_id)) {
                    chat.next = Some(Instant::now() + after);
                }
                SendError::retry_after(
                    format!("Telegram 429: retry after {}s", secs.seconds()),
                    after,
                )
            }
            RequestError::Api(ApiError::InvalidToken) => {
                let mut bots = self.bots.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(b) = bots.get_mut(token) {
                    b.bad_until = Some(Instant::now() + self.limits.bad_token_hold);
                }
                tracing::warn!(
                    chat_id,
                    "Telegram rejected a bot token; its messages fail until it is fixed"
                );
                SendError::permanent("Telegram rejected the bot token (401 Unauthorized)")
            }
            RequestError::Api(ApiError::Unknown(description)) if is_server_error(&description) => {
                SendError::retryable(format!(
                    "Telegram server error: {}",
                    mask(&description, token)
                ))
            }
            RequestError::Api(api) => {
                SendError::permanent(format!("Telegram refused: {}", mask(&api.to_string(), token)))
            }
            RequestError::MigrateToChatId(new_id) => SendError::permanent(format!(
                "the group was migrated to a supergroup; use chat_id {new_id}"
            )),
            RequestError::Network(err) => SendError::no_answer(format!(
                "Telegram request failed: {}",
                error_chain(&*err, token)
            )),
            RequestError::InvalidJson { source, .. } => SendError::retryable(format!(
                "Telegram answered something that is not a Bot API response: {}",
                mask(&source.to_string(), token)
            )),
            RequestError::Io(err) => SendError::retryable(format!(
                "Telegram I/O error: {}",
                mask(&err.to_string(), token)
            )),
        }
    }
}

fn recipient(chat_id: &str) -> Result<Recipient, SendError> {
    let chat_id = chat_id.trim();
    if let Ok(id) = chat_id.parse::<i64>() {
        return Ok(Recipient::Id(ChatId(id)));
    }
    if chat_id.len() > 1 && chat_id.starts_with('@') {
        return Ok(Recipient::ChannelUsername(chat_id.to_owned()));
    }
    Err(SendError::permanent(format!(
        "telegram chat_id must be a number or @channel, got {chat_id:?}"
    )))
}

/// Errors about the snapshot itself, after which the text is sent without it.
fn photo_failed(api: &ApiError) -> bool {
    match api {
        ApiError::WrongFileIdOrUrl
        | ApiError::FailedToGetUrlContent
        | ApiError::ImageProcessFailed
        | ApiError::PhotoAsInputFileRequired
        | ApiError::CantParseUrl
        | ApiError::WrongHttpUrl => true,
        ApiError::Unknown(d) => {
            let d = d.to_ascii_lowercase();
            d.starts_with("bad request")
                && ["url", "content", "photo", "image", "file"].iter().any(|w| d.contains(w))
        }
        _ => false,
    }
}

fn is_server_error(description: &str) -> bool {
    let d = description.to_ascii_lowercase();
    ["internal server error", "bad gateway", "service unavailable", "gateway timeout"]
        .iter()
        .any(|s| d.contains(s))
}

fn clip_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => {
            let mut s = text[..end].to_owned();
            s.pop();
            s.push('…');
            s
        }
    }
}

/// The dispatcher's Telegram sender, built from `[telegram]` and rebuilt when a reload
/// changes it (its rate limiters start afresh then).
#[derive(Default)]
pub(super) struct SenderCache {
    current: Option<(TelegramSettings, Result<Arc<TelegramSender>, SendError>)>,
}

impl SenderCache {
    /// The sender for `wanted`; an error (logged once per build) when it cannot be built.
    pub(super) fn get(
        &mut self,
        wanted: &TelegramSettings,
    ) -> Result<Arc<TelegramSender>, SendError> {
        if self.current.as_ref().is_none_or(|(s, _)| s != wanted) {
            let limits = RateLimits {
                per_token_per_second: wanted.per_token_per_second.max(1),
                per_chat_interval: Duration::from_secs(1) / wanted.per_chat_per_second.max(1),
                per_chat_per_minute: wanted.per_chat_per_minute.max(1),
                per_group_per_minute: wanted.per_group_per_minute.max(1),
                ..RateLimits::default()
            };
            let sender = TelegramSender::new(&wanted.api_url, wanted.request_timeout(), limits)
                .map(Arc::new);
            if let Err(e) = &sender {
                tracing::error!(error = %e, "cannot build the Telegram sender; Telegram deliveries wait");
            }
            self.current = Some((wanted.clone(), sender));
        }
        match &self.current {
            Some((_, Ok(s))) => Ok(s.clone()),
            Some((_, Err(e))) => {
                Err(SendError::retryable(format!("Telegram sender unavailable: {}", e.reason())))
            }
            None => Err(SendError::retryable("Telegram sender unavailable")),
        }
    }
}

#[cfg(test)]
mod tests;
