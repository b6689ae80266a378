//! Property: for random workflows, the recorded history replays to the same decisions, and
//! folding it rebuilds the same state, also from a snapshot taken anywhere in it.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::sim::{self, Case, Expect};

fn task(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        (0i64..100).prop_map(|n| json!({ "set": { "n": format!("${{ (.n // 0) + {n} }}") } })),
        Just(json!({ "call": "work", "with": { "n": "${ .n // 0 }" } })),
        (1u64..5000).prop_map(|ms| json!({ "wait": { "milliseconds": ms } })),
        Just(
            json!({ "raise": { "error": { "type": "https://example.com/errors/x", "status": 418 } } })
        ),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let list = prop::collection::vec(task(depth - 1), 1..4).prop_map(|ts| {
        Value::Array(
            ts.into_iter()
                .enumerate()
                .map(|(i, t)| json!({ format!("t{i}"): t }))
                .collect(),
        )
    });
    prop_oneof![
        3 => leaf,
        1 => list.clone().prop_map(|l| json!({ "do": l })),
        1 => (list.clone(), 0usize..3).prop_map(|(l, n)| json!({
            "for": { "in": format!("${{ [range({n})] }}") }, "do": l })),
        1 => (list.clone(), list.clone()).prop_map(|(a, b)| json!({
            "try": a,
            "catch": { "retry": { "delay": { "milliseconds": 10 }, "backoff": { "exponential": {} }, "limit": { "attempt": { "count": 1 } } }, "do": b } })),
        1 => (list.clone(), any::<bool>()).prop_map(|(l, c)| json!({
            "fork": { "compete": c, "branches": l } })),
    ]
    .boxed()
}

fn workflow() -> impl Strategy<Value = Value> {
    prop::collection::vec(task(2), 1..5).prop_map(|ts| {
        json!({
            "document": { "dsl": "1.0.3", "namespace": "prop", "name": "random", "version": "1.0.0" },
            "do": Value::Array(ts.into_iter().enumerate().map(|(i, t)| json!({ format!("s{i}"): t })).collect()),
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_histories_replay_and_fold(wf in workflow(), fails in prop::collection::vec(any::<bool>(), 64), cut in any::<prop::sample::Index>()) {
        let results: Vec<Value> = fails
            .iter()
            .map(|f| if *f { json!({ "error": { "type": "https://example.com/errors/flaky", "status": 503 } }) } else { json!({ "ok": true }) })
            .cycle()
            .take(4096)
            .collect();
        let src = serde_json::to_string(&wf).unwrap();
        let def = cairn_core::dsl::load_str(&src, cairn_core::dsl::SourceFormat::Json).unwrap();
        let case = Case {
            workflow: wf,
            input: json!({}),
            functions: [("work".to_string(), results)].into_iter().collect(),
            http: Default::default(),
            events: vec![],
            children: Default::default(),
            secrets: Default::default(),
            expect: Expect { output: None, error: None, tasks: None, calls: None, elapsed_ms: None, context: None, status: None, failed_compensations: None },
            def: Some(std::sync::Arc::new(def)),
        };
        let rec = sim::simulate(&case).map_err(TestCaseError::fail)?;
        sim::replay(&case, &rec).map_err(TestCaseError::fail)?;
        let mut incremental = cairn_core::state::RunState::default();
        for e in &rec.events {
            incremental.apply(e);
        }
        prop_assert_eq!(&incremental, &cairn_core::state::RunState::from_events(&rec.events));
        // A snapshot at any cut, through JSON text, then the rest of the events: the same state.
        let k = cut.index(rec.events.len() + 1);
        let snap = cairn_core::state::RunState::from_events(&rec.events[..k]).to_snapshot().unwrap();
        let text = serde_json::to_string(&snap).unwrap();
        let mut resumed = cairn_core::state::RunState::from_snapshot(serde_json::from_str(&text).unwrap(), k as u64)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for e in &rec.events[k..] {
            resumed.apply(e);
        }
        prop_assert_eq!(resumed, incremental);
    }
}
