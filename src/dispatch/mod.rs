//! Delivery channels: one module per way a reaction leaves the daemon.
//!
//! - [`mqtt_push`]: QoS 1 publish to `{push_topic_prefix}/{user_id}/reactions`.
//! - [`telegram`]: Bot API `sendMessage` / `sendPhoto`, rate-limited per token and chat.
//! - [`webhook`]: HMAC-signed HTTP POST.
//!
//! Every sender answers one attempt with `Ok(())` or a [`SendError`] that tells the outbox
//! what to do next: try again later ([`SendError::Retryable`], optionally not before
//! `after`), wait without counting an attempt ([`SendError::NotYet`]), or give up and record the reason ([`SendError::Permanent`]). Retrying,
//! backoff and ordering across attempts belong to the outbox, not to the senders.
//!
//! [`push_payload`] builds the JSON object of CONTRACT §5 that MQTT pushes, the SSE stream
//! and webhooks carry.

mod attempt;
pub mod bulkhead;
pub mod mqtt_push;
pub mod telegram;
pub mod webhook;
pub mod worker;

use std::time::Duration;

use serde_json::{Value, json};

/// The outcome of one failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A transient failure (network, timeout, HTTP 5xx, Telegram 429): try again, not
    /// before `after` when the peer said so.
    #[error("retryable: {reason}")]
    Retryable {
        /// What went wrong, without secrets.
        reason: String,
        /// The peer's requested wait (Telegram `retry_after`, HTTP `Retry-After`).
        after: Option<Duration>,
        /// The peer did not answer at all (timeout, connection failure): counts towards
        /// the target's circuit breaker (see [`worker`]); an answer such as a 5xx does not.
        no_answer: bool,
    },
    /// Not attempted: a local rate limit (the Telegram limiter) has no slot for this
    /// delivery before `after`. No request was made, so it is not counted as an attempt.
    #[error("not yet: {reason}")]
    NotYet {
        /// Which limit, without secrets.
        reason: String,
        /// When the limit allows the delivery.
        after: Duration,
    },
    /// A failure that repeating cannot fix (Telegram 400/401/403, HTTP 4xx): mark failed.
    #[error("permanent: {reason}")]
    Permanent {
        /// What went wrong, without secrets.
        reason: String,
    },
}

impl SendError {
    /// A retryable error without a requested wait.
    pub fn retryable(reason: impl Into<String>) -> Self {
        SendError::Retryable { reason: reason.into(), after: None, no_answer: false }
    }

    /// A retryable error with the peer's requested wait.
    pub fn retry_after(reason: impl Into<String>, after: Duration) -> Self {
        SendError::Retryable { reason: reason.into(), after: Some(after), no_answer: false }
    }

    /// A retryable error because the peer did not answer (timeout, connection failure).
    pub fn no_answer(reason: impl Into<String>) -> Self {
        SendError::Retryable { reason: reason.into(), after: None, no_answer: true }
    }

    /// A local rate limit's "not before `after`"; see [`SendError::NotYet`].
    pub fn not_yet(reason: impl Into<String>, after: Duration) -> Self {
        SendError::NotYet { reason: reason.into(), after }
    }

    /// A permanent error.
    pub fn permanent(reason: impl Into<String>) -> Self {
        SendError::Permanent { reason: reason.into() }
    }

    /// True for [`SendError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable { .. })
    }

    /// The reason text of either variant.
    pub fn reason(&self) -> &str {
        match self {
            SendError::Retryable { reason, .. }
            | SendError::NotYet { reason, .. }
            | SendError::Permanent { reason } => reason,
        }
    }
}

