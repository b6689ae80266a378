//! The executor: it loads runs, records facts, asks the decider what follows, appends the
//! result with optimistic concurrency, and performs the side effects the log says are due.
//!
//! One [`Runtime`] can be a client (record runs, signals and cancels; execute nothing) or a
//! worker too (execute activities, fire timers, resume runs after a crash, follow the log for
//! work recorded by other processes).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::activity::{ActivityContext, ActivityHandler, NoSecrets, Secrets};
use cairn_core::dsl::Workflow;
use cairn_core::error::{ErrorKind, WorkflowError};
use cairn_core::events::{FrameId, Millis, ParentRef, RunEvent, EVENT_VERSION};
use cairn_core::state::{FrameKind, RunState, RunStatus};
use futures::FutureExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot, Mutex as AsyncMutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use crate::aggregate::{self, RunCommand, RunServices};
use crate::definitions::Definitions;
use crate::functions::{FunctionCall, Functions, Router};
use crate::metrics::{AppendOutcome, Metrics};
use crate::store::{
    self, AppendRequest, Appended, EventStore, Lease, NewEvent, RunFilter, RunSummary, StoreError,
    StoredEvent, WorkerLease, RUN_AGGREGATE,
};
use crate::{Error, Result};

/// Kept here for callers that know it as `engine::now_ms`.
pub use crate::clock::now_ms;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Completed with this output.
    Completed(Value),
    /// Faulted with this error.
    Faulted(WorkflowError),
    /// Cancelled.
    Cancelled,
}

/// An event as it was appended, broadcast to live subscribers.
#[derive(Debug, Clone)]
pub struct BusEvent {
    /// The run.
    pub run_id: String,
    /// Sequence in the run's stream.
    pub sequence: u64,
    /// Global position in the log (0 when the store did not report one).
    pub position: u64,
    /// The event.
    pub event: RunEvent,
}

/// An event of a run's history, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    /// Global position.
    pub position: u64,
    /// Sequence within the run.
    pub sequence: u64,
    /// The event.
    pub event: RunEvent,
    /// Metadata (recorded time, worker).
    pub metadata: Value,
}

/// Options of [`Runtime::start_run_with`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The run's id (a new UUIDv7 when absent). Starting twice with one id is a conflict.
    pub run_id: Option<String>,
    /// The parent, for a sub-workflow.
    pub parent: Option<ParentRef>,
    /// The caller's correlation id, recorded in `RunStarted` and indexed, so that runs can be
    /// listed by it ([`crate::store::RunQuery::correlation_id`]). Checked by
    /// [`cairn_core::events::check_correlation_id`]; a bad one is [`Error::Invalid`].
    pub correlation_id: Option<String>,
}

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    store_url: Option<String>,
    store: Option<Arc<dyn EventStore>>,
    http: Option<Arc<dyn ActivityHandler>>,
    functions: Functions,
    secrets: Secrets,
    workers: bool,
    poll_interval: Duration,
    group_commit: bool,
    scope: WorkerScope,
    metrics: Option<Metrics>,
    worker_name: Option<String>,
    lease_ttl: Duration,
    max_held: usize,
    max_crashes: u32,
    call_grace: Duration,
}

/// Which runs a worker executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerScope {
    /// Every unfinished run in the store (a `cairn worker`).
    #[default]
    All,
    /// Only the runs started through this runtime and their sub-workflows (`cairn run`, which
    /// must not pick up unrelated work left in a shared store).
    OwnRuns,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            store_url: None,
            store: None,
            http: None,
            functions: Functions::default(),
            secrets: Arc::new(NoSecrets),
            workers: true,
            poll_interval: Duration::from_millis(200),
            group_commit: true,
            scope: WorkerScope::All,
            metrics: None,
            worker_name: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            max_held: 10_000,
            max_crashes: DEFAULT_MAX_CRASHES,
            call_grace: DEFAULT_CALL_GRACE,
        }
    }
}

/// How long a worker's lease lasts unless renewed (it renews every third of it).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// How many claims of a run in a row may end in a crash (nothing recorded) before a worker
/// faults the run instead of running it again.
pub const DEFAULT_MAX_CRASHES: u32 = 5;

/// How long calls in flight may go on after a shutdown begins (see
/// [`RuntimeBuilder::call_grace`]).
pub const DEFAULT_CALL_GRACE: Duration = Duration::from_secs(5);

/// Runs claimed per claim query.
const CLAIM_BATCH: u64 = 64;

/// A unique default worker name: host, process id and a random part, so that two workers on one
/// host never share a lease by accident.
fn default_worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &id[id.len() - 8..])
}

impl RuntimeBuilder {
    /// The store to open: `sqlite://PATH` or `postgres://...`.
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store_url = Some(url.into());
        self
    }

    /// An already open store.
    pub fn store(mut self, store: Arc<dyn EventStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// What performs `call: http` (the HTTP connector of `cairn-connectors`).
    pub fn http(mut self, handler: Arc<dyn ActivityHandler>) -> Self {
        self.http = Some(handler);
        self
    }

    /// Registers a Rust function that definitions call with `call: name`.
    pub fn function<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(FunctionCall) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::result::Result<Value, WorkflowError>>
            + Send
            + 'static,
    {
        self.functions.register(name, f);
        self
    }

    /// Where secrets come from.
    pub fn secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Whether this runtime executes runs (default) or only records them (a client).
    pub fn workers(mut self, on: bool) -> Self {
        self.workers = on;
        self
    }

    /// How often an idle worker looks at the log for work recorded by other processes.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Whether appends of concurrent runs share transactions (default on).
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Which runs the workers of this runtime execute (default: all).
    pub fn scope(mut self, scope: WorkerScope) -> Self {
        self.scope = scope;
        self
    }

    /// Where the runtime's metrics go (a server passes the collectors whose registry it serves
    /// at `/metrics`); without this, a private registry nobody reads.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The name this worker registers under (default: host, process id and a random part). A
    /// worker restarted under the same name takes its previous life's runs back at once instead
    /// of waiting for that lease to expire; two live workers must never share a name.
    pub fn worker_name(mut self, name: impl Into<String>) -> Self {
        self.worker_name = Some(name.into());
        self
    }

    /// How long this worker's lease lasts without renewal (default [`DEFAULT_LEASE_TTL`]): how
    /// soon other workers take over the runs of a worker that died or stalls.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    /// At most this many runs held at once by this worker (default 10,000), so that one worker
    /// does not take all the work of a fleet.
    pub fn max_held_runs(mut self, n: usize) -> Self {
        self.max_held = n.max(1);
        self
    }

    /// How many claims of one run in a row may end in a crash of their worker (the process
    /// died, or its lease lapsed, before anything was recorded) before a worker faults the run
    /// with a "Poison run" error instead of running it again (default [`DEFAULT_MAX_CRASHES`]).
    /// A run that makes progress, or that a worker gives back on a graceful shutdown, starts
    /// counting again. 0 is taken as 1.
    pub fn max_crashes(mut self, n: u32) -> Self {
        self.max_crashes = n.max(1);
        self
    }

    /// How long calls in flight may go on once [`Runtime::shutdown`] begins (default
    /// [`DEFAULT_CALL_GRACE`]). A call still running then is abandoned: its result is not
    /// recorded, the run is released, and the next holder makes the call again with the same
    /// idempotency key. Bounds how long a shutdown takes whatever the calls do.
    pub fn call_grace(mut self, grace: Duration) -> Self {
        self.call_grace = grace;
        self
    }

    /// Opens the store and, for a worker, resumes every unfinished run.
    pub async fn build(self) -> Result<Runtime> {
        let metrics = match self.metrics {
            Some(m) => m,
            None => Metrics::new().map_err(|e| Error::Internal(format!("metrics: {e}")))?,
        };
        let base = match (self.store, self.store_url) {
            (Some(s), _) => s,
            (None, Some(url)) => store::open(&url).await?,
            (None, None) => {
                return Err(Error::Invalid(
                    "no store configured: give a store or a store url".into(),
                ))
            }
        };
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let store: Arc<dyn EventStore> = if self.group_commit {
            Arc::new(store::group::GroupCommitter::new(
                base.clone(),
                store::group::GroupCommitOptions::default(),
                &tracker,
                shutdown.clone(),
            ))
        } else {
            base.clone()
        };
        let (bus, _) = broadcast::channel(8192);
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            defs: Definitions::new(store.clone()),
            store,
            handler: Arc::new(Router::new(self.http, self.functions)),
            secrets: self.secrets,
            slots: Mutex::default(),
            inflight: Mutex::default(),
            bus,
            tracker,
            shutdown,
            timer_tx,
            workers: self.workers,
            worker_id: uuid::Uuid::now_v7().to_string(),
            poll_interval: self.poll_interval,
            scope: self.scope,
            owned: Mutex::default(),
            waiters: Mutex::default(),
            finished: Mutex::default(),
            metrics,
            worker_name: self.worker_name.unwrap_or_else(default_worker_name),
            lease_ttl: self.lease_ttl,
            max_held: self.max_held,
            max_crashes: self.max_crashes,
            call_grace: self.call_grace,
            lease: Mutex::new(None),
            held: Mutex::default(),
            kick: tokio::sync::Notify::new(),
            troubled: Mutex::default(),
        });
        let rt = Runtime { inner };
        if rt.inner.workers {
            let lease = rt
                .inner
                .store
                .register_worker(&rt.inner.worker_name, rt.inner.lease_ttl_ms())
                .await?;
            if let Ok(mut l) = rt.inner.lease.lock() {
                *l = Some(lease);
            }
            let notices = rt.inner.store.work_notices();
            let cross_process = notices.as_ref().is_some_and(|(_, x)| *x);
            let i = rt.inner.clone();
            rt.inner
                .tracker
                .spawn(timer_loop(i, timer_rx).instrument(tracing::info_span!("timers")));
            if !cross_process {
                // Without notices from other processes (SQLite), follow the log for appends of
                // other processes to the runs held here.
                // One query on the built-in stores (not a walk over the whole log at start-up).
                let head = rt.inner.store.head_position().await?;
                let i = rt.inner.clone();
                rt.inner
                    .tracker
                    .spawn(tail_loop(i, head).instrument(tracing::info_span!("tail")));
            }
            let i = rt.inner.clone();
            rt.inner.tracker.spawn(
                claim_loop(i, notices.map(|(rx, _)| rx), cross_process)
                    .instrument(tracing::info_span!("claims")),
            );
        }
        Ok(rt)
    }
}

