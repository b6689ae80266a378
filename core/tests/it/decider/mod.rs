//! Data-driven tests of the decider: each `tests/fixtures/runs/*.yaml` holds a workflow, its
//! input, what the outside world answers, and the expected end. The run is simulated to the end
//! with a fake clock and seeded entropy; its history is checked in beside the case
//! (`*.history.json`) and replayed, so a change that would make runs already in flight decide
//! differently fails the build. `CAIRN_UPDATE_FIXTURES=1` rewrites the histories.

mod sim;

use std::path::PathBuf;

use sim::{Case, Recorded};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/runs")
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(fixtures())
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().to_string(), p))
        .collect();
    v.sort();
    v
}

#[test]
fn fixtures_run_to_their_expected_end() {
    let update = std::env::var("CAIRN_UPDATE_FIXTURES").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let all = cases();
    assert!(
        !all.is_empty(),
        "no fixtures found in {}",
        fixtures().display()
    );
    for (name, path) in &all {
        let case = Case::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rec = match sim::simulate(&case) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if let Err(e) = case.check(&rec) {
            failures.push(format!("{name}: {e}"));
            continue;
        }
        let hist = path.with_extension("history.json");
        if update || !hist.exists() {
            std::fs::write(&hist, serde_json::to_string_pretty(&rec).unwrap() + "\n").unwrap();
        } else {
            let old: Recorded = serde_json::from_str(&std::fs::read_to_string(&hist).unwrap())
                .unwrap_or_else(|e| panic!("{name}: unreadable history: {e}"));
            if let Err(e) = sim::replay(&case, &old) {
                failures.push(format!(
                    "{name}: the recorded history no longer replays: {e}\n  (a change of decisions breaks runs in flight; if intended, bump the event version or rerun with CAIRN_UPDATE_FIXTURES=1)"
                ));
            }
        }
    }
    println!(
        "decider fixtures: {} passed, {} failed",
        all.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn folding_a_history_twice_gives_the_same_state() {
    for (name, path) in cases() {
        let case = Case::read(&path).unwrap();
        let Ok(rec) = sim::simulate(&case) else {
            continue;
        };
        let a = cairn_core::state::RunState::from_events(&rec.events);
        let b = cairn_core::state::RunState::from_events(&rec.events);
        assert_eq!(a, b, "{name}");
        // And the state survives a serde round trip (it is the snapshot format).
        let json = serde_json::to_string(&a).unwrap();
        let c: cairn_core::state::RunState = serde_json::from_str(&json).unwrap();
        assert_eq!(a, c, "{name}: snapshot round trip");
    }
}

mod compensation;
mod property;
mod replay;
mod snapshot;
