//! Validation of a calendar body (`POST`/`PUT`/`PATCH /api/v1/calendars`) into a
//! [`CalendarInput`], every problem at its key (`name`, `timezone`, `dates.0.from`).

use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::script::validation::FieldErrors;
use crate::store::calendars::CalendarInput;
use crate::timetable::holidays::parse_date_range;

/// Most dates one calendar holds.
pub const MAX_DATES: usize = 10_000;

/// Validates a whole calendar body; a missing `timezone` takes `default_tz`.
pub fn validate_calendar(
    body: &Map<String, Value>,
    default_tz: Tz,
) -> Result<CalendarInput, FieldErrors> {
    let mut errors = FieldErrors::new();
    let name = match body.get("name") {
        None | Some(Value::Null) => {
            errors.add("name", "The name field is required.");
            None
        }
        Some(Value::String(s))
            if !s.trim().is_empty()
                && s.chars().count() <= 255
                && !s.chars().any(char::is_control) =>
        {
            Some(s.clone())
        }
        Some(_) => {
            errors
                .add("name", "must be a string of 1 to 255 characters without control characters");
            None
        }
    };
    let timezone = match body.get("timezone") {
        None | Some(Value::Null) => Some(default_tz.name().to_owned()),
        Some(Value::String(s)) => match s.parse::<Tz>() {
            Ok(tz) => Some(tz.name().to_owned()),
            Err(_) => {
                errors.add(
                    "timezone",
                    format!("{s:?} is not an IANA time zone name (e.g. Europe/Berlin)"),
                );
                None
            }
        },
        Some(_) => {
            errors.add("timezone", "must be an IANA time zone name (e.g. Europe/Berlin)");
            None
        }
    };
    let dates = match body.get("dates") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() > MAX_DATES => {
            errors.add("dates", format!("must hold at most {MAX_DATES} dates"));
            Vec::new()
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, d)| parse_date_range(d, &format!("dates.{i}"), &mut errors))
            .collect(),
        Some(_) => {
            errors.add("dates", "must be an array of {from, to, title}");
            Vec::new()
        }
    };
    match (name, timezone) {
        (Some(name), Some(timezone)) if errors.is_empty() => {
            Ok(CalendarInput { name, timezone, dates })
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_full_body_and_the_default_zone() {
        let c = validate_calendar(
            &body(json!({"name": "Public holidays", "dates": [
                {"from": "2026-12-31", "to": "2027-01-08", "title": "New Year"},
                {"from": "2027-05-01"}]})),
            chrono_tz::Asia::Yekaterinburg,
        )
        .unwrap();
        assert_eq!(c.timezone, "Asia/Yekaterinburg");
        assert_eq!(c.dates.len(), 2);
        assert_eq!(c.dates[1].from, c.dates[1].to);
        assert_eq!(c.dates[0].title.as_deref(), Some("New Year"));
    }

    #[test]
    fn each_bad_key_is_named() {
        let e = validate_calendar(
            &body(json!({"name": "", "timezone": "Mars/Olympus", "dates": [
                {"from": "2026-02-30"}, {"from": "2026-05-02", "to": "2026-05-01"},
                {"to": "2026-05-01"}, 5, {"from": "2026-05-01", "title": 3}]})),
            chrono_tz::UTC,
        )
        .unwrap_err();
        for key in [
            "name",
            "timezone",
            "dates.0.from",
            "dates.1.to",
            "dates.2.from",
            "dates.3",
            "dates.4.title",
        ] {
            assert!(e.contains(key), "{key} missing in {}", e.message());
        }
        let e = validate_calendar(&body(json!({"dates": {}})), chrono_tz::UTC).unwrap_err();
        assert!(e.contains("name") && e.contains("dates"));
    }
}
