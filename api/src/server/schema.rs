//! The GraphQL schema, code-first: queries and mutations here, subscriptions in
//! `subscriptions.rs`, error codes in `errors.rs`.
//!
//! Reads go to the store, never to the runtime's in-memory cache: a run may be executed by
//! another process on the same store, and the store is the only view every process shares.

use super::auth::{Permission, Require};
use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{
    Context, Enum, ErrorExtensions, InputObject, InputValueError, InputValueResult, Json,
    MergedObject, Object, Result, Scalar, ScalarType, Schema, SimpleObject,
};
use base64::Engine as _;
use cairn_core::decider::iso8601;
use cairn_core::dsl::{self, Problem as DslProblem, SourceFormat, Workflow};
use cairn_core::events::RunEvent;
use cairn_core::state::RunState;
use cairn_runtime::store::{
    EventStore, RunOrder, RunQuery, RunSortField, RunSummary, StoredDefinition, StoredEvent,
    RUN_AGGREGATE,
};
use cairn_runtime::{Runtime, StartOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::errors::{self, Code};
use super::feed::LogFeed;
use super::metrics::Metrics;
use super::subscriptions::SubscriptionRoot;

/// The schema type.
pub type CairnSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Default query depth limit: deep enough for every real query of this schema, shallow enough
/// to stop pathological nesting.
pub const MAX_DEPTH: usize = 16;
/// Default query complexity limit (async-graphql's default cost of 1 per field).
pub const MAX_COMPLEXITY: usize = 2_000;
/// Largest page of a connection.
const MAX_PAGE: i32 = 500;

/// What resolvers share: the runtime and the services of the server.
#[derive(Clone)]
pub struct App {
    /// The runtime (a worker, or a client under `--no-workers`).
    pub runtime: Runtime,
    /// Its store.
    pub store: Arc<dyn EventStore>,
    /// The log follower.
    pub feed: LogFeed,
    /// Metrics.
    pub metrics: Metrics,
    /// Cancelled when the server drains: subscriptions end.
    pub shutdown: CancellationToken,
}

/// Limits of the schema: `cairn serve` flags.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest selection allowed.
    pub depth: usize,
    /// Largest complexity allowed.
    pub complexity: usize,
    /// Whether `__schema` and `__type` answer.
    pub introspection: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: MAX_DEPTH,
            complexity: MAX_COMPLEXITY,
            introspection: true,
        }
    }
}

/// Builds the schema; `app` is `None` only to print the SDL. `subscriptions` caps live
/// subscriptions (none: no cap, as for the SDL and the schema tests).
pub fn build(
    app: Option<App>,
    limits: Limits,
    subscriptions: Option<super::limits::SubscriptionLimits>,
) -> CairnSchema {
    let mut b = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .limit_depth(limits.depth)
    .limit_complexity(limits.complexity)
    .extension(errors::ErrorCodes)
    .extension(super::auth::Authenticated);
    if !limits.introspection {
        b = b.disable_introspection().extension(errors::NoIntrospection);
    }
    if let Some(s) = subscriptions {
        b = b.extension(s);
    }
    if let Some(app) = app {
        b = b.extension(app.metrics.graphql_timing()).data(app);
    }
    b.finish()
}

/// The SDL of the schema, as exported to `schemas/graphql/schema.graphql`.
#[cfg_attr(not(test), allow(dead_code))]
pub fn sdl() -> String {
    build(None, Limits::default(), None).sdl()
}

pub(super) fn app<'a>(ctx: &Context<'a>) -> Result<&'a App> {
    ctx.data::<App>()
        .map_err(|e| errors::internal("context", e.message))
}

// ----- shared types ---------------------------------------------------------------------------

/// Where a run is in its life.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RunStatus {
    /// Recorded, not started yet.
    Pending,
    /// Executing.
    Running,
    /// Nothing can progress until a timer, an event or a sub-workflow arrives.
    Waiting,
    /// Paused by an operator.
    Suspended,
    /// Finished with an output.
    Completed,
    /// Finished with an uncaught error (it can be retried).
    Faulted,
    /// Cancelled.
    Cancelled,
}

impl RunStatus {
    /// From the lowercase label the runtime and the runs index use.
    pub fn from_label(s: &str) -> RunStatus {
        match s {
            "pending" => RunStatus::Pending,
            "waiting" => RunStatus::Waiting,
            "suspended" => RunStatus::Suspended,
            "completed" => RunStatus::Completed,
            "faulted" => RunStatus::Faulted,
            "cancelled" => RunStatus::Cancelled,
            _ => RunStatus::Running,
        }
    }

