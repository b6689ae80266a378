//! Poison runs (issue 8): a run whose step keeps killing the worker that claims it is faulted,
//! with an event saying why, after `--max-crashes` claims in a row that recorded nothing; it does
//! not take down every worker of a fleet in turn. A graceful stop is no crash.
//!
//! The step that "crashes" its worker is a call to a loopback server that accepts the request
//! and never answers; the test then kills the worker with SIGKILL, as the OOM killer would a
//! worker whose step exhausted its memory. Each restart uses the same worker name, so the run is
//! released at once (no lease to wait out).

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Running, Sandbox};

/// A loopback HTTP server that reads each request and never answers; counts the requests.
struct Hang {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl Hang {
    fn start() -> Hang {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 4096];
                if matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                // Kept open and unanswered: the call hangs until its worker dies.
                held.push(conn);
            }
        });
        Hang { port, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests have arrived.
    fn wait_for(&self, n: usize, worker: &mut Running) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.requests() < n {
            assert!(
                worker.still_running(),
                "the worker exited before making call {n}"
            );
            assert!(Instant::now() < deadline, "call {n} never arrived");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn definition(sb: &Sandbox, port: u16) -> String {
    let text = format!(
        "document: {{ dsl: '1.0.3', namespace: test, name: poison, version: '1.0.0' }}\n\
         do:\n\
         \x20 - hang:\n\
         \x20     call: http\n\
         \x20     with: {{ method: get, endpoint: 'http://127.0.0.1:{port}/never' }}\n"
    );
    sb.write("poison.yaml", &text).display().to_string()
}

fn start(sb: &Sandbox, store: &str, file: &str) -> String {
    let out = sb.cairn(&["start", file, "--store", store]);
    out.expect_code(0);
    out.stdout.trim().to_string()
}

fn worker(sb: &Sandbox, store: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "worker",
        "--store",
        store,
        "--worker-name",
        "w",
        "--max-crashes",
        "2",
    ];
    args.extend_from_slice(extra);
    sb.spawn(&args)
}

fn status(sb: &Sandbox, store: &str, run: &str) -> Value {
    let out = sb.cairn(&["status", run, "--json", "--store", store]);
    out.expect_code(0);
    out.json()
        .unwrap_or_else(|| panic!("status --json: {}", out.describe()))
}

#[test]
fn a_run_that_keeps_killing_its_worker_is_faulted_after_max_crashes() {
    let sb = Sandbox::new();
    let store = sb.store();
    let hang = Hang::start();
    let file = definition(&sb, hang.port);
    let run = start(&sb, &store, &file);

    // Two claims in a row end with the worker dead and nothing recorded.
    for n in 1..=2 {
        let mut w = worker(&sb, &store, &[]);
        hang.wait_for(n, &mut w);
        w.kill();
    }
    // The third claim faults the run instead of making the call again, and the worker lives on.
    let out = worker(&sb, &store, &["--exit-when-idle"]).finish(Duration::from_secs(60));
    out.expect_code(0);
    assert_eq!(
        hang.requests(),
        2,
        "the poison run's call is not made again"
    );
    let s = status(&sb, &store, &run);
    assert_eq!(s["status"], "faulted", "{s}");
    let error = &s["error"];
    assert_eq!(error["title"], "Poison run", "{s}");
    assert_eq!(
        error["type"], "https://serverlessworkflow.io/spec/1.0.0/errors/runtime",
        "{s}"
    );
    let detail = error["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("claimed 2 times") && detail.contains("max_crashes is 2"),
        "{s}"
    );

    // The history says why, and a retry starts counting again: the call is made once more.
    let history = sb.cairn(&["history", &run, "--store", &store]);
    history.expect_code(0);
    assert!(
        history.stdout.contains("RunFaulted"),
        "{}",
        history.describe()
    );
    sb.cairn(&["retry", &run, "--store", &store]).expect_code(0);
    let mut w = worker(&sb, &store, &[]);
    hang.wait_for(3, &mut w);
    w.kill();
}

#[test]
fn graceful_stops_do_not_count_as_crashes() {
    let sb = Sandbox::new();
    let store = sb.store();
    let hang = Hang::start();
    let file = definition(&sb, hang.port);
    let run = start(&sb, &store, &file);

    // Three graceful stops while the call hangs: each gives its claim back. The call in flight
    // is abandoned after the grace period, so each stop takes seconds, not the call's timeout.
    for n in 1..=3 {
        let mut w = worker(&sb, &store, &[]);
        hang.wait_for(n, &mut w);
        // Killed (and so failing here) if it were still waiting for the call's 30 s timeout.
        w.terminate(Duration::from_secs(20)).expect_code(0);
    }
    // A fourth worker still makes the call: the run is not poison.
    let mut w = worker(&sb, &store, &[]);
    hang.wait_for(4, &mut w);
    w.kill();
    let s = status(&sb, &store, &run);
    assert_ne!(s["status"], "faulted", "{s}");
}
