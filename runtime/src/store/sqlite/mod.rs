//! The embedded SQLite store: one file, WAL, `synchronous=FULL`.
//!
//! SQLite admits one writer at a time, so the store keeps exactly one writer connection (a pool of
//! one) and a separate pool of read-only connections: in WAL mode readers see the last committed
//! state and never wait for the writer. Every append transaction starts with `BEGIN IMMEDIATE`, so
//! it holds the write lock before it reads stream heads: its checks are authoritative even if
//! another process opens the same file, and positions (an `AUTOINCREMENT` key) are assigned and
//! committed in one order, which is what makes `read_all` gap-free here.
//!
//! Durability is never traded for speed: each commit is fsync'd. Throughput comes from
//! [`super::group::GroupCommitter`], which lets many runs share one commit.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row as _;

use super::plan::{self, StreamKey};
use super::util::{is_unique_violation, to_i64, to_u64, unavailable};
use super::{
    AppendRequest, Appended, Claim, EventStore, GroupOutcome, Result, RunFilter, RunQuery,
    RunSummary, StoreError, StoredDefinition, StoredEvent, WorkerLease, COUNT_ATTEMPT,
};

const STORE: &str = "sqlite";

/// Schema migrations, applied in order at open; each runs once (see `schema_version`).
/// Column names follow sqlite-es (`aggregate_type, aggregate_id, sequence, event_type,
/// event_version, payload, metadata`; `snapshots` likewise) so its conventions and tools apply.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    sequence       INTEGER NOT NULL CHECK (sequence >= 1),
    event_type     TEXT    NOT NULL,
    event_version  TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE TABLE snapshots (
    aggregate_type   TEXT    NOT NULL,
    aggregate_id     TEXT    NOT NULL,
    last_sequence    INTEGER NOT NULL CHECK (last_sequence >= 0),
    current_snapshot INTEGER NOT NULL CHECK (current_snapshot >= 0),
    payload          TEXT    NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;

CREATE TABLE runs (
    run_id        TEXT    PRIMARY KEY,
    namespace     TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    next_timer_at INTEGER
) STRICT;
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_next_timer ON runs (next_timer_at) WHERE next_timer_at IS NOT NULL;

CREATE TABLE definitions (
    hash      TEXT NOT NULL PRIMARY KEY,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    version   TEXT NOT NULL,
    source    TEXT NOT NULL,
    seq       INTEGER NOT NULL
) STRICT;
CREATE INDEX definitions_nnv ON definitions (namespace, name, version);
"#,
    ),
    (
        2,
        // Distribution (see `super::Lease`): when each run next needs a worker, who holds it,
        // and the workers' leases; plus the correlation id and parent of a run. Runs that were
        // open before this migration are made runnable, so a worker looks at each once and
        // files it properly.
        r#"
ALTER TABLE runs ADD COLUMN wake_at INTEGER;
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN correlation_id TEXT;
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
UPDATE runs SET wake_at = updated_at WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX runs_claimable ON runs (wake_at) WHERE owner IS NULL AND wake_at IS NOT NULL;
CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_correlation ON runs (correlation_id, created_at)
    WHERE correlation_id IS NOT NULL;
CREATE TABLE workers (
    name        TEXT    PRIMARY KEY,
    generation  INTEGER NOT NULL,
    lease_id    TEXT    NOT NULL UNIQUE,
    lease_until INTEGER NOT NULL,
    started_at  INTEGER NOT NULL
) STRICT;
"#,
    ),
    (
        3,
        // The runs list of one definition without walking every other definition's runs; and
        // two indexes no query reads, which every append paid for.
        "CREATE INDEX runs_definition_created ON runs (namespace, name, created_at, run_id);
         DROP INDEX IF EXISTS runs_created;
         DROP INDEX IF EXISTS runs_next_timer;",
    ),
    (
        4,
        // Definitions recorded only to run them (`startRun(source:)`, `cairn start FILE`) are
        // not deployed: `latest`, version lookups and the list ignore them. Every definition
        // recorded before this migration was reachable as deployed, and stays so.
        "ALTER TABLE definitions ADD COLUMN deployed INTEGER NOT NULL DEFAULT 1;",
    ),
    (
        5,
        // Claims of a run since it last changed (see `super::Claim::attempts`), so that a run
        // that kills every worker claiming it is faulted instead of claimed for ever;
        // `attempt_mark` is the run's `updated_at` at the last claim.
        "ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE runs ADD COLUMN attempt_mark INTEGER;",
    ),
];

/// Options of [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Read-only connections (default 4).
    pub read_connections: u32,
    /// How long a statement waits for a lock held by another process (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQLite event store. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
    /// Work notices of this process's appends (see [`EventStore::work_notices`]).
    notices: tokio::sync::broadcast::Sender<String>,
    /// Opened by [`SqliteStore::open_read_only`]: snapshots (a cache) are not written.
    read_only: bool,
}

