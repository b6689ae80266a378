//! Dispatch: what the log says is due after an append (calls, timers, sub-workflows, the
//! parent's notice), starting sub-workflows, and performing calls.

use super::*;

impl Inner {
    /// Performs what the log says is due: calls, timers, sub-workflows, parent notification.
    pub(super) fn after_append(self: &Arc<Self>, run_id: &str, state: &RunState) {
        if state.status.is_terminal() {
            self.unhold(run_id);
            self.ended(run_id, state);
            self.evict(run_id);
            if let Some(p) = &state.parent {
                let result = match state.status {
                    RunStatus::Completed => Ok(state.output.clone().unwrap_or(Value::Null)),
                    RunStatus::Faulted => Err(state.error.clone().unwrap_or_else(|| {
                        WorkflowError::new(ErrorKind::Runtime, "sub-workflow faulted")
                    })),
                    // A compensated child failed: its parent sees the error that started the
                    // compensation (or the cancel), its side effects undone.
                    RunStatus::Compensated | RunStatus::CompensationFailed => {
                        Err(state.error.clone().unwrap_or_else(|| {
                            WorkflowError::new(
                                ErrorKind::Runtime,
                                "sub-workflow was cancelled and compensated",
                            )
                        }))
                    }
                    _ => Err(WorkflowError::new(
                        ErrorKind::Runtime,
                        "sub-workflow was cancelled",
                    )),
                };
                let fact = RunEvent::ChildRunFinished {
                    id: p.frame,
                    result,
                };
                let (i, parent) = (self.clone(), p.run_id.clone());
                self.tracker.spawn(async move {
                    if let Err(e) = i.advance(&parent, vec![fact]).await {
                        warn!(run = %parent, error = %e, "cannot deliver sub-workflow result");
                    }
                });
            }
            return;
        }
        if state.retries > 0 {
            // A retried run is open again: forget the outcome it had.
            if let Ok(mut f) = self.finished.lock() {
                f.remove(run_id);
            }
        }
        if !self.holds(run_id) {
            // Only the holder makes calls and fires timers (see `Lease`), and only its copy of
            // the run is worth keeping.
            self.evict(run_id);
            return;
        }
        if state.status == RunStatus::Suspended {
            // Held only to record the results of calls already in flight; nothing new starts.
            return;
        }
        if let Some((_, due)) = state.next_timer() {
            let _ = self.timer_tx.send((due, run_id.to_string()));
        }
        for a in state.pending_activities() {
            let key = (run_id.to_string(), a.frame, a.attempt);
            let fresh = self
                .inflight
                .lock()
                .map(|mut s| s.insert(key.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            let i = self.clone();
            let run = run_id.to_string();
            let kind = match &a.call {
                cairn_core::events::ActivityCall::Http(_) => "http",
                cairn_core::events::ActivityCall::OpenApi(_) => "openapi",
                cairn_core::events::ActivityCall::Function { .. } => "function",
            };
            // Run id, position and attempt are span fields, never metric labels (unbounded).
            let span = tracing::info_span!(
                "activity",
                run_id = %run,
                position = %a.position,
                attempt = a.attempt,
                kind,
            );
            self.tracker.spawn(
                async move {
                    let ctx = ActivityContext {
                        run_id: run.clone(),
                        frame: a.frame,
                        position: a.position.clone(),
                        attempt: a.attempt,
                        idempotency_key: a.idempotency_key.clone(),
                    };
                    let began = Instant::now();
                    // A panic in a call (a registered function, a connector bug) fails that
                    // call, like any other error; it must not lose the result slot of the run.
                    let call = AssertUnwindSafe(perform(&*i.handler, &i.secrets, &ctx, &a.call))
                        .catch_unwind();
                    // On shutdown a call gets `call_grace` to finish, then is abandoned: its
                    // result is not recorded, and whoever claims the run next makes it again
                    // with the same idempotency key. A hung call must not keep the process up.
                    let abandon = async {
                        i.shutdown.cancelled().await;
                        tokio::time::sleep(i.call_grace).await;
                    };
                    let r = tokio::select! {
                        r = call => r.unwrap_or_else(|panic| {
                            Err(WorkflowError::new(
                                ErrorKind::Runtime,
                                format!("the call panicked: {}", crate::aggregate::panic_message(&*panic)),
                            )
                            .with_title("Call panicked"))
                        }),
                        () = abandon => {
                            warn!("call abandoned at shutdown; the next holder makes it again");
                            if let Ok(mut s) = i.inflight.lock() {
                                s.remove(&key);
                            }
                            return;
                        }
                    };
                    i.metrics.task_finished(kind, r.is_ok(), began.elapsed());
                    let at = now_ms();
                    let fact = match r {
                        Ok(result) => RunEvent::ActivityCompleted {
                            id: a.frame,
                            result,
                            at,
                        },
                        Err(error) => RunEvent::ActivityFailed {
                            id: a.frame,
                            error,
                            at,
                        },
                    };
                    let mut delay = Duration::from_millis(50);
                    loop {
                        match i.advance(&run, vec![fact.clone()]).await {
                            Ok(()) => break,
                            Err(Error::Store(e)) if !i.shutdown.is_cancelled() => {
                                // The result is not recorded yet; keep it and try again. If the
                                // process dies now, recovery re-executes the call with the same
                                // idempotency key.
                                warn!(error = %e, "cannot record activity result; retrying");
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(5));
                            }
                            Err(e) => {
                                warn!(error = %e, "activity result not recorded");
                                break;
                            }
                        }
                    }
                    if let Ok(mut s) = i.inflight.lock() {
                        s.remove(&key);
                    }
                }
                .instrument(span),
            );
        }
        for c in state.pending_children() {
            let key = (run_id.to_string(), c.frame, u32::MAX);
            let fresh = self
                .inflight
                .lock()
                .map(|mut s| s.insert(key.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            let Some(frame) = state.frames.get(&c.frame) else {
                continue;
            };
            let FrameKind::Child { .. } = frame.kind else {
                continue;
            };
            let i = self.clone();
            let parent = run_id.to_string();
            self.tracker.spawn(async move {
                match i.start_child(&parent, c.frame, &c.child_run_id).await {
                    Ok(()) => {}
                    Err(ChildStart::Later(e)) => {
                        warn!(run = %parent, error = %e, "cannot start sub-workflow yet; trying again later");
                        i.trouble(&parent);
                    }
                    Err(ChildStart::Fault(e)) => {
                        let fact = RunEvent::ChildRunFinished {
                            id: c.frame,
                            result: Err(e),
                        };
                        if let Err(e) = i.advance(&parent, vec![fact]).await {
                            warn!(run = %parent, error = %e, "cannot record sub-workflow failure");
                        }
                    }
                }
                if let Ok(mut s) = i.inflight.lock() {
                    s.remove(&key);
                }
            });
        }
    }

    /// Starts the sub-workflow a `run: workflow` task asked for, unless it exists already; if it
    /// has already ended, delivers its result.
    pub(super) async fn start_child(
        self: &Arc<Self>,
        parent: &str,
        frame: FrameId,
        child: &str,
    ) -> std::result::Result<(), ChildStart> {
        let Some(req) = self.child_request(parent, frame).await? else {
            return Ok(());
        };
        match self.load(child).await {
            Ok((cs, _)) => {
                // Already started before a crash: make sure its end reaches the parent.
                if cs.status.is_terminal() {
                    self.after_append(child, &cs);
                } else {
                    let i = self.clone();
                    let child = child.to_string();
                    self.tracker.spawn(async move {
                        let _ = i.advance(&child, Vec::new()).await;
                    });
                }
                return Ok(());
            }
            Err(Error::RunNotFound { .. }) => {}
            Err(e) => return Err(ChildStart::Later(e)),
        }
        let (ns, name, version, input) = req;
        let def = self
            .defs
            .find(&ns, &name, &version)
            .await
            .map_err(|e| match e {
                // Deprecated stays deprecated: waiting would not help.
                e @ Error::VersionDeprecated { .. } => {
                    ChildStart::Fault(WorkflowError::new(ErrorKind::Configuration, e.to_string()))
                }
                e => ChildStart::Later(e),
            })?
            .ok_or_else(|| {
                ChildStart::Fault(WorkflowError::new(
                    ErrorKind::Configuration,
                    format!("no workflow {ns}/{name} version {version} is deployed"),
                ))
            })?;
        match self
            .start(
                def,
                input,
                StartOptions {
                    run_id: Some(child.to_string()),
                    parent: Some(ParentRef {
                        run_id: parent.to_string(),
                        frame,
                    }),
                    // A child run is found through its parent, not by the caller's id.
                    correlation_id: None,
                    idempotency_key: None,
                },
            )
            .await
        {
            Ok(_) | Err(Error::RunExists { .. }) => Ok(()),
            // The store is away (or its answer was lost after a commit): the parent keeps waiting
            // and its holder tries again (`renew` revisits parents waiting for children).
            Err(e @ Error::Store(_)) => Err(ChildStart::Later(e)),
            Err(e) => Err(ChildStart::Fault(runtime_error(e))),
        }
    }

    pub(super) async fn child_request(
        &self,
        parent: &str,
        frame: FrameId,
    ) -> std::result::Result<Option<(String, String, String, Value)>, ChildStart> {
        let history = self
            .store
            .load(RUN_AGGREGATE, parent, 0)
            .await
            .map_err(|e| ChildStart::Later(e.into()))?;
        for e in history.iter().rev() {
            if e.event_type != "ChildRunRequested" {
                continue;
            }
            if let Ok(RunEvent::ChildRunRequested {
                id,
                namespace,
                name,
                version,
                input,
                ..
            }) = decode(e)
            {
                if id == frame {
                    return Ok(Some((namespace, name, version, input)));
                }
            }
        }
        Ok(None)
    }
}

/// Why a sub-workflow was not started: the parent's task faults, or it waits and tries again.
pub(super) enum ChildStart {
    /// The definition is missing or the start was refused: the parent's task fails with this.
    Fault(WorkflowError),
    /// The store is away: nothing is recorded, the parent's holder tries again.
    Later(Error),
}

pub(super) fn runtime_error(e: Error) -> WorkflowError {
    WorkflowError::new(ErrorKind::Runtime, e.to_string())
}

/// Performs a recorded call. The arguments of a function call sealed with secrets are revealed
/// here, just before the call, and the function's error is scrubbed of them; HTTP and OpenAPI
/// calls go to their connector sealed, which reveals them when it sends the request
/// ([`cairn_core::sealed`]).
pub(super) async fn perform(
    handler: &dyn ActivityHandler,
    secrets: &Secrets,
    ctx: &ActivityContext,
    call: &cairn_core::events::ActivityCall,
) -> Result<Value, WorkflowError> {
    let cairn_core::events::ActivityCall::Function {
        seal: Some(seal), ..
    } = call
    else {
        return handler.call(ctx, call).await;
    };
    let source = cairn_core::sealed::FromSource(&**secrets);
    let mut revealer = cairn_core::sealed::Revealer::new(Some(seal), &source);
    let revealed = revealer.call(call)?;
    handler
        .call(ctx, &revealed)
        .await
        .map_err(|e| revealer.scrub_error(e))
}
