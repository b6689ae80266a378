//! Event stores: the append-only log of every run and definition.
//!
//! The port is one trait per role, each with its own contract: [`EventLog`] (the streams and
//! the global order), [`RunIndex`] (the `runs` index and its rebuild), [`Leases`] (who works on
//! which run), [`DefinitionStore`] and [`SnapshotStore`]. [`EventStore`] is all of them at once,
//! implemented for anything that implements the roles, and is what the engine and the server
//! hold (`Arc<dyn EventStore>`). Two implementations: SQLite (the embedded default, one file,
//! WAL) and PostgreSQL, each in a folder with a file per role and its numbered migrations. Both
//! keep the table shape of cqrs-es's `sqlite-es`/`postgres-es`
//! (`aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata`) and add
//! what those crates lack: a global `position` that readers can resume from with no gap and no
//! duplicate, appends of many streams in one transaction (group commit), and a `runs` index kept
//! in the same transaction as the events it summarises.

use async_trait::async_trait;
use serde_json::Value;

pub mod cqrs;
pub mod faults;
pub mod group;
pub mod legacy;
mod plan;
pub mod postgres;
mod read;
pub mod sqlite;
mod util;

/// Result alias of this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The aggregate type of run streams (cqrs-es `aggregate_type`).
pub const RUN_AGGREGATE: &str = "run";
/// The aggregate type of definition streams.
pub const DEFINITION_AGGREGATE: &str = "definition";

/// What can go wrong in a store. Concurrency conflicts are kept apart from infrastructure
/// failures: the first is a normal outcome of two writers racing, the second is not.
///
/// `Clone` so that one failed group commit can answer every caller that shared it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer extended the stream first: `expected` was not the stream's last sequence.
    #[error("concurrency conflict on {stream}: expected sequence {expected}, found {actual}")]
    Conflict {
        /// The stream.
        stream: String,
        /// The sequence the caller expected to extend.
        expected: u64,
        /// The stream's real last sequence.
        actual: u64,
    },
    /// The store URL is malformed or names an unknown scheme.
    #[error("invalid store url `{url}`: {message}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A store opened for reading only does not exist (or is not a usable store); nothing was
    /// created.
    #[error("no store: {0}")]
    Missing(String),
    /// The database could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A [`Lease::Held`] append on a run that its worker no longer holds: the worker's lease
    /// expired and another worker took the run over (or the run was released). Nothing was
    /// written; the worker must drop the run.
    #[error("lease lost on {stream}: another worker holds it now")]
    LeaseLost {
        /// The run.
        stream: String,
    },
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Stable type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub event_version: String,
    /// Payload.
    pub payload: Value,
    /// Metadata: recorded time, actor, correlation and causation ids, worker.
    pub metadata: Value,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Global position: strictly increasing in commit order across all streams.
    pub position: u64,
    /// `run` or `definition`.
    pub aggregate_type: String,
    /// The stream id (a run id, or `namespace/name` of a definition).
    pub stream: String,
    /// 1-based sequence within the stream.
    pub sequence: u64,
    /// Stable type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub event_version: String,
    /// Payload.
    pub payload: Value,
    /// Metadata.
    pub metadata: Value,
}

/// How an append relates to the ownership of the run it extends (see [`RunSummary::wake_at`]
/// and `docs/operations.md`).
///
/// A worker holds a run while the run can progress right now (a call to make, a decision to
/// take); every append of a holder is fenced: it is written only if the run's `owner` is still
/// that worker, so a worker that was paused past its lease and replaced cannot extend the run
/// any more. When an append leaves the run with nothing to do right now (waiting for a timer, an
/// event, or ended), the store clears the owner in the same transaction, and any worker may claim
/// the run again when it next needs one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Lease {
    /// Not a holder (`cairn signal`, a server's `cancelRun`, a sub-workflow's result): ownership
    /// is left as it is (cleared only when the run stops needing a worker), and idle workers are
    /// told when the run needs one.
    #[default]
    External,
    /// The append of a holder (`lease_id` of [`WorkerLease`]): fenced, and the holder keeps the
    /// run while it needs a worker.
    Held(String),
    /// The first append of a new run by a worker that will execute it: it holds the run from the
    /// start (no claim round trip). Means nothing for an existing run.
    New(String),
}

