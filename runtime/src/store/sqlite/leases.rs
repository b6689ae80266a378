//! Worker leases and claims on SQLite.

use async_trait::async_trait;

use super::{SqliteStore, MAX_BIND_PARAMS, STORE};
use crate::store::util::{to_i64, unavailable};
use crate::store::{Claim, Leases, Result, WorkerLease, COUNT_ATTEMPT};

#[async_trait]
impl Leases for SqliteStore {
    async fn register_worker(&self, name: &str, ttl_ms: i64) -> Result<WorkerLease> {
        self.register_row(name, ttl_ms).await
    }

    async fn renew_worker(&self, lease: &WorkerLease) -> Result<bool> {
        let now = crate::clock::now_ms();
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
        let now = crate::clock::now_ms();
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
            .push_bind(crate::clock::now_ms())
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
        sqlx::query_scalar(&crate::store::read::earliest_wake_sql())
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
}

impl SqliteStore {
    /// Registers (or re-registers, with the next generation) a worker, releasing what its
    /// previous generation held, in one write transaction.
    async fn register_row(&self, name: &str, ttl_ms: i64) -> Result<WorkerLease> {
        let err = |e: sqlx::Error| unavailable(STORE, "register_worker", e);
        let now = crate::clock::now_ms();
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
        let lease_id = format!("{name}#{generation}-{}", crate::store::lease_nonce());
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
}
