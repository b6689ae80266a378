//! A run's state as a fold over its events.
//!
//! [`RunState::apply`] is total and pure: it never fails and never evaluates an expression, so a
//! history that was once accepted always folds to the same state. Decisions (what happens next)
//! live in [`crate::decider`]; this module only records their consequences.
//!
//! A state is also its own snapshot ([`RunState::to_snapshot`], [`SNAPSHOT_FORMAT`]): the fold of
//! a run's first events, so that loading a long run folds only the events after it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::WorkflowError;
use crate::events::{
    ActivityCall, CompensationFailure, DefinitionRef, FrameId, Millis, ParentRef, RunEvent,
    TimerKind,
};
use crate::expr::Vars;
use crate::names::StatusLabel;

mod fold;
mod snapshot;

pub use snapshot::{SnapshotError, SNAPSHOT_FORMAT};

/// The root activation: the workflow itself.
pub const ROOT: FrameId = 0;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Recorded, not started yet.
    #[default]
    Pending,
    /// Executing.
    Running,
    /// Paused by an operator.
    Suspended,
    /// Finished with an output.
    Completed,
    /// Finished with an uncaught error.
    Faulted,
    /// Cancelled.
    Cancelled,
    /// Running the compensations of its completed tasks (docs/compensation.md).
    Compensating,
    /// Ended after running every compensation, none of which faulted.
    Compensated,
    /// Ended after running every compensation, at least one of which faulted.
    #[serde(rename = "compensation_failed")]
    CompensationFailed,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed
                | RunStatus::Faulted
                | RunStatus::Cancelled
                | RunStatus::Compensated
                | RunStatus::CompensationFailed
        )
    }

    /// Lowercase name, as stored in the runs index and printed by the CLI.
    pub fn as_str(self) -> &'static str {
        self.label().as_str()
    }

    /// The label of this status (never `waiting`, which only a run's state can tell).
    pub fn label(self) -> StatusLabel {
        match self {
            RunStatus::Pending => StatusLabel::Pending,
            RunStatus::Running => StatusLabel::Running,
            RunStatus::Suspended => StatusLabel::Suspended,
            RunStatus::Completed => StatusLabel::Completed,
            RunStatus::Faulted => StatusLabel::Faulted,
            RunStatus::Cancelled => StatusLabel::Cancelled,
            RunStatus::Compensating => StatusLabel::Compensating,
            RunStatus::Compensated => StatusLabel::Compensated,
            RunStatus::CompensationFailed => StatusLabel::CompensationFailed,
        }
    }
}

/// A run's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunState {
    /// The run's id.
    pub run_id: String,
    /// The definition it is pinned to (set by `RunStarted`).
    pub definition: Option<DefinitionRef>,
    /// The parent, for a sub-workflow run.
    pub parent: Option<ParentRef>,
    /// The caller's correlation id given at start (set by `RunStarted`). Skipped when absent, so
    /// snapshots of runs without one keep their shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Life-cycle status.
    pub status: RunStatus,
    /// Raw workflow input.
    pub raw_input: Value,
    /// Transformed workflow input, once accepted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub input: Option<Value>,
    /// `$context`.
    pub context: Value,
    /// Output, once completed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub output: Option<Value>,
    /// Error, once faulted.
    pub error: Option<WorkflowError>,
    /// Recorded start time.
    pub started_at: Millis,
    /// Time of the last recorded event that carries one.
    pub updated_at: Millis,
    /// Live activations, by id. `ROOT` is the workflow.
    pub frames: BTreeMap<FrameId, Frame>,
    /// Next activation id to allocate.
    pub next_frame: FrameId,
    /// Next timer id to allocate.
    pub next_timer: u64,
    /// Timers scheduled and not fired (or dropped with their activation).
    pub timers: BTreeMap<u64, Timer>,
    /// Events delivered to the run, in arrival order.
    pub inbox: Vec<InboxEvent>,
    /// `source`/`id` of every delivered event, to drop duplicates.
    pub seen_events: BTreeSet<String>,
    /// Whether the workflow timeout fired.
    pub timed_out: bool,
    /// Number of events folded.
    pub events_applied: u64,
    /// The state just before the first task fault that has not been handled yet, and that task:
    /// where `RunRetried` goes back to. Cleared when a `try` catches or retries the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_origin: Option<(Box<RunState>, FrameId)>,
    /// How many times an operator retried the run.
    #[serde(default)]
    pub retries: u32,
    /// The completed activations that declare a compensation, in order of completion: what a
    /// compensation of the run would undo (docs/compensation.md). Skipped when empty, so
    /// snapshots of runs without any keep their shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensable: Vec<Compensable>,
    /// The compensation of the run, once it began (`RunCompensating`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Compensation>,
}

