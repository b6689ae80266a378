//! The typed model of a Serverless Workflow DSL 1.0.3 document.
//!
//! Every struct rejects unknown fields: a typo in a definition is an error at load time, not a
//! silently ignored key. Tasks are decoded by hand (see [`Task`]'s `Deserialize`) because the DSL
//! tells task kinds apart by which key is present, which serde's `untagged` enums do badly (they
//! lose the real error and, as in `serverless_workflow_core`, can pick the wrong variant).

use indexmap::IndexMap;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A JSON object as written in a definition, order preserved.
pub type Object = Map<String, Value>;

/// A whole workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Identity and description of the workflow.
    pub document: Document,
    /// How the workflow's input is validated and transformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// Reusable components.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<Use>,
    /// The tasks the workflow performs.
    #[serde(rename = "do")]
    pub do_: TaskList,
    /// The workflow's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutOrRef>,
    /// How the workflow's output is validated and transformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// When the workflow is started by the runtime itself (parsed, not executed yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// The `document` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// DSL version, e.g. `1.0.3`.
    pub dsl: String,
    /// Namespace of the workflow.
    pub namespace: String,
    /// Name of the workflow.
    pub name: String,
    /// Semantic version of the workflow.
    pub version: String,
    /// Human title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Markdown summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Key/value tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Object>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
}

/// The `use` block: reusable components referenced by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Use {
    /// Named authentication policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications: Option<IndexMap<String, AuthenticationPolicy>>,
    /// Named errors, raised with `raise: { error: NAME }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<IndexMap<String, ErrorDefinition>>,
    /// Extensions (parsed; not applied yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<IndexMap<String, Extension>>>,
    /// Named functions: tasks called with `call: NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<IndexMap<String, Task>>,
    /// Named retry policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<IndexMap<String, RetryPolicy>>,
    /// Names of the secrets the workflow reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// Named timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<IndexMap<String, Timeout>>,
    /// Named catalogs of functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogs: Option<IndexMap<String, Catalog>>,
}

/// An extension of tasks (parsed; not applied yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Kind of task extended.
    pub extend: String,
    /// Condition for the extension to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Tasks run before the extended task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<TaskList>,
    /// Tasks run after the extended task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<TaskList>,
}

/// A catalog of reusable functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Where the catalog lives.
    pub endpoint: Endpoint,
}

/// The `schedule` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Run at this interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
    /// Run on this cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Run again this long after the previous run completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Duration>,
    /// Run when these events arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<EventConsumptionStrategy>,
}

/// `input` of a workflow or task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Schema the raw input must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Transformation of the raw input (an expression, or an object with expressions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
}

/// `output` of a workflow or task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Schema the transformed output must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Transformation of the raw output.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_: Option<Value>,
}

/// `export` of a task: what it writes into `$context`.
pub type Export = Output;

/// A JSON Schema, inline or external.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Schema format, `json` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The schema itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
    /// Where to fetch the schema (not supported yet at run time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ExternalResource>,
}

/// A resource fetched from an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalResource {
    /// Name of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it lives.
    pub endpoint: Endpoint,
}

/// A timeout, inline or referenced by name from `use.timeouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeoutOrRef {
    /// An inline timeout.
    Inline(Timeout),
    /// A name in `use.timeouts`.
    Ref(String),
}

/// A timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    /// How long before the timeout fires.
    pub after: Duration,
}

/// A duration: an object of units, an ISO 8601 literal, or a runtime expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Duration {
    /// `{ days, hours, minutes, seconds, milliseconds }`.
    Inline(DurationInline),
    /// `PT30S` or `${ expr }`.
    Text(String),
}

/// A duration written as an object of units.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationInline {
    /// Days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u64>,
    /// Hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<u64>,
    /// Minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u64>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

impl<'de> Deserialize<'de> for TaskList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items: Vec<IndexMap<String, Task>> = Vec::deserialize(d)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            if item.len() != 1 {
                return Err(D::Error::custom(format!(
                    "task list item {i} must have exactly one key (the task name), found {}",
                    item.len()
                )));
            }
            for (name, task) in item {
                out.push(NamedTask { name, task });
            }
        }
        Ok(TaskList(out))
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBase {
    /// Run the task only when this expression is true.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_: Option<String>,
    /// The task's input handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// The task's output handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// What the task writes into `$context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
    /// The task's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutOrRef>,
    /// What runs after the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<FlowDirective>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Object>,
}

const BASE_KEYS: &[&str] = &["if", "input", "output", "export", "timeout", "then", "metadata"];

/// The kind-specific part of a task.
#[derive(Debug, Clone, PartialEq)]
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

fn from_value<T: serde::de::DeserializeOwned, E: serde::de::Error>(v: Value) -> Result<T, E> {
    serde_json::from_value(v).map_err(E::custom)
}

