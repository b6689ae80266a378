//! The log on PostgreSQL: appends (one `cairn_append_v3` call per group commit) and reads.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row as _;

use super::{PostgresStore, APPEND_LOCK, STORE, WORK_CHANNEL};
use crate::store::plan::{self, StreamKey};
use crate::store::util::{is_unique_violation, to_i64, to_u64, unavailable};
use crate::store::{
    AppendRequest, Appended, EventLog, GroupOutcome, Result, RunSummary, StoreError, StoredEvent,
};

/// What `cairn_append_v3` answers: the positions written, or the real heads (stale plan), or
/// the fenced runs whose lease was lost.
pub(super) type AppendAnswer = (Option<Vec<i64>>, Option<Vec<i64>>, Option<Vec<String>>);

impl PostgresStore {
    /// One append, one round trip: `cairn_append` (migration 2) takes [`APPEND_LOCK`], checks
    /// the heads this plan assumed, writes, and commits as the statement's own transaction.
    ///
    /// The plan first assumes each stream's head is what the first request naming it expects,
    /// which is right unless that request is stale; when the function answers with different
    /// heads (nothing written), the plan is redone against them, which only misses again if
    /// another process extended one of these streams in between; after that second miss the
    /// append runs as an explicit transaction that reads the heads under the lock
    /// ([`Self::append_in_transaction`]), so racing processes cannot starve each other.
    async fn try_append_groups(
        &self,
        groups: &[Vec<AppendRequest>],
    ) -> std::result::Result<Vec<GroupOutcome>, sqlx::Error> {
        /// Calls of `cairn_append` before falling back to a transaction that plans under the lock:
        /// the second one plans against the heads the first one read, so only a writer racing on
        /// these very streams makes it miss too.
        const MAX_ATTEMPTS: usize = 2;
        let keys = plan::streams(groups);
        if keys.is_empty() {
            // No request at all: nothing to check or write.
            return Ok(plan::plan(groups, &HashMap::new(), &HashSet::new()).finish(&[]));
        }
        let mut assumed: Vec<i64> = keys
            .iter()
            .map(|&(t, id)| {
                groups
                    .iter()
                    .flatten()
                    .find(|r| r.aggregate_type == t && r.stream == id)
                    .map_or(0, |r| to_i64(r.expected_sequence))
            })
            .collect();
        let types: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let fences = plan::fences(groups);
        let mut lost: HashSet<String> = HashSet::new();
        let mut misses = 0;
        // Each pass either succeeds, finds stale heads (at most MAX_ATTEMPTS times), or finds
        // more lost fences (at most once per fence).
        while misses < MAX_ATTEMPTS {
            let mut current: HashMap<StreamKey<'_>, u64> = HashMap::with_capacity(keys.len());
            for (key, &head) in keys.iter().zip(&assumed) {
                let head = u64::try_from(head).map_err(|_| {
                    sqlx::Error::Protocol(format!("negative sequence in stream {}", key.1))
                })?;
                current.insert(*key, head);
            }
            let plan = plan::plan(groups, &current, &lost);
            let rows = &plan.rows;
            let ev = event_columns(rows);
            let sc = summary_columns(&plan.summaries);
            let notices = plan::notices(&plan.summaries);
            let (f_ids, f_leases): (Vec<&str>, Vec<&str>) = fences
                .iter()
                .filter(|(id, _)| !lost.contains(*id))
                .copied()
                .unzip();
            let (positions, heads, newly_lost): AppendAnswer = sqlx::query_as(
                "SELECT positions, heads, lost FROM cairn_append_v3($1, $2, $3, $4, $5, $6, $7, \
                 $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, \
                 $24, $25, $26)",
            )
            .bind(APPEND_LOCK)
            .bind(&types)
            .bind(&ids)
            .bind(&assumed)
            .bind(&f_ids)
            .bind(&f_leases)
            .bind(ev.0)
            .bind(ev.1)
            .bind(ev.2)
            .bind(ev.3)
            .bind(ev.4)
            .bind(ev.5)
            .bind(ev.6)
            .bind(sc.ids)
            .bind(sc.namespaces)
            .bind(sc.names)
            .bind(sc.versions)
            .bind(sc.statuses)
            .bind(sc.created)
            .bind(sc.updated)
            .bind(sc.timers)
            .bind(sc.wakes)
            .bind(sc.owners)
            .bind(sc.correlations)
            .bind(sc.parents)
            .bind(&notices)
            .fetch_one(&self.pool)
            .await?;
            match (positions, heads, newly_lost) {
                (Some(positions), _, _) => {
                    if positions.len() != rows.len() {
                        return Err(sqlx::Error::Protocol(format!(
                            "cairn_append returned {} positions for {} events",
                            positions.len(),
                            rows.len()
                        )));
                    }
                    let positions = positions
                        .into_iter()
                        .map(|p| {
                            u64::try_from(p).map_err(|_| {
                                sqlx::Error::Protocol(format!("negative position {p}"))
                            })
                        })
                        .collect::<std::result::Result<Vec<u64>, _>>()?;
                    return Ok(plan.finish(&positions));
                }
                (None, _, Some(newly)) if !newly.is_empty() => {
                    let before = lost.len();
                    lost.extend(newly);
                    if lost.len() == before {
                        return Err(sqlx::Error::Protocol(
                            "cairn_append reported the same lost leases twice".into(),
                        ));
                    }
                }
                (None, Some(heads), _) if heads.len() == keys.len() => {
                    assumed = heads;
                    misses += 1;
                }
                (None, heads, _) => {
                    return Err(sqlx::Error::Protocol(format!(
                        "cairn_append answered {} heads for {} streams",
                        heads.map_or(0, |h| h.len()),
                        keys.len()
                    )))
                }
            }
        }
        self.append_in_transaction(groups).await
    }

