//! Scopes: `try`/`catch` (which errors a catch takes, retry or recovery) and the variables an
//! expression sees from the activations around it.

use super::*;

impl Decider {
    pub(super) fn catch(
        &self,
        s: &mut RunState,
        f: &Frame,
        attempt: u32,
        err: WorkflowError,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let Some(TaskKind::Try(t)) = self.task_of(f).map(|t| &t.kind) else {
            return self.fault(s, f, err, inp, out);
        };
        let catch = &t.catch;
        let as_name = catch.as_.clone().unwrap_or_else(|| "error".into());
        let mut vars = self.frame_vars(s, f, &f.input, inp);
        vars.insert(as_name, err.to_value());
        let decision = (|| -> Result<bool, WorkflowError> {
            if let Some(with) = catch.errors.as_ref().and_then(|e| e.with.as_ref()) {
                if !error_matches(with, &err) {
                    return Ok(false);
                }
            }
            if let Some(w) = &catch.when {
                if !expr::eval_condition(w, &f.input, &vars)? {
                    return Ok(false);
                }
            }
            if let Some(w) = &catch.except_when {
                if expr::eval_condition(w, &f.input, &vars)? {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
        let caught = match decision {
            Ok(c) => c,
            Err(e) => return self.fault(s, f, e, inp, out),
        };
        if !caught {
            return self.fault(s, f, err, inp, out);
        }
        if let Some(r) = &catch.retry {
            let policy = match r {
                RetryOrRef::Inline(p) => Some(p),
                RetryOrRef::Ref(name) => {
                    match self
                        .def
                        .use_
                        .as_ref()
                        .and_then(|u| u.retries.as_ref())
                        .and_then(|m| m.get(name))
                    {
                        Some(p) => Some(p),
                        None => {
                            let e = WorkflowError::new(
                                ErrorKind::Configuration,
                                format!("retry policy `{name}` is not defined in use.retries"),
                            );
                            return self.fault(s, f, e, inp, out);
                        }
                    }
                }
            };
            if let Some(p) = policy {
                match self.retry_delay(p, attempt, f, &vars, inp) {
                    Ok(Some(delay)) => {
                        let next = attempt.saturating_add(1);
                        if delay == 0 {
                            return Self::emit(
                                s,
                                out,
                                RunEvent::TaskRetried {
                                    id: f.id,
                                    attempt: next,
                                },
                            );
                        }
                        Self::emit(
                            s,
                            out,
                            RunEvent::RetryScheduled {
                                id: f.id,
                                attempt: next,
                                delay_ms: delay,
                                error: err,
                            },
                        );
                        let timer = s.next_timer;
                        return Self::emit(
                            s,
                            out,
                            RunEvent::TimerScheduled {
                                timer,
                                frame: f.id,
                                kind: TimerKind::Retry,
                                due_at: inp.now.saturating_add(delay as i64),
                            },
                        );
                    }
                    Ok(None) => {}
                    Err(e) => return self.fault(s, f, e, inp, out),
                }
            }
        }
        Self::emit(
            s,
            out,
            RunEvent::ErrorCaught {
                id: f.id,
                error: err,
            },
        );
        if catch.do_.as_ref().is_none_or(|d| d.0.is_empty()) {
            let then = self.task_of(f).and_then(|t| t.base.then.clone());
            if let Some(f2) = s.frames.get(&f.id).cloned() {
                self.complete(s, &f2, f.input.clone(), then, inp, out);
            }
        }
    }

    /// Variables introduced by the activation `id` and its ancestors (nearest wins).
    pub(super) fn scope_vars(&self, s: &RunState, mut id: FrameId) -> Vars {
        let mut chain = Vec::new();
        while let Some(f) = s.frames.get(&id) {
            chain.push(f);
            if id == ROOT {
                break;
            }
            id = f.parent;
        }
        let mut vars = Vars::new();
        for f in chain.into_iter().rev() {
            if f.vars.is_empty() {
                continue;
            }
            let task = self.task_of(f);
            for (k, v) in &f.vars {
                let name = match (k.as_str(), task.map(|t| &t.kind)) {
                    ("\u{0}item", Some(TaskKind::For(ft))) => {
                        ft.for_.each.clone().unwrap_or_else(|| "item".into())
                    }
                    ("\u{0}index", Some(TaskKind::For(ft))) => {
                        ft.for_.at.clone().unwrap_or_else(|| "index".into())
                    }
                    ("\u{0}error", Some(TaskKind::Try(t))) => {
                        t.catch.as_.clone().unwrap_or_else(|| "error".into())
                    }
                    (k, _) if k.starts_with('\u{0}') => continue,
                    (k, _) => k.to_string(),
                };
                vars.insert(name, v.clone());
            }
        }
        vars
    }

    /// The spec's arguments, without `$task`.
    pub(super) fn base_vars(&self, s: &RunState, input: &Value, inp: &DecideInput<'_>) -> Vars {
        let mut v = Vars::new();
        v.insert("context".into(), s.context.clone());
        v.insert("input".into(), input.clone());
        v.insert("output".into(), Value::Null);
        v.insert("secrets".into(), Value::Object(inp.secrets.clone()));
        v.insert("authorization".into(), Value::Null);
        v.insert(
            "workflow".into(),
            json!({
                "id": s.run_id,
                "definition": if self.binds_definition { (*self.def_value).clone() } else { Value::Null },
                "input": s.raw_input,
                "startedAt": datetime(s.started_at),
            }),
        );
        v.insert(
            "runtime".into(),
            json!({ "name": RUNTIME_NAME, "version": env!("CARGO_PKG_VERSION"), "metadata": {} }),
        );
        v.insert("task".into(), Value::Null);
        v
    }

    /// Everything an expression evaluated inside activation `f` sees.
    pub(super) fn frame_vars(
        &self,
        s: &RunState,
        f: &Frame,
        input: &Value,
        inp: &DecideInput<'_>,
    ) -> Vars {
        let mut vars = self.scope_vars(s, f.id);
        vars.extend(self.base_vars(s, input, inp));
        if f.id != ROOT {
            vars.insert(
                "task".into(),
                json!({
                    "name": f.name,
                    "reference": f.position,
                    "input": f.raw_input,
                    "startedAt": datetime(f.started_at),
                }),
            );
        }
        vars
    }
}

fn error_matches(with: &Map<String, Value>, err: &WorkflowError) -> bool {
    with.iter().all(|(k, want)| {
        let have = match k.as_str() {
            "type" => Value::String(err.type_.clone()),
            "status" => Value::from(err.status),
            "instance" => err
                .instance
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
            "title" => err.title.clone().map(Value::String).unwrap_or(Value::Null),
            "details" | "detail" => err.detail.clone().map(Value::String).unwrap_or(Value::Null),
            _ => return false,
        };
        match (want, &have) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Value::String(a), Value::Number(b)) => a.parse::<f64>().ok() == b.as_f64(),
            _ => *want == have,
        }
    })
}