/// The `SET` clause that counts a claim as an attempt (the same on both stores): a run whose
/// `updated_at` moved since the last claim made progress, so the count starts again at 1.
pub(crate) const COUNT_ATTEMPT: &str = "attempts = CASE WHEN attempt_mark = updated_at \
     THEN attempts + 1 ELSE 1 END, attempt_mark = updated_at";

/// A run taken by [`Leases::claim_runs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The run.
    pub run_id: String,
    /// How many times the run has been claimed since it last changed, this claim included: 1
    /// unless the claims before it ended with nothing recorded. A holder that gives the run
    /// back with nothing to do resets the count, and a graceful shutdown takes back its claim's
    /// attempt. A run whose passes keep killing their worker (an abort, the OOM killer, a
    /// `kill -9` while a call is in flight) shows a growing count, and the worker faults it past
    /// its `max_crashes` instead of running it again.
    pub attempts: u32,
}

/// One stream's part of an append: the events go after `expected_sequence` (0 for a new stream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendRequest {
    /// `run` or `definition`.
    pub aggregate_type: String,
    /// Stream id.
    pub stream: String,
    /// The sequence of the stream's last event as the writer knows it.
    pub expected_sequence: u64,
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// The run summary to upsert in the same transaction (for run streams).
    pub run_summary: Option<RunSummary>,
    /// The appender's relation to the run's ownership (run streams with a summary only).
    pub lease: Lease,
}

/// What a successful append produced, one per [`AppendRequest`], in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream's new last sequence.
    pub last_sequence: u64,
    /// Global position of the last event written; 0 when the request carried no events (it then
    /// only checked `expected_sequence` and upserted its run summary).
    pub last_position: u64,
}

/// The outcome of one group of [`EventLog::append_groups`]: that group's [`Appended`] list, or
/// its own error (typically [`StoreError::Conflict`]).
pub type GroupOutcome = Result<Vec<Appended>>;

/// The `runs` index: one row per run, kept in step with its events.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Definition namespace.
    pub namespace: String,
    /// Definition name.
    pub name: String,
    /// Definition version.
    pub version: String,
    /// `running`, `waiting`, `suspended`, `completed`, `faulted` or `cancelled`.
    pub status: String,
    /// Creation time (ms since epoch).
    pub created_at: i64,
    /// Last change (ms since epoch).
    pub updated_at: i64,
    /// Earliest due time of a pending timer, if any (ms since epoch).
    pub next_timer_at: Option<i64>,
    /// When the run next needs a worker (ms since epoch): `<= updated_at` when it can progress
    /// now (a call to make, a decision to take), a timer's due time when it only waits for that
    /// timer, `None` when no worker can move it (ended, suspended, waiting for an event). Workers
    /// claim runs whose `wake_at` has come (see [`Leases::claim_runs`]).
    pub wake_at: Option<i64>,
    /// The caller's correlation id given when the run was started, if any.
    pub correlation_id: Option<String>,
    /// The parent run, for a sub-workflow: when this run ends, the parent's holder is woken.
    pub parent_run_id: Option<String>,
}

impl RunSummary {
    /// Whether the run can progress right now (see [`RunSummary::wake_at`]).
    pub fn runnable(&self) -> bool {
        self.wake_at.is_some_and(|w| w <= self.updated_at)
    }
}

/// A random part of every lease id, so that a lease id is never issued twice even when a
/// worker's row was deleted and its name's generations start again: a process paused since an
/// older life of the name must stay fenced out.
pub(crate) fn lease_nonce() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..12].to_string()
}

/// A worker's registration: the id it holds runs under, unique to this process's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLease {
    /// `NAME#GENERATION-NONCE`: the generation grows each time a worker registers under the same
    /// name (the nonce makes the id unique even if the generations restart),
    /// so a restarted worker supersedes its previous life (whose runs become claimable at once)
    /// while a paused previous life is fenced out.
    pub lease_id: String,
    /// How long the lease lasts after each renewal.
    pub ttl_ms: i64,
}