    /// The lowercase label.
    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Suspended => "suspended",
            RunStatus::Completed => "completed",
            RunStatus::Faulted => "faulted",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// A problem found in a definition, with its location.
#[derive(SimpleObject, Clone, Debug)]
pub struct Problem {
    /// JSON pointer of the offending node (`""` for the document).
    pub pointer: String,
    /// 1-based line in the source, when known.
    pub line: Option<u32>,
    /// 1-based column in the source, when known.
    pub column: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl From<&DslProblem> for Problem {
    fn from(p: &DslProblem) -> Self {
        Problem {
            pointer: p.pointer.clone(),
            line: p.line.and_then(|l| u32::try_from(l).ok()),
            column: p.column.and_then(|c| u32::try_from(c).ok()),
            message: p.message.clone(),
        }
    }
}

/// A stored definition.
pub struct Definition(pub StoredDefinition);

#[Object]
impl Definition {
    /// `document.namespace`.
    async fn namespace(&self) -> &str {
        &self.0.namespace
    }
    /// `document.name`.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// `document.version`.
    async fn version(&self) -> &str {
        &self.0.version
    }
    /// Content hash (SHA-256 of the canonical JSON): the identity runs are pinned to.
    async fn hash(&self) -> &str {
        &self.0.hash
    }
    /// The definition as canonical JSON text.
    async fn source(&self) -> String {
        serde_json::to_string_pretty(&self.0.source).unwrap_or_else(|_| self.0.source.to_string())
    }
    /// Problems found when the stored definition is checked again (empty when valid).
    async fn problems(&self) -> Vec<Problem> {
        match serde_json::from_value::<Workflow>(self.0.source.clone()) {
            Ok(w) => match dsl::validate(&w) {
                Ok(()) => Vec::new(),
                Err(e) => e.problems.iter().map(Problem::from).collect(),
            },
            Err(e) => vec![Problem {
                pointer: String::new(),
                line: None,
                column: None,
                message: format!("the stored definition cannot be decoded: {e}"),
            }],
        }
    }
}

/// Names a definition: `version` defaults to `latest` (the highest semantic version).
#[derive(InputObject, Debug)]
pub struct DefinitionKey {
    /// `document.namespace`.
    pub namespace: String,
    /// `document.name`.
    pub name: String,
    /// `document.version`, or `latest`.
    #[graphql(default = "latest")]
    pub version: String,
}

/// The definition a run is pinned to.
#[derive(SimpleObject, Clone, Debug)]
pub struct DefinitionRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Content hash.
    pub hash: String,
}

/// One event of a run's history. Cheap to clone: the event is shared (one per event for every
/// subscriber), and its payload is upcast at most once, when a selection asks for `data`.
#[derive(Clone, Debug)]
pub struct RunEventNode(Arc<RunEventCell>);

#[derive(Debug)]
struct RunEventCell {
    event: StoredEvent,
    data: std::sync::OnceLock<Value>,
}

impl RunEventNode {
    /// Wraps a stored event (no decoding: `data` is computed when first selected).
    pub fn new(e: StoredEvent) -> Self {
        RunEventNode(Arc::new(RunEventCell {
            event: e,
            data: std::sync::OnceLock::new(),
        }))
    }

    /// From a stored event; an event this version cannot decode is shown as stored.
    pub fn from_stored(e: &StoredEvent) -> Self {
        RunEventNode::new(e.clone())
    }

    /// The event as stored.
    pub fn stored(&self) -> &StoredEvent {
        &self.0.event
    }

    /// Whether both are the same shared value (for tests).
    #[cfg(test)]
    pub fn same_as(&self, other: &RunEventNode) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One event of a run's history.
#[Object(name = "RunEvent")]
impl RunEventNode {
    /// Global position in the log: resume a subscription after it.
    async fn position(&self) -> u64 {
        self.0.event.position
    }

    /// Sequence within the run (1-based).
    async fn sequence(&self) -> u64 {
        self.0.event.sequence
    }

    /// Event type (`RunStarted`, `TaskCompleted`, ...).
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event.event_type
    }

    /// Payload, upcast to the current event version.
    async fn data(&self) -> Json<&Value> {
        let e = &self.0.event;
        Json(self.0.data.get_or_init(|| {
            match RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone()) {
                Ok(ev) => ev.payload(),
                Err(_) => e.payload.clone(),
            }
        }))
    }

    /// When it was recorded (ISO 8601), when known.
    async fn recorded_at(&self) -> Option<String> {
        self.0
            .event
            .metadata
            .get("recorded_at")
            .and_then(Value::as_i64)
            .map(iso8601)
    }
}

