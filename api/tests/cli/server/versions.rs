//! Definitions as streams, through the `cairn` binary and `cairn serve` over HTTP, on SQLite and
//! PostgreSQL: immutable labels, identical republishing, history, diff, rollback (a run in
//! flight keeps its version and completes on it, a run started after uses the rolled-back one)
//! and deprecation.

use super::*;
use crate::common::Outcome;

/// Version 1: waits for a ping, then says which version it is.
const FLOW_V1: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: flow
  version: '1.0.0'
do:
  - waitForPing:
      listen:
        to:
          one:
            with:
              type: com.example.ping
  - mark:
      set:
        version: 1
"#;

/// The same label with other content.
const FLOW_V1_OTHER: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: flow
  version: '1.0.0'
do:
  - mark:
      set:
        version: 100
"#;

/// Version 2: another `mark`, and a task more.
const FLOW_V2: &str = r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: flow
  version: '2.0.0'
do:
  - waitForPing:
      listen:
        to:
          one:
            with:
              type: com.example.ping
  - mark:
      set:
        version: 2
  - extra:
      set:
        version: 2
        extra: true
"#;

const PING: &str =
    r#"{"specversion":"1.0","id":"1","source":"test","type":"com.example.ping","data":{}}"#;

fn cli(store: &TestStore, args: &[&str]) -> Outcome {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--store", &store.url]);
    store.sandbox.cairn(&all)
}

