//! The executor: it loads runs, records facts, asks the decider what follows, appends the
//! result with optimistic concurrency, and performs the side effects the log says are due.
//!
//! One [`Runtime`] can be a client (record runs, signals and cancels; execute nothing) or a
//! worker too (execute activities, fire timers, resume runs after a crash, follow the log for
//! work recorded by other processes).
//!
//! One module per job: the runtime's public face and shared state here; its builder
//! (`builder.rs`); runs: slots, start, advance and the facts that still apply (`runs.rs`);
//! dispatch: the side effects the log says are due, calls and sub-workflows (`dispatch.rs`);
//! the worker: lease, claims, renewal, poison runs (`worker.rs`); timers and the log tail
//! (`timers.rs`).

mod builder;
mod dispatch;
mod runs;
mod timers;
mod worker;

pub use builder::{RuntimeBuilder, DEFAULT_CALL_GRACE, DEFAULT_LEASE_TTL, DEFAULT_MAX_CRASHES};

use builder::CLAIM_BATCH;
use timers::{timer_loop, watch_foreign_appends};
use worker::claim_loop;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::activity::{ActivityContext, ActivityHandler, NoSecrets, Secrets};
use cairn_core::dsl::Workflow;
use cairn_core::error::{ErrorKind, WorkflowError};
use cairn_core::events::{FrameId, Millis, ParentRef, RunEvent, EVENT_VERSION};
use cairn_core::names::StatusLabel;
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
    WorkerLease, RUN_AGGREGATE,
};
use crate::tail::{LogTail, TailOptions, TailReceiver};
use crate::view::decode;
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
    /// Ended after running the compensations of its completed tasks (docs/compensation.md).
    Compensated {
        /// The unhandled error that started the compensation; `None` after a cancel.
        error: Option<WorkflowError>,
        /// The compensations that faulted (none when the run is fully compensated).
        failed: Vec<cairn_core::events::CompensationFailure>,
    },
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
    /// [`cairn_core::events::check_correlation_id`]; a bad one is [`Error::CorrelationId`].
    pub correlation_id: Option<String>,
    /// The caller's idempotency key (1 to 256 characters): the run's id is derived from it
    /// ([`run_id_for_key`]) unless `run_id` is given, and a second start with the same key
    /// answers the run the first one started ([`Started::created`] false) instead of starting
    /// another. A key used before for another definition is [`Error::IdempotencyKeyReused`].
    pub idempotency_key: Option<String>,
}

/// What a start did: the run, and whether this call created it (false when an idempotency key
/// found the run an earlier start created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The run's id.
    pub run_id: String,
    /// Whether this call created the run.
    pub created: bool,
}

/// The UUID namespace of run ids derived from idempotency keys ("cairn-Run-Idempo"). Never
/// change it: the same key must name the same run on every server and in every release.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6361_6972_6e2d_5275_6e2d_4964_656d_706f);

/// The run id an idempotency key stands for (a UUIDv5 of the key): the same key always names
/// the same run, on every server, with no table to keep.
pub fn run_id_for_key(key: &str) -> String {
    uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_bytes()).to_string()
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

/// The embeddable runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

pub(super) struct Slot {
    state: RunState,
    seq: u64,
    loaded: bool,
}

pub(super) struct Inner {
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
    tail_options: TailOptions,
    /// The log tail, started by its first user ([`Runtime::log_tail`]).
    tail: tokio::sync::OnceCell<LogTail>,
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

    /// What replaying runs needs of this runtime (`crate::replay`): the store, the definitions
    /// and the secrets bound as `$secrets`.
    pub(crate) fn replay_parts(
        &self,
    ) -> (
        Arc<dyn EventStore>,
        Definitions,
        serde_json::Map<String, Value>,
    ) {
        (
            self.inner.store.clone(),
            self.inner.defs.clone(),
            self.inner.secrets.all(),
        )
    }

    /// Records a definition so that runs and sub-workflows (`run: workflow`) can find it by
    /// namespace, name and version; its version becomes the head (see
    /// [`crate::definitions::Definitions::publish`]).
    pub async fn deploy(&self, def: Workflow) -> Result<cairn_core::events::DefinitionRef> {
        self.inner.defs.register(def).await
    }

