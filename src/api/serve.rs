//! The API's accept loop: HTTP/1.1 connections (plain or TLS) with a header-read timeout,
//! a cap on open connections, and a graceful shutdown, on hyper's and hyper-util's parts.
//!
//! - **Header-read timeout** (`api.header_read_timeout_seconds`, hyper's
//!   `header_read_timeout`): a connection must send a complete request head within it,
//!   counted from its opening (after the TLS handshake, which gets the same time) or from
//!   the end of its previous response; otherwise it is closed. It is therefore also the
//!   keep-alive idle timeout.
//! - **Body timeout** (`api.request_timeout_seconds`, tower-http's `TimeoutBody`): a
//!   request body that pauses longer than that fails to read (the route's own deadline,
//!   408, covers the whole request except reaction streams).
//! - **Connection cap** (`api.max_connections`): past it, the new connection is accepted and
//!   the oldest *idle* connection (no request in progress: waiting for its first or next
//!   request head) is closed to make room; when every open connection is busy, the new one
//!   is closed at once (counted as refused). Accepting and closing, rather than not
//!   accepting, keeps the kernel's backlog empty, so a client is told at once instead of
//!   hanging in the queue, and evicting idle connections first keeps a flood of idle or
//!   half-sent connections from locking out `/healthz` and real clients.
//! - **Accept errors**: a descriptor shortage (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`)
//!   closes the oldest idle connection, waits [`ACCEPT_BACKOFF`] and tries again, logging
//!   once per streak; errors of one connection (reset before accept) are skipped.
//! - **Shutdown**: once `shutdown` resolves, no more connections are accepted, idle ones
//!   close, and requests in progress finish (the caller bounds the wait).
//!
//! Handlers see the TCP peer as `ConnectInfo<SocketAddr>`. Metrics: the `scriptd_api_*`
//! names in [`crate::ops::telemetry`]; `/healthz` shows the `api` component degraded while
//! the cap is reached.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use super::tls::{CertResolver, TlsFileError};
use crate::ops::health::{self, Health};
use crate::ops::telemetry;
use crate::settings::ApiSettings;

/// Pause after an accept error such as `EMFILE` before the next accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the accept loop treats connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most connections open at once (`api.max_connections`).
    pub max_connections: usize,
    /// Time for the TLS handshake and for each request head (`api.header_read_timeout_seconds`).
    pub header_read_timeout: Duration,
    /// Longest pause between two pieces of a request body (`api.request_timeout_seconds`);
    /// past it reading the body fails and the request is answered with an error.
    pub body_timeout: Duration,
    /// HTTPS with this certificate when set.
    pub tls: Option<Arc<CertResolver>>,
    /// Where the `api` component is reported (degraded while the cap is reached).
    pub health: Option<Health>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            tls: None,
            health: None,
        }
    }
}

