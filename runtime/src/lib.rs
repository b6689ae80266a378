//! # cairn-runtime
//!
//! Executes Serverless Workflow runs durably. Every step of every run is an event in an
//! [`store::EventStore`] (SQLite by default, PostgreSQL in production); a run's state is a fold
//! over its events, so a crash loses nothing that was recorded and a restarted worker continues
//! where the log stops.
//!
//! - [`Runtime`] and [`RuntimeBuilder`]: embed the runtime, start runs, await results, send
//!   events, cancel; register Rust functions with [`RuntimeBuilder::function`].
//! - [`store`]: the event stores and group commit.
//! - [`aggregate`]: the run as a cqrs-es aggregate over the pure decider of `cairn-core`.
//! - [`definitions`]: content-addressed definitions and the stream of each (versions, head,
//!   deprecations): publish, roll back, deprecate, history, diff.
//! - [`functions`]: registered functions and the activity router.
//! - [`metrics`]: Prometheus collectors (runs finished, task durations, append latency and
//!   conflicts, projection lag).
//! - [`projections`]: the `runs` index as a projection of the log, and rebuilding it.
//! - [`replay`]: runs replayed from the store against their own versions or another one
//!   (`Runtime::replay`), the deploy-time check of a new version (`Runtime::check_deploy`) and
//!   moving compatible runs onto it (`Runtime::migrate`).
//! - [`snapshots`]: snapshots of runs, so that loading a long run folds only its last events.
//! - [`tail`]: reading the global log in order: a cursor for replays, and the one shared
//!   follower of new appends per process.
//! - [`view`]: the read side for front ends: a run with its history, the timeline of its tasks.

pub mod aggregate;
pub mod clock;
pub mod definitions;
pub mod engine;
pub mod functions;
pub mod metrics;
pub mod projections;
pub mod replay;
pub mod snapshots;
pub mod store;
pub mod tail;
pub mod view;

pub use engine::{
    run_id_for_key, BusEvent, HistoryEvent, RunOutcome, Runtime, RuntimeBuilder, StartOptions,
    Started, WorkerScope,
};
pub use functions::FunctionCall;

