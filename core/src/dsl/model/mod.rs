//! The typed model of a Serverless Workflow DSL 1.0.3 document.
//!
//! Every struct rejects unknown fields: a typo in a definition is an error at load time, not a
//! silently ignored key. Tasks are decoded by hand (see [`Task`]'s `Deserialize`) because the DSL
//! tells task kinds apart by which key is present, which serde's `untagged` enums do badly (they
//! lose the real error and, as in `serverless_workflow_core`, can pick the wrong variant). The
//! "string or object" unions ([`Duration`], [`Endpoint`], [`TimeoutOrRef`], ...) are decoded by a
//! visitor too, so that an error inside the object keeps its path.
//!
//! Rules of the spec's schema that the serde shape cannot express (an authentication policy has
//! exactly one scheme, a `run` exactly one of `container`/`script`/`shell`/`workflow`, ...) are
//! checked by [`super::validate`], which reports them with their location.
//!
//! Where this model is stricter than the spec's schema (it is in a few places where the schema
//! allows arbitrary extra keys, such as `emit.event`, `event.correlate.*` or `mcp` arguments), the
//! doc comment of the type says so; the JSON Schema generated from these types
//! ([`super::json_schema`]) describes the DSL as Cairn supports it.

use std::borrow::Cow;
use std::fmt;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema as JsonSchemaDoc, SchemaGenerator};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A JSON object as written in a definition, order preserved.
pub type Object = Map<String, Value>;

/// Deserializes a present field as `Some`, so that an explicit `null` is an error rather than
/// the same as an absent field.
fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Implements `Deserialize` for an enum that is either a string or an object, decoding the object
/// through the same deserializer so that error paths are kept.
macro_rules! string_or_object {
    ($ty:ident, $str_variant:ident, $obj_variant:ident, $inner:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        Ok($ty::$str_variant(s.to_owned()))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<$ty, A::Error> {
                        <$inner>::deserialize(MapAccessDeserializer::new(m)).map($ty::$obj_variant)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

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

/// A string or an object (only used to describe `Value` fields in the JSON Schema).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum StringOrObject {
    String(String),
    Object(Object),
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

impl Serialize for FlowDirective {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            FlowDirective::Continue => "continue",
            FlowDirective::Exit => "exit",
            FlowDirective::End => "end",
            FlowDirective::Goto(t) => t,
        })
    }
}

impl<'de> Deserialize<'de> for FlowDirective {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "continue" => FlowDirective::Continue,
            "exit" => FlowDirective::Exit,
            "end" => FlowDirective::End,
            _ => FlowDirective::Goto(s),
        })
    }
}

impl JsonSchema for FlowDirective {
    fn schema_name() -> Cow<'static, str> {
        "FlowDirective".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> JsonSchemaDoc {
        json_schema!({
            "description": "What runs after a task: `continue` (the default), `exit` (leave the composite task), `end` (end the workflow), or the name of a task of the same list",
            "type": "string",
            "minLength": 1
        })
    }
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

impl Serialize for TaskList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in &self.0 {
            let mut m = IndexMap::new();
            m.insert(item.name.as_str(), &item.task);
            seq.serialize_element(&m)?;
        }
        seq.end()
    }
}

/// A map with exactly one entry, as the items of task lists, switches and extensions are written.
struct SingleEntry<T>(String, T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for SingleEntry<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = SingleEntry<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with exactly one key, the name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let Some(name) = m.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "an item must have exactly one key (its name), found none",
                    ));
                };
                let value = m.next_value::<T>()?;
                if let Some(other) = m.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "an item must have exactly one key (its name), found `{name}` and `{other}`"
                    )));
                }
                Ok(SingleEntry(name, value))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for TaskList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TaskList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of named tasks")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<TaskList, A::Error> {
                let mut out = Vec::new();
                while let Some(SingleEntry(name, task)) = s.next_element::<SingleEntry<Task>>()? {
                    out.push(NamedTask { name, task });
                }
                Ok(TaskList(out))
            }
        }
        d.deserialize_seq(V)
    }
}

impl JsonSchema for TaskList {
    fn schema_name() -> Cow<'static, str> {
        "TaskList".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> JsonSchemaDoc {
        json_schema!({
            "description": "An ordered list of named tasks; each item has exactly one key, the task's name, unique within the list",
            "type": "array",
            "items": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": g.subschema_for::<Task>()
            }
        })
    }
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

