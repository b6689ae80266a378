//! Replaying a run: its recorded history against a decider, decision by decision.
//!
//! A history holds two kinds of events ([`is_fact`]). Facts came from outside the decider: the
//! run's start, call results, timers fired, events and sub-workflow results received, an
//! operator's suspend, resume, retry, cancel or migration. They are fed in as recorded.
//! Decisions are what the decider produced after them. At every point where the engine decided,
//! the replayer asks the decider again, from the state folded up to that point and at the time
//! the engine decided then, and compares what it decides with what was recorded, in order. The
//! first difference is the divergence ([`Divergence`]); a point where the engine decided
//! nothing is a decision too (the new version must not start something there).
//!
//! What is not deterministic is handled so that a run replays on its own definition:
//! - time: each [`Batch`] carries the `now` the engine decided with (the runtime keeps it in
//!   every event's metadata, `recorded_at`);
//! - random values (the seal of a call's secret placeholders, the generated ids of emitted
//!   events and child runs, a retry's jitter) are not recorded as such, but they show in the
//!   decisions they went into: the replayer finds which decision each draw shows in (by
//!   changing that draw alone) and draws the value that gives the recorded one (the seal, the
//!   UUID's bits, the recorded delay minus the jitter's lower bound). A new version whose
//!   range of jitter does not hold the recorded delay diverges there;
//! - idempotency keys are derived from the run id, the activation and the attempt, so they are
//!   reproduced as they are.
//!
//! A [`RunEvent::RunMigrated`] switches the decider when replaying each part of a history on the
//! version that decided it ([`Deciders::Recorded`]).
//!
//! The replayer errs on the safe side: a difference it cannot explain is a divergence.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::decider::{DecideInput, Decider, Decision};
use crate::events::{ActivityCall, Millis, RunEvent};
use crate::state::RunState;

/// What one append of a run recorded: facts from outside, then the decisions the engine took
/// at `now` (none when the decider had nothing to do).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The time the decisions were taken at.
    pub now: Millis,
    /// The events, facts first.
    pub events: Vec<RunEvent>,
}

/// A stored event with what its metadata says about the append that wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The event.
    pub event: RunEvent,
    /// The `recorded_at` of its append (the `now` the engine decided with), when known.
    pub recorded_at: Option<Millis>,
    /// Who appended it (the runtime's worker id), when known.
    pub writer: Option<String>,
}

/// Which deciders a replay asks.
#[derive(Debug, Clone, Copy)]
pub enum Deciders<'a> {
    /// This one for every decision: a determinism check, or another version.
    One(&'a Decider),
    /// Each part of the history on the version that decided it, by content hash: the one
    /// `RunStarted` names, then the one of each `RunMigrated`.
    Recorded(&'a HashMap<String, Arc<Decider>>),
}

/// A history that cannot be replayed at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The history does not begin with `RunStarted`.
    #[error("the history does not begin with RunStarted")]
    NoRunStarted,
    /// No decider was given for a version the history names.
    #[error("no definition with hash {hash} to replay with")]
    UnknownDefinition {
        /// The content hash.
        hash: String,
    },
    /// The decider panicked (a bug in Cairn).
    #[error("deciding event {sequence} again panicked: {message}")]
    Panicked {
        /// The sequence of the event being decided.
        sequence: u64,
        /// The panic's message.
        message: String,
    },
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Events in the history.
    pub events: u64,
    /// Recorded decisions reproduced before the divergence (all of them when there is none).
    pub decisions: u64,
    /// The first decision that differs; `None` when every one was reproduced.
    pub divergence: Option<Divergence>,
}

impl Report {
    /// Whether every recorded decision was reproduced.
    pub fn identical(&self) -> bool {
        self.divergence.is_none()
    }
}

