//! Snapshots on PostgreSQL.

use async_trait::async_trait;
use serde_json::Value;

use super::{PostgresStore, STORE};
use crate::store::util::{to_i64, to_u64, unavailable};
use crate::store::{Result, SnapshotStore};

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        stream: &str,
        last_sequence: u64,
        payload: Value,
    ) -> Result<()> {
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

impl PostgresStore {
    /// One statement (its own transaction): drop the stream's older snapshots and upsert this
    /// one. No append lock: snapshots are not events, and readers never follow them by
    /// position. Two writers racing on one run may both insert (each sees the other's row only
    /// after its statement); `load_snapshot` takes the newest, and the next save drops the other.
    async fn save_snapshot_row(
        &self,
        aggregate_type: &str,
        stream: &str,
        last_sequence: u64,
        payload: &Value,
    ) -> Result<()> {
        // The main statement sees the rows as they were before the CTE's delete, so the count
        // and the "newer exists" check both include the deleted ones. A newer snapshot wins over
        // this one; one of the same sequence is replaced (it may be of an older format).
        sqlx::query(
            "WITH old AS (DELETE FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND last_sequence < $3 RETURNING current_snapshot) \
             INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, \
             current_snapshot, payload) \
             SELECT $1, $2, $3, COALESCE((SELECT MAX(current_snapshot) FROM snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2), 0) + 1, $4 \
             WHERE NOT EXISTS (SELECT 1 FROM snapshots WHERE aggregate_type = $1 \
             AND aggregate_id = $2 AND last_sequence > $3) \
             ON CONFLICT (aggregate_type, aggregate_id, last_sequence) DO UPDATE SET \
             current_snapshot = excluded.current_snapshot, payload = excluded.payload",
        )
        .bind(aggregate_type)
        .bind(stream)
        .bind(to_i64(last_sequence))
        .bind(payload)
        .execute(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "save_snapshot", e))?;
        Ok(())
    }

    async fn snapshot_row(
        &self,
        aggregate_type: &str,
        stream: &str,
    ) -> Result<Option<(u64, Value)>> {
        // One probe of the primary key (aggregate_type, aggregate_id, last_sequence), backwards.
        let row: Option<(i64, Value)> = sqlx::query_as(
            "SELECT last_sequence, payload FROM snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY last_sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(stream)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "load_snapshot", e))?;
        row.map(|(seq, payload)| Ok((to_u64(seq, "last_sequence")?, payload)))
            .transpose()
    }
}
