//! Compensation, Cairn's extension of the DSL (docs/compensation.md): once a run compensates
//! (`RunCompensating`, after an unhandled fault or a `cancel --compensate`), the compensations
//! its completed activations declared run one at a time, in reverse order of completion, each
//! as an activation of its task of `use.functions` under the root; then the run ends
//! (`RunCompensated`), with the compensations that faulted, if any.

use super::*;

impl Decider {
    /// What a cancel records: `RunCompensating` when `compensate` is asked for and completed
    /// activations declared compensations, `RunCancelled` otherwise (nothing to undo, or not
    /// asked: a plain cancel stops the run as it always did).
    pub fn cancel(
        state: &RunState,
        reason: Option<String>,
        compensate: bool,
        now: Millis,
    ) -> RunEvent {
        if compensate && !state.compensable.is_empty() && state.compensation.is_none() {
            RunEvent::RunCompensating {
                error: None,
                reason,
                at: now,
            }
        } else {
            RunEvent::RunCancelled { reason, at: now }
        }
    }

    pub(super) fn compensation_step(
        &self,
        s: &mut RunState,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let ids: Vec<FrameId> = s.frames.keys().copied().collect();
        for id in ids {
            if !s.frames.contains_key(&id) {
                continue;
            }
            let before = out.len();
            self.frame_step(s, id, inp, out);
            if out.len() != before {
                return;
            }
        }
        let Some(c) = &s.compensation else { return };
        if c.current.is_some() {
            return;
        }
        let next = c
            .remaining
            .checked_sub(1)
            .and_then(|i| s.compensable.get(i).cloned());
        let Some(entry) = next else {
            let failed = c.failed.clone();
            return Self::emit(
                s,
                out,
                RunEvent::RunCompensated {
                    failed,
                    at: inp.now,
                },
            );
        };
        let id = s.next_frame;
        Self::emit(
            s,
            out,
            RunEvent::CompensationStarted {
                id,
                task: entry.task,
                position: entry.position.clone(),
                compensation: entry.compensation.clone(),
                at: inp.now,
            },
        );
        let position = format!("/use/functions/{}", escape_pointer(&entry.compensation));
        // What the compensation sees as its input: the compensated activation's task, input and
        // output (its `input.from` can pick from them).
        let raw_input = json!({
            "task": { "name": entry.name, "reference": entry.position },
            "input": entry.input,
            "output": entry.output,
        });
        match self.function(&entry.compensation) {
            Some(task) => self.start_task_at(
                s,
                ROOT,
                0,
                &entry.compensation,
                task,
                position,
                raw_input,
                inp,
                out,
            ),
            None => {
                // The definition was validated, so only a definition changed under the run gets
                // here: the compensation faults, and the others still run.
                Self::emit(
                    s,
                    out,
                    RunEvent::TaskStarted {
                        id,
                        parent: ROOT,
                        index: 0,
                        position: position.clone(),
                        name: entry.compensation.clone(),
                        kind: "call".into(),
                        raw_input: Some(raw_input),
                        input: None,
                        at: inp.now,
                    },
                );
                let e = WorkflowError::new(
                    ErrorKind::Configuration,
                    format!(
                        "compensation `{}` is not defined in use.functions",
                        entry.compensation
                    ),
                )
                .at(&position);
                Self::emit(
                    s,
                    out,
                    RunEvent::TaskFaulted {
                        id,
                        error: e,
                        at: inp.now,
                    },
                );
            }
        }
    }

    /// The activation of the running compensation that `f` is part of (`f` itself, or its
    /// ancestor directly under the root).
    pub(super) fn compensation_root(&self, s: &RunState, f: &Frame) -> Frame {
        let mut top = f.clone();
        while top.parent != ROOT {
            match s.frames.get(&top.parent) {
                Some(p) => top = p.clone(),
                None => break,
            }
        }
        top
    }
}