/// The first decision that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Divergence {
    /// The sequence (1-based) of the recorded event; one past the last event when the history
    /// ends where the decider decides more.
    pub sequence: u64,
    /// What the history recorded there; `None` when it recorded no decision (the run waited).
    pub recorded: Option<Decided>,
    /// What the decider decides there; `None` when it decides nothing.
    pub new: Option<Decided>,
}

/// One side of a [`Divergence`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decided {
    /// The event's type name.
    pub event_type: String,
    /// The JSON pointer of the task it is about, when it is about one.
    pub task: Option<String>,
    /// The event as JSON (`{"type", "data"}`), every value written out.
    pub event: Value,
}

impl fmt::Display for Decided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.task {
            Some(t) => write!(f, "{} at {t}", self.event_type),
            None => write!(f, "{}", self.event_type),
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "diverges at event {}: recorded ", self.sequence)?;
        match &self.recorded {
            Some(d) => write!(f, "{d}")?,
            None => write!(f, "no decision (the run waited)")?,
        }
        match &self.new {
            Some(d) => write!(f, ", new version decides {d}"),
            None => write!(f, ", new version decides nothing"),
        }
    }
}

/// Whether an event is a fact from outside the decider (fed to a replay as recorded) rather
/// than a decision (compared). Every event type is named here, so a new one must be sorted.
pub fn is_fact(event: &RunEvent) -> bool {
    match event {
        RunEvent::RunStarted { .. }
        | RunEvent::ActivityCompleted { .. }
        | RunEvent::ActivityFailed { .. }
        | RunEvent::TimerFired { .. }
        | RunEvent::EventReceived { .. }
        | RunEvent::ChildRunFinished { .. }
        | RunEvent::RunSuspended { .. }
        | RunEvent::RunResumed { .. }
        | RunEvent::RunRetried { .. }
        | RunEvent::RunCancelled { .. }
        | RunEvent::RunMigrated { .. } => true,
        // A resumable fault comes from the runtime (a poison run, a panic), not from the logic.
        RunEvent::RunFaulted { resumable, .. } => *resumable,
        // Compensation begun by an operator (`cancel --compensate`) is a fact like a cancel;
        // begun by an unhandled fault, it is the decider's decision.
        RunEvent::RunCompensating { error, .. } => error.is_none(),
        RunEvent::WorkflowInputAccepted { .. }
        | RunEvent::TaskStarted { .. }
        | RunEvent::TaskSkipped { .. }
        | RunEvent::IterationStarted { .. }
        | RunEvent::ActivityScheduled { .. }
        | RunEvent::TimerScheduled { .. }
        | RunEvent::EventsConsumed { .. }
        | RunEvent::EventEmitted { .. }
        | RunEvent::RetryScheduled { .. }
        | RunEvent::TaskRetried { .. }
        | RunEvent::ErrorCaught { .. }
        | RunEvent::ChildRunRequested { .. }
        | RunEvent::TaskCompleted { .. }
        | RunEvent::TaskFaulted { .. }
        | RunEvent::TaskCancelled { .. }
        | RunEvent::RunCompleted { .. }
        | RunEvent::CompensationStarted { .. }
        | RunEvent::RunCompensated { .. } => false,
    }
}

/// Cuts stored events into the appends that wrote them. An append is facts, then decisions,
/// all with the same `recorded_at` and writer: a new batch begins where those change or a fact
/// follows a decision. Two appends that cannot be told apart (the same millisecond and writer,
/// decisions after decisions) become one batch, which replays the same way. Without metadata,
/// the time of a batch is read from its events.
pub fn batches(events: impl IntoIterator<Item = Stored>) -> Vec<Batch> {
    let mut out: Vec<(Option<Millis>, Batch)> = Vec::new();
    let mut key: Option<(Millis, Option<String>)> = None;
    let mut decided = false;
    for s in events {
        let fact = is_fact(&s.event);
        let k = s.recorded_at.map(|t| (t, s.writer.clone()));
        if out.is_empty() || k != key || (fact && decided) {
            out.push((
                s.recorded_at,
                Batch {
                    now: 0,
                    events: Vec::new(),
                },
            ));
            key = k;
            decided = false;
        }
        decided |= !fact;
        if let Some((_, b)) = out.last_mut() {
            b.events.push(s.event);
        }
    }
    let mut last = 0;
    out.into_iter()
        .map(|(known, mut b)| {
            b.now = known
                .or_else(|| time_of(b.events.iter().filter(|e| !is_fact(e))))
                .or_else(|| time_of(b.events.iter().rev()))
                .unwrap_or(last);
            last = b.now;
            b
        })
        .collect()
}

