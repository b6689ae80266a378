//! The embedding API end to end, on SQLite and PostgreSQL: functions, awaiting results, signals,
//! cancellation, sub-workflows, retries, and durable timers across a restart of the runtime.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_core::dsl::{load_str, SourceFormat, Workflow};
use cairn_core::{ErrorKind, RunEvent, WorkflowError};
use cairn_runtime::{Error, RunOutcome, Runtime, RuntimeBuilder};
use prometheus::Encoder as _;
use serde_json::{json, Value};

use crate::common::TestStore;

on_both_stores!(
    functions_run_and_results_are_awaited,
    signals_reach_listening_runs_once,
    cancel_stops_a_waiting_run,
    sub_workflows_return_their_output,
    retries_back_off_and_then_succeed,
    timers_survive_a_restart_with_their_due_time,
    errors_name_what_is_wrong,
    a_faulted_run_is_retried_from_the_failed_task,
    suspend_holds_a_run_until_resumed,
    correlation_id_is_recorded_indexed_and_rebuilt,
    a_panicking_function_fails_its_call_not_the_worker,
    shutdown_abandons_a_hung_call_after_its_grace,
);

fn wf(yaml: &str) -> Workflow {
    load_str(yaml, SourceFormat::Yaml).expect("valid test workflow")
}

fn builder(t: &TestStore) -> RuntimeBuilder {
    Runtime::builder()
        .store_url(t.url.clone())
        .poll_interval(Duration::from_millis(50))
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30 s"))
}

async fn functions_run_and_results_are_awaited(t: TestStore) {
    let rt = builder(&t)
        .function("double", |c| async move {
            Ok(json!({ "n": c.arguments["n"].as_i64().unwrap_or(0) * 2 }))
        })
        .build()
        .await
        .unwrap();
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: three, version: '1.0.0' }
do:
  - a: { call: double, with: { n: '${ .n }' } }
  - b: { call: double, with: { n: '${ .n }' } }
  - c: { call: double, with: { n: '${ .n }' } }
"#);
    let (id, outcome) = within("run", rt.run(def, json!({ "n": 3 }))).await.unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "n": 24 })));
    let history = rt.history(&id).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|h| h.sequence).collect();
    assert_eq!(
        seqs,
        (1..=history.len() as u64).collect::<Vec<_>>(),
        "sequences 1..n"
    );
    let keys: Vec<String> = history
        .iter()
        .filter_map(|h| match &h.event {
            RunEvent::ActivityScheduled {
                idempotency_key, ..
            } => Some(idempotency_key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(
        keys.iter().all(|k| k.starts_with(&id)),
        "keys carry the run id: {keys:?}"
    );
    let runs = rt.list_runs(&Default::default()).await.unwrap();
    assert!(runs
        .iter()
        .any(|r| r.run_id == id && r.status == "completed"));
    rt.shutdown().await;
}

async fn signals_reach_listening_runs_once(t: TestStore) {
    let rt = builder(&t).build().await.unwrap();
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: listen, version: '1.0.0' }
do:
  - first:
      listen: { to: { one: { with: { type: com.example.go } } } }
  - second:
      listen: { to: { one: { with: { type: com.example.go } } } }
  - out: { set: { got: '${ .[0].n }' } }
"#);
    let id = rt.start_run(def, json!({})).await.unwrap();
    let ev = |id: &str, n: i64| json!({ "specversion": "1.0", "id": id, "source": "t", "type": "com.example.go", "data": { "n": n } });
    rt.signal(&id, ev("a", 1)).await.unwrap();
    // The same event again (same source and id) is dropped, so it cannot satisfy `second`.
    rt.signal(&id, ev("a", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = rt.state(&id).await.unwrap();
    assert!(
        !s.status.is_terminal(),
        "a duplicate must not complete the second listen"
    );
    rt.signal(&id, ev("b", 2)).await.unwrap();
    let outcome = within("listen run", rt.wait(&id)).await.unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "got": 2 })));
    let received = rt
        .history(&id)
        .await
        .unwrap()
        .iter()
        .filter(|h| matches!(h.event, RunEvent::EventReceived { .. }))
        .count();
    assert_eq!(received, 2, "the duplicate is not even recorded");
    rt.shutdown().await;
}

