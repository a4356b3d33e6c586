//! Scripts as the matcher sees them: event, cameras, status and compiled timetable.
//!
//! The API and the store validate whole script bodies; this module holds the parts of that
//! validation the matcher depends on (`status`, `cameras`) and the [`Rule`] the schedule
//! index is built from.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::script::validation::FieldErrors;
use crate::timetable::Timetable;

/// What the schedule index needs to know about one script.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The script's id.
    pub script_id: i64,
    /// The catalog id of the event it reacts to.
    pub event_id: i64,
    /// The cameras it watches; `None` means every camera.
    pub cameras: Option<Vec<i64>>,
    /// `status: active`; a disabled script never fires.
    pub enabled: bool,
    /// When it is active.
    pub timetable: Arc<Timetable>,
}

impl Rule {
    /// The reference answer: does this script fire for `event_id` on `camera_id` at `t`
    /// (unix seconds)?
    #[inline]
    pub fn fires(&self, event_id: i64, camera_id: i64, t: i64) -> bool {
        self.enabled
            && self.event_id == event_id
            && self.cameras.as_ref().is_none_or(|c| c.contains(&camera_id))
            && self.timetable.is_active_at(t)
    }
}

/// The naive reference matcher: scans every rule. The schedule index must return exactly
/// this set (sorted script ids).
pub fn naive_matches(rules: &[Rule], event_id: i64, camera_id: i64, at: DateTime<Utc>) -> Vec<i64> {
    let t = at.timestamp();
    let mut ids = Vec::new();
    for rule in rules {
        // Most rules fail on the event: the loop must stay tight (one call per rule costs a
        // third more).
        if rule.fires(event_id, camera_id, t) {
            ids.push(rule.script_id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Reads `status`: `"active"` or `"disabled"`, or the booleans `true`/`false`.
/// Returns true for active.
pub fn parse_status(v: &Value) -> Result<bool, String> {
    match v {
        Value::String(s) if s == "active" => Ok(true),
        Value::String(s) if s == "disabled" => Ok(false),
        Value::Bool(b) => Ok(*b),
        Value::Null => Err("is required".to_owned()),
        _ => Err("must be active or disabled (true or false are accepted too)".to_owned()),
    }
}

/// Reads `cameras`: `null` for every camera, or an array of positive integer camera ids
/// (duplicates are dropped). Errors are keyed `cameras` or `cameras.N`.
pub fn parse_cameras(v: &Value) -> Result<Option<Vec<i64>>, FieldErrors> {
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => {
            let mut errors = FieldErrors::new();
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_i64() {
                    Some(id) if id > 0 => ids.push(id),
                    _ => errors.add(format!("cameras.{i}"), "must be a positive integer camera id"),
                }
            }
            if errors.is_empty() && ids.is_empty() {
                errors.add(
                    "cameras",
                    "must be null (every camera) or a non-empty array of camera ids",
                );
            }
            ids.sort_unstable();
            ids.dedup();
            errors.into_result(Some(ids))
        }
        _ => Err(FieldErrors::single(
            "cameras",
            "must be null (every camera) or an array of camera ids",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn status_values() {
        assert_eq!(parse_status(&json!("active")), Ok(true));
        assert_eq!(parse_status(&json!("disabled")), Ok(false));
        assert_eq!(parse_status(&json!(true)), Ok(true));
        assert_eq!(parse_status(&json!(false)), Ok(false));
        assert!(parse_status(&json!("enabled")).is_err());
        assert!(parse_status(&json!(1)).is_err());
        assert!(parse_status(&json!(null)).is_err());
    }

    #[test]
    fn camera_values() {
        assert_eq!(parse_cameras(&json!(null)), Ok(None));
        assert_eq!(parse_cameras(&json!([3, 1, 3])), Ok(Some(vec![1, 3])));
        let e = parse_cameras(&json!([1, -2, "x", 1.5])).unwrap_err();
        assert_eq!(e.paths().collect::<Vec<_>>(), ["cameras.1", "cameras.2", "cameras.3"]);
        assert!(parse_cameras(&json!([])).unwrap_err().contains("cameras"));
        assert!(parse_cameras(&json!("all")).unwrap_err().contains("cameras"));
    }

    #[test]
    fn disabled_rule_never_fires() {
        let tt = crate::timetable::parse_timetable(
            &json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]}),
            &Default::default(),
        )
        .unwrap();
        let mut rule = Rule {
            script_id: 1,
            event_id: 2,
            cameras: None,
            enabled: true,
            timetable: Arc::new(tt),
        };
        assert!(rule.fires(2, 99, 0));
        assert!(!rule.fires(3, 99, 0));
        rule.cameras = Some(vec![5]);
        assert!(!rule.fires(2, 99, 0));
        assert!(rule.fires(2, 5, 0));
        rule.enabled = false;
        assert!(!rule.fires(2, 5, 0));
    }
}
