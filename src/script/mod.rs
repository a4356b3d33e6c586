//! Validation of a script body (API request, imported file, or a row read back from the
//! database) into a typed [`ScriptInput`] plus its compiled timetable.
//!
//! Every problem is reported at its dotted path in a [`FieldErrors`], all at once, so an
//! operator fixes a body in one round trip. The same function validates API bodies, imports
//! and hand-edited rows, so the three can never disagree.

pub mod calendar;
pub mod validation;

pub mod view;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::script::validation::FieldErrors;
use crate::store::catalog::{Event, Reaction};

use crate::delivery::ReactionKind;
pub use crate::index::ScheduleIndex;
pub use crate::index::rules::Rule;
use crate::index::rules::{parse_cameras, parse_status};
pub use crate::timetable::Timetable;
use crate::timetable::{CalendarDates, ParseContext, parse_timetable as parse_timetable_model};

/// Longest accepted title, in characters.
pub const TITLE_MAX_CHARS: usize = 255;

/// The fields of a script as stored: validated and normalised.
#[derive(Clone, PartialEq)]
pub struct ScriptInput {
    /// 1–255 characters, none of them a control character.
    pub title: String,
    /// An id in the event catalog.
    pub event_id: i64,
    /// An id in the reaction catalog.
    pub reaction_id: i64,
    /// `status`: true = active.
    pub enabled: bool,
    /// `None` = every camera.
    pub cameras: Option<Vec<i64>>,
    /// Recipient user ids, in the order given, each once.
    pub users: Vec<i64>,
    /// The timetable as the operator wrote it, with `days`, `intervals` and every day's
    /// `breaks` present.
    pub timetable: Value,
    /// Reaction-specific data (may hold a bot token or a webhook secret: never log it).
    pub extra: Map<String, Value>,
}

impl fmt::Debug for ScriptInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptInput")
            .field("title", &self.title)
            .field("event_id", &self.event_id)
            .field("reaction_id", &self.reaction_id)
            .field("enabled", &self.enabled)
            .field("cameras", &self.cameras)
            .field("users", &self.users)
            .field("extra_keys", &self.extra.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What validation needs to know about the rest of the database.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext<'a> {
    /// Zone for times written without an offset.
    pub timezone: Tz,
    /// The event catalog by id.
    pub events: &'a HashMap<i64, Event>,
    /// The reaction catalog by id.
    pub reactions: &'a HashMap<i64, Reaction>,
    /// Existing user ids.
    pub users: &'a HashSet<i64>,
    /// Holiday calendars by id, attached to the timetables that list them.
    pub calendars: &'a HashMap<i64, Arc<CalendarDates>>,
}

/// A valid script: its stored fields and its compiled timetable.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The normalised fields.
    pub input: ScriptInput,
    /// The compiled timetable.
    pub timetable: Arc<Timetable>,
}

/// Validates a whole body. Unknown keys (and `id`, timestamps) are ignored.
pub fn validate(
    body: &Map<String, Value>,
    ctx: &ValidationContext<'_>,
) -> Result<Validated, FieldErrors> {
    let mut errors = FieldErrors::new();

    let title = match body.get("title") {
        None | Some(Value::Null) => {
            errors.add("title", "The title field is required.");
            None
        }
        Some(Value::String(s)) => {
            let n = s.trim().chars().count();
            if n == 0 {
                errors.add("title", "The title field is required.");
                None
            } else if s.chars().count() > TITLE_MAX_CHARS {
                errors.add(
                    "title",
                    format!("The title must not be longer than {TITLE_MAX_CHARS} characters."),
                );
                None
            } else if s.chars().any(char::is_control) {
                // A NUL or escape sequence in a title ends up in Telegram messages, push
                // payloads and operators' terminals: refuse it at the door.
                errors.add("title", "The title must not contain control characters.");
                None
            } else {
                Some(s.clone())
            }
        }
        Some(_) => {
            errors.add("title", "The title must be a string.");
            None
        }
    };

    let event_id = catalog_id(body, "event_id", &mut errors, |id| ctx.events.contains_key(&id));
    let reaction_id =
        catalog_id(body, "reaction_id", &mut errors, |id| ctx.reactions.contains_key(&id));

    let enabled = match body.get("status") {
        None | Some(Value::Null) => {
            errors.add("status", "The status field is required.");
            None
        }
        Some(v) => match parse_status(v) {
            Ok(b) => Some(b),
            Err(reason) => {
                errors.add("status", reason);
                None
            }
        },
    };

    let cameras = match parse_cameras(body.get("cameras").unwrap_or(&Value::Null)) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.merge(e);
            None
        }
    };

    let users = validate_users(body.get("users"), ctx.users, &mut errors);

    let (timetable_json, timetable) = match body.get("timetable") {
        None | Some(Value::Null) => {
            errors.add("timetable", "The timetable field is required.");
            (None, None)
        }
        Some(Value::Object(t)) => {
            let normalized = normalize_timetable(t);
            match parse_timetable(&normalized, ctx.timezone) {
                Ok(tt) => (Some(normalized), attach_calendars(tt, ctx.calendars, &mut errors)),
                Err(e) => {
                    errors.merge(e);
                    (None, None)
                }
            }
        }
        Some(_) => {
            errors.add("timetable", "The timetable must be an object.");
            (None, None)
        }
    };

    let extra = match body.get("extra") {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => {
            errors.add("extra", "The extra field must be an object.");
            None
        }
    };
    if let (Some(extra), Some(rid)) = (&extra, reaction_id)
        && let Some(reaction) = ctx.reactions.get(&rid)
    {
        validate_extra(reaction.kind, extra, &mut errors);
    }

    match (title, event_id, reaction_id, enabled, cameras, users, timetable_json, timetable, extra)
    {
        (
            Some(title),
            Some(event_id),
            Some(reaction_id),
            Some(enabled),
            Some(cameras),
            Some(users),
            Some(timetable_json),
            Some(timetable),
            Some(extra),
        ) if errors.is_empty() => Ok(Validated {
            input: ScriptInput {
                title,
                event_id,
                reaction_id,
                enabled,
                cameras,
                users,
                timetable: timetable_json,
                extra,
            },
            timetable,
        }),
        _ => {
            if errors.is_empty() {
                errors.add("script", "is invalid");
            }
            Err(errors)
        }
    }
}

