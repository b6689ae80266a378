//! Faults: errors raised or met by a task, how they travel up the activations, and the delay
//! and attempt count of retries.

use super::*;

impl Decider {
    pub(super) fn raise_error(
        &self,
        e: &ErrorOrRef,
        f: &Frame,
        vars: &Vars,
    ) -> Result<WorkflowError, WorkflowError> {
        let def = match e {
            ErrorOrRef::Inline(d) => d,
            ErrorOrRef::Ref(name) => self
                .def
                .use_
                .as_ref()
                .and_then(|u| u.errors.as_ref())
                .and_then(|m| m.get(name))
                .ok_or_else(|| {
                    WorkflowError::new(
                        ErrorKind::Configuration,
                        format!("error `{name}` is not defined in use.errors"),
                    )
                })?,
        };
        let text = |v: &str| -> Result<String, WorkflowError> {
            Ok(scalar_text(&expr::eval_string(v, &f.input, vars)?))
        };
        let status = match &def.status {
            Value::Number(n) => n.as_u64().unwrap_or(500),
            Value::String(src) => match expr::eval_string(src, &f.input, vars)? {
                Value::Number(n) => n.as_u64().unwrap_or(500),
                Value::String(t) => t.parse().unwrap_or(500),
                _ => 500,
            },
            _ => 500,
        };
        Ok(WorkflowError {
            type_: text(&def.type_)?,
            status: u16::try_from(status).unwrap_or(500),
            title: def.title.as_deref().map(text).transpose()?,
            detail: def.detail.as_deref().map(text).transpose()?,
            instance: Some(match &def.instance {
                Some(i) => text(i)?,
                None => f.position.clone(),
            }),
        })
    }

    pub(super) fn fault(
        &self,
        s: &mut RunState,
        f: &Frame,
        e: WorkflowError,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let e = e.at(if f.id == ROOT { "/" } else { &f.position });
        if f.id == ROOT {
            Self::run_faulted(s, out, e, inp.now);
        } else {
            Self::emit(
                s,
                out,
                RunEvent::TaskFaulted {
                    id: f.id,
                    error: e,
                    at: inp.now,
                },
            );
        }
    }

    // ----- errors, try/catch, retry ----------------------------------------------------------

    pub(super) fn handle_child_error(
        &self,
        s: &mut RunState,
        f: &Frame,
        err: WorkflowError,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        match &f.kind {
            FrameKind::Root(_) => Self::run_faulted(s, out, err, inp.now),
            FrameKind::Try {
                attempt,
                phase: TryPhase::Trying,
                ..
            } => self.catch(s, f, *attempt, err, inp, out),
            FrameKind::Fork { branches } => {
                for b in branches.iter().flatten() {
                    if let Branch::Running(id) = b {
                        Self::emit(s, out, RunEvent::TaskCancelled { id: *id });
                    }
                }
                self.fault(s, f, err, inp, out)
            }
            _ => self.fault(s, f, err, inp, out),
        }
    }

    /// The delay before the next attempt, or `None` when the policy says not to retry.
    pub(super) fn retry_delay(
        &self,
        p: &RetryPolicy,
        attempt: u32,
        f: &Frame,
        vars: &Vars,
        inp: &mut DecideInput<'_>,
    ) -> Result<Option<u64>, WorkflowError> {
        if let Some(w) = &p.when {
            if !expr::eval_condition(w, &f.input, vars)? {
                return Ok(None);
            }
        }
        if let Some(w) = &p.except_when {
            if expr::eval_condition(w, &f.input, vars)? {
                return Ok(None);
            }
        }
        if let Some(limit) = &p.limit {
            if let Some(count) = limit.attempt.as_ref().and_then(|a| a.count) {
                // `count` is the number of retries after the first run.
                if attempt >= count {
                    return Ok(None);
                }
            }
            if let Some(d) = &limit.duration {
                let max = self.duration_ms(d, &f.input, vars)?;
                let elapsed = inp.now.saturating_sub(f.started_at).max(0) as u64;
                if elapsed >= max {
                    return Ok(None);
                }
            }
        }
        let base = match &p.delay {
            Some(d) => self.duration_ms(d, &f.input, vars)?,
            None => 0,
        };
        let n = u64::from(attempt) + 1;
        let mut delay = match &p.backoff {
            Some(b) if b.exponential.is_some() => {
                base.saturating_mul(1u64.checked_shl((n - 1).min(62) as u32).unwrap_or(u64::MAX))
            }
            Some(b) if b.linear.is_some() => base.saturating_mul(n),
            _ => base,
        };
        if let Some(j) = &p.jitter {
            let from = self.duration_ms(&j.from, &f.input, vars)?;
            let to = self.duration_ms(&j.to, &f.input, vars)?;
            if to > from {
                delay = delay.saturating_add(from + (inp.entropy)() % (to - from + 1));
            } else {
                delay = delay.saturating_add(from);
            }
        }
        Ok(Some(delay))
    }

    /// Retry attempt of the nearest enclosing `try`.
    pub(super) fn attempt_of(&self, s: &RunState, mut id: FrameId) -> u32 {
        loop {
            let Some(f) = s.frames.get(&id) else { return 0 };
            if let FrameKind::Try { attempt, .. } = f.kind {
                return attempt;
            }
            if id == ROOT {
                return 0;
            }
            id = f.parent;
        }
    }
}
