//! Careless input, through the `cairn` binary and GraphQL over real HTTP: only CloudEvents are
//! delivered, input and events have size limits, a run's input is stored once, error details
//! are clipped, input that fails the workflow's schema is refused with exit 2, `validate` knows
//! which functions exist, read-only commands create no store, `serve` says it listens only once
//! its store is open, and `worker --exit-when-idle` does not wait for events that only the
//! outside world can send.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{bin, Sandbox, TIMEOUT};

const LISTEN: &str = r#"
document: { dsl: '1.0.3', namespace: test, name: wait-for-ping, version: '0.1.0' }
do:
  - waitForPing:
      listen:
        to:
          one:
            with:
              type: com.example.ping
"#;

const PING: &str =
    r#"{"specversion":"1.0","id":"1","source":"test","type":"com.example.ping","data":{"x":1}}"#;

/// A workflow whose tasks never copy their input into their output.
const SMALL_OUTPUT: &str = r#"
document: { dsl: '1.0.3', namespace: test, name: small-output, version: '0.1.0' }
do:
  - first: { set: { ok: true } }
"#;

const SCHEMA: &str = r#"
document: { dsl: '1.0.3', namespace: test, name: typed, version: '0.1.0' }
input:
  schema:
    format: json
    document:
      type: object
      required: [name]
      properties:
        name: { type: string }
do:
  - greet: { set: { greeting: '${ "hello " + .name }' } }
"#;

fn start(sb: &Sandbox, store: &str, file: &Path, input: &str) -> String {
    let out = sb.cairn(&[
        "start",
        &file.to_string_lossy(),
        "--input",
        input,
        "--store",
        store,
    ]);
    out.expect_code(0);
    out.stdout.trim().to_string()
}

fn status(sb: &Sandbox, store: &str, run: &str) -> Value {
    let out = sb.cairn(&["status", run, "--json", "--store", store]);
    out.expect_code(0);
    out.json().unwrap_or_else(|| panic!("{}", out.describe()))
}

fn wait_for_status(sb: &Sandbox, store: &str, run: &str, want: &str) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = status(sb, store, run);
        if s["status"] == want {
            return s;
        }
        assert!(Instant::now() < deadline, "run {run} never got {want}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ----- CloudEvents only, and bounded ----------------------------------------------------------

#[test]
fn signal_accepts_only_cloud_events() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write("listen.yaml", LISTEN);
    let id = start(&sb, &store, &f, "{}");
    let big = json!({
        "specversion": "1.0", "id": "big", "source": "test", "type": "com.example.ping",
        "data": "x".repeat(300 * 1024),
    });
    let big_file = sb.write("big.json", &big.to_string());
    let refused = [
        ("{}".to_string(), "specversion"),
        (
            r#"{"id":"1","source":"s","type":"com.example.ping"}"#.into(),
            "specversion",
        ),
        (
            r#"{"specversion":"0.3","id":"1","source":"s","type":"com.example.ping"}"#.into(),
            "1.0",
        ),
        (
            r#"{"specversion":"1.0","source":"s","type":"com.example.ping"}"#.into(),
            "`id`",
        ),
        (
            r#"{"specversion":"1.0","id":"1","type":"com.example.ping"}"#.into(),
            "`source`",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s"}"#.into(),
            "`type`",
        ),
        (
            r#"{"specversion":"1.0","id":"","source":"s","type":"com.example.ping"}"#.into(),
            "empty",
        ),
        (
            r#"{"specversion":"1.0","id":1,"source":"s","type":"com.example.ping"}"#.into(),
            "string",
        ),
        ("[1]".into(), "object"),
        (format!("@{}", big_file.display()), "limit"),
    ];
    for (event, says) in &refused {
        sb.cairn(&["signal", &id, "--event", event, "--store", &store])
            .expect_code(2)
            .expect_message(says);
    }
    // Nothing reached the run: with a worker, it still waits.
    sb.cairn(&["worker", "--store", &store, "--exit-when-idle"])
        .expect_code(0);
    let s = status(&sb, &store, &id);
    assert_eq!(s["status"], json!("waiting"), "{s}");
    let h = sb.cairn(&["history", &id, "--json", "--store", &store]);
    assert!(!h.stdout.contains("EventReceived"), "{}", h.describe());
    // A CloudEvent completes it.
    sb.cairn(&["signal", &id, "--event", PING, "--store", &store])
        .expect_code(0);
    sb.cairn(&["worker", "--store", &store, "--exit-when-idle"])
        .expect_code(0);
    assert_eq!(status(&sb, &store, &id)["status"], json!("completed"));
}