/// Filter of [`RunIndex::list_runs`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Only runs in these statuses (all when empty).
    pub statuses: Vec<String>,
    /// At most this many rows (newest first); `None` for all.
    pub limit: Option<u64>,
}

/// A page of the runs index for [`RunIndex::query_runs`]: sorted by [`RunQuery::order`]
/// (default: `created_at`, then `run_id`, both descending: newest first), filtered, resuming
/// strictly after a key (keyset pagination, so a page stays stable while new runs arrive).
///
/// `#[non_exhaustive]`: build it from [`RunQuery::default`] and set fields, so that new filters
/// do not break callers.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RunQuery {
    /// Only runs in these statuses (all when empty).
    pub statuses: Vec<String>,
    /// Only runs of definitions in this namespace.
    pub namespace: Option<String>,
    /// Only runs of definitions with this name.
    pub name: Option<String>,
    /// Only runs created at or after this time (ms since epoch).
    pub created_from: Option<i64>,
    /// Only runs created strictly before this time (ms since epoch).
    pub created_before: Option<i64>,
    /// Only runs started with this correlation id.
    pub correlation_id: Option<String>,
    /// The sort key and direction (the run id breaks ties, in the same direction).
    pub order: RunOrder,
    /// Only runs that sort after this `(key, run_id)`, where the key is the field of
    /// [`RunQuery::order`]: the next page.
    pub after: Option<(i64, String)>,
    /// At most this many rows.
    pub limit: u64,
}

/// The sort order of [`RunQuery`]; the default is `created_at` descending (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOrder {
    /// The key.
    pub field: RunSortField,
    /// Largest first, or smallest first.
    pub descending: bool,
}

impl Default for RunOrder {
    fn default() -> Self {
        RunOrder {
            field: RunSortField::CreatedAt,
            descending: true,
        }
    }
}

/// What [`RunOrder`] sorts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSortField {
    /// `created_at` (when the run started; never changes, so pages are exactly stable).
    CreatedAt,
    /// `updated_at` (the last change: a run that changes while a client pages moves, and may
    /// show again on a later page or be passed over, as in any keyset on a mutable key).
    UpdatedAt,
}

impl RunSortField {
    /// The column.
    pub fn column(self) -> &'static str {
        match self {
            RunSortField::CreatedAt => "created_at",
            RunSortField::UpdatedAt => "updated_at",
        }
    }
}

/// A stored definition.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDefinition {
    /// `document.namespace`.
    pub namespace: String,
    /// `document.name`.
    pub name: String,
    /// `document.version`.
    pub version: String,
    /// Content hash (SHA-256 hex of canonical JSON).
    pub hash: String,
    /// The definition as canonical JSON.
    pub source: Value,
    /// Whether it was deployed (published under its label). A definition recorded only to run
    /// it (`startRun(source:)`, `cairn start FILE`) is not. Labels, the head and `latest` are
    /// read from the definition's stream, not from this flag; the flag is what the migration of
    /// stores from before definition streams reads ([`legacy`]).
    pub deployed: bool,
}

