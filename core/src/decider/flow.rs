//! Flow: starting tasks, what follows a finished task (`then`, the end of a list, the end of
//! the workflow), and the composite tasks that sequence others: `do`, `switch`, `for`, `fork`.

use super::*;

impl Decider {
    // ----- lists -----------------------------------------------------------------------------

    pub(super) fn advance(
        &self,
        s: &mut RunState,
        f: &Frame,
        seq: &Seq,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let Some(list) = self.list_at(&seq.list) else {
            let e = WorkflowError::new(ErrorKind::Runtime, format!("no task list at {}", seq.list));
            return self.fault(s, f, e, inp, out);
        };
        let next = match (seq.last_index, seq.then.as_deref()) {
            (None, _) => Next::Index(0),
            (Some(i), None | Some("continue")) => Next::Index(i + 1),
            (Some(_), Some("exit")) => Next::Finished,
            (Some(_), Some("end")) => Next::End,
            (Some(_), Some(name)) => match list.0.iter().position(|t| t.name == name) {
                Some(i) => Next::Index(i),
                None => {
                    let e = WorkflowError::new(
                        ErrorKind::Configuration,
                        format!(
                            "flow directive names task `{name}`, which is not in {}",
                            seq.list
                        ),
                    );
                    return self.fault(s, f, e, inp, out);
                }
            },
        };
        match next {
            Next::Index(i) if i < list.0.len() => self.start_task(
                s,
                f.id,
                i,
                &list.0[i],
                &seq.list,
                seq.data.clone(),
                inp,
                out,
            ),
            Next::Index(_) | Next::Finished => self.list_finished(s, f, seq.data.clone(), inp, out),
            // In a compensation, `end` ends the compensation, not the workflow (which is over).
            Next::End if s.status == RunStatus::Compensating => {
                let top = self.compensation_root(s, f);
                self.complete(s, &top, seq.data.clone(), None, inp, out)
            }
            Next::End => self.end_workflow(s, seq.data.clone(), inp, out),
        }
    }

    pub(super) fn list_finished(
        &self,
        s: &mut RunState,
        f: &Frame,
        data: Value,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        match &f.kind {
            FrameKind::Root(_) => self.end_workflow(s, data, inp, out),
            FrameKind::For {
                iteration: Some(i), ..
            } => self.next_iteration(s, f, i + 1, data, inp, out),
            _ => {
                let then = self.task_of(f).and_then(|t| t.base.then.clone());
                self.complete(s, f, data, then, inp, out)
            }
        }
    }

    pub(super) fn end_workflow(
        &self,
        s: &mut RunState,
        data: Value,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let vars = self.base_vars(s, &data, inp);
        let output = match self.def.output.as_ref().and_then(|o| o.as_.as_ref()) {
            Some(a) => match eval_as(a, &data, &vars) {
                Ok(v) => v,
                Err(e) => {
                    let e = WorkflowError::from(e).at("/output/as");
                    return Self::run_faulted(s, out, e, inp.now);
                }
            },
            None => data,
        };
        if let Some(schema) = self.def.output.as_ref().and_then(|o| o.schema.as_ref()) {
            if let Err(e) = crate::data_schema::check(schema, &output, "the workflow output") {
                let e = e.at("/output/schema");
                return Self::run_faulted(s, out, e, inp.now);
            }
        }
        Self::emit(
            s,
            out,
            RunEvent::RunCompleted {
                output,
                at: inp.now,
            },
        );
    }