    /// [`Runtime::deploy`] saying who deploys (and why), and whether anything was published.
    pub async fn publish(
        &self,
        def: Workflow,
        opts: crate::definitions::PublishOptions,
    ) -> Result<crate::definitions::Deployed> {
        self.inner.defs.publish(def, opts).await
    }

    /// The definitions of this runtime's store: their streams (versions, head, deprecations),
    /// rollback, deprecation, history and diff.
    pub fn definitions(&self) -> &crate::definitions::Definitions {
        &self.inner.defs
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
        Ok(self.start_inline(def, input, opts).await?.run_id)
    }

    /// [`Runtime::start_run_with`], saying whether the run was created (see
    /// [`StartOptions::idempotency_key`]).
    pub async fn start_inline(
        &self,
        def: Workflow,
        input: Value,
        opts: StartOptions,
    ) -> Result<Started> {
        // Before the definition is registered: a refused start leaves nothing behind.
        cairn_core::limits::check_input(&input)?;
        check_idempotency_key(opts.idempotency_key.as_deref())?;
        let r = self.inner.defs.register_inline(def).await?;
        self.start_ref(r, input, opts).await
    }

    /// Starts a run of a deployed definition (`version` may be `latest`: the head), by
    /// reference: the stored definition is not parsed again. A deprecated version is refused
    /// ([`Error::VersionDeprecated`]).
    pub async fn start_deployed(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        input: Value,
        opts: StartOptions,
    ) -> Result<Started> {
        cairn_core::limits::check_input(&input)?;
        check_idempotency_key(opts.idempotency_key.as_deref())?;
        let r = self
            .inner
            .defs
            .find(namespace, name, version)
            .await?
            .ok_or_else(|| Error::DefinitionNotDeployed {
                namespace: namespace.to_string(),
                name: name.to_string(),
                version: version.to_string(),
            })?;
        self.start_ref(r, input, opts).await
    }