/// The first recorded time among `events`.
fn time_of<'a>(events: impl Iterator<Item = &'a RunEvent>) -> Option<Millis> {
    events
        .filter_map(|e| e.payload().get("at").and_then(Value::as_i64))
        .next()
}

/// Replays `batches` (a run's history, see [`batches`]) against `deciders`, with `secrets`
/// bound as `$secrets` (the run's own, for calls built from them to be reproduced).
pub fn replay(
    batches: &[Batch],
    deciders: Deciders<'_>,
    secrets: &Map<String, Value>,
) -> Result<Report, ReplayError> {
    let mut state = RunState::default();
    let mut seen = 0u64;
    let mut decisions = 0u64;
    let mut decider: Option<&Decider> = None;
    let total = batches.iter().map(|b| b.events.len() as u64).sum();
    for (i, batch) in batches.iter().enumerate() {
        let cut = batch
            .events
            .iter()
            .position(|e| !is_fact(e))
            .unwrap_or(batch.events.len());
        let (facts, decided) = batch.events.split_at(cut);
        for f in facts {
            if seen == 0 && !matches!(f, RunEvent::RunStarted { .. }) {
                return Err(ReplayError::NoRunStarted);
            }
            let hash = match f {
                RunEvent::RunStarted { definition, .. } => Some(&definition.hash),
                RunEvent::RunMigrated { to_hash, .. } => Some(to_hash),
                _ => None,
            };
            if let Some(h) = hash {
                decider = Some(match deciders {
                    Deciders::One(d) => d,
                    Deciders::Recorded(m) => m
                        .get(h)
                        .ok_or_else(|| ReplayError::UnknownDefinition { hash: h.clone() })?,
                });
            }
            state.apply(f);
            seen += 1;
        }
        let Some(d) = decider else {
            return Err(ReplayError::NoRunStarted);
        };
        // Decisions that run past this batch may be recorded in the next one (the engine went
        // on in another append after a batch bound).
        let continued = batches
            .get(i + 1)
            .and_then(|b| b.events.first())
            .is_some_and(|e| !is_fact(e));
        let step = Step {
            decider: d,
            now: batch.now,
            secrets,
            before: seen,
            continued,
        };
        match step.compare(&mut state, decided)? {
            Ok(n) => decisions += n,
            Err(divergence) => {
                return Ok(Report {
                    events: total,
                    decisions: decisions + divergence.sequence - seen - 1,
                    divergence: Some(divergence),
                })
            }
        }
        seen += decided.len() as u64;
    }
    Ok(Report {
        events: total,
        decisions,
        divergence: None,
    })
}

/// One decision point of a replay.
struct Step<'a> {
    decider: &'a Decider,
    now: Millis,
    secrets: &'a Map<String, Value>,
    /// Events before the first decision of the batch.
    before: u64,
    /// Whether the next batch goes on deciding.
    continued: bool,
}

