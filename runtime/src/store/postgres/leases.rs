//! Worker leases, claims and work notices (LISTEN/NOTIFY) on PostgreSQL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPool;

use tokio_util::sync::CancellationToken;

use super::{PostgresStore, DB_NOW, STORE, WORK_CHANNEL};
use crate::store::util::{to_i64, unavailable};
use crate::store::{Claim, Leases, Result, WorkerLease, COUNT_ATTEMPT};

/// How long after its lease expired a worker's row is deleted.
pub(super) const WORKER_FORGET_MS: i64 = 3_600_000;

/// Forwards `cairn_work` notifications to `tx` until nobody subscribes any more or the store
/// stops (closed, or its last clone dropped). After each
/// (re)connection it sends `*`: notifications sent while it was not listening are lost, so
/// subscribers look at everything again.
pub(super) async fn listen(
    pool: PgPool,
    tx: tokio::sync::broadcast::Sender<String>,
    listening: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = forward(&pool, &tx) => {}
    }
    listening.store(false, Ordering::SeqCst);
}

/// The body of [`listen`], until nobody subscribes.
async fn forward(pool: &PgPool, tx: &tokio::sync::broadcast::Sender<String>) {
    let mut delay = Duration::from_millis(100);
    while tx.receiver_count() > 0 {
        let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot connect the work listener; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen(WORK_CHANNEL).await {
            tracing::debug!(error = %e, "cannot LISTEN; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            continue;
        }
        delay = Duration::from_millis(100);
        let _ = tx.send("*".into());
        loop {
            if tx.receiver_count() == 0 {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await {
                Err(_) => continue,
                Ok(Ok(Some(n))) => {
                    let _ = tx.send(n.payload().to_string());
                }
                // The connection dropped: the listener reconnects on the next call, and what was
                // sent meanwhile is lost.
                Ok(Ok(None)) => {
                    let _ = tx.send("*".into());
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "work listener failed; reconnecting");
                    tokio::time::sleep(delay).await;
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl Leases for PostgresStore {
    async fn register_worker(&self, name: &str, ttl_ms: i64) -> Result<WorkerLease> {
        let err = |e: sqlx::Error| unavailable(STORE, "register_worker", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        let previous: Option<(String, bool)> = sqlx::query_as(&format!(
            "SELECT lease_id, lease_until > {DB_NOW} FROM workers WHERE name = $1 FOR UPDATE"
        ))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        if let Some((old, true)) = &previous {
            // Either a restart within the ttl (fine) or a second live process under this name
            // (not supported: the two would take each other's runs at every registration).
            tracing::warn!(worker = %name, previous = %old, "a worker registers under a name whose lease is still live; two live workers must not share a name");
        }
        let previous = previous.map(|(old, _)| old);
        let (lease_id,): (String,) = sqlx::query_as(&format!(
            "INSERT INTO workers (name, generation, lease_id, lease_until, started_at) \
             VALUES ($1, 1, $1 || '#1-' || $3, {DB_NOW} + $2, {DB_NOW}) \
             ON CONFLICT (name) DO UPDATE SET generation = workers.generation + 1, \
               lease_id = $1 || '#' || (workers.generation + 1) || '-' || $3, \
               lease_until = excluded.lease_until, started_at = excluded.started_at \
             RETURNING lease_id"
        ))
        .bind(name)
        .bind(ttl_ms)
        .bind(crate::store::lease_nonce())
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        if let Some(old) = &previous {
            // Rows an append holds locked are left to `release_expired`.
            sqlx::query(
                "UPDATE runs SET owner = NULL WHERE run_id IN (SELECT run_id FROM runs \
                 WHERE owner = $1 FOR UPDATE SKIP LOCKED)",
            )
            .bind(old)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            sqlx::query("SELECT pg_notify($1, '*')")
                .bind(WORK_CHANNEL)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(WorkerLease { lease_id, ttl_ms })
    }

    async fn renew_worker(&self, lease: &WorkerLease) -> Result<bool> {
        let r = sqlx::query(&format!(
            "UPDATE workers SET lease_until = {DB_NOW} + $2 \
             WHERE lease_id = $1 AND lease_until > {DB_NOW}"
        ))
        .bind(&lease.lease_id)
        .bind(lease.ttl_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "renew_worker", e))?;
        Ok(r.rows_affected() == 1)
    }

    async fn retire_worker(&self, lease: &WorkerLease) -> Result<()> {
        let err = |e: sqlx::Error| unavailable(STORE, "retire_worker", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("DELETE FROM workers WHERE lease_id = $1")
            .bind(&lease.lease_id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        // Rows an append holds locked are left to `release_expired` (a blocking update here
        // could deadlock with that append's row locks).
        sqlx::query(
            "UPDATE runs SET owner = NULL, attempts = GREATEST(attempts - 1, 0) \
             WHERE run_id IN (SELECT run_id FROM runs WHERE owner = $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(&lease.lease_id)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        sqlx::query("SELECT pg_notify($1, '*')")
            .bind(WORK_CHANNEL)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    async fn release_expired(&self) -> Result<u64> {
        let err = |e: sqlx::Error| unavailable(STORE, "release_expired", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        // Owners that are no live lease: expired, superseded, or retired without releasing.
        // Rows an append holds locked are skipped (that append is the owner's, alive or not;
        // the next pass gets them).
        let released = sqlx::query(&format!(
            "UPDATE runs SET owner = NULL WHERE run_id IN (SELECT run_id FROM runs \
             WHERE owner IS NOT NULL AND owner NOT IN \
               (SELECT lease_id FROM workers WHERE lease_until > {DB_NOW}) \
             FOR UPDATE SKIP LOCKED)"
        ))
        .execute(&mut *tx)
        .await
        .map_err(err)?
        .rows_affected();
        // Forget workers dead for an hour (default names are unique per process, so every
        // crash would otherwise leave a row for good); one that was only paused registers
        // again when its renewal fails.
        sqlx::query(&format!(
            "DELETE FROM workers WHERE lease_until < {DB_NOW} - {WORKER_FORGET_MS} \
             AND NOT EXISTS (SELECT 1 FROM runs WHERE owner = workers.lease_id)"
        ))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if released > 0 {
            sqlx::query("SELECT pg_notify($1, '*')")
                .bind(WORK_CHANNEL)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(released)
    }

    async fn claim_runs(
        &self,
        lease: &WorkerLease,
        now: i64,
        limit: u64,
        only: Option<&[String]>,
    ) -> Result<Vec<Claim>> {
        // SKIP LOCKED: concurrent claimers take disjoint rows without waiting for each other.
        // Only under a live lease (by the database's clock): a worker whose lease lapsed
        // must not take new runs.
        let rows: Vec<(String, i32)> = sqlx::query_as(&format!(
            "UPDATE runs r SET {COUNT_ATTEMPT}, owner = $1 FROM (SELECT run_id FROM runs \
               WHERE owner IS NULL AND wake_at IS NOT NULL AND wake_at <= $2 \
                 AND ($4::text[] IS NULL OR run_id = ANY($4)) \
                 AND EXISTS (SELECT 1 FROM workers WHERE lease_id = $1 \
                             AND lease_until > {DB_NOW}) \
               ORDER BY wake_at LIMIT $3 FOR UPDATE SKIP LOCKED) c \
             WHERE r.run_id = c.run_id RETURNING r.run_id, r.attempts"
        ))
        .bind(&lease.lease_id)
        .bind(now)
        .bind(to_i64(limit))
        .bind(only)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "claim_runs", e))?;
        Ok(rows
            .into_iter()
            .map(|(run_id, n)| Claim {
                run_id,
                attempts: u32::try_from(n).unwrap_or(0),
            })
            .collect())
    }

    async fn owned_runs(&self, lease: &WorkerLease) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT run_id FROM runs WHERE owner = $1")
            .bind(&lease.lease_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| unavailable(STORE, "owned_runs", e))?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn earliest_wake(&self) -> Result<Option<i64>> {
        sqlx::query_scalar(&crate::store::read::earliest_wake_sql())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unavailable(STORE, "earliest_wake", e))
    }

    async fn next_wake(&self) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MIN(wake_at) FROM runs WHERE owner IS NULL AND wake_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "next_wake", e))
    }

    fn work_notices(&self) -> Option<(tokio::sync::broadcast::Receiver<String>, bool)> {
        let rx = self.notices.subscribe();
        if !self.listening.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) if !self.background.stop.is_cancelled() => {
                    self.background.tasks.spawn_on(
                        listen(
                            self.pool.clone(),
                            self.notices.clone(),
                            self.listening.clone(),
                            self.background.stop.clone(),
                        ),
                        &handle,
                    );
                }
                // No runtime to run the listener on, or a closed store: no notices.
                _ => {
                    self.listening.store(false, Ordering::SeqCst);
                    return None;
                }
            }
        }
        Some((rx, true))
    }
}
