//! Review of the distribution of runs over workers: interleavings that strand a run (its row
//! owned by a live worker that does not know it holds it) or drop the result of a call.
//!
//! Each test describes the failure it demonstrates; they fail until the fixes named there are in.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cairn_runtime::store::{
    AppendRequest, Appended, Claim, DefinitionStore, EventLog, EventStore, GroupOutcome, Lease,
    Leases, Result, RunFilter, RunIndex, RunQuery, RunSummary, SnapshotStore, StoreError,
    StoredDefinition, StoredEvent, WorkerLease,
};
use cairn_runtime::{RunOutcome, Runtime, StartOptions};
use serde_json::{json, Value};

use crate::common::TestStore;

on_both_stores!(
    a_start_whose_reply_is_lost_is_not_stranded,
    a_claim_whose_reply_is_lost_is_not_stranded,
    suspending_a_run_keeps_the_result_of_its_call_in_flight,
);

/// Delegates everything to `inner`; loses (once) the reply of the first committed append that
/// carries a `Lease::New` request, and (once) the reply of the first claim that took a run: the
/// database committed, the connection dropped before the answer came back.
struct Lossy {
    inner: Arc<dyn EventStore>,
    lose_new_start: AtomicBool,
    lose_claim: AtomicBool,
}

impl Lossy {
    fn new(inner: Arc<dyn EventStore>, start: bool, claim: bool) -> Arc<Self> {
        Arc::new(Lossy {
            inner,
            lose_new_start: AtomicBool::new(start),
            lose_claim: AtomicBool::new(claim),
        })
    }
}

fn lost() -> StoreError {
    StoreError::Unavailable("test: committed, reply lost".into())
}

fn has_new(reqs: &[AppendRequest]) -> bool {
    reqs.iter().any(|r| matches!(r.lease, Lease::New(_)))
}

#[async_trait]
impl EventLog for Lossy {
    async fn append(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        let new = has_new(&requests);
        let out = self.inner.append(requests).await?;
        if new && self.lose_new_start.swap(false, Ordering::SeqCst) {
            return Err(lost());
        }
        Ok(out)
    }

    async fn append_groups(&self, groups: Vec<Vec<AppendRequest>>) -> Result<Vec<GroupOutcome>> {
        let new = groups.iter().any(|g| has_new(g));
        let out = self.inner.append_groups(groups).await?;
        if new && out.iter().any(|o| o.is_ok()) && self.lose_new_start.swap(false, Ordering::SeqCst)
        {
            return Err(lost());
        }
        Ok(out)
    }

    async fn load(&self, t: &str, s: &str, after: u64) -> Result<Vec<StoredEvent>> {
        self.inner.load(t, s, after).await
    }

    async fn read_all(&self, after: u64, limit: u64) -> Result<Vec<StoredEvent>> {
        self.inner.read_all(after, limit).await
    }

    async fn head_position(&self) -> Result<u64> {
        self.inner.head_position().await
    }
}

#[async_trait]
impl RunIndex for Lossy {
    async fn list_runs(&self, f: &RunFilter) -> Result<Vec<RunSummary>> {
        self.inner.list_runs(f).await
    }

    async fn query_runs(&self, q: &RunQuery) -> Result<Vec<RunSummary>> {
        self.inner.query_runs(q).await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunSummary>> {
        self.inner.get_run(id).await
    }

    async fn projection_checkpoint(&self, p: &str) -> Result<Option<u64>> {
        self.inner.projection_checkpoint(p).await
    }

    async fn put_projection_checkpoint(&self, p: &str, pos: u64) -> Result<()> {
        self.inner.put_projection_checkpoint(p, pos).await
    }

    async fn rebuild_run_summary(&self, s: &RunSummary, seq: u64) -> Result<bool> {
        self.inner.rebuild_run_summary(s, seq).await
    }
}

#[async_trait]
impl Leases for Lossy {
    async fn register_worker(&self, name: &str, ttl_ms: i64) -> Result<WorkerLease> {
        self.inner.register_worker(name, ttl_ms).await
    }

    async fn renew_worker(&self, lease: &WorkerLease) -> Result<bool> {
        self.inner.renew_worker(lease).await
    }

    async fn retire_worker(&self, lease: &WorkerLease) -> Result<()> {
        self.inner.retire_worker(lease).await
    }

