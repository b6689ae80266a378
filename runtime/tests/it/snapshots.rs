//! Snapshots on SQLite and PostgreSQL: the store keeps the newest one per run; a run of more than
//! 10,000 events completes, and loading it folds fewer than `SNAPSHOT_EVERY` events after its
//! snapshot into the same state as folding them all; a snapshot that cannot be used (another
//! format, garbage, the wrong sequence) is ignored, then replaced by a good one; cqrs-es's
//! snapshot store works over the repository.

use std::time::Duration;

use cairn_core::dsl::{load_str, SourceFormat};
use cairn_core::state::{RunState, RunStatus};
use cairn_core::RunEvent;
use cairn_runtime::snapshots::{self, SNAPSHOT_EVERY};
use cairn_runtime::store::RUN_AGGREGATE;
use cairn_runtime::{RunOutcome, Runtime};
use serde_json::{json, Value};
use sqlx::Connection as _;

use crate::common::TestStore;

on_both_stores!(
    the_store_keeps_the_newest_snapshot_only,
    a_long_run_loads_from_its_snapshot,
    cqrs_snapshot_store_runs_on_the_repository,
);

/// Rows of the `snapshots` table for one stream, counted behind the store's back.
async fn snapshot_rows(t: &TestStore, aggregate_type: &str, stream: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2";
    if t.kind == "sqlite" {
        let mut c = sqlx::SqliteConnection::connect(&t.url).await.unwrap();
        sqlx::query_scalar(sql)
            .bind(aggregate_type)
            .bind(stream)
            .fetch_one(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(&t.url).await.unwrap();
        sqlx::query_scalar(sql)
            .bind(aggregate_type)
            .bind(stream)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }
}

async fn the_store_keeps_the_newest_snapshot_only(t: TestStore) {
    let s = &t.store;
    assert_eq!(s.load_snapshot(RUN_AGGREGATE, "r1").await.unwrap(), None);
    s.save_snapshot(RUN_AGGREGATE, "r1", 5, json!({ "v": 5 }))
        .await
        .unwrap();
    s.save_snapshot(RUN_AGGREGATE, "r2", 7, json!({ "other": "run" }))
        .await
        .unwrap();
    s.save_snapshot("counter", "r1", 9, json!({ "other": "type" }))
        .await
        .unwrap();
    // An older snapshot than the stored one loses (a slower writer racing a faster one).
    s.save_snapshot(RUN_AGGREGATE, "r1", 3, json!({ "v": 3 }))
        .await
        .unwrap();
    assert_eq!(
        s.load_snapshot(RUN_AGGREGATE, "r1").await.unwrap(),
        Some((5, json!({ "v": 5 })))
    );
    // A newer one replaces it, in the same transaction.
    s.save_snapshot(RUN_AGGREGATE, "r1", 12, json!({ "v": 12 }))
        .await
        .unwrap();
    assert_eq!(
        s.load_snapshot(RUN_AGGREGATE, "r1").await.unwrap(),
        Some((12, json!({ "v": 12 })))
    );
    assert_eq!(snapshot_rows(&t, RUN_AGGREGATE, "r1").await, 1);
    // One of the same sequence is replaced (it may be of an outdated format).
    s.save_snapshot(RUN_AGGREGATE, "r1", 12, json!({ "v": "12b" }))
        .await
        .unwrap();
    assert_eq!(
        s.load_snapshot(RUN_AGGREGATE, "r1").await.unwrap(),
        Some((12, json!({ "v": "12b" })))
    );
    assert_eq!(snapshot_rows(&t, RUN_AGGREGATE, "r1").await, 1);
    // Other streams and aggregate types are untouched.
    assert_eq!(
        s.load_snapshot(RUN_AGGREGATE, "r2").await.unwrap(),
        Some((7, json!({ "other": "run" })))
    );
    assert_eq!(
        s.load_snapshot("counter", "r1").await.unwrap(),
        Some((9, json!({ "other": "type" })))
    );
}

/// Items of the loop: each iteration records 11 events (the iteration, five `set` tasks started
/// and completed), so the run passes 10,000 events. Few items with several tasks each, because
/// the decider evaluates `for.in` again at each iteration (a cost per iteration that grows with
/// the list).
const ITEMS: u64 = 1_000;

async fn a_long_run_loads_from_its_snapshot(t: TestStore) {
    let def = load_str(
        &format!(
            r#"
document: {{ dsl: '1.0.3', namespace: test, name: long, version: '1.0.0' }}
do:
  - loop:
      for: {{ in: '${{ [range({ITEMS})] }}', each: item }}
      do:
        - a: {{ set: {{ last: '${{ $item }}' }} }}
        - b: {{ set: {{ last: '${{ $item }}' }} }}
        - c: {{ set: {{ last: '${{ $item }}' }} }}
        - d: {{ set: {{ last: '${{ $item }}' }} }}
        - e: {{ set: {{ last: '${{ $item }}' }} }}
"#
        ),
        SourceFormat::Yaml,
    )
    .unwrap();
    let rt = Runtime::builder()
        .store_url(t.url.clone())
        .build()
        .await
        .unwrap();
    let (id, outcome) = tokio::time::timeout(Duration::from_secs(120), rt.run(def, json!({})))
        .await
        .expect("the long run finishes within 120 s")
        .unwrap();
    assert_eq!(outcome, RunOutcome::Completed(json!({ "last": ITEMS - 1 })));
    // Shutdown waits for the snapshot tasks the appends spawned.
    rt.shutdown().await;

    let full = snapshots::load_run(t.store.as_ref(), &id, false)
        .await
        .unwrap();
    assert!(
        full.sequence >= 10_000,
        "the run has {} events, expected at least 10,000",
        full.sequence
    );
    assert_eq!(full.events_read, full.sequence);
    assert_eq!(full.state.status, RunStatus::Completed);

    let fast = snapshots::load_run(t.store.as_ref(), &id, true)
        .await
        .unwrap();
    let at = fast.snapshot.expect("the long run has a snapshot");
    assert!(
        fast.events_read < SNAPSHOT_EVERY,
        "read {} events after the snapshot at {at} of {}",
        fast.events_read,
        fast.sequence
    );
    assert_eq!(fast.events_read, fast.sequence - at);
    assert_eq!(fast.sequence, full.sequence);
    assert_eq!(fast.state, full.state, "snapshot + tail == full fold");

    // Another process loads the same state through the engine.
    let rt2 = Runtime::builder()
        .store_url(t.url.clone())
        .workers(false)
        .build()
        .await
        .unwrap();
    assert_eq!(rt2.state(&id).await.unwrap(), full.state);
    rt2.shutdown().await;

    // A snapshot no reader can use is ignored: the run folds from its first event, the same.
    let (_, good) = t
        .store
        .load_snapshot(RUN_AGGREGATE, &id)
        .await
        .unwrap()
        .unwrap();
    // A good state stored under the wrong sequence would repeat an event.
    let events = t.store.load(RUN_AGGREGATE, &id, 0).await.unwrap();
    let one_short = RunState::from_events(
        &events[..at as usize - 1]
            .iter()
            .map(|e| RunEvent::from_stored(&e.event_type, &e.event_version, e.payload.clone()))
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
    );
    let unusable: Vec<(&str, Value)> = vec![
        (
            "an older format",
            json!({ "format": 0, "state": good["state"] }),
        ),
        ("garbage", json!({ "format": 1, "state": "{ not json" })),
        ("not an object", json!([1, 2, 3])),
        ("the wrong sequence", one_short.to_snapshot().unwrap()),
    ];
    for (what, payload) in unusable {
        // At the same sequence, so it replaces the good one.
        t.store
            .save_snapshot(RUN_AGGREGATE, &id, at, payload)
            .await
            .unwrap();
        let loaded = snapshots::load_run(t.store.as_ref(), &id, true)
            .await
            .unwrap();
        assert_eq!(loaded.snapshot, None, "{what}: not used");
        assert_eq!(
            loaded.events_read, full.sequence,
            "{what}: every event read"
        );
        assert_eq!(loaded.state, full.state, "{what}: the same state");
    }

    // The engine reads past the bad snapshot, and replaces it by a good one as it goes.
    let rt3 = Runtime::builder()
        .store_url(t.url.clone())
        .workers(false)
        .build()
        .await
        .unwrap();
    assert_eq!(rt3.state(&id).await.unwrap(), full.state);
    rt3.shutdown().await;
    let healed = snapshots::load_run(t.store.as_ref(), &id, true)
        .await
        .unwrap();
    assert_eq!(healed.snapshot, Some(full.sequence));
    assert_eq!(healed.events_read, 0);
    assert_eq!(healed.state, full.state);
    assert_eq!(snapshot_rows(&t, RUN_AGGREGATE, &id).await, 1);
}

mod tally {
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};

    /// A toy aggregate that counts how many events it folded.
    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct Tally {
        pub total: i64,
        pub folded: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Added(pub i64);

    impl DomainEvent for Added {
        fn event_type(&self) -> String {
            "Added".into()
        }
        fn event_version(&self) -> String {
            "1".into()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub struct Never;

    impl Aggregate for Tally {
        const TYPE: &'static str = "tally";
        type Command = Vec<i64>;
        type Event = Added;
        type Error = Never;
        type Services = ();

        async fn handle(
            &mut self,
            command: Vec<i64>,
            _: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), Never> {
            for n in command {
                sink.write(Added(n), self).await;
            }
            Ok(())
        }

        fn apply(&mut self, event: Added) {
            self.total += event.0;
            self.folded += 1;
        }
    }
}

async fn cqrs_snapshot_store_runs_on_the_repository(t: TestStore) {
    use cairn_runtime::store::cqrs::CqrsRepository;
    use cqrs_es::persist::PersistedEventStore;
    use cqrs_es::{AggregateContext as _, EventStore as _};
    use tally::Tally;
    use tokio_util::task::TaskTracker;

    let tracker = TaskTracker::new();
    let repo = CqrsRepository::new(t.store.clone(), tracker.clone()).with_snapshots(3);
    let store = PersistedEventStore::<CqrsRepository, Tally>::new_snapshot_store(repo, 3);
    let cqrs = cqrs_es::CqrsFramework::new(store, vec![], ());
    // Batches of 2, 4 (crosses 3: snapshot), 1, 4 (crosses 9: snapshot).
    for batch in [vec![1, 2], vec![3, 4, 5, 6], vec![7], vec![8, 9, 10, 11]] {
        cqrs.execute("t1", batch).await.unwrap();
    }
    let (seq, snap) = t.store.load_snapshot("tally", "t1").await.unwrap().unwrap();
    assert_eq!(seq, 11, "as of the last event committed");
    // Every event folded once (cqrs-es's own snapshot would say total 101, folded 17).
    assert_eq!(snap, json!({ "total": 66, "folded": 11 }));
    assert_eq!(snapshot_rows(&t, "tally", "t1").await, 1);
    cqrs.execute("t1", vec![12]).await.unwrap();

    // Loading starts from the snapshot and folds the events after it.
    let repo = CqrsRepository::new(t.store.clone(), tracker.clone()).with_snapshots(3);
    let store = PersistedEventStore::<CqrsRepository, Tally>::new_snapshot_store(repo, 3);
    let mut ctx = store.load_aggregate("t1").await.unwrap();
    assert_eq!(ctx.aggregate().total, 78);
    assert_eq!(ctx.aggregate().folded, 12);

    // A snapshot that is not a `Tally` makes cqrs-es fold every event instead.
    t.store
        .save_snapshot("tally", "t1", 9, json!({ "format": 1, "state": "x" }))
        .await
        .unwrap();
    let mut ctx = store.load_aggregate("t1").await.unwrap();
    assert_eq!(ctx.aggregate().total, 78);
    assert_eq!(ctx.aggregate().folded, 12);
    tracker.close();
    tracker.wait().await;
}