/// The event log: the streams of every run and definition, and the global order they were
/// committed in.
///
/// Invariants every implementation keeps (checked by the store-conformance suite):
/// - an append either writes all of its requests or none, and fails with
///   [`StoreError::Conflict`] when any stream's `expected_sequence` is stale;
/// - positions strictly increase in commit order, so [`EventLog::read_all`] after position `p`
///   never skips an event that commits later with a smaller position;
/// - nothing is ever updated or deleted.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends to one or more streams atomically.
    async fn append(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>>;

    /// Appends several independent groups in ONE transaction (one fsync): each group is
    /// all-or-nothing on its own, a group whose `expected_sequence` is stale gets its own
    /// [`StoreError::Conflict`] and is left out while the other groups commit. Groups are applied
    /// in order, so a later group may extend a stream an earlier group extended.
    ///
    /// The outer `Err` means the transaction as a whole failed (nothing was written); every group
    /// then shares that error. This is what [`group::GroupCommitter`] calls.
    ///
    /// The default implementation (for stores without native support) appends all groups in one
    /// [`EventLog::append`], and on a conflict answers the offending group and retries the rest.
    /// Both built-in stores override it with a single pass that needs no retry.
    async fn append_groups(&self, groups: Vec<Vec<AppendRequest>>) -> Result<Vec<GroupOutcome>> {
        plan::append_groups_by_retry(self, groups).await
    }

    /// A stream's events after `after_sequence` (0 for all), in order.
    async fn load(
        &self,
        aggregate_type: &str,
        stream: &str,
        after_sequence: u64,
    ) -> Result<Vec<StoredEvent>>;

    /// Events of all streams after `after_position`, in position order, at most `limit`.
    async fn read_all(&self, after_position: u64, limit: u64) -> Result<Vec<StoredEvent>>;

    /// The global position of the last event in the log (0 when empty).
    ///
    /// The default implementation pages through [`EventLog::read_all`]; the built-in stores
    /// answer with one query.
    async fn head_position(&self) -> Result<u64> {
        let mut pos = 0;
        loop {
            let page = self.read_all(pos, 10_000).await?;
            match page.last() {
                Some(e) => pos = e.position,
                None => return Ok(pos),
            }
        }
    }

    /// The database under this store and any wrappers around it, for code outside the runtime
    /// that keeps tables of its own next to the log (the api's tokens). `None` for stores that
    /// are no built-in database; wrappers forward their inner store's answer, so that wrapping a
    /// store never hides what it is built on.
    fn database(&self) -> Option<Database<'_>> {
        None
    }
}

/// A built-in database, as [`EventLog::database`] answers it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Database<'a> {
    /// The SQLite store.
    Sqlite(&'a sqlite::SqliteStore),
    /// The PostgreSQL store.
    Postgres(&'a postgres::PostgresStore),
}

/// The `runs` index: one row per run, written in the transaction of the run's appends and
/// rebuildable from the log (`crate::projections`), with the checkpoints of such rebuilds.
#[async_trait]
pub trait RunIndex: Send + Sync + 'static {
    /// Runs from the `runs` index.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>>;

    /// A filtered page of the runs index (see [`RunQuery`]).
    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunSummary>>;

    /// One run's summary.
    async fn get_run(&self, run_id: &str) -> Result<Option<RunSummary>>;

    /// Writes `summary` into the `runs` index, folded from the run's events up to
    /// `last_sequence`, but only if that is still the run's last event; `Ok(false)` when the run
    /// has moved on (its newer append wrote a newer summary, which must not be overwritten).
    /// Implementations check and write under the same lock as appends, so no append can slip in
    /// between the check and the write.
    async fn rebuild_run_summary(&self, summary: &RunSummary, last_sequence: u64) -> Result<bool> {
        let _ = (summary, last_sequence);
        Err(no_projections())
    }

    /// The last global position of the log that `projection` has processed, if it recorded one.
    async fn projection_checkpoint(&self, projection: &str) -> Result<Option<u64>> {
        let _ = projection;
        Err(no_projections())
    }

    /// Records that `projection` has processed the log up to `position` (overwriting).
    async fn put_projection_checkpoint(&self, projection: &str, position: u64) -> Result<()> {
        let _ = (projection, position);
        Err(no_projections())
    }
}

/// Who works on which run: worker leases, claims of runs from the `runs` index, and the notices
/// that wake idle workers (see [`Lease`]).
///
/// The defaults (for stores without distribution) describe one worker that holds everything: a
/// lease that never expires and no claims.
#[async_trait]
pub trait Leases: RunIndex {
    /// Registers a worker under `name` for `ttl_ms`, superseding an earlier registration of the
    /// same name: the runs that one held are released at once (a restarted worker need not wait
    /// for its previous life's lease to expire).
    async fn register_worker(&self, name: &str, ttl_ms: i64) -> Result<WorkerLease> {
        Ok(WorkerLease {
            lease_id: format!("{name}#0"),
            ttl_ms,
        })
    }

