//! The replayer (`cairn_core::replay`) on simulated histories: what it reports when a version
//! decides differently, and what it must not report (random draws, recorded times, a
//! migration).

use std::collections::HashMap;
use std::sync::Arc;

use cairn_core::decider::Decider;
use cairn_core::events::RunEvent;
use cairn_core::replay::{self, Batch, Deciders, Stored};
use serde_json::{json, Map};

use super::sim::{self, Case, Recorded, T0};

fn case(yaml: &str) -> Case {
    Case::parse(yaml).expect("a valid case")
}

fn decider(c: &Case) -> Decider {
    Decider::new(c.def.clone().expect("parsed"))
}

const THREE: &str = r#"
workflow:
  document: {dsl: '1.0.3', namespace: t, name: w, version: '1.0.0'}
  do:
    - a: {call: work}
    - b: {call: work, with: {n: '${ .n }'}}
    - c: {set: {done: true}}
functions:
  work: [{n: 1}, {n: 2}]
expect: {output: {done: true}}
"#;

fn run(c: &Case) -> (Recorded, Vec<Batch>) {
    let rec = sim::simulate(c).expect("the case runs");
    let b = rec.batches().expect("batches");
    (rec, b)
}

#[test]
fn a_run_replays_identical_on_its_own_definition() {
    let c = case(THREE);
    let (rec, batches) = run(&c);
    let r = replay::replay(&batches, Deciders::One(&decider(&c)), &Map::new()).unwrap();
    assert!(r.identical(), "{:?}", r.divergence);
    assert_eq!(r.events, rec.events.len() as u64);
    let decided = rec.events.iter().filter(|e| !replay::is_fact(e)).count();
    assert_eq!(r.decisions, decided as u64);
}

#[test]
fn a_changed_task_diverges_at_its_first_decision_with_both_paths() {
    let c = case(THREE);
    let (rec, batches) = run(&c);
    // Version 2 renames the second task: the run diverges where `b` was started.
    let v2 = case(&THREE.replace("- b: {call", "- b2: {call"));
    let r = replay::replay(&batches, Deciders::One(&decider(&v2)), &Map::new()).unwrap();
    let d = r.divergence.expect("a divergence");
    let at = rec
        .events
        .iter()
        .position(|e| matches!(e, RunEvent::TaskStarted { position, .. } if position == "/do/1/b"))
        .unwrap();
    assert_eq!(d.sequence, at as u64 + 1);
    let (old, new) = (d.recorded.clone().unwrap(), d.new.clone().unwrap());
    assert_eq!(old.event_type, "TaskStarted");
    assert_eq!(old.task.as_deref(), Some("/do/1/b"));
    assert_eq!(new.task.as_deref(), Some("/do/1/b2"));
    assert_eq!(new.event["data"]["name"], json!("b2"));
    assert_eq!(
        r.decisions,
        rec.events[..at]
            .iter()
            .filter(|e| !replay::is_fact(e))
            .count() as u64
    );
    assert_eq!(
        d.to_string(),
        format!("diverges at event {}: recorded TaskStarted at /do/1/b, new version decides TaskStarted at /do/1/b2", at + 1)
    );
}

#[test]
fn changed_arguments_diverge_at_the_call() {
    let c = case(THREE);
    let (rec, batches) = run(&c);
    let v2 = case(&THREE.replace("with: {n: '${ .n }'}", "with: {n: '${ .n + 1 }'}"));
    let d = replay::replay(&batches, Deciders::One(&decider(&v2)), &Map::new())
        .unwrap()
        .divergence
        .expect("a divergence");
    let at = rec
        .events
        .iter()
        .position(|e| matches!(e, RunEvent::ActivityScheduled { id: 2, .. }))
        .unwrap();
    assert_eq!(d.sequence, at as u64 + 1);
    assert_eq!(d.recorded.unwrap().task.as_deref(), Some("/do/1/b"));
    assert_eq!(
        d.new.unwrap().event["data"]["call"]["arguments"],
        json!({"n": 2})
    );
}

