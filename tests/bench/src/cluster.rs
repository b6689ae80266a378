//! `cairn-bench cluster`: figures (not assertions) for runs distributed over `cairn worker`
//! processes on one PostgreSQL server.
//!
//! Every measurement gets a database of its own (`cairn_cluster_<random>`) on the server of
//! `--store`, dropped at the end, so that its advisory locks and LISTEN/NOTIFY channel (both
//! database-wide) are not shared with anything else. The workers are child processes running
//! this executable as `cairn-bench worker`, which is `cairn worker` itself (`cairn_api::cli`,
//! the same allocator), so no second binary has to be built and found; the bench process holds
//! the client (a runtime with
//! `.workers(false)`, which only records runs) and a loopback HTTP sink that the runs call.
//!
//! 1. **Throughput**: for each `--workers` count, `--runs` runs of three `call: http` tasks to the
//!    sink, started by the client as fast as it can (64 starts in flight), timed from the first
//!    start to the last completion (the `updated_at` of the last run to end); then, with the
//!    workers gone, the raw insert rate of the same database (1, 10 and 100 events per
//!    transaction, each holding `APPEND_LOCK`, into a copy of the `events` table, as
//!    `cairn-bench` measures it), and the engine's events/s as a ratio of each.
//! 2. **Waiting runs**: `--waiting-runs` runs that each `wait` until one shared instant: the
//!    workers' resident memory (VmRSS) before and once all wait, per waiting run; then, when
//!    they come due together, the delay of each `TimerFired` after its `due_at` (p50, p99).
//! 3. **Recovery**: `--recover-runs` runs whose only task is a call the sink holds open; once
//!    the only worker holds them all, it is killed with SIGKILL, and a new worker starts, under
//!    the same name (it supersedes the dead one and takes the runs back at once) and, in a
//!    second measurement, under another name (it must wait for the dead lease to expire). The
//!    time from the kill to the first run's progress and to the last run's completion.
//!
//! Each part checks that nothing was lost: every run completed, none faulted. Each wait has a
//! deadline (`--seconds`); a worker that exits early is reported with the tail of its log.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use cairn_core::dsl::{load_str, SourceFormat, Workflow};
use cairn_runtime::store::postgres::{PostgresOptions, PostgresStore, APPEND_LOCK};
use cairn_runtime::store::RUN_AGGREGATE;
use cairn_runtime::Runtime;
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Connection as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{
    infra, nearest_rank, print_report, random_suffix, usage, BenchFail, Ratios, RawRates,
};

/// Starts in flight at once from the client.
const STARTING: usize = 64;

/// Tasks per run of the throughput workflow.
const TASKS_PER_RUN: f64 = 3.0;

/// Connections of the client's pool (the workers keep the store's default of 16 each; the
/// server usually allows 100 in all).
const CLIENT_POOL: u32 = 8;

/// The most runs one `cairn worker` holds at once (`RuntimeBuilder::max_held_runs` default):
/// the recovery part needs its one worker to hold every run.
const MAX_HELD: u64 = 10_000;

/// The HTTP client of a worker gives up on a request after this long (`HttpOptions` default);
/// the recovery part must kill the worker before its held calls time out.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `cairn-bench cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// PostgreSQL server to measure: postgres://USER@HOST:PORT/DB. Each measurement creates a
    /// database of its own there (`cairn_cluster_<random>`, dropped afterwards); the user needs
    /// CREATEDB. The database named in the URL is only used to connect
    #[arg(long)]
    store: String,
    /// Worker process counts of the throughput part
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Runs of the throughput part, at each worker count
    #[arg(long, default_value_t = 2000)]
    runs: u64,
    /// Runs waiting on one timer at once in the waiting part
    #[arg(long, default_value_t = 100_000)]
    waiting_runs: u64,
    /// Worker processes of the waiting part
    #[arg(long, default_value_t = 2)]
    waiting_workers: usize,
    /// In-flight runs of the recovery part (at most 10,000: what one worker holds)
    #[arg(long, default_value_t = 10_000)]
    recover_runs: u64,
    /// Lease ttl of every worker, in ms: how long a worker started under another name waits
    /// before it takes over a killed worker's runs
    #[arg(long, default_value_t = 10_000)]
    lease_ttl_ms: u64,
    /// Parts to run: throughput, waiting, recovery
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,waiting,recovery"
    )]
    parts: Vec<String>,
    /// Upper bound in seconds of each wait of a part (runs to start, end, fire, be held)
    #[arg(long, default_value_t = 900.0)]
    seconds: f64,
    /// Upper bound of each raw-insert measurement in seconds
    #[arg(long, default_value_t = 2.0)]
    raw_seconds: f64,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark; returns the exit code.
pub async fn run(args: ClusterArgs) -> Result<u8, BenchFail> {
    check(&args)?;
    let opts = sqlx::postgres::PgConnectOptions::from_str(&args.store)
        .map_err(|e| usage(anyhow!("invalid postgres url: {e}")))?;
    let label = format!("postgres://{}:{}", opts.get_host(), opts.get_port());
    let exe = std::env::current_exe()
        .map_err(|e| infra(anyhow!("cannot find the cairn-bench executable: {e}")))?;
    let logs = std::env::temp_dir().join(format!("cairn-bench-cluster-{}", random_suffix()));
    std::fs::create_dir_all(&logs)
        .map_err(|e| infra(anyhow!("cannot create {}: {e}", logs.display())))?;
    let env = Env {
        admin: args.store.clone(),
        exe,
        logs: logs.clone(),
        lease_ttl_ms: args.lease_ttl_ms,
        cap: Duration::from_secs_f64(args.seconds),
    };
    let sink = Sink::start()
        .await
        .map_err(|e| infra(e.context("cannot start the loopback sink")))?;
    let result = measure(&env, &sink, &args, label).await;
    sink.stop().await;
    let _ = std::fs::remove_dir_all(&logs);
    let report = result.map_err(infra)?;
    print_report(&report, args.json, || report.table())
}

