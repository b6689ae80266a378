//! Distribution: worker leases, claims, fencing and work notices, on SQLite and PostgreSQL; and
//! several worker runtimes sharing one store, each call made once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{run_request, summary, TestStore};
use cairn_runtime::store::{AppendRequest, Claim, EventStore, Lease, RunSummary, StoreError};
use cairn_runtime::{RunOutcome, Runtime};
use serde_json::json;

on_both_stores!(
    claims_are_disjoint_and_appends_fenced,
    an_expired_lease_is_taken_over_and_its_holder_fenced_out,
    a_restart_under_the_same_name_takes_the_runs_back_at_once,
    a_timer_is_claimed_when_due_never_before,
    a_run_that_needs_no_worker_is_released_in_the_same_write,
    claims_count_attempts_until_the_run_moves,
    work_notices_announce_runnable_runs,
    workers_share_runs_and_make_each_call_once,
);

/// The run ids of a claim.
fn run_ids(claims: Vec<Claim>) -> Vec<String> {
    claims.into_iter().map(|c| c.run_id).collect()
}

fn now() -> i64 {
    cairn_runtime::engine::now_ms()
}

/// A run summary that needs a worker now (`wake_at == updated_at`).
fn runnable(run: &str, at: i64) -> RunSummary {
    RunSummary {
        wake_at: Some(at),
        updated_at: at,
        ..summary(run, "running", at)
    }
}

/// One event on `run` after `expected`, with `summary` and `lease`.
fn step(run: &str, expected: u64, s: RunSummary, lease: Lease) -> AppendRequest {
    AppendRequest {
        run_summary: Some(s),
        lease,
        ..run_request(run, expected, 1)
    }
}

