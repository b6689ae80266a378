//! Group commit: many concurrent appends, one transaction, one fsync.
//!
//! Every completed task must be on disk before the run goes on (`synchronous=FULL`, fsync'd
//! commits), and a commit costs one fsync whatever it carries. [`GroupCommitter`] queues the
//! `append` calls of many tasks and hands them to one writer task, which writes whatever has queued
//! up (at most [`GroupCommitOptions::max_batch`] calls) in a single
//! [`super::EventLog::append_groups`] transaction and answers each caller separately: a caller whose
//! expected sequence is stale gets its own `Conflict`, the others commit. While one batch is being
//! written the next one fills, so the batch size follows the load by itself: one call alone is
//! written at once, a thousand concurrent calls share a handful of commits.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    AppendRequest, Appended, DefinitionStore, EventLog, EventStore, GroupOutcome, Leases, Result,
    RunFilter, RunIndex, RunQuery, RunSummary, SnapshotStore, StoreError, StoredDefinition,
    StoredEvent,
};

/// Options of [`GroupCommitter`].
#[derive(Debug, Clone)]
pub struct GroupCommitOptions {
    /// Appends waiting for the writer; callers beyond it wait to enqueue (default 4096).
    pub queue_capacity: usize,
    /// At most this many append calls per transaction (default 256).
    pub max_batch: usize,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            max_batch: 256,
        }
    }
}

struct Pending {
    requests: Vec<AppendRequest>,
    reply: oneshot::Sender<Result<Vec<Appended>>>,
}

/// An [`EventStore`] that group-commits appends to an inner store; reads pass through.
///
/// Cheap to clone. The writer task stops when `shutdown` is cancelled, after writing what is
/// already queued; later appends fail with [`StoreError::Unavailable`].
#[derive(Clone)]
pub struct GroupCommitter {
    inner: Arc<dyn EventStore>,
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter").finish_non_exhaustive()
    }
}

impl GroupCommitter {
    /// Starts the writer task on `tracker`; it runs until `shutdown` is cancelled (or every
    /// handle is dropped).
    pub fn new(
        inner: Arc<dyn EventStore>,
        options: GroupCommitOptions,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (queue, rx) = mpsc::channel(options.queue_capacity.max(1));
        tracker.spawn(writer(
            inner.clone(),
            rx,
            options.max_batch.max(1),
            shutdown,
        ));
        Self { inner, queue }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("group commit writer has stopped".into())
}

/// The writer loop: take one call (waiting), then whatever else is queued, write, answer.
async fn writer(
    store: Arc<dyn EventStore>,
    mut rx: mpsc::Receiver<Pending>,
    max_batch: usize,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    // How many callers the last commit answered: more than one means we are under load.
    let mut last_batch = 0;
    loop {
        if last_batch > 1 {
            // The callers just answered are runnable and about to queue their next appends: let
            // them run first (a scheduler yield, not a timed wait) so the next batch takes them
            // all instead of committing the one or two that happened to be first. An idle writer
            // (last batch of one) never yields, so a lone append is written at once.
            tokio::task::yield_now().await;
        }
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                // Stop intake, then drain what callers already handed over.
                rx.close();
                None
            }
            next = rx.recv() => next,
        };
        match first {
            Some(p) => batch.push(p),
            None => {
                while let Some(p) = rx.recv().await {
                    batch.push(p);
                    if batch.len() >= max_batch {
                        commit(store.as_ref(), &mut batch).await;
                    }
                }
                commit(store.as_ref(), &mut batch).await;
                return;
            }
        }
        // Everything already queued joins this batch, taken in one pass over the channel.
        let room = max_batch.saturating_sub(batch.len());
        if room > 0 && !rx.is_empty() {
            rx.recv_many(&mut batch, room).await;
        }
        last_batch = batch.len();
        commit(store.as_ref(), &mut batch).await;
    }
}

/// Writes `batch` in one transaction and answers every caller.
async fn commit(store: &dyn EventStore, batch: &mut Vec<Pending>) {
    if batch.is_empty() {
        return;
    }
    let (groups, replies): (Vec<_>, Vec<_>) = batch
        .drain(..)
        // A caller that gave up (dropped its future) still gets written: it may have been
        // cancelled after the point of no return, and the log must not depend on that race.
        .map(|p| (p.requests, p.reply))
        .unzip();
    let n = groups.len();
    let outcomes: Vec<GroupOutcome> = match store.append_groups(groups).await {
        Ok(outcomes) if outcomes.len() == n => outcomes,
        Ok(outcomes) => vec![
            Err(StoreError::Unavailable(format!(
                "group commit: store answered {} of {n} groups",
                outcomes.len()
            )));
            n
        ],
        Err(e) => vec![Err(e); n],
    };
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // The caller may have gone away; its answer is then of no use to anyone.
        let _ = reply.send(outcome);
    }
}