/// One task activation of a run, from its start to its end.
#[derive(SimpleObject, Clone, Debug)]
pub struct TaskSpan {
    /// Activation id (unique in the run).
    pub id: u64,
    /// The task's JSON pointer, e.g. `/do/0/getPet`.
    pub position: String,
    /// The task's name.
    pub name: String,
    /// The task's kind (`call`, `wait`, `do`, ...).
    pub kind: String,
    /// `running`, `completed`, `faulted` or `cancelled`.
    pub status: String,
    /// When it started (ISO 8601).
    pub started_at: String,
    /// When it completed or faulted (ISO 8601).
    pub finished_at: Option<String>,
    /// Attempts: calls scheduled for a `call`, tries for a `try`; 1 otherwise.
    pub attempts: u32,
    /// The last error it met (a failed attempt, a retried or faulting error).
    pub error: Option<Json<Value>>,
}

/// The timeline of a run's tasks, derived from its history.
pub fn timeline(events: &[(StoredEvent, RunEvent)]) -> Vec<TaskSpan> {
    let mut spans: Vec<TaskSpan> = Vec::new();
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (_, e) in events {
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
                    status: "running".into(),
                    started_at: iso8601(*at),
                    finished_at: None,
                    attempts: 0,
                    error: None,
                });
            }
            RunEvent::ActivityScheduled { id, .. } => {
                if let Some(s) = index.get(id).and_then(|i| spans.get_mut(*i)) {
                    s.attempts += 1;
                }
            }
            RunEvent::TaskRetried { id, attempt } => {
                if let Some(s) = index.get(id).and_then(|i| spans.get_mut(*i)) {
                    s.attempts = attempt.saturating_add(1);
                }
            }
            RunEvent::ActivityFailed { id, error, .. }
            | RunEvent::RetryScheduled { id, error, .. }
            | RunEvent::ErrorCaught { id, error } => {
                if let Some(s) = index.get(id).and_then(|i| spans.get_mut(*i)) {
                    s.error = Some(Json(error.to_value()));
                }
            }
            RunEvent::TaskCompleted { id, at, .. } => {
                if let Some(s) = index.get(id).and_then(|i| spans.get_mut(*i)) {
                    s.status = "completed".into();
                    s.finished_at = Some(iso8601(*at));
                }
            }
            RunEvent::TaskFaulted { id, error, at } => {
                if let Some(s) = index.get(id).and_then(|i| spans.get_mut(*i)) {
                    s.status = "faulted".into();
                    s.finished_at = Some(iso8601(*at));
                    s.error = Some(Json(error.to_value()));
                }
            }
            RunEvent::TaskCancelled { id } => {
                if let Some(s) = index.get(id).and_then(|i| spans.get_mut(*i)) {
                    s.status = "cancelled".into();
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

/// A run: its state folded from its history as stored.
pub struct Run {
    id: String,
    events: Vec<(StoredEvent, RunEvent)>,
    state: RunState,
}

/// Decodes a stored run event (upcasting old versions).
pub fn decode(e: &StoredEvent) -> std::result::Result<RunEvent, String> {
    RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone())
        .map_err(|err| format!("run {} event {}: {err}", e.stream, e.sequence))
}

impl Run {
    /// Loads a run from the store; `NOT_FOUND` when it has no events.
    pub async fn load(store: &dyn EventStore, id: &str) -> Result<Run> {
        let stored = store
            .load(RUN_AGGREGATE, id, 0)
            .await
            .map_err(|e| errors::store("load run", e))?;
        if stored.is_empty() {
            return Err(errors::error(Code::NotFound, format!("run {id} not found")));
        }
        let mut events = Vec::with_capacity(stored.len());
        for e in stored {
            let ev = decode(&e).map_err(|m| errors::internal("decode run", m))?;
            events.push((e, ev));
        }
        let state = RunState::from_events(events.iter().map(|(_, e)| e));
        Ok(Run {
            id: id.to_string(),
            events,
            state,
        })
    }
}

#[Object]
impl Run {
    /// Run id.
    async fn id(&self) -> &str {
        &self.id
    }
    /// Status.
    async fn status(&self) -> RunStatus {
        RunStatus::from_label(self.state.status_label())
    }
    /// The definition the run is pinned to.
    async fn definition(&self) -> Option<DefinitionRef> {
        self.state.definition.as_ref().map(|d| DefinitionRef {
            namespace: d.namespace.clone(),
            name: d.name.clone(),
            version: d.version.clone(),
            hash: d.hash.clone(),
        })
    }
    /// The raw input.
    async fn input(&self) -> Json<Value> {
        Json(self.state.raw_input.clone())
    }
    /// The output, once completed.
    async fn output(&self) -> Option<Json<Value>> {
        self.state.output.clone().map(Json)
    }
    /// The error (RFC 7807 shape), once faulted.
    async fn error(&self) -> Option<Json<Value>> {
        self.state.error.as_ref().map(|e| Json(e.to_value()))
    }
    /// JSON pointers of the tasks running now.
    async fn current_tasks(&self) -> Vec<String> {
        self.state.current_tasks()
    }
    /// When it started (ISO 8601).
    async fn started_at(&self) -> String {
        iso8601(self.state.started_at)
    }
    /// Time of its last event that carries one (ISO 8601).
    async fn updated_at(&self) -> String {
        iso8601(self.state.updated_at)
    }
    /// The parent run, for a sub-workflow.
    async fn parent_run_id(&self) -> Option<&str> {
        self.state.parent.as_ref().map(|p| p.run_id.as_str())
    }
    /// The correlation id the run was started with, if any.
    async fn correlation_id(&self) -> Option<&str> {
        self.state.correlation_id.as_deref()
    }
    /// How many times an operator retried it.
    async fn retries(&self) -> u32 {
        self.state.retries
    }
    /// Global position of its last event: subscribe with `after` set to it to follow on.
    async fn last_position(&self) -> u64 {
        self.events.last().map_or(0, |(e, _)| e.position)
    }
    /// Its task activations in start order, with their outcome.
    async fn timeline(&self) -> Vec<TaskSpan> {
        timeline(&self.events)
    }
    /// Its events by position: `after` is the position (the cursor) to continue after.
    async fn events(
        &self,
        #[graphql(default = 100)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<String, RunEventNode>> {
        let first = page_size(first)?;
        let after = match after {
            None => 0,
            Some(c) => c.parse::<u64>().map_err(|_| {
                errors::error(Code::BadUserInput, "`after` must be an event position")
            })?,
        };
        let mut rest = self.events.iter().filter(|(e, _)| e.position > after);
        let page: Vec<_> = rest.by_ref().take(first).collect();
        let mut conn = Connection::new(after > 0, rest.next().is_some());
        conn.edges.extend(
            page.into_iter()
                .map(|(e, _)| Edge::new(e.position.to_string(), RunEventNode::from_stored(e))),
        );
        Ok(conn)
    }
}

/// A row of the runs list.
pub struct RunSummaryNode(pub RunSummary);

#[Object(name = "RunSummary")]
impl RunSummaryNode {
    /// Run id.
    async fn id(&self) -> &str {
        &self.0.run_id
    }
    /// Definition namespace.
    async fn namespace(&self) -> &str {
        &self.0.namespace
    }
    /// Definition name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Definition version.
    async fn version(&self) -> &str {
        &self.0.version
    }
    /// Status.
    async fn status(&self) -> RunStatus {
        RunStatus::from_label(&self.0.status)
    }
    /// When it was created (ISO 8601).
    async fn created_at(&self) -> String {
        iso8601(self.0.created_at)
    }
    /// When it last changed (ISO 8601).
    async fn updated_at(&self) -> String {
        iso8601(self.0.updated_at)
    }
    /// The correlation id the run was started with, if any.
    async fn correlation_id(&self) -> Option<&str> {
        self.0.correlation_id.as_deref()
    }
    /// The whole run (loads its history).
    async fn run(&self, ctx: &Context<'_>) -> Result<Run> {
        Run::load(app(ctx)?.store.as_ref(), &self.0.run_id).await
    }
}

/// A point in time: on input an RFC 3339 date-time with any offset (`2026-11-27T18:00:00Z`,
/// `2026-11-27T19:00:00.250+01:00`), kept to the millisecond; on output RFC 3339 in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Description)]
pub struct DateTime(pub i64);

#[Scalar(
    name = "DateTime",
    use_type_description,
    specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339"
)]
impl ScalarType for DateTime {
    fn parse(value: async_graphql::Value) -> InputValueResult<Self> {
        let async_graphql::Value::String(text) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| DateTime(t.timestamp_millis()))
            .map_err(|e| {
                InputValueError::custom(format!(
                    "`{text}` is not an RFC 3339 date-time such as 2026-11-27T18:00:00Z: {e}"
                ))
            })
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::String(iso8601(self.0))
    }
}

