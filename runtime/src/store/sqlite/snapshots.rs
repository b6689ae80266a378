//! Snapshots on SQLite.

use async_trait::async_trait;
use serde_json::Value;

use super::{SqliteStore, STORE};
use crate::store::util::{to_i64, to_u64, unavailable};
use crate::store::{Result, SnapshotStore};

#[async_trait]
impl SnapshotStore for SqliteStore {
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
