//! Compensation (docs/compensation.md) through the `cairn` binary: a run that faults without a
//! handler compensates, `cairn cancel --compensate` compensates a waiting run, a compensation
//! that fails ends the run `compensation_failed`, and `cairn validate` names a bad reference.
//! The calls go to the loopback sink, which records them in arrival order.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Outcome, Sandbox, TIMEOUT};
use crate::sink::{Sink, Threads};

/// Reserve (step 1) and charge (step 2), undone by steps 101 and 102; then `then`.
fn saga(port: u16, refund_step: &str, then: &str) -> String {
    let sink = format!("http://127.0.0.1:{port}/sink");
    format!(
        r#"document: {{dsl: '1.0.3', namespace: test, name: saga, version: '1.0.0'}}
use:
  functions:
    release:
      call: http
      with: {{method: post, endpoint: '{sink}', body: {{run: 1, step: 101, undo: '${{ .output.value }}'}}}}
    refund:
      call: http
      with: {{method: post, endpoint: '{sink}', body: {{run: 1, {refund_step} undo: '${{ .output.value }}'}}}}
do:
  - reserve:
      call: http
      with: {{method: post, endpoint: '{sink}', body: {{run: 1, step: 1}}}}
      metadata: {{cairn.compensate: release}}
  - charge:
      call: http
      with: {{method: post, endpoint: '{sink}', body: {{run: 1, step: 2}}}}
      metadata: {{cairn.compensate: refund}}
{then}"#
    )
}

const FAIL: &str = "  - ship:\n      raise:\n        error: {type: 'https://example.com/errors/no-courier', status: 503, title: No courier}\n";
const WAIT: &str = "  - await:\n      listen:\n        to:\n          one:\n            with: {type: com.example.shipped}\n";

/// The steps the sink applied, in order, with the body each got.
fn applied(sink: &Sink) -> Vec<(i64, Value)> {
    let log = sink.take_log();
    log.deliveries
        .iter()
        .filter(|d| d.applied)
        .map(|d| (d.body["step"].as_i64().unwrap_or(-1), d.body.clone()))
        .collect()
}

fn status(sb: &Sandbox, store: &str, run: &str) -> Value {
    let o = sb.cairn(&["status", run, "--json", "--store", store]);
    o.expect_code(0);
    o.json().expect("status --json")
}

fn wait_for(sb: &Sandbox, store: &str, run: &str, want: &str) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = status(sb, store, run);
        if s["status"] == want {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never got `{want}`: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_run_that_faults_compensates_its_completed_tasks_in_reverse() {
    let sb = Sandbox::new();
    let store = sb.store();
    let sink = Sink::start(100, Threads::Current);
    let f = sb.write("saga.yaml", &saga(sink.port, "step: 102,", FAIL));
    let o = sb.cairn(&["run", &f.to_string_lossy(), "--store", &store]);
    // Exit 1 as for any fault, the error on stdout, and what became of it on stderr.
    o.expect_code(1).expect_message("compensated");
    assert!(o.stdout.contains("no-courier"), "{}", o.describe());
    let steps: Vec<i64> = applied(&sink).iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, vec![1, 2, 102, 101]);

    let run = o
        .stderr
        .split_whitespace()
        .skip_while(|w| *w != "run")
        .nth(1)
        .expect("the run id on stderr")
        .to_string();
    let s = status(&sb, &store, &run);
    assert_eq!(s["status"], "compensated", "{s}");
    assert_eq!(s["error"]["title"], "No courier", "{s}");
    let done: Vec<&Value> = s["compensation"]["completed"]
        .as_array()
        .expect("completed compensations")
        .iter()
        .map(|c| &c["position"])
        .collect();
    assert_eq!(done, vec!["/do/1/charge", "/do/0/reserve"], "{s}");
    // The runs index says so too.
    let o = sb.cairn(&[
        "runs",
        "--status",
        "compensated",
        "--store",
        &store,
        "--json",
    ]);
    o.expect_code(0);
    assert!(o.stdout.contains(&run), "{}", o.describe());
    let text = sb.cairn(&["status", &run, "--store", &store]);
    text.expect_code(0);
    assert!(
        text.stdout
            .contains("compensation after the fault above: 2 completed, 0 failed"),
        "{}",
        text.describe()
    );
}