fn check(args: &ClusterArgs) -> Result<(), BenchFail> {
    if !(args.store.starts_with("postgres://") || args.store.starts_with("postgresql://")) {
        return Err(usage(anyhow!(
            "--store must be a postgres://... URL (the cluster bench needs PostgreSQL)"
        )));
    }
    for p in &args.parts {
        if !["throughput", "waiting", "recovery"].contains(&p.as_str()) {
            return Err(usage(anyhow!(
                "unknown part `{p}`; expected throughput, waiting or recovery"
            )));
        }
    }
    if args.parts.is_empty() {
        return Err(usage(anyhow!("--parts needs at least one part")));
    }
    if args.workers.is_empty() || args.workers.iter().any(|&w| w == 0 || w > 16) {
        return Err(usage(anyhow!(
            "--workers needs worker counts from 1 to 16, e.g. 1,2,4"
        )));
    }
    if args.runs == 0 || args.waiting_runs == 0 || args.recover_runs == 0 {
        return Err(usage(anyhow!(
            "--runs, --waiting-runs and --recover-runs must be at least 1"
        )));
    }
    if args.waiting_workers == 0 || args.waiting_workers > 16 {
        return Err(usage(anyhow!("--waiting-workers must be from 1 to 16")));
    }
    if args.recover_runs > MAX_HELD {
        return Err(usage(anyhow!(
            "--recover-runs must be at most {MAX_HELD}: one worker holds at most that many runs"
        )));
    }
    if !(300..=600_000).contains(&args.lease_ttl_ms) {
        return Err(usage(anyhow!("--lease-ttl-ms must be from 300 to 600000")));
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite() && args.seconds <= 86_400.0) {
        return Err(usage(anyhow!(
            "--seconds must be a positive number of seconds"
        )));
    }
    if !(args.raw_seconds > 0.0 && args.raw_seconds.is_finite() && args.raw_seconds <= 3600.0) {
        return Err(usage(anyhow!(
            "--raw-seconds must be a positive number of seconds"
        )));
    }
    Ok(())
}

/// What every part needs.
struct Env {
    /// The URL given with `--store`, to create and drop databases through.
    admin: String,
    /// This executable, run as `cairn-bench worker` (that is, `cairn worker`).
    exe: PathBuf,
    /// Where worker logs go (removed at the end).
    logs: PathBuf,
    lease_ttl_ms: u64,
    /// Deadline of each wait.
    cap: Duration,
}

