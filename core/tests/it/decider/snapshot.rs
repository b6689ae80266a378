//! Snapshots stand in for the events they fold: for every recorded history and every cut `k`,
//! folding the events after `k` onto the decoded snapshot of the first `k` gives the full fold.
//! The snapshot goes through JSON text on the way, as it does through a store.
//!
//! `tests/fixtures/snapshots/format-N.json` holds snapshots written by the current
//! `SNAPSHOT_FORMAT`; they must keep decoding to the fold of the same events, so a change of the
//! state's shape or of the fold that would make stored snapshots lie fails here (bump
//! `SNAPSHOT_FORMAT`; `CAIRN_UPDATE_FIXTURES=1` writes the new file).

use std::path::PathBuf;

use cairn_core::events::RunEvent;
use cairn_core::state::{RunState, SnapshotError, SNAPSHOT_FORMAT};
use serde_json::{json, Map, Value};

use super::sim::Recorded;

/// Every recorded history, by fixture name.
fn histories() -> Vec<(String, Vec<RunEvent>)> {
    let dir = super::fixtures();
    let mut v: Vec<(String, Vec<RunEvent>)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".history.json")?;
            Some((name.to_string(), p))
        })
        .map(|(name, p)| {
            let rec: Recorded = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: unreadable history: {e}"));
            (name, rec.events)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!v.is_empty(), "no histories in {}", dir.display());
    v
}

/// Encodes, writes as text, reads back and decodes, as a store does.
fn through_text(state: &RunState, k: usize) -> Result<RunState, SnapshotError> {
    let text = serde_json::to_string(&state.to_snapshot()?).unwrap();
    RunState::from_snapshot(serde_json::from_str(&text).unwrap(), k as u64)
}

#[test]
fn every_recorded_history_folds_the_same_from_a_snapshot_at_every_cut() {
    let mut checked = 0;
    for (name, events) in histories() {
        let full = RunState::from_events(&events);
        for k in 0..=events.len() {
            let head = RunState::from_events(&events[..k]);
            let mut resumed = through_text(&head, k)
                .unwrap_or_else(|e| panic!("{name}: snapshot after {k} events: {e}"));
            assert_eq!(resumed, head, "{name}: snapshot after {k} events");
            for e in &events[k..] {
                resumed.apply(e);
            }
            assert_eq!(
                resumed, full,
                "{name}: snapshot after {k} events, then the rest"
            );
            checked += 1;
        }
    }
    println!("snapshot cuts checked: {checked}");
}

#[test]
fn a_null_input_or_output_is_not_lost_in_a_snapshot() {
    let state = RunState {
        input: Some(Value::Null),
        output: Some(Value::Null),
        ..RunState::default()
    };
    assert_eq!(through_text(&state, 0).unwrap(), state);
    let none = RunState::default();
    assert_eq!(through_text(&none, 0).unwrap(), none);
}

#[test]
fn a_snapshot_of_another_format_or_sequence_is_refused() {
    let state = RunState::default();
    let mut snap = state.to_snapshot().unwrap();
    assert!(RunState::from_snapshot(snap.clone(), 0).is_ok());
    assert_eq!(
        RunState::from_snapshot(snap.clone(), 7),
        Err(SnapshotError::Sequence {
            last_sequence: 7,
            folded: 0
        })
    );
    snap["format"] = json!(SNAPSHOT_FORMAT + 1);
    assert!(matches!(
        RunState::from_snapshot(snap, 0),
        Err(SnapshotError::Format { .. })
    ));
    // cqrs-es's own snapshot of the same aggregate is the bare state, without a format.
    let bare = serde_json::to_value(&state).unwrap();
    assert_eq!(
        RunState::from_snapshot(bare, 0),
        Err(SnapshotError::Format { found: None })
    );
    assert!(matches!(
        RunState::from_snapshot(json!({ "format": SNAPSHOT_FORMAT, "state": [1] }), 0),
        Err(SnapshotError::Decode(_))
    ));
}

#[test]
fn snapshots_written_by_this_format_still_decode_to_the_fold() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../tests/fixtures/snapshots/format-{SNAPSHOT_FORMAT}.json"
    ));
    let update = std::env::var("CAIRN_UPDATE_FIXTURES").is_ok_and(|v| v == "1");
    let all = histories();
    if update || !path.exists() {
        // One cut per history, in its middle: where the most activations are live.
        let mut golden = Map::new();
        for (name, events) in &all {
            let k = events.len() / 2;
            let snap = RunState::from_events(&events[..k]).to_snapshot().unwrap();
            golden.insert(name.clone(), json!({ "after": k, "snapshot": snap }));
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&Value::Object(golden)).unwrap() + "\n",
        )
        .unwrap();
    }
    let golden: Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (name, events) in &all {
        let Some(entry) = golden.get(name) else {
            continue; // a fixture newer than the golden file
        };
        let k = entry["after"].as_u64().unwrap() as usize;
        let expected = RunState::from_events(&events[..k]);
        match RunState::from_snapshot(entry["snapshot"].clone(), k as u64) {
            Ok(s) if s == expected => {}
            Ok(_) => failures.push(format!("{name}: decodes to another state than the fold")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "snapshots stored by format {SNAPSHOT_FORMAT} would no longer stand for their events; \
         bump SNAPSHOT_FORMAT in core/src/state/snapshot.rs and rerun with CAIRN_UPDATE_FIXTURES=1:\n{}",
        failures.join("\n")
    );
}