    // ----- one task --------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_task(
        &self,
        s: &mut RunState,
        parent: FrameId,
        index: usize,
        named: &NamedTask,
        list_ptr: &str,
        raw_input: Value,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let position = format!("{list_ptr}/{index}/{}", escape_pointer(&named.name));
        self.start_task_at(
            s,
            parent,
            index,
            &named.name,
            &named.task,
            position,
            raw_input,
            inp,
            out,
        );
    }

    /// [`Decider::start_task`] of a task at `position`: one of a list, or a task of
    /// `use.functions` (a compensation).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_task_at(
        &self,
        s: &mut RunState,
        parent: FrameId,
        index: usize,
        name: &str,
        task: &Task,
        position: String,
        raw_input: Value,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let mut vars = self.scope_vars(s, parent);
        vars.extend(self.base_vars(s, &raw_input, inp));
        vars.insert(
            "task".into(),
            json!({
                "name": name,
                "reference": position,
                "input": raw_input,
                "startedAt": datetime(inp.now),
            }),
        );
        let id = s.next_frame;
        // Values the fold can recover are left out (events v2): a value handed down a list of
        // tasks is stored once, not again with each task that receives it.
        let passed = s.passed_input_ref(parent) == Some(&raw_input);
        let started = |input: Value| RunEvent::TaskStarted {
            id,
            parent,
            index,
            position: position.clone(),
            name: name.to_string(),
            kind: task.kind.keyword().to_string(),
            raw_input: (!passed).then(|| raw_input.clone()),
            input: (input != raw_input).then_some(input),
            at: inp.now,
        };
        let pre = (|| -> Result<Option<Value>, WorkflowError> {
            if let Some(cond) = &task.base.if_ {
                if !expr::eval_condition(cond, &raw_input, &vars)? {
                    return Ok(None);
                }
            }
            if let Some(schema) = task.base.input.as_ref().and_then(|i| i.schema.as_ref()) {
                let what = format!("the input of task {name}");
                crate::data_schema::check(schema, &raw_input, &what)?;
            }
            match task.base.input.as_ref().and_then(|i| i.from.as_ref()) {
                Some(from) => Ok(Some(eval_as(from, &raw_input, &vars)?)),
                None => Ok(Some(raw_input.clone())),
            }
        })();
        let input = match pre {
            Ok(None) => {
                return Self::emit(
                    s,
                    out,
                    RunEvent::TaskSkipped {
                        parent,
                        index,
                        position,
                    },
                );
            }
            Ok(Some(input)) => input,
            Err(e) => {
                Self::emit(s, out, started(raw_input.clone()));
                let e = e.at(&position);
                return Self::emit(
                    s,
                    out,
                    RunEvent::TaskFaulted {
                        id,
                        error: e,
                        at: inp.now,
                    },
                );
            }
        };
        Self::emit(s, out, started(input));
        let Some(f) = s.frames.get(&id).cloned() else {
            return;
        };
        if let Some(t) = &task.base.timeout {
            let vars = self.frame_vars(s, &f, &f.input, inp);
            match self.timeout_ms(t, &f.input, &vars) {
                Ok(ms) => {
                    let timer = s.next_timer;
                    Self::emit(
                        s,
                        out,
                        RunEvent::TimerScheduled {
                            timer,
                            frame: id,
                            kind: TimerKind::TaskTimeout,
                            due_at: inp.now.saturating_add(ms as i64),
                        },
                    );
                }
                Err(e) => return self.fault(s, &f, e, inp, out),
            }
        }
        self.begin(s, &f, task, inp, out);
    }

    /// Kind-specific start of a task that has just been recorded as started.
    pub(super) fn begin(
        &self,
        s: &mut RunState,
        f: &Frame,
        task: &Task,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let then = task.base.then.clone();
        let vars = self.frame_vars(s, f, &f.input, inp);
        let r: Result<(), WorkflowError> = (|| {
            match &task.kind {
                TaskKind::Set(v) => {
                    let raw = match v {
                        Value::String(src) => expr::eval_bare(src, &f.input, &vars)?,
                        other => expr::eval_value(other, &f.input, &vars)?,
                    };
                    self.complete(s, f, raw, then, inp, out);
                }
                TaskKind::Switch(cases) => {
                    let mut chosen = None;
                    for c in cases {
                        let hit = match &c.when {
                            None => true,
                            Some(w) => expr::eval_condition(w, &f.input, &vars)?,
                        };
                        if hit {
                            chosen = Some(c.then.clone());
                            break;
                        }
                    }
                    self.complete(s, f, f.input.clone(), chosen.or(then), inp, out);
                }
                TaskKind::Raise(r) => {
                    let e = self.raise_error(&r.error, f, &vars)?;
                    self.fault(s, f, e, inp, out);
                }
                TaskKind::Call(call) => self.begin_call(s, f, call, &vars, inp, out)?,
                TaskKind::Emit(em) => {
                    let mut ev = match expr::eval_value(
                        &Value::Object(em.event.with.clone()),
                        &f.input,
                        &vars,
                    )? {
                        Value::Object(o) => o,
                        _ => Map::new(),
                    };
                    if !ev.contains_key("id") {
                        ev.insert("id".into(), Value::String(uuid_from(inp)));
                    }
                    if !ev.contains_key("time") {
                        ev.insert("time".into(), Value::String(iso8601(inp.now)));
                    }
                    ev.entry("specversion")
                        .or_insert(Value::String("1.0".into()));
                    let event = Value::Object(ev);
                    Self::emit(
                        s,
                        out,
                        RunEvent::EventEmitted {
                            id: f.id,
                            event: event.clone(),
                        },
                    );
                    self.complete(s, f, event, then, inp, out);
                }
                TaskKind::Wait(d) => {
                    let ms = self.duration_ms(d, &f.input, &vars)?;
                    if ms == 0 {
                        self.complete(s, f, f.input.clone(), then, inp, out);
                    } else {
                        let timer = s.next_timer;
                        Self::emit(
                            s,
                            out,
                            RunEvent::TimerScheduled {
                                timer,
                                frame: f.id,
                                kind: TimerKind::Wait,
                                due_at: inp.now.saturating_add(ms as i64),
                            },
                        );
                    }
                }
                TaskKind::Run(run) => match &run.workflow {
                    Some(w) => {
                        let input = match &w.input {
                            Some(v) => self.child_input(v, &f.input, &vars, inp)?,
                            None => f.input.clone(),
                        };
                        Self::emit(
                            s,
                            out,
                            RunEvent::ChildRunRequested {
                                id: f.id,
                                child_run_id: uuid_from(inp),
                                namespace: w.namespace.clone(),
                                name: w.name.clone(),
                                version: w.version.clone(),
                                input,
                            },
                        );
                    }
                    None => {
                        let what = if run.container.is_some() {
                            "run: container"
                        } else if run.script.is_some() {
                            "run: script"
                        } else {
                            "run: shell"
                        };
                        return Err(not_supported(what, &f.position));
                    }
                },
                TaskKind::Do(_) | TaskKind::For(_) | TaskKind::Try(_) | TaskKind::Fork(_) => {}
                TaskKind::Listen(l) => {
                    if l.foreach.is_some() {
                        return Err(not_supported("listen with foreach", &f.position));
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            if s.frames.contains_key(&f.id) {
                self.fault(s, f, e, inp, out);
            }
        }
    }

    /// Records a task's completion: `output.as`, then `export.as`.
    pub(super) fn complete(
        &self,
        s: &mut RunState,
        f: &Frame,
        raw_output: Value,
        then: Option<FlowDirective>,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let Some(task) = self.task_of(f) else {
            let e = WorkflowError::new(ErrorKind::Runtime, format!("no task at {}", f.position));
            return self.fault(s, f, e, inp, out);
        };
        let mut vars = self.frame_vars(s, f, &f.input, inp);
        if let Some(Value::Object(t)) = vars.get_mut("task") {
            t.insert("output".into(), raw_output.clone());
        }
        let r: Result<(Value, Option<Value>), WorkflowError> = (|| {
            let output = match task.base.output.as_ref().and_then(|o| o.as_.as_ref()) {
                Some(a) => eval_as(a, &raw_output, &vars)?,
                None => raw_output.clone(),
            };
            if let Some(schema) = task.base.output.as_ref().and_then(|o| o.schema.as_ref()) {
                let what = format!("the output of task {}", f.name);
                crate::data_schema::check(schema, &output, &what)?;
            }
            let context = match task.base.export.as_ref().and_then(|o| o.as_.as_ref()) {
                Some(a) => {
                    vars.insert("output".into(), output.clone());
                    Some(eval_as(a, &output, &vars)?)
                }
                None => None,
            };
            if let Some(schema) = task.base.export.as_ref().and_then(|o| o.schema.as_ref()) {
                let what = format!("the context exported by task {}", f.name);
                crate::data_schema::check(schema, context.as_ref().unwrap_or(&s.context), &what)?;
            }
            Ok((output, context))
        })();
        // Only the workflow's own tasks register compensations, never a running compensation's.
        let compensation = match task.base.compensation() {
            Some(name) if s.status == RunStatus::Running && f.position.starts_with("/do/") => {
                Some(name.to_string())
            }
            _ => None,
        };
        match r {
            Ok((output, context)) => Self::emit(
                s,
                out,
                RunEvent::TaskCompleted {
                    id: f.id,
                    output,
                    context,
                    then: then.map(|t| directive_text(&t)),
                    compensation,
                    at: inp.now,
                },
            ),
            Err(e) => self.fault(s, f, e, inp, out),
        }
    }

    // ----- for, fork, listen -----------------------------------------------------------------

    pub(super) fn next_iteration(
        &self,
        s: &mut RunState,
        f: &Frame,
        i: usize,
        data: Value,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let Some(TaskKind::For(ft)) = self.task_of(f).map(|t| &t.kind) else {
            return;
        };
        let then = self.task_of(f).and_then(|t| t.base.then.clone());
        let mut vars = self.frame_vars(s, f, &f.input, inp);
        let items = match out.for_items.get(&f.id) {
            Some(items) => items.clone(),
            None => {
                let items = match expr::eval_bare(&ft.for_.in_, &f.input, &vars) {
                    Ok(Value::Array(a)) => a,
                    Ok(Value::Null) => Vec::new(),
                    Ok(Value::Object(o)) => o.into_iter().map(|(_, v)| v).collect(),
                    Ok(other) => {
                        let e = WorkflowError::new(
                            ErrorKind::Expression,
                            format!("`for.in` must yield an array, got {other}"),
                        );
                        return self.fault(s, f, e, inp, out);
                    }
                    Err(e) => return self.fault(s, f, e.into(), inp, out),
                };
                let items = Arc::new(items);
                out.for_items.insert(f.id, items.clone());
                items
            }
        };
        if i >= items.len() {
            return self.complete(s, f, data, then, inp, out);
        }
        let item = items[i].clone();
        if let Some(w) = &ft.while_ {
            vars.insert(
                ft.for_.each.clone().unwrap_or_else(|| "item".into()),
                item.clone(),
            );
            vars.insert(
                ft.for_.at.clone().unwrap_or_else(|| "index".into()),
                Value::from(i as u64),
            );
            match expr::eval_condition(w, &data, &vars) {
                Ok(true) => {}
                Ok(false) => return self.complete(s, f, data, then, inp, out),
                Err(e) => return self.fault(s, f, e.into(), inp, out),
            }
        }
        Self::emit(
            s,
            out,
            RunEvent::IterationStarted {
                id: f.id,
                index: i,
                item,
            },
        );
    }

    pub(super) fn fork_step(
        &self,
        s: &mut RunState,
        f: &Frame,
        branches: &[Option<Branch>],
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let Some(TaskKind::Fork(fork)) = self.task_of(f).map(|t| &t.kind) else {
            return;
        };
        let then = self.task_of(f).and_then(|t| t.base.then.clone());
        let list_ptr = format!("{}/fork/branches", f.position);
        let missing: Vec<usize> = (0..fork.branches.0.len())
            .filter(|i| branches.get(*i).is_none_or(|b| b.is_none()))
            .collect();
        if !missing.is_empty() {
            for i in missing {
                if !s.frames.contains_key(&f.id) {
                    return;
                }
                let b = &fork.branches.0[i];
                self.start_task(s, f.id, i, b, &list_ptr, f.input.clone(), inp, out);
            }
            return;
        }
        if fork.compete {
            let winner = branches.iter().find_map(|b| match b {
                Some(Branch::Done(v)) => Some(v.clone()),
                _ => None,
            });
            if let Some(v) = winner {
                for b in branches.iter().flatten() {
                    if let Branch::Running(id) = b {
                        Self::emit(s, out, RunEvent::TaskCancelled { id: *id });
                    }
                }
                self.complete(s, f, v, then, inp, out);
            }
        } else if branches.iter().all(|b| matches!(b, Some(Branch::Done(_)))) {
            let outputs: Vec<Value> = branches
                .iter()
                .filter_map(|b| match b {
                    Some(Branch::Done(v)) => Some(v.clone()),
                    _ => None,
                })
                .collect();
            self.complete(s, f, Value::Array(outputs), then, inp, out);
        }
    }
}

fn directive_text(d: &FlowDirective) -> String {
    match d {
        FlowDirective::Continue => "continue".into(),
        FlowDirective::Exit => "exit".into(),
        FlowDirective::End => "end".into(),
        FlowDirective::Goto(t) => t.clone(),
    }
}
