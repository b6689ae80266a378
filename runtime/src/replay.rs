//! Replaying runs from the store: `cairn replay`, the deploy-time check and `--migrate`.
//!
//! The replaying itself is [`cairn_core::replay`] (pure); this module loads what it needs (a
//! run's stored history cut into its appends, the deciders of the versions it ran on, the
//! secrets), finds the unfinished runs a new version of a definition would affect, and moves
//! the compatible ones onto it with a [`RunEvent::RunMigrated`] appended at the sequence the
//! check saw, so a run that moved on meanwhile is checked again, never moved blind.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_core::decider::Decider;
use cairn_core::dsl::Workflow;
use cairn_core::events::{RunEvent, EVENT_VERSION};
use cairn_core::names::StatusLabel;
use cairn_core::replay::{self, Deciders, Divergence, Report, Stored};
use cairn_core::state::RunState;
use futures::StreamExt;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::definitions::content_hash;
use crate::store::{
    AppendRequest, EventStore, Lease, NewEvent, RunQuery, StoreError, RUN_AGGREGATE,
};
use crate::view::decode;
use crate::{Error, Result, Runtime};

/// Histories loaded at once by the check.
const LOAD_CONCURRENCY: usize = 16;
/// Runs replayed per blocking task by the check.
const CHUNK: usize = 256;
/// Chunks of the check in flight at once (loading or replaying).
const PIPELINE: usize = 3;
/// Runs listed per page of the runs index.
const PAGE: u64 = 1_000;
/// How many times a migration checks a run again that moved on while it was being checked.
const MIGRATE_ATTEMPTS: u32 = 3;
/// The `worker` of a `RunMigrated` event's metadata.
const MIGRATOR: &str = "cairn deploy --migrate";

/// What a run is replayed against.
#[derive(Debug, Clone)]
pub enum Against {
    /// The versions it ran on (each part of a migrated run on its own): a determinism check.
    Own,
    /// Another definition, for every decision.
    Definition(Box<Workflow>),
    /// Another deployed version of the run's own definition (`latest` for the head).
    Version(String),
}

/// Options of the deploy-time check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Check only this many unfinished runs, chosen at random (all when `None`).
    pub sample: Option<usize>,
    /// The secrets bound as `$secrets` while replaying (the runtime's own when `None`).
    pub secrets: Option<Map<String, Value>>,
}

/// What the check found for one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCheck {
    /// The run.
    pub run_id: String,
    /// The version it is on.
    pub version: String,
    /// The content hash of that version.
    pub hash: String,
    /// The sequence of the last event the check replayed.
    pub last_sequence: u64,
    /// Whether the new version reproduces every decision the run recorded.
    pub compatible: bool,
    /// Where it does not.
    pub divergence: Option<Divergence>,
    /// Why the run could not be replayed at all (it then counts as not compatible).
    pub error: Option<String>,
    /// Whether `--migrate` moved it onto the new version (`None` when no migration was asked).
    pub migrated: Option<bool>,
}

impl RunCheck {
    /// The line `cairn deploy` prints for it.
    pub fn line(&self) -> String {
        let moved = match self.migrated {
            Some(true) => ", migrated",
            Some(false) if self.compatible => ", not migrated (it moved on and no longer replays)",
            _ => "",
        };
        match (&self.divergence, &self.error) {
            (Some(d), _) => format!("{} {d}", self.run_id),
            (None, Some(e)) => format!("{} cannot be replayed: {e}", self.run_id),
            (None, None) => format!("{} compatible{moved}", self.run_id),
        }
    }
}

/// What the deploy-time check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The new version.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its version label.
    pub version: String,
    /// Its content hash.
    pub hash: String,
    /// Unfinished runs of the definition when the check began, on any version (runs already
    /// on the new content are not checked).
    pub unfinished: usize,
    /// The runs checked (all of them, or the sample), in the order of the runs index.
    pub runs: Vec<RunCheck>,
}

impl CheckReport {
    /// Whether every checked run is compatible.
    pub fn compatible(&self) -> bool {
        self.runs.iter().all(|r| r.compatible)
    }

    /// How many checked runs diverge (or cannot be replayed).
    pub fn diverging(&self) -> usize {
        self.runs.iter().filter(|r| !r.compatible).count()
    }
}

/// A run's stored history, cut into the appends that wrote it.
struct Loaded {
    batches: Vec<replay::Batch>,
    state: RunState,
    sequence: u64,
}

