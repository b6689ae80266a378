//! The subscription feed: fans every run event the runtime's log tail reads out to the
//! subscribers of that run, through one broadcast channel per run watched (created by its first
//! subscriber, removed when its last one goes away). An event costs the subscribers of its own
//! run, not every subscriber of the server, and it is wrapped once in a [`SharedEvent`] whose
//! payload is decoded at most once, when first asked for. The feed knows nothing of GraphQL: the
//! schema wraps a shared event in its `RunEvent` object.
//!
//! Why the log tail rather than the runtime's bus: the bus only carries events appended by this
//! process, while a run may be executed by a `cairn worker` elsewhere on the same store. The tail
//! ([`cairn_runtime::tail`]) reads the whole log in position order and never skips an event, and
//! it is the same one the engine follows, so the server reads each page of the log once.
//!
//! A subscriber joins its run's channel first and then replays from the store; what it gets twice it
//! drops by position, and when it lags behind the channel it reads the store again instead of
//! skipping (see `subscriptions.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_core::events::RunEvent;
use cairn_runtime::store::{EventStore, RunSummary, StoredEvent, RUN_AGGREGATE};
use cairn_runtime::tail::{LogTail, TailPage, TailReceiver};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use super::metrics::Metrics;

/// How often the follower's lag (`cairn_projection_lag_events{projection="log_follower"}`) is
/// sampled.
const LAG_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Options of the feed. How often the log is read is the runtime's
/// ([`cairn_runtime::RuntimeBuilder::tail_interval`]).
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Capacity of the runs-list channel (default 16,384).
    pub capacity: usize,
    /// Capacity of each run's channel (default 1,024); a subscriber further behind its run than
    /// this falls back to the store.
    pub run_capacity: usize,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            capacity: 16_384,
            run_capacity: 1_024,
        }
    }
}

/// One stored run event, shared by every subscriber of its run; its payload is decoded (and
/// upcast) at most once, by the first reader that asks for it.
#[derive(Clone, Debug)]
pub struct SharedEvent(Arc<SharedCell>);

#[derive(Debug)]
struct SharedCell {
    event: StoredEvent,
    data: std::sync::OnceLock<Value>,
}

impl SharedEvent {
    /// Wraps a stored event (nothing is decoded yet).
    pub fn new(e: StoredEvent) -> Self {
        SharedEvent(Arc::new(SharedCell {
            event: e,
            data: std::sync::OnceLock::new(),
        }))
    }

    /// The event as stored.
    pub fn stored(&self) -> &StoredEvent {
        &self.0.event
    }

    /// The payload upcast to the current event version; an event this build cannot decode is
    /// given as stored.
    pub fn data(&self) -> &Value {
        let e = &self.0.event;
        self.0.data.get_or_init(|| {
            match RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone()) {
                Ok(ev) => ev.payload(),
                Err(_) => e.payload.clone(),
            }
        })
    }

    /// Whether both are the same shared value (for tests).
    #[cfg(test)]
    pub fn same_as(&self, other: &SharedEvent) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The channel of each run someone watches, by run id.
type Routes = Arc<Mutex<HashMap<String, broadcast::Sender<SharedEvent>>>>;

/// Handle of the log follower. Cheap to clone.
#[derive(Clone)]
pub struct LogFeed {
    /// The channel of each run someone watches.
    routes: Routes,
    run_capacity: usize,
    runs: broadcast::Sender<Arc<RunSummary>>,
}

impl LogFeed {
    /// Starts delivering what `tail` reads from now on, on `tracker`, until `shutdown`.
    pub fn start(
        tail: &LogTail,
        store: Arc<dyn EventStore>,
        opts: FeedOptions,
        metrics: Metrics,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> LogFeed {
        let (runs, _) = broadcast::channel(opts.capacity.max(1));
        let feed = LogFeed {
            routes: Arc::default(),
            run_capacity: opts.run_capacity.max(1),
            runs,
        };
        let follower = Follower {
            store,
            tail: tail.subscribe_prompt(),
            metrics,
            feed: feed.clone(),
        };
        tracker.spawn(
            follower
                .run(shutdown)
                .instrument(tracing::info_span!("log_follower")),
        );
        feed
    }

    /// Every event of run `run_id` appended from now on, in position order. The run's channel
    /// goes away with its last receiver.
    pub fn subscribe(&self, run_id: &str) -> RunReceiver {
        let mut routes = lock(&self.routes);
        let rx = match routes.get(run_id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(self.run_capacity);
                routes.insert(run_id.to_string(), tx);
                rx
            }
        };
        RunReceiver {
            rx: Some(rx),
            run_id: run_id.to_string(),
            routes: Some(self.routes.clone()),
        }
    }

    /// How many runs have a channel now (for tests).
    #[cfg(test)]
    fn routed_runs(&self) -> usize {
        lock(&self.routes).len()
    }

    /// The new summary of every run whose events were appended from now on (at most one per run
    /// and read of the log). Computed only while someone listens.
    pub fn subscribe_runs(&self) -> broadcast::Receiver<Arc<RunSummary>> {
        self.runs.subscribe()
    }
}

/// The receiving end of one run's channel; the last one dropped removes the channel.
pub struct RunReceiver {
    rx: Option<broadcast::Receiver<SharedEvent>>,
    run_id: String,
    /// `None` for a receiver outside the feed (tests).
    routes: Option<Routes>,
}