/// Errors of the runtime. Each variant carries what it is about, so callers match on data
/// rather than on messages, and its message says what is wrong without a class prefix;
/// [`Error::class`] sorts them into the few outcomes a client acts on
/// (the GraphQL `extensions.code` and the CLI's exit codes derive from it; `docs/errors.md`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// No run has this id.
    #[error("not found: run {run_id}")]
    RunNotFound {
        /// The id asked for.
        run_id: String,
    },
    /// No definition has this content hash.
    #[error("not found: definition with hash {hash}")]
    DefinitionNotFound {
        /// The hash asked for.
        hash: String,
    },
    /// An input or an event from outside was refused (size, shape).
    #[error(transparent)]
    Input(#[from] cairn_core::limits::InputError),
    /// A correlation id that is empty, too long or not printable.
    #[error("correlation id: {message}")]
    CorrelationId {
        /// What is wrong with it.
        message: String,
    },
    /// An idempotency key that is empty or longer than 256 characters.
    #[error("`idempotencyKey` must have 1 to 256 characters (it has {length})")]
    IdempotencyKey {
        /// Its length in characters.
        length: usize,
    },
    /// An idempotency key used before for a run of another definition.
    #[error("this idempotency key was used for a run of another definition")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// No deployed definition has this namespace, name and version.
    #[error("definition {namespace}/{name} {version} not found")]
    DefinitionNotDeployed {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Version (or `latest`).
        version: String,
    },
    /// A version label published again with other content: labels are immutable.
    #[error(
        "definition {namespace}/{name}: version {version} is already published with content \
         {existing}; this content is {new}: a version label is immutable, so publish the \
         change under a new version"
    )]
    VersionLabelTaken {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The label.
        version: String,
        /// The content hash it holds.
        existing: String,
        /// The content hash offered.
        new: String,
    },
    /// A new run (or a rollback) of a deprecated version.
    #[error(
        "definition {namespace}/{name} version {version} is deprecated: it starts no new runs \
         (runs in flight go on)"
    )]
    VersionDeprecated {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The version.
        version: String,
    },
    /// A deprecation of the head version.
    #[error(
        "definition {namespace}/{name} version {version} is the head: roll back to (or deploy) \
         another version before deprecating it"
    )]
    HeadDeprecation {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The version.
        version: String,
    },
    /// An event of a definition's stream cannot be read back.
    #[error("corrupt: definition {stream} event {sequence}: {source}")]
    CorruptDefinitionEvent {
        /// The definition (stream).
        stream: String,
        /// The event's sequence.
        sequence: u64,
        /// Why.
        source: cairn_core::events::EventDecodeError,
    },
    /// A [`RuntimeBuilder`] without a store.
    #[error("no store configured: give a store or a store url")]
    NoStore,
    /// A start with a run id that is taken.
    #[error("run {run_id} already exists")]
    RunExists {
        /// The id.
        run_id: String,
    },
    /// The run has ended: nothing more can be recorded on it.
    #[error("run {run_id} has already {}", status.as_str())]
    RunEnded {
        /// The run.
        run_id: String,
        /// How it ended.
        status: cairn_core::state::RunStatus,
    },
    /// An operation the run's status does not allow (resume a running run, retry a completed
    /// one, suspend a suspended one).
    #[error("run {run_id} is {status}: {expected}")]
    WrongStatus {
        /// The run.
        run_id: String,
        /// Its status label (`running`, `waiting`, `suspended`, ...).
        status: String,
        /// What the operation needs, as a clause (`only a faulted run can be retried`).
        expected: &'static str,
    },
    /// A suspend of a run that is suspended already.
    #[error("run {run_id} is already suspended")]
    AlreadySuspended {
        /// The run.
        run_id: String,
    },
    /// A retry of a run that faulted outside any task (its input or its timeout).
    #[error(
        "run {run_id} faulted outside any task (its input or its timeout), so there \
         is no task to retry"
    )]
    NothingToRetry {
        /// The run.
        run_id: String,
    },
    /// The run aggregate refused the command.
    #[error(transparent)]
    Command(#[from] aggregate::RunCommandError),
    /// A stored event cannot be read back.
    #[error("corrupt: run {run_id} event {sequence}: {source}")]
    CorruptEvent {
        /// The run (stream).
        run_id: String,
        /// The event's sequence in the run.
        sequence: u64,
        /// Why.
        source: cairn_core::events::EventDecodeError,
    },
    /// A run's stored events do not make a run (no `RunStarted`).
    #[error("corrupt: run {run_id} has no RunStarted event")]
    NoRunStarted {
        /// The run.
        run_id: String,
    },
    /// A stored definition cannot be read back.
    #[error("corrupt: stored definition {hash}: {source}")]
    CorruptDefinition {
        /// Its content hash.
        hash: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A value the runtime made could not be serialised (a bug).
    #[error("internal error: {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A run's state could not be written as a snapshot (a bug).
    #[error("internal error: the snapshot of run {run_id}: {source}")]
    Snapshot {
        /// The run.
        run_id: String,
        /// Why.
        source: cairn_core::state::SnapshotError,
    },
    /// A run's history could not be replayed.
    #[error("replay of run {run_id}: {source}")]
    Replay {
        /// The run.
        run_id: String,
        /// Why.
        source: cairn_core::replay::ReplayError,
    },
    /// A replay's task failed (a bug).
    #[error("internal error: a replay task: {message}")]
    ReplayTask {
        /// What the task's join said.
        message: String,
    },
    /// The metrics could not be registered (a bug).
    #[error("internal error: metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What a client does about an [`Error`]: the classes behind the GraphQL `extensions.code` and
/// the CLI's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// What was named does not exist (`NOT_FOUND`, exit 2).
    NotFound,
    /// The request itself is wrong (`BAD_USER_INPUT`, exit 2).
    BadInput,
    /// The request contradicts the run's state (`CONFLICT`, exit 2).
    Conflict,
    /// The store is unreachable or failing; trying again later may work (`UNAVAILABLE` for
    /// the API's callers, exit 4).
    Unavailable,
    /// Stored data is unreadable, or a bug (`INTERNAL`, exit 4).
    Internal,
}

impl Error {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        use store::StoreError as S;
        match self {
            Error::RunNotFound { .. }
            | Error::DefinitionNotFound { .. }
            | Error::DefinitionNotDeployed { .. }
            | Error::Store(S::Missing(_))
            | Error::Replay {
                source: cairn_core::replay::ReplayError::UnknownDefinition { .. },
                ..
            } => ErrorClass::NotFound,
            Error::Input(_)
            | Error::CorrelationId { .. }
            | Error::IdempotencyKey { .. }
            | Error::NoStore
            | Error::VersionLabelTaken { .. }
            | Error::Store(S::InvalidUrl { .. }) => ErrorClass::BadInput,
            Error::RunExists { .. }
            | Error::IdempotencyKeyReused { .. }
            | Error::RunEnded { .. }
            | Error::WrongStatus { .. }
            | Error::AlreadySuspended { .. }
            | Error::NothingToRetry { .. }
            | Error::VersionDeprecated { .. }
            | Error::HeadDeprecation { .. }
            | Error::Command(_) => ErrorClass::Conflict,
            Error::Store(S::Unavailable(_)) => ErrorClass::Unavailable,
            Error::Store(_)
            | Error::CorruptEvent { .. }
            | Error::NoRunStarted { .. }
            | Error::CorruptDefinition { .. }
            | Error::CorruptDefinitionEvent { .. }
            | Error::Serialize { .. }
            | Error::Snapshot { .. }
            | Error::Replay { .. }
            | Error::ReplayTask { .. }
            | Error::Metrics(_) => ErrorClass::Internal,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
