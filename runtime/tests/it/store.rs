//! The store-conformance suite: every test runs against SQLite and PostgreSQL.
//!
//! PostgreSQL tests use `CAIRN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each in a database of its own; they are skipped
//! with a loud message when the server cannot be reached, except under `CI=true`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{event, run_request, summary, TestStore};
use cairn_runtime::store::group::{GroupCommitOptions, GroupCommitter};
use cairn_runtime::store::{
    AppendRequest, DefinitionStore, EventLog, EventStore, RunFilter, RunIndex, RunOrder, RunQuery,
    RunSortField, StoreError, StoredDefinition, StoredEvent,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

on_both_stores!(
    append_and_load,
    stale_expected_sequence_conflicts,
    multi_stream_append_is_atomic,
    read_all_orders_and_pages,
    concurrent_appenders_never_hide_events_from_readers,
    runs_index,
    query_runs_pages_and_filters,
    query_runs_orders_and_time_window,
    query_runs_filters_by_correlation,
    definitions,
    definition_streams,
    group_committer_under_64_appenders,
    group_committer_drains_on_shutdown,
    append_groups_isolates_conflicts,
    append_groups_many_streams_contiguous_positions,
    append_groups_beyond_parameter_limit,
    append_groups_racing_another_store,
    projection_checkpoints,
    rebuild_run_summary_never_overwrites_a_newer_row,
);

async fn append_and_load(t: TestStore) {
    let s = &t.store;
    let a = s.append(vec![run_request("r1", 0, 3)]).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].last_sequence, 3);
    assert!(a[0].last_position >= 3);

    let events = s.load("run", "r1", 0).await.unwrap();
    assert_eq!(events.len(), 3);
    for (i, e) in events.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(e.sequence, n);
        assert_eq!(e.stream, "r1");
        assert_eq!(e.aggregate_type, "run");
        let want = event("TaskCompleted", n);
        assert_eq!(e.event_type, want.event_type);
        assert_eq!(e.event_version, want.event_version);
        assert_eq!(e.payload, want.payload, "{}", t.kind);
        assert_eq!(e.metadata, want.metadata);
    }
    assert_eq!(events[2].position, a[0].last_position);

    let tail = s.load("run", "r1", 1).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.sequence).collect::<Vec<_>>(), [2, 3]);

    let b = s.append(vec![run_request("r1", 3, 2)]).await.unwrap();
    assert_eq!(b[0].last_sequence, 5);
    assert!(b[0].last_position > a[0].last_position);
    assert_eq!(s.load("run", "r1", 0).await.unwrap().len(), 5);

    // Streams are separated by aggregate type and id.
    assert!(s.load("run", "r2", 0).await.unwrap().is_empty());
    assert!(s.load("definition", "r1", 0).await.unwrap().is_empty());
}

async fn stale_expected_sequence_conflicts(t: TestStore) {
    let s = &t.store;
    s.append(vec![run_request("r1", 0, 3)]).await.unwrap();

    let behind = s.append(vec![run_request("r1", 0, 1)]).await.unwrap_err();
    assert_eq!(
        behind,
        StoreError::Conflict {
            stream: "r1".into(),
            expected: 0,
            actual: 3
        }
    );
    let stale = s.append(vec![run_request("r1", 2, 1)]).await.unwrap_err();
    assert_eq!(
        stale,
        StoreError::Conflict {
            stream: "r1".into(),
            expected: 2,
            actual: 3
        }
    );
    // Ahead of the stream is as wrong as behind it: it would leave a hole.
    let ahead = s.append(vec![run_request("r1", 5, 1)]).await.unwrap_err();
    assert_eq!(
        ahead,
        StoreError::Conflict {
            stream: "r1".into(),
            expected: 5,
            actual: 3
        }
    );
    assert_eq!(s.load("run", "r1", 0).await.unwrap().len(), 3);
    assert_eq!(s.read_all(0, 100).await.unwrap().len(), 3);
}

async fn multi_stream_append_is_atomic(t: TestStore) {
    let s = &t.store;
    s.append(vec![run_request("b", 0, 2)]).await.unwrap();

    // `a` would be fine, `b` is stale: nothing is written, not even a's summary.
    let mut a = run_request("a", 0, 2);
    a.run_summary = Some(summary("a", "running", 1));
    let err = s
        .append(vec![a.clone(), run_request("b", 1, 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref stream, expected: 1, actual: 2 } if stream == "b")
    );
    assert!(s.load("run", "a", 0).await.unwrap().is_empty());
    assert_eq!(s.read_all(0, 100).await.unwrap().len(), 2);
    assert_eq!(s.get_run("a").await.unwrap(), None);

    // Both fine: both written, in request order, one stream twice.
    let done = s
        .append(vec![a, run_request("b", 2, 1), run_request("a", 2, 1)])
        .await
        .unwrap();
    assert_eq!(
        done.iter().map(|d| d.last_sequence).collect::<Vec<_>>(),
        [2, 3, 3]
    );
    assert!(done[0].last_position < done[1].last_position);
    assert!(done[1].last_position < done[2].last_position);
    assert_eq!(s.load("run", "a", 0).await.unwrap().len(), 3);
    assert_eq!(s.get_run("a").await.unwrap().unwrap().status, "running");

    // A request with no events only checks its expectation.
    let empty = AppendRequest {
        events: vec![],
        ..run_request("a", 3, 0)
    };
    let r = s.append(vec![empty.clone()]).await.unwrap();
    assert_eq!(r[0].last_sequence, 3);
    assert_eq!(r[0].last_position, 0);
    let stale_empty = AppendRequest {
        expected_sequence: 1,
        ..empty
    };
    assert!(matches!(
        s.append(vec![stale_empty]).await,
        Err(StoreError::Conflict { .. })
    ));
}

