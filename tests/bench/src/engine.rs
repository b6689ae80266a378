//! `cairn-bench`: figures (not assertions) for the runtime on one store.
//!
//! The workload is a workflow of three tasks, each `call: noop` of a registered Rust function
//! that returns at once, so what is measured is the runtime and its store. The phases:
//!
//! 1. latency: runs one at a time, start to finish (p50, p99);
//! 2. throughput: the same runs at each `--concurrency` level (runs/s, tasks/s, events/s);
//! 3. beside each of those, the raw append rate of the same store: a table of the same shape,
//!    written through the store's own connection pool with its durability settings (SQLite: the
//!    single WAL writer with `synchronous=FULL` and `BEGIN IMMEDIATE`; PostgreSQL: the store's
//!    pool, every transaction holding [`APPEND_LOCK`]), one event per transaction and in batches.
//!    The ratio engine events/s ÷ raw events/s is what compares across machines: the absolute
//!    figures move with the machine and its load, the ratio much less.
//!
//! Nothing the user owns is touched: by default the store is a fresh SQLite file in a temporary
//! folder; on PostgreSQL every table lives in a schema of its own (`cairn_bench_<random>`) that is
//! dropped at the end; the raw baseline writes to `bench_raw_events_<random>`, dropped too. The
//! runtime only executes the runs it started (`WorkerScope::OwnRuns`), never other work it finds.
//!
//! Progress goes to stderr, results to stdout (a table, or one JSON document with `--json`).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use cairn_core::dsl::{load_str, SourceFormat, Workflow};
use cairn_runtime::store::postgres::{PostgresStore, APPEND_LOCK};
use cairn_runtime::store::sqlite::SqliteStore;
use cairn_runtime::store::{EventStore, StoredEvent, RUN_AGGREGATE};
use cairn_runtime::{RunOutcome, Runtime, WorkerScope};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Connection as _;

/// The benchmarked workflow: three tasks, each a call of the no-op function.
const WORKFLOW: &str = r#"
document: { dsl: '1.0.3', namespace: cairn-bench, name: noop3, version: '1.0.0' }
do:
  - first:
      call: noop
  - second:
      call: noop
  - third:
      call: noop
"#;

/// Tasks per run of [`WORKFLOW`].
const TASKS_PER_RUN: f64 = 3.0;

/// Batch sizes of the raw baseline (events per transaction).
const RAW_BATCHES: [usize; 3] = [1, 10, 100];

/// Arguments of `cairn-bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// Store to measure: sqlite://PATH or the URL of a scratch PostgreSQL database (tables go
    /// into a new schema that is dropped afterwards). Default: a fresh SQLite file in a
    /// temporary folder, removed afterwards
    #[arg(long)]
    store: Option<String>,
    /// Runs per concurrency level
    #[arg(long, default_value_t = 2000)]
    runs: u64,
    /// Runs of the one-at-a-time latency phase (default: 500, at most --runs)
    #[arg(long)]
    latency_runs: Option<u64>,
    /// Concurrency levels: runs in flight at once
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Upper bound of each engine phase in seconds (a phase stops starting runs after it)
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Upper bound of each raw-append measurement in seconds
    #[arg(long, default_value_t = 2.0)]
    raw_seconds: f64,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

/// Other benchmarks than the engine's (the default).
#[derive(clap::Subcommand, Debug, Clone)]
enum BenchCommand {
    /// The server under load: WebSocket subscribers watching runs (`runEvents`) while they
    /// execute, and the runs list queried meanwhile: delivery latency, query latency, and
    /// whether every subscriber got every event once, in order
    Subscribers(crate::subscribers::SubscribersArgs),
    /// Loading a long run: every event folded, against its snapshot plus the events after it
    /// (the ratio), and what each snapshot interval would cost
    Snapshots(crate::snapshots::SnapshotsArgs),
    /// Runs distributed over `cairn worker` processes on one PostgreSQL: throughput with 1, 2
    /// and 4 workers beside the raw insert rate, memory and timer delay of many waiting runs,
    /// and recovery of in-flight runs after a SIGKILL of the only worker
    Cluster(crate::cluster::ClusterArgs),
    /// The deploy-time replay check of a new version against many unfinished runs (10,000 of a
    /// 10-task definition by default): runs checked per second, and the check's time beside
    /// just loading their histories
    Check(crate::check::CheckArgs),
}

