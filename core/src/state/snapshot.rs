//! A state as its own snapshot: the fold of a run's first events, written so that it decodes
//! back to exactly the same state.

use serde_json::Value;

use super::RunState;

/// Version of the snapshot form of [`RunState`] ([`RunState::to_snapshot`]).
///
/// Bump it whenever a snapshot written by the previous code would no longer decode to what
/// folding the same events gives now: a field changes shape or meaning, or [`RunState::apply`]
/// folds some event differently. Snapshots of any other version are then ignored and runs fold
/// from their events again, once. The golden snapshots in `tests/fixtures/snapshots/` fail a test
/// when that is forgotten.
pub const SNAPSHOT_FORMAT: u64 = 1;

/// Why a snapshot cannot stand in for a run's events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Written by another version of the snapshot form.
    #[error("snapshot format {found:?}, expected {SNAPSHOT_FORMAT}")]
    Format {
        /// The version found, if the snapshot has one.
        found: Option<u64>,
    },
    /// The state does not decode.
    #[error("snapshot state does not decode: {0}")]
    Decode(String),
    /// The state could not be encoded.
    #[error("state cannot be encoded as a snapshot: {0}")]
    Encode(String),
    /// The state is not the fold of the events it claims to stand for.
    #[error("snapshot of {folded} events stored as the state after event {last_sequence}")]
    Sequence {
        /// The sequence the snapshot is stored under.
        last_sequence: u64,
        /// How many events its state has folded.
        folded: u64,
    },
}

impl RunState {
    /// The state as a snapshot: `{"format": SNAPSHOT_FORMAT, "state": "<the state as JSON
    /// text>"}`. Decoding it with [`RunState::from_snapshot`] gives back exactly this state, so
    /// folding the events after it gives what folding every event gives.
    ///
    /// The state is JSON text inside a string, not a nested object, so that a store may keep the
    /// payload as PostgreSQL `jsonb`: that type refuses the `\u0000` that starts the names of
    /// internal variables (`$item`, `$error`), and it would reorder keys and rewrite numbers.
    pub fn to_snapshot(&self) -> Result<Value, SnapshotError> {
        let state =
            serde_json::to_string(self).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        Ok(serde_json::json!({ "format": SNAPSHOT_FORMAT, "state": state }))
    }

    /// The state a snapshot holds, checked to be the fold of a run's first `last_sequence`
    /// events (sequences start at 1, and every event folded counts one).
    pub fn from_snapshot(snapshot: Value, last_sequence: u64) -> Result<RunState, SnapshotError> {
        let Value::Object(mut o) = snapshot else {
            return Err(SnapshotError::Format { found: None });
        };
        let found = o.get("format").and_then(Value::as_u64);
        if found != Some(SNAPSHOT_FORMAT) {
            return Err(SnapshotError::Format { found });
        }
        let Some(Value::String(text)) = o.remove("state") else {
            return Err(SnapshotError::Decode("no state text".into()));
        };
        let state: RunState =
            serde_json::from_str(&text).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if state.events_applied != last_sequence {
            return Err(SnapshotError::Sequence {
                last_sequence,
                folded: state.events_applied,
            });
        }
        Ok(state)
    }
}
