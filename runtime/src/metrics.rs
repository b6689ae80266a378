//! Prometheus collectors of the runtime: runs started and finished, task durations, append
//! latency and conflicts, projection lag.
//!
//! [`Metrics`] owns a [`prometheus::Registry`]; a server registers its own collectors in the same
//! registry ([`Metrics::registry`]) and exposes it at `/metrics`. A runtime built without one
//! gets a private registry nobody reads, so the hooks in the executor never need an `Option`.
//!
//! Names follow `cairn_<name>_<unit>[_total]` in base units (seconds, events). Every label value
//! is drawn from a bounded set: run statuses, task kinds, outcomes, projection names, and the
//! namespace and name of deployed definitions (which an operator controls). Run ids, task
//! positions and attempts are never labels: they belong to tracing spans.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Buckets of latencies measured in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of task durations in seconds: a task is a call to the outside world, so from 1 ms to
/// 5 minutes.
const TASK_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The runtime's collectors. Cheap to clone: collectors and the registry are shared handles.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    runs_started: IntCounterVec,
    runs_finished: IntCounterVec,
    task_duration: HistogramVec,
    append_duration: HistogramVec,
    append_conflicts: IntCounter,
    projection_lag: IntGaugeVec,
    runs_held: IntGauge,
    runs_claimed: IntCounter,
    runs_poisoned: IntCounter,
    leases_lost: IntCounterVec,
    runs_released_expired: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates the collectors in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        Self::with_registry(Registry::new())
    }

    /// Creates the collectors and registers them in `registry`.
    pub fn with_registry(registry: Registry) -> prometheus::Result<Self> {
        let runs_started = IntCounterVec::new(
            Opts::new(
                "cairn_runs_started_total",
                "Runs started, by definition (sub-workflow runs included; a start refused as a \
                 duplicate does not count)",
            ),
            &["namespace", "name"],
        )?;
        let runs_finished = IntCounterVec::new(
            Opts::new(
                "cairn_runs_finished_total",
                "Runs that reached a terminal status, by definition and status (a retried run \
                 counts each time it finishes)",
            ),
            &["namespace", "name", "status"],
        )?;
        let task_duration = HistogramVec::new(
            HistogramOpts::new(
                "cairn_task_duration_seconds",
                "Duration of task executions (calls) by kind and outcome",
            )
            .buckets(TASK_BUCKETS.to_vec()),
            &["kind", "outcome"],
        )?;
        let append_duration = HistogramVec::new(
            HistogramOpts::new(
                "cairn_store_append_duration_seconds",
                "Latency of run appends as the executor sees it (group commit wait included), \
                 by outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let append_conflicts = IntCounter::new(
            "cairn_store_append_conflicts_total",
            "Run appends refused because another writer extended the run first",
        )?;
        let projection_lag = IntGaugeVec::new(
            Opts::new(
                "cairn_projection_lag_events",
                "Events in the log that a projection or follower has not processed yet \
                 (global head position minus its checkpoint)",
            ),
            &["projection"],
        )?;
        let runs_held = IntGauge::new(
            "cairn_worker_runs_held",
            "Runs this worker holds now (they can progress and it executes them)",
        )?;
        let runs_claimed = IntCounter::new(
            "cairn_worker_runs_claimed_total",
            "Runs this worker claimed because they needed a worker (due timers, new runs, \
             takeovers)",
        )?;
        let runs_poisoned = IntCounter::new(
            "cairn_worker_runs_poisoned_total",
            "Runs this worker faulted instead of running them, because their last claims all \
             ended in a crash (more than max_crashes in a row without progress)",
        )?;
        let leases_lost = IntCounterVec::new(
            Opts::new(
                "cairn_worker_leases_lost_total",
                "Leases this worker lost: `run` when an append was fenced out because another \
                 worker took the run over, `worker` when its own lease expired before renewal",
            ),
            &["scope"],
        )?;
        let runs_released_expired = IntCounter::new(
            "cairn_worker_runs_released_expired_total",
            "Runs of dead workers (expired leases) this worker released for takeover",
        )?;
        registry.register(Box::new(runs_held.clone()))?;
        registry.register(Box::new(runs_claimed.clone()))?;
        registry.register(Box::new(runs_poisoned.clone()))?;
        registry.register(Box::new(leases_lost.clone()))?;
        registry.register(Box::new(runs_released_expired.clone()))?;
        registry.register(Box::new(runs_started.clone()))?;
        registry.register(Box::new(runs_finished.clone()))?;
        registry.register(Box::new(task_duration.clone()))?;
        registry.register(Box::new(append_duration.clone()))?;
        registry.register(Box::new(append_conflicts.clone()))?;
        registry.register(Box::new(projection_lag.clone()))?;
        Ok(Metrics {
            registry,
            runs_started,
            runs_finished,
            task_duration,
            append_duration,
            append_conflicts,
            projection_lag,
            runs_held,
            runs_claimed,
            runs_poisoned,
            leases_lost,
            runs_released_expired,
        })
    }

    /// Sets how many runs this worker holds.
    pub fn set_runs_held(&self, n: usize) {
        self.runs_held.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts runs claimed.
    pub fn runs_claimed(&self, n: usize) {
        self.runs_claimed.inc_by(n as u64);
    }

    /// Counts a run faulted as poison (its claims kept ending in crashes).
    pub fn run_poisoned(&self) {
        self.runs_poisoned.inc();
    }

    /// Counts a lost lease: `run` (a fenced append) or `worker` (the worker's own lease).
    pub fn lease_lost(&self, scope: &str) {
        self.leases_lost.with_label_values(&[scope]).inc();
    }

    /// Counts runs of dead workers released for takeover.
    pub fn runs_released_expired(&self, n: u64) {
        self.runs_released_expired.inc_by(n);
    }

    /// The registry holding these collectors (and whatever else its owner registers).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a run whose first events were recorded.
    pub fn run_started(&self, namespace: &str, name: &str) {
        self.runs_started
            .with_label_values(&[namespace, name])
            .inc();
    }

    /// Counts a run that reached `status` (a terminal status label).
    pub fn run_finished(&self, namespace: &str, name: &str, status: &str) {
        self.runs_finished
            .with_label_values(&[namespace, name, status])
            .inc();
    }

    /// Observes one task execution of `kind` (`http`, `openapi`, `function`).
    pub fn task_finished(&self, kind: &str, ok: bool, took: Duration) {
        self.task_duration
            .with_label_values(&[kind, if ok { "ok" } else { "error" }])
            .observe(took.as_secs_f64());
    }

    /// Observes one append: `Ok`, a concurrency conflict, or another failure.
    pub fn append_finished(&self, outcome: AppendOutcome, took: Duration) {
        let label = match outcome {
            AppendOutcome::Ok => "ok",
            AppendOutcome::Conflict => {
                self.append_conflicts.inc();
                "conflict"
            }
            AppendOutcome::Error => "error",
        };
        self.append_duration
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }

    /// Sets how many events `projection` is behind the head of the log.
    pub fn set_projection_lag(&self, projection: &str, head: u64, checkpoint: u64) {
        let lag = head.saturating_sub(checkpoint);
        self.projection_lag
            .with_label_values(&[projection])
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
}

/// How an append ended, for [`Metrics::append_finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendOutcome {
    /// Written.
    Ok,
    /// Refused: another writer extended a stream first.
    Conflict,
    /// The store failed.
    Error,
}