/// A failure of `cairn-bench` with its exit code (2 bad usage, 4 store or runtime).
pub struct BenchFail {
    /// Exit code.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

pub(crate) fn usage(error: anyhow::Error) -> BenchFail {
    BenchFail { code: 2, error }
}

pub(crate) fn infra(error: anyhow::Error) -> BenchFail {
    BenchFail { code: 4, error }
}

/// Prints a bench's report, as pretty JSON with `--json` or else as its `table`; returns the
/// exit code.
pub(crate) fn print_report(
    report: &impl Serialize,
    json: bool,
    table: impl FnOnce() -> String,
) -> Result<u8, BenchFail> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| infra(anyhow!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", table());
    }
    Ok(0)
}

/// Nearest-rank percentile `p` (0 to 1) of sorted values; `None` when there are none.
pub(crate) fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Twelve random hex digits, for the names of what a bench creates and removes.
pub(crate) fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Runs the benchmark; returns the exit code.
pub async fn run(args: BenchArgs) -> Result<u8, BenchFail> {
    match args.command {
        Some(BenchCommand::Subscribers(a)) => return crate::subscribers::run(a).await,
        Some(BenchCommand::Snapshots(a)) => return crate::snapshots::run(a).await,
        Some(BenchCommand::Cluster(a)) => return crate::cluster::run(a).await,
        Some(BenchCommand::Check(a)) => return crate::check::run(a).await,
        None => {}
    }
    if args.runs == 0 {
        return Err(usage(anyhow!("--runs must be at least 1")));
    }
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return Err(usage(anyhow!(
            "--concurrency needs positive numbers, e.g. 1,8,64"
        )));
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err(usage(anyhow!("--seconds must be a positive number")));
    }
    if !(args.raw_seconds > 0.0 && args.raw_seconds.is_finite()) {
        return Err(usage(anyhow!("--raw-seconds must be a positive number")));
    }
    let def = load_str(WORKFLOW, SourceFormat::Yaml)
        .map_err(|e| infra(anyhow!("the bench workflow is invalid: {e:?}")))?;

    let target = Target::open(args.store.as_deref()).await?;
    let result = measure(&target, &def, &args).await;
    let report = target.finish(result).await?;
    print_report(&report, args.json, || report.table())
}

// ---------------------------------------------------------------------------------------------
// The store under test and its cleanup
// ---------------------------------------------------------------------------------------------

