//! The events of a run's stream. They are the truth: a run's state is a fold over them
//! ([`crate::state::RunState::apply`]).
//!
//! Events are a wire format. Each has a stable type name ([`RunEvent::event_type`]) and a schema
//! version ([`EVENT_VERSION`]); a change that alters the meaning or shape of a payload bumps the
//! version and adds an upcaster ([`upcast`]), so every event ever written stays readable.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::WorkflowError;
use crate::names::event;

/// Current schema version of every run event type.
///
/// - `1`: the first release.
/// - `2`: a run's input is stored once. `WorkflowInputAccepted.input` is absent when it is the
///   run's input unchanged, `TaskStarted.raw_input` when it is what the parent passes
///   ([`crate::state::RunState::passed_input`]) and `TaskStarted.input` when it equals the raw
///   input. A version 1 payload (always explicit) is a valid version 2 payload.
pub const EVENT_VERSION: &str = "2";

/// Milliseconds since the Unix epoch, as recorded by the runtime. `core` never reads the clock;
/// times arrive in commands and are kept in events.
pub type Millis = i64;

/// Identifier of a task activation within a run. Allocated in order by the decider, so replays
/// allocate the same ids. `0` is the workflow itself.
pub type FrameId = u64;

/// Which definition a run executes: pinned at start, changed only by an operator's
/// [`RunEvent::RunMigrated`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DefinitionRef {
    /// `document.namespace`.
    pub namespace: String,
    /// `document.name`.
    pub name: String,
    /// `document.version`.
    pub version: String,
    /// SHA-256 (hex) of the definition's canonical JSON; the content address of the source.
    pub hash: String,
}

/// A resolved side effect, recorded before it is performed. Everything an executor needs is here,
/// so performing it again after a crash sends exactly the same request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ActivityCall {
    /// An HTTP request.
    Http(HttpRequest),
    /// An OpenAPI operation (`call: openapi`): the connector fetches the document and builds
    /// the request from the operation and the parameters.
    OpenApi(OpenApiRequest),
    /// A function registered by the embedding application (`call: NAME`).
    Function {
        /// The registered name.
        name: String,
        /// The evaluated `with` arguments.
        arguments: Value,
        /// The task's transformed input.
        input: Value,
        /// The seal of the secret placeholders in this call's arguments, when they hold any
        /// ([`crate::sealed`]): only placeholders carrying it are revealed when the call is made.
        /// Absent otherwise, as in every call recorded before the field existed, so the event's
        /// version stays "1".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seal: Option<String>,
    },
}

/// A resolved `call: openapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpenApiRequest {
    /// Absolute URI of the OpenAPI (or Swagger 2.0) document.
    pub document: String,
    /// The operation to call.
    pub operation_id: String,
    /// Evaluated parameters, by name (path, query, header parameters; `body` for the body).
    #[serde(default)]
    pub parameters: Value,
    /// `content`, `response` or `raw`.
    pub output: crate::dsl::HttpOutputFormat,
    /// Whether redirects are followed.
    #[serde(default)]
    pub redirect: bool,
    /// Authentication of the operation's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
    /// The seal of the secret placeholders in this call's arguments, when they hold any
    /// ([`crate::sealed`]): only placeholders carrying it are revealed when the call is made.
    /// Absent otherwise, as in every call recorded before the field existed, so the event's
    /// version stays "1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

/// A fully resolved HTTP request of `call: http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HttpRequest {
    /// Upper-case method.
    pub method: String,
    /// Absolute URI, templates expanded.
    pub uri: String,
    /// Headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Query parameters (appended to the URI).
    #[serde(default)]
    pub query: Vec<(String, String)>,
    /// JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// `content`, `response` or `raw`.
    pub output: crate::dsl::HttpOutputFormat,
    /// Whether redirects are followed (otherwise a 3xx is an error).
    #[serde(default)]
    pub redirect: bool,
    /// Authentication to apply when sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
    /// The seal of the secret placeholders in this call's arguments, when they hold any
    /// ([`crate::sealed`]): only placeholders carrying it are revealed when the call is made.
    /// Absent otherwise, as in every call recorded before the field existed, so the event's
    /// version stays "1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

