//! The read side both stores share: where SQLite and PostgreSQL agree on the SQL of a `runs`
//! query and on how a row decodes, it is written once here, generic over the sqlx database
//! (as `plan.rs` does for the store-independent half of an append).

use cairn_core::names::StatusLabel;
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::util::to_i64;
use super::{Result, RunQuery, RunSummary, StoreError};

/// The columns of a [`RunSummary`], in the order [`run_from_row`] reads them.
pub(crate) const RUN_COLUMNS: &str =
    "run_id, namespace, name, version, status, created_at, updated_at, \
     next_timer_at, wake_at, correlation_id, parent_run_id";

/// The earliest `wake_at` of the runs a worker may still have something to do for
/// ([`super::Leases::earliest_wake`]), the same statement on both stores.
pub(crate) fn earliest_wake_sql() -> String {
    let active: Vec<String> = StatusLabel::ACTIVE
        .iter()
        .map(|l| format!("'{}'", l.as_str()))
        .collect();
    format!(
        "SELECT MIN(wake_at) FROM runs WHERE status IN ({}) AND wake_at IS NOT NULL",
        active.join(", ")
    )
}

/// The `SELECT` of [`super::RunIndex::query_runs`]: the filters that are set, then the keyset
/// cursor and order (the same statement on both stores; only the placeholders differ, and the
/// builder writes those).
pub(crate) fn query_runs<'a, DB>(query: &'a RunQuery) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::<DB>::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"));
    if !query.statuses.is_empty() {
        qb.push(" AND status IN (");
        let mut sep = qb.separated(", ");
        for s in &query.statuses {
            sep.push_bind(s.as_str());
        }
        qb.push(")");
    }
    if let Some(ns) = &query.namespace {
        qb.push(" AND namespace = ").push_bind(ns.as_str());
    }
    if let Some(name) = &query.name {
        qb.push(" AND name = ").push_bind(name.as_str());
    }
    if let Some(t) = query.created_from {
        qb.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = query.created_before {
        qb.push(" AND created_at < ").push_bind(t);
    }
    if let Some(c) = &query.correlation_id {
        qb.push(" AND correlation_id = ").push_bind(c.as_str());
    }
    // Keyset: the row value `(key, run_id)` strictly past the cursor, in the sort direction.
    let key = query.order.field.column();
    let (cmp, dir) = if query.order.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((at, run_id)) = &query.after {
        qb.push(format!(" AND ({key}, run_id) {cmp} ("))
            .push_bind(*at)
            .push(", ")
            .push_bind(run_id.as_str())
            .push(")");
    }
    qb.push(format!(" ORDER BY {key} {dir}, run_id {dir} LIMIT "))
        .push_bind(to_i64(query.limit));
    qb
}

/// A `runs` row selected with [`RUN_COLUMNS`]; `store` names the store in the error.
pub(crate) fn run_from_row<R>(store: &str, row: &R) -> Result<RunSummary>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("{store} runs row: {e}"));
    Ok(RunSummary {
        run_id: row.try_get("run_id").map_err(get)?,
        namespace: row.try_get("namespace").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        version: row.try_get("version").map_err(get)?,
        status: row.try_get("status").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        next_timer_at: row.try_get("next_timer_at").map_err(get)?,
        wake_at: row.try_get("wake_at").map_err(get)?,
        correlation_id: row.try_get("correlation_id").map_err(get)?,
        parent_run_id: row.try_get("parent_run_id").map_err(get)?,
    })
}
