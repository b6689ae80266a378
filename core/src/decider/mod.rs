//! The decider: given a definition, a run's state and the inputs of this moment (the time,
//! entropy, secrets), the events that happen next.
//!
//! It is a pure function. Each event it produces is applied to a working copy of the state
//! before the next is decided, so the decider and [`RunState::apply`] can never disagree about
//! what an event means. Non-deterministic values (the time, generated ids, jitter) are taken
//! from [`DecideInput`] and end up inside the events, so a replay never needs them again.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::budget;
use crate::dsl::{
    self, AuthenticationPolicy, CallTask, Duration, ErrorOrRef, EventConsumptionStrategy,
    EventFilter, FlowDirective, NamedTask, RetryOrRef, RetryPolicy, Task, TaskKind, TaskList,
    TimeoutOrRef, Until, Workflow,
};
use crate::error::{ErrorKind, WorkflowError};
use crate::events::{
    ActivityCall, DefinitionRef, FrameId, HttpAuth, HttpRequest, Millis, ParentRef, RunEvent,
    TimerKind,
};
use crate::expr::{self, Vars};
use crate::sealed;
use crate::state::{Branch, Frame, FrameKind, RunState, RunStatus, Seq, TryPhase, ROOT};
use crate::time::{datetime, iso8601};

mod calls;
mod compensation;
mod faults;
mod flow;
mod listen;
mod scopes;

/// The most events one call to [`Decider::decide`] produces. A workflow that loops forever
/// through `then` without waiting on anything still makes durable progress, one bounded batch at
/// a time, instead of hanging its worker.
pub const MAX_EVENTS_PER_DECISION: usize = 5_000;

/// What one batch of decisions produced ([`Decider::decide_batch`]).
#[derive(Debug)]
pub struct Decision {
    /// The events, in order.
    pub events: Vec<RunEvent>,
    /// Whether the batch stopped at a bound with work left: decide again after recording it.
    pub more: bool,
}

/// Name and version of this runtime, bound as `$runtime`.
pub const RUNTIME_NAME: &str = "cairn";

/// What the decider may use besides the definition and the state.
pub struct DecideInput<'a> {
    /// The current time (recorded into the events that need it).
    pub now: Millis,
    /// Secrets bound as `$secrets`.
    pub secrets: &'a Map<String, Value>,
    /// A source of random 64-bit numbers (ids, jitter).
    pub entropy: &'a mut dyn FnMut() -> u64,
}

/// Decides the next events of runs of one definition. Cheap to share: build one per definition
/// version and reuse it for every run pinned to it.
#[derive(Debug, Clone)]
pub struct Decider {
    def: Arc<Workflow>,
    def_value: Arc<Value>,
    /// Whether any expression may read `$workflow.definition`; binding a whole definition for
    /// every evaluation is the most expensive part of building the arguments.
    binds_definition: bool,
    /// Whether any of `use.authentications` may read `$secrets`: a call referring to one is
    /// then built with the secrets sealed ([`crate::sealed`]).
    auths_mention_secrets: bool,
}

/// What follows a finished task in its list.
enum Next {
    Index(usize),
    Finished,
    End,
}

/// What one `decide` call accumulates: the events, and what it may reuse between its steps.
struct Out {
    events: Vec<RunEvent>,
    /// The evaluated `for.in` collection of each `for` activation stepped in this call: the
    /// expression is pure over the activation's fixed input, and frame ids are never reused
    /// within a call, so evaluating it once per call (not once per iteration) changes nothing
    /// but the cost, which was quadratic in the length of the collection.
    for_items: HashMap<FrameId, Arc<Vec<Value>>>,
}

impl Out {
    fn len(&self) -> usize {
        self.events.len()
    }
}

impl Decider {
    /// A decider for `def`.
    pub fn new(def: Arc<Workflow>) -> Self {
        let def_value = Arc::new(serde_json::to_value(&*def).unwrap_or(Value::Null));
        let binds_definition = def_value.to_string().contains("$workflow");
        let auths_mention_secrets = def_value
            .get("use")
            .and_then(|u| u.get("authentications"))
            .is_some_and(|a| sealed::mentions_secrets(&a.to_string()));
        Decider {
            def,
            def_value,
            binds_definition,
            auths_mention_secrets,
        }
    }

    /// The definition.
    pub fn definition(&self) -> &Workflow {
        &self.def
    }

