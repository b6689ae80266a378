//! The fold itself: how each event changes a run's state.

use super::*;

impl RunState {
    /// Folds a whole history.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a RunEvent>) -> RunState {
        let mut s = RunState::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    /// Folds one event. Events that refer to activations no longer live (a late result of a
    /// cancelled branch, a timer of a finished task) change nothing.
    pub fn apply(&mut self, event: &RunEvent) {
        self.events_applied += 1;
        match event {
            RunEvent::RunStarted {
                run_id,
                definition,
                input,
                at,
                parent,
                correlation_id,
            } => {
                self.run_id = run_id.clone();
                self.definition = Some(definition.clone());
                self.parent = parent.clone();
                self.correlation_id = correlation_id.clone();
                self.raw_input = input.clone();
                self.started_at = *at;
                self.updated_at = *at;
                self.status = RunStatus::Pending;
                self.context = Value::Object(Default::default());
                self.next_frame = 1;
            }
            RunEvent::WorkflowInputAccepted { input } => {
                let input = input.clone().unwrap_or_else(|| self.raw_input.clone());
                self.input = Some(input.clone());
                self.status = RunStatus::Running;
                self.frames.insert(
                    ROOT,
                    Frame {
                        id: ROOT,
                        parent: ROOT,
                        index: 0,
                        position: String::new(),
                        name: String::new(),
                        raw_input: self.raw_input.clone(),
                        input: input.clone(),
                        started_at: self.started_at,
                        vars: Vars::new(),
                        timed_out: false,
                        pending_error: None,
                        kind: FrameKind::Root(Seq::new("/do".into(), input.clone())),
                    },
                );
            }
            RunEvent::TaskStarted {
                id,
                parent,
                index,
                position,
                name,
                kind,
                raw_input,
                input,
                at,
            } => {
                let raw_input = match raw_input {
                    Some(v) => v.clone(),
                    None => self.passed_input(*parent),
                };
                let input = match input {
                    Some(v) => v.clone(),
                    None => raw_input.clone(),
                };
                self.updated_at = *at;
                self.next_frame = self.next_frame.max(id + 1);
                let fk = match kind.as_str() {
                    "do" => FrameKind::Do(Seq::new(format!("{position}/do"), input.clone())),
                    "for" => FrameKind::For {
                        iteration: None,
                        seq: Seq::new(format!("{position}/do"), input.clone()),
                    },
                    "try" => FrameKind::Try {
                        attempt: 0,
                        phase: TryPhase::Trying,
                        seq: Seq::new(format!("{position}/try"), input.clone()),
                    },
                    "fork" => FrameKind::Fork {
                        branches: Vec::new(),
                    },
                    "call" => FrameKind::Activity {
                        scheduled: None,
                        result: None,
                    },
                    "wait" => FrameKind::Wait { fired: false },
                    "listen" => FrameKind::Listen {
                        consumed: Vec::new(),
                    },
                    "run" => FrameKind::Child {
                        child_run_id: None,
                        result: None,
                    },
                    _ => FrameKind::Leaf,
                };
                if let Some(p) = self.frames.get_mut(parent) {
                    if let FrameKind::Fork { branches } = &mut p.kind {
                        if branches.len() <= *index {
                            branches.resize(index + 1, None);
                        }
                        branches[*index] = Some(Branch::Running(*id));
                    } else if let Some(seq) = p.seq_mut() {
                        seq.current = Some(*id);
                        seq.last_index = Some(*index);
                        seq.then = None;
                    }
                }
                self.frames.insert(
                    *id,
                    Frame {
                        id: *id,
                        parent: *parent,
                        index: *index,
                        position: position.clone(),
                        name: name.clone(),
                        raw_input,
                        input,
                        started_at: *at,
                        vars: Vars::new(),
                        timed_out: false,
                        pending_error: None,
                        kind: fk,
                    },
                );
            }
            RunEvent::TaskSkipped { parent, index, .. } => {
                // A compensation whose `if` is false is done: there was nothing to undo.
                if self.status == RunStatus::Compensating && *parent == ROOT {
                    if let Some(c) = &mut self.compensation {
                        if let Some((_, entry)) = c.current.take() {
                            c.completed.push(entry);
                        }
                    }
                }
                if let Some(p) = self.frames.get_mut(parent) {
                    if let FrameKind::Fork { branches } = &mut p.kind {
                        if branches.len() <= *index {
                            branches.resize(index + 1, None);
                        }
                        let input = p.input.clone();
                        if let FrameKind::Fork { branches } = &mut p.kind {
                            branches[*index] = Some(Branch::Done(input));
                        }
                    } else if let Some(seq) = p.seq_mut() {
                        seq.last_index = Some(*index);
                        seq.then = None;
                    }
                }
            }
            RunEvent::IterationStarted { id, index, item } => {
                if let Some(f) = self.frames.get_mut(id) {
                    if let FrameKind::For { iteration, seq } = &mut f.kind {
                        *iteration = Some(*index);
                        seq.current = None;
                        seq.last_index = None;
                        seq.then = None;
                    }
                    // The names are resolved by the decider; store both under reserved keys so
                    // the fold does not need the definition.
                    f.vars.insert("\u{0}item".into(), item.clone());
                    f.vars
                        .insert("\u{0}index".into(), Value::from(*index as u64));
                }
            }
            RunEvent::ActivityScheduled {
                id,
                attempt,
                idempotency_key,
                call,
            } => {
                if let Some(Frame {
                    kind: FrameKind::Activity { scheduled, .. },
                    ..
                }) = self.frames.get_mut(id)
                {
                    *scheduled = Some(Box::new(ScheduledActivity {
                        attempt: *attempt,
                        idempotency_key: idempotency_key.clone(),
                        call: call.clone(),
                    }));
                }
            }
            RunEvent::ActivityCompleted { id, result, at } => {
                self.updated_at = *at;
                if let Some(Frame {
                    kind: FrameKind::Activity { result: r, .. },
                    ..
                }) = self.frames.get_mut(id)
                {
                    if r.is_none() {
                        *r = Some(Ok(result.clone()));
                    }
                }
            }
            RunEvent::ActivityFailed { id, error, at } => {
                self.updated_at = *at;
                if let Some(Frame {
                    kind: FrameKind::Activity { result: r, .. },
                    ..
                }) = self.frames.get_mut(id)
                {
                    if r.is_none() {
                        *r = Some(Err(error.clone()));
                    }
                }
            }
            RunEvent::TimerScheduled {
                timer,
                frame,
                kind,
                due_at,
            } => {
                self.next_timer = self.next_timer.max(timer + 1);
                self.timers.insert(
                    *timer,
                    Timer {
                        frame: *frame,
                        kind: *kind,
                        due_at: *due_at,
                    },
                );
                if *kind == TimerKind::Retry {
                    if let Some(Frame {
                        kind: FrameKind::Try { phase, .. },
                        ..
                    }) = self.frames.get_mut(frame)
                    {
                        *phase = TryPhase::RetryWaiting;
                    }
                }
            }
            RunEvent::TimerFired { timer, at } => {
                self.updated_at = *at;
                if let Some(t) = self.timers.remove(timer) {
                    match t.kind {
                        TimerKind::WorkflowTimeout => self.timed_out = true,
                        TimerKind::TaskTimeout => {
                            if let Some(f) = self.frames.get_mut(&t.frame) {
                                f.timed_out = true;
                            }
                        }
                        TimerKind::Wait => {
                            if let Some(Frame {
                                kind: FrameKind::Wait { fired },
                                ..
                            }) = self.frames.get_mut(&t.frame)
                            {
                                *fired = true;
                            }
                        }
                        TimerKind::Retry => {
                            if let Some(Frame {
                                kind: FrameKind::Try { phase, .. },
                                ..
                            }) = self.frames.get_mut(&t.frame)
                            {
                                *phase = TryPhase::RetryDue;
                            }
                        }
                    }
                }
            }
            RunEvent::EventReceived { event, at } => {
                self.updated_at = *at;
                let key = event_key(event);
                if let Some(k) = key {
                    if !self.seen_events.insert(k) {
                        return;
                    }
                }
                self.inbox.push(InboxEvent {
                    event: event.clone(),
                    at: *at,
                    consumed: false,
                });
            }
            RunEvent::EventsConsumed { id, indexes } => {
                for i in indexes {
                    if let Some(e) = self.inbox.get_mut(*i) {
                        e.consumed = true;
                    }
                }
                if let Some(Frame {
                    kind: FrameKind::Listen { consumed },
                    ..
                }) = self.frames.get_mut(id)
                {
                    consumed.extend(indexes.iter().copied());
                }
            }
            RunEvent::EventEmitted { .. } => {}
            RunEvent::RetryScheduled { id, .. } => {
                self.fault_origin = None;
                if let Some(f) = self.frames.get_mut(id) {
                    f.pending_error = None;
                    if let FrameKind::Try { phase, .. } = &mut f.kind {
                        *phase = TryPhase::RetryWaiting;
                    }
                }
            }
            RunEvent::TaskRetried { id, attempt } => {
                self.fault_origin = None;
                if let Some(f) = self.frames.get_mut(id) {
                    f.pending_error = None;
                    let input = f.input.clone();
                    let pos = f.position.clone();
                    if let FrameKind::Try {
                        attempt: a,
                        phase,
                        seq,
                    } = &mut f.kind
                    {
                        *a = *attempt;
                        *phase = TryPhase::Trying;
                        *seq = Seq::new(format!("{pos}/try"), input);
                    }
                }
            }
            RunEvent::ErrorCaught { id, error } => {
                self.fault_origin = None;
                if let Some(f) = self.frames.get_mut(id) {
                    f.pending_error = None;
                    f.vars.insert("\u{0}error".into(), error.to_value());
                    let input = f.input.clone();
                    let pos = f.position.clone();
                    if let FrameKind::Try { phase, seq, .. } = &mut f.kind {
                        *phase = TryPhase::Catching;
                        *seq = Seq::new(format!("{pos}/catch/do"), input);
                    }
                }
            }
            RunEvent::ChildRunRequested {
                id, child_run_id, ..
            } => {
                if let Some(Frame {
                    kind:
                        FrameKind::Child {
                            child_run_id: c, ..
                        },
                    ..
                }) = self.frames.get_mut(id)
                {
                    *c = Some(child_run_id.clone());
                }
            }
            RunEvent::ChildRunFinished { id, result } => {
                if let Some(Frame {
                    kind: FrameKind::Child { result: r, .. },
                    ..
                }) = self.frames.get_mut(id)
                {
                    if r.is_none() {
                        *r = Some(result.clone());
                    }
                }
            }
            RunEvent::TaskCompleted {
                id,
                output,
                context,
                then,
                compensation,
                at,
            } => {
                self.updated_at = *at;
                if let Some(c) = context {
                    self.context = c.clone();
                }
                if let (Some(name), Some(f)) = (compensation, self.frames.get(id)) {
                    self.compensable.push(Compensable {
                        task: *id,
                        position: f.position.clone(),
                        name: f.name.clone(),
                        compensation: name.clone(),
                        input: f.input.clone(),
                        output: output.clone(),
                    });
                }
                if let Some(c) = &mut self.compensation {
                    if let Some((_, entry)) = c.current.filter(|(cur, _)| cur == id) {
                        c.completed.push(entry);
                        c.current = None;
                    }
                }
                if let Some(f) = self.remove_frame(*id) {
                    if let Some(p) = self.frames.get_mut(&f.parent) {
                        if let FrameKind::Fork { branches } = &mut p.kind {
                            if let Some(b) = branches.get_mut(f.index) {
                                *b = Some(Branch::Done(output.clone()));
                            }
                        } else if let Some(seq) = p.seq_mut() {
                            if seq.current == Some(*id) {
                                seq.current = None;
                                seq.data = output.clone();
                                seq.then = then.clone();
                            }
                        }
                    }
                }
            }
            RunEvent::TaskFaulted { id, error, at } => {
                if let Some(c) = &mut self.compensation {
                    if let Some((_, entry)) = c.current.filter(|(cur, _)| cur == id) {
                        if let Some(e) = self.compensable.get(entry) {
                            c.failed.push(CompensationFailure {
                                task: e.task,
                                position: e.position.clone(),
                                compensation: e.compensation.clone(),
                                error: error.clone(),
                            });
                        }
                        c.current = None;
                    }
                }
                if self.fault_origin.is_none()
                    && self.status != RunStatus::Compensating
                    && self.frames.contains_key(id)
                {
                    let mut before = self.clone();
                    before.events_applied -= 1;
                    self.fault_origin = Some((Box::new(before), *id));
                }
                self.updated_at = *at;
                if let Some(f) = self.remove_frame(*id) {
                    if let Some(p) = self.frames.get_mut(&f.parent) {
                        if let Some(seq) = p.seq_mut() {
                            if seq.current == Some(*id) {
                                seq.current = None;
                            }
                        }
                        if let FrameKind::Fork { branches } = &mut p.kind {
                            if let Some(b) = branches.get_mut(f.index) {
                                *b = Some(Branch::Cancelled);
                            }
                        }
                        p.pending_error = Some(error.clone());
                    }
                }
            }
            RunEvent::TaskCancelled { id } => {
                if let Some(f) = self.remove_frame(*id) {
                    if let Some(p) = self.frames.get_mut(&f.parent) {
                        if let FrameKind::Fork { branches } = &mut p.kind {
                            if let Some(b) = branches.get_mut(f.index) {
                                *b = Some(Branch::Cancelled);
                            }
                        }
                    }
                }
            }
            RunEvent::RunSuspended { at } => {
                self.updated_at = *at;
                if !self.status.is_terminal() {
                    self.status = RunStatus::Suspended;
                }
            }
            RunEvent::RunResumed { at } => {
                self.updated_at = *at;
                if self.status == RunStatus::Suspended {
                    self.status = if self.compensation.is_some() {
                        RunStatus::Compensating
                    } else {
                        RunStatus::Running
                    };
                }
            }
            RunEvent::RunCompleted { output, at } => {
                self.finish(*at);
                self.status = RunStatus::Completed;
                self.output = Some(output.clone());
            }
            RunEvent::RunRetried { at } => {
                if self.status != RunStatus::Faulted {
                    return;
                }
                if let Some((before, failed)) = self.fault_origin.take() {
                    let applied = self.events_applied;
                    let retries = self.retries + 1;
                    *self = *before;
                    self.events_applied = applied;
                    self.retries = retries;
                    self.updated_at = *at;
                    self.status = RunStatus::Running;
                    self.error = None;
                    self.fault_origin = None;
                    let failed = if failed == ROOT {
                        None
                    } else {
                        self.remove_frame(failed)
                    };
                    if let Some(f) = failed {
                        if let Some(p) = self.frames.get_mut(&f.parent) {
                            p.pending_error = None;
                            if let FrameKind::Fork { branches } = &mut p.kind {
                                if let Some(b) = branches.get_mut(f.index) {
                                    *b = None;
                                }
                            } else if let Some(seq) = p.seq_mut() {
                                seq.current = None;
                                seq.last_index = f.index.checked_sub(1);
                                seq.then = None;
                            }
                        }
                    }
                }
            }
            RunEvent::RunFaulted {
                error,
                at,
                resumable,
            } => {
                if *resumable && self.fault_origin.is_none() {
                    // `ROOT` as the failed task: a retry restores the state and removes nothing.
                    let mut before = self.clone();
                    before.events_applied -= 1;
                    self.fault_origin = Some((Box::new(before), ROOT));
                }
                self.finish(*at);
                self.status = RunStatus::Faulted;
                self.error = Some(error.clone());
            }
            RunEvent::RunCancelled { at, .. } => {
                self.finish(*at);
                self.status = RunStatus::Cancelled;
            }
            RunEvent::RunCompensating { error, reason, at } => {
                // What was running stops (a late result of it is dropped, as after a cancel);
                // the workflow's timeout no longer applies.
                self.finish(*at);
                self.timed_out = false;
                self.fault_origin = None;
                self.status = RunStatus::Compensating;
                if error.is_some() {
                    self.error = error.clone();
                }
                self.compensation = Some(Compensation {
                    error: error.clone(),
                    reason: reason.clone(),
                    remaining: self.compensable.len(),
                    current: None,
                    completed: Vec::new(),
                    failed: Vec::new(),
                });
            }
            RunEvent::CompensationStarted { id, task, at, .. } => {
                self.updated_at = *at;
                if let Some(c) = &mut self.compensation {
                    let upto = c.remaining.min(self.compensable.len());
                    if let Some(i) = self.compensable[..upto]
                        .iter()
                        .rposition(|e| e.task == *task)
                    {
                        c.remaining = i;
                        c.current = Some((*id, i));
                    }
                }
            }
            RunEvent::RunCompensated { failed, at } => {
                self.finish(*at);
                self.status = if failed.is_empty() {
                    RunStatus::Compensated
                } else {
                    RunStatus::CompensationFailed
                };
                if let Some(c) = &mut self.compensation {
                    c.current = None;
                    c.failed = failed.clone();
                }
            }
            RunEvent::RunMigrated {
                to_hash,
                to_version,
                ..
            } => {
                // Only the definition changes: frames, timers and data stay as they are, which
                // is what the replay before the migration showed the new version agrees with.
                // `updated_at` stays too, so that the run's claims and wake time are unmoved.
                if let Some(d) = &mut self.definition {
                    d.hash = to_hash.clone();
                    d.version = to_version.clone();
                }
            }
        }
    }

    fn finish(&mut self, at: Millis) {
        self.updated_at = at;
        self.frames.clear();
        self.timers.clear();
    }

    /// Removes an activation with all its descendants and their timers.
    fn remove_frame(&mut self, id: FrameId) -> Option<Frame> {
        let f = self.frames.remove(&id)?;
        let mut stack = vec![id];
        while let Some(p) = stack.pop() {
            let children: Vec<FrameId> = self
                .frames
                .values()
                .filter(|c| c.parent == p && c.id != p)
                .map(|c| c.id)
                .collect();
            for c in children {
                self.frames.remove(&c);
                stack.push(c);
            }
        }
        let frames = &self.frames;
        self.timers
            .retain(|_, t| t.kind == TimerKind::WorkflowTimeout || frames.contains_key(&t.frame));
        Some(f)
    }
}
