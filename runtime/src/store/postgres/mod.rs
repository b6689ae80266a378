//! The PostgreSQL store, for many `cairn worker`/`cairn serve` processes on one database.
//!
//! # Gap-free global positions
//!
//! An identity column hands out values when a row is inserted, not when its transaction commits:
//! with concurrent appenders, transaction A may take position 10, B position 11, B commit first,
//! and a reader that has seen 11 and resumes "after 11" never sees 10. Two known cures:
//!
//! 1. serialise appends: every append transaction first takes a transaction-scoped advisory lock
//!    (`pg_advisory_xact_lock(APPEND_LOCK)`), then draws its positions. Positions are therefore
//!    drawn in lock order, and PostgreSQL makes a commit visible *before* it releases the
//!    transaction's locks, so when B can draw a position, every earlier holder is already visible.
//!    A reader's snapshot that contains B contains everything below B.
//! 2. record `pg_current_xact_id()` per row and let readers only return rows below
//!    `pg_snapshot_xmin(pg_current_snapshot())`. Appends stay parallel, but every reader is held
//!    back by the oldest open transaction in the whole database (any long transaction, even an
//!    unrelated one, stalls every subscriber), reads need an extra filter and index, and the rule
//!    is subtle to keep right on replicas.
//!
//! Cairn uses (1): it is short, provably correct and needs nothing from readers. Its cost is that
//! append transactions on one database run one at a time (about one commit, one WAL flush, per
//! lock hold). That is what [`super::group::GroupCommitter`] is for: it packs up to hundreds of
//! runs' appends into each transaction, so the serial section is paid per batch, not per run.
//! Anything that writes to `events` must take the same lock (see [`APPEND_LOCK`]).
//!
//! Under the lock the stream heads read inside the transaction are authoritative, so a group with
//! a stale `expected_sequence` is answered `Conflict` and left out, with no savepoint; the unique
//! constraint on `(aggregate_type, aggregate_id, sequence)` remains as a backstop.
//!
//! An append is one call of the server-side function `cairn_append` (migration 2), run as its
//! statement's own transaction: lock, heads check, insert, upsert and commit cost one round trip
//! instead of six. The plan is made on the client against assumed heads; the function writes only
//! if the heads it reads under the lock are the assumed ones, else answers the real heads and the
//! client plans again (see `try_append_groups`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, Row as _};

use super::plan::{self, StreamKey};
use super::util::{is_unique_violation, redact_url, to_i64, to_u64, unavailable};
use super::{
    AppendRequest, Appended, Claim, EventStore, GroupOutcome, Result, RunFilter, RunQuery,
    RunSummary, StoreError, StoredDefinition, StoredEvent, WorkerLease, COUNT_ATTEMPT,
};

const STORE: &str = "postgres";

/// Key of the transaction-scoped advisory lock every append holds (ASCII `cairn_ev`). Any other
/// writer of the `events` table must take it too, or readers may skip its events.
pub const APPEND_LOCK: i64 = 0x6361_6972_6e5f_6576;

/// Key of the advisory lock that serialises schema migrations of concurrent processes.
const MIGRATE_LOCK: i64 = 0x6361_6972_6e5f_6d67;

/// Schema migrations, applied in order at connect; each runs once (see `schema_version`).
/// Column names follow postgres-es; payloads are JSONB.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_type TEXT   NOT NULL,
    aggregate_id   TEXT   NOT NULL,
    sequence       BIGINT NOT NULL CHECK (sequence >= 1),
    event_type     TEXT   NOT NULL,
    event_version  TEXT   NOT NULL,
    payload        JSONB  NOT NULL,
    metadata       JSONB  NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
);

