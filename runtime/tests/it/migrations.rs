//! Stores written by the builds before the numbered `.sql` migration files open and migrate
//! with this one: nothing re-run, nothing skipped, the same schema as a new store's, and the
//! data still there. The old migrations are kept here verbatim (the `MIGRATIONS` arrays and the
//! statements every open ran outside them, as `sqlite.rs` and `postgres.rs` had them), so this
//! test keeps describing what is in the field however the store's own files change.

use std::collections::BTreeSet;

use cairn_runtime::store::postgres::PostgresStore;
use cairn_runtime::store::sqlite::SqliteStore;
use cairn_runtime::store::{EventLog, RunIndex, DEFINITION_AGGREGATE, RUN_AGGREGATE};
use sqlx::{Connection as _, Row as _};

use crate::common::{postgres_admin_url, with_database};

/// The statements every open of an old SQLite store ran after the numbered migrations
/// (`migrate_tokens`, `migrate_projections`, `migrate_run_order`).
const OLD_SQLITE_AT_EVERY_OPEN: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tokens (\
     id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, \
     hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked_at INTEGER)",
    "CREATE TABLE IF NOT EXISTS projection_checkpoints (\
     projection TEXT PRIMARY KEY, position INTEGER NOT NULL CHECK (position >= 0), \
     updated_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS runs_created_id ON runs (created_at, run_id);\
     CREATE INDEX IF NOT EXISTS runs_updated_id ON runs (updated_at, run_id);",
];

/// The same for PostgreSQL (each ran in a transaction of its own under the migration lock).
const OLD_POSTGRES_AT_EVERY_OPEN: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tokens (\
     id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, \
     hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL, revoked_at BIGINT)",
    "CREATE TABLE IF NOT EXISTS projection_checkpoints (\
     projection TEXT PRIMARY KEY, position BIGINT NOT NULL CHECK (position >= 0), \
     updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS runs_created_id ON runs (created_at, run_id);\
     CREATE INDEX IF NOT EXISTS runs_updated_id ON runs (updated_at, run_id);",
];

/// Rows an old build could have written: a run's first event with its `runs` row, a token and
/// a projection checkpoint (the same statements on both databases but for the placeholders).
const OLD_ROWS: &[&str] = &[
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
     payload, metadata) VALUES ('run', 'old-run', 1, 'RunStarted', '1', '{\"n\":1}', '{}')",
    "INSERT INTO runs (run_id, namespace, name, version, status, created_at, updated_at, \
     wake_at) VALUES ('old-run', 'default', 'wf', '1.0.0', 'waiting', 1000, 1000, NULL)",
    "INSERT INTO tokens (id, name, role, hash, created_at) \
     VALUES ('tok_old', 'ci', 'viewer', 'ab', 1000)",
    "INSERT INTO projection_checkpoints (projection, position, updated_at) \
     VALUES ('runs', 1, 1000)",
];

/// Definitions an old build deployed (`deployed` 1) or only ran (0), in the order it recorded
/// them; `{seq}` is filled in on SQLite, where `seq` has no default. `1.0.0` was deployed twice
/// with other content (old builds let it be, the newer content won).
const OLD_DEFINITIONS: &[(&str, &str, &str, i64)] = &[
    ("h1", "wf", "1.0.0", 1),
    ("h2", "wf", "1.10.0", 1),
    ("h3", "wf", "1.9.0", 1),
    ("h4", "wf", "1.0.0", 1),
    ("h5", "wf", "2.0.0", 0),
    ("h6", "other", "0.1.0", 1),
];

fn old_definition_rows(with_seq: bool) -> Vec<String> {
    OLD_DEFINITIONS
        .iter()
        .enumerate()
        .map(|(i, (hash, name, version, deployed))| {
            let deployed = if with_seq {
                deployed.to_string()
            } else if *deployed == 1 {
                "TRUE".into()
            } else {
                "FALSE".into()
            };
            if with_seq {
                format!(
                    "INSERT INTO definitions (hash, namespace, name, version, source, seq, deployed) \
                     VALUES ('{hash}', 'default', '{name}', '{version}', '{{}}', {}, {deployed})",
                    i + 1
                )
            } else {
                format!(
                    "INSERT INTO definitions (hash, namespace, name, version, source, deployed) \
                     VALUES ('{hash}', 'default', '{name}', '{version}', '{{}}', {deployed})"
                )
            }
        })
        .collect()
}

