//! `EXPLAIN` of every hot query of the PostgreSQL store, on a database filled through the store's
//! own `append` (120,000 events over 20,000 runs in every status, claimed runs, live and dead
//! workers, definitions, tokens, snapshots) and then `ANALYZE`d.
//!
//! The SQL below is a copy of what `runtime/src/store/postgres/` (and, for tokens, the api's
//! `server/tokens/store.rs`) sends; each case names the function it mirrors, so a change there must be copied here (the table in
//! `docs/operations.md#indexes-and-the-hot-queries` lists the same queries with the index each
//! uses). Each query is explained twice:
//!
//! - as sent (a custom plan for the bound values), with the planner's default settings: no
//!   plan may contain a `Seq Scan` of `events` or `runs`, the two tables that grow with the
//!   workload;
//! - as a generic plan (`PREPARE` + `plan_cache_mode = force_generic_plan`: the plan PostgreSQL
//!   may switch a statement that sqlx keeps prepared to after its fifth execution) with
//!   `enable_seqscan = off`: a `Seq Scan` that survives this has no index to use at all, on any
//!   table. The small tables (`workers`, `definitions`, `tokens`) are sequentially scanned by
//!   the planner on purpose while they fit in a page or two; this pass proves that an index
//!   exists for when they do not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use cairn_runtime::store::{
    AppendRequest, Database, EventStore, Lease, RunSummary, StoredDefinition,
};
use serde_json::{json, Value};
use sqlx::{Connection as _, PgConnection};

use crate::common::event;

/// Queries (by name prefix) that scan `runs` because no index serves them, with the index that
/// would (checked: with it, every one of these plans uses it); listed in `docs/operations.md`.
/// They are reported, not failed, until the index exists; when none of a prefix's plans scans
/// any more, the test fails so that its entry is removed and the check becomes strict again.
const MISSING_INDEX: &[(&str, &str)] = &[];

/// `(query, relation)` whose generic plan may scan: `release_expired` reads every live lease
/// (`lease_until > now`), i.e. the whole `workers` table, one row per worker name.
const SCANS_ALLOWED: &[(&str, &str)] = &[("release_expired", "workers")];

// 20,000 runs, not 2,000: a `runs` table of 2,000 rows is 40 pages, and the planner rightly
// reads it whole for a join or a 5% filter; what must hold is the plan of a table that matters.
const RUNS: usize = 20_000;
const EVENTS_PER_RUN: u64 = 6;
const BATCH: usize = 250;
const BASE: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

// Copies of `EVENT_COLUMNS`, `RUN_COLUMNS` of `store/postgres/` and `TOKEN_COLUMNS` of the
// api's `server/tokens/store.rs`.
const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata";
const RUN_COLUMNS: &str = "run_id, namespace, name, version, status, created_at, updated_at, \
                           next_timer_at, wake_at, correlation_id, parent_run_id";
const TOKEN_COLUMNS: &str = "id, name, role, hash, created_at, revoked_at";
/// Copy of `DB_NOW` of `store/postgres/`.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// A bound parameter, typed as sqlx types the Rust value.
#[derive(Clone, Debug)]
enum P {
    Text(String),
    Int(i64),
    NullInt,
    Texts(Vec<String>),
    NullTexts,
}

impl P {
    fn text(s: impl Into<String>) -> P {
        P::Text(s.into())
    }

    fn texts(v: &[&str]) -> P {
        P::Texts(v.iter().map(|s| s.to_string()).collect())
    }

    fn pg_type(&self) -> &'static str {
        match self {
            P::Text(_) => "text",
            P::Int(_) | P::NullInt => "bigint",
            P::Texts(_) | P::NullTexts => "text[]",
        }
    }

    fn literal(&self) -> String {
        fn quote(s: &str) -> String {
            format!("'{}'", s.replace('\'', "''"))
        }
        match self {
            P::Text(s) => quote(s),
            P::Int(i) => i.to_string(),
            P::NullInt => "NULL::bigint".into(),
            P::Texts(v) => format!(
                "ARRAY[{}]::text[]",
                v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
            ),
            P::NullTexts => "NULL::text[]".into(),
        }
    }
}