/// Every key a task may have, decoded in one pass so that errors keep their path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    #[serde(default, deserialize_with = "some", rename = "if")]
    if_: Option<String>,
    #[serde(default, deserialize_with = "some")]
    input: Option<Input>,
    #[serde(default, deserialize_with = "some")]
    output: Option<Output>,
    #[serde(default, deserialize_with = "some")]
    export: Option<Export>,
    #[serde(default, deserialize_with = "some")]
    timeout: Option<TimeoutOrRef>,
    #[serde(default, deserialize_with = "some")]
    then: Option<FlowDirective>,
    #[serde(default, deserialize_with = "some")]
    metadata: Option<Object>,
    #[serde(default, deserialize_with = "some")]
    call: Option<String>,
    #[serde(default, deserialize_with = "some")]
    with: Option<Value>,
    #[serde(default, deserialize_with = "some", rename = "do")]
    do_: Option<TaskList>,
    #[serde(default, deserialize_with = "some")]
    fork: Option<Fork>,
    #[serde(default, deserialize_with = "some")]
    emit: Option<Emit>,
    #[serde(default, deserialize_with = "some", rename = "for")]
    for_: Option<ForSpec>,
    #[serde(default, deserialize_with = "some", rename = "while")]
    while_: Option<String>,
    #[serde(default, deserialize_with = "some")]
    listen: Option<ListenSpec>,
    #[serde(default, deserialize_with = "some")]
    foreach: Option<SubscriptionIterator>,
    #[serde(default, deserialize_with = "some")]
    raise: Option<Raise>,
    #[serde(default, deserialize_with = "some")]
    run: Option<RunTask>,
    #[serde(default, deserialize_with = "some")]
    set: Option<Value>,
    #[serde(default, deserialize_with = "some")]
    switch: Option<Vec<SingleEntry<SwitchCaseBody>>>,
    #[serde(default, deserialize_with = "some", rename = "try")]
    try_: Option<TaskList>,
    #[serde(default, deserialize_with = "some")]
    catch: Option<Catch>,
    #[serde(default, deserialize_with = "some")]
    wait: Option<Duration>,
}

const KINDS: &str = "call, do, emit, for, fork, listen, raise, run, set, switch, try, wait";

impl RawTask {
    fn into_task<E: de::Error>(self) -> Result<Task, E> {
        let base = TaskBase {
            if_: self.if_,
            input: self.input,
            output: self.output,
            export: self.export,
            timeout: self.timeout,
            then: self.then,
            metadata: self.metadata,
        };
        let mut kinds: Vec<&str> = Vec::new();
        let present = [
            ("call", self.call.is_some()),
            ("emit", self.emit.is_some()),
            ("for", self.for_.is_some()),
            ("fork", self.fork.is_some()),
            ("listen", self.listen.is_some()),
            ("raise", self.raise.is_some()),
            ("run", self.run.is_some()),
            ("set", self.set.is_some()),
            ("switch", self.switch.is_some()),
            ("try", self.try_.is_some()),
            ("wait", self.wait.is_some()),
        ];
        kinds.extend(present.iter().filter(|(_, p)| *p).map(|(k, _)| *k));
        if kinds.is_empty() && self.do_.is_some() {
            kinds.push("do");
        }
        let kind = match kinds.as_slice() {
            [] => {
                return Err(E::custom(format!(
                    "not a task: expected exactly one of {KINDS}"
                )));
            }
            [one] => *one,
            [first, second, ..] => {
                return Err(E::custom(format!(
                    "a task has exactly one kind, found both `{first}` and `{second}`"
                )));
            }
        };
        let only = |field: &str, present: bool, owner: &str| -> Result<(), E> {
            if present && kind != owner {
                Err(E::custom(format!(
                    "`{field}` is only allowed in a `{owner}` task"
                )))
            } else {
                Ok(())
            }
        };
        only("with", self.with.is_some(), "call")?;
        only("while", self.while_.is_some(), "for")?;
        only("foreach", self.foreach.is_some(), "listen")?;
        only("catch", self.catch.is_some(), "try")?;
        if self.do_.is_some() && !matches!(kind, "do" | "for") {
            return Err(E::custom(format!("`do` is not allowed in a `{kind}` task")));
        }
        let kind = match kind {
            "call" => {
                let call = self.call.unwrap_or_default();
                TaskKind::Call(CallTask::decode(call, self.with).map_err(|(_, m)| E::custom(m))?)
            }
            "do" => TaskKind::Do(self.do_.unwrap_or_default()),
            "emit" => TaskKind::Emit(self.emit.ok_or_else(|| E::custom("missing `emit`"))?),
            "for" => TaskKind::For(ForTask {
                for_: self.for_.ok_or_else(|| E::custom("missing `for`"))?,
                while_: self.while_,
                do_: self
                    .do_
                    .ok_or_else(|| E::custom("a `for` task needs `do`"))?,
            }),
            "fork" => TaskKind::Fork(self.fork.ok_or_else(|| E::custom("missing `fork`"))?),
            "listen" => TaskKind::Listen(Listen {
                listen: self.listen.ok_or_else(|| E::custom("missing `listen`"))?,
                foreach: self.foreach,
            }),
            "raise" => TaskKind::Raise(self.raise.ok_or_else(|| E::custom("missing `raise`"))?),
            "run" => TaskKind::Run(self.run.ok_or_else(|| E::custom("missing `run`"))?),
            "set" => {
                let v = self.set.unwrap_or(Value::Null);
                match &v {
                    Value::Object(o) if !o.is_empty() => {}
                    Value::String(_) => {}
                    _ => {
                        return Err(E::custom(
                            "`set` must be a non-empty object or a runtime expression string",
                        ))
                    }
                }
                TaskKind::Set(v)
            }
            "switch" => {
                let items = self.switch.unwrap_or_default();
                if items.is_empty() {
                    return Err(E::custom("`switch` needs at least one case"));
                }
                TaskKind::Switch(
                    items
                        .into_iter()
                        .map(|SingleEntry(name, b)| SwitchCase {
                            name,
                            when: b.when,
                            then: b.then,
                        })
                        .collect(),
                )
            }
            "try" => TaskKind::Try(TryTask {
                try_: self.try_.unwrap_or_default(),
                catch: self
                    .catch
                    .ok_or_else(|| E::custom("a `try` task needs `catch`"))?,
            }),
            _ => TaskKind::Wait(self.wait.ok_or_else(|| E::custom("missing `wait`"))?),
        };
        Ok(Task { base, kind })
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawTask::deserialize(d)?.into_task()
    }
}