CREATE TABLE snapshots (
    aggregate_type   TEXT   NOT NULL,
    aggregate_id     TEXT   NOT NULL,
    last_sequence    BIGINT NOT NULL CHECK (last_sequence >= 0),
    current_snapshot BIGINT NOT NULL CHECK (current_snapshot >= 0),
    payload          JSONB  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

CREATE TABLE runs (
    run_id        TEXT   PRIMARY KEY,
    namespace     TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    next_timer_at BIGINT
);
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_next_timer ON runs (next_timer_at) WHERE next_timer_at IS NOT NULL;

CREATE TABLE definitions (
    hash      TEXT   PRIMARY KEY,
    namespace TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    version   TEXT   NOT NULL,
    source    JSONB  NOT NULL,
    seq       BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX definitions_nnv ON definitions (namespace, name, version);
"#,
    ),
    (
        2,
        // The whole append in one call, so it costs one round trip: lock, check the stream heads
        // the caller planned against, insert, upsert. Being VOLATILE PL/pgSQL, every statement
        // takes a fresh snapshot, so the heads read after the lock see every earlier holder's
        // commit (a single plain SQL statement would read them from a snapshot taken before it
        // waited for the lock). On a mismatch nothing is written and the real heads go back to
        // the caller, which plans again. Positions come back in the order of the event arrays,
        // matched by (aggregate_type, aggregate_id, sequence) rather than by RETURNING's order.
        r#"
CREATE OR REPLACE FUNCTION cairn_append(
    lock_key bigint,
    s_types text[], s_ids text[], s_heads bigint[],
    e_types text[], e_ids text[], e_seqs bigint[], e_event_types text[], e_versions text[],
    e_payloads jsonb[], e_metadata jsonb[],
    r_ids text[], r_namespaces text[], r_names text[], r_versions text[], r_statuses text[],
    r_created bigint[], r_updated bigint[], r_timers bigint[],
    OUT positions bigint[], OUT heads bigint[])
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT COALESCE(array_agg(COALESCE((SELECT MAX(e.sequence) FROM events e
                                         WHERE e.aggregate_type = k.t AND e.aggregate_id = k.id),
                                        0) ORDER BY k.ord), '{}')
      INTO heads
      FROM UNNEST(s_types, s_ids) WITH ORDINALITY AS k(t, id, ord);
    IF heads IS DISTINCT FROM COALESCE(s_heads, '{}') THEN
        RETURN;
    END IF;
    WITH ins AS (
        INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata)
        SELECT r.t, r.id, r.seq, r.et, r.ev, r.p, r.m
          FROM UNNEST(e_types, e_ids, e_seqs, e_event_types, e_versions, e_payloads, e_metadata)
               WITH ORDINALITY AS r(t, id, seq, et, ev, p, m, ord)
         ORDER BY r.ord
        RETURNING events.position, events.aggregate_type, events.aggregate_id, events.sequence)
    SELECT COALESCE(array_agg(ins.position ORDER BY r.ord), '{}')
      INTO positions
      FROM ins
      JOIN UNNEST(e_types, e_ids, e_seqs) WITH ORDINALITY AS r(t, id, seq, ord)
        ON ins.aggregate_type = r.t AND ins.aggregate_id = r.id AND ins.sequence = r.seq;
    INSERT INTO runs (run_id, namespace, name, version, status, created_at, updated_at,
                      next_timer_at)
    SELECT * FROM UNNEST(r_ids, r_namespaces, r_names, r_versions, r_statuses, r_created,
                         r_updated, r_timers)
    ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, name = excluded.name,
        version = excluded.version, status = excluded.status,
        updated_at = excluded.updated_at, next_timer_at = excluded.next_timer_at;
END
$fn$;
"#,
    ),
    (
        3,
        // Distribution (see `super::Lease`): when each run next needs a worker (`wake_at`), who
        // holds it (`owner`, a worker's lease id), the workers' leases, and the correlation id
        // and parent of a run. Runs open before this migration are made runnable, so a worker
        // looks at each once and files it properly. The append function gains the fence check,
        // the new columns and the notices; the old one is dropped so that a binary from before
        // this migration fails loudly instead of writing rows without `wake_at`.
        r#"
ALTER TABLE runs ADD COLUMN wake_at BIGINT, ADD COLUMN owner TEXT,
    ADD COLUMN correlation_id TEXT, ADD COLUMN parent_run_id TEXT;
UPDATE runs SET wake_at = updated_at WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX runs_claimable ON runs (wake_at) WHERE owner IS NULL AND wake_at IS NOT NULL;
CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_correlation ON runs (correlation_id, created_at)
    WHERE correlation_id IS NOT NULL;
CREATE TABLE workers (
    name        TEXT   PRIMARY KEY,
    generation  BIGINT NOT NULL,
    lease_id    TEXT   NOT NULL UNIQUE,
    lease_until BIGINT NOT NULL,
    started_at  BIGINT NOT NULL
);
DROP FUNCTION cairn_append(bigint, text[], text[], bigint[], text[], text[], bigint[], text[],
    text[], jsonb[], jsonb[], text[], text[], text[], text[], text[], bigint[], bigint[],
    bigint[]);
CREATE FUNCTION cairn_append_v3(
    lock_key bigint,
    s_types text[], s_ids text[], s_heads bigint[],
    f_ids text[], f_leases text[],
    e_types text[], e_ids text[], e_seqs bigint[], e_event_types text[], e_versions text[],
    e_payloads jsonb[], e_metadata jsonb[],
    r_ids text[], r_namespaces text[], r_names text[], r_versions text[], r_statuses text[],
    r_created bigint[], r_updated bigint[], r_timers bigint[], r_wakes bigint[],
    r_owners text[], r_correlations text[], r_parents text[],
    n_ids text[],
    OUT positions bigint[], OUT heads bigint[], OUT lost text[])
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT COALESCE(array_agg(COALESCE((SELECT MAX(e.sequence) FROM events e
                                         WHERE e.aggregate_type = k.t AND e.aggregate_id = k.id),
                                        0) ORDER BY k.ord), '{}')
      INTO heads
      FROM UNNEST(s_types, s_ids) WITH ORDINALITY AS k(t, id, ord);
    IF heads IS DISTINCT FROM COALESCE(s_heads, '{}') THEN
        RETURN;
    END IF;
    IF COALESCE(cardinality(f_ids), 0) > 0 THEN
        -- Lock the fenced rows first, so that no claim can move them between this check and
        -- the commit (claims skip locked rows).
        PERFORM 1 FROM runs WHERE run_id = ANY(f_ids) ORDER BY run_id FOR UPDATE;
        SELECT array_agg(f.id) INTO lost
          FROM UNNEST(f_ids, f_leases) AS f(id, lease)
         WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = f.id AND r.owner = f.lease);
        IF lost IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    WITH ins AS (
        INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata)
        SELECT r.t, r.id, r.seq, r.et, r.ev, r.p, r.m
          FROM UNNEST(e_types, e_ids, e_seqs, e_event_types, e_versions, e_payloads, e_metadata)
               WITH ORDINALITY AS r(t, id, seq, et, ev, p, m, ord)
         ORDER BY r.ord
        RETURNING events.position, events.aggregate_type, events.aggregate_id, events.sequence)
    SELECT COALESCE(array_agg(ins.position ORDER BY r.ord), '{}')
      INTO positions
      FROM ins
      JOIN UNNEST(e_types, e_ids, e_seqs) WITH ORDINALITY AS r(t, id, seq, ord)
        ON ins.aggregate_type = r.t AND ins.aggregate_id = r.id AND ins.sequence = r.seq;
    INSERT INTO runs (run_id, namespace, name, version, status, created_at, updated_at,
                      next_timer_at, wake_at, owner, correlation_id, parent_run_id)
    SELECT * FROM UNNEST(r_ids, r_namespaces, r_names, r_versions, r_statuses, r_created,
                         r_updated, r_timers, r_wakes, r_owners, r_correlations, r_parents)
    ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, name = excluded.name,
        version = excluded.version, status = excluded.status,
        updated_at = excluded.updated_at, next_timer_at = excluded.next_timer_at,
        wake_at = excluded.wake_at,
        owner = CASE WHEN excluded.wake_at IS NULL OR excluded.wake_at > excluded.updated_at
                     THEN NULL ELSE runs.owner END;
    PERFORM pg_notify('cairn_work', n) FROM UNNEST(n_ids) AS n;