/// Checks a read_all result: positions strictly increase, and each stream's sequences
/// increase in position order.
fn assert_log_order(events: &[StoredEvent]) {
    let mut last_seq: HashMap<(&str, &str), u64> = HashMap::new();
    for w in events.windows(2) {
        assert!(
            w[0].position < w[1].position,
            "positions must strictly increase"
        );
    }
    for e in events {
        let prev = last_seq.insert((&e.aggregate_type, &e.stream), e.sequence);
        assert_eq!(
            prev.unwrap_or(0) + 1,
            e.sequence,
            "stream {} out of order",
            e.stream
        );
    }
}

async fn read_all_orders_and_pages(t: TestStore) {
    let s = &t.store;
    let mut heads = [0u64; 5];
    for round in 0..5u64 {
        for (i, head) in heads.iter_mut().enumerate() {
            let n = (round + i as u64) % 2 + 1;
            s.append(vec![run_request(&format!("s{i}"), *head, n)])
                .await
                .unwrap();
            *head += n;
        }
    }
    let total: u64 = heads.iter().sum();
    let all = s.read_all(0, 1000).await.unwrap();
    assert_eq!(all.len() as u64, total);
    assert_log_order(&all);

    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s.read_all(after, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(s.read_all(after, 7).await.unwrap().is_empty());
    // Resuming mid-way yields exactly the rest.
    let mid = all[10].position;
    assert_eq!(s.read_all(mid, 1000).await.unwrap(), all[11..].to_vec());
}

/// The out-of-order-commit case: many appenders on separate connections (separate store
/// instances, as separate processes would be) while a reader pages through `read_all` the whole
/// time. The reader must see every event exactly once, in increasing position order.
async fn concurrent_appenders_never_hide_events_from_readers(t: TestStore) {
    const WRITERS: usize = 12;
    const APPENDS: u64 = 40;
    let mut stores: Vec<Arc<dyn EventStore>> = vec![t.store.clone()];
    for _ in 1..4 {
        stores.push(t.open_again().await);
    }
    let tracker = TaskTracker::new();
    let mut expected_total = 0u64;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = stores[w % stores.len()].clone();
        // Varying batch sizes make transactions of varying length, so commits interleave.
        let sizes: Vec<u64> = (0..APPENDS).map(|i| (i + w as u64) % 4 + 1).collect();
        expected_total += sizes.iter().sum::<u64>();
        writers.push(tracker.spawn(async move {
            let mut heads = [0u64; 3];
            for (i, n) in sizes.into_iter().enumerate() {
                let k = i % 3;
                let stream = format!("w{w}-{k}");
                store
                    .append(vec![run_request(&stream, heads[k], n)])
                    .await
                    .unwrap();
                heads[k] += n;
            }
        }));
    }
    let reader_store = stores[stores.len() - 1].clone();
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = writers_done.clone();
    let reader = tracker.spawn(async move {
        let mut seen: Vec<StoredEvent> = Vec::new();
        let mut after = 0;
        loop {
            // Read the flag before the page: an empty page after the writers finished is final.
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            let page = reader_store.read_all(after, 50).await.unwrap();
            match page.last() {
                Some(last) => after = last.position,
                None if finished => break,
                None => tokio::task::yield_now().await,
            }
            seen.extend(page);
        }
        seen
    });
    for w in writers {
        w.await.unwrap();
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert_eq!(
        seen.len() as u64,
        expected_total,
        "{}: a reader paging through read_all missed events",
        t.kind
    );
    let unique: HashSet<(String, u64)> = seen
        .iter()
        .map(|e| (e.stream.clone(), e.sequence))
        .collect();
    assert_eq!(unique.len(), seen.len(), "an event was seen twice");
    assert_log_order(&seen);
    // And the reader's view equals the final log.
    assert_eq!(t.store.read_all(0, 1_000_000).await.unwrap(), seen);
}

async fn query_runs_pages_and_filters(t: TestStore) {
    let s = &t.store;
    // Six runs; two share a created_at so the run id breaks the tie.
    let rows = [
        ("a1", "default", "order", "running", 1000),
        ("a2", "default", "order", "completed", 2000),
        ("a3", "default", "billing", "completed", 2000),
        ("a4", "shop", "order", "faulted", 3000),
        ("a5", "default", "order", "completed", 4000),
        ("a6", "default", "order", "waiting", 5000),
    ];
    for (id, ns, name, status, created) in rows {
        let mut r = run_request(id, 0, 1);
        let mut sum = summary(id, status, created);
        sum.namespace = ns.into();
        sum.name = name.into();
        r.run_summary = Some(sum);
        s.append(vec![r]).await.unwrap();
    }
    let ids = |runs: Vec<cairn_runtime::store::RunSummary>| {
        runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    let mut q = RunQuery::default();
    q.limit = 100;
    assert_eq!(
        ids(s.query_runs(&q).await.unwrap()),
        ["a6", "a5", "a4", "a3", "a2", "a1"],
        "{}",
        t.kind
    );
    // Pages of two, each resuming after the last key of the previous one.
    q.limit = 2;
    let mut all = Vec::new();
    loop {
        let page = s.query_runs(&q).await.unwrap();
        let Some(last) = page.last() else { break };
        q.after = Some((last.created_at, last.run_id.clone()));
        all.extend(ids(page));
    }
    assert_eq!(all, ["a6", "a5", "a4", "a3", "a2", "a1"], "{}", t.kind);

    let mut q = RunQuery::default();
    q.limit = 100;
    q.statuses = vec!["completed".into(), "faulted".into()];
    assert_eq!(
        ids(s.query_runs(&q).await.unwrap()),
        ["a5", "a4", "a3", "a2"]
    );
    q.namespace = Some("default".into());
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["a5", "a3", "a2"]);
    q.name = Some("order".into());
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["a5", "a2"]);
    q.after = Some((2000, "a3".into()));
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["a2"]);
}