impl SqliteStore {
    /// Opens (creating the file and its parent directories if needed) with default options.
    pub async fn open(path: &str) -> Result<SqliteStore> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens with explicit options. Always WAL, `synchronous=FULL`, foreign keys on.
    pub async fn open_with(path: &str, options: SqliteOptions) -> Result<SqliteStore> {
        if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
            return Err(StoreError::InvalidUrl {
                url: format!("sqlite://{path}"),
                message: "expected a file path (in-memory databases are not supported)".into(),
            });
        }
        let path = PathBuf::from(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                unavailable(STORE, &format!("create directory {}", parent.display()), e)
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let write_opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Never close the writer for idleness: reopening it would cost a WAL recovery check.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(write_opts)
            .await
            .map_err(|e| unavailable(STORE, &format!("open {}", path.display()), e))?;
        migrate(&writer).await?;
        migrate_tokens(&writer).await?;
        migrate_projections(&writer).await?;
        migrate_run_order(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .connect_with(base.read_only(true))
            .await
            .map_err(|e| unavailable(STORE, &format!("open {} for reading", path.display()), e))?;
        Ok(SqliteStore {
            writer,
            reader,
            path,
            notices: tokio::sync::broadcast::channel(4096).0,
            read_only: false,
        })
    }

    /// Opens an existing store for reading only, as the read-only commands (`cairn status`,
    /// `history`, `runs`) do: a missing file is [`StoreError::Missing`] and nothing is created,
    /// no migration is written, and every connection is read-only. A file whose schema is older
    /// than this build's is refused (a writing command upgrades it) rather than misread.
    pub async fn open_read_only(path: &str) -> Result<SqliteStore> {
        if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
            return Err(StoreError::InvalidUrl {
                url: format!("sqlite://{path}"),
                message: "expected a file path (in-memory databases are not supported)".into(),
            });
        }
        let path = PathBuf::from(path);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(StoreError::Missing(format!(
                    "{} is not a file, so it holds no SQLite store",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(format!(
                    "there is no SQLite store at {} (nothing has been recorded there; \
                     give --store or CAIRN_STORE)",
                    path.display()
                )))
            }
            Err(e) => return Err(unavailable(STORE, &format!("open {}", path.display()), e)),
        }
        let options = SqliteOptions::default();
        let read_opts = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(options.busy_timeout)
            .create_if_missing(false)
            .read_only(true);
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .connect_with(read_opts)
            .await
            .map_err(|e| unavailable(STORE, &format!("open {} for reading", path.display()), e))?;
        let latest = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&reader)
            .await
            .map_err(|_| {
                StoreError::Missing(format!(
                    "{} is not a cairn store (it has no schema version)",
                    path.display()
                ))
            })?;
        if applied.unwrap_or(0) < latest {
            return Err(StoreError::Missing(format!(
                "the store at {} has schema version {}, older than this cairn's {latest}; \
                 a writing command (e.g. `cairn worker`) upgrades it",
                path.display(),
                applied.unwrap_or(0)
            )));
        }
        Ok(SqliteStore {
            // Read-only too: anything that tries to write through this store fails.
            writer: reader.clone(),
            reader,
            path,
            notices: tokio::sync::broadcast::channel(16).0,
            read_only: true,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The single writer connection, as a pool of one. For benchmarks that measure the raw insert
    /// rate of the same table shape; anything that writes through it must use `BEGIN IMMEDIATE`.
    pub fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The read-only pool.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes both pools, waiting for connections in use.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// One append transaction: `BEGIN IMMEDIATE`, one heads query, one multi-row `INSERT` of every
    /// accepted event, one multi-row upsert of the run summaries, `COMMIT` (statements are chunked
    /// only past SQLite's bound-parameter limit). Each statement is a round trip to sqlx's worker
    /// thread, so the count per commit stays fixed however many runs share it.
    async fn try_append_groups(
        &self,
        groups: &[Vec<AppendRequest>],
    ) -> std::result::Result<Vec<GroupOutcome>, sqlx::Error> {
        let keys = plan::streams(groups);
        if keys.is_empty() {
            // No request at all: nothing to check or write.
            return Ok(plan::plan(groups, &HashMap::new(), &HashSet::new()).finish(&[]));
        }
        // The heads are read inside BEGIN IMMEDIATE on purpose, never cached across transactions:
        // another process may append to the same file between two of our commits.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let current = read_heads(&mut tx, &keys).await?;
        let lost = read_lost(&mut tx, &plan::fences(groups)).await?;
        let plan = plan::plan(groups, &current, &lost);
        if plan.is_empty() {
            tx.rollback().await?;
            return Ok(plan.finish(&[]));
        }
        let positions = insert_events(&mut tx, &plan.rows).await?;
        upsert_runs(&mut tx, &plan.summaries).await?;
        tx.commit().await?;
        for id in plan::notices(&plan.summaries) {
            // Nobody listening is fine: no worker runs in this process.
            let _ = self.notices.send(id.to_string());
        }
        Ok(plan.finish(&positions))
    }
}

/// SQLite's limit on bound parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER`: 32766 since
/// 3.32; sqlx 0.8 bundles 3.46). Multi-row statements are chunked to stay within it.
pub(crate) const MAX_BIND_PARAMS: usize = 32_766;

/// An internal inconsistency of a statement's answer, reported like a database failure.
fn protocol(msg: String) -> sqlx::Error {
    sqlx::Error::Protocol(msg)
}

/// The last sequence of each of `keys` (0 for a new stream), in one statement per chunk. Row
/// numbers are inlined as literals so the answer maps back by index without comparing strings.
async fn read_heads<'k>(
    conn: &mut sqlx::SqliteConnection,
    keys: &[StreamKey<'k>],
) -> std::result::Result<HashMap<StreamKey<'k>, u64>, sqlx::Error> {
    let mut current = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(MAX_BIND_PARAMS / 2) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("WITH k(i, t, id) AS (VALUES ");
        for (i, (t, id)) in chunk.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push(format_args!("({i}, "))
                .push_bind(*t)
                .push(", ")
                .push_bind(*id)
                .push(")");
        }
        // The correlated MAX is one seek on the (aggregate_type, aggregate_id, sequence) index.
        qb.push(
            ") SELECT k.i, (SELECT MAX(e.sequence) FROM events e \
             WHERE e.aggregate_type = k.t AND e.aggregate_id = k.id) FROM k",
        );
        let rows: Vec<(i64, Option<i64>)> = qb.build_query_as().fetch_all(&mut *conn).await?;
        if rows.len() != chunk.len() {
            return Err(protocol(format!(
                "heads query answered {} of {} streams",
                rows.len(),
                chunk.len()
            )));
        }
        for (i, head) in rows {
            let key = usize::try_from(i)
                .ok()
                .and_then(|i| chunk.get(i))
                .ok_or_else(|| protocol(format!("heads query answered unknown row {i}")))?;
            let head = u64::try_from(head.unwrap_or(0))
                .map_err(|_| protocol(format!("negative sequence in stream {}", key.1)))?;
            current.insert(*key, head);
        }
    }
    Ok(current)
}

