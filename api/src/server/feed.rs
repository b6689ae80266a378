//! The log follower: one task per server that reads the global event log in position order and
//! fans every event out to the subscriptions through a broadcast channel.
//!
//! Why follow the store rather than the runtime's bus: the bus only carries events appended by
//! this process, while a run may be executed by a `cairn worker` elsewhere on the same store.
//! [`EventStore::read_all`] is gap-free in position order on every store, so reading "after the
//! last position delivered" never skips an event. The local bus is still used, as a doorbell: an
//! append by this process wakes the follower at once instead of at its next poll.
//!
//! A subscriber joins the broadcast first and then replays from the store; what it gets twice it
//! drops by position, and when it lags behind the channel it reads the store again instead of
//! skipping (see `subscriptions.rs`).

use std::sync::Arc;
use std::time::Duration;

use cairn_runtime::store::{EventStore, RunSummary, StoredEvent, RUN_AGGREGATE};
use cairn_runtime::BusEvent;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use super::metrics::Metrics;

/// How often the follower's lag (`cairn_projection_lag_events{projection="log_follower"}`) is
/// sampled.
const LAG_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Options of the follower.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// How often the store is read when nothing rings the doorbell (default 25 ms): the upper
    /// bound of the extra delivery latency of events appended by other processes.
    pub poll_interval: Duration,
    /// Events read per store query (default 1,000).
    pub batch: u64,
    /// Capacity of the broadcast channels (default 16,384); a subscriber further behind than
    /// this falls back to the store.
    pub capacity: usize,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            poll_interval: Duration::from_millis(25),
            batch: 1_000,
            capacity: 16_384,
        }
    }
}

/// Handle of the log follower. Cheap to clone.
#[derive(Clone)]
pub struct LogFeed {
    events: broadcast::Sender<Arc<StoredEvent>>,
    runs: broadcast::Sender<Arc<RunSummary>>,
}

impl LogFeed {
    /// Starts following the log after position `head` on `tracker`, until `shutdown`.
    pub fn start(
        store: Arc<dyn EventStore>,
        doorbell: Option<broadcast::Receiver<BusEvent>>,
        head: u64,
        opts: FeedOptions,
        metrics: Metrics,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> LogFeed {
        let (events, _) = broadcast::channel(opts.capacity);
        let (runs, _) = broadcast::channel(opts.capacity);
        let feed = LogFeed { events, runs };
        let follower = Follower {
            store,
            doorbell,
            position: head,
            opts,
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

    /// Every event appended from now on, in position order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    /// The new summary of every run whose events were appended from now on (at most one per run
    /// and read of the log). Computed only while someone listens.
    pub fn subscribe_runs(&self) -> broadcast::Receiver<Arc<RunSummary>> {
        self.runs.subscribe()
    }
}

/// The last position in the log (0 when empty).
pub async fn head_position(store: &dyn EventStore) -> cairn_runtime::store::Result<u64> {
    store.head_position().await
}

struct Follower {
    store: Arc<dyn EventStore>,
    doorbell: Option<broadcast::Receiver<BusEvent>>,
    position: u64,
    opts: FeedOptions,
    metrics: Metrics,
    feed: LogFeed,
}

impl Follower {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut sampled: Option<tokio::time::Instant> = None;
        loop {
            // The lag is sampled before catching up (what is waiting), at most once a second
            // so that an idle server costs the store one cheap query per second, not per poll.
            if sampled.is_none_or(|t| t.elapsed() >= LAG_SAMPLE_INTERVAL) {
                sampled = Some(tokio::time::Instant::now());
                match self.store.head_position().await {
                    Ok(head) => {
                        self.metrics
                            .runtime
                            .set_projection_lag("log_follower", head, self.position)
                    }
                    Err(e) => warn!(error = %e, "cannot read the head of the log"),
                }
            }
            self.catch_up().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.opts.poll_interval) => {}
                rung = ring(&mut self.doorbell) => {
                    if !rung {
                        // The runtime is gone: polling alone goes on.
                        self.doorbell = None;
                    }
                }
            }
        }
    }

    /// Reads and delivers everything after the current position.
    async fn catch_up(&mut self) {
        let mut touched: Vec<String> = Vec::new();
        loop {
            let page = match self.store.read_all(self.position, self.opts.batch).await {
                Ok(p) => p,
                Err(e) => {
                    // Transient: the next poll tries again from the same position.
                    warn!(error = %e, position = self.position, "cannot read the log");
                    break;
                }
            };
            let full = page.len() as u64 >= self.opts.batch;
            for e in page {
                self.position = e.position;
                if e.aggregate_type == RUN_AGGREGATE && !touched.contains(&e.stream) {
                    touched.push(e.stream.clone());
                }
                // No receiver is not an error: nobody subscribes right now.
                let _ = self.feed.events.send(Arc::new(e));
            }
            self.metrics
                .follower_position
                .set(i64::try_from(self.position).unwrap_or(i64::MAX));
            if !full {
                break;
            }
        }
        if self.feed.runs.receiver_count() > 0 {
            for run_id in touched {
                match self.store.get_run(&run_id).await {
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

/// Waits for the doorbell; `false` once it can never ring again.
async fn ring(doorbell: &mut Option<broadcast::Receiver<BusEvent>>) -> bool {
    match doorbell {
        Some(rx) => match rx.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                // One read of the log serves every append that rang so far.
                while !matches!(
                    rx.try_recv(),
                    Err(broadcast::error::TryRecvError::Empty
                        | broadcast::error::TryRecvError::Closed)
                ) {}
                true
            }
            Err(broadcast::error::RecvError::Closed) => false,
        },
        None => std::future::pending().await,
    }
}