impl RunReceiver {
    /// A receiver not registered with any feed.
    #[cfg(test)]
    pub fn detached(rx: broadcast::Receiver<SharedEvent>) -> Self {
        RunReceiver {
            rx: Some(rx),
            run_id: String::new(),
            routes: None,
        }
    }

    /// The next event of the run, as [`broadcast::Receiver::recv`].
    pub async fn recv(&mut self) -> Result<SharedEvent, broadcast::error::RecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for RunReceiver {
    fn drop(&mut self) {
        let Some(routes) = self.routes.take() else {
            return;
        };
        // Under the lock, so that no subscriber joins the channel between the check and removal.
        let mut routes = lock(&routes);
        drop(self.rx.take());
        if routes
            .get(&self.run_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            routes.remove(&self.run_id);
        }
    }
}

/// Locks the routes; a panic while holding the lock cannot leave the map inconsistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Follower {
    store: Arc<dyn EventStore>,
    tail: TailReceiver,
    metrics: Metrics,
    feed: LogFeed,
}

impl Follower {
    async fn run(mut self, shutdown: CancellationToken) {
        // The lag is sampled at most once a second, so that an idle server costs the store one
        // cheap query per second for it.
        let mut sample = tokio::time::interval(LAG_SAMPLE_INTERVAL);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sample.tick() => self.sample_lag().await,
                page = self.tail.next() => match page {
                    None => return,
                    Some(Ok(page)) => self.deliver(page).await,
                    Some(Err(e)) => {
                        // Transient: the next call reads again from the same position.
                        warn!(error = %e, position = self.tail.position(), "cannot read the log");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(LAG_SAMPLE_INTERVAL / 10) => {}
                        }
                    }
                },
            }
        }
    }

    async fn sample_lag(&self) {
        match self.store.head_position().await {
            Ok(head) => {
                self.metrics
                    .runtime
                    .set_projection_lag("log_follower", head, self.tail.position())
            }
            Err(e) => warn!(error = %e, "cannot read the head of the log"),
        }
    }

    /// Hands one page to the subscribers of its runs, and the new summaries of those runs to
    /// the runs-list subscribers.
    async fn deliver(&mut self, page: TailPage) {
        let mut touched: Vec<&str> = Vec::new();
        {
            // One lock per page; sending never blocks.
            let routes = lock(&self.feed.routes);
            for e in page.events.iter() {
                if e.aggregate_type != RUN_AGGREGATE {
                    continue;
                }
                if !touched.contains(&e.stream.as_str()) {
                    touched.push(&e.stream);
                }
                if let Some(tx) = routes.get(&e.stream) {
                    // No receiver left is not an error: the last one removes the channel.
                    let _ = tx.send(SharedEvent::new(e.clone()));
                }
            }
        }
        self.metrics
            .follower_position
            .set(i64::try_from(self.tail.position()).unwrap_or(i64::MAX));
        if self.feed.runs.receiver_count() > 0 {
            for run_id in touched {
                match self.store.get_run(run_id).await {
                    Ok(Some(s)) => {
                        let _ = self.feed.runs.send(Arc::new(s));
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, run = %run_id, "cannot read a run summary"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_runtime::store::sqlite::SqliteStore;
    use cairn_runtime::store::{AppendRequest, NewEvent};
    use serde_json::json;

    /// Each subscriber gets the events of its own run only, every subscriber of a run shares
    /// the same event, and a run's channel goes away with its last subscriber.
    #[tokio::test]
    async fn events_are_routed_to_their_run_and_channels_are_removed() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("feed.db");
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteStore::open(path.to_str().expect("a UTF-8 path"))
                .await
                .expect("a store"),
        );
        let metrics = Metrics::new(cairn_runtime::metrics::Metrics::new().expect("metrics"))
            .expect("server metrics");
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let tail = LogTail::start::<()>(
            store.clone(),
            0,
            cairn_runtime::tail::TailOptions {
                poll_interval: Duration::from_millis(5),
                ..Default::default()
            },
            None,
            &tracker,
            shutdown.clone(),
        );
        let feed = LogFeed::start(
            &tail,
            store.clone(),
            FeedOptions::default(),
            metrics,
            &tracker,
            shutdown.clone(),
        );
        let mut a1 = feed.subscribe("a");
        let mut a2 = feed.subscribe("a");
        let mut b = feed.subscribe("b");
        assert_eq!(feed.routed_runs(), 2);
        for i in 0..3u64 {
            let req = |stream: &str| AppendRequest {
                aggregate_type: RUN_AGGREGATE.into(),
                stream: stream.into(),
                expected_sequence: i,
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
                .append(vec![req("a"), req("c"), req("b")])
                .await
                .expect("append");
        }
        for seq in 1..=3u64 {
            let x = next(&mut a1).await;
            let y = next(&mut a2).await;
            assert_eq!(
                (x.stored().stream.as_str(), x.stored().sequence),
                ("a", seq)
            );
            assert!(x.same_as(&y), "one value per event");
            let z = next(&mut b).await;
            assert_eq!(
                (z.stored().stream.as_str(), z.stored().sequence),
                ("b", seq)
            );
        }
        drop(a1);
        assert_eq!(feed.routed_runs(), 2);
        drop(a2);
        assert_eq!(feed.routed_runs(), 1);
        drop(b);
        assert_eq!(feed.routed_runs(), 0);
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    async fn next(rx: &mut RunReceiver) -> SharedEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event in time")
            .expect("an event")
    }
}
