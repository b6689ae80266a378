//! Fault injection for tests: a store that loses the replies of some appends.
//!
//! **A testing knob, never for production.** [`FaultyStore`] wraps a real store and delegates
//! every call to it; after an append that *committed*, it may still answer the caller with
//! [`StoreError::Unavailable`] (`injected: ...`), as a database whose connection dropped between
//! `COMMIT` and its acknowledgement would. The caller then believes nothing was written while
//! the events are in the log: exactly the case the engine must survive without losing the
//! run, re-sending a completed call under a new key, or recording a step twice.
//!
//! It is switched on from the environment where a binary opens its store ([`wrap_from_env`]):
//!
//! - `CAIRN_CHAOS_APPEND_LOST_REPLY`: the probability (`0` to `1`, e.g. `0.05`) that a committed
//!   `append` or `append_groups` reports an error; unset or `0` leaves the store unwrapped;
//! - `CAIRN_CHAOS_SEED`: the seed (a `u64`) of the coin flips; without it a seed is drawn and
//!   logged. The seed fixes the sequence of flips, not which appends meet them: which append is
//!   the n-th one depends on the timing of the process.
//!
//! Every injection is logged at `warn` with the target `cairn::chaos` and the message
//! `injected fault: append committed, reply lost`, so that a test can count them in the
//! process's stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::{
    AppendRequest, Appended, DefinitionStore, EventLog, EventStore, GroupOutcome, Leases, Result,
    RunFilter, RunIndex, RunQuery, RunSummary, SnapshotStore, StoreError, StoredDefinition,
    StoredEvent, WorkerLease,
};

/// The environment variable holding the probability of [`FaultyStore`]'s lost append replies.
pub const APPEND_LOST_REPLY_ENV: &str = "CAIRN_CHAOS_APPEND_LOST_REPLY";

/// The environment variable holding the seed of [`FaultyStore`]'s coin flips.
pub const SEED_ENV: &str = "CAIRN_CHAOS_SEED";

/// The message logged, and the prefix of the error returned, for every injected fault.
pub const INJECTED_MESSAGE: &str = "injected fault: append committed, reply lost";

/// What [`FaultyStore`] injects.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FaultOptions {
    /// Probability (0 to 1) that an append which committed answers with an error.
    pub append_lost_reply: f64,
    /// Seed of the coin flips.
    pub seed: u64,
}

impl FaultOptions {
    /// Options with this probability of lost append replies and this seed.
    pub fn new(append_lost_reply: f64, seed: u64) -> Self {
        FaultOptions {
            append_lost_reply,
            seed,
        }
    }

    /// Reads [`APPEND_LOST_REPLY_ENV`] and [`SEED_ENV`]. `Ok(None)` when no fault is asked for
    /// (unset, empty or `0`); an error when a value does not parse, because a misspelt knob that
    /// silently injects nothing would make a fault test prove nothing.
    pub fn from_env() -> Result<Option<FaultOptions>> {
        let p = match std::env::var(APPEND_LOST_REPLY_ENV) {
            Ok(v) if !v.trim().is_empty() => v,
            _ => return Ok(None),
        };
        let p: f64 = p
            .trim()
            .parse()
            .ok()
            .filter(|p: &f64| (0.0..=1.0).contains(p))
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "{APPEND_LOST_REPLY_ENV}=`{p}` is not a probability between 0 and 1"
                ))
            })?;
        if p == 0.0 {
            return Ok(None);
        }
        let seed = match std::env::var(SEED_ENV) {
            Ok(s) if !s.trim().is_empty() => s.trim().parse().map_err(|e| {
                StoreError::Unavailable(format!("{SEED_ENV}=`{s}` is not a u64: {e}"))
            })?,
            _ => rand::random(),
        };
        Ok(Some(FaultOptions::new(p, seed)))
    }
}

/// An [`EventStore`] that delegates everything to an inner store and, after a successful
/// append, reports a [`StoreError::Unavailable`] instead with a seeded probability (see the
/// module documentation). A testing knob.
///
/// Every method of [`EventStore`] is delegated, those with a default body included: a method
/// left to its default would silently replace the inner store's behaviour (leases, snapshots)
/// with the default's, so a method added to the trait must be added here too.
pub struct FaultyStore {
    inner: Arc<dyn EventStore>,
    options: FaultOptions,
    rng: Mutex<StdRng>,
    injected: AtomicU64,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("options", &self.options)
            .field("injected", &self.injected())
            .finish_non_exhaustive()
    }
}