    /// The first event of a run. `correlation_id` is the caller's, recorded as given (callers
    /// check it with [`crate::events::check_correlation_id`]).
    pub fn start(
        run_id: &str,
        definition: DefinitionRef,
        input: Value,
        now: Millis,
        parent: Option<ParentRef>,
        correlation_id: Option<String>,
    ) -> RunEvent {
        RunEvent::RunStarted {
            run_id: run_id.to_string(),
            definition,
            input,
            at: now,
            parent,
            correlation_id,
        }
    }

    /// The events that happen next, until the run must wait for something from outside (a call
    /// result, a timer, an event) or ends. Empty when nothing can happen now.
    pub fn decide(&self, state: &RunState, input: &mut DecideInput<'_>) -> Vec<RunEvent> {
        self.decide_batch(state, input).events
    }

    /// [`Decider::decide`], saying whether it stopped at one of a batch's bounds with work left:
    /// [`MAX_EVENTS_PER_DECISION`] events, or as many interpreter steps as one expression may
    /// take (`expr_max_steps`), so that a batch of many expensive expressions holds its thread
    /// for about as long as one expression may, not thousands of times that.
    pub fn decide_batch(&self, state: &RunState, input: &mut DecideInput<'_>) -> Decision {
        let mut s = state.clone();
        let mut out = Out {
            events: Vec::new(),
            for_items: HashMap::new(),
        };
        let spent_before = budget::steps_spent();
        let allowance = budget::limits().max_steps;
        loop {
            let before = out.len();
            self.step(&mut s, input, &mut out);
            if out.len() == before {
                return Decision {
                    events: out.events,
                    more: false,
                };
            }
            if out.len() >= MAX_EVENTS_PER_DECISION
                || budget::steps_spent().saturating_sub(spent_before) >= allowance
            {
                return Decision {
                    events: out.events,
                    more: true,
                };
            }
        }
    }

    fn emit(s: &mut RunState, out: &mut Out, e: RunEvent) {
        s.apply(&e);
        out.events.push(e);
    }

    /// The run faults without a handler: it compensates instead when completed tasks declared
    /// compensations (docs/compensation.md), and ends faulted otherwise.
    fn run_faulted(s: &mut RunState, out: &mut Out, error: WorkflowError, at: Millis) {
        if !s.compensable.is_empty() && s.compensation.is_none() {
            let e = RunEvent::RunCompensating {
                error: Some(error),
                reason: None,
                at,
            };
            return Self::emit(s, out, e);
        }
        Self::emit(
            s,
            out,
            RunEvent::RunFaulted {
                error,
                at,
                resumable: false,
            },
        );
    }

    /// Makes one unit of progress, if any is possible.
    fn step(&self, s: &mut RunState, inp: &mut DecideInput<'_>, out: &mut Out) {
        if s.status.is_terminal() || s.status == RunStatus::Suspended || s.definition.is_none() {
            return;
        }
        if s.status == RunStatus::Compensating {
            return self.compensation_step(s, inp, out);
        }
        if s.input.is_none() {
            return self.accept_input(s, inp, out);
        }
        if s.timed_out {
            let e = WorkflowError::new(ErrorKind::Timeout, "the workflow timed out")
                .with_title("Workflow timeout")
                .at("/");
            return Self::run_faulted(s, out, e, inp.now);
        }
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
    }

    fn accept_input(&self, s: &mut RunState, inp: &mut DecideInput<'_>, out: &mut Out) {
        let raw = s.raw_input.clone();
        let vars = self.base_vars(s, &Value::Null, inp);
        if let Some(schema) = self.def.input.as_ref().and_then(|i| i.schema.as_ref()) {
            if let Err(e) = crate::data_schema::check(schema, &raw, "the workflow input") {
                let e = e.at("/input/schema");
                return Self::run_faulted(s, out, e, inp.now);
            }
        }
        let input = match self.def.input.as_ref().and_then(|i| i.from.as_ref()) {
            Some(from) => match eval_as(from, &raw, &vars) {
                Ok(v) => v,
                Err(e) => {
                    let e = WorkflowError::from(e).at("/input/from");
                    return Self::run_faulted(s, out, e, inp.now);
                }
            },
            None => raw,
        };
        // Recorded only when `input.from` changed it: the run's input is stored once.
        let input = (input != s.raw_input).then_some(input);
        Self::emit(s, out, RunEvent::WorkflowInputAccepted { input });
        if let Some(t) = &self.def.timeout {
            match self.timeout_ms(t, &Value::Null, &vars) {
                Ok(ms) => {
                    let timer = s.next_timer;
                    Self::emit(
                        s,
                        out,
                        RunEvent::TimerScheduled {
                            timer,
                            frame: ROOT,
                            kind: TimerKind::WorkflowTimeout,
                            due_at: inp.now.saturating_add(ms as i64),
                        },
                    );
                }
                Err(e) => Self::run_faulted(s, out, e.at("/timeout"), inp.now),
            }
        }
    }