async fn measure(
    env: &Env,
    sink: &Sink,
    args: &ClusterArgs,
    location: String,
) -> anyhow::Result<Report> {
    let has = |p: &str| args.parts.iter().any(|x| x == p);
    let mut report = Report {
        location,
        durability: String::new(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        lease_ttl_ms: env.lease_ttl_ms,
        throughput: Vec::new(),
        waiting: None,
        recovery: Vec::new(),
    };
    if has("throughput") {
        for &w in &args.workers {
            eprintln!(
                "bench cluster: throughput, {} runs on {w} worker process(es)",
                args.runs
            );
            let db = Db::create(env).await?;
            let p = throughput(env, sink, &db, w, args).await;
            db.drop(env).await;
            let p = p?;
            eprintln!(
                "bench cluster:   {:.0} runs/s, {:.0} tasks/s, {:.2} of raw 10/tx",
                p.runs_per_s, p.tasks_per_s, p.ratio.vs_batch_10
            );
            report.durability = p.durability.clone();
            report.throughput.push(p);
        }
    }
    if has("waiting") {
        eprintln!(
            "bench cluster: {} runs waiting on one timer, {} worker process(es)",
            args.waiting_runs, args.waiting_workers
        );
        let db = Db::create(env).await?;
        let w = waiting(env, &db, args).await;
        db.drop(env).await;
        let w = w?;
        eprintln!(
            "bench cluster:   {:.0} bytes per waiting run; fired p50 {:.0} ms, p99 {:.0} ms after due",
            w.bytes_per_waiting_run, w.fired_delay.p50_ms, w.fired_delay.p99_ms
        );
        report.waiting = Some(w);
    }
    if has("recovery") {
        for same_name in [true, false] {
            eprintln!(
                "bench cluster: recovery of {} in-flight runs, new worker under {} name",
                args.recover_runs,
                if same_name { "the same" } else { "another" }
            );
            let db = Db::create(env).await?;
            let r = recovery(env, sink, &db, args, same_name).await;
            db.drop(env).await;
            let r = r?;
            eprintln!(
                "bench cluster:   first progress {:.2} s, all completed {:.2} s after the kill",
                r.first_progress_s, r.all_completed_s
            );
            report.recovery.push(r);
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// The whole report (`--json`).
#[derive(Serialize)]
struct Report {
    /// Server (no database, no password).
    location: String,
    /// Durability settings the server reports.
    durability: String,
    /// CPU cores this process may use (the workers and PostgreSQL share them).
    cores: usize,
    lease_ttl_ms: u64,
    throughput: Vec<Throughput>,
    waiting: Option<Waiting>,
    recovery: Vec<Recovery>,
}

#[derive(Serialize)]
struct Throughput {
    workers: usize,
    runs: u64,
    completed: u64,
    faulted: u64,
    /// Runs that did not complete (faulted, or still open at the deadline): always 0 here,
    /// since either is an error.
    lost: u64,
    /// From the first start to the last completion.
    seconds: f64,
    /// How long the client took to start every run.
    start_seconds: f64,
    runs_per_s: f64,
    tasks_per_s: f64,
    events: u64,
    events_per_s: f64,
    /// Calls the sink received, and how many distinct idempotency keys they carried.
    calls: u64,
    distinct_calls: u64,
    raw: RawRates,
    /// Engine events/s ÷ raw events/s.
    ratio: Ratios,
    #[serde(skip)]
    durability: String,
}

#[derive(Serialize)]
struct Waiting {
    runs: u64,
    workers: usize,
    /// Seconds the client took to start them all.
    start_seconds: f64,
    /// Sum of the workers' VmRSS before any run, and once every run waited.
    rss_before_bytes: u64,
    rss_waiting_bytes: u64,
    bytes_per_waiting_run: f64,
    /// Sum of the workers' VmRSS once every run completed.
    rss_after_bytes: u64,
    /// Largest minus smallest recorded `due_at` (0: they all came due at the same instant).
    due_spread_ms: i64,
    /// `TimerFired.at - TimerScheduled.due_at` of every run.
    fired_delay: Distribution,
    /// The run's last update (its completion) minus its `due_at`.
    completed_delay: Distribution,
    completed: u64,
    faulted: u64,
    lost: u64,
}

#[derive(Serialize, Default)]
struct Distribution {
    count: u64,
    min_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Distribution {
    fn of(mut v: Vec<i64>) -> Distribution {
        v.sort_unstable();
        let at = |p: f64| nearest_rank(&v, p).map_or(0.0, |x| x as f64);
        Distribution {
            count: v.len() as u64,
            min_ms: v.first().map_or(0.0, |&x| x as f64),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: v.last().map_or(0.0, |&x| x as f64),
        }
    }
}

#[derive(Serialize)]
struct Recovery {
    runs: u64,
    /// Whether the new worker used the killed worker's name.
    same_name: bool,
    /// Runs the killed worker held, and calls it had in flight, at the kill.
    held_at_kill: u64,
    calls_in_flight_at_kill: u64,
    /// From the kill to the new worker's registration (process start, connect).
    worker_ready_s: f64,
    /// From the kill to the first event appended after it (polled every 10 ms).
    first_progress_s: f64,
    /// From the kill to the last run's completion (its `updated_at`).
    all_completed_s: f64,
    completed: u64,
    faulted: u64,
    lost: u64,
}

impl Report {
    fn table(&self) -> String {
        let mut s = format!(
            "cairn-bench cluster: {} ({}), {} cores shared by the bench, its workers and the \
             server, lease ttl {} ms\n",
            self.location, self.durability, self.cores, self.lease_ttl_ms
        );
        if !self.throughput.is_empty() {
            s.push_str(
                "\nthroughput: 3-task workflow (call: http to a loopback sink), runs started by a \
                 client, first start to last completion\n",
            );
            s.push_str(&format!(
                "{:>7} {:>6} {:>8} {:>8} {:>9} {:>10} | {:>9} {:>9} {:>9} | {:>7} {:>7} {:>7} | {:>4}\n",
                "workers", "runs", "seconds", "runs/s", "tasks/s", "events/s", "raw 1/tx",
                "raw 10/tx", "raw100/tx", "÷raw1", "÷raw10", "÷raw100", "lost"
            ));
            for p in &self.throughput {
                s.push_str(&format!(
                    "{:>7} {:>6} {:>8.2} {:>8.0} {:>9.0} {:>10.0} | {:>9.0} {:>9.0} {:>9.0} | {:>7.2} {:>7.2} {:>7.2} | {:>4}\n",
                    p.workers, p.runs, p.seconds, p.runs_per_s, p.tasks_per_s, p.events_per_s,
                    p.raw.one_per_tx, p.raw.batch_10, p.raw.batch_100, p.ratio.vs_one_per_tx,
                    p.ratio.vs_batch_10, p.ratio.vs_batch_100, p.lost
                ));
            }
            s.push_str(
                "raw: events/s inserted straight into a copy of `events` in the same database \
                 (APPEND_LOCK per transaction), N per transaction; ÷rawN: engine events/s ÷ that\n",
            );
        }
        if let Some(w) = &self.waiting {
            s.push_str(&format!(
                "\nwaiting: {} runs on one timer, {} worker(s), started in {:.1} s\n\
                 worker RSS {:.1} MiB before, {:.1} MiB while all wait ({:.0} bytes per waiting run), \
                 {:.1} MiB after they ended\n\
                 due spread {} ms; TimerFired after due: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
                 completed after due: p50 {:.0} ms, p99 {:.0} ms; lost {}\n",
                w.runs,
                w.workers,
                w.start_seconds,
                mib(w.rss_before_bytes),
                mib(w.rss_waiting_bytes),
                w.bytes_per_waiting_run,
                mib(w.rss_after_bytes),
                w.due_spread_ms,
                w.fired_delay.p50_ms,
                w.fired_delay.p99_ms,
                w.fired_delay.max_ms,
                w.completed_delay.p50_ms,
                w.completed_delay.p99_ms,
                w.lost
            ));
        }
        if !self.recovery.is_empty() {
            s.push_str("\nrecovery after SIGKILL of the only worker (seconds after the kill)\n");
            s.push_str(&format!(
                "{:>6} {:>12} {:>6} {:>12} {:>14} {:>13} {:>4}\n",
                "runs",
                "new worker",
                "held",
                "worker ready",
                "first progress",
                "all completed",
                "lost"
            ));
            for r in &self.recovery {
                s.push_str(&format!(
                    "{:>6} {:>12} {:>6} {:>12.2} {:>14.2} {:>13.2} {:>4}\n",
                    r.runs,
                    if r.same_name {
                        "same name"
                    } else {
                        "other name"
                    },
                    r.held_at_kill,
                    r.worker_ready_s,
                    r.first_progress_s,
                    r.all_completed_s,
                    r.lost
                ));
            }
        }
        s
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------------------------------------
// 1. Throughput
// ---------------------------------------------------------------------------------------------

fn throughput_workflow(port: u16) -> String {
    let mut s = String::from(
        "document: { dsl: '1.0.3', namespace: cairn-bench, name: cluster3, version: '1.0.0' }\ndo:\n",
    );
    for name in ["first", "second", "third"] {
        s.push_str(&format!(
            "  - {name}:\n      call: http\n      with:\n        method: post\n        \
             endpoint: http://127.0.0.1:{port}/fast\n"
        ));
    }
    s
}

async fn throughput(
    env: &Env,
    sink: &Sink,
    db: &Db,
    workers: usize,
    args: &ClusterArgs,
) -> anyhow::Result<Throughput> {
    let def = parse(&throughput_workflow(sink.port))?;
    let client = Client::open(&db.url).await?;
    let mut fleet = Fleet::default();
    for i in 0..workers {
        fleet
            .spawn(env, db, &client, &format!("bench-throughput-{i}"))
            .await?;
    }
    sink.reset(false);
    let t0 = now_ms();
    let started = Instant::now();
    client
        .start_many(&def, args.runs, |_| json!({}), env.cap)
        .await?;
    let start_seconds = started.elapsed().as_secs_f64();
    let counts = client
        .wait_ended("cluster3", args.runs, env.cap, &mut fleet)
        .await?;
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(updated_at) FROM runs WHERE name = 'cluster3'")
            .fetch_one(client.pool())
            .await?;
    let seconds = (last.unwrap_or(t0) - t0).max(1) as f64 / 1e3;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE aggregate_type = $1")
        .bind(RUN_AGGREGATE)
        .fetch_one(client.pool())
        .await?;
    let events = u64::try_from(events).unwrap_or(0);
    // The raw baseline runs alone: the workers are stopped first.
    fleet.kill_all().await;
    let raw = raw_rates(
        client.pool(),
        events.max(1000),
        Duration::from_secs_f64(args.raw_seconds),
    )
    .await?;
    let durability = durability(client.pool()).await;
    client.close().await;
    let (calls, distinct_calls) = sink.calls();
    let events_per_s = events as f64 / seconds;
    Ok(Throughput {
        workers,
        runs: args.runs,
        completed: counts.completed,
        faulted: counts.faulted,
        lost: args.runs.saturating_sub(counts.completed),
        seconds,
        start_seconds,
        runs_per_s: counts.completed as f64 / seconds,
        tasks_per_s: counts.completed as f64 * TASKS_PER_RUN / seconds,
        events,
        events_per_s,
        calls,
        distinct_calls,
        ratio: Ratios::of(events_per_s, &raw),
        raw,
        durability,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Many runs waiting on one timer
// ---------------------------------------------------------------------------------------------

/// Waits until the instant `.due` (ms since the epoch) of its input. The frame's start time is
/// the decision time the timer's due time is computed from, so every run gets `due_at == .due`
/// (checked afterwards: `due_spread_ms`).
const WAITING_WORKFLOW: &str = r#"
document: { dsl: '1.0.3', namespace: cairn-bench, name: sleeper, version: '1.0.0' }
do:
  - sleep:
      wait: ${ [.due - $task.startedAt.epoch.milliseconds, 0] | max }
"#;

/// Runs that need no worker (a `set` ends in the start append): the client's start rate,
/// measured before the real starts to choose a due time they all make.
const PILOT_WORKFLOW: &str = r#"
document: { dsl: '1.0.3', namespace: cairn-bench, name: pilot, version: '1.0.0' }
do:
  - only:
      set: { ok: true }
"#;

async fn waiting(env: &Env, db: &Db, args: &ClusterArgs) -> anyhow::Result<Waiting> {
    let def = parse(WAITING_WORKFLOW)?;
    let pilot = parse(PILOT_WORKFLOW)?;
    let client = Client::open(&db.url).await?;
    let mut fleet = Fleet::default();
    for i in 0..args.waiting_workers {
        fleet
            .spawn(env, db, &client, &format!("bench-waiting-{i}"))
            .await?;
    }
    // Let the workers finish starting (pools, the listener) before the first reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = fleet.rss()?;

    let pilot_runs = 500.min(args.waiting_runs.max(100));
    let t = Instant::now();
    client
        .start_many(&pilot, pilot_runs, |_| json!({}), env.cap)
        .await?;
    let rate = pilot_runs as f64 / t.elapsed().as_secs_f64().max(1e-3);
    // Twice the time the starts should take, plus a margin for the readings.
    let lead_ms = (args.waiting_runs as f64 / rate * 2000.0) as i64 + 5_000;
    if lead_ms as f64 > env.cap.as_secs_f64() * 1e3 {
        bail!(
            "starting {} runs would take about {:.0} s at the measured {rate:.0} starts/s, more \
             than --seconds; lower --waiting-runs or raise --seconds",
            args.waiting_runs,
            lead_ms as f64 / 2e3
        );
    }
    let due = now_ms() + lead_ms;
    eprintln!(
        "bench cluster:   {rate:.0} starts/s; all due in {:.1} s",
        lead_ms as f64 / 1e3
    );
    let t = Instant::now();
    client
        .start_many(&def, args.waiting_runs, |_| json!({ "due": due }), env.cap)
        .await?;
    let start_seconds = t.elapsed().as_secs_f64();
    if now_ms() >= due {
        bail!(
            "starting the runs took {start_seconds:.1} s, past their due time: the machine \
             slowed down; run again or lower --waiting-runs"
        );
    }
    // Every run is recorded as waiting in its start append; the workers only see notices.
    // Give them a moment to settle, then read their memory before anything is due.
    let settle = Duration::from_millis(u64::try_from((due - now_ms()) / 4).unwrap_or(0))
        .min(Duration::from_secs(2));
    tokio::time::sleep(settle).await;
    let waiting_now: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM runs WHERE name = 'sleeper' AND status = 'waiting'",
    )
    .fetch_one(client.pool())
    .await?;
    let rss_waiting = fleet.rss()?;
    if now_ms() >= due {
        bail!("the memory reading came after the due time; lower --waiting-runs");
    }
    eprintln!(
        "bench cluster:   {waiting_now} runs waiting, workers at {:.1} MiB (from {:.1})",
        mib(rss_waiting),
        mib(rss_before)
    );
    let counts = client
        .wait_ended("sleeper", args.waiting_runs, env.cap, &mut fleet)
        .await?;
    let rss_after = fleet.rss()?;
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT (s.payload->>'due_at')::bigint, (f.payload->>'at')::bigint, r.updated_at \
           FROM events s \
           JOIN events f ON f.aggregate_type = s.aggregate_type \
                        AND f.aggregate_id = s.aggregate_id AND f.event_type = 'TimerFired' \
           JOIN runs r ON r.run_id = s.aggregate_id \
          WHERE s.aggregate_type = $1 AND s.event_type = 'TimerScheduled' AND r.name = 'sleeper'",
    )
    .bind(RUN_AGGREGATE)
    .fetch_all(&mut quiet_connection(&db.url).await?)
    .await
    .context("cannot read the timers' events")?;
    client.close().await;
    fleet.kill_all().await;
    if rows.len() as u64 != counts.completed {
        bail!(
            "{} runs completed but {} have a fired timer",
            counts.completed,
            rows.len()
        );
    }
    let spread = match (
        rows.iter().map(|r| r.0).min(),
        rows.iter().map(|r| r.0).max(),
    ) {
        (Some(lo), Some(hi)) => hi - lo,
        _ => 0,
    };
    let waiting_runs = u64::try_from(waiting_now).unwrap_or(0);
    Ok(Waiting {
        runs: args.waiting_runs,
        workers: args.waiting_workers,
        start_seconds,
        rss_before_bytes: rss_before,
        rss_waiting_bytes: rss_waiting,
        bytes_per_waiting_run: rss_waiting.saturating_sub(rss_before) as f64
            / waiting_runs.max(1) as f64,
        rss_after_bytes: rss_after,
        due_spread_ms: spread,
        fired_delay: Distribution::of(rows.iter().map(|r| r.1 - r.0).collect()),
        completed_delay: Distribution::of(rows.iter().map(|r| r.2 - r.0).collect()),
        completed: counts.completed,
        faulted: counts.faulted,
        lost: args.waiting_runs.saturating_sub(counts.completed),
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Recovery after SIGKILL of the only worker
// ---------------------------------------------------------------------------------------------

fn recovery_workflow(port: u16) -> String {
    format!(
        "document: {{ dsl: '1.0.3', namespace: cairn-bench, name: held, version: '1.0.0' }}\n\
         do:\n  - blocked:\n      call: http\n      with:\n        method: post\n        \
         endpoint: http://127.0.0.1:{port}/hold\n"
    )
}

async fn recovery(
    env: &Env,
    sink: &Sink,
    db: &Db,
    args: &ClusterArgs,
    same_name: bool,
) -> anyhow::Result<Recovery> {
    let n = args.recover_runs;
    let def = parse(&recovery_workflow(sink.port))?;
    let client = Client::open(&db.url).await?;
    sink.reset(true);
    // Record every run before the worker starts, so that it takes them all in one sweep and
    // the first held call is not already near the HTTP client's timeout when the last arrives.
    client.start_many(&def, n, |_| json!({}), env.cap).await?;
    let mut fleet = Fleet::default();
    fleet.spawn(env, db, &client, "bench-recover").await?;
    let deadline = Instant::now() + env.cap;
    let mut first_call: Option<Instant> = None;
    let held = loop {
        let (_, distinct) = sink.calls();
        if distinct > 0 && first_call.is_none() {
            first_call = Some(Instant::now());
        }
        if distinct >= n {
            let held: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM runs WHERE name = 'held' AND owner IS NOT NULL",
            )
            .fetch_one(client.pool())
            .await?;
            break u64::try_from(held).unwrap_or(0);
        }
        if first_call.is_some_and(|t| t.elapsed() > HTTP_TIMEOUT - Duration::from_secs(5)) {
            bail!(
                "the worker had only {distinct} of {n} calls in flight {} s after the first one \
                 (its HTTP timeout is {} s); lower --recover-runs",
                (HTTP_TIMEOUT - Duration::from_secs(5)).as_secs(),
                HTTP_TIMEOUT.as_secs()
            );
        }
        if Instant::now() > deadline {
            bail!("timed out: the worker had only {distinct} of {n} calls in flight");
        }
        fleet.check_alive()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (calls_at_kill, _) = sink.calls();
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
        .fetch_one(client.pool())
        .await?;
    let kill_ms = now_ms();
    let killed = Instant::now();
    fleet.kill_all().await;
    // From now on the sink answers at once, including the calls the dead worker left open.
    sink.release();
    let name = if same_name {
        "bench-recover"
    } else {
        "bench-recover-other"
    };
    fleet.spawn(env, db, &client, name).await?;
    let worker_ready_s = killed.elapsed().as_secs_f64();
    let mut first_progress_s = None;
    let mut last_count = Instant::now() - Duration::from_secs(1);
    let counts = loop {
        if first_progress_s.is_none() {
            let pos: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(client.pool())
                .await?;
            if pos > head {
                first_progress_s = Some(killed.elapsed().as_secs_f64());
            }
        }
        if last_count.elapsed() >= Duration::from_millis(100) {
            last_count = Instant::now();
            let c = client.counts("held").await?;
            if c.ended() >= n {
                break c;
            }
            if killed.elapsed() > env.cap {
                bail!(
                    "timed out after the kill: {} of {n} runs completed, {} faulted",
                    c.completed,
                    c.faulted
                );
            }
        }
        fleet.check_alive()?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(updated_at) FROM runs WHERE name = 'held'")
            .fetch_one(client.pool())
            .await?;
    client.close().await;
    fleet.kill_all().await;
    if counts.faulted > 0 {
        bail!("{} of {n} runs faulted", counts.faulted);
    }
    Ok(Recovery {
        runs: n,
        same_name,
        held_at_kill: held,
        calls_in_flight_at_kill: calls_at_kill,
        worker_ready_s,
        first_progress_s: first_progress_s.unwrap_or(0.0),
        all_completed_s: (last.unwrap_or(kill_ms) - kill_ms).max(0) as f64 / 1e3,
        completed: counts.completed,
        faulted: counts.faulted,
        lost: n.saturating_sub(counts.completed),
    })
}

// ---------------------------------------------------------------------------------------------
// Databases, the client, worker processes
// ---------------------------------------------------------------------------------------------

/// A database of one measurement.
struct Db {
    name: String,
    url: String,
}

impl Db {
    /// Creates a database of its own on the server of `--store`.
    async fn create(env: &Env) -> anyhow::Result<Db> {
        let name = format!("cairn_cluster_{}", random_suffix());
        let mut conn = admin_connection(env)
            .await
            .context("cannot connect to the --store server")?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {name} (the user needs CREATEDB)"))?;
        let _ = conn.close().await;
        Ok(Db {
            url: with_database(&env.admin, &name),
            name,
        })
    }

    /// Drops the database; a failure is only a warning (the figures are already taken).
    async fn drop(self, env: &Env) {
        let dropped = async {
            let mut conn = admin_connection(env).await?;
            // FORCE: a worker killed a moment ago may still have a backend finishing.
            sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await?;
            conn.close().await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(e) = dropped {
            eprintln!("warning: cannot drop database {}: {e}", self.name);
        }
    }
}

/// A connection to the server of `--store`, for `CREATE` and `DROP DATABASE`.
async fn admin_connection(env: &Env) -> anyhow::Result<sqlx::PgConnection> {
    quiet_connection(&env.admin).await
}

/// A connection without sqlx's slow-statement warning, for statements slow by nature (creating
/// and dropping a database, reading every timer of 100,000 runs) that would only add noise to
/// the bench's output.
async fn quiet_connection(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    use sqlx::ConnectOptions as _;
    let opts = sqlx::postgres::PgConnectOptions::from_str(url)?.disable_statement_logging();
    Ok(opts.connect().await?)
}

/// `url` with its database replaced by `db` (query string kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// The client: a runtime that records runs and executes none.
struct Client {
    rt: Runtime,
    store: PostgresStore,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    completed: u64,
    faulted: u64,
    cancelled: u64,
    open: u64,
}

impl Counts {
    fn ended(&self) -> u64 {
        self.completed + self.faulted + self.cancelled
    }
}

impl Client {
    async fn open(url: &str) -> anyhow::Result<Client> {
        let store = PostgresStore::connect_with(
            url,
            PostgresOptions {
                max_connections: CLIENT_POOL,
                ..PostgresOptions::default()
            },
        )
        .await
        .context("cannot open the store")?;
        let rt = Runtime::builder()
            .store(Arc::new(store.clone()))
            .workers(false)
            .build()
            .await
            .context("cannot start the client runtime")?;
        Ok(Client { rt, store })
    }

    fn pool(&self) -> &sqlx::PgPool {
        self.store.pool()
    }

    async fn close(self) {
        self.rt.shutdown().await;
        self.store.close().await;
    }

    /// Starts `n` runs of `def`, [`STARTING`] at a time.
    async fn start_many(
        &self,
        def: &Workflow,
        n: u64,
        input: impl Fn(u64) -> Value,
        cap: Duration,
    ) -> anyhow::Result<()> {
        let starts = futures::stream::iter(0..n)
            .map(|i| {
                let (rt, def, input) = (self.rt.clone(), def.clone(), input(i));
                async move { rt.start_run(def, input).await }
            })
            .buffer_unordered(STARTING)
            .for_each_concurrent(None, |_| async {});
        // Errors are counted afterwards from the runs table: a failed start is a lost run.
        tokio::time::timeout(cap, starts)
            .await
            .map_err(|_| anyhow!("timed out starting {n} runs"))?;
        let ns = def.document.name.as_str();
        let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE name = $1")
            .bind(ns)
            .fetch_one(self.pool())
            .await?;
        if u64::try_from(recorded).unwrap_or(0) < n {
            bail!("only {recorded} of {n} runs could be started");
        }
        Ok(())
    }

    async fn counts(&self, name: &str) -> anyhow::Result<Counts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM runs WHERE name = $1 GROUP BY status")
                .bind(name)
                .fetch_all(self.pool())
                .await?;
        let mut c = Counts::default();
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match status.as_str() {
                "completed" => c.completed += n,
                "faulted" => c.faulted += n,
                "cancelled" => c.cancelled += n,
                _ => c.open += n,
            }
        }
        Ok(c)
    }

    /// Polls until `n` runs named `name` ended; an error if any faulted or the cap passed.
    async fn wait_ended(
        &self,
        name: &str,
        n: u64,
        cap: Duration,
        fleet: &mut Fleet,
    ) -> anyhow::Result<Counts> {
        let deadline = Instant::now() + cap;
        loop {
            let c = self.counts(name).await?;
            if c.ended() >= n {
                if c.faulted > 0 || c.cancelled > 0 {
                    bail!(
                        "{} of {n} runs faulted and {} were cancelled",
                        c.faulted,
                        c.cancelled
                    );
                }
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {:.0} s: {} of {n} runs completed, {} faulted, {} still open",
                    cap.as_secs_f64(),
                    c.completed,
                    c.faulted,
                    c.open
                );
            }
            fleet.check_alive()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `cairn worker` child processes; killed when dropped.
#[derive(Default)]
struct Fleet {
    workers: Vec<WorkerProcess>,
}

struct WorkerProcess {
    name: String,
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

impl Fleet {
    /// Starts `cairn worker` under `name` and waits until it registered.
    async fn spawn(
        &mut self,
        env: &Env,
        db: &Db,
        client: &Client,
        name: &str,
    ) -> anyhow::Result<()> {
        let log = env.logs.join(format!("{}-{name}.log", db.name));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let before = worker_generation(client.pool(), name).await?;
        // The URL goes through the environment, not argv, so that `ps` shows no password.
        let mut child = tokio::process::Command::new(&env.exe)
            .args(["worker", "--worker-name", name, "--lease-ttl-ms"])
            .arg(env.lease_ttl_ms.to_string())
            .env("CAIRN_STORE", &db.url)
            .env("CAIRN_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} worker", env.exe.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("worker {name} exited at once"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "worker {name} exited with {status} before registering: {}",
                    tail(&log)
                );
            }
            if worker_generation(client.pool(), name).await? > before {
                break;
            }
            if Instant::now() > deadline {
                bail!("worker {name} did not register within 30 s: {}", tail(&log));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.workers.push(WorkerProcess {
            name: name.to_string(),
            child,
            pid,
            log,
        });
        Ok(())
    }

    /// An error naming any worker that exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for w in &mut self.workers {
            if let Some(status) = w.child.try_wait()? {
                bail!("worker {} exited with {status}: {}", w.name, tail(&w.log));
            }
        }
        Ok(())
    }

    /// Sum of the workers' resident memory (VmRSS), in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let mut sum = 0;
        for w in &self.workers {
            sum += vm_rss(w.pid).with_context(|| format!("cannot read the RSS of {}", w.name))?;
        }
        Ok(sum)
    }

    /// SIGKILL every worker and reap it.
    async fn kill_all(&mut self) {
        for mut w in self.workers.drain(..) {
            let _ = w.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
        }
    }
}

/// The generation of the worker registered under `name` (0 when none): grows at each
/// registration, so a restarted worker is seen as registered only once it is.
async fn worker_generation(pool: &sqlx::PgPool, name: &str) -> anyhow::Result<i64> {
    let g: Option<i64> = sqlx::query_scalar("SELECT generation FROM workers WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .context("cannot read the workers table")?;
    Ok(g.unwrap_or(0))
}

/// VmRSS of a process from /proc, in bytes.
fn vm_rss(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS line"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("malformed VmRSS line `{line}`"))?
        .parse()
        .with_context(|| format!("malformed VmRSS line `{line}`"))?;
    Ok(kb * 1024)
}

/// The last lines of a worker's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(10);
    if lines.is_empty() {
        "(its log is empty)".into()
    } else {
        format!("its log ends with:\n{}", lines[from..].join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// The raw baseline (as in `cairn-bench`)
// ---------------------------------------------------------------------------------------------

/// Events/s inserted straight into a copy of `events` through `pool`, each transaction taking
/// [`APPEND_LOCK`] first and inserting 1, 10 or 100 events with one `INSERT ... SELECT FROM
/// UNNEST(...)`, the payloads those of a real run: what `cairn-bench` calls the raw rate.
async fn raw_rates(pool: &sqlx::PgPool, events: u64, cap: Duration) -> anyhow::Result<RawRates> {
    let sample: Vec<(String, String, Value, Value)> = sqlx::query_as(
        "SELECT event_type, event_version, payload, metadata FROM events \
          WHERE aggregate_id = (SELECT aggregate_id FROM events WHERE aggregate_type = $1 \
                                 ORDER BY position DESC LIMIT 1) \
          ORDER BY sequence",
    )
    .bind(RUN_AGGREGATE)
    .fetch_all(pool)
    .await?;
    if sample.is_empty() {
        bail!("no run events to take the raw baseline's payloads from");
    }
    let table = format!("bench_raw_events_{}", random_suffix());
    sqlx::query(&format!("CREATE TABLE {table} (LIKE events INCLUDING ALL)"))
        .execute(pool)
        .await
        .context("cannot create the raw table")?;
    let mut out = [0.0; 3];
    let mut streams = 0u64;
    let mut result = Ok(());
    for (i, batch) in [1usize, 10, 100].into_iter().enumerate() {
        let target = if batch == 1 { events } else { events * 5 };
        let start = Instant::now();
        let mut written = 0u64;
        while written < target && start.elapsed() < cap {
            streams += 1;
            if let Err(e) = raw_batch(pool, &table, &sample, streams, batch).await {
                result = Err(e);
                break;
            }
            written += batch as u64;
        }
        out[i] = written as f64 / start.elapsed().as_secs_f64().max(1e-9);
    }
    let dropped = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(pool)
        .await;
    result?;
    dropped.context("cannot drop the raw table")?;
    Ok(RawRates {
        one_per_tx: out[0],
        batch_10: out[1],
        batch_100: out[2],
    })
}

async fn raw_batch(
    pool: &sqlx::PgPool,
    table: &str,
    sample: &[(String, String, Value, Value)],
    stream: u64,
    batch: usize,
) -> anyhow::Result<()> {
    let rows: Vec<&(String, String, Value, Value)> =
        (0..batch).map(|i| &sample[i % sample.len()]).collect();
    let stream = format!("raw-{stream}");
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut *tx)
        .await?;
    let _: Vec<(i64,)> = sqlx::query_as(&format!(
        "INSERT INTO {table} (aggregate_type, aggregate_id, sequence, event_type, event_version, \
           payload, metadata) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
           $6::jsonb[], $7::jsonb[]) RETURNING position"
    ))
    .bind(vec![RUN_AGGREGATE; batch])
    .bind(vec![stream.as_str(); batch])
    .bind((1..=batch as i64).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| &r.2).collect::<Vec<&Value>>())
    .bind(rows.iter().map(|r| &r.3).collect::<Vec<&Value>>())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn durability(pool: &sqlx::PgPool) -> String {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN \
         ('fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay') ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// The loopback sink
// ---------------------------------------------------------------------------------------------

/// The HTTP endpoint the runs call: `/fast` answers at once; `/hold` answers once released
/// (the recovery part). Counts calls and their distinct idempotency keys.
struct Sink {
    port: u16,
    state: Arc<SinkState>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

struct SinkState {
    calls: AtomicU64,
    keys: Mutex<HashSet<String>>,
    /// `true` while `/hold` holds its calls.
    holding: watch::Sender<bool>,
}

impl Sink {
    async fn start() -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(SinkState {
            calls: AtomicU64::new(0),
            keys: Mutex::default(),
            holding: watch::channel(false).0,
        });
        let app = axum::Router::new()
            .route("/fast", axum::routing::post(sink_call))
            .route("/hold", axum::routing::post(sink_call))
            .with_state(state.clone());
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                eprintln!("warning: the loopback sink stopped: {e}");
            }
        });
        tracker.close();
        Ok(Sink {
            port,
            state,
            tracker,
            shutdown,
        })
    }

    /// Forgets the calls so far; `hold` says whether `/hold` holds the next ones.
    fn reset(&self, hold: bool) {
        self.state.calls.store(0, Ordering::SeqCst);
        if let Ok(mut k) = self.state.keys.lock() {
            k.clear();
        }
        self.state.holding.send_replace(hold);
    }

    /// Answers every held call and every later one at once.
    fn release(&self) {
        self.state.holding.send_replace(false);
    }

    /// Calls received and distinct idempotency keys among them.
    fn calls(&self) -> (u64, u64) {
        let distinct = self.state.keys.lock().map_or(0, |k| k.len() as u64);
        (self.state.calls.load(Ordering::SeqCst), distinct)
    }

    async fn stop(&self) {
        self.release();
        self.shutdown.cancel();
        // Connections of killed workers may linger; do not wait for them long.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

async fn sink_call(
    axum::extract::State(state): axum::extract::State<Arc<SinkState>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::Json<Value> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let key = headers
        .get(cairn_connectors::IDEMPOTENCY_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Ok(mut k) = state.keys.lock() {
        k.insert(key);
    }
    if uri.path() == "/hold" {
        let mut rx = state.holding.subscribe();
        // Ends when released, or when the sink stops (the sender is never dropped before).
        let _ = rx.wait_for(|holding| !holding).await;
    }
    axum::Json(json!({ "ok": true }))
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn parse(text: &str) -> anyhow::Result<Workflow> {
    load_str(text, SourceFormat::Yaml).map_err(|e| anyhow!("a bench workflow is invalid: {e:?}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_and_query_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }

    #[test]
    fn workflows_are_valid() {
        assert!(parse(&throughput_workflow(1)).is_ok());
        assert!(parse(WAITING_WORKFLOW).is_ok());
        assert!(parse(PILOT_WORKFLOW).is_ok());
        assert!(parse(&recovery_workflow(1)).is_ok());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Distribution::of((1..=100).rev().collect());
        assert_eq!(
            (d.p50_ms, d.p99_ms, d.max_ms, d.min_ms),
            (50.0, 99.0, 100.0, 1.0)
        );
        assert_eq!(Distribution::of(Vec::new()).count, 0);
    }
}