impl FaultyStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventStore>, options: FaultOptions) -> Self {
        FaultyStore {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(options.seed)),
            options,
            injected: AtomicU64::new(0),
        }
    }

    /// How many append replies this store has withheld so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// Flips the coin for an append that committed; `Some(error)` to report instead.
    fn lose_reply(&self, what: &str, streams: usize) -> Option<StoreError> {
        let hit = {
            // A poisoned lock only means another flip panicked; the generator is still usable.
            let mut rng = match self.rng.lock() {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            rng.random::<f64>() < self.options.append_lost_reply
        };
        if !hit {
            return None;
        }
        let n = self.injected.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            target: "cairn::chaos",
            call = what,
            streams,
            injected = n,
            "{INJECTED_MESSAGE}"
        );
        Some(StoreError::Unavailable(format!(
            "{INJECTED_MESSAGE} ({what}, {n})"
        )))
    }
}

/// `store` wrapped in a [`FaultyStore`] when [`FaultOptions::from_env`] asks for faults,
/// otherwise `store` itself. Called where a binary opens its store, so that a test can inject
/// faults into a real `cairn` process through its environment.
pub fn wrap_from_env(store: Arc<dyn EventStore>) -> Result<Arc<dyn EventStore>> {
    match FaultOptions::from_env()? {
        None => Ok(store),
        Some(options) => {
            tracing::warn!(
                target: "cairn::chaos",
                append_lost_reply = options.append_lost_reply,
                seed = options.seed,
                "fault injection on: committed appends may report an error (a testing knob)"
            );
            Ok(Arc::new(FaultyStore::new(store, options)))
        }
    }
}

#[async_trait]
impl EventLog for FaultyStore {
    async fn append(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        let streams = requests.len();
        let appended = self.inner.append(requests).await?;
        match self.lose_reply("append", streams) {
            Some(e) => Err(e),
            None => Ok(appended),
        }
    }

    async fn append_groups(&self, groups: Vec<Vec<AppendRequest>>) -> Result<Vec<GroupOutcome>> {
        let streams = groups.iter().map(Vec::len).sum();
        let outcomes = self.inner.append_groups(groups).await?;
        // Only a transaction that wrote something can lose its reply; one whose every group
        // conflicted committed nothing.
        if outcomes.iter().any(|o| o.is_ok()) {
            if let Some(e) = self.lose_reply("append_groups", streams) {
                return Err(e);
            }
        }
        Ok(outcomes)
    }

    async fn load(
        &self,
        aggregate_type: &str,
        stream: &str,
        after_sequence: u64,
    ) -> Result<Vec<StoredEvent>> {
        self.inner
            .load(aggregate_type, stream, after_sequence)
            .await
    }

    async fn read_all(&self, after_position: u64, limit: u64) -> Result<Vec<StoredEvent>> {
        self.inner.read_all(after_position, limit).await
    }

    async fn head_position(&self) -> Result<u64> {
        self.inner.head_position().await
    }

    fn database(&self) -> Option<super::Database<'_>> {
        self.inner.database()
    }
}

#[async_trait]
impl RunIndex for FaultyStore {
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        self.inner.list_runs(filter).await
    }

    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        self.inner.query_runs(query).await
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunSummary>> {
        self.inner.get_run(run_id).await
    }

    async fn projection_checkpoint(&self, projection: &str) -> Result<Option<u64>> {
        self.inner.projection_checkpoint(projection).await
    }

    async fn put_projection_checkpoint(&self, projection: &str, position: u64) -> Result<()> {
        self.inner
            .put_projection_checkpoint(projection, position)
            .await
    }

    async fn rebuild_run_summary(&self, summary: &RunSummary, last_sequence: u64) -> Result<bool> {
        self.inner.rebuild_run_summary(summary, last_sequence).await
    }
}

#[async_trait]
impl Leases for FaultyStore {
    // Ownership passes through untouched: faults here are about lost replies, and a wrapper
    // that fell back to the trait's defaults would silently turn leases off.

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
    ) -> Result<Vec<super::Claim>> {
        self.inner.claim_runs(lease, now, limit, only).await
    }

    async fn next_wake(&self) -> Result<Option<i64>> {
        self.inner.next_wake().await
    }

    async fn earliest_wake(&self) -> Result<Option<i64>> {
        self.inner.earliest_wake().await
    }

    async fn owned_runs(&self, lease: &super::WorkerLease) -> Result<Vec<String>> {
        self.inner.owned_runs(lease).await
    }

    fn work_notices(&self) -> Option<(tokio::sync::broadcast::Receiver<String>, bool)> {
        self.inner.work_notices()
    }
}

#[async_trait]
impl DefinitionStore for FaultyStore {
    async fn put_definition(&self, def: &StoredDefinition) -> Result<()> {
        self.inner.put_definition(def).await
    }

    async fn definition_by_hash(&self, hash: &str) -> Result<Option<StoredDefinition>> {
        self.inner.definition_by_hash(hash).await
    }