/// Loads a run's history ([`Error::RunNotFound`] when it has none).
async fn load(store: &dyn EventStore, run_id: &str) -> Result<Loaded> {
    let stored = store.load(RUN_AGGREGATE, run_id, 0).await?;
    if stored.is_empty() {
        return Err(Error::RunNotFound {
            run_id: run_id.to_string(),
        });
    }
    let sequence = stored.last().map_or(0, |e| e.sequence);
    let mut events = Vec::with_capacity(stored.len());
    for e in &stored {
        events.push(Stored {
            event: decode(e)?,
            recorded_at: e.metadata.get("recorded_at").and_then(Value::as_i64),
            writer: e
                .metadata
                .get("worker")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    let state = RunState::from_events(events.iter().map(|s| &s.event));
    Ok(Loaded {
        batches: replay::batches(events),
        state,
        sequence,
    })
}

/// The content hashes a history was decided by: its start's and each migration's.
fn hashes(batches: &[replay::Batch]) -> Vec<String> {
    let mut out = Vec::new();
    for e in batches.iter().flat_map(|b| &b.events) {
        match e {
            RunEvent::RunStarted { definition, .. } => out.push(definition.hash.clone()),
            RunEvent::RunMigrated { to_hash, .. } => out.push(to_hash.clone()),
            _ => {}
        }
    }
    out
}

fn replay_error(run_id: &str, source: replay::ReplayError) -> Error {
    Error::Replay {
        run_id: run_id.to_string(),
        source,
    }
}

/// Replays on a blocking thread: a long history is CPU work, kept off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::ReplayTask {
            message: e.to_string(),
        })
}

impl Runtime {
    /// Replays a run's recorded history against its own versions or `against`, decision by
    /// decision ([`cairn_core::replay`]).
    pub async fn replay(&self, run_id: &str, against: Against) -> Result<Report> {
        let (store, defs, secrets) = self.replay_parts();
        let loaded = load(store.as_ref(), run_id).await?;
        let one = match against {
            Against::Own => None,
            Against::Definition(def) => Some(Arc::new(Decider::new(Arc::new(*def)))),
            Against::Version(v) => {
                let d = loaded
                    .state
                    .definition
                    .clone()
                    .ok_or_else(|| Error::NoRunStarted {
                        run_id: run_id.to_string(),
                    })?;
                let r = defs.find(&d.namespace, &d.name, &v).await?.ok_or(
                    Error::DefinitionNotDeployed {
                        namespace: d.namespace,
                        name: d.name,
                        version: v,
                    },
                )?;
                Some(defs.decider(&r.hash).await?)
            }
        };
        let mut known = HashMap::new();
        if one.is_none() {
            for h in hashes(&loaded.batches) {
                if let std::collections::hash_map::Entry::Vacant(slot) = known.entry(h) {
                    let d = defs.decider(slot.key()).await?;
                    slot.insert(d);
                }
            }
        }
        let run = run_id.to_string();
        blocking(move || {
            let deciders = match &one {
                Some(d) => Deciders::One(d),
                None => Deciders::Recorded(&known),
            };
            replay::replay(&loaded.batches, deciders, &secrets).map_err(|e| replay_error(&run, e))
        })
        .await?
    }

    /// The deploy-time check: replays the unfinished runs of `def`'s namespace and name that are
    /// on another version (all, or a random sample) against `def`, without recording anything.
    pub async fn check_deploy(&self, def: &Workflow, opts: &CheckOptions) -> Result<CheckReport> {
        let (store, _, secrets) = self.replay_parts();
        let secrets = opts.secrets.clone().unwrap_or(secrets);
        let (hash, _) = content_hash(def)?;
        let doc = &def.document;
        let mut ids = unfinished(store.as_ref(), &doc.namespace, &doc.name).await?;
        let unfinished = ids.len();
        if let Some(n) = opts.sample {
            ids.shuffle(&mut rand::rng());
            ids.truncate(n);
        }
        let decider = Arc::new(Decider::new(Arc::new(def.clone())));
        let secrets = Arc::new(secrets);
        // Chunks are loaded and replayed in a pipeline: while one chunk replays on a blocking
        // thread, the next ones load.
        let chunks: Vec<Vec<String>> = ids.chunks(CHUNK).map(<[String]>::to_vec).collect();
        let checked: Vec<Result<Vec<RunCheck>>> = futures::stream::iter(chunks)
            .map(|chunk| {
                let (store, d, s, h) = (
                    store.clone(),
                    decider.clone(),
                    secrets.clone(),
                    hash.clone(),
                );
                async move {
                    let loaded: Vec<(String, Result<Loaded>)> = futures::stream::iter(chunk)
                        .map(|id| {
                            let store = store.clone();
                            async move {
                                let l = load(store.as_ref(), &id).await;
                                (id, l)
                            }
                        })
                        .buffered(LOAD_CONCURRENCY)
                        .collect()
                        .await;
                    blocking(move || {
                        loaded
                            .into_iter()
                            .filter_map(|(id, l)| check_one(&id, l, &d, &s, &h))
                            .collect::<Result<Vec<_>>>()
                    })
                    .await?
                }
            })
            .buffered(PIPELINE)
            .collect()
            .await;
        let mut runs = Vec::with_capacity(ids.len());
        for c in checked {
            runs.extend(c?);
        }
        Ok(CheckReport {
            namespace: doc.namespace.clone(),
            name: doc.name.clone(),
            version: doc.version.clone(),
            hash,
            unfinished,
            runs,
        })
    }