/// `query_runs` with a started-between window and each order, paged by keyset on a tie.
async fn query_runs_orders_and_time_window(t: TestStore) {
    let s = &t.store;
    // (id, created_at, updated_at): b2 and b3 tie on created_at, b1 and b4 on updated_at.
    let rows = [
        ("b1", 1000, 9000),
        ("b2", 2000, 3000),
        ("b3", 2000, 8000),
        ("b4", 4000, 9000),
        ("b5", 5000, 5000),
    ];
    for (id, created, updated) in rows {
        let mut r = run_request(id, 0, 1);
        let mut sum = summary(id, "running", created);
        sum.updated_at = updated;
        r.run_summary = Some(sum);
        s.append(vec![r]).await.unwrap();
    }
    let ids = |runs: Vec<cairn_runtime::store::RunSummary>| {
        runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    // Every order, whole and in pages of two resuming after the last key.
    let orders = [
        (
            RunSortField::CreatedAt,
            true,
            ["b5", "b4", "b3", "b2", "b1"],
        ),
        (
            RunSortField::CreatedAt,
            false,
            ["b1", "b2", "b3", "b4", "b5"],
        ),
        (
            RunSortField::UpdatedAt,
            true,
            ["b4", "b1", "b3", "b5", "b2"],
        ),
        (
            RunSortField::UpdatedAt,
            false,
            ["b2", "b5", "b3", "b1", "b4"],
        ),
    ];
    for (field, descending, want) in orders {
        let mut q = RunQuery::default();
        q.order = RunOrder { field, descending };
        q.limit = 100;
        assert_eq!(
            ids(s.query_runs(&q).await.unwrap()),
            want,
            "{} {field:?} desc={descending}",
            t.kind
        );
        q.limit = 2;
        let mut all = Vec::new();
        loop {
            let page = s.query_runs(&q).await.unwrap();
            let Some(last) = page.last() else { break };
            let key = match field {
                RunSortField::CreatedAt => last.created_at,
                RunSortField::UpdatedAt => last.updated_at,
            };
            q.after = Some((key, last.run_id.clone()));
            all.extend(ids(page));
        }
        assert_eq!(all, want, "{} paged {field:?} desc={descending}", t.kind);
    }
    // Started between: from inclusive, before exclusive.
    let mut q = RunQuery::default();
    q.limit = 100;
    q.created_from = Some(2000);
    q.created_before = Some(5000);
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["b4", "b3", "b2"]);
    q.created_from = Some(2001);
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["b4"]);
    q.created_from = None;
    q.created_before = Some(2000);
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["b1"]);
    // With a window, an order and a cursor together.
    q.created_before = Some(9999);
    q.created_from = Some(1500);
    q.order = RunOrder {
        field: RunSortField::UpdatedAt,
        descending: false,
    };
    q.after = Some((5000, "b5".into()));
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["b3", "b4"]);
}

/// `query_runs` by correlation id: exact match, combined with the other filters and paging; a
/// row keeps its id through a later upsert.
async fn query_runs_filters_by_correlation(t: TestStore) {
    let s = &t.store;
    let rows = [
        ("c1", Some("order-1"), "running", 1000),
        ("c2", Some("order-2"), "running", 2000),
        ("c3", Some("order-1"), "completed", 3000),
        ("c4", None, "running", 4000),
        ("c5", Some("order-1"), "running", 5000),
        ("c6", Some("ORDER-1"), "running", 6000),
    ];
    for (id, correlation, status, created) in rows {
        let mut r = run_request(id, 0, 1);
        let mut sum = summary(id, status, created);
        sum.correlation_id = correlation.map(str::to_string);
        r.run_summary = Some(sum);
        s.append(vec![r]).await.unwrap();
    }
    let ids = |runs: Vec<cairn_runtime::store::RunSummary>| {
        runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    let mut q = RunQuery::default();
    q.limit = 100;
    q.correlation_id = Some("order-1".into());
    assert_eq!(
        ids(s.query_runs(&q).await.unwrap()),
        ["c5", "c3", "c1"],
        "{}",
        t.kind
    );
    // Paged by keyset within the filter.
    q.limit = 2;
    let first = s.query_runs(&q).await.unwrap();
    assert_eq!(ids(first.clone()), ["c5", "c3"]);
    let last = first.last().unwrap();
    q.after = Some((last.created_at, last.run_id.clone()));
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["c1"]);
    // With a status filter.
    let mut q = RunQuery::default();
    q.limit = 100;
    q.correlation_id = Some("order-1".into());
    q.statuses = vec!["running".into()];
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["c5", "c1"]);
    // Other ids, and one nobody used.
    q.statuses.clear();
    q.correlation_id = Some("order-2".into());
    assert_eq!(ids(s.query_runs(&q).await.unwrap()), ["c2"]);
    q.correlation_id = Some("nobody".into());
    assert!(s.query_runs(&q).await.unwrap().is_empty());
    // The summary reads back with its id; a later append's upsert keeps it.
    let row = s.get_run("c2").await.unwrap().expect("c2 is indexed");
    assert_eq!(row.correlation_id.as_deref(), Some("order-2"));
    assert_eq!(s.get_run("c4").await.unwrap().unwrap().correlation_id, None);
    let mut r = run_request("c2", 1, 1);
    let mut sum = summary("c2", "completed", 2000);
    sum.correlation_id = Some("order-2".into());
    r.run_summary = Some(sum);
    s.append(vec![r]).await.unwrap();
    q.correlation_id = Some("order-2".into());
    let rows = s.query_runs(&q).await.unwrap();
    assert_eq!(ids(rows.clone()), ["c2"]);
    assert_eq!(rows[0].status, "completed");
}

