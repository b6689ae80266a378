//! `cairn bench`: a smoke test that the command runs and reports every figure. No timing is
//! asserted: the figures depend on the machine and its load.

use std::time::Duration;

use serde_json::Value;

use crate::common::Sandbox;

#[test]
fn bench_reports_every_figure_as_json() {
    let sb = Sandbox::new();
    let store = sb.store_named("bench");
    let out = sb
        .spawn(&[
            "bench",
            "--store",
            &store,
            "--runs",
            "20",
            "--concurrency",
            "1,4",
            "--raw-seconds",
            "0.5",
            "--json",
        ])
        .finish(Duration::from_secs(180));
    out.expect_code(0);
    let report = out
        .json()
        .unwrap_or_else(|| panic!("not JSON: {}", out.describe()));

    assert_eq!(report["store"], "sqlite", "{report:#}");
    assert!(report["events_per_run"].as_f64().is_some_and(|e| e > 0.0));
    let phase_fields = [
        "concurrency",
        "runs",
        "seconds",
        "runs_per_s",
        "tasks_per_s",
        "events",
        "events_per_s",
        "p50_ms",
        "p99_ms",
    ];
    let check = |p: &Value| {
        for f in phase_fields {
            assert!(p[f].is_number(), "field {f} missing in {p:#}");
        }
        for f in ["one_per_tx", "batch_10", "batch_100"] {
            assert!(p["raw"][f].is_number(), "raw.{f} missing in {p:#}");
        }
        for f in ["vs_one_per_tx", "vs_batch_10", "vs_batch_100"] {
            assert!(p["ratio"][f].is_number(), "ratio.{f} missing in {p:#}");
        }
    };
    check(&report["latency"]);
    assert_eq!(report["latency"]["concurrency"], 1);
    let levels: Vec<u64> = report["throughput"]
        .as_array()
        .unwrap_or_else(|| panic!("no throughput array: {report:#}"))
        .iter()
        .map(|p| {
            check(p);
            assert_eq!(p["runs"], 20, "every run of the level ran: {p:#}");
            p["concurrency"].as_u64().unwrap_or(0)
        })
        .collect();
    assert_eq!(levels, [1, 4]);
}

#[test]
fn bench_rejects_bad_arguments() {
    let sb = Sandbox::new();
    sb.cairn(&["bench", "--concurrency", "0", "--store", &sb.store()])
        .expect_code(2);
    sb.cairn(&["bench", "--store", "mysql://nope"])
        .expect_code(2);
}