async fn cancel_stops_a_waiting_run(t: TestStore) {
    let rt = builder(&t).build().await.unwrap();
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: sleepy, version: '1.0.0' }
do:
  - nap: { wait: PT1H }
"#);
    let id = rt.start_run(def, json!({})).await.unwrap();
    rt.cancel(&id, Some("no longer needed".into()))
        .await
        .unwrap();
    assert_eq!(
        within("cancel", rt.wait(&id)).await.unwrap(),
        RunOutcome::Cancelled
    );
    assert!(matches!(
        rt.cancel(&id, None).await,
        Err(Error::RunEnded { .. })
    ));
    assert!(matches!(
        rt.signal(
            &id,
            json!({"specversion": "1.0", "id": "x", "source": "t", "type": "t"})
        )
        .await,
        Err(Error::RunEnded { .. })
    ));
    rt.shutdown().await;
}

async fn sub_workflows_return_their_output(t: TestStore) {
    let rt = builder(&t).build().await.unwrap();
    rt.deploy(wf(r#"
document: { dsl: '1.0.3', namespace: test, name: child, version: '1.2.0' }
do:
  - square: { set: { sq: '${ .n * .n }' } }
"#))
        .await
        .unwrap();
    let parent = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: parent, version: '1.0.0' }
do:
  - sub:
      run:
        workflow: { namespace: test, name: child, version: latest, input: { n: '${ .n }' } }
  - after: { set: { result: '${ .sq + 1 }' } }
"#);
    let (_, outcome) = within("parent", rt.run(parent, json!({ "n": 7 })))
        .await
        .unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "result": 50 })));
    let missing = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: orphan, version: '1.0.0' }
do:
  - sub:
      run:
        workflow: { namespace: test, name: nobody, version: '1.0.0' }
"#);
    let (_, outcome) = within("orphan", rt.run(missing, json!({}))).await.unwrap();
    match outcome {
        RunOutcome::Faulted(e) => {
            assert!(
                e.detail.unwrap_or_default().contains("test/nobody"),
                "names the missing workflow"
            )
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    rt.shutdown().await;
}

async fn retries_back_off_and_then_succeed(t: TestStore) {
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let rt = builder(&t)
        .function("flaky", move |_| {
            let calls = c2.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(WorkflowError::new(ErrorKind::Communication, "busy").with_status(503))
                } else {
                    Ok(json!({ "ok": true }))
                }
            }
        })
        .build()
        .await
        .unwrap();
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: retry, version: '1.0.0' }
do:
  - guarded:
      try:
        - call: { call: flaky }
      catch:
        errors: { with: { status: 503 } }
        retry:
          delay: { milliseconds: 100 }
          backoff: { exponential: {} }
          limit: { attempt: { count: 5 } }
