//! Decoding MQTT payloads into occurrences (CONTRACT §4).
//!
//! An *occurrence* is one analytics message: "event X happened on camera C at time T".
//! [`decode`] turns a payload into an [`Occurrence`] or a [`Rejected`] with a stable reason
//! code; [`is_stale`] applies `events.max_age_seconds`; [`RejectionLog`] counts rejections per
//! reason (metric `scriptd_occurrences_rejected_total{reason}`) and logs them at a bounded
//! rate, so a flood of bad payloads never floods the log.
//!
//! # Accepted payload
//!
//! A UTF-8 JSON object. Unknown keys are ignored. A key whose value is `null` counts as
//! missing.
//!
//! | key | accepted | when missing |
//! | --- | --- | --- |
//! | `id` | non-empty string of at most [`MAX_ID_LEN`] bytes without control characters, or a JSON integer (kept as its decimal text) | derived: `sha256:` + hex SHA-256 of the payload bytes |
//! | `event_id` | positive integer, or a string of decimal digits | `event` is used |
//! | `event` | non-empty string (the catalog's inner key name) | `missing_event` unless `event_id` is given |
//! | `camera_id` | positive integer, or a string of decimal digits | `missing_camera_id` |
//! | `occurred_at` | RFC 3339 string; its offset is kept | the time of receipt |
//! | `data` | a JSON object, passed through | `None` |
//! | `snapshot_url` | an absolute `http`/`https` URL of at most 2048 bytes, without whitespace or control characters | `None` |
//!
//! When both `event_id` and `event` are present, `event_id` wins and `event` is ignored.
//!
//! Numeric strings for `camera_id` and `event_id` are accepted because several VMS exports
//! serialise every identifier as a string; a string with anything but ASCII digits (signs,
//! spaces, decimals) is still rejected, so `"17"` and `17` are the same camera and `"17.0"`
//! is an error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest accepted `id`, in bytes.
pub const MAX_ID_LEN: usize = 200;

/// Longest accepted `snapshot_url`, in bytes.
pub const MAX_SNAPSHOT_URL_LEN: usize = 2048;

/// Prefix of an occurrence id derived from the payload bytes when the payload has none.
pub const DERIVED_ID_PREFIX: &str = "sha256:";

/// How an occurrence names its event: by catalog id or by inner key name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventRef {
    /// `event_id`: the catalog id.
    Id(i64),
    /// `event`: the catalog's inner key name (e.g. `face_recognized`).
    Name(String),
}

/// One decoded analytics message.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// The sender's id, or one derived from the payload bytes (see [`DERIVED_ID_PREFIX`]).
    pub id: String,
    /// The event, not yet resolved against the catalog.
    pub event: EventRef,
    /// The camera; always positive.
    pub camera_id: i64,
    /// When it happened, with the sender's offset (kept for the push payload).
    pub occurred_at: DateTime<FixedOffset>,
    /// Free-form data passed through to reactions (a JSON object).
    pub data: Option<Value>,
    /// A snapshot to show; becomes a Telegram `sendPhoto`.
    pub snapshot_url: Option<String>,
}

impl Occurrence {
    /// `occurred_at` in UTC, the instant the timetable is evaluated at.
    pub fn occurred_at_utc(&self) -> DateTime<Utc> {
        self.occurred_at.with_timezone(&Utc)
    }

    /// `occurred_at` exactly as it goes into the push payload: RFC 3339 with the sender's
    /// offset (`Z` stays `+00:00`), seconds precision unless the sender gave fractions.
    pub fn occurred_at_rfc3339(&self) -> String {
        self.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
    }
}

/// Why a payload was dropped. [`Reason::as_str`] is the stable code used in metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The payload is not UTF-8.
    NotUtf8,
    /// The payload is not JSON (syntax error, truncated, duplicate key).
    NotJson,
    /// The payload is JSON but not an object.
    NotObject,
    /// Neither `event_id` nor `event` is present.
    MissingEvent,
    /// `event_id` is not a positive integer.
    BadEventId,
    /// `event` is not a non-empty string.
    BadEvent,
    /// `camera_id` is missing.
    MissingCameraId,
    /// `camera_id` is not a positive integer.
    BadCameraId,
    /// `occurred_at` is not an RFC 3339 string.
    BadOccurredAt,
    /// `id` is not a usable string.
    BadId,
    /// `snapshot_url` is not an http(s) URL.
    BadSnapshotUrl,
    /// `data` is not an object.
    BadData,
    /// The event is not in the catalog (found by the matching stage, not by [`decode`]).
    UnknownEvent,
    /// The payload is larger than `events.max_payload_bytes` (checked before [`decode`]).
    TooLarge,
    /// Older than `events.max_age_seconds` when received (see [`is_stale`]).
    Stale,
}

