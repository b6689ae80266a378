//! The loopback HTTP sink of the crash and fault tests: `POST /sink` on `127.0.0.1:0` records
//! every delivery (time, `Idempotency-Key`, body, status), applies each key once and answers
//! `{echo, value}` with `value = run * value_per_run + step`, the same answer for every delivery
//! of a key. The first attempt (`...:0`) of a call marked `flaky` gets a 503, whatever the
//! delivery, so the number of attempts never depends on where the kills and faults land.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::common::now_ms;

/// How long the sink takes to answer after it applied a request: the window in which a kill or
/// a fault leaves a call done at the sink but not recorded, so that it must be sent again.
const LATENCY: Duration = Duration::from_millis(40);

#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: i64,
    pub key: Option<String>,
    pub body: Value,
    pub status: u16,
    /// The first delivery of its key that was applied.
    pub applied: bool,
}

#[derive(Default)]
pub struct SinkLog {
    pub deliveries: Vec<Delivery>,
    /// Key -> the body it was applied with.
    pub applied: HashMap<String, Value>,
    /// (run, step) -> the keys under which that effect was applied.
    pub effects: BTreeMap<(i64, i64), Vec<String>>,
}

/// The Tokio runtime that serves the sink.
pub enum Threads {
    /// A current-thread runtime.
    Current,
    /// A multi-thread runtime with this many workers.
    Multi(usize),
}

struct Shared {
    log: Mutex<SinkLog>,
    /// The factor of `run` in the answer's `value`.
    value_per_run: i64,
}

pub struct Sink {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink answering `value = run * value_per_run + step`, served on a thread of its own
    /// until it is dropped.
    pub fn start(value_per_run: i64, threads: Threads) -> Sink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("a local address").port();
        let shared = Arc::new(Shared {
            log: Mutex::new(SinkLog::default()),
            value_per_run,
        });
        let app = Router::new()
            .route("/sink", post(deliver))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut builder = match threads {
                Threads::Current => tokio::runtime::Builder::new_current_thread(),
                Threads::Multi(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
            };
            let rt = builder
                .enable_all()
                .build()
                .expect("a Tokio runtime for the sink");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a Tokio listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Sink {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// What the sink recorded so far; it starts a new log.
    pub fn take_log(&self) -> SinkLog {
        match self.shared.log.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn deliver(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, reply) = apply(&shared, key, body);
    tokio::time::sleep(LATENCY).await;
    (status, Json(reply)).into_response()
}

/// Records a delivery and applies it unless its key was applied before; the answer is the same
/// for every delivery of a key.
fn apply(shared: &Shared, key: Option<String>, body: Value) -> (StatusCode, Value) {
    let at = now_ms();
    let run = body.get("run").and_then(Value::as_i64);
    let step = body.get("step").and_then(Value::as_i64);
    let flaky = body.get("flaky") == Some(&Value::Bool(true));
    let mut log = match shared.log.lock() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    let mut first = false;
    let (status, reply) = match (&key, run, step) {
        (Some(k), Some(r), Some(s)) => {
            // The attempt is the key's last segment (`run:frame:attempt`).
            if flaky && k.ends_with(":0") {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "try again"}),
                )
            } else {
                if !log.applied.contains_key(k) {
                    first = true;
                    log.applied.insert(k.clone(), body.clone());
                    log.effects.entry((r, s)).or_default().push(k.clone());
                }
                (
                    StatusCode::OK,
                    json!({ "echo": body, "value": r * shared.value_per_run + s }),
                )
            }
        }
        _ => (
            StatusCode::BAD_REQUEST,
            json!({"error": "an Idempotency-Key header and a body {run, step} are required"}),
        ),
    };
    log.deliveries.push(Delivery {
        at,
        key,
        body,
        status: status.as_u16(),
        applied: first,
    });
    (status, reply)
}
