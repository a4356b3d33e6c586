//! API tokens. A token is `{public_id}.{secret}`: the public id (not secret) finds the row,
//! and only the SHA-256 digest of the whole token is stored. Checking compares fixed-size
//! digests in constant time, so response timing says nothing about the secret part.
//!
//! A token stops working when it is revoked (`revoked_at`), when it expires (`expires_at`)
//! or when its user is disabled; [`authenticate`] reads all three from the database on every
//! call, so a change made by `scriptd tokens revoke` in another process counts at once.
//! `last_used_at` is written by [`touch`], which the API calls at most once a minute per
//! token.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sql::{Row, Sql, Value};
use super::{StoreError, now_text, users};
use crate::args;
use crate::secret::Secret;

/// Bytes of randomness in the secret part (hex-encoded in the token).
const SECRET_BYTES: usize = 32;
/// Bytes of randomness in the public id.
const PUBLIC_ID_BYTES: usize = 12;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Creates a token for `user_id` that never expires; see [`create_expiring`].
pub fn create(conn: &dyn Sql, user_id: i64) -> Result<Secret, StoreError> {
    create_expiring(conn, user_id, None)
}

/// Creates a token for `user_id`, valid for `lifetime` from now (`None`: until revoked),
/// and returns it; it cannot be recovered later.
pub fn create_expiring(
    conn: &dyn Sql,
    user_id: i64,
    lifetime: Option<std::time::Duration>,
) -> Result<Secret, StoreError> {
    let expires_at = match lifetime {
        None => None,
        Some(d) => {
            let d = chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_add_signed(d));
            match d {
                Some(t) => Some(t.format("%Y-%m-%d %H:%M:%S").to_string()),
                None => {
                    return Err(StoreError::Invalid(
                        crate::script::validation::FieldErrors::single("expires_in", "is too long"),
                    ));
                }
            }
        }
    };
    if !users::exists(conn, user_id)? {
        return Err(StoreError::NotFound(format!("user {user_id}")));
    }
    let mut rng = rand::rng();
    let mut public = [0u8; PUBLIC_ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut public);
    rng.fill_bytes(&mut secret);
    let public_id = hex::encode(public);
    let token = format!("{public_id}.{}", hex::encode(secret));
    conn.execute(
        "INSERT INTO api_tokens (public_id, user_id, token_sha256, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        args![&public_id, user_id, digest(&token).as_slice(), now_text(), expires_at],
    )?;
    conn.execute(
        "UPDATE users SET access_token_id = ?1, updated_at = ?2 WHERE id = ?3",
        args![&public_id, now_text(), user_id],
    )?;
    Ok(Secret::new(token))
}

/// A token that [`authenticate`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user the token belongs to.
    pub user_id: i64,
    /// The token's public id (not secret).
    pub public_id: String,
}

/// The user a presented token belongs to, or `None` for a malformed, unknown, revoked or
/// expired token, or one whose user is disabled.
pub fn authenticate(conn: &dyn Sql, presented: &str) -> Result<Option<i64>, StoreError> {
    Ok(check(conn, presented)?.map(|a| a.user_id))
}

/// Like [`authenticate`], with the token's public id.
pub fn check(conn: &dyn Sql, presented: &str) -> Result<Option<Authenticated>, StoreError> {
    let Some((public_id, rest)) = presented.split_once('.') else { return Ok(None) };
    if public_id.is_empty()
        || rest.is_empty()
        || public_id.len() > 64
        || !public_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Ok(None);
    }
    let presented_digest = digest(presented);
    let rows = conn.query(
        "SELECT t.user_id, t.token_sha256 FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.public_id = ?1 AND t.revoked_at IS NULL
           AND (t.expires_at IS NULL OR t.expires_at > ?2) AND NOT u.disabled",
        args![public_id, now_text()],
    )?;
    // Read without trusting the column types: a hand-edited row is just not a match.
    for row in &rows {
        let (&Value::Int(user_id), Value::Bytes(stored)) = (row.value(0), row.value(1)) else {
            continue;
        };
        if stored.len() == presented_digest.len()
            && bool::from(stored.as_slice().ct_eq(presented_digest.as_slice()))
        {
            return Ok(Some(Authenticated { user_id, public_id: public_id.to_owned() }));
        }
    }
    Ok(None)
}