async fn start_runs(store: &dyn EventStore, n: usize) -> Vec<String> {
    let t = now() - 1_000;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("run-{i:03}");
        store
            .append(vec![step(&id, 0, runnable(&id, t), Lease::External)])
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn claims_are_disjoint_and_appends_fenced(t: TestStore) {
    let s = t.store.clone();
    let ids = start_runs(s.as_ref(), 20).await;
    let a = s.register_worker("a", 60_000).await.unwrap();
    let b = s.register_worker("b", 60_000).await.unwrap();
    assert_ne!(a.lease_id, b.lease_id);
    let (sa, sb) = (s.clone(), t.open_again().await);
    let (la, lb) = (a.clone(), b.clone());
    let ta =
        tokio::spawn(async move { run_ids(sa.claim_runs(&la, now(), 15, None).await.unwrap()) });
    let tb =
        tokio::spawn(async move { run_ids(sb.claim_runs(&lb, now(), 15, None).await.unwrap()) });
    let (ca, cb) = (ta.await.unwrap(), tb.await.unwrap());
    let (set_a, set_b): (HashSet<_>, HashSet<_>) =
        (ca.iter().cloned().collect(), cb.iter().cloned().collect());
    assert!(set_a.is_disjoint(&set_b), "{ca:?} / {cb:?}");
    assert_eq!(
        set_a.len() + set_b.len(),
        20,
        "every runnable run claimed once"
    );
    assert!(ids
        .iter()
        .all(|id| set_a.contains(id) || set_b.contains(id)));
    // Nothing left to claim.
    assert!(run_ids(s.claim_runs(&a, now(), 100, None).await.unwrap()).is_empty());

    let mine = &ca[0];
    let at = now();
    s.append(vec![step(
        mine,
        1,
        runnable(mine, at),
        Lease::Held(a.lease_id.clone()),
    )])
    .await
    .expect("the holder appends");
    let err = s
        .append(vec![step(
            mine,
            2,
            runnable(mine, at),
            Lease::Held(b.lease_id.clone()),
        )])
        .await
        .expect_err("a worker that does not hold the run is fenced out");
    assert!(
        matches!(err, StoreError::LeaseLost { ref stream } if stream == mine),
        "{err}"
    );
    assert_eq!(
        s.load("run", mine, 0).await.unwrap().len(),
        2,
        "nothing written"
    );
    // A fenced group fails alone: the other groups of the same commit go in.
    let theirs = &cb[0];
    let out = s
        .append_groups(vec![
            vec![step(
                mine,
                2,
                runnable(mine, at),
                Lease::Held(b.lease_id.clone()),
            )],
            vec![step(
                theirs,
                1,
                runnable(theirs, at),
                Lease::Held(b.lease_id.clone()),
            )],
        ])
        .await
        .unwrap();
    assert!(
        matches!(out[0], Err(StoreError::LeaseLost { .. })),
        "{:?}",
        out[0]
    );
    assert!(out[1].is_ok(), "{:?}", out[1]);
}

async fn an_expired_lease_is_taken_over_and_its_holder_fenced_out(t: TestStore) {
    let s = t.store.clone();
    let ids = start_runs(s.as_ref(), 1).await;
    let a = s.register_worker("a", 300).await.unwrap();
    assert_eq!(
        run_ids(s.claim_runs(&a, now(), 10, None).await.unwrap()),
        ids
    );
    let b = s.register_worker("b", 60_000).await.unwrap();
    assert!(
        run_ids(s.claim_runs(&b, now(), 10, None).await.unwrap()).is_empty(),
        "a live holder keeps its run"
    );
    assert_eq!(s.release_expired().await.unwrap(), 0, "a is alive");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(s.release_expired().await.unwrap(), 1, "a's lease expired");
    assert_eq!(
        run_ids(s.claim_runs(&b, now(), 10, None).await.unwrap()),
        ids
    );
    // a wakes up: it can neither renew nor extend the run.
    assert!(!s.renew_worker(&a).await.unwrap());
    let err = s
        .append(vec![step(
            &ids[0],
            1,
            runnable(&ids[0], now()),
            Lease::Held(a.lease_id.clone()),
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    s.append(vec![step(
        &ids[0],
        1,
        runnable(&ids[0], now()),
        Lease::Held(b.lease_id.clone()),
    )])
    .await
    .expect("the new holder goes on");
    assert!(s.renew_worker(&b).await.unwrap());
}

async fn a_restart_under_the_same_name_takes_the_runs_back_at_once(t: TestStore) {
    let s = t.store.clone();
    let ids = start_runs(s.as_ref(), 3).await;
    let first = s.register_worker("w1", 60_000).await.unwrap();
    assert_eq!(
        run_ids(s.claim_runs(&first, now(), 10, None).await.unwrap()).len(),
        3
    );
    let second = s.register_worker("w1", 60_000).await.unwrap();
    assert_ne!(first.lease_id, second.lease_id);
    let mut back = run_ids(s.claim_runs(&second, now(), 10, None).await.unwrap());
    back.sort();
    assert_eq!(back, ids, "no wait for the old lease to expire");
    assert!(
        !s.renew_worker(&first).await.unwrap(),
        "the old life is superseded"
    );
    let err = s
        .append(vec![step(
            &ids[0],
            1,
            runnable(&ids[0], now()),
            Lease::Held(first.lease_id.clone()),
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
}

async fn a_timer_is_claimed_when_due_never_before(t: TestStore) {
    let s = t.store.clone();
    let at = now();
    let due = at + 60_000;
    let waiting = RunSummary {
        wake_at: Some(due),
        updated_at: at,
        ..summary("sleeper", "waiting", at)
    };
    s.append(vec![step("sleeper", 0, waiting, Lease::External)])
        .await
        .unwrap();
    let w = s.register_worker("w", 60_000).await.unwrap();
    assert!(run_ids(s.claim_runs(&w, now(), 10, None).await.unwrap()).is_empty());
    assert!(run_ids(s.claim_runs(&w, due - 1, 10, None).await.unwrap()).is_empty());
    assert_eq!(s.next_wake().await.unwrap(), Some(due));
    assert_eq!(
        run_ids(s.claim_runs(&w, due, 10, None).await.unwrap()),
        vec!["sleeper"]
    );
    assert_eq!(
        s.next_wake().await.unwrap(),
        None,
        "held runs are not waited for"
    );
}

async fn a_run_that_needs_no_worker_is_released_in_the_same_write(t: TestStore) {
    let s = t.store.clone();
    let ids = start_runs(s.as_ref(), 1).await;
    let run = &ids[0];
    let w = s.register_worker("w", 60_000).await.unwrap();
    let other = s.register_worker("other", 60_000).await.unwrap();
    assert_eq!(
        run_ids(s.claim_runs(&w, now(), 10, None).await.unwrap()),
        ids
    );
    // It now waits for an event from outside: no worker can move it.
    let idle = RunSummary {
        wake_at: None,
        ..summary(run, "waiting", now())
    };
    s.append(vec![step(run, 1, idle, Lease::Held(w.lease_id.clone()))])
        .await
        .unwrap();
    let far = now() + 86_400_000;
    assert!(run_ids(s.claim_runs(&other, far, 10, None).await.unwrap()).is_empty());
    // The event arrives (appended by someone who holds nothing): any worker may take it.
    s.append(vec![step(run, 2, runnable(run, now()), Lease::External)])
        .await
        .unwrap();
    assert_eq!(
        run_ids(s.claim_runs(&other, now(), 10, None).await.unwrap()),
        ids
    );
    // `w` released it: its fenced append is refused.
    let err = s
        .append(vec![step(
            run,
            3,
            runnable(run, now()),
            Lease::Held(w.lease_id.clone()),
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    // Retiring gives the runs back at once.
    s.retire_worker(&other).await.unwrap();
    assert_eq!(
        run_ids(s.claim_runs(&w, now(), 10, None).await.unwrap()),
        ids
    );
}

/// The poison-run count (`Claim::attempts`): every claim of a run that has not changed since
/// the previous claim counts one more; a crash (a superseded or expired lease) keeps the count,
/// a graceful retire gives its attempt back, and any append to the run starts again at 1.
async fn claims_count_attempts_until_the_run_moves(t: TestStore) {
    let s = t.store.clone();
    let ids = start_runs(s.as_ref(), 1).await;
    let run = &ids[0];
    let attempts = |c: Vec<Claim>| c.into_iter().map(|c| c.attempts).collect::<Vec<_>>();
    let w = s.register_worker("w", 60_000).await.unwrap();
    assert_eq!(
        attempts(s.claim_runs(&w, now(), 10, None).await.unwrap()),
        [1]
    );
    // The worker dies and comes back under its name: its runs are released, the count kept.
    let w = s.register_worker("w", 60_000).await.unwrap();
    assert_eq!(
        attempts(s.claim_runs(&w, now(), 10, None).await.unwrap()),
        [2]
    );
    // Another dies by lease expiry.
    let short = s.register_worker("short", 300).await.unwrap();
    let w = s.register_worker("w", 60_000).await.unwrap();
    assert_eq!(
        attempts(s.claim_runs(&short, now(), 10, None).await.unwrap()),
        [3]
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(s.release_expired().await.unwrap(), 1);
    assert_eq!(
        attempts(s.claim_runs(&w, now(), 10, None).await.unwrap()),
        [4]
    );
    // A graceful shutdown is no crash: its claim's attempt is given back.
    s.retire_worker(&w).await.unwrap();
    let v = s.register_worker("v", 60_000).await.unwrap();
    assert_eq!(
        attempts(s.claim_runs(&v, now(), 10, None).await.unwrap()),
        [4]
    );
    // Progress: the holder records a step (a later `updated_at`); the next claim counts from 1.
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.append(vec![step(
        run,
        1,
        runnable(run, now()),
        Lease::Held(v.lease_id.clone()),
    )])
    .await
    .unwrap();
    let v = s.register_worker("v", 60_000).await.unwrap();
    assert_eq!(
        attempts(s.claim_runs(&v, now(), 10, None).await.unwrap()),
        [1]
    );
    // A holder that gives the run back with nothing to do (a rebuilt row) also resets it.
    let v = s.register_worker("v", 60_000).await.unwrap();
    assert_eq!(
        attempts(s.claim_runs(&v, now(), 10, None).await.unwrap()),
        [2]
    );
    let row = s.get_run(run).await.unwrap().expect("the run's row");
    assert!(s.rebuild_run_summary(&row, 2).await.unwrap());
    let v = s.register_worker("v", 60_000).await.unwrap();
    assert_eq!(
        attempts(s.claim_runs(&v, now(), 10, None).await.unwrap()),
        [1]
    );
}

async fn work_notices_announce_runnable_runs(t: TestStore) {
    let s = t.store.clone();
    let (mut rx, cross_process) = s.work_notices().expect("both stores announce work");
    assert_eq!(cross_process, t.kind == "postgres");
    if cross_process {
        // The listener announces itself with `*` once it listens.
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the listener starts")
            .unwrap();
        assert_eq!(first, "*");
    }
    // For PostgreSQL, the append comes from another connection pool, as from another process.
    let writer = if cross_process {
        t.open_again().await
    } else {
        s.clone()
    };
    writer
        .append(vec![step(
            "ping",
            0,
            runnable("ping", now()),
            Lease::External,
        )])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.recv().await {
                Ok(n) if n == "ping" => return n,
                Ok(_) => continue,
                Err(e) => panic!("notices closed: {e}"),
            }
        }
    })
    .await
    .expect("a notice within 10 s");
    assert_eq!(got, "ping");
}

/// Three worker runtimes on one store (each with its own connections, as separate processes
/// would be) and a client that starts runs: every run completes, and every call is made exactly
/// once across the workers (no two workers execute the same pending call).
async fn workers_share_runs_and_make_each_call_once(t: TestStore) {
    const RUNS: usize = 30;
    let calls: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..3 {
        let store = t.open_again().await;
        let calls = calls.clone();
        let name = format!("worker-{w}");
        let rt = Runtime::builder()
            .store(store)
            .worker_name(name.clone())
            .function("step", move |c: cairn_runtime::FunctionCall| {
                let (calls, name) = (calls.clone(), name.clone());
                async move {
                    calls
                        .lock()
                        .unwrap()
                        .entry(c.ctx.idempotency_key.clone())
                        .or_default()
                        .push(name);
                    // Long enough for a racing worker to try the same call.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(json!({ "n": c.arguments["n"].as_i64().unwrap_or(0) + 1 }))
                }
            })
            .build()
            .await
            .unwrap();
        workers.push(rt);
    }
    let client = Runtime::builder()
        .store(t.open_again().await)
        .workers(false)
        .build()
        .await
        .unwrap();
    let def = cairn_core::dsl::load_str(
        r#"
document: { dsl: '1.0.3', namespace: test, name: shared, version: '1.0.0' }
do:
  - a: { call: step, with: { n: '${ .n }' } }
  - b: { call: step, with: { n: '${ .n }' } }
  - c: { call: step, with: { n: '${ .n }' } }
"#,
        cairn_core::dsl::SourceFormat::Yaml,
    )
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..RUNS {
        ids.push(
            client
                .start_run(def.clone(), json!({ "n": i }))
                .await
                .unwrap(),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let Ok(out) = tokio::time::timeout(Duration::from_secs(120), client.wait(id)).await else {
            let row = t.store.get_run(id).await.unwrap();
            let kinds: Vec<String> = t
                .store
                .load("run", id, 0)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_type)
                .collect();
            panic!("run {id} did not finish: {row:?} after {kinds:?}");
        };
        let out = out.unwrap();
        assert_eq!(
            out,
            RunOutcome::Completed(json!({ "n": i + 3 })),
            "run {id}"
        );
    }
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), RUNS * 3, "one key per call");
    let twice: Vec<_> = calls.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "calls made more than once: {twice:?}");
    for rt in workers {
        rt.shutdown().await;
    }
}
