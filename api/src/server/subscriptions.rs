//! Subscriptions: a run's events, its status, and changes to the runs list.
//!
//! The guarantee of `runEvents`: given the last position a client saw, it delivers every later
//! event of the run, in order, once. How:
//! 1. join the log follower's channel for the run FIRST, so nothing committed from now on can be
//!    missed (the follower routes each event to its run's channel only);
//! 2. replay from the store what is already committed after `after`;
//! 3. go on with the live feed, dropping any position already delivered;
//! 4. a subscriber that lags behind its channel reads the store again after its last position
//!    instead of skipping (within one run, position order is sequence order, because a stream
//!    is only extended by a writer that saw its last event committed).
//!
//! Every subscriber of a run gets the same [`RunEventNode`] (a shared event, its payload decoded
//! once, only when `data` is selected).

use super::auth::{Permission, Require};
use std::sync::Arc;

use async_graphql::{Context, Json, Result, SimpleObject, Subscription};
use cairn_runtime::store::{EventStore, StoredEvent, RUN_AGGREGATE};
use futures::Stream;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::errors::{self, Code};
use super::feed::RunReceiver;
use super::metrics::SubscriptionKind;
use super::schema::app::{app, App};
use super::schema::pagination::RunsFilter;
use super::schema::scalars::RunStatus;
use super::schema::types::{RunEventNode, RunSummaryNode};
use cairn_runtime::view::{RunChange, RunWatch};

/// The subscription root.
pub struct SubscriptionRoot;

/// A change of a run's status or current tasks.
#[derive(SimpleObject, Clone, Debug)]
pub struct RunUpdate {
    /// The run.
    pub run_id: String,
    /// Status now.
    pub status: RunStatus,
    /// JSON pointers of the tasks running now.
    pub current_tasks: Vec<String>,
    /// Position of the event that caused the change.
    pub position: u64,
    /// The output, once completed.
    pub output: Option<Json<Value>>,
    /// The error, once faulted.
    pub error: Option<Json<Value>>,
}

/// Events after which a run never changes again. A faulted run is left out: it can be retried.
fn is_final(event_type: &str) -> bool {
    use cairn_core::names::event;
    event_type == event::RUN_COMPLETED || event_type == event::RUN_CANCELLED
}