/// Where inside `with` a `call` task's arguments fail to decode: the JSON pointer relative to
/// `with` and the message. `None` when `task` is not a `call` task or its arguments decode.
pub(crate) fn locate_call_error(task: &Value) -> Option<(String, String)> {
    let call = task.get("call")?.as_str()?;
    CallTask::decode(call.to_string(), task.get("with").cloned()).err()
}

impl Serialize for Task {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut out = match serde_json::to_value(&self.base).map_err(S::Error::custom)? {
            Value::Object(o) => o,
            _ => Object::new(),
        };
        let mut put = |k: &str, v: Result<Value, serde_json::Error>| -> Result<(), S::Error> {
            out.insert(k.to_string(), v.map_err(S::Error::custom)?);
            Ok(())
        };
        match &self.kind {
            TaskKind::Call(c) => {
                let (call, with) = c.encode().map_err(S::Error::custom)?;
                put("call", Ok(Value::String(call)))?;
                if let Some(w) = with {
                    put("with", Ok(w))?;
                }
            }
            TaskKind::Do(l) => put("do", serde_json::to_value(l))?,
            TaskKind::Fork(f) => put("fork", serde_json::to_value(f))?,
            TaskKind::Emit(e) => put("emit", serde_json::to_value(e))?,
            TaskKind::For(f) => {
                if let Value::Object(o) = serde_json::to_value(f).map_err(S::Error::custom)? {
                    out.extend(o);
                }
            }
            TaskKind::Listen(l) => {
                if let Value::Object(o) = serde_json::to_value(l).map_err(S::Error::custom)? {
                    out.extend(o);
                }
            }
            TaskKind::Raise(r) => put("raise", serde_json::to_value(r))?,
            TaskKind::Run(r) => put("run", serde_json::to_value(r))?,
            TaskKind::Set(v) => put("set", Ok(v.clone()))?,
            TaskKind::Switch(cases) => {
                let mut items = Vec::with_capacity(cases.len());
                for c in cases {
                    let mut body = Object::new();
                    if let Some(w) = &c.when {
                        body.insert("when".into(), Value::String(w.clone()));
                    }
                    body.insert(
                        "then".into(),
                        serde_json::to_value(&c.then).map_err(S::Error::custom)?,
                    );
                    let mut m = Object::new();
                    m.insert(c.name.clone(), Value::Object(body));
                    items.push(Value::Object(m));
                }
                put("switch", Ok(Value::Array(items)))?
            }
            TaskKind::Try(t) => {
                if let Value::Object(o) = serde_json::to_value(t).map_err(S::Error::custom)? {
                    out.extend(o);
                }
            }
            TaskKind::Wait(w) => put("wait", serde_json::to_value(w))?,
        }
        out.serialize(s)
    }
}