impl Reason {
    /// Every reason, in a fixed order.
    pub const ALL: [Reason; 15] = [
        Reason::NotUtf8,
        Reason::NotJson,
        Reason::NotObject,
        Reason::MissingEvent,
        Reason::BadEventId,
        Reason::BadEvent,
        Reason::MissingCameraId,
        Reason::BadCameraId,
        Reason::BadOccurredAt,
        Reason::BadId,
        Reason::BadSnapshotUrl,
        Reason::BadData,
        Reason::UnknownEvent,
        Reason::TooLarge,
        Reason::Stale,
    ];

    /// The stable code, e.g. `bad_camera_id`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotUtf8 => "not_utf8",
            Reason::NotJson => "not_json",
            Reason::NotObject => "not_object",
            Reason::MissingEvent => "missing_event",
            Reason::BadEventId => "bad_event_id",
            Reason::BadEvent => "bad_event",
            Reason::MissingCameraId => "missing_camera_id",
            Reason::BadCameraId => "bad_camera_id",
            Reason::BadOccurredAt => "bad_occurred_at",
            Reason::BadId => "bad_id",
            Reason::BadSnapshotUrl => "bad_snapshot_url",
            Reason::BadData => "bad_data",
            Reason::UnknownEvent => "unknown_event",
            Reason::TooLarge => "too_large",
            Reason::Stale => "stale",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dropped payload: a stable [`Reason`] and a human message naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejected {
    /// The stable code.
    pub reason: Reason,
    /// What was wrong, naming the field (never the whole payload).
    pub message: String,
}

impl Rejected {
    /// A rejection with a reason and a message.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// The keys we read; everything else is skipped by serde without being materialised.
#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    event_id: Option<Value>,
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    camera_id: Option<Value>,
    #[serde(default)]
    occurred_at: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    snapshot_url: Option<Value>,
}

/// Decodes one payload received on `topic` at `now` (see the module documentation for the
/// rules). `topic` is only used in messages; the camera always comes from the payload.
pub fn decode(topic: &str, payload: &[u8], now: DateTime<Utc>) -> Result<Occurrence, Rejected> {
    let _ = topic;
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejected::new(
            Reason::NotUtf8,
            format!("payload is not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    if !text.trim_start().starts_with('{') {
        // serde would read a JSON array into `Raw` positionally: decide here instead.
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Rejected::new(Reason::NotObject, "payload must be a JSON object"),
            Err(e) => Rejected::new(Reason::NotJson, format!("payload is not valid JSON: {e}")),
        });
    }
    let raw: Raw = serde_json::from_str(text)
        .map_err(|e| Rejected::new(Reason::NotJson, format!("payload is not valid JSON: {e}")))?;

    let event = match (raw.event_id, raw.event) {
        (Some(v), _) => EventRef::Id(positive_id(&v).ok_or_else(|| {
            Rejected::new(
                Reason::BadEventId,
                format!("event_id must be a positive integer, got {}", describe(&v)),
            )
        })?),
        (None, Some(Value::String(name))) if !name.is_empty() && name.len() <= MAX_ID_LEN => {
            EventRef::Name(name)
        }
        (None, Some(v)) => {
            return Err(Rejected::new(
                Reason::BadEvent,
                format!("event must be a non-empty event name, got {}", describe(&v)),
            ));
        }
        (None, None) => {
            return Err(Rejected::new(Reason::MissingEvent, "event_id or event is required"));
        }
    };

    let camera_id = match raw.camera_id {
        None => return Err(Rejected::new(Reason::MissingCameraId, "camera_id is required")),
        Some(v) => positive_id(&v).ok_or_else(|| {
            Rejected::new(
                Reason::BadCameraId,
                format!("camera_id must be a positive integer, got {}", describe(&v)),
            )
        })?,
    };

    let occurred_at = match raw.occurred_at {
        None => now.fixed_offset(),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s).map_err(|e| {
            Rejected::new(
                Reason::BadOccurredAt,
                format!("occurred_at must be an RFC 3339 date-time ({e}), got {}", clip(&s)),
            )
        })?,
        Some(v) => {
            return Err(Rejected::new(
                Reason::BadOccurredAt,
                format!("occurred_at must be an RFC 3339 string, got {}", describe(&v)),
            ));
        }
    };

    let data = match raw.data {
        None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(v) => {
            return Err(Rejected::new(
                Reason::BadData,
                format!("data must be an object, got {}", describe(&v)),
            ));
        }
    };

    let snapshot_url = match raw.snapshot_url {
        None => None,
        Some(Value::String(s)) if is_http_url(&s) => Some(s),
        Some(v) => {
            return Err(Rejected::new(
                Reason::BadSnapshotUrl,
                format!("snapshot_url must be an http(s) URL, got {}", describe(&v)),
            ));
        }
    };

    let id = match raw.id {
        None => derived_id(payload),
        Some(Value::String(s)) if is_good_id(&s) => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(v) => {
            return Err(Rejected::new(
                Reason::BadId,
                format!(
                    "id must be a non-empty string of at most {MAX_ID_LEN} bytes, got {}",
                    describe(&v)
                ),
            ));
        }
    };

    Ok(Occurrence { id, event, camera_id, occurred_at, data, snapshot_url })
}

