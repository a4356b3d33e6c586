//! A stand-in for the Telegram Bot API: `POST /bot<token>/<method>` on 127.0.0.1.
//!
//! It records every request ([`Recorded`]: method, token, chat id, text or photo and
//! caption, arrival time) and answers from a script: answers queued for a chat
//! ([`TelegramStub::answer_for_chat`]) come first, then the global queue
//! ([`TelegramStub::answer_next`]), then `ok` with a realistic `Message`. Answers can be
//! a 429 with `retry_after`, 400 "chat not found", 400 for a snapshot URL, 401, 403 "bot
//! was blocked", 500, or a
//! hang (the connection stays open with no answer). The server stops when dropped.
//!
//! Point a sender at [`TelegramStub::api_url`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the stub answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with a `Message`.
    Ok,
    /// 429 `Too Many Requests: retry after n` with `parameters.retry_after = n`.
    RetryAfter(u32),
    /// 400 `Bad Request: chat not found`.
    ChatNotFound,
    /// 401 `Unauthorized` (a bad token).
    Unauthorized,
    /// 403 `Forbidden: bot was blocked by the user`.
    Blocked,
    /// 500 `Internal Server Error`.
    ServerError,
    /// 400 `Bad Request: failed to get HTTP URL content` (a snapshot Telegram cannot fetch).
    BadPhoto,
    /// Never answers.
    Hang,
    /// 500 `Internal Server Error`, but only after stalling this long.
    LateServerError(std::time::Duration),
}

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method as sent, e.g. `SendMessage`.
    pub method: String,
    /// The bot token from the path.
    pub token: String,
    /// `chat_id` as text (`"123"`, `"-42"`, `"@news"`).
    pub chat_id: String,
    /// `text` of a sendMessage.
    pub text: Option<String>,
    /// `photo` of a sendPhoto (a URL here).
    pub photo: Option<String>,
    /// `caption` of a sendPhoto.
    pub caption: Option<String>,
    /// What the stub answered.
    pub answer: Answer,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    global: Mutex<VecDeque<Answer>>,
    per_chat: Mutex<HashMap<String, VecDeque<Answer>>>,
    recorded: Mutex<Vec<Recorded>>,
    /// While set, every request is accepted and never answered (nor recorded).
    hang: std::sync::atomic::AtomicBool,
}

/// The running stub; stops when dropped.
pub struct TelegramStub {
    port: u16,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl TelegramStub {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new().route("/{bot}/{method}", post(handle)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, inner, task }
    }

    /// The base URL to configure as `telegram.api_url`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Queues an answer for the next request that has no chat-specific answer.
    pub fn answer_next(&self, answer: Answer) {
        self.inner.global.lock().unwrap().push_back(answer);
    }

    /// Drops every queued answer: from now on the stub answers Ok.
    pub fn clear_answers(&self) {
        self.inner.global.lock().unwrap().clear();
        self.inner.per_chat.lock().unwrap().clear();
    }

    /// Queues an answer for the next request to `chat_id`.
    pub fn answer_for_chat(&self, chat_id: &str, answer: Answer) {
        self.inner
            .per_chat
            .lock()
            .unwrap()
            .entry(chat_id.to_owned())
            .or_default()
            .push_back(answer);
    }

    /// `true`: from now on every request is accepted and never answered (not recorded),
    /// like a hung Bot API; `false`: answers again.
    pub fn hang_all(&self, on: bool) {
        self.inner.hang.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Everything received so far, in arrival order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.inner.recorded.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.recorded();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "telegram stub got {} of {n} requests", got.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TelegramStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn field(body: &Value, key: &str) -> Option<String> {
    match body.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// The text fields of a `multipart/form-data` body (teloxide sends `sendPhoto` that way).
fn multipart_fields(content_type: &str, body: &[u8]) -> Value {
    let Some(boundary) = content_type.split("boundary=").nth(1) else { return Value::Null };
    let boundary = format!("--{}", boundary.trim_matches('"'));
    let body = String::from_utf8_lossy(body);
    let mut fields = serde_json::Map::new();
    for part in body.split(boundary.as_str()) {
        let Some((headers, value)) = part.split_once("\r\n\r\n") else { continue };
        let Some(name) = headers.split("name=\"").nth(1).and_then(|n| n.split('"').next()) else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    Value::Object(fields)
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path((bot, method)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if inner.hang.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let token = bot.strip_prefix("bot").unwrap_or(&bot).to_owned();
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json: Value = if content_type.starts_with("multipart/form-data") {
        multipart_fields(content_type, &body)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let chat_id = field(&json, "chat_id").unwrap_or_default();
    let answer = {
        let mut per_chat = inner.per_chat.lock().unwrap();
        per_chat.get_mut(&chat_id).and_then(VecDeque::pop_front)
    }
    .or_else(|| inner.global.lock().unwrap().pop_front())
    .unwrap_or(Answer::Ok);
    inner.recorded.lock().unwrap().push(Recorded {
        method: method.clone(),
        token,
        chat_id: chat_id.clone(),
        text: field(&json, "text"),
        photo: field(&json, "photo"),
        caption: field(&json, "caption"),
        answer: answer.clone(),
        at: Instant::now(),
    });
    let error = |status: StatusCode, description: &str| {
        (
            status,
            axum::Json(
                json!({"ok": false, "error_code": status.as_u16(), "description": description}),
            ),
        )
            .into_response()
    };
    match answer {
        Answer::Ok => {
            let id: i64 = chat_id.parse().unwrap_or(-1_001_234_567_890);
            let chat = if id < 0 {
                json!({"id": id, "type": "supergroup", "title": "Group"})
            } else {
                json!({"id": id, "type": "private", "first_name": "Operator"})
            };
            let text = field(&json, "text").or_else(|| field(&json, "caption")).unwrap_or_default();
            let message =
                json!({"message_id": 1, "date": 1_764_250_205, "chat": chat, "text": text});
            axum::Json(json!({"ok": true, "result": message})).into_response()
        }
        Answer::RetryAfter(n) => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {n}"),
                "parameters": {"retry_after": n}
            })),
        )
            .into_response(),
        Answer::ChatNotFound => error(StatusCode::BAD_REQUEST, "Bad Request: chat not found"),
        Answer::Unauthorized => error(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Answer::Blocked => error(StatusCode::FORBIDDEN, "Forbidden: bot was blocked by the user"),
        Answer::ServerError => error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        Answer::LateServerError(stall) => {
            tokio::time::sleep(stall).await;
            error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        Answer::BadPhoto => {
            error(StatusCode::BAD_REQUEST, "Bad Request: failed to get HTTP URL content")
        }
        Answer::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}