/// The fenced runs (`(run id, lease id)`) whose owner is no longer that lease.
async fn read_lost(
    conn: &mut sqlx::SqliteConnection,
    fences: &[(&str, &str)],
) -> std::result::Result<HashSet<String>, sqlx::Error> {
    let mut lost = HashSet::new();
    for chunk in fences.chunks(MAX_BIND_PARAMS / 2) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("WITH f(id, lease) AS (VALUES ");
        for (i, (id, lease)) in chunk.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push("(")
                .push_bind(*id)
                .push(", ")
                .push_bind(*lease)
                .push(")");
        }
        qb.push(
            ") SELECT f.id FROM f WHERE NOT EXISTS \
             (SELECT 1 FROM runs r WHERE r.run_id = f.id AND r.owner = f.lease)",
        );
        let rows: Vec<(String,)> = qb.build_query_as().fetch_all(&mut *conn).await?;
        lost.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(lost)
}

/// Inserts `rows` with one multi-row `INSERT ... RETURNING` per chunk; answers each row's position.
///
/// Positions are matched to rows by `(aggregate_type, aggregate_id, sequence)`, which the unique
/// constraint makes a key, rather than by RETURNING's order, which SQLite leaves unspecified.
/// (Under `BEGIN IMMEDIATE` with one writer they come out contiguous anyway: AUTOINCREMENT draws
/// them in insertion order, and the conformance suite checks it.)
async fn insert_events(
    conn: &mut sqlx::SqliteConnection,
    rows: &[plan::Row<'_>],
) -> std::result::Result<Vec<u64>, sqlx::Error> {
    const PARAMS: usize = 7;
    let index: HashMap<(&str, &str, i64), usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.aggregate_type, r.stream, to_i64(r.sequence)), i))
        .collect();
    let mut positions: Vec<Option<u64>> = vec![None; rows.len()];
    for chunk in rows.chunks(MAX_BIND_PARAMS / PARAMS) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) ",
        );
        qb.push_values(chunk, |mut b, row| {
            b.push_bind(row.aggregate_type)
                .push_bind(row.stream)
                .push_bind(to_i64(row.sequence))
                .push_bind(&row.event.event_type)
                .push_bind(&row.event.event_version)
                .push_bind(&row.event.payload)
                .push_bind(&row.event.metadata);
        });
        qb.push(" RETURNING position, aggregate_type, aggregate_id, sequence");
        let returned = qb.build().fetch_all(&mut *conn).await?;
        if returned.len() != chunk.len() {
            return Err(protocol(format!(
                "insert returned {} of {} rows",
                returned.len(),
                chunk.len()
            )));
        }
        for r in &returned {
            let position: i64 = r.try_get(0)?;
            let key: (&str, &str, i64) = (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            let slot = index
                .get(&key)
                .and_then(|&i| positions.get_mut(i))
                .ok_or_else(|| protocol(format!("insert returned an unknown row {key:?}")))?;
            *slot = Some(
                u64::try_from(position)
                    .map_err(|_| protocol(format!("negative position {position}")))?,
            );
        }
    }
    positions
        .into_iter()
        .map(|p| p.ok_or_else(|| protocol("insert left a row without a position".into())))
        .collect()
}