/// True when `occurrence` happened more than `max_age_seconds` before `now`. `0` means
/// never stale; an occurrence in the future (clock skew) is never stale.
pub fn is_stale(occurrence: &Occurrence, now: DateTime<Utc>, max_age_seconds: u64) -> bool {
    if max_age_seconds == 0 {
        return false;
    }
    let age = now.signed_duration_since(occurrence.occurred_at);
    age.num_milliseconds() > (max_age_seconds as i64).saturating_mul(1000)
}

/// The id of an occurrence whose payload has none: `sha256:` + hex of the payload bytes, so
/// a redelivery of the same bytes gets the same id.
pub fn derived_id(payload: &[u8]) -> String {
    let digest = Sha256::digest(payload);
    let mut id = String::with_capacity(DERIVED_ID_PREFIX.len() + 64);
    id.push_str(DERIVED_ID_PREFIX);
    id.push_str(&hex::encode(digest));
    id
}

/// A positive i64 from a JSON integer or a string of ASCII digits.
fn positive_id(v: &Value) -> Option<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().ok()?
        }
        _ => return None,
    };
    (n > 0).then_some(n)
}

fn is_good_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)
}

/// An absolute `http`/`https` URL with a host, written without whitespace or control
/// characters. The URL parser forgives surrounding spaces and drops tabs and newlines
/// inside, but the string is passed on as written (push payload, Telegram `sendPhoto`), so
/// those are refused here rather than forwarded.
fn is_http_url(s: &str) -> bool {
    if s.len() > MAX_SNAPSHOT_URL_LEN || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    match reqwest::Url::parse(s) {
        Ok(u) => (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some(),
        Err(_) => false,
    }
}

/// A short description of a JSON value for messages: its type, and its text when short.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {:?}", clip(s)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn clip(s: &str) -> &str {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Counts rejected payloads per reason and logs them at a bounded rate.
///
/// Every call to [`RejectionLog::record`] increments
/// `scriptd_occurrences_rejected_total{reason}`. A `warn` line is written at most once per
/// reason per `interval`; it carries the reason, the topic, the message of the rejection
/// that triggered it and how many of that reason were suppressed since the previous line.
#[derive(Debug)]
pub struct RejectionLog {
    interval: Duration,
    slots: Mutex<[Slot; Reason::ALL.len()]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    last_logged: Option<Instant>,
    suppressed: u64,
    counted: u64,
}

impl Default for RejectionLog {
    /// At most one line per reason per 10 seconds.
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl RejectionLog {
    /// A logger writing at most one line per reason per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, slots: Mutex::new([Slot::default(); Reason::ALL.len()]) }
    }

    /// Counts `rejected` and logs it unless that reason was logged within the interval.
    pub fn record(&self, topic: &str, rejected: &Rejected) {
        self.record_at(topic, rejected, Instant::now());
    }

    /// [`RejectionLog::record`] at a given instant. Returns `Some(suppressed)` when a line
    /// was written (`suppressed` = rejections of that reason skipped since the last line),
    /// `None` when this one was suppressed.
    pub fn record_at(&self, topic: &str, rejected: &Rejected, now: Instant) -> Option<u64> {
        metrics::counter!("scriptd_occurrences_rejected_total", "reason" => rejected.reason.as_str())
            .increment(1);
        let suppressed = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let slot = &mut slots[rejected.reason.index()];
            slot.counted += 1;
            let due = slot.last_logged.is_none_or(|t| now.duration_since(t) >= self.interval);
            if !due {
                slot.suppressed += 1;
                return None;
            }
            slot.last_logged = Some(now);
            std::mem::take(&mut slot.suppressed)
        };
        tracing::warn!(
            reason = rejected.reason.as_str(),
            topic,
            suppressed,
            "occurrence dropped: {}",
            rejected.message
        );
        Some(suppressed)
    }

    /// Rejections recorded since this log was made, per reason (logged or not; the same
    /// count `scriptd_occurrences_rejected_total` adds to, for tests and diagnostics).
    pub fn counted(&self) -> HashMap<Reason, u64> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Reason::ALL.iter().map(|r| (*r, slots[r.index()].counted)).collect()
    }

    /// Rejections suppressed since the last line, per reason (for tests and diagnostics).
    pub fn suppressed(&self) -> HashMap<Reason, u64> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Reason::ALL.iter().map(|r| (*r, slots[r.index()].suppressed)).collect()
    }
}

#[cfg(test)]
mod tests;
