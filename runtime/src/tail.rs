//! Reading the global log in position order: [`LogCursor`] pages through what is there (the
//! cqrs-es replay of every event), and [`LogTail`] follows what is appended from now on, one task
//! per process shared by every reader (the engine's watch for other processes' appends to the
//! runs it holds, and the server's subscription feed).
//!
//! Why one tail and not one per reader: each reader used to poll the store on its own, with its
//! own paging, its own doorbell and its own way of not skipping events; three copies of the one
//! subtle loop, and three queries per poll. Here the task reads each page once and hands it to
//! every subscriber as a shared [`TailPage`].
//!
//! Never skipping: [`EventLog::read_all`] is gap-free in position order on every store, so reading
//! "after the last position delivered" misses nothing. A subscriber that falls behind the
//! channel (a slow reader) does not lose pages either: its [`TailReceiver`] notices the gap
//! between its own position and the next page it gets, and reads the missing events from the
//! store itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use crate::store::{EventStore, Result, StoredEvent};

/// Reads the log after a position, one page at a time, until it is caught up.
pub struct LogCursor {
    store: Arc<dyn EventStore>,
    position: u64,
    batch: u64,
}

impl LogCursor {
    /// A cursor over the events after `after` (0 for all), `batch` events per read.
    pub fn new(store: Arc<dyn EventStore>, after: u64, batch: u64) -> Self {
        LogCursor {
            store,
            position: after,
            batch: batch.max(1),
        }
    }

    /// The position of the last event read (the `after` given when nothing was read yet).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next page, empty once the cursor has caught up with the log; a failed read leaves the
    /// position where it was, so calling again retries it.
    pub async fn next_page(&mut self) -> Result<Vec<StoredEvent>> {
        let page = self.store.read_all(self.position, self.batch).await?;
        if let Some(last) = page.last() {
            self.position = last.position;
        }
        Ok(page)
    }

    /// Whether a page of this length may have left events behind it.
    fn was_full(&self, len: usize) -> bool {
        len as u64 >= self.batch
    }
}

/// Options of a [`LogTail`].
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// How often the store is read when no doorbell rings (default 25 ms): the upper bound of
    /// the delay before an append by another process is seen.
    pub poll_interval: Duration,
    /// Events read per query (default 1,000).
    pub batch: u64,
    /// Pages held for subscribers (default 256); a subscriber further behind reads the store.
    pub capacity: usize,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            poll_interval: Duration::from_millis(25),
            batch: 1_000,
            capacity: 256,
        }
    }
}

/// Consecutive events of the log, as the tail read them: every event after position `after` up
/// to the last one's position. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TailPage {
    /// The position just before the first event.
    pub after: u64,
    /// The events, in position order (never empty).
    pub events: Arc<[StoredEvent]>,
}

impl TailPage {
    /// The position of the last event.
    pub fn last_position(&self) -> u64 {
        self.events.last().map_or(self.after, |e| e.position)
    }
}

struct Shared {
    store: Arc<dyn EventStore>,
    pages: broadcast::Sender<TailPage>,
    /// The last position sent to subscribers.
    position: AtomicU64,
    /// Whether a subscriber wants this process's own appends at once ([`LogTail::subscribe_prompt`]):
    /// only then does the doorbell wake the task, since a read per local append costs the
    /// appending process a query each time (measured: a fifth of a one-run-at-a-time latency on
    /// SQLite) and a subscriber that only watches other processes gains nothing from it.
    prompt: AtomicBool,
    batch: u64,
    stop: CancellationToken,
}

