//! Field-level validation errors, shaped for the API's 422 answer.
//!
//! Every boundary that takes operator input (API bodies, timetable JSON, imported scripts,
//! hand-edited database rows) reports problems as a [`FieldErrors`]: a map from the dotted
//! path of the bad field (`timetable.days.0.breaks.1.from`) to the reasons. The API turns it
//! into `{"message": ..., "errors": {...}}`; the CLI prints the same object.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};

/// Reasons per dotted field path, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One error at `path`.
    pub fn single(path: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut e = Self::new();
        e.add(path, reason);
        e
    }

    /// Records a reason for `path` (a path may collect several reasons).
    pub fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.entry(path.into()).or_default().push(reason.into());
    }

    /// Moves every error of `other` into `self`.
    pub fn merge(&mut self, other: FieldErrors) {
        for (path, reasons) in other.0 {
            self.0.entry(path).or_default().extend(reasons);
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of fields with errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when `path` has at least one error.
    pub fn contains(&self, path: &str) -> bool {
        self.0.contains_key(path)
    }

    /// The paths with errors, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The reasons recorded for `path`.
    pub fn get(&self, path: &str) -> Option<&[String]> {
        self.0.get(path).map(Vec::as_slice)
    }

    /// `Ok(value)` when empty, `Err(self)` otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.is_empty() { Ok(value) } else { Err(self) }
    }

    /// The summary line: the first reason, and how many more there are.
    pub fn message(&self) -> String {
        let total: usize = self.0.values().map(Vec::len).sum();
        let first = self
            .0
            .iter()
            .next()
            .and_then(|(path, reasons)| reasons.first().map(|r| format!("{path}: {r}")))
            .unwrap_or_else(|| "The given data was invalid.".to_owned());
        match total {
            0 | 1 => first,
            2 => format!("{first} (and 1 more error)"),
            n => format!("{first} (and {} more errors)", n - 1),
        }
    }

    /// The API's 422 body: `{"message": ..., "errors": {"path": ["reason", ...]}}`.
    pub fn to_body(&self) -> Value {
        json!({ "message": self.message(), "errors": self })
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (path, reasons) in &self.0 {
            for reason in reasons {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(f, "{path}: {reason}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_message_and_errors_by_path() {
        let mut e = FieldErrors::new();
        e.add("title", "is required");
        e.add("timetable.days.0.from", "must be a time of day");
        e.add("timetable.days.0.from", "second reason");
        let body = e.to_body();
        assert_eq!(body["errors"]["title"][0], "is required");
        assert_eq!(body["errors"]["timetable.days.0.from"].as_array().unwrap().len(), 2);
        assert_eq!(
            body["message"],
            "timetable.days.0.from: must be a time of day (and 2 more errors)"
        );
    }
}
