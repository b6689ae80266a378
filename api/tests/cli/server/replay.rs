//! Replay and the deploy-time check (issue 10) through the user's paths, on both stores: `cairn
//! replay`, `cairn deploy` with its check, `--require-compatible` and `--migrate`, and the
//! GraphQL `replayRun` and `deployDefinition(check:)`, against runs a `cairn serve` executes.

use super::*;
use crate::common::Outcome;

/// Waits twice for an event, so that its runs stay unfinished at a chosen point.
const V1: &str = r#"
document: {dsl: '1.0.3', namespace: test, name: gated, version: '1.0.0'}
do:
  - first: {set: {a: 1}}
  - gate: {listen: {to: {one: {with: {type: com.example.go}}}}}
  - second: {listen: {to: {one: {with: {type: com.example.more}}}}}
  - last: {set: {done: 1}}
"#;

/// The same up to `gate`, another third task and another end: compatible with runs still at
/// `gate`, not with runs that reached `second`.
const V2: &str = r#"
document: {dsl: '1.0.3', namespace: test, name: gated, version: '1.1.0'}
do:
  - first: {set: {a: 1}}
  - gate: {listen: {to: {one: {with: {type: com.example.go}}}}}
  - other: {listen: {to: {one: {with: {type: com.example.more}}}}}
  - last: {set: {done: 2}}
"#;

/// Its first task renamed: compatible with no run.
const V3: &str = r#"
document: {dsl: '1.0.3', namespace: test, name: gated, version: '2.0.0'}
do:
  - begin: {set: {a: 1}}
  - gate: {listen: {to: {one: {with: {type: com.example.go}}}}}
"#;

fn cli(store: &TestStore, args: &[&str]) -> Outcome {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--store", &store.url]);
    store.sandbox.cairn(&all)
}

fn event(kind: &str) -> String {
    json!({"specversion": "1.0", "id": kind, "source": "test", "type": kind}).to_string()
}

/// The sequence of the event of `type` at task `position` in the run's history.
fn sequence_of(store: &TestStore, run: &str, ty: &str, position: &str) -> u64 {
    let h = cli(store, &["history", run, "--json"]);
    h.expect_code(0);
    h.json_lines()
        .expect("JSON lines")
        .iter()
        .find(|e| e["type"] == json!(ty) && e["data"]["position"] == json!(position))
        .and_then(|e| e["sequence"].as_u64())
        .unwrap_or_else(|| panic!("no {ty} at {position}: {}", h.describe()))
}

fn line_of<'a>(out: &'a Outcome, run: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with(run))
        .unwrap_or_else(|| panic!("no line for {run}: {}", out.describe()))
}

