//! Definitions on PostgreSQL.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row as _;

use super::log::{event_from_row, EVENT_COLUMNS};
use super::{PostgresStore, STORE};
use crate::store::util::unavailable;
use crate::store::{
    DefinitionStore, Result, StoreError, StoredDefinition, StoredEvent, DEFINITION_AGGREGATE,
};

pub(super) fn definition_from_row(row: &PgRow) -> Result<StoredDefinition> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("postgres definitions row: {e}"));
    Ok(StoredDefinition {
        namespace: row.try_get("namespace").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        source: row.try_get::<Value, _>("source").map_err(get)?,
        deployed: row.try_get("deployed").map_err(get)?,
    })
}

#[async_trait]
impl DefinitionStore for PostgresStore {
    async fn put_definition(&self, def: &StoredDefinition) -> Result<()> {
        // Deploying content that was only run so far makes it deployed; running deployed
        // content changes nothing.
        sqlx::query(
            "INSERT INTO definitions (hash, namespace, name, version, source, deployed) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (hash) DO UPDATE SET deployed = TRUE \
             WHERE EXCLUDED.deployed AND NOT definitions.deployed",
        )
        .bind(&def.hash)
        .bind(&def.namespace)
        .bind(&def.name)
        .bind(&def.version)
        .bind(&def.source)
        .bind(def.deployed)
        .execute(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "put_definition", e))?;
        Ok(())
    }

    async fn definition_by_hash(&self, hash: &str) -> Result<Option<StoredDefinition>> {
        let row = sqlx::query(
            "SELECT hash, namespace, name, version, source, deployed FROM definitions WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "definition_by_hash", e))?;
        row.as_ref().map(definition_from_row).transpose()
    }

    async fn definition_events(&self) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 \
             ORDER BY aggregate_id, sequence"
        ))
        .bind(DEFINITION_AGGREGATE)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "definition_events", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn unpublished_definitions(&self) -> Result<Vec<StoredDefinition>> {
        // Sequence 1 of the stream: the unique index of `events` answers it.
        let rows = sqlx::query(
            "SELECT d.hash, d.namespace, d.name, d.version, d.source, d.deployed \
             FROM definitions d WHERE d.deployed AND NOT EXISTS (SELECT 1 FROM events e \
             WHERE e.aggregate_type = $1 AND e.aggregate_id = d.namespace || '/' || d.name \
             AND e.sequence = 1) ORDER BY d.seq",
        )
        .bind(DEFINITION_AGGREGATE)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "unpublished_definitions", e))?;
        rows.iter().map(definition_from_row).collect()
    }
}