async fn runs_index(t: TestStore) {
    let s = &t.store;
    let with = |stream: &str, expected, status: &str, created| {
        let mut r = run_request(stream, expected, 1);
        r.run_summary = Some(summary(stream, status, created));
        r
    };
    s.append(vec![with("r1", 0, "running", 1000)])
        .await
        .unwrap();
    s.append(vec![
        with("r2", 0, "completed", 2000),
        with("r3", 0, "waiting", 3000),
    ])
    .await
    .unwrap();
    // An update keeps created_at and changes the rest.
    let mut update = with("r1", 1, "completed", 9999);
    if let Some(sum) = update.run_summary.as_mut() {
        sum.updated_at = 5000;
        sum.next_timer_at = Some(7000);
    }
    s.append(vec![update]).await.unwrap();

    let r1 = s.get_run("r1").await.unwrap().unwrap();
    assert_eq!(r1.status, "completed");
    assert_eq!(r1.created_at, 1000);
    assert_eq!(r1.updated_at, 5000);
    assert_eq!(r1.next_timer_at, Some(7000));
    assert_eq!(s.get_run("nope").await.unwrap(), None);

    let ids = |runs: Vec<cairn_runtime::store::RunSummary>| {
        runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(s.list_runs(&RunFilter::default()).await.unwrap()),
        ["r3", "r2", "r1"]
    );
    let completed = RunFilter {
        statuses: vec!["completed".into()],
        limit: None,
    };
    assert_eq!(ids(s.list_runs(&completed).await.unwrap()), ["r2", "r1"]);
    let two = RunFilter {
        statuses: vec!["completed".into(), "waiting".into()],
        limit: None,
    };
    assert_eq!(ids(s.list_runs(&two).await.unwrap()), ["r3", "r2", "r1"]);
    let one = RunFilter {
        statuses: vec![],
        limit: Some(1),
    };
    assert_eq!(ids(s.list_runs(&one).await.unwrap()), ["r3"]);
    let none = RunFilter {
        statuses: vec!["faulted".into()],
        limit: Some(5),
    };
    assert!(s.list_runs(&none).await.unwrap().is_empty());

    // A conflicting append leaves the index untouched.
    let err = s
        .append(vec![with("r2", 0, "faulted", 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
    assert_eq!(s.get_run("r2").await.unwrap().unwrap().status, "completed");
}

fn definition(name: &str, version: &str, salt: u32) -> StoredDefinition {
    StoredDefinition {
        namespace: "default".into(),
        name: name.into(),
        version: version.into(),
        hash: format!("hash-{name}-{version}-{salt}"),
        source: json!({ "document": { "name": name, "version": version }, "salt": salt }),
        deployed: true,
    }
}

async fn definitions(t: TestStore) {
    let s = &t.store;
    for v in ["1.9.0", "1.10.0", "1.2.0", "1.10.0-rc.1"] {
        s.put_definition(&definition("order", v, 0)).await.unwrap();
    }
    s.put_definition(&definition("other", "9.0.0", 0))
        .await
        .unwrap();
    // Idempotent on the hash.
    s.put_definition(&definition("order", "1.9.0", 0))
        .await
        .unwrap();

    let d = definition("order", "1.9.0", 0);
    assert_eq!(
        s.definition_by_hash(&d.hash).await.unwrap(),
        Some(d.clone())
    );
    assert_eq!(s.definition_by_hash("missing").await.unwrap(), None);

    // Content recorded only to run it is no deployed content; deploying the same content marks
    // it, and running it again does not unmark it.
    let mut inline = definition("order", "9.0.0", 0);
    inline.deployed = false;
    s.put_definition(&inline).await.unwrap();
    assert_eq!(
        s.definition_by_hash(&inline.hash).await.unwrap(),
        Some(inline.clone())
    );
    let mut deployed = inline.clone();
    deployed.deployed = true;
    s.put_definition(&deployed).await.unwrap();
    s.put_definition(&inline).await.unwrap();
    assert_eq!(
        s.definition_by_hash(&inline.hash).await.unwrap(),
        Some(deployed),
        "{}",
        t.kind
    );
}

const ORDER: &str = "document: {dsl: '1.0.3', namespace: default, name: order, version: '1.0.0'}\n\
                     do: [{a: {set: {x: 1}}}]\n";

fn workflow(text: &str) -> cairn_core::dsl::Workflow {
    cairn_core::dsl::load_str(text, cairn_core::dsl::SourceFormat::Yaml).expect("a definition")
}

/// Deployed rows without a stream are what the store's open migrates; streams are read back
/// by stream, then sequence; racing publishers of one label cannot both win.
async fn definition_streams(t: TestStore) {
    use cairn_runtime::definitions::{Definitions, PublishOptions};
    let s = &t.store;
    assert!(
        s.definition_events().await.unwrap().is_empty(),
        "{}",
        t.kind
    );
    // A deployed row with no stream (as old builds wrote them) is listed for the migration.
    let legacy = definition("legacy", "1.0.0", 0);
    s.put_definition(&legacy).await.unwrap();
    assert_eq!(s.unpublished_definitions().await.unwrap(), vec![legacy]);

    let defs = Definitions::new(s.clone());
    let one = workflow(ORDER);
    let other = workflow(&ORDER.replace("x: 1", "x: 2"));
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let defs = defs.clone();
            let def = if i % 2 == 0 {
                one.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { defs.publish(def, PublishOptions::default()).await })
        })
        .collect();
    let mut won = HashSet::new();
    let mut refused = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(d) => {
                won.insert(d.definition.hash);
            }
            Err(cairn_runtime::Error::VersionLabelTaken { .. }) => refused += 1,
            Err(e) => panic!("{}: {e}", t.kind),
        }
    }
    assert_eq!(won.len(), 1, "{}: one content wins the label", t.kind);
    assert_eq!(refused, 3, "{}", t.kind);
    let (state, history) = defs.load("default", "order").await.unwrap();
    assert_eq!(
        history.len(),
        2,
        "{}: published once, head moved once",
        t.kind
    );
    assert_eq!(
        state.version("1.0.0").map(|v| v.hash.clone()),
        won.into_iter().next()
    );

    let all = s.definition_events().await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|e| e.stream == "default/order"));
    assert_eq!(
        all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Published content is no longer waiting for the migration; the legacy row still is.
    assert_eq!(
        s.unpublished_definitions()
            .await
            .unwrap()
            .iter()
            .map(|d| d.name.clone())
            .collect::<Vec<_>>(),
        vec!["legacy".to_string()]
    );
}

