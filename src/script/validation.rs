//! Field-level validation errors, shaped for the API's 422 answer.
//!
//! Every boundary that takes operator input (API bodies, timetable JSON, imported scripts,
//! hand-edited database rows) reports problems as a [`FieldErrors`]: a map from the dotted
//! path of the bad field (`timetable.days.0.breaks.1.from`) to the reasons. The API turns it
//! into `{"message": ..., "errors": {...}}`; the CLI prints the same object.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

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

/// Parses JSON like `serde_json::from_slice`, but refuses an object that names a key twice
/// (at any depth) instead of silently keeping the last value, so "which title did you
/// mean?" never has a silent answer. The error text says which key.
pub fn parse_json_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    struct Strict(Value);

    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor).map(Strict)
        }
    }

    struct StrictVisitor;

    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Strict(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                }
                let Strict(v) = map.next_value()?;
                out.insert(key, v);
            }
            Ok(Value::Object(out))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Strict(v) = Strict::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing_refuses_duplicate_keys_at_any_depth() {
        let v = parse_json_strict(br#"{"a":[1,{"b":null}],"c":1.5,"d":"x","e":true}"#).unwrap();
        assert_eq!(v, json!({"a":[1,{"b":null}],"c":1.5,"d":"x","e":true}));
        let e = parse_json_strict(br#"{"a":1,"a":2}"#).unwrap_err().to_string();
        assert!(e.contains("duplicate key \"a\""), "{e}");
        assert!(parse_json_strict(br#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(parse_json_strict(br#"{"a":1} x"#).is_err());
        let deep = "[".repeat(100_000);
        assert!(parse_json_strict(deep.as_bytes()).is_err(), "depth limit, no stack overflow");
    }

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