pub(crate) enum Backend {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

pub(crate) struct Target {
    pub(crate) backend: Backend,
    /// A temporary folder to remove at the end (the default SQLite store).
    temp_dir: Option<PathBuf>,
    /// The PostgreSQL URL as given and the schema created for the bench, dropped at the end.
    pg_schema: Option<(String, String)>,
    /// Where the store is, for the report (no password).
    pub(crate) label: String,
}

impl Target {
    pub(crate) async fn open(url: Option<&str>) -> Result<Target, BenchFail> {
        match url {
            None => {
                let dir = std::env::temp_dir().join(format!("cairn-bench-{}", random_suffix()));
                let path = dir.join("bench.db");
                let path_text = path.to_string_lossy().to_string();
                let store = SqliteStore::open(&path_text)
                    .await
                    .map_err(|e| infra(anyhow!("cannot open {path_text}: {e}")))?;
                Ok(Target {
                    backend: Backend::Sqlite(store),
                    temp_dir: Some(dir),
                    pg_schema: None,
                    label: format!("sqlite://{path_text} (temporary)"),
                })
            }
            Some(u) if u.starts_with("sqlite://") => {
                let path = &u["sqlite://".len()..];
                let store = SqliteStore::open(path)
                    .await
                    .map_err(|e| usage(anyhow!("cannot open {u}: {e}")))?;
                Ok(Target {
                    backend: Backend::Sqlite(store),
                    temp_dir: None,
                    pg_schema: None,
                    label: u.to_string(),
                })
            }
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let opts = sqlx::postgres::PgConnectOptions::from_str(u)
                    .map_err(|e| usage(anyhow!("invalid postgres url: {e}")))?;
                let label = format!(
                    "postgres://{}:{}/{}",
                    opts.get_host(),
                    opts.get_port(),
                    opts.get_database().unwrap_or(opts.get_username())
                );
                let schema = format!("cairn_bench_{}", random_suffix());
                let mut conn = sqlx::PgConnection::connect_with(&opts)
                    .await
                    .map_err(|e| infra(anyhow!("cannot connect to {label}: {e}")))?;
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| infra(anyhow!("cannot create schema {schema}: {e}")))?;
                let _ = conn.close().await;
                // Every connection of the store sees only the bench's schema.
                let sep = if u.contains('?') { '&' } else { '?' };
                let scoped = format!("{u}{sep}options=-c%20search_path%3D{schema}");
                let store = match PostgresStore::connect(&scoped).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = drop_schema(u, &schema).await;
                        return Err(infra(anyhow!("cannot open the store on {label}: {e}")));
                    }
                };
                Ok(Target {
                    backend: Backend::Postgres(store),
                    temp_dir: None,
                    pg_schema: Some((u.to_string(), schema.clone())),
                    label: format!("{label} (schema {schema}, dropped afterwards)"),
                })
            }
            Some(u) => Err(usage(anyhow!(
                "invalid store url `{u}`: expected sqlite://PATH or postgres://..."
            ))),
        }
    }

    pub(crate) fn store(&self) -> Arc<dyn EventStore> {
        match &self.backend {
            Backend::Sqlite(s) => Arc::new(s.clone()),
            Backend::Postgres(s) => Arc::new(s.clone()),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The durability settings in force, as the database reports them.
    pub(crate) async fn durability(&self) -> String {
        match &self.backend {
            Backend::Sqlite(s) => {
                let mut conn = match s.write_pool().acquire().await {
                    Ok(c) => c,
                    Err(e) => return format!("unknown ({e})"),
                };
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap_or_else(|_| "?".into());
                let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap_or(-1);
                let sync = match sync {
                    0 => "OFF".to_string(),
                    1 => "NORMAL".to_string(),
                    2 => "FULL".to_string(),
                    3 => "EXTRA".to_string(),
                    n => n.to_string(),
                };
                format!("journal_mode={mode}, synchronous={sync}, one writer, BEGIN IMMEDIATE")
            }
            Backend::Postgres(s) => {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT name, setting FROM pg_settings WHERE name IN \
                     ('fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay') \
                     ORDER BY name",
                )
                .fetch_all(s.pool())
                .await
                .unwrap_or_default();
                let mut text: Vec<String> = rows.iter().map(|(n, v)| format!("{n}={v}")).collect();
                text.push("APPEND_LOCK per transaction".into());
                text.join(", ")
            }
        }
    }

    /// Number of events in the store's `events` table.
    async fn event_count(&self) -> anyhow::Result<u64> {
        let n: i64 = match &self.backend {
            Backend::Sqlite(s) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM events")
                    .fetch_one(s.read_pool())
                    .await?
            }
            Backend::Postgres(s) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM events")
                    .fetch_one(s.pool())
                    .await?
            }
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Cleans up after `result`, what was measured on this store: a failed measurement is the
    /// error, a failed cleanup only a warning.
    pub(crate) async fn finish<R>(&self, result: anyhow::Result<R>) -> Result<R, BenchFail> {
        let cleanup = self.cleanup().await;
        let report = result.map_err(infra)?;
        if let Err(e) = cleanup {
            eprintln!("warning: cleanup failed: {e:#}");
        }
        Ok(report)
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
        if let Some(dir) = &self.temp_dir {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        if let Some((url, schema)) = &self.pg_schema {
            drop_schema(url, schema).await?;
        }
        Ok(())
    }
}

async fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // Only ever the schema this invocation created (its name carries a fresh random suffix).
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot drop schema {schema}"))?;
    let _ = conn.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// Raw append rates (events per second) of the same store, one figure per batch size.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct RawRates {
    /// One event per transaction.
    pub(crate) one_per_tx: f64,
    /// Ten events per transaction.
    pub(crate) batch_10: f64,
    /// A hundred events per transaction.
    pub(crate) batch_100: f64,
}