/// The follower of the log: one task that reads every event appended after its start, in
/// position order, and hands each page to every [`TailReceiver`]. Cheap to clone; the task stops
/// with the cancellation token given to [`LogTail::start`].
#[derive(Clone)]
pub struct LogTail {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTail")
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl LogTail {
    /// Starts following the log after position `after` on `tracker`, until `stop`. Once a
    /// subscriber asked for it ([`LogTail::subscribe_prompt`]), each message on `doorbell` (the
    /// runtime's bus of its own appends) wakes the task at once instead of at its next poll;
    /// the message itself is not read.
    pub fn start<T: Clone + Send + 'static>(
        store: Arc<dyn EventStore>,
        after: u64,
        options: TailOptions,
        doorbell: Option<broadcast::Receiver<T>>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> LogTail {
        let (pages, _) = broadcast::channel(options.capacity.max(1));
        let shared = Arc::new(Shared {
            store: store.clone(),
            pages,
            position: AtomicU64::new(after),
            prompt: AtomicBool::new(false),
            batch: options.batch.max(1),
            stop,
        });
        let task = follow(
            shared.clone(),
            LogCursor::new(store, after, options.batch),
            options.poll_interval,
            doorbell,
        );
        tracker.spawn(task.instrument(tracing::info_span!("log_tail")));
        LogTail { shared }
    }

    /// Every event appended after the tail's current position, page by page.
    pub fn subscribe(&self) -> TailReceiver {
        // Joined before the position is read: a page sent in between is both in the channel
        // and covered by the position, and the receiver drops what it has already passed.
        let rx = self.shared.pages.subscribe();
        TailReceiver {
            rx,
            position: self.position(),
            pending: None,
            shared: self.shared.clone(),
        }
    }

    /// [`LogTail::subscribe`], and from now on the tail reads the log as soon as this process
    /// appends (the doorbell given to [`LogTail::start`]) instead of at its next poll: for
    /// readers that show this process's own appends live (the server's subscriptions).
    pub fn subscribe_prompt(&self) -> TailReceiver {
        self.shared.prompt.store(true, Ordering::Release);
        self.subscribe()
    }

    /// The position of the last event handed to subscribers.
    pub fn position(&self) -> u64 {
        self.shared.position.load(Ordering::Acquire)
    }
}

async fn follow<T: Clone + Send + 'static>(
    shared: Arc<Shared>,
    mut cursor: LogCursor,
    poll_interval: Duration,
    mut doorbell: Option<broadcast::Receiver<T>>,
) {
    loop {
        // Reads until caught up, so one wake-up serves every append that rang so far.
        loop {
            let after = cursor.position();
            let page = match cursor.next_page().await {
                Ok(p) => p,
                Err(e) => {
                    // Transient: the next poll reads again from the same position.
                    warn!(error = %e, position = after, "cannot read the log");
                    break;
                }
            };
            let full = cursor.was_full(page.len());
            if !page.is_empty() {
                shared.position.store(cursor.position(), Ordering::Release);
                // No subscriber is not an error: a later one starts from the position.
                let _ = shared.pages.send(TailPage {
                    after,
                    events: page.into(),
                });
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(poll_interval) => {}
            rung = ring(&mut doorbell), if shared.prompt.load(Ordering::Acquire) => {
                if !rung {
                    // The bus is gone: polling alone goes on.
                    doorbell = None;
                }
            }
        }
    }
}

/// Waits for the doorbell and empties it; `false` once it can never ring again.
async fn ring<T: Clone>(doorbell: &mut Option<broadcast::Receiver<T>>) -> bool {
    let Some(rx) = doorbell else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
            while !matches!(
                rx.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
            true
        }
        Err(broadcast::error::RecvError::Closed) => false,
    }
}

/// One subscriber of a [`LogTail`]: the events after its position, in order, none skipped.
pub struct TailReceiver {
    rx: broadcast::Receiver<TailPage>,
    position: u64,
    /// A page from the channel kept back while the events before it are read from the store.
    pending: Option<TailPage>,
    shared: Arc<Shared>,
}

