//! "Why was (or wasn't) I notified?": the decision the intake would make for one occurrence,
//! per script of its event, with the rule that decided (CONTRACT §10).
//!
//! Nothing here decides on its own: whether a script fires comes from the snapshot's
//! [`crate::index::ScheduleIndex`] (the index the intake matches with), then the cooldown
//! rule ([`crate::intake::in_cooldown`]) on the durable cooldown state; who gets a
//! delivery from [`crate::intake::recipients_of`] and the [`crate::intake::Gate`]
//! (disabled accounts, snoozes). Only the *reason* of a timetable verdict, the window or
//! break that decided, is read from the script's timetable ([`crate::timetable::Timetable::explain_at`], the
//! reference evaluation the index is tested against). A property test
//! (`tests/it/explain_matches_pipeline.rs`) checks that what explain says is delivered is
//! exactly what the intake plans, for random scripts and occurrences.
//!
//! Reasons, in the order they are checked:
//!
//! | reason | fires |
//! | --- | --- |
//! | `invalid script: FIELD: MESSAGE` (the first failing field) | no |
//! | `disabled` | no |
//! | `camera not in filter` | no |
//! | `in break timetable.days.N.breaks.M`, `outside days`, `outside intervals`, `outside days and intervals` | no |
//! | on a holiday: `holiday calendar N "TITLE"`, `holiday timetable.holidays.dates.N`, `in break timetable.holidays.windows.N.breaks.M` | no |
//! | `cooldown until T` | no |
//! | `active in window timetable.days.N`, `in interval timetable.intervals.N`, `in holiday window timetable.holidays.windows.N` | yes |
//!
//! On a holiday the verdict also carries `holiday`, the holiday's name in the same words.
//!
//! Per recipient of a firing script: `delivers`, `snoozed until T` or `user disabled`.

use std::collections::HashSet;

use crate::store::sql::Sql;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::index::Matches;
use crate::intake::{Gate, Recipient, in_cooldown, recipients_of};
use crate::live::Snapshot;
use crate::script::{Lookups, validate};
use crate::store::snoozes::{RecipientDecision, SnoozeSet};
use crate::store::{StoreError, scripts};

/// The occurrence to explain.
#[derive(Debug, Clone)]
pub struct Question {
    /// The event (resolved against the catalog).
    pub event_id: i64,
    /// The camera.
    pub camera_id: i64,
    /// Its `occurred_at`.
    pub at: DateTime<Utc>,
    /// Its id, when it is a real occurrence: its own firing is then not a cooldown.
    pub occurrence_id: Option<String>,
}

/// Why one script fires or not for the occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptVerdict {
    /// The script.
    pub script_id: i64,
    /// Its title (as stored; empty when the row has none).
    pub title: String,
    /// Whether it fires.
    pub fires: bool,
    /// The rule that decided (see the module documentation).
    pub reason: String,
    /// Per recipient of a firing script, whether it gets a delivery; empty when the script
    /// does not fire.
    pub recipients: Vec<RecipientVerdict>,
    /// The holiday the occurrence falls on for this script (`holiday calendar 1 "New
    /// Year"`, `holiday timetable.holidays.dates.0`), if any.
    pub holiday: Option<String>,
}

/// Who a recipient is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A user's client apps.
    User(i64),
    /// A Telegram chat.
    Chat(String),
    /// A webhook URL.
    Url(String),
}

/// Whether one recipient of a firing script gets a delivery, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientVerdict {
    /// The recipient.
    pub who: Who,
    /// Whether a delivery is made.
    pub delivers: bool,
    /// `delivers`, `snoozed until T` or `user disabled`.
    pub reason: String,
}