/// Upserts the run summaries with one multi-row statement per chunk (the plan holds at most one
/// summary per run, so no statement names a run twice).
async fn upsert_runs(
    conn: &mut sqlx::SqliteConnection,
    summaries: &[(&RunSummary, &super::Lease)],
) -> std::result::Result<(), sqlx::Error> {
    const PARAMS: usize = 12;
    for chunk in summaries.chunks(MAX_BIND_PARAMS / PARAMS) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO runs (run_id, namespace, name, version, status, created_at, \
             updated_at, next_timer_at, wake_at, owner, correlation_id, parent_run_id) ",
        );
        qb.push_values(chunk, |mut b, (s, lease)| {
            b.push_bind(&s.run_id)
                .push_bind(&s.namespace)
                .push_bind(&s.name)
                .push_bind(&s.version)
                .push_bind(&s.status)
                .push_bind(s.created_at)
                .push_bind(s.updated_at)
                .push_bind(s.next_timer_at)
                .push_bind(s.wake_at)
                .push_bind(plan::first_owner(s, lease))
                .push_bind(&s.correlation_id)
                .push_bind(&s.parent_run_id);
        });
        // See `super::Lease`: a run that needs no worker now is released in the same write.
        qb.push(
            " ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, \
             name = excluded.name, version = excluded.version, status = excluded.status, \
             updated_at = excluded.updated_at, next_timer_at = excluded.next_timer_at, \
             wake_at = excluded.wake_at, \
             owner = CASE WHEN excluded.wake_at IS NULL OR excluded.wake_at > excluded.updated_at \
                          THEN NULL ELSE runs.owner END",
        );
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Applies pending migrations in one `BEGIN IMMEDIATE` transaction (so two processes opening
/// the same new file don't both migrate).
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let err = |e: sqlx::Error| unavailable(STORE, "migrate", e);
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, \
         applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
    let applied = applied.unwrap_or(0);
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query(
            "INSERT INTO schema_version (version, applied_at) \
             VALUES (?, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
        )
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("sqlite event row: {e}"));
    Ok(StoredEvent {
        position: to_u64(row.try_get("position").map_err(get)?, "position")?,
        aggregate_type: row.try_get("aggregate_type").map_err(get)?,
        stream: row.try_get("aggregate_id").map_err(get)?,
        sequence: to_u64(row.try_get("sequence").map_err(get)?, "sequence")?,
        event_type: row.try_get("event_type").map_err(get)?,
        event_version: row.try_get("event_version").map_err(get)?,
        payload: row.try_get::<Value, _>("payload").map_err(get)?,
        metadata: row.try_get::<Value, _>("metadata").map_err(get)?,
    })
}

fn run_from_row(row: &SqliteRow) -> Result<RunSummary> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("sqlite runs row: {e}"));
    Ok(RunSummary {
        run_id: row.try_get("run_id").map_err(get)?,
        namespace: row.try_get("namespace").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        status: row.try_get("status").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        next_timer_at: row.try_get("next_timer_at").map_err(get)?,
        wake_at: row.try_get("wake_at").map_err(get)?,
        correlation_id: row.try_get("correlation_id").map_err(get)?,
        parent_run_id: row.try_get("parent_run_id").map_err(get)?,
    })
}

fn definition_from_row(row: &SqliteRow) -> Result<StoredDefinition> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("sqlite definitions row: {e}"));
    Ok(StoredDefinition {
        namespace: row.try_get("namespace").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        source: row.try_get::<Value, _>("source").map_err(get)?,
        deployed: row.try_get::<i64, _>("deployed").map_err(get)? != 0,
    })
}