#[async_trait]
impl EventLog for GroupCommitter {
    async fn append(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { requests, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn append_groups(&self, groups: Vec<Vec<AppendRequest>>) -> Result<Vec<GroupOutcome>> {
        // Already a batch: it needs no queue.
        self.inner.append_groups(groups).await
    }

    async fn load(
        &self,
        aggregate_type: &str,
        stream: &str,
        after_sequence: u64,
    ) -> Result<Vec<StoredEvent>> {
        self.inner
            .load(aggregate_type, stream, after_sequence)
            .await
    }

    async fn read_all(&self, after_position: u64, limit: u64) -> Result<Vec<StoredEvent>> {
        self.inner.read_all(after_position, limit).await
    }

    async fn head_position(&self) -> Result<u64> {
        self.inner.head_position().await
    }

    fn database(&self) -> Option<super::Database<'_>> {
        self.inner.database()
    }
}

#[async_trait]
impl RunIndex for GroupCommitter {
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        self.inner.list_runs(filter).await
    }

    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        self.inner.query_runs(query).await
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunSummary>> {
        self.inner.get_run(run_id).await
    }

    async fn projection_checkpoint(&self, projection: &str) -> Result<Option<u64>> {
        self.inner.projection_checkpoint(projection).await
    }

    async fn put_projection_checkpoint(&self, projection: &str, position: u64) -> Result<()> {
        self.inner
            .put_projection_checkpoint(projection, position)
            .await
    }

    async fn rebuild_run_summary(&self, summary: &RunSummary, last_sequence: u64) -> Result<bool> {
        self.inner.rebuild_run_summary(summary, last_sequence).await
    }
}

#[async_trait]
impl Leases for GroupCommitter {
    async fn register_worker(&self, name: &str, ttl_ms: i64) -> Result<super::WorkerLease> {
        self.inner.register_worker(name, ttl_ms).await
    }

    async fn renew_worker(&self, lease: &super::WorkerLease) -> Result<bool> {
        self.inner.renew_worker(lease).await
    }

    async fn retire_worker(&self, lease: &super::WorkerLease) -> Result<()> {
        self.inner.retire_worker(lease).await
    }

    async fn release_expired(&self) -> Result<u64> {
        self.inner.release_expired().await
    }

    async fn claim_runs(
        &self,
        lease: &super::WorkerLease,
        now: i64,
        limit: u64,
        only: Option<&[String]>,
    ) -> Result<Vec<super::Claim>> {
        self.inner.claim_runs(lease, now, limit, only).await
    }

    async fn next_wake(&self) -> Result<Option<i64>> {
        self.inner.next_wake().await
    }

    async fn earliest_wake(&self) -> Result<Option<i64>> {
        self.inner.earliest_wake().await
    }

    async fn owned_runs(&self, lease: &super::WorkerLease) -> Result<Vec<String>> {
        self.inner.owned_runs(lease).await
    }

    fn work_notices(&self) -> Option<(tokio::sync::broadcast::Receiver<String>, bool)> {
        self.inner.work_notices()
    }
}

#[async_trait]
impl DefinitionStore for GroupCommitter {
    async fn put_definition(&self, def: &StoredDefinition) -> Result<()> {
        self.inner.put_definition(def).await
    }

    async fn definition_by_hash(&self, hash: &str) -> Result<Option<StoredDefinition>> {
        self.inner.definition_by_hash(hash).await
    }

    async fn definition_events(&self) -> Result<Vec<StoredEvent>> {
        self.inner.definition_events().await
    }

    async fn unpublished_definitions(&self) -> Result<Vec<StoredDefinition>> {
        self.inner.unpublished_definitions().await
    }
}

#[async_trait]
impl SnapshotStore for GroupCommitter {
    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
        last_sequence: u64,
        payload: serde_json::Value,
    ) -> Result<()> {
        // Not queued: a snapshot is no event and needs no place in a group's transaction.
        self.inner
            .save_snapshot(aggregate_type, stream, last_sequence, payload)
            .await
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
    ) -> Result<Option<(u64, serde_json::Value)>> {
        self.inner.load_snapshot(aggregate_type, stream).await
    }
}
