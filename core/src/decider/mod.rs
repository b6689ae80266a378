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

    fn run_faulted(s: &mut RunState, out: &mut Out, error: WorkflowError, at: Millis) {
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

    // ----- lists -----------------------------------------------------------------------------

    fn advance(
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
            Next::End => self.end_workflow(s, seq.data.clone(), inp, out),
        }
    }

    fn list_finished(
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

    fn end_workflow(
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
    fn start_task(
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
        let task = &named.task;
        let mut vars = self.scope_vars(s, parent);
        vars.extend(self.base_vars(s, &raw_input, inp));
        vars.insert(
            "task".into(),
            json!({
                "name": named.name,
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
            name: named.name.clone(),
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
                let what = format!("the input of task {}", named.name);
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
    fn begin(
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

    fn begin_call(
        &self,
        s: &mut RunState,
        f: &Frame,
        call: &CallTask,
        vars: &Vars,
        inp: &mut DecideInput<'_>,
        out: &mut Out,
    ) -> Result<(), WorkflowError> {
        let activity = if self.call_mentions_secrets(f) {
            self.sealed_call(f, call, vars, inp)?
        } else {
            self.build_call(f, call, vars)?
        };
        let attempt = self.attempt_of(s, f.parent);
        let idempotency_key = format!("{}:{}:{}", s.run_id, f.id, attempt);
        Self::emit(
            s,
            out,
            RunEvent::ActivityScheduled {
                id: f.id,
                attempt,
                idempotency_key,
                call: activity,
            },
        );
        Ok(())
    }

    /// Whether a call task's arguments, or the authentication it refers to, may read
    /// `$secrets` (a task's position is its JSON pointer in the definition).
    fn call_mentions_secrets(&self, f: &Frame) -> bool {
        self.auths_mention_secrets
            || self
                .def_value
                .pointer(&f.position)
                .is_none_or(|task| sealed::mentions_secrets(&task.to_string()))
    }

    /// A call whose arguments read `$secrets`, built so that no secret value is recorded
    /// ([`crate::sealed`]): the arguments are built once with placeholders for the secrets
    /// (what is recorded) and once with their values (to check that revealing the placeholders
    /// gives exactly that). A secret transformed by an expression cannot be revealed later, so
    /// the call faults instead of recording the transformed value. Errors come from the
    /// placeholder build, which holds no secret, never from the real one.
    fn sealed_call(
        &self,
        f: &Frame,
        call: &CallTask,
        vars: &Vars,
        inp: &mut DecideInput<'_>,
    ) -> Result<ActivityCall, WorkflowError> {
        let seal = sealed::seal_from((inp.entropy)());
        let mut masked_vars = vars.clone();
        masked_vars.insert(
            "secrets".into(),
            Value::Object(sealed::placeholders(inp.secrets, &seal)),
        );
        let mut masked = self.build_call(f, call, &masked_vars)?;
        let real = self.build_call(f, call, vars).map_err(|_| {
            WorkflowError::new(
                ErrorKind::Expression,
                "building the call's arguments with the values of the secrets failed (the \
                 message is withheld: it could quote a secret)",
            )
            .with_title("Secret used in an unsupported way")
        })?;
        if masked == real {
            // The secrets it mentions do not reach the arguments.
            return Ok(real);
        }
        match &mut masked {
            ActivityCall::Http(r) => r.seal = Some(seal.clone()),
            ActivityCall::OpenApi(r) => r.seal = Some(seal.clone()),
            ActivityCall::Function { seal: sl, .. } => *sl = Some(seal.clone()),
        }
        let revealed = sealed::Revealer::new(Some(&seal), inp.secrets).call(&masked);
        if revealed.as_ref() != Ok(&real) {
            return Err(WorkflowError::new(
                ErrorKind::Configuration,
                "an argument of this call is derived from $secrets by an expression that \
                 changes the secret (e.g. ascii_downcase, length, @base64, a comparison); \
                 secret values are never recorded, so they can only be used as they are: \
                 as a whole value, or inserted into a string",
            )
            .with_title("Secret used in an unsupported way"));
        }
        Ok(masked)
    }

    fn build_call(
        &self,
        f: &Frame,
        call: &CallTask,
        vars: &Vars,
    ) -> Result<ActivityCall, WorkflowError> {
        Ok(match call {
            CallTask::Http(args) => ActivityCall::Http(self.http_request(args, &f.input, vars)?),
            CallTask::OpenApi(args) => {
                let raw_uri = args.document.endpoint.uri();
                let document = match expr::eval_string(raw_uri, &f.input, vars)? {
                    Value::String(u) => u,
                    other => {
                        return Err(WorkflowError::new(
                            ErrorKind::Expression,
                            format!("openapi document expression must yield a string, got {other}"),
                        ))
                    }
                };
                let parameters = match &args.parameters {
                    Some(p) => expr::eval_value(&Value::Object(p.clone()), &f.input, vars)?,
                    None => Value::Object(Map::new()),
                };
                let auth = match args
                    .authentication
                    .as_ref()
                    .or(args.document.endpoint.authentication())
                {
                    Some(a) => Some(self.http_auth(a, &f.input, vars)?),
                    None => None,
                };
                ActivityCall::OpenApi(crate::events::OpenApiRequest {
                    document,
                    operation_id: args.operation_id.clone(),
                    parameters,
                    output: args.output.unwrap_or_default(),
                    redirect: args.redirect.unwrap_or(false),
                    auth,
                    seal: None,
                })
            }
            CallTask::Function { name, with } => {
                if self
                    .def
                    .use_
                    .as_ref()
                    .and_then(|u| u.functions.as_ref())
                    .is_some_and(|m| m.contains_key(name))
                {
                    return Err(not_supported("functions from use.functions", &f.position));
                }
                if name.contains('@') {
                    return Err(not_supported("functions from catalogs", &f.position));
                }
                let arguments = match with {
                    Some(w) => expr::eval_value(&Value::Object(w.clone()), &f.input, vars)?,
                    None => Value::Object(Map::new()),
                };
                ActivityCall::Function {
                    name: name.clone(),
                    arguments,
                    input: f.input.clone(),
                    seal: None,
                }
            }
            other => {
                return Err(not_supported(
                    &format!("call: {}", other.name()),
                    &f.position,
                ))
            }
        })
    }

    /// A sub-workflow's input. It is recorded twice (`ChildRunRequested`, the child's
    /// `RunStarted`) and the child is a run of its own, so it may not carry anything derived
    /// from `$secrets`: the child reads `$secrets` itself. Checked by evaluating it with
    /// placeholders for the secrets, which must give the same input.
    fn child_input(
        &self,
        input_expr: &Value,
        task_input: &Value,
        vars: &Vars,
        inp: &DecideInput<'_>,
    ) -> Result<Value, WorkflowError> {
        if !sealed::mentions_secrets(&input_expr.to_string()) {
            return Ok(expr::eval_value(input_expr, task_input, vars)?);
        }
        // Nothing sealed is recorded here, so any seal does.
        let seal = sealed::seal_from(0);
        let mut masked_vars = vars.clone();
        masked_vars.insert(
            "secrets".into(),
            Value::Object(sealed::placeholders(inp.secrets, &seal)),
        );
        let masked = expr::eval_value(input_expr, task_input, &masked_vars)?;
        let real = expr::eval_value(input_expr, task_input, vars).ok();
        if sealed::value_has_placeholder(&masked, &seal) || real.as_ref() != Some(&masked) {
            return Err(WorkflowError::new(
                ErrorKind::Configuration,
                "the input of a sub-workflow must not be derived from $secrets: it is \
                 recorded in both runs' histories, which secrets never enter; the \
                 sub-workflow can read $secrets itself",
            )
            .with_title("Secret used in an unsupported way"));
        }
        Ok(masked)
    }

    fn http_request(
        &self,
        args: &dsl::HttpArgs,
        input: &Value,
        vars: &Vars,
    ) -> Result<HttpRequest, WorkflowError> {
        let raw_uri = args.endpoint.uri();
        let uri = if expr::is_expression(raw_uri) {
            match expr::eval_string(raw_uri, input, vars)? {
                Value::String(u) => u,
                other => {
                    return Err(WorkflowError::new(
                        ErrorKind::Expression,
                        format!("endpoint expression must yield a string, got {other}"),
                    ))
                }
            }
        } else {
            crate::uri::expand_template(raw_uri, input).map_err(|e| {
                WorkflowError::new(
                    ErrorKind::Configuration,
                    format!("endpoint `{raw_uri}`: {e}"),
                )
            })?
        };
        let pairs =
            |v: &Option<Value>, what: &str| -> Result<Vec<(String, String)>, WorkflowError> {
                let Some(v) = v else { return Ok(Vec::new()) };
                let v = match v {
                    Value::String(src) => expr::eval_bare(src, input, vars)?,
                    other => expr::eval_value(other, input, vars)?,
                };
                match v {
                    Value::Object(o) => Ok(o
                        .into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k, scalar_text(&v)))
                        .collect()),
                    Value::Null => Ok(Vec::new()),
                    other => Err(WorkflowError::new(
                        ErrorKind::Expression,
                        format!("{what} must be an object, got {other}"),
                    )),
                }
            };
        let headers = pairs(&args.headers, "headers")?;
        let query = pairs(&args.query, "query")?;
        let body = match &args.body {
            Some(b) => Some(expr::eval_value(b, input, vars)?),
            None => None,
        };
        let auth = match args.endpoint.authentication() {
            Some(a) => Some(self.http_auth(a, input, vars)?),
            None => None,
        };
        Ok(HttpRequest {
            method: args.method.to_uppercase(),
            uri,
            headers,
            query,
            body,
            output: args.output.unwrap_or_default(),
            redirect: args.redirect.unwrap_or(false),
            auth,
            seal: None,
        })
    }

    fn http_auth(
        &self,
        a: &AuthenticationPolicy,
        input: &Value,
        vars: &Vars,
    ) -> Result<HttpAuth, WorkflowError> {
        let policy = match &a.use_ {
            Some(name) => self
                .def
                .use_
                .as_ref()
                .and_then(|u| u.authentications.as_ref())
                .and_then(|m| m.get(name))
                .ok_or_else(|| {
                    WorkflowError::new(
                        ErrorKind::Configuration,
                        format!("authentication `{name}` is not defined in use.authentications"),
                    )
                })?,
            None => a,
        };
        let text = |v: &Option<String>| -> Result<String, WorkflowError> {
            match v {
                Some(s) => Ok(scalar_text(&expr::eval_string(s, input, vars)?)),
                None => Ok(String::new()),
            }
        };
        if let Some(b) = &policy.basic {
            return Ok(match &b.use_ {
                Some(secret) => HttpAuth::BasicSecret {
                    secret: secret.clone(),
                },
                None => HttpAuth::Basic {
                    username: text(&b.username)?,
                    password: text(&b.password)?,
                },
            });
        }
        if let Some(b) = &policy.bearer {
            return Ok(match &b.use_ {
                Some(secret) => HttpAuth::BearerSecret {
                    secret: secret.clone(),
                },
                None => HttpAuth::Bearer {
                    token: text(&b.token)?,
                },
            });
        }
        let scheme = if policy.digest.is_some() {
            "digest"
        } else if policy.oauth2.is_some() {
            "oauth2"
        } else if policy.oidc.is_some() {
            "oidc"
        } else {
            "empty"
        };
        Err(WorkflowError::new(
            ErrorKind::Configuration,
            format!("{scheme} authentication is not supported yet"),
        )
        .with_title("Not supported"))
    }

    fn raise_error(
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

    /// Records a task's completion: `output.as`, then `export.as`.
    fn complete(
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
        match r {
            Ok((output, context)) => Self::emit(
                s,
                out,
                RunEvent::TaskCompleted {
                    id: f.id,
                    output,
                    context,
                    then: then.map(|t| directive_text(&t)),
                    at: inp.now,
                },
            ),
            Err(e) => self.fault(s, f, e, inp, out),
        }
    }

    fn fault(
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

    fn handle_child_error(
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

    fn catch(
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

    /// The delay before the next attempt, or `None` when the policy says not to retry.
    fn retry_delay(
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
    fn attempt_of(&self, s: &RunState, mut id: FrameId) -> u32 {
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

    // ----- for, fork, listen -----------------------------------------------------------------

    fn next_iteration(
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

    fn fork_step(
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

    fn listen_step(&self, s: &mut RunState, f: &Frame, inp: &mut DecideInput<'_>, out: &mut Out) {
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

    // ----- lookups and variables -------------------------------------------------------------

    /// The task list at a JSON pointer such as `/do`, `/do/0/a/try`, `/do/1/b/fork/branches`.
    pub fn list_at(&self, ptr: &str) -> Option<&TaskList> {
        let segs: Vec<String> = ptr.split('/').skip(1).map(unescape_pointer).collect();
        let mut it = segs.iter().map(String::as_str);
        if it.next()? != "do" {
            return None;
        }
        let mut list = &self.def.do_;
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
            list = match (&nt.task.kind, it.next()?) {
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
            };
        }
    }

    /// The task an activation runs.
    fn task_of(&self, f: &Frame) -> Option<&Task> {
        let (list, rest) = f.position.rsplit_once('/')?;
        let (list, idx) = list.rsplit_once('/')?;
        let idx: usize = idx.parse().ok()?;
        let nt = self.list_at(list)?.0.get(idx)?;
        (nt.name == unescape_pointer(rest)).then_some(&nt.task)
    }

    /// Variables introduced by the activation `id` and its ancestors (nearest wins).
    fn scope_vars(&self, s: &RunState, mut id: FrameId) -> Vars {
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
    fn base_vars(&self, s: &RunState, input: &Value, inp: &DecideInput<'_>) -> Vars {
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
    fn frame_vars(&self, s: &RunState, f: &Frame, input: &Value, inp: &DecideInput<'_>) -> Vars {
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

fn directive_text(d: &FlowDirective) -> String {
    match d {
        FlowDirective::Continue => "continue".into(),
        FlowDirective::Exit => "exit".into(),
        FlowDirective::End => "end".into(),
        FlowDirective::Goto(t) => t.clone(),
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

/// The spec's date-time descriptor of a time.
pub fn datetime(ms: Millis) -> Value {
    json!({
        "iso8601": iso8601(ms),
        "epoch": { "seconds": ms.div_euclid(1000), "milliseconds": ms },
    })
}

/// RFC 3339 text of a time in UTC with milliseconds, e.g. `2026-11-27T16:22:10.123Z`.
pub fn iso8601(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant), valid for the whole i64 range we can meet.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
