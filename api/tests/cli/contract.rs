//! The CLI contract: exit statuses (0 completed, 1 faulted, 2 bad usage or invalid definition,
//! 3 cancelled, 4 store or runtime failure), messages that say what is wrong and where, and
//! never a panic. Also the durable path: `start`, `worker`, `status`, `runs`, `history`,
//! `signal`, `cancel` on one SQLite store.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{json_contains, json_eq, Outcome, Sandbox, TIMEOUT};

const HELLO: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: hello
  version: '0.1.0'
do:
  - greet:
      set:
        greeting: ${ "hello " + .name }
"#;

/// `HELLO` plus a short durable timer, so that only a worker can finish the run.
const PAUSE: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: pause
  version: '0.1.0'
do:
  - greet:
      set:
        greeting: ${ "hello " + .name }
  - pause:
      wait:
        milliseconds: 200
"#;

const LISTEN: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: wait-for-ping
  version: '0.1.0'
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

/// Does `text` locate a problem on line `n`, as `line N` or as a `N:COL:` prefix?
fn names_line(text: &str, n: usize) -> bool {
    let t = text.to_lowercase();
    t.contains(&format!("line {n}"))
        || t.contains(&format!(" {n}:"))
        || t.contains(&format!("\n{n}:"))
}

fn status_json(sb: &Sandbox, store: &str, run: &str) -> Value {
    let out = sb.cairn(&["status", run, "--json", "--store", store]);
    out.expect_code(0);
    out.json()
        .unwrap_or_else(|| panic!("status --json is not JSON: {}", out.describe()))
}

/// `cairn start FILE` on `store`; returns the run id printed on stdout.
fn start(sb: &Sandbox, store: &str, file: &str, input: &str) -> String {
    let out = sb.cairn(&["start", file, "--input", input, "--store", store]);
    out.expect_code(0);
    let id = out.stdout.trim().to_string();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "start should print one run id: {}",
        out.describe()
    );
    id
}

/// Polls `cairn status` until the run has `want` status.
fn wait_for_status(sb: &Sandbox, store: &str, run: &str, want: &str) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = status_json(sb, store, run);
        if s["status"] == want {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} did not reach `{want}`: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn worker_until_idle(sb: &Sandbox, store: &str) -> Outcome {
    let out = sb.cairn(&["worker", "--store", store, "--exit-when-idle"]);
    out.expect_code(0);
    out
}

// ----- bad input: exit 2 with a message that says what and where -------------------------------

#[test]
fn malformed_yaml_names_the_line() {
    let sb = Sandbox::new();
    let f = sb.write(
        "bad.yaml",
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: bad\n  version: '0.1.0'\ndo:\n  - a:\n      set:\n        x: [1, 2\n  - b: {\n",
    );
    let out = sb.cairn(&["run", &f.to_string_lossy(), "--store", &sb.store()]);
    out.expect_code(2).expect_message("bad.yaml");
    // The unclosed flow sequence opens on line 9; parsers notice it on line 10.
    assert!(
        names_line(&out.stderr, 9) || names_line(&out.stderr, 10),
        "the message should give the line number: {}",
        out.describe()
    );
}

#[test]
fn unknown_field_is_named() {
    let sb = Sandbox::new();
    let f = sb.write(
        "extra.yaml",
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: extra\n  version: '0.1.0'\ndo:\n  - greet:\n      set:\n        x: 1\n      colour: blue\n",
    );
    let out = sb.cairn(&["run", &f.to_string_lossy(), "--store", &sb.store()]);
    out.expect_code(2).expect_message("colour");
    // Where: the task's pointer, or at least its name.
    out.expect_message("greet");
}

#[test]
fn then_to_a_missing_task_is_rejected() {
    let sb = Sandbox::new();
    let f = sb.write(
        "then.yaml",
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: then\n  version: '0.1.0'\ndo:\n  - first:\n      set:\n        x: 1\n      then: nowhere\n  - second:\n      set:\n        y: 2\n",
    );
    let out = sb.cairn(&["run", &f.to_string_lossy(), "--store", &sb.store()]);
    out.expect_code(2)
        .expect_message("nowhere")
        .expect_message("first");
}

#[test]
fn missing_definition_file() {
    let sb = Sandbox::new();
    let out = sb.cairn(&["run", "no-such-file.yaml", "--store", &sb.store()]);
    out.expect_code(2).expect_message("no-such-file.yaml");
}

#[test]
fn bad_input_json() {
    let sb = Sandbox::new();
    let f = sb.write("hello.yaml", HELLO);
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        "{not json",
        "--store",
        &sb.store(),
    ]);
    out.expect_code(2).expect_message("--input");
}