#[test]
fn a_version_that_waits_where_the_run_went_on_diverges_and_the_reverse() {
    let c = case(THREE);
    let (_, batches) = run(&c);
    // A task added at the end: the recorded run completed where the new version starts it.
    let longer = case(&THREE.replace(
        "    - c: {set: {done: true}}",
        "    - c: {set: {done: true}}\n    - d: {set: {more: true}}",
    ));
    let d = replay::replay(&batches, Deciders::One(&decider(&longer)), &Map::new())
        .unwrap()
        .divergence
        .expect("a divergence");
    assert_eq!(d.recorded.unwrap().event_type, "RunCompleted");
    assert_eq!(d.new.unwrap().task.as_deref(), Some("/do/3/d"));
    // A history cut after the call of `a` was scheduled: a version that starts nothing there.
    let cut: Vec<Batch> = batches[..1].to_vec();
    let idle = case(
        r#"
workflow:
  document: {dsl: '1.0.3', namespace: t, name: w, version: '1.0.0'}
  do:
    - a: {listen: {to: {one: {with: {type: x}}}}}
expect: {}
"#,
    );
    let d = replay::replay(&cut, Deciders::One(&decider(&idle)), &Map::new())
        .unwrap()
        .divergence
        .expect("a divergence");
    assert_eq!(d.recorded.unwrap().event_type, "TaskStarted");
    assert_eq!(d.new.unwrap().event_type, "TaskStarted");
}

#[test]
fn a_tampered_decision_is_found_where_it_is() {
    let c = case(THREE);
    let (rec, _) = run(&c);
    let mut tampered = Recorded {
        events: rec.events.clone(),
        decisions: rec.decisions,
    };
    let at = tampered
        .events
        .iter()
        .position(|e| matches!(e, RunEvent::TaskCompleted { id: 3, .. }))
        .unwrap();
    if let RunEvent::TaskCompleted { output, .. } = &mut tampered.events[at] {
        *output = json!({"done": false});
    }
    let d = replay::replay(
        &tampered.batches().unwrap(),
        Deciders::One(&decider(&c)),
        &Map::new(),
    )
    .unwrap()
    .divergence
    .expect("a divergence");
    assert_eq!(d.sequence, at as u64 + 1);
    assert_eq!(
        d.recorded.unwrap().event["data"]["output"],
        json!({"done": false})
    );
}

#[test]
fn jitter_replays_on_its_range_and_diverges_outside_it() {
    let yaml = r#"
workflow:
  document: {dsl: '1.0.3', namespace: t, name: w, version: '1.0.0'}
  do:
    - guarded:
        try:
          - flaky: {call: flaky}
        catch:
          errors: {with: {status: 503}}
          retry:
            delay: {seconds: 1}
            jitter: {from: {milliseconds: 0}, to: {milliseconds: 900}}
            limit: {attempt: {count: 3}}
functions:
  flaky:
    - {error: {type: 'https://serverlessworkflow.io/spec/1.0.0/errors/communication', status: 503}}
    - {error: {type: 'https://serverlessworkflow.io/spec/1.0.0/errors/communication', status: 503}}
    - {ok: true}
expect: {output: {ok: true}}
"#;
    let c = case(yaml);
    let (rec, batches) = run(&c);
    let delays: Vec<u64> = rec
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::RetryScheduled { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 2);
    assert!(delays.iter().any(|d| *d > 1000), "jitter drawn: {delays:?}");
    let r = replay::replay(&batches, Deciders::One(&decider(&c)), &Map::new()).unwrap();
    assert!(r.identical(), "{:?}", r.divergence);
    // A version whose jitter is at most 0 ms cannot have made those delays.
    let narrow = case(&yaml.replace("milliseconds: 900", "milliseconds: 0"));
    let d = replay::replay(&batches, Deciders::One(&decider(&narrow)), &Map::new())
        .unwrap()
        .divergence
        .expect("a divergence");
    assert_eq!(d.recorded.unwrap().event_type, "RetryScheduled");
}