/// The embeddable runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Slot {
    state: RunState,
    seq: u64,
    loaded: bool,
}

struct Inner {
    store: Arc<dyn EventStore>,
    defs: Definitions,
    handler: Arc<dyn ActivityHandler>,
    secrets: Secrets,
    slots: Mutex<HashMap<String, Arc<AsyncMutex<Slot>>>>,
    inflight: Mutex<HashSet<(String, FrameId, u32)>>,
    bus: broadcast::Sender<BusEvent>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    timer_tx: mpsc::UnboundedSender<(Millis, String)>,
    workers: bool,
    worker_id: String,
    poll_interval: Duration,
    scope: WorkerScope,
    owned: Mutex<HashSet<String>>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    finished: Mutex<HashMap<String, RunOutcome>>,
    metrics: Metrics,
    worker_name: String,
    lease_ttl: Duration,
    max_held: usize,
    max_crashes: u32,
    call_grace: Duration,
    /// This worker's registration; `None` for a client, or while re-registering.
    lease: Mutex<Option<WorkerLease>>,
    /// Runs this process holds (see [`Lease`]): only these get their calls made and timers
    /// fired here.
    held: Mutex<HashSet<String>>,
    /// Wakes the claim loop.
    kick: tokio::sync::Notify,
    /// Held runs whose last pass failed, revisited at the next renewal.
    troubled: Mutex<HashSet<String>>,
}

impl Runtime {
    /// A builder.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The store this runtime writes to.
    pub fn store(&self) -> Arc<dyn EventStore> {
        self.inner.store.clone()
    }

    /// The runtime's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Records a definition so that runs and sub-workflows (`run: workflow`) can find it by
    /// namespace, name and version.
    pub async fn deploy(&self, def: Workflow) -> Result<cairn_core::events::DefinitionRef> {
        self.inner.defs.register(def).await
    }

    /// Records a new run of `def` with `input`; a worker executes it.
    pub async fn start_run(&self, def: Workflow, input: Value) -> Result<String> {
        self.start_run_with(def, input, StartOptions::default())
            .await
    }

    /// [`Runtime::start_run`] with options. Starting a run does not deploy `def`: the run is
    /// pinned to it by hash, but `latest` and version lookups stay as they were.
    pub async fn start_run_with(
        &self,
        def: Workflow,
        input: Value,
        opts: StartOptions,
    ) -> Result<String> {
        // Before the definition is registered: a refused start leaves nothing behind.
        cairn_core::limits::check_input(&input).map_err(|e| Error::Invalid(e.to_string()))?;
        let r = self.inner.defs.register_inline(def).await?;
        self.inner.start(r, input, opts).await
    }

    /// Waits until the run ends.
    pub async fn wait(&self, run_id: &str) -> Result<RunOutcome> {
        loop {
            if let Some(o) = self.inner.finished_outcome(run_id) {
                return Ok(o);
            }
            // Register before looking, so an end recorded in between still wakes us.
            let (tx, rx) = oneshot::channel();
            if let Ok(mut w) = self.inner.waiters.lock() {
                let list = w.entry(run_id.to_string()).or_default();
                list.retain(|s| !s.is_closed());
                list.push(tx);
            }
            let s = self.state(run_id).await?;
            if let Some(o) = outcome_of(&s) {
                return Ok(o);
            }
            // This process's own runs wake the waiter directly; runs finished by other
            // processes are seen by looking at the store again now and then.
            let _ = tokio::time::timeout(Duration::from_millis(250), rx).await;
        }
    }

    /// Starts a run and waits for it to end.
    pub async fn run(&self, def: Workflow, input: Value) -> Result<(String, RunOutcome)> {
        let id = self.start_run(def, input).await?;
        let o = self.wait(&id).await?;
        Ok((id, o))
    }

    /// Delivers a CloudEvent to a run (for its `listen` tasks). Duplicates (same `source` and
    /// `id`) are dropped. Anything but a CloudEvent 1.0 of at most
    /// [`cairn_core::limits::MAX_EVENT_BYTES`] is refused (`Error::Invalid`) before the run is
    /// even looked up ([`cairn_core::limits::check_cloud_event`]).
    pub async fn signal(&self, run_id: &str, event: Value) -> Result<()> {
        cairn_core::limits::check_cloud_event(&event).map_err(|e| Error::Invalid(e.to_string()))?;
        let s = self.state(run_id).await?;
        if s.status.is_terminal() {
            return Err(Error::Ended(format!(
                "run {run_id} has already {}",
                s.status.as_str()
            )));
        }
        self.inner
            .advance(
                run_id,
                vec![RunEvent::EventReceived {
                    event,
                    at: now_ms(),
                }],
            )
            .await
    }

    /// Cancels a run.
    pub async fn cancel(&self, run_id: &str, reason: Option<String>) -> Result<()> {
        let s = self.state(run_id).await?;
        if s.status.is_terminal() {
            return Err(Error::Ended(format!(
                "run {run_id} has already {}",
                s.status.as_str()
            )));
        }
        self.inner
            .advance(
                run_id,
                vec![RunEvent::RunCancelled {
                    reason,
                    at: now_ms(),
                }],
            )
            .await
    }

