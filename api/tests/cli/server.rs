//! End-to-end tests of `cairn serve`: the real binary on an ephemeral port of 127.0.0.1, spoken to
//! over real HTTP (reqwest) and WebSocket (tokio-tungstenite, `graphql-transport-ws` and the
//! legacy `graphql-ws`), on SQLite and on PostgreSQL.
//!
//! PostgreSQL tests use a fresh database per test on `CAIRN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards; they are skipped loudly when
//! the server is unreachable, and fail instead under `CI=true`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::Connection as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{bin, postgres_url, skip, with_database, Sandbox};

/// Time allowed to any one wait of these tests.
const PATIENCE: Duration = Duration::from_secs(30);

// ----- definitions ----------------------------------------------------------------------------

const QUICK: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: quick
  version: '1.0.0'
do:
  - greet:
      set:
        greeting: ${ "hello " + .name }
"#;

/// Several timers, so that a run is still going when a client drops its socket.
const STEPS: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: steps
  version: '1.0.0'
do:
  - one:
      wait:
        milliseconds: 400
  - two:
      set:
        step: 2
  - three:
      wait:
        milliseconds: 400
  - four:
      set:
        step: 4
  - five:
      wait:
        milliseconds: 400
  - six:
      set:
        done: true
"#;

const LISTEN: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: wait-for-ping
  version: '1.0.0'
do:
  - waitForPing:
      listen:
        to:
          one:
            with:
              type: com.example.ping
"#;

fn flaky(port: u16) -> String {
    format!(
        r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: flaky
  version: '1.0.0'
do:
  - prepare:
      set:
        ready: true
  - fetch:
      call: http
      with:
        method: get
        endpoint: http://127.0.0.1:{port}/flaky
"#
    )
}

// ----- stores ---------------------------------------------------------------------------------

/// A store for one test: a SQLite file in a sandbox, or a PostgreSQL database dropped with it.
struct TestStore {
    url: String,
    sandbox: Sandbox,
    pg: Option<(String, String)>,
}

impl TestStore {
    fn sqlite() -> TestStore {
        let sandbox = Sandbox::new();
        TestStore {
            url: sandbox.store_named("serve"),
            sandbox,
            pg: None,
        }
    }

    async fn postgres() -> Option<TestStore> {
        let admin = postgres_url();
        let name = format!("serve_{}", uuid::Uuid::new_v4().simple());
        let created = async {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await?;
            conn.close().await
        }
        .await;
        if let Err(e) = created {
            skip(
                "server test on postgres",
                &format!(
                    "cannot reach the server of CAIRN_TEST_POSTGRES_URL or create a database \
                     there: {e}"
                ),
            );
            return None;
        }
        let url = with_database(&admin, &name);
        Some(TestStore {
            url,
            sandbox: Sandbox::new(),
            pg: Some((admin, name)),
        })
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                match sqlx::PgConnection::connect(&admin).await {
                    Ok(mut conn) => {
                        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        if let Err(e) = sqlx::raw_sql(&sql).execute(&mut conn).await {
                            eprintln!("warning: could not drop database {name}: {e}");
                        }
                    }
                    Err(e) => eprintln!("warning: could not drop database {name}: {e}"),
                }
            });
        });
        let _ = handle.join();
    }
}

/// Runs `$body(store)` on SQLite and on PostgreSQL.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestStore::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = super::TestStore::postgres().await else { return };
                    super::$name(store).await;
                }
            )*
        }
    };
}