    fn frame_step(&self, s: &mut RunState, id: FrameId, inp: &mut DecideInput<'_>, out: &mut Out) {
        let Some(f) = s.frames.get(&id).cloned() else {
            return;
        };
        if f.timed_out && id != ROOT {
            let e = WorkflowError::new(ErrorKind::Timeout, format!("task {} timed out", f.name))
                .with_title("Task timeout")
                .at(&f.position);
            return self.fault(s, &f, e, inp, out);
        }
        if let Some(err) = f.pending_error.clone() {
            return self.handle_child_error(s, &f, err, inp, out);
        }
        match &f.kind {
            FrameKind::Root(seq) | FrameKind::Do(seq) if seq.current.is_none() => {
                self.advance(s, &f, seq, inp, out);
            }
            FrameKind::For { iteration, seq } => match iteration {
                None => self.next_iteration(s, &f, 0, f.input.clone(), inp, out),
                Some(_) if seq.current.is_none() => self.advance(s, &f, seq, inp, out),
                Some(_) => {}
            },
            FrameKind::Try {
                attempt,
                phase,
                seq,
            } => match phase {
                TryPhase::Trying | TryPhase::Catching if seq.current.is_none() => {
                    self.advance(s, &f, seq, inp, out)
                }
                TryPhase::RetryDue => Self::emit(
                    s,
                    out,
                    RunEvent::TaskRetried {
                        id,
                        attempt: attempt.saturating_add(1),
                    },
                ),
                _ => {}
            },
            FrameKind::Fork { branches } => self.fork_step(s, &f, branches, inp, out),
            FrameKind::Activity {
                result: Some(r), ..
            } => match r {
                Ok(v) => {
                    let then = self.task_of(&f).and_then(|t| t.base.then.clone());
                    self.complete(s, &f, v.clone(), then, inp, out)
                }
                Err(e) => self.fault(s, &f, e.clone(), inp, out),
            },
            FrameKind::Wait { fired: true } => {
                let then = self.task_of(&f).and_then(|t| t.base.then.clone());
                self.complete(s, &f, f.input.clone(), then, inp, out)
            }
            FrameKind::Listen { .. } => self.listen_step(s, &f, inp, out),
            FrameKind::Child {
                result: Some(r), ..
            } => match r {
                Ok(v) => {
                    let then = self.task_of(&f).and_then(|t| t.base.then.clone());
                    self.complete(s, &f, v.clone(), then, inp, out)
                }
                Err(e) => self.fault(s, &f, e.clone(), inp, out),
            },
            _ => {}
        }
    }

    // ----- lookups and variables -------------------------------------------------------------

    /// The task list at a JSON pointer such as `/do`, `/do/0/a/try`, `/do/1/b/fork/branches`,
    /// or inside a task of `use.functions` (a compensation): `/use/functions/refund/do`.
    pub fn list_at(&self, ptr: &str) -> Option<&TaskList> {
        let segs: Vec<String> = ptr.split('/').skip(1).map(unescape_pointer).collect();
        let mut it = segs.iter().map(String::as_str);
        let mut list = match it.next()? {
            "do" => &self.def.do_,
            "use" => {
                if it.next()? != "functions" {
                    return None;
                }
                let task = self.function(it.next()?)?;
                sublist(task, &mut it)?
            }
            _ => return None,
        };
        loop {
            let Some(idx) = it.next() else {
                return Some(list);
            };
            let idx: usize = idx.parse().ok()?;
            let name = it.next()?;
            let nt = list.0.get(idx)?;
            if nt.name != name {
                return None;
            }
            list = sublist(&nt.task, &mut it)?;
        }
    }

    /// The task of `use.functions` named `name`.
    fn function(&self, name: &str) -> Option<&Task> {
        self.def.use_.as_ref()?.functions.as_ref()?.get(name)
    }

