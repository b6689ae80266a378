//! Listening: `listen` tasks consuming received events by their filters and strategy.

use super::*;

impl Decider {
    pub(super) fn listen_step(
        &self,
        s: &mut RunState,
        f: &Frame,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) {
        let Some(TaskKind::Listen(l)) = self.task_of(f).map(|t| &t.kind) else {
            return;
        };
        let then = self.task_of(f).and_then(|t| t.base.then.clone());
        let consumed = match &f.kind {
            FrameKind::Listen { consumed } => consumed.clone(),
            _ => return,
        };
        let vars = self.frame_vars(s, f, &f.input, inp);
        let free: Vec<(usize, Value)> = s
            .inbox
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.consumed)
            .map(|(i, e)| (i, e.event.clone()))
            .collect();
        let read = |e: &Value| -> Value {
            match l.listen.read {
                Some(dsl::ListenRead::Envelope) => e.clone(),
                _ => e.get("data").cloned().unwrap_or(Value::Null),
            }
        };
        let outputs = |idx: &[usize], s: &RunState| -> Value {
            Value::Array(
                idx.iter()
                    .filter_map(|i| s.inbox.get(*i))
                    .map(|e| read(&e.event))
                    .collect(),
            )
        };
        let strategy = &l.listen.to;
        let r: Result<Option<(Vec<usize>, bool)>, WorkflowError> = (|| {
            if let Some(one) = &strategy.one {
                for (i, e) in &free {
                    if filter_matches(one, e, &vars)? {
                        return Ok(Some((vec![*i], true)));
                    }
                }
                return Ok(None);
            }
            if let Some(all) = &strategy.all {
                let mut picked = Vec::new();
                for flt in all {
                    let mut found = None;
                    for (i, e) in &free {
                        if !picked.contains(i) && filter_matches(flt, e, &vars)? {
                            found = Some(*i);
                            break;
                        }
                    }
                    match found {
                        Some(i) => picked.push(i),
                        None => return Ok(None),
                    }
                }
                return Ok(Some((picked, true)));
            }
            let any = strategy.any.as_deref().unwrap_or(&[]);
            let matches_any = |e: &Value| -> Result<bool, WorkflowError> {
                if any.is_empty() {
                    return Ok(true);
                }
                for flt in any {
                    if filter_matches(flt, e, &vars)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            };
            match strategy.until.as_deref() {
                None => {
                    for (i, e) in &free {
                        if matches_any(e)? {
                            return Ok(Some((vec![*i], true)));
                        }
                    }
                    Ok(None)
                }
                Some(Until::Condition(cond)) => {
                    let mut all_consumed = consumed.clone();
                    let mut newly = Vec::new();
                    for (i, e) in &free {
                        if matches_any(e)? {
                            newly.push(*i);
                            all_consumed.push(*i);
                            let so_far = outputs(&all_consumed, s);
                            if expr::eval_condition(cond, &so_far, &vars)? {
                                return Ok(Some((newly, true)));
                            }
                        }
                    }
                    Ok(if newly.is_empty() {
                        None
                    } else {
                        Some((newly, false))
                    })
                }
                Some(Until::Events(u)) => {
                    // Events that satisfy `until` end the listen and are not part of its output.
                    if let Some(stop) = strategy_satisfied(u, &free, &vars)? {
                        return Ok(Some((stop, true)));
                    }
                    let mut newly = Vec::new();
                    for (i, e) in &free {
                        if matches_any(e)? {
                            newly.push(*i);
                        }
                    }
                    Ok(if newly.is_empty() {
                        None
                    } else {
                        Some((newly, false))
                    })
                }
            }
        })();
        match r {
            Err(e) => self.fault(s, f, e, inp, out),
            Ok(None) => {}
            Ok(Some((idx, done))) => {
                let until_events = matches!(strategy.until.as_deref(), Some(Until::Events(_)));
                Self::emit(
                    s,
                    out,
                    RunEvent::EventsConsumed {
                        id: f.id,
                        indexes: idx.clone(),
                    },
                );
                if done {
                    let mut all = consumed;
                    if !until_events {
                        all.extend(idx);
                    }
                    let output = outputs(&all, s);
                    self.complete(s, f, output, then, inp, out);
                }
            }
        }
    }
}

/// Whether a CloudEvent matches a filter: every attribute in `with` equals the event's, or, for
/// an expression, is true of it.
fn filter_matches(flt: &EventFilter, event: &Value, vars: &Vars) -> Result<bool, WorkflowError> {
    for (k, want) in &flt.with {
        let have = event.get(k).cloned().unwrap_or(Value::Null);
        let ok = match want {
            Value::String(s) if expr::is_expression(s) => expr::eval_condition(s, &have, vars)?,
            Value::Object(_) => subset(want, &have),
            other => *other == have,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| subset(v, hv))),
        _ => want == have,
    }
}

fn strategy_satisfied(
    st: &EventConsumptionStrategy,
    free: &[(usize, Value)],
    vars: &Vars,
) -> Result<Option<Vec<usize>>, WorkflowError> {
    if let Some(one) = &st.one {
        for (i, e) in free {
            if filter_matches(one, e, vars)? {
                return Ok(Some(vec![*i]));
            }
        }
        return Ok(None);
    }
    if let Some(all) = &st.all {
        let mut picked = Vec::new();
        for flt in all {
            let mut found = None;
            for (i, e) in free {
                if !picked.contains(i) && filter_matches(flt, e, vars)? {
                    found = Some(*i);
                    break;
                }
            }
            match found {
                Some(i) => picked.push(i),
                None => return Ok(None),
            }
        }
        return Ok(Some(picked));
    }
    for flt in st.any.as_deref().unwrap_or(&[]) {
        for (i, e) in free {
            if filter_matches(flt, e, vars)? {
                return Ok(Some(vec![*i]));
            }
        }
    }
    Ok(None)
}