#[test]
fn input_file_missing() {
    let sb = Sandbox::new();
    let f = sb.write("hello.yaml", HELLO);
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        "@missing-input.json",
        "--store",
        &sb.store(),
    ]);
    out.expect_code(2).expect_message("missing-input.json");
}

#[test]
fn input_from_a_file() {
    let sb = Sandbox::new();
    let f = sb.write("hello.yaml", HELLO);
    let input = sb.write("input.yaml", "name: file\n");
    let at = format!("@{}", input.display());
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        &at,
        "--store",
        &sb.store(),
    ]);
    out.expect_code(0);
    assert!(
        out.json()
            .is_some_and(|v| json_eq(&v, &json!({"greeting": "hello file"}))),
        "{}",
        out.describe()
    );
}

#[test]
fn unknown_store_scheme() {
    let sb = Sandbox::new();
    let f = sb.write("hello.yaml", HELLO);
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        r#"{"name":"x"}"#,
        "--store",
        "foo://x",
    ]);
    out.expect_code(2).expect_message("foo://");
}

#[test]
fn unreachable_postgres_is_a_store_failure_without_the_password() {
    let sb = Sandbox::new();
    let f = sb.write("hello.yaml", HELLO);
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        r#"{"name":"x"}"#,
        "--store",
        "postgres://postgres:hunter2secret@127.0.0.1:1/x",
    ]);
    out.expect_code(4).expect_message("127.0.0.1");
    assert!(
        !out.stderr.contains("hunter2secret") && !out.stdout.contains("hunter2secret"),
        "the password leaked: {}",
        out.describe()
    );
    // The same without a password (the documented form).
    let out = sb.cairn(&["runs", "--store", "postgres://postgres@127.0.0.1:1/x"]);
    out.expect_code(4).expect_message("store");
}

#[test]
fn status_of_an_unknown_run() {
    let sb = Sandbox::new();
    // On a store that does not exist, the store is what is missing (and is not created).
    let out = sb.cairn(&["status", "no-such-run", "--store", &sb.store()]);
    out.expect_code(2).expect_message("no sqlite store");
    // On one that exists, the run.
    sb.cairn(&["worker", "--exit-when-idle", "--store", &sb.store()])
        .expect_code(0);
    let out = sb.cairn(&["status", "no-such-run", "--store", &sb.store()]);
    out.expect_code(2).expect_message("no-such-run");
    // With --json, the error is JSON on stderr, with the code the GraphQL API would give.
    for cmd in ["status", "history"] {
        let out = sb.cairn(&[cmd, "no-such-run", "--json", "--store", &sb.store()]);
        out.expect_code(2);
        let e: Value = serde_json::from_str(out.stderr.trim())
            .unwrap_or_else(|_| panic!("{cmd} --json: stderr is not JSON: {}", out.describe()));
        assert_eq!(e["error"]["code"], "NOT_FOUND", "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no-such-run")),
            "{e}"
        );
    }
    let out = sb.cairn(&["runs", "--json", "--store", "nosuch://x"]);
    out.expect_code(2);
    let e: Value = serde_json::from_str(out.stderr.trim())
        .unwrap_or_else(|_| panic!("runs --json: stderr is not JSON: {}", out.describe()));
    assert_eq!(e["error"]["code"], "BAD_USER_INPUT", "{e}");
}

#[test]
fn unknown_subcommand_is_usage() {
    let sb = Sandbox::new();
    sb.cairn(&["frobnicate"]).expect_code(2);
}

// ----- validate -------------------------------------------------------------------------------

