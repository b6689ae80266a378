//! The worker: its lease, claims of runs that need it, poison runs, renewal and re-registration.

use super::*;

impl Inner {
    /// This worker's lease id, if it runs workers and is registered.
    pub(super) fn lease_id(&self) -> Option<String> {
        self.lease
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|l| l.lease_id.clone()))
    }

    pub(super) fn holds(&self, run_id: &str) -> bool {
        self.held
            .lock()
            .map(|h| h.contains(run_id))
            .unwrap_or(false)
    }

    pub(super) fn hold(&self, run_id: &str) {
        if let Ok(mut h) = self.held.lock() {
            h.insert(run_id.to_string());
            self.metrics.set_runs_held(h.len());
        }
    }

    pub(super) fn unhold(&self, run_id: &str) {
        if let Ok(mut h) = self.held.lock() {
            if h.remove(run_id) {
                self.metrics.set_runs_held(h.len());
            }
        }
    }

    /// The runs this process holds now.
    pub(super) fn held_runs(&self) -> Vec<String> {
        self.held
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The lease ttl in ms, as the store takes it.
    pub(super) fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    pub(super) fn held_count(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// How an append of this process relates to the run's ownership.
    pub(super) fn lease_for(&self, run_id: &str) -> Lease {
        match self.lease_id() {
            Some(id) if self.holds(run_id) => Lease::Held(id),
            _ => Lease::External,
        }
    }

    /// After a pass over a held run that appended nothing: if the run needs no worker now, give
    /// it back (its row gets the `wake_at` of `state`, checked against `seq` under the append
    /// lock). `Ok(false)` when the run moved on meanwhile, so the caller looks again.
    pub(super) async fn release_if_idle(
        &self,
        run_id: &str,
        state: &RunState,
        seq: u64,
    ) -> Result<bool> {
        if !self.holds(run_id) {
            return Ok(true);
        }
        let Some(summary) = Self::summary(state, run_id) else {
            return Ok(true);
        };
        if summary.runnable() {
            return Ok(true);
        }
        if self.store.rebuild_run_summary(&summary, seq).await? {
            self.unhold(run_id);
            self.evict(run_id);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Claims one batch of runs that need a worker and spawns a pass over each; answers how
    /// many were claimed.
    pub(super) async fn claim_batch(self: &Arc<Self>) -> Result<usize> {
        let Some(lease) = self.lease.lock().ok().and_then(|l| l.clone()) else {
            return Ok(0);
        };
        let room = self.max_held.saturating_sub(self.held_count()) as u64;
        if room == 0 {
            return Ok(0);
        }
        let only: Option<Vec<String>> = match self.scope {
            WorkerScope::All => None,
            WorkerScope::OwnRuns => Some(
                self.owned
                    .lock()
                    .map(|o| o.iter().cloned().collect())
                    .unwrap_or_default(),
            ),
        };
        let claimed = self
            .store
            .claim_runs(&lease, now_ms(), room.min(CLAIM_BATCH), only.as_deref())
            .await?;
        let n = claimed.len();
        if n > 0 {
            self.metrics.runs_claimed(n);
        }
        for claim in claimed {
            self.hold(&claim.run_id);
            if claim.attempts > self.max_crashes {
                self.fault_poison(&claim.run_id, claim.attempts - 1);
            } else {
                self.revisit(&claim.run_id);
            }
        }
        Ok(n)
    }

    /// Faults a run whose last `crashes` claims all ended without recording anything: running
    /// it again would most likely take this worker down too (an abort, memory exhaustion).
    /// Nothing of the run is decided or called here; the fault is recorded as a fact.
    pub(super) fn fault_poison(self: &Arc<Self>, run_id: &str, crashes: u32) {
        warn!(run = %run_id, crashes, "faulting a run whose claims keep crashing their worker");
        let error = WorkflowError::new(
            ErrorKind::Runtime,
            format!(
                "the run was claimed {crashes} times in a row by workers that stopped (crashed, \
                 were killed, or lost their lease) before recording anything; it is faulted \
                 rather than run again (max_crashes is {}). Retrying the run starts the count \
                 again",
                self.max_crashes
            ),
        )
        .with_title("Poison run");
        let fact = RunEvent::RunFaulted {
            error,
            at: now_ms(),
            resumable: true,
        };
        let (i, run) = (self.clone(), run_id.to_string());
        self.tracker.spawn(async move {
            match i.advance_with(&run, vec![fact], true).await {
                Ok(()) => i.metrics.run_poisoned(),
                Err(e) => {
                    warn!(run = %run, error = %e, "cannot fault poison run; trying again later");
                    i.trouble(&run);
                }
            }
        });
    }

    /// A pass over a held run in a task of its own, reloading it first (another process may
    /// have extended it). A pass that fails (the store is away) is tried again at the next
    /// renewal, so a held run is never left without someone working on it.
    pub(super) fn revisit(self: &Arc<Self>, run_id: &str) {
        let (i, run) = (self.clone(), run_id.to_string());
        self.tracker.spawn(async move {
            if let Err(e) = i.advance_with(&run, Vec::new(), true).await {
                warn!(run = %run, error = %e, "cannot advance run; trying again later");
                i.trouble(&run);
            }
        });
    }

    /// Marks a held run whose pass failed, for a revisit at the next renewal.
    pub(super) fn trouble(&self, run_id: &str) {
        if self.holds(run_id) {
            if let Ok(mut t) = self.troubled.lock() {
                t.insert(run_id.to_string());
            }
        }
    }
}

/// Takes the runs that need a worker: claims what is due, sleeps until the next timer, a work
/// notice or the next lease renewal, and renews the lease (re-registering, with every held run
/// dropped, when it was lost).
pub(super) async fn claim_loop(
    inner: Arc<Inner>,
    mut notices: Option<broadcast::Receiver<String>>,
    cross_process: bool,
) {
    let renew_every = inner.lease_ttl / 3;
    // Without notices from other processes, look for work they recorded now and then.
    let poll = if cross_process {
        Duration::from_secs(5)
    } else {
        inner.poll_interval
    };
    let mut next_renew = Instant::now() + renew_every;
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        if Instant::now() >= next_renew {
            next_renew = Instant::now() + renew_every;
            inner.renew().await;
        }
        let claimed = match inner.claim_batch().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot claim runs");
                0
            }
        };
        if claimed as u64 == CLAIM_BATCH {
            continue;
        }
        let next_wake = inner.next_wake().await;
        let mut wait = poll.min(next_renew.saturating_duration_since(Instant::now()));
        if let Some(at) = next_wake {
            let until = u64::try_from(at - now_ms()).unwrap_or(0);
            wait = wait.min(Duration::from_millis(until));
        }
        if wait.is_zero() && next_wake.is_some() {
            // Due but not claimable (held by a live worker, or over our limit): do not spin.
            wait = Duration::from_millis(50);
        }
        let notice = async {
            match notices.as_mut() {
                // Notices were dropped (this loop fell behind): look at everything again.
                Some(rx) => match rx.recv().await {
                    Ok(n) => Some(n),
                    Err(broadcast::error::RecvError::Lagged(_)) => Some("*".to_string()),
                    Err(broadcast::error::RecvError::Closed) => None,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.kick.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            n = notice => {
                if let Some(n) = n {
                    inner.on_notice(&n);
                }
                // Take every notice that is already there before claiming once for all.
                if let Some(rx) = notices.as_mut() {
                    loop {
                        match rx.try_recv() {
                            Ok(n) => inner.on_notice(&n),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => inner.on_notice("*"),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }
}

impl Inner {
    /// When the next run this worker may claim comes due: the store's earliest `wake_at`, or,
    /// for a runtime that only executes its own runs (`cairn run`), the earliest of those (so
    /// that unrelated due work in a shared store does not keep it polling).
    pub(super) async fn next_wake(&self) -> Option<i64> {
        match self.scope {
            WorkerScope::All => self.store.next_wake().await.ok().flatten(),
            WorkerScope::OwnRuns => {
                let owned: Vec<String> = self
                    .owned
                    .lock()
                    .map(|o| o.iter().cloned().collect())
                    .unwrap_or_default();
                let mut next: Option<i64> = None;
                for run in owned {
                    if self.holds(&run) {
                        continue;
                    }
                    if let Ok(Some(s)) = self.store.get_run(&run).await {
                        if let Some(w) = s.wake_at {
                            next = Some(next.map_or(w, |n| n.min(w)));
                        }
                    }
                }
                next
            }
        }
    }

    /// Registers this worker again after its lease was lost; on failure the next renewal
    /// tries again (meanwhile it claims and starts nothing as a worker).
    pub(super) async fn register_again(&self, ttl_ms: i64) {
        match self.store.register_worker(&self.worker_name, ttl_ms).await {
            Ok(l) => {
                if let Ok(mut cur) = self.lease.lock() {
                    *cur = Some(l);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot register the worker again; retrying at the next renewal")
            }
        }
    }

    /// A work notice: a run held here is reloaded (someone else appended to it); anything else
    /// is for the claim that follows.
    pub(super) fn on_notice(self: &Arc<Self>, notice: &str) {
        if notice == "*" {
            for run in self.held_runs() {
                self.revisit(&run);
            }
        } else if self.holds(notice) {
            self.revisit(notice);
        }
    }

    /// Renews the lease; on loss, drops every held run and registers again. Also releases the
    /// runs of dead workers, and revisits held runs whose last pass failed.
    pub(super) async fn renew(self: &Arc<Self>) {
        let lease = self.lease.lock().ok().and_then(|l| l.clone());
        let Some(lease) = lease else {
            // Lost earlier and not registered again yet (the store was away): try now.
            self.register_again(self.lease_ttl_ms()).await;
            return;
        };
        match self.store.renew_worker(&lease).await {
            Ok(true) => {
                // Repair what an answer lost after a commit hid from this worker: runs the
                // database says it holds (a start or a claim that committed while the caller
                // saw an error) that it does not know it holds.
                match self.store.owned_runs(&lease).await {
                    Ok(owned) => {
                        for run in owned {
                            if !self.holds(&run) {
                                debug!(run = %run, "holding a run the store says is ours");
                                self.hold(&run);
                                self.revisit(&run);
                            }
                        }
                    }
                    Err(e) => debug!(error = %e, "cannot list the runs this worker holds"),
                }
            }
            Ok(false) => {
                // No new claim, start or fenced append under the dead lease from here on.
                if let Ok(mut cur) = self.lease.lock() {
                    *cur = None;
                }
                warn!(lease = %lease.lease_id, "worker lease lost (paused or cut off too long); dropping held runs and registering again");
                self.metrics.lease_lost("worker");
                let dropped: Vec<String> = self
                    .held
                    .lock()
                    .map(|mut h| h.drain().collect())
                    .unwrap_or_default();
                self.metrics.set_runs_held(0);
                for run in &dropped {
                    self.evict(run);
                }
                self.register_again(lease.ttl_ms).await;
            }
            Err(e) => warn!(error = %e, "cannot renew the worker lease"),
        }
        match self.store.release_expired().await {
            Ok(0) => {}
            Ok(n) => self.metrics.runs_released_expired(n),
            Err(e) => debug!(error = %e, "cannot release the runs of dead workers"),
        }
        let troubled: Vec<String> = self
            .troubled
            .lock()
            .map(|mut t| t.drain().collect())
            .unwrap_or_default();
        for run in troubled {
            if self.holds(&run) {
                self.revisit(&run);
            }
        }
        // A held parent whose sub-workflow's end notice was lost (a listener reconnecting, the
        // child's worker dying between its end and the delivery): look at its children again.
        let held = self.held_runs();
        let slots: Vec<(String, Arc<AsyncMutex<Slot>>)> = match self.slots.lock() {
            Ok(m) => held
                .into_iter()
                .filter_map(|r| m.get(&r).map(|s| (r, s.clone())))
                .collect(),
            Err(_) => Vec::new(),
        };
        for (run, slot) in slots {
            let waits_for_child = slot
                .try_lock()
                .map(|g| !g.state.pending_children().is_empty())
                .unwrap_or(false);
            if waits_for_child {
                self.revisit(&run);
            }
        }
    }
}