/// Engine events/s ÷ each raw rate.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Ratios {
    pub(crate) vs_one_per_tx: f64,
    pub(crate) vs_batch_10: f64,
    pub(crate) vs_batch_100: f64,
}

impl Ratios {
    pub(crate) fn of(events_per_s: f64, raw: &RawRates) -> Ratios {
        let r = |d: f64| if d > 0.0 { events_per_s / d } else { 0.0 };
        Ratios {
            vs_one_per_tx: r(raw.one_per_tx),
            vs_batch_10: r(raw.batch_10),
            vs_batch_100: r(raw.batch_100),
        }
    }
}

/// One engine phase.
#[derive(Debug, Clone, Serialize)]
struct Phase {
    concurrency: usize,
    runs: u64,
    seconds: f64,
    runs_per_s: f64,
    tasks_per_s: f64,
    events: u64,
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    /// The raw rates measured right after this phase.
    raw: RawRates,
    ratio: Ratios,
}

#[derive(Debug, Serialize)]
struct Report {
    store: &'static str,
    location: String,
    durability: String,
    workflow: Value,
    events_per_run: f64,
    /// One run at a time.
    latency: Phase,
    /// One entry per concurrency level.
    throughput: Vec<Phase>,
}

impl Report {
    fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "cairn-bench on {} ({})\nstore durability: {}\nworkflow: 3 tasks, each `call: noop`; {:.1} events per run\n\n",
            self.store, self.location, self.durability, self.events_per_run
        ));
        let l = &self.latency;
        s.push_str(&format!(
            "latency, one run at a time ({} runs): p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms\n\n",
            l.runs, l.p50_ms, l.p99_ms, l.mean_ms
        ));
        s.push_str(&format!(
            "{:>11} {:>6} {:>8} {:>9} {:>9} {:>10} {:>8} {:>8} | {:>10} {:>10} {:>10} | {:>7} {:>7} {:>7}\n",
            "concurrency", "runs", "seconds", "runs/s", "tasks/s", "events/s", "p50 ms", "p99 ms",
            "raw 1/tx", "raw 10/tx", "raw 100/tx", "÷raw1", "÷raw10", "÷raw100"
        ));
        let mut row = |name: String, p: &Phase| {
            s.push_str(&format!(
                "{:>11} {:>6} {:>8.2} {:>9.0} {:>9.0} {:>10.0} {:>8.3} {:>8.3} | {:>10.0} {:>10.0} {:>10.0} | {:>7.2} {:>7.2} {:>7.2}\n",
                name, p.runs, p.seconds, p.runs_per_s, p.tasks_per_s, p.events_per_s, p.p50_ms,
                p.p99_ms, p.raw.one_per_tx, p.raw.batch_10, p.raw.batch_100,
                p.ratio.vs_one_per_tx, p.ratio.vs_batch_10, p.ratio.vs_batch_100
            ));
        };
        row("1 (latency)".into(), l);
        for p in &self.throughput {
            row(p.concurrency.to_string(), p);
        }
        s.push_str(
            "\nraw: events/s appended directly to a table of the same shape through the store's own \
             pool and durability settings, N events per transaction, measured right after each phase.\n\
             ÷rawN: engine events/s divided by that raw rate.\n",
        );
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

