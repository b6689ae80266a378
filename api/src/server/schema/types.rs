//! The object types the queries, mutations and subscriptions share.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Json, Object, Result, SimpleObject};
use cairn_core::dsl::Problem as DslProblem;
use cairn_core::events::RunEvent;
use cairn_core::state::RunState;
use cairn_core::time::iso8601;
use cairn_runtime::store::{EventStore, RunSummary, StoredDefinition, StoredEvent};
use serde_json::Value;

use crate::server::errors::{self, Code};

use super::app::app;
use super::pagination::*;
use super::scalars::{DateTime, RunStatus};
use crate::server::feed::SharedEvent;
use cairn_core::definition::{DefinitionEvent, DefinitionState, PublishedVersion};
use cairn_runtime::definitions::DefinitionHistoryEntry;
use cairn_runtime::view::RunView;

// ----- shared types ---------------------------------------------------------------------------

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
    /// The version new runs that name no version start on (`latest`), from the definition's
    /// stream.
    async fn head(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(self.stream(ctx).await?.0.head)
    }
    /// Whether this version is deprecated (it starts no new runs).
    async fn deprecated(&self, ctx: &Context<'_>) -> Result<bool> {
        let (state, _) = self.stream(ctx).await?;
        Ok(state
            .version(&self.0.version)
            .is_some_and(|v| v.deprecated.is_some()))
    }
    /// Every published version of this namespace and name, in the order they were published.
    async fn versions(&self, ctx: &Context<'_>) -> Result<Vec<DefinitionVersion>> {
        let (state, _) = self.stream(ctx).await?;
        Ok(state
            .versions
            .iter()
            .map(|v| DefinitionVersion::of(v, state.head.as_deref()))
            .collect())
    }
    /// The events of this namespace and name's stream, oldest first: versions published, the
    /// head moved (by a deploy or a rollback), versions deprecated.
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<DefinitionHistoryEvent>> {
        let (_, history) = self.stream(ctx).await?;
        Ok(history.iter().map(Into::into).collect())
    }
    /// Problems found when the stored definition is checked again (empty when valid).
    async fn problems(&self) -> Vec<Problem> {
        cairn_runtime::definitions::recheck(&self.0)
            .iter()
            .map(Problem::from)
            .collect()
    }
}

impl Definition {
    async fn stream(
        &self,
        ctx: &Context<'_>,
    ) -> Result<(DefinitionState, Vec<DefinitionHistoryEntry>)> {
        app(ctx)?
            .runtime
            .definitions()
            .load(&self.0.namespace, &self.0.name)
            .await
            .map_err(|e| errors::runtime("load definition", e))
    }
}

/// A published version of a definition.
#[derive(SimpleObject, Clone, Debug)]
pub struct DefinitionVersion {
    /// The label (`document.version`).
    pub version: String,
    /// Its content hash.
    pub hash: String,
    /// Who published it: an API token's name, `cli`, or `migration`.
    pub published_by: String,
    /// When.
    pub published_at: DateTime,
    /// The publisher's note.
    pub note: Option<String>,
    /// Whether it is the head (`latest`).
    pub head: bool,
    /// Whether it is deprecated (it starts no new runs).
    pub deprecated: bool,
    /// Who deprecated it.
    pub deprecated_by: Option<String>,
    /// When it was deprecated.
    pub deprecated_at: Option<DateTime>,
    /// Why it was deprecated.
    pub deprecation_reason: Option<String>,
}

impl DefinitionVersion {
    /// `v` as shown, knowing the head.
    pub fn of(v: &PublishedVersion, head: Option<&str>) -> Self {
        let d = v.deprecated.as_ref();
        DefinitionVersion {
            version: v.label.clone(),
            hash: v.hash.clone(),
            published_by: v.by.clone(),
            published_at: DateTime(v.at),
            note: v.note.clone(),
            head: head == Some(v.label.as_str()),
            deprecated: d.is_some(),
            deprecated_by: d.map(|d| d.by.clone()),
            deprecated_at: d.map(|d| DateTime(d.at)),
            deprecation_reason: d.and_then(|d| d.reason.clone()),
        }
    }
}

