//! The crash test: runs that call a loopback HTTP sink and wait on durable timers, while the
//! `cairn worker` executing them is killed with SIGKILL at random points and restarted.
//!
//! Procedure, per store (SQLite, PostgreSQL):
//! 1. a sink on `127.0.0.1:0` records every request (time, `Idempotency-Key`, body), applies each
//!    key once and answers `{echo, value}`; the first attempt of a call marked `flaky` gets a 503,
//!    whatever the delivery, so the number of attempts does not depend on where the kills land;
//! 2. runs are started in batches while a worker lives a random 50–600 ms and is killed, again
//!    and again;
//! 3. `cairn worker --exit-when-idle` finishes what is left;
//! 4. every run must have completed with the output computed here, every call must have reached
//!    the sink under exactly one key, no delivery may arrive after the call's result was recorded,
//!    and each history must be well formed (sequences, one result per call, timers fired once
//!    and never early).
//!
//! `crash::compensation` kills a worker while a run's compensation call is in flight.
//!
//! Environment: `CAIRN_CRASH_SEED` replays the kill schedule of a seed (printed on every run);
//! `CAIRN_SOAK=1` runs many more runs and kills; `CAIRN_TEST_POSTGRES_URL` is the PostgreSQL
//! server (default `postgres://postgres@127.0.0.1:5432/test`), skipped loudly when unreachable
//! except under `CI=true`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection as _;

use crate::common::{
    clip_bytes, int, json_eq, now_ms, postgres_url, seed_from_env, skip, soak, with_database,
    Outcome, Rng, Sandbox,
};
use crate::sink::{Delivery, Sink, SinkLog, Threads};

mod compensation;

/// Time allowed to the last worker to finish every run.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn sqlite() {
    let sandbox = Sandbox::new();
    let url = sandbox.store_named("crash");
    crash("sqlite", &sandbox, &url);
}

#[test]
fn postgres() {
    let sandbox = Sandbox::new();
    let Some(db) = PgDatabase::create() else {
        return;
    };
    crash("postgres", &sandbox, &db.url);
}

// ----- the plan -------------------------------------------------------------------------------

struct Plan {
    runs: u64,
    kills: usize,
    batches: usize,
    seed: u64,
}

impl Plan {
    fn from_env() -> Plan {
        // One seed for the whole test binary, so both stores print the same one.
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| seed_from_env("CAIRN_CRASH_SEED"));
        if soak() {
            Plan {
                runs: 48,
                kills: 40,
                batches: 8,
                seed,
            }
        } else {
            Plan {
                runs: 12,
                kills: 12,
                batches: 4,
                seed,
            }
        }
    }

    /// The runs (their `n`) started before worker `k`.
    fn batch_before(&self, k: usize) -> Vec<u64> {
        let every = (self.kills / self.batches).max(1);
        if k % every != 0 || k / every >= self.batches {
            return Vec::new();
        }
        let b = (k / every) as u64;
        (1..=self.runs)
            .filter(|n| (n - 1) % self.batches as u64 == b)
            .collect()
    }
}

// ----- the workflow and what it must produce --------------------------------------------------

