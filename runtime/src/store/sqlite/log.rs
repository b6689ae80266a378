//! The log on SQLite: appends (one `BEGIN IMMEDIATE` transaction per group commit) and reads.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::Row as _;

use super::{protocol, SqliteStore, MAX_BIND_PARAMS, STORE};
use crate::store::plan::{self, StreamKey};
use crate::store::util::{is_unique_violation, to_i64, to_u64, unavailable};
use crate::store::{
    AppendRequest, Appended, EventLog, GroupOutcome, Result, RunSummary, StoreError, StoredEvent,
};

impl SqliteStore {
    /// One append transaction: `BEGIN IMMEDIATE`, one heads query, one multi-row `INSERT` of every
    /// accepted event, one multi-row upsert of the run summaries, `COMMIT` (statements are chunked
    /// only past SQLite's bound-parameter limit). Each statement is a round trip to sqlx's worker
    /// thread, so the count per commit stays fixed however many runs share it.
    async fn try_append_groups(
        &self,
        groups: &[Vec<AppendRequest>],
    ) -> std::result::Result<Vec<GroupOutcome>, sqlx::Error> {
        let keys = plan::streams(groups);
        if keys.is_empty() {
            // No request at all: nothing to check or write.
            return Ok(plan::plan(groups, &HashMap::new(), &HashSet::new()).finish(&[]));
        }
        // The heads are read inside BEGIN IMMEDIATE on purpose, never cached across transactions:
        // another process may append to the same file between two of our commits.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let current = read_heads(&mut tx, &keys).await?;
        let lost = read_lost(&mut tx, &plan::fences(groups)).await?;
        let plan = plan::plan(groups, &current, &lost);
        if plan.is_empty() {
            tx.rollback().await?;
            return Ok(plan.finish(&[]));
        }
        let positions = insert_events(&mut tx, &plan.rows).await?;
        upsert_runs(&mut tx, &plan.summaries).await?;
        tx.commit().await?;
        for id in plan::notices(&plan.summaries) {
            // Nobody listening is fine: no worker runs in this process.
            let _ = self.notices.send(id.to_string());
        }
        Ok(plan.finish(&positions))
    }
}

/// The last sequence of each of `keys` (0 for a new stream), in one statement per chunk. Row
/// numbers are inlined as literals so the answer maps back by index without comparing strings.
pub(super) async fn read_heads<'k>(
    conn: &mut sqlx::SqliteConnection,
    keys: &[StreamKey<'k>],
) -> std::result::Result<HashMap<StreamKey<'k>, u64>, sqlx::Error> {
    let mut current = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(MAX_BIND_PARAMS / 2) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("WITH k(i, t, id) AS (VALUES ");
        for (i, (t, id)) in chunk.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push(format_args!("({i}, "))
                .push_bind(*t)
                .push(", ")
                .push_bind(*id)
                .push(")");
        }
        // The correlated MAX is one seek on the (aggregate_type, aggregate_id, sequence) index.
        qb.push(
            ") SELECT k.i, (SELECT MAX(e.sequence) FROM events e \
             WHERE e.aggregate_type = k.t AND e.aggregate_id = k.id) FROM k",
        );
        let rows: Vec<(i64, Option<i64>)> = qb.build_query_as().fetch_all(&mut *conn).await?;
        if rows.len() != chunk.len() {
            return Err(protocol(format!(
                "heads query answered {} of {} streams",
                rows.len(),
                chunk.len()
            )));
        }
        for (i, head) in rows {
            let key = usize::try_from(i)
                .ok()
                .and_then(|i| chunk.get(i))
                .ok_or_else(|| protocol(format!("heads query answered unknown row {i}")))?;
            let head = u64::try_from(head.unwrap_or(0))
                .map_err(|_| protocol(format!("negative sequence in stream {}", key.1)))?;
            current.insert(*key, head);
        }
    }
    Ok(current)
}

/// The fenced runs (`(run id, lease id)`) whose owner is no longer that lease.
pub(super) async fn read_lost(
    conn: &mut sqlx::SqliteConnection,
    fences: &[(&str, &str)],
) -> std::result::Result<HashSet<String>, sqlx::Error> {
    let mut lost = HashSet::new();
    for chunk in fences.chunks(MAX_BIND_PARAMS / 2) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("WITH f(id, lease) AS (VALUES ");
        for (i, (id, lease)) in chunk.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push("(")
                .push_bind(*id)
                .push(", ")
                .push_bind(*lease)
                .push(")");
        }
        qb.push(
            ") SELECT f.id FROM f WHERE NOT EXISTS \
             (SELECT 1 FROM runs r WHERE r.run_id = f.id AND r.owner = f.lease)",
        );
        let rows: Vec<(String,)> = qb.build_query_as().fetch_all(&mut *conn).await?;
        lost.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(lost)
}

