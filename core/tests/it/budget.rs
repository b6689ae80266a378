//! The expression budget with a memory probe installed, as `cairn` installs one: hostile
//! expressions stop with a clear error, whichever bound they reach first, and never abort.

use std::alloc::System;

use cairn_core::budget::{self, Limits};
use cairn_core::expr::{eval, Vars};
use serde_json::{json, Value};

#[global_allocator]
static ALLOC: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

fn probe() {
    budget::set_memory_probe(|| ALLOC.allocated());
}

/// Steps plentiful, memory small: what runs out is memory.
fn small_memory<R>(f: impl FnOnce() -> R) -> R {
    budget::with_limits(
        Limits {
            max_steps: 50_000_000,
            max_memory: 16 << 20,
        },
        f,
    )
}

#[test]
fn growing_values_run_out_of_memory() {
    probe();
    for src in [
        "reduce range(40) as $i (\"ab\"; . + .)",
        "[range(1e12)]",
        "[repeat(.)]",
        "def f(x): f([x]); f(.)",
        "reduce range(1e9) as $i ([]; . + [$i])",
    ] {
        let e = small_memory(|| eval(src, &json!(1), &Vars::new())).unwrap_err();
        assert_eq!(e.expression, src);
        assert_eq!(
            e.message, "exceeded its memory budget of 16 MiB (setting expr_max_memory)",
            "{src}"
        );
    }
}

#[test]
fn deeply_nested_values_are_dropped_without_overflowing() {
    probe();
    // Each level is a few dozen bytes, so the memory budget allows a few million levels, each
    // of which dropping the value recurses through.
    let src = "reduce range(1e9) as $i (null; [.])";
    let e = budget::with_limits(
        Limits {
            max_steps: u64::MAX,
            max_memory: 64 << 20,
        },
        || eval(src, &Value::Null, &Vars::new()),
    )
    .unwrap_err();
    assert!(e.message.contains("memory budget"), "{}", e.message);
}

#[test]
fn what_fits_the_budget_still_evaluates() {
    probe();
    let v = small_memory(|| eval("[range(1000)] | add", &Value::Null, &Vars::new())).unwrap();
    assert_eq!(v, json!(499_500));
}

/// A loop that never waits, each turn an expression of some thousands of steps: one batch of
/// decisions stops once it has spent one expression's step budget, and says there is more.
#[test]
fn a_batch_of_decisions_spends_at_most_one_expression_budget() {
    use std::sync::Arc;

    use cairn_core::decider::{DecideInput, Decider, MAX_EVENTS_PER_DECISION};
    use cairn_core::dsl::{load_str, SourceFormat};
    use cairn_core::events::DefinitionRef;
    use cairn_core::state::RunState;

    let def = load_str(
        r#"
document: { dsl: '1.0.3', namespace: test, name: spin, version: '0.1.0' }
do:
  - spin:
      set: { n: '${ [range(2000)] | length }' }
      then: spin
"#,
        SourceFormat::Yaml,
    )
    .unwrap();
    let decider = Decider::new(Arc::new(def));
    let mut state = RunState::default();
    state.apply(&Decider::start(
        "run-1",
        DefinitionRef {
            namespace: "test".into(),
            name: "spin".into(),
            version: "0.1.0".into(),
            hash: "h".into(),
        },
        Value::Null,
        0,
        None,
        None,
    ));
    let secrets = serde_json::Map::new();
    let mut entropy = || 4u64;
    let mut input = DecideInput {
        now: 0,
        secrets: &secrets,
        entropy: &mut entropy,
    };
    let small = Limits {
        max_steps: 100_000,
        max_memory: budget::DEFAULT_MAX_MEMORY,
    };
    let d = budget::with_limits(small, || decider.decide_batch(&state, &mut input));
    assert!(d.more, "the batch stopped with work left");
    assert!(!d.events.is_empty());
    assert!(
        d.events.len() < MAX_EVENTS_PER_DECISION / 10,
        "{} events: the step bound, not the event bound, ended the batch",
        d.events.len()
    );
    for e in &d.events {
        state.apply(e);
    }
    let next = budget::with_limits(small, || decider.decide_batch(&state, &mut input));
    assert!(
        next.more && !next.events.is_empty(),
        "the next batch goes on"
    );
}
