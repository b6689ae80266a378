//! Runs: their slots, starting them, advancing them (record facts, decide, append, retry on a
//! conflict), and which facts from outside still apply.

use super::*;

impl Inner {
    pub(super) fn finished_outcome(&self, run_id: &str) -> Option<RunOutcome> {
        self.finished
            .lock()
            .ok()
            .and_then(|f| f.get(run_id).cloned())
    }

    /// Remembers how a run ended and wakes whoever waits for it.
    pub(super) fn ended(&self, run_id: &str, state: &RunState) {
        if let Some(o) = outcome_of(state) {
            if let Ok(mut f) = self.finished.lock() {
                if f.len() >= FINISHED_CAPACITY {
                    f.clear();
                }
                f.insert(run_id.to_string(), o);
            }
        }
        let ws = self.waiters.lock().ok().and_then(|mut w| w.remove(run_id));
        for w in ws.into_iter().flatten() {
            let _ = w.send(());
        }
        if let Ok(mut o) = self.owned.lock() {
            o.remove(run_id);
        }
    }

    /// Whether any run in the store is unfinished (one indexed row at most, however many).
    pub(super) async fn any_unfinished(&self) -> Result<bool> {
        let q = store::RunQuery {
            statuses: StatusLabel::OPEN
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            limit: 1,
            ..Default::default()
        };
        Ok(!self.store.query_runs(&q).await?.is_empty())
    }

    pub(super) fn slot(&self, run_id: &str) -> Arc<AsyncMutex<Slot>> {
        let mut m = match self.slots.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(run_id.to_string())
            .or_insert_with(|| {
                Arc::new(AsyncMutex::new(Slot {
                    state: RunState::default(),
                    seq: 0,
                    loaded: false,
                }))
            })
            .clone()
    }

    pub(super) fn evict(&self, run_id: &str) {
        if let Ok(mut m) = self.slots.lock() {
            m.remove(run_id);
        }
    }

    pub(super) async fn load(&self, run_id: &str) -> Result<(RunState, u64)> {
        if !self.holds(run_id) {
            return self.load_from_store(run_id).await;
        }
        let slot = self.slots.lock().ok().and_then(|m| m.get(run_id).cloned());
        if let Some(slot) = slot {
            let g = slot.lock().await;
            if g.loaded {
                return Ok((g.state.clone(), g.seq));
            }
        }
        self.load_from_store(run_id).await
    }

    /// The run's newest usable snapshot, then the events after it (see [`crate::snapshots`]).
    pub(super) async fn load_from_store(&self, run_id: &str) -> Result<(RunState, u64)> {
        let loaded = crate::snapshots::load_run(self.store.as_ref(), run_id, true).await?;
        if loaded.events_read >= crate::snapshots::SNAPSHOT_EVERY {
            // No snapshot near the head (a run older than snapshots, a lost or outdated one).
            self.maybe_snapshot(run_id, loaded.snapshot.unwrap_or(0), loaded.sequence);
        }
        Ok((loaded.state, loaded.sequence))
    }

    /// Snapshots the run off the append path when its history grew from sequence `before` to
    /// `after` across a multiple of [`crate::snapshots::SNAPSHOT_EVERY`]. Call it after every
    /// successful append of a run. Best effort: a failure is logged, and only costs later loads
    /// more events to fold.
    pub(super) fn maybe_snapshot(&self, run_id: &str, before: u64, after: u64) {
        if !crate::snapshots::due(before, after) {
            return;
        }
        let (store, run) = (self.store.clone(), run_id.to_string());
        self.tracker.spawn(async move {
            if let Err(e) = crate::snapshots::refresh(store.as_ref(), &run).await {
                warn!(run = %run, error = %e, "cannot snapshot run");
            }
        });
    }

    pub(super) fn services(&self, decider: Arc<cairn_core::decider::Decider>) -> RunServices {
        RunServices {
            decider,
            secrets: self.secrets.all(),
            more: Default::default(),
        }
    }

    pub(super) fn new_events(&self, events: &[RunEvent], now: Millis) -> Vec<NewEvent> {
        events
            .iter()
            .map(|e| NewEvent {
                event_type: e.event_type().to_string(),
                event_version: EVENT_VERSION.to_string(),
                payload: e.payload(),
                metadata: json!({ "recorded_at": now, "worker": self.worker_id }),
            })
            .collect()
    }

