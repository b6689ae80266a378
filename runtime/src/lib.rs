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
//! - [`definitions`]: content-addressed definitions.
//! - [`functions`]: registered functions and the activity router.
//! - [`metrics`]: Prometheus collectors (runs finished, task durations, append latency and
//!   conflicts, projection lag).
//! - [`projections`]: the `runs` index as a projection of the log, and rebuilding it.
//! - [`snapshots`]: snapshots of runs, so that loading a long run folds only its last events.

pub mod aggregate;
pub mod clock;
pub mod definitions;
pub mod engine;
pub mod functions;
pub mod metrics;
pub mod projections;
pub mod snapshots;
pub mod store;

pub use engine::{
    BusEvent, HistoryEvent, RunOutcome, Runtime, RuntimeBuilder, StartOptions, WorkerScope,
};
pub use functions::FunctionCall;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Something does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored data cannot be read.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Bad input from the caller.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The run has ended.
    #[error("{0}")]
    Ended(String),
    /// It exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