// ----- input limits, once in the log, clipped errors, schema ------------------------------------

#[test]
fn input_is_stored_once() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write("small.yaml", SMALL_OUTPUT);
    let marker = format!("needle-{}", "n".repeat(20_000));
    let input = sb.write("input.json", &json!({ "payload": marker }).to_string());
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        &format!("@{}", input.display()),
        "--store",
        &store,
    ]);
    out.expect_code(0);
    let id = sb
        .cairn(&["runs", "--json", "--store", &store])
        .json_lines()
        .and_then(|l| l.first().and_then(|r| r["id"].as_str().map(str::to_string)))
        .expect("one run listed");
    let h = sb.cairn(&["history", &id, "--json", "--store", &store]);
    h.expect_code(0);
    let copies = h.stdout.matches(&marker).count();
    assert_eq!(
        copies, 1,
        "the input should be in the log once (RunStarted), not in every event that starts \
         from it; found {copies} copies"
    );
    // Still there wherever it is read: status, and the run's own view of it.
    let s = status(&sb, &store, &id);
    assert_eq!(s["input"]["payload"], json!(marker));
    assert_eq!(s["output"], json!({ "ok": true }));
}

#[test]
fn input_size_is_limited() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write("small.yaml", SMALL_OUTPUT);
    let input = sb.write(
        "big.json",
        &json!({ "payload": "x".repeat(1024 * 1024 + 10) }).to_string(),
    );
    for cmd in ["run", "start"] {
        sb.cairn(&[
            cmd,
            &f.to_string_lossy(),
            "--input",
            &format!("@{}", input.display()),
            "--store",
            &store,
        ])
        .expect_code(2)
        .expect_message("limit of 1048576 bytes");
    }
    // Nothing was recorded (not even the store).
    assert!(
        !sb.path().join("x.db").exists(),
        "a refused input must leave no store behind"
    );
}

#[test]
fn task_error_details_are_clipped() {
    let sb = Sandbox::new();
    let f = sb.write(
        "check.yaml",
        r#"
document: { dsl: '1.0.3', namespace: test, name: check, version: '0.1.0' }
do:
  - check:
      input:
        schema:
          format: json
          document: { type: string }
      set: { ok: true }
"#,
    );
    let input = sb.write(
        "input.json",
        &json!({ "payload": "y".repeat(200_000) }).to_string(),
    );
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        &format!("@{}", input.display()),
        "--store",
        &sb.store(),
    ]);
    out.expect_code(1);
    let err = out.json().unwrap_or_else(|| panic!("{}", out.describe()));
    let detail = err["detail"].as_str().unwrap_or_default();
    assert!(
        detail.chars().count() < 2200,
        "the detail quotes the whole value: {} characters",
        detail.chars().count()
    );
    assert!(detail.contains("characters cut"), "{detail}");
    assert!(detail.contains("does not match its schema"), "{detail}");
}

#[test]
fn input_that_fails_the_schema_exits_2() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write("typed.yaml", SCHEMA);
    for cmd in ["run", "start"] {
        sb.cairn(&[
            cmd,
            &f.to_string_lossy(),
            "--input",
            r#"{"name": 42}"#,
            "--store",
            &store,
        ])
        .expect_code(2)
        .expect_message("does not match its schema");
    }
    assert!(!sb.path().join("x.db").exists(), "nothing is recorded");
    // A good input runs.
    sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        r#"{"name": "Ada"}"#,
        "--store",
        &store,
    ])
    .expect_code(0)
    .expect_message("hello Ada");
}

// ----- validate: functions that exist -----------------------------------------------------------