async fn measure(target: &Target, def: &Workflow, args: &BenchArgs) -> anyhow::Result<Report> {
    eprintln!("bench: store {}", target.label);
    let rt = Runtime::builder()
        .store(target.store())
        .scope(WorkerScope::OwnRuns)
        .function("noop", |_call| async { Ok(Value::Null) })
        .build()
        .await
        .context("cannot start the runtime")?;
    let result = measure_with(target, &rt, def, args).await;
    rt.shutdown().await;
    result
}

async fn measure_with(
    target: &Target,
    rt: &Runtime,
    def: &Workflow,
    args: &BenchArgs,
) -> anyhow::Result<Report> {
    let cap = Duration::from_secs_f64(args.seconds);

    // Warm-up: compile the definition, fill connection pools and caches.
    eprintln!("bench: warm-up");
    let warm = engine_phase(target, rt, def, 20.min(args.runs), 4, cap).await?;
    let sample_run = warm.sample_run.clone();
    let sample = rt
        .store()
        .load(RUN_AGGREGATE, &sample_run, 0)
        .await
        .context("cannot read a run's events")?;
    if sample.is_empty() {
        bail!("the warm-up run {sample_run} has no events");
    }
    let raw_events = (args.runs * sample.len() as u64).max(1000);
    let mut raw = RawWriter::new(target, sample).await?;
    let result = phases(target, rt, def, args, &mut raw, raw_events).await;
    let dropped = raw.drop_table().await;
    let (latency, throughput) = result?;
    dropped.context("cannot drop the raw table")?;
    let (events, runs) = throughput
        .iter()
        .fold((0, 0), |(e, r), p: &Phase| (e + p.events, r + p.runs));
    let events_per_run = if runs > 0 {
        events as f64 / runs as f64
    } else {
        latency.events as f64 / latency.runs.max(1) as f64
    };
    Ok(Report {
        store: target.kind(),
        location: target.label.clone(),
        durability: target.durability().await,
        workflow: json!({ "tasks": 3, "call": "noop", "source": WORKFLOW.trim() }),
        events_per_run,
        latency,
        throughput,
    })
}

async fn phases(
    target: &Target,
    rt: &Runtime,
    def: &Workflow,
    args: &BenchArgs,
    raw: &mut RawWriter<'_>,
    raw_events: u64,
) -> anyhow::Result<(Phase, Vec<Phase>)> {
    let cap = Duration::from_secs_f64(args.seconds);
    let raw_cap = Duration::from_secs_f64(args.raw_seconds);

    let latency_runs = args.latency_runs.unwrap_or(500.min(args.runs)).max(1);
    eprintln!("bench: latency, {latency_runs} runs one at a time");
    let lat = engine_phase(target, rt, def, latency_runs, 1, cap).await?;
    let lat_raw = raw.rates(raw_events, raw_cap).await?;
    let latency = lat.phase(lat_raw);
    eprintln!(
        "bench:   p50 {:.3} ms, p99 {:.3} ms",
        latency.p50_ms, latency.p99_ms
    );

    let mut throughput = Vec::new();
    for &c in &args.concurrency {
        eprintln!("bench: {} runs at concurrency {c}", args.runs);
        let m = engine_phase(target, rt, def, args.runs, c, cap).await?;
        let r = raw.rates(raw_events, raw_cap).await?;
        let p = m.phase(r);
        eprintln!(
            "bench:   {:.0} runs/s, {:.0} events/s ({:.2} of raw batch 10)",
            p.runs_per_s, p.events_per_s, p.ratio.vs_batch_10
        );
        throughput.push(p);
    }
    Ok((latency, throughput))
}

/// What one engine phase measured.
struct Measured {
    concurrency: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
    events: u64,
    sample_run: String,
}

