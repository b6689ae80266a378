//! Compensation (docs/compensation.md) where a fixture cannot say it: cancelling with and
//! without `compensate`, what a call in flight becomes, keys, suspension, validation and the
//! state through a snapshot.

use std::sync::Arc;

use cairn_core::decider::{DecideInput, Decider};
use cairn_core::dsl;
use cairn_core::events::{DefinitionRef, RunEvent};
use cairn_core::state::{RunState, RunStatus};
use serde_json::{json, Map, Value};

const SAGA: &str = r#"
document: {dsl: '1.0.3', namespace: t, name: saga, version: '1.0.0'}
use:
  functions:
    release:
      call: releaseStock
      with: {reservation: '${ .output.id }'}
    refund:
      call: refundPayment
      with: {charge: '${ .output.id }', reservation: '${ .input.id }', task: '${ .task.reference }'}
do:
  - reserve:
      call: reserveStock
      metadata: {cairn.compensate: release}
  - charge:
      call: chargePayment
      with: {amount: '${ .amount }'}
      metadata: {cairn.compensate: refund}
  - ship:
      call: ship
"#;

struct Run {
    decider: Decider,
    state: RunState,
    events: Vec<RunEvent>,
    now: i64,
}

impl Run {
    fn start(src: &str, input: Value) -> Run {
        let def = dsl::load_str(src, dsl::SourceFormat::Yaml).expect("valid definition");
        let decider = Decider::new(Arc::new(def));
        let first = Decider::start(
            "r1",
            DefinitionRef {
                namespace: "t".into(),
                name: "saga".into(),
                version: "1.0.0".into(),
                hash: "h".into(),
            },
            input,
            1_000,
            None,
            None,
        );
        let mut run = Run {
            decider,
            state: RunState::default(),
            events: Vec::new(),
            now: 1_000,
        };
        run.record(first);
        run.decide();
        run
    }

    fn record(&mut self, e: RunEvent) {
        self.state.apply(&e);
        self.events.push(e);
    }

    fn decide(&mut self) {
        self.now += 1;
        let secrets = Map::new();
        let mut n = 7u64;
        let mut entropy = || {
            n += 1;
            n
        };
        let mut inp = DecideInput {
            now: self.now,
            secrets: &secrets,
            entropy: &mut entropy,
        };
        for e in self.decider.decide(&self.state, &mut inp) {
            self.record(e);
        }
    }

    /// Answers the one pending call (by its registered name) and decides.
    fn answer(&mut self, name: &str, result: Result<Value, &str>) {
        let pending = self.state.pending_activities();
        assert_eq!(pending.len(), 1, "one call pending: {pending:?}");
        let a = &pending[0];
        match &a.call {
            cairn_core::events::ActivityCall::Function { name: n, .. } => assert_eq!(n, name),
            other => panic!("unexpected call {other:?}"),
        }
        let e = match result {
            Ok(v) => RunEvent::ActivityCompleted {
                id: a.frame,
                result: v,
                at: self.now,
            },
            Err(msg) => RunEvent::ActivityFailed {
                id: a.frame,
                error: cairn_core::WorkflowError::new(cairn_core::error::ErrorKind::Runtime, msg),
                at: self.now,
            },
        };
        self.record(e);
        self.decide();
    }

    fn pending(&self) -> (String, Value, String) {
        let a = &self.state.pending_activities()[0];
        match &a.call {
            cairn_core::events::ActivityCall::Function {
                name, arguments, ..
            } => (name.clone(), arguments.clone(), a.idempotency_key.clone()),
            other => panic!("unexpected call {other:?}"),
        }
    }

    fn cancel(&mut self, compensate: bool) {
        let e = Decider::cancel(
            &self.state,
            Some("customer left".into()),
            compensate,
            self.now,
        );
        self.record(e);
        self.decide();
    }
}

#[test]
fn cancel_with_compensate_undoes_completed_tasks_in_reverse_and_drops_the_call_in_flight() {
    let mut run = Run::start(SAGA, json!({"amount": 30}));
    run.answer("reserveStock", Ok(json!({"id": "R1"})));
    run.answer("chargePayment", Ok(json!({"id": "C1"})));
    let ship = run.state.pending_activities()[0].frame;
    run.cancel(true);
    assert_eq!(run.state.status, RunStatus::Compensating);
    assert_eq!(run.state.label().as_str(), "compensating");
    // The refund first (the charge completed last), with the charge's input and output and a
    // key derived from the run and the compensated activation.
    let (name, args, key) = run.pending();
    assert_eq!(name, "refundPayment");
    assert_eq!(
        args,
        json!({"charge": "C1", "reservation": "R1", "task": "/do/1/charge"})
    );
    let charge = run.state.compensable[1].task;
    assert_eq!(key, format!("r1:compensate:{charge}:0"));
    // The ship call's late answer no longer applies: its activation is gone.
    assert!(!run.state.frames.contains_key(&ship));
    run.answer("refundPayment", Ok(json!({"refunded": true})));
    let (name, args, _) = run.pending();
    assert_eq!(
        (name.as_str(), args),
        ("releaseStock", json!({"reservation": "R1"}))
    );
    run.answer("releaseStock", Ok(json!({})));
    assert_eq!(run.state.status, RunStatus::Compensated);
    assert_eq!(run.state.label().as_str(), "compensated");
    assert!(run.state.error.is_none());
    let c = run.state.compensation.as_ref().unwrap();
    assert_eq!(c.reason.as_deref(), Some("customer left"));
    assert_eq!(c.completed, vec![1, 0]);
    assert!(matches!(
        run.events.last(),
        Some(RunEvent::RunCompensated { failed, .. }) if failed.is_empty()
    ));
    assert!(run.state.pending_activities().is_empty());
    assert_eq!(run.state.wake_at(), None);
}

