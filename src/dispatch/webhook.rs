//! Webhook deliveries: an HTTP POST of the push payload, signed with HMAC-SHA256.
//!
//! The body is the compact JSON serialisation of the payload; the header
//! `X-Scriptd-Signature: sha256=<hex>` carries the HMAC-SHA256 of exactly those bytes under
//! the script's `extra.secret` (no header when the script has no secret). Receivers verify
//! by recomputing the HMAC over the raw body they received; [`signature`] is the reference.
//!
//! Outcomes: any 2xx is delivered. 5xx, 408, 429, network errors and timeouts are
//! [`SendError::Retryable`] (a `Retry-After` given in seconds becomes `after`). Every other
//! status (3xx: redirects are not followed, 4xx) is [`SendError::Permanent`]. Error texts
//! never contain the URL (it may carry credentials in its query).

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use sha2::Sha256;

use super::SendError;
use crate::secret::Secret;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Scriptd-Signature";

/// Sends webhook deliveries; cheap to clone (one shared connection pool).
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
}

impl WebhookSender {
    /// A sender whose connections are bounded by `timeout` (each request has its own
    /// deadline, see [`WebhookSender::send`]).
    pub fn new(timeout: Duration) -> Result<Self, SendError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("scriptd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SendError::permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client })
    }

    /// POSTs `payload` to `url`, signed with `secret` when given. One attempt, bounded by
    /// `timeout` as a whole (`webhook.timeout_seconds`, read per attempt so SIGHUP applies).
    pub async fn send(
        &self,
        url: &str,
        secret: Option<&Secret>,
        payload: &serde_json::Value,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let body = serde_json::to_vec(payload)
            .map_err(|e| SendError::permanent(format!("cannot serialise the payload: {e}")))?;
        let url = reqwest::Url::parse(url)
            .map_err(|e| SendError::permanent(format!("invalid webhook url: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(SendError::permanent("webhook url must be http or https"));
        }
        let mut request = self
            .client
            .post(url)
            .timeout(timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secret) = secret {
            request =
                request.header(SIGNATURE_HEADER, signature(secret.expose().as_bytes(), &body));
        }
        let response = request.body(body).send().await.map_err(|e| {
            let e = e.without_url();
            let what = if e.is_timeout() { "timed out" } else { "request failed" };
            let reason = format!("webhook {what}: {}", super::error_chain(&e, ""));
            if e.is_timeout() || e.is_connect() {
                SendError::no_answer(reason)
            } else {
                SendError::retryable(reason)
            }
        })?;
        classify(response.status(), response.headers().get(RETRY_AFTER))
    }
}

/// `sha256=<hex HMAC-SHA256 of body under key>`, the value of [`SIGNATURE_HEADER`].
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a received signature header against `body` in constant time.
pub fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn classify(status: StatusCode, retry_after: Option<&HeaderValue>) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let reason = format!("webhook answered HTTP {}", status.as_u16());
    let transient = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if !transient {
        return Err(SendError::permanent(reason));
    }
    let after = retry_after
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Err(SendError::Retryable { reason, after, no_answer: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &sig));
        assert!(!verify(b"other", b"what do ya want for nothing?", &sig));
        assert!(!verify(b"Jefe", b"x", "md5=00"));
    }

    #[test]
    fn statuses_are_classified() {
        assert!(classify(StatusCode::OK, None).is_ok());
        assert!(classify(StatusCode::NO_CONTENT, None).is_ok());
        for s in [500, 502, 503, 408, 429] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(classify(s, None).unwrap_err().is_retryable(), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(!classify(s, None).unwrap_err().is_retryable(), "{s}");
        }
        let ra = HeaderValue::from_static("7");
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some(&ra)),
            Err(SendError::retry_after("webhook answered HTTP 429", Duration::from_secs(7)))
        );
    }
}
