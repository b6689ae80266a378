//! The read side of a run for front ends (the GraphQL API, a dashboard, an embedding
//! application): a run loaded with its whole history, and the timeline of its tasks. Derived
//! from the log here, once, so that no front end folds runs or reads events its own way.

use cairn_core::error::WorkflowError;
use cairn_core::events::{Millis, RunEvent};
use cairn_core::state::RunState;

use crate::store::{EventStore, StoredEvent, RUN_AGGREGATE};
use crate::{Error, Result};

/// A run with its history: every stored event beside its decoded form, and the state they fold
/// to.
#[derive(Debug, Clone)]
pub struct RunView {
    /// The run's id.
    pub run_id: String,
    /// The history, in order: each event as stored (position, sequence, metadata) and decoded
    /// (upcast to the current version).
    pub events: Vec<(StoredEvent, RunEvent)>,
    /// The state the history folds to.
    pub state: RunState,
}

impl RunView {
    /// The timeline of the run's tasks.
    pub fn timeline(&self) -> Vec<TaskSpan> {
        timeline(self.events.iter().map(|(_, e)| e))
    }
}

/// Loads a run and its whole history from `store` ([`Error::RunNotFound`] when it has no
/// events). Reads the store, not a runtime's cache: another process may be executing the run.
pub async fn load(store: &dyn EventStore, run_id: &str) -> Result<RunView> {
    let stored = store.load(RUN_AGGREGATE, run_id, 0).await?;
    if stored.is_empty() {
        return Err(Error::RunNotFound {
            run_id: run_id.to_string(),
        });
    }
    let mut events = Vec::with_capacity(stored.len());
    for e in stored {
        let ev = decode(&e)?;
        events.push((e, ev));
    }
    let state = RunState::from_events(events.iter().map(|(_, e)| e));
    Ok(RunView {
        run_id: run_id.to_string(),
        events,
        state,
    })
}

/// A run folded event by event while it is watched live (a `runUpdated` subscription, a
/// dashboard): it reports a [`RunChange`] only when the run's status or current tasks differ
/// from what it reported last, so a replayed history can be folded whole and shown once.
#[derive(Debug, Default)]
pub struct RunWatch {
    state: RunState,
    /// The position of the last event folded.
    position: Option<u64>,
    /// What was reported last.
    shown: Option<(&'static str, Vec<String>)>,
}

/// What a [`RunWatch`] reports: the run as of the event at `position`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunChange {
    /// The position of the last event folded into it.
    pub position: u64,
    /// The status label (`StatusLabel::as_str`).
    pub status: &'static str,
    /// The JSON pointers of the tasks running now.
    pub current_tasks: Vec<String>,
    /// The output, once completed.
    pub output: Option<serde_json::Value>,
    /// The error, once faulted.
    pub error: Option<WorkflowError>,
}

impl RunWatch {
    /// A watch that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds the next event of the run.
    pub fn apply(&mut self, e: &StoredEvent) -> Result<()> {
        let ev = decode(e)?;
        self.state.apply(&ev);
        self.position = Some(e.position);
        Ok(())
    }

    /// The state folded so far.
    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// The run as it stands, when its status or current tasks changed since the last report
    /// (and something was folded since the watch began).
    pub fn change(&mut self) -> Option<RunChange> {
        let position = self.position?;
        let now = (self.state.status_label(), self.state.current_tasks());
        if self.shown.as_ref() == Some(&now) {
            return None;
        }
        let change = RunChange {
            position,
            status: now.0,
            current_tasks: now.1.clone(),
            output: self.state.output.clone(),
            error: self.state.error.clone(),
        };
        self.shown = Some(now);
        Some(change)
    }
}

/// Decodes a stored run event, upcasting old versions.
pub fn decode(e: &StoredEvent) -> Result<RunEvent> {
    RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone()).map_err(|source| {
        Error::CorruptEvent {
            run_id: e.stream.clone(),
            sequence: e.sequence,
            source,
        }
    })
}

/// Where a task activation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStatus {
    /// Started, not ended.
    Running,
    /// Completed.
    Completed,
    /// Faulted.
    Faulted,
    /// Cancelled (a losing fork branch, a cancelled run).
    Cancelled,
}

impl SpanStatus {
    /// The lowercase label shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Running => "running",
            SpanStatus::Completed => "completed",
            SpanStatus::Faulted => "faulted",
            SpanStatus::Cancelled => "cancelled",
        }
    }
}

/// One task activation of a run, from its start to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpan {
    /// Activation id (unique in the run).
    pub id: u64,
    /// The task's JSON pointer, e.g. `/do/0/getPet`.
    pub position: String,
    /// The task's name.
    pub name: String,
    /// The task's kind (`call`, `wait`, `do`, ...).
    pub kind: String,
    /// Where it is.
    pub status: SpanStatus,
    /// When it started.
    pub started_at: Millis,
    /// When it completed or faulted.
    pub finished_at: Option<Millis>,
    /// Attempts: calls scheduled for a `call`, tries for a `try`; 1 otherwise.
    pub attempts: u32,
    /// The last error it met (a failed attempt, a retried or faulting error).
    pub error: Option<WorkflowError>,
}

/// The timeline of a run's tasks, derived from its history.
pub fn timeline<'a>(events: impl IntoIterator<Item = &'a RunEvent>) -> Vec<TaskSpan> {
    let mut spans: Vec<TaskSpan> = Vec::new();
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for e in events {
        let span = |spans: &mut Vec<TaskSpan>, id: &u64| -> Option<usize> {
            index.get(id).copied().filter(|i| *i < spans.len())
        };
        match e {
            RunEvent::TaskStarted {
                id,
                position,
                name,
                kind,
                at,
                ..
            } => {
                index.insert(*id, spans.len());
                spans.push(TaskSpan {
                    id: *id,
                    position: position.clone(),
                    name: name.clone(),
                    kind: kind.clone(),
                    status: SpanStatus::Running,
                    started_at: *at,
                    finished_at: None,
                    attempts: 0,
                    error: None,
                });
            }
            RunEvent::ActivityScheduled { id, .. } => {
                if let Some(i) = span(&mut spans, id) {
                    spans[i].attempts += 1;
                }
            }
            RunEvent::TaskRetried { id, attempt } => {
                if let Some(i) = span(&mut spans, id) {
                    spans[i].attempts = attempt.saturating_add(1);
                }
            }
            RunEvent::ActivityFailed { id, error, .. }
            | RunEvent::RetryScheduled { id, error, .. }
            | RunEvent::ErrorCaught { id, error } => {
                if let Some(i) = span(&mut spans, id) {
                    spans[i].error = Some(error.clone());
                }
            }
            RunEvent::TaskCompleted { id, at, .. } => {
                if let Some(i) = span(&mut spans, id) {
                    spans[i].status = SpanStatus::Completed;
                    spans[i].finished_at = Some(*at);
                }
            }
            RunEvent::TaskFaulted { id, error, at } => {
                if let Some(i) = span(&mut spans, id) {
                    spans[i].status = SpanStatus::Faulted;
                    spans[i].finished_at = Some(*at);
                    spans[i].error = Some(error.clone());
                }
            }
            RunEvent::TaskCancelled { id } => {
                if let Some(i) = span(&mut spans, id) {
                    spans[i].status = SpanStatus::Cancelled;
                }
            }
            _ => {}
        }
    }
    for s in &mut spans {
        s.attempts = s.attempts.max(1);
    }
    spans
}