    /// Extends a worker's lease by its ttl; `Ok(false)` when the lease had already expired or
    /// was superseded (the worker must then drop every run it holds and register again).
    async fn renew_worker(&self, lease: &WorkerLease) -> Result<bool> {
        let _ = lease;
        Ok(true)
    }

    /// Ends a worker's registration and releases its runs (graceful shutdown), giving back the
    /// attempt each of their claims counted (a shutdown is not a crash).
    async fn retire_worker(&self, lease: &WorkerLease) -> Result<()> {
        let _ = lease;
        Ok(())
    }

    /// Releases the runs of workers whose lease has expired, so that they can be claimed;
    /// answers how many. Any worker may call it (each renewal period).
    async fn release_expired(&self) -> Result<u64> {
        Ok(0)
    }

    /// Claims up to `limit` runs whose `wake_at` is at or before `now` (the claimer's clock, so
    /// a timer never fires early by it) and that nobody holds, oldest first, for `lease`. With
    /// `only`, just runs among those ids. Concurrent claimers never get the same run. Each claim
    /// counts an attempt on the run (see [`Claim::attempts`]).
    async fn claim_runs(
        &self,
        lease: &WorkerLease,
        now: i64,
        limit: u64,
        only: Option<&[String]>,
    ) -> Result<Vec<Claim>> {
        let _ = (lease, now, limit, only);
        Ok(Vec::new())
    }

    /// The runs whose `owner` is `lease`: what the database says this worker holds, to repair
    /// a worker's memory after an answer was lost (a claim or a start that committed while the
    /// caller saw an error).
    async fn owned_runs(&self, lease: &WorkerLease) -> Result<Vec<String>> {
        let _ = lease;
        Ok(Vec::new())
    }

    /// The earliest `wake_at` of a run nobody holds, if any (when the next timer comes due).
    async fn next_wake(&self) -> Result<Option<i64>> {
        Ok(None)
    }

    /// The earliest `wake_at` of any run, held by a worker or not: `None` when no run can move
    /// without something from outside (every unfinished run waits for an event, or is
    /// suspended). What `cairn worker --exit-when-idle` watches. The default pages through
    /// [`RunIndex::query_runs`]; the built-in stores ask with one query.
    async fn earliest_wake(&self) -> Result<Option<i64>> {
        let mut q = RunQuery {
            statuses: cairn_core::names::StatusLabel::ACTIVE
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            limit: 1000,
            ..Default::default()
        };
        let mut earliest: Option<i64> = None;
        loop {
            let page = self.query_runs(&q).await?;
            for r in &page {
                if let Some(w) = r.wake_at {
                    earliest = Some(earliest.map_or(w, |e| e.min(w)));
                }
            }
            match page.last() {
                Some(last) if page.len() as u64 == q.limit => {
                    q.after = Some((last.created_at, last.run_id.clone()));
                }
                _ => return Ok(earliest),
            }
        }
    }

    /// Notices of runs that may need a worker: a run id whenever an append made a run runnable
    /// without a holder taking it, set a timer, or ended a sub-workflow (its parent's id), and
    /// `*` when notices may have been lost (everything should be looked at again). The flag says
    /// whether they come from every process on the store (PostgreSQL LISTEN/NOTIFY) or only from
    /// this one (SQLite), in which case workers also poll.
    fn work_notices(&self) -> Option<(tokio::sync::broadcast::Receiver<String>, bool)> {
        None
    }
}