/// Filter of the runs list and of `runsChanged`.
#[derive(InputObject, Debug, Default, Clone)]
pub struct RunsFilter {
    /// Only runs in one of these statuses.
    pub status: Option<Vec<RunStatus>>,
    /// Only runs of definitions in this namespace.
    pub namespace: Option<String>,
    /// Only runs of definitions with this name.
    pub name: Option<String>,
    /// Only runs started at or after this time (inclusive).
    pub started_after: Option<DateTime>,
    /// Only runs started strictly before this time (so `startedAfter: T` of one window and
    /// `startedBefore: T` of the previous one neither overlap nor leave a gap).
    pub started_before: Option<DateTime>,
    /// Only runs started with this correlation id (exact match).
    pub correlation_id: Option<String>,
}

impl RunsFilter {
    /// Whether a run summary passes.
    pub fn matches(&self, s: &RunSummary) -> bool {
        self.status
            .as_ref()
            .is_none_or(|st| st.iter().any(|x| x.label() == s.status))
            && self.namespace.as_ref().is_none_or(|n| *n == s.namespace)
            && self.name.as_ref().is_none_or(|n| *n == s.name)
            && self.started_after.is_none_or(|t| s.created_at >= t.0)
            && self.started_before.is_none_or(|t| s.created_at < t.0)
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|c| s.correlation_id.as_ref() == Some(c))
    }

    /// `BAD_USER_INPUT` when a field could never match (a malformed correlation id).
    pub(super) fn check(&self) -> Result<()> {
        check_correlation_id(self.correlation_id.as_deref())
    }

    /// The store query of this filter (no page bounds set; newest first).
    pub(super) fn query(&self) -> RunQuery {
        let mut q = RunQuery::default();
        q.statuses = self
            .status
            .iter()
            .flatten()
            .map(|s| s.label().to_string())
            .collect();
        q.namespace = self.namespace.clone();
        q.name = self.name.clone();
        q.created_from = self.started_after.map(|t| t.0);
        q.created_before = self.started_before.map(|t| t.0);
        q.correlation_id = self.correlation_id.clone();
        q
    }
}

