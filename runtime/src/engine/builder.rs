//! Building a [`Runtime`]: the store, connectors, functions, and the worker's settings.

use super::*;

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    store_url: Option<String>,
    store: Option<Arc<dyn EventStore>>,
    http: Option<Arc<dyn ActivityHandler>>,
    functions: Functions,
    secrets: Secrets,
    workers: bool,
    poll_interval: Duration,
    tail: TailOptions,
    group_commit: bool,
    scope: WorkerScope,
    metrics: Option<Metrics>,
    worker_name: Option<String>,
    lease_ttl: Duration,
    max_held: usize,
    max_crashes: u32,
    call_grace: Duration,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            store_url: None,
            store: None,
            http: None,
            functions: Functions::default(),
            secrets: Arc::new(NoSecrets),
            workers: true,
            poll_interval: Duration::from_millis(200),
            tail: TailOptions::default(),
            group_commit: true,
            scope: WorkerScope::All,
            metrics: None,
            worker_name: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            max_held: 10_000,
            max_crashes: DEFAULT_MAX_CRASHES,
            call_grace: DEFAULT_CALL_GRACE,
        }
    }
}

/// How long a worker's lease lasts unless renewed (it renews every third of it).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// How many claims of a run in a row may end in a crash (nothing recorded) before a worker
/// faults the run instead of running it again.
pub const DEFAULT_MAX_CRASHES: u32 = 5;

/// How long calls in flight may go on after a shutdown begins (see
/// [`RuntimeBuilder::call_grace`]).
pub const DEFAULT_CALL_GRACE: Duration = Duration::from_secs(5);

/// Runs claimed per claim query.
pub(super) const CLAIM_BATCH: u64 = 64;

/// A unique default worker name: host, process id and a random part, so that two workers on one
/// host never share a lease by accident.
pub(super) fn default_worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &id[id.len() - 8..])
}

