//! `cancelRun(compensate: true)` over real HTTP, on both stores: the compensations of a
//! waiting run's completed tasks run in reverse, and `Run.status` / `Run.compensation` and the
//! runs list say so.

use super::*;
use crate::sink::{Sink, Threads};

fn saga(port: u16) -> String {
    let sink = format!("http://127.0.0.1:{port}/sink");
    format!(
        r#"document: {{dsl: '1.0.3', namespace: test, name: saga, version: '1.0.0'}}
use:
  functions:
    release:
      call: http
      with: {{method: post, endpoint: '{sink}', body: {{run: 1, step: 101}}}}
    refund:
      call: http
      with: {{method: post, endpoint: '{sink}', body: {{run: 1, step: 102}}}}
do:
  - reserve:
      call: http
      with: {{method: post, endpoint: '{sink}', body: {{run: 1, step: 1}}}}
      metadata: {{cairn.compensate: release}}
  - charge:
      call: http
      with: {{method: post, endpoint: '{sink}', body: {{run: 1, step: 2}}}}
      metadata: {{cairn.compensate: refund}}
  - await:
      listen:
        to:
          one:
            with: {{type: com.example.shipped}}
"#
    )
}

async fn cancel_run_with_compensate(store: TestStore) {
    let sink = Sink::start(100, Threads::Current);
    let server = Server::start(&store, &["--allow-outbound", "127.0.0.1"]).await;
    let dep = server.deploy(&saga(sink.port)).await;
    assert_eq!(dep["ok"], json!(true), "{dep}");
    let id = server.start_run("saga", json!({}), None).await["run"]["id"]
        .as_str()
        .expect("a run id")
        .to_string();
    server.wait_status(&id, "WAITING").await;

    let c = server
        .data(
            "mutation($id: String!) { cancelRun(id: $id, reason: \"left\", compensate: true) { status } }",
            json!({ "id": id }),
        )
        .await;
    let st = &c["cancelRun"]["status"];
    assert!(
        *st == json!("COMPENSATING") || *st == json!("COMPENSATED"),
        "{c}"
    );
    server.wait_status(&id, "COMPENSATED").await;
    let r = server
        .data(
            "query($id: String!) { run(id: $id) { status compensation { reason remaining completed { position compensation } failed { compensation } running { position } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        r["run"]["compensation"],
        json!({
            "reason": "left",
            "remaining": 0,
            "completed": [
                {"position": "/do/1/charge", "compensation": "refund"},
                {"position": "/do/0/reserve", "compensation": "release"},
            ],
            "failed": [],
            "running": null,
        }),
        "{r}"
    );
    let steps: Vec<i64> = sink
        .take_log()
        .deliveries
        .iter()
        .filter(|d| d.applied)
        .filter_map(|d| d.body["step"].as_i64())
        .collect();
    assert_eq!(steps, vec![1, 2, 102, 101]);
    // The runs list filters on the new status; a second compensate is a conflict.
    let list = server
        .data(
            "{ runs(filter: {status: [COMPENSATED]}) { edges { node { id status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        list["runs"]["edges"],
        json!([{ "node": { "id": id, "status": "COMPENSATED" } }]),
        "{list}"
    );
    let again = server
        .gql(
            "mutation($id: String!) { cancelRun(id: $id, compensate: true) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code_of(&again), Some("CONFLICT"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_run_with_compensate_on_sqlite() {
    cancel_run_with_compensate(TestStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_run_with_compensate_on_postgres() {
    let Some(store) = TestStore::postgres().await else {
        return;
    };
    cancel_run_with_compensate(store).await;
}
