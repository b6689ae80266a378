//! Hostile expressions (issue 8) through the user's paths: each one faults its run with the
//! bound it ran into, named with the expression and the setting, and no process hangs, grows
//! without end or aborts. `cairn run` and `cairn worker --config` take the budget as flags and
//! as settings; `cairn validate` refuses text nested too deeply; `cairn serve` answers
//! `startRun` at once, stays responsive while a worker evaluates, and stops on SIGTERM.

use super::*;
use crate::common::{Outcome, Sandbox};

/// A workflow whose one task sets `x` to the value of `expr`.
fn setting(expr: &str) -> String {
    let quoted = serde_json::to_string(&format!("${{ {expr} }}")).expect("a string");
    format!(
        "document: {{ dsl: '1.0.3', namespace: test, name: hostile, version: '0.1.0' }}\n\
         do:\n  - evaluate:\n      set:\n        x: {quoted}\n"
    )
}

/// Runs `expr` with `cairn run` under `budget` flags.
fn run_with(sb: &Sandbox, expr: &str, budget: &[&str]) -> Outcome {
    let file = sb.write("hostile.yaml", &setting(expr));
    let store = sb.store();
    let mut args = vec![
        "run",
        file.to_str().expect("a UTF-8 path"),
        "--store",
        &store,
    ];
    args.extend_from_slice(budget);
    sb.cairn(&args)
}

/// Asserts that the run faulted (exit 1) with an expression error naming `expr` and `needle`.
#[track_caller]
fn assert_faulted(out: &Outcome, expr: &str, needle: &str) {
    out.expect_code(1);
    let error = out
        .json()
        .unwrap_or_else(|| panic!("no error JSON: {}", out.describe()));
    let detail = error["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("expression `${{ {expr} }}`"))
            || detail.contains(&format!("expression `{expr}`")),
        "the detail names the expression: {}",
        out.describe()
    );
    assert!(detail.contains(needle), "{needle}: {}", out.describe());
}

#[test]
fn cairn_run_faults_each_hostile_expression_with_the_bound_it_hit() {
    let sb = Sandbox::new();
    let steps = ["--expr-max-steps", "200000"];
    for expr in [
        "def f: f; f",
        "last(range(1e10))",
        "[limit(1e9; repeat(1))]",
    ] {
        let out = run_with(&sb, expr, &steps);
        assert_faulted(
            &out,
            expr,
            "exceeded its budget of 200000 steps (setting expr_max_steps)",
        );
    }
    let memory = [
        "--expr-max-steps",
        "500000000",
        "--expr-max-memory",
        "16MiB",
    ];
    for expr in [
        "[range(1e12)]",
        "[repeat(.)]",
        "reduce range(40) as $i (\"ab\"; .+.)",
    ] {
        let out = run_with(&sb, expr, &memory);
        assert_faulted(
            &out,
            expr,
            "exceeded its memory budget of 16 MiB (setting expr_max_memory)",
        );
    }
    for expr in ["def f: [f]; f", "def f: 1 + f; f"] {
        let out = run_with(&sb, expr, &[]);
        assert_faulted(&out, expr, "nested or recursive too deeply");
    }
    // A long pipe is not deep recursion: it evaluates.
    let pipe = format!("1{}", " | .".repeat(1000));
    let out = run_with(&sb, &pipe, &[]);
    out.expect_code(0);
    assert_eq!(out.json().map(|v| v["x"].clone()), Some(json!(1)));
}

#[test]
fn the_default_budget_stops_an_endless_expression() {
    let sb = Sandbox::new();
    let out = run_with(&sb, "def f: f; f", &[]);
    assert_faulted(
        &out,
        "def f: f; f",
        "exceeded its budget of 10000000 steps (setting expr_max_steps)",
    );
}

#[test]
fn budget_settings_are_refused_when_meaningless() {
    let sb = Sandbox::new();
    sb.cairn(&["run", "x.yaml", "--expr-max-steps", "0"])
        .expect_code(2)
        .expect_message("--expr-max-steps");
    sb.cairn(&["run", "x.yaml", "--expr-max-memory", "12MB"])
        .expect_code(2)
        .expect_message("unknown unit `MB`");
}