/// Steps 1, 11.., 3 and 4 are calls; the sink answers `value = run * 100 + step`, which the
/// workflow accumulates in `acc`. Waits of 100–500 ms sit between the calls.
fn workflow(port: u16) -> String {
    let sink = format!("http://127.0.0.1:{port}/sink");
    format!(
        r#"document:
  dsl: '1.0.3'
  namespace: crash
  name: crash-test
  version: '0.1.0'
do:
  - init:
      set:
        n: ${{ .n }}
        items: ${{ .items }}
        acc: []
  - step1:
      call: http
      with:
        method: post
        endpoint: {sink}
        body:
          run: ${{ .n }}
          step: 1
      output:
        as: '${{ $input + {{acc: ($input.acc + [.value])}} }}'
  - pause1:
      wait:
        milliseconds: 400
  - mark:
      set:
        n: ${{ .n }}
        items: ${{ .items }}
        acc: ${{ .acc }}
        marked: true
  - each:
      for:
        each: item
        in: .items
      do:
        - perItem:
            call: http
            with:
              method: post
              endpoint: {sink}
              body:
                run: ${{ .n }}
                step: ${{ 10 + $item }}
            output:
              as: '${{ $input + {{acc: ($input.acc + [.value])}} }}'
        - itemPause:
            wait:
              milliseconds: 100
  - pause2:
      wait:
        milliseconds: 250
  - guarded:
      try:
        - flakyCall:
            call: http
            with:
              method: post
              endpoint: {sink}
              body:
                run: ${{ .n }}
                step: 3
                flaky: true
            output:
              as: '${{ $input + {{acc: ($input.acc + [.value])}} }}'
      catch:
        errors:
          with:
            status: 503
        retry:
          delay:
            milliseconds: 150
          limit:
            attempt:
              count: 3
  - pause3:
      wait:
        milliseconds: 500
  - step4:
      call: http
      with:
        method: post
        endpoint: {sink}
        body:
          run: ${{ .n }}
          step: 4
      output:
        as: '${{ $input + {{acc: ($input.acc + [.value])}} }}'
  - done:
      set:
        n: ${{ .n }}
        acc: ${{ .acc }}
        marked: ${{ .marked }}
        total: ${{ .acc | add }}
"#
    )
}

fn items(n: u64) -> Vec<u64> {
    (1..=2 + n % 4).collect()
}

fn input(n: u64) -> Value {
    json!({ "n": n, "items": items(n) })
}

/// The steps of run `n` that change the sink, in order.
fn steps(n: u64) -> Vec<u64> {
    let mut s = vec![1];
    s.extend(items(n).iter().map(|i| 10 + i));
    s.extend([3, 4]);
    s
}

fn expected_output(n: u64) -> Value {
    let acc: Vec<u64> = steps(n).iter().map(|s| n * 100 + s).collect();
    let total: u64 = acc.iter().sum();
    json!({ "n": n, "acc": acc, "marked": true, "total": total })
}

/// Calls (idempotency keys) of run `n`: one per step, plus the failed first attempt of step 3.
fn expected_calls(n: u64) -> usize {
    steps(n).len() + 1
}

// ----- PostgreSQL -----------------------------------------------------------------------------

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
        .block_on(f)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let colon = s + 3 + url[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A database `crash_<random>` on the test server, dropped with this value.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// `None` after a loud message when the server cannot be reached (a failure under `CI=true`).
    fn create() -> Option<PgDatabase> {
        let admin = postgres_url();
        let name = format!("crash_{}", uuid::Uuid::new_v4().simple());
        let created = block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await?;
            conn.close().await
        });
        if let Err(e) = created {
            skip(
                "crash test on postgres",
                &format!(
                    "cannot reach {} or create a database there: {e}; set CAIRN_TEST_POSTGRES_URL",
                    redact(&admin)
                ),
            );
            return None;
        }
        let url = with_database(&admin, &name);
        Some(PgDatabase { admin, name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let r = block_on(async {
            let mut conn = sqlx::PgConnection::connect(&self.admin).await?;
            sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await?;
            conn.close().await
        });
        if let Err(e) = r {
            eprintln!("warning: could not drop database {}: {e}", self.name);
        }
    }
}

// ----- the procedure --------------------------------------------------------------------------

