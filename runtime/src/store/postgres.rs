//! The PostgreSQL store, for many `cairn worker`/`cairn serve` processes on one database.
//!
//! # Gap-free global positions
//!
//! An identity column hands out values when a row is inserted, not when its transaction commits:
//! with concurrent appenders, transaction A may take position 10, B position 11, B commit first,
//! and a reader that has seen 11 and resumes "after 11" never sees 10. Two known cures:
//!
//! 1. serialise appends: every append transaction first takes a transaction-scoped advisory lock
//!    (`pg_advisory_xact_lock(APPEND_LOCK)`), then draws its positions. Positions are therefore
//!    drawn in lock order, and PostgreSQL makes a commit visible *before* it releases the
//!    transaction's locks, so when B can draw a position, every earlier holder is already visible.
//!    A reader's snapshot that contains B contains everything below B.
//! 2. record `pg_current_xact_id()` per row and let readers only return rows below
//!    `pg_snapshot_xmin(pg_current_snapshot())`. Appends stay parallel, but every reader is held
//!    back by the oldest open transaction in the whole database (any long transaction, even an
//!    unrelated one, stalls every subscriber), reads need an extra filter and index, and the rule
//!    is subtle to keep right on replicas.
//!
//! Cairn uses (1): it is short, provably correct and needs nothing from readers. Its cost is that
//! append transactions on one database run one at a time (about one commit, one WAL flush, per
//! lock hold). That is what [`super::group::GroupCommitter`] is for: it packs up to hundreds of
//! runs' appends into each transaction, so the serial section is paid per batch, not per run.
//! Anything that writes to `events` must take the same lock (see [`APPEND_LOCK`]).
//!
//! Under the lock the stream heads read inside the transaction are authoritative, so a group with
//! a stale `expected_sequence` is answered `Conflict` and left out, with no savepoint and no retry;
//! the unique constraint on `(aggregate_type, aggregate_id, sequence)` remains as a backstop.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, Row as _};

use super::plan::{self, StreamKey};
use super::util::{is_unique_violation, redact_url, to_i64, to_u64, unavailable};
use super::{
    AppendRequest, Appended, EventStore, GroupOutcome, Result, RunFilter, RunSummary, StoreError,
    StoredDefinition, StoredEvent,
};

const STORE: &str = "postgres";

/// Key of the transaction-scoped advisory lock every append holds (ASCII `cairn_ev`). Any other
/// writer of the `events` table must take it too, or readers may skip its events.
pub const APPEND_LOCK: i64 = 0x6361_6972_6e5f_6576;

/// Key of the advisory lock that serialises schema migrations of concurrent processes.
const MIGRATE_LOCK: i64 = 0x6361_6972_6e5f_6d67;

/// Schema migrations, applied in order at connect; each runs once (see `schema_version`).
/// Column names follow postgres-es; payloads are JSONB.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    r#"
CREATE TABLE events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_type TEXT   NOT NULL,
    aggregate_id   TEXT   NOT NULL,
    sequence       BIGINT NOT NULL CHECK (sequence >= 1),
    event_type     TEXT   NOT NULL,
    event_version  TEXT   NOT NULL,
    payload        JSONB  NOT NULL,
    metadata       JSONB  NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
);

CREATE TABLE snapshots (
    aggregate_type   TEXT   NOT NULL,
    aggregate_id     TEXT   NOT NULL,
    last_sequence    BIGINT NOT NULL CHECK (last_sequence >= 0),
    current_snapshot BIGINT NOT NULL CHECK (current_snapshot >= 0),
    payload          JSONB  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

CREATE TABLE runs (
    run_id        TEXT   PRIMARY KEY,
    namespace     TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    next_timer_at BIGINT
);
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_next_timer ON runs (next_timer_at) WHERE next_timer_at IS NOT NULL;

CREATE TABLE definitions (
    hash      TEXT   PRIMARY KEY,
    namespace TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    version   TEXT   NOT NULL,
    source    JSONB  NOT NULL,
    seq       BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX definitions_nnv ON definitions (namespace, name, version);
"#,
)];