    async fn release_expired(&self) -> Result<u64> {
        self.inner.release_expired().await
    }

    async fn claim_runs(
        &self,
        lease: &WorkerLease,
        now: i64,
        limit: u64,
        only: Option<&[String]>,
    ) -> Result<Vec<Claim>> {
        let got = self.inner.claim_runs(lease, now, limit, only).await?;
        if !got.is_empty() && self.lose_claim.swap(false, Ordering::SeqCst) {
            return Err(lost());
        }
        Ok(got)
    }

    async fn next_wake(&self) -> Result<Option<i64>> {
        self.inner.next_wake().await
    }

    async fn owned_runs(&self, lease: &WorkerLease) -> Result<Vec<String>> {
        self.inner.owned_runs(lease).await
    }

    fn work_notices(&self) -> Option<(tokio::sync::broadcast::Receiver<String>, bool)> {
        self.inner.work_notices()
    }
}

#[async_trait]
impl DefinitionStore for Lossy {
    async fn put_definition(&self, d: &StoredDefinition) -> Result<()> {
        self.inner.put_definition(d).await
    }

    async fn definition_by_hash(&self, h: &str) -> Result<Option<StoredDefinition>> {
        self.inner.definition_by_hash(h).await
    }

    async fn definition_events(&self) -> Result<Vec<StoredEvent>> {
        self.inner.definition_events().await
    }

    async fn unpublished_definitions(&self) -> Result<Vec<StoredDefinition>> {
        self.inner.unpublished_definitions().await
    }
}

#[async_trait]
impl SnapshotStore for Lossy {
    async fn save_snapshot(&self, t: &str, s: &str, seq: u64, p: Value) -> Result<()> {
        self.inner.save_snapshot(t, s, seq, p).await
    }

    async fn load_snapshot(&self, t: &str, s: &str) -> Result<Option<(u64, Value)>> {
        self.inner.load_snapshot(t, s).await
    }
}

const ONE_CALL: &str = r#"
document: { dsl: '1.0.3', namespace: test, name: review, version: '1.0.0' }
do:
  - a: { call: step, with: { n: '${ .n }' } }
"#;

fn def(src: &str) -> cairn_core::dsl::Workflow {
    cairn_core::dsl::load_str(src, cairn_core::dsl::SourceFormat::Yaml).unwrap()
}

type Calls = Arc<Mutex<Vec<String>>>;

/// A worker runtime on `store` whose `step` records each call's idempotency key, and waits while
/// `gate` is closed.
async fn worker(
    store: Arc<dyn EventStore>,
    name: &str,
    calls: Calls,
    gate: Arc<AtomicBool>,
) -> Runtime {
    Runtime::builder()
        .store(store)
        .worker_name(name)
        .lease_ttl(Duration::from_millis(900))
        .function("step", move |c: cairn_runtime::FunctionCall| {
            let (calls, gate) = (calls.clone(), gate.clone());
            async move {
                calls.lock().unwrap().push(c.ctx.idempotency_key.clone());
                while !gate.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(json!({ "n": c.arguments["n"].as_i64().unwrap_or(0) + 1 }))
            }
        })
        .build()
        .await
        .unwrap()
}

async fn client(t: &TestStore) -> Runtime {
    Runtime::builder()
        .store(t.open_again().await)
        .workers(false)
        .build()
        .await
        .unwrap()
}

async fn finishes(t: &TestStore, client: &Runtime, id: &str, within: Duration) -> RunOutcome {
    match tokio::time::timeout(within, client.wait(id)).await {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let row = t.store.get_run(id).await.unwrap();
            let kinds: Vec<String> = t
                .store
                .load("run", id, 0)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_type)
                .collect();
            panic!("run {id} stranded after {within:?}: {row:?} after {kinds:?}");
        }
    }
}

