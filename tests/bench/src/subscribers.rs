//! `cairn-bench subscribers`: figures (not assertions) for the server under subscription load.
//!
//! In one process, on 127.0.0.1: a runtime with workers on the store under test, the GraphQL
//! server in front of it (`cairn_api::server::Server`, as `cairn serve` runs it, with
//! `insecure_no_auth`, no rate limit and no practical cap on connections or subscriptions),
//! and the clients:
//!
//! 1. `--runs` runs of a workflow that first waits (the gate, long enough for every subscriber
//!    to connect), then does `--steps` times `call: noop` and a `wait` of `--pause-ms`;
//! 2. `--subscribers` WebSocket connections (`graphql-transport-ws`), one subscription each:
//!    `runEvents(runId, after: 0)` of one run, the subscribers spread evenly over the runs;
//! 3. once every subscriber is subscribed and the gate is over, a steady `--query-rate` of `runs(first: 20)` queries
//!    over HTTP, until every subscription has ended (each ends after its run completes).
//!
//! Measured: for every event a subscriber receives live (recorded after it subscribed), the
//! delivery latency from the event's `recordedAt` (taken by the engine when it decides the
//! event, before the append commits, in whole milliseconds) to its receipt by the client; the
//! latency of every query; and, against the store's history of each run afterwards, whether
//! every subscriber got every event of its run exactly once and in order. The clients share the
//! process and its cores with the server and the workers.
//!
//! Every connection is a file descriptor at each end: 1,000 subscribers need about 2,100 open
//! files (`ulimit -n`). Nothing outlives the run: the store is a temporary SQLite file by default,
//! or a schema of its own on PostgreSQL, dropped at the end (see `engine.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use cairn_api::server::{Server, ServerOptions};
use cairn_core::dsl::{load_str, SourceFormat, Workflow};
use cairn_runtime::store::RUN_AGGREGATE;
use cairn_runtime::{RunOutcome, Runtime, WorkerScope};
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::engine::{infra, nearest_rank, print_report, usage, BenchFail, Target};

/// Most subscribers accepted (each is two file descriptors in this process).
const MAX_SUBSCRIBERS: usize = 5_000;

/// Connections being opened at once.
const CONNECTING: usize = 64;

/// Queries in flight at once; a tick finding this many still waiting sends nothing.
const MAX_QUERIES_IN_FLIGHT: usize = 256;

const RUN_EVENTS: &str = "subscription($id: String!) { runEvents(runId: $id, after: 0) { position sequence type recordedAt } }";

const RUNS_QUERY: &str = "{ runs(first: 20) { edges { cursor node { id name status updatedAt } } pageInfo { hasNextPage } } }";