/// The parts of a push payload (CONTRACT §5), borrowed from the outbox row.
#[derive(Debug, Clone, Copy)]
pub struct PushParts<'a> {
    /// Reaction key, e.g. `show-camera-sidebar`.
    pub reaction: &'a str,
    /// Stable per occurrence × script × recipient; see [`delivery_id`].
    pub delivery_id: &'a str,
    /// Script id.
    pub script_id: i64,
    /// Script title.
    pub script_title: &'a str,
    /// Event catalog id.
    pub event_id: i64,
    /// Event inner key name.
    pub event_name: &'a str,
    /// Event description (human name).
    pub event_description: &'a str,
    /// Event color, e.g. `#07D4F0`.
    pub event_color: &'a str,
    /// The occurrence id.
    pub occurrence_id: &'a str,
    /// The camera.
    pub camera_id: i64,
    /// `occurred_at` as received: RFC 3339 with the sender's offset.
    pub occurred_at: &'a str,
    /// The occurrence's `data`, passed through (`None` when it had none or when it was
    /// larger than [`MAX_PUSH_DATA_BYTES`]; see [`bounded_data`]).
    pub data: Option<&'a Value>,
    /// True when the occurrence's `data` was left out for its size: the push then carries
    /// `"data": null, "data_truncated": true`.
    pub data_truncated: bool,
    /// The occurrence's `snapshot_url`, passed through.
    pub snapshot_url: Option<&'a str>,
}

/// Most bytes of an occurrence's `data` (as JSON) a push, a webhook body or the reaction
/// stream carries (64 KiB). Larger `data` is left out of every delivery (the occurrence
/// still fires): one analytics message with an embedded image must not be copied into
/// every push to every recipient.
pub const MAX_PUSH_DATA_BYTES: usize = 64 * 1024;

/// `data` if its JSON is at most [`MAX_PUSH_DATA_BYTES`], and whether it was left out.
/// `payload_len` (the whole occurrence's size) bounds the JSON's size, so the common small
/// occurrence is not serialized to find out.
pub fn bounded_data(data: Option<&Value>, payload_len: usize) -> (Option<&Value>, bool) {
    match data {
        None => (None, false),
        Some(d) if payload_len <= MAX_PUSH_DATA_BYTES => (Some(d), false),
        Some(d) => {
            let mut counter = ByteCounter(0);
            let fits =
                serde_json::to_writer(&mut counter, d).is_ok() && counter.0 <= MAX_PUSH_DATA_BYTES;
            if fits { (Some(d), false) } else { (None, true) }
        }
    }
}

/// Counts the bytes written to it (the JSON size without building the text).
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The push payload of CONTRACT §5. `data` and `snapshot_url` are always present, `null`
/// when the occurrence had none, so clients see one shape.
pub fn push_payload(p: &PushParts<'_>) -> Value {
    let mut v = json!({
        "reaction": p.reaction,
        "delivery_id": p.delivery_id,
        "script": {"id": p.script_id, "title": p.script_title},
        "event": {
            "id": p.event_id,
            "name": p.event_name,
            "description": p.event_description,
            "color": p.event_color,
        },
        "occurrence_id": p.occurrence_id,
        "camera_id": p.camera_id,
        "occurred_at": p.occurred_at,
        "data": p.data,
        "snapshot_url": p.snapshot_url,
    });
    if p.data_truncated {
        v["data_truncated"] = Value::Bool(true);
    }
    v
}

/// The delivery id of CONTRACT §5: `{occurrence_id}:{script_id}:{recipient}`, where the
/// recipient is the user id (pushes) or another stable per-recipient key.
pub fn delivery_id(
    occurrence_id: &str,
    script_id: i64,
    recipient: impl std::fmt::Display,
) -> String {
    format!("{occurrence_id}:{script_id}:{recipient}")
}

/// Replaces every occurrence of `secret` in `text` with [`crate::secret::MASK`]; used on
/// error messages of HTTP clients that embed the request URL (the Telegram token is part of
/// the path).
pub(crate) fn mask(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, crate::secret::MASK)
}

