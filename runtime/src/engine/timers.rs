//! Timers, and the watch on the log tail for appends by other processes (SQLite).

use super::*;

/// Fires timers: one sleeping task for every timer of every run this process executes.
pub(super) async fn timer_loop(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<(Millis, String)>,
) {
    let mut heap: BinaryHeap<Reverse<(Millis, String)>> = BinaryHeap::new();
    loop {
        let wait = match heap.peek() {
            Some(Reverse((due, _))) => Duration::from_millis((*due - now_ms()).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            m = rx.recv() => match m {
                Some(entry) => heap.push(Reverse(entry)),
                None => return,
            },
            _ = tokio::time::sleep(wait) => {
                let now = now_ms();
                let mut due = HashSet::new();
                while let Some(Reverse((t, _))) = heap.peek() {
                    if *t > now { break; }
                    if let Some(Reverse((_, run))) = heap.pop() { due.insert(run); }
                }
                for run in due {
                    // A run given back meanwhile is claimed when its timer comes due, by
                    // whichever worker is alive then.
                    if !inner.holds(&run) {
                        continue;
                    }
                    let i = inner.clone();
                    inner.tracker.spawn(async move {
                        if let Err(e) = i.advance(&run, Vec::new()).await {
                            warn!(run = %run, error = %e, "cannot fire timers; trying again later");
                            i.trouble(&run);
                        }
                    });
                }
            }
        }
    }
}

/// Watches the log for appends of other processes to the runs held here, on stores whose work
/// notices do not cross processes (SQLite: `cairn signal` or `cairn cancel` run in a process of
/// their own).
pub(super) async fn watch_foreign_appends(inner: Arc<Inner>, mut tail: TailReceiver) {
    while let Some(page) = tail.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read the log");
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(inner.poll_interval) => continue,
                }
            }
        };
        let mut runs = HashSet::new();
        for e in page.events.iter() {
            if e.aggregate_type != RUN_AGGREGATE {
                continue;
            }
            // This process's own appends are already in its copy of the run.
            let mine =
                e.metadata.get("worker").and_then(Value::as_str) == Some(inner.worker_id.as_str());
            if !mine && inner.holds(&e.stream) {
                runs.insert(e.stream.clone());
            }
        }
        for run in runs {
            // Another process extended the run: our cached copy is stale. It is reloaded
            // under the run's own lock (never by dropping the slot, which would let two
            // tasks of this process write the run at once).
            inner.revisit(&run);
        }
    }
}
