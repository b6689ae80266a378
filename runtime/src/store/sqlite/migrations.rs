//! Schema migrations of the SQLite store: the numbered files of `migrations/`, applied in order
//! at open, each once (`schema_version` records them).

use sqlx::sqlite::SqlitePool;

use super::STORE;
use crate::store::util::{unavailable, Migration};
use crate::store::Result;

/// Every migration, in order. The numbers are those `schema_version` has always recorded; a new
/// migration is a new file with the next number, never an edit of an applied one.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration::new(1, include_str!("migrations/0001_init.sql")),
    Migration::new(2, include_str!("migrations/0002_distribution.sql")),
    Migration::new(3, include_str!("migrations/0003_runs_by_definition.sql")),
    Migration::new(4, include_str!("migrations/0004_deployed.sql")),
    Migration::new(5, include_str!("migrations/0005_attempts.sql")),
    Migration::catch_up(
        6,
        include_str!("migrations/0006_tokens_checkpoints_run_order.sql"),
    ),
];

/// Applies pending migrations in one `BEGIN IMMEDIATE` transaction (so two processes opening
/// the same new file don't both migrate).
pub(super) async fn migrate(pool: &SqlitePool) -> Result<()> {
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
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query(
            "INSERT INTO schema_version (version, applied_at) \
             VALUES (?, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
        )
        .bind(m.version)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}