/// True while the token `public_id` is neither revoked nor expired and its user is not
/// disabled (for connections authenticated earlier, such as the reaction stream).
pub fn is_active(conn: &dyn Sql, public_id: &str) -> Result<bool, StoreError> {
    conn.query_value::<bool>(
        "SELECT EXISTS(SELECT 1 FROM api_tokens t JOIN users u ON u.id = t.user_id
           WHERE t.public_id = ?1 AND t.revoked_at IS NULL
             AND (t.expires_at IS NULL OR t.expires_at > ?2) AND NOT u.disabled)",
        args![public_id, now_text()],
    )
}

/// Records that the token `public_id` was used now (`last_used_at`).
pub fn touch(conn: &dyn Sql, public_id: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE api_tokens SET last_used_at = ?2 WHERE public_id = ?1",
        args![public_id, now_text()],
    )?;
    Ok(())
}

/// One token as `scriptd tokens list` shows it (never the secret or its digest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// Public id.
    pub public_id: String,
    /// Owner.
    pub user_id: i64,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub created_at: String,
    /// When it was last used, to the minute; `None`: never.
    pub last_used_at: Option<String>,
    /// When it stops working; `None`: never.
    pub expires_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

/// Every token (of `user_id` when given), oldest first.
pub fn list(conn: &dyn Sql, user_id: Option<i64>) -> Result<Vec<TokenInfo>, StoreError> {
    // Two statements rather than `?1 IS NULL OR user_id = ?1`, whose parameter PostgreSQL
    // cannot type.
    let rows = match user_id {
        None => conn.query(
            "SELECT public_id, user_id, created_at, last_used_at, expires_at, revoked_at
             FROM api_tokens ORDER BY id",
            &[],
        )?,
        Some(id) => conn.query(
            "SELECT public_id, user_id, created_at, last_used_at, expires_at, revoked_at
             FROM api_tokens WHERE user_id = ?1 ORDER BY id",
            args![id],
        )?,
    };
    let opt = |r: &Row, i: usize| match r.value(i) {
        Value::Null => None,
        _ => Some(r.text(i)),
    };
    Ok(rows
        .iter()
        .map(|r| TokenInfo {
            public_id: r.text(0),
            user_id: r.get::<i64>(1).unwrap_or(0),
            created_at: r.text(2),
            last_used_at: opt(r, 3),
            expires_at: opt(r, 4),
            revoked_at: opt(r, 5),
        })
        .collect())
}

/// Revokes the token `public_id`; [`StoreError::NotFound`] when there is none. Revoking a
/// revoked token keeps its first `revoked_at`.
pub fn revoke(conn: &dyn Sql, public_id: &str) -> Result<(), StoreError> {
    let found = conn.query_value::<bool>(
        "SELECT EXISTS(SELECT 1 FROM api_tokens WHERE public_id = ?1)",
        args![public_id],
    )?;
    if !found {
        return Err(StoreError::NotFound(format!("token {public_id}")));
    }
    conn.execute(
        "UPDATE api_tokens SET revoked_at = ?2 WHERE public_id = ?1 AND revoked_at IS NULL",
        args![public_id, now_text()],
    )?;
    Ok(())
}

/// Revokes every token of `user_id`; returns how many were still active.
pub fn revoke_user(conn: &dyn Sql, user_id: i64) -> Result<usize, StoreError> {
    if !users::exists(conn, user_id)? {
        return Err(StoreError::NotFound(format!("user {user_id}")));
    }
    let n = conn.execute(
        "UPDATE api_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        args![user_id, now_text()],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Parses a token lifetime for `--expires-in`: a positive whole number followed by `s`,
/// `m`, `h`, `d` or `w` (`90d`, `12h`).
pub fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a duration like 90d, 12h, 30m"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{text:?}: the unit must be one of s, m, h, d, w (e.g. 90d)")),
    };
    n.checked_mul(unit_secs)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is longer than 100 years"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_with_a_unit() {
        assert_eq!(parse_lifetime("90d"), Ok(std::time::Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_lifetime("2s"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(parse_lifetime("1w"), Ok(std::time::Duration::from_secs(7 * 86_400)));
        for bad in ["", "d", "0d", "90", "90x", "-1d", "1.5d", "99999999999999999999d", "200000w"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }
}
