//! A deterministic simulator of the world around the decider.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use cairn_core::decider::{DecideInput, Decider};
use cairn_core::dsl::{self, Workflow};
use cairn_core::events::{ActivityCall, DefinitionRef, RunEvent};
use cairn_core::replay::{Batch, Deciders};
use cairn_core::state::{RunState, RunStatus};
use cairn_core::WorkflowError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// One fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub workflow: Value,
    #[serde(default)]
    pub input: Value,
    /// Results of `call: NAME` by function name, consumed in order; `{error: {...}}` fails.
    #[serde(default)]
    pub functions: HashMap<String, Vec<Value>>,
    /// Results of HTTP calls by `METHOD URI`, consumed in order.
    #[serde(default)]
    pub http: HashMap<String, Vec<Value>>,
    /// Events delivered, one whenever the run waits on nothing else.
    #[serde(default)]
    pub events: Vec<Value>,
    /// Results of sub-workflows by `namespace/name`.
    #[serde(default)]
    pub children: HashMap<String, Value>,
    #[serde(default)]
    pub secrets: Map<String, Value>,
    pub expect: Expect,
    #[serde(skip)]
    pub def: Option<Arc<Workflow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub output: Option<Value>,
    /// Subset of the error's fields.
    #[serde(default)]
    pub error: Option<Value>,
    /// Task positions started, in order (a prefix check when `tasks_prefix`).
    #[serde(default)]
    pub tasks: Option<Vec<String>>,
    /// Requests the run made, in order (HTTP requests and function arguments).
    #[serde(default)]
    pub calls: Option<Vec<Value>>,
    /// Expected total simulated time in ms (timers).
    #[serde(default)]
    pub elapsed_ms: Option<i64>,
    /// Subset of the final `$context`.
    #[serde(default)]
    pub context: Option<Value>,
    /// The run's final status label, when not completed or faulted (`compensated`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// The compensations that faulted, by name, in the order they ran.
    #[serde(default)]
    pub failed_compensations: Option<Vec<String>>,
}

/// A recorded run: its events and the inputs of every decision.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recorded {
    pub events: Vec<RunEvent>,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Decision {
    /// Number of events folded before deciding.
    pub after: usize,
    pub now: i64,
    pub entropy: Vec<u64>,
    /// Number of events the decision produced.
    pub produced: usize,
}