/// Options of [`PostgresStore::connect_with`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Upper bound of the pool (default 16).
    pub max_connections: u32,
    /// How long to wait for the first connection and for a pooled one (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The PostgreSQL event store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects with default options and applies pending migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects with explicit options and applies pending migrations.
    ///
    /// A malformed URL is [`StoreError::InvalidUrl`]; an unreachable server is
    /// [`StoreError::Unavailable`] saying `cannot connect to postgres at host:port/db: ...`.
    /// Neither message contains the password.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresStore> {
        let connect = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: redact_url(url),
            message: redact_url(&e.to_string()),
        })?;
        let target = format!(
            "{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or(connect.get_username())
        );
        let cannot = |e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!(
                "cannot connect to postgres at {target}: {}",
                redact_url(&e.to_string())
            ))
        };
        // One direct connection first: the pool would retry a refused connection until its
        // timeout and then report only "timed out", hiding the reason.
        let mut conn = match tokio::time::timeout(
            options.connect_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(cannot(&e)),
            Err(_) => {
                return Err(cannot(&format_args!(
                    "timed out after {:?}",
                    options.connect_timeout
                )))
            }
        };
        migrate(&mut conn).await?;
        // Closing politely can only fail on a dead connection; it is dropped either way.
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(connect);
        Ok(PostgresStore { pool })
    }

    /// The connection pool. For benchmarks that measure the raw insert rate of the same table
    /// shape, and for tools; writers of `events` must take [`APPEND_LOCK`] in their transaction.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn try_append_groups(
        &self,
        groups: &[Vec<AppendRequest>],
    ) -> std::result::Result<Vec<GroupOutcome>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // See the module docs: this lock is what makes read_all gap-free.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;

        let keys = plan::streams(groups);
        let types: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let heads: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT k.t, k.id, COALESCE((SELECT MAX(e.sequence) FROM events e \
               WHERE e.aggregate_type = k.t AND e.aggregate_id = k.id), 0) \
             FROM UNNEST($1::text[], $2::text[]) AS k(t, id)",
        )
        .bind(&types)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let by_key: HashMap<(String, String), u64> = heads
            .into_iter()
            .map(|(t, id, head)| ((t, id), head.max(0) as u64))
            .collect();
        let current: HashMap<StreamKey<'_>, u64> = keys
            .iter()
            .map(|&(t, id)| {
                let head = by_key
                    .get(&(t.to_string(), id.to_string()))
                    .copied()
                    .unwrap_or(0);
                ((t, id), head)
            })
            .collect();

        let plan = plan::plan(groups, &current);
        if plan.is_empty() {
            tx.rollback().await?;
            return Ok(plan.finish(&[]));
        }

        let mut positions = Vec::with_capacity(plan.rows.len());
        if !plan.rows.is_empty() {
            // One statement for the whole batch, whatever its size: arrays keep the SQL text
            // fixed (one prepared statement) and the round trips to one.
            let rows = &plan.rows;
            let returned: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                   event_version, payload, metadata) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], \
                   $5::text[], $6::jsonb[], $7::jsonb[]) \
                 RETURNING position, aggregate_type, aggregate_id, sequence",
            )
            .bind(rows.iter().map(|r| r.aggregate_type).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.stream).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| to_i64(r.sequence)).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.event.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.event.event_version.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| &r.event.payload)
                    .collect::<Vec<&Value>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| &r.event.metadata)
                    .collect::<Vec<&Value>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
            // Map by key rather than trusting RETURNING's row order.
            let by_row: HashMap<(String, String, i64), i64> = returned
                .into_iter()
                .map(|(pos, t, id, seq)| ((t, id, seq), pos))
                .collect();
            for r in rows {
                let key = (
                    r.aggregate_type.to_string(),
                    r.stream.to_string(),
                    to_i64(r.sequence),
                );
                positions.push(by_row.get(&key).copied().unwrap_or(0).max(0) as u64);
            }
        }

        if !plan.summaries.is_empty() {
            let s = &plan.summaries;
            sqlx::query(
                "INSERT INTO runs (run_id, namespace, name, version, status, created_at, \
                   updated_at, next_timer_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                   $5::text[], $6::bigint[], $7::bigint[], $8::bigint[]) \
                 ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, \
                   name = excluded.name, version = excluded.version, status = excluded.status, \
                   updated_at = excluded.updated_at, next_timer_at = excluded.next_timer_at",
            )
            .bind(s.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|r| r.namespace.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|r| r.version.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(s.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .bind(s.iter().map(|r| r.next_timer_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.finish(&positions))
    }
}

/// Applies pending migrations in one transaction under [`MIGRATE_LOCK`], so processes starting
/// together on a fresh database don't race.
async fn migrate(conn: &mut PgConnection) -> Result<()> {
    let err = |e: sqlx::Error| unavailable(STORE, "migrate", e);
    let mut tx = conn.begin().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
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
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

fn event_from_row(row: &PgRow) -> Result<StoredEvent> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("postgres event row: {e}"));
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

fn run_from_row(row: &PgRow) -> Result<RunSummary> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("postgres runs row: {e}"));
    Ok(RunSummary {
        run_id: row.try_get("run_id").map_err(get)?,
        namespace: row.try_get("namespace").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        status: row.try_get("status").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        next_timer_at: row.try_get("next_timer_at").map_err(get)?,
    })
}

