//! The server: the runtime behind a GraphQL API, as a component ([`Server`]) that `cairn serve`
//! and the benchmarks (`tests/bench`) start alike.
//!
//! - [`ServerOptions`](crate::options::ServerOptions): what a server is built from (the flags
//!   of `cairn serve`); `config`: `--config FILE` (flag > environment > file > default).
//! - `schema`: queries and mutations; `subscriptions`: live feeds; `errors`: `extensions.code`.
//! - `feed`: the log follower every subscription reads from.
//! - `metrics`: Prometheus collectors and the HTTP timing middleware.
//! - `auth`: tokens, roles, guards and the per-token rate limiter; `tokens`: `cairn token` and
//!   the admin's token fields.
//!
//! Access: every GraphQL request needs `Authorization: Bearer <token>` (WebSocket: on the upgrade
//! request or in the `connection_init` payload) unless `--insecure-no-auth`; the health, metrics
//! and GraphiQL routes are open. Limits: body size (413), request timeout (408), per-token rate
//! (429 with `Retry-After`), query depth and complexity, optional introspection; open
//! connections, the time to send a request's headers, the time to send `connection_init`, live
//! subscriptions per socket and per token (see `limits`).
//!
//! Routes: `POST /graphql`, `GET /graphql` (GraphiQL), `GET /graphql/ws` (subscriptions over
//! `graphql-transport-ws` or the legacy `graphql-ws`), `/healthz`, `/readyz`, `/metrics`.
//!
//! Life cycle: bind, answer `/healthz` (and `/readyz` with 503) while the runtime opens the
//! store and resumes runs, then print the address (`listening on`) and serve. On SIGTERM or Ctrl-C: `/readyz` says
//! 503 and GraphQL takes no new request, subscriptions end, in-flight requests finish, the
//! workers record what they are doing, exit 0.

mod auth;
pub(crate) mod config;
pub(crate) mod errors;
mod feed;
mod limits;
mod metrics;
mod schema;
mod subscriptions;
mod tokens;

pub(crate) use self::tokens::{run as token_command, TokenCommand};

pub use crate::options::ServerOptions;
use crate::options::DEFAULT_STORE;

pub use crate::options::{MAX_QUERY_COMPLEXITY, MAX_QUERY_DEPTH};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cairn_connectors::{AllowList, HttpConnector};
use cairn_core::activity::{NoSecrets, Secrets};
use cairn_runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::feed::{FeedOptions, LogFeed};
use self::metrics::Metrics;
use self::schema::{App, CairnSchema};

/// A failure of `cairn token`, with the exit code of the CLI contract.
pub(crate) use crate::failure::{redact, Failure as ServeFailure};

pub(crate) fn fail(code: u8, error: impl Into<anyhow::Error>) -> ServeFailure {
    ServeFailure {
        code,
        error: error.into(),
    }
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// What the HTTP handlers share. The API is set once the runtime is up.
struct Shared {
    phase: AtomicU8,
    api: OnceLock<(App, CairnSchema)>,
    access: auth::Access,
    /// Time a WebSocket has to send `connection_init`.
    ws_init_timeout: Duration,
}

impl Shared {
    /// The API, while the server takes requests.
    fn api(&self) -> Option<&(App, CairnSchema)> {
        if self.phase.load(Ordering::Acquire) == READY {
            self.api.get()
        } else {
            None
        }
    }
}

/// Why a server could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The options cannot work (a bad value, an invalid store URL, an unreadable secrets file):
    /// `cairn serve` exits 2.
    #[error("{0}")]
    Invalid(String),
    /// The store, the network or the runtime failed: `cairn serve` exits 4.
    #[error("{0}")]
    Failed(String),
}

impl From<crate::options::InvalidOptions> for ServerError {
    fn from(e: crate::options::InvalidOptions) -> Self {
        ServerError::Invalid(e.0)
    }
}

impl ServerError {
    /// The exit code of the CLI contract: 2 for [`ServerError::Invalid`], 4 for
    /// [`ServerError::Failed`].
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Invalid(_) => 2,
            ServerError::Failed(_) => 4,
        }
    }

    fn failed(e: &(dyn std::error::Error + 'static)) -> Self {
        ServerError::Failed(chain(e))
    }

    fn invalid(e: &(dyn std::error::Error + 'static)) -> Self {
        ServerError::Invalid(chain(e))
    }
}

/// An error and its causes on one line, `outer: cause: ...`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A server that is up: listening, its store open and migrated, its runtime resumed, taking
/// requests. [`Server::run`] serves until a shutdown future resolves, then drains.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Runtime,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    tracker: TaskTracker,
    /// Ends the HTTP server (graceful).
    stop: CancellationToken,
    /// Ends subscriptions and the log follower.
    drain: CancellationToken,
    drain_timeout: Duration,
}