/// Authentication of an HTTP request. Secrets are recorded by name (`use:`) or as placeholders
/// ([`crate::sealed`]) and resolved by the executor, so their values never enter the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "scheme", rename_all = "camelCase")]
pub enum HttpAuth {
    /// HTTP basic with literal credentials.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// Bearer with a literal token.
    Bearer {
        /// Token.
        token: String,
    },
    /// HTTP basic, credentials from the named secret (`username`, `password`).
    BasicSecret {
        /// Secret name.
        secret: String,
    },
    /// Bearer, token from the named secret (`token`).
    BearerSecret {
        /// Secret name.
        secret: String,
    },
}

/// Why a timer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TimerKind {
    /// A `wait` task.
    Wait,
    /// The delay before a retry of a `try` block.
    Retry,
    /// A task's `timeout`.
    TaskTimeout,
    /// The workflow's `timeout`.
    WorkflowTimeout,
}

/// One event of a run's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
#[non_exhaustive]
pub enum RunEvent {
    /// The run was created.
    RunStarted {
        /// The run's id.
        run_id: String,
        /// The definition it is pinned to.
        definition: DefinitionRef,
        /// The raw input.
        input: Value,
        /// Recorded start time.
        at: Millis,
        /// The parent run and task, for a sub-workflow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
        /// The caller's correlation id (1 to 256 characters, no control characters), to find
        /// the run by later. Absent when the run was started without one, as in every event
        /// written before the field existed, so the event's version stays "1".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// The workflow input was transformed (`input.from`) and the context initialised.
    WorkflowInputAccepted {
        /// Transformed input; absent (`None`) when it is the run's input (`RunStarted.input`)
        /// unchanged, so that the input is stored once (version 2).
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        input: Option<Value>,
    },
    /// A task activation began.
    TaskStarted {
        /// The new activation.
        id: FrameId,
        /// Its parent activation.
        parent: FrameId,
        /// Index of the task in its parent's list (branch index under a fork).
        index: usize,
        /// The task's JSON pointer, e.g. `/do/0/getPet`.
        position: String,
        /// The task's name.
        name: String,
        /// The task's kind keyword (`call`, `do`, `for`, ...).
        kind: String,
        /// Raw input; absent (`None`) when it is what the parent passes
        /// ([`crate::state::RunState::passed_input`]), so that a value handed down is not stored
        /// again with every task (version 2).
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        raw_input: Option<Value>,
        /// Transformed input (`input.from`); absent (`None`) when it equals the raw input.
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        input: Option<Value>,
        /// Recorded time.
        at: Millis,
    },
    /// A task was skipped because its `if` was false.
    TaskSkipped {
        /// Its parent activation.
        parent: FrameId,
        /// Index in the parent's list.
        index: usize,
        /// JSON pointer.
        position: String,
    },
    /// A `for` task moved to its next item.
    IterationStarted {
        /// The `for` activation.
        id: FrameId,
        /// The item's index.
        index: usize,
        /// The item.
        item: Value,
    },
    /// A side effect is to be performed.
    ActivityScheduled {
        /// The `call` activation.
        id: FrameId,
        /// The attempt (retry count of the nearest `try`, starting at 0).
        attempt: u32,
        /// Sent as the `Idempotency-Key` header; stable across re-executions after a crash.
        idempotency_key: String,
        /// What to do.
        call: ActivityCall,
    },
    /// A side effect finished.
    ActivityCompleted {
        /// The `call` activation.
        id: FrameId,
        /// Its result.
        result: Value,
        /// Recorded time.
        at: Millis,
    },
    /// A side effect failed.
    ActivityFailed {
        /// The `call` activation.
        id: FrameId,
        /// The error.
        error: WorkflowError,
        /// Recorded time.
        at: Millis,
    },
    /// A durable timer was set.
    TimerScheduled {
        /// Timer id (unique in the run).
        timer: u64,
        /// The activation it belongs to.
        frame: FrameId,
        /// Why.
        kind: TimerKind,
        /// When it is due.
        due_at: Millis,
    },
    /// A durable timer fired.
    TimerFired {
        /// Timer id.
        timer: u64,
        /// Recorded time.
        at: Millis,
    },
    /// An event was delivered to the run from outside (`cairn signal`).
    EventReceived {
        /// The CloudEvent.
        event: Value,
        /// Recorded time.
        at: Millis,
    },
    /// A `listen` task consumed events from the run's inbox.
    EventsConsumed {
        /// The `listen` activation.
        id: FrameId,
        /// Indexes into the inbox.
        indexes: Vec<usize>,
    },
    /// An `emit` task published an event.
    EventEmitted {
        /// The `emit` activation.
        id: FrameId,
        /// The CloudEvent, with `id`, `time` and `specversion` filled in.
        event: Value,
    },
    /// A `try` block failed with an error the catch retries: a retry is scheduled.
    RetryScheduled {
        /// The `try` activation.
        id: FrameId,
        /// The attempt about to start (1 for the first retry).
        attempt: u32,
        /// The delay chosen, jitter included.
        delay_ms: u64,
        /// The error being retried.
        error: WorkflowError,
    },
    /// A `try` block restarted after its retry delay.
    TaskRetried {
        /// The `try` activation.
        id: FrameId,
        /// The attempt now running.
        attempt: u32,
    },
    /// A `try` caught an error and runs its `catch.do`.
    ErrorCaught {
        /// The `try` activation.
        id: FrameId,
        /// The caught error.
        error: WorkflowError,
    },
    /// A sub-workflow run was requested.
    ChildRunRequested {
        /// The `run: workflow` activation.
        id: FrameId,
        /// The child run's id.
        child_run_id: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Version, or `latest`.
        version: String,
        /// Input.
        input: Value,
    },
    /// A sub-workflow run ended.
    ChildRunFinished {
        /// The `run: workflow` activation.
        id: FrameId,
        /// Output, or the error it faulted with.
        result: Result<Value, WorkflowError>,
    },
    /// A task activation completed.
    TaskCompleted {
        /// The activation.
        id: FrameId,
        /// Transformed output (`output.as`).
        output: Value,
        /// The new `$context`, when the task exported one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<Value>,
        /// The flow directive taken (`then`, or the matching switch case).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        then: Option<String>,
        /// The compensation this activation declares (`metadata.cairn.compensate`, the name of a
        /// task of `use.functions`; docs/compensation.md): the run keeps the activation's input
        /// and output to run it with, should the run be compensated. Absent when it declares
        /// none, as in every event written before the extension, so the event's version stays.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compensation: Option<String>,
        /// Recorded time.
        at: Millis,
    },
    /// A task activation faulted.
    TaskFaulted {
        /// The activation.
        id: FrameId,
        /// The error.
        error: WorkflowError,
        /// Recorded time.
        at: Millis,
    },
    /// A task activation was cancelled (a losing fork branch, a cancelled run).
    TaskCancelled {
        /// The activation.
        id: FrameId,
    },
    /// The run was suspended by an operator.
    RunSuspended {
        /// Recorded time.
        at: Millis,
    },
    /// The run was resumed by an operator.
    RunResumed {
        /// Recorded time.
        at: Millis,
    },
    /// An operator retried a faulted run: it goes on from the task whose error faulted it, which
    /// starts again from scratch (a new activation, so new idempotency keys); or, after a
    /// `resumable` fault, from where it stood (calls in flight are made again under their keys).
    RunRetried {
        /// Recorded time.
        at: Millis,
    },
    /// The run completed.
    RunCompleted {
        /// The workflow output (`output.as` applied).
        output: Value,
        /// Recorded time.
        at: Millis,
    },
    /// The run faulted.
    RunFaulted {
        /// The uncaught error.
        error: WorkflowError,
        /// Recorded time.
        at: Millis,
        /// The fault came from outside the workflow's logic (a poison run, a panic in the
        /// runtime), not from a task: a retry resumes the run where it stood.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumable: bool,
    },
    /// The run was cancelled.
    RunCancelled {
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Recorded time.
        at: Millis,
    },

    // ----- Compensation (a Cairn extension of the DSL, docs/compensation.md) ---------------
    /// The run stops what it was doing and undoes the side effects of its completed tasks:
    /// the compensations they declared run one at a time, in reverse order of completion.
    /// Decided instead of `RunFaulted` when a run with compensations to run faults without a
    /// handler, and recorded by `cancel --compensate`.
    RunCompensating {
        /// The unhandled error that faulted the run; absent when an operator cancelled it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<WorkflowError>,
        /// The operator's reason, for a cancel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Recorded time.
        at: Millis,
    },
    /// One compensation began: activation `id` (its `TaskStarted` follows) runs the task of
    /// `use.functions` named `compensation` for the completed activation `task`.
    CompensationStarted {
        /// The new activation that runs the compensation.
        id: FrameId,
        /// The completed activation it compensates.
        task: FrameId,
        /// The JSON pointer of the compensated task.
        position: String,
        /// The name of the compensation in `use.functions`.
        compensation: String,
        /// Recorded time.
        at: Millis,
    },
    /// Every compensation has run: the run ended, compensated (`failed` empty) or with the
    /// compensations that faulted.
    RunCompensated {
        /// The compensations that faulted, in the order they ran.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failed: Vec<CompensationFailure>,
        /// Recorded time.
        at: Millis,
    },
    /// An operator moved the unfinished run onto another version of its definition (`cairn
    /// deploy --migrate`), after a replay showed that version decides everything the run
    /// recorded the same way. From here on the run is decided by `to_hash`; what came before
    /// was decided by `from_hash`, which is what a replay uses for it.
    RunMigrated {
        /// Content hash of the version the run was on.
        from_hash: String,
        /// Content hash of the version it is on from now.
        to_hash: String,
        /// `document.version` of the new version.
        to_version: String,
        /// Recorded time.
        at: Millis,
    },
}

/// A compensation that faulted ([`RunEvent::RunCompensated`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompensationFailure {
    /// The completed activation it was to compensate.
    pub task: FrameId,
    /// The JSON pointer of the compensated task.
    pub position: String,
    /// The name of the compensation in `use.functions`.
    pub compensation: String,
    /// The error it faulted with.
    pub error: WorkflowError,
}

