//! End-to-end tests of `cairn serve`: the real binary on an ephemeral port of 127.0.0.1, spoken to
//! over real HTTP (reqwest) and WebSocket (tokio-tungstenite, `graphql-transport-ws` and the
//! legacy `graphql-ws`), on SQLite and on PostgreSQL.
//!
//! PostgreSQL tests use a fresh database per test on `CAIRN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards; they are skipped loudly when
//! the server is unreachable, and fail instead under `CI=true`.

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

use crate::common::{bin, Sandbox};

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

/// The server the PostgreSQL tests use when `CAIRN_TEST_POSTGRES_URL` is not set.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

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
        let admin = std::env::var("CAIRN_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string());
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
            let msg = format!(
                "SKIPPED server test on postgres: cannot reach the server of \
                 CAIRN_TEST_POSTGRES_URL or create a database there: {e}"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg} (CI=true: failing instead of skipping)");
            }
            eprintln!("\n************************************************************");
            eprintln!("{msg}");
            eprintln!("************************************************************\n");
            println!("{msg}");
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

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{base}/{db}{query}")
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
);

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

/// A running `cairn serve` and a client for it.
struct Server {
    proc: Proc,
    base: String,
    http: reqwest::Client,
}

impl Server {
    /// Starts `cairn serve --listen 127.0.0.1:0` and waits until `/readyz` answers 200.
    async fn start(store: &TestStore, extra: &[&str]) -> Server {
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

    /// POSTs a GraphQL request; returns the whole response document.
    async fn gql(&self, query: &str, variables: Value) -> Value {
        let r = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql: {e}\n{}", self.proc.stderr()));
        r.json()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql answered no JSON: {e}"))
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
    /// Connects with `protocol` (`graphql-transport-ws` or `graphql-ws`) and subscribes.
    async fn open(server: &Server, protocol: &str, query: &str, variables: Value) -> Subscription {
        let mut req = server
            .ws_url()
            .into_client_request()
            .expect("a WebSocket request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocol.parse().expect("a header value"),
        );
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
        s.send(json!({ "type": "connection_init", "payload": {} }))
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
    let mut statuses = Vec::new();
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

    let server = Server::start(&store, &[]).await;
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
    assert!(metrics.contains("cairn_runs_started_total 2"), "{metrics}");
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