END
$fn$;
"#,
    ),
    (
        4,
        // The runs list of one definition (`runs(filter: {namespace, name})`) without walking
        // every other definition's runs (found by the EXPLAIN test); and two indexes no query
        // reads (`runs_created_id` covers `runs_created`; nothing filters on `next_timer_at`),
        // which every append paid for.
        "CREATE INDEX runs_definition_created ON runs (namespace, name, created_at, run_id);
         DROP INDEX IF EXISTS runs_created;
         DROP INDEX IF EXISTS runs_next_timer;",
    ),
    (
        5,
        // Definitions recorded only to run them (`startRun(source:)`, `cairn start FILE`) are
        // not deployed: `latest`, version lookups and the list ignore them. Every definition
        // recorded before this migration was reachable as deployed, and stays so.
        "ALTER TABLE definitions ADD COLUMN deployed BOOLEAN NOT NULL DEFAULT TRUE;",
    ),
    (
        6,
        // Claims of a run since it last changed (see `super::Claim::attempts`), so that a run
        // that kills every worker claiming it is faulted instead of claimed for ever;
        // `attempt_mark` is the run's `updated_at` at the last claim.
        "ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0, \
         ADD COLUMN attempt_mark BIGINT;",
    ),
];

/// What `cairn_append_v3` answers: the positions written, or the real heads (stale plan), or
/// the fenced runs whose lease was lost.
type AppendAnswer = (Option<Vec<i64>>, Option<Vec<i64>>, Option<Vec<String>>);

