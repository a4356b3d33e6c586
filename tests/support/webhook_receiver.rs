//! A webhook endpoint for tests: records every POST, verifies `X-Scriptd-Signature` with the
//! secret it was started with, and answers with scripted statuses (200 when none is queued).
//!
//! ```ignore
//! let rx = WebhookReceiver::start(Some("s3cret")).await;
//! rx.push_status(500);                       // the first request gets 500, then 200s
//! sender.send(&rx.url(), Some(&secret), &payload).await?;
//! let got = rx.wait_for(1, Duration::from_secs(5)).await;
//! assert!(got[0].signature_valid);
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The raw body bytes.
    pub body: Vec<u8>,
    /// The `X-Scriptd-Signature` header, if any.
    pub signature: Option<String>,
    /// Whether the header verified against the body under the receiver's secret.
    pub signature_valid: bool,
    /// The status the receiver answered.
    pub status: u16,
}

impl Received {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Default)]
struct Inner {
    secret: Option<String>,
    statuses: Mutex<VecDeque<u16>>,
    received: Mutex<Vec<Received>>,
    /// While set, requests are accepted and never answered (nor recorded).
    hang: std::sync::atomic::AtomicBool,
    /// Requests left hanging so far.
    hung: std::sync::atomic::AtomicUsize,
}

/// The running receiver; stops when dropped.
pub struct WebhookReceiver {
    port: u16,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts on 127.0.0.1 with a free port; `secret` verifies signatures.
    pub async fn start(secret: Option<&str>) -> Self {
        let inner = Arc::new(Inner { secret: secret.map(str::to_owned), ..Inner::default() });
        let app = Router::new().route("/{*path}", post(handle)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, inner, task }
    }

    /// `http://127.0.0.1:{port}/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Queues the status for the next unanswered request.
    pub fn push_status(&self, status: u16) {
        self.inner.statuses.lock().unwrap().push_back(status);
    }

    /// Drops every queued status (the receiver answers 200 again); returns how many.
    pub fn clear_statuses(&self) -> usize {
        let mut q = self.inner.statuses.lock().unwrap();
        let n = q.len();
        q.clear();
        n
    }

    /// `true`: from now on every request is accepted and never answered (not recorded;
    /// counted by [`Self::hung`]), like a receiver that hangs; `false`: answers again.
    pub fn hang(&self, on: bool) {
        self.inner.hang.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Requests left without an answer so far.
    pub fn hung(&self) -> usize {
        self.inner.hung.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "webhook receiver got {} of {n} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if inner.hang.load(std::sync::atomic::Ordering::SeqCst) {
        inner.hung.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let signature =
        headers.get("x-scriptd-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let signature_valid = match (&inner.secret, &signature) {
        (Some(secret), Some(sig)) => {
            scriptd::dispatch::webhook::verify(secret.as_bytes(), &body, sig)
        }
        (None, None) => true,
        _ => false,
    };
    let status = inner.statuses.lock().unwrap().pop_front().unwrap_or(200);
    inner.received.lock().unwrap().push(Received {
        body: body.to_vec(),
        signature,
        signature_valid,
        status,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