/// Arguments of `cairn-bench subscribers`.
#[derive(clap::Args, Debug, Clone)]
pub struct SubscribersArgs {
    /// Store: sqlite://PATH or the URL of a scratch PostgreSQL database (tables go into a new
    /// schema that is dropped afterwards). Default: a fresh SQLite file in a temporary folder
    #[arg(long)]
    store: Option<String>,
    /// WebSocket subscribers, one connection and one `runEvents` subscription each (at most
    /// 5,000; about two open files each: see `ulimit -n`)
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Runs executing at once, each watched by subscribers/runs subscribers
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Steps of each run after the gate: a `call: noop` then a wait of --pause-ms
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Milliseconds of the wait of each step
    #[arg(long, default_value_t = 200)]
    pause_ms: u64,
    /// `runs(first: 20)` queries per second while the runs execute
    #[arg(long, default_value_t = 100.0)]
    query_rate: f64,
    /// Milliseconds every run waits before its first step, for the subscribers to connect
    /// (default: 2,000 + 3 per subscriber + 10 per run)
    #[arg(long)]
    gate_ms: Option<u64>,
    /// Upper bound of the whole measurement in seconds (subscribers still open then give up)
    #[arg(long, default_value_t = 120.0)]
    seconds: f64,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

fn workflow(gate_ms: u64, steps: usize, pause_ms: u64) -> String {
    let mut s = String::from(
        "document: { dsl: '1.0.3', namespace: cairn-bench, name: watched, version: '1.0.0' }\ndo:\n",
    );
    s.push_str(&format!(
        "  - gate:\n      wait: {{ milliseconds: {gate_ms} }}\n"
    ));
    for i in 1..=steps {
        s.push_str(&format!(
            "  - step{i}:\n      call: noop\n  - pause{i}:\n      wait: {{ milliseconds: {pause_ms} }}\n"
        ));
    }
    s
}

/// Runs the benchmark; returns the exit code.
pub async fn run(args: SubscribersArgs) -> Result<u8, BenchFail> {
    if args.subscribers == 0 || args.subscribers > MAX_SUBSCRIBERS {
        return Err(usage(anyhow!(
            "--subscribers must be between 1 and {MAX_SUBSCRIBERS}"
        )));
    }
    if args.runs == 0 || args.runs > args.subscribers {
        return Err(usage(anyhow!(
            "--runs must be between 1 and --subscribers ({})",
            args.subscribers
        )));
    }
    if args.steps == 0 || args.steps > 100 {
        return Err(usage(anyhow!("--steps must be between 1 and 100")));
    }
    if args.pause_ms == 0 || args.pause_ms > 60_000 {
        return Err(usage(anyhow!("--pause-ms must be between 1 and 60000")));
    }
    if !(args.query_rate > 0.0 && args.query_rate <= 10_000.0) {
        return Err(usage(anyhow!(
            "--query-rate must be above 0 and at most 10000"
        )));
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err(usage(anyhow!("--seconds must be a positive number")));
    }
    let needed = 2 * args.subscribers as u64 + 128;
    if let Some(limit) = open_files_limit() {
        if limit < needed {
            return Err(usage(anyhow!(
                "{} subscribers need about {needed} open files but the limit is {limit}: \
                 raise it first (`ulimit -n {}`) or use fewer subscribers",
                args.subscribers,
                needed.next_power_of_two()
            )));
        }
    }
    let gate_ms = args
        .gate_ms
        .unwrap_or(2_000 + 3 * args.subscribers as u64 + 10 * args.runs as u64);
    let def = load_str(
        &workflow(gate_ms, args.steps, args.pause_ms),
        SourceFormat::Yaml,
    )
    .map_err(|e| infra(anyhow!("the bench workflow is invalid: {e:?}")))?;

    let target = Target::open(args.store.as_deref()).await?;
    let result = measure(&target, &def, &args, gate_ms).await;
    let report = target.finish(result).await?;
    print_report(&report, args.json, || report.table())
}

/// The soft limit of open files of this process, when the system says (Linux).
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Milliseconds since the Unix epoch, fractional: the clock of `recordedAt`.
fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// A distribution, in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    count: u64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_unstable_by(f64::total_cmp);
        let mean = if ms.is_empty() {
            0.0
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        };
        Latency {
            count: ms.len() as u64,
            p50_ms: percentile(&ms, 0.50),
            p95_ms: percentile(&ms, 0.95),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
            mean_ms: mean,
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    nearest_rank(sorted, p).unwrap_or(0.0)
}

#[derive(Debug, Serialize)]
struct Queries {
    query: &'static str,
    /// Queries per second asked for.
    target_rate: f64,
    sent: u64,
    ok: u64,
    errors: u64,
    /// Ticks that sent nothing because too many queries were still waiting.
    skipped: u64,
    seconds: f64,
    /// Of the successful queries.
    latency: Latency,
}

#[derive(Debug, Serialize)]
struct Delivery {
    /// Events of the watched runs in the store at the end.
    events: u64,
    /// Events every subscriber should have received (the events of its run), summed.
    expected: u64,
    /// Events the subscribers received.
    received: u64,
    /// Received live: recorded after the subscriber subscribed (the latency sample).
    live: u64,
    /// Received from the replay of what was recorded before the subscriber subscribed.
    replayed: u64,
    /// Expected but never received.
    missing: u64,
    /// Received more than once.
    duplicated: u64,
    /// Received after an event of a later position.
    out_of_order: u64,
    /// Received but not an event of the subscriber's run.
    unexpected: u64,
    /// From `recordedAt` to receipt, events received live only.
    latency: Latency,
}

#[derive(Debug, Serialize)]
struct Report {
    store: &'static str,
    location: String,
    durability: String,
    workflow: Value,
    subscribers: usize,
    runs: usize,
    runs_completed: u64,
    subscribers_per_run: f64,
    /// Seconds to open every connection and subscription.
    connect_seconds: f64,
    /// Subscribers that could not connect or subscribe, or ended with an error.
    failed_subscribers: u64,
    /// Subscriptions that ended with `complete` after their run's last event.
    completed_subscriptions: u64,
    /// From the end of the gate (the runs go on) to the last subscription ended.
    seconds: f64,
    /// Whether `--seconds` ran out first.
    timed_out: bool,
    delivery: Delivery,
    queries: Queries,
    aim: Value,
    /// The first few errors of the subscribers and queries, if any.
    errors: Vec<String>,
}

impl Report {
    fn table(&self) -> String {
        let d = &self.delivery;
        let q = &self.queries;
        let mut s = String::new();
        s.push_str(&format!(
            "cairn-bench subscribers on {} ({})\nstore durability: {}\n",
            self.store, self.location, self.durability
        ));
        s.push_str(&format!(
            "{} WebSocket subscribers over {} runs ({:.1} per run), connected in {:.2} s; {} failed\n",
            self.subscribers, self.runs, self.subscribers_per_run, self.connect_seconds,
            self.failed_subscribers
        ));
        s.push_str(&format!(
            "runs: {} of {} completed, {} events; measured for {:.2} s{}\n\n",
            self.runs_completed,
            self.runs,
            d.events,
            self.seconds,
            if self.timed_out {
                " (--seconds ran out)"
            } else {
                ""
            }
        ));
        s.push_str(&format!(
            "delivery, recordedAt -> client ({} live events): p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n",
            d.latency.count, d.latency.p50_ms, d.latency.p95_ms, d.latency.p99_ms, d.latency.max_ms
        ));
        s.push_str(&format!(
            "  received {} of {} expected ({} live, {} replayed): missing {}, duplicated {}, out of order {}, unexpected {}\n",
            d.received, d.expected, d.live, d.replayed, d.missing, d.duplicated, d.out_of_order,
            d.unexpected
        ));
        s.push_str(&format!(
            "queries `runs(first: 20)` at {:.0}/s ({} ok, {} errors, {} skipped): p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n",
            q.target_rate, q.ok, q.errors, q.skipped, q.latency.p50_ms, q.latency.p95_ms,
            q.latency.p99_ms, q.latency.max_ms
        ));
        s.push_str(&format!("\naim: {}\n", self.aim));
        for e in &self.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

async fn measure(
    target: &Target,
    def: &Workflow,
    args: &SubscribersArgs,
    gate_ms: u64,
) -> anyhow::Result<Report> {
    eprintln!("bench: store {}", target.label);
    let rt = Runtime::builder()
        .store(target.store())
        .scope(WorkerScope::OwnRuns)
        .function("noop", |_call| async { Ok(Value::Null) })
        .build()
        .await
        .context("cannot start the runtime")?;
    // Benchmarks open many subscribers: no cap on connections or subscriptions, idle
    // connections kept, every request accepted as an admin without a token or a rate.
    let options = ServerOptions {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        insecure_no_auth: true,
        rate_limit: 0.0,
        rate_limit_burst: 1,
        max_connections: Semaphore::MAX_PERMITS,
        header_timeout_ms: 3_600_000,
        max_subscriptions_per_connection: usize::MAX,
        max_subscriptions_per_token: usize::MAX,
        drain_timeout: 5,
        ..ServerOptions::default()
    };
    // The server shuts the runtime down when it stops.
    let server = match Server::build_with_runtime(options, rt.clone()).await {
        Ok(s) => s,
        Err(e) => {
            rt.shutdown().await;
            return Err(anyhow::Error::new(e).context("cannot start the server"));
        }
    };
    let addr = server.local_addr();
    eprintln!("bench: server on http://{addr}");
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.run(stop.clone().cancelled_owned()));
    let result = measure_with(target, &rt, addr, def, args, gate_ms).await;
    stop.cancel();
    match serving.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("bench: the server stopped with an error: {e}"),
        Err(e) => eprintln!("bench: the server task failed: {e}"),
    }
    result
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    run: usize,
    /// Positions received, in order.
    positions: Vec<u64>,
    /// Delivery latencies of the events received live, in milliseconds.
    latencies: Vec<f64>,
    replayed: u64,
    completed: bool,
    error: Option<String>,
}

async fn measure_with(
    target: &Target,
    rt: &Runtime,
    addr: std::net::SocketAddr,
    def: &Workflow,
    args: &SubscribersArgs,
    gate_ms: u64,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.seconds);