"#);
    let (id, outcome) = within("retry", rt.run(def, json!({}))).await.unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "ok": true })));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let history = rt.history(&id).await.unwrap();
    let delays: Vec<u64> = history
        .iter()
        .filter_map(|h| match &h.event {
            RunEvent::RetryScheduled { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, vec![100, 200]);
    for h in &history {
        if let RunEvent::TimerFired { timer, at } = &h.event {
            let due = history.iter().find_map(|x| match &x.event {
                RunEvent::TimerScheduled {
                    timer: t2, due_at, ..
                } if t2 == timer => Some(*due_at),
                _ => None,
            });
            assert!(*at >= due.unwrap(), "timer {timer} fired early");
        }
    }
    rt.shutdown().await;
}

async fn timers_survive_a_restart_with_their_due_time(t: TestStore) {
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: nap, version: '1.0.0' }
do:
  - nap: { wait: { milliseconds: 1500 } }
  - done: { set: { woke: true } }
"#);
    let first = builder(&t).build().await.unwrap();
    let id = first.start_run(def, json!({})).await.unwrap();
    first.shutdown().await;
    drop(first);
    // A new runtime (as after a restart) resumes the run; the timer keeps its recorded due time.
    let second = builder(&t).build().await.unwrap();
    let outcome = within("restarted run", second.wait(&id)).await.unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "woke": true })));
    let history = second.history(&id).await.unwrap();
    let scheduled: Vec<i64> = history
        .iter()
        .filter_map(|h| match &h.event {
            RunEvent::TimerScheduled { due_at, .. } => Some(*due_at),
            _ => None,
        })
        .collect();
    assert_eq!(
        scheduled.len(),
        1,
        "the timer is scheduled once, not again on restart"
    );
    let fired = history.iter().find_map(|h| match &h.event {
        RunEvent::TimerFired { at, .. } => Some(*at),
        _ => None,
    });
    assert!(
        fired.unwrap() >= scheduled[0],
        "fired at or after its due time"
    );
    second.shutdown().await;
}

async fn errors_name_what_is_wrong(t: TestStore) {
    let rt = builder(&t).workers(false).build().await.unwrap();
    let ping = json!({"specversion": "1.0", "id": "1", "source": "t", "type": "t"});
    match rt.signal("no-such-run", ping).await {
        Err(Error::RunNotFound { run_id }) => assert_eq!(run_id, "no-such-run"),
        other => panic!("expected not found, got {other:?}"),
    }
    match rt.signal("no-such-run", Value::String("x".into())).await {
        Err(e @ Error::Input(_)) => assert!(e.to_string().contains("CloudEvent")),
        other => panic!("expected invalid, got {other:?}"),
    }
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: dup, version: '1.0.0' }
do:
  - a: { wait: PT1H }
"#);
    let opts = cairn_runtime::StartOptions {
        run_id: Some("fixed-id".into()),
        ..Default::default()
    };
    rt.start_run_with(def.clone(), json!({}), opts.clone())
        .await
        .unwrap();
    assert!(matches!(
        rt.start_run_with(def, json!({}), opts).await,
        Err(Error::RunExists { .. })
    ));
    // An idempotency key names one run: a second start answers it, not created; the same key
    // for another definition is refused; a bad key is refused before anything is recorded.
    let keyed = |key: &str| cairn_runtime::StartOptions {
        idempotency_key: Some(key.into()),
        ..Default::default()
    };
    let other = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: other, version: '1.0.0' }
do:
  - a: { wait: PT1H }
"#);
    let first = rt
        .start_inline(other.clone(), json!({}), keyed("order-1"))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.run_id, cairn_runtime::run_id_for_key("order-1"));
    let again = rt
        .start_inline(other, json!({}), keyed("order-1"))
        .await
        .unwrap();
    assert_eq!(
        again,
        cairn_runtime::Started {
            run_id: first.run_id.clone(),
            created: false
        }
    );
    let dup = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: dup, version: '1.0.0' }
do:
  - a: { wait: PT1H }
"#);
    assert!(matches!(
        rt.start_inline(dup.clone(), json!({}), keyed("order-1"))
            .await,
        Err(Error::IdempotencyKeyReused { .. })
    ));
    assert!(matches!(
        rt.start_inline(dup, json!({}), keyed("")).await,
        Err(Error::IdempotencyKey { length: 0 })
    ));
    assert!(matches!(
        rt.start_deployed("test", "nowhere", "latest", json!({}), keyed("k"))
            .await,
        Err(Error::DefinitionNotDeployed { .. })
    ));
    rt.shutdown().await;
}