/// A field that is present is `Some`, even when it holds `null` (which a plain `Option` would
/// read as absent): an elided value and a recorded `null` mean different things.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The most characters a correlation id may have.
pub const MAX_CORRELATION_ID_CHARS: usize = 256;

/// Checks a caller's correlation id: 1 to [`MAX_CORRELATION_ID_CHARS`] characters, none of them
/// a control character (it is printed in lists and logs, where those would garble the line).
/// The error says what is wrong, without repeating the value.
pub fn check_correlation_id(id: &str) -> Result<(), String> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_CORRELATION_ID_CHARS {
        return Err(format!(
            "a correlation id must have 1 to {MAX_CORRELATION_ID_CHARS} characters, not {chars}"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("a correlation id must not contain control characters".to_string());
    }
    Ok(())
}

/// The parent of a sub-workflow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ParentRef {
    /// Parent run id.
    pub run_id: String,
    /// The parent's `run: workflow` activation.
    pub frame: FrameId,
}

impl RunEvent {
    /// Stable type name, stored beside the payload (spelled in [`crate::names::event`]).
    pub fn event_type(&self) -> &'static str {
        match self {
            RunEvent::RunStarted { .. } => event::RUN_STARTED,
            RunEvent::WorkflowInputAccepted { .. } => event::WORKFLOW_INPUT_ACCEPTED,
            RunEvent::TaskStarted { .. } => event::TASK_STARTED,
            RunEvent::TaskSkipped { .. } => event::TASK_SKIPPED,
            RunEvent::IterationStarted { .. } => event::ITERATION_STARTED,
            RunEvent::ActivityScheduled { .. } => event::ACTIVITY_SCHEDULED,
            RunEvent::ActivityCompleted { .. } => event::ACTIVITY_COMPLETED,
            RunEvent::ActivityFailed { .. } => event::ACTIVITY_FAILED,
            RunEvent::TimerScheduled { .. } => event::TIMER_SCHEDULED,
            RunEvent::TimerFired { .. } => event::TIMER_FIRED,
            RunEvent::EventReceived { .. } => event::EVENT_RECEIVED,
            RunEvent::EventsConsumed { .. } => event::EVENTS_CONSUMED,
            RunEvent::EventEmitted { .. } => event::EVENT_EMITTED,
            RunEvent::RetryScheduled { .. } => event::RETRY_SCHEDULED,
            RunEvent::TaskRetried { .. } => event::TASK_RETRIED,
            RunEvent::ErrorCaught { .. } => event::ERROR_CAUGHT,
            RunEvent::ChildRunRequested { .. } => event::CHILD_RUN_REQUESTED,
            RunEvent::ChildRunFinished { .. } => event::CHILD_RUN_FINISHED,
            RunEvent::TaskCompleted { .. } => event::TASK_COMPLETED,
            RunEvent::TaskFaulted { .. } => event::TASK_FAULTED,
            RunEvent::TaskCancelled { .. } => event::TASK_CANCELLED,
            RunEvent::RunSuspended { .. } => event::RUN_SUSPENDED,
            RunEvent::RunResumed { .. } => event::RUN_RESUMED,
            RunEvent::RunRetried { .. } => event::RUN_RETRIED,
            RunEvent::RunCompleted { .. } => event::RUN_COMPLETED,
            RunEvent::RunFaulted { .. } => event::RUN_FAULTED,
            RunEvent::RunCancelled { .. } => event::RUN_CANCELLED,
            RunEvent::RunCompensating { .. } => event::RUN_COMPENSATING,
            RunEvent::CompensationStarted { .. } => event::COMPENSATION_STARTED,
            RunEvent::RunCompensated { .. } => event::RUN_COMPENSATED,
            RunEvent::RunMigrated { .. } => event::RUN_MIGRATED,
        }
    }

    /// The payload alone (without the type tag), as stored in the `payload` column.
    pub fn payload(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut o)) => o.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Rebuilds an event from its stored type, version and payload, upcasting old versions.
    pub fn from_stored(
        event_type: &str,
        version: &str,
        payload: Value,
    ) -> Result<RunEvent, EventDecodeError> {
        let payload = upcast(event_type, version, payload)?;
        let mut o = serde_json::Map::new();
        o.insert("type".into(), Value::String(event_type.to_string()));
        o.insert("data".into(), payload);
        serde_json::from_value(Value::Object(o)).map_err(|e| EventDecodeError::Payload {
            event_type: event_type.to_string(),
            version: version.to_string(),
            message: e.to_string(),
        })
    }

    /// Whether this event ends the run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunEvent::RunCompleted { .. }
                | RunEvent::RunFaulted { .. }
                | RunEvent::RunCancelled { .. }
                | RunEvent::RunCompensated { .. }
        )
    }
}