/// An event of a definition's stream.
#[derive(SimpleObject, Clone, Debug)]
pub struct DefinitionHistoryEvent {
    /// Its sequence in the stream.
    pub sequence: u64,
    /// `VersionPublished`, `HeadMoved` or `VersionDeprecated`.
    #[graphql(name = "type")]
    pub event_type: String,
    /// The version published or deprecated, or the head's new version.
    pub version: String,
    /// The head's version before (`HeadMoved`).
    pub from: Option<String>,
    /// The content hash (`VersionPublished`).
    pub hash: Option<String>,
    /// `deploy` or `rollback` (`HeadMoved`), or the reason given (`VersionDeprecated`).
    pub reason: Option<String>,
    /// The publisher's note (`VersionPublished`).
    pub note: Option<String>,
    /// Who.
    pub by: String,
    /// When.
    pub at: DateTime,
}

impl From<&DefinitionHistoryEntry> for DefinitionHistoryEvent {
    fn from(h: &DefinitionHistoryEntry) -> Self {
        let mut out = DefinitionHistoryEvent {
            sequence: h.sequence,
            event_type: h.event.event_type().to_string(),
            version: String::new(),
            from: None,
            hash: None,
            reason: None,
            note: None,
            by: String::new(),
            at: DateTime(h.event.at()),
        };
        match &h.event {
            DefinitionEvent::VersionPublished {
                label,
                hash,
                by,
                note,
                ..
            } => {
                out.version = label.clone();
                out.hash = Some(hash.clone());
                out.by = by.clone();
                out.note = note.clone();
            }
            DefinitionEvent::HeadMoved {
                from,
                to,
                reason,
                by,
                ..
            } => {
                out.version = to.clone();
                out.from = from.clone();
                out.reason = Some(reason.as_str().to_string());
                out.by = by.clone();
            }
            DefinitionEvent::VersionDeprecated {
                label, by, reason, ..
            } => {
                out.version = label.clone();
                out.reason = reason.clone();
                out.by = by.clone();
            }
        }
        out
    }
}

/// Names a definition: `version` defaults to `latest` (the head).
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

/// One event of a run's history as the schema shows it: a [`SharedEvent`] of the log feed.
#[derive(Clone, Debug)]
pub struct RunEventNode(pub SharedEvent);

impl RunEventNode {
    /// Wraps a stored event (no decoding: `data` is computed when first selected).
    pub fn new(e: StoredEvent) -> Self {
        RunEventNode(SharedEvent::new(e))
    }

    /// From a stored event; an event this version cannot decode is shown as stored.
    pub fn from_stored(e: &StoredEvent) -> Self {
        RunEventNode::new(e.clone())
    }
}

/// One event of a run's history.
#[Object(name = "RunEvent")]
impl RunEventNode {
    /// Global position in the log: resume a subscription after it.
    async fn position(&self) -> u64 {
        self.0.stored().position
    }

    /// Sequence within the run (1-based).
    async fn sequence(&self) -> u64 {
        self.0.stored().sequence
    }

