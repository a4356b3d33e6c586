//! What a delivery carries, shared by the intake (which plans deliveries) and the
//! dispatchers (which send them), below both: the kind of each reaction, delivery ids,
//! the push payload of CONTRACT §5 and the Telegram message texts.

use serde::Serialize;
use serde_json::Value;

/// How a reaction is delivered; resolved once from the catalog's `name`
/// ([`ReactionKind::of`]) so no other module matches reaction names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReactionKind {
    /// `show-camera-sidebar`, `show-camera`, `sound`: an MQTT push to the client apps of the
    /// script's users and of every sub-user below them.
    Client,
    /// `telegram-message`: a message to the script's chat.
    Telegram,
    /// `webhook`: a signed POST to the script's URL.
    Webhook,
    /// Any other catalog entry (operators may add reactions): a push to the script's users
    /// only, which their client apps interpret.
    Other,
}

/// The catalog names of the reactions with a built-in meaning.
pub const TELEGRAM: &str = "telegram-message";
/// See [`TELEGRAM`].
pub const WEBHOOK: &str = "webhook";
/// The client-side reactions (pushes to users and their sub-users).
pub const CLIENT_REACTIONS: [&str; 3] = ["show-camera-sidebar", "show-camera", "sound"];

impl ReactionKind {
    /// The kind of the catalog reaction named `name`.
    pub fn of(name: &str) -> ReactionKind {
        match name {
            TELEGRAM => ReactionKind::Telegram,
            WEBHOOK => ReactionKind::Webhook,
            n if CLIENT_REACTIONS.contains(&n) => ReactionKind::Client,
            _ => ReactionKind::Other,
        }
    }

    /// Delivered as an MQTT push (and on the reaction stream).
    pub fn is_push(self) -> bool {
        matches!(self, ReactionKind::Client | ReactionKind::Other)
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

/// The push payload of CONTRACT §5 as compact JSON. `data` and `snapshot_url` are always
/// present, `null` when the occurrence had none, so clients see one shape.
///
/// Written straight from the parts, without building a [`Value`] first (that tree, a copy of
/// `data` in it, and freeing it were two thirds of planning a push). The keys come in the
/// order a [`Value`] prints them (sorted), so the bytes are the same as before.
pub fn push_payload(p: &PushParts<'_>) -> String {
    let json = PushJson {
        camera_id: p.camera_id,
        data: p.data,
        data_truncated: p.data_truncated,
        delivery_id: p.delivery_id,
        event: EventJson {
            color: p.event_color,
            description: p.event_description,
            id: p.event_id,
            name: p.event_name,
        },
        occurred_at: p.occurred_at,
        occurrence_id: p.occurrence_id,
        reaction: p.reaction,
        script: ScriptJson { id: p.script_id, title: p.script_title },
        snapshot_url: p.snapshot_url,
    };
    // Strings, integers and an already valid `Value`: serializing cannot fail.
    serde_json::to_string(&json).unwrap_or_default()
}

/// [`push_payload`]'s fields, keys sorted.
#[derive(Serialize)]
struct PushJson<'a> {
    camera_id: i64,
    data: Option<&'a Value>,
    /// Present only when set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    data_truncated: bool,
    delivery_id: &'a str,
    event: EventJson<'a>,
    occurred_at: &'a str,
    occurrence_id: &'a str,
    reaction: &'a str,
    script: ScriptJson<'a>,
    snapshot_url: Option<&'a str>,
}

#[derive(Serialize)]
struct EventJson<'a> {
    color: &'a str,
    description: &'a str,
    id: i64,
    name: &'a str,
}

#[derive(Serialize)]
struct ScriptJson<'a> {
    id: i64,
    title: &'a str,
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

/// The message text: script title, event description, camera, local time, one per line.
pub fn message_text(
    script_title: &str,
    event_description: &str,
    camera_id: i64,
    occurred_at_local: &str,
    data: Option<&serde_json::Value>,
) -> String {
    let mut text = format!(
        "{script_title}\n{event_description}\nCamera: {camera_id}\nTime: {occurred_at_local}"
    );
    if let Some(serde_json::Value::Object(fields)) = data {
        append_data(&mut text, fields);
    }
    text
}

/// Most `data` fields shown in a message; the rest are counted.
const MAX_DATA_FIELDS: usize = 10;
/// Longest value shown (characters); longer ones are cut with `…`.
const MAX_DATA_VALUE_CHARS: usize = 120;