impl JsonSchema for Task {
    fn schema_name() -> Cow<'static, str> {
        "Task".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> JsonSchemaDoc {
        let base = TaskBase::json_schema(g);
        let base_props = base
            .as_object()
            .and_then(|o| o.get("properties"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let variant = |title: &str, props: Value, required: &[&str]| -> Value {
            let mut all = base_props.clone();
            if let Value::Object(p) = props {
                all.extend(p);
            }
            serde_json::json!({
                "title": title,
                "type": "object",
                "properties": all,
                "required": required,
                "additionalProperties": false
            })
        };
        let call = |name: &str, args: JsonSchemaDoc| serde_json::json!({ "call": { "const": name }, "with": args });
        let builtins = ["http", "openapi", "grpc", "asyncapi", "mcp", "a2a"];
        let variants = vec![
            variant(
                "CallHttp",
                call("http", g.subschema_for::<HttpArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallOpenApi",
                call("openapi", g.subschema_for::<OpenApiArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallGrpc",
                call("grpc", g.subschema_for::<GrpcArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallAsyncApi",
                call("asyncapi", g.subschema_for::<AsyncApiArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallMcp",
                call("mcp", g.subschema_for::<McpArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallA2a",
                call("a2a", g.subschema_for::<A2aArgs>()),
                &["call", "with"],
            ),
            variant(
                "CallFunction",
                serde_json::json!({
                    "call": {
                        "type": "string",
                        "description": "a function of `use.functions`, `name:version@catalog`, or a function registered by the embedding application",
                        "not": { "enum": builtins }
                    },
                    "with": { "type": "object" }
                }),
                &["call"],
            ),
            variant(
                "DoTask",
                serde_json::json!({ "do": g.subschema_for::<TaskList>() }),
                &["do"],
            ),
            variant(
                "ForkTask",
                serde_json::json!({ "fork": g.subschema_for::<Fork>() }),
                &["fork"],
            ),
            variant(
                "EmitTask",
                serde_json::json!({ "emit": g.subschema_for::<Emit>() }),
                &["emit"],
            ),
            variant(
                "ForTask",
                serde_json::json!({
                    "for": g.subschema_for::<ForSpec>(),
                    "while": { "type": "string", "description": "keep iterating while this runtime expression is true" },
                    "do": g.subschema_for::<TaskList>()
                }),
                &["for", "do"],
            ),
            variant(
                "ListenTask",
                serde_json::json!({
                    "listen": g.subschema_for::<ListenSpec>(),
                    "foreach": g.subschema_for::<SubscriptionIterator>()
                }),
                &["listen"],
            ),
            variant(
                "RaiseTask",
                serde_json::json!({ "raise": g.subschema_for::<Raise>() }),
                &["raise"],
            ),
            variant(
                "RunTask",
                serde_json::json!({ "run": g.subschema_for::<RunTask>() }),
                &["run"],
            ),
            variant(
                "SetTask",
                serde_json::json!({
                    "set": {
                        "oneOf": [
                            { "type": "object", "minProperties": 1 },
                            { "type": "string", "description": "a runtime expression" }
                        ]
                    }
                }),
                &["set"],
            ),
            variant(
                "SwitchTask",
                serde_json::json!({
                    "switch": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 1,
                            "additionalProperties": g.subschema_for::<SwitchCaseBody>()
                        }
                    }
                }),
                &["switch"],
            ),
            variant(
                "TryTask",
                serde_json::json!({
                    "try": g.subschema_for::<TaskList>(),
                    "catch": g.subschema_for::<Catch>()
                }),
                &["try", "catch"],
            ),
            variant(
                "WaitTask",
                serde_json::json!({ "wait": g.subschema_for::<Duration>() }),
                &["wait"],
            ),
        ];
        json_schema!({
            "description": "A task: the properties every task has, and exactly one kind",
            "oneOf": variants
        })
    }
}

/// A `call` task.
#[derive(Debug, Clone, PartialEq)]
// A definition is decoded once and kept; boxing would only make it harder to match on.
#[allow(clippy::large_enum_variant)]
pub enum CallTask {
    /// `call: http`.
    Http(HttpArgs),
    /// `call: openapi` (parsed; not executed yet).
    OpenApi(OpenApiArgs),
    /// `call: grpc` (parsed; not executed yet).
    Grpc(GrpcArgs),
    /// `call: asyncapi` (parsed; not executed yet).
    AsyncApi(AsyncApiArgs),
    /// `call: mcp` (parsed; not executed yet).
    Mcp(McpArgs),
    /// `call: a2a` (parsed; not executed yet).
    A2a(A2aArgs),
    /// `call: NAME`: a function from `use.functions`, a catalog, or one registered by the
    /// embedding application.
    Function {
        /// The function's name.
        name: String,
        /// Its arguments.
        with: Option<Object>,
    },
}

/// Decodes `with` as `T`, tracking where an error is (a JSON pointer relative to `with`).
fn decode_args<T: serde::de::DeserializeOwned>(with: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(with).map_err(|e| {
        let pointer = super::validate::path_to_pointer(e.path());
        (pointer, e.into_inner().to_string())
    })
}

impl CallTask {
    fn decode(call: String, with: Option<Value>) -> Result<Self, (String, String)> {
        let builtin = matches!(
            call.as_str(),
            "http" | "openapi" | "grpc" | "asyncapi" | "mcp" | "a2a"
        );
        let with = match with {
            Some(w) => w,
            None if builtin => {
                return Err((
                    String::new(),
                    format!("`call: {call}` needs a `with` block"),
                ))
            }
            None => {
                return Ok(CallTask::Function {
                    name: call,
                    with: None,
                })
            }
        };
        Ok(match call.as_str() {
            "http" => CallTask::Http(decode_args(&with)?),
            "openapi" => CallTask::OpenApi(decode_args(&with)?),
            "grpc" => CallTask::Grpc(decode_args(&with)?),
            "asyncapi" => CallTask::AsyncApi(decode_args(&with)?),
            "mcp" => CallTask::Mcp(decode_args(&with)?),
            "a2a" => CallTask::A2a(decode_args(&with)?),
            _ => match with {
                Value::Object(o) => CallTask::Function {
                    name: call,
                    with: Some(o),
                },
                _ => return Err((String::new(), "`with` must be an object".into())),
            },
        })
    }

    fn encode(&self) -> Result<(String, Option<Value>), serde_json::Error> {
        Ok(match self {
            CallTask::Http(a) => ("http".into(), Some(serde_json::to_value(a)?)),
            CallTask::OpenApi(a) => ("openapi".into(), Some(serde_json::to_value(a)?)),
            CallTask::Grpc(a) => ("grpc".into(), Some(serde_json::to_value(a)?)),
            CallTask::AsyncApi(a) => ("asyncapi".into(), Some(serde_json::to_value(a)?)),
            CallTask::Mcp(a) => ("mcp".into(), Some(serde_json::to_value(a)?)),
            CallTask::A2a(a) => ("a2a".into(), Some(serde_json::to_value(a)?)),
            CallTask::Function { name, with } => (name.clone(), with.clone().map(Value::Object)),
        })
    }

    /// The DSL name of the call, e.g. `http` or a function name.
    pub fn name(&self) -> &str {
        match self {
            CallTask::Http(_) => "http",
            CallTask::OpenApi(_) => "openapi",
            CallTask::Grpc(_) => "grpc",
            CallTask::AsyncApi(_) => "asyncapi",
            CallTask::Mcp(_) => "mcp",
            CallTask::A2a(_) => "a2a",
            CallTask::Function { name, .. } => name,
        }
    }
}

/// Arguments of `call: http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// HTTP method, e.g. `get`.
    pub method: String,
    /// Where to send the request.
    pub endpoint: Endpoint,
    /// Request headers: an object of strings/expressions, or one expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringMapOrExpression>")]
    pub headers: Option<Value>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Query parameters: an object of strings/expressions, or one expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringMapOrExpression>")]
    pub query: Option<Value>,
    /// `content` (default), `response` or `raw`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<HttpOutputFormat>,
    /// Whether 3xx responses are followed rather than treated as errors.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

/// An object of strings, or a runtime expression (only used to describe `Value` fields in the
/// JSON Schema).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum StringMapOrExpression {
    Map(IndexMap<String, String>),
    Expression(String),
}

/// What a `call: http` task outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HttpOutputFormat {
    /// The deserialised body.
    #[default]
    Content,
    /// Status, headers and body.
    Response,
    /// The body, base64-encoded.
    Raw,
}

/// Arguments of `call: openapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenApiArgs {
    /// The OpenAPI document.
    pub document: ExternalResource,
    /// The operation to call.
    pub operation_id: String,
    /// Its parameters.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// Authentication to use.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
    /// Output format.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<HttpOutputFormat>,
    /// Whether 3xx responses are followed.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

/// Arguments of `call: grpc` (parsed; not executed yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcArgs {
    /// The proto file describing the service.
    pub proto: ExternalResource,
    /// The service to call.
    pub service: GrpcService,
    /// The method to call.
    pub method: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Object>,
}

/// The service of a `call: grpc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcService {
    /// The service's name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its port.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Authentication to use.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
}

/// Arguments of `call: asyncapi` (parsed; not executed yet). Exactly one of `operation` and
/// `channel`, and exactly one of `message` and `subscription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiArgs {
    /// The AsyncAPI document.
    pub document: ExternalResource,
    /// The channel (AsyncAPI 2.6 documents).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The operation.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The server to use.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<AsyncApiServer>,
    /// The protocol used to select the server.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<AsyncApiProtocol>,
    /// The message to publish.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<AsyncApiMessage>,
    /// The subscription to consume messages with.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<AsyncApiSubscription>,
    /// Authentication to use.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
}