    pub(super) fn summary(state: &RunState, run_id: &str) -> Option<RunSummary> {
        // One definition of a summary, shared with `cairn projections rebuild`, so that a rebuilt
        // row is exactly what the inline upsert writes.
        crate::projections::run_summary(state, run_id)
    }

    /// Appends, observing latency and conflicts.
    pub(super) async fn append_timed(
        &self,
        requests: Vec<AppendRequest>,
    ) -> store::Result<Vec<Appended>> {
        let began = Instant::now();
        let r = self.store.append(requests).await;
        let outcome = match &r {
            Ok(_) => AppendOutcome::Ok,
            Err(StoreError::Conflict { .. }) => AppendOutcome::Conflict,
            Err(_) => AppendOutcome::Error,
        };
        self.metrics.append_finished(outcome, began.elapsed());
        r
    }

    /// Counts a run that this append ended. Only the writer whose append recorded the
    /// transition counts it (appends are optimistic per run), so each end counts once across
    /// every process on the store.
    pub(super) fn count_finished(&self, was_terminal: bool, now: &RunState) {
        if was_terminal || !now.status.is_terminal() {
            return;
        }
        if let Some(d) = &now.definition {
            self.metrics
                .run_finished(&d.namespace, &d.name, now.status_label());
        }
    }

    pub(super) async fn start(
        self: &Arc<Self>,
        def: cairn_core::events::DefinitionRef,
        input: Value,
        opts: StartOptions,
    ) -> Result<String> {
        if let Some(c) = &opts.correlation_id {
            // Here as well as at the API edges, so that an embedding program cannot record one
            // that the CLI and GraphQL would refuse to look up.
            cairn_core::events::check_correlation_id(c)
                .map_err(|message| Error::CorrelationId { message })?;
        }
        let run_id = opts
            .run_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if self.scope == WorkerScope::OwnRuns {
            if let Ok(mut o) = self.owned.lock() {
                o.insert(run_id.clone());
            }
        }
        let now = now_ms();
        let decider = self.defs.decider(&def.hash).await?;
        let started = cairn_core::decider::Decider::start(
            &run_id,
            def,
            input,
            now,
            opts.parent,
            opts.correlation_id,
        );
        let mut state = RunState::default();
        let services = self.services(decider);
        let events = aggregate::execute(
            &mut state,
            RunCommand::Advance {
                facts: vec![started],
                now,
            },
            &services,
        )
        .await?;
        let slot = self.slot(&run_id);
        let mut g = slot.lock().await;
        let lease = match self.lease_id() {
            Some(id) => Lease::New(id),
            None => Lease::External,
        };
        let summary = Self::summary(&state, &run_id);
        let held =
            matches!(lease, Lease::New(_)) && summary.as_ref().is_some_and(RunSummary::runnable);
        let req = AppendRequest {
            aggregate_type: RUN_AGGREGATE.to_string(),
            stream: run_id.clone(),
            expected_sequence: 0,
            events: self.new_events(&events, now),
            run_summary: summary,
            lease,
        };
        match self.append_timed(vec![req]).await {
            Ok(a) => {
                if held {
                    self.hold(&run_id);
                }
                let last = a
                    .first()
                    .map(|a| a.last_sequence)
                    .unwrap_or(events.len() as u64);
                // Counted here, where the run's first append succeeded: a conflicting start (an
                // idempotent replay, a child run started twice) never gets this far.
                if let Some(d) = &state.definition {
                    self.metrics.run_started(&d.namespace, &d.name);
                }
                // A run can end in its first decision.
                self.count_finished(false, &state);
                self.maybe_snapshot(&run_id, 0, last);
                g.state = state;
                g.seq = last;
                g.loaded = true;
                self.publish(
                    &run_id,
                    last,
                    a.first().map_or(0, |a| a.last_position),
                    &events,
                );
                let snapshot = g.state.clone();
                drop(g);
                self.after_append(&run_id, &snapshot);
                if self.workers && services.more.load(std::sync::atomic::Ordering::Relaxed) {
                    self.continue_later(&run_id);
                }
                Ok(run_id)
            }
            Err(StoreError::Conflict { .. }) => {
                drop(g);
                Err(Error::RunExists { run_id })
            }
            Err(e) => {
                drop(g);
                self.evict(&run_id);
                Err(e.into())
            }
        }
    }