/// What the runs list sorts on; the run id breaks ties.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum RunOrderField {
    /// When the run started (stable: pages never shift).
    #[default]
    CreatedAt,
    /// When the run last changed (a run that changes while you page moves in the order).
    UpdatedAt,
}

/// A sort direction.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum OrderDirection {
    /// Smallest first.
    Asc,
    /// Largest (newest) first.
    #[default]
    Desc,
}

/// The order of the runs list (default: `CREATED_AT`, `DESC`).
#[derive(InputObject, Debug, Default, Clone, Copy)]
pub struct RunsOrderBy {
    /// The key.
    #[graphql(default)]
    pub field: RunOrderField,
    /// The direction.
    #[graphql(default)]
    pub direction: OrderDirection,
}

impl RunsOrderBy {
    fn store(self) -> RunOrder {
        RunOrder {
            field: match self.field {
                RunOrderField::CreatedAt => RunSortField::CreatedAt,
                RunOrderField::UpdatedAt => RunSortField::UpdatedAt,
            },
            descending: self.direction == OrderDirection::Desc,
        }
    }
}

fn page_size(first: i32) -> Result<usize> {
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(errors::error(
            Code::BadUserInput,
            format!("`first` must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(usize::try_from(first).unwrap_or(1))
}

/// The tag of an order in a cursor, so that a cursor of one order is refused by another.
fn order_tag(order: RunOrder) -> &'static str {
    match (order.field, order.descending) {
        (RunSortField::CreatedAt, true) => "cd",
        (RunSortField::CreatedAt, false) => "ca",
        (RunSortField::UpdatedAt, true) => "ud",
        (RunSortField::UpdatedAt, false) => "ua",
    }
}

/// The opaque cursor of a row in `order`: its sort key and run id (keyset pagination).
fn run_cursor(s: &RunSummary, order: RunOrder) -> String {
    let key = match order.field {
        RunSortField::CreatedAt => s.created_at,
        RunSortField::UpdatedAt => s.updated_at,
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}:{key}:{}",
        order_tag(order),
        s.run_id
    ))
}

fn parse_run_cursor(c: &str, order: RunOrder) -> Result<(i64, String)> {
    let bad = || errors::error(Code::BadUserInput, "`after` is not a cursor of this list");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (tag, rest) = text.split_once(':').ok_or_else(bad)?;
    if tag != order_tag(order) {
        return Err(errors::error(
            Code::BadUserInput,
            "`after` is a cursor of another `orderBy`; start again without `after`",
        ));
    }
    let (key, id) = rest.split_once(':').ok_or_else(bad)?;
    Ok((key.parse().map_err(|_| bad())?, id.to_string()))
}