/// One query to explain: where the code issues it, the SQL as sent, and bound values.
struct Case {
    name: String,
    issued_by: &'static str,
    sql: String,
    params: Vec<P>,
}

fn case(name: impl Into<String>, issued_by: &'static str, sql: impl Into<String>) -> Case {
    Case {
        name: name.into(),
        issued_by,
        sql: sql.into(),
        params: Vec::new(),
    }
}

impl Case {
    fn with(mut self, params: Vec<P>) -> Case {
        self.params = params;
        self
    }
}

/// A scan node of a plan: its type, relation and index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Scan {
    node: String,
    relation: Option<String>,
    index: Option<String>,
}

/// Every node of an `EXPLAIN (FORMAT JSON)` plan that reads a relation (init plans and
/// subplans included: they are children under `Plans`).
fn scans(plan: &Value, out: &mut Vec<Scan>) {
    let node = plan["Node Type"].as_str().unwrap_or_default().to_string();
    let relation = plan["Relation Name"].as_str().map(str::to_string);
    let index = plan["Index Name"].as_str().map(str::to_string);
    if relation.is_some() || index.is_some() {
        out.push(Scan {
            node,
            relation,
            index,
        });
    }
    if let Some(children) = plan["Plans"].as_array() {
        for c in children {
            scans(c, out);
        }
    }
}

fn root(explained: &Value) -> &Value {
    &explained[0]["Plan"]
}

/// The custom plan of `case` as the code sends it (bound parameters).
async fn explain_custom(conn: &mut PgConnection, case: &Case) -> Value {
    let sql = format!("EXPLAIN (FORMAT JSON) {}", case.sql);
    let mut q = sqlx::query_scalar::<_, Value>(&sql);
    for p in &case.params {
        q = match p {
            P::Text(s) => q.bind(s.clone()),
            P::Int(i) => q.bind(*i),
            P::NullInt => q.bind(None::<i64>),
            P::Texts(v) => q.bind(v.clone()),
            P::NullTexts => q.bind(None::<Vec<String>>),
        };
    }
    q.fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("explain {}: {e}\n{}", case.name, case.sql))
}

/// The generic plan of `case` (what a statement kept prepared ends up with), sequential scans
/// disabled.
async fn explain_generic(conn: &mut PgConnection, case: &Case) -> Value {
    let types: Vec<&str> = case.params.iter().map(P::pg_type).collect();
    let prepare = if types.is_empty() {
        format!("PREPARE cairn_explain AS {}", case.sql)
    } else {
        format!(
            "PREPARE cairn_explain ({}) AS {}",
            types.join(", "),
            case.sql
        )
    };
    sqlx::raw_sql(&prepare)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("prepare {}: {e}\n{}", case.name, case.sql));
    let args: Vec<String> = case.params.iter().map(P::literal).collect();
    let execute = if args.is_empty() {
        "EXPLAIN (FORMAT JSON) EXECUTE cairn_explain".to_string()
    } else {
        format!(
            "EXPLAIN (FORMAT JSON) EXECUTE cairn_explain ({})",
            args.join(", ")
        )
    };
    let plan = sqlx::query_scalar::<_, Value>(&execute)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("explain generic {}: {e}", case.name));
    sqlx::raw_sql("DEALLOCATE cairn_explain")
        .execute(&mut *conn)
        .await
        .expect("deallocate");
    plan
}

/// The status mix of run `i`: `(status, wake_at relative to updated_at)`, where `Some(0)` is
/// runnable now and `Some(d > 0)` waits for a timer.
fn shape(i: usize) -> (&'static str, Option<i64>) {
    match i % 100 {
        0..=84 => ("completed", None),
        85..=88 => ("faulted", None),
        89..=90 => ("cancelled", None),
        91..=93 => ("waiting", Some(24 * 60 * MINUTE)),
        94..=95 => ("waiting", None),
        96 => ("suspended", None),
        _ => ("running", Some(0)),
    }
}

fn run_id(i: usize) -> String {
    format!("run-{i:05}")
}