fn take_kind_fields<E: serde::de::Error>(
    map: &mut Object,
    keys: &[&str],
    kind: &str,
) -> Result<Object, E> {
    let mut out = Object::new();
    for k in keys {
        if let Some(v) = map.remove(*k) {
            out.insert((*k).to_string(), v);
        }
    }
    if let Some((k, _)) = map.iter().next() {
        return Err(E::custom(format!("unknown field `{k}` in a `{kind}` task")));
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Object::deserialize(d)?;
        let mut base_map = Object::new();
        for k in BASE_KEYS {
            if let Some(v) = map.remove(*k) {
                base_map.insert((*k).to_string(), v);
            }
        }
        let base: TaskBase = from_value(Value::Object(base_map))?;
        let has = |k: &str| map.contains_key(k);
        let kind = if has("call") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["call", "with"], "call")?;
            let call = match f.remove("call") {
                Some(Value::String(s)) => s,
                _ => return Err(D::Error::custom("`call` must be a string")),
            };
            let with = f.remove("with");
            TaskKind::Call(CallTask::decode::<D::Error>(call, with)?)
        } else if has("for") {
            let f = take_kind_fields::<D::Error>(&mut map, &["for", "while", "do"], "for")?;
            TaskKind::For(from_value(Value::Object(f))?)
        } else if has("fork") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["fork"], "fork")?;
            TaskKind::Fork(from_value(f.remove("fork").unwrap_or(Value::Null))?)
        } else if has("emit") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["emit"], "emit")?;
            TaskKind::Emit(from_value(f.remove("emit").unwrap_or(Value::Null))?)
        } else if has("listen") {
            let f = take_kind_fields::<D::Error>(&mut map, &["listen", "foreach"], "listen")?;
            TaskKind::Listen(from_value(Value::Object(f))?)
        } else if has("raise") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["raise"], "raise")?;
            TaskKind::Raise(from_value(f.remove("raise").unwrap_or(Value::Null))?)
        } else if has("run") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["run"], "run")?;
            TaskKind::Run(from_value(f.remove("run").unwrap_or(Value::Null))?)
        } else if has("set") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["set"], "set")?;
            let v = f.remove("set").unwrap_or(Value::Null);
            match &v {
                Value::Object(o) if !o.is_empty() => {}
                Value::String(_) => {}
                _ => {
                    return Err(D::Error::custom(
                        "`set` must be a non-empty object or a runtime expression string",
                    ))
                }
            }
            TaskKind::Set(v)
        } else if has("switch") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["switch"], "switch")?;
            let items: Vec<IndexMap<String, SwitchCaseBody>> =
                from_value(f.remove("switch").unwrap_or(Value::Null))?;
            if items.is_empty() {
                return Err(D::Error::custom("`switch` needs at least one case"));
            }
            let mut cases = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                if item.len() != 1 {
                    return Err(D::Error::custom(format!(
                        "switch item {i} must have exactly one key (the case name)"
                    )));
                }
                for (name, body) in item {
                    cases.push(SwitchCase { name, when: body.when, then: body.then });
                }
            }
            TaskKind::Switch(cases)
        } else if has("try") {
            let f = take_kind_fields::<D::Error>(&mut map, &["try", "catch"], "try")?;
            TaskKind::Try(from_value(Value::Object(f))?)
        } else if has("wait") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["wait"], "wait")?;
            TaskKind::Wait(from_value(f.remove("wait").unwrap_or(Value::Null))?)
        } else if has("do") {
            let mut f = take_kind_fields::<D::Error>(&mut map, &["do"], "do")?;
            TaskKind::Do(from_value(f.remove("do").unwrap_or(Value::Null))?)
        } else {
            let keys: Vec<&String> = map.keys().collect();
            return Err(D::Error::custom(format!(
                "not a task: expected one of call, do, emit, for, fork, listen, raise, run, set, switch, try, wait; found keys {keys:?}"
            )));
        };
        Ok(Task { base, kind })
    }
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
                let items: Vec<Value> = cases
                    .iter()
                    .map(|c| {
                        let mut body = Object::new();
                        if let Some(w) = &c.when {
                            body.insert("when".into(), Value::String(w.clone()));
                        }
                        body.insert(
                            "then".into(),
                            serde_json::to_value(&c.then).unwrap_or(Value::Null),
                        );
                        let mut m = Object::new();
                        m.insert(c.name.clone(), Value::Object(body));
                        Value::Object(m)
                    })
                    .collect();
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