impl RuntimeBuilder {
    /// The store to open: `sqlite://PATH` or `postgres://...`.
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store_url = Some(url.into());
        self
    }

    /// An already open store.
    pub fn store(mut self, store: Arc<dyn EventStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// What performs `call: http` (the HTTP connector of `cairn-connectors`).
    pub fn http(mut self, handler: Arc<dyn ActivityHandler>) -> Self {
        self.http = Some(handler);
        self
    }

    /// Registers a Rust function that definitions call with `call: name`.
    pub fn function<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(FunctionCall) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::result::Result<Value, WorkflowError>>
            + Send
            + 'static,
    {
        self.functions.register(name, f);
        self
    }

    /// Where secrets come from.
    pub fn secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Whether this runtime executes runs (default) or only records them (a client).
    pub fn workers(mut self, on: bool) -> Self {
        self.workers = on;
        self
    }

    /// How often an idle worker looks at the log for work recorded by other processes.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// How often the log tail ([`Runtime::log_tail`]) reads the store when this process
    /// appended nothing (default 25 ms): how soon appends by other processes reach the
    /// subscribers of the tail and the runs held here.
    pub fn tail_interval(mut self, d: Duration) -> Self {
        self.tail.poll_interval = d;
        self
    }

    /// Whether appends of concurrent runs share transactions (default on).
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Which runs the workers of this runtime execute (default: all).
    pub fn scope(mut self, scope: WorkerScope) -> Self {
        self.scope = scope;
        self
    }

    /// Where the runtime's metrics go (a server passes the collectors whose registry it serves
    /// at `/metrics`); without this, a private registry nobody reads.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The name this worker registers under (default: host, process id and a random part). A
    /// worker restarted under the same name takes its previous life's runs back at once instead
    /// of waiting for that lease to expire; two live workers must never share a name.
    pub fn worker_name(mut self, name: impl Into<String>) -> Self {
        self.worker_name = Some(name.into());
        self
    }

    /// How long this worker's lease lasts without renewal (default [`DEFAULT_LEASE_TTL`]): how
    /// soon other workers take over the runs of a worker that died or stalls.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    /// At most this many runs held at once by this worker (default 10,000), so that one worker
    /// does not take all the work of a fleet.
    pub fn max_held_runs(mut self, n: usize) -> Self {
        self.max_held = n.max(1);
        self
    }

    /// How many claims of one run in a row may end in a crash of their worker (the process
    /// died, or its lease lapsed, before anything was recorded) before a worker faults the run
    /// with a "Poison run" error instead of running it again (default [`DEFAULT_MAX_CRASHES`]).
    /// A run that makes progress, or that a worker gives back on a graceful shutdown, starts
    /// counting again. 0 is taken as 1.
    pub fn max_crashes(mut self, n: u32) -> Self {
        self.max_crashes = n.max(1);
        self
    }

    /// How long calls in flight may go on once [`Runtime::shutdown`] begins (default
    /// [`DEFAULT_CALL_GRACE`]). A call still running then is abandoned: its result is not
    /// recorded, the run is released, and the next holder makes the call again with the same
    /// idempotency key. Bounds how long a shutdown takes whatever the calls do.
    pub fn call_grace(mut self, grace: Duration) -> Self {
        self.call_grace = grace;
        self
    }

    /// Opens the store and, for a worker, resumes every unfinished run.
    pub async fn build(self) -> Result<Runtime> {
        let metrics = match self.metrics {
            Some(m) => m,
            None => Metrics::new()?,
        };
        let base = match (self.store, self.store_url) {
            (Some(s), _) => s,
            (None, Some(url)) => store::open(&url).await?,
            (None, None) => return Err(Error::NoStore),
        };
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let store: Arc<dyn EventStore> = if self.group_commit {
            Arc::new(store::group::GroupCommitter::new(
                base.clone(),
                store::group::GroupCommitOptions::default(),
                &tracker,
                shutdown.clone(),
            ))
        } else {
            base.clone()
        };
        let (bus, _) = broadcast::channel(8192);
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            defs: Definitions::new(store.clone()),
            store,
            handler: Arc::new(Router::new(self.http, self.functions)),
            secrets: self.secrets,
            slots: Mutex::default(),
            inflight: Mutex::default(),
            bus,
            tracker,
            shutdown,
            timer_tx,
            workers: self.workers,
            worker_id: uuid::Uuid::now_v7().to_string(),
            poll_interval: self.poll_interval,
            tail_options: self.tail,
            tail: tokio::sync::OnceCell::new(),
            scope: self.scope,
            owned: Mutex::default(),
            waiters: Mutex::default(),
            finished: Mutex::default(),
            metrics,
            worker_name: self.worker_name.unwrap_or_else(default_worker_name),
            lease_ttl: self.lease_ttl,
            max_held: self.max_held,
            max_crashes: self.max_crashes,
            call_grace: self.call_grace,
            lease: Mutex::new(None),
            held: Mutex::default(),
            kick: tokio::sync::Notify::new(),
            troubled: Mutex::default(),
        });
        let rt = Runtime { inner };
        if rt.inner.workers {
            let lease = rt
                .inner
                .store
                .register_worker(&rt.inner.worker_name, rt.inner.lease_ttl_ms())
                .await?;
            if let Ok(mut l) = rt.inner.lease.lock() {
                *l = Some(lease);
            }
            let notices = rt.inner.store.work_notices();
            let cross_process = notices.as_ref().is_some_and(|(_, x)| *x);
            let i = rt.inner.clone();
            rt.inner
                .tracker
                .spawn(timer_loop(i, timer_rx).instrument(tracing::info_span!("timers")));
            if !cross_process {
                // Without notices from other processes (SQLite), follow the log for appends of
                // other processes to the runs held here.
                let tail = rt.log_tail().await?.subscribe();
                let i = rt.inner.clone();
                rt.inner
                    .tracker
                    .spawn(watch_foreign_appends(i, tail).instrument(tracing::info_span!("tail")));
            }
            let i = rt.inner.clone();
            rt.inner.tracker.spawn(
                claim_loop(i, notices.map(|(rx, _)| rx), cross_process)
                    .instrument(tracing::info_span!("claims")),
            );
        }
        Ok(rt)
    }
}