/// The deployed rows became streams: every deployed row a `VersionPublished`, then the head on
/// the highest version, as `latest` gave it; what was only run is not published.
async fn assert_definitions_migrated(store: &dyn EventLog) {
    let wf = store
        .load(DEFINITION_AGGREGATE, "default/wf", 0)
        .await
        .expect("load");
    let seen: Vec<(String, String)> = wf
        .iter()
        .map(|e| {
            (
                e.event_type.clone(),
                e.payload["label"]
                    .as_str()
                    .or(e.payload["to"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("VersionPublished", "1.0.0"),
        ("VersionPublished", "1.10.0"),
        ("VersionPublished", "1.9.0"),
        ("VersionPublished", "1.0.0"),
        ("HeadMoved", "1.10.0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, expected);
    assert_eq!(wf[3].payload["hash"], serde_json::json!("h4"));
    assert_eq!(wf[0].payload["by"], serde_json::json!("migration"));
    let other = store
        .load(DEFINITION_AGGREGATE, "default/other", 0)
        .await
        .expect("load");
    assert_eq!(other.len(), 2);
}

#[tokio::test]
async fn an_old_sqlite_store_opens_and_migrates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old.db");
    let old = old.to_str().expect("utf-8 temp path").to_string();
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&old)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .expect("create old store");
        // The old `migrate`: all pending migrations in one transaction, each recorded.
        let mut tx = conn.begin().await.expect("begin");
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, \
             applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .expect("schema_version");
        for (version, sql) in OLD_SQLITE {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .expect("old migration");
            sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .expect("record");
        }
        tx.commit().await.expect("commit");
        for sql in OLD_SQLITE_AT_EVERY_OPEN.iter().chain(OLD_ROWS) {
            sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
        }
        for sql in old_definition_rows(true) {
            sqlx::raw_sql(&sql)
                .execute(&mut conn)
                .await
                .expect("definition row");
        }
        conn.close().await.expect("close");
    }

    // A read-only command of this build reads an old store as it is (it writes no migration).
    let ro = SqliteStore::open_read_only(&old)
        .await
        .expect("read-only open");
    assert_eq!(
        ro.get_run("old-run").await.expect("run").map(|r| r.status),
        Some("waiting".into())
    );
    ro.close().await;

    let store = SqliteStore::open(&old).await.expect("open old store");
    assert_eq!(sqlite_versions(&store).await, vec![1, 2, 3, 4, 5, 6]);
    assert_definitions_migrated(&store).await;
    let events = store.load(RUN_AGGREGATE, "old-run", 0).await.expect("load");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload, serde_json::json!({ "n": 1 }));
    assert_eq!(
        store
            .projection_checkpoint("runs")
            .await
            .expect("checkpoint"),
        Some(1)
    );
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(store.read_pool())
        .await
        .expect("tokens");
    assert_eq!(tokens, 1);
    let upgraded = sqlite_schema(&store).await;
    store.close().await;

    // Opening again changes nothing.
    let store = SqliteStore::open(&old).await.expect("open again");
    assert_eq!(sqlite_versions(&store).await, vec![1, 2, 3, 4, 5, 6]);
    assert_definitions_migrated(&store).await;
    store.close().await;

    let fresh = dir.path().join("fresh.db");
    let fresh = SqliteStore::open(fresh.to_str().expect("utf-8"))
        .await
        .expect("fresh store");
    assert_eq!(
        sqlite_schema(&fresh).await,
        upgraded,
        "same schema as a new store"
    );
    fresh.close().await;
}

async fn sqlite_versions(store: &SqliteStore) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
        .fetch_all(store.read_pool())
        .await
        .expect("versions")
}

/// Every table and index with its columns (name, type, not null, default, key).
async fn sqlite_schema(store: &SqliteStore) -> BTreeSet<String> {
    let objects = sqlx::query(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(store.read_pool())
    .await
    .expect("objects");
    let mut out = BTreeSet::new();
    for o in objects {
        let (kind, name): (String, String) = (o.get("type"), o.get("name"));
        let pragma = if kind == "table" {
            "table_xinfo"
        } else {
            "index_xinfo"
        };
        let cols = sqlx::query(&format!("SELECT * FROM pragma_{pragma}('{name}')"))
            .fetch_all(store.read_pool())
            .await
            .expect("columns");
        for c in cols {
            let parts: Vec<String> = (0..c.len())
                .map(|i| {
                    c.try_get::<Option<String>, _>(i)
                        .ok()
                        .flatten()
                        .or_else(|| {
                            c.try_get::<Option<i64>, _>(i)
                                .ok()
                                .flatten()
                                .map(|v| v.to_string())
                        })
                        .unwrap_or_default()
                })
                .collect();
            out.insert(format!("{kind} {name}: {}", parts.join("|")));
        }
        out.insert(format!("{kind} {name}"));
    }
    out
}

#[tokio::test]
async fn an_old_postgres_database_opens_and_migrates() {
    let admin_url = postgres_admin_url();
    let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "no PostgreSQL for the migration test"
        );
        eprintln!("SKIPPED an_old_postgres_database_opens_and_migrates: no PostgreSQL");
        return;
    };
    let old_db = format!("cairn_test_{}", uuid::Uuid::new_v4().simple());
    let fresh_db = format!("cairn_test_{}", uuid::Uuid::new_v4().simple());
    for db in [&old_db, &fresh_db] {
        sqlx::raw_sql(&format!("CREATE DATABASE \"{db}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
    }
    let old_url = with_database(&admin_url, &old_db);
    {
        let mut conn = sqlx::PgConnection::connect(&old_url)
            .await
            .expect("connect");
        let mut tx = conn.begin().await.expect("begin");
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&mut *tx)
        .await
        .expect("schema_version");
        for (version, sql) in OLD_POSTGRES {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .expect("old migration");
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .expect("record");
        }
        tx.commit().await.expect("commit");
        for sql in OLD_POSTGRES_AT_EVERY_OPEN {
            sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
        }
        for sql in OLD_ROWS {
            // `projection_checkpoints.updated_at` is a timestamp here.
            let sql = sql.replace("VALUES ('runs', 1, 1000)", "VALUES ('runs', 1, now())");
            sqlx::raw_sql(&sql)
                .execute(&mut conn)
                .await
                .expect("old rows");
        }
        for sql in old_definition_rows(false) {
            sqlx::raw_sql(&sql)
                .execute(&mut conn)
                .await
                .expect("definition row");
        }
        conn.close().await.expect("close");
    }

    let store = PostgresStore::connect(&old_url)
        .await
        .expect("connect old database");
    assert_eq!(pg_versions(&store).await, vec![1, 2, 3, 4, 5, 6, 7]);
    assert_definitions_migrated(&store).await;
    let events = store.load(RUN_AGGREGATE, "old-run", 0).await.expect("load");
    assert_eq!(events.len(), 1);
    assert_eq!(
        store
            .projection_checkpoint("runs")
            .await
            .expect("checkpoint"),
        Some(1)
    );
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(store.pool())
        .await
        .expect("tokens");
    assert_eq!(tokens, 1);
    let upgraded = pg_schema(&store).await;
    store.close().await;
    let store = PostgresStore::connect(&old_url)
        .await
        .expect("connect again");
    assert_eq!(pg_versions(&store).await, vec![1, 2, 3, 4, 5, 6, 7]);
    assert_definitions_migrated(&store).await;
    store.close().await;

    let fresh = PostgresStore::connect(&with_database(&admin_url, &fresh_db))
        .await
        .expect("fresh database");
    assert_eq!(
        pg_schema(&fresh).await,
        upgraded,
        "same schema as a new database"
    );
    fresh.close().await;
    for db in [&old_db, &fresh_db] {
        sqlx::raw_sql(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("drop test database");
    }
}

async fn pg_versions(store: &PostgresStore) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
        .fetch_all(store.pool())
        .await
        .expect("versions")
}

/// Columns, indexes (with their definitions) and functions of the `public` schema.
async fn pg_schema(store: &PostgresStore) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let cols = sqlx::query(
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable \
         || ' ' || COALESCE(column_default, '') AS c \
         FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .fetch_all(store.pool())
    .await
    .expect("columns");
    out.extend(
        cols.iter()
            .map(|r| format!("column {}", r.get::<String, _>("c"))),
    );
    let idx = sqlx::query("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")
        .fetch_all(store.pool())
        .await
        .expect("indexes");
    out.extend(
        idx.iter()
            .map(|r| format!("index {}", r.get::<String, _>("indexdef"))),
    );
    let fns = sqlx::query(
        "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS f \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'public'",
    )
    .fetch_all(store.pool())
    .await
    .expect("functions");
    out.extend(
        fns.iter()
            .map(|r| format!("function {}", r.get::<String, _>("f"))),
    );
    out
}

// ----- the old migrations, verbatim -------------------------------------------------------------

/// `MIGRATIONS` of the old `runtime/src/store/sqlite.rs`.
const OLD_SQLITE: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    sequence       INTEGER NOT NULL CHECK (sequence >= 1),
    event_type     TEXT    NOT NULL,
    event_version  TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE TABLE snapshots (
    aggregate_type   TEXT    NOT NULL,
    aggregate_id     TEXT    NOT NULL,
    last_sequence    INTEGER NOT NULL CHECK (last_sequence >= 0),
    current_snapshot INTEGER NOT NULL CHECK (current_snapshot >= 0),
    payload          TEXT    NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;

CREATE TABLE runs (
    run_id        TEXT    PRIMARY KEY,
    namespace     TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    next_timer_at INTEGER
) STRICT;
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_next_timer ON runs (next_timer_at) WHERE next_timer_at IS NOT NULL;

CREATE TABLE definitions (
    hash      TEXT NOT NULL PRIMARY KEY,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    version   TEXT NOT NULL,
    source    TEXT NOT NULL,
    seq       INTEGER NOT NULL
) STRICT;
CREATE INDEX definitions_nnv ON definitions (namespace, name, version);
"#,
    ),
    (
        2,
        // Distribution (see `super::Lease`): when each run next needs a worker, who holds it,
        // and the workers' leases; plus the correlation id and parent of a run. Runs that were
        // open before this migration are made runnable, so a worker looks at each once and
        // files it properly.
        r#"
ALTER TABLE runs ADD COLUMN wake_at INTEGER;
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN correlation_id TEXT;
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
UPDATE runs SET wake_at = updated_at WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX runs_claimable ON runs (wake_at) WHERE owner IS NULL AND wake_at IS NOT NULL;
CREATE INDEX runs_owner ON runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_correlation ON runs (correlation_id, created_at)
    WHERE correlation_id IS NOT NULL;
CREATE TABLE workers (
    name        TEXT    PRIMARY KEY,
    generation  INTEGER NOT NULL,
    lease_id    TEXT    NOT NULL UNIQUE,
    lease_until INTEGER NOT NULL,
    started_at  INTEGER NOT NULL
) STRICT;
"#,
    ),
    (
        3,
        // The runs list of one definition without walking every other definition's runs; and
        // two indexes no query reads, which every append paid for.
        "CREATE INDEX runs_definition_created ON runs (namespace, name, created_at, run_id);
         DROP INDEX IF EXISTS runs_created;
         DROP INDEX IF EXISTS runs_next_timer;",
    ),
    (
        4,
        // Definitions recorded only to run them (`startRun(source:)`, `cairn start FILE`) are
        // not deployed: `latest`, version lookups and the list ignore them. Every definition
        // recorded before this migration was reachable as deployed, and stays so.
        "ALTER TABLE definitions ADD COLUMN deployed INTEGER NOT NULL DEFAULT 1;",
    ),
    (
        5,
        // Claims of a run since it last changed (see `super::Claim::attempts`), so that a run
        // that kills every worker claiming it is faulted instead of claimed for ever;
        // `attempt_mark` is the run's `updated_at` at the last claim.
        "ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE runs ADD COLUMN attempt_mark INTEGER;",
    ),
];

/// `MIGRATIONS` of the old `runtime/src/store/postgres.rs`.
const OLD_POSTGRES: &[(i64, &str)] = &[
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
