//! `GET /api/v1/reactions/stream`: the calling user's pushes as server-sent events.
//!
//! Each delivered push (CONTRACT §5 payload) for the authenticated user is one event named
//! `reaction` whose data is the payload and whose id is the `delivery_id`, so a client that
//! also receives MQTT pushes drops repeats by it. A comment line every 15 s keeps proxies
//! from closing an idle stream. A client that falls behind gets a `lagged` event with the
//! number of pushes it missed; the MQTT push remains the durable channel.
//!
//! When the daemon stops ([`PushHub::close`]) every stream ends with one event named
//! `shutdown` and the response closes, so an open browser never holds up SIGTERM; an
//! `EventSource` reconnects on its own once the daemon is back.
//!
//! The stream ends within [`RECHECK`] once its token is revoked or expires or its user is
//! disabled: a leaked token does not keep an open stream.
//!
//! Streams are capped ([`StreamSlots`]): at most `api.max_streams` open at once and
//! `api.max_streams_per_token` per token; past either, 429 with `Retry-After` and
//! `{"message": ...}` naming the cap. A stream's place is freed when it ends (client gone,
//! token refused, shutdown).
//!
//! A browser's `EventSource` cannot send an `Authorization` header, so
//! `POST /reactions/stream/ticket` (with the token) hands out a [`Tickets`] entry: a random
//! ticket valid once, for [`TICKET_TTL`], that `GET /reactions/stream?ticket=…` accepts
//! instead of the header. The stream it opens belongs to the ticket's user and token, and
//! ends like any other when that token is refused. The token itself never goes in a URL.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::AppState;
use super::auth::{AuthUser, Caller, TokenId};
use crate::dispatch::hub::PushHub;
use crate::store::{Db, tokens};

/// How often an open stream re-checks its token.
pub const RECHECK: Duration = Duration::from_secs(1);

/// How long a stream ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Most tickets held at once (each request for one beyond this drops the oldest expired
/// ones first; a caller cannot grow the map without bound).
pub const TICKETS_MAX: usize = 10_000;

/// How long a client refused for the stream cap is told to wait (`Retry-After`).
pub const STREAM_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The open streams, in total and per token.
#[derive(Debug)]
pub struct StreamSlots {
    max: usize,
    per_token: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// Which cap refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCap {
    /// `api.max_streams`.
    Total(usize),
    /// `api.max_streams_per_token`.
    PerToken(usize),
}

/// A stream's place; freed on drop.
#[derive(Debug)]
pub struct StreamSlot {
    slots: std::sync::Arc<StreamSlots>,
    token: String,
}

impl StreamSlots {
    /// At most `max` streams, `per_token` of them with one token.
    pub fn new(max: usize, per_token: usize) -> StreamSlots {
        StreamSlots { max, per_token, open: Mutex::new((0, HashMap::new())) }
    }

    /// A place for a stream with `token`, or the cap that refuses it.
    pub fn acquire(self: &std::sync::Arc<Self>, token: &str) -> Result<StreamSlot, StreamCap> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_token) = &mut *open;
        if *total >= self.max {
            return Err(StreamCap::Total(self.max));
        }
        let mine = by_token.entry(token.to_owned()).or_insert(0);
        if *mine >= self.per_token {
            return Err(StreamCap::PerToken(self.per_token));
        }
        *mine += 1;
        *total += 1;
        metrics::gauge!(crate::ops::telemetry::API_STREAMS_OPEN).increment(1.0);
        Ok(StreamSlot { slots: self.clone(), token: token.to_owned() })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        metrics::gauge!(crate::ops::telemetry::API_STREAMS_OPEN).decrement(1.0);
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_token) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                by_token.remove(&self.token);
            }
        }
    }
}

/// 429 for a stream past a cap.
fn refused(cap: StreamCap) -> axum::response::Response {
    metrics::counter!(crate::ops::telemetry::API_STREAMS_REFUSED).increment(1);
    let message = match cap {
        StreamCap::Total(n) => {
            format!("Too many reaction streams are open ({n}, api.max_streams); try again later.")
        }
        StreamCap::PerToken(n) => format!(
            "Too many reaction streams are open with this token ({n}, api.max_streams_per_token)."
        ),
    };
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, STREAM_RETRY_AFTER.as_secs().to_string())],
        Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

