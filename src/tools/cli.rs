//! Operator commands that need no daemon: `timetable check`, `explain`.

use std::io::Read;
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use crate::script::validation::FieldErrors;
use crate::timetable::{ParseContext, parse_timetable};

/// What `timetable check` prints and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutput {
    /// Lines for standard output.
    pub stdout: String,
    /// 0 when the timetable is valid, 1 when it is not.
    pub exit_code: i32,
}

/// Reads the timetable JSON from `file`, or standard input when `None`.
pub fn read_input(file: Option<&Path>) -> std::io::Result<String> {
    match file {
        Some(path) => std::fs::read_to_string(path),
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            Ok(s)
        }
    }
}

/// `scriptd timetable check`: validates `text` (a `timetable` object, or a whole script
/// object holding one) and says for each instant whether it is active, and why.
pub fn timetable_check(
    text: &str,
    instants: &[(String, DateTime<FixedOffset>)],
    ctx: &ParseContext,
) -> CheckOutput {
    let invalid = |errors: FieldErrors| CheckOutput {
        stdout: format!("{}\n", errors.to_body()),
        exit_code: 1,
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return invalid(FieldErrors::single("timetable", format!("must be valid JSON: {e}")));
        }
    };
    let timetable = match value.get("timetable") {
        Some(inner) if value.get("days").is_none() && value.get("intervals").is_none() => inner,
        _ => &value,
    };
    match parse_timetable(timetable, ctx) {
        Err(errors) => invalid(errors),
        Ok(tt) => {
            let mut stdout = String::new();
            for (text, at) in instants {
                let v = tt.explain_at(at.timestamp());
                let state = if v.active { "active" } else { "inactive" };
                stdout.push_str(&format!("{text} {state} {}\n", v.reason));
            }
            CheckOutput { stdout, exit_code: 0 }
        }
    }
}

/// `scriptd explain`: one line per script of `event` (an id or a name) for an occurrence
/// on `camera` at `at`, every owner included, from the database's scripts, cooldowns and
/// snoozes (see [`crate::intake::explain`]).
pub fn explain(
    store: &crate::store::Db,
    timezone: chrono_tz::Tz,
    event: &str,
    camera: i64,
    at: DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<String>> {
    use crate::intake::explain::{Question, State};
    if camera <= 0 {
        anyhow::bail!("--camera must be a positive integer, not {camera}");
    }
    let live = crate::live::Live::load_from(store, timezone)?;
    let snap = live.load();
    let event_id = match event.parse::<i64>() {
        Ok(id) if snap.events.contains_key(&id) => id,
        _ => match snap.events.values().find(|e| e.name == event) {
            Some(e) => e.id,
            None => anyhow::bail!("--event {event:?} is not an event id or name of the catalog"),
        },
    };
    let q = Question { event_id, camera_id: camera, at, occurrence_id: None };
    let verdicts = store.read(|tx| {
        let state = State::load(tx, at.timestamp_millis())?;
        crate::intake::explain::explain(tx, &snap, timezone, &state, &q, |_| true)
    })?;
    Ok(verdicts.iter().map(|v| v.to_line()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> (String, DateTime<FixedOffset>) {
        (s.to_owned(), DateTime::parse_from_rfc3339(s).unwrap())
    }

    #[test]
    fn prints_one_line_per_instant() {
        let tt = r#"{"days":[{"type":"same_every_day","from":"00:00:00+05:00","to":"23:59:00+05:00","breaks":[{"from":"16:00:00+05:00","to":"17:00:00+05:00"}]}]}"#;
        let out = timetable_check(
            tt,
            &[at("2026-11-27T10:00:00+05:00"), at("2026-11-27T16:30:00+05:00")],
            &ParseContext::default(),
        );
        assert_eq!(out.exit_code, 0);
        assert_eq!(
            out.stdout,
            "2026-11-27T10:00:00+05:00 active in window timetable.days.0\n2026-11-27T16:30:00+05:00 inactive in break timetable.days.0.breaks.0\n"
        );
    }

    #[test]
    fn invalid_prints_the_422_object() {
        let out = timetable_check(
            r#"{"days":[{"type":"weekdays","from":"08:00","to":"08:00"}]}"#,
            &[],
            &ParseContext::default(),
        );
        assert_eq!(out.exit_code, 1);
        let body: Value = serde_json::from_str(&out.stdout).unwrap();
        assert!(body["errors"]["timetable.days.0.to"].is_array());
        assert!(body["message"].is_string());
        let out = timetable_check("{not json", &[], &ParseContext::default());
        assert_eq!(out.exit_code, 1);
        assert!(out.stdout.contains("must be valid JSON"));
    }

    #[test]
    fn accepts_a_whole_script_object() {
        let s = r#"{"title":"x","timetable":{"intervals":[{"from":"2026-12-01 10:00:00Z","to":"2026-12-01 11:00:00Z"}]}}"#;
        let out = timetable_check(s, &[at("2026-12-01T10:30:00Z")], &ParseContext::default());
        assert_eq!(out.stdout, "2026-12-01T10:30:00Z active in interval timetable.intervals.0\n");
    }

    #[test]
    fn inline_holiday_dates() {
        let tt = r#"{"days":[{"type":"weekdays","from":"08:00Z","to":"20:00Z"}],
            "holidays":{"dates":[{"from":"2026-05-01","title":"Labour Day"}],"windows":[{"from":"10:00Z","to":"14:00Z"}]}}"#;
        let out = timetable_check(
            tt,
            &[at("2026-05-01T09:00:00Z"), at("2026-05-01T11:00:00Z"), at("2026-05-04T09:00:00Z")],
            &ParseContext::default(),
        );
        assert_eq!(out.exit_code, 0, "{}", out.stdout);
        assert_eq!(
            out.stdout,
            "2026-05-01T09:00:00Z inactive holiday timetable.holidays.dates.0\n\
             2026-05-01T11:00:00Z active in holiday window timetable.holidays.windows.0\n\
             2026-05-04T09:00:00Z active in window timetable.days.0\n"
        );
        let out = timetable_check(
            r#"{"days":[{"type":"weekdays","from":"08:00","to":"20:00"}],"holidays":{"dates":[{"from":"May 1"}]}}"#,
            &[],
            &ParseContext::default(),
        );
        assert_eq!(out.exit_code, 1);
        assert!(out.stdout.contains("timetable.holidays.dates.0.from"), "{}", out.stdout);
    }
}