impl Step<'_> {
    /// Decides again until the recorded decisions are all reproduced (their count), or the first
    /// difference. `state` ends folded over the decisions that matched.
    fn compare(
        &self,
        state: &mut RunState,
        recorded: &[RunEvent],
    ) -> Result<Result<u64, Divergence>, ReplayError> {
        let mut i = 0;
        loop {
            let got = self.decide(state, recorded, i)?;
            if got.events.is_empty() {
                if let Some(r) = recorded.get(i) {
                    return Ok(Err(self.divergence(state, i, Some(r), None)));
                }
                return Ok(Ok(i as u64));
            }
            for g in &got.events {
                let Some(r) = recorded.get(i) else {
                    if self.continued {
                        return Ok(Ok(i as u64));
                    }
                    return Ok(Err(self.divergence(state, i, None, Some(g))));
                };
                if !same(state, g, r) {
                    return Ok(Err(self.divergence(state, i, Some(r), Some(g))));
                }
                state.apply(r);
                i += 1;
            }
            if i == recorded.len() {
                // Whether or not the decider stopped at a bound, nothing more was recorded here
                // to compare with.
                return Ok(Ok(i as u64));
            }
        }
    }

    /// The decider's next batch from `state`, with its random draws taken from the recorded
    /// decisions where they show (see [`Step::solve`]), 0 elsewhere.
    fn decide(
        &self,
        state: &RunState,
        recorded: &[RunEvent],
        index: usize,
    ) -> Result<Decision, ReplayError> {
        let recorded = &recorded[index..];
        let mut draws: Vec<u64> = Vec::new();
        loop {
            let (got, drawn) = self.decide_drawing(state, &draws, index)?;
            let Some(m) = first_difference(state, &got.events, recorded) else {
                return Ok(got);
            };
            if drawn <= draws.len() {
                // No draw left to explain it: a real difference.
                return Ok(got);
            }
            // Where does the next unknown draw show first? Change it alone and look.
            let mut probe = draws.clone();
            probe.push(1);
            let (alt, _) = self.decide_drawing(state, &probe, index)?;
            let shows = got
                .events
                .iter()
                .zip(&alt.events)
                .position(|(a, b)| a != b)
                .or((got.events.len() != alt.events.len())
                    .then(|| got.events.len().min(alt.events.len())));
            if shows != Some(m) {
                // It shows elsewhere or nowhere (a seal drawn for a call whose arguments hold
                // no secret after all): keep it at 0.
                draws.push(0);
                continue;
            }
            match (got.events.get(m), recorded.get(m)) {
                (Some(g), Some(r)) => match solve(g, r) {
                    Some(values) => draws.extend(values),
                    None => return Ok(got),
                },
                _ => return Ok(got),
            }
        }
    }

    /// Decides with `draws` as the random values, in order (0 after them), and says how many
    /// were drawn.
    fn decide_drawing(
        &self,
        state: &RunState,
        draws: &[u64],
        index: usize,
    ) -> Result<(Decision, usize), ReplayError> {
        let mut drawn = 0usize;
        let mut entropy = || {
            let v = draws.get(drawn).copied().unwrap_or(0);
            drawn += 1;
            v
        };
        let mut input = DecideInput {
            now: self.now,
            secrets: self.secrets,
            entropy: &mut entropy,
        };
        let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.decider.decide_batch(state, &mut input)
        }))
        .map_err(|panic| ReplayError::Panicked {
            sequence: self.before + index as u64 + 1,
            message: panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into()),
        })?;
        Ok((decision, drawn))
    }

    fn divergence(
        &self,
        state: &RunState,
        index: usize,
        recorded: Option<&RunEvent>,
        new: Option<&RunEvent>,
    ) -> Divergence {
        Divergence {
            sequence: self.before + index as u64 + 1,
            recorded: recorded.map(|e| decided(state, e)),
            new: new.map(|e| decided(state, e)),
        }
    }
}

/// One side of a divergence, its task resolved in `state` (the state just before it).
fn decided(state: &RunState, event: &RunEvent) -> Decided {
    let explicit = state.explicit(event);
    Decided {
        event_type: event.event_type().to_string(),
        task: task_of(state, event),
        event: serde_json::to_value(&explicit).unwrap_or(Value::Null),
    }
}