// ----- queries --------------------------------------------------------------------------------

/// The query root: one object per area, merged, so that later areas (projections, tokens) add
/// their own object rather than grow one file.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(DefinitionQueries, RunQueries, super::tokens::TokenQueries);

/// Queries on definitions.
#[derive(Default)]
pub struct DefinitionQueries;

#[Object]
impl DefinitionQueries {
    /// Stored definitions, by namespace, name and registration order.
    #[graphql(guard = "Require(Permission::Read)")]
    async fn definitions(
        &self,
        ctx: &Context<'_>,
        namespace: Option<String>,
        name: Option<String>,
    ) -> Result<Vec<Definition>> {
        let all = app(ctx)?
            .store
            .list_definitions()
            .await
            .map_err(|e| errors::store("list definitions", e))?;
        Ok(all
            .into_iter()
            .filter(|d| namespace.as_ref().is_none_or(|n| *n == d.namespace))
            .filter(|d| name.as_ref().is_none_or(|n| *n == d.name))
            .map(Definition)
            .collect())
    }

    /// One definition; `version` `latest` (the default) picks the highest semantic version.
    #[graphql(guard = "Require(Permission::Read)")]
    async fn definition(
        &self,
        ctx: &Context<'_>,
        namespace: String,
        name: String,
        #[graphql(default = "latest")] version: String,
    ) -> Result<Option<Definition>> {
        // Nullable, so that a `NOT_FOUND` leaves the rest of the query's data in place.
        find_definition(app(ctx)?, &namespace, &name, &version)
            .await
            .map(|d| Some(Definition(d)))
    }
}

async fn find_definition(
    app: &App,
    namespace: &str,
    name: &str,
    version: &str,
) -> Result<StoredDefinition> {
    app.store
        .find_definition(namespace, name, version)
        .await
        .map_err(|e| errors::store("find definition", e))?
        .ok_or_else(|| {
            errors::error(
                Code::NotFound,
                format!("definition {namespace}/{name} {version} not found"),
            )
        })
}

/// Queries on runs.
#[derive(Default)]
pub struct RunQueries;

#[Object]
impl RunQueries {
    /// Runs as a Relay connection, newest first unless `orderBy` says otherwise. Cursors are
    /// keyset positions (sort key and run id): a page never repeats or skips a run because new
    /// runs arrived; a cursor belongs to the `orderBy` it was issued under.
    #[graphql(guard = "Require(Permission::Read)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        filter: Option<RunsFilter>,
        order_by: Option<RunsOrderBy>,
    ) -> Result<Connection<String, RunSummaryNode>> {
        let first = page_size(first)?;
        let order = order_by.unwrap_or_default().store();
        let filter = filter.unwrap_or_default();
        filter.check()?;
        let mut q = filter.query();
        q.order = order;
        q.after = after
            .as_deref()
            .map(|c| parse_run_cursor(c, order))
            .transpose()?;
        q.limit = first as u64 + 1;
        let mut rows = app(ctx)?
            .store
            .query_runs(&q)
            .await
            .map_err(|e| errors::store("list runs", e))?;
        let more = rows.len() > first;
        rows.truncate(first);
        let mut conn = Connection::new(q.after.is_some(), more);
        conn.edges.extend(
            rows.into_iter()
                .map(|r| Edge::new(run_cursor(&r, order), RunSummaryNode(r))),
        );
        Ok(conn)
    }

    /// One run (`NOT_FOUND` when it does not exist).
    #[graphql(guard = "Require(Permission::Read)")]
    async fn run(&self, ctx: &Context<'_>, id: String) -> Result<Option<Run>> {
        Run::load(app(ctx)?.store.as_ref(), &id).await.map(Some)
    }
}

// ----- mutations ------------------------------------------------------------------------------

/// The mutation root.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    DefinitionMutations,
    RunMutations,
    super::tokens::TokenMutations,
);

/// The outcome of `deployDefinition`: the definition, or the problems that stopped it.
#[derive(SimpleObject)]
pub struct DeployResult {
    /// Whether it was recorded.
    pub ok: bool,
    /// The recorded definition.
    pub definition: Option<Definition>,
    /// What is wrong with the source (empty when `ok`).
    pub problems: Vec<Problem>,
}

/// Mutations on definitions.
#[derive(Default)]
pub struct DefinitionMutations;

