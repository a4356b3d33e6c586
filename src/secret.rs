//! A string that never shows itself: bot tokens, API tokens and passwords.
//!
//! `Debug` and `Display` print a mask, and `Serialize` writes the mask too, so a secret
//! cannot reach a log line, an error message or `check-config` output by accident. Code
//! that really needs the value (the Telegram client, the MQTT login) calls
//! [`Secret::expose`], which makes every such place easy to find.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text shown instead of a secret value.
pub const MASK: &str = "********";

/// A secret string; see the module documentation.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value. Call only where the value leaves the process on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_mask_the_value() {
        let s = Secret::new("123456:ABC-very-secret");
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(format!("{s}"), MASK);
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{MASK}\""));
        assert_eq!(s.expose(), "123456:ABC-very-secret");
    }

    #[test]
    fn a_struct_holding_a_secret_does_not_leak_it() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Login {
            user: String,
            password: Secret,
        }
        let l = Login { user: "u".into(), password: "hunter2".into() };
        assert!(!format!("{l:?}").contains("hunter2"));
    }
}
