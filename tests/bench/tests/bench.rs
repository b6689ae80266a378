//! `cairn-bench`: a smoke test that every benchmark runs, briefly, and reports every figure.
//! No timing is asserted: the figures depend on the machine and its load.

mod common;

use std::time::Duration;

use serde_json::Value;

use crate::common::{postgres_url, skip, Sandbox};

/// Runs `cairn-bench <args> --json`, which must succeed within `timeout`; the report it printed.
fn bench_report(sb: &Sandbox, args: &[&str], timeout: Duration) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = sb.bench_within(&all, timeout);
    out.expect_code(0);
    out.json()
        .unwrap_or_else(|| panic!("not JSON: {}", out.describe()))
}

#[test]
fn bench_reports_every_figure_as_json() {
    let sb = Sandbox::new();
    let store = sb.store_named("bench");
    let report = bench_report(
        &sb,
        &[
            "--store",
            &store,
            "--runs",
            "20",
            "--concurrency",
            "1,4",
            "--raw-seconds",
            "0.5",
        ],
        Duration::from_secs(180),
    );

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
    sb.bench(&["--concurrency", "0", "--store", &sb.store()])
        .expect_code(2);
    sb.bench(&["--store", "mysql://nope"]).expect_code(2);
}

/// `cairn-bench subscribers`: a few subscribers over a few runs; every figure is reported and
/// every subscriber got every event of its run once, in order (no timing asserted).
#[test]
fn bench_subscribers_reports_delivery_and_queries() {
    let sb = Sandbox::new();
    let store = sb.store_named("wsbench");
    let report = bench_report(
        &sb,
        &[
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
        ],
        Duration::from_secs(120),
    );

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
    sb.bench(&["subscribers", "--subscribers", "0", "--store", &store])
        .expect_code(2);
    sb.bench(&["subscribers", "--subscribers", "5001", "--store", &store])
        .expect_code(2);
    sb.bench(&[
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

/// `cairn-bench cluster` with small counts: every figure is reported, and no run was lost,
/// faulted or left behind in any part (no timing asserted). The bench creates and drops its own
/// databases on the server.
#[test]
fn bench_cluster_reports_every_figure_and_loses_nothing() {
    let admin = postgres_url();
    if let Err(e) = pg_reachable(&admin) {
        skip(
            "bench cluster test",
            &format!("cannot reach the PostgreSQL server of CAIRN_TEST_POSTGRES_URL: {e}"),
        );
        return;
    }
    let sb = Sandbox::new();
    let report = bench_report(
        &sb,
        &[
            "cluster",
            "--store",
            &admin,
            "--workers",
            "1,2",
            "--runs",
            "60",
            "--waiting-runs",
            "200",
            "--recover-runs",
            "50",
            "--lease-ttl-ms",
            "1500",
            "--raw-seconds",
            "0.3",
            "--seconds",
            "120",
        ],
        Duration::from_secs(300),
    );

    let number = |v: &Value, f: &str| {
        assert!(v[f].is_number(), "field {f} missing in {v:#}");
        v[f].as_f64().unwrap_or(-1.0)
    };
    let throughput = report["throughput"]
        .as_array()
        .unwrap_or_else(|| panic!("no throughput array: {report:#}"));
    let workers: Vec<u64> = throughput
        .iter()
        .map(|p| {
            for f in [
                "seconds",
                "start_seconds",
                "runs_per_s",
                "tasks_per_s",
                "events_per_s",
            ] {
                assert!(number(p, f) > 0.0, "{f} in {p:#}");
            }
            for f in ["one_per_tx", "batch_10", "batch_100"] {
                assert!(number(&p["raw"], f) > 0.0, "raw.{f} in {p:#}");
            }
            for f in ["vs_one_per_tx", "vs_batch_10", "vs_batch_100"] {
                assert!(number(&p["ratio"], f) > 0.0, "ratio.{f} in {p:#}");
            }
            assert_eq!(p["runs"], 60, "{p:#}");
            assert_eq!(p["completed"], 60, "{p:#}");
            assert_eq!(p["faulted"], 0, "{p:#}");
            assert_eq!(p["lost"], 0, "{p:#}");
            // Three calls per run, each run's calls sent once (no fault was injected).
            assert_eq!(p["distinct_calls"], 180, "{p:#}");
            assert_eq!(p["calls"], 180, "{p:#}");
            p["workers"].as_u64().unwrap_or(0)
        })
        .collect();
    assert_eq!(workers, [1, 2]);

    let w = &report["waiting"];
    assert_eq!(w["runs"], 200, "{w:#}");
    assert_eq!(w["completed"], 200, "{w:#}");
    assert_eq!(w["lost"], 0, "{w:#}");
    assert_eq!(w["faulted"], 0, "{w:#}");
    assert_eq!(
        w["due_spread_ms"], 0,
        "every run came due at one instant: {w:#}"
    );
    for f in ["rss_before_bytes", "rss_waiting_bytes", "rss_after_bytes"] {
        assert!(number(w, f) > 0.0, "{f} in {w:#}");
    }
    number(w, "bytes_per_waiting_run");
    for d in [&w["fired_delay"], &w["completed_delay"]] {
        assert_eq!(d["count"], 200, "{w:#}");
        for f in ["min_ms", "p50_ms", "p99_ms", "max_ms"] {
            // Never early: a timer fires at or after its due time.
            assert!(number(d, f) >= 0.0, "{f} in {w:#}");
        }
    }

    let recovery = report["recovery"]
        .as_array()
        .unwrap_or_else(|| panic!("no recovery array: {report:#}"));
    let names: Vec<bool> = recovery
        .iter()
        .map(|r| {
            assert_eq!(r["runs"], 50, "{r:#}");
            assert_eq!(r["held_at_kill"], 50, "the worker held every run: {r:#}");
            assert_eq!(r["calls_in_flight_at_kill"], 50, "{r:#}");
            assert_eq!(r["completed"], 50, "{r:#}");
            assert_eq!(r["lost"], 0, "{r:#}");
            assert_eq!(r["faulted"], 0, "{r:#}");
            for f in ["worker_ready_s", "first_progress_s", "all_completed_s"] {
                assert!(number(r, f) > 0.0, "{f} in {r:#}");
            }
            r["same_name"].as_bool().unwrap_or(true)
        })
        .collect();
    assert_eq!(names, [true, false]);
    // Under another name the new worker waits for the dead worker's lease (1.5 s) to expire.
    assert!(
        number(&recovery[1], "first_progress_s") >= 1.0,
        "took over before the lease expired: {report:#}"
    );
}

#[test]
fn bench_cluster_rejects_bad_arguments() {
    let sb = Sandbox::new();
    let store = sb.store();
    sb.bench(&["cluster", "--store", &store]).expect_code(2);
    let pg = "postgres://postgres@127.0.0.1:1/none";
    for bad in [
        &["--workers", "0"][..],
        &["--recover-runs", "10001"],
        &["--parts", "speed"],
        &["--lease-ttl-ms", "10"],
        &["--seconds", "0"],
    ] {
        let mut args = vec!["cluster", "--store", pg];
        args.extend_from_slice(bad);
        sb.bench(&args).expect_code(2);
    }
}

/// Whether a connection to `url` can be made (within 10 s).
fn pg_reachable(url: &str) -> Result<(), String> {
    use sqlx::Connection as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        Ok(())
    })
}

/// `cairn-bench snapshots` on a short run: every figure is reported, the run reloads from a
/// snapshot with fewer than `SNAPSHOT_EVERY` events after it (no timing asserted).
#[test]
fn bench_snapshots_reports_the_ratio() {
    let sb = Sandbox::new();
    let store = sb.store_named("snapbench");
    let report = bench_report(
        &sb,
        &[
            "snapshots",
            "--store",
            &store,
            "--events",
            "1000",
            "--loads",
            "2",
        ],
        Duration::from_secs(120),
    );
    assert!(
        report["events"].as_u64().is_some_and(|n| n >= 1000),
        "{report:#}"
    );
    assert!(
        report["snapshot_at"].as_u64().is_some_and(|n| n > 0),
        "{report:#}"
    );
    assert!(
        report["events_after_snapshot"]
            .as_u64()
            .is_some_and(|n| n < report["snapshot_every"].as_u64().unwrap_or(0)),
        "{report:#}"
    );
    for f in [
        "full_load_ms_p50",
        "snapshot_load_ms_p50",
        "speedup",
        "worst_snapshot_load_ms_p50",
        "worst_speedup",
        "snapshot_write_ms_p50",
    ] {
        assert!(
            report[f].as_f64().is_some_and(|v| v > 0.0),
            "{f} in {report:#}"
        );
    }
    assert_eq!(report["intervals"].as_array().map(Vec::len), Some(6));
    sb.bench(&["snapshots", "--events", "10", "--store", &store])
        .expect_code(2);
}

/// `cairn-bench check` on a few runs: every run is found compatible and every figure reported
/// (no timing asserted); bad arguments are usage errors.
#[test]
fn bench_check_reports_runs_per_second_and_the_ratio() {
    let sb = Sandbox::new();
    let store = sb.store_named("checkbench");
    let report = bench_report(
        &sb,
        &["check", "--store", &store, "--runs", "50"],
        Duration::from_secs(120),
    );
    assert_eq!(report["runs"], 50, "{report:#}");
    assert_eq!(report["compatible"], 50, "{report:#}");
    assert_eq!(report["tasks"], 10, "{report:#}");
    assert!(
        report["events_per_run"].as_u64().is_some_and(|n| n > 10),
        "{report:#}"
    );
    for f in [
        "baseline_seconds",
        "check_seconds",
        "check_runs_per_second",
        "check_vs_baseline",
    ] {
        assert!(
            report[f].as_f64().is_some_and(|v| v > 0.0),
            "{f} in {report:#}"
        );
    }
    sb.bench(&["check", "--runs", "0", "--store", &store])
        .expect_code(2);
}