const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata";
const RUN_COLUMNS: &str = "run_id, namespace, name, version, status, created_at, updated_at, \
                           next_timer_at, wake_at, correlation_id, parent_run_id";

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        let mut outcomes = self.append_groups(vec![requests]).await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("sqlite append: no outcome".into())))
    }

    async fn append_groups(&self, groups: Vec<Vec<AppendRequest>>) -> Result<Vec<GroupOutcome>> {
        match self.try_append_groups(&groups).await {
            Ok(outcomes) => Ok(outcomes),
            // BEGIN IMMEDIATE makes the head checks authoritative, so this means a writer that
            // bypassed them; one more pass sees its rows and answers each group precisely.
            Err(e) if is_unique_violation(&e) => self
                .try_append_groups(&groups)
                .await
                .map_err(|e| unavailable(STORE, "append", e)),
            Err(e) => Err(unavailable(STORE, "append", e)),
        }
    }

    async fn load(
        &self,
        aggregate_type: &str,
        stream: &str,
        after_sequence: u64,
    ) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = ? AND aggregate_id = ? \
             AND sequence > ? ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(stream)
        .bind(to_i64(after_sequence))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "load", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_all(&self, after_position: u64, limit: u64) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(to_i64(after_position))
        .bind(to_i64(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "read_all", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let mut qb =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!("SELECT {RUN_COLUMNS} FROM runs"));
        if !filter.statuses.is_empty() {
            qb.push(" WHERE status IN (");
            let mut sep = qb.separated(", ");
            for s in &filter.statuses {
                sep.push_bind(s);
            }
            qb.push(")");
        }
        qb.push(" ORDER BY created_at DESC, run_id DESC");
        if let Some(limit) = filter.limit {
            qb.push(" LIMIT ").push_bind(to_i64(limit));
        }
        let rows = qb
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(|e| unavailable(STORE, "list_runs", e))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"
        ));
        if !query.statuses.is_empty() {
            qb.push(" AND status IN (");
            let mut sep = qb.separated(", ");
            for s in &query.statuses {
                sep.push_bind(s);
            }
            qb.push(")");
        }
        if let Some(ns) = &query.namespace {
            qb.push(" AND namespace = ").push_bind(ns);
        }
        if let Some(name) = &query.name {
            qb.push(" AND name = ").push_bind(name);
        }
        if let Some(t) = query.created_from {
            qb.push(" AND created_at >= ").push_bind(t);
        }
        if let Some(t) = query.created_before {
            qb.push(" AND created_at < ").push_bind(t);
        }
        if let Some(c) = &query.correlation_id {
            qb.push(" AND correlation_id = ").push_bind(c);
        }
        // Keyset: the row value `(key, run_id)` strictly past the cursor, in the sort direction.
        let key = query.order.field.column();
        let (cmp, dir) = if query.order.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some((at, run_id)) = &query.after {
            qb.push(format!(" AND ({key}, run_id) {cmp} ("))
                .push_bind(*at)
                .push(", ")
                .push_bind(run_id)
                .push(")");
        }
        qb.push(format!(" ORDER BY {key} {dir}, run_id {dir} LIMIT "))
            .push_bind(to_i64(query.limit));
        let rows = qb
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(|e| unavailable(STORE, "query_runs", e))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunSummary>> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| unavailable(STORE, "get_run", e))?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn put_definition(&self, def: &StoredDefinition) -> Result<()> {
        // `seq` orders registrations (the newest wins among equal versions). Deploying content
        // that was only run so far makes it deployed; running deployed content changes nothing.
        sqlx::query(
            "INSERT INTO definitions (hash, namespace, name, version, source, seq, deployed) \
             VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM definitions), ?) \
             ON CONFLICT (hash) DO UPDATE SET deployed = 1 WHERE excluded.deployed = 1",
        )
        .bind(&def.hash)
        .bind(&def.namespace)
        .bind(&def.name)
        .bind(&def.version)
        .bind(&def.source)
        .bind(i64::from(def.deployed))
        .execute(&self.writer)
        .await
        .map_err(|e| unavailable(STORE, "put_definition", e))?;
        Ok(())
    }

    async fn definition_by_hash(&self, hash: &str) -> Result<Option<StoredDefinition>> {
        let row = sqlx::query(
            "SELECT hash, namespace, name, version, source, deployed FROM definitions WHERE hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "definition_by_hash", e))?;
        row.as_ref().map(definition_from_row).transpose()
    }

    async fn find_definition(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<StoredDefinition>> {
        let rows = if version == "latest" {
            sqlx::query(
                "SELECT hash, namespace, name, version, source, deployed FROM definitions \
                 WHERE namespace = ? AND name = ? AND deployed = 1 ORDER BY seq",
            )
            .bind(namespace)
            .bind(name)
            .fetch_all(&self.reader)
            .await
        } else {
            sqlx::query(
                "SELECT hash, namespace, name, version, source, deployed FROM definitions \
                 WHERE namespace = ? AND name = ? AND version = ? AND deployed = 1 ORDER BY seq",
            )
            .bind(namespace)
            .bind(name)
            .bind(version)
            .fetch_all(&self.reader)
            .await
        }
        .map_err(|e| unavailable(STORE, "find_definition", e))?;
        let defs = rows
            .iter()
            .map(definition_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(super::util::pick_latest(defs))
    }

    async fn list_definitions(&self) -> Result<Vec<StoredDefinition>> {
        let rows = sqlx::query(
            "SELECT hash, namespace, name, version, source, deployed FROM definitions \
             WHERE deployed = 1 ORDER BY namespace, name, seq",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "list_definitions", e))?;
        rows.iter().map(definition_from_row).collect()
    }

    async fn put_token(&self, token: &super::StoredToken) -> Result<()> {
        self.put_token_row(token).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<super::StoredToken>> {
        self.token_row_by_hash(hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<super::StoredToken>> {
        self.token_rows().await
    }

    async fn revoke_token(&self, id: &str, at: i64) -> Result<Option<super::StoredToken>> {
        self.revoke_token_row(id, at).await
    }

    async fn projection_checkpoint(&self, projection: &str) -> Result<Option<u64>> {
        self.checkpoint_row(projection).await
    }

    async fn put_projection_checkpoint(&self, projection: &str, position: u64) -> Result<()> {
        self.put_checkpoint_row(projection, position).await
    }

    async fn rebuild_run_summary(&self, summary: &RunSummary, last_sequence: u64) -> Result<bool> {
        self.rebuild_run_row(summary, last_sequence).await
    }

    async fn head_position(&self) -> Result<u64> {
        self.head_row().await
    }

    async fn register_worker(&self, name: &str, ttl_ms: i64) -> Result<WorkerLease> {
        self.register_row(name, ttl_ms).await
    }

    async fn renew_worker(&self, lease: &WorkerLease) -> Result<bool> {
        let now = crate::engine::now_ms();
        let r = sqlx::query(
            "UPDATE workers SET lease_until = ? WHERE lease_id = ? AND lease_until > ?",
        )
        .bind(now + lease.ttl_ms)
        .bind(&lease.lease_id)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(|e| unavailable(STORE, "renew_worker", e))?;
        Ok(r.rows_affected() == 1)
    }

    async fn retire_worker(&self, lease: &WorkerLease) -> Result<()> {
        let err = |e: sqlx::Error| unavailable(STORE, "retire_worker", e);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err)?;
        sqlx::query("DELETE FROM workers WHERE lease_id = ?")
            .bind(&lease.lease_id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let released = sqlx::query(
            "UPDATE runs SET owner = NULL, attempts = MAX(attempts - 1, 0) WHERE owner = ?",
        )
        .bind(&lease.lease_id)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        if released.rows_affected() > 0 {
            let _ = self.notices.send("*".into());
        }
        Ok(())
    }

    async fn release_expired(&self) -> Result<u64> {
        let err = |e: sqlx::Error| unavailable(STORE, "release_expired", e);
        let now = crate::engine::now_ms();
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err)?;
        // Owners that are no live lease: expired, superseded, or retired without releasing.
        let released = sqlx::query(
            "UPDATE runs SET owner = NULL WHERE owner IS NOT NULL AND owner NOT IN \
             (SELECT lease_id FROM workers WHERE lease_until > ?)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        // Forget workers dead for an hour (see the PostgreSQL store).
        sqlx::query(
            "DELETE FROM workers WHERE lease_until < ? AND NOT EXISTS \
             (SELECT 1 FROM runs WHERE owner = workers.lease_id)",
        )
        .bind(now - 3_600_000)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        if released.rows_affected() > 0 {
            let _ = self.notices.send("*".into());
        }
        Ok(released.rows_affected())
    }

    async fn claim_runs(
        &self,
        lease: &WorkerLease,
        now: i64,
        limit: u64,
        only: Option<&[String]>,
    ) -> Result<Vec<Claim>> {
        // The single writer connection serialises claims, so no two claimers see a row free.
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "UPDATE runs SET {COUNT_ATTEMPT}, owner = "
        ));
        // Only under a live lease: a worker whose lease lapsed must not take new runs.
        qb.push_bind(&lease.lease_id)
            .push(" WHERE EXISTS (SELECT 1 FROM workers WHERE lease_id = ")
            .push_bind(&lease.lease_id)
            .push(" AND lease_until > ")
            .push_bind(crate::engine::now_ms())
            .push(
                ") AND run_id IN (SELECT run_id FROM runs WHERE owner IS NULL \
                 AND wake_at IS NOT NULL AND wake_at <= ",
            );
        qb.push_bind(now);
        if let Some(ids) = only {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            qb.push(" AND run_id IN (");
            let mut sep = qb.separated(", ");
            for id in ids.iter().take(MAX_BIND_PARAMS - 8) {
                sep.push_bind(id);
            }
            qb.push(")");
        }
        qb.push(" ORDER BY wake_at LIMIT ")
            .push_bind(to_i64(limit))
            .push(") RETURNING run_id, attempts");
        let rows: Vec<(String, i64)> = qb
            .build_query_as()
            .fetch_all(&self.writer)
            .await
            .map_err(|e| unavailable(STORE, "claim_runs", e))?;
        Ok(rows
            .into_iter()
            .map(|(run_id, n)| Claim {
                run_id,
                attempts: u32::try_from(n).unwrap_or(u32::MAX),
            })
            .collect())
    }

    async fn owned_runs(&self, lease: &WorkerLease) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT run_id FROM runs WHERE owner = ?")
            .bind(&lease.lease_id)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| unavailable(STORE, "owned_runs", e))?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn earliest_wake(&self) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MIN(wake_at) FROM runs \
             WHERE status IN ('pending', 'running', 'waiting') AND wake_at IS NOT NULL",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "earliest_wake", e))
    }

    async fn next_wake(&self) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MIN(wake_at) FROM runs WHERE owner IS NULL AND wake_at IS NOT NULL",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "next_wake", e))
    }

    fn work_notices(&self) -> Option<(tokio::sync::broadcast::Receiver<String>, bool)> {
        Some((self.notices.subscribe(), false))
    }

    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
        last_sequence: u64,
        payload: Value,
    ) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.save_snapshot_row(aggregate_type, stream, last_sequence, &payload)
            .await
    }

    async fn load_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
    ) -> Result<Option<(u64, Value)>> {
        self.snapshot_row(aggregate_type, stream).await
    }
}