    eprintln!(
        "bench: starting {} runs (each waits {gate_ms} ms before its first step)",
        args.runs
    );
    let mut run_ids = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        run_ids.push(
            rt.start_run(def.clone(), json!({}))
                .await
                .context("cannot start a run")?,
        );
    }

    eprintln!("bench: connecting {} subscribers", args.subscribers);
    let ws_url = format!("ws://{addr}/graphql/ws");
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(args.subscribers);
    let mut subscribers = tokio::task::JoinSet::new();
    for i in 0..args.subscribers {
        let run = i % args.runs;
        let (url, id, connecting, ready) = (
            ws_url.clone(),
            run_ids[run].clone(),
            connecting.clone(),
            ready_tx.clone(),
        );
        subscribers.spawn(async move {
            let mut seen = Seen {
                run,
                ..Seen::default()
            };
            if let Err(e) = subscribe(&url, &id, &connecting, ready, deadline, &mut seen).await {
                seen.error = Some(format!("subscriber {i} (run {id}): {e:#}"));
            }
            seen
        });
    }
    drop(ready_tx);
    let connect_start = Instant::now();
    let mut ready = 0;
    while ready < args.subscribers {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            // Every subscriber reported (the others failed), or time is up.
            Ok(None) | Err(_) => break,
        }
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();
    let gate_left = Duration::from_millis(gate_ms).saturating_sub(start.elapsed());
    eprintln!(
        "bench:   {ready} subscribed in {connect_seconds:.2} s; the runs go on in {:.2} s",
        gate_left.as_secs_f64()
    );
    if gate_left.is_zero() {
        eprintln!(
            "bench:   warning: the gate passed before every subscriber was in; early events are \
             replayed and left out of the latency (raise --gate-ms)"
        );
    }

    // The queries measure the runs list while the runs execute: from the end of the gate.
    tokio::time::sleep(gate_left).await;
    eprintln!(
        "bench: querying runs(first: 20) at {}/s until every subscription ends",
        args.query_rate
    );
    let measuring = Instant::now();
    let stop_queries = CancellationToken::new();
    let queries = tokio::spawn(query_load(
        format!("http://{addr}/graphql"),
        args.query_rate,
        stop_queries.clone(),
    ));

    let mut seen = Vec::with_capacity(args.subscribers);
    while let Some(joined) = subscribers.join_next().await {
        match joined {
            Ok(s) => seen.push(s),
            Err(e) => seen.push(Seen {
                error: Some(format!("a subscriber task failed: {e}")),
                ..Seen::default()
            }),
        }
    }
    let seconds = measuring.elapsed().as_secs_f64();
    let timed_out = tokio::time::Instant::now() >= deadline;
    stop_queries.cancel();
    let (query_latencies, mut qstats, query_errors) =
        queries.await.context("the query client failed")?;
    qstats.seconds = seconds;
    qstats.latency = Latency::of(query_latencies);

    // The runs are over (their subscriptions completed) unless time ran out.
    let mut runs_completed = 0;
    for id in &run_ids {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = remaining.max(Duration::from_millis(100));
        if let Ok(Ok(RunOutcome::Completed(_))) = tokio::time::timeout(wait, rt.wait(id)).await {
            runs_completed += 1;
        }
    }

    // What each subscriber should have received: its run's whole history.
    let store = rt.store();
    let mut truth: Vec<Vec<u64>> = Vec::with_capacity(run_ids.len());
    for id in &run_ids {
        let events = store
            .load(RUN_AGGREGATE, id, 0)
            .await
            .with_context(|| format!("cannot read the events of run {id}"))?;
        truth.push(events.iter().map(|e| e.position).collect());
    }
    let events: u64 = truth.iter().map(|t| t.len() as u64).sum();

    let mut delivery = Delivery {
        events,
        expected: 0,
        received: 0,
        live: 0,
        replayed: 0,
        missing: 0,
        duplicated: 0,
        out_of_order: 0,
        unexpected: 0,
        latency: Latency::of(Vec::new()),
    };
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let mut failed = 0;
    let mut completed = 0;
    for s in seen {
        let expected = &truth[s.run];
        let wanted: HashSet<u64> = expected.iter().copied().collect();
        let mut got = HashSet::with_capacity(s.positions.len());
        for &p in &s.positions {
            if !got.insert(p) {
                delivery.duplicated += 1;
            } else if !wanted.contains(&p) {
                delivery.unexpected += 1;
            }
        }
        delivery.out_of_order += s.positions.windows(2).filter(|w| w[1] < w[0]).count() as u64;
        delivery.missing += expected.iter().filter(|p| !got.contains(p)).count() as u64;
        delivery.expected += expected.len() as u64;
        delivery.received += s.positions.len() as u64;
        delivery.live += s.latencies.len() as u64;
        delivery.replayed += s.replayed;
        latencies.extend(s.latencies);
        if s.completed {
            completed += 1;
        }
        if let Some(e) = s.error {
            failed += 1;
            if errors.len() < 5 {
                errors.push(e);
            }
        }
    }
    delivery.latency = Latency::of(latencies);
    for e in query_errors {
        if errors.len() < 10 {
            errors.push(e);
        }
    }
    let events_per_run = events as f64 / run_ids.len().max(1) as f64;
    let met = delivery.latency.p99_ms < 50.0
        && qstats.latency.p95_ms < 20.0
        && delivery.missing == 0
        && delivery.duplicated == 0
        && delivery.out_of_order == 0
        && failed == 0;
    Ok(Report {
        store: target.kind(),
        location: target.label.clone(),
        durability: target.durability().await,
        workflow: json!({
            "gate_ms": gate_ms,
            "steps": args.steps,
            "step": format!("call: noop, then wait {} ms", args.pause_ms),
            "events_per_run": events_per_run,
        }),
        subscribers: args.subscribers,
        runs: args.runs,
        runs_completed,
        subscribers_per_run: args.subscribers as f64 / args.runs as f64,
        connect_seconds,
        failed_subscribers: failed,
        completed_subscriptions: completed,
        seconds,
        timed_out,
        delivery,
        queries: qstats,
        aim: json!({
            "delivery_p99_ms_below": 50,
            "query_p95_ms_below": 20,
            "no_event_missing": true,
            "met": met,
        }),
        errors,
    })
}