fn hash_of(store: &TestStore, reference: &str) -> String {
    let out = cli(store, &["definitions", "show", reference, "--json"]);
    out.expect_code(0);
    out.json()
        .and_then(|v| v["hash"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no hash: {}", out.describe()))
}

fn status(store: &TestStore, run: &str) -> Value {
    let out = cli(store, &["status", run, "--json"]);
    out.expect_code(0);
    out.json().unwrap_or_else(|| panic!("{}", out.describe()))
}

async fn definitions_through_the_cli(store: TestStore) {
    let v1 = store.sandbox.write("v1.yaml", FLOW_V1);
    let v1 = v1.to_str().expect("utf-8");
    let other = store.sandbox.write("v1-other.yaml", FLOW_V1_OTHER);
    let other = other.to_str().expect("utf-8");
    let v2 = store.sandbox.write("v2.yaml", FLOW_V2);
    let v2 = v2.to_str().expect("utf-8");

    cli(&store, &["deploy", v1, "--note", "first"])
        .expect_code(0)
        .expect_message("deployed test/flow 1.0.0");
    let h1 = hash_of(&store, "test/flow@1.0.0");
    // The same content again: a no-op that says so.
    cli(&store, &["deploy", v1])
        .expect_code(0)
        .expect_message("already published with this content");
    // Other content under the same label: refused, naming the label and both hashes.
    let refused = cli(&store, &["deploy", other]);
    refused
        .expect_code(2)
        .expect_message("version 1.0.0")
        .expect_message(&h1)
        .expect_message("immutable");
    let other_hash = refused
        .stderr
        .split("this content is ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    assert_eq!(other_hash.len(), 64, "{}", refused.describe());
    assert_ne!(other_hash, h1);
    // --json errors name the class.
    let err = cli(&store, &["definitions", "show", "test/nope", "--json"]);
    err.expect_code(2);
    assert!(err.stderr.contains("\"NOT_FOUND\""), "{}", err.describe());

    cli(&store, &["deploy", v2]).expect_code(0);
    let h2 = hash_of(&store, "test/flow");
    assert_ne!(h1, h2);

    // A run in flight on 2.0.0 (waiting for its ping).
    let a = cli(&store, &["start", "test/flow"]);
    a.expect_code(0);
    let a = a.stdout.trim().to_string();
    cli(&store, &["worker", "--exit-when-idle"]).expect_code(0);
    assert_eq!(status(&store, &a)["definition"]["version"], json!("2.0.0"));
    assert_eq!(status(&store, &a)["status"], json!("waiting"));

    // Roll back: `latest` is 1.0.0 again, and a new run starts on it.
    cli(&store, &["rollback", "test/flow", "--to", "1.0.0"])
        .expect_code(0)
        .expect_message("the head is now 1.0.0");
    let shown = cli(&store, &["definitions", "show", "test/flow", "--json"]);
    shown.expect_code(0);
    let shown = shown.json().expect("json");
    assert_eq!(shown["version"], json!("1.0.0"));
    assert_eq!(shown["head"], json!(true));
    let b = cli(&store, &["start", "test/flow"]);
    b.expect_code(0);
    let b = b.stdout.trim().to_string();
    for run in [&a, &b] {
        cli(&store, &["signal", run, "--event", PING]).expect_code(0);
    }
    cli(&store, &["worker", "--exit-when-idle"]).expect_code(0);
    let (sa, sb) = (status(&store, &a), status(&store, &b));
    assert_eq!(sa["status"], json!("completed"), "{sa}");
    assert_eq!(
        sa["output"]["version"],
        json!(2),
        "the run in flight kept 2.0.0: {sa}"
    );
    assert_eq!(sa["output"]["extra"], json!(true), "{sa}");
    assert_eq!(sb["definition"]["version"], json!("1.0.0"));
    assert_eq!(sb["output"]["version"], json!(1), "{sb}");

    // Deprecation: the head cannot be deprecated; another version can, and refuses new runs.
    cli(&store, &["definitions", "deprecate", "test/flow@1.0.0"])
        .expect_code(2)
        .expect_message("is the head");
    cli(&store, &["rollback", "test/flow", "--to", "2.0.0"]).expect_code(0);
    cli(
        &store,
        &[
            "definitions",
            "deprecate",
            "test/flow@1.0.0",
            "--reason",
            "bad",
        ],
    )
    .expect_code(0)
    .expect_message("deprecated");
    cli(&store, &["start", "test/flow@1.0.0"])
        .expect_code(2)
        .expect_message("deprecated");
    cli(&store, &["rollback", "test/flow", "--to", "1.0.0"])
        .expect_code(2)
        .expect_message("deprecated");
    cli(&store, &["start", "test/flow@2.0.0"]).expect_code(0);

    // History: every change is an event, nothing deleted.
    let h = cli(&store, &["definitions", "history", "test/flow", "--json"]);
    h.expect_code(0);
    let h = h.json().expect("json");
    let kinds: Vec<(String, String)> = h
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["to"]
                    .as_str()
                    .or(e["label"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let expect = [
        ("VersionPublished", "1.0.0"),
        ("HeadMoved", "1.0.0"),
        ("VersionPublished", "2.0.0"),
        ("HeadMoved", "2.0.0"),
        ("HeadMoved", "1.0.0"),
        ("HeadMoved", "2.0.0"),
        ("VersionDeprecated", "1.0.0"),
    ];
    assert_eq!(
        kinds,
        expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>(),
        "{h}"
    );
    assert_eq!(h[0]["by"], json!("cli"));
    assert_eq!(h[0]["note"], json!("first"));
    assert_eq!(h[4]["reason"], json!("rollback"));
    assert_eq!(h[6]["reason"], json!("bad"));

    // The structural diff.
    let d = cli(
        &store,
        &[
            "definitions",
            "diff",
            "test/flow",
            "1.0.0",
            "2.0.0",
            "--json",
        ],
    );
    d.expect_code(0);
    let d = d.json().expect("json");
    assert_eq!(
        d["tasks"],
        json!([
            {"kind": "changed", "path": "/do/1/mark", "fields": ["set"]},
            {"kind": "added", "path": "/do/2/extra"}
        ]),
        "{d}"
    );
    let text = cli(
        &store,
        &["definitions", "diff", "test/flow", "1.0.0", "2.0.0"],
    );
    text.expect_code(0)
        .expect_message("changed   /do/1/mark [set]")
        .expect_message("added     /do/2/extra");

    let list = cli(&store, &["definitions", "list", "--json"]);
    list.expect_code(0);
    let list = list.json().expect("json");
    assert_eq!(list[0]["head"], json!("2.0.0"), "{list}");
    assert_eq!(list[0]["versions"][0]["deprecated"], json!(true), "{list}");
}

async fn definitions_through_graphql(store: TestStore) {
    let server = Server::start(&store, &["--no-workers"]).await;
    let editor = new_token(&store, "editor", "deployer");
    let viewer = new_token(&store, "viewer", "watcher");
    let deploy = "mutation($s: String!, $n: String) { deployDefinition(source: $s, note: $n) \
                  { ok published message definition { version hash head } } }";

    let r = server
        .gql_as(Some(&editor), deploy, json!({"s": FLOW_V1, "n": "first"}))
        .await
        .body;
    let d = &r["data"]["deployDefinition"];
    assert_eq!(d["published"], json!(true), "{r}");
    assert_eq!(d["definition"]["head"], json!("1.0.0"), "{r}");
    let h1 = d["definition"]["hash"].as_str().expect("hash").to_string();

    let r = server
        .gql_as(Some(&editor), deploy, json!({"s": FLOW_V1}))
        .await
        .body;
    assert_eq!(
        r["data"]["deployDefinition"]["published"],
        json!(false),
        "{r}"
    );
    assert!(
        r["data"]["deployDefinition"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already published")),
        "{r}"
    );

    let r = server
        .gql_as(Some(&editor), deploy, json!({"s": FLOW_V1_OTHER}))
        .await
        .body;
    assert_eq!(code_of(&r), Some("BAD_USER_INPUT"), "{r}");
    let message = r["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&h1) && message.contains("1.0.0"), "{r}");

    let r = server
        .gql_as(Some(&editor), deploy, json!({"s": FLOW_V2}))
        .await
        .body;
    assert_eq!(
        r["data"]["deployDefinition"]["published"],
        json!(true),
        "{r}"
    );

    let show = "{ definition(namespace: \"test\", name: \"flow\") { version head \
                versions { version publishedBy note head deprecated } \
                history { sequence type version from reason by } } }";
    let r = server.gql(show, json!({})).await;
    let d = &r["data"]["definition"];
    assert_eq!(d["version"], json!("2.0.0"), "{r}");
    assert_eq!(d["versions"][0]["publishedBy"], json!("deployer"), "{r}");
    assert_eq!(d["versions"][0]["note"], json!("first"), "{r}");
    assert_eq!(d["history"].as_array().map(Vec::len), Some(4), "{r}");

    let rollback = "mutation { rollbackDefinition(namespace: \"test\", name: \"flow\", \
                    to: \"1.0.0\") { changed definition { version head } } }";
    let r = server.gql_as(Some(&viewer), rollback, json!({})).await.body;
    assert_eq!(code_of(&r), Some("FORBIDDEN"), "{r}");
    let r = server.gql_as(Some(&editor), rollback, json!({})).await.body;
    assert_eq!(
        r["data"]["rollbackDefinition"]["changed"],
        json!(true),
        "{r}"
    );
    assert_eq!(
        r["data"]["rollbackDefinition"]["definition"]["head"],
        json!("1.0.0"),
        "{r}"
    );
    let r = server.gql(show, json!({})).await;
    assert_eq!(r["data"]["definition"]["version"], json!("1.0.0"), "{r}");
    let last = &r["data"]["definition"]["history"][4];
    assert_eq!(last["reason"], json!("rollback"), "{r}");
    assert_eq!(last["from"], json!("2.0.0"), "{r}");
    assert_eq!(last["by"], json!("deployer"), "{r}");

    let deprecate = "mutation { deprecateDefinitionVersion(namespace: \"test\", name: \"flow\", \
                     version: \"2.0.0\", reason: \"broken\") { changed definition { deprecated } } }";
    let r = server
        .gql_as(Some(&editor), deprecate, json!({}))
        .await
        .body;
    assert_eq!(
        r["data"]["deprecateDefinitionVersion"]["definition"]["deprecated"],
        json!(true),
        "{r}"
    );
    let start = "mutation($v: String!) { startRun(definition: {namespace: \"test\", \
                 name: \"flow\", version: $v}) { run { id } } }";
    let r = server.gql(start, json!({"v": "2.0.0"})).await;
    assert_eq!(code_of(&r), Some("CONFLICT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("deprecated")),
        "{r}"
    );
    let r = server.gql(start, json!({"v": "latest"})).await;
    assert!(r["data"]["startRun"]["run"]["id"].is_string(), "{r}");

    let diff = "{ definitionDiff(namespace: \"test\", name: \"flow\", from: \"1.0.0\", \
                to: \"2.0.0\") { workflow tasks { kind path from fields } } }";
    let r = server.gql(diff, json!({})).await;
    assert_eq!(
        r["data"]["definitionDiff"]["tasks"],
        json!([
            {"kind": "changed", "path": "/do/1/mark", "from": null, "fields": ["set"]},
            {"kind": "added", "path": "/do/2/extra", "from": null, "fields": []}
        ]),
        "{r}"
    );
}

on_both_stores!(definitions_through_the_cli, definitions_through_graphql);
