//! The secrets canary: workflows use known secret values (the canary) in every place a
//! definition can put one (authentication of each kind, by expression and by name; headers,
//! query, body and URI, whole or inside strings; a failing call whose URI carries one; a
//! transformed secret; a sub-workflow's input), through a real `cairn serve` (with
//! `CAIRN_LOG=trace`) on SQLite and on PostgreSQL. The loopback server they call must receive
//! the secrets; afterwards the canary is searched for in every GraphQL answer, in `cairn
//! history` and `cairn status`, in the server's whole log, and in the store (the SQLite files
//! byte for byte, or a `pg_dump` of the test's database), and must be found nowhere.
//!
//! A control secret that a definition writes into its own data (`set`) must be found in all
//! those places, which shows that the search would see a leak.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::{json, Value};
use sqlx::Connection as _;

use crate::common::{bin, postgres_url, skip, with_database, Sandbox};

const PATIENCE: Duration = Duration::from_secs(30);

/// Every secret value of the test contains this; it must never be found.
const CANARY: &str = "Kq7CANARYzX";
/// The secret a definition writes into its own data: it must be found.
const CONTROL: &str = "Kq7CONTROLzX";

fn secrets_file() -> String {
    format!(
        r#"
api:
  token: tok-{CANARY}-1
  user: alice
  password: pw-{CANARY}-2
  key: key{CANARY}3
bearerCreds:
  token: btok-{CANARY}-4
basicCreds:
  username: bob
  password: bpw-{CANARY}-5
control: ctl-{CONTROL}
"#
    )
}

/// Every way a call can carry a secret that is sent as it is: all must reach the server.
fn calls(port: u16) -> String {
    format!(
        r#"
document: {{dsl: '1.0.3', namespace: test, name: canary-calls, version: '1.0.0'}}
use:
  authentications:
    viaExpression:
      bearer: {{token: '${{ $secrets.api.token }}'}}
    byName:
      basic: {{use: basicCreds}}
do:
  - bearerExpression:
      call: http
      with:
        method: get
        endpoint:
          uri: http://127.0.0.1:{port}/bearer-expression
          authentication: {{bearer: {{token: '${{ $secrets.api.token }}'}}}}
  - basicExpression:
      call: http
      with:
        method: get
        endpoint:
          uri: http://127.0.0.1:{port}/basic-expression
          authentication:
            basic: {{username: '${{ $secrets.api.user }}', password: '${{ $secrets.api.password }}'}}
  - bearerByName:
      call: http
      with:
        method: get
        endpoint:
          uri: http://127.0.0.1:{port}/bearer-by-name
          authentication: {{bearer: {{use: bearerCreds}}}}
  - basicByReference:
      call: http
      with:
        method: get
        endpoint:
          uri: http://127.0.0.1:{port}/basic-by-reference
          authentication: {{use: byName}}
  - expressionByReference:
      call: http
      with:
        method: get
        endpoint:
          uri: http://127.0.0.1:{port}/expression-by-reference
          authentication: {{use: viaExpression}}
  - everywhere:
      call: http
      with:
        method: post
        endpoint: http://127.0.0.1:{port}/everywhere
        headers:
          X-Api-Key: '${{ $secrets.api.key }}'
          X-Token: '${{ "Token " + $secrets.api.token }}'
          X-Interpolated: '${{ "k=\($secrets.api.key);" }}'
        query:
          key: '${{ $secrets.api.key }}'
          plain: visible
        body:
          nested: {{deep: '${{ $secrets.api.password }}', list: ['${{ $secrets.api.token }}']}}
          whole: '${{ $secrets.basicCreds }}'
        output: response
  - computed:
      call: http
      with:
        method: post
        endpoint: http://127.0.0.1:{port}/computed
        headers: '${{ {{"X-Whole": $secrets.api.key}} }}'
        query: '${{ {{q: ("pre-" + $secrets.api.key)}} }}'
        body: '${{ {{token: $secrets.api.token, n: $workflow.input.n}} }}'
  - inTheUri:
      call: http
      with:
        method: get
        endpoint: '${{ "http://127.0.0.1:{port}/uri/" + $secrets.api.key + "?t=" + $secrets.api.token }}'
"#
    )
}

