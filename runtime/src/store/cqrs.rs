//! cqrs-es on Cairn's stores: [`CqrsRepository`] implements cqrs-es 0.5's
//! [`PersistedEventRepository`] over any [`EventStore`], so `PersistedEventStore` and
//! `CqrsFramework` (aggregates, commands, queries) run on the SQLite and PostgreSQL stores and
//! their appends go through a [`super::group::GroupCommitter`] when one is given.
//!
//! What it adds over sqlite-es/postgres-es: `stream_all_events` replays in global position order
//! (theirs orders by each aggregate's own sequence).
//!
//! Snapshots: a repository made with [`CqrsRepository::with_snapshots`] keeps snapshots in the
//! store's `snapshots` table (the newest per aggregate, made from the log), for
//! `PersistedEventStore::new_snapshot_store` with the same size. Without it, `get_snapshot`
//! answers `None` and snapshot updates are dropped: build stores with
//! `PersistedEventStore::new_event_store` (event-sourced mode). The runtime's own snapshots of
//! runs (`crate::snapshots`) share the table under their own format; each side ignores a
//! snapshot it cannot decode and folds from the first event, so they never mislead each other.

use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayFeed, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, EventEnvelope};
use serde_json::Value;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::{AppendRequest, EventStore, NewEvent, StoreError, StoredEvent};
use crate::tail::LogCursor;

/// Events per `read_all` page while streaming, and the replay channel's size.
const PAGE: u64 = 500;

/// A cqrs-es event repository over a Cairn [`EventStore`]. Cheap to clone.
#[derive(Clone)]
pub struct CqrsRepository {
    store: Arc<dyn EventStore>,
    tracker: TaskTracker,
    snapshot_size: Option<usize>,
}

impl std::fmt::Debug for CqrsRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqrsRepository").finish_non_exhaustive()
    }
}

impl CqrsRepository {
    /// A repository over `store`; `stream_all_events` pages the log on a task of `tracker`.
    pub fn new(store: Arc<dyn EventStore>, tracker: TaskTracker) -> Self {
        Self {
            store,
            tracker,
            snapshot_size: None,
        }
    }

    /// Keeps snapshots for `PersistedEventStore::new_snapshot_store(repo, size)` (the same
    /// `size`): whenever cqrs-es asks for one, the repository snapshots the aggregate as of the
    /// events just committed.
    ///
    /// It makes the snapshot itself, from the log (the newest snapshot and the events after it),
    /// rather than storing the aggregate cqrs-es hands over: cqrs-es 0.5.0 builds that one by
    /// applying the new events to an aggregate that `EventSink::write` already applied them to,
    /// so it counts them twice.
    pub fn with_snapshots(mut self, size: usize) -> Self {
        self.snapshot_size = Some(size.max(1));
        self
    }

    /// Folds the aggregate up to event `upto` from its newest snapshot (one it can decode, and
    /// not past `upto`) and the events after it, and saves that as its snapshot.
    async fn snapshot_from_log<A: Aggregate>(
        &self,
        aggregate_id: &str,
        upto: u64,
    ) -> Result<(), PersistenceError> {
        let stored = self
            .store
            .load_snapshot(A::TYPE, aggregate_id)
            .await
            .map_err(persistence_error)?;
        let (mut aggregate, after) = match stored {
            Some((seq, _)) if seq >= upto => return Ok(()), // a racing writer got further
            Some((seq, payload)) => match serde_json::from_value::<A>(payload) {
                Ok(a) => (a, seq),
                Err(_) => (A::default(), 0),
            },
            None => (A::default(), 0),
        };
        let events = self
            .store
            .load(A::TYPE, aggregate_id, after)
            .await
            .map_err(persistence_error)?;
        for e in events.into_iter().take_while(|e| e.sequence <= upto) {
            let envelope: EventEnvelope<A> = serialized(e)?.try_into()?;
            aggregate.apply(envelope.payload);
        }
        let payload = serde_json::to_value(&aggregate)?;
        self.store
            .save_snapshot(A::TYPE, aggregate_id, upto, payload)
            .await
            .map_err(persistence_error)
    }
}

fn persistence_error(err: StoreError) -> PersistenceError {
    match err {
        StoreError::Conflict { .. } => PersistenceError::OptimisticLockError,
        StoreError::Unavailable(_) => PersistenceError::ConnectionError(Box::new(err)),
        StoreError::Corrupt(_) => PersistenceError::DeserializationError(Box::new(err)),
        other => PersistenceError::UnknownError(Box::new(other)),
    }
}