    /// Suspends a run: nothing new starts until it is resumed (calls in flight still record their
    /// results).
    pub async fn suspend(&self, run_id: &str) -> Result<()> {
        let s = self.state(run_id).await?;
        match s.status {
            RunStatus::Suspended => {
                return Err(Error::Conflict(format!(
                    "run {run_id} is already suspended"
                )))
            }
            st if st.is_terminal() => {
                return Err(Error::Ended(format!(
                    "run {run_id} has already {}",
                    st.as_str()
                )))
            }
            _ => {}
        }
        self.inner
            .advance(run_id, vec![RunEvent::RunSuspended { at: now_ms() }])
            .await
    }

    /// Resumes a suspended run.
    pub async fn resume(&self, run_id: &str) -> Result<()> {
        let s = self.state(run_id).await?;
        if s.status != RunStatus::Suspended {
            return Err(Error::Conflict(format!(
                "run {run_id} is not suspended (it is {})",
                s.status_label()
            )));
        }
        self.inner
            .advance(run_id, vec![RunEvent::RunResumed { at: now_ms() }])
            .await
    }

    /// Retries a faulted run from the task whose error faulted it. That task starts again from
    /// scratch, as a new activation (so its calls carry new idempotency keys); everything that
    /// completed before it is kept.
    pub async fn retry(&self, run_id: &str) -> Result<()> {
        let s = self.state(run_id).await?;
        if s.status != RunStatus::Faulted {
            return Err(Error::Conflict(format!(
                "run {run_id} is {}, only a faulted run can be retried",
                s.status_label()
            )));
        }
        if s.fault_origin.is_none() {
            return Err(Error::Conflict(format!(
                "run {run_id} faulted outside any task (its input or its timeout), so there is no task to retry"
            )));
        }
        self.inner
            .advance(run_id, vec![RunEvent::RunRetried { at: now_ms() }])
            .await
    }

    /// A run's current state, folded from its events.
    pub async fn state(&self, run_id: &str) -> Result<RunState> {
        Ok(self.inner.load(run_id).await?.0)
    }

    /// A run's events.
    pub async fn history(&self, run_id: &str) -> Result<Vec<HistoryEvent>> {
        let stored = self.inner.store.load(RUN_AGGREGATE, run_id, 0).await?;
        if stored.is_empty() {
            return Err(Error::NotFound(format!("run {run_id}")));
        }
        stored
            .into_iter()
            .map(|e| {
                Ok(HistoryEvent {
                    position: e.position,
                    sequence: e.sequence,
                    event: decode(&e)?,
                    metadata: e.metadata,
                })
            })
            .collect()
    }