async fn replay_and_the_deploy_check(store: TestStore) {
    let server = Server::start(&store, &[]).await;
    assert_eq!(server.deploy(V1).await["ok"], json!(true));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = server.start_run("gated", json!({}), None).await;
        ids.push(r["run"]["id"].as_str().expect("a run id").to_string());
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    for id in &ids {
        server.wait_status(id, "WAITING").await;
    }
    // B goes past `gate` and waits in `second`.
    cli(&store, &["signal", &b, "--event", &event("com.example.go")]).expect_code(0);
    let deadline = Instant::now() + PATIENCE;
    while server.run(&b).await["currentTasks"] != json!(["/do/2/second"]) {
        assert!(Instant::now() < deadline, "run {b} never reached `second`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.wait_status(&b, "WAITING").await;

    // ----- cairn replay ---------------------------------------------------------------------
    let own = cli(&store, &["replay", &a]);
    own.expect_code(0);
    assert!(own.stdout.starts_with("identical"), "{}", own.describe());
    let own = cli(&store, &["replay", &b, "--json"]);
    own.expect_code(0);
    let report = own.json().expect("a JSON report");
    assert_eq!(report["identical"], json!(true), "{report}");
    assert!(report["decisions"].as_u64().unwrap_or(0) > 3, "{report}");
    cli(&store, &["replay", &a, "--version", "1.0.0"]).expect_code(0);

    let v3 = store.sandbox.write("v3.yaml", V3);
    let v3 = v3.to_str().expect("a UTF-8 path");
    let other = cli(&store, &["replay", &a, "--definition", v3]);
    other.expect_code(1);
    assert!(
        other.stdout.starts_with(
            "diverges at event 3: recorded TaskStarted at /do/0/first, new version decides \
             TaskStarted at /do/0/begin"
        ),
        "{}",
        other.describe()
    );
    let other = cli(&store, &["replay", &a, "--definition", v3, "--json"]);
    other.expect_code(1);
    let d = &other.json().expect("a JSON report")["divergence"];
    assert_eq!(d["sequence"], json!(3), "{d}");
    assert_eq!(d["recorded"]["task"], json!("/do/0/first"), "{d}");
    assert_eq!(d["new"]["task"], json!("/do/0/begin"), "{d}");
    assert_eq!(d["new"]["event"]["type"], json!("TaskStarted"), "{d}");

    // Clear errors.
    cli(&store, &["replay", "no-such-run"])
        .expect_code(2)
        .expect_message("not found");
    let missing = cli(&store, &["replay", "no-such-run", "--json"]);
    missing.expect_code(2);
    let e: Value = serde_json::from_str(missing.stderr.trim()).expect("a JSON error");
    assert_eq!(e["error"]["code"], json!("NOT_FOUND"), "{e}");
    cli(&store, &["replay", &a, "--definition", "nowhere.yaml"])
        .expect_code(2)
        .expect_message("nowhere.yaml");
    let bad = store
        .sandbox
        .write("bad.yaml", "document: {dsl: '1.0.3'}\n");
    cli(
        &store,
        &["replay", &a, "--definition", bad.to_str().expect("utf-8")],
    )
    .expect_code(2)
    .expect_message("invalid definition");
    cli(&store, &["replay", &a, "--version", "9.9.9"])
        .expect_code(2)
        .expect_message("9.9.9");

    // ----- GraphQL replayRun -----------------------------------------------------------------
    let q = "query($id: String!, $s: String) { replayRun(id: $id, source: $s) { runId identical events decisions divergence { sequence message recorded { eventType task } new { eventType task event } } } }";
    let r = server.data(q, json!({ "id": a })).await["replayRun"].clone();
    assert_eq!(r["identical"], json!(true), "{r}");
    let r = server.data(q, json!({ "id": a, "s": V3 })).await["replayRun"].clone();
    assert_eq!(r["identical"], json!(false), "{r}");
    assert_eq!(r["divergence"]["sequence"], json!(3), "{r}");
    assert_eq!(r["divergence"]["new"]["task"], json!("/do/0/begin"), "{r}");
    let missing = server.gql(q, json!({ "id": "no-such-run" })).await;
    assert_eq!(code_of(&missing), Some("NOT_FOUND"), "{missing}");

    // ----- the deploy-time check ---------------------------------------------------------------
    let second = sequence_of(&store, &b, "TaskStarted", "/do/2/second");
    let v2 = store.sandbox.write("v2.yaml", V2);
    let v2 = v2.to_str().expect("a UTF-8 path");
    // --require-compatible: B diverges, so nothing is published.
    let refused = cli(&store, &["deploy", v2, "--require-compatible"]);
    refused
        .expect_code(1)
        .expect_message("nothing was deployed");
    assert_eq!(line_of(&refused, &a), format!("{a} compatible"));
    assert_eq!(
        line_of(&refused, &b),
        format!(
            "{b} diverges at event {second}: recorded TaskStarted at /do/2/second, new version \
             decides TaskStarted at /do/2/other"
        )
    );
    let def = "query { definition(namespace: \"test\", name: \"gated\", version: \"1.1.0\") { version } }";
    let none = server.gql(def, json!({})).await;
    assert!(none["data"]["definition"].is_null(), "{none}");

    // By default the deploy goes ahead and every run stays on its version.
    let ahead = cli(&store, &["deploy", v2]);
    ahead.expect_code(0);
    assert_eq!(line_of(&ahead, &a), format!("{a} compatible"));
    assert!(
        line_of(&ahead, &b).contains("diverges"),
        "{}",
        ahead.describe()
    );
    assert_eq!(
        server.data(def, json!({})).await["definition"]["version"],
        json!("1.1.0")
    );
    for id in [&a, &b] {
        let s = cli(&store, &["status", id, "--json"]);
        assert_eq!(
            s.json().expect("status")["definition"]["version"],
            json!("1.0.0")
        );
    }

    // --migrate moves the compatible run only.
    let moved = cli(&store, &["deploy", v2, "--migrate", "--json"]);
    moved.expect_code(0);
    let report = moved.json().expect("a JSON report");
    let run = |id: &str| {
        report["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["runId"] == json!(id))
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {report}"))
    };
    assert_eq!(run(&a)["migrated"], json!(true), "{report}");
    assert_eq!(run(&b)["migrated"], json!(false), "{report}");
    assert_eq!(run(&b)["divergence"]["sequence"], json!(second), "{report}");
    let status = |id: &str| {
        cli(&store, &["status", id, "--json"])
            .json()
            .expect("status")
    };
    assert_eq!(status(&a)["definition"]["version"], json!("1.1.0"));
    assert_eq!(status(&b)["definition"]["version"], json!("1.0.0"));
    // The migrated run replays on each version at each point of its history.
    cli(&store, &["replay", &a]).expect_code(0);
    let h = cli(&store, &["history", &a, "--json"]);
    let migrated = h
        .json_lines()
        .expect("JSON lines")
        .into_iter()
        .find(|e| e["type"] == json!("RunMigrated"))
        .unwrap_or_else(|| panic!("no RunMigrated: {}", h.describe()));
    assert_eq!(migrated["data"]["to_version"], json!("1.1.0"), "{migrated}");
    assert_ne!(migrated["data"]["from_hash"], migrated["data"]["to_hash"]);

    // ----- GraphQL deployDefinition(check:) ----------------------------------------------------
    let deploy = "mutation($s: String!, $c: Boolean!, $r: Boolean!, $n: Int) { deployDefinition(source: $s, check: $c, requireCompatible: $r, sample: $n) { ok problems { message } definition { version } check { compatible unfinished diverging runs { runId version compatible migrated message divergence { sequence recorded { task } new { task } } } } } }";
    let r = server
        .data(deploy, json!({ "s": V3, "c": true, "r": true }))
        .await["deployDefinition"]
        .clone();
    assert_eq!(r["ok"], json!(false), "{r}");
    assert_eq!(r["check"]["diverging"], json!(2), "{r}");
    assert!(
        r["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing was deployed")),
        "{r}"
    );
    let runs = r["check"]["runs"].as_array().cloned().unwrap_or_default();
    assert!(
        runs.iter().all(|x| x["divergence"]["sequence"] == json!(3)
            && x["divergence"]["new"]["task"] == json!("/do/0/begin")),
        "{r}"
    );
    let r = server
        .data(deploy, json!({ "s": V3, "c": true, "r": false, "n": 1 }))
        .await["deployDefinition"]
        .clone();
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["definition"]["version"], json!("2.0.0"), "{r}");
    assert_eq!(r["check"]["runs"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["check"]["unfinished"], json!(2), "{r}");

    // ----- the runs end: the migrated one on the new version, the other on its own -------------
    for (id, kinds) in [
        (&a, vec!["com.example.go", "com.example.more"]),
        (&b, vec!["com.example.more"]),
    ] {
        for k in kinds {
            cli(&store, &["signal", id, "--event", &event(k)]).expect_code(0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let done_a = server.wait_status(&a, "COMPLETED").await;
    let done_b = server.wait_status(&b, "COMPLETED").await;
    assert!(
        done_a["output"].to_string().contains("\"done\":2"),
        "{done_a}"
    );
    assert!(
        done_b["output"].to_string().contains("\"done\":1"),
        "{done_b}"
    );
    assert_eq!(status(&a)["definition"]["version"], json!("1.1.0"));
    // Both replay identically to the end, each on the versions that decided it.
    cli(&store, &["replay", &a]).expect_code(0);
    cli(&store, &["replay", &b]).expect_code(0);
}

on_both_stores!(replay_and_the_deploy_check);