async fn group_committer_under_64_appenders(t: TestStore) {
    const TASKS: usize = 64;
    const APPENDS: u64 = 10;
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let gc = Arc::new(GroupCommitter::new(
        t.store.clone(),
        GroupCommitOptions::default(),
        &tracker,
        shutdown.clone(),
    ));
    // Every task extends its own stream; every 8th also makes a stale append of the same
    // stream, which must fail alone.
    let mut handles = Vec::new();
    for i in 0..TASKS {
        let gc = gc.clone();
        handles.push(tracker.spawn(async move {
            let stream = format!("g{i}");
            let mut conflicts = 0;
            for k in 0..APPENDS {
                let done = gc.append(vec![run_request(&stream, k, 1)]).await.unwrap();
                assert_eq!(done[0].last_sequence, k + 1);
                if i % 8 == 0 && k % 3 == 0 {
                    let err = gc
                        .append(vec![run_request(&stream, k, 1)])
                        .await
                        .unwrap_err();
                    assert!(matches!(err, StoreError::Conflict { expected, actual, .. }
                        if expected == k && actual == k + 1));
                    conflicts += 1;
                }
            }
            conflicts
        }));
    }
    // Two callers racing for the same new stream: exactly one wins.
    let (x, y) = tokio::join!(
        gc.append(vec![run_request("contested", 0, 2)]),
        gc.append(vec![run_request("contested", 0, 3)]),
    );
    assert!(
        x.is_ok() != y.is_ok(),
        "exactly one of two racing appends must win"
    );

    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    assert_eq!(conflicts, 8 * 4);

    let all = t.store.read_all(0, 100_000).await.unwrap();
    let contested = if x.is_ok() { 2 } else { 3 };
    assert_eq!(all.len() as u64, TASKS as u64 * APPENDS + contested);
    assert_log_order(&all);
    for i in 0..TASKS {
        let seqs: Vec<u64> = gc
            .load("run", &format!("g{i}"), 0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(seqs, (1..=APPENDS).collect::<Vec<_>>());
    }
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

async fn group_committer_drains_on_shutdown(t: TestStore) {
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let gc = GroupCommitter::new(
        t.store.clone(),
        GroupCommitOptions {
            queue_capacity: 8,
            max_batch: 4,
        },
        &tracker,
        shutdown.clone(),
    );
    let results = futures::future::join_all(
        (0..20).map(|i| gc.append(vec![run_request(&format!("d{i}"), 0, 1)])),
    );
    let (results, ()) = tokio::join!(results, async {
        tokio::task::yield_now().await;
        shutdown.cancel();
    });
    // Whatever was accepted before the cancel is written; nothing is half-answered.
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        }
    }
    tracker.close();
    tokio::time::timeout(Duration::from_secs(30), tracker.wait())
        .await
        .unwrap();
    assert_eq!(t.store.read_all(0, 100).await.unwrap().len(), ok);
    let late = gc
        .append(vec![run_request("late", 0, 1)])
        .await
        .unwrap_err();
    assert!(matches!(late, StoreError::Unavailable(_)));
}