#[test]
fn validate_reports_unknown_functions() {
    let sb = Sandbox::new();
    let f = sb.write(
        "calls.yaml",
        r#"
document: { dsl: '1.0.3', namespace: test, name: calls, version: '0.1.0' }
use:
  functions:
    declared:
      set: { ok: true }
do:
  - a: { call: declared }
  - b: { call: nosuchfunction }
  - c: { call: 'log:1.0.0@cat' }
"#,
    );
    let file = f.to_string_lossy();
    let out = sb.cairn(&["validate", &file]);
    out.expect_code(2)
        .expect_message("/do/1/b/call")
        .expect_message("unknown function `nosuchfunction`");
    // `declared` comes from use.functions; the catalog reference is reported as such, not
    // as an unknown function.
    assert!(!out.stdout.contains("`declared`"), "{}", out.describe());
    assert!(
        !out.stdout.contains("unknown function `log"),
        "{}",
        out.describe()
    );
    // The JSON form says the same.
    let j = sb.cairn(&["validate", &file, "--json"]);
    let problems = j.json().expect("JSON")["problems"].clone();
    assert!(
        problems
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["pointer"] == json!("/do/1/b/call"))),
        "{problems}"
    );
    // A function an embedding application registers is named with --function.
    let ok = sb.write(
        "ok.yaml",
        r#"
document: { dsl: '1.0.3', namespace: test, name: ok, version: '0.1.0' }
do:
  - b: { call: reserveStock }
"#,
    );
    sb.cairn(&["validate", &ok.to_string_lossy()])
        .expect_code(2)
        .expect_message("reserveStock");
    sb.cairn(&[
        "validate",
        &ok.to_string_lossy(),
        "--function",
        "reserveStock",
    ])
    .expect_code(0);
}

// ----- read-only commands never create a store --------------------------------------------------

#[test]
fn read_only_commands_create_no_store() {
    let sb = Sandbox::new();
    let missing = sb.path().join("nowhere").join("cairn.db");
    let store = format!("sqlite://{}", missing.display());
    for args in [
        vec!["status", "some-run"],
        vec!["history", "some-run"],
        vec!["runs"],
        vec!["runs", "--json"],
    ] {
        let mut with_store = args.clone();
        with_store.extend(["--store", &store]);
        sb.cairn(&with_store)
            .expect_code(2)
            .expect_message("no sqlite store");
        // The default store (`.cairn/cairn.db` in the working directory) alike.
        sb.cairn(&args)
            .expect_code(2)
            .expect_message(".cairn/cairn.db");
    }
    assert!(
        !sb.path().join("nowhere").exists(),
        "a directory was created"
    );
    assert!(
        !sb.path().join(".cairn").exists(),
        "the default store was created"
    );
    // On an existing store they read as before.
    let real = sb.store();
    let f = sb.write("small.yaml", SMALL_OUTPUT);
    let id = start(&sb, &real, &f, "{}");
    sb.cairn(&["runs", "--store", &real])
        .expect_code(0)
        .expect_message(&id);
    sb.cairn(&["history", &id, "--store", &real]).expect_code(0);
    sb.cairn(&["status", "no-such-run", "--store", &real])
        .expect_code(2)
        .expect_message("no-such-run");
}

// ----- worker --exit-when-idle ----------------------------------------------------------------