/// The occurrence's `data` as `key: value` lines (`plate: A123BC`): strings without quotes,
/// other values as compact JSON, each cut to [`MAX_DATA_VALUE_CHARS`], at most
/// [`MAX_DATA_FIELDS`] lines plus one that counts the rest, so a message stays far below
/// Telegram's 4,096 characters whatever the analytics send.
fn append_data(text: &mut String, fields: &serde_json::Map<String, serde_json::Value>) {
    use std::fmt::Write as _;
    for (key, value) in fields.iter().take(MAX_DATA_FIELDS) {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let key: String = key.chars().filter(|c| !c.is_control()).take(40).collect();
        let mut shown: String = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_DATA_VALUE_CHARS)
            .collect();
        if value.chars().count() > MAX_DATA_VALUE_CHARS {
            shown.push('…');
        }
        let _ = write!(text, "\n{key}: {shown}");
    }
    if fields.len() > MAX_DATA_FIELDS {
        let _ = write!(text, "\n(+{} more fields)", fields.len() - MAX_DATA_FIELDS);
    }
}

/// The text of a Telegram summary replacing `count` queued messages of one script:
/// the title, the count, the cameras (as given, in order) and the first and last time.
pub fn summary_text(
    script_title: &str,
    count: usize,
    cameras: &[i64],
    first: &str,
    last: &str,
) -> String {
    let cameras: Vec<String> = cameras.iter().map(i64::to_string).collect();
    format!(
        "{script_title}\n{count} occurrences\nCameras: {}\nFirst: {first}\nLast: {last}",
        cameras.join(", ")
    )
}

/// `at` in `tz` as `YYYY-MM-DD HH:MM:SS ZONE` (zone abbreviation or offset), for
/// [`message_text`].
pub fn local_time(at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(serde_json::from_str::<Value>(&v).unwrap(), expected);
        // Keys in the order a `Value` prints them: the same bytes as a `Value` of it.
        assert_eq!(expected.to_string(), v);
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
        let json = push_payload(&bare_parts(false));
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v.to_string(), json);
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
        let json = push_payload(&bare_parts(true));
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v.to_string(), json);
        assert_eq!((&v["data"], &v["data_truncated"]), (&Value::Null, &Value::Bool(true)));
    }

    #[test]
    fn message_text_has_title_description_camera_time() {
        assert_eq!(
            message_text("Gate", "Line crossing", 17, "2026-11-27 16:30:05 +05", None),
            "Gate\nLine crossing\nCamera: 17\nTime: 2026-11-27 16:30:05 +05"
        );
    }

    #[test]
    fn message_text_shows_the_occurrences_data_readably_and_bounded() {
        let data = serde_json::json!({"plate": "A123BC", "confidence": 0.93, "zone": {"id": 2}});
        assert_eq!(
            message_text("Gate", "Plate", 7, "2026-11-27 16:30:05 +05", Some(&data)),
            "Gate\nPlate\nCamera: 7\nTime: 2026-11-27 16:30:05 +05\n\
             confidence: 0.93\nplate: A123BC\nzone: {\"id\":2}"
        );
        let mut many = serde_json::Map::new();
        for i in 0..25 {
            many.insert(format!("k{i:02}"), serde_json::Value::String("x\ny".repeat(100)));
        }
        let text = message_text("T", "E", 1, "t", Some(&serde_json::Value::Object(many)));
        assert!(text.ends_with("(+15 more fields)"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with('k')).count(), 10);
        assert!(text.lines().all(|l| l.chars().count() <= 130), "{text}");
        assert!(text.contains("x y") && text.contains('…'));
        // Non-object data (the decoder refuses it, but a row might hold it) adds nothing.
        assert_eq!(
            message_text("T", "E", 1, "t", Some(&serde_json::json!([1]))),
            "T\nE\nCamera: 1\nTime: t"
        );
    }

    #[test]
    fn local_time_uses_the_zone() {
        use chrono::TimeZone;
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 27, 11, 30, 5).unwrap();
        assert_eq!(local_time(at, chrono_tz::Asia::Yekaterinburg), "2026-11-27 16:30:05 +05");
        assert_eq!(local_time(at, chrono_tz::UTC), "2026-11-27 11:30:05 UTC");
    }

    #[test]
    fn reaction_kinds_come_from_the_catalog_names() {
        assert_eq!(ReactionKind::of("telegram-message"), ReactionKind::Telegram);
        assert_eq!(ReactionKind::of("webhook"), ReactionKind::Webhook);
        for n in CLIENT_REACTIONS {
            assert_eq!(ReactionKind::of(n), ReactionKind::Client);
        }
        assert_eq!(ReactionKind::of("siren"), ReactionKind::Other);
        assert!(ReactionKind::Other.is_push() && !ReactionKind::Webhook.is_push());
    }
}