    /// The same append as an explicit transaction (BEGIN, lock, heads, insert, upsert, COMMIT):
    /// slower, but the heads it plans against are read under the lock, so it always makes
    /// progress. Used when `cairn_append` found the assumed heads stale twice in a row, i.e. when
    /// another process keeps extending the same streams.
    async fn append_in_transaction(
        &self,
        groups: &[Vec<AppendRequest>],
    ) -> std::result::Result<Vec<GroupOutcome>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // See the module docs: this lock is what makes read_all gap-free.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;

        let keys = plan::streams(groups);
        let types: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let heads: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT k.t, k.id, COALESCE((SELECT MAX(e.sequence) FROM events e \
               WHERE e.aggregate_type = k.t AND e.aggregate_id = k.id), 0) \
             FROM UNNEST($1::text[], $2::text[]) AS k(t, id)",
        )
        .bind(&types)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let by_key: HashMap<(String, String), u64> = heads
            .into_iter()
            .map(|(t, id, head)| ((t, id), u64::try_from(head).unwrap_or(0)))
            .collect();
        let current: HashMap<StreamKey<'_>, u64> = keys
            .iter()
            .map(|&(t, id)| {
                let head = by_key
                    .get(&(t.to_string(), id.to_string()))
                    .copied()
                    .unwrap_or(0);
                ((t, id), head)
            })
            .collect();

        let fences = plan::fences(groups);
        let mut lost = HashSet::new();
        if !fences.is_empty() {
            let (f_ids, f_leases): (Vec<&str>, Vec<&str>) = fences.iter().copied().unzip();
            // Locked like in `cairn_append_v3`: no claim moves these rows until we commit.
            sqlx::query("SELECT 1 FROM runs WHERE run_id = ANY($1) ORDER BY run_id FOR UPDATE")
                .bind(&f_ids)
                .fetch_all(&mut *tx)
                .await?;
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT f.id FROM UNNEST($1::text[], $2::text[]) AS f(id, lease) \
                 WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = f.id \
                 AND r.owner = f.lease)",
            )
            .bind(&f_ids)
            .bind(&f_leases)
            .fetch_all(&mut *tx)
            .await?;
            lost.extend(rows.into_iter().map(|(id,)| id));
        }
        let plan = plan::plan(groups, &current, &lost);
        if plan.is_empty() {
            tx.rollback().await?;
            return Ok(plan.finish(&[]));
        }

        let mut positions = Vec::with_capacity(plan.rows.len());
        if !plan.rows.is_empty() {
            // One statement for the whole batch, whatever its size: arrays keep the SQL text
            // fixed (one prepared statement) and the round trips to one.
            let rows = &plan.rows;
            let ev = event_columns(rows);
            let returned: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                   event_version, payload, metadata) \
                 SELECT t, id, seq, et, ev, p, m FROM UNNEST($1::text[], $2::text[], \
                   $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
                   WITH ORDINALITY AS r(t, id, seq, et, ev, p, m, ord) ORDER BY ord \
                 RETURNING position, aggregate_type, aggregate_id, sequence",
            )
            .bind(ev.0)
            .bind(ev.1)
            .bind(ev.2)
            .bind(ev.3)
            .bind(ev.4)
            .bind(ev.5)
            .bind(ev.6)
            .fetch_all(&mut *tx)
            .await?;
            // Map by key rather than trusting RETURNING's row order.
            let by_row: HashMap<(String, String, i64), i64> = returned
                .into_iter()
                .map(|(pos, t, id, seq)| ((t, id, seq), pos))
                .collect();
            for r in rows {
                let key = (
                    r.aggregate_type.to_string(),
                    r.stream.to_string(),
                    to_i64(r.sequence),
                );
                let position = by_row
                    .get(&key)
                    .and_then(|&p| u64::try_from(p).ok())
                    .ok_or_else(|| {
                        sqlx::Error::Protocol(format!("insert returned no position for {key:?}"))
                    })?;
                positions.push(position);
            }
        }

        if !plan.summaries.is_empty() {
            let sc = summary_columns(&plan.summaries);
            sqlx::query(
                "INSERT INTO runs (run_id, namespace, name, version, status, created_at, \
                   updated_at, next_timer_at, wake_at, owner, correlation_id, parent_run_id) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                   $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
                   $10::text[], $11::text[], $12::text[]) \
                 ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, \
                   name = excluded.name, version = excluded.version, status = excluded.status, \
                   updated_at = excluded.updated_at, next_timer_at = excluded.next_timer_at, \
                   wake_at = excluded.wake_at, \
                   owner = CASE WHEN excluded.wake_at IS NULL \
                                  OR excluded.wake_at > excluded.updated_at \
                                THEN NULL ELSE runs.owner END",
            )
            .bind(sc.ids)
            .bind(sc.namespaces)
            .bind(sc.names)
            .bind(sc.versions)
            .bind(sc.statuses)
            .bind(sc.created)
            .bind(sc.updated)
            .bind(sc.timers)
            .bind(sc.wakes)
            .bind(sc.owners)
            .bind(sc.correlations)
            .bind(sc.parents)
            .execute(&mut *tx)
            .await?;
            let notices = plan::notices(&plan.summaries);
            if !notices.is_empty() {
                sqlx::query("SELECT pg_notify($1, n) FROM UNNEST($2::text[]) AS n")
                    .bind(WORK_CHANNEL)
                    .bind(&notices)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(plan.finish(&positions))
    }
}

