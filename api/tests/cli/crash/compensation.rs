//! The crash test of compensation (docs/compensation.md): a run faults, and its first
//! compensation's call is in flight when the `cairn worker` executing it is killed with SIGKILL.
//!
//! A loopback service on `127.0.0.1:0` counts requests by `Idempotency-Key`: it holds the first
//! compensation request open until the worker is dead, then answers everything at once. After a
//! restart the compensation must be sent again under the same key, every compensation must
//! complete exactly once in the log, and the run ends `compensated`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::PgDatabase;
use crate::common::Sandbox;

/// How long the test waits for the service to see what it expects before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn sqlite_compensation_in_flight() {
    let sandbox = Sandbox::new();
    let url = sandbox.store_named("crash-compensation");
    crash_during_compensation(&sandbox, &url);
}

#[test]
fn postgres_compensation_in_flight() {
    let sandbox = Sandbox::new();
    let Some(db) = PgDatabase::create() else {
        return;
    };
    crash_during_compensation(&sandbox, &db.url);
}

fn saga(port: u16) -> String {
    let base = format!("http://127.0.0.1:{port}");
    format!(
        r#"document: {{dsl: '1.0.3', namespace: crash, name: saga, version: '0.1.0'}}
use:
  functions:
    release:
      call: http
      with: {{method: post, endpoint: '{base}/release', body: {{undo: '${{ .output.id }}'}}}}
    refund:
      call: http
      with: {{method: post, endpoint: '{base}/refund', body: {{undo: '${{ .output.id }}'}}}}
do:
  - reserve:
      call: http
      with: {{method: post, endpoint: '{base}/reserve', body: {{do: reserve}}}}
      metadata: {{cairn.compensate: release}}
  - charge:
      call: http
      with: {{method: post, endpoint: '{base}/charge', body: {{do: charge}}}}
      metadata: {{cairn.compensate: refund}}
  - ship:
      raise:
        error: {{type: 'https://example.com/errors/no-courier', status: 503}}
"#
    )
}

fn crash_during_compensation(sandbox: &Sandbox, url: &str) {
    let service = Service::start();
    let def = sandbox.write("saga.yaml", &saga(service.port));
    let def = def.to_str().expect("a UTF-8 temporary path");
    let worker_args = ["worker", "--store", url, "--worker-name", "comp-crash"];
    let worker = sandbox.spawn(&worker_args);
    let o = sandbox.cairn(&["start", def, "--store", url]);
    o.expect_code(0);
    let run = o.stdout.trim().to_string();

    // The refund (the charge completed last) is in flight, held open by the service: kill -9.
    let refund_key = service.wait_for("/refund", 1);
    let o = worker.finish(Duration::ZERO);
    assert!(
        o.timed_out,
        "the worker exited before it was killed: {}",
        o.describe()
    );
    service.release();

    let last = sandbox
        .spawn(&[
            "worker",
            "--store",
            url,
            "--worker-name",
            "comp-crash",
            "--exit-when-idle",
        ])
        .finish(PATIENCE);
    assert_eq!(last.code, Some(0), "the last worker: {}", last.describe());

    // The refund was sent again under the same key, the release once; nothing else.
    let seen = service.requests();
    let refunds = &seen["/refund"];
    assert!(
        refunds.len() >= 2 && refunds.iter().all(|k| *k == refund_key),
        "the refund must be sent again under its key {refund_key} after the restart: {seen:?}"
    );
    assert_eq!(seen["/release"].len(), 1, "{seen:?}");
    assert_eq!(seen["/reserve"].len(), 1, "{seen:?}");
    assert_eq!(seen["/charge"].len(), 1, "{seen:?}");
    assert!(
        refund_key.starts_with(&format!("{run}:compensate:")),
        "a compensation's key names the run and the compensated activation: {refund_key}"
    );
    assert_ne!(seen["/release"][0], refund_key);

    // Each compensation started and completed exactly once in the log.
    let o = sandbox.cairn(&["history", &run, "--store", url, "--json"]);
    o.expect_code(0);
    let events = o.json_lines().expect("history as JSON lines");
    let of = |t: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == t).collect() };
    let started = of("CompensationStarted");
    assert_eq!(started.len(), 2, "{events:#?}");
    let frames: Vec<&Value> = started.iter().map(|e| &e["data"]["id"]).collect();
    for f in &frames {
        let done = of("TaskCompleted")
            .into_iter()
            .filter(|e| &&e["data"]["id"] == f)
            .count();
        let answered = of("ActivityCompleted")
            .into_iter()
            .filter(|e| &&e["data"]["id"] == f)
            .count();
        assert_eq!((done, answered), (1, 1), "compensation #{f}: {events:#?}");
    }
    assert_eq!(of("RunCompensating").len(), 1);
    assert_eq!(of("RunCompensated").len(), 1);
    let o = sandbox.cairn(&["status", &run, "--store", url, "--json"]);
    let status = o.json().expect("status as JSON");
    assert_eq!(status["status"], "compensated", "{status}");
    assert_eq!(status["error"]["status"], 503, "{status}");
}

// ----- the service ------------------------------------------------------------------------------

struct Shared {
    /// Path -> the `Idempotency-Key` of each request, in arrival order.
    seen: Mutex<BTreeMap<String, Vec<String>>>,
    released: tokio::sync::watch::Sender<bool>,
}

/// A loopback HTTP service whose `/refund` requests wait until [`Service::release`].
struct Service {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    fn start() -> Service {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("a local address").port();
        let shared = Arc::new(Shared {
            seen: Mutex::new(BTreeMap::new()),
            released: tokio::sync::watch::channel(false).0,
        });
        let app = Router::new()
            .route("/{step}", post(handle))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Service {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn requests(&self) -> BTreeMap<String, Vec<String>> {
        let mut m = self.shared.seen.lock().expect("the log").clone();
        for p in ["/reserve", "/charge", "/refund", "/release"] {
            m.entry(p.to_string()).or_default();
        }
        m
    }

    /// Waits until `path` got `n` requests; the key of the first.
    fn wait_for(&self, path: &str, n: usize) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = self.requests();
            if seen[path].len() >= n {
                return seen[path][0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{path} got no request within {PATIENCE:?}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn release(&self) {
        // `send` would not store the value while no request waits (no receiver).
        self.shared.released.send_replace(true);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.release();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(step): axum::extract::Path<String>,
    headers: HeaderMap,
    _body: Bytes,
) -> Json<Value> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = format!("/{step}");
    if let Ok(mut m) = shared.seen.lock() {
        m.entry(path.clone()).or_default().push(key.clone());
    }
    if path == "/refund" {
        let mut released = shared.released.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }
    Json(json!({ "id": format!("{step}-1"), "key": key }))
}