/// A `call` task.
#[derive(Debug, Clone, PartialEq)]
pub enum CallTask {
    /// `call: http`.
    Http(HttpArgs),
    /// `call: openapi` (parsed; not executed yet).
    OpenApi(OpenApiArgs),
    /// `call: grpc` (parsed; not executed yet).
    Grpc(Object),
    /// `call: asyncapi` (parsed; not executed yet).
    AsyncApi(Object),
    /// `call: mcp` (parsed; not executed yet).
    Mcp(Object),
    /// `call: a2a` (parsed; not executed yet).
    A2a(Object),
    /// `call: NAME`: a function from `use.functions`, a catalog, or one registered by the
    /// embedding application.
    Function {
        /// The function's name.
        name: String,
        /// Its arguments.
        with: Option<Object>,
    },
}

impl CallTask {
    fn decode<E: serde::de::Error>(call: String, with: Option<Value>) -> Result<Self, E> {
        let need_with = |w: Option<Value>| -> Result<Value, E> {
            w.ok_or_else(|| E::custom(format!("`call: {call}` needs a `with` block")))
        };
        let obj = |v: Value| -> Result<Object, E> {
            match v {
                Value::Object(o) => Ok(o),
                _ => Err(E::custom("`with` must be an object")),
            }
        };
        Ok(match call.as_str() {
            "http" => CallTask::Http(from_value(need_with(with)?)?),
            "openapi" => CallTask::OpenApi(from_value(need_with(with)?)?),
            "grpc" => CallTask::Grpc(obj(need_with(with)?)?),
            "asyncapi" => CallTask::AsyncApi(obj(need_with(with)?)?),
            "mcp" => CallTask::Mcp(obj(need_with(with)?)?),
            "a2a" => CallTask::A2a(obj(need_with(with)?)?),
            _ => CallTask::Function {
                name: call,
                with: match with {
                    None => None,
                    Some(w) => Some(obj(w)?),
                },
            },
        })
    }

    fn encode(&self) -> Result<(String, Option<Value>), serde_json::Error> {
        Ok(match self {
            CallTask::Http(a) => ("http".into(), Some(serde_json::to_value(a)?)),
            CallTask::OpenApi(a) => ("openapi".into(), Some(serde_json::to_value(a)?)),
            CallTask::Grpc(o) => ("grpc".into(), Some(Value::Object(o.clone()))),
            CallTask::AsyncApi(o) => ("asyncapi".into(), Some(Value::Object(o.clone()))),
            CallTask::Mcp(o) => ("mcp".into(), Some(Value::Object(o.clone()))),
            CallTask::A2a(o) => ("a2a".into(), Some(Value::Object(o.clone()))),
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// HTTP method, e.g. `get`.
    pub method: String,
    /// Where to send the request.
    pub endpoint: Endpoint,
    /// Request headers: an object of strings/expressions, or one expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Query parameters: an object of strings/expressions, or one expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Value>,
    /// `content` (default), `response` or `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<HttpOutputFormat>,
    /// Whether 3xx responses are followed rather than treated as errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

/// What a `call: http` task outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenApiArgs {
    /// The OpenAPI document.
    pub document: ExternalResource,
    /// The operation to call.
    pub operation_id: String,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Object>,
    /// Authentication to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
    /// Output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<HttpOutputFormat>,
    /// Whether 3xx responses are followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

/// An endpoint: a URI template, an expression, or a configuration object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Endpoint {
    /// A URI (template) or a runtime expression.
    Uri(String),
    /// `{ uri, authentication }`.
    Config(EndpointConfig),
}

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URI template or expression.
    pub uri: String,
    /// Authentication policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,
}

/// An authentication policy (or a reference to one with `use`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationPolicy {
    /// A name in `use.authentications`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// HTTP basic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerAuth>,
    /// HTTP digest (parsed; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<BasicAuth>,
    /// OAuth2 (parsed; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<Object>,
    /// OpenID Connect (parsed; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Object>,
}

/// Username/password, or a secret holding them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name (may be an expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (may be an expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A secret with `username` and `password`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A bearer token, or a secret holding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token (may be an expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A secret with `token`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// `fork`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fork {
    /// Branches run concurrently.
    pub branches: TaskList,
    /// Whether the first branch to finish wins and the others are cancelled.
    #[serde(default)]
    pub compete: bool,
}

/// `emit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Emit {
    /// The event to emit.
    pub event: EmitEvent,
}

/// The event of an `emit` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitEvent {
    /// CloudEvent attributes (`source` and `type` required) and `data`.
    pub with: Object,
}

/// `for` (with its `while` and `do`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForTask {
    /// The iteration.
    #[serde(rename = "for")]
    pub for_: ForSpec,
    /// Keep iterating while this is true.
    #[serde(default, rename = "while", skip_serializing_if = "Option::is_none")]
    pub while_: Option<String>,
    /// The body.
    #[serde(rename = "do")]
    pub do_: TaskList,
}