/// The server of a `call: asyncapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiServer {
    /// The server's name.
    pub name: String,
    /// Its variables.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Object>,
}

/// The protocols of AsyncAPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum AsyncApiProtocol {
    Amqp,
    Amqp1,
    Anypointmq,
    Googlepubsub,
    Http,
    Ibmmq,
    Jms,
    Kafka,
    Mercure,
    Mqtt,
    Mqtt5,
    Nats,
    Pulsar,
    Redis,
    Sns,
    Solace,
    Sqs,
    Stomp,
    Ws,
}

/// A message published by a `call: asyncapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiMessage {
    /// The payload.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Object>,
    /// The headers.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Object>,
}

/// A subscription of a `call: asyncapi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiSubscription {
    /// A runtime expression filtering consumed messages.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// How many messages to consume.
    pub consume: AsyncApiConsumptionPolicy,
    /// What to do with each message.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreach: Option<SubscriptionIterator>,
}

/// How a subscription consumes messages: `for` a while, and exactly one of `amount`, `while`
/// and `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AsyncApiConsumptionPolicy {
    /// How long to consume.
    #[serde(default, deserialize_with = "some", rename = "for")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_: Option<Duration>,
    /// How many messages to consume.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// Go on while this runtime expression is true.
    #[serde(default, deserialize_with = "some", rename = "while")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub while_: Option<String>,
    /// Go on until this runtime expression is true.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// The iteration over consumed events or messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionIterator {
    /// Variable name of the item (default `item`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Variable name of the index (default `index`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Tasks run for each item.
    #[serde(default, deserialize_with = "some", rename = "do")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_: Option<TaskList>,
    /// The item's output.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// What each item writes into `$context`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
}