/// How long after its lease expired a worker's row is deleted.
const WORKER_FORGET_MS: i64 = 3_600_000;

/// The channel of work notices (see [`EventStore::work_notices`]).
const WORK_CHANNEL: &str = "cairn_work";

/// The database's clock in ms since the epoch: worker leases are judged by one clock, the
/// database's, so that workers on machines whose clocks disagree still agree on who is alive.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Forwards `cairn_work` notifications to `tx` until nobody subscribes any more. After each
/// (re)connection it sends `*`: notifications sent while it was not listening are lost, so
/// subscribers look at everything again.
async fn listen(
    pool: PgPool,
    tx: tokio::sync::broadcast::Sender<String>,
    listening: Arc<AtomicBool>,
) {
    let mut delay = Duration::from_millis(100);
    while tx.receiver_count() > 0 {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
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
    listening.store(false, Ordering::SeqCst);
}

/// Options of [`PostgresStore::connect_with`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Upper bound of the pool (default 16).
    pub max_connections: u32,
    /// How long to wait for the first connection and for a pooled one (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Splits Cairn's pool parameters off a PostgreSQL URL (see [`PostgresStore::connect`]).
fn options_from_url(url: &str) -> Result<(String, PostgresOptions)> {
    let mut options = PostgresOptions::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), options));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| StoreError::InvalidUrl {
                    url: redact_url(url),
                    message: format!("{key} must be a positive whole number, not `{value}`"),
                })
        };
        match key {
            "pool_max_connections" => {
                options.max_connections = u32::try_from(number()?).unwrap_or(u32::MAX)
            }
            "pool_connect_timeout_ms" => options.connect_timeout = Duration::from_millis(number()?),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_parameters_come_out_of_the_url() {
        let (url, o) = options_from_url(
            "postgres://u@h/db?sslmode=disable&pool_max_connections=4&pool_connect_timeout_ms=250",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url, "postgres://u@h/db?sslmode=disable");
        assert_eq!(o.max_connections, 4);
        assert_eq!(o.connect_timeout, Duration::from_millis(250));
        let (url, o) = options_from_url("postgres://u@h/db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(o.max_connections, 16);
        let err = options_from_url("postgres://u:secret@h/db?pool_max_connections=lots")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("pool_max_connections must be a positive whole number"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }
}

/// The PostgreSQL event store. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Work notices from every process on the database (LISTEN `cairn_work`), fed by one
    /// listener connection started on first use.
    notices: tokio::sync::broadcast::Sender<String>,
    listening: Arc<AtomicBool>,
}

impl PostgresStore {
    /// Connects with default options, except those the URL sets, and applies pending
    /// migrations. Cairn's own URL parameters are taken out before the URL reaches the driver:
    /// `pool_max_connections=N` (the pool's upper bound, default 16) and
    /// `pool_connect_timeout_ms=N`.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let (url, options) = options_from_url(url)?;
        Self::connect_with(&url, options).await
    }

    /// Connects with explicit options and applies pending migrations.
    ///
    /// A malformed URL is [`StoreError::InvalidUrl`]; an unreachable server is
    /// [`StoreError::Unavailable`] saying `cannot connect to postgres at host:port/db: ...`.
    /// Neither message contains the password.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresStore> {
        let connect = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: redact_url(url),
            message: redact_url(&e.to_string()),
        })?;
        let target = format!(
            "{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or(connect.get_username())
        );
        let cannot = |e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!(
                "cannot connect to postgres at {target}: {}",
                redact_url(&e.to_string())
            ))
        };
        // One direct connection first: the pool would retry a refused connection until its
        // timeout and then report only "timed out", hiding the reason.
        let mut conn = match tokio::time::timeout(
            options.connect_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(cannot(&e)),
            Err(_) => {
                return Err(cannot(&format_args!(
                    "timed out after {:?}",
                    options.connect_timeout
                )))
            }
        };
        migrate(&mut conn).await?;
        migrate_tokens(&mut conn).await?;
        migrate_projections(&mut conn).await?;
        migrate_run_order(&mut conn).await?;
        // Closing politely can only fail on a dead connection; it is dropped either way.
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(connect);
        Ok(PostgresStore {
            pool,
            notices: tokio::sync::broadcast::channel(4096).0,
            listening: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The connection pool. For benchmarks that measure the raw insert rate of the same table
    /// shape, and for tools; writers of `events` must take [`APPEND_LOCK`] in their transaction.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

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

/// Applies pending migrations in one transaction under [`MIGRATE_LOCK`], so processes starting
/// together on a fresh database don't race.
async fn migrate(conn: &mut PgConnection) -> Result<()> {
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
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

fn event_from_row(row: &PgRow) -> Result<StoredEvent> {
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

fn run_from_row(row: &PgRow) -> Result<RunSummary> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("postgres runs row: {e}"));
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

fn definition_from_row(row: &PgRow) -> Result<StoredDefinition> {
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

const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata";
const RUN_COLUMNS: &str = "run_id, namespace, name, version, status, created_at, updated_at, \
                           next_timer_at, wake_at, correlation_id, parent_run_id";

#[async_trait]
impl EventStore for PostgresStore {
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

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE cardinality($1::text[]) = 0 OR status = ANY($1) \
             ORDER BY created_at DESC, run_id DESC LIMIT $2"
        ))
        .bind(&filter.statuses)
        // LIMIT NULL means no limit.
        .bind(filter.limit.map(to_i64))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "list_runs", e))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn query_runs(&self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"
        ));
        if !query.statuses.is_empty() {
            qb.push(" AND status IN (");
            let mut sep = qb.separated(", ");
            for s in &query.statuses {
                sep.push_bind(s);
            }
            qb.push(")");
        }
        if let Some(ns) = &query.namespace {
            qb.push(" AND namespace = ").push_bind(ns);
        }
        if let Some(name) = &query.name {
            qb.push(" AND name = ").push_bind(name);
        }
        if let Some(t) = query.created_from {
            qb.push(" AND created_at >= ").push_bind(t);
        }
        if let Some(t) = query.created_before {
            qb.push(" AND created_at < ").push_bind(t);
        }
        if let Some(c) = &query.correlation_id {
            qb.push(" AND correlation_id = ").push_bind(c);
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
                .push_bind(run_id)
                .push(")");
        }
        qb.push(format!(" ORDER BY {key} {dir}, run_id {dir} LIMIT "))
            .push_bind(to_i64(query.limit));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| unavailable(STORE, "query_runs", e))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunSummary>> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| unavailable(STORE, "get_run", e))?;
        row.as_ref().map(run_from_row).transpose()
    }

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

    async fn find_definition(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<StoredDefinition>> {
        // `latest` is resolved in Rust: SQL cannot order by semantic version.
        let rows = sqlx::query(
            "SELECT hash, namespace, name, version, source, deployed FROM definitions \
             WHERE namespace = $1 AND name = $2 AND ($3 = 'latest' OR version = $3) AND deployed \
             ORDER BY seq",
        )
        .bind(namespace)
        .bind(name)
        .bind(version)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "find_definition", e))?;
        let defs = rows
            .iter()
            .map(definition_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(super::util::pick_latest(defs))
    }

    async fn list_definitions(&self) -> Result<Vec<StoredDefinition>> {
        let rows = sqlx::query(
            "SELECT hash, namespace, name, version, source, deployed FROM definitions \
             WHERE deployed ORDER BY namespace, name, seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "list_definitions", e))?;
        rows.iter().map(definition_from_row).collect()
    }

    async fn put_token(&self, token: &super::StoredToken) -> Result<()> {
        self.put_token_row(token).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<super::StoredToken>> {
        self.token_row_by_hash(hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<super::StoredToken>> {
        self.token_rows().await
    }

    async fn revoke_token(&self, id: &str, at: i64) -> Result<Option<super::StoredToken>> {
        self.revoke_token_row(id, at).await
    }

    async fn projection_checkpoint(&self, projection: &str) -> Result<Option<u64>> {
        self.checkpoint_row(projection).await
    }

    async fn put_projection_checkpoint(&self, projection: &str, position: u64) -> Result<()> {
        self.put_checkpoint_row(projection, position).await
    }

    async fn rebuild_run_summary(&self, summary: &RunSummary, last_sequence: u64) -> Result<bool> {
        self.rebuild_run_row(summary, last_sequence).await
    }

    async fn head_position(&self) -> Result<u64> {
        self.head_row().await
    }

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
        .bind(super::lease_nonce())
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
        sqlx::query_scalar(
            "SELECT MIN(wake_at) FROM runs \
             WHERE status IN ('pending', 'running', 'waiting') AND wake_at IS NOT NULL",
        )
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
                Ok(handle) => {
                    handle.spawn(listen(
                        self.pool.clone(),
                        self.notices.clone(),
                        self.listening.clone(),
                    ));
                }
                Err(_) => {
                    self.listening.store(false, Ordering::SeqCst);
                    return None;
                }
            }
        }
        Some((rx, true))
    }

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

// ----- API tokens -----------------------------------------------------------------------------

/// The `tokens` table, created if missing (idempotent, outside the numbered migrations so that it
/// never collides with them).
async fn migrate_tokens(conn: &mut PgConnection) -> Result<()> {
    // Under the migration lock: two `CREATE TABLE IF NOT EXISTS` racing can still collide in
    // PostgreSQL's catalog.
    let err = |e: sqlx::Error| unavailable(STORE, "migrate tokens", e);
    let mut tx = conn.begin().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS tokens (\
         id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, \
         hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL, revoked_at BIGINT)",
    )
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

const TOKEN_COLUMNS: &str = "id, name, role, hash, created_at, revoked_at";

fn token_from_row(row: &PgRow) -> Result<super::StoredToken> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("postgres tokens row: {e}"));
    Ok(super::StoredToken {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        role: row.try_get("role").map_err(get)?,
        hash: row.try_get("hash").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
    })
}

