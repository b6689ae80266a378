//! The `runs` index on PostgreSQL: listing and paging runs, and rebuilding rows from the log.

use async_trait::async_trait;
use sqlx::postgres::PgRow;

use super::{PostgresStore, APPEND_LOCK, STORE, WORK_CHANNEL};
use crate::store::read::{self, RUN_COLUMNS};
use crate::store::util::{to_i64, to_u64, unavailable};
use crate::store::{Result, RunFilter, RunIndex, RunQuery, RunSummary};

#[async_trait]
impl RunIndex for PostgresStore {
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

    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        let rows = read::query_runs(query)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| unavailable(STORE, "query_runs", e))?;
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

impl PostgresStore {
    async fn checkpoint_row(&self, projection: &str) -> Result<Option<u64>> {
        let pos: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projection = $1")
                .bind(projection)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| unavailable(STORE, "projection_checkpoint", e))?;
        pos.map(|p| to_u64(p, "position")).transpose()
    }

    async fn put_checkpoint_row(&self, projection: &str, position: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, position, updated_at) \
             VALUES ($1, $2, now()) \
             ON CONFLICT (projection) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .bind(projection)
        .bind(to_i64(position))
        .execute(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "put_projection_checkpoint", e))?;
        Ok(())
    }

    /// Check and write in one transaction holding [`APPEND_LOCK`]: appends (which upsert `runs`
    /// under the same lock) cannot commit between reading the run's last sequence and writing
    /// its row, and every append that committed before is visible to the check.
    async fn rebuild_run_row(&self, s: &RunSummary, last_sequence: u64) -> Result<bool> {
        let err = |e: sqlx::Error| unavailable(STORE, "rebuild_run_summary", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let head: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(crate::store::RUN_AGGREGATE)
        .bind(&s.run_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        if head.unwrap_or(0) != to_i64(last_sequence) {
            return Ok(false);
        }
        // A rebuilt row also files the run for workers (`wake_at`), releasing it if it needs no
        // worker now: this is how a worker that claimed a run with nothing to do gives it back.
        sqlx::query(&format!(
            "INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11) ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, \
             name = excluded.name, version = excluded.version, status = excluded.status, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, \
             next_timer_at = excluded.next_timer_at, wake_at = excluded.wake_at, \
             correlation_id = excluded.correlation_id, parent_run_id = excluded.parent_run_id, \
             attempts = 0, owner = CASE WHEN excluded.wake_at IS NULL OR excluded.wake_at > excluded.updated_at \
                          THEN NULL ELSE runs.owner END"
        ))
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
        if !s.runnable() && s.wake_at.is_some() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WORK_CHANNEL)
                .bind(&s.run_id)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(true)
    }
}

pub(super) fn run_from_row(row: &PgRow) -> Result<RunSummary> {
    read::run_from_row(STORE, row)
}