fn run_summary(i: usize, round: u64) -> RunSummary {
    let created_at = BASE + i as i64 * MINUTE;
    let (status, wake) = if round == 0 {
        ("running", Some(0))
    } else {
        shape(i)
    };
    let updated_at = created_at + 5_000 + round as i64 * 25_000;
    let namespaces = ["default", "billing", "shipping", "ops"];
    RunSummary {
        run_id: run_id(i),
        namespace: namespaces[i % 4].to_string(),
        name: if i % 97 == 0 {
            "rare".to_string()
        } else {
            format!("wf{}", i % 10)
        },
        version: "1.0.0".to_string(),
        status: status.to_string(),
        created_at,
        updated_at,
        next_timer_at: wake.filter(|d| *d > 0).map(|d| updated_at + d),
        wake_at: wake.map(|d| updated_at + d),
        correlation_id: (i % 5 == 0).then(|| format!("order-{}", i / 5)),
        parent_run_id: (i % 50 == 1).then(|| run_id(i - 1)),
    }
}

/// Fills the store through its own API: every run gets its events in two appends (the start,
/// then the rest), each carrying its `runs` row, 100 runs per transaction like group commit.
async fn fill(store: &dyn EventStore) {
    let half = EVENTS_PER_RUN / 2;
    for round in 0..2u64 {
        for chunk in (0..RUNS).collect::<Vec<_>>().chunks(BATCH) {
            let requests: Vec<AppendRequest> = chunk
                .iter()
                .map(|&i| AppendRequest {
                    aggregate_type: "run".to_string(),
                    stream: run_id(i),
                    expected_sequence: round * half,
                    events: (1..=half)
                        .map(|n| {
                            event(
                                if round == 0 && n == 1 {
                                    "RunStarted"
                                } else {
                                    "TaskCompleted"
                                },
                                round * half + n,
                            )
                        })
                        .collect(),
                    run_summary: Some(run_summary(i, round)),
                    lease: Lease::External,
                })
                .collect();
            store.append(requests).await.expect("fill: append");
        }
    }
    for d in 0..300 {
        store
            .put_definition(&StoredDefinition {
                namespace: ["default", "billing", "shipping", "ops"][d % 4].to_string(),
                name: format!("wf{}", d % 10),
                version: format!("1.{}.0", d / 40),
                hash: format!("{d:064x}"),
                source: json!({ "document": { "dsl": "1.0.3", "n": d } }),
                deployed: true,
            })
            .await
            .expect("fill: definition");
    }
    // Tokens are the api's table (`api/src/server/tokens/store.rs`), beside the store's but
    // not behind its API: written here as its `put_token` writes them.
    let pool = match store.database() {
        Some(Database::Postgres(pg)) => pg.pool().clone(),
        _ => panic!("fill: a PostgreSQL store"),
    };
    for t in 0..1_000i64 {
        sqlx::query(&format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(format!("tok_{t:06}"))
        .bind(format!("token {t}"))
        .bind("viewer")
        .bind(format!("{:064x}", t * 7919))
        .bind(BASE + t)
        .bind(None::<i64>)
        .execute(&pool)
        .await
        .expect("fill: token");
    }
    for i in (0..RUNS).step_by(10) {
        store
            .save_snapshot(
                "run",
                &run_id(i),
                half,
                json!({ "format": 1, "state": "{}" }),
            )
            .await
            .expect("fill: snapshot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hot_query_uses_an_index() {
    let Some(t) = crate::common::postgres().await else {
        return;
    };
    let store = t.store.as_ref();
    fill(store).await;

    // Workers: one live one holding runs, one whose lease has expired still owning some, and
    // the rows that workers with default names leave behind when they are killed.
    let live = store.register_worker("live", 600_000).await.expect("live");
    // Alive while it claims (claims need a live lease); expired below.
    let dead = store.register_worker("dead", 600_000).await.expect("dead");
    for i in 0..50 {
        store
            .register_worker(&format!("gone-{i}"), 1)
            .await
            .expect("gone");
    }
    let now = BASE + RUNS as i64 * MINUTE;
    let held: Vec<String> = store
        .claim_runs(&live, now, 60, None)
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.run_id)
        .collect();
    assert_eq!(held.len(), 60);
    let orphaned = store.claim_runs(&dead, now, 40, None).await.expect("claim");
    assert_eq!(orphaned.len(), 40);

    let mut conn = PgConnection::connect(&t.url).await.expect("connect");
    sqlx::query("UPDATE workers SET lease_until = 0 WHERE lease_id = $1")
        .bind(&dead.lease_id)
        .execute(&mut conn)
        .await
        .expect("expire the dead worker's lease");
    sqlx::raw_sql("ANALYZE")
        .execute(&mut conn)
        .await
        .expect("analyze");
    let counts: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM runs)")
            .fetch_one(&mut conn)
            .await
            .expect("counts");
    assert_eq!(counts, (RUNS as i64 * EVENTS_PER_RUN as i64, RUNS as i64));

    let cases = cases(&live.lease_id, &held);
    let mut report = String::new();
    let mut failures = Vec::new();
    let mut gaps_seen = BTreeSet::new();
    for c in &cases {
        let custom = explain_custom(&mut conn, c).await;
        let mut custom_scans = Vec::new();
        scans(root(&custom), &mut custom_scans);

        sqlx::raw_sql("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
            .execute(&mut conn)
            .await
            .expect("set");
        let generic = explain_generic(&mut conn, c).await;
        sqlx::raw_sql("RESET plan_cache_mode; RESET enable_seqscan")
            .execute(&mut conn)
            .await
            .expect("reset");
        let mut generic_scans = Vec::new();
        scans(root(&generic), &mut generic_scans);

        let show = |s: &[Scan]| {
            s.iter()
                .map(|s| {
                    format!(
                        "{} {}{}",
                        s.node,
                        s.relation.as_deref().unwrap_or("-"),
                        s.index
                            .as_deref()
                            .map(|i| format!(" using {i}"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = writeln!(
            report,
            "{:<48} | {:<34} | {} || generic: {}",
            c.name,
            c.issued_by,
            show(&custom_scans),
            show(&generic_scans)
        );
        let known = MISSING_INDEX
            .iter()
            .find(|(prefix, _)| c.name.starts_with(prefix));
        if let Some((_, index)) = known {
            let scans_runs = custom_scans
                .iter()
                .any(|s| s.node == "Seq Scan" && s.relation.as_deref() == Some("runs"));
            if scans_runs {
                let _ = writeln!(report, "  KNOWN GAP, missing: {index}");
                gaps_seen.insert(*index);
            }
            continue;
        }
        for s in &custom_scans {
            let big = matches!(s.relation.as_deref(), Some("events" | "runs"));
            if s.node == "Seq Scan" && big {
                failures.push(format!(
                    "{} ({}): Seq Scan on {} in the plan as sent\n{}\n{}",
                    c.name,
                    c.issued_by,
                    s.relation.as_deref().unwrap_or("?"),
                    c.sql,
                    serde_json::to_string_pretty(&custom).unwrap_or_default()
                ));
            }
        }
        for s in &generic_scans {
            let allowed = SCANS_ALLOWED
                .iter()
                .any(|(q, r)| c.name == *q && s.relation.as_deref() == Some(*r));
            if s.node == "Seq Scan" && !allowed {
                failures.push(format!(
                    "{} ({}): no index for {} (Seq Scan in the generic plan with \
                     enable_seqscan = off)\n{}\n{}",
                    c.name,
                    c.issued_by,
                    s.relation.as_deref().unwrap_or("?"),
                    c.sql,
                    serde_json::to_string_pretty(&generic).unwrap_or_default()
                ));
            }
        }
    }
    for (prefix, index) in MISSING_INDEX {
        if !gaps_seen.contains(index) {
            failures.push(format!(
                "`{prefix}` is listed in MISSING_INDEX but none of its plans scans runs any \
                 more (was `{index}` added?): remove its entry"
            ));
        }
    }
    eprintln!("{report}");
    assert!(
        failures.is_empty(),
        "{} plan(s) scan a table without an index:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    let _ = conn.close().await;
}

/// The filters of `RunQuery` that callers set (GraphQL `runs`, `runsChanged`, `cairn list`).
#[derive(Default, Clone)]
struct Filter {
    statuses: Vec<&'static str>,
    namespace: Option<&'static str>,
    name: Option<&'static str>,
    created_from: Option<i64>,
    created_before: Option<i64>,
    correlation_id: Option<&'static str>,
}

/// Mirrors `PostgresStore::query_runs`: the same SQL text for the same filter, with its
/// parameters in the same order.
fn query_runs_sql(f: &Filter, key: &str, descending: bool, after: bool) -> (String, Vec<P>) {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
    let mut params = Vec::new();
    let next = |p: P, params: &mut Vec<P>| {
        params.push(p);
        format!("${}", params.len())
    };
    if !f.statuses.is_empty() {
        let binds: Vec<String> = f
            .statuses
            .iter()
            .map(|s| next(P::text(*s), &mut params))
            .collect();
        sql.push_str(&format!(" AND status IN ({})", binds.join(", ")));
    }
    if let Some(ns) = f.namespace {
        sql.push_str(&format!(
            " AND namespace = {}",
            next(P::text(ns), &mut params)
        ));
    }
    if let Some(name) = f.name {
        sql.push_str(&format!(" AND name = {}", next(P::text(name), &mut params)));
    }
    if let Some(t) = f.created_from {
        sql.push_str(&format!(
            " AND created_at >= {}",
            next(P::Int(t), &mut params)
        ));
    }
    if let Some(t) = f.created_before {
        sql.push_str(&format!(
            " AND created_at < {}",
            next(P::Int(t), &mut params)
        ));
    }
    if let Some(c) = f.correlation_id {
        sql.push_str(&format!(
            " AND correlation_id = {}",
            next(P::text(c), &mut params)
        ));
    }
    let (cmp, dir) = if descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if after {
        let at = next(P::Int(BASE + 1_000 * MINUTE), &mut params);
        let id = next(P::text(run_id(1_000)), &mut params);
        sql.push_str(&format!(" AND ({key}, run_id) {cmp} ({at}, {id})"));
    }
    let limit = next(P::Int(51), &mut params);
    sql.push_str(&format!(
        " ORDER BY {key} {dir}, run_id {dir} LIMIT {limit}"
    ));
    (sql, params)
}

fn cases(lease_id: &str, held: &[String]) -> Vec<Case> {
    let run = run_id(1_234);
    let mut v = vec![
        // ----- events ---------------------------------------------------------------------
        case(
            "load (whole stream)",
            "PostgresStore::load",
            format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND sequence > $3 ORDER BY sequence"
        ),
        )
        .with(vec![P::text("run"), P::text(&run), P::Int(0)]),
        case(
            "load (after a snapshot)",
            "PostgresStore::load",
            format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND sequence > $3 ORDER BY sequence"
        ),
        )
        .with(vec![P::text("run"), P::text(&run), P::Int(5)]),
        case(
            "read_all (from the start)",
            "PostgresStore::read_all",
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
            ),
        )
        .with(vec![P::Int(0), P::Int(10_000)]),
        case(
            "read_all (near the head)",
            "PostgresStore::read_all",
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
            ),
        )
        .with(vec![
            P::Int(RUNS as i64 * EVENTS_PER_RUN as i64 - 10),
            P::Int(1_000),
        ]),
        case(
            "head_position",
            "PostgresStore::head_row",
            "SELECT MAX(position) FROM events",
        ),
        // The heads check of `cairn_append_v3` (migration 3); `append_in_transaction` sends the
        // same subquery. PL/pgSQL plans it like a prepared statement (generic after five calls).
        case(
            "append: stream heads",
            "cairn_append_v3 / append_in_transaction",
            "SELECT COALESCE(array_agg(COALESCE((SELECT MAX(e.sequence) FROM events e \
               WHERE e.aggregate_type = k.t AND e.aggregate_id = k.id), 0) ORDER BY k.ord), '{}') \
             FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS k(t, id, ord)",
        )
        .with(vec![
            P::Texts(vec!["run".into(); 3]),
            P::Texts(vec![run_id(1), run_id(700), "run-new".into()]),
        ]),
        case(
            "rebuild_run_summary: stream head",
            "PostgresStore::rebuild_run_row",
            "SELECT MAX(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .with(vec![P::text("run"), P::text(&run)]),
        // ----- runs: appends and leases ----------------------------------------------------
        case(
            "append: lock fenced runs",
            "cairn_append_v3 / append_in_transaction",
            "SELECT 1 FROM runs WHERE run_id = ANY($1) ORDER BY run_id FOR UPDATE",
        )
        .with(vec![P::Texts(held[..3].to_vec())]),
        case(
            "append: lost fences",
            "cairn_append_v3 / append_in_transaction",
            "SELECT f.id FROM UNNEST($1::text[], $2::text[]) AS f(id, lease) \
             WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = f.id \
             AND r.owner = f.lease)",
        )
        .with(vec![
            P::Texts(held[..3].to_vec()),
            P::Texts(vec![lease_id.to_string(); 3]),
        ]),
        case(
            "claim_runs (worker)",
            "PostgresStore::claim_runs",
            "UPDATE runs r SET owner = $1 FROM (SELECT run_id FROM runs \
               WHERE owner IS NULL AND wake_at IS NOT NULL AND wake_at <= $2 \
                 AND ($4::text[] IS NULL OR run_id = ANY($4)) \
               ORDER BY wake_at LIMIT $3 FOR UPDATE SKIP LOCKED) c \
             WHERE r.run_id = c.run_id RETURNING r.run_id",
        )
        .with(vec![
            P::text(lease_id),
            P::Int(BASE + RUNS as i64 * MINUTE),
            P::Int(64),
            P::NullTexts,
        ]),
        case(
            "claim_runs (cairn run: own runs)",
            "PostgresStore::claim_runs",
            "UPDATE runs r SET owner = $1 FROM (SELECT run_id FROM runs \
               WHERE owner IS NULL AND wake_at IS NOT NULL AND wake_at <= $2 \
                 AND ($4::text[] IS NULL OR run_id = ANY($4)) \
               ORDER BY wake_at LIMIT $3 FOR UPDATE SKIP LOCKED) c \
             WHERE r.run_id = c.run_id RETURNING r.run_id",
        )
        .with(vec![
            P::text(lease_id),
            P::Int(BASE + RUNS as i64 * MINUTE),
            P::Int(64),
            P::texts(&["run-00097", "run-00098"]),
        ]),
        case(
            "next_wake",
            "PostgresStore::next_wake",
            "SELECT MIN(wake_at) FROM runs WHERE owner IS NULL AND wake_at IS NOT NULL",
        ),
        case(
            "release_expired",
            "PostgresStore::release_expired",
            format!(
                "UPDATE runs SET owner = NULL WHERE run_id IN (SELECT run_id FROM runs \
             WHERE owner IS NOT NULL AND owner NOT IN \
               (SELECT lease_id FROM workers WHERE lease_until > {DB_NOW}) \
             FOR UPDATE SKIP LOCKED)"
            ),
        ),
        case(
            "renew_worker",
            "PostgresStore::renew_worker",
            format!(
                "UPDATE workers SET lease_until = {DB_NOW} + $2 \
             WHERE lease_id = $1 AND lease_until > {DB_NOW}"
            ),
        )
        .with(vec![P::text(lease_id), P::Int(10_000)]),
        case(
            "register_worker: previous lease",
            "PostgresStore::register_worker",
            "SELECT lease_id FROM workers WHERE name = $1 FOR UPDATE",
        )
        .with(vec![P::text("live")]),
        case(
            "register_worker: release previous life",
            "PostgresStore::register_worker",
            "UPDATE runs SET owner = NULL WHERE run_id IN (SELECT run_id FROM runs \
             WHERE owner = $1 FOR UPDATE SKIP LOCKED)",
        )
        .with(vec![P::text(lease_id)]),
        case(
            "retire_worker: release",
            "PostgresStore::retire_worker",
            "UPDATE runs SET owner = NULL WHERE owner = $1",
        )
        .with(vec![P::text(lease_id)]),
        case(
            "retire_worker: delete",
            "PostgresStore::retire_worker",
            "DELETE FROM workers WHERE lease_id = $1",
        )
        .with(vec![P::text(lease_id)]),
        // ----- runs: reads ------------------------------------------------------------------
        case(
            "get_run",
            "PostgresStore::get_run",
            format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"),
        )
        .with(vec![P::text(&run)]),
        case(
            "list_runs (unfinished)",
            "PostgresStore::list_runs",
            format!(
                "SELECT {RUN_COLUMNS} FROM runs \
             WHERE cardinality($1::text[]) = 0 OR status = ANY($1) \
             ORDER BY created_at DESC, run_id DESC LIMIT $2"
            ),
        )
        .with(vec![
            P::texts(&["pending", "running", "waiting", "suspended"]),
            P::NullInt,
        ]),
        // ----- definitions, tokens, snapshots ------------------------------------------------
        case(
            "definition_by_hash",
            "PostgresStore::definition_by_hash",
            "SELECT hash, namespace, name, version, source FROM definitions WHERE hash = $1",
        )
        .with(vec![P::Text(format!("{:064x}", 42))]),
        case(
            "definition_events",
            "PostgresStore::definition_events",
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata FROM events WHERE aggregate_type = $1 \
             ORDER BY aggregate_id, sequence",
        )
        .with(vec![P::text("definition")]),
        case(
            "token_by_hash",
            "TokenStore for PostgresStore::token_by_hash (api)",
            format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
        )
        .with(vec![P::Text(format!("{:064x}", 500 * 7919))]),
        case(
            "load_snapshot",
            "PostgresStore::snapshot_row",
            "SELECT last_sequence, payload FROM snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY last_sequence DESC LIMIT 1",
        )
        .with(vec![P::text("run"), P::text(run_id(1_230))]),
    ];

    // query_runs: every filter a caller sets, in every sort order, first page and next page.
    let filters: Vec<(&str, Filter)> = vec![
        ("no filter", Filter::default()),
        (
            "status",
            Filter {
                statuses: vec!["running"],
                ..Filter::default()
            },
        ),
        (
            "statuses",
            Filter {
                statuses: vec!["waiting", "suspended"],
                ..Filter::default()
            },
        ),
        (
            "definition",
            Filter {
                namespace: Some("billing"),
                name: Some("wf1"),
                ..Filter::default()
            },
        ),
        (
            "rare definition",
            Filter {
                namespace: Some("ops"),
                name: Some("rare"),
                ..Filter::default()
            },
        ),
        (
            "namespace",
            Filter {
                namespace: Some("ops"),
                ..Filter::default()
            },
        ),
        (
            "created window",
            Filter {
                created_from: Some(BASE + 100 * MINUTE),
                created_before: Some(BASE + 300 * MINUTE),
                ..Filter::default()
            },
        ),
        (
            "correlation_id",
            Filter {
                correlation_id: Some("order-42"),
                ..Filter::default()
            },
        ),
        (
            "status + correlation_id",
            Filter {
                statuses: vec!["completed"],
                correlation_id: Some("order-42"),
                ..Filter::default()
            },
        ),
    ];
    for (label, f) in &filters {
        for (key, descending) in [
            ("created_at", true),
            ("created_at", false),
            ("updated_at", true),
            ("updated_at", false),
        ] {
            for after in [false, true] {
                let (sql, params) = query_runs_sql(f, key, descending, after);
                let name = format!(
                    "query_runs {label}, {key} {}{}",
                    if descending { "desc" } else { "asc" },
                    if after { ", next page" } else { "" }
                );
                v.push(case(name, "PostgresStore::query_runs", sql).with(params));
            }
        }
    }
    v
}

/// The plan walker finds scans nested in subplans, init plans and joins.
#[test]
fn scans_walks_the_whole_plan() {
    let plan = json!([{ "Plan": {
        "Node Type": "Update", "Relation Name": "runs",
        "Plans": [
            { "Node Type": "Index Scan", "Relation Name": "runs", "Index Name": "runs_pkey" },
            { "Node Type": "Limit", "Plans": [
                { "Node Type": "Seq Scan", "Relation Name": "events" }
            ] }
        ]
    } }]);
    let mut out = Vec::new();
    scans(root(&plan), &mut out);
    let by_node: BTreeMap<String, Option<String>> = out
        .iter()
        .map(|s| (s.node.clone(), s.relation.clone()))
        .collect();
    assert_eq!(by_node.get("Seq Scan"), Some(&Some("events".to_string())));
    assert_eq!(out.len(), 3);
}