async fn a_faulted_run_is_retried_from_the_failed_task(t: TestStore) {
    let calls = Arc::new(AtomicU32::new(0));
    let (c1, c2) = (calls.clone(), Arc::new(AtomicU32::new(0)));
    let c2b = c2.clone();
    let rt = builder(&t)
        .function("prepare", move |_| {
            let c = c1.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(json!({ "prepared": true }))
            }
        })
        .function("ship", move |_| {
            let c = c2b.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(WorkflowError::new(ErrorKind::Communication, "carrier down")
                        .with_status(503))
                } else {
                    Ok(json!({ "shipped": true }))
                }
            }
        })
        .build()
        .await
        .unwrap();
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: ship, version: '1.0.0' }
do:
  - prepare: { call: prepare }
  - both:
      fork:
        branches:
          - ship: { call: ship }
          - note: { set: { noted: true } }
"#);
    let (id, outcome) = within("first attempt", rt.run(def, json!({})))
        .await
        .unwrap();
    assert!(matches!(outcome, RunOutcome::Faulted(_)), "{outcome:?}");
    assert!(matches!(
        rt.resume(&id).await,
        Err(Error::WrongStatus { ref status, .. }) if status == "faulted"
    ));
    rt.retry(&id).await.unwrap();
    let outcome = within("retried run", rt.wait(&id)).await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Completed(json!([{ "shipped": true }, { "noted": true }]))
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the task that completed is not run again"
    );
    assert_eq!(c2.load(Ordering::SeqCst), 2);
    let keys: Vec<String> = rt
        .history(&id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|h| match h.event {
            RunEvent::ActivityScheduled {
                idempotency_key, ..
            } => Some(idempotency_key),
            _ => None,
        })
        .collect();
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "a retried call gets a new idempotency key"
    );
    assert!(
        matches!(rt.retry(&id).await, Err(Error::WrongStatus { ref status, .. }) if status == "completed"),
        "a completed run is not retried"
    );
    rt.shutdown().await;
}

async fn suspend_holds_a_run_until_resumed(t: TestStore) {
    let rt = builder(&t).build().await.unwrap();
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: hold, version: '1.0.0' }
do:
  - nap: { wait: { milliseconds: 300 } }
  - done: { set: { done: true } }
"#);
    let id = rt.start_run(def, json!({})).await.unwrap();
    rt.suspend(&id).await.unwrap();
    assert!(matches!(
        rt.suspend(&id).await,
        Err(Error::AlreadySuspended { .. })
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let s = rt.state(&id).await.unwrap();
    assert_eq!(
        s.status_label(),
        "suspended",
        "the timer came due but the run stays suspended"
    );
    rt.resume(&id).await.unwrap();
    let outcome = within("resumed run", rt.wait(&id)).await.unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "done": true })));
    rt.shutdown().await;
}

/// A run started with a correlation id: in `RunStarted`, in the runs index (inline and after a
/// rebuild), findable by it; runs started are counted by definition; a bad id is refused.
async fn correlation_id_is_recorded_indexed_and_rebuilt(t: TestStore) {
    let rt = builder(&t).workers(false).build().await.unwrap();
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: correlated, version: '1.0.0' }
do:
  - a: { wait: PT1H }
