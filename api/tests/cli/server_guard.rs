//! Roles and floods, against a real `cairn serve` over real HTTP and WebSocket (issue 8): inline
//! runs need the right to deploy and never publish; the access matrix of every root field and
//! role, generated from the schema and printed in `docs/security.md`; caps on live
//! subscriptions and the rate of subscribe messages; the `connection_init` deadline; header and
//! idle deadlines; the cap on open connections; deep YAML refused before parsing.
//!
//! A child of `server`, so that it shares its harness (`Server`, `TestStore`, tokens).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{code, code_of, new_token, Server, Socket, TestStore, LISTEN, PATIENCE, QUICK};

on_both_stores!(inline_runs_need_the_right_to_deploy_and_never_become_latest);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_matrix_on_sqlite() {
    access_matrix(TestStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_caps_on_sqlite() {
    subscription_caps(TestStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_rate_on_sqlite() {
    subscribe_rate(TestStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_on_sqlite() {
    slow_and_idle_clients(TestStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_on_sqlite() {
    connection_cap(TestStore::sqlite()).await;
}

// ----- roles ----------------------------------------------------------------------------------

/// QUICK under a higher version that returns every secret it can see.
fn greedy(version: &str) -> String {
    format!(
        r#"
document:
  dsl: '1.0.3'
  namespace: test
  name: quick
  version: '{version}'
do:
  - grab:
      set:
        stolen: ${{ $secrets }}
"#
    )
}

const START_SOURCE: &str = "mutation($s: String!) { startRun(source: $s) { created run { id status output definition { version } } } }";
const LATEST: &str = "{ definition(namespace: \"test\", name: \"quick\") { version } definitions(namespace: \"test\") { version } }";

async fn inline_runs_need_the_right_to_deploy_and_never_become_latest(store: TestStore) {
    let canary = "canary-7f3a9c";
    let secrets = store
        .sandbox
        .write("secrets.yaml", &format!("api: {{ token: {canary} }}\n"));
    let secrets = secrets.to_string_lossy().to_string();
    let server = Server::start(&store, &["--secrets", &secrets]).await;
    server.deploy(QUICK).await;
    let operator = new_token(&store, "operator", "op");

    // The operator cannot run its own code, nor read secrets through it.
    let a = server
        .gql_as(
            Some(&operator),
            START_SOURCE,
            json!({ "s": greedy("9.0.0") }),
        )
        .await;
    assert_eq!(code(&a), Some("FORBIDDEN"), "{}", a.body);
    assert!(!a.body.to_string().contains(canary), "{}", a.body);
    let d = server.data(LATEST, json!({})).await;
    assert_eq!(d["definition"]["version"], json!("1.0.0"), "{d}");

    // The admin may run code inline; the run executes the given text, and it is not deployed:
    // `latest` and the list stay as they were, so an operator starting `quick` by name runs
    // the deployed 1.0.0.
    let d = server
        .data(START_SOURCE, json!({ "s": greedy("9.0.0") }))
        .await;
    let run = &d["startRun"]["run"];
    assert_eq!(run["definition"]["version"], json!("9.0.0"), "{d}");
    let id = run["id"].as_str().expect("a run id");
    let done = server.wait_status(id, "COMPLETED").await;
    assert_eq!(
        done["output"]["stolen"]["api"]["token"],
        json!(canary),
        "the run was executed from its text"
    );
    let d = server.data(LATEST, json!({})).await;
    assert_eq!(
        d["definition"]["version"],
        json!("1.0.0"),
        "an inline run changed `latest`: {d}"
    );
    assert_eq!(d["definitions"], json!([{ "version": "1.0.0" }]), "{d}");
    let a = server
        .gql_as(
            Some(&operator),
            "mutation { startRun(definition: {namespace: \"test\", name: \"quick\"}, input: {name: \"o\"}) { run { definition { version } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        a.body["data"]["startRun"]["run"]["definition"]["version"],
        json!("1.0.0"),
        "{}",
        a.body
    );
    // Naming the inline version does not find it either.
    let a = server
        .gql_as(
            Some(&operator),
            "mutation { startRun(definition: {namespace: \"test\", name: \"quick\", version: \"9.0.0\"}) { created } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&a), Some("NOT_FOUND"), "{}", a.body);

    // Deploying the same text publishes it.
    let r = server.deploy(&greedy("9.0.0")).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let d = server.data(LATEST, json!({})).await;
    assert_eq!(d["definition"]["version"], json!("9.0.0"), "{d}");
}

// ----- the access matrix ----------------------------------------------------------------------

const ROLES: [&str; 4] = ["admin", "editor", "operator", "viewer"];

const TYPE_REF: &str =
    "fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

/// A root field as introspection describes it.
struct RootField {
    root: &'static str,
    name: String,
    args: Vec<Value>,
    ty: Value,
}

/// The GraphQL type of a type reference (`[String!]!`).
fn type_text(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", type_text(&t["ofType"])),
        Some("LIST") => format!("[{}]", type_text(&t["ofType"])),
        _ => t["name"].as_str().unwrap_or("").to_string(),
    }
}

/// The named type under NON_NULL and LIST wrappers.
fn named(t: &Value) -> &Value {
    match t["kind"].as_str() {
        Some("NON_NULL") | Some("LIST") => named(&t["ofType"]),
        _ => t,
    }
}

/// A value of type `t` that passes validation (required input fields filled in).
fn sample(t: &Value, types: &BTreeMap<String, Value>) -> Value {
    match t["kind"].as_str() {
        Some("NON_NULL") => sample(&t["ofType"], types),
        Some("LIST") => json!([]),
        _ => {
            let name = t["name"].as_str().unwrap_or("");
            let def = types.get(name).cloned().unwrap_or(Value::Null);
            match def["kind"].as_str() {
                Some("ENUM") => def["enumValues"][0]["name"].clone(),
                Some("INPUT_OBJECT") => {
                    let mut o = serde_json::Map::new();
                    for f in def["inputFields"].as_array().into_iter().flatten() {
                        if f["type"]["kind"] == json!("NON_NULL") && f["defaultValue"].is_null() {
                            let n = f["name"].as_str().unwrap_or("").to_string();
                            o.insert(n, sample(&f["type"], types));
                        }
                    }
                    Value::Object(o)
                }
                _ => match name {
                    "Int" | "Float" => json!(1),
                    "Boolean" => json!(false),
                    "JSON" => json!({}),
                    _ => json!("no-such-thing"),
                },
            }
        }
    }
}

/// A document calling `f` with every required argument (as variables), and its variables.
fn call(
    f: &RootField,
    types: &BTreeMap<String, Value>,
    extra: &[(&str, &str, Value)],
) -> (String, Value) {
    let mut decls = Vec::new();
    let mut args = Vec::new();
    let mut vars = serde_json::Map::new();
    for a in &f.args {
        let required = a["type"]["kind"] == json!("NON_NULL") && a["defaultValue"].is_null();
        if !required {
            continue;
        }
        let n = a["name"].as_str().unwrap_or("");
        decls.push(format!("${n}: {}", type_text(&a["type"])));
        args.push(format!("{n}: ${n}"));
        vars.insert(n.to_string(), sample(&a["type"], types));
    }
    for (n, ty, v) in extra {
        decls.push(format!("${n}: {ty}"));
        args.push(format!("{n}: ${n}"));
        vars.insert(n.to_string(), v.clone());
    }
    let kind = named(&f.ty)["kind"].as_str().unwrap_or("");
    let selection = if matches!(kind, "OBJECT" | "INTERFACE" | "UNION") {
        " { __typename }"
    } else {
        ""
    };
    let op = match f.root {
        "Query" => "query",
        "Mutation" => "mutation",
        _ => "subscription",
    };
    let decls = if decls.is_empty() {
        String::new()
    } else {
        format!("({})", decls.join(", "))
    };
    let args = if args.is_empty() {
        String::new()
    } else {
        format!("({})", args.join(", "))
    };
    (
        format!("{op}{decls} {{ {}{args}{selection} }}", f.name),
        Value::Object(vars),
    )
}

/// Every root field, from introspection over HTTP, and every named type.
async fn root_fields(server: &Server) -> (Vec<RootField>, BTreeMap<String, Value>) {
    let q = format!(
        "{{ __schema {{ queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }} \
         types {{ name kind enumValues {{ name }} \
         inputFields {{ name defaultValue type {{ ...T }} }} \
         fields {{ name type {{ ...T }} args {{ name defaultValue type {{ ...T }} }} }} }} }} }} {TYPE_REF}"
    );
    let d = server.data(&q, json!({})).await;
    let schema = &d["__schema"];
    let mut types = BTreeMap::new();
    for t in schema["types"].as_array().into_iter().flatten() {
        types.insert(t["name"].as_str().unwrap_or("").to_string(), t.clone());
    }
    let mut fields = Vec::new();
    for (root, key) in [
        ("Query", "queryType"),
        ("Mutation", "mutationType"),
        ("Subscription", "subscriptionType"),
    ] {
        let name = schema[key]["name"].as_str().expect("a root type");
        for f in types[name]["fields"].as_array().into_iter().flatten() {
            fields.push(RootField {
                root,
                name: f["name"].as_str().unwrap_or("").to_string(),
                args: f["args"].as_array().cloned().unwrap_or_default(),
                ty: f["type"].clone(),
            });
        }
    }
    (fields, types)
}

/// Opens a graphql-transport-ws socket with `token` in `connection_init`.
async fn ws_connect(server: &Server, token: &str) -> Socket {
    let mut req = server
        .ws_url()
        .into_client_request()
        .expect("a WebSocket request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("a header value"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("WebSocket connect");
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket
        .send(Message::text(init.to_string()))
        .await
        .expect("send connection_init");
    let ack = ws_recv(&mut socket, PATIENCE)
        .await
        .expect("a connection_ack");
    assert_eq!(ack["type"], json!("connection_ack"), "{ack}");
    socket
}

async fn ws_subscribe(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    let m = json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } });
    socket
        .send(Message::text(m.to_string()))
        .await
        .expect("send subscribe");
}

/// The next protocol message within `wait` (pings answered); `None` on timeout or close.
async fn ws_recv(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, socket.next())
            .await
            .ok()??
            .ok()?;
        let text = match m {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => return None,
            _ => continue,
        };
        let v: Value = serde_json::from_str(&text).expect("JSON on the WebSocket");
        match v["type"].as_str() {
            Some("ping") => {
                let _ = socket
                    .send(Message::text(json!({ "type": "pong" }).to_string()))
                    .await;
            }
            Some("pong") => {}
            _ => return Some(v),
        }
    }
}

/// The first outcome of each subscription id, until every id has one or `wait` passes:
/// `Some(code)` for an error (`""` without a code), `None` for data or a silent stream.
async fn ws_outcomes(
    socket: &mut Socket,
    ids: &[String],
    wait: Duration,
) -> BTreeMap<String, Option<String>> {
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
    let deadline = Instant::now() + wait;
    while out.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = ws_recv(socket, left).await else {
            break;
        };
        let Some(id) = m["id"].as_str() else { continue };
        if out.contains_key(id) {
            continue;
        }
        let outcome = match m["type"].as_str() {
            Some("next") => m["payload"]["errors"][0]["extensions"]["code"]
                .as_str()
                .map(str::to_string)
                .or_else(|| m["payload"].get("errors").map(|_| String::new())),
            Some("error") => Some(
                m["payload"][0]["extensions"]["code"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            ),
            _ => None,
        };
        out.insert(id.to_string(), outcome);
    }
    for id in ids {
        out.entry(id.clone()).or_insert(None);
    }
    out
}

/// The rows of the matrix: `(operation, allowed per role)`, in schema order.
type Matrix = Vec<(String, [bool; 4])>;

fn render(matrix: &Matrix) -> String {
    let mut s =
        String::from("| operation | admin | editor | operator | viewer |\n|---|---|---|---|---|\n");
    for (op, allowed) in matrix {
        let cells: Vec<&str> = allowed
            .iter()
            .map(|a| if *a { "yes" } else { "no" })
            .collect();
        s.push_str(&format!("| `{op}` | {} |\n", cells.join(" | ")));
    }
    s
}

const MATRIX_START: &str = "<!-- access-matrix:start (generated by the access_matrix test) -->\n";
const MATRIX_END: &str = "<!-- access-matrix:end -->";

/// Every role against every root field of the schema (queries and mutations over HTTP,
/// subscriptions over WebSocket): allowed means anything but FORBIDDEN, refused means FORBIDDEN.
/// The table must match `docs/security.md` (`CAIRN_UPDATE_SCHEMAS=1` rewrites it), so a
/// new field, or a changed guard, fails until the document says so.
async fn access_matrix(store: TestStore) {
    let server = Server::start(&store, &[]).await;
    server.deploy(QUICK).await;
    let tokens: Vec<String> = ROLES
        .iter()
        .map(|r| {
            if *r == "admin" {
                server.token.clone()
            } else {
                new_token(&store, r, &format!("matrix-{r}"))
            }
        })
        .collect();
    let (fields, types) = root_fields(&server).await;
    assert!(
        fields.iter().any(|f| f.root == "Subscription"),
        "no subscriptions found"
    );
    let mut matrix: Matrix = Vec::new();
    // Queries and mutations, and `startRun` once more with `source`.
    for f in fields.iter().filter(|f| f.root != "Subscription") {
        let mut variants = vec![(
            format!("{} {}", f.root.to_lowercase(), f.name),
            call(f, &types, &[]),
        )];
        if f.name == "startRun" {
            variants.push((
                "mutation startRun(source:)".to_string(),
                call(f, &types, &[("source", "String", json!(QUICK))]),
            ));
        }
        if f.name == "replayRun" {
            variants.push((
                "query replayRun(source:)".to_string(),
                call(f, &types, &[("source", "String", json!(QUICK))]),
            ));
        }
        if f.name == "deployDefinition" {
            variants.push((
                "mutation deployDefinition(migrate:)".to_string(),
                call(f, &types, &[("migrate", "Boolean", json!(true))]),
            ));
        }
        for (label, (doc, vars)) in variants {
            let mut allowed = [false; 4];
            for (i, t) in tokens.iter().enumerate() {
                let a = server.gql_as(Some(t), &doc, vars.clone()).await;
                assert_eq!(a.status, 200, "{label} as {}: {}", ROLES[i], a.body);
                allowed[i] = code(&a) != Some("FORBIDDEN");
            }
            matrix.push((label, allowed));
        }
    }
    // Subscriptions: one socket per role, every field subscribed at once.
    let subs: Vec<&RootField> = fields.iter().filter(|f| f.root == "Subscription").collect();
    let mut by_role = Vec::new();
    for t in &tokens {
        let mut socket = ws_connect(&server, t).await;
        let mut ids = Vec::new();
        for (i, f) in subs.iter().enumerate() {
            let (doc, vars) = call(f, &types, &[]);
            ws_subscribe(&mut socket, &i.to_string(), &doc, vars).await;
            ids.push(i.to_string());
        }
        // A refusal comes at once; a permitted feed may stay silent (nothing changes).
        by_role.push(ws_outcomes(&mut socket, &ids, Duration::from_secs(3)).await);
        let _ = socket.close(None).await;
    }
    for (i, f) in subs.iter().enumerate() {
        let mut allowed = [false; 4];
        for (r, outcomes) in by_role.iter().enumerate() {
            allowed[r] = outcomes[&i.to_string()].as_deref() != Some("FORBIDDEN");
        }
        matrix.push((format!("subscription {}", f.name), allowed));
    }

    // What the roles promise, whatever the document says: everyone reads (tokens aside), a
    // viewer changes nothing, and running text that is not deployed needs the right to deploy.
    for (op, allowed) in &matrix {
        if op.starts_with("mutation") {
            assert!(!allowed[3], "a viewer may {op}");
        }
        if (op.starts_with("query") || op.starts_with("subscription"))
            && !op.contains("apiTokens")
            && !op.contains("(source:)")
        {
            assert_eq!(allowed, &[true; 4], "every role reads {op}");
        }
        if op.contains("Token") {
            assert_eq!(allowed, &[true, false, false, false], "{op} is the admin's");
        }
    }
    let source_row = matrix
        .iter()
        .find(|(op, _)| op == "mutation startRun(source:)")
        .expect("a startRun(source:) row");
    assert!(
        !source_row.1[2],
        "an operator may run text that is not deployed"
    );
    // Replaying text runs it too; moving runs in flight is operating them.
    let row = |name: &str| {
        matrix
            .iter()
            .find(|(op, _)| op == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("a {name} row"))
    };
    assert_eq!(row("query replayRun(source:)"), [true, true, false, false]);
    assert_eq!(row("query replayRun"), [true; 4]);
    assert_eq!(
        row("mutation deployDefinition(migrate:)"),
        [true, false, false, false]
    );

    let table = render(&matrix);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let (Some(start), Some(end)) = (doc.find(MATRIX_START), doc.find(MATRIX_END)) else {
        panic!("{} has no access-matrix markers", path.display());
    };
    let now = format!(
        "{}{}{}",
        &doc[..start + MATRIX_START.len()],
        table,
        &doc[end..]
    );
    if std::env::var("CAIRN_UPDATE_SCHEMAS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &now).expect("write the access matrix");
        return;
    }
    assert!(
        doc == now,
        "{} is not the access matrix the server enforces; run \
         `CAIRN_UPDATE_SCHEMAS=1 cargo test -p cairn-api --test cli access_matrix` and review \
         the change. The matrix now:\n{table}",
        path.display()
    );
}

// ----- floods ---------------------------------------------------------------------------------

const EVENTS: &str = "subscription($id: String!) { runEvents(runId: $id) { position } }";

/// A run that waits for an event, so that its subscriptions stay open.
async fn waiting_run(server: &Server) -> String {
    server.deploy(LISTEN).await;
    server.start_run("wait-for-ping", json!({}), None).await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string()
}

async fn subscribe_many(socket: &mut Socket, prefix: &str, n: usize, run: &str) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for id in &ids {
        ws_subscribe(socket, id, EVENTS, json!({ "id": run })).await;
    }
    ids
}

/// How many of `outcomes` were admitted, and the codes of the others.
fn tally(outcomes: &BTreeMap<String, Option<String>>) -> (usize, Vec<String>) {
    let admitted = outcomes.values().filter(|o| o.is_none()).count();
    let refused = outcomes.values().flatten().cloned().collect();
    (admitted, refused)
}

async fn subscription_caps(store: TestStore) {
    let server = Server::start(
        &store,
        &[
            "--max-subscriptions-per-connection",
            "3",
            "--max-subscriptions-per-token",
            "5",
        ],
    )
    .await;
    let run = waiting_run(&server).await;
    let viewer = new_token(&store, "viewer", "watcher");

    // One socket: three live subscriptions, the other seventeen refused with a code.
    let mut a = ws_connect(&server, &viewer).await;
    let ids = subscribe_many(&mut a, "a", 20, &run).await;
    let (admitted, refused) = tally(&ws_outcomes(&mut a, &ids, PATIENCE).await);
    assert_eq!(admitted, 3, "refused: {refused:?}");
    assert_eq!(refused.len(), 17);
    assert!(refused.iter().all(|c| c == "LIMIT_EXCEEDED"), "{refused:?}");

    // A second socket of the same token: two more reach the token's five.
    let mut b = ws_connect(&server, &viewer).await;
    let ids = subscribe_many(&mut b, "b", 4, &run).await;
    let (admitted, refused) = tally(&ws_outcomes(&mut b, &ids, PATIENCE).await);
    assert_eq!((admitted, refused.len()), (2, 2), "{refused:?}");

    // Completing one gives its place back.
    a.send(Message::text(
        json!({ "id": "a0", "type": "complete" }).to_string(),
    ))
    .await
    .expect("send complete");
    let deadline = Instant::now() + PATIENCE;
    let mut n = 0;
    loop {
        let id = format!("c{n}");
        ws_subscribe(&mut b, &id, EVENTS, json!({ "id": run })).await;
        let o = ws_outcomes(&mut b, std::slice::from_ref(&id), PATIENCE).await;
        if o[&id].is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the completed subscription's place never came back"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another token is not affected, and the server answers queries all along.
    let mut c = ws_connect(&server, &server.token).await;
    let ids = subscribe_many(&mut c, "d", 1, &run).await;
    let (admitted, _) = tally(&ws_outcomes(&mut c, &ids, PATIENCE).await);
    assert_eq!(admitted, 1);
    let d = server
        .data("{ runs { edges { cursor } } }", json!({}))
        .await;
    assert!(d["runs"]["edges"].is_array());
}

async fn subscribe_rate(store: TestStore) {
    let server = Server::start(&store, &["--rate-limit", "1", "--rate-limit-burst", "5"]).await;
    let run = waiting_run(&server).await;
    let viewer = new_token(&store, "viewer", "flooder");
    let mut s = ws_connect(&server, &viewer).await;
    // `connection_init` took one request of the burst of five.
    let ids = subscribe_many(&mut s, "s", 60, &run).await;
    let (admitted, refused) = tally(&ws_outcomes(&mut s, &ids, PATIENCE).await);
    assert!(
        (1..=10).contains(&admitted),
        "{admitted} subscriptions of 60 sent at once were admitted at 1/s with a burst of 5"
    );
    assert_eq!(admitted + refused.len(), 60);
    assert!(refused.iter().all(|c| c == "RATE_LIMITED"), "{refused:?}");
}

/// Reads until the peer closes (EOF or reset); false if it stays open for `wait`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn slow_and_idle_clients(store: TestStore) {
    let server = Server::start(
        &store,
        &["--header-timeout-ms", "500", "--ws-init-timeout-ms", "500"],
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_string();

    // A connection that sends nothing is closed.
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert!(
        closed_within(&mut idle, PATIENCE).await,
        "an idle connection stayed open"
    );

    // So is one that sends its headers a byte at a time, forever.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let dribble = async {
        let _ = slow
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await;
        for _ in 0..300 {
            if slow.write_all(b"a").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut = tokio::time::timeout(PATIENCE, dribble)
        .await
        .unwrap_or(false)
        || closed_within(&mut slow, Duration::from_millis(100)).await;
    assert!(cut, "a slow sender's connection stayed open");

    // A WebSocket that never sends `connection_init` is closed with 4408.
    let mut req = server.ws_url().into_client_request().expect("a request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("a header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let close = tokio::time::timeout(PATIENCE, async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(f)) = m {
                return f.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
        }
        None
    })
    .await
    .expect("the server closed the silent WebSocket");
    assert_eq!(
        close,
        Some((4408, "Connection initialisation timeout".to_string()))
    );
    // One whose `connection_init` has no valid token: its subscriptions are refused, and it is
    // closed after the same deadline (4403).
    let mut req = server.ws_url().into_client_request().expect("a request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("a header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let init =
        json!({ "type": "connection_init", "payload": { "Authorization": "Bearer cairn_nope" } });
    ws.send(Message::text(init.to_string()))
        .await
        .expect("send");
    let ack = ws_recv(&mut ws, PATIENCE).await.expect("a connection_ack");
    assert_eq!(ack["type"], json!("connection_ack"), "{ack}");
    ws_subscribe(
        &mut ws,
        "1",
        "subscription { runsChanged { __typename } }",
        json!({}),
    )
    .await;
    let o = ws_outcomes(&mut ws, &["1".to_string()], PATIENCE).await;
    assert_eq!(o["1"].as_deref(), Some("UNAUTHENTICATED"), "{o:?}");
    let close = tokio::time::timeout(PATIENCE, async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(f)) = m {
                return f.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
        }
        None
    })
    .await
    .expect("the server closed the unauthenticated WebSocket");
    assert_eq!(close, Some((4403, "Forbidden".to_string())));

    // One that says hello in time stays open past the deadline.
    let mut ok = ws_connect(&server, &server.token).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ws_subscribe(
        &mut ok,
        "1",
        "subscription { runsChanged { __typename } }",
        json!({}),
    )
    .await;
    let o = ws_outcomes(&mut ok, &["1".to_string()], Duration::from_millis(500)).await;
    assert_eq!(o["1"], None, "{o:?}");

    // A deeply nested YAML document is refused quickly, from a request that still answers
    // within the client's patience.
    let editor = new_token(&store, "editor", "ed");
    // Flow mappings of simple keys: the YAML parser's time grows with the square of the depth
    // (50,000 levels took 15 s of CPU in a debug build, and were refused only then).
    let deep = "{a: ".repeat(100_000);
    let a = tokio::time::timeout(
        Duration::from_secs(15),
        server.gql_as(
            Some(&editor),
            "mutation($s: String!) { deployDefinition(source: $s) { ok problems { line message } } }",
            json!({ "s": deep }),
        ),
    )
    .await
    .expect("an answer to a deeply nested document");
    let r = &a.body["data"]["deployDefinition"];
    assert_eq!(r["ok"], json!(false), "{}", a.body);
    assert!(
        r["problems"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested deeper than"),
        "{}",
        a.body
    );
    assert_eq!(
        code_of(&server.gql("{ runs { edges { cursor } } }", json!({})).await),
        None
    );
}

async fn connection_cap(store: TestStore) {
    let server = Server::start(&store, &["--max-connections", "4"]).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    // Hold every place (the harness's own client may hold one already).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let get = |addr: String| async move {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await;
        Some(String::from_utf8_lossy(&answer).to_string())
    };
    let over = get(addr.clone()).await.unwrap_or_default();
    assert!(
        !over.contains(" 200 "),
        "a connection over the cap was served: {over}"
    );
    assert!(
        over.is_empty() || over.starts_with("HTTP/1.1 503"),
        "{over}"
    );
    // Places come back when connections close.
    drop(held);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let a = get(addr.clone()).await.unwrap_or_default();
        if a.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no place came back: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