/// Every way a secret can fail a call: each is caught, and none may record the secret.
fn failures(port: u16, closed: u16) -> String {
    format!(
        r#"
document: {{dsl: '1.0.3', namespace: test, name: canary-failures, version: '1.0.0'}}
do:
  - notFound:
      try:
        - get:
            call: http
            with:
              method: get
              endpoint: '${{ "http://127.0.0.1:{port}/missing?key=" + $secrets.api.key }}'
      catch:
        as: e
  - refused:
      try:
        - get:
            call: http
            with:
              method: get
              endpoint: '${{ "http://127.0.0.1:{closed}/x?key=" + $secrets.api.key }}'
      catch:
        as: e
  - transformed:
      try:
        - get:
            call: http
            with:
              method: get
              endpoint: http://127.0.0.1:{port}/transformed
              headers:
                X-Lower: '${{ $secrets.api.token | ascii_downcase }}'
      catch:
        as: e
  - failingExpression:
      try:
        - get:
            call: http
            with:
              method: get
              endpoint: http://127.0.0.1:{port}/failing
              headers:
                X-Number: '${{ $secrets.api.token | tonumber }}'
      catch:
        as: e
  - child:
      try:
        - start:
            run:
              workflow:
                namespace: test
                name: canary-child
                version: '1.0.0'
                input: {{token: '${{ $secrets.api.token }}'}}
      catch:
        as: e
"#
    )
}

const CHILD: &str = r#"
document: {dsl: '1.0.3', namespace: test, name: canary-child, version: '1.0.0'}
do:
  - nothing:
      set: {ok: true}
"#;

/// A definition that writes a secret into its own data, explicitly.
const CONTROL_DEF: &str = r#"
document: {dsl: '1.0.3', namespace: test, name: canary-control, version: '1.0.0'}
do:
  - keep:
      set:
        kept: '${ $secrets.control }'
"#;

// ----- the loopback server the workflows call ---------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    method: String,
    uri: String,
    headers: HashMap<String, String>,
    body: String,
}

type Seen = Arc<Mutex<Vec<Received>>>;

async fn record(
    State(seen): State<Seen>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let r = Received {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let missing = r.uri.starts_with("/missing");
    if let Ok(mut s) = seen.lock() {
        s.push(r);
    }
    // Never echo anything: what the service answers is the workflow's data, not a leak.
    if missing {
        (StatusCode::NOT_FOUND, "{}").into_response()
    } else {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"ok":true}"#,
        )
            .into_response()
    }
}

async fn loopback() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new().fallback(record).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the loopback server");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("its address").port();
    drop(l);
    port
}

// ----- the store, the server and the CLI --------------------------------------------------------

struct Store {
    url: String,
    sandbox: Sandbox,
    /// (admin url, database) of a PostgreSQL database dropped at the end.
    pg: Option<(String, String)>,
}

impl Store {
    fn sqlite() -> Store {
        let sandbox = Sandbox::new();
        Store {
            url: sandbox.store_named("canary"),
            sandbox,
            pg: None,
        }
    }