impl PostgresStore {
    async fn put_token_row(&self, t: &super::StoredToken) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "put_token", e))?;
        Ok(())
    }

    async fn token_row_by_hash(&self, hash: &str) -> Result<Option<super::StoredToken>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "token_by_hash", e))?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn token_rows(&self) -> Result<Vec<super::StoredToken>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "list_tokens", e))?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token_row(&self, id: &str, at: i64) -> Result<Option<super::StoredToken>> {
        let row = sqlx::query(&format!(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(at)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "revoke_token", e))?;
        row.as_ref().map(token_from_row).transpose()
    }
}

// ----- projections ----------------------------------------------------------------------------

/// The `projection_checkpoints` table, created if missing under the migration lock (like
/// `tokens`).
async fn migrate_projections(conn: &mut PgConnection) -> Result<()> {
    let err = |e: sqlx::Error| unavailable(STORE, "migrate projections", e);
    let mut tx = conn.begin().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS projection_checkpoints (\
         projection TEXT PRIMARY KEY, position BIGINT NOT NULL CHECK (position >= 0), \
         updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

impl PostgresStore {
    async fn checkpoint_row(&self, projection: &str) -> Result<Option<u64>> {
        let pos: Option<i64> =
            sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE projection = $1")
                .bind(projection)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| unavailable(STORE, "projection_checkpoint", e))?;
        pos.map(|p| to_u64(p, "position")).transpose()
    }

    async fn put_checkpoint_row(&self, projection: &str, position: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, position, updated_at) \
             VALUES ($1, $2, now()) \
             ON CONFLICT (projection) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .bind(projection)
        .bind(to_i64(position))
        .execute(&self.pool)
        .await
        .map_err(|e| unavailable(STORE, "put_projection_checkpoint", e))?;
        Ok(())
    }

    /// Check and write in one transaction holding [`APPEND_LOCK`]: appends (which upsert `runs`
    /// under the same lock) cannot commit between reading the run's last sequence and writing
    /// its row, and every append that committed before is visible to the check.
    async fn rebuild_run_row(&self, s: &RunSummary, last_sequence: u64) -> Result<bool> {
        let err = |e: sqlx::Error| unavailable(STORE, "rebuild_run_summary", e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let head: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(super::RUN_AGGREGATE)
        .bind(&s.run_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        if head.unwrap_or(0) != to_i64(last_sequence) {
            return Ok(false);
        }
        // A rebuilt row also files the run for workers (`wake_at`), releasing it if it needs no
        // worker now: this is how a worker that claimed a run with nothing to do gives it back.
        sqlx::query(&format!(
            "INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11) ON CONFLICT (run_id) DO UPDATE SET namespace = excluded.namespace, \
             name = excluded.name, version = excluded.version, status = excluded.status, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, \
             next_timer_at = excluded.next_timer_at, wake_at = excluded.wake_at, \
             correlation_id = excluded.correlation_id, parent_run_id = excluded.parent_run_id, \
             attempts = 0, owner = CASE WHEN excluded.wake_at IS NULL OR excluded.wake_at > excluded.updated_at \
                          THEN NULL ELSE runs.owner END"
        ))
        .bind(&s.run_id)
        .bind(&s.namespace)
        .bind(&s.name)
        .bind(&s.version)
        .bind(&s.status)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.next_timer_at)
        .bind(s.wake_at)
        .bind(&s.correlation_id)
        .bind(&s.parent_run_id)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if !s.runnable() && s.wake_at.is_some() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WORK_CHANNEL)
                .bind(&s.run_id)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(true)
    }

    async fn head_row(&self) -> Result<u64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unavailable(STORE, "head_position", e))?;
        to_u64(head.unwrap_or(0), "position")
    }
}