async fn append_groups_isolates_conflicts(t: TestStore) {
    let s = &t.store;
    s.append(vec![run_request("x", 0, 1)]).await.unwrap();
    let out = s
        .append_groups(vec![
            vec![run_request("a", 0, 1)],
            vec![run_request("x", 0, 1), run_request("b", 0, 1)], // stale on x: b not written
            vec![run_request("x", 1, 2)],
            vec![run_request("x", 1, 1)], // the group before took x to 3
            vec![run_request("a", 1, 1)], // sees group 0
        ])
        .await
        .unwrap();
    assert_eq!(out.len(), 5);
    assert_eq!(out[0].as_ref().unwrap()[0].last_sequence, 1);
    assert!(
        matches!(&out[1], Err(StoreError::Conflict { stream, expected: 0, actual: 1 }) if stream == "x")
    );
    assert_eq!(out[2].as_ref().unwrap()[0].last_sequence, 3);
    assert!(
        matches!(&out[3], Err(StoreError::Conflict { stream, expected: 1, actual: 3 }) if stream == "x")
    );
    assert_eq!(out[4].as_ref().unwrap()[0].last_sequence, 2);
    assert!(s.load("run", "b", 0).await.unwrap().is_empty());
    assert_eq!(s.load("run", "x", 0).await.unwrap().len(), 3);
    assert_log_order(&s.read_all(0, 100).await.unwrap());
}

/// The positions written by one `append_groups` call (there is no other writer): they must be
/// contiguous, and each request's `last_position` must be its stream's last event.
fn assert_contiguous(all: &[StoredEvent], first: u64, count: usize) {
    let written: Vec<u64> = all
        .iter()
        .map(|e| e.position)
        .filter(|&p| p >= first)
        .collect();
    assert_eq!(written.len(), count);
    let expected: Vec<u64> = (first..first + count as u64).collect();
    assert_eq!(
        written, expected,
        "positions must be contiguous and gap-free"
    );
}

/// One batch of many groups over many streams (with run summaries, a check-only request, a
/// stale first request on a stream, and a group extending a stream an earlier group extended).
async fn append_groups_many_streams_contiguous_positions(t: TestStore) {
    let s = &t.store;
    s.append(vec![run_request("old", 0, 2)]).await.unwrap();
    let mut groups = Vec::new();
    // A stale first request on `old`: the store must still answer everything else precisely.
    groups.push(vec![run_request("old", 1, 1)]);
    for i in 0..300u64 {
        let mut a = run_request(&format!("m{i}"), 0, 1 + i % 4);
        a.run_summary = Some(summary(&format!("m{i}"), "running", i as i64));
        let mut group = vec![a];
        if i % 3 == 0 {
            group.push(run_request(&format!("n{i}"), 0, 2));
        }
        groups.push(group);
    }
    // Extends m0 after the group above; a check-only request (no events) on `old`.
    let mut later = run_request("m0", 1, 2);
    later.run_summary = Some(summary("m0", "completed", 0));
    groups.push(vec![later]);
    groups.push(vec![run_request("old", 2, 0)]);
    let n = groups.len();
    let out = s.append_groups(groups.clone()).await.unwrap();
    assert_eq!(out.len(), n);
    assert!(
        matches!(&out[0], Err(StoreError::Conflict { stream, expected: 1, actual: 2 }) if stream == "old")
    );
    let all = s.read_all(0, 100_000).await.unwrap();
    assert_log_order(&all);
    let written: usize = groups[1..].iter().flatten().map(|r| r.events.len()).sum();
    assert_contiguous(&all, 3, written);
    let last_position: HashMap<&str, u64> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.position))
        .collect();
    for (group, outcome) in groups.iter().zip(&out).skip(1) {
        let appended = outcome.as_ref().unwrap();
        assert_eq!(appended.len(), group.len());
        for (req, a) in group.iter().zip(appended) {
            assert_eq!(
                a.last_sequence,
                req.expected_sequence + req.events.len() as u64
            );
            if req.events.is_empty() {
                assert_eq!(a.last_position, 0);
            } else if req.stream != "m0" || req.expected_sequence == 1 {
                assert_eq!(a.last_position, last_position[req.stream.as_str()]);
            }
        }
    }
    assert_eq!(s.load("run", "m0", 0).await.unwrap().len(), 3);
    assert_eq!(s.load("run", "old", 0).await.unwrap().len(), 2);
    let runs = s.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 300);
    let m0 = s.get_run("m0").await.unwrap().unwrap();
    assert_eq!(m0.status, "completed");
}

/// A batch bigger than SQLite's bound-parameter limit (32766) in every statement: heads of
/// 17,000 streams, 21,000 events, 17,000 run summaries; and one stream of 5,000 events.
async fn append_groups_beyond_parameter_limit(t: TestStore) {
    let s = &t.store;
    let mut groups: Vec<Vec<AppendRequest>> = (0..17_000u64)
        .map(|i| {
            let mut r = run_request(&format!("p{i}"), 0, 1);
            r.run_summary = Some(summary(&format!("p{i}"), "running", i as i64));
            vec![r]
        })
        .collect();
    groups.push(vec![run_request("big", 0, 5_000)]);
    let out = s.append_groups(groups).await.unwrap();
    assert_eq!(out.len(), 17_001);
    for (i, o) in out.iter().enumerate().take(17_000) {
        let a = o.as_ref().unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].last_position, i as u64 + 1, "request {i}");
    }
    assert_eq!(out[17_000].as_ref().unwrap()[0].last_position, 22_000);
    assert_eq!(out[17_000].as_ref().unwrap()[0].last_sequence, 5_000);
    let all = s.read_all(0, 100_000).await.unwrap();
    assert_log_order(&all);
    assert_contiguous(&all, 1, 22_000);
    assert_eq!(
        s.list_runs(&RunFilter::default()).await.unwrap().len(),
        17_000
    );
    // The heads of all those streams are seen by the next batch.
    let out = s
        .append_groups(vec![
            vec![run_request("p0", 0, 1)],
            vec![run_request("p16999", 1, 1), run_request("big", 5_000, 1)],
        ])
        .await
        .unwrap();
    assert!(
        matches!(&out[0], Err(StoreError::Conflict { stream, expected: 0, actual: 1 }) if stream == "p0")
    );
    assert_eq!(out[1].as_ref().unwrap()[1].last_sequence, 5_001);
}