"#);
    let start = |c: Option<&str>| cairn_runtime::StartOptions {
        correlation_id: c.map(str::to_string),
        ..Default::default()
    };
    let a = rt
        .start_run_with(def.clone(), json!({}), start(Some("order-1")))
        .await
        .unwrap();
    let b = rt
        .start_run_with(def.clone(), json!({}), start(Some("order-2")))
        .await
        .unwrap();
    let none = rt
        .start_run_with(def.clone(), json!({}), start(None))
        .await
        .unwrap();
    let history = rt.history(&a).await.unwrap();
    assert!(
        matches!(&history[0].event, RunEvent::RunStarted { correlation_id: Some(c), .. } if c == "order-1"),
        "{:?}",
        history[0].event
    );
    let store = rt.store();
    let by = |c: &str| {
        let mut q = cairn_runtime::store::RunQuery::default();
        q.correlation_id = Some(c.to_string());
        q.limit = 100;
        q
    };
    let ids = |rows: Vec<cairn_runtime::store::RunSummary>| {
        rows.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.query_runs(&by("order-1")).await.unwrap()),
        [a.as_str()]
    );
    assert_eq!(
        ids(store.query_runs(&by("order-2")).await.unwrap()),
        [b.as_str()]
    );
    let plain = store.get_run(&none).await.unwrap().expect("indexed");
    assert_eq!(plain.correlation_id, None, "{}", t.kind);
    // A rebuilt index carries the id too.
    cairn_runtime::projections::rebuild_runs(store.as_ref())
        .await
        .unwrap();
    assert_eq!(ids(store.query_runs(&by("order-1")).await.unwrap()), [a]);
    // Three starts of one definition, counted by its namespace and name.
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&rt.metrics().registry().gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("cairn_runs_started_total{name=\"correlated\",namespace=\"test\"} 3"),
        "{text}"
    );
    // Empty, too long, or with a control character: refused before anything is recorded.
    for bad in [String::new(), "x".repeat(257), "a\tb".to_string()] {
        assert!(
            matches!(
                rt.start_run_with(def.clone(), json!({}), start(Some(&bad)))
                    .await,
                Err(Error::CorrelationId { .. })
            ),
            "{bad:?}"
        );
    }
    let mut all = cairn_runtime::store::RunQuery::default();
    all.limit = 100;
    assert_eq!(store.query_runs(&all).await.unwrap().len(), 3);
    rt.shutdown().await;
}

/// A registered function that panics fails its call with a runtime error (which the workflow's
/// `try` may catch like any other); the worker goes on with other runs.
async fn a_panicking_function_fails_its_call_not_the_worker(t: TestStore) {
    let rt = builder(&t)
        .function("boom", |_c| async move {
            if std::hint::black_box(true) {
                panic!("the function's own bug");
            }
            Ok(json!(null))
        })
        .function("fine", |_c| async move { Ok(json!({ "ok": true })) })
        .build()
        .await
        .unwrap();
    let boom = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: boom, version: '1.0.0' }
do:
  - a: { call: boom }
"#);
    let (_, outcome) = within("boom", rt.run(boom, json!({}))).await.unwrap();
    let RunOutcome::Faulted(e) = outcome else {
        panic!("expected a fault, got {outcome:?}");
    };
    assert!(e.is(ErrorKind::Runtime), "{e}");
    assert_eq!(e.title.as_deref(), Some("Call panicked"), "{e}");
    assert!(
        e.detail
            .as_deref()
            .unwrap_or_default()
            .contains("the function's own bug"),
        "{e}"
    );
    let caught = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: caught, version: '1.0.0' }
do:
  - guarded:
      try:
        - a: { call: boom }
      catch:
        errors: { with: { type: https://serverlessworkflow.io/spec/1.0.0/errors/runtime } }
        do:
          - after: { call: fine }
"#);
    let (_, outcome) = within("caught", rt.run(caught, json!({}))).await.unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "ok": true })));
    rt.shutdown().await;
}

/// A call that never returns does not hold a shutdown up past the call grace; the run stays
/// recorded with the call pending, and the next worker makes the call again.
async fn shutdown_abandons_a_hung_call_after_its_grace(t: TestStore) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let rt = builder(&t)
        .call_grace(Duration::from_millis(200))
        .function("hang", move |_c| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok(json!(null))
            }
        })
        .build()
        .await
        .unwrap();
    let def = wf(r#"
document: { dsl: '1.0.3', namespace: test, name: hang, version: '1.0.0' }
do:
  - a: { call: hang }
"#);
    let id = rt.start_run(def, json!({})).await.unwrap();
    within("the call", async {
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    within("shutdown", rt.shutdown()).await;
    let again = calls.clone();
    let rt = builder(&t)
        .function("hang", move |_c| {
            let again = again.clone();
            async move {
                again.fetch_add(1, Ordering::SeqCst);
                Ok(json!({ "done": true }))
            }
        })
        .build()
        .await
        .unwrap();
    let outcome = within("the run", rt.wait(&id)).await.unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "done": true })));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "made again after the abandon"
    );
    rt.shutdown().await;
}