    async fn postgres() -> Option<Store> {
        let admin = postgres_url();
        let name = format!("canary_{}", uuid::Uuid::new_v4().simple());
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
                "secrets canary on postgres",
                &format!("cannot create a database on CAIRN_TEST_POSTGRES_URL: {e}"),
            );
            return None;
        }
        Some(Store {
            url: with_database(&admin, &name),
            sandbox: Sandbox::new(),
            pg: Some((admin, name)),
        })
    }

    /// Everything the store holds, as text: the SQLite files byte for byte, or a `pg_dump`.
    fn dump(&self) -> String {
        match &self.pg {
            None => {
                let mut all = String::new();
                for entry in std::fs::read_dir(self.sandbox.path()).expect("the sandbox") {
                    let path = entry.expect("an entry").path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name.starts_with("canary.db") {
                        let bytes = std::fs::read(&path).expect("a store file");
                        all.push_str(&String::from_utf8_lossy(&bytes));
                    }
                }
                assert!(!all.is_empty(), "no SQLite store file was found");
                all
            }
            Some(_) => {
                let out = Command::new("pg_dump")
                    .arg("--no-owner")
                    .arg(&self.url)
                    .output()
                    .expect("pg_dump runs");
                assert!(
                    out.status.success(),
                    "pg_dump failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Runs `cairn ARGS` to the end; returns (success, stdout, stderr).
fn cli(store: &Store, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(store.sandbox.path())
        .env_remove("CAIRN_STORE")
        .env_remove("CAIRN_SECRETS_FILE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run cairn {args:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Serve {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    base: String,
    token: String,
    http: reqwest::Client,
    /// Every GraphQL answer, as received.
    answers: Mutex<Vec<String>>,
}

impl Serve {
    async fn start(store: &Store, secrets: &Path) -> Serve {
        let (ok, token, err) = cli(
            store,
            &[
                "token", "create", "--role", "admin", "--name", "canary", "--store", &store.url,
            ],
        );
        assert!(ok, "cairn token create: {err}");
        let secrets = secrets.display().to_string();
        let mut child = Command::new(bin())
            .args([
                "serve",
                "--store",
                &store.url,
                "--listen",
                "127.0.0.1:0",
                "--secrets",
                &secrets,
                // The canary's SaaS stand-ins listen on loopback, which serve refuses by default
                // (docs/security/ssrf.md).
                "--allow-outbound",
                "127.0.0.1",
            ])
            .current_dir(store.sandbox.path())
            .env_remove("CAIRN_ALLOW_OUTBOUND")
            .env_remove("CAIRN_STORE")
            .env_remove("CAIRN_LISTEN")
            .env_remove("CAIRN_SECRETS_FILE")
            .env("CAIRN_LOG", "trace")
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start cairn serve: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel::<String>();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("cairn serve printed no address"));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                // The log line may go on after the address.
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        let serve = Serve {
            child: Some(child),
            log,
            base: format!("http://{addr}"),
            token: token.trim().to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("an HTTP client"),
            answers: Mutex::default(),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = serve
                .http
                .get(format!("{}/readyz", serve.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "cairn serve never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        serve
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A GraphQL request that must succeed; returns `data`. The answer is kept for the search.
    async fn gql(&self, query: &str, variables: Value) -> Value {
        let text = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql")
            .text()
            .await
            .expect("an answer");
        if let Ok(mut a) = self.answers.lock() {
            a.push(text.clone());
        }
        let v: Value = serde_json::from_str(&text).expect("a JSON answer");
        assert!(v.get("errors").is_none(), "GraphQL errors: {v}");
        v["data"].clone()
    }

    async fn deploy(&self, source: &str) {
        let d = self
            .gql(
                "mutation($s: String!) { deployDefinition(source: $s) { ok problems { pointer message } } }",
                json!({ "s": source }),
            )
            .await;
        assert_eq!(d["deployDefinition"]["ok"], json!(true), "{d}");
    }

    async fn start_run(&self, name: &str) -> String {
        let d = self
            .gql(
                "mutation($n: String!) { startRun(definition: {namespace: \"test\", name: $n}, input: {n: 1}) { run { id } } }",
                json!({ "n": name }),
            )
            .await;
        d["startRun"]["run"]["id"]
            .as_str()
            .expect("a run id")
            .to_string()
    }

    /// Everything GraphQL says about a run, once it has ended.
    async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let d = self
                .gql(
                    "query($id: String!) { run(id: $id) { id status definition { namespace name version hash } input output error currentTasks startedAt updatedAt parentRunId correlationId retries lastPosition timeline { name status attempts error } events(first: 500) { edges { cursor node { position sequence type data recordedAt } } } } }",
                    json!({ "id": id }),
                )
                .await;
            let status = d["run"]["status"].as_str().unwrap_or_default().to_string();
            if matches!(status.as_str(), "COMPLETED" | "FAULTED" | "CANCELLED") {
                return d["run"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "run {id} did not end: {d}\n{}",
                tail(&self.log())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit, so that the store files are complete.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(s: &str) -> String {
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// The lines of `text` around each occurrence of `needle`, for the failure message.
fn where_found(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .take(5)
        .map(|l| l.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

// ----- the test -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_canary_on_sqlite() {
    canary(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_canary_on_postgres() {
    let Some(store) = Store::postgres().await else {
        return;
    };
    canary(store).await;
}

async fn canary(store: Store) {
    let (port, seen) = loopback().await;
    // The secrets file lives outside the sandbox, so that the store search cannot find it.
    let secrets_dir = tempfile::tempdir().expect("a temporary folder");
    let secrets = secrets_dir.path().join("secrets.yaml");
    std::fs::write(&secrets, secrets_file()).expect("write the secrets file");

    let mut serve = Serve::start(&store, &secrets).await;
    for def in [
        calls(port),
        failures(port, closed_port()),
        CHILD.to_string(),
    ] {
        serve.deploy(&def).await;
    }
    serve.deploy(CONTROL_DEF).await;

    let calls_run = serve.start_run("canary-calls").await;
    let failures_run = serve.start_run("canary-failures").await;
    let control_run = serve.start_run("canary-control").await;
    let calls_out = serve.finished(&calls_run).await;
    let failures_out = serve.finished(&failures_run).await;
    let control_out = serve.finished(&control_run).await;
    assert_eq!(
        calls_out["status"],
        json!("COMPLETED"),
        "{calls_out:#}\n{}",
        tail(&serve.log())
    );
    assert_eq!(
        failures_out["status"],
        json!("COMPLETED"),
        "{failures_out:#}"
    );
    assert_eq!(control_out["status"], json!("COMPLETED"), "{control_out:#}");
    serve
        .gql(
            "query { runs(first: 50) { edges { node { id status } } } definitions { namespace name version hash source problems { message } } }",
            json!({}),
        )
        .await;

    serve.stop();
    let log = serve.log();
    let answers = serve
        .answers
        .lock()
        .map(|a| a.join("\n"))
        .unwrap_or_default();
    let mut cli_out = String::new();
    for run in [&calls_run, &failures_run, &control_run] {
        for args in [
            vec!["history", run.as_str(), "--store", &store.url],
            vec!["history", run.as_str(), "--store", &store.url, "--json"],
            vec!["status", run.as_str(), "--store", &store.url],
            vec!["status", run.as_str(), "--store", &store.url, "--json"],
        ] {
            let (ok, out, err) = cli(&store, &args);
            assert!(ok, "cairn {args:?}: {err}");
            cli_out.push_str(&out);
            cli_out.push_str(&err);
        }
    }
    let dump = store.dump();

    assert!(
        log.contains("TRACE") && log.contains("http_call"),
        "the server did not log at trace level:\n{}",
        tail(&log)
    );
    for (what, text) in [
        ("the GraphQL answers", &answers),
        ("cairn history and status", &cli_out),
        ("the store", &dump),
    ] {
        assert!(
            text.contains(CONTROL),
            "the control secret, which a definition writes into its data, is not in {what}: \
             the search is broken"
        );
    }
    for (what, text) in [
        ("the GraphQL answers", &answers),
        ("cairn history and status", &cli_out),
        ("the store", &dump),
        ("the server's trace log", &log),
    ] {
        assert!(
            !text.contains(CANARY),
            "a secret was found in {what}:\n{}",
            where_found(text, CANARY)
        );
    }

    // The secrets did reach the server, where they were meant to go.
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let at = |path: &str| -> Received {
        seen.iter()
            .find(|r| r.uri.starts_with(path))
            .cloned()
            .unwrap_or_else(|| panic!("no request to {path}; seen: {seen:#?}"))
    };
    let auth = |path: &str| {
        at(path)
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default()
    };
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    assert_eq!(auth("/bearer-expression"), format!("Bearer tok-{CANARY}-1"));
    assert_eq!(
        auth("/basic-expression"),
        basic("alice", &format!("pw-{CANARY}-2"))
    );
    assert_eq!(auth("/bearer-by-name"), format!("Bearer btok-{CANARY}-4"));
    assert_eq!(
        auth("/basic-by-reference"),
        basic("bob", &format!("bpw-{CANARY}-5"))
    );
    assert_eq!(
        auth("/expression-by-reference"),
        format!("Bearer tok-{CANARY}-1")
    );
    let everywhere = at("/everywhere");
    assert_eq!(everywhere.method, "POST");
    assert_eq!(everywhere.headers["x-api-key"], format!("key{CANARY}3"));
    assert_eq!(
        everywhere.headers["x-token"],
        format!("Token tok-{CANARY}-1")
    );
    assert_eq!(
        everywhere.headers["x-interpolated"],
        format!("k=key{CANARY}3;")
    );
    assert_eq!(
        everywhere.uri,
        format!("/everywhere?key=key{CANARY}3&plain=visible")
    );
    let body: Value = serde_json::from_str(&everywhere.body).expect("a JSON body");
    assert_eq!(
        body,
        json!({
            "nested": {"deep": format!("pw-{CANARY}-2"), "list": [format!("tok-{CANARY}-1")]},
            "whole": {"username": "bob", "password": format!("bpw-{CANARY}-5")}
        })
    );
    let computed = at("/computed");
    assert_eq!(computed.headers["x-whole"], format!("key{CANARY}3"));
    assert_eq!(computed.uri, format!("/computed?q=pre-key{CANARY}3"));
    let body: Value = serde_json::from_str(&computed.body).expect("a JSON body");
    assert_eq!(body, json!({"token": format!("tok-{CANARY}-1"), "n": 1}));
    assert_eq!(
        at("/uri/").uri,
        format!("/uri/key{CANARY}3?t=tok-{CANARY}-1")
    );
    assert!(seen.iter().any(|r| r.uri.starts_with("/missing?key=")));
    // The transformed secret, the failing expression and the child's input never left.
    for path in ["/transformed", "/failing"] {
        assert!(
            !seen.iter().any(|r| r.uri.starts_with(path)),
            "{path} was called"
        );
    }

    // The failures were caught with errors that say why, without the secret.
    let events = failures_out["events"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let caught: Vec<String> = events
        .iter()
        .filter(|e| e["node"]["type"] == json!("ErrorCaught"))
        .map(|e| e["node"]["data"]["error"].to_string())
        .collect();
    assert_eq!(caught.len(), 5, "{caught:#?}");
    assert!(caught[0].contains("404"), "{}", caught[0]);
    assert!(caught[1].contains("could not connect"), "{}", caught[1]);
    assert!(
        caught[2].contains("Secret used in an unsupported way"),
        "{}",
        caught[2]
    );
    assert!(caught[4].contains("sub-workflow"), "{}", caught[4]);
}