impl Server {
    /// Binds `options.listen`, opens the store and starts the runtime the options describe
    /// (workers unless `no_workers`), and takes requests once they are up. While the store
    /// opens, `/healthz` already answers and `/readyz` says 503.
    pub async fn build(options: ServerOptions) -> Result<Server, ServerError> {
        Self::start(options, None).await
    }

    /// As [`Server::build`], serving `runtime` instead of building one: for an application (or
    /// a benchmark) that registers functions of its own. The options' store, secrets, worker,
    /// lease and outbound settings are then the runtime's business and are not read; the
    /// server shuts the runtime down when it stops.
    pub async fn build_with_runtime(
        options: ServerOptions,
        runtime: Runtime,
    ) -> Result<Server, ServerError> {
        Self::start(options, Some(runtime)).await
    }

    async fn start(args: ServerOptions, given: Option<Runtime>) -> Result<Server, ServerError> {
        // One registry for the runtime's collectors and the server's, served at `/metrics`.
        let runtime_metrics = match &given {
            Some(rt) => rt.metrics().clone(),
            None => cairn_runtime::metrics::Metrics::new().map_err(|e| ServerError::failed(&e))?,
        };
        let metrics = Metrics::new(runtime_metrics.clone()).map_err(|e| ServerError::failed(&e))?;
        args.validate()?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| ServerError::Failed(format!("cannot listen on {}: {e}", args.listen)))?;
        let addr = listener.local_addr().map_err(|e| ServerError::failed(&e))?;

        let shared = Arc::new(Shared {
            phase: AtomicU8::new(STARTING),
            api: OnceLock::new(),
            access: auth::Access::new(
                args.insecure_no_auth,
                args.rate_limit,
                args.rate_limit_burst,
            ),
            ws_init_timeout: Duration::from_millis(args.ws_init_timeout_ms),
        });
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let router = router(
            shared.clone(),
            metrics.clone(),
            args.max_body_bytes,
            Duration::from_millis(args.request_timeout_ms),
        );
        let http_limits = limits::HttpLimits {
            max_connections: args.max_connections,
            header_timeout: Duration::from_millis(args.header_timeout_ms),
        };
        let http = tracker.spawn(limits::serve_http(
            listener,
            router,
            http_limits,
            stop.clone(),
        ));

        let built = match given {
            Some(rt) => Ok(rt),
            None => build_runtime(&args, runtime_metrics).await,
        };
        let runtime = match built {
            Ok(rt) => rt,
            Err(f) => {
                stop.cancel();
                tracker.close();
                tracker.wait().await;
                return Err(f);
            }
        };
        let store = runtime.store();
        let tail = match runtime.log_tail().await {
            Ok(t) => t,
            Err(e) => {
                stop.cancel();
                runtime.shutdown().await;
                tracker.close();
                tracker.wait().await;
                return Err(ServerError::Failed(format!("cannot read the log: {e}")));
            }
        };
        let feed = LogFeed::start(
            &tail,
            store.clone(),
            FeedOptions::default(),
            metrics.clone(),
            &tracker,
            drain.clone(),
        );
        let app = App {
            runtime: runtime.clone(),
            store,
            feed,
            metrics,
            shutdown: drain.clone(),
        };
        let limits = schema::Limits {
            depth: args.max_query_depth,
            complexity: args.max_query_complexity,
            introspection: !args.no_introspection,
        };
        let subscription_limits = limits::SubscriptionLimits::new(
            args.max_subscriptions_per_connection,
            args.max_subscriptions_per_token,
            shared.access.limiter(),
        );
        let schema = schema::build(Some(app.clone()), limits, Some(subscription_limits));
        if shared.api.set((app, schema)).is_err() {
            return Err(ServerError::Failed("the API was set up twice".into()));
        }
        shared.phase.store(READY, Ordering::Release);
        Ok(Server {
            addr,
            shared,
            runtime,
            http,
            tracker,
            stop,
            drain,
            drain_timeout: Duration::from_secs(args.drain_timeout),
        })
    }

    /// Where the server listens (the port picked, when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The runtime behind the API.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Serves until `shutdown` resolves (or the HTTP server fails), then stops intake:
    /// `/readyz` and GraphQL answer 503, subscriptions end, in-flight requests finish and the
    /// runtime shuts down, within `drain_timeout` (what is left in flight resumes on the next
    /// worker). Reports its stopping on stderr, as `cairn serve` does.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            shared,
            runtime,
            mut http,
            tracker,
            stop,
            drain,
            drain_timeout,
            ..
        } = self;
        let crashed = tokio::select! {
            _ = shutdown => false,
            r = &mut http => {
                eprintln!("error: the HTTP server stopped: {r:?}");
                true
            }
        };
        // Stop intake: readiness and GraphQL answer 503 from now on.
        shared.phase.store(DRAINING, Ordering::Release);
        eprintln!("cairn serve stopping");
        drain.cancel();
        stop.cancel();
        let drained = tokio::time::timeout(drain_timeout, async {
            if !crashed {
                let _ = http.await;
            }
            runtime.shutdown().await;
            tracker.close();
            tracker.wait().await;
        })
        .await;
        if drained.is_err() {
            eprintln!(
                "cairn serve: drain timed out after {}s; runs left in flight resume on the next worker",
                drain_timeout.as_secs()
            );
        }
        if crashed {
            return Err(ServerError::Failed(
                "the HTTP server stopped unexpectedly".into(),
            ));
        }
        Ok(())
    }
}