/// Single-use stream tickets in memory (a restart invalidates them, as it ends streams).
#[derive(Debug, Default)]
pub struct Tickets {
    map: Mutex<HashMap<String, Ticket>>,
}

#[derive(Debug, Clone)]
struct Ticket {
    caller: Caller,
    token: TokenId,
    expires: Instant,
}

impl Tickets {
    /// A new ticket for the caller authenticated with `token`; `None` when the table is
    /// full of live tickets.
    pub fn issue(&self, caller: Caller, token: TokenId) -> Option<String> {
        use rand::RngCore;
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let ticket = hex::encode(bytes);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= TICKETS_MAX {
            map.retain(|_, t| t.expires > now);
            if map.len() >= TICKETS_MAX {
                return None;
            }
        }
        map.insert(ticket.clone(), Ticket { caller, token, expires: now + TICKET_TTL });
        Some(ticket)
    }

    /// Takes a ticket: the caller and token it was issued for, once, while it is valid.
    pub fn redeem(&self, ticket: &str) -> Option<(Caller, TokenId)> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let t = map.remove(ticket)?;
        (t.expires > Instant::now()).then_some((t.caller, t.token))
    }
}

/// The stream routes, to mount under `/api/v1` behind the API's authentication (which
/// also accepts a ticket on the stream, see [`Tickets`]).
pub fn routes(hub: PushHub) -> Router<AppState> {
    Router::new().route("/reactions/stream/ticket", post(ticket)).route(
        "/reactions/stream",
        get(
            move |State(state): State<AppState>,
                  Extension(user): Extension<AuthUser>,
                  Extension(token): Extension<TokenId>| {
                let hub = hub.clone();
                async move {
                    match state.streams.acquire(&token.0) {
                        Ok(slot) => stream(&hub, user, until_refused(state.store, token), slot)
                            .into_response(),
                        Err(cap) => refused(cap),
                    }
                }
            },
        ),
    )
}

/// `POST /reactions/stream/ticket`: 201 `{"ticket", "expires_in"}` (seconds); 503 when
/// too many tickets are outstanding.
async fn ticket(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(token): Extension<TokenId>,
) -> axum::response::Response {
    match state.tickets.issue(caller, token) {
        Some(ticket) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"ticket": ticket, "expires_in": TICKET_TTL.as_secs()})),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"message": "Too many stream tickets are outstanding; try again shortly."})),
        )
            .into_response(),
    }
}

/// Completes once the token is no longer active (a database error keeps the stream).
async fn until_refused(store: Db, token: TokenId) {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (store, id) = (store.clone(), token.0.clone());
        let active =
            tokio::task::spawn_blocking(move || store.read(|tx| tokens::is_active(tx, &id))).await;
        if let Ok(Ok(false)) = active {
            return;
        }
    }
}

fn stream<F: std::future::Future<Output = ()> + Send + 'static>(
    hub: &PushHub,
    user: AuthUser,
    refused: F,
    slot: StreamSlot,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>> + use<F>> {
    let events = BroadcastStream::new(hub.subscribe()).filter_map(move |item| {
        // The closure owns the stream's place: it is freed when the stream is dropped.
        let _held = &slot;
        match item {
            Ok(push) if push.user_id == user.id => {
                let mut event = Event::default().event("reaction").data(&*push.payload);
                let id = serde_json::from_str::<serde_json::Value>(&push.payload)
                    .ok()
                    .and_then(|v| v.get("delivery_id").and_then(|d| d.as_str()).map(str::to_owned));
                if let Some(id) = id {
                    event = event.id(id);
                }
                Some(Ok(event))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                Some(Ok(Event::default().event("lagged").data(n.to_string())))
            }
        }
    });
    let events = futures_util::StreamExt::take_until(events, refused);
    let events = futures_util::StreamExt::take_until(events, hub.closed());
    // The last event says why the stream ends when the daemon is stopping; a refused token
    // just ends it.
    let hub = hub.clone();
    let end = futures_util::stream::once(async move { hub.is_closed() }).filter_map(|closed| {
        closed.then(|| Ok(Event::default().event("shutdown").data("the daemon is stopping")))
    });
    let events = events.chain(end);
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