    /// Event type (`RunStarted`, `TaskCompleted`, ...).
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.stored().event_type
    }

    /// Payload, upcast to the current event version.
    async fn data(&self) -> Json<&Value> {
        Json(self.0.data())
    }

    /// When it was recorded (ISO 8601), when known.
    async fn recorded_at(&self) -> Option<String> {
        self.0
            .stored()
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

impl From<cairn_runtime::view::TaskSpan> for TaskSpan {
    fn from(s: cairn_runtime::view::TaskSpan) -> TaskSpan {
        TaskSpan {
            id: s.id,
            position: s.position,
            name: s.name,
            kind: s.kind,
            status: s.status.as_str().to_string(),
            started_at: iso8601(s.started_at),
            finished_at: s.finished_at.map(iso8601),
            attempts: s.attempts,
            error: s.error.map(|e| Json(e.to_value())),
        }
    }
}

/// A run: its state folded from its history as stored (the runtime's [`RunView`]).
pub struct Run {
    id: String,
    events: Vec<(StoredEvent, RunEvent)>,
    pub(crate) state: RunState,
}

impl Run {
    /// Loads a run from the store; `NOT_FOUND` when it has no events.
    pub async fn load(store: &dyn EventStore, id: &str) -> Result<Run> {
        let view = cairn_runtime::view::load(store, id)
            .await
            .map_err(|e| errors::runtime("load run", e))?;
        Ok(Run::from(view))
    }
}

impl From<RunView> for Run {
    fn from(v: RunView) -> Run {
        Run {
            id: v.run_id,
            events: v.events,
            state: v.state,
        }
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
    /// The undoing of its completed tasks' side effects, once it began (docs/compensation.md).
    async fn compensation(&self) -> Option<Compensation> {
        let c = self.state.compensation.as_ref()?;
        let entry = |i: &usize| {
            self.state.compensable.get(*i).map(|e| CompensationEntry {
                task: e.task,
                position: e.position.clone(),
                compensation: e.compensation.clone(),
                error: None,
            })
        };
        Some(Compensation {
            reason: c.reason.clone(),
            completed: c.completed.iter().filter_map(entry).collect(),
            running: c.current.and_then(|(_, i)| entry(&i)),
            remaining: u32::try_from(c.remaining).unwrap_or(u32::MAX),
            failed: c
                .failed
                .iter()
                .map(|f| CompensationEntry {
                    task: f.task,
                    position: f.position.clone(),
                    compensation: f.compensation.clone(),
                    error: Some(Json(f.error.to_value())),
                })
                .collect(),
        })
    }
    /// Global position of its last event: subscribe with `after` set to it to follow on.
    async fn last_position(&self) -> u64 {
        self.events.last().map_or(0, |(e, _)| e.position)
    }
    /// Its task activations in start order, with their outcome.
    async fn timeline(&self) -> Vec<TaskSpan> {
        cairn_runtime::view::timeline(self.events.iter().map(|(_, e)| e))
            .into_iter()
            .map(TaskSpan::from)
            .collect()
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

/// A run's compensation (docs/compensation.md).
#[derive(SimpleObject)]
pub struct Compensation {
    /// The operator's reason, when a cancel started it (none after a fault: see `Run.error`).
    pub reason: Option<String>,
    /// The compensations that completed, in the order they ran.
    pub completed: Vec<CompensationEntry>,
    /// The compensation running now.
    pub running: Option<CompensationEntry>,
    /// How many have not started yet.
    pub remaining: u32,
    /// The compensations that faulted, in the order they ran, with their errors.
    pub failed: Vec<CompensationEntry>,
}

/// One compensation of a run: what it compensates.
#[derive(SimpleObject)]
pub struct CompensationEntry {
    /// The completed task activation it compensates.
    pub task: u64,
    /// The JSON pointer of the compensated task.
    pub position: String,
    /// The name of the compensation in `use.functions`.
    pub compensation: String,
    /// The error it faulted with (RFC 7807 shape), for a failed one.
    pub error: Option<Json<Value>>,
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

/// The structural diff of two versions of a definition.
#[derive(SimpleObject, Clone, Debug)]
pub struct DefinitionDiff {
    /// Task changes: removed ones first (by old path), then the others (by new path).
    pub tasks: Vec<TaskChange>,
    /// Top-level settings of the workflow that differ (`input`, `use`, `timeout`, ...).
    pub workflow: Vec<String>,
}

/// One task's change between two versions.
#[derive(SimpleObject, Clone, Debug)]
pub struct TaskChange {
    /// `added`, `removed`, `changed` or `moved`.
    pub kind: String,
    /// The task's path (JSON pointer) in the new version; in the old one for a removed task.
    pub path: String,
    /// The task's path in the old version, when it differs.
    pub from: Option<String>,
    /// The task's settings that differ, for a changed task.
    pub fields: Vec<String>,
}

impl From<cairn_core::dsl::diff::DefinitionDiff> for DefinitionDiff {
    fn from(d: cairn_core::dsl::diff::DefinitionDiff) -> Self {
        DefinitionDiff {
            tasks: d
                .tasks
                .into_iter()
                .map(|t| TaskChange {
                    kind: t.kind.as_str().to_string(),
                    path: t.path,
                    from: t.from,
                    fields: t.fields,
                })
                .collect(),
            workflow: d.workflow,
        }
    }
}