/// Arguments of `call: mcp` (parsed; not executed yet). Stricter than the spec's schema: unknown
/// keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpArgs {
    /// MCP protocol version (default `2025-06-18`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The method.
    pub method: McpMethod,
    /// Its parameters: an object, or a runtime expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringOrObject>")]
    pub parameters: Option<Value>,
    /// When the call times out.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// How to reach the server: exactly one of `http` and `stdio`.
    pub transport: McpTransport,
    /// The client to present.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<McpClient>,
}

/// The methods of MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum McpMethod {
    #[serde(rename = "tools/list")]
    ToolsList,
    #[serde(rename = "tools/call")]
    ToolsCall,
    #[serde(rename = "prompts/list")]
    PromptsList,
    #[serde(rename = "prompts/get")]
    PromptsGet,
    #[serde(rename = "resources/list")]
    ResourcesList,
    #[serde(rename = "resources/read")]
    ResourcesRead,
    #[serde(rename = "resources/templates/list")]
    ResourcesTemplatesList,
}

/// The transport of `call: mcp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpTransport {
    /// Streamable HTTP.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<McpHttpTransport>,
    /// A local process.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdio: Option<McpStdioTransport>,
    /// Transport options.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<IndexMap<String, String>>,
}

/// The HTTP transport of `call: mcp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpHttpTransport {
    /// The server.
    pub endpoint: Endpoint,
    /// Headers sent with requests.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<IndexMap<String, String>>,
}