#[test]
fn cancel_with_compensate_undoes_a_waiting_run_and_a_failed_compensation_is_reported() {
    let sb = Sandbox::new();
    let store = sb.store();
    let sink = Sink::start(100, Threads::Current);
    // The refund has no `step`: the sink refuses it (400), so that compensation faults.
    let f = sb.write("saga.yaml", &saga(sink.port, "", WAIT));
    let o = sb.cairn(&["start", &f.to_string_lossy(), "--store", &store]);
    o.expect_code(0);
    let run = o.stdout.trim().to_string();
    // A run that waits for an event lets an `--exit-when-idle` worker exit.
    let worker = sb.spawn(&["worker", "--store", &store, "--exit-when-idle"]);
    wait_for(&sb, &store, &run, "waiting");
    worker.finish(TIMEOUT).expect_code(0);

    let o = sb.cairn(&[
        "cancel",
        &run,
        "--compensate",
        "--reason",
        "customer left",
        "--store",
        &store,
    ]);
    o.expect_code(0).expect_message("compensations");
    // The compensations need a worker.
    let out: Outcome = sb.cairn(&["worker", "--store", &store, "--exit-when-idle"]);
    out.expect_code(0);
    let s = wait_for(&sb, &store, &run, "compensation_failed");
    assert_eq!(s["compensation"]["reason"], "customer left", "{s}");
    let failed = s["compensation"]["failed"]
        .as_array()
        .expect("failed")
        .clone();
    assert_eq!(failed.len(), 1, "{s}");
    assert_eq!(failed[0]["compensation"], "refund", "{s}");
    assert_eq!(failed[0]["position"], "/do/1/charge", "{s}");
    // The release still ran, with the reservation's output.
    let applied = applied(&sink);
    let steps: Vec<i64> = applied.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, vec![1, 2, 101], "{applied:?}");
    assert_eq!(applied[2].1["undo"], 101, "{applied:?}");
    let text = sb.cairn(&["status", &run, "--store", &store]);
    assert!(
        text.stdout
            .contains("compensation on cancel (customer left)")
            && text.stdout.contains("failed refund for /do/1/charge"),
        "{}",
        text.describe()
    );
    // It has ended: cancelling again is refused.
    sb.cairn(&["cancel", &run, "--compensate", "--store", &store])
        .expect_code(2);
}

#[test]
fn a_plain_cancel_and_a_cancel_with_nothing_to_undo_only_cancel() {
    let sb = Sandbox::new();
    let store = sb.store();
    let f = sb.write(
        "wait.yaml",
        &format!(
            "document: {{dsl: '1.0.3', namespace: test, name: w, version: '1.0.0'}}\ndo:\n{WAIT}"
        ),
    );
    for flags in [&[][..], &["--compensate"][..]] {
        let o = sb.cairn(&["start", &f.to_string_lossy(), "--store", &store]);
        let run = o.stdout.trim().to_string();
        let mut args = vec!["cancel", run.as_str(), "--store", &store];
        args.extend_from_slice(flags);
        sb.cairn(&args).expect_code(0);
        let s = status(&sb, &store, &run);
        assert_eq!(s["status"], "cancelled", "{flags:?}: {s}");
        assert_eq!(s["compensation"], Value::Null, "{s}");
    }
}

#[test]
fn validate_names_a_compensation_that_is_not_there() {
    let sb = Sandbox::new();
    let text = saga(1, "step: 102,", FAIL)
        .replace("cairn.compensate: refund}", "cairn.compensate: refnd}");
    let f = sb.write("bad.yaml", &text);
    let o = sb.cairn(&["validate", &f.to_string_lossy(), "--json"]);
    o.expect_code(2);
    let problems = o.stdout.clone() + &o.stderr;
    assert!(
        problems.contains("/do/1/charge/metadata/cairn.compensate")
            && problems.contains("unknown compensation `refnd`"),
        "{}",
        o.describe()
    );
}

#[test]
fn the_order_saga_example_is_valid() {
    let sb = Sandbox::new();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/order-saga.yaml");
    sb.cairn(&["validate", &example.to_string_lossy()])
        .expect_code(0);
}