#[test]
fn validate_a_valid_file() {
    let sb = Sandbox::new();
    let f = sb.write("hello.yaml", HELLO);
    sb.cairn(&["validate", &f.to_string_lossy()]).expect_code(0);
    let out = sb.cairn(&["validate", &f.to_string_lossy(), "--json"]);
    out.expect_code(0);
    assert_eq!(
        out.json().map(|v| v["valid"].clone()),
        Some(json!(true)),
        "{}",
        out.describe()
    );
}

#[test]
fn validate_prints_every_problem() {
    let sb = Sandbox::new();
    // Two independent problems: two `then`s to tasks that are not there.
    let f = sb.write(
        "two.yaml",
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: two\n  version: '0.1.0'\ndo:\n  - first:\n      set:\n        x: 1\n      then: nowhere\n  - second:\n      set:\n        y: 2\n      then: elsewhere\n",
    );
    let out = sb.cairn(&["validate", &f.to_string_lossy()]);
    out.expect_code(2)
        .expect_message("nowhere")
        .expect_message("/do/0/first")
        .expect_message("elsewhere")
        .expect_message("/do/1/second");
    let out = sb.cairn(&["validate", &f.to_string_lossy(), "--json"]);
    out.expect_code(2);
    let v = out
        .json()
        .unwrap_or_else(|| panic!("validate --json is not JSON: {}", out.describe()));
    assert_eq!(v["valid"], json!(false), "{}", out.describe());
    let n = v["problems"].as_array().map_or(0, Vec::len);
    assert!(n >= 2, "expected both problems: {}", out.describe());
}

#[test]
fn validate_prints_every_structural_problem() {
    let sb = Sandbox::new();
    // Three problems: an unknown field in each of two tasks, and a `then` to a missing task.
    let f = sb.write(
        "three.yaml",
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: three\n  version: '0.1.0'\ndo:\n  - first:\n      set:\n        x: 1\n      colour: red\n  - second:\n      set:\n        y: 2\n      then: nowhere\n      flavour: blue\n",
    );
    let out = sb.cairn(&["validate", &f.to_string_lossy()]);
    out.expect_code(2)
        .expect_message("/do/0/first/colour")
        .expect_message("/do/1/second/flavour");
}

// ----- runs that end ----------------------------------------------------------------------------

#[test]
fn run_completes_with_output() {
    let sb = Sandbox::new();
    let f = sb.write("hello.yaml", HELLO);
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        r#"{"name":"world"}"#,
        "--store",
        &sb.store(),
    ]);
    out.expect_code(0);
    assert!(
        out.json()
            .is_some_and(|v| json_eq(&v, &json!({"greeting": "hello world"}))),
        "{}",
        out.describe()
    );
}

#[test]
fn faulting_workflow_prints_the_error() {
    let sb = Sandbox::new();
    let f = sb.write(
        "raise.yaml",
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: raise\n  version: '0.1.0'\ndo:\n  - check:\n      raise:\n        error:\n          type: https://example.com/errors/bad\n          status: 422\n          title: Bad\n          detail: ${ \"bad value \\(.v)\" }\n",
    );
    let out = sb.cairn(&[
        "run",
        &f.to_string_lossy(),
        "--input",
        r#"{"v":7}"#,
        "--store",
        &sb.store(),
    ]);
    out.expect_code(1);
    let e = out
        .json()
        .unwrap_or_else(|| panic!("stdout should be the error JSON: {}", out.describe()));
    assert_eq!(e["type"], json!("https://example.com/errors/bad"), "{e}");
    assert!(json_eq(&e["status"], &json!(422)), "{e}");
    assert_eq!(e["instance"], json!("/do/0/check"), "{e}");
    assert_eq!(e["detail"], json!("bad value 7"), "{e}");
}