impl Case {
    pub fn read(path: &Path) -> Result<Case, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Case::parse(&text)
    }

    /// A case from its YAML text.
    pub fn parse(text: &str) -> Result<Case, String> {
        let mut c: Case = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let src = serde_json::to_string(&c.workflow).map_err(|e| e.to_string())?;
        let def = dsl::load_str(&src, dsl::SourceFormat::Json).map_err(|e| e.to_string())?;
        c.def = Some(Arc::new(def));
        Ok(c)
    }

    pub fn check(&self, rec: &Recorded) -> Result<(), String> {
        let s = RunState::from_events(&rec.events);
        if let Some(o) = &self.expect.output {
            if s.status != RunStatus::Completed {
                return Err(format!(
                    "expected completion with {o}, got {:?} {:?}",
                    s.status, s.error
                ));
            }
            if s.output.as_ref() != Some(o) {
                return Err(format!(
                    "output: expected {o}, got {}",
                    s.output.clone().unwrap_or_default()
                ));
            }
        }
        if let Some(want) = &self.expect.status {
            if s.status_label() != want {
                return Err(format!(
                    "status: expected {want}, got {} {:?}",
                    s.status_label(),
                    s.error
                ));
            }
        }
        if let Some(want) = &self.expect.failed_compensations {
            let have: Vec<String> = s
                .compensation
                .iter()
                .flat_map(|c| c.failed.iter().map(|f| f.compensation.clone()))
                .collect();
            if &have != want {
                return Err(format!(
                    "failed compensations: expected {want:?}, got {have:?}"
                ));
            }
        }
        if let Some(e) = &self.expect.error {
            if s.status != RunStatus::Faulted && self.expect.status.is_none() {
                return Err(format!(
                    "expected a fault {e}, got {:?} output {:?}",
                    s.status, s.output
                ));
            }
            let have = s.error.as_ref().map(|e| e.to_value()).unwrap_or_default();
            for (k, v) in e.as_object().into_iter().flatten() {
                if have.get(k) != Some(v) {
                    return Err(format!(
                        "error.{k}: expected {v}, got {:?} (error {have})",
                        have.get(k)
                    ));
                }
            }
        }
        if let Some(tasks) = &self.expect.tasks {
            let started: Vec<String> = rec
                .events
                .iter()
                .filter_map(|e| match e {
                    RunEvent::TaskStarted { position, .. } => Some(position.clone()),
                    _ => None,
                })
                .collect();
            if &started != tasks {
                return Err(format!("tasks: expected {tasks:?}, got {started:?}"));
            }
        }
        if let Some(calls) = &self.expect.calls {
            let made: Vec<Value> = rec
                .events
                .iter()
                .filter_map(|e| match e {
                    RunEvent::ActivityScheduled { call, .. } => {
                        Some(serde_json::to_value(call).unwrap())
                    }
                    _ => None,
                })
                .collect();
            if made.len() != calls.len() {
                return Err(format!(
                    "calls: expected {} calls, got {}: {made:?}",
                    calls.len(),
                    made.len()
                ));
            }
            for (want, have) in calls.iter().zip(&made) {
                if !subset(want, have) {
                    return Err(format!("call: expected (subset) {want}, got {have}"));
                }
            }
        }
        if let Some(ms) = self.expect.elapsed_ms {
            let end = s.updated_at - T0;
            if end != ms {
                return Err(format!("elapsed: expected {ms} ms, got {end} ms"));
            }
        }
        if let Some(c) = &self.expect.context {
            if !subset(c, &s.context) {
                return Err(format!("context: expected (subset) {c}, got {}", s.context));
            }
        }
        Ok(())
    }
}

pub fn subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|x| subset(v, x))),
        _ => want == have,
    }
}

fn start(case: &Case) -> RunEvent {
    let def = case.def.as_ref().unwrap();
    Decider::start(
        "run-1",
        DefinitionRef {
            namespace: def.document.namespace.clone(),
            name: def.document.name.clone(),
            version: def.document.version.clone(),
            hash: "fixture".into(),
        },
        case.input.clone(),
        T0,
        None,
        None,
    )
}

