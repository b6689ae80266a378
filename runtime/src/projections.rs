//! Read models projected from the event log, and rebuilding them.
//!
//! The `runs` index ([`RunSummary`] rows) is kept inline: every append upserts the summary of the
//! run it extends in the same transaction. It is still a projection: [`rebuild_runs`] folds every
//! run's events again with [`RunState`] and rewrites the rows, then records the position it got
//! to as the checkpoint of [`RUNS_PROJECTION`] (`cairn projections rebuild`).
//!
//! # Safe while workers run
//!
//! A rebuilt row is a pure function of a run's events up to some sequence, so writing it twice
//! is harmless (idempotent). What must not happen is a rebuild overwriting a newer row that a
//! concurrent append wrote after the rebuild folded the run. So each row is written with
//! [`crate::store::RunIndex::rebuild_run_summary`], which checks, under the stores' append lock, that the
//! sequence the fold reached is still the run's last event: if an append committed since, the row
//! it upserted is newer and is left alone (that append carried the up-to-date summary); if an
//! append comes after, it upserts its own newer summary over ours. Either way the row ends as the
//! fold of the run's whole history.

use cairn_core::state::RunState;

use crate::store::{EventStore, RunSummary, RUN_AGGREGATE};
use crate::Result;

/// The checkpoint name of the `runs` index.
pub const RUNS_PROJECTION: &str = "runs";

/// Events read per page of the log.
const PAGE: u64 = 1_000;

/// The `runs` row of a run in `state`; `None` before `RunStarted`. The one definition of a
/// summary, used by the inline upsert of every append and by [`rebuild_runs`].
pub fn run_summary(state: &RunState, run_id: &str) -> Option<RunSummary> {
    let d = state.definition.as_ref()?;
    Some(RunSummary {
        run_id: run_id.to_string(),
        namespace: d.namespace.clone(),
        name: d.name.clone(),
        version: d.version.clone(),
        status: state.status_label().to_string(),
        created_at: state.started_at,
        updated_at: state.updated_at,
        next_timer_at: state.next_timer().map(|(_, due)| due),
        wake_at: state.wake_at(),
        correlation_id: state.correlation_id.clone(),
        parent_run_id: state.parent.as_ref().map(|p| p.run_id.clone()),
    })
}

/// What [`rebuild_runs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuildReport {
    /// The checkpoint before the rebuild, if any.
    pub previous_checkpoint: Option<u64>,
    /// The last global position processed (the new checkpoint).
    pub checkpoint: u64,
    /// Events read from the log.
    pub events: u64,
    /// Runs found in the log.
    pub runs: u64,
    /// Rows rewritten.
    pub rewritten: u64,
    /// Runs whose row was different from the fold before it was rewritten (repaired).
    pub repaired: Vec<String>,
    /// Runs left alone because an append extended them during the rebuild (their row is newer).
    pub skipped: u64,
}

/// Rebuilds the `runs` index from the log and records the checkpoint of [`RUNS_PROJECTION`].
///
/// Memory stays bounded by the number of runs, not events: one pass over
/// [`crate::store::EventLog::read_all`] finds every run and the position the pass ends at; then each run is
/// loaded and folded on its own.
pub async fn rebuild_runs(store: &dyn EventStore) -> Result<RebuildReport> {
    let mut report = RebuildReport {
        previous_checkpoint: store.projection_checkpoint(RUNS_PROJECTION).await?,
        ..RebuildReport::default()
    };
    let mut runs: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        report.events += page.len() as u64;
        for e in page {
            if e.aggregate_type == RUN_AGGREGATE && seen.insert(e.stream.clone()) {
                runs.push(e.stream);
            }
        }
    }
    report.checkpoint = after;
    report.runs = runs.len() as u64;
    for run_id in runs {
        let events = store.load(RUN_AGGREGATE, &run_id, 0).await?;
        let mut state = RunState::default();
        let mut last_sequence = 0;
        for e in &events {
            let event = crate::view::decode(e)?;
            state.apply(&event);
            last_sequence = e.sequence;
        }
        let Some(summary) = run_summary(&state, &run_id) else {
            // No `RunStarted`: nothing an append would have indexed either.
            continue;
        };
        let before = store.get_run(&run_id).await?;
        match store.rebuild_run_summary(&summary, last_sequence).await {
            Ok(true) => {
                report.rewritten += 1;
                if before.as_ref() != Some(&summary) {
                    report.repaired.push(run_id);
                }
            }
            Ok(false) => report.skipped += 1,
            Err(e) => return Err(e.into()),
        }
    }
    store
        .put_projection_checkpoint(RUNS_PROJECTION, report.checkpoint)
        .await?;
    Ok(report)
}