impl TailReceiver {
    /// The position of the last event this receiver was given.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next events after this receiver's position, waiting for them; `None` once the tail
    /// has stopped. An `Err` is a failed read of events the channel no longer held: the position
    /// is unchanged, so calling again retries it.
    pub async fn next(&mut self) -> Option<Result<TailPage>> {
        loop {
            let page = match self.pending.take() {
                Some(p) => p,
                None => tokio::select! {
                    biased;
                    r = self.rx.recv() => match r {
                        Ok(p) => p,
                        // The gap shows in the next page's `after`, and is read from the store.
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = self.shared.stop.cancelled() => return None,
                },
            };
            if page.last_position() <= self.position {
                continue; // passed already
            }
            if page.after > self.position {
                match self.fill_gap(page).await {
                    Ok(Some(missed)) => return Some(Ok(missed)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            let skip = page
                .events
                .iter()
                .take_while(|e| e.position <= self.position)
                .count();
            let page = if skip == 0 {
                page
            } else {
                TailPage {
                    after: self.position,
                    events: page.events[skip..].into(),
                }
            };
            self.position = page.last_position();
            return Some(Ok(page));
        }
    }

    /// The events between this receiver's position and `next` (which it missed), read from the
    /// store; `next` is kept for the following call. `None` when nothing was committed in
    /// between after all.
    async fn fill_gap(&mut self, next: TailPage) -> Result<Option<TailPage>> {
        let after = self.position;
        let gap_end = next.after;
        self.pending = Some(next);
        let mut events = self.shared.store.read_all(after, self.shared.batch).await?;
        events.retain(|e| e.position <= gap_end);
        let Some(last) = events.last() else {
            self.position = gap_end;
            return Ok(None);
        };
        self.position = last.position;
        Ok(Some(TailPage {
            after,
            events: events.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{AppendRequest, NewEvent, RUN_AGGREGATE};
    use serde_json::json;

    async fn store() -> (tempfile::TempDir, Arc<dyn EventStore>) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("tail.db");
        let store = SqliteStore::open(path.to_str().expect("a UTF-8 path"))
            .await
            .expect("a store");
        (dir, Arc::new(store))
    }

    async fn append(store: &dyn EventStore, stream: &str, seq: u64) {
        store
            .append(vec![AppendRequest {
                aggregate_type: RUN_AGGREGATE.into(),
                stream: stream.into(),
                expected_sequence: seq,
                events: vec![NewEvent {
                    event_type: "TaskSkipped".into(),
                    event_version: "1".into(),
                    payload: json!({ "parent": 0, "index": seq, "position": "/do/0" }),
                    metadata: json!({}),
                }],
                run_summary: None,
                lease: Default::default(),
            }])
            .await
            .expect("append");
    }

    async fn next(rx: &mut TailReceiver) -> TailPage {
        tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .expect("a page in time")
            .expect("the tail runs")
            .expect("a read")
    }

    /// Two subscribers see the same events in order; one that falls far behind the channel
    /// still gets every event (read back from the store), and both end when the tail stops.
    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order_even_when_it_lags() {
        let (_dir, store) = store().await;
        append(store.as_ref(), "before", 0).await;
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let options = TailOptions {
            poll_interval: Duration::from_millis(2),
            batch: 3,
            capacity: 1,
        };
        let head = store.head_position().await.expect("head");
        let tail = LogTail::start::<()>(store.clone(), head, options, None, &tracker, stop.clone());
        let mut fast = tail.subscribe();
        let mut slow = tail.subscribe();
        let total = 40u64;
        let mut seen_fast = Vec::new();
        for i in 0..total {
            append(store.as_ref(), "run", i).await;
            if i % 4 == 0 {
                // The fast one keeps up now and then; the slow one reads nothing until the end.
                while seen_fast.len() < (i + 1) as usize {
                    let p = next(&mut fast).await;
                    seen_fast.extend(p.events.iter().map(|e| e.sequence));
                }
            }
        }
        while seen_fast.len() < total as usize {
            let p = next(&mut fast).await;
            seen_fast.extend(p.events.iter().map(|e| e.sequence));
        }
        let mut seen_slow = Vec::new();
        let mut last = head;
        while seen_slow.len() < total as usize {
            let p = next(&mut slow).await;
            assert_eq!(p.after, last, "pages follow on from each other");
            last = p.last_position();
            seen_slow.extend(p.events.iter().map(|e| e.sequence));
        }
        let expected: Vec<u64> = (1..=total).collect();
        assert_eq!(seen_fast, expected);
        assert_eq!(seen_slow, expected);
        assert_eq!(slow.position(), tail.position());
        stop.cancel();
        assert!(
            slow.next().await.is_none(),
            "a stopped tail ends its receivers"
        );
        tracker.close();
        tracker.wait().await;
    }

    /// The cursor pages through the whole log and then answers empty pages.
    #[tokio::test]
    async fn the_cursor_reads_everything_once() {
        let (_dir, store) = store().await;
        for i in 0..7 {
            append(store.as_ref(), "run", i).await;
        }
        let mut cursor = LogCursor::new(store.clone(), 0, 3);
        let mut n = Vec::new();
        loop {
            let page = cursor.next_page().await.expect("a read");
            if page.is_empty() {
                break;
            }
            n.push(page.len());
        }
        assert_eq!(n, vec![3, 3, 1]);
        assert_eq!(
            cursor.position(),
            store.head_position().await.expect("head")
        );
    }
}
