//! `cairn-bench check`: the deploy-time replay check on many unfinished runs.
//!
//! A definition of `--tasks` tasks (10 by default: `set` tasks, then a `listen` that waits) is
//! deployed and one run of it started through the runtime; its recorded history is then copied
//! into `--runs` runs (10,000 by default), written straight through the store's append in bulk
//! (a transaction per 500 runs), each with its own run id and `runs` row. The check of a
//! compatible new version (the same tasks and one more after them) then replays every one of
//! them, as `cairn deploy` does, and is timed beside a baseline measured in the same invocation
//! on the same store: listing those runs and loading and decoding their histories with the
//! same concurrency, which is what the check cannot do without. The figures: runs checked per
//! second, and the check's time as a multiple of the baseline's.

use std::time::Instant;

use anyhow::{anyhow, bail};
use cairn_core::dsl::{load_str, SourceFormat, Workflow};
use cairn_core::names::StatusLabel;
use cairn_core::state::RunState;
use cairn_core::RunEvent;
use cairn_runtime::replay::CheckOptions;
use cairn_runtime::store::{AppendRequest, EventStore, Lease, NewEvent, RunQuery, RUN_AGGREGATE};
use cairn_runtime::{Runtime, WorkerScope};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::{print_report, usage, BenchFail, Target};

/// Runs written per append (one transaction).
const BULK: usize = 500;
/// Histories loaded at once by the baseline, as by the check (`cairn_runtime::replay`).
const CONCURRENCY: usize = 16;

/// Arguments of `cairn-bench check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Store to measure (as `cairn-bench --store`); default: a temporary SQLite file
    #[arg(long)]
    store: Option<String>,
    /// Unfinished runs to check
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Tasks of the definition (the last one waits for an event)
    #[arg(long, default_value_t = 10)]
    tasks: usize,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    store: String,
    build: &'static str,
    runs: usize,
    tasks: usize,
    events_per_run: usize,
    setup_seconds: f64,
    /// Listing the runs and loading and decoding every history.
    baseline_seconds: f64,
    check_seconds: f64,
    check_runs_per_second: f64,
    /// `check_seconds / baseline_seconds`.
    check_vs_baseline: f64,
    compatible: usize,
}

impl Report {
    fn table(&self) -> String {
        format!(
            "store: {} ({} build)\n\
             {} unfinished runs of a {}-task definition, {} events each (set up in {:.1} s)\n\n\
             \x20 load every history (baseline)   {:>8.2} s\n\
             \x20 the deploy-time check           {:>8.2} s   {:>8.0} runs/s   {:>5.2}x the baseline\n\
             \x20 compatible                      {:>8}\n",
            self.store,
            self.build,
            self.runs,
            self.tasks,
            self.events_per_run,
            self.setup_seconds,
            self.baseline_seconds,
            self.check_seconds,
            self.check_runs_per_second,
            self.check_vs_baseline,
            self.compatible,
        )
    }
}

/// Runs the benchmark; returns the exit code.
pub async fn run(args: CheckArgs) -> Result<u8, BenchFail> {
    if !(1..=1_000_000).contains(&args.runs) {
        return Err(usage(anyhow!("--runs must be between 1 and 1000000")));
    }
    if !(2..=1_000).contains(&args.tasks) {
        return Err(usage(anyhow!("--tasks must be between 2 and 1000")));
    }
    let target = Target::open(args.store.as_deref()).await?;
    let result = measure(&target, &args).await;
    let report = target.finish(result).await?;
    print_report(&report, args.json, || report.table())
}

/// The definition: `tasks - 1` `set` tasks, then a `listen`; `extra` adds one more task after
/// it (a compatible new version).
fn definition(tasks: usize, version: &str, extra: bool) -> anyhow::Result<Workflow> {
    let mut text = format!(
        "document: {{ dsl: '1.0.3', namespace: cairn-bench, name: check, version: '{version}' }}\ndo:\n"
    );
    for i in 0..tasks - 1 {
        text.push_str(&format!(
            "  - t{i}: {{ set: {{ step: {i}, total: '${{ (.total // 0) + {i} }}' }} }}\n"
        ));
    }
    text.push_str("  - wait: { listen: { to: { one: { with: { type: com.example.go } } } } }\n");
    if extra {
        text.push_str("  - after: { set: { done: true } }\n");
    }
    load_str(&text, SourceFormat::Yaml).map_err(|e| anyhow!("the bench workflow is invalid: {e:?}"))
}

