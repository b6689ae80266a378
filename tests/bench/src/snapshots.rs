//! `cairn-bench snapshots`: what a snapshot saves when a long run is loaded.
//!
//! One run of a `for` loop over five `set` tasks is executed until its history has at least
//! `--events` events (10,000 by default); the engine snapshots it as it grows. The run is then
//! loaded `--loads` times each way, interleaved, with [`snapshots::load_run`]: folding every
//! event, and from its snapshot plus the events after it; and a third way, the worst case
//! [`SNAPSHOT_EVERY`] allows: from a snapshot `SNAPSHOT_EVERY - 1` events before the head. The
//! figures are the ratios of the medians, measured in the same invocation on the same store.
//!
//! To choose [`SNAPSHOT_EVERY`] it also prints what the two costs of a snapshot interval `N`
//! come to on this store: the worst load (the snapshot's decoding plus `N - 1` events folded) and
//! the price of keeping snapshots (one write, plus one more read and fold of the `N` events since
//! the last snapshot, every `N` events), as a share of what appending those events cost.
//!
//! The store is the same as `cairn-bench`'s: a temporary SQLite file by default, or a schema of
//! its own on a scratch PostgreSQL database, dropped at the end.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use cairn_core::dsl::{load_str, SourceFormat};
use cairn_core::state::RunState;
use cairn_core::RunEvent;
use cairn_runtime::snapshots::{self, SNAPSHOT_EVERY};
use cairn_runtime::store::RUN_AGGREGATE;
use cairn_runtime::{RunOutcome, Runtime, WorkerScope};
use serde::Serialize;
use serde_json::json;

use crate::engine::{print_report, usage, BenchFail, Target};

/// Events one loop iteration of the benchmark's workflow records (the iteration, five `set`
/// tasks started and completed); only used to size the loop, the report counts the real history.
/// Five tasks per item rather than one keep the list short: the decider evaluates `for.in` again
/// at every iteration.
const EVENTS_PER_ITEM: u64 = 11;

/// Intervals whose costs the report works out.
const INTERVALS: [u64; 6] = [100, 250, 500, 1_000, 2_000, 5_000];

/// Arguments of `cairn-bench snapshots`.
#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotsArgs {
    /// Store to measure (as `cairn-bench --store`); default: a temporary SQLite file
    #[arg(long)]
    store: Option<String>,
    /// Events the run's history reaches at least
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Loads measured each way
    #[arg(long, default_value_t = 20)]
    loads: u32,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark; returns the exit code.
pub async fn run(args: SnapshotsArgs) -> Result<u8, BenchFail> {
    if !(SNAPSHOT_EVERY..=1_000_000).contains(&args.events) {
        return Err(usage(anyhow!(
            "--events must be between {SNAPSHOT_EVERY} and 1000000"
        )));
    }
    if args.loads == 0 || args.loads > 10_000 {
        return Err(usage(anyhow!("--loads must be between 1 and 10000")));
    }
    let target = Target::open(args.store.as_deref()).await?;
    let result = measure(&target, &args).await;
    let report = target.finish(result).await?;
    print_report(&report, args.json, || report.table())
}

/// What one interval `N` would cost on this store.
#[derive(Debug, Clone, Serialize)]
struct Interval {
    every: u64,
    /// The slowest load: decoding the snapshot, then folding `every - 1` events.
    worst_load_ms: f64,
    /// One snapshot (read and fold `every` events, decode, encode, write) per `every` events,
    /// as a share of appending them.
    overhead_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    store: String,
    events: u64,
    run_seconds: f64,
    append_us_per_event: f64,
    snapshot_at: u64,
    events_after_snapshot: u64,
    snapshot_bytes: usize,
    loads: u32,
    full_load_ms_p50: f64,
    snapshot_load_ms_p50: f64,
    /// `full_load_ms_p50 / snapshot_load_ms_p50`.
    speedup: f64,
    /// A load from a snapshot with the most events after it that `SNAPSHOT_EVERY` allows.
    worst_snapshot_load_ms_p50: f64,
    /// `full_load_ms_p50 / worst_snapshot_load_ms_p50`.
    worst_speedup: f64,
    fold_us_per_event: f64,
    snapshot_decode_ms: f64,
    snapshot_write_ms_p50: f64,
    snapshot_every: u64,
    intervals: Vec<Interval>,
}

