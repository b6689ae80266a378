//! The spec's lifecycle CloudEvents (`io.serverlessworkflow.task.started.v1`, ...) derived from
//! run events, for `cairn run --events` and for subscribers that speak the spec's vocabulary.
//!
//! They are a projection: nothing here is stored, and any history can be turned into them again.

use serde_json::{json, Value};

use crate::events::{FrameId, RunEvent};
use crate::state::RunState;
use crate::time::iso8601;

const PREFIX: &str = "io.serverlessworkflow.";

/// Turns run events into lifecycle CloudEvents. It keeps the state it needs (which activation
/// is which task), so feed it every event of a run in order.
#[derive(Debug, Default, Clone)]
pub struct LifecycleProjector {
    state: RunState,
    seq: u64,
}

impl LifecycleProjector {
    /// A projector for one run.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lifecycle events that `event` causes (often none).
    pub fn project(&mut self, event: &RunEvent) -> Vec<Value> {
        let before = self.state.clone();
        self.state.apply(event);
        let run = self.state.run_id.clone();
        let workflow = json!({ "id": run });
        let mut out = Vec::new();
        let mut push = |kind: &str, at: i64, data: Value| {
            self.seq += 1;
            out.push(json!({
                "specversion": "1.0",
                "id": format!("{run}-{}", self.seq),
                "source": format!("cairn://runs/{run}"),
                "type": format!("{PREFIX}{kind}.v1"),
                "time": iso8601(at),
                "datacontenttype": "application/json",
                "data": data,
            }));
        };
        let task = |id: &FrameId| -> String {
            before
                .frames
                .get(id)
                .map(|f| f.position.clone())
                .unwrap_or_default()
        };
        match event {
            RunEvent::RunStarted {
                definition,
                input,
                at,
                ..
            } => push(
                "workflow.started",
                *at,
                json!({ "name": run, "definition": definition, "input": input, "startedAt": iso8601(*at) }),
            ),
            RunEvent::TaskStarted {
                id, position, at, ..
            } => {
                // From the state: the event may leave the input out (events v2).
                let input = self
                    .state
                    .frames
                    .get(id)
                    .map(|f| f.input.clone())
                    .unwrap_or(Value::Null);
                push(
                    "task.started",
                    *at,
                    json!({ "workflow": workflow, "task": position, "input": input, "startedAt": iso8601(*at) }),
                )
            }
            RunEvent::TaskCompleted { id, output, at, .. } => push(
                "task.completed",
                *at,
                json!({ "workflow": workflow, "task": task(id), "output": output, "completedAt": iso8601(*at) }),
            ),
            RunEvent::TaskFaulted { id, error, at } => push(
                "task.faulted",
                *at,
                json!({ "workflow": workflow, "task": task(id), "error": error, "faultedAt": iso8601(*at) }),
            ),
            RunEvent::TaskCancelled { id } => push(
                "task.cancelled",
                self.state.updated_at,
                json!({ "workflow": workflow, "task": task(id) }),
            ),
            RunEvent::TaskRetried { id, attempt } => push(
                "task.retried",
                self.state.updated_at,
                json!({ "workflow": workflow, "task": task(id), "attempt": attempt }),
            ),
            RunEvent::RunSuspended { at } => push(
                "workflow.suspended",
                *at,
                json!({ "name": run, "suspendedAt": iso8601(*at) }),
            ),
            RunEvent::RunResumed { at } => push(
                "workflow.resumed",
                *at,
                json!({ "name": run, "resumedAt": iso8601(*at) }),
            ),
            RunEvent::RunCompleted { output, at } => push(
                "workflow.completed",
                *at,
                json!({ "name": run, "output": output, "completedAt": iso8601(*at) }),
            ),
            RunEvent::RunFaulted { error, at, .. } => push(
                "workflow.faulted",
                *at,
                json!({ "name": run, "error": error, "faultedAt": iso8601(*at) }),
            ),
            RunEvent::RunCancelled { at, reason } => push(
                "workflow.cancelled",
                *at,
                json!({ "name": run, "reason": reason, "cancelledAt": iso8601(*at) }),
            ),
            _ => {}
        }
        out
    }
}