#[test]
fn exit_when_idle_does_not_wait_for_events_or_far_timers() {
    let sb = Sandbox::new();
    let store = sb.store();
    let listen = sb.write("listen.yaml", LISTEN);
    let waiting = start(&sb, &store, &listen, "{}");
    let far = sb.write(
        "far.yaml",
        r#"
document: { dsl: '1.0.3', namespace: test, name: far, version: '0.1.0' }
do:
  - nap: { wait: PT1H }
"#,
    );
    let napping = start(&sb, &store, &far, "{}");
    let near = sb.write(
        "near.yaml",
        r#"
document: { dsl: '1.0.3', namespace: test, name: near, version: '0.1.0' }
do:
  - nap: { wait: { milliseconds: 300 } }
  - done: { set: { ok: true } }
"#,
    );
    let soon = start(&sb, &store, &near, "{}");
    // The worker finishes what it can (the near timer) and exits, leaving the run that waits
    // for an event and the one whose timer is an hour away.
    sb.cairn(&["worker", "--store", &store, "--exit-when-idle"])
        .expect_code(0);
    assert_eq!(status(&sb, &store, &soon)["status"], json!("completed"));
    assert_eq!(status(&sb, &store, &waiting)["status"], json!("waiting"));
    assert_eq!(status(&sb, &store, &napping)["status"], json!("waiting"));
    // A wider window keeps it for the hour-long timer: it does not exit within a second.
    let mut w = sb.spawn(&[
        "worker",
        "--store",
        &store,
        "--exit-when-idle",
        "--idle-window-ms",
        "7200000",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let kept = w.still_running();
    drop(w);
    assert!(kept, "a timer within --idle-window-ms keeps the worker up");
    // A suspended run does not keep it, whatever its timer.
    sb.cairn(&["suspend", &napping, "--store", &store])
        .expect_code(0);
    sb.cairn(&[
        "worker",
        "--store",
        &store,
        "--exit-when-idle",
        "--idle-window-ms",
        "7200000",
    ])
    .expect_code(0);
    let _ = wait_for_status(&sb, &store, &napping, "suspended");
}

// ----- GraphQL over HTTP and `serve` start-up ---------------------------------------------------

/// A `cairn serve --insecure-no-auth` on `127.0.0.1:0`; killed when dropped.
struct Serve {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Serve {
    fn start(sb: &Sandbox, store: &str) -> Serve {
        let mut child = Command::new(bin())
            .args([
                "serve",
                "--insecure-no-auth",
                "--listen",
                "127.0.0.1:0",
                "--store",
                store,
            ])
            .current_dir(sb.path())
            .env_remove("CAIRN_STORE")
            .env_remove("CAIRN_CONFIG")
            .env_remove("CAIRN_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cairn serve starts");
        let (tx, rx) = mpsc::channel();
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        break rest.trim().to_string();
                    }
                }
                Err(_) => panic!("cairn serve printed no address"),
            }
        };
        Serve {
            child,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("a JSON answer")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn code_of(answer: &Value) -> Option<&str> {
    answer["errors"][0]["extensions"]["code"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_refuses_careless_input() {
    let sb = Sandbox::new();
    let store = sb.store();
    let listen = sb.write("listen.yaml", LISTEN);
    let id = start(&sb, &store, &listen, "{}");
    let server = Serve::start(&sb, &store);
    const SIGNAL: &str =
        "mutation($id: String!, $e: JSON!) { signalRun(id: $id, event: $e) { status } }";
    let big = json!({
        "specversion": "1.0", "id": "big", "source": "t", "type": "com.example.ping",
        "data": "x".repeat(300 * 1024),
    });
    for (event, says) in [
        (json!({}), "specversion"),
        (
            json!({"specversion": "1.0", "id": "1", "source": "t"}),
            "`type`",
        ),
        (big, "limit"),
    ] {
        let a = server.gql(SIGNAL, json!({ "id": id, "e": event })).await;
        assert_eq!(code_of(&a), Some("BAD_USER_INPUT"), "{a}");
        let msg = a["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{msg}");
    }
    let state = server
        .gql(
            "query($id: String!) { run(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(state["data"]["run"]["status"], json!("WAITING"), "{state}");

    // An input over the limit is refused, and no run is recorded.
    let source = SMALL_OUTPUT.to_string();
    let a = server
        .gql(
            "mutation($s: String!, $i: JSON) { startRun(source: $s, input: $i) { run { id } } }",
            json!({ "s": source, "i": { "payload": "x".repeat(1024 * 1024 + 10) } }),
        )
        .await;
    assert_eq!(code_of(&a), Some("BAD_USER_INPUT"), "{a}");
    let msg = a["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("limit of 1048576 bytes"), "{msg}");
    drop(server);
    let runs = sb.cairn(&["runs", "--json", "--store", &store]);
    assert_eq!(
        runs.json_lines().map(|l| l.len()),
        Some(1),
        "{}",
        runs.describe()
    );
}

#[test]
fn serve_says_listening_only_once_its_store_is_open() {
    let sb = Sandbox::new();
    // A store that cannot be opened: its directory would be a regular file.
    sb.write("file", "not a directory");
    let store = format!("sqlite://{}/file/cairn.db", sb.path().display());
    let out = sb.cairn(&[
        "serve",
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
    ]);
    out.expect_code(4);
    assert!(
        !out.stderr.contains("listening"),
        "cairn serve said it was listening before its store failed: {}",
        out.describe()
    );
}