/// An error and its sources as one line, each part masked with [`mask`].
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static), secret: &str) -> String {
    let mut out = mask(&e.to_string(), secret);
    let mut source = e.source();
    while let Some(s) = source {
        let part = mask(&s.to_string(), secret);
        if !out.contains(&part) {
            out.push_str(": ");
            out.push_str(&part);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_payload_matches_the_contract_example() {
        let data = json!({"plate": "A123BC"});
        let v = push_payload(&PushParts {
            reaction: "show-camera-sidebar",
            delivery_id: "7f1d2c9e-...:1:42",
            script_id: 1,
            script_title: "script",
            event_id: 1,
            event_name: "inner_key_name",
            event_description: "Event name",
            event_color: "#07D4F0",
            occurrence_id: "7f1d2c9e-...",
            camera_id: 17,
            occurred_at: "2026-11-27T16:30:05+05:00",
            data: Some(&data),
            data_truncated: false,
            snapshot_url: Some("https://vms.local/snapshots/abc.jpg"),
        });
        let expected: Value = serde_json::from_str(
            r##"{
              "reaction": "show-camera-sidebar",
              "delivery_id": "7f1d2c9e-...:1:42",
              "script": {"id": 1, "title": "script"},
              "event": {"id": 1, "name": "inner_key_name", "description": "Event name", "color": "#07D4F0"},
              "occurrence_id": "7f1d2c9e-...",
              "camera_id": 17,
              "occurred_at": "2026-11-27T16:30:05+05:00",
              "data": {"plate": "A123BC"},
              "snapshot_url": "https://vms.local/snapshots/abc.jpg"
            }"##,
        )
        .unwrap();
        assert_eq!(v, expected);
        assert_eq!(delivery_id("7f1d2c9e-...", 1, 42), "7f1d2c9e-...:1:42");
    }

    /// A push of a `sound` script without data or snapshot.
    fn bare_parts(data_truncated: bool) -> PushParts<'static> {
        PushParts {
            reaction: "sound",
            delivery_id: "o:1:2",
            script_id: 1,
            script_title: "t",
            event_id: 1,
            event_name: "n",
            event_description: "d",
            event_color: "#000000",
            occurrence_id: "o",
            camera_id: 3,
            occurred_at: "2026-11-27T11:30:05+00:00",
            data: None,
            data_truncated,
            snapshot_url: None,
        }
    }

    #[test]
    fn absent_data_and_snapshot_are_null() {
        let v = push_payload(&bare_parts(false));
        assert_eq!(v["data"], Value::Null);
        assert_eq!(v["snapshot_url"], Value::Null);
        assert!(v.get("data_truncated").is_none(), "the flag appears only when set");
    }

    #[test]
    fn data_over_the_bound_is_left_out_with_a_flag() {
        let small = json!({"plate": "A123BC"});
        assert_eq!(bounded_data(Some(&small), 100), (Some(&small), false));
        assert_eq!(bounded_data(None, 10_000_000), (None, false));
        // A large payload whose data is small (e.g. a long snapshot URL) keeps its data.
        assert_eq!(bounded_data(Some(&small), 10_000_000), (Some(&small), false));
        let exact = json!("x".repeat(MAX_PUSH_DATA_BYTES - 2)); // 2 quotes: exactly 64 KiB
        assert_eq!(bounded_data(Some(&exact), 10_000_000), (Some(&exact), false));
        let big = json!({"image": "x".repeat(MAX_PUSH_DATA_BYTES)});
        assert_eq!(bounded_data(Some(&big), 10_000_000), (None, true));
        let v = push_payload(&bare_parts(true));
        assert_eq!((&v["data"], &v["data_truncated"]), (&Value::Null, &Value::Bool(true)));
    }

    #[test]
    fn mask_hides_the_secret() {
        let m = mask("error sending request for url (http://x/bot123:ABC/SendMessage)", "123:ABC");
        assert!(!m.contains("123:ABC"));
        assert!(m.contains(crate::secret::MASK));
        assert_eq!(mask("abc", ""), "abc");
    }
}