fn serialized(event: StoredEvent) -> Result<SerializedEvent, PersistenceError> {
    let sequence = usize::try_from(event.sequence).map_err(|_| {
        PersistenceError::DeserializationError(
            format!("sequence {} does not fit in usize", event.sequence).into(),
        )
    })?;
    Ok(SerializedEvent {
        aggregate_id: event.stream,
        sequence,
        aggregate_type: event.aggregate_type,
        event_type: event.event_type,
        event_version: event.event_version,
        payload: event.payload,
        metadata: event.metadata,
    })
}

/// A replay stream already holding `events` (sized to fit, so filling it never waits).
async fn replay_of(events: Vec<StoredEvent>) -> Result<ReplayStream, PersistenceError> {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    for event in events {
        feed.push(serialized(event)).await?;
    }
    Ok(stream)
}

async fn feed_all(store: Arc<dyn EventStore>, aggregate_type: &'static str, mut feed: ReplayFeed) {
    let mut cursor = LogCursor::new(store, 0, PAGE);
    loop {
        let page = match cursor.next_page().await {
            Ok(page) => page,
            Err(e) => {
                // The reader learns of the failure in-band; if it has gone, nobody needs it.
                let _ = feed.push(Err(persistence_error(e))).await;
                return;
            }
        };
        if page.is_empty() {
            return;
        }
        for event in page
            .into_iter()
            .filter(|e| e.aggregate_type == aggregate_type)
        {
            if feed.push(serialized(event)).await.is_err() {
                return; // the reader dropped the stream
            }
        }
    }
}

impl PersistedEventRepository for CqrsRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.get_last_events::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.store
            .load(A::TYPE, aggregate_id, last_sequence as u64)
            .await
            .map_err(persistence_error)?
            .into_iter()
            .map(serialized)
            .collect()
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let Some(size) = self.snapshot_size else {
            return Ok(None);
        };
        let Some((seq, aggregate)) = self
            .store
            .load_snapshot(A::TYPE, aggregate_id)
            .await
            .map_err(persistence_error)?
        else {
            return Ok(None);
        };
        let current_sequence = usize::try_from(seq).map_err(|_| {
            PersistenceError::DeserializationError(
                format!("snapshot sequence {seq} does not fit in usize").into(),
            )
        })?;
        // A payload that is not an `A` makes cqrs-es fold every event (its own fallback).
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_string(),
            aggregate,
            current_sequence,
            // cqrs-es only counts snapshots with it (the next one is this plus one).
            current_snapshot: current_sequence / size,
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        // cqrs-es passes one aggregate's new events; split by stream anyway so any input is
        // appended correctly, all in one atomic append.
        let mut requests: Vec<AppendRequest> = Vec::new();
        for e in events {
            let event = NewEvent {
                event_type: e.event_type.clone(),
                event_version: e.event_version.clone(),
                payload: e.payload.clone(),
                metadata: e.metadata.clone(),
            };
            match requests.last_mut() {
                Some(r) if r.aggregate_type == e.aggregate_type && r.stream == e.aggregate_id => {
                    r.events.push(event)
                }
                _ => requests.push(AppendRequest {
                    aggregate_type: e.aggregate_type.clone(),
                    stream: e.aggregate_id.clone(),
                    expected_sequence: (e.sequence as u64).saturating_sub(1),
                    events: vec![event],
                    run_summary: None,
                    lease: Default::default(),
                }),
            }
        }
        if requests.is_empty() {
            return Ok(());
        }
        self.store
            .append(requests)
            .await
            .map_err(persistence_error)?;
        if let (Some(_), Some((aggregate_id, _, _)), Some(last)) =
            (self.snapshot_size, snapshot_update, events.last())
        {
            // The events are committed: a lost snapshot only costs a longer load later, so it
            // must not turn the command into a failure.
            if let Err(e) = self
                .snapshot_from_log::<A>(&aggregate_id, last.sequence as u64)
                .await
            {
                warn!(aggregate = %aggregate_id, error = %e, "cannot save snapshot");
            }
        }
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self
            .store
            .load(A::TYPE, aggregate_id, 0)
            .await
            .map_err(persistence_error)?;
        replay_of(events).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let (feed, stream) = ReplayStream::new(PAGE as usize);
        self.tracker
            .spawn(feed_all(self.store.clone(), A::TYPE, feed));
        Ok(stream)
    }
}