/// The `for` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForSpec {
    /// Variable name of the item (default `item`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,
    /// The collection (an expression).
    #[serde(rename = "in")]
    pub in_: String,
    /// Variable name of the index (default `index`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// `listen` (with its optional `foreach`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// What to listen to.
    pub listen: ListenSpec,
    /// Iterate over events as they arrive (parsed; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreach: Option<Object>,
}

/// The `listen` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSpec {
    /// The consumption strategy.
    pub to: EventConsumptionStrategy,
    /// `data` (default), `envelope` or `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ListenRead>,
}

/// How a listen task reads events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenRead {
    /// The event's data.
    Data,
    /// The whole CloudEvent.
    Envelope,
    /// The raw data.
    Raw,
}

/// `all`, `any` (with `until`) or `one`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventConsumptionStrategy {
    /// Wait for all of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<EventFilter>>,
    /// Wait for any of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<EventFilter>>,
    /// Wait for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one: Option<EventFilter>,
    /// With `any`: keep consuming until this expression or strategy is satisfied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Box<Until>>,
}

/// `until` of an `any` strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Until {
    /// An expression.
    Condition(String),
    /// Another strategy.
    Events(EventConsumptionStrategy),
}

/// An event filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Attributes the event must have.
    pub with: Object,
    /// Correlation keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlate: Option<Object>,
}

/// `raise`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raise {
    /// The error, inline or a name in `use.errors`.
    pub error: ErrorOrRef,
}

/// An error inline or a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorOrRef {
    /// Inline.
    Inline(ErrorDefinition),
    /// A name in `use.errors`.
    Ref(String),
}

/// An error as written in a definition (fields may be expressions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDefinition {
    /// The error type URI.
    #[serde(rename = "type")]
    pub type_: String,
    /// The status code.
    pub status: Value,
    /// The JSON pointer of the raising task (filled in when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// A short summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A longer explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTask {
    /// Whether to wait for the process to finish (default true).
    #[serde(default, rename = "await", skip_serializing_if = "Option::is_none")]
    pub await_: Option<bool>,
    /// What the task returns for a process.
    #[serde(default, rename = "return", skip_serializing_if = "Option::is_none")]
    pub return_: Option<String>,
    /// A container (parsed; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Object>,
    /// A script (parsed; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Object>,
    /// A shell command (parsed; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Object>,
    /// A sub-workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<SubWorkflow>,
}

/// `run: workflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubWorkflow {
    /// Namespace of the workflow to run.
    pub namespace: String,
    /// Name of the workflow to run.
    pub name: String,
    /// Version (default `latest`).
    #[serde(default = "latest")]
    pub version: String,
    /// Input of the sub-workflow (values may be expressions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

fn latest() -> String {
    "latest".to_string()
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchCaseBody {
    #[serde(default)]
    when: Option<String>,
    then: FlowDirective,
}

/// `try` with its `catch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TryTask {
    /// Tasks to try.
    #[serde(rename = "try")]
    pub try_: TaskList,
    /// How errors are caught.
    pub catch: Catch,
}

/// The `catch` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catch {
    /// Which errors are caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<CatchErrors>,
    /// Variable name of the caught error (default `error`).
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_: Option<String>,
    /// Catch only when this is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Do not catch when this is true.
    #[serde(default, rename = "exceptWhen", skip_serializing_if = "Option::is_none")]
    pub except_when: Option<String>,
    /// Retry the `try` block, inline policy or a name in `use.retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOrRef>,
    /// Tasks run when an error is caught (after retries are exhausted).
    #[serde(default, rename = "do", skip_serializing_if = "Option::is_none")]
    pub do_: Option<TaskList>,
}

/// `catch.errors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatchErrors {
    /// Properties the error must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<Object>,
}

/// A retry policy inline or a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RetryOrRef {
    /// Inline.
    Inline(RetryPolicy),
    /// A name in `use.retries`.
    Ref(String),
}

/// A retry policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retry only when this is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Do not retry when this is true.
    #[serde(default, rename = "exceptWhen", skip_serializing_if = "Option::is_none")]
    pub except_when: Option<String>,
    /// Base delay between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// How the delay grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Limits on attempts and total time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<RetryLimit>,
    /// Random extra delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
}

/// Backoff: exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// The delay stays the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<Object>,
    /// The delay grows as `delay * attempt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<Object>,
    /// The delay grows as `delay * 2^(attempt-1)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential: Option<Object>,
}

/// `limit` of a retry policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryLimit {
    /// Limits per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptLimit>,
    /// Total time allowed for all attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// `limit.attempt`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptLimit {
    /// Maximum number of attempts (retries), not counting the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Maximum duration of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// `jitter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jitter {
    /// Lower bound.
    pub from: Duration,
    /// Upper bound.
    pub to: Duration,
}