#[test]
fn start_then_worker_completes_the_run() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write("pause.yaml", PAUSE);
    let id = start(&sb, &store, &f.to_string_lossy(), r#"{"name":"worker"}"#);

    // Before any worker, the run is recorded and not finished (its timer needs a worker).
    let s = status_json(&sb, &store, &id);
    assert!(
        ["pending", "running", "waiting"].contains(&s["status"].as_str().unwrap_or_default()),
        "{s}"
    );

    worker_until_idle(&sb, &store);
    let s = status_json(&sb, &store, &id);
    assert_eq!(s["status"], json!("completed"), "{s}");
    assert!(
        json_eq(&s["output"], &json!({"greeting": "hello worker"})),
        "{s}"
    );
    assert_eq!(s["id"], json!(id), "{s}");

    let out = sb.cairn(&["runs", "--json", "--store", &store]);
    out.expect_code(0);
    let runs = out
        .json_lines()
        .unwrap_or_else(|| panic!("runs --json is not JSON lines: {}", out.describe()));
    let mine = runs
        .iter()
        .find(|r| r["id"] == json!(id))
        .unwrap_or_else(|| panic!("run {id} is not listed: {}", out.describe()));
    assert_eq!(mine["status"], json!("completed"), "{mine}");
    assert_eq!(mine["name"], json!("pause"), "{mine}");

    let out = sb.cairn(&["history", &id, "--json", "--store", &store]);
    out.expect_code(0);
    let events = out
        .json_lines()
        .unwrap_or_else(|| panic!("history --json is not JSON lines: {}", out.describe()));
    assert!(events.len() >= 3, "{}", out.describe());
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| {
            e["sequence"]
                .as_i64()
                .unwrap_or_else(|| panic!("event without a sequence: {e}"))
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequences must increase: {seqs:?}"
    );
    assert!(
        events.iter().all(|e| e["type"].is_string()),
        "{}",
        out.describe()
    );
}

// ----- runs that wait: signal and cancel ------------------------------------------------------

#[test]
fn signal_before_the_worker_delivers_the_event() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write("listen.yaml", LISTEN);
    let id = start(&sb, &store, &f.to_string_lossy(), "{}");
    sb.cairn(&["signal", &id, "--event", PING, "--store", &store])
        .expect_code(0);
    worker_until_idle(&sb, &store);
    let s = status_json(&sb, &store, &id);
    assert_eq!(s["status"], json!("completed"), "{s}");
    assert!(
        json_contains(&s["output"], &json!({"x": 1})),
        "the output should hold the event data: {s}"
    );

    // A completed run takes no more events.
    let out = sb.cairn(&["signal", &id, "--event", PING, "--store", &store]);
    out.expect_code(2).expect_message(&id);
}

#[test]
fn signal_wakes_a_waiting_run() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write("listen.yaml", LISTEN);
    let id = start(&sb, &store, &f.to_string_lossy(), "{}");
    // Without --exit-when-idle: a run that waits for an event lets such a worker exit.
    let worker = sb.spawn(&["worker", "--store", &store]);
    wait_for_status(&sb, &store, &id, "waiting");
    sb.cairn(&["signal", &id, "--event", PING, "--store", &store])
        .expect_code(0);
    let s = wait_for_status(&sb, &store, &id, "completed");
    assert!(
        json_contains(&s["output"], &json!({"x": 1})),
        "the output should hold the event data: {s}"
    );
    drop(worker);
}

#[test]
fn cancel_a_waiting_run() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write("listen.yaml", LISTEN);
    let id = start(&sb, &store, &f.to_string_lossy(), "{}");
    let worker = sb.spawn(&["worker", "--store", &store, "--exit-when-idle"]);
    wait_for_status(&sb, &store, &id, "waiting");
    sb.cairn(&["cancel", &id, "--reason", "test", "--store", &store])
        .expect_code(0);
    let s = status_json(&sb, &store, &id);
    assert_eq!(s["status"], json!("cancelled"), "{s}");
    // Nothing is left unfinished, so the worker goes idle and exits.
    worker.finish(TIMEOUT).expect_code(0);
    // Cancelling again: the run has ended.
    sb.cairn(&["cancel", &id, "--store", &store]).expect_code(2);
}

// ----- `--config FILE`: flag > environment > file > default ------------------------------------