/// The stdio transport of `call: mcp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpStdioTransport {
    /// The command running the server.
    pub command: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
    /// Its environment.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<IndexMap<String, String>>,
}

/// The client of `call: mcp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpClient {
    /// The client's name.
    pub name: String,
    /// The client's version.
    pub version: String,
    /// A description.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Arguments of `call: a2a` (parsed; not executed yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct A2aArgs {
    /// The agent card describing the agent.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_card: Option<ExternalResource>,
    /// The server to call.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Endpoint>,
    /// The method.
    pub method: A2aMethod,
    /// Its parameters: a non-empty object, or a runtime expression.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<StringOrObject>")]
    pub parameters: Option<Value>,
}

/// The methods of A2A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum A2aMethod {
    #[serde(rename = "message/send")]
    MessageSend,
    #[serde(rename = "message/stream")]
    MessageStream,
    #[serde(rename = "tasks/get")]
    TasksGet,
    #[serde(rename = "tasks/list")]
    TasksList,
    #[serde(rename = "tasks/cancel")]
    TasksCancel,
    #[serde(rename = "tasks/resubscribe")]
    TasksResubscribe,
    #[serde(rename = "tasks/pushNotificationConfig/set")]
    PushNotificationConfigSet,
    #[serde(rename = "tasks/pushNotificationConfig/get")]
    PushNotificationConfigGet,
    #[serde(rename = "tasks/pushNotificationConfig/list")]
    PushNotificationConfigList,
    #[serde(rename = "tasks/pushNotificationConfig/delete")]
    PushNotificationConfigDelete,
    #[serde(rename = "agent/getAuthenticatedExtendedCard")]
    GetAuthenticatedExtendedCard,
}

/// An endpoint: a URI template, an expression, or a configuration object.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
// A definition is decoded once and kept; boxing would only make it harder to match on.
#[allow(clippy::large_enum_variant)]
pub enum Endpoint {
    /// A URI (template) or a runtime expression.
    Uri(String),
    /// `{ uri, authentication }`.
    Config(EndpointConfig),
}
string_or_object!(
    Endpoint,
    Uri,
    Config,
    EndpointConfig,
    "a URI or an endpoint object"
);

impl Endpoint {
    /// The URI template or expression.
    pub fn uri(&self) -> &str {
        match self {
            Endpoint::Uri(u) => u,
            Endpoint::Config(c) => &c.uri,
        }
    }

    /// The authentication policy, if any.
    pub fn authentication(&self) -> Option<&AuthenticationPolicy> {
        match self {
            Endpoint::Uri(_) => None,
            Endpoint::Config(c) => c.authentication.as_ref(),
        }
    }
}

/// An endpoint written as an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URI template or expression.
    pub uri: String,
    /// Authentication policy.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
}

/// An authentication policy: exactly one scheme, or a reference to one with `use`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct AuthenticationPolicy {
    /// A name in `use.authentications`.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// HTTP basic.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// Bearer token.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerAuth>,
    /// HTTP digest (parsed; not supported yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<BasicAuth>,
    /// OAuth2 (parsed; not supported yet).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<Box<OAuth2Auth>>,
    /// OpenID Connect (parsed; not supported yet); `endpoints` is not allowed here.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Box<OAuth2Auth>>,
}

/// Username/password, or a secret holding them (`use`): exactly one of the two forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A secret with `username` and `password`.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A bearer token, or a secret holding it (`use`): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token (may be an expression).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A secret with `token`.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// OAuth2 or OpenID Connect: inline properties, or a secret holding them (`use`), not both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Auth {
    /// A secret holding the configuration.
    #[serde(default, deserialize_with = "some", rename = "use")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The authority (a URI).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// The grant type.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<OAuth2Grant>,
    /// The client.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<OAuth2Client>,
    /// The token request.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<OAuth2TokenRequest>,
    /// Accepted issuers.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuers: Option<Vec<String>>,
    /// Requested scopes.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Requested audiences.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// User name (password grant).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (password grant).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Subject token (token exchange).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<OAuth2Token>,
    /// Actor token (token exchange).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<OAuth2Token>,
    /// Endpoint paths (OAuth2 only).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<OAuth2Endpoints>,
}

/// OAuth2 grant types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum OAuth2Grant {
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    #[serde(rename = "password")]
    Password,
    #[serde(rename = "refresh_token")]
    RefreshToken,
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
}

/// An OAuth2 client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Client {
    /// Client id.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Client secret.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A signed JWT assertion.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
    /// How the client authenticates (default `client_secret_post`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<OAuth2ClientAuthentication>,
}