// ----- API tokens -----------------------------------------------------------------------------

/// The `tokens` table, created if missing (idempotent, outside the numbered migrations so that it
/// never collides with them).
async fn migrate_tokens(pool: &SqlitePool) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS tokens (\
         id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, \
         hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked_at INTEGER)",
    )
    .execute(pool)
    .await
    .map_err(|e| unavailable(STORE, "migrate tokens", e))?;
    Ok(())
}

const TOKEN_COLUMNS: &str = "id, name, role, hash, created_at, revoked_at";

fn token_from_row(row: &SqliteRow) -> Result<super::StoredToken> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("sqlite tokens row: {e}"));
    Ok(super::StoredToken {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        role: row.try_get("role").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
    })
}

impl SqliteStore {
    async fn put_token_row(&self, t: &super::StoredToken) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(t.revoked_at)
        .execute(&self.writer)
        .await
        .map_err(|e| unavailable(STORE, "put_token", e))?;
        Ok(())
    }

    async fn token_row_by_hash(&self, hash: &str) -> Result<Option<super::StoredToken>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "token_by_hash", e))?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn token_rows(&self) -> Result<Vec<super::StoredToken>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "list_tokens", e))?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token_row(&self, id: &str, at: i64) -> Result<Option<super::StoredToken>> {
        let row = sqlx::query(&format!(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(at)
        .bind(id)
        .fetch_optional(&self.writer)
        .await
        .map_err(|e| unavailable(STORE, "revoke_token", e))?;
        row.as_ref().map(token_from_row).transpose()
    }
}

// ----- projections ----------------------------------------------------------------------------

/// The `projection_checkpoints` table, created if missing (like `tokens`, outside the numbered
/// migrations).
async fn migrate_projections(pool: &SqlitePool) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS projection_checkpoints (\
         projection TEXT PRIMARY KEY, position INTEGER NOT NULL CHECK (position >= 0), \
         updated_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(|e| unavailable(STORE, "migrate projections", e))?;
    Ok(())
}

impl SqliteStore {
    async fn checkpoint_row(&self, projection: &str) -> Result<Option<u64>> {
        let pos: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projection = ?")
                .bind(projection)
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| unavailable(STORE, "projection_checkpoint", e))?;
        pos.map(|p| to_u64(p, "position")).transpose()
    }

    async fn put_checkpoint_row(&self, projection: &str, position: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, position, updated_at) \
             VALUES (?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER)) \
             ON CONFLICT (projection) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .bind(projection)
        .bind(to_i64(position))
        .execute(&self.writer)
        .await
        .map_err(|e| unavailable(STORE, "put_projection_checkpoint", e))?;
        Ok(())
    }

    /// Check and write in one `BEGIN IMMEDIATE` transaction on the single writer connection, the
    /// one appends use: no append can commit between reading the run's last sequence and
    /// writing its row.
    async fn rebuild_run_row(&self, s: &RunSummary, last_sequence: u64) -> Result<bool> {
        let err = |e: sqlx::Error| unavailable(STORE, "rebuild_run_summary", e);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err)?;
        let head: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(sequence) FROM events WHERE aggregate_type = ? AND aggregate_id = ?",
        )
        .bind(super::RUN_AGGREGATE)
        .bind(&s.run_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        if head.unwrap_or(0) != to_i64(last_sequence) {
            return Ok(false);
        }
        // Its own statement rather than the append path's upsert: a rebuild also restores
        // `created_at`, which appends never change.
        // A rebuilt row also files the run for workers (`wake_at`), releasing it if it needs no
        // worker now: this is how a worker that claimed a run with nothing to do gives it back.
        sqlx::query(
            "INSERT INTO runs (run_id, namespace, name, version, status, created_at, \
             updated_at, next_timer_at, wake_at, correlation_id, parent_run_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, \
             name = excluded.name, version = excluded.version, status = excluded.status, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, \
             next_timer_at = excluded.next_timer_at, wake_at = excluded.wake_at, \
             correlation_id = excluded.correlation_id, parent_run_id = excluded.parent_run_id, \
             attempts = 0, owner = CASE WHEN excluded.wake_at IS NULL OR excluded.wake_at > excluded.updated_at \
                          THEN NULL ELSE runs.owner END",
        )
        .bind(&s.run_id)
        .bind(&s.namespace)
        .bind(&s.name)
        .bind(&s.version)
        .bind(&s.status)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.next_timer_at)
        .bind(s.wake_at)
        .bind(&s.correlation_id)
        .bind(&s.parent_run_id)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        if !s.runnable() && s.wake_at.is_some() {
            let _ = self.notices.send(s.run_id.clone());
        }
        Ok(true)
    }

    /// Registers (or re-registers, with the next generation) a worker, releasing what its
    /// previous generation held, in one write transaction.
    async fn register_row(&self, name: &str, ttl_ms: i64) -> Result<WorkerLease> {
        let err = |e: sqlx::Error| unavailable(STORE, "register_worker", e);
        let now = crate::engine::now_ms();
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err)?;
        let previous: Option<(i64, String)> =
            sqlx::query_as("SELECT generation, lease_id FROM workers WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
        let generation = previous.as_ref().map_or(1, |(g, _)| g + 1);
        let lease_id = format!("{name}#{generation}-{}", super::lease_nonce());
        sqlx::query(
            "INSERT INTO workers (name, generation, lease_id, lease_until, started_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET \
             generation = excluded.generation, lease_id = excluded.lease_id, \
             lease_until = excluded.lease_until, started_at = excluded.started_at",
        )
        .bind(name)
        .bind(generation)
        .bind(&lease_id)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if let Some((_, old)) = &previous {
            sqlx::query("UPDATE runs SET owner = NULL WHERE owner = ?")
                .bind(old)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(WorkerLease { lease_id, ttl_ms })
    }

    async fn head_row(&self) -> Result<u64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM events")
            .fetch_one(&self.reader)
            .await
            .map_err(|e| unavailable(STORE, "head_position", e))?;
        to_u64(head.unwrap_or(0), "position")
    }
}

