//! The document level: the workflow, its `document` and `use` blocks, schedule, input/output,
//! schemas, timeouts and durations.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::StringOrObject;
use super::serde_glue::{some, string_or_object};
use super::*;

/// A whole workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Cairn workflow definition (Serverless Workflow DSL 1.0.x)")]
pub struct Workflow {
    /// Identity and description of the workflow.
    pub document: Document,
    /// How the workflow's input is validated and transformed.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// Reusable components.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<Use>,
    /// The tasks the workflow performs.
    #[serde(rename = "do")]
    pub do_: TaskList,
    /// The workflow's timeout.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutOrRef>,
    /// How the workflow's output is validated and transformed.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// When the workflow is started by the runtime itself (parsed, not executed yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// The `document` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// DSL version, e.g. `1.0.3`; Cairn supports `1.0.x`.
    #[schemars(regex(pattern = r"^1\.0\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"))]
    pub dsl: String,
    /// Namespace of the workflow.
    #[schemars(regex(pattern = r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"))]
    pub namespace: String,
    /// Name of the workflow.
    #[schemars(regex(pattern = r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"))]
    pub name: String,
    /// Semantic version of the workflow.
    #[schemars(regex(
        pattern = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
    ))]
    pub version: String,
    /// Human title.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Markdown summary.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Key/value tags.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Object>,
    /// Free-form metadata.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
}

/// The `use` block: reusable components referenced by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Use {
    /// Named authentication policies.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentications: Option<IndexMap<String, AuthenticationPolicy>>,
    /// Named errors, raised with `raise: { error: NAME }`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<IndexMap<String, ErrorDefinition>>,
    /// Extensions (parsed; not applied yet). Each item has exactly one key, the extension's name.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<IndexMap<String, Extension>>>,
    /// Named functions: tasks called with `call: NAME`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<IndexMap<String, Task>>,
    /// Named retry policies.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<IndexMap<String, RetryPolicy>>,
    /// Names of the secrets the workflow reads.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// Named timeouts.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<IndexMap<String, Timeout>>,
    /// Named catalogs of functions.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogs: Option<IndexMap<String, Catalog>>,
}

/// An extension of tasks (parsed; not applied yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Kind of task extended.
    pub extend: ExtensionTarget,
    /// Condition for the extension to apply (a runtime expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Tasks run before the extended task.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<TaskList>,
    /// Tasks run after the extended task.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<TaskList>,
}

/// The kind of task an extension applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExtensionTarget {
    /// `call` tasks.
    Call,
    /// Composite tasks (`do`, `for`, `fork`, `try`).
    Composite,
    /// `emit` tasks.
    Emit,
    /// `for` tasks.
    For,
    /// `listen` tasks.
    Listen,
    /// `raise` tasks.
    Raise,
    /// `run` tasks.
    Run,
    /// `set` tasks.
    Set,
    /// `switch` tasks.
    Switch,
    /// `try` tasks.
    Try,
    /// `wait` tasks.
    Wait,
    /// Every task.
    All,
}

/// A catalog of reusable functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Where the catalog lives.
    pub endpoint: Endpoint,
}

/// The `schedule` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Run at this interval.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
    /// Run on this cron expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Run again this long after the previous run completed.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Duration>,
    /// Run when these events arrive.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<EventConsumptionStrategy>,
}

/// `input` of a workflow or task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Schema the raw input must satisfy.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Transformation of the raw input: a runtime expression (`${ }` optional), or an object
    /// whose `${ }` strings are evaluated.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringOrObject>")]
    pub from: Option<Value>,
}

/// `output` of a workflow or task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Schema the transformed output must satisfy.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Transformation of the raw output: a runtime expression (`${ }` optional), or an object
    /// whose `${ }` strings are evaluated.
    #[serde(default, deserialize_with = "some", rename = "as")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringOrObject>")]
    pub as_: Option<Value>,
}

/// `export` of a task: what it writes into `$context`.
pub type Export = Output;

/// A JSON Schema, inline (`document`) or external (`resource`): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Schema format, `json` by default.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The schema itself.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
    /// Where to fetch the schema (not supported yet at run time).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ExternalResource>,
}

/// A resource fetched from an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalResource {
    /// Name of the resource.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it lives.
    pub endpoint: Endpoint,
}

/// A timeout, inline or referenced by name from `use.timeouts`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TimeoutOrRef {
    /// An inline timeout.
    Inline(Timeout),
    /// A name in `use.timeouts`.
    Ref(String),
}
string_or_object!(
    TimeoutOrRef,
    Ref,
    Inline,
    Timeout,
    "a timeout object or the name of one"
);

/// A timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    /// How long before the timeout fires.
    pub after: Duration,
}

/// A duration: an object of units, an ISO 8601 literal, or a runtime expression.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Duration {
    /// `{ days, hours, minutes, seconds, milliseconds }`.
    Inline(DurationInline),
    /// `PT30S` or `${ expr }`.
    Text(
        #[schemars(description = "an ISO 8601 duration such as `PT30S`, or a runtime expression")]
        String,
    ),
}
string_or_object!(
    Duration,
    Text,
    Inline,
    DurationInline,
    "a duration object or an ISO 8601 duration string"
);

/// A duration written as an object of units (at least one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1))]
pub struct DurationInline {
    /// Days.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u64>,
    /// Hours.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<u64>,
    /// Minutes.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u64>,
    /// Seconds.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// Milliseconds.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub milliseconds: Option<u64>,
}