    async fn start_ref(
        &self,
        def: cairn_core::events::DefinitionRef,
        input: Value,
        mut opts: StartOptions,
    ) -> Result<Started> {
        let Some(key) = opts.idempotency_key.clone() else {
            let run_id = self.inner.start(def, input, opts).await?;
            return Ok(Started {
                run_id,
                created: true,
            });
        };
        let run_id = opts
            .run_id
            .get_or_insert_with(|| run_id_for_key(&key))
            .clone();
        let (ns, name) = (def.namespace.clone(), def.name.clone());
        match self.inner.start(def, input, opts).await {
            Ok(run_id) => Ok(Started {
                run_id,
                created: true,
            }),
            Err(Error::RunExists { .. }) => {
                let state = self.state(&run_id).await?;
                let same = state
                    .definition
                    .as_ref()
                    .is_some_and(|d| d.namespace == ns && d.name == name);
                if !same {
                    return Err(Error::IdempotencyKeyReused { key });
                }
                Ok(Started {
                    run_id,
                    created: false,
                })
            }
            Err(e) => Err(e),
        }
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
    /// [`cairn_core::limits::MAX_EVENT_BYTES`] is refused ([`Error::Input`]) before the run is
    /// even looked up ([`cairn_core::limits::check_cloud_event`]).
    pub async fn signal(&self, run_id: &str, event: Value) -> Result<()> {
        cairn_core::limits::check_cloud_event(&event)?;
        let s = self.state(run_id).await?;
        if s.status.is_terminal() {
            return Err(Error::RunEnded {
                run_id: run_id.to_string(),
                status: s.status,
            });
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

    /// Cancels a run. Cancelling a run that is compensating stops its compensations.
    pub async fn cancel(&self, run_id: &str, reason: Option<String>) -> Result<()> {
        self.cancel_with(run_id, reason, false).await
    }

    /// Cancels a run, and with `compensate` undoes what its completed tasks did first: the
    /// compensations they declared run in reverse order of completion and the run ends
    /// `compensated` or `compensation_failed` (docs/compensation.md). A run with nothing to
    /// compensate is simply cancelled; one already compensating is refused.
    pub async fn cancel_with(
        &self,
        run_id: &str,
        reason: Option<String>,
        compensate: bool,
    ) -> Result<()> {
        let s = self.state(run_id).await?;
        if s.status.is_terminal() {
            return Err(Error::RunEnded {
                run_id: run_id.to_string(),
                status: s.status,
            });
        }
        if compensate && s.compensation.is_some() {
            return Err(Error::WrongStatus {
                run_id: run_id.to_string(),
                status: s.status_label().to_string(),
                expected: "the run is already compensating",
            });
        }
        let fact = cairn_core::decider::Decider::cancel(&s, reason, compensate, now_ms());
        self.inner.advance(run_id, vec![fact]).await
    }

    /// Suspends a run: nothing new starts until it is resumed (calls in flight still record their
    /// results).
    pub async fn suspend(&self, run_id: &str) -> Result<()> {
        let s = self.state(run_id).await?;
        match s.status {
            RunStatus::Suspended => {
                return Err(Error::AlreadySuspended {
                    run_id: run_id.to_string(),
                })
            }
            st if st.is_terminal() => {
                return Err(Error::RunEnded {
                    run_id: run_id.to_string(),
                    status: st,
                })
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
            return Err(Error::WrongStatus {
                run_id: run_id.to_string(),
                status: s.status_label().to_string(),
                expected: "only a suspended run can be resumed",
            });
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
            return Err(Error::WrongStatus {
                run_id: run_id.to_string(),
                status: s.status_label().to_string(),
                expected: "only a faulted run can be retried",
            });
        }
        if s.fault_origin.is_none() {
            return Err(Error::NothingToRetry {
                run_id: run_id.to_string(),
            });
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
            return Err(Error::RunNotFound {
                run_id: run_id.to_string(),
            });
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

    /// Live feed of the events this process appends to runs (decoded, with no gap check: a
    /// slow receiver is told it lagged). For every event of the log, whoever appended it, use
    /// [`Runtime::log_tail`].
    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.inner.bus.subscribe()
    }

    /// The process's one follower of the log: every event appended from now on by any process,
    /// in position order, none skipped (see [`crate::tail`]). Started by the first call, after
    /// the log's head at that moment; this runtime's own appends wake it at once, others'
    /// within the tail interval ([`RuntimeBuilder::tail_interval`]). It stops with the runtime.
    pub async fn log_tail(&self) -> Result<LogTail> {
        let inner = &self.inner;
        let tail = inner
            .tail
            .get_or_try_init(|| async {
                let head = inner.store.head_position().await?;
                Ok::<_, Error>(LogTail::start(
                    inner.store.clone(),
                    head,
                    inner.tail_options.clone(),
                    Some(inner.bus.subscribe()),
                    &inner.tracker,
                    inner.shutdown.clone(),
                ))
            })
            .await?;
        Ok(tail.clone())
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

/// An idempotency key has 1 to 256 characters.
fn check_idempotency_key(key: Option<&str>) -> Result<()> {
    match key {
        Some(k) if k.is_empty() || k.chars().count() > 256 => Err(Error::IdempotencyKey {
            length: k.chars().count(),
        }),
        _ => Ok(()),
    }
}

pub(super) fn outcome_of(s: &RunState) -> Option<RunOutcome> {
    match s.status {
        RunStatus::Completed => Some(RunOutcome::Completed(
            s.output.clone().unwrap_or(Value::Null),
        )),
        RunStatus::Faulted => Some(RunOutcome::Faulted(s.error.clone().unwrap_or_else(|| {
            WorkflowError::new(ErrorKind::Runtime, "faulted without an error")
        }))),
        RunStatus::Cancelled => Some(RunOutcome::Cancelled),
        RunStatus::Compensated | RunStatus::CompensationFailed => Some(RunOutcome::Compensated {
            error: s.error.clone(),
            failed: s
                .compensation
                .as_ref()
                .map(|c| c.failed.clone())
                .unwrap_or_default(),
        }),
        _ => None,
    }
}

/// How many ended runs' outcomes are kept for waiters that ask after the end.
pub(super) const FINISHED_CAPACITY: usize = 4096;