fn crash(kind: &str, sandbox: &Sandbox, url: &str) {
    let plan = Plan::from_env();
    // Each store draws its own schedule from the seed.
    let mut rng = Rng(plan.seed
        ^ kind
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) + u64::from(b)));
    println!(
        "crash {kind}: seed {} (CAIRN_CRASH_SEED={} replays the kill schedule), {} runs, {} kills, store {}",
        plan.seed,
        plan.seed,
        plan.runs,
        plan.kills,
        redact(url)
    );
    let began = Instant::now();
    let sink = Sink::start(100, Threads::Current);
    let def = sandbox.write("crash.yaml", &workflow(sink.port));
    let def = def.to_str().expect("a UTF-8 temporary path").to_string();

    // Kill phase: a worker lives a random 50-600 ms, then SIGKILL; new runs arrive in batches.
    let mut runs: BTreeMap<u64, String> = BTreeMap::new();
    let mut workers: Vec<Outcome> = Vec::new();
    let mut lives: Vec<(i64, i64)> = Vec::new(); // (spawned, killed) of each worker, ms
    let mut exited_early = Vec::new();
    for k in 0..plan.kills {
        let spawned = now_ms();
        // The kills are the test's, not the runs': no run is poison however often it is hit.
        let worker = sandbox.spawn(&["worker", "--store", url, "--max-crashes", "1000"]);
        for n in plan.batch_before(k) {
            let inp = input(n).to_string();
            let o = sandbox.cairn(&["start", &def, "--input", &inp, "--store", url]);
            o.expect_code(0);
            let id = o.stdout.trim().to_string();
            assert!(!id.is_empty(), "no run id: {}", o.describe());
            runs.insert(n, id);
        }
        std::thread::sleep(Duration::from_millis(rng.between(50, 600)));
        // `finish` with no time left sends SIGKILL (std's `Child::kill`) and reaps the process.
        let o = worker.finish(Duration::ZERO);
        if !o.timed_out {
            exited_early.push(format!("worker {k}: {}", o.describe()));
        }
        lives.push((spawned, now_ms()));
        workers.push(o);
    }
    let kill_phase = began.elapsed();
    let started = workers
        .iter()
        .filter(|o| o.stderr.contains("worker started"))
        .count();

    // Recovery: one last worker finishes everything.
    let last = sandbox
        .spawn(&[
            "worker",
            "--store",
            url,
            "--exit-when-idle",
            "--max-crashes",
            "1000",
        ])
        .finish(FINISH_TIMEOUT);
    let finish_phase = began.elapsed() - kill_phase;
    assert!(
        !last.timed_out && last.code == Some(0),
        "the last worker did not finish every run within {FINISH_TIMEOUT:?}: {}",
        last.describe()
    );

    // Audit.
    let log = sink.take_log();
    let mut audit = Audit::default();
    for d in &exited_early {
        audit.problem(format!("a worker exited before it was killed: {d}"));
    }
    let mut spanning = 0;
    let mut history_keys: BTreeSet<String> = BTreeSet::new();
    for (&n, id) in &runs {
        let workers_seen = audit.run(sandbox, url, n, id, &log, &mut history_keys);
        if workers_seen > 1 {
            spanning += 1;
        }
    }
    audit.sink(&runs, &log, &history_keys);
    let calls: usize = runs.keys().map(|&n| expected_calls(n)).sum();
    if history_keys.len() != calls {
        audit.problem(format!(
            "the histories hold {} idempotency keys; the workflows make {calls} calls",
            history_keys.len()
        ));
    }
    let distinct_at_sink: BTreeSet<&String> = log
        .deliveries
        .iter()
        .filter_map(|d| d.key.as_ref())
        .collect();
    if distinct_at_sink.len() != calls {
        audit.problem(format!(
            "the sink saw {} distinct idempotency keys; the workflows make {calls} calls",
            distinct_at_sink.len()
        ));
    }
    if spanning == 0 {
        audit.problem(
            "no run was touched by more than one worker: the kills hit no work, the test proved nothing"
                .to_string(),
        );
    }

    println!(
        "crash {kind}: {} runs, {} kills, {calls} calls, {} deliveries, {} re-deliveries deduplicated, \
         lost {}, duplicated {}, wrong {}, late {}",
        runs.len(),
        plan.kills,
        log.deliveries.len(),
        audit.redeliveries,
        audit.lost,
        audit.duplicated,
        audit.wrong,
        audit.late
    );
    println!(
        "crash {kind}: {started} of {} killed workers got past start-up; {spanning} of {} runs \
         spanned more than one worker; kill phase {:.1}s, recovery {:.1}s, total {:.1}s",
        plan.kills,
        runs.len(),
        kill_phase.as_secs_f64(),
        finish_phase.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    if !audit.problems.is_empty() {
        for (n, id, key, recorded, at) in &audit.late_calls {
            println!(
                "{}",
                explain_late(sandbox, url, *n, id, key, *recorded, *at, &log, &lives, &workers)
            );
        }
        let stderr: Vec<String> = workers
            .iter()
            .enumerate()
            .filter(|(_, o)| o.stderr.lines().count() > 1)
            .map(|(k, o)| {
                format!(
                    "--- worker {k} stderr ---\n{}",
                    clip_bytes(&o.stderr, 2000, "\n[...]")
                )
            })
            .collect();
        panic!(
            "crash {kind} (seed {}): {} problems:\n{}\n{}\n--- last worker ---\n{}",
            plan.seed,
            audit.problems.len(),
            audit
                .problems
                .iter()
                .take(40)
                .map(|p| format!("- {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
            stderr.join("\n"),
            last.describe()
        );
    }
}

/// What happened around a delivery that arrived after its call's result was recorded: the
/// deliveries of the key, the workers' lives, the run's history and the logs of the workers
/// alive at those times.
#[allow(clippy::too_many_arguments)]
fn explain_late(
    sandbox: &Sandbox,
    url: &str,
    n: u64,
    id: &str,
    key: &str,
    recorded: i64,
    at: i64,
    log: &SinkLog,
    lives: &[(i64, i64)],
    workers: &[Outcome],
) -> String {
    let t0 = lives.first().map_or(0, |l| l.0);
    let mut out = format!(
        "=== late delivery: run {n} ({id}), key {key}: result recorded at +{} ms, delivered again at +{} ms\n",
        recorded - t0,
        at - t0
    );
    for d in log
        .deliveries
        .iter()
        .filter(|d| d.key.as_deref() == Some(key))
    {
        out.push_str(&format!("  delivery at +{} -> {}\n", d.at - t0, d.status));
    }
    out.push_str("  workers (spawned .. killed, ms from the first spawn):\n");
    for (k, (a, b)) in lives.iter().enumerate() {
        out.push_str(&format!("    {k:>2}: +{} .. +{}\n", a - t0, b - t0));
    }
    let history = sandbox.cairn(&["history", id, "--store", url, "--json"]);
    out.push_str("  history (seq, recorded at, worker, type, data):\n");
    for e in history.json_lines().unwrap_or_default() {
        let worker = e["metadata"]["worker"].as_str().unwrap_or_default();
        out.push_str(&format!(
            "    {:>3} +{:<6} {} {:<20} {}\n",
            e["sequence"],
            e["metadata"]["recorded_at"].as_i64().unwrap_or(0) - t0,
            &worker[worker.len().saturating_sub(8)..],
            e["type"].as_str().unwrap_or_default(),
            clip_bytes(&e["data"].to_string(), 160, "\n[...]").replace('\n', " ")
        ));
    }
    for (k, (a, b)) in lives.iter().enumerate() {
        let covers = |t: i64| *a <= t && t <= *b;
        if covers(recorded) || covers(at) {
            out.push_str(&format!(
                "  --- worker {k} stderr ---\n{}\n",
                clip_bytes(&workers[k].stderr, 6000, "\n[...]")
            ));
        }
    }
    out
}

// ----- the checks -----------------------------------------------------------------------------

#[derive(Default)]
struct Audit {
    problems: Vec<String>,
    redeliveries: usize,
    lost: usize,
    duplicated: usize,
    wrong: usize,
    late: usize,
    /// (run, id, key, result recorded at, delivered at) of each late delivery.
    late_calls: Vec<(u64, String, String, i64, i64)>,
}

impl Audit {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// Checks run `n`: its status and output, then its history. Returns how many workers
    /// recorded events of it.
    fn run(
        &mut self,
        sandbox: &Sandbox,
        url: &str,
        n: u64,
        id: &str,
        log: &SinkLog,
        keys: &mut BTreeSet<String>,
    ) -> usize {
        let status = sandbox.cairn(&["status", id, "--store", url, "--json"]);
        status.expect_code(0);
        let s = status
            .json()
            .unwrap_or_else(|| panic!("status is not JSON: {}", status.describe()));
        let expected = expected_output(n);
        if s["status"] != "completed" || !json_eq(&s["output"], &expected) {
            self.wrong += 1;
            self.problem(format!(
                "run {n} ({id}): status {} output {} error {}; expected completed with {expected}",
                s["status"], s["output"], s["error"]
            ));
        }

        let history = sandbox.cairn(&["history", id, "--store", url, "--json"]);
        history.expect_code(0);
        let events = history
            .json_lines()
            .unwrap_or_else(|| panic!("history is not JSON lines: {}", history.describe()));

        // Sequences 1..n, no gap.
        for (i, e) in events.iter().enumerate() {
            if int(e, "sequence") != Some(i as i64 + 1) {
                self.problem(format!(
                    "run {n} ({id}): event {} has sequence {}, expected {}",
                    i,
                    e["sequence"],
                    i + 1
                ));
                break;
            }
        }

        let mut scheduled: BTreeMap<i64, (i64, String)> = BTreeMap::new(); // frame -> (attempt, key)
        let mut results: BTreeMap<i64, Vec<i64>> = BTreeMap::new(); // frame -> recorded_at of each result
        let mut started: BTreeMap<i64, usize> = BTreeMap::new();
        let mut completed: BTreeMap<i64, usize> = BTreeMap::new();
        let mut timers: BTreeMap<i64, (i64, String, i64)> = BTreeMap::new(); // timer -> (frame, kind, due)
        let mut fired: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new(); // timer -> (at, recorded_at)
        let mut retries: BTreeMap<i64, usize> = BTreeMap::new();
        // Workers that recorded events after the `cairn start` client that recorded the first.
        let mut workers: BTreeSet<String> = BTreeSet::new();
        let starter = events
            .first()
            .and_then(|e| e["metadata"]["worker"].as_str())
            .unwrap_or_default()
            .to_string();
        let mut terminal = 0;
        for e in &events {
            let d = &e["data"];
            let recorded = e["metadata"]["recorded_at"].as_i64().unwrap_or(i64::MAX);
            if let Some(w) = e["metadata"]["worker"].as_str() {
                if w != starter {
                    workers.insert(w.to_string());
                }
            }
            match e["type"].as_str().unwrap_or_default() {
                "ActivityScheduled" => {
                    let frame = int(d, "id").unwrap_or(-1);
                    let key = d["idempotency_key"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let attempt = int(d, "attempt").unwrap_or(-1);
                    if key != format!("{id}:{frame}:{attempt}") {
                        self.problem(format!(
                            "run {n}: call {frame} attempt {attempt} has the key `{key}`"
                        ));
                    }
                    if scheduled.insert(frame, (attempt, key)).is_some() {
                        self.problem(format!("run {n}: call {frame} was scheduled twice"));
                    }
                }
                "ActivityCompleted" | "ActivityFailed" => {
                    results
                        .entry(int(d, "id").unwrap_or(-1))
                        .or_default()
                        .push(recorded);
                }
                "TaskStarted" => *started.entry(int(d, "id").unwrap_or(-1)).or_default() += 1,
                "TaskCompleted" => *completed.entry(int(d, "id").unwrap_or(-1)).or_default() += 1,
                "TimerScheduled" => {
                    let t = int(d, "timer").unwrap_or(-1);
                    let entry = (
                        int(d, "frame").unwrap_or(-1),
                        d["kind"].as_str().unwrap_or_default().to_string(),
                        int(d, "due_at").unwrap_or(i64::MAX),
                    );
                    if timers.insert(t, entry).is_some() {
                        self.problem(format!("run {n}: timer {t} was scheduled twice"));
                    }
                }
                "TimerFired" => fired
                    .entry(int(d, "timer").unwrap_or(-1))
                    .or_default()
                    .push((int(d, "at").unwrap_or(i64::MIN), recorded)),
                "RetryScheduled" => *retries.entry(int(d, "id").unwrap_or(-1)).or_default() += 1,
                "RunCompleted" | "RunFaulted" | "RunCancelled" => terminal += 1,
                _ => {}
            }
        }
        if terminal != 1 {
            self.problem(format!("run {n} ({id}): {terminal} terminal events"));
        }

        // Every call has exactly one result; no delivery reached the sink after it was recorded.
        let mut by_key: HashMap<&str, Vec<&Delivery>> = HashMap::new();
        for d in &log.deliveries {
            if let Some(k) = &d.key {
                by_key.entry(k.as_str()).or_default().push(d);
            }
        }
        for (frame, (attempt, key)) in &scheduled {
            keys.insert(key.clone());
            let recorded = results.get(frame).cloned().unwrap_or_default();
            if recorded.len() != 1 {
                self.problem(format!(
                    "run {n}: call {frame} attempt {attempt} has {} results (ActivityCompleted/ActivityFailed)",
                    recorded.len()
                ));
            }
            let deliveries = by_key.get(key.as_str()).cloned().unwrap_or_default();
            if deliveries.is_empty() {
                self.lost += 1;
                self.problem(format!("run {n}: call {key} never reached the sink"));
            }
            if let Some(&at) = recorded.first() {
                for d in deliveries.iter().filter(|d| d.at > at) {
                    self.late += 1;
                    self.late_calls
                        .push((n, id.to_string(), key.clone(), at, d.at));
                    self.problem(format!(
                        "run {n}: call {key} reached the sink at {} ({} ms after its result was \
                         recorded at {at}): a completed call executed again",
                        d.at,
                        d.at - at
                    ));
                }
            }
        }
        for frame in results.keys() {
            if !scheduled.contains_key(frame) {
                self.problem(format!(
                    "run {n}: a result for call {frame}, never scheduled"
                ));
            }
        }
        for (frame, c) in &started {
            if *c != 1 {
                self.problem(format!("run {n}: task {frame} started {c} times"));
            }
        }
        for (frame, c) in &completed {
            if *c != 1 {
                self.problem(format!("run {n}: task {frame} completed {c} times"));
            }
        }

        // Timers: each fires once, never before it is due; one wait timer per frame and one
        // retry timer per scheduled retry.
        let mut per_frame: BTreeMap<(i64, String), usize> = BTreeMap::new();
        for (t, (frame, kind, due)) in &timers {
            *per_frame.entry((*frame, kind.clone())).or_default() += 1;
            match fired.get(t).map(Vec::as_slice) {
                Some([(at, recorded)]) => {
                    if at < due || recorded < due {
                        self.problem(format!(
                            "run {n}: timer {t} ({kind}) due at {due} fired early: at {at}, \
                             recorded at {recorded}"
                        ));
                    }
                }
                other => self.problem(format!(
                    "run {n}: timer {t} ({kind}) fired {} times",
                    other.map_or(0, <[_]>::len)
                )),
            }
        }
        for t in fired.keys() {
            if !timers.contains_key(t) {
                self.problem(format!("run {n}: timer {t} fired, never scheduled"));
            }
        }
        for ((frame, kind), c) in &per_frame {
            let want = if kind == "retry" {
                retries.get(frame).copied().unwrap_or(0)
            } else {
                1
            };
            if *c != want {
                self.problem(format!(
                    "run {n}: task {frame} has {c} {kind} timers, expected {want}"
                ));
            }
        }
        workers.len()
    }

    /// Checks the sink's side: each effect applied under exactly one key, the same body for
    /// every delivery of a key, and no key the histories do not know.
    fn sink(&mut self, runs: &BTreeMap<u64, String>, log: &SinkLog, keys: &BTreeSet<String>) {
        let mut seen: HashMap<&str, &Value> = HashMap::new();
        for d in &log.deliveries {
            let Some(k) = &d.key else {
                self.wrong += 1;
                self.problem(format!("a delivery without Idempotency-Key: {}", d.body));
                continue;
            };
            if d.status == 400 {
                self.wrong += 1;
                self.problem(format!("a malformed delivery {k}: {}", d.body));
            }
            match seen.get(k.as_str()) {
                Some(first) => {
                    if *first != &d.body {
                        self.wrong += 1;
                        self.problem(format!(
                            "key {k} was sent with two bodies: {first} and {}",
                            d.body
                        ));
                    }
                    if d.status == 200 {
                        self.redeliveries += 1;
                    }
                }
                None => {
                    seen.insert(k, &d.body);
                }
            }
            if !keys.contains(k) {
                self.wrong += 1;
                self.problem(format!("key {k} reached the sink but is in no history"));
            }
        }
        for &n in runs.keys() {
            for step in steps(n) {
                let under = log
                    .effects
                    .get(&(n as i64, step as i64))
                    .cloned()
                    .unwrap_or_default();
                match under.len() {
                    1 => {}
                    0 => {
                        self.lost += 1;
                        self.problem(format!("run {n} step {step} was never applied at the sink"));
                    }
                    _ => {
                        self.duplicated += 1;
                        self.problem(format!(
                            "run {n} step {step} was applied under {} keys: {}",
                            under.len(),
                            under.join(", ")
                        ));
                    }
                }
            }
        }
    }
}