/// The body of a stored script, for merging a PATCH over it.
pub fn input_to_body(input: &ScriptInput) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("title".into(), input.title.clone().into());
    m.insert("event_id".into(), input.event_id.into());
    m.insert("reaction_id".into(), input.reaction_id.into());
    m.insert("status".into(), status_text(input.enabled).into());
    m.insert(
        "cameras".into(),
        input.cameras.as_ref().map_or(Value::Null, |c| Value::from(c.clone())),
    );
    m.insert("users".into(), Value::from(input.users.clone()));
    m.insert("timetable".into(), input.timetable.clone());
    m.insert("extra".into(), Value::Object(input.extra.clone()));
    m
}

/// `"active"` / `"disabled"`.
pub fn status_text(enabled: bool) -> &'static str {
    if enabled { "active" } else { "disabled" }
}

fn catalog_id(
    body: &Map<String, Value>,
    key: &str,
    errors: &mut FieldErrors,
    exists: impl Fn(i64) -> bool,
) -> Option<i64> {
    let label = key.replace('_', " ");
    match body.get(key) {
        None | Some(Value::Null) => {
            errors.add(key, format!("The {label} field is required."));
            None
        }
        Some(v) => match v.as_i64() {
            Some(id) if exists(id) => Some(id),
            Some(_) => {
                errors.add(key, format!("The selected {label} is invalid."));
                None
            }
            None => {
                errors.add(key, format!("The {label} must be an integer."));
                None
            }
        },
    }
}

