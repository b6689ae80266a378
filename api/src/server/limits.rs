//! What keeps one client from taking the server down by volume: the HTTP accept loop (a cap on
//! open connections, a deadline for each request's headers), the WebSocket handshake deadline
//! (`connectionInitWaitTimeout` of graphql-transport-ws) and the caps on live subscriptions
//! (per connection, per token) with subscribe messages charged to the token's rate.
//!
//! A WebSocket without a valid token (none on the upgrade request, none valid in
//! `connection_init`) is closed after the same deadline: its subscriptions are refused with
//! `UNAUTHENTICATED` meanwhile, but it cannot stay open.
//!
//! `axum::serve` has none of the first two (no timer, no cap), so the server runs its own accept
//! loop over hyper's HTTP/1.1 connection builder.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextSubscribe};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::{Response, ServerError};
use axum::Router;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{Principal, RateLimiter};
use super::errors::Code;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Open connections at most (WebSockets included); over it, new ones are refused at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the connection opens or
    /// the previous answer was sent: slow senders and idle keep-alive connections are closed.
    pub header_timeout: Duration,
}

/// One open connection's place under [`HttpLimits::max_connections`]. Requests carry it (as an
/// extension) so that a WebSocket keeps it after the upgrade, for as long as it is open.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// What a refused connection reads, if it reads anything: the cap is not an error of its request.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Retry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 41\r\n\r\n\
too many open connections; try again soon";

/// Serves `router` on `listener` until `stop`, then lets open requests finish.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // little instead of spinning, and go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse(tcp, peer);
            continue;
        };
        let slot = ConnectionSlot(Arc::new(permit));
        connections.spawn(connection(tcp, router.clone(), slot, limits, stop.clone()));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Over the cap: answer 503 if the socket takes it without waiting, and close.
fn refuse(tcp: TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "connection refused: too many open connections");
    let _ = tcp.try_write(TOO_MANY);
}