/// Runs `cairn serve` until SIGTERM or Ctrl-C.
pub(crate) async fn serve(args: ServerOptions) -> Result<u8, ServerError> {
    // Checked before the warning, so that bad settings are refused before anything is said.
    args.validate()?;
    if args.insecure_no_auth {
        eprintln!(
            "\n!!! WARNING: --insecure-no-auth: this server accepts EVERY request WITHOUT A TOKEN,\n\
             !!! as an admin. Use it on a developer machine only, never on a network.\n"
        );
    }
    let no_workers = args.no_workers;
    let server = Server::build(args).await?;
    // Only now: a caller that waits for this line finds the store open and migrated.
    eprintln!("cairn serve listening on http://{}", server.local_addr());
    eprintln!(
        "cairn serve ready ({})",
        if no_workers {
            "API only, no workers"
        } else {
            "API and workers"
        }
    );
    server.run(shutdown_signal()).await?;
    Ok(0)
}

async fn build_runtime(
    args: &ServerOptions,
    metrics: cairn_runtime::metrics::Metrics,
) -> Result<Runtime, ServerError> {
    let secrets: Secrets = match &args.secrets {
        Some(p) => Arc::new(
            crate::secrets::FileSecrets::read(p)
                .map_err(|e| ServerError::Invalid(format!("{e:#}")))?,
        ),
        None => Arc::new(NoSecrets),
    };
    // The definitions a server runs come from its API clients, who must not reach what only
    // the server's host can (loopback, the store, cloud metadata): guarded by default.
    let options = args.outbound().http_options(AllowList::none());
    let http = HttpConnector::new(options, secrets.clone()).map_err(|e| ServerError::failed(&e))?;
    args.lease()
        .apply(Runtime::builder())
        .store_url(&args.store)
        .secrets(secrets)
        .http(Arc::new(http))
        .workers(!args.no_workers)
        .metrics(metrics)
        .build()
        .await
        .map_err(|e| match e {
            cairn_runtime::Error::Store(cairn_runtime::store::StoreError::InvalidUrl {
                ..
            }) => ServerError::invalid(&e),
            other => ServerError::Failed(format!("store {}: {other}", redact(&args.store))),
        })
}

fn router(shared: Arc<Shared>, metrics: Metrics, body_limit: usize, timeout: Duration) -> Router {
    let api = Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(subscriptions))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared);
    let ops = Router::new()
        .route("/metrics", get(metrics::serve))
        .with_state(metrics.clone());
    api.merge(ops)
        .layer(axum::middleware::from_fn_with_state(timeout, limit_time))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// The request timeout: reading the body and answering must fit in `limit` (a WebSocket counts
/// until it is upgraded; the connection then lives on its own).
async fn limit_time(
    State(limit): State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refusal(
            StatusCode::REQUEST_TIMEOUT,
            errors::Code::Timeout,
            &format!("the request took longer than {} ms", limit.as_millis()),
        ),
    }
}

/// An error answered before GraphQL runs, shaped like a GraphQL response.
fn refusal(status: StatusCode, code: errors::Code, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({
            "errors": [{ "message": message, "extensions": { "code": code.as_str() } }]
        })),
    )
        .into_response()
}

/// The HTTP answer to a refused request.
fn refused(r: auth::Refusal) -> Response {
    match r {
        auth::Refusal::Unauthenticated(m) => {
            let mut resp = refusal(StatusCode::UNAUTHORIZED, errors::Code::Unauthenticated, m);
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            resp
        }
        auth::Refusal::RateLimited(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut resp = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                errors::Code::RateLimited,
                &format!("rate limit exceeded; retry after {secs} s"),
            );
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
            resp
        }
        auth::Refusal::Store(e) => {
            let _ = errors::internal("authenticate", e);
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                errors::Code::Internal,
                "internal error; the server log has the details",
            )
        }
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""))
}

/// 503 with a GraphQL-shaped body, for requests that arrive while starting or draining.
fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "errors": [{
                "message": "the server is starting or stopping; try again",
                "extensions": { "code": errors::Code::Unavailable.as_str() }
            }]
        })),
    )
        .into_response()
}