#[Object]
impl DefinitionMutations {
    /// Validates and records a definition (YAML or JSON). Problems come back as data.
    #[graphql(guard = "Require(Permission::Deploy)")]
    async fn deploy_definition(&self, ctx: &Context<'_>, source: String) -> Result<DeployResult> {
        let app = app(ctx)?;
        let def = match load_source(source).await? {
            Ok(d) => d,
            Err(e) => {
                return Ok(DeployResult {
                    ok: false,
                    definition: None,
                    problems: e.problems.iter().map(Problem::from).collect(),
                })
            }
        };
        let r = app
            .runtime
            .deploy(def)
            .await
            .map_err(|e| errors::runtime("deploy definition", e))?;
        let stored = app
            .store
            .definition_by_hash(&r.hash)
            .await
            .map_err(|e| errors::store("deploy definition", e))?
            .ok_or_else(|| errors::internal("deploy definition", "deployed but not found"))?;
        Ok(DeployResult {
            ok: true,
            definition: Some(Definition(stored)),
            problems: Vec::new(),
        })
    }
}

/// Parses and validates a definition's text on a blocking thread, off the threads that serve
/// requests; the request's timeout still bounds the answer.
async fn load_source(
    source: String,
) -> Result<std::result::Result<Workflow, dsl::ValidationErrors>> {
    tokio::task::spawn_blocking(move || dsl::load_str(&source, SourceFormat::Yaml))
        .await
        .map_err(|e| errors::internal("parse definition", e))
}

/// The outcome of `startRun`.
#[derive(SimpleObject)]
pub struct StartRunResult {
    /// The run.
    pub run: Run,
    /// False when the idempotency key named a run that already existed.
    pub created: bool,
}

/// `BAD_USER_INPUT` unless a given correlation id is well formed.
pub(super) fn check_correlation_id(id: Option<&str>) -> Result<()> {
    match id.map(cairn_core::events::check_correlation_id) {
        Some(Err(m)) => Err(errors::error(
            Code::BadUserInput,
            format!("`correlationId`: {m}"),
        )),
        _ => Ok(()),
    }
}

/// Namespace of the UUIDv5 run ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6361_6972_6e2d_5275_6e2d_4964_656d_706f);

/// The run id an idempotency key stands for: the same key always names the same run, on every
/// server, with no table to keep.
pub fn run_id_for_key(key: &str) -> String {
    uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_bytes()).to_string()
}

/// Mutations on runs.
#[derive(Default)]
pub struct RunMutations;

