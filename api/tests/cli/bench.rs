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

/// `cairn bench subscribers`: a few subscribers over a few runs; every figure is reported and
/// every subscriber got every event of its run once, in order (no timing asserted).
#[test]
fn bench_subscribers_reports_delivery_and_queries() {
    let sb = Sandbox::new();
    let store = sb.store_named("wsbench");
    let out = sb
        .spawn(&[
            "bench",
            "subscribers",
            "--store",
            &store,
            "--subscribers",
            "20",
            "--runs",
            "4",
            "--steps",
            "3",
            "--pause-ms",
            "50",
            "--gate-ms",
            "1500",
            "--query-rate",
            "20",
            "--seconds",
            "60",
            "--json",
        ])
        .finish(Duration::from_secs(120));
    out.expect_code(0);
    let report = out
        .json()
        .unwrap_or_else(|| panic!("not JSON: {}", out.describe()));

    assert_eq!(report["store"], "sqlite", "{report:#}");
    assert_eq!(report["subscribers"], 20, "{report:#}");
    assert_eq!(report["runs"], 4, "{report:#}");
    assert_eq!(report["runs_completed"], 4, "{report:#}");
    assert_eq!(report["failed_subscribers"], 0, "{report:#}");
    assert_eq!(report["completed_subscriptions"], 20, "{report:#}");
    assert_eq!(report["timed_out"], false, "{report:#}");
    let d = &report["delivery"];
    for f in ["missing", "duplicated", "out_of_order", "unexpected"] {
        assert_eq!(d[f], 0, "delivery.{f} in {report:#}");
    }
    let events = d["events"].as_u64().unwrap_or(0);
    assert!(events > 4 * 3, "every run recorded its steps: {report:#}");
    assert_eq!(d["expected"], d["received"], "{report:#}");
    assert_eq!(
        d["expected"].as_u64(),
        Some(events * 5),
        "5 subscribers per run: {report:#}"
    );
    assert!(
        d["live"].as_u64().is_some_and(|n| n > 0),
        "events arrived live: {report:#}"
    );
    let q = &report["queries"];
    assert!(q["ok"].as_u64().is_some_and(|n| n > 0), "{report:#}");
    assert_eq!(q["errors"], 0, "{report:#}");
    for l in [&d["latency"], &q["latency"]] {
        for f in ["count", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"] {
            assert!(l[f].is_number(), "latency field {f} missing in {report:#}");
        }
    }
    assert!(report["aim"]["met"].is_boolean(), "{report:#}");
}

#[test]
fn bench_subscribers_rejects_bad_arguments() {
    let sb = Sandbox::new();
    let store = sb.store();
    sb.cairn(&[
        "bench",
        "subscribers",
        "--subscribers",
        "0",
        "--store",
        &store,
    ])
    .expect_code(2);
    sb.cairn(&[
        "bench",
        "subscribers",
        "--subscribers",
        "5001",
        "--store",
        &store,
    ])
    .expect_code(2);
    sb.cairn(&[
        "bench",
        "subscribers",
        "--subscribers",
        "10",
        "--runs",
        "11",
        "--store",
        &store,
    ])
    .expect_code(2);
}