impl Measured {
    fn phase(&self, raw: RawRates) -> Phase {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let runs = self.latencies.len() as u64;
        let events_per_s = self.events as f64 / secs;
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().map(Duration::as_secs_f64).sum::<f64>() / sorted.len() as f64 * 1e3
        };
        Phase {
            concurrency: self.concurrency,
            runs,
            seconds: secs,
            runs_per_s: runs as f64 / secs,
            tasks_per_s: runs as f64 * TASKS_PER_RUN / secs,
            events: self.events,
            events_per_s,
            p50_ms: percentile(&sorted, 0.50),
            p99_ms: percentile(&sorted, 0.99),
            mean_ms: mean,
            ratio: Ratios::of(events_per_s, &raw),
            raw,
        }
    }
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    nearest_rank(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Runs `runs` runs, `concurrency` at a time (each client starts its next run when the previous
/// one ends), stopping early once `cap` has passed.
async fn engine_phase(
    target: &Target,
    rt: &Runtime,
    def: &Workflow,
    runs: u64,
    concurrency: usize,
    cap: Duration,
) -> anyhow::Result<Measured> {
    let before = target.event_count().await?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + cap;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(usize::try_from(runs).unwrap_or(usize::MAX)) {
        let (rt, def, next) = (rt.clone(), def.clone(), next.clone());
        clients.spawn(async move {
            let mut latencies = Vec::new();
            let mut last = String::new();
            while next.fetch_add(1, Ordering::Relaxed) < runs && Instant::now() < deadline {
                let t0 = Instant::now();
                let (id, outcome) = rt.run(def.clone(), json!({})).await?;
                latencies.push(t0.elapsed());
                match outcome {
                    RunOutcome::Completed(_) => {}
                    other => bail!("bench run {id} did not complete: {other:?}"),
                }
                last = id;
            }
            Ok::<_, anyhow::Error>((latencies, last))
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(runs).unwrap_or(0));
    let mut sample_run = String::new();
    while let Some(joined) = clients.join_next().await {
        let (l, last) = joined.context("a bench client panicked")??;
        latencies.extend(l);
        if !last.is_empty() {
            sample_run = last;
        }
    }
    let elapsed = start.elapsed();
    let after = target.event_count().await?;
    Ok(Measured {
        concurrency,
        latencies,
        elapsed,
        events: after.saturating_sub(before),
        sample_run,
    })
}

// ---------------------------------------------------------------------------------------------
// The raw baseline
// ---------------------------------------------------------------------------------------------

/// Appends events straight into a copy of the `events` table, as the store would without the
/// runtime: same columns and constraints, same payloads (taken from a real run), same pool.
struct RawWriter<'a> {
    target: &'a Target,
    table: String,
    sample: Vec<StoredEvent>,
    /// Streams written so far (each batch writes a fresh stream, as runs do).
    streams: u64,
    prefix: String,
}

impl<'a> RawWriter<'a> {
    async fn new(target: &'a Target, sample: Vec<StoredEvent>) -> anyhow::Result<RawWriter<'a>> {
        let suffix = random_suffix();
        let table = format!("bench_raw_events_{suffix}");
        match &target.backend {
            Backend::Sqlite(s) => {
                // The DDL of the store's `events` table, under another name.
                let ddl: String = sqlx::query_scalar(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
                )
                .fetch_one(s.read_pool())
                .await
                .context("cannot read the events table definition")?;
                let ddl = ddl.replacen("CREATE TABLE events", &format!("CREATE TABLE {table}"), 1);
                if !ddl.starts_with(&format!("CREATE TABLE {table}")) {
                    bail!("unexpected events table definition: {ddl}");
                }
                let mut tx = s.write_pool().begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(&ddl).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Backend::Postgres(s) => {
                sqlx::query(&format!("CREATE TABLE {table} (LIKE events INCLUDING ALL)"))
                    .execute(s.pool())
                    .await
                    .context("cannot create the raw table")?;
            }
        }
        Ok(RawWriter {
            target,
            table,
            sample,
            streams: 0,
            prefix: format!("raw-{suffix}"),
        })
    }

    /// One rate per batch size, each over at most `events` events or `cap`.
    async fn rates(&mut self, events: u64, cap: Duration) -> anyhow::Result<RawRates> {
        let mut out = [0.0; RAW_BATCHES.len()];
        for (i, &batch) in RAW_BATCHES.iter().enumerate() {
            // Batches are cheap per event: give them more events so the figure is not all noise.
            let n = if batch == 1 { events } else { events * 5 };
            out[i] = self.rate(batch, n, cap).await?;
        }
        Ok(RawRates {
            one_per_tx: out[0],
            batch_10: out[1],
            batch_100: out[2],
        })
    }

    async fn rate(&mut self, batch: usize, events: u64, cap: Duration) -> anyhow::Result<f64> {
        let start = Instant::now();
        let mut written = 0u64;
        while written < events && start.elapsed() < cap {
            self.streams += 1;
            let stream = format!("{}-{}", self.prefix, self.streams);
            match &self.target.backend {
                Backend::Sqlite(s) => self.sqlite_batch(s, &stream, batch).await?,
                Backend::Postgres(s) => self.postgres_batch(s, &stream, batch).await?,
            }
            written += batch as u64;
        }
        Ok(written as f64 / start.elapsed().as_secs_f64().max(1e-9))
    }

    /// One transaction of `batch` events: `BEGIN IMMEDIATE`, one multi-row
    /// `INSERT ... VALUES (...), (...) RETURNING position`, commit (fsync'd: synchronous=FULL).
    /// One statement per transaction is the plain best way to batch with sqlx, whose every
    /// statement is a round trip to the connection's worker thread.
    async fn sqlite_batch(
        &self,
        s: &SqliteStore,
        stream: &str,
        batch: usize,
    ) -> anyhow::Result<()> {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "INSERT INTO {} (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) ",
            self.table
        ));
        qb.push_values(0..batch, |mut row, i| {
            let e = &self.sample[i % self.sample.len()];
            row.push_bind(RUN_AGGREGATE)
                .push_bind(stream)
                .push_bind(i as i64 + 1)
                .push_bind(&e.event_type)
                .push_bind(&e.event_version)
                .push_bind(&e.payload)
                .push_bind(&e.metadata);
        });
        qb.push(" RETURNING position");
        let mut tx = s.write_pool().begin_with("BEGIN IMMEDIATE").await?;
        let _ = qb.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One transaction of `batch` events, as the store writes them: take [`APPEND_LOCK`], one
    /// `INSERT ... SELECT FROM UNNEST(...) RETURNING`, commit.
    async fn postgres_batch(
        &self,
        s: &PostgresStore,
        stream: &str,
        batch: usize,
    ) -> anyhow::Result<()> {
        let mut tx = s.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<&StoredEvent> = (0..batch)
            .map(|i| &self.sample[i % self.sample.len()])
            .collect();
        let _: Vec<(i64,)> = sqlx::query_as(&format!(
            "INSERT INTO {} (aggregate_type, aggregate_id, sequence, event_type, event_version, \
               payload, metadata) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
               $6::jsonb[], $7::jsonb[]) RETURNING position",
            self.table
        ))
        .bind(vec![RUN_AGGREGATE; batch])
        .bind(vec![stream; batch])
        .bind((1..=batch as i64).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|e| e.event_version.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|e| &e.payload).collect::<Vec<&Value>>())
        .bind(rows.iter().map(|e| &e.metadata).collect::<Vec<&Value>>())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn drop_table(&self) -> anyhow::Result<()> {
        let sql = format!("DROP TABLE IF EXISTS {}", self.table);
        match &self.target.backend {
            Backend::Sqlite(s) => {
                let mut tx = s.write_pool().begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(&sql).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Backend::Postgres(s) => {
                sqlx::query(&sql).execute(s.pool()).await?;
            }
        }
        Ok(())
    }
}