/// Workflow definitions: their content, recorded once per content hash and found by hash (runs
/// pin to it), and the events of their own streams (aggregate type [`DEFINITION_AGGREGATE`],
/// written with [`EventLog::append`]), which say which version labels exist, the head and the
/// deprecations (`cairn_core::definition`).
#[async_trait]
pub trait DefinitionStore: Send + Sync + 'static {
    /// Records a definition's content (idempotent on its hash). Recording content as deployed
    /// that is stored as not deployed marks it deployed; the reverse changes nothing.
    async fn put_definition(&self, def: &StoredDefinition) -> Result<()>;

    /// A definition by content hash.
    async fn definition_by_hash(&self, hash: &str) -> Result<Option<StoredDefinition>>;

    /// Every event of every definition stream, by stream id, then sequence.
    async fn definition_events(&self) -> Result<Vec<StoredEvent>>;

    /// Content marked deployed whose `namespace/name` has no stream yet, in the order it was
    /// first recorded: what builds from before definition streams deployed, which the store's
    /// open turns into published events ([`legacy::publish_deployed_rows`]).
    async fn unpublished_definitions(&self) -> Result<Vec<StoredDefinition>>;
}

/// Snapshots of folded state: a cache that shortens loads; the events stay the truth.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Records `payload`, the state of stream `stream` folded up to its event `last_sequence`,
    /// as its newest snapshot, dropping older ones in the same transaction. A snapshot older
    /// than the one already stored is not written. Best effort for callers: a snapshot that is
    /// missing only costs a longer load.
    ///
    /// The default implementation (for stores without snapshots) keeps nothing.
    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
        last_sequence: u64,
        payload: Value,
    ) -> Result<()> {
        let _ = (aggregate_type, stream, last_sequence, payload);
        Ok(())
    }

    /// The newest snapshot of a stream: the sequence of the last event it folds, and its payload.
    /// The store does not interpret the payload; a reader that cannot decode it must ignore it
    /// and fold the stream from its first event.
    ///
    /// The default implementation (for stores without snapshots) has none.
    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
    ) -> Result<Option<(u64, Value)>> {
        let _ = (aggregate_type, stream);
        Ok(None)
    }
}

/// Every role of a store at once: what the engine and the server hold as
/// `Arc<dyn EventStore>`. Implemented for anything that implements the roles; implement those.
pub trait EventStore: EventLog + RunIndex + Leases + DefinitionStore + SnapshotStore {}

impl<T: EventLog + RunIndex + Leases + DefinitionStore + SnapshotStore + ?Sized> EventStore for T {}

fn no_projections() -> StoreError {
    StoreError::Unavailable("this store keeps no projection checkpoints".into())
}

/// A [`StoreError::Unavailable`] for a failed statement of store `store` (`sqlite`,
/// `postgres`) doing `op`, with any credentials in a URL of the message redacted: for tables
/// other crates keep beside the log (the api's tokens), so that their errors read like the
/// store's own.
pub fn unavailable(store: &str, op: &str, err: impl std::fmt::Display) -> StoreError {
    util::unavailable(store, op, err)
}

/// Compares two definition versions by semantic-version precedence (`1.10.0 > 1.9.0`,
/// `1.0.0-rc.1 < 1.0.0`, build metadata ignored). A version that is not semver sorts below every
/// semver one; two such versions compare as strings, so the order is total and deterministic.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    util::compare_versions(a, b)
}

/// Opens an existing store for reading only: `sqlite://PATH` must exist and is opened
/// read-only ([`sqlite::SqliteStore::open_read_only`]); `postgres://...` is opened as by
/// [`open`] (the database must exist either way).
pub async fn open_read_only(url: &str) -> Result<std::sync::Arc<dyn EventStore>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open_read_only(path).await?;
        return Ok(std::sync::Arc::new(store));
    }
    open(url).await
}

/// Opens a store from a URL: `sqlite://PATH` (created if missing) or `postgres://...`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn EventStore>> {
    let store: std::sync::Arc<dyn EventStore> = if let Some(path) = url.strip_prefix("sqlite://") {
        std::sync::Arc::new(sqlite::SqliteStore::open(path).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        std::sync::Arc::new(postgres::PostgresStore::connect(url).await?)
    } else {
        return Err(StoreError::InvalidUrl {
            url: url.to_string(),
            message: "expected sqlite://PATH or postgres://...".into(),
        });
    };
    // Testing knob: CAIRN_CHAOS_APPEND_LOST_REPLY / CAIRN_CHAOS_SEED (see `faults`); the store
    // itself when unset.
    faults::wrap_from_env(store)
}