/// Runs the case to its end.
pub fn simulate(case: &Case) -> Result<Recorded, String> {
    let decider = Decider::new(case.def.clone().unwrap());
    let mut state = RunState::default();
    let mut events = vec![start(case)];
    state.apply(&events[0]);
    let mut decisions = Vec::new();
    let mut now = T0;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut functions: HashMap<String, VecDeque<Value>> = case
        .functions
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
        .collect();
    let mut http: HashMap<String, VecDeque<Value>> = case
        .http
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
        .collect();
    let mut inbox: VecDeque<Value> = case.events.iter().cloned().collect();
    for _round in 0..10_000 {
        let mut drawn = Vec::new();
        let mut entropy = || {
            // splitmix64: reproducible, and recorded anyway.
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let v = z ^ (z >> 31);
            drawn.push(v);
            v
        };
        let mut inp = DecideInput {
            now,
            secrets: &case.secrets,
            entropy: &mut entropy,
        };
        let new = decider.decide(&state, &mut inp);
        decisions.push(Decision {
            after: events.len(),
            now,
            entropy: drawn,
            produced: new.len(),
        });
        for e in new {
            state.apply(&e);
            events.push(e);
        }
        if state.status.is_terminal() {
            return Ok(Recorded { events, decisions });
        }
        // The outside world answers one thing at a time.
        let fact = if let Some(a) = state.pending_activities().into_iter().next() {
            let result = match &a.call {
                ActivityCall::Function { name, .. } => functions
                    .get_mut(name)
                    .and_then(|q| q.pop_front())
                    .ok_or_else(|| format!("no result left for function {name}"))?,
                ActivityCall::OpenApi(r) => {
                    let key = format!("openapi {}", r.operation_id);
                    http.get_mut(&key)
                        .and_then(|q| q.pop_front())
                        .ok_or_else(|| format!("no result left for {key}"))?
                }
                ActivityCall::Http(r) => {
                    let key = format!("{} {}", r.method, r.uri);
                    http.get_mut(&key)
                        .and_then(|q| q.pop_front())
                        .ok_or_else(|| format!("no result left for {key}"))?
                }
            };
            match result.get("error") {
                Some(err) if result.as_object().is_some_and(|o| o.len() == 1) => {
                    let error: WorkflowError =
                        serde_json::from_value(err.clone()).map_err(|e| e.to_string())?;
                    RunEvent::ActivityFailed {
                        id: a.frame,
                        error,
                        at: now,
                    }
                }
                _ => RunEvent::ActivityCompleted {
                    id: a.frame,
                    result,
                    at: now,
                },
            }
        } else if let Some(c) = state.pending_children().into_iter().next() {
            let key = events
                .iter()
                .find_map(|e| match e {
                    RunEvent::ChildRunRequested {
                        id,
                        namespace,
                        name,
                        ..
                    } if *id == c.frame => Some(format!("{namespace}/{name}")),
                    _ => None,
                })
                .unwrap_or_default();
            let r = case
                .children
                .get(&key)
                .cloned()
                .ok_or_else(|| format!("no child result for {key}"))?;
            let result = match r.get("error") {
                Some(err) => Err(serde_json::from_value(err.clone()).map_err(|e| e.to_string())?),
                None => Ok(r),
            };
            RunEvent::ChildRunFinished {
                id: c.frame,
                result,
            }
        } else if let Some(e) = inbox.pop_front() {
            RunEvent::EventReceived { event: e, at: now }
        } else if let Some((timer, due)) = state.next_timer() {
            now = now.max(due);
            RunEvent::TimerFired { timer, at: now }
        } else {
            return Err(format!(
                "stuck: nothing to wait for; state {:?}",
                state.status
            ));
        };
        state.apply(&fact);
        events.push(fact);
    }
    Err("did not end within 10000 rounds".into())
}

/// Replays a recorded history through the runtime's replayer ([`cairn_core::replay`]): the
/// decision points, their times and what each produced are the ones recorded here.
pub fn replay(case: &Case, rec: &Recorded) -> Result<(), String> {
    let decider = Decider::new(case.def.clone().unwrap());
    let batches = rec.batches()?;
    let report = cairn_core::replay::replay(&batches, Deciders::One(&decider), &case.secrets)
        .map_err(|e| e.to_string())?;
    match report.divergence {
        None => Ok(()),
        Some(d) => Err(format!(
            "{d}\n  recorded: {}\n  new:      {}",
            d.recorded
                .as_ref()
                .map(|x| x.event.to_string())
                .unwrap_or_default(),
            d.new
                .as_ref()
                .map(|x| x.event.to_string())
                .unwrap_or_default(),
        )),
    }
}

impl Recorded {
    /// The appends of this history: the facts before each decision point, then what it
    /// produced, at its time.
    pub fn batches(&self) -> Result<Vec<Batch>, String> {
        let mut out = Vec::new();
        let mut from = 0;
        for d in &self.decisions {
            let end = d.after + d.produced;
            if d.after < from || end > self.events.len() {
                return Err(format!("decision after {} is outside the history", d.after));
            }
            out.push(Batch {
                now: d.now,
                events: self.events[from..end].to_vec(),
            });
            from = end;
        }
        if from < self.events.len() {
            out.push(Batch {
                now: self.decisions.last().map_or(T0, |d| d.now),
                events: self.events[from..].to_vec(),
            });
        }
        Ok(out)
    }
}
