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
//! [`crate::delivery::push_payload`] builds the JSON object of CONTRACT §5 that MQTT pushes, the SSE stream
//! and webhooks carry.

mod attempt;
pub mod bulkhead;
mod db_link;
mod group;
mod handle;
pub mod hub;
mod in_flight;
mod link;
pub mod mqtt_push;
pub mod push_feed;
pub mod telegram;
mod upkeep;
pub mod webhook;
pub mod worker;

use std::time::Duration;

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
    fn mask_hides_the_secret() {
        let m = mask("error sending request for url (http://x/bot123:ABC/SendMessage)", "123:ABC");
        assert!(!m.contains("123:ABC"));
        assert!(m.contains(crate::secret::MASK));
        assert_eq!(mask("abc", ""), "abc");
    }
}