#[Object]
impl RunMutations {
    /// Starts a run of a deployed definition (`definition`) or of a definition given as text
    /// (`source`: recorded for this run only, never deployed, so `latest` does not change; it
    /// needs the right to deploy as well as to operate). With an `idempotencyKey`, the same key
    /// returns the same run. A `correlationId` (1 to 256 characters, no control characters) is
    /// recorded with the run, and the runs list can be filtered by it.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn start_run(
        &self,
        ctx: &Context<'_>,
        definition: Option<DefinitionKey>,
        source: Option<String>,
        input: Option<Json<Value>>,
        idempotency_key: Option<String>,
        correlation_id: Option<String>,
    ) -> Result<StartRunResult> {
        let app = app(ctx)?;
        check_correlation_id(correlation_id.as_deref())?;
        let def: Workflow = match (definition, source) {
            (Some(k), None) => {
                let stored = find_definition(app, &k.namespace, &k.name, &k.version).await?;
                serde_json::from_value(stored.source)
                    .map_err(|e| errors::internal("start run", e))?
            }
            (None, Some(text)) => {
                // Running code nobody deployed is deploying it: it needs that right too.
                super::auth::require(ctx, Permission::Deploy)?;
                load_source(text).await?.map_err(|e| {
                    let problems: Vec<Value> = e
                        .problems
                        .iter()
                        .filter_map(|p| serde_json::to_value(p).ok())
                        .collect();
                    errors::error(Code::BadUserInput, "the definition is invalid").extend_with(
                        move |_, ext| {
                            if let Ok(v) =
                                async_graphql::Value::from_json(Value::Array(problems.clone()))
                            {
                                ext.set("problems", v);
                            }
                        },
                    )
                })?
            }
            _ => {
                return Err(errors::error(
                    Code::BadUserInput,
                    "give exactly one of `definition` and `source`",
                ))
            }
        };
        let input = input.map(|j| j.0).unwrap_or_else(|| serde_json::json!({}));
        let run_id = match &idempotency_key {
            Some(k) if k.is_empty() || k.len() > 256 => {
                return Err(errors::error(
                    Code::BadUserInput,
                    "`idempotencyKey` must have 1 to 256 characters",
                ))
            }
            Some(k) => Some(run_id_for_key(k)),
            None => None,
        };
        let (ns, name) = (def.document.namespace.clone(), def.document.name.clone());
        let opts = StartOptions {
            run_id: run_id.clone(),
            correlation_id,
            ..StartOptions::default()
        };
        match app.runtime.start_run_with(def, input, opts).await {
            // Counted as started by the runtime (`cairn_runs_started_total`).
            Ok(id) => Ok(StartRunResult {
                run: Run::load(app.store.as_ref(), &id).await?,
                created: true,
            }),
            Err(cairn_runtime::Error::Conflict(_)) if run_id.is_some() => {
                let id = run_id.unwrap_or_default();
                let run = Run::load(app.store.as_ref(), &id).await?;
                let same = run
                    .state
                    .definition
                    .as_ref()
                    .is_some_and(|d| d.namespace == ns && d.name == name);
                if !same {
                    return Err(errors::error(
                        Code::Conflict,
                        "this idempotency key was used for a run of another definition",
                    ));
                }
                Ok(StartRunResult {
                    run,
                    created: false,
                })
            }
            Err(e) => Err(errors::runtime("start run", e)),
        }
    }

    /// Delivers a CloudEvent to a run (for its `listen` tasks); duplicates (same `source` and
    /// `id`) are dropped.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn signal_run(&self, ctx: &Context<'_>, id: String, event: Json<Value>) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .signal(&id, event.0)
            .await
            .map_err(|e| errors::runtime("signal run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }

    /// Cancels a run.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn cancel_run(
        &self,
        ctx: &Context<'_>,
        id: String,
        reason: Option<String>,
    ) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .cancel(&id, reason)
            .await
            .map_err(|e| errors::runtime("cancel run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }

    /// Retries a faulted run from the task that failed.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn retry_run(&self, ctx: &Context<'_>, id: String) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .retry(&id)
            .await
            .map_err(|e| errors::runtime("retry run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }

    /// Suspends a run: nothing new starts until it is resumed.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn suspend_run(&self, ctx: &Context<'_>, id: String) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .suspend(&id)
            .await
            .map_err(|e| errors::runtime("suspend run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }

    /// Resumes a suspended run.
    #[graphql(guard = "Require(Permission::Operate)")]
    async fn resume_run(&self, ctx: &Context<'_>, id: String) -> Result<Run> {
        let app = app(ctx)?;
        app.runtime
            .resume(&id)
            .await
            .map_err(|e| errors::runtime("resume run", e))?;
        Run::load(app.store.as_ref(), &id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in SDL matches the code; `CAIRN_UPDATE_SCHEMAS=1` rewrites it.
    #[test]
    fn sdl_is_exported() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas/graphql/schema.graphql");
        let now = sdl();
        if std::env::var("CAIRN_UPDATE_SCHEMAS").is_ok_and(|v| v == "1") {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("create schemas/graphql");
            }
            std::fs::write(&path, &now).expect("write the SDL");
            return;
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == now,
            "{} differs from the schema the code builds; run \
             `CAIRN_UPDATE_SCHEMAS=1 cargo test -p cairn-api --lib sdl_is_exported` \
             and commit the result",
            path.display()
        );
    }

    #[test]
    fn idempotency_keys_name_stable_runs() {
        assert_eq!(run_id_for_key("order-1"), run_id_for_key("order-1"));
        assert_ne!(run_id_for_key("order-1"), run_id_for_key("order-2"));
    }

    #[test]
    fn run_cursors_round_trip() {
        let s = RunSummary {
            run_id: "a:b".into(),
            namespace: "n".into(),
            name: "x".into(),
            version: "1".into(),
            status: "running".into(),
            created_at: 42,
            updated_at: 7,
            next_timer_at: None,
            wake_at: None,
            correlation_id: None,
            parent_run_id: None,
        };
        let order = RunOrder::default();
        let (c, id) = parse_run_cursor(&run_cursor(&s, order), order).expect("a cursor");
        assert_eq!((c, id.as_str()), (42, "a:b"));
        assert!(parse_run_cursor("!!", order).is_err());
        let by_update = RunOrder {
            field: RunSortField::UpdatedAt,
            descending: false,
        };
        let (c, _) = parse_run_cursor(&run_cursor(&s, by_update), by_update).expect("a cursor");
        assert_eq!(c, 7);
        assert!(parse_run_cursor(&run_cursor(&s, by_update), order).is_err());
    }
}