// ----- runs list order ------------------------------------------------------------------------

/// Indexes of the runs list's keyset pages (`query_runs`): `(created_at, run_id)` and
/// `(updated_at, run_id)`, each read forwards or backwards; created if missing (like `tokens`).
async fn migrate_run_order(pool: &SqlitePool) -> Result<()> {
    sqlx::raw_sql(RUN_ORDER_INDEXES)
        .execute(pool)
        .await
        .map_err(|e| unavailable(STORE, "migrate runs order", e))?;
    Ok(())
}

/// The indexes of [`migrate_run_order`] (the same statements on PostgreSQL).
const RUN_ORDER_INDEXES: &str = "\
    CREATE INDEX IF NOT EXISTS runs_created_id ON runs (created_at, run_id);\
    CREATE INDEX IF NOT EXISTS runs_updated_id ON runs (updated_at, run_id);";

// ----- snapshots ------------------------------------------------------------------------------

impl SqliteStore {
    /// Upsert of the newest snapshot and removal of the older ones in one `BEGIN IMMEDIATE`
    /// transaction. `current_snapshot` counts the stream's snapshots, as cqrs-es does.
    async fn save_snapshot_row(
        &self,
        aggregate_type: &str,
        stream: &str,
        last_sequence: u64,
        payload: &Value,
    ) -> Result<()> {
        let err = |e: sqlx::Error| unavailable(STORE, "save_snapshot", e);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err)?;
        // A newer snapshot wins over this one (two writers racing); one of the same sequence is
        // replaced, since it may be of an older format that no reader can use.
        sqlx::query(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, \
             current_snapshot, payload) \
             SELECT ?1, ?2, ?3, COALESCE((SELECT MAX(current_snapshot) FROM snapshots \
             WHERE aggregate_type = ?1 AND aggregate_id = ?2), 0) + 1, ?4 \
             WHERE NOT EXISTS (SELECT 1 FROM snapshots WHERE aggregate_type = ?1 \
             AND aggregate_id = ?2 AND last_sequence > ?3) \
             ON CONFLICT (aggregate_type, aggregate_id, last_sequence) DO UPDATE SET \
             current_snapshot = excluded.current_snapshot, payload = excluded.payload",
        )
        .bind(aggregate_type)
        .bind(stream)
        .bind(to_i64(last_sequence))
        .bind(payload)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        sqlx::query(
            "DELETE FROM snapshots WHERE aggregate_type = ?1 AND aggregate_id = ?2 \
             AND last_sequence < (SELECT MAX(last_sequence) FROM snapshots \
             WHERE aggregate_type = ?1 AND aggregate_id = ?2)",
        )
        .bind(aggregate_type)
        .bind(stream)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    async fn snapshot_row(
        &self,
        aggregate_type: &str,
        stream: &str,
    ) -> Result<Option<(u64, Value)>> {
        let row: Option<(i64, Value)> = sqlx::query_as(
            "SELECT last_sequence, payload FROM snapshots \
             WHERE aggregate_type = ? AND aggregate_id = ? ORDER BY last_sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(stream)
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "load_snapshot", e))?;
        row.map(|(seq, payload)| Ok((to_u64(seq, "last_sequence")?, payload)))
            .transpose()
    }
}