pub(super) fn event_from_row(row: &PgRow) -> Result<StoredEvent> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("postgres event row: {e}"));
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
impl EventLog for PostgresStore {
    async fn append(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        let mut outcomes = self.append_groups(vec![requests]).await?;
        outcomes.pop().unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                "postgres append: no outcome".into(),
            ))
        })
    }

    async fn append_groups(&self, groups: Vec<Vec<AppendRequest>>) -> Result<Vec<GroupOutcome>> {
        match self.try_append_groups(&groups).await {
            Ok(outcomes) => Ok(outcomes),
            // Under the append lock the head checks are authoritative, so this means a writer
            // that bypassed the lock; one more pass sees its rows and answers each group.
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND sequence > $3 ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(stream)
        .bind(to_i64(after_sequence))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "load", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_all(&self, after_position: u64, limit: u64) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(to_i64(after_position))
        .bind(to_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "read_all", e))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn head_position(&self) -> Result<u64> {
        self.head_row().await
    }

    fn database(&self) -> Option<crate::store::Database<'_>> {
        Some(crate::store::Database::Postgres(self))
    }
}

impl PostgresStore {
    async fn head_row(&self) -> Result<u64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unavailable(STORE, "head_position", e))?;
        to_u64(head.unwrap_or(0), "position")
    }
}

/// The column arrays of planned event rows, in table order, for an `UNNEST` insert. The append
/// function and the explicit-transaction fallback bind the same arrays.
pub(super) type EventColumns<'a> = (
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<i64>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a Value>,
    Vec<&'a Value>,
);

pub(super) fn event_columns<'a>(rows: &[plan::Row<'a>]) -> EventColumns<'a> {
    (
        rows.iter().map(|r| r.aggregate_type).collect(),
        rows.iter().map(|r| r.stream).collect(),
        rows.iter().map(|r| to_i64(r.sequence)).collect(),
        rows.iter().map(|r| r.event.event_type.as_str()).collect(),
        rows.iter()
            .map(|r| r.event.event_version.as_str())
            .collect(),
        rows.iter().map(|r| &r.event.payload).collect(),
        rows.iter().map(|r| &r.event.metadata).collect(),
    )
}

/// The column arrays of run summaries, in table order, for the runs upsert.
pub(super) struct SummaryColumns<'a> {
    ids: Vec<&'a str>,
    namespaces: Vec<&'a str>,
    names: Vec<&'a str>,
    versions: Vec<&'a str>,
    statuses: Vec<&'a str>,
    created: Vec<i64>,
    updated: Vec<i64>,
    timers: Vec<Option<i64>>,
    wakes: Vec<Option<i64>>,
    owners: Vec<Option<&'a str>>,
    correlations: Vec<Option<&'a str>>,
    parents: Vec<Option<&'a str>>,
}

pub(super) fn summary_columns<'a>(
    s: &[(&'a RunSummary, &'a crate::store::Lease)],
) -> SummaryColumns<'a> {
    SummaryColumns {
        ids: s.iter().map(|(r, _)| r.run_id.as_str()).collect(),
        namespaces: s.iter().map(|(r, _)| r.namespace.as_str()).collect(),
        names: s.iter().map(|(r, _)| r.name.as_str()).collect(),
        versions: s.iter().map(|(r, _)| r.version.as_str()).collect(),
        statuses: s.iter().map(|(r, _)| r.status.as_str()).collect(),
        created: s.iter().map(|(r, _)| r.created_at).collect(),
        updated: s.iter().map(|(r, _)| r.updated_at).collect(),
        timers: s.iter().map(|(r, _)| r.next_timer_at).collect(),
        wakes: s.iter().map(|(r, _)| r.wake_at).collect(),
        owners: s.iter().map(|(r, l)| plan::first_owner(r, l)).collect(),
        correlations: s.iter().map(|(r, _)| r.correlation_id.as_deref()).collect(),
        parents: s.iter().map(|(r, _)| r.parent_run_id.as_deref()).collect(),
    }
}