async fn measure(target: &Target, args: &CheckArgs) -> anyhow::Result<Report> {
    let store = target.store();
    let rt = Runtime::builder()
        .store(store.clone())
        .scope(WorkerScope::OwnRuns)
        .workers(false)
        .build()
        .await?;
    let began = Instant::now();
    eprintln!("recording {} unfinished runs ...", args.runs);
    rt.deploy(definition(args.tasks, "1.0.0", false)?).await?;
    // The first decision runs to the `listen`, so the start alone records the whole history.
    let model = rt
        .start_deployed(
            "cairn-bench",
            "check",
            "1.0.0",
            json!({}),
            Default::default(),
        )
        .await?
        .run_id;
    let template = store.load(RUN_AGGREGATE, &model, 0).await?;
    let events_per_run = template.len();
    copy_runs(store.as_ref(), &template, args.runs - 1).await?;
    let setup_seconds = began.elapsed().as_secs_f64();

    eprintln!("loading every history (the baseline) ...");
    let t = Instant::now();
    let loaded = load_all(store.as_ref()).await?;
    let baseline_seconds = t.elapsed().as_secs_f64();
    if loaded != args.runs {
        bail!("the baseline loaded {loaded} runs, not {}", args.runs);
    }

    eprintln!("checking a compatible new version against them ...");
    let t = Instant::now();
    let report = rt
        .check_deploy(
            &definition(args.tasks, "1.1.0", true)?,
            &CheckOptions::default(),
        )
        .await?;
    let check_seconds = t.elapsed().as_secs_f64();
    rt.shutdown().await;
    let compatible = report.runs.iter().filter(|r| r.compatible).count();
    if report.runs.len() != args.runs || compatible != args.runs {
        let first = report.runs.iter().find(|r| !r.compatible).map(|r| r.line());
        bail!(
            "the check found {} runs, {compatible} compatible, of {}: {first:?}",
            report.runs.len(),
            args.runs
        );
    }
    Ok(Report {
        store: target.label.clone(),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        runs: args.runs,
        tasks: args.tasks,
        events_per_run,
        setup_seconds,
        baseline_seconds,
        check_seconds,
        check_runs_per_second: args.runs as f64 / check_seconds.max(1e-9),
        check_vs_baseline: check_seconds / baseline_seconds.max(1e-9),
        compatible,
    })
}

/// Writes `n` copies of the `template` run's history, each under a new run id.
async fn copy_runs(
    store: &dyn EventStore,
    template: &[cairn_runtime::store::StoredEvent],
    n: usize,
) -> anyhow::Result<()> {
    let events = template
        .iter()
        .map(|e| RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let state = RunState::from_events(&events);
    let mut left = n;
    while left > 0 {
        let batch = left.min(BULK);
        left -= batch;
        let requests = (0..batch)
            .map(|_| {
                let id = uuid::Uuid::now_v7().to_string();
                let summary = cairn_runtime::projections::run_summary(&state, &id);
                AppendRequest {
                    aggregate_type: RUN_AGGREGATE.to_string(),
                    stream: id.clone(),
                    expected_sequence: 0,
                    events: template
                        .iter()
                        .map(|e| NewEvent {
                            event_type: e.event_type.clone(),
                            event_version: e.event_version.clone(),
                            payload: with_run_id(&e.event_type, &e.payload, &id),
                            metadata: e.metadata.clone(),
                        })
                        .collect(),
                    run_summary: summary,
                    lease: Lease::External,
                }
            })
            .collect();
        store.append(requests).await?;
    }
    Ok(())
}

/// `RunStarted` names its run; nothing else of this history does.
fn with_run_id(event_type: &str, payload: &Value, id: &str) -> Value {
    let mut p = payload.clone();
    if event_type == cairn_core::names::event::RUN_STARTED {
        if let Some(o) = p.as_object_mut() {
            o.insert("run_id".into(), json!(id));
        }
    }
    p
}

/// The baseline: the unfinished runs listed page by page, every history loaded and decoded.
async fn load_all(store: &dyn EventStore) -> anyhow::Result<usize> {
    let mut q = RunQuery::default();
    q.statuses = StatusLabel::OPEN
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    q.namespace = Some("cairn-bench".into());
    q.name = Some("check".into());
    q.limit = 1_000;
    let mut ids = Vec::new();
    loop {
        let page = store.query_runs(&q).await?;
        let Some(last) = page.last() else { break };
        q.after = Some((last.created_at, last.run_id.clone()));
        ids.extend(page.into_iter().map(|r| r.run_id));
    }
    let decoded: Vec<anyhow::Result<usize>> = futures::stream::iter(ids)
        .map(|id| async move {
            let stored = store.load(RUN_AGGREGATE, &id, 0).await?;
            let events = stored
                .iter()
                .map(|e| RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(events.len())
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut runs = 0;
    for d in decoded {
        if d? > 0 {
            runs += 1;
        }
    }
    Ok(runs)
}