/// A completed activation that declares a compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compensable {
    /// The completed activation.
    pub task: FrameId,
    /// JSON pointer of its task.
    pub position: String,
    /// The task's name.
    pub name: String,
    /// The name of its compensation in `use.functions`.
    pub compensation: String,
    /// The activation's transformed input.
    pub input: Value,
    /// Its transformed output.
    pub output: Value,
}

/// The progress of a run's compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compensation {
    /// The unhandled error that started it; `None` for a cancel.
    pub error: Option<WorkflowError>,
    /// The operator's reason, for a cancel.
    pub reason: Option<String>,
    /// How many entries of [`RunState::compensable`] have not started yet: the next to run is
    /// the entry just below this index (they run in reverse order of completion).
    pub remaining: usize,
    /// The compensation running now: its activation and the index of its entry.
    pub current: Option<(FrameId, usize)>,
    /// The entries whose compensation completed, by index.
    pub completed: Vec<usize>,
    /// The compensations that faulted, in the order they ran.
    pub failed: Vec<CompensationFailure>,
}

/// Reads a field that is present as `Some`, even when it is `null`: an input or output that is
/// JSON `null` must stay apart from none yet through a snapshot, and serde's `Option` reads `null`
/// as `None`. An absent field is `None` (through `#[serde(default)]`).
fn present_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A pending durable timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// Its activation.
    pub frame: FrameId,
    /// Why it exists.
    pub kind: TimerKind,
    /// When it is due.
    pub due_at: Millis,
}

/// An event delivered to the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEvent {
    /// The CloudEvent.
    pub event: Value,
    /// When it arrived.
    pub at: Millis,
    /// Whether a `listen` task consumed it.
    pub consumed: bool,
}

/// One live task activation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Its id.
    pub id: FrameId,
    /// Its parent (the root's parent is itself).
    pub parent: FrameId,
    /// Its index in the parent's list.
    pub index: usize,
    /// JSON pointer of its task (`""` for the root).
    pub position: String,
    /// Task name.
    pub name: String,
    /// Raw input.
    pub raw_input: Value,
    /// Transformed input.
    pub input: Value,
    /// Recorded start time.
    pub started_at: Millis,
    /// Variables this activation binds for its descendants (`$item`, `$index`, `$error`, ...).
    pub vars: Vars,
    /// Whether its `timeout` fired.
    pub timed_out: bool,
    /// An error reported by a child, waiting to be handled.
    pub pending_error: Option<WorkflowError>,
    /// Kind-specific progress.
    pub kind: FrameKind,
}

/// Progress through a list of tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Seq {
    /// JSON pointer of the list (`/do`, `/do/0/retry/try`, ...).
    pub list: String,
    /// The running child.
    pub current: Option<FrameId>,
    /// Index of the last child started or skipped.
    pub last_index: Option<usize>,
    /// Output of the last child (the next child's raw input).
    pub data: Value,
    /// Flow directive of the last child.
    pub then: Option<String>,
}

/// A branch of a fork.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Branch {
    /// Running as this activation.
    Running(FrameId),
    /// Finished with this output.
    Done(Value),
    /// Cancelled (lost the race).
    Cancelled,
}

/// Phase of a `try`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TryPhase {
    /// Running the `try` list.
    Trying,
    /// Waiting for the retry delay.
    RetryWaiting,
    /// Retry delay elapsed; restart due.
    RetryDue,
    /// Running `catch.do`.
    Catching,
}

