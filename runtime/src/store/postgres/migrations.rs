//! Schema migrations of the PostgreSQL store: the numbered files of `migrations/`, applied in
//! order at connect, each once (`schema_version` records them), under an advisory lock so that
//! processes connecting at the same time migrate one after the other.

use sqlx::postgres::PgConnection;
use sqlx::Connection as _;

use super::{MIGRATE_LOCK, STORE};
use crate::store::util::{unavailable, Migration};
use crate::store::Result;

/// Every migration, in order. The numbers are those `schema_version` has always recorded; a new
/// migration is a new file with the next number, never an edit of an applied one.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration::new(1, include_str!("migrations/0001_init.sql")),
    Migration::new(2, include_str!("migrations/0002_append_function.sql")),
    Migration::new(3, include_str!("migrations/0003_distribution.sql")),
    Migration::new(4, include_str!("migrations/0004_runs_by_definition.sql")),
    Migration::new(5, include_str!("migrations/0005_deployed.sql")),
    Migration::new(6, include_str!("migrations/0006_attempts.sql")),
    Migration::catch_up(
        7,
        include_str!("migrations/0007_tokens_checkpoints_run_order.sql"),
    ),
];

/// Applies pending migrations in one transaction holding the migration lock.
pub(super) async fn migrate(conn: &mut PgConnection) -> Result<()> {
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
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(m.version)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}
