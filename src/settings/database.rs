//! `database.url`: a PostgreSQL URL whose password never shows.
//!
//! The URL is kept as written (the store parses it, see `crate::store::postgres`); `Debug`,
//! `Display` and `Serialize` print it with the password of its user part and any
//! `password=` parameter replaced by [`crate::secret::MASK`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::MASK;

/// A libpq-style URL, `postgresql://user[:password]@host[:port]/dbname?sslmode=...`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL (not checked here: see `crate::store::postgres::ConnectOptions`).
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The URL as written, password included. Only the store's connection code calls it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password masked.
    pub fn masked(&self) -> String {
        mask_url(&self.0)
    }
}

/// `url` with the password of its user part and of a `password=` parameter masked. Text
/// that does not look like a URL is masked whole after its scheme, so nothing leaks from a
/// malformed value either.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.is_empty() { String::new() } else { MASK.to_owned() };
    };
    let (authority_end, _) =
        rest.char_indices().find(|(_, c)| matches!(c, '/' | '?')).unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(DatabaseUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_wherever_the_url_shows() {
        let url =
            DatabaseUrl::new("postgresql://app:s3cret@db.example:5433/scriptd?sslmode=require");
        let masked = "postgresql://app:********@db.example:5433/scriptd?sslmode=require";
        assert_eq!(url.to_string(), masked);
        assert_eq!(format!("{url:?}"), format!("{masked:?}"));
        assert_eq!(serde_json::to_string(&url).unwrap(), format!("{masked:?}"));
        assert_eq!(url.expose(), "postgresql://app:s3cret@db.example:5433/scriptd?sslmode=require");
        // A password parameter, an `@` in the password, no password, not a URL.
        assert_eq!(
            mask_url("postgres://h/db?user=a&password=x&sslmode=disable"),
            "postgres://h/db?user=a&password=********&sslmode=disable"
        );
        assert_eq!(mask_url("postgresql://a:p@ss@h/db"), "postgresql://a:********@h/db");
        assert_eq!(mask_url("postgresql://a@h:1/db"), "postgresql://a@h:1/db");
        assert_eq!(mask_url("host=h password=x"), MASK);
    }
}