/// Kind-specific progress of an activation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FrameKind {
    /// The workflow.
    Root(Seq),
    /// `do`.
    Do(Seq),
    /// `for`: the current iteration, if one started, and its list.
    For {
        /// Index of the current item.
        iteration: Option<usize>,
        /// Progress in the body.
        seq: Seq,
    },
    /// `fork`.
    Fork {
        /// Branches by index.
        branches: Vec<Option<Branch>>,
    },
    /// `try`.
    Try {
        /// Retry attempt (0 for the first run).
        attempt: u32,
        /// Phase.
        phase: TryPhase,
        /// Progress in the `try` list or `catch.do`.
        seq: Seq,
    },
    /// `call`.
    Activity {
        /// The scheduled call, once scheduled (boxed: a call is much larger than any other
        /// kind's progress; serialised the same as unboxed, so snapshots keep their format).
        scheduled: Option<Box<ScheduledActivity>>,
        /// Its result, once recorded.
        result: Option<Result<Value, WorkflowError>>,
    },
    /// `wait`.
    Wait {
        /// Whether its timer fired.
        fired: bool,
    },
    /// `listen`.
    Listen {
        /// Inbox indexes consumed.
        consumed: Vec<usize>,
    },
    /// `run: workflow`.
    Child {
        /// The child run, once requested.
        child_run_id: Option<String>,
        /// Its result.
        result: Option<Result<Value, WorkflowError>>,
    },
    /// Tasks that finish in the step that starts them (`set`, `switch`, `raise`, `emit`, ...).
    Leaf,
}

/// A recorded side effect waiting for its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledActivity {
    /// Attempt.
    pub attempt: u32,
    /// Idempotency key.
    pub idempotency_key: String,
    /// The call.
    pub call: ActivityCall,
}

/// A side effect the runtime must perform (see [`RunState::pending_activities`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingActivity {
    /// The `call` activation.
    pub frame: FrameId,
    /// JSON pointer of the task.
    pub position: String,
    /// Attempt.
    pub attempt: u32,
    /// Idempotency key.
    pub idempotency_key: String,
    /// What to do.
    pub call: ActivityCall,
}

/// A sub-workflow the runtime must start (see [`RunState::pending_children`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingChild {
    /// The `run` activation.
    pub frame: FrameId,
    /// The child run's id.
    pub child_run_id: String,
}

impl Seq {
    /// A list about to start with `data` as the first task's raw input.
    pub fn new(list: String, data: Value) -> Self {
        Seq {
            list,
            current: None,
            last_index: None,
            data,
            then: None,
        }
    }
}

impl Frame {
    /// The sequence this activation runs, if it runs one.
    pub fn seq(&self) -> Option<&Seq> {
        match &self.kind {
            FrameKind::Root(s) | FrameKind::Do(s) => Some(s),
            FrameKind::For { seq, .. } | FrameKind::Try { seq, .. } => Some(seq),
            _ => None,
        }
    }

    fn seq_mut(&mut self) -> Option<&mut Seq> {
        match &mut self.kind {
            FrameKind::Root(s) | FrameKind::Do(s) => Some(s),
            FrameKind::For { seq, .. } | FrameKind::Try { seq, .. } => Some(seq),
            _ => None,
        }
    }
}