#[test]
fn a_plain_cancel_behaves_as_before() {
    let mut run = Run::start(SAGA, json!({"amount": 30}));
    run.answer("reserveStock", Ok(json!({"id": "R1"})));
    run.cancel(false);
    assert_eq!(run.state.status, RunStatus::Cancelled);
    assert!(matches!(
        run.events.last(),
        Some(RunEvent::RunCancelled { .. })
    ));
    assert!(run.state.compensation.is_none());
}

#[test]
fn cancel_with_compensate_and_nothing_to_undo_is_a_cancel() {
    let mut run = Run::start(SAGA, json!({"amount": 30}));
    run.cancel(true);
    assert_eq!(run.state.status, RunStatus::Cancelled);
}

#[test]
fn a_failed_compensation_is_recorded_and_the_others_still_run() {
    let mut run = Run::start(SAGA, json!({"amount": 5}));
    run.answer("reserveStock", Ok(json!({"id": "R1"})));
    run.answer("chargePayment", Ok(json!({"id": "C1"})));
    run.answer("ship", Err("no courier"));
    // The fault had no handler: compensating, with the fault kept as the run's error.
    assert_eq!(run.state.status, RunStatus::Compensating);
    assert!(run
        .state
        .error
        .as_ref()
        .unwrap()
        .to_string()
        .contains("no courier"));
    run.answer("refundPayment", Err("card expired"));
    run.answer("releaseStock", Ok(json!({})));
    assert_eq!(run.state.status, RunStatus::CompensationFailed);
    assert_eq!(run.state.label().as_str(), "compensation_failed");
    let failed = &run.state.compensation.as_ref().unwrap().failed;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].compensation, "refund");
    assert_eq!(failed[0].position, "/do/1/charge");
    assert!(failed[0].error.to_string().contains("card expired"));
}

#[test]
fn suspending_a_compensating_run_keeps_it_compensating_when_resumed() {
    let mut run = Run::start(SAGA, json!({"amount": 5}));
    run.answer("reserveStock", Ok(json!({"id": "R1"})));
    run.cancel(true);
    run.record(RunEvent::RunSuspended { at: run.now });
    assert_eq!(run.state.status, RunStatus::Suspended);
    run.record(RunEvent::RunResumed { at: run.now });
    assert_eq!(run.state.status, RunStatus::Compensating);
    run.decide();
    run.answer("releaseStock", Ok(json!({})));
    assert_eq!(run.state.status, RunStatus::Compensated);
}

#[test]
fn the_compensation_state_survives_a_snapshot_and_a_refold() {
    let mut run = Run::start(SAGA, json!({"amount": 5}));
    run.answer("reserveStock", Ok(json!({"id": "R1"})));
    run.answer("chargePayment", Ok(json!({"id": "C1"})));
    run.cancel(true);
    let snap = run.state.to_snapshot().unwrap();
    assert_eq!(
        RunState::from_snapshot(snap, run.events.len() as u64).unwrap(),
        run.state
    );
    assert_eq!(RunState::from_events(&run.events), run.state);
    // Every event decodes from its stored form.
    for e in &run.events {
        let back = RunEvent::from_stored(e.event_type(), "2", e.payload()).unwrap();
        assert_eq!(&back, e);
    }
}

#[test]
fn a_reference_to_a_missing_compensation_is_a_problem_with_its_pointer() {
    let src = SAGA.replace("cairn.compensate: refund}", "cairn.compensate: refnud}");
    let err = dsl::load_str(&src, dsl::SourceFormat::Yaml).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("/do/1/charge/metadata/cairn.compensate"),
        "{text}"
    );
    assert!(text.contains("unknown compensation `refnud`"), "{text}");
    let src = SAGA.replace("{cairn.compensate: release}", "{cairn.compensate: 3}");
    let text = dsl::load_str(&src, dsl::SourceFormat::Yaml)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("must be the name of a task of `use.functions`"),
        "{text}"
    );
    let src = SAGA.replace(
        "      call: releaseStock\n",
        "      call: releaseStock\n      metadata: {cairn.compensate: refund}\n",
    );
    let text = dsl::load_str(&src, dsl::SourceFormat::Yaml)
        .unwrap_err()
        .to_string();
    assert!(text.contains("/use/functions/release/metadata"), "{text}");
}
