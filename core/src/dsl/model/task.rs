//! Tasks: the list of named tasks, the properties every task has, and each kind but `call`
//! (`do`, `fork`, `emit`, `for`, `listen`, `raise`, `run`, `set`, `switch`, `try`, `wait`).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::ProcessReturnType;
use super::serde_glue::{some, string_or_object};
use super::*;

/// A flow directive: what runs after a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowDirective {
    /// Go on with the next task (the default).
    Continue,
    /// Leave the current composite task.
    Exit,
    /// End the workflow.
    End,
    /// Jump to the named task of the same list.
    Goto(String),
}

/// An ordered list of named tasks (`- name: task`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskList(pub Vec<NamedTask>);

/// A task with its name.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTask {
    /// The task's name, unique within its list.
    pub name: String,
    /// The task.
    pub task: Task,
}

/// A task: the properties every task has, and what kind of task it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Properties shared by every task kind.
    pub base: TaskBase,
    /// The kind-specific part.
    pub kind: TaskKind,
}

/// Properties shared by every task kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBase {
    /// Run the task only when this runtime expression is true (`${ }` optional).
    #[serde(default, deserialize_with = "some", rename = "if")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_: Option<String>,
    /// The task's input handling.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// The task's output handling.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// What the task writes into `$context`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
    /// The task's timeout.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutOrRef>,
    /// What runs after the task.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then: Option<FlowDirective>,
    /// Free-form metadata.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
}

/// The metadata key of Cairn's compensation extension (docs/compensation.md): on a task, the
/// name of the task of `use.functions` that undoes its side effects.
pub const COMPENSATE_KEY: &str = "cairn.compensate";

impl TaskBase {
    /// The compensation this task declares (`metadata."cairn.compensate"`), when it names one.
    pub fn compensation(&self) -> Option<&str> {
        self.metadata.as_ref()?.get(COMPENSATE_KEY)?.as_str()
    }
}

/// The kind-specific part of a task.
#[derive(Debug, Clone, PartialEq)]
// A definition is decoded once and kept; boxing would only make it harder to match on.
#[allow(clippy::large_enum_variant)]
pub enum TaskKind {
    /// `call`.
    Call(CallTask),
    /// `do`.
    Do(TaskList),
    /// `fork`.
    Fork(Fork),
    /// `emit`.
    Emit(Emit),
    /// `for`.
    For(ForTask),
    /// `listen`.
    Listen(Listen),
    /// `raise`.
    Raise(Raise),
    /// `run`.
    Run(RunTask),
    /// `set`: an object of values/expressions, or one expression.
    Set(Value),
    /// `switch`.
    Switch(Vec<SwitchCase>),
    /// `try`.
    Try(TryTask),
    /// `wait`.
    Wait(Duration),
}

impl TaskKind {
    /// The DSL keyword of this kind of task, as used in messages and lifecycle events.
    pub fn keyword(&self) -> &'static str {
        match self {
            TaskKind::Call(_) => "call",
            TaskKind::Do(_) => "do",
            TaskKind::Fork(_) => "fork",
            TaskKind::Emit(_) => "emit",
            TaskKind::For(_) => "for",
            TaskKind::Listen(_) => "listen",
            TaskKind::Raise(_) => "raise",
            TaskKind::Run(_) => "run",
            TaskKind::Set(_) => "set",
            TaskKind::Switch(_) => "switch",
            TaskKind::Try(_) => "try",
            TaskKind::Wait(_) => "wait",
        }
    }
}

/// `fork`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fork {
    /// Branches run concurrently.
    pub branches: TaskList,
    /// Whether the first branch to finish wins and the others are cancelled.
    #[serde(default)]
    pub compete: bool,
}

/// `emit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Emit {
    /// The event to emit.
    pub event: EmitEvent,
}

/// The event of an `emit` task. Stricter than the spec's schema: `with` is required and no other
/// key is allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitEvent {
    /// CloudEvent attributes (`source` and `type` required) and `data`.
    pub with: Object,
}

/// `for` (with its `while` and `do`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForTask {
    /// The iteration.
    #[serde(rename = "for")]
    pub for_: ForSpec,
    /// Keep iterating while this is true.
    #[serde(default, deserialize_with = "some", rename = "while")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub while_: Option<String>,
    /// The body.
    #[serde(rename = "do")]
    pub do_: TaskList,
}

/// The `for` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForSpec {
    /// Variable name of the item (default `item`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,
    /// The collection (a runtime expression, `${ }` optional).
    #[serde(rename = "in")]
    pub in_: String,
    /// Variable name of the index (default `index`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `listen` (with its optional `foreach`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// What to listen to.
    pub listen: ListenSpec,
    /// Iterate over events as they arrive (parsed; not supported yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreach: Option<SubscriptionIterator>,
}