on_both_stores!(
    watch_a_run_and_resume_after_a_dropped_socket,
    signal_suspend_resume_and_cancel,
    retry_a_faulted_run,
    idempotent_start,
    errors_health_metrics_and_shutdown,
    api_only_server_follows_a_separate_worker,
    access_rules,
    projections_rebuild_repairs_the_runs_index,
    runs_filters_sorting_and_pages,
    runs_filtered_by_correlation,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_sqlite() {
    limits(TestStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_on_sqlite() {
    rate_limits(TestStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_no_auth_on_sqlite() {
    insecure_no_auth(TestStore::sqlite()).await;
}

/// `cancelRun(compensate: true)` (docs/compensation.md).
mod compensation;
/// Roles and floods (issue 8), on this module's harness.
#[path = "server_guard.rs"]
mod guard;
/// Hostile expressions under their budget through `cairn run`, `cairn worker`, `cairn
/// validate` and `cairn serve`.
mod hostile;
/// Replay and the deploy-time check through `cairn replay`, `cairn deploy` and GraphQL.
mod replay;
/// The outbound guard (SSRF) through `cairn serve`, `cairn run` and `cairn worker`.
mod ssrf;
/// Definitions as streams (issue 10): immutable labels, history, diff, rollback, deprecation,
/// through the CLI and GraphQL.
mod versions;

// ----- the server process ---------------------------------------------------------------------

/// A `cairn` process in the background, killed when dropped; stderr is collected for messages.
struct Proc {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(store: &TestStore, args: &[&str]) -> Proc {
        let mut child = Command::new(bin())
            .args(args)
            .current_dir(store.sandbox.path())
            .env_remove("CAIRN_STORE")
            .env_remove("CAIRN_LISTEN")
            .env_remove("CAIRN_SECRETS_FILE")
            .env_remove("CAIRN_ALLOW_OUTBOUND")
            .env_remove("CAIRN_EXPR_MAX_STEPS")
            .env_remove("CAIRN_EXPR_MAX_MEMORY")
            .env("CAIRN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        if let Some(err) = child.stderr.take() {
            let all = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut a) = all.lock() {
                        a.push_str(&line);
                        a.push('\n');
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            child: Some(child),
            stderr,
            lines,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self, timeout: Duration) -> Option<i32> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cairn token ARGS --store URL` to the end; returns its stdout, trimmed.
fn token_cli(store: &TestStore, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("token")
        .args(args)
        .args(["--store", &store.url])
        .current_dir(store.sandbox.path())
        .env_remove("CAIRN_STORE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run cairn token: {e}"));
    assert!(
        out.status.success(),
        "cairn token {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A new token of `role`, named `name`.
fn new_token(store: &TestStore, role: &str, name: &str) -> String {
    let t = token_cli(store, &["create", "--role", role, "--name", name]);
    assert!(t.starts_with("cairn_"), "{t}");
    t
}

/// The id of the token named `name`, from `cairn token list --json`.
fn token_id(store: &TestStore, name: &str) -> String {
    token_cli(store, &["list", "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|t| t["name"] == json!(name))
        .and_then(|t| t["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no token named {name}"))
}

/// An HTTP answer of `/graphql`.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// A running `cairn serve` and a client for it.
struct Server {
    proc: Proc,
    base: String,
    http: reqwest::Client,
    /// An admin token every helper sends (empty under `--insecure-no-auth`).
    token: String,
}

impl Server {
    /// Starts `cairn serve --listen 127.0.0.1:0` with a new admin token and waits until
    /// `/readyz` answers 200.
    async fn start(store: &TestStore, extra: &[&str]) -> Server {
        let token = if extra.contains(&"--insecure-no-auth") {
            String::new()
        } else {
            new_token(store, "admin", "test-admin")
        };
        let mut args = vec!["serve", "--store", &store.url, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(store, &args);
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match proc.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        break rest.trim().to_string();
                    }
                }
                Err(_) => panic!("cairn serve printed no address:\n{}", proc.stderr()),
            }
        };
        let server = Server {
            proc,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("an HTTP client"),
            token,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = server.http.get(server.url("/readyz")).send().await {
                if r.status().as_u16() == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cairn serve never became ready:\n{}",
                server.proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn ws_url(&self) -> String {
        format!("{}/graphql/ws", self.base.replacen("http://", "ws://", 1))
    }

    /// POSTs a GraphQL request with the admin token; returns the whole response document.
    async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(Some(&self.token), query, variables).await.body
    }

    /// POSTs a GraphQL request with `token` (none: no Authorization header); returns the HTTP
    /// status, the headers and the JSON document.
    async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Answer {
        self.post_as(
            token,
            json!({ "query": query, "variables": variables }).to_string(),
        )
        .await
    }

    /// POSTs `body` to `/graphql` with `token`.
    async fn post_as(&self, token: Option<&str>, body: String) -> Answer {
        let mut req = self
            .http
            .post(self.url("/graphql"))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql: {e}\n{}", self.proc.stderr()));
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let body = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql ({status}) answered no JSON: {e}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// [`Server::gql`] that must succeed; returns `data`.
    async fn data(&self, query: &str, variables: Value) -> Value {
        let r = self.gql(query, variables).await;
        assert!(
            r.get("errors").is_none(),
            "GraphQL errors: {r}\n{}",
            self.proc.stderr()
        );
        r["data"].clone()
    }

    async fn deploy(&self, source: &str) -> Value {
        self.data(
            "mutation($s: String!) { deployDefinition(source: $s) { ok problems { pointer line message } definition { namespace name version hash } } }",
            json!({ "s": source }),
        )
        .await["deployDefinition"]
            .clone()
    }

    async fn start_run(&self, name: &str, input: Value, key: Option<&str>) -> Value {
        self.data(
            "mutation($n: String!, $i: JSON, $k: String) { startRun(definition: {namespace: \"test\", name: $n}, input: $i, idempotencyKey: $k) { created run { id status } } }",
            json!({ "n": name, "i": input, "k": key }),
        )
        .await["startRun"]
            .clone()
    }

    async fn run(&self, id: &str) -> Value {
        self.data(
            "query($id: String!) { run(id: $id) { id status output error currentTasks lastPosition timeline { name status attempts error } } }",
            json!({ "id": id }),
        )
        .await["run"]
            .clone()
    }

    /// Polls until the run has `status`; returns the run.
    async fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self.run(id).await;
            if r["status"] == json!(status) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never reached {status}; last: {r}\n{}",
                self.proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every event of the run, by position, through the paginated `events` field.
    async fn all_events(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let d = self
                .data(
                    "query($id: String!, $a: String) { run(id: $id) { events(first: 3, after: $a) { edges { cursor node { position sequence type } } pageInfo { hasNextPage endCursor } } } }",
                    json!({ "id": id, "a": after }),
                )
                .await;
            let conn = &d["run"]["events"];
            for e in conn["edges"].as_array().into_iter().flatten() {
                out.push(e["node"].clone());
            }
            if conn["pageInfo"]["hasNextPage"] != json!(true) {
                return out;
            }
            after = conn["pageInfo"]["endCursor"].as_str().map(str::to_string);
        }
    }
}

// ----- a graphql-transport-ws client ----------------------------------------------------------

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One subscription over its own socket.
struct Subscription {
    socket: Socket,
}

impl Subscription {
    /// Connects with `protocol` (`graphql-transport-ws` or `graphql-ws`) and subscribes, with
    /// the server's admin token in the `connection_init` payload.
    async fn open(server: &Server, protocol: &str, query: &str, variables: Value) -> Subscription {
        let init = json!({ "Authorization": format!("Bearer {}", server.token) });
        Subscription::open_with(server, protocol, None, init, query, variables).await
    }

    /// [`Subscription::open`] with an `Authorization` header on the upgrade request (or none)
    /// and this `connection_init` payload.
    async fn open_with(
        server: &Server,
        protocol: &str,
        header: Option<&str>,
        init: Value,
        query: &str,
        variables: Value,
    ) -> Subscription {
        let mut req = server
            .ws_url()
            .into_client_request()
            .expect("a WebSocket request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocol.parse().expect("a header value"),
        );
        if let Some(t) = header {
            req.headers_mut().insert(
                "Authorization",
                format!("Bearer {t}").parse().expect("a header value"),
            );
        }
        let (socket, resp) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("WebSocket connect: {e}\n{}", server.proc.stderr()));
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol),
            "the server should accept the {protocol} subprotocol"
        );
        let legacy = protocol == "graphql-ws";
        let mut s = Subscription { socket };
        s.send(json!({ "type": "connection_init", "payload": init }))
            .await;
        let ack = s.recv().await.expect("a connection_ack");
        assert_eq!(ack["type"], json!("connection_ack"), "{ack}");
        let start = if legacy { "start" } else { "subscribe" };
        s.send(json!({
            "id": "1",
            "type": start,
            "payload": { "query": query, "variables": variables }
        }))
        .await;
        s
    }

    async fn send(&mut self, v: Value) {
        self.socket
            .send(Message::text(v.to_string()))
            .await
            .expect("send on the WebSocket");
    }

    /// The next protocol message (pings answered, keep-alives skipped); `None` when closed.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("a WebSocket message in time")?;
            let m = m.ok()?;
            let text = match m {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => return None,
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).expect("JSON on the WebSocket");
            match v["type"].as_str() {
                Some("ping") => self.send(json!({ "type": "pong" })).await,
                Some("ka") | Some("pong") => {}
                _ => return Some(v),
            }
        }
    }

    /// The next payload of the subscription; `None` once it completed. Errors fail the test.
    async fn next(&mut self) -> Option<Value> {
        let v = self.recv().await?;
        match v["type"].as_str() {
            Some("next") | Some("data") => {
                let p = &v["payload"];
                assert!(p.get("errors").is_none(), "subscription error: {v}");
                Some(p["data"].clone())
            }
            Some("complete") => None,
            _ => panic!("unexpected subscription message: {v}"),
        }
    }

    /// The error the subscription ended with.
    async fn error(&mut self) -> Value {
        let v = self.recv().await.expect("an error message");
        match v["type"].as_str() {
            Some("error") => v["payload"].clone(),
            Some("next") | Some("data") => v["payload"]["errors"].clone(),
            _ => panic!("expected an error, got {v}"),
        }
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

const RUN_EVENTS: &str = "subscription($id: String!, $after: Int!) { runEvents(runId: $id, after: $after) { position sequence type data recordedAt } }";

fn code_of(resp: &Value) -> Option<&str> {
    resp["errors"][0]["extensions"]["code"].as_str()
}

// ----- the tests ------------------------------------------------------------------------------

async fn watch_a_run_and_resume_after_a_dropped_socket(store: TestStore) {
    let server = Server::start(&store, &[]).await;

    // Deploy: an invalid definition comes back as data, with locations.
    let bad = server
        .deploy("document:\n  dsl: '1.0.3'\n  namespace: test\n  name: bad\n  version: '1.0.0'\ndo:\n  - x:\n      nope: 1\n")
        .await;
    assert_eq!(bad["ok"], json!(false), "{bad}");
    assert!(
        !bad["problems"].as_array().is_some_and(|p| p.is_empty()),
        "{bad}"
    );
    let ok = server.deploy(STEPS).await;
    assert_eq!(ok["ok"], json!(true), "{ok}");
    assert_eq!(ok["definition"]["name"], json!("steps"));
    server.deploy(QUICK).await;

    let defs = server
        .data(
            "{ definitions(namespace: \"test\") { name version } definition(namespace: \"test\", name: \"steps\") { version source problems { message } } }",
            json!({}),
        )
        .await;
    let names: Vec<&str> = defs["definitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["quick", "steps"], "{defs}");
    assert_eq!(defs["definition"]["version"], json!("1.0.0"));
    assert_eq!(defs["definition"]["problems"], json!([]));

    // A quick run watched from its first event to the end.
    let quick = server
        .start_run("quick", json!({ "name": "cairn" }), None)
        .await;
    let qid = quick["run"]["id"].as_str().expect("a run id").to_string();
    let mut sub = Subscription::open(
        &server,
        "graphql-transport-ws",
        RUN_EVENTS,
        json!({ "id": qid, "after": 0 }),
    )
    .await;
    let mut seen = Vec::new();
    while let Some(d) = sub.next().await {
        seen.push(d["runEvents"].clone());
    }
    assert_eq!(
        seen.first().map(|e| e["type"].clone()),
        Some(json!("RunStarted"))
    );
    assert_eq!(
        seen.last().map(|e| e["type"].clone()),
        Some(json!("RunCompleted"))
    );
    let done = server.run(&qid).await;
    assert_eq!(done["status"], json!("COMPLETED"), "{done}");
    assert_eq!(done["output"]["greeting"], json!("hello cairn"), "{done}");

    // A run with timers: read a few events, drop the socket mid-run, resume from the last
    // position seen, and get the rest with no gap and no duplicate.
    let steps = server.start_run("steps", json!({}), None).await;
    let id = steps["run"]["id"].as_str().expect("a run id").to_string();
    let mut sub = Subscription::open(
        &server,
        "graphql-transport-ws",
        RUN_EVENTS,
        json!({ "id": id, "after": 0 }),
    )
    .await;
    let mut first_part = Vec::new();
    for _ in 0..3 {
        let d = sub.next().await.expect("an event before the end");
        first_part.push(d["runEvents"].clone());
    }
    sub.close().await;
    let last = first_part
        .last()
        .and_then(|e| e["position"].as_u64())
        .expect("a position");
    let mid = server.run(&id).await;
    assert_ne!(
        mid["status"],
        json!("COMPLETED"),
        "the run should still be going: {mid}"
    );

    let mut sub = Subscription::open(
        &server,
        "graphql-transport-ws",
        RUN_EVENTS,
        json!({ "id": id, "after": last }),
    )
    .await;
    let mut rest = Vec::new();
    while let Some(d) = sub.next().await {
        rest.push(d["runEvents"].clone());
    }
    let all: Vec<Value> = first_part.into_iter().chain(rest).collect();
    let sequences: Vec<u64> = all.iter().filter_map(|e| e["sequence"].as_u64()).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(sequences, expected, "a gap or a duplicate: {all:?}");
    let positions: Vec<u64> = all.iter().filter_map(|e| e["position"].as_u64()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions must increase: {positions:?}"
    );
    assert_eq!(
        all.last().map(|e| e["type"].clone()),
        Some(json!("RunCompleted"))
    );

    // The same history through the paginated query.
    let paged = server.all_events(&id).await;
    let paged_positions: Vec<u64> = paged
        .iter()
        .filter_map(|e| e["position"].as_u64())
        .collect();
    assert_eq!(paged_positions, positions);

    // The timeline and the runs list.
    let run = server.run(&id).await;
    let names: Vec<&str> = run["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["one", "two", "three", "four", "five", "six"],
        "{run}"
    );
    let list = server
        .data(
            "{ runs(first: 1, filter: {status: [COMPLETED], name: \"steps\"}) { edges { node { id status name } } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(list["runs"]["edges"][0]["node"]["id"], json!(id), "{list}");
    assert_eq!(list["runs"]["pageInfo"]["hasNextPage"], json!(false));
    let page1 = server
        .data(
            "{ runs(first: 1) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        page1["runs"]["edges"][0]["node"]["id"],
        json!(id),
        "newest first: {page1}"
    );
    assert_eq!(page1["runs"]["pageInfo"]["hasNextPage"], json!(true));
    let page2 = server
        .data(
            "query($a: String) { runs(first: 5, after: $a) { edges { node { id } } pageInfo { hasNextPage } } }",
            json!({ "a": page1["runs"]["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        page2["runs"]["edges"][0]["node"]["id"],
        json!(qid),
        "{page2}"
    );
    assert_eq!(page2["runs"]["pageInfo"]["hasNextPage"], json!(false));

    // runUpdated reports the final state of an ended run, then completes.
    let mut sub = Subscription::open(
        &server,
        "graphql-transport-ws",
        "subscription($id: String!) { runUpdated(runId: $id) { status currentTasks output } }",
        json!({ "id": id }),
    )
    .await;
    let u = sub.next().await.expect("an update");
    assert_eq!(u["runUpdated"]["status"], json!("COMPLETED"), "{u}");
    assert_eq!(u["runUpdated"]["output"]["done"], json!(true), "{u}");
    assert!(
        sub.next().await.is_none(),
        "the subscription should complete"
    );
}

async fn signal_suspend_resume_and_cancel(store: TestStore) {
    let server = Server::start(&store, &[]).await;
    server.deploy(LISTEN).await;
    let id = server.start_run("wait-for-ping", json!({}), None).await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    let waiting = server.wait_status(&id, "WAITING").await;
    assert_eq!(
        waiting["currentTasks"],
        json!(["/do/0/waitForPing"]),
        "{waiting}"
    );

    // Watch status changes live while the run is signalled.
    let mut updates = Subscription::open(
        &server,
        "graphql-transport-ws",
        "subscription($id: String!) { runUpdated(runId: $id) { status currentTasks } }",
        json!({ "id": id }),
    )
    .await;
    let first = updates.next().await.expect("the current state");
    assert_eq!(first["runUpdated"]["status"], json!("WAITING"), "{first}");

    // Suspend and resume.
    let s = server
        .data(
            "mutation($id: String!) { suspendRun(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(s["suspendRun"]["status"], json!("SUSPENDED"), "{s}");
    let again = server
        .gql(
            "mutation($id: String!) { suspendRun(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code_of(&again), Some("CONFLICT"), "{again}");
    // `runUpdated` folds what is already available before it reports, so a resume that lands
    // before the subscriber saw the suspension would (rightly) show no change: wait for it.
    let mut statuses = Vec::new();
    while !statuses.contains(&json!("SUSPENDED")) {
        let u = updates.next().await.expect("the suspension");
        statuses.push(u["runUpdated"]["status"].clone());
    }
    let r = server
        .data(
            "mutation($id: String!) { resumeRun(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(r["resumeRun"]["status"], json!("WAITING"), "{r}");

    let ping = json!({"specversion":"1.0","id":"1","source":"test","type":"com.example.ping","data":{"x":1}});
    server
        .data(
            "mutation($id: String!, $e: JSON!) { signalRun(id: $id, event: $e) { id } }",
            json!({ "id": id, "e": ping }),
        )
        .await;
    let done = server.wait_status(&id, "COMPLETED").await;
    assert!(
        done["output"].to_string().contains("\"x\":1"),
        "the output should hold the event data: {done}"
    );
    while let Some(u) = updates.next().await {
        statuses.push(u["runUpdated"]["status"].clone());
    }
    assert!(statuses.contains(&json!("SUSPENDED")), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&json!("COMPLETED")), "{statuses:?}");

    // A signal to an ended run is a conflict.
    let late = server
        .gql(
            "mutation($id: String!, $e: JSON!) { signalRun(id: $id, event: $e) { id } }",
            json!({ "id": id, "e": ping }),
        )
        .await;
    assert_eq!(code_of(&late), Some("CONFLICT"), "{late}");

    // Cancel a waiting run; cancelling again is a conflict.
    let id2 = server.start_run("wait-for-ping", json!({}), None).await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    server.wait_status(&id2, "WAITING").await;
    let c = server
        .data(
            "mutation($id: String!) { cancelRun(id: $id, reason: \"test\") { status } }",
            json!({ "id": id2 }),
        )
        .await;
    assert_eq!(c["cancelRun"]["status"], json!("CANCELLED"), "{c}");
    let c2 = server
        .gql(
            "mutation($id: String!) { cancelRun(id: $id) { status } }",
            json!({ "id": id2 }),
        )
        .await;
    assert_eq!(code_of(&c2), Some("CONFLICT"), "{c2}");
}

async fn retry_a_faulted_run(store: TestStore) {
    // An endpoint that fails until told otherwise.
    let healthy = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the mock endpoint");
    let port = listener.local_addr().expect("an address").port();
    let h = healthy.clone();
    let app = axum::Router::new().route(
        "/flaky",
        axum::routing::get(move || {
            let h = h.clone();
            async move {
                if h.load(Ordering::SeqCst) {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({ "fine": true })),
                    )
                } else {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({ "fine": false })),
                    )
                }
            }
        }),
    );
    let tracker = tokio_util::task::TaskTracker::new();
    tracker.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // The endpoint is on loopback, which the outbound guard denies unless allowed.
    let server = Server::start(&store, &["--allow-outbound", "127.0.0.1"]).await;
    let dep = server.deploy(&flaky(port)).await;
    assert_eq!(dep["ok"], json!(true), "{dep}");
    let id = server.start_run("flaky", json!({}), None).await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    let faulted = server.wait_status(&id, "FAULTED").await;
    assert!(faulted["error"].is_object(), "{faulted}");

    healthy.store(true, Ordering::SeqCst);
    let r = server
        .data(
            "mutation($id: String!) { retryRun(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(r["retryRun"]["id"], json!(id));
    let done = server.wait_status(&id, "COMPLETED").await;
    assert_eq!(done["output"]["fine"], json!(true), "{done}");
    let fetches: Vec<&Value> = done["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"] == json!("fetch"))
        .collect();
    assert_eq!(
        fetches.len(),
        2,
        "one faulted and one retried activation: {done}"
    );
    assert_eq!(fetches[0]["status"], json!("faulted"), "{done}");
    assert!(fetches[0]["error"].is_object(), "{done}");
    assert_eq!(fetches[1]["status"], json!("completed"), "{done}");

    // Metrics: each end counted once by definition and status, the two HTTP calls timed, the
    // appends timed; run ids never appear.
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default();
    for line in [
        "cairn_runs_finished_total{name=\"flaky\",namespace=\"test\",status=\"faulted\"} 1",
        "cairn_runs_finished_total{name=\"flaky\",namespace=\"test\",status=\"completed\"} 1",
        "cairn_task_duration_seconds_count{kind=\"http\",outcome=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
    }
    assert!(
        metrics.contains("cairn_task_duration_seconds_bucket{kind=\"http\",outcome=\"error\""),
        "{metrics}"
    );
    let appends = metrics
        .lines()
        .find(|l| l.starts_with("cairn_store_append_duration_seconds_count{outcome=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(appends >= 3, "appends are timed:\n{metrics}");
    assert!(
        metrics.contains("cairn_store_append_conflicts_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cairn_graphql_request_duration_seconds_count{operation=\"mutation\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cairn_graphql_request_duration_seconds_count{operation=\"query\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cairn_projection_lag_events{projection=\"log_follower\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(&id), "run ids are never labels");

    // Retrying a completed run is a conflict.
    let again = server
        .gql(
            "mutation($id: String!) { retryRun(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code_of(&again), Some("CONFLICT"), "{again}");
}

async fn idempotent_start(store: TestStore) {
    let server = Server::start(&store, &[]).await;
    server.deploy(QUICK).await;
    server.deploy(LISTEN).await;
    let key = format!("order-{}", uuid::Uuid::new_v4());
    let a = server
        .start_run("quick", json!({ "name": "a" }), Some(&key))
        .await;
    let b = server
        .start_run("quick", json!({ "name": "a" }), Some(&key))
        .await;
    assert_eq!(a["created"], json!(true), "{a}");
    assert_eq!(b["created"], json!(false), "{b}");
    assert_eq!(a["run"]["id"], b["run"]["id"]);
    let other = server
        .start_run("quick", json!({ "name": "a" }), Some("another key"))
        .await;
    assert_ne!(other["run"]["id"], a["run"]["id"]);

    // runsChanged: the summaries of runs as they change. Its feed starts when the server has
    // taken the subscription, which the protocol does not acknowledge: start runs until one
    // shows up.
    let mut changes = Subscription::open(
        &server,
        "graphql-transport-ws",
        "subscription { runsChanged(filter: {name: \"quick\"}) { id name status } }",
        json!({}),
    )
    .await;
    let mut started = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let change = loop {
        assert!(Instant::now() < deadline, "runsChanged sent nothing");
        let r = server
            .start_run("quick", json!({ "name": "c" }), None)
            .await;
        started.push(r["run"]["id"].clone());
        tokio::select! {
            c = changes.next() => break c.expect("a change"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    // Runs of `quick` started earlier in this test may change too (they finish); any change
    // must be of a `quick` run, and the runs started here must be among those the store knows.
    assert_eq!(change["runsChanged"]["name"], json!("quick"), "{change}");
    assert!(!started.is_empty());
    changes.close().await;

    // The same key for another workflow is a conflict.
    let clash = server
        .gql(
            "mutation($k: String) { startRun(definition: {namespace: \"test\", name: \"wait-for-ping\"}, idempotencyKey: $k) { created } }",
            json!({ "k": key }),
        )
        .await;
    assert_eq!(code_of(&clash), Some("CONFLICT"), "{clash}");

    // Starting from source text works too, and an invalid source is BAD_USER_INPUT.
    let from_source = server
        .data(
            "mutation($s: String!) { startRun(source: $s, input: {name: \"src\"}) { created run { id } } }",
            json!({ "s": QUICK }),
        )
        .await;
    assert_eq!(from_source["startRun"]["created"], json!(true));
    let invalid = server
        .gql(
            "mutation { startRun(source: \"document: 1\") { created } }",
            json!({}),
        )
        .await;
    assert_eq!(code_of(&invalid), Some("BAD_USER_INPUT"), "{invalid}");
    let neither = server
        .gql("mutation { startRun { created } }", json!({}))
        .await;
    assert_eq!(code_of(&neither), Some("BAD_USER_INPUT"), "{neither}");
    let missing = server
        .gql(
            "mutation { startRun(definition: {namespace: \"test\", name: \"nope\"}) { created } }",
            json!({}),
        )
        .await;
    assert_eq!(code_of(&missing), Some("NOT_FOUND"), "{missing}");
}

async fn errors_health_metrics_and_shutdown(store: TestStore) {
    let server = Server::start(&store, &[]).await;
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status().as_u16(), 200);

    // A query that does not parse, one that names an unknown field, and a bad argument.
    for q in [
        "{ runs(",
        "{ nope }",
        "{ runs(first: 0) { edges { cursor } } }",
    ] {
        let r = server.gql(q, json!({})).await;
        assert_eq!(code_of(&r), Some("BAD_USER_INPUT"), "{q}: {r}");
    }
    let r = server
        .gql("{ run(id: \"no-such-run\") { id } }", json!({}))
        .await;
    assert_eq!(code_of(&r), Some("NOT_FOUND"), "{r}");
    let r = server
        .gql(
            "{ definition(namespace: \"x\", name: \"y\") { hash } }",
            json!({}),
        )
        .await;
    assert_eq!(code_of(&r), Some("NOT_FOUND"), "{r}");
    let r = server
        .gql(
            "mutation { cancelRun(id: \"no-such-run\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code_of(&r), Some("NOT_FOUND"), "{r}");

    // GraphiQL in a browser.
    let page = server
        .http
        .get(server.url("/graphql"))
        .send()
        .await
        .expect("GET /graphql");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page
        .text()
        .await
        .unwrap_or_default()
        .to_lowercase()
        .contains("graphiql"));

    // A subscription to an unknown run fails with NOT_FOUND; the legacy protocol works too.
    let mut sub = Subscription::open(
        &server,
        "graphql-transport-ws",
        RUN_EVENTS,
        json!({ "id": "no-such-run", "after": 0 }),
    )
    .await;
    let err = sub.error().await;
    assert_eq!(err[0]["extensions"]["code"], json!("NOT_FOUND"), "{err}");
    server.deploy(QUICK).await;
    let id = server
        .start_run("quick", json!({ "name": "x" }), None)
        .await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    let mut legacy = Subscription::open(
        &server,
        "graphql-ws",
        RUN_EVENTS,
        json!({ "id": id, "after": 0 }),
    )
    .await;
    let mut n = 0;
    while let Some(d) = legacy.next().await {
        assert!(d["runEvents"]["position"].is_u64(), "{d}");
        n += 1;
    }
    assert!(n >= 2, "the legacy protocol should stream the run's events");

    // An open subscription shows in the metrics.
    server.deploy(LISTEN).await;
    let waiting = server.start_run("wait-for-ping", json!({}), None).await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    let mut open = Subscription::open(
        &server,
        "graphql-transport-ws",
        RUN_EVENTS,
        json!({ "id": waiting, "after": 0 }),
    )
    .await;
    open.next().await.expect("the first event");
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains(
            "cairn_http_request_duration_seconds_bucket{method=\"POST\",route=\"/graphql\""
        ),
        "{metrics}"
    );
    // Runs started, by definition: one of each (the start that failed with NOT_FOUND above
    // never counts).
    for name in ["quick", "wait-for-ping"] {
        let line = format!("cairn_runs_started_total{{name=\"{name}\",namespace=\"test\"}} 1");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    assert!(
        metrics.contains("cairn_subscriptions_open{kind=\"run_events\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains(&waiting), "run ids are never labels");

    // SIGTERM: the open subscription completes, the server exits 0.
    let ready = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let Server { proc, .. } = server;
    let stderr = proc.stderr.clone();
    let pid = proc.pid().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    // The subscription ends (complete or close) instead of hanging.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while open.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "subscriptions should end on shutdown");
    let code = tokio::task::spawn_blocking(move || proc.terminate(Duration::from_secs(20)))
        .await
        .ok()
        .flatten();
    let stderr = stderr.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        code,
        Some(0),
        "cairn serve should exit 0 on SIGTERM:\n{stderr}"
    );
    assert!(stderr.contains("stopping"), "{stderr}");
}

async fn api_only_server_follows_a_separate_worker(store: TestStore) {
    // The API server executes nothing; a separate `cairn worker` on the same store does. The
    // subscription must see the worker's events, which never cross this server's own bus.
    let server = Server::start(&store, &["--no-workers"]).await;
    server.deploy(STEPS).await;
    let id = server.start_run("steps", json!({}), None).await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    let mut sub = Subscription::open(
        &server,
        "graphql-transport-ws",
        RUN_EVENTS,
        json!({ "id": id, "after": 0 }),
    )
    .await;
    let first = sub.next().await.expect("the first event");
    assert_eq!(first["runEvents"]["type"], json!("RunStarted"), "{first}");
    let _worker = Proc::spawn(&store, &["worker", "--store", &store.url]);
    let mut all = vec![first["runEvents"].clone()];
    while let Some(d) = sub.next().await {
        all.push(d["runEvents"].clone());
    }
    let sequences: Vec<u64> = all.iter().filter_map(|e| e["sequence"].as_u64()).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(sequences, expected, "a gap or a duplicate: {all:?}");
    assert_eq!(
        all.last().map(|e| e["type"].clone()),
        Some(json!("RunCompleted"))
    );
}

// ----- access and limits ----------------------------------------------------------------------

const RUNS: &str = "{ runs { edges { cursor } } }";
const DEPLOY: &str =
    "mutation($s: String!) { deployDefinition(source: $s) { ok definition { name } } }";
const START: &str = "mutation { startRun(definition: {namespace: \"test\", name: \"quick\"}, input: {name: \"x\"}) { run { id } } }";
const CANCEL: &str = "mutation { cancelRun(id: \"no-such-run\") { id } }";

/// The code of the first error of an answer.
fn code(a: &Answer) -> Option<&str> {
    code_of(&a.body)
}

async fn access_rules(store: TestStore) {
    let server = Server::start(&store, &[]).await;
    server.deploy(QUICK).await;
    server.deploy(LISTEN).await;
    let waiting = server.start_run("wait-for-ping", json!({}), None).await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    let admin = server.token.clone();
    let editor = new_token(&store, "editor", "ed");
    let operator = new_token(&store, "operator", "op");
    let viewer = new_token(&store, "viewer", "view");

    // Deny by default: no token, a malformed header, an unknown token. Nothing runs, not even
    // `__typename`; the answer says why without naming anything internal.
    for q in [RUNS, "{ __typename }", CANCEL] {
        let a = server.gql_as(None, q, json!({})).await;
        assert_eq!(
            (a.status, code(&a)),
            (401, Some("UNAUTHENTICATED")),
            "{q}: {}",
            a.body
        );
        assert_eq!(
            a.headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        assert!(a.body.get("data").is_none(), "{}", a.body);
    }
    let unknown = format!("cairn_{}", "A".repeat(43));
    let a = server.gql_as(Some(&unknown), RUNS, json!({})).await;
    assert_eq!(
        (a.status, code(&a)),
        (401, Some("UNAUTHENTICATED")),
        "{}",
        a.body
    );
    let a = server
        .http
        .post(server.url("/graphql"))
        .header("Authorization", format!("Basic {admin}"))
        .json(&json!({ "query": RUNS }))
        .send()
        .await
        .expect("POST /graphql");
    assert_eq!(a.status().as_u16(), 401);

    // Each role on a read, a deploy and two run operations. An allowed cancel of an unknown run
    // gets past the guard to NOT_FOUND; a refused one stops at FORBIDDEN.
    let table = [
        (&admin, "admin", [true, true, true]),
        (&editor, "editor", [true, false, false]),
        (&operator, "operator", [false, true, true]),
        (&viewer, "viewer", [false, false, false]),
    ];
    for (token, role, [deploy, start, cancel]) in table {
        let a = server.gql_as(Some(token), RUNS, json!({})).await;
        assert_eq!(a.status, 200);
        assert!(a.body.get("errors").is_none(), "{role} reads: {}", a.body);

        let a = server
            .gql_as(Some(token), DEPLOY, json!({ "s": QUICK }))
            .await;
        if deploy {
            assert_eq!(
                a.body["data"]["deployDefinition"]["ok"],
                json!(true),
                "{role}: {}",
                a.body
            );
        } else {
            assert_eq!(code(&a), Some("FORBIDDEN"), "{role} deploys: {}", a.body);
            assert_eq!(a.body["data"], Value::Null, "{}", a.body);
        }

        let a = server.gql_as(Some(token), START, json!({})).await;
        if start {
            assert!(
                a.body["data"]["startRun"]["run"]["id"].is_string(),
                "{role}: {}",
                a.body
            );
        } else {
            assert_eq!(code(&a), Some("FORBIDDEN"), "{role} starts: {}", a.body);
        }

        let a = server.gql_as(Some(token), CANCEL, json!({})).await;
        let expected = if cancel { "NOT_FOUND" } else { "FORBIDDEN" };
        assert_eq!(code(&a), Some(expected), "{role} cancels: {}", a.body);
        if !cancel {
            let msg = a.body["errors"][0]["message"].as_str().unwrap_or("");
            assert!(msg.contains(role), "the refusal names the role: {msg}");
        }
    }
    // The refused viewer signal does not reach the run.
    server.wait_status(&waiting, "WAITING").await;
    let signal = "mutation($id: String!) { signalRun(id: $id, event: {specversion: \"1.0\", source: \"t\", id: \"1\", type: \"com.example.ping\", data: {}}) { id } }";
    let a = server
        .gql_as(Some(&viewer), signal, json!({ "id": waiting }))
        .await;
    assert_eq!(code(&a), Some("FORBIDDEN"), "{}", a.body);
    assert_eq!(server.run(&waiting).await["status"], json!("WAITING"));

    // Subscriptions: a viewer's token in `connection_init` reads; no token, or an unknown one,
    // is refused per subscription with a code.
    let vars = json!({ "id": waiting, "after": 0 });
    let bearer = |t: &str| json!({ "Authorization": format!("Bearer {t}") });
    let mut sub = Subscription::open_with(
        &server,
        "graphql-transport-ws",
        None,
        bearer(&viewer),
        RUN_EVENTS,
        vars.clone(),
    )
    .await;
    let first = sub.next().await.expect("the first event");
    assert_eq!(first["runEvents"]["type"], json!("RunStarted"), "{first}");
    sub.close().await;
    for (protocol, init) in [
        ("graphql-transport-ws", json!({})),
        ("graphql-ws", json!({})),
        ("graphql-transport-ws", bearer(&unknown)),
    ] {
        let mut sub = Subscription::open_with(
            &server,
            protocol,
            None,
            init.clone(),
            RUN_EVENTS,
            vars.clone(),
        )
        .await;
        let err = sub.error().await;
        assert_eq!(
            err[0]["extensions"]["code"],
            json!("UNAUTHENTICATED"),
            "{protocol} {init}: {err}"
        );
    }
    // The token on the upgrade request works too; a bad one there is refused before the upgrade.
    let mut sub = Subscription::open_with(
        &server,
        "graphql-transport-ws",
        Some(&operator),
        json!({}),
        RUN_EVENTS,
        vars.clone(),
    )
    .await;
    assert!(
        sub.next().await.is_some(),
        "the operator's header should be accepted"
    );
    sub.close().await;
    let mut req = server
        .ws_url()
        .into_client_request()
        .expect("a WebSocket request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("a header value"),
    );
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {unknown}").parse().expect("a header value"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 401)
        }
        other => panic!("an unknown token should be refused at the upgrade: {other:?}"),
    }

    // Revocation takes effect on the next request, HTTP and WebSocket alike.
    let id = token_id(&store, "view");
    token_cli(&store, &["revoke", &id]);
    let a = server.gql_as(Some(&viewer), RUNS, json!({})).await;
    assert_eq!(
        (a.status, code(&a)),
        (401, Some("UNAUTHENTICATED")),
        "{}",
        a.body
    );
    let mut sub = Subscription::open_with(
        &server,
        "graphql-transport-ws",
        None,
        bearer(&viewer),
        RUN_EVENTS,
        vars.clone(),
    )
    .await;
    assert_eq!(
        sub.error().await[0]["extensions"]["code"],
        json!("UNAUTHENTICATED")
    );
    let listed = token_cli(&store, &["list", "--json"]);
    assert!(listed.contains("revokedAt\":\"20"), "{listed}");
    for secret in [&admin, &editor, &operator, &viewer] {
        assert!(
            !listed.contains(secret.as_str()),
            "token list shows no secret"
        );
    }
    if store.pg.is_none() {
        // Only hashes reach the store.
        let path = store.url.trim_start_matches("sqlite://").to_string();
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("tok_"),
            "the tokens table should be in {path}"
        );
        for secret in [&admin, &editor, &operator, &viewer] {
            assert!(
                !text.contains(&secret[6..]),
                "a token secret is stored in clear"
            );
        }
    }

    // Tokens over GraphQL are the admin's alone.
    const CREATE: &str =
        "mutation { createApiToken(role: VIEWER, name: \"gql\") { secret token { id role } } }";
    for t in [&editor, &operator] {
        let a = server.gql_as(Some(t), CREATE, json!({})).await;
        assert_eq!(code(&a), Some("FORBIDDEN"), "{}", a.body);
        let a = server
            .gql_as(Some(t), "{ apiTokens { id } }", json!({}))
            .await;
        assert_eq!(code(&a), Some("FORBIDDEN"), "{}", a.body);
    }
    let created = server.data(CREATE, json!({})).await["createApiToken"].clone();
    let secret = created["secret"].as_str().expect("a secret").to_string();
    let gql_id = created["token"]["id"].as_str().expect("an id").to_string();
    assert_eq!(created["token"]["role"], json!("VIEWER"));
    let a = server.gql_as(Some(&secret), RUNS, json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let listed = server
        .data("{ apiTokens { id name role revokedAt } }", json!({}))
        .await;
    assert!(!listed.to_string().contains(&secret), "{listed}");
    assert!(listed.to_string().contains(&gql_id), "{listed}");
    let revoked = server
        .data(
            "mutation($id: String!) { revokeApiToken(id: $id) { revokedAt } }",
            json!({ "id": gql_id }),
        )
        .await;
    assert!(
        revoked["revokeApiToken"]["revokedAt"].is_string(),
        "{revoked}"
    );
    let a = server.gql_as(Some(&secret), RUNS, json!({})).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = server
        .gql_as(
            Some(&admin),
            "mutation { revokeApiToken(id: \"tok_nope\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&a), Some("NOT_FOUND"), "{}", a.body);

    // The CLI refuses an unknown role and an unknown id.
    for args in [vec!["create", "--role", "root"], vec!["revoke", "tok_nope"]] {
        let out = Command::new(bin())
            .arg("token")
            .args(&args)
            .args(["--store", &store.url])
            .current_dir(store.sandbox.path())
            .output()
            .expect("cairn token");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }

    // Health, readiness and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = server.http.get(server.url(path)).send().await.expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
}

async fn limits(store: TestStore) {
    let server = Server::start(
        &store,
        &[
            "--max-query-depth",
            "5",
            "--max-query-complexity",
            "30",
            "--max-body-bytes",
            "4096",
            "--request-timeout-ms",
            "500",
            "--no-introspection",
        ],
    )
    .await;
    let ok = server.gql(RUNS, json!({})).await;
    assert!(ok.get("errors").is_none(), "{ok}");

    // Depth: six levels where five are allowed.
    let deep = "{ runs { edges { node { run { timeline { name } } } } } }";
    let a = server.gql_as(Some(&server.token), deep, json!({})).await;
    assert_eq!(code(&a), Some("BAD_USER_INPUT"), "{}", a.body);
    assert!(
        a.body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested too deep"),
        "{}",
        a.body
    );
    assert!(a.body.get("data").is_none_or(Value::is_null), "{}", a.body);

    // Complexity: eleven shallow copies of a three-field query, 33 where 30 are allowed.
    let wide = format!(
        "{{ {} }}",
        (0..11)
            .map(|i| format!("r{i}: runs {{ edges {{ cursor }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let a = server.gql_as(Some(&server.token), &wide, json!({})).await;
    assert_eq!(code(&a), Some("BAD_USER_INPUT"), "{}", a.body);
    assert!(
        a.body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("too complex"),
        "{}",
        a.body
    );

    // Body size: 8 KiB where 4 KiB are allowed; 413 before any parsing.
    let big = json!({ "query": format!("{RUNS} # {}", "x".repeat(8 * 1024)) }).to_string();
    let a = server.post_as(Some(&server.token), big).await;
    assert_eq!(
        (a.status, code(&a)),
        (413, Some("BAD_USER_INPUT")),
        "{}",
        a.body
    );

    // Introspection is refused, also through a fragment; plain queries still work.
    for q in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"Run\") { name } }",
        "query { ...F } fragment F on Query { __schema { queryType { name } } }",
    ] {
        let a = server.gql_as(Some(&server.token), q, json!({})).await;
        assert_eq!(code(&a), Some("BAD_USER_INPUT"), "{q}: {}", a.body);
        assert!(
            a.body["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("introspection"),
            "{}",
            a.body
        );
    }

    // Timeout: a client that announces a body and never sends it is answered 408 after the
    // request timeout, instead of holding a connection forever.
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{",
        server.token
    );
    let started = Instant::now();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await
    .expect("an answer before 10 s")
    .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("TIMEOUT"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    drop(server);

    // The default depth limit (16) stops a deeply nested introspection query; introspection is
    // on by default.
    let server = Server::start(&store, &["--no-workers"]).await;
    let a = server
        .gql_as(
            Some(&server.token),
            "{ __schema { queryType { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        a.body["data"]["__schema"]["queryType"]["name"],
        json!("Query"),
        "{}",
        a.body
    );
    let nested = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(14),
        "} ".repeat(14)
    );
    let a = server.gql_as(Some(&server.token), &nested, json!({})).await;
    assert_eq!(code(&a), Some("BAD_USER_INPUT"), "{}", a.body);
    assert!(
        a.body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested too deep"),
        "{}",
        a.body
    );
}

async fn rate_limits(store: TestStore) {
    let server = Server::start(
        &store,
        &[
            "--no-workers",
            "--rate-limit",
            "1",
            "--rate-limit-burst",
            "3",
        ],
    )
    .await;
    let other = new_token(&store, "viewer", "other");
    let t = server.token.clone();
    for i in 0..3 {
        let a = server.gql_as(Some(&t), RUNS, json!({})).await;
        assert_eq!(a.status, 200, "request {i} of the burst: {}", a.body);
    }
    let a = server.gql_as(Some(&t), RUNS, json!({})).await;
    assert_eq!(
        (a.status, code(&a)),
        (429, Some("RATE_LIMITED")),
        "{}",
        a.body
    );
    let retry = a
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(
        retry,
        Some(1),
        "Retry-After in whole seconds: {:?}",
        a.headers
    );
    // Buckets are per token: another token is unaffected.
    let a = server.gql_as(Some(&other), RUNS, json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // After Retry-After, the first token may send again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = server.gql_as(Some(&t), RUNS, json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // A request without a valid token is refused before it can spend anyone's budget.
    let a = server.gql_as(None, RUNS, json!({})).await;
    assert_eq!(a.status, 401);
}

async fn insecure_no_auth(store: TestStore) {
    let server = Server::start(&store, &["--insecure-no-auth", "--no-workers"]).await;
    assert!(
        server.proc.stderr().contains("WARNING: --insecure-no-auth"),
        "{}",
        server.proc.stderr()
    );
    let a = server.gql_as(None, DEPLOY, json!({ "s": QUICK })).await;
    assert_eq!(
        a.body["data"]["deployDefinition"]["ok"],
        json!(true),
        "{}",
        a.body
    );
    let mut sub = Subscription::open_with(
        &server,
        "graphql-transport-ws",
        None,
        json!({}),
        "subscription { runsChanged { id } }",
        json!({}),
    )
    .await;
    server.gql_as(None, START, json!({})).await;
    let d = sub.next().await.expect("a change");
    assert!(d["runsChanged"]["id"].is_string(), "{d}");
}

/// The runs index is a projection: corrupt a row behind the server's back, and
/// `cairn projections rebuild` (run while the server and its workers are up) puts it right and
/// records its checkpoint.
async fn projections_rebuild_repairs_the_runs_index(store: TestStore) {
    let server = Server::start(&store, &[]).await;
    server.deploy(QUICK).await;
    let id = server
        .start_run("quick", json!({ "name": "x" }), None)
        .await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    server.wait_status(&id, "COMPLETED").await;

    // Corrupt the index row (the events stay untouched).
    let corrupt = "UPDATE runs SET status = 'running' WHERE run_id = ";
    let status_sql = "SELECT status FROM runs WHERE run_id = ";
    let status = |s: Option<String>| s.unwrap_or_default();
    let read_status = || async {
        if let Some(path) = store.url.strip_prefix("sqlite://") {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .expect("open the sqlite store");
            status(
                sqlx::query_scalar(&format!("{status_sql}?"))
                    .bind(&id)
                    .fetch_optional(&mut c)
                    .await
                    .expect("read the runs row"),
            )
        } else {
            let mut c = sqlx::PgConnection::connect(&store.url)
                .await
                .expect("connect to postgres");
            status(
                sqlx::query_scalar(&format!("{status_sql}$1"))
                    .bind(&id)
                    .fetch_optional(&mut c)
                    .await
                    .expect("read the runs row"),
            )
        }
    };
    assert_eq!(read_status().await, "completed");
    if let Some(path) = store.url.strip_prefix("sqlite://") {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
            .await
            .expect("open the sqlite store");
        sqlx::query(&format!("{corrupt}?"))
            .bind(&id)
            .execute(&mut c)
            .await
            .expect("corrupt the row");
    } else {
        let mut c = sqlx::PgConnection::connect(&store.url)
            .await
            .expect("connect to postgres");
        sqlx::query(&format!("{corrupt}$1"))
            .bind(&id)
            .execute(&mut c)
            .await
            .expect("corrupt the row");
    }
    assert_eq!(read_status().await, "running");

    let out = Command::new(bin())
        .args(["projections", "rebuild", "--json", "--store", &store.url])
        .current_dir(store.sandbox.path())
        .env_remove("CAIRN_STORE")
        .output()
        .expect("run cairn projections rebuild");
    assert!(
        out.status.success(),
        "cairn projections rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report is one JSON object");
    assert_eq!(report["projection"], json!("runs"), "{report}");
    assert_eq!(report["repaired"], json!([id]), "{report}");
    assert!(report["checkpoint"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(read_status().await, "completed");

    // A second rebuild finds nothing to repair and reports the checkpoint the first recorded.
    let again = Command::new(bin())
        .args(["projections", "rebuild", "--json", "--store", &store.url])
        .current_dir(store.sandbox.path())
        .env_remove("CAIRN_STORE")
        .output()
        .expect("run cairn projections rebuild");
    let again: Value = serde_json::from_slice(&again.stdout).expect("a JSON report");
    assert_eq!(again["repaired"], json!([]), "{again}");
    assert_eq!(again["previousCheckpoint"], report["checkpoint"], "{again}");
}

const RUNS_PAGE: &str = "query($first: Int!, $after: String, $filter: RunsFilter, $order: RunsOrderBy) { runs(first: $first, after: $after, filter: $filter, orderBy: $order) { pageInfo { hasNextPage } edges { cursor node { id status createdAt updatedAt } } } }";

/// Every run of `filter` in `order`, in pages of two; panics on a repeated run.
async fn all_pages(server: &Server, filter: Value, order: Value) -> Vec<Value> {
    let mut after: Option<String> = None;
    let mut nodes = Vec::new();
    loop {
        let d = server
            .data(
                RUNS_PAGE,
                json!({ "first": 2, "after": after, "filter": filter, "order": order }),
            )
            .await;
        let edges = d["runs"]["edges"].as_array().cloned().unwrap_or_default();
        for e in &edges {
            nodes.push(e["node"].clone());
        }
        if d["runs"]["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        after = edges
            .last()
            .and_then(|e| e["cursor"].as_str())
            .map(str::to_string);
        assert!(after.is_some(), "a next page needs a cursor: {d}");
    }
    let ids: HashSet<&Value> = nodes.iter().map(|n| &n["id"]).collect();
    assert_eq!(ids.len(), nodes.len(), "a run came twice: {nodes:?}");
    nodes
}

fn ids_of(nodes: &[Value]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `runs(filter: {startedAfter, startedBefore}, orderBy)`, paged with keyset cursors.
async fn runs_filters_sorting_and_pages(store: TestStore) {
    // No workers, runs that wait: rows change only when this test changes them.
    let server = Server::start(&store, &["--no-workers"]).await;
    server.deploy(LISTEN).await;
    let mut started = Vec::new();
    for i in 0..5 {
        let r = server
            .start_run("wait-for-ping", json!({ "n": i }), None)
            .await;
        started.push(r["run"]["id"].as_str().unwrap_or_default().to_string());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Cancel the second run: its `updatedAt` moves past the others'.
    server
        .data(
            "mutation($id: String!) { cancelRun(id: $id) { id } }",
            json!({ "id": started[1] }),
        )
        .await;

    let key = |n: &Value, f: &str| {
        (
            n[f].as_str().unwrap_or_default().to_string(),
            n["id"].as_str().unwrap_or_default().to_string(),
        )
    };
    for (field, json_field) in [("CREATED_AT", "createdAt"), ("UPDATED_AT", "updatedAt")] {
        for dir in ["ASC", "DESC"] {
            let nodes = all_pages(
                &server,
                json!({}),
                json!({ "field": field, "direction": dir }),
            )
            .await;
            assert_eq!(nodes.len(), 5, "{field} {dir}: {nodes:?}");
            let keys: Vec<_> = nodes.iter().map(|n| key(n, json_field)).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            if dir == "DESC" {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "{field} {dir}");
        }
    }
    // The default is newest first, and equals CREATED_AT DESC.
    let default = all_pages(&server, json!({}), Value::Null).await;
    let mut newest_first = started.clone();
    newest_first.reverse();
    assert_eq!(ids_of(&default), newest_first);
    // UPDATED_AT DESC puts the cancelled run first.
    let by_update = all_pages(&server, json!({}), json!({ "field": "UPDATED_AT" })).await;
    assert_eq!(ids_of(&by_update)[0], started[1], "{by_update:?}");

    // Started between: from the second run's start (inclusive) to the fourth's (exclusive).
    let asc = all_pages(&server, json!({}), json!({ "direction": "ASC" })).await;
    assert_eq!(ids_of(&asc), started);
    let window = json!({
        "startedAfter": asc[1]["createdAt"],
        "startedBefore": asc[3]["createdAt"],
    });
    let inside = all_pages(&server, window.clone(), json!({ "direction": "ASC" })).await;
    assert_eq!(ids_of(&inside), started[1..3].to_vec(), "{window}");
    // Any offset is accepted; with a status filter too.
    let far = json!({ "startedAfter": "2000-01-01T01:00:00+01:00", "status": ["CANCELLED"] });
    assert_eq!(
        ids_of(&all_pages(&server, far, Value::Null).await),
        [started[1].clone()]
    );

    // Bad input: not a date-time; a cursor of another order.
    let bad = server
        .gql(
            RUNS_PAGE,
            json!({ "first": 2, "filter": { "startedAfter": "yesterday" } }),
        )
        .await;
    assert!(bad.get("errors").is_some(), "{bad}");
    assert!(bad.to_string().contains("RFC 3339"), "{bad}");
    let page = server.data(RUNS_PAGE, json!({ "first": 2 })).await;
    let cursor = page["runs"]["edges"][0]["cursor"].clone();
    let other = server
        .gql(
            RUNS_PAGE,
            json!({ "first": 2, "after": cursor, "order": { "field": "UPDATED_AT" } }),
        )
        .await;
    assert_eq!(code_of(&other), Some("BAD_USER_INPUT"), "{other}");
}

const START_CORRELATED: &str = "mutation($n: String!, $c: String) { startRun(definition: {namespace: \"test\", name: $n}, correlationId: $c) { created run { id correlationId } } }";

const CORRELATED_PAGE: &str = "query($filter: RunsFilter) { runs(first: 50, filter: $filter) { edges { node { id status correlationId } } } }";

/// The ids and correlation ids of the runs matching `filter`, newest first.
async fn correlated(server: &Server, filter: Value) -> Vec<(String, Value)> {
    let d = server
        .data(CORRELATED_PAGE, json!({ "filter": filter }))
        .await;
    d["runs"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["node"]["id"].as_str().unwrap_or_default().to_string(),
                e["node"]["correlationId"].clone(),
            )
        })
        .collect()
}

/// `startRun(correlationId:)`, `runs(filter: {correlationId})`, `runsChanged` with it, the
/// `Run.correlationId` field, the checks on a bad id, and the CLI's `--correlation-id`.
async fn runs_filtered_by_correlation(store: TestStore) {
    // No workers: the runs wait, so their rows change only when this test changes them.
    let server = Server::start(&store, &["--no-workers"]).await;
    server.deploy(LISTEN).await;
    server.deploy(QUICK).await;
    let mut ids = Vec::new();
    for c in [json!("order-A"), json!("order-B"), Value::Null] {
        let r = server
            .data(START_CORRELATED, json!({ "n": "wait-for-ping", "c": c }))
            .await;
        assert_eq!(r["startRun"]["run"]["correlationId"], c, "{r}");
        ids.push(
            r["startRun"]["run"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let (a, b, plain) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    assert_eq!(
        correlated(&server, json!({ "correlationId": "order-A" })).await,
        [(a.clone(), json!("order-A"))]
    );
    assert_eq!(
        correlated(&server, json!({ "correlationId": "order-B" })).await,
        [(b.clone(), json!("order-B"))]
    );
    // Exact match only; and with the other filters.
    assert!(correlated(&server, json!({ "correlationId": "order" }))
        .await
        .is_empty());
    assert!(correlated(
        &server,
        json!({ "correlationId": "order-A", "status": ["COMPLETED"] })
    )
    .await
    .is_empty());
    assert_eq!(
        correlated(
            &server,
            json!({ "correlationId": "order-B", "name": "wait-for-ping", "status": ["WAITING", "RUNNING", "PENDING"] })
        )
        .await
        .len(),
        1
    );
    // Unfiltered: all three, the one without an id shows null.
    let all = correlated(&server, json!({})).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.contains(&(plain.clone(), Value::Null)), "{all:?}");
    let run = server
        .data(
            "query($id: String!) { run(id: $id) { correlationId } }",
            json!({ "id": a }),
        )
        .await;
    assert_eq!(run["run"]["correlationId"], json!("order-A"));

    // runsChanged honours the filter: runs of another id never come through. The feed starts
    // when the server has taken the subscription, which the protocol does not acknowledge:
    // start pairs of runs until one shows up.
    let mut changes = Subscription::open(
        &server,
        "graphql-transport-ws",
        "subscription { runsChanged(filter: {correlationId: \"order-C\"}) { id correlationId } }",
        json!({}),
    )
    .await;
    let mut wanted = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let change = loop {
        assert!(Instant::now() < deadline, "runsChanged sent nothing");
        for c in ["order-D", "order-C"] {
            let r = server
                .data(START_CORRELATED, json!({ "n": "quick", "c": c }))
                .await;
            if c == "order-C" {
                wanted.push(r["startRun"]["run"]["id"].clone());
            }
        }
        tokio::select! {
            c = changes.next() => break c.expect("a change"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    assert_eq!(
        change["runsChanged"]["correlationId"],
        json!("order-C"),
        "{change}"
    );
    assert!(wanted.contains(&change["runsChanged"]["id"]), "{change}");
    changes.close().await;

    // Bad ids: empty, too long, a control character; as an argument and in a filter.
    for bad in [String::new(), "x".repeat(257), "line\nbreak".to_string()] {
        let r = server
            .gql(START_CORRELATED, json!({ "n": "quick", "c": bad }))
            .await;
        assert_eq!(code_of(&r), Some("BAD_USER_INPUT"), "{r}");
        assert!(r.to_string().contains("correlationId"), "{r}");
        let r = server
            .gql(
                CORRELATED_PAGE,
                json!({ "filter": { "correlationId": bad } }),
            )
            .await;
        assert_eq!(code_of(&r), Some("BAD_USER_INPUT"), "{r}");
    }
    // 256 characters (not bytes) is the limit.
    let longest = "é".repeat(256);
    let r = server
        .data(START_CORRELATED, json!({ "n": "quick", "c": longest }))
        .await;
    assert_eq!(r["startRun"]["run"]["correlationId"], json!(longest));

    // The CLI on the same store: `cairn start --correlation-id`, `cairn runs --correlation-id`.
    let file = store.sandbox.write("listen.yaml", LISTEN);
    let file = file.to_str().unwrap_or_default();
    let out = store.sandbox.cairn(&[
        "start",
        file,
        "--correlation-id",
        "order-E",
        "--store",
        &store.url,
    ]);
    out.expect_code(0);
    let e = out.stdout.trim().to_string();
    let listed = store.sandbox.cairn(&[
        "runs",
        "--correlation-id",
        "order-E",
        "--json",
        "--store",
        &store.url,
    ]);
    listed.expect_code(0);
    let rows = listed.json_lines().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{}", listed.describe());
    assert_eq!(rows[0]["id"], json!(e));
    assert_eq!(rows[0]["correlationId"], json!("order-E"));
    let listed =
        store
            .sandbox
            .cairn(&["runs", "--correlation-id", "order-A", "--store", &store.url]);
    listed.expect_code(0);
    assert!(listed.stdout.contains(&a), "{}", listed.describe());
    assert!(!listed.stdout.contains(&b), "{}", listed.describe());
    // The server sees the CLI's run under its id.
    assert_eq!(
        correlated(&server, json!({ "correlationId": "order-E" })).await,
        [(e, json!("order-E"))]
    );
    // A bad id is a usage error, with nothing recorded.
    for args in [
        vec!["start", file, "--correlation-id", ""],
        vec!["start", file, "--correlation-id", "tab\there"],
        vec!["runs", "--correlation-id", ""],
    ] {
        let mut args = args;
        args.extend(["--store", &store.url]);
        store
            .sandbox
            .cairn(&args)
            .expect_code(2)
            .expect_message("correlation id");
    }
    let too_long = "x".repeat(257);
    store
        .sandbox
        .cairn(&[
            "start",
            file,
            "--correlation-id",
            &too_long,
            "--store",
            &store.url,
        ])
        .expect_code(2)
        .expect_message("1 to 256 characters");
    assert!(correlated(&server, json!({ "correlationId": "order" }))
        .await
        .is_empty());
}