    async fn definition_events(&self) -> Result<Vec<StoredEvent>> {
        self.inner.definition_events().await
    }

    async fn unpublished_definitions(&self) -> Result<Vec<StoredDefinition>> {
        self.inner.unpublished_definitions().await
    }
}

#[async_trait]
impl SnapshotStore for FaultyStore {
    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
        last_sequence: u64,
        payload: Value,
    ) -> Result<()> {
        self.inner
            .save_snapshot(aggregate_type, stream, last_sequence, payload)
            .await
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
    ) -> Result<Option<(u64, Value)>> {
        self.inner.load_snapshot(aggregate_type, stream).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sqlite::SqliteStore, NewEvent, RUN_AGGREGATE};

    fn request(stream: &str, expected: u64) -> AppendRequest {
        AppendRequest {
            aggregate_type: RUN_AGGREGATE.to_string(),
            stream: stream.to_string(),
            expected_sequence: expected,
            events: vec![NewEvent {
                event_type: "Test".into(),
                event_version: "1".into(),
                payload: serde_json::json!({}),
                metadata: serde_json::json!({}),
            }],
            run_summary: None,
            ..AppendRequest::default()
        }
    }

    #[tokio::test]
    async fn a_lost_reply_still_commits() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("f.db");
        let base: Arc<dyn EventStore> = Arc::new(
            SqliteStore::open(path.to_str().expect("a UTF-8 path"))
                .await
                .expect("a store"),
        );
        let always = FaultyStore::new(base.clone(), FaultOptions::new(1.0, 7));
        let e = always
            .append(vec![request("r1", 0)])
            .await
            .expect_err("the reply is lost");
        assert!(matches!(e, StoreError::Unavailable(m) if m.starts_with(INJECTED_MESSAGE)));
        assert_eq!(
            base.load(RUN_AGGREGATE, "r1", 0).await.expect("load").len(),
            1
        );
        let e = always
            .append_groups(vec![vec![request("r2", 0)]])
            .await
            .expect_err("the reply is lost");
        assert!(matches!(e, StoreError::Unavailable(_)));
        assert_eq!(
            base.load(RUN_AGGREGATE, "r2", 0).await.expect("load").len(),
            1
        );
        // A conflict committed nothing: it is reported as it is, never as a lost reply.
        let e = always
            .append(vec![request("r1", 0)])
            .await
            .expect_err("a conflict");
        assert!(matches!(e, StoreError::Conflict { .. }));
        assert_eq!(always.injected(), 2);

        let never = FaultyStore::new(base.clone(), FaultOptions::new(0.0, 7));
        never
            .append(vec![request("r1", 1)])
            .await
            .expect("no fault at probability 0");
        assert_eq!(never.injected(), 0);
    }

    #[test]
    fn the_seed_fixes_the_flips() {
        let flips = |seed| {
            let base: Arc<dyn EventStore> = Arc::new(NeverCalled);
            let s = FaultyStore::new(base, FaultOptions::new(0.5, seed));
            (0..64)
                .map(|_| s.lose_reply("append", 1).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(flips(42), flips(42));
        assert_ne!(flips(42), flips(43));
    }

    /// A store for tests that only flip coins.
    struct NeverCalled;

    #[async_trait]
    impl EventLog for NeverCalled {
        async fn append(&self, _: Vec<AppendRequest>) -> Result<Vec<Appended>> {
            unreachable!()
        }
        async fn load(&self, _: &str, _: &str, _: u64) -> Result<Vec<StoredEvent>> {
            unreachable!()
        }
        async fn read_all(&self, _: u64, _: u64) -> Result<Vec<StoredEvent>> {
            unreachable!()
        }
    }

    #[async_trait]
    impl RunIndex for NeverCalled {
        async fn list_runs(&self, _: &RunFilter) -> Result<Vec<RunSummary>> {
            unreachable!()
        }
        async fn query_runs(&self, _: &RunQuery) -> Result<Vec<RunSummary>> {
            unreachable!()
        }
        async fn get_run(&self, _: &str) -> Result<Option<RunSummary>> {
            unreachable!()
        }
    }

    #[async_trait]
    impl DefinitionStore for NeverCalled {
        async fn put_definition(&self, _: &StoredDefinition) -> Result<()> {
            unreachable!()
        }
        async fn definition_by_hash(&self, _: &str) -> Result<Option<StoredDefinition>> {
            unreachable!()
        }
        async fn definition_events(&self) -> Result<Vec<StoredEvent>> {
            unreachable!()
        }
        async fn unpublished_definitions(&self) -> Result<Vec<StoredDefinition>> {
            unreachable!()
        }
    }

    impl Leases for NeverCalled {}

    impl SnapshotStore for NeverCalled {}
}