/// How an OAuth2 client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum OAuth2ClientAuthentication {
    ClientSecretBasic,
    ClientSecretPost,
    ClientSecretJwt,
    PrivateKeyJwt,
    None,
}

/// An OAuth2 token request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2TokenRequest {
    /// `application/x-www-form-urlencoded` (default) or `application/json`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<OAuth2RequestEncoding>,
}

/// The encoding of an OAuth2 token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum OAuth2RequestEncoding {
    #[serde(rename = "application/x-www-form-urlencoded")]
    FormUrlEncoded,
    #[serde(rename = "application/json")]
    Json,
}

/// A security token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Token {
    /// The token.
    pub token: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_: String,
}

/// OAuth2 endpoint paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Endpoints {
    /// Token endpoint (default `/oauth2/token`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Revocation endpoint (default `/oauth2/revoke`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<String>,
    /// Introspection endpoint (default `/oauth2/introspect`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection: Option<String>,
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

/// An error inline or a reference.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ErrorOrRef {
    /// Inline.
    Inline(ErrorDefinition),
    /// A name in `use.errors`.
    Ref(String),
}
string_or_object!(
    ErrorOrRef,
    Ref,
    Inline,
    ErrorDefinition,
    "an error object or the name of one"
);

/// An error as written in a definition (fields may be expressions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDefinition {
    /// The error type URI.
    #[serde(rename = "type")]
    pub type_: String,
    /// The status code (an integer).
    #[schemars(with = "i64")]
    pub status: Value,
    /// The JSON pointer of the raising task (filled in when absent).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// A short summary.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A longer explanation.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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

/// What a `run` task returns (used to describe `RunTask::return_` in the JSON Schema).
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum ProcessReturnType {
    Stdout,
    Stderr,
    Code,
    All,
    None,
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

/// The body of a switch case, as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SwitchCase")]
struct SwitchCaseBody {
    /// Condition (a runtime expression, `${ }` optional); a case without one is the default.
    #[serde(default, deserialize_with = "some")]
    when: Option<String>,
    /// Where to go when the case matches.
    then: FlowDirective,
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

/// The `catch` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catch {
    /// Which errors are caught.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<CatchErrors>,
    /// Variable name of the caught error (default `error`).
    #[serde(default, deserialize_with = "some", rename = "as")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_: Option<String>,
    /// Catch only when this is true.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Do not catch when this is true.
    #[serde(default, deserialize_with = "some", rename = "exceptWhen")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except_when: Option<String>,
    /// Retry the `try` block, inline policy or a name in `use.retries`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOrRef>,
    /// Tasks run when an error is caught (after retries are exhausted).
    #[serde(default, deserialize_with = "some", rename = "do")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub do_: Option<TaskList>,
}

/// `catch.errors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatchErrors {
    /// Properties the error must have (`type`, `status`, `instance`, `title`, `details`).
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<Object>,
}

/// A retry policy inline or a reference.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
// A definition is decoded once and kept; boxing would only make it harder to match on.
#[allow(clippy::large_enum_variant)]
pub enum RetryOrRef {
    /// Inline.
    Inline(RetryPolicy),
    /// A name in `use.retries`.
    Ref(String),
}
string_or_object!(
    RetryOrRef,
    Ref,
    Inline,
    RetryPolicy,
    "a retry policy object or the name of one"
);

/// A retry policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retry only when this is true.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Do not retry when this is true.
    #[serde(default, deserialize_with = "some", rename = "exceptWhen")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except_when: Option<String>,
    /// Base delay between attempts.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// How the delay grows.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Limits on attempts and total time.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<RetryLimit>,
    /// Random extra delay.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
}

/// Backoff: exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Backoff {
    /// The delay stays the same.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constant: Option<Object>,
    /// The delay grows as `delay * attempt`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear: Option<Object>,
    /// The delay grows as `delay * 2^(attempt-1)`.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exponential: Option<Object>,
}

/// `limit` of a retry policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryLimit {
    /// Limits per attempt.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptLimit>,
    /// Total time allowed for all attempts.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// `limit.attempt`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptLimit {
    /// Maximum number of attempts (retries), not counting the first run.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Maximum duration of one attempt.
    #[serde(default, deserialize_with = "some")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// `jitter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jitter {
    /// Lower bound.
    pub from: Duration,
    /// Upper bound.
    pub to: Duration,
}