#[test]
fn a_migrated_run_replays_each_part_on_its_own_version() {
    // v1 runs `a` and waits for its call; the run moves to v2 (same `a`, another `b`).
    let v1 = case(THREE);
    let v2 = case(&THREE.replace("with: {n: '${ .n }'}", "with: {n: '${ .n * 10 }'}"));
    let (d1, d2) = (decider(&v1), decider(&v2));
    let (rec, _) = run(&v1);
    // The part before the migration: up to the first call's result (not included).
    let cut = rec
        .events
        .iter()
        .position(|e| matches!(e, RunEvent::ActivityCompleted { .. }))
        .unwrap();
    let hash1 = match &rec.events[0] {
        RunEvent::RunStarted { definition, .. } => definition.hash.clone(),
        _ => unreachable!(),
    };
    let mut events = rec.events[..cut].to_vec();
    events.push(RunEvent::RunMigrated {
        from_hash: hash1.clone(),
        to_hash: "v2".into(),
        to_version: "2.0.0".into(),
        at: T0,
    });
    // What v2 decides from here on, recorded the way the engine would.
    let mut state = cairn_core::state::RunState::from_events(&events);
    let mut tail = Vec::new();
    for fact in [RunEvent::ActivityCompleted {
        id: 1,
        result: json!({"n": 1}),
        at: T0,
    }] {
        state.apply(&fact);
        tail.push(fact);
        let mut zero = || 0;
        let mut input = cairn_core::decider::DecideInput {
            now: T0,
            secrets: &Map::new(),
            entropy: &mut zero,
        };
        for e in d2.decide(&state, &mut input) {
            state.apply(&e);
            tail.push(e);
        }
    }
    assert_eq!(
        state.definition.as_ref().unwrap().hash,
        "v2",
        "the fold moved the run"
    );
    let stored: Vec<Stored> = events
        .iter()
        .chain(&tail)
        .map(|e| Stored {
            event: e.clone(),
            recorded_at: None,
            writer: None,
        })
        .collect();
    let batches = replay::batches(stored);
    let both: HashMap<String, Arc<Decider>> = [
        (hash1.clone(), Arc::new(d1.clone())),
        ("v2".to_string(), Arc::new(d2.clone())),
    ]
    .into();
    let r = replay::replay(&batches, Deciders::Recorded(&both), &Map::new()).unwrap();
    assert!(r.identical(), "{:?}", r.divergence);
    // On v1 alone, the part after the migration diverges at the second call.
    let d = replay::replay(&batches, Deciders::One(&d1), &Map::new())
        .unwrap()
        .divergence
        .expect("a divergence");
    assert_eq!(d.recorded.unwrap().task.as_deref(), Some("/do/1/b"));
    // Without v2's decider the history cannot be replayed on its recorded versions.
    let only1: HashMap<String, Arc<Decider>> = [(hash1, Arc::new(d1))].into();
    let e = replay::replay(&batches, Deciders::Recorded(&only1), &Map::new()).unwrap_err();
    assert_eq!(
        e,
        replay::ReplayError::UnknownDefinition { hash: "v2".into() }
    );
}

#[test]
fn stored_events_are_cut_into_their_appends_by_metadata() {
    let c = case(THREE);
    let (rec, batches) = run(&c);
    // The same history as the runtime stores it: every event of an append carries its time.
    let mut stored = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        for e in &b.events {
            stored.push(Stored {
                event: e.clone(),
                recorded_at: Some(b.now + i as i64),
                writer: Some("w1".into()),
            });
        }
    }
    let again = replay::batches(stored);
    assert_eq!(again.len(), batches.len());
    assert_eq!(
        again.iter().map(|b| b.events.len()).sum::<usize>(),
        rec.events.len()
    );
    let r = replay::replay(&batches, Deciders::One(&decider(&c)), &Map::new()).unwrap();
    assert!(r.identical());
    // A history that does not begin with RunStarted is refused, not replayed.
    let headless = vec![Batch {
        now: T0,
        events: rec.events[1..].to_vec(),
    }];
    assert!(replay::replay(&headless, Deciders::One(&decider(&c)), &Map::new()).is_err());
}