/// The events of one run after `after`, in order, once each (see the module docs); ends after
/// the run's final event or when the server drains.
fn run_log(
    store: Arc<dyn EventStore>,
    mut live: RunReceiver,
    run_id: String,
    first: Vec<StoredEvent>,
    after: u64,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<RunEventNode>> {
    async_stream::stream! {
        let mut last_position = after;
        let mut last_sequence = 0u64;
        let mut done = false;
        for e in first {
            last_sequence = e.sequence;
            if e.position > last_position {
                last_position = e.position;
                done = is_final(&e.event_type);
                yield Ok(RunEventNode::new(e));
            }
        }
        while !done {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = live.recv() => m,
            };
            match next {
                Ok(node) => {
                    let e = node.stored();
                    // The channel is the run's own; the check guards against a misrouted event.
                    if e.aggregate_type != RUN_AGGREGATE
                        || e.stream != run_id
                        || e.position <= last_position
                    {
                        continue;
                    }
                    last_position = e.position;
                    last_sequence = e.sequence;
                    done = is_final(&e.event_type);
                    yield Ok(RunEventNode(node));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the channel: what it dropped is committed, so the store has it.
                    match store.load(RUN_AGGREGATE, &run_id, last_sequence).await {
                        Ok(events) => {
                            for e in events {
                                last_sequence = e.sequence;
                                if e.position > last_position {
                                    last_position = e.position;
                                    done = is_final(&e.event_type);
                                    yield Ok(RunEventNode::new(e));
                                    if done {
                                        break;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            yield Err(errors::store("resume subscription", e));
                            break;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}

/// Joins the feed, then loads the run (`NOT_FOUND` when it does not exist).
async fn open_run_log(
    ctx: &Context<'_>,
    run_id: &str,
    after: u64,
) -> Result<(impl Stream<Item = Result<RunEventNode>>, App)> {
    let app = app(ctx)?.clone();
    // Subscribe before reading the store: see the module docs.
    let live = app.feed.subscribe(run_id);
    let first = app
        .store
        .load(RUN_AGGREGATE, run_id, 0)
        .await
        .map_err(|e| errors::store("subscribe", e))?;
    if first.is_empty() {
        return Err(errors::error(
            Code::NotFound,
            format!("run {run_id} not found"),
        ));
    }
    let stream = run_log(
        app.store.clone(),
        live,
        run_id.to_string(),
        first,
        after,
        app.shutdown.clone(),
    );
    Ok((stream, app))
}

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// A run's events in position order, starting after position `after` (0 for all): pass the
    /// last position you saw to resume with no gap and no duplicate. Ends after the run
    /// completes or is cancelled (not when it faults: a retry may follow).
    #[graphql(guard = "Require(Permission::Read)")]
    async fn run_events(
        &self,
        ctx: &Context<'_>,
        run_id: String,
        #[graphql(default = 0)] after: u64,
    ) -> Result<impl Stream<Item = Result<RunEventNode>>> {
        let (log, app) = open_run_log(ctx, &run_id, after).await?;
        let guard = app.metrics.subscription(SubscriptionKind::RunEvents);
        Ok(async_stream::stream! {
            let _guard = guard;
            for await e in log {
                yield e;
            }
        })
    }

    /// A run's status and current tasks: the state now, then every change. Ends with the run
    /// (completed or cancelled).
    #[graphql(guard = "Require(Permission::Read)")]
    async fn run_updated(
        &self,
        ctx: &Context<'_>,
        run_id: String,
    ) -> Result<impl Stream<Item = Result<RunUpdate>>> {
        let (log, app) = open_run_log(ctx, &run_id, 0).await?;
        let guard = app.metrics.subscription(SubscriptionKind::RunUpdated);
        Ok(async_stream::stream! {
            let _guard = guard;
            let mut watch = RunWatch::new();
            // Whether something was folded since the last report.
            let mut dirty = false;
            futures::pin_mut!(log);
            loop {
                // Fold everything already available before reporting, so that a replayed history
                // yields its latest state once rather than every step it went through.
                let item = if dirty {
                    match futures::FutureExt::now_or_never(futures::StreamExt::next(&mut log)) {
                        Some(i) => i,
                        None => {
                            if let Some(c) = watch.change() {
                                yield Ok(update(&run_id, c));
                            }
                            futures::StreamExt::next(&mut log).await
                        }
                    }
                } else {
                    futures::StreamExt::next(&mut log).await
                };
                let Some(item) = item else { break };
                match item {
                    Ok(node) => match watch.apply(node.0.stored()) {
                        Ok(()) => dirty = true,
                        Err(m) => {
                            yield Err(errors::internal("run updates", m));
                            break;
                        }
                    },
                    Err(e) => {
                        yield Err(e);
                        break;
                    }
                }
            }
            if let Some(c) = watch.change() {
                yield Ok(update(&run_id, c));
            }
        })
    }

    /// Changes to the runs list: the new summary of each run that changed (matching `filter`).
    /// A subscriber that falls behind gets the current first page of the list again.
    #[graphql(guard = "Require(Permission::Read)")]
    async fn runs_changed(
        &self,
        ctx: &Context<'_>,
        filter: Option<RunsFilter>,
    ) -> Result<impl Stream<Item = Result<RunSummaryNode>>> {
        let app = app(ctx)?.clone();
        let filter = filter.unwrap_or_default();
        filter.check()?;
        let mut live = app.feed.subscribe_runs();
        let guard = app.metrics.subscription(SubscriptionKind::RunsChanged);
        Ok(async_stream::stream! {
            let _guard = guard;
            loop {
                let next = tokio::select! {
                    _ = app.shutdown.cancelled() => break,
                    m = live.recv() => m,
                };
                match next {
                    Ok(s) => {
                        if filter.matches(&s) {
                            yield Ok(RunSummaryNode((*s).clone()));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let mut q = filter.query();
                        q.limit = 100;
                        match app.store.query_runs(&q).await {
                            Ok(rows) => {
                                for r in rows {
                                    yield Ok(RunSummaryNode(r));
                                }
                            }
                            Err(e) => {
                                yield Err(errors::store("runs changed", e));
                                break;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }
}

fn update(run_id: &str, c: RunChange) -> RunUpdate {
    RunUpdate {
        run_id: run_id.to_string(),
        status: RunStatus::from_label(c.status),
        current_tasks: c.current_tasks,
        position: c.position,
        output: c.output.map(Json),
        error: c.error.map(|e| Json(e.to_value())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::feed::SharedEvent;
    use cairn_runtime::store::sqlite::SqliteStore;
    use cairn_runtime::store::{AppendRequest, NewEvent};
    use futures::StreamExt;
    use serde_json::json;

    async fn store_with_run(n: u64) -> (tempfile::TempDir, Arc<dyn EventStore>) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("lag.db");
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteStore::open(path.to_str().expect("a UTF-8 path"))
                .await
                .expect("a store"),
        );
        for i in 0..n {
            // Another stream in between, so that positions and sequences differ.
            let req = |stream: &str, expected: u64| AppendRequest {
                aggregate_type: RUN_AGGREGATE.into(),
                stream: stream.into(),
                expected_sequence: expected,
                events: vec![NewEvent {
                    event_type: "TaskSkipped".into(),
                    event_version: "1".into(),
                    payload: json!({ "parent": 0, "index": i, "position": "/do/0" }),
                    metadata: json!({}),
                }],
                run_summary: None,
                lease: Default::default(),
            };
            store
                .append(vec![req("r", i), req("other", i)])
                .await
                .expect("append");
        }
        (dir, store)
    }

    /// A subscriber that falls behind the broadcast reads the store instead of skipping, and
    /// what it already has is not delivered twice.
    #[tokio::test]
    async fn a_lagging_subscriber_neither_skips_nor_repeats() {
        let (_dir, store) = store_with_run(20).await;
        let log = store.read_all(0, 1_000).await.expect("the log");
        let (tx, rx) = broadcast::channel(4);
        // The whole log goes through a channel of 4: the subscriber lags.
        for e in &log {
            let _ = tx.send(SharedEvent::new(e.clone()));
        }
        drop(tx);
        let run: Vec<StoredEvent> = store.load(RUN_AGGREGATE, "r", 0).await.expect("load");
        // The replay saw only the first five; the client had seen the first two.
        let first: Vec<StoredEvent> = run.iter().take(5).cloned().collect();
        let after = run[1].position;
        let got: Vec<u64> = run_log(
            store.clone(),
            RunReceiver::detached(rx),
            "r".into(),
            first,
            after,
            CancellationToken::new(),
        )
        .map(|e| e.expect("an event").0.stored().sequence)
        .collect()
        .await;
        assert_eq!(got, (3..=20).collect::<Vec<u64>>());
    }

    /// Live events of other runs and events already replayed are dropped; the stream ends after
    /// the run's final event.
    #[tokio::test]
    async fn live_events_are_filtered_deduplicated_and_end_the_stream() {
        let (_dir, store) = store_with_run(3).await;
        let log = store.read_all(0, 1_000).await.expect("the log");
        let (tx, rx) = broadcast::channel(64);
        let run: Vec<StoredEvent> = log.iter().filter(|e| e.stream == "r").cloned().collect();
        let mut fin = run[2].clone();
        fin.event_type = "RunCompleted".into();
        for e in &log {
            let e = if e.position == fin.position { &fin } else { e };
            let _ = tx.send(SharedEvent::new(e.clone()));
        }
        // Never dropped: the stream must end on its own.
        let got: Vec<u64> = run_log(
            store.clone(),
            RunReceiver::detached(rx),
            "r".into(),
            run[..2].to_vec(),
            0,
            CancellationToken::new(),
        )
        .map(|e| e.expect("an event").0.stored().sequence)
        .collect()
        .await;
        assert_eq!(got, [1, 2, 3]);
        drop(tx);
    }
}