/// 1. Worker `w` starts a run: `Lease::New(w)`; the row is inserted with `owner = w` (runnable).
/// 2. The commit's reply is lost: `Inner::start` answers the error, evicts, never `hold`s.
/// 3. `w` is alive and renews: `release_expired` never frees the row, no claim sees it (owner
///    set), and `w` never revisits it. The run waits until `w`'s process ends.
async fn a_start_whose_reply_is_lost_is_not_stranded(t: TestStore) {
    let calls: Calls = Arc::default();
    let open = Arc::new(AtomicBool::new(true));
    let w = worker(
        Lossy::new(t.open_again().await, true, false),
        "w",
        calls.clone(),
        open.clone(),
    )
    .await;
    // Another healthy worker, to show that nobody else can take the run either.
    let w2 = worker(t.open_again().await, "w2", calls.clone(), open.clone()).await;
    let c = client(&t).await;
    let started = w
        .start_run_with(
            def(ONE_CALL),
            json!({ "n": 1 }),
            StartOptions {
                run_id: Some("lost-start".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(started.is_err(), "the reply was lost: {started:?}");
    assert!(
        !t.store
            .load("run", "lost-start", 0)
            .await
            .unwrap()
            .is_empty(),
        "but the run was recorded"
    );
    let out = finishes(&t, &c, "lost-start", Duration::from_secs(8)).await;
    assert_eq!(out, RunOutcome::Completed(json!({ "n": 2 })));
    w.shutdown().await;
    w2.shutdown().await;
}

/// 1. A client starts a run (External): owner NULL, runnable.
/// 2. Worker `w`'s `claim_runs` sets `owner = w` and commits; the reply is lost, so
///    `claim_batch` fails before `hold`/`revisit`.
/// 3. Same as above: owned by a live worker that does not know it; stranded.
async fn a_claim_whose_reply_is_lost_is_not_stranded(t: TestStore) {
    let calls: Calls = Arc::default();
    let open = Arc::new(AtomicBool::new(true));
    let w = worker(
        Lossy::new(t.open_again().await, false, true),
        "w",
        calls.clone(),
        open.clone(),
    )
    .await;
    let c = client(&t).await;
    let id = c.start_run(def(ONE_CALL), json!({ "n": 1 })).await.unwrap();
    // Let `w` claim it (and lose the reply), then bring a healthy worker.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let w2 = worker(t.open_again().await, "w2", calls.clone(), open.clone()).await;
    let out = finishes(&t, &c, &id, Duration::from_secs(8)).await;
    assert_eq!(out, RunOutcome::Completed(json!({ "n": 2 })));
    w.shutdown().await;
    w2.shutdown().await;
}

/// `Runtime::suspend` promises that calls in flight still record their results.
/// 1. `w` holds the run and its call is in flight.
/// 2. An operator suspends it (External append, `wake_at = NULL`): the upsert clears `owner`;
///    no notice reaches `w`, which still believes it holds the run.
/// 3. The call returns: `w` appends `ActivityCompleted` as `Lease::Held(w)`; the fence finds
///    `owner = NULL` and answers `LeaseLost`; `advance_with` drops the run and the result.
/// 4. On resume the run is claimed again and the same call is sent a second time.
async fn suspending_a_run_keeps_the_result_of_its_call_in_flight(t: TestStore) {
    let calls: Calls = Arc::default();
    let gate = Arc::new(AtomicBool::new(false));
    let w = worker(t.open_again().await, "w", calls.clone(), gate.clone()).await;
    let c = client(&t).await;
    let id = c.start_run(def(ONE_CALL), json!({ "n": 1 })).await.unwrap();
    let started = AtomicUsize::new(0);
    for _ in 0..500 {
        started.store(calls.lock().unwrap().len(), Ordering::SeqCst);
        if started.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(started.load(Ordering::SeqCst), 1, "the call is in flight");
    c.suspend(&id).await.unwrap();
    gate.store(true, Ordering::SeqCst);
    // Give the worker time to record the result while the run is suspended.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let kinds: Vec<String> = t
        .store
        .load("run", &id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    c.resume(&id).await.unwrap();
    let out = finishes(&t, &c, &id, Duration::from_secs(8)).await;
    assert_eq!(out, RunOutcome::Completed(json!({ "n": 2 })));
    let calls = calls.lock().unwrap().clone();
    assert!(
        kinds.iter().any(|k| k == "ActivityCompleted"),
        "the result of the call in flight was not recorded while suspended: {kinds:?}; \
         calls made: {calls:?}"
    );
    assert_eq!(calls.len(), 1, "the call was sent again: {calls:?}");
    w.shutdown().await;
}