/// A stored event could not be read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EventDecodeError {
    /// The version is newer than this build knows.
    #[error("event {event_type} has version {version}, which this build of cairn does not know")]
    UnknownVersion {
        /// Type name.
        event_type: String,
        /// Version found.
        version: String,
    },
    /// The payload does not match the type.
    #[error("event {event_type} v{version} has a malformed payload: {message}")]
    Payload {
        /// Type name.
        event_type: String,
        /// Version.
        version: String,
        /// What serde said.
        message: String,
    },
}

/// Brings a stored payload of any released version up to [`EVENT_VERSION`].
///
/// Version 2 only made some values optional (see [`EVENT_VERSION`]): a version 1 payload, where
/// they are always present, reads as it is.
pub fn upcast(event_type: &str, version: &str, payload: Value) -> Result<Value, EventDecodeError> {
    match version {
        EVENT_VERSION | "1" => Ok(payload),
        other => Err(EventDecodeError::UnknownVersion {
            event_type: event_type.to_string(),
            version: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic on failure

    use serde_json::json;

    use super::*;
    use crate::state::RunState;

    fn started(correlation_id: Option<&str>) -> RunEvent {
        RunEvent::RunStarted {
            run_id: "r1".into(),
            definition: DefinitionRef {
                namespace: "t".into(),
                name: "w".into(),
                version: "1.0.0".into(),
                hash: "h".into(),
            },
            input: json!({}),
            at: 1,
            parent: None,
            correlation_id: correlation_id.map(str::to_string),
        }
    }

    #[test]
    fn correlation_id_is_optional_on_the_wire_and_folded() {
        // Without one the payload has no such key, exactly as before the field existed.
        let plain = started(None).payload();
        assert!(plain.get("correlation_id").is_none(), "{plain}");
        let old = RunEvent::from_stored("RunStarted", EVENT_VERSION, plain).unwrap();
        assert_eq!(old, started(None));
        // With one, it survives the store and lands in the state.
        let with = started(Some("order-7")).payload();
        assert_eq!(with["correlation_id"], json!("order-7"));
        let back = RunEvent::from_stored("RunStarted", EVENT_VERSION, with).unwrap();
        let state = RunState::from_events([&back]);
        assert_eq!(state.correlation_id.as_deref(), Some("order-7"));
        assert_eq!(RunState::from_events([&started(None)]).correlation_id, None);
    }

    #[test]
    fn correlation_ids_are_checked() {
        assert!(check_correlation_id("order-7").is_ok());
        assert!(check_correlation_id("ünïcödé ✓").is_ok());
        assert!(check_correlation_id(&"é".repeat(MAX_CORRELATION_ID_CHARS)).is_ok());
        assert!(check_correlation_id("").is_err());
        assert!(check_correlation_id(&"x".repeat(MAX_CORRELATION_ID_CHARS + 1)).is_err());
        assert!(check_correlation_id("a\nb").is_err());
        assert!(check_correlation_id("a\u{7f}b").is_err());
    }
}