    /// Records `facts` (dropping those that no longer apply), fires due timers, decides, and
    /// appends; on a concurrency conflict reloads and tries again.
    pub(super) async fn advance(
        self: &Arc<Self>,
        run_id: &str,
        facts: Vec<RunEvent>,
    ) -> Result<()> {
        self.advance_with(run_id, facts, false).await
    }

    /// [`Inner::advance`], first reloading the run from the store when `reload` is set.
    pub(super) async fn advance_with(
        self: &Arc<Self>,
        run_id: &str,
        facts: Vec<RunEvent>,
        mut reload: bool,
    ) -> Result<()> {
        let mut conflicts = 0u32;
        loop {
            let slot = self.slot(run_id);
            let mut g = slot.lock().await;
            // Only a holder's copy is kept up to date (it writes the run, and hears of others'
            // appends); anyone else reads the stored truth each time.
            if reload || !self.holds(run_id) {
                g.loaded = false;
                reload = false;
            }
            if !g.loaded {
                let (state, seq) = match self.load_from_store(run_id).await {
                    Ok(x) => x,
                    Err(e) => {
                        drop(g);
                        self.evict(run_id);
                        return Err(e);
                    }
                };
                g.state = state;
                g.seq = seq;
                g.loaded = true;
            }
            let Some(def) = g.state.definition.clone() else {
                return Err(Error::NoRunStarted {
                    run_id: run_id.to_string(),
                });
            };
            let now = now_ms();
            let mut todo: Vec<RunEvent> = facts
                .iter()
                .filter(|f| still_applies(&g.state, f))
                .cloned()
                .collect();
            // Only the holder fires timers; a due timer of a run nobody holds is claimed. Not
            // after a fact that ends the run (a cancel, a poison fault).
            if self.holds(run_id) && !todo.iter().any(RunEvent::is_terminal) {
                for t in g.state.due_timers(now) {
                    todo.push(RunEvent::TimerFired { timer: t, at: now });
                }
            }
            if g.state.status.is_terminal() && todo.is_empty() {
                let (snapshot, seq) = (g.state.clone(), g.seq);
                drop(g);
                if !self.release_if_idle(run_id, &snapshot, seq).await? {
                    reload = true;
                    continue;
                }
                self.after_append(run_id, &snapshot);
                return Ok(());
            }
            let decider = self.defs.decider(&def.hash).await?;
            let mut next = g.state.clone();
            let services = self.services(decider);
            let events = aggregate::execute(
                &mut next,
                RunCommand::Advance { facts: todo, now },
                &services,
            )
            .await?;
            if events.is_empty() {
                let (snapshot, seq) = (g.state.clone(), g.seq);
                drop(g);
                if !self.release_if_idle(run_id, &snapshot, seq).await? {
                    reload = true;
                    continue;
                }
                self.after_append(run_id, &snapshot);
                return Ok(());
            }
            let lease = self.lease_for(run_id);
            let summary = Self::summary(&next, run_id);
            let keeps = summary.as_ref().is_some_and(RunSummary::runnable);
            let req = AppendRequest {
                aggregate_type: RUN_AGGREGATE.to_string(),
                stream: run_id.to_string(),
                expected_sequence: g.seq,
                events: self.new_events(&events, now),
                run_summary: summary,
                lease: lease.clone(),
            };
            match self.append_timed(vec![req]).await {
                Ok(a) => {
                    if matches!(lease, Lease::Held(_)) && !keeps {
                        // The store released the run in the same write.
                        self.unhold(run_id);
                    }
                    let last = a
                        .first()
                        .map(|a| a.last_sequence)
                        .unwrap_or(g.seq + events.len() as u64);
                    self.count_finished(g.state.status.is_terminal(), &next);
                    self.maybe_snapshot(run_id, g.seq, last);
                    g.state = next;
                    g.seq = last;
                    self.publish(
                        run_id,
                        last,
                        a.first().map_or(0, |a| a.last_position),
                        &events,
                    );
                    let snapshot = g.state.clone();
                    drop(g);
                    self.after_append(run_id, &snapshot);
                    if self.workers && services.more.load(std::sync::atomic::Ordering::Relaxed) {
                        // The decider stopped at a batch bound with work left (a loop that
                        // never waits, or expressions that spent the batch's steps): go on in
                        // another batch, letting other facts (a cancel) in between.
                        self.continue_later(run_id);
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) if conflicts < 20 => {
                    // Someone else extended the run: forget what we knew and decide again on
                    // the stored truth.
                    conflicts += 1;
                    debug!(run = %run_id, "append conflict; reloading");
                    g.loaded = false;
                    g.state = RunState::default();
                    g.seq = 0;
                }
                Err(StoreError::LeaseLost { .. }) => {
                    // Another worker took the run over while this one was away (paused, cut
                    // off): it is theirs now. Drop it; whatever this worker was doing for it is
                    // redone by the holder under the same idempotency keys.
                    tracing::info!(run = %run_id, "lease lost; dropping run");
                    self.metrics.lease_lost("run");
                    g.loaded = false;
                    drop(g);
                    self.unhold(run_id);
                    self.evict(run_id);
                    return Ok(());
                }
                Err(e) => {
                    g.loaded = false;
                    return Err(e.into());
                }
            }
        }
    }

    /// Advances a run again in a task of its own. (A plain function, so that `advance` does
    /// not spawn itself from within its own future.)
    pub(super) fn continue_later(self: &Arc<Self>, run_id: &str) {
        let (i, run) = (self.clone(), run_id.to_string());
        self.tracker.spawn(async move {
            if let Err(e) = i.advance(&run, Vec::new()).await {
                warn!(run = %run, error = %e, "cannot continue run; trying again later");
                i.trouble(&run);
            }
        });
    }

    /// Broadcasts appended events. The events of one append request are written in one
    /// transaction under the store's append lock, so their positions are contiguous.
    pub(super) fn publish(&self, run_id: &str, last_seq: u64, last_pos: u64, events: &[RunEvent]) {
        if self.bus.receiver_count() == 0 {
            return;
        }
        let n = events.len() as u64;
        let first = last_seq + 1 - n;
        let first_pos = if last_pos >= n { last_pos + 1 - n } else { 0 };
        for (i, e) in events.iter().enumerate() {
            let _ = self.bus.send(BusEvent {
                run_id: run_id.to_string(),
                sequence: first + i as u64,
                position: if first_pos == 0 {
                    0
                } else {
                    first_pos + i as u64
                },
                event: e.clone(),
            });
        }
    }
}

/// Whether a fact from outside still means something to the run (a late result of a cancelled
/// task, a duplicate delivery or a second cancel is dropped rather than recorded).
pub(super) fn still_applies(s: &RunState, fact: &RunEvent) -> bool {
    if s.status.is_terminal() {
        return matches!(fact, RunEvent::RunRetried { .. })
            && s.status == RunStatus::Faulted
            && s.fault_origin.is_some();
    }
    match fact {
        RunEvent::ActivityCompleted { id, .. } | RunEvent::ActivityFailed { id, .. } => matches!(
            s.frames.get(id).map(|f| &f.kind),
            Some(FrameKind::Activity {
                result: None,
                scheduled: Some(_)
            })
        ),
        RunEvent::ChildRunFinished { id, .. } => matches!(
            s.frames.get(id).map(|f| &f.kind),
            Some(FrameKind::Child { result: None, .. })
        ),
        RunEvent::TimerFired { timer, .. } => s.timers.contains_key(timer),
        RunEvent::EventReceived { event, .. } => {
            cairn_core::state::event_key(event).is_none_or(|k| !s.seen_events.contains(&k))
        }
        RunEvent::RunSuspended { .. } => s.status != RunStatus::Suspended,
        RunEvent::RunResumed { .. } => s.status == RunStatus::Suspended,
        // A second `cancel --compensate` that raced the first.
        RunEvent::RunCompensating { .. } => s.compensation.is_none(),
        _ => true,
    }
}
