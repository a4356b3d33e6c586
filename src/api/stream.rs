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

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::AppState;
use super::auth::AuthUser;
use crate::hub::PushHub;

/// The stream route, to mount under `/api/v1` behind the API's authentication.
pub fn routes(hub: PushHub) -> Router<AppState> {
    Router::new().route(
        "/reactions/stream",
        get(move |Extension(user): Extension<AuthUser>| {
            let hub = hub.clone();
            async move { stream(&hub, user) }
        }),
    )
}

fn stream(
    hub: &PushHub,
    user: AuthUser,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>> + use<>> {
    let events = BroadcastStream::new(hub.subscribe()).filter_map(move |item| match item {
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
    });
    let end = futures_util::stream::once(async {
        Ok(Event::default().event("shutdown").data("the daemon is stopping"))
    });
    let events = futures_util::StreamExt::take_until(events, hub.closed()).chain(end);
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