// ---------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------

/// One subscriber: connects (at most [`CONNECTING`] at once), subscribes to the run's events,
/// says it is ready, then records what arrives until the subscription completes or `deadline`.
async fn subscribe(
    url: &str,
    run_id: &str,
    connecting: &Semaphore,
    ready: mpsc::Sender<()>,
    deadline: tokio::time::Instant,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    let permit = connecting.acquire().await.context("closed")?;
    let mut req = url.into_client_request().context("a WebSocket request")?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        axum::http::HeaderValue::from_static("graphql-transport-ws"),
    );
    // A small read buffer: tungstenite zero-fills it before every read (see the server side).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024);
    let connect = tokio_tungstenite::connect_async_with_config(req, Some(config), false);
    let (mut socket, _) = tokio::time::timeout_at(deadline, connect)
        .await
        .context("timed out connecting")?
        .context("cannot connect")?;
    socket
        .send(Message::text(
            json!({ "type": "connection_init", "payload": {} }).to_string(),
        ))
        .await
        .context("cannot send connection_init")?;
    loop {
        let m = tokio::time::timeout_at(deadline, socket.next())
            .await
            .context("timed out waiting for connection_ack")?
            .ok_or_else(|| anyhow!("closed before connection_ack"))?
            .context("WebSocket error")?;
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).context("not JSON")?;
            match v["type"].as_str() {
                Some("connection_ack") => break,
                Some("ping") => {
                    socket
                        .send(Message::text(json!({ "type": "pong" }).to_string()))
                        .await?;
                }
                _ => return Err(anyhow!("expected connection_ack, got {v}")),
            }
        }
    }
    socket
        .send(Message::text(
            json!({
                "id": "1",
                "type": "subscribe",
                "payload": { "query": RUN_EVENTS, "variables": { "id": run_id } }
            })
            .to_string(),
        ))
        .await
        .context("cannot subscribe")?;
    // Events recorded from this millisecond on reach the subscriber live.
    let subscribed_at = wall_ms().floor();
    drop(permit);
    let _ = ready.send(()).await;

    let outcome = async {
        loop {
            let m = match tokio::time::timeout_at(deadline, socket.next()).await {
                Ok(Some(m)) => m.context("WebSocket error")?,
                Ok(None) => return Err(anyhow!("closed before the subscription completed")),
                Err(_) => return Err(anyhow!("--seconds ran out before the run completed")),
            };
            let received = wall_ms();
            let text = match m {
                Message::Text(t) => t,
                Message::Close(_) => {
                    return Err(anyhow!("closed before the subscription completed"))
                }
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).context("not JSON")?;
            match v["type"].as_str() {
                Some("next") => {
                    if let Some(errs) = v["payload"].get("errors") {
                        return Err(anyhow!("subscription error: {errs}"));
                    }
                    let e = &v["payload"]["data"]["runEvents"];
                    let position = e["position"]
                        .as_u64()
                        .ok_or_else(|| anyhow!("an event without a position: {v}"))?;
                    seen.positions.push(position);
                    let recorded = e["recordedAt"]
                        .as_str()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                        .map(|d| d.timestamp_millis() as f64);
                    match recorded {
                        Some(r) if r >= subscribed_at => seen.latencies.push(received - r),
                        _ => seen.replayed += 1,
                    }
                }
                Some("complete") => {
                    seen.completed = true;
                    return Ok(());
                }
                Some("ping") => {
                    socket
                        .send(Message::text(json!({ "type": "pong" }).to_string()))
                        .await?;
                }
                Some("pong") => {}
                _ => return Err(anyhow!("unexpected message: {v}")),
            }
        }
    }
    .await;
    let _ = socket.close(None).await;
    outcome
}