    /// Moves every compatible run of `report` onto its new version (which must be deployed by
    /// now) with a `RunMigrated` event appended at the sequence the check replayed; a run that
    /// moved on since is replayed again and moved only if it still replays. Diverging runs are
    /// never moved. Sets [`RunCheck::migrated`] of every run.
    pub async fn migrate(&self, report: &mut CheckReport, opts: &CheckOptions) -> Result<()> {
        let (store, defs, secrets) = self.replay_parts();
        let secrets = opts.secrets.clone().unwrap_or(secrets);
        let decider = defs.decider(&report.hash).await?;
        for run in &mut report.runs {
            if !run.compatible {
                run.migrated = Some(false);
                continue;
            }
            let moved = migrate_one(
                store.as_ref(),
                &decider,
                &secrets,
                run,
                &report.hash,
                &report.version,
            )
            .await?;
            run.migrated = Some(moved);
        }
        Ok(())
    }
}

/// The unfinished runs of a definition, by id, in the order of the runs index.
async fn unfinished(store: &dyn EventStore, namespace: &str, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut q = RunQuery {
        statuses: StatusLabel::OPEN
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        limit: PAGE,
        ..Default::default()
    };
    loop {
        let page = store.query_runs(&q).await?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        q.after = Some((last.created_at, last.run_id.clone()));
        let full = page.len() as u64 == PAGE;
        out.extend(page.into_iter().map(|r| r.run_id));
        if !full {
            return Ok(out);
        }
    }
}

/// Checks one loaded run; `None` for a run that needs no check (ended meanwhile, or on the new
/// version already).
fn check_one(
    id: &str,
    loaded: Result<Loaded>,
    decider: &Decider,
    secrets: &Map<String, Value>,
    new_hash: &str,
) -> Option<Result<RunCheck>> {
    let loaded = match loaded {
        Ok(l) => l,
        // Gone, or unreadable: the second is a finding about the run, not a failed check.
        Err(Error::RunNotFound { .. }) => return None,
        Err(e @ Error::CorruptEvent { .. }) => {
            return Some(Ok(RunCheck {
                run_id: id.to_string(),
                version: String::new(),
                hash: String::new(),
                last_sequence: 0,
                compatible: false,
                divergence: None,
                error: Some(e.to_string()),
                migrated: None,
            }))
        }
        Err(e) => return Some(Err(e)),
    };
    let def = loaded.state.definition.clone()?;
    if loaded.state.status.is_terminal() || def.hash == new_hash {
        return None;
    }
    let (divergence, error) = match replay::replay(&loaded.batches, Deciders::One(decider), secrets)
    {
        Ok(r) => (r.divergence, None),
        Err(e) => (None, Some(e.to_string())),
    };
    Some(Ok(RunCheck {
        run_id: id.to_string(),
        version: def.version,
        hash: def.hash,
        last_sequence: loaded.sequence,
        compatible: divergence.is_none() && error.is_none(),
        divergence,
        error,
        migrated: None,
    }))
}

/// Appends `RunMigrated` to one compatible run at the sequence last checked; on a conflict
/// reloads, replays again and tries again. Whether it moved.
async fn migrate_one(
    store: &dyn EventStore,
    decider: &Decider,
    secrets: &Map<String, Value>,
    run: &RunCheck,
    to_hash: &str,
    to_version: &str,
) -> Result<bool> {
    let mut checked = run.last_sequence;
    for _ in 0..MIGRATE_ATTEMPTS {
        let loaded = match load(store, &run.run_id).await {
            Ok(l) => l,
            Err(Error::RunNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let Some(from) = loaded.state.definition.clone() else {
            return Ok(false);
        };
        if loaded.state.status.is_terminal() || from.hash == to_hash {
            return Ok(false);
        }
        if loaded.sequence != checked {
            // It moved on since it was checked: what it recorded since must replay too.
            match replay::replay(&loaded.batches, Deciders::One(decider), secrets) {
                Ok(r) if r.identical() => checked = loaded.sequence,
                _ => return Ok(false),
            }
        }
        let now = crate::clock::now_ms();
        let event = RunEvent::RunMigrated {
            from_hash: from.hash.clone(),
            to_hash: to_hash.to_string(),
            to_version: to_version.to_string(),
            at: now,
        };
        let mut state = loaded.state;
        state.apply(&event);
        let req = AppendRequest {
            aggregate_type: RUN_AGGREGATE.to_string(),
            stream: run.run_id.clone(),
            expected_sequence: checked,
            events: vec![NewEvent {
                event_type: event.event_type().to_string(),
                event_version: EVENT_VERSION.to_string(),
                payload: event.payload(),
                metadata: json!({ "recorded_at": now, "worker": MIGRATOR }),
            }],
            run_summary: crate::projections::run_summary(&state, &run.run_id),
            lease: Lease::External,
        };
        match store.append(vec![req]).await {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}