/// Inserts `rows` with one multi-row `INSERT ... RETURNING` per chunk; answers each row's position.
///
/// Positions are matched to rows by `(aggregate_type, aggregate_id, sequence)`, which the unique
/// constraint makes a key, rather than by RETURNING's order, which SQLite leaves unspecified.
/// (Under `BEGIN IMMEDIATE` with one writer they come out contiguous anyway: AUTOINCREMENT draws
/// them in insertion order, and the conformance suite checks it.)
pub(super) async fn insert_events(
    conn: &mut sqlx::SqliteConnection,
    rows: &[plan::Row<'_>],
) -> std::result::Result<Vec<u64>, sqlx::Error> {
    const PARAMS: usize = 7;
    let index: HashMap<(&str, &str, i64), usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.aggregate_type, r.stream, to_i64(r.sequence)), i))
        .collect();
    let mut positions: Vec<Option<u64>> = vec![None; rows.len()];
    for chunk in rows.chunks(MAX_BIND_PARAMS / PARAMS) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) ",
        );
        qb.push_values(chunk, |mut b, row| {
            b.push_bind(row.aggregate_type)
                .push_bind(row.stream)
                .push_bind(to_i64(row.sequence))
                .push_bind(&row.event.event_type)
                .push_bind(&row.event.event_version)
                .push_bind(&row.event.payload)
                .push_bind(&row.event.metadata);
        });
        qb.push(" RETURNING position, aggregate_type, aggregate_id, sequence");
        let returned = qb.build().fetch_all(&mut *conn).await?;
        if returned.len() != chunk.len() {
            return Err(protocol(format!(
                "insert returned {} of {} rows",
                returned.len(),
                chunk.len()
            )));
        }
        for r in &returned {
            let position: i64 = r.try_get(0)?;
            let key: (&str, &str, i64) = (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            let slot = index
                .get(&key)
                .and_then(|&i| positions.get_mut(i))
                .ok_or_else(|| protocol(format!("insert returned an unknown row {key:?}")))?;
            *slot = Some(
                u64::try_from(position)
                    .map_err(|_| protocol(format!("negative position {position}")))?,
            );
        }
    }
    positions
        .into_iter()
        .map(|p| p.ok_or_else(|| protocol("insert left a row without a position".into())))
        .collect()
}

/// Upserts the run summaries with one multi-row statement per chunk (the plan holds at most one
/// summary per run, so no statement names a run twice).
pub(super) async fn upsert_runs(
    conn: &mut sqlx::SqliteConnection,
    summaries: &[(&RunSummary, &crate::store::Lease)],
) -> std::result::Result<(), sqlx::Error> {
    const PARAMS: usize = 12;
    for chunk in summaries.chunks(MAX_BIND_PARAMS / PARAMS) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO runs (run_id, namespace, name, version, status, created_at, \
             updated_at, next_timer_at, wake_at, owner, correlation_id, parent_run_id) ",
        );
        qb.push_values(chunk, |mut b, (s, lease)| {
            b.push_bind(&s.run_id)
                .push_bind(&s.namespace)
                .push_bind(&s.name)
                .push_bind(&s.version)
                .push_bind(&s.status)
                .push_bind(s.created_at)
                .push_bind(s.updated_at)
                .push_bind(s.next_timer_at)
                .push_bind(s.wake_at)
                .push_bind(plan::first_owner(s, lease))
                .push_bind(&s.correlation_id)
                .push_bind(&s.parent_run_id);
        });
        // See `crate::store::Lease`: a run that needs no worker now is released in the same write.
        qb.push(
            " ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, \
             name = excluded.name, version = excluded.version, status = excluded.status, \
             updated_at = excluded.updated_at, next_timer_at = excluded.next_timer_at, \
             wake_at = excluded.wake_at, \
             owner = CASE WHEN excluded.wake_at IS NULL OR excluded.wake_at > excluded.updated_at \
                          THEN NULL ELSE runs.owner END",
        );
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<StoredEvent> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("sqlite event row: {e}"));
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

pub(super) const EVENT_COLUMNS: &str =
    "position, aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata";

#[async_trait]
impl EventLog for SqliteStore {
    async fn append(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        let mut outcomes = self.append_groups(vec![requests]).await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("sqlite append: no outcome".into())))
    }

    async fn append_groups(&self, groups: Vec<Vec<AppendRequest>>) -> Result<Vec<GroupOutcome>> {
        match self.try_append_groups(&groups).await {
            Ok(outcomes) => Ok(outcomes),
            // BEGIN IMMEDIATE makes the head checks authoritative, so this means a writer that
            // bypassed them; one more pass sees its rows and answers each group precisely.
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = ? AND aggregate_id = ? \
             AND sequence > ? ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(stream)
        .bind(to_i64(after_sequence))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "load", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_all(&self, after_position: u64, limit: u64) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(to_i64(after_position))
        .bind(to_i64(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| unavailable(STORE, "read_all", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn head_position(&self) -> Result<u64> {
        self.head_row().await
    }

    fn database(&self) -> Option<crate::store::Database<'_>> {
        Some(crate::store::Database::Sqlite(self))
    }
}

impl SqliteStore {
    async fn head_row(&self) -> Result<u64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM events")
            .fetch_one(&self.reader)
            .await
            .map_err(|e| unavailable(STORE, "head_position", e))?;
        to_u64(head.unwrap_or(0), "position")
    }
}