/// The `listen` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenSpec {
    /// The consumption strategy.
    pub to: EventConsumptionStrategy,
    /// `data` (default), `envelope` or `raw`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<ListenRead>,
}

/// How a listen task reads events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListenRead {
    /// The event's data.
    Data,
    /// The whole CloudEvent.
    Envelope,
    /// The raw data.
    Raw,
}

/// `all`, `any` (with `until`) or `one`: exactly one of the three.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventConsumptionStrategy {
    /// Wait for all of these.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<EventFilter>>,
    /// Wait for any of these.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<EventFilter>>,
    /// Wait for this one.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one: Option<EventFilter>,
    /// With `any`: keep consuming until this expression or strategy is satisfied. A strategy
    /// given here has no `until` of its own.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<Box<Until>>,
}

/// `until` of an `any` strategy.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Until {
    /// An expression.
    Condition(String),
    /// Another strategy.
    Events(EventConsumptionStrategy),
}
string_or_object!(
    Until,
    Condition,
    Events,
    EventConsumptionStrategy,
    "a runtime expression or an event consumption strategy"
);

/// An event filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Attributes the event must have (at least one).
    pub with: Object,
    /// Correlation keys.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlate: Option<IndexMap<String, Correlation>>,
}

/// A correlation of an event filter. Stricter than the spec's schema: no key but `from` and
/// `expect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// A runtime expression extracting the value from the event.
    pub from: String,
    /// A constant or runtime expression the value must equal.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

/// `raise`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Raise {
    /// The error, inline or a name in `use.errors`.
    pub error: ErrorOrRef,
}

/// `run`: exactly one of `container`, `script`, `shell` and `workflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTask {
    /// Whether to wait for the process to finish (default true).
    #[serde(default, deserialize_with = "some", rename = "await")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub await_: Option<bool>,
    /// What the task returns for a process: `stdout` (default), `stderr`, `code`, `all` or
    /// `none`.
    #[serde(default, deserialize_with = "some", rename = "return")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ProcessReturnType>")]
    pub return_: Option<String>,
    /// A container (parsed; not supported yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// A script (parsed; not supported yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<Script>,
    /// A shell command (parsed; not supported yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<Shell>,
    /// A sub-workflow.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<SubWorkflow>,
}

/// The values `run.return` may take.
pub const PROCESS_RETURN_TYPES: &[&str] = &["stdout", "stderr", "code", "all", "none"];

/// `run: container` (parsed; not executed yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Container {
    /// The image to run.
    pub image: String,
    /// The container's name (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The command to run.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Port mappings.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Object>,
    /// Volume mappings.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Object>,
    /// Environment variables.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Object>,
    /// Standard input (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Arguments.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
    /// The container's lifetime.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<ContainerLifetime>,
    /// When the image is pulled (default `ifNotPresent`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

/// When a container image is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PullPolicy {
    /// Only when absent.
    IfNotPresent,
    /// Every time.
    Always,
    /// Never.
    Never,
}

/// A container's lifetime: `after` is required with `cleanup: eventually` and not allowed
/// otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerLifetime {
    /// The cleanup policy.
    pub cleanup: ContainerCleanup,
    /// With `eventually`: when to clean up.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Duration>,
}

/// When a container is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerCleanup {
    /// As soon as it has run.
    Always,
    /// Never.
    Never,
    /// After `lifetime.after`.
    Eventually,
}

/// `run: script` (parsed; not executed yet): exactly one of `code` and `source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The script's language.
    pub language: String,
    /// The code, inline.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Where to fetch the code.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ExternalResource>,
    /// Standard input (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Arguments.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Object>,
}

/// `run: shell` (parsed; not executed yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shell {
    /// The command.
    pub command: String,
    /// Standard input (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Arguments.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Object>,
}

/// `run: workflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubWorkflow {
    /// Namespace of the workflow to run.
    pub namespace: String,
    /// Name of the workflow to run.
    pub name: String,
    /// Version, or `latest` (required by the spec's schema).
    pub version: String,
    /// Input of the sub-workflow: an object whose `${ }` strings are evaluated.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Object>")]
    pub input: Option<Value>,
}

/// A case of a `switch`.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchCase {
    /// The case's name.
    pub name: String,
    /// Condition; a case without one is the default.
    pub when: Option<String>,
    /// Where to go when it matches.
    pub then: FlowDirective,
}

/// `try` with its `catch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TryTask {
    /// Tasks to try.
    #[serde(rename = "try")]
    pub try_: TaskList,
    /// How errors are caught.
    pub catch: Catch,
}