impl RunState {
    /// The raw input a task started under `parent` receives: the data its list carries (the
    /// previous task's output, or the list's input for the first task), or the input of a fork
    /// for each of its branches. A `TaskStarted` without `raw_input` means this value.
    pub fn passed_input(&self, parent: FrameId) -> Value {
        self.passed_input_ref(parent)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// [`RunState::passed_input`] without a copy; `None` when `parent` passes nothing.
    pub fn passed_input_ref(&self, parent: FrameId) -> Option<&Value> {
        let p = self.frames.get(&parent)?;
        match (&p.kind, p.seq()) {
            (FrameKind::Fork { .. }, _) => Some(&p.input),
            (_, Some(seq)) => Some(&seq.data),
            _ => None,
        }
    }

    /// `event` with every value it leaves out written in full, as this state (the one just
    /// before the event) reads it: two events mean the same when their explicit forms are equal,
    /// whichever version wrote them.
    pub fn explicit(&self, event: &RunEvent) -> RunEvent {
        match event {
            RunEvent::WorkflowInputAccepted { input } => RunEvent::WorkflowInputAccepted {
                input: Some(input.clone().unwrap_or_else(|| self.raw_input.clone())),
            },
            RunEvent::TaskStarted {
                id,
                parent,
                index,
                position,
                name,
                kind,
                raw_input,
                input,
                at,
            } => {
                let raw = raw_input
                    .clone()
                    .unwrap_or_else(|| self.passed_input(*parent));
                RunEvent::TaskStarted {
                    id: *id,
                    parent: *parent,
                    index: *index,
                    position: position.clone(),
                    name: name.clone(),
                    kind: kind.clone(),
                    input: Some(input.clone().unwrap_or_else(|| raw.clone())),
                    raw_input: Some(raw),
                    at: *at,
                }
            }
            other => other.clone(),
        }
    }

    /// Side effects scheduled and not yet answered: what a worker must (re-)execute.
    pub fn pending_activities(&self) -> Vec<PendingActivity> {
        if self.status.is_terminal() {
            return Vec::new();
        }
        self.frames
            .values()
            .filter_map(|f| match &f.kind {
                FrameKind::Activity {
                    scheduled: Some(s),
                    result: None,
                } => Some(PendingActivity {
                    frame: f.id,
                    position: f.position.clone(),
                    attempt: s.attempt,
                    idempotency_key: s.idempotency_key.clone(),
                    call: s.call.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Sub-workflow runs requested and not yet finished.
    pub fn pending_children(&self) -> Vec<PendingChild> {
        if self.status.is_terminal() {
            return Vec::new();
        }
        self.frames
            .values()
            .filter_map(|f| match &f.kind {
                FrameKind::Child {
                    child_run_id: Some(c),
                    result: None,
                } => Some(PendingChild {
                    frame: f.id,
                    child_run_id: c.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The earliest pending timer, if any.
    pub fn next_timer(&self) -> Option<(u64, Millis)> {
        self.timers
            .iter()
            .map(|(id, t)| (*id, t.due_at))
            .min_by_key(|(_, d)| *d)
    }

    /// Timers due at `now`.
    pub fn due_timers(&self, now: Millis) -> Vec<u64> {
        self.timers
            .iter()
            .filter(|(_, t)| t.due_at <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A status for listings: `waiting` when nothing can progress until a timer, an event or a
    /// sub-workflow arrives; otherwise the life-cycle status.
    pub fn status_label(&self) -> &'static str {
        self.label().as_str()
    }

    /// [`RunState::status_label`] as a [`StatusLabel`].
    pub fn label(&self) -> StatusLabel {
        if self.status == RunStatus::Running && self.only_waiting() {
            return StatusLabel::Waiting;
        }
        self.status.label()
    }

    /// Whether every live activation waits for something from outside or for a timer (a
    /// compensating run that does so keeps its label, but needs no worker until then).
    fn only_waiting(&self) -> bool {
        !self.frames.is_empty()
            && self.pending_activities().is_empty()
            && self.frames.values().any(|f| {
                matches!(
                    f.kind,
                    FrameKind::Wait { .. } | FrameKind::Listen { .. } | FrameKind::Child { .. }
                ) || matches!(
                    f.kind,
                    FrameKind::Try {
                        phase: TryPhase::RetryWaiting,
                        ..
                    }
                )
            })
    }

    /// When the run next needs a worker (ms since epoch), for the scheduling of runs across
    /// workers: `updated_at` (already due) when it can progress now (a call to make, a
    /// sub-workflow to start or watch, a decision to take), the earliest timer when it only
    /// waits for timers, `None` when no worker can move it (ended, suspended, or waiting for an
    /// event from outside).
    ///
    /// A suspended run keeps needing its worker while a call or sub-workflow it started is
    /// still out, so that the worker records the result (nothing new starts until it resumes).
    pub fn wake_at(&self) -> Option<Millis> {
        if self.status.is_terminal() {
            return None;
        }
        let busy = self.frames.values().any(|f| {
            matches!(
                &f.kind,
                FrameKind::Activity {
                    scheduled: Some(_),
                    result: None,
                } | FrameKind::Child { result: None, .. }
            )
        });
        if self.status == RunStatus::Suspended {
            return busy.then_some(self.updated_at);
        }
        if busy || !self.only_waiting() {
            return Some(self.updated_at);
        }
        self.next_timer().map(|(_, due)| due)
    }

    /// JSON pointers of the tasks running now (leaves of the activation tree).
    pub fn current_tasks(&self) -> Vec<String> {
        let parents: BTreeSet<FrameId> = self
            .frames
            .values()
            .filter(|f| f.id != ROOT)
            .map(|f| f.parent)
            .collect();
        self.frames
            .values()
            .filter(|f| f.id != ROOT && !parents.contains(&f.id))
            .map(|f| f.position.clone())
            .collect()
    }
}

/// Deduplication key of a CloudEvent: `source` + `id`, when it has an id.
pub fn event_key(event: &Value) -> Option<String> {
    let id = event.get("id")?.as_str()?;
    let source = event.get("source").and_then(Value::as_str).unwrap_or("");
    Some(format!("{source}\u{1f}{id}"))
}