impl Report {
    fn table(&self) -> String {
        let mut s = format!(
            "store: {}\nrun: {} events in {:.1} s ({:.0} µs per event appended)\n\
             snapshot: after event {} ({} events after it), {} bytes\n\n\
             load of the whole run, median of {} each:\n\
             \x20 every event folded                {:>9.2} ms\n\
             \x20 its snapshot + the rest           {:>9.2} ms   ratio {:>6.1}x\n\
             \x20 a snapshot {:>4} events back      {:>9.2} ms   ratio {:>6.1}x\n\n\
             parts: {:.1} µs per event folded, {:.2} ms to decode the snapshot, \
             {:.2} ms to write one\n\n\
             interval N   worst load   snapshot cost (% of appending N events)\n",
            self.store,
            self.events,
            self.run_seconds,
            self.append_us_per_event,
            self.snapshot_at,
            self.events_after_snapshot,
            self.snapshot_bytes,
            self.loads,
            self.full_load_ms_p50,
            self.snapshot_load_ms_p50,
            self.speedup,
            SNAPSHOT_EVERY - 1,
            self.worst_snapshot_load_ms_p50,
            self.worst_speedup,
            self.fold_us_per_event,
            self.snapshot_decode_ms,
            self.snapshot_write_ms_p50,
        );
        for i in &self.intervals {
            let mark = if i.every == self.snapshot_every {
                "  <- SNAPSHOT_EVERY"
            } else {
                ""
            };
            s.push_str(&format!(
                "{:>10}   {:>7.2} ms   {:>6.2} %{mark}\n",
                i.every, i.worst_load_ms, i.overhead_pct
            ));
        }
        s
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

async fn measure(target: &Target, args: &SnapshotsArgs) -> anyhow::Result<Report> {
    let items = args.events.div_ceil(EVENTS_PER_ITEM);
    let def = load_str(
        &format!(
            "document: {{ dsl: '1.0.3', namespace: cairn-bench, name: long, version: '1.0.0' }}\n\
             do:\n\
             \x20 - loop:\n\
             \x20     for: {{ in: '${{ [range({items})] }}', each: item }}\n\
             \x20     do:\n\
             \x20       - a: {{ set: {{ last: '${{ $item }}' }} }}\n\
             \x20       - b: {{ set: {{ last: '${{ $item }}' }} }}\n\
             \x20       - c: {{ set: {{ last: '${{ $item }}' }} }}\n\
             \x20       - d: {{ set: {{ last: '${{ $item }}' }} }}\n\
             \x20       - e: {{ set: {{ last: '${{ $item }}' }} }}\n"
        ),
        SourceFormat::Yaml,
    )
    .map_err(|e| anyhow!("the bench workflow is invalid: {e:?}"))?;
    let store = target.store();

    eprintln!("running a loop of {items} items ...");
    let rt = Runtime::builder()
        .store(store.clone())
        .scope(WorkerScope::OwnRuns)
        .build()
        .await?;
    let began = Instant::now();
    let (run_id, outcome) = rt.run(def, json!({})).await?;
    let run_seconds = began.elapsed().as_secs_f64();
    // Waits for the snapshots the appends started.
    rt.shutdown().await;
    if !matches!(outcome, RunOutcome::Completed(_)) {
        bail!("the bench run did not complete: {outcome:?}");
    }

    // The worst case SNAPSHOT_EVERY allows: a snapshot SNAPSHOT_EVERY - 1 events before the
    // head. The store keeps only the newest snapshot, so this one is held here and decoded as a
    // load would decode it, after the same query for the stored one.
    let stored = store.load(RUN_AGGREGATE, &run_id, 0).await?;
    let all = stored
        .iter()
        .map(|e| RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let back = (all.len() as u64).saturating_sub(SNAPSHOT_EVERY - 1);
    let back_payload = RunState::from_events(&all[..back as usize])
        .to_snapshot()
        .map_err(|e| anyhow!("cannot encode the state: {e}"))?;
    drop((stored, all));

    eprintln!("loading it {} times each of three ways ...", args.loads);
    let (mut full, mut fast, mut worst) = (Vec::new(), Vec::new(), Vec::new());
    let (mut events, mut at, mut tail) = (0, 0, 0);
    for _ in 0..args.loads {
        let t = Instant::now();
        let f = snapshots::load_run(store.as_ref(), &run_id, false).await?;
        full.push(t.elapsed());
        let t = Instant::now();
        let s = snapshots::load_run(store.as_ref(), &run_id, true).await?;
        fast.push(t.elapsed());
        if s.state != f.state {
            bail!("the state from the snapshot differs from the full fold");
        }
        let t = Instant::now();
        let _ = store.load_snapshot(RUN_AGGREGATE, &run_id).await?;
        let mut w = RunState::from_snapshot(back_payload.clone(), back)
            .map_err(|e| anyhow!("cannot decode the state: {e}"))?;
        for e in store.load(RUN_AGGREGATE, &run_id, back).await? {
            w.apply(&RunEvent::from_stored(
                &e.event_type,
                &e.event_version,
                e.payload,
            )?);
        }
        worst.push(t.elapsed());
        if w != f.state {
            bail!("the state from the older snapshot differs from the full fold");
        }
        events = f.sequence;
        at = s
            .snapshot
            .ok_or_else(|| anyhow!("the run has no snapshot"))?;
        tail = s.events_read;
    }
    if events < args.events {
        bail!(
            "the run has {events} events, fewer than --events {}",
            args.events
        );
    }
    let full_ms = median(full);
    let fast_ms = median(fast);
    let worst_ms = median(worst);

    // The parts: a snapshot at the head (nothing to fold after it) and its writes.
    let (_, payload) = store
        .load_snapshot(RUN_AGGREGATE, &run_id)
        .await?
        .ok_or_else(|| anyhow!("the run has no snapshot"))?;
    let snapshot_bytes = payload.to_string().len();
    let mut writes = Vec::new();
    let mut decode = Vec::new();
    let head = snapshots::load_run(store.as_ref(), &run_id, false).await?;
    let head_payload = head
        .state
        .to_snapshot()
        .map_err(|e| anyhow!("cannot encode the state: {e}"))?;
    for _ in 0..args.loads.min(20) {
        let t = Instant::now();
        store
            .save_snapshot(RUN_AGGREGATE, &run_id, head.sequence, head_payload.clone())
            .await?;
        writes.push(t.elapsed());
        let t = Instant::now();
        let s = snapshots::load_run(store.as_ref(), &run_id, true).await?;
        decode.push(t.elapsed());
        if s.events_read != 0 {
            bail!("a snapshot at the head still read {} events", s.events_read);
        }
    }
    let write_ms = median(writes);
    let decode_ms = median(decode);
    let fold_us = (full_ms * 1e3 / events as f64).max(0.0);
    let append_us = run_seconds * 1e6 / events as f64;
    let intervals = INTERVALS
        .iter()
        .map(|&n| {
            let fold_n_ms = fold_us * n as f64 / 1e3;
            let worst_load_ms = decode_ms + fold_us * (n - 1) as f64 / 1e3;
            let snapshot_ms = decode_ms + fold_n_ms + write_ms;
            Interval {
                every: n,
                worst_load_ms,
                overhead_pct: 100.0 * snapshot_ms / (append_us * n as f64 / 1e3),
            }
        })
        .collect();
    Ok(Report {
        store: target.label.clone(),
        events,
        run_seconds,
        append_us_per_event: append_us,
        snapshot_at: at,
        events_after_snapshot: tail,
        snapshot_bytes,
        loads: args.loads,
        full_load_ms_p50: full_ms,
        snapshot_load_ms_p50: fast_ms,
        speedup: if fast_ms > 0.0 {
            full_ms / fast_ms
        } else {
            0.0
        },
        worst_snapshot_load_ms_p50: worst_ms,
        worst_speedup: if worst_ms > 0.0 {
            full_ms / worst_ms
        } else {
            0.0
        },
        fold_us_per_event: fold_us,
        snapshot_decode_ms: decode_ms,
        snapshot_write_ms_p50: write_ms,
        snapshot_every: SNAPSHOT_EVERY,
        intervals,
    })
}