/// `cairn serve` checks `--rate-limit` before it binds or opens the store, so a negative rate
/// shows which layer won without starting a server; a bad store scheme shows the file's store.
#[test]
fn serve_config_precedence_flag_env_file() {
    let sb = Sandbox::new();
    let bad_rate = sb.write(
        "bad-rate.yaml",
        "listen: 127.0.0.1:0\nrate_limit: -1\nstore: 'foo://from-file'\n",
    );
    let good_rate = sb.write(
        "good-rate.yaml",
        "listen: 127.0.0.1:0\nrate_limit: 5\nstore: 'foo://from-file'\n",
    );
    let bad = bad_rate.to_string_lossy();
    let good = good_rate.to_string_lossy();

    // The file alone: its rate applies.
    sb.cairn(&["serve", "--config", &bad])
        .expect_code(2)
        .expect_message("--rate-limit");
    // The same file through CAIRN_CONFIG.
    sb.cairn_env(&["serve"], &[("CAIRN_CONFIG", &bad)])
        .expect_code(2)
        .expect_message("--rate-limit");
    // Environment beats the file: the rate passes, and the file's store is used.
    sb.cairn_env(&["serve", "--config", &bad], &[("CAIRN_RATE_LIMIT", "5")])
        .expect_code(2)
        .expect_message("foo://from-file");
    // The file's rate passes; the file's store is used.
    sb.cairn(&["serve", "--config", &good])
        .expect_code(2)
        .expect_message("foo://from-file");
    // Environment beats the file.
    sb.cairn_env(&["serve", "--config", &good], &[("CAIRN_RATE_LIMIT", "-1")])
        .expect_code(2)
        .expect_message("--rate-limit");
    // A flag beats the environment and the file.
    sb.cairn_env(
        &["serve", "--config", &good, "--rate-limit=-1"],
        &[("CAIRN_RATE_LIMIT", "5")],
    )
    .expect_code(2)
    .expect_message("--rate-limit");
    sb.cairn_env(
        &["serve", "--config", &good, "--store", "bar://from-flag"],
        &[("CAIRN_STORE", "baz://from-env")],
    )
    .expect_code(2)
    .expect_message("bar://from-flag");
    sb.cairn_env(
        &["serve", "--config", &good],
        &[("CAIRN_STORE", "baz://from-env")],
    )
    .expect_code(2)
    .expect_message("baz://from-env");
}

#[test]
fn worker_takes_its_store_from_the_config_file() {
    let sb = Sandbox::new();
    let from_file = sb.path().join("from-file.db");
    let cfg = sb.write(
        "cairn.yaml",
        &format!("store: 'sqlite://{}'\n", from_file.display()),
    );
    let out = sb.cairn(&[
        "worker",
        "--exit-when-idle",
        "--config",
        &cfg.to_string_lossy(),
    ]);
    out.expect_code(0);
    assert!(from_file.exists(), "the file's store: {}", out.describe());
    // A flag beats it.
    let from_flag = sb.store_named("from-flag");
    let out = sb.cairn(&[
        "worker",
        "--exit-when-idle",
        "--config",
        &cfg.to_string_lossy(),
        "--store",
        &from_flag,
    ]);
    out.expect_code(0);
    assert!(
        sb.path().join("from-flag.db").exists(),
        "the flag's store: {}",
        out.describe()
    );
}

#[test]
fn config_file_unknown_key_is_named_with_the_file() {
    let sb = Sandbox::new();
    let cfg = sb.write("cairn.yaml", "listen: 127.0.0.1:0\nno_worker: true\n");
    sb.cairn(&["serve", "--config", &cfg.to_string_lossy()])
        .expect_code(2)
        .expect_message("no_worker")
        .expect_message("cairn.yaml")
        .expect_message("line 2");
}

#[test]
fn config_file_malformed_or_missing() {
    let sb = Sandbox::new();
    let cfg = sb.write("broken.yaml", "listen: 127.0.0.1:0\nstore: [a,\n");
    let out = sb.cairn(&["serve", "--config", &cfg.to_string_lossy()]);
    out.expect_code(2)
        .expect_message("broken.yaml")
        .expect_message("line");
    let cfg = sb.write("typed.yaml", "rate_limit: fast\n");
    sb.cairn(&["worker", "--config", &cfg.to_string_lossy()])
        .expect_code(2)
        .expect_message("typed.yaml")
        .expect_message("line 1");
    sb.cairn(&["serve", "--config", "nowhere.yaml"])
        .expect_code(2)
        .expect_message("nowhere.yaml");
}