impl ServeOptions {
    /// The options `[api]` sets; with HTTPS, loads the certificate and reloads it on every
    /// SIGHUP until `stop`.
    pub fn from_settings(
        api: &ApiSettings,
        health: &Health,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ServeOptions, TlsFileError> {
        let tls = match api.tls.files() {
            None => None,
            Some((cert, key)) => {
                let resolver = Arc::new(CertResolver::load(cert, key)?);
                if let Err(e) = resolver.clone().reload_on_sighup(stop) {
                    tracing::error!(error = %e, "cannot handle SIGHUP; certificate renewals need a restart");
                }
                Some(resolver)
            }
        };
        Ok(ServeOptions {
            max_connections: api.max_connections as usize,
            header_read_timeout: api.header_read_timeout(),
            body_timeout: api.request_timeout(),
            tls,
            health: Some(health.clone()),
        })
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in progress
/// finish; see the module documentation.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Slots::new(options.max_connections, options.health.clone()));
    let acceptor = options.tls.as_ref().map(|r| tokio_rustls::TlsAcceptor::from(r.server_config()));
    let graceful = GracefulShutdown::new();
    let mut failing = false;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(found) => {
                if failing {
                    failing = false;
                    tracing::info!("API accepts connections again");
                }
                found
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                metrics::counter!(telemetry::API_ACCEPT_ERRORS).increment(1);
                if !failing {
                    failing = true;
                    tracing::error!(error = %e, "API cannot accept connections; closing idle ones and retrying");
                }
                slots.evict_idle();
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Some(slot) = slots.admit() else {
            metrics::counter!(telemetry::API_CONNECTIONS_REFUSED).increment(1);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let router = router.clone();
        let acceptor = acceptor.clone();
        let timeout = options.header_read_timeout;
        let timeouts = (timeout, options.body_timeout);
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(tcp, peer, router, slot, watcher, timeouts).await,
                Some(acceptor) => {
                    let evicted = slot.slot.evict.clone();
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(timeout, acceptor.accept(tcp)) => done,
                        () = evicted.notified() => return,
                    };
                    match handshake {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, router, slot, watcher, timeouts).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that `accept` reports (the next accept works).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted)
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    slot: SlotGuard,
    watcher: hyper_util::server::graceful::Watcher,
    (header_read_timeout, body_timeout): (Duration, Duration),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = slot.slot.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        let busy = Busy::new(state.clone());
        async move {
            let mut req = req.map(|b| Body::new(TimeoutBody::new(body_timeout, b)));
            req.extensions_mut().insert(ConnectInfo(peer));
            let response = match router.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(
                response.map(|body| Body::new(Tracked { inner: body, _busy: busy })),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
    let evicted = slot.slot.evict.clone();
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(client = %peer, error = %e, "API connection closed");
            }
        }
        () = evicted.notified() => {
            tracing::debug!(client = %peer, "idle API connection closed to make room");
        }
    }
    drop(slot);
}

/// The open connections, oldest first, and whether the cap is reached.
struct Slots {
    max: usize,
    health: Option<Health>,
    inner: Mutex<SlotsInner>,
}

#[derive(Default)]
struct SlotsInner {
    next_id: u64,
    /// Open connections not being evicted, by accept order.
    open: BTreeMap<u64, Arc<Slot>>,
    at_cap: bool,
}

/// One connection: requests in progress, and the signal that closes it.
#[derive(Default)]
struct Slot {
    busy: AtomicUsize,
    evict: Arc<Notify>,
}

/// Holds a connection's place; frees it on drop.
struct SlotGuard {
    id: u64,
    slot: Arc<Slot>,
    slots: Arc<Slots>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::API_CONNECTIONS_OPEN).decrement(1.0);
        let mut inner = self.slots.lock();
        inner.open.remove(&self.id);
        self.slots.update_health(&mut inner);
    }
}

impl Slots {
    fn new(max: usize, health: Option<Health>) -> Slots {
        if let Some(h) = &health {
            h.set_up(health::API);
        }
        Slots { max: max.max(1), health, inner: Mutex::new(SlotsInner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection: free, or made by closing the oldest idle connection;
    /// `None` when every open connection is busy.
    fn admit(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut inner = self.lock();
        if inner.open.len() >= self.max && !Self::evict_oldest_idle(&mut inner) {
            return None;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = Arc::new(Slot::default());
        inner.open.insert(id, slot.clone());
        self.update_health(&mut inner);
        metrics::gauge!(telemetry::API_CONNECTIONS_OPEN).increment(1.0);
        Some(SlotGuard { id, slot, slots: self.clone() })
    }

    /// Closes the oldest idle connection, if any (to free a descriptor).
    fn evict_idle(&self) {
        let mut inner = self.lock();
        Self::evict_oldest_idle(&mut inner);
        self.update_health(&mut inner);
    }

    fn evict_oldest_idle(inner: &mut SlotsInner) -> bool {
        let Some(id) =
            inner.open.iter().find(|(_, s)| s.busy.load(Ordering::Acquire) == 0).map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(slot) = inner.open.remove(&id) {
            // `notify_one` keeps the wake-up when the task is not waiting yet.
            slot.evict.notify_one();
            metrics::counter!(telemetry::API_CONNECTIONS_EVICTED).increment(1);
        }
        true
    }

    /// Reports the `api` component degraded while the cap is reached, up otherwise (only
    /// on a change).
    fn update_health(&self, inner: &mut SlotsInner) {
        let full = inner.open.len() >= self.max;
        if full == inner.at_cap {
            return;
        }
        inner.at_cap = full;
        let Some(h) = &self.health else { return };
        if full {
            h.set_degraded(
                health::API,
                format!(
                    "connection cap reached ({} open, api.max_connections); idle connections \
                     are closed to make room",
                    self.max
                ),
            );
        } else {
            h.set_up(health::API);
        }
    }
}

/// A request in progress on a connection, until its response body is done or dropped.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy while it is being sent (a
/// reaction stream stays busy as long as it is open).
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