/// The JSON pointer of the task an event is about.
fn task_of(state: &RunState, event: &RunEvent) -> Option<String> {
    let frame = match event {
        RunEvent::TaskStarted { position, .. } | RunEvent::TaskSkipped { position, .. } => {
            return Some(position.clone())
        }
        RunEvent::IterationStarted { id, .. }
        | RunEvent::ActivityScheduled { id, .. }
        | RunEvent::EventsConsumed { id, .. }
        | RunEvent::EventEmitted { id, .. }
        | RunEvent::RetryScheduled { id, .. }
        | RunEvent::TaskRetried { id, .. }
        | RunEvent::ErrorCaught { id, .. }
        | RunEvent::ChildRunRequested { id, .. }
        | RunEvent::TaskCompleted { id, .. }
        | RunEvent::TaskFaulted { id, .. }
        | RunEvent::TaskCancelled { id } => *id,
        RunEvent::TimerScheduled { frame, .. } => *frame,
        _ => return None,
    };
    state
        .frames
        .get(&frame)
        .map(|f| f.position.clone())
        .filter(|p| !p.is_empty())
}

/// Whether the decider's `new` event is the recorded `rec`, by meaning: both written out as
/// `state` (the state just before them) reads them, so histories of any event version compare.
fn same(state: &RunState, new: &RunEvent, rec: &RunEvent) -> bool {
    new == rec || state.explicit(new) == state.explicit(rec)
}

/// The index of the first of `got` that differs from `recorded` (both from `state`), if any
/// within the shorter of the two.
fn first_difference(state: &RunState, got: &[RunEvent], recorded: &[RunEvent]) -> Option<usize> {
    let mut st = state.clone();
    for (i, (g, r)) in got.iter().zip(recorded).enumerate() {
        if !same(&st, g, r) {
            return Some(i);
        }
        st.apply(r);
    }
    None
}

/// The random values that make the decider's `got` (decided with the draw that shows in it at
/// 0) into the recorded `rec`, when `rec` is the same kind of decision: a call's seal, a
/// generated event or child run id (two draws), a retry's jitter.
fn solve(got: &RunEvent, rec: &RunEvent) -> Option<Vec<u64>> {
    match (got, rec) {
        (RunEvent::ActivityScheduled { .. }, RunEvent::ActivityScheduled { call, .. }) => {
            u64::from_str_radix(seal_of(call)?, 16)
                .ok()
                .map(|v| vec![v])
        }
        (RunEvent::EventEmitted { .. }, RunEvent::EventEmitted { event, .. }) => {
            uuid_draws(event.get("id")?.as_str()?)
        }
        (RunEvent::ChildRunRequested { .. }, RunEvent::ChildRunRequested { child_run_id, .. }) => {
            uuid_draws(child_run_id)
        }
        (
            RunEvent::RetryScheduled { delay_ms: gd, .. },
            RunEvent::RetryScheduled { delay_ms: rd, .. },
        ) => {
            // A draw of 0 adds the jitter's lower bound; a draw of the difference adds exactly
            // the recorded jitter, if the new version's range allows it.
            rd.checked_sub(*gd).map(|v| vec![v])
        }
        _ => None,
    }
}

/// The two draws the decider turns into this UUID (its version and variant bits are kept, and
/// the decider sets them again to the same values).
fn uuid_draws(uuid: &str) -> Option<Vec<u64>> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    if uuid.len() != 36 || hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let a = u64::from_str_radix(&hex[..16], 16).ok()?;
    let b = u64::from_str_radix(&hex[16..], 16).ok()?;
    Some(vec![a, b])
}

fn seal_of(call: &ActivityCall) -> Option<&str> {
    match call {
        ActivityCall::Http(r) => r.seal.as_deref(),
        ActivityCall::OpenApi(r) => r.seal.as_deref(),
        ActivityCall::Function { seal, .. } => seal.as_deref(),
    }
}
