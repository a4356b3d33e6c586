//! API tokens. A token is `{public_id}.{secret}`: the public id (not secret) finds the row,
//! and only the SHA-256 digest of the whole token is stored. Checking compares fixed-size
//! digests in constant time, so response timing says nothing about the secret part.

use rand::RngCore;
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{StoreError, now_text, users};
use crate::secret::Secret;

/// Bytes of randomness in the secret part (hex-encoded in the token).
const SECRET_BYTES: usize = 32;
/// Bytes of randomness in the public id.
const PUBLIC_ID_BYTES: usize = 12;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Creates a token for `user_id` and returns it; it cannot be recovered later.
pub fn create(conn: &Connection, user_id: i64) -> Result<Secret, StoreError> {
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
        "INSERT INTO api_tokens (public_id, user_id, token_sha256, created_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![public_id, user_id, digest(&token).as_slice(), now_text()],
    )?;
    conn.execute(
        "UPDATE users SET access_token_id = ?1, updated_at = ?2 WHERE id = ?3",
        params![public_id, now_text(), user_id],
    )?;
    Ok(Secret::new(token))
}

/// The user a presented token belongs to, or `None` for a malformed or unknown token.
pub fn authenticate(conn: &Connection, presented: &str) -> Result<Option<i64>, StoreError> {
    let Some((public_id, rest)) = presented.split_once('.') else { return Ok(None) };
    if public_id.is_empty()
        || rest.is_empty()
        || public_id.len() > 64
        || !public_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Ok(None);
    }
    let presented_digest = digest(presented);
    let mut stmt =
        conn.prepare_cached("SELECT user_id, token_sha256 FROM api_tokens WHERE public_id = ?1")?;
    // Read without trusting the column types: a hand-edited row is just not a match.
    let rows = stmt.query_map([public_id], |r| {
        Ok((r.get::<_, rusqlite::types::Value>(0)?, r.get::<_, rusqlite::types::Value>(1)?))
    })?;
    for row in rows {
        let (rusqlite::types::Value::Integer(user_id), rusqlite::types::Value::Blob(stored)) = row?
        else {
            continue;
        };
        if stored.len() == presented_digest.len()
            && bool::from(stored.as_slice().ct_eq(presented_digest.as_slice()))
        {
            return Ok(Some(user_id));
        }
    }
    Ok(None)
}