fn definition_from_row(row: &PgRow) -> Result<StoredDefinition> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("postgres definitions row: {e}"));
    Ok(StoredDefinition {
        namespace: row.try_get("namespace").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        source: row.try_get::<Value, _>("source").map_err(get)?,
    })
}

const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata";
const RUN_COLUMNS: &str =
    "run_id, namespace, name, version, status, created_at, updated_at, next_timer_at";

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        let mut outcomes = self.append_groups(vec![requests]).await?;
        outcomes.pop().unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                "postgres append: no outcome".into(),
            ))
        })
    }

    async fn append_groups(&self, groups: Vec<Vec<AppendRequest>>) -> Result<Vec<GroupOutcome>> {
        match self.try_append_groups(&groups).await {
            Ok(outcomes) => Ok(outcomes),
            // Under the append lock the head checks are authoritative, so this means a writer
            // that bypassed the lock; one more pass sees its rows and answers each group.
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND sequence > $3 ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(stream)
        .bind(to_i64(after_sequence))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "load", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_all(&self, after_position: u64, limit: u64) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(to_i64(after_position))
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "read_all", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE cardinality($1::text[]) = 0 OR status = ANY($1) \
             ORDER BY created_at DESC, run_id DESC LIMIT $2"
        ))
        .bind(&filter.statuses)
        // LIMIT NULL means no limit.
        .bind(filter.limit.map(to_i64))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "list_runs", e))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunSummary>> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable(STORE, "get_run", e))?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn put_definition(&self, def: &StoredDefinition) -> Result<()> {
        sqlx::query(
            "INSERT INTO definitions (hash, namespace, name, version, source) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(&def.hash)
        .bind(&def.namespace)
        .bind(&def.name)
        .bind(&def.version)
        .bind(&def.source)
        .execute(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "put_definition", e))?;
        Ok(())
    }

    async fn definition_by_hash(&self, hash: &str) -> Result<Option<StoredDefinition>> {
        let row = sqlx::query(
            "SELECT hash, namespace, name, version, source FROM definitions WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
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
        // `latest` is resolved in Rust: SQL cannot order by semantic version.
        let rows = sqlx::query(
            "SELECT hash, namespace, name, version, source FROM definitions \
             WHERE namespace = $1 AND name = $2 AND ($3 = 'latest' OR version = $3) ORDER BY seq",
        )
        .bind(namespace)
        .bind(name)
        .bind(version)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "find_definition", e))?;
        let defs = rows
            .iter()
            .map(definition_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(super::util::pick_latest(defs))
    }
}