    /// The task an activation runs.
    fn task_of(&self, f: &Frame) -> Option<&Task> {
        if let Some(name) = f.position.strip_prefix("/use/functions/") {
            if !name.contains('/') {
                return self.function(&unescape_pointer(name));
            }
        }
        let (list, rest) = f.position.rsplit_once('/')?;
        let (list, idx) = list.rsplit_once('/')?;
        let idx: usize = idx.parse().ok()?;
        let nt = self.list_at(list)?.0.get(idx)?;
        (nt.name == unescape_pointer(rest)).then_some(&nt.task)
    }

    fn duration_ms(&self, d: &Duration, input: &Value, vars: &Vars) -> Result<u64, WorkflowError> {
        match d {
            Duration::Inline(i) => Ok(crate::duration::inline_millis(i)),
            Duration::Text(t) if expr::is_expression(t) => match expr::eval_string(t, input, vars)?
            {
                Value::String(iso) => crate::duration::iso8601_millis(&iso)
                    .map_err(|e| WorkflowError::new(ErrorKind::Validation, e.to_string())),
                Value::Number(n) => Ok(n.as_u64().unwrap_or(0)),
                Value::Object(o) => {
                    let inline: dsl::DurationInline = serde_json::from_value(Value::Object(o))
                        .map_err(|e| {
                            WorkflowError::new(
                                ErrorKind::Validation,
                                format!("invalid duration: {e}"),
                            )
                        })?;
                    Ok(crate::duration::inline_millis(&inline))
                }
                other => Err(WorkflowError::new(
                    ErrorKind::Validation,
                    format!("a duration expression must yield an ISO 8601 string, got {other}"),
                )),
            },
            Duration::Text(t) => crate::duration::iso8601_millis(t)
                .map_err(|e| WorkflowError::new(ErrorKind::Validation, e.to_string())),
        }
    }

    fn timeout_ms(
        &self,
        t: &TimeoutOrRef,
        input: &Value,
        vars: &Vars,
    ) -> Result<u64, WorkflowError> {
        match t {
            TimeoutOrRef::Inline(t) => self.duration_ms(&t.after, input, vars),
            TimeoutOrRef::Ref(name) => {
                let t = self
                    .def
                    .use_
                    .as_ref()
                    .and_then(|u| u.timeouts.as_ref())
                    .and_then(|m| m.get(name))
                    .ok_or_else(|| {
                        WorkflowError::new(
                            ErrorKind::Configuration,
                            format!("timeout `{name}` is not defined in use.timeouts"),
                        )
                    })?;
                self.duration_ms(&t.after, input, vars)
            }
        }
    }
}

/// The list a task holds under the pointer segments that follow it (`do`, `try`,
/// `catch/do`, `fork/branches`).
fn sublist<'t, 'p>(task: &'t Task, it: &mut impl Iterator<Item = &'p str>) -> Option<&'t TaskList> {
    Some(match (&task.kind, it.next()?) {
        (TaskKind::Do(l), "do") => l,
        (TaskKind::For(f), "do") => &f.do_,
        (TaskKind::Try(t), "try") => &t.try_,
        (TaskKind::Try(t), "catch") => {
            if it.next()? != "do" {
                return None;
            }
            t.catch.do_.as_ref()?
        }
        (TaskKind::Fork(f), "fork") => {
            if it.next()? != "branches" {
                return None;
            }
            &f.branches
        }
        _ => return None,
    })
}

fn not_supported(what: &str, position: &str) -> WorkflowError {
    WorkflowError::new(
        ErrorKind::Runtime,
        format!("{what} is not supported yet (task {position})"),
    )
    .with_title("Not supported")
    .with_status(501)
}

/// `output.as`, `input.from`, `export.as`: a string is an expression (with or without `${ }`),
/// an object has expressions inside.
fn eval_as(v: &Value, input: &Value, vars: &Vars) -> Result<Value, expr::ExprError> {
    match v {
        Value::String(src) => expr::eval_bare(src, input, vars),
        other => expr::eval_value(other, input, vars),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Escapes a task name for use in a JSON pointer (RFC 6901).
pub fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn unescape_pointer(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn uuid_from(inp: &mut DecideInput<'_>) -> String {
    let a = (inp.entropy)();
    let b = (inp.entropy)();
    // Version 4, variant 1 layout.
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}
