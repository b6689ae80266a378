//! The outbound guard through the user's path: a definition deployed to a real `cairn serve`
//! tries to reach this machine (loopback in every notation, `localhost`, the local PostgreSQL,
//! a redirect from an allowed server), and `cairn run` / `cairn worker` as local tools. Every
//! destination is on this machine; nothing here reaches beyond it.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::common::Sandbox;

/// Calls the URL of its input, following redirects.
const FETCH: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: fetch
  version: '1.0.0'
do:
  - fetch:
      call: http
      with:
        method: get
        endpoint: ${ .url }
        redirect: true
"#;

/// A server on `ip` counting its requests: `/hit` answers `{"hit": true}`, `/bounce?to=URL`
/// redirects to URL.
async fn target(ip: [u8; 4]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new()
        .route(
            "/hit",
            axum::routing::get(|| async { axum::Json(json!({ "hit": true })) }),
        )
        .route(
            "/bounce",
            axum::routing::get(
                |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                    axum::response::Redirect::to(q.get("to").map(String::as_str).unwrap_or("/"))
                },
            ),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind(std::net::SocketAddr::from((ip, 0)))
        .await
        .expect("bind a target server");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

impl Server {
    /// Starts a run of `fetch` on `url` and waits until it ends; returns the run.
    async fn fetch(&self, url: &str) -> Value {
        let started = self.start_run("fetch", json!({ "url": url }), None).await;
        let id = started["run"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no run id: {started}"))
            .to_string();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self.run(&id).await;
            if matches!(r["status"].as_str(), Some("FAULTED" | "COMPLETED")) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} on {url} never ended; last: {r}\n{}",
                self.proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Asserts that `run` faulted with the guard's refusal of `host` in `range`.
#[track_caller]
fn assert_denied(run: &Value, url: &str, host: &str, range: &str) {
    assert_eq!(run["status"], json!("FAULTED"), "{url}: {run}");
    let error = &run["error"];
    assert_eq!(
        error["type"],
        json!("https://serverlessworkflow.io/spec/1.0.0/errors/authorization"),
        "{url}: {run}"
    );
    assert_eq!(error["status"], json!(403), "{url}: {run}");
    let detail = error["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("denies {host}:")),
        "{url}: {detail}"
    );
    assert!(detail.contains(range), "{url}: {detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_denies_this_machine_by_default_in_every_notation() {
    let (addr, hits) = target([127, 0, 0, 1]).await;
    let port = addr.port();
    let store = TestStore::sqlite();
    let server = Server::start(&store, &[]).await;
    assert_eq!(server.deploy(FETCH).await["ok"], json!(true));
    for (url, host, range) in [
        (
            format!("http://127.0.0.1:{port}/hit"),
            "127.0.0.1",
            "loopback 127.0.0.0/8",
        ),
        (
            format!("http://2130706433:{port}/hit"),
            "127.0.0.1",
            "loopback",
        ),
        (format!("http://0x7f.1:{port}/hit"), "127.0.0.1", "loopback"),
        (
            format!("http://017700000001:{port}/hit"),
            "127.0.0.1",
            "loopback",
        ),
        (
            format!("http://0.0.0.0:{port}/hit"),
            "0.0.0.0",
            "unspecified",
        ),
        (
            format!("http://[::1]:{port}/hit"),
            "[::1]",
            "loopback ::1/128",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/hit"),
            "[::ffff:127.0.0.1]",
            "loopback",
        ),
        (
            format!("http://localhost:{port}/hit"),
            "localhost",
            "loopback",
        ),
        // The store's own database.
        (
            "http://127.0.0.1:5432/".to_string(),
            "127.0.0.1",
            "loopback",
        ),
    ] {
        let run = server.fetch(&url).await;
        assert_denied(&run, &url, host, range);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_allow_list_lets_a_loopback_server_through_but_not_a_redirect_elsewhere() {
    let (allowed, allowed_hits) = target([127, 0, 0, 1]).await;
    let (denied, denied_hits) = target([127, 0, 0, 2]).await;
    let store = TestStore::sqlite();
    // The settings file key (the flag is used by `retry_a_faulted_run`).
    let config = store
        .sandbox
        .write("cairn.yaml", "allow_outbound: [127.0.0.1]\n");
    let config = config.to_string_lossy().to_string();
    let server = Server::start(&store, &["--config", &config]).await;
    assert_eq!(server.deploy(FETCH).await["ok"], json!(true));

    let url = format!("http://{allowed}/hit");
    let run = server.fetch(&url).await;
    assert_eq!(run["status"], json!("COMPLETED"), "{run}");
    assert_eq!(run["output"], json!({ "hit": true }), "{run}");

    let url = format!("http://{allowed}/bounce?to=http://{denied}/hit");
    let run = server.fetch(&url).await;
    assert_denied(&run, &url, "127.0.0.2", "loopback");
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 2);
    assert_eq!(denied_hits.load(Ordering::SeqCst), 0, "never reached");
}

#[test]
fn run_and_worker_allow_everything_unless_told_and_say_so() {
    let sb = Sandbox::new();
    let def = sb.write("fetch.yaml", FETCH);
    let def = def.to_string_lossy().to_string();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let (addr, hits) = rt.block_on(target([127, 0, 0, 1]));
    let input = json!({ "url": format!("http://{addr}/hit") }).to_string();

    let ok = sb.cairn(&["run", &def, "--input", &input]);
    ok.expect_code(0);
    assert_eq!(ok.json(), Some(json!({ "hit": true })), "{}", ok.describe());

    let denied = sb.cairn_env(
        &["run", &def, "--input", &input],
        &[("CAIRN_ALLOW_OUTBOUND", "none")],
    );
    denied
        .expect_code(1)
        .expect_message("outbound guard denies 127.0.0.1");
    let error = denied.json().unwrap_or_default();
    assert_eq!(error["status"], json!(403), "{}", denied.describe());
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A worker guarded through the settings file it shares with a server.
    let store = sb.store_named("worker");
    let start = sb.cairn(&["start", &def, "--input", &input, "--store", &store]);
    start.expect_code(0);
    let id = start.stdout.trim().to_string();
    let config = sb.write("cairn.yaml", "allow_outbound: none\n");
    let config = config.to_string_lossy().to_string();
    sb.cairn(&[
        "worker",
        "--exit-when-idle",
        "--store",
        &store,
        "--config",
        &config,
    ])
    .expect_code(0);
    let status = sb.cairn(&["status", &id, "--store", &store, "--json"]);
    let status = status.expect_code(0).json().unwrap_or_default();
    assert_eq!(status["status"], json!("faulted"), "{status}");
    assert_eq!(status["error"]["status"], json!(403), "{status}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the worker was refused");

    sb.cairn(&["run", &def, "--allow-outbound", "10.0.0.0/99"])
        .expect_code(2)
        .expect_message("10.0.0.0/99");

    for cmd in ["run", "worker", "serve"] {
        let help = sb.cairn(&[cmd, "--help"]);
        help.expect_code(0)
            .expect_message("--allow-outbound")
            .expect_message("`none` for `cairn serve`")
            .expect_message("`all` for `cairn run` and `cairn worker`");
    }
}