/// Sends `runs(first: 20)` at `rate` per second (open loop: a slow answer does not delay the
/// next query) until `stop`. Returns the latencies of the successful queries in milliseconds,
/// the counts, and the first errors.
async fn query_load(
    url: String,
    rate: f64,
    stop: CancellationToken,
) -> (Vec<f64>, Queries, Vec<String>) {
    let mut stats = Queries {
        query: RUNS_QUERY,
        target_rate: rate,
        sent: 0,
        ok: 0,
        errors: 0,
        skipped: 0,
        seconds: 0.0,
        latency: Latency::of(Vec::new()),
    };
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            errors.push(format!("cannot build the HTTP client: {e}"));
            return (latencies, stats, errors);
        }
    };
    let body = Arc::new(json!({ "query": RUNS_QUERY }));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut record = |r: Result<Result<f64, String>, tokio::task::JoinError>,
                      stats: &mut Queries| match r {
        Ok(Ok(ms)) => {
            stats.ok += 1;
            latencies.push(ms);
        }
        Ok(Err(e)) => {
            stats.errors += 1;
            if errors.len() < 5 {
                errors.push(e);
            }
        }
        Err(e) => {
            stats.errors += 1;
            if errors.len() < 5 {
                errors.push(format!("a query task failed: {e}"));
            }
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        while let Some(r) = in_flight.try_join_next() {
            record(r, &mut stats);
        }
        if in_flight.len() >= MAX_QUERIES_IN_FLIGHT {
            stats.skipped += 1;
            continue;
        }
        stats.sent += 1;
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        in_flight.spawn(async move {
            let t0 = Instant::now();
            let resp = client
                .post(&url)
                .json(&*body)
                .send()
                .await
                .map_err(|e| format!("query: {e}"))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| format!("query: {e}"))?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("query: the answer is not JSON: {e}"))?;
            if !status.is_success() || v.get("errors").is_some() {
                return Err(format!("query: HTTP {status}: {v}"));
            }
            if !v["data"]["runs"]["edges"].is_array() {
                return Err(format!("query: no runs in {v}"));
            }
            Ok(ms)
        });
    }
    while let Some(r) = in_flight.join_next().await {
        record(r, &mut stats);
    }
    (latencies, stats, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflow_is_valid() {
        let text = workflow(1000, 3, 50);
        assert!(load_str(&text, SourceFormat::Yaml).is_ok(), "{text}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=100).rev().map(f64::from).collect());
        assert_eq!(
            (l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(Vec::new()).p99_ms, 0.0);
    }
}
