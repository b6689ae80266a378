//! Snapshots of runs, so that loading a long run folds only its last events.
//!
//! A snapshot is the state of a run folded up to one of its events ([`RunState::to_snapshot`],
//! versioned by [`cairn_core::state::SNAPSHOT_FORMAT`]), kept in the store's `snapshots` table,
//! the newest only. It is a cache, never the truth: [`load_run`] ignores a snapshot it cannot
//! decode (another format, another run, a state that does not fold the events it claims to) and
//! folds the run from its first event; nothing is lost by deleting every snapshot.
//!
//! A snapshot is made from the log, never from a writer's memory: [`refresh`] loads the run from
//! the store (its snapshot and the events after it) and saves the result. So a snapshot holds
//! exactly what folding the stored events gives, whatever the writer's in-memory state was.
//! The engine calls it off the append path whenever a run's history crosses a multiple of
//! [`SNAPSHOT_EVERY`] (see [`due`]); a load then folds fewer than `SNAPSHOT_EVERY` events after
//! the snapshot, whatever the run's length.

use cairn_core::state::{RunState, SnapshotError};
use tracing::{debug, warn};

use crate::store::{EventStore, RUN_AGGREGATE};
use crate::view::decode;
use crate::{Error, Result};

/// A run is snapshotted each time its history crosses a multiple of this many events.
///
/// Chosen with `cairn bench snapshots` (`docs/benchmarks.md`): folding costs about 14 µs per
/// event, decoding a snapshot and writing one about 1 ms together. At 500 the slowest load
/// (a snapshot 499 events back) takes about 7–12 ms whatever the run's length; a smaller
/// interval makes the per-snapshot decode and write dominate, a larger one doubles the slowest
/// load for little saving.
pub const SNAPSHOT_EVERY: u64 = 500;

/// A run as [`load_run`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRun {
    /// The run's state after its last stored event.
    pub state: RunState,
    /// The sequence of its last stored event.
    pub sequence: u64,
    /// The sequence the snapshot it started from folds up to, if it used one.
    pub snapshot: Option<u64>,
    /// How many events it read and folded (those after the snapshot).
    pub events_read: u64,
}

/// Whether a run that grew from sequence `before` to `after` is due a snapshot: it crossed a
/// multiple of [`SNAPSHOT_EVERY`]. Needs no memory of earlier snapshots, and keeps the events
/// after the newest snapshot below `SNAPSHOT_EVERY` (while saving succeeds).
pub fn due(before: u64, after: u64) -> bool {
    after / SNAPSHOT_EVERY > before / SNAPSHOT_EVERY
}

/// Loads a run: its newest usable snapshot (when `use_snapshot`), then the events after it.
/// [`Error::RunNotFound`] when the run has neither.
pub async fn load_run(
    store: &dyn EventStore,
    run_id: &str,
    use_snapshot: bool,
) -> Result<LoadedRun> {
    let base = if use_snapshot {
        usable_snapshot(store, run_id).await
    } else {
        None
    };
    let (mut state, snapshot) = match base {
        Some((seq, state)) => (state, Some(seq)),
        None => (RunState::default(), None),
    };
    let after = snapshot.unwrap_or(0);
    let stored = store.load(RUN_AGGREGATE, run_id, after).await?;
    if stored.is_empty() && snapshot.is_none() {
        return Err(Error::RunNotFound {
            run_id: run_id.to_string(),
        });
    }
    let mut sequence = after;
    for e in &stored {
        state.apply(&decode(e)?);
        sequence = e.sequence;
    }
    Ok(LoadedRun {
        state,
        sequence,
        snapshot,
        events_read: stored.len() as u64,
    })
}

/// Saves a snapshot of the run as the store has it now, if the newest one is older; answers the
/// sequence saved. Best effort for callers: a run without a snapshot only loads more slowly.
pub async fn refresh(store: &dyn EventStore, run_id: &str) -> Result<Option<u64>> {
    let loaded = load_run(store, run_id, true).await?;
    if loaded.snapshot.is_some_and(|s| s >= loaded.sequence) {
        return Ok(None);
    }
    let payload = loaded
        .state
        .to_snapshot()
        .map_err(|source| Error::Snapshot {
            run_id: run_id.to_string(),
            source,
        })?;
    store
        .save_snapshot(RUN_AGGREGATE, run_id, loaded.sequence, payload)
        .await?;
    Ok(Some(loaded.sequence))
}

/// The run's newest snapshot, if it can stand in for the events it folds.
async fn usable_snapshot(store: &dyn EventStore, run_id: &str) -> Option<(u64, RunState)> {
    let (seq, payload) = match store.load_snapshot(RUN_AGGREGATE, run_id).await {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            // The events will tell whether the store is really down.
            warn!(run = %run_id, error = %e, "cannot read snapshot; folding every event");
            return None;
        }
    };
    match RunState::from_snapshot(payload, seq) {
        Ok(state) if state.run_id == run_id => Some((seq, state)),
        Ok(state) => {
            warn!(run = %run_id, found = %state.run_id, "snapshot of another run ignored");
            None
        }
        // Expected once per long run after an upgrade that changed the format.
        Err(e @ SnapshotError::Format { .. }) => {
            debug!(run = %run_id, error = %e, "snapshot ignored; folding every event");
            None
        }
        Err(e) => {
            warn!(run = %run_id, error = %e, "snapshot ignored; folding every event");
            None
        }
    }
}