#[test]
fn a_worker_takes_its_budget_from_its_settings_file() {
    let sb = Sandbox::new();
    let store = sb.store();
    // The wait hands the run to the worker before the expression is evaluated (`cairn start`
    // decides a run's first steps itself, under its own settings).
    let file = sb.write(
        "count.yaml",
        &setting("[range(5000)] | length").replace(
            "do:\n",
            "do:\n  - pause:\n      wait: { milliseconds: 1 }\n",
        ),
    );
    let config = sb.write("cairn.yaml", "expr_max_steps: 1000\n");
    let started = sb.cairn(&[
        "start",
        file.to_str().expect("a UTF-8 path"),
        "--store",
        &store,
    ]);
    started.expect_code(0);
    let id = started.stdout.trim().to_string();
    sb.cairn(&[
        "worker",
        "--store",
        &store,
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "--exit-when-idle",
    ])
    .expect_code(0);
    let status = sb.cairn(&["status", &id, "--json", "--store", &store]);
    status.expect_code(0);
    let s = status
        .json()
        .unwrap_or_else(|| panic!("{}", status.describe()));
    assert_eq!(s["status"], json!("faulted"), "{}", status.describe());
    assert!(
        s.to_string()
            .contains("exceeded its budget of 1000 steps (setting expr_max_steps)"),
        "{}",
        status.describe()
    );
}

#[test]
fn validate_refuses_expressions_nested_too_deeply() {
    let sb = Sandbox::new();
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let file = sb.write("deep.yaml", &setting(&deep));
    sb.cairn(&["validate", file.to_str().expect("a UTF-8 path")])
        .expect_code(2)
        .expect_message("nested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_and_stops_while_its_worker_meets_hostile_expressions() {
    let store = TestStore::sqlite();
    let server = Server::start(
        &store,
        &["--expr-max-steps", "3000000", "--expr-max-memory", "32MiB"],
    )
    .await;
    // An editor deploys definitions whose expressions recurse or loop without end: deploying
    // compiles them, and neither the compile nor the answer takes the server down.
    let hostile = [
        ("spin", "def f: f; f"),
        ("deep", "def f: [f]; f"),
        ("grow", "reduce range(40) as $i (\"ab\"; .+.)"),
    ];
    for (name, expr) in hostile {
        let source = setting(expr).replace("name: hostile", &format!("name: {name}"));
        let d = server.deploy(&source).await;
        assert_eq!(d["ok"], json!(true), "{name}: {d}");
    }
    // A definition nested too deeply is refused with a problem, quickly.
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let d = server
        .deploy(&setting(&deep).replace("name: hostile", "name: nested"))
        .await;
    assert_eq!(d["ok"], json!(false), "{d}");
    // Each run starts at once (its id comes back), and faults with its bound.
    let mut ids = Vec::new();
    for (name, _) in hostile {
        let asked = Instant::now();
        let started = server.start_run(name, json!({}), None).await;
        assert!(
            asked.elapsed() < PATIENCE,
            "startRun answered after {:?}",
            asked.elapsed()
        );
        ids.push(
            started["run"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no run id: {started}"))
                .to_string(),
        );
    }
    for (id, (name, _)) in ids.iter().zip(hostile) {
        let r = server.wait_status(id, "FAULTED").await;
        let detail = r["error"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let needle = match name {
            "spin" => "setting expr_max_steps",
            "deep" => "too deeply",
            _ => "setting expr_max_memory",
        };
        assert!(detail.contains(needle), "{name}: {r}");
    }
    // Still serving; SIGTERM stops it promptly.
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(health.status().as_u16(), 200);
    let again = server.start_run("spin", json!({}), None).await;
    assert!(again["run"]["id"].is_string(), "{again}");
    let stopped = Instant::now();
    let code = server.proc.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "cairn serve exits 0 on SIGTERM");
    assert!(stopped.elapsed() < Duration::from_secs(15));
}