/// RFC 3339 UTC, whole seconds, of unix ms.
fn time_text(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// What explain reads besides the snapshot and the per-script cooldown state: the snoozes,
/// as stored.
pub struct State {
    snoozes: SnoozeSet,
}

impl State {
    /// Reads the snoozes that had not ended by `at` (unix ms).
    pub fn load(conn: &dyn Sql, at_ms: i64) -> Result<State, StoreError> {
        Ok(State { snoozes: SnoozeSet::load(conn, at_ms)? })
    }
}

/// Explains `q` for every script of its event whose owner `visible` accepts, by script id.
/// `conn` is read for the script rows (titles, owners, timetables for the reasons) and the
/// catalogs; `snap` is the intake's snapshot; `tz` the configured time zone.
pub fn explain(
    conn: &dyn Sql,
    snap: &Snapshot,
    tz: Tz,
    state: &State,
    q: &Question,
    visible: impl Fn(Option<i64>) -> bool,
) -> Result<Vec<ScriptVerdict>, StoreError> {
    let lookups = Lookups::load(conn)?;
    let ctx = lookups.context(tz);
    let mut matches = Matches::new();
    snap.index.matches_into(q.event_id, q.camera_id, q.at.timestamp(), &mut matches);
    let matched: HashSet<i64> =
        matches.positions.iter().map(|p| snap.index.script_id(*p)).collect();
    let at_ms = q.at.timestamp_millis();
    let occurrence_id = q.occurrence_id.as_deref().unwrap_or("");
    let gate = Gate { snoozes: &state.snoozes, at_ms };
    let mut out = Vec::new();
    for row in scripts::of_event(conn, q.event_id)? {
        if !visible(row.owner_id) {
            continue;
        }
        let title = row.body.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
        let verdict = |fires: bool, reason: String| ScriptVerdict {
            script_id: row.id,
            title: title.clone(),
            fires,
            reason,
            recipients: Vec::new(),
            holiday: None,
        };
        let first_error = |e: &crate::script::validation::FieldErrors| {
            let path = e.paths().next().unwrap_or("script").to_owned();
            let msg = e.get(&path).and_then(|m| m.first()).cloned().unwrap_or_default();
            format!("invalid script: {path}: {msg}")
        };
        if let Some(errors) = snap.invalid.get(&row.id) {
            out.push(verdict(false, first_error(errors)));
            continue;
        }
        let valid = match validate(&row.body, &ctx) {
            Ok(v) if row.decode_errors.is_empty() => v,
            Ok(_) => {
                out.push(verdict(false, first_error(&row.decode_errors)));
                continue;
            }
            Err(errors) => {
                out.push(verdict(false, first_error(&errors)));
                continue;
            }
        };
        let Some(record) = snap.scripts.get(&row.id) else {
            // Written a moment ago, before the snapshot was rebuilt.
            out.push(verdict(false, "not loaded yet".to_owned()));
            continue;
        };
        if !record.enabled {
            out.push(verdict(false, "disabled".to_owned()));
            continue;
        }
        if snap.scripts.cameras(&row.id).flatten().is_some_and(|c| !c.contains(&q.camera_id)) {
            out.push(verdict(false, "camera not in filter".to_owned()));
            continue;
        }
        let timetable = valid.timetable.explain_at(q.at.timestamp());
        let holiday = valid.timetable.holiday_at(q.at.timestamp()).map(|h| h.reason());
        let verdict = |fires: bool, reason: String| ScriptVerdict {
            holiday: holiday.clone(),
            ..verdict(fires, reason)
        };
        if !matched.contains(&row.id) {
            if timetable.active {
                // The index and the reference disagree: a defect, reported as such.
                tracing::error!(script = row.id, at = %q.at, "explain: the index and the timetable disagree");
            }
            out.push(verdict(false, timetable.reason));
            continue;
        }
        let cooldown = record.extra.cooldown_seconds;
        let last = if cooldown > 0 {
            crate::store::deliveries::cooldown_of(conn, row.id, q.camera_id)?
        } else {
            None
        };
        if in_cooldown(last.as_ref(), at_ms, occurrence_id, cooldown) {
            let until = last.map_or(0, |(fired, _)| fired + i64::from(cooldown) * 1000);
            out.push(verdict(false, format!("cooldown until {}", time_text(until))));
            continue;
        }
        let reason = match timetable.reason.strip_prefix("in window ") {
            Some(path) => format!("active in window {path}"),
            None => timetable.reason,
        };
        let mut v = verdict(true, reason);
        v.recipients = recipients_of(snap, record)
            .into_iter()
            .map(|r| {
                let (delivers, reason) = match gate.decide(snap, row.id, r.user(), q.camera_id) {
                    RecipientDecision::Delivers => (true, "delivers".to_owned()),
                    RecipientDecision::SnoozedUntil(t) => {
                        (false, format!("snoozed until {}", time_text(t)))
                    }
                    RecipientDecision::UserDisabled => (false, "user disabled".to_owned()),
                };
                let who = match r {
                    Recipient::User(u) => Who::User(u),
                    Recipient::Chat { chat_id, .. } => Who::Chat(chat_id.to_owned()),
                    Recipient::Url(url) => Who::Url(url.to_owned()),
                };
                RecipientVerdict { who, delivers, reason }
            })
            .collect();
        out.push(v);
    }
    Ok(out)
}

impl ScriptVerdict {
    /// The API's object (CONTRACT §10).
    pub fn to_json(&self) -> Value {
        let recipients: Vec<Value> = self
            .recipients
            .iter()
            .map(|r| {
                let (key, value) = match &r.who {
                    Who::User(u) => ("user_id", json!(u)),
                    Who::Chat(c) => ("chat_id", json!(c)),
                    Who::Url(u) => ("url", json!(u)),
                };
                json!({key: value, "delivers": r.delivers, "reason": r.reason})
            })
            .collect();
        let mut v = json!({
            "script_id": self.script_id,
            "title": self.title,
            "fires": self.fires,
            "reason": self.reason,
            "recipients": recipients,
        });
        if let (Some(h), Value::Object(m)) = (&self.holiday, &mut v) {
            m.insert("holiday".into(), json!(h));
        }
        v
    }

    /// One line of `scriptd explain`: id, verdict, reason, title, then the recipients.
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "script {} {:?}: {} ({})",
            self.script_id,
            self.title,
            if self.fires { "fires" } else { "does not fire" },
            self.reason
        );
        let recipients: Vec<String> = self
            .recipients
            .iter()
            .map(|r| {
                let who = match &r.who {
                    Who::User(u) => format!("user {u}"),
                    Who::Chat(c) => format!("chat {c}"),
                    Who::Url(u) => format!("url {u}"),
                };
                format!("{who} {}", r.reason)
            })
            .collect();
        if let Some(h) = &self.holiday {
            line.push_str(&format!(" on {h}"));
        }
        if !recipients.is_empty() {
            line.push_str("; ");
            line.push_str(&recipients.join(", "));
        }
        line
    }
}