/// Two stores on one database (as two processes): each one's batches see the other's appends,
/// so stale groups conflict and no sequence or position is ever written twice.
async fn append_groups_racing_another_store(t: TestStore) {
    let a = t.store.clone();
    let b = t.open_again().await;
    let mut tasks = Vec::new();
    for (w, store) in [a.clone(), b].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut heads: HashMap<String, u64> = HashMap::new();
            for round in 0..60u64 {
                let groups: Vec<Vec<AppendRequest>> = (0..4u64)
                    .map(|k| {
                        let stream = format!("shared{}", (round + k + w as u64) % 5);
                        let head = heads.get(&stream).copied().unwrap_or(0);
                        vec![run_request(&stream, head, 1)]
                    })
                    .collect();
                let out = store
                    .append_groups(groups.clone())
                    .await
                    .expect("append_groups");
                for (g, o) in groups.iter().zip(out) {
                    match o {
                        Ok(appended) => {
                            ok += 1;
                            heads.insert(g[0].stream.clone(), appended[0].last_sequence);
                        }
                        Err(StoreError::Conflict { stream, actual, .. }) => {
                            heads.insert(stream, actual);
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    let all = a.read_all(0, 100_000).await.unwrap();
    assert_eq!(all.len() as u64, ok);
    assert_log_order(&all);
}

// ---- store-specific tests ----

#[tokio::test]
async fn sqlite_reopen_keeps_everything() {
    use cairn_runtime::store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/cairn.db");
    let path = path.to_str().unwrap();
    let first_positions;
    {
        let s = SqliteStore::open(path).await.unwrap();
        let mut r = run_request("r1", 0, 3);
        r.run_summary = Some(summary("r1", "running", 10));
        first_positions = s.append(vec![r]).await.unwrap()[0].last_position;
        s.put_definition(&definition("order", "1.0.0", 0))
            .await
            .unwrap();
        s.close().await;
    }
    let s = SqliteStore::open(path).await.unwrap();
    assert_eq!(s.load("run", "r1", 0).await.unwrap().len(), 3);
    assert_eq!(s.get_run("r1").await.unwrap().unwrap().status, "running");
    // A deployed row without a stream (as older builds wrote it) was published at the open.
    assert_eq!(
        s.definition_by_hash("hash-order-1.0.0-0")
            .await
            .unwrap()
            .map(|d| d.version),
        Some("1.0.0".to_string())
    );
    assert_eq!(
        s.load("definition", "default/order", 0)
            .await
            .unwrap()
            .len(),
        2
    );
    let next = s.append(vec![run_request("r1", 3, 1)]).await.unwrap();
    assert!(next[0].last_position > first_positions);
    // Durability settings are what the docs promise.
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(s.write_pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(s.write_pool())
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(s.read_pool())
        .await
        .unwrap();
    // 6: the catch-up migration that writes down what versions up to 5 created at every open.
    assert_eq!(version, 6);
}

#[tokio::test]
async fn malformed_urls_are_rejected() {
    let err = cairn_runtime::store::open("mysql://localhost/x")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err}");
    let err = cairn_runtime::store::open("postgres://user:hunter2@host:notaport/db")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = cairn_runtime::store::open("sqlite://").await.err().unwrap();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err}");
}

#[tokio::test]
async fn unreachable_postgres_says_where_without_password() {
    use cairn_runtime::store::postgres::{PostgresOptions, PostgresStore};
    let options = PostgresOptions {
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let err = PostgresStore::connect_with("postgres://cairn:hunter2@127.0.0.1:1/cairn", options)
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{msg}");
    assert!(
        msg.contains("cannot connect to postgres at 127.0.0.1:1/cairn"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn postgres_wrong_password_or_database_is_a_clear_error() {
    let Some(t) = crate::common::postgres().await else {
        return;
    };
    let url =
        crate::common::with_database(&crate::common::postgres_admin_url(), "cairn_no_such_db_x");
    let err = cairn_runtime::store::open(&url).await.err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("cannot connect to postgres at"), "{msg}");
    assert!(msg.contains("cairn_no_such_db_x"), "{msg}");
    drop(t);
}

// ---- cqrs-es on our stores ----

mod cqrs_toy {
    use cairn_runtime::store::cqrs::CqrsRepository;
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore};
    use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent};
    use serde::{Deserialize, Serialize};
    use tokio_util::task::TaskTracker;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Counter {
        value: i64,
    }

    #[derive(Debug)]
    enum Command {
        Add(i64),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Event {
        Added(i64),
    }

    impl DomainEvent for Event {
        fn event_type(&self) -> String {
            "Added".into()
        }
        fn event_version(&self) -> String {
            "1".into()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("negative total")]
    struct Negative;

    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        type Command = Command;
        type Event = Event;
        type Error = Negative;
        type Services = ();

        async fn handle(
            &mut self,
            command: Command,
            _: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), Negative> {
            let Command::Add(n) = command;
            if self.value + n < 0 {
                return Err(Negative);
            }
            sink.write(Event::Added(n), self).await;
            Ok(())
        }

        fn apply(&mut self, event: Event) {
            let Event::Added(n) = event;
            self.value += n;
        }
    }

    #[tokio::test]
    async fn cqrs_framework_runs_on_sqlite() {
        let t = crate::common::sqlite().await;
        let tracker = TaskTracker::new();
        let repo = CqrsRepository::new(t.store.clone(), tracker.clone());
        let cqrs = CqrsFramework::new(
            PersistedEventStore::<CqrsRepository, Counter>::new_event_store(repo.clone()),
            vec![],
            (),
        );
        cqrs.execute("c1", Command::Add(5)).await.unwrap();
        cqrs.execute("c2", Command::Add(1)).await.unwrap();
        cqrs.execute("c1", Command::Add(-2)).await.unwrap();
        let rejected = cqrs.execute("c1", Command::Add(-10)).await.unwrap_err();
        assert!(matches!(rejected, AggregateError::UserError(Negative)));

        let c1 = t.store.load("counter", "c1", 0).await.unwrap();
        assert_eq!(c1.len(), 2);
        assert_eq!(c1[1].sequence, 2);
        assert_eq!(c1[1].payload, serde_json::json!({ "Added": -2 }));

        // A stale writer is an optimistic-lock error.
        let stale = repo
            .persist::<Counter>(
                &[cqrs_es::persist::SerializedEvent::new(
                    "c1".into(),
                    2,
                    "counter".into(),
                    "Added".into(),
                    "1".into(),
                    serde_json::json!({ "Added": 1 }),
                    serde_json::json!({}),
                )],
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(
            stale,
            cqrs_es::persist::PersistenceError::OptimisticLockError
        ));

        // stream_all_events replays in global order.
        let mut stream = repo.stream_all_events::<Counter>().await.unwrap();
        let mut order = Vec::new();
        while let Some(e) = stream.next::<Counter>(&[]).await {
            let e = e.unwrap();
            order.push((e.aggregate_id, e.sequence));
        }
        assert_eq!(
            order,
            [
                ("c1".to_string(), 1),
                ("c2".to_string(), 1),
                ("c1".to_string(), 2)
            ]
        );
        let events = repo.get_last_events::<Counter>("c1", 1).await.unwrap();
        assert_eq!(events.len(), 1);
        tracker.close();
        tracker.wait().await;
    }
}

async fn projection_checkpoints(t: TestStore) {
    let s = &t.store;
    assert_eq!(s.projection_checkpoint("runs").await.unwrap(), None);
    s.put_projection_checkpoint("runs", 42).await.unwrap();
    s.put_projection_checkpoint("other", 7).await.unwrap();
    assert_eq!(s.projection_checkpoint("runs").await.unwrap(), Some(42));
    // Overwriting moves it (a rebuild from scratch may record a smaller position).
    s.put_projection_checkpoint("runs", 3).await.unwrap();
    assert_eq!(s.projection_checkpoint("runs").await.unwrap(), Some(3));
    assert_eq!(s.projection_checkpoint("other").await.unwrap(), Some(7));

    assert_eq!(s.head_position().await.unwrap(), 0, "{}", t.kind);
    let a = s.append(vec![run_request("h1", 0, 3)]).await.unwrap();
    assert_eq!(s.head_position().await.unwrap(), a[0].last_position);
}

async fn rebuild_run_summary_never_overwrites_a_newer_row(t: TestStore) {
    let s = &t.store;
    let mut first = run_request("rb", 0, 2);
    first.run_summary = Some(summary("rb", "running", 10));
    s.append(vec![first]).await.unwrap();

    // A fold up to the run's last event replaces a corrupt row.
    let mut corrupt = summary("rb", "running", 10);
    corrupt.status = "completed".into();
    assert!(s.rebuild_run_summary(&corrupt, 2).await.unwrap());
    assert_eq!(s.get_run("rb").await.unwrap().unwrap().status, "completed");
    let fixed = summary("rb", "running", 10);
    assert!(s.rebuild_run_summary(&fixed, 2).await.unwrap());
    assert_eq!(s.get_run("rb").await.unwrap(), Some(fixed.clone()));

    // The run moved on after the fold: the stale summary is refused, the newer row stays.
    let mut next = run_request("rb", 2, 1);
    let mut newer = summary("rb", "waiting", 10);
    newer.updated_at = 20;
    next.run_summary = Some(newer.clone());
    s.append(vec![next]).await.unwrap();
    assert!(
        !s.rebuild_run_summary(&fixed, 2).await.unwrap(),
        "{}",
        t.kind
    );
    assert_eq!(s.get_run("rb").await.unwrap(), Some(newer));
}

/// The work listener (LISTEN `cairn_work`) lives no longer than its store: `close` waits for
/// it to stop, and dropping the last clone stops it too, so nothing keeps a connection open or
/// retries against a closed pool behind the caller's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_work_listener_stops_with_its_store() {
    use cairn_runtime::store::postgres::PostgresStore;
    use cairn_runtime::store::Leases as _;
    use std::time::Duration;
    use tokio::sync::broadcast::error::RecvError;

    let Some(t) = crate::common::postgres().await else {
        return;
    };
    for close in [true, false] {
        let pg = PostgresStore::connect(&t.url).await.expect("connect");
        let (mut rx, _) = pg.work_notices().expect("notices");
        // `*` once the listener listens.
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(first.expect("listening").expect("notice"), "*");
        if close {
            tokio::time::timeout(Duration::from_secs(10), pg.close())
                .await
                .expect("close waits for the listener, which stops");
        }
        drop(pg);
        // With the store and its listener gone, no sender is left.
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.recv().await {
                    Err(RecvError::Closed) => break,
                    _ => continue,
                }
            }
        })
        .await;
        assert!(
            end.is_ok(),
            "the listener outlived its store (close: {close})"
        );
    }
}