// ----- runs list order ------------------------------------------------------------------------

/// Indexes of the runs list's keyset pages (`query_runs`): `(created_at, run_id)` and
/// `(updated_at, run_id)`, each read forwards or backwards; created if missing under the
/// migration lock (like `tokens`).
async fn migrate_run_order(conn: &mut PgConnection) -> Result<()> {
    let err = |e: sqlx::Error| unavailable(STORE, "migrate runs order", e);
    let mut tx = conn.begin().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    sqlx::raw_sql(
        "CREATE INDEX IF NOT EXISTS runs_created_id ON runs (created_at, run_id);\
         CREATE INDEX IF NOT EXISTS runs_updated_id ON runs (updated_at, run_id);",
    )
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// The column arrays of planned event rows, in table order, for an `UNNEST` insert. The append
/// function and the explicit-transaction fallback bind the same arrays.
type EventColumns<'a> = (
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<i64>,
    Vec<&'a str>,
    Vec<&'a str>,
    Vec<&'a Value>,
    Vec<&'a Value>,
);

fn event_columns<'a>(rows: &[plan::Row<'a>]) -> EventColumns<'a> {
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
struct SummaryColumns<'a> {
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

fn summary_columns<'a>(s: &[(&'a RunSummary, &'a super::Lease)]) -> SummaryColumns<'a> {
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

// ----- snapshots ------------------------------------------------------------------------------

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