fn validate_users(
    value: Option<&Value>,
    known: &HashSet<i64>,
    errors: &mut FieldErrors,
) -> Option<Vec<i64>> {
    let list = match value {
        None | Some(Value::Null) => {
            errors.add("users", "The users field is required.");
            return None;
        }
        Some(Value::Array(list)) if list.is_empty() => {
            errors.add("users", "The users must contain at least one user.");
            return None;
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            errors.add("users", "The users must be an array.");
            return None;
        }
    };
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, v) in list.iter().enumerate() {
        let path = format!("users.{i}");
        match v.as_i64() {
            Some(id) if id > 0 && known.contains(&id) => {
                if out.contains(&id) {
                    errors.add(path, "The user is listed more than once.");
                    ok = false;
                } else {
                    out.push(id);
                }
            }
            Some(id) if id > 0 => {
                errors.add(path, format!("The selected user {id} does not exist."));
                ok = false;
            }
            _ => {
                errors.add(path, "The user must be a positive integer id.");
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Longest `extra.cooldown_seconds`: one day.
pub const COOLDOWN_MAX: u64 = 86_400;

fn validate_extra(reaction: ReactionKind, extra: &Map<String, Value>, errors: &mut FieldErrors) {
    match extra.get("cooldown_seconds") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= COOLDOWN_MAX) => {}
        Some(_) => errors.add(
            "extra.cooldown_seconds",
            "The extra.cooldown_seconds must be an integer between 0 and 86400.",
        ),
    }
    match reaction {
        ReactionKind::Telegram => {
            match extra.get("bot_token") {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                Some(Value::String(_)) | None | Some(Value::Null) => errors.add(
                    "extra.bot_token",
                    "The extra.bot_token field is required when reaction is telegram-message.",
                ),
                Some(_) => errors.add("extra.bot_token", "The extra.bot_token must be a string."),
            }
            match extra.get("chat_id") {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                Some(Value::Number(n)) if n.is_i64() => {}
                Some(Value::String(_)) | None | Some(Value::Null) => errors.add(
                    "extra.chat_id",
                    "The extra.chat_id field is required when reaction is telegram-message.",
                ),
                Some(_) => {
                    errors.add("extra.chat_id", "The extra.chat_id must be a string or an integer.")
                }
            }
        }
        ReactionKind::Webhook => {
            match extra.get("url") {
                // Whitespace and control characters are refused although the URL parser
                // would drop them: the URL is stored and shown as written.
                Some(Value::String(s))
                    if s.chars().any(|c| c.is_control() || c.is_whitespace()) =>
                {
                    errors.add("extra.url", "The extra.url must be an http or https URL.")
                }
                Some(Value::String(s)) => match reqwest::Url::parse(s) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                    _ => errors.add("extra.url", "The extra.url must be an http or https URL."),
                },
                None | Some(Value::Null) => errors
                    .add("extra.url", "The extra.url field is required when reaction is webhook."),
                Some(_) => errors.add("extra.url", "The extra.url must be an http or https URL."),
            }
            match extra.get("secret") {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(_) => errors.add("extra.secret", "The extra.secret must be a string."),
            }
        }
        _ => {}
    }
}

/// The timetable with `days` and `intervals` present (missing ones become `[]`) and every
/// day entry's `breaks` present. Anything else is kept as written.
pub fn normalize_timetable(t: &Map<String, Value>) -> Value {
    let mut t = t.clone();
    for key in ["days", "intervals"] {
        if matches!(t.get(key), None | Some(Value::Null)) {
            t.insert(key.into(), Value::Array(Vec::new()));
        }
    }
    if let Some(Value::Array(days)) = t.get_mut("days") {
        for day in days {
            if let Value::Object(d) = day
                && matches!(d.get("breaks"), None | Some(Value::Null))
            {
                d.insert("breaks".into(), Value::Array(Vec::new()));
            }
        }
    }
    Value::Object(t)
}

/// The one place the timetable model is called.
fn parse_timetable(value: &Value, timezone: Tz) -> Result<Arc<Timetable>, FieldErrors> {
    parse_timetable_model(value, &ParseContext { timezone }).map(Arc::new)
}

/// The timetable with its calendars attached; a listed calendar that does not exist is an
/// error on `timetable.holidays.calendars.N`.
fn attach_calendars(
    tt: Arc<Timetable>,
    calendars: &HashMap<i64, Arc<CalendarDates>>,
    errors: &mut FieldErrors,
) -> Option<Arc<Timetable>> {
    if !tt.has_holidays() {
        return Some(tt);
    }
    let before = errors.len();
    for (i, id) in tt.calendar_ids().iter().enumerate() {
        if !calendars.contains_key(id) {
            errors.add(
                format!("timetable.holidays.calendars.{i}"),
                format!("calendar {id} does not exist"),
            );
        }
    }
    (errors.len() == before).then(|| Arc::new(tt.with_calendars(|id| calendars.get(&id).cloned())))
}

/// The catalogs and user ids validation checks against, loaded in one read.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// Event catalog by id.
    pub events: HashMap<i64, Event>,
    /// Reaction catalog by id.
    pub reactions: HashMap<i64, Reaction>,
    /// Existing user ids.
    pub users: HashSet<i64>,
    /// Holiday calendars by id.
    pub calendars: HashMap<i64, Arc<CalendarDates>>,
}

impl Lookups {
    /// Reads the catalogs and user ids.
    pub fn load(conn: &dyn crate::store::sql::Sql) -> Result<Lookups, crate::store::StoreError> {
        use crate::store::{catalog, users};
        Ok(Lookups {
            events: catalog::events(conn)?.into_iter().map(|e| (e.id, e)).collect(),
            reactions: catalog::reactions(conn)?.into_iter().map(|r| (r.id, r)).collect(),
            users: users::all_ids(conn)?,
            calendars: crate::store::calendars::all_dates(conn)?,
        })
    }

    /// A validation context over these lookups.
    pub fn context(&self, timezone: Tz) -> ValidationContext<'_> {
        ValidationContext {
            timezone,
            events: &self.events,
            reactions: &self.reactions,
            users: &self.users,
            calendars: &self.calendars,
        }
    }
}