    /// Runs from the index.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        Ok(self.inner.store.list_runs(filter).await?)
    }

    /// Live feed of appended events.
    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.inner.bus.subscribe()
    }

    /// Takes over every run that needs a worker and that no live worker holds (the claim loop
    /// does this continuously; this is for callers that want it now): each is reloaded, its
    /// calls in flight re-dispatched with their original idempotency keys and its timers re-armed
    /// at their original due times. Answers how many runs were claimed.
    pub async fn recover(&self) -> Result<usize> {
        if !self.inner.workers {
            return Ok(0);
        }
        self.inner.store.release_expired().await?;
        let mut n = 0;
        loop {
            let got = self.inner.claim_batch().await?;
            n += got;
            if got < CLAIM_BATCH as usize {
                return Ok(n);
            }
        }
    }

    /// Waits until no run is left unfinished in the store and nothing is in flight here.
    pub async fn wait_idle(&self) -> Result<()> {
        loop {
            let busy = self
                .inner
                .inflight
                .lock()
                .map(|s| !s.is_empty())
                .unwrap_or(false);
            if !busy && !self.inner.any_unfinished().await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no run can move without something from outside, or only later than
    /// `window` from now: nothing in flight here, and no run in the store is runnable or has a
    /// timer due within `window`. Runs that wait for an event or are suspended do not count
    /// (nothing a worker does moves them); what `cairn worker --exit-when-idle` waits for.
    pub async fn wait_quiet(&self, window: Duration) -> Result<()> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        loop {
            let busy = self
                .inner
                .inflight
                .lock()
                .map(|s| !s.is_empty())
                .unwrap_or(false);
            if !busy {
                match self.inner.store.earliest_wake().await? {
                    None => return Ok(()),
                    Some(at) if at > now_ms().saturating_add(window_ms) => return Ok(()),
                    Some(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops intake, waits for what is running to record its result (calls in flight at most
    /// [`RuntimeBuilder::call_grace`], then they are abandoned), gives the runs this
    /// worker holds back (so that other workers take them at once rather than after the lease
    /// expires), and returns.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        let lease = self.inner.lease.lock().ok().and_then(|mut l| l.take());
        if let Some(lease) = lease {
            if let Err(e) = self.inner.store.retire_worker(&lease).await {
                warn!(error = %e, "cannot retire the worker lease; its runs move on when it expires");
            }
        }
    }
}

fn outcome_of(s: &RunState) -> Option<RunOutcome> {
    match s.status {
        RunStatus::Completed => Some(RunOutcome::Completed(
            s.output.clone().unwrap_or(Value::Null),
        )),
        RunStatus::Faulted => Some(RunOutcome::Faulted(s.error.clone().unwrap_or_else(|| {
            WorkflowError::new(ErrorKind::Runtime, "faulted without an error")
        }))),
        RunStatus::Cancelled => Some(RunOutcome::Cancelled),
        _ => None,
    }
}

/// How many ended runs' outcomes are kept for waiters that ask after the end.
const FINISHED_CAPACITY: usize = 4096;

fn decode(e: &StoredEvent) -> Result<RunEvent> {
    RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone())
        .map_err(|err| Error::Corrupt(format!("run {} event {}: {err}", e.stream, e.sequence)))
}

const NON_TERMINAL: [&str; 4] = ["pending", "running", "waiting", "suspended"];

impl Inner {
    fn finished_outcome(&self, run_id: &str) -> Option<RunOutcome> {
        self.finished
            .lock()
            .ok()
            .and_then(|f| f.get(run_id).cloned())
    }

    /// Remembers how a run ended and wakes whoever waits for it.
    fn ended(&self, run_id: &str, state: &RunState) {
        if let Some(o) = outcome_of(state) {
            if let Ok(mut f) = self.finished.lock() {
                if f.len() >= FINISHED_CAPACITY {
                    f.clear();
                }
                f.insert(run_id.to_string(), o);
            }
        }
        let ws = self.waiters.lock().ok().and_then(|mut w| w.remove(run_id));
        for w in ws.into_iter().flatten() {
            let _ = w.send(());
        }
        if let Ok(mut o) = self.owned.lock() {
            o.remove(run_id);
        }
    }

    /// Whether any run in the store is unfinished (one indexed row at most, however many).
    async fn any_unfinished(&self) -> Result<bool> {
        let q = store::RunQuery {
            statuses: NON_TERMINAL.iter().map(|s| s.to_string()).collect(),
            limit: 1,
            ..Default::default()
        };
        Ok(!self.store.query_runs(&q).await?.is_empty())
    }

    fn slot(&self, run_id: &str) -> Arc<AsyncMutex<Slot>> {
        let mut m = match self.slots.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(run_id.to_string())
            .or_insert_with(|| {
                Arc::new(AsyncMutex::new(Slot {
                    state: RunState::default(),
                    seq: 0,
                    loaded: false,
                }))
            })
            .clone()
    }

    fn evict(&self, run_id: &str) {
        if let Ok(mut m) = self.slots.lock() {
            m.remove(run_id);
        }
    }

    async fn load(&self, run_id: &str) -> Result<(RunState, u64)> {
        if !self.holds(run_id) {
            return self.load_from_store(run_id).await;
        }
        let slot = self.slots.lock().ok().and_then(|m| m.get(run_id).cloned());
        if let Some(slot) = slot {
            let g = slot.lock().await;
            if g.loaded {
                return Ok((g.state.clone(), g.seq));
            }
        }
        self.load_from_store(run_id).await
    }

    /// The run's newest usable snapshot, then the events after it (see [`crate::snapshots`]).
    async fn load_from_store(&self, run_id: &str) -> Result<(RunState, u64)> {
        let loaded = crate::snapshots::load_run(self.store.as_ref(), run_id, true).await?;
        if loaded.events_read >= crate::snapshots::SNAPSHOT_EVERY {
            // No snapshot near the head (a run older than snapshots, a lost or outdated one).
            self.maybe_snapshot(run_id, loaded.snapshot.unwrap_or(0), loaded.sequence);
        }
        Ok((loaded.state, loaded.sequence))
    }

    /// Snapshots the run off the append path when its history grew from sequence `before` to
    /// `after` across a multiple of [`crate::snapshots::SNAPSHOT_EVERY`]. Call it after every
    /// successful append of a run. Best effort: a failure is logged, and only costs later loads
    /// more events to fold.
    fn maybe_snapshot(&self, run_id: &str, before: u64, after: u64) {
        if !crate::snapshots::due(before, after) {
            return;
        }
        let (store, run) = (self.store.clone(), run_id.to_string());
        self.tracker.spawn(async move {
            if let Err(e) = crate::snapshots::refresh(store.as_ref(), &run).await {
                warn!(run = %run, error = %e, "cannot snapshot run");
            }
        });
    }

    fn services(&self, decider: Arc<cairn_core::decider::Decider>) -> RunServices {
        RunServices {
            decider,
            secrets: self.secrets.all(),
            more: Default::default(),
        }
    }

    fn new_events(&self, events: &[RunEvent], now: Millis) -> Vec<NewEvent> {
        events
            .iter()
            .map(|e| NewEvent {
                event_type: e.event_type().to_string(),
                event_version: EVENT_VERSION.to_string(),
                payload: e.payload(),
                metadata: json!({ "recorded_at": now, "worker": self.worker_id }),
            })
            .collect()
    }

    fn summary(state: &RunState, run_id: &str) -> Option<RunSummary> {
        // One definition of a summary, shared with `cairn projections rebuild`, so that a rebuilt
        // row is exactly what the inline upsert writes.
        crate::projections::run_summary(state, run_id)
    }

    /// Appends, observing latency and conflicts.
    async fn append_timed(&self, requests: Vec<AppendRequest>) -> store::Result<Vec<Appended>> {
        let began = Instant::now();
        let r = self.store.append(requests).await;
        let outcome = match &r {
            Ok(_) => AppendOutcome::Ok,
            Err(StoreError::Conflict { .. }) => AppendOutcome::Conflict,
            Err(_) => AppendOutcome::Error,
        };
        self.metrics.append_finished(outcome, began.elapsed());
        r
    }

    /// Counts a run that this append ended. Only the writer whose append recorded the
    /// transition counts it (appends are optimistic per run), so each end counts once across
    /// every process on the store.
    fn count_finished(&self, was_terminal: bool, now: &RunState) {
        if was_terminal || !now.status.is_terminal() {
            return;
        }
        if let Some(d) = &now.definition {
            self.metrics
                .run_finished(&d.namespace, &d.name, now.status_label());
        }
    }

    /// This worker's lease id, if it runs workers and is registered.
    fn lease_id(&self) -> Option<String> {
        self.lease
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|l| l.lease_id.clone()))
    }

    fn holds(&self, run_id: &str) -> bool {
        self.held
            .lock()
            .map(|h| h.contains(run_id))
            .unwrap_or(false)
    }

    fn hold(&self, run_id: &str) {
        if let Ok(mut h) = self.held.lock() {
            h.insert(run_id.to_string());
            self.metrics.set_runs_held(h.len());
        }
    }

    fn unhold(&self, run_id: &str) {
        if let Ok(mut h) = self.held.lock() {
            if h.remove(run_id) {
                self.metrics.set_runs_held(h.len());
            }
        }
    }

    /// The runs this process holds now.
    fn held_runs(&self) -> Vec<String> {
        self.held
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The lease ttl in ms, as the store takes it.
    fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    fn held_count(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// How an append of this process relates to the run's ownership.
    fn lease_for(&self, run_id: &str) -> Lease {
        match self.lease_id() {
            Some(id) if self.holds(run_id) => Lease::Held(id),
            _ => Lease::External,
        }
    }

    /// After a pass over a held run that appended nothing: if the run needs no worker now, give
    /// it back (its row gets the `wake_at` of `state`, checked against `seq` under the append
    /// lock). `Ok(false)` when the run moved on meanwhile, so the caller looks again.
    async fn release_if_idle(&self, run_id: &str, state: &RunState, seq: u64) -> Result<bool> {
        if !self.holds(run_id) {
            return Ok(true);
        }
        let Some(summary) = Self::summary(state, run_id) else {
            return Ok(true);
        };
        if summary.runnable() {
            return Ok(true);
        }
        if self.store.rebuild_run_summary(&summary, seq).await? {
            self.unhold(run_id);
            self.evict(run_id);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Claims one batch of runs that need a worker and spawns a pass over each; answers how
    /// many were claimed.
    async fn claim_batch(self: &Arc<Self>) -> Result<usize> {
        let Some(lease) = self.lease.lock().ok().and_then(|l| l.clone()) else {
            return Ok(0);
        };
        let room = self.max_held.saturating_sub(self.held_count()) as u64;
        if room == 0 {
            return Ok(0);
        }
        let only: Option<Vec<String>> = match self.scope {
            WorkerScope::All => None,
            WorkerScope::OwnRuns => Some(
                self.owned
                    .lock()
                    .map(|o| o.iter().cloned().collect())
                    .unwrap_or_default(),
            ),
        };
        let claimed = self
            .store
            .claim_runs(&lease, now_ms(), room.min(CLAIM_BATCH), only.as_deref())
            .await?;
        let n = claimed.len();
        if n > 0 {
            self.metrics.runs_claimed(n);
        }
        for claim in claimed {
            self.hold(&claim.run_id);
            if claim.attempts > self.max_crashes {
                self.fault_poison(&claim.run_id, claim.attempts - 1);
            } else {
                self.revisit(&claim.run_id);
            }
        }
        Ok(n)
    }

    /// Faults a run whose last `crashes` claims all ended without recording anything: running
    /// it again would most likely take this worker down too (an abort, memory exhaustion).
    /// Nothing of the run is decided or called here; the fault is recorded as a fact.
    fn fault_poison(self: &Arc<Self>, run_id: &str, crashes: u32) {
        warn!(run = %run_id, crashes, "faulting a run whose claims keep crashing their worker");
        let error = WorkflowError::new(
            ErrorKind::Runtime,
            format!(
                "the run was claimed {crashes} times in a row by workers that stopped (crashed, \
                 were killed, or lost their lease) before recording anything; it is faulted \
                 rather than run again (max_crashes is {}). Retrying the run starts the count \
                 again",
                self.max_crashes
            ),
        )
        .with_title("Poison run");
        let fact = RunEvent::RunFaulted {
            error,
            at: now_ms(),
            resumable: true,
        };
        let (i, run) = (self.clone(), run_id.to_string());
        self.tracker.spawn(async move {
            match i.advance_with(&run, vec![fact], true).await {
                Ok(()) => i.metrics.run_poisoned(),
                Err(e) => {
                    warn!(run = %run, error = %e, "cannot fault poison run; trying again later");
                    i.trouble(&run);
                }
            }
        });
    }

    /// A pass over a held run in a task of its own, reloading it first (another process may
    /// have extended it). A pass that fails (the store is away) is tried again at the next
    /// renewal, so a held run is never left without someone working on it.
    fn revisit(self: &Arc<Self>, run_id: &str) {
        let (i, run) = (self.clone(), run_id.to_string());
        self.tracker.spawn(async move {
            if let Err(e) = i.advance_with(&run, Vec::new(), true).await {
                warn!(run = %run, error = %e, "cannot advance run; trying again later");
                i.trouble(&run);
            }
        });
    }

    /// Marks a held run whose pass failed, for a revisit at the next renewal.
    fn trouble(&self, run_id: &str) {
        if self.holds(run_id) {
            if let Ok(mut t) = self.troubled.lock() {
                t.insert(run_id.to_string());
            }
        }
    }

    async fn start(
        self: &Arc<Self>,
        def: cairn_core::events::DefinitionRef,
        input: Value,
        opts: StartOptions,
    ) -> Result<String> {
        if let Some(c) = &opts.correlation_id {
            // Here as well as at the API edges, so that an embedding program cannot record one
            // that the CLI and GraphQL would refuse to look up.
            cairn_core::events::check_correlation_id(c).map_err(Error::Invalid)?;
        }
        let run_id = opts
            .run_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if self.scope == WorkerScope::OwnRuns {
            if let Ok(mut o) = self.owned.lock() {
                o.insert(run_id.clone());
            }
        }
        let now = now_ms();
        let decider = self.defs.decider(&def.hash).await?;
        let started = cairn_core::decider::Decider::start(
            &run_id,
            def,
            input,
            now,
            opts.parent,
            opts.correlation_id,
        );
        let mut state = RunState::default();
        let services = self.services(decider);
        let events = aggregate::execute(
            &mut state,
            RunCommand::Advance {
                facts: vec![started],
                now,
            },
            &services,
        )
        .await
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let slot = self.slot(&run_id);
        let mut g = slot.lock().await;
        let lease = match self.lease_id() {
            Some(id) => Lease::New(id),
            None => Lease::External,
        };
        let summary = Self::summary(&state, &run_id);
        let held =
            matches!(lease, Lease::New(_)) && summary.as_ref().is_some_and(RunSummary::runnable);
        let req = AppendRequest {
            aggregate_type: RUN_AGGREGATE.to_string(),
            stream: run_id.clone(),
            expected_sequence: 0,
            events: self.new_events(&events, now),
            run_summary: summary,
            lease,
        };
        match self.append_timed(vec![req]).await {
            Ok(a) => {
                if held {
                    self.hold(&run_id);
                }
                let last = a
                    .first()
                    .map(|a| a.last_sequence)
                    .unwrap_or(events.len() as u64);
                // Counted here, where the run's first append succeeded: a conflicting start (an
                // idempotent replay, a child run started twice) never gets this far.
                if let Some(d) = &state.definition {
                    self.metrics.run_started(&d.namespace, &d.name);
                }
                // A run can end in its first decision.
                self.count_finished(false, &state);
                self.maybe_snapshot(&run_id, 0, last);
                g.state = state;
                g.seq = last;
                g.loaded = true;
                self.publish(
                    &run_id,
                    last,
                    a.first().map_or(0, |a| a.last_position),
                    &events,
                );
                let snapshot = g.state.clone();
                drop(g);
                self.after_append(&run_id, &snapshot);
                if self.workers && services.more.load(std::sync::atomic::Ordering::Relaxed) {
                    self.continue_later(&run_id);
                }
                Ok(run_id)
            }
            Err(StoreError::Conflict { .. }) => {
                drop(g);
                Err(Error::Conflict(format!("run {run_id} already exists")))
            }
            Err(e) => {
                drop(g);
                self.evict(&run_id);
                Err(e.into())
            }
        }
    }

    /// Records `facts` (dropping those that no longer apply), fires due timers, decides, and
    /// appends; on a concurrency conflict reloads and tries again.
    async fn advance(self: &Arc<Self>, run_id: &str, facts: Vec<RunEvent>) -> Result<()> {
        self.advance_with(run_id, facts, false).await
    }

    /// [`Inner::advance`], first reloading the run from the store when `reload` is set.
    async fn advance_with(
        self: &Arc<Self>,
        run_id: &str,
        facts: Vec<RunEvent>,
        mut reload: bool,
    ) -> Result<()> {
        let mut conflicts = 0u32;
        loop {
            let slot = self.slot(run_id);
            let mut g = slot.lock().await;
            // Only a holder's copy is kept up to date (it writes the run, and hears of others'
            // appends); anyone else reads the stored truth each time.
            if reload || !self.holds(run_id) {
                g.loaded = false;
                reload = false;
            }
            if !g.loaded {
                let (state, seq) = match self.load_from_store(run_id).await {
                    Ok(x) => x,
                    Err(e) => {
                        drop(g);
                        self.evict(run_id);
                        return Err(e);
                    }
                };
                g.state = state;
                g.seq = seq;
                g.loaded = true;
            }
            let Some(def) = g.state.definition.clone() else {
                return Err(Error::Corrupt(format!(
                    "run {run_id} has no RunStarted event"
                )));
            };
            let now = now_ms();
            let mut todo: Vec<RunEvent> = facts
                .iter()
                .filter(|f| still_applies(&g.state, f))
                .cloned()
                .collect();
            // Only the holder fires timers; a due timer of a run nobody holds is claimed. Not
            // after a fact that ends the run (a cancel, a poison fault).
            if self.holds(run_id) && !todo.iter().any(RunEvent::is_terminal) {
                for t in g.state.due_timers(now) {
                    todo.push(RunEvent::TimerFired { timer: t, at: now });
                }
            }
            if g.state.status.is_terminal() && todo.is_empty() {
                let (snapshot, seq) = (g.state.clone(), g.seq);
                drop(g);
                if !self.release_if_idle(run_id, &snapshot, seq).await? {
                    reload = true;
                    continue;
                }
                self.after_append(run_id, &snapshot);
                return Ok(());
            }
            let decider = self.defs.decider(&def.hash).await?;
            let mut next = g.state.clone();
            let services = self.services(decider);
            let events = aggregate::execute(
                &mut next,
                RunCommand::Advance { facts: todo, now },
                &services,
            )
            .await
            .map_err(|e| Error::Ended(e.to_string()))?;
            if events.is_empty() {
                let (snapshot, seq) = (g.state.clone(), g.seq);
                drop(g);
                if !self.release_if_idle(run_id, &snapshot, seq).await? {
                    reload = true;
                    continue;
                }
                self.after_append(run_id, &snapshot);
                return Ok(());
            }
            let lease = self.lease_for(run_id);
            let summary = Self::summary(&next, run_id);
            let keeps = summary.as_ref().is_some_and(RunSummary::runnable);
            let req = AppendRequest {
                aggregate_type: RUN_AGGREGATE.to_string(),
                stream: run_id.to_string(),
                expected_sequence: g.seq,
                events: self.new_events(&events, now),
                run_summary: summary,
                lease: lease.clone(),
            };
            match self.append_timed(vec![req]).await {
                Ok(a) => {
                    if matches!(lease, Lease::Held(_)) && !keeps {
                        // The store released the run in the same write.
                        self.unhold(run_id);
                    }
                    let last = a
                        .first()
                        .map(|a| a.last_sequence)
                        .unwrap_or(g.seq + events.len() as u64);
                    self.count_finished(g.state.status.is_terminal(), &next);
                    self.maybe_snapshot(run_id, g.seq, last);
                    g.state = next;
                    g.seq = last;
                    self.publish(
                        run_id,
                        last,
                        a.first().map_or(0, |a| a.last_position),
                        &events,
                    );
                    let snapshot = g.state.clone();
                    drop(g);
                    self.after_append(run_id, &snapshot);
                    if self.workers && services.more.load(std::sync::atomic::Ordering::Relaxed) {
                        // The decider stopped at a batch bound with work left (a loop that
                        // never waits, or expressions that spent the batch's steps): go on in
                        // another batch, letting other facts (a cancel) in between.
                        self.continue_later(run_id);
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) if conflicts < 20 => {
                    // Someone else extended the run: forget what we knew and decide again on
                    // the stored truth.
                    conflicts += 1;
                    debug!(run = %run_id, "append conflict; reloading");
                    g.loaded = false;
                    g.state = RunState::default();
                    g.seq = 0;
                }
                Err(StoreError::LeaseLost { .. }) => {
                    // Another worker took the run over while this one was away (paused, cut
                    // off): it is theirs now. Drop it; whatever this worker was doing for it is
                    // redone by the holder under the same idempotency keys.
                    tracing::info!(run = %run_id, "lease lost; dropping run");
                    self.metrics.lease_lost("run");
                    g.loaded = false;
                    drop(g);
                    self.unhold(run_id);
                    self.evict(run_id);
                    return Ok(());
                }
                Err(e) => {
                    g.loaded = false;
                    return Err(e.into());
                }
            }
        }
    }

    /// Advances a run again in a task of its own. (A plain function, so that `advance` does
    /// not spawn itself from within its own future.)
    fn continue_later(self: &Arc<Self>, run_id: &str) {
        let (i, run) = (self.clone(), run_id.to_string());
        self.tracker.spawn(async move {
            if let Err(e) = i.advance(&run, Vec::new()).await {
                warn!(run = %run, error = %e, "cannot continue run; trying again later");
                i.trouble(&run);
            }
        });
    }

    /// Broadcasts appended events. The events of one append request are written in one
    /// transaction under the store's append lock, so their positions are contiguous.
    fn publish(&self, run_id: &str, last_seq: u64, last_pos: u64, events: &[RunEvent]) {
        if self.bus.receiver_count() == 0 {
            return;
        }
        let n = events.len() as u64;
        let first = last_seq + 1 - n;
        let first_pos = if last_pos >= n { last_pos + 1 - n } else { 0 };
        for (i, e) in events.iter().enumerate() {
            let _ = self.bus.send(BusEvent {
                run_id: run_id.to_string(),
                sequence: first + i as u64,
                position: if first_pos == 0 {
                    0
                } else {
                    first_pos + i as u64
                },
                event: e.clone(),
            });
        }
    }

    /// Performs what the log says is due: calls, timers, sub-workflows, parent notification.
    fn after_append(self: &Arc<Self>, run_id: &str, state: &RunState) {
        if state.status.is_terminal() {
            self.unhold(run_id);
            self.ended(run_id, state);
            self.evict(run_id);
            if let Some(p) = &state.parent {
                let result = match state.status {
                    RunStatus::Completed => Ok(state.output.clone().unwrap_or(Value::Null)),
                    RunStatus::Faulted => Err(state.error.clone().unwrap_or_else(|| {
                        WorkflowError::new(ErrorKind::Runtime, "sub-workflow faulted")
                    })),
                    _ => Err(WorkflowError::new(
                        ErrorKind::Runtime,
                        "sub-workflow was cancelled",
                    )),
                };
                let fact = RunEvent::ChildRunFinished {
                    id: p.frame,
                    result,
                };
                let (i, parent) = (self.clone(), p.run_id.clone());
                self.tracker.spawn(async move {
                    if let Err(e) = i.advance(&parent, vec![fact]).await {
                        warn!(run = %parent, error = %e, "cannot deliver sub-workflow result");
                    }
                });
            }
            return;
        }
        if state.retries > 0 {
            // A retried run is open again: forget the outcome it had.
            if let Ok(mut f) = self.finished.lock() {
                f.remove(run_id);
            }
        }
        if !self.holds(run_id) {
            // Only the holder makes calls and fires timers (see `Lease`), and only its copy of
            // the run is worth keeping.
            self.evict(run_id);
            return;
        }
        if state.status == RunStatus::Suspended {
            // Held only to record the results of calls already in flight; nothing new starts.
            return;
        }
        if let Some((_, due)) = state.next_timer() {
            let _ = self.timer_tx.send((due, run_id.to_string()));
        }
        for a in state.pending_activities() {
            let key = (run_id.to_string(), a.frame, a.attempt);
            let fresh = self
                .inflight
                .lock()
                .map(|mut s| s.insert(key.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            let i = self.clone();
            let run = run_id.to_string();
            let kind = match &a.call {
                cairn_core::events::ActivityCall::Http(_) => "http",
                cairn_core::events::ActivityCall::OpenApi(_) => "openapi",
                cairn_core::events::ActivityCall::Function { .. } => "function",
            };
            // Run id, position and attempt are span fields, never metric labels (unbounded).
            let span = tracing::info_span!(
                "activity",
                run_id = %run,
                position = %a.position,
                attempt = a.attempt,
                kind,
            );
            self.tracker.spawn(
                async move {
                    let ctx = ActivityContext {
                        run_id: run.clone(),
                        frame: a.frame,
                        position: a.position.clone(),
                        attempt: a.attempt,
                        idempotency_key: a.idempotency_key.clone(),
                    };
                    let began = Instant::now();
                    // A panic in a call (a registered function, a connector bug) fails that
                    // call, like any other error; it must not lose the result slot of the run.
                    let call = AssertUnwindSafe(perform(&*i.handler, &i.secrets, &ctx, &a.call))
                        .catch_unwind();
                    // On shutdown a call gets `call_grace` to finish, then is abandoned: its
                    // result is not recorded, and whoever claims the run next makes it again
                    // with the same idempotency key. A hung call must not keep the process up.
                    let abandon = async {
                        i.shutdown.cancelled().await;
                        tokio::time::sleep(i.call_grace).await;
                    };
                    let r = tokio::select! {
                        r = call => r.unwrap_or_else(|panic| {
                            Err(WorkflowError::new(
                                ErrorKind::Runtime,
                                format!("the call panicked: {}", panic_message(&*panic)),
                            )
                            .with_title("Call panicked"))
                        }),
                        () = abandon => {
                            warn!("call abandoned at shutdown; the next holder makes it again");
                            if let Ok(mut s) = i.inflight.lock() {
                                s.remove(&key);
                            }
                            return;
                        }
                    };
                    i.metrics.task_finished(kind, r.is_ok(), began.elapsed());
                    let at = now_ms();
                    let fact = match r {
                        Ok(result) => RunEvent::ActivityCompleted {
                            id: a.frame,
                            result,
                            at,
                        },
                        Err(error) => RunEvent::ActivityFailed {
                            id: a.frame,
                            error,
                            at,
                        },
                    };
                    let mut delay = Duration::from_millis(50);
                    loop {
                        match i.advance(&run, vec![fact.clone()]).await {
                            Ok(()) => break,
                            Err(Error::Store(e)) if !i.shutdown.is_cancelled() => {
                                // The result is not recorded yet; keep it and try again. If the
                                // process dies now, recovery re-executes the call with the same
                                // idempotency key.
                                warn!(error = %e, "cannot record activity result; retrying");
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(5));
                            }
                            Err(e) => {
                                warn!(error = %e, "activity result not recorded");
                                break;
                            }
                        }
                    }
                    if let Ok(mut s) = i.inflight.lock() {
                        s.remove(&key);
                    }
                }
                .instrument(span),
            );
        }
        for c in state.pending_children() {
            let key = (run_id.to_string(), c.frame, u32::MAX);
            let fresh = self
                .inflight
                .lock()
                .map(|mut s| s.insert(key.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            let Some(frame) = state.frames.get(&c.frame) else {
                continue;
            };
            let FrameKind::Child { .. } = frame.kind else {
                continue;
            };
            let i = self.clone();
            let parent = run_id.to_string();
            self.tracker.spawn(async move {
                match i.start_child(&parent, c.frame, &c.child_run_id).await {
                    Ok(()) => {}
                    Err(ChildStart::Later(e)) => {
                        warn!(run = %parent, error = %e, "cannot start sub-workflow yet; trying again later");
                        i.trouble(&parent);
                    }
                    Err(ChildStart::Fault(e)) => {
                        let fact = RunEvent::ChildRunFinished {
                            id: c.frame,
                            result: Err(e),
                        };
                        if let Err(e) = i.advance(&parent, vec![fact]).await {
                            warn!(run = %parent, error = %e, "cannot record sub-workflow failure");
                        }
                    }
                }
                if let Ok(mut s) = i.inflight.lock() {
                    s.remove(&key);
                }
            });
        }
    }

    /// Starts the sub-workflow a `run: workflow` task asked for, unless it exists already; if it
    /// has already ended, delivers its result.
    async fn start_child(
        self: &Arc<Self>,
        parent: &str,
        frame: FrameId,
        child: &str,
    ) -> std::result::Result<(), ChildStart> {
        let Some(req) = self.child_request(parent, frame).await? else {
            return Ok(());
        };
        match self.load(child).await {
            Ok((cs, _)) => {
                // Already started before a crash: make sure its end reaches the parent.
                if cs.status.is_terminal() {
                    self.after_append(child, &cs);
                } else {
                    let i = self.clone();
                    let child = child.to_string();
                    self.tracker.spawn(async move {
                        let _ = i.advance(&child, Vec::new()).await;
                    });
                }
                return Ok(());
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(ChildStart::Later(e)),
        }
        let (ns, name, version, input) = req;
        let def = self
            .defs
            .find(&ns, &name, &version)
            .await
            .map_err(ChildStart::Later)?
            .ok_or_else(|| {
                ChildStart::Fault(WorkflowError::new(
                    ErrorKind::Configuration,
                    format!("no workflow {ns}/{name} version {version} is deployed"),
                ))
            })?;
        match self
            .start(
                def,
                input,
                StartOptions {
                    run_id: Some(child.to_string()),
                    parent: Some(ParentRef {
                        run_id: parent.to_string(),
                        frame,
                    }),
                    // A child run is found through its parent, not by the caller's id.
                    correlation_id: None,
                },
            )
            .await
        {
            Ok(_) | Err(Error::Conflict(_)) => Ok(()),
            // The store is away (or its answer was lost after a commit): the parent keeps waiting
            // and its holder tries again (`renew` revisits parents waiting for children).
            Err(e @ Error::Store(_)) => Err(ChildStart::Later(e)),
            Err(e) => Err(ChildStart::Fault(runtime_error(e))),
        }
    }

    async fn child_request(
        &self,
        parent: &str,
        frame: FrameId,
    ) -> std::result::Result<Option<(String, String, String, Value)>, ChildStart> {
        let history = self
            .store
            .load(RUN_AGGREGATE, parent, 0)
            .await
            .map_err(|e| ChildStart::Later(e.into()))?;
        for e in history.iter().rev() {
            if e.event_type != "ChildRunRequested" {
                continue;
            }
            if let Ok(RunEvent::ChildRunRequested {
                id,
                namespace,
                name,
                version,
                input,
                ..
            }) = decode(e)
            {
                if id == frame {
                    return Ok(Some((namespace, name, version, input)));
                }
            }
        }
        Ok(None)
    }
}

/// Why a sub-workflow was not started: the parent's task faults, or it waits and tries again.
enum ChildStart {
    /// The definition is missing or the start was refused: the parent's task fails with this.
    Fault(WorkflowError),
    /// The store is away: nothing is recorded, the parent's holder tries again.
    Later(Error),
}

fn runtime_error(e: Error) -> WorkflowError {
    WorkflowError::new(ErrorKind::Runtime, e.to_string())
}

/// Whether a fact from outside still means something to the run (a late result of a cancelled
/// task, a duplicate delivery or a second cancel is dropped rather than recorded).
fn still_applies(s: &RunState, fact: &RunEvent) -> bool {
    if s.status.is_terminal() {
        return matches!(fact, RunEvent::RunRetried { .. })
            && s.status == RunStatus::Faulted
            && s.fault_origin.is_some();
    }
    match fact {
        RunEvent::ActivityCompleted { id, .. } | RunEvent::ActivityFailed { id, .. } => matches!(
            s.frames.get(id).map(|f| &f.kind),
            Some(FrameKind::Activity {
                result: None,
                scheduled: Some(_)
            })
        ),
        RunEvent::ChildRunFinished { id, .. } => matches!(
            s.frames.get(id).map(|f| &f.kind),
            Some(FrameKind::Child { result: None, .. })
        ),
        RunEvent::TimerFired { timer, .. } => s.timers.contains_key(timer),
        RunEvent::EventReceived { event, .. } => {
            cairn_core::state::event_key(event).is_none_or(|k| !s.seen_events.contains(&k))
        }
        RunEvent::RunSuspended { .. } => s.status != RunStatus::Suspended,
        RunEvent::RunResumed { .. } => s.status == RunStatus::Suspended,
        _ => true,
    }
}

/// The message of a caught panic (a `&str` or `String` payload, as `panic!` makes them).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Fires timers: one sleeping task for every timer of every run this process executes.
async fn timer_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(Millis, String)>) {
    let mut heap: BinaryHeap<Reverse<(Millis, String)>> = BinaryHeap::new();
    loop {
        let wait = match heap.peek() {
            Some(Reverse((due, _))) => Duration::from_millis((*due - now_ms()).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            m = rx.recv() => match m {
                Some(entry) => heap.push(Reverse(entry)),
                None => return,
            },
            _ = tokio::time::sleep(wait) => {
                let now = now_ms();
                let mut due = HashSet::new();
                while let Some(Reverse((t, _))) = heap.peek() {
                    if *t > now { break; }
                    if let Some(Reverse((_, run))) = heap.pop() { due.insert(run); }
                }
                for run in due {
                    // A run given back meanwhile is claimed when its timer comes due, by
                    // whichever worker is alive then.
                    if !inner.holds(&run) {
                        continue;
                    }
                    let i = inner.clone();
                    inner.tracker.spawn(async move {
                        if let Err(e) = i.advance(&run, Vec::new()).await {
                            warn!(run = %run, error = %e, "cannot fire timers; trying again later");
                            i.trouble(&run);
                        }
                    });
                }
            }
        }
    }
}

/// Follows the global log for appends of other processes to the runs held here, on stores
/// whose work notices do not cross processes (SQLite: `cairn signal` or `cairn cancel` run in a
/// process of their own).
async fn tail_loop(inner: Arc<Inner>, mut after: u64) {
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(inner.poll_interval) => {}
        }
        let page = match inner.store.read_all(after, 1000).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read the log");
                continue;
            }
        };
        let mut runs = HashSet::new();
        for e in &page {
            after = after.max(e.position);
            if e.aggregate_type != RUN_AGGREGATE {
                continue;
            }
            // This process's own appends are already in its copy of the run.
            let mine =
                e.metadata.get("worker").and_then(Value::as_str) == Some(inner.worker_id.as_str());
            if !mine && inner.holds(&e.stream) {
                runs.insert(e.stream.clone());
            }
        }
        for run in runs {
            // Another process extended the run: our cached copy is stale. It is reloaded
            // under the run's own lock (never by dropping the slot, which would let two
            // tasks of this process write the run at once).
            inner.revisit(&run);
        }
    }
}

/// Takes the runs that need a worker: claims what is due, sleeps until the next timer, a work
/// notice or the next lease renewal, and renews the lease (re-registering, with every held run
/// dropped, when it was lost).
async fn claim_loop(
    inner: Arc<Inner>,
    mut notices: Option<broadcast::Receiver<String>>,
    cross_process: bool,
) {
    let renew_every = inner.lease_ttl / 3;
    // Without notices from other processes, look for work they recorded now and then.
    let poll = if cross_process {
        Duration::from_secs(5)
    } else {
        inner.poll_interval
    };
    let mut next_renew = Instant::now() + renew_every;
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        if Instant::now() >= next_renew {
            next_renew = Instant::now() + renew_every;
            inner.renew().await;
        }
        let claimed = match inner.claim_batch().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot claim runs");
                0
            }
        };
        if claimed as u64 == CLAIM_BATCH {
            continue;
        }
        let next_wake = inner.next_wake().await;
        let mut wait = poll.min(next_renew.saturating_duration_since(Instant::now()));
        if let Some(at) = next_wake {
            let until = u64::try_from(at - now_ms()).unwrap_or(0);
            wait = wait.min(Duration::from_millis(until));
        }
        if wait.is_zero() && next_wake.is_some() {
            // Due but not claimable (held by a live worker, or over our limit): do not spin.
            wait = Duration::from_millis(50);
        }
        let notice = async {
            match notices.as_mut() {
                // Notices were dropped (this loop fell behind): look at everything again.
                Some(rx) => match rx.recv().await {
                    Ok(n) => Some(n),
                    Err(broadcast::error::RecvError::Lagged(_)) => Some("*".to_string()),
                    Err(broadcast::error::RecvError::Closed) => None,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.kick.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            n = notice => {
                if let Some(n) = n {
                    inner.on_notice(&n);
                }
                // Take every notice that is already there before claiming once for all.
                if let Some(rx) = notices.as_mut() {
                    loop {
                        match rx.try_recv() {
                            Ok(n) => inner.on_notice(&n),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => inner.on_notice("*"),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }
}

impl Inner {
    /// When the next run this worker may claim comes due: the store's earliest `wake_at`, or,
    /// for a runtime that only executes its own runs (`cairn run`), the earliest of those (so
    /// that unrelated due work in a shared store does not keep it polling).
    async fn next_wake(&self) -> Option<i64> {
        match self.scope {
            WorkerScope::All => self.store.next_wake().await.ok().flatten(),
            WorkerScope::OwnRuns => {
                let owned: Vec<String> = self
                    .owned
                    .lock()
                    .map(|o| o.iter().cloned().collect())
                    .unwrap_or_default();
                let mut next: Option<i64> = None;
                for run in owned {
                    if self.holds(&run) {
                        continue;
                    }
                    if let Ok(Some(s)) = self.store.get_run(&run).await {
                        if let Some(w) = s.wake_at {
                            next = Some(next.map_or(w, |n| n.min(w)));
                        }
                    }
                }
                next
            }
        }
    }

    /// Registers this worker again after its lease was lost; on failure the next renewal
    /// tries again (meanwhile it claims and starts nothing as a worker).
    async fn register_again(&self, ttl_ms: i64) {
        match self.store.register_worker(&self.worker_name, ttl_ms).await {
            Ok(l) => {
                if let Ok(mut cur) = self.lease.lock() {
                    *cur = Some(l);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot register the worker again; retrying at the next renewal")
            }
        }
    }

    /// A work notice: a run held here is reloaded (someone else appended to it); anything else
    /// is for the claim that follows.
    fn on_notice(self: &Arc<Self>, notice: &str) {
        if notice == "*" {
            for run in self.held_runs() {
                self.revisit(&run);
            }
        } else if self.holds(notice) {
            self.revisit(notice);
        }
    }

    /// Renews the lease; on loss, drops every held run and registers again. Also releases the
    /// runs of dead workers, and revisits held runs whose last pass failed.
    async fn renew(self: &Arc<Self>) {
        let lease = self.lease.lock().ok().and_then(|l| l.clone());
        let Some(lease) = lease else {
            // Lost earlier and not registered again yet (the store was away): try now.
            self.register_again(self.lease_ttl_ms()).await;
            return;
        };
        match self.store.renew_worker(&lease).await {
            Ok(true) => {
                // Repair what an answer lost after a commit hid from this worker: runs the
                // database says it holds (a start or a claim that committed while the caller
                // saw an error) that it does not know it holds.
                match self.store.owned_runs(&lease).await {
                    Ok(owned) => {
                        for run in owned {
                            if !self.holds(&run) {
                                debug!(run = %run, "holding a run the store says is ours");
                                self.hold(&run);
                                self.revisit(&run);
                            }
                        }
                    }
                    Err(e) => debug!(error = %e, "cannot list the runs this worker holds"),
                }
            }
            Ok(false) => {
                // No new claim, start or fenced append under the dead lease from here on.
                if let Ok(mut cur) = self.lease.lock() {
                    *cur = None;
                }
                warn!(lease = %lease.lease_id, "worker lease lost (paused or cut off too long); dropping held runs and registering again");
                self.metrics.lease_lost("worker");
                let dropped: Vec<String> = self
                    .held
                    .lock()
                    .map(|mut h| h.drain().collect())
                    .unwrap_or_default();
                self.metrics.set_runs_held(0);
                for run in &dropped {
                    self.evict(run);
                }
                self.register_again(lease.ttl_ms).await;
            }
            Err(e) => warn!(error = %e, "cannot renew the worker lease"),
        }
        match self.store.release_expired().await {
            Ok(0) => {}
            Ok(n) => self.metrics.runs_released_expired(n),
            Err(e) => debug!(error = %e, "cannot release the runs of dead workers"),
        }
        let troubled: Vec<String> = self
            .troubled
            .lock()
            .map(|mut t| t.drain().collect())
            .unwrap_or_default();
        for run in troubled {
            if self.holds(&run) {
                self.revisit(&run);
            }
        }
        // A held parent whose sub-workflow's end notice was lost (a listener reconnecting, the
        // child's worker dying between its end and the delivery): look at its children again.
        let held = self.held_runs();
        let slots: Vec<(String, Arc<AsyncMutex<Slot>>)> = match self.slots.lock() {
            Ok(m) => held
                .into_iter()
                .filter_map(|r| m.get(&r).map(|s| (r, s.clone())))
                .collect(),
            Err(_) => Vec::new(),
        };
        for (run, slot) in slots {
            let waits_for_child = slot
                .try_lock()
                .map(|g| !g.state.pending_children().is_empty())
                .unwrap_or(false);
            if waits_for_child {
                self.revisit(&run);
            }
        }
    }
}

/// Performs a recorded call. The arguments of a function call sealed with secrets are revealed
/// here, just before the call, and the function's error is scrubbed of them; HTTP and OpenAPI
/// calls go to their connector sealed, which reveals them when it sends the request
/// ([`cairn_core::sealed`]).
async fn perform(
    handler: &dyn ActivityHandler,
    secrets: &Secrets,
    ctx: &ActivityContext,
    call: &cairn_core::events::ActivityCall,
) -> Result<Value, WorkflowError> {
    let cairn_core::events::ActivityCall::Function {
        seal: Some(seal), ..
    } = call
    else {
        return handler.call(ctx, call).await;
    };
    let source = cairn_core::sealed::FromSource(&**secrets);
    let mut revealer = cairn_core::sealed::Revealer::new(Some(seal), &source);
    let revealed = revealer.call(call)?;
    handler
        .call(ctx, &revealed)
        .await
        .map_err(|e| revealer.scrub_error(e))
}