async fn graphql(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some((app, schema)) = shared.api() else {
        return unavailable();
    };
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                errors::Code::BadUserInput,
                "the request body is larger than the server accepts",
            )
        }
        Err(r) => {
            return refusal(
                r.status(),
                errors::Code::BadUserInput,
                "cannot read the request body",
            )
        }
    };
    let principal = match shared
        .access
        .authorize(app.store.as_ref(), authorization(&headers))
        .await
    {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    let req: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                errors::Code::BadUserInput,
                &format!("the body is not a GraphQL request: {e}"),
            )
        }
    };
    GraphQLResponse::from(schema.execute(req.data(principal)).await).into_response()
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

async fn subscriptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    slot: Option<axum::Extension<limits::ConnectionSlot>>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some((app, schema)) = shared.api() else {
        return unavailable();
    };
    // A token on the upgrade request is checked now; otherwise `connection_init` may carry one
    // (`{"Authorization": "Bearer ..."}`), the only place browsers can put it.
    let upgraded_as = match authorization(&headers) {
        Some(h) => match shared.access.authorize(app.store.as_ref(), Some(h)).await {
            Ok(p) => Some(p),
            Err(r) => return refused(r),
        },
        None => None,
    };
    let (schema, drain) = (schema.clone(), app.shutdown.clone());
    let init_timeout = shared.ws_init_timeout;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // tungstenite zero-fills its read buffer before each read; subscribers send almost
        // nothing, so a small buffer saves that work on every poll of every socket.
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| async move {
            // The socket counts as an open connection for as long as it is open.
            let _slot = slot;
            let handshake = limits::Handshake::default();
            let init = {
                let handshake = handshake.clone();
                move |payload: serde_json::Value| {
                    let shared = shared.clone();
                    async move {
                        let (data, authenticated) =
                            connection_data(&shared, upgraded_as, &payload).await;
                        handshake.initialised(authenticated);
                        Ok(data)
                    }
                }
            };
            let (mut sink, stream) = futures::StreamExt::split(socket);
            let expired = {
                let connection =
                    GraphQLWebSocket::new_with_pair(&mut sink, stream, schema, protocol)
                        .on_connection_init(init)
                        .serve();
                tokio::select! {
                    _ = connection => None,
                    close = handshake.expired(init_timeout) => Some(close),
                    // Subscriptions end on drain; give their `complete` messages a moment to
                    // leave.
                    _ = async {
                        drain.cancelled().await;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    } => None,
                }
            };
            if let Some((code, reason)) = expired {
                let close =
                    axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
                        code,
                        reason: reason.into(),
                    }));
                let _ = futures::SinkExt::send(&mut sink, close).await;
            }
        })
}

/// The data of a WebSocket connection: its [`auth::Principal`], or why it has none (then every
/// subscription it starts fails with that code: deny by default, with a structured error), and
/// whether it has a principal.
async fn connection_data(
    shared: &Shared,
    upgraded_as: Option<auth::Principal>,
    payload: &serde_json::Value,
) -> (async_graphql::Data, bool) {
    let mut data = async_graphql::Data::default();
    data.insert(limits::ConnectionSubscriptions::default());
    if let Some(p) = upgraded_as {
        data.insert(p);
        return (data, true);
    }
    let Some((app, _)) = shared.api() else {
        data.insert(auth::Denied {
            code: errors::Code::Unavailable,
            message: "the server is starting or stopping; try again".into(),
        });
        return (data, false);
    };
    let header = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k))
        .map(|v| v.as_str().unwrap_or(""));
    match shared.access.authorize(app.store.as_ref(), header).await {
        Ok(p) => {
            data.insert(p);
            return (data, true);
        }
        Err(auth::Refusal::Unauthenticated(m)) => data.insert(auth::Denied {
            code: errors::Code::Unauthenticated,
            message: m.into(),
        }),
        Err(auth::Refusal::RateLimited(wait)) => data.insert(auth::Denied {
            code: errors::Code::RateLimited,
            message: format!(
                "rate limit exceeded; retry after {} s",
                wait.as_secs_f64().ceil().max(1.0)
            ),
        }),
        Err(auth::Refusal::Store(e)) => {
            let _ = errors::internal("authenticate", e);
            data.insert(auth::Denied {
                code: errors::Code::Internal,
                message: "internal error; the server log has the details".into(),
            })
        }
    }
    (data, false)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    match shared.phase.load(Ordering::Acquire) {
        STARTING => return (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        DRAINING => return (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        _ => {}
    }
    let Some((app, _)) = shared.api() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting");
    };
    // The cheapest query both stores answer: a point read that finds nothing.
    let probe = tokio::time::timeout(Duration::from_secs(2), app.store.get_run("readyz-probe"));
    match probe.await {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable"),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
