//! The `runs` index on SQLite: listing and paging runs, and rebuilding rows from the log.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, STORE};
use crate::store::read::{self, RUN_COLUMNS};
use crate::store::util::{to_i64, to_u64, unavailable};
use crate::store::{Result, RunFilter, RunIndex, RunQuery, RunSummary};

#[async_trait]
impl RunIndex for SqliteStore {
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
        let rows = read::query_runs(query)
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

    async fn projection_checkpoint(&self, projection: &str) -> Result<Option<u64>> {
        self.checkpoint_row(projection).await
    }

    async fn put_projection_checkpoint(&self, projection: &str, position: u64) -> Result<()> {
        self.put_checkpoint_row(projection, position).await
    }

    async fn rebuild_run_summary(&self, summary: &RunSummary, last_sequence: u64) -> Result<bool> {
        self.rebuild_run_row(summary, last_sequence).await
    }
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
        .bind(crate::store::RUN_AGGREGATE)
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
}

pub(super) fn run_from_row(row: &SqliteRow) -> Result<RunSummary> {
    read::run_from_row(STORE, row)
}