async fn connection(
    tcp: TcpStream,
    router: Router,
    slot: ConnectionSlot,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(slot.clone());
        let mut router = router.clone();
        async move {
            // The router is always ready: no `poll_ready` needed.
            tower_service::Service::call(&mut router, req).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The close code and reason graphql-transport-ws gives a socket that sent no
/// `connection_init` in time.
pub const INIT_TIMEOUT_CLOSE: (u16, &str) = (4408, "Connection initialisation timeout");

/// The close of a socket whose `connection_init` carried no valid token, once the same deadline
/// passed (its subscriptions were refused with `UNAUTHENTICATED` meanwhile).
pub const UNAUTHENTICATED_CLOSE: (u16, &str) = (4403, "Forbidden");

const WAITING: u8 = 0;
const ANONYMOUS: u8 = 1;
const AUTHENTICATED: u8 = 2;

/// Where a WebSocket is in its handshake: nothing yet, `connection_init` without a valid token,
/// or authenticated.
#[derive(Clone, Default)]
pub struct Handshake(Arc<AtomicU8>);

impl Handshake {
    /// Records that `connection_init` arrived, and whether it brought a principal.
    pub fn initialised(&self, authenticated: bool) {
        let state = if authenticated {
            AUTHENTICATED
        } else {
            ANONYMOUS
        };
        self.0.store(state, Ordering::Release);
    }

    /// Resolves `after` the upgrade with the close to send, unless the socket is authenticated
    /// by then (then never): a socket without a principal is held for a bounded time only.
    pub async fn expired(&self, after: Duration) -> (u16, &'static str) {
        tokio::time::sleep(after).await;
        match self.0.load(Ordering::Acquire) {
            WAITING => INIT_TIMEOUT_CLOSE,
            ANONYMOUS => UNAUTHENTICATED_CLOSE,
            _ => std::future::pending().await,
        }
    }
}

/// Caps on live subscriptions, and the rate of subscribe messages.
#[derive(Clone)]
pub struct SubscriptionLimits(Arc<SubscriptionState>);

struct SubscriptionState {
    per_connection: usize,
    per_token: usize,
    /// Each token's subscribe messages are charged to its request rate (none: no rate).
    rate: Option<Arc<RateLimiter>>,
    by_token: Mutex<HashMap<String, usize>>,
}

/// The live subscriptions of one WebSocket connection (its connection data).
#[derive(Clone, Default)]
pub struct ConnectionSubscriptions(Arc<AtomicUsize>);

impl SubscriptionLimits {
    /// At most `per_connection` live subscriptions on one socket and `per_token` across a
    /// token's sockets; each subscribe message takes one request from `rate`.
    pub fn new(per_connection: usize, per_token: usize, rate: Option<Arc<RateLimiter>>) -> Self {
        SubscriptionLimits(Arc::new(SubscriptionState {
            per_connection,
            per_token,
            rate,
            by_token: Mutex::new(HashMap::new()),
        }))
    }

    /// Takes a place for one more subscription, or says why not.
    fn admit(&self, ctx: &ExtensionContext<'_>) -> Result<Option<Ticket>, ServerError> {
        let s = &self.0;
        // Without a principal the subscription is refused anyway (`auth::Authenticated`).
        let Some(p) = ctx.data_opt::<Principal>() else {
            return Ok(None);
        };
        if let Some(rate) = &s.rate {
            rate.check(&p.token_id, Instant::now()).map_err(|wait| {
                refusal(
                    Code::RateLimited,
                    format!(
                        "rate limit exceeded; retry after {} s",
                        wait.as_secs_f64().ceil().max(1.0)
                    ),
                )
            })?;
        }
        let connection = ctx.data_opt::<ConnectionSubscriptions>().cloned();
        if let Some(c) = &connection {
            let admitted =
                c.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < s.per_connection).then_some(n + 1)
                })
                .is_ok();
            if !admitted {
                return Err(refusal(
                    Code::LimitExceeded,
                    format!(
                        "this connection already has {} live subscriptions, the most allowed; \
                         complete one first",
                        s.per_connection
                    ),
                ));
            }
        }
        let mut by_token = s.by_token.lock().unwrap_or_else(PoisonError::into_inner);
        let n = by_token.entry(p.token_id.clone()).or_insert(0);
        if *n >= s.per_token {
            drop(by_token);
            if let Some(c) = &connection {
                c.0.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(refusal(
                Code::LimitExceeded,
                format!(
                    "this token already has {} live subscriptions, the most allowed; complete \
                     one first",
                    s.per_token
                ),
            ));
        }
        *n += 1;
        Ok(Some(Ticket {
            limits: self.clone(),
            token_id: p.token_id.clone(),
            connection,
        }))
    }
}

fn refusal(code: Code, message: String) -> ServerError {
    let mut e = ServerError::new(message, None);
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
    e
}

/// A live subscription's place; given back when the subscription's stream is dropped
/// (completed by either side, or its socket closed).
struct Ticket {
    limits: SubscriptionLimits,
    token_id: String,
    connection: Option<ConnectionSubscriptions>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(c) = &self.connection {
            c.0.fetch_sub(1, Ordering::AcqRel);
        }
        let mut by_token = self
            .limits
            .0
            .by_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = by_token.get_mut(&self.token_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_token.remove(&self.token_id);
            }
        }
    }
}

impl ExtensionFactory for SubscriptionLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for SubscriptionLimits {
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        match self.admit(ctx) {
            Ok(ticket) => next
                .run(ctx, stream)
                .map(move |r| {
                    let _held = &ticket;
                    r
                })
                .boxed(),
            // One `next` with the error, then `complete`: the operation ends, the socket stays.
            Err(e) => futures::stream::once(async move { Response::from_errors(vec![e]) }).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_fits_its_content_length() {
        let text = std::str::from_utf8(TOO_MANY).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
    }
}
